//! `seal-conformance`: the operation table of the block-map seal contract
//! (docs/seal.md), row by row, on a sealed file and on an unsealed control,
//! plus the seal's own rules (normalisation, idempotence, visibility,
//! privilege, argument checks, busy files, space exhaustion, remount).
//!
//! Every refused operation must fail with the contract's errno and leave
//! FIEMAP, i_size, st_blocks, the seal and every byte as they were; every
//! permitted one must really happen (its data reads back) without moving a
//! block of a sealed file. On a kernel without the series SEAL fails with
//! EOPNOTSUPP: the sealed legs then report SKIP with that reason and the
//! controls still run, so the host can check both kernels disagree exactly
//! where the contract says.

use std::alloc::{self, Layout};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use dax_seal_protocol::MOUNT_PREFIX;

use crate::cases::{when_sealable, Cases, Expect, Outcome};
use crate::page_cache;
use crate::seal::{self, Extent};
use crate::sys::{cpath, errno_text, free_bytes, mounted, statx_attributes, Mapping, STATX_ATTR_DAX};

/// Size of every target file: 64 blocks of 4 KiB.
const SIZE: u64 = 256 * 1024;
const BLOCK: u64 = 4096;

type Check = Result<String, String>;

/// What a successful operation must have done to the target.
enum Want {
    /// Nothing: same size and bytes.
    Same,
    /// These bytes at this offset; the size grows to cover them.
    Bytes(u64, Vec<u8>),
    /// This size, with the bytes below the second value kept.
    Size(u64, u64),
    /// The target's name no longer refers to the original file.
    Gone,
}

struct Row {
    name: &'static str,
    sealed: Expect,
    control: Expect,
    op: fn(&Target) -> io::Result<Want>,
    /// Whether this filesystem can do the operation at all; if not, both
    /// legs skip with the reason (the kernel cannot be judged on it here).
    probe: Option<Probe>,
}

type Probe = fn(&Path) -> Result<(), String>;

const TXT: Expect = Expect::Err(libc::ETXTBSY);
const PERM: Expect = Expect::Err(libc::EPERM);
const OK: Expect = Expect::Ok;

/// The contract's operation table (docs/seal.md), one row per operation.
const ROWS: &[Row] = &[
    Row { name: "read", sealed: OK, control: OK, op: op_read, probe: None },
    Row { name: "read-odirect", sealed: OK, control: OK, op: op_read_odirect, probe: None },
    Row { name: "fiemap-seek-stable", sealed: OK, control: OK, op: op_fiemap_seek, probe: None },
    Row { name: "overwrite-pwrite", sealed: OK, control: OK, op: op_overwrite_pwrite, probe: None },
    Row { name: "overwrite-odirect", sealed: OK, control: OK, op: op_overwrite_odirect, probe: None },
    Row { name: "overwrite-mmap-sync-store", sealed: OK, control: OK, op: op_overwrite_mmap, probe: None },
    Row { name: "pwrite-extending", sealed: TXT, control: OK, op: op_write_extending, probe: None },
    Row { name: "write-o-append", sealed: TXT, control: OK, op: op_write_append, probe: None },
    Row { name: "copy-file-range-inside-eof", sealed: OK, control: OK, op: op_copy_inside, probe: None },
    Row { name: "copy-file-range-extending", sealed: TXT, control: OK, op: op_copy_extending, probe: None },
    Row { name: "ftruncate-shrink", sealed: TXT, control: OK, op: op_ftruncate_shrink, probe: None },
    Row { name: "ftruncate-grow", sealed: TXT, control: OK, op: op_ftruncate_grow, probe: None },
    Row { name: "ftruncate-same-size", sealed: TXT, control: OK, op: op_ftruncate_same, probe: None },
    Row { name: "truncate-path", sealed: TXT, control: OK, op: op_truncate_path, probe: None },
    Row { name: "open-o-trunc", sealed: TXT, control: OK, op: op_open_trunc, probe: None },
    Row { name: "fallocate-allocate", sealed: TXT, control: OK, op: op_falloc_allocate, probe: None },
    Row { name: "fallocate-keep-size", sealed: TXT, control: OK, op: op_falloc_keep_size, probe: None },
    Row { name: "fallocate-punch-hole", sealed: TXT, control: OK, op: op_falloc_punch, probe: None },
    Row { name: "fallocate-zero-range", sealed: TXT, control: OK, op: op_falloc_zero, probe: None },
    Row { name: "fallocate-collapse-range", sealed: TXT, control: OK, op: op_falloc_collapse, probe: None },
    Row { name: "fallocate-insert-range", sealed: TXT, control: OK, op: op_falloc_insert, probe: None },
    Row { name: "fallocate-unshare-range", sealed: TXT, control: OK, op: op_falloc_unshare, probe: None },
    Row { name: "ficlone-into", sealed: TXT, control: OK, op: op_ficlone_into, probe: None },
    Row { name: "ficlone-from", sealed: TXT, control: OK, op: op_ficlone_from, probe: None },
    Row { name: "ficlonerange-into", sealed: TXT, control: OK, op: op_ficlonerange_into, probe: None },
    Row { name: "fideduperange-into", sealed: TXT, control: OK, op: op_dedupe_into, probe: None },
    Row { name: "fideduperange-from", sealed: TXT, control: OK, op: op_dedupe_from, probe: None },
    Row { name: "xfs-ioc-swapext-target", sealed: TXT, control: OK, op: op_swapext_target, probe: None },
    Row { name: "xfs-ioc-swapext-tmp", sealed: TXT, control: OK, op: op_swapext_tmp, probe: None },
    Row {
        name: "xfs-exchange-range",
        sealed: TXT,
        control: OK,
        op: op_exchange_range,
        probe: Some(probe_exchange_range),
    },
    Row {
        name: "online-repair-rebuild-data-fork",
        sealed: Expect::Err(libc::EBUSY),
        control: OK,
        op: op_rebuild_data_fork,
        probe: Some(probe_online_repair),
    },
    Row { name: "unlink", sealed: PERM, control: OK, op: op_unlink, probe: None },
    Row { name: "rename-over", sealed: PERM, control: OK, op: op_rename_over, probe: None },
    Row { name: "rename-itself", sealed: OK, control: OK, op: op_rename_itself, probe: None },
    Row { name: "fssetxattr-dax-flag-round-trip", sealed: TXT, control: OK, op: op_fssetxattr_dax, probe: None },
];

type Special = fn(&Env) -> Outcome;

/// The cases after the table, each exactly one KTAP result.
const SPECIAL: &[(&str, Special)] = &[
    ("seal-normalises-hole-unwritten-shared", case_normalise),
    ("seal-unseal-idempotent", case_idempotent),
    ("visible-in-fsgetxattr-and-statx", case_visibility),
    ("statx-mask-advertises-seal", case_statx_mask),
    ("without-cap-linux-immutable-eperm", case_privilege),
    ("bad-arguments", case_bad_arguments),
    ("unseal-while-mapped-ebusy", case_unseal_mapped),
    ("io-uring-fixed-buffer-pin-and-io-sealed", case_pin_sealed),
    ("io-uring-fixed-buffer-pin-control-eopnotsupp", case_pin_control),
    ("pinned-and-mapped-answers-without-waiting", case_pinned_and_mapped),
    ("seal-sparse-file-enospc", case_enospc),
    ("swapon-sealed-non-dax-file", case_swap_sealed),
    ("swapfile-control-etxtbsy", case_swap_control),
    ("io-uring-pin-page-cache-sealed-efault", case_page_cache_pin_sealed),
    ("io-uring-pin-page-cache-control-efault", case_page_cache_pin_control),
    ("seal-survives-remount", case_remount),
];

