//! Long-term pins: a sealed DAX mapping can be pinned and does I/O through
//! the pin; a pinned and mapped file answers every call without waiting;
//! unsealed files keep 6.12's refusal.

use super::*;

/// Maps the whole file with MAP_SYNC, registers the mapping as an io_uring
/// fixed buffer (a FOLL_LONGTERM pin), and unmaps it: a registered pin
/// outlives the mapping. Returns the ring and the registration's result.
pub(super) fn pin_then_unmap(file: &File) -> Result<(seal::Ring, io::Result<()>), String> {
    let ring = seal::Ring::new().map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
    let mut map = crate::fixture::shared_for_stores(file, SIZE as usize)?.0;
    let registered = ring.register(map.as_mut_ptr(), SIZE as usize);
    drop(map);
    Ok((ring, registered))
}

/// A long-term pin (io_uring REGISTER_BUFFERS) of a sealed file's DAX
/// mapping works, and data moves through it both ways: WRITE_FIXED copies
/// the file's pmem pages out to another file, READ_FIXED lands another
/// file's bytes in them, which the sealed file then reads back, without its
/// map moving. UNSEAL is refused while the pin holds (even after munmap)
/// and allowed after UNREGISTER.
pub(super) fn case_pin_sealed(env: &Env) -> Attempt {
    env.sealed(|| {
        let (path, out, source) = (env.path("pin"), env.path("pin.out"), env.path("pin.source"));
        let r = pin_round_trip(&path, &out, &source);
        for p in [&path, &out, &source] {
            let _ = fs::remove_file(p);
        }
        r
    })
}

