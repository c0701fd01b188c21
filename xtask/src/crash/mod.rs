//! `cargo xtask crash`: the userspace-flush crash campaign (docs/seal.md,
//! "Userspace flush and power loss"). Each point is a two-boot
//! [`Scenario`]: boot 1 runs `userspace-flush-write`, whose three writers
//! acknowledge every record after its fence, and the host SIGKILLs QEMU at a
//! moment drawn from the seed; boot 2, on the same NVDIMM images, runs
//! `userspace-flush-verify` with the acknowledgement counts the host
//! received. A point passes when the sealed writer and the fdatasync control
//! lost nothing acknowledged and nothing was misread; the campaign also
//! fails when the sparse control never lost anything, since a campaign that
//! cannot see loss proves nothing.

pub mod model;
pub mod traced;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use dax_seal_protocol::disks::{mix64, GOLDEN};
use dax_seal_protocol::flush::{self, Tally, FDATASYNC_CONTROL, SEALED, SPARSE_CONTROL};
use dax_seal_protocol::ktap::Verdict;
use serde::Serialize;

use crate::build::kernel::Variant;
use crate::cli::{KernelChoice, SourceArgs};
use crate::paths;
use crate::report::results::{self, BootRecord, CaseResult, Results, WorkloadRun};
use crate::vm::boot::{BootOutcome, End, KillAt};
use crate::vm::machine::Machine;
use crate::vm::pmem::PmemKind;
use crate::vm::request::{self, Prepared};
use crate::vm::scenario::{Scenario, Step};

const WRITE: &str = "userspace-flush-write";
const VERIFY: &str = "userspace-flush-verify";
/// The longest random delay after the writers start, in milliseconds: about
/// the time the slowest writer (fdatasync) takes for its records under TCG.
const MAX_DELAY_MS: u64 = 4000;

#[derive(Debug, Clone, Args)]
pub struct CrashArgs {
    /// Crash points per kernel variant.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub points: u32,
    /// Seed of the kill moments, decimal or 0x-hex (default: from the clock;
    /// printed so that the campaign can be repeated).
    #[arg(long, value_parser = parse_seed)]
    pub seed: Option<u64>,
    /// Run only point K (1..=--points) of the campaign the seed describes.
    #[arg(long, value_name = "K")]
    pub point: Option<u32>,
    /// Kernel variants; on baseline the sealed writer skips and the controls run.
    #[arg(long, value_enum, default_value = "patched")]
    pub kernel: KernelChoice,
    /// Records each writer appends (128 bytes each; default 4096, with --model 64).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=flush::MAX_RECORDS))]
    pub records: Option<u64>,
    /// The persistence model instead of SIGKILLs: trace the writer once under
    /// QEMU's TCG plugin and boot crash images that drop unflushed lines.
    #[arg(long)]
    pub model: bool,
    /// With --model: crash images generated per point, at most.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub images: u64,
    /// With --model: crash images booted per point, at most (the one that drops every pending store first).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub boot: u64,
    /// The kind of persistent memory the campaign's writers run on (see
    /// `cargo xtask run --help`); the persistence model (--model) traces
    /// NVDIMMs only.
    #[arg(long, default_value = "nfit", value_name = "KIND", value_parser = crate::cli::parse_pmem)]
    pub pmem: PmemKind,
    /// With --model: a deliberately broken sealed writer, which the model must catch.
    #[arg(long, value_enum, default_value = "none")]
    pub bug: traced::BugChoice,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn parse_seed(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not a seed: give a whole number, decimal or 0x-hex, below 2^64"))
}

/// A seed from the clock, for when the user gives none.
fn clock_seed() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    mix(now.as_nanos() as u64)
}

/// splitmix64 of one state: the shared mix after its increment.
fn mix(z: u64) -> u64 {
    mix64(z.wrapping_add(GOLDEN))
}

/// When a point kills QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Moment {
    /// As the host receives acknowledgement `count` of `writer`.
    AfterAcks { writer: &'static str, count: u64 },
    /// `ms` after the writers started.
    AfterDelay { ms: u64 },
}

