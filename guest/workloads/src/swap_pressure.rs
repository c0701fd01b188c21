//! `swap-pressure`: a sealed swapfile carries a real working set under
//! memory pressure, on the NVDIMM mounted `dax=never`.
//!
//! A child process in a cgroup v2 group with `memory.max` of 48 MiB fills
//! four times that with pages whose bytes are a function of their index (6.12
//! does not write zero-filled pages to swap), pushes them out with
//! MADV_PAGEOUT and `memory.reclaim`, and reads every page back, for
//! `swap-pressure.seconds` (at least one round). Meanwhile the parent checks
//! what only the seal promises: a sample of the swapped-out pages is found
//! on the raw block device exactly where the sealed file's FIEMAP says its
//! swap slot lies (slot from /proc/PID/pagemap), every map-changing call on
//! the active swapfile is refused, and after swapoff the map is the one
//! recorded and the file is still sealed. `pswpout`, `pswpin` and
//! `memory.swap.peak` must have moved by at least the working set's excess.
//!
//! The seal also makes files swappable that 6.12 refuses: a sparse file and
//! a reflinked one give EINVAL at swapon until SEAL allocates and unshares
//! them. The same pressure through an unsealed, preallocated swapfile runs
//! on both kernels: the control that the pressure machinery works. On a
//! kernel without the series the sealed cases skip with SEAL's EOPNOTSUPP.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use dax_seal_protocol::disks::{fill_pattern, first_pattern_mismatch};
use dax_seal_protocol::figure::{self, Figure};
use dax_seal_protocol::{RunConfig, MOUNT_PREFIX};

use crate::calls::{counter, errno_text, mount_pseudo, mounted, umount, Mapping};
use crate::cases::{when_sealable, Attempt, Cases};
use crate::fixture::{create, create_new, create_sparse, is_sealed, probe, remove_sealed};
use crate::seal::{self, Extent};
use crate::swap::{self, swapoff, swapon, write_swap_header};

const PAGE: u64 = 4096;
/// The group's memory.max, and the working set: four times that.
const LIMIT: u64 = 48 << 20;
const WORKING_SET: u64 = 4 * LIMIT;
/// Room for the working set's excess and then some.
const SWAP_SIZE: u64 = 256 << 20;
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const GROUP: &str = "swap-pressure";
/// Pages of the working set whose place on the device is checked.
const SAMPLES: u64 = 16;
/// Seed of the working set's page contents.
const SEED: u64 = 0x5357_4150;

type Check = Result<String, String>;

const CASES: [&str; 9] = [
    "cgroup-v2-memory-controller",
    "sparse-file-refuses-swapon",
    "reflinked-file-refuses-swapon",
    "pressure-through-unsealed-swapfile",
    "seal-makes-sparse-file-swappable",
    "seal-makes-reflinked-file-swappable",
    "pressure-through-sealed-swapfile",
    "unsealed-dax-file-refuses-swapon",
    "sealed-dax-file-refuses-swapon",
];

/// The bench's case, planned only when `swap-pressure.raw-pmem` names a
/// device.
const RAW_CASE: &str = "pressure-through-raw-pmem-swap";

