//! `cargo xtask`: the project's only build and test driver. This file is the
//! table of subcommands; each lives in its own module of the xtask library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::build::{deps, initramfs, kernel, xfsprogs};
use xtask::{bench, cli, cli_docs, crash, fstests, fuzz, man_pages, matrix, merge, run, series, submission, test};

/// Build Linux (7.3, and 6.12) with and without the block-map seal series, boot it on
/// emulated NVDIMMs under QEMU and judge what the guest workloads report.
#[derive(Parser)]
#[command(name = "cargo xtask", arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Check the host programs and Debian packages; install missing ones (root on Debian).
    Deps,
    /// Build the kernel variants (cached by their inputs).
    Kernel(cli::KernelArgs),
    /// Build the guest initramfs (cached by its inputs).
    Initramfs,
    /// Build the guest's xfsprogs: Debian's source with the seal series, static (cached).
    Xfsprogs,
    /// Build everything, boot each kernel variant, run the workloads, report verdicts.
    Run(cli::RunArgs),
    /// Boot to an interactive shell on the console with the NVDIMMs mounted.
    Shell(cli::ShellArgs),
    /// Power-loss campaign: kill QEMU while userspace-flush writes, verify on the next boot.
    Crash(crash::CrashArgs),
    /// fstests (a checkout you give) in the guest on each kernel; regressions against the baseline fail.
    Fstests(fstests::FstestsArgs),
    /// The nightly VM matrix: list, run a cell or a shard, or write the GitHub workflow.
    Matrix(matrix::MatrixArgs),
    /// Merge runs and matrix shards into one set of verdicts; fail on a missing or failed cell.
    Report(merge::ReportArgs),
    /// Check the series is bisectable: build every prefix of a tree's series in turn.
    Series(cli::SeriesArgs),
    /// Write daxctl-immutable's man pages and shell completions from its clap definition.
    CliDocs(cli::CliDocsArgs),
    /// Apply the man-pages series (fallocate.2, statx.2) to its release and lint the pages.
    ManPages(man_pages::ManPagesArgs),
    /// Write what would be mailed: the kernel series with a cover letter citing the last run, and the man pages.
    Submission(submission::SubmissionArgs),
    /// Run the whole test suite: unit tests, then VM tests on the real kernels.
    Test(cli::TestArgs),
    /// Run the property tests of every input door with many more cases, until the time is up.
    Fuzz(fuzz::FuzzArgs),
    /// Measure build and boot figures; print medians.
    Bench(cli::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Deps => deps::ensure(deps::Need::all()).map(|()| ExitCode::SUCCESS),
        Task::Kernel(args) => {
            args.source.choice().and_then(|c| kernel::cmd(&args.kernel.variants(), &c)).map(|()| ExitCode::SUCCESS)
        }
        Task::Initramfs => initramfs::cmd().map(|()| ExitCode::SUCCESS),
        Task::Xfsprogs => {
            deps::ensure(deps::Need::without_kernel_source()).and_then(|()| xfsprogs::cmd()).map(|()| ExitCode::SUCCESS)
        }
        Task::Run(args) => run::cmd(&args),
        Task::Shell(args) => run::shell(&args),
        Task::Crash(args) => crash::cmd(&args),
        Task::Fstests(args) => fstests::cmd(&args),
        Task::Matrix(args) => matrix::cmd(&args),
        Task::Report(args) => merge::cmd(&args),
        Task::Series(args) => series::cmd(&args),
        Task::CliDocs(args) => cli_docs::cmd(&args).map(|()| ExitCode::SUCCESS),
        Task::ManPages(args) => man_pages::cmd(&args).map(|()| ExitCode::SUCCESS),
        Task::Submission(args) => submission::cmd(&args),
        Task::Test(args) => test::cmd(&args),
        Task::Fuzz(args) => fuzz::cmd(&args),
        Task::Bench(args) => bench::cmd(&args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}
