//! `cargo xtask fstests`: the community's filesystem tests in the same VMs,
//! on the same kernel variants, as kvm-xfstests runs them. The user gives an
//! fstests checkout; it is built into a cached Debian root image
//! (`build::rootfs`) that each boot attaches as a snapshot. Each kernel
//! boots on its own NVDIMM image set (`fstests-<variant>`), runs the
//! selected sections (`fstests-dax`, `fstests-nondax`; one case per test),
//! and the kernels are then compared: a test that fails with the series and
//! passes without it is a regression and fails the run; one that fails on
//! the baseline too is a known failure, shown and counted as such, never as
//! a pass; a test that did not run says why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use dax_seal_protocol::fstests::{self, Plan};
use dax_seal_protocol::ktap::Verdict;
use dax_seal_protocol::{DaxMode, RunConfig};
use serde::{Deserialize, Serialize};

use crate::build::kernel::{self, Variant};
use crate::build::{deps, rootfs};
use crate::cli::{AccelChoice, KernelChoice, SourceArgs};
use crate::paths;
use crate::report::known;
use crate::report::results::{self, BootRecord, CaseResult, Results, WorkloadRun};
use crate::vm::machine::Machine;
use crate::vm::request::{self, BootRequest, Prepared};

/// The default wall-clock limit of one fstests boot (every test of its
/// sections), in seconds.
pub const BOOT_TIMEOUT: u64 = 4 * 3600;

#[derive(Debug, Clone, Args)]
pub struct FstestsArgs {
    /// An fstests checkout (xfstests-dev); it is copied into the root image, never into this repository.
    #[arg(long, value_name = "DIR", env = crate::test::FSTESTS_ENV)]
    pub src: PathBuf,
    /// fstests group to run (repeatable; default: dax in the dax section, swap in the nondax one; e.g. clone).
    #[arg(long = "group", value_name = "G")]
    pub groups: Vec<String>,
    /// A single test to run, e.g. generic/470 (repeatable; with no --group, only these).
    #[arg(long = "test", value_name = "T")]
    pub tests: Vec<String>,
    /// Section to run (repeatable): dax (mounted dax=always) or nondax (dax=never); default: each with tests.
    #[arg(long = "section", value_name = "S")]
    pub sections: Vec<String>,
    /// The known-failure list to apply (default tests/known-failures/<tree>.txt).
    #[arg(long, value_name = "FILE")]
    pub known_failures: Option<PathBuf>,
    /// Run a failed test again, alone, up to N times (fstests' check -L);
    /// one that passes on a rerun is reported flaky (0 to 10).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub rerun_failed: u32,
    /// Tests never to run: one DIR/NUMBER a line, `#` comments (fstests' -E format).
    #[arg(long, value_name = "FILE")]
    pub exclude: Option<PathBuf>,
    /// Kernel variants to boot; both compares patched against baseline.
    #[arg(long, value_enum, default_value = "both")]
    pub kernel: KernelChoice,
    /// Kernel variants booted at once (default: the host's cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Make the root image again even when it is cached.
    #[arg(long)]
    pub rebuild_root: bool,
    /// Accelerator: auto probes KVM with a deadline and falls back to TCG.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelChoice,
    /// Also run the project's fstests cases for the seal (tests/fstests/) in each section; they must pass
    /// with the series and be not run (the kernel cannot seal) on the baseline.
    #[arg(long)]
    pub seal_cases: bool,
    /// Wall-clock limit for one boot (all its tests), in seconds.
    #[arg(long, default_value_t = BOOT_TIMEOUT, value_name = "SECS", value_parser = clap::value_parser!(u64).range(60..))]
    pub timeout: u64,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// What each section runs, from the flags: refuses unknown sections,
/// malformed names, and a selection that leaves a section with nothing.
pub fn plans(
    groups: &[String],
    tests: &[String],
    sections: &[String],
    exclude: &[String],
) -> Result<BTreeMap<String, Plan>> {
    for g in groups {
        fstests::check_group(g).map_err(anyhow::Error::msg).context("--group")?;
    }
    for t in tests {
        fstests::check_test(t).map_err(anyhow::Error::msg).context("--test")?;
    }
    let known: Vec<&str> = fstests::SECTIONS.iter().map(|s| s.name).collect();
    for s in sections {
        if fstests::section(s).is_none() {
            bail!("--section {s:?}: no such section; give one of {}", known.join(", "));
        }
    }
    let mut plans = BTreeMap::new();
    for section in fstests::SECTIONS {
        let named = sections.iter().any(|s| s == section.name);
        if !sections.is_empty() && !named {
            continue;
        }
        let chosen: Vec<String> = if groups.is_empty() && tests.is_empty() {
            section.default_groups.iter().map(|g| g.to_string()).collect()
        } else {
            groups.iter().filter(|g| !section.refused_groups.contains(&g.as_str())).cloned().collect()
        };
        if chosen.is_empty() && tests.is_empty() {
            if named {
                bail!(
                    "section {} has nothing to run: {} never runs there ({}); choose another --group or --section",
                    section.name,
                    groups.join(", "),
                    section.refusal
                );
            }
            continue;
        }
        let plan = Plan { groups: chosen, tests: tests.to_vec(), exclude: exclude.to_vec() };
        plans.insert(section.name.to_string(), plan);
    }
    if plans.is_empty() {
        bail!("nothing to run: the groups {} run in no selected section", groups.join(", "));
    }
    Ok(plans)
}

/// An exclude file: one test a line, `#` starts a comment.
pub fn read_exclude(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--exclude {}", path.display()))?;
    parse_exclude(&text).map_err(|(line, e)| anyhow::anyhow!("{}:{line}: {e}", path.display()))
}

pub fn parse_exclude(text: &str) -> Result<Vec<String>, (usize, String)> {
    let mut tests = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        fstests::check_test(entry).map_err(|e| (i + 1, e))?;
        tests.push(entry.to_string());
    }
    Ok(tests)
}

