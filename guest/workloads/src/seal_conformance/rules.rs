//! The seal's own rules: normalisation, idempotence, visibility, the
//! statx mask, privilege, argument checks, and UNSEAL of a mapped file.

use super::*;

pub(super) fn case_normalise(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("normalise");
        let other_path = env.path("normalise.other");
        let file = create(&path, 0x41, SIZE)?;
        let other = create(&other_path, 0x42, SIZE)?;
        let e = |what: &str, err: io::Error| format!("{what}: {}", errno_text(&err));
        // A hole, an unwritten range and a range shared with another file.
        seal::fallocate(&file, seal::FALLOC_FL_PUNCH_HOLE | seal::FALLOC_FL_KEEP_SIZE, 4 * BLOCK, 4 * BLOCK)
            .map_err(|x| e("punch", x))?;
        seal::fallocate(&file, seal::FALLOC_FL_ZERO_RANGE, 16 * BLOCK, 4 * BLOCK).map_err(|x| e("zero", x))?;
        seal::ficlonerange(&file, 32 * BLOCK, &other, 0, 8 * BLOCK).map_err(|x| e("FICLONERANGE", x))?;
        let map = seal::fiemap(&file).map_err(|x| e("FIEMAP", x))?;
        let kinds = describe(&map, SIZE);
        if !kinds.contains("hole") || !kinds.contains("unwritten") || !kinds.contains("shared") {
            return Err(format!("could not build the test file: its map has {kinds}"));
        }
        let before = snapshot(&path)?;
        let other_before = snapshot(&other_path)?;
        seal::seal(&file).map_err(|x| e("SEAL", x))?;
        let after = snapshot(&path)?;
        let after_kinds = describe(&after.map, SIZE);
        let other_after = snapshot(&other_path)?;
        let _ = seal::unseal(&file);
        if after.bytes != before.bytes {
            return Err(format!("SEAL changed the file's bytes: {}", differences(&before, &after)));
        }
        if after_kinds != "written" {
            return Err(format!("after SEAL the map still has {after_kinds}: {:?}", after.map));
        }
        if other_after.bytes != other_before.bytes {
            return Err("SEAL changed the bytes of the file it shared blocks with".into());
        }
        Ok(format!("before: {kinds}; after: one covered written range, {} extents, bytes unchanged", after.map.len()))
    })
}

/// A file with an extent size hint whose last granule straddles EOF: the
/// fill allocates whole granules, so it leaves blocks beyond EOF that a
/// seal may not have. SEAL must trim them after the fill and seal the file
/// (it said EBUSY), with [0, EOF) written and nothing beyond.
pub(super) fn case_extsize_straddling_eof(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("extsize");
        let r = extsize_straddling_eof(&path);
        remove_sealed(&path);
        r
    })
}

fn extsize_straddling_eof(path: &Path) -> Result<String, String> {
    const HINT: u32 = 16 * BLOCK as u32;
    let len = 24 * BLOCK;
    let e = |what: &str, err: io::Error| format!("{what}: {}", errno_text(&err));
    let file = create(path, 0, 0)?;
    let mut fa = seal::fsgetxattr(&file).map_err(|x| e("FSGETXATTR", x))?;
    fa.xflags |= seal::FS_XFLAG_EXTSIZE;
    fa.extsize = HINT;
    seal::fssetxattr(&file, &fa).map_err(|x| e("FSSETXATTR extsize", x))?;
    file.set_len(len).map_err(|x| e("ftruncate", x))?;
    seal::seal(&file).map_err(|x| {
        e(&format!("SEAL of a sparse {} KiB file with a {} KiB extent size hint", len >> 10, HINT >> 10), x)
    })?;
    let map = seal::fiemap(&file).map_err(|x| e("FIEMAP", x))?;
    let kinds = describe(&map, len);
    let end = map.iter().map(|x| x.logical + x.length).max().unwrap_or(0);
    if kinds != "written" || end != len {
        return Err(format!("after SEAL the map is {kinds}, ending at {end} (EOF {len}): {map:?}"));
    }
    if !snapshot(path)?.sealed {
        return Err("SEAL returned 0 but the file is not sealed".into());
    }
    Ok(format!(
        "sparse {} KiB file, {} KiB extent size hint: SEAL 0, [0, EOF) written, nothing beyond EOF",
        len >> 10,
        HINT >> 10
    ))
}