pub fn run() -> ExitCode {
    let mount = PathBuf::from(format!("{MOUNT_PREFIX}0"));
    let dir = mount.join(format!("seal-conformance.{}", std::process::id()));
    let mut t = Cases::new(ROWS.len() * 2 + SPECIAL.len());
    if let Err(e) = fs::create_dir_all(&dir) {
        for row in ROWS {
            t.blocked(&format!("{}-sealed", row.name), &format!("mkdir {}: {e}", dir.display()));
            t.blocked(&format!("{}-control", row.name), "mkdir");
        }
        for (name, _) in SPECIAL {
            t.blocked(name, "mkdir");
        }
        return t.exit();
    }
    let env = Env { mount, dir: dir.clone(), page_cache: page_cache::dir("seal-conformance"), has_seal: probe(&dir) };
    match &env.has_seal {
        Ok(()) => t.note("SEAL works on this kernel: sealed legs run"),
        Err(why) => t.note(&format!("sealed legs skip: {why}")),
    }
    for row in ROWS {
        if let Some(Err(why)) = row.probe.map(|p| p(&env.dir)) {
            t.skip(&format!("{}-sealed", row.name), &why);
            t.skip(&format!("{}-control", row.name), &why);
            continue;
        }
        match &env.has_seal {
            Err(why) => t.skip(&format!("{}-sealed", row.name), why),
            Ok(()) => {
                t.check(&format!("{}-sealed", row.name), leg(&env, row, true).map(|n| ((), n)));
            }
        }
        t.check(&format!("{}-control", row.name), leg(&env, row, false).map(|n| ((), n)));
    }
    for (name, case) in SPECIAL {
        t.outcome(name, case(&env));
    }
    let _ = fs::remove_dir_all(&dir);
    if let Ok(pc) = &env.page_cache {
        let _ = fs::remove_dir_all(pc);
    }
    t.exit()
}

struct Env {
    mount: PathBuf,
    dir: PathBuf,
    /// A directory on the dax=never NVDIMM, or why there is none.
    page_cache: Result<PathBuf, String>,
    /// Ok when SEAL works; otherwise why the sealed legs skip.
    has_seal: Result<(), String>,
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs `f` only on a kernel with the series.
    fn sealed(&self, f: impl FnOnce() -> Check) -> Outcome {
        when_sealable(&self.has_seal, f)
    }
}

/// SEAL on a scratch file: 0 means the series is there; EOPNOTSUPP means a
/// kernel without it. Anything else is reported through the cases that need
/// the seal (they fail, never skip).
pub fn probe(dir: &Path) -> Result<(), String> {
    let path = dir.join("probe");
    let r = (|| {
        let f = create(&path, 0x11, SIZE)?;
        match seal::seal(&f) {
            Ok(()) => {
                seal::unseal(&f).map_err(|e| format!("UNSEAL of the probe: {}", errno_text(&e)))?;
                Ok(Ok(()))
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                Ok(Err("SEAL returns EOPNOTSUPP: this kernel lacks the block-map seal series".to_string()))
            }
            Err(e) => Err(format!("SEAL of a fresh file: {}", errno_text(&e))),
        }
    })();
    let _ = fs::remove_file(&path);
    match r {
        Ok(verdict) => verdict,
        // A kernel whose SEAL fails oddly must fail the sealed legs, so run
        // them: they report the real errno.
        Err(_) => Ok(()),
    }
}

pub fn pattern(seed: u8, len: u64) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(seed as u32 % 31) as u8 ^ seed).collect()
}

pub fn create(path: &Path, seed: u8, len: u64) -> Result<File, String> {
    let _ = fs::remove_file(path);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("create {}: {}", path.display(), errno_text(&e)))?;
    f.write_all(&pattern(seed, len)).map_err(|e| format!("write {}: {}", path.display(), errno_text(&e)))?;
    f.sync_all().map_err(|e| format!("fsync {}: {}", path.display(), errno_text(&e)))?;
    Ok(f)
}

/// The file a row operates on, sealed or not, with a helper file beside it.
struct Target {
    path: PathBuf,
    file: File,
    helper: PathBuf,
}

impl Target {
    fn new(env: &Env, name: &str, sealed: bool) -> Result<Target, String> {
        let path = env.path(name);
        let helper = env.path(&format!("{name}.helper"));
        let file = create(&path, 0x5a, SIZE)?;
        create(&helper, 0xa7, SIZE)?;
        if sealed {
            seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
        }
        Ok(Target { path, file, helper })
    }

    fn open_helper(&self) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).open(&self.helper)
    }

    fn remove(self) {
        let _ = seal::unseal(&self.file);
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_file(&self.helper);
    }
}

/// Everything a refused operation must leave alone.
#[derive(PartialEq, Eq)]
struct Snapshot {
    map: Vec<Extent>,
    size: u64,
    blocks: u64,
    sealed: bool,
    bytes: Vec<u8>,
}

fn snapshot(path: &Path) -> Result<Snapshot, String> {
    let file = File::open(path).map_err(|e| format!("open {}: {}", path.display(), errno_text(&e)))?;
    let meta = file.metadata().map_err(|e| format!("fstat: {}", errno_text(&e)))?;
    let map = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    let sealed = is_sealed(path)?;
    let mut bytes = vec![0u8; meta.len() as usize];
    file.read_exact_at(&mut bytes, 0).map_err(|e| format!("read: {}", errno_text(&e)))?;
    Ok(Snapshot { map, size: meta.len(), blocks: meta.blocks(), sealed, bytes })
}

/// What changed between two snapshots, for a failure message.
fn differences(a: &Snapshot, b: &Snapshot) -> String {
    let mut d = Vec::new();
    if a.map != b.map {
        d.push(format!("FIEMAP {} extents -> {} extents ({:?} -> {:?})", a.map.len(), b.map.len(), a.map, b.map));
    }
    if a.size != b.size {
        d.push(format!("size {} -> {}", a.size, b.size));
    }
    if a.blocks != b.blocks {
        d.push(format!("st_blocks {} -> {}", a.blocks, b.blocks));
    }
    if a.sealed != b.sealed {
        d.push(format!("sealed {} -> {}", a.sealed, b.sealed));
    }
    if a.bytes != b.bytes {
        let at = a.bytes.iter().zip(&b.bytes).position(|(x, y)| x != y).unwrap_or(a.bytes.len().min(b.bytes.len()));
        d.push(format!("bytes differ from offset {at}"));
    }
    d.join("; ")
}

fn expected_bytes(before: &[u8], want: &Want) -> Option<Vec<u8>> {
    match want {
        Want::Same => Some(before.to_vec()),
        Want::Bytes(off, data) => {
            let mut b = before.to_vec();
            let end = *off as usize + data.len();
            if b.len() < end {
                b.resize(end, 0);
            }
            b[*off as usize..end].copy_from_slice(data);
            Some(b)
        }
        Want::Size(..) | Want::Gone => None,
    }
}

/// One leg of a row: set up, snapshot, run, compare with the contract.
fn leg(env: &Env, row: &Row, sealed: bool) -> Check {
    let name = format!("{}.{}", row.name, if sealed { "sealed" } else { "control" });
    let target = Target::new(env, &name, sealed)?;
    let r = judge(row, sealed, &target);
    target.remove();
    r
}

