//! Persistent-memory regions to mounted DAX filesystems, through sysfs alone
//! (no ndctl).
//!
//! QEMU's NVDIMMs (and its virtio-pmem devices, through the virtio_pmem
//! driver's own libnvdimm bus) appear as libnvdimm regions, each holding one
//! raw namespace (also with a label area, which QEMU leaves blank). Every
//! region must sit on a bus of the kind the run asked for, so a run never
//! reports verdicts for a topology it did not have. We claim it
//! with the region's pfn seed (uuid, 2 MiB alignment, memmap on the device)
//! and bind it to nd_pmem, which makes `/dev/pmemN` DAX-capable. The pfn
//! info block lives on the NVDIMM, so on a later boot the kernel finds the
//! namespace already in fsdax mode and we keep it, and the filesystem on it,
//! unless the run asked for fresh ones.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use dax_seal_protocol::{ktap::TestResult, pmem::PmemKind, DaxMode, Mkfs, MOUNT_PREFIX};

use crate::machine;
use crate::report::Report;

const ND: &str = "/sys/bus/nd/devices";
const ND_PMEM: &str = "/sys/bus/nd/drivers/nd_pmem";
const DAX_PMEM: &str = "/sys/bus/nd/drivers/dax_pmem";
const ALIGN: &str = "2097152";
/// How long devices may take to appear once asked for (CXL regions reach
/// libnvdimm from asynchronous probes), under TCG on a busy host.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(60);

/// A sysfs attribute's value, trimmed.
pub fn read(path: impl AsRef<Path>) -> Result<String, String> {
    let path = path.as_ref();
    fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(|e| format!("read {}: {e}", path.display()))
}

/// Writes a sysfs attribute.
pub fn write(path: impl AsRef<Path>, value: &str) -> Result<(), String> {
    let path = path.as_ref();
    fs::write(path, value).map_err(|e| format!("write {value:?} to {}: {e}", path.display()))
}

/// Region directories, ordered by region number.
fn regions() -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir(ND)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("region")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// One set-up step: takes the block device so far, returns the block
/// device for the next step and a note saying what it did.
type Step<'a> = &'a dyn Fn(&str) -> Result<(String, String), String>;

