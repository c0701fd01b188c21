//! `cargo xtask matrix [FILE]`: the nightly VM matrix. The file
//! ([`spec`]) names kernel variants, NVDIMM topologies, filesystems,
//! machines, workload suites and scenarios (sequences of boots, crash
//! campaigns); its cells are their product minus the excludes, each with a
//! stable id. `--list` prints them, `--cell ID` runs some, `--shard I/N`
//! runs one shard (greedy by weight, cells that share kernels together),
//! and `--emit-github` writes the workflow that runs every shard nightly
//! ([`github`]). A run writes the usual outputs plus `cells.json` (each
//! cell's verdict and duration), which later runs read for weights and
//! `cargo xtask report` merges.

pub mod github;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use dax_seal_protocol::ktap::Verdict;
use serde::{Deserialize, Serialize};

use crate::build::kernel::Variant;
use crate::build::{deps, rootfs};
use crate::cli::SourceArgs;
use crate::paths;
use crate::report::history::Deadlines;
use crate::report::known;
use crate::report::results::{self, BootRecord, CaseResult, Results, WorkloadRun};
use crate::vm::boot::{End, KillAt};
use crate::vm::machine::Machine;
use crate::vm::request::{self, Prepared};
use crate::vm::scenario::{Scenario, Step};
use crate::{crash, fstests};
use spec::{Cell, Work};

pub const DEFAULT_FILE: &str = "tests/matrix/nightly.toml";

#[derive(Debug, Clone, Args)]
pub struct MatrixArgs {
    /// The matrix file.
    #[arg(default_value = DEFAULT_FILE)]
    pub file: PathBuf,
    /// Print the cells (id, kernels, weight, shard) and stop.
    #[arg(long)]
    pub list: bool,
    /// Run only this cell (repeatable).
    #[arg(long = "cell", value_name = "ID")]
    pub cells: Vec<String>,
    /// Run shard I of N (1-based).
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<(u32, u32)>,
    /// A directory of earlier matrix results (with cells.json) whose
    /// durations weigh the cells instead of the file's weights.
    #[arg(long, value_name = "DIR")]
    pub durations: Option<PathBuf>,
    /// An earlier merged nightly output of this matrix file and tree
    /// (repeatable, oldest first; others are named and skipped): each boot's
    /// deadline follows its history, three times its median duration there
    /// (at least 60 s, at most the deadline it has without history).
    #[arg(long = "history", value_name = "DIR")]
    pub history: Vec<PathBuf>,
    /// Cells booted at once (default: the host's cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Write .github/workflows/nightly.yml running N shards of FILE, and stop.
    #[arg(long, value_name = "N")]
    pub emit_github: Option<u32>,
    /// Run a failed cell again, up to N times, each time in a directory of
    /// its own; a failure that passes on a rerun is reported flaky (0 to 10).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub rerun_failed: u32,
    /// Flaky cells fail the shard (by default they are reported and pass).
    #[arg(long)]
    pub flaky_fails: bool,
    /// The known-failure list to apply (default tests/known-failures/<tree>.txt).
    #[arg(long, value_name = "FILE")]
    pub known_failures: Option<PathBuf>,
    /// The fstests checkout fstests cells build their root image from.
    #[arg(long, value_name = "DIR", env = crate::test::FSTESTS_ENV)]
    pub fstests_src: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn parse_shard(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{text:?} is not a shard: give I/N with 1 <= I <= N, e.g. 2/4");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let (i, n): (u32, u32) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if i == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

/// One cell's line in cells.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CellResult {
    pub id: String,
    pub verdict: Verdict,
    pub elapsed_ms: u64,
}

/// Cells grouped by the kernels they boot, assigned greedily (heaviest
/// group first, to the lightest shard; ties by name) to `n` shards; a
/// group heavier than a fair shard goes cell by cell. Returns the shard
/// (0-based) of each cell id.
pub fn assign(cells: &[Cell], n: u32, weight: impl Fn(&Cell) -> u64) -> BTreeMap<String, u32> {
    let mut groups: BTreeMap<String, (u64, Vec<&Cell>)> = BTreeMap::new();
    for c in cells {
        let key = c.kernels().iter().map(|k| k.name()).collect::<Vec<_>>().join("+");
        let g = groups.entry(key).or_default();
        g.0 += weight(c);
        g.1.push(c);
    }
    // A group heavier than a fair shard is split by cell: its kernels are
    // then built (or restored from the cache) in more than one shard, the
    // price of a balanced night.
    let mut units: Vec<(u64, String, Vec<&Cell>)> = Vec::new();
    let total: u64 = groups.values().map(|g| g.0).sum();
    let fair = total / u64::from(n.max(1));
    for (key, (w, members)) in groups {
        if w > fair && members.len() > 1 {
            for c in members {
                units.push((weight(c), format!("{key}/{}", c.id), vec![c]));
            }
        } else {
            units.push((w, key, members));
        }
    }
    units.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut load = vec![0u64; n.max(1) as usize];
    let mut out = BTreeMap::new();
    for (w, _, members) in units {
        let (shard, _) = load.iter().enumerate().min_by_key(|(i, l)| (**l, *i)).unwrap_or((0, &0));
        load[shard] += w;
        for c in members {
            out.insert(c.id.clone(), shard as u32);
        }
    }
    out
}

/// The cell a run or boot labelled `label` belongs to: the cell id, or
/// the id and a step (`ID step N`).
pub fn cell_of<'a>(cells: &'a [Cell], label: &str) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|c| label == c.id || label.strip_prefix(c.id.as_str()).is_some_and(|rest| rest.starts_with(" step ")))
}

