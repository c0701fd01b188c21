//! Where things live: the project checkout, images/ (per-checkout outputs) and
//! the build cache outside the checkout (shared by every clone and by CI).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Root of the checkout (the workspace that holds xtask/).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// images/ of the checkout, or `$DAX_SEAL_IMAGES` (the VM tests use their own).
pub fn images_dir() -> PathBuf {
    std::env::var_os("DAX_SEAL_IMAGES").map(PathBuf::from).unwrap_or_else(|| project_root().join("images"))
}

/// `$DAX_SEAL_CACHE`, else `$XDG_CACHE_HOME/dax-seal`, else `~/.cache/dax-seal`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DAX_SEAL_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("dax-seal"));
    }
    let home = std::env::var_os("HOME").context("neither DAX_SEAL_CACHE, XDG_CACHE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/dax-seal"))
}

/// Creates `dir` and says which path failed if it cannot.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))
}

/// Writes a file atomically (temporary file in the same directory, then rename),
/// so an interrupted run never leaves a half-written cache entry.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().context("path has no parent")?;
    ensure_dir(dir)?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, contents).with_context(|| format!("writing {}", path.display()))?;
    // tempfile creates 0600; outputs are meant to be read by others (CI artifacts).
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Hex SHA-256 of some bytes, shortened for use in file names.
pub fn short_hash(hasher: sha2::Sha256) -> String {
    use sha2::Digest;
    hasher.finalize().iter().take(10).map(|b| format!("{b:02x}")).collect()
}

/// Holds an exclusive lock on a file for as long as it lives.
pub struct Lock(#[allow(dead_code)] fs::File);

/// Takes the lock at `path` for `what`. When another process holds it,
/// says who and waits: two runs on one checkout take turns instead of
/// writing the same images or work tree at once.
pub fn lock(path: &Path, what: &str) -> Result<Lock> {
    use std::io::{Seek, Write};
    use std::os::fd::AsRawFd;
    ensure_dir(path.parent().context("lock path has no parent")?)?;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot create lock {}", path.display()))?;
    // SAFETY: flock on a valid fd.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = fs::read_to_string(path).unwrap_or_default();
        eprintln!(
            "[lock] waiting: {what} is in use by another xtask ({}); lock {}",
            holder.trim().strip_prefix("pid ").map_or("pid unknown".to_string(), |p| format!("pid {p}")),
            path.display()
        );
        // SAFETY: flock on a valid fd; blocks until the lock is ours.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("cannot lock {}: {}", path.display(), std::io::Error::last_os_error());
        }
    }
    let _ = f.set_len(0).and_then(|()| f.rewind()).and_then(|()| write!(f, "pid {}", std::process::id()));
    Ok(Lock(f))
}

/// "20261121-195512" (UTC) from the system clock.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A new images/<kind>/<id>/ and the `latest` link beside it.
pub fn new_output_dir(kind: &str) -> Result<(String, PathBuf)> {
    let runs = images_dir().join(kind);
    ensure_dir(&runs)?;
    let base = timestamp();
    let (id, dir) = (1..)
        .map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") })
        .map(|id| (id.clone(), runs.join(&id)))
        .find(|(_, d)| !d.exists())
        .context("no free run directory name")?;
    ensure_dir(&dir)?;
    let tmp = runs.join(format!(".latest-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&id, &tmp).with_context(|| format!("creating images/{kind}/latest"))?;
    std::fs::rename(&tmp, runs.join("latest")).with_context(|| format!("updating images/{kind}/latest"))?;
    Ok((id, dir))
}
