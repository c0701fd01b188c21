//! The QEMU command line, one small function per concern, and the choice of
//! accelerator: KVM only when a probe boot shows it actually runs a guest.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::paths;
use crate::vm::disks::Disk;
use crate::vm::machine::AccelChoice;
use crate::vm::pmem::{self, Image};

pub const QEMU: &str = "qemu-system-x86_64";
/// How long a KVM probe boot may take to print the kernel banner.
pub const KVM_PROBE_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Where the guest console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Console {
    /// QEMU's stdout, read and scanned by the host.
    Piped,
    /// The user's terminal (`cargo xtask shell`).
    Interactive,
}

#[derive(Debug, Clone)]
pub struct Vm {
    pub accel: Accel,
    pub memory_mib: u64,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// Persistent-memory devices, each of its own kind.
    pub pmem: Vec<Image>,
    /// Data disks (virtio-blk, NVMe) the workloads asked for.
    pub disks: Vec<Disk>,
    /// A root filesystem image attached read-write as a snapshot: the
    /// guest's writes go to a temporary overlay, never to the image
    /// (`cargo xtask fstests`).
    pub root_disk: Option<PathBuf>,
    /// QEMU's nvdimm-persistence value, if any.
    pub persistence: Option<String>,
    /// A TCG plugin (`PATH,key=value,...`), run with one TCG thread.
    pub plugin: Option<String>,
    /// Unix socket the host listens on for the KTAP results port.
    pub results_socket: Option<PathBuf>,
    pub console: Console,
}

/// The kernel command line for a test guest.
pub fn kernel_cmdline() -> String {
    [
        "console=ttyS0",
        // A panic reboots at once, and -no-reboot turns that into QEMU exiting.
        "panic=-1",
        "rdinit=/init",
        // An Oops ends the guest at once instead of leaving it half alive; the
        // host scanner has already recorded the report from the console.
        "oops=panic",
        // PCI interrupts are routed through the BIOS's table, not ACPI's
        // link devices: evaluating those under TCG cost 0.3 s of every
        // boot, and the virtio and NVMe devices use MSI-X anyway. The local
        // APIC and the I/O APIC then come from the BIOS's MP table
        // (X86_MPPARSE in base.config: without it the kernel disables the
        // local APIC, and with it MSI and every CPU but the first). ACPI
        // still describes the NVDIMMs (NFIT) and powers the guest off.
        "acpi=noirq",
        // No bounce buffers: every device here DMAs to 64-bit addresses
        // (virtio without ACCESS_PLATFORM bypasses the DMA API; NVMe sets
        // a 64-bit mask). The NUMA kernel counts the memory-hotplug area
        // (ACPI SRAT) as possible memory above 4 GiB, so it would set
        // aside and zero 64 MiB of RAM for them: 0.1 to 0.3 s of every TCG
        // boot. A device that needed one would fail its DMA loudly.
        "swiotlb=noforce",
        // Warnings and worse on the console while the kernel boots; its
        // informational messages (about 17 KB) stay in the log buffer.
        // Under TCG every console byte is a port write QEMU passes on by
        // itself: the first KTAP line came 50 ms sooner (1.29 s against
        // 1.34 s, medians of 40 alternating boots). PID 1 raises the level
        // back to the default (KERN_INFO) before anything runs, so
        // workloads and reports are on the console whole.
        "loglevel=5",
        // Trace events keep their enum names in the format strings that
        // tracefs shows (`events/*/format`) instead of having them
        // rewritten to numbers at boot. Only programs that parse those
        // files (perf, trace-cmd) need the numbers, and the guest runs
        // none; the `trace` text the workloads read is formatted by the
        // kernel's own compiled code either way. The rewrite scans every
        // event's format for every enum of its subsystem (XFS alone has
        // hundreds of each) and waited for at the end of the initcalls:
        // 0.52 s of guest time under `-icount shift=0`, and the first
        // KTAP line came 0.3 s sooner (0.84 s against 1.14 s, medians of
        // 5 alternating dax-smoke boots of the patched 7.3 kernel).
        "initcall_blacklist=trace_eval_init",
    ]
    .join(" ")
}

