//! Kernel trace events through tracefs: what a workload reads when the
//! effect of a path cannot be observed any other way under emulation (a
//! cache write-back, for one).
//!
//! The kernel variants build trace events without the function tracer
//! (kernel-config/diagnostics.config). One [`TraceEvent`] enables one event,
//! hands out the lines it logged since the last call, and disables it on
//! drop. Workloads run one at a time, so the global buffer is theirs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const TRACEFS: &str = "/sys/kernel/tracing";

pub struct TraceEvent {
    /// events/<system>/<name>
    dir: PathBuf,
    /// `<name>:` as it appears in a line of `trace`.
    tag: String,
}

impl TraceEvent {
    /// Mounts tracefs if needed, empties the buffer and enables
    /// `system/name`. NotFound means the kernel has no such event.
    pub fn enable(system: &str, name: &str) -> io::Result<TraceEvent> {
        let root = Path::new(TRACEFS);
        if !root.join("trace").exists() {
            crate::calls::mount_pseudo(c"tracefs", root)?;
        }
        let dir = root.join("events").join(system).join(name);
        if !dir.join("enable").exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist: this kernel has no trace event {system}/{name}", dir.display()),
            ));
        }
        let event = TraceEvent { dir, tag: format!("{name}:") };
        fs::write(root.join("trace"), "")?;
        fs::write(event.dir.join("enable"), "1")?;
        Ok(event)
    }

    /// The event's lines logged since enable() or the last take(), oldest
    /// first; empties the buffer.
    pub fn take(&self) -> io::Result<Vec<String>> {
        let trace = Path::new(TRACEFS).join("trace");
        let text = fs::read_to_string(&trace)?;
        fs::write(&trace, "")?;
        Ok(text.lines().filter(|l| !l.starts_with('#') && l.contains(&self.tag)).map(str::to_string).collect())
    }
}

impl Drop for TraceEvent {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("enable"), "0");
    }
}

/// The value of `key` (a `key value` pair) in a trace line, as printed by
/// the event's TP_printk.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == key)?;
    words.next()
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn fields_of_a_trace_line() {
        let line = "   fsync-61  [000] .....   3.2: xfs_seal_flush_pinned: dev 259:0 ino 0x83 \
                    range 0x0-0x7fffffffffffffff pinned_pages 256";
        assert_eq!(field(line, "ino"), Some("0x83"));
        assert_eq!(field(line, "pinned_pages"), Some("256"));
        assert_eq!(field(line, "missing"), None);
        assert_eq!(field("ino", "ino"), None);
    }
}
