//! `cargo xtask bench`: the figures the project holds itself to, as medians
//! of several runs measured side by side: warm end-to-end `run` with nothing
//! to rebuild, boot to the first KTAP line and dax-smoke time per kernel
//! variant (with the patched/baseline ratio), the compressed initramfs size,
//! device DMA (READ_FIXED) into a sealed file's pinned pages against the
//! same into anonymous memory and Soft-RoCE memory registration of a sealed
//! DAX mapping against anonymous memory (pinned-dma, patched kernel), swap
//! throughput through a sealed swapfile against swap on a raw pmem device
//! (swap-pressure on a third NVDIMM, patched kernel), userspace-flush's
//! commit rates and first-touch fault latencies (patched kernel; the fault
//! histograms go to images/bench/flush-latency.json for plotting), and with
//! `--cold` a kernel build from empty caches.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::build::initramfs;
use crate::build::kernel::{self, Variant};
use crate::cli::BenchArgs;
use crate::paths;
use crate::report::html::{self, Figure};

/// Targets on the reference machine (2 cores, TCG).
const WARM_RUN_TARGET: Duration = Duration::from_secs(30);
const FIRST_KTAP_TARGET: Duration = Duration::from_secs(4);
const INITRAMFS_TARGET: u64 = 16 << 20;
/// READ_FIXED into sealed pmem pages, as a fraction of the same into
/// anonymous memory from the same disk in the same boot.
const DMA_RATIO_TARGET: f64 = 0.9;
/// Records made durable per second by the sealed writer (MAP_SYNC, clwb and
/// sfence), as a multiple of write + fdatasync per record.
const COMMIT_RATIO_TARGET: f64 = 10.0;
/// The userspace-flush writers whose commit rates are reported.
const WRITERS: [&str; 3] = ["sealed", "sparse-map-sync", "fdatasync-control"];
/// The DMA cases of pinned-dma, one per data disk.
const DMA_CASES: [&str; 2] = ["virtio-dma-through-the-pin", "nvme-dma-through-the-pin"];
/// Swap through the sealed swapfile, as a fraction of swap on a raw pmem
/// device under the same pressure in the same boot.
const SWAP_RATIO_TARGET: f64 = 0.95;
/// swap-pressure's cases: the sealed swapfile, and the raw device.
const SWAP_CASES: [&str; 2] = ["pressure-through-sealed-swapfile", "pressure-through-raw-pmem-swap"];
/// pinned-dma's case that times `ibv_reg_mr`.
const MR_CASE: &str = "sealed-dax-reg-mr";

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
    run_once(images.path(), SMOKE)?;

    let mut wall = Vec::new();
    let mut first = [Vec::new(), Vec::new()];
    let mut smoke = [Vec::new(), Vec::new()];
    for i in 0..args.runs {
        let start = Instant::now();
        let results = run_once(images.path(), SMOKE)?;
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
    let mut dma: Vec<[Vec<f64>; 2]> = DMA_CASES.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    let mut mr = [Vec::new(), Vec::new()];
    for i in 0..args.runs {
        let results = run_once(images.path(), DMA)?;
        let detail = case_detail(&results, "patched", "pinned-dma", MR_CASE)
            .with_context(|| format!("pinned-dma reported no {MR_CASE} figures"))?;
        let (sealed, anon) = mr_figures(&detail).with_context(|| format!("{MR_CASE}: {detail}"))?;
        mr[0].push(sealed);
        mr[1].push(anon);
        for (case, slot) in DMA_CASES.iter().zip(dma.iter_mut()) {
            let detail = case_detail(&results, "patched", "pinned-dma", case)
                .with_context(|| format!("pinned-dma reported no {case} figures"))?;
            let (sealed, anon) = dma_figures(&detail).with_context(|| format!("{case}: {detail}"))?;
            slot[0].push(sealed);
            slot[1].push(anon);
        }
        eprintln!("[bench] pinned-dma run {}/{}", i + 1, args.runs);
    }
    let mut swap = [Vec::new(), Vec::new()];
    for i in 0..args.runs {
        let results = run_once(images.path(), SWAP)?;
        for (case, slot) in SWAP_CASES.iter().zip(swap.iter_mut()) {
            let detail = case_detail(&results, "patched", "swap-pressure", case)
                .with_context(|| format!("swap-pressure reported no {case}"))?;
            slot.push(swap_figure(&detail).with_context(|| format!("{case}: {detail}"))?);
        }
        eprintln!("[bench] swap-pressure run {}/{}", i + 1, args.runs);
    }
    let mut rates: Vec<Vec<f64>> = WRITERS.iter().map(|_| Vec::new()).collect();
    let mut faults: Vec<[Vec<f64>; 2]> = FAULT_KINDS.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    let mut histograms = serde_json::Map::new();
    for i in 0..args.runs {
        let results = run_once(images.path(), FLUSH)?;
        let writers = case_detail(&results, "patched", "userspace-flush", FLUSH_WRITERS_CASE)
            .context("userspace-flush reported no writer figures")?;
        for (w, slot) in WRITERS.iter().zip(rates.iter_mut()) {
            slot.push(commit_rate(&writers, w).with_context(|| format!("no {w} rate in: {writers}"))?);
        }
        let detail = case_detail(&results, "patched", "userspace-flush", FAULTS_CASE)
            .context("userspace-flush reported no fault figures")?;
        for (kind, slot) in FAULT_KINDS.iter().zip(faults.iter_mut()) {
            let (p50, p99) = fault_figures(&detail, kind).with_context(|| format!("no {kind} faults in: {detail}"))?;
            slot[0].push(p50);
            slot[1].push(p99);
        }
        histograms.insert(format!("run-{}", i + 1), serde_json::Value::String(detail));
        eprintln!("[bench] userspace-flush run {}/{}", i + 1, args.runs);
    }
    let bench_dir = paths::images_dir().join("bench");
    paths::ensure_dir(&bench_dir)?;
    let latency_file = bench_dir.join("flush-latency.json");
    paths::write_atomic(&latency_file, &serde_json::to_vec_pretty(&histograms)?)?;
    let initramfs = initramfs::build()?;

    println!("benchmark (medians of {} runs, accelerator as `cargo xtask run` chooses it)", args.runs);
    let mut figs = Figures::default();
    let warm = median(&mut wall);
    figs.add(
        format!("  warm `cargo xtask run --workload dax-smoke` (both kernels), nothing to rebuild: {warm:.1} s"),
        Figure::new("warm run, nothing to rebuild", "s", &[("both kernels", warm)])
            .target(format!("<= {} s", WARM_RUN_TARGET.as_secs()), warm <= WARM_RUN_TARGET.as_secs_f64()),
    );
    let f = [median(&mut first[0]), median(&mut first[1])];
    figs.add(
        format!("  boot to first KTAP line: patched {:.2} s, baseline {:.2} s, ratio {:.2}", f[0], f[1], f[0] / f[1]),
        Figure::new("boot to first KTAP line", "s", &[("patched", f[0]), ("baseline", f[1])])
            .target(format!("<= {} s", FIRST_KTAP_TARGET.as_secs()), f[0].max(f[1]) <= FIRST_KTAP_TARGET.as_secs_f64()),
    );
    let s = [median(&mut smoke[0]), median(&mut smoke[1])];
    figs.add(
        format!("  dax-smoke workload: patched {:.3} s, baseline {:.3} s, ratio {:.2}", s[0], s[1], s[0] / s[1]),
        Figure::new("dax-smoke workload", "s", &[("patched", s[0]), ("baseline", s[1])]),
    );
    let mib = initramfs.compressed_bytes as f64 / (1 << 20) as f64;
    figs.add(
        format!("  compressed initramfs: {mib:.2} MiB"),
        Figure::new("compressed initramfs", "MiB", &[("initramfs", mib)])
            .target(format!("<= {} MiB", INITRAMFS_TARGET >> 20), initramfs.compressed_bytes <= INITRAMFS_TARGET),
    );
    for (case, slot) in DMA_CASES.iter().zip(dma.iter_mut()) {
        let (sealed, anon) = (median(&mut slot[0]), median(&mut slot[1]));
        figs.add(
            format!(
                "  {case} READ_FIXED qd16: sealed pmem {sealed:.0} MiB/s, anonymous {anon:.0} MiB/s, ratio {:.2}",
                sealed / anon
            ),
            Figure::new(&format!("{case} READ_FIXED qd16"), "MiB/s", &[("sealed pmem", sealed), ("anonymous", anon)])
                .target(format!("ratio >= {DMA_RATIO_TARGET}"), sealed / anon >= DMA_RATIO_TARGET),
        );
    }
    let (sealed, anon) = (median(&mut mr[0]), median(&mut mr[1]));
    figs.add(
        format!(
            "  Soft-RoCE ibv_reg_mr of 16 MiB (median of 5 per run): sealed DAX {sealed:.2} ms, anonymous {anon:.2} ms, \
             ratio {:.2}",
            sealed / anon
        ),
        Figure::new("Soft-RoCE ibv_reg_mr of 16 MiB", "ms", &[("sealed DAX", sealed), ("anonymous", anon)]),
    );
    let (sealed, raw) = (median(&mut swap[0]), median(&mut swap[1]));
    figs.add(
        format!(
            "  swap-out + swap-in under cgroup pressure: sealed swapfile {sealed:.0} MiB/s, raw pmem device {raw:.0} \
             MiB/s, ratio {:.2}",
            sealed / raw
        ),
        Figure::new("swap under cgroup pressure", "MiB/s", &[("sealed swapfile", sealed), ("raw pmem device", raw)])
            .target(format!("ratio >= {SWAP_RATIO_TARGET}"), sealed / raw >= SWAP_RATIO_TARGET),
    );
    let rate: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
    figs.add(
        format!(
            "  userspace-flush commit rate: sealed MAP_SYNC + {{clwb,sfence}} {:.0}/s, sparse MAP_SYNC {:.0}/s, \
             write + fdatasync {:.0}/s; sealed/fdatasync {:.1}x",
            rate[0],
            rate[1],
            rate[2],
            rate[0] / rate[2]
        ),
        Figure::new(
            "userspace-flush commit rate",
            "records/s",
            &[
                ("sealed MAP_SYNC + clwb, sfence", rate[0]),
                ("sparse MAP_SYNC", rate[1]),
                ("write + fdatasync", rate[2]),
            ],
        )
        .target(format!("sealed/fdatasync >= {COMMIT_RATIO_TARGET}x"), rate[0] / rate[2] >= COMMIT_RATIO_TARGET),
    );
    for (kind, slot) in FAULT_KINDS.iter().zip(faults.iter_mut()) {
        let (p50, p99) = (median(&mut slot[0]), median(&mut slot[1]));
        figs.add(
            format!("  first-touch MAP_SYNC write fault, {kind} file: p50 {p50:.1} us, p99 {p99:.1} us"),
            Figure::new(&format!("first-touch MAP_SYNC write fault, {kind} file"), "us", &[("p50", p50), ("p99", p99)]),
        );
    }
    if args.cold {
        let secs = cold_build()?;
        figs.add(
            format!("  cold kernel build (baseline; empty build cache and ccache): {secs:.0} s"),
            Figure::new("cold kernel build (baseline)", "s", &[("baseline", secs)]),
        );
    }
    // The fault histograms of every run, summed per kind (in the order the
    // kinds first appear), drawn on the page.
    let mut summed: Vec<(String, std::collections::BTreeMap<u32, u64>)> = Vec::new();
    for detail in histograms.values().filter_map(|v| v.as_str()) {
        for (kind, buckets) in detail.lines().filter_map(html::histogram) {
            let at = summed.iter().position(|(k, _)| *k == kind).unwrap_or_else(|| {
                summed.push((kind, Default::default()));
                summed.len() - 1
            });
            for (b, n) in buckets {
                *summed[at].1.entry(b).or_default() += n;
            }
        }
    }
    let summed: Vec<(String, Vec<(u32, u64)>)> =
        summed.into_iter().map(|(k, b)| (k, b.into_iter().collect())).collect();
    let page = bench_dir.join("bench.html");
    paths::write_atomic(&bench_dir.join("bench.json"), &serde_json::to_vec_pretty(&figs.0)?)?;
    paths::write_atomic(&page, html::bench_page(args.runs, &figs.0, &summed).as_bytes())?;
    println!("  (figures as plots: {}; fault histograms of each run: {})", page.display(), latency_file.display());
    Ok(())
}

