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
mod selftest;
mod swap;
mod swap_pressure;
mod userspace_flush;
mod workdir;

use dax_seal_sys::{calls, persist, ring, seal, trace};

use std::process::ExitCode;

type Workload = fn() -> ExitCode;

/// The implementation of every workload in the protocol's catalogue.
fn lookup(name: &str) -> Option<Workload> {
    match name {
        "dax-smoke" => Some(dax_smoke::run),
        "cli" => Some(cli::run),
        "seal-conformance" => Some(seal_conformance::run),
        "seal-race" => Some(seal_race::run),
        "seal-lifetime" => Some(seal_lifetime::run),
        "pinned-dma" => Some(pinned_dma::run),
        "swap-pressure" => Some(swap_pressure::run),
        "userspace-flush" => Some(userspace_flush::run),
        "userspace-flush-write" => Some(userspace_flush::write),
        "userspace-flush-verify" => Some(userspace_flush::verify),
        "seal-crash-prepare" => Some(seal_crash::prepare),
        "seal-crash-verify" => Some(seal_crash::verify),
        "seal-foreign-prepare" => Some(seal_foreign::prepare),
        "seal-foreign-change" => Some(seal_foreign::change),
        "seal-foreign-verify" => Some(seal_foreign::verify),
        "fstests-dax" => Some(fstests::dax),
        "fstests-nondax" => Some(fstests::nondax),
        "selftest-silent" => Some(selftest::silent),
        "selftest-flood" => Some(selftest::flood),
        "selftest-bad-ktap" => Some(selftest::bad_ktap),
        "selftest-fork-bomb" => Some(selftest::fork_bomb),
        _ => None,
    }
}

fn main() -> ExitCode {
    let Some(name) = std::env::args().nth(1) else {
        eprintln!("usage: workloads NAME");
        return ExitCode::from(2);
    };
    match lookup(&name) {
        Some(run) => run(),
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
    fn every_catalogued_workload_is_implemented() {
        for w in dax_seal_protocol::WORKLOADS {
            assert!(super::lookup(w.name).is_some(), "{} has no implementation", w.name);
        }
    }
}
