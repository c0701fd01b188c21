//! A cpio "newc" archive writer, the format the kernel unpacks as initramfs.
//! Entries are kept sorted by path and every parent directory is added, so
//! the kernel always creates a directory before what is inside it. Times and
//! owners are fixed, so the same inputs give the same bytes.

use std::collections::BTreeMap;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

/// "/a/b/" and "a/b" are both "a/b": cpio paths are relative, without slashes
/// at either end.
fn normalize(path: &str) -> Result<String, String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(format!("bad archive path {path:?}"));
    }
    Ok(parts.join("/"))
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Adds an entry (replacing one at the same path) and its parent directories.
    pub fn add(&mut self, path: &str, entry: Entry) -> Result<(), String> {
        let path = normalize(path)?;
        let mut parent = String::new();
        for part in path.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.entries.get(&parent) {
                None => {
                    self.entries.insert(parent.clone(), Entry::Dir { mode: 0o755 });
                }
                Some(Entry::Dir { .. }) => {}
                Some(_) => return Err(format!("{parent} is not a directory, cannot add {path} under it")),
            }
        }
        if !matches!(entry, Entry::Dir { .. }) {
            let under = format!("{path}/");
            if let Some((child, _)) = self.entries.range(under.clone()..).next().filter(|(k, _)| k.starts_with(&under))
            {
                return Err(format!("{path} is a directory holding {child}; it cannot become a file"));
            }
        }
        self.entries.insert(path, entry);
        Ok(())
    }

    pub fn contains(&self, path: &str) -> bool {
        normalize(path).is_ok_and(|p| self.entries.contains_key(&p))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The archive bytes, ending with the TRAILER!!! record.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir { mode } => (S_IFDIR | mode, 2, &[], (0, 0)),
                Entry::File { mode, data } => (S_IFREG | mode, 1, data, (0, 0)),
                Entry::Symlink { target } => (S_IFLNK | 0o777, 1, target.as_bytes(), (0, 0)),
                Entry::CharDev { mode, major, minor } => (S_IFCHR | mode, 1, &[], (*major, *minor)),
            };
            record(&mut out, ino as u32 + 1, mode, nlink, rdev, path, data);
        }
        record(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
        out
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn record(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, rdev: (u32, u32), name: &str, data: &[u8]) {
    let fields = [ino, mode, 0, 0, nlink, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal newc reader for the tests: (name, mode, data).
    fn read(bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(&bytes[at..at + 6], b"070701", "magic at {at}");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&bytes[at + 6 + i * 8..at + 14 + i * 8]).unwrap(), 16).unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name_start = at + 110;
            let name = String::from_utf8(bytes[name_start..name_start + namesize - 1].to_vec()).unwrap();
            let data_start = (name_start + namesize + 3) & !3;
            let data = bytes[data_start..data_start + size].to_vec();
            at = (data_start + size + 3) & !3;
            if name == "TRAILER!!!" {
                assert_eq!(at, bytes.len());
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn parents_first_and_round_trip() {
        let mut a = Archive::new();
        a.add("/usr/bin/tool", Entry::File { mode: 0o755, data: b"abc".to_vec() }).unwrap();
        a.add("/bin/sh", Entry::Symlink { target: "busybox".into() }).unwrap();
        a.add("/dev/console", Entry::CharDev { mode: 0o600, major: 5, minor: 1 }).unwrap();
        a.add("/usr-lib/x", Entry::File { mode: 0o644, data: vec![] }).unwrap();
        let got = read(&a.to_bytes());
        let names: Vec<_> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/sh", "dev", "dev/console", "usr", "usr-lib", "usr-lib/x", "usr/bin", "usr/bin/tool"]
        );
        // What the kernel needs: every parent comes before its children.
        for (i, name) in names.iter().enumerate() {
            if let Some((parent, _)) = name.rsplit_once('/') {
                assert!(names[..i].contains(&parent), "{parent} after {name}");
            }
        }
        assert_eq!(got[8].1, S_IFREG | 0o755);
        assert_eq!(got[8].2, b"abc");
        assert_eq!(got[1].2, b"busybox");
        assert_eq!(got[3].1, S_IFCHR | 0o600);
    }

    #[test]
    fn deterministic_and_replacing() {
        let mut a = Archive::new();
        a.add("etc/x", Entry::File { mode: 0o644, data: b"1".to_vec() }).unwrap();
        a.add("/etc/x/", Entry::File { mode: 0o644, data: b"2".to_vec() }).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a.to_bytes(), a.clone().to_bytes());
        assert_eq!(read(&a.to_bytes())[1].2, b"2");
    }

    #[test]
    fn bad_paths() {
        let mut a = Archive::new();
        assert!(a.add("/", Entry::Dir { mode: 0o755 }).is_err());
        assert!(a.add("/a/../b", Entry::Dir { mode: 0o755 }).is_err());
        a.add("/f", Entry::File { mode: 0o644, data: vec![] }).unwrap();
        assert!(a.add("/f/g", Entry::Dir { mode: 0o755 }).is_err());
    }
}