impl Moment {
    /// Point `point` of the campaign `seed`; `sealed` says whether the
    /// kernel runs the sealed writer (its acks are a clock only there).
    pub fn draw(seed: u64, point: u32, records: u64, sealed: bool) -> Moment {
        let r = mix(seed ^ mix(u64::from(point)));
        let pick = r >> 8;
        match r % 3 {
            0 => Moment::AfterAcks { writer: if sealed { SEALED } else { SPARSE_CONTROL }, count: 1 + pick % records },
            1 => Moment::AfterAcks { writer: FDATASYNC_CONTROL, count: 1 + pick % records },
            _ => Moment::AfterDelay { ms: pick % (MAX_DELAY_MS + 1) },
        }
    }

    pub fn kill_at(&self) -> KillAt {
        match *self {
            Moment::AfterAcks { writer, count } => KillAt::at(&flush::ack_line(writer, count - 1)),
            Moment::AfterDelay { ms } => KillAt { marker: flush::WRITING.into(), delay: Duration::from_millis(ms) },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Moment::AfterAcks { writer, count } => format!("after {count} {writer} acks"),
            Moment::AfterDelay { ms } => format!("{ms} ms into writing"),
        }
    }
}

/// One point's record in crash.json and the table.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub kernel: String,
    pub point: u32,
    pub seed: u64,
    pub moment: Moment,
    /// What the verifier found, per writer.
    pub tallies: BTreeMap<String, Tally>,
    /// What the verifier said about log recovery.
    pub recovery: String,
    pub verdict: Verdict,
    /// Why it failed.
    pub reason: String,
    pub elapsed_ms: u64,
    pub dir: PathBuf,
}

/// The lines of a boot's results log (every line the host read, also after
/// the kill).
fn result_lines(outcome: &BootOutcome) -> Vec<String> {
    std::fs::read_to_string(&outcome.ktap_log).map(|t| t.lines().map(str::to_string).collect()).unwrap_or_default()
}

/// Boot 1's verdict: killed at the moment, set-up and the writers' files
/// ready; returns the acknowledgement counts and the sealed map's
/// fingerprint.
fn judge_writer(outcome: &BootOutcome) -> Result<(BTreeMap<String, u64>, Option<u64>), String> {
    let top = &outcome.ktap.cases;
    for name in ["setup", WRITE] {
        let Some(case) = top.iter().find(|c| c.name == name) else {
            if name == "setup" {
                return Err(format!("set-up never reported (boot: {})", outcome.end.describe()));
            }
            continue;
        };
        let failed = case.subtests.iter().flat_map(|s| &s.cases).find(|c| c.verdict == Verdict::Fail);
        if let Some(c) = failed {
            return Err(format!("{name} / {}: {}", c.name, c.reason.clone().unwrap_or_default()));
        }
        if name == "setup" && case.verdict == Verdict::Fail {
            return Err(format!("set-up failed: {}", case.reason.clone().unwrap_or_default()));
        }
    }
    if !matches!(outcome.end, End::Killed { .. }) {
        return Err(format!("the kill moment never came: {}", outcome.end.describe()));
    }
    let lines = result_lines(outcome);
    let acks = flush::acknowledged(lines.iter().map(String::as_str))?;
    let map = lines.iter().filter_map(|l| flush::parse_map(l)).find(|(w, _)| *w == SEALED).map(|(_, h)| h);
    Ok((acks, map))
}

/// A point's record, its verdicts as a run's, and its two boots.
pub struct PointRun {
    pub point: Point,
    pub run: WorkloadRun,
    pub boots: Vec<BootRecord>,
}

