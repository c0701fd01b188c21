//! Making stores durable from userspace, with no system call: write the
//! dirty cache lines back with the best instruction this CPU has (clwb, else
//! clflushopt, else clflush, chosen from CPUID), then order them with sfence.
//!
//! Every flush and fence the project's writers issue goes through
//! [`Persist::persist`], and the two instructions sit in the two
//! `#[inline(never)]` functions [`flush_lines`] and [`store_fence`], so a
//! tracer (or a reader) finds every one of them in one place.

use std::fmt;

/// The size of a cache line on x86-64: the unit every flush instruction
/// names.
pub const LINE: usize = 64;

/// A cache write-back instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Writes the line back and may keep it cached (CPUID.7.0:EBX[24]).
    Clwb,
    /// Writes the line back and evicts it, weakly ordered (CPUID.7.0:EBX[23]).
    Clflushopt,
    /// Writes the line back and evicts it, ordered with other stores
    /// (CPUID.1:EDX[19]).
    Clflush,
}

impl fmt::Display for Flush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flush::Clwb => "clwb",
            Flush::Clflushopt => "clflushopt",
            Flush::Clflush => "clflush",
        })
    }
}

impl Flush {
    /// The best instruction CPUID reports, or None on a CPU with no flush
    /// instruction at all.
    pub fn detect() -> Option<Flush> {
        // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 reads as zeroes
        // where the maximum leaf is lower, which means "no such feature".
        #[allow(unused_unsafe)]
        let (leaf1, leaf7, max) = unsafe {
            use std::arch::x86_64::__cpuid_count;
            (__cpuid_count(1, 0), __cpuid_count(7, 0), __cpuid_count(0, 0).eax)
        };
        let ebx7 = if max >= 7 { leaf7.ebx } else { 0 };
        if ebx7 & (1 << 24) != 0 {
            Some(Flush::Clwb)
        } else if ebx7 & (1 << 23) != 0 {
            Some(Flush::Clflushopt)
        } else if leaf1.edx & (1 << 19) != 0 {
            Some(Flush::Clflush)
        } else {
            None
        }
    }
}

/// Writes back every cache line that `bytes` touches.
///
/// Each flush is followed, in the same asm block and so in the same QEMU
/// translation block, by a one-byte load of the line it names: QEMU 7.2's
/// TCG gives flush instructions no memory access, and the persistence
/// model's tracer (`xtask/pmem-trace`) learns from that load which line the
/// flush wrote back. On hardware the load is an L1 hit or a refill of the
/// line, with no effect on durability.
#[inline(never)]
pub fn flush_lines(flush: Flush, bytes: &[u8]) {
    let start = bytes.as_ptr() as usize & !(LINE - 1);
    let end = bytes.as_ptr() as usize + bytes.len();
    for line in (start..end).step_by(LINE) {
        let p = line as *const u8;
        // The flush, then the calibration load of the same line.
        macro_rules! flush_then_load {
            ($insn:literal) => {
                // SAFETY: `line` lies within a cache line of `bytes`, which
                // is mapped and readable; the flush only names the address.
                unsafe {
                    std::arch::asm!(
                        concat!($insn, " [{p}]"),
                        "movzx {t:e}, byte ptr [{p}]",
                        p = in(reg) p,
                        t = out(reg) _,
                        options(nostack, preserves_flags)
                    )
                }
            };
        }
        match flush {
            Flush::Clwb => flush_then_load!("clwb"),
            Flush::Clflushopt => flush_then_load!("clflushopt"),
            Flush::Clflush => flush_then_load!("clflush"),
        }
    }
}

/// sfence: every earlier store and write-back is ordered before any later
/// store (and so before the acknowledgement the caller sends next).
#[inline(never)]
pub fn store_fence() {
    // SAFETY: sfence has no operands and no effect besides ordering.
    unsafe { std::arch::asm!("sfence", options(nostack, preserves_flags)) };
}

/// The flush this CPU uses, chosen once.
#[derive(Clone, Copy, Debug)]
pub struct Persist {
    pub flush: Flush,
}

impl Persist {
    /// None on a CPU without any flush instruction.
    pub fn new() -> Option<Persist> {
        Flush::detect().map(|flush| Persist { flush })
    }

    /// Makes `bytes` durable: write back each line, then fence.
    pub fn persist(&self, bytes: &[u8]) {
        flush_lines(self.flush, bytes);
        store_fence();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushing_and_fencing_ordinary_memory_keeps_its_bytes() {
        let p = Persist::new().expect("every x86-64 host has at least clflush");
        let mut buf = vec![0u8; 1000];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = i as u8;
        }
        // Unaligned start and a length that ends mid-line.
        p.persist(&buf[3..777]);
        for flush in [Flush::Clflush, Flush::Clflushopt, Flush::Clwb] {
            if Flush::detect().is_some_and(|best| best == flush || flush == Flush::Clflush) {
                flush_lines(flush, &buf);
            }
        }
        store_fence();
        assert!(buf.iter().enumerate().all(|(i, b)| *b == i as u8));
    }
}
