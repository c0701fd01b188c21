//! Conventions CI enforces: each tree's series (patches/<tree>/series), and
//! its upstream fixes (patches/<tree>/fixes/series), names exactly the patch
//! files there, each patch is signed off with a kernel-style subject, checkpatch
//! (from the kernel tree being built) passes `--strict`, no tracked text
//! file has trailing whitespace, documents stand alone, and no stage of xtask
//! imports a task or the command line (lib.rs's layering rule). The cheap
//! checks are unit tests; checkpatch runs from `cargo xtask test` once the
//! kernel source is at hand.

use std::path::Path;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::build::kernel;

/// Problems with the series layout and each patch's header.
pub fn series_problems(patches: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let series = kernel::read_series(patches)?;
    let listed: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
    for e in std::fs::read_dir(patches).with_context(|| format!("reading {}", patches.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".patch") && !listed.contains(&name.as_str()) {
            problems.push(format!("{}/{name} is not in its series", patches.display()));
        }
    }
    for (name, bytes) in &series {
        problems.extend(patch_problems(name, &String::from_utf8_lossy(bytes)));
    }
    Ok(problems)
}

/// Header problems of one `git format-patch` file.
pub fn patch_problems(name: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let subject = text.lines().find_map(|l| l.strip_prefix("Subject: ")).map(|s| {
        // "[PATCH 2/6] xfs: ..." -> "xfs: ..."
        s.split_once("] ").filter(|_| s.starts_with('[')).map_or(s, |(_, rest)| rest).to_string()
    });
    match subject {
        None => problems.push(format!("{name}: no Subject: line (make patches with git format-patch)")),
        Some(s) => {
            if s.chars().count() > 75 {
                problems.push(format!("{name}: subject is {} characters, the limit is 75", s.chars().count()));
            }
            if !s.split_once(": ").is_some_and(|(subsys, rest)| !subsys.is_empty() && !rest.is_empty()) {
                problems.push(format!("{name}: subject {s:?} is not 'subsys: summary'"));
            }
        }
    }
    if !text.lines().any(|l| l.starts_with("Signed-off-by: ") && l.contains('@')) {
        problems.push(format!("{name}: no Signed-off-by: line"));
    }
    problems
}

/// checkpatch's options wherever the harness runs it. The kernel sources
/// here come from Debian's tarballs, without the kernel's git history, so
/// checkpatch cannot look up the commit a `Fixes:` tag names and would
/// call every such tag unknown (UNKNOWN_COMMIT_ID); the tag's form is
/// still checked (GIT_COMMIT_ID).
pub const CHECKPATCH_OPTIONS: [&str; 4] = ["--strict", "--no-tree", "--ignore", "UNKNOWN_COMMIT_ID"];

/// Runs the tree's scripts/checkpatch.pl --strict on every patch. A finding
/// passes only when the patch's commit message justifies it: it names the
/// finding's type (for example BIT_MACRO) in a sentence that says
/// "checkpatch", as kernel commit messages do.
pub fn checkpatch(patches: &Path, tree: &Path) -> Result<usize> {
    let mut series = kernel::tree_fixes(patches)?;
    series.extend(kernel::read_series(patches)?);
    let script = tree.join("scripts/checkpatch.pl");
    let sh = Shell::new()?;
    let mut failed = Vec::new();
    for (name, bytes) in &series {
        let patch = patches.join(name);
        let out = cmd!(sh, "perl {script} {CHECKPATCH_OPTIONS...} --terse --show-types {patch}")
            .ignore_status()
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if out.status.success() {
            continue;
        }
        let report = String::from_utf8_lossy(&out.stdout);
        let unjustified = unjustified_findings(&String::from_utf8_lossy(bytes), &report);
        if !unjustified.is_empty() || !report.lines().any(|l| finding_type(l).is_some()) {
            let shown = if unjustified.is_empty() { report.trim_end().to_string() } else { unjustified.join("\n") };
            failed.push(format!("{name}:\n{shown}"));
        }
    }
    if !failed.is_empty() {
        bail!(
            "checkpatch --strict found problems (fix them, or justify each in the commit message: \
             a sentence with \"checkpatch\" and the finding's type):\n{}",
            failed.join("\n")
        );
    }
    Ok(series.len())
}

/// The type of a `--terse --show-types` finding line:
/// `file:12: CHECK:BIT_MACRO: Prefer using the BIT macro` -> `BIT_MACRO`.
/// Each stage and what it may import from the crate: the stages below it
/// and the modules every layer shares.
const LAYERS: [(&str, &[&str]); 3] =
    [("build", &["build"]), ("vm", &["build", "vm"]), ("report", &["build", "vm", "report"])];