/// The full argument list (without the program name).
pub fn argv(vm: &Vm) -> Vec<String> {
    [
        accel_args(vm.accel, vm.plugin.as_deref(), vm.cpus),
        machine_args(&vm.pmem, vm.persistence.as_deref()),
        memory_args(vm.memory_mib, vm.cpus, &vm.pmem),
        vm.disks.iter().enumerate().flat_map(|(i, d)| crate::vm::disks::qemu_args(i, d)).collect(),
        vm.root_disk.as_deref().map(root_disk_args).unwrap_or_default(),
        isolation_args(),
        console_args(&vm.console),
        vm.results_socket.as_deref().map(results_args).unwrap_or_default(),
        // Last among the devices: QEMU plugs a device that names no bus into
        // the newest one, which after a CXL host bridge takes bridges only.
        vm.pmem.iter().enumerate().flat_map(|(i, img)| pmem::qemu_args(i, img)).collect(),
        boot_args(&vm.kernel, vm.initrd.as_deref(), &cmdline(vm, host_tsc_khz)),
    ]
    .concat()
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|x| x.to_string()).collect()
}

/// The CPU TCG emulates: "max", every feature TCG knows (clwb and
/// clflushopt among them), less ERMS and FSRM. With them the kernel's
/// memcpy, memset and clear_page, and glibc's, use `rep movsb`/`rep stosb`,
/// which TCG runs one byte per iteration; without them they move words.
/// Under TCG here that made unpacking the initramfs 85 ms instead of 135 ms
/// and the two XFS mounts 30 ms instead of 95 ms; a whole dax-smoke boot
/// took 1.56 s instead of 1.71 s (medians of 40 alternating boots). On CXL memory, which QEMU emulates access by access,
/// a 128 MiB read of a DAX file took 2.5 s instead of 20 s.
const TCG_CPU: &str = "max,-erms,-fsrm";

fn accel_args(accel: Accel, plugin: Option<&str>, cpus: u32) -> Vec<String> {
    match (accel, plugin) {
        // The host CPU as is: the fastest, and what a real machine offers.
        (Accel::Kvm, _) => s(&["-accel", "kvm", "-cpu", "host"]),
        (Accel::Tcg, None) if cpus <= 1 => s(&["-accel", "tcg", "-cpu", TCG_CPU]),
        // Several vCPUs take turns on one TCG thread: with a thread each,
        // QEMU 7.2 let a 6.12 guest hit the int3 of a half-patched static
        // branch while booting (an oops in sched_clock_cpu). Their threads
        // still interleave, preempted between translation blocks.
        (Accel::Tcg, None) => s(&["-accel", "tcg,thread=single", "-cpu", TCG_CPU]),
        // One TCG thread: the plugin sees every vCPU's events in one order.
        (Accel::Tcg, Some(p)) => s(&["-accel", "tcg,thread=single", "-cpu", TCG_CPU, "-plugin", p]),
    }
}

fn machine_args(pmem: &[Image], persistence: Option<&str>) -> Vec<String> {
    // CXL needs a PCIe machine: its host bridges hang off q35's root
    // complex. No PCI hotplug in its ACPI tables either.
    if pmem.iter().any(|p| p.kind == pmem::PmemKind::Cxl) {
        let mut a = s(&["-machine", "q35,cxl=on", "-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"]);
        a.extend(pmem::machine_options(pmem));
        return a;
    }
    // nvdimm=on makes QEMU build the ACPI NFIT that describes the NVDIMMs;
    // nvdimm-persistence sets the platform capabilities it advertises.
    let nvdimm = pmem.iter().any(|p| p.kind.nfit());
    let mut machine = if nvdimm { "pc,nvdimm=on".to_string() } else { "pc".to_string() };
    if let Some(p) = persistence.filter(|_| nvdimm) {
        machine.push_str(&format!(",nvdimm-persistence={p}"));
    }
    // No PCI hotplug in the ACPI tables: nothing is hot-plugged, and the
    // guest's ACPI interpreter spent about 0.1 s of every boot (under TCG)
    // on the slots' methods.
    vec![
        "-machine".into(),
        machine,
        "-global".into(),
        "PIIX4_PM.acpi-root-pci-hotplug=off".into(),
        "-global".into(),
        "PIIX4_PM.acpi-pci-hotplug-with-bridge-support=off".into(),
    ]
}

