//! KTAP on the results port: the top-level plan (set-up, one test per
//! workload, one for `--exec`), each workload's output forwarded as a subtest,
//! and the verdict init draws from it. The host re-checks everything; init's
//! verdict is only the first opinion.

use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use dax_seal_protocol::ktap::{is_ktap_line, Parser, TestResult, Verdict, Writer};
use dax_seal_protocol::{read_line_bounded, MAX_LINE, RESULTS_PORT, WORKLOADS_BIN};

use crate::{describe_status, log};

pub struct Report {
    out: Writer<Box<dyn Write>>,
    number: usize,
}

/// Finds `/dev/vportNpM` whose name is [`RESULTS_PORT`].
fn open_port() -> Result<File, String> {
    let dir = "/sys/class/virtio-ports";
    let entries = fs::read_dir(dir).map_err(|e| format!("{dir}: {e} (no virtio-serial device?)"))?;
    for entry in entries.flatten() {
        let name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim() == RESULTS_PORT {
            let dev = format!("/dev/{}", entry.file_name().to_string_lossy());
            return fs::OpenOptions::new().write(true).open(&dev).map_err(|e| format!("{dev}: {e}"));
        }
    }
    Err(format!("no virtio-serial port named {RESULTS_PORT} under {dir}"))
}

impl Report {
    /// Opens the results port, or falls back to the console so that a human
    /// can still read what happened (the host will report no results).
    pub fn open() -> Report {
        let out: Box<dyn Write> = match open_port() {
            Ok(f) => Box::new(f),
            Err(e) => {
                log(&format!("results port unavailable, writing KTAP to the console: {e}"));
                Box::new(std::io::stdout())
            }
        };
        Report { out: Writer::new(out), number: 0 }
    }

    /// Write errors on the port cannot be reported anywhere but the console.
    fn check(result: std::io::Result<()>) {
        if let Err(e) = result {
            log(&format!("writing KTAP failed: {e}"));
        }
    }

    pub fn start(&mut self, planned: usize) {
        Self::check(self.out.header());
        Self::check(self.out.plan(planned));
    }

    fn next(&mut self) -> usize {
        self.number += 1;
        self.number
    }

    /// A top-level test with no subtest.
    pub fn single(&mut self, name: &str, outcome: &TestResult) {
        let n = self.next();
        Self::check(self.out.result(n, name, outcome));
    }

    /// Starts a subtest with a known number of cases.
    pub fn subtest(&mut self, name: &str, planned: usize) -> Subtest<'_> {
        let number = self.next();
        let mut sub = Subtest { report: self, number, name: name.to_string(), case: 0, failed: 0 };
        sub.line(&["KTAP version 1".to_string(), format!("# Subtest: {name}"), format!("1..{planned}")]);
        sub
    }

    /// Runs one workload binary and forwards its KTAP as a subtest.
    pub fn workload(&mut self, name: &str) {
        log(&format!("running workload {name}"));
        let number = self.next();
        self.indented(&format!("KTAP version 1\n# Subtest: {name}"));
        let child = Command::new(WORKLOADS_BIN).arg(name).stdin(Stdio::null()).stdout(Stdio::piped()).spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("cannot start {WORKLOADS_BIN} {name}: {e}");
                Self::check(self.out.result(number, name, &TestResult::Fail(reason)));
                return;
            }
        };
        let mut parser = Parser::new();
        parser.feed("KTAP version 1", Duration::ZERO);
        if let Some(stdout) = child.stdout.take() {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            // Lines are cut at the host's limit, so a workload that never
            // prints a newline cannot exhaust PID 1's memory either.
            while let Ok(1..) = read_line_bounded(&mut reader, &mut buf, MAX_LINE) {
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                // Anything that is not KTAP becomes a diagnostic, so stray
                // prints can neither fake a result nor break the structure.
                let line = if is_ktap_line(&line) { line } else { format!("# {line}") };
                parser.feed(&line, Duration::ZERO);
                self.indented(&line);
            }
        }
        let outcome = match child.wait() {
            Err(e) => TestResult::Fail(format!("waiting for the workload failed: {e}")),
            Ok(status) => {
                let (group, _) = parser.finish(Duration::ZERO);
                judge(&group, (!status.success()).then(|| describe_status(status)))
            }
        };
        Self::check(self.out.result(number, name, &outcome));
    }

    /// Each `--exec` command is one case: its output as diagnostics, its exit
    /// status as the verdict.
    pub fn exec_commands(&mut self, commands: &[String]) {
        let mut sub = self.subtest("exec", commands.len());
        for command in commands {
            log(&format!("exec: {command}"));
            let outcome = match run_shell(command) {
                Err(e) => TestResult::Fail(format!("cannot run /bin/sh: {e}")),
                Ok((output, status)) => {
                    sub.diag(&String::from_utf8_lossy(&output));
                    if status.success() {
                        TestResult::Pass
                    } else {
                        TestResult::Fail(describe_status(status))
                    }
                }
            };
            sub.case(command, outcome);
        }
        sub.end();
    }

    fn indented(&mut self, text: &str) {
        let lines: Vec<String> = text.lines().map(|l| format!("    {l}").trim_end().to_string()).collect();
        let out: &mut dyn Write = self.writer();
        for l in lines {
            if let Err(e) = writeln!(out, "{l}").and_then(|()| out.flush()) {
                log(&format!("writing KTAP failed: {e}"));
            }
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        // The Writer owns the port; borrow it back for raw forwarding.
        self.out.inner_mut()
    }

    pub fn finish(&mut self) {
        log("all tests reported");
    }
}

