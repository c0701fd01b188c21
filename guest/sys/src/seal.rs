//! The block-map seal UAPI (see patches/ and docs/seal.md) and the ioctls
//! that observe or change a file's block map, as checked `io::Result`
//! wrappers. Values that glibc and the libc crate do not carry are spelled
//! out here from the kernel's UAPI headers.

use std::fs::File;
use std::io;
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::calls::cpath;

pub use crate::ring::Ring;

pub const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
pub const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
pub const FALLOC_FL_COLLAPSE_RANGE: i32 = 0x08;
pub const FALLOC_FL_ZERO_RANGE: i32 = 0x10;
pub const FALLOC_FL_INSERT_RANGE: i32 = 0x20;
pub const FALLOC_FL_UNSHARE_RANGE: i32 = 0x40;
/// Project-local values (include/uapi/linux/falloc.h of the series).
pub const FALLOC_FL_SEAL_BLOCK_MAP: i32 = 0x100;
pub const FALLOC_FL_UNSEAL_BLOCK_MAP: i32 = 0x200;
pub const FS_XFLAG_EXTSIZE: u32 = 0x0000_0800;
pub const FS_XFLAG_DAX: u32 = 0x0000_8000;
pub const FS_XFLAG_IOMAP_IMMUTABLE: u32 = 0x0080_0000;
pub const STATX_ATTR_IOMAP_IMMUTABLE: u64 = 0x0080_0000;

pub const FIEMAP_EXTENT_LAST: u32 = 0x0001;
pub const FIEMAP_EXTENT_DELALLOC: u32 = 0x0004;
pub const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x0800;
pub const FIEMAP_EXTENT_SHARED: u32 = 0x2000;

/// `_IOC(dir, type, nr, size)` from include/uapi/asm-generic/ioctl.h.
const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct FsXattr {
    pub xflags: u32,
    pub extsize: u32,
    pub nextents: u32,
    pub projid: u32,
    pub cowextsize: u32,
    pad: [u8; 8],
}

