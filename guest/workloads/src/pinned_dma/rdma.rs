//! pinned-dma's RDMA half: Soft-RoCE (rdma_rxe) registers a sealed DAX
//! mapping as a memory region and moves bytes into it with RDMA WRITE and
//! out of it with RDMA READ between two local queue pairs, as a remote
//! peer would. rxe is a software device: its "DMA" is the driver copying
//! into the pages the region pinned, the same pages an adapter would
//! write.
//!
//! Cases: the rxe link comes up over dummy0; an unsealed DAX mapping
//! cannot be registered (6.12's EOPNOTSUPP, both kernels); a sealed one
//! can; WRITE lands in the file (read(2), the port's packet counters, and
//! the host's look at the NVDIMM image), READ returns it; the map stays,
//! UNSEAL is EBUSY while the region exists and 0 after `ibv_dereg_mr`; a
//! reader (the file open read-only, a read-only region) may only register
//! a sealed file with CAP_LINUX_IMMUTABLE, since its pin holds the seal;
//! deregistering a large sealed region lets a task on the same CPU run.

use std::fs::{self, File};
use std::path::Path;
use std::time::Instant;

use dax_seal_protocol::disks::{fill_pattern, HostCheck, HostImage};
use dax_seal_protocol::figure::{self, Figure};
use dax_seal_rdma::{Mr, Verbs};

use super::{nvdimm_ranges, verify, verify_file, LARGE, PAGE};
use crate::calls::{errno_text, result_text, Mapping};
use crate::cases::{Attempt, Cases};
use crate::fixture::{create_sparse, median, pin_counters, soft_roce, ADDRESS, IBDEV, NETDEV};
use crate::seal::{self, Extent};

/// The sealed file the region covers.
const SIZE: u64 = 16 << 20;
/// One work request.
const CHUNK: u32 = 1 << 20;
/// The pattern RDMA WRITE puts in the file (not a data disk's seed).
pub const SEED: u64 = 0x4d4a_5eed;
/// Registrations timed for the bench figure, after a first that faults.
const REG_ROUNDS: usize = 5;

pub const CASES: [&str; 7] = [
    "rxe-link-up",
    "unsealed-dax-reg-mr-refused",
    "sealed-dax-reg-mr",
    "rdma-write-and-read-through-the-sealed-region",
    "unseal-after-dereg-mr",
    "read-only-reg-mr-of-sealed-file-needs-write-access",
    "dereg-of-large-sealed-region-lets-others-run",
];

/// Packets the rxe port sent and received (its hw_counters).
fn packets() -> Result<(u64, u64), String> {
    let dir = format!("/sys/class/infiniband/{IBDEV}/ports/1/hw_counters");
    let read = |name: &str| -> Result<u64, String> {
        let f = format!("{dir}/{name}");
        fs::read_to_string(&f).map_err(|e| format!("{f}: {e}"))?.trim().parse().map_err(|e| format!("{f}: {e}"))
    };
    Ok((read("sent_pkts")?, read("rcvd_pkts")?))
}

/// Median wall time in ms of registering and deregistering `len` bytes at
/// `addr`, after one untimed registration that faults the pages in.
fn registration_ms(v: &Verbs, addr: *mut u8, len: usize) -> Result<f64, String> {
    let mut times = Vec::new();
    for round in 0..=REG_ROUNDS {
        let t0 = Instant::now();
        // SAFETY: the caller's mapping outlives this loop.
        let mr = unsafe { v.register(addr, len) }.map_err(|e| format!("ibv_reg_mr: {}", errno_text(&e)))?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        mr.deregister().map_err(|e| format!("ibv_dereg_mr: {}", errno_text(&e)))?;
        if round > 0 {
            times.push(ms);
        }
    }
    Ok(median(times))
}

