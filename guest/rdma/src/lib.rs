//! Soft-RoCE in the guest: an rxe link over a local netdev, and a device
//! context with two RC queue pairs connected to each other, so that RDMA
//! WRITE and READ move bytes between two memory regions of one process the
//! way a remote peer would (rxe loops packets between local QPs in the
//! driver). The verbs are a small C shim (src/shim.c) over Debian's static
//! libibverbs with the rxe provider linked in.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io;
use std::marker::PhantomData;
use std::ptr::NonNull;

#[repr(C)]
struct RawCtx {
    _opaque: [u8; 0],
}

#[repr(C)]
struct RawMr {
    _opaque: [u8; 0],
}

extern "C" {
    fn dsr_link_add(
        netdev: *const c_char,
        ibdev: *const c_char,
        ipv4: *const c_char,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn dsr_open(ibdev: *const c_char, err: *mut c_char, len: usize) -> *mut RawCtx;
    fn dsr_close(ctx: *mut RawCtx);
    fn dsr_reg(ctx: *mut RawCtx, addr: *mut c_void, len: usize) -> *mut RawMr;
    fn dsr_reg_read_only(ctx: *mut RawCtx, addr: *mut c_void, len: usize) -> *mut RawMr;
    fn dsr_dereg(mr: *mut RawMr) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn dsr_rdma(
        ctx: *mut RawCtx,
        write: c_int,
        local: *mut RawMr,
        local_addr: *mut c_void,
        remote: *mut RawMr,
        remote_addr: *mut c_void,
        len: u32,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
}

/// Room for the shim's sentence about what failed.
const ERR_LEN: usize = 512;

fn c_string(what: &str, s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} {s:?} holds a NUL byte"))
}

fn sentence(buf: &[u8]) -> String {
    CStr::from_bytes_until_nul(buf).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Brings `lo` up, gives `netdev` the IPv4 address `ipv4`/24 and brings it
/// up, then creates the rxe device `ibdev` over it (`rdma link add`).
pub fn link_add(netdev: &str, ibdev: &str, ipv4: &str) -> Result<(), String> {
    // IFNAMSIZ and IB_DEVICE_NAME_MAX, with the NUL.
    if netdev.len() >= 16 || ibdev.len() >= 64 {
        return Err(format!("device names {netdev:?} and {ibdev:?}: at most 15 and 63 bytes"));
    }
    let (n, i, a) = (c_string("netdev", netdev)?, c_string("ibdev", ibdev)?, c_string("address", ipv4)?);
    let mut err = [0u8; ERR_LEN];
    // SAFETY: NUL-terminated strings and a buffer of the length given.
    let r = unsafe { dsr_link_add(n.as_ptr(), i.as_ptr(), a.as_ptr(), err.as_mut_ptr().cast(), ERR_LEN) };
    if r == 0 {
        Ok(())
    } else {
        Err(sentence(&err))
    }
}

/// An opened rxe device: protection domain, completion queue and two
/// connected RC queue pairs.
pub struct Verbs {
    ctx: NonNull<RawCtx>,
}

impl Verbs {
    pub fn open(ibdev: &str) -> Result<Verbs, String> {
        let name = c_string("ibdev", ibdev)?;
        let mut err = [0u8; ERR_LEN];
        // SAFETY: a NUL-terminated name and a buffer of the length given.
        let ctx = unsafe { dsr_open(name.as_ptr(), err.as_mut_ptr().cast(), ERR_LEN) };
        NonNull::new(ctx).map(|ctx| Verbs { ctx }).ok_or_else(|| sentence(&err))
    }

    /// Registers `len` bytes at `addr` for local and remote read and write
    /// (`ibv_reg_mr`); the kernel pins the pages long-term.
    ///
    /// # Safety
    /// `addr..addr+len` must be mapped when registering; the kernel pins the
    /// pages, so they stay valid after munmap. While [`Verbs::rdma`] moves
    /// bytes into or out of the region, no Rust reference to that memory
    /// may be live, and the mapping must still be there for that call.
    pub unsafe fn register(&self, addr: *mut u8, len: usize) -> io::Result<Mr<'_>> {
        // SAFETY: the caller keeps the range mapped; the context is open.
        let mr = unsafe { dsr_reg(self.ctx.as_ptr(), addr.cast(), len) };
        self.region(mr, addr, len)
    }

    /// Registers `len` bytes at `addr` for remote read only: the kernel
    /// pins the pages long-term without write access, so a read-only
    /// mapping can be registered.
    ///
    /// # Safety
    /// As for [`Verbs::register`].
    pub unsafe fn register_read_only(&self, addr: *const u8, len: usize) -> io::Result<Mr<'_>> {
        // SAFETY: the caller keeps the range mapped; the context is open;
        // nothing writes through the region.
        let mr = unsafe { dsr_reg_read_only(self.ctx.as_ptr(), addr.cast_mut().cast(), len) };
        self.region(mr, addr.cast_mut(), len)
    }

    fn region(&self, mr: *mut RawMr, addr: *mut u8, len: usize) -> io::Result<Mr<'_>> {
        match NonNull::new(mr) {
            Some(mr) => Ok(Mr { mr, addr, len, live: true, _verbs: PhantomData }),
            None => Err(io::Error::last_os_error()),
        }
    }

    /// RDMA WRITE (`write`) of `len` bytes from `local` at `local_off` into
    /// `remote` at `remote_off`, or RDMA READ the other way; waits for the
    /// completion.
    pub fn rdma(
        &self,
        write: bool,
        local: &Mr,
        local_off: usize,
        remote: &Mr,
        remote_off: usize,
        len: u32,
    ) -> Result<(), String> {
        let what = if write { "RDMA WRITE" } else { "RDMA READ" };
        let fits = |off: usize, mr: &Mr| off.checked_add(len as usize).is_some_and(|end| end <= mr.len);
        if !fits(local_off, local) || !fits(remote_off, remote) {
            return Err(format!("{what} of {len} bytes runs past a region"));
        }
        let mut err = [0u8; ERR_LEN];
        // SAFETY: both offsets are inside their live regions (checked above).
        let r = unsafe {
            dsr_rdma(
                self.ctx.as_ptr(),
                c_int::from(write),
                local.mr.as_ptr(),
                local.addr.add(local_off).cast(),
                remote.mr.as_ptr(),
                remote.addr.add(remote_off).cast(),
                len,
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(sentence(&err))
        }
    }
}

impl Drop for Verbs {
    fn drop(&mut self) {
        // SAFETY: opened by dsr_open, closed once; regions borrow self, so
        // they are gone.
        unsafe { dsr_close(self.ctx.as_ptr()) }
    }
}

/// A registered memory region; deregistered on drop or by `deregister`.
pub struct Mr<'a> {
    mr: NonNull<RawMr>,
    addr: *mut u8,
    len: usize,
    live: bool,
    _verbs: PhantomData<&'a Verbs>,
}

impl Mr<'_> {
    /// `ibv_dereg_mr`: the kernel drops the region's pins.
    pub fn deregister(mut self) -> io::Result<()> {
        self.live = false;
        // SAFETY: registered by dsr_reg and not deregistered yet.
        match unsafe { dsr_dereg(self.mr.as_ptr()) } {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

impl Drop for Mr<'_> {
    fn drop(&mut self) {
        if self.live {
            // SAFETY: registered by dsr_reg and not deregistered yet.
            unsafe { dsr_dereg(self.mr.as_ptr()) };
        }
    }
}
