//! The free index: what the heap asks of its free blocks.
//!
//! The heap calls `insert`, `remove`, `replace`, `resized` and `choose`; how
//! the answer is found depends on the order the policy needs:
//!
//! - **Position order** (first, next and worst fit) is two levels. Each
//!   region has its own AVL tree of free blocks by address, augmented with
//!   the subtree maximum ([`Tree`], rooted in the region's *slot*). Above
//!   them, regions occupy slots in creation order, and an array segment tree
//!   over the slots holds each region's largest free block:
//!
//!   ```text
//!   seg[1] = largest free block of the heap
//!   seg[i] = max(seg[2i], seg[2i+1])            (internal nodes)
//!   seg[cap + s] = largest free block of the region in slot s (0: none)
//!   ```
//!
//!   First fit is "first slot whose value fits" (O(log slots)) then "first
//!   block in that region's tree that fits" (O(log blocks in the region)).
//!   A split or merge touches one small tree and a path of the array, and
//!   stops as soon as a value is unchanged.
//! - **Size order** (best fit) is one AVL tree over all free blocks keyed by
//!   `(size, region seq, address)`.
//!
//! Slots are handed out in creation order and never reused; when they run
//! out, live regions are packed to the front (order kept) or the table
//! doubles, so the cost is amortised O(1) per region.

use crate::block::Block;
use crate::heap::Policy;
use crate::os;
use crate::registry::Registry;
use crate::tree::{Order, Position, Tree};

/// The slot table of position order (see the module docs).
struct Slots {
    /// Number of slots (a power of two, or 0 before the first region).
    cap: usize,
    /// Slots handed out so far.
    next: usize,
    /// Slots holding a live region.
    live: usize,
    /// The segment tree: `2 * cap` entries, index 0 unused.
    seg: *mut u32,
    /// Region id per slot (0: none).
    region: *mut u32,
    /// Creation number per slot (kept for dead slots: the array stays sorted).
    seq: *mut u64,
    /// Packed root of each slot's tree.
    root: *mut u64,
}

const FIRST_CAP: usize = 64;

/// Bytes of the four arrays for `cap` slots: seg (2 * cap u32), region
/// (cap u32), seq (cap u64), root (cap u64), in that order.
fn table_bytes(cap: usize) -> usize {
    28 * cap
}

impl Slots {
    const fn new() -> Slots {
        Slots {
            cap: 0,
            next: 0,
            live: 0,
            seg: core::ptr::null_mut(),
            region: core::ptr::null_mut(),
            seq: core::ptr::null_mut(),
            root: core::ptr::null_mut(),
        }
    }

    fn seg(&self, i: usize) -> u32 {
        debug_assert!(i < 2 * self.cap);
        // SAFETY: `seg` has 2 * cap entries, mapped by `resize`.
        unsafe { *self.seg.add(i) }
    }

    fn set_seg(&mut self, i: usize, v: u32) {
        debug_assert!(i < 2 * self.cap);
        // SAFETY: as in `seg`.
        unsafe { *self.seg.add(i) = v }
    }

    fn region(&self, s: usize) -> u32 {
        debug_assert!(s < self.cap);
        // SAFETY: `region` has cap entries.
        unsafe { *self.region.add(s) }
    }

    fn seq(&self, s: usize) -> u64 {
        debug_assert!(s < self.cap);
        // SAFETY: `seq` has cap entries.
        unsafe { *self.seq.add(s) }
    }

    fn root(&self, s: usize) -> u64 {
        debug_assert!(s < self.cap);
        // SAFETY: `root` has cap entries.
        unsafe { *self.root.add(s) }
    }

    fn set_slot(&mut self, s: usize, region: u32, seq: u64, root: u64) {
        debug_assert!(s < self.cap);
        // SAFETY: all three arrays have cap entries.
        unsafe {
            *self.region.add(s) = region;
            *self.seq.add(s) = seq;
            *self.root.add(s) = root;
        }
    }

    fn set_root(&mut self, s: usize, root: u64) {
        debug_assert!(s < self.cap);
        // SAFETY: `root` has cap entries.
        unsafe { *self.root.add(s) = root }
    }

    /// Sets slot `s`'s value and fixes its ancestors, stopping as soon as
    /// one is unchanged.
    fn set_max(&mut self, s: usize, v: u32) {
        let mut i = self.cap + s;
        if self.seg(i) == v {
            return;
        }
        self.set_seg(i, v);
        while i > 1 {
            i /= 2;
            let m = self.seg(2 * i).max(self.seg(2 * i + 1));
            if self.seg(i) == m {
                return;
            }
            self.set_seg(i, m);
        }
    }

    /// The largest value of all.
    fn top(&self) -> u32 {
        if self.cap == 0 {
            0
        } else {
            self.seg(1)
        }
    }

