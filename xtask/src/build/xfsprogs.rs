//! xfsprogs that know the seal: Debian's source package
//! (`patches/xfsprogs/source.toml`), the project's series
//! (`patches/xfsprogs/series`) on top, configured without shared libraries,
//! gettext, editline or xfs_scrub and linked static, then installed
//! (`make install DESTDIR=`) into a tree the guest initramfs and the
//! fstests root image take their programs from.
//!
//! Cached in `~/.cache/dax-seal/xfsprogs/<key>/root/`, keyed by the recipe,
//! the source package's version and the series' bytes, so it is built once
//! (about a minute) and again only when one of them changes.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use crate::build::{initramfs, kernel, trees};
use crate::paths;

/// The series and its source table, from the project root.
pub const DIR: &str = "patches/xfsprogs";

/// Changes to how the tree is built change the key.
const RECIPE: &str = "dax-seal xfsprogs 1: dpkg-source -x, patch -p1, configure --prefix=/usr --disable-shared \
     --enable-static --enable-gettext=no --enable-editline=no --enable-scrub=no, make LDFLAGS=-all-static, make \
     install DESTDIR, strip usr/sbin";

/// The programs the guest runs, relative to the install root; each must be
/// linked static.
pub const PROGRAMS: &[&str] = &["usr/sbin/mkfs.xfs", "usr/sbin/xfs_io", "usr/sbin/xfs_repair", "usr/sbin/xfs_db"];

/// A built, installed xfsprogs.
#[derive(Debug, Clone)]
pub struct Built {
    /// The `make install` tree: usr/sbin/mkfs.xfs and the rest.
    pub root: PathBuf,
    pub key: String,
    /// The Debian source package version it was built from.
    pub version: String,
}

pub fn cmd() -> Result<()> {
    let built = build()?;
    println!("xfsprogs {} with the seal: {} (key {})", built.version, built.root.display(), built.key);
    Ok(())
}

/// Builds (or finds) the patched xfsprogs.
pub fn build() -> Result<Built> {
    let dir = paths::project_root().join(DIR);
    let source = trees::read_source(&dir.join("source.toml"))?;
    let series = kernel::read_series(&dir)?;
    let (src, version) = trees::fetch_source_package(&source.package, &source.suite, source.mirror())?;
    if version != source.version {
        eprintln!(
            "[xfsprogs] the series was made against {} {}; the cached source is {version}",
            source.package, source.version
        );
    }
    let key = key(&version, &series);
    let cache = paths::cache_dir()?.join("xfsprogs");
    let out = cache.join(&key);
    let root = out.join("root");
    let built = Built { root: root.clone(), key: key.clone(), version: version.clone() };
    if PROGRAMS.iter().all(|p| root.join(p).is_file()) {
        return Ok(built);
    }
    let _lock = paths::lock(&cache.join(format!("{key}.lock")), "the xfsprogs build")?;
    if PROGRAMS.iter().all(|p| root.join(p).is_file()) {
        return Ok(built);
    }
    let started = Instant::now();
    eprintln!("[xfsprogs] building {version} with {} patches (key {key})", series.len());
    let work = paths::cache_dir()?.join("work").join(format!("xfsprogs-{key}"));
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    paths::ensure_dir(&work)?;
    let tree = work.join("src");
    let sh = Shell::new()?;
    cmd!(sh, "cp -a {src} {tree}").quiet().run().with_context(|| format!("copying {}", src.display()))?;
    for (name, _) in &series {
        kernel::apply_patch(&sh, &tree, &dir.join(name))?;
    }
    let staged = work.join("root");
    compile(&tree, &staged, &work.join("build.log"))?;
    strip(&staged.join("usr/sbin"))?;
    for p in PROGRAMS {
        let path = staged.join(p);
        let data = fs::read(&path).with_context(|| format!("the xfsprogs build installed no {p}"))?;
        if initramfs::is_dynamic(&data) {
            bail!("{} is dynamically linked; the xfsprogs recipe must link it static", path.display());
        }
    }
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    paths::ensure_dir(&out)?;
    fs::rename(&staged, &root).with_context(|| format!("moving {} into place", staged.display()))?;
    let _ = fs::remove_dir_all(&work);
    eprintln!("[xfsprogs] built in {}s", started.elapsed().as_secs());
    Ok(built)
}

/// Strips the programs in `dir` (a third of their size is debug
/// information, and every boot unpacks what the initramfs carries).
fn strip(dir: &Path) -> Result<()> {
    let sh = Shell::new()?;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let mut head = [0u8; 4];
        let is_elf = fs::File::open(&path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)).is_ok()
            && &head == b"\x7fELF";
        if is_elf {
            cmd!(sh, "strip {path}").quiet().run().with_context(|| format!("strip {}", path.display()))?;
        }
    }
    Ok(())
}

fn key(version: &str, series: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    h.update(RECIPE);
    h.update(version);
    for (name, bytes) in series {
        h.update(name);
        h.update(bytes);
    }
    paths::short_hash(h)
}

/// configure, make and make install, each logged to `log`; a failure names
/// the step and shows the log's last lines.
fn compile(tree: &Path, staged: &Path, log: &Path) -> Result<()> {
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string();
    let destdir = format!("DESTDIR={}", staged.display());
    let steps: [(&str, Vec<String>); 3] = [
        (
            "./configure",
            [
                "--prefix=/usr",
                "--disable-shared",
                "--enable-static",
                "--enable-gettext=no",
                "--enable-editline=no",
                "--enable-scrub=no",
            ]
            .map(String::from)
            .to_vec(),
        ),
        ("make", vec![format!("-j{jobs}"), "LDFLAGS=-all-static".into()]),
        ("make", vec!["install".into(), destdir]),
    ];
    let mut text = String::new();
    for (program, args) in steps {
        let out = std::process::Command::new(program)
            .args(&args)
            .current_dir(tree)
            .output()
            .with_context(|| format!("cannot run {program} in {}", tree.display()))?;
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        fs::write(log, &text).with_context(|| format!("writing {}", log.display()))?;
        if !out.status.success() {
            bail!(
                "xfsprogs build: {program} {} failed ({}). Last lines of {}:\n{}\n\
                 Install what it names (cargo xtask deps), or fix the patch it points at.",
                args.join(" "),
                out.status,
                log.display(),
                kernel::tail(&text, 30)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_source_table_and_series_read() {
        let dir = paths::project_root().join(DIR);
        let source = trees::read_source(&dir.join("source.toml")).unwrap();
        assert_eq!(source.package, "xfsprogs");
        let series = kernel::read_series(&dir).unwrap();
        assert!(series.len() >= 4, "{series:?}");
        for (name, bytes) in &series {
            let text = String::from_utf8_lossy(bytes);
            assert!(text.contains("Signed-off-by: "), "{name} has no Signed-off-by");
        }
    }

    #[test]
    fn the_key_follows_the_version_and_every_patch_byte() {
        let series = vec![("0001-a.patch".to_string(), b"x".to_vec())];
        let base = key("6.13.0-2", &series);
        assert_ne!(base, key("6.13.0-3", &series));
        assert_ne!(base, key("6.13.0-2", &[("0001-a.patch".to_string(), b"y".to_vec())]));
        assert_eq!(base, key("6.13.0-2", &series));
    }
}
