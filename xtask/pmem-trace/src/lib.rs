//! `dax-seal-pmem-trace`: a TCG plugin for Debian's QEMU 7.2 (plugin API
//! v1, whose header Debian does not ship: the few declarations it needs are
//! below, and every QEMU function is looked up by name when QEMU loads the
//! plugin). Loaded with `-plugin libdax_seal_pmem_trace.so,trace=FILE,
//! image=FILE,window=ADDR:LEN,marker=ADDR` under `-accel tcg,thread=single`,
//! it writes one line per event of a guest writer that maps a file of
//! NVDIMM 0 at the fixed user address `window`:
//!
//! ```text
//! P <line offset> <value>    a line's content at the writer's first load of it (its base)
//! S <offset> <size> <value>   a store into the window; offset in the NVDIMM image, value
//!                             (hex, memory order) read from the image right after the store
//! N <offset> <size> <value>   the same for a non-temporal store
//! F <kind> <line offset>      clwb, clflushopt or clflush of that 64-byte line
//! U <kind>                    a flush no calibration load followed (its line is unknown)
//! B <kind>                    sfence or mfence (user mode)
//! M <slot>                    the writer's marker store: one acknowledgement
//! ```
//!
//! Two facts of 7.2's TCG shape it. Flush instructions make no memory access,
//! so the plugin cannot see which line one names; the writer therefore loads
//! the line right after each flush (`persist::flush_lines`), in the same
//! translation block, and the plugin takes the line from that load: the
//! calibration. And a plugin's hardware address is an offset into the RAM
//! block, not a guest-physical address: for the writer's window, which maps
//! only NVDIMM 0, that offset is the offset into NVDIMM 0's backing file.

pub mod decode;

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Mutex;

use decode::Kind;

/// What QEMU checks before it installs the plugin.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static qemu_plugin_version: c_int = 1;

type Id = u64;
type TbTransCb = extern "C" fn(Id, *mut c_void);
type MemCb = extern "C" fn(c_uint, u32, u64, *mut c_void);
type ExecCb = extern "C" fn(c_uint, *mut c_void);
type AtExitCb = extern "C" fn(Id, *mut c_void);

/// `enum qemu_plugin_cb_flags`: QEMU_PLUGIN_CB_NO_REGS.
const CB_NO_REGS: c_int = 0;
/// `enum qemu_plugin_mem_rw`: QEMU_PLUGIN_MEM_RW.
const MEM_RW: c_int = 3;
/// User-mode code lives below this address.
const USER_END: u64 = 0x0000_8000_0000_0000;

fn symbol(name: &str) -> Result<*mut c_void, String> {
    let c = CString::new(name).map_err(|_| name.to_string())?;
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    if p.is_null() {
        Err(format!("QEMU has no {name}: not a QEMU with TCG plugins (API v1)"))
    } else {
        Ok(p)
    }
}

/// The QEMU functions the plugin calls (their C signatures as types),
/// found with dlsym in the QEMU binary that loaded it.
macro_rules! api {
    ($($field:ident: $ty:ty = $name:literal),* $(,)?) => {
        struct Api {
            $($field: $ty),*
        }

        fn load_api() -> Result<Api, String> {
            // SAFETY: each symbol is the QEMU 7.2 function of that name,
            // whose C signature is the field's type.
            Ok(Api { $($field: unsafe { std::mem::transmute::<*mut c_void, $ty>(symbol($name)?) }),* })
        }
    };
}

