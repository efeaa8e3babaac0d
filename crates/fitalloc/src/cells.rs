//! The position index: a heap's free blocks in list order, kept entirely
//! outside the heap's memory.
//!
//! Every region of the heap owns a run of consecutive *cells*, one per KiB
//! of its memory; runs are handed out in region creation order, so cell
//! order followed by address order inside a cell is exactly list order. A
//! cell has a bitmap of the free blocks that *start* in it (64 bits, one
//! per 16-byte granule) and its address; a 16-ary max tree ([`MaxTree`])
//! over the cells holds the size of the largest free block starting in each
//! subtree:
//!
//! ```text
//!  cells:   c = 0          1          2          3    ...   cap - 1
//!  bits[c]  0010..0001 | 0000..0000 | 1000..0100 | ...        bit g: a free
//!  addr[c]  region A    A + 1 KiB    region B                 block starts
//!                                                             at addr + 16 g
//!  tree leaf c   = largest free block (units) starting in cell c
//!  tree node     = max of its 16 children,      top = largest of all
//! ```
//!
//! - **First fit**: descend from the root to the first leaf whose maximum
//!   fits (one comparison per level, no branch), then take the first block
//!   of that cell that fits.
//! - **Next fit**: the rover's cell from the rover's granule on, else the
//!   first fitting cell after it, else first fit.
//! - **Worst fit**: first fit for the root's maximum.
//!
//! Sizes are read from the block headers, which pass their keyed check or
//! end the process (`Block::indexed_units`); nothing else of a free block is
//! ever read, so a program writing into freed memory cannot steer the
//! index. A cell's maximum is recomputed (a scan of its free starts, at most
//! 22 and usually one or two) when its largest block leaves; every other
//! change walks up the tree and stops at the first node that does not
//! change. That scan reads sizes without checking the headers: a forged
//! size can only send a later search to the wrong cell, where every block
//! is checked before it is chosen.
//!
//! A free block that *shrinks in place* (a `realloc` growing into it takes
//! its front, a memalign gap) leaves its cell's leaf as it was: the leaf is
//! then an upper bound. A search that reaches a cell whose blocks all turn
//! out too small has just read every one of them (checked), so it
//! *settles* the leaf to their largest and searches on; a leaf settled is
//! exact, so no search meets it twice, and each settling is paid for by the
//! shrink that left it stale (realloc growth: 786 -> 750 instructions per
//! realloc under callgrind, the rescan and the walk up the tree gone from
//! most growths). Worst fit settles the root the same way when it exceeds
//! the hot block. A cell left with no free block gets 0 at once, so that
//! an empty cell is never searched.
//!
//! Invariants (checked by [`Cells::check`]): a bit is set iff a free block
//! starts there; every leaf is at least the largest of its cell's free
//! blocks, and 0 if there is none; every inner node is the max of its
//! children; the cells of a live region are `base .. base + size / 1 KiB`,
//! with increasing bases in list order; cells of no live region are empty.
//!
//! When the table is full, live regions are packed to its front (order
//! kept) into a table of twice the live cells or more: amortised O(1) per
//! cell.

use crate::block::{Block, Key};
use crate::maxtree::MaxTree;
use crate::os;
use crate::registry::{RegionDesc, Registry};

/// Bytes of memory per cell.
pub const CELL: usize = 1024;
const CELL_SHIFT: u32 = 10;
const GRANULE_SHIFT: u32 = 4;
/// 64-bit words of bitmap per cell (256 granules).
const WORDS: usize = CELL >> GRANULE_SHIFT >> 6;
const FIRST_CAP: usize = 64;
/// Tables of at most this many cells never shrink.
const SHRINK_FROM: usize = 4096;

/// The position index (see the module docs).
pub struct Cells {
    secret: Key,
    /// Cells in the table (a power of two, or 0 before the first region).
    cap: usize,
    /// Cells handed out so far.
    next: usize,
    /// Cells of live regions.
    live: usize,
    /// Free blocks indexed.
    len: usize,
    /// Stale leaves a search has settled (for the tests: a count of 0
    /// would mean the lazy path is never taken).
    settled: usize,
    /// The largest free block starting in each cell, and above.
    tree: MaxTree,
    /// The table: per cell, `WORDS` words of free-start bitmap, then the
    /// address of the cell's first byte.
    bits: *mut u64,
}

