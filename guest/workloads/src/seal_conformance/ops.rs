//! The operations of the table, one function per row: each does the
//! operation on a [`Target`] and says what a success must have done.

use super::*;

pub(super) fn op_read(t: &Target) -> io::Result<Want> {
    let mut buf = vec![0u8; SIZE as usize];
    t.file.read_exact_at(&mut buf, 0)?;
    if buf != pattern(0x5a, SIZE) {
        return Err(io::Error::other("read returned other bytes than were written"));
    }
    Ok(Want::Same)
}

/// A block-aligned buffer for O_DIRECT.
pub(super) struct Aligned {
    ptr: *mut u8,
    layout: Layout,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = Layout::from_size_align(len, BLOCK as usize).unwrap_or(Layout::new::<u8>());
        // SAFETY: non-zero size layout.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        Aligned { ptr, layout }
    }
    fn slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr/layout describe our allocation.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in new().
        unsafe { alloc::dealloc(self.ptr, self.layout) };
    }
}

pub(super) fn op_read_odirect(t: &Target) -> io::Result<Want> {
    let f = open_direct(&t.path, false)?;
    let mut buf = Aligned::new(4 * BLOCK as usize);
    f.read_exact_at(buf.slice(), BLOCK)?;
    if buf.slice()[..] != pattern(0x5a, SIZE)[BLOCK as usize..5 * BLOCK as usize] {
        return Err(io::Error::other("O_DIRECT read returned other bytes than were written"));
    }
    Ok(Want::Same)
}

pub(super) fn op_fiemap_seek(t: &Target) -> io::Result<Want> {
    let a = seal::fiemap(&t.file)?;
    let b = seal::fiemap(&t.file)?;
    if a != b || a.is_empty() {
        return Err(io::Error::other(format!("FIEMAP unstable or empty: {a:?} then {b:?}")));
    }
    let data = seal::seek(&t.file, 0, libc::SEEK_DATA)?;
    let hole = seal::seek(&t.file, 0, libc::SEEK_HOLE)?;
    if data != 0 || hole != SIZE {
        return Err(io::Error::other(format!("SEEK_DATA {data}, SEEK_HOLE {hole}; expected 0 and {SIZE}")));
    }
    Ok(Want::Same)
}

pub(super) fn op_overwrite_pwrite(t: &Target) -> io::Result<Want> {
    let data = pattern(0x31, 2 * BLOCK);
    t.file.write_all_at(&data, BLOCK + 100)?;
    Ok(Want::Bytes(BLOCK + 100, data))
}

pub(super) fn op_overwrite_odirect(t: &Target) -> io::Result<Want> {
    let f = open_direct(&t.path, true)?;
    let data = pattern(0x32, 2 * BLOCK);
    let mut buf = Aligned::new(data.len());
    buf.slice().copy_from_slice(&data);
    f.write_all_at(buf.slice(), 4 * BLOCK)?;
    Ok(Want::Bytes(4 * BLOCK, data))
}

pub(super) fn op_overwrite_mmap(t: &Target) -> io::Result<Want> {
    let data = pattern(0x33, BLOCK);
    let mut map = crate::fixture::shared_map(&t.file, SIZE as usize)?;
    map.as_mut_slice()[(8 * BLOCK) as usize..(9 * BLOCK) as usize].copy_from_slice(&data);
    drop(map);
    Ok(Want::Bytes(8 * BLOCK, data))
}

pub(super) fn op_write_extending(t: &Target) -> io::Result<Want> {
    let data = pattern(0x34, 200);
    let n = t.file.write_at(&data, SIZE - 100)?;
    if n != data.len() {
        return Err(io::Error::other(format!("short write of {n} bytes")));
    }
    Ok(Want::Bytes(SIZE - 100, data))
}

pub(super) fn op_write_append(t: &Target) -> io::Result<Want> {
    let mut f = OpenOptions::new().append(true).open(&t.path)?;
    let data = pattern(0x35, 100);
    f.write_all(&data)?;
    Ok(Want::Bytes(SIZE, data))
}

pub(super) fn op_copy_inside(t: &Target) -> io::Result<Want> {
    let src = t.open_helper()?;
    let n = seal::copy_file_range(&src, 0, &t.file, 4 * BLOCK, BLOCK as usize)?;
    if n != BLOCK as usize {
        return Err(io::Error::other(format!("copied {n} of {BLOCK} bytes")));
    }
    Ok(Want::Bytes(4 * BLOCK, pattern(0xa7, BLOCK)))
}

