//! report.html (and bench.html, below): one self-contained page (no script, no stylesheet or font
//! from the network) with the verdict, a table of every kernel or cell by
//! verdict, each failure with its reason, how each boot ended, and the
//! first-touch fault histograms the userspace-flush workload reported, as
//! inline SVG bar charts.

use std::fmt::Write as _;

use dax_seal_protocol::flush::LATENCY_PREFIX;
use dax_seal_protocol::ktap::Verdict;

use std::collections::BTreeMap;

use super::results::{Results, WorkloadRun};

fn esc(text: &str) -> String {
    super::results::xml_escape(text)
}

/// Log2 microsecond buckets and their counts.
pub type Buckets = Vec<(u32, u64)>;

/// A histogram line `dax-seal latency KIND b:c,b:c` as (kind, buckets).
pub fn histogram(line: &str) -> Option<(String, Buckets)> {
    let rest = &line[line.find(LATENCY_PREFIX)? + LATENCY_PREFIX.len()..];
    let (kind, cells) = rest.trim().split_once(' ')?;
    let buckets = cells
        .split(',')
        .map(|c| c.split_once(':').and_then(|(b, n)| Some((b.parse().ok()?, n.parse().ok()?))))
        .collect::<Option<Buckets>>()?;
    Some((kind.to_string(), buckets))
}

/// An SVG bar chart of one histogram (log2 microsecond buckets).
pub fn svg(title: &str, buckets: &[(u32, u64)]) -> String {
    const W: u32 = 420;
    const H: u32 = 160;
    let (lo, hi) = buckets.iter().fold((u32::MAX, 0), |(lo, hi), (b, _)| (lo.min(*b), hi.max(*b)));
    let (lo, hi) = if buckets.is_empty() { (0, 0) } else { (lo, hi) };
    let n = hi - lo + 1;
    let max = buckets.iter().map(|(_, c)| *c).max().unwrap_or(1).max(1);
    let bar = (W - 40) / n.max(1);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" role=\"img\" class=\"plot\">\
         <title>{}</title><text x=\"4\" y=\"14\" font-size=\"12\">{}</text>",
        H + 30,
        esc(title),
        esc(title)
    );
    for (b, count) in buckets {
        let x = 30 + (b - lo) * bar;
        let h = (*count * u64::from(H - 30) / max) as u32;
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{h}\" fill=\"#4a7bb7\"><title>{} us: {count}</title></rect>",
            H - h,
            bar.saturating_sub(2).max(1),
            1u64 << b
        );
    }
    for b in lo..=hi {
        let x = 30 + (b - lo) * bar;
        let _ = write!(out, "<text x=\"{x}\" y=\"{}\" font-size=\"9\">{}</text>", H + 14, 1u64 << b);
    }
    let _ = write!(out, "<text x=\"{}\" y=\"{}\" font-size=\"9\">us (log2 buckets)</text></svg>", W - 110, H + 28);
    out
}

/// One benchmark figure: values measured side by side, drawn as bars.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Chart {
    pub title: String,
    pub unit: String,
    pub bars: Vec<(String, f64)>,
    pub target: Option<Target>,
}

/// A figure's target and whether the run met it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub what: String,
    pub met: bool,
}

impl Chart {
    pub fn new(title: &str, unit: &str, bars: &[(&str, f64)]) -> Chart {
        Chart {
            title: title.to_string(),
            unit: unit.to_string(),
            bars: bars.iter().map(|(l, v)| (l.to_string(), *v)).collect(),
            target: None,
        }
    }

    /// The same, with bars whose labels are made at run time.
    pub fn owned(title: &str, unit: &str, bars: Vec<(String, f64)>) -> Chart {
        Chart { title: title.to_string(), unit: unit.to_string(), bars, target: None }
    }

    pub fn target(mut self, what: String, met: bool) -> Chart {
        self.target = Some(Target { what, met });
        self
    }
}

