//! `seal-race`: worker threads change one file's block map in every way the
//! contract names (punch, zero, truncate up and down, fallocate, reflink in
//! and out, appends, DAX stores into holes, io_uring buffer registration)
//! while a toggler seals and unseals it. Each call is judged against the
//! phase the file was in for its whole duration:
//!
//! - sealed (SEAL returned 0, UNSEAL not yet called): every map change fails
//!   with ETXTBSY, overwrites and stores succeed, a long-term pin succeeds;
//! - unsealed (UNSEAL returned 0, SEAL not yet called): every call succeeds,
//!   except the long-term pin, which 6.12 refuses on fsdax (EOPNOTSUPP);
//! - a call that overlaps a SEAL or UNSEAL may give either answer.
//!
//! While sealed the toggler re-reads FIEMAP, i_size and st_blocks in a loop
//! and compares them with what it saw when SEAL returned, which must itself
//! be a normalised map. At the end, the kernel's long-term pin counters
//! ([`crate::fixture::pin_counters`]) must balance. On a kernel without the
//! series SEAL gives EOPNOTSUPP: the same workers then run as a control in
//! which everything must succeed, and the sealed-only cases skip with that
//! reason.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dax_seal_protocol::{RunConfig, MOUNT_PREFIX};

use crate::calls::errno_text;
use crate::cases::{Cases, Expect};
use crate::fixture::{create, describe, is_sealed, pin_counters, probe};
use crate::seal::{self, Extent};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const BLOCK: u64 = 4 * KIB;
/// The file never gets shorter than this, so stores into [0, FLOOR) never
/// fault beyond EOF.
const FLOOR: u64 = MIB;
/// Truncate and fallocate aim below this size.
const CEILING: u64 = 4 * MIB;
/// The reflink partner's size, and the longest range an operation touches.
const PARTNER: u64 = 256 * KIB;
const MAX_RANGE: u64 = 64 * KIB;
/// How long UNSEAL may keep answering EBUSY before the run calls it stuck.
const UNSEAL_PATIENCE: Duration = Duration::from_secs(10);
/// The most violations quoted per case; the rest are counted.
const QUOTED: usize = 4;

/// The file's phase, with an epoch that changes at every transition, so a
/// worker can tell whether its call lay entirely within one phase.
struct Phase(AtomicU64);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Unsealed,
    Sealing,
    Sealed,
    Unsealing,
}

impl Phase {
    fn set(&self, state: State) {
        let epoch = (self.0.load(SeqCst) >> 2) + 1;
        self.0.store(epoch << 2 | state as u64, SeqCst);
    }

    fn read(&self) -> u64 {
        self.0.load(SeqCst)
    }

    fn state(word: u64) -> State {
        [State::Unsealed, State::Sealing, State::Sealed, State::Unsealing][(word & 3) as usize]
    }
}

const TXT: Expect = Expect::Err(libc::ETXTBSY);

/// One worker: the call it repeats and the contract's answer per phase.
struct Op {
    name: &'static str,
    sealed: Expect,
    unsealed: Expect,
    /// Does one call. `Err` is a failure of the workload's own set-up (an
    /// mmap, an unregister), never judged against the contract.
    call: fn(&Files, &mut Rng) -> Result<io::Result<()>, String>,
}

const OPS: &[Op] = &[
    Op { name: "punch-hole", sealed: TXT, unsealed: Expect::Ok, call: op_punch },
    Op { name: "zero-range", sealed: TXT, unsealed: Expect::Ok, call: op_zero },
    Op { name: "truncate-up-and-down", sealed: TXT, unsealed: Expect::Ok, call: op_truncate },
    Op { name: "fallocate", sealed: TXT, unsealed: Expect::Ok, call: op_fallocate },
    Op { name: "reflink-in", sealed: TXT, unsealed: Expect::Ok, call: op_reflink_in },
    Op { name: "reflink-out", sealed: TXT, unsealed: Expect::Ok, call: op_reflink_out },
    Op { name: "append-write", sealed: TXT, unsealed: Expect::Ok, call: op_append },
    Op { name: "overwrite-inside-eof", sealed: Expect::Ok, unsealed: Expect::Ok, call: op_overwrite },
    Op { name: "dax-mmap-store-into-holes", sealed: Expect::Ok, unsealed: Expect::Ok, call: op_mmap_store },
    Op {
        name: "io-uring-register-buffers",
        sealed: Expect::Ok,
        unsealed: Expect::Err(libc::EOPNOTSUPP),
        call: op_register,
    },
];

