//! Work directories on the NVDIMMs. The images outlive boots, and a boot
//! can end at any moment (a deadline, a crash scenario, a user's Ctrl-C), so
//! a workload must start clean whatever an earlier boot left: sealed files,
//! a swapfile, a directory of the same name. Each workload's directory gets a
//! name that never repeats (this boot's id and the PID) and a mark saying
//! which run made it; at start, every directory an earlier boot left for the
//! same workload is unsealed, swapped off and removed, and the workload says
//! whose it was. [`fresh`] makes such a directory on a given mount,
//! [`fresh_page_cache`] on the NVDIMM mounted `dax=never`.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use dax_seal_protocol::{RunConfig, MOUNT_PREFIX};

use crate::calls::mounted;
use crate::seal;
use crate::swap::swapoff;

/// The file in each work directory that names who made it.
const MARK: &str = ".made-by";

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().chars().filter(char::is_ascii_hexdigit).take(8).collect())
        .unwrap_or_default()
}

/// Undoes whatever could keep a leftover's files alive: an active
/// swapfile, a seal.
pub fn release(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => release(&path),
            Ok(t) if t.is_file() => {
                let _ = swapoff(&path);
                if let Ok(f) = OpenOptions::new().write(true).open(&path) {
                    let _ = seal::unseal(&f);
                }
            }
            _ => {}
        }
    }
}

/// Removes what earlier boots left of `name`'s directories under `mount`;
/// one line per leftover, naming who made it.
pub fn clean(mount: &Path, name: &str) -> Vec<String> {
    let prefix = format!("{name}.");
    let Ok(entries) = fs::read_dir(mount) else { return Vec::new() };
    let mut notes = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if !file_name.starts_with(&prefix) {
            continue;
        }
        let path = entry.path();
        let made_by = fs::read_to_string(path.join(MARK))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "an older harness (no mark)".into());
        release(&path);
        let removed = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        notes.push(match removed {
            Ok(()) => format!("removed {} left by {made_by}", path.display()),
            Err(e) => format!("could not remove {} left by {made_by}: {e}", path.display()),
        });
    }
    notes
}

/// A new, empty directory for `name` under `mount`, after [`clean`], whose
/// notes go out as KTAP diagnostics (the next case shows them).
pub fn fresh(mount: &Path, name: &str) -> Result<PathBuf, String> {
    for note in clean(mount, name) {
        println!("# {note}");
    }
    let boot = boot_id();
    let dir = mount.join(format!("{name}.{boot}-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let config = RunConfig::read().unwrap_or_default();
    let mark = format!(
        "{} (workload {name}, kernel {}, boot {})",
        if config.run.is_empty() { "an unnamed run" } else { &config.run },
        config.kernel,
        boot
    );
    fs::write(dir.join(MARK), mark).map_err(|e| format!("writing {}: {e}", dir.join(MARK).display()))?;
    Ok(dir)
}

/// A fresh directory on the first NVDIMM mounted with dax=never, made for
/// `name` (see [`fresh`]).
pub fn fresh_page_cache(name: &str) -> Result<PathBuf, String> {
    fresh(&page_cache_mount()?, name)
}

/// The first NVDIMM mounted with dax=never.
pub fn page_cache_mount() -> Result<PathBuf, String> {
    (1..8)
        .map(|i| PathBuf::from(format!("{MOUNT_PREFIX}{i}")))
        .find(|m| mounted(m).is_ok_and(|(_, opts)| opts.split(',').any(|o| o == "dax=never")))
        .ok_or_else(|| {
            "no NVDIMM is mounted dax=never: boot with two NVDIMMs and --dax always,never (the defaults)".to_string()
        })
}
