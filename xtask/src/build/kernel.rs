//! The kernel variants: where their source comes from, the content-addressed
//! key that decides whether a build is needed, applying the tree's series,
//! configuring from kernel-config/ fragments (and checking every requested
//! option took), and the ccache-backed out-of-tree build.
//!
//! Cache layout under [`paths::cache_dir`]:
//! - `src/<id>/`: the extracted default tarball (never modified);
//! - `work/<variant>/src`: a hard-link farm of the source with the series
//!   applied (`patch` replaces the files it changes, so the farm never writes
//!   through to the pristine tree), and `work/<variant>/build` (`O=`), kept
//!   between builds so make is incremental;
//! - `kernels/<key>/`: the finished `vmlinux` (what QEMU boots, through the
//!   PVH entry point: no self-decompression), `config` and `build.log`.
//!
//! Both variants use the same relative layout, so with `CCACHE_BASEDIR` set to
//! the cache root the compiler cache is shared between them.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use crate::build::deps;
use crate::build::trees::{self, Tree};
use crate::paths;

/// Bump when the build procedure changes in a way the inputs do not show.
const RECIPE: &str = "dax-seal kernel recipe 2: allnoconfig + fragments, vmlinux";

/// The make target, and the file in `kernels/<key>/` QEMU boots: the ELF
/// image with its PVH note (CONFIG_PVH), loaded as is.
const IMAGE: &str = "vmlinux";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// With the tree's series (patches/<tree>/series) applied.
    Patched,
    /// The same source without the series (with the tree's upstream fixes,
    /// as every variant).
    Baseline,
    /// The series plus kernel-config/debug/: lockdep, KASAN, DEBUG_VM,
    /// XFS_DEBUG and online repair.
    Debug,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Patched => "patched",
            Variant::Baseline => "baseline",
            Variant::Debug => "debug",
        }
    }

    /// Whether the variant carries the tree's series.
    pub fn has_series(self) -> bool {
        self != Variant::Baseline
    }

    /// Its config fragments on `tree`: kernel-config/*.config, then the
    /// tree's own directory of fragments if it has one, then (debug only)
    /// kernel-config/debug/*.config, each named relative to kernel-config/.
    pub fn fragments(self, dir: &Path, tree: &Tree) -> Result<Vec<(String, String)>> {
        let mut fragments = read_fragments(dir)?;
        let extra = tree.fragments.iter().map(String::as_str).chain((self == Variant::Debug).then_some("debug"));
        for sub in extra {
            let more = read_fragments(&dir.join(sub))?;
            fragments.extend(more.into_iter().map(|(name, text)| (format!("{sub}/{name}"), text)));
        }
        Ok(fragments)
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A kernel source ready to be copied into a work tree.
#[derive(Debug, Clone)]
pub struct Source {
    /// The kernel tree of the project's table this source is.
    pub of: Tree,
    /// The unmodified tree.
    pub tree: PathBuf,
    /// Identity of its contents (tarball hash, or a digest of the tree's
    /// file names, sizes and modification times).
    pub id: String,
    pub description: String,
}

/// A built kernel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Built {
    /// The kernel tree's name (`kernel-config/trees.toml`).
    pub tree: String,
    pub variant: Variant,
    /// What names it everywhere (work tree, image set, logs, result rows):
    /// [`kernel_name`].
    pub name: String,
    pub key: String,
    /// The ELF vmlinux QEMU boots (`-kernel`), through its PVH entry.
    pub image: PathBuf,
    pub config: PathBuf,
    /// False when it came from the cache.
    pub built_now: bool,
}

/// Which kernel tree to build, from which source (a directory the user
/// gave, else the tree's Debian package), and whether to rebuild what the
/// cache already has.
#[derive(Debug, Clone)]
pub struct SourceChoice {
    pub tree: Tree,
    pub dir: Option<PathBuf>,
    pub rebuild: bool,
}

/// `cargo xtask kernel`: builds `variants` and says where each one is.
pub fn cmd(variants: &[Variant], choice: &SourceChoice) -> Result<()> {
    deps::ensure(deps::Need::for_source(choice.dir.is_some()))?;
    let source = resolve_source(choice)?;
    for &variant in variants {
        let built = ensure(variant, &source, choice.rebuild)?;
        println!("{} {variant}: {} (key {})", built.tree, built.image.display(), built.key);
    }
    Ok(())
}

/// The chosen tree's source: the directory the user named, else the tree's
/// package tarball (the host's, or downloaded into the cache).
pub fn resolve_source(choice: &SourceChoice) -> Result<Source> {
    let of = choice.tree.clone();
    match &choice.dir {
        Some(dir) => {
            validate_tree(dir, &of)?;
            let tree = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
            let id = tree_identity(&tree)?;
            Ok(Source { description: format!("tree {}", tree.display()), of, tree, id })
        }
        None => {
            let tarball = of.tarball()?;
            extract_tarball(&tarball, of)
        }
    }
}

