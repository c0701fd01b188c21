//! `seal-foreign-repair`: offline repair of seals that a kernel without the
//! series broke (docs/seal.md, "Mixing kernels"), run where
//! `seal-foreign-verify` would run, after `seal-foreign-change`.
//!
//! The patched kernel is the oracle: every sealed file on the NVDIMM
//! mounts (FS_XFLAG_IOMAP_IMMUTABLE on disk) is either whole (statx still
//! reports STATX_ATTR_IOMAP_IMMUTABLE) or broken (it does not). With each
//! filesystem unmounted, the guest's xfs_repair (xfsprogs with the seal)
//! must then name exactly the broken seals under `-n` without changing
//! anything, clear exactly them when it repairs, and find nothing on a
//! second `-n`. Mounted again, every whole seal holds, every cleared one
//! is gone without the kernel calling it broken again and can be sealed
//! anew, and no file's data changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::hash::{DefaultHasher, Hasher};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dax_seal_protocol::MOUNT_PREFIX;

use crate::calls::{errno_text, mounted};
use crate::cases::Cases;
use crate::fixture::{broken_seal_reports, seal_views, while_unmounted, xfs_repair, Repair};
use crate::seal;

/// A sealed file as the kernel and the disk see it.
#[derive(Debug, Clone)]
struct Sealed {
    path: PathBuf,
    ino: u64,
    /// statx still reports the seal: the kernel calls the map whole.
    holds: bool,
    /// A hash of every byte.
    data: u64,
}

/// A sealed file as repair names it: its mount and inode number.
type Seal = (PathBuf, u64);

/// The xfs_repair calls on each filesystem, in order: -n, the repair, -n.
const CALLS: [&[&str]; 3] = [&["-n"], &[], &["-n"]];

/// What each of [`CALLS`] did, per mount.
type Repaired = BTreeMap<PathBuf, Vec<Repair>>;

pub fn run() -> ExitCode {
    let mut t = Cases::new(7);
    let Some(before) = t.check("kernel-finds-broken-seals", scan_all()) else {
        for name in [
            "repair-n-names-exactly-the-broken-seals",
            "repair-clears-exactly-them",
            "repair-n-clean-afterwards",
            "whole-seals-kept",
            "cleared-seals-gone-and-sealable-again",
            "data-unchanged",
        ] {
            t.blocked(name, "kernel-finds-broken-seals");
        }
        return t.exit();
    };
    let repaired = repair_all(&before);
    // Inode numbers repeat across filesystems: a seal is its mount and inode.
    let broken: BTreeSet<Seal> = before
        .iter()
        .flat_map(|(mount, sealed)| sealed.iter().filter(|s| !s.holds).map(move |s| (mount.clone(), s.ino)))
        .collect();
    // The seals call `step` named, on every mount.
    let names = |step: usize| -> Result<BTreeMap<Seal, String>, String> {
        let r = repaired.as_ref().map_err(Clone::clone)?;
        Ok(r.iter()
            .flat_map(|(mount, r)| r[step].named.iter().map(move |(ino, why)| ((mount.clone(), *ino), why.clone())))
            .collect())
    };
    t.check(
        "repair-n-names-exactly-the-broken-seals",
        names(0).and_then(|named| {
            statuses(&repaired, 0, 1)?;
            same_set(&before, &broken, &named, "xfs_repair -n would clear")
        }),
    );
    t.check(
        "repair-clears-exactly-them",
        names(1).and_then(|named| {
            statuses(&repaired, 1, 0)?;
            same_set(&before, &broken, &named, "xfs_repair cleared")
        }),
    );
    t.check(
        "repair-n-clean-afterwards",
        names(2).and_then(|named| {
            statuses(&repaired, 2, 0)?;
            if named.is_empty() {
                Ok(((), "a second xfs_repair -n names no seal and exits 0".into()))
            } else {
                Err(format!("a second xfs_repair -n still names seals: {named:?}"))
            }
        }),
    );
    let all: Vec<&Sealed> = before.values().flatten().collect();
    t.check("whole-seals-kept", whole_kept(&all));
    t.check("cleared-seals-gone-and-sealable-again", cleared_gone(&all));
    t.check("data-unchanged", data_unchanged(&all));
    t.exit()
}

/// The NVDIMM mounts and their sealed files; fails when the kernel calls
/// no seal broken, since there would be nothing to repair.
fn scan_all() -> Result<(BTreeMap<PathBuf, Vec<Sealed>>, String), String> {
    let mut all = BTreeMap::new();
    for mount in (0..8).map(|i| PathBuf::from(format!("{MOUNT_PREFIX}{i}"))).filter(|m| mounted(m).is_ok()) {
        let mut found = Vec::new();
        scan(&mount, &mut found)?;
        all.insert(mount, found);
    }
    let list = |holds: bool| -> Vec<String> {
        all.values().flatten().filter(|s| s.holds == holds).map(|s| s.path.display().to_string()).collect()
    };
    let (whole, broken) = (list(true), list(false));
    if broken.is_empty() {
        return Err(format!(
            "the kernel calls no seal on these images broken ({} whole); seal-foreign-repair needs the images \
             seal-foreign-change leaves",
            whole.len()
        ));
    }
    Ok((all, format!("broken: {}; whole: {}", broken.join(", "), whole.join(", "))))
}

