//! `seal-foreign-prepare`, `seal-foreign-change`, `seal-foreign-verify`:
//! the three boots of the mixed-kernel scenario (docs/seal.md, "Mixing
//! kernels"). The patched kernel seals five files; a kernel without the
//! series, which ignores the on-disk flag, punches a hole in one, clones
//! another, truncates one up and one down, and leaves the last alone; the
//! patched kernel then boots on the same images and must report exactly the
//! three files whose map is no longer whole, once each in its log, without
//! a warning, and let the user recover them with UNSEAL and SEAL. It also
//! zeroes a range of two more (unwritten extents) and clones two others
//! (shared extents), one of each on the DAX mount and one on the page-cache
//! mount: writes there must be refused, never accepted and lost. Online
//! scrub calls a broken seal a warning, as inode repair (which keeps it)
//! agrees.
//!
//! The foreign boot also leaves work for the patched kernel to finish, as
//! a power cut would: a sealed file unlinked while open, and a clone into a
//! sealed file cut short by a shutdown that wrote the log out first. The
//! patched kernel must free the first and replay the second at mount,
//! dropping their seals with one line each, instead of refusing the work
//! (a warning, a mount that fails, a filesystem shut down).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use dax_seal_protocol::MOUNT_PREFIX;

use crate::calls::{errno_text, kmsg_count, kmsg_records, result_text, Mapping};
use crate::cases::Cases;
use crate::fixture::{self, broken_seal_reports, create, pattern, seal_views};
use crate::seal::{self, FIEMAP_EXTENT_SHARED, FIEMAP_EXTENT_UNWRITTEN};
use crate::workdir::page_cache_mount;

const SIZE: u64 = 1 << 20;

/// The files and what the foreign kernel does to each.
const PUNCHED: &str = "punched";
const CLONED: &str = "cloned";
const GROWN: &str = "grown";
const SHRUNK: &str = "shrunk";
const UNTOUCHED: &str = "untouched";
const FILES: [&str; 5] = [PUNCHED, CLONED, GROWN, SHRUNK, UNTOUCHED];
/// Changed so that the map is no longer whole.
const BROKEN: [&str; 3] = [PUNCHED, CLONED, GROWN];
/// Sealed with a whole map after the foreign boot.
const WHOLE: [&str; 2] = [SHRUNK, UNTOUCHED];

/// Sealed; the foreign kernel zeroes a range of it (FALLOC_FL_ZERO_RANGE),
/// which leaves unwritten extents, one file on the DAX mount and one on the
/// dax=never one (page cache).
const ZEROED: &str = "zeroed";
/// The range the foreign kernel zeroes.
const ZEROED_AT: u64 = SIZE / 4;
const ZEROED_LEN: u64 = SIZE / 4;
/// Sealed; the foreign kernel clones it (FICLONE into SHARED_COPY), which
/// shares its extents, on both mounts like ZEROED.
const SHARED: &str = "shared";
const SHARED_COPY: &str = "shared.copy";
const SHARED_SEED: u8 = 0x54;

/// Sealed, then unlinked while open by the foreign kernel, which stops
/// before its last close; its inode number is kept in ORPHAN_INO.
const ORPHAN: &str = "orphan";
const ORPHAN_INO: &str = "orphan.ino";
/// Sealed; the foreign kernel clones FRAGMENTS into it and is shut down
/// while the clone runs.
const TARGET: &str = "clone-target";
/// Every other block written: one extent per block, so that the clone
/// takes one transaction chain per block.
const FRAGMENTS: &str = "fragments";
const TARGET_SIZE: u64 = 16 << 20;
const BLOCK: u64 = 4096;
/// How long the clone runs before the shutdown.
const CLONE_HEAD_START: Duration = Duration::from_millis(40);

fn dir() -> PathBuf {
    PathBuf::from(format!("{MOUNT_PREFIX}0/seal-foreign"))
}

fn seed(name: &str) -> u8 {
    FILES.iter().position(|f| *f == name).map_or(0, |i| 0x40 + i as u8)
}

