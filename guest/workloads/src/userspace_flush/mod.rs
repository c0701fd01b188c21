//! `userspace-flush`, `userspace-flush-write` and `userspace-flush-verify`:
//! data made durable from userspace with cache flushes, no fsync.
//!
//! Three writers append 128-byte checksummed records at once
//! (docs/seal.md, "Userspace flush"):
//! - **sealed**: a preallocated file on the DAX mount, sealed, mapped
//!   MAP_SHARED_VALIDATE|MAP_SYNC; each record is stored, its lines written
//!   back (clwb, else clflushopt, else clflush) and fenced. Its map cannot
//!   change and has no metadata pending, so that is all durability needs.
//! - **sparse-control**: an unsealed sparse file on the same mount, mapped
//!   without MAP_SYNC, with the same flushes. Each first store to a page
//!   allocates a block in a transaction nobody forces to the log: a crash
//!   loses the records, flushes or not.
//! - **fdatasync-control**: write(2) and fdatasync(2) per record, on the
//!   second NVDIMM, so that its log forces do not make the sparse control's
//!   allocations durable.
//!
//! `userspace-flush` writes, remounts and verifies everything. The crash
//! campaign (`cargo xtask crash`) runs `-write`, whose writers acknowledge
//! each record to the host after its fence, kills QEMU, and runs `-verify`
//! on the next boot with the host's acknowledgement counts.

mod fsync_cost;
mod latency;
mod record;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use dax_seal_protocol::figure::{self, Figure};
use dax_seal_protocol::flush::{
    self, Bug, Tally, DEVICE_DAX, FDATASYNC_CONTROL, SEALED, SPARSE_CONTROL, SPARSE_MAP_SYNC,
};
use dax_seal_protocol::{RunConfig, MOUNT_PREFIX};

use crate::calls::{errno_text, kmsg_records, Mapping};
use crate::cases::Cases;
use crate::fixture::{create_new, create_sparse, describe, is_sealed, map_line, probe, remount};
use crate::persist::{flush_lines, store_fence, Persist, LINE};
use crate::seal::{self, Extent};
use record::RECORD;

type Check = Result<String, String>;

/// Files are sized in whole MiB of records.
const GRANULE: u64 = 1 << 20;
/// How long the crash writer waits to be killed once all is written.
const WAIT_FOR_KILL: Duration = Duration::from_secs(20);

fn dir(nvdimm: u32) -> PathBuf {
    PathBuf::from(format!("{MOUNT_PREFIX}{nvdimm}/userspace-flush"))
}

fn path(writer: &str) -> PathBuf {
    dir(if writer == FDATASYNC_CONTROL { 1 } else { 0 }).join(writer)
}

fn capacity(records: u64) -> u64 {
    (records * RECORD as u64).div_ceil(GRANULE) * GRANULE
}

/// The fingerprint of a map, as the crash writer reports it and the
/// verifier checks it.
fn map_fingerprint(file: &File) -> Result<(u64, String, Vec<Extent>), String> {
    let map = seal::fiemap(file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    let line = map_line(&map);
    Ok((record::tag(&line), line, map))
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("fsync {}: {}", dir.display(), errno_text(&e)))
}

/// A clean directory for the writers' files on NVDIMM `nvdimm`; what an
/// earlier boot left there is released first (unsealed, swapped off).
fn fresh_dir(nvdimm: u32) -> Result<PathBuf, String> {
    let dir = dir(nvdimm);
    crate::workdir::release(&dir);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    Ok(dir)
}

/// What a writer writes through.
enum Target {
    Mapped(Mapping),
    Fdatasync(File),
}

struct Writer {
    name: &'static str,
    target: Target,
}