fn judge(row: &Row, sealed: bool, target: &Target) -> Check {
    let before = snapshot(&target.path)?;
    if sealed && !before.sealed {
        return Err("SEAL returned 0 but statx does not report STATX_ATTR_IOMAP_IMMUTABLE".into());
    }
    let expect = if sealed { row.sealed } else { row.control };
    let result = (row.op)(target);
    match (expect, result) {
        (Expect::Err(want), Err(e)) if e.raw_os_error() == Some(want) => {
            let after = snapshot(&target.path)?;
            if after != before {
                return Err(format!(
                    "refused with {} but changed the file: {}",
                    errno_text(&e),
                    differences(&before, &after)
                ));
            }
            Ok(format!("refused with {}; map, size, blocks and bytes unchanged", errno_text(&e)))
        }
        (Expect::Err(want), Err(e)) => Err(format!("expected errno {want}, got {}", errno_text(&e))),
        (Expect::Err(want), Ok(_)) => {
            let after = snapshot(&target.path).map(|a| differences(&before, &a)).unwrap_or_else(|e| e);
            Err(format!("expected errno {want}, but the operation succeeded ({after})"))
        }
        (Expect::Ok, Err(e)) => Err(format!("expected success, got {}", errno_text(&e))),
        (Expect::Ok, Ok(want)) => {
            if let Want::Gone = want {
                return Ok("done; the name now refers to another file".into());
            }
            let after = snapshot(&target.path)?;
            let note = match &want {
                Want::Size(_, _) if sealed => {
                    return Err("a table row permits a size change on a sealed file".into());
                }
                Want::Size(n, keep) => {
                    if after.size != *n {
                        return Err(format!("expected size {n}, found {}", after.size));
                    }
                    let keep = (*keep).min(*n).min(before.size) as usize;
                    if after.bytes[..keep] != before.bytes[..keep] {
                        return Err("bytes below the new size changed".into());
                    }
                    format!("size now {n}")
                }
                _ => {
                    if expected_bytes(&before.bytes, &want).is_some_and(|b| after.bytes != b) {
                        return Err(format!("the data did not land: {}", differences(&before, &after)));
                    }
                    "data reads back".to_string()
                }
            };
            if sealed {
                let expect_after = Snapshot { bytes: after.bytes.clone(), ..before };
                if after != expect_after {
                    return Err(format!(
                        "a permitted operation changed the sealed file: {}",
                        differences(&expect_after, &after)
                    ));
                }
                return Ok(format!("done; {note}; map, size, blocks and seal unchanged"));
            }
            Ok(format!("done; {note}"))
        }
    }
}

// ---- the operations of the table ----

fn op_read(t: &Target) -> io::Result<Want> {
    let mut buf = vec![0u8; SIZE as usize];
    t.file.read_exact_at(&mut buf, 0)?;
    if buf != pattern(0x5a, SIZE) {
        return Err(io::Error::other("read returned other bytes than were written"));
    }
    Ok(Want::Same)
}

/// A block-aligned buffer for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    layout: Layout,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = Layout::from_size_align(len, BLOCK as usize).unwrap_or(Layout::new::<u8>());
        // SAFETY: non-zero size layout.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        Aligned { ptr, layout }
    }
    fn slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr/layout describe our allocation.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in new().
        unsafe { alloc::dealloc(self.ptr, self.layout) };
    }
}

fn open_direct(path: &Path, write: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(write).custom_flags(libc::O_DIRECT).open(path)
}

fn op_read_odirect(t: &Target) -> io::Result<Want> {
    let f = open_direct(&t.path, false)?;
    let mut buf = Aligned::new(4 * BLOCK as usize);
    f.read_exact_at(buf.slice(), BLOCK)?;
    if buf.slice()[..] != pattern(0x5a, SIZE)[BLOCK as usize..5 * BLOCK as usize] {
        return Err(io::Error::other("O_DIRECT read returned other bytes than were written"));
    }
    Ok(Want::Same)
}

fn op_fiemap_seek(t: &Target) -> io::Result<Want> {
    let a = seal::fiemap(&t.file)?;
    let b = seal::fiemap(&t.file)?;
    if a != b || a.is_empty() {
        return Err(io::Error::other(format!("FIEMAP unstable or empty: {a:?} then {b:?}")));
    }
    let data = seal::seek(&t.file, 0, libc::SEEK_DATA)?;
    let hole = seal::seek(&t.file, 0, libc::SEEK_HOLE)?;
    if data != 0 || hole != SIZE {
        return Err(io::Error::other(format!("SEEK_DATA {data}, SEEK_HOLE {hole}; expected 0 and {SIZE}")));
    }
    Ok(Want::Same)
}

fn op_overwrite_pwrite(t: &Target) -> io::Result<Want> {
    let data = pattern(0x31, 2 * BLOCK);
    t.file.write_all_at(&data, BLOCK + 100)?;
    Ok(Want::Bytes(BLOCK + 100, data))
}

fn op_overwrite_odirect(t: &Target) -> io::Result<Want> {
    let f = open_direct(&t.path, true)?;
    let data = pattern(0x32, 2 * BLOCK);
    let mut buf = Aligned::new(data.len());
    buf.slice().copy_from_slice(&data);
    f.write_all_at(buf.slice(), 4 * BLOCK)?;
    Ok(Want::Bytes(4 * BLOCK, data))
}

fn op_overwrite_mmap(t: &Target) -> io::Result<Want> {
    let data = pattern(0x33, BLOCK);
    let mut map = Mapping::shared_sync(&t.file, SIZE as usize)?;
    map.as_mut_slice()[(8 * BLOCK) as usize..(9 * BLOCK) as usize].copy_from_slice(&data);
    drop(map);
    Ok(Want::Bytes(8 * BLOCK, data))
}

fn op_write_extending(t: &Target) -> io::Result<Want> {
    let data = pattern(0x34, 200);
    let n = t.file.write_at(&data, SIZE - 100)?;
    if n != data.len() {
        return Err(io::Error::other(format!("short write of {n} bytes")));
    }
    Ok(Want::Bytes(SIZE - 100, data))
}

fn op_write_append(t: &Target) -> io::Result<Want> {
    let mut f = OpenOptions::new().append(true).open(&t.path)?;
    let data = pattern(0x35, 100);
    f.write_all(&data)?;
    Ok(Want::Bytes(SIZE, data))
}

fn op_copy_inside(t: &Target) -> io::Result<Want> {
    let src = t.open_helper()?;
    let n = seal::copy_file_range(&src, 0, &t.file, 4 * BLOCK, BLOCK as usize)?;
    if n != BLOCK as usize {
        return Err(io::Error::other(format!("copied {n} of {BLOCK} bytes")));
    }
    Ok(Want::Bytes(4 * BLOCK, pattern(0xa7, BLOCK)))
}

fn op_copy_extending(t: &Target) -> io::Result<Want> {
    let src = t.open_helper()?;
    let n = seal::copy_file_range(&src, 0, &t.file, SIZE - BLOCK / 2, BLOCK as usize)?;
    if n != BLOCK as usize {
        return Err(io::Error::other(format!("copied {n} of {BLOCK} bytes")));
    }
    Ok(Want::Bytes(SIZE - BLOCK / 2, pattern(0xa7, BLOCK)))
}

fn op_ftruncate_shrink(t: &Target) -> io::Result<Want> {
    t.file.set_len(SIZE / 2).map(|()| Want::Size(SIZE / 2, SIZE))
}