const SHARED: [&str; 3] = ["paths", "jobs", "testing"];

/// `file:line: the STAGE stage imports crate::X` for every `crate::X` path
/// in a stage's files under `src` (xtask/src) that the layering rule does
/// not allow.
pub fn layering_problems(src: &Path) -> Result<Vec<String>> {
    let mut bad = Vec::new();
    for (stage, allowed) in LAYERS {
        for file in rust_files(&src.join(stage))? {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = file.strip_prefix(src).unwrap_or(&file).display();
            for (line, module) in crate_paths(&text) {
                if !allowed.contains(&module.as_str()) && !SHARED.contains(&module.as_str()) {
                    bad.push(format!("{name}:{line}: the {stage} stage imports crate::{module}"));
                }
            }
        }
    }
    Ok(bad)
}

/// The guest workloads' rule: a module of `src` (guest/workloads/src) uses
/// fixtures (fixture, swap, cases, workdir, the dax-seal-sys re-exports) and
/// never a workload module other than its own; only main.rs names the
/// workloads, to run them. The workload modules are the ones main.rs runs
/// the catalogue's workloads from.
pub fn workload_import_problems(src: &Path) -> Result<Vec<String>> {
    let main = src.join("main.rs");
    let main_rs = std::fs::read_to_string(&main).with_context(|| format!("reading {}", main.display()))?;
    let workloads = workload_modules(&main_rs)?;
    let mut bad = Vec::new();
    for file in rust_files(src)?.into_iter().filter(|f| *f != main) {
        let inner = file.strip_prefix(src).unwrap_or(&file);
        let owner = inner.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
        let owner = owner.trim_end_matches(".rs");
        let what = if workloads.iter().any(|w| w == owner) { "workload" } else { "fixture" };
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        for (line, used) in crate_paths(&text) {
            if used != owner && workloads.contains(&used) {
                bad.push(format!(
                    "{}:{line}: {what} module {owner} uses crate::{used}, a workload module; move what it needs \
                     into a fixture (fixture.rs, swap.rs, workdir.rs, cases.rs)",
                    inner.display()
                ));
            }
        }
    }
    Ok(bad)
}

/// The modules main.rs runs the catalogue's workloads from (its
/// `IMPLEMENTED` entries read `("name", module::function)`), each a `mod`
/// of main.rs.
fn workload_modules(main_rs: &str) -> Result<Vec<String>> {
    let declared: Vec<&str> = main_rs.lines().filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';')).collect();
    let mut modules = Vec::new();
    for w in dax_seal_protocol::WORKLOADS {
        let entry = format!("(\"{}\", ", w.name);
        let Some(module) =
            main_rs.lines().find_map(|l| l.trim().strip_prefix(&entry)?.split_once("::").map(|(m, _)| m))
        else {
            bail!("main.rs: no `{entry}module::function)` entry in IMPLEMENTED for the catalogue's {}", w.name);
        };
        if !declared.contains(&module) {
            bail!("main.rs: lookup runs {} from {module}, which is not a `mod` of main.rs", w.name);
        }
        if !modules.iter().any(|m| m == module) {
            modules.push(module.to_string());
        }
    }
    Ok(modules)
}

/// Every .rs file under `dir`, sorted.
fn rust_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The first segment of every `crate::` path in `text`, each with its
/// line: `a` of `crate::a::b`, `a` and `b` of `crate::{a, b::c}` (also
/// across lines and nested groups). Comment lines are skipped.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    let ident = |at: usize| -> (usize, String) {
        let rest = &text[at..];
        let start = at + rest.len() - rest.trim_start().len();
        (start, text[start..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect())
    };
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let after = at + "crate::".len();
        let mut starts = vec![after];
        if text[after..].starts_with('{') {
            starts = vec![after + 1];
            let mut depth = 0;
            for (i, c) in text[after + 1..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => starts.push(after + 1 + i + 1),
                    _ => {}
                }
            }
        }
        for start in starts {
            let (at, name) = ident(start);
            let line = line_of(at);
            let comment = text.lines().nth(line - 1).is_some_and(|l| l.trim_start().starts_with("//"));
            if !name.is_empty() && !comment {
                found.push((line, name));
            }
        }
    }
    found
}

fn finding_type(line: &str) -> Option<&str> {
    ["ERROR:", "WARNING:", "CHECK:"].iter().find_map(|level| {
        let rest = &line[line.find(&format!(" {level}"))? + level.len() + 1..];
        rest.split_once(':').map(|(ty, _)| ty).filter(|ty| !ty.is_empty() && !ty.contains(' '))
    })
}

