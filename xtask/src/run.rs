//! `cargo xtask run` and `cargo xtask shell`: check the request, build what
//! is missing, boot each kernel variant on its own NVDIMM images, judge, and
//! write the run's outputs under images/runs/<run-id>/.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dax_seal_protocol::RunConfig;

use crate::boot::{self, BootSpec, Outcome};
use crate::cli::{GuestArgs, Include, RunArgs, ShellArgs, SourceArgs, VmArgs};
use crate::kernel::{self, Variant};
use crate::nvdimm::{self, Geometry};
use crate::qemu::{self, Accel, Console, Vm};
use crate::results::{self, BootRecord, Results};
use crate::{deps, disks, initramfs, paths};

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
}

/// Workload names as given, or the default set; unknown names are refused.
pub fn select_workloads(names: &[String]) -> Result<Vec<String>> {
    if names.is_empty() {
        return Ok(dax_seal_protocol::default_workloads().map(|w| w.name.to_string()).collect());
    }
    let unknown: Vec<&String> = names.iter().filter(|n| dax_seal_protocol::workload(n).is_none()).collect();
    if !unknown.is_empty() {
        let known: Vec<String> =
            dax_seal_protocol::WORKLOADS.iter().map(|w| format!("  {:<18} {}", w.name, w.summary)).collect();
        bail!(
            "unknown workload {}. Known workloads:\n{}\nName one or more with --workload NAME, or leave --workload out to run the default set.",
            unknown.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", "),
            known.join("\n")
        );
    }
    Ok(names.to_vec())
}

/// Refuses bad guest flags before anything is built or written.
fn check_guest_args(guest: &GuestArgs) -> Result<()> {
    for inc in &guest.include {
        if !inc.host.exists() {
            bail!("--include {}: no such file or directory on the host", inc.host.display());
        }
    }
    geometry(&guest.vm).map(drop)
}

pub fn geometry(vm: &VmArgs) -> Result<Geometry> {
    let g = Geometry { size: vm.nvdimm_size, label_size: vm.label_size };
    nvdimm::validate(g)?;
    if vm.nvdimms == 0 {
        bail!("--nvdimms 0: the guest needs at least one NVDIMM");
    }
    Ok(g)
}

/// Host packages, kernels, initramfs and the accelerator.
pub fn prepare(variants: &[Variant], source: &SourceArgs, vm: &VmArgs) -> Result<Prepared> {
    deps::ensure(deps::Need::for_source(source.kernel_src.is_some()))?;
    let src = kernel::resolve_source(source.kernel_src.as_deref())?;
    let mut kernels = Vec::new();
    for &v in variants {
        kernels.push(kernel::ensure(v, &src, source.rebuild)?);
    }
    let initramfs = initramfs::build()?;
    let probe_kernel = &kernels.first().context("no kernel variant selected")?.bzimage;
    let (accel, accel_reason) = qemu::resolve_accel(vm.accel, probe_kernel)?;
    Ok(Prepared { source_tree: src.tree, kernels, initramfs, accel, accel_reason })
}

/// One boot of `variant` with `config`, on the images in `images_dir`,
/// logging into `out_dir`. The same path serves runs and VM tests.
pub struct BootRequest<'a> {
    pub prepared: &'a Prepared,
    pub variant: Variant,
    pub config: RunConfig,
    pub includes: &'a [Include],
    pub vm: &'a VmArgs,
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
}