/// Checks that `dir` looks like a clean x86 Linux tree of `of`'s major
/// version (another minor release is accepted, with a note).
pub fn validate_tree(dir: &Path, of: &Tree) -> Result<()> {
    let makefile = dir.join("Makefile");
    let text = fs::read_to_string(&makefile).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().strip_prefix('=')).map(|v| v.trim().to_string()))
    };
    let (Some(version), Some(patchlevel)) = (field("VERSION"), field("PATCHLEVEL")) else {
        bail!(
            "{} is not a kernel source tree: {} has no VERSION and PATCHLEVEL lines.\n\
             Pass the top directory of a Linux {} tree to --kernel-src, or leave it out to use {}'s package.",
            dir.display(),
            makefile.display(),
            of.name,
            of.name
        );
    };
    if !dir.join("arch/x86/Kconfig").is_file() {
        bail!("{} is a kernel tree without arch/x86: an x86_64 tree is needed", dir.display());
    }
    let (major, minor) = trees::version(&of.name).unwrap_or_default();
    if version != major.to_string() {
        bail!(
            "{} is Linux {version}.{patchlevel}, not a tree for {} (any {major}.x tree is accepted); choose the \
             tree with --tree",
            dir.display(),
            of.name
        );
    }
    if patchlevel != minor.to_string() {
        eprintln!(
            "[kernel] note: {} is Linux {version}.{patchlevel}; the {} series is written for {}",
            dir.display(),
            of.name,
            of.name
        );
    }
    for leftover in [".config", "include/config"] {
        if dir.join(leftover).exists() {
            bail!(
                "{} has in-tree build output ({leftover}); out-of-tree builds need a clean tree.\n\
                 Run `make mrproper` in it (this deletes its .config), or pass a clean copy.",
                dir.display()
            );
        }
    }
    Ok(())
}

/// A digest of every file's path, size and mtime (not contents: a full
/// kernel tree is a gigabyte). Any edit changes the mtime and so the key.
pub fn tree_identity(tree: &Path) -> Result<String> {
    fn walk(dir: &Path, root: &Path, h: &mut Sha256) -> Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if e.file_name() == ".git" {
                continue;
            }
            let path = e.path();
            let meta = fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
            use std::os::unix::fs::MetadataExt;
            let rel = path.strip_prefix(root).unwrap_or(&path);
            h.update(format!("{}\0{}\0{}.{}\n", rel.display(), meta.len(), meta.mtime(), meta.mtime_nsec()));
            if meta.is_dir() {
                walk(&path, root, h)?;
            }
        }
        Ok(())
    }
    let mut h = Sha256::new();
    walk(tree, tree, &mut h)?;
    Ok(paths::short_hash(h))
}

/// Extracts the tarball once into the cache; its identity is the SHA-256 of
/// its bytes, remembered per (path, size, mtime) so it is hashed only once.
fn extract_tarball(tarball: &Path, of: Tree) -> Result<Source> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(tarball).with_context(|| {
        format!("kernel source {} is missing: install {} or pass --kernel-src DIR", tarball.display(), of.package)
    })?;
    let cache = paths::cache_dir()?;
    let stamp = format!("{}|{}|{}.{}", tarball.display(), meta.len(), meta.mtime(), meta.mtime_nsec());
    let index_path = cache.join("src/index.json");
    let mut index: std::collections::BTreeMap<String, String> =
        fs::read(&index_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let id = match index.get(&stamp) {
        Some(id) => id.clone(),
        None => {
            let mut h = Sha256::new();
            let mut f = fs::File::open(tarball).with_context(|| format!("open {}", tarball.display()))?;
            std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", tarball.display()))?;
            let id = paths::short_hash(h);
            index.insert(stamp, id.clone());
            paths::write_atomic(&index_path, &serde_json::to_vec_pretty(&index)?)?;
            id
        }
    };
    let dest = cache.join("src").join(&id);
    if !dest.is_dir() {
        eprintln!("[kernel] extracting {} into {} (once)", tarball.display(), dest.display());
        let tmp = cache.join("src").join(format!("{id}.partial-{}", std::process::id()));
        paths::ensure_dir(&tmp)?;
        let sh = Shell::new()?;
        cmd!(sh, "tar -xJf {tarball} -C {tmp}").run().with_context(|| format!("extracting {}", tarball.display()))?;
        fs::rename(&tmp, &dest).with_context(|| format!("moving {} into place", tmp.display()))?;
    }
    // The tarball holds one top-level directory (linux-source-6.12/).
    let top = fs::read_dir(&dest)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("Makefile").is_file())
        .with_context(|| format!("{} holds no kernel tree; delete it and retry", dest.display()))?;
    validate_tree(&top, &of)?;
    Ok(Source { description: format!("{} ({id})", tarball.display()), of, tree: top, id })
}

/// A series file (patches/<tree>/series): patch file names in order
/// (comments and blanks skipped).
pub fn read_series(patches: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let series = patches.join("series");
    let text = fs::read_to_string(&series).with_context(|| format!("cannot read {}", series.display()))?;
    let mut out = Vec::new();
    for name in text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()) {
        let path = patches.join(name);
        let bytes = fs::read(&path)
            .with_context(|| format!("{} names {name}, but {} cannot be read", series.display(), path.display()))?;
        out.push((name.to_string(), bytes));
    }
    Ok(out)
}

/// Where a tree's series directory keeps the upstream fixes the tree needs.
pub const FIXES: &str = "fixes";

