//! `seal-lifetime`: a long-term pin of a sealed file keeps the seal's promise
//! for the whole life of the pin, not only for the life of the in-core inode
//! it was taken through (docs/seal.md, "Pins outlive the inode").
//!
//! Each case seals a 2 MiB file on the DAX mount, registers its mapping as
//! an io_uring fixed buffer (a FOLL_LONGTERM pin), unmaps and closes it, and
//! then lets something drop the file's DAX entries: umount and mount,
//! `drop_caches`, an attempt to flip its DAX flag under `dax=inode`, online
//! repair. Afterwards the pin must still hold: the map is the same, the file
//! is still sealed, UNSEAL gives EBUSY, and a READ_FIXED through the old
//! registration lands in the sealed file's own blocks (read back with
//! pread). Once the ring lets go, UNSEAL gives 0. Every case reports how many
//! pins it took and released (`nr_foll_pin_*` in /proc/vmstat).
//!
//! A write through a pin dirties no DAX entry, so fsync must find the
//! pinned pages itself; the kernel's `xfs_seal_flush_pinned` trace event
//! says how many it wrote back, and the case checks that this is exactly the
//! pinned pages of the synced range, before and after the inode is evicted.
//! A file that nothing can have pinned must not pay for that walk: the
//! event's `walked` field says when an fsync skipped it. Releasing a pin
//! writes its pages back by itself, with the disk's write cache on, and
//! writes nothing back with it off; a page reported failed (after the
//! inode was evicted, or while a huge mapping's DAX entry held it) is
//! never written back, and every other page is.
//!
//! A poisoned block does not lock a sealed file out of a dax=never mount,
//! where opening it first looks for pins: that walk reads struct pages,
//! not the data the driver refuses.
//!
//! SEAL of a large sparse file, and of a large file a clone shares, works
//! in steps: SIGKILL stops it between two, and readers get answers while
//! it runs.
//!
//! Two more cases cover holders that are not root's: an unprivileged
//! reader's read-only mapping, and a page it vmspliced into a pipe, keep
//! UNSEAL at EBUSY (the documented price of the promise) and are found in
//! /proc; a splice(2) from the file copies and holds nothing.
//!
//! The last two cases tear the device down (umount, then unbind the fsdax
//! namespace from nd_pmem, as `ndctl disable-namespace` does) under pages
//! vmspliced into pipes and under a pin: every reference to an fsdax page
//! holds the device's pagemap, so the umount goes through, the unbind waits
//! until the pipes are drained or the ring lets go, and the namespace, the
//! filesystem and the seal come back. Before them, on every kernel, an
//! unbind after a shared futex and a /proc/self/mem read of a DAX mapping
//! (references the kernel takes and releases at once) must finish. With
//! the series, a memory failure of the namespace's info block gives ENXIO
//! and one line of its own, and on two CPUs memory failures reported from
//! one while the other binds the namespace again must come in before its
//! pagemap is published, without a kernel report (a kernel without the
//! series dereferences NULL there).
//!
//! On a kernel without the series SEAL gives EOPNOTSUPP and the sealed cases
//! skip; the control (a long-term pin of an unsealed DAX file is refused
//! with EOPNOTSUPP) runs on both.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use dax_seal_protocol::MOUNT_PREFIX;

use crate::calls::{
    self, cpath, errno_text, free_bytes, result_text, statx_attributes, umount, Mapping, STATX_ATTR_DAX,
};
use crate::cases::{when_sealable, Attempt, Cases};
use crate::fixture::{
    create, is_sealed, pattern, pin_counters, pins_settled, probe, probe_online_repair, remount, remount_with,
    remove_sealed, run_tool, tail, while_unmounted, xfs_repair, HungTaskTimeout, Namespace, WriteCache,
};
use crate::seal::{self, Extent};
use crate::trace::{self, TraceEvent};

/// The size of the reproduction in the report that found the eviction hole.
const SIZE: u64 = 2 << 20;
const PAGE: u64 = 4096;

type Check = Result<String, String>;

type Case = fn(&Env) -> Attempt;

/// Every case, each exactly one KTAP result, in order.
const CASES: &[(&str, Case)] = &[
    ("unsealed-dax-pin-refused", case_control),
    ("pin-outlives-umount", case_umount),
    ("dax-never-mount-refuses-pinned-file", case_dax_never),
    ("dax-never-mount-opens-sealed-file-with-poisoned-block", case_poisoned_block),
    ("pin-outlives-drop-caches", case_drop_caches),
    ("dax-flag-fixed-while-sealed-dax-inode", case_dax_inode),
    ("online-repair-keeps-pin-and-seal", case_repair),
    ("new-filesystem-and-repair-refused-under-pin", case_writers_under_pin),
    ("fsync-writes-back-pinned-pages", case_fsync),
    ("unpin-writes-back-what-the-pin-wrote", case_unpin_writeback),
    ("unpin-without-write-cache-writes-nothing-back", case_unpin_without_write_cache),
    ("unpin-of-page-failed-after-eviction-writes-it-not", case_unpin_after_memory_failure),
    ("unpin-after-failure-in-huge-mapping-skips-only-the-failed-page", case_unpin_after_huge_failure),
    ("unpin-of-shared-unsealed-pages-writes-nothing-back", case_shared_unpin),
    ("fsync-after-release-flushes-the-device", case_fsync_after_release),
    ("fsync-walks-only-while-a-pin-is-possible", case_fsync_walk),
    ("read-only-mappings-leave-fsync-alone", case_reader_mapping),
    ("unprivileged-reader-holds-seal", case_unprivileged_reader),
    ("splice-copies-and-holds-nothing", case_splice),
    ("seal-interrupted-by-sigkill", case_sigkill),
    ("readers-progress-during-seal", case_readers),
    ("seal-of-shared-file-interrupted-by-sigkill", case_sigkill_shared),
    ("readers-progress-during-seal-of-shared-file", case_readers_shared),
    ("mappings-outside-each-step-survive-seal", case_mappings_survive),
    ("namespace-teardown-after-released-references", case_released_references),
    ("memory-failure-of-namespace-metadata", case_failure_of_metadata),
    ("memory-failure-while-namespace-binds", case_failure_during_bind),
    ("namespace-teardown-waits-for-plain-references", case_plain_references),
    ("namespace-teardown-waits-for-pin", case_namespace_teardown),
];

struct Env {
    mount: PathBuf,
    dir: PathBuf,
    /// Ok when SEAL works; otherwise why the sealed cases skip.
    has_seal: Result<(), String>,
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs `f` only on a kernel with the series.
    fn sealed(&self, f: impl FnOnce() -> Check) -> Attempt {
        when_sealable(&self.has_seal, f)
    }
}

pub fn run() -> ExitCode {
    let mount = PathBuf::from(format!("{MOUNT_PREFIX}0"));
    let mut t = Cases::new(CASES.len());
    let dir = match crate::workdir::fresh(&mount, "seal-lifetime") {
        Ok(dir) => dir,
        Err(e) => {
            for (name, _) in CASES {
                t.blocked(name, &e);
            }
            return t.exit();
        }
    };
    let env = Env { has_seal: probe(&dir), mount, dir: dir.clone() };
    match &env.has_seal {
        Ok(()) => t.note("SEAL works on this kernel: the sealed cases run"),
        Err(why) => t.note(&format!("sealed cases skip: {why}")),
    }
    for (name, case) in CASES {
        t.outcome(name, case(&env));
    }
    let _ = fs::remove_dir_all(&dir);
    t.exit()
}

/// A sealed file whose mapping is registered as an io_uring fixed buffer,
/// after munmap: only the ring still refers to its pages.
struct Pinned {
    path: PathBuf,
    ring: seal::Ring,
    /// Where the registered buffer was mapped: READ_FIXED addresses it
    /// after munmap too, since io_uring only checks the range.
    addr: usize,
    map: Vec<Extent>,
    pins_before: u64,
}

/// Creates and seals `path`, maps it, pins the mapping, and unmaps it. The
/// caller closes `file` when the case needs the inode to be let go.
fn seal_pin_unmap(path: &Path) -> Result<(Pinned, File), String> {
    let file = create(path, 0x61, SIZE)?;
    seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let map = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    let (pins_before, _) = pin_counters()?;
    let ring = seal::Ring::new().map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
    let mut mapping = crate::fixture::shared_for_stores(&file, SIZE as usize)?.0;
    let addr = mapping.as_mut_ptr() as usize;
    ring.register(mapping.as_mut_ptr(), SIZE as usize)
        .map_err(|e| format!("REGISTER_BUFFERS on the sealed DAX mapping: {}", errno_text(&e)))?;
    drop(mapping);
    Ok((Pinned { path: path.to_path_buf(), ring, addr, map, pins_before }, file))
}

impl Pinned {
    /// The pin still holds after `what`: same map, still sealed, UNSEAL
    /// EBUSY, a READ_FIXED through the registration lands in the file's
    /// blocks. Then the ring lets go and UNSEAL gives 0. Removes the file.
    fn still_holds(self, what: &str) -> Check {
        let r = self.check(what);
        if r.is_err() {
            // Leave nothing sealed behind on the image.
            let _ = self.ring.unregister();
        }
        remove_sealed(&self.path);
        let _ = fs::remove_file(self.path.with_extension("source"));
        r
    }

    fn check(&self, what: &str) -> Check {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| format!("reopen {} after {what}: {}", self.path.display(), errno_text(&e)))?;
        let map = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
        if map != self.map {
            return Err(format!("after {what} the map moved: {:?} -> {map:?}", self.map));
        }
        if !is_sealed(&self.path)? {
            return Err(format!("after {what} the file is no longer sealed"));
        }
        match seal::unseal(&file) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            other => {
                return Err(format!(
                    "UNSEAL after {what} while the ring still pins the pages: {other:?}, expected EBUSY \
                     (the blocks could go to another file while a device writes to them)"
                ))
            }
        }
        let source_path = self.path.with_extension("source");
        let source = create(&source_path, 0x7e, SIZE)?;
        let got = self.ring.read_fixed(&source, 0, self.addr as *mut u8, SIZE as u32);
        match got {
            Ok(n) if u64::from(n) == SIZE => {}
            other => return Err(format!("READ_FIXED into the pinned pages after {what}: {other:?}, expected {SIZE}")),
        }
        let mut landed = vec![0u8; SIZE as usize];
        file.read_exact_at(&mut landed, 0).map_err(|e| format!("pread: {}", errno_text(&e)))?;
        if landed != pattern(0x7e, SIZE) {
            return Err(format!(
                "after {what}, a READ_FIXED into the pinned pages did not land in the sealed file's blocks"
            ));
        }
        self.ring.unregister().map_err(|e| format!("UNREGISTER_BUFFERS: {}", errno_text(&e)))?;
        let (acquired, released) = pins_settled("UNREGISTER_BUFFERS")?;
        seal::unseal(&file).map_err(|e| format!("UNSEAL after unregister: {}", errno_text(&e)))?;
        let pinned = acquired.saturating_sub(self.pins_before);
        if pinned < SIZE / PAGE {
            return Err(format!(
                "nr_foll_pin_acquired moved by {pinned}, fewer than the {} pages registered: no pin was taken",
                SIZE / PAGE
            ));
        }
        Ok(format!(
            "after {what}: map unchanged, still sealed, UNSEAL EBUSY, READ_FIXED {SIZE} bytes landed in the \
             file's blocks; after unregister UNSEAL 0 ({pinned} pins acquired, nr_foll_pin_acquired {acquired} \
             released {released})"
        ))
    }
}

fn case_control(env: &Env) -> Attempt {
    let path = env.path("control");
    let r = (|| {
        let file = create(&path, 0x62, SIZE)?;
        let ring = seal::Ring::new().map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
        let mut mapping = crate::fixture::shared_for_stores(&file, SIZE as usize)?.0;
        match ring.register(mapping.as_mut_ptr(), SIZE as usize) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                Ok("REGISTER_BUFFERS on an unsealed DAX mapping: EOPNOTSUPP, so nothing can outlive it".into())
            }
            other => Err(format!("REGISTER_BUFFERS on an unsealed DAX mapping: {other:?}, expected EOPNOTSUPP")),
        }
    })();
    let _ = fs::remove_file(&path);
    Attempt::Done(r)
}

/// umount evicts every inode and drops its DAX entries. The pin must not
/// warn there, and must still hold once the filesystem is mounted again.
fn case_umount(env: &Env) -> Attempt {
    env.sealed(|| {
        let (pinned, file) = seal_pin_unmap(&env.path("umount"))?;
        drop(file);
        remount(&env.mount).map_err(|e| format!("{e} (umount is allowed while a sealed file is pinned)"))?;
        pinned.still_holds("munmap, close, umount and mount")
    })
}

/// After an umount under a pin, nothing of the filesystem holds the disk,
/// but the pin still holds a page of it: a new filesystem, or a repair by
/// a tool that does not know the seal, would give the pinned blocks a
/// second owner while a device may still write to them. While the page is
/// held, only a mount may open the pmem disk for writing: an exclusive
/// open for writing (what mkfs.xfs and xfs_repair do first), `mkfs.xfs
/// -f` and `xfs_repair` get EBUSY, and the kernel says why; `xfs_repair
/// -n`, which only reads, goes through. Mounted again, the file is still
/// sealed and the pin still lands in its blocks. Once the ring lets go,
/// the disk opens for writing and `xfs_repair` repairs it. mkfs runs only
/// after the open was refused, so a kernel that lets writers in loses no
/// filesystem to this case.
fn case_writers_under_pin(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("writers-under-pin");
        let (pinned, file) = seal_pin_unmap(&path)?;
        drop(file);
        let refused = while_unmounted(&env.mount, refuse_writers);
        let kept = refused.and_then(|refused| match fs::remove_file(&path) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(refused),
            other => Err(format!("unlink after the mount came back: {}, expected EPERM", result_text(&other))),
        });
        let held = pinned.still_holds("umount, refused writers and mount");
        let refused = kept?;
        let held = held?;
        let repaired = while_unmounted(&env.mount, |dev| {
            drop(open_for_writing(dev).map_err(|e| {
                format!("exclusive open of {dev} for writing after the pin went: {}, expected 0", errno_text(&e))
            })?);
            let r = xfs_repair(dev, &[])?;
            if r.status != Some(0) {
                return Err(format!(
                    "xfs_repair {dev} after the pin went exited {:?}:\n{}",
                    r.status,
                    tail(&r.text, TOOL_LINES)
                ));
            }
            Ok(())
        });
        repaired?;
        Ok(format!("{refused}; {held}; after the release the disk opened for writing and xfs_repair exited 0"))
    })
}