/// Runs point `k` of campaign `seed`, killing at `moment`, on `scenario`'s
/// images. An error means a boot could not even start; a hang or a kernel
/// report is the point's failure.
pub fn run_point(
    scenario: &mut Scenario,
    variant: Variant,
    moment: Moment,
    (seed, k): (u64, u32),
    records: u64,
) -> Result<PointRun> {
    let start = Instant::now();
    scenario.params = BTreeMap::from([("userspace-flush-write.records".to_string(), records.to_string())]);
    let write = Step { variant, workloads: &[WRITE], exec: &[], kill_at: Some(moment.kill_at()) };
    let (_, first) = scenario.boot(&write)?;
    let request = |outcome: &BootOutcome| BootRecord::of(scenario.prepared.name(variant), scenario.prepared, outcome);
    let mut boots = vec![request(&first)];
    let mut cases = Vec::new();
    let mut point = Point {
        kernel: scenario.prepared.name(variant).to_string(),
        point: k,
        seed,
        moment,
        tallies: BTreeMap::new(),
        recovery: String::new(),
        verdict: Verdict::Fail,
        reason: String::new(),
        elapsed_ms: 0,
        dir: scenario.logs().to_path_buf(),
    };
    let written = judge_writer(&first);
    let (acks, map) = match written {
        Ok(v) => v,
        Err(reason) => {
            cases.push(CaseResult::new(
                "writer boot",
                Verdict::Fail,
                format!("{reason}\nconsole: {}", first.console_log.display()),
            ));
            point.reason = reason;
            point.elapsed_ms = start.elapsed().as_millis() as u64;
            let run = WorkloadRun { verdict: Verdict::Fail, ..WorkloadRun::new(&point.kernel, &name(k), cases) };
            return Ok(PointRun { point, run, boots });
        }
    };
    let acked = |w: &str| acks.get(w).copied().unwrap_or(0);
    let counts: Vec<String> = flush::WRITERS.iter().map(|w| format!("{w} {}", acked(w))).collect();
    cases.push(CaseResult::new(
        "writer boot",
        Verdict::Pass,
        format!("killed {}; acknowledged: {}", moment.kill_at().describe(), counts.join(", ")),
    ));

    let mut params: BTreeMap<String, String> =
        flush::WRITERS.iter().map(|w| (flush::acked_param(w), acked(w).to_string())).collect();
    params.insert(flush::MAP_PARAM.to_string(), map.unwrap_or(0).to_string());
    scenario.params = params;
    let verify = Step { variant, workloads: &[VERIFY], exec: &[], kill_at: None };
    let (config, second) = scenario.boot(&verify)?;
    boots.push(request(&second));
    for r in results::judge(scenario.prepared.name(variant), &config.expected_tests(), &second) {
        // Set-up's cases are shown only when one failed.
        if r.workload == "setup" && r.verdict != Verdict::Fail {
            continue;
        }
        cases.extend(r.cases.into_iter().map(|mut c| {
            if r.workload != VERIFY {
                c.name = format!("{} / {}", r.workload, c.name);
            }
            c
        }));
    }
    let lines = result_lines(&second);
    point.tallies = lines.iter().filter_map(|l| flush::parse_result(l)).map(|(w, t)| (w.to_string(), t)).collect();
    point.recovery = cases.iter().find(|c| c.name == "log recovery").map(|c| c.detail.clone()).unwrap_or_default();
    let failed: Vec<&CaseResult> = cases.iter().filter(|c| c.verdict == Verdict::Fail).collect();
    point.verdict = if failed.is_empty() && second.end.is_clean() { Verdict::Pass } else { Verdict::Fail };
    point.reason = failed.iter().map(|c| format!("{}: {}", c.name, c.detail)).collect::<Vec<_>>().join("; ");
    if point.reason.is_empty() && !second.end.is_clean() {
        point.reason = format!("verifier boot: {}", second.end.describe());
    }
    point.elapsed_ms = start.elapsed().as_millis() as u64;
    // The point's verdict also counts how the verifier's boot ended.
    let run = WorkloadRun { verdict: point.verdict, ..WorkloadRun::new(&point.kernel, &name(k), cases) };
    Ok(PointRun { point, run, boots })
}

