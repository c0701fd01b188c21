//! History over nights: each case's verdicts and durations in earlier
//! merged results (oldest first) and tonight's, and what they add up to:
//! pass, fail and flaky counts, the first night it failed, its failure
//! rate, and whether it regressed (never failed before the window, fails
//! in enough nights of it), was fixed (failed before, passes throughout
//! the window), is flaky (flaky, or both passes and fails without being
//! either), or became slow (tonight it took more than `slow_factor` times
//! its median over the nights before).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dax_seal_protocol::ktap::Verdict;
use serde::Serialize;

use super::known::{Axes, Entry};
use super::results::{columns, xml_escape, Results, WorkloadRun};

/// The thresholds; `Default` is the documented rule.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The last `window` nights decide regressions and fixes (3).
    pub window: usize,
    /// A case that never failed before the window and fails in this many
    /// of its nights regressed (2).
    pub failures: usize,
    /// Tonight's duration above this many times the earlier median is slow
    /// (3.0) ...
    pub slow_factor: f64,
    /// ... when it is also at least this long, in ms (1000), and there are
    /// at least two earlier nights.
    pub slow_floor_ms: u64,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules { window: 3, failures: 2, slow_factor: 3.0, slow_floor_ms: 1000 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trend {
    Regression,
    Fix,
    Flaky,
    Slow,
}

/// One case over the nights.
#[derive(Debug, Clone, Serialize)]
pub struct CaseHistory {
    /// `kernel-and-label / workload / case`, as report.html names it.
    pub case: String,
    /// Its verdict each night, oldest first (None: it did not run).
    pub nights: Vec<Option<Verdict>>,
    pub passed: usize,
    pub failed: usize,
    pub flaky: usize,
    /// The first night (from 0) it failed.
    pub first_failed: Option<usize>,
    /// Failed nights over the nights it ran.
    pub failure_rate: f64,
    /// Tonight's duration and the median of the nights before, in ms.
    pub duration_ms: Option<u64>,
    pub median_ms: Option<u64>,
    pub trends: Vec<Trend>,
}

/// The history of every case in `nights` (oldest first, tonight last), in
/// the order cases first appear.
pub fn history(nights: &[Results], rules: Rules) -> Vec<CaseHistory> {
    let mut order: Vec<String> = Vec::new();
    let mut seen: BTreeMap<String, Vec<Option<(Verdict, u64)>>> = BTreeMap::new();
    for (n, night) in nights.iter().enumerate() {
        for r in &night.runs {
            for c in &r.cases {
                let key = format!("{} / {} / {}", r.who(), r.workload, c.name);
                let slots = seen.entry(key.clone()).or_insert_with(|| {
                    order.push(key);
                    vec![None; nights.len()]
                });
                slots[n] = Some((c.verdict, c.duration_ms));
            }
        }
    }
    order.into_iter().map(|case| judge(case.clone(), &seen[&case], rules)).collect()
}

fn judge(case: String, slots: &[Option<(Verdict, u64)>], rules: Rules) -> CaseHistory {
    let verdicts: Vec<Option<Verdict>> = slots.iter().map(|s| s.map(|(v, _)| v)).collect();
    let count = |v: Verdict| verdicts.iter().filter(|x| **x == Some(v)).count();
    let (passed, failed, flaky) =
        (count(Verdict::Pass) + count(Verdict::Known), count(Verdict::Fail), count(Verdict::Flaky));
    let ran = verdicts.iter().filter(|v| v.is_some()).count();
    let split = verdicts.len().saturating_sub(rules.window);
    let (before, window) = verdicts.split_at(split);
    let fails = |vs: &[Option<Verdict>]| vs.iter().filter(|v| **v == Some(Verdict::Fail)).count();
    let mut trends = Vec::new();
    if fails(before) == 0 && fails(window) >= rules.failures {
        trends.push(Trend::Regression);
    }
    if fails(before) > 0
        && !window.is_empty()
        && window.iter().all(|v| matches!(v, Some(Verdict::Pass | Verdict::Known)))
    {
        trends.push(Trend::Fix);
    }
    if flaky > 0 || (failed > 0 && passed > 0 && trends.is_empty()) {
        trends.push(Trend::Flaky);
    }
    let duration_ms = slots.last().copied().flatten().map(|(_, d)| d);
    let earlier: Vec<u64> = slots[..slots.len().saturating_sub(1)].iter().flatten().map(|(_, d)| *d).collect();
    let median_ms = median(&earlier);
    if let (Some(now), Some(median)) = (duration_ms, median_ms) {
        if earlier.len() >= 2 && now >= rules.slow_floor_ms && now as f64 > rules.slow_factor * median as f64 {
            trends.push(Trend::Slow);
        }
    }
    CaseHistory {
        case,
        first_failed: verdicts.iter().position(|v| *v == Some(Verdict::Fail)),
        failure_rate: if ran == 0 { 0.0 } else { failed as f64 / ran as f64 },
        nights: verdicts,
        passed,
        failed,
        flaky,
        duration_ms,
        median_ms,
        trends,
    }
}

/// The median of `values` (the upper one of an even count), None when
/// there are none.
fn median(values: &[u64]) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

/// The cases with a trend, for the summary: one line each.
pub fn text(cases: &[CaseHistory], nights: usize) -> String {
    let marked: Vec<&CaseHistory> = cases.iter().filter(|c| !c.trends.is_empty()).collect();
    let mut out = format!("\nhistory over {nights} night(s): {} case(s), {} with a trend\n", cases.len(), marked.len());
    let rows: Vec<[String; 4]> = marked
        .iter()
        .map(|c| {
            let trends: Vec<&str> = c.trends.iter().map(|t| trend_word(*t)).collect();
            [
                trends.join(", "),
                c.case.clone(),
                strip(&c.nights),
                match (c.duration_ms, c.median_ms) {
                    (Some(now), Some(median)) if c.trends.contains(&Trend::Slow) => {
                        format!("{:.1} s against a median of {:.1} s", now as f64 / 1000.0, median as f64 / 1000.0)
                    }
                    _ => format!(
                        "failed {} of {} night(s) ({:.0}%){}",
                        c.failed,
                        c.nights.iter().flatten().count(),
                        100.0 * c.failure_rate,
                        c.first_failed.map_or(String::new(), |n| format!(", first on night {}", n + 1))
                    ),
                },
            ]
        })
        .collect();
    out.push_str(&columns(rows.iter(), 70));
    let _ = write!(out, "");
    out
}

fn trend_word(t: Trend) -> &'static str {
    match t {
        Trend::Regression => "REGRESSION",
        Trend::Fix => "fixed",
        Trend::Flaky => "flaky",
        Trend::Slow => "slow",
    }
}

