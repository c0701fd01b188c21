//! The fstests root filesystem: Debian 12 made by mmdebstrap from the host's
//! own apt sources, with the project's xfsprogs (build/xfsprogs.rs: the seal,
//! and the features the guest's mkfs.xfs sets, which Debian 12's xfsprogs
//! 6.1 cannot check) installed over Debian's, and the user's fstests
//! checkout copied in (never into this repository) and built inside it,
//! packed into an ext4 image with `mkfs.ext4 -d` (no loop device, no mount).
//! Cached in `~/.cache/dax-seal/fstests/<key>.img`, keyed by the recipe, the
//! package list, the apt sources, the xfsprogs build and the checkout's
//! files.

use std::collections::BTreeSet;
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

/// The project's fstests cases for the seal, from the project root: files
/// laid out as in an fstests checkout (`common/seal`, `tests/<dir>/<number>`
/// with its `.out`), copied over the checkout in the root image before
/// fstests is built there. The checkout itself is never modified.
pub const CASES_DIR: &str = "tests/fstests";

/// The directories of [`CASES_DIR`] laid over the checkout (its
/// `series.toml`, for `cargo xtask submission`, is not).
pub const OVERLAID: [&str; 2] = ["common", "tests"];

/// Every file of the overlay, relative to [`CASES_DIR`], with its bytes,
/// in a stable order.
pub fn overlay_files() -> Result<Vec<(String, Vec<u8>)>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading {}", dir.display()))?;
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(base, &path, out)?;
            } else {
                let rel = path.strip_prefix(base).unwrap_or(&path).to_string_lossy().into_owned();
                let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                out.push((rel, bytes));
            }
        }
        Ok(())
    }
    let base = paths::project_root().join(CASES_DIR);
    let mut out = Vec::new();
    for dir in OVERLAID {
        walk(&base, &base.join(dir), &mut out)?;
    }
    Ok(out)
}

/// The project's cases as fstests names them (`generic/950`), each checked
/// to have its golden output.
pub fn project_cases() -> Result<Vec<String>> {
    let files = overlay_files()?;
    let names: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let mut cases = Vec::new();
    for name in &names {
        let Some(test) = name.strip_prefix("tests/") else { continue };
        let Some((_, number)) = test.split_once('/') else { continue };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if !names.contains(format!("{name}.out").as_str()) {
            bail!(
                "{CASES_DIR}/{name} has no {CASES_DIR}/{name}.out (fstests compares each test with its golden output)"
            );
        }
        cases.push(test.to_string());
    }
    Ok(cases)
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
    let taken: Vec<String> = overlay_files()?.into_iter().map(|(n, _)| n).filter(|n| src.join(n).exists()).collect();
    if !taken.is_empty() {
        bail!(
            "{} already has {}, which the project's fstests cases ({CASES_DIR}/) would replace in the root image; \
             renumber them there (or use a checkout without those files)",
            src.display(),
            taken.join(", ")
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

pub fn key(sources: &str, xfsprogs_key: &str, overlay: &[(String, Vec<u8>)], fstests_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("{RECIPE}\0packages {}\0users {}\0", PACKAGES.join(","), USERS.join(",")));
    h.update(format!("sources {}\0{sources}\0xfsprogs {xfsprogs_key}\0fstests {fstests_id}\0", sources.len()));
    for (name, bytes) in overlay {
        h.update(format!("overlay {name} {}\0", bytes.len()));
        h.update(bytes);
    }
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
    let key = key(&sources_text, &xfsprogs.key, &overlay_files()?, &kernel::tree_identity(src)?);
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
/// `xfsprogs`) over Debian's, then the checkout copied in with the
/// project's cases ([`CASES_DIR`]) over it and built, then the test users;
/// everything into `log`. A failure shows the log's tail.
fn debootstrap(src: &Path, xfsprogs: &Path, sources: Option<&Path>, tree: &Path, log: &Path) -> Result<()> {
    let overlay = format!("tar -C {} -cf - usr | tar -C \"$1\" -xf -", shell_quote(&xfsprogs.display().to_string()));
    let copy = format!(
        "mkdir -p \"$1/opt/xfstests\" && tar -C {} --exclude=.git -cf - . | tar -C \"$1/opt/xfstests\" -xf - \
         && tar -C {} -cf - {} | tar -C \"$1/opt/xfstests\" -xf -",
        shell_quote(&src.display().to_string()),
        shell_quote(&paths::project_root().join(CASES_DIR).display().to_string()),
        OVERLAID.join(" ")
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
        let o = vec![("tests/xfs/950".to_string(), b"a".to_vec())];
        let k = key("Types: deb\n", "x1", &o, "abc");
        assert_eq!(k, key("Types: deb\n", "x1", &o, "abc"));
        assert_ne!(k, key("Types: deb-src\n", "x1", &o, "abc"));
        assert_ne!(k, key("Types: deb\n", "x2", &o, "abc"));
        assert_ne!(k, key("Types: deb\n", "x1", &[("tests/xfs/950".to_string(), b"b".to_vec())], "abc"));
        assert_ne!(k, key("Types: deb\n", "x1", &o, "abd"));
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
        // A checkout that has a file of the project's cases is refused.
        fs::write(dir.path().join("common/seal"), "").unwrap();
        let e = validate_source(dir.path()).unwrap_err().to_string();
        assert!(e.contains("already has common/seal") && e.contains("renumber"), "{e}");
    }

    #[test]
    fn the_project_cases_each_have_their_golden_output() {
        let cases = project_cases().unwrap();
        assert!(cases.contains(&"generic/950".to_string()) && cases.contains(&"xfs/950".to_string()), "{cases:?}");
        for case in &cases {
            dax_seal_protocol::fstests::check_test(case).unwrap();
        }
        assert!(overlay_files().unwrap().iter().any(|(n, _)| n == "common/seal"));
    }

    #[test]
    fn paths_are_quoted_for_the_hook_shell() {
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }
}
