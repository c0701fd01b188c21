//! The persistence model behind `cargo xtask crash --model`: the tracer's
//! events (`xtask/pmem-trace`) replayed through 64-byte lines, and the crash
//! images that follow from them.
//!
//! A line's stores are *pending* until it is written back (clwb, clflushopt,
//! clflush) and a fence follows; a non-temporal store needs only the fence.
//! At a crash point (an acknowledgement marker) every line may have
//! persisted any prefix of its pending stores, from none to all: a line is
//! written back whole, so its stores reach the media in program order, and
//! lines are independent of each other between fences. A crash image is one
//! choice of prefix per pending line; the model generates the image that
//! drops every pending store, then random choices, reproducible from the
//! seed, up to a bound.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use dax_seal_protocol::disks::{mix64, GOLDEN};

pub const LINE: u64 = 64;

/// One traced event, as `pmem-trace` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The line's content before the writer's first store (its first load).
    Prime {
        line: u64,
        bytes: Vec<u8>,
    },
    Store {
        offset: u64,
        bytes: Vec<u8>,
        non_temporal: bool,
    },
    Flush {
        line: u64,
    },
    Unattributed,
    Fence,
    Marker {
        slot: u64,
    },
}

fn hex(text: &str) -> Result<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        bail!("odd-length hex {text:?}");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).with_context(|| format!("bad hex {text:?}")))
        .collect()
}

fn offset(text: &str) -> Result<u64> {
    u64::from_str_radix(text, 16).with_context(|| format!("bad offset {text:?}"))
}

/// Parses a trace; a bad line is an error naming it.
pub fn parse(text: &str) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let event = match f.as_slice() {
            ["P", off, value] => Event::Prime { line: offset(off)?, bytes: hex(value)? },
            [kind @ ("S" | "N"), off, size, value] => {
                let bytes = hex(value)?;
                if size.parse::<usize>().ok() != Some(bytes.len()) {
                    bail!("trace line {}: size {size} but {} bytes", i + 1, bytes.len());
                }
                Event::Store { offset: offset(off)?, bytes, non_temporal: *kind == "N" }
            }
            ["F", _kind, line] => Event::Flush { line: offset(line)? },
            ["U", _kind] => Event::Unattributed,
            ["B", _kind] => Event::Fence,
            ["M", slot] => Event::Marker { slot: slot.parse().context("bad marker slot")? },
            _ => bail!("trace line {}: {line:?} is not an event", i + 1),
        };
        events.push(event);
    }
    Ok(events)
}

/// A line as the writer left it at a crash point: its stores so far
/// (`len`), of which the first `persisted` are durable for certain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineAt {
    pub line: u64,
    pub persisted: usize,
    pub len: usize,
}

impl LineAt {
    pub fn pending(&self) -> usize {
        self.len - self.persisted
    }
}

/// One crash point: just after an acknowledgement reached the marker page,
/// or just before a fence that finds lines written back but not yet
/// ordered (a record in flight). `acked` acknowledgements precede it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub acked: u64,
    pub before_fence: bool,
    pub lines: Vec<LineAt>,
}

impl Point {
    pub fn describe(&self) -> String {
        if self.before_fence {
            format!("before a fence, {} acked", self.acked)
        } else {
            format!("after ack {}", self.acked)
        }
    }
}

#[derive(Debug, Default)]
struct LineState {
    base: Option<Vec<u8>>,
    /// The content with every store so far.
    current: Vec<u8>,
    /// Each store: its byte range within the line and the bytes.
    stores: Vec<(usize, Vec<u8>)>,
    /// Stores written back (awaiting a fence).
    flushed: usize,
    /// Stores durable for certain.
    persisted: usize,
}

/// The replayed trace: every line's base and stores, and the crash points.
#[derive(Debug, Default)]
pub struct Model {
    lines: BTreeMap<u64, LineState>,
    pub points: Vec<Point>,
    /// Flushes whose line the tracer could not learn; the model cannot
    /// trust a trace with any (a writer without the calibration load).
    pub unattributed: u64,
    pub stores: u64,
    /// Stores of the bytes already there, left out of the model.
    pub silent: u64,
    pub flushes: u64,
    pub fences: u64,
    pub markers: u64,
}

