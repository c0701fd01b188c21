//! `dax-seal-init`: PID 1 of the test guest.
//!
//! Owns the guest's life from the kernel's hand-over to power-off: mounts the
//! pseudo filesystems, finds the KTAP results port, reads the run
//! configuration the host packed into the initramfs, turns every persistent-memory region
//! into a mounted DAX XFS, runs the workloads and `--exec` commands, reports
//! each as KTAP, and powers off. It never panics on purpose: every error is a
//! `not ok` line with the reason, and even a bug ends in sync and power-off.

mod cxl;
mod machine;
mod nvdimm;
mod report;

use std::process::ExitStatus;

use dax_seal_protocol::{ktap::TestResult, RunConfig, SHELL_BANNER};

use report::Report;

fn main() {
    machine::install_panic_hook();
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    machine::mount_pseudo_filesystems();
    let started = machine::since_boot();
    machine::restore_console_level();
    let mut report = Report::open();
    let config = RunConfig::read();
    // Without a configuration only the failed set-up can be reported.
    report.start(config.as_ref().map_or(1, |c| c.expected_tests().len()));

    let config = match config {
        Ok(config) => config,
        Err(reason) => {
            report.single("setup", &TestResult::Fail(reason));
            machine::power_off();
        }
    };
    // The bench reads "init at" for the kernel's boot time.
    log(&format!("kernel variant {}, workloads {:?}, init at {started:.3} s", config.kernel, config.workloads));
    let mounted = match machine::cpus_as_given(config.cpus) {
        Err(reason) => {
            report.single("setup", &TestResult::Fail(reason));
            false
        }
        Ok(()) => {
            nvdimm::set_up_all(&mut report, config.pmem, config.fresh, config.mkfs, &config.blank_label_areas, |i| {
                config.dax_mode(i)
            })
        }
    };

    if config.shell {
        run_shell();
        machine::power_off();
    }
    for name in &config.workloads {
        if mounted {
            report.workload(name);
        } else {
            report.single(name, &TestResult::Fail("set-up failed (see setup): nothing to run on".into()));
        }
    }
    if !config.exec.is_empty() {
        report.exec_commands(&config.exec);
    }
    report.finish();
    machine::power_off();
}

/// Interactive busybox shell on the console with job control.
fn run_shell() {
    eprintln!("{SHELL_BANNER}; persistent memory is mounted under /mnt. Exit the shell to power off.");
    let status = std::process::Command::new("/bin/busybox").args(["setsid", "cttyhack", "/bin/sh", "-l"]).status();
    if let Err(e) = status {
        log(&format!("cannot start /bin/sh: {e}"));
    }
}

pub fn log(message: &str) {
    eprintln!("dax-seal-init: {message}");
}

/// "exited with status 3" / "killed by signal 9 (SIGKILL)".
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig} ({})", machine::signal_name(sig)),
        _ => "ended in an unknown way".to_string(),
    }
}