/// 64-bit words per cell in the table: its bitmap, then its address.
const STRIDE: usize = WORDS + 1;

/// Bytes of the table for `cap` cells (a cell's bitmap and address share a
/// cache line).
const fn table_bytes(cap: usize) -> usize {
    8 * STRIDE * cap
}

/// The address of the cell holding `addr` (of region `d`).
#[inline]
fn cell_addr(d: &RegionDesc, addr: usize) -> usize {
    d.start() + ((addr - d.start()) & !(CELL - 1))
}

/// Where a block starts in the cell space: (cell, granule).
#[inline]
fn cell_of(d: &RegionDesc, addr: usize) -> (usize, u32) {
    let off = addr - d.start();
    (
        d.base() as usize + (off >> CELL_SHIFT),
        ((off >> GRANULE_SHIFT) & ((CELL >> GRANULE_SHIFT) - 1)) as u32,
    )
}

/// A block the index found: its place in list order ([`position`]), its
/// address, and its size as its header says (the header passed its check
/// and says FREE: `Block::indexed_units`).
#[derive(Clone, Copy, Debug)]
pub struct Found {
    /// `position` of the block.
    pub pos: usize,
    /// The block's address.
    pub addr: usize,
    /// The block's size in units, read from its checked header.
    pub units: u32,
}

/// The place in list order of a block starting at `addr` in region `d`:
/// its cell's number times the cell size plus its offset in the cell.
/// Cells are numbered in list order, so positions compare as the list
/// orders blocks. Only comparable while the cells stay where they are
/// (a region added or dropped may renumber them).
#[inline]
pub fn position(d: &RegionDesc, addr: usize) -> usize {
    ((d.base() as usize) << CELL_SHIFT) + (addr - d.start())
}

impl Cells {
    /// An empty index; `secret` is the key of the header checks.
    pub const fn new(secret: Key) -> Cells {
        Cells {
            secret,
            cap: 0,
            next: 0,
            live: 0,
            len: 0,
            settled: 0,
            tree: MaxTree::empty(),
            bits: core::ptr::null_mut(),
        }
    }

    /// Whether a free block starting at `addr` (of region `d`) is indexed.
    pub fn contains(&self, d: &RegionDesc, addr: usize) -> bool {
        let (c, g) = cell_of(d, addr);
        c < self.cap && self.word(c, (g >> 6) as usize) & 1u64 << (g & 63) != 0
    }

    /// Number of free blocks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// How many stale leaves searches have settled so far.
    pub fn settled(&self) -> usize {
        self.settled
    }

    /// Whether no free block is indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    // ------------------------------------------------------------------
    // Raw access (every index is below the table's bounds).

    /// Word `w` of cell `c`'s bitmap.
    #[inline]
    fn word(&self, c: usize, w: usize) -> u64 {
        debug_assert!(c < self.cap && w < WORDS);
        // SAFETY: the table has STRIDE * cap words.
        unsafe { *self.bits.add(c * STRIDE + w) }
    }

    #[inline]
    fn set_word(&mut self, c: usize, w: usize, v: u64) {
        debug_assert!(c < self.cap && w < WORDS);
        // SAFETY: as in `word`.
        unsafe { *self.bits.add(c * STRIDE + w) = v }
    }

    /// Sets (`on`) or clears the bit of granule `g` of cell `c`.
    #[inline]
    fn mark(&mut self, c: usize, g: u32, on: bool) {
        let (w, bit) = ((g >> 6) as usize, 1u64 << (g & 63));
        let v = self.word(c, w);
        debug_assert!((v & bit != 0) != on, "free-start bit already in that state");
        self.set_word(c, w, if on { v | bit } else { v & !bit });
    }

    /// Empties cell `c` (its address stays: it means nothing in an empty
    /// cell).
    fn clear_cell(&mut self, c: usize) {
        for w in 0..WORDS {
            self.set_word(c, w, 0);
        }
        self.tree.put_leaf(c, 0);
    }

