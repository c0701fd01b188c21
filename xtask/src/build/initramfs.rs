//! The guest initramfs: built from guest/initramfs.toml (static Rust binaries
//! of this workspace, busybox, the xfsprogs with the seal that build/xfsprogs.rs
//! makes, host programs with their shared libraries),
//! stored uncompressed under images/ by the hash of its contents, so it is
//! rebuilt only when an input changes. Uncompressed because every boot pays
//! for inflating it, and under TCG that cost more than reading the larger
//! file. Per-run data (the run
//! configuration and `--include` files) goes into a small second archive that
//! is appended at boot, which the kernel unpacks on top of the first.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dax_seal_protocol::{RunConfig, RUN_CONFIG_PATH};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use xshell::{cmd, Shell};

use crate::build::cpio::{Archive, Entry};
use crate::build::{deps, xfsprogs};
use crate::paths;

pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub dirs: Vec<String>,
    #[serde(default)]
    pub rust: Vec<RustBinary>,
    #[serde(default)]
    pub host: Vec<HostFile>,
    #[serde(default)]
    pub xfsprogs: Vec<XfsprogsProgram>,
}

/// A program of the project's xfsprogs build (build/xfsprogs.rs).
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct XfsprogsProgram {
    /// Its path in the install tree, which is where the guest finds it too
    /// (`/usr/sbin/mkfs.xfs`).
    pub path: String,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RustBinary {
    pub package: String,
    pub bin: String,
    pub guest: String,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostFile {
    pub path: String,
    /// Where it goes in the guest (default: the same path).
    pub guest: Option<String>,
    #[serde(default)]
    pub libs: bool,
    #[serde(default, rename = "static")]
    pub must_be_static: bool,
    #[serde(default)]
    pub busybox_applets: bool,
}

pub fn parse_manifest(text: &str, origin: &Path) -> Result<Manifest> {
    toml::from_str(text).with_context(|| format!("bad initramfs manifest {}", origin.display()))
}

/// The built base initramfs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Built {
    pub path: PathBuf,
    pub key: String,
    pub bytes: u64,
}

pub fn cmd() -> Result<()> {
    deps::ensure(deps::Need::without_kernel_source())?;
    let built = build()?;
    println!("{} ({} KiB)", built.path.display(), built.bytes / 1024);
    Ok(())
}

/// Builds (or finds) the base initramfs.
pub fn build() -> Result<Built> {
    let root = paths::project_root();
    let manifest_path = root.join("guest/initramfs.toml");
    let text =
        fs::read_to_string(&manifest_path).with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest = parse_manifest(&text, &manifest_path)?;
    let xfsprogs = if manifest.xfsprogs.is_empty() { None } else { Some(xfsprogs::build()?.root) };
    let archive = assemble(&manifest, &build_guest_binaries(&manifest)?, xfsprogs.as_deref())?;
    let bytes = archive.to_bytes();
    let mut h = Sha256::new();
    h.update(&bytes);
    let key = paths::short_hash(h);
    let path = paths::images_dir().join(format!("initramfs-{key}.cpio"));
    if !path.is_file() {
        paths::write_atomic(&path, &bytes)?;
        prune_old(&path);
    }
    Ok(Built { path, key, bytes: bytes.len() as u64 })
}

/// Keeps the three newest initramfs images.
fn prune_old(keep: &Path) {
    let Ok(entries) = fs::read_dir(paths::images_dir()) else { return };
    let mut old: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != keep && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("initramfs-")))
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    old.sort();
    old.reverse();
    for (_, p) in old.into_iter().skip(2) {
        let _ = fs::remove_file(p);
    }
}

/// Builds the workspace's guest binaries static and returns their paths.
fn build_guest_binaries(manifest: &Manifest) -> Result<Vec<PathBuf>> {
    let root = paths::project_root();
    let sh = Shell::new()?;
    let _dir = sh.push_dir(&root);
    // RUSTFLAGS with --target apply to the guest binaries only, not to build
    // scripts and proc macros, which must stay dynamic.
    let _flags = sh.push_env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");
    let packages: Vec<String> = manifest.rust.iter().flat_map(|r| ["-p".to_string(), r.package.clone()]).collect();
    cmd!(sh, "cargo build --quiet --release --target {GUEST_TARGET} {packages...}")
        .run()
        .context("building the guest binaries failed (see the cargo output above)")?;
    let dir = root.join("target").join(GUEST_TARGET).join("release");
    Ok(manifest.rust.iter().map(|r| dir.join(&r.bin)).collect())
}

