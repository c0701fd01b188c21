//! Thin, checked wrappers over the system calls the workloads make.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// `STATX_ATTR_DAX` from include/uapi/linux/stat.h.
pub const STATX_ATTR_DAX: u64 = 0x0020_0000;

/// A path as a C string for the raw system calls.
pub fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("NUL in {}", path.display())))
}

/// mount(2): `source` on `at` as `fstype` with the options in `data`. The
/// error is the system call's own (its errno kept); callers say what they
/// were mounting.
pub fn mount(source: &str, at: &Path, fstype: &str, data: &str) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("NUL in {s:?}")));
    let (source, target, fstype, data) = (c(source)?, cpath(at)?, c(fstype)?, c(data)?);
    // SAFETY: NUL-terminated strings that outlive the call.
    if unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts a filesystem that needs no device or options (tmpfs, tracefs,
/// cgroup2) on `at`; the error says what was mounted where.
pub fn mount_pseudo(fstype: &CStr, at: &Path) -> io::Result<()> {
    let name = fstype.to_string_lossy();
    mount(&name, at, &name, "").map_err(|e| io::Error::new(e.kind(), format!("mount -t {name} {}: {e}", at.display())))
}

/// Unmounts what is mounted on `at`.
pub fn umount(at: &Path) -> io::Result<()> {
    let target = cpath(at)?;
    // SAFETY: a NUL-terminated path that outlives the call.
    if unsafe { libc::umount(target.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The number after `key` on its line of a `key value` file such as
/// /proc/vmstat or a cgroup's memory.events.
pub fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The device and options of what is mounted on `mount`, from /proc/mounts.
pub fn mounted(mount: &Path) -> Result<(String, String), String> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| format!("/proc/mounts: {e}"))?;
    let m = mount.to_string_lossy();
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && f[1] == m)
        .map(|f| (f[0].to_string(), f[3].to_string()))
        .ok_or_else(|| format!("nothing is mounted on {m}"))
}

/// The page frame numbers behind `pages` mapped pages of this process from
/// `addr` on, from one read of /proc/self/pagemap (root only: others read
/// 0); every page must be present.
pub fn pfns_of(addr: *const u8, pages: usize) -> Result<Vec<u64>, String> {
    use std::os::unix::fs::FileExt;
    let first = addr as u64 / 4096;
    let file = std::fs::File::open("/proc/self/pagemap").map_err(|e| format!("/proc/self/pagemap: {e}"))?;
    let mut entries = vec![0u8; pages * 8];
    file.read_exact_at(&mut entries, first * 8)
        .map_err(|e| format!("/proc/self/pagemap at page {first:#x}, {pages} pages: {e}"))?;
    let mut pfns = Vec::with_capacity(pages);
    for (i, entry) in entries.chunks_exact(8).enumerate() {
        let entry = u64::from_le_bytes(entry.try_into().map_err(|_| "a short pagemap entry".to_string())?);
        let pfn = entry & ((1 << 55) - 1);
        if entry >> 63 == 0 || pfn == 0 {
            let page = first + i as u64;
            return Err(format!("/proc/self/pagemap: page {page:#x} is not present (entry {entry:#x})"));
        }
        pfns.push(pfn);
    }
    Ok(pfns)
}

/// Every record in the kernel log so far (/dev/kmsg, read without
/// blocking), one string each; a record overwritten while reading is
/// skipped.
pub fn kmsg_records() -> Result<Vec<String>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .map_err(|e| format!("/dev/kmsg: {e}"))?;
    let mut records = Vec::new();
    let mut record = vec![0u8; 8192];
    loop {
        match kmsg.read(&mut record) {
            Ok(0) => break,
            Ok(n) => records.push(String::from_utf8_lossy(&record[..n]).into_owned()),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) => return Err(format!("reading /dev/kmsg: {e}")),
        }
    }
    Ok(records)
}

/// How many records of the kernel log so far contain `needle`.
pub fn kmsg_count(needle: &str) -> Result<usize, String> {
    Ok(kmsg_records()?.iter().filter(|r| r.contains(needle)).count())
}

pub fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!("{e} (errno {code})"),
        None => e.to_string(),
    }
}

/// What a call returned, as a case detail says it: `0` or the errno.
pub fn result_text<T>(r: &io::Result<T>) -> String {
    r.as_ref().map_or_else(errno_text, |_| "0".into())
}

/// Bytes an unprivileged user may still allocate on the filesystem of
/// `path` (statvfs f_bavail).
pub fn free_bytes(path: &Path) -> Result<u64, String> {
    let c = cpath(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: zeroed statvfs is a valid out buffer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!("statvfs {}: {}", path.display(), errno_text(&io::Error::last_os_error())));
    }
    Ok(st.f_bavail * st.f_frsize)
}

/// statx(2) of a path: (stx_attributes, stx_attributes_mask).
pub fn statx_attributes(path: &Path) -> Result<(u64, u64), String> {
    let c = cpath(path).map_err(|e| e.to_string())?;
    let stx = statx_at(libc::AT_FDCWD, &c, 0).map_err(|e| format!("statx {}: {}", path.display(), errno_text(&e)))?;
    Ok((stx.stx_attributes, stx.stx_attributes_mask))
}

/// The raw statx(2) call both wrappers make.
fn statx_at(dirfd: i32, path: &std::ffi::CStr, flags: i32) -> io::Result<libc::statx> {
    // SAFETY: an all-zero statx is a valid value of the plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a valid out pointer to a statx buffer.
    if unsafe { libc::statx(dirfd, path.as_ptr(), flags, libc::STATX_BASIC_STATS, &mut stx) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stx)
}