#[cfg(test)]
mod replacing {
    use super::*;

    /// Found by `cargo xtask fuzz`: a file added over a directory that
    /// already holds entries left those entries under a file, which no
    /// unpacker can create.
    #[test]
    fn a_directory_with_entries_cannot_become_a_file() {
        let mut a = Archive::new();
        a.add("-/a", Entry::File { mode: 0o644, data: Vec::new() }).unwrap();
        let err = a.add("-", Entry::File { mode: 0o644, data: Vec::new() }).unwrap_err();
        assert!(err.contains("- is a directory holding -/a"), "{err}");
        a.add("-", Entry::Dir { mode: 0o700 }).unwrap();
        a.add("b", Entry::File { mode: 0o644, data: Vec::new() }).unwrap();
        a.add("b", Entry::Symlink { target: "c".into() }).unwrap();
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::process::{Command, Stdio};

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec("[a-zA-Z0-9_.-]{1,12}", 1..4)
            .prop_map(|parts| parts.iter().filter(|p| *p != "." && *p != "..").cloned().collect::<Vec<_>>())
            .prop_filter("a path", |parts| !parts.is_empty())
            .prop_map(|parts| parts.join("/"))
    }

    fn entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            3 => (prop::collection::vec(any::<u8>(), 0..3000), prop::sample::select(vec![0o644u32, 0o755, 0o600]))
                .prop_map(|(data, mode)| Entry::File { mode, data }),
            1 => Just(Entry::Dir { mode: 0o755 }),
            1 => "[a-z/]{1,20}".prop_map(|target| Entry::Symlink { target }),
        ]
    }

    proptest! {
        #![proptest_config(crate::testing::proptest_config())]

        /// What the writer archives, Debian's cpio lists and extracts
        /// byte for byte.
        #[test]
        fn debian_cpio_reads_back_what_was_written(items in prop::collection::vec((path(), entry()), 1..12)) {
            let cpio = which::which("cpio").expect("Debian's cpio is missing: run `cargo xtask deps` (package cpio)");
            let mut a = Archive::new();
            for (p, e) in &items {
                // Adding under a file is refused; skip such inputs.
                let _ = a.add(p, e.clone());
            }
            let bytes = a.to_bytes();
            let dir = tempfile::tempdir().unwrap();
            let archive = dir.path().join("a.cpio");
            std::fs::write(&archive, &bytes).unwrap();
            let listed = Command::new(&cpio).args(["-t", "--quiet"]).stdin(std::fs::File::open(&archive).unwrap())
                .output().unwrap();
            prop_assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
            let names: BTreeSet<String> = String::from_utf8_lossy(&listed.stdout).lines().map(str::to_string).collect();
            let want: BTreeSet<String> = a.entries.keys().cloned().collect();
            prop_assert_eq!(&names, &want);
            let out = dir.path().join("x");
            std::fs::create_dir(&out).unwrap();
            let extracted = Command::new(&cpio).args(["-i", "-d", "--quiet", "--no-absolute-filenames"])
                .current_dir(&out).stdin(std::fs::File::open(&archive).unwrap()).stderr(Stdio::piped()).output().unwrap();
            prop_assert!(extracted.status.success(), "{}", String::from_utf8_lossy(&extracted.stderr));
            for (p, e) in &a.entries {
                let at = out.join(p);
                match e {
                    Entry::File { data, .. } => prop_assert_eq!(&std::fs::read(&at).unwrap(), data, "{}", p),
                    Entry::Dir { .. } => prop_assert!(at.is_dir(), "{}", p),
                    Entry::Symlink { target } => {
                        prop_assert_eq!(std::fs::read_link(&at).unwrap().to_string_lossy().into_owned(), target.clone())
                    }
                    Entry::CharDev { .. } => {}
                }
            }
        }
    }
}