fn memory_args(memory_mib: u64, cpus: u32, pmem: &[Image]) -> Vec<String> {
    // NVDIMMs and virtio-pmem are memory devices: they need slots and room
    // above RAM. CXL memory sits in its fixed memory windows instead.
    let slotted: Vec<&Image> = pmem.iter().filter(|p| p.kind != pmem::PmemKind::Cxl).collect();
    let extra_mib: u64 = slotted.iter().map(|n| n.geometry.size >> 20).sum();
    let memory = if slotted.is_empty() {
        format!("{memory_mib}M")
    } else {
        format!("{memory_mib}M,slots={},maxmem={}M", slotted.len(), memory_mib + extra_mib)
    };
    vec!["-m".into(), memory, "-smp".into(), cpus.to_string()]
}

fn root_disk_args(image: &Path) -> Vec<String> {
    // snapshot=on: the image is shared by every boot and kernel variant and
    // stays as built; each boot writes into its own throw-away overlay.
    vec![
        "-drive".into(),
        format!("file={},format=raw,if=none,id=fsroot,snapshot=on", image.display()),
        "-device".into(),
        format!("virtio-blk-pci,drive=fsroot,serial={}", dax_seal_protocol::fstests::ROOT_SERIAL),
    ]
}

fn isolation_args() -> Vec<String> {
    s(&[
        // No default VGA, NIC, floppy or CD: only what is asked for below.
        "-nodefaults",
        "-display",
        "none",
        // The guest never needs the network.
        "-nic",
        "none",
        // A guest reboot (panic=-1, or power-off failing) ends QEMU.
        "-no-reboot",
    ])
}

fn console_args(console: &Console) -> Vec<String> {
    match console {
        Console::Piped => s(&["-serial", "stdio"]),
        // mon:stdio keeps Ctrl-A X (quit) and Ctrl-A C (monitor) available.
        Console::Interactive => s(&["-serial", "mon:stdio"]),
    }
}

fn results_args(socket: &Path) -> Vec<String> {
    // A virtio-serial port named for the guest to find; QEMU connects to the
    // socket the host is already listening on. Two ports (0 is kept for a
    // console, ours is 1) instead of 31: the guest driver sets up two
    // virtqueues per port at probe, 8 ms of every TCG boot for the 29 unused.
    vec![
        "-device".into(),
        "virtio-serial-pci,id=vser0,max_ports=2".into(),
        "-chardev".into(),
        format!("socket,id=ktap,path={}", socket.display()),
        "-device".into(),
        format!("virtserialport,bus=vser0.0,chardev=ktap,name={}", dax_seal_protocol::RESULTS_PORT),
    ]
}

/// The kernel command line for `vm`: what the request asked for, and
/// under TCG the rate of the guest's TSC when the host's can be measured.
///
/// Under TCG the guest reads the host's time-stamp counter (QEMU offsets
/// it, at the same rate), but nothing tells the guest that rate: no CPUID
/// leaf 0x15, and the quick PIT calibration fails under emulation. The
/// kernel then calibrates against the PIT and the HPET, three rounds of
/// busy waiting, 70 ms and more of every boot. Given the rate
/// (`tsc_early_khz`), it skips them; it still checks the rate against the
/// HPET a second after boot and refines it by up to 1%. The first KTAP
/// line came 0.13 s sooner (0.85 s against 0.98 s, medians of 8
/// alternating dax-smoke boots of the patched 7.3 kernel). Under KVM the
/// hypervisor tells the guest itself.
///
/// Under TCG the guest also ticks from the HPET instead of its local APIC
/// timer (`nolapic_timer`). TCG offers no TSC-deadline mode, so the kernel
/// would time the APIC timer against the tick for 100 ms of every boot
/// (110 ms measured); the HPET needs no calibration. Under KVM the
/// TSC-deadline timer needs none either.
fn cmdline(vm: &Vm, tsc_khz: fn() -> Option<u64>) -> String {
    if vm.accel != Accel::Tcg {
        return vm.cmdline.clone();
    }
    // Measured only here: under KVM nothing would use the rate.
    match tsc_khz() {
        Some(khz) => format!("{} nolapic_timer tsc_early_khz={khz}", vm.cmdline),
        None => format!("{} nolapic_timer", vm.cmdline),
    }
}

