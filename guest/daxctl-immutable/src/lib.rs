//! `daxctl-immutable`: seal, unseal and inspect the block maps of files on
//! a kernel with the block-map seal series (FALLOC_FL_SEAL_BLOCK_MAP).
//!
//! Quiet on success; one line per file on failure saying what the errno
//! means; `--json` on everything that reports. Exit codes (see [`Exit`]):
//! 0 done, 1 refused or "no", 2 bad usage, 3 bad input.

pub mod explain;
pub mod inspect;
pub mod map;
pub mod size;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use serde::Serialize;

use dax_seal_sys::seal;
use explain::{errno_name, explain, Op};
use map::Map;
use size::{parse_fill, parse_size, Fill};

const NAME: &str = "daxctl-immutable";

/// Exit codes a script can trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Everything asked for was done (or `check`: sealing works here).
    Ok = 0,
    /// The kernel refused, or the answer is no: a seal or unseal failed,
    /// `verify` found a different map, `check` found no support.
    Refused = 1,
    /// Bad command line: unknown option, bad size or fill (clap's code).
    Usage = 2,
    /// Bad input: a missing file, a directory, a malformed map file, a
    /// file `create` would clobber. Nothing was changed.
    BadInput = 3,
}

#[derive(Parser, Debug)]
#[command(
    name = NAME,
    version,
    about = "Seal, unseal and inspect the block maps of files (FALLOC_FL_SEAL_BLOCK_MAP)",
    long_about = "Seal, unseal and inspect the block maps of files on a Linux kernel with the block-map seal series.\n\n\
                  A sealed file's logical-to-physical block map cannot change until it is unsealed: its blocks can \
                  be handed to a device for DMA, pinned long-term through a DAX mapping, or used as a swapfile.\n\n\
                  Exit status: 0 done; 1 refused by the kernel, or the answer is no (verify: the map differs; check: \
                  no support); 2 bad usage; 3 bad input (missing file, directory, malformed map file, existing file); \
                  nothing is changed on 2 and 3."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Seal the block map of each FILE: fill its holes, unshare it, and freeze it
    Seal {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Print one JSON result per file, successes included
        #[arg(long)]
        json: bool,
    },
    /// Lift the seal of each FILE (refused while it is mapped, pinned or an active swapfile)
    Unseal {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Print one JSON result per file, successes included
        #[arg(long)]
        json: bool,
    },
    /// Show whether each FILE is sealed, DAX or a swapfile, the shape of its block map, and who maps a sealed FILE or has it open
    Status {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Print a JSON array, one object per file
        #[arg(long)]
        json: bool,
    },
    /// Print FILE's extents from FIEMAP: logical and physical offsets, lengths, flags
    Map {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print the map as JSON, the form `verify --against` reads
        #[arg(long)]
        json: bool,
    },
    /// Compare FILE's map today with one saved by `map --json`; exit 1 and show what moved if they differ
    Verify {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The saved map
        #[arg(long, value_name = "MAP.json")]
        against: PathBuf,
        /// Print the verdict and the differences as JSON
        #[arg(long)]
        json: bool,
    },
    /// Make a ready-to-use target: allocate FILE, write it, optionally seal it
    Create {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Size, with an optional K, M, G or T suffix
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// `zero`, or hexadecimal bytes repeated over the file (0x5a, 0xdeadbeef)
        #[arg(long, value_parser = parse_fill, default_value = "zero", value_name = "PATTERN|zero")]
        fill: Fill,
        /// Seal the file once it is written
        #[arg(long)]
        seal: bool,
        /// Replace FILE if it exists
        #[arg(long)]
        force: bool,
    },
    /// Find out whether this kernel and DIR's filesystem can seal files, with a scratch file
    Check {
        #[arg(value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// Print the findings as JSON
        #[arg(long)]
        json: bool,
    },
}

/// The clap definition, for man pages and shell completions.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Why one file's request did not happen, with its exit code.
#[derive(Debug)]
struct Failure {
    exit: Exit,
    text: String,
    errno: Option<i32>,
}

impl Failure {
    fn bad_input(text: impl Into<String>) -> Failure {
        Failure { exit: Exit::BadInput, text: text.into(), errno: None }
    }

    fn refused(text: impl Into<String>, errno: Option<i32>) -> Failure {
        Failure { exit: Exit::Refused, text: text.into(), errno }
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Exit::Usage as u8 } else { Exit::Ok as u8 });
        }
    };
    ExitCode::from(run(cli.command) as u8)
}

