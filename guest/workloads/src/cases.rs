//! Case bookkeeping for a workload: a fixed plan, numbered results, and the
//! rule that a case which depends on a failed one fails too (never skips).

use std::io::{self, Stdout};
use std::process::ExitCode;

use dax_seal_protocol::ktap::{TestResult as Ktap, Writer};

/// What the contract says an operation gives: success or one errno.
#[derive(Clone, Copy)]
pub enum Expect {
    Ok,
    Err(i32),
}

impl Expect {
    pub fn admits<T>(self, r: &io::Result<T>) -> bool {
        match (self, r) {
            (Expect::Ok, Ok(_)) => true,
            (Expect::Err(want), Err(e)) => e.raw_os_error() == Some(want),
            _ => false,
        }
    }

    pub fn text(self) -> String {
        match self {
            Expect::Ok => "success".into(),
            Expect::Err(e) => format!("errno {e} ({})", io::Error::from_raw_os_error(e)),
        }
    }
}

/// The result of a case that may depend on the kernel having the series.
pub enum Attempt {
    Done(Result<String, String>),
    Skip(String),
}

/// Runs `f` only when SEAL works on this kernel (`has_seal` is the
/// workload's probe); otherwise the case skips with the probe's reason.
pub fn when_sealable(has_seal: &Result<(), String>, f: impl FnOnce() -> Result<String, String>) -> Attempt {
    match has_seal {
        Ok(()) => Attempt::Done(f()),
        Err(why) => Attempt::Skip(why.clone()),
    }
}

pub struct Cases {
    out: Writer<Stdout>,
    number: usize,
    failed: usize,
}

impl Cases {
    pub fn new(planned: usize) -> Cases {
        let mut cases = Cases { out: Writer::new(io::stdout()), number: 0, failed: 0 };
        cases.emit(|w| w.plan(planned));
        cases
    }

    fn emit(&mut self, f: impl FnOnce(&mut Writer<Stdout>) -> io::Result<()>) {
        if let Err(e) = f(&mut self.out) {
            eprintln!("workloads: cannot write KTAP: {e}");
        }
    }

    /// Reports one case; `Ok` text becomes a diagnostic line. Returns the
    /// value so later cases can depend on it.
    pub fn check<T>(&mut self, name: &str, result: Result<(T, String), String>) -> Option<T> {
        self.number += 1;
        let n = self.number;
        match result {
            Ok((value, note)) => {
                if !note.is_empty() {
                    self.emit(|w| w.diag(&note));
                }
                self.emit(|w| w.result(n, name, &Ktap::Pass));
                Some(value)
            }
            Err(reason) => {
                self.failed += 1;
                self.emit(|w| w.result(n, name, &Ktap::Fail(reason)));
                None
            }
        }
    }

    /// Reports a case that may have skipped.
    pub fn outcome(&mut self, name: &str, outcome: Attempt) {
        match outcome {
            Attempt::Done(r) => {
                self.check(name, r.map(|n| ((), n)));
            }
            Attempt::Skip(why) => self.skip(name, &why),
        }
    }

    /// A diagnostic line between cases.
    pub fn note(&mut self, text: &str) {
        self.emit(|w| w.diag(text));
    }

    /// A case that does not apply to this kernel, with the reason. The host
    /// counts it as a skip, never as a pass.
    pub fn skip(&mut self, name: &str, reason: &str) {
        self.number += 1;
        let n = self.number;
        self.emit(|w| w.result(n, name, &Ktap::Skip(reason.to_string())));
    }

    /// A case that could not run because what it needs failed.
    pub fn blocked(&mut self, name: &str, on: &str) {
        self.check::<()>(name, Err(format!("not attempted: {on} failed")));
    }

    pub fn exit(self) -> ExitCode {
        if self.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}