/// The figures of one bench run, in the order printed.
#[derive(Default)]
struct Figures(Vec<Figure>);

impl Figures {
    /// Prints `line` with the figure's target verdict, and keeps the figure.
    fn add(&mut self, line: String, figure: Figure) {
        match &figure.target {
            Some(t) => println!("{line}  [target {}: {}]", t.what, verdict(t.met)),
            None => println!("{line}"),
        }
        self.0.push(figure);
    }
}

/// `cargo xtask run` arguments of the two timed runs.
const SMOKE: &[&str] = &["--workload", "dax-smoke"];
const DMA: &[&str] = &["--kernel", "patched", "--workload", "pinned-dma"];
const FLUSH: &[&str] = &["--kernel", "patched", "--workload", "userspace-flush"];
/// A third NVDIMM, overwritten by swap-pressure as the raw swap device.
const SWAP: &[&str] =
    &["--kernel", "patched", "--workload", "swap-pressure", "--nvdimms", "3", "--param", "swap-pressure.raw-pmem=2"];
const FLUSH_WRITERS_CASE: &str = "writers: 2048 records each, flushed and fenced";
const FAULTS_CASE: &str = "first-touch write faults through MAP_SYNC";
const FAULT_KINDS: [&str; 3] = ["sealed", "preallocated", "sparse"];