impl BootRequest<'_> {
    fn file(&self, stem: &str, ext: &str) -> PathBuf {
        self.out_dir.join(format!("{stem}-{}{}.{ext}", self.variant, self.tag))
    }

    fn vm(&self, console: Console) -> Result<Vm> {
        let set = self.image_set.unwrap_or(self.variant.name());
        let images = nvdimm::prepare(self.images_dir, set, self.vm.nvdimms, geometry(self.vm)?, self.fresh)?;
        let data = disks::prepare(self.images_dir, set, &dax_seal_protocol::disks_for(&self.config.workloads))?;
        let archive = initramfs::run_archive(&self.config, self.includes)?;
        let initrd = self.file("initrd", "img");
        initramfs::write_initrd(&self.prepared.initramfs.path, &archive, &initrd)?;
        Ok(Vm {
            accel: self.prepared.accel,
            memory_mib: self.vm.memory,
            cpus: self.vm.cpus,
            kernel: self.prepared.kernel(self.variant)?.bzimage.clone(),
            initrd: Some(initrd),
            cmdline: qemu::kernel_cmdline(),
            nvdimms: images,
            disks: data,
            results_socket: None,
            console,
        })
    }

    pub fn boot(&self) -> Result<Outcome> {
        paths::ensure_dir(self.out_dir)?;
        let set = self.image_set.unwrap_or(self.variant.name());
        let _images = paths::lock(
            &self.images_dir.join(format!("nvdimm-{set}.lock")),
            &format!("the NVDIMM images {}/nvdimm-{set}-*.img", self.images_dir.display()),
        )?;
        let spec = BootSpec {
            vm: self.vm(Console::Piped)?,
            console_log: self.file("console", "log"),
            ktap_log: self.file("results", "ktap"),
            deadline: Duration::from_secs(self.vm.timeout + self.config.requested_run_time()),
            silence: Duration::from_secs(self.vm.silence),
            kill_at: self.kill_at.clone(),
        };
        let (nvdimms, data) = (spec.vm.nvdimms.clone(), spec.vm.disks.clone());
        let mut outcome = boot::boot(spec)?;
        outcome.host_checks = disks::run_checks(&outcome.ktap, &nvdimms, &data);
        Ok(outcome)
    }

    pub fn record(&self, outcome: &Outcome) -> BootRecord {
        BootRecord {
            kernel: self.variant.name().to_string(),
            accel: self.prepared.accel.name().to_string(),
            accel_reason: self.prepared.accel_reason.clone(),
            end: outcome.end.clone(),
            elapsed_ms: outcome.elapsed.as_millis() as u64,
            first_ktap_ms: outcome.first_ktap_at.map(|d| d.as_millis() as u64),
            console_log: outcome.console_log.clone(),
            ktap_log: outcome.ktap_log.clone(),
            command_line: outcome.command_line.clone(),
            ignored_result_lines: outcome.ignored.clone(),
        }
    }
}

/// "20261121-195512" (UTC) from the system clock.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A new images/runs/<id>/ and the `latest` link to it.
fn new_run_dir() -> Result<(String, PathBuf)> {
    new_output_dir("runs")
}

