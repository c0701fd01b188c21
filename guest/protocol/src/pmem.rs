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
}

impl PmemKind {
    pub const ALL: [PmemKind; 3] = [PmemKind::Nfit, PmemKind::Virtio, PmemKind::Devdax];

    pub fn name(self) -> &'static str {
        match self {
            PmemKind::Nfit => "nfit",
            PmemKind::Virtio => "virtio",
            PmemKind::Devdax => "devdax",
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
        }
    }

    /// The `provider` the kernel gives the libnvdimm bus of the kind's
    /// regions (`/sys/bus/nd/devices/ndbusN/provider`).
    pub fn provider(self) -> &'static str {
        match self {
            PmemKind::Nfit | PmemKind::Devdax => "ACPI.NFIT",
            PmemKind::Virtio => "virtio-pmem",
        }
    }

    /// Whether CPU cache write-backs reach the persistence domain, so that
    /// MAP_SYNC is offered and a flushed store is durable without a system
    /// call (the kernel's `dax_synchronous()`).
    pub fn synchronous(self) -> bool {
        match self {
            PmemKind::Nfit | PmemKind::Devdax => true,
            PmemKind::Virtio => false,
        }
    }

    /// Whether ACPI's NFIT describes the devices (QEMU's NVDIMMs): they
    /// have label areas and a platform persistence claim.
    pub fn nfit(self) -> bool {
        matches!(self, PmemKind::Nfit | PmemKind::Devdax)
    }

    /// Devices attached for `filesystems` DAX filesystems: one more for
    /// the device-dax reference.
    pub fn devices(self, filesystems: u32) -> u32 {
        match self {
            PmemKind::Devdax => filesystems + 1,
            PmemKind::Nfit | PmemKind::Virtio => filesystems,
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
        assert!(err.contains("nfit, virtio, devdax"), "{err}");
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