/// The files every thread shares.
struct Files {
    target: File,
    /// The same file opened O_APPEND.
    append: File,
    partner: File,
    /// Only the registering worker uses it.
    ring: Mutex<seal::Ring>,
}

/// xorshift64*: cheap, seedable, good enough to pick offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A block-aligned offset below `end`.
    fn block_below(&mut self, end: u64) -> u64 {
        self.below(end / BLOCK) * BLOCK
    }

    /// A block-aligned length of 1 to MAX_RANGE / BLOCK blocks.
    fn range_len(&mut self) -> u64 {
        (1 + self.below(MAX_RANGE / BLOCK)) * BLOCK
    }
}

fn op_punch(f: &Files, rng: &mut Rng) -> Result<io::Result<()>, String> {
    let mode = seal::FALLOC_FL_PUNCH_HOLE | seal::FALLOC_FL_KEEP_SIZE;
    Ok(seal::fallocate(&f.target, mode, rng.block_below(FLOOR), rng.range_len()))
}

fn op_zero(f: &Files, rng: &mut Rng) -> Result<io::Result<()>, String> {
    let mode = seal::FALLOC_FL_ZERO_RANGE | if rng.below(2) == 0 { seal::FALLOC_FL_KEEP_SIZE } else { 0 };
    Ok(seal::fallocate(&f.target, mode, rng.block_below(FLOOR), rng.range_len()))
}

fn op_truncate(f: &Files, rng: &mut Rng) -> Result<io::Result<()>, String> {
    // Any size from the floor to the ceiling, aligned or not.
    Ok(f.target.set_len(FLOOR + rng.below(CEILING - FLOOR)))
}

fn op_fallocate(f: &Files, rng: &mut Rng) -> Result<io::Result<()>, String> {
    // Inside EOF, past it (moving EOF), or past it with KEEP_SIZE.
    let mode = if rng.below(3) == 0 { seal::FALLOC_FL_KEEP_SIZE } else { 0 };
    Ok(seal::fallocate(&f.target, mode, rng.block_below(CEILING), rng.range_len()))
}

fn op_reflink_in(f: &Files, rng: &mut Rng) -> Result<io::Result<()>, String> {
    let len = rng.range_len();
    Ok(seal::ficlonerange(&f.target, rng.block_below(FLOOR - len), &f.partner, rng.block_below(PARTNER - len), len))
}

fn op_reflink_out(f: &Files, rng: &mut Rng) -> Result<io::Result<()>, String> {
    let len = rng.range_len();
    Ok(seal::ficlonerange(&f.partner, rng.block_below(PARTNER - len), &f.target, rng.block_below(FLOOR - len), len))
}

fn op_append(f: &Files, rng: &mut Rng) -> Result<io::Result<()>, String> {
    let buf = vec![0xa5u8; (1 + rng.below(4)) as usize * BLOCK as usize];
    // One write(2): an append either happens or fails.
    Ok(match (&f.append).write(&buf) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(n) => Err(io::Error::other(format!("short append: {n} of {} bytes", buf.len()))),
        Err(e) => Err(e),
    })
}

fn op_overwrite(f: &Files, rng: &mut Rng) -> Result<io::Result<()>, String> {
    let buf = vec![0x3cu8; rng.range_len() as usize];
    Ok(f.target.write_all_at(&buf, rng.block_below(FLOOR - buf.len() as u64)))
}

fn op_mmap_store(f: &Files, rng: &mut Rng) -> Result<io::Result<()>, String> {
    let mut map = match crate::fixture::shared_map(&f.target, FLOOR as usize) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let bytes = map.as_mut_slice();
    for _ in 0..8 {
        let at = rng.below(FLOOR) as usize;
        // SAFETY: a volatile store inside the mapping; the file is never
        // shorter than FLOOR, so this cannot fault beyond EOF.
        unsafe { std::ptr::write_volatile(bytes.as_mut_ptr().add(at), 0x77) };
    }
    Ok(Ok(()))
}

