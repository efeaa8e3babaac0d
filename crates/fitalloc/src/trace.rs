//! The `ALLOCATOR_TRACE` file format, version 2 (version 1 is still read),
//! and its reader.
//!
//! A trace is a 32-byte header, then (version 2) the *program block*, then
//! 32-byte records, little endian. While tracing, every operation runs
//! inside the trace lock and writes its record there, so the file order is
//! the order in which the heaps saw the operations, whatever the thread
//! (a free that gives its region's span to another thread's arena comes
//! before that arena's allocation at the same address).
//!
//! ```text
//! header:  magic "FITTRACE" (8) | version u32 (2) | record size u32 (32)
//!          | page size u32 | pid u32 | parent pid u32 | flags u16
//!          | program block length u16, in 32-byte units
//! program: the executable's path (readlink /proc/self/exe), NUL, argv[0]
//!          (from /proc/self/cmdline), NUL, zero padding to a multiple of
//!          32 bytes; each cut to 4095 bytes; empty if /proc is not there
//! record:  kind u8 | reserved [u8; 3] | thread u32 | a u64 | b u64 | out u64
//! ```
//!
//! Flags: bit 0, [`FORK_CHILD`]: the process is a fork child whose heap
//! started as its parent's (its operations on inherited blocks use pointers
//! this trace never returned). Other bits are reserved (written 0, ignored).
//!
//! Version 1 (still read) had no program block; the parent pid was 0 unless
//! the process was a fork child, and bytes 28..32 were reserved. Version 2
//! records the parent pid of every process, so a program started by a
//! traced wrapper (a shell shim, say) names the wrapper's pid.
//!
//! | kind | operation | a | b | out |
//! |---|---|---|---|---|
//! | 1 | malloc | size | 0 | returned pointer (0: failed) |
//! | 2 | calloc | count | size | returned pointer |
//! | 3 | realloc (p != NULL, size != 0) | p | size | returned pointer (0: failed, p kept) |
//! | 4 | free (p != NULL; also realloc(p, 0)) | p | 0 | 0 |
//! | 5 | memalign family | alignment | size | returned pointer |
//! | 6 | malloc_name | size | 0 | returned pointer; the next 32 bytes are a kind-7 record |
//! | 7 | name text (only after kind 6) | bytes 1..32: the name, NUL padded | | |
//! | 8 | mark: `print_memory` / `write_memory` was called | mark number | 0 | 0 |
//!
//! `thread` identifies the calling thread (32 bits of `pthread_self`).
//!
//! Files: each process writes its own. A process writes `PATH` if it can
//! create it (it must not exist yet), else `PATH.PID`, then `PATH.PID.2`, ...
//! A fork child starts at `PATH.PID`, with the first operation after the fork
//! (its heap at that point is its parent's; the header says so).
//! A program `exec`ed by a traced one inherits `ALLOCATOR_TRACE` and so gets
//! its own `PATH.PID` file. A stale file is never overwritten: remove it
//! first (`fitalloc run --trace` does).
//!
//! The header and program block are written when tracing starts; records
//! are buffered and the buffer is written when full, before `fork`, and at
//! exit (not at `_exit` or `exec`, whose last records are lost).
//!
//! Reading: [`Header::decode`] checks the first 32 bytes, so a reader can
//! reject a file that is not a trace before reading any more of it;
//! [`Header::program_bytes`] says how many bytes of program block follow,
//! and [`Program::decode`] reads them. [`Record::decode`] decodes the record
//! at the front of any byte slice and tells a record cut short
//! ([`RecordError::Short`]: read more, or the file was cut short) from bytes
//! that are not a record. [`Reader`] iterates over a trace held in memory.

/// The first 8 bytes of a trace.
pub const MAGIC: [u8; 8] = *b"FITTRACE";
/// The format version this module writes (it also reads version 1).
pub const VERSION: u32 = 2;
/// Bytes per header and per record.
pub const RECORD: usize = 32;
/// Header flag: the process is a fork child (version 2).
pub const FORK_CHILD: u16 = 1;
/// Longest executable path or `argv[0]` kept in the program block.
pub const PROGRAM_TEXT: usize = 4095;
/// Largest program block: both texts, their NULs, padded.
pub const PROGRAM_MAX: usize = (2 * (PROGRAM_TEXT + 1)).div_ceil(RECORD) * RECORD;

