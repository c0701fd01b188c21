//! The seal contract's page-cache rows, on the NVDIMM mounted `dax=never`:
//! a sealed swapfile, and long-term pins of page-cache pages (still EFAULT,
//! as in 6.12). Part of `seal-conformance`, which runs them after its
//! table; the directory they run in comes from
//! [`crate::workdir::fresh_page_cache`], the swapfile helpers from
//! [`crate::swap`].

use std::fs::{self, File};
use std::io;
use std::path::Path;

use crate::calls::{errno_text, Mapping};
use crate::fixture::{create, is_sealed};
use crate::seal::{self, Extent};
use crate::swap::{swapoff, swapon, write_swap_header, SWAP_SIZE};

const PAGE: u64 = 4096;

fn map_of(f: &File) -> Result<Vec<Extent>, String> {
    seal::fiemap(f).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))
}

fn expect_errno(what: &str, r: io::Result<()>, errno: i32) -> Result<(), String> {
    match r {
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        Err(e) => Err(format!("{what}: {}, expected errno {errno}", errno_text(&e))),
        Ok(()) => Err(format!("{what} succeeded, expected errno {errno}")),
    }
}

/// An active swapfile: swapped off by `off`, or when dropped on an early
/// return, so a failed case never leaves swap on.
struct ActiveSwap<'a> {
    path: &'a Path,
    on: bool,
}

impl<'a> ActiveSwap<'a> {
    fn on(path: &'a Path) -> io::Result<ActiveSwap<'a>> {
        swapon(path)?;
        Ok(ActiveSwap { path, on: true })
    }

    fn off(mut self) -> io::Result<()> {
        self.on = false;
        swapoff(self.path)
    }
}

impl Drop for ActiveSwap<'_> {
    fn drop(&mut self) {
        if self.on {
            let _ = swapoff(self.path);
        }
    }
}

/// The contract's swapon row: a sealed file becomes a swapfile, and while
/// it is active neither SEAL nor UNSEAL applies (ETXTBSY); swapon and
/// swapoff leave the map alone and the seal survives swapoff.
pub(super) fn sealed_swapfile(dir: &Path) -> Result<String, String> {
    let path = dir.join("swap-sealed");
    let f = create(&path, 0x5e, SWAP_SIZE)?;
    write_swap_header(&f, SWAP_SIZE).map_err(|e| format!("swap header: {}", errno_text(&e)))?;
    seal::seal(&f).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let sealed_map = map_of(&f)?;
    let active = ActiveSwap::on(&path).map_err(|e| format!("swapon of the sealed file: {}", errno_text(&e)))?;
    let during = map_of(&f)?;
    expect_errno("SEAL of the active swapfile", seal::seal(&f), libc::ETXTBSY)?;
    expect_errno("UNSEAL of the active swapfile", seal::unseal(&f), libc::ETXTBSY)?;
    active.off().map_err(|e| format!("swapoff: {}", errno_text(&e)))?;
    let after = map_of(&f)?;
    if during != sealed_map || after != sealed_map {
        return Err(format!("the map moved: sealed {sealed_map:?}, active {during:?}, after swapoff {after:?}"));
    }
    let still_sealed = is_sealed(&path)?;
    let truncate = f.set_len(PAGE);
    seal::unseal(&f).map_err(|e| format!("UNSEAL after swapoff: {}", errno_text(&e)))?;
    let _ = fs::remove_file(&path);
    if !still_sealed {
        return Err("the seal was gone after swapoff".into());
    }
    expect_errno("ftruncate of the sealed file after swapoff", truncate, libc::ETXTBSY)?;
    Ok(format!(
        "swapon of the sealed {SWAP_SIZE}-byte file: 0; SEAL and UNSEAL while active: ETXTBSY; \
         map unchanged through swapon and swapoff ({} extents); still sealed after swapoff",
        sealed_map.len()
    ))
}

/// 6.12's own swapfile rule, on both kernels: an active swapfile refuses
/// every fallocate mode with ETXTBSY.
pub(super) fn swapfile_control(dir: &Path) -> Result<String, String> {
    let path = dir.join("swap-control");
    let f = create(&path, 0x5e, SWAP_SIZE)?;
    write_swap_header(&f, SWAP_SIZE).map_err(|e| format!("swap header: {}", errno_text(&e)))?;
    let active = ActiveSwap::on(&path).map_err(|e| format!("swapon: {}", errno_text(&e)))?;
    let punch = seal::fallocate(&f, seal::FALLOC_FL_PUNCH_HOLE | seal::FALLOC_FL_KEEP_SIZE, PAGE, PAGE);
    let off = active.off();
    let _ = fs::remove_file(&path);
    expect_errno("punching the active swapfile", punch, libc::ETXTBSY)?;
    off.map_err(|e| format!("swapoff: {}", errno_text(&e)))?;
    Ok("swapon 0; PUNCH_HOLE while active: ETXTBSY; swapoff 0".into())
}

/// Long-term write pins of page-cache pages stay refused (EFAULT), sealed
/// or not: the seal is about the block map, not about writeback.
pub(super) fn page_cache_pin(dir: &Path, sealed: bool) -> Result<String, String> {
    let path = dir.join(if sealed { "pin-sealed" } else { "pin-control" });
    let f = create(&path, 0x5f, 64 * 1024)?;
    if sealed {
        seal::seal(&f).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    }
    let ring = seal::Ring::new().map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
    let mut map = Mapping::shared(&f, 64 * 1024).map_err(|e| format!("mmap: {}", errno_text(&e)))?;
    let r = ring.register(map.as_mut_ptr(), 64 * 1024);
    if r.is_ok() {
        let _ = ring.unregister();
    }
    drop(map);
    let _ = seal::unseal(&f);
    let _ = fs::remove_file(&path);
    expect_errno("REGISTER_BUFFERS on a MAP_SHARED page-cache mapping", r, libc::EFAULT)?;
    Ok(format!("REGISTER_BUFFERS on a {} page-cache file: EFAULT", if sealed { "sealed" } else { "unsealed" }))
}