/// Records per second of `writer` in the writers case:
/// "sealed: 2048 records in 0.03 s (67915/s)".
fn commit_rate(detail: &str, writer: &str) -> Option<f64> {
    let line = detail.lines().find_map(|l| l.trim().strip_prefix(&format!("{writer}: ")))?;
    line.rsplit_once('(')?.1.strip_suffix("/s)")?.parse().ok()
}

/// p50 and p99 (µs) of one kind in the faults case:
/// "sealed: first-touch write fault p50 3.1 us, p99 9.8 us over 256 pages".
fn fault_figures(detail: &str, kind: &str) -> Option<(f64, f64)> {
    let line = detail.lines().find_map(|l| l.trim().strip_prefix(&format!("{kind}: first-touch write fault ")))?;
    let figure = |key: &str| -> Option<f64> {
        line.split(", ")
            .find_map(|part| part.split(" over ").next()?.trim().strip_prefix(key)?.strip_suffix(" us")?.parse().ok())
    };
    Some((figure("p50 ")?, figure("p99 ")?))
}

/// One `cargo xtask run ARGS` on the given images, through cargo as a user
/// types it; returns its results.json.
fn run_once(images: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["run", "--quiet", "--package", "xtask", "--", "run"])
        .args(args)
        .current_dir(paths::project_root())
        .env("DAX_SEAL_IMAGES", images)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running cargo xtask run")?;
    let results = images.join("runs/latest/results.json");
    if !status.success() {
        // The images directory is temporary: keep the failed run's outputs.
        let kept = paths::images_dir().join("bench").join(format!("failed-{}", paths::timestamp()));
        let copied = copy_dir(&images.join("runs/latest"), &kept);
        bail!(
            "`xtask run {}` failed ({status}); {}",
            args.join(" "),
            match copied {
                Ok(()) => format!("its outputs (results.json, summary.txt, consoles) are in {}", kept.display()),
                Err(e) => format!("keeping its outputs failed too ({e:#}); they were in {}", results.display()),
            }
        );
    }
    let text = std::fs::read(&results).with_context(|| format!("reading {}", results.display()))?;
    Ok(serde_json::from_slice(&text)?)
}

