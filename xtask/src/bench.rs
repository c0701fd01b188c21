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

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dax_seal_protocol::disks::DATA_DISKS;
use dax_seal_protocol::{figure, flush};

use crate::build::initramfs;
use crate::build::kernel::{self, Variant};
use crate::build::trees;
use crate::cli::BenchArgs;
use crate::paths;
use crate::report::html::{self, Chart};
use crate::report::results::Results;

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
/// Swap through the sealed swapfile, as a fraction of swap on a raw pmem
/// device under the same pressure in the same boot.
const SWAP_RATIO_TARGET: f64 = 0.95;

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
    let mut samples = Samples::default();
    let mut histograms = Vec::new();
    for campaign in CAMPAIGNS {
        for i in 0..args.runs {
            let start = Instant::now();
            let results = run_once(images.path(), campaign.args)?;
            // The smoke runs time the whole `run` too.
            if campaign.args == SMOKE {
                samples.push(WARM, start.elapsed().as_secs_f64());
            }
            (campaign.take)(&results, &mut samples)?;
            let lines = latency_lines(&results);
            if !lines.is_empty() {
                histograms.push(lines);
            }
            eprintln!("[bench] {} run {}/{}", campaign.name, i + 1, args.runs);
        }
    }
    let bench_dir = paths::images_dir().join("bench");
    paths::ensure_dir(&bench_dir)?;
    let latency_file = bench_dir.join("flush-latency.json");
    paths::write_atomic(&latency_file, &serde_json::to_vec_pretty(&histograms)?)?;
    let initramfs = initramfs::build()?;

    println!("benchmark (medians of {} runs, accelerator as `cargo xtask run` chooses it)", args.runs);
    let mut charts = charts(&mut samples, initramfs.compressed_bytes);
    if args.cold {
        let secs = cold_build()?;
        charts.add(
            format!("  cold kernel build (baseline; empty build cache and ccache): {secs:.0} s"),
            Chart::new("cold kernel build (baseline)", "s", &[("baseline", secs)]),
        );
    }
    let page = bench_dir.join("bench.html");
    paths::write_atomic(&bench_dir.join("bench.json"), &serde_json::to_vec_pretty(&charts.0)?)?;
    paths::write_atomic(&page, html::bench_page(args.runs, &charts.0, &summed_histograms(&histograms)).as_bytes())?;
    println!("  (figures as plots: {}; fault histograms of each run: {})", page.display(), latency_file.display());
    Ok(())
}

/// Every value of each named figure over a bench's runs.
#[derive(Default)]
struct Samples(BTreeMap<String, Vec<f64>>);

impl Samples {
    fn push(&mut self, name: &str, value: f64) {
        self.0.entry(name.to_string()).or_default().push(value);
    }

    /// The median of `name` (NaN when no run measured it).
    fn median(&mut self, name: &str) -> f64 {
        median(self.0.get_mut(name).map_or(&mut [][..], |v| &mut v[..]))
    }

    /// The `n` figures under `prefix` with the largest medians, largest
    /// first, named without the prefix.
    fn slowest(&mut self, prefix: &str, n: usize) -> Vec<(String, f64)> {
        let names: Vec<String> = self.0.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        let mut all: Vec<(String, f64)> =
            names.into_iter().map(|k| (k[prefix.len()..].to_string(), self.median(&k))).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.truncate(n);
        all
    }

    /// Each figure the bench takes from `workload` on the patched kernel;
    /// the first missing one is an error naming it.
    fn take(&mut self, results: &Results, workload: &str) -> Result<()> {
        for name in figure_names(workload) {
            let value = results.figure(PATCHED, workload, &name).context("cargo xtask bench reads this figure")?;
            self.push(&name, value);
        }
        Ok(())
    }
}

/// One set of timed runs of `workload`: `cargo xtask run ARGS`, and the
/// figures taken from each run's results.
struct Campaign {
    name: &'static str,
    args: &'static [&'static str],
    take: fn(&Results, &mut Samples) -> Result<()>,
}

/// The figures the bench takes from `workload` on the patched kernel (a
/// VM test checks the workloads report each one).
pub fn figure_names(workload: &str) -> Vec<String> {
    let mut names = Vec::new();
    match workload {
        "pinned-dma" => {
            names.extend([figure::REG_MR_SEALED.to_string(), figure::REG_MR_ANONYMOUS.to_string()]);
            for disk in DATA_DISKS {
                names.push(figure::read_fixed(disk.name, DMA_DEPTH));
                names.push(figure::read_fixed_anonymous(disk.name, DMA_DEPTH));
            }
        }
        "swap-pressure" => names.extend(SWAP_DEVICES.map(|(d, _)| figure::swap_throughput(d))),
        "userspace-flush" => {
            names.extend(WRITERS.iter().map(|(w, _)| figure::commit_rate(w)));
            for kind in FAULT_KINDS {
                names.extend([figure::fault(kind, 50), figure::fault(kind, 99)]);
            }
        }
        _ => {}
    }
    names
}

