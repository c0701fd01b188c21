//! Build stage: what the VMs boot. Host packages (`deps`), the kernel
//! trees (`trees`, their table and Debian package sources), the kernel
//! variants (`kernel`), the guest initramfs (`initramfs`) and its archive
//! format (`cpio`), the guest's xfsprogs with the seal (`xfsprogs`), and
//! fstests' Debian root image (`rootfs`). Nothing here boots anything.

pub mod cpio;
pub mod deps;
pub mod initramfs;
pub mod kernel;
pub mod rootfs;
pub mod trees;
pub mod xfsprogs;
