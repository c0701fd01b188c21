//! Command-line arguments shared by the tasks (clap derive), and the small
//! value parsers behind them (sizes, `--include` pairs).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use dax_seal_protocol::pmem::PmemKind;
use dax_seal_protocol::DaxMode;

pub use crate::build::initramfs::Include;
pub use crate::build::kernel::{SourceChoice, Variant};
pub use crate::vm::machine::{AccelChoice, Machine, Persistence};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelChoice {
    Patched,
    Baseline,
    /// Patched and baseline.
    Both,
    /// The patched series with lockdep, KASAN, DEBUG_VM and XFS_DEBUG.
    Debug,
    /// Patched, baseline and debug.
    All,
}

impl KernelChoice {
    pub fn variants(self) -> Vec<Variant> {
        match self {
            KernelChoice::Patched => vec![Variant::Patched],
            KernelChoice::Baseline => vec![Variant::Baseline],
            KernelChoice::Both => vec![Variant::Patched, Variant::Baseline],
            KernelChoice::Debug => vec![Variant::Debug],
            KernelChoice::All => vec![Variant::Patched, Variant::Baseline, Variant::Debug],
        }
    }
}

/// The kernel tree a task runs on when `--tree` is not given; `cargo xtask
/// test --tree NAME` sets it for the VM tests, so that the tests which run
/// `cargo xtask` themselves boot the same tree.
pub const TREE_ENV: &str = "DAX_SEAL_TREE";

#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Kernel tree of kernel-config/trees.toml (default: its first, 7.3);
    /// `all` for every tree, where the task takes several (run, bench).
    #[arg(long, value_name = "NAME", env = TREE_ENV)]
    pub tree: Option<String>,
    /// A directory holding the tree's source to build instead of its
    /// Debian package.
    #[arg(long, value_name = "DIR")]
    pub kernel_src: Option<PathBuf>,
    /// Rebuild the kernels even when the cache has them.
    #[arg(long)]
    pub rebuild: bool,
}

impl SourceArgs {
    /// What the build stage is asked for, for a task that takes one tree;
    /// an unknown tree lists the known ones.
    pub fn choice(&self) -> anyhow::Result<SourceChoice> {
        if self.tree.as_deref() == Some(crate::build::trees::ALL) {
            anyhow::bail!(
                "--tree all is taken by run and bench; this task runs on one tree at a time: give --tree NAME"
            );
        }
        let tree = crate::build::trees::find(self.tree.as_deref())?;
        Ok(SourceChoice { tree, dir: self.kernel_src.clone(), rebuild: self.rebuild })
    }

    /// The same for every tree `--tree` names (`all`: each in the table's
    /// order). A source directory is one tree's: refused with `all`.
    pub fn choices(&self) -> anyhow::Result<Vec<SourceChoice>> {
        let trees = crate::build::trees::select(self.tree.as_deref())?;
        if trees.len() > 1 && self.kernel_src.is_some() {
            anyhow::bail!("--kernel-src holds one tree's source; give the tree it is with --tree NAME, not --tree all");
        }
        Ok(trees
            .into_iter()
            .map(|tree| SourceChoice { tree, dir: self.kernel_src.clone(), rebuild: self.rebuild })
            .collect())
    }
}

#[derive(Debug, Clone, Args)]
pub struct KernelArgs {
    /// Which kernel variants to build.
    #[arg(long, value_enum, default_value = "both")]
    pub kernel: KernelChoice,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Clone, Args)]