/// Every regular file under `dir` whose on-disk flag is set.
fn scan(dir: &Path, found: &mut Vec<Sealed>) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("stat {}: {e}", path.display()))?;
        if meta.is_dir() {
            scan(&path, found)?;
        } else if meta.is_file() {
            let (holds, on_disk) = seal_views(&path)?;
            if on_disk {
                found.push(Sealed { data: hash(&path)?, path, ino: meta.ino(), holds });
            }
        }
    }
    Ok(())
}

fn hash(path: &Path) -> Result<u64, String> {
    let mut file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut h = DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("read {}: {e}", path.display()))?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.write(&buf[..n]);
    }
}

/// xfs_repair -n, xfs_repair, xfs_repair -n on each filesystem, unmounted.
fn repair_all(before: &BTreeMap<PathBuf, Vec<Sealed>>) -> Result<Repaired, String> {
    let mut out = BTreeMap::new();
    for mount in before.keys() {
        let calls = while_unmounted(mount, |dev| CALLS.iter().map(|args| xfs_repair(dev, args)).collect())?;
        out.insert(mount.clone(), calls);
    }
    Ok(out)
}

/// Fails unless each xfs_repair call number `step` exited with `want`.
fn statuses(repaired: &Result<Repaired, String>, step: usize, want: i32) -> Result<(), String> {
    for (mount, r) in repaired.as_ref().map_err(Clone::clone)? {
        if r[step].status != Some(want) {
            return Err(format!(
                "xfs_repair call {} on {} exited {:?}, expected {want}",
                step + 1,
                mount.display(),
                r[step].status
            ));
        }
    }
    Ok(())
}

/// Fails unless `named` holds exactly the inodes of `broken`.
fn same_set(
    before: &BTreeMap<PathBuf, Vec<Sealed>>,
    broken: &BTreeSet<Seal>,
    named: &BTreeMap<Seal, String>,
    what: &str,
) -> Result<((), String), String> {
    let path_of = |(mount, ino): &Seal| {
        before
            .get(mount)
            .and_then(|sealed| sealed.iter().find(|s| s.ino == *ino))
            .map_or(format!("inode {ino} of {}", mount.display()), |s| s.path.display().to_string())
    };
    let got: BTreeSet<Seal> = named.keys().cloned().collect();
    if got != *broken {
        let missed: Vec<String> = broken.difference(&got).map(path_of).collect();
        let extra: Vec<String> = got.difference(broken).map(path_of).collect();
        return Err(format!("{what} the wrong seals: missed {missed:?}, named besides {extra:?}"));
    }
    let lines: Vec<String> = named.iter().map(|(ino, why)| format!("{}: {why}", path_of(ino))).collect();
    Ok(((), format!("{what} {} seals: {}", lines.len(), lines.join("; "))))
}

fn whole_kept(all: &[&Sealed]) -> Result<((), String), String> {
    let whole: Vec<&&Sealed> = all.iter().filter(|s| s.holds).collect();
    for s in &whole {
        let (holds, on_disk) = seal_views(&s.path)?;
        if !holds || !on_disk {
            return Err(format!(
                "{} was whole, yet after the repair statx sealed {holds}, FSGETXATTR sealed {on_disk}",
                s.path.display()
            ));
        }
    }
    Ok(((), format!("{} whole seals still hold", whole.len())))
}

/// The cleared seals: off on disk, not reported again by the kernel, and
/// SEAL makes each whole again (filling holes, unsharing).
fn cleared_gone(all: &[&Sealed]) -> Result<((), String), String> {
    let broken: Vec<&&Sealed> = all.iter().filter(|s| !s.holds).collect();
    for s in &broken {
        let reports = broken_seal_reports(s.ino)?;
        let (holds, on_disk) = seal_views(&s.path)?;
        if holds || on_disk {
            return Err(format!(
                "{} after the repair: statx sealed {holds}, FSGETXATTR sealed {on_disk}",
                s.path.display()
            ));
        }
        if broken_seal_reports(s.ino)? != reports {
            return Err(format!("the kernel still calls the seal of {} broken after the repair", s.path.display()));
        }
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&s.path)
            .map_err(|e| format!("open {}: {e}", s.path.display()))?;
        seal::seal(&file).map_err(|e| format!("SEAL {} after the repair: {}", s.path.display(), errno_text(&e)))?;
        if !seal_views(&s.path)?.0 {
            return Err(format!("{}: SEAL returned, but statx does not report the seal", s.path.display()));
        }
    }
    Ok(((), format!("{} cleared seals gone; each sealed again", broken.len())))
}

fn data_unchanged(all: &[&Sealed]) -> Result<((), String), String> {
    for s in all {
        if hash(&s.path)? != s.data {
            return Err(format!("{} reads differently after the repair", s.path.display()));
        }
    }
    Ok(((), format!("{} files read as before", all.len())))
}
