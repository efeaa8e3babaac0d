//! A trace file read as a stream: the header first, then the records through
//! a fixed buffer.
//!
//! ```text
//!  input ──read──> [ buffer, 64 KiB ] ──Record::decode──> Record, Record, ...
//!                    ^start      ^end    (a record cut by the buffer's end:
//!                                         move the rest to the front, read)
//! ```
//!
//! - The first 32 bytes are checked before anything else is read, so
//!   `/dev/zero`, a text file or an endless pipe (`yes |`) is rejected at
//!   once instead of being read to its end.
//! - Memory is the buffer, whatever the length of the file.
//! - A file that ends inside a record (cut short, by a full disk say) ends
//!   the records there; [`Records::cut_short`] says so and the caller warns.
//!   Bytes that are not a record are an error naming their offset.

use std::io::{ErrorKind, Read};

use anyhow::{anyhow, bail, Context, Result};
use fitalloc::trace::{self, Header, Record, RecordError, RECORD};

/// Bytes read at a time.
const BUF: usize = 64 << 10;

/// The error for a file with no bytes at all.
const EMPTY: &str = "empty file: the traced process wrote no trace (did it end with _exit, \
or exec another program, before its trace buffer was written?)";

/// What ran: the header's program block (version 2 traces), as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    /// The executable's path ('' if unknown).
    pub exe: String,
    /// `argv[0]` ('' if unknown).
    pub argv0: String,
}

impl Program {
    /// `argv0 (exe)`, or whichever is known, or `?`.
    pub fn describe(&self) -> String {
        match (self.argv0.is_empty(), self.exe.is_empty()) {
            (false, false)
                if self.exe == self.argv0 || self.exe.ends_with(&format!("/{}", self.argv0)) =>
            {
                self.exe.clone()
            }
            (false, false) => format!("{} ({})", self.argv0, self.exe),
            (false, true) => self.argv0.clone(),
            (true, false) => self.exe.clone(),
            (true, true) => "?".into(),
        }
    }
}

/// The records of a trace, read from `R` (see the module docs).
pub struct Records<R> {
    input: R,
    header: Header,
    program: Program,
    buf: Box<[u8]>,
    /// `buf[start..end]` is read but not yet decoded.
    start: usize,
    end: usize,
    /// The input has no more bytes.
    eof: bool,
    /// Bytes of the file decoded so far, the header included.
    consumed: u64,
}

impl<R: Read> Records<R> {
    /// Reads and checks the header (and nothing more).
    pub fn new(mut input: R) -> Result<Records<R>> {
        let mut head = [0u8; RECORD];
        let n = read_full(&mut input, &mut head)?;
        if n == 0 {
            bail!(EMPTY);
        }
        let header = Header::decode(&head[..n]).map_err(|e| anyhow!("{e}"))?;
        let mut block = vec![0; header.program_bytes()];
        if read_full(&mut input, &mut block)? < block.len() {
            bail!("trace ends inside its program block (file cut short?)");
        }
        let p = trace::Program::decode(&block);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok(Records {
            input,
            header,
            program: Program {
                exe: text(p.exe),
                argv0: text(p.argv0),
            },
            buf: vec![0; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            consumed: (RECORD + block.len()) as u64,
        })
    }

    /// The file's header.
    pub fn header(&self) -> Header {
        self.header
    }

    /// The program that wrote the trace (empty for a version 1 trace).
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Bytes of the file decoded so far, the header included.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The file ended inside a record (known once the records have ended).
    pub fn cut_short(&self) -> bool {
        self.eof && self.start < self.end
    }

    /// Moves the undecoded bytes to the front of the buffer and reads more.
    fn fill(&mut self) -> Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let n = read_some(&mut self.input, &mut self.buf[self.end..])?;
        self.end += n;
        self.eof = n == 0;
        Ok(())
    }
}