/// The sealed file: preallocated, sealed (which writes it and fixes its
/// map), mapped MAP_SYNC at [`flush::MODEL_WINDOW`] (where the persistence
/// model's tracer watches it) and touched once per page, so the timed
/// stores take no fault and force no log. Every line is read once first:
/// the tracer keeps each line's content before the writer's stores.
fn prepare_sealed(records: u64) -> Result<(Writer, String), String> {
    let path = path(SEALED);
    let len = capacity(records);
    let file = create_new(&path)?;
    seal::fallocate(&file, 0, 0, len).map_err(|e| format!("fallocate: {}", errno_text(&e)))?;
    seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let mut map = Mapping::shared_sync_at(&file, len as usize, flush::MODEL_WINDOW).map_err(|e| {
        format!(
            "mmap MAP_SHARED_VALIDATE|MAP_SYNC|MAP_FIXED_NOREPLACE at {:#x}: {}",
            flush::MODEL_WINDOW,
            errno_text(&e)
        )
    })?;
    for line in map.as_mut_slice().chunks(crate::persist::LINE) {
        // SAFETY: a byte of the live mapping.
        unsafe { std::ptr::read_volatile(line.as_ptr()) };
    }
    for page in map.as_mut_slice().chunks_mut(4096) {
        // SAFETY: a byte of the live mapping; rewriting what is there.
        unsafe { std::ptr::write_volatile(page.as_mut_ptr(), std::ptr::read_volatile(page.as_ptr())) };
    }
    let (hash, line, extents) = map_fingerprint(&file)?;
    let kinds = describe(&extents, len);
    if kinds != "written" {
        return Err(format!("sealed, but the map has {kinds}: {line}"));
    }
    let note = format!("{} MiB sealed and mapped MAP_SYNC; {line}\n{}", len >> 20, flush::map_line(SEALED, hash));
    Ok((Writer { name: SEALED, target: Target::Mapped(map) }, note))
}

/// The sparse control: a file of the same size with no block, durable as
/// such, mapped without MAP_SYNC.
fn prepare_sparse(records: u64) -> Result<(Writer, String), String> {
    let path = path(SPARSE_CONTROL);
    let len = capacity(records);
    let file = create_sparse(&path, len)?;
    file.sync_all().map_err(|e| format!("fsync: {}", errno_text(&e)))?;
    sync_dir(&dir(0))?;
    let kinds = describe(&seal::fiemap(&file).map_err(|e| errno_text(&e))?, len);
    let map = Mapping::shared(&file, len as usize).map_err(|e| format!("mmap MAP_SHARED: {}", errno_text(&e)))?;
    Ok((Writer { name: SPARSE_CONTROL, target: Target::Mapped(map) }, format!("{} MiB sparse ({kinds})", len >> 20)))
}

/// The benchmark's fourth writer: a sparse file mapped MAP_SYNC.
fn prepare_sparse_map_sync(records: u64) -> Result<(Writer, String), String> {
    let path = path(SPARSE_MAP_SYNC);
    let len = capacity(records);
    let file = create_sparse(&path, len)?;
    file.sync_all().map_err(|e| format!("fsync: {}", errno_text(&e)))?;
    let map = Mapping::shared_sync(&file, len as usize)
        .map_err(|e| format!("mmap MAP_SHARED_VALIDATE|MAP_SYNC: {}", errno_text(&e)))?;
    Ok((Writer { name: SPARSE_MAP_SYNC, target: Target::Mapped(map) }, format!("{} MiB sparse, MAP_SYNC", len >> 20)))
}

/// Why a writer that makes stores durable from userspace has nothing to
/// show on this boot's device, if so.
fn no_userspace_durability() -> Option<String> {
    let kind = crate::fixture::pmem();
    (!kind.synchronous()).then(|| {
        format!(
            "a {}'s persistence domain is asynchronous: MAP_SYNC is refused and only fsync (a flush request to \
             the host) makes a store durable, so the contract makes no userspace-flush promise there",
            kind.device()
        )
    })
}

/// On a device with an asynchronous persistence domain: the kernel refuses
/// MAP_SYNC for `name`'s file (sealed or sparse) with EOPNOTSUPP.
fn refused_map_sync(name: &str, records: u64, sealed: bool) -> Check {
    let path = path(name);
    let len = capacity(records);
    let file = create_sparse(&path, len)?;
    if sealed {
        seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    }
    // The fixture insists on EOPNOTSUPP for MAP_SYNC on such a device.
    let r = crate::fixture::shared_for_stores(&file, len as usize).map(drop);
    if sealed {
        let _ = seal::unseal(&file);
    }
    r?;
    Ok(format!(
        "MAP_SYNC refused (EOPNOTSUPP) on {}; no writer: {}",
        path.display(),
        no_userspace_durability().unwrap_or_default()
    ))
}