api! {
    register_tb_trans: unsafe extern "C" fn(Id, TbTransCb) = "qemu_plugin_register_vcpu_tb_trans_cb",
    tb_n_insns: unsafe extern "C" fn(*const c_void) -> usize = "qemu_plugin_tb_n_insns",
    tb_get_insn: unsafe extern "C" fn(*const c_void, usize) -> *mut c_void = "qemu_plugin_tb_get_insn",
    insn_data: unsafe extern "C" fn(*const c_void) -> *const u8 = "qemu_plugin_insn_data",
    insn_size: unsafe extern "C" fn(*const c_void) -> usize = "qemu_plugin_insn_size",
    insn_vaddr: unsafe extern "C" fn(*const c_void) -> u64 = "qemu_plugin_insn_vaddr",
    register_mem: unsafe extern "C" fn(*mut c_void, MemCb, c_int, c_int, *mut c_void) = "qemu_plugin_register_vcpu_mem_cb",
    register_exec: unsafe extern "C" fn(*mut c_void, ExecCb, c_int, *mut c_void) = "qemu_plugin_register_vcpu_insn_exec_cb",
    mem_is_store: unsafe extern "C" fn(u32) -> bool = "qemu_plugin_mem_is_store",
    mem_size_shift: unsafe extern "C" fn(u32) -> c_uint = "qemu_plugin_mem_size_shift",
    get_hwaddr: unsafe extern "C" fn(u32, u64) -> *const c_void = "qemu_plugin_get_hwaddr",
    hwaddr_is_io: unsafe extern "C" fn(*const c_void) -> bool = "qemu_plugin_hwaddr_is_io",
    hwaddr_phys_addr: unsafe extern "C" fn(*const c_void) -> u64 = "qemu_plugin_hwaddr_phys_addr",
    register_atexit: unsafe extern "C" fn(Id, AtExitCb, *mut c_void) = "qemu_plugin_register_atexit_cb",
    outs: unsafe extern "C" fn(*const c_char) = "qemu_plugin_outs",
}

/// The plugin's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub trace: String,
    pub image: String,
    pub window: (u64, u64),
    pub marker: u64,
}

fn number(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let parsed = match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not a number"))
}

impl Config {
    /// From `key=value` arguments: trace, image, window=ADDR:LEN, marker.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Config, String> {
        let (mut trace, mut image, mut window, mut marker) = (None, None, None, None);
        for arg in args {
            let (k, v) = arg.split_once('=').ok_or_else(|| format!("argument {arg:?} is not key=value"))?;
            match k {
                "trace" => trace = Some(v.to_string()),
                "image" => image = Some(v.to_string()),
                "window" => {
                    let (a, l) = v.split_once(':').ok_or("window=ADDR:LEN")?;
                    window = Some((number(a)?, number(l)?));
                }
                "marker" => marker = Some(number(v)?),
                other => return Err(format!("unknown argument {other:?} (trace, image, window, marker)")),
            }
        }
        Ok(Config {
            trace: trace.ok_or("trace=FILE is missing")?,
            image: image.ok_or("image=FILE is missing")?,
            window: window.ok_or("window=ADDR:LEN is missing")?,
            marker: marker.ok_or("marker=ADDR is missing")?,
        })
    }
}

/// One traced event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Prime { line: u64, value: Vec<u8> },
    Store { offset: u64, value: Vec<u8>, non_temporal: bool },
    Flush { kind: Kind, line: u64 },
    Unattributed { kind: Kind },
    Fence { kind: Kind },
    Marker { slot: u64 },
}

impl Event {
    pub fn line(&self) -> String {
        let hex = |v: &[u8]| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
        match self {
            Event::Prime { line, value } => format!("P {line:x} {}", hex(value)),
            Event::Store { offset, value, non_temporal } => {
                format!("{} {offset:x} {} {}", if *non_temporal { 'N' } else { 'S' }, value.len(), hex(value))
            }
            Event::Flush { kind, line } => format!("F {} {line:x}", kind.name()),
            Event::Unattributed { kind } => format!("U {}", kind.name()),
            Event::Fence { kind } => format!("B {}", kind.name()),
            Event::Marker { slot } => format!("M {slot}"),
        }
    }
}

/// What the callbacks share (one vCPU thread: `thread=single`).
struct State {
    api: Api,
    config: Config,
    out: BufWriter<File>,
    image: *const u8,
    image_len: u64,
    /// A flush whose calibration load has not come yet.
    pending: Option<Kind>,
    /// Lines whose base content is known (or too late to know).
    seen: std::collections::HashSet<u64>,
    events: u64,
}

// SAFETY: the image pointer is a read-only shared mapping used only under
// the mutex.
unsafe impl Send for State {}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Per-instruction flags in the callbacks' user data.
const NON_TEMPORAL: usize = 1;
/// The instruction follows a flush in its translation block.
const AFTER_FLUSH: usize = 2;

fn with_state(f: impl FnOnce(&mut State)) {
    if let Ok(mut guard) = STATE.lock() {
        if let Some(state) = guard.as_mut() {
            f(state);
        }
    }
}

