//! `cargo xtask run` and `cargo xtask shell`: check the request, build what
//! is missing, boot each kernel variant on its own NVDIMM images, judge, and
//! write the run's outputs under images/runs/<run-id>/.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dax_seal_protocol::ktap::Verdict;
use dax_seal_protocol::RunConfig;

use crate::cli::{GuestArgs, RunArgs, ShellArgs};
use crate::paths;
use crate::report::results::{self, Results, WorkloadRun};
use crate::vm::boot;
use crate::vm::qemu::{self, Console};
use crate::vm::request::{prepare, BootRequest, Ready, Streaming};

/// Workload names as given, or the default set; unknown names are refused.
pub fn select_workloads(names: &[String]) -> Result<Vec<String>> {
    if names.is_empty() {
        return Ok(dax_seal_protocol::default_workloads().map(|w| w.name.to_string()).collect());
    }
    let unknown: Vec<&String> = names.iter().filter(|n| dax_seal_protocol::workload(n).is_none()).collect();
    if !unknown.is_empty() {
        let known: Vec<String> =
            dax_seal_protocol::WORKLOADS.iter().map(|w| format!("  {:<18} {}", w.name, w.summary)).collect();
        bail!(
            "unknown workload {}. Known workloads:\n{}\nName one or more with --workload NAME, or leave --workload out to run the default set.",
            unknown.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", "),
            known.join("\n")
        );
    }
    Ok(names.to_vec())
}

/// Refuses bad guest flags before anything is built or written.
fn check_guest_args(guest: &GuestArgs) -> Result<()> {
    for inc in &guest.include {
        if !inc.host.exists() {
            bail!("--include {}: no such file or directory on the host", inc.host.display());
        }
    }
    guest.vm.machine().check()
}

/// What a rerun boots after the attempts whose judged runs are `runs`:
/// the workloads that failed, and the `--exec` commands if they did; all
/// of them when set-up or the boot itself failed.
fn failed_again(runs: &[WorkloadRun], workloads: &[String], exec: &[String]) -> (Vec<String>, Vec<String>) {
    let failed = |w: &str| runs.iter().any(|r| r.workload == w && r.verdict == Verdict::Fail);
    let all = failed("setup") || failed("boot");
    let again = workloads.iter().filter(|w| all || failed(w)).cloned().collect();
    let exec = if all || failed("exec") { exec.to_vec() } else { Vec::new() };
    (again, exec)
}

/// A new images/runs/<id>/ and the `latest` link to it.
fn new_run_dir() -> Result<(String, PathBuf)> {
    paths::new_output_dir("runs")
}

/// What every boot of one `run` shares.
struct Ctx<'a> {
    args: &'a RunArgs,
    workloads: &'a [String],
    machine: &'a crate::vm::machine::Machine,
    run_id: &'a str,
    run_dir: &'a std::path::Path,
    images_dir: &'a std::path::Path,
    loops: u32,
}

