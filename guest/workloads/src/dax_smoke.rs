//! `dax-smoke`: is this a working fsdax + DAX XFS set-up at all? Every later
//! workload assumes what this one checks, on both kernel variants. On a
//! device with an asynchronous persistence domain (virtio-pmem) MAP_SYNC
//! must be refused, and the store goes through a plain shared mapping.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dax_seal_protocol::MOUNT_PREFIX;

use crate::calls::{errno_text, mounted, statx_attributes, Mapping, STATX_ATTR_DAX};
use crate::cases::Cases;
use crate::fixture::{create_new, mounted_disk};
use crate::seal;

const LEN: usize = 2 << 20;

pub fn run() -> ExitCode {
    let mount = format!("{MOUNT_PREFIX}0");
    // One file, removed at the end; a boot killed before that leaves it, and
    // the next run removes it.
    let dir = crate::workdir::fresh(Path::new(&mount), "dax-smoke").unwrap_or_else(|_| PathBuf::from(&mount));
    let path = dir.join("file");
    let mut t = Cases::new(6);
    t.check("namespace is fsdax", namespace_is_fsdax(&mount).map(|n| ((), n)));
    t.check("mount is dax=always", mount_options(&mount).map(|o| ((), o)));
    let file = t.check("new file reports STATX_ATTR_DAX", new_dax_file(&path));
    match file {
        None => {
            t.blocked("mmap MAP_SHARED_VALIDATE|MAP_SYNC", "file creation");
            t.blocked("store through the mapping is visible to read(2)", "file creation");
        }
        Some(file) => {
            let map = t.check("mmap MAP_SHARED_VALIDATE|MAP_SYNC", map_sync(&file));
            match map {
                None => t.blocked("store through the mapping is visible to read(2)", "mmap"),
                Some(mut map) => {
                    t.check("store through the mapping is visible to read(2)", store_then_read(&file, &mut map));
                }
            }
        }
    }
    const COW: &str = "write(2) to a reflinked block reaches a mapping of it";
    match cow_write_reaches_mapping(&dir) {
        Err(Cow::NoReflink(why)) => t.skip(COW, &why),
        Err(Cow::Failed(why)) => {
            t.check::<()>(COW, Err(why));
        }
        Ok(text) => {
            t.check(COW, Ok(((), text)));
        }
    }
    let _ = fs::remove_dir_all(&dir);
    t.exit()
}

enum Cow {
    NoReflink(String),
    Failed(String),
}

/// A DAX write to a shared block copies it and must tear down the mappings
/// of the old one, so that a mapping of the file sees what write(2) wrote.
/// Linux 7.3 reset the mapped folio without unmapping it (a WARNING in
/// dax_folio_put, and the mapping kept the old block); the 7.3 tree carries
/// the fix in patches/7.3/fixes/.
fn cow_write_reaches_mapping(dir: &Path) -> Result<String, Cow> {
    const LEN: usize = 64 << 10;
    let failed = |what: &str, e: std::io::Error| Cow::Failed(format!("{what}: {}", errno_text(&e)));
    let original = create_new(&dir.join("cow-original")).map_err(Cow::Failed)?;
    original.write_all_at(&[0x61; LEN], 0).map_err(|e| failed("pwrite", e))?;
    original.sync_all().map_err(|e| failed("fsync", e))?;
    let clone = create_new(&dir.join("cow-clone")).map_err(Cow::Failed)?;
    match seal::ficlone(&clone, &original) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            return Err(Cow::NoReflink(format!("FICLONE: {} (a filesystem without reflink)", errno_text(&e))))
        }
        r => r.map_err(|e| failed("FICLONE", e))?,
    }
    let map = Mapping::shared(&clone, LEN).map_err(|e| failed("mmap", e))?;
    // SAFETY: the first byte of a live LEN-byte mapping; volatile, since
    // write(2) changes what it shows.
    let first = || unsafe { std::ptr::read_volatile(map.as_ptr()) };
    let before = first();
    clone.write_all_at(&[0x62; 4096], 0).map_err(|e| failed("pwrite over the shared block", e))?;
    let after = first();
    if before != 0x61 || after != 0x62 {
        return Err(Cow::Failed(format!(
            "the mapping read {before:#x} before and {after:#x} after writing 0x62 over the shared block"
        )));
    }
    Ok("a read-only mapping of a clone saw the 0x62 written over its shared block".into())
}

