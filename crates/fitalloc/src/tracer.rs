//! Writes an `ALLOCATOR_TRACE` file (format in [`crate::trace`]) without
//! allocating: records go into a 64 KiB buffer inside the process state and
//! out with `write(2)` when it fills, before `fork`, and at exit.

use core::ffi::{c_char, CStr};

use crate::os;
use crate::trace::{Header, Record, RECORD, VERSION};

const BUF: usize = 1 << 16;
const PATH_MAX: usize = 4096;

/// The trace writer of one process.
pub struct Tracer {
    fd: i32,
    started: bool,
    len: usize,
    buf: [u8; BUF],
}

impl Default for Tracer {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracer {
    /// Not tracing.
    pub const fn new() -> Tracer {
        Tracer {
            fd: -1,
            started: false,
            len: 0,
            buf: [0; BUF],
        }
    }

    /// Whether `start` was tried (successfully or not).
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether records are being written.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.fd >= 0
    }

    /// Creates the file at `path` (a C string) and writes the header.
    pub fn start(&mut self, path: *const c_char, parent: u32) {
        self.started = true;
        // SAFETY: `path` is a NUL-terminated string (from the environment or
        // our own stack buffer); open does not allocate.
        let fd = unsafe {
            libc::open(
                path,
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd < 0 {
            // SAFETY: as above.
            let shown = unsafe { CStr::from_ptr(path) }.to_bytes();
            crate::eprint_raw!(
                "fitalloc: cannot create trace file '{}': not tracing\n",
                crate::fmt::Text(shown)
            );
            return;
        }
        self.fd = fd;
        self.len = 0;
        let header = Header {
            version: VERSION,
            page_size: os::page_size() as u32,
            // SAFETY: getpid has no preconditions.
            pid: unsafe { libc::getpid() } as u32,
            parent,
        };
        self.put(&header.encode());
    }

    /// Appends a record.
    #[inline]
    pub fn write(&mut self, r: &Record) {
        let mut bytes = [0u8; 2 * RECORD];
        let n = r.encode(&mut bytes);
        self.put(&bytes[..n]);
    }

    fn put(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > BUF {
            self.flush();
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Writes out the buffer.
    pub fn flush(&mut self) {
        if self.fd >= 0 && self.len > 0 {
            os::write_all(self.fd, &self.buf[..self.len]);
        }
        self.len = 0;
    }

    /// In a fork child: drops the parent's buffered records (the parent
    /// writes them) and continues in `PATH.PID`.
    pub fn restart_in_child(&mut self, path: *const c_char) {
        self.len = 0;
        // SAFETY: closing our own descriptor; the parent keeps its copy.
        unsafe { libc::close(self.fd) };
        self.fd = -1;
        // SAFETY: `path` still points into the environment, copied by fork.
        let base = unsafe { CStr::from_ptr(path) }.to_bytes();
        if base.len() > PATH_MAX {
            return;
        }
        let mut name = [0u8; PATH_MAX + 16];
        name[..base.len()].copy_from_slice(base);
        // SAFETY: getpid/getppid have no preconditions.
        let (pid, ppid) = unsafe { (libc::getpid(), libc::getppid()) };
        let mut w = crate::fmt::SliceWriter::new(&mut name[base.len()..PATH_MAX + 15]);
        let _ = core::fmt::Write::write_fmt(&mut w, format_args!(".{pid}"));
        let len = base.len() + w.bytes().len();
        name[len] = 0;
        self.start(name.as_ptr().cast(), ppid as u32);
    }
}
