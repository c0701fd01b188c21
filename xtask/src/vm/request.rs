//! One boot as runs, scenarios and tests ask for it: [`prepare`] builds
//! what boots need (host packages, kernels, initramfs, the accelerator) into
//! a [`Prepared`], and a [`BootRequest`] boots one kernel variant on one
//! NVDIMM image set with one run configuration, under the image set's lock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use dax_seal_protocol::RunConfig;

use crate::build::initramfs::Include;
use crate::build::kernel::{self, SourceChoice, Variant};
use crate::build::{deps, initramfs};
use crate::paths;
use crate::vm::boot::{self, BootOutcome, BootSpec};
use crate::vm::disks;
use crate::vm::images::ImageSet;
use crate::vm::machine::{AccelChoice, Machine};
use crate::vm::pmem;
use crate::vm::qemu::{self, Accel, Console, Vm};

/// Everything built that boots need.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Prepared {
    /// The unmodified kernel tree the kernels were built from.
    pub source_tree: PathBuf,
    pub kernels: Vec<kernel::Built>,
    pub initramfs: initramfs::Built,
    pub accel: Accel,
    pub accel_reason: String,
}

impl Prepared {
    pub fn kernel(&self, variant: Variant) -> Result<&kernel::Built> {
        self.kernels
            .iter()
            .find(|k| k.variant == variant)
            .with_context(|| format!("the {variant} kernel was not built"))
    }

    /// The accelerator a boot of `m` gets, and why: the one chosen for the
    /// host, unless the machine's persistent memory needs TCG.
    pub fn accel_for(&self, m: &Machine) -> (Accel, String) {
        match pmem::tcg_only(m.pmem) {
            Some(why) => (Accel::Tcg, why.to_string()),
            None => (self.accel, self.accel_reason.clone()),
        }
    }

    /// The line a task prints about the accelerator of `m`'s boots.
    pub fn accel_line(&self, m: &Machine) -> String {
        let (accel, why) = self.accel_for(m);
        format!("accelerator: {} ({why})", accel.name())
    }

    /// What names `variant`'s kernel in image sets, logs and result rows
    /// (`kernel::kernel_name`).
    pub fn name(&self, variant: Variant) -> &str {
        self.kernel(variant).map_or(variant.name(), |k| k.name.as_str())
    }
}

/// Host packages, kernels, initramfs and the accelerator.
pub fn prepare(variants: &[Variant], source: &SourceChoice, accel: AccelChoice) -> Result<Prepared> {
    deps::ensure(deps::Need::for_source(source.dir.is_some()))?;
    let src = kernel::resolve_source(source)?;
    let mut kernels = Vec::new();
    for &v in variants {
        kernels.push(kernel::ensure(v, &src, source.rebuild)?);
    }
    let initramfs = initramfs::build()?;
    let probe_kernel = &kernels.first().context("no kernel variant selected")?.image;
    let (accel, accel_reason) = qemu::resolve_accel(accel, probe_kernel)?;
    Ok(Prepared { source_tree: src.tree, kernels, initramfs, accel, accel_reason })
}

/// One kernel ready to boot, prepared on its own (its tree's source, the
/// initramfs, the accelerator).
pub struct Ready {
    pub prepared: Prepared,
    pub variant: Variant,
}

/// A kernel that could not be built: its name and why.
pub struct BuildFailed {
    pub kernel: String,
    pub error: anyhow::Error,
}

/// What a run boots, resolved before anything is built or written: host
/// packages, every tree's source and the initramfs ([`Streaming::new`]);
/// then the kernels, handed over as they are built ([`Streaming::run`]).
pub struct Streaming {
    srcs: Vec<(kernel::Source, bool)>,
    variants: Vec<Variant>,
    initramfs: initramfs::Built,
}

impl Streaming {
    /// Host packages, every tree's source and the initramfs; an error here
    /// stops everything before a kernel is built.
    pub fn new(sources: &[SourceChoice], variants: &[Variant]) -> Result<Streaming> {
        deps::ensure(deps::Need::for_source(sources.iter().any(|s| s.dir.is_some())))?;
        let mut srcs = Vec::new();
        for source in sources {
            srcs.push((kernel::resolve_source(source)?, source.rebuild));
        }
        let initramfs = initramfs::build()?;
        Ok(Streaming { srcs, variants: variants.to_vec(), initramfs })
    }

