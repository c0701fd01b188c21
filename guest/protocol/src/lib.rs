//! The contract between the host (`xtask`) and the guest (`dax-seal-init` and the
//! workloads): where the run configuration lives in the initramfs, what it says,
//! which workloads exist, the name of the results channel, and the KTAP dialect
//! spoken on it. Both sides depend on this crate so they cannot drift apart.

pub mod disks;
pub mod figure;
pub mod flush;
pub mod fstests;
pub mod ktap;
pub mod pmem;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where the host puts the per-run configuration inside the initramfs.
pub const RUN_CONFIG_PATH: &str = "/etc/dax-seal/run.json";
/// Name of the virtio-serial port that carries KTAP from guest to host.
pub const RESULTS_PORT: &str = "dax-seal.ktap";
/// Persistent-memory device `i` (an NVDIMM, or a device of the run's
/// [`pmem::PmemKind`]) is mounted at `{MOUNT_PREFIX}{i}`.
pub const MOUNT_PREFIX: &str = "/mnt/pmem";
/// Where the guest finds workload executables (one multi-call binary).
pub const WORKLOADS_BIN: &str = "/usr/libexec/dax-seal/workloads";
/// Where the guest finds the user-facing CLI (guest/initramfs.toml).
pub const CLI_BIN: &str = "/usr/bin/daxctl-immutable";
/// Printed as a KTAP diagnostic by `seal-crash-prepare` the moment SEAL has
/// returned: the host's crash scenario SIGKILLs QEMU when it sees it.
pub const SEAL_CRASH_POINT: &str = "dax-seal crash point: SEAL returned";
/// Printed on the console by the guest init once set-up is done and the
/// interactive shell starts (`cargo xtask shell`).
pub const SHELL_BANNER: &str = "dax-seal: set-up done, starting shell";

/// The longest line either side keeps from a stream it reads (the guest
/// init from a workload, the host from the console and the results port);
/// the rest of a longer line is dropped, so a writer that never prints a
/// newline cannot grow the reader's memory.
pub const MAX_LINE: usize = 64 << 10;

/// Reads one line into `buf` (cleared first), keeping at most `max` bytes
/// of it; returns the bytes consumed from `r`, newline included (0 at the
/// end of the stream).
pub fn read_line_bounded(r: &mut impl std::io::BufRead, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
    buf.clear();
    let mut consumed = 0;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(consumed);
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..take.min(room)]);
        r.consume(take);
        consumed += take;
        if done {
            return Ok(consumed);
        }
    }
}

/// The environment variable that sets how many cases each property test
/// runs (`cargo xtask fuzz` raises it; `cargo xtask test` leaves the 64).
pub const FUZZ_CASES_ENV: &str = "DAX_SEAL_FUZZ_CASES";

/// The case count of every property test in the workspace.
pub fn fuzz_cases() -> u32 {
    std::env::var(FUZZ_CASES_ENV).ok().and_then(|c| c.parse().ok()).unwrap_or(64)
}

/// What one boot of the guest is asked to do.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Kernel variant name, for messages only.
    pub kernel: String,
    /// Workloads to run, in order.
    pub workloads: Vec<String>,
    /// Shell commands (`/bin/sh -c`) to run after the workloads, each a case.
    pub exec: Vec<String>,
    /// Make new filesystems even where one exists.
    pub fresh: bool,
    /// After set-up, start an interactive shell on the console instead of
    /// running anything.
    pub shell: bool,
    /// Workload parameters (`--param NAME=VALUE`), each one of [`PARAMS`].
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The `dax=` mount option of each NVDIMM's XFS, by index; empty means
    /// [`DEFAULT_DAX`]. The last entry covers the NVDIMMs beyond the list.
    #[serde(default)]
    pub dax: Vec<DaxMode>,
    /// Which run or scenario boot this is, for the marks workloads leave
    /// in their work directories (a later boot names who left leftovers).
    #[serde(default)]
    pub run: String,
    /// The XFS features new filesystems are made with.
    #[serde(default)]
    pub mkfs: Mkfs,
    /// Which attempt at these workloads this boot is: 0, then 1, 2, ... for
    /// the host's reruns of failed ones (`--rerun-failed`).
    #[serde(default)]
    pub attempt: u32,
    /// Which loop of the run this boot belongs to (`--loop`), from 0.
    #[serde(default)]
    pub iteration: u32,
    /// What each fstests section workload runs, by section name
    /// ([`fstests::SECTIONS`]).
    #[serde(default)]
    pub fstests: BTreeMap<String, fstests::Plan>,
    /// The kind of persistent-memory device the host attached.
    #[serde(default)]
    pub pmem: pmem::PmemKind,
    /// For kinds whose namespaces live in labels ([`pmem::PmemKind::labelled`]):
    /// whether each device's label storage area was blank (all zeroes) when
    /// the host started the boot, by device index. The guest makes a
    /// namespace on a blank area only; one that holds labels but gives no
    /// namespace is damaged, and is reported rather than remade.
    #[serde(default)]
    pub blank_label_areas: Vec<bool>,
    /// The CPUs the host gave the machine. The guest's set-up fails when
    /// the kernel brought up another number (0: not stated, not checked).
    #[serde(default)]
    pub cpus: u32,
}