fn open(name: &str) -> Result<File, String> {
    open_path(&dir().join(name))
}

/// `path` for reading and writing.
fn open_path(path: &Path) -> Result<File, String> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("open {}: {e}", path.display()))
}

/// Boot 1, patched: five sealed files of SIZE bytes.
pub fn prepare() -> ExitCode {
    let mut t = Cases::new(3);
    let r = (|| {
        let dir = dir();
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        for name in FILES {
            let file = create(&dir.join(name), seed(name), SIZE)?;
            seal::seal(&file).map_err(|e| format!("SEAL {name}: {}", errno_text(&e)))?;
        }
        sync_dir()?;
        Ok(((), format!("sealed {}", FILES.join(", "))))
    })();
    t.check("seal-five-files", r);
    t.check("seal-files-to-orphan-and-clone-into", prepare_leftovers());
    t.check("seal-files-to-zero-and-share", prepare_on_both_mounts());
    t.exit()
}

/// `name` on the DAX mount and on the page-cache one.
fn on_both_mounts(name: &str) -> Result<[PathBuf; 2], String> {
    Ok([dir().join(name), page_cache_mount()?.join("seal-foreign").join(name)])
}

/// The ZEROED and SHARED files, sealed, on both mounts.
fn prepare_on_both_mounts() -> Result<((), String), String> {
    let zeroed = on_both_mounts(ZEROED)?;
    let page_cache_dir = zeroed[1].parent().unwrap_or(&zeroed[1]).to_path_buf();
    let _ = fs::remove_dir_all(&page_cache_dir);
    fs::create_dir_all(&page_cache_dir).map_err(|e| format!("mkdir {}: {e}", page_cache_dir.display()))?;
    let mut sealed = Vec::new();
    for (path, seed) in zeroed.iter().map(|p| (p, 0x53)).chain(on_both_mounts(SHARED)?.iter().map(|p| (p, SHARED_SEED)))
    {
        let file = create(path, seed, SIZE)?;
        seal::seal(&file).map_err(|e| format!("SEAL {}: {}", path.display(), errno_text(&e)))?;
        file.sync_all().map_err(|e| format!("fsync {}: {e}", path.display()))?;
        sealed.push(path.display().to_string());
    }
    File::open(&page_cache_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("fsync {}: {e}", page_cache_dir.display()))?;
    Ok(((), format!("sealed {}", sealed.join(", "))))
}

fn sync_dir() -> Result<(), String> {
    File::open(dir()).and_then(|d| d.sync_all()).map_err(|e| format!("fsync {}: {e}", dir().display()))
}

/// The sealed ORPHAN and TARGET, and FRAGMENTS, unsealed.
fn prepare_leftovers() -> Result<((), String), String> {
    let dir = dir();
    let orphan = create(&dir.join(ORPHAN), 0x50, SIZE)?;
    seal::seal(&orphan).map_err(|e| format!("SEAL {ORPHAN}: {}", errno_text(&e)))?;
    let ino = orphan.metadata().map_err(|e| format!("stat {ORPHAN}: {e}"))?.ino();
    fs::write(dir.join(ORPHAN_INO), format!("{ino}\n")).map_err(|e| format!("write {ORPHAN_INO}: {e}"))?;
    let target = create(&dir.join(TARGET), 0x51, TARGET_SIZE)?;
    seal::seal(&target).map_err(|e| format!("SEAL {TARGET}: {}", errno_text(&e)))?;
    let fragments = create(&dir.join(FRAGMENTS), 0, 0)?;
    let block = pattern(0x52, BLOCK);
    for i in (0..TARGET_SIZE / BLOCK).step_by(2) {
        fragments.write_all_at(&block, i * BLOCK).map_err(|e| format!("write {FRAGMENTS}: {e}"))?;
    }
    fragments.set_len(TARGET_SIZE).map_err(|e| format!("ftruncate {FRAGMENTS}: {e}"))?;
    fragments.sync_all().map_err(|e| format!("fsync {FRAGMENTS}: {e}"))?;
    let extents = seal::fiemap(&fragments).map_err(|e| format!("FIEMAP {FRAGMENTS}: {}", errno_text(&e)))?.len();
    sync_dir()?;
    Ok((
        (),
        format!("sealed {ORPHAN} (inode {ino:#x}) and {TARGET} ({TARGET_SIZE} bytes); {FRAGMENTS}: {extents} extents"),
    ))
}

