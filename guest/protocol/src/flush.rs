//! The userspace-flush workload's side of the results port: the
//! acknowledgements its writers send after each fence, the map fingerprint
//! the crash writer reports, and the tallies the verifier reports, as KTAP
//! diagnostic lines both sides format and parse here.
//!
//! An acknowledgement is the writer's claim "record N is durable". The host
//! keeps every one it received, also those it reads after it killed QEMU,
//! and hands their count to the verifier on the next boot.

use std::collections::BTreeMap;
use std::fmt;

/// The three writers, in the order they are reported.
pub const WRITERS: [&str; 3] = [SEALED, SPARSE_CONTROL, FDATASYNC_CONTROL];
/// A sealed, preallocated DAX file mapped MAP_SYNC, made durable with cache
/// flushes and fences only.
pub const SEALED: &str = "sealed";
/// An unsealed sparse DAX file mapped without MAP_SYNC, with the same
/// flushes only: the loss the seal prevents.
pub const SPARSE_CONTROL: &str = "sparse-control";
/// write(2) and fdatasync(2) per record: the conventional path.
pub const FDATASYNC_CONTROL: &str = "fdatasync-control";

/// The most records a writer appends: 128 MiB of 128-byte records.
pub const MAX_RECORDS: u64 = 1 << 20;

/// The standalone workload's fourth writer, for the commit-rate benchmark:
/// an unsealed sparse DAX file mapped MAP_SYNC, whose every first store to a
/// page allocates a block and forces the log before the fault returns. Not
/// in the crash campaign: those log forces would make the sparse control's
/// allocations durable too.
pub const SPARSE_MAP_SYNC: &str = "sparse-map-sync";
/// The reference writer of the devdax topology: the same records and
/// flushes into a device-dax mapping (MAP_SYNC), no filesystem at all.
pub const DEVICE_DAX: &str = "device-dax";

/// `dax-seal latency KIND BUCKET:COUNT,...`: first-touch write-fault
/// latencies, bucket b holding [2^b, 2^(b+1)) microseconds.
pub const LATENCY_PREFIX: &str = "dax-seal latency ";

/// `dax-seal ack WRITER SEQ`: record SEQ of WRITER is flushed and fenced.
pub const ACK_PREFIX: &str = "dax-seal ack ";
/// Printed once every writer's file is ready, just before the first record.
pub const WRITING: &str = "dax-seal flush: writers started";
/// Printed when every writer has written all its records.
pub const WRITTEN: &str = "dax-seal flush: writers done";
/// `dax-seal flush map WRITER HASH`: the fingerprint of a file's map.
pub const MAP_PREFIX: &str = "dax-seal flush map ";
/// `dax-seal flush result WRITER acked=.. recovered=.. lost=.. torn=.. misread=..`.
pub const RESULT_PREFIX: &str = "dax-seal flush result ";

pub fn ack_line(writer: &str, seq: u64) -> String {
    format!("{ACK_PREFIX}{writer} {seq}")
}

/// The ack in a results line (KTAP diagnostic, possibly indented), if any.
pub fn parse_ack(line: &str) -> Option<(&str, u64)> {
    let rest = &line[line.find(ACK_PREFIX)? + ACK_PREFIX.len()..];
    let (writer, seq) = rest.trim().split_once(' ')?;
    Some((writer, seq.parse().ok()?))
}

/// Per writer: how many records were acknowledged, from every line the host
/// read. Acks come in order, one per record from 0, so the count is the
/// highest sequence number plus one; a gap is an error the caller reports.
pub fn acknowledged<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<BTreeMap<String, u64>, String> {
    let mut count: BTreeMap<String, u64> = BTreeMap::new();
    for line in lines {
        let Some((writer, seq)) = parse_ack(line) else { continue };
        let next = count.entry(writer.to_string()).or_insert(0);
        if seq != *next {
            return Err(format!("{writer}: acknowledgement {seq} arrived after {next} acknowledgements"));
        }
        *next += 1;
    }
    Ok(count)
}

pub fn map_line(writer: &str, hash: u64) -> String {
    format!("{MAP_PREFIX}{writer} {hash:#018x}")
}

pub fn parse_map(line: &str) -> Option<(&str, u64)> {
    let rest = &line[line.find(MAP_PREFIX)? + MAP_PREFIX.len()..];
    let (writer, hash) = rest.trim().split_once(' ')?;
    Some((writer, u64::from_str_radix(hash.trim_start_matches("0x"), 16).ok()?))
}

/// What the verifier found in one writer's file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    /// Records the host had acknowledgements for.
    pub acked: u64,
    /// Records found intact, wherever they are.
    pub recovered: u64,
    /// Acknowledged records not found intact.
    pub lost: u64,
    /// Slots holding bytes whose checksum fails: a record cut by the crash.
    pub torn: u64,
    /// Slots whose checksum holds but whose record is not the one that
    /// belongs there. Never acceptable: the verifier would misread it.
    pub misread: u64,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acked={} recovered={} lost={} torn={} misread={}",
            self.acked, self.recovered, self.lost, self.torn, self.misread
        )
    }
}

pub fn result_line(writer: &str, tally: &Tally) -> String {
    format!("{RESULT_PREFIX}{writer} {tally}")
}

