//! `seal-foreign-prepare`, `seal-foreign-change`, `seal-foreign-verify`:
//! the three boots of the mixed-kernel scenario (docs/seal.md, "Mixing
//! kernels"). The patched kernel seals five files; a kernel without the
//! series, which ignores the on-disk flag, punches a hole in one, clones
//! another, truncates one up and one down, and leaves the last alone; the
//! patched kernel then boots on the same images and must report exactly the
//! three files whose map is no longer whole, once each in its log, without
//! a warning, and let the user recover them with UNSEAL and SEAL.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use dax_seal_protocol::MOUNT_PREFIX;

use crate::calls::{errno_text, kmsg_records, statx_attributes};
use crate::cases::Cases;
use crate::fixture::{create, pattern};
use crate::seal::{self, FIEMAP_EXTENT_SHARED, FIEMAP_EXTENT_UNWRITTEN};

const SIZE: u64 = 1 << 20;

/// The files and what the foreign kernel does to each.
const PUNCHED: &str = "punched";
const CLONED: &str = "cloned";
const GROWN: &str = "grown";
const SHRUNK: &str = "shrunk";
const UNTOUCHED: &str = "untouched";
const FILES: [&str; 5] = [PUNCHED, CLONED, GROWN, SHRUNK, UNTOUCHED];
/// Changed so that the map is no longer whole.
const BROKEN: [&str; 3] = [PUNCHED, CLONED, GROWN];
/// Sealed with a whole map after the foreign boot.
const WHOLE: [&str; 2] = [SHRUNK, UNTOUCHED];

fn dir() -> PathBuf {
    PathBuf::from(format!("{MOUNT_PREFIX}0/seal-foreign"))
}

fn seed(name: &str) -> u8 {
    FILES.iter().position(|f| *f == name).map_or(0, |i| 0x40 + i as u8)
}

fn open(name: &str) -> Result<File, String> {
    let path = dir().join(name);
    OpenOptions::new().read(true).write(true).open(&path).map_err(|e| format!("open {}: {e}", path.display()))
}

/// Boot 1, patched: five sealed files of SIZE bytes.
pub fn prepare() -> ExitCode {
    let mut t = Cases::new(1);
    let r = (|| {
        let dir = dir();
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        for name in FILES {
            let file = create(&dir.join(name), seed(name), SIZE)?;
            seal::seal(&file).map_err(|e| format!("SEAL {name}: {}", errno_text(&e)))?;
        }
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| format!("fsync {}: {e}", dir.display()))?;
        Ok(((), format!("sealed {}", FILES.join(", "))))
    })();
    t.check("seal-five-files", r);
    t.exit()
}

/// Boot 2, a kernel without the series: each change goes through, since
/// that kernel does not know the flag.
pub fn change() -> ExitCode {
    let mut t = Cases::new(4);
    let io = |what: &str, r: io::Result<()>| {
        r.map(|()| ((), String::new())).map_err(|e| format!("{what}: {}", errno_text(&e)))
    };
    t.check(
        "punch-hole-in-sealed-file",
        open(PUNCHED).and_then(|f| {
            io("punch", seal::fallocate(&f, seal::FALLOC_FL_PUNCH_HOLE | seal::FALLOC_FL_KEEP_SIZE, SIZE / 4, SIZE / 4))
        }),
    );
    t.check(
        "clone-sealed-file",
        open(CLONED).and_then(|f| {
            let copy = create(&dir().join("clone-of-cloned"), 0, 0)?;
            io("FICLONE", seal::ficlone(&copy, &f))
        }),
    );
    t.check("truncate-sealed-file-up", open(GROWN).and_then(|f| io("ftruncate", f.set_len(2 * SIZE))));
    t.check("truncate-sealed-file-down", open(SHRUNK).and_then(|f| io("ftruncate", f.set_len(SIZE / 2))));
    // Make it all durable before the clean power-off.
    let _ = File::open(dir()).and_then(|d| d.sync_all());
    t.exit()
}

/// The kernel log lines so far that name `ino` as a broken seal.
fn reports_of(ino: u64) -> Result<usize, String> {
    let needle = format!("inode {ino:#x}: sealed block map changed by a kernel without the seal");
    Ok(kmsg_records()?.iter().filter(|r| r.contains(&needle)).count())
}

/// statx's view (the seal holds) and FSGETXATTR's (the flag is on disk).
fn views(name: &str) -> Result<(bool, bool), String> {
    let path = dir().join(name);
    let holds = statx_attributes(&path)?.0 & seal::STATX_ATTR_IOMAP_IMMUTABLE != 0;
    let file = open(name)?;
    let fa = seal::fsgetxattr(&file).map_err(|e| format!("FSGETXATTR {name}: {}", errno_text(&e)))?;
    Ok((holds, fa.xflags & seal::FS_XFLAG_IOMAP_IMMUTABLE != 0))
}

fn ino(name: &str) -> Result<u64, String> {
    fs::metadata(dir().join(name)).map(|m| m.ino()).map_err(|e| format!("stat {name}: {e}"))
}

