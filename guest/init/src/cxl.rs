//! CXL memory devices to libnvdimm regions, through sysfs alone (what
//! `cxl create-region -t pmem` does, without the cxl tool).
//!
//! QEMU resets every HDM decoder at power-on, so each boot builds the
//! regions again, the same way: device by device in serial-number order,
//! each in the fixed memory window routed to its own host bridge, over the
//! device's whole persistent capacity. A region over the same device and
//! device address gets the same interleave-set cookie, which is what the
//! namespace labels in the device's label storage area are checked against,
//! so the namespace, its fsdax info block and the filesystem come back.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::nvdimm::{read, write, SETTLE};

const CXL: &str = "/sys/bus/cxl/devices";
const REGION_DRIVER: &str = "/sys/bus/cxl/drivers/cxl_region";

fn real(path: &Path) -> Result<PathBuf, String> {
    fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Entries of `dir` named `prefix` and a number (`mem0`, `decoder3.0`),
/// sorted.
fn children(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.strip_prefix(prefix).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())))
        .collect();
    names.sort();
    names
}

fn devices(prefix: &str) -> Vec<String> {
    children(Path::new(CXL), prefix)
}

/// A number as sysfs shows it: `0x`-hex or decimal.
fn number(text: &str) -> Result<u64, String> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|e| format!("{text:?} is not a number: {e}"))
}

/// Waits for the CXL bus's own work (port and endpoint enumeration) to
/// finish.
fn flush() -> Result<(), String> {
    write("/sys/bus/cxl/flush", "1")
}

/// One memory device with its endpoint decoder and the root decoder (fixed
/// memory window) whose host bridge leads to it.
struct Device {
    memdev: String,
    serial: u64,
    endpoint_decoder: String,
    root_decoder: String,
}

/// Makes and enables a pmem region over each of the `count` devices; returns
/// a note per region saying what it is.
pub fn assemble(count: usize) -> Result<Vec<String>, String> {
    if !Path::new(CXL).exists() {
        return Err(format!(
            "no {CXL}: is QEMU given -machine q35,cxl=on and the kernel CXL_BUS, CXL_ACPI, CXL_PCI and CXL_PMEM?"
        ));
    }
    if count == 0 {
        return Err("the host said nothing of the devices' label areas (run.json without blank_label_areas)".into());
    }
    let devices = attached(count)?;
    let mut notes = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let region = make_region(d).map_err(|e| format!("{} (serial {}): {e}", d.memdev, d.serial))?;
        // The host knows device i by its image, the guest by its region
        // and /dev/pmemN, both named by the region's id: they must agree.
        if !region.starts_with(&format!("region{i} ")) {
            return Err(format!(
                "device {i} ({}, serial {}) got {region}, not region{i}: the regions were not made in the \
                 windows' order, so the host would check another device's image",
                d.memdev, d.serial
            ));
        }
        notes.push(format!(
            "cxl{i}: {region} over {} (serial {}) through {} and {}",
            d.memdev, d.serial, d.root_decoder, d.endpoint_decoder
        ));
    }
    flush()?;
    Ok(notes)
}