fn op_ftruncate_grow(t: &Target) -> io::Result<Want> {
    t.file.set_len(SIZE * 2).map(|()| Want::Size(SIZE * 2, SIZE))
}

fn op_ftruncate_same(t: &Target) -> io::Result<Want> {
    t.file.set_len(SIZE).map(|()| Want::Size(SIZE, SIZE))
}

fn op_truncate_path(t: &Target) -> io::Result<Want> {
    seal::truncate_path(&t.path, BLOCK).map(|()| Want::Size(BLOCK, SIZE))
}

fn op_open_trunc(t: &Target) -> io::Result<Want> {
    OpenOptions::new().write(true).truncate(true).open(&t.path).map(|_| Want::Size(0, 0))
}

fn op_falloc_allocate(t: &Target) -> io::Result<Want> {
    seal::fallocate(&t.file, 0, SIZE, 16 * BLOCK).map(|()| Want::Size(SIZE + 16 * BLOCK, SIZE))
}

fn op_falloc_keep_size(t: &Target) -> io::Result<Want> {
    seal::fallocate(&t.file, seal::FALLOC_FL_KEEP_SIZE, SIZE, 16 * BLOCK).map(|()| Want::Same)
}

fn op_falloc_punch(t: &Target) -> io::Result<Want> {
    seal::fallocate(&t.file, seal::FALLOC_FL_PUNCH_HOLE | seal::FALLOC_FL_KEEP_SIZE, BLOCK, BLOCK)
        .map(|()| Want::Bytes(BLOCK, vec![0; BLOCK as usize]))
}

fn op_falloc_zero(t: &Target) -> io::Result<Want> {
    seal::fallocate(&t.file, seal::FALLOC_FL_ZERO_RANGE, BLOCK, BLOCK)
        .map(|()| Want::Bytes(BLOCK, vec![0; BLOCK as usize]))
}

fn op_falloc_collapse(t: &Target) -> io::Result<Want> {
    seal::fallocate(&t.file, seal::FALLOC_FL_COLLAPSE_RANGE, 60 * BLOCK, BLOCK)
        .map(|()| Want::Size(SIZE - BLOCK, 60 * BLOCK))
}

fn op_falloc_insert(t: &Target) -> io::Result<Want> {
    seal::fallocate(&t.file, seal::FALLOC_FL_INSERT_RANGE, 60 * BLOCK, BLOCK)
        .map(|()| Want::Size(SIZE + BLOCK, 60 * BLOCK))
}

fn op_falloc_unshare(t: &Target) -> io::Result<Want> {
    seal::fallocate(&t.file, seal::FALLOC_FL_UNSHARE_RANGE, 0, SIZE).map(|()| Want::Same)
}

fn op_ficlone_into(t: &Target) -> io::Result<Want> {
    let src = t.open_helper()?;
    seal::ficlone(&t.file, &src).map(|()| Want::Bytes(0, pattern(0xa7, SIZE)))
}

fn op_ficlone_from(t: &Target) -> io::Result<Want> {
    let dest = t.open_helper()?;
    seal::ficlone(&dest, &t.file)?;
    let mut buf = vec![0u8; SIZE as usize];
    dest.read_exact_at(&mut buf, 0)?;
    if buf != pattern(0x5a, SIZE) {
        return Err(io::Error::other("the clone does not read as the source"));
    }
    Ok(Want::Same)
}

fn op_ficlonerange_into(t: &Target) -> io::Result<Want> {
    let src = t.open_helper()?;
    seal::ficlonerange(&t.file, 16 * BLOCK, &src, 0, 16 * BLOCK)
        .map(|()| Want::Bytes(16 * BLOCK, pattern(0xa7, 16 * BLOCK)))
}

/// Makes the helper a byte-for-byte copy of the target, for dedupe.
fn same_helper(t: &Target) -> io::Result<File> {
    let h = t.open_helper()?;
    h.write_all_at(&pattern(0x5a, SIZE), 0)?;
    h.sync_all()?;
    Ok(h)
}

fn op_dedupe_into(t: &Target) -> io::Result<Want> {
    let h = same_helper(t)?;
    seal::dedupe(&h, &t.file, 0, SIZE).map(|_| Want::Same)
}

fn op_dedupe_from(t: &Target) -> io::Result<Want> {
    let h = same_helper(t)?;
    seal::dedupe(&t.file, &h, 0, SIZE).map(|_| Want::Same)
}

/// The sealed (or control) file as the target: it gets the helper's blocks.
fn op_swapext_target(t: &Target) -> io::Result<Want> {
    let h = t.open_helper()?;
    seal::swapext(&t.file, &h).map(|()| Want::Bytes(0, pattern(0xa7, SIZE)))
}

/// The sealed (or control) file as the temporary file: it gets the
/// helper's blocks too, from the other side.
fn op_swapext_tmp(t: &Target) -> io::Result<Want> {
    let h = t.open_helper()?;
    seal::swapext(&h, &t.file).map(|()| Want::Bytes(0, pattern(0xa7, SIZE)))
}

fn op_exchange_range(t: &Target) -> io::Result<Want> {
    let h = t.open_helper()?;
    seal::exchange_range(&t.file, &h, SIZE).map(|()| Want::Bytes(0, pattern(0xa7, SIZE)))
}

/// XFS_IOC_EXCHANGE_RANGE needs the exchange-range feature, which
/// mkfs.xfs sets from xfsprogs 6.10 on; Debian 12's 6.1 cannot.
fn probe_exchange_range(dir: &Path) -> Result<(), String> {
    let (a, b) = (dir.join("probe-xchg.1"), dir.join("probe-xchg.2"));
    let r = create(&a, 1, BLOCK).and_then(|fa| {
        let fb = create(&b, 2, BLOCK)?;
        match seal::exchange_range(&fb, &fa, BLOCK) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOTTY)) => Err(format!(
                "this filesystem has no exchange-range support ({}); mkfs.xfs 6.10 or later sets it",
                errno_text(&e)
            )),
            _ => Ok(()),
        }
    });
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
    r
}

/// Online repair rebuilding the data fork from the reverse-mapping btree:
/// the same mappings come back, so the file reads the same.
fn op_rebuild_data_fork(t: &Target) -> io::Result<Want> {
    seal::rebuild_data_fork(&t.file).map(|()| Want::Same)
}

/// A forced rebuild of a data fork needs CONFIG_XFS_ONLINE_REPAIR (every
/// variant has it) and the reverse-mapping btree, which the guest's mkfs
/// enables; filesystems made by older versions of the harness lack it.
pub fn probe_online_repair(dir: &Path) -> Result<(), String> {
    let path = dir.join("probe-repair");
    let r = create(&path, 3, BLOCK).and_then(|f| match seal::rebuild_data_fork(&f) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOTTY)) => Err(format!(
            "online repair cannot rebuild a data fork here ({}): it needs CONFIG_XFS_ONLINE_REPAIR and a \
             filesystem made with rmapbt=1, as the harness makes them (run with --fresh to remake an older one)",
            errno_text(&e)
        )),
        _ => Ok(()),
    });
    let _ = fs::remove_file(&path);
    r
}

fn op_unlink(t: &Target) -> io::Result<Want> {
    fs::remove_file(&t.path).map(|()| Want::Gone)
}

fn op_rename_over(t: &Target) -> io::Result<Want> {
    fs::rename(&t.helper, &t.path).map(|()| Want::Gone)
}

fn op_rename_itself(t: &Target) -> io::Result<Want> {
    let away = t.path.with_extension("renamed");
    fs::rename(&t.path, &away)?;
    fs::rename(&away, &t.path)?;
    Ok(Want::Same)
}

