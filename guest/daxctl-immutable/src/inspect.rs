//! `status` and `check`: what the kernel says about a file, and whether a
//! directory's filesystem can seal at all.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use dax_seal_sys::calls::{statx, STATX_ATTR_DAX};
use dax_seal_sys::seal::{self, Extent, FIEMAP_EXTENT_DELALLOC, FIEMAP_EXTENT_SHARED, FIEMAP_EXTENT_UNWRITTEN};

/// What `status` reports for one file.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub file: String,
    /// `null` when the kernel cannot report the seal (no series).
    pub sealed: Option<bool>,
    /// The on-disk flag is set but the seal no longer holds: a kernel
    /// without the series changed the file's block map (statx stops
    /// reporting the seal, FSGETXATTR still reports the flag).
    pub seal_broken: bool,
    /// `null` when the kernel cannot report DAX.
    pub dax: Option<bool>,
    pub active_swapfile: bool,
    pub size: u64,
    pub allocated_bytes: u64,
    pub extents: usize,
    pub holes: bool,
    pub unwritten: bool,
    pub shared: bool,
    pub delalloc: bool,
    /// Processes that map the file or hold it open (this one excepted):
    /// where a long-term pin that keeps it sealed can come from. A pin
    /// that outlived its mapping and its file descriptor names nobody.
    pub holders: Vec<Holder>,
}

/// A process that maps a file or holds it open.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    pub maps: bool,
    pub open: bool,
}

pub fn status(path: &Path, file: &File) -> io::Result<Status> {
    let st = statx(file)?;
    let extents = seal::fiemap(file)?;
    let any = |flag| extents.iter().any(|e| e.flags & flag != 0);
    let sealed = st.attribute(seal::STATX_ATTR_IOMAP_IMMUTABLE);
    let flag_on_disk = seal::fsgetxattr(file).is_ok_and(|fa| fa.xflags & seal::FS_XFLAG_IOMAP_IMMUTABLE != 0);
    Ok(Status {
        file: path.display().to_string(),
        sealed,
        seal_broken: flag_on_disk && sealed == Some(false),
        dax: st.attribute(STATX_ATTR_DAX),
        active_swapfile: is_active_swapfile(file)?,
        size: st.size,
        allocated_bytes: st.blocks * 512,
        extents: extents.len(),
        holes: has_holes(&extents, st.size),
        unwritten: any(FIEMAP_EXTENT_UNWRITTEN),
        shared: any(FIEMAP_EXTENT_SHARED),
        delalloc: any(FIEMAP_EXTENT_DELALLOC),
        holders: holders(file)?,
    })
}

/// Every other process that maps `file` (by device and inode in
/// /proc/PID/maps) or has it open (/proc/PID/fd). Processes that end or
/// hide their entries while we look are left out.
fn holders(file: &File) -> io::Result<Vec<Holder>> {
    let me = file.metadata()?;
    let (major, minor) = (libc::major(me.dev()), libc::minor(me.dev()));
    let own = std::process::id();
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Some(pid) = entry.ok().and_then(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())) else {
            continue;
        };
        if pid == own {
            continue;
        }
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let maps = fs::read_to_string(proc.join("maps")).is_ok_and(|m| maps_file(&m, major, minor, me.ino()));
        let open = fs::read_dir(proc.join("fd")).is_ok_and(|fds| {
            fds.filter_map(Result::ok)
                .filter_map(|fd| fs::metadata(fd.path()).ok())
                .any(|m| m.dev() == me.dev() && m.ino() == me.ino())
        });
        if maps || open {
            let command = fs::read_to_string(proc.join("comm")).map(|c| c.trim().to_string()).unwrap_or_default();
            out.push(Holder { pid, command, maps, open });
        }
    }
    out.sort_by_key(|h| h.pid);
    Ok(out)
}

/// Whether a /proc/PID/maps text has a mapping of the inode `ino` on the
/// device `major:minor` (its fourth column, in hex, and its fifth).
pub fn maps_file(maps: &str, major: u32, minor: u32, ino: u64) -> bool {
    maps.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(3);
        let (Some(dev), Some(inode)) = (fields.next(), fields.next()) else { return false };
        let Some((maj, min)) = dev.split_once(':') else { return false };
        u32::from_str_radix(maj, 16) == Ok(major)
            && u32::from_str_radix(min, 16) == Ok(minor)
            && inode.parse::<u64>() == Ok(ino)
    })
}

