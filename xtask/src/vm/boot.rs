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
    /// The accelerator QEMU ran the guest with.
    pub accel: crate::vm::qemu::Accel,
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
    let accel = spec.vm.accel;
    let mut console_log =
        File::create(&spec.console_log).with_context(|| format!("creating {}", spec.console_log.display()))?;
    let ktap_log = File::create(&spec.ktap_log).with_context(|| format!("creating {}", spec.ktap_log.display()))?;
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
    // Bounded: a guest that writes faster than the watch judges is slowed
    // down (its QEMU blocks on a full pipe), not buffered.
    let (tx, rx) = mpsc::sync_channel(1024);
    let stop = Arc::new(AtomicBool::new(false));
    let readers = [
        std::thread::spawn({
            let tx = tx.clone();
            move || read_console(stdout, console_log, &tx)
        }),
        std::thread::spawn({
            let stop = stop.clone();
            move || read_results(&listener, ktap_log, &tx, &stop)
        }),
    ];
    let stderr_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.by_ref().take(64 << 10).read_to_string(&mut text);
        text
    });

    let mut watch = Watch::new(&spec);
    let end = loop {
        if let Some(end) = watch.see(rx.recv_timeout(watch.wait())) {
            break end;
        }
        if let Some(end) = watch.ended(&mut qemu)? {
            break end;
        }
    };
    let elapsed = watch.start.elapsed();
    stop.store(true, Ordering::Relaxed);
    // The readers must not block on a full channel nobody reads.
    drop(rx);
    drop(qemu);
    for reader in readers {
        let _ = reader.join();
    }
    let end = with_stderr(end, stderr_thread.join().unwrap_or_default(), watch.first_ktap_at.is_some());
    let (first_ktap_at, console_tail) = (watch.first_ktap_at, watch.tail.into_iter().collect());
    let (ktap, ignored) = watch.parser.finish(elapsed);
    Ok(BootOutcome {
        end,
        ktap,
        ignored,
        elapsed,
        first_ktap_at,
        console_log: spec.console_log,
        ktap_log: spec.ktap_log,
        command_line,
        console_tail,
        host_checks: Vec::new(),
        accel,
    })
}

/// Streams the console to its log and to the watch until QEMU closes it
/// or it floods. The log gets the bytes as they came: the console is not
/// always UTF-8.
fn read_console(stdout: impl Read, mut log: File, tx: &mpsc::SyncSender<Event>) {
    let log_line = |buf: &[u8], _: &str| {
        let _ = log.write_all(buf).and_then(|()| log.flush());
    };
    // Once the boot is judged nobody listens; keep logging to the end.
    stream_lines(BufReader::new(stdout), "console", log_line, tx, Event::Console);
    let _ = tx.send(Event::ConsoleEof);
}

/// Waits for QEMU to connect the results port (until `stop`), then streams
/// it to its log and to the watch until it closes or floods. After a kill
/// the lines still in flight are logged too (the crash campaign counts the
/// acknowledgements among them).
fn read_results(listener: &UnixListener, mut log: File, tx: &mpsc::SyncSender<Event>, stop: &AtomicBool) {
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && !stop.load(Ordering::Relaxed) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => break None,
        }
    };
    if let Some(s) = stream {
        let _ = s.set_nonblocking(false);
        let log_line = |_: &[u8], line: &str| {
            let _ = writeln!(log, "{line}").and_then(|()| log.flush());
        };
        stream_lines(BufReader::new(s), "results port", log_line, tx, Event::Ktap);
    }
    let _ = tx.send(Event::KtapEof);
}

/// Reads `channel` line by line (split on '\n' by hand, each at most
/// MAX_LINE bytes), logging each (raw bytes and text) and sending it as
/// `event`, until it ends or passes MAX_CHANNEL_BYTES, which is a flood.
fn stream_lines(
    mut reader: impl std::io::BufRead,
    channel: &'static str,
    mut log: impl FnMut(&[u8], &str),
    tx: &mpsc::SyncSender<Event>,
    event: fn(String) -> Event,
) {
    let (mut buf, mut total) = (Vec::new(), 0u64);
    while let Ok(n @ 1..) = read_line_bounded(&mut reader, &mut buf, MAX_LINE) {
        total += n as u64;
        if total > MAX_CHANNEL_BYTES {
            let _ = tx.send(Event::Flood(channel, total));
            return;
        }
        let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
        log(&buf, &line);
        let _ = tx.send(event(line));
    }
}

