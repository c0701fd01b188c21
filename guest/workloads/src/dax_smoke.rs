//! `dax-smoke`: is this a working fsdax + DAX XFS set-up at all? Every later
//! workload assumes what this one checks, on both kernel variants.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dax_seal_protocol::MOUNT_PREFIX;

use crate::calls::{errno_text, mounted, statx_attributes, Mapping, STATX_ATTR_DAX};
use crate::cases::Cases;
use crate::fixture::create_new;

const LEN: usize = 2 << 20;

pub fn run() -> ExitCode {
    let mount = format!("{MOUNT_PREFIX}0");
    // One file, removed at the end; a boot killed before that leaves it, and
    // the next run removes it.
    let dir = crate::workdir::fresh(Path::new(&mount), "dax-smoke").unwrap_or_else(|_| PathBuf::from(&mount));
    let path = dir.join("file");
    let mut t = Cases::new(5);
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
    let _ = fs::remove_dir_all(&dir);
    t.exit()
}

fn namespace_is_fsdax(mount: &str) -> Result<String, String> {
    let (dev, _) = mounted(Path::new(mount))?;
    let name = dev.trim_start_matches("/dev/");
    let sys = format!("/sys/block/{name}");
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

fn map_sync(file: &File) -> Result<(Mapping, String), String> {
    file.set_len(LEN as u64).map_err(|e| format!("ftruncate to {LEN}: {}", errno_text(&e)))?;
    let map = Mapping::shared_sync(file, LEN).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    Ok((map, format!("{LEN} bytes mapped")))
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
