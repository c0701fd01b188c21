//! `cargo xtask crash --model`: QEMU writes every guest store straight into
//! the NVDIMM's backing file, so a writer that forgets a clwb passes every
//! power-loss test a SIGKILL can make. The model run instead boots
//! `userspace-flush-write` once under the tracer (`xtask/pmem-trace`, a TCG
//! plugin), replays the sealed writer's stores, flushes and fences through
//! 64-byte lines ([`model`]), and at sampled crash points (the writer's
//! acknowledgements) makes crash images that drop stores the writer had not
//! yet made durable. A sample of them is booted with
//! `userspace-flush-verify`, told how many records were acknowledged: the
//! correct writer must pass every image; a broken one (`--bug`) must lose an
//! acknowledged record in at least one.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dax_seal_protocol::disks::{mix64, GOLDEN};
use dax_seal_protocol::flush::{self, SEALED};
use dax_seal_protocol::ktap::Verdict;
use serde::Serialize;

use super::model::{self, Model};
use super::{clock_seed, result_lines, CrashArgs, VERIFY, WRITE};
use crate::build::kernel::Variant;
use crate::paths;
use crate::report::results::{self, BootRecord, CaseResult, Results, WorkloadRun};
use crate::vm::machine::AccelChoice;
use crate::vm::qemu::Accel;
use crate::vm::request;
use crate::vm::request::Prepared;
use crate::vm::scenario::{Scenario, Step};

/// The sealed writer as the model run asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BugChoice {
    /// The correct writer: every image must pass.
    None,
    /// One record acknowledged with a line never written back.
    OmitFlush,
    /// Every record fenced before its write-backs.
    FenceBeforeFlush,
}

impl BugChoice {
    fn param(self) -> u64 {
        match self {
            BugChoice::None => 0,
            BugChoice::OmitFlush => 1,
            BugChoice::FenceBeforeFlush => 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub records: u64,
    pub points: u32,
    /// Images generated per point, at most.
    pub images: usize,
    /// Images booted per point, at most (the all-dropped one first).
    pub boot: usize,
    pub seed: u64,
    pub bug: BugChoice,
}

/// One crash point's results.
#[derive(Debug, Clone, Serialize)]
pub struct PointResult {
    pub point: String,
    /// Acknowledgements before the crash (the verifier's acked count).
    pub acked: u64,
    pub pending_lines: usize,
    pub generated: usize,
    pub booted: usize,
    pub failed: usize,
    /// The first failing image: its number and the pending stores it drops
    /// (`line:count`), enough to make it again from the trace.
    pub first_failure: Option<String>,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelRun {
    pub kernel: String,
    pub bug: BugChoice,
    pub seed: u64,
    pub records: u64,
    pub trace_ms: u64,
    pub trace_events: u64,
    pub stores: u64,
    pub flushes: u64,
    pub fences: u64,
    pub markers: u64,
    /// Crash points in the trace (after each acknowledgement, before each
    /// fence that orders write-backs).
    pub crash_points: usize,
    pub points: Vec<PointResult>,
    #[serde(skip)]
    pub runs: Vec<WorkloadRun>,
    #[serde(skip)]
    pub boots: Vec<BootRecord>,
}

impl ModelRun {
    pub fn images_failed(&self) -> usize {
        self.points.iter().map(|p| p.failed).sum()
    }
}

/// Builds the tracer; returns the plugin's path.
pub fn plugin() -> Result<PathBuf> {
    let root = paths::project_root();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "-p", "dax-seal-pmem-trace"])
        .current_dir(&root)
        .status()
        .context("running cargo build for the tracer")?;
    if !status.success() {
        bail!("building the tracer (xtask/pmem-trace) failed: {status}");
    }
    let so = root.join("target/release/libdax_seal_pmem_trace.so");
    if !so.is_file() {
        bail!("cargo built the tracer but {} is missing", so.display());
    }
    Ok(so)
}

/// `count` distinct indices below `n`, the last one always among them,
/// sorted; reproducible from `seed`.
pub fn sample(n: usize, count: usize, seed: u64) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let mut chosen = vec![n - 1];
    let mut state = seed;
    while chosen.len() < count.min(n) {
        state = state.wrapping_add(GOLDEN);
        let i = (mix64(state) % n as u64) as usize;
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    chosen.sort_unstable();
    chosen
}

fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp")
        .args(["--sparse=always", "--reflink=auto"])
        .arg(from)
        .arg(to)
        .status()
        .with_context(|| format!("cp {}", from.display()))?;
    if !status.success() {
        bail!("cp {} {}: {status}", from.display(), to.display());
    }
    Ok(())
}