impl Status {
    /// Two lines, the seal and its neighbours, then the layout; for a
    /// sealed file a third, who maps it or has it open.
    pub fn text(&self) -> String {
        let yes_no = |v: Option<bool>, yes: &str, no: &str, unknown: &str| match v {
            Some(true) => yes.to_string(),
            Some(false) => no.to_string(),
            None => unknown.to_string(),
        };
        let present = |v: bool, what: &str| if v { what.to_string() } else { format!("no {what}") };
        format!(
            "{}: {}, {}, {}\n  size {} ({} bytes), allocated {}, {} extent{}; {}, {}, {}{}\n",
            self.file,
            if self.seal_broken {
                "seal broken (a kernel without the seal changed its block map; unseal, then seal again)".to_string()
            } else {
                yes_no(self.sealed, "sealed", "not sealed", "seal unknown (this kernel cannot report it)")
            },
            yes_no(self.dax, "DAX", "not DAX", "DAX unknown"),
            if self.active_swapfile { "an active swapfile" } else { "not an active swapfile" },
            crate::size::human(self.size),
            self.size,
            crate::size::human(self.allocated_bytes),
            self.extents,
            if self.extents == 1 { "" } else { "s" },
            present(self.holes, "holes"),
            present(self.unwritten, "unwritten extents"),
            present(self.shared, "shared extents"),
            if self.delalloc { ", delayed allocations" } else { "" },
        ) + &self.holders_line()
    }

    /// For a sealed file, who may hold the seal: the processes that map it
    /// or have it open.
    fn holders_line(&self) -> String {
        if self.sealed != Some(true) && !self.seal_broken {
            return String::new();
        }
        if self.holders.is_empty() {
            return "  no process maps it or has it open (a pin left after munmap and close names nobody: if UNSEAL \
                    says EBUSY, look for io_uring rings and RDMA regions)\n"
                .to_string();
        }
        let each: Vec<String> = self
            .holders
            .iter()
            .map(|h| {
                let how = match (h.maps, h.open) {
                    (true, true) => "maps it and has it open",
                    (true, false) => "maps it",
                    _ => "has it open",
                };
                format!("pid {} ({}) {how}", h.pid, h.command)
            })
            .collect();
        format!("  held by: {}\n", each.join("; "))
    }
}

/// Whether [0, size) has a range no extent covers.
pub fn has_holes(extents: &[Extent], size: u64) -> bool {
    let mut sorted: Vec<_> = extents.iter().collect();
    sorted.sort_by_key(|e| e.logical);
    let mut covered = 0u64;
    for e in sorted {
        if e.logical > covered && covered < size {
            return true;
        }
        covered = covered.max(e.logical.saturating_add(e.length));
    }
    covered < size
}

/// Whether `file` is one of the swapfiles in /proc/swaps (by device and
/// inode, so any path to it counts).
fn is_active_swapfile(file: &File) -> io::Result<bool> {
    let me = file.metadata()?;
    let swaps = match fs::read_to_string("/proc/swaps") {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(swap_paths(&swaps)
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .any(|m| m.dev() == me.dev() && m.ino() == me.ino()))
}

/// The file entries of /proc/swaps (the kernel escapes blanks as \040).
fn swap_paths(swaps: &str) -> Vec<PathBuf> {
    swaps
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<_> = line.split_whitespace().collect();
            (fields.len() >= 2 && fields[1] == "file").then(|| PathBuf::from(unescape(fields[0])))
        })
        .collect()
}

/// Undoes the octal escapes of /proc/swaps and mountinfo (`\040`).
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount a directory is on: (mount point, filesystem type, options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    pub fstype: String,
    pub options: String,
}

/// The mount of `dir` from /proc/self/mountinfo: the longest mount point
/// that is a prefix of its canonical path (the last one wins on a tie, as
/// later mounts hide earlier ones).
pub fn mount_of(dir: &Path, mountinfo: &str) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let l: Vec<_> = left.split_whitespace().collect();
        let r: Vec<_> = right.split_whitespace().collect();
        if l.len() < 6 || r.len() < 3 {
            continue;
        }
        let point = PathBuf::from(unescape(l[4]));
        if !dir.starts_with(&point) {
            continue;
        }
        if best.as_ref().is_some_and(|b| b.point.as_os_str().len() > point.as_os_str().len()) {
            continue;
        }
        best = Some(Mount { point, fstype: r[0].to_string(), options: format!("{},{}", l[5], r[2]) });
    }
    best
}

