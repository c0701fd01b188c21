//! KTAP version 1 (Documentation/dev-tools/ktap.rst), both ends of it.
//!
//! The guest writes results with [`Writer`]; the host reads them with
//! [`Parser`], which is fed one line at a time as the stream arrives and
//! copes with what a dying guest produces: interleaved kernel lines, garbage,
//! missing result lines and streams cut off in the middle of a subtest.

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

/// TestResult of one test as the guest reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestResult {
    Pass,
    Fail(String),
    Skip(String),
    /// Failed, as it also does where it is expected to (fstests on the
    /// baseline kernel): kselftest's `# XFAIL`, never counted as a pass.
    Known(String),
}

/// Writes KTAP, flushing after every line so the host sees progress live.
pub struct Writer<W: Write> {
    out: W,
    depth: usize,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer { out, depth: 0 }
    }

    /// A writer for a subtest: every line indented one level deeper.
    pub fn nested(out: W, depth: usize) -> Self {
        Writer { out, depth }
    }

    fn line(&mut self, text: &str) -> io::Result<()> {
        let indent = "    ".repeat(self.depth);
        writeln!(self.out, "{indent}{text}")?;
        self.out.flush()
    }

    pub fn header(&mut self) -> io::Result<()> {
        self.line("KTAP version 1")
    }

    pub fn subtest_header(&mut self, name: &str) -> io::Result<()> {
        self.line("KTAP version 1")?;
        self.line(&format!("# Subtest: {}", clean(name)))
    }

    pub fn plan(&mut self, count: usize) -> io::Result<()> {
        self.line(&format!("1..{count}"))
    }

    /// Diagnostic lines; multi-line text becomes several `# ` lines.
    pub fn diag(&mut self, text: &str) -> io::Result<()> {
        for l in text.lines() {
            self.line(format!("# {l}").trim_end())?;
        }
        Ok(())
    }

    pub fn result(&mut self, number: usize, name: &str, outcome: &TestResult) -> io::Result<()> {
        let name = clean(name);
        let text = match outcome {
            TestResult::Pass => format!("ok {number} {name}"),
            TestResult::Fail(reason) => format!("not ok {number} {name} # {}", one_line(reason)),
            TestResult::Skip(reason) => format!("ok {number} {name} # SKIP {}", one_line(reason)),
            TestResult::Known(reason) => format!("ok {number} {name} # XFAIL {}", one_line(reason)),
        };
        self.line(text.trim_end())
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

/// Test names may not contain '#' (it starts a directive) nor line breaks.
fn clean(name: &str) -> String {
    one_line(name).replace('#', "_")
}

fn one_line(text: &str) -> String {
    text.split(['\n', '\r']).map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" / ")
}

/// Verdict of one parsed test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Skip,
    /// A known failure ([`TestResult::Known`]).
    Known,
    /// Failed, then passed when the host ran it again (`--rerun-failed`):
    /// the host's verdict, never the guest's; it fails a run only when
    /// asked to (`--flaky-fails`).
    Flaky,
}

impl Verdict {
    /// The word results.json uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Skip => "skip",
            Verdict::Known => "known",
            Verdict::Flaky => "flaky",
        }
    }
}

/// One result line with everything attached to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Case {
    pub number: usize,
    pub name: String,
    pub verdict: Verdict,
    /// Text after `#` on the result line (without `SKIP`).
    pub reason: Option<String>,
    /// `#` lines that came before the result line at the same level.
    pub diagnostics: Vec<String>,
    /// The subtest that preceded this result, if any.
    pub subtests: Option<Group>,
    /// When the result line arrived, counted from the start of the stream.
    #[serde(skip)]
    pub at: Duration,
    /// Time since the previous line of the same group: how long the case ran.
    #[serde(skip)]
    pub duration: Duration,
}

/// A plan and its results: the whole stream, or one subtest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Group {
    pub name: Option<String>,
    pub plan: Option<usize>,
    pub cases: Vec<Case>,
    /// Diagnostics that no result line claimed.
    pub diagnostics: Vec<String>,
}

impl Group {
    /// Planned tests that never reported, as numbers.
    pub fn missing(&self) -> Vec<usize> {
        let Some(plan) = self.plan else { return Vec::new() };
        (1..=plan).filter(|n| !self.cases.iter().any(|c| c.number == *n)).collect()
    }
}