/// Boot 2, a kernel without the series: each change goes through, since
/// that kernel does not know the flag.
pub fn change() -> ExitCode {
    let mut t = Cases::new(8);
    let io = |what: &str, r: io::Result<()>| {
        r.map(|()| ((), String::new())).map_err(|e| format!("{what}: {}", errno_text(&e)))
    };
    t.check(
        "punch-hole-in-sealed-file",
        open(PUNCHED).and_then(|f| {
            io("punch", seal::fallocate(&f, seal::FALLOC_FL_PUNCH_HOLE | seal::FALLOC_FL_KEEP_SIZE, SIZE / 4, SIZE / 4))
        }),
    );
    t.check(
        "clone-sealed-file",
        open(CLONED).and_then(|f| {
            let copy = create(&dir().join("clone-of-cloned"), 0, 0)?;
            io("FICLONE", seal::ficlone(&copy, &f))
        }),
    );
    t.check("truncate-sealed-file-up", open(GROWN).and_then(|f| io("ftruncate", f.set_len(2 * SIZE))));
    t.check("truncate-sealed-file-down", open(SHRUNK).and_then(|f| io("ftruncate", f.set_len(SIZE / 2))));
    t.check("zero-range-in-sealed-files", zero_range());
    t.check("share-extents-of-sealed-files", share_extents());
    // Make it all durable before the shutdown below.
    let _ = sync_dir();
    t.check("unlink-sealed-file-while-open", unlink_while_open());
    t.check("clone-into-sealed-file-cut-short", clone_cut_short());
    t.exit()
}

/// ZERO_RANGE over the middle of both ZEROED files: unwritten extents.
fn zero_range() -> Result<((), String), String> {
    let mut notes = Vec::new();
    for path in on_both_mounts(ZEROED)? {
        let file = open_path(&path)?;
        seal::fallocate(&file, seal::FALLOC_FL_ZERO_RANGE | seal::FALLOC_FL_KEEP_SIZE, ZEROED_AT, ZEROED_LEN)
            .map_err(|e| format!("ZERO_RANGE {}: {}", path.display(), errno_text(&e)))?;
        file.sync_all().map_err(|e| format!("fsync {}: {e}", path.display()))?;
        let map = seal::fiemap(&file).map_err(|e| format!("FIEMAP {}: {}", path.display(), errno_text(&e)))?;
        let unwritten = map.iter().filter(|e| e.flags & FIEMAP_EXTENT_UNWRITTEN != 0).count();
        if unwritten == 0 {
            return Err(format!("{}: ZERO_RANGE left no unwritten extent: {map:?}", path.display()));
        }
        if let Some(dir) = path.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        notes.push(format!("{}: {unwritten} unwritten extent(s)", path.display()));
    }
    Ok(((), notes.join("; ")))
}

/// FICLONE of both SHARED files: their extents become shared with the
/// copies, and the files get the reflink flag that sealing dropped.
fn share_extents() -> Result<((), String), String> {
    let mut notes = Vec::new();
    for path in on_both_mounts(SHARED)? {
        let file = open_path(&path)?;
        let copy_path = path.with_file_name(SHARED_COPY);
        let copy = create(&copy_path, 0, 0)?;
        seal::ficlone(&copy, &file).map_err(|e| format!("FICLONE {}: {}", path.display(), errno_text(&e)))?;
        copy.sync_all().map_err(|e| format!("fsync {}: {e}", copy_path.display()))?;
        let map = seal::fiemap(&file).map_err(|e| format!("FIEMAP {}: {}", path.display(), errno_text(&e)))?;
        let shared = map.iter().filter(|e| e.flags & FIEMAP_EXTENT_SHARED != 0).count();
        if shared == 0 {
            return Err(format!("{}: FICLONE left no shared extent: {map:?}", path.display()));
        }
        if let Some(dir) = path.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        notes.push(format!("{}: {shared} shared extent(s)", path.display()));
    }
    Ok(((), notes.join("; ")))
}