/// A new images/<kind>/<id>/ and the `latest` link beside it.
pub fn new_output_dir(kind: &str) -> Result<(String, PathBuf)> {
    let runs = paths::images_dir().join(kind);
    paths::ensure_dir(&runs)?;
    let base = timestamp();
    let (id, dir) = (1..)
        .map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") })
        .map(|id| (id.clone(), runs.join(&id)))
        .find(|(_, d)| !d.exists())
        .context("no free run directory name")?;
    paths::ensure_dir(&dir)?;
    let tmp = runs.join(format!(".latest-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&id, &tmp).with_context(|| format!("creating images/{kind}/latest"))?;
    std::fs::rename(&tmp, runs.join("latest")).with_context(|| format!("updating images/{kind}/latest"))?;
    Ok((id, dir))
}

pub fn cmd(args: &RunArgs) -> Result<ExitCode> {
    let workloads = select_workloads(&args.workloads)?;
    let guest = &args.guest;
    check_guest_args(guest)?;
    let variants = args.kernel.variants();
    let prepared = prepare(&variants, &guest.source, &guest.vm)?;
    eprintln!("[run] accelerator: {} ({})", prepared.accel.name(), prepared.accel_reason);
    let (run_id, run_dir) = new_run_dir()?;
    let images_dir = paths::images_dir();
    let mut runs = Vec::new();
    let mut boots = Vec::new();
    for &variant in &variants {
        let config = RunConfig {
            kernel: variant.name().to_string(),
            workloads: workloads.clone(),
            exec: args.exec.clone(),
            fresh: guest.fresh,
            shell: false,
            params: args.params.iter().cloned().collect(),
            dax: guest.dax.0.clone(),
            run: format!("run {run_id}"),
        };
        let request = BootRequest {
            prepared: &prepared,
            variant,
            config: config.clone(),
            includes: &guest.include,
            vm: &guest.vm,
            images_dir: &images_dir,
            image_set: None,
            out_dir: &run_dir,
            fresh: guest.fresh,
            tag: "",
            kill_at: None,
        };
        eprintln!("[run] booting {variant}: workloads {}", workloads.join(", "));
        let outcome = request.boot()?;
        eprintln!("[run] {variant}: {} after {:.1} s", outcome.end.describe(), outcome.elapsed.as_secs_f64());
        if !outcome.end.is_clean() {
            eprintln!("[run] {variant}: QEMU command line: {}", outcome.command_line);
        }
        runs.extend(results::judge(variant.name(), &config.expected_tests(), &outcome));
        boots.push(request.record(&outcome));
    }
    let verdict = results::verdict_of(&runs, &boots);
    let results = Results { verdict, run_id, runs, boots, xtask_peak_rss_kib: results::peak_rss_kib() };
    // The verdicts reach the terminal even when the disk is too full to
    // keep them.
    let written = results::write_all(&run_dir, &results);
    println!("{}", results::summary(&results));
    written.context("the verdicts above could not be saved")?;
    println!("outputs: {}", run_dir.display());
    Ok(if results.verdict == "pass" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn shell(args: &ShellArgs) -> Result<ExitCode> {
    let guest = &args.guest;
    check_guest_args(guest)?;
    let prepared = prepare(&[args.kernel], &guest.source, &guest.vm)?;
    eprintln!("[shell] accelerator: {} ({})", prepared.accel.name(), prepared.accel_reason);
    let out_dir = paths::images_dir().join("shell");
    let images_dir = paths::images_dir();
    let request = BootRequest {
        prepared: &prepared,
        variant: args.kernel,
        config: RunConfig {
            kernel: args.kernel.name().into(),
            fresh: guest.fresh,
            shell: true,
            dax: guest.dax.0.clone(),
            run: "shell".into(),
            ..Default::default()
        },
        includes: &guest.include,
        vm: &guest.vm,
        images_dir: &images_dir,
        image_set: None,
        out_dir: &out_dir,
        fresh: guest.fresh,
        tag: "",
        kill_at: None,
    };
    paths::ensure_dir(&out_dir)?;
    let _images = paths::lock(
        &images_dir.join(format!("nvdimm-{}.lock", args.kernel.name())),
        &format!("the NVDIMM images {}/nvdimm-{}-*.img", images_dir.display(), args.kernel.name()),
    )?;
    let vm = request.vm(Console::Interactive)?;
    let argv = qemu::argv(&vm);
    eprintln!("[shell] {} {}", qemu::QEMU, boot::shell_quote(&argv));
    eprintln!("[shell] exit the guest shell to power off; Ctrl-A X quits QEMU at once");
    let status = std::process::Command::new(qemu::QEMU)
        .args(&argv)
        .status()
        .with_context(|| format!("cannot start {}", qemu::QEMU))?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_selection() {
        assert_eq!(
            select_workloads(&[]).unwrap(),
            [
                "dax-smoke",
                "seal-conformance",
                "cli",
                "seal-lifetime",
                "pinned-dma",
                "swap-pressure",
                "userspace-flush",
                "seal-race"
            ]
        );
        assert_eq!(select_workloads(&["selftest-silent".into()]).unwrap(), ["selftest-silent"]);
        let err = select_workloads(&["dax-smoke".into(), "nope".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown workload \"nope\"") && err.contains("dax-smoke"), "{err}");
    }

    #[test]
    fn timestamps_look_right() {
        let t = timestamp();
        assert_eq!(t.len(), 15, "{t}");
        assert!(t.starts_with("20") && t.as_bytes()[8] == b'-', "{t}");
    }
}
