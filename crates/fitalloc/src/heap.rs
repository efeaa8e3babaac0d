//! A heap: regions, blocks, split and merge, and the placement policies.
//!
//! Every rule here is written out in ARCHITECTURE.md §3; the reference model
//! in `tests/model.rs` implements the same rules with a plain list.
//!
//! The heap does no locking: the caller wraps it (see `global`). Splitting is
//! done in one place (`take`), merging in one place (`release`); the policy
//! only decides which free block `choose` returns.

use crate::block::{self, Block, ALIGN, FREE, HEADER, MAX_UNITS, MIN_BLOCK, NAMED, NAME_AREA};
use crate::index::FreeIndex;
use crate::os::PageSource;
use crate::registry::{RegionDesc, Registry};
use crate::tree::{Order, Position};

/// Where a new allocation goes (ARCHITECTURE.md §3, "Choose").
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Policy {
    /// The first free block in list order that fits.
    #[default]
    FirstFit,
    /// The first block that fits at or after the previous choice, wrapping once.
    NextFit,
    /// The smallest block that fits; ties to the first in list order.
    BestFit,
    /// The largest block; ties to the first in list order.
    WorstFit,
}

impl Policy {
    /// All four, in the order the docs list them.
    pub const ALL: [Policy; 4] = [
        Policy::FirstFit,
        Policy::NextFit,
        Policy::BestFit,
        Policy::WorstFit,
    ];

    /// The name used by `ALLOCATOR_ALGORITHM`.
    pub const fn name(self) -> &'static str {
        match self {
            Policy::FirstFit => "first_fit",
            Policy::NextFit => "next_fit",
            Policy::BestFit => "best_fit",
            Policy::WorstFit => "worst_fit",
        }
    }

    /// Parses an `ALLOCATOR_ALGORITHM` value.
    pub fn from_name(s: &[u8]) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name().as_bytes() == s)
    }

    fn order(self) -> Order {
        match self {
            Policy::BestFit => Order::Size,
            _ => Order::Position,
        }
    }
}

/// A misuse of the heap found by `free`, `realloc` or `usable_size`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Misuse {
    /// The block is already free.
    DoubleFree,
    /// The pointer is not one this heap handed out.
    NotOurs,
    /// The header (or a neighbour's) fails its checks.
    Corrupted,
}

impl Misuse {
    /// The text of the one-line report.
    pub const fn what(self) -> &'static str {
        match self {
            Misuse::DoubleFree => "double free",
            Misuse::NotOurs => "free of a pointer not from malloc",
            Misuse::Corrupted => "corrupted block header",
        }
    }
}

/// Counters kept by every heap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes in used blocks (headers included).
    pub in_use: usize,
    /// Largest `in_use` seen.
    pub peak_in_use: usize,
    /// `mapped` at the moment `in_use` reached its peak.
    pub mapped_at_peak_in_use: usize,
    /// Bytes in mapped regions.
    pub mapped: usize,
    /// Largest `mapped` seen.
    pub peak_mapped: usize,
    /// Regions mapped so far.
    pub regions_mapped: u64,
    /// Regions unmapped so far.
    pub regions_unmapped: u64,
}

impl Counters {
    /// Adds another heap's counters (peaks add up: the sum of the peaks).
    pub fn add(&mut self, o: &Counters) {
        self.in_use += o.in_use;
        self.peak_in_use += o.peak_in_use;
        self.mapped_at_peak_in_use += o.mapped_at_peak_in_use;
        self.mapped += o.mapped;
        self.peak_mapped += o.peak_mapped;
        self.regions_mapped += o.regions_mapped;
        self.regions_unmapped += o.regions_unmapped;
    }
}

/// A block as seen from outside, for printing and tests.
#[derive(Clone, Copy, Debug)]
pub struct BlockInfo {
    /// Address of the block (its header).
    pub addr: usize,
    /// Whole size in bytes.
    pub size: usize,
    /// Whether it is free.
    pub free: bool,
    name: Option<Block>,
}

impl BlockInfo {
    /// The block's name (empty if it has none).
    pub fn name(&self) -> &[u8] {
        match self.name {
            None => &[],
            Some(b) => {
                // SAFETY: a named block's last NAME_AREA bytes hold its name;
                // the slice lives as long as the caller keeps the heap borrowed.
                let bytes = unsafe { core::slice::from_raw_parts(b.name_addr() as *const u8, 31) };
                let len = bytes.iter().position(|&c| c == 0).unwrap_or(31);
                &bytes[..len]
            }
        }
    }
}