/// mkfs.xfs metadata features (`-m`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Mkfs {
    /// Shared extents: the seal's unshare path and the clone rows need it.
    pub reflink: bool,
    /// The reverse-mapping btree: online repair of a data fork needs it.
    pub rmapbt: bool,
}

impl Default for Mkfs {
    fn default() -> Mkfs {
        Mkfs { reflink: true, rmapbt: true }
    }
}

impl Mkfs {
    /// The `-m` argument of mkfs.xfs.
    pub fn meta_option(&self) -> String {
        format!("reflink={},rmapbt={}", u8::from(self.reflink), u8::from(self.rmapbt))
    }
}

/// XFS's `dax=` mount option.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DaxMode {
    /// Every file is DAX: the seal's fsdax paths.
    Always,
    /// No file is DAX: the page cache, as swapfiles need.
    Never,
    /// Per file, by FS_XFLAG_DAX.
    Inode,
}

impl DaxMode {
    pub fn name(self) -> &'static str {
        match self {
            DaxMode::Always => "always",
            DaxMode::Never => "never",
            DaxMode::Inode => "inode",
        }
    }

    pub fn parse(text: &str) -> Result<DaxMode, String> {
        match text.trim() {
            "always" => Ok(DaxMode::Always),
            "never" => Ok(DaxMode::Never),
            "inode" => Ok(DaxMode::Inode),
            other => Err(format!("{other:?} is not a DAX mode: give always, never or inode")),
        }
    }
}

/// NVDIMM 0 is mounted DAX; the others without, so that the page-cache
/// rules (swapfiles, long-term pins of page-cache pages) can be tested.
pub const DEFAULT_DAX: [DaxMode; 2] = [DaxMode::Always, DaxMode::Never];

impl RunConfig {
    /// The top-level KTAP tests a boot with this configuration reports, in
    /// order: set-up, each workload, then the `--exec` commands as one test.
    /// The configuration the host put at [`RUN_CONFIG_PATH`] (guest side).
    pub fn read() -> Result<RunConfig, String> {
        let text = std::fs::read_to_string(RUN_CONFIG_PATH)
            .map_err(|e| format!("cannot read the run configuration {RUN_CONFIG_PATH}: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("bad run configuration {RUN_CONFIG_PATH}: {e}"))
    }

    /// The `dax=` mode of NVDIMM `index`.
    pub fn dax_mode(&self, index: usize) -> DaxMode {
        let modes: &[DaxMode] = if self.dax.is_empty() { &DEFAULT_DAX } else { &self.dax };
        modes[index.min(modes.len() - 1)]
    }

    /// The value of a parameter: as given, else its default.
    pub fn param(&self, name: &str) -> Result<u64, String> {
        let info = param(name).ok_or_else(|| format!("no parameter {name:?}"))?;
        match self.params.get(name) {
            Some(value) => info.parse(value),
            None => Ok(info.default),
        }
    }

    /// Seconds the selected workloads are asked to run for, by their
    /// run-time parameters (given or default); invalid values count as 0,
    /// since the host rejects them before any boot.
    pub fn requested_run_time(&self) -> u64 {
        PARAMS
            .iter()
            .filter(|p| p.run_time && self.workloads.iter().any(|w| w == p.workload()))
            .map(|p| self.param(p.name).unwrap_or(0))
            .sum()
    }

    pub fn expected_tests(&self) -> Vec<String> {
        let mut tests = vec!["setup".to_string()];
        tests.extend(self.workloads.iter().cloned());
        if !self.exec.is_empty() {
            tests.push("exec".to_string());
        }
        tests
    }
}

/// One workload the guest can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// Run when the user names no workload. Harness self-tests are not.
    pub default: bool,
    /// The data disks ([`disks::DATA_DISKS`], by name) the host attaches
    /// when this workload is selected.
    pub disks: &'static [&'static str],
}

