//! Persistent memory, the one seam for its kinds ([`PmemKind`]: emulated
//! NVDIMMs, virtio-pmem, CXL memory devices): each device's backing file,
//! label storage area (CXL) and sidecar, and the QEMU arguments that attach
//! it. Each image has a sidecar `<image>.toml`
//! recording what xtask created it with and for which kind; an image without
//! one is not ours and is never touched, and an image is never handed to a
//! kind it was not made for. Images persist across runs (the guest keeps its
//! namespace and filesystem) until `--fresh` recreates them.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use dax_seal_protocol::pmem::PmemKind;

use crate::paths;
use crate::vm::images::{label_area_of, sidecar_of, ImageSet};

const MIB: u64 = 1 << 20;
pub const MIN_SIZE: u64 = 512 * MIB;
/// QEMU's CXL memory devices and fixed memory windows come in multiples of
/// 256 MiB.
const CXL_GRANULE: u64 = 256 * MIB;
/// A CXL device's label storage area unless `--label-size` says otherwise:
/// two index blocks and about 500 namespace labels.
const CXL_LABEL_AREA: u64 = 128 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    pub size: u64,
    pub label_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub path: PathBuf,
    pub geometry: Geometry,
    pub kind: PmemKind,
}

impl Image {
    /// The file holding the device's label storage area, for kinds that
    /// keep one beside the capacity (CXL).
    pub fn label_area(&self) -> Option<PathBuf> {
        self.kind.labelled().then(|| label_area_of(&self.path))
    }

    /// The label storage area's size: `--label-size`, or CXL's default.
    pub fn label_area_size(&self) -> u64 {
        label_area_size(self.kind, self.geometry)
    }
}

