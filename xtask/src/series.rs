//! `cargo xtask series`: is the series bisectable? Builds the pristine
//! source, then applies the tree's series (patches/<tree>/series, after its fixes/) one patch at a time and rebuilds
//! after each, in one incremental tree (`work/series/`, ccache shared with
//! the variants), on the patched variant's configuration. A prefix that
//! does not build, or a patch after which the compiler warns, fails the
//! check and is named.

use std::collections::BTreeSet;
use std::fs;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use xshell::Shell;

use crate::build::deps;
use crate::build::kernel::{self, Variant, WorkTree};
use crate::build::trees;
use crate::cli::SeriesArgs;
use crate::paths;

/// One build of a prefix of the series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// "(pristine)" or the last patch applied.
    pub name: String,
    pub secs: u64,
    pub compiled: usize,
    /// The compiler's `warning:` lines.
    pub warnings: Vec<String>,
}

/// The compiler's warning lines in a build log.
pub fn warnings(log: &str) -> Vec<String> {
    log.lines().filter(|l| l.contains(": warning: ")).map(str::to_string).collect()
}

/// The step table, one line per build.
pub fn table(steps: &[Step]) -> String {
    let mut out = format!("{:<4} {:<72} {:>6} {:>8} {:>8}\n", "step", "applied up to", "secs", "compiled", "warnings");
    for (i, s) in steps.iter().enumerate() {
        out += &format!("{i:<4} {:<72} {:>6} {:>8} {:>8}\n", s.name, s.secs, s.compiled, s.warnings.len());
    }
    out
}

pub fn cmd(args: &SeriesArgs) -> Result<ExitCode> {
    deps::ensure(deps::Need::for_source(args.kernel_src.is_some()))?;
    let tree = trees::find(args.tree.as_deref())?;
    let choice = kernel::SourceChoice { tree: tree.clone(), dir: args.kernel_src.clone(), rebuild: false };
    let src_tree = kernel::resolve_source(&choice)?;
    let root = paths::project_root();
    let series = kernel::read_series(&root.join(&tree.series))?;
    if series.is_empty() {
        bail!("{}/series lists no patch: there is nothing to check", tree.series);
    }
    let fragments = Variant::Patched.fragments(&root.join("kernel-config"), &tree)?;
    let mut requested = Vec::new();
    for (name, text) in &fragments {
        requested.extend(kernel::parse_fragment(name, text)?);
    }
    let cache = paths::cache_dir()?;
    let work = WorkTree::lock(&format!("series-{}", tree.name), &format!("the {} series work tree", tree.name))?;
    work.relink(&src_tree.tree)?;
    // The previous check left build/ compiled from the whole series: every
    // file a patch touches gets a fresh mtime, so step 0 compiles it pristine.
    // The tree's upstream fixes belong to the pristine step: every kernel of
    // the tree carries them.
    let fixes = kernel::tree_fixes(&root.join(&tree.series))?;
    let touched: BTreeSet<String> =
        fixes.iter().chain(&series).flat_map(|(_, bytes)| kernel::files_touched(bytes)).collect();
    work.refresh(&touched)?;
    let (src, build) = (&work.src, &work.build);
    let sh = Shell::new()?;
    kernel::configure("series", src, build, &fragments, &requested)?;
    let patches = root.join(&tree.series);
    for (name, _) in &fixes {
        kernel::apply_patch(&sh, src, &patches.join(name))?;
    }
    let mut steps = Vec::new();
    for k in 0..=series.len() {
        let name = if k == 0 { "(pristine)".to_string() } else { series[k - 1].0.clone() };
        if k > 0 {
            kernel::apply_patch(&sh, src, &patches.join(&name))?;
        }
        eprintln!("[series] step {k}/{}: {name}", series.len());
        let log = build.join(format!("series-step-{k}.log"));
        let start = Instant::now();
        let compiled = kernel::make(&format!("series {k}"), src, build, &cache, &log, None).with_context(|| {
            format!("the series does not build with patches 1..{k} applied (the last one is patches/{name})")
        })?;
        let text = fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
        steps.push(Step { name, secs: start.elapsed().as_secs(), compiled, warnings: warnings(&text) });
    }
    print!("{}", table(&steps));
    let warned: Vec<&Step> = steps.iter().skip(1).filter(|s| !s.warnings.is_empty()).collect();
    if warned.is_empty() {
        println!("every prefix of the series builds without compiler warnings");
        return Ok(ExitCode::SUCCESS);
    }
    for s in warned {
        println!("compiler warnings after {}:\n  {}", s.name, s.warnings.join("\n  "));
    }
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_found_and_tabled() {
        let log = "  CC      fs/xfs/xfs_bmap_util.o\nfs/xfs/xfs_bmap_util.c:12:5: warning: unused variable 'x' [-Wunused-variable]\n  LD      vmlinux\n";
        let w = warnings(log);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("unused variable"));
        let steps = vec![
            Step { name: "(pristine)".into(), secs: 200, compiled: 1700, warnings: Vec::new() },
            Step { name: "0001-vfs.patch".into(), secs: 60, compiled: 500, warnings: w },
        ];
        let t = table(&steps);
        assert!(t.lines().nth(2).is_some_and(|l| l.starts_with("1    0001-vfs.patch") && l.ends_with(" 1")), "{t}");
    }
}