/// Every workload, in the order a default run executes them.
pub const WORKLOADS: &[WorkloadInfo] = &[
    WorkloadInfo {
        name: "dax-smoke",
        summary: "fsdax namespace, DAX mount, STATX_ATTR_DAX, MAP_SYNC mapping, store visible to read(2)",
        default: true,
        disks: &[],
    },
    WorkloadInfo {
        name: "seal-conformance",
        summary: "every row of the seal contract on a sealed file and a control, plus the seal's own rules",
        default: true,
        disks: &[],
    },
    WorkloadInfo {
        name: "cli",
        summary: "daxctl-immutable in the guest: every subcommand, its exit codes, its JSON and its errno \
                  explanations (active swapfile, mapped file, unprivileged user, tmpfs), and bad input",
        default: true,
        disks: &[],
    },
    WorkloadInfo {
        name: "seal-lifetime",
        summary: "a sealed file's long-term pin outlives munmap, close and its inode: after umount, drop_caches, \
                  a refused DAX-flag change and online repair UNSEAL is still EBUSY and the pin still lands in the \
                  file's blocks; a dax=never mount refuses to open it while pinned; fsync writes back the pinned \
                  pages; unprivileged readers hold the seal",
        default: true,
        disks: &[],
    },
    WorkloadInfo {
        name: "pinned-dma",
        summary: "virtio-blk and NVMe disks DMA into and out of a sealed 64 MiB DAX file through io_uring fixed \
                  buffers at queue depths 1, 4 and 16, and Soft-RoCE RDMA WRITE and READ through a memory region \
                  over a sealed file; the host finds the bytes in the files' own blocks of the NVDIMM image and in \
                  the disk images",
        default: true,
        disks: &["virtio", "nvme"],
    },
    WorkloadInfo {
        name: "swap-pressure",
        summary: "a cgroup at 48 MiB pushes a 192 MiB working set through a sealed swapfile: pswpout/pswpin move, \
                  every page checks out, sampled pages sit at the file's blocks on the raw device, map changes are \
                  refused while active; SEAL makes sparse and reflinked files swappable",
        default: true,
        disks: &[],
    },
    WorkloadInfo {
        name: "userspace-flush",
        summary: "three writers append checksummed records: a sealed file mapped MAP_SYNC made durable with \
                  clwb/clflushopt/clflush and sfence only, a sparse unsealed file with the same flushes, and \
                  write+fdatasync; after a remount every record is there; first-touch fault latencies, and fsync \
                  of a large sealed file nothing pinned against an unsealed one",
        default: true,
        disks: &[],
    },
    WorkloadInfo {
        name: "seal-race",
        summary: "threads punch, zero, truncate, fallocate, reflink, append, mmap-store and pin a file while one \
                  seals and unseals it; the map never moves while sealed and the pins balance",
        default: true,
        disks: &[],
    },
    WorkloadInfo {
        name: "userspace-flush-write",
        summary: "crash campaign, boot 1: the three writers acknowledge each record to the host after its fence, \
                  until the host kills QEMU",
        default: false,
        disks: &[],
    },
    WorkloadInfo {
        name: "userspace-flush-verify",
        summary: "crash campaign, boot 2: every acknowledged record intact, torn ones recognised, log recovered, \
                  the sealed file's map unchanged",
        default: false,
        disks: &[],
    },
    WorkloadInfo {
        name: "seal-crash-prepare",
        summary: "first boot of the seal persistence scenarios: seal a file with a hole and an unwritten range, \
                  print its map and the crash point",
        default: false,
        disks: &[],
    },
    WorkloadInfo {
        name: "seal-crash-verify",
        summary: "second boot: the file is still sealed, fully written, every byte there, still enforced",
        default: false,
        disks: &[],
    },
    WorkloadInfo {
        name: "seal-foreign-prepare",
        summary: "mixed kernels, boot 1 (patched): seal five files, and two more for the foreign kernel to leave work \
                  in",
        default: false,
        disks: &[],
    },
    WorkloadInfo {
        name: "seal-foreign-change",
        summary: "mixed kernels, boot 2 (a kernel without the series): punch, clone, truncate up and down four of \
                  the sealed files; unlink a sealed file while open and shut down mid-clone into another",
        default: false,
        disks: &[],
    },
    WorkloadInfo {
        name: "seal-foreign-verify",
        summary: "mixed kernels, boot 3 (patched): the three broken seals are reported (statx, SEAL EUCLEAN, one \
                  log line each, daxctl-immutable status), the whole ones kept, UNSEAL then SEAL recovers; the unlinked sealed \
                  file freed and the cut-short clone replayed at mount, each seal dropped with one line",
        default: false,
        disks: &[],
    },
    WorkloadInfo {
        name: "seal-foreign-repair",
        summary: "mixed kernels, boot 3 instead of verify (patched): the guest's xfs_repair (xfsprogs with the \
                  seal) names exactly the seals the kernel calls broken under -n, clears exactly them, keeps the \
                  whole ones; every file reads the same and each cleared file can be sealed again",
        default: false,
        disks: &[],
    },
    WorkloadInfo {
        name: "fstests-dax",
        summary: "fstests on the NVDIMMs mounted dax=always (default group: dax), inside the root image \
                  `cargo xtask fstests` attaches; one case per test",
        default: false,
        disks: &[],
    },
    WorkloadInfo {
        name: "fstests-nondax",
        summary: "fstests on the NVDIMMs mounted dax=never (default group: swap), inside the root image \
                  `cargo xtask fstests` attaches; one case per test",
        default: false,
        disks: &[],
    },
    WorkloadInfo {
        name: "selftest-silent",
        summary: "harness self-test: exits without printing any result",
        default: false,
        disks: &[],
    },
    WorkloadInfo {
        name: "selftest-flood",
        summary: "harness self-test: floods the results port until the host ends the boot",
        default: false,
        disks: &[],
    },
    WorkloadInfo {
        name: "selftest-bad-ktap",
        summary: "harness self-test: prints malformed KTAP (wrong plan, duplicates, deep nesting, a 1 MiB line)",
        default: false,
        disks: &[],
    },
    WorkloadInfo {
        name: "selftest-fork-bomb",
        summary: "harness self-test: forks until the kernel refuses and never reports",
        default: false,
        disks: &[],
    },
    WorkloadInfo {
        name: "selftest-flaky",
        summary: "harness self-test: fails on a seeded fraction of attempts (selftest-flaky.percent), for reruns",
        default: false,
        disks: &[],
    },
];

