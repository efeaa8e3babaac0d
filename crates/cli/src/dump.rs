//! Parsing `print_memory` / `write_memory` text (SPEC §5) into layouts, as a
//! stream.
//!
//! A file may hold several dumps (each starts with the title line) mixed with
//! other output of the program; lines that are neither a title, a region nor
//! a block are ignored. Region and block lines must be well formed. Offsets
//! come from the addresses, sizes from the size field (they agree in real
//! dumps; hand-written ones, like the SPEC's example, may not).
//!
//! - **Bounded**: lines are read one at a time, a line longer than
//!   [`LONG_LINE`] bytes (no dump line is) is skipped without being kept, and
//!   only the dump asked for is kept. A NUL byte means binary data: the input
//!   is rejected at once (`/dev/zero` is not read to its end).
//! - **Checked**: blocks out of address order in their region, a block that
//!   overlaps the previous ones or ends past its region, and regions whose
//!   address ranges overlap are reported as [`Dump::warnings`] (the first
//!   [`MAX_WARNINGS`], then a count) instead of being drawn silently. Such a
//!   dump is still drawn, each region's blocks in address order.
//!   Regions are not expected in address order: a dump lists them in
//!   creation order.

use std::io::{BufRead, ErrorKind};

use anyhow::{bail, Context, Result};

use crate::layout::{Block, Layout, Region};

const TITLE: &str = "-- Current Memory State --";

/// Longest line looked at; longer ones are skipped (dump lines are at most
/// `fitalloc::MAX_LINE` bytes, plus the program's own indentation).
pub const LONG_LINE: usize = 4096;

/// Warnings kept per dump; the rest are counted.
pub const MAX_WARNINGS: usize = 10;

/// One dump of the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    /// The heap it shows.
    pub layout: Layout,
    /// What is wrong with it ("line N: ..."), at most [`MAX_WARNINGS`].
    pub warnings: Vec<String>,
    /// Warnings beyond those kept.
    pub more_warnings: usize,
}

impl Dump {
    fn warn(&mut self, text: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(text);
        } else {
            self.more_warnings += 1;
        }
    }
}

