//! The `print_memory` text (SPEC §5):
//!
//! ```text
//! -- Current Memory State --
//! [REGION 0x7f3a1c000000-0x7f3a1c002000] 8192
//!   [BLOCK 0x7f3a1c000000-0x7f3a1c0000b0] 176 [USED] 'Test Allocation: 0'
//!   [BLOCK 0x7f3a1c0000b0-0x7f3a1c002000] 7984 [FREE] ''
//! ```

use core::fmt::{self, Write};

use crate::fmt::Text;
use crate::heap::Heap;
use crate::os::PageSource;

/// The first line of a dump.
pub const TITLE: &str = "-- Current Memory State --\n";
/// An upper bound on the length of one region or block line.
pub const MAX_LINE: usize = 128;

impl<S: PageSource> Heap<S> {
    /// Writes every region and block of the heap, in list order.
    pub fn dump(&self, out: &mut dyn Write) -> fmt::Result {
        for d in self.regions() {
            writeln!(out, "[REGION {:#x}-{:#x}] {}", d.start(), d.end(), d.size())?;
            for b in self.blocks(d) {
                let state = if b.free { "FREE" } else { "USED" };
                let (start, end) = (b.addr, b.addr + b.size);
                let name = Text(b.name());
                writeln!(
                    out,
                    "  [BLOCK {start:#x}-{end:#x}] {} [{state}] '{name}'",
                    b.size
                )?;
            }
        }
        Ok(())
    }

    /// How many lines `dump` writes (regions plus blocks).
    pub fn dump_lines(&self) -> usize {
        self.regions().map(|d| 1 + self.blocks(d).count()).sum()
    }
}