#[derive(Debug, Default)]
struct Frame {
    group: Group,
    pending_diagnostics: Vec<String>,
    pending_child: Option<Group>,
    last_at: Duration,
}

/// Subtests nest at most this deep; deeper lines are not KTAP to the host.
pub const MAX_DEPTH: usize = 16;
/// Cases, diagnostics and ignored lines kept from one stream, all counted
/// together; the rest are dropped and the stream fails (a guest flooding
/// its results port must not exhaust the host's memory).
pub const MAX_ITEMS: usize = 200_000;
/// Characters kept of one name, reason, diagnostic or ignored line.
pub const MAX_TEXT: usize = 4096;
/// Bytes of text kept from one stream, all lines together.
pub const MAX_BYTES: usize = 16 << 20;
/// The case [`Parser::finish`] adds when lines were dropped.
pub const OVERFLOW_CASE: &str = "(results stream)";

/// Incremental KTAP parser.
#[derive(Debug, Default)]
pub struct Parser {
    stack: Vec<Frame>,
    /// Lines that were neither KTAP nor blank, kept for the report.
    pub ignored: Vec<String>,
    saw_header: bool,
    items: usize,
    bytes: usize,
    dropped: u64,
}

/// At most [`MAX_TEXT`] characters of `text`, cut at a character boundary.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

enum Line<'a> {
    Header,
    Plan(usize),
    Result { ok: bool, number: usize, name: &'a str, directive: Option<&'a str> },
    Subtest(&'a str),
    Diag(&'a str),
    Blank,
    Other,
}

fn classify(text: &str) -> Line<'_> {
    let t = text.trim();
    if t.is_empty() {
        return Line::Blank;
    }
    if t.starts_with("KTAP version ") || t.starts_with("TAP version ") {
        return Line::Header;
    }
    if let Some(n) = t.strip_prefix("1..") {
        return n.parse().map(Line::Plan).unwrap_or(Line::Other);
    }
    if let Some(rest) = t.strip_prefix("# Subtest:") {
        return Line::Subtest(rest.trim());
    }
    if t == "#" {
        return Line::Diag("");
    }
    if let Some(rest) = t.strip_prefix("# ") {
        return Line::Diag(rest);
    }
    let (ok, rest) = if let Some(r) = t.strip_prefix("not ok ") {
        (false, r)
    } else if let Some(r) = t.strip_prefix("ok ") {
        (true, r)
    } else {
        return Line::Other;
    };
    let (num, tail) = rest.split_once(' ').unwrap_or((rest, ""));
    let Ok(number) = num.parse() else { return Line::Other };
    let (name, directive) = match tail.split_once(" # ").or_else(|| tail.strip_prefix("# ").map(|d| ("", d))) {
        Some((n, d)) => (n.trim(), Some(d.trim())),
        None => (tail.trim(), None),
    };
    Line::Result { ok, number, name, directive }
}

/// True for a line KTAP gives meaning to (header, plan, result, diagnostic,
/// subtest name), whatever its indentation; false for anything else.
pub fn is_ktap_line(line: &str) -> bool {
    !matches!(classify(line), Line::Other)
}

impl Parser {
    pub fn new() -> Self {
        Parser::default()
    }

    /// True once a KTAP or TAP header has been seen.
    pub fn started(&self) -> bool {
        self.saw_header
    }