/// What a record describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `malloc(size)`.
    Malloc {
        /// Requested bytes.
        size: u64,
    },
    /// `calloc(count, size)`.
    Calloc {
        /// Number of elements.
        count: u64,
        /// Bytes per element.
        size: u64,
    },
    /// `realloc(ptr, size)` with a non-null pointer and non-zero size.
    Realloc {
        /// The block resized.
        ptr: u64,
        /// The new size.
        size: u64,
    },
    /// `free(ptr)` of a non-null pointer.
    Free {
        /// The block freed.
        ptr: u64,
    },
    /// `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`.
    Memalign {
        /// Alignment (a power of two).
        align: u64,
        /// Requested bytes.
        size: u64,
    },
    /// `malloc_name(size, name)`.
    Named {
        /// Requested bytes.
        size: u64,
        /// The name (at most 31 bytes kept), NUL padded.
        name: [u8; 31],
    },
    /// `print_memory` or `write_memory` was called.
    Mark {
        /// 1 for the first mark of the process, then 2, ...
        number: u64,
    },
}

/// One operation of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// The operation and its arguments.
    pub op: Op,
    /// The calling thread.
    pub thread: u32,
    /// The pointer returned (0 for failures and for free / mark).
    pub out: u64,
}

/// The file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u32,
    /// The traced process's page size.
    pub page_size: u32,
    /// The traced process.
    pub pid: u32,
    /// The parent process (version 1: only for a fork child, else 0).
    pub parent: u32,
    /// The process is a fork child: its heap started as its parent's.
    pub fork_child: bool,
    /// Length of the program block after the header, in 32-byte units
    /// (version 2; 0 in version 1).
    pub program_units: u16,
}

impl Header {
    /// The header's bytes (always the current [`VERSION`]'s layout).
    pub fn encode(&self) -> [u8; RECORD] {
        let mut b = [0u8; RECORD];
        b[..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(RECORD as u32).to_le_bytes());
        b[16..20].copy_from_slice(&self.page_size.to_le_bytes());
        b[20..24].copy_from_slice(&self.pid.to_le_bytes());
        b[24..28].copy_from_slice(&self.parent.to_le_bytes());
        let flags = if self.fork_child { FORK_CHILD } else { 0 };
        b[28..30].copy_from_slice(&flags.to_le_bytes());
        b[30..32].copy_from_slice(&self.program_units.to_le_bytes());
        b
    }

    /// Reads a header from the first [`RECORD`] bytes of `b` (all of the
    /// file if it is shorter); errors name what is wrong. Versions 1 and 2
    /// are read.
    pub fn decode(b: &[u8]) -> Result<Header, &'static str> {
        let magic = b.len().min(MAGIC.len());
        if b[..magic] != MAGIC[..magic] {
            return Err("not a fitalloc trace (bad magic)");
        }
        if b.len() < RECORD {
            return Err("trace ends inside its header (file cut short?)");
        }
        let version = u32_at(b, 8);
        let parent = u32_at(b, 24);
        let (fork_child, program_units) = match version {
            1 => (parent != 0, 0),
            2 => (u16_at(b, 28) & FORK_CHILD != 0, u16_at(b, 30)),
            _ => return Err("unsupported trace version"),
        };
        if u32_at(b, 12) as usize != RECORD {
            return Err("unsupported record size");
        }
        if program_units as usize * RECORD > PROGRAM_MAX {
            return Err("program block too long");
        }
        Ok(Header {
            version,
            page_size: u32_at(b, 16),
            pid: u32_at(b, 20),
            parent,
            fork_child,
            program_units,
        })
    }

    /// Bytes of program block between the header and the first record.
    pub fn program_bytes(&self) -> usize {
        self.program_units as usize * RECORD
    }
}

