//! `pinned-dma`: devices DMA into and out of a sealed file through
//! long-term pins, the way an RDMA adapter or a storage target would.
//!
//! The host attaches two data disks (virtio-blk and NVMe) written with a
//! seeded pattern (`dax_seal_protocol::disks`). A 64 MiB file on the DAX
//! mount is sealed, mapped and registered as one io_uring fixed buffer, and
//! each disk moves 64 MiB into the pinned pages with O_DIRECT READ_FIXED at
//! queue depths 1, 4 and 16, then writes them back with WRITE_FIXED to a
//! second region of the disk. The bytes are checked through read(2) of the
//! file and an O_DIRECT read of the disk; the disk's own counters show that
//! it moved them; the map does not move, and UNSEAL is refused until the
//! buffer is unregistered. Finally the file holds half of each disk's
//! pattern, and the workload asks the host (host checks) to find those bytes
//! in the NVDIMM backing image at the file's own blocks, and the written
//! region in each disk image, after power-off. Unregistering a 512 MiB
//! sealed buffer must let a task on the same CPU run while it releases the
//! pins.
//!
//! Controls on both kernels: an unsealed DAX mapping cannot be registered
//! (EOPNOTSUPP, 6.12's refusal), and a plain O_DIRECT read (a short-term
//! pin) into it works. On a kernel without the series the sealed cases skip
//! with SEAL's EOPNOTSUPP.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use dax_seal_protocol::disks::{self, DataDisk, HostCheck, HostImage, PatternRange, DATA_DISKS};
use dax_seal_protocol::figure::{self, Figure};
use dax_seal_protocol::MOUNT_PREFIX;

use crate::calls::{errno_text, mounted, Mapping};
use crate::cases::{Attempt, Cases};
use crate::fixture::{create_sparse, is_sealed, pin_counters, pins_settled, probe, release_beside_spinner};
use crate::ring::{FixedIo, Ring};
use crate::seal::{self, Extent};

mod rdma;

/// The sealed file, and the length of each disk region.
const FILE_SIZE: u64 = 64 << 20;
/// Reads come from the disk's first 64 MiB; writes go to the next 64 MiB.
const WRITE_REGION: u64 = 64 << 20;
/// One READ_FIXED / WRITE_FIXED.
const CHUNK: u64 = 1 << 20;
const DEPTHS: [usize; 3] = [1, 4, 16];
const PAGE: u64 = 4096;
/// The sealed file of the release cases: 131072 pages in one registration.
const LARGE: u64 = 512 << 20;
const SECTOR: u64 = 512;

type Check = Result<String, String>;

const LARGE_CASE: &str = "unregister-of-large-sealed-buffer-lets-others-run";

/// A data disk as the guest found it.
struct Dev {
    info: &'static DataDisk,
    /// /dev/<name>
    path: PathBuf,
    /// The name under /sys/block.
    name: String,
}

impl Dev {
    /// Sectors the disk has read and written (/sys/block/NAME/stat).
    fn sectors(&self) -> Result<(u64, u64), String> {
        let stat = format!("/sys/block/{}/stat", self.name);
        let text = fs::read_to_string(&stat).map_err(|e| format!("{stat}: {e}"))?;
        let f: Vec<u64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        match (f.get(2), f.get(6)) {
            (Some(&r), Some(&w)) => Ok((r, w)),
            _ => Err(format!("{stat}: {text:?} has no sector counts")),
        }
    }

    fn open(&self, write: bool) -> Result<File, String> {
        crate::fixture::open_direct(&self.path, write)
            .map_err(|e| format!("open {} O_DIRECT: {}", self.path.display(), errno_text(&e)))
    }
}

