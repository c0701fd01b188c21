//! The kernel trees as data (`kernel-config/trees.toml`): each tree's name,
//! the Debian package its source comes from and the suite that carries it,
//! its series directory and its own config fragments. The first tree is
//! the default.
//!
//! A tree's tarball is `/usr/src/<package>.tar.xz` when the package is
//! installed on the host; otherwise the package is downloaded into the
//! build cache (`debs/<package>/`) with `apt-get download` against a
//! private apt state (`apt/<suite>/`: its own sources list, lists and
//! status), checked against the SHA256 the suite's signed index gives, and
//! unpacked with `dpkg-deb`. The host's apt configuration is never changed
//! and nothing is installed into the system.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use crate::paths;

/// Where the table lives, from the project root.
pub const TABLE: &str = "kernel-config/trees.toml";
/// The Debian mirror private apt states use.
pub const MIRROR: &str = "http://deb.debian.org/debian";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TreesFile {
    tree: Vec<Tree>,
}

/// One kernel tree.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// `MAJOR.MINOR`, the release the tree is.
    pub name: String,
    /// The Debian binary package holding `/usr/src/<package>.tar.xz`.
    pub package: String,
    /// The Debian suite that carries the package.
    pub suite: String,
    /// The archive that serves the suite (default the Debian mirror,
    /// http://deb.debian.org/debian; a security suite is served by
    /// http://deb.debian.org/debian-security).
    #[serde(default)]
    pub mirror: Option<String>,
    /// The tree's patch series (`series` plus patch files), relative to
    /// the project root.
    pub series: String,
    /// A directory of kernel-config/ whose fragments apply to this tree
    /// only, on top of the shared ones.
    #[serde(default)]
    pub fragments: Option<String>,
}

/// Every tree of the project's table, the default first.
pub fn load() -> Result<Vec<Tree>> {
    let path = paths::project_root().join(TABLE);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("{} is not a valid tree table", path.display()))
}

pub fn parse(text: &str) -> Result<Vec<Tree>> {
    let file: TreesFile = toml::from_str(text)?;
    if file.tree.is_empty() {
        bail!("it names no [[tree]]");
    }
    for (i, t) in file.tree.iter().enumerate() {
        if version(&t.name).is_none() {
            bail!("tree {:?}: a name is MAJOR.MINOR, like 6.12", t.name);
        }
        if file.tree[..i].iter().any(|o| o.name == t.name) {
            bail!("tree {:?} is named twice", t.name);
        }
        let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-.+".contains(c));
        if !word(&t.package) || !word(&t.suite) {
            bail!("tree {}: package {:?} and suite {:?} must be Debian names", t.name, t.package, t.suite);
        }
        if let Some(m) = &t.mirror {
            let ok = (m.starts_with("http://") || m.starts_with("https://")) && !m.contains(char::is_whitespace);
            if !ok {
                bail!("tree {}: mirror {m:?} must be an http:// or https:// address", t.name);
            }
        }
        for dir in std::iter::once(&t.series).chain(&t.fragments) {
            if dir.is_empty() || dir.starts_with('/') || dir.split('/').any(|c| c == "..") {
                bail!("tree {}: {dir:?} must be a path inside the project", t.name);
            }
        }
    }
    Ok(file.tree)
}

/// The tree named `name` (`None`: the default); an unknown name lists the
/// known ones.
pub fn find(name: Option<&str>) -> Result<Tree> {
    let trees = load()?;
    match name {
        None => Ok(trees[0].clone()),
        Some(name) => trees.iter().find(|t| t.name == name).cloned().with_context(|| {
            let known: Vec<&str> = trees.iter().map(|t| t.name.as_str()).collect();
            format!(
                "no kernel tree {name:?}; the known trees ({TABLE}) are {}, and `{ALL}` names them all where a task \
                 takes several",
                known.join(", ")
            )
        }),
    }
}

/// What `--tree` names: every tree for `all`, else the one tree `find`
/// gives.
pub fn select(name: Option<&str>) -> Result<Vec<Tree>> {
    match name {
        Some(ALL) => load(),
        other => Ok(vec![find(other)?]),
    }
}

/// The `--tree` value that names every tree.
pub const ALL: &str = "all";

