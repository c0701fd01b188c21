//! What fsync costs on a large sealed file that nothing ever pinned,
//! against an unsealed file of the same size, preallocated and written. A
//! sealed file's fsync looks for pages that pins hold (docs/seal.md,
//! "Writes through pins are durable"); a file that cannot have been pinned
//! should not pay for that. Each file is made and synced once, then its
//! first fsync (after SEAL, for the sealed one) and the median of the next
//! ones are timed; nothing changes in between, so what is left is the
//! seal's own cost.

use std::fs::{self, File};
use std::path::Path;
use std::time::Instant;

use dax_seal_protocol::figure::{self, Figure};

use crate::calls::{errno_text, free_bytes};
use crate::fixture::{create_new, median};
use crate::seal;

/// Timed fsyncs after the first, per file.
const ROUNDS: usize = 15;
/// The files never take more than this share of the free space between them.
const SHARE: u64 = 2;
const MIB: u64 = 1 << 20;

/// Microseconds of one fsync.
fn fsync_us(file: &File, what: &str) -> Result<f64, String> {
    let start = Instant::now();
    file.sync_all().map_err(|e| format!("fsync of the {what} file: {}", errno_text(&e)))?;
    Ok(start.elapsed().as_nanos() as f64 / 1000.0)
}

/// The first fsync and the median of the next ROUNDS, in microseconds.
fn timed(file: &File, what: &str) -> Result<(f64, f64), String> {
    let first = fsync_us(file, what)?;
    let rest = (0..ROUNDS).map(|_| fsync_us(file, what)).collect::<Result<Vec<_>, _>>()?;
    Ok((first, median(rest)))
}

/// A file of `len` bytes in `dir`, allocated and written (zeros).
fn make(dir: &Path, name: &str, len: u64) -> Result<File, String> {
    let path = dir.join(name);
    let _ = fs::remove_file(&path);
    let file = create_new(&path)?;
    let e = |what: &str, err: std::io::Error| format!("{name}: {what}: {}", errno_text(&err));
    seal::fallocate(&file, 0, 0, len).map_err(|x| e("fallocate", x))?;
    // Zeroing converts the unwritten extents, as SEAL does for the other.
    seal::fallocate(&file, seal::FALLOC_FL_ZERO_RANGE, 0, len).map_err(|x| e("ZERO_RANGE", x))?;
    file.sync_all().map_err(|x| e("fsync", x))?;
    Ok(file)
}

/// Measures both files in `dir` and removes them; the report line ends
/// with the figures.
pub fn run(dir: &Path) -> Result<String, String> {
    let free = free_bytes(dir)?;
    let len = (free / SHARE / 2 / MIB).saturating_sub(8) * MIB;
    if len < 64 * MIB {
        return Err(format!("{} MiB free in {}: too little to measure fsync on", free / MIB, dir.display()));
    }
    let r = (|| -> Result<(f64, f64, f64), String> {
        let unsealed = make(dir, "fsync-unsealed", len)?;
        let sealed = make(dir, "fsync-sealed", len)?;
        seal::seal(&sealed).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
        let (sealed_first, sealed_us) = timed(&sealed, "sealed")?;
        let (_, unsealed_us) = timed(&unsealed, "unsealed")?;
        let _ = seal::unseal(&sealed);
        Ok((sealed_first, sealed_us, unsealed_us))
    })();
    let _ = fs::remove_file(dir.join("fsync-sealed"));
    let _ = fs::remove_file(dir.join("fsync-unsealed"));
    let (sealed_first, sealed_us, unsealed_us) = r?;
    Ok(format!(
        "fsync of an unchanged {} MiB file, median of {ROUNDS}: sealed and never pinned {sealed_us:.1} us (its \
         first after SEAL {sealed_first:.1} us), unsealed {unsealed_us:.1} us; ratio {:.2}\n{}",
        len / MIB,
        sealed_us / unsealed_us,
        figure::lines(&[
            Figure::new(figure::FSYNC_SEALED, sealed_us, "us"),
            Figure::new(figure::FSYNC_SEALED_FIRST, sealed_first, "us"),
            Figure::new(figure::FSYNC_UNSEALED, unsealed_us, "us"),
        ])
    ))
}
