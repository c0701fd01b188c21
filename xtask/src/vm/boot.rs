//! One supervised boot: QEMU is started with the console on a pipe and the
//! KTAP port on a Unix socket, both streamed to log files and read as they
//! arrive. The boot ends in exactly one [`End`]: the guest powered off, a
//! kernel report was seen (QEMU is killed once its first lines are kept), the
//! guest went silent, the wall-clock deadline passed, or QEMU failed. QEMU is
//! killed when the [`Qemu`] guard drops, whatever path leaves this module.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dax_seal_protocol::ktap::{Group, Parser};
pub use dax_seal_protocol::{read_line_bounded, MAX_LINE};
use serde::Serialize;

use crate::vm::console::{KernelReport, Scanner};
use crate::vm::qemu::{self, Vm};

/// After a report's title, how long to wait for the rest of its lines.
const REPORT_GRACE: Duration = Duration::from_secs(2);
/// After QEMU exits, how long results may still be in flight.
const DRAIN: Duration = Duration::from_secs(2);
/// What the guest may write to one channel in one boot; more is a flood,
/// which ends the boot (and keeps the host's disk from filling).
pub const MAX_CHANNEL_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone)]
pub struct BootSpec {
    /// The VM; `results_socket` is filled in by [`boot`].
    pub vm: Vm,
    pub console_log: PathBuf,
    pub ktap_log: PathBuf,
    /// Wall-clock limit for the whole boot.
    pub deadline: Duration,
    /// No console or KTAP output for this long is a hang.
    pub silence: Duration,
    /// Crash scenarios: when to SIGKILL QEMU (no sync, no shutdown).
    pub kill_at: Option<KillAt>,
}

/// A crash moment: `delay` after the first results line that ends with
/// `marker` (a KTAP diagnostic the guest prints at the point it means).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillAt {
    pub marker: String,
    pub delay: Duration,
}

impl KillAt {
    /// At the marker itself.
    pub fn at(marker: &str) -> KillAt {
        KillAt { marker: marker.to_string(), delay: Duration::ZERO }
    }

    pub fn describe(&self) -> String {
        if self.delay.is_zero() {
            format!("at {:?}", self.marker)
        } else {
            format!("{} ms after {:?}", self.delay.as_millis(), self.marker)
        }
    }
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum End {
    PoweredOff,
    KernelReport {
        report: KernelReport,
    },
    Hang {
        silent_secs: u64,
    },
    Deadline {
        secs: u64,
    },
    QemuFailed {
        status: String,
        stderr: String,
    },
    /// The host killed QEMU on purpose, at `BootSpec::kill_at`.
    Killed {
        moment: String,
    },
    /// The guest wrote more than [`MAX_CHANNEL_BYTES`] to one channel.
    Flood {
        channel: String,
        bytes: u64,
    },
}

impl End {
    pub fn is_clean(&self) -> bool {
        *self == End::PoweredOff
    }

    /// A short name: the case name of a failed `boot` entry.
    pub fn name(&self) -> String {
        match self {
            End::PoweredOff => "powered off".into(),
            End::KernelReport { report } => report.kind.describe().into(),
            End::Hang { .. } => "hang".into(),
            End::Deadline { .. } => "deadline".into(),
            End::QemuFailed { .. } => "qemu".into(),
            End::Killed { .. } => "killed by the host".into(),
            End::Flood { .. } => "flood".into(),
        }
    }