/// The host's TSC rate in kHz, measured once per process against the
/// monotonic clock, when the host's TSC is invariant (its rate does not
/// change with frequency scaling or idle states): else None, and the
/// guest calibrates as it always did.
fn host_tsc_khz() -> Option<u64> {
    static KHZ: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *KHZ.get_or_init(|| {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
        let invariant = ["constant_tsc", "nonstop_tsc"].iter().all(|f| flags.split_whitespace().any(|x| x == *f));
        invariant.then(measure_tsc_khz).flatten()
    })
}

/// The median of three 10 ms measurements; None outside 0.1 to 10 GHz.
#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> Option<u64> {
    // SAFETY: RDTSC reads a counter; it has no preconditions on x86_64.
    #[allow(unused_unsafe)]
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let mut khz: Vec<f64> = (0..3)
        .map(|_| {
            let (c0, t0) = (tsc(), Instant::now());
            std::thread::sleep(Duration::from_millis(10));
            let (c1, t1) = (tsc(), Instant::now());
            c1.wrapping_sub(c0) as f64 / t1.duration_since(t0).as_secs_f64() / 1000.0
        })
        .collect();
    khz.sort_by(f64::total_cmp);
    let median = khz[1];
    (1e5..1e7).contains(&median).then(|| median.round() as u64)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_tsc_khz() -> Option<u64> {
    None
}

fn boot_args(kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> Vec<String> {
    let mut a = vec!["-kernel".into(), kernel.display().to_string(), "-append".into(), cmdline.to_string()];
    if let Some(initrd) = initrd {
        a.extend(["-initrd".into(), initrd.display().to_string()]);
    }
    a
}

/// The accelerator to use and why.
pub fn resolve_accel(choice: AccelChoice, probe_kernel: &Path) -> Result<(Accel, String)> {
    match choice {
        AccelChoice::Tcg => Ok((Accel::Tcg, "forced by --accel tcg".into())),
        AccelChoice::Kvm => {
            kvm_device().context("--accel kvm")?;
            Ok((Accel::Kvm, "forced by --accel kvm".into()))
        }
        AccelChoice::Auto => {
            if let Err(e) = kvm_device() {
                return Ok((Accel::Tcg, format!("{e:#}")));
            }
            let (works, detail) = probe_cached(probe_kernel)?;
            Ok(if works { (Accel::Kvm, detail) } else { (Accel::Tcg, detail) })
        }
    }
}

fn kvm_device() -> Result<()> {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").map(drop).context("/dev/kvm is not usable")
}

#[derive(Serialize, Deserialize)]
struct ProbeRecord {
    boot_id: String,
    works: bool,
    detail: String,
}

/// Probe results are kept per host boot: KVM does not start or stop working
/// without a reboot (or a module reload, after which delete the file).
fn probe_cached(kernel: &Path) -> Result<(bool, String)> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_string();
    let record_path = paths::cache_dir()?.join("kvm-probe.json");
    if let Some(r) = std::fs::read(&record_path).ok().and_then(|b| serde_json::from_slice::<ProbeRecord>(&b).ok()) {
        if r.boot_id == boot_id && !boot_id.is_empty() {
            return Ok((r.works, format!("{} (cached for this host boot in {})", r.detail, record_path.display())));
        }
    }
    let (works, detail) = probe_kvm(kernel)?;
    let record = ProbeRecord { boot_id, works, detail: detail.clone() };
    paths::write_atomic(&record_path, &serde_json::to_vec_pretty(&record)?)?;
    Ok((works, detail))
}