/// The tree's fixes (`<series dir>/fixes/series`, if there is one): upstream
/// fixes every kernel of the tree carries, the baseline too, before the seal
/// series. Named `fixes/<file>`, relative to the series directory, so that
/// they apply from there and key the build apart from the series' own.
pub fn tree_fixes(series_dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let dir = series_dir.join(FIXES);
    if !dir.join("series").is_file() {
        return Ok(Vec::new());
    }
    Ok(read_series(&dir)?.into_iter().map(|(name, bytes)| (format!("{FIXES}/{name}"), bytes)).collect())
}

/// The files a patch changes (its `+++ b/…` lines).
pub fn files_touched(patch: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(patch)
        .lines()
        .filter_map(|l| l.strip_prefix("+++ "))
        .map(|p| p.split('\t').next().unwrap_or(p).trim())
        .filter(|p| *p != "/dev/null")
        .map(|p| p.split_once('/').map_or(p, |(_, rest)| rest).to_string())
        .collect()
}

/// kernel-config/*.config, sorted by name.
pub fn read_fragments(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "config") {
            let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            out.push((path.file_name().unwrap_or_default().to_string_lossy().into_owned(), text));
        }
    }
    out.sort();
    if out.is_empty() {
        bail!("{} holds no *.config fragment", dir.display());
    }
    Ok(out)
}

/// One requested option: `Some(value)` for `CONFIG_X=value`, `None` for
/// `# CONFIG_X is not set`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub name: String,
    pub value: Option<String>,
    pub origin: String,
}

pub fn parse_fragment(file: &str, text: &str) -> Result<Vec<Requested>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        let origin = format!("{file}:{}", i + 1);
        if let Some(name) = l.strip_prefix("# ").and_then(|r| r.strip_suffix(" is not set")) {
            out.push(Requested { name: name.to_string(), value: None, origin });
        } else if l.is_empty() || l.starts_with('#') {
            continue;
        } else if let Some((name, value)) = l.split_once('=').filter(|(n, _)| n.starts_with("CONFIG_")) {
            out.push(Requested { name: name.to_string(), value: Some(value.to_string()), origin });
        } else {
            bail!("{origin}: not a kconfig line: {l:?} (expected CONFIG_X=value or # CONFIG_X is not set)");
        }
    }
    Ok(out)
}

/// Requested options the final .config does not have, one message each.
pub fn verify_config(requested: &[Requested], dotconfig: &str) -> Vec<String> {
    let actual = |name: &str| {
        dotconfig.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('='))).map(str::to_string)
    };
    let mut problems = Vec::new();
    for r in requested {
        let got = actual(&r.name);
        let ok = match (&r.value, &got) {
            (None, None) => true,
            (None, Some(v)) => v == "n",
            (Some(want), Some(v)) => want == v,
            (Some(want), None) => want == "n",
        };
        if !ok {
            let want = r.value.as_deref().unwrap_or("not set");
            let got = got.as_deref().unwrap_or("not set");
            problems.push(format!("{} ({}): requested {want}, got {got}", r.name, r.origin));
        }
    }
    problems
}

/// The cache key of a build.
pub fn build_key(
    source_id: &str,
    series: &[(String, Vec<u8>)],
    fragments: &[(String, String)],
    compiler: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(RECIPE);
    h.update(format!("\0source {source_id}\0compiler {compiler}\0"));
    for (name, bytes) in series {
        h.update(format!("patch {name} {}\0", bytes.len()));
        h.update(bytes);
    }
    for (name, text) in fragments {
        h.update(format!("fragment {name} {}\0", text.len()));
        h.update(text);
    }
    paths::short_hash(h)
}