    /// The kernels, handed to `boot` as soon as they are ready rather than
    /// once all are built: every kernel the cache holds comes in the first
    /// batch (booted side by side, as before); a kernel being built boots
    /// while the next one compiles, so that a fresh machine sees the
    /// patched kernel's verdicts while the baseline builds. A kernel that
    /// fails to build is reported, and the others still build and boot.
    pub fn run(self, accel: AccelChoice, mut boot: impl FnMut(Vec<Ready>) -> Result<()>) -> Result<Vec<BuildFailed>> {
        let Streaming { srcs, variants, initramfs } = self;
        // Kernels the cache holds first, so that they boot at once (each
        // key computed once: it runs gcc and ld --version and reads the
        // series).
        let mut wanted: Vec<(&kernel::Source, bool, Variant, bool)> = srcs
            .iter()
            .flat_map(|(src, rebuild)| {
                variants.iter().map(move |&v| (src, *rebuild, v, !*rebuild && kernel::cached(v, src).unwrap_or(false)))
            })
            .collect();
        wanted.sort_by_key(|(_, _, _, cached)| !cached);
        let held = wanted.iter().take_while(|(_, _, _, cached)| *cached).count();
        let mut failed = Vec::new();
        std::thread::scope(|scope| -> Result<()> {
            // The receiver lives in this closure: when a boot fails and the
            // closure returns, the builder's next send fails and it stops
            // after the kernel it is building, before the scope joins it.
            type Message<'s> = Vec<(&'s kernel::Source, Result<kernel::Built, BuildFailed>)>;
            let (tx, rx) = std::sync::mpsc::channel::<Message>();
            let builder = scope.spawn(move || {
                let ensure = |(src, rebuild, variant, _)| (src, ensure_kernel(src, rebuild, variant));
                let mut wanted = wanted.into_iter();
                // What the cache holds goes in one message, so that it
                // boots side by side; then one kernel per build.
                let cached: Message = wanted.by_ref().take(held).map(ensure).collect();
                if !cached.is_empty() && tx.send(cached).is_err() {
                    return;
                }
                for item in wanted {
                    if tx.send(vec![ensure(item)]).is_err() {
                        break;
                    }
                }
            });
            let mut resolved: Option<(qemu::Accel, String)> = None;
            // Each batch: one kernel (waiting for it), and every other one
            // ready by then.
            while let Ok(first) = rx.recv() {
                let mut batch = Vec::new();
                for (src, built) in first.into_iter().chain(rx.try_iter().flatten()) {
                    match built {
                        Ok(k) => batch.push((src, k)),
                        Err(f) => {
                            eprintln!("[build] the {} kernel failed to build: {:#}", f.kernel, f.error);
                            failed.push(f);
                        }
                    }
                }
                let Some((_, k)) = batch.first() else { continue };
                let (accel, accel_reason) = match &resolved {
                    Some(r) => r.clone(),
                    None => resolved.insert(qemu::resolve_accel(accel, &k.image)?).clone(),
                };
                let ready = batch
                    .into_iter()
                    .map(|(src, k)| Ready {
                        variant: k.variant,
                        prepared: Prepared {
                            source_tree: src.tree.clone(),
                            kernels: vec![k],
                            initramfs: initramfs.clone(),
                            accel,
                            accel_reason: accel_reason.clone(),
                        },
                    })
                    .collect();
                boot(ready)?;
            }
            builder.join().map_err(|_| anyhow::anyhow!("the kernel build thread panicked"))?;
            Ok(())
        })?;
        Ok(failed)
    }
}

/// `variant` of `src` built (or taken from the cache), or why it failed.
fn ensure_kernel(src: &kernel::Source, rebuild: bool, variant: Variant) -> Result<kernel::Built, BuildFailed> {
    kernel::ensure(variant, src, rebuild)
        .map_err(|error| BuildFailed { kernel: kernel::kernel_name(&src.of.name, variant), error })
}

