//! Data disks and host checks. Before a boot whose workloads need data
//! disks, the host writes each one with its seeded pattern; after the boot,
//! it runs the host checks the workloads asked for (a [`HostCheck`]
//! diagnostic): it reads the NVDIMM and disk images the guest left and
//! finds the pattern where a device's DMA should have put it.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dax_seal_protocol::disks::{self, DataDisk, DiskBus, HostCheck, HostImage};
use dax_seal_protocol::ktap::{Case, Group, Verdict};

use crate::paths;
use crate::vm::images::ImageSet;
use crate::vm::pmem::Image;

/// A data disk and its image for one boot.
#[derive(Debug, Clone)]
pub struct Disk {
    pub info: &'static DataDisk,
    pub path: PathBuf,
}

/// Writes the set's image of each disk, pattern and all, fresh for every
/// boot: the pattern is the boot's input.
pub fn prepare(set: ImageSet, infos: &[&'static DataDisk]) -> Result<Vec<Disk>> {
    infos
        .iter()
        .map(|&info| {
            let path = set.disk(info.name);
            write_image(&path, info).with_context(|| format!("writing data disk image {}", path.display()))?;
            Ok(Disk { info, path })
        })
        .collect()
}

fn write_image(path: &Path, info: &DataDisk) -> Result<()> {
    const CHUNK: usize = 1 << 20;
    let dir = path.parent().context("image path has no parent")?;
    paths::ensure_dir(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut out = BufWriter::new(tmp);
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0;
    while offset < info.size {
        let n = CHUNK.min((info.size - offset) as usize);
        disks::fill_pattern(info.seed, offset, &mut buf[..n]);
        out.write_all(&buf[..n])?;
        offset += n as u64;
    }
    let tmp = out.into_inner().map_err(|e| e.into_error())?;
    tmp.persist(path)?;
    Ok(())
}

/// QEMU arguments attaching data disk `i`.
pub fn qemu_args(i: usize, disk: &Disk) -> Vec<String> {
    let drive = format!("file={},format=raw,if=none,id=data{i}", disk.path.display());
    let device = match disk.info.bus {
        DiskBus::VirtioBlk => format!("virtio-blk-pci,drive=data{i},serial={}", disk.info.serial),
        DiskBus::Nvme => format!("nvme,drive=data{i},serial={}", disk.info.serial),
    };
    vec!["-drive".into(), drive, "-device".into(), device]
}

/// One host check, done: which workload asked for it and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub workload: String,
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

/// Runs every host check the workloads in `ktap` asked for, against the
/// boot's images. A malformed request or a missing image is a failed check.
pub fn run_checks(ktap: &Group, pmem: &[Image], data: &[Disk]) -> Vec<Checked> {
    let mut done = Vec::new();
    for workload in &ktap.cases {
        let Some(sub) = &workload.subtests else { continue };
        for line in requests(sub) {
            let Some(request) = HostCheck::from_diagnostic(line) else { continue };
            let (name, r) = match request {
                Ok(check) => (check.name.clone(), check_one(&check, pmem, data)),
                Err(e) => ("(malformed request)".to_string(), Err(e)),
            };
            let (verdict, detail) = match r {
                Ok(detail) => (Verdict::Pass, detail),
                Err(detail) => (Verdict::Fail, detail),
            };
            done.push(Checked { workload: workload.name.clone(), name: format!("host: {name}"), verdict, detail });
        }
    }
    done
}

/// The diagnostic lines of a workload's cases and its group, in order.
fn requests(group: &Group) -> impl Iterator<Item = &String> {
    group.cases.iter().flat_map(|c: &Case| c.diagnostics.iter()).chain(group.diagnostics.iter())
}

fn check_one(check: &HostCheck, pmem: &[Image], data: &[Disk]) -> Result<String, String> {
    let path = match &check.image {
        HostImage::Nvdimm(i) => pmem
            .get(*i as usize)
            .map(|img| img.path.clone())
            .ok_or_else(|| format!("the boot had no persistent-memory device {i}"))?,
        HostImage::Disk(name) => data
            .iter()
            .find(|d| d.info.name == name)
            .map(|d| d.path.clone())
            .ok_or_else(|| format!("the boot had no data disk {name:?}"))?,
    };
    if check.ranges.is_empty() {
        return Err("the request names no range".into());
    }
    const CHUNK: u64 = 1 << 20;
    let mut file = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let size = file.metadata().map_err(|e| format!("stat {}: {e}", path.display()))?.len();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut total = 0;
    for r in &check.ranges {
        if r.image_offset % 8 != 0 || r.pattern_offset % 8 != 0 || r.len % 8 != 0 {
            return Err(format!("range {r:?} is not 8-byte aligned"));
        }
        if r.image_offset.checked_add(r.len).is_none_or(|end| end > size) {
            return Err(format!("range {r:?} lies beyond the end of {} ({size} bytes)", path.display()));
        }
        let mut done = 0;
        while done < r.len {
            let n = CHUNK.min(r.len - done) as usize;
            file.seek(SeekFrom::Start(r.image_offset + done))
                .and_then(|_| file.read_exact(&mut buf[..n]))
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            if let Some(at) = disks::first_pattern_mismatch(r.seed, r.pattern_offset + done, &buf[..n]) {
                let off = r.image_offset + done + at as u64;
                return Err(format!(
                    "{}: byte {off:#x} is not the pattern (seed {:#x}, disk offset {:#x}): the data is not where \
                     the guest said the DMA put it",
                    path.display(),
                    r.seed,
                    r.pattern_offset + done + at as u64
                ));
            }
            done += n as u64;
        }
        total += r.len;
    }
    Ok(format!(
        "{total} bytes in {} range(s) of {} hold the pattern",
        check.ranges.len(),
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dax_seal_protocol::disks::PatternRange;
    use dax_seal_protocol::ktap::Parser;
    use std::time::Duration;

    fn group(lines: &[String]) -> Group {
        let mut p = Parser::new();
        for l in lines {
            p.feed(l, Duration::ZERO);
        }
        p.finish(Duration::ZERO).0
    }

    #[test]
    fn checks_find_the_pattern_and_name_the_first_wrong_byte() {
        let dir = tempfile::tempdir().unwrap();
        let info = &disks::DATA_DISKS[0];
        let small = DataDisk { size: 1 << 20, ..*info };
        let leaked: &'static DataDisk = Box::leak(Box::new(small));
        let data = prepare(ImageSet::new(dir.path(), "t"), &[leaked]).unwrap();
        // An "NVDIMM" whose bytes 8 KiB.. hold the disk's bytes 4 KiB..
        let mut nv = vec![0u8; 64 << 10];
        disks::fill_pattern(info.seed, 4096, &mut nv[8192..16384]);
        let nv_path = dir.path().join("nv.img");
        std::fs::write(&nv_path, &nv).unwrap();
        let nvdimms = [Image {
            path: nv_path,
            geometry: crate::vm::pmem::Geometry { size: 64 << 10, label_size: 0 },
            kind: crate::vm::pmem::PmemKind::Nfit,
        }];
        let ok = HostCheck {
            name: "landed".into(),
            image: HostImage::Nvdimm(0),
            ranges: vec![PatternRange { image_offset: 8192, len: 8192, seed: info.seed, pattern_offset: 4096 }],
        };
        let mut bad = ok.clone();
        bad.name = "shifted".into();
        bad.ranges[0].image_offset = 4096;
        let mut disk = ok.clone();
        disk.name = "disk".into();
        disk.image = HostImage::Disk("virtio".into());
        disk.ranges[0].image_offset = 4096;
        let mut gone = ok.clone();
        gone.image = HostImage::Disk("nvme".into());
        let lines: Vec<String> = [
            "KTAP version 1".to_string(),
            "1..1".into(),
            "    KTAP version 1".into(),
            "    1..1".into(),
            format!("    # {}", ok.to_diagnostic()),
            format!("    # {}", bad.to_diagnostic()),
            format!("    # {}", disk.to_diagnostic()),
            format!("    # {}", gone.to_diagnostic()),
            "    # dax-seal host-check {nope".into(),
            "    ok 1 case".into(),
            "ok 1 pinned-dma".into(),
        ]
        .into();
        let checked = run_checks(&group(&lines), &nvdimms, &data);
        let verdicts: Vec<(&str, Verdict)> = checked.iter().map(|c| (c.name.as_str(), c.verdict)).collect();
        assert_eq!(
            verdicts,
            [
                ("host: landed", Verdict::Pass),
                ("host: shifted", Verdict::Fail),
                ("host: disk", Verdict::Pass),
                ("host: landed", Verdict::Fail),
                ("host: (malformed request)", Verdict::Fail),
            ]
        );
        assert!(checked[1].detail.contains("byte 0x1000"), "{}", checked[1].detail);
        assert!(checked[3].detail.contains("no data disk \"nvme\""), "{}", checked[3].detail);
        assert!(checked.iter().all(|c| c.workload == "pinned-dma"));
    }

    #[test]
    fn disks_attach_by_bus_with_their_serial() {
        let d = Disk { info: &disks::DATA_DISKS[1], path: "/i/d.img".into() };
        assert_eq!(
            qemu_args(1, &d),
            ["-drive", "file=/i/d.img,format=raw,if=none,id=data1", "-device", "nvme,drive=data1,serial=dax-seal-nvme"]
        );
    }
}