impl State {
    fn emit(&mut self, event: Event) {
        self.events += 1;
        let _ = writeln!(self.out, "{}", event.line());
        if matches!(event, Event::Marker { .. }) {
            // A marker is where the host may stop QEMU: have it on disk.
            let _ = self.out.flush();
        }
    }

    fn in_window(&self, vaddr: u64) -> bool {
        vaddr >= self.config.window.0 && vaddr - self.config.window.0 < self.config.window.1
    }
}

extern "C" fn tb_trans(_id: Id, tb: *mut c_void) {
    with_state(|s| {
        // SAFETY: `tb` is the translation block QEMU passes to this
        // callback; its instructions are valid during it.
        unsafe {
            let n = (s.api.tb_n_insns)(tb);
            let mut after_flush = false;
            for i in 0..n {
                let insn = (s.api.tb_get_insn)(tb, i);
                let bytes = std::slice::from_raw_parts((s.api.insn_data)(insn), (s.api.insn_size)(insn));
                let kind = decode::classify(bytes);
                let user = (s.api.insn_vaddr)(insn) < USER_END;
                let mut flags = 0usize;
                if kind == Kind::NonTemporal {
                    flags |= NON_TEMPORAL;
                }
                if after_flush {
                    flags |= AFTER_FLUSH;
                }
                (s.api.register_mem)(insn, mem_access, CB_NO_REGS, MEM_RW, flags as *mut c_void);
                if user && (kind.is_flush() || kind.is_fence()) {
                    (s.api.register_exec)(insn, flush_or_fence, CB_NO_REGS, kind as usize as *mut c_void);
                }
                after_flush = user && kind.is_flush();
            }
        }
    });
}

fn kind_of(code: usize) -> Kind {
    [Kind::Clwb, Kind::Clflushopt, Kind::Clflush, Kind::Sfence, Kind::Mfence, Kind::NonTemporal]
        .into_iter()
        .find(|k| *k as usize == code)
        .unwrap_or(Kind::Other)
}

extern "C" fn flush_or_fence(_vcpu: c_uint, udata: *mut c_void) {
    let kind = kind_of(udata as usize);
    with_state(|s| {
        if let Some(k) = s.pending.take() {
            s.emit(Event::Unattributed { kind: k });
        }
        if kind.is_flush() {
            s.pending = Some(kind);
        } else {
            s.emit(Event::Fence { kind });
        }
    });
}

extern "C" fn mem_access(_vcpu: c_uint, info: u32, vaddr: u64, udata: *mut c_void) {
    let flags = udata as usize;
    with_state(|s| {
        // SAFETY: `info` and `vaddr` are this access's, as QEMU passed them.
        let store = unsafe { (s.api.mem_is_store)(info) };
        if flags & AFTER_FLUSH != 0 && !store {
            if let Some(kind) = s.pending.take() {
                // A flush outside the window is someone else's: not traced.
                if let Some(offset) = s.in_window(vaddr).then(|| offset_of(s, info, vaddr)).flatten() {
                    s.emit(Event::Flush { kind, line: offset & !63 });
                }
            }
            return;
        }
        if !store {
            if s.in_window(vaddr) {
                if let Some(offset) = offset_of(s, info, vaddr) {
                    let line = offset & !63;
                    if line + 64 <= s.image_len && s.seen.insert(line) {
                        // SAFETY: the line lies within the mapped image.
                        let value = unsafe { std::slice::from_raw_parts(s.image.add(line as usize), 64) }.to_vec();
                        s.emit(Event::Prime { line, value });
                    }
                }
            }
            return;
        }
        if vaddr >= s.config.marker && vaddr - s.config.marker < 4096 {
            s.emit(Event::Marker { slot: (vaddr - s.config.marker) / 8 });
            return;
        }
        if !s.in_window(vaddr) {
            return;
        }
        // SAFETY: as above.
        let size = 1u64 << unsafe { (s.api.mem_size_shift)(info) };
        let Some(offset) = offset_of(s, info, vaddr) else { return };
        if offset + size > s.image_len {
            return;
        }
        s.seen.insert(offset & !63);
        // SAFETY: offset + size lies within the mapped image.
        let value = unsafe { std::slice::from_raw_parts(s.image.add(offset as usize), size as usize) }.to_vec();
        s.emit(Event::Store { offset, value, non_temporal: flags & NON_TEMPORAL != 0 });
    });
}