fn op_register(f: &Files, rng: &mut Rng) -> Result<io::Result<()>, String> {
    let len = rng.range_len() as usize;
    let mut map = crate::fixture::shared_map(&f.target, len).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    let ring = f.ring.lock().map_err(|_| "the ring's lock is poisoned".to_string())?;
    let r = ring.register(map.as_mut_ptr(), len);
    if r.is_ok() {
        // Hold the pins for a moment, so UNSEAL meets them.
        std::thread::sleep(Duration::from_micros(200 + rng.below(800)));
        ring.unregister().map_err(|e| format!("IORING_UNREGISTER_BUFFERS: {}", errno_text(&e)))?;
    }
    Ok(r)
}

/// One worker's tally.
#[derive(Default)]
struct Tally {
    calls: u64,
    sealed: u64,
    unsealed: u64,
    during_transition: u64,
    /// errno (0 for success) -> count.
    answers: BTreeMap<i32, u64>,
    violations: u64,
    quoted: Vec<String>,
}

impl Tally {
    fn violation(&mut self, text: String) {
        self.violations += 1;
        if self.quoted.len() < QUOTED {
            self.quoted.push(text);
        }
    }

    fn summary(&self) -> String {
        let answers: Vec<String> = self
            .answers
            .iter()
            .map(|(e, n)| if *e == 0 { format!("ok {n}") } else { format!("errno {e} {n}") })
            .collect();
        format!(
            "{} calls: {} while sealed, {} while unsealed, {} across a transition; answers: {}",
            self.calls,
            self.sealed,
            self.unsealed,
            self.during_transition,
            answers.join(", ")
        )
    }
}

/// `starved` counts the workers with no call yet that lay wholly inside an
/// unsealed phase; each worker takes itself off at its first one.
fn worker(op: &Op, files: &Files, phase: &Phase, stop: &AtomicBool, starved: &AtomicU64, seed: u64) -> Tally {
    let mut rng = Rng(seed | 1);
    let mut t = Tally::default();
    while !stop.load(SeqCst) {
        let before = phase.read();
        let r = match (op.call)(files, &mut rng) {
            Ok(r) => r,
            Err(setup) => {
                t.violation(format!("workload set-up failed: {setup}"));
                break;
            }
        };
        let after = phase.read();
        t.calls += 1;
        *t.answers.entry(r.as_ref().err().map_or(0, |e| e.raw_os_error().unwrap_or(-1))).or_default() += 1;
        let steady = if before == after { Some(Phase::state(before)) } else { None };
        let want = match steady {
            Some(State::Sealed) => {
                t.sealed += 1;
                Some(op.sealed)
            }
            Some(State::Unsealed) => {
                if t.unsealed == 0 {
                    starved.fetch_sub(1, SeqCst);
                }
                t.unsealed += 1;
                Some(op.unsealed)
            }
            _ => {
                t.during_transition += 1;
                None
            }
        };
        let admitted = match want {
            Some(want) => want.admits(&r),
            // Across a transition either phase's answer is right.
            None => op.sealed.admits(&r) || op.unsealed.admits(&r),
        };
        if !admitted {
            let got = match &r {
                Ok(()) => "success".to_string(),
                Err(e) => errno_text(e),
            };
            let wanted = match want {
                Some(w) => w.text(),
                None => format!("{} or {}", op.sealed.text(), op.unsealed.text()),
            };
            let during = steady.map_or("across a transition".to_string(), |s| format!("while {s:?}").to_lowercase());
            t.violation(format!("{} {during}: got {got}, the contract says {wanted}", op.name));
        }
        // Give every thread a turn: the guest may have a single CPU.
        std::thread::yield_now();
    }
    t
}

/// The toggler's tally.
#[derive(Default)]
struct Toggles {
    seals: u64,
    unseals: u64,
    seal_ebusy: u64,
    unseal_ebusy: u64,
    map_checks: u64,
    /// Failures of SEAL/UNSEAL themselves.
    errors: Tally,
    /// The map, size or blocks moved while sealed.
    moved: Tally,
    /// A map right after SEAL that is not normalised.
    unnormalised: Tally,
    /// The largest extent count seen right after SEAL.
    max_extents: usize,
}

/// The file as the toggler sees it: map, size, allocated blocks.
#[derive(PartialEq, Eq)]
struct Shape {
    map: Vec<Extent>,
    size: u64,
    blocks: u64,
}