/// WRITE `src` (the pattern) into `dst` in 1 MiB requests, or READ `dst`
/// into `src`; MiB/s.
fn transfer(v: &Verbs, write: bool, src: &Mr, dst: &Mr) -> Result<f64, String> {
    let t0 = Instant::now();
    for i in 0..(SIZE / u64::from(CHUNK)) as usize {
        let at = i * CHUNK as usize;
        v.rdma(write, src, at, dst, at, CHUNK)?;
    }
    Ok((SIZE >> 20) as f64 / t0.elapsed().as_secs_f64())
}

/// The sealed file and its mapping, and the region over it.
struct SealedRegion {
    path: std::path::PathBuf,
    file: File,
    mapping: Mapping,
    map: Vec<Extent>,
}

impl SealedRegion {
    fn still_sealed(&self, after: &str) -> Result<(), String> {
        super::still_sealed(&self.path, &self.file, &self.map, after, "the region")
    }
}

/// An unsealed DAX mapping cannot be registered: 6.12 refuses long-term
/// pins of fsdax pages (EOPNOTSUPP). First the same registration of
/// anonymous memory must work, so the refusal is the DAX mapping's and not
/// rxe's (which also answers EOPNOTSUPP to access flags it lacks).
fn unsealed_refused(v: &Verbs, dir: &Path) -> Result<String, String> {
    let mut anon = Mapping::anonymous(CHUNK as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    // SAFETY: the mapping outlives the region.
    unsafe { v.register(anon.as_mut_ptr(), CHUNK as usize) }
        .map_err(|e| format!("ibv_reg_mr of anonymous memory: {}", errno_text(&e)))?
        .deregister()
        .map_err(|e| format!("ibv_dereg_mr: {}", errno_text(&e)))?;
    let path = dir.join("rdma-unsealed");
    let file = create_sparse(&path, u64::from(CHUNK))?;
    let mut mapping = crate::fixture::shared_for_stores(&file, CHUNK as usize)?.0;
    // SAFETY: the mapping outlives the region.
    let r = unsafe { v.register(mapping.as_mut_ptr(), CHUNK as usize) };
    let verdict = match r {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            Ok("ibv_reg_mr of anonymous memory: 0; of an unsealed DAX mapping: EOPNOTSUPP".to_string())
        }
        Err(e) => Err(format!("ibv_reg_mr of an unsealed DAX mapping: {}, expected EOPNOTSUPP", errno_text(&e))),
        Ok(_) => Err("ibv_reg_mr of an unsealed DAX mapping succeeded; 6.12 refuses it (EOPNOTSUPP)".into()),
    };
    drop(mapping);
    let _ = fs::remove_file(&path);
    verdict
}

/// Runs the RDMA cases; `sealed_ok` says whether this kernel seals
/// (`Err` holds the skip reason).
pub fn run(t: &mut Cases, dir: &Path, mount_pmem: Result<(String, u32, u64), String>, sealed_ok: Result<(), String>) {
    let verbs = soft_roce();
    let Some(v) = t.check(
        CASES[0],
        verbs.map(|v| {
            (v, format!("{IBDEV} over {NETDEV} ({ADDRESS}/24), two RC QPs connected through the port's RoCE v2 GID"))
        }),
    ) else {
        for name in &CASES[1..] {
            t.blocked(name, CASES[0]);
        }
        return;
    };
    t.check(CASES[1], unsealed_refused(&v, dir).map(|n| ((), n)));
    if let Err(why) = sealed_ok {
        for name in &CASES[2..] {
            t.outcome(name, Attempt::Skip(why.clone()));
        }
        return;
    }
    sealed_cases(t, &v, dir, mount_pmem);
    t.check(CASES[5], reader_needs_write_access(&v, dir).map(|n| ((), n)));
    t.check(CASES[6], large_release_yields(&v, dir).map(|n| ((), n)));
}

