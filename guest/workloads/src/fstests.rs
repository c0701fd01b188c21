//! `fstests-dax` and `fstests-nondax`: the community's filesystem tests on the
//! two NVDIMMs, inside the Debian root image `cargo xtask fstests` attaches.
//!
//! The section's plan (groups, tests, exclusions) comes from run.json. The
//! workload mounts the root image, lends it /dev, /proc and /sys, unmounts
//! the NVDIMMs init mounted (fstests makes its own filesystems on them),
//! writes fstests' `local.config`, lists the selected tests with `check -n`
//! and runs them with one `check -R xunit`. check appends each finished
//! test to its xunit fragment (`$TMPDIR/<pid>.report.xunit.<section>.xml`)
//! before the next starts; the workload reads the fragment as it grows, so
//! every test is a case as soon as it ends: pass, fail with fstests'
//! message and the head of its output diff and kernel log, or skip with
//! the reason fstests gave. A test still running after [`TEST_LIMIT`] is
//! killed and fails, and check starts again with the tests after it.
//! check's own output goes to the console.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dax_seal_protocol::fstests::{self, Plan, Section, FSTESTS_DIR, ROOT_MOUNT, ROOT_SERIAL};
use dax_seal_protocol::{RunConfig, MOUNT_PREFIX};

use crate::calls;
use crate::cases::Cases;
use crate::fixture::tail;

/// A test still running after this long is killed and fails.
const TEST_LIMIT: Duration = Duration::from_secs(1800);
/// While a test runs, a line on the console this often: a guest that
/// stops printing is hung, one that prints is merely slow (TCG).
const HEARTBEAT: Duration = Duration::from_secs(60);
/// Lines of a failure's output diff and kernel log kept in its case.
const DETAIL_LINES: usize = 30;
const EXCLUDE_FILE: &str = "dax-seal.exclude";
/// The NVDIMMs' block devices, kept by the first section for the next.
const DEVICES_FILE: &str = "/etc/dax-seal/fstests-devices";

pub fn dax() -> ExitCode {
    run("fstests-dax")
}

pub fn nondax() -> ExitCode {
    run("fstests-nondax")
}

fn run(workload: &str) -> ExitCode {
    let section = match fstests::section_of_workload(workload) {
        Some(s) => s,
        None => return fail_setup(&format!("{workload} is not an fstests section workload")),
    };
    let plan = match RunConfig::read() {
        Err(e) => return fail_setup(&e),
        Ok(config) => match config.fstests.get(section.name) {
            Some(plan) => plan.clone(),
            None => {
                return fail_setup(&format!(
                    "run.json has no fstests plan for section {}: start fstests with `cargo xtask fstests --src DIR`",
                    section.name
                ))
            }
        },
    };
    let listed = match set_up(section, &plan) {
        Ok(v) => v,
        Err(e) => return fail_setup(&e),
    };
    let mut cases = Cases::new(listed.len() + 1);
    cases.check("fstests set-up and test list", Ok(((), format!("{} tests selected", listed.len()))));
    let mut to_run = Vec::new();
    for l in listed {
        match l {
            Listed::Excluded(name) => cases.skip(&name, &format!("excluded (the exclude list names {name})")),
            Listed::Run(name) => to_run.push(name),
        }
    }
    run_tests(section, &to_run, &mut cases);
    cases.exit()
}

fn fail_setup(reason: &str) -> ExitCode {
    let mut cases = Cases::new(1);
    cases.check::<()>("fstests set-up and test list", Err(reason.to_string()));
    cases.exit()
}

enum Listed {
    Run(String),
    Excluded(String),
}

