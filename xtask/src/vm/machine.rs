//! The machine a boot gets: accelerator, memory, CPUs, its persistent
//! memory (kind, count and geometry) and
//! the boot's time limits. The VM stage's own description, with its
//! defaults written once here; the command line (`cli::VmArgs`), the matrix
//! (a cell's topology and machine) and the tasks that need a particular
//! machine (fstests, crash --model's tracer) build one of these.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::ValueEnum;

use crate::vm::pmem::{self, Geometry, PmemKind};

/// Which accelerator a boot asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelChoice {
    /// KVM if a probe boot prints within a deadline, else TCG.
    Auto,
    /// KVM; refused when /dev/kvm cannot be opened.
    Kvm,
    /// QEMU's software emulation: slower, works everywhere.
    Tcg,
}

/// QEMU's `nvdimm-persistence` machine property: what the platform tells
/// the guest survives a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Persistence {
    /// The memory controller's buffers (ADR): software must flush CPU caches.
    MemCtrl,
    /// CPU caches too (eADR): a store is durable once visible.
    Cpu,
}

impl Persistence {
    pub fn name(self) -> &'static str {
        match self {
            Persistence::MemCtrl => "mem-ctrl",
            Persistence::Cpu => "cpu",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub accel: AccelChoice,
    pub memory_mib: u64,
    /// One by default: under TCG, SMP guests sometimes die at boot on an
    /// int3 from code patching (seen here).
    pub cpus: u32,
    /// The kind of persistent-memory device (`--pmem`): NVDIMMs by default.
    pub pmem: PmemKind,
    /// How many DAX filesystems' devices of that kind (`--nvdimms`). Two
    /// by default: one mounted DAX, one not (the page-cache rows). The
    /// devdax kind adds one for its reference ([`Machine::devices`]).
    pub nvdimms: u32,
    /// Each device's size and label area.
    pub geometry: Geometry,
    /// Not advertised unless asked for.
    pub persistence: Option<Persistence>,
    /// Wall-clock limit of one boot, on top of the time its workloads are
    /// asked to run (`RunConfig::requested_run_time`).
    pub timeout: Duration,
    /// No console or result output for this long is a hang.
    pub silence: Duration,
    /// A TCG plugin and its arguments (`PATH,key=value,...`): the
    /// persistence model's tracer (`crash --model`).
    pub plugin: Option<String>,
    /// Words added to the kernel command line (`--kernel-arg`), after the
    /// harness's own.
    pub kernel_args: Vec<String>,
}

impl Machine {
    /// What a boot gets unless something asks otherwise.
    pub const DEFAULT: Machine = Machine {
        accel: AccelChoice::Auto,
        memory_mib: 1024,
        cpus: 1,
        pmem: PmemKind::Nfit,
        nvdimms: 2,
        geometry: Geometry { size: 1 << 30, label_size: 0 },
        persistence: None,
        timeout: Duration::from_secs(600),
        silence: Duration::from_secs(120),
        plugin: None,
        kernel_args: Vec::new(),
    };

    /// How many persistent-memory devices the machine has.
    pub fn devices(&self) -> u32 {
        self.pmem.devices(self.nvdimms)
    }

    /// Refuses a machine no guest can use, naming the flag to change.
    pub fn check(&self) -> Result<()> {
        pmem::validate(self.geometry)?;
        pmem::validate_kind(self.pmem, self.geometry, self.persistence.is_some())?;
        if let (AccelChoice::Kvm, Some(why)) = (self.accel, pmem::tcg_only(self.pmem)) {
            bail!("--accel kvm: {why}; leave --accel at auto or give tcg");
        }
        if self.pmem == PmemKind::Cxl && self.nvdimms > 8 {
            bail!("--nvdimms {}: give 1 to 8 CXL memory devices (each has a host bridge of its own)", self.nvdimms);
        }
        if self.nvdimms == 0 {
            bail!("--nvdimms 0: the guest needs at least one {}", self.pmem.device());
        }
        if let Some(bad) = self
            .kernel_args
            .iter()
            .find(|a| a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"'))
        {
            bail!("--kernel-arg {bad:?}: give one word of the kernel command line per --kernel-arg, without spaces or quotes");
        }
        Ok(())
    }
}

impl Default for Machine {
    fn default() -> Machine {
        Machine::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_machine_is_usable_and_bad_ones_are_named() {
        Machine::default().check().unwrap();
        let none = Machine { nvdimms: 0, ..Machine::default() };
        assert!(none.check().unwrap_err().to_string().contains("--nvdimms 0"));
        let small = Machine { geometry: Geometry { size: 1 << 20, label_size: 0 }, ..Machine::default() };
        assert!(small.check().is_err());
        let cxl_kvm = Machine { pmem: PmemKind::Cxl, accel: AccelChoice::Kvm, ..Machine::default() };
        assert!(cxl_kvm.check().unwrap_err().to_string().contains("boots under TCG"));
        Machine { pmem: PmemKind::Cxl, ..Machine::default() }.check().unwrap();
        let spaced = Machine { kernel_args: vec!["a b".into()], ..Machine::default() };
        assert!(spaced.check().unwrap_err().to_string().contains("one word"));
    }
}