const PATCHED: &str = "patched";
/// The wall time of a whole warm `run`, nothing to rebuild.
const WARM: &str = "warm-run";

const CAMPAIGNS: [Campaign; 5] = [
    Campaign { name: "dax-smoke", args: SMOKE, take: smoke_figures },
    Campaign { name: "initcalls", args: INITCALLS, take: initcall_figures },
    Campaign { name: "pinned-dma", args: DMA, take: |r, s| s.take(r, "pinned-dma") },
    Campaign { name: "swap-pressure", args: SWAP, take: |r, s| s.take(r, "swap-pressure") },
    Campaign { name: "userspace-flush", args: FLUSH, take: |r, s| s.take(r, "userspace-flush") },
];

/// Boot to first KTAP line and the dax-smoke time of each kernel.
fn smoke_figures(results: &Results, samples: &mut Samples) -> Result<()> {
    for variant in [Variant::Patched, Variant::Baseline] {
        let kernel = variant.name();
        let boot = results.boots.iter().find(|b| b.kernel == kernel);
        let first = boot.and_then(|b| b.first_ktap_ms).with_context(|| format!("the {kernel} boot sent no KTAP"))?;
        samples.push(&format!("{kernel}.first-ktap"), first as f64 / 1000.0);
        let run = results.runs.iter().find(|r| r.kernel == kernel && r.workload == "dax-smoke");
        let run = run.with_context(|| format!("dax-smoke did not run on the {kernel} kernel"))?;
        samples
            .push(&format!("{kernel}.dax-smoke"), run.cases.iter().map(|c| c.duration_ms as f64).sum::<f64>() / 1000.0);
        let console = boot.map(|b| b.console_log.clone()).unwrap_or_default();
        let text = std::fs::read_to_string(&console).with_context(|| format!("reading {}", console.display()))?;
        let at = kernel_to_init(&text).with_context(|| format!("{}: no 'Run /init' line", console.display()))?;
        samples.push(&format!("{kernel}.kernel-to-init"), at);
    }
    Ok(())
}

/// Each initcall's time (µs) in the boots with initcall_debug, per kernel.
fn initcall_figures(results: &Results, samples: &mut Samples) -> Result<()> {
    for variant in [Variant::Patched, Variant::Baseline] {
        let kernel = variant.name();
        let boot = results.boots.iter().find(|b| b.kernel == kernel).with_context(|| format!("no {kernel} boot"))?;
        let text = std::fs::read_to_string(&boot.console_log)
            .with_context(|| format!("reading {}", boot.console_log.display()))?;
        let calls = initcalls(&text);
        if calls.is_empty() {
            bail!("{}: no initcall_debug lines (was the kernel-arg taken?)", boot.console_log.display());
        }
        for (name, usecs) in calls {
            samples.push(&format!("{kernel}.initcall.{name}"), usecs as f64);
        }
    }
    Ok(())
}

/// The kernel's timestamp (s) at "Run /init as init process".
fn kernel_to_init(console: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.contains("Run /init as init process"))?;
    line.trim_start().strip_prefix('[')?.split(']').next()?.trim().parse().ok()
}

/// `initcall NAME+0x../0x.. returned R after N usecs` lines: each name and N.
fn initcalls(console: &str) -> Vec<(String, u64)> {
    console
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("] initcall ")? + "] initcall ".len()..];
            let name = rest.split(['+', ' ']).next()?;
            let usecs = rest.split(" after ").nth(1)?.strip_suffix(" usecs")?.trim().parse().ok()?;
            Some((name.to_string(), usecs))
        })
        .collect()
}

/// Every fault histogram line userspace-flush reported in one run.
fn latency_lines(results: &Results) -> Vec<String> {
    let runs = results.runs.iter().filter(|r| r.kernel == PATCHED && r.workload == "userspace-flush");
    let details = runs.flat_map(|r| &r.cases).map(|c| c.detail.as_str());
    details.flat_map(str::lines).filter(|l| html::histogram(l).is_some()).map(str::to_string).collect()
}