/// An SVG chart of one figure: a horizontal bar per value, labelled, with
/// the ratio of each value to the first when there are several.
pub fn bars_svg(f: &Chart) -> String {
    const W: usize = 560;
    const LABEL: usize = 210;
    const ROW: usize = 22;
    let h = 24 + ROW * f.bars.len();
    let max = f.bars.iter().map(|(_, v)| *v).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" role=\"img\" class=\"figure\">\
         <title>{}</title><text x=\"4\" y=\"14\" font-size=\"12\">{} ({})</text>",
        esc(&f.title),
        esc(&f.title),
        esc(&f.unit)
    );
    let first = f.bars.first().map(|(_, v)| *v).unwrap_or(f64::NAN);
    for (i, (label, v)) in f.bars.iter().enumerate() {
        let y = 22 + i * ROW;
        let len = if max > 0.0 && v.is_finite() { (v / max * (W - LABEL - 110) as f64) as usize } else { 0 };
        let ratio = match f.bars.first() {
            Some((name, _)) if i > 0 && first.is_finite() && *v > 0.0 => format!("  ({name} / this: {:.2})", first / v),
            _ => String::new(),
        };
        let _ = write!(
            out,
            "<text x=\"4\" y=\"{}\" font-size=\"11\">{}</text>\
             <rect x=\"{LABEL}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"#4a7bb7\"><title>{}: {v}</title></rect>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\">{}{}</text>",
            y + 13,
            esc(label),
            len.max(1),
            ROW - 6,
            esc(label),
            LABEL + len + 4,
            y + 13,
            number(*v),
            esc(&ratio)
        );
    }
    out.push_str("</svg>");
    out
}

/// A figure's value as text: whole numbers above 100, else three digits.
fn number(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// One figure's chart and, if it has one, its target and whether it was met.
fn figure_block(f: &Chart) -> String {
    let mut out = format!("<div class=\"fig\">{}", bars_svg(f));
    if let Some(t) = &f.target {
        let (class, word) = if t.met { ("met", "within target") } else { ("missed", "OVER TARGET") };
        let _ = write!(out, "<p class=\"{class}\">target {}: {word}</p>", esc(&t.what));
    }
    out.push_str("</div>\n");
    out
}

/// A page with a "Benchmark" section of `figures` (bench.json's) added at
/// its end: how `cargo xtask report` shows a bench run next to the runs.
pub fn with_figures(page: &str, source: &str, figures: &[Chart]) -> String {
    let mut section = format!("<h2 id=\"benchmark\">Benchmark ({})</h2>\n", esc(source));
    for f in figures {
        section.push_str(&figure_block(f));
    }
    with_section(page, &section)
}

/// `page` with `section` (HTML) added before its end.
pub fn with_section(page: &str, section: &str) -> String {
    match page.rfind("</body>") {
        Some(at) => format!("{}{section}{}", &page[..at], &page[at..]),
        None => format!("{page}{section}"),
    }
}

/// bench.html: every figure of a `cargo xtask bench` run as a bar chart
/// with its target, and the fault histograms summed over the runs; one
/// self-contained page like report.html.
pub fn bench_page(runs: usize, figures: &[Chart], histograms: &[(String, Buckets)]) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>dax-seal benchmark</title><style>\
         body{font-family:sans-serif;margin:1.5em}.met{color:#060}.missed{color:#a00;font-weight:bold}\
         .fig{margin:0 0 1.2em 0}\
         </style></head><body>\n",
    );
    let missed = figures.iter().filter(|f| f.target.as_ref().is_some_and(|t| !t.met)).count();
    let _ = writeln!(
        out,
        "<h1>dax-seal benchmark</h1><p>medians of {runs} run(s), measured side by side in one bench run; \
         <span id=\"figures\">{}</span> figures, <span id=\"missed\">{missed}</span> over target</p>",
        figures.len()
    );
    for f in figures {
        out.push_str(&figure_block(f));
    }
    if !histograms.is_empty() {
        out.push_str("<h2>First-touch MAP_SYNC write faults, all runs</h2>\n");
        for (kind, buckets) in histograms {
            out.push_str(&svg(&format!("{kind} file"), buckets));
            out.push('\n');
        }
    }
    out.push_str("</body></html>\n");
    out
}

/// The last `n` lines of a console log, if it can be read.
fn console_tail(path: &std::path::Path, n: usize) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    Some(lines[lines.len().saturating_sub(n)..].join("\n"))
}

/// What changed since an earlier set of runs: cases whose verdict is new,
/// changed, or gone, as (key, before, now).
pub fn changes(before: &[WorkloadRun], now: &[WorkloadRun]) -> Vec<(String, String, String)> {
    let flatten = |runs: &[WorkloadRun]| -> BTreeMap<String, &'static str> {
        runs.iter()
            .flat_map(|r| {
                r.cases.iter().map(move |c| (format!("{} / {} / {}", r.who(), r.workload, c.name), c.verdict.as_str()))
            })
            .collect()
    };
    let (a, b) = (flatten(before), flatten(now));
    let mut out = Vec::new();
    for (k, v) in &b {
        match a.get(k) {
            Some(old) if old == v => {}
            Some(old) => out.push((k.clone(), old.to_string(), v.to_string())),
            None => out.push((k.clone(), "-".into(), v.to_string())),
        }
    }
    for (k, v) in &a {
        if !b.contains_key(k) {
            out.push((k.clone(), v.to_string(), "-".into()));
        }
    }
    out
}