/// One kernel's boots in loop `iteration`: the first, then reruns of what
/// failed (`--rerun-failed`); its judged runs and boot records.
fn boot_kernel(ctx: &Ctx, ready: &Ready, iteration: u32) -> Result<(Vec<WorkloadRun>, Vec<results::BootRecord>)> {
    let (args, guest, machine) = (ctx.args, &ctx.args.guest, ctx.machine);
    let (prepared, variant) = (&ready.prepared, ready.variant);
    let name = prepared.name(variant);
    // Each iteration's logs and runs are told apart when there are several.
    let looped = if ctx.loops > 1 { format!("-loop{}", iteration + 1) } else { String::new() };
    let boot = |attempt: u32, workloads: &[String], exec: &[String]| -> Result<_> {
        let config = RunConfig {
            kernel: name.to_string(),
            workloads: workloads.to_vec(),
            exec: exec.to_vec(),
            fresh: guest.fresh,
            shell: false,
            params: args.params.iter().cloned().collect(),
            dax: guest.dax.0.clone(),
            run: format!("run {}", ctx.run_id),
            mkfs: Default::default(),
            fstests: Default::default(),
            attempt,
            iteration,
            pmem: machine.pmem,
            // Read from the images and the machine when the boot starts
            // (BootRequest::vm).
            blank_label_areas: Vec::new(),
            cpus: 0,
        };
        // A rerun boots on fresh images of its own in the run's directory:
        // the user's images keep what the first boot left.
        let rerun_set = format!("{name}{looped}-rerun{attempt}");
        let tag = if attempt == 0 { looped.clone() } else { format!("{looped}-rerun{attempt}") };
        let request = BootRequest {
            prepared,
            variant,
            config: config.clone(),
            includes: &guest.include,
            machine,
            images_dir: if attempt == 0 { ctx.images_dir } else { ctx.run_dir },
            image_set: (attempt > 0).then_some(rerun_set.as_str()),
            out_dir: ctx.run_dir,
            fresh: guest.fresh || attempt > 0,
            tag: &tag,
            kill_at: None,
            root_disk: None,
        };
        eprintln!("[run] booting {name}{tag}: workloads {}", workloads.join(", "));
        let outcome = request.boot()?;
        eprintln!("[run] {name}{tag}: {} after {:.1} s", outcome.end.describe(), outcome.elapsed.as_secs_f64());
        if !outcome.end.is_clean() {
            eprintln!("[run] {name}{tag}: QEMU command line: {}", outcome.command_line);
        }
        if attempt > 0 {
            // Fresh images for one rerun: not kept after it.
            request.images().remove(machine.pmem, machine.devices());
        }
        Ok(results::judged(name, prepared, &config, &outcome))
    };
    let (mut runs, first) = boot(0, ctx.workloads, &args.exec)?;
    let mut boots = vec![first];
    for attempt in 1..=args.rerun_failed {
        let (again, exec) = failed_again(&runs, ctx.workloads, &args.exec);
        if again.is_empty() && exec.is_empty() {
            break;
        }
        let (rerun, record) = boot(attempt, &again, &exec)?;
        boots.push(record.labelled(&format!("rerun {attempt}")));
        runs = results::fold_rerun(runs, rerun, attempt);
    }
    // Its verdicts as soon as it is done, while other kernels build or boot.
    eprintln!("[run] {}", results::kernel_line(name, &runs));
    Ok((runs, boots))
}

pub fn cmd(args: &RunArgs) -> Result<ExitCode> {
    let workloads = select_workloads(&args.workloads)?;
    let guest = &args.guest;
    check_guest_args(guest)?;
    let variants = args.kernel.variants();
    let machine = guest.vm.machine();
    // Bad input (a source, a missing package) is refused before the run's
    // directory exists.
    let choices = guest.source.choices()?;
    let streaming = Streaming::new(&choices, &variants)?;
    // Kernels boot as they are built, cached ones first; every output lists
    // them in the order asked for: trees as in the table, then variants.
    let order: Vec<String> = choices
        .iter()
        .flat_map(|c| variants.iter().map(|v| crate::build::kernel::kernel_name(&c.tree.name, *v)))
        .collect();
    let (run_id, run_dir) = new_run_dir()?;
    let images_dir = paths::images_dir();
    let jobs = args.jobs.map_or_else(crate::jobs::default_jobs, |j| j as usize);
    let loops = args.loops();
    let ctx = Ctx {
        args,
        workloads: &workloads,
        machine: &machine,
        run_id: &run_id,
        run_dir: &run_dir,
        images_dir: &images_dir,
        loops,
    };
    let started = Instant::now();
    let (mut runs, mut boots) = (Vec::new(), Vec::new());
    // The first loop boots each kernel as soon as it is built; later loops
    // boot them all again, up to `jobs` at once.
    let mut ready: Vec<Ready> = Vec::new();
    let mut first: Vec<Result<(Vec<WorkloadRun>, Vec<results::BootRecord>)>> = Vec::new();
    let build_failures = streaming.run(machine.accel, |batch| {
        if ready.is_empty() {
            eprintln!("[run] {}", batch[0].prepared.accel_line(&machine));
        }
        first.extend(crate::jobs::in_parallel(jobs, batch.iter().collect(), |r| boot_kernel(&ctx, r, 0)));
        ready.extend(batch);
        Ok(())
    })?;
    // A kernel that did not build fails the run, with what make said.
    let built: Vec<WorkloadRun> = build_failures
        .iter()
        .map(|f| {
            let case = results::CaseResult::new("kernel build", Verdict::Fail, format!("{:#}", f.error));
            WorkloadRun::new(&f.kernel, "build", vec![case])
        })
        .collect();
    for iteration in 0..loops {
        let booted = if iteration == 0 {
            std::mem::take(&mut first)
        } else {
            crate::jobs::in_parallel(jobs, ready.iter().collect(), |r| boot_kernel(&ctx, r, iteration))
        };
        let (mut r, mut b) = results::gather(booted)?;
        r.extend(built.iter().cloned());
        let rank = |kernel: &str| order.iter().position(|k| k == kernel).unwrap_or(order.len());
        r.sort_by_key(|run| rank(&run.kernel));
        b.sort_by_key(|boot| rank(&boot.kernel));
        let failed = results::verdict_of(&r, args.flaky_fails) == Verdict::Fail;
        let label = |l: &str| {
            if loops > 1 {
                format!("loop {} {l}", iteration + 1).trim_end().to_string()
            } else {
                l.to_string()
            }
        };
        runs.extend(r.into_iter().map(|r| {
            let l = label(&r.label);
            r.labelled(&l)
        }));
        boots.extend(b.into_iter().map(|b| {
            let l = label(&b.label);
            b.labelled(&l)
        }));
        if loops > 1 {
            eprintln!("[run] loop {}/{loops}: {}", iteration + 1, if failed { "failed" } else { "passed" });
        }
        if failed && args.loop_until_fail {
            eprintln!("[run] --loop-until-fail: stopping after the first failed loop");
            break;
        }
        if args.loop_seconds.is_some_and(|s| started.elapsed().as_secs() >= s) && iteration + 1 < loops {
            eprintln!(
                "[run] --loop-seconds: {} s passed, stopping after loop {}",
                started.elapsed().as_secs(),
                iteration + 1
            );
            break;
        }
    }
    let rates = if loops > 1 { results::rates(&runs) } else { Vec::new() };
    let verdict = results::verdict_of(&runs, args.flaky_fails);
    let results = Results { verdict, run_id, runs, boots, xtask_peak_rss_kib: results::peak_rss_kib(), rates };
    // The verdicts reach the terminal even when the disk is too full to
    // keep them.
    let written = results::write_all(&run_dir, &results);
    println!("{}", results::summary(&results));
    written.context("the verdicts above could not be saved")?;
    println!("outputs: {}", run_dir.display());
    Ok(results.exit_code())
}

