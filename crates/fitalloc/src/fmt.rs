//! Formatting without allocating: `core::fmt` into a fixed buffer.

use core::fmt;

/// Writes formatted text into a borrowed byte buffer; text that does not fit
/// is dropped and remembered in `overflowed`.
pub struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    /// Whether some text did not fit.
    pub overflowed: bool,
}

impl<'a> SliceWriter<'a> {
    /// A writer over `buf`, initially empty.
    pub fn new(buf: &'a mut [u8]) -> SliceWriter<'a> {
        SliceWriter {
            buf,
            len: 0,
            overflowed: false,
        }
    }

    /// The text written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            self.overflowed = true;
        }
        Ok(())
    }
}

/// Writes one formatted line (at most 512 bytes) to a file descriptor.
pub fn write_fd(fd: i32, args: fmt::Arguments<'_>) {
    let mut buf = [0u8; 512];
    let mut w = SliceWriter::new(&mut buf);
    let _ = fmt::write(&mut w, args);
    crate::os::write_all(fd, w.bytes());
}

/// `format!`-like printing to stderr without allocating.
#[macro_export]
macro_rules! eprint_raw {
    ($($arg:tt)*) => { $crate::report::line(format_args!($($arg)*)) };
}

/// Shows bytes as text, replacing anything that is not printable ASCII.
pub struct Text<'a>(pub &'a [u8]);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &c in self.0 {
            let c = if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '?'
            };
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

/// Buffers text on the stack and writes it to a file descriptor with
/// `write(2)`; never allocates. Call `flush` at the end.
pub struct FdWriter {
    fd: i32,
    buf: [u8; 4096],
    len: usize,
}

impl FdWriter {
    /// A writer to `fd`.
    pub fn new(fd: i32) -> FdWriter {
        FdWriter {
            fd,
            buf: [0; 4096],
            len: 0,
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        crate::os::write_all(self.fd, &self.buf[..self.len]);
        self.len = 0;
    }
}

impl fmt::Write for FdWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}
