//! Harness self-tests: workloads that misbehave on purpose, so that the VM
//! tests can show the host fails each with a reason, within its silence and
//! deadline rules, without its own memory growing. None runs by default.

use std::io::Write;
use std::process::ExitCode;

/// One case that fails on the seeded share of attempts
/// (`selftest-flaky.percent` of them, decided by `selftest-flaky.seed` and
/// the attempt number the host gives), for the host's reruns.
pub fn flaky() -> ExitCode {
    let mut t = crate::cases::Cases::new(1);
    let verdict = dax_seal_protocol::RunConfig::read().and_then(|c| {
        let (seed, percent) = (c.param("selftest-flaky.seed")?, c.param("selftest-flaky.percent")?);
        let which = format!("loop {} attempt {}", c.iteration, c.attempt);
        if dax_seal_protocol::selftest_flaky_fails(seed, c.iteration, c.attempt, percent) {
            Err(format!("{which} fails (seed {seed}, {percent}% of attempts fail)"))
        } else {
            Ok(((), format!("{which} passes (seed {seed}, {percent}% of attempts fail)")))
        }
    });
    t.check("seeded-outcome", verdict);
    t.exit()
}

/// Exits without printing any result.
pub fn silent() -> ExitCode {
    ExitCode::SUCCESS
}

/// Floods the results port with diagnostics until the host stops reading.
pub fn flood() -> ExitCode {
    let line = format!("# flood {}\n", "x".repeat(4000));
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(b"1..1\n");
    loop {
        if out.write_all(line.as_bytes()).is_err() {
            return ExitCode::FAILURE;
        }
    }
}

/// Prints KTAP a parser must survive and a judge must fail: a wrong plan,
/// unnumbered and duplicate results, a result past the plan, a header in
/// the middle, nesting far too deep, and a megabyte without a newline.
pub fn bad_ktap() -> ExitCode {
    let mut out = std::io::stdout().lock();
    let deep = format!("{}ok 1 deep", " ".repeat(4 * 40));
    let long = "y".repeat(1 << 20);
    for line in ["1..3", "ok", "ok x", "not ok", "ok 1 first", "ok 1 first again", "KTAP version 1", "ok 9 beyond"] {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "{deep}");
    let _ = writeln!(out, "# {long}");
    let _ = writeln!(out, "not ok 2 second # {long}");
    ExitCode::SUCCESS
}

/// Forks until the kernel refuses, every child doing the same, and never
/// reports.
pub fn fork_bomb() -> ExitCode {
    loop {
        // SAFETY: fork in a single-threaded process; each child only loops
        // here and sleeps.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            // SAFETY: plain sleep.
            unsafe { libc::sleep(1) };
        }
    }
}
