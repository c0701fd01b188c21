//! Reads the guest console as it streams and recognises kernel reports:
//! panics, Oopses, BUGs, WARNINGs, lockdep and KASAN reports, hung tasks,
//! soft lockups, RCU stalls, interrupt lines disabled because nothing
//! handled them, and the death of init. Only kernel lines count
//! (they carry a `[ seconds.micros]` stamp: PRINTK_TIME is in base.config),
//! so a program that prints "BUG:" itself cannot fake or hide one.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportKind {
    Panic,
    KillInit,
    Oops,
    Bug,
    Kasan,
    Warning,
    Lockdep,
    HungTask,
    SoftLockup,
    RcuStall,
    UnhandledIrq,
}

impl ReportKind {
    pub fn describe(self) -> &'static str {
        match self {
            ReportKind::Panic => "kernel panic",
            ReportKind::KillInit => "init died (kernel panic)",
            ReportKind::Oops => "kernel Oops",
            ReportKind::Bug => "kernel BUG",
            ReportKind::Kasan => "KASAN report",
            ReportKind::Warning => "kernel WARNING",
            ReportKind::Lockdep => "lockdep report",
            ReportKind::HungTask => "hung task",
            ReportKind::SoftLockup => "soft lockup",
            ReportKind::RcuStall => "RCU stall",
            ReportKind::UnhandledIrq => "unhandled interrupt (line disabled)",
        }
    }
}

/// A recognised report: its kind, its title line and the lines after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KernelReport {
    pub kind: ReportKind,
    pub title: String,
    pub lines: Vec<String>,
}

/// Lines kept after the title of the first report.
pub const REPORT_LINES: usize = 30;

#[derive(Debug, Default)]
pub struct Scanner {
    pub first: Option<KernelReport>,
    /// Every report title seen, in order.
    pub titles: Vec<String>,
}

/// Report titles kept: a guest printing nothing but warnings must not grow
/// the host's memory.
pub const MAX_TITLES: usize = 1000;

/// The message text of a kernel console line: what follows the first
/// `[    1.234567] ` stamp anywhere in the line (user output can precede it).
pub fn kernel_text(line: &str) -> Option<&str> {
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        if let Some(close) = after.find(']') {
            let stamp = after[..close].trim_start();
            let valid = stamp.split_once('.').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            });
            if valid {
                return Some(after[close + 1..].trim_start());
            }
        }
        rest = after;
    }
    None
}

const LOCKDEP_HEADINGS: &[&str] = &[
    "possible circular locking dependency detected",
    "possible recursive locking detected",
    "inconsistent lock state",
    "suspicious RCU usage",
    "bad unlock balance detected",
    "lock held when returning to user space",
    "held lock freed",
    "possible irq lock inversion dependency detected",
    "lock order detected",
    "Nested lock was not taken",
    "bad contention detected",
    "lock held at task exit time",
];

