//! An image set: the files one guest's devices live in, named once here.
//! In a directory, set `S` is `nvdimm-S-<i>.img` (each with its sidecar
//! `nvdimm-S-<i>.img.toml`, which says xtask made it), `disk-S-<name>.img`
//! for the data disks, and `nvdimm-S.lock`, which a boot holds so that one
//! guest at a time uses the set. A kernel variant boots on the set of its
//! own name unless a scenario hands one kernel's images to another.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::paths;

#[derive(Debug, Clone, Copy)]
pub struct ImageSet<'a> {
    pub dir: &'a Path,
    pub name: &'a str,
}

impl<'a> ImageSet<'a> {
    pub fn new(dir: &'a Path, name: &'a str) -> ImageSet<'a> {
        ImageSet { dir, name }
    }

    /// The backing file of NVDIMM `i`.
    pub fn nvdimm(&self, i: u32) -> PathBuf {
        self.dir.join(format!("nvdimm-{}-{i}.img", self.name))
    }

    /// NVDIMM `i`'s backing file and its sidecar, in the order to remove
    /// them (a sidecar without its image is harmless; the reverse is an
    /// image xtask would refuse as foreign).
    pub fn nvdimm_files(&self, i: u32) -> [PathBuf; 2] {
        let image = self.nvdimm(i);
        let sidecar = sidecar_of(&image);
        [image, sidecar]
    }

    /// The image of data disk `name`.
    pub fn disk(&self, name: &str) -> PathBuf {
        self.dir.join(format!("disk-{}-{name}.img", self.name))
    }

    /// Deletes the set's first `nvdimms` NVDIMM images (each before its
    /// sidecar) and its data disk images, as far as they exist: a set made
    /// for one boot and not kept.
    pub fn remove(&self, nvdimms: u32) {
        let images = (0..nvdimms).flat_map(|i| self.nvdimm_files(i));
        let disks = dax_seal_protocol::disks::DATA_DISKS.iter().map(|d| self.disk(d.name));
        for file in images.chain(disks) {
            let _ = std::fs::remove_file(file);
        }
    }

    /// Waits until no other guest uses the set (saying who does), then
    /// holds it until the lock is dropped.
    pub fn lock(&self) -> Result<paths::Lock> {
        paths::lock(
            &self.dir.join(format!("nvdimm-{}.lock", self.name)),
            &format!("the NVDIMM images {}/nvdimm-{}-*.img", self.dir.display(), self.name),
        )
    }
}

/// The sidecar of an NVDIMM image: what xtask created it with.
pub fn sidecar_of(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(".toml");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_set_names_its_files() {
        let set = ImageSet::new(Path::new("/i"), "patched");
        assert_eq!(set.nvdimm(1), Path::new("/i/nvdimm-patched-1.img"));
        assert_eq!(set.nvdimm_files(0), [set.nvdimm(0), PathBuf::from("/i/nvdimm-patched-0.img.toml")]);
        assert_eq!(set.disk("nvme"), Path::new("/i/disk-patched-nvme.img"));
    }
}