fn op_fssetxattr_dax(t: &Target) -> io::Result<Want> {
    let before = seal::fsgetxattr(&t.file)?;
    let mut fa = before;
    fa.xflags ^= seal::FS_XFLAG_DAX;
    seal::fssetxattr(&t.file, &fa)?;
    let after = seal::fsgetxattr(&t.file)?;
    if (after.xflags ^ before.xflags) != seal::FS_XFLAG_DAX {
        return Err(io::Error::other(format!(
            "xflags {:#x} -> {:#x}: expected only DAX to flip",
            before.xflags, after.xflags
        )));
    }
    // Put it back: a later inode reload must not switch the file off DAX.
    seal::fssetxattr(&t.file, &before)?;
    Ok(Want::Same)
}

// ---- the seal's own rules ----

fn case_normalise(env: &Env) -> Outcome {
    env.sealed(|| {
        let path = env.path("normalise");
        let other_path = env.path("normalise.other");
        let file = create(&path, 0x41, SIZE)?;
        let other = create(&other_path, 0x42, SIZE)?;
        let e = |what: &str, err: io::Error| format!("{what}: {}", errno_text(&err));
        // A hole, an unwritten range and a range shared with another file.
        seal::fallocate(&file, seal::FALLOC_FL_PUNCH_HOLE | seal::FALLOC_FL_KEEP_SIZE, 4 * BLOCK, 4 * BLOCK)
            .map_err(|x| e("punch", x))?;
        seal::fallocate(&file, seal::FALLOC_FL_ZERO_RANGE, 16 * BLOCK, 4 * BLOCK).map_err(|x| e("zero", x))?;
        seal::ficlonerange(&file, 32 * BLOCK, &other, 0, 8 * BLOCK).map_err(|x| e("FICLONERANGE", x))?;
        let map = seal::fiemap(&file).map_err(|x| e("FIEMAP", x))?;
        let kinds = describe(&map, SIZE);
        if !kinds.contains("hole") || !kinds.contains("unwritten") || !kinds.contains("shared") {
            return Err(format!("could not build the test file: its map has {kinds}"));
        }
        let before = snapshot(&path)?;
        let other_before = snapshot(&other_path)?;
        seal::seal(&file).map_err(|x| e("SEAL", x))?;
        let after = snapshot(&path)?;
        let after_kinds = describe(&after.map, SIZE);
        let other_after = snapshot(&other_path)?;
        let _ = seal::unseal(&file);
        if after.bytes != before.bytes {
            return Err(format!("SEAL changed the file's bytes: {}", differences(&before, &after)));
        }
        if after_kinds != "written" {
            return Err(format!("after SEAL the map still has {after_kinds}: {:?}", after.map));
        }
        if other_after.bytes != other_before.bytes {
            return Err("SEAL changed the bytes of the file it shared blocks with".into());
        }
        Ok(format!("before: {kinds}; after: one covered written range, {} extents, bytes unchanged", after.map.len()))
    })
}

/// What a map contains: "hole", "unwritten", "shared", "delalloc", or
/// "written" when it is none of those and covers [0, size).
pub fn describe(map: &[Extent], size: u64) -> String {
    let mut kinds = Vec::new();
    let mut next = 0;
    let mut hole = false;
    for e in map {
        hole |= e.logical != next;
        next = e.logical + e.length;
    }
    hole |= next < size;
    let flag = |f: u32| map.iter().any(|e| e.flags & f != 0);
    for (present, name) in [
        (hole, "hole"),
        (flag(seal::FIEMAP_EXTENT_UNWRITTEN), "unwritten"),
        (flag(seal::FIEMAP_EXTENT_SHARED), "shared"),
        (flag(seal::FIEMAP_EXTENT_DELALLOC), "delalloc"),
    ] {
        if present {
            kinds.push(name);
        }
    }
    if kinds.is_empty() {
        "written".into()
    } else {
        kinds.join(", ")
    }
}

fn case_idempotent(env: &Env) -> Outcome {
    env.sealed(|| {
        let path = env.path("idempotent");
        let file = create(&path, 0x43, SIZE)?;
        let step = |what: &str, r: io::Result<()>| r.map_err(|e| format!("{what}: {}", errno_text(&e)));
        step("first SEAL", seal::seal(&file))?;
        step("second SEAL", seal::seal(&file))?;
        step("first UNSEAL", seal::unseal(&file))?;
        step("second UNSEAL", seal::unseal(&file))?;
        step("ftruncate after UNSEAL", file.set_len(SIZE / 2))?;
        step("punch after UNSEAL", seal::fallocate(&file, 3, 0, BLOCK))?;
        step("unlink after UNSEAL", fs::remove_file(&path))?;
        Ok("SEAL, SEAL, UNSEAL, UNSEAL all 0; truncate, punch and unlink work again".into())
    })
}

fn case_visibility(env: &Env) -> Outcome {
    env.sealed(|| {
        let path = env.path("visible");
        let file = create(&path, 0x44, SIZE)?;
        let flags = |f: &File| seal::fsgetxattr(f).map_err(|e| format!("FSGETXATTR: {}", errno_text(&e)));
        let attrs = || statx_attributes(&path).map(|(a, _)| a);
        let unsealed = (flags(&file)?.xflags, attrs()?);
        seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
        let sealed = (flags(&file)?.xflags, attrs()?);
        seal::unseal(&file).map_err(|e| format!("UNSEAL: {}", errno_text(&e)))?;
        let after = (flags(&file)?.xflags, attrs()?);
        let _ = fs::remove_file(&path);
        let shows =
            |(x, a): (u32, u64)| (x & seal::FS_XFLAG_IOMAP_IMMUTABLE != 0, a & seal::STATX_ATTR_IOMAP_IMMUTABLE != 0);
        match (shows(unsealed), shows(sealed), shows(after)) {
            ((false, false), (true, true), (false, false)) => {
                Ok(format!("sealed: xflags {:#x}, stx_attributes {:#x}", sealed.0, sealed.1))
            }
            (u, s, a) => Err(format!(
                "(FS_XFLAG_IOMAP_IMMUTABLE, STATX_ATTR_IOMAP_IMMUTABLE) before {u:?}, sealed {s:?}, unsealed {a:?}; \
                 expected false/true/false"
            )),
        }
    })
}

/// Not a sealed leg: the mask is asserted on both kernels, in opposite ways.
fn case_statx_mask(env: &Env) -> Outcome {
    let path = env.path("mask");
    let r = create(&path, 0x45, BLOCK).and_then(|_| statx_attributes(&path));
    let _ = fs::remove_file(&path);
    Outcome::Done(r.and_then(|(attrs, mask)| {
        let advertised = mask & seal::STATX_ATTR_IOMAP_IMMUTABLE != 0;
        if attrs & STATX_ATTR_DAX == 0 {
            return Err(format!("stx_attributes {attrs:#x} lacks STATX_ATTR_DAX"));
        }
        match (env.has_seal.is_ok(), advertised) {
            (true, true) => Ok(format!("stx_attributes_mask {mask:#x} advertises the seal")),
            (false, false) => Ok(format!("stx_attributes_mask {mask:#x}: no seal, as on 6.12")),
            (true, false) => Err(format!("SEAL works but stx_attributes_mask {mask:#x} does not advertise it")),
            (false, true) => Err(format!("SEAL is unsupported but stx_attributes_mask {mask:#x} advertises it")),
        }
    }))
}

