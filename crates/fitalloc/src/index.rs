//! The free index: what the heap asks of its free blocks.
//!
//! The heap reports every change to its free blocks (`insert`, `remove`,
//! `resize`, `replace`) and asks `choose` for the policy's block. The index
//! keeps only the order the current policy needs:
//!
//! - **Position order** (first, next and worst fit): [`Cells`], a bitmap of
//!   free-block starts per KiB of every region plus a max segment tree, in
//!   list order.
//! - **Size order** (best fit): [`SizeTree`], a B+tree keyed by
//!   `(size, region seq, address)`.
//!
//! Both live outside the heap's memory (their own mappings): a free block
//! holds nothing but its header (and, if it was named, its name), so what a
//! program writes into freed memory never reaches the index. Switching
//! between best fit and the others builds the other index from the blocks.
//!
//! **The hot block.** One free block is kept beside the order instead of in
//! it: the block the last `replace` produced (a split remainder, or a freed
//! block merged with the free block after it), or, when there is none, the
//! next block inserted. A program that allocates from a block and frees
//! back into it (the heap's tail, a vector grown and dropped, a temporary)
//! then changes only three words here instead of a bitmap, a tree path and
//! a cell rescan per call. `choose` asks the order and then ranks the hot
//! block against its answer by the policy's own order (list position for
//! first fit, position counted from the rover for next fit, size then
//! position for worst and best fit), so the choice is the same as if the
//! hot block were in the order. A `replace` of another block takes that
//! block out of the order and puts the hot block in: one removal and one
//! insertion instead of a move.

use crate::block::Key;
use crate::cells::{self, Cells, Found};
use crate::policy::{Order, Policy};
use crate::registry::{RegionDesc, Registry};
use crate::sizes::{self, SizeTree};

/// Where the next-fit search starts (ARCHITECTURE.md §3, "the rover").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rover {
    /// Before every position (no choice made yet).
    Start,
    /// At a block start of a live region.
    At {
        /// The region's id.
        region: u32,
        /// The block's address.
        addr: usize,
    },
    /// After every position of every live region.
    End,
}

/// The block `FreeIndex::choose` picked: its address and, when the
/// position order's search read its header (with its check, as
/// `Block::indexed_units` does), the size that header gave; 0 when the
/// header has not been read (the hot block, best fit's key), so that the
/// heap checks it before using it. For the hot block it also gives the
/// region's descriptor, which the index keeps, so that the heap need not
/// look it up.
#[derive(Clone, Copy)]
pub struct Choice {
    /// The block's address.
    pub addr: usize,
    /// Its checked size in units, or 0.
    pub units: u32,
    /// Its region's descriptor when the index knows it (the hot block's).
    pub region: Option<&'static RegionDesc>,
}

impl Choice {
    /// A block whose header the search has checked.
    #[inline]
    fn checked(f: Found) -> Choice {
        Choice {
            addr: f.addr,
            units: f.units,
            region: None,
        }
    }

    /// A block whose header nobody has read yet.
    #[inline]
    fn unchecked(addr: usize) -> Choice {
        Choice {
            addr,
            units: 0,
            region: None,
        }
    }
}

/// The free index of a heap (see the module docs).
pub struct FreeIndex {
    order: Order,
    cells: Cells,
    sizes: SizeTree,
    /// The hot block's address and size (both 0: none), and its region.
    hot: usize,
    hot_d: *const RegionDesc,
    hot_units: u32,
}

// SAFETY: both structures own their mappings outright; moving the index to
// another thread moves that ownership.
unsafe impl Send for FreeIndex {}

/// The size index found no node for a new key. `reserve` makes this
/// unreachable (a free block never needs more room than was reserved for
/// the blocks), so this is a broken invariant, reported and fatal.
#[cold]
fn out_of_memory() -> ! {
    crate::eprint_raw!("fitalloc: out of memory for the free index\n");
    crate::os::abort()
}

impl FreeIndex {
    /// An empty index of the given order; `secret` keys the header checks.
    pub const fn new(order: Order, secret: Key) -> FreeIndex {
        FreeIndex {
            order,
            cells: Cells::new(secret),
            sizes: SizeTree::new(),
            hot: 0,
            hot_d: core::ptr::null(),
            hot_units: 0,
        }
    }

