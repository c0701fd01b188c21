//! `cargo xtask submission`: what would be mailed, written out. For one
//! kernel tree: the series with a cover letter (the prose of
//! `patches/<tree>/cover-letter.txt`, the recipients from the tree's
//! `scripts/get_maintainer.pl`, the shortlog, and the results of the last
//! run, which must have booted this very series and passed), checkpatch
//! --strict on every patch, and the man-pages series with its own cover
//! letter. The tree's own fixes (`fixes/`), which the series needs under
//! it, are written beside it and named in the cover letter's base. Beside
//! them: the xfsprogs series (`patches/xfsprogs/`) with its cover letter,
//! checked with `git am` onto the source package it was made against, and
//! the fstests series made from the project's cases (`tests/fstests/`,
//! `series.toml` says which files go in which patch), as `git format-patch`
//! output that adds them to any checkout without them. It refuses (exit 2,
//! saying what to do) when the last run is missing, failed, or booted
//! another version of the series.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use dax_seal_protocol::ktap::Verdict;

use crate::build::kernel::{self, read_series, SourceChoice, Variant};
use crate::build::{deps, rootfs, trees, xfsprogs};
use crate::man_pages;
use crate::paths;
use crate::report::results::Results;

#[derive(Debug, Clone, clap::Args)]
pub struct SubmissionArgs {
    /// Kernel tree of kernel-config/trees.toml whose series to write
    /// (default: its first, 7.3).
    #[arg(long, value_name = "NAME")]
    pub tree: Option<String>,
    /// Where to write (default images/submission/<tree>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The run whose results the cover letter cites (default: the latest,
    /// images/runs/latest).
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// The fstests run the cover letter cites beside it (default: the
    /// latest, images/fstests/latest, if there is one).
    #[arg(long, value_name = "DIR")]
    pub fstests_run: Option<PathBuf>,
}

/// Why a submission cannot be written from the last run: exit 2.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

