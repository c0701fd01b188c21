//! What every workload builds its cases from: files filled with a known
//! pattern (or sparse, or empty), the seal's state as statx and FIEMAP show
//! it, the probes that say whether this kernel and filesystem can seal or
//! rebuild a data fork at all, umount and mount again, a file on tmpfs, the
//! kernel's long-term pin counters, and the kind of persistent memory the
//! boot has.
//!
//! A workload module uses these, [`crate::swap`], [`crate::workdir`] and
//! [`crate::cases`], never another workload module (a unit test in main.rs
//! enforces it).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::calls::{self, counter, cpath, errno_text, mount_pseudo, mounted, statx_attributes, umount};
use crate::seal::{self, Extent};

/// Size of the probe's scratch file and of the tmpfs file: 64 blocks of
/// 4 KiB.
const SIZE: u64 = 256 * 1024;
const BLOCK: u64 = 4096;

static PMEM: std::sync::OnceLock<dax_seal_protocol::pmem::PmemKind> = std::sync::OnceLock::new();

/// Reads the kind of persistent memory from the run's configuration, once,
/// before a workload runs (main): a workload never guesses it.
pub fn read_pmem() -> Result<dax_seal_protocol::pmem::PmemKind, String> {
    let kind = dax_seal_protocol::RunConfig::read()?.pmem;
    Ok(*PMEM.get_or_init(|| kind))
}

/// The kind of persistent memory this boot has: what the host attached and
/// the guest init found (it fails set-up on any other kind).
pub fn pmem() -> dax_seal_protocol::pmem::PmemKind {
    *PMEM.get().expect("main reads the run's persistent-memory kind before any workload runs")
}

/// The device-dax reference of the devdax topology (`/dev/daxR.N`, which
/// the guest init set up), None on other topologies.
pub fn device_dax() -> Result<Option<PathBuf>, String> {
    if pmem() != dax_seal_protocol::pmem::PmemKind::Devdax {
        return Ok(None);
    }
    let mut names: Vec<String> = fs::read_dir("/dev")
        .map_err(|e| format!("/dev: {e}"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dax") && n.contains('.'))
        .collect();
    names.sort();
    match names.as_slice() {
        [one] => Ok(Some(Path::new("/dev").join(one))),
        [] => Err("the devdax topology has no /dev/daxR.N: did the guest init set it up?".into()),
        more => Err(format!("more than one device-dax device: {more:?}")),
    }
}

/// Opens the device-dax reference for reading and writing (device-dax has
/// no read(2) or write(2): map it).
pub fn open_device_dax(dev: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|e| format!("open {}: {}", dev.display(), errno_text(&e)))
}

/// A shared mapping, MAP_SYNC where the device offers it: for operations
/// whose errno is the result (races, conformance rows), not a set-up step.
pub fn shared_map(file: &File, len: usize) -> std::io::Result<calls::Mapping> {
    if pmem().synchronous() {
        calls::Mapping::shared_sync(file, len)
    } else {
        calls::Mapping::shared(file, len)
    }
}

/// A shared mapping for stores that userspace makes durable: MAP_SYNC
/// where the device's persistence domain is synchronous. On an asynchronous
/// one (virtio-pmem) the kernel must refuse MAP_SYNC with EOPNOTSUPP, and a
/// plain shared mapping is returned with a note saying so; an offer of
/// MAP_SYNC there is an error.
pub fn shared_for_stores(file: &File, len: usize) -> Result<(calls::Mapping, String), String> {
    let kind = pmem();
    match (calls::Mapping::shared_sync(file, len), kind.synchronous()) {
        (Ok(map), true) => Ok((map, "MAP_SYNC".into())),
        (Err(e), true) => Err(format!("mmap MAP_SHARED_VALIDATE|MAP_SYNC: {}", errno_text(&e))),
        (Ok(_), false) => Err(format!(
            "mmap MAP_SHARED_VALIDATE|MAP_SYNC succeeded on a {}, whose persistence domain is asynchronous: \
             the kernel must refuse it",
            kind.device()
        )),
        (Err(e), false) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            let map = calls::Mapping::shared(file, len).map_err(|e| format!("mmap MAP_SHARED: {}", errno_text(&e)))?;
            Ok((map, format!("MAP_SHARED (MAP_SYNC refused with EOPNOTSUPP on a {})", kind.device())))
        }
        (Err(e), false) => {
            Err(format!("mmap MAP_SHARED_VALIDATE|MAP_SYNC on a {}: {}, not EOPNOTSUPP", kind.device(), errno_text(&e)))
        }
    }
}