/// The `count` memory devices, once each has its endpoint, in serial order.
fn attached(count: usize) -> Result<Vec<Device>, String> {
    let start = Instant::now();
    loop {
        flush()?;
        let found = devices("mem");
        let complete: Result<Vec<Device>, String> = found.iter().map(|m| describe(m)).collect();
        match complete {
            Ok(mut ds) if ds.len() == count => {
                ds.sort_by_key(|d| d.serial);
                if let Some(w) = ds.windows(2).find(|w| w[0].serial == w[1].serial) {
                    return Err(format!("{} and {} share serial {}", w[0].memdev, w[1].memdev, w[0].serial));
                }
                return Ok(ds);
            }
            Ok(ds) if ds.len() > count => {
                return Err(format!("{} CXL memory devices, not the {count} the run attached", ds.len()))
            }
            outcome if start.elapsed() > SETTLE => {
                let why = outcome.err().unwrap_or_else(|| format!("{} CXL memory devices ({found:?})", found.len()));
                return Err(format!("after {} s, {why}; the run attached {count}", SETTLE.as_secs()));
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `memdev`'s serial, endpoint decoder and root decoder, or why it is not
/// ready (yet).
fn describe(memdev: &str) -> Result<Device, String> {
    let dir = Path::new(CXL).join(memdev);
    let serial_text = read(dir.join("serial"))?;
    let serial = number(&serial_text).map_err(|e| format!("{memdev}/serial: {e}"))?;
    if number(&read(dir.join("pmem/size"))?)? == 0 {
        return Err(format!("{memdev} has no persistent capacity"));
    }
    let memdev_path = real(&dir)?;
    // The endpoint port whose upstream device is this memdev.
    let endpoint = devices("endpoint")
        .into_iter()
        .find(|e| real(&Path::new(CXL).join(e).join("uport")).is_ok_and(|u| u == memdev_path))
        .ok_or_else(|| format!("{memdev} has no endpoint port yet (is cxl_mem bound?)"))?;
    let endpoint_decoder = children(&Path::new(CXL).join(&endpoint), "decoder")
        .into_iter()
        .next()
        .ok_or_else(|| format!("{endpoint} has no decoder"))?;
    let root_decoder = root_decoder_for(&memdev_path)?;
    Ok(Device { memdev: memdev.to_string(), serial, endpoint_decoder, root_decoder })
}

/// The root decoder that can hold pmem and whose one target (a host bridge,
/// `root0/dport<id>`) is an ancestor of the device.
fn root_decoder_for(memdev_path: &Path) -> Result<String, String> {
    let root = Path::new(CXL).join("root0");
    for decoder in children(&root, "decoder") {
        let dir = root.join(&decoder);
        if read(dir.join("cap_pmem")).as_deref() != Ok("1") {
            continue;
        }
        let targets = read(dir.join("target_list"))?;
        let reaches = targets
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .any(|t| real(&root.join(format!("dport{t}"))).is_ok_and(|bridge| memdev_path.starts_with(&bridge)));
        if reaches {
            return Ok(decoder);
        }
    }
    Err(format!("no pmem-capable root decoder of root0 reaches {}", memdev_path.display()))
}

/// A fixed uuid per device: the region's identity is the same every boot.
fn region_uuid(serial: u64) -> String {
    format!("da75ea1c-0000-4000-8000-{serial:012x}")
}

/// The region over `d`'s whole persistent capacity, made, committed and
/// bound to cxl_region (which hands it to libnvdimm).
fn make_region(d: &Device) -> Result<String, String> {
    let ep = Path::new(CXL).join(&d.endpoint_decoder);
    let root = Path::new(CXL).join(&d.root_decoder);
    let size = number(&read(Path::new(CXL).join(&d.memdev).join("pmem/size"))?)?.to_string();
    let decoded = number(&read(ep.join("dpa_size"))?)?;
    if decoded != 0 {
        return Err(format!(
            "{} already decodes {decoded} bytes: a region was made before this set-up",
            d.endpoint_decoder
        ));
    }
    write(ep.join("mode"), "pmem")?;
    write(ep.join("dpa_size"), &size)?;
    let name = read(root.join("create_pmem_region"))?;
    write(root.join("create_pmem_region"), &name)?;
    let region = Path::new(CXL).join(&name);
    // The kernel takes a uuid as 36 characters and a newline, nothing else.
    write(region.join("uuid"), &format!("{}\n", region_uuid(d.serial)))?;
    write(region.join("interleave_granularity"), &read(root.join("interleave_granularity"))?)?;
    write(region.join("interleave_ways"), "1")?;
    write(region.join("size"), &size)?;
    write(region.join("target0"), &d.endpoint_decoder)?;
    write(region.join("commit"), "1")?;
    if !region.join("driver").exists() {
        write(Path::new(REGION_DRIVER).join("bind"), &name)?;
    }
    Ok(format!("{name} ({size} bytes at {})", read(region.join("resource"))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_numbers_are_hex_or_decimal() {
        assert_eq!(number("0x0000000040000000"), Ok(1 << 30));
        assert_eq!(number("268435456"), Ok(256 << 20));
        assert!(number("0xg").unwrap_err().contains("not a number"));
    }

    #[test]
    fn a_region_uuid_is_fixed_by_the_serial() {
        assert_eq!(region_uuid(2), "da75ea1c-0000-4000-8000-000000000002");
        assert_eq!(region_uuid(0xabc), region_uuid(0xabc));
    }
}