#[repr(C)]
struct FiemapHeader {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtentRaw {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct CloneRange {
    src_fd: i64,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
}

#[repr(C)]
struct DedupeRange {
    src_offset: u64,
    src_length: u64,
    dest_count: u16,
    reserved1: u16,
    reserved2: u32,
    // One struct file_dedupe_range_info follows.
    dest_fd: i64,
    dest_offset: u64,
    bytes_deduped: u64,
    status: i32,
    reserved: u32,
}

#[repr(C)]
struct ExchangeRange {
    file1_fd: i32,
    pad: u32,
    file1_offset: u64,
    file2_offset: u64,
    length: u64,
    flags: u64,
}

const FS_IOC_FSGETXATTR: u64 = ioc(IOC_READ, b'X', 31, size_of::<FsXattr>());
const FS_IOC_FSSETXATTR: u64 = ioc(IOC_WRITE, b'X', 32, size_of::<FsXattr>());
const FS_IOC_FIEMAP: u64 = ioc(IOC_READ | IOC_WRITE, b'f', 11, size_of::<FiemapHeader>());
const FICLONE: u64 = ioc(IOC_WRITE, 0x94, 9, size_of::<i32>());
const FICLONERANGE: u64 = ioc(IOC_WRITE, 0x94, 13, size_of::<CloneRange>());
const FIDEDUPERANGE: u64 = ioc(IOC_READ | IOC_WRITE, 0x94, 54, 24);
/// struct xfs_swapext: five 64-bit fields, 16 bytes of padding, then a
/// 136-byte struct xfs_bstat.
const SWAPEXT_SIZE: usize = 192;
const XFS_IOC_SWAPEXT: u64 = ioc(IOC_READ | IOC_WRITE, b'X', 109, SWAPEXT_SIZE);
const XFS_IOC_EXCHANGE_RANGE: u64 = ioc(IOC_WRITE, b'X', 129, size_of::<ExchangeRange>());
const XFS_IOC_GOINGDOWN: u64 = ioc(IOC_READ, b'X', 125, size_of::<u32>());
/// XFS_FSOP_GOING_FLAGS_LOGFLUSH: write the log out, then shut down.
const XFS_GOING_LOGFLUSH: u32 = 1;
const XFS_IOC_SCRUB_METADATA: u64 = ioc(IOC_READ | IOC_WRITE, b'X', 60, size_of::<ScrubMetadata>());

/// struct xfs_scrub_metadata (linux/xfs_fs.h), 64 bytes.
#[repr(C)]
struct ScrubMetadata {
    sm_type: u32,
    sm_flags: u32,
    sm_ino: u64,
    sm_gen: u32,
    sm_agno: u32,
    sm_reserved: [u64; 5],
}

/// XFS_SCRUB_TYPE_INODE: the inode record.
pub const XFS_SCRUB_TYPE_INODE: u32 = 11;
/// XFS_SCRUB_TYPE_BMBTD: the data fork's block mappings.
pub const XFS_SCRUB_TYPE_BMBTD: u32 = 12;
/// XFS_SCRUB_TYPE_BMBTC: the copy-on-write fork's block mappings.
pub const XFS_SCRUB_TYPE_BMBTC: u32 = 14;
const XFS_SCRUB_IFLAG_REPAIR: u32 = 1 << 0;
const XFS_SCRUB_IFLAG_FORCE_REBUILD: u32 = 1 << 8;
const FS_IOC_GETFLAGS: u64 = ioc(IOC_READ, b'f', 1, size_of::<libc::c_long>());
const FS_IOC_SETFLAGS: u64 = ioc(IOC_WRITE, b'f', 2, size_of::<libc::c_long>());
const FS_IMMUTABLE_FL: i32 = 0x10;

/// A raw system call's return value: negative means errno is set.
pub(crate) fn cvt(rc: i64) -> io::Result<i64> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    cvt(rc.into()).map(drop)
}

pub fn fallocate(file: &File, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::fallocate(file.as_raw_fd(), mode, offset as i64, len as i64) })
}

/// FALLOC_FL_SEAL_BLOCK_MAP over the whole file (offset 0; len is only
/// checked for being positive).
pub fn seal(file: &File) -> io::Result<()> {
    fallocate(file, FALLOC_FL_SEAL_BLOCK_MAP, 0, 1)
}

pub fn unseal(file: &File) -> io::Result<()> {
    fallocate(file, FALLOC_FL_UNSEAL_BLOCK_MAP, 0, 1)
}

pub fn fsgetxattr(file: &File) -> io::Result<FsXattr> {
    let mut fa = FsXattr::default();
    // SAFETY: the kernel writes one struct fsxattr into fa.
    check(unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FSGETXATTR as _, &mut fa) })?;
    Ok(fa)
}

pub fn fssetxattr(file: &File, fa: &FsXattr) -> io::Result<()> {
    // SAFETY: the kernel reads one struct fsxattr.
    check(unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FSSETXATTR as _, fa) })
}

/// chattr +i / -i through FS_IOC_SETFLAGS.
pub fn set_immutable(file: &File, on: bool) -> io::Result<()> {
    let mut flags: libc::c_int = 0;
    // SAFETY: GETFLAGS/SETFLAGS read and write one int.
    check(unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_GETFLAGS as _, &mut flags) })?;
    flags = if on { flags | FS_IMMUTABLE_FL } else { flags & !FS_IMMUTABLE_FL };
    // SAFETY: as above.
    check(unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_SETFLAGS as _, &flags) })
}

/// One FIEMAP extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: u32,
}