impl Model {
    pub fn replay(events: &[Event]) -> Result<Model> {
        let mut m = Model::default();
        for e in events {
            match e {
                Event::Prime { line, bytes } => {
                    let state = m.lines.entry(*line).or_default();
                    if state.base.is_none() && state.stores.is_empty() && bytes.len() == LINE as usize {
                        state.base = Some(bytes.clone());
                        state.current = bytes.clone();
                    }
                }
                Event::Store { offset, bytes, non_temporal } => {
                    m.stores += 1;
                    let line = offset & !(LINE - 1);
                    let within = (offset - line) as usize;
                    if within + bytes.len() > LINE as usize {
                        bail!("a store at {offset:#x} of {} bytes crosses its line", bytes.len());
                    }
                    let state = m.lines.entry(line).or_default();
                    if state.base.is_none() {
                        bail!("line {line:#x} was stored to before the writer read it (no base content)");
                    }
                    // A store of the bytes already there (a page touched to
                    // fault it in) changes nothing a crash could lose.
                    if state.current[within..within + bytes.len()] == bytes[..] {
                        m.silent += 1;
                        continue;
                    }
                    state.current[within..within + bytes.len()].copy_from_slice(bytes);
                    state.stores.push((within, bytes.clone()));
                    if *non_temporal {
                        state.flushed = state.stores.len();
                    }
                }
                Event::Flush { line } => {
                    m.flushes += 1;
                    if let Some(state) = m.lines.get_mut(line) {
                        state.flushed = state.stores.len();
                    }
                }
                Event::Unattributed => m.unattributed += 1,
                Event::Fence => {
                    m.fences += 1;
                    if m.lines.values().any(|s| s.flushed > s.persisted) {
                        m.snapshot(true);
                    }
                    for state in m.lines.values_mut() {
                        state.persisted = state.flushed;
                    }
                }
                Event::Marker { .. } => {
                    m.markers += 1;
                    m.snapshot(false);
                }
            }
        }
        Ok(m)
    }

    fn snapshot(&mut self, before_fence: bool) {
        let lines = self
            .lines
            .iter()
            .filter(|(_, s)| !s.stores.is_empty())
            .map(|(line, s)| LineAt { line: *line, persisted: s.persisted, len: s.stores.len() })
            .collect();
        self.points.push(Point { acked: self.markers, before_fence, lines });
    }

    /// Every line the writer stored to.
    pub fn lines(&self) -> impl Iterator<Item = u64> + '_ {
        self.lines.iter().filter(|(_, s)| !s.stores.is_empty()).map(|(l, _)| *l)
    }

    /// Line `line`'s content with its first `stores` stores applied.
    pub fn content(&self, line: u64, stores: usize) -> Option<Vec<u8>> {
        let state = self.lines.get(&line)?;
        let mut bytes = state.base.clone()?;
        for (at, value) in state.stores.iter().take(stores) {
            bytes[*at..*at + value.len()].copy_from_slice(value);
        }
        Some(bytes)
    }
}

/// One crash image: how many stores of each line it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// (line, stores kept) for every line stored to by the crash point.
    pub keep: Vec<(u64, usize)>,
}

impl Image {
    /// The pending stores it drops, as `line:dropped` pairs (for replay).
    pub fn dropped(&self, point: &Point) -> String {
        let mut parts = Vec::new();
        for (l, (line, keep)) in point.lines.iter().zip(&self.keep) {
            debug_assert_eq!(l.line, *line);
            if *keep < l.len {
                parts.push(format!("{line:#x}:{}", l.len - keep));
            }
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(",")
        }
    }
}