    /// Whether cell `c` has no free start.
    fn empty(&self, c: usize) -> bool {
        (0..WORDS).all(|w| self.word(c, w) == 0)
    }

    /// Calls `f` on each free start of cell `c` at granule `from` or
    /// later, in order, until it returns `Some`.
    #[inline(always)]
    fn find_start<T>(&self, c: usize, from: u32, mut f: impl FnMut(u32) -> Option<T>) -> Option<T> {
        let mut w = (from >> 6) as usize;
        let mut bits = self.word(c, w) & (!0u64 << (from & 63));
        loop {
            while bits != 0 {
                let g = (w as u32) << 6 | bits.trailing_zeros();
                if let Some(t) = f(g) {
                    return Some(t);
                }
                bits &= bits - 1;
            }
            w += 1;
            if w == WORDS {
                return None;
            }
            bits = self.word(c, w);
        }
    }

    /// Address of cell `c`'s first byte; only meaningful while the cell
    /// has a free start (it is written when a bit is set, so that cells
    /// without free blocks are never touched: see `add_region`).
    #[inline]
    fn addr_at(&self, c: usize) -> usize {
        debug_assert!(c < self.cap);
        // SAFETY: the table has STRIDE * cap words.
        unsafe { *self.bits.add(c * STRIDE + WORDS) as usize }
    }

    #[inline]
    fn set_addr_at(&mut self, c: usize, a: usize) {
        debug_assert!(c < self.cap);
        // SAFETY: as in `addr_at`.
        unsafe { *self.bits.add(c * STRIDE + WORDS) = a as u64 }
    }

    /// Settles cell `c`'s leaf, which may be stale, to the size of its
    /// largest free block `m` (known exact: every block of the cell was
    /// read with its header checked).
    #[cold]
    #[inline(never)]
    fn settle(&mut self, c: usize, m: u32) {
        debug_assert!(m <= self.tree.get(c));
        self.settled += 1;
        self.tree.lower(c, m);
    }

    /// Cell `c` lost a free block of `units`: its leaf is recomputed from
    /// its free blocks' headers (read unchecked: see the module docs) if
    /// that block may have been its largest, else it stays (exact, or an
    /// upper bound), but 0 once the cell is empty, so that an empty cell
    /// is never searched and a region's cells are all 0 when it goes.
    #[inline]
    fn lost(&mut self, c: usize, units: u32) {
        let leaf = self.tree.get(c);
        if units == leaf {
            let mut m = 0;
            self.find_start(c, 0, |g| {
                m = m.max(self.block_at(c, g).units());
                None::<()>
            });
            // It may be larger than the leaf: a block of the cell already
            // grew in a merge that is reported next.
            self.tree.set(c, m);
        } else if leaf != 0 && self.empty(c) {
            self.tree.lower(c, 0);
        }
    }

    /// The free block starting at granule `g` of cell `c`.
    #[inline]
    fn block_at(&self, c: usize, g: u32) -> Block {
        let a = self.addr_at(c) + ((g as usize) << GRANULE_SHIFT);
        // SAFETY: a set bit marks a free block of a live region of this heap.
        unsafe { Block::from_raw(a) }
    }

    /// The first free block of cell `c` at granule `from` or later whose
    /// size is at least `units` (each header checked as it is read), or
    /// the largest of those blocks' sizes (0 if none).
    #[inline]
    fn scan(&self, c: usize, from: u32, units: u32) -> Result<Found, u32> {
        let mut most = 0;
        let found = self.find_start(c, from, |g| {
            let b = self.block_at(c, g);
            let have = b.indexed_units(self.secret);
            most = most.max(have);
            (have >= units).then(|| Found {
                pos: c << CELL_SHIFT | (g as usize) << GRANULE_SHIFT,
                addr: b.addr(),
                units: have,
            })
        });
        found.ok_or(most)
    }

    // ------------------------------------------------------------------
    // The policies' questions. A leaf is an upper bound of its cell's
    // largest free block: a search that reaches a cell with no fitting
    // block settles the cell's leaf (it has just read every block of the
    // cell) and searches on. Every settling lowers a leaf to its exact
    // value, which the same search can never reach again, so a search
    // settles at most the stale leaves it meets, each paid for by the
    // change that left it stale.

