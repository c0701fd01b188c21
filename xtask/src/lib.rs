//! The xtask library: everything `cargo xtask` does, also used by the VM
//! tests in tests/ so that they boot guests exactly as a user's run does.

pub mod bench;
pub mod boot;
pub mod cli;
pub mod cli_docs;
pub mod console;
pub mod cpio;
pub mod crash;
pub mod deps;
pub mod disks;
pub mod fuzz;
pub mod initramfs;
pub mod kernel;
pub mod nvdimm;
pub mod paths;
pub mod qemu;
pub mod results;
pub mod run;
pub mod scenario;
pub mod series;
pub mod test;
pub mod tidy;
