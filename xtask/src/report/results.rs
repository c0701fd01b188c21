//! Turns boots into verdicts. The host trusts nothing it was not shown: a
//! workload or case that never reported is a failure, a guest's "ok" over a
//! failed case is a failure, and a boot that did not end with a clean
//! power-off adds a failed `boot` entry naming why. Writes the summary,
//! results.json, junit.xml and results.ktap of a run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use anyhow::{bail, Context as _};
use dax_seal_protocol::disks::HOST_CHECK_PREFIX;
use dax_seal_protocol::figure::Figure;
use dax_seal_protocol::flush;
use dax_seal_protocol::ktap::{Case, TestResult, Verdict, Writer, OVERFLOW_CASE};
use serde::{Deserialize, Serialize};

use crate::paths;
use crate::vm::boot::{BootOutcome, End};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
    pub duration_ms: u64,
    /// What the case measured (`dax-seal figure` lines), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<Figure>,
    /// Its earlier failed attempts, oldest first (`attempt N: reason`),
    /// when the host ran it again (`--rerun-failed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<String>,
}

/// What one workload reported on one boot, judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRun {
    /// The kernel that was booted (its variant's name); empty for a verdict
    /// the host reached without a boot (a matrix cell no shard reported).
    pub kernel: String,
    /// Which boot of a task this was, for the reader: a crash point and
    /// image, a matrix cell and step. Empty for a plain run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    pub workload: String,
    pub verdict: Verdict,
    pub cases: Vec<CaseResult>,
}

impl WorkloadRun {
    /// A run of `workload` on `kernel` whose verdict its cases decide.
    pub fn new(kernel: &str, workload: &str, cases: Vec<CaseResult>) -> WorkloadRun {
        WorkloadRun {
            kernel: kernel.to_string(),
            label: String::new(),
            workload: workload.to_string(),
            verdict: overall(&cases),
            cases,
        }
    }

    pub fn labelled(self, label: &str) -> WorkloadRun {
        WorkloadRun { label: label.to_string(), ..self }
    }

    /// The kernel and the label as tables, suites and KTAP name them.
    pub fn who(&self) -> String {
        who(&self.kernel, &self.label)
    }
}

/// "patched", "patched model point 3 image 1", "matrix".
fn who(kernel: &str, label: &str) -> String {
    match (kernel.is_empty(), label.is_empty()) {
        (_, true) => kernel.to_string(),
        (true, false) => label.to_string(),
        (false, false) => format!("{kernel} {label}"),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootRecord {
    /// The kernel that was booted, as in [`WorkloadRun::kernel`].
    pub kernel: String,
    /// As in [`WorkloadRun::label`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    pub accel: String,
    pub accel_reason: String,
    pub end: End,
    pub elapsed_ms: u64,
    pub first_ktap_ms: Option<u64>,
    pub console_log: PathBuf,
    pub ktap_log: PathBuf,
    pub command_line: String,
    /// Lines on the results channel that were not KTAP.
    pub ignored_result_lines: Vec<String>,
}

impl BootRecord {
    /// What `outcome`, a boot of `kernel` prepared as in `prepared`, leaves
    /// in results.json.
    pub fn of(kernel: &str, prepared: &crate::vm::request::Prepared, outcome: &BootOutcome) -> BootRecord {
        // A machine whose persistent memory needs TCG (CXL) gets it
        // whatever the host offers (Prepared::accel_for).
        let accel_reason = if outcome.accel == prepared.accel {
            prepared.accel_reason.clone()
        } else {
            "the machine's persistent memory needs it".to_string()
        };
        BootRecord {
            kernel: kernel.to_string(),
            label: String::new(),
            accel: outcome.accel.name().to_string(),
            accel_reason,
            end: outcome.end.clone(),
            elapsed_ms: outcome.elapsed.as_millis() as u64,
            first_ktap_ms: outcome.first_ktap_at.map(|d| d.as_millis() as u64),
            console_log: outcome.console_log.clone(),
            ktap_log: outcome.ktap_log.clone(),
            command_line: outcome.command_line.clone(),
            ignored_result_lines: outcome.ignored.clone(),
        }
    }

    pub fn labelled(self, label: &str) -> BootRecord {
        BootRecord { label: label.to_string(), ..self }
    }

    pub fn who(&self) -> String {
        who(&self.kernel, &self.label)
    }

    /// Whether this boot is the one `run` was judged from.
    pub fn judged(&self, run: &WorkloadRun) -> bool {
        self.kernel == run.kernel && self.label == run.label
    }
}

/// results.json: what every task writes and `report` and `bench` read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Pass or fail (`verdict_of`).
    pub verdict: Verdict,
    pub run_id: String,
    pub runs: Vec<WorkloadRun>,
    pub boots: Vec<BootRecord>,
    /// The most memory xtask itself held during the run (VmHWM), in KiB: a
    /// misbehaving guest must not be able to grow it.
    pub xtask_peak_rss_kib: u64,
    /// Each case's counts over the loops of a `run --loop`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rates: Vec<CaseRate>,
}

/// One case over several loops: how often it passed, failed, was flaky or
/// skipped, and the share of loops it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRate {
    pub kernel: String,
    pub workload: String,
    pub case: String,
    pub loops: u32,
    pub passed: u32,
    pub failed: u32,
    pub flaky: u32,
    pub skipped: u32,
    /// `failed / loops`.
    pub failure_rate: f64,
}