/// Cell weights: durations from earlier results where known, else the file's.
fn weights(cells: &[Cell], durations: Option<&Path>) -> Result<BTreeMap<String, u64>> {
    let mut w: BTreeMap<String, u64> = cells.iter().map(|c| (c.id.clone(), c.weight)).collect();
    if let Some(dir) = durations {
        let path = dir.join("cells.json");
        let text = std::fs::read(&path).with_context(|| format!("--durations: reading {}", path.display()))?;
        let earlier: Vec<CellResult> = serde_json::from_slice(&text)
            .with_context(|| format!("--durations: {} is not a cells.json", path.display()))?;
        for r in earlier {
            if let Some(slot) = w.get_mut(&r.id) {
                *slot = (r.elapsed_ms / 1000).max(1);
            }
        }
    }
    Ok(w)
}

fn vm_of(cell: &Cell) -> Machine {
    Machine {
        memory_mib: cell.memory,
        cpus: cell.cpus,
        pmem: cell.pmem,
        nvdimms: cell.nvdimms,
        geometry: cell.geometry,
        persistence: cell.persistence,
        ..Machine::default()
    }
}

/// Runs `cell` in `dir/<id>`, and while it fails, again (up to `reruns`
/// times) in `dir/<id>-rerunK` on new images, folding each rerun into the
/// attempts before it: a failure that passes on a rerun is flaky.
fn run_cell_again(
    prepared: &Prepared,
    cell: &Cell,
    (dir, fstests_root): (&Path, Option<&Path>),
    deadlines: &Deadlines,
    reruns: u32,
) -> Result<(Vec<WorkloadRun>, Vec<BootRecord>)> {
    let (mut runs, mut boots) = run_cell(prepared, cell, (&dir.join(&cell.id), fstests_root), deadlines, 0)?;
    for attempt in 1..=reruns {
        if results::verdict_of(&runs, false) != Verdict::Fail {
            break;
        }
        eprintln!("[matrix] cell {}: failed; rerun {attempt} of {reruns}", cell.id);
        let rerun_dir = dir.join(format!("{}-rerun{attempt}", cell.id));
        let (again, more) = run_cell(prepared, cell, (&rerun_dir, fstests_root), deadlines, attempt)?;
        runs = results::fold_rerun(runs, again, attempt);
        boots.extend(more.into_iter().map(|b| {
            let label = format!("{} rerun {attempt}", b.label);
            b.labelled(&label)
        }));
    }
    Ok((runs, boots))
}