/// Finds the disk whose serial number is `info.serial` under /sys/block.
fn find(info: &'static DataDisk) -> Result<Dev, String> {
    let entries = fs::read_dir("/sys/block").map_err(|e| format!("/sys/block: {e}"))?;
    for entry in entries.flatten() {
        let dir = entry.path();
        let serial = ["serial", "device/serial"].iter().find_map(|f| fs::read_to_string(dir.join(f)).ok());
        if serial.is_some_and(|s| s.trim() == info.serial) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let sectors: u64 = fs::read_to_string(dir.join("size"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| format!("/sys/block/{name}/size is unreadable"))?;
            if sectors * SECTOR != info.size {
                return Err(format!(
                    "{} disk {name} has {} bytes, the host wrote {}",
                    info.name,
                    sectors * SECTOR,
                    info.size
                ));
            }
            return Ok(Dev { info, path: PathBuf::from("/dev").join(&name), name });
        }
    }
    Err(format!(
        "no block device with serial {:?}: the host did not attach the {} disk, or the kernel did not probe it \
         (is its driver in kernel-config/guest-io.config?)",
        info.serial, info.name
    ))
}

/// The first byte of `buf` that is not `seed`'s pattern at `offset`.
fn verify(what: &str, seed: u64, offset: u64, buf: &[u8]) -> Result<(), String> {
    match disks::first_pattern_mismatch(seed, offset, buf) {
        None => Ok(()),
        Some(at) => Err(format!("{what}: byte {:#x} is not the disk's pattern", offset + at as u64)),
    }
}