fn compiler_identity() -> Result<String> {
    let sh = Shell::new()?;
    let gcc = cmd!(sh, "gcc --version").read().context("running gcc --version")?;
    let ld = cmd!(sh, "ld --version").read().context("running ld --version")?;
    Ok(format!("{} / {}", gcc.lines().next().unwrap_or(""), ld.lines().next().unwrap_or("")))
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct WorkState {
    source_id: String,
    series_key: String,
    touched: BTreeSet<String>,
}

/// The name of `tree`'s `variant` kernel, `patched-7.3`: what names its
/// work tree, image set, logs and every result row, so that no two trees
/// share any of them and every row says which tree it ran on.
pub fn kernel_name(tree: &str, variant: Variant) -> String {
    format!("{variant}-{tree}")
}

/// The variant and tree a [`kernel_name`] names; None for another string
/// (an empty kernel, a name from before trees were named).
pub fn parse_kernel_name(name: &str) -> Option<(Variant, &str)> {
    let (variant, tree) = name.split_once('-')?;
    let variant = [Variant::Patched, Variant::Baseline, Variant::Debug].into_iter().find(|v| v.name() == variant)?;
    (!tree.is_empty()).then_some((variant, tree))
}

/// What a kernel is built from: the patches (the tree's fixes, then the
/// series unless baseline), the config fragments, what they request, and
/// the cache key of all that.
struct Inputs {
    series: Vec<(String, Vec<u8>)>,
    fragments: Vec<(String, String)>,
    requested: Vec<Requested>,
    key: String,
}

/// The cache key `variant` of `source` builds under: what names its
/// directory in `kernels/`, and what a boot's QEMU command line shows.
pub fn key(variant: Variant, source: &Source) -> Result<String> {
    Ok(inputs(variant, source)?.key)
}

fn inputs(variant: Variant, source: &Source) -> Result<Inputs> {
    let root = paths::project_root();
    let tree = &source.of;
    let mut series = tree_fixes(&root.join(&tree.series))?;
    series.extend(match variant.has_series() {
        true if !root.join(&tree.series).join("series").is_file() => bail!(
            "the {} tree has no series yet ({}/series is missing): its baseline builds, its {variant} kernel needs \
             the series ported to {}",
            tree.name,
            tree.series,
            tree.name
        ),
        true => read_series(&root.join(&tree.series))?,
        false => Vec::new(),
    });
    let fragments = variant.fragments(&root.join("kernel-config"), tree)?;
    let mut requested = Vec::new();
    for (name, text) in &fragments {
        requested.extend(parse_fragment(name, text)?);
    }
    let key = build_key(&source.id, &series, &fragments, &compiler_identity()?);
    Ok(Inputs { series, fragments, requested, key })
}

/// Whether the cache holds `variant` of `source` already.
pub fn cached(variant: Variant, source: &Source) -> Result<bool> {
    Ok(paths::cache_dir()?.join("kernels").join(key(variant, source)?).join(IMAGE).is_file())
}

/// Returns the kernel for `variant`, building it if its key is not cached.
pub fn ensure(variant: Variant, source: &Source, rebuild: bool) -> Result<Built> {
    let tree = &source.of;
    let Inputs { series, fragments, requested, key } = inputs(variant, source)?;
    let cache = paths::cache_dir()?;
    let out = cache.join("kernels").join(&key);
    let name = kernel_name(&tree.name, variant);
    let built = |built_now| Built {
        tree: tree.name.clone(),
        variant,
        name: name.clone(),
        key: key.clone(),
        image: out.join(IMAGE),
        config: out.join("config"),
        built_now,
    };
    let work = WorkTree::lock(&name, &format!("the {name} kernel's work tree"))?;
    if !rebuild && out.join(IMAGE).is_file() {
        return Ok(built(false));
    }
    eprintln!("[kernel {name}] building key {key} from {}", source.description);
    prepare_work_tree(&name, source, &series, &work, rebuild)?;
    let (src, build) = (&work.src, &work.build);
    paths::ensure_dir(build)?;
    configure(&name, src, build, &fragments, &requested)?;
    let log = build.join("build.log");
    let expected = last_build(&cache, &tree.name, variant);
    let started = Instant::now();
    let files = make(&name, src, build, &cache, &log, expected.as_ref())?;
    let record = BuildRecord {
        tree: tree.name.clone(),
        variant,
        files,
        seconds: started.elapsed().as_secs(),
        finished: paths::timestamp(),
    };

    let tmp = cache.join("kernels").join(format!("{key}.partial-{}", std::process::id()));
    paths::ensure_dir(&tmp)?;
    for (from, to) in [(IMAGE, IMAGE), (".config", "config"), ("build.log", "build.log")] {
        fs::copy(build.join(from), tmp.join(to))
            .with_context(|| format!("copying {from} out of {}", build.display()))?;
    }
    paths::write_atomic(&tmp.join(BUILD_RECORD), &serde_json::to_vec_pretty(&record)?)?;
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing the old {}", out.display()))?;
    }
    fs::rename(&tmp, &out).with_context(|| format!("moving the kernel into {}", out.display()))?;
    Ok(built(true))
}

/// A kernel work tree in the build cache, `work/<name>/`: `src` (the
/// pristine source as a hard-link farm, plus patches) and `build` (make's
/// output directory), held under `work/<name>.lock` while it lives. Every
/// work tree has its own name: a kernel variant's, or `series`.
pub struct WorkTree {
    pub dir: PathBuf,
    pub src: PathBuf,
    pub build: PathBuf,
    _lock: paths::Lock,
}

impl WorkTree {
    /// Waits for the work tree `name` (saying who holds it) and holds it;
    /// `what` names it in that message.
    pub fn lock(name: &str, what: &str) -> Result<WorkTree> {
        let work = paths::cache_dir()?.join("work");
        let _lock = paths::lock(&work.join(format!("{name}.lock")), what)?;
        let dir = work.join(name);
        Ok(WorkTree { src: dir.join("src"), build: dir.join("build"), dir, _lock })
    }

    /// Makes `src` a fresh link farm of `pristine` (what was there before is
    /// removed) and makes sure `build` exists.
    pub fn relink(&self, pristine: &Path) -> Result<()> {
        if self.src.exists() {
            fs::remove_dir_all(&self.src).with_context(|| format!("removing {}", self.src.display()))?;
        }
        paths::ensure_dir(&self.build)?;
        link_tree(&Shell::new()?, pristine, &self.src)
    }