fn read_file(path: &Path) -> Result<(Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let data = fs::read(path).with_context(|| format!("cannot read {} for the initramfs", path.display()))?;
    let mode = fs::metadata(path)?.permissions().mode() & 0o7777;
    Ok((data, mode))
}

/// The base archive from the manifest, the built Rust binaries and the
/// install tree of the project's xfsprogs.
pub fn assemble(manifest: &Manifest, rust_binaries: &[PathBuf], xfsprogs: Option<&Path>) -> Result<Archive> {
    let mut a = Archive::new();
    let add = |a: &mut Archive, path: &str, e: Entry| a.add(path, e).map_err(anyhow::Error::msg);
    for d in &manifest.dirs {
        add(&mut a, d, Entry::Dir { mode: 0o755 })?;
    }
    add(&mut a, "/dev/console", Entry::CharDev { mode: 0o600, major: 5, minor: 1 })?;
    for (r, path) in manifest.rust.iter().zip(rust_binaries) {
        let (data, mode) = read_file(path)?;
        if is_dynamic(&data) {
            bail!("{} is dynamically linked; the guest needs it static (crt-static)", path.display());
        }
        add(&mut a, &r.guest, Entry::File { mode, data })?;
    }
    for x in &manifest.xfsprogs {
        let root = xfsprogs.context("the manifest names xfsprogs programs, but no xfsprogs was built")?;
        let path = root.join(x.path.trim_start_matches('/'));
        let (data, mode) = read_file(&path)?;
        if is_dynamic(&data) {
            bail!("{} is dynamically linked; the guest needs it static", path.display());
        }
        add(&mut a, &x.path, Entry::File { mode, data })?;
    }
    for h in &manifest.host {
        let path = Path::new(&h.path);
        let (data, mode) = read_file(path)?;
        if h.must_be_static && is_dynamic(&data) {
            bail!("{} is dynamically linked but the manifest needs it static (for busybox: apt-get install busybox-static)", h.path);
        }
        let guest = h.guest.clone().unwrap_or_else(|| h.path.clone());
        if h.libs {
            let sh = Shell::new()?;
            let out =
                cmd!(sh, "ldd {path}").ignore_status().read().with_context(|| format!("running ldd {}", h.path))?;
            for lib in parse_ldd(&out).map_err(|e| anyhow::anyhow!("ldd {}: {e}", h.path))? {
                let (data, mode) = read_file(Path::new(&lib))?;
                add(&mut a, &lib, Entry::File { mode, data })?;
            }
        }
        if h.busybox_applets {
            let sh = Shell::new()?;
            let list = cmd!(sh, "{path} --list-full").read().with_context(|| format!("{} --list-full", h.path))?;
            for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if !a.contains(applet) {
                    add(&mut a, applet, Entry::Symlink { target: guest.clone() })?;
                }
            }
        }
        add(&mut a, &guest, Entry::File { mode, data })?;
    }
    Ok(a)
}

/// Shared libraries from `ldd` output, as absolute paths.
pub fn parse_ldd(text: &str) -> Result<Vec<String>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("not a dynamic executable") || line.contains("statically linked") || line.is_empty() {
            continue;
        }
        if line.contains("=> not found") {
            return Err(format!("missing library: {line}"));
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(path.to_string());
        }
    }
    Ok(libs)
}

/// True when an ELF file asks for a program interpreter (PT_INTERP).
pub fn is_dynamic(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at = |o: usize| elf.get(o..o + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else { return false };
    (0..phnum).any(|i| {
        let at = phoff as usize + i * phentsize;
        elf.get(at..at + 4).is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) == 3)
    })
}

/// The per-run archive: the run configuration and the `--include` files.
/// A host file or directory to add to the initramfs (`--include`), and
/// where the guest finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub host: PathBuf,
    pub guest: String,
}