/// Boots `kernel` under KVM with early console output and waits for its
/// banner. Some hosts have a /dev/kvm whose guests never run.
fn probe_kvm(kernel: &Path) -> Result<(bool, String)> {
    let vm = Vm {
        accel: Accel::Kvm,
        memory_mib: 256,
        cpus: 1,
        kernel: kernel.to_path_buf(),
        initrd: None,
        cmdline: "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1".into(),
        pmem: Vec::new(),
        disks: Vec::new(),
        root_disk: None,
        persistence: None,
        plugin: None,
        results_socket: None,
        console: Console::Piped,
    };
    let mut child = Command::new(QEMU)
        .args(argv(&vm))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {QEMU} for the KVM probe"))?;
    let mut stdout = child.stdout.take().context("probe stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("Linux version") {
                let _ = tx.send(());
                break;
            }
        }
    });
    let start = Instant::now();
    let got = rx.recv_timeout(KVM_PROBE_DEADLINE).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    let secs = start.elapsed().as_secs_f64();
    Ok(if got {
        (true, format!("KVM probe printed the kernel banner in {secs:.1} s"))
    } else {
        (
            false,
            format!(
                "KVM probe printed nothing within {} s: KVM does not run guests here",
                KVM_PROBE_DEADLINE.as_secs()
            ),
        )
    })
}