/// Mounts the root, frees the NVDIMMs, writes the configuration and lists
/// the tests.
fn set_up(section: &Section, plan: &Plan) -> Result<Vec<Listed>, String> {
    let root = Path::new(ROOT_MOUNT);
    if calls::mounted(root).is_err() {
        let dev = root_device()?;
        std::fs::create_dir_all(root).map_err(|e| format!("mkdir {ROOT_MOUNT}: {e}"))?;
        busybox(&["mount", "-t", "ext4", &dev, ROOT_MOUNT])?;
        for dir in ["dev", "proc", "sys"] {
            busybox(&["mount", "--bind", &format!("/{dir}"), &format!("{ROOT_MOUNT}/{dir}")])?;
        }
        // bash's process substitution and fstests' helpers want these;
        // devtmpfs does not make them.
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            let link = Path::new("/dev").join(name);
            if !link.exists() {
                std::os::unix::fs::symlink(target, &link)
                    .map_err(|e| format!("ln -s {target} {}: {e}", link.display()))?;
            }
        }
    }
    let (test_dev, scratch_dev) = nvdimm_devices()?;
    let dir = root.join(FSTESTS_DIR.trim_start_matches('/'));
    if !dir.join("check").exists() {
        return Err(format!("{} has no fstests checkout at {FSTESTS_DIR}", ROOT_MOUNT));
    }
    for sub in ["mnt/test", "mnt/scratch"] {
        std::fs::create_dir_all(root.join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
    }
    write(&dir.join("local.config"), &fstests::local_config(&test_dev, &scratch_dev))?;
    write(&dir.join(EXCLUDE_FILE), &plan.exclude.iter().map(|t| format!("{t}\n")).collect::<String>())?;
    let listing = list_tests(section, plan)?;
    let tests = parse_listing(&listing, plan);
    if tests.is_empty() {
        return Err(format!("check -n selected no test; it printed:\n{}", tail(&listing, DETAIL_LINES)));
    }
    Ok(tests)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The virtio-blk disk whose serial is [`ROOT_SERIAL`].
fn root_device() -> Result<String, String> {
    let entries = std::fs::read_dir("/sys/block").map_err(|e| format!("/sys/block: {e}"))?;
    for entry in entries.flatten() {
        let serial = std::fs::read_to_string(entry.path().join("serial")).unwrap_or_default();
        if serial.trim() == ROOT_SERIAL {
            return Ok(format!("/dev/{}", entry.file_name().to_string_lossy()));
        }
    }
    Err(format!("no disk with serial {ROOT_SERIAL}: fstests runs only under `cargo xtask fstests`, which attaches its root image"))
}

/// The block devices of NVDIMMs 0 and 1 (TEST_DEV, SCRATCH_DEV), unmounted:
/// the first section frees them where init mounted them and keeps their
/// names for the next.
fn nvdimm_devices() -> Result<(String, String), String> {
    if let Ok(text) = std::fs::read_to_string(DEVICES_FILE) {
        if let Some((t, s)) = text.trim().split_once(' ') {
            return Ok((t.to_string(), s.to_string()));
        }
    }
    let devices = [0, 1].map(free_nvdimm);
    let (t, s) = match devices {
        [Ok(t), Ok(s)] => (t, s),
        [Err(e), _] | [_, Err(e)] => return Err(format!("{e} (fstests needs two NVDIMMs: TEST_DEV and SCRATCH_DEV)")),
    };
    write(Path::new(DEVICES_FILE), &format!("{t} {s}\n"))?;
    Ok((t, s))
}

/// Unmounts NVDIMM `i` where init mounted it and returns its block device.
fn free_nvdimm(i: usize) -> Result<String, String> {
    let mount = PathBuf::from(format!("{MOUNT_PREFIX}{i}"));
    let (dev, _) = calls::mounted(&mount).map_err(|e| format!("NVDIMM {i}: {e}"))?;
    calls::umount(&mount).map_err(|e| format!("umount {}: {e}", mount.display()))?;
    Ok(dev)
}

fn busybox(args: &[&str]) -> Result<(), String> {
    let out = Command::new("/bin/busybox").args(args).output().map_err(|e| format!("busybox {}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The command line of `check` in this section: the listing of the plan
/// (`-n`), or the run of the listed tests with the xunit report.
fn check_args(section: &Section, listing: Option<&Plan>, tests: &[String]) -> Vec<String> {
    let mut args = vec!["./check".to_string(), "-s".into(), section.name.into(), "-E".into(), EXCLUDE_FILE.into()];
    match listing {
        Some(plan) => {
            args.push("-n".into());
            for g in &plan.groups {
                args.extend(["-g".into(), g.clone()]);
            }
            args.extend(plan.tests.iter().cloned());
        }
        None => {
            args.extend(["-R".into(), "xunit".into()]);
            args.extend(tests.iter().cloned());
        }
    }
    args
}

/// Starts `check` inside the root with its output on a pipe.
fn spawn_check(args: &[String], recreate: bool) -> Result<Child, String> {
    let script = format!("cd {FSTESTS_DIR} && exec {} 2>&1", args.join(" "));
    let mut command = Command::new("/bin/busybox");
    command
        .args(["chroot", ROOT_MOUNT, "/bin/bash", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .env("LANG", "C")
        .env("TMPDIR", "/tmp")
        .env("RECREATE_TEST_DEV", if recreate { "true" } else { "false" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // Its own process group, so a test past its limit is killed whole.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.spawn().map_err(|e| format!("cannot start check: {e}"))
}

/// Lists the plan's tests with `check -n` and returns what it printed.
fn list_tests(section: &Section, plan: &Plan) -> Result<String, String> {
    // The listing also makes TEST_DEV anew for the section.
    let mut child = spawn_check(&check_args(section, Some(plan), &[]), true)?;
    let mut text = String::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            eprintln!("fstests: {line}");
            text.push_str(&line);
            text.push('\n');
        }
    }
    child.wait().map_err(|e| format!("waiting for check: {e}"))?;
    Ok(text)
}

/// The tests `check -n` printed, in order; those it marked `[expunged]`
/// are the exclude list's. Only names the plan could have selected count.
fn parse_listing(text: &str, plan: &Plan) -> Vec<Listed> {
    let mut tests = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        if fstests::check_test(name).is_err() {
            continue;
        }
        if line.contains("[expunged]") || plan.exclude.iter().any(|e| e == name) {
            tests.push(Listed::Excluded(name.to_string()));
        } else {
            tests.push(Listed::Run(name.to_string()));
        }
    }
    tests
}

/// Runs `tests` with check, reporting each as its xunit entry appears; a
/// test past [`TEST_LIMIT`] fails and check starts again after it.
fn run_tests(section: &Section, tests: &[String], cases: &mut Cases) {
    let mut remaining: VecDeque<String> = tests.iter().cloned().collect();
    while !remaining.is_empty() {
        let list: Vec<String> = remaining.iter().cloned().collect();
        let mut child = match spawn_check(&check_args(section, None, &list), false) {
            Ok(c) => c,
            Err(e) => {
                for name in remaining.drain(..) {
                    cases.check::<()>(&name, Err(e.clone()));
                }
                return;
            }
        };
        // check's $tmp is "$TMPDIR/$$", and check runs as the chroot's pid.
        let fragment = Path::new(ROOT_MOUNT).join(format!("tmp/{}.report.xunit.{}.xml", child.id(), section.name));
        let (tx, rx) = mpsc::channel();
        let reader = child.stdout.take().map(|out| {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    eprintln!("fstests: {line}");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
        });
        let mut printed: VecDeque<String> = VecDeque::new();
        let mut seen = 0;
        let mut last = Instant::now();
        let mut next_beat = HEARTBEAT;
        let mut killed = false;
        loop {
            let ended = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(line) => {
                    printed.push_back(line);
                    if printed.len() > DETAIL_LINES {
                        printed.pop_front();
                    }
                    false
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => true,
                Err(mpsc::RecvTimeoutError::Timeout) => false,
            };
            let text = std::fs::read_to_string(&fragment).unwrap_or_default();
            let done = finished_cases(&text);
            for (name, result) in done.iter().skip(seen) {
                report(cases, name, result, last.elapsed());
                remaining.retain(|t| t != name);
                last = Instant::now();
                next_beat = HEARTBEAT;
            }
            seen = seen.max(done.len());
            if ended {
                break;
            }
            let running = last.elapsed();
            if running >= TEST_LIMIT {
                // SAFETY: kill(2) on the process group check leads.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                killed = true;
                break;
            }
            if running >= next_beat {
                let current = remaining.front().map_or("check", String::as_str);
                eprintln!("fstests: {current} still running after {} s", running.as_secs());
                next_beat += HEARTBEAT;
            }
        }
        let status = child.wait();
        if let Some(r) = reader {
            let _ = r.join();
        }
        let tail: Vec<String> = printed.into_iter().collect();
        if killed {
            if let Some(name) = remaining.pop_front() {
                let reason =
                    format!("still running after {} s: killed, check starts again after it", TEST_LIMIT.as_secs());
                cases.note(&tail.join("\n"));
                cases.check::<()>(&name, Err(reason));
            }
            continue;
        }
        let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        if !remaining.is_empty() {
            cases.note(&tail.join("\n"));
        }
        for name in remaining.drain(..) {
            cases
                .check::<()>(&name, Err(format!("check ended ({how}) without reporting it; its last lines are above")));
        }
    }
}

fn report(cases: &mut Cases, name: &str, result: &TestResult, waited: Duration) {
    match result {
        TestResult::Pass(time) => {
            cases.check(name, Ok(((), format!("{time} s by check, {} s with its checks", waited.as_secs()))));
        }
        TestResult::NotRun(reason) => cases.skip(name, reason),
        TestResult::Fail { reason, detail } => {
            if !detail.is_empty() {
                cases.note(detail);
            }
            cases.check::<()>(name, Err(reason.clone()));
        }
    }
}

enum TestResult {
    Pass(String),
    NotRun(String),
    Fail { reason: String, detail: String },
}

/// The tests check's xunit fragment reports as finished, in order: every
/// complete `<testcase>` element (the last may still be being written).
fn finished_cases(fragment: &str) -> Vec<(String, TestResult)> {
    let Some(end) = fragment.rfind("</testcase>") else { return Vec::new() };
    let xml = format!("<testsuite>{}</testsuite>", &fragment[..end + "</testcase>".len()]);
    let Ok(doc) = roxmltree::Document::parse(&xml) else { return Vec::new() };
    doc.root_element()
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .filter_map(|case| Some((case.attribute("name")?.to_string(), verdict_of(case))))
        .collect()
}

/// The verdict of one `<testcase>` of fstests' xunit report.
fn verdict_of(case: roxmltree::Node) -> TestResult {
    let child = |tag: &str| case.children().find(|n| n.has_tag_name(tag));
    let text = |tag: &str| {
        child(tag).map(|n| n.descendants().filter_map(|d| d.text()).collect::<String>()).unwrap_or_default()
    };
    if let Some(skipped) = child("skipped") {
        let reason = skipped.attribute("message").unwrap_or("fstests gave no reason").trim().to_string();
        return TestResult::NotRun(reason);
    }
    if let Some(failure) = child("failure") {
        let reason = failure.attribute("message").unwrap_or("failed, no message").trim().to_string();
        let mut detail = Vec::new();
        let diff = text("system-err");
        if !diff.trim().is_empty() {
            detail.push(format!("output diff:\n{}", head(diff.trim(), DETAIL_LINES)));
        }
        let kernel = text("kernel-log");
        if !kernel.trim().is_empty() {
            detail.push(format!("kernel log:\n{}", head(kernel.trim(), DETAIL_LINES)));
        }
        return TestResult::Fail { reason, detail: detail.join("\n") };
    }
    TestResult::Pass(case.attribute("time").unwrap_or("?").to_string())
}

fn head(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: &str = r#"	<testcase classname="xfstests.dax" name="generic/452" time="5">
	</testcase>"#;

    const SKIP: &str = r#"	<testcase classname="xfstests.nondax" name="generic/472" time="0">
		<skipped message="swapfiles are not supported &amp; never will be" />
	</testcase>"#;

    const FAIL: &str = r#"	<testcase classname="xfstests.dax" name="xfs/550" time="3">
		<failure message="- output mismatch (see /opt/xfstests/results/dax/xfs/550.out.bad)" type="TestFail" />
		<system-out><![CDATA[
lots of .full output
]]></system-out>
		<kernel-log><![CDATA[
[  12.3] Memory failure: 0x1234: recovery action for dax page: Recovered
]]></kernel-log>
		<system-err><![CDATA[
--- tests/xfs/550.out
+++ /opt/xfstests/results/dax/xfs/550.out.bad
@@ -1,2 +1,2 @@
-Inject poison...
+Inject poison... failed
]]></system-err>
	</testcase>"#;

    /// A fragment as check leaves it while the third test still runs:
    /// two finished entries and the start of the next.
    fn fragment() -> String {
        format!("{PASS}\n{FAIL}\n{SKIP}\n\t<testcase classname=\"xfstests.dax\" name=\"generic/999\" time=\"1\">\n")
    }

    #[test]
    fn finished_xunit_entries_are_read_as_they_appear() {
        let got = finished_cases(&fragment());
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["generic/452", "xfs/550", "generic/472"], "the unfinished entry waits");
        assert!(matches!(&got[0].1, TestResult::Pass(t) if t == "5"));
        match &got[1].1 {
            TestResult::Fail { reason, detail } => {
                assert!(reason.starts_with("- output mismatch"));
                assert!(detail.contains("+Inject poison... failed"), "{detail}");
                assert!(detail.contains("Memory failure"), "{detail}");
                assert!(!detail.contains("lots of .full"), "the .full output stays in the guest");
            }
            _ => panic!("not a failure"),
        }
        assert!(matches!(&got[2].1, TestResult::NotRun(r) if r == "swapfiles are not supported & never will be"));
        assert!(finished_cases("").is_empty());
        assert!(finished_cases("\t<testcase name=\"generic/1\" time=\"1\">\n").is_empty());
        assert!(finished_cases("<garbage</testcase>").is_empty());
    }

    #[test]
    fn listing_keeps_test_lines_and_marks_the_excluded() {
        let text = "SECTION       -- dax\nRECREATING    -- xfs on /dev/pmem0\nFSTYP         -- xfs (non-debug)\n\
                    generic/413       \ngeneric/470       [expunged]\nxfs/550\nPassed all 0 tests\n";
        let plan = Plan { exclude: vec!["xfs/550".into()], ..Plan::default() };
        let got: Vec<(bool, String)> = parse_listing(text, &plan)
            .into_iter()
            .map(|l| match l {
                Listed::Run(n) => (true, n),
                Listed::Excluded(n) => (false, n),
            })
            .collect();
        assert_eq!(
            got,
            [(true, "generic/413".to_string()), (false, "generic/470".to_string()), (false, "xfs/550".to_string())]
        );
    }

    #[test]
    fn check_is_asked_for_the_plan_only_when_listing() {
        let plan = Plan { groups: vec!["dax".into()], tests: vec!["generic/470".into()], exclude: vec![] };
        let section = &fstests::SECTIONS[0];
        assert_eq!(
            check_args(section, Some(&plan), &[]).join(" "),
            "./check -s dax -E dax-seal.exclude -n -g dax generic/470"
        );
        let listed = ["generic/470".to_string(), "xfs/550".to_string()];
        assert_eq!(
            check_args(section, None, &listed).join(" "),
            "./check -s dax -E dax-seal.exclude -R xunit generic/470 xfs/550"
        );
    }
}