/// How many of a tool's last lines a failure's reason quotes.
const TOOL_LINES: usize = 8;

/// What the kernel logs when it refuses to open a pmem disk for writing.
const WRITERS_REFUSED: &str = "open for writing refused";

/// Opens `dev` for writing, exclusively, as mkfs.xfs and xfs_repair do.
fn open_for_writing(dev: &str) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().read(true).write(true).custom_flags(libc::O_EXCL).open(dev)
}

/// An exclusive open of `dev` for writing must be EBUSY: `while_held`
/// says what holds a page of it.
fn writers_refused(dev: &str, while_held: &str) -> Result<(), String> {
    match open_for_writing(dev) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        other => {
            Err(format!("exclusive open of {dev} for writing {while_held}: {}, expected EBUSY", result_text(&other)))
        }
    }
}

/// The unmounted disk `dev`, whose page a pin holds, refuses every writer.
fn refuse_writers(dev: &str) -> Check {
    let said = calls::kmsg_count(WRITERS_REFUSED)?;
    writers_refused(dev, "while a pin holds a page of it").map_err(|e| {
        format!("{e}: mkfs.xfs or xfs_repair would give the pinned blocks a second owner (neither was run)")
    })?;
    if calls::kmsg_count(WRITERS_REFUSED)? == said {
        return Err(format!("the open of {dev} was EBUSY, but the kernel did not log \"{WRITERS_REFUSED}\""));
    }
    let (mkfs, mkfs_text) = run_tool("mkfs.xfs", ["-f", dev])?;
    if mkfs == Some(0) || !mkfs_text.contains("busy") {
        return Err(format!(
            "mkfs.xfs -f {dev} under the pin exited {mkfs:?}, expected a refusal (busy):\n{}",
            tail(&mkfs_text, TOOL_LINES)
        ));
    }
    let repair = xfs_repair(dev, &[])?;
    if repair.status == Some(0) || !repair.text.contains("busy") {
        return Err(format!(
            "xfs_repair {dev} under the pin exited {:?}, expected a refusal (busy):\n{}",
            repair.status,
            tail(&repair.text, TOOL_LINES)
        ));
    }
    let check = xfs_repair(dev, &["-n"])?;
    if check.status != Some(0) || !check.named.is_empty() {
        return Err(format!(
            "xfs_repair -n {dev} under the pin exited {:?} and named {:?}; reading must stay allowed:\n{}",
            check.status,
            check.named,
            tail(&check.text, TOOL_LINES)
        ));
    }
    Ok(format!(
        "after umount under the pin: exclusive open of {dev} for writing EBUSY (logged), mkfs.xfs -f and xfs_repair \
         refused (busy), xfs_repair -n exited 0 naming no seal; mounted again, unlink EPERM"
    ))
}

/// The pin outlives the mount, and a mount without DAX would put a page
/// cache over blocks a device may still be writing: while the pin lives,
/// the sealed file cannot be opened on a dax=never mount (EBUSY). Once the
/// ring lets go it opens and reads as the file did. The mount goes back to
/// its DAX option after.
fn case_dax_never(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("dax-never");
        let (pinned, file) = seal_pin_unmap(&path)?;
        drop(file);
        let old = remount_with(&env.mount, |opts| {
            opts.iter().filter(|o| !o.starts_with("dax")).cloned().chain(["dax=never".to_string()]).collect()
        })?;
        let r = dax_never(&pinned);
        let back = remount_with(&env.mount, |_| old.clone());
        remove_sealed(&path);
        let r = r?;
        back.map_err(|e| format!("putting the mount back: {e}"))?;
        Ok(r)
    })
}

fn dax_never(pinned: &Pinned) -> Check {
    let path = &pinned.path;
    let refused = File::open(path);
    let unregistered = pinned.ring.unregister().map_err(|e| format!("UNREGISTER_BUFFERS: {}", errno_text(&e)));
    match refused {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        other => {
            return Err(format!(
                "open of the pinned sealed file on the dax=never mount: {}, expected EBUSY",
                result_text(&other)
            ))
        }
    }
    unregistered?;
    let (acquired, released) = pins_settled("UNREGISTER_BUFFERS")?;
    let bytes =
        fs::read(path).map_err(|e| format!("read {} after the pin went: {}", path.display(), errno_text(&e)))?;
    if bytes != pattern(0x61, SIZE) {
        return Err("after the pin went, the file read through the page cache is not the file".into());
    }
    Ok(format!(
        "pinned, unmapped, closed, remounted dax=never: open EBUSY; after UNREGISTER_BUFFERS (pins acquired \
         {acquired}, released {released}) it opens and reads as written"
    ))
}

/// A poisoned block in a sealed file does not lock the file out of a
/// dax=never mount. Opening it there first looks for pages a device may
/// hold (as case_dax_never shows); that asks the device's struct pages,
/// not the data, so it must look past the bad block, where the driver
/// refuses direct access to the data. The file opens, its good blocks read
/// as written and the poisoned one EIO, which shows the poison was in
/// effect; UNSEAL, which looks for pins over the same pages, gives 0.
/// QEMU's NVDIMMs cannot clear poison (no address range scrub), so the
/// block stays bad until the guest powers off: the file keeps it, sealed
/// again, and the next run's clean-up of this workload's directories
/// removes it.
fn case_poisoned_block(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("poisoned");
        let file = create(&path, 0x5a, SIZE)?;
        seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
        let map = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
        drop(file);
        let first = map.first().ok_or("FIEMAP of the sealed file: no extent")?;
        if first.logical != 0 || first.length < 2 * PAGE {
            return Err(format!("the sealed file's first extent does not hold its first two blocks: {map:?}"));
        }
        let badblocks = crate::fixture::mounted_disk(&env.mount)?.1.join("badblocks").display().to_string();
        // The file's second block, in the disk's 512-byte sectors.
        let sector = (first.physical + PAGE) / 512;
        let old = remount_with(&env.mount, |opts| {
            opts.iter().filter(|o| !o.starts_with("dax")).cloned().chain(["dax=never".to_string()]).collect()
        })?;
        let r = poisoned(&path, &badblocks, sector);
        let back = remount_with(&env.mount, |_| old.clone());
        let r = r?;
        back.map_err(|e| format!("putting the mount back: {e}"))?;
        Ok(r)
    })
}

fn poisoned(path: &Path, badblocks: &str, sector: u64) -> Check {
    let sectors = PAGE / 512;
    fs::write(badblocks, format!("{sector} {sectors}\n"))
        .map_err(|e| format!("marking sectors {sector}+{sectors} bad in {badblocks}: {e}"))?;
    let listed = fs::read_to_string(badblocks).map_err(|e| format!("{badblocks}: {e}"))?;
    if !listed.lines().any(|l| l.split_whitespace().next() == Some(sector.to_string().as_str())) {
        return Err(format!("{badblocks} does not list sector {sector} after it was marked: {listed:?}"));
    }
    let file = File::open(path).map_err(|e| {
        format!(
            "open of the sealed file with a poisoned block on the dax=never mount: {}, expected it to open \
             (looking for pinned pages reads no data)",
            errno_text(&e)
        )
    })?;
    drop(file);
    // O_DIRECT: each read asks the device for its own block only, where a
    // buffered read's readahead could take the bad block along.
    let direct = crate::fixture::open_direct(path, false)
        .map_err(|e| format!("open O_DIRECT of the sealed file with a poisoned block: {}", errno_text(&e)))?;
    let mut buffer = Mapping::anonymous(PAGE as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    let block = buffer.as_mut_slice();
    let written = pattern(0x5a, SIZE);
    for at in [0, 2 * PAGE] {
        direct.read_exact_at(block, at).map_err(|e| format!("read of the good block at {at}: {}", errno_text(&e)))?;
        if block[..] != written[at as usize..(at + PAGE) as usize] {
            return Err(format!("the good block at {at} does not read as written"));
        }
    }
    match direct.read_exact_at(block, PAGE) {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
        other => {
            return Err(format!(
                "read of the poisoned block: {}, expected EIO (the poison was not in effect)",
                result_text(&other)
            ))
        }
    }
    // UNSEAL looks for pins over the same pages; SEAL again keeps the bad
    // block in a file nobody may remove until the guest powers off.
    let writable = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("open for writing: {}", errno_text(&e)))?;
    seal::unseal(&writable)
        .map_err(|e| format!("UNSEAL of the sealed file with a poisoned block: {}, expected 0", errno_text(&e)))?;
    seal::seal(&writable)
        .map_err(|e| format!("SEAL again of the file with a poisoned block: {}, expected 0", errno_text(&e)))?;
    Ok(format!(
        "sector {sector} marked bad ({badblocks}); on the dax=never mount the sealed file opens, its blocks at 0 \
         and {} read as written and the poisoned one EIO; UNSEAL 0, SEAL again 0",
        2 * PAGE
    ))
}