    /// Feeds one line (without its newline) that arrived `at` after the start.
    pub fn feed(&mut self, raw: &str, at: Duration) {
        let raw = raw.trim_end_matches(['\r', '\n']);
        let spaces = raw.len() - raw.trim_start_matches(' ').len();
        let depth = spaces / 4;
        let line = if depth > MAX_DEPTH { Line::Other } else { classify(raw) };
        if matches!(line, Line::Blank) {
            return;
        }
        if self.items >= MAX_ITEMS || self.bytes >= MAX_BYTES {
            self.dropped += 1;
            return;
        }
        self.items += 1;
        self.bytes += raw.len().min(MAX_TEXT + 64);
        if matches!(line, Line::Other) || (!self.saw_header && !matches!(line, Line::Header)) {
            // Not KTAP, or before the stream starts (boot noise).
            self.ignored.push(bounded(raw.trim_start_matches(' ')));
            return;
        }
        self.saw_header = true;
        self.enter(depth, at, matches!(line, Line::Header | Line::Subtest(_)));
        let frame = self.stack.last_mut().expect("enter leaves a frame");
        match line {
            Line::Header | Line::Blank | Line::Other => {}
            Line::Subtest(name) => frame.group.name = Some(bounded(name)),
            Line::Plan(n) => frame.group.plan = Some(n),
            Line::Diag(text) => frame.pending_diagnostics.push(bounded(text)),
            Line::Result { ok, number, name, directive } => {
                let (verdict, reason) = match directive {
                    Some(d) if d.get(..4).is_some_and(|k| k.eq_ignore_ascii_case("skip")) => {
                        (Verdict::Skip, Some(bounded(d[4..].trim())).filter(|s| !s.is_empty()))
                    }
                    Some(d) if d.get(..5).is_some_and(|k| k.eq_ignore_ascii_case("xfail")) => {
                        (Verdict::Known, Some(bounded(d[5..].trim())).filter(|s| !s.is_empty()))
                    }
                    Some(d) => (if ok { Verdict::Pass } else { Verdict::Fail }, Some(bounded(d))),
                    None => (if ok { Verdict::Pass } else { Verdict::Fail }, None),
                };
                let case = Case {
                    number,
                    name: bounded(name),
                    verdict,
                    reason,
                    diagnostics: std::mem::take(&mut frame.pending_diagnostics),
                    subtests: frame.pending_child.take(),
                    at,
                    duration: at.saturating_sub(frame.last_at),
                };
                frame.last_at = at;
                frame.group.cases.push(case);
            }
        }
    }

    /// Makes the frame for `depth` the innermost one. A header at a depth
    /// whose frame already holds a finished subtest starts a new subtest.
    fn enter(&mut self, depth: usize, at: Duration, header: bool) {
        while self.stack.len() > depth + 1 {
            self.close_innermost(at);
        }
        if header && depth > 0 && self.stack.len() == depth + 1 {
            let frame = &self.stack[depth];
            if frame.group.plan.is_some() || !frame.group.cases.is_empty() {
                self.close_innermost(at);
            }
        }
        while self.stack.len() < depth + 1 {
            let last_at = self.stack.last().map_or(Duration::ZERO, |f| f.last_at);
            self.stack.push(Frame { last_at, ..Frame::default() });
        }
    }

    /// Pops the innermost frame; it becomes the subtest of the next result
    /// line of its parent. A subtest that is replaced before any result line
    /// claimed it is recorded as a failed case of its own.
    fn close_innermost(&mut self, at: Duration) {
        let Some(mut frame) = self.stack.pop() else { return };
        frame.group.diagnostics.append(&mut frame.pending_diagnostics);
        if let Some(orphan) = frame.pending_child.take() {
            frame.group.cases.push(unclaimed(orphan, &frame.group, at));
        }
        if let Some(parent) = self.stack.last_mut() {
            if let Some(orphan) = parent.pending_child.replace(frame.group) {
                let number = parent.group.cases.len() + 1;
                parent.group.cases.push(Case { number, ..unclaimed(orphan, &parent.group, at) });
            }
        }
    }

    /// Ends the stream. Subtests still open (the guest died inside them) are
    /// turned into failed cases so that nothing that started is lost.
    pub fn finish(mut self, at: Duration) -> (Group, Vec<String>) {
        while self.stack.len() > 1 {
            self.close_innermost(at);
        }
        let mut top = self.stack.pop().unwrap_or_default();
        top.group.diagnostics.append(&mut top.pending_diagnostics);
        if let Some(orphan) = top.pending_child.take() {
            let case = unclaimed(orphan, &top.group, at);
            top.group.cases.push(case);
        }
        if self.dropped > 0 {
            top.group.cases.push(Case {
                number: top.group.cases.last().map_or(1, |c| c.number + 1),
                name: OVERFLOW_CASE.to_string(),
                verdict: Verdict::Fail,
                reason: Some(format!(
                    "{} lines dropped past the first {} ({} MiB of text kept at most): the guest flooded its results port",
                    self.dropped,
                    self.items,
                    MAX_BYTES >> 20
                )),
                diagnostics: Vec::new(),
                subtests: None,
                at,
                duration: Duration::ZERO,
            });
        }
        (top.group, self.ignored)
    }
}