/// Copies the files of `from` (one level) into a new directory `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    paths::ensure_dir(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn case_detail(results: &serde_json::Value, kernel: &str, workload: &str, case: &str) -> Option<String> {
    let run = results["runs"].as_array()?.iter().find(|r| r["kernel"] == kernel && r["workload"] == workload)?;
    let c = run["cases"].as_array()?.iter().find(|c| c["name"] == case)?;
    c["detail"].as_str().map(str::to_string)
}

/// The sealed and anonymous qd16 READ_FIXED figures (MiB/s) of a DMA case:
/// "..., qd16 2063 MiB/s, anonymous qd16 2200 MiB/s, ...".
fn dma_figures(detail: &str) -> Option<(f64, f64)> {
    let figure = |key: &str| -> Option<f64> {
        detail.split(", ").find_map(|part| part.trim().strip_prefix(key)?.strip_suffix(" MiB/s")?.parse().ok())
    };
    Some((figure("qd16 ")?, figure("anonymous qd16 ")?))
}

/// The sealed and anonymous registration times (ms) of the MR case:
/// "...; ibv_reg_mr median of 5: sealed DAX 1.20 ms, anonymous 0.90 ms".
fn mr_figures(detail: &str) -> Option<(f64, f64)> {
    Some((number_after(detail, "sealed DAX ", " ms")?, number_after(detail, "anonymous ", " ms")?))
}