fn shape(file: &File) -> io::Result<Shape> {
    let meta = file.metadata()?;
    Ok(Shape { map: seal::fiemap(file)?, size: meta.len(), blocks: meta.blocks() })
}

/// Why a map right after SEAL is not what SEAL promises, if it is not.
fn not_normalised(s: &Shape) -> Option<String> {
    let mut next = 0;
    for e in &s.map {
        if e.logical != next {
            return Some(format!("hole at {next}..{}", e.logical));
        }
        let bad = e.flags & (seal::FIEMAP_EXTENT_UNWRITTEN | seal::FIEMAP_EXTENT_SHARED | seal::FIEMAP_EXTENT_DELALLOC);
        if bad != 0 {
            return Some(format!("extent at {} has flags {:#x}", e.logical, e.flags));
        }
        next = e.logical + e.length;
    }
    let allocated_to = next;
    if allocated_to < s.size {
        return Some(format!("hole at {allocated_to}..{} (EOF)", s.size));
    }
    if allocated_to >= s.size.next_multiple_of(BLOCK) + BLOCK {
        return Some(format!("blocks beyond EOF: mapped to {allocated_to}, size {}", s.size));
    }
    None
}

fn toggler(files: &Files, phase: &Phase, stop: &AtomicBool, starved: &AtomicU64, seed: u64) -> Toggles {
    let file = &files.target;
    let mut rng = Rng(seed | 1);
    let mut t = Toggles::default();
    // Extra unsealed time while some worker has never completed a call
    // inside an unsealed phase: on a slow kernel (KASAN under TCG) a call
    // that allocates can outlast every ordinary window.
    let mut stretch = 0;
    while !stop.load(SeqCst) {
        // Unsealed for a while, so the workers reshape the map. Longer than
        // the sealed windows: refused calls are quick, so sealed windows
        // already collect more calls.
        stretch = if starved.load(SeqCst) > 0 && t.seals >= 3 { (stretch + 100).min(2000) } else { 0 };
        std::thread::sleep(Duration::from_millis(40 + rng.below(120) + stretch));
        phase.set(State::Sealing);
        match seal::seal(file) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                // The contract's answer when the map moved under SEAL.
                t.seal_ebusy += 1;
                phase.set(State::Unsealed);
                continue;
            }
            Err(e) => {
                t.errors.violation(format!("SEAL: {}", errno_text(&e)));
                stop.store(true, SeqCst);
                return t;
            }
        }
        t.seals += 1;
        let first = match shape(file) {
            Ok(s) => s,
            Err(e) => {
                t.errors.violation(format!("FIEMAP/fstat after SEAL: {}", errno_text(&e)));
                stop.store(true, SeqCst);
                return t;
            }
        };
        phase.set(State::Sealed);
        t.max_extents = t.max_extents.max(first.map.len());
        if let Some(why) = not_normalised(&first) {
            t.unnormalised.violation(format!(
                "after seal {}: {why}; map {}",
                t.seals,
                describe(&first.map, first.size)
            ));
        }
        // Sealed for a while: the map must not move.
        let until = Instant::now() + Duration::from_millis(20 + rng.below(80));
        while Instant::now() < until {
            t.map_checks += 1;
            match shape(file) {
                Ok(now) if now == first => {}
                Ok(now) => t.moved.violation(format!(
                    "while sealed (seal {}): size {} -> {}, blocks {} -> {}, map {} -> {}",
                    t.seals,
                    first.size,
                    now.size,
                    first.blocks,
                    now.blocks,
                    describe(&first.map, first.size),
                    describe(&now.map, now.size)
                )),
                Err(e) => t.errors.violation(format!("FIEMAP/fstat while sealed: {}", errno_text(&e))),
            }
            std::thread::yield_now();
        }
        phase.set(State::Unsealing);
        let since = Instant::now();
        loop {
            match seal::unseal(file) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && since.elapsed() < UNSEAL_PATIENCE => {
                    // Mapped or pinned by a worker this instant.
                    t.unseal_ebusy += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => {
                    t.errors.violation(format!(
                        "UNSEAL after {:.1} s of trying: {}",
                        since.elapsed().as_secs_f64(),
                        errno_text(&e)
                    ));
                    stop.store(true, SeqCst);
                    return t;
                }
            }
        }
        t.unseals += 1;
        phase.set(State::Unsealed);
    }
    t
}

/// A case's verdict: a note on pass, the reason on failure.
type CaseResult = Result<((), String), String>;