/// The device-dax reference writer: `records` records' room at the start of
/// the device, mapped MAP_SYNC, zeroed (so nothing an earlier boot left
/// reads as a record) and touched once per page like the sealed file.
fn prepare_device_dax(dev: &Path, records: u64) -> Result<(Writer, String), String> {
    let len = capacity(records);
    let file = crate::fixture::open_device_dax(dev)?;
    let mut map = Mapping::shared_sync(&file, len as usize)
        .map_err(|e| format!("mmap MAP_SHARED_VALIDATE|MAP_SYNC of {}: {}", dev.display(), errno_text(&e)))?;
    map.as_mut_slice().fill(0);
    let persist = Persist::new().ok_or("this CPU has no cache flush instruction (CPUID: no clflush)")?;
    persist.persist(map.as_mut_slice());
    Ok((
        Writer { name: DEVICE_DAX, target: Target::Mapped(map) },
        format!("{} MiB of {} zeroed and mapped MAP_SYNC", len >> 20, dev.display()),
    ))
}

/// The device-dax writer's records, read through a new mapping (device-dax
/// has no read(2)).
fn check_device_dax_records(t: &mut Cases, dev: &Path, records: u64) {
    let tally = (|| {
        let file = File::open(dev).map_err(|e| format!("open {}: {}", dev.display(), errno_text(&e)))?;
        let map = Mapping::shared_read_only(&file, capacity(records) as usize)
            .map_err(|e| format!("mmap {}: {}", dev.display(), errno_text(&e)))?;
        Ok::<_, String>(record::tally(record::tag(DEVICE_DAX), map.as_slice(), records))
    })();
    judge_tally(t, &format!("{DEVICE_DAX}: every record intact"), DEVICE_DAX, tally, records, true);
}

/// The fdatasync control: an empty file on the page-cache mount.
fn prepare_fdatasync() -> Result<(Writer, String), String> {
    let file = create_new(&path(FDATASYNC_CONTROL))?;
    file.sync_all().map_err(|e| format!("fsync: {}", errno_text(&e)))?;
    sync_dir(&dir(1))?;
    Ok((Writer { name: FDATASYNC_CONTROL, target: Target::Fdatasync(file) }, "empty file on /mnt/pmem1".into()))
}

/// Reports the three set-up cases (the sealed one skips on a kernel without
/// the series) and returns the writers that are ready, and the seal probe's
/// answer.
fn prepare(t: &mut Cases, records: u64) -> (Vec<Writer>, Result<(), String>) {
    let mut writers = Vec::new();
    let dirs = fresh_dir(0).and_then(|_| fresh_dir(1));
    if let Err(e) = dirs {
        for name in flush::WRITERS {
            t.check::<()>(&format!("{name}: file ready"), Err(e.clone()));
        }
        return (writers, Err(e));
    }
    let has_seal = probe(&dir(0));
    match &has_seal {
        Err(why) => t.skip(&format!("{SEALED}: file ready"), why),
        // No userspace-flush promise to test: the case shows the kernel
        // refusing MAP_SYNC on the sealed file, as the contract says.
        Ok(()) if !crate::fixture::pmem().synchronous() => {
            t.check::<()>(&format!("{SEALED}: file ready"), refused_map_sync(SEALED, records, true).map(|n| ((), n)));
        }
        Ok(()) => writers.extend(t.check(&format!("{SEALED}: file ready"), prepare_sealed(records))),
    }
    writers.extend(t.check(&format!("{SPARSE_CONTROL}: file ready"), prepare_sparse(records)));
    writers.extend(t.check(&format!("{FDATASYNC_CONTROL}: file ready"), prepare_fdatasync()));
    (writers, has_seal)
}

/// Appends `records` records; `ack` is called after each one is durable.
/// `bug` breaks the sealed writer on purpose (the model's self-test).
fn write_records(
    w: &mut Writer,
    persist: Persist,
    records: u64,
    bug: (Bug, u64),
    ack: &(dyn Fn(&str, u64) + Sync),
) -> Check {
    let tag = record::tag(w.name);
    let start = Instant::now();
    for seq in 0..records {
        let bytes = record::encode(tag, seq);
        let offset = seq as usize * RECORD;
        match &mut w.target {
            Target::Mapped(map) => {
                let slot = &mut map.as_mut_slice()[offset..offset + RECORD];
                slot.copy_from_slice(&bytes);
                match bug {
                    (Bug::OmitFlush, record) if w.name == SEALED && record == seq => {
                        flush_lines(persist.flush, &slot[..RECORD - LINE]);
                        store_fence();
                    }
                    (Bug::FenceBeforeFlush, _) if w.name == SEALED => {
                        store_fence();
                        flush_lines(persist.flush, slot);
                    }
                    _ => persist.persist(slot),
                }
            }
            Target::Fdatasync(file) => {
                file.write_all_at(&bytes, offset as u64)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| format!("record {seq}: {}", errno_text(&e)))?;
            }
        }
        ack(w.name, seq);
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = records as f64 / secs.max(1e-9);
    let figure = Figure::new(figure::commit_rate(w.name), rate, "records/s");
    Ok(format!("{}: {records} records in {secs:.2} s ({rate:.0}/s)\n{}", w.name, figure.line()))
}