/// Runs one cell in `dir` as attempt `attempt` (0, or a rerun's number);
/// its verdicts carry the cell id (and step) as their label.
/// `fstests_root` is the root image fstests cells boot with; each boot's
/// deadline follows `deadlines`.
fn run_cell(
    prepared: &Prepared,
    cell: &Cell,
    (dir, fstests_root): (&Path, Option<&Path>),
    deadlines: &Deadlines,
    attempt: u32,
) -> Result<(Vec<WorkloadRun>, Vec<BootRecord>)> {
    let mut scenario = Scenario::new(prepared, dir, "cell");
    scenario.vm = vm_of(cell);
    let default_timeout = scenario.vm.timeout;
    let deadline = |kernel: Variant, label: &str, default: Duration| {
        let (deadline, why) = deadlines.for_boot(prepared.name(kernel), label, default);
        if let Some(why) = why {
            eprintln!("[matrix] {label} on {}: {why}", prepared.name(kernel));
        }
        deadline
    };
    scenario.attempt = attempt;
    scenario.dax = cell.dax.clone();
    scenario.mkfs = cell.mkfs;
    let label = |n: usize| format!("{} step {n}", cell.id);
    let (mut runs, mut boots) = (Vec::new(), Vec::new());
    match &cell.work {
        Work::Suite { kernel, workloads, params } => {
            scenario.params = params.clone();
            scenario.vm.timeout = deadline(*kernel, &cell.id, default_timeout);
            let names: Vec<&str> = workloads.iter().map(String::as_str).collect();
            let (config, outcome) =
                scenario.boot(&Step { variant: *kernel, workloads: &names, exec: &[], kill_at: None })?;
            runs.extend(
                results::judge(prepared.name(*kernel), &config.expected_tests(), &outcome)
                    .into_iter()
                    .map(|r| r.labelled(&cell.id)),
            );
            boots.push(BootRecord::of(prepared.name(*kernel), prepared, &outcome).labelled(&cell.id));
        }
        Work::Steps(steps) => {
            for (n, step) in steps.iter().enumerate() {
                let names: Vec<&str> = step.workloads.iter().map(String::as_str).collect();
                let kill_at = step.kill_at.as_deref().map(KillAt::at);
                let killed = kill_at.is_some();
                scenario.vm.timeout = deadline(step.kernel, &label(n + 1), default_timeout);
                let (config, outcome) =
                    scenario.boot(&Step { variant: step.kernel, workloads: &names, exec: &[], kill_at })?;
                let (kernel, who) = (prepared.name(step.kernel), label(n + 1));
                if killed {
                    // A boot meant to die: it must die at its marker, and
                    // what it reported before must not have failed.
                    let ok = matches!(outcome.end, End::Killed { .. });
                    let verdict = if ok { Verdict::Pass } else { Verdict::Fail };
                    let case = CaseResult::new("killed at the marker", verdict, outcome.end.describe());
                    runs.push(WorkloadRun::new(kernel, "boot", vec![case]).labelled(&who));
                } else {
                    let judged = results::judge(kernel, &config.expected_tests(), &outcome);
                    runs.extend(judged.into_iter().map(|r| r.labelled(&who)));
                }
                boots.push(BootRecord::of(kernel, prepared, &outcome).labelled(&who));
            }
        }
        Work::Crash { kernel, points, seed, records } => {
            let all: Vec<u32> = (1..=*points).collect();
            scenario.vm.timeout = deadline(*kernel, &cell.id, default_timeout);
            let done = crash::run_points(prepared, *kernel, (*seed, &all), *records, (dir, "cell"), |s| {
                s.vm = scenario.vm.clone();
                s.mkfs = cell.mkfs;
                s.attempt = attempt;
            })?;
            let mut points = Vec::new();
            for p in done {
                runs.push(p.run.labelled(&cell.id));
                boots.extend(p.boots.into_iter().map(|b| b.labelled(&cell.id)));
                points.push(p.point);
            }
            let check = crash::control_saw_loss(prepared.name(*kernel), &points, false);
            runs.push(crash::campaign_run(prepared.name(*kernel), check).labelled(&cell.id));
        }
        Work::Fstests { kernels, plans } => {
            let root = fstests_root.context("an fstests cell without a root image")?;
            let mut vm = vm_of(cell);
            let default = Duration::from_secs(fstests::BOOT_TIMEOUT);
            // One deadline for the cell's boots: the longest its kernels' history gives.
            vm.timeout = kernels.iter().map(|k| deadline(*k, &cell.id, default)).max().unwrap_or(default);
            // One kernel after the other: the cell is one unit of the shard.
            let booted = fstests::boot_all(prepared, kernels, plans, root, &vm, dir, dir, 1, &cell.id)?;
            eprint!("{}", fstests::comparison_text(&booted.compared));
            runs.extend(booted.runs.into_iter().map(|r| r.labelled(&cell.id)));
            boots.extend(booted.boots.into_iter().map(|b| b.labelled(&cell.id)));
        }
    }
    Ok((runs, boots))
}

