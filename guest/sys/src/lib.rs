//! The system calls of the block-map seal, shared by `daxctl-immutable` and
//! the guest workloads, so that the workloads test the code users run.
//!
//! - [`seal`]: the UAPI (fallocate modes, FS_XFLAG and STATX_ATTR bits),
//!   SEAL and UNSEAL, FIEMAP, FSGETXATTR/FSSETXATTR, the remap and XFS
//!   ioctls;
//! - [`ring`]: a minimal io_uring for fixed-buffer pins and I/O through them;
//! - [`calls`]: statx, shared mappings and msync, mount and umount, errno
//!   text;
//! - [`trace`]: kernel trace events through tracefs;
//! - [`persist`]: cache write-back and fence instructions, from CPUID.

pub mod calls;
pub mod persist;
pub mod ring;
pub mod seal;
pub mod trace;