pub fn cmd(args: &SubmissionArgs) -> Result<ExitCode> {
    match write(args) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.downcast_ref::<Refused>().is_some() => {
            eprintln!("[submission] refused: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e),
    }
}

fn write(args: &SubmissionArgs) -> Result<()> {
    deps::ensure(deps::Need::for_submission())?;
    let tree = trees::find(args.tree.as_deref())?;
    let root = paths::project_root();
    let dir = root.join(&tree.series);
    let series = read_series(&dir)?;
    let source = kernel::resolve_source(&SourceChoice { tree: tree.clone(), dir: None, rebuild: false })?;
    let key = kernel::key(Variant::Patched, &source)?;
    let run_dir = args.run.clone().unwrap_or_else(|| paths::images_dir().join("runs/latest"));
    let results = Results::read(&run_dir).map_err(|e| {
        Refused(format!(
            "no run to cite in {} ({e:#}): run `cargo xtask run --kernel all --tree {}` first",
            run_dir.display(),
            tree.name
        ))
    })?;
    check_run(&results, &key, &tree.name)?;
    let cover_path = dir.join("cover-letter.txt");
    let cover = fs::read_to_string(&cover_path).with_context(|| {
        format!(
            "cannot read {}: the {} series has no cover letter (a backport is not what gets mailed; the first tree \
             of kernel-config/trees.toml is)",
            cover_path.display(),
            tree.name
        )
    })?;
    let out = args.out.clone().unwrap_or_else(|| paths::images_dir().join("submission").join(&tree.name));
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("cannot remove the old {}", out.display()))?;
    }
    let kernel_out = out.join(format!("linux-{}", tree.name));
    paths::ensure_dir(&kernel_out)?;
    let mut checkpatch = String::new();
    let mut paths_written = Vec::new();
    for (name, bytes) in &series {
        let to = kernel_out.join(name);
        fs::write(&to, bytes).with_context(|| format!("cannot write {}", to.display()))?;
        let found = run_checkpatch(&source.tree, &to)?;
        let verdict = if found.is_empty() { "clean".to_string() } else { format!("{} finding(s)", found.len()) };
        let _ = writeln!(checkpatch, "{name}: {verdict}");
        let prefix = format!("{}:", to.display());
        for line in &found {
            let _ = writeln!(checkpatch, "  line {}", line.strip_prefix(&prefix).unwrap_or(line));
        }
        paths_written.push(to);
    }
    let (to, cc) = maintainers(&source.tree, &paths_written)?;
    let fixes = kernel::tree_fixes(&dir)?;
    let base = format!(
        "{}{}",
        source.description,
        fixes
            .iter()
            .map(|(_, b)| format!("\n  + prerequisite fix, sent on its own: {}", subject(b)))
            .collect::<String>()
    );
    for (name, bytes) in &fixes {
        let to = kernel_out.join(name);
        paths::ensure_dir(to.parent().unwrap_or(&kernel_out))?;
        fs::write(&to, bytes).with_context(|| format!("cannot write {}", to.display()))?;
    }
    let fstests = fstests_citation(args.fstests_run.as_deref(), &tree.name)?;
    let letter = kernel_cover_letter(&cover, &series, &to, &cc, &results, &run_dir, &base)?.replacen(
        "\nPatches\n-------\n",
        &format!("{fstests}\nPatches\n-------\n"),
        1,
    );
    fs::write(kernel_out.join("0000-cover-letter.patch"), letter)?;
    let checkpatch_file = out.join(format!("checkpatch-{}.txt", tree.name));
    fs::write(&checkpatch_file, &checkpatch)?;

    // The man pages are applied and linted here too: their cover letter
    // says what the checkers found, and the patched pages go beside it.
    let man_out = out.join("man-pages");
    let man = man_pages::check(&man_out)?;
    for (name, bytes) in &man.series {
        fs::write(man_out.join(name), bytes)?;
    }
    fs::write(man_out.join("0000-cover-letter.patch"), man_cover_letter(&man))?;

    eprintln!(
        "[submission] {} kernel patches and a cover letter in {} (To: {}; Cc: {} lists)",
        series.len(),
        kernel_out.display(),
        to.len(),
        cc.len()
    );
    eprintln!("[submission] checkpatch --strict: {}", checkpatch_file.display());
    eprintln!("[submission] {} man-pages patches in {}", man.series.len(), man_out.display());
    let xfsprogs_out = out.join("xfsprogs");
    let xfsprogs_n = write_xfsprogs(&xfsprogs_out)?;
    eprintln!(
        "[submission] {xfsprogs_n} xfsprogs patches in {} (git am onto its source: clean)",
        xfsprogs_out.display()
    );
    let fstests_out = out.join("fstests");
    let fstests_n = write_fstests(&fstests_out)?;
    eprintln!("[submission] {fstests_n} fstests patches in {}", fstests_out.display());
    eprintln!("[submission] the kernel cover letter cites run {}", results.run_id);
    Ok(())
}