pub fn page(results: &Results) -> String {
    page_since(results, None)
}

/// The page, with what changed since `previous` (its name and runs).
pub fn page_since(results: &Results, previous: Option<(&str, &[WorkloadRun])>) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>dax-seal results</title><style>\
         body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}\
         .pass{background:#dfd}.fail{background:#fdd}.skip{background:#eee}.known{background:#ffe9c4}.flaky{background:#f5e0ff}\
         .night{font-size:1.2em}.night.pass{color:#3a3}.night.fail{color:#c22}.night.flaky{color:#a3c}\
         .night.skip,.night.known{color:#999}.night.absent{color:#eee}\
         pre{background:#f6f6f6;padding:6px;white-space:pre-wrap;max-width:100em}\
         </style></head><body>\n",
    );
    let count = |v: Verdict| results.runs.iter().flat_map(|r| &r.cases).filter(|c| c.verdict == v).count();
    let _ = writeln!(
        out,
        "<h1 id=\"verdict\" class=\"{}\">{}</h1><p>run {}: <span id=\"passed\">{}</span> passed, \
         <span id=\"failed\">{}</span> failed, <span id=\"skipped\">{}</span> skipped, \
         <span id=\"flaky\">{}</span> flaky, <span id=\"known\">{}</span> known failures</p>",
        results.verdict.as_str(),
        results.verdict.as_str().to_uppercase(),
        esc(&results.run_id),
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Skip),
        count(Verdict::Flaky),
        count(Verdict::Known)
    );
    out.push_str("<h2>Verdicts</h2><table id=\"verdicts\"><tr><th>kernel or cell</th><th>workload</th><th>pass</th><th>fail</th><th>skip</th><th>flaky</th><th>known</th><th>verdict</th></tr>\n");
    for r in &results.runs {
        let n = |v: Verdict| r.cases.iter().filter(|c| c.verdict == v).count();
        let _ = writeln!(
            out,
            "<tr class=\"run {}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.verdict.as_str(),
            esc(&r.who()),
            esc(&r.workload),
            n(Verdict::Pass),
            n(Verdict::Fail),
            n(Verdict::Skip),
            n(Verdict::Flaky),
            n(Verdict::Known),
            r.verdict.as_str()
        );
    }
    out.push_str("</table>\n<h2>Failures</h2>\n");
    let mut failures = 0;
    for r in &results.runs {
        for c in r.cases.iter().filter(|c| matches!(c.verdict, Verdict::Fail | Verdict::Flaky)) {
            failures += 1;
            let earlier: String = c.attempts.iter().map(|a| format!("\nearlier {a}")).collect();
            let _ = writeln!(
                out,
                "<div class=\"failure {}\"><h3>{} / {} / {}{}</h3><pre>{}{}</pre>",
                c.verdict.as_str(),
                esc(&r.who()),
                esc(&r.workload),
                esc(&c.name),
                if c.verdict == Verdict::Flaky { " (flaky: passed on a rerun)" } else { "" },
                esc(&c.detail),
                esc(&earlier)
            );
            let console = results.boots.iter().find(|b| b.judged(r)).and_then(|b| console_tail(&b.console_log, 30));
            if let Some(tail) = console {
                let _ = writeln!(
                    out,
                    "<details><summary>console, last lines</summary><pre class=\"console\">{}</pre></details>",
                    esc(&tail)
                );
            }
            out.push_str("</div>\n");
        }
    }
    if failures == 0 {
        out.push_str("<p>None.</p>\n");
    }
    if let Some((name, before)) = previous {
        let changed = changes(before, &results.runs);
        let _ = writeln!(out, "<h2>Since {}</h2>", esc(name));
        if changed.is_empty() {
            out.push_str("<p id=\"unchanged\">No verdict changed.</p>\n");
        } else {
            out.push_str("<table id=\"changes\"><tr><th>case</th><th>before</th><th>now</th></tr>\n");
            for (k, was, now) in changed {
                let _ =
                    writeln!(out, "<tr class=\"change {now}\"><td>{}</td><td>{was}</td><td>{now}</td></tr>", esc(&k));
            }
            out.push_str("</table>\n");
        }
    }
    out.push_str("<h2>Boots</h2><ul>\n");
    for b in &results.boots {
        let _ = writeln!(
            out,
            "<li>{}: {} in {:.1} s on {}</li>",
            esc(&b.who()),
            esc(&b.end.describe()),
            b.elapsed_ms as f64 / 1000.0,
            esc(&b.accel)
        );
    }
    out.push_str("</ul>\n");
    let plots: Vec<(String, String, Buckets)> = results
        .runs
        .iter()
        .flat_map(|r| r.cases.iter().map(move |c| (r, c)))
        .flat_map(|(r, c)| c.detail.lines().filter_map(move |l| histogram(l).map(|(k, b)| (r.who(), k, b))))
        .collect();
    if !plots.is_empty() {
        out.push_str("<h2>First-touch MAP_SYNC write faults</h2>\n");
        for (kernel, kind, buckets) in plots {
            out.push_str(&svg(&format!("{kernel}: {kind} file"), &buckets));
            out.push('\n');
        }
    }
    if results.xtask_peak_rss_kib > 0 {
        let _ = writeln!(out, "<p>xtask peak memory: {:.1} MiB</p>", results.xtask_peak_rss_kib as f64 / 1024.0);
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_read_from_the_latency_lines_and_drawn() {
        let (kind, b) = histogram("    # dax-seal latency sealed 2:125,3:27,12:2").unwrap();
        assert_eq!((kind.as_str(), b), ("sealed", vec![(2, 125), (3, 27), (12, 2)]));
        assert_eq!(histogram("dax-seal latency sealed 2:x"), None);
        let s = svg("patched: sealed file", &[(2, 125), (3, 27), (12, 2)]);
        assert_eq!(s.matches("<rect").count(), 3);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
    }

    #[test]
    fn changes_name_new_changed_and_gone_cases() {
        use crate::report::results::CaseResult;
        let run = |cases: &[(&str, Verdict)]| WorkloadRun {
            verdict: Verdict::Pass,
            ..WorkloadRun::new(
                "patched",
                "w",
                cases.iter().map(|(n, v)| CaseResult::new(n, *v, String::new())).collect(),
            )
        };
        let before = [run(&[("a", Verdict::Pass), ("b", Verdict::Fail), ("gone", Verdict::Pass)])];
        let now = [run(&[("a", Verdict::Pass), ("b", Verdict::Pass), ("new", Verdict::Fail)])];
        let c = changes(&before, &now);
        assert_eq!(c.len(), 3, "{c:?}");
        assert!(c.contains(&("patched / w / b".into(), "fail".into(), "pass".into())));
        assert!(c.contains(&("patched / w / new".into(), "-".into(), "fail".into())));
        assert!(c.contains(&("patched / w / gone".into(), "pass".into(), "-".into())));
        assert!(changes(&now, &now).is_empty());
    }

    #[test]
    fn bench_figures_are_drawn_with_ratios_and_targets() {
        let figs = [
            Chart::new("swap <under> pressure", "MiB/s", &[("sealed", 400.0), ("raw", 500.0)])
                .target("ratio >= 0.95".into(), false),
            Chart::new("initramfs", "MiB", &[("initramfs", 3.25)]).target("<= 16 MiB".into(), true),
            Chart::new("nothing measured", "s", &[("a", f64::NAN)]),
        ];
        let page = bench_page(3, &figs, &[("sealed".into(), vec![(3, 5), (4, 1)])]);
        assert_eq!(page.matches("class=\"figure\"").count(), 3);
        assert_eq!(page.matches("class=\"plot\"").count(), 1);
        assert!(page.contains("swap &lt;under&gt; pressure (MiB/s)"), "{page}");
        assert!(page.contains("(sealed / this: 0.80)") && page.contains(">3.25<"), "{page}");
        assert!(page.contains("<span id=\"missed\">1</span>") && page.contains("OVER TARGET"), "{page}");
        assert!(page.contains(">n/a<"), "{page}");
    }

    #[test]
    fn bench_figures_join_a_report_page() {
        let figs = [Chart::new("swap", "MiB/s", &[("sealed", 1.0), ("raw", 2.0)]).target("ratio".into(), false)];
        let page = with_figures("<html><body><h1>x</h1></body></html>", "images/bench", &figs);
        assert!(page.ends_with("</body></html>"), "{page}");
        assert!(page.contains("Benchmark (images/bench)") && page.contains("class=\"figure\""), "{page}");
        assert!(page.contains("OVER TARGET"), "{page}");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<a href='x'>&\u{1}"), "&lt;a href=&apos;x&apos;&gt;&amp;\\x01");
    }
}