/// The whole file's extent list (FIEMAP_FLAG_SYNC first flushes delalloc).
pub fn fiemap(file: &File) -> io::Result<Vec<Extent>> {
    const BATCH: usize = 256;
    let mut out = Vec::new();
    let mut start = 0u64;
    loop {
        let mut buf = vec![0u64; (size_of::<FiemapHeader>() + BATCH * size_of::<FiemapExtentRaw>()) / 8];
        let head = buf.as_mut_ptr().cast::<FiemapHeader>();
        // SAFETY: buf is large enough for the header and BATCH extents, and
        // u64-aligned as both structs require.
        unsafe {
            (*head).start = start;
            (*head).length = u64::MAX - start;
            (*head).flags = 1; // FIEMAP_FLAG_SYNC
            (*head).extent_count = BATCH as u32;
            check(libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, head))?;
        }
        // SAFETY: the kernel filled mapped_extents (<= BATCH) entries.
        let mapped = unsafe { (*head).mapped_extents } as usize;
        let extents = unsafe { head.add(1).cast::<FiemapExtentRaw>() };
        let mut last = false;
        for i in 0..mapped.min(BATCH) {
            // SAFETY: i < mapped <= BATCH entries lie inside buf.
            let e = unsafe { *extents.add(i) };
            out.push(Extent { logical: e.logical, physical: e.physical, length: e.length, flags: e.flags });
            last |= e.flags & FIEMAP_EXTENT_LAST != 0;
            start = e.logical + e.length;
        }
        if mapped < BATCH || last {
            return Ok(out);
        }
    }
}

/// FICLONE: make `dest` share all of `src`.
pub fn ficlone(dest: &File, src: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its argument.
    check(unsafe { libc::ioctl(dest.as_raw_fd(), FICLONE as _, src.as_raw_fd() as libc::c_long) })
}

pub fn ficlonerange(dest: &File, dest_offset: u64, src: &File, src_offset: u64, len: u64) -> io::Result<()> {
    let arg = CloneRange { src_fd: src.as_raw_fd() as i64, src_offset, src_length: len, dest_offset };
    // SAFETY: the kernel reads one struct file_clone_range.
    check(unsafe { libc::ioctl(dest.as_raw_fd(), FICLONERANGE as _, &arg) })
}

/// XFS_IOC_GOINGDOWN with the log written out first: what a power cut does
/// right after the last committed transaction reached the log. The
/// filesystem of `file` refuses every change afterwards, until it is
/// mounted again (fstests' `godown`).
pub fn xfs_shut_down(file: &File) -> io::Result<()> {
    let flags = XFS_GOING_LOGFLUSH;
    // SAFETY: the kernel reads one u32.
    check(unsafe { libc::ioctl(file.as_raw_fd(), XFS_IOC_GOINGDOWN as _, &flags) })
}

/// FIDEDUPERANGE of one range into one destination; the per-destination
/// status is returned as the error, like the ioctl's own.
pub fn dedupe(src: &File, dest: &File, offset: u64, len: u64) -> io::Result<u64> {
    let mut arg = DedupeRange {
        src_offset: offset,
        src_length: len,
        dest_count: 1,
        reserved1: 0,
        reserved2: 0,
        dest_fd: dest.as_raw_fd() as i64,
        dest_offset: offset,
        bytes_deduped: 0,
        status: 0,
        reserved: 0,
    };
    // SAFETY: header plus one info record, as dest_count says.
    check(unsafe { libc::ioctl(src.as_raw_fd(), FIDEDUPERANGE as _, &mut arg) })?;
    match arg.status {
        0 => Ok(arg.bytes_deduped),
        s if s < 0 => Err(io::Error::from_raw_os_error(-s)),
        _ => Err(io::Error::other("dedupe: contents differ")),
    }
}

/// XFS_IOC_EXCHANGE_RANGE: swap `len` bytes at 0 between the two files.
pub fn exchange_range(file2: &File, file1: &File, len: u64) -> io::Result<()> {
    let arg =
        ExchangeRange { file1_fd: file1.as_raw_fd(), pad: 0, file1_offset: 0, file2_offset: 0, length: len, flags: 0 };
    // SAFETY: the kernel reads one struct xfs_exchange_range.
    check(unsafe { libc::ioctl(file2.as_raw_fd(), XFS_IOC_EXCHANGE_RANGE as _, &arg) })
}

