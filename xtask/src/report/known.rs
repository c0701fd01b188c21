//! Known failures as data: a checked-in list per kernel tree
//! (`tests/known-failures/<tree>.txt`), one entry a line:
//!
//! ```text
//! CASE | RATE | REASON | TRACKED [| WHERE]
//! ```
//!
//! CASE names a case as report.html does (`kernel-and-label / workload /
//! case`), `*` matching any run of characters (a kernel, a matrix cell);
//! RATE is the failure rate observed when the entry was written (`30%`);
//! REASON says why it fails; TRACKED is a link or a sentence saying where
//! it is followed. WHERE, if given, scopes the entry to a configuration:
//! `axis=name` pairs separated by commas, on the matrix's axes
//! ([`AXES`]: `topology=adr, machine=two-cpu`; `*` in a name as in
//! CASE); such an entry applies only to the matrix cells with those names.
//! `#` starts a comment line.
//!
//! Applied to a task's runs, a failed case an entry matches becomes
//! `known` with the entry's reason, rate and tracking; an unlisted failure
//! stays failed; an entry whose cases all passed is "no longer seen", so
//! the list can shrink; a scoped entry whose configuration the task did
//! not run is neither.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use dax_seal_protocol::ktap::Verdict;

use super::results::{overall, WorkloadRun};

/// The axes a matrix cell has a name on, which entries scope by: its work
/// (one of `suite`, `scenario` or `fstests`), `kernel` (not for scenarios,
/// whose steps name theirs), `topology`, `filesystem` and `machine`.
pub const AXES: [&str; 7] = ["suite", "scenario", "fstests", "kernel", "topology", "filesystem", "machine"];

/// A run's configuration: its matrix cell's name on each axis.
pub type Axes = std::collections::BTreeMap<&'static str, String>;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub case: String,
    /// Percent, 0 to 100.
    pub rate: f64,
    pub reason: String,
    pub tracked: String,
    /// The configuration it is limited to (axis, name), empty for all.
    pub scope: Vec<(String, String)>,
    /// Where it was written (`file:line`).
    pub origin: String,
}

impl Entry {
    /// Whether the entry covers a run made in `config` (a matrix cell's
    /// axes; None for a run outside the matrix, which only an entry
    /// without a scope covers).
    pub fn covers(&self, config: Option<&Axes>) -> bool {
        self.scope.is_empty()
            || config.is_some_and(|axes| {
                self.scope.iter().all(|(axis, name)| axes.get(axis.as_str()).is_some_and(|n| matches(name, n)))
            })
    }

    /// Whether the entry names the failure `case` of a run made in `config`.
    pub fn names(&self, case: &str, config: Option<&Axes>) -> bool {
        self.covers(config) && matches(&self.case, case)
    }
}

/// `axis=name, axis=name`: the scope of an entry, each axis one of
/// [`AXES`] and given once.
fn parse_scope(at: &str, text: &str) -> Result<Vec<(String, String)>> {
    let mut scope: Vec<(String, String)> = Vec::new();
    for pair in text.split(',').map(str::trim) {
        let Some((axis, name)) = pair.split_once('=').map(|(a, n)| (a.trim(), n.trim())) else {
            bail!("{at}: the scope {pair:?} is not AXIS=NAME (axes: {})", AXES.join(", "));
        };
        if !AXES.contains(&axis) {
            bail!("{at}: {axis:?} is not an axis of the matrix (axes: {})", AXES.join(", "));
        }
        if name.is_empty() {
            bail!("{at}: the scope {pair:?} names no {axis}");
        }
        if scope.iter().any(|(a, _)| a == axis) {
            bail!("{at}: the scope gives {axis} twice");
        }
        scope.push((axis.to_string(), name.to_string()));
    }
    Ok(scope)
}

/// Refuses, before anything boots, a scoped entry that no cell of the
/// matrix (`cells`, from `file`) could match: a misspelt topology would
/// otherwise leave its failures unlisted, or its entry silently unused.
pub fn check_scopes(entries: &[Entry], cells: &[Axes], file: &Path) -> Result<()> {
    for e in entries {
        for (axis, name) in &e.scope {
            let names: std::collections::BTreeSet<&str> =
                cells.iter().filter_map(|c| c.get(axis.as_str())).map(String::as_str).collect();
            if !names.iter().any(|n| matches(name, n)) {
                let known: Vec<&str> = names.into_iter().collect();
                bail!(
                    "{}: no cell of {} has {axis}={name} (its {axis} names: {})",
                    e.origin,
                    file.display(),
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                );
            }
        }
        if !cells.iter().any(|c| e.covers(Some(c))) {
            bail!("{}: no cell of {} has every name of the scope {}", e.origin, file.display(), scope_text(&e.scope));
        }
    }
    Ok(())
}