/// `len` bytes of the fill pattern `seed` names; [`create`] writes it.
pub fn pattern(seed: u8, len: u64) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(seed as u32 % 31) as u8 ^ seed).collect()
}

/// A new, empty file opened for reading and writing; one that exists is an
/// error.
pub fn create_new(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("create {}: {}", path.display(), errno_text(&e)))
}

/// A new sparse file of `len` bytes (no blocks allocated).
pub fn create_sparse(path: &Path, len: u64) -> Result<File, String> {
    let f = create_new(path)?;
    f.set_len(len).map_err(|e| format!("ftruncate {}: {}", path.display(), errno_text(&e)))?;
    Ok(f)
}

/// The middle value of `samples` (the upper one of an even count), as the
/// figures workloads report are taken; NaN when there is none.
pub fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Unseals `path` if it is there and sealed, and removes it: what a case
/// leaves behind, whether it passed or not.
pub fn remove_sealed(path: &Path) {
    if let Ok(f) = OpenOptions::new().write(true).open(path) {
        let _ = seal::unseal(&f);
    }
    let _ = fs::remove_file(path);
}

/// `path` (a file or a block device) opened for O_DIRECT reads, and writes
/// if `write`: each access goes to the device for its own range only.
pub fn open_direct(path: &Path, write: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().read(true).write(write).custom_flags(libc::O_DIRECT).open(path)
}

/// A file of `len` bytes of [`pattern`] `seed`, fsynced, in place of
/// whatever `path` was.
pub fn create(path: &Path, seed: u8, len: u64) -> Result<File, String> {
    let _ = fs::remove_file(path);
    let mut f = create_new(path)?;
    f.write_all(&pattern(seed, len)).map_err(|e| format!("write {}: {}", path.display(), errno_text(&e)))?;
    f.sync_all().map_err(|e| format!("fsync {}: {}", path.display(), errno_text(&e)))?;
    Ok(f)
}

/// Whether statx reports the file sealed.
pub fn is_sealed(path: &Path) -> Result<bool, String> {
    statx_attributes(path).map(|(a, _)| a & seal::STATX_ATTR_IOMAP_IMMUTABLE != 0)
}

/// Whether the seal holds (statx reports it: the kernel calls the map
/// whole) and whether the flag is on disk (FS_IOC_FSGETXATTR): a broken
/// seal is on disk but does not hold.
pub fn seal_views(path: &Path) -> Result<(bool, bool), String> {
    let file = File::open(path).map_err(|e| format!("open {}: {}", path.display(), errno_text(&e)))?;
    let fa = seal::fsgetxattr(&file).map_err(|e| format!("FSGETXATTR {}: {}", path.display(), errno_text(&e)))?;
    Ok((is_sealed(path)?, fa.xflags & seal::FS_XFLAG_IOMAP_IMMUTABLE != 0))
}

/// The kernel log lines so far that name inode `ino` as a seal a kernel
/// without the series broke.
pub fn broken_seal_reports(ino: u64) -> Result<usize, String> {
    calls::kmsg_count(&format!("inode {ino:#x}: sealed block map changed by a kernel without the seal"))
}