pub(super) fn case_idempotent(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("idempotent");
        let file = create(&path, 0x43, SIZE)?;
        let step = |what: &str, r: io::Result<()>| r.map_err(|e| format!("{what}: {}", errno_text(&e)));
        step("first SEAL", seal::seal(&file))?;
        step("second SEAL", seal::seal(&file))?;
        step("first UNSEAL", seal::unseal(&file))?;
        step("second UNSEAL", seal::unseal(&file))?;
        step("ftruncate after UNSEAL", file.set_len(SIZE / 2))?;
        step("punch after UNSEAL", seal::fallocate(&file, 3, 0, BLOCK))?;
        step("unlink after UNSEAL", fs::remove_file(&path))?;
        Ok("SEAL, SEAL, UNSEAL, UNSEAL all 0; truncate, punch and unlink work again".into())
    })
}

pub(super) fn case_visibility(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("visible");
        let file = create(&path, 0x44, SIZE)?;
        let flags = |f: &File| seal::fsgetxattr(f).map_err(|e| format!("FSGETXATTR: {}", errno_text(&e)));
        let attrs = || statx_attributes(&path).map(|(a, _)| a);
        let unsealed = (flags(&file)?.xflags, attrs()?);
        seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
        let sealed = (flags(&file)?.xflags, attrs()?);
        seal::unseal(&file).map_err(|e| format!("UNSEAL: {}", errno_text(&e)))?;
        let after = (flags(&file)?.xflags, attrs()?);
        let _ = fs::remove_file(&path);
        let shows =
            |(x, a): (u32, u64)| (x & seal::FS_XFLAG_IOMAP_IMMUTABLE != 0, a & seal::STATX_ATTR_IOMAP_IMMUTABLE != 0);
        match (shows(unsealed), shows(sealed), shows(after)) {
            ((false, false), (true, true), (false, false)) => {
                Ok(format!("sealed: xflags {:#x}, stx_attributes {:#x}", sealed.0, sealed.1))
            }
            (u, s, a) => Err(format!(
                "(FS_XFLAG_IOMAP_IMMUTABLE, STATX_ATTR_IOMAP_IMMUTABLE) before {u:?}, sealed {s:?}, unsealed {a:?}; \
                 expected false/true/false"
            )),
        }
    })
}

/// Not a sealed leg: the mask is asserted on both kernels, in opposite ways.
pub(super) fn case_statx_mask(env: &Env) -> Attempt {
    let path = env.path("mask");
    let r = create(&path, 0x45, BLOCK).and_then(|_| statx_attributes(&path));
    let _ = fs::remove_file(&path);
    Attempt::Done(r.and_then(|(attrs, mask)| {
        let advertised = mask & seal::STATX_ATTR_IOMAP_IMMUTABLE != 0;
        if attrs & STATX_ATTR_DAX == 0 {
            return Err(format!("stx_attributes {attrs:#x} lacks STATX_ATTR_DAX"));
        }
        match (env.has_seal.is_ok(), advertised) {
            (true, true) => Ok(format!("stx_attributes_mask {mask:#x} advertises the seal")),
            (false, false) => Ok(format!("stx_attributes_mask {mask:#x}: no seal, as on 6.12")),
            (true, false) => Err(format!("SEAL works but stx_attributes_mask {mask:#x} does not advertise it")),
            (false, true) => Err(format!("SEAL is unsupported but stx_attributes_mask {mask:#x} advertises it")),
        }
    }))
}

pub(super) fn case_privilege(env: &Env) -> Attempt {
    env.sealed(|| {
        let unsealed_path = env.path("privilege.unsealed");
        let sealed_path = env.path("privilege.sealed");
        let unsealed = create(&unsealed_path, 0x46, SIZE)?;
        let sealed = create(&sealed_path, 0x47, SIZE)?;
        seal::seal(&sealed).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
        let seal_errno = in_child(|| {
            seal::drop_cap_linux_immutable()?;
            seal::seal(&unsealed)
        });
        let unseal_errno = in_child(|| {
            seal::drop_cap_linux_immutable()?;
            seal::unseal(&sealed)
        });
        let still = snapshot(&sealed_path)?.sealed;
        let _ = seal::unseal(&sealed);
        let _ = fs::remove_file(&sealed_path);
        let _ = fs::remove_file(&unsealed_path);
        match (seal_errno?, unseal_errno?, still) {
            (libc::EPERM, libc::EPERM, true) => Ok("SEAL and UNSEAL without CAP_LINUX_IMMUTABLE: EPERM".into()),
            (s, u, still) => Err(format!("without CAP_LINUX_IMMUTABLE: SEAL errno {s}, UNSEAL errno {u}, still sealed {still}; expected EPERM, EPERM, true")),
        }
    })
}