/// Plain references that the kernel drops through folio_put() rather than
/// put_page(): a shared futex on a DAX mapping (get_futex_key()) and a read
/// of /proc/self/mem at a DAX address (__access_remote_vm()). Both take the
/// page with GUP and let it go at once, so once the file is unmapped,
/// closed and unmounted the namespace holds nothing: the unbind must
/// finish, without the kernel logging that it waits for references. A
/// kernel that counts those references against the device's pagemap but
/// misses their release (6.12's folio_put() did not see fsdax pages) waits
/// for ever. No seal is needed: this runs on every kernel.
fn case_released_references(env: &Env) -> Attempt {
    let path = env.path("futex-proc-mem");
    let check = (|| {
        let file = create(&path, 0x66, SIZE)?;
        let mapping = Mapping::shared(&file, SIZE as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
        let addr = mapping.as_ptr() as u64;
        // SAFETY: a shared (not private) FUTEX_WAKE on a word of our own mapping.
        let woken = unsafe { libc::syscall(libc::SYS_futex, addr as *const u32, libc::FUTEX_WAKE, 1, 0, 0, 0) };
        if woken < 0 {
            return Err(format!("FUTEX_WAKE on the DAX mapping: {}", errno_text(&io::Error::last_os_error())));
        }
        let mem = File::open("/proc/self/mem").map_err(|e| format!("open /proc/self/mem: {}", errno_text(&e)))?;
        let mut back = vec![0u8; PAGE as usize];
        mem.read_exact_at(&mut back, addr).map_err(|e| format!("pread /proc/self/mem: {}", errno_text(&e)))?;
        if back != pattern(0x66, SIZE)[..PAGE as usize] {
            return Err("/proc/self/mem did not read the DAX file's bytes".into());
        }
        drop(mem);
        drop(mapping);
        drop(file);
        let ns = Namespace::of(&env.mount)?;
        umount(&env.mount).map_err(|e| format!("umount {}: {}", env.mount.display(), errno_text(&e)))?;
        // Nothing holds a page, so writers may open the disk (the kernel
        // with the series walks the disk's pages first: the time says what
        // that costs).
        let opening = Instant::now();
        drop(open_for_writing(&ns.dev).map_err(|e| {
            format!("exclusive open of {} for writing with nothing referenced: {}, expected 0", ns.dev, errno_text(&e))
        })?);
        let opened = opening.elapsed();
        let notices = calls::kmsg_count(TEARDOWN_NOTICE)?;
        let started = Instant::now();
        // A thread still waiting is left in D state: the hung-task report names it.
        let Some(done) = ns.unbind_in_background().join_within(started, TEARDOWN_FINISHES)? else {
            return Err(format!(
                "unbinding {} still waits {} s after a shared futex and a /proc/self/mem read let go of their \
                 pages: their releases did not give back the device's pagemap",
                ns.name,
                TEARDOWN_FINISHES.as_secs()
            ));
        };
        let spoke = calls::kmsg_count(TEARDOWN_NOTICE)? - notices;
        ns.bind()?;
        ns.mount(&env.mount)?;
        if spoke > 0 {
            return Err(format!(
                "unbinding {} finished, but logged \"{TEARDOWN_NOTICE}\" {spoke} time(s) with nothing referenced",
                ns.name
            ));
        }
        Ok(format!(
            "a shared FUTEX_WAKE and a /proc/self/mem read of the DAX mapping, then munmap, close, umount: the disk \
             opened for writing ({:.1} ms); unbinding {} finished in {:.0} ms without a \"{TEARDOWN_NOTICE}\" line; \
             bound and mounted again",
            opened.as_secs_f64() * 1000.0,
            ns.name,
            done.saturating_duration_since(started).as_secs_f64() * 1000.0
        ))
    })();
    let _ = fs::remove_file(&path);
    Attempt::Done(check)
}

/// What the kernel with the series logs for a memory failure in a device's
/// metadata (patch 0029 of 7.3, 0031 of 6.12).
const METADATA_FAILURE: &str = "failure in device metadata: not recoverable";

/// A memory failure reported for the first page of the mounted namespace,
/// its info block: metadata, not data, so not recoverable (`ENXIO`). Linux
/// counted such a failure in the node it read from the page's struct page,
/// which nothing initialises (the altmap reserves the range); on the debug
/// kernel that page is poisoned, and the count faulted. With the series the
/// kernel says so in a line of its own and counts nothing. The console scan
/// fails the run on any oops.
fn case_failure_of_metadata(env: &Env) -> Attempt {
    // With its memmap in RAM (`mode` ram, as on CXL) the namespace has no
    // altmap: its pagemap starts at its first page, which is then no
    // metadata to it.
    if let Err(why) = &env.has_seal {
        return Attempt::Skip(why.clone());
    }
    let ns = match Namespace::of(&env.mount) {
        Ok(ns) => ns,
        Err(e) => return Attempt::Done(Err(e)),
    };
    let mode = format!("/sys/bus/nd/devices/{}/mode", ns.name);
    if fs::read_to_string(&mode).is_ok_and(|m| m.trim() == "ram") {
        return Attempt::Skip(format!(
            "{} keeps its memmap in RAM ({mode}: ram): no page of it is device metadata to its pagemap",
            ns.name
        ));
    }
    Attempt::Done((|| {
        let link = format!("/sys/bus/nd/devices/{}/namespace", ns.name);
        let namespace = fs::read_to_string(&link).map_err(|e| format!("read {link}: {}", errno_text(&e)))?;
        let resource = format!("/sys/bus/nd/devices/{}/resource", namespace.trim());
        let first = fs::read_to_string(&resource).map_err(|e| format!("read {resource}: {}", errno_text(&e)))?;
        let first = first.trim();
        let before = calls::kmsg_count(METADATA_FAILURE)?;
        let reported = fs::write(HARD_OFFLINE, first);
        let logged = calls::kmsg_count(METADATA_FAILURE)?.saturating_sub(before);
        match reported {
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && logged == 1 => Ok(format!(
                "the first page of {} ({first}, its info block) reported failed: ENXIO, and the kernel said \
                 \"{METADATA_FAILURE}\" once, no kernel report",
                namespace.trim()
            )),
            r => Err(format!(
                "the first page of {} ({first}) reported failed: {}, and \"{METADATA_FAILURE}\" logged {logged} \
                 time(s); expected ENXIO and once",
                namespace.trim(),
                result_text(&r)
            )),
        }
    })())
}

/// What the kernel logs for each memory failure that reached a device's
/// pagemap (`memory_failure_dev_pagemap()`, whatever its outcome).
const DAX_PAGE_FAILURE: &str = "recovery action for dax page";
/// What the kernel logs for a memory failure of a pfn whose memory was
/// added but whose pagemap is not published yet (with the series: until
/// its struct pages are initialised, patch 0028 of 7.3, 0030 of 6.12).
const UNPUBLISHED_FAILURE: &str = "memory outside kernel control";
/// The kernel log's DAX_PAGE_FAILURE and UNPUBLISHED_FAILURE lines so far,
/// from one read of it.
fn failure_lines() -> Result<(usize, usize), String> {
    let records = calls::kmsg_records()?;
    let count = |needle| records.iter().filter(|r| r.contains(needle)).count();
    Ok((count(DAX_PAGE_FAILURE), count(UNPUBLISHED_FAILURE)))
}

/// Binds tried until failures came in while the pages were set up.
const BIND_ROUNDS: usize = 5;

/// A memory failure reported while the namespace binds: the pagemap exists
/// (memory_failure() finds it) before the disk does, and its
/// `->memory_failure()` hands the pmem driver's dax_device to the
/// filesystem notifier. The driver allocates that device only after mapping
/// the pages, so a failure in between dereferenced NULL (reproduced on the
/// kernel without the series: `BUG: kernel NULL pointer dereference` in
/// `dax_holder_notify_failure`); with the series the driver answers ENXIO
/// until it has set the device up (patch 0026 of 7.3, 0028 of 6.12), and
/// Linux finds the pagemap only once its struct pages are initialised
/// (patch 0028 of 7.3, 0030 of 6.12: on the debug kernel, with 0026 alone,
/// memory_failure() faulted counting the failure in a node read from a
/// poisoned struct page). A thread on another CPU reports
/// the namespace's first data page failed (`hard_offline_page`), over and
/// over, from the moment the bind starts until the disk is back; the case
/// counts from the kernel's log the failures that came in while the pages
/// were set up: before the pagemap was published (where the kernels
/// without these patches faulted: under TCG with one thread for both vCPUs
/// a bind may pass without any failure landing there) and after, before the
/// disk came back. It fails when none came in before the pagemap was
/// published, which also tells a kernel that publishes it before the struct
/// pages are initialised. The console scan fails the run on any oops or
/// warning.
fn case_failure_during_bind(env: &Env) -> Attempt {
    if let Err(why) = &env.has_seal {
        return Attempt::Skip(format!(
            "{why}; and a kernel without the series dereferences NULL when a memory failure comes in while the \
             namespace binds (it maps the pages before it allocates the dax_device)"
        ));
    }
    // SAFETY: sysconf reads a value.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if cpus < 2 {
        return Attempt::Skip(format!(
            "{cpus} CPU online: failures must come in from another CPU while one binds the namespace (--cpus 2)"
        ));
    }
    Attempt::Done((|| {
        let ns = Namespace::of(&env.mount)?;
        let resource = format!("/sys/bus/nd/devices/{}/resource", ns.name);
        let first = fs::read_to_string(&resource).map_err(|e| format!("read {resource}: {}", errno_text(&e)))?;
        let first = first.trim().to_string();
        let disk = Path::new("/sys/block").join(Path::new(&ns.dev).file_name().ok_or("no disk name")?);
        umount(&env.mount).map_err(|e| format!("umount {}: {}", env.mount.display(), errno_text(&e)))?;
        ns.unbind()?;
        let (dax_before, unpublished_before) = failure_lines()?;
        let (mut rounds, mut reported, mut dax, mut unpublished) = (0, 0usize, 0, 0);
        while unpublished == 0 && rounds < BIND_ROUNDS {
            if rounds > 0 {
                ns.unbind()?;
            }
            rounds += 1;
            let stop = std::sync::atomic::AtomicBool::new(false);
            let bound = std::thread::scope(|scope| {
                let reporter = scope.spawn(|| {
                    let mut n = 0usize;
                    while !disk.exists() && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // EBUSY or ENXIO: the page has no owner to recover it.
                        let _ = fs::write(HARD_OFFLINE, &first);
                        n += 1;
                    }
                    n
                });
                let bound = ns.bind();
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                reported += reporter.join().unwrap_or(0);
                bound
            });
            bound?;
            let (dax_now, unpublished_now) = failure_lines()?;
            dax = dax_now.saturating_sub(dax_before);
            unpublished = unpublished_now.saturating_sub(unpublished_before);
        }
        ns.mount(&env.mount)?;
        let counts = format!(
            "{unpublished} before the pagemap was published (\"{UNPUBLISHED_FAILURE}\"), {dax} reached the \
             pagemap before the disk came back (\"{DAX_PAGE_FAILURE}\")"
        );
        if unpublished == 0 {
            return Err(format!(
                "{reported} failures of {}'s first data page ({first}) reported during {rounds} binds, none before \
                 its pagemap was published ({counts}): either the kernel publishes the pagemap before it \
                 initialises the struct pages (no patch 0028 of 7.3, 0030 of 6.12), or no failure landed in that \
                 window",
                ns.name
            ));
        }
        Ok(format!(
            "{reported} failures of {}'s first data page ({first}) reported from another CPU while it bound again \
             ({rounds} bind(s)): {} of them while its pages were set up ({counts}), no kernel report; mounted again",
            ns.name,
            dax + unpublished
        ))
    })())
}

/// How many plain references the vmsplice case takes on one page: past
/// GUP_PIN_COUNTING_BIAS (1024), where a base page's count alone reads as
/// pinned.
const SPLICED_REFS: usize = 1280;
/// Pipe buffers per pipe: F_SETPIPE_SZ of 1 MiB.
const PIPE_SLOTS: usize = 256;
/// How long an umount may take with nothing to wait for.
const UMOUNT_PROMPT: Duration = Duration::from_secs(10);

/// A page of a sealed file vmspliced into pipes is held by plain page
/// references, not pins: 1280 of them, more than GUP_PIN_COUNTING_BIAS, so
/// that the page's count alone cannot tell them from a pin (the review
/// that found the use-after-free took 1024). Every reference to an fsdax
/// page holds the device's pagemap, so nothing of a sealed file holds up
/// its eviction: the umount goes through, and the unbind of the namespace
/// waits for the pipes instead. Draining them lets it finish; bound again,
/// the file is sealed with its map, and the pipe gave back its bytes. A
/// kernel whose plain references hold no pagemap lets the unbind go
/// through, and the pipes then drop references to freed struct pages.
fn case_plain_references(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("vmspliced");
        let r = (|| {
            let file = create(&path, 0x65, SIZE)?;
            seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
            let map = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
            let mapping = Mapping::shared(&file, SIZE as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
            let pipes = splice_page_into_pipes(mapping.as_ptr(), SPLICED_REFS)?;
            drop(mapping);
            drop(file);
            let ns = Namespace::of(&env.mount)?;
            let started = Instant::now();
            umount(&env.mount).map_err(|e| format!("umount {}: {}", env.mount.display(), errno_text(&e)))?;
            let umounted = started.elapsed();
            if umounted > UMOUNT_PROMPT {
                return Err(format!(
                    "umount took {:.1} s while pipes held {SPLICED_REFS} references to a page of the sealed file: \
                     eviction waited for them",
                    umounted.as_secs_f64()
                ));
            }
            // Judged once the namespace is back, so that the cases after
            // this one still find the filesystem.
            let writers = writers_refused(&ns.dev, "while pipes held a page of it");
            let unbind = ns.unbind_in_background();
            std::thread::sleep(TEARDOWN_WAITS);
            if unbind.is_finished() {
                // Draining the pipes now would drop references to freed struct pages.
                let done = unbind.join();
                std::mem::forget(pipes);
                return Err(format!(
                    "unbinding {} returned ({done:?}) while pipes held {SPLICED_REFS} references to a page of its \
                     memory: plain references do not hold the device's pagemap",
                    ns.name
                ));
            }
            let drained = Instant::now();
            let mut back = vec![0u8; PAGE as usize];
            // SAFETY: reading into our own buffer from our own pipe.
            let got = unsafe { libc::read(pipes[0].0[0], back.as_mut_ptr().cast(), back.len()) };
            drop(pipes);
            let Some(done) = unbind.join_within(drained, TEARDOWN_FINISHES)? else {
                return Err(format!(
                    "unbinding {} still waits {} s after the pipes were drained",
                    ns.name,
                    TEARDOWN_FINISHES.as_secs()
                ));
            };
            ns.bind()?;
            ns.mount(&env.mount)?;
            writers?;
            if got != PAGE as isize || back != pattern(0x65, SIZE)[..PAGE as usize] {
                return Err("the pipe did not give back the sealed file's bytes".into());
            }
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| format!("reopen {} after the namespace came back: {}", path.display(), errno_text(&e)))?;
            let map_after = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
            if !is_sealed(&path)? || map_after != map {
                return Err(format!("after the namespace came back: map {map:?} -> {map_after:?}, or not sealed"));
            }
            seal::unseal(&file).map_err(|e| format!("UNSEAL after the pipes were drained: {}", errno_text(&e)))?;
            Ok(format!(
                "{SPLICED_REFS} vmspliced references to one page: umount took {:.0} ms; opening the disk for writing \
                 EBUSY; unbinding {} still waited {} s and finished {:.0} ms after the pipes were drained; the pipe \
                 gave back the file's bytes; bound again, sealed with the same map, UNSEAL 0",
                umounted.as_secs_f64() * 1000.0,
                ns.name,
                TEARDOWN_WAITS.as_secs(),
                done.saturating_duration_since(drained).as_secs_f64() * 1000.0
            ))
        })();
        let _ = fs::remove_file(&path);
        r
    })
}

/// vmsplices the page at `page` into as many pipes as it takes to hold
/// `refs` references to it, one per pipe buffer.
fn splice_page_into_pipes(page: *const u8, refs: usize) -> Result<Vec<Pipe>, String> {
    let mut pipes = Vec::new();
    let mut taken = 0;
    while taken < refs {
        let pipe = Pipe::new()?;
        let want = PIPE_SLOTS.min(refs - taken);
        // SAFETY: F_SETPIPE_SZ on our own pipe.
        let size = unsafe { libc::fcntl(pipe.0[1], libc::F_SETPIPE_SZ, (PIPE_SLOTS as u64 * PAGE) as libc::c_int) };
        if size < (want as u64 * PAGE) as libc::c_int {
            return Err(format!("F_SETPIPE_SZ: {size} ({})", errno_text(&io::Error::last_os_error())));
        }
        let iov = vec![libc::iovec { iov_base: page as *mut libc::c_void, iov_len: PAGE as usize }; want];
        // SAFETY: the iovecs cover one page of our own mapping, into our own pipe.
        let n = unsafe { libc::vmsplice(pipe.0[1], iov.as_ptr(), iov.len(), 0) };
        if n != (want as u64 * PAGE) as isize {
            return Err(format!(
                "vmsplice of {want} copies of a page of the sealed mapping: {n} ({})",
                errno_text(&io::Error::last_os_error())
            ));
        }
        taken += want;
        pipes.push(pipe);
    }
    Ok(pipes)
}

/// Both ends of a pipe, closed on drop.
struct Pipe([libc::c_int; 2]);

impl Pipe {
    fn new() -> Result<Pipe, String> {
        let mut fds = [0; 2];
        // SAFETY: pipe() fills the array.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(format!("pipe: {}", errno_text(&io::Error::last_os_error())));
        }
        Ok(Pipe(fds))
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // SAFETY: closing descriptors this value owns.
        unsafe {
            libc::close(self.0[0]);
            libc::close(self.0[1]);
        }
    }
}