    /// Gives each of `files` (paths in `src`) a fresh mtime, so make
    /// rebuilds what depends on them: files a series changed that are back
    /// to pristine links with their old mtimes.
    pub fn refresh<'a>(&self, files: impl IntoIterator<Item = &'a String>) -> Result<()> {
        for file in files {
            let path = self.src.join(file);
            if path.is_file() {
                refresh(&path)?;
            }
        }
        Ok(())
    }
}

/// Makes the work tree's `src` the source plus the series. Reused when
/// neither changed.
fn prepare_work_tree(
    name: &str,
    source: &Source,
    series: &[(String, Vec<u8>)],
    work: &WorkTree,
    rebuild: bool,
) -> Result<()> {
    let (src, build) = (&work.src, &work.build);
    let state_path = work.dir.join("state.json");
    let mut h = Sha256::new();
    for (name, bytes) in series {
        h.update(name);
        h.update(bytes);
    }
    let series_key = paths::short_hash(h);
    let old: WorkState = fs::read(&state_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    if old.source_id != source.id || rebuild {
        // Another source (or a forced rebuild): nothing in build/ is reusable.
        if build.exists() {
            fs::remove_dir_all(build).with_context(|| format!("removing {}", build.display()))?;
        }
    } else if old.series_key == series_key && src.join("Makefile").is_file() {
        return Ok(());
    }
    let _ = fs::remove_file(&state_path);
    work.relink(&source.tree)?;
    let sh = Shell::new()?;
    let mut touched = BTreeSet::new();
    let patches = paths::project_root().join(&source.of.series);
    for (name, bytes) in series {
        apply_patch(&sh, src, &patches.join(name))?;
        touched.extend(files_touched(bytes));
    }
    // Files the previous series changed and this one does not.
    work.refresh(old.touched.difference(&touched))?;
    let state = WorkState { source_id: source.id.clone(), series_key, touched };
    paths::write_atomic(&state_path, &serde_json::to_vec_pretty(&state)?)?;
    if !series.is_empty() {
        eprintln!("[kernel {name}] applied {} patches", series.len());
    }
    Ok(())
}

/// Makes `src` a hard-link farm of `pristine` (a copy across filesystems).
/// `patch` replaces the files it changes, so the pristine tree stays intact.
pub fn link_tree(sh: &Shell, pristine: &Path, src: &Path) -> Result<()> {
    if cmd!(sh, "cp -al {pristine} {src}").quiet().ignore_stderr().run().is_err() {
        // Another filesystem: hard links are impossible, copy instead.
        let _ = fs::remove_dir_all(src);
        cmd!(sh, "cp -a --reflink=auto {pristine} {src}").quiet().run().context("copying the kernel source")?;
    }
    Ok(())
}

/// Replaces `path` by a new file with the same bytes and a fresh mtime, so
/// make rebuilds what depends on it.
pub fn refresh(path: &Path) -> Result<()> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    fs::write(path, bytes).with_context(|| format!("rewriting {}", path.display()))
}

/// Applies one patch; a patch that does not apply changes nothing and the
/// error names it and the rejected hunks.
pub fn apply_patch(sh: &Shell, src: &Path, patch: &Path) -> Result<()> {
    // patches/7.3/0004-....patch: the path names the tree as well.
    let root = paths::project_root();
    let name = patch.strip_prefix(&root).unwrap_or(patch).display().to_string();
    let args = ["-d", &src.to_string_lossy(), "-p1", "--forward", "--batch", "--no-backup-if-mismatch", "-i"];
    let dry = cmd!(sh, "patch --dry-run {args...} {patch}").quiet().ignore_status().output()?;
    if !dry.status.success() {
        let text = String::from_utf8_lossy(&dry.stdout).into_owned() + &String::from_utf8_lossy(&dry.stderr);
        bail!(
            "{name} does not apply to the source in {}:\n{}\n\
             Rebase the patch onto the tree (or fix its series file), then run again. \
             The source tree was not changed.",
            src.display(),
            text.trim_end()
        );
    }
    cmd!(sh, "patch --silent {args...} {patch}").quiet().run().with_context(|| format!("applying {name}"))?;
    Ok(())
}

pub fn configure(
    label: &str,
    src: &Path,
    build: &Path,
    fragments: &[(String, String)],
    requested: &[Requested],
) -> Result<()> {
    let merged: String = fragments.iter().map(|(n, t)| format!("# --- {n}\n{t}\n")).collect();
    let frag_path = build.join("dax-seal-fragments.config");
    fs::write(&frag_path, merged).with_context(|| format!("writing {}", frag_path.display()))?;
    let sh = Shell::new()?;
    let _dir = sh.push_dir(src);
    let o = format!("O={}", build.display());
    let allconfig = format!("KCONFIG_ALLCONFIG={}", frag_path.display());
    cmd!(sh, "make -s {o} {allconfig} allnoconfig").quiet().run().context("make allnoconfig failed")?;
    cmd!(sh, "make -s {o} olddefconfig").quiet().run().context("make olddefconfig failed")?;
    let dotconfig = fs::read_to_string(build.join(".config")).context("reading the generated .config")?;
    let problems = verify_config(requested, &dotconfig);
    if !problems.is_empty() {
        bail!(
            "kernel config ({label}): {} requested option(s) did not take after olddefconfig:\n  {}\n\
             Usually a dependency is missing: add it to the fragment in kernel-config/ (see the option's \
             `depends on` in its Kconfig file). Generated config: {}",
            problems.len(),
            problems.join("\n  "),
            build.join(".config").display()
        );
    }
    Ok(())
}