/// Runs every writer at once; one line per writer.
fn write_all(writers: &mut [Writer], records: u64, bug: (Bug, u64), ack: &(dyn Fn(&str, u64) + Sync)) -> Check {
    let persist = Persist::new().ok_or("this CPU has no cache flush instruction (CPUID: no clflush)")?;
    let results: Vec<Check> = std::thread::scope(|s| {
        let handles: Vec<_> =
            writers.iter_mut().map(|w| s.spawn(move || write_records(w, persist, records, bug, ack))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("writer thread panicked".into()))).collect()
    });
    let mut lines = vec![format!("flush: {}, then sfence, per record", persist.flush)];
    if bug.0 != Bug::None {
        lines.push(format!("the sealed writer is broken on purpose: {:?} (record {})", bug.0, bug.1));
    }
    for r in results {
        lines.push(r?);
    }
    Ok(lines.join("\n"))
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("read {}: {}", path.display(), errno_text(&e)))
}

/// The tally of one writer's file, reported as a result line whatever the
/// verdict; `lost_is_failure` is false only for the sparse control after a
/// crash, whose losses the host counts.
fn check_records(t: &mut Cases, writer: &str, acked: u64, lost_is_failure: bool) {
    let tally = read_file(&path(writer)).map(|bytes| record::tally(record::tag(writer), &bytes, acked));
    let name = if lost_is_failure {
        format!("{writer}: every acknowledged record intact")
    } else {
        format!("{writer}: records intact or counted lost, none misread")
    };
    judge_tally(t, &name, writer, tally, acked, lost_is_failure);
}

/// Case `name` from `writer`'s tally, reported as a result line whatever
/// the verdict: a misread record always fails, a lost one when
/// `lost_is_failure`.
fn judge_tally(
    t: &mut Cases,
    name: &str,
    writer: &str,
    tally: Result<Tally, String>,
    acked: u64,
    lost_is_failure: bool,
) {
    let verdict = tally.and_then(|tally: Tally| {
        let line = flush::result_line(writer, &tally);
        t.note(&line);
        if tally.misread > 0 {
            Err(format!("{} slots hold a checksummed record that is not theirs: {line}", tally.misread))
        } else if lost_is_failure && tally.lost > 0 {
            Err(format!("{} of {acked} acknowledged records lost: {line}", tally.lost))
        } else {
            Ok(((), String::new()))
        }
    });
    t.check(name, verdict);
}

/// The sealed file after the crash or remount: still sealed, with the map
/// it had before (`expected` fingerprint; None in the standalone workload,
/// which compares with what it recorded itself).
fn check_sealed_map(expected: u64) -> Check {
    let path = path(SEALED);
    let file = File::open(&path).map_err(|e| format!("open {}: {}", path.display(), errno_text(&e)))?;
    let (hash, line, _) = map_fingerprint(&file)?;
    if !is_sealed(&path)? {
        return Err(format!("no longer sealed (no STATX_ATTR_IOMAP_IMMUTABLE); {line}"));
    }
    if hash != expected {
        return Err(format!("map fingerprint {hash:#x}, before the crash {expected:#x}: {line}"));
    }
    Ok(format!("sealed, {line}"))
}

/// What /dev/kmsg says about log recovery on the two mounts.
fn log_recovery() -> Check {
    let lines = kmsg_records()?;
    let mut notes = Vec::new();
    for dev in ["pmem0", "pmem1"] {
        let says = |what: &str| lines.iter().any(|l| l.contains(&format!("XFS ({dev}): {what}")));
        if says("log mount/recovery failed") || says("Corruption") {
            return Err(format!("{dev}: log recovery failed; the kernel log says so"));
        }
        notes.push(match (says("Starting recovery"), says("Ending recovery")) {
            (false, _) => format!("{dev}: log clean, no recovery needed"),
            (true, true) => format!("{dev}: log recovered"),
            (true, false) => return Err(format!("{dev}: log recovery started and never ended")),
        });
    }
    Ok(notes.join("; "))
}

