//! What PID 1 does to the machine itself: mounting, syncing, powering off,
//! and the panic hook that turns a bug in this binary into a clean power-off.

use crate::log;

fn mount(source: &str, target: &str, fstype: &str, data: &str) -> Result<(), String> {
    let _ = std::fs::create_dir_all(target);
    dax_seal_sys::calls::mount(source, std::path::Path::new(target), fstype, data)
        .map_err(|e| format!("mount -t {fstype} {source} {target} -o '{data}': {e}"))
}

pub fn mount_fs(source: &str, target: &str, fstype: &str, data: &str) -> Result<(), String> {
    mount(source, target, fstype, data)
}

/// proc, sysfs, devtmpfs and tmpfs. A failure is logged; what depends on it
/// fails later with its own reason.
pub fn mount_pseudo_filesystems() {
    for (src, target, fstype, data) in [
        ("proc", "/proc", "proc", ""),
        ("sysfs", "/sys", "sysfs", ""),
        ("devtmpfs", "/dev", "devtmpfs", ""),
        ("tmpfs", "/tmp", "tmpfs", "mode=1777"),
        ("tmpfs", "/run", "tmpfs", "mode=0755"),
    ] {
        match mount(src, target, fstype, data) {
            Ok(()) => {}
            // devtmpfs may already be mounted by CONFIG_DEVTMPFS_MOUNT.
            Err(e) if e.contains("Device or resource busy") => {}
            Err(e) => log(&e),
        }
    }
}

/// Fails when the kernel brought up another number of CPUs than the host
/// gave the machine (`given`; 0 checks nothing). A kernel that finds no
/// local APIC runs on one CPU whatever QEMU was given, and says so only at
/// a level the boot console does not show.
pub fn cpus_as_given(given: u32) -> Result<(), String> {
    const ONLINE: &str = "/sys/devices/system/cpu/online";
    if given == 0 {
        return Ok(());
    }
    let list = std::fs::read_to_string(ONLINE).map_err(|e| format!("{ONLINE}: {e}"))?;
    let online = count_cpus(list.trim()).ok_or_else(|| format!("{ONLINE}: cannot read {:?}", list.trim()))?;
    if online != given {
        return Err(format!(
            "the kernel runs on {online} CPU(s) (online: {}), the machine was given {given}: does the kernel find the \
             local APIC (X86_MPPARSE with acpi=noirq)?",
            list.trim()
        ));
    }
    Ok(())
}

/// How many CPUs a sysfs CPU list names ("0", "0-3", "0-1,4").
fn count_cpus(list: &str) -> Option<u32> {
    let mut n = 0;
    for part in list.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<u32>().ok()?.checked_sub(a.parse::<u32>().ok()?)? + 1,
            None => part.parse::<u32>().map(|_| 1).ok()?,
        };
    }
    Some(n)
}

/// The console log level PID 1 keeps: the kernel's default, every message
/// up to KERN_INFO. A hung task's stack, for one, is KERN_INFO.
const CONSOLE_LEVEL: u32 = 7;

/// The guest kernel boots with `loglevel=5` (xtask's kernel command line):
/// its informational boot messages stay in the log buffer (`dmesg`) instead
/// of costing serial output under TCG, while warnings and worse still reach
/// the console. From PID 1 on, the console shows what it shows by default
/// again; a higher level someone asked for (`--kernel-arg loglevel=8`,
/// `ignore_loglevel`) is kept.
pub fn restore_console_level() {
    const PRINTK: &str = "/proc/sys/kernel/printk";
    let current = std::fs::read_to_string(PRINTK)
        .map_err(|e| e.to_string())
        .and_then(|t| t.split_whitespace().next().and_then(|l| l.parse::<u32>().ok()).ok_or(format!("'{t}'")));
    match current {
        Ok(level) if level >= CONSOLE_LEVEL => {}
        Ok(_) => {
            if let Err(e) = std::fs::write(PRINTK, CONSOLE_LEVEL.to_string()) {
                log(&format!("cannot raise the console log level ({PRINTK}): {e}"));
            }
        }
        Err(e) => log(&format!("cannot read the console log level ({PRINTK}): {e}")),
    }
}

/// Seconds since the kernel started (CLOCK_BOOTTIME), the clock its log's
/// timestamps count from.
pub fn since_boot() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which `t` is.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

pub fn sync() {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Unmounts the NVDIMM filesystems, syncs and powers off. Never returns.
pub fn power_off() -> ! {
    sync();
    if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
        for target in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|t| t.starts_with("/mnt/")) {
            if let Err(e) = dax_seal_sys::calls::umount(std::path::Path::new(target)) {
                log(&format!("umount {target}: {e}"));
            }
        }
    }
    sync();
    log("powering off");
    // SAFETY: reboot(2) with a valid command; on success it does not return.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    // Power-off failed (no ACPI?): with -no-reboot a restart ends QEMU too.
    // SAFETY: as above.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// A panic here would kill init and panic the kernel, hiding the cause.
/// Report it on the console instead, then power off.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        log(&format!("internal error (bug in dax-seal-init): {info}"));
        power_off();
    }));
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGTERM => "SIGTERM",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::count_cpus;

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpus("0"), Some(1));
        assert_eq!(count_cpus("0-1"), Some(2));
        assert_eq!(count_cpus("0-1,4,6-7"), Some(5));
        assert_eq!(count_cpus(""), None);
        assert_eq!(count_cpus("1-0"), None);
        assert_eq!(count_cpus("x"), None);
    }
}
