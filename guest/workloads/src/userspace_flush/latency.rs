//! First-touch write faults through `MAP_SYNC` mappings: what the first
//! store to each page costs when the file is sealed, when it is
//! preallocated but unsealed, and when it is sparse (each fault allocates a
//! block and forces the log before it returns). Figures are per page, in
//! microseconds: p50, p99 and a log2 histogram for plotting.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use dax_seal_protocol::figure::{self, Figure};
use dax_seal_protocol::flush::{DEVICE_DAX, LATENCY_PREFIX};

use crate::calls::{errno_text, Mapping};
use crate::fixture::{create_new, create_sparse};
use crate::persist::Persist;
use crate::seal;
use crate::trace::{self, TraceEvent};

const PAGE: usize = 4096;
/// Pages measured per file.
pub const PAGES: usize = 256;

/// The files whose faults are measured, in report order.
pub const KINDS: [&str; 3] = ["sealed", "preallocated", "sparse"];

/// A file of `PAGES` pages of the given kind in `dir`, never mapped yet.
fn make(dir: &Path, kind: &str) -> Result<File, String> {
    let path = dir.join(format!("faults-{kind}"));
    let _ = fs::remove_file(&path);
    let len = (PAGES * PAGE) as u64;
    let e = |what: &str, err: std::io::Error| format!("{kind}: {what}: {}", errno_text(&err));
    let file = match kind {
        "sparse" => create_sparse(&path, len)?,
        _ => {
            let f = create_new(&path)?;
            seal::fallocate(&f, 0, 0, len).map_err(|x| e("fallocate", x))?;
            // Written zeroes, so no fault has to convert an unwritten extent.
            f.set_len(len).map_err(|x| e("ftruncate", x))?;
            std::io::Write::write_all(&mut &f, &vec![0u8; len as usize]).map_err(|x| e("write", x))?;
            f
        }
    };
    file.sync_all().map_err(|x| e("fsync", x))?;
    if kind == "sealed" {
        seal::seal(&file).map_err(|x| e("SEAL", x))?;
    }
    Ok(file)
}

/// Nanoseconds of each page's first store, flush and fence.
fn measure(file: &File, persist: Persist) -> Result<Vec<u64>, String> {
    let mut map = Mapping::shared_sync(file, PAGES * PAGE).map_err(|e| format!("mmap MAP_SYNC: {}", errno_text(&e)))?;
    let mut ns = Vec::with_capacity(PAGES);
    for page in map.as_mut_slice().chunks_mut(PAGE) {
        let start = Instant::now();
        // SAFETY: the first byte of a page of the live mapping.
        unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 1) };
        persist.persist(&page[..1]);
        ns.push(start.elapsed().as_nanos() as u64);
    }
    Ok(ns)
}

/// Faults counted by `first_faults_force_nothing`.
const FIRST_FAULTS: usize = 4;

/// The first stores through a `MAP_SYNC` mapping of a file just sealed
/// must not force the log: SEAL commits synchronously, so nothing of the
/// inode is left for an fsync to make durable, and a fault that runs one
/// anyway costs what a sparse file's does. Counted through the
/// `xfs:xfs_file_fsync` event, which the fsync of a synchronous fault
/// fires; the preallocated file, whose last change an fsync covered, is
/// the reference.
pub fn first_faults_force_nothing(dir: &Path, persist: Persist) -> Result<String, String> {
    let event = TraceEvent::enable("xfs", "xfs_file_fsync")
        .map_err(|e| format!("{e}; the fsync a MAP_SYNC fault runs is counted there"))?;
    let mut notes = Vec::new();
    for kind in ["preallocated", "sealed"] {
        let file = make(dir, kind)?;
        let r = (|| {
            let ino = format!("{:#x}", file.metadata().map_err(|e| format!("fstat: {e}"))?.ino());
            event.take().map_err(|e| format!("reading the trace buffer: {e}"))?;
            let mut map =
                Mapping::shared_sync(&file, PAGES * PAGE).map_err(|e| format!("mmap MAP_SYNC: {}", errno_text(&e)))?;
            for page in map.as_mut_slice().chunks_mut(PAGE).take(FIRST_FAULTS) {
                // SAFETY: the first byte of a page of the live mapping.
                unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 1) };
                persist.persist(&page[..1]);
            }
            drop(map);
            let lines = event.take().map_err(|e| format!("reading the trace buffer: {e}"))?;
            Ok::<_, String>(lines.iter().filter(|l| trace::field(l, "ino") == Some(ino.as_str())).count())
        })();
        if kind == "sealed" {
            let _ = seal::unseal(&file);
        }
        let _ = fs::remove_file(dir.join(format!("faults-{kind}")));
        match r? {
            0 => notes.push(format!("{kind}: no fsync")),
            n => {
                return Err(format!(
                "{kind}: the first {FIRST_FAULTS} MAP_SYNC write faults ran {n} fsync(s) of the file (xfs_file_fsync)"
            ))
            }
        }
    }
    Ok(format!("first {FIRST_FAULTS} MAP_SYNC write faults: {}", notes.join("; ")))
}