/// What `check` found.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub directory: String,
    pub kernel: String,
    pub filesystem: String,
    pub mount_point: String,
    /// Whether a probe file there is DAX; `null` when the kernel cannot
    /// say or no probe file could be made.
    pub dax: Option<bool>,
    /// Whether statx can report the seal on this kernel and filesystem.
    pub statx_reports_seal: bool,
    pub supported: bool,
    /// Why not, or how it was found out.
    pub reason: String,
    /// The persistence domain, as a MAP_SYNC mapping of the probe file
    /// shows it; in JSON with what makes a write durable there
    /// (`durability`).
    #[serde(flatten)]
    pub persistence: Persistence,
    /// Who provides the device under the filesystem, when it is a libnvdimm
    /// one (`ACPI.NFIT`, `virtio-pmem`, `CXL`): its bus's provider in sysfs.
    pub provider: Option<String>,
}

/// Where a store to a file becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// MAP_SYNC is offered: CPU cache flushes reach the persistence domain.
    Synchronous,
    /// MAP_SYNC is refused on a DAX file: the device needs a flush request,
    /// as virtio-pmem does.
    Asynchronous,
    /// The file is not DAX.
    PageCache,
    /// No probe file could be mapped.
    Unknown,
}

impl Persistence {
    pub fn name(self) -> &'static str {
        match self {
            Persistence::Synchronous => "synchronous",
            Persistence::Asynchronous => "asynchronous",
            Persistence::PageCache => "page cache",
            Persistence::Unknown => "unknown",
        }
    }

    /// What makes a write to a sealed file durable there.
    pub fn durability(self) -> &'static str {
        match self {
            Persistence::Synchronous => {
                "stores through a MAP_SYNC mapping of a sealed file are durable once flushed and fenced; a device's \
             writes through a long-term pin are durable once the pin is released, or after an fsync while it lives"
            }
            Persistence::Asynchronous => {
                "only fsync (or msync) makes a write durable: it sends the device a flush; MAP_SYNC is refused and CPU \
             cache flushes are not enough, so a device's writes through a long-term pin are durable after the pin \
             is released and the file is fsynced, or after an fsync while the pin lives"
            }
            Persistence::PageCache => {
                "fsync makes writes durable; the file is not DAX, so it cannot be pinned long-term"
            }
            Persistence::Unknown => "unknown: no probe file could be mapped",
        }
    }
}

/// In JSON, `"persistence": NAME, "durability": TEXT`.
impl Serialize for Persistence {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("persistence", self.name())?;
        map.serialize_entry("durability", self.durability())?;
        map.end()
    }
}

impl Check {
    pub fn text(&self) -> String {
        format!(
            "directory:   {}\nkernel:      {}\nfilesystem:  {} (mounted on {}{})\ndax:         {}\nsealing:     {}\n\
             persistence: {}\ndurability:  {}\n",
            self.directory,
            self.kernel,
            self.filesystem,
            self.mount_point,
            self.provider.as_ref().map(|p| format!(", device from {p}")).unwrap_or_default(),
            match self.dax {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            },
            if self.supported {
                format!("supported ({})", self.reason)
            } else {
                format!("not supported: {}", self.reason)
            },
            self.persistence.name(),
            self.persistence.durability(),
        )
    }
}

pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

/// Seals and unseals a scratch file in `dir` to find out, then removes it.
pub fn check(dir: &Path) -> Check {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount = mount_of(dir, &mountinfo);
    let (filesystem, mount_point) = match &mount {
        Some(m) => (m.fstype.clone(), m.point.display().to_string()),
        None => ("unknown".to_string(), "unknown".to_string()),
    };
    let mut c = Check {
        directory: dir.display().to_string(),
        kernel: kernel_release(),
        filesystem,
        mount_point,
        dax: None,
        statx_reports_seal: false,
        supported: false,
        reason: String::new(),
        persistence: Persistence::Unknown,
        provider: None,
    };
    let probe = dir.join(format!(".daxctl-immutable-check.{}", std::process::id()));
    c.reason = match probe_seal(&probe, &mut c) {
        Ok(()) => {
            c.supported = true;
            "a probe file sealed and unsealed".into()
        }
        Err(why) => why,
    };
    let _ = fs::remove_file(&probe);
    c
}