/// Reads dumps from `input` and returns dump number `which` (1-based;
/// `None`: the last) if the input has it, and how many dumps were read
/// (reading stops once dump `which` is complete).
pub fn read(mut input: impl BufRead, which: Option<usize>) -> Result<(Option<Dump>, usize)> {
    let mut p = Parser {
        which,
        ..Parser::default()
    };
    let mut line = Vec::new();
    let mut n = 0;
    while read_line(&mut input, &mut line).with_context(|| format!("line {}", n + 1))? {
        n += 1;
        if line.len() > LONG_LINE {
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim_end() == TITLE && which == Some(p.count) {
            break;
        }
        p.line(n, &text)?;
    }
    p.end_dump();
    Ok((p.kept, p.count))
}

/// Reads the next line into `line`, without its newline and with at most
/// [`LONG_LINE`] + 1 bytes kept; false at the end of the input.
fn read_line(input: &mut impl BufRead, line: &mut Vec<u8>) -> Result<bool> {
    line.clear();
    let mut any = false;
    loop {
        let buf = match input.fill_buf() {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => r.context("read error")?,
        };
        if buf.is_empty() {
            return Ok(any);
        }
        any = true;
        let end = buf.iter().position(|&c| c == b'\n');
        let text = &buf[..end.unwrap_or(buf.len())];
        if text.contains(&0) {
            bail!("a NUL byte: binary data, not print_memory output");
        }
        let room = (LONG_LINE + 1).saturating_sub(line.len());
        line.extend_from_slice(&text[..text.len().min(room)]);
        let used = end.map_or(buf.len(), |i| i + 1);
        input.consume(used);
        if end.is_some() {
            return Ok(true);
        }
    }
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// `0xA-0xB] SIZE` → (A, B, SIZE, the rest after SIZE).
fn span(s: &str) -> Option<(u64, u64, u64, &str)> {
    let (range, rest) = s.split_once("] ")?;
    let (a, b) = range.split_once('-')?;
    let (size, rest) = match rest.split_once(' ') {
        Some((size, rest)) => (size, rest),
        None => (rest, ""),
    };
    Some((hex(a)?, hex(b)?, size.parse().ok()?, rest))
}

/// The dump being read and the one kept.
#[derive(Default)]
struct Parser {
    /// The dump asked for (`None`: the last).
    which: Option<usize>,
    /// Dumps started so far.
    count: usize,
    /// The dump being read, if any.
    open: Option<Dump>,
    /// Address ranges of its regions and their lines.
    ranges: Vec<(u64, u64, usize)>,
    /// Its current region's first address, and the furthest block end and
    /// last block offset in that region.
    start: u64,
    reach: u64,
    last: u64,
    /// The dump asked for (or the last one read so far).
    kept: Option<Dump>,
}

impl Parser {
    fn line(&mut self, n: usize, line: &str) -> Result<()> {
        let t = line.trim_start();
        if line.trim_end() == TITLE {
            self.begin_dump();
        } else if let Some(rest) = t.strip_prefix("[REGION ") {
            let (a, b, size, tail) =
                span(rest).with_context(|| format!("line {n}: malformed region line: {line}"))?;
            if b < a || !tail.trim().is_empty() {
                bail!("line {n}: malformed region line: {line}");
            }
            if self.open.is_none() {
                self.begin_dump();
            }
            self.region(n, a, b, size);
        } else if let Some(rest) = t.strip_prefix("[BLOCK ") {
            let (a, b, size, tail) =
                span(rest).with_context(|| format!("line {n}: malformed block line: {line}"))?;
            self.block(n, line, (a, b, size), tail)?;
        }
        Ok(())
    }

    fn begin_dump(&mut self) {
        self.end_dump();
        self.count += 1;
        self.open = Some(Dump::default());
    }

    /// Ends the open dump and keeps it if it is the one asked for (or, if
    /// none was, the last so far).
    fn end_dump(&mut self) {
        let Some(mut d) = self.open.take() else {
            return;
        };
        self.ranges.sort_unstable();
        let mut furthest: Option<(u64, usize)> = None;
        for &(a, b, n) in &self.ranges {
            if let Some((end, m)) = furthest.filter(|&(end, _)| a < end) {
                d.warn(format!(
                    "line {n}: region {a:#x}-{b:#x} overlaps the region of line {m} (which ends at {end:#x})"
                ));
            }
            if furthest.is_none_or(|(end, _)| b > end) {
                furthest = Some((b, n));
            }
        }
        self.ranges.clear();
        for r in &mut d.layout.regions {
            if !r.blocks.is_sorted_by_key(|b| b.offset) {
                r.blocks.sort_by_key(|b| b.offset);
            }
        }
        if self.which.is_none_or(|k| k == self.count) {
            self.kept = Some(d);
        }
    }

    fn region(&mut self, n: usize, a: u64, b: u64, size: u64) {
        self.ranges.push((a, b, n));
        (self.start, self.reach, self.last) = (a, 0, 0);
        let d = self.open.as_mut().expect("a dump is open");
        d.layout.regions.push(Region {
            size,
            blocks: Vec::new(),
        });
    }

    fn block(
        &mut self,
        n: usize,
        line: &str,
        (a, b, size): (u64, u64, u64),
        tail: &str,
    ) -> Result<()> {
        let Some(d) = self.open.as_mut().filter(|d| !d.layout.regions.is_empty()) else {
            bail!("line {n}: block line before any region line");
        };
        let used = if let Some(q) = tail.strip_prefix("[USED] ") {
            Some((true, q))
        } else {
            tail.strip_prefix("[FREE] ").map(|q| (false, q))
        };
        let Some((used, quoted)) = used else {
            bail!("line {n}: block state is not [USED] or [FREE]: {line}");
        };
        let quoted = quoted.trim_end();
        if quoted.len() < 2 || !quoted.starts_with('\'') || !quoted.ends_with('\'') {
            bail!("line {n}: block name is not quoted: {line}");
        }
        let region = d.layout.regions.last_mut().expect("a region is open");
        if b < a || a < self.start || a - self.start >= region.size {
            bail!("line {n}: block does not lie in its region: {line}");
        }
        let (offset, end) = (a - self.start, (a - self.start).saturating_add(size));
        region.blocks.push(Block {
            offset,
            size,
            used,
            name: quoted[1..quoted.len() - 1].to_string(),
        });
        let region_size = region.size;
        if offset < self.last {
            d.warn(format!(
                "line {n}: block at {a:#x} comes before the previous block of its region \
                 (blocks out of address order; drawn sorted)"
            ));
        } else if offset < self.reach {
            d.warn(format!(
                "line {n}: block {a:#x}-{b:#x} overlaps an earlier block of its region \
                 (which ends at {:#x})",
                self.start.saturating_add(self.reach)
            ));
        }
        if end > region_size {
            d.warn(format!(
                "line {n}: block {a:#x}-{b:#x} ({size} bytes) ends past the end of its region"
            ));
        }
        (self.last, self.reach) = (offset, self.reach.max(end));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Every dump of `text`, in order.
    fn parse(text: &str) -> Result<Vec<Dump>> {
        let count = read(text.as_bytes(), None)?.1;
        (1..=count)
            .map(|k| Ok(read(text.as_bytes(), Some(k))?.0.expect("dump k exists")))
            .collect()
    }

    const TWO: &str = "hello\n-- Current Memory State --\n\
        [REGION 0x7f0000000000-0x7f0000002000] 8192\n\
        \x20 [BLOCK 0x7f0000000000-0x7f00000000b0] 176 [USED] 'it''s'\n\
        \x20 [BLOCK 0x7f00000000b0-0x7f0000002000] 7984 [FREE] ''\n\
        -- Current Memory State --\n";

    #[test]
    fn parses_dumps() {
        let d = parse(TWO).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0].layout.to_text(),
            "REGION 0 8192\nBLOCK 0 0 176 USED 'it''s'\nBLOCK 0 176 7984 FREE ''\n"
        );
        assert!(d[0].warnings.is_empty());
        assert!(d[1].layout.regions.is_empty());
        assert_eq!(read(TWO.as_bytes(), Some(3)).unwrap(), (None, 2));
        assert!(parse("[BLOCK 0x0-0x10] 16 [USED] ''").is_err());
        assert!(parse("[REGION 0x10-0x0] 16").is_err());
        assert!(parse("[REGION 0x0-0x1000] 4096\n  [BLOCK 0x1000-0x1010] 16 [USED] ''").is_err());
        assert!(parse("[REGION 0x0-0x1000] 4096\n  [BLOCK 0x0-0x10] 16 [BUSY] ''").is_err());
    }

    #[test]
    fn stops_after_the_dump_asked_for() {
        let endless = TWO.as_bytes().chain(std::io::repeat(b'\n'));
        let (d, count) = read(std::io::BufReader::new(endless), Some(1)).unwrap();
        assert_eq!((d.unwrap().layout.block_count(), count), (2, 1));
    }

    #[test]
    fn rejects_binary_data_at_once() {
        let mut zeros = std::io::BufReader::new(std::io::repeat(0).take(1 << 40));
        let e = read(&mut zeros, None).unwrap_err();
        assert!(format!("{e:#}").contains("line 1: a NUL byte"), "{e:#}");
        assert!(zeros.get_ref().limit() > (1 << 40) - (1 << 20));
    }

    #[test]
    fn skips_long_lines() {
        let long = format!("{TWO}[REGION 0x0-0x1000] 4096{}\n", " ".repeat(LONG_LINE));
        let d = parse(&long).unwrap();
        assert!(d[1].layout.regions.is_empty(), "the long line is skipped");
    }

    #[test]
    fn warns_about_overlaps_and_disorder() {
        let text = "[REGION 0x10000-0x12000] 8192\n\
            \x20 [BLOCK 0x10100-0x10200] 256 [USED] 'b'\n\
            \x20 [BLOCK 0x10000-0x10100] 256 [USED] 'a'\n\
            \x20 [BLOCK 0x10180-0x10280] 256 [FREE] 'c'\n\
            \x20 [BLOCK 0x11f00-0x12100] 512 [FREE] 'd'\n\
            [REGION 0x20000-0x21000] 4096\n\
            [REGION 0x11000-0x13000] 8192\n";
        let d = &parse(text).unwrap()[0];
        assert_eq!(
            d.warnings,
            [
                "line 3: block at 0x10000 comes before the previous block of its region \
                 (blocks out of address order; drawn sorted)",
                "line 4: block 0x10180-0x10280 overlaps an earlier block of its region \
                 (which ends at 0x10200)",
                "line 5: block 0x11f00-0x12100 (512 bytes) ends past the end of its region",
                "line 7: region 0x11000-0x13000 overlaps the region of line 1 (which ends at 0x12000)",
            ]
        );
        let offsets: Vec<u64> = d.layout.regions[0]
            .blocks
            .iter()
            .map(|b| b.offset)
            .collect();
        assert_eq!(offsets, [0, 0x100, 0x180, 0x1f00], "drawn sorted");
        assert_eq!(d.more_warnings, 0);
    }

    #[test]
    fn caps_warnings() {
        let mut text = String::from("[REGION 0x0-0x100000] 1048576\n");
        for _ in 0..100 {
            text.push_str("  [BLOCK 0x0-0x100] 256 [USED] ''\n");
        }
        let d = &parse(&text).unwrap()[0];
        assert_eq!(
            (d.warnings.len(), d.more_warnings),
            (MAX_WARNINGS, 99 - MAX_WARNINGS)
        );
    }
}