/// The cases of a sealed region, CASES[2] to CASES[4].
fn sealed_cases(t: &mut Cases, v: &Verbs, dir: &Path, mount_pmem: Result<(String, u32, u64), String>) {
    let mut anon = match Mapping::anonymous(SIZE as usize) {
        Ok(m) => m,
        Err(e) => {
            let why = format!("mmap of the anonymous peer buffer: {}", errno_text(&e));
            for name in &CASES[2..5] {
                t.check::<()>(name, Err(why.clone()));
            }
            return;
        }
    };
    fill_pattern(SEED, 0, anon.as_mut_slice());

    let Some(mut s) = t.check(CASES[2], sealed_region(v, dir, &mut anon)) else {
        for name in &CASES[3..5] {
            t.blocked(name, CASES[2]);
        }
        return;
    };

    let pins0 = match pin_counters() {
        Ok((acquired, _)) => acquired,
        Err(e) => {
            t.check::<()>(CASES[3], Err(e));
            t.blocked(CASES[4], CASES[3]);
            return;
        }
    };
    // SAFETY: both mappings outlive their regions (dropped below, in order).
    let regions = unsafe {
        v.register(s.mapping.as_mut_ptr(), SIZE as usize)
            .map_err(|e| format!("ibv_reg_mr of the sealed DAX mapping: {}", errno_text(&e)))
            .and_then(|sealed| {
                v.register(anon.as_mut_ptr(), SIZE as usize)
                    .map(|a| (sealed, a))
                    .map_err(|e| format!("ibv_reg_mr of anonymous memory: {}", errno_text(&e)))
            })
    };
    let (sealed_mr, anon_mr) = match regions {
        Ok(pair) => pair,
        Err(e) => {
            t.check::<()>(CASES[3], Err(e));
            t.blocked(CASES[4], CASES[3]);
            return;
        }
    };
    if t.check(CASES[3], traffic(v, &s, &mut anon, (&sealed_mr, &anon_mr), pins0).map(|n| ((), n))).is_none() {
        t.blocked(CASES[4], CASES[3]);
        return;
    }
    super::report(t, CASES[4], release(s, sealed_mr, anon_mr, mount_pmem));
}