fn percentile(sorted: &[u64], p: usize) -> f64 {
    let i = (sorted.len() * p).div_ceil(100).saturating_sub(1).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(f64::NAN, |ns| *ns as f64 / 1000.0)
}

/// `bucket:count` pairs, bucket `b` holding latencies in [2^b, 2^(b+1)) µs
/// (bucket 0 also holds everything below 1 µs).
pub fn histogram(ns: &[u64]) -> String {
    let mut buckets = [0usize; 32];
    for n in ns {
        let us = (n / 1000).max(1);
        buckets[(63 - us.leading_zeros()) as usize] += 1;
    }
    let cells: Vec<String> =
        buckets.iter().enumerate().filter(|(_, c)| **c > 0).map(|(b, c)| format!("{b}:{c}")).collect();
    cells.join(",")
}

/// Measures each kind (the sealed one only when `sealable`), and the
/// device-dax reference when there is one (the limit with no filesystem at
/// all: the first `PAGES` pages of the device, 4 KiB aligned, so each first
/// touch faults as in a file); one summary line per kind, each followed by
/// its histogram diagnostic.
pub fn run(dir: &Path, persist: Persist, sealable: bool, device_dax: Option<&Path>) -> Result<String, String> {
    let mut lines = Vec::new();
    let kinds = KINDS.iter().copied().chain(device_dax.map(|_| DEVICE_DAX));
    for kind in kinds {
        if kind == "sealed" && !sealable {
            continue;
        }
        let mut ns = match device_dax.filter(|_| kind == DEVICE_DAX) {
            Some(dev) => measure(&crate::fixture::open_device_dax(dev)?, persist)?,
            None => {
                let file = make(dir, kind)?;
                let ns = measure(&file, persist)?;
                if kind == "sealed" {
                    let _ = seal::unseal(&file);
                }
                let _ = fs::remove_file(dir.join(format!("faults-{kind}")));
                ns
            }
        };
        ns.sort_unstable();
        let (p50, p99) = (percentile(&ns, 50), percentile(&ns, 99));
        lines.push(format!("{kind}: first-touch write fault p50 {p50:.1} us, p99 {p99:.1} us over {PAGES} pages"));
        lines.push(figure::lines(&[
            Figure::new(figure::fault(kind, 50), p50, "us"),
            Figure::new(figure::fault(kind, 99), p99, "us"),
        ]));
        lines.push(format!("{LATENCY_PREFIX}{kind} {}", histogram(&ns)));
    }
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_log2_microseconds() {
        assert_eq!(histogram(&[0, 999, 1000, 1999, 2000, 3999, 4000, 1_000_000]), "0:4,1:2,2:1,9:1");
        assert_eq!(histogram(&[]), "");
    }

    #[test]
    fn percentiles_pick_the_rank() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile(&v, 50), 50.0);
        assert_eq!(percentile(&v, 99), 99.0);
        assert_eq!(percentile(&[5000], 99), 5.0);
        assert!(percentile(&[], 50).is_nan());
    }
}