/// A heap over the regions it maps from `S`.
pub struct Heap<S: PageSource> {
    source: S,
    reg: &'static Registry,
    id: u32,
    secret: u64,
    policy: Policy,
    index: FreeIndex,
    head: u32,
    tail: u32,
    rover: Position,
    scribble: bool,
    counters: Counters,
}

// SAFETY: a heap owns its regions outright; the raw pointers inside it (the
// free tree's root) point only into that memory, which moves with the heap.
unsafe impl<S: PageSource + Send> Send for Heap<S> {}

/// The result of an allocation inside the heap: the block and whether its
/// payload is known to be zero.
#[derive(Clone, Copy)]
struct Taken {
    block: Block,
    zeroed: bool,
}

impl<S: PageSource> Heap<S> {
    /// A heap with no regions. `id` (non-zero) names it in the registry's
    /// descriptors; heaps sharing a registry need distinct ids.
    pub fn new(source: S, reg: &'static Registry, id: u32, policy: Policy) -> Heap<S> {
        assert!(id != 0, "heap id 0 is reserved");
        Heap {
            source,
            reg,
            id,
            secret: reg.secret(),
            policy,
            index: FreeIndex::new(policy.order()),
            head: 0,
            tail: 0,
            rover: (0, 0),
            scribble: false,
            counters: Counters::default(),
        }
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The registry this heap records its regions in.
    pub fn registry(&self) -> &'static Registry {
        self.reg
    }

    /// The page source (tests use it to inject mapping failures).
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// Changes the policy; switching between best fit and the others
    /// rebuilds the free index once (O(n log n)).
    pub fn set_policy(&mut self, policy: Policy) {
        let order = policy.order();
        self.policy = policy;
        if order == self.index.order() {
            return;
        }
        let reg = self.reg;
        let mut regions = region_ids(reg, self.head);
        let mut free = region_ids(reg, self.head)
            .flat_map(move |id| region_blocks(reg.desc(id)))
            .filter(|b| b.is_free());
        self.index.rebuild(reg, order, &mut regions, &mut free);
    }

    /// Whether new allocations are filled with 0xAA.
    pub fn set_scribble(&mut self, on: bool) {
        self.scribble = on;
    }

    // ----------------------------------------------------------------------
    // The public operations.

    /// Allocates `size` bytes; `None` when out of memory.
    pub fn malloc(&mut self, size: usize) -> Option<usize> {
        let need = block::need(size, false)?;
        let t = self.alloc_block(need)?;
        self.scribble_from(t.block, 0);
        Some(t.block.payload())
    }

    /// Allocates `size` bytes and records `name` (first 31 bytes).
    pub fn malloc_named(&mut self, size: usize, name: &[u8]) -> Option<usize> {
        let need = block::need(size, true)?;
        let t = self.alloc_block(need)?;
        let b = t.block;
        b.set_flags(self.secret, NAMED);
        let mut area = [0u8; NAME_AREA];
        let n = name.len().min(NAME_AREA - 1);
        area[..n].copy_from_slice(&name[..n]);
        write_name(b, &area);
        self.scribble_from(b, 0);
        Some(b.payload())
    }

    /// Allocates `n * size` zeroed bytes; `None` on overflow or out of memory.
    pub fn calloc(&mut self, n: usize, size: usize) -> Option<usize> {
        let need = block::need(n.checked_mul(size)?, false)?;
        let t = self.alloc_block(need)?;
        if !t.zeroed {
            // SAFETY: the usable bytes of a block we just allocated are ours.
            unsafe { core::ptr::write_bytes(t.block.payload() as *mut u8, 0, t.block.usable()) };
        }
        Some(t.block.payload())
    }

    /// Allocates `size` bytes at a multiple of `align` (a power of two).
    pub fn memalign(&mut self, align: usize, size: usize) -> Option<usize> {
        debug_assert!(align.is_power_of_two());
        if align <= ALIGN {
            return self.malloc(size);
        }
        let need = block::need(size, false)?;
        let padded = need.checked_add(align)?.checked_add(HEADER)?;
        if padded / ALIGN > MAX_UNITS {
            return None;
        }
        let (c, in_tree, zeroed) = self.choose_or_map(padded)?;
        let q = block::round_up(c.addr() + HEADER, align)?;
        let mut gap = q - HEADER - c.addr();
        if gap > 0 && gap < MIN_BLOCK {
            gap += align;
        }
        let b = self.take(c, gap, need, in_tree);
        let _ = zeroed;
        self.scribble_from(b, 0);
        Some(b.payload())
    }