/// What the host has seen of one boot so far, and the rules that end it.
struct Watch<'a> {
    spec: &'a BootSpec,
    start: Instant,
    scanner: Scanner,
    parser: Parser,
    first_ktap_at: Option<Duration>,
    /// The last console lines.
    tail: std::collections::VecDeque<String>,
    last_activity: Instant,
    report_seen: Option<Instant>,
    console_eof: Option<Instant>,
    ktap_eof: bool,
    kill_deadline: Option<Instant>,
}

impl<'a> Watch<'a> {
    fn new(spec: &'a BootSpec) -> Watch<'a> {
        let now = Instant::now();
        Watch {
            spec,
            start: now,
            scanner: Scanner::new(),
            parser: Parser::new(),
            first_ktap_at: None,
            tail: Default::default(),
            last_activity: now,
            report_seen: None,
            console_eof: None,
            ktap_eof: false,
            kill_deadline: None,
        }
    }

    /// How long to wait for the next event: a tenth of a second, less when
    /// a kill is due sooner.
    fn wait(&self) -> Duration {
        self.kill_deadline.map_or(Duration::from_millis(100), |t| {
            t.saturating_duration_since(Instant::now()).min(Duration::from_millis(100))
        })
    }

    /// Takes in one event (or a timeout); a flood ends the boot at once.
    fn see(&mut self, event: Result<Event, mpsc::RecvTimeoutError>) -> Option<End> {
        match event {
            Ok(Event::Console(line)) => {
                self.last_activity = Instant::now();
                if self.scanner.feed(&line).is_some() && self.report_seen.is_none() {
                    self.report_seen = Some(Instant::now());
                }
                if self.tail.len() == 40 {
                    self.tail.pop_front();
                }
                self.tail.push_back(line);
            }
            Ok(Event::Ktap(line)) => {
                self.last_activity = Instant::now();
                self.first_ktap_at.get_or_insert(self.start.elapsed());
                self.parser.feed(&line, self.start.elapsed());
                if let Some(kill) = self.spec.kill_at.as_ref().filter(|k| line.trim_end().ends_with(k.marker.as_str()))
                {
                    self.kill_deadline.get_or_insert(Instant::now() + kill.delay);
                }
            }
            Ok(Event::Flood(channel, bytes)) => return Some(End::Flood { channel: channel.into(), bytes }),
            Ok(Event::ConsoleEof) => self.console_eof = Some(Instant::now()),
            Ok(Event::KtapEof) => self.ktap_eof = true,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.console_eof.get_or_insert_with(Instant::now);
                self.ktap_eof = true;
            }
        }
        None
    }

    /// Whether the boot has ended, by the first rule that says so: the
    /// host's kill moment, QEMU gone (once results drained), a complete
    /// kernel report, silence, the deadline.
    fn ended(&mut self, qemu: &mut Qemu) -> Result<Option<End>> {
        if let (Some(t), Some(kill)) = (self.kill_deadline, &self.spec.kill_at) {
            if Instant::now() >= t {
                // Child::kill is SIGKILL: the guest gets no chance to sync.
                let _ = qemu.0.kill();
                return Ok(Some(End::Killed { moment: kill.describe() }));
            }
        }
        if let Some(at) = self.console_eof {
            // QEMU is gone (or going): collect its status once results drained.
            if !self.ktap_eof && at.elapsed() <= DRAIN {
                return Ok(None);
            }
            let status = qemu.0.wait().context("waiting for QEMU")?;
            return Ok(Some(match &self.scanner.first {
                Some(report) => End::KernelReport { report: report.clone() },
                None if status.success() => End::PoweredOff,
                None => End::QemuFailed { status: qemu_status(status), stderr: String::new() },
            }));
        }
        if let (Some(at), Some(report)) = (self.report_seen, &self.scanner.first) {
            if self.scanner.report_complete() || at.elapsed() > REPORT_GRACE {
                return Ok(Some(End::KernelReport { report: report.clone() }));
            }
        }
        if self.last_activity.elapsed() > self.spec.silence {
            return Ok(Some(End::Hang { silent_secs: self.last_activity.elapsed().as_secs() }));
        }
        if self.start.elapsed() > self.spec.deadline {
            return Ok(Some(End::Deadline { secs: self.start.elapsed().as_secs() }));
        }
        Ok(None)
    }
}

/// The end with what QEMU printed on stderr: a failure's reason, or the
/// reason a boot that "powered off" before any result was QEMU quitting.
fn with_stderr(end: End, stderr: String, any_result: bool) -> End {
    match end {
        End::QemuFailed { status, .. } => End::QemuFailed { status, stderr },
        End::PoweredOff if !any_result && !stderr.trim().is_empty() => {
            End::QemuFailed { status: "exit 0 before any result".into(), stderr }
        }
        other => other,
    }
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