/// The counts of every case over the loops in `runs` (the same kernel,
/// workload and case under different labels), in the order first seen.
pub fn rates(runs: &[WorkloadRun]) -> Vec<CaseRate> {
    let mut out: Vec<CaseRate> = Vec::new();
    for r in runs {
        for c in &r.cases {
            let at =
                match out.iter().position(|x| (&x.kernel, &x.workload, &x.case) == (&r.kernel, &r.workload, &c.name)) {
                    Some(at) => at,
                    None => {
                        out.push(CaseRate {
                            kernel: r.kernel.clone(),
                            workload: r.workload.clone(),
                            case: c.name.clone(),
                            loops: 0,
                            passed: 0,
                            failed: 0,
                            flaky: 0,
                            skipped: 0,
                            failure_rate: 0.0,
                        });
                        out.len() - 1
                    }
                };
            let x = &mut out[at];
            x.loops += 1;
            match c.verdict {
                Verdict::Pass | Verdict::Known => x.passed += 1,
                Verdict::Fail => x.failed += 1,
                Verdict::Flaky => x.flaky += 1,
                Verdict::Skip => x.skipped += 1,
            }
            x.failure_rate = f64::from(x.failed) / f64::from(x.loops);
        }
    }
    out
}

impl Results {
    /// Results of `runs` alone (no boots), judged by [`verdict_of`]: what a
    /// merge, a test or a history night holds.
    pub fn of_runs(run_id: &str, runs: Vec<WorkloadRun>) -> Results {
        Results {
            verdict: verdict_of(&runs, false),
            run_id: run_id.to_string(),
            runs,
            boots: Vec::new(),
            xtask_peak_rss_kib: 0,
            rates: Vec::new(),
        }
    }

    /// The process exit status of a task whose verdict this is.
    pub fn exit_code(&self) -> std::process::ExitCode {
        match self.verdict {
            Verdict::Pass => std::process::ExitCode::SUCCESS,
            _ => std::process::ExitCode::FAILURE,
        }
    }

    /// `dir`/results.json, read through these types.
    pub fn read(dir: &Path) -> Result<Results> {
        let path = dir.join("results.json");
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a results.json of this version of xtask", path.display()))
    }