/// What statx(2) says about an open file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Statx {
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub attributes: u64,
    /// The attributes this kernel and filesystem can report at all.
    pub attributes_mask: u64,
}

impl Statx {
    /// Whether `attr` is set; `None` when the kernel cannot report it.
    pub fn attribute(&self, attr: u64) -> Option<bool> {
        (self.attributes_mask & attr != 0).then_some(self.attributes & attr != 0)
    }
}

/// statx(2) of an open file (AT_EMPTY_PATH).
pub fn statx(file: &File) -> io::Result<Statx> {
    let stx = statx_at(file.as_raw_fd(), c"", libc::AT_EMPTY_PATH)?;
    Ok(Statx {
        size: stx.stx_size,
        blocks: stx.stx_blocks,
        attributes: stx.stx_attributes,
        attributes_mask: stx.stx_attributes_mask,
    })
}

/// A writable mapping (of a file, shared; or anonymous), unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// mmap(MAP_SHARED_VALIDATE | MAP_SYNC): only DAX files accept it.
    pub fn shared_sync(file: &File, len: usize) -> io::Result<Mapping> {
        Mapping::new(file, len, libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC)
    }

    /// mmap(MAP_SHARED_VALIDATE | MAP_SYNC) at the fixed address `addr`,
    /// EEXIST if something is mapped there. MAP_SHARED_VALIDATE refuses
    /// MAP_FIXED_NOREPLACE (EOPNOTSUPP), so the range is first reserved
    /// with anonymous memory, which the file mapping then replaces.
    pub fn shared_sync_at(file: &File, len: usize, addr: u64) -> io::Result<Mapping> {
        let reserved = Mapping::anonymous_at(len, addr)?;
        let flags = libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC | libc::MAP_FIXED;
        let mapping = Mapping::map_at(addr as *mut libc::c_void, file.as_raw_fd(), len, flags)?;
        // The file mapping now owns the range.
        std::mem::forget(reserved);
        Ok(mapping)
    }

    /// Anonymous memory at the fixed address `addr` (MAP_FIXED_NOREPLACE).
    pub fn anonymous_at(len: usize, addr: u64) -> io::Result<Mapping> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
        Mapping::map_at(addr as *mut libc::c_void, -1, len, flags)
    }

    /// mmap(MAP_SHARED): any file, DAX or page cache.
    pub fn shared(file: &File, len: usize) -> io::Result<Mapping> {
        Mapping::new(file, len, libc::MAP_SHARED)
    }

    /// Private anonymous memory, page aligned: O_DIRECT buffers, and the
    /// anonymous side of a comparison.
    pub fn anonymous(len: usize) -> io::Result<Mapping> {
        Mapping::map(-1, len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS)
    }

    fn new(file: &File, len: usize, flags: i32) -> io::Result<Mapping> {
        Mapping::map(file.as_raw_fd(), len, flags)
    }

    /// A shared mapping that can only be read: what a file opened
    /// read-only allows.
    pub fn shared_read_only(file: &File, len: usize) -> io::Result<Mapping> {
        Mapping::map_prot(std::ptr::null_mut(), file.as_raw_fd(), len, libc::MAP_SHARED, libc::PROT_READ)
    }

    fn map(fd: i32, len: usize, flags: i32) -> io::Result<Mapping> {
        Mapping::map_at(std::ptr::null_mut(), fd, len, flags)
    }

    fn map_at(addr: *mut libc::c_void, fd: i32, len: usize, flags: i32) -> io::Result<Mapping> {
        Mapping::map_prot(addr, fd, len, flags, libc::PROT_READ | libc::PROT_WRITE)
    }

    fn map_prot(addr: *mut libc::c_void, fd: i32, len: usize, flags: i32, prot: i32) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping (of a valid fd, or anonymous); where
        // `addr` is given, MAP_FIXED_NOREPLACE never replaces a mapping.
        let ptr = unsafe { libc::mmap(addr, len, prot, flags, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if !addr.is_null() && ptr != addr {
            // A kernel without MAP_FIXED_NOREPLACE treats the address as a hint.
            // SAFETY: the mapping just made, unmapped once.
            unsafe { libc::munmap(ptr, len) };
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    /// Reads the first byte of every 4 KiB page, so that each page has
    /// taken its read fault before the caller goes on.
    pub fn read_every_page(&self) {
        for offset in (0..self.len).step_by(4096) {
            // SAFETY: offset < len, inside the live mapping owned by self.
            unsafe { std::ptr::read_volatile(self.ptr.add(offset)) };
        }
    }

    /// The mapping's bytes, for reading (a read-only mapping has no other
    /// use).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr/len describe a live mapping owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr/len describe a live mapping owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// msync(MS_SYNC) of `len` bytes from `offset` (page aligned).
    pub fn msync(&self, offset: usize, len: usize) -> io::Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: the range lies inside the mapping owned by self.
        if unsafe { libc::msync(self.ptr.add(offset).cast(), len, libc::MS_SYNC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

// SAFETY: a Mapping owns its region outright; moving it to another thread
// moves that ownership, and every access goes through `&mut self`.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region we mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::counter;

    #[test]
    fn counters_by_key_and_not_by_prefix() {
        let text = "pswpin 12\npswpout 34\nnr_foll_pin_acquired 5\noom_kill 0\n";
        assert_eq!(counter(text, "pswpout"), Some(34));
        assert_eq!(counter(text, "oom_kill"), Some(0));
        assert_eq!(counter(text, "pswp"), None);
        assert_eq!(counter(text, "nr_foll_pin_released"), None);
    }
}