    /// First fit: the first free block in list order of at least `units`.
    #[inline(always)]
    pub fn first_fit(&mut self, units: u32) -> Option<Found> {
        loop {
            let c = self.tree.first(units)?;
            match self.scan(c, 0, units) {
                Ok(f) => return Some(f),
                Err(m) => self.settle(c, m),
            }
        }
    }

    /// Next fit: the first fitting block at or after the rover (a block
    /// start in region `d`, or `None` for "after every region"), else first
    /// fit.
    pub fn next_fit(&mut self, units: u32, rover: Option<(&RegionDesc, usize)>) -> Option<Found> {
        if self.tree.top() < units {
            // No cell holds a fitting block (the usual case when the heap's
            // one usable block is the hot block).
            return None;
        }
        if let Some((d, addr)) = rover {
            let (mut c, g) = cell_of(d, addr);
            if let Ok(f) = self.scan(c, g, units) {
                return Some(f);
            }
            while let Some(n) = self
                .tree
                .first_from(c + 1, units)
                .filter(|&n| n < self.next)
            {
                match self.scan(n, 0, units) {
                    Ok(f) => return Some(f),
                    Err(m) => self.settle(n, m),
                }
                c = n;
            }
        }
        self.first_fit(units)
    }

    /// The root of the max tree: at least the largest free block (an upper
    /// bound, see `largest`).
    #[inline]
    pub fn top_bound(&self) -> u32 {
        self.tree.top()
    }

    /// Worst fit: the first largest free block in list order (`None` if
    /// there is none), settling the stale leaves that claim more. It is
    /// what `first_fit` of its size answers: the first leaf that claims the
    /// root's value holds it (its scan found a block that large, and no
    /// leaf claims more), and it is that cell's first such block.
    pub fn largest(&mut self) -> Option<Found> {
        loop {
            let top = self.tree.top();
            // `first` finds the root's leaf whenever there is one (top > 0).
            let c = (top > 0).then(|| self.tree.first(top)).flatten()?;
            match self.scan(c, 0, top) {
                Ok(f) => return Some(f),
                Err(m) => self.settle(c, m),
            }
        }
    }

    // ------------------------------------------------------------------
    // Bookkeeping (block headers are written before these are called).

    /// Adds the free block at `addr` (of region `d`, `units` long).
    #[inline]
    pub fn insert(&mut self, d: &RegionDesc, addr: usize, units: u32) {
        let (c, g) = cell_of(d, addr);
        self.mark(c, g, true);
        self.set_addr_at(c, cell_addr(d, addr));
        self.len += 1;
        self.tree.raise(c, units);
    }

    /// Removes the free block at `addr`, which was `units` long.
    #[inline]
    pub fn remove(&mut self, d: &RegionDesc, addr: usize, units: u32) {
        let (c, g) = cell_of(d, addr);
        self.mark(c, g, false);
        self.len -= 1;
        debug_assert!(units <= self.tree.get(c));
        self.lost(c, units);
    }

    /// The free block at `addr` changed from `old` to `new` units in place.
    #[inline]
    pub fn resize(&mut self, d: &RegionDesc, addr: usize, old: u32, new: u32) {
        let (c, _) = cell_of(d, addr);
        self.resized(c, old, new);
    }

    #[inline]
    fn resized(&mut self, c: usize, old: u32, new: u32) {
        debug_assert!(old <= self.tree.get(c));
        if new > old {
            self.tree.raise(c, new);
        }
    }

    /// The free block at `old` (`old_units` long) is replaced by one at
    /// `new` of `new_units`: a split remainder, or a block merged with the
    /// free block after it.
    #[inline]
    pub fn replace(
        &mut self,
        d: &RegionDesc,
        old: usize,
        old_units: u32,
        new: usize,
        new_units: u32,
    ) {
        let (c0, g0) = cell_of(d, old);
        let (c1, g1) = cell_of(d, new);
        self.mark(c0, g0, false);
        self.mark(c1, g1, true);
        self.set_addr_at(c1, cell_addr(d, new));
        if c0 == c1 {
            self.resized(c0, old_units, new_units);
        } else {
            // Raised first: when the new block is the larger (a merge), the
            // old cell's lowering stops at their common ancestor.
            self.tree.raise(c1, new_units);
            self.lost(c0, old_units);
        }
    }