/// Boot 3, patched again on the same images.
pub fn verify() -> ExitCode {
    let mut t = Cases::new(4);
    t.check("broken-seals-reported", broken_reported());
    t.check("whole-seals-kept", whole_kept());
    t.check("daxctl-immutable-status-says-broken", status_says_broken());
    t.check("unseal-then-seal-recovers", recover());
    t.exit()
}

fn broken_reported() -> Result<((), String), String> {
    let mut notes = Vec::new();
    for name in BROKEN {
        let (holds, on_disk) = views(name)?;
        if holds || !on_disk {
            return Err(format!("{name}: statx says sealed {holds}, FSGETXATTR {on_disk}; expected false, true"));
        }
        let file = open(name)?;
        match seal::seal(&file) {
            Err(e) if e.raw_os_error() == Some(libc::EUCLEAN) => {}
            other => return Err(format!("SEAL of the broken seal of {name}: {other:?}, expected EUCLEAN")),
        }
        match file.set_len(SIZE / 8) {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {}
            other => {
                return Err(format!("ftruncate of {name}: {other:?}, expected ETXTBSY (the flag is still on disk)"))
            }
        }
        let n = reports_of(ino(name)?)?;
        if n != 1 {
            return Err(format!("{n} kernel log lines name {name} (inode {:#x}), expected 1", ino(name)?));
        }
        notes.push(format!("{name}: inode {:#x} named once", ino(name)?));
    }
    // A write into the punched hole reaches the backstop, quietly.
    let punched = open(PUNCHED)?;
    match punched.write_all_at(&[0xee; 4096], SIZE / 4) {
        Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {}
        other => return Err(format!("a write into the hole of the broken seal: {other:?}, expected ETXTBSY")),
    }
    Ok((
        (),
        format!(
            "statx not sealed, FSGETXATTR flag set, SEAL EUCLEAN, ftruncate ETXTBSY, a write into the hole ETXTBSY; {}",
            notes.join("; ")
        ),
    ))
}

fn whole_kept() -> Result<((), String), String> {
    for name in WHOLE {
        let (holds, on_disk) = views(name)?;
        if !holds || !on_disk {
            return Err(format!("{name}: statx says sealed {holds}, FSGETXATTR {on_disk}; expected true, true"));
        }
        let file = open(name)?;
        seal::seal(&file).map_err(|e| format!("SEAL of the sealed {name}: {}", errno_text(&e)))?;
        if reports_of(ino(name)?)? != 0 {
            return Err(format!("the kernel log names {name}, whose map is whole"));
        }
    }
    let len = fs::metadata(dir().join(SHRUNK)).map_err(|e| e.to_string())?.len();
    if len != SIZE / 2 {
        return Err(format!("{SHRUNK} is {len} bytes, expected {}", SIZE / 2));
    }
    Ok((
        (),
        "shrunk (truncated down, map still whole) and untouched: sealed on both views, not named in the log".into(),
    ))
}

fn status_says_broken() -> Result<((), String), String> {
    let path = dir().join(PUNCHED);
    let out = Command::new("/usr/bin/daxctl-immutable")
        .arg("status")
        .arg(&path)
        .output()
        .map_err(|e| format!("running daxctl-immutable: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if !text.contains("seal broken") {
        return Err(format!(
            "daxctl-immutable status {}: {text:?}, expected it to say the seal is broken",
            path.display()
        ));
    }
    Ok(((), text.lines().next().unwrap_or("").to_string()))
}

fn recover() -> Result<((), String), String> {
    for name in BROKEN {
        let file = open(name)?;
        seal::unseal(&file).map_err(|e| format!("UNSEAL of the broken seal of {name}: {}", errno_text(&e)))?;
        seal::seal(&file).map_err(|e| format!("SEAL of {name} after UNSEAL: {}", errno_text(&e)))?;
        let (holds, on_disk) = views(name)?;
        if !holds || !on_disk {
            return Err(format!("{name} after UNSEAL and SEAL: statx {holds}, FSGETXATTR {on_disk}"));
        }
        let map = seal::fiemap(&file).map_err(|e| format!("FIEMAP {name}: {}", errno_text(&e)))?;
        if map.iter().any(|e| e.flags & (FIEMAP_EXTENT_SHARED | FIEMAP_EXTENT_UNWRITTEN) != 0) {
            return Err(format!("{name} after UNSEAL and SEAL still has shared or unwritten extents: {map:?}"));
        }
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0).map_err(|e| format!("read {name}: {}", errno_text(&e)))?;
        let mut want = pattern(seed(name), SIZE);
        want.resize(len as usize, 0);
        if name == PUNCHED {
            want[(SIZE / 4) as usize..(SIZE / 2) as usize].fill(0);
        }
        if bytes != want {
            return Err(format!("{name} does not read as the foreign kernel left it"));
        }
    }
    Ok(((), format!("{}: UNSEAL 0, SEAL 0, sealed on both views, whole map, data as left", BROKEN.join(", "))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn broken_and_whole_cover_every_file_once() {
        let mut all: Vec<&str> = super::BROKEN.iter().chain(super::WHOLE.iter()).copied().collect();
        all.sort_unstable();
        let mut files = super::FILES.to_vec();
        files.sort_unstable();
        assert_eq!(all, files);
    }
}
