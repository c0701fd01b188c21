//! `workloads NAME`: runs one guest workload and prints its cases as KTAP
//! (plan, results, diagnostics) on stdout. `dax-seal-init` wraps that output
//! into a subtest; this binary never needs to know about the results port.

mod cases;
mod cli;
mod dax_smoke;
mod fixture;
mod fstests;
mod pinned_dma;
mod seal_conformance;
mod seal_crash;
mod seal_foreign;
mod seal_lifetime;
mod seal_race;
mod seal_repair;
mod selftest;
mod swap;
mod swap_pressure;
mod userspace_flush;
mod workdir;

use dax_seal_sys::{calls, persist, ring, seal, trace};

use std::process::ExitCode;

type Workload = fn() -> ExitCode;

/// Every workload this binary runs, under its name in the protocol's
/// catalogue (a unit test checks both ways).
const IMPLEMENTED: &[(&str, Workload)] = &[
    ("dax-smoke", dax_smoke::run),
    ("cli", cli::run),
    ("seal-conformance", seal_conformance::run),
    ("seal-race", seal_race::run),
    ("seal-lifetime", seal_lifetime::run),
    ("pinned-dma", pinned_dma::run),
    ("swap-pressure", swap_pressure::run),
    ("userspace-flush", userspace_flush::run),
    ("userspace-flush-write", userspace_flush::write),
    ("userspace-flush-verify", userspace_flush::verify),
    ("seal-crash-prepare", seal_crash::prepare),
    ("seal-crash-verify", seal_crash::verify),
    ("seal-foreign-prepare", seal_foreign::prepare),
    ("seal-foreign-change", seal_foreign::change),
    ("seal-foreign-verify", seal_foreign::verify),
    ("seal-foreign-repair", seal_repair::run),
    ("fstests-dax", fstests::dax),
    ("fstests-nondax", fstests::nondax),
    ("selftest-silent", selftest::silent),
    ("selftest-flood", selftest::flood),
    ("selftest-bad-ktap", selftest::bad_ktap),
    ("selftest-fork-bomb", selftest::fork_bomb),
    ("selftest-flaky", selftest::flaky),
];

fn lookup(name: &str) -> Option<Workload> {
    IMPLEMENTED.iter().find(|(n, _)| *n == name).map(|&(_, run)| run)
}

fn main() -> ExitCode {
    let Some(name) = std::env::args().nth(1) else {
        eprintln!("usage: workloads NAME");
        return ExitCode::from(2);
    };
    match lookup(&name) {
        Some(run) => match fixture::read_pmem() {
            Ok(_) => run(),
            Err(reason) => {
                eprintln!("workloads: {reason}");
                ExitCode::from(2)
            }
        },
        None => {
            let known: Vec<_> = dax_seal_protocol::WORKLOADS.iter().map(|w| w.name).collect();
            eprintln!("workloads: unknown workload {name:?}; known: {}", known.join(", "));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_catalogued_workload_is_implemented_and_every_implementation_catalogued() {
        for w in dax_seal_protocol::WORKLOADS {
            assert!(super::lookup(w.name).is_some(), "{} has no implementation", w.name);
        }
        for (name, _) in super::IMPLEMENTED {
            assert!(dax_seal_protocol::workload(name).is_some(), "{name} is implemented but not in the catalogue");
        }
    }
}
