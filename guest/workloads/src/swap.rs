//! Swapfiles: the size every workload's swapfile has, the header mkswap
//! would write, swapon and swapoff. Used by the cases that turn a file into
//! swap (seal-conformance, swap-pressure, cli) and by [`crate::workdir`],
//! which swaps off what an earlier boot left on.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::calls::cpath;

const PAGE: u64 = 4096;
/// The swapfile: 4 MiB, enough pages for swapon to accept it.
pub const SWAP_SIZE: u64 = 4 << 20;

/// Writes a version-1 Linux swap header (what mkswap writes): `info` at
/// byte 1024, the SWAPSPACE2 magic in the last ten bytes of page 0.
pub fn write_swap_header(f: &File, len: u64) -> io::Result<()> {
    let mut page = vec![0u8; PAGE as usize];
    let last_page = (len / PAGE - 1) as u32;
    page[1024..1028].copy_from_slice(&1u32.to_ne_bytes()); // version
    page[1028..1032].copy_from_slice(&last_page.to_ne_bytes());
    // nr_badpages 0; uuid and label left zero.
    page[PAGE as usize - 10..].copy_from_slice(b"SWAPSPACE2");
    f.write_all_at(&page, 0)?;
    f.sync_all()
}

pub fn swapon(path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: a valid C path; no flags.
    if unsafe { libc::swapon(c.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn swapoff(path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: a valid C path.
    if unsafe { libc::swapoff(c.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