/// MiB/s of a pressure case: "..., swap throughput 412 MiB/s); ...".
fn swap_figure(detail: &str) -> Option<f64> {
    number_after(detail, "swap throughput ", " MiB/s")
}

/// The number between the first `key` in `detail` and the `unit` after it.
fn number_after(detail: &str, key: &str, unit: &str) -> Option<f64> {
    let rest = &detail[detail.find(key)? + key.len()..];
    rest.split(unit).next()?.parse().ok()
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

    #[test]
    fn flush_figures_come_from_the_case_details() {
        let w = "flush: clwb, then sfence, per record\nsealed: 2048 records in 0.03 s (67915/s)\n\
                 fdatasync-control: 2048 records in 1.54 s (1333/s)";
        assert_eq!(super::commit_rate(w, "sealed"), Some(67915.0));
        assert_eq!(super::commit_rate(w, "fdatasync-control"), Some(1333.0));
        assert_eq!(super::commit_rate(w, "sparse-map-sync"), None);
        let f = "sealed: first-touch write fault p50 3.1 us, p99 9.8 us over 256 pages\ndax-seal latency sealed 1:3";
        assert_eq!(super::fault_figures(f, "sealed"), Some((3.1, 9.8)));
        assert_eq!(super::fault_figures(f, "sparse"), None);
    }

    #[test]
    fn dma_figures_come_from_the_case_detail() {
        let d = "/dev/vda: device read 192 MiB; qd1 773 MiB/s, qd4 1401 MiB/s, qd16 2063 MiB/s, anonymous qd16 \
                 2200 MiB/s, WRITE_FIXED qd16 2435 MiB/s";
        assert_eq!(super::dma_figures(d), Some((2063.0, 2200.0)));
        assert_eq!(super::dma_figures("qd16 1 MiB/s"), None);
        let m = "16 MiB sealed in 1 extent(s); ibv_reg_mr median of 5: sealed DAX 1.20 ms, anonymous 0.90 ms";
        assert_eq!(super::mr_figures(m), Some((1.2, 0.9)));
        assert_eq!(super::mr_figures("sealed DAX 1.20 ms"), None);
        let p =
            "3 round(s) (pswpout 1 pswpin 2 pages, memory.swap.peak 150 MiB, oom_kill 0, swap throughput 412 MiB/s); x";
        assert_eq!(super::swap_figure(p), Some(412.0));
        assert_eq!(super::swap_figure("swap throughput fast"), None);
    }
}
