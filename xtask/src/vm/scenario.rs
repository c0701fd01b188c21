//! Scenarios: a sequence of boots on one set of NVDIMM images, each boot on
//! the kernel variant of its choice, so that what one boot leaves on the
//! images is the next one's input. The crash tests kill QEMU at a marker and
//! boot again on what it left; the mixed-kernel test seals a file on the
//! patched kernel, changes it under the baseline kernel, which ignores the
//! seal, and checks it on the patched kernel again. Every boot goes through
//! [`BootRequest`], as a run's do, and keeps its own console and KTAP logs
//! (`-N` in their names, N counting the scenario's boots).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use dax_seal_protocol::{DaxMode, Mkfs, RunConfig};

use crate::build::kernel::Variant;
use crate::vm::boot::{BootOutcome, KillAt};
use crate::vm::images::ImageSet;
use crate::vm::machine::Machine;
use crate::vm::request::{BootRequest, Prepared};

/// One image set in one directory, and the boots made on it so far.
pub struct Scenario<'a> {
    pub prepared: &'a Prepared,
    pub vm: Machine,
    /// Workload parameters, the same for every boot.
    pub params: BTreeMap<String, String>,
    /// `dax=` of each NVDIMM (empty: the defaults), for every boot.
    pub dax: Vec<DaxMode>,
    /// XFS features of filesystems the first boot makes.
    pub mkfs: Mkfs,
    /// Which attempt at its workloads every boot is (a rerun of a failed
    /// matrix cell counts from 1), as the guest is told.
    pub attempt: u32,
    dir: PathBuf,
    logs: PathBuf,
    images: String,
    boots: Cell<u32>,
    blank: Cell<bool>,
}

/// What one boot of a scenario runs.
pub struct Step<'a> {
    pub variant: Variant,
    pub workloads: &'a [&'a str],
    pub exec: &'a [&'a str],
    /// When to SIGKILL QEMU (crash scenarios).
    pub kill_at: Option<KillAt>,
}

impl<'a> Scenario<'a> {
    /// A scenario whose images (`nvdimm-<images>-N.img`, or another kind's
    /// names) and logs live in
    /// `dir`. The images are made by the first boot and kept after.
    pub fn new(prepared: &'a Prepared, dir: &Path, images: &str) -> Scenario<'a> {
        Scenario {
            prepared,
            vm: Machine::default(),
            params: BTreeMap::new(),
            dax: Vec::new(),
            mkfs: Mkfs::default(),
            attempt: 0,
            dir: dir.to_path_buf(),
            logs: dir.to_path_buf(),
            images: images.to_string(),
            boots: Cell::new(0),
            blank: Cell::new(false),
        }
    }

    /// Keeps the boots' console and KTAP logs in `dir` instead of beside
    /// the images.
    pub fn logs_in(mut self, dir: &Path) -> Scenario<'a> {
        self.logs = dir.to_path_buf();
        self
    }

    /// The next boot starts on blank images with new filesystems.
    pub fn start_blank(&self) {
        self.blank.set(true);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn logs(&self) -> &Path {
        &self.logs
    }

    /// The scenario's image set.
    pub fn images(&self) -> ImageSet<'_> {
        ImageSet::new(&self.dir, &self.images)
    }

    /// The backing file of persistent-memory device `i`.
    pub fn image(&self, i: u32) -> PathBuf {
        self.images().pmem(self.vm.pmem, i)
    }

    /// Device `i`'s files: backing file, label area (CXL), sidecar.
    pub fn image_files(&self, i: u32) -> Vec<PathBuf> {
        self.images().pmem_files(self.vm.pmem, i)
    }

    /// The image of data disk `name`, as the last boot that needed it left it.
    pub fn disk(&self, name: &str) -> PathBuf {
        self.images().disk(name)
    }

    /// Boots `step` on the scenario's images; returns what the guest was
    /// asked to run (for judging) and how the boot went.
    pub fn boot(&self, step: &Step) -> Result<(RunConfig, BootOutcome)> {
        let config = RunConfig {
            kernel: self.prepared.name(step.variant).into(),
            workloads: step.workloads.iter().map(|s| s.to_string()).collect(),
            exec: step.exec.iter().map(|s| s.to_string()).collect(),
            fresh: self.blank.get(),
            shell: false,
            params: self.params.clone(),
            dax: self.dax.clone(),
            mkfs: self.mkfs,
            fstests: Default::default(),
            run: format!("scenario {} boot {}", self.logs.display(), self.boots.get() + 1),
            attempt: self.attempt,
            iteration: 0,
            pmem: self.vm.pmem,
            // Read from the images and the machine when the boot starts
            // (BootRequest::vm).
            blank_label_areas: Vec::new(),
            cpus: 0,
        };
        let n = self.boots.get() + 1;
        self.boots.set(n);
        let tag = format!("-{n}");
        let request = BootRequest {
            prepared: self.prepared,
            variant: step.variant,
            config: config.clone(),
            includes: &[],
            machine: &self.vm,
            images_dir: &self.dir,
            image_set: Some(&self.images),
            out_dir: &self.logs,
            fresh: self.blank.replace(false),
            tag: &tag,
            kill_at: step.kill_at.clone(),
            root_disk: None,
        };
        let outcome = request.boot()?;
        Ok((config, outcome))
    }
}