/// `userspace-flush`: write, remount, verify; then first-touch fault
/// latencies.
pub fn run() -> ExitCode {
    // The devdax topology adds its reference writer's two cases (found or
    // not: a topology without one has none).
    let device_dax = crate::fixture::device_dax();
    let mut t = Cases::new(14 + if matches!(device_dax, Ok(None)) { 0 } else { 2 });
    let records = RunConfig::read().and_then(|c| c.param("userspace-flush.records")).unwrap_or(2048);
    let (mut writers, has_seal) = prepare(&mut t, records);
    let sealed = writers.iter().any(|w| w.name == SEALED);
    let no_durability = no_userspace_durability();
    if no_durability.is_some() {
        t.check::<()>(
            &format!("{SPARSE_MAP_SYNC}: file ready"),
            refused_map_sync(SPARSE_MAP_SYNC, records, false).map(|n| ((), n)),
        );
    } else {
        writers.extend(t.check(&format!("{SPARSE_MAP_SYNC}: file ready"), prepare_sparse_map_sync(records)));
    }
    let device_dax = match device_dax {
        Ok(dev) => dev,
        Err(e) => {
            t.check::<()>(&format!("{DEVICE_DAX}: reference ready"), Err(e.clone()));
            t.blocked(&format!("{DEVICE_DAX}: every record intact"), "the device-dax reference");
            None
        }
    };
    if let Some(dev) = &device_dax {
        writers.extend(t.check(&format!("{DEVICE_DAX}: reference ready"), prepare_device_dax(dev, records)));
    }
    let before = if sealed { File::open(path(SEALED)).ok().and_then(|f| map_fingerprint(&f).ok()) } else { None };
    let written = write_all(&mut writers, records, (Bug::None, 0), &|_, _| {}).map(|n| ((), n));
    let written = t.check(&format!("writers: {records} records each, flushed and fenced"), written).is_some();
    drop(writers);
    let remounted = (|| {
        remount(Path::new(&format!("{MOUNT_PREFIX}0")))?;
        remount(Path::new(&format!("{MOUNT_PREFIX}1")))?;
        Ok(((), "umount and mount of /mnt/pmem0 and /mnt/pmem1".to_string()))
    })();
    let remounted = t.check("remount both NVDIMMs", remounted).is_some() && written;
    let acked = |w: &str| if remounted && (w != SEALED || sealed) { records } else { 0 };
    if sealed {
        check_records(&mut t, SEALED, acked(SEALED), true);
        let expected = before.map_or(0, |(h, _, _)| h);
        t.check("sealed: still sealed with the same map", check_sealed_map(expected).map(|n| ((), n)));
    } else if let Some(why) = has_seal.as_ref().err().or(no_durability.as_ref()) {
        t.skip(&format!("{SEALED}: every acknowledged record intact"), why);
        t.skip("sealed: still sealed with the same map", why);
    } else {
        t.blocked(&format!("{SEALED}: every acknowledged record intact"), "the sealed file's set-up");
        t.blocked("sealed: still sealed with the same map", "the sealed file's set-up");
    }
    // After a clean unmount nothing may be missing, not even from the control.
    check_records(&mut t, SPARSE_CONTROL, acked(SPARSE_CONTROL), true);
    check_records(&mut t, FDATASYNC_CONTROL, acked(FDATASYNC_CONTROL), true);
    if let Some(dev) = &device_dax {
        check_device_dax_records(&mut t, dev, if written { records } else { 0 });
    }
    const FAULTS_CASE: &str = "first-touch write faults through MAP_SYNC";
    if let Some(why) = &no_durability {
        t.skip(&format!("{SPARSE_MAP_SYNC}: every acknowledged record intact"), why);
        t.skip(FAULTS_CASE, why);
    } else {
        check_records(&mut t, SPARSE_MAP_SYNC, acked(SPARSE_MAP_SYNC), true);
        let faults = Persist::new()
            .ok_or_else(|| "this CPU has no cache flush instruction".to_string())
            .and_then(|p| latency::run(&dir(0), p, sealed, device_dax.as_deref()));
        t.check(FAULTS_CASE, faults.map(|n| ((), n)));
    }
    const FSYNC_CASE: &str = "fsync of a large sealed file nothing pinned, against an unsealed one";
    const FIRST_FAULT_CASE: &str = "first MAP_SYNC write faults after SEAL force no fsync";
    match &has_seal {
        Ok(()) if no_durability.is_some() => {
            t.skip(FIRST_FAULT_CASE, no_durability.as_deref().unwrap_or_default());
            t.check(FSYNC_CASE, fsync_cost::run(&dir(0)).map(|n| ((), n)));
        }
        Ok(()) => {
            let first = Persist::new()
                .ok_or_else(|| "this CPU has no cache flush instruction".to_string())
                .and_then(|p| latency::first_faults_force_nothing(&dir(0), p));
            t.check(FIRST_FAULT_CASE, first.map(|n| ((), n)));
            t.check(FSYNC_CASE, fsync_cost::run(&dir(0)).map(|n| ((), n)));
        }
        Err(why) => {
            t.skip(FIRST_FAULT_CASE, why);
            t.skip(FSYNC_CASE, why);
        }
    }
    if let Ok(f) = OpenOptions::new().write(true).open(path(SEALED)) {
        let _ = seal::unseal(&f);
    }
    let _ = fs::remove_dir_all(dir(0));
    let _ = fs::remove_dir_all(dir(1));
    t.exit()
}