/// `(major, minor)` of a `MAJOR.MINOR` name.
pub fn version(name: &str) -> Option<(u32, u32)> {
    let (major, minor) = name.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

impl Tree {
    /// The tree's source tarball: the host's, when the package is installed,
    /// else the package's, downloaded into the build cache.
    pub fn tarball(&self) -> Result<PathBuf> {
        let installed = PathBuf::from(format!("/usr/src/{}.tar.xz", self.package));
        if installed.is_file() {
            return Ok(installed);
        }
        self.fetch()
    }

    /// Downloads and unpacks the package once; later calls find the
    /// tarball in the cache and need no network.
    fn fetch(&self) -> Result<PathBuf> {
        let inside = format!("usr/src/{}.tar.xz", self.package);
        let mirror = self.mirror.as_deref().unwrap_or(MIRROR);
        let dir = fetch_package(&self.package, &self.suite, mirror, &inside)
            .with_context(|| format!("is {} a linux-source package?", self.package))?;
        Ok(dir.join(inside))
    }
}

/// A Debian package a series is made against (`patches/*/source.toml`):
/// the package, the suite that carries it, the archive serving the suite
/// and the version the series was made against.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub package: String,
    pub suite: String,
    pub mirror: Option<String>,
    /// The package version the series was made against.
    pub version: String,
}

impl Source {
    pub fn mirror(&self) -> &str {
        self.mirror.as_deref().unwrap_or(MIRROR)
    }
}

pub fn read_source(path: &Path) -> Result<Source> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid package source table", path.display()))
}

/// Where [`fetch_package`] keeps the version of the package it unpacked.
const VERSION_FILE: &str = ".dax-seal-version";

/// Debian package `package` of `suite` (served by `mirror`), downloaded
/// through a private apt state, checked against the index's SHA256 and
/// unpacked once into the build cache (`debs/<package>/`); later calls
/// find it there and need no network. `inside` is a file the package must
/// hold (relative to its root). Returns the unpacked root.
pub fn fetch_package(package: &str, suite: &str, mirror: &str, inside: &str) -> Result<PathBuf> {
    let cache = paths::cache_dir()?;
    let dir = cache.join("debs").join(package);
    if dir.join(inside).is_file() {
        return Ok(dir);
    }
    let _lock = paths::lock(&cache.join("debs").join(format!("{package}.lock")), package)?;
    if dir.join(inside).is_file() {
        return Ok(dir);
    }
    let apt = AptState::new(&cache.join("apt").join(suite), mirror, suite, "deb")?;
    let deb_dir = cache.join("debs").join(format!("{package}.download"));
    paths::ensure_dir(&deb_dir)?;
    let (deb, sha256) = apt.download(package, &deb_dir)?;
    let got = file_sha256(&deb)?;
    if got != sha256 {
        let _ = fs::remove_file(&deb);
        bail!(
            "{} does not match the SHA256 of {package} in {suite} ({got}, the index says {sha256}); it was \
             deleted. Run again to download it afresh",
            deb.display()
        );
    }
    let unpacking = cache.join("debs").join(format!("{package}.partial-{}", std::process::id()));
    let sh = Shell::new()?;
    cmd!(sh, "dpkg-deb -x {deb} {unpacking}").run().with_context(|| format!("unpacking {}", deb.display()))?;
    if !unpacking.join(inside).is_file() {
        let _ = fs::remove_dir_all(&unpacking);
        bail!("{} holds no {inside}", deb.display());
    }
    into_place(&unpacking, &dir, &deb_version(&deb))?;
    // What is unpacked is what the tasks use; the .deb is not kept.
    let _ = fs::remove_dir_all(&deb_dir);
    Ok(dir)
}