pub struct VmArgs {
    /// Accelerator: auto probes KVM with a deadline and falls back to TCG.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelChoice,
    /// Guest RAM in MiB (256 to 65536; the workloads need at least 512).
    #[arg(long, default_value_t = Machine::DEFAULT.memory_mib, value_name = "MIB", value_parser = clap::value_parser!(u64).range(256..=65536))]
    pub memory: u64,
    /// Guest CPUs (1 to 64, the kernels' NR_CPUS). One: under TCG, SMP guests
    /// sometimes die at boot on an int3 from code patching (seen here); use 2
    /// or more under KVM.
    #[arg(long, default_value_t = Machine::DEFAULT.cpus, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cpus: u32,
    /// The kind of persistent memory: nfit (emulated NVDIMMs that ACPI's NFIT
    /// describes, a synchronous persistence domain), virtio (virtio-pmem
    /// devices, whose persistence needs a flush request: MAP_SYNC is refused
    /// there), devdax (NVDIMMs as nfit, plus one more in device-dax mode:
    /// the reference for fault latency and commit rate) or cxl (CXL type-3
    /// memory devices with persistent capacity, each behind its own host
    /// bridge: the guest makes a CXL region and a labelled fsdax namespace
    /// on each; boots under TCG). Each kind has its own images.
    #[arg(long, default_value = "nfit", value_name = "KIND", value_parser = parse_pmem)]
    pub pmem: PmemKind,
    /// Number of persistent-memory devices (two: one mounted DAX, one not;
    /// see --dax).
    #[arg(long, visible_alias = "pmem-devices", default_value_t = Machine::DEFAULT.nvdimms)]
    pub nvdimms: u32,
    /// Size of each device (K, M, G suffixes), a multiple of 2M (of 256M for
    /// cxl), at least 512M.
    #[arg(long, visible_alias = "pmem-size", default_value = "1G", value_parser = parse_size)]
    pub nvdimm_size: u64,
    /// Label area size (0 = label-less NVDIMMs, and 128K for cxl, whose
    /// namespaces live in labels; else at least 128K).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub label_size: u64,
    /// QEMU's nvdimm-persistence: what the platform says survives power loss
    /// (default: not advertised).
    #[arg(long, value_enum, value_name = "DOMAIN")]
    pub nvdimm_persistence: Option<Persistence>,
    /// Wall-clock limit for one boot, in seconds, on top of the time the
    /// workloads are asked to run (e.g. seal-race.seconds).
    #[arg(long, default_value_t = Machine::DEFAULT.timeout.as_secs(), value_name = "SECS", value_parser = clap::value_parser!(u64).range(10..))]
    pub timeout: u64,
    /// A boot with no console or result output for this long is a hang.
    #[arg(long, default_value_t = Machine::DEFAULT.silence.as_secs(), value_name = "SECS", value_parser = clap::value_parser!(u64).range(5..))]
    pub silence: u64,
    /// A word to add to the guest kernel's command line (repeatable), e.g.
    /// initcall_debug.
    #[arg(long = "kernel-arg", value_name = "ARG")]
    pub kernel_args: Vec<String>,
}

impl VmArgs {
    /// The machine these flags describe.
    pub fn machine(&self) -> Machine {
        Machine {
            accel: self.accel,
            memory_mib: self.memory,
            cpus: self.cpus,
            pmem: self.pmem,
            nvdimms: self.nvdimms,
            geometry: crate::vm::pmem::Geometry { size: self.nvdimm_size, label_size: self.label_size },
            persistence: self.nvdimm_persistence,
            timeout: std::time::Duration::from_secs(self.timeout),
            silence: std::time::Duration::from_secs(self.silence),
            plugin: None,
            kernel_args: self.kernel_args.clone(),
        }
    }
}

/// What a booted guest gets, for `run` and `shell` alike.
#[derive(Debug, Clone, Args)]
pub struct GuestArgs {
    /// Add a host file or directory to the initramfs (default guest path /root/NAME).
    #[arg(long, value_name = "HOST_PATH[:GUEST_PATH]", value_parser = parse_include)]
    pub include: Vec<Include>,
    /// Start from blank NVDIMMs: recreate the images and make new filesystems.
    #[arg(long)]
    pub fresh: bool,
    /// XFS `dax=` mount mode of each NVDIMM, in order (always, never, inode);
    /// the last one covers the rest.
    #[arg(long, value_name = "MODE,...", default_value = "always,never", value_parser = parse_dax_modes)]
    pub dax: DaxModes,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub vm: VmArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Workload to run (repeatable; default: every default workload).
    #[arg(long = "workload", value_name = "NAME")]
    pub workloads: Vec<String>,
    /// Kernel variants to boot.
    #[arg(long, value_enum, default_value = "both")]
    pub kernel: KernelChoice,
    /// Shell command to run in the guest after set-up, reported as a case (repeatable).
    #[arg(long, value_name = "CMD")]
    pub exec: Vec<String>,
    /// Workload parameter, e.g. seal-race.seconds=60 (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Kernel variants booted at once (default: the host's cores; each TCG
    /// guest keeps about one busy). The summary's order does not change.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Boot a kernel's failed workloads again, up to N times, each time on
    /// fresh images of their own; a failure that passes on a rerun is
    /// reported flaky (0 to 10).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub rerun_failed: u32,
    /// Flaky workloads fail the run (by default they are reported, and
    /// the run passes).
    #[arg(long)]
    pub flaky_fails: bool,
    /// Run the whole selection N times (1 to 1000) and report each case's
    /// pass, fail and flaky counts and its failure rate.
    #[arg(long = "loop", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub loop_count: Option<u32>,
    /// Stop looping after the first loop that failed (a soak: up to 1000
    /// loops unless --loop says otherwise).
    #[arg(long)]
    pub loop_until_fail: bool,
    /// Start no new loop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub loop_seconds: Option<u64>,
    #[command(flatten)]
    pub guest: GuestArgs,
}