    // ------------------------------------------------------------------
    // Regions.

    /// Gives a new region (not yet in the heap's list, no free block yet)
    /// its cells after every live region; `regions` lists the heap's live
    /// regions in list order, for packing. `None` if the table could not
    /// grow (then nothing changed).
    pub fn add_region(
        &mut self,
        reg: &Registry,
        d: &RegionDesc,
        regions: &mut dyn Iterator<Item = u32>,
    ) -> Option<()> {
        let n = d.size() >> CELL_SHIFT;
        if self.next + n > self.cap {
            if 2 * (self.live + n) <= self.cap {
                self.compact(reg, regions);
            } else {
                let mut cap = FIRST_CAP;
                while cap < 2 * (self.live + n) {
                    cap *= 2;
                }
                self.relocate(reg, cap, regions)?;
            }
        }
        // Nothing of the new cells is written: they are empty (zero) until
        // a free block starts in one, so a region's cells cost memory only
        // where it has free blocks (a heap of huge regions holding a few
        // blocks each stays small).
        d.set_base(self.next as u32);
        self.next += n;
        self.live += n;
        Some(())
    }

    /// Region `d` (with no free block left in the index, already out of
    /// the heap's list) goes away; `regions` lists the heap's remaining
    /// regions in list order. A table mostly of dead cells shrinks, so that
    /// a heap that emptied gives its index memory back too.
    pub fn drop_region(
        &mut self,
        reg: &Registry,
        d: &RegionDesc,
        regions: &mut dyn Iterator<Item = u32>,
    ) {
        debug_assert!({
            let b = d.base() as usize;
            (b..b + (d.size() >> CELL_SHIFT)).all(|c| self.empty(c))
        });
        self.live -= d.size() >> CELL_SHIFT;
        // A big table shrinks to four times the live cells once they are a
        // sixteenth: amortised O(1); a heap that emptied ends at the same
        // table every time (the same virtual size after every round of a
        // program that frees everything and starts again); tables of up to
        // SHRINK_FROM cells (80 KiB) stay, so that a small heap whose
        // regions come and go does not map a table each time.
        if self.cap > SHRINK_FROM && self.live * 16 <= self.cap {
            let mut cap = FIRST_CAP;
            while cap < 4 * self.live {
                cap *= 2;
            }
            // On failure the big table simply stays.
            let _ = self.relocate(reg, cap, regions);
        }
    }

    /// Moves the cells of `regions` (list order), packed, into a fresh
    /// table of `cap` cells and rebuilds the tree.
    fn relocate(
        &mut self,
        reg: &Registry,
        cap: usize,
        regions: &mut dyn Iterator<Item = u32>,
    ) -> Option<()> {
        let mut fresh = Cells::with_table(self.secret, cap)?;
        fresh.len = self.len;
        for id in regions {
            let d = reg.desc(id);
            let (old, n) = (d.base() as usize, d.size() >> CELL_SHIFT);
            // Empty cells stay untouched (zero) in the fresh table.
            for i in (0..n).filter(|&i| !self.empty(old + i)) {
                let t = fresh.next + i;
                for w in 0..WORDS {
                    fresh.set_word(t, w, self.word(old + i, w));
                }
                fresh.set_addr_at(t, self.addr_at(old + i));
                fresh.tree.put_leaf(t, self.tree.get(old + i));
            }
            d.set_base(fresh.next as u32);
            fresh.next += n;
            fresh.live += n;
        }
        fresh.tree.rebuild();
        self.release_table();
        *self = fresh;
        Some(())
    }

