//! An image set: the files one guest's devices live in, named once here.
//! In a directory, set `S` is `nvdimm-S-<i>.img` for NVDIMMs and
//! `virtio-pmem-S-<i>.img` for virtio-pmem devices, `devdax-nvdimm-S-<i>.img` for
//! NVDIMMs with a device-dax reference, `cxl-S-<i>.img` for CXL memory
//! devices (with their label storage area `<image>.lsa`) (each with its sidecar
//! `<image>.toml`, which says xtask made it and for which kind), `disk-S-<name>.img`
//! for the data disks, and `nvdimm-S.lock`, which a boot holds so that one
//! guest at a time uses the set. A kernel variant boots on the set of its
//! own name unless a scenario hands one kernel's images to another.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::paths;
use crate::vm::pmem::PmemKind;

#[derive(Debug, Clone, Copy)]
pub struct ImageSet<'a> {
    pub dir: &'a Path,
    pub name: &'a str,
}

impl<'a> ImageSet<'a> {
    pub fn new(dir: &'a Path, name: &'a str) -> ImageSet<'a> {
        ImageSet { dir, name }
    }

    /// The backing file of persistent-memory device `i` of `kind`.
    pub fn pmem(&self, kind: PmemKind, i: u32) -> PathBuf {
        self.dir.join(format!("{}-{}-{i}.img", crate::vm::pmem::image_prefix(kind), self.name))
    }

    /// Device `i`'s backing file, its label storage area if the kind has
    /// one in a file of its own (CXL), and its sidecar, in the order to
    /// remove them (a sidecar without its image is harmless; the reverse is
    /// an image xtask would refuse as foreign).
    pub fn pmem_files(&self, kind: PmemKind, i: u32) -> Vec<PathBuf> {
        let image = self.pmem(kind, i);
        let sidecar = sidecar_of(&image);
        let lsa = kind.labelled().then(|| label_area_of(&image));
        std::iter::once(image).chain(lsa).chain([sidecar]).collect()
    }

    /// The image of data disk `name`.
    pub fn disk(&self, name: &str) -> PathBuf {
        self.dir.join(format!("disk-{}-{name}.img", self.name))
    }

    /// Deletes the set's first `count` images of `kind` (each before its
    /// sidecar) and its data disk images, as far as they exist: a set made
    /// for one boot and not kept.
    pub fn remove(&self, kind: PmemKind, count: u32) {
        let images = (0..count).flat_map(|i| self.pmem_files(kind, i));
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
            &format!("the image set {} in {}", self.name, self.dir.display()),
        )
    }
}

/// The label storage area of a CXL device's image `<image>.lsa`: the
/// device's own metadata (namespace labels), kept beside its capacity.
pub fn label_area_of(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(".lsa");
    PathBuf::from(s)
}

/// The sidecar of a persistent-memory image: what xtask created it with.
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
        assert_eq!(set.pmem(PmemKind::Nfit, 1), Path::new("/i/nvdimm-patched-1.img"));
        assert_eq!(set.pmem(PmemKind::Virtio, 0), Path::new("/i/virtio-pmem-patched-0.img"));
        assert_eq!(set.pmem(PmemKind::Devdax, 2), Path::new("/i/devdax-nvdimm-patched-2.img"));
        assert_eq!(
            set.pmem_files(PmemKind::Nfit, 0),
            [set.pmem(PmemKind::Nfit, 0), PathBuf::from("/i/nvdimm-patched-0.img.toml")]
        );
        assert_eq!(
            set.pmem_files(PmemKind::Cxl, 1),
            ["/i/cxl-patched-1.img", "/i/cxl-patched-1.img.lsa", "/i/cxl-patched-1.img.toml"].map(PathBuf::from)
        );
        assert_eq!(set.disk("nvme"), Path::new("/i/disk-patched-nvme.img"));
    }
}
