//! `cargo xtask report DIR...`: merges the outputs of runs and matrix
//! shards (each a directory with results.json, and cells.json for matrix
//! shards) into one results.json, junit.xml, results.ktap and summary. With
//! `--matrix FILE`, every cell of that file must be in some shard's
//! cells.json: a missing cell fails the merge like a failed one, so a shard
//! that died without results cannot pass unnoticed. With `--history DIR...`,
//! earlier merged outputs of the same matrix file and kernel tree join
//! tonight's as history; any other directory is named and skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use dax_seal_protocol::ktap::Verdict;

use crate::matrix::{spec, CellResult};
use crate::paths;
use crate::report::results::{self, BootRecord, CaseResult, Results, WorkloadRun};
use crate::report::{history, html, known};

/// The merged results.json: a run's results plus where they came from and
/// every matrix cell's verdict.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Merged {
    #[serde(flatten)]
    pub results: Results,
    pub merged_from: Vec<String>,
    pub cells: Vec<CellResult>,
    /// The matrix file whose cells the merge checked (`--matrix`), named
    /// from the project root where it lies inside it: history only joins
    /// nights of the same file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<String>,
}

/// How a merge names the matrix file `file`: its path from the project
/// root when it lies inside the project, else the path as given.
pub fn matrix_name(file: &Path) -> String {
    let root = paths::project_root();
    let inside = |f: &Path, r: &Path| f.strip_prefix(r).ok().map(|p| p.display().to_string());
    match (file.canonicalize(), root.canonicalize()) {
        (Ok(f), Ok(r)) => inside(&f, &r).unwrap_or_else(|| f.display().to_string()),
        _ => file.display().to_string(),
    }
}

/// The kernel trees `runs` booted (from their kernels' names).
fn trees(runs: &[WorkloadRun]) -> BTreeSet<String> {
    runs.iter().filter_map(|r| crate::build::kernel::parse_kernel_name(&r.kernel)).map(|(_, t)| t.to_string()).collect()
}

/// An earlier output as `--history` reads it.
#[derive(serde::Deserialize)]
struct Night {
    #[serde(flatten)]
    results: Results,
    #[serde(default)]
    matrix: Option<String>,
    #[serde(default)]
    cells: Option<Vec<CellResult>>,
}

/// Boot deadlines from the earlier nights in `dirs` (oldest first) of the
/// matrix file `file` on kernel tree `tree`.
pub fn history_deadlines(dirs: &[PathBuf], file: &Path, tree: &str) -> history::Deadlines {
    let nights = nights("matrix", dirs, Some(&matrix_name(file)), &BTreeSet::from([tree.to_string()]));
    history::Deadlines::of(&nights)
}

/// The earlier nights in `dirs` (oldest first) that may join tonight's
/// history (see [`night`]); the others are named and skipped, on stderr
/// under `task`'s name.
fn nights(task: &str, dirs: &[PathBuf], matrix: Option<&str>, tonight: &BTreeSet<String>) -> Vec<Results> {
    let mut nights = Vec::new();
    for dir in dirs {
        match night(dir, matrix, tonight) {
            Ok((n, note)) => {
                if let Some(note) = note {
                    eprintln!("[{task}] --history {}: {note}", dir.display());
                }
                nights.push(n);
            }
            Err(why) => eprintln!("[{task}] --history {}: skipped, {why}", dir.display()),
        }
    }
    nights
}

/// The earlier night in `dir`, if it may join tonight's history: a merged
/// output of the same matrix file (`matrix`, tonight's `--matrix`) that
/// booted the same kernel trees (`tonight`). Otherwise why not, with what
/// it is; and a note when it joins without naming its matrix file (merged
/// before merges recorded theirs).
fn night(dir: &Path, matrix: Option<&str>, tonight: &BTreeSet<String>) -> Result<(Results, Option<String>), String> {
    let path = dir.join("results.json");
    let text = std::fs::read(&path).map_err(|e| format!("not a report output: reading {}: {e}", path.display()))?;
    let night: Night = serde_json::from_slice(&text)
        .map_err(|e| format!("not a report output: {} is not a results.json of this version: {e}", path.display()))?;
    let mut note = None;
    if let Some(m) = matrix {
        match (&night.matrix, &night.cells) {
            (Some(theirs), _) if theirs != m => {
                return Err(format!("merged from another matrix file ({theirs}; tonight's is {m})"));
            }
            (None, None) => return Err(format!("not a matrix merge (no cells; tonight merges {m})")),
            (None, Some(_)) => {
                note = Some(format!("names no matrix file (merged before merges recorded theirs); taken as {m}"))
            }
            _ => {}
        }
    }
    let theirs = trees(&night.results.runs);
    if !theirs.is_empty() && !tonight.is_empty() && &theirs != tonight {
        let list = |t: &BTreeSet<String>| t.iter().cloned().collect::<Vec<_>>().join(", ");
        return Err(format!("booted another kernel tree ({}; tonight {})", list(&theirs), list(tonight)));
    }
    Ok((night.results, note))
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The matrix file whose every cell must be present.
    #[arg(long, value_name = "FILE")]
    pub matrix: Option<PathBuf>,
    /// An earlier report or run directory: the page and the summary say
    /// which verdicts changed since it.
    #[arg(long, value_name = "DIR")]
    pub previous: Option<PathBuf>,
    /// An earlier merged output (repeatable, oldest first): the summary,
    /// history.json and report.html give each case's history over those
    /// nights and tonight's, with regressions, fixes, flaky and slow cases.
    #[arg(long = "history", value_name = "DIR")]
    pub history: Vec<PathBuf>,
    /// A known-failure list (tests/known-failures/<tree>.txt): with
    /// --history, its entries that matched no failure for --gone-after
    /// nights are named, so the list can shrink.
    #[arg(long, value_name = "FILE")]
    pub known_failures: Option<PathBuf>,
    /// Nights without a match after which a known failure is reported as
    /// no longer seen.
    #[arg(long, value_name = "N", default_value_t = 7)]
    pub gone_after: usize,
    /// Flaky workloads fail the merge (by default they are reported, and
    /// pass).
    #[arg(long)]
    pub flaky_fails: bool,
    /// Where to write the merged outputs (default images/report/<id>/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Output directories of runs or matrix shards (searched one level deep
    /// for results.json, as artifacts unpack).
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
}