/// Unlinks ORPHAN and keeps it open until the shutdown: its inode stays on
/// the unlinked list with its blocks.
fn unlink_while_open() -> Result<((), String), String> {
    let file = open(ORPHAN)?;
    fs::remove_file(dir().join(ORPHAN)).map_err(|e| format!("unlink {ORPHAN}: {e}"))?;
    // Never closed: the shutdown comes first.
    std::mem::forget(file);
    Ok(((), format!("{ORPHAN} unlinked, still open")))
}

/// Clones FRAGMENTS over TARGET and shuts the filesystem down, log written
/// out, while the clone runs.
fn clone_cut_short() -> Result<((), String), String> {
    let target = open(TARGET)?;
    let fragments = open(FRAGMENTS)?;
    let start = Instant::now();
    let clone = thread::spawn(move || {
        let r = seal::ficlonerange(&target, 0, &fragments, 0, TARGET_SIZE);
        (r, start.elapsed())
    });
    thread::sleep(CLONE_HEAD_START);
    let down = open(UNTOUCHED)
        .and_then(|f| seal::xfs_shut_down(&f).map_err(|e| format!("XFS_IOC_GOINGDOWN: {}", errno_text(&e))));
    let down_at = start.elapsed();
    let (r, took) = clone.join().map_err(|_| "the clone thread panicked".to_string())?;
    down?;
    let how = match r {
        Ok(()) => "finished".to_string(),
        Err(e) => format!("ended with {}", errno_text(&e)),
    };
    Ok((
        (),
        format!(
            "the clone {how} after {} ms; shut down, log written out, at {} ms",
            took.as_millis(),
            down_at.as_millis()
        ),
    ))
}

/// statx's view (the seal holds) and FSGETXATTR's (the flag is on disk).
fn views(name: &str) -> Result<(bool, bool), String> {
    seal_views(&dir().join(name))
}

fn ino(name: &str) -> Result<u64, String> {
    fs::metadata(dir().join(name)).map(|m| m.ino()).map_err(|e| format!("stat {name}: {e}"))
}

/// Boot 3, patched again on the same images.
pub fn verify() -> ExitCode {
    let mut t = Cases::new(10);
    t.check("broken-seals-reported", broken_reported());
    t.check("whole-seals-kept", whole_kept());
    t.check("daxctl-immutable-status-says-broken", status_says_broken());
    t.check("scrub-and-repair-agree-on-broken-seal", scrub_agrees());
    t.check("unseal-then-seal-recovers", recover());
    t.check("write-into-unwritten-extent-of-broken-seal-refused", unwritten_refused());
    t.check("write-into-shared-extent-of-broken-seal-refused", shared_refused());
    t.check("long-term-pin-of-shared-extent-of-broken-seal-refused", shared_pin_refused());
    t.check("unlinked-sealed-file-freed", orphan_freed());
    match clone_replayed() {
        Replay::Dropped(detail) => {
            t.check("cut-short-clone-replayed", Ok(((), detail)));
        }
        Replay::NotInLog(reason) => t.skip("cut-short-clone-replayed", &reason),
        Replay::Failed(e) => {
            t.check::<()>("cut-short-clone-replayed", Err(e));
        }
    }
    t.exit()
}

