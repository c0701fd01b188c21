//! The writers' record: 128 bytes, two cache lines, aligned to its slot.
//!
//! ```text
//! word  0      1       2    3..15     15
//!       magic  writer  seq  payload   checksum (of words 0..15)
//! ```
//!
//! The checksum sits in the second line, so a crash that keeps the first
//! line of a record and not the second leaves a slot the verifier sees as
//! torn. The payload is a function of writer and sequence number: a slot
//! whose checksum holds but whose record belongs elsewhere is a misread,
//! which the verifier never accepts.

use dax_seal_protocol::disks::{mix64, GOLDEN};
use dax_seal_protocol::flush::Tally;

pub const RECORD: usize = 128;
const WORDS: usize = RECORD / 8;
const MAGIC: u64 = 0x4453_464c_5553_4831; // "DSFLUSH1"

/// splitmix64 of one state: the shared mix after its increment.
fn mix(z: u64) -> u64 {
    mix64(z.wrapping_add(GOLDEN))
}

fn checksum(words: &[u64]) -> u64 {
    words.iter().fold(0x6a09_e667_f3bc_c908, |h, w| mix(h ^ w))
}

/// A writer's tag in its records.
pub fn tag(writer: &str) -> u64 {
    writer.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The bytes of record `seq` of the writer tagged `tag`.
pub fn encode(tag: u64, seq: u64) -> [u8; RECORD] {
    let mut w = [0u64; WORDS];
    w[0] = MAGIC;
    w[1] = tag;
    w[2] = seq;
    for (k, word) in w.iter_mut().enumerate().take(WORDS - 1).skip(3) {
        *word = mix(tag ^ seq.rotate_left(17) ^ k as u64);
    }
    w[WORDS - 1] = checksum(&w[..WORDS - 1]);
    let mut out = [0u8; RECORD];
    for (chunk, word) in out.chunks_exact_mut(8).zip(w) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The record that belongs in this slot, intact.
    Intact,
    /// Nothing was ever written here (or the write was lost with its block).
    Empty,
    /// Bytes whose checksum fails.
    Torn,
    /// A checksummed record that is not the one for this slot.
    Misread,
}

pub fn classify(tag: u64, seq: u64, bytes: &[u8]) -> Slot {
    if bytes.iter().all(|b| *b == 0) {
        return Slot::Empty;
    }
    let w: Vec<u64> = bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
    if w.len() != WORDS || checksum(&w[..WORDS - 1]) != w[WORDS - 1] {
        return Slot::Torn;
    }
    if bytes == encode(tag, seq) {
        Slot::Intact
    } else {
        Slot::Misread
    }
}

/// Scans a writer's file: `acked` records were acknowledged.
pub fn tally(tag: u64, file: &[u8], acked: u64) -> Tally {
    let mut t = Tally { acked, ..Tally::default() };
    for (seq, bytes) in file.chunks_exact(RECORD).enumerate() {
        let slot = classify(tag, seq as u64, bytes);
        match slot {
            Slot::Intact => t.recovered += 1,
            Slot::Torn => t.torn += 1,
            Slot::Misread => t.misread += 1,
            Slot::Empty => {}
        }
        if (seq as u64) < acked && slot != Slot::Intact {
            t.lost += 1;
        }
    }
    // Acknowledged records past the end of what is left of the file.
    t.lost += acked.saturating_sub((file.len() / RECORD) as u64);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_kind_is_told_apart() {
        let t = tag("sealed");
        let r = encode(t, 7);
        assert_eq!(classify(t, 7, &r), Slot::Intact);
        assert_eq!(classify(t, 7, &[0u8; RECORD]), Slot::Empty);
        assert_eq!(classify(t, 8, &r), Slot::Misread, "the record for slot 7 found in slot 8");
        assert_eq!(classify(tag("sparse-control"), 7, &r), Slot::Misread, "another writer's record");
        let mut first_line_only = [0u8; RECORD];
        first_line_only[..64].copy_from_slice(&r[..64]);
        assert_eq!(classify(t, 7, &first_line_only), Slot::Torn);
        let mut second_line_only = [0u8; RECORD];
        second_line_only[64..].copy_from_slice(&r[64..]);
        assert_eq!(classify(t, 7, &second_line_only), Slot::Torn);
        let mut flipped = r;
        flipped[40] ^= 1;
        assert_eq!(classify(t, 7, &flipped), Slot::Torn);
    }

    #[test]
    fn tally_counts_what_was_lost_of_what_was_acknowledged() {
        let t = tag("w");
        let mut file = vec![0u8; 8 * RECORD];
        for seq in 0..5u64 {
            file[seq as usize * RECORD..][..RECORD].copy_from_slice(&encode(t, seq));
        }
        // Slot 2 lost its block (zeroes), slot 4 torn; 5 acknowledged.
        file[2 * RECORD..3 * RECORD].fill(0);
        file[4 * RECORD + 100] ^= 0xff;
        let got = tally(t, &file, 5);
        assert_eq!(got, Tally { acked: 5, recovered: 3, lost: 2, torn: 1, misread: 0 });
        // A file cut short loses the acknowledged records past its end.
        let short = tally(t, &file[..2 * RECORD], 5);
        assert_eq!((short.recovered, short.lost), (2, 3));
        // Records written but never acknowledged are recovered, not lost.
        assert_eq!(tally(t, &file, 1).lost, 0);
    }
}
