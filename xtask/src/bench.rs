//! `cargo xtask bench`: the figures the project holds itself to, as medians
//! of several runs measured side by side: warm end-to-end `run` with nothing
//! to rebuild, boot to the first KTAP line and dax-smoke time per kernel
//! variant (with the patched/baseline ratio), the compressed initramfs size,
//! and with `--cold` a kernel build from empty caches.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cli::BenchArgs;
use crate::kernel::{self, Variant};
use crate::{initramfs, paths};

/// Targets on the reference machine (2 cores, TCG).
const WARM_RUN_TARGET: Duration = Duration::from_secs(30);
const FIRST_KTAP_TARGET: Duration = Duration::from_secs(4);
const INITRAMFS_TARGET: u64 = 16 << 20;

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "within target"
    } else {
        "OVER TARGET"
    }
}

pub fn cmd(args: &BenchArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let images = tempfile::Builder::new().prefix("dax-seal-bench-").tempdir()?;
    // One untimed run builds whatever is missing and makes the filesystems.
    eprintln!("[bench] warm-up run (builds what is missing)");
    run_once(images.path())?;

    let mut wall = Vec::new();
    let mut first = [Vec::new(), Vec::new()];
    let mut smoke = [Vec::new(), Vec::new()];
    for i in 0..args.runs {
        let start = Instant::now();
        let results = run_once(images.path())?;
        wall.push(start.elapsed().as_secs_f64());
        for (slot, variant) in [Variant::Patched, Variant::Baseline].iter().enumerate() {
            let boot = results["boots"].as_array().and_then(|b| b.iter().find(|b| b["kernel"] == variant.name()));
            if let Some(ms) = boot.and_then(|b| b["first_ktap_ms"].as_f64()) {
                first[slot].push(ms / 1000.0);
            }
            let run = results["runs"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["kernel"] == variant.name() && r["workload"] == "dax-smoke"));
            if let Some(cases) = run.and_then(|r| r["cases"].as_array()) {
                smoke[slot].push(cases.iter().filter_map(|c| c["duration_ms"].as_f64()).sum::<f64>() / 1000.0);
            }
        }
        eprintln!("[bench] run {}/{}: {:.1} s", i + 1, args.runs, wall[i]);
    }
    let initramfs = initramfs::build()?;

    println!("benchmark (medians of {} runs, accelerator as `cargo xtask run` chooses it)", args.runs);
    let warm = median(&mut wall);
    println!(
        "  warm `cargo xtask run --workload dax-smoke` (both kernels), nothing to rebuild: {warm:.1} s  [target <= {} s: {}]",
        WARM_RUN_TARGET.as_secs(),
        verdict(warm <= WARM_RUN_TARGET.as_secs_f64())
    );
    let f = [median(&mut first[0]), median(&mut first[1])];
    println!(
        "  boot to first KTAP line: patched {:.2} s, baseline {:.2} s, ratio {:.2}  [target <= {} s: {}]",
        f[0],
        f[1],
        f[0] / f[1],
        FIRST_KTAP_TARGET.as_secs(),
        verdict(f[0].max(f[1]) <= FIRST_KTAP_TARGET.as_secs_f64())
    );
    let s = [median(&mut smoke[0]), median(&mut smoke[1])];
    println!("  dax-smoke workload: patched {:.3} s, baseline {:.3} s, ratio {:.2}", s[0], s[1], s[0] / s[1]);
    println!(
        "  compressed initramfs: {:.2} MiB  [target <= {} MiB: {}]",
        initramfs.compressed_bytes as f64 / (1 << 20) as f64,
        INITRAMFS_TARGET >> 20,
        verdict(initramfs.compressed_bytes <= INITRAMFS_TARGET)
    );
    if args.cold {
        let secs = cold_build()?;
        println!("  cold kernel build (baseline; empty build cache and ccache): {secs:.0} s");
    }
    Ok(())
}

/// One `cargo xtask run --workload dax-smoke` on the given images, through
/// cargo as a user types it; returns its results.json.
fn run_once(images: &Path) -> Result<serde_json::Value> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["run", "--quiet", "--package", "xtask", "--", "run", "--workload", "dax-smoke"])
        .current_dir(paths::project_root())
        .env("DAX_SEAL_IMAGES", images)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running cargo xtask run")?;
    let results = images.join("runs/latest/results.json");
    if !status.success() {
        bail!("`xtask run --workload dax-smoke` failed ({status}); see {}", results.display());
    }
    let text = std::fs::read(&results).with_context(|| format!("reading {}", results.display()))?;
    Ok(serde_json::from_slice(&text)?)
}

/// Builds the baseline kernel with a private, empty cache directory.
fn cold_build() -> Result<f64> {
    let cache = tempfile::Builder::new()
        .prefix("dax-seal-cold-")
        .tempdir_in(paths::cache_dir()?.parent().unwrap_or(Path::new("/tmp")))?;
    std::env::set_var("DAX_SEAL_CACHE", cache.path());
    let start = Instant::now();
    let source = kernel::resolve_source(None)?;
    kernel::ensure(Variant::Baseline, &source, false)?;
    let secs = start.elapsed().as_secs_f64();
    std::env::remove_var("DAX_SEAL_CACHE");
    Ok(secs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn medians() {
        assert_eq!(super::median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(super::median(&mut []).is_nan());
    }
}