/// The configuration of one fstests boot: set-up, then each section.
pub fn run_config(kernel: &str, plans: &BTreeMap<String, Plan>, run: &str, attempt: u32) -> RunConfig {
    let workloads = fstests::SECTIONS.iter().filter(|s| plans.contains_key(s.name)).map(|s| s.workload.to_string());
    RunConfig {
        kernel: kernel.to_string(),
        workloads: workloads.collect(),
        // init mounts both NVDIMMs before the sections take them over.
        dax: vec![DaxMode::Always, DaxMode::Never],
        fstests: plans.clone(),
        run: run.to_string(),
        attempt,
        ..RunConfig::default()
    }
}

/// The VM of an fstests boot: two NVDIMMs (TEST_DEV, SCRATCH_DEV) of the
/// default size, and the given deadline.
pub fn machine(accel: AccelChoice, timeout: Duration) -> Machine {
    Machine { accel, nvdimms: 2, timeout, ..Machine::default() }
}

/// How one test did on a kernel compared with the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    Pass,
    /// Fails on this kernel, passes on the baseline.
    Regression,
    /// Fails on both.
    Known,
    /// Fails on the baseline only.
    Fixed,
    /// Did not run on this kernel (or on either).
    NotRun,
    /// Fails here; the baseline has no verdict to compare with.
    Fail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Compared {
    pub kernel: String,
    pub section: String,
    pub test: String,
    pub class: Class,
    pub here: Verdict,
    pub baseline: Option<Verdict>,
    /// With `--rerun-failed`: how many times it ran, and how many of those
    /// failed (its failure rate over the attempts).
    pub attempts: usize,
    pub failures: usize,
}

fn is_section(r: &WorkloadRun) -> bool {
    fstests::section_of_workload(&r.workload).is_some()
}

/// The tree a kernel's rows belong to (`kernel::kernel_name`).
fn tree_of(kernel: &str) -> &str {
    kernel::parse_kernel_name(kernel).map_or("", |(_, tree)| tree)
}

fn is_baseline(kernel: &str) -> bool {
    kernel::parse_kernel_name(kernel).is_some_and(|(v, _)| v == Variant::Baseline)
}

fn is_test(name: &str) -> bool {
    fstests::check_test(name).is_ok()
}