    /// The figure `name` that `workload` reported on `kernel` in a plain
    /// (unlabelled) run, from whichever of its cases measured it; an error names what is missing
    /// and what the workload did report.
    pub fn figure(&self, kernel: &str, workload: &str, name: &str) -> Result<f64> {
        let Some(run) = self.runs.iter().find(|r| r.kernel == kernel && r.label.is_empty() && r.workload == workload)
        else {
            bail!("{workload} did not run on the {kernel} kernel, so it reported no figure {name}");
        };
        let all = || run.cases.iter().flat_map(|c| &c.figures);
        match all().find(|f| f.name == name) {
            Some(f) => Ok(f.value),
            None => {
                let known: Vec<&str> = all().map(|f| f.name.as_str()).collect();
                bail!(
                    "{workload} on the {kernel} kernel reported no figure {name} (its figures: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )
            }
        }
    }
}

/// This process's peak resident memory (VmHWM) in KiB, 0 if unknown.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok()))
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn case_result(c: &Case) -> CaseResult {
    let mut detail = c.reason.clone().unwrap_or_default();
    let mut figures = Vec::new();
    // Host-check requests become cases of their own (crate::vm::disks);
    // acknowledgements are counted by the crash campaign, not shown;
    // figures are kept typed, beside the prose.
    for d in c.diagnostics.iter().filter(|d| !d.starts_with(HOST_CHECK_PREFIX) && !d.starts_with(flush::ACK_PREFIX)) {
        if let Some(f) = Figure::parse(d) {
            figures.push(f);
            continue;
        }
        if !detail.is_empty() {
            detail.push('\n');
        }
        detail.push_str(d);
    }
    CaseResult { figures, duration_ms: ms(c.duration), ..CaseResult::new(&c.name, c.verdict, detail) }
}

impl CaseResult {
    /// A verdict the host reached itself (no guest duration).
    pub fn new(name: &str, verdict: Verdict, detail: String) -> CaseResult {
        CaseResult {
            name: name.to_string(),
            verdict,
            detail,
            duration_ms: 0,
            figures: Vec::new(),
            attempts: Vec::new(),
        }
    }
}

fn fail(name: &str, detail: String) -> CaseResult {
    CaseResult::new(name, Verdict::Fail, detail)
}

/// A workload's verdict from its cases.
pub fn overall(cases: &[CaseResult]) -> Verdict {
    if cases.iter().any(|c| c.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if !cases.is_empty() && cases.iter().all(|c| c.verdict == Verdict::Skip) {
        Verdict::Skip
    } else if cases.iter().any(|c| c.verdict == Verdict::Flaky) {
        Verdict::Flaky
    } else if cases.iter().any(|c| c.verdict == Verdict::Known) {
        Verdict::Known
    } else {
        Verdict::Pass
    }
}

/// The host's verdicts for one boot that was expected to report the
/// top-level tests `expected` (in order).
pub fn judge(kernel: &str, expected: &[String], outcome: &BootOutcome) -> Vec<WorkloadRun> {
    let mut runs = Vec::new();
    let run = |workload: &str, cases: Vec<CaseResult>| WorkloadRun::new(kernel, workload, cases);
    let top = &outcome.ktap.cases;
    for name in expected {
        let Some(result) = top.iter().find(|c| &c.name == name) else {
            let detail = format!("never reported (boot: {})", outcome.end.describe());
            runs.push(run(name, vec![fail("(result)", detail)]));
            continue;
        };
        let mut cases = Vec::new();
        if let Some(sub) = &result.subtests {
            cases.extend(sub.cases.iter().map(case_result));
            for n in sub.missing() {
                cases.push(fail(
                    &format!("case {n}"),
                    format!("planned but never reported (boot: {})", outcome.end.describe()),
                ));
            }
        }
        let reason = result.reason.clone().unwrap_or_default();
        if cases.is_empty() {
            let detail = if result.verdict == Verdict::Fail || result.subtests.is_none() {
                reason
            } else {
                format!("reported {:?} without any case (workload printed no result)", result.verdict)
            };
            let verdict = if result.subtests.is_some() { Verdict::Fail } else { result.verdict };
            cases.push(CaseResult { duration_ms: ms(result.duration), ..CaseResult::new(name, verdict, detail) });
        } else if result.verdict == Verdict::Fail && !cases.iter().any(|c| c.verdict == Verdict::Fail) {
            // E.g. the workload crashed after its last case.
            cases.push(fail("(workload)", reason));
        }
        cases.extend(
            outcome
                .host_checks
                .iter()
                .filter(|c| &c.workload == name)
                .map(|c| CaseResult::new(&c.name, c.verdict, c.detail.clone())),
        );
        runs.push(run(name, cases));
    }
    for extra in top.iter().filter(|c| !expected.contains(&c.name)) {
        let detail = match &extra.reason {
            Some(reason) if extra.name == OVERFLOW_CASE => reason.clone(),
            _ => "reported but not requested".into(),
        };
        runs.push(run(&extra.name, vec![fail("(result)", detail)]));
    }
    if !outcome.end.is_clean() {
        let mut detail = outcome.end.describe();
        if let End::KernelReport { report } = &outcome.end {
            for l in report.lines.iter().take(12) {
                detail.push('\n');
                detail.push_str(l);
            }
        }
        runs.push(run("boot", vec![fail(&outcome.end.name(), detail)]));
    }
    runs
}

/// A boot of `kernel` asked for `config`, judged, and its record.
pub fn judged(
    kernel: &str,
    prepared: &crate::vm::request::Prepared,
    config: &dax_seal_protocol::RunConfig,
    outcome: &BootOutcome,
) -> (Vec<WorkloadRun>, BootRecord) {
    (judge(kernel, &config.expected_tests(), outcome), BootRecord::of(kernel, prepared, outcome))
}

/// The judged boots of several kernels (each kernel's runs and its boots,
/// reruns included), in order, as one list of runs and one of boots; the
/// first error stops it.
pub fn gather<B: IntoIterator<Item = BootRecord>>(
    booted: Vec<Result<(Vec<WorkloadRun>, B)>>,
) -> Result<(Vec<WorkloadRun>, Vec<BootRecord>)> {
    let mut runs = Vec::new();
    let mut boots = Vec::new();
    for b in booted {
        let (r, kernel_boots) = b?;
        runs.extend(r);
        boots.extend(kernel_boots);
    }
    Ok((runs, boots))
}

/// The verdict of a whole run, campaign, matrix cell or merge: it fails
/// when any workload failed, or was flaky and `flaky_fails`, or nothing was
/// judged at all. A boot that did not end cleanly is already a failed
/// `boot` workload (`judge`), unless a task ended it on purpose (a crash
/// point). Every task decides here.
pub fn verdict_of(runs: &[WorkloadRun], flaky_fails: bool) -> Verdict {
    let fails = |v: Verdict| v == Verdict::Fail || (flaky_fails && v == Verdict::Flaky);
    if runs.is_empty() || runs.iter().any(|r| fails(r.verdict)) {
        Verdict::Fail
    } else {
        Verdict::Pass
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Fail => "FAIL",
        other => other.as_str(),
    }
}

/// Folds a rerun of the failed workloads (`attempt` 1, 2, ...) into the
/// runs of the attempts before it, case by case (by kernel, label,
/// workload and case name): a
/// case that failed before and passes now is flaky, one that fails again
/// stays failed, and each carries the reasons of its earlier failed
/// attempts. A failed run the rerun did not report again (a `boot` entry
/// for a hang that did not recur) becomes flaky. Runs that did not fail
/// keep their earlier verdicts; a failure new in the rerun is added. A
/// case that did not fail before keeps its earlier result unless the rerun
/// saw it fail: a rerun of only the failed tests (fstests' `check -L`)
/// loses none of the tests that passed.
pub fn fold_rerun(earlier: Vec<WorkloadRun>, mut rerun: Vec<WorkloadRun>, attempt: u32) -> Vec<WorkloadRun> {
    let before = |c: &CaseResult| {
        let mut attempts = c.attempts.clone();
        attempts.push(format!("attempt {}: {}", attempt - 1, c.detail.lines().next().unwrap_or("failed")));
        attempts
    };
    let mut out = Vec::new();
    for e in earlier {
        let same = |r: &WorkloadRun| (&r.kernel, &r.label, &r.workload) == (&e.kernel, &e.label, &e.workload);
        let again = rerun.iter().position(same).map(|i| rerun.remove(i));
        if e.verdict != Verdict::Fail {
            out.push(e);
            continue;
        }
        let mut new = again.map_or_else(Vec::new, |r| r.cases);
        let mut take = |name: &str| new.iter().position(|c| c.name == name).map(|i| new.remove(i));
        let mut cases = Vec::new();
        for old in &e.cases {
            let c = match (old.verdict, take(&old.name)) {
                (Verdict::Fail, Some(mut c)) => {
                    c.attempts = before(old);
                    if c.verdict == Verdict::Pass {
                        c.verdict = Verdict::Flaky;
                    }
                    c
                }
                (Verdict::Fail, None) => CaseResult {
                    verdict: Verdict::Flaky,
                    detail: format!("did not happen again on attempt {attempt}"),
                    attempts: before(old),
                    ..old.clone()
                },
                (_, Some(c)) if c.verdict == Verdict::Fail => c,
                _ => old.clone(),
            };
            cases.push(c);
        }
        cases.extend(new);
        out.push(WorkloadRun { verdict: overall(&cases), cases, ..e });
    }
    out.extend(rerun.into_iter().filter(|r| r.verdict == Verdict::Fail));
    out
}

/// The table printed at the end of a run.
/// A case detail as the summary shows it: indented, at most 40 lines.
fn shown_detail(detail: &str) -> String {
    const MAX: usize = 40;
    let lines: Vec<&str> = detail.lines().collect();
    let mut text = lines.iter().take(MAX).copied().collect::<Vec<_>>().join("\n    ");
    if lines.len() > MAX {
        text.push_str(&format!("\n    ... {} more lines in results.json", lines.len() - MAX));
    }
    text
}

/// Rows as left-aligned columns two spaces apart, each column as wide as
/// its widest cell up to `max` characters.
pub fn columns<'a, R: AsRef<[String]> + 'a>(rows: impl Iterator<Item = &'a R> + Clone, max: usize) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows.clone() {
        let row = row.as_ref();
        widths.resize(widths.len().max(row.len()), 0);
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count()).min(max);
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.as_ref().iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

/// One kernel's verdicts on one line, as a run prints them when that kernel
/// is done: each workload's verdict, then the cases that failed.
pub fn kernel_line(kernel: &str, runs: &[WorkloadRun]) -> String {
    let workloads: Vec<String> = runs.iter().map(|r| format!("{} {}", r.workload, verdict_word(r.verdict))).collect();
    let failed: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.cases.iter().filter(|c| c.verdict == Verdict::Fail).map(move |c| format!("{} / {}", r.workload, c.name))
        })
        .collect();
    let mut line = format!("{kernel} verdicts: {}", workloads.join(", "));
    if !failed.is_empty() {
        line.push_str(&format!("; failed: {}", failed.join(", ")));
    }
    line
}