/// The RAM-block offset of a guest access, None for I/O.
fn offset_of(s: &State, info: u32, vaddr: u64) -> Option<u64> {
    // SAFETY: QEMU's own accessors on the access it reported.
    unsafe {
        let hw = (s.api.get_hwaddr)(info, vaddr);
        if hw.is_null() || (s.api.hwaddr_is_io)(hw) {
            return None;
        }
        Some((s.api.hwaddr_phys_addr)(hw))
    }
}

extern "C" fn at_exit(_id: Id, _udata: *mut c_void) {
    with_state(|s| {
        let _ = s.out.flush();
        let msg = format!("dax-seal-pmem-trace: {} events to {}\n", s.events, s.config.trace);
        if let Ok(c) = CString::new(msg) {
            // SAFETY: a NUL-terminated message.
            unsafe { (s.api.outs)(c.as_ptr()) };
        }
    });
}

fn install(id: Id, args: &[String]) -> Result<(), String> {
    let api = load_api()?;
    let config = Config::parse(args.iter().map(String::as_str))?;
    let file = File::open(&config.image).map_err(|e| format!("{}: {e}", config.image))?;
    let image_len = file.metadata().map_err(|e| format!("{}: {e}", config.image))?.len();
    // SAFETY: a read-only shared mapping of the whole file; QEMU's own
    // shared mapping of it writes through the same page cache.
    let image = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            image_len as usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    if image == libc::MAP_FAILED {
        return Err(format!("mmap {}: {}", config.image, std::io::Error::last_os_error()));
    }
    let out = File::create(&config.trace).map_err(|e| format!("{}: {e}", config.trace))?;
    let mut out = BufWriter::with_capacity(1 << 20, out);
    writeln!(
        out,
        "# dax-seal pmem trace 1 image={} window={:#x}:{:#x} marker={:#x}",
        config.image, config.window.0, config.window.1, config.marker
    )
    .map_err(|e| format!("{}: {e}", config.trace))?;
    // SAFETY: registering this plugin's callbacks with its own id.
    unsafe {
        (api.register_tb_trans)(id, tb_trans);
        (api.register_atexit)(id, at_exit, std::ptr::null_mut());
    }
    let state = State {
        api,
        config,
        out,
        image: image as *const u8,
        image_len,
        pending: None,
        seen: Default::default(),
        events: 0,
    };
    *STATE.lock().map_err(|_| "plugin state poisoned")? = Some(state);
    Ok(())
}

/// QEMU's entry point.
///
/// # Safety
/// Called by QEMU with `argc` NUL-terminated strings in `argv`.
#[no_mangle]
pub unsafe extern "C" fn qemu_plugin_install(
    id: Id,
    _info: *const c_void,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let args: Vec<String> =
        (0..argc.max(0) as usize).map(|i| CStr::from_ptr(*argv.add(i)).to_string_lossy().into_owned()).collect();
    match install(id, &args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dax-seal-pmem-trace: {e}");
            -1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let c =
            Config::parse(["trace=/t", "image=/i", "window=0x5a0000000000:0x100000", "marker=0x5b0000000000"]).unwrap();
        assert_eq!(c.window, (0x5a00_0000_0000, 0x10_0000));
        assert_eq!(c.marker, 0x5b00_0000_0000);
        assert!(Config::parse(["trace=/t"]).unwrap_err().contains("image"));
        assert!(Config::parse(["colour=red"]).unwrap_err().contains("unknown argument"));
        assert!(Config::parse(["window=12"]).unwrap_err().contains("ADDR:LEN"));
    }

    #[test]
    fn event_lines() {
        let s = Event::Store { offset: 0x1040, value: vec![1, 0xab], non_temporal: false };
        assert_eq!(s.line(), "S 1040 2 01ab");
        assert_eq!(Event::Flush { kind: Kind::Clwb, line: 0x1040 }.line(), "F clwb 1040");
        assert_eq!(Event::Fence { kind: Kind::Sfence }.line(), "B sfence");
        assert_eq!(Event::Marker { slot: 3 }.line(), "M 3");
        for k in [Kind::Clwb, Kind::Clflushopt, Kind::Clflush, Kind::Sfence, Kind::Mfence, Kind::NonTemporal] {
            assert_eq!(kind_of(k as usize), k);
        }
    }
}