/// Sets up every region; true when every step of every region succeeded.
pub fn set_up_all(
    report: &mut Report,
    kind: PmemKind,
    fresh: bool,
    mkfs: Mkfs,
    blank_label_areas: &[bool],
    dax: impl Fn(usize) -> DaxMode,
) -> bool {
    // CXL devices have no region until one is made; NVDIMMs and
    // virtio-pmem devices come with theirs.
    let mut assembled = Vec::new();
    if kind == PmemKind::Cxl {
        match crate::cxl::assemble(blank_label_areas.len()).and_then(|notes| {
            wait_for_regions(blank_label_areas.len())?;
            Ok(notes)
        }) {
            Ok(notes) => assembled = notes,
            Err(reason) => {
                report.single("setup", &TestResult::Fail(format!("CXL regions: {reason}")));
                return false;
            }
        }
    }
    let regions = regions();
    if regions.is_empty() {
        let hint = match kind {
            PmemKind::Nfit | PmemKind::Devdax => "is QEMU given -machine nvdimm=on and the kernel ACPI_NFIT?",
            PmemKind::Virtio => "is QEMU given virtio-pmem-pci and the kernel VIRTIO_PMEM?",
            PmemKind::Cxl => "did cxl_pmem_region hand the regions to libnvdimm (CXL_PMEM)?",
        };
        let reason = format!("no {} region under {ND}: {hint}", kind.device());
        report.single("setup", &TestResult::Fail(reason));
        return false;
    }
    if let Some(reason) = regions.iter().find_map(|r| wrong_provider(r, kind)) {
        report.single("setup", &TestResult::Fail(reason));
        return false;
    }
    let devdax = |i: usize| kind.is_device_dax(i, regions.len());
    // Whether region i's namespace lives in labels, and if so whether its
    // label area was blank.
    let labels =
        |i: usize| if kind.labelled() { Some(blank_label_areas.get(i).copied().unwrap_or(false)) } else { None };
    let cases = (0..regions.len()).map(|i| if devdax(i) { 1 } else { 3 }).sum();
    let mut sub = report.subtest("setup", cases);
    for note in &assembled {
        sub.diag(note);
    }
    let mut all_ok = true;
    for (i, region) in regions.iter().enumerate() {
        if devdax(i) {
            let outcome = match ensure_claimed(region, &DEVICE_DAX, labels(i)) {
                Ok((dev, how)) => {
                    sub.diag(&format!("{how}: {dev}"));
                    TestResult::Pass
                }
                Err(reason) => TestResult::Fail(reason),
            };
            all_ok &= outcome == TestResult::Pass;
            sub.case(&format!("pmem{i} device-dax namespace"), outcome);
            continue;
        }
        let mount_point = format!("{MOUNT_PREFIX}{i}");
        let option = format!("dax={}", dax(i).name());
        let steps: [(String, Step<'_>); 3] = [
            (format!("pmem{i} fsdax namespace"), &|_| ensure_claimed(region, &FSDAX, labels(i))),
            (format!("pmem{i} xfs"), &|dev| ensure_xfs(dev, fresh, mkfs).map(|how| (dev.to_string(), how))),
            (format!("pmem{i} mount {option}"), &|dev| {
                machine::mount_fs(dev, &mount_point, "xfs", &option)
                    .map(|()| (dev.to_string(), format!("{dev} on {mount_point}")))
            }),
        ];
        // Each step hands the block device to the next; after a failure the
        // remaining steps are reported as failed, never silently dropped.
        let mut dev: Result<String, String> = Ok(String::new());
        for (name, f) in steps {
            let outcome = match &dev {
                Err(_) => TestResult::Fail("not attempted: an earlier step failed".into()),
                Ok(d) => match f(d) {
                    Ok((next, how)) => {
                        sub.diag(&how);
                        dev = Ok(next);
                        TestResult::Pass
                    }
                    Err(reason) => {
                        dev = Err(reason.clone());
                        TestResult::Fail(reason)
                    }
                },
            };
            all_ok &= outcome == TestResult::Pass;
            sub.case(&name, outcome);
        }
    }
    sub.end();
    all_ok
}

/// Waits until libnvdimm has `count` regions (CXL regions reach it from
/// the cxl_pmem_region driver's probe, after their commit).
fn wait_for_regions(count: usize) -> Result<(), String> {
    let start = std::time::Instant::now();
    loop {
        let found = regions().len();
        if found >= count {
            // Reading a bus's wait_probe returns once its regions,
            // namespaces and claims have been probed.
            for bus in fs::read_dir(ND).into_iter().flatten().flatten() {
                if bus.file_name().to_string_lossy().starts_with("ndbus") {
                    read(bus.path().join("wait_probe"))?;
                }
            }
            return Ok(());
        }
        if start.elapsed() > SETTLE {
            return Err(format!(
                "{found} libnvdimm regions under {ND} {} s after the CXL regions were committed, not {count}",
                SETTLE.as_secs()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Why `region` is not of `kind`, if it is not: its bus's provider names
/// who made it.
fn wrong_provider(region: &Path, kind: PmemKind) -> Option<String> {
    let bus = match fs::canonicalize(region) {
        Ok(real) => real.parent().map(|p| p.join("provider")),
        Err(e) => return Some(format!("{}: {e}", region.display())),
    }?;
    match read(&bus) {
        Ok(provider) if provider == kind.provider() => None,
        Ok(provider) => Some(format!(
            "{} sits on a {provider:?} bus, not {:?}: the run asked for {} devices only",
            region.display(),
            kind.provider(),
            kind.name()
        )),
        Err(e) => Some(e),
    }
}

fn namespace_of(region: &Path) -> Result<String, String> {
    let mut names: Vec<String> = fs::read_dir(region)
        .map_err(|e| format!("{}: {e}", region.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("namespace"))
        .collect();
    names.sort();
    names.into_iter().next().ok_or_else(|| format!("{} has no namespace", region.display()))
}

fn block_device_of(nd_dev: &str) -> Result<String, String> {
    let dir = Path::new(ND).join(nd_dev).join("block");
    let name = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| format!("{nd_dev} has no block device"))?;
    let dax = read(format!("/sys/block/{name}/queue/dax"))?;
    if dax != "1" {
        return Err(format!("/dev/{name} is not DAX-capable (queue/dax = {dax})"));
    }
    Ok(name)
}

/// How a namespace is claimed: in fsdax mode by a pfn device bound to
/// nd_pmem (a block device), or in device-dax mode by a dax device bound to
/// dax_pmem (a character device). Either way the claim lives in an info
/// block on the device and survives reboots.
struct Claim {
    /// What a reader calls the mode.
    mode: &'static str,
    /// The namespace's `mode` once claimed: the kernel calls fsdax
    /// "memory" (ndctl's old name).
    ns_mode: &'static str,
    /// The region's seed attribute and its devices' name prefix.
    seed: &'static str,
    prefix: &'static str,
    /// The driver to bind the claiming device to.
    driver: &'static str,
    /// 2 MiB for fsdax where supported (PMD faults); 4 KiB for device-dax,
    /// so that each first touch of a page faults, as in a file.
    align: fn(supported: &str) -> &'static str,
    /// The device node of a bound claiming device.
    device: fn(nd_dev: &str) -> Result<String, String>,
}

const FSDAX: Claim = Claim {
    mode: "fsdax",
    ns_mode: "memory",
    seed: "pfn_seed",
    prefix: "pfn",
    driver: ND_PMEM,
    align: |supported| if supported.split_whitespace().any(|a| a == ALIGN) { ALIGN } else { "4096" },
    device: |pfn| block_device_of(pfn).map(|dev| format!("/dev/{dev}")),
};

const DEVICE_DAX: Claim = Claim {
    mode: "device-dax",
    ns_mode: "dax",
    seed: "dax_seed",
    prefix: "dax",
    driver: DAX_PMEM,
    align: |_| "4096",
    device: char_device_of,
};

/// Claims the region's namespace as `claim` says, or keeps the claim an
/// earlier boot made; returns the device node and how it came to be.
/// `labels` is, for a device whose namespaces live in its label area,
/// whether that area was blank when the boot began.
fn ensure_claimed(region: &Path, claim: &Claim, labels: Option<bool>) -> Result<(String, String), String> {
    let ns = namespace_of(region)?;
    let ns_dir = Path::new(ND).join(&ns);
    let made = match labels {
        Some(blank) => ensure_labelled_namespace(region, &ns, blank)?,
        None => String::new(),
    };
    let mode = read(ns_dir.join("mode"))?;
    let holder = read(ns_dir.join("holder")).unwrap_or_default();
    if mode == claim.ns_mode && holder.starts_with(claim.prefix) {
        let dev = (claim.device)(&holder)?;
        return Ok((dev, format!("{made}kept {} namespace {ns} ({holder})", claim.mode)));
    }
    // A virtio-pmem region lets the kernel map its unclaimed namespace with
    // struct pages in RAM ("memory" with no holder); an NVDIMM's shows
    // "raw". Either is a namespace nobody has claimed yet.
    let unclaimed = mode == "raw" || (mode == "memory" && holder.is_empty());
    if !unclaimed {
        return Err(format!(
            "{ns} is in {mode} mode (holder {holder:?}), not raw or {}: start from blank devices with --fresh",
            claim.mode
        ));
    }
    // An NVDIMM's label area starts blank in QEMU, which the kernel treats
    // as label-less: one raw namespace spans the region (a CXL region's
    // namespace was labelled above). Initialised labels (ndctl
    // init-labels) would give a size-0 seed instead, which we do not set up.
    if read(ns_dir.join("size"))? == "0" {
        return Err(format!("{ns} has size 0 (initialised namespace labels?): start from blank devices with --fresh"));
    }
    if ns_dir.join("driver").exists() {
        write(Path::new(ND_PMEM).join("unbind"), &ns)?;
    }
    let seed = read(region.join(claim.seed))?;
    let seed_dir = Path::new(ND).join(&seed);
    let align = (claim.align)(&read(seed_dir.join("supported_alignments")).unwrap_or_default());
    write(seed_dir.join("uuid"), &new_uuid()?)?;
    write(seed_dir.join("align"), align)?;
    // The memmap (struct pages) goes on the device, except on CXL: QEMU
    // emulates CXL memory access by access, and struct pages are touched
    // on every fault and pin.
    let (memmap, where_) = if labels.is_some() { ("ram", "in RAM") } else { ("pmem", "on device") };
    write(seed_dir.join("mode"), memmap)?;
    write(seed_dir.join("namespace"), &ns)?;
    write(Path::new(claim.driver).join("bind"), &seed)?;
    let dev = (claim.device)(&seed)?;
    Ok((dev, format!("{made}put {ns} in {} mode through {seed} (align {align}, memmap {where_})", claim.mode)))
}

/// Gives a labelled region's seed namespace the whole region, which writes
/// the device's label index and the namespace's label, when the label
/// area held no label (blank, or index blocks alone from a first labelling
/// cut short: the host tells); keeps a namespace its labels already give. A namespace
/// of size 0 on an area that was not blank means labels the kernel did
/// not accept (damaged, or made for another region): reported, never
/// remade, so that what the device holds is not lost.
fn ensure_labelled_namespace(region: &Path, ns: &str, blank: bool) -> Result<String, String> {
    let ns_dir = Path::new(ND).join(ns);
    if read(ns_dir.join("size"))? != "0" {
        return Ok(String::new());
    }
    if !blank {
        return Err(format!(
            "{} gives no namespace although its device's label storage area holds a label (or bytes that \
             are not an index block): damaged labels, or labels of another region (the device's serial or \
             capacity changed). Nothing was changed; run with --fresh to start the device over (its \
             contents are lost)",
            region.display()
        ));
    }
    let size = read(region.join("available_size"))?;
    write(ns_dir.join("uuid"), &new_uuid()?)?;
    write(ns_dir.join("size"), &size)?;
    Ok(format!("labelled {ns} over the region's {size} bytes; "))
}

/// `/dev/daxR.N` of the nd dax device `dax`: the device-dax instance
/// dax_pmem made as its child.
fn char_device_of(dax: &str) -> Result<String, String> {
    let dir = Path::new(ND).join(dax);
    let name = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("dax") && dir.join(n).join("dev").exists())
        .ok_or_else(|| format!("{} holds no device-dax instance (is it bound to dax_pmem?)", dir.display()))?;
    let dev = format!("/dev/{name}");
    if !Path::new(&dev).exists() {
        return Err(format!("{dev} does not exist after {dax} was bound to dax_pmem"));
    }
    Ok(dev)
}

fn new_uuid() -> Result<String, String> {
    read("/proc/sys/kernel/random/uuid")
}

/// Keeps an existing XFS unless `fresh`; makes one on a blank device; refuses
/// to overwrite anything else.
fn ensure_xfs(dev: &str, fresh: bool, mkfs: Mkfs) -> Result<String, String> {
    let mut head = [0u8; 4096];
    {
        use std::io::Read;
        let mut f = fs::File::open(dev).map_err(|e| format!("open {dev}: {e}"))?;
        f.read_exact(&mut head).map_err(|e| format!("read {dev}: {e}"))?;
    }
    let is_xfs = &head[..4] == b"XFSB";
    // sb_inprogress: mkfs.xfs sets it in its first superblock and clears it
    // when done, so a boot killed during mkfs leaves it set and the
    // filesystem unmountable. It never held anything: make it again.
    let half_made = is_xfs && head[SB_INPROGRESS] != 0;
    if is_xfs && !half_made && !fresh {
        return Ok(format!("kept the existing XFS on {dev}"));
    }
    if !is_xfs && !fresh && head.iter().any(|b| *b != 0) {
        return Err(format!(
            "{dev} holds data that is not XFS; refusing to format it (run with --fresh to start over)"
        ));
    }
    // reflink for the seal's unshare path and rmapbt so online repair can
    // rebuild a data fork (both on unless the run says otherwise);
    // exchange-range for the conformance row that tries it on a sealed
    // file; 2 MiB stripe unit so extents suit PMD faults.
    let meta = mkfs.meta_option();
    let data = data_option(dev)?;
    let out = Command::new("mkfs.xfs")
        .args(["-f", "-q", "-m", &meta, "-i", "exchange=1", "-d", &data, dev])
        .output()
        .map_err(|e| format!("cannot run mkfs.xfs: {e}"))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        return Err(format!("mkfs.xfs {dev} {}: {}", crate::describe_status(out.status), text.trim()));
    }
    let how = if half_made && !fresh { "made again the XFS an interrupted mkfs left on" } else { "made a new XFS on" };
    Ok(format!("{how} {dev} ({meta}, exchange=1, {data})"))
}

/// mkfs.xfs's `-d` argument for `dev`. mkfs.xfs 6.13 refuses a log under
/// 64 MiB, and with four allocation groups the 2 MiB-aligned groups of a
/// device under 1 GiB cannot hold one: such a device gets two.
fn data_option(dev: &str) -> Result<String, String> {
    let name = dev.trim_start_matches("/dev/");
    let sectors: u64 = read(format!("/sys/class/block/{name}/size"))?
        .trim()
        .parse()
        .map_err(|e| format!("/sys/class/block/{name}/size: {e}"))?;
    let small = sectors * 512 < 1 << 30;
    Ok(if small { "su=2m,sw=1,agcount=2" } else { "su=2m,sw=1" }.to_string())
}

/// Offset of `sb_inprogress` in the XFS superblock (struct xfs_dsb).
const SB_INPROGRESS: usize = 126;