/// Seals `file`, maps all of it with MAP_SYNC and registers the mapping as
/// an io_uring fixed buffer. Returns the map right after SEAL, the ring
/// holding the pin, and the mapping (still live).
pub(super) fn seal_and_pin(file: &File) -> Result<(Vec<Extent>, seal::Ring, Mapping), String> {
    seal::seal(file).map_err(|e| format!("SEAL: {}", errno_text(&e)))?;
    let map_before = seal::fiemap(file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    let ring = seal::Ring::new().map_err(|e| format!("io_uring_setup: {}", errno_text(&e)))?;
    let mut map = crate::fixture::shared_for_stores(file, SIZE as usize)?.0;
    ring.register(map.as_mut_ptr(), SIZE as usize)
        .map_err(|e| format!("REGISTER_BUFFERS on the sealed DAX mapping: {}", errno_text(&e)))?;
    Ok((map_before, ring, map))
}

pub(super) fn pin_round_trip(path: &Path, out: &Path, source: &Path) -> Check {
    const HALF: u64 = SIZE / 2;
    let file = create(path, 0x54, SIZE)?;
    let out_file = create(out, 0x00, 0)?;
    let source_file = create(source, 0x99, HALF)?;
    let (map_before, ring, mut map) = seal_and_pin(&file)?;
    let base = map.as_mut_ptr();
    // Out of the pinned pmem pages: the file's first half into `out`.
    let written = ring.write_fixed(&out_file, 0, base, HALF as u32);
    // Into them: `source` over the file's second half.
    // SAFETY: HALF is inside the SIZE-byte mapping.
    let read = ring.read_fixed(&source_file, 0, unsafe { base.add(HALF as usize) }, HALF as u32);
    drop(map);
    let busy = seal::unseal(&file);
    let unregistered = ring.unregister();
    let settled = unregistered.as_ref().map_err(errno_text).and_then(|()| pins_settled("UNREGISTER_BUFFERS"));
    let after = seal::unseal(&file);
    let want = HALF as u32;
    match written {
        Ok(n) if n == want => {}
        other => return Err(format!("WRITE_FIXED from the pinned buffer: {other:?}, expected {want} bytes")),
    }
    match read {
        Ok(n) if n == want => {}
        other => return Err(format!("READ_FIXED into the pinned buffer: {other:?}, expected {want} bytes")),
    }
    let copied = fs::read(out).map_err(|e| format!("read {}: {e}", out.display()))?;
    if copied != pattern(0x54, SIZE)[..HALF as usize] {
        return Err("WRITE_FIXED wrote other bytes than the sealed file holds".into());
    }
    let mut landed = vec![0u8; HALF as usize];
    file.read_exact_at(&mut landed, HALF).map_err(|e| format!("pread: {}", errno_text(&e)))?;
    if landed != pattern(0x99, HALF) {
        return Err("the bytes READ_FIXED put in the pinned pages do not read back through the file".into());
    }
    let map_after = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    if map_after != map_before {
        return Err(format!("the map moved: {map_before:?} -> {map_after:?}"));
    }
    match busy {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        other => return Err(format!("UNSEAL while pinned (after munmap): {other:?}, expected EBUSY")),
    }
    unregistered.map_err(|e| format!("UNREGISTER_BUFFERS: {}", errno_text(&e)))?;
    settled?;
    after.map_err(|e| format!("UNSEAL after unregister: {}", errno_text(&e)))?;
    Ok(format!(
        "REGISTER_BUFFERS 0; WRITE_FIXED {HALF} bytes out and READ_FIXED {HALF} bytes in, both verified, map \
         unchanged; UNSEAL with the pin outliving munmap: EBUSY; after unregister: 0"
    ))
}

/// How long a call on a sealed, mapped and pinned file may take before it
/// counts as waiting for the pin: generous for the debug kernel under TCG,
/// while a call that waits never returns until the pin goes.
pub(super) const WAITS_FOR_PIN_AFTER: Duration = Duration::from_secs(20);

/// A long-term pin held through a live mapping must not hold up anything
/// that asks the kernel to break the file's layouts. UNSEAL answers EBUSY,
/// a second SEAL 0, and the refused map changes ETXTBSY, each at once; the
/// pin still moves data afterwards, and the map has not moved.
pub(super) fn case_pinned_and_mapped(env: &Env) -> Attempt {
    env.sealed(|| {
        let (path, other) = (env.path("pinned-mapped"), env.path("pinned-mapped.other"));
        let r = pinned_and_mapped(&path, &other);
        for p in [&path, &other] {
            let _ = fs::remove_file(p);
        }
        r
    })
}

pub(super) type Call<'a> = (&'static str, Expect, Box<dyn Fn() -> io::Result<()> + Sync + 'a>);

pub(super) fn pinned_and_mapped(path: &Path, other: &Path) -> Check {
    let file = create(path, 0x5a, SIZE)?;
    let other_file = create(other, 0x5b, SIZE)?;
    let (map_before, ring, mut map) = seal_and_pin(&file)?;
    let base = map.as_mut_ptr();
    let (file, other_file) = (&file, &other_file);
    let calls: Vec<Call> = vec![
        ("UNSEAL", Expect::Err(libc::EBUSY), Box::new(move || seal::unseal(file))),
        ("SEAL again", Expect::Ok, Box::new(move || seal::seal(file))),
        ("ftruncate to the same size", TXT, Box::new(move || file.set_len(SIZE))),
        (
            "punch a hole",
            TXT,
            Box::new(move || seal::fallocate(file, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 0, BLOCK)),
        ),
        ("FICLONE from it", TXT, Box::new(move || seal::ficlone(other_file, file))),
        ("FICLONE into it", TXT, Box::new(move || seal::ficlone(file, other_file))),
    ];
    let (answers, waiting) = answer_each(&calls, &ring);
    // Whatever happened, the pin goes before the verdict.
    let written = ring.write_fixed(other_file, 0, base, BLOCK as u32);
    let unregistered = ring.unregister();
    drop(map);
    let settled = unregistered.as_ref().map_err(errno_text).and_then(|()| pins_settled("UNREGISTER_BUFFERS"));
    let after = seal::unseal(file);
    let told: Vec<String> = calls
        .iter()
        .zip(&answers)
        .map(|((name, want, _), r)| {
            let got = if want.admits(r) { want.text() } else { errno_or_success(r) };
            format!("{name} = {got}")
        })
        .collect();
    if let Some(name) = waiting {
        return Err(format!(
            "{name} was still waiting for the pin after {} s (answered before it: {})",
            WAITS_FOR_PIN_AFTER.as_secs(),
            told.join("; ")
        ));
    }
    for ((name, want, _), r) in calls.iter().zip(&answers) {
        if !want.admits(r) {
            return Err(format!("{name}: got {}, expected {}", errno_or_success(r), want.text()));
        }
    }
    let map_after = seal::fiemap(file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    if map_after != map_before {
        return Err(format!("the map moved under the pin: {map_before:?} -> {map_after:?}"));
    }
    match written {
        Ok(n) if n == BLOCK as u32 => {}
        other => return Err(format!("WRITE_FIXED through the pin afterwards: {other:?}, expected {BLOCK} bytes")),
    }
    let mut copied = vec![0u8; BLOCK as usize];
    other_file.read_exact_at(&mut copied, 0).map_err(|e| format!("pread: {}", errno_text(&e)))?;
    if copied != pattern(0x5a, SIZE)[..BLOCK as usize] {
        return Err("WRITE_FIXED through the pin wrote other bytes than the sealed file holds".into());
    }
    unregistered.map_err(|e| format!("UNREGISTER_BUFFERS: {}", errno_text(&e)))?;
    settled?;
    after.map_err(|e| format!("UNSEAL after munmap and unregister: {}", errno_text(&e)))?;
    Ok(format!("with the pin held through a live mapping: {}; the pin then moved data, map unchanged", told.join(", ")))
}

/// Runs each call in turn on another thread and returns their results in
/// order. If one has not answered in WAITS_FOR_PIN_AFTER, the pin is
/// dropped (which lets a waiting call finish), the calls after it are not
/// made, and its name comes back as the second value.
pub(super) fn answer_each(calls: &[Call], ring: &seal::Ring) -> (Vec<io::Result<()>>, Option<&'static str>) {
    let (tx, rx) = mpsc::channel();
    thread::scope(|s| {
        s.spawn(move || {
            for (_, _, call) in calls {
                if tx.send(call()).is_err() {
                    return;
                }
            }
        });
        let mut answers = Vec::new();
        for (name, _, _) in calls {
            match rx.recv_timeout(WAITS_FOR_PIN_AFTER) {
                Ok(r) => answers.push(r),
                Err(_) => {
                    drop(rx);
                    let _ = ring.unregister();
                    return (answers, Some(*name));
                }
            }
        }
        (answers, None)
    })
}

pub(super) fn errno_or_success(r: &io::Result<()>) -> String {
    match r {
        Ok(()) => "success".into(),
        Err(e) => errno_text(e),
    }
}

/// Unsealed fsdax files keep 6.12's refusal of long-term pins, on both
/// kernels.
pub(super) fn case_pin_control(env: &Env) -> Attempt {
    let r = (|| -> Check {
        let path = env.path("pin-control");
        let file = create(&path, 0x55, SIZE)?;
        let (ring, registered) = pin_then_unmap(&file)?;
        let _ = ring.unregister();
        let _ = fs::remove_file(&path);
        match registered {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                Ok("REGISTER_BUFFERS on an unsealed DAX mapping: EOPNOTSUPP".into())
            }
            other => Err(format!("REGISTER_BUFFERS on an unsealed DAX mapping: {other:?}, expected EOPNOTSUPP")),
        }
    })();
    Attempt::Done(r)
}

/// A case on the page-cache (dax=never) NVDIMM; it skips, with the reason,
/// when the guest has none. `seal_only` cases also skip without the series.
pub(super) fn on_page_cache(env: &Env, seal_only: bool, f: impl FnOnce(&Path) -> Check) -> Attempt {
    match &env.page_cache {
        Err(why) => Attempt::Skip(why.clone()),
        Ok(dir) if seal_only => env.sealed(|| f(dir)),
        Ok(dir) => Attempt::Done(f(dir)),
    }
}