/// `userspace-flush-write`: the crash campaign's first boot.
pub fn write() -> ExitCode {
    let mut t = Cases::new(4);
    let config = RunConfig::read();
    let param = |name: &str, default: u64| config.as_ref().ok().and_then(|c| c.param(name).ok()).unwrap_or(default);
    let records = param("userspace-flush-write.records", 4096);
    let bug = (Bug::from_param(param("userspace-flush-write.bug", 0)), param("userspace-flush-write.bug-record", 7));
    let (mut writers, _) = prepare(&mut t, records);
    // The tracer's marker page: one store per acknowledgement of the
    // sealed writer, after its fence (absent, acknowledgements still go out).
    let marker = Mapping::anonymous_at(4096, flush::MODEL_MARKER).ok();
    let marker_at = marker.as_ref().map(|m| m.as_ptr() as usize);
    t.note(flush::WRITING);
    let ack = |writer: &str, seq: u64| {
        if let (SEALED, Some(page)) = (writer, marker_at) {
            let slot = (page + (seq % flush::MODEL_MARKER_SLOTS) as usize * 8) as *mut u64;
            // SAFETY: a slot of the live marker page, written whole.
            unsafe { std::ptr::write_volatile(slot, seq) };
        }
        println!("# {}", flush::ack_line(writer, seq));
    };
    let written = write_all(&mut writers, records, bug, &ack);
    t.note(flush::WRITTEN);
    t.check("writers: every record flushed, fenced and acknowledged", written.map(|n| ((), n)));
    // The host kills QEMU at a moment of its choosing; one after the last
    // record is a crash point too. Without a kill, finish normally.
    std::thread::sleep(Duration::from_secs(param("userspace-flush-write.wait", WAIT_FOR_KILL.as_secs())));
    t.exit()
}

/// `userspace-flush-verify`: the crash campaign's second boot.
pub fn verify() -> ExitCode {
    let mut t = Cases::new(5);
    let config = RunConfig::read();
    let param = |name: &str| config.as_ref().map_err(Clone::clone).and_then(|c| c.param(name));
    t.check("log recovery", log_recovery().map(|n| ((), n)));
    let acked = |w: &str| param(&flush::acked_param(w));
    match probe(&dir(0)) {
        Err(why) => {
            t.skip(&format!("{SEALED}: every acknowledged record intact"), &why);
            t.skip("sealed: still sealed with the same map", &why);
        }
        Ok(()) => match (acked(SEALED), param(flush::MAP_PARAM)) {
            (Ok(n), Ok(map)) => {
                check_records(&mut t, SEALED, n, true);
                t.check("sealed: still sealed with the same map", check_sealed_map(map).map(|n| ((), n)));
            }
            (Err(e), _) | (_, Err(e)) => {
                t.check::<()>(&format!("{SEALED}: every acknowledged record intact"), Err(e.clone()));
                t.blocked("sealed: still sealed with the same map", "reading the parameters");
            }
        },
    }
    for (writer, lost_is_failure) in [(SPARSE_CONTROL, false), (FDATASYNC_CONTROL, true)] {
        match acked(writer) {
            Ok(n) => check_records(&mut t, writer, n, lost_is_failure),
            Err(e) => {
                t.check::<()>(&format!("{writer}: records"), Err(e));
            }
        }
    }
    t.exit()
}
