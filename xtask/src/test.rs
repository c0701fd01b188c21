//! `cargo xtask test`: the unit tests of the whole workspace, then the VM
//! tests in tests/, which boot the real kernels. xtask builds the three kernel
//! variants (patched, baseline, debug) and the initramfs first and hands them to the VM tests in a JSON
//! file named by [`ARTIFACTS_ENV`].

use std::process::ExitCode;

use anyhow::Result;
use xshell::{cmd, Shell};

use crate::build::deps;
use crate::build::kernel::Variant;
use crate::cli::{Machine, TestArgs};
use crate::{paths, tidy};

pub const ARTIFACTS_ENV: &str = "DAX_SEAL_ARTIFACTS";
/// An fstests checkout for the fstests VM tests; without it they are
/// skipped (and said to be), never run and passed.
pub const FSTESTS_ENV: &str = "DAX_SEAL_FSTESTS";
/// The VM tests that need [`FSTESTS_ENV`] are named with this prefix.
const FSTESTS_TESTS: &str = "fstests_";

pub fn cmd(args: &TestArgs) -> Result<ExitCode> {
    let root = paths::project_root();
    let sh = Shell::new()?;
    let _dir = sh.push_dir(&root);
    let filter = &args.filter;
    // Some unit tests drive patch and make: check the host before anything.
    deps::ensure(deps::Need::for_tests(args.source.kernel_src.is_some()))?;
    eprintln!("[test] unit tests");
    if cmd!(sh, "cargo test --workspace --exclude vm-tests {filter...}").run().is_err() {
        eprintln!("[test] unit tests failed");
        return Ok(ExitCode::FAILURE);
    }
    if args.unit {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("[test] building what the VM tests boot");
    let choice = args.source.choice()?;
    let prepared = crate::vm::request::prepare(
        &[Variant::Patched, Variant::Baseline, Variant::Debug],
        &choice,
        Machine::default().accel,
    )?;
    eprintln!("[test] accelerator: {} ({})", prepared.accel.name(), prepared.accel_reason);
    let series = root.join(&choice.tree.series);
    let checked = tidy::checkpatch(&series, &prepared.source_tree)?;
    eprintln!("[test] checkpatch --strict: {checked} patch(es) clean");
    let artifacts = root.join("target/dax-seal/artifacts.json");
    paths::write_atomic(&artifacts, &serde_json::to_vec_pretty(&prepared)?)?;
    let _env = sh.push_env(ARTIFACTS_ENV, &artifacts);
    // The tests that run `cargo xtask` themselves take the same tree.
    let _tree = sh.push_env(crate::cli::TREE_ENV, &choice.tree.name);
    eprintln!("[test] VM tests");
    // Each TCG guest keeps about one host core busy.
    let threads = format!("--test-threads={}", args.jobs.map_or_else(crate::jobs::default_jobs, |j| j as usize));
    let mut skip = Vec::new();
    if std::env::var_os(FSTESTS_ENV).is_none_or(|v| v.is_empty()) {
        eprintln!(
            "[test] SKIPPED the {FSTESTS_TESTS}* VM tests: {FSTESTS_ENV} is not set \
             (set it to an fstests checkout to run fstests in the guest)"
        );
        skip = vec!["--skip".to_string(), FSTESTS_TESTS.to_string()];
    }
    if cmd!(sh, "cargo test -p vm-tests {filter...} -- {threads} {skip...}").run().is_err() {
        eprintln!("[test] VM tests failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