pub fn run() -> ExitCode {
    let config = RunConfig::read();
    let seconds = config.as_ref().ok().and_then(|c| c.param("swap-pressure.seconds").ok()).unwrap_or(5);
    let raw = config.as_ref().ok().and_then(|c| c.param("swap-pressure.raw-pmem").ok()).unwrap_or(0);
    let mut t = Cases::new(CASES.len() + usize::from(raw != 0));
    let dir = match crate::workdir::fresh_page_cache("swap-pressure") {
        Ok(d) => d,
        Err(e) => {
            for name in CASES {
                t.check::<()>(name, Err(e.clone()));
            }
            return t.exit();
        }
    };
    let group = t.check("cgroup-v2-memory-controller", memory_group());
    t.check("sparse-file-refuses-swapon", refused(&dir.join("sparse"), Kind::Sparse).map(|n| ((), n)));
    t.check("reflinked-file-refuses-swapon", refused(&dir.join("reflinked"), Kind::Reflinked).map(|n| ((), n)));
    let through = |dir: &Path, sealed: bool| -> Check {
        let group = group.as_ref().ok_or("not attempted: cgroup-v2-memory-controller failed")?;
        pressure(dir, group, sealed, seconds)
    };
    t.check("pressure-through-unsealed-swapfile", through(&dir, false).map(|n| ((), n)));
    let has_seal = probe(&dir);
    t.outcome(
        "seal-makes-sparse-file-swappable",
        when_sealable(&has_seal, || sealed_swappable(&dir.join("sparse"), Kind::Sparse)),
    );
    t.outcome(
        "seal-makes-reflinked-file-swappable",
        when_sealable(&has_seal, || sealed_swappable(&dir.join("reflinked"), Kind::Reflinked)),
    );
    t.outcome("pressure-through-sealed-swapfile", when_sealable(&has_seal, || through(&dir, true)));
    // On the DAX mount: 6.12 has no page cache to read a DAX file's swap
    // header through (EINVAL), and the series keeps that refusal for sealed
    // files too (docs/seal.md, Known limits: DAX write faults and long-term
    // pins would reach an active swapfile's slots).
    let dax = dax_dir();
    let dax_case = |t: &mut Cases, name: &str, sealed_only: bool, f: &dyn Fn(&Path) -> Check| {
        let outcome = match (&dax, sealed_only) {
            (Err(e), _) => Attempt::Done(Err(e.clone())),
            (Ok(Err(why)), _) => Attempt::Skip(why.clone()),
            (Ok(Ok(d)), true) => when_sealable(&has_seal, || f(d)),
            (Ok(Ok(d)), false) => Attempt::Done(f(d)),
        };
        t.outcome(name, outcome);
    };
    dax_case(&mut t, "unsealed-dax-file-refuses-swapon", false, &|d| refused(&d.join("dax"), Kind::Dax));
    dax_case(&mut t, "sealed-dax-file-refuses-swapon", true, &|d| sealed_refused(&d.join("dax"), Kind::Dax));
    if let Ok(Ok(d)) = &dax {
        let _ = fs::remove_dir_all(d);
    }
    if raw != 0 {
        let r = group.as_ref().ok_or("not attempted: cgroup-v2-memory-controller failed".to_string());
        t.check(RAW_CASE, r.and_then(|group| pressure_raw(raw, group, seconds)).map(|n| ((), n)));
    }
    let _ = fs::remove_dir(Path::new(CGROUP_ROOT).join(GROUP));
    let _ = fs::remove_dir_all(&dir);
    t.exit()
}

/// Mounts cgroup2 if needed, enables the memory controller for children
/// and makes the group with its limit; returns the group's directory.
fn memory_group() -> Result<(PathBuf, String), String> {
    let root = Path::new(CGROUP_ROOT);
    if !root.join("cgroup.controllers").exists() {
        fs::create_dir_all(root).map_err(|e| format!("mkdir {CGROUP_ROOT}: {e}"))?;
        mount_pseudo(c"cgroup2", root)
            .map_err(|e| format!("{} (is CONFIG_CGROUPS in kernel-config/memcg.config?)", errno_text(&e)))?;
    }
    let controllers =
        fs::read_to_string(root.join("cgroup.controllers")).map_err(|e| format!("cgroup.controllers: {e}"))?;
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return Err(format!(
            "{CGROUP_ROOT}/cgroup.controllers is {:?}, without memory: the kernel lacks CONFIG_MEMCG",
            controllers.trim()
        ));
    }
    fs::write(root.join("cgroup.subtree_control"), "+memory")
        .map_err(|e| format!("+memory in subtree_control: {e}"))?;
    let group = root.join(GROUP);
    let _ = fs::remove_dir(&group);
    fs::create_dir(&group).map_err(|e| format!("mkdir {}: {e}", group.display()))?;
    for (file, value) in [("memory.max", LIMIT.to_string()), ("memory.swap.max", "max".to_string())] {
        fs::write(group.join(file), &value).map_err(|e| format!("{file} = {value}: {e}"))?;
    }
    for file in ["memory.swap.peak", "memory.reclaim", "memory.events", "cgroup.procs"] {
        if !group.join(file).exists() {
            return Err(format!(
                "{} is missing: swap accounting needs CONFIG_MEMCG and CONFIG_SWAP",
                group.join(file).display()
            ));
        }
    }
    Ok((
        group,
        format!("{} with memory.max {} MiB, memory.swap.max max", CGROUP_ROOT.to_string() + "/" + GROUP, LIMIT >> 20),
    ))
}