/// What a kernel build took, kept beside the kernel in the cache
/// (`build.json`): the next build of its tree estimates its time from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildRecord {
    pub tree: String,
    pub variant: Variant,
    /// Files compiled (make's `CC` lines; ccache hits count too).
    pub files: usize,
    pub seconds: u64,
    /// When it finished (`paths::timestamp`), to find the latest.
    pub finished: String,
}

const BUILD_RECORD: &str = "build.json";

/// The latest build record in `cache` of `tree`: of `variant` when there is
/// one, else of another variant of the tree (debug compiles more files, so
/// only as a last resort). Only builds that compiled most of a kernel
/// count: a rebuild after a one-patch change says nothing about a cold one.
pub fn last_build(cache: &Path, tree: &str, variant: Variant) -> Option<BuildRecord> {
    let mut records: Vec<BuildRecord> = fs::read_dir(cache.join("kernels"))
        .ok()?
        .filter_map(|e| fs::read(e.ok()?.path().join(BUILD_RECORD)).ok())
        .filter_map(|bytes| serde_json::from_slice::<BuildRecord>(&bytes).ok())
        .filter(|r| r.tree == tree && r.files >= 500)
        .collect();
    records.sort_by(|a, b| a.finished.cmp(&b.finished));
    let rank = |r: &BuildRecord| match r.variant {
        v if v == variant => 2,
        Variant::Debug => 0,
        _ => 1,
    };
    // Oldest first: of equally ranked records, max_by_key keeps the last,
    // the newest.
    records.into_iter().max_by_key(rank)
}

/// The progress line of a build: files so far, time, and with an earlier
/// build of the tree to go by, the files and time left.
pub fn progress(label: &str, files: usize, secs: u64, now: &str, expected: Option<&BuildRecord>) -> String {
    let estimate = match expected {
        Some(e) if files > 0 && files < e.files => {
            // The pace of this build so far, over what the last one compiled.
            let left = (e.files - files) as f64 * secs as f64 / files as f64;
            format!(
                " of about {} (the last {} {} build), about {} min left",
                e.files,
                e.tree,
                e.variant,
                (left / 60.0).ceil() as u64
            )
        }
        Some(e) => format!(" (the last {} {} build compiled {})", e.tree, e.variant, e.files),
        None => String::new(),
    };
    format!("[kernel {label}] {files:>4} files compiled{estimate}, {secs:>4}s, now {now}")
}