/// Compares every kernel's fstests cases with the baseline's and marks
/// the failures the baseline shares (and the baseline's own failures) as
/// known; regressions stay failures. Without a baseline nothing changes.
pub fn compare(runs: &mut [WorkloadRun]) -> Vec<Compared> {
    // Each kernel is compared with its own tree's baseline.
    let key = |r: &WorkloadRun, case: &str| (tree_of(&r.kernel).to_string(), r.workload.clone(), case.to_string());
    let baseline: BTreeMap<(String, String, String), Verdict> = runs
        .iter()
        .filter(|r| is_baseline(&r.kernel) && is_section(r))
        .flat_map(|r| r.cases.iter().filter(|c| is_test(&c.name)).map(|c| (key(r, &c.name), c.verdict)))
        .collect();
    // Only a baseline beside another kernel of its tree is a reference.
    let compared_with: BTreeSet<String> = runs
        .iter()
        .filter(|r| !is_baseline(&r.kernel) && is_section(r))
        .map(|r| tree_of(&r.kernel).to_string())
        .collect();
    let passed_elsewhere: BTreeMap<(String, String, String), bool> = runs
        .iter()
        .filter(|r| !is_baseline(&r.kernel) && is_section(r))
        .flat_map(|r| r.cases.iter().map(|c| (key(r, &c.name), c.verdict == Verdict::Pass)))
        .fold(BTreeMap::new(), |mut m, (k, pass)| {
            *m.entry(k).or_insert(false) |= pass;
            m
        });
    let mut out = Vec::new();
    for run in runs.iter_mut().filter(|r| is_section(r)) {
        let section = fstests::section_of_workload(&run.workload).map_or("", |s| s.name).to_string();
        let is_baseline = is_baseline(&run.kernel);
        let compared_with = compared_with.contains(tree_of(&run.kernel));
        let tree = tree_of(&run.kernel).to_string();
        for case in run.cases.iter_mut().filter(|c| is_test(&c.name)) {
            let key = (tree.clone(), run.workload.clone(), case.name.clone());
            let base = if is_baseline { None } else { baseline.get(&key).copied() };
            let class = match (case.verdict, is_baseline, base) {
                // A test that passed on a rerun passed.
                (Verdict::Pass | Verdict::Flaky, ..) => Class::Pass,
                (Verdict::Skip, ..) => Class::NotRun,
                (Verdict::Known, ..) => Class::Known,
                (Verdict::Fail, true, _) if !compared_with => Class::Fail,
                (Verdict::Fail, true, _) => {
                    if passed_elsewhere.get(&key).copied().unwrap_or(false) {
                        Class::Fixed
                    } else {
                        Class::Known
                    }
                }
                (Verdict::Fail, false, Some(Verdict::Pass | Verdict::Flaky)) => Class::Regression,
                (Verdict::Fail, false, Some(Verdict::Fail | Verdict::Known)) => Class::Known,
                (Verdict::Fail, false, _) => Class::Fail,
            };
            match class {
                Class::Known if case.verdict == Verdict::Fail => {
                    case.verdict = Verdict::Known;
                    case.detail = format!("{SHARED_WITH_BASELINE}\n{}", case.detail);
                }
                Class::Fixed => {
                    case.verdict = Verdict::Known;
                    case.detail = format!("fails on the baseline only (passes with the series)\n{}", case.detail);
                }
                Class::Regression => {
                    case.detail = format!("REGRESSION: passes on the baseline\n{}", case.detail);
                }
                _ => {}
            }
            out.push(Compared {
                kernel: run.kernel.clone(),
                section: section.clone(),
                test: case.name.clone(),
                class,
                here: case.verdict,
                baseline: base,
                attempts: case.attempts.len() + 1,
                failures: case.attempts.len() + usize::from(case.verdict == Verdict::Fail),
            });
        }
        run.verdict = results::overall(&run.cases);
    }
    out
}

/// What the notrun reason of a project case says on a kernel that cannot
/// seal (`_require_seal` in tests/fstests/common/seal).
pub const CANNOT_SEAL: &str = "cannot seal a block map";

/// [`compare`], then the rule of the project's own cases
/// ([`judge_project_cases`]).
pub fn compare_and_judge(runs: &mut [WorkloadRun]) -> Result<Vec<Compared>> {
    let mut compared = compare(runs);
    judge_project_cases(runs, &mut compared, &rootfs::project_cases()?);
    Ok(compared)
}