/// A long-term pin holds the seal (UNSEAL EBUSY, unlink EPERM) for as long
/// as it lives, so only someone who may write the file or change its
/// immutable flags may take one. A reader, the file open read-only and
/// mapped read-only, registering a read-only region: EPERM without
/// CAP_LINUX_IMMUTABLE; with it the region holds (UNSEAL EBUSY until
/// `ibv_dereg_mr`). The file opened for writing, the same read-only region
/// needs no capability.
fn reader_needs_write_access(v: &Verbs, dir: &Path) -> Result<String, String> {
    let path = dir.join("rdma-reader");
    let writer = create_sparse(&path, u64::from(CHUNK))?;
    seal::seal(&writer).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let reader = File::open(&path).map_err(|e| format!("open {} read-only: {e}", path.display()))?;
    let r = (|| {
        let read_only = Mapping::shared_read_only(&reader, CHUNK as usize)
            .map_err(|e| format!("mmap read-only: {}", errno_text(&e)))?;
        let without_cap = {
            let _lowered = seal::WithoutCapLinuxImmutable::new()
                .map_err(|e| format!("capset without CAP_LINUX_IMMUTABLE: {}", errno_text(&e)))?;
            // SAFETY: the mapping outlives the region.
            unsafe { v.register_read_only(read_only.as_ptr(), CHUNK as usize) }.map(drop)
        };
        match without_cap {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            other => {
                let held = result_text(&seal::unseal(&writer));
                return Err(format!(
                    "a reader without CAP_LINUX_IMMUTABLE registering a read-only region of the sealed file: {}, \
                     expected EPERM (UNSEAL then: {held})",
                    result_text(&other)
                ));
            }
        }
        // SAFETY: as above.
        let with_cap = unsafe { v.register_read_only(read_only.as_ptr(), CHUNK as usize) }
            .map_err(|e| format!("a reader with CAP_LINUX_IMMUTABLE: ibv_reg_mr {}", errno_text(&e)))?;
        let busy = seal::unseal(&writer);
        with_cap.deregister().map_err(|e| format!("ibv_dereg_mr: {}", errno_text(&e)))?;
        match busy {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            other => return Err(format!("UNSEAL with the reader's region registered: {other:?}, expected EBUSY")),
        }
        let mut writable = Mapping::shared(&writer, CHUNK as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
        let by_writer = {
            let _lowered = seal::WithoutCapLinuxImmutable::new()
                .map_err(|e| format!("capset without CAP_LINUX_IMMUTABLE: {}", errno_text(&e)))?;
            // SAFETY: the mapping outlives the region.
            unsafe { v.register_read_only(writable.as_mut_ptr(), CHUNK as usize) }
        };
        by_writer
            .map_err(|e| {
                format!("the file open for writing, without CAP_LINUX_IMMUTABLE: ibv_reg_mr {}", errno_text(&e))
            })?
            .deregister()
            .map_err(|e| format!("ibv_dereg_mr: {}", errno_text(&e)))?;
        Ok("read-only region of a read-only mapping: EPERM without CAP_LINUX_IMMUTABLE, 0 with it (UNSEAL EBUSY \
            while it lived); the file open for writing: 0 without it"
            .to_string())
    })();
    drop(reader);
    let _ = seal::unseal(&writer);
    let _ = fs::remove_file(&path);
    r
}

/// A 512 MiB sealed file registered as one region and deregistered: rxe
/// puts each contiguous extent in one scatterlist entry.
fn large_release_yields(v: &Verbs, dir: &Path) -> Result<String, String> {
    let register = |addr, len| {
        // SAFETY: the mapping outlives the region (deregistered by the caller).
        unsafe { v.register(addr, len) }
            .map_err(|e| format!("ibv_reg_mr of {} MiB of the sealed file: {}", LARGE >> 20, errno_text(&e)))
    };
    super::large_release_yields(&dir.join("rdma-large"), "ibv_dereg_mr", register, Mr::deregister)
}

/// Set-up: seals a file, maps it MAP_SYNC and times `ibv_reg_mr` of it
/// against `anon` (the bench's figures).
fn sealed_region(v: &Verbs, dir: &Path, anon: &mut Mapping) -> Result<(SealedRegion, String), String> {
    let path = dir.join("rdma-sealed");
    let file = create_sparse(&path, SIZE)?;
    seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let map = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    let mut mapping = crate::fixture::shared_for_stores(&file, SIZE as usize)?.0;
    let sealed_ms = registration_ms(v, mapping.as_mut_ptr(), SIZE as usize)?;
    let anon_ms = registration_ms(v, anon.as_mut_ptr(), SIZE as usize)?;
    // A sealed file is mapped with base pages only; so is this buffer.
    let mut base = Mapping::anonymous(SIZE as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    // SAFETY: advice on our own mapping, before anything touched it.
    if unsafe { libc::madvise(base.as_mut_ptr().cast(), SIZE as usize, libc::MADV_NOHUGEPAGE) } != 0 {
        return Err(format!("madvise(MADV_NOHUGEPAGE): {}", errno_text(&std::io::Error::last_os_error())));
    }
    fill_pattern(SEED, 0, base.as_mut_slice());
    let base_ms = registration_ms(v, base.as_mut_ptr(), SIZE as usize)?;
    let note = format!(
        "{} MiB sealed in {} extent(s); ibv_reg_mr median of {REG_ROUNDS}: sealed DAX {sealed_ms:.2} ms, \
         anonymous {anon_ms:.2} ms, anonymous in base pages {base_ms:.2} ms\n{}",
        SIZE >> 20,
        map.len(),
        figure::lines(&[
            Figure::new(figure::REG_MR_SEALED, sealed_ms, "ms"),
            Figure::new(figure::REG_MR_ANONYMOUS, anon_ms, "ms"),
            Figure::new(figure::REG_MR_ANONYMOUS_BASE, base_ms, "ms"),
        ])
    );
    Ok((SealedRegion { path, file, mapping, map }, note))
}

/// RDMA WRITE from `anon` into the sealed region and READ back, through
/// the two registrations: the pins moved, the bytes arrived both ways, the
/// packets went through rxe, and the file stayed sealed with the same map.
fn traffic(
    v: &Verbs,
    s: &SealedRegion,
    anon: &mut Mapping,
    (sealed_mr, anon_mr): (&Mr, &Mr),
    pins0: u64,
) -> Result<String, String> {
    let (acquired, _) = pin_counters()?;
    let pinned = acquired.saturating_sub(pins0);
    if pinned < 2 * SIZE / PAGE {
        return Err(format!("two registrations moved nr_foll_pin_acquired by {pinned}, not {}", 2 * SIZE / PAGE));
    }
    let (sent0, rcvd0) = packets()?;
    let write = transfer(v, true, anon_mr, sealed_mr)?;
    verify_file("the sealed file after RDMA WRITE", &s.file, 0, SIZE, SEED, 0)?;
    s.still_sealed("RDMA WRITE")?;
    anon.as_mut_slice().fill(0);
    let read = transfer(v, false, anon_mr, sealed_mr)?;
    verify("the peer buffer after RDMA READ from the sealed file", SEED, 0, anon.as_mut_slice())?;
    s.still_sealed("RDMA READ")?;
    let (sent, rcvd) = packets()?;
    let (sent, rcvd) = (sent - sent0, rcvd - rcvd0);
    // Each direction moves SIZE in packets of at most the path MTU (4096).
    let least = 2 * SIZE / 4096;
    if sent < least || rcvd < least {
        return Err(format!(
            "{IBDEV} sent {sent} and received {rcvd} packets, fewer than {least}: rxe did not move the data"
        ));
    }
    Ok(format!(
        "{pinned} pins; RDMA WRITE of {} MiB into the sealed region {write:.0} MiB/s, RDMA READ from it {read:.0} MiB/s; \
         read(2) and the peer buffer show the pattern; {IBDEV} sent {sent} and received {rcvd} packets; map unchanged, \
         UNSEAL EBUSY",
        SIZE >> 20
    ))
}

/// Unmaps the region (its pins alone must keep UNSEAL at EBUSY), then
/// deregisters: UNSEAL works, and the host checks the file's blocks in the
/// NVDIMM image.
fn release(
    s: SealedRegion,
    sealed_mr: Mr,
    anon_mr: Mr,
    mount_pmem: Result<(String, u32, u64), String>,
) -> Result<(String, Vec<HostCheck>), String> {
    let (device, index, base) = mount_pmem?;
    let check = HostCheck {
        name: "RDMA WRITE is in the sealed file's blocks of the NVDIMM image".into(),
        image: HostImage::Nvdimm(index),
        ranges: nvdimm_ranges(&s.map, base, SIZE, &[SEED]),
    };
    // Unmapped, only the region's pins hold the seal.
    drop(s.mapping);
    match seal::unseal(&s.file) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        other => return Err(format!("UNSEAL after munmap with the region registered: {other:?}, expected EBUSY")),
    }
    sealed_mr.deregister().map_err(|e| format!("ibv_dereg_mr: {}", errno_text(&e)))?;
    drop(anon_mr);
    let (acquired, released) = pin_counters()?;
    seal::unseal(&s.file).map_err(|e| format!("UNSEAL after ibv_dereg_mr: {}", errno_text(&e)))?;
    Ok((
        format!(
            "after munmap UNSEAL EBUSY while the region lives, 0 after ibv_dereg_mr (nr_foll_pin_acquired \
             {acquired}, released {released}); the file's blocks at {device} offset(s) {} + data offset {base:#x} \
             go to the host",
            s.map.iter().map(|e| format!("{:#x}", e.physical)).collect::<Vec<_>>().join(", ")
        ),
        vec![check],
    ))
}