fn unclaimed(group: Group, parent: &Group, at: Duration) -> Case {
    Case {
        number: parent.cases.last().map_or(1, |c| c.number + 1),
        name: group.name.clone().unwrap_or_else(|| "(unnamed subtest)".to_string()),
        verdict: Verdict::Fail,
        reason: Some("subtest has no result line: the stream ended or moved on inside it".to_string()),
        diagnostics: Vec::new(),
        subtests: Some(group),
        at,
        duration: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Group, Vec<String>) {
        let mut p = Parser::new();
        for (i, l) in text.lines().enumerate() {
            p.feed(l, Duration::from_millis(i as u64 * 10));
        }
        p.finish(Duration::from_secs(1))
    }

    #[test]
    fn writer_output_parses_back() {
        let mut w = Writer::new(Vec::new());
        w.header().unwrap();
        w.plan(2).unwrap();
        let mut sub = Writer::nested(Vec::new(), 1);
        sub.subtest_header("smoke").unwrap();
        sub.plan(3).unwrap();
        sub.result(1, "a", &TestResult::Pass).unwrap();
        sub.diag("errno 22\nsecond line").unwrap();
        sub.result(2, "b#c", &TestResult::Fail("bad\nthing".into())).unwrap();
        sub.result(3, "c", &TestResult::Skip("no pmem".into())).unwrap();
        let mut out = w.into_inner();
        out.extend(sub.into_inner());
        let mut w = Writer::new(out);
        w.result(1, "smoke", &TestResult::Fail("1 case failed".into())).unwrap();
        w.result(2, "other", &TestResult::Pass).unwrap();
        let text = String::from_utf8(w.into_inner()).unwrap();
        assert!(text.contains("    not ok 2 b_c # bad / thing\n"), "{text}");

        let (top, ignored) = parse(&text);
        assert!(ignored.is_empty());
        assert_eq!(top.plan, Some(2));
        assert_eq!(top.cases.len(), 2);
        let smoke = &top.cases[0];
        assert_eq!((smoke.name.as_str(), smoke.verdict), ("smoke", Verdict::Fail));
        let sub = smoke.subtests.as_ref().unwrap();
        assert_eq!(sub.name.as_deref(), Some("smoke"));
        let got: Vec<_> = sub.cases.iter().map(|c| (c.name.as_str(), c.verdict, c.reason.as_deref())).collect();
        assert_eq!(
            got,
            [
                ("a", Verdict::Pass, None),
                ("b_c", Verdict::Fail, Some("bad / thing")),
                ("c", Verdict::Skip, Some("no pmem"))
            ]
        );
        assert_eq!(sub.cases[1].diagnostics, ["errno 22", "second line"]);
        assert!(top.cases[1].subtests.is_none());
    }

    #[test]
    fn kernel_lines_interleaved_are_ignored() {
        let text = "[    0.1] Linux version 6.12\nKTAP version 1\n1..1\n    KTAP version 1\n[    2.000] random: crng init done\n    1..1\n    ok 1 x\nok 1 w\n";
        let (top, ignored) = parse(text);
        assert_eq!(ignored.len(), 2);
        assert_eq!(top.cases[0].subtests.as_ref().unwrap().cases.len(), 1);
        assert!(top.missing().is_empty());
    }

    #[test]
    fn malformed_lines_do_not_break_structure() {
        let text = "KTAP version 1\n1..2\nok x notanumber\nnot ok\n1..z\nok 1 a\nok 2 b # skip\n";
        let (top, ignored) = parse(text);
        assert_eq!(ignored, ["ok x notanumber", "not ok", "1..z"]);
        assert_eq!(top.cases.len(), 2);
        assert_eq!(top.cases[1].verdict, Verdict::Skip);
        assert_eq!(top.cases[1].reason, None);
    }

    #[test]
    fn truncated_subtest_becomes_failed_case() {
        let text = "KTAP version 1\n1..2\n    KTAP version 1\n    # Subtest: smoke\n    1..4\n    ok 1 a\n    ok 2 b\n";
        let (top, _) = parse(text);
        assert_eq!(top.missing(), vec![2]);
        let c = &top.cases[0];
        assert_eq!((c.name.as_str(), c.verdict), ("smoke", Verdict::Fail));
        let sub = c.subtests.as_ref().unwrap();
        assert_eq!(sub.missing(), vec![3, 4]);
    }

    #[test]
    fn subtest_replaced_before_its_result_is_kept_as_failure() {
        let text = "KTAP version 1\n1..2\n    KTAP version 1\n    # Subtest: one\n    1..1\n    ok 1 a\n    KTAP version 1\n    # Subtest: two\n    1..1\n    ok 1 b\nok 2 two\n";
        let (top, _) = parse(text);
        let names: Vec<_> = top.cases.iter().map(|c| (c.name.as_str(), c.verdict)).collect();
        assert_eq!(names, [("one", Verdict::Fail), ("two", Verdict::Pass)]);
        assert_eq!(top.cases[1].subtests.as_ref().unwrap().name.as_deref(), Some("two"));
    }

    #[test]
    fn nothing_before_header_counts() {
        let (top, ignored) = parse("ok 1 fake\n1..1\n");
        assert!(top.cases.is_empty());
        assert_eq!(ignored.len(), 2);
    }

    #[test]
    fn durations_come_from_arrival_times() {
        let mut p = Parser::new();
        p.feed("KTAP version 1", Duration::from_millis(0));
        p.feed("1..2", Duration::from_millis(5));
        p.feed("ok 1 a", Duration::from_millis(100));
        p.feed("ok 2 b", Duration::from_millis(350));
        let (top, _) = p.finish(Duration::from_secs(1));
        assert_eq!(top.cases[0].duration, Duration::from_millis(100));
        assert_eq!(top.cases[1].duration, Duration::from_millis(250));
    }

    #[test]
    fn ktap_line_recognition() {
        for l in ["KTAP version 1", "    1..3", "ok 1 a", "not ok 2 b # x", "# diag", "  # Subtest: s", ""] {
            assert!(is_ktap_line(l), "{l:?}");
        }
        for l in ["hello", "ok x", "1..y", "[ 1.0] Oops"] {
            assert!(!is_ktap_line(l), "{l:?}");
        }
    }

    #[test]
    fn empty_stream() {
        let (top, _) = parse("");
        assert!(top.cases.is_empty() && top.plan.is_none());
    }
}