/// The project's cases (`tests/fstests/`) test the seal itself. With the
/// series, each must pass in some section, and may be not run elsewhere
/// only for a reason of that section (a swapfile on a DAX mount), never
/// because it cannot seal. On the baseline each must be not run because it
/// cannot seal, or for the same section's reason the series had. A case
/// that runs on the baseline tests nothing of the seal, and one the series
/// never ran did not test it: both fail, in the runs and in the
/// comparison, whatever the comparison said.
pub fn judge_project_cases(runs: &mut [WorkloadRun], compared: &mut [Compared], cases: &[String]) {
    let project = |c: &CaseResult| cases.contains(&c.name);
    let with_series = |r: &&WorkloadRun| is_section(r) && !is_baseline(&r.kernel);
    // Where the series skipped a case for its section's reason.
    let section_skips: BTreeSet<(String, String, String)> = runs
        .iter()
        .filter(with_series)
        .flat_map(|r| {
            r.cases
                .iter()
                .filter(|c| project(c) && c.verdict == Verdict::Skip && !c.detail.contains(CANNOT_SEAL))
                .map(move |c| (tree_of(&r.kernel).to_string(), r.workload.clone(), c.name.clone()))
        })
        .collect();
    let passed: BTreeSet<(String, String)> = runs
        .iter()
        .filter(with_series)
        .flat_map(|r| {
            r.cases
                .iter()
                .filter(|c| project(c) && matches!(c.verdict, Verdict::Pass | Verdict::Flaky))
                .map(move |c| (r.kernel.clone(), c.name.clone()))
        })
        .collect();
    for run in runs.iter_mut().filter(|r| is_section(r)) {
        let baseline = is_baseline(&run.kernel);
        let section = fstests::section_of_workload(&run.workload).map_or("", |s| s.name);
        let tree = tree_of(&run.kernel).to_string();
        let mut changed = false;
        for case in run.cases.iter_mut().filter(|c| project(c)) {
            let cannot_seal = case.detail.contains(CANNOT_SEAL);
            let section_skip = section_skips.contains(&(tree.clone(), run.workload.clone(), case.name.clone()));
            let wrong = match (baseline, case.verdict) {
                (true, Verdict::Skip) if cannot_seal || section_skip => None,
                (true, Verdict::Skip) => {
                    Some("a project case is not run on the baseline only because it cannot seal (or where the series skipped it too)")
                }
                (true, _) => Some("a project case must not run on the baseline (it cannot seal), yet it ran"),
                (false, Verdict::Skip) if cannot_seal => Some("a project case says the kernel with the series cannot seal"),
                (false, Verdict::Skip) if !passed.contains(&(run.kernel.clone(), case.name.clone())) => {
                    Some("a project case must pass with the series in some section, yet it ran in none")
                }
                _ => None,
            };
            let Some(why) = wrong else { continue };
            case.verdict = Verdict::Fail;
            case.detail = format!("{why}\n{}", case.detail);
            changed = true;
            for c in
                compared.iter_mut().filter(|c| c.kernel == run.kernel && c.section == section && c.test == case.name)
            {
                c.class = Class::Fail;
                c.here = Verdict::Fail;
            }
        }
        if changed {
            run.verdict = results::overall(&run.cases);
        }
    }
}

/// The comparison as the summary's closing table: per kernel and section,
/// the counts, then every regression, known failure and test not run.
pub fn comparison_text(compared: &[Compared]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("\nfstests by kernel and section:\n");
    let mut groups: BTreeMap<(&str, &str), Vec<&Compared>> = BTreeMap::new();
    for c in compared {
        groups.entry((&c.kernel, &c.section)).or_default().push(c);
    }
    for ((kernel, section), cs) in &groups {
        let n = |class: Class| cs.iter().filter(|c| c.class == class).count();
        let _ = writeln!(
            out,
            "  {kernel:<9} {section:<7} {} tests: {} passed, {} regressions, {} failed (no baseline), {} known failures, \
             {} fail on the baseline only, {} not run",
            cs.len(),
            n(Class::Pass),
            n(Class::Regression),
            n(Class::Fail),
            n(Class::Known),
            n(Class::Fixed),
            n(Class::NotRun)
        );
    }
    for (class, title) in [
        (Class::Regression, "REGRESSIONS (fail with the series, pass on the baseline)"),
        (Class::Known, "known failures (fail on the baseline too)"),
        (Class::Fixed, "fail on the baseline only"),
    ] {
        let listed: Vec<String> = compared
            .iter()
            .filter(|c| c.class == class)
            .map(|c| format!("{}/{} {}", c.kernel, c.section, c.test))
            .collect();
        if !listed.is_empty() {
            let _ = writeln!(out, "{title}: {}", listed.join(", "));
        }
    }
    out
}

/// Boots every variant once with the plans, on its own image set, and
/// returns the judged runs (compared) and the boots.
pub struct Booted {
    pub runs: Vec<WorkloadRun>,
    pub boots: Vec<BootRecord>,
    pub compared: Vec<Compared>,
}

/// Where and how the fstests boots of one task run.
pub struct Boots<'a> {
    pub prepared: &'a Prepared,
    pub root: &'a Path,
    pub machine: &'a Machine,
    pub images_dir: &'a Path,
    pub out_dir: &'a Path,
    pub jobs: usize,
    pub run: &'a str,
}

#[allow(clippy::too_many_arguments)]
pub fn boot_all(
    prepared: &Prepared,
    variants: &[Variant],
    plans: &BTreeMap<String, Plan>,
    root: &Path,
    machine: &Machine,
    images_dir: &Path,
    out_dir: &Path,
    jobs: usize,
    run: &str,
) -> Result<Booted> {
    let boots = Boots { prepared, root, machine, images_dir, out_dir, jobs, run };
    let plans: Vec<(Variant, BTreeMap<String, Plan>)> = variants.iter().map(|&v| (v, plans.clone())).collect();
    let (mut runs, boots) = boot_each(&boots, plans, 0)?;
    let compared = compare_and_judge(&mut runs)?;
    Ok(Booted { runs, boots, compared })
}