/// Whether `selftest-flaky` fails on attempt `attempt` (0 the first boot,
/// then each rerun) of loop `iteration` of a run seeded with `seed`: in
/// `percent` of the (seed, iteration, attempt) triples. Host tests pick
/// seeds with it.
pub fn selftest_flaky_fails(seed: u64, iteration: u32, attempt: u32, percent: u64) -> bool {
    let input = (u64::from(iteration) << 32) | u64::from(attempt);
    disks::mix64(seed.wrapping_mul(disks::GOLDEN) ^ input) % 100 < percent
}

/// One workload parameter: a whole number within bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamInfo {
    /// `WORKLOAD.NAME`.
    pub name: &'static str,
    pub summary: &'static str,
    pub default: u64,
    pub min: u64,
    pub max: u64,
    /// The value is seconds the workload runs for: the host's boot deadline
    /// grows by it when the workload is selected.
    pub run_time: bool,
}

impl ParamInfo {
    /// The workload the parameter belongs to: its name up to the first dot.
    pub fn workload(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(w, _)| w)
    }

    pub fn parse(&self, value: &str) -> Result<u64, String> {
        let v: u64 = value
            .trim()
            .parse()
            .map_err(|_| format!("{}={value:?}: not a whole number ({})", self.name, self.summary))?;
        if !(self.min..=self.max).contains(&v) {
            return Err(format!("{}={v}: out of range, give {} to {}", self.name, self.min, self.max));
        }
        Ok(v)
    }
}