/// Classifies one kernel message.
pub fn classify(text: &str) -> Option<ReportKind> {
    if let Some(rest) = text.strip_prefix("Kernel panic - not syncing") {
        return Some(if rest.contains("Attempted to kill init") { ReportKind::KillInit } else { ReportKind::Panic });
    }
    if text.starts_with("BUG: KASAN:") {
        return Some(ReportKind::Kasan);
    }
    if text.contains("BUG: soft lockup") {
        return Some(ReportKind::SoftLockup);
    }
    if text.starts_with("BUG: ") || text.starts_with("kernel BUG at") || text.starts_with("UBSAN:") {
        return Some(ReportKind::Bug);
    }
    if text.starts_with("Oops: ") || text.contains("general protection fault") {
        return Some(ReportKind::Oops);
    }
    if let Some(rest) = text.strip_prefix("WARNING: ") {
        return Some(if LOCKDEP_HEADINGS.iter().any(|h| rest.contains(h)) {
            ReportKind::Lockdep
        } else {
            ReportKind::Warning
        });
    }
    // "irq 11: nobody cared (try booting with the "irqpoll" option)": a
    // level-triggered line stayed asserted with no handler claiming it, and
    // the kernel disables it, leaving every device on it without interrupts.
    if text.strip_prefix("irq ").is_some_and(|r| {
        r.split_once(':')
            .is_some_and(|(n, rest)| n.bytes().all(|b| b.is_ascii_digit()) && rest.starts_with(" nobody cared"))
    }) {
        return Some(ReportKind::UnhandledIrq);
    }
    if text.starts_with("INFO: task ") && text.contains("blocked for more than") {
        return Some(ReportKind::HungTask);
    }
    if text.contains("rcu: INFO:") && text.contains("stall") || text.starts_with("INFO: rcu_") && text.contains("stall")
    {
        return Some(ReportKind::RcuStall);
    }
    None
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// Feeds one console line; returns the kind when it starts a report.
    pub fn feed(&mut self, line: &str) -> Option<ReportKind> {
        if let Some(first) = &mut self.first {
            if first.lines.len() < REPORT_LINES {
                first.lines.push(line.to_string());
            }
        }
        let text = kernel_text(line)?;
        let kind = classify(text)?;
        if self.titles.len() < MAX_TITLES {
            self.titles.push(text.chars().take(1024).collect());
        }
        if self.first.is_none() {
            self.first = Some(KernelReport { kind, title: text.to_string(), lines: Vec::new() });
        }
        Some(kind)
    }

    /// True once the first report has all the lines we keep.
    pub fn report_complete(&self) -> bool {
        self.first.as_ref().is_some_and(|r| r.lines.len() >= REPORT_LINES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Console excerpts in the shapes 6.12 prints them.
    const SAMPLES: &[(&str, ReportKind, &str)] = &[
        (
            "[   12.532137] sysrq: Trigger a crash\n[   12.533010] Kernel panic - not syncing: sysrq triggered crash\n[   12.533642] CPU: 0 UID: 0 PID: 73 Comm: sh Not tainted 6.12.117-dax-seal #1\n",
            ReportKind::Panic,
            "Kernel panic - not syncing: sysrq triggered crash",
        ),
        (
            "[    3.101000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n",
            ReportKind::KillInit,
            "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
        ),
        (
            "[   20.412345] BUG: kernel NULL pointer dereference, address: 0000000000000008\n[   20.412400] #PF: supervisor read access in kernel mode\n[   20.412500] Oops: Oops: 0000 [#1] PREEMPT SMP NOPTI\n",
            ReportKind::Bug,
            "BUG: kernel NULL pointer dereference, address: 0000000000000008",
        ),
        (
            "[   30.000001] Oops: general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP\n",
            ReportKind::Oops,
            "Oops: general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP",
        ),
        (
            "[    5.100000] ------------[ cut here ]------------\n[    5.100100] WARNING: CPU: 0 PID: 1 at fs/xfs/xfs_file.c:1234 xfs_file_fallocate+0x5a/0x3c0\n[    5.100200] Modules linked in:\n",
            ReportKind::Warning,
            "WARNING: CPU: 0 PID: 1 at fs/xfs/xfs_file.c:1234 xfs_file_fallocate+0x5a/0x3c0",
        ),
        (
            "[    9.000000] ======================================================\n[    9.000001] WARNING: possible circular locking dependency detected\n[    9.000002] 6.12.117-dax-seal #1 Not tainted\n",
            ReportKind::Lockdep,
            "WARNING: possible circular locking dependency detected",
        ),
        (
            "[   41.000000] ==================================================================\n[   41.000001] BUG: KASAN: slab-use-after-free in xfs_inode_item_push+0x1a/0x200\n",
            ReportKind::Kasan,
            "BUG: KASAN: slab-use-after-free in xfs_inode_item_push+0x1a/0x200",
        ),
        (
            "[  152.000000] INFO: task xfs_io:88 blocked for more than 30 seconds.\n[  152.000100]       Not tainted 6.12.117-dax-seal #1\n",
            ReportKind::HungTask,
            "INFO: task xfs_io:88 blocked for more than 30 seconds.",
        ),
        (
            "[   60.000000] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [seal-race:91]\n",
            ReportKind::SoftLockup,
            "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [seal-race:91]",
        ),
        (
            "[   80.000000] rcu: INFO: rcu_preempt self-detected stall on CPU\n",
            ReportKind::RcuStall,
            "rcu: INFO: rcu_preempt self-detected stall on CPU",
        ),
        (
            "[    2.890193] irq 11: nobody cared (try booting with the \"irqpoll\" option)\n[    2.890940] CPU: 0 UID: 0 PID: 0 Comm: swapper/0 Not tainted 6.12.118-dax-seal #7\n",
            ReportKind::UnhandledIrq,
            "irq 11: nobody cared (try booting with the \"irqpoll\" option)",
        ),
    ];

    #[test]
    fn real_report_shapes_are_recognised() {
        for (text, kind, title) in SAMPLES {
            let mut s = Scanner::new();
            for line in text.lines() {
                s.feed(line);
            }
            let first = s.first.as_ref().unwrap_or_else(|| panic!("nothing found in {text}"));
            assert_eq!((first.kind, first.title.as_str()), (*kind, *title));
        }
    }

    #[test]
    fn report_lines_are_collected_after_the_title() {
        let mut s = Scanner::new();
        s.feed("[    1.0] WARNING: CPU: 0 PID: 1 at mm/gup.c:10 f+0x1/0x2");
        for i in 0..50 {
            s.feed(&format!("[    1.{i}] line {i}"));
        }
        let r = s.first.as_ref().unwrap();
        assert_eq!(r.lines.len(), REPORT_LINES);
        assert_eq!(r.lines[0], "[    1.0] line 0");
        assert!(s.report_complete());
    }

    #[test]
    fn ordinary_lines_and_user_output_are_not_reports() {
        let mut s = Scanner::new();
        for line in [
            "[    0.000000] Linux version 6.12.117-dax-seal",
            "[    1.000000] XFS (pmem0): Mounting V5 Filesystem",
            "[    1.100000] XFS (pmem0): DAX enabled. Warning: Use of DAX is EXPERIMENTAL.",
            "BUG: this line was printed by a program, not the kernel",
            "WARNING: CPU: 0 (no stamp, user output)",
            "[abc.def] BUG: not a stamp",
            "dax-seal-init: running workload dax-smoke",
            "[    2.000000] irq 9: shared with acpi, nobody cared about that here",
            "irq 11: nobody cared (user output, no stamp)",
        ] {
            assert_eq!(s.feed(line), None, "{line}");
        }
        assert!(s.first.is_none());
    }

    #[test]
    fn stamp_after_user_text_on_the_same_line() {
        assert_eq!(kernel_text("dax-seal-init: runn[   3.5] BUG: x"), Some("BUG: x"));
        let mut s = Scanner::new();
        assert_eq!(s.feed("workload out[   3.500000] Kernel panic - not syncing: x"), Some(ReportKind::Panic));
    }

    #[test]
    fn first_report_is_kept_and_all_titles_counted() {
        let mut s = Scanner::new();
        s.feed("[ 1.0] WARNING: CPU: 0 PID: 1 at a.c:1 f");
        s.feed("[ 2.0] Kernel panic - not syncing: Fatal exception");
        assert_eq!(s.first.as_ref().unwrap().kind, ReportKind::Warning);
        assert_eq!(s.titles.len(), 2);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const TITLES: [&str; 6] = [
        "Kernel panic - not syncing: Fatal exception",
        "BUG: KASAN: slab-use-after-free in xfs_foo",
        "WARNING: CPU: 0 PID: 1 at fs/dax.c:390 dax_disassociate_entry",
        "WARNING: possible circular locking dependency detected",
        "INFO: task kworker:1 blocked for more than 30 seconds.",
        "rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
    ];

    proptest! {
        #![proptest_config(crate::testing::proptest_config())]

        /// Any console line: no panic, and what is kept stays bounded.
        #[test]
        fn any_console_stream_is_scanned_within_bounds(lines in prop::collection::vec(any::<String>(), 0..100)) {
            let mut s = Scanner::new();
            for l in &lines {
                s.feed(l);
            }
            prop_assert!(s.titles.len() <= MAX_TITLES);
            prop_assert!(s.first.as_ref().is_none_or(|r| r.lines.len() <= REPORT_LINES));
        }

        /// A report is one only behind a printk stamp: the same words
        /// printed by a program (no stamp, or a forged one that is not
        /// digits.digits) are not a report.
        #[test]
        fn only_a_stamped_line_is_a_report(
            title in prop::sample::select(TITLES.to_vec()),
            secs in 0u32..100_000,
            usecs in 0u32..1_000_000,
            prefix in "[a-z ]{0,10}",
            forged in "[a-z.:]{0,8}",
        ) {
            let stamped = format!("{prefix}[{secs:5}.{usecs:06}] {title}");
            prop_assert!(Scanner::new().feed(&stamped).is_some(), "{}", stamped);
            let plain = format!("{prefix}{title}");
            prop_assert!(Scanner::new().feed(&plain).is_none(), "{}", plain);
            let fake = format!("[{forged}] {title}");
            let digits = forged.split_once('.').is_some_and(|(a, b)| {
                !a.is_empty() && !b.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
            });
            prop_assert_eq!(Scanner::new().feed(&fake).is_some(), digits, "{}", fake);
        }
    }

    #[test]
    fn a_warning_flood_keeps_a_bounded_list_of_titles() {
        let mut s = Scanner::new();
        for i in 0..MAX_TITLES * 3 {
            s.feed(&format!("[    1.{i:06}] WARNING: CPU: 0 PID: 1 at x.c:{i} f"));
        }
        assert_eq!(s.titles.len(), MAX_TITLES);
    }
}