/// Boots each kernel with its own plans (attempt `attempt`: 0, or a
/// rerun's number), up to `jobs` at once; the judged runs, not compared.
pub fn boot_each(
    b: &Boots,
    plans: Vec<(Variant, BTreeMap<String, Plan>)>,
    attempt: u32,
) -> Result<(Vec<WorkloadRun>, Vec<BootRecord>)> {
    let Boots { prepared, root, machine, images_dir, out_dir, jobs, run } = *b;
    let booted = crate::jobs::in_parallel(jobs, plans, |(variant, plans)| -> Result<_> {
        let kernel = prepared.name(variant);
        let config = run_config(kernel, &plans, run, attempt);
        let tag = if attempt == 0 { String::new() } else { format!("-rerun{attempt}") };
        let set = format!("fstests-{kernel}");
        let request = BootRequest {
            prepared,
            variant,
            config: config.clone(),
            includes: &[],
            machine,
            images_dir,
            image_set: Some(&set),
            out_dir,
            fresh: false,
            tag: &tag,
            kill_at: None,
            root_disk: Some(root),
        };
        eprintln!("[fstests] booting {kernel}{tag}: sections {}", config.workloads.join(", "));
        let outcome = request.boot()?;
        eprintln!("[fstests] {kernel}: {} after {:.1} s", outcome.end.describe(), outcome.elapsed.as_secs_f64());
        let (runs, boot) = results::judged(kernel, prepared, &config, &outcome);
        let label = if attempt == 0 { String::new() } else { format!("rerun {attempt}") };
        Ok((runs, [boot.labelled(&label)]))
    });
    results::gather(booted)
}

/// What a rerun of the failed tests boots: for each kernel with a failed
/// test, a plan per section naming exactly those tests.
fn failed_tests(
    runs: &[WorkloadRun],
    variants: &[Variant],
    name: impl Fn(Variant) -> String,
) -> Vec<(Variant, BTreeMap<String, Plan>)> {
    let mut out = Vec::new();
    for &variant in variants {
        let mut plans: BTreeMap<String, Plan> = BTreeMap::new();
        for r in runs.iter().filter(|r| r.kernel == name(variant)) {
            let Some(section) = fstests::section_of_workload(&r.workload) else { continue };
            for c in r.cases.iter().filter(|c| c.verdict == Verdict::Fail && is_test(&c.name)) {
                plans.entry(section.name.to_string()).or_default().tests.push(c.name.clone());
            }
        }
        if !plans.is_empty() {
            out.push((variant, plans));
        }
    }
    out
}

/// How the comparison marks a failure the baseline shares: the candidates
/// the known-failure list is proposed from.
pub const SHARED_WITH_BASELINE: &str = "known failure: fails on the baseline too";

/// Applies the tree's known-failure list to `runs` (each made in the
/// configuration `config_of` gives, see [`known::apply`]) and says what it
/// did, proposing entries for the failures the baseline shares that it lacks.
pub fn apply_known(
    list: &Path,
    entries: &[known::Entry],
    runs: &mut [WorkloadRun],
    config_of: impl Fn(&WorkloadRun) -> Option<known::Axes>,
) -> String {
    let applied = known::apply(entries, runs, &config_of);
    let proposed: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            let who = r.who();
            r.cases
                .iter()
                .filter(|c| c.verdict == Verdict::Known && c.detail.starts_with(SHARED_WITH_BASELINE))
                .map(move |c| format!("{who} / {} / {}", r.workload, c.name))
        })
        .filter(|case| !entries.iter().any(|e| e.scope.is_empty() && known::matches(&e.case, case)))
        .collect();
    known::text(list, &applied, &proposed)
}