/// How long an unbind must still be waiting for the pin before the pin goes.
const TEARDOWN_WAITS: Duration = Duration::from_secs(2);
/// How soon the unbind must finish once the pin is gone.
const TEARDOWN_FINISHES: Duration = Duration::from_secs(30);
/// How long the pin case holds the pin under a waiting unbind, with the
/// hung-task limit at 1 s: long enough for the detector to speak.
const TEARDOWN_WATCHED: Duration = Duration::from_secs(3);
/// What the kernel logs when a teardown has references to wait for.
const TEARDOWN_NOTICE: &str = "waits for references to its pages";
/// What it logs when that wait is over.
const TEARDOWN_DONE: &str = "goes on after";

/// Tearing the device down under a pin, as an administrator would: seal,
/// pin, close, umount, then unbind the fsdax namespace from nd_pmem (what
/// `ndctl disable-namespace` does). The pin owns a reference on the
/// device's pagemap, so the unbind waits for it: the device's struct pages
/// (kept on the NVDIMM itself) must not go while the ring can still unpin
/// them, nor its memory while a device can still write into it. Once the
/// ring lets go the unbind finishes; bound again, the namespace and the
/// file come back, still sealed, and UNSEAL gives 0. The wait is the pin
/// holder's choice, not a hang: with the hung-task limit lowered to 1 s,
/// the detector must not report the unbinding task, and the kernel log
/// says what the teardown waits for. Last of the cases: a kernel that lets
/// the pages go oopses when the pin is dropped.
fn case_namespace_teardown(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("teardown");
        let (pinned, file) = seal_pin_unmap(&path)?;
        drop(file);
        let ns = Namespace::of(&env.mount)?;
        umount(&env.mount).map_err(|e| format!("umount {}: {}", env.mount.display(), errno_text(&e)))?;
        // With a 1 s limit the detector would report a task that waits
        // uninterruptibly within the 3 s the pin is held.
        let watchdog = HungTaskTimeout::set(1)?;
        let notices = calls::kmsg_count(TEARDOWN_NOTICE)?;
        let ended = calls::kmsg_count(TEARDOWN_DONE)?;
        let started = Instant::now();
        let unbind = ns.unbind_in_background();
        std::thread::sleep(TEARDOWN_WATCHED);
        if unbind.is_finished() {
            // Dropping the pin now would unpin struct pages that are gone.
            let done = unbind.join();
            return Err(format!(
                "unbinding {} returned ({done:?}, after {:.1} s) while the ring still pinned {SIZE} bytes of its \
                 memory: the pin does not own the device's pagemap, and unpinning now touches freed struct pages",
                ns.name,
                started.elapsed().as_secs_f64()
            ));
        }
        let unpinned = Instant::now();
        let Pinned { ring, pins_before, map, .. } = pinned;
        ring.unregister().map_err(|e| format!("UNREGISTER_BUFFERS: {}", errno_text(&e)))?;
        drop(ring);
        let (acquired, released) = pins_settled("UNREGISTER_BUFFERS and close")?;
        let Some(done) = unbind.join_within(unpinned, TEARDOWN_FINISHES)? else {
            return Err(format!(
                "unbinding {} still waits {} s after the last pin went (nr_foll_pin_acquired {acquired}, released \
                 {released})",
                ns.name,
                TEARDOWN_FINISHES.as_secs()
            ));
        };
        let after_unpin = done.saturating_duration_since(unpinned);
        drop(watchdog);
        let log = calls::kmsg_records()?;
        let said = log.iter().filter(|r| r.contains(TEARDOWN_NOTICE)).nth(notices);
        let went_on = log.iter().filter(|r| r.contains(TEARDOWN_DONE)).count() > ended;
        let (Some(said), true) = (said, went_on) else {
            return Err(format!(
                "unbinding {} waited {} s for the pin, and the kernel log lacks a new \"{TEARDOWN_NOTICE}\" line \
                 ({}) or a \"{TEARDOWN_DONE}\" line once it finished ({went_on})",
                ns.name,
                TEARDOWN_WATCHED.as_secs(),
                said.is_some()
            ));
        };
        ns.bind()?;
        ns.mount(&env.mount)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("reopen {} after the namespace came back: {}", path.display(), errno_text(&e)))?;
        let map_after = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
        let sealed = is_sealed(&path)?;
        let unsealed = seal::unseal(&file);
        drop(file);
        let _ = fs::remove_file(&path);
        if !sealed || map_after != map {
            return Err(format!("after the namespace came back: sealed {sealed}, map {map:?} -> {map_after:?}"));
        }
        unsealed.map_err(|e| format!("UNSEAL once the pin and the teardown are over: {}", errno_text(&e)))?;
        let pinned = acquired.saturating_sub(pins_before);
        if pinned < SIZE / PAGE {
            return Err(format!("nr_foll_pin_acquired moved by {pinned}, fewer than the {} pages", SIZE / PAGE));
        }
        Ok(format!(
            "unbinding {} ({}) still waited {} s into the pin, with no hung-task report at a 1 s limit, and \
             finished {:.0} ms after the ring let go ({pinned} pins acquired and released); the kernel said \"{}\"; \
             bound and mounted again, the file is sealed with the same map, UNSEAL 0",
            ns.name,
            ns.dev,
            TEARDOWN_WATCHED.as_secs(),
            after_unpin.as_secs_f64() * 1000.0,
            said.trim()
        ))
    })
}

/// Memory pressure evicts unused inodes too; drop_caches asks for it.
fn case_drop_caches(env: &Env) -> Attempt {
    env.sealed(|| {
        let (pinned, file) = seal_pin_unmap(&env.path("drop-caches"))?;
        drop(file);
        drop_caches()?;
        pinned.still_holds("munmap, close and drop_caches")
    })
}

fn drop_caches() -> Result<(), String> {
    fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| format!("echo 3 > /proc/sys/vm/drop_caches: {e}"))
}

/// Under `dax=inode` the DAX flag decides the access mode, and a change
/// evicts the inode at its last reference. A sealed file's flag cannot
/// change (ETXTBSY); its pin holds through eviction; once unsealed the
/// flag changes again.
fn case_dax_inode(env: &Env) -> Attempt {
    env.sealed(|| {
        let old = remount_with(&env.mount, |opts| {
            opts.iter().filter(|o| !o.starts_with("dax")).cloned().chain(["dax=inode".to_string()]).collect()
        })?;
        let dir = env.path("dax-inode");
        let r = dax_inode(&dir);
        let _ = fs::remove_dir_all(&dir);
        let back = remount_with(&env.mount, |_| old.clone());
        let r = r?;
        back.map_err(|e| format!("putting the mount back: {e}"))?;
        Ok(r)
    })
}

fn dax_inode(dir: &Path) -> Check {
    fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let d = File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    let mut fa = seal::fsgetxattr(&d).map_err(|e| format!("FSGETXATTR on the directory: {}", errno_text(&e)))?;
    fa.xflags |= seal::FS_XFLAG_DAX;
    seal::fssetxattr(&d, &fa).map_err(|e| format!("FSSETXATTR +DAX on the directory: {}", errno_text(&e)))?;
    let path = dir.join("file");
    let (pinned, file) = seal_pin_unmap(&path)?;
    let dax = |p: &Path| statx_attributes(p).map(|(a, _)| a & STATX_ATTR_DAX != 0);
    if !dax(&path)? {
        return Err("a new file in a directory with FS_XFLAG_DAX is not DAX under dax=inode".into());
    }
    let before = seal::fsgetxattr(&file).map_err(|e| format!("FSGETXATTR: {}", errno_text(&e)))?;
    let mut off = before;
    off.xflags &= !seal::FS_XFLAG_DAX;
    let refused = seal::fssetxattr(&file, &off);
    drop(file);
    drop_caches()?;
    if !dax(&path)? {
        return Err("after the refused flag change and drop_caches the file is no longer DAX".into());
    }
    match refused {
        Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {}
        other => return Err(format!("FSSETXATTR clearing FS_XFLAG_DAX on a sealed file: {other:?}, expected ETXTBSY")),
    }
    let held = pinned.check("a refused FS_XFLAG_DAX change, close and drop_caches")?;
    // Unsealed, the flag is the user's again.
    let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| format!("reopen: {e}"))?;
    seal::fssetxattr(&file, &off).map_err(|e| format!("FSSETXATTR -DAX once unsealed: {}", errno_text(&e)))?;
    Ok(format!("FSSETXATTR -DAX while sealed: ETXTBSY; {held}; once unsealed -DAX: 0"))
}

/// A write through a long-term pin dirties no DAX entry, so fsync has to
/// find the pinned pages itself (docs/seal.md, "Writes through pins are
/// durable"). A cache write-back cannot be seen under emulation; the
/// kernel's `xfs_seal_flush_pinned` event says how many pinned pages each
/// fsync of a sealed file wrote back, and that must be exactly the pinned
/// pages of the synced range: none before the pin, all of them after it,
/// none outside it, and all of them again once munmap, close and
/// drop_caches have evicted the inode the pin was taken through.
fn case_fsync(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("fsync");
        let r = fsync_writes_back_pins(&path);
        remove_sealed(&path);
        let _ = fs::remove_file(path.with_extension("source"));
        r
    })
}

/// What one fsync of a sealed file reported in `xfs_seal_flush_pinned`.
struct Flush {
    /// Pinned pages it wrote back.
    pages: u64,
    /// Whether it walked the file's pages; None on a kernel that does not
    /// say.
    walked: Option<bool>,
}

/// The one `xfs_seal_flush_pinned` event for inode `ino` since the last
/// call, after `what`.
fn flush_event(event: &TraceEvent, ino: &str, what: &str) -> Result<Flush, String> {
    let lines = event.take().map_err(|e| format!("reading the trace buffer after {what}: {e}"))?;
    let ours: Vec<&String> = lines.iter().filter(|l| trace::field(l, "ino") == Some(ino)).collect();
    match ours.as_slice() {
        [line] => Ok(Flush {
            pages: trace::field(line, "pinned_pages")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("{what}: no pinned_pages in {line:?}"))?,
            walked: trace::field(line, "walked").map(|w| w != "0"),
        }),
        [] => Err(format!("{what}: no xfs_seal_flush_pinned event for inode {ino}")),
        many => Err(format!(
            "{what}: {} xfs_seal_flush_pinned events for inode {ino}, expected one:\n{}",
            many.len(),
            many.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n")
        )),
    }
}

fn fsync_writes_back_pins(path: &Path) -> Check {
    let event = TraceEvent::enable("xfs", "xfs_seal_flush_pinned")
        .map_err(|e| format!("{e}; fsync of a sealed file reports the pinned pages it wrote back there"))?;
    let file = create(path, 0x63, SIZE)?;
    seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let ino = format!("{:#x}", file.metadata().map_err(|e| format!("fstat: {e}"))?.ino());
    let expect = |what: &str, want: u64| -> Result<(), String> {
        match flush_event(&event, &ino, what)?.pages {
            got if got == want => Ok(()),
            got => Err(format!("{what}: fsync wrote back {got} pinned pages, expected {want}")),
        }
    };
    let half = SIZE / 2;
    let pinned = half / PAGE;

    let mut mapping = crate::fixture::shared_for_stores(&file, SIZE as usize)?.0;
    // Every page is write-faulted: their DAX entries are dirty, which is
    // the ordinary path fsync already covers.
    mapping.as_mut_slice().fill(0x64);
    // A MAP_SYNC write fault may itself sync the range it maps; only the
    // explicit calls below are judged.
    event.take().map_err(|e| format!("reading the trace buffer: {e}"))?;
    file.sync_all().map_err(|e| format!("fsync: {}", errno_text(&e)))?;
    expect("fsync with nothing pinned", 0)?;

    let (pins_before, _) = pin_counters()?;
    let ring = seal::Ring::new().map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
    ring.register(mapping.as_mut_ptr(), half as usize)
        .map_err(|e| format!("REGISTER_BUFFERS on the first half: {}", errno_text(&e)))?;
    // The fsync above cleaned every entry; what READ_FIXED writes next goes
    // to the pinned pages and dirties none.
    let source = create(&path.with_extension("source"), 0x7f, half)?;
    match ring.read_fixed(&source, 0, mapping.as_mut_ptr(), half as u32) {
        Ok(n) if u64::from(n) == half => {}
        other => return Err(format!("READ_FIXED into the pinned half: {other:?}, expected {half}")),
    }
    file.sync_data().map_err(|e| format!("fdatasync: {}", errno_text(&e)))?;
    expect("fdatasync after READ_FIXED into the pinned half", pinned)?;
    mapping.msync(half as usize, half as usize).map_err(|e| format!("msync: {}", errno_text(&e)))?;
    expect("msync(MS_SYNC) of the unpinned half", 0)?;
    mapping.msync(0, PAGE as usize).map_err(|e| format!("msync: {}", errno_text(&e)))?;
    expect("msync(MS_SYNC) of the first pinned page", 1)?;

    let mut landed = vec![0u8; SIZE as usize];
    file.read_exact_at(&mut landed, 0).map_err(|e| format!("pread: {}", errno_text(&e)))?;
    let (first, second) = landed.split_at(half as usize);
    if first != pattern(0x7f, half) || second.iter().any(|&b| b != 0x64) {
        return Err("the file does not read back what READ_FIXED and the mapping wrote".into());
    }

    // The pin outlives the inode; so does fsync's reach.
    drop(mapping);
    drop(file);
    drop_caches()?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("reopen after drop_caches: {}", errno_text(&e)))?;
    file.sync_all().map_err(|e| format!("fsync: {}", errno_text(&e)))?;
    expect("fsync after munmap, close and drop_caches", pinned)?;

    ring.unregister().map_err(|e| format!("UNREGISTER_BUFFERS: {}", errno_text(&e)))?;
    let (acquired, released) = pins_settled("UNREGISTER_BUFFERS")?;
    file.sync_all().map_err(|e| format!("fsync: {}", errno_text(&e)))?;
    expect("fsync after the ring let go", 0)?;
    seal::unseal(&file).map_err(|e| format!("UNSEAL after unregister: {}", errno_text(&e)))?;
    let took = acquired.saturating_sub(pins_before);
    if took < pinned {
        return Err(format!("nr_foll_pin_acquired moved by {took}, fewer than the {pinned} pages registered"));
    }
    Ok(format!(
        "xfs_seal_flush_pinned: 0 pages before the pin; {pinned} after READ_FIXED (fdatasync); 0 for msync of the \
         unpinned half, 1 for one pinned page; {pinned} after munmap, close and drop_caches; 0 once unregistered \
         ({took} pins acquired, nr_foll_pin_acquired {acquired} released {released})"
    ))
}