impl RunArgs {
    /// How many times the selection runs at most.
    pub fn loops(&self) -> u32 {
        self.loop_count.unwrap_or(if self.loop_until_fail { 1000 } else { 1 })
    }
}

#[derive(Debug, Clone, Args)]
pub struct ShellArgs {
    /// Kernel variant to boot.
    #[arg(long, value_enum, default_value = "patched")]
    pub kernel: Variant,
    #[command(flatten)]
    pub guest: GuestArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SeriesArgs {
    /// Kernel tree of kernel-config/trees.toml whose series to check
    /// (default: its first, 7.3).
    #[arg(long, value_name = "NAME")]
    pub tree: Option<String>,
    /// A directory holding the tree's source to build instead of its
    /// Debian package.
    #[arg(long, value_name = "DIR")]
    pub kernel_src: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct CliDocsArgs {
    /// Where to write man1/ and completions/ (default images/daxctl-immutable).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// Only run tests whose name contains this (unit and VM tests alike).
    pub filter: Option<String>,
    /// Run the unit tests only (no kernel build, no VM).
    #[arg(long)]
    pub unit: bool,
    /// VM tests run at once (default: the host's cores; each TCG guest
    /// keeps about one busy, and some tests boot two kernels side by side).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Also measure cold builds of each tree's patched and baseline kernel
    /// (empty ccache and build cache; about 20 minutes each on 2 cores).
    #[arg(long)]
    pub cold: bool,
    /// Kernel tree to measure (default: the first of
    /// kernel-config/trees.toml); `all` measures every tree side by side.
    #[arg(long, value_name = "NAME", env = TREE_ENV)]
    pub tree: Option<String>,
}

pub fn parse_include(text: &str) -> Result<Include, String> {
    let (host, guest) = match text.split_once(':') {
        Some((h, g)) => (h, g.to_string()),
        None => {
            let name = std::path::Path::new(text)
                .file_name()
                .ok_or_else(|| format!("{text:?} has no file name; give HOST_PATH:GUEST_PATH"))?;
            (text, format!("/root/{}", name.to_string_lossy()))
        }
    };
    if host.is_empty() {
        return Err("empty host path".into());
    }
    if !guest.starts_with('/') || guest.split('/').any(|c| c == "..") {
        return Err(format!("guest path {guest:?} must be absolute and without '..'"));
    }
    Ok(Include { host: PathBuf::from(host), guest })
}

/// The `--dax` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaxModes(pub Vec<DaxMode>);

pub fn parse_dax_modes(text: &str) -> Result<DaxModes, String> {
    let modes = text.split(',').map(DaxMode::parse).collect::<Result<Vec<_>, _>>()?;
    if modes.first() != Some(&DaxMode::Always) {
        return Err(format!(
            "--dax {text}: NVDIMM 0 must be mounted dax=always: the seal workloads run on its DAX files"
        ));
    }
    Ok(DaxModes(modes))
}

/// `NAME=VALUE` for a parameter the protocol knows, with a valid value.
pub fn parse_param(text: &str) -> Result<(String, String), String> {
    let known = || {
        dax_seal_protocol::PARAMS
            .iter()
            .map(|p| format!("  {} (default {}, {}..={}): {}", p.name, p.default, p.min, p.max, p.summary))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!("{text:?} is not NAME=VALUE. Known parameters:\n{}", known()));
    };
    let info = dax_seal_protocol::param(name)
        .ok_or_else(|| format!("unknown parameter {name:?}. Known parameters:\n{}", known()))?;
    info.parse(value)?;
    Ok((name.to_string(), value.trim().to_string()))
}

/// "1G", "512M", "128K", "4096": bytes.
/// `--pmem`'s value.
pub fn parse_pmem(text: &str) -> Result<PmemKind, String> {
    PmemKind::parse(text)
}

pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        Some((i, 'T' | 't')) => (&t[..i], 40),
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size (examples: 4096, 128K, 512M, 2G)"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (text, want) in
            [("0", Ok(0)), ("4096", Ok(4096)), ("128K", Ok(128 << 10)), ("1G", Ok(1 << 30)), ("3m", Ok(3 << 20))]
        {
            assert_eq!(parse_size(text), want, "{text}");
        }
        for bad in ["", "G", "1.5G", "-1", "12X", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    /// The flags' defaults are the VM stage's: sizes are written as text
    /// for --help, so this checks they say the same.
    #[test]
    fn no_flags_give_the_default_machine() {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            vm: VmArgs,
        }
        let vm = <Wrapper as clap::Parser>::parse_from(["vm"]).vm;
        assert_eq!(vm.machine(), Machine::default());
    }

