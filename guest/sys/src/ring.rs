//! A minimal io_uring, written against the kernel's UAPI (io_uring.h):
//! setup, buffer registration, and READ_FIXED / WRITE_FIXED submissions
//! with completions reaped in any order.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::seal::cvt;

/// A minimal io_uring for fixed-buffer registration (long-term pins
/// through `pin_user_pages(FOLL_WRITE | FOLL_LONGTERM)`) and READ_FIXED /
/// WRITE_FIXED through those buffers, one at a time or several in flight.
pub struct Ring {
    fd: std::os::fd::OwnedFd,
    sq: RingMap,
    cq: RingMap,
    sqes: RingMap,
    off: RingOffsets,
    /// SQ entries: the most I/Os that can be in flight.
    entries: usize,
}

/// Offsets into the SQ and CQ rings, from struct io_uring_params.
#[derive(Clone, Copy)]
struct RingOffsets {
    sq_tail: usize,
    sq_mask: usize,
    sq_array: usize,
    cq_head: usize,
    cq_tail: usize,
    cq_mask: usize,
    cqes: usize,
}

/// One mmap of the ring fd, unmapped on drop.
struct RingMap {
    ptr: *mut u8,
    len: usize,
}

impl RingMap {
    fn new(fd: i32, len: usize, offset: i64) -> io::Result<RingMap> {
        // SAFETY: a fresh shared mapping of the ring fd at a kernel-chosen address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(RingMap { ptr: ptr.cast(), len })
    }

    /// The u32 at byte offset `at`, as an atomic shared with the kernel.
    fn word(&self, at: usize) -> &std::sync::atomic::AtomicU32 {
        assert!(at + 4 <= self.len && at.is_multiple_of(4), "ring offset {at} outside the mapping");
        // SAFETY: in bounds and aligned (checked); the kernel only accesses
        // these words atomically too.
        unsafe { &*self.ptr.add(at).cast() }
    }
}

// SAFETY: the mapping belongs to the RingMap alone; moving it to another
// thread moves that ownership. Ring is not Sync: one thread submits at a time.
unsafe impl Send for RingMap {}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

const IORING_OFF_CQ_RING: i64 = 0x800_0000;
const IORING_OFF_SQES: i64 = 0x1000_0000;
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_OP_READ_FIXED: u8 = 4;
const IORING_OP_WRITE_FIXED: u8 = 5;
const SQE_SIZE: usize = 64;
const CQE_SIZE: usize = 16;

impl Ring {
    /// A small ring, for one I/O at a time.
    pub fn new() -> io::Result<Ring> {
        Ring::with_entries(4)
    }