#[derive(Clone, Copy)]
enum Kind {
    Sparse,
    Reflinked,
    /// Preallocated, on the DAX mount.
    Dax,
}

/// A fresh directory on the NVDIMM mounted `dax=always`; `Ok(Err(why))`
/// when this boot has no such mount (the DAX cases skip), `Err` when the
/// directory cannot be made (they fail).
fn dax_dir() -> Result<Result<PathBuf, String>, String> {
    let mount = PathBuf::from(format!("{MOUNT_PREFIX}0"));
    let (_, opts) = mounted(&mount)?;
    if !opts.split(',').any(|o| o == "dax=always") {
        return Ok(Err(format!("{} is mounted {opts}, not dax=always: no DAX swapfile to try", mount.display())));
    }
    crate::workdir::fresh(&mount, "swap-pressure-dax").map(Ok)
}

/// A swapfile of `kind` with its header: sparse (header page only) or
/// sharing all its blocks with a clone.
fn make(path: &Path, kind: Kind) -> Result<File, String> {
    let _ = fs::remove_file(path);
    let f = match kind {
        Kind::Sparse => create_sparse(path, swap::SWAP_SIZE)?,
        Kind::Dax => {
            let f = create_new(path)?;
            seal::fallocate(&f, 0, 0, swap::SWAP_SIZE).map_err(|e| format!("fallocate: {}", errno_text(&e)))?;
            f
        }
        Kind::Reflinked => {
            let f = create(path, 0x5e, swap::SWAP_SIZE)?;
            let clone = path.with_extension("clone");
            let _ = fs::remove_file(&clone);
            let c = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&clone)
                .map_err(|e| format!("create {}: {}", clone.display(), errno_text(&e)))?;
            seal::ficlone(&c, &f).map_err(|e| format!("FICLONE: {}", errno_text(&e)))?;
            f
        }
    };
    write_swap_header(&f, swap::SWAP_SIZE).map_err(|e| format!("swap header: {}", errno_text(&e)))?;
    Ok(f)
}

fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::Sparse => "a sparse file",
        Kind::Reflinked => "a file whose blocks are shared with a clone",
        Kind::Dax => "a preallocated DAX file",
    }
}

/// 6.12 refuses such a file at swapon with EINVAL (both kernels).
fn refused(path: &Path, kind: Kind) -> Check {
    let r = make(path, kind).and_then(|_| match swapon(path) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(format!("swapon of {}: EINVAL", describe(kind))),
        Err(e) => Err(format!("swapon of {}: {}, expected EINVAL", describe(kind), errno_text(&e))),
        Ok(()) => {
            let _ = swapoff(path);
            Err(format!("swapon of {} succeeded, expected EINVAL", describe(kind)))
        }
    });
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("clone"));
    r
}

/// A sealed DAX file is still refused (EINVAL), and the refusal leaves it
/// sealed and unsealable.
fn sealed_refused(path: &Path, kind: Kind) -> Check {
    let r = (|| {
        let f = make(path, kind)?;
        seal::seal(&f).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
        let on = swapon(path);
        if on.is_ok() {
            let _ = swapoff(path);
        }
        let unseal = seal::unseal(&f);
        match on {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(format!("swapon of sealed {}: {}, expected EINVAL", describe(kind), errno_text(&e))),
            Ok(()) => return Err(format!("swapon of sealed {} succeeded, expected EINVAL", describe(kind))),
        }
        unseal.map_err(|e| format!("UNSEAL after the refused swapon: {}", errno_text(&e)))?;
        Ok(format!("swapon of sealed {}: EINVAL; UNSEAL 0", describe(kind)))
    })();
    let _ = fs::remove_file(path);
    r
}