/// The program block: what ran (version 2; both empty in version 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program<'a> {
    /// The executable's path (what /proc/self/exe linked to).
    pub exe: &'a [u8],
    /// `argv[0]`.
    pub argv0: &'a [u8],
}

impl<'a> Program<'a> {
    /// Writes the block into `out` (at least [`PROGRAM_MAX`] bytes), each
    /// text cut to [`PROGRAM_TEXT`] bytes and at its first NUL; returns its
    /// length in 32-byte units.
    pub fn encode(&self, out: &mut [u8]) -> u16 {
        let mut at = 0;
        for text in [self.exe, self.argv0] {
            let text = cut(text);
            out[at..at + text.len()].copy_from_slice(text);
            out[at + text.len()] = 0;
            at += text.len() + 1;
        }
        let end = at.div_ceil(RECORD) * RECORD;
        out[at..end].fill(0);
        (end / RECORD) as u16
    }

    /// Reads a program block (the bytes [`Header::program_bytes`] gives).
    pub fn decode(b: &'a [u8]) -> Program<'a> {
        let mut parts = b.splitn(3, |&c| c == 0);
        let exe = parts.next().unwrap_or(&[]);
        let argv0 = parts.next().unwrap_or(&[]);
        Program { exe, argv0 }
    }
}

/// `text` up to its first NUL and at most [`PROGRAM_TEXT`] bytes.
fn cut(text: &[u8]) -> &[u8] {
    let n = text.iter().position(|&c| c == 0).unwrap_or(text.len());
    &text[..n.min(PROGRAM_TEXT)]
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Record {
    /// Writes the record into `out` (64 bytes for `Named`, else 32) and
    /// returns the number of bytes used.
    pub fn encode(&self, out: &mut [u8; 2 * RECORD]) -> usize {
        let (kind, a, b) = match self.op {
            Op::Malloc { size } => (1, size, 0),
            Op::Calloc { count, size } => (2, count, size),
            Op::Realloc { ptr, size } => (3, ptr, size),
            Op::Free { ptr } => (4, ptr, 0),
            Op::Memalign { align, size } => (5, align, size),
            Op::Named { size, .. } => (6, size, 0),
            Op::Mark { number } => (8, number, 0),
        };
        out[..RECORD].fill(0);
        out[0] = kind;
        out[4..8].copy_from_slice(&self.thread.to_le_bytes());
        out[8..16].copy_from_slice(&a.to_le_bytes());
        out[16..24].copy_from_slice(&b.to_le_bytes());
        out[24..32].copy_from_slice(&self.out.to_le_bytes());
        if let Op::Named { name, .. } = self.op {
            out[RECORD] = 7;
            out[RECORD + 1..].copy_from_slice(&name);
            return 2 * RECORD;
        }
        RECORD
    }

    /// Decodes the record at the front of `b` (a trace body, from a record
    /// boundary on) and returns it with the number of bytes it takes: 32, or
    /// 64 for `malloc_name` and its name record.
    pub fn decode(b: &[u8]) -> Result<(Record, usize), RecordError> {
        let rec = b.get(..RECORD).ok_or(RecordError::Short)?;
        let (a, size, out) = (u64_at(rec, 8), u64_at(rec, 16), u64_at(rec, 24));
        let op = match rec[0] {
            1 => Op::Malloc { size: a },
            2 => Op::Calloc { count: a, size },
            3 => Op::Realloc { ptr: a, size },
            4 => Op::Free { ptr: a },
            5 => Op::Memalign { align: a, size },
            6 => return Self::decode_named(b),
            8 => Op::Mark { number: a },
            _ => return Err(RecordError::Bad("unknown record kind")),
        };
        let thread = u32_at(rec, 4);
        Ok((Record { op, thread, out }, RECORD))
    }

    /// A kind-6 record at the front of `b` and the kind-7 record after it.
    fn decode_named(b: &[u8]) -> Result<(Record, usize), RecordError> {
        let text = b.get(RECORD..2 * RECORD).ok_or(RecordError::Short)?;
        if text[0] != 7 {
            return Err(RecordError::Bad(
                "malloc_name record without its name record",
            ));
        }
        let mut name = [0u8; 31];
        name.copy_from_slice(&text[1..]);
        let op = Op::Named {
            size: u64_at(b, 8),
            name,
        };
        let (thread, out) = (u32_at(b, 4), u64_at(b, 24));
        Ok((Record { op, thread, out }, 2 * RECORD))
    }
}

/// Why the bytes at a record boundary are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes end inside the record: more are needed (at the end of a
    /// file: the file was cut short, by a full disk say).
    Short,
    /// The bytes are not a record of this format version.
    Bad(&'static str),
}

impl RecordError {
    /// What is wrong, in words.
    pub const fn what(self) -> &'static str {
        match self {
            RecordError::Short => "trace ends mid-record (file cut short?)",
            RecordError::Bad(what) => what,
        }
    }
}

/// Reads the records of a trace held in memory.
pub struct Reader<'a> {
    data: &'a [u8],
    /// Offset of the first record.
    body: usize,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over a whole trace file; checks the header and skips the
    /// program block.
    pub fn new(file: &'a [u8]) -> Result<(Header, Reader<'a>), &'static str> {
        let h = Header::decode(file)?;
        let pos = RECORD + h.program_bytes();
        if file.len() < pos {
            return Err("trace ends inside its program block (file cut short?)");
        }
        Ok((
            h,
            Reader {
                data: file,
                body: pos,
                pos,
            },
        ))
    }

    /// The program block of the trace (empty texts for version 1).
    pub fn program(&self) -> Program<'a> {
        Program::decode(&self.data[RECORD..self.body])
    }

    /// Byte offset of the next record.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl Iterator for Reader<'_> {
    type Item = Result<Record, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.data[self.pos.min(self.data.len())..];
        if rest.is_empty() {
            return None;
        }
        match Record::decode(rest) {
            Ok((rec, used)) => {
                self.pos += used;
                Some(Ok(rec))
            }
            Err(e) => {
                self.pos = self.data.len();
                Some(Err(e.what()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn round_trip() {
        let mut block = [0u8; PROGRAM_MAX];
        let program = Program {
            exe: b"/usr/bin/python3.11",
            argv0: b"python3",
        };
        let units = program.encode(&mut block);
        assert_eq!(units, 1, "19 + 1 + 7 + 1 bytes fit one unit");
        let h = Header {
            version: VERSION,
            page_size: 4096,
            pid: 42,
            parent: 7,
            fork_child: true,
            program_units: units,
        };
        let mut file = Vec::from(h.encode());
        file.extend_from_slice(&block[..h.program_bytes()]);
        let mut name = [0u8; 31];
        name[..5].copy_from_slice(b"hello");
        let recs = [
            Op::Malloc { size: 10 },
            Op::Calloc { count: 3, size: 8 },
            Op::Realloc {
                ptr: 0x1000,
                size: 99,
            },
            Op::Free { ptr: 0x1000 },
            Op::Memalign { align: 64, size: 5 },
            Op::Named { size: 7, name },
            Op::Mark { number: 1 },
        ];
        for (i, op) in recs.iter().enumerate() {
            let mut buf = [0u8; 2 * RECORD];
            let r = Record {
                op: *op,
                thread: i as u32,
                out: 0x2000 + i as u64,
            };
            let n = r.encode(&mut buf);
            file.extend_from_slice(&buf[..n]);
        }
        let (h2, reader) = Reader::new(&file).unwrap();
        assert_eq!(h2, h);
        assert_eq!(reader.program(), program);
        let back: Vec<Record> = reader.map(|r| r.unwrap()).collect();
        assert_eq!(back.len(), recs.len());
        for (i, r) in back.iter().enumerate() {
            assert_eq!(r.op, recs[i]);
            assert_eq!(r.thread, i as u32);
            assert_eq!(r.out, 0x2000 + i as u64);
        }
        file.truncate(file.len() - 3);
        let (_, reader) = Reader::new(&file).unwrap();
        let last = reader.last().unwrap();
        assert_eq!(last, Err("trace ends mid-record (file cut short?)"));
    }

    #[test]
    fn version_1_is_still_read() {
        let mut v1 = [0u8; RECORD];
        v1[..8].copy_from_slice(&MAGIC);
        v1[8] = 1;
        v1[12] = RECORD as u8;
        v1[17] = 16; // page size 4096
        v1[20] = 9; // pid
        v1[24] = 3; // parent: a fork child
        v1[28] = 0xff; // reserved in version 1: ignored
        let h = Header::decode(&v1).unwrap();
        let want = Header {
            version: 1,
            page_size: 4096,
            pid: 9,
            parent: 3,
            fork_child: true,
            program_units: 0,
        };
        assert_eq!(h, want);
        v1[24] = 0;
        assert!(!Header::decode(&v1).unwrap().fork_child);
        let (_, reader) = Reader::new(&v1).unwrap();
        assert_eq!(
            reader.program(),
            Program {
                exe: b"",
                argv0: b""
            }
        );
    }

    #[test]
    fn program_blocks() {
        let mut block = [0xffu8; PROGRAM_MAX];
        let long = [b'x'; 5000];
        let units = Program {
            exe: &long,
            argv0: b"a\0b",
        }
        .encode(&mut block);
        let len = units as usize * RECORD;
        assert!(len <= PROGRAM_MAX);
        let p = Program::decode(&block[..len]);
        assert_eq!((p.exe.len(), p.argv0), (PROGRAM_TEXT, &b"a"[..]));
        assert!(block[PROGRAM_TEXT + 3..len].iter().all(|&c| c == 0));
        let units = Program {
            exe: &long,
            argv0: &long,
        }
        .encode(&mut block);
        assert_eq!(units as usize * RECORD, PROGRAM_MAX);
        assert_eq!(Program::decode(&block[..4]).argv0, b"");
        let mut h = Header {
            version: VERSION,
            page_size: 4096,
            pid: 1,
            parent: 1,
            fork_child: false,
            program_units: 4,
        }
        .encode();
        assert_eq!(
            Reader::new(&h).err(),
            Some("trace ends inside its program block (file cut short?)")
        );
        h[31] = 1;
        assert_eq!(Header::decode(&h), Err("program block too long"));
    }

    #[test]
    fn header_errors() {
        let bad = "not a fitalloc trace (bad magic)";
        assert_eq!(
            Header::decode(b"NOTATRACE_______________________"),
            Err(bad)
        );
        assert_eq!(Header::decode(b"FIT\n"), Err(bad));
        assert_eq!(Header::decode(&[0; 64]), Err(bad));
        let cut = "trace ends inside its header (file cut short?)";
        assert_eq!(Header::decode(b"FITTR"), Err(cut));
        assert_eq!(Header::decode(b"FITTRACE\x01\0\0\0"), Err(cut));
        assert_eq!(Header::decode(b""), Err(cut));
    }

    #[test]
    fn record_errors() {
        let mut buf = [0u8; 2 * RECORD];
        let named = Record {
            op: Op::Named {
                size: 1,
                name: [b'x'; 31],
            },
            thread: 0,
            out: 0x10,
        };
        assert_eq!(named.encode(&mut buf), 2 * RECORD);
        assert_eq!(Record::decode(&buf[..RECORD - 1]), Err(RecordError::Short));
        assert_eq!(Record::decode(&buf[..RECORD + 5]), Err(RecordError::Short));
        assert_eq!(Record::decode(&buf).unwrap(), (named, 2 * RECORD));
        buf[RECORD] = 1;
        assert_eq!(
            Record::decode(&buf),
            Err(RecordError::Bad(
                "malloc_name record without its name record"
            ))
        );
        buf[0] = 0;
        assert_eq!(
            Record::decode(&buf),
            Err(RecordError::Bad("unknown record kind"))
        );
    }
}