/// A file that nothing can have pinned should not pay for fsync's walk of
/// its pages (docs/seal.md, "Writes through pins are durable"). The
/// `walked` field of `xfs_seal_flush_pinned` says whether an fsync walked:
/// the first fsync after SEAL does, the next does not; once the file is
/// mapped every fsync walks (a mapped page can be pinned at any moment);
/// after a pin taken through the mapping and munmap, fsync walks and
/// writes the pinned pages back; after the ring lets go, one more walk
/// finds nothing and the next fsync skips; after umount and mount, which
/// load the inode again (pins outlive it), one walk again, then none.
fn case_fsync_walk(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("fsync-walk");
        let r = fsync_walks_only_when_pinnable(&env.mount, &path);
        remove_sealed(&path);
        let _ = fs::remove_file(path.with_extension("source"));
        r
    })
}

/// fsyncs of one sealed file, each checked through xfs_seal_flush_pinned:
/// whether it walked the file's pages, and how many pinned pages it wrote
/// back. Keeps a line per fsync for the case's note.
struct WalkWatch {
    event: TraceEvent,
    ino: String,
    seen: Vec<String>,
}

impl WalkWatch {
    fn new(file: &File) -> Result<WalkWatch, String> {
        let event = TraceEvent::enable("xfs", "xfs_seal_flush_pinned")
            .map_err(|e| format!("{e}; fsync of a sealed file reports whether it walked there"))?;
        let ino = format!("{:#x}", file.metadata().map_err(|e| format!("fstat: {e}"))?.ino());
        Ok(WalkWatch { event, ino, seen: Vec::new() })
    }

    fn fsync(&mut self, file: &File, what: &str, walk: bool, pages: u64) -> Result<(), String> {
        self.event.take().map_err(|e| format!("reading the trace buffer: {e}"))?;
        file.sync_all().map_err(|e| format!("fsync {what}: {}", errno_text(&e)))?;
        let got = flush_event(&self.event, &self.ino, what)?;
        let walked = got.walked.ok_or_else(|| {
            format!("fsync {what}: xfs_seal_flush_pinned has no walked field: the kernel cannot skip the walk")
        })?;
        if walked != walk || got.pages != pages {
            return Err(format!(
                "fsync {what}: walked {walked}, {} pinned pages written back; expected walked {walk}, {pages}",
                got.pages
            ));
        }
        self.seen.push(format!("{what}: {}", if walked { format!("walked ({pages})") } else { "skipped".into() }));
        Ok(())
    }

    fn note(&self) -> String {
        self.seen.join("; ")
    }
}

fn fsync_walks_only_when_pinnable(mount: &Path, path: &Path) -> Check {
    let file = create(path, 0x65, SIZE)?;
    seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let mut watch = WalkWatch::new(&file)?;
    watch.fsync(&file, "after SEAL", true, 0)?;
    watch.fsync(&file, "again, nothing mapped", false, 0)?;

    let half = SIZE / 2;
    let pinned = half / PAGE;
    let mut mapping = Mapping::shared(&file, SIZE as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    // A read fault maps a page read-only: a pin that can write needs a
    // write fault first.
    std::hint::black_box(mapping.as_mut_slice()[0]);
    watch.fsync(&file, "while mapped, read faults only", false, 0)?;
    // One write fault maps a page that a writable pin could take.
    // SAFETY: the first byte of the live mapping.
    unsafe { std::ptr::write_volatile(mapping.as_mut_ptr(), 0x65) };
    watch.fsync(&file, "after a write fault", true, 0)?;
    watch.fsync(&file, "while still mapped writable", true, 0)?;

    let ring = seal::Ring::new().map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
    ring.register(mapping.as_mut_ptr(), half as usize)
        .map_err(|e| format!("REGISTER_BUFFERS on the first half: {}", errno_text(&e)))?;
    let addr = mapping.as_mut_ptr();
    drop(mapping);
    let source = create(&path.with_extension("source"), 0x7e, half)?;
    match ring.read_fixed(&source, 0, addr, half as u32) {
        Ok(n) if u64::from(n) == half => {}
        other => return Err(format!("READ_FIXED into the pinned half after munmap: {other:?}, expected {half}")),
    }
    watch.fsync(&file, "pinned, after munmap", true, pinned)?;
    watch.fsync(&file, "still pinned", true, pinned)?;

    ring.unregister().map_err(|e| format!("UNREGISTER_BUFFERS: {}", errno_text(&e)))?;
    pins_settled("UNREGISTER_BUFFERS")?;
    watch.fsync(&file, "after the ring let go", true, 0)?;
    watch.fsync(&file, "again, nothing pinned or mapped", false, 0)?;

    // umount reclaims the inode; the mount after it reads it from disk.
    // (drop_caches may only evict the VFS inode and recycle XFS's, which
    // keeps what it knew: nothing could pin the file in between.)
    drop((file, source, ring));
    remount(mount)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("reopen after umount and mount: {}", errno_text(&e)))?;
    watch.fsync(&file, "after umount and mount", true, 0)?;
    watch.fsync(&file, "again", false, 0)?;
    seal::unseal(&file).map_err(|e| format!("UNSEAL: {}", errno_text(&e)))?;
    Ok(watch.note())
}

/// A reader cannot make the owner's fsyncs walk: a read-only mapping of a
/// sealed file (a file opened read-only, read faults) allows no pin that a
/// device writes through, so neither its faults nor its mapping keep fsync
/// walking, and the reader's own fsync skips too. A writer's write fault
/// makes fsync walk until the writable mapping is gone, while the reader
/// still maps the file. (The walk runs under the ILOCK and costs a struct
/// page per 4 KiB: a reader that kept it going could stall the owner.)
fn case_reader_mapping(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("reader-mapping");
        let r = reader_mapping_leaves_fsync_alone(&path);
        remove_sealed(&path);
        r
    })
}

fn reader_mapping_leaves_fsync_alone(path: &Path) -> Check {
    let file = create(path, 0x68, SIZE)?;
    seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let mut watch = WalkWatch::new(&file)?;
    watch.fsync(&file, "after SEAL", true, 0)?;
    watch.fsync(&file, "again, nothing mapped", false, 0)?;
    let reader = File::open(path).map_err(|e| format!("open read-only: {}", errno_text(&e)))?;
    let map = Mapping::shared_read_only(&reader, SIZE as usize)
        .map_err(|e| format!("mmap of the read-only file: {}", errno_text(&e)))?;
    map.read_every_page();
    watch.fsync(&reader, "by the reader, which read every page through its mapping", false, 0)?;
    watch.fsync(&file, "by the owner while the reader maps the file", false, 0)?;
    let mut writable = Mapping::shared(&file, SIZE as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    // SAFETY: the first byte of the live mapping.
    unsafe { std::ptr::write_volatile(writable.as_mut_ptr(), 0x68) };
    watch.fsync(&file, "after the owner's write fault", true, 0)?;
    drop(writable);
    watch.fsync(&file, "after the owner's munmap, the reader still mapping", true, 0)?;
    watch.fsync(&reader, "by the reader again", false, 0)?;
    drop(map);
    Ok(watch.note())
}

/// What a pin wrote is durable once the pin is released, with no fsync:
/// READ_FIXED copies into the pinned half of a sealed file, the file is
/// unmapped and closed, and when the ring lets go every pinned page is
/// written back from the CPU caches (one fs_dax/dax_unpin_writeback event a
/// page, since the caches cannot be observed under emulation). Before that
/// release nothing was written back: no fsync ran, and neither does
/// anything else for a page a device wrote. The disk's write cache is on
/// for it, whatever the platform says (an eADR platform's is off, and then
/// nothing is written back, as the next case checks).
fn case_unpin_writeback(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("unpin");
        let r = pin_write_release(&env.mount, &path, 0x7e, true, None);
        remove_sealed(&path);
        let r = r?;
        if r.pages != r.pinned || r.pfns.len() as u64 != r.pinned || !r.missing.is_empty() {
            return Err(format!(
                "releasing the ring wrote back {} pages ({} distinct), expected each of the {} pinned pages once; \
                 pinned pages not written back: {:?}",
                r.pages,
                r.pfns.len(),
                r.pinned,
                r.missing
            ));
        }
        Ok(format!(
            "write_cache 1 (was {}): READ_FIXED into {} pinned pages, munmap, close, no fsync: 0 pages written \
             back; after UNREGISTER_BUFFERS ({}): {} pages, each once, and the file reads what the pin wrote",
            r.cache_before,
            r.pinned,
            r.counters(),
            r.pages
        ))
    })
}

/// A device whose CPU caches are in its persistence domain has nothing to
/// write back: with the pmem disk's `dax/write_cache` cleared (what a
/// platform reports when its caches are flushed on power loss, and what an
/// administrator sets for one), releasing a pin of a sealed file writes
/// nothing back, as fsync's write-back does nothing there either. The file
/// still reads what the pin wrote, and the pins were counted.
fn case_unpin_without_write_cache(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("unpin-no-cache");
        let r = pin_write_release(&env.mount, &path, 0x6b, false, None);
        remove_sealed(&path);
        let r = r?;
        if r.pages != 0 {
            return Err(format!(
                "with the write cache cleared, releasing the ring still wrote back {} pages ({} distinct) of the {} \
                 pinned: a device without a volatile cache pays for a write-back of every page it pinned",
                r.pages,
                r.pfns.len(),
                r.pinned
            ));
        }
        Ok(format!(
            "write_cache 0 (was {}): READ_FIXED into {} pinned pages, then UNREGISTER_BUFFERS ({}): 0 pages \
             written back, and the file reads what the pin wrote",
            r.cache_before,
            r.pinned,
            r.counters()
        ))
    })
}

/// Where root reports a page's memory failed, as the machine-check handler
/// does for a real error (`memory_failure()`).
const HARD_OFFLINE: &str = "/sys/devices/system/memory/hard_offline_page";

/// A page whose memory failed is never written back: x86 unmaps it from the
/// kernel once it handles the machine check, and a write-back would fault.
/// Linux finds a failed fsdax page through the mappings of the file that
/// owns it; a pin whose file's inode was evicted has none, so the page
/// must be marked failed whoever handled it. The case pins 256 pages of a
/// sealed file, evicts its inode, reports one pinned page failed and
/// releases the ring: the other 255 are written back, that one is not.
/// The file keeps the failed block, sealed, until the guest powers off
/// (emulated memory cannot be repaired); the next run's clean-up removes it.
/// On 6.12 the failure found the file's huge (PMD) entry still there, and
/// Linux marked the entry's first page instead of the failed one: the
/// release then skipped a good page and wrote back the failed one.
fn case_unpin_after_memory_failure(env: &Env) -> Attempt {
    env.sealed(|| {
        let r =
            pin_write_release(&env.mount, &env.path("unpin-failed-page"), 0x6c, true, Some(Failure::AfterEviction(3)))?;
        let failed = r.failed.as_deref().unwrap_or("?");
        if r.pfns.contains(failed) {
            return Err(format!(
                "after drop_caches evicted the file and its pinned page at pfn {failed} was reported failed, the \
                 release wrote back {} pages ({} distinct) of the {} pinned, the failed one among them: a page \
                 whose memory failed would be written back (x86 unmaps it after a machine check: the write-back \
                 faults)",
                r.pages,
                r.pfns.len(),
                r.pinned
            ));
        }
        if !r.wrote_back_all_but(failed) {
            return Err(format!(
                "after drop_caches evicted the file and its pinned page at pfn {failed} was reported failed, the \
                 release wrote back {} pages ({} distinct) of the {} pinned; pinned pages not written back: {:?}, \
                 expected only the failed one",
                r.pages,
                r.pfns.len(),
                r.pinned,
                r.missing
            ));
        }
        Ok(format!(
            "READ_FIXED into {} pinned pages, munmap, close, drop_caches, pfn {failed} reported failed; \
             UNREGISTER_BUFFERS ({}): {} pages written back, each once, not the failed one",
            r.pinned,
            r.counters(),
            r.pages
        ))
    })
}