pub(super) fn op_copy_extending(t: &Target) -> io::Result<Want> {
    let src = t.open_helper()?;
    let n = seal::copy_file_range(&src, 0, &t.file, SIZE - BLOCK / 2, BLOCK as usize)?;
    if n != BLOCK as usize {
        return Err(io::Error::other(format!("copied {n} of {BLOCK} bytes")));
    }
    Ok(Want::Bytes(SIZE - BLOCK / 2, pattern(0xa7, BLOCK)))
}

pub(super) fn op_ftruncate_shrink(t: &Target) -> io::Result<Want> {
    t.file.set_len(SIZE / 2).map(|()| Want::Size(SIZE / 2, SIZE))
}

pub(super) fn op_ftruncate_grow(t: &Target) -> io::Result<Want> {
    t.file.set_len(SIZE * 2).map(|()| Want::Size(SIZE * 2, SIZE))
}

pub(super) fn op_ftruncate_same(t: &Target) -> io::Result<Want> {
    t.file.set_len(SIZE).map(|()| Want::Size(SIZE, SIZE))
}

pub(super) fn op_truncate_path(t: &Target) -> io::Result<Want> {
    seal::truncate_path(&t.path, BLOCK).map(|()| Want::Size(BLOCK, SIZE))
}

pub(super) fn op_open_trunc(t: &Target) -> io::Result<Want> {
    OpenOptions::new().write(true).truncate(true).open(&t.path).map(|_| Want::Size(0, 0))
}

pub(super) fn op_falloc_allocate(t: &Target) -> io::Result<Want> {
    seal::fallocate(&t.file, 0, SIZE, 16 * BLOCK).map(|()| Want::Size(SIZE + 16 * BLOCK, SIZE))
}

pub(super) fn op_falloc_keep_size(t: &Target) -> io::Result<Want> {
    seal::fallocate(&t.file, seal::FALLOC_FL_KEEP_SIZE, SIZE, 16 * BLOCK).map(|()| Want::Same)
}

pub(super) fn op_falloc_punch(t: &Target) -> io::Result<Want> {
    seal::fallocate(&t.file, seal::FALLOC_FL_PUNCH_HOLE | seal::FALLOC_FL_KEEP_SIZE, BLOCK, BLOCK)
        .map(|()| Want::Bytes(BLOCK, vec![0; BLOCK as usize]))
}

pub(super) fn op_falloc_zero(t: &Target) -> io::Result<Want> {
    seal::fallocate(&t.file, seal::FALLOC_FL_ZERO_RANGE, BLOCK, BLOCK)
        .map(|()| Want::Bytes(BLOCK, vec![0; BLOCK as usize]))
}

pub(super) fn op_falloc_collapse(t: &Target) -> io::Result<Want> {
    seal::fallocate(&t.file, seal::FALLOC_FL_COLLAPSE_RANGE, 60 * BLOCK, BLOCK)
        .map(|()| Want::Size(SIZE - BLOCK, 60 * BLOCK))
}

pub(super) fn op_falloc_insert(t: &Target) -> io::Result<Want> {
    seal::fallocate(&t.file, seal::FALLOC_FL_INSERT_RANGE, 60 * BLOCK, BLOCK)
        .map(|()| Want::Size(SIZE + BLOCK, 60 * BLOCK))
}

pub(super) fn op_falloc_unshare(t: &Target) -> io::Result<Want> {
    seal::fallocate(&t.file, seal::FALLOC_FL_UNSHARE_RANGE, 0, SIZE).map(|()| Want::Same)
}

pub(super) fn op_ficlone_into(t: &Target) -> io::Result<Want> {
    let src = t.open_helper()?;
    seal::ficlone(&t.file, &src).map(|()| Want::Bytes(0, pattern(0xa7, SIZE)))
}

pub(super) fn op_ficlone_from(t: &Target) -> io::Result<Want> {
    let dest = t.open_helper()?;
    seal::ficlone(&dest, &t.file)?;
    let mut buf = vec![0u8; SIZE as usize];
    dest.read_exact_at(&mut buf, 0)?;
    if buf != pattern(0x5a, SIZE) {
        return Err(io::Error::other("the clone does not read as the source"));
    }
    Ok(Want::Same)
}

