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

use crate::cells::Cells;
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

/// The free index of a heap (see the module docs).
pub struct FreeIndex {
    order: Order,
    cells: Cells,
    sizes: SizeTree,
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
    pub const fn new(order: Order, secret: u64) -> FreeIndex {
        FreeIndex {
            order,
            cells: Cells::new(secret),
            sizes: SizeTree::new(),
        }
    }

    /// The order kept.
    pub fn order(&self) -> Order {
        self.order
    }

    /// Number of free blocks.
    pub fn len(&self) -> usize {
        match self.order {
            Order::Position => self.cells.len(),
            Order::Size => self.sizes.len(),
        }
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

    /// Adds the free block at `addr` of region `d`, `units` long.
    #[inline]
    pub fn insert(&mut self, d: &RegionDesc, addr: usize, units: u32) {
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
        match self.order {
            Order::Position => self.cells.remove(d, addr, units),
            Order::Size => self.sizes.remove(sizes::key(units, d.seq(), addr)),
        }
    }

    /// The free block at `addr` changed from `old` to `new` units in place.
    #[inline]
    pub fn resize(&mut self, d: &RegionDesc, addr: usize, old: u32, new: u32) {
        match self.order {
            Order::Position => self.cells.resize(d, addr, old, new),
            Order::Size => self.replace_key(d, addr, old, addr, new),
        }
    }

    /// The free block at `old` (`old_units`) is replaced by the one at `new`
    /// (`new_units`), in the same region.
    #[inline]
    pub fn replace(
        &mut self,
        d: &RegionDesc,
        old: usize,
        old_units: u32,
        new: usize,
        new_units: u32,
    ) {
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

    /// The address of the block `policy` chooses for `units` (ARCHITECTURE.md
    /// §3), given the next-fit rover (resolved to its region by the heap).
    #[inline]
    pub fn choose(
        &mut self,
        policy: Policy,
        units: u32,
        rover: Option<(&RegionDesc, usize)>,
    ) -> Option<usize> {
        debug_assert!(policy.order() == self.order);
        match policy {
            Policy::FirstFit => self.cells.first_fit(units),
            Policy::NextFit => self.cells.next_fit(units, rover),
            Policy::WorstFit => self.cells.worst_fit(units),
            Policy::BestFit => self
                .sizes
                .lower_bound(sizes::key(units, 0, 0))
                .map(sizes::key_addr),
        }
    }

    /// Prepares an empty index of `order` for regions totalling `bytes`,
    /// which the caller then adds (`add_region`, list order) before
    /// inserting every free block. `None` if memory could not be mapped.
    pub fn for_rebuild(order: Order, secret: u64, bytes: usize) -> Option<FreeIndex> {
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
        match self.order {
            Order::Position => self.cells.check(reg, regions, visit),
            Order::Size => self.sizes.check(&mut |k| {
                let (addr, units) = (sizes::key_addr(k), sizes::key_units(k));
                visit(addr, units)?;
                let seq = reg.desc(reg.lookup(addr)).seq();
                if sizes::key(units, seq, addr) != k {
                    return Err("size index key names the wrong region");
                }
                Ok(())
            }),
        }
    }
}