/// The fault histograms of every run, summed per kind (in the order the
/// kinds first appear).
fn summed_histograms(runs: &[Vec<String>]) -> Vec<(String, Vec<(u32, u64)>)> {
    let mut summed: Vec<(String, BTreeMap<u32, u64>)> = Vec::new();
    for (kind, buckets) in runs.iter().flatten().filter_map(|l| html::histogram(l)) {
        let at = summed.iter().position(|(k, _)| *k == kind).unwrap_or_else(|| {
            summed.push((kind, BTreeMap::new()));
            summed.len() - 1
        });
        for (b, n) in buckets {
            *summed[at].1.entry(b).or_default() += n;
        }
    }
    summed.into_iter().map(|(k, b)| (k, b.into_iter().collect())).collect()
}

/// The medians as printed lines and charts, with their targets.
fn charts(s: &mut Samples, initramfs_bytes: u64) -> Charts {
    let mut charts = Charts::default();
    let warm = s.median(WARM);
    charts.add(
        format!("  warm `cargo xtask run --workload dax-smoke` (both kernels), nothing to rebuild: {warm:.1} s"),
        Chart::new("warm run, nothing to rebuild", "s", &[("both kernels", warm)])
            .target(format!("<= {} s", WARM_RUN_TARGET.as_secs()), warm <= WARM_RUN_TARGET.as_secs_f64()),
    );
    let f = [s.median("patched.first-ktap"), s.median("baseline.first-ktap")];
    charts.add(
        format!("  boot to first KTAP line: patched {:.2} s, baseline {:.2} s, ratio {:.2}", f[0], f[1], f[0] / f[1]),
        Chart::new("boot to first KTAP line", "s", &[("patched", f[0]), ("baseline", f[1])])
            .target(format!("<= {} s", FIRST_KTAP_TARGET.as_secs()), f[0].max(f[1]) <= FIRST_KTAP_TARGET.as_secs_f64()),
    );
    let k = [s.median("patched.kernel-to-init"), s.median("baseline.kernel-to-init")];
    charts.add(
        format!("  kernel start to init: patched {:.2} s, baseline {:.2} s (kernel timestamps)", k[0], k[1]),
        Chart::new("kernel start to init", "s", &[("patched", k[0]), ("baseline", k[1])]),
    );
    for kernel in ["patched", "baseline"] {
        let slowest = s.slowest(&format!("{kernel}.initcall."), 10);
        let listed: Vec<String> = slowest.iter().map(|(n, us)| format!("{n} {:.0} ms", us / 1000.0)).collect();
        let bars: Vec<(&str, f64)> = slowest.iter().map(|(n, us)| (n.as_str(), us / 1000.0)).collect();
        charts.add(
            format!("  ten slowest initcalls, {kernel} (median ms, initcall_debug): {}", listed.join(", ")),
            Chart::new(&format!("ten slowest initcalls, {kernel}"), "ms", &bars),
        );
    }
    let d = [s.median("patched.dax-smoke"), s.median("baseline.dax-smoke")];
    charts.add(
        format!("  dax-smoke workload: patched {:.3} s, baseline {:.3} s, ratio {:.2}", d[0], d[1], d[0] / d[1]),
        Chart::new("dax-smoke workload", "s", &[("patched", d[0]), ("baseline", d[1])]),
    );
    let mib = initramfs_bytes as f64 / (1 << 20) as f64;
    charts.add(
        format!("  compressed initramfs: {mib:.2} MiB"),
        Chart::new("compressed initramfs", "MiB", &[("initramfs", mib)])
            .target(format!("<= {} MiB", INITRAMFS_TARGET >> 20), initramfs_bytes <= INITRAMFS_TARGET),
    );
    for disk in DATA_DISKS {
        let sealed = s.median(&figure::read_fixed(disk.name, DMA_DEPTH));
        let anon = s.median(&figure::read_fixed_anonymous(disk.name, DMA_DEPTH));
        let title = format!("{} READ_FIXED qd{DMA_DEPTH} into the pinned pages", disk.name);
        charts.add(
            format!("  {title}: sealed pmem {sealed:.0} MiB/s, anonymous {anon:.0} MiB/s, ratio {:.2}", sealed / anon),
            Chart::new(&title, "MiB/s", &[("sealed pmem", sealed), ("anonymous", anon)])
                .target(format!("ratio >= {DMA_RATIO_TARGET}"), sealed / anon >= DMA_RATIO_TARGET),
        );
    }
    let (sealed, anon) = (s.median(figure::REG_MR_SEALED), s.median(figure::REG_MR_ANONYMOUS));
    charts.add(
        format!(
            "  Soft-RoCE ibv_reg_mr of 16 MiB (median of 5 per run): sealed DAX {sealed:.2} ms, anonymous {anon:.2} ms, \
             ratio {:.2}",
            sealed / anon
        ),
        Chart::new("Soft-RoCE ibv_reg_mr of 16 MiB", "ms", &[("sealed DAX", sealed), ("anonymous", anon)]),
    );
    let [sealed, raw] = SWAP_DEVICES.map(|(d, _)| s.median(&figure::swap_throughput(d)));
    charts.add(
        format!(
            "  swap-out + swap-in under cgroup pressure: sealed swapfile {sealed:.0} MiB/s, raw pmem device {raw:.0} \
             MiB/s, ratio {:.2}",
            sealed / raw
        ),
        Chart::new(
            "swap under cgroup pressure",
            "MiB/s",
            &SWAP_DEVICES.map(|(_, label)| label).iter().copied().zip([sealed, raw]).collect::<Vec<_>>(),
        )
        .target(format!("ratio >= {SWAP_RATIO_TARGET}"), sealed / raw >= SWAP_RATIO_TARGET),
    );
    let rate: Vec<f64> = WRITERS.iter().map(|(w, _)| s.median(&figure::commit_rate(w))).collect();
    charts.add(
        format!(
            "  userspace-flush commit rate: sealed MAP_SYNC + {{clwb,sfence}} {:.0}/s, sparse MAP_SYNC {:.0}/s, \
             write + fdatasync {:.0}/s; sealed/fdatasync {:.1}x",
            rate[0],
            rate[1],
            rate[2],
            rate[0] / rate[2]
        ),
        Chart::new(
            "userspace-flush commit rate",
            "records/s",
            &WRITERS.iter().map(|(_, label)| *label).zip(rate.iter().copied()).collect::<Vec<_>>(),
        )
        .target(format!("sealed/fdatasync >= {COMMIT_RATIO_TARGET}x"), rate[0] / rate[2] >= COMMIT_RATIO_TARGET),
    );
    for kind in FAULT_KINDS {
        let (p50, p99) = (s.median(&figure::fault(kind, 50)), s.median(&figure::fault(kind, 99)));
        charts.add(
            format!("  first-touch MAP_SYNC write fault, {kind} file: p50 {p50:.1} us, p99 {p99:.1} us"),
            Chart::new(&format!("first-touch MAP_SYNC write fault, {kind} file"), "us", &[("p50", p50), ("p99", p99)]),
        );
    }
    charts
}

