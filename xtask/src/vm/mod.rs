//! VM stage: booting what the build stage made. The machine a boot gets
//! (`machine`, with its defaults), the files of an image set and its lock
//! (`images`), persistent memory of each kind (`pmem`) and data disks (`disks`), QEMU's arguments and the KVM probe
//! (`qemu`), one supervised boot (`boot`) with its console scanner
//! (`console`), the boot request runs and tests share (`request`), and
//! sequences of boots on one image set (`scenario`).

pub mod boot;
pub mod console;
pub mod disks;
pub mod images;
pub mod machine;
pub mod pmem;
pub mod qemu;
pub mod request;
pub mod scenario;