/// Every workload parameter.
pub const PARAMS: &[ParamInfo] = &[
    ParamInfo {
        name: "seal-race.seconds",
        summary: "how long seal-race's threads run, in seconds",
        default: 30,
        min: 1,
        max: 3600,
        run_time: true,
    },
    ParamInfo {
        name: "swap-pressure.seconds",
        summary: "how long swap-pressure keeps swapping its working set out and in, in seconds (at least one round)",
        default: 5,
        min: 1,
        max: 3600,
        run_time: true,
    },
    ParamInfo {
        name: "swap-pressure.raw-pmem",
        summary: "NVDIMM index N >= 2 whose /dev/pmemN swap-pressure unmounts and overwrites with a raw swap area, \
                  the reference `cargo xtask bench` compares the sealed swapfile with; 0 (the default) for none",
        default: 0,
        min: 0,
        max: 15,
        run_time: false,
    },
    ParamInfo {
        name: "userspace-flush.records",
        summary: "records each userspace-flush writer appends",
        default: 2048,
        min: 1,
        max: flush::MAX_RECORDS,
        run_time: false,
    },
    ParamInfo {
        name: "userspace-flush-write.records",
        summary: "records each crash-campaign writer appends before it waits to be killed",
        default: 4096,
        min: 1,
        max: flush::MAX_RECORDS,
        run_time: false,
    },
    ParamInfo {
        name: "userspace-flush-write.wait",
        summary: "seconds the crash writer waits to be killed after its last record (0: the persistence model, \
                  which needs no kill)",
        default: 20,
        min: 0,
        max: 600,
        run_time: true,
    },
    ParamInfo {
        name: "userspace-flush-write.bug",
        summary: "a deliberately broken sealed writer for the persistence model's self-test: 0 none, 1 one record \
                  acknowledged with a line never written back, 2 every fence before the write-backs",
        default: 0,
        min: 0,
        max: 2,
        run_time: false,
    },
    ParamInfo {
        name: "userspace-flush-write.bug-record",
        summary: "the record the omit-flush bug leaves unflushed",
        default: 7,
        min: 0,
        max: flush::MAX_RECORDS,
        run_time: false,
    },
    ParamInfo {
        name: "selftest-flaky.percent",
        summary: "the share of attempts (in percent) on which selftest-flaky fails",
        default: 50,
        min: 0,
        max: 100,
        run_time: false,
    },
    ParamInfo {
        name: "selftest-flaky.seed",
        summary: "the seed that, with the attempt number, decides whether selftest-flaky fails",
        default: 1,
        min: 0,
        max: u32::MAX as u64,
        run_time: false,
    },
    ParamInfo {
        name: "userspace-flush-verify.acked-sealed",
        summary: "records of the sealed writer the host holds acknowledgements for (set by cargo xtask crash)",
        default: 0,
        min: 0,
        max: flush::MAX_RECORDS,
        run_time: false,
    },
    ParamInfo {
        name: "userspace-flush-verify.acked-sparse-control",
        summary: "records of the sparse control the host holds acknowledgements for (set by cargo xtask crash)",
        default: 0,
        min: 0,
        max: flush::MAX_RECORDS,
        run_time: false,
    },
    ParamInfo {
        name: "userspace-flush-verify.acked-fdatasync-control",
        summary: "records of the fdatasync control the host holds acknowledgements for (set by cargo xtask crash)",
        default: 0,
        min: 0,
        max: flush::MAX_RECORDS,
        run_time: false,
    },
    ParamInfo {
        name: "userspace-flush-verify.map-sealed",
        summary: "fingerprint of the sealed file's map before the crash, 0 for none (set by cargo xtask crash)",
        default: 0,
        min: 0,
        max: u64::MAX,
        run_time: false,
    },
];

pub fn param(name: &str) -> Option<&'static ParamInfo> {
    PARAMS.iter().find(|p| p.name == name)
}

