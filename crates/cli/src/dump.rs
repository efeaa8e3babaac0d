//! Parsing `print_memory` / `write_memory` text (SPEC §5) into layouts.
//!
//! A file may hold several dumps (each starts with the title line) mixed with
//! other output of the program; lines that are neither a title, a region nor
//! a block are ignored. Region and block lines must be well formed. Offsets
//! come from the addresses, sizes from the size field (they agree in real
//! dumps; hand-written ones, like the SPEC's example, may not).

use anyhow::{bail, Context, Result};

use crate::layout::{Block, Layout, Region};

const TITLE: &str = "-- Current Memory State --";

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

/// Every dump in `text`, in order.
pub fn parse(text: &str) -> Result<Vec<Layout>> {
    let mut dumps: Vec<Layout> = Vec::new();
    let mut open = false;
    let mut start = 0u64;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let t = line.trim_start();
        if line.trim_end() == TITLE {
            dumps.push(Layout::default());
            open = true;
        } else if let Some(rest) = t.strip_prefix("[REGION ") {
            let (a, b, size, tail) =
                span(rest).with_context(|| format!("line {n}: malformed region line: {line}"))?;
            if b < a || !tail.trim().is_empty() {
                bail!("line {n}: malformed region line: {line}");
            }
            if !open {
                dumps.push(Layout::default());
                open = true;
            }
            start = a;
            let l = dumps.last_mut().expect("a dump is open");
            l.regions.push(Region {
                size,
                blocks: Vec::new(),
            });
        } else if let Some(rest) = t.strip_prefix("[BLOCK ") {
            let (a, b, size, tail) =
                span(rest).with_context(|| format!("line {n}: malformed block line: {line}"))?;
            let Some(region) = dumps.last_mut().and_then(|l| l.regions.last_mut()) else {
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
            if b < a || a < start || a - start >= region.size {
                bail!("line {n}: block does not lie in its region: {line}");
            }
            region.blocks.push(Block {
                offset: a - start,
                size,
                used,
                name: quoted[1..quoted.len() - 1].to_string(),
            });
        }
    }
    Ok(dumps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dumps() {
        let text = "hello\n-- Current Memory State --\n\
            [REGION 0x7f0000000000-0x7f0000002000] 8192\n\
            \x20 [BLOCK 0x7f0000000000-0x7f00000000b0] 176 [USED] 'it''s'\n\
            \x20 [BLOCK 0x7f00000000b0-0x7f0000002000] 7984 [FREE] ''\n\
            -- Current Memory State --\n";
        let d = parse(text).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0].to_text(),
            "REGION 0 8192\nBLOCK 0 0 176 USED 'it''s'\nBLOCK 0 176 7984 FREE ''\n"
        );
        assert!(d[1].regions.is_empty());
        assert!(parse("[BLOCK 0x0-0x10] 16 [USED] ''").is_err());
        assert!(parse("[REGION 0x10-0x0] 16").is_err());
        assert!(parse("[REGION 0x0-0x1000] 4096\n  [BLOCK 0x1000-0x1010] 16 [USED] ''").is_err());
        assert!(parse("[REGION 0x0-0x1000] 4096\n  [BLOCK 0x0-0x10] 16 [BUSY] ''").is_err());
    }
}
