//! `cli`: daxctl-immutable as a user runs it in the guest, on both kernels.
//! Every subcommand, its exit code, its JSON, and what it says when the
//! kernel refuses: an active swapfile, a mapped file, an unprivileged user,
//! tmpfs. On a kernel without the series the same commands must say that
//! sealing is not supported, exit 1 and leave nothing behind.
//!
//! Each case's note starts with the exit codes it saw, so the host can
//! check that the two kernels differ exactly where they should.

use std::fs;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde_json::Value;

use dax_seal_protocol::{CLI_BIN, MOUNT_PREFIX};

use crate::calls::errno_text;
use crate::cases::Cases;
use crate::fixture::{create, pattern, probe, TmpfsFile};
use crate::seal;
use crate::swap::{swapoff, swapon, write_swap_header, SWAP_SIZE};

const SIZE: u64 = 1 << 20;
const NOT_SUPPORTED: &str = "this kernel or filesystem does not support block-map sealing";

type Check = Result<String, String>;

/// One run of the CLI.
struct Run {
    args: String,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn expect(&self, code: i32) -> Result<&Run, String> {
        if self.code == code {
            Ok(self)
        } else {
            Err(format!(
                "`{}` exited {}, expected {code}; stdout {:?}, stderr {:?}",
                self.args, self.code, self.stdout, self.stderr
            ))
        }
    }

    fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.stdout)
            .map_err(|e| format!("`{}` printed no JSON ({e}): {:?}", self.args, self.stdout))
    }

    fn says(&self, text: &str) -> Result<&Run, String> {
        if self.stderr.contains(text) {
            Ok(self)
        } else {
            Err(format!("`{}` did not say {text:?}; stderr {:?}", self.args, self.stderr))
        }
    }

    fn quiet(&self) -> Result<&Run, String> {
        if self.stdout.is_empty() && self.stderr.is_empty() {
            Ok(self)
        } else {
            Err(format!("`{}` is not quiet on success: {:?} {:?}", self.args, self.stdout, self.stderr))
        }
    }
}

fn cli(args: &[&str]) -> Result<Run, String> {
    run_cli(args, false)
}