    /// One line for summaries and failure details.
    pub fn describe(&self) -> String {
        match self {
            End::PoweredOff => "guest powered off".into(),
            End::KernelReport { report } => format!("{}: {}", report.kind.describe(), report.title),
            End::Hang { silent_secs } => format!("hang: no console or result output for {silent_secs} s"),
            End::Deadline { secs } => format!("deadline: still running after {secs} s"),
            End::QemuFailed { status, stderr } => format!("QEMU failed ({status}): {}", stderr.trim()),
            End::Killed { moment } => format!("killed by the host with SIGKILL {moment}"),
            End::Flood { channel, bytes } => format!(
                "flood: the guest wrote more than {} MiB to its {channel} ({bytes} bytes read); QEMU was killed",
                MAX_CHANNEL_BYTES >> 20
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BootOutcome {
    pub end: End,
    pub ktap: Group,
    /// Lines on the results channel that were not KTAP.
    pub ignored: Vec<String>,
    pub elapsed: Duration,
    pub first_ktap_at: Option<Duration>,
    pub console_log: PathBuf,
    pub ktap_log: PathBuf,
    pub command_line: String,
    /// The last console lines, for failure messages.
    pub console_tail: Vec<String>,
    /// The host checks the workloads asked for, done after the boot.
    pub host_checks: Vec<crate::vm::disks::Checked>,
}

/// Kills QEMU when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

enum Event {
    Console(String),
    ConsoleEof,
    Ktap(String),
    KtapEof,
    Flood(&'static str, u64),
}

/// How QEMU ended, in words that say what probably happened.
fn qemu_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(libc::SIGKILL) => "killed by SIGKILL from outside the harness (the OOM killer, or a user)".into(),
        Some(libc::SIGBUS) => "died of SIGBUS: an NVDIMM backing file was truncated, or the disk holding it \
                               is full (check the free space where the images live)"
            .into(),
        Some(libc::SIGTERM | libc::SIGINT) => format!("{status}: stopped from outside the harness"),
        _ => status.to_string(),
    }
}

/// A command line a user can paste into a shell.
pub fn shell_quote(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=,:".contains(&b)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn boot(mut spec: BootSpec) -> Result<BootOutcome> {
    qemu::check_installed()?;
    let sock_dir = tempfile::Builder::new().prefix("dax-seal-").tempdir().context("creating a socket directory")?;
    let socket = sock_dir.path().join("ktap.sock");
    let listener = UnixListener::bind(&socket).with_context(|| format!("listening on {}", socket.display()))?;
    listener.set_nonblocking(true)?;
    spec.vm.results_socket = Some(socket);

    let args = qemu::argv(&spec.vm);
    let command_line = format!("{} {}", qemu::QEMU, shell_quote(&args));
    let mut console_log =
        File::create(&spec.console_log).with_context(|| format!("creating {}", spec.console_log.display()))?;
    let mut ktap_log = File::create(&spec.ktap_log).with_context(|| format!("creating {}", spec.ktap_log.display()))?;
    writeln!(console_log, "# {command_line}")?;

    let mut child = Command::new(qemu::QEMU)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", qemu::QEMU))?;
    let stdout = child.stdout.take().context("QEMU stdout")?;
    let mut stderr = child.stderr.take().context("QEMU stderr")?;
    let mut qemu = Qemu(child);
    let start = Instant::now();
    // Bounded: a guest that writes faster than the loop below judges is
    // slowed down (its QEMU blocks on a full pipe), not buffered.
    let (tx, rx) = mpsc::sync_channel(1024);

    let console_tx = tx.clone();
    let console_thread = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        let mut total = 0u64;
        // Lines are split on '\n' by hand: the console is not always UTF-8.
        while let Ok(n @ 1..) = read_line_bounded(&mut reader, &mut buf, MAX_LINE) {
            total += n as u64;
            if total > MAX_CHANNEL_BYTES {
                let _ = console_tx.send(Event::Flood("console", total));
                break;
            }
            let _ = console_log.write_all(&buf).and_then(|()| console_log.flush());
            let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
            // Once the boot is judged nobody listens; keep logging to the end.
            let _ = console_tx.send(Event::Console(line));
        }
        let _ = console_tx.send(Event::ConsoleEof);
    });
    let stop = Arc::new(AtomicBool::new(false));
    let ktap_stop = stop.clone();
    let ktap_thread = std::thread::spawn(move || {
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break Some(s),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && !ktap_stop.load(Ordering::Relaxed) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => break None,
            }
        };
        if let Some(s) = stream {
            let _ = s.set_nonblocking(false);
            let mut reader = BufReader::new(s);
            let (mut buf, mut total) = (Vec::new(), 0u64);
            while let Ok(n @ 1..) = read_line_bounded(&mut reader, &mut buf, MAX_LINE) {
                total += n as u64;
                if total > MAX_CHANNEL_BYTES {
                    let _ = tx.send(Event::Flood("results port", total));
                    break;
                }
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                let _ = writeln!(ktap_log, "{line}").and_then(|()| ktap_log.flush());
                // After a kill the lines still in flight are logged (the crash
                // campaign counts the acknowledgements among them).
                let _ = tx.send(Event::Ktap(line));
            }
        }
        let _ = tx.send(Event::KtapEof);
    });
    let stderr_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.by_ref().take(64 << 10).read_to_string(&mut text);
        text
    });

    let mut scanner = Scanner::new();
    let mut parser = Parser::new();
    let mut first_ktap_at = None;
    let mut tail: std::collections::VecDeque<String> = Default::default();
    let mut last_activity = Instant::now();
    let mut report_seen: Option<Instant> = None;
    let mut console_eof: Option<Instant> = None;
    let mut ktap_eof = false;
    let mut kill_deadline: Option<Instant> = None;
    let end = loop {
        let wait = kill_deadline.map_or(Duration::from_millis(100), |t| {
            t.saturating_duration_since(Instant::now()).min(Duration::from_millis(100))
        });
        match rx.recv_timeout(wait) {
            Ok(Event::Console(line)) => {
                last_activity = Instant::now();
                if scanner.feed(&line).is_some() && report_seen.is_none() {
                    report_seen = Some(Instant::now());
                }
                if tail.len() == 40 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            Ok(Event::Ktap(line)) => {
                last_activity = Instant::now();
                first_ktap_at.get_or_insert(start.elapsed());
                parser.feed(&line, start.elapsed());
                if let Some(kill) = spec.kill_at.as_ref().filter(|k| line.trim_end().ends_with(k.marker.as_str())) {
                    kill_deadline.get_or_insert(Instant::now() + kill.delay);
                }
            }
            Ok(Event::Flood(channel, bytes)) => break End::Flood { channel: channel.into(), bytes },
            Ok(Event::ConsoleEof) => console_eof = Some(Instant::now()),
            Ok(Event::KtapEof) => ktap_eof = true,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                console_eof.get_or_insert_with(Instant::now);
                ktap_eof = true;
            }
        }
        if let (Some(t), Some(kill)) = (kill_deadline, &spec.kill_at) {
            if Instant::now() >= t {
                // Child::kill is SIGKILL: the guest gets no chance to sync.
                let _ = qemu.0.kill();
                break End::Killed { moment: kill.describe() };
            }
        }
        if let Some(at) = console_eof {
            // QEMU is gone (or going): collect its status once results drained.
            if ktap_eof || at.elapsed() > DRAIN {
                let status = qemu.0.wait().context("waiting for QEMU")?;
                break match &scanner.first {
                    Some(report) => End::KernelReport { report: report.clone() },
                    None if status.success() => End::PoweredOff,
                    None => End::QemuFailed { status: qemu_status(status), stderr: String::new() },
                };
            }
            continue;
        }
        if let (Some(at), Some(report)) = (report_seen, &scanner.first) {
            if scanner.report_complete() || at.elapsed() > REPORT_GRACE {
                break End::KernelReport { report: report.clone() };
            }
        }
        if last_activity.elapsed() > spec.silence {
            break End::Hang { silent_secs: last_activity.elapsed().as_secs() };
        }
        if start.elapsed() > spec.deadline {
            break End::Deadline { secs: start.elapsed().as_secs() };
        }
    };
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    // The readers must not block on a full channel nobody reads.
    drop(rx);
    drop(qemu);
    let _ = console_thread.join();
    let _ = ktap_thread.join();
    let stderr_text = stderr_thread.join().unwrap_or_default();
    let end = match end {
        End::QemuFailed { status, .. } => End::QemuFailed { status, stderr: stderr_text },
        // QEMU quit before the guest said anything, and said why itself.
        End::PoweredOff if first_ktap_at.is_none() && !stderr_text.trim().is_empty() => {
            End::QemuFailed { status: "exit 0 before any result".into(), stderr: stderr_text }
        }
        other => other,
    };
    let (ktap, ignored) = parser.finish(elapsed);
    Ok(BootOutcome {
        end,
        ktap,
        ignored,
        elapsed,
        first_ktap_at,
        console_log: spec.console_log,
        ktap_log: spec.ktap_log,
        command_line,
        console_tail: tail.into_iter().collect(),
        host_checks: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn quoting() {
        let args =
            ["-append".to_string(), "console=ttyS0 panic=-1".into(), "it's".into(), "a,b=c".into(), String::new()];
        assert_eq!(shell_quote(&args), "-append 'console=ttyS0 panic=-1' 'it'\\''s' a,b=c ''");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::testing::proptest_config())]

        /// Any byte stream, read through any buffer size with any line
        /// limit: every byte is consumed once, no line keeps more than the
        /// limit, and lines within the limit come back whole.
        #[test]
        fn bounded_lines_consume_everything_and_keep_at_most_the_limit(
            data in prop::collection::vec(prop_oneof![9 => any::<u8>(), 1 => Just(b'\n')], 0..4000),
            capacity in 1usize..64,
            max in 0usize..300,
        ) {
            let mut r = BufReader::with_capacity(capacity, &data[..]);
            let (mut buf, mut total, mut lines) = (Vec::new(), 0, Vec::new());
            loop {
                let n = read_line_bounded(&mut r, &mut buf, max).unwrap();
                if n == 0 {
                    break;
                }
                prop_assert!(buf.len() <= max);
                total += n;
                lines.push((n, buf.clone()));
            }
            prop_assert_eq!(total, data.len());
            let mut at = 0;
            for (n, line) in lines {
                let whole = &data[at..at + n];
                prop_assert_eq!(&line[..], &whole[..n.min(max)]);
                at += n;
            }
        }
    }
}
