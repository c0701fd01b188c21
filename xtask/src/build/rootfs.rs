//! The fstests root filesystem: Debian 12 made by mmdebstrap from the host's
//! own apt sources, with the project's xfsprogs (build/xfsprogs.rs: the seal,
//! and the features the guest's mkfs.xfs sets, which Debian 12's xfsprogs
//! 6.1 cannot check) installed over Debian's, and the user's fstests
//! checkout copied in (never into this repository) and built inside it,
//! packed into an ext4 image with `mkfs.ext4 -d` (no loop device, no mount).
//! Cached in `~/.cache/dax-seal/fstests/<key>.img`, keyed by the recipe, the
//! package list, the apt sources, the xfsprogs build and the checkout's
//! files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::build::{kernel, xfsprogs};
use crate::paths;

const RECIPE: &str =
    "dax-seal fstests root 2: mmdebstrap minbase bookworm, the project's xfsprogs over Debian's, make in chroot, \
     mkfs.ext4 -d";

/// What fstests needs at run time and to build in the image: its
/// interpreters and tools, the XFS and ext4 utilities, device-mapper,
/// quota, fio, and the headers of its helpers' libraries.
pub const PACKAGES: &[&str] = &[
    "bash",
    "perl",
    "gawk",
    "sed",
    "grep",
    "coreutils",
    "findutils",
    "util-linux",
    "procps",
    "kmod",
    "hostname",
    "psmisc",
    "bc",
    "acl",
    "attr",
    "xfsprogs",
    "xfslibs-dev",
    "e2fsprogs",
    "dmsetup",
    "quota",
    "fio",
    "uuid-runtime",
    "file",
    "make",
    "gcc",
    "libc6-dev",
    "autoconf",
    "automake",
    "libtool",
    "libtool-bin",
    "pkgconf",
    "libacl1-dev",
    "libattr1-dev",
    "libaio-dev",
    "libcap-dev",
    "liburing-dev",
    "uuid-dev",
    "libgdbm-dev",
    "libgdbm-compat-dev",
];

/// The users fstests' `_require_user` and `_require_group` look for.
const USERS: &[&str] = &["fsgqa", "fsgqa2", "123456-fsgqa"];

/// Free space left in the image for what `check` writes (results, logs).
const HEADROOM: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct Built {
    pub image: PathBuf,
    pub key: String,
}

/// Checks that `src` is an fstests checkout, with what to do if not.
pub fn validate_source(src: &Path) -> Result<()> {
    if !src.is_dir() {
        bail!(
            "fstests source {} is not a directory: give an fstests checkout \
             (git clone https://git.kernel.org/pub/scm/fs/xfs/xfstests-dev.git)",
            src.display()
        );
    }
    let missing: Vec<&str> =
        ["check", "common/rc", "tests/generic", "Makefile"].into_iter().filter(|f| !src.join(f).exists()).collect();
    if !missing.is_empty() {
        bail!(
            "{} is not an fstests checkout: it lacks {} (give the top directory of xfstests-dev)",
            src.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// The host's apt sources, which the image is made from: a deb822 file
/// or a sources.list, as mmdebstrap takes them.
fn apt_sources() -> Option<PathBuf> {
    ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0))
}

pub fn key(sources: &str, xfsprogs_key: &str, fstests_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("{RECIPE}\0packages {}\0users {}\0", PACKAGES.join(","), USERS.join(",")));
    h.update(format!("sources {}\0{sources}\0xfsprogs {xfsprogs_key}\0fstests {fstests_id}\0", sources.len()));
    paths::short_hash(h)
}