/// Points `points` of campaign `seed` on `variant`, all on the image set
/// `set` in `images`, each point's logs in a directory of its own. The first
/// point, and every point after a failed one (which may have left the
/// images damaged, so that one failure does not become many), start on
/// blank images. `configure` sets up each point's scenario (VM, filesystem).
pub fn run_points(
    prepared: &Prepared,
    variant: Variant,
    (seed, points): (u64, &[u32]),
    records: u64,
    (images, set): (&Path, &str),
    configure: impl Fn(&mut Scenario),
) -> Result<Vec<PointRun>> {
    let mut done: Vec<PointRun> = Vec::new();
    for &k in points {
        let mut scenario = Scenario::new(prepared, images, set).logs_in(&images.join(name(k)));
        configure(&mut scenario);
        if done.last().is_none_or(|p| p.point.verdict != Verdict::Pass) {
            scenario.start_blank();
        }
        let moment = Moment::draw(seed, k, records, variant != Variant::Baseline);
        let p = run_point(&mut scenario, variant, moment, (seed, k), records)
            .with_context(|| format!("{variant} point {k}"))?;
        eprintln!(
            "[crash] {variant} point {k}: {} ({}), {:.1} s{}",
            if p.point.verdict == Verdict::Pass { "pass" } else { "FAIL" },
            p.point.moment.describe(),
            p.point.elapsed_ms as f64 / 1000.0,
            if p.point.reason.is_empty() { String::new() } else { format!(": {}", p.point.reason) }
        );
        done.push(p);
    }
    Ok(done)
}

/// The campaign-wide check as a run of its own.
pub fn campaign_run(kernel: &str, check: CaseResult) -> WorkloadRun {
    WorkloadRun::new(kernel, "crash-campaign", vec![check])
}

fn name(k: u32) -> String {
    format!("crash-point-{k:03}")
}

/// The campaign-wide check: the sparse control lost acknowledged records
/// somewhere, or the campaign could not have seen a loss.
pub fn control_saw_loss(kernel: &str, points: &[Point], single: bool) -> CaseResult {
    let name = "sparse-control lost acknowledged records at some point";
    let mine: Vec<&Point> = points.iter().filter(|p| p.kernel == kernel).collect();
    let lossy = mine.iter().filter(|p| p.tallies.get(SPARSE_CONTROL).is_some_and(|t| t.lost > 0)).count();
    let lost: u64 = mine.iter().filter_map(|p| p.tallies.get(SPARSE_CONTROL)).map(|t| t.lost).sum();
    if single {
        return CaseResult::new(
            name,
            Verdict::Skip,
            format!("one point rerun (--point): {lost} lost; judged over a campaign"),
        );
    }
    if lossy > 0 {
        CaseResult::new(
            name,
            Verdict::Pass,
            format!("{lost} acknowledged records lost at {lossy} of {} points", mine.len()),
        )
    } else {
        CaseResult::new(
            name,
            Verdict::Fail,
            format!(
                "the control lost nothing at any of {} points: this campaign cannot see loss, so its passes prove nothing",
                mine.len()
            ),
        )
    }
}

fn tally_cell(t: Option<&Tally>) -> String {
    t.map_or("-".into(), |t| format!("{}/{}/{}/{}", t.acked, t.recovered, t.lost, t.torn))
}

/// The per-point table.
pub fn table(points: &[Point]) -> String {
    let mut rows = vec![[
        "kernel".to_string(),
        "point".into(),
        "kill moment".into(),
        format!("{SEALED} a/r/l/t"),
        format!("{SPARSE_CONTROL} a/r/l/t"),
        format!("{FDATASYNC_CONTROL} a/r/l/t"),
        "verdict".into(),
    ]];
    for p in points {
        rows.push([
            p.kernel.clone(),
            p.point.to_string(),
            p.moment.describe(),
            tally_cell(p.tallies.get(SEALED)),
            tally_cell(p.tallies.get(SPARSE_CONTROL)),
            tally_cell(p.tallies.get(FDATASYNC_CONTROL)),
            if p.verdict == Verdict::Pass { "pass".into() } else { "FAIL".into() },
        ]);
    }
    let mut out = results::columns(rows.iter(), usize::MAX);
    out.push_str("(a/r/l/t: acknowledged, recovered, lost, torn records)\n");
    out
}