/// What a map contains: "hole", "unwritten", "shared", "delalloc", or
/// "written" when it is none of those and covers [0, size).
pub fn describe(map: &[Extent], size: u64) -> String {
    let mut kinds = Vec::new();
    let mut next = 0;
    let mut hole = false;
    for e in map {
        hole |= e.logical != next;
        next = e.logical + e.length;
    }
    hole |= next < size;
    let flag = |f: u32| map.iter().any(|e| e.flags & f != 0);
    for (present, name) in [
        (hole, "hole"),
        (flag(seal::FIEMAP_EXTENT_UNWRITTEN), "unwritten"),
        (flag(seal::FIEMAP_EXTENT_SHARED), "shared"),
        (flag(seal::FIEMAP_EXTENT_DELALLOC), "delalloc"),
    ] {
        if present {
            kinds.push(name);
        }
    }
    if kinds.is_empty() {
        "written".into()
    } else {
        kinds.join(", ")
    }
}

/// The map as one line: `logical:physical:length:flags` per extent.
pub fn map_line(map: &[Extent]) -> String {
    let ext: Vec<String> =
        map.iter().map(|e| format!("{}:{}:{}:{:#x}", e.logical, e.physical, e.length, e.flags)).collect();
    format!("map {}", ext.join(" "))
}

/// SEAL on a scratch file: 0 means the series is there; EOPNOTSUPP means a
/// kernel without it. Anything else is reported through the cases that need
/// the seal (they fail, never skip).
pub fn probe(dir: &Path) -> Result<(), String> {
    let path = dir.join("probe");
    let r = (|| {
        let f = create(&path, 0x11, SIZE)?;
        match seal::seal(&f) {
            Ok(()) => {
                seal::unseal(&f).map_err(|e| format!("UNSEAL of the probe: {}", errno_text(&e)))?;
                Ok(Ok(()))
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                Ok(Err("SEAL returns EOPNOTSUPP: this kernel lacks the block-map seal series".to_string()))
            }
            Err(e) => Err(format!("SEAL of a fresh file: {}", errno_text(&e))),
        }
    })();
    let _ = fs::remove_file(&path);
    match r {
        Ok(verdict) => verdict,
        // A kernel whose SEAL fails oddly must fail the sealed legs, so run
        // them: they report the real errno.
        Err(_) => Ok(()),
    }
}

/// A forced rebuild of a data fork needs CONFIG_XFS_ONLINE_REPAIR (every
/// variant has it) and the reverse-mapping btree, which the guest's mkfs
/// enables; filesystems made by older versions of the harness lack it.
pub fn probe_online_repair(dir: &Path) -> Result<(), String> {
    let path = dir.join("probe-repair");
    let r = create(&path, 3, BLOCK).and_then(|f| match seal::rebuild_data_fork(&f) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOTTY)) => Err(format!(
            "online repair cannot rebuild a data fork here ({}): it needs CONFIG_XFS_ONLINE_REPAIR and a \
             filesystem made with rmapbt=1, as the harness makes them (run with --fresh to remake an older one)",
            errno_text(&e)
        )),
        _ => Ok(()),
    });
    let _ = fs::remove_file(&path);
    r
}

/// umount and mount again with the same device and options.
pub fn remount(mount: &Path) -> Result<(), String> {
    remount_with(mount, |options| options.to_vec()).map(|_| ())
}

/// umount, and mount again on the same device with the options `change`
/// makes of the current ones. Returns the current ones, for putting them
/// back. The current ones are those the harness chose (`dax=`); the
/// defaults /proc/mounts lists besides (attr2, inode64, ...) are left to
/// the kernel, which logs a deprecation for some of them when passed.
pub fn remount_with(mount: &Path, change: impl FnOnce(&[String]) -> Vec<String>) -> Result<Vec<String>, String> {
    unmounted(mount, change, |_| Ok(())).map(|(old, ())| old)
}