/// What a scrub found: corruption (`CORRUPT`, cross-referencing
/// `XCORRUPT`) or a check it could not finish (`INCOMPLETE`).
pub const XFS_SCRUB_OFLAG_BAD: u32 = (1 << 1) | (1 << 4) | (1 << 5);
/// What a scrub found suspicious, short of corruption.
pub const XFS_SCRUB_OFLAG_WARNING: u32 = 1 << 6;

/// Scrub (check only, no repair) one of `file`'s metadata; returns the
/// output flags, to be tested against [`XFS_SCRUB_OFLAG_BAD`].
pub fn scrub(file: &File, sm_type: u32) -> io::Result<u32> {
    let mut sm = ScrubMetadata { sm_type, sm_flags: 0, sm_ino: 0, sm_gen: 0, sm_agno: 0, sm_reserved: [0; 5] };
    // SAFETY: the kernel reads and writes one struct xfs_scrub_metadata.
    check(unsafe { libc::ioctl(file.as_raw_fd(), XFS_IOC_SCRUB_METADATA as _, &mut sm) })?;
    Ok(sm.sm_flags)
}

/// Online repair of `file`'s data fork, forced to rebuild it from the
/// reverse-mapping btree even when scrub finds nothing wrong.
pub fn rebuild_data_fork(file: &File) -> io::Result<()> {
    force_repair(file, XFS_SCRUB_TYPE_BMBTD)
}

/// Online repair of one of `file`'s metadata (`sm_type`, e.g.
/// [`XFS_SCRUB_TYPE_BMBTD`]), forced to rebuild even when scrub finds
/// nothing wrong (XFS_IOC_SCRUB_METADATA with REPAIR | FORCE_REBUILD). An
/// inode number of 0 means the file the ioctl is called on.
pub fn force_repair(file: &File, sm_type: u32) -> io::Result<()> {
    let mut sm = ScrubMetadata {
        sm_type,
        sm_flags: XFS_SCRUB_IFLAG_REPAIR | XFS_SCRUB_IFLAG_FORCE_REBUILD,
        sm_ino: 0,
        sm_gen: 0,
        sm_agno: 0,
        sm_reserved: [0; 5],
    };
    // SAFETY: the kernel reads and writes one struct xfs_scrub_metadata.
    check(unsafe { libc::ioctl(file.as_raw_fd(), XFS_IOC_SCRUB_METADATA as _, &mut sm) })
}

/// XFS_IOC_SWAPEXT (the defragmenter's ioctl): swap the whole data forks
/// of `target` and `tmp`, which must be the same size. The kernel refuses
/// with EBUSY unless sx_stat carries the target's current mtime and ctime,
/// so they are filled from fstat.
pub fn swapext(target: &File, tmp: &File) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = target.metadata()?;
    let mut sx = [0u8; SWAPEXT_SIZE];
    let mut put = |at: usize, bytes: &[u8]| sx[at..at + bytes.len()].copy_from_slice(bytes);
    // sx_version 0 at 0; sx_offset 0 at 24.
    put(8, &i64::from(target.as_raw_fd()).to_ne_bytes());
    put(16, &i64::from(tmp.as_raw_fd()).to_ne_bytes());
    put(32, &(meta.len() as i64).to_ne_bytes());
    // sx_stat at 56: bs_mtime at +56, bs_ctime at +72, each {i64 sec, i32 nsec}.
    put(56 + 56, &meta.mtime().to_ne_bytes());
    put(56 + 64, &(meta.mtime_nsec() as i32).to_ne_bytes());
    put(56 + 72, &meta.ctime().to_ne_bytes());
    put(56 + 80, &(meta.ctime_nsec() as i32).to_ne_bytes());
    // SAFETY: the kernel reads (and may write) one struct xfs_swapext.
    check(unsafe { libc::ioctl(target.as_raw_fd(), XFS_IOC_SWAPEXT as _, sx.as_mut_ptr()) })
}