pub fn run(command: Command) -> Exit {
    match command {
        Command::Seal { files, json } => seal_each(Op::Seal, &files, json),
        Command::Unseal { files, json } => seal_each(Op::Unseal, &files, json),
        Command::Status { files, json } => status(&files, json),
        Command::Map { file, json } => map(&file, json),
        Command::Verify { file, against, json } => verify(&file, &against, json),
        Command::Create { file, size, fill, seal, force } => finish(create(&file, size, &fill, seal, force)),
        Command::Check { dir, json } => check(&dir, json),
    }
}

fn report(failure: &Failure) {
    eprintln!("{NAME}: {}", failure.text);
}

fn finish(r: Result<(), Failure>) -> Exit {
    match r {
        Ok(()) => Exit::Ok,
        Err(f) => {
            report(&f);
            f.exit
        }
    }
}

fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("{NAME}: cannot print JSON: {e}"),
    }
}

/// Opens a regular file, telling bad input (missing, a directory, not a
/// regular file) from a refusal.
fn open_regular(path: &Path, write: bool) -> Result<File, Failure> {
    let shown = path.display();
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Failure::bad_input(format!("{shown}: no such file")),
        _ => Failure::bad_input(format!("{shown}: {e}")),
    })?;
    if meta.is_dir() {
        return Err(Failure::bad_input(format!("{shown} is a directory; give a regular file")));
    }
    if !meta.is_file() {
        return Err(Failure::bad_input(format!("{shown} is not a regular file")));
    }
    OpenOptions::new().read(true).write(write).open(path).map_err(|e| {
        let how = if write { "for writing" } else { "for reading" };
        Failure::refused(format!("cannot open {shown} {how}: {e}"), e.raw_os_error())
    })
}

/// Whether the file carries chattr +i (the other cause of EPERM).
fn is_immutable(file: &File) -> bool {
    const FS_XFLAG_IMMUTABLE: u32 = 0x8;
    seal::fsgetxattr(file).is_ok_and(|x| x.xflags & FS_XFLAG_IMMUTABLE != 0)
}

fn seal_one(op: Op, path: &Path) -> Result<(), Failure> {
    let file = open_regular(path, true)?;
    let r = match op {
        Op::Seal => seal::seal(&file),
        Op::Unseal => seal::unseal(&file),
    };
    r.map_err(|e| refusal(op, path, &e, is_immutable(&file)))
}

/// A refused SEAL or UNSEAL, explained for `path`.
fn refusal(op: Op, path: &Path, e: &io::Error, immutable: bool) -> Failure {
    match e.raw_os_error() {
        Some(errno) => Failure::refused(explain(op, &path.display().to_string(), errno, immutable), Some(errno)),
        None => Failure::refused(format!("{} {}: {e}", op.name(), path.display()), None),
    }
}

#[derive(Serialize)]
struct SealResult {
    file: String,
    ok: bool,
    errno: Option<String>,
    error: Option<String>,
}

fn seal_each(op: Op, files: &[PathBuf], json: bool) -> Exit {
    let mut exit = Exit::Ok;
    let mut results = Vec::new();
    for path in files {
        let r = seal_one(op, path);
        if let Err(f) = &r {
            exit = exit.max(f.exit);
            if !json {
                report(f);
            }
        }
        results.push(SealResult {
            file: path.display().to_string(),
            ok: r.is_ok(),
            errno: r.as_ref().err().and_then(|f| f.errno).map(errno_name),
            error: r.err().map(|f| f.text),
        });
    }
    if json {
        print_json(&results);
    }
    exit
}

fn status(files: &[PathBuf], json: bool) -> Exit {
    let mut exit = Exit::Ok;
    let mut all = Vec::new();
    for path in files {
        let r = open_regular(path, false).and_then(|f| {
            inspect::status(path, &f)
                .map_err(|e| Failure::refused(format!("{}: {e}", path.display()), e.raw_os_error()))
        });
        match r {
            Ok(s) if json => all.push(s),
            Ok(s) => print!("{}", s.text()),
            Err(f) => {
                report(&f);
                exit = exit.max(f.exit);
            }
        }
    }
    if json {
        print_json(&all);
    }
    exit
}

fn read_map(path: &Path) -> Result<Map, Failure> {
    let file = open_regular(path, false)?;
    let size =
        file.metadata().map(|m| m.len()).map_err(|e| Failure::refused(format!("{}: {e}", path.display()), None))?;
    let extents = seal::fiemap(&file)
        .map_err(|e| Failure::refused(format!("FIEMAP of {}: {e}", path.display()), e.raw_os_error()))?;
    Ok(Map::new(&path.display().to_string(), size, &extents))
}

