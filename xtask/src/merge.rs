//! `cargo xtask report DIR...`: merges the outputs of runs and matrix
//! shards (each a directory with results.json, and cells.json for matrix
//! shards) into one results.json, junit.xml, results.ktap and summary. With
//! `--matrix FILE`, every cell of that file must be in some shard's
//! cells.json: a missing cell fails the merge like a failed one, so a shard
//! that died without results cannot pass unnoticed.

use std::collections::BTreeMap;
use std::path::PathBuf;
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
    if let Some(file) = &args.matrix {
        let expected = spec::load(file)?;
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
        let mut nights: Vec<Results> = args
            .history
            .iter()
            .filter_map(|dir| {
                Results::read(dir)
                    .map_err(|e| eprintln!("[report] --history {}: skipped, not a report output: {e:#}", dir.display()))
                    .ok()
            })
            .collect();
        nights.push(results.clone());
        let cases = history::history(&nights, history::Rules::default());
        println!("{}", history::text(&cases, nights.len()));
        if let Some(list) = &args.known_failures {
            for (e, quiet) in history::gone(&known::load(list)?, &nights, args.gone_after) {
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
