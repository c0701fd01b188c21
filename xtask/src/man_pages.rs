//! `cargo xtask man-pages`: the project's man-pages series
//! (patches/man-pages/) applied to the release it was made against, and
//! checked the way the man-pages project checks its pages.
//!
//! The release is Debian's `manpages-dev` of the suite
//! `patches/man-pages/source.toml` names, downloaded once into the build
//! cache (build/trees.rs). Each page the series touches is taken from it,
//! linted, patched and linted again with both of the man-pages project's
//! checkers: `mandoc -T lint` and groff's warnings (`man --warnings`). A
//! warning the series adds fails the task; what the release already had is
//! left alone. [`lint`] is also what checks the pages `cargo xtask cli-docs`
//! writes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::build::kernel::{files_touched, read_series};
use crate::build::{deps, trees};
use crate::paths;

#[derive(Debug, Clone, clap::Args)]
pub struct ManPagesArgs {
    /// Where to write the patched pages, as man/manN/PAGE (default
    /// images/man-pages).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// What the series did to one page.
#[derive(Debug)]
pub struct PageCheck {
    /// `man2/fallocate.2`.
    pub page: String,
    /// Warnings of the release's page (kept, not the series' doing).
    pub inherited: usize,
}

/// Where the series lives, from the project root.
pub const DIR: &str = "patches/man-pages";

/// The series, applied and checked ([`check`]).
pub struct Checked {
    /// The package the release came from, and its version.
    pub package: String,
    pub version: String,
    /// The series' patches, as `read_series` gives them.
    pub series: Vec<(String, Vec<u8>)>,
    pub pages: Vec<PageCheck>,
}

pub fn cmd(args: &ManPagesArgs) -> Result<()> {
    deps::ensure(deps::Need::for_man_pages())?;
    let out = args.out.clone().unwrap_or_else(|| paths::images_dir().join("man-pages"));
    let checked = check(&out)?;
    for c in &checked.pages {
        eprintln!(
            "[man-pages] {}: mandoc -T lint and man --warnings find nothing the series added ({} inherited from \
             the release)",
            c.page, c.inherited
        );
    }
    eprintln!(
        "[man-pages] {} patches apply to {} {}; the pages are in {}",
        checked.series.len(),
        checked.package,
        checked.version,
        out.join("man").display()
    );
    if let Some(c) = checked.pages.first() {
        eprintln!("[man-pages] try: man -l {}", out.join("man").join(&c.page).display());
    }
    Ok(())
}

/// Fetches the release `source.toml` names, applies the series to it and
/// lints every page it touches ([`apply_and_check`]), writing the patched
/// pages to `out`/man/. `cargo xtask man-pages` and `submission` both
/// start here.
pub fn check(out: &Path) -> Result<Checked> {
    let dir = paths::project_root().join(DIR);
    let source = trees::read_source(&dir.join("source.toml"))?;
    let series = read_series(&dir)?;
    let pages = touched_pages(&series)?;
    let first = pages.first().with_context(|| format!("{DIR}/series names no patch"))?;
    let mirror = source.mirror.as_deref().unwrap_or(trees::MIRROR);
    let unpacked = trees::fetch_package(&source.package, &source.suite, mirror, &format!("usr/share/man/{first}.gz"))?;
    let version = trees::package_version(&unpacked).unwrap_or_else(|| "of unknown version".into());
    if version != source.version {
        eprintln!(
            "[man-pages] the series was made against {} {}; {} now has {version}",
            source.package, source.version, source.suite
        );
    }
    let pages = apply_and_check(&unpacked.join("usr/share/man"), &dir, &series, out)
        .with_context(|| format!("the man-pages series on {} {version} ({})", source.package, source.suite))?;
    Ok(Checked { package: source.package, version, series, pages })
}

/// The pages the series changes, as `manN/NAME`, from the patches' `man/…`
/// paths; a patch outside man/ is refused.
fn touched_pages(series: &[(String, Vec<u8>)]) -> Result<Vec<String>> {
    let mut pages = Vec::new();
    for (name, bytes) in series {
        for file in files_touched(bytes) {
            let Some(page) = file.strip_prefix("man/").filter(|p| p.starts_with("man") && p.contains('/')) else {
                bail!("{name} changes {file}, which is not a page under man/manN/ of the man-pages tree");
            };
            if !pages.iter().any(|p| p == page) {
                pages.push(page.to_string());
            }
        }
    }
    Ok(pages)
}

/// Takes every page the series touches from `installed` (a man directory
/// with manN/NAME.gz, as Debian installs them), lints it, applies the
/// series (`patches` holds its files), lints again, and writes the patched
/// pages to `out`/man/. Fails, naming the patch, when one does not apply;
/// naming the warnings, when the series adds any.
pub fn apply_and_check(
    installed: &Path,
    patches: &Path,
    series: &[(String, Vec<u8>)],
    out: &Path,
) -> Result<Vec<PageCheck>> {
    let pages = touched_pages(series)?;
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let tree = work.path();
    let mut before = BTreeMap::new();
    for page in &pages {
        let text = read_installed(installed, page)?;
        let path = tree.join("man").join(page);
        paths::ensure_dir(path.parent().unwrap_or(tree))?;
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        before.insert(page.clone(), lint(&path)?);
    }
    for (name, _) in series {
        let patch = patches.join(name);
        let out = Command::new("patch")
            .args(["-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-d"])
            .arg(tree)
            .arg("-i")
            .arg(&patch)
            .output()
            .context("cannot run patch")?;
        if !out.status.success() {
            bail!(
                "{} does not apply:\n{}{}",
                patch.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let mut checks = Vec::new();
    let mut added = Vec::new();
    for page in &pages {
        let after = lint(&tree.join("man").join(page))?;
        let inherited = &before[page];
        added.extend(new_warnings(inherited, &after).into_iter().map(|w| format!("{page}: {w}")));
        checks.push(PageCheck { page: page.clone(), inherited: inherited.len() });
    }
    if !added.is_empty() {
        bail!("the series adds {} warning(s):\n{}", added.len(), added.join("\n"));
    }
    let dest = out.join("man");
    if dest.exists() {
        fs::remove_dir_all(&dest).with_context(|| format!("cannot remove the old {}", dest.display()))?;
    }
    for page in &pages {
        let to = dest.join(page);
        paths::ensure_dir(to.parent().unwrap_or(&dest))?;
        fs::copy(tree.join("man").join(page), &to).with_context(|| format!("cannot write {}", to.display()))?;
    }
    Ok(checks)
}

/// manN/NAME of `installed`, gzipped as Debian ships it or not.
fn read_installed(installed: &Path, page: &str) -> Result<Vec<u8>> {
    let plain = installed.join(page);
    if plain.is_file() {
        return fs::read(&plain).with_context(|| format!("cannot read {}", plain.display()));
    }
    let gz = installed.join(format!("{page}.gz"));
    let out = Command::new("gzip").arg("-dc").arg(&gz).stdin(Stdio::null()).output().context("cannot run gzip")?;
    if !out.status.success() {
        bail!(
            "the release has no page {page} ({} or .gz: {})",
            plain.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Every warning both checkers give for the page at `path`: `mandoc -T
/// lint -W warning`, then groff's through `man --warnings` (rendered at 80
/// columns in UTF-8, as the man-pages project checks).
pub fn lint(path: &Path) -> Result<Vec<String>> {
    let mandoc = Command::new("mandoc")
        .args(["-T", "lint", "-W", "warning"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("cannot run mandoc")?;
    // 0: clean, 2: warnings, 3: errors, 4: unsupported; above, mandoc failed.
    if mandoc.status.code().is_none_or(|c| c > 4) {
        bail!("mandoc -T lint {} failed: {}", path.display(), String::from_utf8_lossy(&mandoc.stderr).trim());
    }
    let man = Command::new("man")
        .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
        .arg(path)
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .context("cannot run man")?;
    if !man.status.success() {
        bail!("man --warnings -l {} failed: {}", path.display(), String::from_utf8_lossy(&man.stderr).trim());
    }
    let mut out: Vec<String> = String::from_utf8_lossy(&mandoc.stdout).lines().map(str::to_string).collect();
    out.extend(String::from_utf8_lossy(&mandoc.stderr).lines().map(str::to_string));
    out.extend(String::from_utf8_lossy(&man.stderr).lines().map(str::to_string));
    out.retain(|l| !l.trim().is_empty());
    Ok(out)
}

/// The warnings of `after` that `before` does not account for, compared
/// without their line and column numbers (a patch moves the lines below
/// it). A warning that appears more often after counts as new.
fn new_warnings(before: &[String], after: &[String]) -> Vec<String> {
    let key = |w: &str| {
        let mut k = String::new();
        for c in w.chars() {
            if c.is_ascii_digit() {
                if !k.ends_with('#') {
                    k.push('#');
                }
            } else {
                k.push(c);
            }
        }
        k
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for w in before {
        *seen.entry(key(w)).or_default() += 1;
    }
    let mut added = Vec::new();
    for w in after {
        match seen.get_mut(&key(w)) {
            Some(n) if *n > 0 => *n -= 1,
            _ => added.push(w.clone()),
        }
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = ".TH T 2 2026-01-01 \"Linux man-pages 6.20\"\n.SH NAME\nt \\- a page\n.SH DESCRIPTION\n\
                        First line.\n.P\nSecond line.\n";

    fn installed_with(page: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("man2")).unwrap();
        let plain = dir.path().join("man2/t.2");
        fs::write(&plain, page).unwrap();
        assert!(Command::new("gzip").arg(&plain).status().unwrap().success());
        dir
    }

    fn patch(name: &str, from: &str, to: &str) -> (String, Vec<u8>) {
        let text = format!(
            "Subject: [PATCH] t.2\n---\n--- a/man/man2/t.2\n+++ b/man/man2/t.2\n@@ -5,3 +5,{} @@\n{}",
            to.lines().count(),
            from.lines().map(|l| format!("-{l}\n")).chain(to.lines().map(|l| format!("+{l}\n"))).collect::<String>()
        );
        (name.to_string(), text.into_bytes())
    }

    fn run(series: &[(String, Vec<u8>)]) -> Result<(Vec<PageCheck>, tempfile::TempDir)> {
        let installed = installed_with(PAGE);
        let patches = tempfile::tempdir().unwrap();
        for (name, bytes) in series {
            fs::write(patches.path().join(name), bytes).unwrap();
        }
        let out = tempfile::tempdir().unwrap();
        apply_and_check(installed.path(), patches.path(), series, out.path()).map(|c| (c, out))
    }

    #[test]
    fn a_clean_patch_is_applied_and_written_out() {
        let series =
            [patch("0001-t.patch", "First line.\n.P\nSecond line.\n", "First line.\n.P\nSecond line,\nand a third.\n")];
        let (checks, out) = run(&series).unwrap();
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].page, "man2/t.2");
        let text = fs::read_to_string(out.path().join("man/man2/t.2")).unwrap();
        assert!(text.contains("and a third."), "{text}");
    }

    #[test]
    fn a_warning_the_series_adds_fails_and_is_named() {
        let series = [patch("0001-t.patch", "First line.\n.P\nSecond line.\n", "First line.\n.XQ\nSecond line.\n")];
        let err = format!("{:#}", run(&series).unwrap_err());
        assert!(err.contains("adds") && err.contains("man2/t.2") && err.contains("XQ"), "{err}");
    }

    #[test]
    fn a_patch_that_does_not_apply_is_named() {
        let series = [patch("0001-t.patch", "Other line.\n.P\nSecond line.\n", "x\n")];
        let err = format!("{:#}", run(&series).unwrap_err());
        assert!(err.contains("0001-t.patch does not apply"), "{err}");
    }

    #[test]
    fn a_patch_outside_the_pages_is_refused() {
        let series = [("0001-x.patch".to_string(), b"--- a/Makefile\n+++ b/Makefile\n".to_vec())];
        let err = format!("{:#}", touched_pages(&series).unwrap_err());
        assert!(err.contains("0001-x.patch changes Makefile"), "{err}");
    }

    #[test]
    fn warnings_are_compared_without_their_positions() {
        let before = vec!["p:12:3: WARNING: a".to_string(), "around line 258:".to_string()];
        let after = vec!["p:15:3: WARNING: a".to_string(), "around line 267:".to_string(), "p:20:1: b".to_string()];
        assert_eq!(new_warnings(&before, &after), ["p:20:1: b"]);
        let twice = vec!["p:1:1: WARNING: a".to_string(), "p:9:1: WARNING: a".to_string()];
        assert_eq!(new_warnings(&before[..1], &twice), ["p:9:1: WARNING: a"]);
    }

    #[test]
    fn the_project_source_table_parses() {
        let s = trees::read_source(&paths::project_root().join(DIR).join("source.toml")).unwrap();
        assert_eq!(s.package, "manpages-dev");
        let err = format!("{:#}", toml::from_str::<trees::Source>("package = \"x\"\nsuit = \"sid\"\n").unwrap_err());
        assert!(err.contains("suit"), "{err}");
    }
}
