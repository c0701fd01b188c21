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
//!
//! `mod.rs` holds the table, the runner and the space and remount cases;
//! `ops.rs` the operations, `rules.rs` the seal's own rules, `pins.rs`
//! long-term pins, `page_cache.rs` the rows on the `dax=never` NVDIMM
//! (sealed swapfile, page-cache pins). What other workloads share with it
//! (files, the seal probe, remount, the tmpfs file) is in
//! [`crate::fixture`].

use std::alloc::{self, Layout};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use dax_seal_protocol::MOUNT_PREFIX;

use crate::calls::{errno_text, free_bytes, statx_attributes, Mapping, STATX_ATTR_DAX};
use crate::cases::{when_sealable, Attempt, Cases, Expect};
use crate::fixture::{
    create, describe, is_sealed, open_direct, pattern, pins_settled, probe, probe_online_repair, remount,
    remove_sealed, TmpfsFile,
};
use crate::seal::{self, Extent};

mod ops;
mod page_cache;
mod pins;
mod rules;

use ops::*;
use pins::*;
use rules::*;

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

type Special = fn(&Env) -> Attempt;

/// The cases after the table, each exactly one KTAP result.
const SPECIAL: &[(&str, Special)] = &[
    ("seal-normalises-hole-unwritten-shared", case_normalise),
    ("seal-with-extent-size-hint-straddling-eof", case_extsize_straddling_eof),
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
    let mut t = Cases::new(ROWS.len() * 2 + SPECIAL.len());
    let made = crate::workdir::fresh(&mount, "seal-conformance");
    let dir = made.clone().unwrap_or_default();
    if let Err(e) = made {
        for row in ROWS {
            t.blocked(&format!("{}-sealed", row.name), &e);
            t.blocked(&format!("{}-control", row.name), "mkdir");
        }
        for (name, _) in SPECIAL {
            t.blocked(name, "mkdir");
        }
        return t.exit();
    }
    let env = Env {
        mount,
        dir: dir.clone(),
        page_cache: crate::workdir::fresh_page_cache("seal-conformance"),
        has_seal: probe(&dir),
    };
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
    fn sealed(&self, f: impl FnOnce() -> Check) -> Attempt {
        when_sealable(&self.has_seal, f)
    }
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

fn case_swap_sealed(env: &Env) -> Attempt {
    on_page_cache(env, true, page_cache::sealed_swapfile)
}

fn case_swap_control(env: &Env) -> Attempt {
    on_page_cache(env, false, page_cache::swapfile_control)
}

fn case_page_cache_pin_sealed(env: &Env) -> Attempt {
    on_page_cache(env, true, |dir| page_cache::page_cache_pin(dir, true))
}

fn case_page_cache_pin_control(env: &Env) -> Attempt {
    on_page_cache(env, false, |dir| page_cache::page_cache_pin(dir, false))
}

fn case_enospc(env: &Env) -> Attempt {
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

fn case_remount(env: &Env) -> Attempt {
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