/// Debian source package `package` of `suite` (served by `mirror`),
/// downloaded through a private apt state for the suite's sources
/// (`apt/<suite>-src/`) with `apt-get source --download-only`, which checks
/// every file against the suite's signed Sources index, and unpacked once
/// with `dpkg-source -x` (Debian's own patches applied) into the build cache
/// (`debs/<package>-source/src/`). Later calls find it there and need no
/// network. Returns the unpacked tree and the package version.
pub fn fetch_source_package(package: &str, suite: &str, mirror: &str) -> Result<(PathBuf, String)> {
    let cache = paths::cache_dir()?;
    let dir = cache.join("debs").join(format!("{package}-source"));
    let found = || package_version(&dir).filter(|_| dir.join("src").is_dir()).map(|v| (dir.join("src"), v));
    if let Some(found) = found() {
        return Ok(found);
    }
    let _lock = paths::lock(&cache.join("debs").join(format!("{package}-source.lock")), package)?;
    if let Some(found) = found() {
        return Ok(found);
    }
    let apt = AptState::new(&cache.join("apt").join(format!("{suite}-src")), mirror, suite, "deb-src")?;
    let download = cache.join("debs").join(format!("{package}-source.download"));
    if download.exists() {
        fs::remove_dir_all(&download).with_context(|| format!("removing {}", download.display()))?;
    }
    paths::ensure_dir(&download)?;
    apt.source(package, &download)?;
    let dsc = fs::read_dir(&download)
        .with_context(|| format!("reading {}", download.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "dsc"))
        .with_context(|| format!("apt-get source {package} left no .dsc in {}", download.display()))?;
    let version = deb_version(&dsc).trim_end_matches(".dsc").to_string();
    let unpacking = cache.join("debs").join(format!("{package}-source.partial-{}", std::process::id()));
    if unpacking.exists() {
        fs::remove_dir_all(&unpacking).with_context(|| format!("removing {}", unpacking.display()))?;
    }
    paths::ensure_dir(&unpacking)?;
    let sh = Shell::new()?;
    let src = unpacking.join("src");
    // apt-get checked each file against the signed index; dpkg-source
    // would only look for an OpenPGP signature of the .dsc.
    cmd!(sh, "dpkg-source --no-check -x {dsc} {src}")
        .quiet()
        .ignore_stdout()
        .run()
        .with_context(|| format!("unpacking {}", dsc.display()))?;
    into_place(&unpacking, &dir, &version)?;
    let _ = fs::remove_dir_all(&download);
    Ok((dir.join("src"), version))
}

/// Records `version` in `unpacking` and moves it to `dir` in place of
/// whatever was there: what [`fetch_package`] and [`fetch_source_package`]
/// finish with, so that a half-unpacked package is never found.
fn into_place(unpacking: &Path, dir: &Path, version: &str) -> Result<()> {
    fs::write(unpacking.join(VERSION_FILE), version)
        .with_context(|| format!("writing {}", unpacking.join(VERSION_FILE).display()))?;
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::rename(unpacking, dir).with_context(|| format!("moving {} into place", dir.display()))
}

/// The version of the package [`fetch_package`] unpacked in `dir`, if it
/// recorded one.
pub fn package_version(dir: &Path) -> Option<String> {
    fs::read_to_string(dir.join(VERSION_FILE)).ok().map(|v| v.trim().to_string())
}

/// `6.20-2` of `manpages-dev_6.20-2_all.deb` (an epoch's `%3a` as `:`).
fn deb_version(deb: &Path) -> String {
    let name = deb.file_name().map(|n| n.to_string_lossy().replace("%3a", ":")).unwrap_or_default();
    name.split('_').nth(1).unwrap_or("unknown").to_string()
}

/// A private apt state for one suite: its own sources list, lists and
/// (empty) status, so that `apt-get` reads nothing of the host's
/// configuration but its trusted keys, and writes only here.
struct AptState {
    options: Vec<String>,
    /// `SUITE (MIRROR)`, for messages.
    suite: String,
}

impl AptState {
    /// `kind` is the index it reads: `deb` (binary packages) or `deb-src`
    /// (source packages).
    fn new(dir: &Path, mirror: &str, suite: &str, kind: &str) -> Result<AptState> {
        for sub in ["lists/partial", "archives/partial"] {
            paths::ensure_dir(&dir.join(sub))?;
        }
        let sources = dir.join("sources.list");
        paths::write_atomic(&sources, format!("{kind} {mirror} {suite} main\n").as_bytes())?;
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, "").with_context(|| format!("creating {}", status.display()))?;
        }
        let options = apt_options(dir);
        let sh = Shell::new()?;
        let opts = &options;
        cmd!(sh, "apt-get {opts...} update").quiet().read_stderr().map_err(|e| {
            anyhow::anyhow!(
                "apt-get update for {suite} ({mirror}) failed, through the private apt state in {}: {e}",
                dir.display()
            )
        })?;
        Ok(AptState { options, suite: format!("{suite} ({mirror})") })
    }

    /// Downloads `package` into `into`; returns the file and the SHA256 the
    /// suite's index gives for it.
    fn download(&self, package: &str, into: &Path) -> Result<(PathBuf, String)> {
        let options = &self.options;
        let sh = Shell::new()?;
        let _dir = sh.push_dir(into);
        let show = cmd!(sh, "apt-cache {options...} show {package}")
            .quiet()
            .read()
            .with_context(|| format!("{package} is not in {}: apt-cache show {package} failed", self.suite))?;
        let (filename, sha256) = candidate(&show).with_context(|| {
            format!("apt-cache show {package} in {} gave no Filename and SHA256:\n{show}", self.suite)
        })?;
        eprintln!("[deb] downloading {package} from {} ({filename})", self.suite);
        cmd!(sh, "apt-get {options...} download {package}").quiet().run().with_context(|| {
            format!("apt-get download {package} from {} failed; what is cached is kept", self.suite)
        })?;
        let name = filename.rsplit('/').next().unwrap_or(&filename).replace("%3a", ":");
        Ok((into.join(name), sha256))
    }

    /// Downloads the files of source package `package` into `into`.
    fn source(&self, package: &str, into: &Path) -> Result<()> {
        let options = &self.options;
        let sh = Shell::new()?;
        let _dir = sh.push_dir(into);
        eprintln!("[deb] downloading the source of {package} from {}", self.suite);
        cmd!(sh, "apt-get {options...} source --download-only {package}").quiet().ignore_stdout().run().with_context(
            || format!("apt-get source {package} from {} failed (is it a source package there?)", self.suite),
        )?;
        Ok(())
    }
}