/// Reads `len` bytes of `file` from `offset` in 1 MiB steps and compares them
/// with `seed`'s pattern at `pattern_offset`.
fn verify_file(what: &str, file: &File, offset: u64, len: u64, seed: u64, pattern_offset: u64) -> Result<(), String> {
    let mut buf = vec![0u8; CHUNK as usize];
    let mut done = 0;
    while done < len {
        let n = CHUNK.min(len - done) as usize;
        file.read_exact_at(&mut buf[..n], offset + done).map_err(|e| format!("{what}: pread: {}", errno_text(&e)))?;
        verify(what, seed, pattern_offset + done, &buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

/// The chunked I/Os that move `len` bytes between `disk` at `disk_offset`
/// and the registered buffer at `addr`.
fn chunks(disk: &File, write: bool, disk_offset: u64, addr: *mut u8, len: u64) -> Vec<FixedIo<'_>> {
    (0..len / CHUNK)
        .map(|i| FixedIo {
            write,
            file: disk,
            offset: disk_offset + i * CHUNK,
            // SAFETY: i * CHUNK < len, inside the registered buffer.
            addr: unsafe { addr.add((i * CHUNK) as usize) },
            len: CHUNK as u32,
        })
        .collect()
}

/// Runs `ops` and insists every one moved its whole chunk.
fn run_all(ring: &Ring, ops: &[FixedIo], depth: usize, what: &str) -> Result<f64, String> {
    let t0 = Instant::now();
    let results = ring.run(ops, depth);
    let secs = t0.elapsed().as_secs_f64();
    for (op, r) in ops.iter().zip(results) {
        match r {
            Ok(n) if u64::from(n) == CHUNK => {}
            other => {
                return Err(format!(
                    "{what} at disk offset {:#x}, depth {depth}: {other:?}, expected {CHUNK}",
                    op.offset
                ))
            }
        }
    }
    Ok(secs)
}

/// The sealed, mapped, registered file every DMA case works on.
struct Sealed {
    path: PathBuf,
    file: File,
    mapping: Mapping,
    ring: Ring,
    map: Vec<Extent>,
    pins_before: u64,
}

impl Sealed {
    fn new(path: &Path) -> Result<(Sealed, String), String> {
        // Sparse: SEAL allocates and zeroes every block.
        let file = create_sparse(path, FILE_SIZE)?;
        seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
        let map = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
        let mut mapping = crate::fixture::shared_for_stores(&file, FILE_SIZE as usize)?.0;
        let (pins_before, _) = pin_counters()?;
        let ring = Ring::with_entries(DEPTHS[DEPTHS.len() - 1] as u32)
            .map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
        ring.register(mapping.as_mut_ptr(), FILE_SIZE as usize)
            .map_err(|e| format!("REGISTER_BUFFERS over the sealed DAX mapping: {}", errno_text(&e)))?;
        let (acquired, _) = pin_counters()?;
        let pinned = acquired.saturating_sub(pins_before);
        if pinned < FILE_SIZE / PAGE {
            return Err(format!("REGISTER_BUFFERS moved nr_foll_pin_acquired by {pinned}, not {}", FILE_SIZE / PAGE));
        }
        let note = format!("{} MiB sealed in {} extent(s), registered: {pinned} pins", FILE_SIZE >> 20, map.len());
        Ok((Sealed { path: path.to_path_buf(), file, mapping, ring, map, pins_before }, note))
    }

    fn addr(&mut self) -> *mut u8 {
        self.mapping.as_mut_ptr()
    }

    fn still_sealed(&self, after: &str) -> Result<(), String> {
        still_sealed(&self.path, &self.file, &self.map, after, "the buffer")
    }
}

/// The map of the file at `path` is still `map` and the file is sealed;
/// UNSEAL is refused while `holder` (a registered buffer or region) pins it.
fn still_sealed(path: &Path, file: &File, map: &[Extent], after: &str, holder: &str) -> Result<(), String> {
    let now = seal::fiemap(file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    if now != map {
        return Err(format!("after {after} the map moved: {map:?} -> {now:?}"));
    }
    if !is_sealed(path)? {
        return Err(format!("after {after} the file is no longer sealed"));
    }
    match seal::unseal(file) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        other => Err(format!("UNSEAL after {after} with {holder} registered: {other:?}, expected EBUSY")),
    }
}

/// One disk moves 64 MiB into the pinned pages at each depth, then writes
/// them back to its second region.
fn dma_through_pin(s: &mut Sealed, dev: &Dev) -> Result<(String, Vec<HostCheck>), String> {
    let seed = dev.info.seed;
    let reader = dev.open(false)?;
    let (read0, written0) = dev.sectors()?;
    let mut figures = Vec::new();
    let mut typed = Vec::new();
    let disk = dev.info.name;
    for depth in DEPTHS {
        // Each pass must put every byte there itself.
        s.mapping.as_mut_slice().fill(0);
        let ops = chunks(&reader, false, 0, s.addr(), FILE_SIZE);
        let secs = run_all(&s.ring, &ops, depth, "READ_FIXED")?;
        verify_file(&format!("the file after READ_FIXED at depth {depth}"), &s.file, 0, FILE_SIZE, seed, 0)?;
        let rate = (FILE_SIZE >> 20) as f64 / secs;
        figures.push(format!("qd{depth} {rate:.0} MiB/s"));
        typed.push(Figure::new(figure::read_fixed(disk, depth), rate, "MiB/s"));
    }
    s.still_sealed("READ_FIXED")?;
    let (read1, _) = dev.sectors()?;
    // The same reads into anonymous memory, for `cargo xtask bench`'s
    // sealed/anonymous ratio; the figure is reported, not judged.
    let (depth, rate) = (DEPTHS[DEPTHS.len() - 1], anonymous_read(&reader)?);
    figures.push(format!("anonymous qd{depth} {rate:.0} MiB/s"));
    typed.push(Figure::new(figure::read_fixed_anonymous(disk, depth), rate, "MiB/s"));

    let writer = dev.open(true)?;
    let depth = DEPTHS[DEPTHS.len() - 1];
    let ops = chunks(&writer, true, WRITE_REGION, s.addr(), FILE_SIZE);
    let secs = run_all(&s.ring, &ops, depth, "WRITE_FIXED")?;
    let rate = (FILE_SIZE >> 20) as f64 / secs;
    figures.push(format!("WRITE_FIXED qd{depth} {rate:.0} MiB/s"));
    typed.push(Figure::new(figure::write_fixed(disk, depth), rate, "MiB/s"));
    // Before reading the written region back, which the disk counts too.
    let (_, written1) = dev.sectors()?;
    let mut back = Mapping::anonymous(CHUNK as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    for i in 0..FILE_SIZE / CHUNK {
        reader
            .read_exact_at(back.as_mut_slice(), WRITE_REGION + i * CHUNK)
            .map_err(|e| format!("O_DIRECT read of the written region: {}", errno_text(&e)))?;
        verify("the disk's written region", seed, i * CHUNK, back.as_mut_slice())?;
    }
    s.still_sealed("WRITE_FIXED")?;

    let (read, written) = ((read1 - read0) * SECTOR, (written1 - written0) * SECTOR);
    if read < DEPTHS.len() as u64 * FILE_SIZE {
        return Err(format!("{} read only {read} bytes: the device did not move the data", dev.name));
    }
    if written < FILE_SIZE {
        return Err(format!("{} wrote only {written} bytes: the device did not move the data", dev.name));
    }
    let check = HostCheck {
        name: format!("{} WRITE_FIXED from the sealed file is in the disk image", dev.info.name),
        image: HostImage::Disk(dev.info.name.to_string()),
        ranges: vec![PatternRange { image_offset: WRITE_REGION, len: FILE_SIZE, seed, pattern_offset: 0 }],
    };
    Ok((
        format!(
            "{}: device read {} MiB into the pinned pages and wrote {} MiB from them; read(2) and O_DIRECT show \
             the pattern; map unchanged, UNSEAL EBUSY; {}\n{}",
            dev.path.display(),
            read >> 20,
            written >> 20,
            figures.join(", "),
            figure::lines(&typed)
        ),
        vec![check],
    ))
}

/// MiB/s of READ_FIXED of the disk's first 64 MiB into a registered
/// anonymous buffer at the deepest queue depth.
fn anonymous_read(disk: &File) -> Result<f64, String> {
    let mut anon = Mapping::anonymous(FILE_SIZE as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    let depth = DEPTHS[DEPTHS.len() - 1];
    let ring = Ring::with_entries(depth as u32).map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
    ring.register(anon.as_mut_ptr(), FILE_SIZE as usize)
        .map_err(|e| format!("REGISTER_BUFFERS over anonymous memory: {}", errno_text(&e)))?;
    let ops = chunks(disk, false, 0, anon.as_mut_ptr(), FILE_SIZE);
    let secs = run_all(&ring, &ops, depth, "READ_FIXED into anonymous memory")?;
    Ok((FILE_SIZE >> 20) as f64 / secs)
}

/// Where byte 0 of `/dev/pmemN` lies in NVDIMM N: the pfn device's data
/// start minus its region's start (both physical addresses in sysfs).
fn data_offset(pmem: &str) -> Result<u64, String> {
    let link = format!("/sys/block/{pmem}/device");
    let dev = fs::canonicalize(&link).map_err(|e| format!("{link}: {e}"))?;
    let read_hex = |dir: &Path| -> Result<u64, String> {
        let f = dir.join("resource");
        let t = fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        u64::from_str_radix(t.trim().trim_start_matches("0x"), 16).map_err(|e| format!("{}: {t:?}: {e}", f.display()))
    };
    let region = dev
        .ancestors()
        .find(|d| d.file_name().is_some_and(|n| n.to_string_lossy().starts_with("region")))
        .ok_or_else(|| format!("{} is not under an nd region", dev.display()))?;
    let (data, start) = (read_hex(&dev)?, read_hex(region)?);
    data.checked_sub(start).ok_or_else(|| format!("{pmem}'s data starts before its region"))
}

/// The pmem device under `mount`, its NVDIMM's index and where its byte 0
/// lies in the NVDIMM image.
fn pmem_of(mount: &Path) -> Result<(String, u32, u64), String> {
    let (device, _) = mounted(mount)?;
    let pmem = device.trim_start_matches("/dev/").to_string();
    let index: u32 = pmem
        .trim_start_matches("pmem")
        .parse()
        .map_err(|_| format!("{device} on {} is not a pmem device", mount.display()))?;
    let base = data_offset(&pmem)?;
    Ok((device, index, base))
}

/// Where the NVDIMM image must hold which pattern: the file of `len` bytes
/// with block map `map` on a namespace whose data starts at `base` holds
/// `seeds[i]`'s pattern in its i-th equal part.
fn nvdimm_ranges(map: &[Extent], base: u64, len: u64, seeds: &[u64]) -> Vec<PatternRange> {
    let part_len = len / seeds.len() as u64;
    let mut ranges = Vec::new();
    for e in map {
        // Split each extent where the file changes from one part to the next.
        let mut logical = e.logical;
        while logical < (e.logical + e.length).min(len) {
            let part = (logical / part_len) as usize;
            let end = ((part as u64 + 1) * part_len).min(e.logical + e.length);
            ranges.push(PatternRange {
                image_offset: base + e.physical + (logical - e.logical),
                len: end - logical,
                seed: seeds[part],
                pattern_offset: logical,
            });
            logical = end;
        }
    }
    ranges
}

/// The file's first half from the first disk, its second half from the
/// second; the host then finds both in the NVDIMM image at the file's
/// blocks. Afterwards the buffer is unregistered and UNSEAL gives 0.
fn lands_in_blocks(mut s: Sealed, devs: &[Dev], mount: &Path) -> Result<(String, Vec<HostCheck>), String> {
    let half = FILE_SIZE / devs.len() as u64;
    s.mapping.as_mut_slice().fill(0);
    let files: Vec<File> = devs.iter().map(|d| d.open(false)).collect::<Result<_, _>>()?;
    let mut ops = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let at = i as u64 * half;
        // SAFETY: at < FILE_SIZE, inside the registered buffer.
        ops.extend(chunks(f, false, at, unsafe { s.addr().add(at as usize) }, half));
    }
    run_all(&s.ring, &ops, DEPTHS[DEPTHS.len() - 1], "READ_FIXED")?;
    for (i, d) in devs.iter().enumerate() {
        let at = i as u64 * half;
        verify_file(&format!("the file's part from {}", d.info.name), &s.file, at, half, d.info.seed, at)?;
    }
    s.still_sealed("READ_FIXED from both disks")?;

    let (device, index, base) = pmem_of(mount)?;
    let seeds: Vec<u64> = devs.iter().map(|d| d.info.seed).collect();
    let ranges = nvdimm_ranges(&s.map, base, FILE_SIZE, &seeds);
    let check = HostCheck {
        name: "DMA from both disks is in the sealed file's blocks of the NVDIMM image".into(),
        image: HostImage::Nvdimm(index),
        ranges,
    };

    s.ring.unregister().map_err(|e| format!("UNREGISTER_BUFFERS: {}", errno_text(&e)))?;
    // UNSEAL also refuses while the file is mapped.
    drop(s.mapping);
    let (acquired, released) = pins_settled("UNREGISTER_BUFFERS")?;
    seal::unseal(&s.file).map_err(|e| format!("UNSEAL after unregistering: {}", errno_text(&e)))?;
    Ok((
        format!(
            "file's blocks at {device} offset(s) {} + data offset {base:#x}; after unregistering UNSEAL 0 \
             ({} pins acquired since the seal, nr_foll_pin_acquired {acquired} released {released})",
            s.map.iter().map(|e| format!("{:#x}", e.physical)).collect::<Vec<_>>().join(", "),
            acquired.saturating_sub(s.pins_before)
        ),
        vec![check],
    ))
}

/// 6.12 refuses a long-term pin of any fsdax mapping; a short-term pin
/// (O_DIRECT into the mapping) works. Both kernels.
fn controls(dir: &Path, dev: Option<&Dev>) -> (Check, Check) {
    let path = dir.join("unsealed");
    let setup = || -> Result<(File, Mapping), String> {
        let file = create_sparse(&path, CHUNK)?;
        let mapping = crate::fixture::shared_for_stores(&file, CHUNK as usize)?.0;
        Ok((file, mapping))
    };
    let r = setup().and_then(|(file, mut mapping)| {
        let ring = Ring::new().map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
        let long = match ring.register(mapping.as_mut_ptr(), CHUNK as usize) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                Ok("REGISTER_BUFFERS on an unsealed DAX mapping: EOPNOTSUPP".to_string())
            }
            other => Err(format!("REGISTER_BUFFERS on an unsealed DAX mapping: {other:?}, expected EOPNOTSUPP")),
        };
        let short = dev.ok_or_else(|| "no data disk to read from".to_string()).and_then(|d| {
            let disk = d.open(false)?;
            disk.read_exact_at(mapping.as_mut_slice(), 0)
                .map_err(|e| format!("O_DIRECT pread into the unsealed DAX mapping: {}", errno_text(&e)))?;
            verify_file("the unsealed file after O_DIRECT pread", &file, 0, CHUNK, d.info.seed, 0)?;
            Ok(format!("O_DIRECT pread of 1 MiB from {} into the unsealed DAX mapping: the pattern", d.path.display()))
        });
        Ok((long, short))
    });
    let _ = fs::remove_file(&path);
    match r {
        Ok(pair) => pair,
        Err(e) => (Err(e.clone()), Err(e)),
    }
}

/// Releasing a long-term pin of a sealed file's page writes the page back,
/// and a registration may cover hundreds of thousands of pages: seals a
/// `LARGE` file at `path`, maps it, pins it through `register` (which
/// gets the mapping's address and length), then `release`s it while a
/// task shares the CPU. That task must still run meanwhile
/// (`fixture::Release::judge`), and the release must have moved
/// `nr_foll_pin_released` by the file's pages. `call` names the release.
fn large_release_yields<H>(
    path: &Path,
    call: &str,
    register: impl FnOnce(*mut u8, usize) -> Result<H, String>,
    release: impl FnOnce(H) -> std::io::Result<()>,
) -> Result<String, String> {
    let file = create_sparse(path, LARGE)?;
    let r = (|| {
        seal::seal(&file).map_err(|e| format!("SEAL of {} MiB: {}", LARGE >> 20, errno_text(&e)))?;
        let extents = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?.len();
        let mut mapping = crate::fixture::shared_for_stores(&file, LARGE as usize)?.0;
        let held = register(mapping.as_mut_ptr(), LARGE as usize)?;
        let (_, released0) = pin_counters()?;
        let (released, timing) = release_beside_spinner(|| release(held))?;
        released.map_err(|e| format!("{call}: {}", errno_text(&e)))?;
        let (_, released) = pin_counters()?;
        let pages = LARGE / PAGE;
        let moved = released.saturating_sub(released0);
        if moved < pages {
            return Err(format!("{call} moved nr_foll_pin_released by {moved}, not the {pages} pages it held"));
        }
        // The mapping outlived the registration.
        drop(mapping);
        timing.judge(&format!("{call} of {} MiB sealed in {extents} extent(s) released {moved} pins", LARGE >> 20))
    })();
    let _ = seal::unseal(&file);
    drop(file);
    let _ = fs::remove_file(path);
    r
}

/// A 512 MiB sealed file registered as one io_uring buffer (131072 bvecs)
/// and unregistered.
fn large_unregister_yields(dir: &Path) -> Result<String, String> {
    let register = |addr, len| {
        let ring = Ring::new().map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
        ring.register(addr, len)
            .map_err(|e| format!("REGISTER_BUFFERS of {} MiB of the sealed file: {}", LARGE >> 20, errno_text(&e)))?;
        Ok(ring)
    };
    large_release_yields(&dir.join("large"), "UNREGISTER_BUFFERS", register, |ring| ring.unregister())
}

/// Removes what an earlier boot left, unsealing first (a sealed file
/// cannot be unlinked).
fn clear(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(f) = OpenOptions::new().write(true).open(e.path()) {
                let _ = seal::unseal(&f);
            }
        }
    }
    let _ = fs::remove_dir_all(dir);
}

