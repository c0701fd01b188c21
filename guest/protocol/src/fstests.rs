//! fstests in the guest (`cargo xtask fstests`): the host attaches a Debian
//! root filesystem image holding a built fstests checkout as a virtio-blk
//! disk, and each section workload (`fstests-dax`, `fstests-nondax`) runs
//! the selected tests on the two NVDIMMs inside that root, one `check` per
//! test, and reports each as a case: pass, fail with fstests' reason, or skip
//! with the reason fstests gave for not running it.

use serde::{Deserialize, Serialize};

use crate::DaxMode;

/// The guest finds the root image by this virtio-blk serial number.
pub const ROOT_SERIAL: &str = "dax-seal-fstests";
/// Where the guest mounts the root image.
pub const ROOT_MOUNT: &str = "/fstests";
/// Where the image holds the built fstests checkout.
pub const FSTESTS_DIR: &str = "/opt/xfstests";

/// One fstests configuration section: the same two NVDIMMs (TEST_DEV on
/// pmem0, SCRATCH_DEV on pmem1), mounted with its `dax=` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub name: &'static str,
    /// The workload that runs it.
    pub workload: &'static str,
    pub dax: DaxMode,
    /// Groups that run in this section when the user names none.
    pub default_groups: &'static [&'static str],
    /// Groups that cannot pass in this section and never run there: the
    /// kernel refuses swapon on DAX files, so swap runs without DAX.
    pub refused_groups: &'static [&'static str],
    /// Why those groups cannot pass here.
    pub refusal: &'static str,
}

pub const SECTIONS: &[Section] = &[
    Section {
        name: "dax",
        workload: "fstests-dax",
        dax: DaxMode::Always,
        default_groups: &["dax"],
        refused_groups: &["swap"],
        refusal: "the kernel refuses swapon on DAX files",
    },
    Section {
        name: "nondax",
        workload: "fstests-nondax",
        dax: DaxMode::Never,
        default_groups: &["swap"],
        refused_groups: &["dax"],
        refusal: "the dax group needs DAX mounts",
    },
];

pub fn section(name: &str) -> Option<&'static Section> {
    SECTIONS.iter().find(|s| s.name == name)
}

pub fn section_of_workload(workload: &str) -> Option<&'static Section> {
    SECTIONS.iter().find(|s| s.workload == workload)
}

/// What one section runs: `check -g GROUP... TEST...`, less the excluded
/// tests.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub groups: Vec<String>,
    pub tests: Vec<String>,
    /// Tests (`generic/470`) never run, as fstests' `-E` file lists them.
    pub exclude: Vec<String>,
}

/// A group name as fstests spells them: lower-case letters, digits, `_`, `-`.
pub fn check_group(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not an fstests group name (like dax, swap, clone, quick)"))
    }
}

/// A test name as fstests spells them: `DIR/NUMBER`, e.g. `generic/470`.
pub fn check_test(name: &str) -> Result<(), String> {
    let ok = name.split_once('/').is_some_and(|(dir, number)| {
        !dir.is_empty()
            && dir.len() <= 32
            && dir.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && !number.is_empty()
            && number.len() <= 8
            && number.chars().all(|c| c.is_ascii_digit())
    });
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not an fstests test name: give DIR/NUMBER, e.g. generic/470"))
    }
}

/// mkfs.xfs options of every fstests filesystem: the features the seal's
/// workloads run with (reflink, rmapbt, which xfs/550 to 552 need to map a
/// poisoned DAX page back to its files, and exchange-range, which the
/// tests of XFS_IOC_EXCHANGE_RANGE need; the guest's mkfs.xfs, xfsprogs
/// 6.13, sets it only when asked).
pub const MKFS_OPTIONS: &str = "-m reflink=1,rmapbt=1 -i exchange=1";

/// The `local.config` the guest writes into the fstests checkout: one
/// self-contained section per [`SECTIONS`] entry (fstests reads only the
/// sections it runs, so none relies on another).
pub fn local_config(test_dev: &str, scratch_dev: &str) -> String {
    let mut text = String::from("# Written by dax-seal's fstests workload for this boot.\n");
    for s in SECTIONS {
        text.push_str(&format!(
            "\n[{name}]\nFSTYP=xfs\nTEST_DEV={test_dev}\nTEST_DIR=/mnt/test\nSCRATCH_DEV={scratch_dev}\n\
             SCRATCH_MNT=/mnt/scratch\nMKFS_OPTIONS=\"{MKFS_OPTIONS}\"\nMOUNT_OPTIONS=\"-o dax={dax}\"\n\
             TEST_FS_MOUNT_OPTS=\"-o dax={dax}\"\n",
            name = s.name,
            dax = s.dax.name()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["dax", "swap", "clone", "auto", "quick", "fiemap", "log-writes", "punch_hole"] {
            assert!(check_group(good).is_ok(), "{good}");
        }
        for bad in ["", "Dax", "dax swap", "-g", "a;b", "x/y"] {
            assert!(check_group(bad).is_err(), "{bad}");
        }
        for good in ["generic/470", "xfs/550", "shared/001"] {
            assert!(check_test(good).is_ok(), "{good}");
        }
        for bad in ["generic", "generic/", "/470", "generic/47a", "../470", "generic/470/1", "generic 470"] {
            assert!(check_test(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_section_has_its_own_dax_mode_and_shares_the_devices() {
        let text = local_config("/dev/pmem0", "/dev/pmem1");
        assert!(text.starts_with("# Written"));
        assert_eq!(text.matches("TEST_DEV=/dev/pmem0\n").count(), SECTIONS.len());
        assert_eq!(text.matches("SCRATCH_DEV=/dev/pmem1\n").count(), SECTIONS.len());
        assert!(text.contains("[dax]\nFSTYP=xfs\n"));
        assert_eq!(text.matches("MKFS_OPTIONS=\"-m reflink=1,rmapbt=1 -i exchange=1\"\n").count(), SECTIONS.len());
        assert!(text.contains("MOUNT_OPTIONS=\"-o dax=always\"\nTEST_FS_MOUNT_OPTS=\"-o dax=always\"\n\n[nondax]"));
        assert!(text.ends_with("TEST_FS_MOUNT_OPTS=\"-o dax=never\"\n"));
        for s in SECTIONS {
            assert!(s.default_groups.iter().all(|g| !s.refused_groups.contains(g)));
        }
    }
}