    /// Frees the block at `p`.
    pub fn free(&mut self, p: usize) -> Result<(), Misuse> {
        self.free_in(self.reg.lookup(p), p)
    }

    /// `free` when the caller already looked `p` up in the page map
    /// (`region` = `registry().lookup(p)`, whatever it returned).
    pub fn free_in(&mut self, region: u32, p: usize) -> Result<(), Misuse> {
        let b = self.block_in(region, p)?;
        self.counters.in_use -= b.size();
        self.release(b);
        Ok(())
    }

    /// Resizes the block at `p` (ARCHITECTURE.md §3, "Realloc"). `Ok(None)`
    /// means out of memory, with the block untouched.
    pub fn realloc(&mut self, p: usize, size: usize) -> Result<Option<usize>, Misuse> {
        self.realloc_in(self.reg.lookup(p), p, size)
    }

    /// `realloc` when the caller already looked `p` up (as `free_in`).
    pub fn realloc_in(
        &mut self,
        region: u32,
        p: usize,
        size: usize,
    ) -> Result<Option<usize>, Misuse> {
        let b = self.block_in(region, p)?;
        let Some(need) = block::need(size, b.is_named()) else {
            return Ok(None);
        };
        let (s, old_usable) = (b.size(), b.usable());
        if need <= s {
            if s - need >= MIN_BLOCK {
                self.shrink(b, need);
            }
            return Ok(Some(p));
        }
        if let Some(n) = self.next_in_region(b).filter(|n| n.is_free()) {
            if s + n.size() >= need {
                self.absorb(b, n, need);
                self.scribble_from(b, old_usable);
                return Ok(Some(p));
            }
        }
        let Some(t) = self.alloc_block(need) else {
            return Ok(None);
        };
        let nb = t.block;
        // SAFETY: both payloads are ours, distinct blocks, and at least
        // `old_usable` bytes long (need > s so the new block is larger).
        unsafe {
            core::ptr::copy_nonoverlapping(p as *const u8, nb.payload() as *mut u8, old_usable)
        };
        if b.is_named() {
            nb.set_flags(self.secret, NAMED);
            write_name(nb, &read_name(b));
        }
        self.scribble_from(nb, old_usable);
        self.counters.in_use -= b.size();
        self.release(b);
        Ok(Some(nb.payload()))
    }

    /// Usable bytes of the block at `p`.
    pub fn usable_size(&self, p: usize) -> Result<usize, Misuse> {
        self.usable_size_in(self.reg.lookup(p), p)
    }

    /// `usable_size` when the caller already looked `p` up (as `free_in`).
    pub fn usable_size_in(&self, region: u32, p: usize) -> Result<usize, Misuse> {
        Ok(self.block_in(region, p)?.usable())
    }

    // ----------------------------------------------------------------------
    // Looking at the heap.

    /// The heap's regions in list order.
    pub fn regions(&self) -> impl Iterator<Item = &'static RegionDesc> + '_ {
        let reg = self.reg;
        let mut id = self.head;
        core::iter::from_fn(move || {
            (id != 0).then(|| {
                let d = reg.desc(id);
                id = d.next();
                d
            })
        })
    }

    /// The blocks of one region of this heap, by address.
    pub fn blocks<'a>(&'a self, d: &'a RegionDesc) -> impl Iterator<Item = BlockInfo> + 'a {
        let mut at = Some(self.first_block(d));
        core::iter::from_fn(move || {
            let b = at?;
            at = (b.end() < d.end()).then(|| b.next());
            Some(BlockInfo {
                addr: b.addr(),
                size: b.size(),
                free: b.is_free(),
                name: b.is_named().then_some(b),
            })
        })
    }

    /// Number of free blocks (the size of the free index).
    pub fn free_blocks(&self) -> usize {
        self.index.len()
    }

    // ----------------------------------------------------------------------
    // Allocation internals.

    fn alloc_block(&mut self, need: usize) -> Option<Taken> {
        let (c, in_tree, zeroed) = self.choose_or_map(need)?;
        let b = self.take(c, 0, need, in_tree);
        Some(Taken { block: b, zeroed })
    }

