//! Writes an `ALLOCATOR_TRACE` file (format in [`crate::trace`]) without
//! allocating: records go into a 64 KiB buffer (mapped when tracing starts,
//! kept for the life of the process: a process state that carried it
//! inline would put 64 KiB in the library's `.data`, whose file pages the
//! kernel maps 64 KiB at a time, resident in every process) and out with
//! `write(2)` when it fills, before `fork`, and at exit. The
//! header's program block (the executable's path, `argv[0]`) is read from
//! `/proc/self` straight into that buffer: no large stack buffer, as a fork
//! child may start its trace on a thread with a small stack.

use core::ffi::{c_char, CStr};

use crate::os;
use crate::trace::{Header, Program, Record, PROGRAM_MAX, PROGRAM_TEXT, RECORD, VERSION};

const BUF: usize = 1 << 16;
const PATH_MAX: usize = 4096;
// The program block's texts are read into the buffer's end while the block
// is encoded at its front.
const _: () = assert!(RECORD + PROGRAM_MAX + 2 * (PROGRAM_TEXT + 1) <= BUF);

/// The trace writer of one process.
pub struct Tracer {
    fd: i32,
    started: bool,
    len: usize,
    /// `BUF` bytes from `os::map_meta` once `start` succeeds, else null.
    buf: *mut u8,
}

// SAFETY: the buffer is owned by the tracer (never shared, never freed), and
// the tracer is used under its owner's lock.
unsafe impl Send for Tracer {}

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
            buf: core::ptr::null_mut(),
        }
    }

    /// The buffer (`start` mapped it).
    #[inline]
    fn buf(&mut self) -> &mut [u8] {
        debug_assert!(!self.buf.is_null());
        // SAFETY: `buf` is a mapping of `BUF` bytes owned by this tracer
        // (`start` sets it before any use), borrowed mutably with it.
        unsafe { core::slice::from_raw_parts_mut(self.buf, BUF) }
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
        // A fork child keeps the parent's buffer.
        if self.buf.is_null() {
            let Some(b) = os::map_meta(BUF) else {
                crate::eprint_raw!(
                    "fitalloc: no memory for a trace buffer ('{}'): not tracing\n",
                    crate::fmt::Text(base)
                );
                return;
            };
            self.buf = b as *mut u8;
        }
        let pid = os::getpid();
        let Some(fd) = create_unique(base, pid, child) else {
            crate::eprint_raw!(
                "fitalloc: cannot create trace file '{}': not tracing\n",
                crate::fmt::Text(base)
            );
            return;
        };
        self.fd = fd;
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() } as u32;
        let units = os::keep_errno(|| self.program_block());
        let header = Header {
            version: VERSION,
            page_size: os::page_size() as u32,
            pid: pid as u32,
            parent,
            fork_child: child,
            program_units: units,
        };
        self.buf()[..RECORD].copy_from_slice(&header.encode());
        self.len = RECORD + units as usize * RECORD;
        self.flush();
    }

    /// Writes the program block at `buf[RECORD..]` (the header goes before
    /// it) and returns its length in 32-byte units. The texts are read into
    /// the buffer's far end first, then encoded to their place.
    fn program_block(&mut self) -> u16 {
        let (head, texts) = self.buf().split_at_mut(BUF - 2 * (PROGRAM_TEXT + 1));
        let (exe, argv0) = texts.split_at_mut(PROGRAM_TEXT + 1);
        let exe_len = read_link(b"/proc/self/exe\0", exe);
        let argv0_len = read_first(b"/proc/self/cmdline\0", argv0);
        let program = Program {
            exe: &exe[..exe_len],
            argv0: &argv0[..argv0_len],
        };
        program.encode(&mut head[RECORD..RECORD + PROGRAM_MAX])
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
        let len = self.len;
        self.buf()[len..len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Writes out the buffer.
    pub fn flush(&mut self) {
        if self.fd >= 0 && self.len > 0 {
            let (fd, len) = (self.fd, self.len);
            os::write_all(fd, &self.buf()[..len]);
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

/// The target of the symbolic link `path` (NUL-terminated) in `out`, cut to
/// `out.len() - 1` bytes; returns its length (0 if it cannot be read).
fn read_link(path: &[u8], out: &mut [u8]) -> usize {
    // SAFETY: `path` is NUL-terminated and `out` is writable for its length
    // less one; readlink neither allocates nor writes a NUL.
    let n = unsafe { libc::readlink(path.as_ptr().cast(), out.as_mut_ptr().cast(), out.len() - 1) };
    n.max(0) as usize
}

/// The first NUL-terminated string of the file `path` (NUL-terminated), read
/// into `out` and cut to `out.len() - 1` bytes; returns its length (0 if the
/// file cannot be read).
fn read_first(path: &[u8], out: &mut [u8]) -> usize {
    let flags = libc::O_RDONLY | libc::O_CLOEXEC;
    // SAFETY: `path` is NUL-terminated; open does not allocate.
    let fd = unsafe { libc::open(path.as_ptr().cast(), flags) };
    if fd < 0 {
        return 0;
    }
    let want = out.len() - 1;
    let mut len = 0;
    while len < want {
        // SAFETY: `out[len..want]` is writable.
        let n = unsafe { libc::read(fd, out[len..].as_mut_ptr().cast(), want - len) };
        if n < 0 && os::errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        len += n as usize;
        if out[..len].contains(&0) {
            break;
        }
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    out[..len].iter().position(|&c| c == 0).unwrap_or(len)
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