/// Cases: set-up, the toggler, the map while sealed, normalisation, one
/// per worker, pin balance, final state.
const FIXED_CASES: usize = 6;

/// How often the race prints a progress line: well inside the host's
/// silence deadline (120 s by default).
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// The most a race runs past its seconds for a starved worker.
const OVERTIME: Duration = Duration::from_secs(60);

pub fn run() -> ExitCode {
    let mut t = Cases::new(FIXED_CASES + OPS.len());
    let made = crate::workdir::fresh(Path::new(&format!("{MOUNT_PREFIX}0")), "seal-race");
    let dir = made.clone().unwrap_or_default();
    let ready = t.check("setup", made.and_then(|dir| set_up(&dir)));
    let Some((files, has_seal, seconds, pins_before)) = ready else {
        for name in case_names() {
            t.blocked(&name, "setup");
        }
        return t.exit();
    };
    let phase = Phase(AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    let starved = AtomicU64::new(OPS.len() as u64);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    t.note(&format!(
        "{} workers for {seconds} s, seed {seed:#x}, {}",
        OPS.len(),
        if has_seal.is_ok() { "toggling SEAL/UNSEAL" } else { "no seal on this kernel: control run" }
    ));
    let tallies = Mutex::new(Vec::new());
    let toggles = std::thread::scope(|s| {
        for (i, op) in OPS.iter().enumerate() {
            let (files, phase, stop, starved, tallies) = (&files, &phase, &stop, &starved, &tallies);
            s.spawn(move || {
                let tally = worker(op, files, phase, stop, starved, seed.rotate_left(i as u32 * 5 + 1));
                if let Ok(mut v) = tallies.lock() {
                    v.push((i, tally));
                }
            });
        }
        let toggler = has_seal.is_ok().then(|| s.spawn(|| toggler(&files, &phase, &stop, &starved, seed)));
        let start = Instant::now();
        let end = start + Duration::from_secs(seconds);
        // A worker whose calls outlast every unsealed window so far (a slow
        // kernel on a busy host) gets up to as long again, at most
        // OVERTIME, before its case says the race did not exercise it.
        let overtime = end + Duration::from_secs(seconds).min(OVERTIME);
        let mut next_note = start + PROGRESS_EVERY;
        let mut extended = false;
        loop {
            let now = Instant::now();
            let starving = starved.load(SeqCst) > 0 && has_seal.is_ok();
            if stop.load(SeqCst) || now >= overtime || (now >= end && !starving) {
                break;
            }
            if now >= end && !extended {
                extended = true;
                t.note(&format!(
                    "{} worker(s) with no call yet inside an unsealed phase: racing up to {} s more",
                    starved.load(SeqCst),
                    (overtime - end).as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
            // A long race must not look like a silent guest to the host.
            if Instant::now() >= next_note {
                next_note += PROGRESS_EVERY;
                t.note(&format!("{} s of {seconds} s", start.elapsed().as_secs()));
            }
        }
        stop.store(true, SeqCst);
        toggler.map(|h| h.join())
    });
    let mut tallies = tallies.into_inner().unwrap_or_default();
    tallies.sort_by_key(|(i, _)| *i);

    let skip_reason = has_seal.clone().err();
    let sealed_case = |t: &mut Cases, name: &str, f: &dyn Fn(&Toggles) -> CaseResult| match (&skip_reason, &toggles) {
        (Some(why), _) => t.skip(name, why),
        (None, Some(Ok(toggles))) => {
            t.check(name, f(toggles));
        }
        (None, _) => t.blocked(name, "the toggler thread (it panicked)"),
    };
    sealed_case(&mut t, "seal-unseal-toggler", &|g| {
        let note = format!(
            "{} seals ({} EBUSY), {} unseals ({} EBUSY while mapped or pinned)",
            g.seals, g.seal_ebusy, g.unseals, g.unseal_ebusy
        );
        verdict(&g.errors, note, g.seals >= 3, "fewer than 3 seals: the race never really ran")
    });
    sealed_case(&mut t, "map-size-blocks-stable-while-sealed", &|g| {
        verdict(&g.moved, format!("{} checks over {} sealed windows", g.map_checks, g.seals), g.map_checks > 0, "")
    });
    sealed_case(&mut t, "every-seal-normalises", &|g| {
        let note = format!("{} seals, up to {} extents right after one", g.seals, g.max_extents);
        verdict(&g.unnormalised, note, true, "")
    });
    for (i, op) in OPS.iter().enumerate() {
        let Some((_, tally)) = tallies.iter().find(|(j, _)| *j == i) else {
            t.blocked(op.name, "its worker thread (it panicked)");
            continue;
        };
        // Each worker must have been judged in every phase it can meet.
        let covered = tally.unsealed > 0 && (skip_reason.is_some() || tally.sealed > 0);
        t.check(
            op.name,
            verdict(tally, tally.summary(), covered, "never ran in a steady phase: the race did not exercise it"),
        );
    }
    drop(files);
    t.check("long-term-pins-balanced", pins_balanced(pins_before));
    t.check("left-unsealed-and-removable", tear_down(&dir, has_seal.is_ok()));
    t.exit()
}

fn case_names() -> Vec<String> {
    let mut names: Vec<String> =
        ["seal-unseal-toggler", "map-size-blocks-stable-while-sealed", "every-seal-normalises"]
            .map(String::from)
            .into();
    names.extend(OPS.iter().map(|o| o.name.to_string()));
    names.extend(["long-term-pins-balanced", "left-unsealed-and-removable"].map(String::from));
    names
}

/// Pass with `note` unless the tally holds violations, or `enough` is false.
fn verdict(tally: &Tally, note: String, enough: bool, not_enough: &str) -> CaseResult {
    if tally.violations > 0 {
        let more = tally.violations - tally.quoted.len() as u64;
        let tail = if more > 0 { format!("; and {more} more") } else { String::new() };
        return Err(format!("{} violation(s): {}{tail} [{note}]", tally.violations, tally.quoted.join("; ")));
    }
    if !enough {
        return Err(format!("{not_enough} [{note}]"));
    }
    Ok(((), note))
}

/// The shared files, whether SEAL works, the run time, and
/// nr_foll_pin_acquired before the race.
type Ready = (Files, Result<(), String>, u64, u64);

fn set_up(dir: &Path) -> Result<(Ready, String), String> {
    let seconds = RunConfig::read()?.param("seal-race.seconds")?;
    let has_seal = probe(dir);
    let target_path = dir.join("target");
    let target = create(&target_path, 0x21, FLOOR)?;
    let append =
        OpenOptions::new().append(true).open(&target_path).map_err(|e| format!("open O_APPEND: {}", errno_text(&e)))?;
    let partner = create(&dir.join("partner"), 0x42, PARTNER)?;
    let ring = seal::Ring::new().map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
    let (acquired, released) = pin_counters()?;
    let note =
        format!("target {FLOOR} bytes, partner {PARTNER} bytes; pins before: {acquired} acquired, {released} released");
    Ok(((Files { target, append, partner, ring: Mutex::new(ring) }, has_seal, seconds, acquired), note))
}

/// The pin counters balance once every registration is undone; io_uring
/// may drop pins from a work queue, so give it a moment.
fn pins_balanced(acquired_before: u64) -> CaseResult {
    let since = Instant::now();
    loop {
        let (acquired, released) = pin_counters()?;
        if acquired == released {
            // The counters are global: set-up (mkfs's O_DIRECT) pins too.
            let during = acquired - acquired_before;
            return Ok((
                (),
                format!("nr_foll_pin_acquired = nr_foll_pin_released = {acquired}; {during} pinned during the race"),
            ));
        }
        if since.elapsed() > Duration::from_secs(5) {
            return Err(format!(
                "nr_foll_pin_acquired {acquired} != nr_foll_pin_released {released} 5 s after the last unregister: \
                 {} pins leaked",
                acquired as i64 - released as i64
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The toggler always ends with UNSEAL, so the file must be unsealed, and
/// then removable.
fn tear_down(dir: &Path, has_seal: bool) -> CaseResult {
    let target = dir.join("target");
    if has_seal && is_sealed(&target)? {
        return Err("the target is still sealed after the toggler's last UNSEAL".into());
    }
    let size = fs::metadata(&target).map_err(|e| format!("stat: {e}"))?.len();
    fs::remove_dir_all(dir).map_err(|e| format!("rm -r {}: {}", dir.display(), errno_text(&e)))?;
    Ok(((), format!("final size {size} bytes; removed")))
}