fn map(path: &Path, json: bool) -> Exit {
    finish(read_map(path).map(|m| {
        if json {
            println!("{}", m.to_json());
        } else {
            print!("{}", m.table());
        }
    }))
}

#[derive(Serialize)]
struct Verdict<'a> {
    file: String,
    against: String,
    same: bool,
    differences: &'a [String],
}

fn verify(path: &Path, against: &Path, json: bool) -> Exit {
    let saved = match fs::read_to_string(against) {
        Ok(text) => Map::from_json(&text).map_err(|e| Failure::bad_input(format!("{}: {e}", against.display()))),
        Err(e) => Err(Failure::bad_input(format!("cannot read {}: {e}", against.display()))),
    };
    let r = saved.and_then(|saved| read_map(path).map(|now| now.differences(&saved)));
    match r {
        Err(f) => finish(Err(f)),
        Ok(diff) => {
            if json {
                print_json(&Verdict {
                    file: path.display().to_string(),
                    against: against.display().to_string(),
                    same: diff.is_empty(),
                    differences: &diff,
                });
            } else if !diff.is_empty() {
                eprintln!("{NAME}: the map of {} differs from {}:", path.display(), against.display());
                for line in &diff {
                    eprintln!("  {line}");
                }
            }
            if diff.is_empty() {
                Exit::Ok
            } else {
                Exit::Refused
            }
        }
    }
}

/// Allocates, writes, syncs and optionally seals a new file. If anything
/// fails after the file was made, the file is removed again.
fn create(path: &Path, size: u64, fill: &Fill, seal_it: bool, force: bool) -> Result<(), Failure> {
    let shown = path.display().to_string();
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Err(Failure::bad_input(format!("{shown} is a directory"))),
        Ok(_) if !force => return Err(Failure::bad_input(format!("{shown} exists; give --force to replace it"))),
        Ok(m) if !m.is_file() => return Err(Failure::bad_input(format!("{shown} is not a regular file"))),
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let file = options.open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ETXTBSY) => Failure::refused(
            format!("{shown} is sealed or an active swapfile; it cannot be replaced"),
            Some(libc::ETXTBSY),
        ),
        Some(libc::ENOENT) => Failure::bad_input(format!("{shown}: its directory does not exist")),
        errno => Failure::refused(format!("cannot create {shown}: {e}"), errno),
    })?;
    let r = fill_file(&file, size, fill).and_then(|()| {
        if !seal_it {
            return Ok(());
        }
        seal::seal(&file).map_err(|e| refusal(Op::Seal, path, &e, false))
    });
    if r.is_err() {
        drop(file);
        let _ = fs::remove_file(path);
    }
    r
}

fn fill_file(file: &File, size: u64, fill: &Fill) -> Result<(), Failure> {
    const CHUNK: usize = 1 << 20;
    let fail = |what: &str, e: io::Error| Failure::refused(format!("{what}: {e}"), e.raw_os_error());
    seal::fallocate(file, 0, 0, size).map_err(|e| fail("cannot allocate the file", e))?;
    let pattern: &[u8] = match fill {
        Fill::Zero => &[0],
        Fill::Pattern(p) => p,
    };
    // A whole number of patterns, so every chunk starts in phase.
    let len = (CHUNK / pattern.len()).max(1) * pattern.len();
    let chunk: Vec<u8> = pattern.iter().copied().cycle().take(len).collect();
    let mut at = 0u64;
    while at < size {
        let n = ((size - at) as usize).min(chunk.len());
        file.write_all_at(&chunk[..n], at).map_err(|e| fail("cannot write the file", e))?;
        at += n as u64;
    }
    file.sync_all().map_err(|e| fail("cannot sync the file", e))
}

fn check(dir: &Path, json: bool) -> Exit {
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) => return finish(Err(Failure::bad_input(format!("{}: {e}", dir.display())))),
    };
    if !meta.is_dir() {
        return finish(Err(Failure::bad_input(format!("{} is not a directory", dir.display()))));
    }
    let canonical = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let c = inspect::check(&canonical);
    if json {
        print_json(&c);
    } else {
        print!("{}", c.text());
    }
    if c.supported {
        Exit::Ok
    } else {
        Exit::Refused
    }
}