/// A failure in a file mapped with a huge (PMD) page marks the page that
/// failed, not the first page of its 2 MiB. Linux looks the failed index up
/// in the file's DAX entries and marks the page the entry hands out; for a
/// huge entry that was its first page. The mark outlives the file's entry
/// (the device's pages cannot be unpoisoned), so once the file is sealed
/// and pinned, releasing the pin skipped the good first page, and what the
/// pin wrote there was never written back. The case writes a 2 MiB file in
/// one aligned extent, maps and reads it with a huge page (the
/// `dax_pmd_fault_done` event shows the huge fault), unmaps it, reports
/// its fourth page failed while the huge entry still holds it, then seals
/// the file, pins its first half and releases the pin: every pinned page
/// but the failed one is written back.
fn case_unpin_after_huge_failure(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("unpin-huge-failed-page");
        let r = pin_write_release(&env.mount, &path, 0x6d, true, Some(Failure::InHugeEntry(3)))?;
        let failed = r.failed.as_deref().unwrap_or("?");
        if !r.wrote_back_all_but(failed) {
            return Err(format!(
                "pfn {failed}, the fourth page of a 2 MiB file mapped with a huge page, was reported failed; after \
                 SEAL, a pin of the first half and its release, {} pages ({} distinct) of the {} pinned were \
                 written back; pinned pages not written back: {:?}, expected only the failed one (a page the \
                 release skips loses what the pin wrote there)",
                r.pages,
                r.pfns.len(),
                r.pinned,
                r.missing
            ));
        }
        Ok(format!(
            "huge (PMD) read fault, pfn {failed} (page 3) reported failed, SEAL, READ_FIXED into {} pinned pages; \
             UNREGISTER_BUFFERS ({}): {} pages written back, each once, not the failed one",
            r.pinned,
            r.counters(),
            r.pages
        ))
    })
}

/// When a case reports a page of the pinned half failed, as a machine check
/// would (`memory_failure()`).
#[derive(Clone, Copy)]
enum Failure {
    /// After the pin is taken and `drop_caches` evicted the sealed file's
    /// inode: nothing maps the page or has a DAX entry for it.
    AfterEviction(u64),
    /// Before the seal, while a huge (PMD) DAX entry of the file holds the
    /// page: Linux finds the failure through the file's entries.
    InHugeEntry(u64),
}

/// A new file of `len` bytes of the pattern `seed` in whole 2 MiB extents
/// (an extent-size hint; the filesystem's stripe unit aligns them), so
/// that its mappings can take huge (PMD) faults.
fn create_in_huge_extents(path: &Path, seed: u8, len: u64) -> Result<File, String> {
    let file = create(path, 0, 0)?;
    let mut fa = seal::fsgetxattr(&file).map_err(|e| format!("FS_IOC_FSGETXATTR: {}", errno_text(&e)))?;
    fa.xflags |= seal::FS_XFLAG_EXTSIZE;
    fa.extsize = 2 << 20;
    seal::fssetxattr(&file, &fa).map_err(|e| format!("FS_IOC_FSSETXATTR (2 MiB extent size): {}", errno_text(&e)))?;
    file.write_all_at(&pattern(seed, len), 0).map_err(|e| format!("pwrite: {}", errno_text(&e)))?;
    file.sync_all().map_err(|e| format!("fsync: {}", errno_text(&e)))?;
    Ok(file)
}

/// Maps the first 2 MiB of `file` and reads them through a huge (PMD)
/// fault, unmaps them, and reports page `page` failed while the file's
/// huge DAX entry still holds it. Returns the failed page's pfn.
fn fail_in_huge_entry(file: &File, page: u64) -> Result<u64, String> {
    const HUGE: u64 = 2 << 20;
    let event = TraceEvent::enable("fs_dax", "dax_pmd_fault_done")
        .map_err(|e| format!("{e}; the case shows its huge fault with it"))?;
    let map = Mapping::shared_read_only(file, HUGE as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    map.read_every_page();
    let pfn = calls::pfns_of(map.as_ptr(), (HUGE / PAGE) as usize)?[page as usize];
    drop(map);
    let faults = event.take().map_err(|e| format!("reading the trace buffer: {e}"))?;
    if !faults.iter().any(|l| l.ends_with(" NOPAGE")) {
        return Err(format!(
            "reading a 2 MiB file written in one 2 MiB extent through a shared mapping mapped no huge page \
             (dax_pmd_fault_done: {faults:?}): the failure would not meet a huge DAX entry"
        ));
    }
    report_failed(pfn)?;
    Ok(pfn)
}

/// Reports the page at `pfn` failed, as the machine-check handler does for
/// a real error.
fn report_failed(pfn: u64) -> Result<(), String> {
    let addr = format!("{:#x}", pfn * PAGE);
    fs::write(HARD_OFFLINE, &addr)
        .map_err(|e| format!("reporting the page at {addr} failed ({HARD_OFFLINE}): {}", errno_text(&e)))
}

/// What releasing a pin of a sealed file's first half wrote back.
struct Release {
    /// The disk's write-cache setting before the case set its own.
    cache_before: String,
    pinned: u64,
    /// The page reported failed, when the case asked for one.
    failed: Option<String>,
    /// How far nr_foll_pin_acquired and nr_foll_pin_released moved.
    acquired: u64,
    released: u64,
    /// Pages `fs_dax:dax_unpin_writeback` named after the release, and
    /// their distinct pfns (as the event prints them).
    pages: u64,
    pfns: std::collections::BTreeSet<String>,
    /// Pinned pages (their pfns, from /proc/self/pagemap) that no event
    /// named.
    missing: Vec<String>,
}

impl Release {
    fn counters(&self) -> String {
        format!("pins acquired +{}, released +{}", self.acquired, self.released)
    }

    /// Whether the release wrote back every pinned page once, except
    /// `failed` (a pfn as the event prints it).
    fn wrote_back_all_but(&self, failed: &str) -> bool {
        self.pages == self.pinned - 1 && self.pfns.len() as u64 == self.pinned - 1 && self.missing == [failed]
    }
}

/// Seals a file on `mount`, pins its first half as an io_uring fixed
/// buffer, lets READ_FIXED write into it through the pin, unmaps and closes
/// it, and releases the ring, with the disk's write cache set to
/// `write_cache` meanwhile. Nothing may be written back before the
/// release; the file must read back what the pin wrote, and the release
/// must move the pin counters by at least the pages pinned. With `failure`,
/// a page of the pinned half is reported failed to Linux when it says.
/// The sealed file stays for the caller.
fn pin_write_release(
    mount: &Path,
    path: &Path,
    seed: u8,
    write_cache: bool,
    failure: Option<Failure>,
) -> Result<Release, String> {
    let cache = WriteCache::set(mount, write_cache)?;
    let source = path.with_extension("source");
    let r = pinned_write_and_release(path, &source, seed, failure, cache.before());
    let _ = fs::remove_file(&source);
    r
}

fn pinned_write_and_release(
    path: &Path,
    source: &Path,
    seed: u8,
    failure: Option<Failure>,
    cache_before: &str,
) -> Result<Release, String> {
    let event = TraceEvent::enable("fs_dax", "dax_unpin_writeback")
        .map_err(|e| format!("{e}; releasing a pin of a sealed file reports each page it wrote back there"))?;
    let (file, failed_early) = match failure {
        Some(Failure::InHugeEntry(page)) => {
            let file = create_in_huge_extents(path, 0x66, SIZE)?;
            let pfn = fail_in_huge_entry(&file, page)?;
            (file, Some((page, pfn)))
        }
        _ => (create(path, 0x66, SIZE)?, None),
    };
    seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let half = SIZE / 2;
    let pinned = half / PAGE;
    let (acquired0, released0) = pin_counters()?;
    let ring = seal::Ring::new().map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
    let mut mapping = crate::fixture::shared_for_stores(&file, SIZE as usize)?.0;
    ring.register(mapping.as_mut_ptr(), half as usize)
        .map_err(|e| format!("REGISTER_BUFFERS on the first half: {}", errno_text(&e)))?;
    let source = create(source, seed, half)?;
    match ring.read_fixed(&source, 0, mapping.as_mut_ptr(), half as u32) {
        Ok(n) if u64::from(n) == half => {}
        other => return Err(format!("READ_FIXED into the pinned half: {other:?}, expected {half}")),
    }
    let held = calls::pfns_of(mapping.as_ptr(), pinned as usize)?;
    drop(mapping);
    drop(file);
    let failed = match (failure, failed_early) {
        (Some(Failure::AfterEviction(page)), _) => {
            drop_caches()?;
            let pfn = held[page as usize];
            report_failed(pfn)?;
            Some(format!("{pfn:#x}"))
        }
        (_, Some((page, pfn))) => {
            if held[page as usize] != pfn {
                return Err(format!(
                    "page {page} of the file was at pfn {pfn:#x} when it was reported failed and at {:#x} once \
                     sealed and pinned: SEAL moved a written block",
                    held[page as usize]
                ));
            }
            Some(format!("{pfn:#x}"))
        }
        _ => None,
    };
    let early = event.take().map_err(|e| format!("reading the trace buffer: {e}"))?;
    if !early.is_empty() {
        return Err(format!("{} pages written back before any pin was released", early.len()));
    }
    ring.unregister().map_err(|e| format!("UNREGISTER_BUFFERS: {}", errno_text(&e)))?;
    let (acquired, released) = pins_settled("UNREGISTER_BUFFERS")?;
    let (acquired, released) = (acquired - acquired0, released - released0);
    if released < pinned {
        return Err(format!(
            "UNREGISTER_BUFFERS of {pinned} pinned pages moved nr_foll_pin_released by {released} (acquired \
             {acquired}): the pins this case releases were not counted"
        ));
    }
    let lines = event.take().map_err(|e| format!("reading the trace buffer: {e}"))?;
    let mut pages = 0u64;
    let mut pfns = std::collections::BTreeSet::new();
    for line in &lines {
        let nr = trace::field(line, "nr").and_then(|n| n.parse::<u64>().ok());
        let pfn = trace::field(line, "pfn");
        match (nr, pfn) {
            (Some(nr), Some(pfn)) => {
                pages += nr;
                pfns.insert(pfn.to_string());
            }
            _ => return Err(format!("a dax_unpin_writeback line without pfn and nr: {line:?}")),
        }
    }
    let back = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    if back[..half as usize] != pattern(seed, half)[..] {
        return Err("the file does not read back what READ_FIXED wrote through the pin".into());
    }
    let missing = held.iter().map(|pfn| format!("{pfn:#x}")).filter(|pfn| !pfns.contains(pfn)).collect();
    let cache_before = cache_before.to_string();
    Ok(Release { cache_before, pinned, failed, acquired, released, pages, pfns, missing })
}

/// Only a sealed file's pages are written back when a pin of them is
/// released. O_DIRECT writes from mappings of a reflinked, unsealed DAX
/// file pin its shared pages for each I/O; 7.3 keeps the owners of a
/// shared folio in a count and clears its mapping, as eviction does for
/// a sealed file's orphaned page, and the two must not be confused: a
/// write-back at every O_DIRECT completion (of 2 MiB for a PMD folio)
/// would tax every reflinked DAX file.
fn case_shared_unpin(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("shared-unpin");
        let r = shared_unpin_writes_nothing_back(&path);
        let _ = fs::remove_file(&path);
        let _ = fs::remove_file(shared_copy(&path));
        r
    })
}

fn shared_unpin_writes_nothing_back(path: &Path) -> Check {
    const LEN: u64 = 4 << 20;
    let event = TraceEvent::enable("fs_dax", "dax_unpin_writeback")
        .map_err(|e| format!("{e}; releasing a pin of a sealed file reports each page it wrote back there"))?;
    let file = create_in_huge_extents(path, 0x6a, LEN)?;
    let copy = create(&shared_copy(path), 0, 0)?;
    seal::ficlone(&copy, &file).map_err(|e| format!("FICLONE: {}", errno_text(&e)))?;
    // A block becomes a shared folio when a second file maps it.
    let map = |f: &File| Mapping::shared_read_only(f, LEN as usize).map_err(|e| format!("mmap: {}", errno_text(&e)));
    let (ours, theirs) = (map(&file)?, map(&copy)?);
    ours.read_every_page();
    theirs.read_every_page();
    let dir = crate::workdir::fresh_page_cache("seal-lifetime-target")?;
    let target = dir.join("target");
    drop(create(&target, 0, 0)?);
    let out = crate::fixture::open_direct(&target, true)
        .map_err(|e| format!("open {} O_DIRECT: {}", target.display(), errno_text(&e)))?;
    let _ = event.take().map_err(|e| format!("reading the trace buffer: {e}"))?;
    let (acquired, released) = pin_counters()?;
    for (i, m) in [&ours, &theirs].iter().enumerate() {
        out.write_all_at(m.as_slice(), i as u64 * LEN)
            .map_err(|e| format!("O_DIRECT pwrite from the mapping: {}", errno_text(&e)))?;
    }
    let (acquired_after, released_after) = pins_settled("the O_DIRECT writes")?;
    let pinned = acquired_after - acquired;
    if pinned < 2 * LEN / PAGE {
        return Err(format!(
            "the O_DIRECT writes pinned {pinned} pages (released {}), expected at least {}: the path was not exercised",
            released_after - released,
            2 * LEN / PAGE
        ));
    }
    let lines = event.take().map_err(|e| format!("reading the trace buffer: {e}"))?;
    let pages: u64 = lines.iter().filter_map(|l| trace::field(l, "nr").and_then(|n| n.parse::<u64>().ok())).sum();
    let back = fs::read(&target).map_err(|e| format!("read {}: {e}", target.display()))?;
    let _ = fs::remove_dir_all(&dir);
    if !lines.is_empty() {
        return Err(format!(
            "releasing {pinned} O_DIRECT pins of an unsealed, reflinked file's pages wrote back {pages} pages \
             ({} dax_unpin_writeback events): only a sealed file's pages are written back at unpin",
            lines.len()
        ));
    }
    if back.len() as u64 != 2 * LEN || back.iter().zip(pattern(0x6a, LEN).iter().cycle()).any(|(a, b)| a != b) {
        return Err("the O_DIRECT target does not read back what both mappings held".into());
    }
    Ok(format!(
        "O_DIRECT writes from mappings of a file and its clone: {pinned} pages pinned and released, \
         0 pages written back"
    ))
}

/// A pin's writes are durable at release only where cache write-backs
/// reach the persistence domain. On an asynchronous one (virtio-pmem) the
/// contract says: after the release, an fsync of the file; it must send the
/// device a flush (a preflush bio to the pmem disk, which the driver turns
/// into a flush request to the host). Checked on every kind: where release
/// suffices, the fsync flushes too.
fn case_fsync_after_release(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("release-fsync");
        let r = fsync_after_release(&path);
        remove_sealed(&path);
        let _ = fs::remove_file(path.with_extension("source"));
        r
    })
}

