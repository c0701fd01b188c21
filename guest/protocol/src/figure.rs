//! Figures: the numbers a workload measured (throughput, latency
//! percentiles, commit rates), sent as KTAP diagnostic lines
//! `dax-seal figure NAME VALUE UNIT` before the result line of the case
//! they belong to. The host keeps them per case in results.json and the
//! bench reads them by name, so rewording a case's prose, or changing a
//! parameter that appears in a case name, never loses a number.
//!
//! A name is unique within one workload run; the names the bench relies on
//! are built by the functions below, which both sides call.

use serde::{Deserialize, Serialize};

/// Starts every figure line (after the KTAP `# `).
pub const PREFIX: &str = "dax-seal figure ";

/// One measured number with its unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// Lower-case words joined by `-` and `.`: no whitespace.
    pub name: String,
    pub value: f64,
    /// `MiB/s`, `ms`, `us`, `records/s`, ...: no whitespace.
    pub unit: String,
}

impl Figure {
    pub fn new(name: impl Into<String>, value: f64, unit: &str) -> Figure {
        Figure { name: name.into(), value, unit: unit.to_string() }
    }

    /// The diagnostic line. A name or unit with whitespace in it, or a value
    /// that is not finite, is a bug in the workload that reports it: the line
    /// is written anyway and the host refuses it as a figure.
    pub fn line(&self) -> String {
        format!("{PREFIX}{} {} {}", self.name, self.value, self.unit)
    }

    /// The figure in a diagnostic line (possibly indented, with or without
    /// the KTAP `# `); `None` for any other line and for malformed figures.
    pub fn parse(line: &str) -> Option<Figure> {
        let line = line.trim_start();
        let line = line.strip_prefix("# ").unwrap_or(line);
        let mut words = line.strip_prefix(PREFIX)?.split(' ');
        let (name, value, unit) = (words.next()?, words.next()?, words.next()?);
        let value: f64 = value.parse().ok()?;
        let word = |w: &str| !w.is_empty() && !w.contains(char::is_whitespace);
        (words.next().is_none() && word(name) && word(unit) && value.is_finite())
            .then(|| Figure::new(name, value, unit))
    }
}

/// The lines of `figures`, one each, to append to a case's note.
pub fn lines(figures: &[Figure]) -> String {
    figures.iter().map(Figure::line).collect::<Vec<_>>().join("\n")
}

/// pinned-dma: MiB/s of READ_FIXED from `disk` into the sealed file's
/// pinned pages at queue depth `depth`.
pub fn read_fixed(disk: &str, depth: usize) -> String {
    format!("{disk}.read-fixed-qd{depth}")
}

/// pinned-dma: MiB/s of the same READ_FIXED into anonymous memory.
pub fn read_fixed_anonymous(disk: &str, depth: usize) -> String {
    format!("{disk}.read-fixed-anonymous-qd{depth}")
}

/// pinned-dma: MiB/s of WRITE_FIXED from the pinned pages to `disk`.
pub fn write_fixed(disk: &str, depth: usize) -> String {
    format!("{disk}.write-fixed-qd{depth}")
}

/// pinned-dma: ms of `ibv_reg_mr` over a sealed DAX mapping (median).
pub const REG_MR_SEALED: &str = "rdma.reg-mr-sealed";
/// pinned-dma: ms of `ibv_reg_mr` over anonymous memory (median).
pub const REG_MR_ANONYMOUS: &str = "rdma.reg-mr-anonymous";
/// pinned-dma: the same over anonymous memory kept in base pages
/// (MADV_NOHUGEPAGE), as a sealed file is mapped: GUP grabs a transparent
/// huge page in one step, and a base page at a time otherwise.
pub const REG_MR_ANONYMOUS_BASE: &str = "rdma.reg-mr-anonymous-base-pages";

/// userspace-flush: µs of an fsync of an unchanged large sealed file that
/// was never pinned (median), of its first fsync after SEAL, and of an
/// fsync of an unsealed, preallocated and written file of the same size.
pub const FSYNC_SEALED: &str = "fsync.sealed-never-pinned";
pub const FSYNC_SEALED_FIRST: &str = "fsync.sealed-first";
pub const FSYNC_UNSEALED: &str = "fsync.unsealed";

/// swap-pressure: MiB/s of swap traffic through `device` (`sealed-swapfile`
/// or `raw-pmem`).
pub fn swap_throughput(device: &str) -> String {
    format!("{device}.swap-throughput")
}

/// userspace-flush: records made durable per second by `writer`.
pub fn commit_rate(writer: &str) -> String {
    format!("{writer}.commit-rate")
}

/// userspace-flush: the `percentile`th first-touch MAP_SYNC write fault of
/// a `kind` file, in µs.
pub fn fault(kind: &str, percentile: u32) -> String {
    format!("{kind}.fault-p{percentile}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_survives_its_line() {
        for f in [
            Figure::new(read_fixed("virtio", 16), 2063.0, "MiB/s"),
            Figure::new(fault("sealed", 99), 9.75, "us"),
            Figure::new("x", -0.001, "ms"),
        ] {
            assert_eq!(Figure::parse(&f.line()), Some(f.clone()));
            assert_eq!(Figure::parse(&format!("    # {}", f.line())), Some(f));
        }
    }

    #[test]
    fn malformed_figures_are_not_figures() {
        for line in [
            "dax-seal figure a 1",
            "dax-seal figure a one MiB/s",
            "dax-seal figure a NaN MiB/s",
            "dax-seal figure a inf MiB/s",
            "dax-seal figure a 1 MiB/s extra",
            "dax-seal figure  1 MiB/s",
            "dax-seal latency sealed 1:3",
            "qd16 2063 MiB/s",
        ] {
            assert_eq!(Figure::parse(line), None, "{line}");
        }
    }
}