pub fn cmd(args: &FstestsArgs) -> Result<ExitCode> {
    let exclude = match &args.exclude {
        Some(p) => read_exclude(p)?,
        None => Vec::new(),
    };
    let choice = args.source.choice()?;
    // A bad list is refused before anything boots.
    let known_list = args.known_failures.clone().unwrap_or_else(|| known::list_for(&choice.tree.name));
    let entries = known::load(&known_list)?;
    let mut tests = args.tests.clone();
    if args.seal_cases {
        tests.extend(rootfs::project_cases()?.into_iter().filter(|c| !args.tests.contains(c)));
    }
    let plans = plans(&args.groups, &tests, &args.sections, &exclude)?;
    rootfs::validate_source(&args.src)?;
    deps::ensure(deps::Need::for_fstests(args.source.kernel_src.is_some()))?;
    let root = rootfs::ensure(&args.src, args.rebuild_root)?;
    let variants = args.kernel.variants();
    let vm = machine(args.accel, Duration::from_secs(args.timeout));
    let prepared = request::prepare(&variants, &choice, vm.accel)?;
    eprintln!("[fstests] accelerator: {} ({})", prepared.accel.name(), prepared.accel_reason);
    for (section, plan) in &plans {
        eprintln!(
            "[fstests] section {section}: groups {} tests {} excluded {}",
            list(&plan.groups),
            list(&plan.tests),
            list(&plan.exclude)
        );
    }
    let (run_id, out_dir) = paths::new_output_dir("fstests")?;
    let jobs = args.jobs.map_or_else(crate::jobs::default_jobs, |j| j as usize);
    let run = format!("fstests {run_id}");
    let boots = Boots {
        prepared: &prepared,
        root: &root.image,
        machine: &vm,
        images_dir: &paths::images_dir(),
        out_dir: &out_dir,
        jobs,
        run: &run,
    };
    let first: Vec<(Variant, BTreeMap<String, Plan>)> = variants.iter().map(|&v| (v, plans.clone())).collect();
    let (mut runs, mut boot_records) = boot_each(&boots, first, 0)?;
    // check -L's rule: a failed test runs again, alone, up to N times.
    for attempt in 1..=args.rerun_failed {
        let again = failed_tests(&runs, &variants, |v| prepared.name(v).to_string());
        if again.is_empty() {
            break;
        }
        let tests: usize = again.iter().flat_map(|(_, p)| p.values()).map(|p| p.tests.len()).sum();
        eprintln!("[fstests] rerun {attempt} of {}: {tests} failed test(s)", args.rerun_failed);
        let (rerun, more) = boot_each(&boots, again, attempt)?;
        runs = results::fold_rerun(runs, rerun, attempt);
        boot_records.extend(more);
    }
    let compared = compare_and_judge(&mut runs)?;
    let mut booted = Booted { runs, boots: boot_records, compared };
    // Outside the matrix a run has no cell: scoped entries do not apply.
    let known_text = apply_known(&known_list, &entries, &mut booted.runs, |_| None);
    let verdict = results::verdict_of(&booted.runs, false);
    let results = Results {
        verdict,
        run_id,
        runs: booted.runs,
        boots: booted.boots,
        xtask_peak_rss_kib: results::peak_rss_kib(),
        rates: Vec::new(),
    };
    let written = results::write_all(&out_dir, &results).and_then(|_| {
        paths::write_atomic(&out_dir.join("fstests.json"), &serde_json::to_vec_pretty(&booted.compared)?)
    });
    let mut summary = results::summary(&results);
    summary.push_str(&comparison_text(&booted.compared));
    summary.push_str(&known_text);
    println!("{summary}");
    written.context("the verdicts above could not be saved")?;
    paths::write_atomic(&out_dir.join("summary.txt"), summary.as_bytes())?;
    println!("outputs: {}", out_dir.display());
    Ok(results.exit_code())
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(items: &[&str]) -> Vec<String> {
        items.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn default_plans_put_each_group_in_its_section() {
        let p = plans(&[], &[], &[], &[]).unwrap();
        assert_eq!(p["dax"].groups, ["dax"]);
        assert_eq!(p["nondax"].groups, ["swap"]);
        let p = plans(&s(&["dax", "swap", "clone"]), &[], &[], &s(&["generic/470"])).unwrap();
        assert_eq!(p["dax"].groups, ["dax", "clone"]);
        assert_eq!(p["nondax"].groups, ["swap", "clone"]);
        assert_eq!(p["dax"].exclude, ["generic/470"]);
        let p = plans(&[], &s(&["generic/452"]), &s(&["dax"]), &[]).unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["dax"]);
        assert!(p["dax"].groups.is_empty() && p["dax"].tests == ["generic/452"]);
    }

    #[test]
    fn bad_selections_are_refused_with_what_to_do() {
        let e = plans(&s(&["swap"]), &[], &s(&["dax"]), &[]).unwrap_err().to_string();
        assert!(e.contains("refuses swapon on DAX") && e.contains("--section"), "{e}");
        let e = plans(&[], &[], &s(&["pmem"]), &[]).unwrap_err().to_string();
        assert!(e.contains("dax, nondax"), "{e}");
        let e = format!("{:#}", plans(&s(&["Dax"]), &[], &[], &[]).unwrap_err());
        assert!(e.contains("--group") && e.contains("not an fstests group"), "{e}");
        let e = format!("{:#}", plans(&[], &s(&["470"]), &[], &[]).unwrap_err());
        assert!(e.contains("DIR/NUMBER"), "{e}");
    }

    #[test]
    fn exclude_files_name_the_bad_line() {
        assert_eq!(
            parse_exclude("# slow\ngeneric/470  # needs log-writes\n\nxfs/550\n").unwrap(),
            ["generic/470", "xfs/550"]
        );
        let (line, e) = parse_exclude("generic/470\ngeneric 471\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(e.contains("DIR/NUMBER"));
    }

    fn run(kernel: &str, workload: &str, cases: &[(&str, Verdict)]) -> WorkloadRun {
        let cases: Vec<CaseResult> = cases.iter().map(|(n, v)| CaseResult::new(n, *v, format!("{n} said"))).collect();
        WorkloadRun::new(kernel, workload, cases)
    }

    #[test]
    fn the_project_cases_pass_with_the_series_and_are_not_run_without() {
        use Verdict::*;
        let cases = ["generic/950", "xfs/950", "generic/951", "generic/954"].map(String::from);
        let skip = |n: &str, why: &str| CaseResult::new(n, Skip, why.to_string());
        let no_swap = "swapfiles are not supported";
        let mut runs = vec![
            WorkloadRun::new(
                "patched-7.3",
                "fstests-dax",
                vec![
                    CaseResult::new("generic/950", Pass, String::new()),
                    CaseResult::new("xfs/950", Pass, String::new()),
                    skip("generic/954", no_swap),
                    skip("generic/1", "whatever"),
                ],
            ),
            run("patched-7.3", "fstests-nondax", &[("generic/954", Pass)]),
            WorkloadRun::new(
                "baseline-7.3",
                "fstests-dax",
                vec![
                    skip("generic/950", "kernel or xfs cannot seal a block map"),
                    CaseResult::new("xfs/950", Pass, "ran".into()),
                    skip("generic/951", "xfs_io seal support is missing"),
                    skip("generic/954", no_swap),
                    skip("generic/1", "whatever"),
                ],
            ),
            WorkloadRun::new(
                "baseline-7.3",
                "fstests-nondax",
                vec![skip("generic/954", "kernel or xfs cannot seal a block map")],
            ),
            WorkloadRun::new(
                "debug-7.3",
                "fstests-dax",
                vec![
                    skip("generic/950", "needs a scratch device"),
                    skip("xfs/950", "kernel or xfs cannot seal a block map"),
                ],
            ),
        ];
        let mut compared = compare(&mut runs);
        judge_project_cases(&mut runs, &mut compared, &cases);
        let verdict = |k: usize, t: &str| runs[k].cases.iter().find(|c| c.name == t).unwrap().verdict;
        assert_eq!(verdict(0, "generic/950"), Pass);
        assert_eq!(verdict(0, "generic/954"), Skip, "not run on DAX, passed without");
        assert_eq!(verdict(1, "generic/954"), Pass);
        assert_eq!(verdict(0, "generic/1"), Skip, "not a project case");
        assert_eq!(verdict(2, "generic/950"), Skip, "not run because the baseline cannot seal");
        assert_eq!(verdict(2, "xfs/950"), Fail, "ran on the baseline: tests nothing of the seal");
        assert_eq!(verdict(2, "generic/951"), Fail, "skipped on the baseline for another reason");
        assert_eq!(verdict(2, "generic/954"), Skip, "skipped for the section's reason, as with the series");
        assert_eq!(verdict(3, "generic/954"), Skip);
        assert_eq!(verdict(2, "generic/1"), Skip);
        assert_eq!(verdict(4, "generic/950"), Fail, "never run with the series");
        assert_eq!(verdict(4, "xfs/950"), Fail, "the series must seal");
        assert_eq!(runs[2].verdict, Fail);
        assert_eq!(runs[0].verdict, Pass);
        let class = |k: &str, t: &str| compared.iter().find(|c| c.kernel == k && c.test == t).unwrap().class;
        assert_eq!(class("baseline-7.3", "xfs/950"), Class::Fail);
        assert_eq!(class("baseline-7.3", "generic/950"), Class::NotRun);
        assert!(runs[4].cases[0].detail.starts_with("a project case must pass with the series"));
    }

    #[test]
    fn the_kernels_disagree_only_where_a_regression_is() {
        use Verdict::*;
        let mut runs = vec![
            run(
                "patched-7.3",
                "fstests-dax",
                &[
                    ("fstests set-up and test list", Pass),
                    ("generic/1", Pass),
                    ("generic/2", Fail),
                    ("generic/3", Fail),
                    ("generic/4", Pass),
                    ("generic/5", Skip),
                    ("generic/6", Fail),
                ],
            ),
            run(
                "baseline-7.3",
                "fstests-dax",
                &[
                    ("fstests set-up and test list", Pass),
                    ("generic/1", Pass),
                    ("generic/2", Pass),
                    ("generic/3", Fail),
                    ("generic/4", Fail),
                    ("generic/5", Skip),
                ],
            ),
        ];
        let compared = compare(&mut runs);
        let class = |k: &str, t: &str| compared.iter().find(|c| c.kernel == k && c.test == t).unwrap().class;
        assert_eq!(class("patched-7.3", "generic/1"), Class::Pass);
        assert_eq!(class("patched-7.3", "generic/2"), Class::Regression);
        assert_eq!(class("patched-7.3", "generic/3"), Class::Known);
        assert_eq!(class("baseline-7.3", "generic/3"), Class::Known);
        assert_eq!(class("baseline-7.3", "generic/4"), Class::Fixed);
        assert_eq!(class("patched-7.3", "generic/5"), Class::NotRun);
        assert_eq!(class("patched-7.3", "generic/6"), Class::Fail, "the baseline never reported it");
        let verdict = |k: usize, t: &str| runs[k].cases.iter().find(|c| c.name == t).unwrap().verdict;
        assert_eq!(verdict(0, "generic/2"), Fail);
        assert_eq!(verdict(0, "generic/3"), Known);
        assert_eq!(verdict(1, "generic/3"), Known);
        assert_eq!(verdict(1, "generic/4"), Known);
        assert_eq!((runs[0].verdict, runs[1].verdict), (Fail, Known));
        assert!(runs[0].cases[2].detail.starts_with("REGRESSION"));
        assert_eq!(results::verdict_of(&runs[1..], false), Verdict::Pass, "known failures alone do not fail a run");
        let text = comparison_text(&compared);
        assert!(
            text.contains("REGRESSIONS (fail with the series, pass on the baseline): patched-7.3/dax generic/2"),
            "{text}"
        );
        assert!(text.contains(
            "known failures (fail on the baseline too): patched-7.3/dax generic/3, baseline-7.3/dax generic/3"
        ));
    }

    #[test]
    fn without_a_baseline_failures_stay_failures() {
        let mut runs = vec![run("patched-7.3", "fstests-nondax", &[("generic/472", Verdict::Fail)])];
        let compared = compare(&mut runs);
        assert_eq!(compared[0].class, Class::Fail);
        assert_eq!(runs[0].cases[0].verdict, Verdict::Fail);
        let mut runs = vec![run("baseline-7.3", "fstests-nondax", &[("generic/472", Verdict::Fail)])];
        assert_eq!(compare(&mut runs)[0].class, Class::Fail);
        assert_eq!(runs[0].verdict, Verdict::Fail);
    }

    #[test]
    fn the_boot_asks_for_each_planned_section_on_two_nvdimms() {
        let p = plans(&[], &[], &s(&["nondax"]), &[]).unwrap();
        let c = run_config("patched-7.3", &p, "fstests x", 0);
        assert_eq!(c.workloads, ["fstests-nondax"]);
        assert_eq!(c.expected_tests(), ["setup", "fstests-nondax"]);
        assert_eq!(machine(AccelChoice::Tcg, Duration::from_secs(600)).nvdimms, 2);
    }

    #[test]
    fn a_rerun_boots_exactly_the_failed_tests_of_each_kernel() {
        let runs = vec![
            run("patched-7.3", "fstests-dax", &[("xfs/550", Verdict::Fail), ("generic/1", Verdict::Pass)]),
            run("patched-7.3", "fstests-nondax", &[("generic/2", Verdict::Fail), ("(workload)", Verdict::Fail)]),
            run("baseline-7.3", "fstests-dax", &[("xfs/550", Verdict::Pass)]),
        ];
        let again = failed_tests(&runs, &[Variant::Patched, Variant::Baseline], |v| format!("{v}-7.3"));
        assert_eq!(again.len(), 1, "the baseline has nothing to rerun");
        let (variant, plans) = &again[0];
        assert_eq!(*variant, Variant::Patched);
        assert_eq!(plans["dax"].tests, ["xfs/550"]);
        assert_eq!(plans["nondax"].tests, ["generic/2"], "only tests, not the workload's own entry");
        assert!(plans["dax"].groups.is_empty());
    }
}