impl<R: Read> Iterator for Records<R> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            match Record::decode(&self.buf[self.start..self.end]) {
                Ok((rec, used)) => {
                    self.start += used;
                    self.consumed += used as u64;
                    return Some(Ok(rec));
                }
                Err(RecordError::Short) if self.eof => return None,
                Err(RecordError::Short) => {
                    if let Err(e) = self.fill() {
                        self.eof = true;
                        return Some(Err(e));
                    }
                }
                Err(RecordError::Bad(what)) => {
                    // Stop here: nothing after a bad record can be trusted.
                    (self.eof, self.end) = (true, self.start);
                    return Some(Err(anyhow!("{what} (record at byte {})", self.consumed)));
                }
            }
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match read_some(input, &mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// One read (retried if interrupted); 0 at the end of the input.
fn read_some(input: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => return r.context("read error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fitalloc::trace::{Op, VERSION};

    fn header() -> Vec<u8> {
        let mut block = [0u8; trace::PROGRAM_MAX];
        let units = trace::Program {
            exe: b"/bin/prog",
            argv0: b"prog",
        }
        .encode(&mut block);
        let mut f = Header {
            version: VERSION,
            page_size: 4096,
            pid: 1,
            parent: 0,
            fork_child: false,
            program_units: units,
        }
        .encode()
        .to_vec();
        f.extend_from_slice(&block[..units as usize * RECORD]);
        f
    }

    fn record(op: Op, out: u64) -> Vec<u8> {
        let mut buf = [0u8; 2 * RECORD];
        let n = Record { op, thread: 0, out }.encode(&mut buf);
        buf[..n].to_vec()
    }

    /// A reader that hands out at most 7 bytes per call, so records straddle
    /// every read.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn streams_records_across_reads_and_buffers() {
        let mut f = header();
        let n = 3 * BUF / RECORD;
        for i in 0..n as u64 {
            f.extend(record(Op::Malloc { size: i }, 16 * i + 16));
            if i % 1000 == 0 {
                let name = [b'n'; 31];
                f.extend(record(Op::Named { size: 1, name }, 8));
            }
        }
        let mut recs = Records::new(Trickle(&f)).unwrap();
        assert_eq!(recs.header().pid, 1);
        assert_eq!(recs.program().describe(), "/bin/prog");
        let p = |exe: &str, argv0: &str| {
            Program {
                exe: exe.into(),
                argv0: argv0.into(),
            }
            .describe()
        };
        assert_eq!(p("/bin/bash", "/bin/bash"), "/bin/bash");
        assert_eq!(p("/bin/bash", "python3"), "python3 (/bin/bash)");
        assert_eq!(p("", "python3"), "python3");
        assert_eq!(p("", ""), "?");
        let all: Vec<Record> = recs.by_ref().map(Result::unwrap).collect();
        assert_eq!(all.len(), n + n.div_ceil(1000));
        assert_eq!(
            all[1].op,
            Op::Named {
                size: 1,
                name: [b'n'; 31]
            }
        );
        assert_eq!(all.last().unwrap().op, Op::Malloc { size: n as u64 - 1 });
        assert!(!recs.cut_short());
        assert_eq!(recs.consumed(), f.len() as u64);
    }

    #[test]
    fn cut_short_bad_and_not_a_trace() {
        let mut f = header();
        f.extend(record(Op::Malloc { size: 1 }, 16));
        f.extend(record(
            Op::Named {
                size: 1,
                name: [0; 31],
            },
            32,
        ));
        for cut in [1, RECORD, RECORD + 1] {
            let mut recs = Records::new(&f[..f.len() - cut]).unwrap();
            assert_eq!(recs.by_ref().count(), 1, "the complete record only");
            assert!(recs.cut_short(), "cut {cut}");
        }
        f.extend([9; RECORD]);
        let mut recs = Records::new(&f[..]).unwrap();
        assert!(recs.nth(2).unwrap().is_err_and(|e| e
            .to_string()
            .contains("unknown record kind (record at byte 160)")));
        assert!(recs.next().is_none(), "nothing after a bad record");

        let err = |b: &[u8]| Records::new(b).err().unwrap().to_string();
        assert!(err(b"").starts_with("empty file"));
        assert!(err(&[0; 100]).contains("bad magic"));
        assert!(err(b"FITTRACE\x01").contains("inside its header"));
        assert!(err(&header()[..40]).contains("inside its program block"));
    }

    #[test]
    fn reads_no_more_than_the_header_of_a_non_trace() {
        let mut zeros = std::io::repeat(0).take(1 << 40);
        assert!(Records::new(&mut zeros).is_err());
        assert_eq!(zeros.limit(), (1 << 40) - RECORD as u64);
    }
}
