//! `cargo xtask bench`: the figures the project holds itself to, as medians
//! of several runs measured side by side: warm end-to-end `run` with nothing
//! to rebuild (kernels side by side), boot to the first KTAP line and
//! dax-smoke time per kernel variant booted alone (with the
//! patched/baseline ratio), the initramfs size,
//! device DMA (READ_FIXED) into a sealed file's pinned pages against the
//! same into anonymous memory and Soft-RoCE memory registration of a sealed
//! DAX mapping against anonymous memory (pinned-dma, patched kernel), swap
//! throughput through a sealed swapfile against swap on a raw pmem device
//! (swap-pressure on a third NVDIMM, patched kernel), userspace-flush's
//! commit rates and first-touch fault latencies against a device-dax
//! reference in the same boot (patched kernel, devdax topology; the fault
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

/// Targets on the reference machine (2 cores, TCG). A warm dax-smoke run
/// boots both kernels one after the other, so it is mostly two boots.
const WARM_RUN_TARGET: Duration = Duration::from_secs(3);
const FIRST_KTAP_TARGET: Duration = Duration::from_secs(1);
const INITRAMFS_TARGET: u64 = 16 << 20;
/// READ_FIXED into sealed pmem pages, as a fraction of the same into
/// anonymous memory from the same disk in the same boot.
const DMA_RATIO_TARGET: f64 = 0.9;
/// Records made durable per second by the sealed writer (MAP_SYNC, clwb and
/// sfence), as a multiple of write + fdatasync per record.
const COMMIT_RATIO_TARGET: f64 = 10.0;
/// The sealed file's p99 first-touch MAP_SYNC write fault over the same on
/// a device-dax mapping (no filesystem at all) in the same boot.
const DEVICE_DAX_FAULT_TARGET: f64 = 1.2;
/// Swap through the sealed swapfile, as a fraction of swap on a raw pmem
/// device under the same pressure in the same boot.
const SWAP_RATIO_TARGET: f64 = 0.95;
/// fsync of an unchanged large sealed file that nothing pinned, over the
/// same fsync of an unsealed file: the seal's pin walk costs at most this.
const FSYNC_RATIO_TARGET: f64 = 1.1;

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
    let trees: Vec<String> = trees::select(args.tree.as_deref())?.into_iter().map(|t| t.name).collect();
    let images = tempfile::Builder::new().prefix("dax-seal-bench-").tempdir()?;
    let bench_dir = paths::images_dir().join("bench");
    // Each timed run's outputs (consoles, results.json) are kept, so that a
    // figure can be traced to the boots it came from; the last bench's go.
    let kept_runs = bench_dir.join("runs");
    if kept_runs.exists() {
        std::fs::remove_dir_all(&kept_runs).with_context(|| format!("removing {}", kept_runs.display()))?;
    }
    // One untimed run per tree builds whatever is missing and makes the
    // filesystems.
    for tree in &trees {
        eprintln!("[bench] warm-up run on {tree} (builds what is missing)");
        run_once(images.path(), tree, SMOKE)?;
    }
    let mut samples = Samples::default();
    let mut histograms = Vec::new();
    for campaign in CAMPAIGNS {
        for i in 0..args.runs {
            // The trees take turns, so that what the machine does meanwhile
            // weighs on both alike.
            for tree in &trees {
                let start = Instant::now();
                let results = run_once(images.path(), tree, campaign.args)?;
                let mut samples = samples.of(tree);
                // The smoke runs time the whole `run` too.
                if campaign.args == SMOKE {
                    samples.push(WARM, start.elapsed().as_secs_f64());
                }
                (campaign.take)(&results, &mut samples)?;
                let kept = kept_runs.join(format!("{}-{tree}-{}", campaign.name.replace(' ', "-"), i + 1));
                copy_dir(&images.path().join("runs/latest"), &kept)?;
                let lines = latency_lines(&results, tree);
                if !lines.is_empty() {
                    histograms.push(lines.into_iter().map(|l| format!("{tree} {l}")).collect());
                }
                eprintln!("[bench] {tree} {} run {}/{}", campaign.name, i + 1, args.runs);
            }
        }
    }
    paths::ensure_dir(&bench_dir)?;
    let latency_file = bench_dir.join("flush-latency.json");
    paths::write_atomic(&latency_file, &serde_json::to_vec_pretty(&histograms)?)?;
    let initramfs = initramfs::build()?;

    println!(
        "benchmark of {} (medians of {} runs, accelerator as `cargo xtask run` chooses it)",
        trees.join(" and "),
        args.runs
    );
    let mut charts = charts(&mut samples, &trees, initramfs.bytes);
    if args.cold {
        let mut bars = Vec::new();
        for tree in &trees {
            for variant in [Variant::Patched, Variant::Baseline] {
                let secs = cold_build(tree, variant)?;
                bars.push((format!("{variant} {tree}"), secs));
            }
        }
        let listed: Vec<String> = bars.iter().map(|(k, s)| format!("{k} {s:.0} s")).collect();
        let bars: Vec<(&str, f64)> = bars.iter().map(|(k, s)| (k.as_str(), *s)).collect();
        charts.add(
            format!("  cold kernel build (empty build cache and ccache): {}", listed.join(", ")),
            Chart::new("cold kernel build", "s", &bars),
        );
    }
    if trees.len() > 1 {
        println!("{}", comparison(&mut samples, &trees));
    }
    let page = bench_dir.join("bench.html");
    paths::write_atomic(&bench_dir.join("bench.json"), &serde_json::to_vec_pretty(&charts.0)?)?;
    paths::write_atomic(&page, html::bench_page(args.runs, &charts.0, &summed_histograms(&histograms)).as_bytes())?;
    println!(
        "  (figures as plots: {}; fault histograms of each run: {}; each timed run's consoles and results: {})",
        page.display(),
        latency_file.display(),
        kept_runs.display()
    );
    Ok(())
}