/// The options that point apt-get and apt-cache at the private state in
/// `dir` (and let them run as root without the _apt sandbox user, who
/// cannot write there).
fn apt_options(dir: &Path) -> Vec<String> {
    let d = dir.display();
    vec![
        format!("-oDir::Etc::SourceList={d}/sources.list"),
        "-oDir::Etc::SourceParts=/dev/null".into(),
        format!("-oDir::State::Lists={d}/lists"),
        format!("-oDir::State::Status={d}/status"),
        format!("-oDir::Cache::Archives={d}/archives"),
        format!("-oDir::Cache={d}"),
        "-oDebug::NoLocking=1".into(),
        "-oAPT::Sandbox::User=root".into(),
    ]
}

/// Filename and SHA256 of the first stanza of `apt-cache show` (the
/// candidate version).
fn candidate(show: &str) -> Option<(String, String)> {
    let stanza = show.split("\n\n").next()?;
    let field = |key: &str| stanza.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string());
    Some((field("Filename:")?, field("SHA256:")?))
}

fn file_sha256(path: &Path) -> Result<String> {
    let mut h = Sha256::new();
    let mut f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_table_parses_and_names_the_default_first() {
        let trees = load().unwrap();
        assert_eq!((trees[0].name.as_str(), trees[0].suite.as_str()), ("7.3", "trixie-backports"));
        // Debian 12 carries 6.12 in its security suite only.
        assert!(trees.iter().any(|t| t.name == "6.12"
            && t.suite == "bookworm-security"
            && t.mirror.as_deref() == Some("http://deb.debian.org/debian-security")));
        let err = format!("{:#}", find(Some("5.4")).unwrap_err());
        assert!(err.contains("no kernel tree \"5.4\"") && err.contains("7.3, 6.12"), "{err}");
        let all: Vec<String> = select(Some(ALL)).unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(all, ["7.3", "6.12"]);
        assert_eq!(select(None).unwrap()[0].name, "7.3");
        assert_eq!(select(Some("6.12")).unwrap().len(), 1);
    }

    #[test]
    fn bad_tables_are_refused_with_the_reason() {
        let one =
            "[[tree]]\nname = \"6.12\"\npackage = \"linux-source-6.12\"\nsuite = \"bookworm\"\nseries = \"patches\"\n";
        assert_eq!(parse(one).unwrap().len(), 1);
        for (text, needle) in [
            ("tree = []\n".to_string(), "names no"),
            (one.replace("6.12\"\npackage", "six\"\npackage"), "MAJOR.MINOR"),
            (format!("{one}{one}"), "named twice"),
            (one.replace("bookworm", "book worm"), "Debian names"),
            (one.replace("\"patches\"", "\"../elsewhere\""), "inside the project"),
            (format!("{one}colour = \"red\"\n"), "unknown field"),
            (format!("{one}mirror = \"ftp://x\"\n"), "http:// or https://"),
        ] {
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn the_candidate_is_the_first_stanza() {
        let show = "Package: linux-source-7.3\nVersion: 7.3.4-1~bpo13+1\nFilename: pool/main/l/linux/linux-source-7.3_7.3.4-1~bpo13+1_all.deb\nSHA256: 703e\n\nPackage: linux-source-7.3\nVersion: 7.3.1-1\nFilename: old.deb\nSHA256: 0000\n";
        assert_eq!(
            candidate(show),
            Some(("pool/main/l/linux/linux-source-7.3_7.3.4-1~bpo13+1_all.deb".into(), "703e".into()))
        );
        assert_eq!(candidate("Package: x\n"), None);
    }
}
