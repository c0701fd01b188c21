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
}

impl PmemKind {
    pub const ALL: [PmemKind; 2] = [PmemKind::Nfit, PmemKind::Virtio];

    pub fn name(self) -> &'static str {
        match self {
            PmemKind::Nfit => "nfit",
            PmemKind::Virtio => "virtio",
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
            PmemKind::Nfit => "NVDIMM",
            PmemKind::Virtio => "virtio-pmem device",
        }
    }

    /// The `provider` the kernel gives the libnvdimm bus of the kind's
    /// regions (`/sys/bus/nd/devices/ndbusN/provider`).
    pub fn provider(self) -> &'static str {
        match self {
            PmemKind::Nfit => "ACPI.NFIT",
            PmemKind::Virtio => "virtio-pmem",
        }
    }

    /// Whether CPU cache write-backs reach the persistence domain, so that
    /// MAP_SYNC is offered and a flushed store is durable without a system
    /// call (the kernel's `dax_synchronous()`).
    pub fn synchronous(self) -> bool {
        match self {
            PmemKind::Nfit => true,
            PmemKind::Virtio => false,
        }
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
        assert!(err.contains("nfit, virtio"), "{err}");
    }
}