/// Every value of each named figure over a bench's runs, per tree
/// (`TREE:NAME`).
#[derive(Default)]
struct Samples(BTreeMap<String, Vec<f64>>);

/// The figures of one tree: what a campaign takes from a run on it.
struct TreeSamples<'a> {
    all: &'a mut Samples,
    tree: &'a str,
}

impl TreeSamples<'_> {
    fn push(&mut self, name: &str, value: f64) {
        self.all.push(&format!("{}:{name}", self.tree), value);
    }

    /// Each figure the bench takes from `workload` on the tree's patched
    /// kernel; the first missing one is an error naming it.
    fn take(&mut self, results: &Results, workload: &str) -> Result<()> {
        let patched = kernel::kernel_name(self.tree, Variant::Patched);
        for name in figure_names(workload) {
            let value = results.figure(&patched, workload, &name).context("cargo xtask bench reads this figure")?;
            self.push(&name, value);
        }
        Ok(())
    }
}

impl Samples {
    fn of<'a>(&'a mut self, tree: &'a str) -> TreeSamples<'a> {
        TreeSamples { all: self, tree }
    }

    /// The median of `name` on `tree`.
    fn at(&mut self, tree: &str, name: &str) -> f64 {
        self.median(&format!("{tree}:{name}"))
    }

    fn push(&mut self, name: &str, value: f64) {
        self.0.entry(name.to_string()).or_default().push(value);
    }

    /// The median of `name` (NaN when no run measured it).
    fn median(&mut self, name: &str) -> f64 {
        median(self.0.get_mut(name).map_or(&mut [][..], |v| &mut v[..]))
    }

    /// The smallest and the largest value of a figure over the runs.
    fn range(&self, name: &str) -> (f64, f64) {
        let values = self.0.get(name).map_or(&[][..], |v| &v[..]);
        values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
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
}

/// One set of timed runs of `workload`: `cargo xtask run ARGS`, and the
/// figures taken from each run's results.
struct Campaign {
    name: &'static str,
    args: &'static [&'static str],
    take: fn(&Results, &mut TreeSamples) -> Result<()>,
}