    /// The first slot at or after `from` whose value is at least `units`.
    fn first(&self, from: usize, units: u32) -> Option<usize> {
        if from >= self.next || self.top() < units {
            return None;
        }
        // From slot 0 the whole tree qualifies: descend from the root.
        let mut i = if from == 0 { 1 } else { self.cap + from };
        // Climb until a subtree to the right of (or at) `from` fits.
        while self.seg(i) < units {
            while i & 1 == 1 {
                i /= 2;
            }
            if i == 0 {
                return None;
            }
            i += 1;
        }
        // Descend to its first fitting leaf.
        while i < self.cap {
            i *= 2;
            if self.seg(i) < units {
                i += 1;
            }
        }
        Some(i - self.cap)
    }

    /// The first slot whose creation number is at least `seq`.
    fn slot_of_seq(&self, seq: u64) -> usize {
        let (mut lo, mut hi) = (0, self.next);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.seq(mid) < seq {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Gives a new region the next slot (growing or packing the table when
    /// full) and returns it. `None` if metadata could not be mapped.
    fn push(&mut self, reg: &Registry, id: u32, seq: u64) -> Option<usize> {
        if self.next == self.cap {
            let cap = if self.cap == 0 {
                FIRST_CAP
            } else if self.live * 2 <= self.cap {
                self.cap
            } else {
                self.cap * 2
            };
            self.resize(reg, cap)?;
        }
        let s = self.next;
        self.next += 1;
        self.live += 1;
        self.set_slot(s, id, seq, 0);
        self.set_max(s, 0);
        reg.desc(id).set_slot(s as u32);
        Some(s)
    }

    /// Empties slot `s` (its region was unmapped).
    fn clear(&mut self, s: usize) {
        let seq = self.seq(s);
        self.set_slot(s, 0, seq, 0);
        self.set_max(s, 0);
        self.live -= 1;
    }

    /// Moves the live slots, in order, to the front of a table of `cap`
    /// slots (a fresh mapping), and rebuilds the segment tree.
    fn resize(&mut self, reg: &Registry, cap: usize) -> Option<()> {
        let bytes = table_bytes(cap);
        let base = os::map_anon(bytes)?;
        let mut fresh = Slots {
            cap,
            next: 0,
            live: 0,
            seg: base as *mut u32,
            region: (base + 8 * cap) as *mut u32,
            seq: (base + 12 * cap) as *mut u64,
            root: (base + 20 * cap) as *mut u64,
        };
        for s in 0..self.next {
            let id = self.region(s);
            if id != 0 {
                let t = fresh.next;
                fresh.set_slot(t, id, self.seq(s), self.root(s));
                fresh.set_seg(cap + t, self.seg(self.cap + s));
                reg.desc(id).set_slot(t as u32);
                fresh.next += 1;
                fresh.live += 1;
            }
        }
        for i in (1..cap).rev() {
            fresh.set_seg(i, fresh.seg(2 * i).max(fresh.seg(2 * i + 1)));
        }
        if self.cap != 0 {
            // SAFETY: the old table was mapped by a previous `resize` with
            // this size and nothing refers to it any more.
            unsafe { os::unmap_anon(self.seg as usize, table_bytes(self.cap)) };
        }
        *self = fresh;
        Some(())
    }

    /// Forgets every slot (keeps the mapping).
    fn reset(&mut self) {
        for i in 0..2 * self.cap {
            self.set_seg(i, 0);
        }
        self.next = 0;
        self.live = 0;
    }
}

/// The free index of a heap (see the module docs).
pub struct FreeIndex {
    order: Order,
    /// Position order: the engine for whichever region's tree is loaded.
    /// Size order: the global tree.
    tree: Tree,
    slots: Slots,
}

// SAFETY: the slot arrays are owned by the index alone (mapped for it and
// unmapped by it); moving the index to another thread moves that ownership.
unsafe impl Send for FreeIndex {}

impl FreeIndex {
    /// An empty index of the given order.
    pub const fn new(order: Order) -> FreeIndex {
        FreeIndex {
            order,
            tree: Tree::new(order),
            slots: Slots::new(),
        }
    }

    /// The order kept.
    pub fn order(&self) -> Order {
        self.order
    }

    /// Number of free blocks.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether there is no free block.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f` on the tree of the region holding `b` (position order).
    fn in_region<R>(&mut self, reg: &Registry, b: Block, f: impl FnOnce(&mut Tree) -> R) -> R {
        let s = reg.desc(b.region()).slot() as usize;
        self.load(s);
        let r = f(&mut self.tree);
        self.store(s);
        r
    }

    fn load(&mut self, s: usize) {
        self.tree.load(self.slots.root(s));
    }

    fn store(&mut self, s: usize) {
        self.slots.set_root(s, self.tree.root_bits());
        self.slots.set_max(s, self.tree.max_units());
    }

    /// A region was mapped (it has no free block yet). `None` if the index
    /// could not grow.
    pub fn add_region(&mut self, reg: &Registry, id: u32) -> Option<()> {
        if self.order == Order::Position {
            self.slots.push(reg, id, reg.desc(id).seq())?;
        }
        Some(())
    }

    /// A region (with no free block left in the index) is being unmapped.
    pub fn drop_region(&mut self, reg: &Registry, id: u32) {
        if self.order == Order::Position {
            self.slots.clear(reg.desc(id).slot() as usize);
        }
    }

    /// Adds a free block.
    pub fn insert(&mut self, reg: &Registry, b: Block) {
        match self.order {
            Order::Position => self.in_region(reg, b, |t| t.insert(reg, b)),
            Order::Size => self.tree.insert(reg, b),
        }
    }

    /// Removes a free block (with the key it was inserted with).
    pub fn remove(&mut self, reg: &Registry, b: Block) {
        match self.order {
            Order::Position => self.in_region(reg, b, |t| t.remove(reg, b)),
            Order::Size => self.tree.remove(reg, b),
        }
    }

    /// Position order only: `new` takes `old`'s place (same neighbours).
    pub fn replace(&mut self, reg: &Registry, old: Block, new: Block) {
        debug_assert!(self.order == Order::Position);
        self.in_region(reg, old, |t| t.replace(reg, old, new));
    }

    /// Position order only: `b` changed size in place.
    pub fn resized(&mut self, reg: &Registry, b: Block) {
        debug_assert!(self.order == Order::Position);
        self.in_region(reg, b, |t| t.resized(reg, b));
    }

    /// The block `policy` chooses for `units` (ARCHITECTURE.md §3), given
    /// the next-fit rover.
    pub fn choose(
        &mut self,
        reg: &Registry,
        policy: Policy,
        units: u32,
        rover: Position,
    ) -> Option<Block> {
        match policy {
            Policy::BestFit => self.tree.lower_bound(units),
            Policy::FirstFit => self.first_fit_from_slot(0, units),
            Policy::WorstFit => match self.slots.top() {
                0 => None,
                top if top < units => None,
                top => self.first_fit_from_slot(0, top),
            },
            Policy::NextFit => self
                .next_fit(reg, units, rover)
                .or_else(|| self.first_fit_from_slot(0, units)),
        }
    }

    fn first_fit_from_slot(&mut self, from: usize, units: u32) -> Option<Block> {
        let s = self.slots.first(from, units)?;
        self.load(s);
        self.tree.first_fit(units)
    }

    fn next_fit(&mut self, reg: &Registry, units: u32, rover: Position) -> Option<Block> {
        let s = self.slots.slot_of_seq(rover.0);
        if s >= self.slots.next {
            return None;
        }
        if self.slots.seq(s) == rover.0 && self.slots.region(s) != 0 {
            self.load(s);
            if let Some(b) = self.tree.first_fit_from(reg, rover, units) {
                return Some(b);
            }
            return self.first_fit_from_slot(s + 1, units);
        }
        self.first_fit_from_slot(s, units)
    }

    /// Empties the index and switches to `order`; `regions` lists the live
    /// regions in list order and `free` every free block, for the rebuild.
    pub fn rebuild(
        &mut self,
        reg: &Registry,
        order: Order,
        regions: &mut dyn Iterator<Item = u32>,
        free: &mut dyn Iterator<Item = Block>,
    ) {
        self.order = order;
        self.tree.clear(order);
        self.slots.reset();
        if order == Order::Position {
            for id in regions {
                self.slots
                    .push(reg, id, reg.desc(id).seq())
                    .expect("slot table could not grow during a rebuild");
            }
        }
        for b in free {
            self.insert(reg, b);
        }
    }

    /// Verifies the index: every tree (order, balance, maxima), the slot
    /// table against the heap's regions (`regions`, in list order), and the
    /// segment tree. `visit` vets each indexed block. Returns the number of
    /// indexed blocks.
    pub fn check(
        &self,
        reg: &Registry,
        regions: &mut dyn Iterator<Item = u32>,
        visit: &mut dyn FnMut(Block) -> Result<(), &'static str>,
    ) -> Result<usize, &'static str> {
        if self.order == Order::Size {
            return self.tree.check(reg, visit);
        }
        let s = &self.slots;
        let mut count = 0;
        let mut last: Option<usize> = None;
        let mut live = 0;
        for id in regions {
            let slot = reg.desc(id).slot() as usize;
            if slot >= s.next || s.region(slot) != id || s.seq(slot) != reg.desc(id).seq() {
                return Err("slot table does not match the region");
            }
            if last.is_some_and(|l| l >= slot) {
                return Err("slots are not in list order");
            }
            last = Some(slot);
            live += 1;
            let (n, max) = self.tree.check_root(reg, s.root(slot), &mut |b| {
                if b.region() != id {
                    return Err("a region's tree holds another region's block");
                }
                visit(b)
            })?;
            if s.seg(s.cap + slot) != max {
                return Err("segment tree leaf is not the region's largest free block");
            }
            count += n;
        }
        if live != s.live {
            return Err("slot table counts the wrong number of regions");
        }
        for slot in 0..s.next {
            if s.region(slot) == 0 && s.seg(s.cap + slot) != 0 {
                return Err("an empty slot has a free block");
            }
            if slot > 0 && s.seq(slot) <= s.seq(slot - 1) {
                return Err("slot creation numbers are not increasing");
            }
        }
        for i in 1..s.cap {
            if s.seg(i) != s.seg(2 * i).max(s.seg(2 * i + 1)) {
                return Err("segment tree node is not the max of its children");
            }
        }
        if count != self.tree.len() {
            return Err("free index length is wrong");
        }
        Ok(count)
    }
}
