//! `seal-crash-prepare` and `seal-crash-verify`: the two halves of the
//! persistence and durability scenarios, one per boot on the same NVDIMM
//! images. Prepare builds a file with a hole and an unwritten range, makes
//! its contents durable, seals it and at once prints its map and the crash
//! point marker, with no sync in between: the host may SIGKILL QEMU right
//! there. Verify, on the next boot, finds the file sealed, with no hole or
//! unwritten extent, with every byte, and prints its map so the host can
//! compare it with the one before the crash (both as
//! [`crate::fixture::map_line`] writes it).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::ExitCode;

use dax_seal_protocol::{MOUNT_PREFIX, SEAL_CRASH_POINT};

use crate::calls::errno_text;
use crate::cases::Cases;
use crate::fixture::{create, describe, is_sealed, map_line, pattern};
use crate::seal;

const SIZE: u64 = 1 << 20;
const HOLE: (u64, u64) = (64 << 10, 64 << 10);
const UNWRITTEN: (u64, u64) = (256 << 10, 64 << 10);

fn path() -> PathBuf {
    PathBuf::from(format!("{MOUNT_PREFIX}0/seal-crash"))
}

/// The bytes the file must hold: the pattern, zero in the hole and the
/// unwritten range.
fn expected() -> Vec<u8> {
    let mut b = pattern(0x6c, SIZE);
    for (off, len) in [HOLE, UNWRITTEN] {
        b[off as usize..(off + len) as usize].fill(0);
    }
    b
}

pub fn prepare() -> ExitCode {
    let mut t = Cases::new(2);
    let path = path();
    if let Ok(old) = OpenOptions::new().write(true).open(&path) {
        let _ = seal::unseal(&old);
    }
    let built = (|| -> Result<(fs::File, String), String> {
        let file = create(&path, 0x6c, SIZE)?;
        let e = |what: &str, err: io::Error| format!("{what}: {}", errno_text(&err));
        seal::fallocate(&file, seal::FALLOC_FL_PUNCH_HOLE | seal::FALLOC_FL_KEEP_SIZE, HOLE.0, HOLE.1)
            .map_err(|x| e("punch", x))?;
        seal::fallocate(&file, seal::FALLOC_FL_ZERO_RANGE, UNWRITTEN.0, UNWRITTEN.1).map_err(|x| e("zero", x))?;
        file.sync_all().map_err(|x| e("fsync", x))?;
        let map = seal::fiemap(&file).map_err(|x| e("FIEMAP", x))?;
        let kinds = describe(&map, SIZE);
        if !(kinds.contains("hole") && kinds.contains("unwritten")) {
            return Err(format!("the file should have a hole and an unwritten range, its map has {kinds}"));
        }
        Ok((file, format!("before SEAL: {kinds}; {}", map_line(&map))))
    })();
    let Some(file) = t.check("file with a hole and an unwritten range, fsynced", built) else {
        t.blocked("seal", "building the file");
        return t.exit();
    };
    // From SEAL returning to the marker: no sync, no close, nothing else.
    let sealed = seal::seal(&file)
        .map_err(|e| format!("SEAL: {}", errno_text(&e)))
        .and_then(|()| seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e))))
        .map(|map| ((), map_line(&map)));
    if t.check("seal", sealed).is_some() {
        t.note(SEAL_CRASH_POINT);
    }
    t.exit()
}

pub fn verify() -> ExitCode {
    let mut t = Cases::new(3);
    let path = path();
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) => {
            t.check::<()>("sealed with the same map", Err(format!("open {}: {}", path.display(), errno_text(&e))));
            t.blocked("every byte is there", "open");
            t.blocked("still enforced", "open");
            return t.exit();
        }
    };
    let state = (|| -> Result<((), String), String> {
        let map = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
        let kinds = describe(&map, SIZE);
        if !is_sealed(&path)? {
            return Err(format!("not sealed after the reboot (no STATX_ATTR_IOMAP_IMMUTABLE); {}", map_line(&map)));
        }
        if kinds != "written" {
            return Err(format!("sealed, but the map has {kinds}: {}", map_line(&map)));
        }
        Ok(((), map_line(&map)))
    })();
    t.check("sealed with the same map", state);
    let mut bytes = vec![0u8; SIZE as usize];
    let data = file.read_exact_at(&mut bytes, 0).map_err(|e| format!("read: {}", errno_text(&e))).and_then(|()| {
        match bytes.iter().zip(expected()).position(|(a, b)| *a != b) {
            None => Ok(((), format!("{SIZE} bytes as written before the seal"))),
            Some(at) => Err(format!("byte {at} differs from what was written before the seal")),
        }
    });
    t.check("every byte is there", data);
    let enforced = match file.set_len(0) {
        Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => Ok(((), "ftruncate: ETXTBSY".to_string())),
        other => Err(format!("ftruncate of the sealed file: {other:?}, expected ETXTBSY")),
    };
    t.check("still enforced", enforced);
    let _ = seal::unseal(&file);
    let _ = fs::remove_file(&path);
    t.exit()
}