pub(super) fn op_ficlonerange_into(t: &Target) -> io::Result<Want> {
    let src = t.open_helper()?;
    seal::ficlonerange(&t.file, 16 * BLOCK, &src, 0, 16 * BLOCK)
        .map(|()| Want::Bytes(16 * BLOCK, pattern(0xa7, 16 * BLOCK)))
}

/// Makes the helper a byte-for-byte copy of the target, for dedupe.
pub(super) fn same_helper(t: &Target) -> io::Result<File> {
    let h = t.open_helper()?;
    h.write_all_at(&pattern(0x5a, SIZE), 0)?;
    h.sync_all()?;
    Ok(h)
}

pub(super) fn op_dedupe_into(t: &Target) -> io::Result<Want> {
    let h = same_helper(t)?;
    seal::dedupe(&h, &t.file, 0, SIZE).map(|_| Want::Same)
}

pub(super) fn op_dedupe_from(t: &Target) -> io::Result<Want> {
    let h = same_helper(t)?;
    seal::dedupe(&t.file, &h, 0, SIZE).map(|_| Want::Same)
}

/// The sealed (or control) file as the target: it gets the helper's blocks.
pub(super) fn op_swapext_target(t: &Target) -> io::Result<Want> {
    let h = t.open_helper()?;
    seal::swapext(&t.file, &h).map(|()| Want::Bytes(0, pattern(0xa7, SIZE)))
}

/// The sealed (or control) file as the temporary file: it gets the
/// helper's blocks too, from the other side.
pub(super) fn op_swapext_tmp(t: &Target) -> io::Result<Want> {
    let h = t.open_helper()?;
    seal::swapext(&h, &t.file).map(|()| Want::Bytes(0, pattern(0xa7, SIZE)))
}

pub(super) fn op_exchange_range(t: &Target) -> io::Result<Want> {
    let h = t.open_helper()?;
    seal::exchange_range(&t.file, &h, SIZE).map(|()| Want::Bytes(0, pattern(0xa7, SIZE)))
}

/// XFS_IOC_EXCHANGE_RANGE needs the exchange-range feature, which the
/// guest's mkfs.xfs (xfsprogs 6.13) sets; a filesystem made by an older
/// mkfs.xfs (Debian 12's 6.1 cannot) skips the row.
pub(super) fn probe_exchange_range(dir: &Path) -> Result<(), String> {
    let (a, b) = (dir.join("probe-xchg.1"), dir.join("probe-xchg.2"));
    let r = create(&a, 1, BLOCK).and_then(|fa| {
        let fb = create(&b, 2, BLOCK)?;
        match seal::exchange_range(&fb, &fa, BLOCK) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOTTY)) => Err(format!(
                "this filesystem has no exchange-range support ({}); mkfs.xfs 6.10 or later sets it",
                errno_text(&e)
            )),
            _ => Ok(()),
        }
    });
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
    r
}

/// Online repair rebuilding the data fork from the reverse-mapping btree:
/// the same mappings come back, so the file reads the same.
pub(super) fn op_rebuild_data_fork(t: &Target) -> io::Result<Want> {
    seal::rebuild_data_fork(&t.file).map(|()| Want::Same)
}

pub(super) fn op_unlink(t: &Target) -> io::Result<Want> {
    fs::remove_file(&t.path).map(|()| Want::Gone)
}

pub(super) fn op_rename_over(t: &Target) -> io::Result<Want> {
    fs::rename(&t.helper, &t.path).map(|()| Want::Gone)
}

pub(super) fn op_rename_itself(t: &Target) -> io::Result<Want> {
    let away = t.path.with_extension("renamed");
    fs::rename(&t.path, &away)?;
    fs::rename(&away, &t.path)?;
    Ok(Want::Same)
}

pub(super) fn op_fssetxattr_dax(t: &Target) -> io::Result<Want> {
    let before = seal::fsgetxattr(&t.file)?;
    let mut fa = before;
    fa.xflags ^= seal::FS_XFLAG_DAX;
    seal::fssetxattr(&t.file, &fa)?;
    let after = seal::fsgetxattr(&t.file)?;
    if (after.xflags ^ before.xflags) != seal::FS_XFLAG_DAX {
        return Err(io::Error::other(format!(
            "xflags {:#x} -> {:#x}: expected only DAX to flip",
            before.xflags, after.xflags
        )));
    }
    // Put it back: a later inode reload must not switch the file off DAX.
    seal::fssetxattr(&t.file, &before)?;
    Ok(Want::Same)
}