    /// The hot block's region (not tied to `self`: descriptors live as
    /// long as the process).
    #[inline]
    fn hot_desc(&self) -> &'static RegionDesc {
        debug_assert!(self.hot != 0);
        // SAFETY: while `hot` is set, `hot_d` is the descriptor of its live
        // region: registry descriptors are never unmapped, and the hot
        // block leaves (`remove`) before its region does.
        unsafe { &*self.hot_d }
    }

    /// The hot block as a choice (its header unread, its region known).
    #[inline]
    fn hot_choice(&self) -> Choice {
        debug_assert!(self.hot != 0);
        Choice {
            addr: self.hot,
            units: 0,
            region: Some(self.hot_desc()),
        }
    }

    /// The hot block's address, if there is one and it holds `units`.
    #[inline]
    fn hot_fitting(&self, units: u32) -> Option<usize> {
        debug_assert!(units > 0);
        (self.hot_units >= units).then_some(self.hot)
    }

    #[inline]
    fn set_hot(&mut self, d: &RegionDesc, addr: usize, units: u32) {
        self.hot = addr;
        self.hot_d = d;
        self.hot_units = units;
    }

    /// The order kept.
    pub fn order(&self) -> Order {
        self.order
    }

    /// Number of free blocks.
    pub fn len(&self) -> usize {
        (self.hot != 0) as usize
            + match self.order {
                Order::Position => self.cells.len(),
                Order::Size => self.sizes.len(),
            }
    }

    /// How many stale cell maxima the position order's searches have
    /// settled (0 in the size order).
    pub fn settled(&self) -> usize {
        self.cells.settled()
    }

    /// Whether there is no free block.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for `blocks` free blocks (the heap's number of blocks,
    /// counting those the next operation adds), so that no later `free`
    /// needs memory; called before operations that add blocks, which fail
    /// cleanly (`None`) if it can't. The position index needs nothing: its
    /// cells come with each region.
    pub fn reserve(&mut self, blocks: usize) -> Option<()> {
        match self.order {
            Order::Position => Some(()),
            Order::Size => self.sizes.reserve_keys(blocks),
        }
    }

    /// A region was mapped (not in the heap's list yet, no free block);
    /// `regions` lists the heap's regions in list order. `None` if the index
    /// could not grow (then nothing changed).
    pub fn add_region(
        &mut self,
        reg: &Registry,
        d: &RegionDesc,
        regions: &mut dyn Iterator<Item = u32>,
    ) -> Option<()> {
        match self.order {
            Order::Position => self.cells.add_region(reg, d, regions),
            Order::Size => Some(()),
        }
    }

    /// A region (with no free block left in the index, already out of the
    /// heap's list) is being unmapped; `regions` lists the others.
    pub fn drop_region(
        &mut self,
        reg: &Registry,
        d: &RegionDesc,
        regions: &mut dyn Iterator<Item = u32>,
    ) {
        if self.order == Order::Position {
            self.cells.drop_region(reg, d, regions);
        }
    }

    /// Adds the free block at `addr` of region `d`, `units` long (as the
    /// hot block if there is none).
    #[inline]
    pub fn insert(&mut self, d: &RegionDesc, addr: usize, units: u32) {
        if self.hot == 0 {
            self.set_hot(d, addr, units);
        } else {
            self.insert_ordered(d, addr, units);
        }
    }

    #[inline]
    fn insert_ordered(&mut self, d: &RegionDesc, addr: usize, units: u32) {
        match self.order {
            Order::Position => self.cells.insert(d, addr, units),
            Order::Size => {
                if self
                    .sizes
                    .insert(sizes::key(units, d.seq(), addr))
                    .is_none()
                {
                    out_of_memory();
                }
            }
        }
    }

    /// Removes the free block at `addr`, which was `units` long.
    #[inline]
    pub fn remove(&mut self, d: &RegionDesc, addr: usize, units: u32) {
        if addr == self.hot {
            self.hot = 0;
            self.hot_units = 0;
            return;
        }
        self.remove_ordered(d, addr, units);
    }

    #[inline]
    fn remove_ordered(&mut self, d: &RegionDesc, addr: usize, units: u32) {
        match self.order {
            Order::Position => self.cells.remove(d, addr, units),
            Order::Size => self.sizes.remove(sizes::key(units, d.seq(), addr)),
        }
    }

    /// The free block at `addr` changed from `old` to `new` units in place.
    #[inline]
    pub fn resize(&mut self, d: &RegionDesc, addr: usize, old: u32, new: u32) {
        if addr == self.hot {
            self.hot_units = new;
            return;
        }
        match self.order {
            Order::Position => self.cells.resize(d, addr, old, new),
            Order::Size => self.replace_key(d, addr, old, addr, new),
        }
    }

    /// The free block at `old` (`old_units`) is replaced by the one at `new`
    /// (`new_units`), in the same region; the new one is the hot block.
    #[inline(always)]
    pub fn replace(
        &mut self,
        d: &RegionDesc,
        old: usize,
        old_units: u32,
        new: usize,
        new_units: u32,
    ) {
        if !self.replace_hot(old, new, new_units) {
            self.replace_ordered(d, old, old_units, new, new_units);
        }
    }

    /// `replace` of a block of the order: it leaves the order, the hot
    /// block joins it, the new block is hot.
    #[inline]
    fn replace_ordered(
        &mut self,
        d: &RegionDesc,
        old: usize,
        old_units: u32,
        new: usize,
        new_units: u32,
    ) {
        self.remove_ordered(d, old, old_units);
        if self.hot != 0 {
            self.insert_ordered(self.hot_desc(), self.hot, self.hot_units);
        }
        self.set_hot(d, new, new_units);
    }

    /// If `old` is the hot block, `new` (of `new_units`, in the same
    /// region: `hot_d` stays) takes its place.
    #[inline(always)]
    fn replace_hot(&mut self, old: usize, new: usize, new_units: u32) -> bool {
        if old != self.hot {
            return false;
        }
        self.hot = new;
        self.hot_units = new_units;
        true
    }

    /// As `replace`, but a block that is not the hot one is replaced where
    /// it stands in the order (the hot block stays): a block that grows in
    /// place into its free neighbour (`realloc`) takes that neighbour's
    /// front, and the rest stays where it was.
    #[inline]
    pub fn replace_in_order(
        &mut self,
        d: &RegionDesc,
        old: usize,
        old_units: u32,
        new: usize,
        new_units: u32,
    ) {
        if self.replace_hot(old, new, new_units) {
            return;
        }
        match self.order {
            Order::Position => self.cells.replace(d, old, old_units, new, new_units),
            Order::Size => self.replace_key(d, old, old_units, new, new_units),
        }
    }

    fn replace_key(
        &mut self,
        d: &RegionDesc,
        old: usize,
        old_units: u32,
        new: usize,
        new_units: u32,
    ) {
        let seq = d.seq();
        let (a, b) = (
            sizes::key(old_units, seq, old),
            sizes::key(new_units, seq, new),
        );
        if self.sizes.replace(a, b).is_none() {
            out_of_memory();
        }
    }

    /// The block `policy` chooses for `units` (ARCHITECTURE.md §3), given
    /// the next-fit rover (resolved to its region by the heap): the order's
    /// answer or the hot block, whichever the policy ranks first.
    #[inline]
    pub fn choose(
        &mut self,
        policy: Policy,
        units: u32,
        rover: Option<(&RegionDesc, usize)>,
    ) -> Option<Choice> {
        debug_assert!(policy.order() == self.order);
        match policy {
            Policy::FirstFit => {
                let found = self.cells.first_fit(units);
                match self.hot_fitting(units) {
                    None => found.map(Choice::checked),
                    Some(_) => Some(self.earlier(found, 0)),
                }
            }
            Policy::NextFit => {
                let found = self.cells.next_fit(units, rover);
                match self.hot_fitting(units) {
                    None => found.map(Choice::checked),
                    Some(_) => {
                        let from = rover.map_or(0, |(d, a)| cells::position(d, a));
                        Some(self.earlier(found, from))
                    }
                }
            }
            Policy::WorstFit => {
                // `top` is exact when the bound exceeds the hot block
                // (`largest` then also gives the first block of that size),
                // else an upper bound that does not: then the hot block is
                // the largest, with maybe a block of the order of its size
                // (`first_fit` below settles that).
                let hot = self.hot_units;
                let (top, largest) = match self.cells.top_bound() {
                    bound if bound > hot => match self.cells.largest() {
                        Some(f) => (f.units, Some(f)),
                        None => (0, None),
                    },
                    bound => (bound, None),
                };
                let most = top.max(hot);
                if most == 0 || most < units {
                    None
                } else if hot < most {
                    // `top` exceeds the hot block only when `largest` gave it.
                    largest.map(Choice::checked)
                } else if top < most {
                    Some(self.hot_choice())
                } else {
                    let found = largest.or_else(|| self.cells.first_fit(most));
                    Some(self.earlier(found, 0))
                }
            }
            Policy::BestFit => {
                let found = self.sizes.best(units);
                let key = match self.hot_fitting(units) {
                    None => found?,
                    Some(h) => {
                        let hk = sizes::key(self.hot_units, self.hot_desc().seq(), h);
                        found.map_or(hk, |k| k.min(hk))
                    }
                };
                let addr = sizes::key_addr(key);
                Some(if addr == self.hot {
                    self.hot_choice()
                } else {
                    Choice::unchecked(addr)
                })
            }
        }
    }

    /// Of `found` (the position order's candidate) and the hot block (a
    /// candidate too: the caller saw it fit), the first in list order
    /// counted from position `from` and wrapping around: next fit's order,
    /// and first fit's when `from` is 0.
    #[inline]
    fn earlier(&self, found: Option<Found>, from: usize) -> Choice {
        let Some(f) = found else {
            return self.hot_choice();
        };
        let h = cells::position(self.hot_desc(), self.hot);
        let rank = |p: usize| (p < from, p);
        if rank(h) < rank(f.pos) {
            self.hot_choice()
        } else {
            Choice::checked(f)
        }
    }

    /// Prepares an empty index of `order` for regions totalling `bytes`,
    /// which the caller then adds (`add_region`, list order) before
    /// inserting every free block. `None` if memory could not be mapped.
    pub fn for_rebuild(order: Order, secret: Key, bytes: usize) -> Option<FreeIndex> {
        let mut fresh = FreeIndex::new(order, secret);
        if order == Order::Position {
            fresh.cells.reset(Cells::cells_for(bytes))?;
        }
        Some(fresh)
    }

    /// `insert` for a rebuild: `None` (instead of ending the process) when
    /// memory runs out.
    pub fn insert_fallible(&mut self, d: &RegionDesc, addr: usize, units: u32) -> Option<()> {
        match self.order {
            Order::Position => {
                self.cells.insert(d, addr, units);
                Some(())
            }
            Order::Size => self.sizes.insert(sizes::key(units, d.seq(), addr)),
        }
    }

    /// Verifies the index against the heap's regions (`regions`, list
    /// order); `visit` vets each indexed block (address, units) before its
    /// memory is read any further. Returns the number of indexed blocks.
    pub fn check(
        &self,
        reg: &Registry,
        regions: &mut dyn Iterator<Item = u32>,
        visit: &mut dyn FnMut(usize, u32) -> Result<(), &'static str>,
    ) -> Result<usize, &'static str> {
        if (self.hot == 0) != (self.hot_units == 0) {
            return Err("the hot block's address and size disagree");
        }
        let mut hot_key = None;
        let hot = if self.hot != 0 {
            visit(self.hot, self.hot_units)?;
            let d = reg.desc(reg.lookup(self.hot));
            if !core::ptr::eq(d, self.hot_d) {
                return Err("the hot block names the wrong region");
            }
            if self.order == Order::Position && self.cells.contains(d, self.hot) {
                return Err("the hot block is indexed twice");
            }
            hot_key = Some(sizes::key(self.hot_units, d.seq(), self.hot));
            1
        } else {
            0
        };
        let ordered = match self.order {
            Order::Position => self.cells.check(reg, regions, visit)?,
            Order::Size => self.sizes.check(&mut |k| {
                let (addr, units) = (sizes::key_addr(k), sizes::key_units(k));
                if hot_key.is_some_and(|h| sizes::key_addr(h) == addr) {
                    return Err("the hot block is indexed twice");
                }
                visit(addr, units)?;
                let seq = reg.desc(reg.lookup(addr)).seq();
                if sizes::key(units, seq, addr) != k {
                    return Err("size index key names the wrong region");
                }
                Ok(())
            })?,
        };
        Ok(hot + ordered)
    }
}