/// The scope as written: `topology=adr, machine=two-cpu`.
pub fn scope_text(scope: &[(String, String)]) -> String {
    scope.iter().map(|(a, n)| format!("{a}={n}")).collect::<Vec<_>>().join(", ")
}

/// The list in `path`; a missing file is an empty list. A bad line is
/// refused with `file:line` and what is wrong, before anything boots.
pub fn load(path: &Path) -> Result<Vec<Entry>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&path.display().to_string(), &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn parse(origin: &str, text: &str) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = format!("{origin}:{}", i + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let (case, rate, reason, tracked, scope) = match fields[..] {
            [case, rate, reason, tracked] => (case, rate, reason, tracked, Vec::new()),
            [case, rate, reason, tracked, scope] => (case, rate, reason, tracked, parse_scope(&at, scope)?),
            _ => bail!(
                "{at}: an entry is CASE | RATE | REASON | TRACKED, four fields, and an optional fifth, WHERE; this \
                 line has {}",
                fields.len()
            ),
        };
        let rate: f64 = rate
            .strip_suffix('%')
            .and_then(|r| r.trim().parse().ok())
            .filter(|r: &f64| (0.0..=100.0).contains(r))
            .with_context(|| format!("{at}: the rate {rate:?} is not a percentage from 0% to 100%"))?;
        if case.is_empty() || reason.is_empty() || tracked.is_empty() {
            bail!("{at}: the case, the reason and where it is tracked must all be given");
        }
        if case.split(" / ").count() != 3 {
            bail!("{at}: the case {case:?} is not KERNEL / WORKLOAD / CASE (use * for any part)");
        }
        entries.push(Entry {
            case: case.into(),
            rate,
            reason: reason.into(),
            tracked: tracked.into(),
            scope,
            origin: at,
        });
    }
    Ok(entries)
}

/// Whether `pattern` (with `*` for any run of characters) matches `text`.
pub fn matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == text;
    }
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// What applying the list did: entries that matched a failure, those
/// whose cases all passed (or never ran), and scoped entries whose
/// configuration no run had.
#[derive(Debug, Default)]
pub struct Applied {
    pub seen: Vec<Entry>,
    pub not_seen: Vec<Entry>,
    pub out_of_scope: Vec<Entry>,
}

/// Marks every failed case an entry matches as known, with the entry's
/// reason, rate and tracking; the runs' verdicts follow. A case already
/// known (fstests found it failing on the baseline too) is seen by the
/// entry as well, and gains its reason: the entry still describes it.
/// `config_of` gives the configuration a run was made in (its matrix
/// cell's axes), which scoped entries must cover.
pub fn apply(entries: &[Entry], runs: &mut [WorkloadRun], config_of: impl Fn(&WorkloadRun) -> Option<Axes>) -> Applied {
    let mut applied = Applied::default();
    let configs: Vec<Option<Axes>> = runs.iter().map(&config_of).collect();
    for e in entries {
        if !configs.iter().any(|c| e.covers(c.as_ref())) {
            applied.out_of_scope.push(e.clone());
            continue;
        }
        let mut hit = false;
        for (r, config) in runs.iter_mut().zip(&configs) {
            let who = r.who();
            for c in r.cases.iter_mut().filter(|c| matches!(c.verdict, Verdict::Fail | Verdict::Known)) {
                if e.names(&format!("{who} / {} / {}", r.workload, c.name), config.as_ref()) {
                    hit = true;
                    c.verdict = Verdict::Known;
                    c.detail = format!(
                        "known failure ({}, observed {}%, tracked: {}): {}\n{}",
                        e.origin, e.rate, e.tracked, e.reason, c.detail
                    );
                }
            }
            r.verdict = overall(&r.cases);
        }
        if hit {
            applied.seen.push(e.clone());
        } else {
            applied.not_seen.push(e.clone());
        }
    }
    applied
}

/// The failures the list does not name, as entries to paste into it
/// (`proposed`: case names; the reason and tracking left to fill in).
pub fn proposals(proposed: &[String]) -> String {
    let mut out = String::new();
    for case in proposed {
        let _ = writeln!(out, "{case} | 100% | REASON | TRACKED");
    }
    out
}