/// Runs make vmlinux in `build` (niced, so that a guest booting meanwhile
/// keeps its pace); returns how many files it compiled. `expected`, an
/// earlier build of the tree, makes the progress lines estimate the rest.
pub fn make(
    label: &str,
    src: &Path,
    build: &Path,
    cache: &Path,
    log: &Path,
    expected: Option<&BuildRecord>,
) -> Result<usize> {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let log_file = Arc::new(Mutex::new(fs::File::create(log).with_context(|| format!("creating {}", log.display()))?));
    let mut child = Command::new("nice")
        .args(["-n", "10", "make"])
        .current_dir(src)
        .arg(format!("O={}", build.display()))
        .arg(format!("-j{jobs}"))
        .arg("CC=ccache gcc")
        .arg(IMAGE)
        .env("CCACHE_DIR", cache.join("ccache"))
        .env("CCACHE_BASEDIR", cache)
        .env("CCACHE_NOHASHDIR", "1")
        .env("CCACHE_MAXSIZE", "5G")
        .env("KBUILD_BUILD_USER", "dax-seal")
        .env("KBUILD_BUILD_HOST", "xtask")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start make")?;
    let compiled = Arc::new(Mutex::new((0usize, String::new())));
    let readers: Vec<_> = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as _),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let (log_file, compiled) = (log_file.clone(), compiled.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Ok(mut f) = log_file.lock() {
                    let _ = writeln!(f, "{line}");
                }
                if let Some(obj) = line.trim_start().strip_prefix("CC ") {
                    if let Ok(mut c) = compiled.lock() {
                        c.0 += 1;
                        c.1 = obj.trim().to_string();
                    }
                }
            }
        })
    })
    .collect();
    let start = Instant::now();
    let mut last_report = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for make")? {
            break status;
        }
        if last_report.elapsed() >= Duration::from_secs(15) {
            last_report = Instant::now();
            if let Ok(c) = compiled.lock() {
                eprintln!("{}", progress(label, c.0, start.elapsed().as_secs(), &c.1, expected));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for r in readers {
        let _ = r.join();
    }
    let secs = start.elapsed().as_secs();
    if !status.success() {
        let text = fs::read_to_string(log).unwrap_or_default();
        bail!(
            "kernel build ({label}) failed after {secs}s ({status}).{}\nLast lines of {}:\n{}\n\
             Fix the source or patch named above; the full log is at that path.",
            compiler_errors(&text),
            log.display(),
            tail(&text, 40)
        );
    }
    let n = compiled.lock().map(|c| c.0).unwrap_or(0);
    eprintln!("[kernel {label}] built in {secs}s ({n} files compiled)");
    Ok(n)
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The compiler's `error:` lines with the two lines before each (the file
/// and function), because with parallel jobs the failing object's messages
/// are rarely among the last lines of the log.
fn compiler_errors(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut shown = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains(": error: ") || l.contains(": fatal error: ") {
            shown.extend(lines[i.saturating_sub(2)..=i].iter().copied());
            if shown.len() >= 30 {
                break;
            }
        }
    }
    if shown.is_empty() {
        String::new()
    } else {
        format!(" Compiler errors:\n{}", shown.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_kernel_name_says_its_tree() {
        assert_eq!(kernel_name("7.3", Variant::Patched), "patched-7.3");
        assert_eq!(parse_kernel_name("baseline-6.12"), Some((Variant::Baseline, "6.12")));
        assert_eq!(parse_kernel_name(&kernel_name("7.3", Variant::Debug)), Some((Variant::Debug, "7.3")));
        for other in ["patched", "", "matrix", "fancy-7.3", "patched-"] {
            assert_eq!(parse_kernel_name(other), None, "{other}");
        }
    }

    #[test]
    fn a_build_estimates_its_rest_from_the_last_build_of_its_tree() {
        let cache = tempfile::tempdir().unwrap();
        let record = |key: &str, tree: &str, variant: Variant, files: usize, finished: &str| {
            let dir = cache.path().join("kernels").join(key);
            fs::create_dir_all(&dir).unwrap();
            let r = BuildRecord { tree: tree.into(), variant, files, seconds: 1000, finished: finished.into() };
            fs::write(dir.join(BUILD_RECORD), serde_json::to_vec(&r).unwrap()).unwrap();
        };
        assert!(last_build(cache.path(), "7.3", Variant::Baseline).is_none(), "no cache yet");
        record("a", "7.3", Variant::Patched, 1500, "20261206-010000");
        record("b", "7.3", Variant::Debug, 2400, "20261206-020000");
        record("c", "6.12", Variant::Baseline, 1550, "20261206-030000");
        record("d", "7.3", Variant::Patched, 12, "20261206-040000");
        // The patched build beats a later debug one and a one-patch rebuild.
        let got = last_build(cache.path(), "7.3", Variant::Baseline).unwrap();
        assert_eq!((got.variant, got.files), (Variant::Patched, 1500));

        assert_eq!(last_build(cache.path(), "7.3", Variant::Debug).unwrap().files, 2400);
        let line = progress("baseline-7.3", 500, 300, "fs/dax.o", Some(&got));
        assert!(
            line.contains("500 files compiled of about 1500 (the last 7.3 patched build), about 10 min left"),
            "{line}"
        );
        let line = progress("baseline-7.3", 1600, 900, "x.o", Some(&got));
        assert!(line.contains("(the last 7.3 patched build compiled 1500)"), "{line}");
        assert!(!progress("patched-7.3", 5, 3, "x.o", None).contains("about"));
        // Of two full builds of the same rank, the newer counts.
        record("e", "7.3", Variant::Patched, 1600, "20261206-050000");
        assert_eq!(last_build(cache.path(), "7.3", Variant::Baseline).unwrap().files, 1600);
        record("f", "7.3", Variant::Patched, 1550, "20261206-000000");
        assert_eq!(last_build(cache.path(), "7.3", Variant::Baseline).unwrap().files, 1600, "not the oldest");
    }

    #[test]
    fn compiler_errors_are_picked_out_of_a_parallel_log() {
        let log = "  CC a.o\nIn file included from x.c:1:\nx.c: In function 'f':\nx.c:9:3: error: 'tp' undeclared\n  CC b.o\n";
        let shown = super::compiler_errors(log);
        assert!(shown.contains("x.c:9:3: error: 'tp' undeclared") && shown.contains("In function 'f'"), "{shown}");
        assert_eq!(super::compiler_errors("  CC a.o\n"), "");
    }

    use super::*;

    #[test]
    fn fragments_parse() {
        let text = "# comment\nCONFIG_A=y\n\n# CONFIG_B is not set\nCONFIG_C=\"str\"\nCONFIG_D=30\n";
        let got = parse_fragment("f.config", text).unwrap();
        let names: Vec<_> = got.iter().map(|r| (r.name.as_str(), r.value.as_deref())).collect();
        assert_eq!(
            names,
            [("CONFIG_A", Some("y")), ("CONFIG_B", None), ("CONFIG_C", Some("\"str\"")), ("CONFIG_D", Some("30"))]
        );
        assert_eq!(got[1].origin, "f.config:4");
        assert!(parse_fragment("f", "XFS=y\n").is_err());
    }

    #[test]
    fn config_verification_names_what_did_not_take() {
        let requested = parse_fragment(
            "x.config",
            "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n# CONFIG_D is not set\nCONFIG_E=30\nCONFIG_F=\"x\"\n",
        )
        .unwrap();
        let dotconfig = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_D=y\nCONFIG_E=120\nCONFIG_F=\"x\"\n";
        let problems = verify_config(&requested, dotconfig);
        assert_eq!(
            problems,
            [
                "CONFIG_B (x.config:2): requested y, got not set",
                "CONFIG_D (x.config:4): requested not set, got y",
                "CONFIG_E (x.config:5): requested 30, got 120",
            ]
        );
        // Prefix names must not match longer ones.
        let requested = parse_fragment("x", "CONFIG_XFS=y\n").unwrap();
        assert_eq!(verify_config(&requested, "CONFIG_XFS_FS=y\n").len(), 1);
    }

    #[test]
    fn key_changes_with_every_input() {
        let series = vec![("0001-a.patch".to_string(), b"diff".to_vec())];
        let frags = vec![("a.config".to_string(), "CONFIG_A=y\n".to_string())];
        let base = build_key("src", &series, &frags, "gcc 12");
        assert_eq!(base, build_key("src", &series, &frags, "gcc 12"));
        assert_ne!(base, build_key("src2", &series, &frags, "gcc 12"));
        assert_ne!(base, build_key("src", &[], &frags, "gcc 12"));
        assert_ne!(base, build_key("src", &series, &[], "gcc 12"));
        assert_ne!(base, build_key("src", &series, &frags, "gcc 13"));
        let edited = vec![("0001-a.patch".to_string(), b"diff2".to_vec())];
        assert_ne!(base, build_key("src", &edited, &frags, "gcc 12"));
    }

    #[test]
    fn patch_headers_name_touched_files() {
        let p = b"--- a/fs/xfs/xfs_file.c\n+++ b/fs/xfs/xfs_file.c\n@@\n--- /dev/null\n+++ b/docs/new.rst\t2024\n";
        let got: Vec<_> = files_touched(p).into_iter().collect();
        assert_eq!(got, ["docs/new.rst", "fs/xfs/xfs_file.c"]);
    }

    #[test]
    fn patch_that_does_not_apply_names_the_hunk_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("a.c"), "one\ntwo\nthree\n").unwrap();
        fs::write(src.join("b.c"), "x\n").unwrap();
        let patch = dir.path().join("0001-a-b.patch");
        fs::write(
            &patch,
            "--- a/b.c\n+++ b/b.c\n@@ -1 +1 @@\n-x\n+y\n--- a/a.c\n+++ b/a.c\n@@ -1,3 +1,3 @@\n one\n-TWO\n+2\n three\n",
        )
        .unwrap();
        let sh = Shell::new().unwrap();
        let err = format!("{:#}", apply_patch(&sh, &src, &patch).unwrap_err());
        assert!(err.contains("/0001-a-b.patch does not apply"), "{err}");
        assert!(err.contains("Hunk #1 FAILED"), "{err}");
        // The hunk that would have applied (b.c) was not applied either.
        assert_eq!(fs::read_to_string(src.join("b.c")).unwrap(), "x\n");
    }

    #[test]
    fn failed_build_shows_the_log_tail_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let (src, build) = (dir.path().join("src"), dir.path().join("build"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&build).unwrap();
        let lines: String = (1..=60).map(|i| format!("\t@echo step {i}\n")).collect();
        fs::write(
            src.join("Makefile"),
            format!("vmlinux:\n{lines}\t@echo 'fs/xfs/x.c:1: error: broken' >&2\n\t@false\n"),
        )
        .unwrap();
        let log = build.join("build.log");
        let err = format!("{:#}", make("patched", &src, &build, dir.path(), &log, None).unwrap_err());
        assert!(err.contains("kernel build (patched) failed"), "{err}");
        assert!(err.contains("fs/xfs/x.c:1: error: broken"), "{err}");
        assert!(err.contains("step 60") && !err.contains("step 5\n"), "only the tail: {err}");
        assert!(err.contains(&log.display().to_string()), "{err}");
    }

    #[test]
    fn tree_validation() {
        let trees = trees::load().unwrap();
        let (t612, t73) = (trees.iter().find(|t| t.name == "6.12").unwrap(), &trees[0]);
        let dir = tempfile::tempdir().unwrap();
        let err = validate_tree(dir.path(), t612).unwrap_err().to_string();
        assert!(err.contains("is not a kernel source tree") && err.contains("Linux 6.12 tree"), "{err}");
        fs::write(dir.path().join("Makefile"), "VERSION = 6\nPATCHLEVEL = 12\n").unwrap();
        assert!(validate_tree(dir.path(), t612).unwrap_err().to_string().contains("arch/x86"));
        fs::create_dir_all(dir.path().join("arch/x86")).unwrap();
        fs::write(dir.path().join("arch/x86/Kconfig"), "").unwrap();
        validate_tree(dir.path(), t612).unwrap();
        let other = validate_tree(dir.path(), t73).unwrap_err().to_string();
        assert!(other.contains("not a tree for 7.3") && other.contains("--tree"), "{other}");
        fs::write(dir.path().join(".config"), "").unwrap();
        assert!(validate_tree(dir.path(), t612).unwrap_err().to_string().contains("mrproper"));
        fs::write(dir.path().join("Makefile"), "VERSION = 5\nPATCHLEVEL = 15\n").unwrap();
        fs::remove_file(dir.path().join(".config")).unwrap();
        assert!(validate_tree(dir.path(), t612).unwrap_err().to_string().contains("Linux 5.15"));
    }
}