/// The figures the bench takes from `workload` on the patched kernel (a
/// VM test checks the workloads report each one).
pub fn figure_names(workload: &str) -> Vec<String> {
    let mut names = Vec::new();
    match workload {
        "pinned-dma" => {
            names.extend(
                [figure::REG_MR_SEALED, figure::REG_MR_ANONYMOUS, figure::REG_MR_ANONYMOUS_BASE].map(String::from),
            );
            for disk in DATA_DISKS {
                names.push(figure::read_fixed(disk.name, DMA_DEPTH));
                names.push(figure::read_fixed_anonymous(disk.name, DMA_DEPTH));
            }
        }
        "swap-pressure" => names.extend(SWAP_DEVICES.map(|(d, _)| figure::swap_throughput(d))),
        "userspace-flush" => {
            names.extend(WRITERS.iter().map(|(w, _)| figure::commit_rate(w)));
            names.push(figure::commit_rate(flush::DEVICE_DAX));
            for kind in FAULT_KINDS {
                names.extend([figure::fault(kind, 50), figure::fault(kind, 99)]);
            }
            names.extend([figure::FSYNC_SEALED, figure::FSYNC_SEALED_FIRST, figure::FSYNC_UNSEALED].map(String::from));
        }
        _ => {}
    }
    names
}

/// The wall time of a whole warm `run`, nothing to rebuild.
const WARM: &str = "warm-run";

/// The kernels whose boots the bench times: the targets are for the first
/// two; the debug kernel's figures say what its checks cost at boot.
const SIDE_BY_SIDE: &[Variant] = &[Variant::Patched, Variant::Baseline];
const DEBUG: &[Variant] = &[Variant::Debug];

const CAMPAIGNS: [Campaign; 8] = [
    // The whole run as a user has it, both kernels side by side: only its
    // wall time (below) is taken.
    Campaign { name: "dax-smoke", args: SMOKE, take: |_, _| Ok(()) },
    Campaign { name: "boot", args: BOOT, take: |r, s| boot_figures(r, s, SIDE_BY_SIDE) },
    Campaign { name: "initcalls", args: INITCALLS, take: |r, s| initcall_figures(r, s, SIDE_BY_SIDE) },
    Campaign { name: "debug boot", args: DEBUG_BOOT, take: |r, s| boot_figures(r, s, DEBUG) },
    Campaign { name: "debug initcalls", args: DEBUG_INITCALLS, take: |r, s| initcall_figures(r, s, DEBUG) },
    Campaign { name: "pinned-dma", args: DMA, take: |r, s| s.take(r, "pinned-dma") },
    Campaign { name: "swap-pressure", args: SWAP, take: |r, s| s.take(r, "swap-pressure") },
    Campaign { name: "userspace-flush", args: FLUSH, take: |r, s| s.take(r, "userspace-flush") },
];

/// Boot to first KTAP line, kernel start to init and the dax-smoke time of
/// each of `variants`.
fn boot_figures(results: &Results, samples: &mut TreeSamples, variants: &[Variant]) -> Result<()> {
    for &variant in variants {
        let name = kernel::kernel_name(samples.tree, variant);
        let kernel = variant.name();
        let boot = results.boots.iter().find(|b| b.kernel == name);
        let first = boot.and_then(|b| b.first_ktap_ms).with_context(|| format!("the {kernel} boot sent no KTAP"))?;
        samples.push(&format!("{kernel}.first-ktap"), first as f64 / 1000.0);
        let run = results.runs.iter().find(|r| r.kernel == name && r.workload == "dax-smoke");
        let run = run.with_context(|| format!("dax-smoke did not run on the {kernel} kernel"))?;
        samples
            .push(&format!("{kernel}.dax-smoke"), run.cases.iter().map(|c| c.duration_ms as f64).sum::<f64>() / 1000.0);
        let console = boot.map(|b| b.console_log.clone()).unwrap_or_default();
        let text = std::fs::read_to_string(&console).with_context(|| format!("reading {}", console.display()))?;
        let at = kernel_to_init(&text)
            .with_context(|| format!("{}: no 'dax-seal-init: ... init at N s' line", console.display()))?;
        samples.push(&format!("{kernel}.kernel-to-init"), at);
    }
    Ok(())
}