/// Runs `f` in a forked child; returns its errno (0 for success).
pub(super) fn in_child(f: impl FnOnce() -> io::Result<()>) -> Result<i32, String> {
    // SAFETY: the workload is single-threaded here; the child only makes
    // system calls and exits without running destructors.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", errno_text(&io::Error::last_os_error()))),
        0 => {
            let code = match f() {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(255),
            };
            // SAFETY: leaving the child at once.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            if unsafe { libc::waitpid(pid, &mut status, 0) } != pid || !libc::WIFEXITED(status) {
                return Err(format!("child {pid} did not exit normally (status {status:#x})"));
            }
            Ok(libc::WEXITSTATUS(status))
        }
    }
}

/// Argument checks. On a kernel without the series every call gives
/// EOPNOTSUPP (an unknown mode), which is asserted too.
pub(super) fn case_bad_arguments(env: &Env) -> Attempt {
    let has = env.has_seal.is_ok();
    let r = (|| -> Check {
        let path = env.path("badargs");
        let file = create(&path, 0x48, SIZE)?;
        let ro = File::open(&path).map_err(|e| format!("open O_RDONLY: {e}"))?;
        let dir = File::open(&env.dir).map_err(|e| format!("open dir: {e}"))?;
        let tmpfs = TmpfsFile::new().map_err(|e| format!("tmpfs: {e}"))?;
        let immutable_path = env.path("badargs.immutable");
        let immutable = create(&immutable_path, 0x49, SIZE)?;
        seal::set_immutable(&immutable, true).map_err(|e| format!("chattr +i: {}", errno_text(&e)))?;
        let s = seal::FALLOC_FL_SEAL_BLOCK_MAP;
        let u = seal::FALLOC_FL_UNSEAL_BLOCK_MAP;
        let eop = libc::EOPNOTSUPP;
        let calls: Vec<(&str, io::Result<()>, i32)> = vec![
            ("SEAL at offset 4096", seal::fallocate(&file, s, BLOCK, BLOCK), libc::EINVAL),
            ("UNSEAL at offset 4096", seal::fallocate(&file, u, BLOCK, BLOCK), libc::EINVAL),
            ("SEAL with len 0", seal::fallocate(&file, s, 0, 0), libc::EINVAL),
            ("SEAL|KEEP_SIZE", seal::fallocate(&file, s | seal::FALLOC_FL_KEEP_SIZE, 0, BLOCK), eop),
            ("UNSEAL|KEEP_SIZE", seal::fallocate(&file, u | seal::FALLOC_FL_KEEP_SIZE, 0, BLOCK), eop),
            ("SEAL|UNSEAL", seal::fallocate(&file, s | u, 0, BLOCK), eop),
            ("SEAL|PUNCH_HOLE", seal::fallocate(&file, s | seal::FALLOC_FL_PUNCH_HOLE, 0, BLOCK), eop),
            ("SEAL on an O_RDONLY fd", seal::seal(&ro), libc::EBADF),
            ("SEAL on a directory fd", seal::seal(&dir), libc::EBADF),
            ("SEAL on tmpfs", seal::seal(&tmpfs.file), eop),
            ("SEAL of a chattr +i file", seal::seal(&immutable), libc::EPERM),
        ];
        let _ = seal::set_immutable(&immutable, false);
        let _ = fs::remove_file(&immutable_path);
        let _ = fs::remove_file(&path);
        let mut wrong = Vec::new();
        for (what, got, want) in &calls {
            // len 0 is EINVAL on every kernel: fallocate checks it first.
            let want = if has || *want == libc::EINVAL && what.contains("len 0") { *want } else { eop };
            match got {
                Err(e) if e.raw_os_error() == Some(want) => {}
                Err(e) => wrong.push(format!("{what}: {} (expected errno {want})", errno_text(e))),
                Ok(()) => wrong.push(format!("{what}: succeeded (expected errno {want})")),
            }
        }
        if wrong.is_empty() {
            let how = if has { "each with the contract's errno" } else { "each EOPNOTSUPP, as on 6.12" };
            Ok(format!("{} bad calls refused, {how}", calls.len()))
        } else {
            Err(wrong.join("; "))
        }
    })();
    Attempt::Done(r)
}

pub(super) fn case_unseal_mapped(env: &Env) -> Attempt {
    env.sealed(|| {
        let path = env.path("mapped");
        let file = create(&path, 0x51, SIZE)?;
        seal::seal(&file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
        let map = crate::fixture::shared_for_stores(&file, SIZE as usize)?.0;
        let busy = seal::unseal(&file);
        drop(map);
        let after = seal::unseal(&file);
        let _ = fs::remove_file(&path);
        match (busy, after) {
            (Err(e), Ok(())) if e.raw_os_error() == Some(libc::EBUSY) => {
                Ok("UNSEAL while mapped: EBUSY; after munmap: 0".into())
            }
            (b, a) => Err(format!("UNSEAL while mapped: {b:?}, after munmap: {a:?}; expected EBUSY then 0")),
        }
    })
}