/// umount, run `work` on the block device, and mount it again with the
/// options the harness chose (`dax=`), whatever `work` returned.
pub fn while_unmounted<T>(mount: &Path, work: impl FnOnce(&str) -> Result<T, String>) -> Result<T, String> {
    unmounted(mount, |options| options.to_vec(), work).map(|(_, value)| value)
}

/// What [`remount_with`] and [`while_unmounted`] share: the current
/// options, and `work`'s value once the device is mounted again with the
/// options `change` makes of them.
fn unmounted<T>(
    mount: &Path,
    change: impl FnOnce(&[String]) -> Vec<String>,
    work: impl FnOnce(&str) -> Result<T, String>,
) -> Result<(Vec<String>, T), String> {
    let (dev, opts) = mounted(mount)?;
    let m = mount.to_string_lossy();
    let old: Vec<String> = opts.split(',').filter(|o| o.starts_with("dax=")).map(str::to_string).collect();
    let data = change(&old).join(",");
    umount(mount).map_err(|e| format!("umount {m}: {}", errno_text(&e)))?;
    let value = work(&dev);
    calls::mount(&dev, mount, "xfs", &data).map_err(|e| format!("mount {dev} on {m} ({data}): {}", errno_text(&e)))?;
    Ok((old, value?))
}

/// The last `n` lines of what a tool printed, for a failure's reason.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What one xfs_repair call did.
pub struct Repair {
    pub status: Option<i32>,
    /// The seals it named: inode, and what broke the seal (its `sealed
    /// inode N has ...` lines).
    pub named: BTreeMap<u64, String>,
    /// Everything it printed.
    pub text: String,
}

/// Runs the guest's xfs_repair (xfsprogs with the seal) with `args` on
/// `dev`, which must not be mounted.
pub fn xfs_repair(dev: &str, args: &[&str]) -> Result<Repair, String> {
    let (status, text) = run_tool("xfs_repair", args.iter().copied().chain([dev]))?;
    let named = text.lines().filter_map(repair_seal_line).collect();
    Ok(Repair { status, named, text })
}

/// Runs `program` with `args` to its end: its exit code (None when a
/// signal ended it) and everything it printed, stdout then stderr.
pub fn run_tool<S: AsRef<OsStr>>(
    program: &str,
    args: impl IntoIterator<Item = S>,
) -> Result<(Option<i32>, String), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("cannot run {program}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.code(), text))
}

/// `sealed inode 132 has a hole at file blocks 0-199, clearing its seal`:
/// the inode and what it has.
fn repair_seal_line(line: &str) -> Option<(u64, String)> {
    let rest = line.strip_prefix("sealed inode ")?;
    let (ino, rest) = rest.split_once(" has ")?;
    let reason = rest.strip_suffix(", would clear its seal").or_else(|| rest.strip_suffix(", clearing its seal"))?;
    Some((ino.parse().ok()?, reason.to_string()))
}

/// A file on a private tmpfs mount, unmounted on drop.
pub struct TmpfsFile {
    pub dir: PathBuf,
    pub file: File,
}

