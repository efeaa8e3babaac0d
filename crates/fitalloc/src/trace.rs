//! The `ALLOCATOR_TRACE` file format, version 1, and its reader.
//!
//! A trace is a 32-byte header followed by 32-byte records, little endian.
//! Every record is written under the heap lock, so the file order is the
//! order in which the heap saw the operations, whatever the thread.
//!
//! ```text
//! header:  magic "FITTRACE" (8) | version u32 | record size u32 (32)
//!          | page size u32 | pid u32 | parent pid u32 (0 unless a fork
//!          child) | reserved u32
//! record:  kind u8 | reserved [u8; 3] | thread u32 | a u64 | b u64 | out u64
//! ```
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
//! (its heap at that point is its parent's; the header names the parent).
//! A program `exec`ed by a traced one inherits `ALLOCATOR_TRACE` and so gets
//! its own `PATH.PID` file. A stale file is never overwritten: remove it
//! first (`fitalloc run --trace` does).
//!
//! The header is written when tracing starts; records are buffered and the
//! buffer is written when full, before `fork`, and at exit (not at `_exit` or
//! `exec`, whose last records are lost).

/// The first 8 bytes of a trace.
pub const MAGIC: [u8; 8] = *b"FITTRACE";
/// The format version this module reads and writes.
pub const VERSION: u32 = 1;
/// Bytes per header and per record.
pub const RECORD: usize = 32;

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
    /// The parent process, for the trace of a fork child (else 0).
    pub parent: u32,
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; RECORD] {
        let mut b = [0u8; RECORD];
        b[..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(RECORD as u32).to_le_bytes());
        b[16..20].copy_from_slice(&self.page_size.to_le_bytes());
        b[20..24].copy_from_slice(&self.pid.to_le_bytes());
        b[24..28].copy_from_slice(&self.parent.to_le_bytes());
        b
    }

    /// Reads a header; errors name what is wrong.
    pub fn decode(b: &[u8]) -> Result<Header, &'static str> {
        if b.len() < RECORD || b[..8] != MAGIC {
            return Err("not a fitalloc trace (bad magic)");
        }
        let h = Header {
            version: u32_at(b, 8),
            page_size: u32_at(b, 16),
            pid: u32_at(b, 20),
            parent: u32_at(b, 24),
        };
        if h.version != VERSION {
            return Err("unsupported trace version");
        }
        if u32_at(b, 12) as usize != RECORD {
            return Err("unsupported record size");
        }
        Ok(h)
    }
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
}

/// Reads the records of a trace body (the bytes after the header).
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over a whole trace file; checks the header.
    pub fn new(file: &'a [u8]) -> Result<(Header, Reader<'a>), &'static str> {
        let h = Header::decode(file)?;
        Ok((
            h,
            Reader {
                data: file,
                pos: RECORD,
            },
        ))
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
        if rest.len() < RECORD {
            self.pos = self.data.len();
            return Some(Err("trace ends inside a record"));
        }
        let (a, b, out) = (u64_at(rest, 8), u64_at(rest, 16), u64_at(rest, 24));
        let thread = u32_at(rest, 4);
        self.pos += RECORD;
        let op = match rest[0] {
            1 => Op::Malloc { size: a },
            2 => Op::Calloc { count: a, size: b },
            3 => Op::Realloc { ptr: a, size: b },
            4 => Op::Free { ptr: a },
            5 => Op::Memalign { align: a, size: b },
            6 => {
                let Some(text) = rest.get(RECORD..2 * RECORD).filter(|t| t[0] == 7) else {
                    self.pos = self.data.len();
                    return Some(Err("malloc_name record without its name record"));
                };
                self.pos += RECORD;
                let mut name = [0u8; 31];
                name.copy_from_slice(&text[1..]);
                Op::Named { size: a, name }
            }
            8 => Op::Mark { number: a },
            _ => {
                self.pos = self.data.len();
                return Some(Err("unknown record kind"));
            }
        };
        Some(Ok(Record { op, thread, out }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn round_trip() {
        let h = Header {
            version: VERSION,
            page_size: 4096,
            pid: 42,
            parent: 7,
        };
        let mut file = Vec::from(h.encode());
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
        let back: Vec<Record> = reader.map(|r| r.unwrap()).collect();
        assert_eq!(back.len(), recs.len());
        for (i, r) in back.iter().enumerate() {
            assert_eq!(r.op, recs[i]);
            assert_eq!(r.thread, i as u32);
            assert_eq!(r.out, 0x2000 + i as u64);
        }
        file.truncate(file.len() - 3);
        let (_, reader) = Reader::new(&file).unwrap();
        assert!(reader.last().unwrap().is_err(), "a cut record is reported");
        assert!(Header::decode(b"NOTATRACE_______________________").is_err());
    }
}