/// One boot of `variant` with `config`, on the images in `images_dir`,
/// logging into `out_dir`. The same path serves runs and VM tests.
pub struct BootRequest<'a> {
    pub prepared: &'a Prepared,
    pub variant: Variant,
    pub config: RunConfig,
    pub includes: &'a [Include],
    pub machine: &'a Machine,
    pub images_dir: &'a Path,
    /// The NVDIMM image set, `nvdimm-<set>-N.img`: the variant's own name
    /// unless a scenario hands one kernel's images to another.
    pub image_set: Option<&'a str>,
    pub out_dir: &'a Path,
    pub fresh: bool,
    /// Suffix for log names when one directory holds several boots.
    pub tag: &'a str,
    /// When to SIGKILL QEMU (crash scenarios).
    pub kill_at: Option<boot::KillAt>,
    /// A root filesystem image, attached as a snapshot (fstests).
    pub root_disk: Option<&'a Path>,
}

impl BootRequest<'_> {
    /// The image set this boot uses.
    pub fn images(&self) -> ImageSet<'_> {
        ImageSet::new(self.images_dir, self.image_set.unwrap_or(self.prepared.name(self.variant)))
    }

    fn file(&self, stem: &str, ext: &str) -> PathBuf {
        self.out_dir.join(format!("{stem}-{}{}.{ext}", self.prepared.name(self.variant), self.tag))
    }

    /// The VM this request describes, with its images and initrd made.
    pub fn vm(&self, console: Console) -> Result<Vm> {
        self.machine.check()?;
        let (m, set) = (self.machine, self.images());
        let kernel = self.prepared.kernel(self.variant)?;
        let config = std::fs::read_to_string(&kernel.config)
            .with_context(|| format!("reading the {} kernel's config {}", kernel.name, kernel.config.display()))?;
        pmem::check_kernel(m.pmem, &kernel.name, &config)?;
        let images = pmem::prepare(set, m.pmem, m.devices(), m.geometry, self.fresh)?;
        let data = disks::prepare(set, &dax_seal_protocol::disks_for(&self.config.workloads))?;
        // The guest sets up the kind of device the machine has, whoever
        // wrote the rest of the configuration.
        let config = RunConfig {
            pmem: m.pmem,
            blank_label_areas: pmem::blank_label_areas(&images)?,
            cpus: m.cpus,
            ..self.config.clone()
        };
        let archive = initramfs::run_archive(&config, self.includes)?;
        let initrd = self.file("initrd", "img");
        initramfs::write_initrd(&self.prepared.initramfs.path, &archive, &initrd)?;
        Ok(Vm {
            accel: self.prepared.accel_for(m).0,
            memory_mib: m.memory_mib,
            cpus: m.cpus,
            kernel: kernel.image.clone(),
            initrd: Some(initrd),
            cmdline: std::iter::once(qemu::kernel_cmdline())
                .chain(m.kernel_args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" "),
            pmem: images,
            disks: data,
            root_disk: self.root_disk.map(Path::to_path_buf),
            persistence: m.persistence.map(|p| p.name().to_string()),
            plugin: m.plugin.clone(),
            results_socket: None,
            console,
        })
    }

    pub fn boot(&self) -> Result<BootOutcome> {
        paths::ensure_dir(self.out_dir)?;
        let _images = self.images().lock()?;
        let spec = BootSpec {
            vm: self.vm(Console::Piped)?,
            console_log: self.file("console", "log"),
            ktap_log: self.file("results", "ktap"),
            deadline: self.machine.timeout + Duration::from_secs(self.config.requested_run_time()),
            silence: self.machine.silence,
            kill_at: self.kill_at.clone(),
        };
        let (pmem, data) = (spec.vm.pmem.clone(), spec.vm.disks.clone());
        let mut outcome = boot::boot(spec)?;
        outcome.host_checks = disks::run_checks(&outcome.ktap, &pmem, &data);
        Ok(outcome)
    }
}