fn fsync_after_release(path: &Path) -> Check {
    let file = create(path, 0x67, SIZE)?;
    seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let ring = seal::Ring::new().map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
    let mut mapping = crate::fixture::shared_for_stores(&file, SIZE as usize)?.0;
    ring.register(mapping.as_mut_ptr(), SIZE as usize).map_err(|e| format!("REGISTER_BUFFERS: {}", errno_text(&e)))?;
    let source = create(&path.with_extension("source"), 0x7d, SIZE)?;
    match ring.read_fixed(&source, 0, mapping.as_mut_ptr(), SIZE as u32) {
        Ok(n) if u64::from(n) == SIZE => {}
        other => return Err(format!("READ_FIXED into the pinned file: {other:?}, expected {SIZE}")),
    }
    drop(mapping);
    ring.unregister().map_err(|e| format!("UNREGISTER_BUFFERS: {}", errno_text(&e)))?;
    let (acquired, released) = pins_settled("UNREGISTER_BUFFERS")?;
    let dev = file.metadata().map_err(|e| format!("fstat: {e}"))?.dev();
    let disk = format!("{},{}", libc::major(dev), libc::minor(dev));
    let event = TraceEvent::enable("block", "block_bio_queue")
        .map_err(|e| format!("{e}; the flush an fsync sends to the disk is counted there"))?;
    file.sync_all().map_err(|e| format!("fsync after the release: {}", errno_text(&e)))?;
    let lines = event.take().map_err(|e| format!("reading the trace buffer: {e}"))?;
    // "block_bio_queue: 259,0 FWS 0 + 0 [comm]": device, then the flags.
    let flushes = lines
        .iter()
        .filter_map(|l| l.split_once("block_bio_queue: ").map(|(_, rest)| rest))
        .filter(|rest| {
            let mut words = rest.split_whitespace();
            words.next() == Some(disk.as_str()) && words.next().is_some_and(|rwbs| rwbs.starts_with('F'))
        })
        .count();
    if flushes == 0 {
        return Err(format!(
            "fsync after the pin's release sent no flush to the disk {disk} ({} bios queued): on a {} nothing \
             would make the pin's writes durable",
            lines.len(),
            crate::fixture::pmem().device()
        ));
    }
    let back = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    if back != pattern(0x7d, SIZE) {
        return Err("the file does not read back what READ_FIXED wrote through the pin".into());
    }
    Ok(format!(
        "READ_FIXED through a pin of the whole file, released (pins acquired {acquired}, released {released}); the \
         fsync after it sent {flushes} flush(es) to {disk} on a {}, and the file reads what the pin wrote",
        crate::fixture::pmem().device()
    ))
}

/// Online repair of the data and COW forks is refused before its set-up
/// drops the file's DAX entries; inode repair runs. The pin and the seal
/// hold through all three.
fn case_repair(env: &Env) -> Attempt {
    if let Err(why) = probe_online_repair(&env.dir) {
        return Attempt::Skip(why);
    }
    env.sealed(|| {
        let (pinned, file) = seal_pin_unmap(&env.path("repair"))?;
        let mut answers = Vec::new();
        for (name, sm_type, want) in [
            ("data fork", seal::XFS_SCRUB_TYPE_BMBTD, Some((libc::EBUSY, "EBUSY"))),
            ("COW fork", seal::XFS_SCRUB_TYPE_BMBTC, Some((libc::EBUSY, "EBUSY"))),
            ("inode", seal::XFS_SCRUB_TYPE_INODE, None),
        ] {
            let got = seal::force_repair(&file, sm_type);
            let errno = got.as_ref().err().and_then(io::Error::raw_os_error);
            if errno != want.map(|(e, _)| e) {
                let got = result_text(&got);
                let want = want.map_or("0", |(_, name)| name);
                return Err(format!("forced repair of the {name} of a sealed, pinned file: {got}, expected {want}"));
            }
            answers.push(format!("{name} {}", want.map_or("0", |(_, name)| name)));
        }
        drop(file);
        let held = pinned.still_holds("forced online repair")?;
        Ok(format!("forced repair of a sealed, pinned file: {}; {held}", answers.join(", ")))
    })
}

/// One end of a pair of pipes that a forked child and its parent step
/// each other through, one byte at a time. Each side closes the ends it
/// does not use, so a side that dies reads as end of file to the other.
struct Steps {
    send: i32,
    recv: i32,
}

impl Steps {
    /// Makes the pipes and forks. Returns the child's pid (0 in the child)
    /// and this side's ends.
    fn fork() -> Result<(libc::pid_t, Steps), String> {
        let (mut down, mut up) = ([0; 2], [0; 2]);
        // SAFETY: pipe() fills the two-element arrays.
        if unsafe { libc::pipe(down.as_mut_ptr()) } != 0 || unsafe { libc::pipe(up.as_mut_ptr()) } != 0 {
            return Err(format!("pipe: {}", errno_text(&io::Error::last_os_error())));
        }
        // SAFETY: the workload is single-threaded here; the child makes only
        // system calls on memory prepared before the fork and leaves with
        // _exit.
        let pid = unsafe { libc::fork() };
        let (send, recv, unused) = match pid {
            -1 => return Err(format!("fork: {}", errno_text(&io::Error::last_os_error()))),
            0 => (up[1], down[0], [up[0], down[1]]),
            _ => (down[1], up[0], [down[0], up[1]]),
        };
        for fd in unused {
            // SAFETY: closing a pipe end this side does not use.
            unsafe { libc::close(fd) };
        }
        Ok((pid, Steps { send, recv }))
    }

    /// Sends one byte.
    fn send(&self, byte: u8) -> bool {
        // SAFETY: a one-byte write from a local.
        unsafe { libc::write(self.send, (&byte as *const u8).cast(), 1) == 1 }
    }

    /// Waits for one byte; None when the other side is gone.
    fn recv(&self) -> Option<u8> {
        let mut got = 0u8;
        // SAFETY: a one-byte read into a local.
        (unsafe { libc::read(self.recv, (&mut got as *mut u8).cast(), 1) } == 1).then_some(got)
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        // SAFETY: closing this side's own ends.
        unsafe {
            libc::close(self.send);
            libc::close(self.recv);
        }
    }
}

/// What `daxctl-immutable status` says holds the sealed file at `path`:
/// its "held by" line.
fn held_by(path: &Path) -> Result<String, String> {
    let out = Command::new("/usr/bin/daxctl-immutable")
        .arg("status")
        .arg(path)
        .output()
        .map_err(|e| format!("running daxctl-immutable status: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("held by:"))
        .map(str::to_string)
        .ok_or_else(|| format!("daxctl-immutable status {} names no holder: {text:?}", path.display()))
}

/// An unprivileged reader (uid 65534) maps the sealed file read-only: root's
/// UNSEAL gives EBUSY and unlink EPERM, and `daxctl-immutable status`
/// names the holder by its pid. It then vmsplices a page of the mapping into a pipe and unmaps:
/// the pipe still holds the device page, so UNSEAL still gives EBUSY. When
/// the reader exits, UNSEAL gives 0.
fn case_unprivileged_reader(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("reader");
        let r = unprivileged_reader(&path);
        let _ = fs::remove_file(&path);
        r
    })
}

fn unprivileged_reader(path: &Path) -> Check {
    let file = create(path, 0x63, SIZE)?;
    seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let cpath = cpath(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (pid, child) = Steps::fork()?;
    if pid == 0 {
        reader_child(&cpath, &child);
    }
    let r = (|| {
        if child.recv() != Some(b'm') {
            return Err("the unprivileged reader could not map the sealed file read-only".to_string());
        }
        let holders = held_by(path);
        let mapped = seal::unseal(&file);
        let unlinked = fs::remove_file(path);
        if !child.send(b'v') || child.recv() != Some(b'p') {
            return Err("the unprivileged reader could not vmsplice the mapping into a pipe".to_string());
        }
        let spliced = seal::unseal(&file);
        let ebusy = |r: &io::Result<()>| r.as_ref().err().and_then(io::Error::raw_os_error) == Some(libc::EBUSY);
        if !ebusy(&mapped) || !ebusy(&spliced) {
            return Err(format!(
                "UNSEAL while uid 65534 maps the file read-only: {mapped:?}, while its pipe holds a page: \
                 {spliced:?}; expected EBUSY for both"
            ));
        }
        match unlinked {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            other => return Err(format!("unlink of the sealed file: {other:?}, expected EPERM")),
        }
        let holders = holders?;
        if !holders.contains(&format!("pid {pid} ")) {
            return Err(format!("daxctl-immutable status does not name the reader (pid {pid}): {holders}"));
        }
        Ok(holders)
    })();
    // Let the child go whatever happened, and reap it.
    child.send(b'x');
    drop(child);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let holders = r?;
    seal::unseal(&file).map_err(|e| format!("UNSEAL after the reader exited: {}", errno_text(&e)))?;
    Ok(format!(
        "uid 65534 maps the sealed file read-only: UNSEAL EBUSY, unlink EPERM, daxctl-immutable status: {holders}; \
         after it vmspliced a page into a pipe and unmapped: UNSEAL EBUSY; after it exited: UNSEAL 0"
    ))
}

/// The unprivileged reader, in the forked child: maps the file read-only
/// ('m'), on 'v' vmsplices its first page into a pipe and unmaps ('p'),
/// and exits when let go. Never returns.
fn reader_child(path: &CString, parent: &Steps) -> ! {
    let len = SIZE as usize;
    // SAFETY: system calls on memory prepared before the fork; the child
    // leaves with _exit and never unwinds or runs destructors.
    unsafe {
        if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
            libc::_exit(1);
        }
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            libc::_exit(2);
        }
        let addr = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd, 0);
        if addr == libc::MAP_FAILED {
            libc::_exit(3);
        }
        libc::close(fd);
        if !parent.send(b'm') || parent.recv() != Some(b'v') {
            libc::_exit(4);
        }
        let mut pipe = [0; 2];
        if libc::pipe(pipe.as_mut_ptr()) != 0 {
            libc::_exit(5);
        }
        let iov = libc::iovec { iov_base: addr, iov_len: PAGE as usize };
        if libc::vmsplice(pipe[1], &iov, 1, 0) != PAGE as isize {
            libc::_exit(6);
        }
        libc::munmap(addr, len);
        parent.send(b'p');
        parent.recv();
        libc::_exit(0)
    }
}

/// splice(2) from a DAX file copies into the pipe (6.12's vfs_splice_read
/// does so for DAX): the pipe holds no page of the file, so UNSEAL gives 0
/// while the data waits in the pipe, and the bytes read back are the file's.
fn case_splice(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("splice");
        let r = (|| {
            let file = create(&path, 0x64, SIZE)?;
            seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
            let pipe = Pipe::new()?;
            let mut off: libc::loff_t = 0;
            // SAFETY: valid descriptors and offset.
            let n =
                unsafe { libc::splice(file.as_raw_fd(), &mut off, pipe.0[1], std::ptr::null_mut(), PAGE as usize, 0) };
            let unsealed = seal::unseal(&file);
            let mut back = vec![0u8; PAGE as usize];
            // SAFETY: reading into our own buffer.
            let got = unsafe { libc::read(pipe.0[0], back.as_mut_ptr().cast(), back.len()) };
            drop(pipe);
            if n != PAGE as isize {
                return Err(format!("splice of a page of the sealed file: {n}"));
            }
            unsealed.map_err(|e| format!("UNSEAL while a splice of the file waits in a pipe: {}", errno_text(&e)))?;
            if got != PAGE as isize || back != pattern(0x64, SIZE)[..PAGE as usize] {
                return Err("the pipe did not give back the file's bytes".into());
            }
            Ok("splice into a pipe copied the page: UNSEAL 0 while it waits there, bytes intact".into())
        })();
        let _ = fs::remove_file(&path);
        r
    })
}

/// The largest sparse file the SIGKILL case fills: big enough that zeroing
/// it takes a while under TCG, small enough for the default 1 GiB NVDIMM.
const KILL_FILE_MAX: u64 = 768 << 20;
/// How far the fill must have got before the kill, so that it is killed in
/// the middle and not before it started.
const KILL_AFTER_FILLED: u64 = 64 << 20;
/// How much more SEAL may do after the kill: two of its 16 MiB steps.
const KILL_SLACK: u64 = 32 << 20;

/// SEAL of a large sparse file on the page-cache NVDIMM is killed with
/// SIGKILL in the middle of filling its holes. It must stop between two
/// steps of the fill (the latency from kill to reaped child is reported),
/// and leave a consistent, unsealed file: the data it had, zeroes in what
/// was filled, a data fork that scrub finds clean, and a SEAL that then
/// completes.
fn case_sigkill(env: &Env) -> Attempt {
    on_page_cache_file(env, "sigkill", |p| sigkill_during_seal(p, Work::Fill))
}

/// The same for a large file on the DAX mount whose every extent a clone
/// shares: SEAL copies it block by block first (unshare, through DAX),
/// which must stop between two steps too, and leave the file and its
/// clone reading as before.
fn case_sigkill_shared(env: &Env) -> Attempt {
    on_dax_file(env, "sigkill-shared", |p| sigkill_during_seal(p, Work::Unshare))
}

/// Runs `f` on a file on the DAX mount, and removes it afterwards
/// (unsealing it first), with the clone `large_shared_file` makes.
fn on_dax_file(env: &Env, name: &str, f: impl FnOnce(&Path) -> Check) -> Attempt {
    env.sealed(|| {
        let path = env.path(name);
        let r = f(&path);
        remove_sealed(&path);
        let _ = fs::remove_file(shared_copy(&path));
        r
    })
}