pub fn cmd(args: &MatrixArgs) -> Result<ExitCode> {
    let cells = spec::load(&args.file)?;
    let choice = args.source.choice()?;
    // A bad known-failure list is refused before anything boots.
    let list = args.known_failures.clone().unwrap_or_else(|| known::list_for(&choice.tree.name));
    let entries = known::load(&list)?;
    let axes: Vec<spec::Axes> = cells.iter().map(|c| c.axes.clone()).collect();
    known::check_scopes(&entries, &axes, &args.file)
        .with_context(|| format!("the known-failure list {}", list.display()))?;
    let deadlines = crate::merge::history_deadlines(&args.history, &args.file, &choice.tree.name);
    if let Some(n) = args.emit_github {
        if n == 0 {
            bail!("--emit-github 0: give the number of shards, at least 1");
        }
        let path = paths::project_root().join(github::WORKFLOW);
        let file = args.file.strip_prefix(paths::project_root()).unwrap_or(&args.file);
        let trees = crate::build::trees::load()?;
        let names: Vec<&str> = trees.iter().map(|t| t.name.as_str()).collect();
        paths::write_atomic(&path, github::workflow(&file.to_string_lossy(), n, &names).as_bytes())?;
        println!("wrote {} ({n} shards of {} on each of {})", path.display(), args.file.display(), names.join(", "));
        return Ok(ExitCode::SUCCESS);
    }
    let w = weights(&cells, args.durations.as_deref())?;
    let weight = |c: &Cell| w.get(&c.id).copied().unwrap_or(c.weight);
    for id in &args.cells {
        if !cells.iter().any(|c| &c.id == id) {
            bail!("--cell {id}: no such cell in {}; `--list` prints them", args.file.display());
        }
    }
    let shards = args.shard.map(|(_, n)| assign(&cells, n, weight));
    let selected: Vec<&Cell> = cells
        .iter()
        .filter(|c| args.cells.is_empty() || args.cells.contains(&c.id))
        .filter(|c| match (args.shard, &shards) {
            (Some((i, _)), Some(map)) => map.get(&c.id) == Some(&(i - 1)),
            _ => true,
        })
        .collect();
    if args.list {
        for c in &selected {
            let kernels: Vec<&str> = c.kernels().iter().map(|k| k.name()).collect();
            let shard =
                shards.as_ref().and_then(|m| m.get(&c.id)).map_or(String::new(), |s| format!("  shard {}", s + 1));
            println!("{:<56} {:<24} {:>5} s{shard}", c.id, kernels.join(","), weight(c));
        }
        let total: u64 = selected.iter().map(|c| weight(c)).sum();
        println!("{} cells on the {} tree, {:.1} min by weight", selected.len(), choice.tree.name, total as f64 / 60.0);
        return Ok(ExitCode::SUCCESS);
    }
    if selected.is_empty() {
        bail!("no cell selected: this shard is empty (fewer cells than shards?)");
    }
    let mut variants: Vec<Variant> = selected.iter().flat_map(|c| c.kernels()).collect();
    variants.sort_by_key(|v| v.name());
    variants.dedup();
    let fstests_root = if selected.iter().any(|c| matches!(c.work, Work::Fstests { .. })) {
        let src = args.fstests_src.as_deref().with_context(|| {
            format!(
                "the selected cells include fstests: give an fstests checkout with --fstests-src DIR or {}",
                crate::test::FSTESTS_ENV
            )
        })?;
        rootfs::validate_source(src)?;
        deps::ensure(deps::Need::for_fstests(args.source.kernel_src.is_some()))?;
        Some(rootfs::ensure(src, false)?.image)
    } else {
        None
    };
    let prepared = request::prepare(&variants, &choice, Machine::default().accel)?;
    // The host's; a cell whose persistent memory boots under TCG only says
    // so on its own line.
    eprintln!("[matrix] accelerator: {} ({})", prepared.accel.name(), prepared.accel_reason);
    let (run_id, dir) = paths::new_output_dir("matrix")?;
    let (mut runs, mut boots, mut cell_results) = (Vec::new(), Vec::new(), Vec::new());
    let jobs = args.jobs.map_or_else(crate::jobs::default_jobs, |j| j as usize);
    // Every cell has its own directory and images: up to `jobs` at once.
    let done = crate::jobs::in_parallel(jobs, selected.clone(), |c| {
        let (accel, why) = prepared.accel_for(&vm_of(c));
        let accel =
            if accel == prepared.accel { String::new() } else { format!("; accelerator: {} ({why})", accel.name()) };
        eprintln!("[matrix] cell {} ({} s by weight{accel})", c.id, weight(c));
        let start = Instant::now();
        let ran = run_cell_again(&prepared, c, (&dir, fstests_root.as_deref()), &deadlines, args.rerun_failed)
            .with_context(|| format!("cell {}", c.id));
        (c, ran, start.elapsed().as_millis() as u64)
    });
    let mut cell_runs = Vec::new();
    for (c, ran, elapsed_ms) in done {
        let (r, b) = ran?;
        cell_runs.push((c, r, b, elapsed_ms));
    }
    // The list applies to every cell's runs at once (an entry not seen in
    // any cell is named), before the cells' verdicts.
    let counts: Vec<usize> = cell_runs.iter().map(|(_, r, ..)| r.len()).collect();
    let mut all: Vec<WorkloadRun> = cell_runs.iter_mut().flat_map(|(_, r, ..)| std::mem::take(r)).collect();
    let known_text =
        fstests::apply_known(&list, &entries, &mut all, |r| cell_of(&cells, &r.label).map(|c| c.axes.clone()));
    let mut all = all.into_iter();
    for ((_, r, ..), n) in cell_runs.iter_mut().zip(counts) {
        r.extend(all.by_ref().take(n));
    }
    for (c, mut r, b, elapsed_ms) in cell_runs {
        // A cell that passed only on a rerun says so in cells.json.
        let verdict = match results::verdict_of(&r, args.flaky_fails) {
            Verdict::Pass if r.iter().any(|r| r.verdict == Verdict::Flaky) => Verdict::Flaky,
            v => v,
        };
        if r.is_empty() {
            let nothing = CaseResult::new("(cell)", Verdict::Fail, "the cell judged nothing".into());
            r.push(WorkloadRun::new("", "(cell)", vec![nothing]).labelled(&c.id));
        }
        eprintln!("[matrix] cell {}: {:?} in {:.1} s", c.id, verdict, elapsed_ms as f64 / 1000.0);
        cell_results.push(CellResult { id: c.id.clone(), verdict, elapsed_ms });
        runs.extend(r);
        boots.extend(b);
    }
    let verdict = results::verdict_of(&runs, args.flaky_fails);
    let results =
        Results { verdict, run_id, runs, boots, xtask_peak_rss_kib: results::peak_rss_kib(), rates: Vec::new() };
    let written = results::write_all(&dir, &results)
        .and_then(|_| paths::write_atomic(&dir.join("cells.json"), &serde_json::to_vec_pretty(&cell_results)?));
    println!("{}{known_text}", results::summary(&results));
    written.context("the verdicts above could not be saved")?;
    println!("outputs: {} (cells.json for --durations and cargo xtask report)", dir.display());
    Ok(results.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::pmem::PmemKind;

    fn cells(text: &str) -> Vec<Cell> {
        spec::parse(Path::new("m.toml"), text).unwrap()
    }

    const SMALL: &str = r#"
[topologies.plain]
[topologies.labelled]
label-size = "128K"
[filesystems.default]
[filesystems.no-reflink]
reflink = false
[machines.small]
[suites.smoke]
workloads = ["dax-smoke"]
[suites.race]
workloads = ["seal-race"]
params = { "seal-race.seconds" = 10 }
[scenarios.cross-kernel]
steps = [
  { kernel = "patched", workloads = ["seal-foreign-prepare"] },
  { kernel = "baseline", workloads = ["seal-foreign-change"] },
  { kernel = "patched", workloads = ["seal-foreign-verify"] },
]
[[cells]]
kernels = ["patched", "baseline", "debug"]
topologies = ["plain", "labelled"]
filesystems = ["default", "no-reflink"]
machines = ["small"]
suites = ["smoke", "race"]
weight = 60
[[cells]]
scenarios = ["cross-kernel"]
weight = 90
[[exclude]]
kernel = "debug"
topology = "labelled"
"#;

    #[test]
    fn cells_are_the_product_minus_excludes_with_stable_ids() {
        let c = cells(SMALL);
        assert_eq!(c.len(), 2 * 3 * 2 * 2 - 2 * 2 + 1);
        assert!(c.iter().any(|c| c.id == "race.patched.labelled.no-reflink.small"));
        assert!(!c.iter().any(|c| c.id.contains("debug.labelled")));
        let x = c.iter().find(|c| c.id == "cross-kernel.default.default.default").unwrap();
        assert_eq!(x.kernels(), [Variant::Baseline, Variant::Patched]);
        assert_eq!(cells(SMALL), c, "the same file gives the same cells");
        let race = c.iter().find(|c| c.id == "race.baseline.plain.default.small").unwrap();
        assert!(matches!(&race.work, Work::Suite { params, .. } if params["seal-race.seconds"] == "10"));
    }

    #[test]
    fn bad_files_are_refused_with_file_line_and_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("kernels = [\"patchd\"]", "m.toml:", "unknown kernel \"patchd\""),
            ("topologies = [\"plan\"]", "m.toml:", "topologies: unknown topology \"plan\""),
            ("colour = \"red\"", "m.toml:", "unknown field `colour`"),
        ];
        for (line, file, needle) in cases {
            let text = format!("[suites.s]\nworkloads = [\"dax-smoke\"]\n[[cells]]\nkernels = [\"patched\"]\nsuites = [\"s\"]\nweight = 1\n{line}\n");
            let text = if line.starts_with("kernels") { text.replace("kernels = [\"patched\"]\n", "") } else { text };
            let err = format!("{:#}", spec::parse(Path::new("m.toml"), &text).unwrap_err());
            assert!(err.starts_with(file) && err.contains(needle), "{line}: {err}");
            assert!(err.contains(":7:") || err.contains(":6:") || err.contains(":4:"), "no line in: {err}");
        }
        let bad_cell = "[topologies.tiny]\nsize = \"256M\"\n[suites.s]\nworkloads = [\"dax-smoke\"]\n[[cells]]\nkernels = [\"patched\"]\ntopologies = [\"tiny\"]\nsuites = [\"s\"]\nweight = 1\n";
        let err = format!("{:#}", spec::parse(Path::new("m.toml"), bad_cell).unwrap_err());
        assert!(err.contains("m.toml:8: cell s.patched.tiny.default.default: topology tiny"), "{err}");
        let bad_workload =
            "[suites.s]\nworkloads = [\"nope\"]\n[[cells]]\nkernels = [\"patched\"]\nsuites = [\"s\"]\nweight = 1\n";
        let err = format!("{:#}", spec::parse(Path::new("m.toml"), bad_workload).unwrap_err());
        assert!(err.contains("unknown workload \"nope\""), "{err}");
    }

    #[test]
    fn shards_are_stable_balanced_and_keep_kernels_together() {
        let c = cells(SMALL);
        let a = assign(&c, 3, |c| c.weight);
        assert_eq!(a, assign(&c, 3, |c| c.weight), "stable");
        let mut load = [0u64; 3];
        for cell in &c {
            load[a[&cell.id] as usize] += cell.weight;
        }
        let (max, mean) = (*load.iter().max().unwrap() as f64, load.iter().sum::<u64>() as f64 / 3.0);
        assert!(max / mean < 1.35, "{load:?}");
        assert!(c.iter().all(|cell| a.contains_key(&cell.id)));
        // One shard: everything in it.
        assert!(assign(&c, 1, |c| c.weight).values().all(|s| *s == 0));
    }

    #[test]
    fn fstests_tables_are_cells_on_both_kernels_and_checked() {
        let text = "[fstests.dax-swap]\nexclude = [\"generic/470\"]\n[fstests.clone]\ngroups = [\"clone\"]\n\
                    sections = [\"dax\"]\n[[cells]]\nfstests = [\"dax-swap\", \"clone\"]\nweight = 900\n\
                    [[exclude]]\nfstests = \"clone\"\ntopology = \"nope\"\n";
        let c = cells(text);
        assert_eq!(
            c.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["fstests-dax-swap.default.default.default", "fstests-clone.default.default.default"]
        );
        assert_eq!(c[0].kernels(), [Variant::Baseline, Variant::Patched]);
        match &c[0].work {
            Work::Fstests { plans, .. } => {
                assert_eq!(plans["dax"].groups, ["dax"]);
                assert_eq!(plans["nondax"].groups, ["swap"]);
                assert_eq!(plans["nondax"].exclude, ["generic/470"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&c[1].work, Work::Fstests { plans, .. } if plans.keys().eq(["dax"])));
        for (bad, needle) in [
            ("[fstests.f]\ngroups = [\"swap\"]\nsections = [\"dax\"]\n", "refuses swapon on DAX"),
            ("[fstests.f]\nexclude = [\"470\"]\n", "DIR/NUMBER"),
            ("[fstests.f]\ncolour = 1\n", "unknown field `colour`"),
            ("[fstests.f]\n[topologies.one]\nnvdimms = 1\n", "two NVDIMMs"),
        ] {
            let topology = if bad.contains("topologies") { "topologies = [\"one\"]\n" } else { "" };
            let text = format!("{bad}[[cells]]\nfstests = [\"f\"]\n{topology}weight = 1\n");
            let err = format!("{:#}", spec::parse(Path::new("m.toml"), &text).unwrap_err());
            assert!(err.contains(needle), "{bad}: {err}");
        }
        let both = "[fstests.f]\n[suites.s]\n[[cells]]\nkernels = [\"patched\"]\nsuites = [\"s\"]\nfstests = [\"f\"]\nweight = 1\n";
        let err = format!("{:#}", spec::parse(Path::new("m.toml"), both).unwrap_err());
        assert!(err.contains("one of suites, scenarios or fstests"), "{err}");
    }

    #[test]
    fn a_topology_names_its_kind_of_persistent_memory() {
        let cells = |topology: &str| {
            let text = format!(
                "[suites.s]\n[topologies.t]\n{topology}[[cells]]\nkernels = [\"patched\"]\nsuites = [\"s\"]\n\
                 topologies = [\"t\"]\nweight = 1\n"
            );
            spec::parse(Path::new("m.toml"), &text).map_err(|e| format!("{e:#}"))
        };
        let c = cells("pmem = \"virtio\"\n").unwrap();
        assert_eq!(vm_of(&c[0]).pmem, PmemKind::Virtio);
        assert_eq!(vm_of(&cells("").unwrap()[0]).pmem, PmemKind::Nfit);
        for (bad, needle) in [
            ("pmem = \"cxl-ish\"\n", "unknown variant `cxl-ish`"),
            ("pmem = \"virtio\"\npersistence = \"cpu\"\n", "no NFIT"),
            ("pmem = \"virtio\"\nlabel-size = \"128K\"\n", "label area"),
        ] {
            let err = cells(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn shard_arguments() {
        assert_eq!(parse_shard("2/4"), Ok((2, 4)));
        for bad in ["0/4", "5/4", "1", "a/b", "1/0"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