/// The images of `image` (a copy of the traced boot's set, made into the
/// crash image) in `dir`, ready for a scenario with image set "model".
fn materialize(trace: &Scenario, model: &Model, point: &model::Point, image: &model::Image, dir: &Path) -> Result<()> {
    paths::ensure_dir(dir)?;
    // Every device of the traced boot's machine: the crash image is device 0.
    for i in 0..trace.vm.nvdimms {
        for from in trace.image_files(i) {
            copy_sparse(&from, &dir.join(from.file_name().context("image name")?))?;
        }
    }
    let keep: BTreeMap<u64, usize> = image.keep.iter().copied().collect();
    let path = dir.join(trace.image(0).file_name().context("image name")?);
    let file = std::fs::OpenOptions::new().write(true).open(&path).with_context(|| format!("{}", path.display()))?;
    for line in model.lines() {
        // Lines stored to only after the crash point go back to their base.
        let stores = keep.get(&line).copied().unwrap_or(0);
        let at_point = point.lines.iter().find(|l| l.line == line).map_or(0, |l| l.len);
        let bytes = model.content(line, stores.min(at_point)).context("a line without base content")?;
        file.write_all_at(&bytes, line).with_context(|| format!("writing line {line:#x} of {}", path.display()))?;
    }
    file.sync_all().with_context(|| format!("{}", path.display()))?;
    Ok(())
}

/// The whole model run on `variant`, in `dir`.
pub fn run(prepared: &Prepared, variant: Variant, spec: &Spec, dir: &Path) -> Result<ModelRun> {
    // TCG plugins do not run under KVM: every boot of the model is TCG.
    let mut tcg = prepared.clone();
    tcg.accel = Accel::Tcg;
    tcg.accel_reason = "the persistence model's tracer is a TCG plugin".into();
    let prepared = &tcg;
    let traced = trace_writer(prepared, variant, spec, &dir.join("trace"))?;
    let (mut runs, mut boots) = (traced.runs.clone(), traced.boots.clone());
    let mut points = Vec::new();
    for index in sample(traced.model.points.len(), spec.points as usize, spec.seed) {
        let (result, run, booted) = verify_point(prepared, variant, spec, &traced, index, dir)?;
        points.push(result);
        runs.push(run);
        boots.extend(booted);
    }
    let model = &traced.model;
    Ok(ModelRun {
        kernel: prepared.name(variant).to_string(),
        bug: spec.bug,
        seed: spec.seed,
        records: spec.records,
        trace_ms: traced.trace_ms,
        trace_events: traced.events,
        stores: model.stores,
        flushes: model.flushes,
        fences: model.fences,
        markers: model.markers,
        crash_points: model.points.len(),
        points,
        runs,
        boots,
    })
}

/// The writer's boot under the tracer, and the model made of its trace.
struct Traced<'a> {
    /// The traced boot's scenario, whose images the crash images start from.
    scenario: Scenario<'a>,
    model: Model,
    /// The sealed file's map fingerprint, for the verifier.
    map: u64,
    events: u64,
    trace_ms: u64,
    runs: Vec<WorkloadRun>,
    boots: Vec<BootRecord>,
}