    #[test]
    fn dax_modes() {
        assert_eq!(parse_dax_modes("always,never"), Ok(DaxModes(vec![DaxMode::Always, DaxMode::Never])));
        assert_eq!(parse_dax_modes("always"), Ok(DaxModes(vec![DaxMode::Always])));
        assert!(parse_dax_modes("never,always").unwrap_err().contains("NVDIMM 0"));
        assert!(parse_dax_modes("always,sometimes").unwrap_err().contains("not a DAX mode"));
    }

    #[test]
    fn params() {
        assert_eq!(parse_param("seal-race.seconds=5"), Ok(("seal-race.seconds".into(), "5".into())));
        let err = parse_param("seal-race.secs=5").unwrap_err();
        assert!(err.contains("unknown parameter") && err.contains("seal-race.seconds"), "{err}");
        assert!(parse_param("seal-race.seconds=0").unwrap_err().contains("out of range"));
        assert!(parse_param("seal-race.seconds=ten").unwrap_err().contains("not a whole number"));
        assert!(parse_param("seal-race.seconds").unwrap_err().contains("NAME=VALUE"));
    }

    #[test]
    fn includes() {
        let i = parse_include("/tmp/x.sh").unwrap();
        assert_eq!((i.host, i.guest.as_str()), (PathBuf::from("/tmp/x.sh"), "/root/x.sh"));
        let i = parse_include("a/b:/usr/bin/b").unwrap();
        assert_eq!((i.host, i.guest.as_str()), (PathBuf::from("a/b"), "/usr/bin/b"));
        assert!(parse_include("a:relative").is_err());
        assert!(parse_include("a:/x/../etc").is_err());
        assert!(parse_include(":/x").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::testing::proptest_config())]

        /// Every value parser answers any text with a value or a message,
        /// never a panic.
        #[test]
        fn value_parsers_answer_any_text(text in any::<String>()) {
            let _ = parse_size(&text);
            let _ = parse_include(&text);
            let _ = parse_dax_modes(&text);
            let _ = crate::crash::parse_seed(&text);
            if let Err(e) = parse_param(&text) {
                prop_assert!(!e.is_empty());
            }
        }

        /// Sizes read back as written, with any suffix, and overflow is refused.
        #[test]
        fn sizes_round_trip(n in any::<u64>(), shift in prop::sample::select(vec![("", 0u32), ("K", 10), ("M", 20), ("G", 30), ("T", 40)])) {
            let text = format!("{n}{}", shift.0);
            match n.checked_mul(1u64 << shift.1) {
                Some(v) => prop_assert_eq!(parse_size(&text), Ok(v)),
                None => prop_assert!(parse_size(&text).unwrap_err().contains("too large")),
            }
        }

        /// Known parameters accept exactly their range.
        #[test]
        fn params_accept_exactly_their_range(i in 0..dax_seal_protocol::PARAMS.len(), v in any::<u64>()) {
            let p = &dax_seal_protocol::PARAMS[i];
            let r = parse_param(&format!("{}={v}", p.name));
            prop_assert_eq!(r.is_ok(), (p.min..=p.max).contains(&v), "{}={}: {:?}", p.name, v, r);
        }
    }
}
