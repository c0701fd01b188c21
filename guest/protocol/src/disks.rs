//! Data disks and host checks: the host writes each data disk with a seeded
//! pattern before a boot, a workload has devices move those bytes by DMA
//! into and out of a sealed file, and asks the host to look after power-off
//! (a [`HostCheck`]) whether the pattern is where it should be in the NVDIMM
//! and disk images. Both sides compute the pattern with [`fill_pattern`].

use serde::{Deserialize, Serialize};

/// How a data disk is attached to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskBus {
    /// virtio-blk over PCI.
    VirtioBlk,
    /// An emulated NVMe controller (QEMU `-device nvme`), one namespace.
    Nvme,
}

/// One data disk a workload may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataDisk {
    /// Short name: image `disk-<set>-<name>.img`, case names, host checks.
    pub name: &'static str,
    pub bus: DiskBus,
    /// The guest finds the disk by this serial number in sysfs.
    pub serial: &'static str,
    pub size: u64,
    /// Seed of the pattern the host writes over the whole disk.
    pub seed: u64,
}

/// The data disks, in the order QEMU attaches them.
pub const DATA_DISKS: &[DataDisk] = &[
    DataDisk { name: "virtio", bus: DiskBus::VirtioBlk, serial: "dax-seal-virtio", size: 128 << 20, seed: 0x7669_7274 },
    DataDisk { name: "nvme", bus: DiskBus::Nvme, serial: "dax-seal-nvme", size: 128 << 20, seed: 0x6e76_6d65 },
];

pub fn data_disk(name: &str) -> Option<&'static DataDisk> {
    DATA_DISKS.iter().find(|d| d.name == name)
}

/// Fills `buf` with the pattern of `seed` as it lies at byte `offset` of a
/// disk: every 8-byte word is a hash of the seed and the word's index, so
/// that any misplaced, stale or zeroed block shows. `offset` and the length
/// must be multiples of 8.
pub fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    assert!(offset.is_multiple_of(8) && buf.len().is_multiple_of(8), "pattern offset and length must be 8-aligned");
    for (i, word) in buf.chunks_exact_mut(8).enumerate() {
        word.copy_from_slice(&pattern_word(seed, offset / 8 + i as u64).to_le_bytes());
    }
}

/// The first byte of `buf` that differs from the pattern of `seed` at
/// `offset`, as an offset into `buf`.
pub fn first_pattern_mismatch(seed: u64, offset: u64, buf: &[u8]) -> Option<usize> {
    assert!(offset.is_multiple_of(8), "pattern offset must be 8-aligned");
    buf.chunks(8).enumerate().find_map(|(i, got)| {
        let want = pattern_word(seed, offset / 8 + i as u64).to_le_bytes();
        got.iter().zip(want).position(|(g, w)| *g != w).map(|p| i * 8 + p)
    })
}

/// splitmix64's increment: the golden ratio in 64 bits.
pub const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's output function: a bijective mix of all 64 bits, the hash
/// behind the disk patterns, the flush records and the crash moments.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// splitmix64 of seed + index.
fn pattern_word(seed: u64, index: u64) -> u64 {
    mix64(seed.wrapping_add(index.wrapping_mul(GOLDEN)))
}

/// Printed as a KTAP diagnostic, followed by a [`HostCheck`] in JSON: the
/// host runs the check after the boot and adds it to the workload's cases.
pub const HOST_CHECK_PREFIX: &str = "dax-seal host-check ";

/// A guest's request that the host read one of the boot's images after
/// power-off and find a pattern there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCheck {
    /// The case name the host reports it under, prefixed with `host:`.
    pub name: String,
    pub image: HostImage,
    /// What should be there, range by range.
    pub ranges: Vec<PatternRange>,
}

/// Which image of the boot a host check reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostImage {
    /// The backing file of NVDIMM `i`; offsets are from the start of the
    /// DIMM (the guest adds the namespace's data offset).
    Nvdimm(u32),
    /// A data disk, by [`DataDisk::name`].
    Disk(String),
}

/// `len` bytes at `image_offset` hold the pattern of `seed` as it lies at
/// `pattern_offset` of its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternRange {
    pub image_offset: u64,
    pub len: u64,
    pub seed: u64,
    pub pattern_offset: u64,
}

impl HostCheck {
    /// The diagnostic line that carries the check.
    pub fn to_diagnostic(&self) -> String {
        format!("{HOST_CHECK_PREFIX}{}", serde_json::to_string(self).unwrap_or_default())
    }

    /// The check in a diagnostic line, if the line carries one.
    pub fn from_diagnostic(line: &str) -> Option<Result<HostCheck, String>> {
        let json = line.strip_prefix(HOST_CHECK_PREFIX)?;
        Some(serde_json::from_str(json).map_err(|e| format!("malformed host check {json:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_positional_and_mismatches_are_found() {
        let mut whole = vec![0u8; 4096];
        fill_pattern(7, 0, &mut whole);
        let mut tail = vec![0u8; 1024];
        fill_pattern(7, 3072, &mut tail);
        assert_eq!(&whole[3072..], &tail[..]);
        assert_eq!(first_pattern_mismatch(7, 0, &whole), None);
        assert_eq!(first_pattern_mismatch(8, 0, &whole), Some(0));
        whole[1234] ^= 1;
        assert_eq!(first_pattern_mismatch(7, 0, &whole), Some(1234));
        assert_eq!(first_pattern_mismatch(7, 3072, &tail), None);
        assert!(first_pattern_mismatch(7, 8, &tail).is_some(), "a shifted block must not match");
    }

    #[test]
    fn host_checks_round_trip_through_a_diagnostic() {
        let c = HostCheck {
            name: "virtio DMA landed in the sealed file's blocks".into(),
            image: HostImage::Nvdimm(0),
            ranges: vec![PatternRange { image_offset: 1 << 21, len: 4096, seed: 1, pattern_offset: 0 }],
        };
        let line = c.to_diagnostic();
        assert_eq!(HostCheck::from_diagnostic(&line), Some(Ok(c)));
        assert_eq!(HostCheck::from_diagnostic("errno 22"), None);
        assert!(matches!(HostCheck::from_diagnostic("dax-seal host-check {"), Some(Err(_))));
        let disk = r#"dax-seal host-check {"name":"n","image":{"disk":"nvme"},"ranges":[]}"#;
        assert_eq!(HostCheck::from_diagnostic(disk).unwrap().unwrap().image, HostImage::Disk("nvme".into()));
    }
}