/// Boots the sealed writer under the tracer in `trace_dir`, checks what it
/// reported, and replays its trace into the model; the trace must account
/// for every flush and every acknowledgement.
fn trace_writer<'a>(prepared: &'a Prepared, variant: Variant, spec: &Spec, trace_dir: &Path) -> Result<Traced<'a>> {
    let so = plugin()?;
    paths::ensure_dir(trace_dir)?;
    let mut scenario = Scenario::new(prepared, trace_dir, "model");
    let trace = trace_dir.join("pmem.trace");
    scenario.vm.plugin = Some(format!(
        "{},trace={},image={},window={:#x}:{:#x},marker={:#x}",
        so.display(),
        trace.display(),
        scenario.image(0).display(),
        flush::MODEL_WINDOW,
        flush::MODEL_WINDOW_LEN,
        flush::MODEL_MARKER
    ));
    // The tracer slows the guest several times over.
    scenario.vm.timeout *= 4;
    scenario.vm.silence *= 4;
    scenario.params = BTreeMap::from([
        ("userspace-flush-write.records".to_string(), spec.records.to_string()),
        ("userspace-flush-write.bug".to_string(), spec.bug.param().to_string()),
        // Nothing kills this boot: the model makes the crashes.
        ("userspace-flush-write.wait".to_string(), "0".to_string()),
    ]);
    let started = Instant::now();
    let (config, outcome) = scenario.boot(&Step { variant, workloads: &[WRITE], exec: &[], kill_at: None })?;
    let trace_ms = started.elapsed().as_millis() as u64;
    let (runs, boot) = results::judged(prepared.name(variant), prepared, &config, &outcome);
    let runs: Vec<WorkloadRun> = runs.into_iter().map(|r| r.labelled("model trace")).collect();
    if runs.iter().any(|r| r.verdict == Verdict::Fail) || !outcome.end.is_clean() {
        bail!("the traced writer boot failed ({}); console: {}", outcome.end.describe(), outcome.console_log.display());
    }
    let lines = result_lines(&outcome);
    let acked = flush::acknowledged(lines.iter().map(String::as_str)).map_err(anyhow::Error::msg)?;
    let sealed_acks = acked.get(SEALED).copied().unwrap_or(0);
    let map = lines.iter().filter_map(|l| flush::parse_map(l)).find(|(w, _)| *w == SEALED).map(|(_, h)| h);
    let map = map.context("the traced writer reported no map fingerprint for the sealed file")?;
    let text = std::fs::read_to_string(&trace).with_context(|| format!("reading the trace {}", trace.display()))?;
    let events = model::parse(&text).with_context(|| format!("trace {}", trace.display()))?;
    let model = Model::replay(&events).with_context(|| format!("trace {}", trace.display()))?;
    if model.unattributed > 0 {
        bail!(
            "{} flushes had no calibration load after them, so their lines are unknown (trace {})",
            model.unattributed,
            trace.display()
        );
    }
    if model.markers != sealed_acks {
        bail!(
            "the trace holds {} markers for {sealed_acks} acknowledgements of the sealed writer (trace {})",
            model.markers,
            trace.display()
        );
    }
    eprintln!(
        "[crash --model] traced {} records in {:.1} s: {} events, {} stores ({} rewrote the bytes there), {} flushes, \
         {} fences, {} acknowledgements",
        spec.records,
        trace_ms as f64 / 1000.0,
        events.len(),
        model.stores,
        model.silent,
        model.flushes,
        model.fences,
        model.markers
    );
    let boots = vec![boot.labelled("model trace")];
    Ok(Traced { scenario, model, map, events: events.len() as u64, trace_ms, runs, boots })
}

/// Crash point `index` of the model: its sampled images made and booted
/// under the verifier (at most `spec.boot` of them), as one run with a case
/// per image.
fn verify_point(
    prepared: &Prepared,
    variant: Variant,
    spec: &Spec,
    traced: &Traced,
    index: usize,
    dir: &Path,
) -> Result<(PointResult, WorkloadRun, Vec<BootRecord>)> {
    let point = &traced.model.points[index];
    let started = Instant::now();
    let images = model::images(point, spec.seed, spec.images);
    let mut result = PointResult {
        point: point.describe(),
        acked: point.acked,
        pending_lines: point.lines.iter().filter(|l| l.pending() > 0).count(),
        generated: images.len(),
        booted: 0,
        failed: 0,
        first_failure: None,
        elapsed_ms: 0,
    };
    let (mut cases, mut boots) = (Vec::new(), Vec::new());
    for (j, image) in images.iter().enumerate().take(spec.boot) {
        let image_dir = dir.join(format!("point-{index}")).join(format!("image-{j}"));
        materialize(&traced.scenario, &traced.model, point, image, &image_dir)?;
        let mut verify = Scenario::new(prepared, &image_dir, "model");
        verify.params = BTreeMap::from([
            (flush::acked_param(SEALED), point.acked.to_string()),
            (flush::MAP_PARAM.to_string(), traced.map.to_string()),
        ]);
        let (config, out) = verify.boot(&Step { variant, workloads: &[VERIFY], exec: &[], kill_at: None })?;
        boots.push(
            BootRecord::of(prepared.name(variant), prepared, &out).labelled(&format!("model point {index} image {j}")),
        );
        let judged = results::judge(prepared.name(variant), &config.expected_tests(), &out);
        let failure = judged
            .iter()
            .flat_map(|r| &r.cases)
            .find(|c| c.verdict == Verdict::Fail)
            .map(|c| format!("{}: {}", c.name, c.detail.lines().next().unwrap_or("")));
        result.booted += 1;
        if failure.is_none() {
            // A passing image is not kept (44 MB each here); its logs are.
            // A failing one stays for replay.
            verify.images().remove(verify.vm.pmem, verify.vm.devices());
        }
        let dropped = image.dropped(point);
        let verdict = if failure.is_some() { Verdict::Fail } else { Verdict::Pass };
        if let Some(f) = &failure {
            result.failed += 1;
            result.first_failure.get_or_insert_with(|| format!("image {j} (drops {dropped}): {f}"));
        }
        let detail = format!("drops {dropped}{}", failure.map_or(String::new(), |f| format!("\n{f}")));
        cases.push(CaseResult::new(&format!("image {j}"), verdict, detail));
    }
    result.elapsed_ms = started.elapsed().as_millis() as u64;
    // Fails when an image failed.
    let run = WorkloadRun::new(prepared.name(variant), &format!("point {}", point.acked), cases).labelled("model");
    Ok((result, run, boots))
}