/// The xfsprogs series and its cover letter in `out`, after checking that
/// it applies with `git am` to the source package it was made against.
/// Returns the number of patches.
fn write_xfsprogs(out: &Path) -> Result<usize> {
    let dir = paths::project_root().join(xfsprogs::DIR);
    let series = read_series(&dir)?;
    let source = trees::read_source(&dir.join("source.toml"))?;
    let (tree, version) = trees::fetch_source_package(&source.package, &source.suite, source.mirror())?;
    let repo = tempfile::tempdir().context("a temporary directory for git am")?;
    let sh = xshell::Shell::new()?;
    let work = repo.path().join("xfsprogs");
    xshell::cmd!(sh, "cp -a {tree} {work}").quiet().run().context("copying the xfsprogs source")?;
    git_init(&work, "pristine")?;
    let patches: Vec<PathBuf> = series.iter().map(|(name, _)| dir.join(name)).collect();
    git(&work, &[&["am", "-q"][..], &patches.iter().map(|p| p.to_str().unwrap_or("")).collect::<Vec<_>>()].concat())
        .with_context(|| format!("the xfsprogs series does not apply with git am to {} {version}", source.package))?;
    paths::ensure_dir(out)?;
    for (name, bytes) in &series {
        fs::write(out.join(name), bytes).with_context(|| format!("cannot write {}", out.join(name).display()))?;
    }
    let cover = fs::read_to_string(dir.join("cover-letter.txt"))
        .with_context(|| format!("cannot read {}/cover-letter.txt", xfsprogs::DIR))?;
    let (subject_line, body) = split_cover(&cover, "xfsprogs")?;
    let n = series.len();
    let mut s = cover_head(&series, &format!("[PATCH 0/{n}] {subject_line}"));
    let _ = writeln!(s, "To: linux-xfs@vger.kernel.org");
    let _ = writeln!(s);
    let _ = writeln!(s, "{}", body.trim());
    let _ = writeln!(s);
    for (i, (_, bytes)) in series.iter().enumerate() {
        let _ = writeln!(s, "  {}/{n} {}", i + 1, subject(bytes));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Base: {} {version} (Debian's source package, as dpkg-source -x unpacks it)", source.package);
    let _ = writeln!(s);
    let _ = writeln!(s, "-- ");
    let _ = writeln!(s, "dax-seal");
    fs::write(out.join("0000-cover-letter.patch"), s)?;
    Ok(n)
}

/// tests/fstests/series.toml.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FstestsSeries {
    pub cover: String,
    pub patch: Vec<FstestsPatch>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FstestsPatch {
    pub files: Vec<String>,
    pub subject: String,
    pub body: String,
}

/// The fstests series plan, checked against the overlay: every file of
/// it in exactly one patch, and no patch naming a file it lacks.
pub fn fstests_series() -> Result<FstestsSeries> {
    let path = paths::project_root().join(rootfs::CASES_DIR).join("series.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let series: FstestsSeries = toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
    let files: Vec<String> = rootfs::overlay_files()?.into_iter().map(|(n, _)| n).collect();
    for f in &files {
        let n = series.patch.iter().filter(|p| p.files.contains(f)).count();
        if n != 1 {
            bail!("{}: {f} is in {n} patches; each file of the cases goes in exactly one", path.display());
        }
    }
    for p in &series.patch {
        if let Some(f) = p.files.iter().find(|f| !files.contains(f)) {
            bail!("{}: the patch \"{}\" names {f}, which is not among the cases", path.display(), p.subject);
        }
    }
    Ok(series)
}

/// The fstests series in `out`: a repository holding nothing, a commit per
/// patch of [`fstests_series`] adding its files (with their modes), and
/// `git format-patch --cover-letter` of them, so each patch adds files to
/// any checkout that lacks them. Returns the number of patches.
pub fn write_fstests(out: &Path) -> Result<usize> {
    let series = fstests_series()?;
    let author = author(&read_series(&paths::project_root().join(xfsprogs::DIR))?);
    let (name, email) = author
        .rsplit_once(" <")
        .map(|(n, e)| (n.trim().to_string(), e.trim_end_matches('>').to_string()))
        .context("the series' author has no address")?;
    // The commits, and so the cover letter, are the series' author's.
    let who = [format!("user.name={name}"), format!("user.email={email}")];
    let repo = tempfile::tempdir().context("a temporary directory for the fstests series")?;
    let work = repo.path();
    let cases = paths::project_root().join(rootfs::CASES_DIR);
    git_init(work, "base")?;
    for p in &series.patch {
        for f in &p.files {
            let to = work.join(f);
            paths::ensure_dir(to.parent().unwrap_or(work))?;
            fs::copy(cases.join(f), &to).with_context(|| format!("copying {f}"))?;
        }
        git(work, &[&["add", "--"][..], &p.files.iter().map(String::as_str).collect::<Vec<_>>()].concat())?;
        let message = format!("{}\n\n{}\n\nSigned-off-by: {author}\n", p.subject, p.body.trim());
        let msg = work.join(".git/dax-seal-message");
        fs::write(&msg, message)?;
        let msg = msg.display().to_string();
        git(work, &["-c", &who[0], "-c", &who[1], "commit", "-q", "-F", &msg])?;
    }
    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    paths::ensure_dir(out)?;
    let o = out.display().to_string();
    let range = format!("HEAD~{}", series.patch.len());
    git(
        work,
        &[
            "-c",
            &who[0],
            "-c",
            &who[1],
            "format-patch",
            "-q",
            "--no-signature",
            "--zero-commit",
            "--cover-letter",
            "--to=fstests@vger.kernel.org",
            "--cc=linux-xfs@vger.kernel.org",
            "-o",
            &o,
            &range,
        ],
    )?;
    // The cover letter's blurb and subject, which format-patch leaves as
    // placeholders.
    let cover_path = out.join("0000-cover-letter.patch");
    let cover = fs::read_to_string(&cover_path).with_context(|| format!("reading {}", cover_path.display()))?;
    let cover = cover
        .replace("*** SUBJECT HERE ***", "fstests: sealed block maps")
        .replace("*** BLURB HERE ***", series.cover.trim());
    fs::write(&cover_path, cover)?;
    Ok(series.patch.len())
}

/// `git init` in `dir`, and a first commit of what it holds (empty if it
/// holds nothing) named `message`.
fn git_init(dir: &Path, message: &str) -> Result<()> {
    git(dir, &["init", "-q"])?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "--allow-empty", "-m", message])
}

/// Runs git in `dir`; a failure carries its stderr.
fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("git")
        .args(["-c", "commit.gpgsign=false", "-c", "user.name=dax-seal", "-c", "user.email=dax-seal@localhost"])
        .args(args)
        .current_dir(dir)
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!("git {} in {}: {}", args.join(" "), dir.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// What the kernel cover letter says of fstests: the comparison table of
/// the fstests run `dir` (default the latest), which must have passed and
/// booted this tree; or, when there is none, how to make one.
fn fstests_citation(dir: Option<&Path>, tree: &str) -> Result<String> {
    let explicit = dir.is_some();
    let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| paths::images_dir().join("fstests/latest"));
    let compared_path = dir.join("fstests.json");
    if !explicit && !compared_path.exists() {
        return Ok(format!(
            "No fstests run to cite: `cargo xtask fstests --src DIR --seal-cases --tree {tree}` makes one.\n"
        ));
    }
    let results = Results::read(&dir).map_err(|e| Refused(format!("no fstests run in {} ({e:#})", dir.display())))?;
    let text = fs::read_to_string(&compared_path).with_context(|| format!("reading {}", compared_path.display()))?;
    let compared: Vec<crate::fstests::Compared> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an fstests comparison", compared_path.display()))?;
    if results.verdict != Verdict::Pass {
        return Err(Refused(format!(
            "the fstests run {} in {} failed: run fstests again once it passes, or cite another with --fstests-run",
            results.run_id,
            dir.display()
        ))
        .into());
    }
    let other_tree = compared.iter().find(|c| kernel::parse_kernel_name(&c.kernel).is_none_or(|(_, t)| t != tree));
    if let Some(c) = other_tree {
        return Err(Refused(format!(
            "the fstests run {} in {} booted {}, not the {tree} tree: run `cargo xtask fstests --tree {tree}` or \
             cite another with --fstests-run",
            results.run_id,
            dir.display(),
            c.kernel
        ))
        .into());
    }
    Ok(format!(
        "fstests run {} ({}), compared with the baseline:{}",
        results.run_id,
        dir.display(),
        crate::fstests::comparison_text(&compared).trim_start_matches("\nfstests by kernel and section:")
    ))
}

/// The run passed, and booted the patched kernel whose key the series
/// builds now.
pub fn check_run(results: &Results, key: &str, tree: &str) -> Result<()> {
    if results.verdict != Verdict::Pass {
        let failed: Vec<String> = results
            .runs
            .iter()
            .filter(|r| r.verdict == Verdict::Fail)
            .map(|r| format!("{} / {}", r.kernel, r.workload))
            .collect();
        bail!(Refused(format!(
            "the last run ({}) failed ({}): a submission cites a passing run",
            results.run_id,
            failed.join(", ")
        )));
    }
    let marker = format!("/kernels/{key}/");
    if !results.boots.iter().any(|b| b.command_line.contains(&marker)) {
        bail!(Refused(format!(
            "the last run ({}) did not boot the series as it is now (patched {tree} key {key}): run `cargo xtask \
             run --kernel all --tree {tree}` first",
            results.run_id
        )));
    }
    Ok(())
}

/// checkpatch --strict's findings on one patch (none: clean).
fn run_checkpatch(src: &Path, patch: &Path) -> Result<Vec<String>> {
    let out = Command::new("perl")
        .arg(src.join("scripts/checkpatch.pl"))
        .args(crate::tidy::CHECKPATCH_OPTIONS)
        .args(["--terse", "--show-types", "--no-summary"])
        .arg(patch)
        .output()
        .context("cannot run checkpatch.pl")?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect())
}