/// Runs the CLI; `unprivileged` drops CAP_LINUX_IMMUTABLE from the child's
/// bounding set before exec, so the CLI runs without it even as root.
fn run_cli(args: &[&str], unprivileged: bool) -> Result<Run, String> {
    let shown = format!("daxctl-immutable {}", args.join(" "));
    if unprivileged {
        let (code, output) = without_cap_linux_immutable(args)?;
        return Ok(Run { args: shown, code, stdout: String::new(), stderr: output });
    }
    let out = Command::new(CLI_BIN).args(args).output().map_err(|e| format!("cannot run {CLI_BIN}: {e}"))?;
    Ok(Run {
        args: shown,
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// fork, PR_CAPBSET_DROP(CAP_LINUX_IMMUTABLE), exec the CLI with stdout and
/// stderr on one pipe. Returns the exit code and everything it printed.
fn without_cap_linux_immutable(args: &[&str]) -> Result<(i32, String), String> {
    use std::ffi::CString;
    use std::io::Read;
    use std::os::fd::FromRawFd;
    const CAP_LINUX_IMMUTABLE: libc::c_ulong = 9;
    let argv: Vec<CString> = std::iter::once(CLI_BIN)
        .chain(args.iter().copied())
        .map(|a| CString::new(a).map_err(|_| format!("NUL in {a:?}")))
        .collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let mut fds = [0; 2];
    // SAFETY: a valid two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", errno_text(&std::io::Error::last_os_error())));
    }
    // SAFETY: the child only makes async-signal-safe calls, then execs or
    // leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: plain system calls on valid fds and C strings.
        unsafe {
            libc::dup2(fds[1], 1);
            libc::dup2(fds[1], 2);
            if libc::prctl(libc::PR_CAPBSET_DROP, CAP_LINUX_IMMUTABLE, 0, 0, 0) != 0 {
                libc::_exit(120);
            }
            libc::execv(ptrs[0], ptrs.as_ptr());
            libc::_exit(121);
        }
    }
    // SAFETY: closing our copy of the write end; the read end is ours.
    unsafe { libc::close(fds[1]) };
    let mut reader = unsafe { fs::File::from_raw_fd(fds[0]) };
    if pid < 0 {
        return Err(format!("fork: {}", errno_text(&std::io::Error::last_os_error())));
    }
    let mut output = String::new();
    let _ = reader.read_to_string(&mut output);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(format!("waitpid: {}", errno_text(&std::io::Error::last_os_error())));
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(120) => Err("PR_CAPBSET_DROP(CAP_LINUX_IMMUTABLE) failed in the child".into()),
        Some(121) => Err(format!("cannot exec {CLI_BIN}")),
        Some(code) => Ok((code, output)),
        None => Err(format!("the CLI died: wait status {status:#x}")),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or("?")
}

struct Env {
    dir: PathBuf,
    has_seal: bool,
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The exit code of a request the kernel must accept with the series
    /// and refuse without it.
    fn sealing(&self) -> i32 {
        if self.has_seal {
            0
        } else {
            1
        }
    }
}

type Case = fn(&Env) -> Check;

const CASES: &[(&str, Case)] = &[
    ("check", case_check),
    ("check-tmpfs", case_check_tmpfs),
    ("create-seal-status", case_create),
    ("map-and-verify", case_map_verify),
    ("seal-unseal-status", case_seal_unseal),
    ("unseal-mapped-ebusy", case_unseal_mapped),
    ("active-swapfile-etxtbsy", case_swapfile),
    ("unprivileged-eperm", case_unprivileged),
    ("tmpfs-eopnotsupp", case_tmpfs),
    ("bad-input", case_bad_input),
];

pub fn run() -> ExitCode {
    let mut t = Cases::new(1 + CASES.len());
    let env = t.check(
        "setup",
        crate::workdir::fresh(Path::new(&format!("{MOUNT_PREFIX}0")), "cli").and_then(|dir| set_up(&dir)),
    );
    let Some(env) = env else {
        for (name, _) in CASES {
            t.blocked(name, "setup");
        }
        return t.exit();
    };
    for (name, case) in CASES {
        t.check(name, case(&env).map(|note| ((), note)));
    }
    let _ = fs::remove_dir_all(&env.dir);
    t.exit()
}

fn set_up(dir: &Path) -> Result<(Env, String), String> {
    fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    if !Path::new(CLI_BIN).exists() {
        return Err(format!("{CLI_BIN} is not in the initramfs"));
    }
    let has_seal = probe(dir).is_ok();
    let note = format!(
        "the kernel {} the seal (probed with the syscall, not the CLI)",
        if has_seal { "has" } else { "lacks" }
    );
    Ok((Env { dir: dir.to_path_buf(), has_seal }, note))
}

fn case_check(env: &Env) -> Check {
    let r = cli(&["check", s(&env.dir), "--json"])?;
    r.expect(env.sealing())?;
    let v = r.json()?;
    if v["supported"] != env.has_seal || v["filesystem"] != "xfs" || v["dax"] != true {
        return Err(format!("check --json: {v}"));
    }
    if !env.has_seal && !v["reason"].as_str().unwrap_or("").contains("does not have the block-map seal series") {
        return Err(format!("check --json does not say the kernel lacks the series: {v}"));
    }
    if v["statx_reports_seal"] != env.has_seal {
        return Err(format!("check --json: statx_reports_seal {} on this kernel", v["statx_reports_seal"]));
    }
    // The guarantee it states is the one of the boot's kind of device.
    let kind = crate::fixture::pmem();
    let persistence = if kind.synchronous() { "synchronous" } else { "asynchronous" };
    if v["persistence"] != persistence || v["provider"] != kind.provider() {
        return Err(format!(
            "check --json on a {}: persistence {} from {}, not {persistence} from {}",
            kind.device(),
            v["persistence"],
            v["provider"],
            kind.provider()
        ));
    }
    let human = cli(&["check", s(&env.dir)])?;
    human.expect(env.sealing())?;
    let durability = human.stdout.lines().find(|l| l.starts_with("durability:")).unwrap_or("").to_string();
    if durability.is_empty() || !human.stdout.contains(&format!("persistence: {persistence}")) {
        return Err(format!("check does not state the {persistence} guarantee:\n{}", human.stdout));
    }
    Ok(format!(
        "exit {}: {}; {persistence} ({}): {durability}",
        r.code,
        v["reason"].as_str().unwrap_or(""),
        kind.provider()
    ))
}

fn case_check_tmpfs(_: &Env) -> Check {
    let tmpfs = TmpfsFile::new()?;
    let r = cli(&["check", s(&tmpfs.dir), "--json"])?;
    r.expect(1)?;
    let v = r.json()?;
    if v["supported"] != false || v["filesystem"] != "tmpfs" {
        return Err(format!("check --json on tmpfs: {v}"));
    }
    Ok(format!("exit 1: {}", v["reason"].as_str().unwrap_or("")))
}

/// create --seal makes a sealed, filled, DAX target with no hole; without
/// the series it fails and leaves no file behind.
fn case_create(env: &Env) -> Check {
    let f = env.path("created");
    let r = cli(&["create", s(&f), "--size", "1M", "--fill", "0x5a", "--seal"])?;
    r.expect(env.sealing())?;
    if !env.has_seal {
        r.says(NOT_SUPPORTED)?;
        if f.exists() {
            return Err("a failed create --seal left the file behind".into());
        }
        // Without --seal it works on any kernel.
        cli(&["create", s(&f), "--size", "1M", "--fill", "0x5a"])?.expect(0)?.quiet()?;
    } else {
        r.quiet()?;
    }
    let bytes = fs::read(&f).map_err(|e| format!("read {}: {e}", f.display()))?;
    if bytes != pattern_of(&[0x5a], SIZE) {
        return Err("the created file does not hold the fill pattern".into());
    }
    let st = cli(&["status", s(&f), "--json"])?;
    st.expect(0)?;
    let v = &st.json()?[0];
    let sealed = if env.has_seal { Value::Bool(true) } else { Value::Null };
    let want = [
        ("sealed", sealed),
        ("dax", Value::Bool(true)),
        ("active_swapfile", Value::Bool(false)),
        ("size", Value::from(SIZE)),
        ("holes", Value::Bool(false)),
        ("unwritten", Value::Bool(false)),
        ("shared", Value::Bool(false)),
    ];
    for (key, value) in want {
        if v[key] != value {
            return Err(format!("status --json: {key} is {}, expected {value}: {v}", v[key]));
        }
    }
    if v["allocated_bytes"].as_u64().unwrap_or(0) < SIZE || v["extents"].as_u64().unwrap_or(0) == 0 {
        return Err(format!("status --json: allocation does not cover the file: {v}"));
    }
    let human = cli(&["status", s(&f)])?;
    human.expect(0)?;
    let first = if env.has_seal { "sealed, DAX" } else { "seal unknown" };
    if !human.stdout.contains(first) {
        return Err(format!("status says {:?}, expected {first:?}", human.stdout));
    }
    if env.has_seal {
        cli(&["unseal", s(&f)])?.expect(0)?;
    }
    let _ = fs::remove_file(&f);
    Ok(format!("create --seal exit {}; status: sealed {}, dax, no holes", r.code, v["sealed"]))
}

fn pattern_of(p: &[u8], len: u64) -> Vec<u8> {
    p.iter().copied().cycle().take(len as usize).collect()
}

/// map --json matches FIEMAP; verify passes against it and fails, with
/// the moved extent, once the map changes.
fn case_map_verify(env: &Env) -> Check {
    let f = env.path("mapped-out");
    let file = create(&f, 0x42, SIZE)?;
    let r = cli(&["map", s(&f), "--json"])?;
    r.expect(0)?;
    let v = r.json()?;
    let ours = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    let theirs: Vec<(u64, u64, u64)> = v["extents"]
        .as_array()
        .ok_or_else(|| format!("map --json has no extents: {v}"))?
        .iter()
        .map(|e| {
            (e["logical"].as_u64().unwrap_or(0), e["physical"].as_u64().unwrap_or(0), e["length"].as_u64().unwrap_or(0))
        })
        .collect();
    let want: Vec<_> = ours.iter().map(|e| (e.logical, e.physical, e.length)).collect();
    if theirs != want {
        return Err(format!("map --json {theirs:?} is not FIEMAP's {want:?}"));
    }
    let table = cli(&["map", s(&f)])?;
    table.expect(0)?;
    if table.stdout.lines().count() != want.len() + 2 {
        return Err(format!("map prints {:?} for {} extents", table.stdout, want.len()));
    }
    let saved = env.path("map.json");
    fs::write(&saved, &r.stdout).map_err(|e| format!("write {}: {e}", saved.display()))?;
    cli(&["verify", s(&f), "--against", s(&saved)])?.expect(0)?.quiet()?;
    // Move a block: punch it out and write it back elsewhere.
    seal::fallocate(&file, seal::FALLOC_FL_PUNCH_HOLE | seal::FALLOC_FL_KEEP_SIZE, 0, 4096)
        .map_err(|e| format!("punch: {}", errno_text(&e)))?;
    let differs = cli(&["verify", s(&f), "--against", s(&saved)])?;
    differs.expect(1)?.says("differs from")?;
    let j = cli(&["verify", s(&f), "--against", s(&saved), "--json"])?;
    j.expect(1)?;
    let jv = j.json()?;
    let lines = jv["differences"].as_array().map_or(0, Vec::len);
    if jv["same"] != false || lines == 0 {
        return Err(format!("verify --json after a punch: {jv}"));
    }
    let _ = fs::remove_file(&f);
    let _ = fs::remove_file(&saved);
    let n = want.len();
    Ok(format!(
        "{n} extent{} as FIEMAP says; verify 0, then 1 with {lines} differences after a punch",
        if n == 1 { "" } else { "s" }
    ))
}

/// seal and unseal are quiet on success, and status follows them.
fn case_seal_unseal(env: &Env) -> Check {
    let f = env.path("toggled");
    create(&f, 0x43, SIZE)?;
    let r = cli(&["seal", s(&f)])?;
    r.expect(env.sealing())?;
    if !env.has_seal {
        r.says(NOT_SUPPORTED)?;
        let j = cli(&["seal", s(&f), "--json"])?;
        j.expect(1)?;
        let v = j.json()?;
        if v[0]["ok"] != false || v[0]["errno"] != "EOPNOTSUPP" {
            return Err(format!("seal --json without the series: {v}"));
        }
        let _ = fs::remove_file(&f);
        return Ok("seal exit 1: EOPNOTSUPP, explained".into());
    }
    r.quiet()?;
    let sealed = |want: bool| -> Result<(), String> {
        let v = cli(&["status", s(&f), "--json"])?.expect(0)?.json()?;
        if v[0]["sealed"] != want {
            return Err(format!("status says sealed {} where {want} was expected", v[0]["sealed"]));
        }
        Ok(())
    };
    sealed(true)?;
    cli(&["seal", s(&f)])?.expect(0)?.quiet()?;
    cli(&["unseal", s(&f)])?.expect(0)?.quiet()?;
    sealed(false)?;
    let j = cli(&["seal", s(&f), "--json"])?;
    j.expect(0)?;
    if j.json()?[0]["ok"] != true {
        return Err(format!("seal --json: {}", j.stdout));
    }
    cli(&["unseal", s(&f)])?.expect(0)?;
    let _ = fs::remove_file(&f);
    Ok("seal exit 0 (twice), unseal exit 0; quiet; status followed".into())
}

fn case_unseal_mapped(env: &Env) -> Check {
    let f = env.path("in-use");
    let file = create(&f, 0x44, SIZE)?;
    if !env.has_seal {
        let r = cli(&["unseal", s(&f)])?;
        r.expect(1)?.says(NOT_SUPPORTED)?;
        let _ = fs::remove_file(&f);
        return Ok("unseal exit 1: EOPNOTSUPP, explained".into());
    }
    cli(&["seal", s(&f)])?.expect(0)?;
    let map = crate::fixture::shared_for_stores(&file, SIZE as usize)?.0;
    let busy = cli(&["unseal", s(&f)])?;
    let busy_json = cli(&["unseal", s(&f), "--json"])?;
    drop(map);
    let after = cli(&["unseal", s(&f)])?;
    let _ = fs::remove_file(&f);
    busy.expect(1)?
        .says("is mapped or has pinned pages (io_uring fixed buffer, RDMA MR); unmap or unregister first")?;
    let v = busy_json.expect(1)?.json()?;
    if v[0]["errno"] != "EBUSY" {
        return Err(format!("unseal --json while mapped: {v}"));
    }
    after.expect(0)?.quiet()?;
    Ok("unseal while mapped: exit 1, EBUSY explained; after munmap: exit 0".into())
}

fn case_swapfile(env: &Env) -> Check {
    let dir = crate::workdir::fresh_page_cache("cli")?;
    let f = dir.join("swap");
    let r = swapfile_case(env, &f);
    let _ = swapoff(&f);
    let _ = fs::remove_file(&f);
    let _ = fs::remove_dir(&dir);
    r
}

fn swapfile_case(env: &Env, f: &Path) -> Check {
    let file = create(f, 0, SWAP_SIZE)?;
    write_swap_header(&file, SWAP_SIZE).map_err(|e| format!("swap header: {}", errno_text(&e)))?;
    drop(file);
    if env.has_seal {
        cli(&["seal", s(f)])?.expect(0)?;
    }
    swapon(f).map_err(|e| format!("swapon: {}", errno_text(&e)))?;
    let v = cli(&["status", s(f), "--json"])?.expect(0)?.json()?;
    if v[0]["active_swapfile"] != true || v[0]["dax"] != false {
        return Err(format!("status --json of an active swapfile: {v}"));
    }
    let unseal = cli(&["unseal", s(f)])?;
    let seal = cli(&["seal", s(f)])?;
    let why = if env.has_seal { "is an active swapfile; swapoff first" } else { NOT_SUPPORTED };
    unseal.expect(1)?.says(why)?;
    seal.expect(1)?.says(why)?;
    swapoff(f).map_err(|e| format!("swapoff: {}", errno_text(&e)))?;
    if env.has_seal {
        cli(&["unseal", s(f)])?.expect(0)?;
    }
    Ok(format!("status: active swapfile; seal and unseal exit 1: {why}"))
}

/// A user without CAP_LINUX_IMMUTABLE: root, with the capability dropped
/// from the bounding set before exec (the guest's kernel has no user
/// namespaces and its init no other users).
fn case_unprivileged(env: &Env) -> Check {
    let f = env.path("unprivileged");
    create(&f, 0x45, SIZE)?;
    let r = run_cli(&["seal", s(&f)], true)?;
    let still = cli(&["status", s(&f), "--json"])?.expect(0)?.json()?;
    let _ = fs::remove_file(&f);
    let why = if env.has_seal { format!("seal {} needs CAP_LINUX_IMMUTABLE", s(&f)) } else { NOT_SUPPORTED.into() };
    r.expect(1)?.says(&why)?;
    if still[0]["sealed"] == true {
        return Err("the file is sealed after a refused seal".into());
    }
    Ok(format!("seal without CAP_LINUX_IMMUTABLE: exit 1: {}", r.stderr.trim()))
}

fn case_tmpfs(_: &Env) -> Check {
    let tmpfs = TmpfsFile::new()?;
    let f = tmpfs.dir.join("f");
    let r = cli(&["seal", s(&f)])?;
    r.expect(1)?.says(NOT_SUPPORTED)?;
    Ok("seal on tmpfs: exit 1, not supported".into())
}

/// Bad input exits 2 (usage) or 3 (input) with a message, and changes
/// nothing: the same on every kernel.
fn case_bad_input(env: &Env) -> Check {
    let missing = env.path("missing");
    let keep = env.path("keep");
    let file = create(&keep, 0x46, SIZE)?;
    let before = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    let bad_map = env.path("bad.json");
    fs::write(&bad_map, "{\"version\": 1, \"extents\": 3}").map_err(|e| format!("write: {e}"))?;
    let cases: [(Vec<&str>, i32, &str); 7] = [
        (vec!["seal", s(&missing)], 3, "no such file"),
        (vec!["status", s(&missing)], 3, "no such file"),
        (vec!["seal", s(&env.dir)], 3, "is a directory"),
        (vec!["create", s(&missing), "--size", "12Q"], 2, "unknown suffix"),
        (vec!["verify", s(&keep), "--against", s(&bad_map)], 3, "not a `daxctl-immutable map --json` file"),
        (vec!["create", s(&keep), "--size", "4K"], 3, "--force"),
        (vec!["frobnicate"], 2, "unrecognized subcommand"),
    ];
    for (args, code, says) in &cases {
        cli(args)?.expect(*code)?.says(says)?;
    }
    if missing.exists() {
        return Err("bad input created a file".into());
    }
    let after = seal::fiemap(&file).map_err(|e| format!("FIEMAP: {}", errno_text(&e)))?;
    let mut bytes = vec![0u8; SIZE as usize];
    file.read_exact_at(&mut bytes, 0).map_err(|e| format!("pread: {e}"))?;
    if after != before || bytes != pattern(0x46, SIZE) {
        return Err("bad input changed the existing file".into());
    }
    let _ = fs::remove_file(&keep);
    let _ = fs::remove_file(&bad_map);
    Ok(format!("{} kinds of bad input: exit 2 or 3, explained, nothing changed", cases.len()))
}
