//! A heap layout with addresses normalised to (region index, offset): what
//! `replay --layout` prints, what `map` draws, and what a `print_memory` dump
//! parses into.

use std::fmt::Write as _;

use fitalloc::os::PageSource;
use fitalloc::Heap;

/// One block: offset inside its region, whole size (header included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Offset from the region's first byte.
    pub offset: u64,
    /// Whole block size in bytes.
    pub size: u64,
    /// In use (not free).
    pub used: bool,
    /// The block's name as `print_memory` shows it ('' if none).
    pub name: String,
}

/// One region and its blocks in address order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Region {
    /// Size in bytes.
    pub size: u64,
    /// Blocks by address.
    pub blocks: Vec<Block>,
}

/// Every region of a heap in list order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Regions in list (creation) order.
    pub regions: Vec<Region>,
}

/// Shows name bytes the way `print_memory` does: printable ASCII kept,
/// anything else as '?'.
pub fn show_name(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

/// The sum of `sizes`, saturating: a layout parsed from a hand-written dump
/// may hold any sizes, and a sum past 2^64 - 1 bytes means "too many".
pub fn total(sizes: impl IntoIterator<Item = u64>) -> u64 {
    sizes.into_iter().fold(0, u64::saturating_add)
}

impl Layout {
    /// The layout of a live heap.
    pub fn of_heap<S: PageSource>(heap: &Heap<S>) -> Layout {
        let regions = heap
            .regions()
            .map(|d| Region {
                size: d.size() as u64,
                blocks: heap
                    .blocks(d)
                    .map(|b| Block {
                        offset: (b.addr - d.start()) as u64,
                        size: b.size as u64,
                        used: !b.free,
                        name: show_name(b.name()),
                    })
                    .collect(),
            })
            .collect();
        Layout { regions }
    }

    /// Number of blocks in all regions.
    pub fn block_count(&self) -> usize {
        self.regions.iter().map(|r| r.blocks.len()).sum()
    }

    /// Bytes in used blocks.
    pub fn in_use(&self) -> u64 {
        total(self.blocks().filter(|b| b.used).map(|b| b.size))
    }

    /// Bytes in regions.
    pub fn mapped(&self) -> u64 {
        total(self.regions.iter().map(|r| r.size))
    }

    fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.regions.iter().flat_map(|r| r.blocks.iter())
    }

    /// The text form: `REGION <index> <size>` then
    /// `BLOCK <region index> <offset> <size> USED|FREE '<name>'` per block.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (i, r) in self.regions.iter().enumerate() {
            let _ = writeln!(s, "REGION {i} {}", r.size);
            for b in &r.blocks {
                let state = if b.used { "USED" } else { "FREE" };
                let _ = writeln!(s, "BLOCK {i} {} {} {state} '{}'", b.offset, b.size, b.name);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form() {
        let l = Layout {
            regions: vec![Region {
                size: 8192,
                blocks: vec![
                    Block {
                        offset: 0,
                        size: 80,
                        used: true,
                        name: "a b".into(),
                    },
                    Block {
                        offset: 80,
                        size: 8112,
                        used: false,
                        name: String::new(),
                    },
                ],
            }],
        };
        assert_eq!(
            l.to_text(),
            "REGION 0 8192\nBLOCK 0 0 80 USED 'a b'\nBLOCK 0 80 8112 FREE ''\n"
        );
        assert_eq!((l.in_use(), l.mapped(), l.block_count()), (80, 8192, 2));
        assert_eq!(show_name(b"x\ty\x80"), "x?y?");
    }

    #[test]
    fn sums_saturate() {
        let huge = Region {
            size: u64::MAX,
            blocks: vec![
                Block {
                    offset: 0,
                    size: u64::MAX,
                    used: true,
                    name: String::new(),
                };
                2
            ],
        };
        let l = Layout {
            regions: vec![huge.clone(), huge],
        };
        assert_eq!((l.in_use(), l.mapped()), (u64::MAX, u64::MAX));
    }
}