/// Each initcall's time (µs) in the boots with initcall_debug, for each of
/// `variants`.
fn initcall_figures(results: &Results, samples: &mut TreeSamples, variants: &[Variant]) -> Result<()> {
    for &variant in variants {
        let name = kernel::kernel_name(samples.tree, variant);
        let kernel = variant.name();
        let boot = results.boots.iter().find(|b| b.kernel == name).with_context(|| format!("no {name} boot"))?;
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

/// Seconds from the kernel's start to PID 1's, as PID 1 prints them
/// (`dax-seal-init: ..., init at 0.912 s`, CLOCK_BOOTTIME): the kernel's
/// own "Run /init" line is KERN_INFO, which the boot's `loglevel=5` keeps
/// off the console.
fn kernel_to_init(console: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.starts_with("dax-seal-init: ") && l.contains(", init at "))?;
    line.rsplit(", init at ").next()?.strip_suffix(" s")?.trim().parse().ok()
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
fn latency_lines(results: &Results, tree: &str) -> Vec<String> {
    let patched = kernel::kernel_name(tree, Variant::Patched);
    let runs = results.runs.iter().filter(|r| r.kernel == patched && r.workload == "userspace-flush");
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

/// The medians as printed lines and charts, with their targets: each
/// figure of every tree, side by side in one chart.
fn charts(s: &mut Samples, trees: &[String], initramfs_bytes: u64) -> Charts {
    let mut charts = Charts::default();
    // One value per tree, labelled with the tree.
    let per_tree = |s: &mut Samples, name: &str| -> Vec<(String, f64)> {
        trees.iter().map(|t| (t.clone(), s.at(t, name))).collect()
    };
    let listed = |v: &[(String, f64)], unit: &str, digits: usize| -> String {
        v.iter().map(|(l, x)| format!("{l} {x:.digits$}{unit}")).collect::<Vec<_>>().join(", ")
    };
    let warm = per_tree(s, WARM);
    charts.add(
        format!(
            "  warm `cargo xtask run --workload dax-smoke` (both kernels), nothing to rebuild: {}",
            listed(&warm, " s", 1)
        ),
        Chart::owned("warm run, nothing to rebuild", "s", warm.clone()).target(
            format!("<= {} s", WARM_RUN_TARGET.as_secs()),
            warm.iter().all(|(_, w)| *w <= WARM_RUN_TARGET.as_secs_f64()),
        ),
    );
    // Patched and baseline of each tree.
    let both = |s: &mut Samples, name: &str| -> Vec<(String, f64)> {
        let mut v = Vec::new();
        for t in trees {
            for k in ["patched", "baseline"] {
                v.push((format!("{k} {t}"), s.at(t, &format!("{k}.{name}"))));
            }
        }
        v
    };
    let ratios = |v: &[(String, f64)]| -> String {
        let r: Vec<String> = v.chunks(2).zip(trees).map(|(p, t)| format!("{t} {:.2}", p[0].1 / p[1].1)).collect();
        format!("patched/baseline {}", r.join(", "))
    };
    let f = both(s, "first-ktap");
    // Under TCG the host's load moves this figure by tenths of a second
    // from one run to the next: the spread says how far the median can be
    // trusted against its target.
    let mut spread = Vec::new();
    for t in trees {
        for k in ["patched", "baseline"] {
            let (lo, hi) = s.range(&format!("{t}:{k}.first-ktap"));
            spread.push(format!("{k} {t} {lo:.2} to {hi:.2} s"));
        }
    }
    charts.add(
        format!("  boot to first KTAP line: {}; {}; runs from {}", listed(&f, " s", 2), ratios(&f), spread.join(", ")),
        Chart::owned("boot to first KTAP line", "s", f.clone()).target(
            format!("<= {} s", FIRST_KTAP_TARGET.as_secs()),
            f.iter().all(|(_, x)| *x <= FIRST_KTAP_TARGET.as_secs_f64()),
        ),
    );
    let k = both(s, "kernel-to-init");
    charts.add(
        format!("  kernel start to init (PID 1's CLOCK_BOOTTIME): {}", listed(&k, " s", 2)),
        Chart::owned("kernel start to init", "s", k),
    );
    // The debug kernel has no target: its figures say what lockdep, KASAN
    // and the other checks cost every boot of the VM tests.
    let (f, k) = (per_tree(s, "debug.first-ktap"), per_tree(s, "debug.kernel-to-init"));
    charts.add(
        format!(
            "  debug kernel (no target): boot to first KTAP line {}, kernel start to init {}",
            listed(&f, " s", 2),
            listed(&k, " s", 2)
        ),
        Chart::owned("debug kernel: boot to first KTAP line", "s", f),
    );
    for t in trees {
        for kernel in ["patched", "baseline", "debug"] {
            let slowest = s.slowest(&format!("{t}:{kernel}.initcall."), 10);
            let listed: Vec<String> = slowest.iter().map(|(n, us)| format!("{n} {:.0} ms", us / 1000.0)).collect();
            let bars: Vec<(&str, f64)> = slowest.iter().map(|(n, us)| (n.as_str(), us / 1000.0)).collect();
            charts.add(
                format!("  ten slowest initcalls, {kernel} {t} (median ms, initcall_debug): {}", listed.join(", ")),
                Chart::new(&format!("ten slowest initcalls, {kernel} {t}"), "ms", &bars),
            );
        }
    }
    let d = both(s, "dax-smoke");
    charts.add(
        format!("  dax-smoke workload: {}; {}", listed(&d, " s", 3), ratios(&d)),
        Chart::owned("dax-smoke workload", "s", d),
    );
    let mib = initramfs_bytes as f64 / (1 << 20) as f64;
    charts.add(
        format!("  initramfs (uncompressed): {mib:.2} MiB"),
        Chart::new("initramfs", "MiB", &[("initramfs", mib)])
            .target(format!("<= {} MiB", INITRAMFS_TARGET >> 20), initramfs_bytes <= INITRAMFS_TARGET),
    );
    // The patched kernel's figures, against their reference in the same boot.
    let pair = |s: &mut Samples, a: &str, b: &str, labels: [&str; 2]| -> Vec<(String, f64)> {
        let mut v = Vec::new();
        for t in trees {
            v.push((format!("{} {t}", labels[0]), s.at(t, a)));
            v.push((format!("{} {t}", labels[1]), s.at(t, b)));
        }
        v
    };
    let pair_ratios = |v: &[(String, f64)]| -> Vec<(String, f64)> {
        v.chunks(2).zip(trees).map(|(p, t)| (t.clone(), p[0].1 / p[1].1)).collect()
    };
    for disk in DATA_DISKS {
        let v = pair(
            s,
            &figure::read_fixed(disk.name, DMA_DEPTH),
            &figure::read_fixed_anonymous(disk.name, DMA_DEPTH),
            ["sealed pmem", "anonymous"],
        );
        let r = pair_ratios(&v);
        let title = format!("{} READ_FIXED qd{DMA_DEPTH} into the pinned pages", disk.name);
        charts.add(
            format!("  {title}: {}; ratio {}", listed(&v, " MiB/s", 0), listed(&r, "", 2)),
            Chart::owned(&title, "MiB/s", v)
                .target(format!("ratio >= {DMA_RATIO_TARGET}"), r.iter().all(|(_, x)| *x >= DMA_RATIO_TARGET)),
        );
    }
    let v = pair(s, figure::REG_MR_SEALED, figure::REG_MR_ANONYMOUS, ["sealed DAX", "anonymous"]);
    let base = pair(s, figure::REG_MR_SEALED, figure::REG_MR_ANONYMOUS_BASE, ["sealed DAX", "anonymous, base pages"]);
    charts.add(
        format!(
            "  Soft-RoCE ibv_reg_mr of 16 MiB (median of 5 per run): {}; ratio {}; against anonymous memory in base \
             pages (as a sealed file is mapped): {}, ratio {}",
            listed(&v, " ms", 2),
            listed(&pair_ratios(&v), "", 2),
            listed(&base, " ms", 2),
            listed(&pair_ratios(&base), "", 2)
        ),
        Chart::owned("Soft-RoCE ibv_reg_mr of 16 MiB", "ms", v),
    );
    let [(sealed, l0), (raw, l1)] = SWAP_DEVICES.map(|(d, label)| (figure::swap_throughput(d), label));
    let v = pair(s, &sealed, &raw, [l0, l1]);
    let r = pair_ratios(&v);
    charts.add(
        format!("  swap-out + swap-in under cgroup pressure: {}; ratio {}", listed(&v, " MiB/s", 0), listed(&r, "", 2)),
        Chart::owned("swap under cgroup pressure", "MiB/s", v)
            .target(format!("ratio >= {SWAP_RATIO_TARGET}"), r.iter().all(|(_, x)| *x >= SWAP_RATIO_TARGET)),
    );
    let mut rates = Vec::new();
    for t in trees {
        for (w, label) in WRITERS {
            rates.push((format!("{label} {t}"), s.at(t, &figure::commit_rate(w))));
        }
    }
    let commit: Vec<(String, f64)> =
        rates.chunks(WRITERS.len()).zip(trees).map(|(r, t)| (t.clone(), r[0].1 / r[2].1)).collect();
    charts.add(
        format!(
            "  userspace-flush commit rate: {}; sealed/fdatasync {}",
            listed(&rates, "/s", 0),
            listed(&commit, "x", 1)
        ),
        Chart::owned("userspace-flush commit rate", "records/s", rates).target(
            format!("sealed/fdatasync >= {COMMIT_RATIO_TARGET}x"),
            commit.iter().all(|(_, x)| *x >= COMMIT_RATIO_TARGET),
        ),
    );
    for kind in FAULT_KINDS {
        let v = pair(s, &figure::fault(kind, 50), &figure::fault(kind, 99), ["p50", "p99"]);
        charts.add(
            format!("  first-touch MAP_SYNC write fault, {kind}: {}", listed(&v, " us", 1)),
            Chart::owned(&format!("first-touch MAP_SYNC write fault, {kind}"), "us", v),
        );
    }
    // The limit with no filesystem: the sealed file against device-dax.
    let v = pair(s, &figure::fault(flush::SEALED, 99), &figure::fault(flush::DEVICE_DAX, 99), ["sealed", "device-dax"]);
    let r = pair_ratios(&v);
    let rates =
        pair(s, &figure::commit_rate(flush::SEALED), &figure::commit_rate(flush::DEVICE_DAX), ["sealed", "device-dax"]);
    charts.add(
        format!(
            "  against device-dax: first-touch fault p99 {}; ratio {}; commit rate {}; ratio {}",
            listed(&v, " us", 1),
            listed(&r, "", 2),
            listed(&rates, "/s", 0),
            listed(&pair_ratios(&rates), "", 2)
        ),
        Chart::owned("first-touch fault p99 against device-dax", "us", v).target(
            format!("sealed/device-dax <= {DEVICE_DAX_FAULT_TARGET}"),
            r.iter().all(|(_, x)| *x <= DEVICE_DAX_FAULT_TARGET),
        ),
    );
    let v = pair(s, figure::FSYNC_SEALED, figure::FSYNC_UNSEALED, ["sealed, never pinned", "unsealed"]);
    let r = pair_ratios(&v);
    let first = trees.iter().map(|t| (t.clone(), s.at(t, figure::FSYNC_SEALED_FIRST))).collect::<Vec<_>>();
    charts.add(
        format!(
            "  fsync of an unchanged large file (median of 15 per run): {}; ratio {}; the sealed file's first after SEAL {}",
            listed(&v, " us", 1),
            listed(&r, "", 2),
            listed(&first, " us", 1)
        ),
        Chart::owned("fsync of an unchanged large file", "us", v)
            .target(format!("ratio <= {FSYNC_RATIO_TARGET}"), r.iter().all(|(_, x)| *x <= FSYNC_RATIO_TARGET)),
    );
    charts
}

/// The figures that say where one tree is faster or slower than another:
/// label, sample name, and whether higher is better.
fn compared() -> [(&'static str, String, bool); 9] {
    [
        ("boot to first KTAP line, patched", "patched.first-ktap".into(), false),
        ("kernel start to init, patched", "patched.kernel-to-init".into(), false),
        ("dax-smoke workload, patched", "patched.dax-smoke".into(), false),
        ("Soft-RoCE ibv_reg_mr of a sealed mapping", figure::REG_MR_SEALED.into(), false),
        ("sealed swapfile throughput", figure::swap_throughput(SWAP_DEVICES[0].0), true),
        ("sealed MAP_SYNC commit rate", figure::commit_rate(flush::SEALED), true),
        ("first-touch fault p50, sealed file", figure::fault("sealed", 50), false),
        ("first-touch fault p99, sealed file", figure::fault("sealed", 99), false),
        ("fsync of a large sealed file nothing pinned", figure::FSYNC_SEALED.into(), false),
    ]
}

/// The side-by-side table of `--tree all`: each compared figure on every
/// tree, and the first tree's value over each other's.
fn comparison(s: &mut Samples, trees: &[String]) -> String {
    let (first, others) = trees.split_first().map_or(("", &[][..]), |(f, o)| (f.as_str(), o));
    let mut header = vec!["figure".to_string()];
    header.extend(trees.iter().cloned());
    header.extend(others.iter().map(|o| format!("{first}/{o}")));
    let mut rows = vec![header];
    for (label, name, higher_is_better) in compared() {
        let values: Vec<f64> = trees.iter().map(|t| s.at(t, &name)).collect();
        let mut row = vec![label.to_string()];
        row.extend(values.iter().map(|v| format!("{v:.3}")));
        for v in &values[1..] {
            let ratio = values[0] / v;
            let better = if higher_is_better { ratio > 1.0 } else { ratio < 1.0 };
            row.push(format!("{ratio:.2} ({} on {first})", if better { "better" } else { "worse" }));
        }
        rows.push(row);
    }
    let table = crate::report::results::columns(rows.iter(), usize::MAX);
    let lines: Vec<String> = table.lines().map(|l| format!("  {l}")).collect();
    format!("{} side by side (medians):\n{}", trees.join(" and "), lines.join("\n"))
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
/// The same boots one at a time: a boot's own figures, not the share of
/// two cores it gets beside another.
const BOOT: &[&str] = &["--workload", "dax-smoke", "--jobs", "1"];
/// The same boots with every initcall's time on the console (which slows
/// the boot itself: only the initcalls are taken from these).
const INITCALLS: &[&str] =
    &["--workload", "dax-smoke", "--kernel-arg", "initcall_debug", "--kernel-arg", "ignore_loglevel"];
/// The same two kinds of boots of the debug kernel (built on first use).
const DEBUG_BOOT: &[&str] = &["--kernel", "debug", "--workload", "dax-smoke"];
const DEBUG_INITCALLS: &[&str] = &[
    "--kernel",
    "debug",
    "--workload",
    "dax-smoke",
    "--kernel-arg",
    "initcall_debug",
    "--kernel-arg",
    "ignore_loglevel",
];
const DMA: &[&str] = &["--kernel", "patched", "--workload", "pinned-dma"];
/// On the devdax topology: its device-dax reference is measured beside the
/// files in the same boot.
const FLUSH: &[&str] = &["--kernel", "patched", "--workload", "userspace-flush", "--pmem", "devdax"];
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
const FAULT_KINDS: [&str; 4] = ["sealed", "preallocated", "sparse", flush::DEVICE_DAX];

/// One `cargo xtask run ARGS` on the given images, through cargo as a user
/// types it; returns its results.json.
fn run_once(images: &Path, tree: &str, args: &[&str]) -> Result<Results> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["run", "--quiet", "--package", "xtask", "--", "run", "--tree", tree])
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
            "`xtask run --tree {tree} {}` failed ({status}); {}",
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

/// Builds `tree`'s `variant` kernel with a private, empty cache directory
/// (build cache and ccache; the source comes from the usual cache, so that
/// a download is not timed).
fn cold_build(tree: &str, variant: Variant) -> Result<f64> {
    let source =
        kernel::resolve_source(&kernel::SourceChoice { tree: trees::find(Some(tree))?, dir: None, rebuild: false })?;
    let cache = tempfile::Builder::new()
        .prefix("dax-seal-cold-")
        .tempdir_in(paths::cache_dir()?.parent().unwrap_or(Path::new("/tmp")))?;
    std::env::set_var("DAX_SEAL_CACHE", cache.path());
    let start = Instant::now();
    let built = kernel::ensure(variant, &source, false);
    let secs = start.elapsed().as_secs_f64();
    std::env::remove_var("DAX_SEAL_CACHE");
    built?;
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
        let runs = judge("patched-7.3", &["pinned-dma".to_string()], &test_outcome(&stream, End::PoweredOff));
        Results::of_runs("r", runs)
    }

    #[test]
    fn the_bench_reads_figures_whatever_the_cases_say() {
        for wording in ["qd16 at some MiB/s", "entirely different prose, anonymous qd16"] {
            let mut samples = Samples::default();
            samples.of("7.3").take(&dma_results(wording, None), "pinned-dma").unwrap();
            assert_eq!(samples.at("7.3", figure::REG_MR_SEALED), 100.0);
            assert_eq!(samples.at("7.3", figure::REG_MR_ANONYMOUS), 101.0);
            assert_eq!(samples.at("7.3", figure::REG_MR_ANONYMOUS_BASE), 102.0);
            assert_eq!(samples.at("7.3", &figure::read_fixed("virtio", DMA_DEPTH)), 103.0);
            assert_eq!(samples.at("7.3", &figure::read_fixed_anonymous("nvme", DMA_DEPTH)), 106.0);
        }
    }

    #[test]
    fn a_missing_figure_is_named() {
        let gone = figure::read_fixed_anonymous("nvme", DMA_DEPTH);
        let err = Samples::default().of("7.3").take(&dma_results("x", Some(&gone)), "pinned-dma").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(&format!("reported no figure {gone}")), "{text}");
    }

    #[test]
    fn the_side_by_side_table_says_which_tree_is_better() {
        let mut s = Samples::default();
        for (tree, boot, commit) in [("7.3", 2.0, 100.0), ("6.12", 1.0, 50.0)] {
            let mut t = s.of(tree);
            t.push("patched.first-ktap", boot);
            t.push(&figure::commit_rate(flush::SEALED), commit);
        }
        let table = comparison(&mut s, &["7.3".to_string(), "6.12".to_string()]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "7.3 and 6.12 side by side (medians):");
        assert!(lines[1].starts_with("  figure") && lines[1].ends_with("7.3/6.12"), "{table}");
        let row = |label: &str| lines.iter().find(|l| l.trim_start().starts_with(label)).unwrap().to_string();
        assert!(row("boot to first KTAP line").ends_with("2.00 (worse on 7.3)"), "{table}");
        assert!(row("sealed MAP_SYNC commit rate").ends_with("2.00 (better on 7.3)"), "{table}");
        // Every row's ratio column starts where the header's does.
        let at = lines[1].find("7.3/6.12").unwrap();
        assert_eq!(row("sealed MAP_SYNC commit rate").find("2.00"), Some(at), "{table}");
    }

    #[test]
    fn boot_figures_come_from_the_console() {
        let console = "[    0.384929] pci 0000:00:00.0: calling  quirk+0x0/0x10 @ 1\n\
                       [    0.400000] initcall acpi_init+0x0/0x500 returned 0 after 208000 usecs\n\
                       [    0.500000] initcall pty_init+0x0/0x230 returned 0 after 136208 usecs\n\
                       dax-seal-init: not a kernel line, initcall x after 5 usecs\n\
                       [    1.899870] Run /init as init process\n\
                       dax-seal-init: kernel variant patched-7.3, workloads [\"dax-smoke\"], init at 1.902 s\n";
        assert_eq!(initcalls(console), [("acpi_init".to_string(), 208000), ("pty_init".to_string(), 136208)]);
        assert_eq!(kernel_to_init(console), Some(1.902));
        assert_eq!(kernel_to_init("no init here"), None);
        let mut s = Samples::default();
        for (n, v) in [("k.initcall.a", 5.0), ("k.initcall.b", 9.0), ("k.initcall.c", 1.0), ("k.other", 99.0)] {
            s.push(n, v);
        }
        assert_eq!(s.slowest("k.initcall.", 2), [("b".to_string(), 9.0), ("a".to_string(), 5.0)]);
        for v in [1.2, 0.9, 1.0] {
            s.push("t:patched.first-ktap", v);
        }
        assert_eq!(s.range("t:patched.first-ktap"), (0.9, 1.2));
        assert_eq!(s.median("t:patched.first-ktap"), 1.0);
    }
}