/// Online scrub of the cloned file's inode: a sealed inode with the
/// reflink flag is a broken seal, consistent on disk, and inode repair
/// keeps both flags; so scrub must warn, not call it corrupt (which
/// repair would never fix). A forced repair changes nothing, and scrub
/// says the same afterwards.
fn scrub_agrees() -> Result<((), String), String> {
    let file = open(CLONED)?;
    let scrub = |when: &str| -> Result<u32, String> {
        let flags = seal::scrub(&file, seal::XFS_SCRUB_TYPE_INODE)
            .map_err(|e| format!("scrub of the inode {when}: {}", errno_text(&e)))?;
        if flags & seal::XFS_SCRUB_OFLAG_BAD != 0 {
            return Err(format!(
                "scrub {when} calls the inode of the broken seal of {CLONED} corrupt (flags {flags:#x}), \
                 which inode repair does not change"
            ));
        }
        if flags & seal::XFS_SCRUB_OFLAG_WARNING == 0 {
            return Err(format!("scrub {when} says nothing of the broken seal of {CLONED} (flags {flags:#x})"));
        }
        Ok(flags)
    };
    let before = scrub("before repair")?;
    let repair = result_text(&seal::force_repair(&file, seal::XFS_SCRUB_TYPE_INODE));
    let after = scrub("after a forced repair")?;
    let (holds, on_disk) = views(CLONED)?;
    if holds || !on_disk {
        return Err(format!("{CLONED} after the repair: statx sealed {holds}, FSGETXATTR sealed {on_disk}"));
    }
    Ok((
        (),
        format!(
            "scrub flags {before:#x} (warning); forced inode repair: {repair}; scrub then {after:#x}; still a broken seal"
        ),
    ))
}

/// A write into the range the foreign kernel zeroed needs the unwritten
/// extent converted, which the seal's on-disk flag forbids. Through the
/// page cache, a write that returned success could never be written back:
/// it must be refused up front, as on the DAX mount. The data stays what
/// the other kernel left (zeros).
fn unwritten_refused() -> Result<((), String), String> {
    let mut notes = Vec::new();
    for path in on_both_mounts(ZEROED)? {
        let file = open_path(&path)?;
        match file.write_all_at(&[0xee; BLOCK as usize], ZEROED_AT) {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {}
            Ok(()) => {
                // Show what the accepted write becomes.
                let fsync = result_text(&file.sync_all());
                return Err(format!(
                    "{}: a write into the unwritten extent of the broken seal returned success (fsync then: {fsync}); \
                     writeback cannot convert the extent, so it is lost",
                    path.display()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "{}: a write into the unwritten extent: {}, expected ETXTBSY",
                    path.display(),
                    errno_text(&e)
                ))
            }
        }
        let mut bytes = vec![0xffu8; BLOCK as usize];
        file.read_exact_at(&mut bytes, ZEROED_AT)
            .map_err(|e| format!("read {}: {}", path.display(), errno_text(&e)))?;
        if bytes.iter().any(|&b| b != 0) {
            return Err(format!("{}: the zeroed range no longer reads as zeros", path.display()));
        }
        notes.push(format!("{}: ETXTBSY, still zeros", path.display()));
    }
    if let Some(line) = kmsg_records()?.iter().find(|r| r.contains("writeback error")) {
        return Err(format!("the kernel lost a write at writeback: {line}"));
    }
    Ok(((), notes.join("; ")))
}

/// A write into an extent the foreign clone shared needs copy-on-write:
/// new blocks, remapped into the data fork when the write completes,
/// which the seal's on-disk flag forbids. Accepted, the write would be
/// lost when the remap is refused (and the filesystem shut down): it must
/// be refused up front, on the DAX mount and through the page cache. The
/// file and its copy keep what they held.
fn shared_refused() -> Result<((), String), String> {
    let mut notes = Vec::new();
    let before = pattern(SHARED_SEED, BLOCK);
    for path in on_both_mounts(SHARED)? {
        let file = open_path(&path)?;
        match file.write_all_at(&[0xee; BLOCK as usize], 0) {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {}
            Ok(()) => {
                let fsync = result_text(&file.sync_all());
                return Err(format!(
                    "{}: a write into a shared extent of the broken seal returned success (fsync then: {fsync}); \
                     its copy-on-write cannot be remapped into the sealed map, so it is lost",
                    path.display()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "{}: a write into a shared extent: {}, expected ETXTBSY",
                    path.display(),
                    errno_text(&e)
                ))
            }
        }
        for p in [path.clone(), path.with_file_name(SHARED_COPY)] {
            let mut bytes = vec![0u8; BLOCK as usize];
            open_path(&p)?
                .read_exact_at(&mut bytes, 0)
                .map_err(|e| format!("read {}: {}", p.display(), errno_text(&e)))?;
            if bytes != before {
                return Err(format!("{}: the shared block no longer reads what was written before", p.display()));
            }
        }
        notes.push(format!("{}: ETXTBSY, file and copy unchanged", path.display()));
    }
    if let Some(line) = kmsg_records()?.iter().find(|r| r.contains("writeback error")) {
        return Err(format!("the kernel lost a write at writeback: {line}"));
    }
    still_writable()?;
    Ok(((), notes.join("; ")))
}