/// The directories under `dir` (itself included) that hold results.json.
fn result_dirs(dir: &std::path::Path) -> Vec<PathBuf> {
    if dir.join("results.json").is_file() {
        return vec![dir.to_path_buf()];
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("results.json").is_file())
        .collect();
    found.sort();
    found
}

pub fn cmd(args: &ReportArgs) -> Result<ExitCode> {
    let mut runs: Vec<WorkloadRun> = Vec::new();
    let mut boots: Vec<BootRecord> = Vec::new();
    let mut cells: BTreeMap<String, CellResult> = BTreeMap::new();
    let mut sources = Vec::new();
    let mut benches: Vec<(String, Vec<html::Chart>)> = Vec::new();
    for dir in &args.dirs {
        let bench = dir.join("bench.json");
        if let Ok(text) = std::fs::read(&bench) {
            let figures = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a bench.json of this version", bench.display()))?;
            benches.push((dir.display().to_string(), figures));
        }
        let found = result_dirs(dir);
        if found.is_empty() && !bench.is_file() {
            bail!(
                "{}: no results.json here or one level down, and no bench.json; give run, shard or bench output \
                 directories",
                dir.display()
            );
        }
        for d in found {
            let these = Results::read(&d)?;
            runs.extend(these.runs);
            boots.extend(these.boots);
            if let Ok(text) = std::fs::read(d.join("cells.json")) {
                let list: Vec<CellResult> = serde_json::from_slice(&text)
                    .with_context(|| format!("{} is not a cells.json", d.join("cells.json").display()))?;
                cells.extend(list.into_iter().map(|c| (c.id.clone(), c)));
            }
            sources.push(d.display().to_string());
        }
    }
    let matrix_cells = args.matrix.as_deref().map(spec::load).transpose()?;
    if let Some(expected) = &matrix_cells {
        let missing: Vec<CaseResult> = expected
            .iter()
            .filter(|c| !cells.contains_key(&c.id))
            .map(|c| {
                let why = "missing: no shard reported this cell (its shard died, or did not run it)";
                CaseResult::new(&c.id, Verdict::Fail, why.into())
            })
            .collect();
        if !missing.is_empty() {
            runs.push(WorkloadRun::new("", "missing cells", missing).labelled("matrix"));
        }
    }
    // Bench pages alone carry figures, not verdicts: nothing to fail.
    let verdict = if runs.is_empty() && !benches.is_empty() {
        Verdict::Pass
    } else {
        results::verdict_of(&runs, args.flaky_fails)
    };
    let (run_id, out) = match &args.out {
        Some(dir) => {
            paths::ensure_dir(dir)?;
            (paths::timestamp(), dir.clone())
        }
        None => paths::new_output_dir("report")?,
    };
    // The summary lists the verdicts, not the boots of every shard.
    let results = Results { verdict, ..Results::of_runs(&run_id, runs) };
    let summary = results::summary(&results);
    let written = results::write_all(&out, &results).and_then(|_| {
        let merged = Merged {
            results: Results { boots, ..results.clone() },
            merged_from: sources.clone(),
            cells: cells.into_values().collect(),
            matrix: args.matrix.as_deref().map(matrix_name),
        };
        paths::write_atomic(&out.join("results.json"), &serde_json::to_vec_pretty(&merged)?)
    });
    let since = match &args.previous {
        Some(dir) => {
            let before = Results::read(dir).context("--previous")?.runs;
            let changed = html::changes(&before, &results.runs);
            let page = html::page_since(&results, Some((&dir.display().to_string(), &before)));
            Some((changed, page))
        }
        None => None,
    };
    println!("{summary}");
    written.context("the merged verdicts above could not be saved")?;
    let page = match &since {
        Some((_, page)) => page.clone(),
        None => html::page(&results),
    };
    let page = benches.iter().fold(page, |page, (source, figures)| html::with_figures(&page, source, figures));
    let page = if args.history.is_empty() {
        page
    } else {
        let matrix = args.matrix.as_deref().map(matrix_name);
        let mut nights = nights("report", &args.history, matrix.as_deref(), &trees(&results.runs));
        nights.push(results.clone());
        let cases = history::history(&nights, history::Rules::default());
        println!("{}", history::text(&cases, nights.len()));
        if let Some(list) = &args.known_failures {
            let cells = matrix_cells.as_deref().unwrap_or_default();
            let config_of = |r: &WorkloadRun| crate::matrix::cell_of(cells, &r.label).map(|c| c.axes.clone());
            let entries = known::load(list)?;
            if let (Some(file), Some(cells)) = (&args.matrix, &matrix_cells) {
                let axes: Vec<_> = cells.iter().map(|c| c.axes.clone()).collect();
                known::check_scopes(&entries, &axes, file)?;
            }
            for (e, quiet) in history::gone(&entries, &nights, args.gone_after, config_of) {
                println!("known failure no longer seen for {quiet} night(s): {} ({}): {}", e.case, e.origin, e.reason);
            }
        }
        paths::write_atomic(&out.join("history.json"), &serde_json::to_vec_pretty(&cases)?)?;
        html::with_section(&page, &history::html(&cases, nights.len()))
    };
    paths::write_atomic(&out.join("report.html"), page.as_bytes())?;
    if let Some((changed, _)) = since {
        println!(
            "since {}: {} verdict(s) changed",
            args.previous.as_deref().unwrap_or(std::path::Path::new("")).display(),
            changed.len()
        );
        for (case, before, now) in changed {
            println!("  {case}: {before} -> {now}");
        }
    }
    println!("merged {} result directories into {}", sources.len(), out.display());
    Ok(results.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::CaseResult;

    fn write_night(dir: &Path, kernel: &str, matrix: Option<&str>, cells: bool) {
        let run = WorkloadRun::new(kernel, "w", vec![CaseResult::new("c", Verdict::Pass, String::new())]);
        let mut json = serde_json::to_value(Results::of_runs("n", vec![run])).unwrap();
        if let Some(m) = matrix {
            json["matrix"] = m.into();
        }
        if cells {
            json["cells"] = serde_json::json!([]);
            json["merged_from"] = serde_json::json!([]);
        }
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("results.json"), serde_json::to_vec(&json).unwrap()).unwrap();
    }

    /// History joins nights of the same matrix file and tree; another
    /// file, another tree, a plain run or a directory that is no output at
    /// all is named with the reason, and an older merge that names no file
    /// joins with a note.
    #[test]
    fn history_nights_from_another_matrix_or_tree_are_skipped_with_the_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let d = |n: &str| tmp.path().join(n);
        let nightly = Some("tests/matrix/nightly.toml");
        write_night(&d("same"), "patched-7.3", nightly, true);
        write_night(&d("other-file"), "patched-7.3", Some("tests/matrix/smoke.toml"), true);
        write_night(&d("other-tree"), "patched-6.12", nightly, true);
        write_night(&d("old-merge"), "patched-7.3", None, true);
        write_night(&d("a-run"), "patched-7.3", None, false);
        std::fs::create_dir_all(d("empty")).unwrap();
        let tonight: BTreeSet<String> = ["7.3".to_string()].into();
        let judge = |n: &str| night(&d(n), nightly, &tonight).map(|(_, note)| note);
        assert_eq!(judge("same"), Ok(None));
        assert_eq!(
            judge("other-file").unwrap_err(),
            "merged from another matrix file (tests/matrix/smoke.toml; tonight's is tests/matrix/nightly.toml)"
        );
        assert_eq!(judge("other-tree").unwrap_err(), "booted another kernel tree (6.12; tonight 7.3)");
        assert!(judge("old-merge").unwrap().unwrap().contains("names no matrix file"));
        assert!(judge("a-run").unwrap_err().starts_with("not a matrix merge"));
        assert!(judge("empty").unwrap_err().starts_with("not a report output"));
        // Without --matrix tonight, any output of the same tree joins.
        assert!(night(&d("a-run"), None, &tonight).is_ok());
        assert!(night(&d("other-tree"), None, &tonight).is_err());
    }

    #[test]
    fn a_matrix_file_is_named_from_the_project_root() {
        let root = paths::project_root();
        assert_eq!(matrix_name(&root.join("tests/matrix/../matrix/nightly.toml")), "tests/matrix/nightly.toml");
        assert_eq!(matrix_name(Path::new("/no/such/m.toml")), "/no/such/m.toml");
    }
}
