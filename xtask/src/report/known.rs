//! Known failures as data: a checked-in list per kernel tree
//! (`tests/known-failures/<tree>.txt`), one entry a line:
//!
//! ```text
//! CASE | RATE | REASON | TRACKED
//! ```
//!
//! CASE names a case as report.html does (`kernel-and-label / workload /
//! case`), `*` matching any run of characters (a kernel, a matrix cell);
//! RATE is the failure rate observed when the entry was written (`30%`);
//! REASON says why it fails; TRACKED is a link or a sentence saying where
//! it is followed. `#` starts a comment line.
//!
//! Applied to a task's runs, a failed case an entry matches becomes
//! `known` with the entry's reason, rate and tracking; an unlisted failure
//! stays failed; an entry whose cases all passed is "no longer seen", so
//! the list can shrink.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use dax_seal_protocol::ktap::Verdict;

use super::results::{overall, WorkloadRun};

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub case: String,
    /// Percent, 0 to 100.
    pub rate: f64,
    pub reason: String,
    pub tracked: String,
    /// Where it was written (`file:line`).
    pub origin: String,
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
        let [case, rate, reason, tracked] = fields[..] else {
            bail!("{at}: an entry is CASE | RATE | REASON | TRACKED, four fields; this line has {}", fields.len());
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
        entries.push(Entry { case: case.into(), rate, reason: reason.into(), tracked: tracked.into(), origin: at });
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

/// What applying the list did: entries that matched a failure, and those
/// whose cases all passed (or never ran).
#[derive(Debug, Default)]
pub struct Applied {
    pub seen: Vec<Entry>,
    pub not_seen: Vec<Entry>,
}

/// Marks every failed case an entry matches as known, with the entry's
/// reason, rate and tracking; the runs' verdicts follow. A case already
/// known (fstests found it failing on the baseline too) is seen by the
/// entry as well, and gains its reason: the entry still describes it.
pub fn apply(entries: &[Entry], runs: &mut [WorkloadRun]) -> Applied {
    let mut applied = Applied::default();
    for e in entries {
        let mut hit = false;
        for r in runs.iter_mut() {
            let who = r.who();
            for c in r.cases.iter_mut().filter(|c| matches!(c.verdict, Verdict::Fail | Verdict::Known)) {
                if matches(&e.case, &format!("{who} / {} / {}", r.workload, c.name)) {
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
        let applied = apply(&entries, &mut runs);
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
        let applied = apply(&entries, &mut runs);
        assert_eq!((applied.seen.len(), applied.not_seen.len(), runs[0].cases[0].verdict), (1, 0, Verdict::Known));
        assert!(runs[0].cases[0].detail.contains("poison"), "{}", runs[0].cases[0].detail);
        assert_eq!(
            proposals(&["patched / fstests-dax / xfs/551".into()]),
            "patched / fstests-dax / xfs/551 | 100% | REASON | TRACKED\n"
        );
    }
}