    /// The policy's block for `need` bytes, or the block of a new region.
    /// Returns the block, whether it is in the free index, and whether its
    /// memory is fresh zeroes. Moves the next-fit rover.
    fn choose_or_map(&mut self, need: usize) -> Option<(Block, bool, bool)> {
        let found = self.choose(need);
        let (c, in_tree, zeroed) = match found {
            Some(c) => (c, true, false),
            None => {
                let (c, zeroed) = self.map_region(need)?;
                (c, false, zeroed)
            }
        };
        self.rover = self.position(c);
        Some((c, in_tree, zeroed))
    }

    fn choose(&mut self, need: usize) -> Option<Block> {
        let units = (need / ALIGN) as u32;
        self.index.choose(self.reg, self.policy, units, self.rover)
    }

    fn position(&self, b: Block) -> Position {
        (self.reg.desc(b.region()).seq(), b.addr())
    }

    /// Maps a region for a block of `need` bytes and returns its one free
    /// block (not in the free index) and whether the memory is zero.
    fn map_region(&mut self, need: usize) -> Option<(Block, bool)> {
        let size = block::round_up(need, self.source.page_size())?;
        if size / ALIGN > MAX_UNITS {
            return None;
        }
        let (start, zeroed) = self.source.map(size)?;
        let Some(id) = self.reg.add_region(start, size, self.id) else {
            // SAFETY: the span was mapped just above and is not used.
            unsafe { self.source.unmap(start, size) };
            return None;
        };
        if self.index.add_region(self.reg, id).is_none() {
            self.reg.remove_region(id);
            // SAFETY: as above.
            unsafe { self.source.unmap(start, size) };
            return None;
        }
        let d = self.reg.desc(id);
        d.set_prev(self.tail);
        if self.tail == 0 {
            self.head = id;
        } else {
            self.reg.desc(self.tail).set_next(id);
        }
        self.tail = id;
        self.counters.mapped += size;
        self.counters.peak_mapped = self.counters.peak_mapped.max(self.counters.mapped);
        self.counters.regions_mapped += 1;
        let b = self.first_block(d);
        b.write(self.secret, id, 0, size, FREE);
        Some((b, zeroed))
    }

    /// Allocates `need` bytes at offset `gap` inside free block `c`: the gap
    /// (if any) stays a free block, a tail of at least MIN_BLOCK becomes a
    /// free block, a smaller tail goes to the allocation.
    fn take(&mut self, c: Block, gap: usize, need: usize, in_tree: bool) -> Block {
        let (secret, reg) = (self.secret, self.reg);
        let (s, region, c_prev) = (c.size(), c.region(), c.prev_size());
        let end = reg.desc(region).end();
        let rest = s - gap - need;
        let (used, tail) = if rest >= MIN_BLOCK {
            (need, rest)
        } else {
            (need + rest, 0)
        };
        // SAFETY: both addresses are 16-aligned and inside `c`'s region.
        let u = unsafe { Block::from_raw(c.addr() + gap) };
        // SAFETY: as above; only used when `tail > 0`.
        let t = unsafe { Block::from_raw(u.addr() + used) };
        let positional = self.index.order() == Order::Position;

        // 1. The tail's header (at least 32 bytes into `c`, so clear of
        //    `c`'s header and node, which the index still reads).
        if tail > 0 {
            t.write(secret, region, used, tail, FREE);
        }
        // 2. Take `c` out of the index, or put the tail in its place.
        if in_tree {
            if !positional {
                self.index.remove(reg, c);
            } else if gap == 0 && tail > 0 {
                self.index.replace(reg, c, t);
            } else if gap == 0 {
                self.index.remove(reg, c);
            }
        }
        // 3. The other headers.
        if gap > 0 {
            c.set_size(secret, gap);
        }
        let u_prev = if gap > 0 { gap } else { c_prev };
        u.write(secret, region, u_prev, used, 0);
        let last = if tail > 0 { t } else { u };
        if last.end() < end {
            last.next().set_prev_size(secret, last.size());
        }
        // 4. Put the free pieces (back) in the index.
        if gap > 0 {
            if in_tree && positional {
                self.index.resized(reg, c);
            } else {
                self.index.insert(reg, c);
            }
        }
        if tail > 0 && (gap > 0 || !positional || !in_tree) {
            self.index.insert(reg, t);
        }
        self.counters.in_use += used;
        self.note_peak();
        u
    }