/// The nights as one character each, oldest first: `.` pass, `F` fail,
/// `~` flaky, `s` skip, `k` known, ` ` did not run.
pub fn strip(nights: &[Option<Verdict>]) -> String {
    nights
        .iter()
        .map(|v| match v {
            Some(Verdict::Pass) => '.',
            Some(Verdict::Fail) => 'F',
            Some(Verdict::Flaky) => '~',
            Some(Verdict::Skip) => 's',
            Some(Verdict::Known) => 'k',
            None => ' ',
        })
        .collect()
}

/// Boot deadlines that follow history (the watchdog): a boot gets
/// [`Deadlines::FACTOR`] times its median duration over the earlier nights
/// in which the same boot (kernel and label: a matrix cell, or its step)
/// ended cleanly, once at least [`Deadlines::NIGHTS`] nights had it; never
/// less than [`Deadlines::FLOOR`], nor more than the deadline it would have
/// had without history. A hang then ends after a few of its usual
/// durations instead of the fixed deadline.
#[derive(Debug, Default)]
pub struct Deadlines {
    /// (kernel, label) to its clean durations, one per night (the longest
    /// that night), in ms.
    seen: BTreeMap<(String, String), Vec<u64>>,
}

impl Deadlines {
    pub const FACTOR: u64 = 3;
    pub const NIGHTS: usize = 2;
    pub const FLOOR: std::time::Duration = std::time::Duration::from_secs(60);