/// Findings of `report` that the patch's commit message does not justify.
fn unjustified_findings<'a>(patch: &str, report: &'a str) -> Vec<&'a str> {
    let message = patch.split("\n---\n").next().unwrap_or("");
    let justified = |ty: &str| message.split("\n\n").any(|para| para.contains("checkpatch") && para.contains(ty));
    report.lines().filter(|l| finding_type(l).is_some_and(|ty| !justified(ty))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::project_root;

    #[test]
    fn series_matches_the_patch_files_and_headers_are_kernel_style() {
        // Every tree's series that exists (a tree being ported may have none).
        for tree in crate::build::trees::load().unwrap() {
            let series = project_root().join(&tree.series);
            // The series, and the upstream fixes the tree carries.
            for dir in [series.clone(), series.join(kernel::FIXES)] {
                if dir.join("series").is_file() {
                    let problems = series_problems(&dir).unwrap();
                    assert!(problems.is_empty(), "{}: {}", tree.name, problems.join("\n"));
                }
            }
        }
        // No patch file lies outside a tree's series directory.
        let stray: Vec<_> = std::fs::read_dir(project_root().join("patches"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| e.path().display().to_string())
            .collect();
        assert!(stray.is_empty(), "files in patches/ belong in a tree's series directory: {stray:?}");
    }

    #[test]
    fn patch_header_rules() {
        let good =
            "From 1 Mon\nSubject: [PATCH 1/2] xfs: seal the block map\n\nbody\n\nSigned-off-by: A B <a@b.org>\n---\n";
        assert!(patch_problems("p", good).is_empty());
        let long = format!("Subject: [PATCH] xfs: {}\nSigned-off-by: A <a@b>\n", "x".repeat(80));
        assert!(patch_problems("p", &long)[0].contains("limit is 75"));
        let unsigned = "Subject: xfs: thing\n";
        assert!(patch_problems("p", unsigned)[0].contains("Signed-off-by"));
        let nosubsys = "Subject: [PATCH] fix the thing\nSigned-off-by: A <a@b>\n";
        assert!(patch_problems("p", nosubsys)[0].contains("subsys: summary"));
    }

    #[test]
    fn checkpatch_findings_need_a_justification_in_the_message() {
        let report = "p:9: CHECK:BIT_MACRO: Prefer using the BIT macro\n\
                      p:12: WARNING:MEMORY_BARRIER: memory barrier without comment\n\
                      total: 0 errors, 1 warnings, 1 checks, 20 lines checked\n";
        assert_eq!(finding_type("p:9: CHECK:BIT_MACRO: Prefer using the BIT macro"), Some("BIT_MACRO"));
        assert_eq!(finding_type("total: 0 errors, 1 warnings"), None);
        let silent = "Subject: [PATCH] vfs: x\n\nBody.\n---\n+BIT_MACRO in the diff does not count\n";
        assert_eq!(unjustified_findings(silent, report).len(), 2);
        let one = "Subject: [PATCH] vfs: x\n\ncheckpatch asks for BIT_MACRO; kept the (1 << n) form.\n---\n";
        assert_eq!(unjustified_findings(one, report), ["p:12: WARNING:MEMORY_BARRIER: memory barrier without comment"]);
        let other_para = "Subject: x\n\nBIT_MACRO is fine.\n\ncheckpatch is noisy.\n---\n";
        assert_eq!(unjustified_findings(other_para, report).len(), 2);
    }

    #[test]
    fn unlisted_patch_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("series"), "# none\n").unwrap();
        std::fs::write(dir.path().join("0001-x.patch"), "").unwrap();
        assert_eq!(
            series_problems(dir.path()).unwrap(),
            [format!("{}/0001-x.patch is not in its series", dir.path().display())]
        );
        std::fs::write(dir.path().join("series"), "0002-missing.patch\n").unwrap();
        assert!(series_problems(dir.path()).is_err());
    }

    #[test]
    fn no_trailing_whitespace_in_tracked_files() {
        let root = project_root();
        let sh = Shell::new().unwrap();
        let _dir = sh.push_dir(&root);
        let files = match cmd!(sh, "git ls-files").quiet().read() {
            Ok(files) => files,
            // A tree without git (an exported tarball) has no list to check.
            Err(_) if !root.join(".git").exists() => return,
            // With .git present, a failure (git missing, or its ownership
            // check refusing a root CI container) must not pass silently.
            Err(e) => panic!("git ls-files failed in {}: {e}", root.display()),
        };
        let mut bad = Vec::new();
        for f in files.lines().filter(|f| !f.ends_with(".patch")) {
            let Ok(text) = std::fs::read_to_string(root.join(f)) else { continue };
            for (i, line) in text.lines().enumerate() {
                if line.ends_with([' ', '\t']) {
                    bad.push(format!("{f}:{}", i + 1));
                }
            }
        }
        assert!(bad.is_empty(), "trailing whitespace at:\n{}", bad.join("\n"));
    }

    /// The layering rule of lib.rs: a stage imports only the stages below
    /// it (build, then vm, then report) and the shared modules, never a
    /// task nor the command line.
    #[test]
    fn no_stage_imports_a_task() {
        let src = project_root().join("xtask/src");
        let bad = layering_problems(&src).unwrap();
        assert!(bad.is_empty(), "stage imports that break the layering rule:\n{}", bad.join("\n"));
    }

    #[test]
    fn crate_paths_reads_plain_grouped_and_nested_uses() {
        let text =
            "use crate::a::b;\n// crate::hidden\nuse crate::{\n    c::{self, D},\n    e,\n};\nlet x = crate::f::g();\n";
        let found = crate_paths(text);
        assert_eq!(found, [(1, "a"), (4, "c"), (5, "e"), (7, "f")].map(|(l, n)| (l, n.to_string())));
    }

    #[test]
    fn no_workload_imports_another_workload() {
        let src = project_root().join("guest/workloads/src");
        let bad = workload_import_problems(&src).unwrap();
        assert!(bad.is_empty(), "a module uses another workload:\n{}", bad.join("\n"));
    }

    #[test]
    fn the_workload_check_can_fail() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::read_to_string(project_root().join("guest/workloads/src/main.rs")).unwrap();
        std::fs::write(dir.path().join("main.rs"), &real).unwrap();
        std::fs::write(dir.path().join("fixture.rs"), "use crate::{sys, seal_race::x};\n").unwrap();
        std::fs::create_dir(dir.path().join("pinned_dma")).unwrap();
        std::fs::write(
            dir.path().join("pinned_dma/rdma.rs"),
            "use crate::pinned_dma;\nuse crate::fixture;\n\nuse crate::seal_lifetime;\n",
        )
        .unwrap();
        let bad = workload_import_problems(dir.path()).unwrap();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].starts_with("fixture.rs:1: fixture module fixture uses crate::seal_race"), "{bad:?}");
        assert!(
            bad[1].starts_with("pinned_dma/rdma.rs:4: workload module pinned_dma uses crate::seal_lifetime"),
            "{bad:?}"
        );
        std::fs::write(dir.path().join("main.rs"), "mod x;\n").unwrap();
        assert!(workload_import_problems(dir.path()).unwrap_err().to_string().contains("no `(\"dax-smoke\", "));
    }

    #[test]
    fn the_layering_check_can_fail() {
        let dir = tempfile::tempdir().unwrap();
        for stage in ["build", "vm", "report"] {
            std::fs::create_dir(dir.path().join(stage)).unwrap();
        }
        std::fs::write(dir.path().join("vm/ok.rs"), "use crate::build::kernel;\nuse crate::paths;\n").unwrap();
        std::fs::write(dir.path().join("build/up.rs"), "use crate::vm::qemu;\n").unwrap();
        std::fs::write(dir.path().join("report/task.rs"), "x\n    let c = crate::fuzz::config();\n").unwrap();
        std::fs::write(dir.path().join("vm/cli.rs"), "use crate::{\n    cli::VmArgs,\n    paths,\n};\n").unwrap();
        let mut bad = layering_problems(dir.path()).unwrap();
        bad.sort();
        assert_eq!(
            bad,
            [
                "build/up.rs:1: the build stage imports crate::vm",
                "report/task.rs:2: the report stage imports crate::fuzz",
                "vm/cli.rs:2: the vm stage imports crate::cli",
            ]
        );
    }

    /// Users have this repository only: its documents may not point at the
    /// design notes kept beside it.
    #[test]
    fn documents_stand_alone() {
        let root = project_root();
        let mut docs = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
        if let Ok(entries) = std::fs::read_dir(root.join("docs")) {
            docs.extend(entries.flatten().map(|e| e.path()));
        }
        let bad: Vec<String> = docs
            .iter()
            .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("../shared")))
            .map(|p| p.display().to_string())
            .collect();
        assert!(bad.is_empty(), "these refer to ../shared, which users do not have: {bad:?}");
    }
}