/// The charts of one bench run, in the order printed.
#[derive(Default)]
struct Charts(Vec<Chart>);

impl Charts {
    /// Prints `line` with the chart's target verdict, and keeps the chart.
    fn add(&mut self, line: String, chart: Chart) {
        match &chart.target {
            Some(t) => println!("{line}  [target {}: {}]", t.what, verdict(t.met)),
            None => println!("{line}"),
        }
        self.0.push(chart);
    }
}

/// `cargo xtask run` arguments of the timed runs.
const SMOKE: &[&str] = &["--workload", "dax-smoke"];
/// The same boots with every initcall's time on the console (which slows
/// the boot itself: only the initcalls are taken from these).
const INITCALLS: &[&str] =
    &["--workload", "dax-smoke", "--kernel-arg", "initcall_debug", "--kernel-arg", "ignore_loglevel"];
const DMA: &[&str] = &["--kernel", "patched", "--workload", "pinned-dma"];
const FLUSH: &[&str] = &["--kernel", "patched", "--workload", "userspace-flush"];
/// A third NVDIMM, overwritten by swap-pressure as the raw swap device.
const SWAP: &[&str] =
    &["--kernel", "patched", "--workload", "swap-pressure", "--nvdimms", "3", "--param", "swap-pressure.raw-pmem=2"];
/// The queue depth whose READ_FIXED throughputs are compared.
const DMA_DEPTH: usize = 16;
/// swap-pressure's swap areas: the sealed swapfile, and the raw device.
const SWAP_DEVICES: [(&str, &str); 2] = [("sealed-swapfile", "sealed swapfile"), ("raw-pmem", "raw pmem device")];
/// The userspace-flush writers whose commit rates are reported.
const WRITERS: [(&str, &str); 3] = [
    (flush::SEALED, "sealed MAP_SYNC + clwb, sfence"),
    (flush::SPARSE_MAP_SYNC, "sparse MAP_SYNC"),
    (flush::FDATASYNC_CONTROL, "write + fdatasync"),
];
const FAULT_KINDS: [&str; 3] = ["sealed", "preallocated", "sparse"];