/// Property tests: arbitrary and hostile streams, and the writer's output
/// read back. `DAX_SEAL_FUZZ_CASES` sets the case count (`cargo xtask fuzz`).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Lines a broken or hostile guest might send: KTAP-looking fragments,
    /// deep indentation, huge lines, control characters, any text.
    fn hostile_line() -> impl Strategy<Value = String> {
        prop_oneof![
            20 => "( {0,80})(KTAP version 1|1\\.\\.[0-9]{1,20}|(not )?ok [0-9]{1,20}[ #a-zA-Z]{0,20}|# Subtest: .{0,10}|# .{0,20}|#)",
            10 => any::<String>(),
            1 => (0usize..200_000).prop_map(|n| format!("{}ok 1 deep", " ".repeat(n))),
            1 => (0usize..100_000).prop_map(|n| format!("# {}", "x".repeat(n))),
            5 => "[\\x00-\\x1f\\x7f]{0,40}",
        ]
    }

    #[derive(Debug, Clone)]
    struct Tree {
        name: String,
        outcome: TestResult,
        diags: Vec<String>,
        children: Vec<Tree>,
    }

    fn tree(depth: u32) -> BoxedStrategy<Tree> {
        let outcome = prop_oneof![
            Just(TestResult::Pass),
            "[a-z][a-z0-9 ]{0,15}[a-z]".prop_map(TestResult::Fail),
            "[a-z][a-z0-9 ]{0,15}[a-z]".prop_map(TestResult::Skip),
            "[a-z][a-z0-9 ]{0,15}[a-z]".prop_map(TestResult::Known),
        ];
        let leaf = ("[a-z][a-z0-9_-]{0,12}", outcome, prop::collection::vec("[a-z][a-z0-9 =]{0,20}", 0..3));
        if depth == 0 {
            leaf.prop_map(|(name, outcome, diags)| Tree { name, outcome, diags, children: Vec::new() }).boxed()
        } else {
            (leaf, prop::collection::vec(tree(depth - 1), 0..4))
                .prop_map(|((name, outcome, diags), children)| Tree { name, outcome, diags, children })
                .boxed()
        }
    }

    fn write(trees: &[Tree], depth: usize, out: &mut Vec<u8>) {
        Writer::nested(&mut *out, depth).plan(trees.len()).unwrap();
        for (i, t) in trees.iter().enumerate() {
            if !t.children.is_empty() {
                Writer::nested(&mut *out, depth + 1).subtest_header(&t.name).unwrap();
                write(&t.children, depth + 1, out);
            }
            let mut w = Writer::nested(&mut *out, depth);
            for d in &t.diags {
                w.diag(d).unwrap();
            }
            w.result(i + 1, &t.name, &t.outcome).unwrap();
        }
    }

    fn check(trees: &[Tree], group: &Group) {
        assert_eq!(group.plan, Some(trees.len()));
        assert_eq!(group.cases.len(), trees.len(), "{group:#?}");
        for (i, (t, c)) in trees.iter().zip(&group.cases).enumerate() {
            assert_eq!(c.number, i + 1);
            assert_eq!(c.name, t.name);
            let (verdict, reason) = match &t.outcome {
                TestResult::Pass => (Verdict::Pass, None),
                TestResult::Fail(r) => (Verdict::Fail, Some(r.clone())),
                TestResult::Skip(r) => (Verdict::Skip, Some(r.clone())),
                TestResult::Known(r) => (Verdict::Known, Some(r.clone())),
            };
            assert_eq!((c.verdict, c.reason.clone()), (verdict, reason));
            let diags: Vec<String> = t.diags.iter().map(|d| d.trim_end().to_string()).collect();
            assert_eq!(c.diagnostics, diags);
            match &c.subtests {
                Some(sub) => check(&t.children, sub),
                None => assert!(t.children.is_empty(), "{} lost its subtest", t.name),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: crate::fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_stream_parses_within_bounds(lines in prop::collection::vec(hostile_line(), 0..200)) {
            let mut p = Parser::new();
            p.feed("KTAP version 1", Duration::ZERO);
            for l in &lines {
                p.feed(l, Duration::from_millis(1));
                prop_assert!(p.stack.len() <= MAX_DEPTH + 1);
            }
            let (group, ignored) = p.finish(Duration::from_secs(1));
            prop_assert!(ignored.iter().all(|l| l.chars().count() <= MAX_TEXT + 3));
            prop_assert!(group.cases.len() <= lines.len() + 1);
        }

        #[test]
        fn a_stream_cut_anywhere_keeps_every_result_before_the_cut(trees in prop::collection::vec(tree(2), 1..5), cut in any::<prop::sample::Index>()) {
            let mut out = Vec::new();
            Writer::new(&mut out).header().unwrap();
            write(&trees, 0, &mut out);
            let text = String::from_utf8(out).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            let keep = cut.index(lines.len() + 1);
            let mut p = Parser::new();
            for l in &lines[..keep] {
                p.feed(l, Duration::ZERO);
            }
            let (group, ignored) = p.finish(Duration::ZERO);
            prop_assert!(ignored.is_empty(), "{ignored:?}");
            let top_results = lines[..keep].iter().filter(|l| l.starts_with("ok ") || l.starts_with("not ok ")).count();
            prop_assert!(group.cases.len() >= top_results);
            if keep == lines.len() {
                check(&trees, &group);
            }
        }

    }
}

#[cfg(test)]
mod flood {
    use super::*;

    #[test]
    fn a_flood_is_dropped_counted_and_fails() {
        let mut p = Parser::new();
        p.feed("KTAP version 1", Duration::ZERO);
        for i in 0..MAX_ITEMS + 3 {
            p.feed(&format!("# flood {i}"), Duration::ZERO);
        }
        let (group, _) = p.finish(Duration::ZERO);
        let last = group.cases.last().unwrap();
        assert_eq!((last.name.as_str(), last.verdict), (OVERFLOW_CASE, Verdict::Fail));
        assert!(last.reason.as_deref().unwrap_or("").starts_with("4 lines dropped"), "{last:?}");
    }
}