    /// A ring that can have `entries` I/Os in flight.
    pub fn with_entries(entries: u32) -> io::Result<Ring> {
        use std::os::fd::FromRawFd;
        // struct io_uring_params is 120 bytes; all zero asks for defaults.
        let mut p = [0u32; 30];
        // SAFETY: io_uring_setup writes into the params buffer we own.
        let fd = cvt(unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, p.as_mut_ptr()) })? as i32;
        // SAFETY: a fresh fd that nothing else owns.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let (sq_entries, cq_entries) = (p[0] as usize, p[1] as usize);
        // sq_off starts at word 10, cq_off at word 20 (see io_uring.h).
        let (sq, cq) = (&p[10..20], &p[20..30]);
        let off = RingOffsets {
            sq_tail: sq[1] as usize,
            sq_mask: sq[2] as usize,
            sq_array: sq[6] as usize,
            cq_head: cq[0] as usize,
            cq_tail: cq[1] as usize,
            cq_mask: cq[2] as usize,
            cqes: cq[5] as usize,
        };
        let sq_map = RingMap::new(fd, off.sq_array + sq_entries * 4, 0)?;
        let cq_map = RingMap::new(fd, off.cqes + cq_entries * CQE_SIZE, IORING_OFF_CQ_RING)?;
        let sqes = RingMap::new(fd, sq_entries * SQE_SIZE, IORING_OFF_SQES)?;
        Ok(Ring { fd: owned, sq: sq_map, cq: cq_map, sqes, off, entries: sq_entries })
    }

    /// IORING_REGISTER_BUFFERS of one buffer (index 0).
    pub fn register(&self, ptr: *mut u8, len: usize) -> io::Result<()> {
        let iov = libc::iovec { iov_base: ptr.cast(), iov_len: len };
        // SAFETY: one iovec describing memory the caller keeps mapped.
        cvt(unsafe { libc::syscall(libc::SYS_io_uring_register, self.fd.as_raw_fd(), 0u32, &iov, 1u32) }).map(drop)
    }

    /// IORING_UNREGISTER_BUFFERS: drops the pins.
    pub fn unregister(&self) -> io::Result<()> {
        // SAFETY: no argument.
        cvt(unsafe {
            libc::syscall(libc::SYS_io_uring_register, self.fd.as_raw_fd(), 1u32, std::ptr::null::<u8>(), 0u32)
        })
        .map(drop)
    }

    /// READ_FIXED: `len` bytes of `file` at `offset` into registered buffer
    /// 0 at `addr` (inside it). Returns the bytes read.
    pub fn read_fixed(&self, file: &File, offset: u64, addr: *mut u8, len: u32) -> io::Result<u32> {
        let op = FixedIo { write: false, file, offset, addr, len };
        self.run(&[op], 1).pop().unwrap_or_else(|| Err(io::Error::other("no completion")))
    }

    /// WRITE_FIXED: `len` bytes from registered buffer 0 at `addr` into
    /// `file` at `offset`. Returns the bytes written.
    pub fn write_fixed(&self, file: &File, offset: u64, addr: *const u8, len: u32) -> io::Result<u32> {
        let op = FixedIo { write: true, file, offset, addr: addr.cast_mut(), len };
        self.run(&[op], 1).pop().unwrap_or_else(|| Err(io::Error::other("no completion")))
    }

    /// Runs `ops` with up to `depth` of them in flight (at most the ring's
    /// entries); returns each one's result, in the order of `ops`.
    pub fn run(&self, ops: &[FixedIo], depth: usize) -> Vec<io::Result<u32>> {
        use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
        let o = self.off;
        let depth = depth.clamp(1, self.entries);
        let mut results: Vec<Option<io::Result<u32>>> = (0..ops.len()).map(|_| None).collect();
        let (mut next, mut in_flight) = (0, 0);
        while next < ops.len() || in_flight > 0 {
            let mut queued = 0u32;
            while next < ops.len() && in_flight < depth {
                self.push(&ops[next], next as u64);
                next += 1;
                in_flight += 1;
                queued += 1;
            }
            // SAFETY: io_uring_enter on our ring fd, no signal mask.
            let entered = cvt(unsafe {
                libc::syscall(
                    libc::SYS_io_uring_enter,
                    self.fd.as_raw_fd(),
                    queued,
                    1u32,
                    IORING_ENTER_GETEVENTS,
                    std::ptr::null::<u8>(),
                    0usize,
                )
            });
            if let Err(e) = entered {
                // Nothing more can be learnt from this ring: fail what has
                // no result yet.
                let kind = e.raw_os_error();
                for r in results.iter_mut().filter(|r| r.is_none()) {
                    *r = Some(Err(kind.map_or_else(|| io::Error::other(e.to_string()), io::Error::from_raw_os_error)));
                }
                break;
            }
            loop {
                let head = self.cq.word(o.cq_head).load(Relaxed);
                if self.cq.word(o.cq_tail).load(Acquire) == head {
                    break;
                }
                let at = o.cqes + (head & self.cq.word(o.cq_mask).load(Relaxed)) as usize * CQE_SIZE;
                // cqe: user_data u64, res i32, flags u32.
                let user_data =
                    u64::from(self.cq.word(at).load(Relaxed)) | (u64::from(self.cq.word(at + 4).load(Relaxed)) << 32);
                let res = self.cq.word(at + 8).load(Relaxed) as i32;
                self.cq.word(o.cq_head).store(head.wrapping_add(1), Release);
                in_flight = in_flight.saturating_sub(1);
                if let Some(slot) = results.get_mut(user_data as usize) {
                    *slot = Some(if res < 0 { Err(io::Error::from_raw_os_error(-res)) } else { Ok(res as u32) });
                }
            }
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(io::Error::other("no completion")))).collect()
    }

    /// Writes one SQE for `op` and moves the SQ tail past it.
    fn push(&self, op: &FixedIo, user_data: u64) {
        use std::sync::atomic::Ordering::{Relaxed, Release};
        let o = self.off;
        let tail = self.sq.word(o.sq_tail).load(Relaxed);
        let index = (tail & self.sq.word(o.sq_mask).load(Relaxed)) as usize;
        let mut sqe = [0u8; SQE_SIZE];
        sqe[0] = if op.write { IORING_OP_WRITE_FIXED } else { IORING_OP_READ_FIXED };
        sqe[4..8].copy_from_slice(&op.file.as_raw_fd().to_ne_bytes());
        sqe[8..16].copy_from_slice(&op.offset.to_ne_bytes());
        sqe[16..24].copy_from_slice(&(op.addr as u64).to_ne_bytes());
        sqe[24..28].copy_from_slice(&op.len.to_ne_bytes());
        sqe[32..40].copy_from_slice(&user_data.to_ne_bytes());
        // buf_index (bytes 40..42) stays 0: the first registered buffer.
        assert!((index + 1) * SQE_SIZE <= self.sqes.len, "SQE index {index} outside the mapping");
        // SAFETY: the slot lies inside the SQE array (checked); the kernel
        // reads it only after the tail store below.
        unsafe { std::ptr::copy_nonoverlapping(sqe.as_ptr(), self.sqes.ptr.add(index * SQE_SIZE), SQE_SIZE) };
        self.sq.word(o.sq_array + index * 4).store(index as u32, Relaxed);
        self.sq.word(o.sq_tail).store(tail.wrapping_add(1), Release);
    }
}

/// One READ_FIXED or WRITE_FIXED through registered buffer 0.
pub struct FixedIo<'a> {
    pub write: bool,
    pub file: &'a File,
    pub offset: u64,
    /// Inside the registered buffer.
    pub addr: *mut u8,
    pub len: u32,
}