/// The image for the checkout `src`, built unless cached.
pub fn ensure(src: &Path, rebuild: bool) -> Result<Built> {
    validate_source(src)?;
    let sources = apt_sources();
    let sources_text = match &sources {
        Some(p) => fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => String::new(),
    };
    let xfsprogs = xfsprogs::build()?;
    let key = key(&sources_text, &xfsprogs.key, &kernel::tree_identity(src)?);
    let dir = paths::cache_dir()?.join("fstests");
    paths::ensure_dir(&dir)?;
    let image = dir.join(format!("root-{key}.img"));
    let _lock =
        paths::lock(&dir.join(format!("root-{key}.lock")), &format!("the fstests root image {}", image.display()))?;
    if image.exists() && !rebuild {
        eprintln!("[fstests] root image {} (cached)", image.display());
        return Ok(Built { image, key });
    }
    let started = Instant::now();
    let work = dir.join(format!("work-{key}"));
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    paths::ensure_dir(&work)?;
    let tree = work.join("root");
    let log = work.join("build.log");
    eprintln!(
        "[fstests] making the root image with mmdebstrap ({} packages) and building fstests in it; log {}",
        PACKAGES.len(),
        log.display()
    );
    debootstrap(src, &xfsprogs.root, sources.as_deref(), &tree, &log)?;
    let used = du(&tree)?;
    let size_kib = (used + used / 4 + HEADROOM) >> 10;
    let partial = dir.join(format!("root-{key}.img.partial"));
    let _ = fs::remove_file(&partial);
    let output = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "fstests-root", "-d"])
        .arg(&tree)
        .arg(&partial)
        .arg(format!("{size_kib}k"))
        .output()
        .context("running mkfs.ext4 (install e2fsprogs)")?;
    if !output.status.success() {
        bail!("mkfs.ext4 -d {} failed: {}", tree.display(), String::from_utf8_lossy(&output.stderr).trim());
    }
    fs::rename(&partial, &image).with_context(|| format!("renaming {} into place", partial.display()))?;
    fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    eprintln!(
        "[fstests] root image {} ({} MiB of files) in {:.0} s",
        image.display(),
        used >> 20,
        started.elapsed().as_secs_f64()
    );
    Ok(Built { image, key })
}

/// mmdebstrap into `tree`, then the project's xfsprogs (the install tree
/// `xfsprogs`) over Debian's, then the checkout copied in and built, then
/// the test users; everything into `log`. A failure shows the log's tail.
fn debootstrap(src: &Path, xfsprogs: &Path, sources: Option<&Path>, tree: &Path, log: &Path) -> Result<()> {
    let overlay = format!("tar -C {} -cf - usr | tar -C \"$1\" -xf -", shell_quote(&xfsprogs.display().to_string()));
    let copy = format!(
        "mkdir -p \"$1/opt/xfstests\" && tar -C {} --exclude=.git -cf - . | tar -C \"$1/opt/xfstests\" -xf -",
        shell_quote(&src.display().to_string())
    );
    let build = "chroot \"$1\" make -C /opt/xfstests -j\"$(nproc)\"".to_string();
    let users = USERS.iter().map(|u| format!("chroot \"$1\" useradd -m {u}")).collect::<Vec<_>>().join(" && ");
    let mut command = Command::new("mmdebstrap");
    command
        .args(["--mode=root", "--variant=minbase", "--format=directory"])
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(format!("--customize-hook={overlay}"))
        .arg(format!("--customize-hook={copy}"))
        .arg(format!("--customize-hook={build}"))
        .arg(format!("--customize-hook={users}"))
        .arg("bookworm")
        .arg(tree);
    if let Some(s) = sources {
        command.arg(s);
    }
    let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    command.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
    let status = command.status().context("running mmdebstrap (install the mmdebstrap package)")?;
    if !status.success() {
        let text = fs::read_to_string(log).unwrap_or_default();
        bail!(
            "making the fstests root image failed ({status}); the last lines of {}:\n{}",
            log.display(),
            kernel::tail(&text, 30)
        );
    }
    Ok(())
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Bytes the files under `dir` occupy.
fn du(dir: &Path) -> Result<u64> {
    let out = Command::new("du").args(["-sb"]).arg(dir).output().context("running du")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("du -sb {}: unexpected output {text:?}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_the_sources_and_the_checkout() {
        let k = key("Types: deb\n", "x1", "abc");
        assert_eq!(k, key("Types: deb\n", "x1", "abc"));
        assert_ne!(k, key("Types: deb-src\n", "x1", "abc"));
        assert_ne!(k, key("Types: deb\n", "x2", "abc"));
        assert_ne!(k, key("Types: deb\n", "x1", "abd"));
    }

    #[test]
    fn a_directory_that_is_not_fstests_is_refused_with_what_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let e = validate_source(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not an fstests checkout") && e.contains("check, common/rc"), "{e}");
        let e = validate_source(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(e.contains("not a directory") && e.contains("xfstests-dev"), "{e}");
        fs::write(dir.path().join("check"), "").unwrap();
        fs::create_dir_all(dir.path().join("common")).unwrap();
        fs::write(dir.path().join("common/rc"), "").unwrap();
        fs::create_dir_all(dir.path().join("tests/generic")).unwrap();
        fs::write(dir.path().join("Makefile"), "").unwrap();
        validate_source(dir.path()).unwrap();
    }

    #[test]
    fn paths_are_quoted_for_the_hook_shell() {
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }
}
