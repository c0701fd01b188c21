//! `cargo xtask fuzz`: the property tests of every input door (KTAP
//! parser, console classifier, line reader, cpio writer, NVDIMM sidecars,
//! run.json, daxctl-immutable's map and size parsers, the value parsers of
//! the command line) run with many more cases than `cargo xtask test`
//! gives them, with new random inputs each round, until the time is up.
//! Every property test reads its case count from [`CASES_ENV`].

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use xshell::{cmd, Shell};

use crate::paths;

/// The case count of each property test (default 64).
pub use dax_seal_protocol::FUZZ_CASES_ENV as CASES_ENV;

#[derive(Debug, Clone, Args)]
pub struct FuzzArgs {
    /// How long to keep going, in seconds (whole rounds; at least one).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
    /// Cases per property test in each round.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub cases: u32,
}

/// The crates with property tests (each in a module named `properties`).
const TARGETS: [&str; 3] = ["dax-seal-protocol", "xtask", "daxctl-immutable"];

pub fn cmd(args: &FuzzArgs) -> Result<ExitCode> {
    let sh = Shell::new()?;
    let _dir = sh.push_dir(paths::project_root());
    let _cases = sh.push_env(CASES_ENV, args.cases.to_string());
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut round = 0;
    loop {
        round += 1;
        let start = Instant::now();
        for krate in TARGETS {
            eprintln!("[fuzz] round {round}: {krate} ({} cases per property)", args.cases);
            let ok = cmd!(sh, "cargo test --release --quiet -p {krate} --lib -- properties").run().is_ok();
            if !ok {
                eprintln!("[fuzz] a property failed in round {round}; the failing input is printed above");
                return Ok(ExitCode::FAILURE);
            }
        }
        eprintln!("[fuzz] round {round} passed in {:.0} s", start.elapsed().as_secs_f64());
        if Instant::now() >= deadline {
            break;
        }
    }
    println!("fuzz: {round} round(s) of {} cases per property, no failure", args.cases);
    Ok(ExitCode::SUCCESS)
}