/// Up to `max` distinct images of `point`: every pending store dropped
/// first, then random prefixes per pending line from `seed`. A point with
/// nothing pending has one image (everything kept).
pub fn images(point: &Point, seed: u64, max: usize) -> Vec<Image> {
    let all_dropped = Image { keep: point.lines.iter().map(|l| (l.line, l.persisted)).collect() };
    let mut out = vec![all_dropped];
    if point.lines.iter().all(|l| l.pending() == 0) {
        return out;
    }
    let mut state = seed ^ (point.acked * 2 + u64::from(point.before_fence)).wrapping_mul(GOLDEN);
    let mut tries = 0;
    while out.len() < max && tries < max * 8 {
        tries += 1;
        let keep = point
            .lines
            .iter()
            .map(|l| {
                state = state.wrapping_add(GOLDEN);
                let r = mix64(state);
                (l.line, l.persisted + (r % (l.pending() as u64 + 1)) as usize)
            })
            .collect();
        let image = Image { keep };
        if !out.contains(&image) {
            out.push(image);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(offset: u64, byte: u8) -> Event {
        Event::Store { offset, bytes: vec![byte; 8], non_temporal: false }
    }

    #[test]
    fn stores_of_the_same_bytes_are_left_out() {
        let m = Model::replay(&[prime(0), store(0, 0), store(8, 3), Event::Marker { slot: 0 }]).unwrap();
        assert_eq!((m.stores, m.silent), (2, 1));
        assert_eq!(m.points[0].lines[0].len, 1);
    }

    fn prime(line: u64) -> Event {
        Event::Prime { line, bytes: vec![0; 64] }
    }

    #[test]
    fn trace_lines_parse_and_bad_ones_are_named() {
        let text = "# dax-seal pmem trace 1\nP 40 00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\nS 48 2 abcd\nN 50 1 01\nF clwb 40\nU clflush\nB sfence\nM 3\n";
        let e = parse(text).unwrap();
        assert_eq!(e.len(), 7);
        assert_eq!(e[1], Event::Store { offset: 0x48, bytes: vec![0xab, 0xcd], non_temporal: false });
        assert!(matches!(e[2], Event::Store { non_temporal: true, .. }));
        assert_eq!(e[6], Event::Marker { slot: 3 });
        let err = parse("S 48 3 abcd\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(parse("X 1\n").unwrap_err().to_string().contains("not an event"));
    }

    /// A correct record (store, clwb, sfence, ack) leaves nothing pending;
    /// one acknowledged before its fence, or without its flush, does.
    #[test]
    fn only_flushed_and_fenced_lines_are_persistent() {
        let good = [prime(0), store(0, 1), Event::Flush { line: 0 }, Event::Fence, Event::Marker { slot: 0 }];
        let m = Model::replay(&good).unwrap();
        assert_eq!(m.points[1].lines, [LineAt { line: 0, persisted: 1, len: 1 }]);
        assert_eq!(images(&m.points[1], 1, 8).len(), 1, "nothing to drop");

        assert_eq!(m.points.len(), 2, "before the fence (the record in flight) and after the ack");
        assert!(m.points[0].before_fence && m.points[0].acked == 0 && m.points[0].lines[0].pending() == 1);
        assert!(!m.points[1].before_fence && m.points[1].acked == 1);

        let fence_first = [prime(0), store(0, 1), Event::Fence, Event::Flush { line: 0 }, Event::Marker { slot: 0 }];
        let m = Model::replay(&fence_first).unwrap();
        assert_eq!(m.points.len(), 1, "a fence with nothing written back is no crash point");
        assert_eq!(m.points[0].lines[0].pending(), 1);
        let imgs = images(&m.points[0], 1, 8);
        assert_eq!(imgs[0].keep, [(0, 0)], "the first image drops every pending store");
        assert_eq!(imgs[0].dropped(&m.points[0]), "0x0:1");
        assert_eq!(imgs.len(), 2, "keep none or keep one");

        let no_flush = [
            prime(0),
            prime(64),
            store(0, 1),
            store(64, 2),
            Event::Flush { line: 0 },
            Event::Fence,
            Event::Marker { slot: 0 },
        ];
        let m = Model::replay(&no_flush).unwrap();
        let after_ack = m.points.last().unwrap();
        let pending: Vec<u64> = after_ack.lines.iter().filter(|l| l.pending() > 0).map(|l| l.line).collect();
        assert_eq!(pending, [64]);
        // A later fence does not help a line never written back.
        let later = [&no_flush[..], &[Event::Fence, Event::Marker { slot: 1 }]].concat();
        let m = Model::replay(&later).unwrap();
        assert_eq!(m.points.last().unwrap().lines[1].pending(), 1);
    }

    #[test]
    fn non_temporal_stores_need_only_the_fence() {
        let nt = [
            prime(0),
            Event::Store { offset: 8, bytes: vec![7; 8], non_temporal: true },
            Event::Fence,
            Event::Marker { slot: 0 },
        ];
        let m = Model::replay(&nt).unwrap();
        assert_eq!(m.points[0].lines[0].pending(), 1, "before the fence");
        assert_eq!(m.points[1].lines[0].pending(), 0, "after it");
    }

    #[test]
    fn contents_are_the_base_with_a_prefix_of_the_stores() {
        let m = Model::replay(&[prime(0), store(0, 1), store(4, 2), Event::Marker { slot: 0 }]).unwrap();
        let c = m.content(0, 1).unwrap();
        assert_eq!(&c[..8], &[1; 8]);
        let c = m.content(0, 2).unwrap();
        assert_eq!(&c[..12], &[1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(m.content(0, 0).unwrap(), vec![0; 64]);
    }

    #[test]
    fn images_are_bounded_distinct_and_reproducible() {
        let mut events = Vec::new();
        for l in 0..6u64 {
            events.extend([prime(l * 64), store(l * 64, 1), store(l * 64 + 8, 2)]);
        }
        events.push(Event::Marker { slot: 0 });
        let m = Model::replay(&events).unwrap();
        let a = images(&m.points[0], 42, 10);
        assert_eq!(a.len(), 10);
        assert_eq!(a, images(&m.points[0], 42, 10));
        assert_ne!(a, images(&m.points[0], 43, 10));
        for (i, x) in a.iter().enumerate() {
            assert!(!a[..i].contains(x));
        }
    }

    #[test]
    fn a_store_before_the_line_was_read_is_refused() {
        let err = Model::replay(&[store(0, 1)]).unwrap_err().to_string();
        assert!(err.contains("before the writer read it"), "{err}");
    }
}