    // ----------------------------------------------------------------------
    // Freeing internals.

    /// Marks `b` free, merges it with free neighbours, and unmaps its region
    /// if the region became one free block. `in_use` is the caller's job.
    fn release(&mut self, b: Block) {
        let (secret, reg) = (self.secret, self.reg);
        let d = reg.desc(b.region());
        let prev = b.prev().filter(|a| a.is_free());
        let next = self.next_in_region(b).filter(|c| c.is_free());
        // `b` is marked FREE in one header write (with its merged size when
        // it absorbs `next`). A header absorbed into `prev` keeps that mark,
        // which is what catches a second free of it.
        let own = b.size()
            + match (prev, next) {
                (None, Some(c)) => c.size(),
                _ => 0,
            };
        b.write(secret, b.region(), b.prev_size(), own, FREE);
        let positional = self.index.order() == Order::Position;
        let merged = match (prev, next) {
            (None, None) => {
                self.index.insert(reg, b);
                b
            }
            (Some(a), None) => {
                if !positional {
                    self.index.remove(reg, a);
                }
                a.set_size(secret, a.size() + b.size());
                self.reinsert(a, positional);
                a
            }
            (None, Some(c)) => {
                if positional {
                    self.index.replace(reg, c, b);
                } else {
                    self.index.remove(reg, c);
                    self.index.insert(reg, b);
                }
                b
            }
            (Some(a), Some(c)) => {
                self.index.remove(reg, c);
                if !positional {
                    self.index.remove(reg, a);
                }
                a.set_size(secret, a.size() + b.size() + c.size());
                self.reinsert(a, positional);
                a
            }
        };
        if merged.end() < d.end() {
            merged.next().set_prev_size(secret, merged.size());
        }
        if merged.prev_size() == 0 && merged.size() == d.size() {
            self.index.remove(reg, merged);
            self.unmap_region(merged.region());
        }
    }

    /// After a free block grew in place: fix the maxima (position order) or
    /// insert it again (size order, where it was removed first).
    fn reinsert(&mut self, a: Block, positional: bool) {
        if positional {
            self.index.resized(self.reg, a);
        } else {
            self.index.insert(self.reg, a);
        }
    }

    fn unmap_region(&mut self, id: u32) {
        let d = self.reg.desc(id);
        let (start, size, prev, next) = (d.start(), d.size(), d.prev(), d.next());
        match prev {
            0 => self.head = next,
            p => self.reg.desc(p).set_next(next),
        }
        match next {
            0 => self.tail = prev,
            n => self.reg.desc(n).set_prev(prev),
        }
        self.index.drop_region(self.reg, id);
        self.reg.remove_region(id);
        self.counters.mapped -= size;
        self.counters.regions_unmapped += 1;
        // SAFETY: the region was mapped by `map_region` from this source and
        // no block of it is in use or indexed any more.
        unsafe { self.source.unmap(start, size) };
    }

    // ----------------------------------------------------------------------
    // Realloc internals.

    /// Shrinks used block `b` to `need` bytes; the tail is freed.
    fn shrink(&mut self, b: Block, need: usize) {
        let name = b.is_named().then(|| read_name(b));
        let (s, secret) = (b.size(), self.secret);
        b.set_size(secret, need);
        // SAFETY: `b + need` is 16-aligned and inside `b`, so inside its region.
        let t = unsafe { Block::from_raw(b.addr() + need) };
        t.write(secret, b.region(), need, s - need, 0);
        if let Some(next) = self.next_in_region(t) {
            next.set_prev_size(secret, t.size());
        }
        if let Some(name) = name {
            write_name(b, &name);
        }
        self.counters.in_use -= t.size();
        self.release(t);
    }

    /// Grows used block `b` into its free next neighbour `n` to `need` bytes.
    fn absorb(&mut self, b: Block, n: Block, need: usize) {
        let name = b.is_named().then(|| read_name(b));
        let (secret, reg) = (self.secret, self.reg);
        let (old, total) = (b.size(), b.size() + n.size());
        self.index.remove(reg, n);
        let rest = total - need;
        if rest >= MIN_BLOCK {
            b.set_size(secret, need);
            // SAFETY: `b + need` is 16-aligned and inside the old `n`.
            let t = unsafe { Block::from_raw(b.addr() + need) };
            t.write(secret, b.region(), need, rest, FREE);
            if let Some(next) = self.next_in_region(t) {
                next.set_prev_size(secret, rest);
            }
            self.index.insert(reg, t);
        } else {
            b.set_size(secret, total);
            if let Some(next) = self.next_in_region(b) {
                next.set_prev_size(secret, total);
            }
        }
        if let Some(name) = name {
            write_name(b, &name);
        }
        self.counters.in_use += b.size() - old;
        self.note_peak();
    }