impl TmpfsFile {
    pub fn new() -> Result<TmpfsFile, String> {
        let dir = PathBuf::from(format!("/run/seal-conformance-tmpfs.{}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        mount_pseudo(c"tmpfs", &dir).map_err(|e| errno_text(&e))?;
        let file = create(&dir.join("f"), 0x50, SIZE)?;
        Ok(TmpfsFile { dir, file })
    }
}

impl Drop for TmpfsFile {
    fn drop(&mut self) {
        if let Ok(c) = cpath(&self.dir) {
            // SAFETY: valid C string; a lazy detach cannot hurt the caller.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// nr_foll_pin_acquired and nr_foll_pin_released from /proc/vmstat, after
/// folding the per-CPU deltas into the totals.
pub fn pin_counters() -> Result<(u64, u64), String> {
    // Best effort: without it the totals may lag by a per-CPU batch, which
    // the caller's retry loop absorbs.
    let _ = fs::write("/proc/sys/vm/stat_refresh", "1");
    let text = fs::read_to_string("/proc/vmstat").map_err(|e| format!("/proc/vmstat: {e}"))?;
    let field = |name: &str| counter(&text, name).ok_or_else(|| format!("/proc/vmstat has no {name}"));
    Ok((field("nr_foll_pin_acquired")?, field("nr_foll_pin_released")?))
}

/// How long the pins of a ring may outlive IORING_UNREGISTER_BUFFERS.
const PINS_SETTLE: Duration = Duration::from_secs(5);

/// The pin counters once every long-term pin taken so far has been let go,
/// for a case that just released its last one (`what`). Linux 7.3's
/// io_uring drops a registered buffer's pins only when every request that
/// used the buffer has been freed, and a request that an io-wq worker
/// completed is freed by task work after its completion was posted: the
/// pins can outlive IORING_UNREGISTER_BUFFERS by milliseconds (6.12 waited
/// for them). Pins still held after [`PINS_SETTLE`] are an error. Only for
/// cases that pin nothing else meanwhile: the counters are global.
pub fn pins_settled(what: &str) -> Result<(u64, u64), String> {
    let since = Instant::now();
    loop {
        let (acquired, released) = pin_counters()?;
        if acquired == released {
            return Ok((acquired, released));
        }
        if since.elapsed() > PINS_SETTLE {
            return Err(format!(
                "{} pins still held {} s after {what} (nr_foll_pin_acquired {acquired}, released {released})",
                acquired.saturating_sub(released),
                PINS_SETTLE.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The fsdax namespace under a mounted filesystem, as libnvdimm names it
/// (the pfn device bound to nd_pmem, `pfn0.1`), for taking it down and
/// bringing it back as `ndctl disable-namespace` and `enable-namespace` do.
#[derive(Clone)]
pub struct Namespace {
    /// The nd device bound to nd_pmem.
    pub name: String,
    /// Its block device (`/dev/pmem0`) and the filesystem's mount options.
    pub dev: String,
    pub data: String,
}

const ND_PMEM: &str = "/sys/bus/nd/drivers/nd_pmem";

/// The disk a mount is on (`/dev/pmem0`), its directory under /sys/block,
/// and the mount's options.
pub fn mounted_disk(mount: &Path) -> Result<(String, PathBuf, String), String> {
    let (dev, opts) = mounted(mount)?;
    let block = Path::new(&dev).file_name().ok_or_else(|| format!("{dev} names no block device"))?;
    let sys = Path::new("/sys/block").join(block);
    Ok((dev, sys, opts))
}

impl Namespace {
    /// The namespace of what is mounted on `mount`.
    pub fn of(mount: &Path) -> Result<Namespace, String> {
        let (dev, sys, opts) = mounted_disk(mount)?;
        let link = sys.join("device");
        let nd = fs::canonicalize(&link).map_err(|e| format!("{}: {e}", link.display()))?;
        let name = nd.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or("no nd device name")?;
        let data = opts.split(',').filter(|o| o.starts_with("dax=")).collect::<Vec<_>>().join(",");
        Ok(Namespace { name, dev, data })
    }

    /// Unbinds it from nd_pmem: the block device and its pagemap go. The
    /// write returns when the kernel has let the device's memory go.
    pub fn unbind(&self) -> Result<(), String> {
        fs::write(format!("{ND_PMEM}/unbind"), &self.name)
            .map_err(|e| format!("unbind {} from nd_pmem: {e}", self.name))
    }

    /// Starts [`Namespace::unbind`] in a thread of its own: the kernel
    /// blocks it for as long as anything holds a page of the device.
    pub fn unbind_in_background(&self) -> Unbinding {
        let ns = self.clone();
        Unbinding(std::thread::spawn(move || ns.unbind().map(|()| Instant::now())))
    }

    /// Binds it again and waits for its block device to come back.
    pub fn bind(&self) -> Result<(), String> {
        fs::write(format!("{ND_PMEM}/bind"), &self.name).map_err(|e| format!("bind {} to nd_pmem: {e}", self.name))?;
        let since = Instant::now();
        while !Path::new(&self.dev).exists() {
            if since.elapsed() > Duration::from_secs(10) {
                return Err(format!("{} did not come back within 10 s of binding {}", self.dev, self.name));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Mounts its filesystem on `mount` with the options it had.
    pub fn mount(&self, mount: &Path) -> Result<(), String> {
        calls::mount(&self.dev, mount, "xfs", &self.data)
            .map_err(|e| format!("mount {} on {} ({}): {}", self.dev, mount.display(), self.data, errno_text(&e)))
    }
}

/// An unbind running in its own thread ([`Namespace::unbind_in_background`]).
pub struct Unbinding(std::thread::JoinHandle<Result<Instant, String>>);

impl Unbinding {
    /// Whether the unbind has returned.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Waits for the unbind: when it returned, or why it failed.
    pub fn join(self) -> Result<Instant, String> {
        self.0.join().map_err(|_| "the unbind thread panicked".to_string())?
    }

    /// [`Unbinding::join`] if the unbind returns within `limit` of `since`;
    /// `Ok(None)` if it is still waiting then, and its thread, blocked in
    /// the kernel, is left there.
    pub fn join_within(self, since: Instant, limit: Duration) -> Result<Option<Instant>, String> {
        while !self.is_finished() {
            if since.elapsed() > limit {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.join().map(Some)
    }
}

const HUNG_TASK_TIMEOUT: &str = "/proc/sys/kernel/hung_task_timeout_secs";

/// The hung-task detector's limit, changed for a while and put back on drop:
/// a case that expects a task to wait a long time without being reported
/// lowers it, so that a report comes within its own few seconds.
pub struct HungTaskTimeout {
    old: String,
}

impl HungTaskTimeout {
    pub fn set(secs: u64) -> Result<HungTaskTimeout, String> {
        let old = fs::read_to_string(HUNG_TASK_TIMEOUT)
            .map_err(|e| format!("read {HUNG_TASK_TIMEOUT}: {}", errno_text(&e)))?
            .trim()
            .to_string();
        fs::write(HUNG_TASK_TIMEOUT, secs.to_string())
            .map_err(|e| format!("write {secs} to {HUNG_TASK_TIMEOUT}: {}", errno_text(&e)))?;
        Ok(HungTaskTimeout { old })
    }
}

impl Drop for HungTaskTimeout {
    fn drop(&mut self) {
        let _ = fs::write(HUNG_TASK_TIMEOUT, &self.old);
    }
}

/// The write-cache setting of the pmem disk under a mount
/// (`/sys/block/pmemN/dax/write_cache`: 1 when CPU stores may wait in a
/// volatile cache, so that durability needs a cache write-back; 0 when the
/// platform flushes the caches on power loss, as an eADR platform, QEMU's
/// `nvdimm-persistence=cpu`, says), set for a while and put back on drop.
pub struct WriteCache {
    attr: PathBuf,
    old: String,
}

impl WriteCache {
    pub fn set(mount: &Path, on: bool) -> Result<WriteCache, String> {
        let attr = mounted_disk(mount)?.1.join("dax/write_cache");
        let old = fs::read_to_string(&attr)
            .map_err(|e| format!("read {}: {}", attr.display(), errno_text(&e)))?
            .trim()
            .to_string();
        let new = if on { "1" } else { "0" };
        fs::write(&attr, new).map_err(|e| format!("write {new} to {}: {}", attr.display(), errno_text(&e)))?;
        Ok(WriteCache { attr, old })
    }

    /// The setting before [`WriteCache::set`]: the platform's, unless
    /// someone changed it.
    pub fn before(&self) -> &str {
        &self.old
    }
}

impl Drop for WriteCache {
    fn drop(&mut self) {
        let _ = fs::write(&self.attr, &self.old);
    }
}

/// The Soft-RoCE device the workloads register memory with: rxe over a
/// dummy network device of its own.
pub const NETDEV: &str = "dummy0";
pub const IBDEV: &str = "rxe0";
pub const ADDRESS: &str = "10.77.0.1";

/// Creates the Soft-RoCE device (once a boot) and opens it.
pub fn soft_roce() -> Result<dax_seal_rdma::Verbs, String> {
    dax_seal_rdma::link_add(NETDEV, IBDEV, ADDRESS).and_then(|()| dax_seal_rdma::Verbs::open(IBDEV))
}

/// How a child that [`in_child`] ran ended.
pub enum ChildOutcome {
    /// It returned this before the deadline.
    Returned(Result<String, String>),
    /// It was still running at the deadline, and was killed.
    Killed,
}

/// Runs `work` in a forked child and waits up to `deadline` for its
/// result; a child still running then gets SIGKILL. For calls that a
/// kernel bug can keep from returning (a loop that only a fatal signal
/// ends).
pub fn in_child(deadline: Duration, work: impl FnOnce() -> Result<String, String>) -> Result<ChildOutcome, String> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", errno_text(&std::io::Error::last_os_error())));
    }
    // SAFETY: both descriptors are new and owned here.
    let (mut reader, mut writer) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: the child only runs `work`, writes and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", errno_text(&std::io::Error::last_os_error())));
    }
    if pid == 0 {
        drop(reader);
        let (tag, text) = match work() {
            Ok(note) => ('+', note),
            Err(e) => ('-', e),
        };
        let _ = write!(writer, "{tag}{text}");
        // SAFETY: leaves the child without running the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    drop(writer);
    let mut poll = libc::pollfd { fd: fds[0], events: libc::POLLIN, revents: 0 };
    let ms = i32::try_from(deadline.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one pollfd.
    let ready = unsafe { libc::poll(&mut poll, 1, ms) };
    if ready <= 0 {
        // SAFETY: pid is our child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Ok(ChildOutcome::Killed);
    }
    let mut text = String::new();
    let read = reader.read_to_string(&mut text);
    // SAFETY: pid is our child, which exits once it has written.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    read.map_err(|e| format!("reading the child's result: {e}"))?;
    match text.split_at_checked(1) {
        Some(("+", note)) => Ok(ChildOutcome::Returned(Ok(note.to_string()))),
        Some(("-", e)) => Ok(ChildOutcome::Returned(Err(e.to_string()))),
        _ => Err(format!("the child ended without a result ({text:?})")),
    }
}

/// The calling thread kept on the CPU it ran on when made, until dropped,
/// which gives it back the CPUs it had.
struct OnThisCpu {
    cpu: usize,
    before: libc::cpu_set_t,
}

impl OnThisCpu {
    fn new() -> Result<Self, String> {
        // SAFETY: a zeroed cpu_set_t is a valid (empty) set to fill.
        let mut before: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `before` is a cpu_set_t of the size given; 0 is this thread.
        if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut before) } != 0 {
            return Err(format!("sched_getaffinity: {}", errno_text(&io::Error::last_os_error())));
        }
        // SAFETY: no arguments; returns the CPU or -1.
        let cpu = unsafe { libc::sched_getcpu() };
        let cpu =
            usize::try_from(cpu).map_err(|_| format!("sched_getcpu: {}", errno_text(&io::Error::last_os_error())))?;
        stay_on_cpu(cpu)?;
        Ok(OnThisCpu { cpu, before })
    }
}

impl Drop for OnThisCpu {
    fn drop(&mut self) {
        // SAFETY: as in new(); the set is the one sched_getaffinity gave.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.before) };
    }
}

/// Keeps the calling thread on `cpu`.
fn stay_on_cpu(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is an empty set, and CPU_SET writes
    // inside it (a CPU the kernel named is below CPU_SETSIZE).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given; 0 is this thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(format!("sched_setaffinity to CPU {cpu}: {}", errno_text(&io::Error::last_os_error())));
    }
    Ok(())
}

/// How long releasing a large pinned range took, and the longest a task
/// spinning on the same CPU waited meanwhile.
pub struct Release {
    pub took: Duration,
    pub longest: Duration,
    pub cpu: usize,
}

impl Release {
    /// `what` (the release, and what it released) with the figures; an
    /// error when the release kept the CPU for more than a quarter of the
    /// call: on a kernel without preemption (6.12's configuration here)
    /// only the release's own scheduling points let the spinner run, and a
    /// tick (4 ms) is far shorter than the calls these cases time.
    pub fn judge(&self, what: &str) -> Result<String, String> {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let text = format!(
            "{what} in {:.1} ms; the longest the spinner on CPU {} waited meanwhile: {:.1} ms",
            ms(self.took),
            self.cpu,
            ms(self.longest)
        );
        if self.longest * 4 > self.took {
            return Err(format!("{text}: the release kept the CPU without a scheduling point"));
        }
        Ok(text)
    }
}

/// Runs `release` on this thread's CPU while a thread kept on the same CPU
/// spins, noting every gap between its clock readings; gives `release`'s
/// result and the longest gap within the call. The thread gets its CPUs
/// back afterwards.
pub fn release_beside_spinner<T>(release: impl FnOnce() -> T) -> Result<(T, Release), String> {
    let here = OnThisCpu::new()?;
    let cpu = here.cpu;
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || stay_on_cpu(cpu).map(|()| gaps_until(&stop)))
    };
    // The spinner takes the CPU; this thread gets it back when it wakes.
    thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    let r = release();
    let end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let gaps = spinner.join().map_err(|_| "the spinner thread panicked".to_string())??;
    let longest =
        gaps.iter().map(|&(from, to)| to.min(end).saturating_duration_since(from.max(start))).max().unwrap_or_default();
    Ok((r, Release { took: end - start, longest, cpu }))
}

/// Spins until `stop`, noting each gap longer than 0.5 ms between two of
/// its clock readings (when something else had the CPU).
fn gaps_until(stop: &AtomicBool) -> Vec<(Instant, Instant)> {
    let mut gaps = Vec::with_capacity(1 << 16);
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now - last > Duration::from_micros(500) && gaps.len() < gaps.capacity() {
            gaps.push((last, now));
        }
        last = now;
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_lines_give_the_inode_and_reason() {
        assert_eq!(
            repair_seal_line("sealed inode 132 has a hole at file blocks 0-199, clearing its seal"),
            Some((132, "a hole at file blocks 0-199".into()))
        );
        assert_eq!(
            repair_seal_line("sealed inode 7 has shared blocks, would clear its seal"),
            Some((7, "shared blocks".into()))
        );
        assert_eq!(repair_seal_line("sealed inode x has a hole, clearing its seal"), None);
        assert_eq!(repair_seal_line("Phase 7 - verify link counts..."), None);
    }

    #[test]
    fn in_child_reports_what_the_child_returned_or_that_it_was_killed() {
        let returned = |r: Result<ChildOutcome, String>| match r {
            Ok(ChildOutcome::Returned(v)) => v,
            Ok(ChildOutcome::Killed) => panic!("killed"),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(returned(in_child(Duration::from_secs(30), || Ok("done".into()))), Ok("done".to_string()));
        assert_eq!(returned(in_child(Duration::from_secs(30), || Err("refused".into()))), Err("refused".to_string()));
        let slow = in_child(Duration::from_millis(200), || {
            std::thread::sleep(Duration::from_secs(30));
            Ok("late".into())
        });
        assert!(matches!(slow, Ok(ChildOutcome::Killed)));
    }
}