fn case_privilege(env: &Env) -> Outcome {
    env.sealed(|| {
        let unsealed_path = env.path("privilege.unsealed");
        let sealed_path = env.path("privilege.sealed");
        let unsealed = create(&unsealed_path, 0x46, SIZE)?;
        let sealed = create(&sealed_path, 0x47, SIZE)?;
        seal::seal(&sealed).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
        let seal_errno = in_child(|| {
            seal::drop_cap_linux_immutable()?;
            seal::seal(&unsealed)
        });
        let unseal_errno = in_child(|| {
            seal::drop_cap_linux_immutable()?;
            seal::unseal(&sealed)
        });
        let still = snapshot(&sealed_path)?.sealed;
        let _ = seal::unseal(&sealed);
        let _ = fs::remove_file(&sealed_path);
        let _ = fs::remove_file(&unsealed_path);
        match (seal_errno?, unseal_errno?, still) {
            (libc::EPERM, libc::EPERM, true) => Ok("SEAL and UNSEAL without CAP_LINUX_IMMUTABLE: EPERM".into()),
            (s, u, still) => Err(format!("without CAP_LINUX_IMMUTABLE: SEAL errno {s}, UNSEAL errno {u}, still sealed {still}; expected EPERM, EPERM, true")),
        }
    })
}

/// Runs `f` in a forked child; returns its errno (0 for success).
fn in_child(f: impl FnOnce() -> io::Result<()>) -> Result<i32, String> {
    // SAFETY: the workload is single-threaded here; the child only makes
    // system calls and exits without running destructors.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", errno_text(&io::Error::last_os_error()))),
        0 => {
            let code = match f() {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(255),
            };
            // SAFETY: leaving the child at once.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            if unsafe { libc::waitpid(pid, &mut status, 0) } != pid || !libc::WIFEXITED(status) {
                return Err(format!("child {pid} did not exit normally (status {status:#x})"));
            }
            Ok(libc::WEXITSTATUS(status))
        }
    }
}

/// Argument checks. On a kernel without the series every call gives
/// EOPNOTSUPP (an unknown mode), which is asserted too.
fn case_bad_arguments(env: &Env) -> Outcome {
    let has = env.has_seal.is_ok();
    let r = (|| -> Check {
        let path = env.path("badargs");
        let file = create(&path, 0x48, SIZE)?;
        let ro = File::open(&path).map_err(|e| format!("open O_RDONLY: {e}"))?;
        let dir = File::open(&env.dir).map_err(|e| format!("open dir: {e}"))?;
        let tmpfs = TmpfsFile::new().map_err(|e| format!("tmpfs: {e}"))?;
        let immutable_path = env.path("badargs.immutable");
        let immutable = create(&immutable_path, 0x49, SIZE)?;
        seal::set_immutable(&immutable, true).map_err(|e| format!("chattr +i: {}", errno_text(&e)))?;
        let s = seal::FALLOC_FL_SEAL_BLOCK_MAP;
        let u = seal::FALLOC_FL_UNSEAL_BLOCK_MAP;
        let eop = libc::EOPNOTSUPP;
        let calls: Vec<(&str, io::Result<()>, i32)> = vec![
            ("SEAL at offset 4096", seal::fallocate(&file, s, BLOCK, BLOCK), libc::EINVAL),
            ("UNSEAL at offset 4096", seal::fallocate(&file, u, BLOCK, BLOCK), libc::EINVAL),
            ("SEAL with len 0", seal::fallocate(&file, s, 0, 0), libc::EINVAL),
            ("SEAL|KEEP_SIZE", seal::fallocate(&file, s | seal::FALLOC_FL_KEEP_SIZE, 0, BLOCK), eop),
            ("UNSEAL|KEEP_SIZE", seal::fallocate(&file, u | seal::FALLOC_FL_KEEP_SIZE, 0, BLOCK), eop),
            ("SEAL|UNSEAL", seal::fallocate(&file, s | u, 0, BLOCK), eop),
            ("SEAL|PUNCH_HOLE", seal::fallocate(&file, s | seal::FALLOC_FL_PUNCH_HOLE, 0, BLOCK), eop),
            ("SEAL on an O_RDONLY fd", seal::seal(&ro), libc::EBADF),
            ("SEAL on a directory fd", seal::seal(&dir), libc::EBADF),
            ("SEAL on tmpfs", seal::seal(&tmpfs.file), eop),
            ("SEAL of a chattr +i file", seal::seal(&immutable), libc::EPERM),
        ];
        let _ = seal::set_immutable(&immutable, false);
        let _ = fs::remove_file(&immutable_path);
        let _ = fs::remove_file(&path);
        let mut wrong = Vec::new();
        for (what, got, want) in &calls {
            // len 0 is EINVAL on every kernel: fallocate checks it first.
            let want = if has || *want == libc::EINVAL && what.contains("len 0") { *want } else { eop };
            match got {
                Err(e) if e.raw_os_error() == Some(want) => {}
                Err(e) => wrong.push(format!("{what}: {} (expected errno {want})", errno_text(e))),
                Ok(()) => wrong.push(format!("{what}: succeeded (expected errno {want})")),
            }
        }
        if wrong.is_empty() {
            let how = if has { "each with the contract's errno" } else { "each EOPNOTSUPP, as on 6.12" };
            Ok(format!("{} bad calls refused, {how}", calls.len()))
        } else {
            Err(wrong.join("; "))
        }
    })();
    Outcome::Done(r)
}

/// A file on a private tmpfs mount, unmounted on drop.
pub struct TmpfsFile {
    pub dir: PathBuf,
    pub file: File,
}