    /// From earlier nights' merged results, oldest first.
    pub fn of(nights: &[Results]) -> Deadlines {
        let mut seen: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
        for night in nights {
            let mut longest: BTreeMap<(String, String), u64> = BTreeMap::new();
            for b in night.boots.iter().filter(|b| b.end.is_clean()) {
                let slot = longest.entry((b.kernel.clone(), b.label.clone())).or_default();
                *slot = (*slot).max(b.elapsed_ms);
            }
            for (key, ms) in longest {
                seen.entry(key).or_default().push(ms);
            }
        }
        Deadlines { seen }
    }

    /// The deadline for the boot of `kernel` labelled `label` whose
    /// deadline without history is `default`, and, when history set it,
    /// the sentence that says how.
    pub fn for_boot(
        &self,
        kernel: &str,
        label: &str,
        default: std::time::Duration,
    ) -> (std::time::Duration, Option<String>) {
        let Some(durations) = self.seen.get(&(kernel.to_string(), label.to_string())) else {
            return (default, None);
        };
        if durations.len() < Self::NIGHTS {
            return (default, None);
        }
        let Some(median) = median(durations) else {
            return (default, None);
        };
        let from_history = std::time::Duration::from_millis(median.saturating_mul(Self::FACTOR));
        let deadline = from_history.clamp(Self::FLOOR.min(default), default);
        let why = format!(
            "deadline {} s from history ({} x its median {:.1} s over {} night(s), at least {} s, at most {} s)",
            deadline.as_secs(),
            Self::FACTOR,
            median as f64 / 1000.0,
            durations.len(),
            Self::FLOOR.as_secs(),
            default.as_secs()
        );
        (deadline, Some(why))
    }
}

/// The known-failure entries no failure matched in each of the last
/// `nights` nights or more (a failed or known case the entry's pattern
/// matches), with how many nights that has been: candidates to remove.
/// `config_of` gives a run's configuration (its matrix cell's axes); a
/// night that ran nothing a scoped entry covers neither counts as quiet
/// for it nor ends its quiet nights.
pub fn gone(
    entries: &[Entry],
    history: &[Results],
    nights: usize,
    config_of: impl Fn(&WorkloadRun) -> Option<Axes>,
) -> Vec<(Entry, usize)> {
    let mut out = Vec::new();
    for e in entries {
        let covered = |night: &Results| night.runs.iter().any(|r| e.covers(config_of(r).as_ref()));
        let seen = |night: &Results| {
            night.runs.iter().any(|r| {
                let config = config_of(r);
                r.cases.iter().any(|c| {
                    matches!(c.verdict, Verdict::Fail | Verdict::Known)
                        && e.names(&format!("{} / {} / {}", r.who(), r.workload, c.name), config.as_ref())
                })
            })
        };
        let quiet = history.iter().rev().filter(|n| covered(n)).take_while(|n| !seen(n)).count();
        if quiet >= nights && nights > 0 {
            out.push((e.clone(), quiet));
        }
    }
    out
}

