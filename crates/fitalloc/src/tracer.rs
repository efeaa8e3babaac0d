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

    /// Creates this process's trace file and writes the header at once (so
    /// even a process that ends with `_exit` or `exec`s leaves a valid,
    /// empty trace). The file is the first of `path` (unless `child`),
    /// `path.PID`, `path.PID.2`, `path.PID.3`, ... that does not exist yet:
    /// no two processes ever write the same file, whether they were forked
    /// or started with `exec` with the variable inherited.
    pub fn start(&mut self, path: *const c_char, child: bool) {
        self.started = true;
        // SAFETY: `path` is a NUL-terminated string from the environment.
        let base = unsafe { CStr::from_ptr(path) }.to_bytes();
        let pid = os::getpid();
        let Some(fd) = create_unique(base, pid, child) else {
            crate::eprint_raw!(
                "fitalloc: cannot create trace file '{}': not tracing\n",
                crate::fmt::Text(base)
            );
            return;
        };
        self.fd = fd;
        self.len = 0;
        let parent = if child {
            // SAFETY: getppid has no preconditions.
            unsafe { libc::getppid() as u32 }
        } else {
            0
        };
        let header = Header {
            version: VERSION,
            page_size: os::page_size() as u32,
            pid: pid as u32,
            parent,
        };
        self.put(&header.encode());
        self.flush();
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
    /// writes them) and continues in a file of its own (`PATH.PID`).
    pub fn restart_in_child(&mut self, path: *const c_char) {
        self.len = 0;
        // SAFETY: closing our own descriptor; the parent keeps its copy.
        unsafe { libc::close(self.fd) };
        self.fd = -1;
        self.start(path, true);
    }
}

/// Opens (O_EXCL) the first free name of `base`, `base.PID`, `base.PID.2`,
/// ... (`base` itself skipped for a fork child).
fn create_unique(base: &[u8], pid: i32, child: bool) -> Option<i32> {
    if base.len() > PATH_MAX {
        return None;
    }
    let mut name = [0u8; PATH_MAX + 32];
    name[..base.len()].copy_from_slice(base);
    for attempt in (child as u32)..1000 {
        let mut w = crate::fmt::SliceWriter::new(&mut name[base.len()..PATH_MAX + 31]);
        let _ = match attempt {
            0 => Ok(()),
            1 => core::fmt::Write::write_fmt(&mut w, format_args!(".{pid}")),
            n => core::fmt::Write::write_fmt(&mut w, format_args!(".{pid}.{n}")),
        };
        let len = base.len() + w.bytes().len();
        name[len] = 0;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC;
        // SAFETY: `name` is NUL-terminated; open does not allocate.
        let fd = unsafe { libc::open(name.as_ptr().cast(), flags, 0o644) };
        if fd >= 0 {
            return Some(fd);
        }
        if os::errno() != libc::EEXIST {
            return None;
        }
    }
    None
}