impl TmpfsFile {
    pub fn new() -> Result<TmpfsFile, String> {
        let dir = PathBuf::from(format!("/run/seal-conformance-tmpfs.{}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let c = cpath(&dir).map_err(|e| e.to_string())?;
        let fstype = c"tmpfs";
        // SAFETY: valid C strings; no data argument.
        if unsafe { libc::mount(fstype.as_ptr(), c.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) } != 0 {
            return Err(format!("mount tmpfs on {}: {}", dir.display(), errno_text(&io::Error::last_os_error())));
        }
        let file = create(&dir.join("f"), 0x50, SIZE)?;
        Ok(TmpfsFile { dir, file })
    }
}

impl Drop for TmpfsFile {
    fn drop(&mut self) {
        if let Ok(c) = cpath(&self.dir) {
            // SAFETY: valid C string; a lazy detach cannot hurt the caller.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

fn case_unseal_mapped(env: &Env) -> Outcome {
    env.sealed(|| {
        let path = env.path("mapped");
        let file = create(&path, 0x51, SIZE)?;
        seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
        let map = Mapping::shared_sync(&file, SIZE as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
        let busy = seal::unseal(&file);
        drop(map);
        let after = seal::unseal(&file);
        let _ = fs::remove_file(&path);
        match (busy, after) {
            (Err(e), Ok(())) if e.raw_os_error() == Some(libc::EBUSY) => {
                Ok("UNSEAL while mapped: EBUSY; after munmap: 0".into())
            }
            (b, a) => Err(format!("UNSEAL while mapped: {b:?}, after munmap: {a:?}; expected EBUSY then 0")),
        }
    })
}

/// Maps the whole file with MAP_SYNC, registers the mapping as an io_uring
/// fixed buffer (a FOLL_LONGTERM pin), and unmaps it: a registered pin
/// outlives the mapping. Returns the ring and the registration's result.
fn pin_then_unmap(file: &File) -> Result<(seal::Ring, io::Result<()>), String> {
    let ring = seal::Ring::new().map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
    let mut map = Mapping::shared_sync(file, SIZE as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    let registered = ring.register(map.as_mut_ptr(), SIZE as usize);
    drop(map);
    Ok((ring, registered))
}

/// A long-term pin (io_uring REGISTER_BUFFERS) of a sealed file's DAX
/// mapping works, and data moves through it both ways: WRITE_FIXED copies
/// the file's pmem pages out to another file, READ_FIXED lands another
/// file's bytes in them, which the sealed file then reads back, without its
/// map moving. UNSEAL is refused while the pin holds (even after munmap)
/// and allowed after UNREGISTER.
fn case_pin_sealed(env: &Env) -> Outcome {
    env.sealed(|| {
        let (path, out, source) = (env.path("pin"), env.path("pin.out"), env.path("pin.source"));
        let r = pin_round_trip(&path, &out, &source);
        for p in [&path, &out, &source] {
            let _ = fs::remove_file(p);
        }
        r
    })
}

/// Seals `file`, maps all of it with MAP_SYNC and registers the mapping as
/// an io_uring fixed buffer. Returns the map right after SEAL, the ring
/// holding the pin, and the mapping (still live).
fn seal_and_pin(file: &File) -> Result<(Vec<Extent>, seal::Ring, Mapping), String> {
    seal::seal(file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let map_before = seal::fiemap(file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    let ring = seal::Ring::new().map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
    let mut map = Mapping::shared_sync(file, SIZE as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    ring.register(map.as_mut_ptr(), SIZE as usize)
        .map_err(|e| format!("REGISTER_BUFFERS on the sealed DAX mapping: {}", errno_text(&e)))?;
    Ok((map_before, ring, map))
}

fn pin_round_trip(path: &Path, out: &Path, source: &Path) -> Check {
    const HALF: u64 = SIZE / 2;
    let file = create(path, 0x54, SIZE)?;
    let out_file = create(out, 0x00, 0)?;
    let source_file = create(source, 0x99, HALF)?;
    let (map_before, ring, mut map) = seal_and_pin(&file)?;
    let base = map.as_mut_ptr();
    // Out of the pinned pmem pages: the file's first half into `out`.
    let written = ring.write_fixed(&out_file, 0, base, HALF as u32);
    // Into them: `source` over the file's second half.
    // SAFETY: HALF is inside the SIZE-byte mapping.
    let read = ring.read_fixed(&source_file, 0, unsafe { base.add(HALF as usize) }, HALF as u32);
    drop(map);
    let busy = seal::unseal(&file);
    let unregistered = ring.unregister();
    let after = seal::unseal(&file);
    let want = HALF as u32;
    match written {
        Ok(n) if n == want => {}
        other => return Err(format!("WRITE_FIXED from the pinned buffer: {other:?}, expected {want} bytes")),
    }
    match read {
        Ok(n) if n == want => {}
        other => return Err(format!("READ_FIXED into the pinned buffer: {other:?}, expected {want} bytes")),
    }
    let copied = fs::read(out).map_err(|e| format!("read {}: {e}", out.display()))?;
    if copied != pattern(0x54, SIZE)[..HALF as usize] {
        return Err("WRITE_FIXED wrote other bytes than the sealed file holds".into());
    }
    let mut landed = vec![0u8; HALF as usize];
    file.read_exact_at(&mut landed, HALF).map_err(|e| format!("pread: {}", errno_text(&e)))?;
    if landed != pattern(0x99, HALF) {
        return Err("the bytes READ_FIXED put in the pinned pages do not read back through the file".into());
    }
    let map_after = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    if map_after != map_before {
        return Err(format!("the map moved: {map_before:?} -> {map_after:?}"));
    }
    match busy {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        other => return Err(format!("UNSEAL while pinned (after munmap): {other:?}, expected EBUSY")),
    }
    unregistered.map_err(|e| format!("UNREGISTER_BUFFERS: {}", errno_text(&e)))?;
    after.map_err(|e| format!("UNSEAL after unregister: {}", errno_text(&e)))?;
    Ok(format!(
        "REGISTER_BUFFERS 0; WRITE_FIXED {HALF} bytes out and READ_FIXED {HALF} bytes in, both verified, map \
         unchanged; UNSEAL with the pin outliving munmap: EBUSY; after unregister: 0"
    ))
}

/// How long a call on a sealed, mapped and pinned file may take before it
/// counts as waiting for the pin: generous for the debug kernel under TCG,
/// while a call that waits never returns until the pin goes.
const WAITS_FOR_PIN_AFTER: Duration = Duration::from_secs(20);

/// A long-term pin held through a live mapping must not hold up anything
/// that asks the kernel to break the file's layouts. UNSEAL answers EBUSY,
/// a second SEAL 0, and the refused map changes ETXTBSY, each at once; the
/// pin still moves data afterwards, and the map has not moved.
fn case_pinned_and_mapped(env: &Env) -> Outcome {
    env.sealed(|| {
        let (path, other) = (env.path("pinned-mapped"), env.path("pinned-mapped.other"));
        let r = pinned_and_mapped(&path, &other);
        for p in [&path, &other] {
            let _ = fs::remove_file(p);
        }
        r
    })
}

type Call<'a> = (&'static str, Expect, Box<dyn Fn() -> io::Result<()> + Sync + 'a>);

fn pinned_and_mapped(path: &Path, other: &Path) -> Check {
    let file = create(path, 0x5a, SIZE)?;
    let other_file = create(other, 0x5b, SIZE)?;
    let (map_before, ring, mut map) = seal_and_pin(&file)?;
    let base = map.as_mut_ptr();
    let (file, other_file) = (&file, &other_file);
    let calls: Vec<Call> = vec![
        ("UNSEAL", Expect::Err(libc::EBUSY), Box::new(move || seal::unseal(file))),
        ("SEAL again", Expect::Ok, Box::new(move || seal::seal(file))),
        ("ftruncate to the same size", TXT, Box::new(move || file.set_len(SIZE))),
        (
            "punch a hole",
            TXT,
            Box::new(move || seal::fallocate(file, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 0, BLOCK)),
        ),
        ("FICLONE from it", TXT, Box::new(move || seal::ficlone(other_file, file))),
        ("FICLONE into it", TXT, Box::new(move || seal::ficlone(file, other_file))),
    ];
    let (answers, waiting) = answer_each(&calls, &ring);
    // Whatever happened, the pin goes before the verdict.
    let written = ring.write_fixed(other_file, 0, base, BLOCK as u32);
    let unregistered = ring.unregister();
    drop(map);
    let after = seal::unseal(file);
    let told: Vec<String> = calls
        .iter()
        .zip(&answers)
        .map(|((name, want, _), r)| {
            let got = if want.admits(r) { want.text() } else { errno_or_success(r) };
            format!("{name} = {got}")
        })
        .collect();
    if let Some(name) = waiting {
        return Err(format!(
            "{name} was still waiting for the pin after {} s (answered before it: {})",
            WAITS_FOR_PIN_AFTER.as_secs(),
            told.join("; ")
        ));
    }
    for ((name, want, _), r) in calls.iter().zip(&answers) {
        if !want.admits(r) {
            return Err(format!("{name}: got {}, expected {}", errno_or_success(r), want.text()));
        }
    }
    let map_after = seal::fiemap(file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    if map_after != map_before {
        return Err(format!("the map moved under the pin: {map_before:?} -> {map_after:?}"));
    }
    match written {
        Ok(n) if n == BLOCK as u32 => {}
        other => return Err(format!("WRITE_FIXED through the pin afterwards: {other:?}, expected {BLOCK} bytes")),
    }
    let mut copied = vec![0u8; BLOCK as usize];
    other_file.read_exact_at(&mut copied, 0).map_err(|e| format!("pread: {}", errno_text(&e)))?;
    if copied != pattern(0x5a, SIZE)[..BLOCK as usize] {
        return Err("WRITE_FIXED through the pin wrote other bytes than the sealed file holds".into());
    }
    unregistered.map_err(|e| format!("UNREGISTER_BUFFERS: {}", errno_text(&e)))?;
    after.map_err(|e| format!("UNSEAL after munmap and unregister: {}", errno_text(&e)))?;
    Ok(format!("with the pin held through a live mapping: {}; the pin then moved data, map unchanged", told.join(", ")))
}

/// Runs each call in turn on another thread and returns their results in
/// order. If one has not answered in WAITS_FOR_PIN_AFTER, the pin is
/// dropped (which lets a waiting call finish), the calls after it are not
/// made, and its name comes back as the second value.
fn answer_each(calls: &[Call], ring: &seal::Ring) -> (Vec<io::Result<()>>, Option<&'static str>) {
    let (tx, rx) = mpsc::channel();
    thread::scope(|s| {
        s.spawn(move || {
            for (_, _, call) in calls {
                if tx.send(call()).is_err() {
                    return;
                }
            }
        });
        let mut answers = Vec::new();
        for (name, _, _) in calls {
            match rx.recv_timeout(WAITS_FOR_PIN_AFTER) {
                Ok(r) => answers.push(r),
                Err(_) => {
                    drop(rx);
                    let _ = ring.unregister();
                    return (answers, Some(*name));
                }
            }
        }
        (answers, None)
    })
}

fn errno_or_success(r: &io::Result<()>) -> String {
    match r {
        Ok(()) => "success".into(),
        Err(e) => errno_text(e),
    }
}

/// Unsealed fsdax files keep 6.12's refusal of long-term pins, on both
/// kernels.
fn case_pin_control(env: &Env) -> Outcome {
    let r = (|| -> Check {
        let path = env.path("pin-control");
        let file = create(&path, 0x55, SIZE)?;
        let (ring, registered) = pin_then_unmap(&file)?;
        let _ = ring.unregister();
        let _ = fs::remove_file(&path);
        match registered {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                Ok("REGISTER_BUFFERS on an unsealed DAX mapping: EOPNOTSUPP".into())
            }
            other => Err(format!("REGISTER_BUFFERS on an unsealed DAX mapping: {other:?}, expected EOPNOTSUPP")),
        }
    })();
    Outcome::Done(r)
}

/// A case on the page-cache (dax=never) NVDIMM; it skips, with the reason,
/// when the guest has none. `seal_only` cases also skip without the series.
fn on_page_cache(env: &Env, seal_only: bool, f: impl FnOnce(&Path) -> Check) -> Outcome {
    match &env.page_cache {
        Err(why) => Outcome::Skip(why.clone()),
        Ok(dir) if seal_only => env.sealed(|| f(dir)),
        Ok(dir) => Outcome::Done(f(dir)),
    }
}

fn case_swap_sealed(env: &Env) -> Outcome {
    on_page_cache(env, true, page_cache::sealed_swapfile)
}

fn case_swap_control(env: &Env) -> Outcome {
    on_page_cache(env, false, page_cache::swapfile_control)
}

fn case_page_cache_pin_sealed(env: &Env) -> Outcome {
    on_page_cache(env, true, |dir| page_cache::page_cache_pin(dir, true))
}

fn case_page_cache_pin_control(env: &Env) -> Outcome {
    on_page_cache(env, false, |dir| page_cache::page_cache_pin(dir, false))
}

fn case_enospc(env: &Env) -> Outcome {
    env.sealed(|| {
        let before = free_bytes(&env.dir)?;
        let path = env.path("enospc");
        let file = create(&path, 0x52, BLOCK)?;
        // Twice the free space, all hole: the fill must run out.
        file.set_len(before * 2).map_err(|e| format!("ftruncate: {}", errno_text(&e)))?;
        let r = seal::seal(&file);
        let sealed = is_sealed(&path)?;
        let trunc = file.set_len(BLOCK);
        let _ = fs::remove_file(&path);
        let after = free_bytes(&env.dir)?;
        match r {
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {}
            other => return Err(format!("SEAL of a {} byte sparse file: {other:?}, expected ENOSPC", before * 2)),
        }
        if sealed {
            return Err("SEAL failed with ENOSPC but left the file sealed".into());
        }
        trunc.map_err(|e| format!("ftruncate after ENOSPC: {}", errno_text(&e)))?;
        // All the space the failed seal allocated comes back with the file.
        if after + 4 * 1024 * 1024 < before {
            return Err(format!("free space {before} before, {after} after removing the file"));
        }
        Ok(format!("ENOSPC, file left unsealed and removable; free {before} -> {after} bytes"))
    })
}

/// Whether statx reports the file sealed.
pub fn is_sealed(path: &Path) -> Result<bool, String> {
    statx_attributes(path).map(|(a, _)| a & seal::STATX_ATTR_IOMAP_IMMUTABLE != 0)
}

fn case_remount(env: &Env) -> Outcome {
    env.sealed(|| {
        let path = env.path("remount");
        let file = create(&path, 0x53, SIZE)?;
        seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
        let before = snapshot(&path)?;
        drop(file);
        remount(&env.mount)?;
        let after = snapshot(&path)?;
        let file = OpenOptions::new().write(true).open(&path).map_err(|e| format!("reopen: {e}"))?;
        let refused = file.set_len(0);
        let _ = seal::unseal(&file);
        let _ = fs::remove_file(&path);
        if after != before {
            return Err(format!("after umount and mount: {}", differences(&before, &after)));
        }
        match refused {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                Ok("sealed with the same map after umount/mount, and still enforced".into())
            }
            other => Err(format!("ftruncate after remount: {other:?}, expected ETXTBSY")),
        }
    })
}

/// umount and mount again with the same device and options.
pub fn remount(mount: &Path) -> Result<(), String> {
    remount_with(mount, |options| options.to_vec()).map(|_| ())
}

/// umount, and mount again on the same device with the options `change`
/// makes of the current ones. Returns the current ones, for putting them
/// back.
pub fn remount_with(mount: &Path, change: impl FnOnce(&[String]) -> Vec<String>) -> Result<Vec<String>, String> {
    let (dev, opts) = mounted(mount)?;
    let m = mount.to_string_lossy();
    let old: Vec<String> =
        opts.split(',').filter(|o| !matches!(*o, "rw" | "relatime" | "ro")).map(str::to_string).collect();
    let data = change(&old).join(",");
    let c = |s: &str| CString::new(s).map_err(|_| format!("NUL in {s:?}"));
    let (cdev, cdir, cdata, xfs) = (c(&dev)?, c(&m)?, c(&data)?, c("xfs")?);
    // SAFETY: valid C strings.
    unsafe {
        if libc::umount(cdir.as_ptr()) != 0 {
            return Err(format!("umount {m}: {}", errno_text(&io::Error::last_os_error())));
        }
        if libc::mount(cdev.as_ptr(), cdir.as_ptr(), xfs.as_ptr(), 0, cdata.as_ptr().cast()) != 0 {
            return Err(format!("mount {dev} on {m} ({data}): {}", errno_text(&io::Error::last_os_error())));
        }
    }
    Ok(old)
}