pub fn summary(results: &Results) -> String {
    let mut out = String::new();
    let rows: Vec<[String; 5]> = results
        .runs
        .iter()
        .flat_map(|r| {
            r.cases.iter().map(move |c| {
                [
                    r.who(),
                    r.workload.clone(),
                    c.name.clone(),
                    verdict_word(c.verdict).to_string(),
                    format!("{:.2}s", c.duration_ms as f64 / 1000.0),
                ]
            })
        })
        .collect();
    let header = ["kernel", "workload", "case", "verdict", "duration"].map(String::from);
    out.push_str(&columns(std::iter::once(&header).chain(&rows), 60));
    for r in &results.runs {
        // What a failed case says, and what a user's --exec command printed.
        let shown = |c: &&CaseResult| (c.verdict != Verdict::Pass || r.workload == "exec") && !c.detail.is_empty();
        for c in r.cases.iter().filter(shown) {
            let _ = writeln!(out, "\n{} {} / {}: {}", r.who(), r.workload, c.name, shown_detail(&c.detail));
            for a in &c.attempts {
                let _ = writeln!(out, "    earlier {a}");
            }
        }
    }
    let _ = writeln!(out);
    for b in &results.boots {
        let first = b.first_ktap_ms.map_or("never".to_string(), |t| format!("{:.1} s", t as f64 / 1000.0));
        let _ = writeln!(
            out,
            "{}: {} in {:.1} s on {} (first result at {first}); console: {}",
            b.who(),
            b.end.describe().lines().next().unwrap_or(""),
            b.elapsed_ms as f64 / 1000.0,
            b.accel,
            b.console_log.display()
        );
    }
    if results.xtask_peak_rss_kib > 0 {
        let _ = writeln!(out, "xtask peak memory: {:.1} MiB", results.xtask_peak_rss_kib as f64 / 1024.0);
    }
    if !results.rates.is_empty() {
        let unsteady: Vec<&CaseRate> = results.rates.iter().filter(|c| c.failed + c.flaky > 0).collect();
        let _ = writeln!(
            out,
            "\nover the loops: {} case(s) passed every time{}",
            results.rates.len() - unsteady.len(),
            if unsteady.is_empty() { "" } else { "; these did not:" }
        );
        let rows: Vec<[String; 5]> = unsteady
            .iter()
            .map(|c| {
                [
                    c.kernel.clone(),
                    c.workload.clone(),
                    c.case.clone(),
                    format!("{} failed, {} flaky of {}", c.failed, c.flaky, c.loops),
                    format!("failure rate {:.0}%", 100.0 * c.failure_rate),
                ]
            })
            .collect();
        out.push_str(&columns(rows.iter(), 60));
    }
    let count = |v: Verdict| results.runs.iter().flat_map(|r| &r.cases).filter(|c| c.verdict == v).count();
    let _ = writeln!(
        out,
        "\n{}: {} passed, {} failed, {} skipped{}{}",
        if results.verdict == Verdict::Pass { "PASS" } else { "FAIL" },
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Skip),
        match count(Verdict::Flaky) {
            0 => String::new(),
            n => format!(", {n} flaky (failed, then passed on a rerun)"),
        },
        match count(Verdict::Known) {
            0 => String::new(),
            n => format!(", {n} known failures (listed in the known-failure file, each with its reason)"),
        }
    );
    out
}