/// report.html's history section: the cases with a trend first, each with
/// a strip of coloured cells, one per night.
pub fn html(cases: &[CaseHistory], nights: usize) -> String {
    let mut out = format!(
        "<h2 id=\"history\">History over {nights} night(s)</h2><table id=\"history-table\"><tr><th>trend</th>\
         <th>case</th><th>nights (oldest first)</th><th>failed</th><th>rate</th></tr>\n"
    );
    let mut sorted: Vec<&CaseHistory> = cases.iter().collect();
    sorted.sort_by_key(|c| c.trends.is_empty());
    for c in sorted {
        let cells: String = c
            .nights
            .iter()
            .map(|v| {
                let class = v.map_or("absent", |v| v.as_str());
                format!("<span class=\"night {class}\" title=\"{class}\">&#9632;</span>")
            })
            .collect();
        let trends: Vec<&str> = c.trends.iter().map(|t| trend_word(*t)).collect();
        let _ = writeln!(
            out,
            "<tr class=\"history\"><td>{}</td><td>{}</td><td>{cells}</td><td>{}</td><td>{:.0}%</td></tr>",
            xml_escape(&trends.join(", ")),
            xml_escape(&c.case),
            c.failed,
            100.0 * c.failure_rate
        );
    }
    out.push_str("</table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::known;
    use crate::report::results::CaseResult;

    /// A night where each (case, verdict, ms) ran in workload `w` on patched.
    fn night(cases: &[(&str, Verdict, u64)]) -> Results {
        let cases = cases
            .iter()
            .map(|(n, v, ms)| CaseResult { duration_ms: *ms, ..CaseResult::new(n, *v, String::new()) })
            .collect();
        let runs = vec![WorkloadRun::new("patched", "w", cases)];
        Results::of_runs("n", runs)
    }

    #[test]
    fn five_nights_show_a_regression_a_fix_a_flaky_case_and_a_slow_one() {
        use Verdict::*;
        let nights: Vec<Results> = [
            [
                ("steady", Pass, 100),
                ("broke", Pass, 100),
                ("mended", Fail, 100),
                ("wobbly", Pass, 100),
                ("slower", Pass, 2000),
            ],
            [
                ("steady", Pass, 100),
                ("broke", Pass, 100),
                ("mended", Fail, 100),
                ("wobbly", Flaky, 100),
                ("slower", Pass, 2100),
            ],
            [
                ("steady", Pass, 100),
                ("broke", Fail, 100),
                ("mended", Pass, 100),
                ("wobbly", Pass, 100),
                ("slower", Pass, 1900),
            ],
            [
                ("steady", Pass, 100),
                ("broke", Pass, 100),
                ("mended", Pass, 100),
                ("wobbly", Pass, 100),
                ("slower", Pass, 2000),
            ],
            [
                ("steady", Pass, 100),
                ("broke", Fail, 100),
                ("mended", Pass, 100),
                ("wobbly", Pass, 100),
                ("slower", Pass, 9000),
            ],
        ]
        .iter()
        .map(|n| night(n))
        .collect();
        let h = history(&nights, Rules::default());
        let trends = |name: &str| h.iter().find(|c| c.case.ends_with(name)).unwrap().trends.clone();
        assert_eq!(trends("steady"), []);
        assert_eq!(trends("broke"), [Trend::Regression]);
        assert_eq!(trends("mended"), [Trend::Fix]);
        assert_eq!(trends("wobbly"), [Trend::Flaky]);
        assert_eq!(trends("slower"), [Trend::Slow]);
        let broke = h.iter().find(|c| c.case.ends_with("broke")).unwrap();
        assert_eq!((broke.failed, broke.first_failed, broke.failure_rate), (2, Some(2), 0.4));
        assert_eq!(strip(&broke.nights), "..F.F");
        let t = text(&h, 5);
        assert!(t.contains("history over 5 night(s): 5 case(s), 4 with a trend"), "{t}");
        assert!(t.contains("REGRESSION") && t.contains("..F.F") && t.contains("first on night 3"), "{t}");
        assert!(t.contains("9.0 s against a median of 2.0 s"), "{t}");
        let page = html(&h, 5);
        assert_eq!(page.matches("<tr class=\"history\">").count(), 5);
        // One failure in the window is not yet a regression.
        let h = history(&nights[..4], Rules::default());
        assert_eq!(h.iter().find(|c| c.case.ends_with("broke")).unwrap().trends, [Trend::Flaky]);
        // A known-failure entry for mended has not matched for three nights.
        let entries =
            known::parse("k", "* / w / mended | 40% | was broken | here\n* / w / broke | 40% | x | y\n").unwrap();
        let g = gone(&entries, &nights, 3, |_| None);
        assert_eq!(g.iter().map(|(e, n)| (e.case.as_str(), *n)).collect::<Vec<_>>(), [("* / w / mended", 3)]);
        assert!(gone(&entries, &nights, 4, |_| None).is_empty());
    }

    /// A scoped entry counts only the nights that ran its configuration:
    /// nights without an adr cell neither make it quiet nor end its quiet.
    #[test]
    fn a_scoped_entry_is_quiet_only_on_nights_that_ran_its_configuration() {
        let cell = |label: &str, v: Verdict| {
            let runs = vec![
                WorkloadRun::new("patched-7.3", "w", vec![CaseResult::new("c", v, String::new())]).labelled(label)
            ];
            Results::of_runs("n", runs)
        };
        let nights = [
            cell("adr", Verdict::Fail),
            cell("eadr", Verdict::Fail),
            cell("adr", Verdict::Pass),
            cell("eadr", Verdict::Pass),
            cell("eadr", Verdict::Pass),
        ];
        let entries = known::parse("k", "* / w / c | 50% | adr only | here | topology=adr\n").unwrap();
        let config = |r: &WorkloadRun| Some([("topology", r.label.clone())].into_iter().collect::<Axes>());
        let g = gone(&entries, &nights, 1, config);
        assert_eq!(g.iter().map(|(e, n)| (e.origin.as_str(), *n)).collect::<Vec<_>>(), [("k:1", 1)]);
        assert!(gone(&entries, &nights, 2, config).is_empty(), "one adr night without it, not three");
        assert!(gone(&entries, &nights, 1, |_| None).is_empty(), "outside the matrix it covers nothing");
    }

    /// The watchdog: a boot's deadline is three times its median over the
    /// nights it ended cleanly, within the floor and the default; too few
    /// nights, another label or another kernel keep the default.
    #[test]
    fn boot_deadlines_follow_the_nights_before() {
        use crate::report::results::BootRecord;
        use crate::vm::boot::End;
        use std::time::Duration;
        let boot = |label: &str, end: End, ms: u64| BootRecord {
            kernel: "patched-7.3".into(),
            label: label.into(),
            accel: "tcg".into(),
            accel_reason: String::new(),
            end,
            elapsed_ms: ms,
            first_ktap_ms: None,
            console_log: Default::default(),
            ktap_log: Default::default(),
            command_line: String::new(),
            ignored_result_lines: Vec::new(),
        };
        let night = |boots: Vec<BootRecord>| Results { boots, ..Results::of_runs("n", Vec::new()) };
        let nights = [
            night(vec![boot("cell", End::PoweredOff, 40_000), boot("quick", End::PoweredOff, 2_000)]),
            night(vec![boot("cell", End::PoweredOff, 50_000), boot("cell", End::PoweredOff, 20_000)]),
            night(vec![boot("cell", End::Deadline { secs: 600 }, 600_000), boot("quick", End::PoweredOff, 3_000)]),
            night(vec![boot("cell", End::PoweredOff, 45_000)]),
        ];
        let d = Deadlines::of(&nights);
        let default = Duration::from_secs(600);
        let (deadline, why) = d.for_boot("patched-7.3", "cell", default);
        // Clean nights: 40, 50 (the longest of two) and 45 s; median 45.
        assert_eq!(deadline, Duration::from_secs(135));
        assert!(why.unwrap().contains("3 x its median 45.0 s over 3 night(s)"));
        assert_eq!(d.for_boot("patched-7.3", "quick", default).0, Deadlines::FLOOR, "the floor");
        assert_eq!(d.for_boot("patched-7.3", "cell", Duration::from_secs(100)).0, Duration::from_secs(100));
        assert_eq!(d.for_boot("baseline-7.3", "cell", default), (default, None), "another kernel");
        let one = Deadlines::of(&nights[..1]);
        assert_eq!(one.for_boot("patched-7.3", "cell", default), (default, None), "one night is too few");
    }
}