fn median_secs(points: &[Point]) -> f64 {
    let mut v: Vec<u64> = points.iter().map(|p| p.elapsed_ms).collect();
    v.sort_unstable();
    v.get(v.len() / 2).map_or(0.0, |ms| *ms as f64 / 1000.0)
}

pub fn cmd(args: &CrashArgs) -> Result<ExitCode> {
    if args.model {
        if args.pmem != PmemKind::Nfit {
            bail!(
                "--model with --pmem {}: the persistence model's tracer follows stores to NVDIMMs only; \
                 drop --pmem, or --model for a SIGKILL campaign on {}",
                args.pmem.name(),
                args.pmem.name()
            );
        }
        return traced::cmd(args);
    }
    if args.bug != traced::BugChoice::None {
        bail!("--bug breaks the writer for the persistence model: add --model");
    }
    let records = args.records.unwrap_or(4096);
    if let Some(k) = args.point {
        if k == 0 || k > args.points {
            bail!("--point {k}: no such point; this campaign has points 1 to {} (--points)", args.points);
        }
    }
    let seed = args.seed.unwrap_or_else(clock_seed);
    let variants = args.kernel.variants();
    let vm = Machine { pmem: args.pmem, ..Machine::default() };
    vm.check()?;
    let prepared: Prepared = request::prepare(&variants, &args.source.choice()?, vm.accel)?;
    eprintln!("[crash] {}", prepared.accel_line(&vm));
    let (run_id, dir) = paths::new_output_dir("crash")?;
    let selected: Vec<u32> = match args.point {
        Some(k) => vec![k],
        None => (1..=args.points).collect(),
    };
    eprintln!(
        "[crash] seed {seed:#x}: {} point(s) on {}; repeat one with --seed {seed:#x} --point K",
        selected.len(),
        variants.iter().map(|&v| prepared.name(v)).collect::<Vec<_>>().join(", ")
    );
    let start = Instant::now();
    let (mut points, mut runs, mut boots) = (Vec::new(), Vec::new(), Vec::new());
    for &variant in &variants {
        let kernel = prepared.name(variant);
        let images = dir.join(kernel);
        paths::ensure_dir(&images)?;
        let done = run_points(&prepared, variant, (seed, &selected), records, (&images, kernel), |s| {
            s.vm = vm.clone();
        })?;
        for p in done {
            points.push(p.point);
            runs.push(p.run);
            boots.extend(p.boots);
        }
        runs.push(campaign_run(kernel, control_saw_loss(kernel, &points, args.point.is_some())));
    }
    let elapsed = start.elapsed();
    let verdict = results::verdict_of(&runs, false);
    let results =
        Results { verdict, run_id, runs, boots, xtask_peak_rss_kib: results::peak_rss_kib(), rates: Vec::new() };
    let table = table(&points);
    println!("{table}");
    let report = serde_json::json!({ "seed": seed, "points": points, "elapsed_ms": elapsed.as_millis() as u64 });
    results::write_all(&dir, &results)
        .and_then(|_| paths::write_atomic(&dir.join("crash.json"), &serde_json::to_vec_pretty(&report)?))
        .and_then(|()| paths::write_atomic(&dir.join("points.txt"), table.as_bytes()))
        .context("the table above could not be saved")?;
    for r in results.runs.iter().filter(|r| r.verdict == Verdict::Fail) {
        for c in r.cases.iter().filter(|c| c.verdict == Verdict::Fail) {
            println!("{} {} / {}: {}", r.who(), r.workload, c.name, c.detail.lines().next().unwrap_or(""));
        }
    }
    for r in results.runs.iter().filter(|r| r.workload == "crash-campaign") {
        for c in &r.cases {
            println!("{} campaign: {}: {}", r.who(), c.name, c.detail);
        }
    }
    println!(
        "\n{}: {} points in {:.1} min (median {:.1} s a point) on {}, seed {seed:#x}",
        if results.verdict == Verdict::Pass { "PASS" } else { "FAIL" },
        points.len(),
        elapsed.as_secs_f64() / 60.0,
        median_secs(&points),
        prepared.accel_for(&vm).0.name()
    );
    println!("outputs: {} (summary.txt, points.txt, crash.json, junit.xml, results.ktap)", dir.display());
    Ok(results.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_in_decimal_and_hex_and_refuse_the_rest() {
        assert_eq!(parse_seed("42"), Ok(42));
        assert_eq!(parse_seed("0x2A"), Ok(42));
        assert_eq!(parse_seed(" 0Xff "), Ok(255));
        for bad in ["", "x", "0x", "-1", "18446744073709551616", "1e3", "0xg"] {
            assert!(parse_seed(bad).unwrap_err().contains("is not a seed"), "{bad}");
        }
    }

    #[test]
    fn moments_are_reproducible_spread_and_in_range() {
        let draw = |k| Moment::draw(7, k, 100, true);
        assert_eq!(draw(3), draw(3));
        assert_ne!(
            (1..=20).map(draw).collect::<Vec<_>>(),
            (1..=20).map(|k| Moment::draw(8, k, 100, true)).collect::<Vec<_>>()
        );
        let all: Vec<Moment> = (1..=300).map(draw).collect();
        let kinds = |f: fn(&Moment) -> bool| all.iter().filter(|m| f(m)).count();
        assert!(kinds(|m| matches!(m, Moment::AfterAcks { writer: SEALED, .. })) > 50);
        assert!(kinds(|m| matches!(m, Moment::AfterAcks { writer: FDATASYNC_CONTROL, .. })) > 50);
        assert!(kinds(|m| matches!(m, Moment::AfterDelay { .. })) > 50);
        for m in &all {
            match *m {
                Moment::AfterAcks { count, .. } => assert!((1..=100).contains(&count)),
                Moment::AfterDelay { ms } => assert!(ms <= MAX_DELAY_MS),
            }
        }
        // Without the sealed writer its acks are no clock: the sparse control's are.
        assert!((1..=300).all(|k| !matches!(Moment::draw(7, k, 100, false), Moment::AfterAcks { writer: SEALED, .. })));
    }

    #[test]
    fn an_ack_moment_kills_on_exactly_that_ack() {
        let kill = Moment::AfterAcks { writer: SEALED, count: 12 }.kill_at();
        let line = |seq| format!("        # {}", flush::ack_line(SEALED, seq));
        assert!(line(11).trim_end().ends_with(&kill.marker));
        assert!(!line(111).trim_end().ends_with(&kill.marker), "ack 111 is not ack 11");
        assert!(!line(1).trim_end().ends_with(&kill.marker));
        assert_eq!(kill.delay, Duration::ZERO);
    }

    fn point(kernel: &str, lost: u64) -> Point {
        Point {
            kernel: kernel.into(),
            point: 1,
            seed: 0,
            moment: Moment::AfterDelay { ms: 0 },
            tallies: BTreeMap::from([(SPARSE_CONTROL.to_string(), Tally { acked: 10, lost, ..Tally::default() })]),
            recovery: String::new(),
            verdict: Verdict::Pass,
            reason: String::new(),
            elapsed_ms: 1000,
            dir: PathBuf::new(),
        }
    }

    #[test]
    fn a_campaign_whose_control_never_loses_fails() {
        let none = [point("patched", 0), point("patched", 0), point("baseline", 3)];
        let c = control_saw_loss("patched", &none, false);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.detail.contains("cannot see loss"), "{}", c.detail);
        let c = control_saw_loss("baseline", &none, false);
        assert_eq!(c.verdict, Verdict::Pass, "{}", c.detail);
        assert!(c.detail.contains("3 acknowledged records lost at 1 of 1 points"), "{}", c.detail);
        assert_eq!(control_saw_loss("patched", &none, true).verdict, Verdict::Skip);
    }

    #[test]
    fn the_table_shows_every_writer_and_the_verdict() {
        let mut p = point("patched", 4);
        p.tallies.insert(SEALED.into(), Tally { acked: 5, recovered: 6, ..Tally::default() });
        p.verdict = Verdict::Fail;
        let t = table(&[p]);
        assert!(t.contains("5/6/0/0") && t.contains("10/0/4/0") && t.contains("FAIL") && t.contains(" - "), "{t}");
    }
}