/// How long a registration may take before the case calls it stuck.
const PIN_DEADLINE: Duration = Duration::from_secs(20);

/// A read-only long-term pin (an RDMA memory region registered for remote
/// read) of a broken seal's extent that the foreign clone shares, while
/// the clone maps it too: the block belongs to two files, so no pin of it
/// is a sealed file's. It must be refused at once, as for an unsealed DAX
/// file (EOPNOTSUPP). The in-core seal let the registration past the
/// mapping's check, and GUP then retried until the process was killed
/// (7.3: a page it could neither pin nor migrate; 6.12: an unshare fault
/// that did nothing). The registration runs in a child that is killed
/// past PIN_DEADLINE.
fn shared_pin_refused() -> Result<((), String), String> {
    let [path, _] = on_both_mounts(SHARED)?;
    let len = SIZE as usize;
    let (file, copy) = (open_path(&path)?, open_path(&path.with_file_name(SHARED_COPY))?);
    let map = |f: &File| Mapping::shared_read_only(f, len).map_err(|e| format!("mmap: {}", errno_text(&e)));
    let (ours, theirs) = (map(&file)?, map(&copy)?);
    // Read faults through both files make each block a shared DAX page.
    ours.read_every_page();
    theirs.read_every_page();
    let addr = ours.as_ptr();
    let outcome = fixture::in_child(PIN_DEADLINE, || {
        let verbs = fixture::soft_roce()?;
        // SAFETY: the mapping lives as long as this child.
        let registered = unsafe { verbs.register_read_only(addr, len) };
        let verdict = match registered {
            Ok(mr) => {
                let _ = mr.deregister();
                Err("ibv_reg_mr for remote read: 0".into())
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok("ibv_reg_mr for remote read: EOPNOTSUPP".into()),
            Err(e) => Err(format!("ibv_reg_mr for remote read: {}", errno_text(&e))),
        };
        verdict
    })?;
    drop((ours, theirs));
    match outcome {
        fixture::ChildOutcome::Returned(Ok(note)) => Ok(((), format!("{}: {note}", path.display()))),
        fixture::ChildOutcome::Returned(Err(e)) => {
            Err(format!("{}: {e}, expected EOPNOTSUPP (a block shared with a clone)", path.display()))
        }
        fixture::ChildOutcome::Killed => Err(format!(
            "{}: ibv_reg_mr of a read-only mapping did not return in {} s (GUP retrying a page it cannot pin), \
             and was killed",
            path.display(),
            PIN_DEADLINE.as_secs()
        )),
    }
}

/// The line the kernel writes when it drops the seal of `ino` to finish
/// what a foreign kernel left (`why`).
fn dropped_lines(ino: u64, why: &str) -> Result<usize, String> {
    let needle = format!("inode {ino:#x}: sealed, but a kernel without the seal {why}; the seal is dropped");
    kmsg_count(&needle)
}

/// What XFS logs when it shuts a filesystem down.
const SHUTDOWN_LINES: [&str; 3] =
    ["Filesystem has been shut down", "Shutting down filesystem", "xfs_do_force_shutdown"];

/// The filesystem still takes changes: nothing shut it down.
fn still_writable() -> Result<(), String> {
    let path = dir().join("still-writable");
    let file = create(&path, 0x5a, BLOCK)?;
    file.sync_all().map_err(|e| format!("fsync {}: {}", path.display(), errno_text(&e)))?;
    fs::remove_file(&path).map_err(|e| format!("unlink {}: {e}", path.display()))?;
    if let Some(line) = kmsg_records()?.iter().find(|r| SHUTDOWN_LINES.iter().any(|l| r.contains(l))) {
        return Err(format!("the filesystem was shut down: {line}"));
    }
    Ok(())
}

fn orphan_freed() -> Result<((), String), String> {
    let path = dir().join(ORPHAN_INO);
    let text = fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let ino: u64 = text.trim().parse().map_err(|e| format!("{}: {text:?}: {e}", path.display()))?;
    let n = dropped_lines(ino, "unlinked it")?;
    if n != 1 {
        return Err(format!(
            "{n} kernel log lines say the seal of the unlinked inode {ino:#x} was dropped, expected 1"
        ));
    }
    still_writable()?;
    Ok(((), format!("inode {ino:#x}: seal dropped and blocks freed at mount, named once; the filesystem takes writes")))
}

enum Replay {
    Dropped(String),
    /// The shutdown fell where no change to TARGET's map was pending.
    NotInLog(String),
    Failed(String),
}

fn clone_replayed() -> Replay {
    let r = (|| {
        let ino = ino(TARGET)?;
        let n = dropped_lines(ino, "left changes to its block map in the log")?;
        let broken = broken_seal_reports(ino)?;
        Ok::<_, String>((ino, n, broken))
    })();
    let (ino, n, broken) = match r {
        Ok(v) => v,
        Err(e) => return Replay::Failed(e),
    };
    if n == 0 {
        return Replay::NotInLog(format!(
            "the shutdown fell where no change to {TARGET}'s map (inode {ino:#x}) was pending in the log; \
             its seal is reported broken {broken} time(s) instead"
        ));
    }
    let r = (|| {
        if n != 1 {
            return Err(format!(
                "{n} kernel log lines say the seal of {TARGET} (inode {ino:#x}) was dropped, expected 1"
            ));
        }
        let (holds, on_disk) = views(TARGET)?;
        if holds || on_disk {
            return Err(format!(
                "{TARGET} after recovery: statx says sealed {holds}, FSGETXATTR {on_disk}; expected false, false"
            ));
        }
        let file = open(TARGET)?;
        let mut bytes = vec![0u8; TARGET_SIZE as usize];
        file.read_exact_at(&mut bytes, 0).map_err(|e| format!("read {TARGET}: {}", errno_text(&e)))?;
        still_writable()?;
        Ok(format!(
            "inode {ino:#x}: recovery replayed the clone's pending changes and dropped the seal, named once; \
             statx and FSGETXATTR say unsealed, the file reads, the filesystem takes writes"
        ))
    })();
    match r {
        Ok(detail) => Replay::Dropped(detail),
        Err(e) => Replay::Failed(e),
    }
}

fn broken_reported() -> Result<((), String), String> {
    let mut notes = Vec::new();
    for name in BROKEN {
        let (holds, on_disk) = views(name)?;
        if holds || !on_disk {
            return Err(format!("{name}: statx says sealed {holds}, FSGETXATTR {on_disk}; expected false, true"));
        }
        let file = open(name)?;
        match seal::seal(&file) {
            Err(e) if e.raw_os_error() == Some(libc::EUCLEAN) => {}
            other => return Err(format!("SEAL of the broken seal of {name}: {other:?}, expected EUCLEAN")),
        }
        match file.set_len(SIZE / 8) {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {}
            other => {
                return Err(format!("ftruncate of {name}: {other:?}, expected ETXTBSY (the flag is still on disk)"))
            }
        }
        let n = broken_seal_reports(ino(name)?)?;
        if n != 1 {
            return Err(format!("{n} kernel log lines name {name} (inode {:#x}), expected 1", ino(name)?));
        }
        notes.push(format!("{name}: inode {:#x} named once", ino(name)?));
    }
    // A write into the punched hole reaches the backstop, quietly.
    let punched = open(PUNCHED)?;
    match punched.write_all_at(&[0xee; 4096], SIZE / 4) {
        Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {}
        other => return Err(format!("a write into the hole of the broken seal: {other:?}, expected ETXTBSY")),
    }
    Ok((
        (),
        format!(
            "statx not sealed, FSGETXATTR flag set, SEAL EUCLEAN, ftruncate ETXTBSY, a write into the hole ETXTBSY; {}",
            notes.join("; ")
        ),
    ))
}

fn whole_kept() -> Result<((), String), String> {
    for name in WHOLE {
        let (holds, on_disk) = views(name)?;
        if !holds || !on_disk {
            return Err(format!("{name}: statx says sealed {holds}, FSGETXATTR {on_disk}; expected true, true"));
        }
        let file = open(name)?;
        seal::seal(&file).map_err(|e| format!("SEAL of the sealed {name}: {}", errno_text(&e)))?;
        if broken_seal_reports(ino(name)?)? != 0 {
            return Err(format!("the kernel log names {name}, whose map is whole"));
        }
    }
    let len = fs::metadata(dir().join(SHRUNK)).map_err(|e| e.to_string())?.len();
    if len != SIZE / 2 {
        return Err(format!("{SHRUNK} is {len} bytes, expected {}", SIZE / 2));
    }
    Ok((
        (),
        "shrunk (truncated down, map still whole) and untouched: sealed on both views, not named in the log".into(),
    ))
}

fn status_says_broken() -> Result<((), String), String> {
    let path = dir().join(PUNCHED);
    let (_, text) = crate::fixture::run_tool("/usr/bin/daxctl-immutable", [OsStr::new("status"), path.as_os_str()])?;
    if !text.contains("seal broken") {
        return Err(format!(
            "daxctl-immutable status {}: {text:?}, expected it to say the seal is broken",
            path.display()
        ));
    }
    Ok(((), text.lines().next().unwrap_or("").to_string()))
}

fn recover() -> Result<((), String), String> {
    for name in BROKEN {
        let file = open(name)?;
        seal::unseal(&file).map_err(|e| format!("UNSEAL of the broken seal of {name}: {}", errno_text(&e)))?;
        seal::seal(&file).map_err(|e| format!("SEAL of {name} after UNSEAL: {}", errno_text(&e)))?;
        let (holds, on_disk) = views(name)?;
        if !holds || !on_disk {
            return Err(format!("{name} after UNSEAL and SEAL: statx {holds}, FSGETXATTR {on_disk}"));
        }
        let map = seal::fiemap(&file).map_err(|e| format!("FIEMAP {name}: {}", errno_text(&e)))?;
        if map.iter().any(|e| e.flags & (FIEMAP_EXTENT_SHARED | FIEMAP_EXTENT_UNWRITTEN) != 0) {
            return Err(format!("{name} after UNSEAL and SEAL still has shared or unwritten extents: {map:?}"));
        }
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0).map_err(|e| format!("read {name}: {}", errno_text(&e)))?;
        let mut want = pattern(seed(name), SIZE);
        want.resize(len as usize, 0);
        if name == PUNCHED {
            want[(SIZE / 4) as usize..(SIZE / 2) as usize].fill(0);
        }
        if bytes != want {
            return Err(format!("{name} does not read as the foreign kernel left it"));
        }
    }
    Ok(((), format!("{}: UNSEAL 0, SEAL 0, sealed on both views, whole map, data as left", BROKEN.join(", "))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn broken_and_whole_cover_every_file_once() {
        let mut all: Vec<&str> = super::BROKEN.iter().chain(super::WHOLE.iter()).copied().collect();
        all.sort_unstable();
        let mut files = super::FILES.to_vec();
        files.sort_unstable();
        assert_eq!(all, files);
    }
}