/// get_maintainer.pl over the patches: people (To) and lists (Cc).
fn maintainers(src: &Path, patches: &[PathBuf]) -> Result<(Vec<String>, Vec<String>)> {
    let out = Command::new("perl")
        .current_dir(src)
        .arg("scripts/get_maintainer.pl")
        .args(["--no-rolestats", "--no-git", "--no-git-fallback", "--no-substatus"])
        .args(patches)
        .output()
        .context("cannot run get_maintainer.pl")?;
    if !out.status.success() {
        bail!("get_maintainer.pl failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let (mut to, mut cc) = (Vec::new(), Vec::new());
    for line in String::from_utf8_lossy(&out.stdout).lines().map(str::trim).filter(|l| !l.is_empty()) {
        let list = if line.contains('<') { &mut to } else { &mut cc };
        if !list.iter().any(|l| l == line) {
            list.push(line.to_string());
        }
    }
    Ok((to, cc))
}

/// The Subject line of a patch file (folded lines joined), without
/// "[PATCH n/m] ".
fn subject(patch: &[u8]) -> String {
    let s = header(patch, "Subject").unwrap_or_else(|| "?".into());
    match s.find("] ") {
        Some(i) if s.starts_with('[') => s[i + 2..].to_string(),
        _ => s,
    }
}

/// The author line of the first patch.
fn author(series: &[(String, Vec<u8>)]) -> String {
    series.first().and_then(|(_, first)| header(first, "From")).unwrap_or_default()
}

/// The mail header `name` of a patch file, its folded lines joined.
fn header(patch: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(patch);
    let prefix = format!("{name}: ");
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&prefix));
    let mut value = lines.next()?.strip_prefix(&prefix)?.to_string();
    for l in lines.take_while(|l| l.starts_with(' ')) {
        value.push_str(l);
    }
    Some(value)
}