/// The list in the project for kernel tree `tree`.
pub fn list_for(tree: &str) -> std::path::PathBuf {
    crate::paths::project_root().join("tests/known-failures").join(format!("{tree}.txt"))
}

/// What the summary says of the list: the entries that matched, those not
/// seen in this run, and `proposed` entries for failures not on it.
pub fn text(list: &Path, applied: &Applied, proposed: &[String]) -> String {
    let mut out = format!(
        "\nknown failures ({}): {} entr(ies) matched a failure, {} not seen in this run\n",
        list.display(),
        applied.seen.len(),
        applied.not_seen.len()
    );
    for e in &applied.not_seen {
        let _ = writeln!(out, "  known failure no longer seen: {} ({}): {}", e.case, e.origin, e.reason);
    }
    if !applied.out_of_scope.is_empty() {
        let _ = writeln!(
            out,
            "  {} entr(ies) for configurations this run did not have: {}",
            applied.out_of_scope.len(),
            applied.out_of_scope.iter().map(|e| e.origin.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    if !proposed.is_empty() {
        let _ = writeln!(out, "  proposed entries (they fail on the baseline too; give each its reason and tracking):");
        for line in proposals(proposed).lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::CaseResult;

    #[test]
    fn the_project_lists_parse() {
        let dir = crate::paths::project_root().join("tests/known-failures");
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let entries = load(&entry.path()).unwrap();
            assert!(!entries.is_empty(), "{}", entry.path().display());
        }
        assert!(load(&dir.join("no-such-tree.txt")).unwrap().is_empty(), "a missing list is empty");
    }

    #[test]
    fn lines_parse_and_bad_ones_name_file_line_and_fault() {
        let text = "# known\n\n* / fstests-dax / xfs/550 | 30% | reflink on fsdax is not supported | https://example.org/550\n";
        let e = parse("k.txt", text).unwrap();
        assert_eq!(
            (e[0].case.as_str(), e[0].rate, e[0].origin.as_str()),
            ("* / fstests-dax / xfs/550", 30.0, "k.txt:3")
        );
        for (line, needle) in [
            ("a / b / c | 30% | why", "four fields"),
            ("a / b / c | 130% | why | where", "not a percentage"),
            ("a / b / c | lots | why | where", "not a percentage"),
            ("a / b / c | 3% |  | where", "must all be given"),
            ("a / c | 3% | why | where", "KERNEL / WORKLOAD / CASE"),
            ("a / b / c | 3% | why | where | colour=red", "not an axis of the matrix"),
            ("a / b / c | 3% | why | where | topology", "not AXIS=NAME"),
            ("a / b / c | 3% | why | where | topology=", "names no topology"),
            ("a / b / c | 3% | why | where | machine=a, machine=b", "gives machine twice"),
            ("a / b / c | 3% | why | where | x | y", "an optional fifth"),
        ] {
            let err = format!("{:#}", parse("k.txt", line).unwrap_err());
            assert!(err.contains("k.txt:1") && err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn patterns_match_with_stars() {
        assert!(matches("* / fstests-dax / xfs/550", "patched cell / fstests-dax / xfs/550"));
        assert!(matches("patched / w / *", "patched / w / anything at all"));
        assert!(matches("a*c*e", "abcde") && !matches("a*c*e", "abde") && !matches("ab*ba", "aba"));
        assert!(matches("exact", "exact") && !matches("exact", "exactly"));
    }

    #[test]
    fn a_listed_failure_is_known_an_unlisted_one_fails_and_unseen_entries_are_named() {
        let entries = parse(
            "k.txt",
            "* / fstests-dax / xfs/550 | 30% | reflink on fsdax | lore link\npatched / w / gone | 5% | old | a sentence\n",
        )
        .unwrap();
        let mut runs = vec![WorkloadRun::new(
            "patched",
            "fstests-dax",
            vec![
                CaseResult::new("xfs/550", Verdict::Fail, "diff".into()),
                CaseResult::new("xfs/551", Verdict::Fail, "diff".into()),
            ],
        )];
        let applied = apply(&entries, &mut runs, |_| None);
        assert_eq!(runs[0].cases[0].verdict, Verdict::Known);
        assert!(runs[0].cases[0].detail.starts_with("known failure (k.txt:1, observed 30%, tracked: lore link)"));
        assert_eq!(runs[0].cases[1].verdict, Verdict::Fail, "unlisted");
        assert_eq!(runs[0].verdict, Verdict::Fail);
        assert_eq!((applied.seen.len(), applied.not_seen[0].case.as_str()), (1, "patched / w / gone"));
        // A failure the baseline shares is already known: an entry naming it
        // has seen it all the same.
        let entries = parse("k.txt", "* / fstests-dax / xfs/552 | 100% | poison | docs").unwrap();
        let shared = CaseResult::new("xfs/552", Verdict::Known, "known failure: fails on the baseline too".into());
        let mut runs = vec![WorkloadRun::new("patched-7.3", "fstests-dax", vec![shared])];
        let applied = apply(&entries, &mut runs, |_| None);
        assert_eq!((applied.seen.len(), applied.not_seen.len(), runs[0].cases[0].verdict), (1, 0, Verdict::Known));
        assert!(runs[0].cases[0].detail.contains("poison"), "{}", runs[0].cases[0].detail);
        assert_eq!(
            proposals(&["patched / fstests-dax / xfs/551".into()]),
            "patched / fstests-dax / xfs/551 | 100% | REASON | TRACKED\n"
        );
    }

    fn axes(pairs: &[(&'static str, &str)]) -> Axes {
        pairs.iter().map(|(a, n)| (*a, n.to_string())).collect()
    }

    /// A scoped entry covers only the cells with its names: the same case
    /// failing in another configuration stays failed, and an entry for a
    /// configuration the run did not have is neither seen nor "no longer
    /// seen".
    #[test]
    fn a_scoped_entry_covers_only_its_configuration() {
        let entries = parse(
            "k.txt",
            "* / userspace-flush / * | 10% | adr flushes | a sentence | topology=adr, machine=*\n\
             * / seal-race / * | 5% | soak | a sentence | suite=soak\n",
        )
        .unwrap();
        assert_eq!(entries[0].scope, [("topology".to_string(), "adr".to_string()), ("machine".into(), "*".into())]);
        let failed = |label: &str| {
            WorkloadRun::new("patched-7.3", "userspace-flush", vec![CaseResult::new("c", Verdict::Fail, "x".into())])
                .labelled(label)
        };
        let mut runs = vec![failed("flush.patched.adr.default.small"), failed("flush.patched.eadr.default.small")];
        let config = |r: &WorkloadRun| {
            let topology = r.label.split('.').nth(2).unwrap_or("").to_string();
            Some(axes(&[("suite", "flush"), ("topology", &topology), ("machine", "small")]))
        };
        let applied = apply(&entries, &mut runs, config);
        assert_eq!((runs[0].verdict, runs[1].verdict), (Verdict::Known, Verdict::Fail));
        assert_eq!(applied.seen.len(), 1);
        assert_eq!(applied.out_of_scope[0].origin, "k.txt:2", "no soak cell ran: {applied:?}");
        assert!(applied.not_seen.is_empty());
        // Outside the matrix no run has a configuration: scoped entries
        // cover nothing there.
        let mut runs = vec![failed("")];
        let applied = apply(&entries, &mut runs, |_| None);
        assert_eq!((runs[0].verdict, applied.out_of_scope.len()), (Verdict::Fail, 2));
        let text = text(Path::new("k.txt"), &applied, &[]);
        assert!(text.contains("2 entr(ies) for configurations this run did not have: k.txt:1, k.txt:2"), "{text}");
    }

    /// Scopes are checked against the matrix file before anything boots.
    #[test]
    fn a_scope_no_cell_has_is_refused_with_the_names_there_are() {
        let cells = [
            axes(&[("suite", "flush"), ("topology", "adr"), ("machine", "small")]),
            axes(&[("suite", "soak"), ("topology", "two-1g"), ("machine", "large")]),
        ];
        let good =
            parse("k.txt", "a / b / c | 1% | r | t | topology=adr\na / b / c | 1% | r | t | topology=*1g").unwrap();
        check_scopes(&good, &cells, Path::new("m.toml")).unwrap();
        let err = format!(
            "{:#}",
            check_scopes(
                &parse("k.txt", "a / b / c | 1% | r | t | topology=adrr").unwrap(),
                &cells,
                Path::new("m.toml")
            )
            .unwrap_err()
        );
        assert!(
            err.contains("k.txt:1: no cell of m.toml has topology=adrr (its topology names: adr, two-1g)"),
            "{err}"
        );
        let both = parse("k.txt", "a / b / c | 1% | r | t | suite=flush, machine=large").unwrap();
        let err = format!("{:#}", check_scopes(&both, &cells, Path::new("m.toml")).unwrap_err());
        assert!(err.contains("no cell of m.toml has every name of the scope suite=flush, machine=large"), "{err}");
    }
}