/// The per-point table.
pub fn table(run: &ModelRun) -> String {
    let mut rows =
        vec![["acked", "pending lines", "images", "booted", "failed", "first failing image"].map(String::from)];
    for p in &run.points {
        rows.push([
            p.acked.to_string(),
            p.pending_lines.to_string(),
            p.generated.to_string(),
            p.booted.to_string(),
            p.failed.to_string(),
            p.first_failure.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    results::columns(rows.iter(), 100)
}

/// `crash --model`: the traced writer, its crash images, their verdicts.
pub fn cmd(args: &CrashArgs) -> Result<ExitCode> {
    let seed = args.seed.unwrap_or_else(clock_seed);
    let spec = Spec {
        records: args.records.unwrap_or(64),
        points: args.points,
        images: args.images as usize,
        boot: args.boot as usize,
        seed,
        bug: args.bug,
    };
    let variants = args.kernel.variants();
    // TCG plugins do not run under KVM.
    let prepared: Prepared = request::prepare(&variants, &args.source.choice()?, AccelChoice::Tcg)?;
    let (run_id, dir) = paths::new_output_dir("crash")?;
    eprintln!("[crash --model] seed {seed:#x}, writer bug {:?}; repeat with --seed {seed:#x}", args.bug);
    let (mut runs, mut boots, mut reports) = (Vec::new(), Vec::new(), Vec::new());
    for &variant in &variants {
        let done = run(&prepared, variant, &spec, &dir.join(prepared.name(variant)))?;
        let failed = done.images_failed();
        let booted: usize = done.points.iter().map(|p| p.booted).sum();
        let (ok, rule) = match args.bug {
            BugChoice::None => {
                (failed == 0, format!("the correct writer passed {} of {booted} images", booted - failed))
            }
            bug => (failed > 0, format!("the {bug:?} writer lost acknowledged records in {failed} of {booted} images")),
        };
        println!("{}:\n{}", prepared.name(variant), table(&done));
        println!(
            "{}: {} ({rule}); trace of {} records took {:.1} s",
            prepared.name(variant),
            if ok { "PASS" } else { "FAIL" },
            done.records,
            done.trace_ms as f64 / 1000.0
        );
        let verdict = if ok { Verdict::Pass } else { Verdict::Fail };
        runs.extend(done.runs.iter().cloned().map(|mut r| {
            // A broken writer's failing images are what the model is for.
            if args.bug != BugChoice::None && r.workload.starts_with("point") && r.verdict == Verdict::Fail {
                r.verdict = Verdict::Pass;
            }
            r
        }));
        runs.push(
            WorkloadRun::new(prepared.name(variant), "model", vec![CaseResult::new("the model's rule", verdict, rule)])
                .labelled("model"),
        );
        boots.extend(done.boots.iter().cloned());
        reports.push(done);
    }
    let results = Results {
        verdict: results::verdict_of(&runs, false),
        run_id,
        runs,
        boots,
        xtask_peak_rss_kib: results::peak_rss_kib(),
        rates: Vec::new(),
    };
    results::write_all(&dir, &results)
        .and_then(|_| paths::write_atomic(&dir.join("model.json"), &serde_json::to_vec_pretty(&reports)?))
        .context("the model's results could not be saved")?;
    println!("outputs: {} (model.json, summary.txt, junit.xml; the trace in <kernel>/trace/pmem.trace)", dir.display());
    Ok(results.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_distinct_sorted_reproducible_and_keep_the_last() {
        let s = sample(100, 5, 7);
        assert_eq!(s.len(), 5);
        assert_eq!(*s.last().unwrap(), 99);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(s, sample(100, 5, 7));
        assert_eq!(sample(3, 10, 1), [0, 1, 2]);
        assert!(sample(0, 3, 1).is_empty());
    }
}
