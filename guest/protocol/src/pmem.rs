//! Where the guest's persistent memory comes from: the topology a run asks
//! for. The host attaches devices of one kind (its QEMU arguments and image
//! files), the guest init sets them up and checks that the kernel found that
//! kind, and workloads ask it what the contract gives there.

use serde::{Deserialize, Serialize};

/// One kind of persistent-memory device.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum PmemKind {
    /// Emulated NVDIMMs that ACPI's NFIT describes: a synchronous
    /// persistence domain (CPU cache flushes reach it).
    #[default]
    Nfit,
    /// virtio-pmem: a paravirtual device whose persistence needs a flush
    /// request to the host. The kernel makes its regions asynchronous:
    /// MAP_SYNC is refused, and only fsync (which sends the flush) makes a
    /// store durable.
    Virtio,
    /// NVDIMMs as for `Nfit`, plus one more whose namespace is in
    /// device-dax mode (`/dev/daxN.0`, no filesystem): the reference the
    /// fault-latency and commit-rate figures are measured against.
    Devdax,
    /// CXL type-3 memory devices with persistent capacity, each behind its
    /// own host bridge and root port: the guest makes a CXL region per
    /// device (through sysfs, as the cxl tool does) and an fsdax namespace
    /// in it, recorded in the device's label storage area. A synchronous
    /// persistence domain, as for NVDIMMs.
    Cxl,
}

impl PmemKind {
    pub const ALL: [PmemKind; 4] = [PmemKind::Nfit, PmemKind::Virtio, PmemKind::Devdax, PmemKind::Cxl];

    pub fn name(self) -> &'static str {
        match self {
            PmemKind::Nfit => "nfit",
            PmemKind::Virtio => "virtio",
            PmemKind::Devdax => "devdax",
            PmemKind::Cxl => "cxl",
        }
    }

    pub fn parse(text: &str) -> Result<PmemKind, String> {
        PmemKind::ALL.into_iter().find(|k| k.name() == text.trim()).ok_or_else(|| {
            let names: Vec<&str> = PmemKind::ALL.iter().map(|k| k.name()).collect();
            format!("{text:?} is not a persistent-memory kind: give one of {}", names.join(", "))
        })
    }

    /// What a reader calls one device of the kind.
    pub fn device(self) -> &'static str {
        match self {
            PmemKind::Nfit | PmemKind::Devdax => "NVDIMM",
            PmemKind::Virtio => "virtio-pmem device",
            PmemKind::Cxl => "CXL memory device",
        }
    }

    /// The `provider` the kernel gives the libnvdimm bus of the kind's
    /// regions (`/sys/bus/nd/devices/ndbusN/provider`).
    pub fn provider(self) -> &'static str {
        match self {
            PmemKind::Nfit | PmemKind::Devdax => "ACPI.NFIT",
            PmemKind::Virtio => "virtio-pmem",
            PmemKind::Cxl => "CXL",
        }
    }

    /// Whether CPU cache write-backs reach the persistence domain, so that
    /// MAP_SYNC is offered and a flushed store is durable without a system
    /// call (the kernel's `dax_synchronous()`).
    pub fn synchronous(self) -> bool {
        match self {
            PmemKind::Nfit | PmemKind::Devdax | PmemKind::Cxl => true,
            PmemKind::Virtio => false,
        }
    }

    /// Whether ACPI's NFIT describes the devices (QEMU's NVDIMMs): they
    /// have label areas and a platform persistence claim.
    pub fn nfit(self) -> bool {
        matches!(self, PmemKind::Nfit | PmemKind::Devdax)
    }

    /// Whether a device's namespaces live in its label storage area (CXL
    /// devices must have labels): the guest makes the namespace once, on
    /// a blank area, and finds it there on later boots.
    pub fn labelled(self) -> bool {
        self == PmemKind::Cxl
    }

    /// Why a data disk of model `disk` (`disks::DataDisk::name`) cannot DMA
    /// into this kind's memory under the harness's QEMU, if it cannot. QEMU
    /// 7.2 emulates CXL memory access by access (it is not RAM), so a device
    /// DMA there goes through its one 4 KiB bounce buffer: its NVMe
    /// controller waits for the buffer and goes on, its virtio-blk fails a
    /// longer request and stops for good.
    pub fn disk_dma_refused(self, disk: &str) -> Option<&'static str> {
        match (self, disk) {
            (PmemKind::Cxl, "virtio") => Some(
                "QEMU 7.2's virtio-blk cannot DMA into emulated CXL memory: a request longer than its one \
                 4 KiB bounce buffer breaks the device for good (\"virtio: bogus descriptor or out of resources\")",
            ),
            _ => None,
        }
    }

    /// Devices attached for `filesystems` DAX filesystems: one more for
    /// the device-dax reference.
    pub fn devices(self, filesystems: u32) -> u32 {
        match self {
            PmemKind::Devdax => filesystems + 1,
            PmemKind::Nfit | PmemKind::Virtio | PmemKind::Cxl => filesystems,
        }
    }

    /// Whether device `index` of `devices` is the device-dax reference.
    pub fn is_device_dax(self, index: usize, devices: usize) -> bool {
        self == PmemKind::Devdax && index + 1 == devices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_say_what_to_give() {
        for k in PmemKind::ALL {
            assert_eq!(PmemKind::parse(k.name()), Ok(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
        }
        let err = PmemKind::parse("cxl-ish").unwrap_err();
        assert!(err.contains("nfit, virtio, devdax, cxl"), "{err}");
    }

    #[test]
    fn the_device_dax_reference_is_one_more_device_at_the_end() {
        assert_eq!(PmemKind::Devdax.devices(2), 3);
        assert_eq!(PmemKind::Nfit.devices(2), 2);
        assert!(PmemKind::Devdax.is_device_dax(2, 3));
        assert!(!PmemKind::Devdax.is_device_dax(1, 3));
        assert!(!PmemKind::Nfit.is_device_dax(1, 2));
    }
}