/// After SEAL (which allocates every hole and unshares every block) the
/// same file is accepted.
fn sealed_swappable(path: &Path, kind: Kind) -> Check {
    let r = (|| {
        let f = make(path, kind)?;
        seal::seal(&f).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
        swapon(path).map_err(|e| format!("swapon of {} after SEAL: {}", describe(kind), errno_text(&e)))?;
        let off = swapoff(path);
        let unseal = seal::unseal(&f);
        off.map_err(|e| format!("swapoff: {}", errno_text(&e)))?;
        unseal.map_err(|e| format!("UNSEAL after swapoff: {}", errno_text(&e)))?;
        Ok(format!("{} refuses swapon; after SEAL swapon 0, swapoff 0, UNSEAL 0", describe(kind)))
    })();
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("clone"));
    r
}

/// /proc/vmstat counters.
fn vmstat(name: &str) -> Result<u64, String> {
    let text = fs::read_to_string("/proc/vmstat").map_err(|e| format!("/proc/vmstat: {e}"))?;
    counter(&text, name).ok_or_else(|| format!("/proc/vmstat has no {name}: is CONFIG_SWAP on?"))
}

fn read_u64(path: &Path) -> Result<u64, String> {
    let t = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    t.trim().parse().map_err(|_| format!("{}: {:?} is not a number", path.display(), t.trim()))
}

/// `key` of a flat-keyed cgroup file such as memory.events.
fn keyed(path: &Path, key: &str) -> Result<u64, String> {
    let t = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    counter(&t, key).ok_or_else(|| format!("{} has no {key}", path.display()))
}

/// A pipe end as a File.
fn pipe() -> Result<(File, File), String> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", errno_text(&io::Error::last_os_error())));
    }
    // SAFETY: fresh fds owned by nothing else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Through one active swapfile (sealed or not): the child's working set is
/// swapped out and in, round after round, for `seconds`.
fn pressure(dir: &Path, group: &Path, sealed: bool, seconds: u64) -> Check {
    let path = dir.join(if sealed { "swap-sealed" } else { "swap-plain" });
    let r = pressure_on(&path, group, sealed, seconds);
    let _ = swapoff(&path);
    remove_sealed(&path);
    r
}

fn pressure_on(path: &Path, group: &Path, sealed: bool, seconds: u64) -> Check {
    let f = create_new(path)?;
    // Preallocated: unwritten extents are fine for swap, holes are not.
    seal::fallocate(&f, 0, 0, SWAP_SIZE).map_err(|e| format!("fallocate: {}", errno_text(&e)))?;
    write_swap_header(&f, SWAP_SIZE).map_err(|e| format!("swap header: {}", errno_text(&e)))?;
    if sealed {
        seal::seal(&f).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    }
    let map = seal::fiemap(&f).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    let mount = path.parent().and_then(Path::parent).ok_or("swapfile has no mount")?;
    let (device, _) = mounted(mount)?;
    let d = drive(path, group, seconds, &map, &device, || if sealed { refusals(&f, path) } else { Ok(String::new()) })?;
    let after = seal::fiemap(&f).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    if after != map {
        return Err(format!("after swapoff the map moved: {map:?} -> {after:?}"));
    }
    let mut tail = String::new();
    if sealed {
        if !is_sealed(path)? {
            return Err("after swapoff the file is no longer sealed".into());
        }
        seal::unseal(&f).map_err(|e| format!("UNSEAL after swapoff: {}", errno_text(&e)))?;
        tail = format!("; {}; after swapoff the same map, still sealed, UNSEAL 0", d.during);
    }
    let device = if sealed { "sealed-swapfile" } else { "unsealed-swapfile" };
    Ok(format!("{} ({}); {}{tail}\n{}", d.child, d.figures, d.found, d.throughput(device)))
}

/// What one pressure run through a swap area showed.
struct Drive {
    /// The child's own account.
    child: String,
    /// pswpout, pswpin, memory.swap.peak, oom_kill and the throughput.
    figures: String,
    /// Swap traffic of the read-back rounds, MiB/s.
    rate: f64,
    /// The sampled pages found on the device.
    found: String,
    /// What `during` said.
    during: String,
}

/// swapon `swap`, whose pages lie on `device` as `map` says; the child
/// fills and pushes out its working set, `during` runs while it is out,
/// then the child reads it back round after round; swapoff. The counters
/// must show the working set's excess went out and came back in.
fn drive(
    swap: &Path,
    group: &Path,
    seconds: u64,
    map: &[Extent],
    device: &str,
    during: impl FnOnce() -> Result<String, String>,
) -> Result<Drive, String> {
    swapon(swap).map_err(|e| format!("swapon: {}", errno_text(&e)))?;
    let r = drive_on(group, seconds, map, device, during);
    let off = swapoff(swap).map_err(|e| format!("swapoff: {}", errno_text(&e)));
    let d = r?;
    off?;
    Ok(d)
}