pub fn run() -> ExitCode {
    let disk_cases: Vec<String> = DATA_DISKS.iter().map(|d| format!("{}-dma-through-the-pin", d.name)).collect();
    let mut t = Cases::new(6 + disk_cases.len() + rdma::CASES.len());
    let mount = PathBuf::from(format!("{MOUNT_PREFIX}0"));
    // Fixed name: the file stays until the next boot, so the host can look.
    let dir = mount.join("pinned-dma");
    clear(&dir);
    let devs: Vec<Result<Dev, String>> = DATA_DISKS.iter().map(find).collect();
    let found: Vec<&Dev> = devs.iter().filter_map(|d| d.as_ref().ok()).collect();
    let missing: Vec<&String> = devs.iter().filter_map(|d| d.as_ref().err()).collect();
    t.check(
        "data-disks-attached",
        if missing.is_empty() {
            Ok((
                (),
                found.iter().map(|d| format!("{} at {}", d.info.name, d.path.display())).collect::<Vec<_>>().join(", "),
            ))
        } else {
            Err(missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; "))
        },
    );
    if let Err(e) = fs::create_dir_all(&dir) {
        let why = format!("mkdir {}: {e}", dir.display());
        for name in
            ["unsealed-dax-register-refused", "odirect-read-into-unsealed-dax-mapping", "sealed-file-registered"]
                .into_iter()
                .chain(disk_cases.iter().map(String::as_str))
                .chain(["dma-lands-in-the-sealed-files-blocks", LARGE_CASE])
                .chain(rdma::CASES)
        {
            t.check::<()>(name, Err(why.clone()));
        }
        return t.exit();
    }
    let pmem = crate::fixture::pmem();
    let (long, short) = controls(&dir, found.iter().copied().find(|d| pmem.disk_dma_refused(d.info.name).is_none()));
    t.check("unsealed-dax-register-refused", long.map(|n| ((), n)));
    t.check("odirect-read-into-unsealed-dax-mapping", short.map(|n| ((), n)));

    let sealing = probe(&dir);
    disk_dma(&mut t, &dir, &mount, &disk_cases, devs, sealing.clone());
    t.outcome(
        LARGE_CASE,
        match &sealing {
            Ok(()) => Attempt::Done(large_unregister_yields(&dir)),
            Err(why) => Attempt::Skip(why.clone()),
        },
    );
    rdma::run(&mut t, &dir, pmem_of(&mount), sealing);
    t.exit()
}

/// The io_uring cases: the sealed file registered, each disk's DMA through
/// the pin, and both disks' bytes in the file's blocks.
fn disk_dma(
    t: &mut Cases,
    dir: &Path,
    mount: &Path,
    disk_cases: &[String],
    devs: Vec<Result<Dev, String>>,
    sealing: Result<(), String>,
) {
    let sealed = match sealing {
        Err(why) => {
            for name in std::iter::once("sealed-file-registered")
                .chain(disk_cases.iter().map(String::as_str))
                .chain(["dma-lands-in-the-sealed-files-blocks"])
            {
                t.outcome(name, Attempt::Skip(why.clone()));
            }
            return;
        }
        Ok(()) => t.check("sealed-file-registered", Sealed::new(&dir.join("sealed"))),
    };
    let Some(mut sealed) = sealed else {
        for name in disk_cases.iter().map(String::as_str).chain(["dma-lands-in-the-sealed-files-blocks"]) {
            t.blocked(name, "sealed-file-registered");
        }
        return;
    };
    let mut all = true;
    // A disk that cannot DMA into this kind of memory at all skips with the
    // reason, and the last case checks the other disks' bytes.
    let pmem = crate::fixture::pmem();
    let refused = |dev: &Result<Dev, String>| dev.as_ref().ok().and_then(|d| pmem.disk_dma_refused(d.info.name));
    for (name, dev) in disk_cases.iter().zip(&devs) {
        if let Some(why) = refused(dev) {
            t.outcome(name, Attempt::Skip(why.to_string()));
            continue;
        }
        let r = match dev {
            Ok(dev) => dma_through_pin(&mut sealed, dev),
            Err(e) => Err(e.clone()),
        };
        all &= report(t, name, r);
    }
    let usable = devs.iter().filter(|d| refused(d).is_none()).count();
    let r = if all && usable > 0 && devs.iter().all(Result::is_ok) {
        let devs: Vec<Dev> = devs.into_iter().filter(|d| refused(d).is_none()).filter_map(Result::ok).collect();
        lands_in_blocks(sealed, &devs, mount)
    } else {
        let _ = sealed.ring.unregister();
        drop(sealed.mapping);
        let _ = seal::unseal(&sealed.file);
        Err(if usable == 0 { "no disk can DMA into this memory" } else { "not attempted: a disk's DMA case failed" }
            .into())
    };
    report(t, "dma-lands-in-the-sealed-files-blocks", r);
}

/// Reports a case and, before it, the host checks it asks for.
fn report(t: &mut Cases, name: &str, r: Result<(String, Vec<HostCheck>), String>) -> bool {
    match r {
        Ok((detail, checks)) => {
            for c in &checks {
                t.note(&c.to_diagnostic());
            }
            t.check(name, Ok(((), detail))).is_some()
        }
        Err(e) => {
            t.check::<()>(name, Err(e));
            false
        }
    }
}