/// Text made safe inside XML and HTML elements and attribute values.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters at all.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one testsuite per kernel and workload.
pub fn junit(results: &Results) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"dax-seal\">\n");
    for r in &results.runs {
        let n = |v: Verdict| r.cases.iter().filter(|c| c.verdict == v).count();
        let secs: f64 = r.cases.iter().map(|c| c.duration_ms as f64 / 1000.0).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}/{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{secs:.3}\">",
            xml_escape(&r.who()),
            xml_escape(&r.workload),
            r.cases.len(),
            n(Verdict::Fail),
            n(Verdict::Skip)
        );
        for c in &r.cases {
            let _ = write!(
                out,
                "    <testcase classname=\"{}.{}\" name=\"{}\" time=\"{:.3}\"",
                xml_escape(&r.who()),
                xml_escape(&r.workload),
                xml_escape(&c.name),
                c.duration_ms as f64 / 1000.0
            );
            let first = xml_escape(c.detail.lines().next().unwrap_or(""));
            match c.verdict {
                Verdict::Pass => out.push_str("/>\n"),
                Verdict::Fail => {
                    // A failure that failed on its reruns too: the earlier
                    // ones after it, in Surefire's form.
                    let earlier: String = c
                        .attempts
                        .iter()
                        .map(|a| format!("      <rerunFailure message=\"{}\"/>\n", xml_escape(a)))
                        .collect();
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{first}\">{}</failure>\n{earlier}    </testcase>",
                        xml_escape(&c.detail)
                    );
                }
                Verdict::Skip => {
                    let _ = writeln!(out, ">\n      <skipped message=\"{first}\"/>\n    </testcase>");
                }
                // JUnit has no expected failure; CI systems show a skip
                // with the reason, as pytest does for xfail.
                Verdict::Known => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped type=\"known-failure\" message=\"known failure: {first}\">{}</skipped>\n    </testcase>",
                        xml_escape(&c.detail)
                    );
                }
                // Surefire's form, which Jenkins, GitLab and others read: a
                // passed test with the failures it had on earlier runs.
                Verdict::Flaky => {
                    out.push_str(">\n");
                    for a in &c.attempts {
                        let _ = writeln!(out, "      <flakyFailure message=\"{}\"/>", xml_escape(a));
                    }
                    out.push_str("    </testcase>\n");
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// The host's verdicts as KTAP: one test per kernel and workload.
pub fn ktap(results: &Results) -> String {
    let mut w = Writer::new(Vec::new());
    let outcome = |v: Verdict, detail: &str| match v {
        Verdict::Pass => TestResult::Pass,
        Verdict::Fail => TestResult::Fail(detail.lines().next().unwrap_or("failed").to_string()),
        Verdict::Skip => TestResult::Skip(detail.lines().next().unwrap_or("").to_string()),
        Verdict::Known => TestResult::Known(detail.lines().next().unwrap_or("").to_string()),
        // KTAP has no flaky directive: an ok, with the earlier attempts as
        // diagnostics before it.
        Verdict::Flaky => TestResult::Pass,
    };
    let mut text = Vec::new();
    let _ = w.header().and_then(|()| w.plan(results.runs.len()));
    text.extend(w.into_inner());
    for (i, r) in results.runs.iter().enumerate() {
        let name = format!("{}:{}", r.who(), r.workload);
        let mut sub = Writer::nested(Vec::new(), 1);
        let _ = sub.subtest_header(&name).and_then(|()| sub.plan(r.cases.len()));
        for (j, c) in r.cases.iter().enumerate() {
            if c.verdict == Verdict::Flaky {
                let _ = sub.diag(&format!("flaky: passed on a rerun after {} failed attempt(s)", c.attempts.len()));
            }
            for a in &c.attempts {
                let _ = sub.diag(&format!("earlier {a}"));
            }
            let _ = sub.result(j + 1, &c.name, &outcome(c.verdict, &c.detail));
        }
        text.extend(sub.into_inner());
        let mut top = Writer::new(Vec::new());
        let failed = r.cases.iter().filter(|c| c.verdict == Verdict::Fail).count();
        let _ = top.result(i + 1, &name, &outcome(r.verdict, &format!("{failed} case(s) failed")));
        text.extend(top.into_inner());
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Writes results.json, junit.xml, results.ktap, summary.txt and
/// report.html into `dir`.
pub fn write_all(dir: &Path, results: &Results) -> Result<String> {
    let summary = summary(results);
    paths::write_atomic(&dir.join("report.html"), super::html::page(results).as_bytes())?;
    paths::write_atomic(&dir.join("results.json"), &serde_json::to_vec_pretty(results)?)?;
    paths::write_atomic(&dir.join("junit.xml"), junit(results).as_bytes())?;
    paths::write_atomic(&dir.join("results.ktap"), ktap(results).as_bytes())?;
    paths::write_atomic(&dir.join("summary.txt"), summary.as_bytes())?;
    Ok(summary)
}

/// A boot that sent `stream` on the results port and ended as `end`, for
/// the tests of everything that reads judged results.
#[cfg(test)]
pub fn test_outcome(stream: &str, end: End) -> BootOutcome {
    let mut p = dax_seal_protocol::ktap::Parser::new();
    for (i, l) in stream.lines().enumerate() {
        p.feed(l, Duration::from_millis(100 * i as u64));
    }
    let (ktap, ignored) = p.finish(Duration::from_secs(9));
    BootOutcome {
        end,
        ktap,
        ignored,
        elapsed: Duration::from_secs(9),
        first_ktap_at: Some(Duration::from_secs(1)),
        console_log: "c.log".into(),
        ktap_log: "k.ktap".into(),
        command_line: String::new(),
        console_tail: Vec::new(),
        host_checks: Vec::new(),
        accel: crate::vm::qemu::Accel::Tcg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(stream: &str, end: End) -> BootOutcome {
        test_outcome(stream, end)
    }

    #[test]
    fn figures_leave_the_prose_and_are_kept_typed() {
        let s = "KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: w\n    1..1\n    # qd16 2063 MiB/s\n    \
                 # dax-seal figure virtio.read-fixed-qd16 2063.5 MiB/s\n    # dax-seal figure bad NaN x\n    ok 1 a\nok 1 w\n";
        let runs = judge("patched", &names(&["w"]), &outcome(s, End::PoweredOff));
        let case = &runs[0].cases[0];
        assert_eq!(case.figures, [Figure::new("virtio.read-fixed-qd16", 2063.5, "MiB/s")]);
        // A malformed figure line stays in the prose, where a reader sees it.
        assert_eq!(case.detail, "qd16 2063 MiB/s\ndax-seal figure bad NaN x");
        let results = Results::of_runs("r", runs);
        assert_eq!(results.figure("patched", "w", "virtio.read-fixed-qd16").unwrap(), 2063.5);
        let missing = results.figure("patched", "w", "nvme.read-fixed-qd16").unwrap_err().to_string();
        assert!(missing.contains("no figure nvme.read-fixed-qd16") && missing.contains("virtio.read-fixed-qd16"));
        let absent = results.figure("baseline", "w", "x").unwrap_err().to_string();
        assert!(absent.contains("did not run on the baseline kernel"), "{absent}");
        // results.json is read back through the same types, figures included.
        let text = serde_json::to_vec(&results).unwrap();
        let back: Results = serde_json::from_slice(&text).unwrap();
        assert_eq!(back.runs, results.runs);
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn verdicts(runs: &[WorkloadRun]) -> Vec<(&str, Verdict)> {
        runs.iter().map(|r| (r.workload.as_str(), r.verdict)).collect()
    }

    const GOOD: &str = "KTAP version 1\n1..2\n    KTAP version 1\n    # Subtest: setup\n    1..1\n    ok 1 pmem0\nok 1 setup\n    KTAP version 1\n    # Subtest: w\n    1..2\n    ok 1 a\n    ok 2 b # SKIP no\nok 2 w\n";

    #[test]
    fn a_label_says_which_boot_and_the_kernel_stays_what_was_booted() {
        let runs: Vec<WorkloadRun> = judge("patched", &names(&["setup", "w"]), &outcome(GOOD, End::PoweredOff))
            .into_iter()
            .map(|r| r.labelled("model point 3 image 1"))
            .collect();
        assert_eq!(runs[1].kernel, "patched");
        assert_eq!(runs[1].who(), "patched model point 3 image 1");
        let results = Results::of_runs("r", runs);
        assert!(summary(&results).contains("patched model point 3 image 1  w"), "{}", summary(&results));
        assert!(junit(&results).contains("<testsuite name=\"patched model point 3 image 1/w\""));
        let back: Results = serde_json::from_slice(&serde_json::to_vec(&results).unwrap()).unwrap();
        assert_eq!(back.runs, results.runs);
        // A bench figure comes from a plain run only.
        assert!(results.figure("patched", "w", "x").unwrap_err().to_string().contains("did not run"));
        let host = WorkloadRun::new("", "missing cells", Vec::new()).labelled("matrix");
        assert_eq!(host.who(), "matrix");
        assert_eq!(verdict_of(&[], false), Verdict::Fail, "a task that judged nothing fails");
    }

    #[test]
    fn a_rerun_makes_a_passing_failure_flaky_and_keeps_every_reason() {
        let case = |name: &str, v: Verdict, detail: &str| CaseResult::new(name, v, detail.into());
        let run = |w: &str, cases: Vec<CaseResult>| WorkloadRun::new("patched", w, cases);
        let first = vec![
            run("setup", vec![case("pmem0", Verdict::Pass, "")]),
            run("w", vec![case("a", Verdict::Pass, ""), case("b", Verdict::Fail, "b broke\nmore")]),
            run("x", vec![case("c", Verdict::Fail, "c broke")]),
            run("boot", vec![case("hang", Verdict::Fail, "hang: no output for 120 s")]),
        ];
        // Attempt 1: w's b passes, x's c fails again, the hang is gone, setup reruns.
        let second = vec![
            run("setup", vec![case("pmem0", Verdict::Pass, "")]),
            run("w", vec![case("a", Verdict::Pass, ""), case("b", Verdict::Pass, "")]),
            run("x", vec![case("c", Verdict::Fail, "c broke again")]),
        ];
        let folded = fold_rerun(first, second, 1);
        assert_eq!(
            verdicts(&folded),
            [("setup", Verdict::Pass), ("w", Verdict::Flaky), ("x", Verdict::Fail), ("boot", Verdict::Flaky)]
        );
        assert_eq!(folded[1].cases[1].attempts, ["attempt 0: b broke"]);
        assert_eq!(folded[2].cases[0].attempts, ["attempt 0: c broke"]);
        assert!(folded[3].cases[0].detail.contains("did not happen again on attempt 1"));
        assert_eq!(verdict_of(&folded, false), Verdict::Fail, "x still fails");
        // Attempt 2: x passes; every earlier reason is kept, oldest first.
        let third = vec![run("x", vec![case("c", Verdict::Pass, "")])];
        let folded = fold_rerun(folded, third, 2);
        assert_eq!(folded[2].verdict, Verdict::Flaky);
        assert_eq!(folded[2].cases[0].attempts, ["attempt 0: c broke", "attempt 1: c broke again"]);
        assert_eq!(verdict_of(&folded, false), Verdict::Pass, "flaky passes by default");
        assert_eq!(verdict_of(&folded, true), Verdict::Fail, "--flaky-fails");
        let results = Results::of_runs("r", folded);
        let x = junit(&results);
        assert!(x.contains("<flakyFailure message=\"attempt 1: c broke again\"/>"), "{x}");
        let k = ktap(&results);
        assert!(k.contains("# flaky: passed on a rerun after 2 failed attempt(s)") && k.contains("ok 1 c"), "{k}");
        assert!(summary(&results).contains("3 flaky (failed, then passed on a rerun)"), "{}", summary(&results));
        // A failure that fails on every rerun keeps its reruns in JUnit.
        let stuck = fold_rerun(
            vec![run("x", vec![case("c", Verdict::Fail, "one")])],
            vec![run("x", vec![case("c", Verdict::Fail, "two")])],
            1,
        );
        let results = Results { runs: stuck, ..results };
        assert!(junit(&results)
            .contains("<failure message=\"two\">two</failure>\n      <rerunFailure message=\"attempt 0: one\"/>"));
    }

    /// fstests' reruns boot only the failed tests: the tests that passed on
    /// the first attempt stay, in their place, with their own details.
    #[test]
    fn a_rerun_of_only_the_failed_cases_loses_none_of_the_others() {
        let case = |name: &str, v: Verdict, detail: &str| CaseResult::new(name, v, detail.into());
        let run = |cases: Vec<CaseResult>| WorkloadRun::new("patched-7.3", "fstests-dax", cases);
        let first = vec![run(vec![
            case("fstests set-up and test list", Verdict::Pass, "14 tests selected"),
            case("generic/413", Verdict::Pass, "35 s"),
            case("xfs/550", Verdict::Fail, "output mismatch"),
            case("generic/470", Verdict::Skip, "needs LOGWRITES_DEV"),
        ])];
        let second = vec![run(vec![
            case("fstests set-up and test list", Verdict::Pass, "1 tests selected"),
            case("xfs/550", Verdict::Pass, ""),
        ])];
        let folded = fold_rerun(first, second, 1);
        let got: Vec<(&str, Verdict, &str)> =
            folded[0].cases.iter().map(|c| (c.name.as_str(), c.verdict, c.detail.as_str())).collect();
        assert_eq!(
            got,
            [
                ("fstests set-up and test list", Verdict::Pass, "14 tests selected"),
                ("generic/413", Verdict::Pass, "35 s"),
                ("xfs/550", Verdict::Flaky, ""),
                ("generic/470", Verdict::Skip, "needs LOGWRITES_DEV"),
            ]
        );
        // A case that passed before and fails in the rerun counts.
        let first = vec![run(vec![case("a", Verdict::Pass, ""), case("b", Verdict::Fail, "b")])];
        let second = vec![run(vec![case("a", Verdict::Fail, "a now"), case("b", Verdict::Pass, "")])];
        let folded = fold_rerun(first, second, 1);
        assert_eq!((folded[0].cases[0].verdict, folded[0].verdict), (Verdict::Fail, Verdict::Fail));
    }

    #[test]
    fn loops_count_each_case_and_the_summary_names_the_unsteady_ones() {
        let case = |name: &str, v: Verdict| CaseResult::new(name, v, String::new());
        let looped = |i: u32, b: Verdict| {
            WorkloadRun::new("patched", "w", vec![case("a", Verdict::Pass), case("b", b)])
                .labelled(&format!("loop {i}"))
        };
        let runs = vec![
            looped(1, Verdict::Pass),
            looped(2, Verdict::Fail),
            looped(3, Verdict::Flaky),
            looped(4, Verdict::Fail),
        ];
        let r = rates(&runs);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].loops, r[0].passed, r[0].failed), (4, 4, 0));
        assert_eq!((r[1].passed, r[1].failed, r[1].flaky, r[1].failure_rate), (1, 2, 1, 0.5));
        let results = Results { rates: r, ..Results::of_runs("r", runs) };
        let s = summary(&results);
        assert!(s.contains("over the loops: 1 case(s) passed every time; these did not:"), "{s}");
        assert!(s.contains("2 failed, 1 flaky of 4  failure rate 50%"), "{s}");
        let back: Results = serde_json::from_slice(&serde_json::to_vec(&results).unwrap()).unwrap();
        assert_eq!(back.rates, results.rates);
    }

    #[test]
    fn clean_run_passes() {
        let runs = judge("patched", &names(&["setup", "w"]), &outcome(GOOD, End::PoweredOff));
        assert_eq!(verdicts(&runs), [("setup", Verdict::Pass), ("w", Verdict::Pass)]);
        assert_eq!(runs[1].cases[1].verdict, Verdict::Skip);
        assert_eq!(verdict_of(&runs, false), Verdict::Pass);
    }

    #[test]
    fn host_checks_join_their_workload_and_a_failed_one_fails_it() {
        let mut o = outcome(GOOD, End::PoweredOff);
        let check = |verdict| crate::vm::disks::Checked {
            workload: "w".into(),
            name: "host: landed".into(),
            verdict,
            detail: "d".into(),
        };
        o.host_checks = vec![check(Verdict::Pass)];
        let runs = judge("patched", &names(&["setup", "w"]), &o);
        assert_eq!(verdicts(&runs), [("setup", Verdict::Pass), ("w", Verdict::Pass)]);
        assert_eq!(runs[1].cases.last().map(|c| c.name.as_str()), Some("host: landed"));
        o.host_checks = vec![check(Verdict::Fail)];
        let runs = judge("patched", &names(&["setup", "w"]), &o);
        assert_eq!(verdicts(&runs), [("setup", Verdict::Pass), ("w", Verdict::Fail)]);
    }

    #[test]
    fn unreported_workload_fails() {
        let runs = judge("patched", &names(&["setup", "w", "x"]), &outcome(GOOD, End::PoweredOff));
        assert_eq!(runs[2].verdict, Verdict::Fail);
        assert!(runs[2].cases[0].detail.contains("never reported"));
        assert_eq!(verdict_of(&runs, false), Verdict::Fail);
    }

    #[test]
    fn silent_workload_fails() {
        let s = "KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: quiet\nnot ok 1 quiet # workload printed no result\n";
        let runs = judge("b", &names(&["quiet"]), &outcome(s, End::PoweredOff));
        assert_eq!(verdicts(&runs), [("quiet", Verdict::Fail)]);
        // Even if the guest had claimed ok.
        let s = "KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: quiet\nok 1 quiet\n";
        let runs = judge("b", &names(&["quiet"]), &outcome(s, End::PoweredOff));
        assert_eq!(verdicts(&runs), [("quiet", Verdict::Fail)]);
    }

    #[test]
    fn guest_ok_over_failed_or_missing_case_fails() {
        let s = "KTAP version 1\n1..1\n    KTAP version 1\n    1..3\n    ok 1 a\n    not ok 2 b # EINVAL\nok 1 w\n";
        let runs = judge("p", &names(&["w"]), &outcome(s, End::PoweredOff));
        let cases: Vec<_> = runs[0].cases.iter().map(|c| (c.name.as_str(), c.verdict)).collect();
        assert_eq!(cases, [("a", Verdict::Pass), ("b", Verdict::Fail), ("case 3", Verdict::Fail)]);
        assert_eq!(runs[0].verdict, Verdict::Fail);
    }

    #[test]
    fn abnormal_end_fails_even_with_all_results() {
        let report = crate::vm::console::KernelReport {
            kind: crate::vm::console::ReportKind::Warning,
            title: "WARNING: CPU: 0 PID: 1 at x.c:1 f".into(),
            lines: vec!["Modules linked in:".into()],
        };
        let runs = judge("p", &names(&["setup", "w"]), &outcome(GOOD, End::KernelReport { report }));
        assert_eq!(verdicts(&runs), [("setup", Verdict::Pass), ("w", Verdict::Pass), ("boot", Verdict::Fail)]);
        assert_eq!(runs[2].cases[0].name, "kernel WARNING");
        assert!(runs[2].cases[0].detail.contains("x.c:1"));
        let runs = judge("p", &names(&["setup"]), &outcome(GOOD, End::Hang { silent_secs: 20 }));
        assert_eq!(runs.last().unwrap().cases[0].name, "hang");
    }

    #[test]
    fn workload_crash_after_last_case_fails() {
        let s = "KTAP version 1\n1..1\n    KTAP version 1\n    1..1\n    ok 1 a\nnot ok 1 w # workload killed by signal 11 (SIGSEGV)\n";
        let runs = judge("p", &names(&["w"]), &outcome(s, End::PoweredOff));
        assert_eq!(runs[0].verdict, Verdict::Fail);
        assert!(runs[0].cases[1].detail.contains("SIGSEGV"));
    }

    fn sample_results() -> Results {
        let runs = judge("patched", &names(&["setup", "w", "gone"]), &outcome(GOOD, End::PoweredOff));
        Results::of_runs("r1", runs)
    }

    #[test]
    fn junit_is_escaped_and_counted() {
        let mut r = sample_results();
        r.runs[0].cases[0].name = "a<b & \"c\"\u{1}".into();
        let x = junit(&r);
        assert!(x.contains("name=\"a&lt;b &amp; &quot;c&quot;\\x01\""), "{x}");
        assert!(x.contains("<testsuite name=\"patched/gone\" tests=\"1\" failures=\"1\" skipped=\"0\""), "{x}");
        assert!(x.contains("<skipped message=\"no\"/>"), "{x}");
        assert_eq!(x.matches("<testsuite ").count(), 3);
    }

    #[test]
    fn host_ktap_parses_back() {
        let text = ktap(&sample_results());
        let mut p = dax_seal_protocol::ktap::Parser::new();
        for l in text.lines() {
            p.feed(l, Duration::ZERO);
        }
        let (top, ignored) = p.finish(Duration::ZERO);
        assert!(ignored.is_empty(), "{ignored:?}");
        let got: Vec<_> = top.cases.iter().map(|c| (c.name.as_str(), c.verdict)).collect();
        assert_eq!(
            got,
            [("patched:setup", Verdict::Pass), ("patched:w", Verdict::Pass), ("patched:gone", Verdict::Fail)]
        );
    }

    #[test]
    fn summary_lists_every_case_and_totals() {
        let s = summary(&sample_results());
        assert!(s.contains("patched  setup     pmem0"), "{s}");
        assert!(s.contains("FAIL: 2 passed, 1 failed, 1 skipped"), "{s}");
    }

    #[test]
    fn summary_shows_what_exec_commands_printed_and_bounds_it() {
        let mut r = sample_results();
        let case = |name: &str, detail: String| CaseResult::new(name, Verdict::Pass, detail);
        let long: Vec<String> = (0..50).map(|i| format!("line {i}")).collect();
        r.runs.push(WorkloadRun::new(
            "patched",
            "exec",
            vec![case("ls /mnt", "a\nb".into()), case("seq 50", long.join("\n"))],
        ));
        r.runs[0].cases.push(case("quiet pass", "not shown".into()));
        let s = summary(&r);
        assert!(s.contains("patched exec / ls /mnt: a\n    b"), "{s}");
        assert!(s.contains("line 39\n    ... 10 more lines in results.json") && !s.contains("line 40"), "{s}");
        assert!(!s.contains("not shown"), "{s}");
    }
}