pub fn copy_file_range(src: &File, src_off: u64, dest: &File, dest_off: u64, len: usize) -> io::Result<usize> {
    let (mut so, mut dof) = (src_off as i64, dest_off as i64);
    // SAFETY: valid fds and offset pointers.
    let n = unsafe { libc::copy_file_range(src.as_raw_fd(), &mut so, dest.as_raw_fd(), &mut dof, len, 0) };
    cvt(n as i64).map(|n| n as usize)
}

pub fn seek(file: &File, offset: u64, whence: i32) -> io::Result<u64> {
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::lseek(file.as_raw_fd(), offset as i64, whence) }).map(|r| r as u64)
}

/// truncate(2) by path.
pub fn truncate_path(path: &Path, len: u64) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::truncate(c.as_ptr(), len as i64) })
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_LINUX_IMMUTABLE_BIT: u32 = 1 << 9;

/// Changes the calling thread's capability sets (capget/capset(2),
/// version 3) with `change`, which sees the first data word.
fn change_caps(change: impl FnOnce(&mut CapData)) -> io::Result<()> {
    const VERSION_3: u32 = 0x2008_0522;
    let mut head = CapHeader { version: VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data words.
    cvt(unsafe { libc::syscall(libc::SYS_capget, &mut head, data.as_mut_ptr()) })?;
    change(&mut data[0]);
    // SAFETY: as above.
    cvt(unsafe { libc::syscall(libc::SYS_capset, &mut head, data.as_ptr()) }).map(drop)
}

/// Drops CAP_LINUX_IMMUTABLE from the calling thread's effective, permitted
/// and inheritable sets, for good.
pub fn drop_cap_linux_immutable() -> io::Result<()> {
    change_caps(|d| {
        d.effective &= !CAP_LINUX_IMMUTABLE_BIT;
        d.permitted &= !CAP_LINUX_IMMUTABLE_BIT;
        d.inheritable &= !CAP_LINUX_IMMUTABLE_BIT;
    })
}

/// CAP_LINUX_IMMUTABLE out of the calling thread's effective set until the
/// guard drops (it stays permitted, so it can come back).
pub struct WithoutCapLinuxImmutable(());

impl WithoutCapLinuxImmutable {
    pub fn new() -> io::Result<WithoutCapLinuxImmutable> {
        change_caps(|d| d.effective &= !CAP_LINUX_IMMUTABLE_BIT)?;
        Ok(WithoutCapLinuxImmutable(()))
    }
}

impl Drop for WithoutCapLinuxImmutable {
    fn drop(&mut self) {
        let _ = change_caps(|d| d.effective |= d.permitted & CAP_LINUX_IMMUTABLE_BIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(FS_IOC_FSGETXATTR, 0x801c_581f);
        assert_eq!(FS_IOC_FSSETXATTR, 0x401c_5820);
        assert_eq!(FS_IOC_FIEMAP, 0xc020_660b);
        assert_eq!(FICLONE, 0x4004_9409);
        assert_eq!(FICLONERANGE, 0x4020_940d);
        assert_eq!(FIDEDUPERANGE, 0xc018_9436);
        assert_eq!(XFS_IOC_SWAPEXT, 0xc0c0_586d);
        assert_eq!(XFS_IOC_GOINGDOWN, 0x8004_587d);
        assert_eq!(size_of::<ScrubMetadata>(), 64);
        assert_eq!(XFS_IOC_SCRUB_METADATA, 0xc040_583c);
        assert_eq!(size_of::<FiemapExtentRaw>(), 56);
        assert_eq!(size_of::<DedupeRange>(), 24 + 32);
        assert_eq!(size_of::<ExchangeRange>(), 40);
    }
}
