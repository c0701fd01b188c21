//! The xtask library: everything `cargo xtask` does, also used by the VM
//! tests in tests/ so that they boot guests exactly as a user's run does.
//!
//! Three stages, each a folder, and the tasks on top of them: `build`
//! (packages, kernels, initramfs), `vm` (images, QEMU, one supervised boot,
//! scenarios of boots) and `report` (verdicts and their files). Tasks use
//! the stages; `report` uses `vm`'s outcomes, `vm` uses `build`'s
//! artefacts; nothing in a stage imports a task or `cli` (stages take values:
//! `vm::machine::Machine`, `build::kernel::SourceChoice`; the command line
//! converts into them). Stages and tasks share `paths`, `jobs` and, in tests,
//! `testing`. `tidy` checks the rule.

pub mod build;
pub mod report;
pub mod vm;

pub mod cli;
pub mod jobs;
pub mod paths;
#[cfg(test)]
pub mod testing;

pub mod bench;
pub mod cli_docs;
pub mod crash;
pub mod fstests;
pub mod fuzz;
pub mod man_pages;
pub mod matrix;
pub mod merge;
pub mod run;
pub mod series;
pub mod submission;
pub mod test;
pub mod tidy;