    // ----------------------------------------------------------------------
    // Helpers.

    fn note_peak(&mut self) {
        let c = &mut self.counters;
        if c.in_use > c.peak_in_use {
            c.peak_in_use = c.in_use;
            c.mapped_at_peak_in_use = c.mapped;
        }
    }

    fn first_block(&self, d: &RegionDesc) -> Block {
        first_block(d)
    }

    fn next_in_region(&self, b: Block) -> Option<Block> {
        (b.end() < self.reg.desc(b.region()).end()).then(|| b.next())
    }

    /// Fills the usable bytes of `b` from offset `from` with 0xAA if on.
    fn scribble_from(&self, b: Block, from: usize) {
        if self.scribble && b.usable() > from {
            // SAFETY: the usable bytes of an allocated block are ours.
            unsafe {
                core::ptr::write_bytes((b.payload() + from) as *mut u8, 0xAA, b.usable() - from)
            };
        }
    }

    /// Validates a user pointer and returns its used block; `id` is what the
    /// page map says of `p`. Reads no memory before the page map has said
    /// that `p` lies in one of our regions.
    fn block_in(&self, id: u32, p: usize) -> Result<Block, Misuse> {
        if id == crate::registry::RELEASED {
            return Err(Misuse::DoubleFree);
        }
        if id == 0 {
            return Err(Misuse::NotOurs);
        }
        let d = self.reg.desc(id);
        if d.owner() != self.id || !p.is_multiple_of(ALIGN) || p < d.start() + HEADER {
            return Err(Misuse::NotOurs);
        }
        // SAFETY: `p - HEADER` is 16-aligned and inside region `id` of this
        // heap, with the header ending at `p`, inside the region.
        let b = unsafe { Block::from_raw(p - HEADER) };
        if !b.is_sealed(self.secret) || b.region() != id {
            return Err(self.why_not_a_block(d, b.addr()));
        }
        if b.is_free() {
            return Err(Misuse::DoubleFree);
        }
        if b.end() > d.end() || b.size() < MIN_BLOCK || b.addr() - d.start() < b.prev_size() {
            return Err(Misuse::Corrupted);
        }
        // Neighbours must agree on the shared boundary; a free neighbour (one
        // that free would merge with) must also pass its own check.
        let sealed = |x: Block| !x.is_free() || x.is_sealed(self.secret);
        let prev_ok = b
            .prev()
            .is_none_or(|a| a.size() == b.prev_size() && sealed(a));
        let next_ok = self
            .next_in_region(b)
            .is_none_or(|n| n.prev_size() == b.size() && sealed(n));
        if !prev_ok || !next_ok {
            return Err(Misuse::Corrupted);
        }
        Ok(b)
    }

    /// Only on the error path: `addr` failed the header check. If it is a
    /// block start, its header was corrupted; if the walk over the region
    /// passes it, the pointer was never a block (an interior pointer). A
    /// broken header met on the way means corruption either way.
    #[cold]
    fn why_not_a_block(&self, d: &RegionDesc, addr: usize) -> Misuse {
        let mut b = self.first_block(d);
        loop {
            if b.addr() == addr {
                return Misuse::Corrupted;
            }
            if b.addr() > addr {
                return Misuse::NotOurs;
            }
            let sane = b.is_sealed(self.secret) && b.size() >= MIN_BLOCK && b.end() <= d.end();
            if !sane || b.end() == d.end() {
                return if sane {
                    Misuse::NotOurs
                } else {
                    Misuse::Corrupted
                };
            }
            b = b.next();
        }
    }

    // ----------------------------------------------------------------------
    // The heap checker.