/// What SEAL of a large file spends its time on before it can seal it.
#[derive(Clone, Copy)]
enum Work {
    /// Zeroing the holes of a sparse file.
    Fill,
    /// Copying the extents a clone shares.
    Unshare,
}

/// The largest file the unshare cases copy: it needs as much again free.
const SHARED_FILE_MAX: u64 = 320 << 20;
const MIB: u64 = 1 << 20;

/// A file for SEAL to work on, its size, and how many bytes of work SEAL
/// has done so far (`progress`).
struct Big {
    file: File,
    size: u64,
    work: Work,
    dir: PathBuf,
    base: u64,
}

impl Big {
    fn new(path: &Path, work: Work) -> Result<Big, String> {
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let (file, size) = match work {
            Work::Fill => large_sparse_file(path)?,
            Work::Unshare => large_shared_file(path)?,
        };
        let mut big = Big { file, size, work, dir, base: 0 };
        big.base = big.measure()?;
        Ok(big)
    }

    /// Blocks the file holds (fill), or free bytes left (unshare).
    fn measure(&self) -> Result<u64, String> {
        match self.work {
            Work::Fill => Ok(self.file.metadata().map_err(|e| format!("fstat: {e}"))?.blocks() * 512),
            Work::Unshare => free_bytes(&self.dir),
        }
    }

    /// Bytes filled or copied since the file was made.
    fn progress(&self) -> Result<u64, String> {
        let now = self.measure()?;
        Ok(match self.work {
            Work::Fill => now.saturating_sub(self.base),
            Work::Unshare => self.base.saturating_sub(now),
        })
    }

    fn what(&self) -> &'static str {
        match self.work {
            Work::Fill => "filled",
            Work::Unshare => "copied",
        }
    }

    /// The file (and its clone) read what they held before SEAL started.
    fn intact(&self, path: &Path) -> Result<(), String> {
        let read = |f: &File, at: u64, len: u64| -> Result<Vec<u8>, String> {
            let mut buf = vec![0u8; len as usize];
            f.read_exact_at(&mut buf, at).map_err(|e| format!("pread: {}", errno_text(&e)))?;
            Ok(buf)
        };
        match self.work {
            Work::Fill => {
                let (f, size) = (&self.file, self.size);
                if read(f, 0, PAGE)? != pattern(0x65, PAGE)
                    || read(f, size - PAGE, PAGE)? != pattern(0x66, PAGE)
                    || read(f, size / 2, MIB)?.iter().any(|&b| b != 0)
                {
                    return Err("the file does not read as before (data at both ends, zeroes)".into());
                }
            }
            Work::Unshare => {
                let copy = File::open(shared_copy(path)).map_err(|e| format!("open the clone: {e}"))?;
                let want = pattern(0x67, MIB);
                for at in [0, (self.size / 2) & !(MIB - 1), self.size - MIB] {
                    if read(&self.file, at, MIB)? != want || read(&copy, at, MIB)? != want {
                        return Err(format!("the file or its clone does not read as before at {at}"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Where `large_shared_file` puts the clone.
fn shared_copy(path: &Path) -> PathBuf {
    path.with_extension("clone")
}

/// A file as large as a third of its filesystem's free space (at most
/// SHARED_FILE_MAX), written, and cloned whole: every extent shared.
fn large_shared_file(path: &Path) -> Result<(File, u64), String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let size = (settled_free(dir, 3 * SHARED_FILE_MAX)? / 3).min(SHARED_FILE_MAX) & !(MIB - 1);
    if size < 4 * KILL_AFTER_FILLED {
        return Err(format!("only {size} bytes for the shared file on {}", dir.display()));
    }
    let file = create(path, 0x67, MIB)?;
    let chunk = pattern(0x67, MIB);
    for at in (MIB..size).step_by(MIB as usize) {
        file.write_all_at(&chunk, at).map_err(|e| format!("pwrite: {}", errno_text(&e)))?;
    }
    file.sync_all().map_err(|e| format!("fsync: {}", errno_text(&e)))?;
    let copy = create(&shared_copy(path), 0, 0)?;
    seal::ficlone(&copy, &file).map_err(|e| format!("FICLONE: {}", errno_text(&e)))?;
    copy.sync_all().map_err(|e| format!("fsync the clone: {}", errno_text(&e)))?;
    Ok((file, size))
}

/// A sparse file as large as the page-cache NVDIMM allows (at most
/// KILL_FILE_MAX): a page of data at each end, a hole in between.
fn large_sparse_file(path: &Path) -> Result<(File, u64), String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let free = settled_free(dir, KILL_FILE_MAX / 3 * 4)?;
    let size = (free / 4 * 3).min(KILL_FILE_MAX) & !((1 << 20) - 1);
    if size < 4 * KILL_AFTER_FILLED {
        return Err(format!("only {size} bytes free for the sparse file on {}", dir.display()));
    }
    let file = create(path, 0x65, PAGE)?;
    file.write_all_at(&pattern(0x66, PAGE), size - PAGE).map_err(|e| format!("pwrite: {}", errno_text(&e)))?;
    file.sync_all().map_err(|e| format!("fsync: {}", errno_text(&e)))?;
    Ok((file, size))
}

/// The free bytes in `dir`'s filesystem once they reach `want`, or after a
/// few seconds: space freed by an earlier case comes back once background
/// inactivation ran.
fn settled_free(dir: &Path, want: u64) -> Result<u64, String> {
    let mut free = 0;
    for _ in 0..40 {
        // SAFETY: sync(2) takes no arguments.
        unsafe { libc::sync() };
        free = free_bytes(dir)?;
        if free >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(free)
}

/// Runs `f` on a file in a fresh directory on the page-cache NVDIMM, and
/// removes both afterwards (unsealing the file first).
fn on_page_cache_file(env: &Env, name: &str, f: impl FnOnce(&Path) -> Check) -> Attempt {
    let dir = match crate::workdir::fresh_page_cache("seal-lifetime") {
        Ok(dir) => dir,
        Err(why) => return Attempt::Done(Err(why)),
    };
    let r = env.sealed(|| {
        let path = dir.join(name);
        let r = f(&path);
        remove_sealed(&path);
        r
    });
    let _ = fs::remove_dir_all(&dir);
    r
}

fn sigkill_during_seal(path: &Path, work: Work) -> Check {
    let big = Big::new(path, work)?;
    let (file, size, what) = (&big.file, big.size, big.what());
    let (pid, child) = Steps::fork()?;
    if pid == 0 {
        // SAFETY: the forked child makes one system call and leaves with _exit.
        unsafe {
            child.send(b's');
            let ok = seal::seal(file).is_ok();
            libc::_exit(if ok { 0 } else { 1 })
        }
    }
    let started = child.recv() == Some(b's');
    // Kill once the work is well under way; give up after a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut filled = 0;
    while started && Instant::now() < deadline {
        filled = big.progress()?;
        if filled >= KILL_AFTER_FILLED {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let killed_at = Instant::now();
    // SAFETY: signalling and reaping our own child.
    let status = unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        status
    };
    let latency = killed_at.elapsed();
    drop(child);
    if !started {
        return Err("the child that was to SEAL never started".into());
    }
    if filled < KILL_AFTER_FILLED {
        return Err(format!("SEAL never {what} {KILL_AFTER_FILLED} bytes within 60 s (got {filled})"));
    }
    if !(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL) {
        return Err(format!("SEAL finished before SIGKILL could stop it (child status {status:#x})"));
    }
    let after = big.progress()?;
    if is_sealed(path)? {
        return Err(format!(
            "SIGKILL {} ms after SEAL {what} {} MiB, and the file came out sealed",
            latency.as_millis(),
            filled >> 20
        ));
    }
    // Measured at most a millisecond before the kill; a step is 16 MiB.
    if after >= size - 2 * PAGE || after > filled + KILL_SLACK {
        return Err(format!(
            "SIGKILL did not stop SEAL between two steps: {} MiB {what} when it was sent, {} of {} MiB when \
             SEAL ended {} ms later",
            filled >> 20,
            after >> 20,
            size >> 20,
            latency.as_millis()
        ));
    }
    big.intact(path).map_err(|e| format!("after the interrupted SEAL: {e}"))?;
    let flags = seal::scrub(file, seal::XFS_SCRUB_TYPE_BMBTD).map_err(|e| format!("scrub: {}", errno_text(&e)))?;
    if flags & seal::XFS_SCRUB_OFLAG_BAD != 0 {
        return Err(format!("scrub of the data fork after the interrupted SEAL: flags {flags:#x}"));
    }
    let sealed_at = Instant::now();
    seal::seal(file).map_err(|e| format!("SEAL after the interrupted one: {}", errno_text(&e)))?;
    Ok(format!(
        "SIGKILL after {} of {} MiB {what}: SEAL ended {} ms later, file unsealed with {} MiB {what}, bytes \
         intact, data fork clean; a second SEAL completed in {} ms",
        filled >> 20,
        size >> 20,
        latency.as_millis(),
        after >> 20,
        sealed_at.elapsed().as_millis()
    ))
}

/// SEAL of a large sparse file fills its holes step by step before it takes
/// the file's locks for good: a reader looping over pread keeps getting
/// answers while SEAL runs, instead of waiting for the whole fill. Counted
/// without a clock threshold: reads must complete in the middle third of
/// the SEAL call, where a SEAL holding the iolock throughout allows none.
fn case_readers(env: &Env) -> Attempt {
    on_page_cache_file(env, "readers", |p| readers_during_seal(p, Work::Fill))
}

/// The same while SEAL copies the extents a clone shares, on the DAX
/// mount.
fn case_readers_shared(env: &Env) -> Attempt {
    on_dax_file(env, "readers-shared", |p| readers_during_seal(p, Work::Unshare))
}

/// SEAL of a large sparse file on the DAX mount breaks layouts (unmaps,
/// waits for DMA, drops DAX entries) only over the range each prefill step
/// fills: a thread that keeps touching the file's first page, written and
/// outside every step, keeps its mapping while SEAL runs instead of
/// refaulting after every step, as when each step broke the whole file's
/// layouts. Counted in the thread's own minor faults
/// (getrusage(RUSAGE_THREAD)): at most the one after SEAL's locked pass,
/// which breaks the whole file's layouts once.
fn case_mappings_survive(env: &Env) -> Attempt {
    on_dax_file(env, "mapped-during-seal", mapped_during_seal)
}

/// Most refaults of a page outside every step that SEAL may cause.
const SEAL_REFAULTS_MAX: i64 = 2;

fn mapped_during_seal(path: &Path) -> Check {
    let big = Big::new(path, Work::Fill)?;
    let file = &big.file;
    let mapping = Mapping::shared(file, PAGE as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    let first = mapping.as_ptr() as usize;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let minor_faults = || {
        // SAFETY: getrusage fills the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to the struct above.
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        usage.ru_minflt
    };
    let (sealed, faults) = std::thread::scope(|s| {
        let toucher = s.spawn(|| {
            // SAFETY: the first byte of the mapping, which outlives the scope.
            let touch = || unsafe { std::ptr::read_volatile(first as *const u8) };
            let seed = touch();
            let before = minor_faults();
            let mut touches = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if touch() != seed {
                    return Err("the mapped page changed while SEAL ran".to_string());
                }
                touches += 1;
            }
            Ok((minor_faults() - before, touches))
        });
        std::thread::sleep(Duration::from_millis(50));
        let sealed = seal::seal(file);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (sealed, toucher.join().unwrap_or_else(|_| Err("the toucher panicked".into())))
    });
    sealed.map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let (faults, touches) = faults?;
    let filled = big.progress()?;
    let steps = filled.div_ceil(16 * MIB);
    if steps < 4 {
        return Err(format!("SEAL filled {filled} bytes, {steps} step(s): too few to tell"));
    }
    let what = format!(
        "the first page, outside every step, refaulted {faults} time(s) ({touches} touches) while SEAL filled {} MiB \
         in {steps} steps",
        filled >> 20
    );
    if faults > SEAL_REFAULTS_MAX {
        return Err(format!("{what}: each step breaks the whole file's layouts"));
    }
    Ok(what)
}

fn readers_during_seal(path: &Path, work: Work) -> Check {
    let big = Big::new(path, work)?;
    let (file, size) = (&big.file, big.size);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (sealed, started, ended, reads) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut times = Vec::new();
            let mut buf = vec![0u8; PAGE as usize];
            let Ok(f) = File::open(path) else { return Err("the reader cannot open the file".to_string()) };
            let mut at = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.read_exact_at(&mut buf, at).map_err(|e| format!("pread: {}", errno_text(&e)))?;
                times.push(Instant::now());
                at = (at + 97 * PAGE) % (size - PAGE);
            }
            Ok(times)
        });
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        let sealed = seal::seal(file);
        let ended = Instant::now();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (sealed, started, ended, reader.join().unwrap_or_else(|_| Err("the reader panicked".into())))
    });
    sealed.map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let reads = reads?;
    let took = ended - started;
    let (from, to) = (started + took / 3, ended - took / 3);
    let during = reads.iter().filter(|t| (started..ended).contains(t)).count();
    let middle = reads.iter().filter(|t| (from..to).contains(t)).count();
    let longest = reads.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    if middle == 0 {
        return Err(format!(
            "no read completed in the middle third of a {} ms SEAL ({during} during it): readers wait for the \
             whole fill",
            took.as_millis()
        ));
    }
    let kind = match work {
        Work::Fill => "sparse",
        Work::Unshare => "cloned",
    };
    Ok(format!(
        "SEAL of a {} MiB {kind} file took {} ms; {during} reads completed during it, {middle} in its middle third; \
         longest wait between two reads {} ms",
        size >> 20,
        took.as_millis(),
        longest.as_millis()
    ))
}