fn namespace_is_fsdax(mount: &str) -> Result<String, String> {
    let (dev, sys, _) = mounted_disk(Path::new(mount))?;
    let sys = sys.display().to_string();
    let dax = fs::read_to_string(format!("{sys}/queue/dax")).map_err(|e| format!("{sys}/queue/dax: {e}"))?;
    if dax.trim() != "1" {
        return Err(format!("{dev} is not DAX-capable (queue/dax = {})", dax.trim()));
    }
    // fsdax: /sys/block/pmemN/device is a pfn device claiming the namespace,
    // and the namespace names it as holder (its mode then reads "memory").
    let read =
        |path: String| fs::read_to_string(&path).map(|s| s.trim().to_string()).map_err(|e| format!("{path}: {e}"));
    let pfn_dir = fs::canonicalize(format!("{sys}/device")).map_err(|e| format!("{sys}/device: {e}"))?;
    let pfn = pfn_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let devtype = read(format!("{sys}/device/devtype"))?;
    if devtype != "nd_pfn" {
        return Err(format!("{dev} sits on {pfn} ({devtype}), not on a pfn device: not fsdax"));
    }
    let ns = read(format!("{sys}/device/namespace"))?;
    let (mode, holder) =
        (read(format!("/sys/bus/nd/devices/{ns}/mode"))?, read(format!("/sys/bus/nd/devices/{ns}/holder"))?);
    if mode != "memory" || holder != pfn {
        return Err(format!("{ns} has mode {mode} and holder {holder:?}; fsdax needs mode memory held by {pfn}"));
    }
    Ok(format!("{dev}: {ns} claimed by {pfn} (mode memory = fsdax), queue/dax 1"))
}

fn mount_options(mount: &str) -> Result<String, String> {
    let (dev, opts) = mounted(Path::new(mount))?;
    if opts.split(',').any(|o| o == "dax=always") {
        Ok(format!("{dev} on {mount}: {opts}"))
    } else {
        Err(format!("{mount} is mounted without dax=always: {opts}"))
    }
}

fn new_dax_file(path: &Path) -> Result<(File, String), String> {
    let file = create_new(path)?;
    let (attrs, mask) = statx_attributes(path)?;
    if mask & STATX_ATTR_DAX == 0 {
        return Err(format!("statx attributes_mask {mask:#x} does not advertise STATX_ATTR_DAX"));
    }
    if attrs & STATX_ATTR_DAX == 0 {
        return Err(format!("stx_attributes {attrs:#x} lacks STATX_ATTR_DAX"));
    }
    Ok((file, format!("stx_attributes {attrs:#x}")))
}

/// MAP_SYNC where the device's persistence domain is synchronous; its
/// refusal (EOPNOTSUPP) where it is not, and then a plain shared mapping.
fn map_sync(file: &File) -> Result<(Mapping, String), String> {
    file.set_len(LEN as u64).map_err(|e| format!("ftruncate to {LEN}: {}", errno_text(&e)))?;
    let (map, how) = crate::fixture::shared_for_stores(file, LEN)?;
    Ok((map, format!("{LEN} bytes mapped {how}")))
}

fn store_then_read(file: &File, map: &mut Mapping) -> Result<((), String), String> {
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let offsets = [0, 4096 * 7, LEN - 4096];
    let bytes = map.as_mut_slice();
    for &off in &offsets {
        bytes[off..off + pattern.len()].copy_from_slice(&pattern);
    }
    let mut buf = vec![0u8; pattern.len()];
    for &off in &offsets {
        file.read_exact_at(&mut buf, off as u64).map_err(|e| format!("pread at {off}: {}", errno_text(&e)))?;
        if buf != pattern {
            let at = buf.iter().zip(&pattern).position(|(a, b)| a != b).unwrap_or(0);
            return Err(format!("pread at {off} differs from the stored bytes at +{at}"));
        }
    }
    Ok(((), format!("{} pages stored through the mapping read back", offsets.len())))
}