fn label_area_size(kind: PmemKind, g: Geometry) -> u64 {
    if kind.labelled() && g.label_size == 0 {
        CXL_LABEL_AREA
    } else {
        g.label_size
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    created_by: String,
    size: u64,
    label_size: u64,
    /// Absent in sidecars written before there were other kinds: those
    /// were all NVDIMMs.
    #[serde(default)]
    kind: PmemKind,
}

const CREATED_BY: &str = "dax-seal xtask";

fn human(bytes: u64) -> String {
    if bytes == 0 {
        "0".into()
    } else if bytes.is_multiple_of(1 << 30) {
        format!("{}G", bytes >> 30)
    } else if bytes.is_multiple_of(MIB) {
        format!("{}M", bytes >> 20)
    } else if bytes.is_multiple_of(1 << 10) {
        format!("{}K", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// How the image files of `kind` begin (vm/images.rs names a set's files):
/// each kind has files of its own, so that no kind boots another's.
pub fn image_prefix(kind: PmemKind) -> &'static str {
    match kind {
        PmemKind::Nfit => "nvdimm",
        PmemKind::Virtio => "virtio-pmem",
        PmemKind::Devdax => "devdax-nvdimm",
        PmemKind::Cxl => "cxl",
    }
}

/// Checks that `kind` can have `g` and the platform's persistence claim.
pub fn validate_kind(kind: PmemKind, g: Geometry, persistence: bool) -> Result<()> {
    if !kind.nfit() && !kind.labelled() && g.label_size != 0 {
        bail!(
            "--label-size {}: only NVDIMMs (--pmem nfit) and CXL memory devices (--pmem cxl) have a label area",
            human(g.label_size)
        );
    }
    if kind == PmemKind::Cxl && !g.size.is_multiple_of(CXL_GRANULE) {
        bail!(
            "--pmem-size {} is not usable for --pmem cxl: QEMU's CXL memory devices and windows come in \
             multiples of 256M (try {})",
            human(g.size),
            human(g.size.next_multiple_of(CXL_GRANULE))
        );
    }
    if !kind.nfit() && persistence {
        bail!(
            "--nvdimm-persistence is what ACPI's NFIT tells the guest: --pmem {} has no NFIT; \
             its persistence domain is the device's own",
            kind.name()
        );
    }
    Ok(())
}

/// Why `kind` boots under TCG only, if it does. QEMU 7.2 emulates CXL
/// memory access by access (it is not RAM mapped into the guest), which
/// KVM cannot run for the instructions a DAX workload uses on it.
pub fn tcg_only(kind: PmemKind) -> Option<&'static str> {
    (kind == PmemKind::Cxl).then_some(
        "QEMU emulates CXL memory access by access, which KVM cannot run for every instruction \
         a DAX mapping sees: --pmem cxl boots under TCG",
    )
}

/// The kernel options a guest needs to find `kind`'s devices (all built
/// in: the guest loads no modules).
pub fn kernel_options(kind: PmemKind) -> &'static [&'static str] {
    match kind {
        PmemKind::Nfit => &["CONFIG_ACPI_NFIT", "CONFIG_BLK_DEV_PMEM", "CONFIG_FS_DAX"],
        PmemKind::Devdax => &["CONFIG_ACPI_NFIT", "CONFIG_BLK_DEV_PMEM", "CONFIG_FS_DAX", "CONFIG_DEV_DAX_PMEM"],
        PmemKind::Virtio => &["CONFIG_VIRTIO_PMEM", "CONFIG_BLK_DEV_PMEM", "CONFIG_FS_DAX"],
        PmemKind::Cxl => &[
            "CONFIG_CXL_ACPI",
            "CONFIG_CXL_PCI",
            "CONFIG_CXL_MEM",
            "CONFIG_CXL_PORT",
            "CONFIG_CXL_REGION",
            "CONFIG_CXL_PMEM",
            "CONFIG_CXL_REGION_INVALIDATION_TEST",
            "CONFIG_BLK_DEV_PMEM",
            "CONFIG_FS_DAX",
        ],
    }
}

/// Refuses, before anything boots, a kernel whose configuration (the
/// text of its .config) lacks what `kind` needs, naming what is missing.
pub fn check_kernel(kind: PmemKind, kernel: &str, config: &str) -> Result<()> {
    let missing: Vec<&str> =
        kernel_options(kind).iter().copied().filter(|o| !config.lines().any(|l| l == format!("{o}=y"))).collect();
    if !missing.is_empty() {
        bail!(
            "--pmem {}: the {kernel} kernel lacks {} (built in); kernel-config/ asks for them, so this kernel \
             was built from other fragments: rebuild it with `cargo xtask kernel --rebuild`",
            kind.name(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// Checks sizes QEMU and the guest's fsdax set-up can use.
pub fn validate(g: Geometry) -> Result<()> {
    if g.size < MIN_SIZE || !g.size.is_multiple_of(2 * MIB) {
        bail!(
            "--nvdimm-size {} is not usable: it must be a multiple of 2M and at least {} \
             (XFS needs 300M, and the fsdax memmap lives on the device)",
            human(g.size),
            human(MIN_SIZE)
        );
    }
    if g.label_size != 0
        && (g.label_size < 128 << 10 || !g.label_size.is_multiple_of(4096) || g.label_size > g.size / 4)
    {
        bail!("--label-size {} is not usable: use 0 (no labels) or a multiple of 4K from 128K up to a quarter of the NVDIMM", human(g.label_size));
    }
    Ok(())
}

/// The set's `count` images of `kind`: reused when they match, created
/// when missing, recreated when `fresh`. Refuses foreign or damaged files,
/// and images another kind made.
pub fn prepare(set: ImageSet, kind: PmemKind, count: u32, g: Geometry, fresh: bool) -> Result<Vec<Image>> {
    validate(g)?;
    // The label area as made: CXL's default when none was asked for.
    let label_size = label_area_size(kind, g);
    paths::ensure_dir(set.dir)?;
    // Check every image before changing any, so a refusal changes nothing.
    let mut plan = Vec::new();
    for i in 0..count {
        let path = set.pmem(kind, i);
        let sidecar_path = sidecar_of(&path);
        let create = match (path.exists(), read_sidecar(&sidecar_path)?) {
            (false, _) => true,
            (true, None) => bail!(
                "{} exists but was not created by xtask (no {} beside it); it is left alone.\n\
                 Move it out of the way or delete it, then run again.",
                path.display(),
                sidecar_path.display()
            ),
            (true, Some(old)) if old.kind != kind => bail!(
                "{} was made for --pmem {}, not {}; an image is never handed to another kind.\n\
                 Move it out of the way or delete it and its sidecar, then run again.",
                path.display(),
                old.kind.name(),
                kind.name()
            ),
            (true, Some(_)) if fresh => true,
            (true, Some(old)) => {
                let len = fs::metadata(&path).with_context(|| format!("stat {}", path.display()))?.len();
                if len != old.size {
                    bail!(
                        "{} is {len} bytes but was created with {} (truncated or damaged).\n\
                         Run with --fresh to recreate it (its contents are lost).",
                        path.display(),
                        old.size
                    );
                }
                if (old.size, old.label_size) != (g.size, label_size) {
                    bail!(
                        "{} was created with --nvdimm-size {} --label-size {}, not {} / {}.\n\
                         Pass those sizes to keep its contents, or --fresh to recreate it.",
                        path.display(),
                        human(old.size),
                        human(old.label_size),
                        human(g.size),
                        human(label_size)
                    );
                }
                if kind.labelled() {
                    check_label_area(&path, label_size)?;
                }
                false
            }
        };
        plan.push((path, create));
    }
    let mut images = Vec::new();
    for (path, create) in plan {
        if create {
            let f = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            // Sparse: only what the guest writes takes disk space.
            f.set_len(g.size).with_context(|| format!("sizing {}", path.display()))?;
            if kind.labelled() {
                // Blank: the guest makes the namespace, and its labels, on
                // the first boot.
                let lsa = label_area_of(&path);
                let f = fs::File::create(&lsa).with_context(|| format!("creating {}", lsa.display()))?;
                f.set_len(label_size).with_context(|| format!("sizing {}", lsa.display()))?;
            }
            let sidecar = Sidecar { created_by: CREATED_BY.into(), size: g.size, label_size, kind };
            paths::write_atomic(&sidecar_of(&path), toml::to_string(&sidecar)?.as_bytes())?;
        }
        images.push(Image { path, geometry: g, kind });
    }
    Ok(images)
}

/// QEMU's arguments for device `i`, backed by `img`.
pub fn qemu_args(i: usize, img: &Image) -> Vec<String> {
    // share=on: guest stores reach the file, so they survive the VM.
    // align=2M: QEMU places each device at its backend's alignment, and the
    // kernel refuses fsdax on a namespace not starting on a 2 MiB boundary;
    // with labels a region is 128 KiB short of the size, so without this the
    // next DIMM would start misaligned.
    let backend = format!(
        "memory-backend-file,id=pmem{i},share=on,align=2M,mem-path={},size={}",
        img.path.display(),
        img.geometry.size
    );
    let device = match img.kind {
        PmemKind::Nfit | PmemKind::Devdax => {
            let mut d = format!("nvdimm,id=nvdimm{i},memdev=pmem{i}");
            if img.geometry.label_size > 0 {
                d.push_str(&format!(",label-size={}", img.geometry.label_size));
            }
            d
        }
        // A PCI device whose memory QEMU maps into the guest's device memory
        // area (hence -m's slots and maxmem, as for DIMMs); flushes go to the
        // host as requests, and QEMU answers each with an fsync of the file.
        PmemKind::Virtio => format!("virtio-pmem-pci,id=vpmem{i},memdev=pmem{i}"),
        PmemKind::Cxl => return cxl_args(i, img, backend),
    };
    vec!["-object".into(), backend, "-device".into(), device]
}

/// A CXL memory device: its own host bridge (pxb-cxl) and root port,
/// because QEMU 7.2 gives each CXL component one HDM decoder, so a bridge
/// routes one region. The serial number is what the kernel keys the
/// region's namespace labels on (with the device address), so it stays the
/// device's index for good.
fn cxl_args(i: usize, img: &Image, backend: String) -> Vec<String> {
    let lsa = img.label_area().unwrap_or_default();
    [
        ("-object", backend),
        (
            "-object",
            format!("memory-backend-file,id=lsa{i},share=on,mem-path={},size={}", lsa.display(), img.label_area_size()),
        ),
        ("-device", format!("pxb-cxl,bus_nr={},bus=pcie.0,id=cxl.{i}", 12 + 16 * i)),
        ("-device", format!("cxl-rp,port=0,bus=cxl.{i},id=cxlrp{i},chassis={},slot=0", i + 1)),
        ("-device", format!("cxl-type3,bus=cxlrp{i},memdev=pmem{i},lsa=lsa{i},id=cxlmem{i},sn={}", i + 1)),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

/// The machine options the devices need beside their own: one CXL fixed
/// memory window per CXL device, routed to its host bridge (the ACPI CEDT
/// QEMU builds from them). QEMU takes the windows as one list, in one `-M`.
pub fn machine_options(images: &[Image]) -> Vec<String> {
    let windows: Vec<String> = images
        .iter()
        .enumerate()
        .filter(|(_, img)| img.kind == PmemKind::Cxl)
        .map(|(i, img)| {
            let size = img.geometry.size.next_multiple_of(CXL_GRANULE);
            format!("cxl-fmw.{i}.targets.0=cxl.{i},cxl-fmw.{i}.size={size}")
        })
        .collect();
    if windows.is_empty() {
        Vec::new()
    } else {
        vec!["-M".into(), windows.join(",")]
    }
}

/// Refuses a kept device whose label storage area is missing or not the
/// size it was made with: its namespace lives there.
fn check_label_area(image: &Path, size: u64) -> Result<()> {
    let lsa = label_area_of(image);
    match fs::metadata(&lsa) {
        Ok(m) if m.len() == size => Ok(()),
        Ok(m) => bail!(
            "{} is {} bytes, not the {size} {} was made with (truncated or damaged): the device's \
             namespace labels live there.\nRun with --fresh to recreate the device (its contents are lost).",
            lsa.display(),
            m.len(),
            image.display()
        ),
        Err(e) => bail!(
            "{}: {e}: the label storage area of {} is gone, and its namespace with it.\n\
             Run with --fresh to recreate the device (its contents are lost).",
            lsa.display(),
            image.display()
        ),
    }
}

/// Whether each device's label storage area holds no namespace label, by
/// device index; empty for kinds without one. The guest makes a namespace
/// on such an area and reports one that holds labels yet gives none.
pub fn blank_label_areas(images: &[Image]) -> Result<Vec<bool>> {
    images
        .iter()
        .filter_map(|img| img.label_area())
        .map(|lsa| {
            let bytes = fs::read(&lsa).with_context(|| format!("reading {}", lsa.display()))?;
            Ok(holds_no_label(&bytes))
        })
        .collect()
}

/// The signature of a libnvdimm namespace index block, and where in the
/// block the offset of the label slots is (`struct nd_namespace_index`).
const NSINDEX_SIG: &[u8; 16] = b"NAMESPACE_INDEX\0";
const NSINDEX_LABELOFF: usize = 48;

/// True when a label storage area has never held a namespace label: all
/// zeroes, or index blocks whose label slots are all zeroes. The kernel
/// writes the index blocks before the first label, so a first labelling
/// cut short leaves the second form, which holds nothing yet. Anything
/// else (a label, or bytes that are not an index block) may describe data.
fn holds_no_label(area: &[u8]) -> bool {
    if area.iter().all(|b| *b == 0) {
        return true;
    }
    if area.len() < NSINDEX_LABELOFF + 8 || &area[..16] != NSINDEX_SIG {
        return false;
    }
    let mut off = [0u8; 8];
    off.copy_from_slice(&area[NSINDEX_LABELOFF..NSINDEX_LABELOFF + 8]);
    match usize::try_from(u64::from_le_bytes(off)) {
        Ok(labels) if labels >= NSINDEX_LABELOFF + 8 && labels <= area.len() => area[labels..].iter().all(|b| *b == 0),
        _ => false,
    }
}

fn read_sidecar(path: &Path) -> Result<Option<Sidecar>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let s: Sidecar = toml::from_str(&text)
        .with_context(|| format!("{} is damaged; delete it and its image, or fix it by hand", path.display()))?;
    if s.created_by != CREATED_BY {
        bail!("{} was not written by xtask", path.display());
    }
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Geometry = Geometry { size: 512 * MIB, label_size: 0 };

    #[test]
    fn sizes_are_checked() {
        validate(G).unwrap();
        validate(Geometry { size: 1 << 30, label_size: 128 << 10 }).unwrap();
        assert!(validate(Geometry { size: 256 * MIB, label_size: 0 }).is_err());
        assert!(validate(Geometry { size: 513 * MIB, label_size: 0 }).is_err());
        assert!(validate(Geometry { size: 1 << 30, label_size: 4096 }).is_err());
    }

    #[test]
    fn sizes_are_shown_as_given() {
        assert_eq!(human(1), "1 bytes");
        assert_eq!(human(0), "0");
        assert_eq!(human(128 << 10), "128K");
        assert_eq!(human(3 * MIB), "3M");
        assert_eq!(human(2 << 30), "2G");
        let err = validate(Geometry { size: 1, label_size: 0 }).unwrap_err().to_string();
        assert!(err.contains("--nvdimm-size 1 bytes"), "{err}");
    }

    #[test]
    fn create_reuse_and_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let imgs = prepare(ImageSet::new(dir.path(), "t"), PmemKind::Nfit, 2, G, false).unwrap();
        assert_eq!(imgs.len(), 2);
        assert_eq!(fs::metadata(&imgs[0].path).unwrap().len(), G.size);
        // Contents survive a reuse.
        fs::write(dir.path().join("marker"), "").unwrap();
        use std::os::unix::fs::FileExt;
        fs::OpenOptions::new().write(true).open(&imgs[1].path).unwrap().write_all_at(b"data", 4096).unwrap();
        prepare(ImageSet::new(dir.path(), "t"), PmemKind::Nfit, 2, G, false).unwrap();
        let mut buf = [0u8; 4];
        fs::File::open(&imgs[1].path).unwrap().read_exact_at(&mut buf, 4096).unwrap();
        assert_eq!(&buf, b"data");

        // Other geometry: refused, nothing changed.
        let err = prepare(
            ImageSet::new(dir.path(), "t"),
            PmemKind::Nfit,
            2,
            Geometry { size: 1 << 30, label_size: 0 },
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("--fresh"), "{err}");
        assert_eq!(fs::metadata(&imgs[0].path).unwrap().len(), G.size);

        // Truncated image: refused.
        fs::OpenOptions::new().write(true).open(&imgs[0].path).unwrap().set_len(4096).unwrap();
        let err = prepare(ImageSet::new(dir.path(), "t"), PmemKind::Nfit, 2, G, false).unwrap_err();
        assert!(err.to_string().contains("truncated or damaged"), "{err}");

        // --fresh recreates ours.
        prepare(ImageSet::new(dir.path(), "t"), PmemKind::Nfit, 2, G, true).unwrap();
        fs::File::open(&imgs[1].path).unwrap().read_exact_at(&mut buf, 4096).unwrap();
        assert_eq!(buf, [0; 4]);
    }

    #[test]
    fn kinds_keep_their_own_images() {
        let dir = tempfile::tempdir().unwrap();
        let set = ImageSet::new(dir.path(), "t");
        let nfit = prepare(set, PmemKind::Nfit, 1, G, false).unwrap();
        let virtio = prepare(set, PmemKind::Virtio, 1, G, false).unwrap();
        assert_ne!(nfit[0].path, virtio[0].path);
        assert_eq!(virtio[0].kind, PmemKind::Virtio);
        // A sidecar from before kinds existed reads as an NVDIMM's.
        let old = "created_by = \"dax-seal xtask\"\nsize = 536870912\nlabel_size = 0\n";
        fs::write(sidecar_of(&nfit[0].path), old).unwrap();
        prepare(set, PmemKind::Nfit, 1, G, false).unwrap();
        // An image moved under another kind's name is refused, for --fresh too.
        fs::copy(sidecar_of(&virtio[0].path), sidecar_of(&nfit[0].path)).unwrap();
        for fresh in [false, true] {
            let err = prepare(set, PmemKind::Nfit, 1, G, fresh).unwrap_err().to_string();
            assert!(err.contains("made for --pmem virtio, not nfit"), "{err}");
        }
    }

    #[test]
    fn only_nvdimms_have_labels_and_an_nfit_persistence_claim() {
        validate_kind(PmemKind::Nfit, Geometry { size: 1 << 30, label_size: 128 << 10 }, true).unwrap();
        validate_kind(PmemKind::Virtio, G, false).unwrap();
        let labels = validate_kind(PmemKind::Virtio, Geometry { size: 1 << 30, label_size: 128 << 10 }, false);
        assert!(labels.unwrap_err().to_string().contains("label area"));
        assert!(validate_kind(PmemKind::Virtio, G, true).unwrap_err().to_string().contains("no NFIT"));
    }

    #[test]
    fn each_kind_attaches_its_own_device() {
        let img = |kind| Image { path: "/i/x.img".into(), geometry: Geometry { size: 1 << 30, label_size: 0 }, kind };
        assert_eq!(
            qemu_args(1, &img(PmemKind::Nfit)),
            [
                "-object",
                "memory-backend-file,id=pmem1,share=on,align=2M,mem-path=/i/x.img,size=1073741824",
                "-device",
                "nvdimm,id=nvdimm1,memdev=pmem1"
            ]
        );
        assert_eq!(qemu_args(0, &img(PmemKind::Virtio))[3], "virtio-pmem-pci,id=vpmem0,memdev=pmem0");
    }

    #[test]
    fn a_cxl_device_keeps_its_label_area_beside_it_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let set = ImageSet::new(dir.path(), "t");
        let imgs = prepare(set, PmemKind::Cxl, 2, G, false).unwrap();
        let lsa = imgs[1].label_area().unwrap();
        assert_eq!(fs::metadata(&lsa).unwrap().len(), CXL_LABEL_AREA);
        assert_eq!(blank_label_areas(&imgs).unwrap(), [true, true]);
        // Labels written by a boot: no longer blank, and kept on reuse.
        use std::os::unix::fs::FileExt;
        fs::OpenOptions::new().write(true).open(&lsa).unwrap().write_all_at(b"NAMESPACE_INDEX", 0).unwrap();
        let again = prepare(set, PmemKind::Cxl, 2, G, false).unwrap();
        assert_eq!(blank_label_areas(&again).unwrap(), [true, false]);
        // Lost or cut short: refused, naming --fresh; --fresh makes it blank.
        fs::OpenOptions::new().write(true).open(&lsa).unwrap().set_len(4096).unwrap();
        let err = prepare(set, PmemKind::Cxl, 2, G, false).unwrap_err().to_string();
        assert!(err.contains("truncated or damaged") && err.contains("--fresh"), "{err}");
        fs::remove_file(&lsa).unwrap();
        let err = prepare(set, PmemKind::Cxl, 2, G, false).unwrap_err().to_string();
        assert!(err.contains("label storage area") && err.contains("--fresh"), "{err}");
        let fresh = prepare(set, PmemKind::Cxl, 2, G, true).unwrap();
        assert_eq!(blank_label_areas(&fresh).unwrap(), [true, true]);
        // NVDIMMs and virtio-pmem have no separate label file.
        let nfit = prepare(set, PmemKind::Nfit, 1, G, false).unwrap();
        assert!(nfit[0].label_area().is_none());
        assert!(blank_label_areas(&nfit).unwrap().is_empty());
    }

    #[test]
    fn a_kernel_without_a_kinds_drivers_is_refused_by_name() {
        let all: String = PmemKind::ALL.iter().flat_map(|k| kernel_options(*k)).map(|o| format!("{o}=y\n")).collect();
        for k in PmemKind::ALL {
            check_kernel(k, "patched-7.3", &all).unwrap();
        }
        let no_cxl = all.replace("CONFIG_CXL_PMEM=y", "# CONFIG_CXL_PMEM is not set");
        let err = check_kernel(PmemKind::Cxl, "patched-7.3", &no_cxl).unwrap_err().to_string();
        assert!(err.contains("lacks CONFIG_CXL_PMEM") && err.contains("patched-7.3"), "{err}");
        check_kernel(PmemKind::Nfit, "patched-7.3", &no_cxl).unwrap();
    }

    /// What check_kernel asks of a kernel, kernel-config/'s fragments give
    /// every variant, built in.
    #[test]
    fn the_config_fragments_give_every_kinds_drivers() {
        let dir = crate::paths::project_root().join("kernel-config");
        let mut fragments = String::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "config") {
                fragments += &std::fs::read_to_string(&path).unwrap();
            }
        }
        for k in PmemKind::ALL {
            check_kernel(k, "every variant", &fragments).unwrap();
        }
    }

    #[test]
    fn a_label_area_is_free_until_a_label_is_written() {
        let mut area = vec![0u8; 128 << 10];
        assert!(holds_no_label(&area));
        // Index blocks only: what a first labelling cut short leaves.
        for (at, other) in [(0usize, 256u64), (256, 0)] {
            area[at..at + 16].copy_from_slice(NSINDEX_SIG);
            area[at + 24..at + 32].copy_from_slice(&(at as u64).to_le_bytes());
            area[at + 40..at + 48].copy_from_slice(&other.to_le_bytes());
            area[at + NSINDEX_LABELOFF..at + NSINDEX_LABELOFF + 8].copy_from_slice(&512u64.to_le_bytes());
        }
        assert!(holds_no_label(&area));
        // A label in any slot.
        let mut labelled = area.clone();
        labelled[512 + 256 * 3] = 1;
        assert!(!holds_no_label(&labelled));
        // Damaged index blocks over zeroes elsewhere: not ours to judge.
        let mut damaged = area.clone();
        damaged[..8192].fill(0x5a);
        assert!(!holds_no_label(&damaged));
        let mut wild = area.clone();
        wild[NSINDEX_LABELOFF..NSINDEX_LABELOFF + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(!holds_no_label(&wild));
        assert!(!holds_no_label(b"NAMESPACE_INDEX\0"));
    }

    #[test]
    fn cxl_sizes_come_in_256m() {
        validate_kind(PmemKind::Cxl, G, false).unwrap();
        let odd = validate_kind(PmemKind::Cxl, Geometry { size: 514 * MIB, label_size: 0 }, false);
        assert!(odd.unwrap_err().to_string().contains("try 768M"));
        assert!(validate_kind(PmemKind::Cxl, G, true).unwrap_err().to_string().contains("no NFIT"));
        validate_kind(PmemKind::Cxl, Geometry { size: 1 << 30, label_size: 256 << 10 }, false).unwrap();
    }

    #[test]
    fn foreign_file_is_never_touched() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("nvdimm-t-0.img");
        fs::write(&foreign, "precious").unwrap();
        for fresh in [false, true] {
            let err = prepare(ImageSet::new(dir.path(), "t"), PmemKind::Nfit, 1, G, fresh).unwrap_err();
            assert!(err.to_string().contains("not created by xtask"), "{err}");
            assert_eq!(fs::read(&foreign).unwrap(), b"precious");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::testing::proptest_config())]

        /// Whatever a sidecar holds, reading it gives a sidecar or an error
        /// that names the file; a valid one reads back as written.
        #[test]
        fn any_sidecar_is_read_or_refused_by_name(text in prop_oneof![
            any::<String>(),
            "created_by = \"[a-z ]{0,20}\"\nsize = [0-9]{1,25}\nlabel_size = -?[0-9]{1,5}\n",
        ], size in any::<u64>(), label in any::<u64>()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.img.toml");
            std::fs::write(&path, &text).unwrap();
            if let Err(e) = read_sidecar(&path) {
                prop_assert!(format!("{e:#}").contains("x.img.toml"), "{e:#}");
            }
            let good = Sidecar { created_by: CREATED_BY.into(), size: size >> 1, label_size: label >> 1, kind: PmemKind::Virtio };
            std::fs::write(&path, toml::to_string(&good).unwrap()).unwrap();
            let back = read_sidecar(&path).unwrap().unwrap();
            prop_assert_eq!((back.size, back.label_size, back.kind), (good.size, good.label_size, good.kind));
        }
    }
}