    /// Packs the cells of `regions` (list order) to the front of the table
    /// in place: no memory is mapped and no page is touched for the first
    /// time, which matters to a heap whose regions come and go.
    fn compact(&mut self, reg: &Registry, regions: &mut dyn Iterator<Item = u32>) {
        let mut to = 0;
        for id in regions {
            let d = reg.desc(id);
            let (from, n) = (d.base() as usize, d.size() >> CELL_SHIFT);
            debug_assert!(from >= to);
            if from != to {
                // Pairs of empty cells are skipped: pages of the table that
                // never held a free start stay untouched.
                for i in 0..n {
                    if !self.empty(from + i) {
                        for w in 0..WORDS {
                            self.set_word(to + i, w, self.word(from + i, w));
                        }
                        self.set_addr_at(to + i, self.addr_at(from + i));
                        self.tree.put_leaf(to + i, self.tree.get(from + i));
                    } else if !self.empty(to + i) {
                        self.clear_cell(to + i);
                    }
                }
                d.set_base(to as u32);
            }
            to += n;
        }
        for c in to..self.next {
            if !self.empty(c) {
                self.clear_cell(c);
            }
        }
        self.next = to;
        self.live = to;
        self.tree.rebuild();
    }

    /// An empty index with a table of `cap` cells (a power of two, at
    /// least 64); `None` if it could not be mapped.
    fn with_table(secret: Key, cap: usize) -> Option<Cells> {
        let tree = MaxTree::new(cap)?;
        let base = os::map_meta(table_bytes(cap))?;
        Some(Cells {
            cap,
            tree,
            bits: base as *mut u64,
            ..Cells::new(secret)
        })
    }

    /// Unmaps the table (the index is then unusable until replaced).
    fn release_table(&mut self) {
        if self.cap != 0 {
            // SAFETY: the table was mapped with this size by `with_table`,
            // and nothing refers to it any more.
            unsafe { os::unmap_anon(self.bits as usize, table_bytes(self.cap)) };
            self.cap = 0;
        }
    }

    /// Empties the index, with room for `cells` cells of regions that the
    /// caller then adds (in list order) before inserting every free block.
    /// `None` if the table could not be mapped (then nothing changed).
    pub fn reset(&mut self, cells: usize) -> Option<()> {
        let mut cap = FIRST_CAP;
        while cap < 2 * cells {
            cap *= 2;
        }
        *self = Cells::with_table(self.secret, cap)?;
        Some(())
    }

    /// Cells a region of `size` bytes takes.
    pub const fn cells_for(size: usize) -> usize {
        size >> CELL_SHIFT
    }

    // ------------------------------------------------------------------
    // The checker.

    /// Verifies every invariant of the module docs. `regions` lists the
    /// heap's live regions in list order; `visit` vets each indexed block
    /// (address, units). Returns the number of indexed blocks.
    pub fn check(
        &self,
        reg: &Registry,
        regions: &mut dyn Iterator<Item = u32>,
        visit: &mut dyn FnMut(usize, u32) -> Result<(), &'static str>,
    ) -> Result<usize, &'static str> {
        let (mut count, mut live, mut end) = (0usize, 0usize, 0usize);
        for id in regions {
            let d = reg.desc(id);
            let (base, n) = (d.base() as usize, d.size() >> CELL_SHIFT);
            if base < end || base + n > self.next {
                return Err("region cells are not in list order");
            }
            for c in end..base {
                if !self.empty(c) || self.tree.get(c) != 0 {
                    return Err("a cell of no region holds a free block");
                }
            }
            for i in 0..n {
                let c = base + i;
                if !self.empty(c) && self.addr_at(c) != d.start() + (i << CELL_SHIFT) {
                    return Err("cell address is wrong");
                }
                let (mut m, mut err) = (0, None);
                self.find_start(c, 0, |g| {
                    let b = self.block_at(c, g);
                    err = visit(b.addr(), b.units()).err();
                    m = m.max(b.units());
                    count += 1;
                    err
                });
                if let Some(e) = err {
                    return Err(e);
                }
                if self.tree.get(c) < m || (m == 0 && self.tree.get(c) != 0) {
                    return Err(
                        "cell maximum is below its largest free block, or not 0 when empty",
                    );
                }
            }
            live += n;
            end = base + n;
        }
        for c in end..self.cap {
            if !self.empty(c) || self.tree.get(c) != 0 {
                return Err("a cell of no region holds a free block");
            }
        }
        self.tree.check()?;
        if live != self.live || count != self.len {
            return Err("cell index counts are wrong");
        }
        Ok(count)
    }
}

impl Drop for Cells {
    fn drop(&mut self) {
        self.release_table();
    }
}