pub fn shell(args: &ShellArgs) -> Result<ExitCode> {
    let guest = &args.guest;
    check_guest_args(guest)?;
    let machine = guest.vm.machine();
    let prepared = prepare(&[args.kernel], &guest.source.choice()?, machine.accel)?;
    eprintln!("[shell] {}", prepared.accel_line(&machine));
    let out_dir = paths::images_dir().join("shell");
    let images_dir = paths::images_dir();
    let request = BootRequest {
        prepared: &prepared,
        variant: args.kernel,
        config: RunConfig {
            kernel: prepared.name(args.kernel).into(),
            fresh: guest.fresh,
            shell: true,
            dax: guest.dax.0.clone(),
            run: "shell".into(),
            ..Default::default()
        },
        includes: &guest.include,
        machine: &machine,
        images_dir: &images_dir,
        image_set: None,
        out_dir: &out_dir,
        fresh: guest.fresh,
        tag: "",
        kill_at: None,
        root_disk: None,
    };
    paths::ensure_dir(&out_dir)?;
    let _images = request.images().lock()?;
    let vm = request.vm(Console::Interactive)?;
    let argv = qemu::argv(&vm);
    eprintln!("[shell] {} {}", qemu::QEMU, boot::shell_quote(&argv));
    eprintln!("[shell] exit the guest shell to power off; Ctrl-A X quits QEMU at once");
    let status = std::process::Command::new(qemu::QEMU)
        .args(&argv)
        .status()
        .with_context(|| format!("cannot start {}", qemu::QEMU))?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_selection() {
        assert_eq!(
            select_workloads(&[]).unwrap(),
            [
                "dax-smoke",
                "seal-conformance",
                "cli",
                "seal-lifetime",
                "pinned-dma",
                "swap-pressure",
                "userspace-flush",
                "seal-race"
            ]
        );
        assert_eq!(select_workloads(&["selftest-silent".into()]).unwrap(), ["selftest-silent"]);
        let err = select_workloads(&["dax-smoke".into(), "nope".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown workload \"nope\"") && err.contains("dax-smoke"), "{err}");
    }

    #[test]
    fn timestamps_look_right() {
        let t = paths::timestamp();
        assert_eq!(t.len(), 15, "{t}");
        assert!(t.starts_with("20") && t.as_bytes()[8] == b'-', "{t}");
    }
}