/// One `cargo xtask run ARGS` on the given images, through cargo as a user
/// types it; returns its results.json.
fn run_once(images: &Path, args: &[&str]) -> Result<Results> {
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
    Results::read(&images.join("runs/latest"))
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

/// Builds the baseline kernel with a private, empty cache directory.
fn cold_build() -> Result<f64> {
    let cache = tempfile::Builder::new()
        .prefix("dax-seal-cold-")
        .tempdir_in(paths::cache_dir()?.parent().unwrap_or(Path::new("/tmp")))?;
    std::env::set_var("DAX_SEAL_CACHE", cache.path());
    let start = Instant::now();
    let source = kernel::resolve_source(&kernel::SourceChoice { tree: trees::find(None)?, dir: None, rebuild: false })?;
    kernel::ensure(Variant::Baseline, &source, false)?;
    let secs = start.elapsed().as_secs_f64();
    std::env::remove_var("DAX_SEAL_CACHE");
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use dax_seal_protocol::figure::{self, Figure};
    use dax_seal_protocol::ktap::{TestResult, Writer};

    use super::*;
    use crate::report::results::{judge, test_outcome};
    use crate::vm::boot::End;

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    /// pinned-dma on the patched kernel as the guest reports it: one case
    /// per figure, named and worded as `wording` says, each figure's line
    /// before its result (all but `drop`).
    fn dma_results(wording: &str, drop: Option<&str>) -> Results {
        let names = figure_names("pinned-dma");
        let mut w = Writer::new(Vec::new());
        w.header().unwrap();
        w.plan(1).unwrap();
        let mut sub = Writer::nested(Vec::new(), 1);
        sub.subtest_header("pinned-dma").unwrap();
        sub.plan(names.len()).unwrap();
        for (i, name) in names.iter().enumerate() {
            let value = 100.0 + i as f64;
            let mut note = format!("{wording} {value}");
            if Some(name.as_str()) != drop {
                note = format!("{note}\n{}", Figure::new(name.clone(), value, "MiB/s").line());
            }
            sub.diag(&note).unwrap();
            sub.result(i + 1, &format!("{wording} case {i}"), &TestResult::Pass).unwrap();
        }
        let mut stream = w.into_inner();
        stream.extend(sub.into_inner());
        let mut w = Writer::new(stream);
        w.result(1, "pinned-dma", &TestResult::Pass).unwrap();
        let stream = String::from_utf8(w.into_inner()).unwrap();
        let runs = judge(PATCHED, &["pinned-dma".to_string()], &test_outcome(&stream, End::PoweredOff));
        Results::of_runs("r", runs)
    }

    #[test]
    fn the_bench_reads_figures_whatever_the_cases_say() {
        for wording in ["qd16 at some MiB/s", "entirely different prose, anonymous qd16"] {
            let mut samples = Samples::default();
            samples.take(&dma_results(wording, None), "pinned-dma").unwrap();
            assert_eq!(samples.median(figure::REG_MR_SEALED), 100.0);
            assert_eq!(samples.median(figure::REG_MR_ANONYMOUS), 101.0);
            assert_eq!(samples.median(&figure::read_fixed("virtio", DMA_DEPTH)), 102.0);
            assert_eq!(samples.median(&figure::read_fixed_anonymous("nvme", DMA_DEPTH)), 105.0);
        }
    }

    #[test]
    fn a_missing_figure_is_named() {
        let gone = figure::read_fixed_anonymous("nvme", DMA_DEPTH);
        let err = Samples::default().take(&dma_results("x", Some(&gone)), "pinned-dma").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(&format!("reported no figure {gone}")), "{text}");
    }

    #[test]
    fn boot_figures_come_from_the_console() {
        let console = "[    0.384929] pci 0000:00:00.0: calling  quirk+0x0/0x10 @ 1\n\
                       [    0.400000] initcall acpi_init+0x0/0x500 returned 0 after 208000 usecs\n\
                       [    0.500000] initcall pty_init+0x0/0x230 returned 0 after 136208 usecs\n\
                       dax-seal-init: not a kernel line, initcall x after 5 usecs\n\
                       [    1.899870] Run /init as init process\n";
        assert_eq!(initcalls(console), [("acpi_init".to_string(), 208000), ("pty_init".to_string(), 136208)]);
        assert_eq!(kernel_to_init(console), Some(1.89987));
        assert_eq!(kernel_to_init("no init here"), None);
        let mut s = Samples::default();
        for (n, v) in [("k.initcall.a", 5.0), ("k.initcall.b", 9.0), ("k.initcall.c", 1.0), ("k.other", 99.0)] {
            s.push(n, v);
        }
        assert_eq!(s.slowest("k.initcall.", 2), [("b".to_string(), 9.0), ("a".to_string(), 5.0)]);
    }
}