/// Init's verdict on a finished workload.
fn judge(group: &dax_seal_protocol::ktap::Group, abnormal_exit: Option<String>) -> TestResult {
    if let Some(how) = abnormal_exit {
        return TestResult::Fail(format!("workload {how}"));
    }
    if group.plan.is_none() && group.cases.is_empty() {
        return TestResult::Fail("workload printed no result".into());
    }
    let failed = group.cases.iter().filter(|c| c.verdict == Verdict::Fail).count();
    let missing = group.missing().len();
    if failed + missing > 0 {
        return TestResult::Fail(format!("{failed} failed, {missing} never reported"));
    }
    if !group.cases.is_empty() && group.cases.iter().all(|c| c.verdict == Verdict::Skip) {
        return TestResult::Skip("every case skipped".into());
    }
    TestResult::Pass
}

/// A subtest being written case by case.
pub struct Subtest<'a> {
    report: &'a mut Report,
    number: usize,
    name: String,
    case: usize,
    failed: usize,
}

impl Subtest<'_> {
    fn line(&mut self, lines: &[String]) {
        self.report.indented(&lines.join("\n"));
    }

    pub fn diag(&mut self, text: &str) {
        Report::check(Writer::nested(self.report.writer(), 1).diag(text));
    }

    pub fn case(&mut self, name: &str, outcome: TestResult) {
        self.case += 1;
        if matches!(outcome, TestResult::Fail(_)) {
            self.failed += 1;
        }
        let case = self.case;
        Report::check(Writer::nested(self.report.writer(), 1).result(case, name, &outcome));
    }

    /// Writes the subtest's own result line.
    pub fn end(self) {
        let outcome = if self.failed == 0 {
            TestResult::Pass
        } else {
            TestResult::Fail(format!("{} of {} failed", self.failed, self.case))
        };
        Report::check(self.report.out.result(self.number, &self.name, &outcome));
    }
}

/// Runs `sh -c command` with stdout and stderr on one pipe, so that every
/// command of a list keeps its stderr, in the order it was written.
fn run_shell(command: &str) -> std::io::Result<(Vec<u8>, std::process::ExitStatus)> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds that we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fds owned by nothing else.
    let (mut read, write) = unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
    let mut child = {
        // The Command holds the write ends until it is dropped: drop it
        // before reading, or the read never sees EOF.
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(command).stdin(Stdio::null()).stdout(write.try_clone()?).stderr(write);
        c.spawn()?
    };
    let mut output = Vec::new();
    let read_result = read.read_to_end(&mut output);
    let status = child.wait()?;
    read_result?;
    Ok((output, status))
}