fn drive_on(
    group: &Path,
    seconds: u64,
    map: &[Extent],
    device: &str,
    during: impl FnOnce() -> Result<String, String>,
) -> Result<Drive, String> {
    let (out0, in0) = (vmstat("pswpout")?, vmstat("pswpin")?);
    let (to_child_r, mut to_child) = pipe()?;
    let (mut from_child, from_child_w) = pipe()?;
    // SAFETY: the child only runs child() and exits; it never returns here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", errno_text(&io::Error::last_os_error())));
    }
    if pid == 0 {
        drop((to_child, from_child));
        let code = child(group, to_child_r, from_child_w, seconds);
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop((to_child_r, from_child_w));
    let mut line = String::new();
    let mut go = None;
    let r = (|| -> Result<(String, String), String> {
        // The child says when its working set is out.
        let mut buf = [0u8; 64];
        let n = from_child.read(&mut buf).map_err(|e| format!("reading from the child: {e}"))?;
        line.push_str(&String::from_utf8_lossy(&buf[..n]));
        let addr: usize = line
            .trim()
            .strip_prefix("out ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("the child reported {line:?} instead of its swapped-out working set"))?;
        let found = on_device(pid, addr, map, device)?;
        let said = during()?;
        go = Some((Instant::now(), vmstat("pswpout")? + vmstat("pswpin")?));
        to_child.write_all(b"go\n").map_err(|e| format!("writing to the child: {e}"))?;
        Ok((found, said))
    })();
    drop(to_child);
    let mut rest = String::new();
    let _ = from_child.read_to_string(&mut rest);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let (found, said) = r?;
    let oom = keyed(&group.join("memory.events"), "oom_kill").unwrap_or(0);
    let (out, inn) = (vmstat("pswpout")? - out0, vmstat("pswpin")? - in0);
    let peak = read_u64(&group.join("memory.swap.peak"))?;
    // Swap traffic of the read-back rounds (swap-in, and swap-out between
    // rounds) over their wall time.
    let rate = go.map(|(t, moved)| {
        let pages = out + inn + out0 + in0 - moved;
        (pages * PAGE) as f64 / f64::from(1u32 << 20) / t.elapsed().as_secs_f64()
    });
    let rate = rate.unwrap_or(0.0);
    let figures = format!(
        "pswpout {out} pswpin {inn} pages, memory.swap.peak {} MiB, oom_kill {oom}, swap throughput {rate:.0} MiB/s",
        peak >> 20,
    );
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let how = if libc::WIFSIGNALED(status) {
            format!("killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("exit status {}", libc::WEXITSTATUS(status))
        };
        return Err(format!("the child failed ({how}): {}; {figures}", rest.trim()));
    }
    let excess = (WORKING_SET - LIMIT) / PAGE;
    if out < excess || inn < excess || peak == 0 {
        return Err(format!(
            "swap moved less than the working set's excess of {excess} pages: {figures} (the pressure did not reach swap)"
        ));
    }
    Ok(Drive { child: rest.trim().to_string(), figures, rate, found, during: said })
}

impl Drive {
    /// The throughput as a figure line, `device` naming the swap area.
    fn throughput(&self, device: &str) -> String {
        Figure::new(figure::swap_throughput(device), self.rate, "MiB/s").line()
    }
}

/// The bench's reference: the same pressure through swap on a whole raw
/// pmem block device (`/dev/pmemN`, N from `swap-pressure.raw-pmem`),
/// which the workload unmounts and overwrites with a swap header.
fn pressure_raw(index: u64, group: &Path, seconds: u64) -> Check {
    if index < 2 {
        return Err(format!(
            "swap-pressure.raw-pmem={index}: the first two NVDIMMs hold the workloads' filesystems; name a third or \
             later (and boot with --nvdimms 3 or more)"
        ));
    }
    let device = PathBuf::from(format!("/dev/pmem{index}"));
    if !device.exists() {
        return Err(format!("{} does not exist: boot with --nvdimms {}", device.display(), index + 1));
    }
    let mount = PathBuf::from(format!("{MOUNT_PREFIX}{index}"));
    if mounted(&mount).is_ok() {
        umount(&mount).map_err(|e| format!("umount {}: {}", mount.display(), errno_text(&e)))?;
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&device)
        .map_err(|e| format!("open {}: {}", device.display(), errno_text(&e)))?;
    write_swap_header(&f, SWAP_SIZE).map_err(|e| format!("swap header on {}: {}", device.display(), errno_text(&e)))?;
    f.sync_all().map_err(|e| format!("fsync {}: {}", device.display(), errno_text(&e)))?;
    // The device is its own map.
    let map = [Extent { logical: 0, physical: 0, length: SWAP_SIZE, flags: 0 }];
    let dev = device.to_string_lossy().into_owned();
    let d = drive(&device, group, seconds, &map, &dev, || Ok(String::new()));
    // Blank the header page again, so the next boot finds a blank device
    // and makes its XFS there (a swap header is data init will not format).
    let wiped = f.write_all_at(&[0u8; PAGE as usize], 0).and_then(|()| f.sync_all());
    let d = d?;
    wiped.map_err(|e| format!("blanking the swap header of {dev}: {}", errno_text(&e)))?;
    Ok(format!(
        "{} on {dev} ({}); {}; header blanked for the next boot\n{}",
        d.child,
        d.figures,
        d.found,
        d.throughput("raw-pmem")
    ))
}

/// The child: joins the group, fills the working set, pushes it out,
/// waits for the parent, then reads every page back, round after round.
fn child(group: &Path, mut from_parent: File, mut to_parent: File, seconds: u64) -> i32 {
    let r = (|| -> Result<String, String> {
        fs::write(group.join("cgroup.procs"), "0").map_err(|e| format!("joining {}: {e}", group.display()))?;
        let mut set = Mapping::anonymous(WORKING_SET as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
        let pages = WORKING_SET / PAGE;
        for p in 0..pages {
            let at = (p * PAGE) as usize;
            fill_pattern(SEED, p * PAGE, &mut set.as_mut_slice()[at..at + PAGE as usize]);
        }
        page_out(&mut set, group)?;
        to_parent
            .write_all(format!("out {}\n", set.as_mut_ptr() as usize).as_bytes())
            .map_err(|e| format!("to parent: {e}"))?;
        let mut go = [0u8; 3];
        from_parent.read_exact(&mut go).map_err(|e| format!("waiting for the parent: {e}"))?;
        let start = Instant::now();
        let mut rounds = 0;
        loop {
            rounds += 1;
            for p in 0..pages {
                let at = (p * PAGE) as usize;
                if let Some(bad) = first_pattern_mismatch(SEED, p * PAGE, &set.as_mut_slice()[at..at + PAGE as usize]) {
                    return Err(format!("round {rounds}: page {p} byte {bad} is wrong after swap-in"));
                }
            }
            if start.elapsed() >= Duration::from_secs(seconds) {
                break;
            }
            page_out(&mut set, group)?;
        }
        Ok(format!(
            "{rounds} round(s) of {} MiB through {} MiB, every page right after swap-in",
            WORKING_SET >> 20,
            LIMIT >> 20
        ))
    })();
    let (text, code) = match r {
        Ok(t) => (t, 0),
        Err(e) => (e, 1),
    };
    let _ = to_parent.write_all(text.as_bytes());
    code
}

/// MADV_PAGEOUT over the working set, then memory.reclaim for what is left.
fn page_out(set: &mut Mapping, group: &Path) -> Result<(), String> {
    let len = set.as_mut_slice().len();
    // SAFETY: advice on our own mapping.
    if unsafe { libc::madvise(set.as_mut_ptr().cast(), len, libc::MADV_PAGEOUT) } != 0 {
        return Err(format!("MADV_PAGEOUT: {}", errno_text(&io::Error::last_os_error())));
    }
    // Reclaim may fall short of the request (EAGAIN); what matters is what
    // the counters show afterwards.
    let _ = fs::write(group.join("memory.reclaim"), format!("{}", LIMIT / 2));
    Ok(())
}

/// For a sample of the child's pages: the swap slot in its pagemap, that
/// slot's place on the device through the swapfile's map, and the page's
/// bytes there, read with O_DIRECT from the raw block device.
fn on_device(pid: i32, addr: usize, map: &[Extent], device: &str) -> Result<String, String> {
    let pagemap = File::open(format!("/proc/{pid}/pagemap")).map_err(|e| format!("pagemap: {e}"))?;
    let dev = crate::fixture::open_direct(Path::new(device), false)
        .map_err(|e| format!("open {device} O_DIRECT: {}", errno_text(&e)))?;
    let mut buf = Mapping::anonymous(PAGE as usize).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    let pages = WORKING_SET / PAGE;
    let (mut swapped, mut checked) = (0, 0);
    for i in 0..SAMPLES {
        let p = i * pages / SAMPLES + 7;
        let mut entry = [0u8; 8];
        pagemap.read_exact_at(&mut entry, (addr as u64 / PAGE + p) * 8).map_err(|e| format!("pagemap read: {e}"))?;
        let e = u64::from_ne_bytes(entry);
        // Bit 62: swapped; bits 0-4 the swap type, 5-54 the slot.
        if e & (1 << 62) == 0 {
            continue;
        }
        swapped += 1;
        let slot = (e & ((1 << 55) - 1)) >> 5;
        let at = slot * PAGE;
        let ext = map
            .iter()
            .find(|x| (x.logical..x.logical + x.length).contains(&at))
            .ok_or_else(|| format!("swap slot {slot} lies outside the swapfile's map"))?;
        let phys = ext.physical + (at - ext.logical);
        dev.read_exact_at(buf.as_mut_slice(), phys).map_err(|e| format!("O_DIRECT read of {device}: {e}"))?;
        if let Some(bad) = first_pattern_mismatch(SEED, p * PAGE, buf.as_mut_slice()) {
            return Err(format!(
                "page {p} is in swap slot {slot}, but {device} at {phys:#x} (the swapfile's block for that slot) \
                 differs at byte {bad}: swap I/O did not go through the file's map"
            ));
        }
        checked += 1;
    }
    if checked < SAMPLES / 2 {
        return Err(format!("only {swapped} of {SAMPLES} sampled pages were swapped out after MADV_PAGEOUT"));
    }
    Ok(format!("{checked} of {SAMPLES} sampled pages found on {device} at their swap slot's block"))
}

/// Every map-changing call on the active sealed swapfile is refused.
fn refusals(f: &File, path: &Path) -> Result<String, String> {
    let expect = |what: &str, r: io::Result<()>| match r {
        Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => Ok(()),
        other => Err(format!("{what} on the active sealed swapfile: {other:?}, expected ETXTBSY")),
    };
    expect("ftruncate", f.set_len(PAGE))?;
    expect("PUNCH_HOLE", seal::fallocate(f, seal::FALLOC_FL_PUNCH_HOLE | seal::FALLOC_FL_KEEP_SIZE, PAGE, PAGE))?;
    expect("fallocate beyond EOF", seal::fallocate(f, 0, SWAP_SIZE, PAGE))?;
    expect("SEAL", seal::seal(f))?;
    expect("UNSEAL", seal::unseal(f))?;
    // The swap header page, copied, is the other side of clone and dedupe.
    let other_path = path.with_extension("other");
    let other = create(&other_path, 0, PAGE)?;
    let mut header = vec![0u8; PAGE as usize];
    f.read_exact_at(&mut header, 0).map_err(|e| format!("pread: {}", errno_text(&e)))?;
    other.write_all_at(&header, 0).map_err(|e| format!("pwrite: {}", errno_text(&e)))?;
    let clone = seal::ficlonerange(f, 0, &other, 0, PAGE);
    let dedupe = seal::dedupe(&other, f, 0, PAGE).map(drop);
    let _ = fs::remove_file(&other_path);
    expect("FICLONERANGE into it", clone)?;
    expect("FIDEDUPERANGE into it", dedupe)?;
    Ok("ftruncate, PUNCH_HOLE, fallocate, SEAL, UNSEAL, FICLONERANGE and FIDEDUPERANGE while active: ETXTBSY".into())
}