pub fn parse_result(line: &str) -> Option<(&str, Tally)> {
    let rest = &line[line.find(RESULT_PREFIX)? + RESULT_PREFIX.len()..];
    let mut words = rest.split_whitespace();
    let writer = words.next()?;
    let mut t = Tally::default();
    for word in words {
        let (key, value) = word.split_once('=')?;
        let value: u64 = value.parse().ok()?;
        match key {
            "acked" => t.acked = value,
            "recovered" => t.recovered = value,
            "lost" => t.lost = value,
            "torn" => t.torn = value,
            "misread" => t.misread = value,
            _ => return None,
        }
    }
    Some((writer, t))
}

/// The verifier's parameter that carries a writer's acknowledgement count.
pub fn acked_param(writer: &str) -> String {
    format!("userspace-flush-verify.acked-{writer}")
}

/// The verifier's parameter that carries the sealed file's map fingerprint.
pub const MAP_PARAM: &str = "userspace-flush-verify.map-sealed";

/// The persistence model (`cargo xtask crash --model`) traces the sealed
/// writer through QEMU's TCG plugin: the writer maps its file at this fixed
/// user address, so the plugin knows which stores are the writer's ...
pub const MODEL_WINDOW: u64 = 0x5a5a_0000_0000;
/// ... and the window's length the plugin watches.
pub const MODEL_WINDOW_LEN: u64 = MAX_RECORDS * 128;
/// After each acknowledgement the sealed writer stores the record number
/// into slot `seq % MODEL_MARKER_SLOTS` of an anonymous page mapped here:
/// the plugin's marker, so the trace knows where each acknowledgement fell.
pub const MODEL_MARKER: u64 = 0x5b5b_0000_0000;
pub const MODEL_MARKER_SLOTS: u64 = 512;

/// Deliberately broken sealed writers, for the model's self-test
/// (`userspace-flush-write.bug`): the model must catch both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// The correct writer.
    None,
    /// Record `userspace-flush-write.bug-record` is fenced and acknowledged
    /// with its last line never written back.
    OmitFlush,
    /// Every record is fenced before its lines are written back (and so
    /// acknowledged with the write-backs unordered).
    FenceBeforeFlush,
}

impl Bug {
    pub fn from_param(value: u64) -> Bug {
        match value {
            1 => Bug::OmitFlush,
            2 => Bug::FenceBeforeFlush,
            _ => Bug::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_round_trip_through_indented_diagnostics() {
        let line = format!("        # {}", ack_line(SPARSE_CONTROL, 41));
        assert_eq!(parse_ack(&line), Some((SPARSE_CONTROL, 41)));
        assert_eq!(parse_ack("# dax-seal ack sealed x"), None);
        assert_eq!(parse_ack("# dax-seal ack sealed"), None);
        assert_eq!(parse_ack("ok 1 sealed"), None);
    }

    #[test]
    fn acknowledged_counts_per_writer_and_refuses_gaps() {
        let lines = [ack_line(SEALED, 0), "ok 1 x".into(), ack_line(SEALED, 1), ack_line(FDATASYNC_CONTROL, 0)];
        let got = acknowledged(lines.iter().map(String::as_str)).unwrap();
        assert_eq!(got.get(SEALED), Some(&2));
        assert_eq!(got.get(FDATASYNC_CONTROL), Some(&1));
        assert_eq!(got.get(SPARSE_CONTROL), None);
        let gap = [ack_line(SEALED, 0), ack_line(SEALED, 2)];
        let err = acknowledged(gap.iter().map(String::as_str)).unwrap_err();
        assert!(err.contains("acknowledgement 2 arrived after 1"), "{err}");
    }

    #[test]
    fn maps_and_results_round_trip() {
        assert_eq!(parse_map(&format!("    # {}", map_line(SEALED, 0xdead_beef))), Some((SEALED, 0xdead_beef)));
        let t = Tally { acked: 9, recovered: 7, lost: 2, torn: 1, misread: 0 };
        assert_eq!(parse_result(&format!("  # {}", result_line(SPARSE_CONTROL, &t))), Some((SPARSE_CONTROL, t)));
        assert_eq!(parse_result("# dax-seal flush result sealed acked=x"), None);
        assert_eq!(parse_result("# dax-seal flush result sealed bogus=1"), None);
    }
}

/// Property tests (`cargo xtask fuzz` raises the case count).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: crate::fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

        /// The host reads whatever a guest sends on the results port: any
        /// line is an ack, a map, a result, or nothing, never a panic.
        #[test]
        fn any_line_parses_or_is_nothing(line in any::<String>()) {
            let _ = parse_ack(&line);
            let _ = parse_map(&line);
            let _ = parse_result(&line);
            let _ = acknowledged([line.as_str()]);
        }

        #[test]
        fn lines_read_back(writer in "[a-z-]{1,20}", seq in any::<u64>(), t in any::<(u64, u64, u64, u64, u64)>()) {
            let (ack, map) = (ack_line(&writer, seq), map_line(&writer, seq));
            prop_assert_eq!(parse_ack(&ack), Some((writer.as_str(), seq)));
            prop_assert_eq!(parse_map(&map), Some((writer.as_str(), seq)));
            let tally = Tally { acked: t.0, recovered: t.1, lost: t.2, torn: t.3, misread: t.4 };
            let result = result_line(&writer, &tally);
            prop_assert_eq!(parse_result(&result), Some((writer.as_str(), tally)));
        }
    }
}