/// The subject (`Subject: ...` on its first line) and the prose of a
/// cover-letter file.
fn split_cover<'a>(cover: &'a str, what: &str) -> Result<(&'a str, &'a str)> {
    cover
        .split_once('\n')
        .and_then(|(subject, body)| Some((subject.strip_prefix("Subject: ")?, body)))
        .with_context(|| format!("the {what} cover letter's first line must be `Subject: ...`"))
}

/// The first lines of a cover letter: the mbox separator, the series'
/// author and the subject.
fn cover_head(series: &[(String, Vec<u8>)], subject: &str) -> String {
    format!(
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\nFrom: {}\nSubject: {subject}\n",
        author(series)
    )
}

fn kernel_cover_letter(
    cover: &str,
    series: &[(String, Vec<u8>)],
    to: &[String],
    cc: &[String],
    results: &Results,
    run_dir: &Path,
    base: &str,
) -> Result<String> {
    let (subject_line, body) = split_cover(cover, "kernel")?;
    let n = series.len();
    let mut s = cover_head(series, &format!("[PATCH 00/{n:02}] {subject_line}"));
    if !to.is_empty() {
        let _ = writeln!(s, "To: {}", to.join(",\n    "));
    }
    if !cc.is_empty() {
        let _ = writeln!(s, "Cc: {}", cc.join(",\n    "));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "{}", body.trim());
    let _ = writeln!(s);
    let _ = writeln!(s, "Testing");
    let _ = writeln!(s, "-------");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Run {} of the dax-seal harness (QEMU, emulated NVDIMMs, XFS\nwith DAX), results in {}:",
        results.run_id,
        run_dir.display()
    );
    let _ = writeln!(s);
    for run in &results.runs {
        let count = |v: Verdict| run.cases.iter().filter(|c| c.verdict == v).count();
        let _ = writeln!(
            s,
            "  {:<16} {:<20} {:>3} passed, {} failed, {} skipped",
            run.kernel,
            run.workload,
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::Skip)
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Patches");
    let _ = writeln!(s, "-------");
    let _ = writeln!(s);
    for (i, (_, bytes)) in series.iter().enumerate() {
        let _ = writeln!(s, "  {:02}/{n:02} {}", i + 1, subject(bytes));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Base: {base}");
    let _ = writeln!(s);
    let _ = writeln!(s, "-- ");
    let _ = writeln!(s, "dax-seal");
    Ok(s)
}

fn man_cover_letter(man: &man_pages::Checked) -> String {
    let series = &man.series;
    let n = series.len();
    let mut s = cover_head(series, &format!("[PATCH 0/{n}] Document sealing a file's block map"));
    let _ = writeln!(s, "To: Alejandro Colomar <alx@kernel.org>");
    let _ = writeln!(s, "Cc: linux-man@vger.kernel.org, linux-xfs@vger.kernel.org, linux-fsdevel@vger.kernel.org");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "These pages document FALLOC_FL_SEAL_BLOCK_MAP, FALLOC_FL_UNSEAL_BLOCK_MAP\n\
         and STATX_ATTR_IOMAP_IMMUTABLE, from the kernel series \"xfs, fs/dax, mm:\n\
         seal a file's block map\". The version in them (7.4) is an assumption,\n\
         marked with a FIXME, to be corrected with the commit when it is merged.\n\
         Made against {} {}; mandoc -T lint and groff's warnings find nothing\n\
         new in {}.",
        man.package,
        man.version,
        man.pages.iter().map(|p| p.page.as_str()).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(s);
    for (i, (_, bytes)) in series.iter().enumerate() {
        let _ = writeln!(s, "  {}/{n} {}", i + 1, subject(bytes));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "-- ");
    let _ = writeln!(s, "dax-seal");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::{BootRecord, WorkloadRun};
    use crate::vm::boot::End;

    fn results(verdict: Verdict, command_line: &str) -> Results {
        Results {
            verdict,
            run_id: "20261206-170000".into(),
            runs: vec![WorkloadRun::new("patched-7.3", "dax-smoke", Vec::new())],
            boots: vec![BootRecord {
                kernel: "patched-7.3".into(),
                label: String::new(),
                accel: "tcg".into(),
                accel_reason: String::new(),
                end: End::PoweredOff,
                elapsed_ms: 1,
                first_ktap_ms: None,
                console_log: PathBuf::new(),
                ktap_log: PathBuf::new(),
                command_line: command_line.into(),
                ignored_result_lines: Vec::new(),
            }],
            xtask_peak_rss_kib: 0,
            rates: Vec::new(),
        }
    }

    #[test]
    fn a_run_of_this_series_that_passed_is_cited() {
        let r = results(Verdict::Pass, "qemu -kernel /c/kernels/abc/vmlinux");
        check_run(&r, "abc", "7.3").unwrap();
    }

    #[test]
    fn a_failed_or_stale_run_is_refused_with_what_to_do() {
        let failed = check_run(&results(Verdict::Fail, "-kernel /c/kernels/abc/vmlinux"), "abc", "7.3").unwrap_err();
        assert!(failed.downcast_ref::<Refused>().is_some());
        assert!(failed.to_string().contains("failed"), "{failed}");
        let stale = check_run(&results(Verdict::Pass, "-kernel /c/kernels/old/vmlinux"), "abc", "7.3").unwrap_err();
        assert!(stale.downcast_ref::<Refused>().is_some());
        assert!(stale.to_string().contains("cargo xtask run --kernel all --tree 7.3"), "{stale}");
    }

    #[test]
    fn the_fstests_run_is_cited_when_it_passed_on_this_tree() {
        use crate::fstests::{Class, Compared};
        let dir = tempfile::tempdir().unwrap();
        let write = |verdict: Verdict, kernel: &str| {
            crate::report::results::write_all(dir.path(), &results(verdict, "")).unwrap();
            let compared = vec![Compared {
                kernel: kernel.into(),
                section: "dax".into(),
                test: "generic/950".into(),
                class: Class::Pass,
                here: Verdict::Pass,
                baseline: Some(Verdict::Skip),
                attempts: 1,
                failures: 0,
            }];
            fs::write(dir.path().join("fstests.json"), serde_json::to_vec(&compared).unwrap()).unwrap();
        };
        write(Verdict::Pass, "patched-7.3");
        let text = fstests_citation(Some(dir.path()), "7.3").unwrap();
        assert!(text.contains("fstests run 20261206-170000") && text.contains("patched-7.3 dax"), "{text}");
        let refused = |tree: &str| format!("{:#}", fstests_citation(Some(dir.path()), tree).unwrap_err());
        assert!(refused("6.12").contains("not the 6.12 tree"));
        write(Verdict::Fail, "patched-7.3");
        assert!(refused("7.3").contains("failed"));
        let empty = tempfile::tempdir().unwrap();
        assert!(refused_at(empty.path()).contains("no fstests run"));
    }

    fn refused_at(dir: &Path) -> String {
        format!("{:#}", fstests_citation(Some(dir), "7.3").unwrap_err())
    }

    #[test]
    fn the_fstests_series_adds_exactly_the_cases_with_git_am() {
        let out = tempfile::tempdir().unwrap();
        let n = write_fstests(out.path()).unwrap();
        let mut names: Vec<String> =
            fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names.len(), n + 1, "{names:?}");
        let cover = fs::read_to_string(out.path().join(&names[0])).unwrap();
        assert!(cover.contains("fstests: sealed block maps") && !cover.contains("*** BLURB HERE ***"), "{cover}");
        assert!(cover.contains("To: fstests@vger.kernel.org") && !cover.contains("dax-seal@localhost"), "{cover}");
        let first = fs::read(out.path().join(&names[1])).unwrap();
        assert_eq!(subject(&first), "common/seal: helpers for tests of sealed block maps");
        assert!(String::from_utf8_lossy(&first).contains("Signed-off-by: "));
        // Onto a tree that has none of the files: every patch applies and
        // the tree then holds the cases, modes included.
        let tree = tempfile::tempdir().unwrap();
        git_init(tree.path(), "a checkout").unwrap();
        let patches: Vec<String> = names[1..].iter().map(|n| out.path().join(n).display().to_string()).collect();
        git(tree.path(), &[&["am", "-q"][..], &patches.iter().map(String::as_str).collect::<Vec<_>>()].concat())
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        for (name, bytes) in rootfs::overlay_files().unwrap() {
            let got = tree.path().join(&name);
            assert_eq!(fs::read(&got).unwrap(), bytes, "{name}");
            let want = fs::metadata(paths::project_root().join(rootfs::CASES_DIR).join(&name)).unwrap();
            assert_eq!(
                fs::metadata(&got).unwrap().permissions().mode() & 0o111,
                want.permissions().mode() & 0o111,
                "{name}"
            );
        }
    }

    #[test]
    fn subjects_lose_their_numbering_and_keep_folded_lines() {
        let patch =
            b"From: A\nSubject: [PATCH 09/17] fs/dax: let a referenced fsdax folio hold the device's\n pagemap\n\nbody";
        assert_eq!(subject(patch), "fs/dax: let a referenced fsdax folio hold the device's pagemap");
    }
}
