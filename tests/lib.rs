//! Helpers for the VM tests (vm.rs): boot a real kernel exactly the way
//! `cargo xtask run` does ([`xtask::run::BootRequest`]), each test on its own
//! NVDIMM images in a temporary directory, and explain a failure with the
//! verdicts, the guest's KTAP and the end of the console log.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use dax_seal_protocol::ktap::Verdict;
use xtask::build::kernel::Variant;
use xtask::report::results::{self, CaseResult, WorkloadRun};
use xtask::vm::boot::BootOutcome;
pub use xtask::vm::boot::KillAt;
use xtask::vm::request::Prepared;
use xtask::vm::scenario::{Scenario, Step};

pub use xtask::vm::boot::End;
pub use xtask::vm::console::ReportKind;

/// The kernels, initramfs and accelerator `cargo xtask test` prepared.
pub fn prepared() -> &'static Prepared {
    static PREPARED: OnceLock<Prepared> = OnceLock::new();
    PREPARED.get_or_init(|| {
        let path = std::env::var_os(xtask::test::ARTIFACTS_ENV).unwrap_or_else(|| {
            panic!("{} is not set: run the VM tests with `cargo xtask test`", xtask::test::ARTIFACTS_ENV)
        });
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", PathBuf::from(&path).display()));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("bad artifacts file: {e}"))
    })
}

/// A guest with its own NVDIMM images; boots of one Guest share them. It is
/// a [`Scenario`] on a temporary directory: `vm` and `params` are the
/// scenario's, and [`Guest::boot_on`] hands the images to another kernel.
pub struct Guest {
    pub variant: Variant,
    scenario: Scenario<'static>,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Guest {
    type Target = Scenario<'static>;
    fn deref(&self) -> &Scenario<'static> {
        &self.scenario
    }
}

impl std::ops::DerefMut for Guest {
    fn deref_mut(&mut self) -> &mut Scenario<'static> {
        &mut self.scenario
    }
}

/// What one boot did, judged as a run would judge it.
pub struct Booted {
    pub outcome: BootOutcome,
    pub runs: Vec<WorkloadRun>,
}

impl Guest {
    /// A guest on `variant`, with images named after it.
    pub fn new(variant: Variant) -> Guest {
        let dir = tempfile::Builder::new().prefix("dax-seal-vmtest-").tempdir().expect("temporary directory");
        let scenario = Scenario::new(prepared(), dir.path(), prepared().name(variant));
        Guest { variant, scenario, _dir: dir }
    }

    /// Every boot of this guest gets `cpus` virtual CPUs (one by default),
    /// for races that need two threads running at once.
    pub fn with_cpus(mut self, cpus: u32) -> Guest {
        self.scenario.vm.cpus = cpus;
        self
    }

    pub fn images_dir(&self) -> &Path {
        self.scenario.dir()
    }

    /// Boots with these workloads and `--exec` commands.
    pub fn boot(&self, workloads: &[&str], exec: &[&str]) -> Booted {
        self.boot_killed_at(workloads, exec, None)
    }

    /// Like [`Guest::boot`], but the host SIGKILLs QEMU as soon as a results
    /// line ends with `kill_at` (crash scenarios; the images survive).
    pub fn boot_killed_at(&self, workloads: &[&str], exec: &[&str], kill_at: Option<&str>) -> Booted {
        self.step(&Step { variant: self.variant, workloads, exec, kill_at: kill_at.map(KillAt::at) })
    }

    /// Like [`Guest::boot`], killed at `kill` (a marker and a delay).
    pub fn boot_killed(&self, workloads: &[&str], kill: KillAt) -> Booted {
        self.step(&Step { variant: self.variant, workloads, exec: &[], kill_at: Some(kill) })
    }

    /// Boots another kernel variant on this guest's images.
    pub fn boot_on(&self, variant: Variant, workloads: &[&str], exec: &[&str]) -> Booted {
        self.step(&Step { variant, workloads, exec, kill_at: None })
    }

    fn step(&self, step: &Step) -> Booted {
        let (config, outcome) = self.scenario.boot(step).unwrap_or_else(|e| panic!("boot failed to start: {e:#}"));
        let runs = results::judge(prepared().name(step.variant), &config.expected_tests(), &outcome);
        Booted { outcome, runs }
    }
}

impl Booted {
    pub fn run(&self, workload: &str) -> &WorkloadRun {
        self.runs
            .iter()
            .find(|r| r.workload == workload)
            .unwrap_or_else(|| panic!("no {workload} run\n{}", self.explain()))
    }

    pub fn case(&self, workload: &str, case: &str) -> &CaseResult {
        let run = self.run(workload);
        run.cases
            .iter()
            .find(|c| c.name == case)
            .unwrap_or_else(|| panic!("no case {workload}/{case}\n{}", self.explain()))
    }

    /// Every figure `cargo xtask bench` takes from `workload`, as this
    /// boot reported them: each present, finite and above zero.
    pub fn assert_bench_figures(&self, workload: &str) {
        let results = self.results();
        let names = xtask::bench::figure_names(workload);
        assert!(!names.is_empty(), "the bench takes no figures from {workload}");
        for name in names {
            let kernel = &self.run(workload).kernel;
            let value = results.figure(kernel, workload, &name).unwrap_or_else(|e| panic!("{e:#}\n{}", self.explain()));
            assert!(value.is_finite() && value > 0.0, "{workload}: figure {name} is {value}\n{}", self.explain());
        }
    }

    fn results(&self) -> results::Results {
        results::Results::of_runs("test", self.runs.clone())
    }

    pub fn passed(&self) -> bool {
        results::verdict_of(&self.runs, false) == Verdict::Pass
    }

    pub fn elapsed(&self) -> Duration {
        self.outcome.elapsed
    }

    /// Everything a developer needs when an assertion fails.
    pub fn explain(&self) -> String {
        let results = self.results();
        let ktap = std::fs::read_to_string(&self.outcome.ktap_log).unwrap_or_default();
        format!(
            "boot ended: {} after {:.1} s\n{}\n--- guest KTAP ({}):\n{ktap}\n--- console tail ({}):\n{}\n",
            self.outcome.end.describe(),
            self.outcome.elapsed.as_secs_f64(),
            results::summary(&results),
            self.outcome.ktap_log.display(),
            self.outcome.console_log.display(),
            self.outcome.console_tail.join("\n")
        )
    }
}