pub fn workload(name: &str) -> Option<&'static WorkloadInfo> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// The data disks the given workloads need, in [`disks::DATA_DISKS`] order.
pub fn disks_for(workloads: &[String]) -> Vec<&'static disks::DataDisk> {
    disks::DATA_DISKS
        .iter()
        .filter(|d| workloads.iter().filter_map(|w| workload(w)).any(|w| w.disks.contains(&d.name)))
        .collect()
}

pub fn default_workloads() -> impl Iterator<Item = &'static WorkloadInfo> {
    WORKLOADS.iter().filter(|w| w.default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(workloads: &[&str], params: &[(&str, &str)]) -> RunConfig {
        RunConfig {
            workloads: workloads.iter().map(|w| w.to_string()).collect(),
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..RunConfig::default()
        }
    }

    /// selftest-flaky fails on about the share of attempts it is given,
    /// and never or always at the ends.
    #[test]
    fn selftest_flaky_fails_on_its_share() {
        let fails = |percent| (0..1000).filter(|&i| selftest_flaky_fails(7, i, 0, percent)).count();
        assert_eq!(fails(0), 0);
        assert_eq!(fails(100), 1000);
        assert!((400..600).contains(&fails(50)), "{}", fails(50));
    }

    #[test]
    fn run_time_counts_only_selected_workloads() {
        assert_eq!(config(&["dax-smoke", "seal-conformance"], &[]).requested_run_time(), 0);
        assert_eq!(config(&["seal-race"], &[]).requested_run_time(), 30);
        assert_eq!(config(&["seal-race"], &[("seal-race.seconds", "600")]).requested_run_time(), 600);
        assert_eq!(config(&["seal"], &[("seal-race.seconds", "600")]).requested_run_time(), 0);
    }

    #[test]
    fn every_disk_a_workload_names_exists_and_only_selected_ones_attach() {
        for w in WORKLOADS {
            for d in w.disks {
                assert!(disks::data_disk(d).is_some(), "{} names unknown disk {d}", w.name);
            }
        }
        let names = |ws: &[&str]| {
            disks_for(&ws.iter().map(|w| w.to_string()).collect::<Vec<_>>()).iter().map(|d| d.name).collect::<Vec<_>>()
        };
        assert!(names(&["dax-smoke", "seal-race"]).is_empty());
        assert_eq!(names(&["pinned-dma", "dax-smoke"]), ["virtio", "nvme"]);
    }
}

/// Property tests of run.json as the guest reads it.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn run_config() -> impl Strategy<Value = RunConfig> {
        let names: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
        (
            any::<String>(),
            prop::collection::vec(prop::sample::select(names), 0..5),
            prop::collection::vec(any::<String>(), 0..3),
            any::<(bool, bool)>(),
            prop::collection::btree_map(any::<String>(), any::<String>(), 0..4),
            prop::collection::vec(prop::sample::select(vec![DaxMode::Always, DaxMode::Never, DaxMode::Inode]), 0..3),
            any::<String>(),
        )
            .prop_map(|(kernel, workloads, exec, (fresh, shell), params, dax, run)| RunConfig {
                pmem: pmem::PmemKind::ALL[kernel.len() % pmem::PmemKind::ALL.len()],
                attempt: run.len() as u32,
                iteration: exec.len() as u32,
                cpus: params.len() as u32,
                kernel,
                workloads: workloads.into_iter().map(str::to_string).collect(),
                exec,
                fresh,
                shell,
                params,
                dax,
                run,
                mkfs: Mkfs { reflink: fresh, rmapbt: shell },
                fstests: BTreeMap::new(),
                blank_label_areas: vec![fresh, shell],
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: crate::fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

        /// What the host writes, the guest reads back unchanged, and the
        /// accessors answer for any content (invalid parameters are errors).
        #[test]
        fn run_json_reads_back(c in run_config()) {
            let back: RunConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            prop_assert_eq!(&back, &c);
            let _ = back.requested_run_time();
            let _ = back.expected_tests();
            for p in PARAMS {
                let _ = back.param(p.name);
            }
            for i in 0..4 {
                let _ = back.dax_mode(i);
            }
        }

        /// Anything else in run.json is refused, never a panic.
        #[test]
        fn any_text_is_a_config_or_an_error(text in any::<String>()) {
            let _ = serde_json::from_str::<RunConfig>(&text);
        }
    }
}