pub fn run_archive(config: &RunConfig, includes: &[Include]) -> Result<Vec<u8>> {
    let mut a = Archive::new();
    let json = serde_json::to_vec_pretty(config)?;
    a.add(RUN_CONFIG_PATH, Entry::File { mode: 0o644, data: json }).map_err(anyhow::Error::msg)?;
    for inc in includes {
        add_tree(&mut a, &inc.host, &inc.guest)
            .with_context(|| format!("--include {}:{}", inc.host.display(), inc.guest))?;
    }
    Ok(a.to_bytes())
}

fn add_tree(a: &mut Archive, host: &Path, guest: &str) -> Result<()> {
    let meta = fs::symlink_metadata(host).with_context(|| format!("{} does not exist", host.display()))?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(host)?.to_string_lossy().into_owned();
        a.add(guest, Entry::Symlink { target }).map_err(anyhow::Error::msg)?;
    } else if meta.is_dir() {
        a.add(guest, Entry::Dir { mode: 0o755 }).map_err(anyhow::Error::msg)?;
        for e in fs::read_dir(host)? {
            let e = e?;
            add_tree(a, &e.path(), &format!("{guest}/{}", e.file_name().to_string_lossy()))?;
        }
    } else {
        let (data, mode) = read_file(host)?;
        a.add(guest, Entry::File { mode, data }).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Writes base + per-run archive as one initrd file.
pub fn write_initrd(base: &Path, run: &[u8], out: &Path) -> Result<()> {
    let mut bytes = fs::read(base).with_context(|| format!("cannot read {}", base.display()))?;
    while bytes.len() % 4 != 0 {
        bytes.push(0);
    }
    bytes.extend_from_slice(run);
    paths::write_atomic(out, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_in_the_repo_parses() {
        let path = paths::project_root().join("guest/initramfs.toml");
        let m = parse_manifest(&fs::read_to_string(&path).unwrap(), &path).unwrap();
        assert!(m.rust.iter().any(|r| r.guest == "/init"));
        assert!(m.host.iter().any(|h| h.busybox_applets && h.must_be_static));
    }

    #[test]
    fn manifest_rejects_unknown_keys() {
        let err = parse_manifest("dirs = []\n[[host]]\npath = \"/x\"\nlib = true\n", Path::new("m.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
    }

    #[test]
    fn missing_host_file_is_named() {
        let m = parse_manifest("dirs = []\n[[host]]\npath = \"/nonexistent/tool\"\n", Path::new("m")).unwrap();
        let err = assemble(&m, &[], None).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/tool"), "{err:#}");
    }

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\tlibuuid.so.1 => /lib/x86_64-linux-gnu/libuuid.so.1 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(parse_ldd(text).unwrap(), ["/lib/x86_64-linux-gnu/libuuid.so.1", "/lib64/ld-linux-x86-64.so.2"]);
        assert!(parse_ldd("\tlibx.so => not found\n").is_err());
        assert!(parse_ldd("\tnot a dynamic executable\n").unwrap().is_empty());
    }

    #[test]
    fn elf_interp_detection() {
        let sh = fs::read("/bin/sh").unwrap();
        assert!(is_dynamic(&sh), "/bin/sh on Debian is dynamic");
        assert!(!is_dynamic(b"#!/bin/sh\n"));
        assert!(!is_dynamic(&[]));
    }

    #[test]
    fn run_archive_carries_config_and_includes() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.sh"), "echo hi").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/b"), "b").unwrap();
        let config = RunConfig { kernel: "patched".into(), workloads: vec!["dax-smoke".into()], ..Default::default() };
        let includes = [
            Include { host: dir.path().join("a.sh"), guest: "/root/a.sh".into() },
            Include { host: dir.path().join("sub"), guest: "/opt/sub".into() },
        ];
        let bytes = run_archive(&config, &includes).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for needle in ["etc/dax-seal/run.json", "\"dax-smoke\"", "root/a.sh", "echo hi", "opt/sub/b"] {
            assert!(text.contains(needle), "{needle}");
        }
        let missing = [Include { host: dir.path().join("nope"), guest: "/x".into() }];
        assert!(format!("{:#}", run_archive(&config, &missing).unwrap_err()).contains("does not exist"));
    }
}
