//! Compiles the verbs shim and links Debian's static libibverbs with the
//! rxe provider built in (`RDMA_STATIC_PROVIDERS=rxe`, see verbs.h).

use std::path::Path;

/// Where Debian 12 puts the static libraries of libibverbs-dev,
/// libnl-3-dev and libnl-route-3-dev.
const LIBDIR: &str = "/usr/lib/x86_64-linux-gnu";

/// Static libraries in link order (each after what uses it), with the
/// Debian package that ships it.
const LIBS: &[(&str, &str)] = &[
    ("rxe-rdmav34", "libibverbs-dev"),
    ("ibverbs", "libibverbs-dev"),
    ("nl-route-3", "libnl-route-3-dev"),
    ("nl-3", "libnl-3-dev"),
];

fn main() {
    println!("cargo:rerun-if-changed=src/shim.c");
    let mut missing = Vec::new();
    if !Path::new("/usr/include/infiniband/verbs.h").is_file() {
        missing.push("libibverbs-dev");
    }
    for (lib, package) in LIBS {
        if !Path::new(LIBDIR).join(format!("lib{lib}.a")).is_file() && !missing.contains(package) {
            missing.push(package);
        }
    }
    if !missing.is_empty() {
        // build.rs cannot return an error; the message is what cargo shows.
        eprintln!(
            "dax-seal-rdma needs the static RDMA libraries: apt-get install {} (or run `cargo xtask deps`)",
            missing.join(" ")
        );
        std::process::exit(1);
    }
    cc::Build::new()
        .file("src/shim.c")
        .define("RDMA_STATIC_PROVIDERS", "rxe")
        .warnings(true)
        .extra_warnings(true)
        .compile("dax_seal_rdma_shim");
    println!("cargo:rustc-link-search=native={LIBDIR}");
    for (lib, _) in LIBS {
        println!("cargo:rustc-link-lib=static={lib}");
    }
}