/// Fails with what to do when QEMU is missing.
pub fn check_installed() -> Result<()> {
    if which::which(QEMU).is_err() {
        bail!("{QEMU} is not installed: run `cargo xtask deps` (as root on Debian it installs qemu-system-x86)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::pmem::{Geometry, PmemKind};

    fn vm() -> Vm {
        Vm {
            accel: Accel::Tcg,
            memory_mib: 1024,
            cpus: 2,
            kernel: "/k/vmlinux".into(),
            initrd: Some("/i/initrd".into()),
            cmdline: kernel_cmdline(),
            pmem: vec![
                Image {
                    path: "/img/a.img".into(),
                    geometry: Geometry { size: 1 << 30, label_size: 0 },
                    kind: PmemKind::Nfit,
                },
                Image {
                    path: "/img/b.img".into(),
                    geometry: Geometry { size: 512 << 20, label_size: 128 << 10 },
                    kind: PmemKind::Nfit,
                },
            ],
            disks: Vec::new(),
            root_disk: None,
            persistence: None,
            plugin: None,
            results_socket: Some("/run/x.sock".into()),
            console: Console::Piped,
        }
    }

    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2).filter(|w| w[0] == flag).map(|w| w[1].as_str()).collect()
    }

    #[test]
    fn argv_has_every_piece() {
        let a = argv(&vm());
        assert_eq!(after(&a, "-machine"), ["pc,nvdimm=on"]);
        assert_eq!(
            after(&a, "-global"),
            ["PIIX4_PM.acpi-root-pci-hotplug=off", "PIIX4_PM.acpi-pci-hotplug-with-bridge-support=off"],
            "no PCI hotplug methods for the guest's ACPI interpreter to load"
        );
        assert_eq!(after(&a, "-accel"), ["tcg,thread=single"], "two vCPUs share one TCG thread");
        assert_eq!(after(&argv(&Vm { cpus: 1, ..vm() }), "-accel"), ["tcg"]);
        assert_eq!(after(&a, "-m"), ["1024M,slots=2,maxmem=2560M"]);
        assert_eq!(after(&a, "-smp"), ["2"]);
        assert_eq!(
            after(&a, "-object"),
            [
                "memory-backend-file,id=pmem0,share=on,align=2M,mem-path=/img/a.img,size=1073741824",
                "memory-backend-file,id=pmem1,share=on,align=2M,mem-path=/img/b.img,size=536870912"
            ]
        );
        let devices = after(&a, "-device");
        assert!(devices.contains(&"nvdimm,id=nvdimm0,memdev=pmem0"));
        assert!(devices.contains(&"nvdimm,id=nvdimm1,memdev=pmem1,label-size=131072"));
        assert!(devices.iter().any(|d| d.starts_with("virtserialport,") && d.ends_with("name=dax-seal.ktap")));
        assert_eq!(after(&a, "-chardev"), ["socket,id=ktap,path=/run/x.sock"]);
        assert_eq!(after(&a, "-kernel"), ["/k/vmlinux"]);
        assert_eq!(after(&a, "-initrd"), ["/i/initrd"]);
        assert!(after(&a, "-append")[0].contains("panic=-1"));
        assert!(after(&a, "-append")[0].contains(" tsc_early_khz=") == host_tsc_khz().is_some());
        for flag in ["-no-reboot", "-nodefaults"] {
            assert!(a.iter().any(|x| x == flag), "{flag}");
        }
        assert_eq!(after(&a, "-serial"), ["stdio"]);
    }

    #[test]
    fn tsc_rate_only_under_tcg() {
        let v = vm();
        assert_eq!(
            cmdline(&v, || Some(2_596_140)),
            format!("{} nolapic_timer tsc_early_khz=2596140", kernel_cmdline())
        );
        assert_eq!(
            cmdline(&v, || None),
            format!("{} nolapic_timer", kernel_cmdline()),
            "an unmeasured rate: the guest calibrates"
        );
        let kvm = Vm { accel: Accel::Kvm, ..vm() };
        assert_eq!(cmdline(&kvm, || Some(2_596_140)), kernel_cmdline(), "KVM tells the guest itself");
    }

    #[test]
    fn host_tsc_rate_is_plausible() {
        // The host's rate, if measured, is a rate a CPU has (and the same
        // every time: it is measured once).
        if let Some(khz) = host_tsc_khz() {
            assert!((100_000..10_000_000).contains(&khz), "{khz}");
            assert_eq!(host_tsc_khz(), Some(khz));
        }
    }

    #[test]
    fn argv_variants() {
        let mut v = vm();
        let mut virtio = vm();
        for img in &mut virtio.pmem {
            img.kind = PmemKind::Virtio;
        }
        let a = argv(&virtio);
        assert_eq!(after(&a, "-machine"), ["pc"], "no NFIT without NVDIMMs");
        assert_eq!(after(&a, "-m"), ["1024M,slots=2,maxmem=2560M"]);
        assert!(after(&a, "-device").contains(&"virtio-pmem-pci,id=vpmem1,memdev=pmem1"));
        let mut cxl = vm();
        for img in &mut cxl.pmem {
            img.kind = PmemKind::Cxl;
        }
        let a = argv(&cxl);
        assert_eq!(after(&a, "-machine"), ["q35,cxl=on"], "CXL host bridges need PCIe");
        assert_eq!(after(&a, "-cpu"), ["max,-erms,-fsrm"], "memcpy in words, not bytes, under TCG");
        assert_eq!(after(&argv(&vm()), "-cpu"), ["max,-erms,-fsrm"]);
        assert_eq!(
            after(&a, "-M"),
            ["cxl-fmw.0.targets.0=cxl.0,cxl-fmw.0.size=1073741824,cxl-fmw.1.targets.0=cxl.1,cxl-fmw.1.size=536870912"],
            "one list of windows: QEMU refuses them spread over several -M"
        );
        assert_eq!(after(&a, "-m"), ["1024M"], "CXL memory is not in DIMM slots");
        let devices = after(&a, "-device");
        assert!(devices.contains(&"pxb-cxl,bus_nr=28,bus=pcie.0,id=cxl.1"), "{devices:?}");
        assert!(devices.contains(&"cxl-rp,port=0,bus=cxl.1,id=cxlrp1,chassis=2,slot=0"), "{devices:?}");
        assert!(devices.contains(&"cxl-type3,bus=cxlrp1,memdev=pmem1,lsa=lsa1,id=cxlmem1,sn=2"), "{devices:?}");
        let objects = after(&a, "-object");
        assert!(objects.contains(&"memory-backend-file,id=lsa0,share=on,mem-path=/img/a.img.lsa,size=131072"));
        assert!(objects.contains(&"memory-backend-file,id=lsa1,share=on,mem-path=/img/b.img.lsa,size=131072"));
        v.pmem.clear();
        v.results_socket = None;
        v.initrd = None;
        v.accel = Accel::Kvm;
        v.console = Console::Interactive;
        let a = argv(&v);
        assert_eq!(after(&a, "-machine"), ["pc"]);
        assert_eq!(after(&a, "-m"), ["1024M"]);
        assert_eq!(after(&a, "-cpu"), ["host"]);
        assert_eq!(after(&a, "-serial"), ["mon:stdio"]);
        assert!(after(&a, "-initrd").is_empty() && after(&a, "-chardev").is_empty());
    }
}