/// The persistence domain under `file`: MAP_SYNC is offered only where CPU
/// cache flushes reach it (the kernel's dax_synchronous()).
fn persistence_of(file: &File, dax: Option<bool>) -> Persistence {
    match dax {
        Some(false) => return Persistence::PageCache,
        None => return Persistence::Unknown,
        Some(true) => {}
    }
    match dax_seal_sys::calls::Mapping::shared_sync(file, 4096) {
        Ok(_) => Persistence::Synchronous,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Persistence::Asynchronous,
        Err(_) => Persistence::Unknown,
    }
}

/// The provider of the libnvdimm bus under the block device `dev` (from
/// /sys/dev/block: the first ancestor directory with a `provider` file).
fn provider_of(dev: u64) -> Option<String> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let real = fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    real.ancestors().find_map(|d| fs::read_to_string(d.join("provider")).ok()).map(|p| p.trim().to_string())
}

fn probe_seal(probe: &Path, c: &mut Check) -> Result<(), String> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(probe)
        .map_err(|e| format!("cannot make a probe file {}: {e}", probe.display()))?;
    file.set_len(4096).map_err(|e| format!("cannot size the probe file: {e}"))?;
    if let Ok(st) = statx(&file) {
        c.dax = st.attribute(STATX_ATTR_DAX);
        c.statx_reports_seal = st.attributes_mask & seal::STATX_ATTR_IOMAP_IMMUTABLE != 0;
    }
    c.persistence = persistence_of(&file, c.dax);
    if let Ok(meta) = file.metadata() {
        c.provider = provider_of(meta.dev());
    }
    match seal::seal(&file) {
        Ok(()) => seal::unseal(&file).map_err(|e| format!("the probe file sealed but did not unseal: {e}")),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Err(if c.filesystem == "xfs" {
            "this kernel does not have the block-map seal series (SEAL gives EOPNOTSUPP on XFS)".into()
        } else {
            format!("{} does not implement block-map sealing (only XFS does)", c.filesystem)
        }),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            Err("cannot tell: sealing needs CAP_LINUX_IMMUTABLE, which this process lacks".into())
        }
        Err(e) => Err(format!("SEAL of a probe file failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(logical: u64, length: u64) -> Extent {
        Extent { logical, physical: logical + (1 << 30), length, flags: 0 }
    }

    #[test]
    fn check_states_the_guarantee_of_its_persistence_domain() {
        let c = |persistence: Persistence, provider: Option<&str>| Check {
            directory: "/mnt/pmem0".into(),
            kernel: "7.3".into(),
            filesystem: "xfs".into(),
            mount_point: "/mnt/pmem0".into(),
            dax: Some(true),
            statx_reports_seal: true,
            supported: true,
            reason: "a probe file sealed and unsealed".into(),
            persistence,
            provider: provider.map(str::to_string),
        };
        let check = c(Persistence::Asynchronous, Some("virtio-pmem"));
        let text = check.text();
        assert!(text.contains("(mounted on /mnt/pmem0, device from virtio-pmem)"), "{text}");
        assert!(text.contains("persistence: asynchronous\ndurability:  only fsync"), "{text}");
        let json = serde_json::to_value(&check).unwrap();
        assert_eq!(json["persistence"], "asynchronous");
        assert_eq!(json["durability"], Persistence::Asynchronous.durability());
        let text = c(Persistence::Synchronous, None).text();
        assert!(text.contains("(mounted on /mnt/pmem0)\n"), "{text}");
        assert!(text.contains("durable once the pin is released"), "{text}");
        assert!(Persistence::PageCache.durability().contains("not DAX"));
    }

    #[test]
    fn holes_are_gaps_below_eof() {
        assert!(!has_holes(&[], 0));
        assert!(has_holes(&[], 4096));
        assert!(!has_holes(&[e(0, 8192)], 8192));
        assert!(!has_holes(&[e(0, 8192)], 5000), "the last block covers EOF");
        assert!(has_holes(&[e(0, 4096), e(8192, 4096)], 12288));
        assert!(has_holes(&[e(4096, 4096)], 8192));
        assert!(has_holes(&[e(0, 4096)], 8192), "a hole at the end");
        assert!(!has_holes(&[e(4096, 4096), e(0, 4096)], 8192), "order does not matter");
        assert!(!has_holes(&[e(0, 4096), e(4096, 4096), e(16384, 4096)], 8192), "extents past EOF are not holes");
    }

    #[test]
    fn swaps_lists_files_with_escaped_blanks() {
        let swaps = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                     /mnt/pmem1/swap\\040file                     file\t\t65532\t\t0\t\t-2\n\
                     /dev/sda2                               partition\t1000\t\t0\t\t-3\n";
        assert_eq!(swap_paths(swaps), [PathBuf::from("/mnt/pmem1/swap file")]);
    }

    #[test]
    fn the_deepest_mount_wins() {
        let info = "22 1 0:21 / / rw,relatime - rootfs rootfs rw\n\
                    30 22 259:0 / /mnt/pmem0 rw,relatime - xfs /dev/pmem0 rw,dax=always\n\
                    31 22 0:40 / /mnt/pmem0/sub\\040dir rw - tmpfs tmpfs rw\n";
        let m = mount_of(Path::new("/mnt/pmem0/a"), info).unwrap();
        assert_eq!((m.point.as_path(), m.fstype.as_str()), (Path::new("/mnt/pmem0"), "xfs"));
        assert!(m.options.contains("dax=always"));
        assert_eq!(mount_of(Path::new("/mnt/pmem0/sub dir/x"), info).unwrap().fstype, "tmpfs");
        assert_eq!(mount_of(Path::new("/tmp"), info).unwrap().fstype, "rootfs");
        assert_eq!(mount_of(Path::new("/mnt/pmem01"), info).unwrap().fstype, "rootfs", "whole components only");
    }

    #[test]
    fn status_text_says_everything_and_who_holds_a_seal() {
        let s = Status {
            file: "/mnt/pmem0/f".into(),
            sealed: Some(true),
            seal_broken: false,
            dax: Some(true),
            active_swapfile: false,
            size: 1 << 20,
            allocated_bytes: 1 << 20,
            extents: 1,
            holes: false,
            unwritten: false,
            shared: false,
            delalloc: false,
            holders: vec![
                Holder { pid: 7, command: "rdma-app".into(), maps: true, open: false },
                Holder { pid: 9, command: "reader".into(), maps: false, open: true },
            ],
        };
        assert_eq!(
            s.text(),
            "/mnt/pmem0/f: sealed, DAX, not an active swapfile\n  size 1 MiB (1048576 bytes), allocated 1 MiB, \
             1 extent; no holes, no unwritten extents, no shared extents\n  held by: pid 7 (rdma-app) maps it; \
             pid 9 (reader) has it open\n"
        );
        let nobody = Status { holders: Vec::new(), ..s.clone() };
        assert!(nobody.text().contains("no process maps it or has it open"), "{}", nobody.text());
        let unsealed = Status { sealed: Some(false), ..s.clone() };
        assert!(!unsealed.text().contains("held by"), "only a seal has holders worth naming");
        let unknown = Status { sealed: None, holes: true, ..s.clone() };
        assert!(unknown.text().contains("seal unknown") && unknown.text().contains("; holes,"));
        let broken = Status { sealed: Some(false), seal_broken: true, ..s };
        assert!(broken.text().contains("seal broken") && broken.text().contains("unseal, then seal again"));
    }

    #[test]
    fn maps_file_matches_device_and_inode_only() {
        let maps = "7f0000000000-7f0000100000 rw-s 00000000 103:00 131 /mnt/pmem0/f\n\
                    7f0000200000-7f0000300000 r--p 00000000 00:00 0 \n\
                    7f0000400000-7f0000500000 r--s 00000000 103:01 131 /mnt/pmem1/g\n";
        assert!(maps_file(maps, 0x103, 0, 131));
        assert!(maps_file(maps, 0x103, 1, 131));
        assert!(!maps_file(maps, 0x103, 0, 132), "another inode");
        assert!(!maps_file(maps, 0x103, 2, 131), "another device");
        assert!(!maps_file("garbage\n\n1 2 3 zz:yy 131\n", 0x103, 0, 131));
    }
}