    /// Verifies every invariant of ARCHITECTURE.md §2. Returns the first
    /// broken one and an address near it.
    pub fn check(&self) -> Result<(), (&'static str, usize)> {
        let reg = self.reg;
        let (mut free, mut in_use, mut mapped) = (0usize, 0usize, 0usize);
        let (mut prev_id, mut prev_seq) = (0u32, 0u64);
        let mut id = self.head;
        while id != 0 {
            let d = reg.desc(id);
            if d.owner() != self.id || d.prev() != prev_id {
                return Err(("region list is broken", d.start()));
            }
            if d.seq() <= prev_seq {
                return Err(("regions are not in creation order", d.start()));
            }
            if !d.size().is_multiple_of(self.source.page_size()) {
                return Err(("region is not a whole number of pages", d.start()));
            }
            let mut page = d.start();
            while page < d.end() {
                if reg.lookup(page) != id {
                    return Err(("page map does not point at the region", page));
                }
                page += 4096;
            }
            let (f, u) = self.check_region(d, id)?;
            free += f;
            in_use += u;
            mapped += d.size();
            (prev_id, prev_seq) = (id, d.seq());
            id = d.next();
        }
        if prev_id != self.tail {
            return Err(("region list tail is wrong", 0));
        }
        if in_use != self.counters.in_use || mapped != self.counters.mapped {
            return Err(("byte counters disagree with the heap", 0));
        }
        let secret = self.secret;
        let mut visit = |b: Block| {
            let ours =
                reg.lookup(b.addr()) == b.region() && reg.desc(b.region()).owner() == self.id;
            if !ours || !b.is_sealed(secret) || !b.is_free() {
                return Err("free tree holds a block that is not a free block of this heap");
            }
            Ok(())
        };
        let mut regions = region_ids(reg, self.head);
        let indexed = self
            .index
            .check(reg, &mut regions, &mut visit)
            .map_err(|e| (e, 0))?;
        if indexed != free {
            return Err(("free tree and free blocks differ in number", 0));
        }
        Ok(())
    }

    /// Checks one region's blocks; returns (free blocks, used bytes).
    fn check_region(
        &self,
        d: &RegionDesc,
        id: u32,
    ) -> Result<(usize, usize), (&'static str, usize)> {
        let (mut free, mut used) = (0, 0);
        let mut b = self.first_block(d);
        let mut prev: Option<Block> = None;
        loop {
            let at = b.addr();
            if !b.is_sealed(self.secret) {
                return Err(("block header check fails", at));
            }
            if b.region() != id {
                return Err(("block header names the wrong region", at));
            }
            if b.prev_size() != prev.map_or(0, |p| p.size()) {
                return Err(("block's previous size is wrong", at));
            }
            if b.size() < MIN_BLOCK || b.end() > d.end() {
                return Err(("block size is out of range", at));
            }
            if b.is_free() {
                if prev.is_some_and(|p| p.is_free()) {
                    return Err(("two free blocks are adjacent", at));
                }
                free += 1;
            } else {
                used += b.size();
            }
            if b.end() == d.end() {
                break;
            }
            prev = Some(b);
            b = b.next();
        }
        let first = self.first_block(d);
        if first.is_free() && first.size() == d.size() {
            return Err(("region is one free block but still mapped", d.start()));
        }
        Ok((free, used))
    }
}

fn first_block(d: &RegionDesc) -> Block {
    // SAFETY: a live region of a heap starts with a block header; callers
    // hold that heap (and its lock).
    unsafe { Block::from_raw(d.start()) }
}

/// The ids of the regions of the list starting at `head`.
fn region_ids(reg: &'static Registry, head: u32) -> impl Iterator<Item = u32> {
    let mut id = head;
    core::iter::from_fn(move || {
        (id != 0).then(|| {
            let cur = id;
            id = reg.desc(cur).next();
            cur
        })
    })
}

/// The blocks of a region, by address.
fn region_blocks(d: &'static RegionDesc) -> impl Iterator<Item = Block> {
    let mut at = Some(first_block(d));
    core::iter::from_fn(move || {
        let b = at?;
        at = (b.end() < d.end()).then(|| b.next());
        Some(b)
    })
}

fn read_name(b: Block) -> [u8; NAME_AREA] {
    let mut area = [0u8; NAME_AREA];
    // SAFETY: a named block ends with NAME_AREA bytes of name.
    unsafe {
        core::ptr::copy_nonoverlapping(b.name_addr() as *const u8, area.as_mut_ptr(), NAME_AREA)
    };
    area
}

fn write_name(b: Block, area: &[u8; NAME_AREA]) {
    // SAFETY: a named block ends with NAME_AREA bytes reserved for the name.
    unsafe { core::ptr::copy_nonoverlapping(area.as_ptr(), b.name_addr() as *mut u8, NAME_AREA) };
}
