//! A heap: regions, blocks, split and merge, and the placement policies.
//!
//! Every rule here is written out in ARCHITECTURE.md §3; the reference model
//! in `tests/model.rs` implements the same rules with a plain list.
//!
//! The heap does no locking: the caller wraps it (see `global`). Splitting is
//! done in one place (`take`), merging in one place (`release`); the policy
//! only decides which free block `choose` returns. Block headers are always
//! written before the free index hears of a change, because the index reads
//! the headers of the free blocks it keeps.

use crate::block::{
    self, Block, Key, ALIGN, CANARY, FREE, HEADER, MAX_SLACK, MAX_UNITS, MIN_BLOCK, NAMED,
    NAME_AREA, POISON, POISONED,
};
use crate::index::{Choice, FreeIndex, Rover};
use crate::os::PageSource;
pub use crate::policy::Policy;
use crate::registry::{RegionDesc, Registry};

/// A pointer's region as the page map gave it: an id that names (or
/// named, until the caller holds the owner's lock) a region, and that
/// region's descriptor, so that the heap does not look it up again.
#[derive(Clone, Copy)]
pub struct Spot {
    id: u32,
    d: &'static RegionDesc,
}

impl Spot {
    /// What the page map's answer `id` for a pointer says: a region, or
    /// a misuse (`RELEASED`: a region that was unmapped, so the block was
    /// freed; 0: no region of ours).
    #[inline(always)]
    pub fn of(reg: &'static Registry, id: u32) -> Result<Spot, Misuse> {
        match id {
            crate::registry::RELEASED => Err(Misuse::DoubleFree),
            0 => Err(Misuse::NotOurs),
            _ => Ok(Spot {
                id,
                d: reg.desc(id),
            }),
        }
    }

    /// The region id.
    #[inline(always)]
    pub fn id(self) -> u32 {
        self.id
    }

    /// The region's descriptor.
    #[inline(always)]
    pub fn desc(self) -> &'static RegionDesc {
        self.d
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

/// The entry point that found a misuse: its report names it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Caller {
    /// `free` (and the frees of other threads folded later).
    Free,
    /// `realloc`, `reallocarray`.
    Realloc,
    /// `malloc_usable_size`.
    UsableSize,
}

impl Misuse {
    /// The text of the one-line report of `free`.
    pub const fn what(self) -> &'static str {
        self.what_in(Caller::Free)
    }

    /// The text of the one-line report, naming the call that found it.
    pub const fn what_in(self, caller: Caller) -> &'static str {
        match (self, caller) {
            (Misuse::Corrupted, _) => "corrupted block header",
            (Misuse::DoubleFree, Caller::Free) => "double free",
            (Misuse::DoubleFree, Caller::Realloc) => "realloc of a freed pointer",
            (Misuse::DoubleFree, Caller::UsableSize) => "malloc_usable_size of a freed pointer",
            (Misuse::NotOurs, Caller::Free) => "free of a pointer not from malloc",
            (Misuse::NotOurs, Caller::Realloc) => "realloc of a pointer not from malloc",
            (Misuse::NotOurs, Caller::UsableSize) => {
                "malloc_usable_size of a pointer not from malloc"
            }
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
    /// The block's name (empty if it has none). A free block keeps the name
    /// it had; as its memory is the program's to misuse, what is shown is
    /// whatever the name area holds, cut at the first NUL.
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
    secret: Key,
    policy: Policy,
    index: FreeIndex,
    head: u32,
    tail: u32,
    rover: Rover,
    scribble: bool,
    /// Check mode (`ALLOCATOR_CHECK`): canaries after requests, poisoned
    /// free blocks.
    check: bool,
    /// Whether a block of this heap may carry a check-mode mark (canary
    /// slack, `POISONED`): set when check mode is turned on, never cleared.
    /// The marks are covered by the header check, so while this is false
    /// no block has one and free and malloc skip every look for them.
    marks: bool,
    /// `!scribble && !marks`, kept by `set_scribble` and `set_check` (one
    /// load on the hot path: deriving it there cost pair 697 -> 702
    /// instructions without the profile): see `plain`.
    plain: bool,
    counters: Counters,
    /// Blocks in all regions (used and free): the bound on free blocks the
    /// size index reserves room for.
    blocks: usize,
}

// SAFETY: a heap owns its regions and its index's mappings outright; moving
// the heap to another thread moves that ownership.
unsafe impl<S: PageSource + Send> Send for Heap<S> {}

/// The block a choice landed on, before it is split.
#[derive(Clone, Copy)]
struct Chosen {
    block: Block,
    /// The region holding it.
    d: &'static RegionDesc,
    /// The region's end (read once: the descriptor's fields are atomics).
    end: usize,
    /// Its size in bytes.
    size: usize,
    /// Whether it is in the free index (a new region's block is not).
    indexed: bool,
    /// Whether its memory is known to be zero.
    zeroed: bool,
}

impl<S: PageSource> Heap<S> {
    /// A heap with no regions. `id` (non-zero) names it in the registry's
    /// descriptors; heaps sharing a registry need distinct ids.
    pub fn new(source: S, reg: &'static Registry, id: u32, policy: Policy) -> Heap<S> {
        assert!(id != 0, "heap id 0 is reserved");
        let secret = Key::new(reg.secret());
        Heap {
            source,
            reg,
            id,
            secret,
            policy,
            index: FreeIndex::new(policy.order(), secret),
            head: 0,
            tail: 0,
            rover: Rover::Start,
            scribble: false,
            check: false,
            marks: false,
            plain: true,
            counters: Counters::default(),
            blocks: 0,
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
    /// builds the other order's index once (O(n log n)). If the memory for
    /// it cannot be mapped, the policy stays as it was.
    pub fn set_policy(&mut self, policy: Policy) {
        let order = policy.order();
        if order != self.index.order() {
            match self.rebuilt_index(policy) {
                Some(index) => self.index = index,
                None => return,
            }
        }
        self.policy = policy;
    }

    fn rebuilt_index(&self, policy: Policy) -> Option<FreeIndex> {
        let reg = self.reg;
        let bytes = self.regions().map(|d| d.size()).sum();
        let mut index = FreeIndex::for_rebuild(policy.order(), self.secret, bytes)?;
        for (n, d) in self.regions().enumerate() {
            index.add_region(reg, d, &mut region_ids(reg, self.head).take(n))?;
        }
        for d in self.regions() {
            for b in region_blocks(d, self.secret).filter(|b| b.is_free()) {
                index.insert_fallible(d, b.addr(), b.units())?;
            }
        }
        Some(index)
    }

    /// Whether new allocations are filled with 0xAA.
    pub fn set_scribble(&mut self, on: bool) {
        self.scribble = on;
        self.plain = !self.scribble && !self.marks;
    }

    /// Check mode: every request gets canary bytes after its end (checked
    /// when it is freed or reallocated) and every freed block is filled
    /// with a pattern (checked when it is used again, merged or checked).
    pub fn set_check(&mut self, on: bool) {
        self.check = on;
        self.marks |= on;
        self.plain = !self.scribble && !self.marks;
    }

    /// No scribble, no check mode, no marks (check mode implies marks):
    /// malloc and free then take a path compiled with all three known to
    /// be off (`X` false below).
    #[inline(always)]
    fn plain(&self) -> bool {
        debug_assert_eq!(self.plain, !self.scribble && !self.marks);
        self.plain
    }

    // The options as a path compiled for `X` sees them: `X` true reads
    // them, `X` false is the path of a plain heap, where all are off.

    #[inline(always)]
    fn marks<const X: bool>(&self) -> bool {
        X && self.marks
    }

    #[inline(always)]
    fn checking<const X: bool>(&self) -> bool {
        X && self.check
    }

    #[inline(always)]
    fn scribbling<const X: bool>(&self) -> bool {
        X && self.scribble
    }

    // ----------------------------------------------------------------------
    // The public operations.

    /// Allocates `size` bytes; `None` when out of memory.
    #[inline]
    pub fn malloc(&mut self, size: usize) -> Option<usize> {
        let need = block::need(size, false)?;
        let c = self.choose_or_map(need)?;
        Some(if self.plain() {
            self.allocate::<false>(c, 0, need, size)
        } else {
            self.allocate::<true>(c, 0, need, size)
        })
    }

    /// Allocates `size` bytes and records `name` (first 31 bytes).
    pub fn malloc_named(&mut self, size: usize, name: &[u8]) -> Option<usize> {
        let need = block::need(size, true)?;
        let c = self.choose_or_map(need)?;
        let b = self.take::<true>(c, 0, need, NAMED);
        let mut area = [0u8; NAME_AREA];
        let n = name.len().min(NAME_AREA - 1);
        area[..n].copy_from_slice(&name[..n]);
        write_name(b, &area);
        Some(self.hand_out::<true>(b, size, 0))
    }

    /// Allocates `n * size` zeroed bytes; `None` on overflow or out of memory.
    pub fn calloc(&mut self, n: usize, size: usize) -> Option<usize> {
        let bytes = n.checked_mul(size)?;
        let need = block::need(bytes, false)?;
        let c = self.choose_or_map(need)?;
        let b = self.take::<true>(c, 0, need, 0);
        if !c.zeroed {
            // SAFETY: the usable bytes of a block we just allocated are ours.
            unsafe { core::ptr::write_bytes(b.payload() as *mut u8, 0, b.usable()) };
        }
        self.guard::<true>(b, bytes);
        Some(b.payload())
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
        let c = self.choose_or_map(padded)?;
        let at = c.block.addr();
        let q = block::round_up(at + HEADER, align)?;
        let mut gap = q - HEADER - at;
        if gap > 0 && gap < MIN_BLOCK {
            gap += align;
        }
        Some(self.allocate::<true>(c, gap, need, size))
    }

    /// Frees the block at `p`.
    pub fn free(&mut self, p: usize) -> Result<(), Misuse> {
        self.free_in(Spot::of(self.reg, self.reg.lookup(p))?, p)
    }

    /// `free` when the caller already looked `p` up in the page map.
    #[inline]
    pub fn free_in(&mut self, spot: Spot, p: usize) -> Result<(), Misuse> {
        let (b, d, around) = self.block_in(spot, p)?;
        self.counters.in_use -= b.size();
        if self.plain() {
            self.release_between::<false>(b, d, around);
        } else {
            self.verify_guard::<true>(b);
            self.release_between::<true>(b, d, around);
        }
        Ok(())
    }

    /// Resizes the block at `p` (ARCHITECTURE.md §3, "Realloc"). `Ok(None)`
    /// means out of memory, with the block untouched.
    pub fn realloc(&mut self, p: usize, size: usize) -> Result<Option<usize>, Misuse> {
        self.realloc_in(Spot::of(self.reg, self.reg.lookup(p))?, p, size)
    }

    /// `realloc` when the caller already looked `p` up (as `free_in`).
    #[inline(always)]
    pub fn realloc_in(
        &mut self,
        spot: Spot,
        p: usize,
        size: usize,
    ) -> Result<Option<usize>, Misuse> {
        let (b, d, _) = self.block_in(spot, p)?;
        self.verify_guard::<true>(b);
        let Some(need) = block::need(size, b.is_named()) else {
            return Ok(None);
        };
        let (s, old_usable) = (b.size(), b.usable());
        if need <= s {
            if s - need >= MIN_BLOCK {
                if self.index.reserve(self.blocks + 1).is_none() {
                    return Ok(None);
                }
                self.shrink(b, d, need);
            }
            // The bytes past the new size held the caller's data: no canary
            // over them (a realloc that keeps the block in place clears it).
            self.guard::<true>(b, b.usable());
            return Ok(Some(p));
        }
        if let Some(n) = next_in(d, b).filter(|n| n.is_free()) {
            if s + n.size() >= need {
                self.absorb(b, d, n, need);
                return Ok(Some(self.hand_out::<true>(b, size, old_usable)));
            }
        }
        let Some(c) = self.choose_or_map(need) else {
            return Ok(None);
        };
        let flags = b.flags() & NAMED;
        let nb = self.take::<true>(c, 0, need, flags);
        // SAFETY: both payloads are ours, distinct blocks, and at least
        // `old_usable` bytes long (need > s so the new block is larger).
        unsafe {
            core::ptr::copy_nonoverlapping(p as *const u8, nb.payload() as *mut u8, old_usable)
        };
        if flags != 0 {
            write_name(nb, &read_name(b));
        }
        self.hand_out::<true>(nb, size, old_usable);
        self.counters.in_use -= b.size();
        self.release(b, d);
        Ok(Some(nb.payload()))
    }

    /// Usable bytes of the block at `p`.
    pub fn usable_size(&mut self, p: usize) -> Result<usize, Misuse> {
        self.usable_size_in(Spot::of(self.reg, self.reg.lookup(p))?, p)
    }

    /// `usable_size` when the caller already looked `p` up (as `free_in`).
    /// All of them may be written: a check-mode canary is dropped.
    pub fn usable_size_in(&mut self, spot: Spot, p: usize) -> Result<usize, Misuse> {
        let (b, _, _) = self.block_in(spot, p)?;
        self.verify_guard::<true>(b);
        let slack = b.slack();
        if slack != 0 {
            b.set_flags(self.secret, Block::with_slack(b.flags(), 0));
            // The canary bytes become the caller's: as a new allocation's,
            // scribbled if scribbling is on, else zero (what a calloc'd
            // block holds there without check mode).
            let from = b.payload() + b.usable() - slack;
            let fill = if self.scribble { 0xAA } else { 0 };
            // SAFETY: the usable bytes of an allocated block are ours.
            unsafe { core::ptr::write_bytes(from as *mut u8, fill, slack) };
        }
        Ok(b.usable())
    }

    // ----------------------------------------------------------------------
    // Looking at the heap.

    /// How many stale cell maxima (left by a free block shrinking in
    /// place) the current index's searches have settled: the tests'
    /// witness that the path runs.
    pub fn index_settled(&self) -> usize {
        self.index.settled()
    }

    /// The heap's regions in list order.
    pub fn regions(&self) -> impl Iterator<Item = &'static RegionDesc> + '_ {
        let reg = self.reg;
        region_ids(reg, self.head).map(move |id| reg.desc(id))
    }

    /// The blocks of one region of this heap, by address (each header is
    /// checked first: a broken one ends the process, see `region_blocks`).
    pub fn blocks<'a>(&'a self, d: &'a RegionDesc) -> impl Iterator<Item = BlockInfo> + 'a {
        region_blocks(d, self.secret).map(|b| BlockInfo {
            addr: b.addr(),
            size: b.size(),
            free: b.is_free(),
            name: b.is_named().then_some(b),
        })
    }

    /// Whether `p`, which the page map places in `spot`, is a payload
    /// address inside a live region of this heap.
    pub fn holds(&self, spot: Spot, p: usize) -> bool {
        let d = spot.d;
        d.owner() == self.id && p.is_multiple_of(ALIGN) && p >= d.start() + HEADER && p < d.end()
    }

    /// Number of free blocks (the size of the free index).
    pub fn free_blocks(&self) -> usize {
        self.index.len()
    }

    // ----------------------------------------------------------------------
    // Allocation internals.

    /// The policy's block for `need` bytes, or the block of a new region.
    /// Moves the next-fit rover to it.
    #[inline]
    fn choose_or_map(&mut self, need: usize) -> Option<Chosen> {
        // A new region's block, a gap and a tail.
        self.index.reserve(self.blocks + 3)?;
        let units = (need / ALIGN) as u32;
        // Only next fit reads the rover (the others need no descriptor).
        let rover = if self.policy != Policy::NextFit {
            None
        } else if let Rover::At { region, addr } = self.rover {
            Some((self.reg.desc(region), addr))
        } else {
            None
        };
        let chosen = match self.index.choose(self.policy, units, rover) {
            Some(c) => self.indexed_block(c, units),
            None => self.map_region(need)?,
        };
        self.rover = Rover::At {
            region: chosen.block.region(),
            addr: chosen.block.addr(),
        };
        Some(chosen)
    }

    /// The free block the index chose, after checking its header (unless
    /// the index's search just did, with the same check): it must pass its
    /// check, be free and fit, or the process ends.
    #[inline]
    fn indexed_block(&self, c: Choice, units: u32) -> Chosen {
        // SAFETY: the index holds only free blocks of this heap's live regions.
        let block = unsafe { Block::from_raw(c.addr) };
        let have = match c.units {
            0 => block.indexed_units(self.secret),
            checked => checked,
        };
        let d = match c.region {
            Some(d) => d,
            None => self.reg.desc(block.region()),
        };
        let end = d.end();
        if have < units || block.end() > end {
            block::corrupted_free_block(c.addr);
        }
        Chosen {
            block,
            d,
            end,
            size: have as usize * ALIGN,
            indexed: true,
            zeroed: false,
        }
    }

    /// Maps a region for a block of `need` bytes and returns its one free
    /// block (not in the free index).
    fn map_region(&mut self, need: usize) -> Option<Chosen> {
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
        let d = self.reg.desc(id);
        d.set_huge(size >= self.source.huge_from());
        let mut regions = region_ids(self.reg, self.head);
        if self.index.add_region(self.reg, d, &mut regions).is_none() {
            self.reg.remove_region(id);
            // SAFETY: as above.
            unsafe { self.source.unmap(start, size) };
            return None;
        }
        d.set_prev(self.tail);
        match self.tail {
            0 => self.head = id,
            t => self.reg.desc(t).set_next(id),
        }
        self.tail = id;
        let c = &mut self.counters;
        c.mapped += size;
        c.peak_mapped = c.peak_mapped.max(c.mapped);
        c.regions_mapped += 1;
        self.blocks += 1;
        let block = first_block(d);
        block.write(self.secret, id, 0, size, FREE);
        Some(Chosen {
            block,
            d,
            end: start + size,
            size,
            indexed: false,
            zeroed,
        })
    }

    /// Allocates `need` bytes at offset `gap` inside the chosen block: the
    /// gap (if any) stays a free block, a tail of at least MIN_BLOCK becomes
    /// a free block, a smaller tail goes to the allocation. The allocation's
    /// flags are `flags` (0 or NAMED); the free pieces have no name.
    #[inline]
    fn take<const X: bool>(&mut self, c: Chosen, gap: usize, need: usize, flags: u32) -> Block {
        let (secret, s, at) = (self.secret, c.size, c.block);
        let (region, at_prev, d) = (at.region(), at.prev_size(), c.d);
        if c.indexed && d.huge() {
            self.no_longer_huge(d);
        }
        let keep = self.reused_poison::<X>(at);
        let rest = s - gap - need;
        let (used, tail) = if rest >= MIN_BLOCK {
            (need, rest)
        } else {
            (need + rest, 0)
        };
        // SAFETY: both addresses are 16-aligned and inside the chosen block.
        let u = unsafe { Block::from_raw(at.addr() + gap) };
        // SAFETY: as above; only used when `tail > 0`.
        let t = unsafe { Block::from_raw(u.addr() + used) };
        if gap > 0 {
            at.write(secret, region, at_prev, gap, FREE | keep);
        }
        u.write(
            secret,
            region,
            if gap > 0 { gap } else { at_prev },
            used,
            flags,
        );
        if tail > 0 {
            t.write(secret, region, used, tail, FREE | keep);
        }
        if gap + tail > 0 {
            let last = if tail > 0 { t } else { u };
            if last.end() < c.end {
                last.next().set_prev_size(last.size());
            }
        }
        let units = |bytes: usize| (bytes / ALIGN) as u32;
        let ix = &mut self.index;
        if c.indexed {
            match (gap > 0, tail > 0) {
                (false, false) => ix.remove(d, at.addr(), units(s)),
                (false, true) => ix.replace(d, at.addr(), units(s), t.addr(), units(tail)),
                (true, _) => ix.resize(d, at.addr(), units(s), units(gap)),
            }
        } else if gap > 0 {
            ix.insert(d, at.addr(), units(gap));
        }
        if tail > 0 && (gap > 0 || !c.indexed) {
            ix.insert(d, t.addr(), units(tail));
        }
        self.blocks += (gap > 0) as usize + (tail > 0) as usize;
        self.counters.in_use += used;
        self.note_peak();
        u
    }

    // ----------------------------------------------------------------------
    // Freeing internals.

    /// Marks used block `b` of region `d` free, merges it with free
    /// neighbours, and unmaps the region if it became one free block.
    /// `in_use` is the caller's job. The merged block keeps the name of its
    /// lowest block (SPEC §5).
    fn release(&mut self, b: Block, d: &RegionDesc) {
        let around = Around {
            start: d.start(),
            end: d.end(),
            prev: b.prev().filter(|a| a.is_free()),
            next: next_in(d, b).filter(|c| c.is_free()),
        };
        self.release_between::<true>(b, d, around);
    }

    /// `release` when the caller knows `b`'s free neighbours and its
    /// region's bounds (`block_in` returns them).
    #[inline]
    fn release_between<const X: bool>(&mut self, b: Block, d: &RegionDesc, around: Around) {
        let secret = self.secret;
        let Around {
            start: d_start,
            end: d_end,
            prev,
            next,
        } = around;
        let start = prev.map_or(b.addr(), |a| a.addr());
        let end = next.map_or(b.end(), |c| c.end());
        // A write into a free neighbour is caught before the merge hides it.
        if self.marks::<X>() {
            prev.into_iter()
                .chain(next)
                .for_each(|f| self.verify_poison::<X>(f));
        }
        let parts = self.checking::<X>().then(|| Parts::of(prev, b, next));
        self.blocks -= prev.is_some() as usize + next.is_some() as usize;
        if start == d_start && end == d_end {
            for f in prev.into_iter().chain(next) {
                self.index.remove(d, f.addr(), f.units());
            }
            self.unmap_freed(b, d);
            return;
        }
        let low = prev.unwrap_or(b);
        let name = (low.is_named() && low.end() != end).then(|| read_name(low));
        // `b` is marked FREE in one header write (with its merged size when
        // it absorbs `next`). A header absorbed into `prev` keeps that mark,
        // which is what catches a second free of it.
        let own = match (prev, next) {
            (None, Some(c)) => b.size() + c.size(),
            _ => b.size(),
        };
        b.write(
            secret,
            b.region(),
            b.prev_size(),
            own,
            FREE | (b.flags() & NAMED),
        );
        let units = |bytes: usize| (bytes / ALIGN) as u32;
        let merged = units(end - start);
        match (prev, next) {
            (None, None) => self.index.insert(d, b.addr(), units(own)),
            (None, Some(c)) => self.index.replace(d, c.addr(), c.units(), b.addr(), merged),
            (Some(a), c) => {
                let old = a.units();
                a.set_size(secret, end - start);
                // The merged block is indexed first: `next` leaving then
                // finds an ancestor at least as large (the merged block
                // is larger than it) and walks no further up the tree.
                self.index.resize(d, a.addr(), old, merged);
                if let Some(c) = c {
                    self.index.remove(d, c.addr(), c.units());
                }
            }
        }
        if end < d_end {
            // SAFETY: `end` is a block boundary inside region `d`.
            unsafe { Block::from_raw(end) }.set_prev_size(end - start);
        }
        // SAFETY: `low` now spans `start..end`, a block of this region.
        let merged = unsafe { Block::from_raw(start) };
        self.poison_merged::<X>(merged, parts.as_ref());
        if let Some(name) = name {
            write_name(merged, &name);
        }
    }

    /// Check mode: fills the parts of the merged free block `m` that do not
    /// hold the poison pattern yet (the freed block, absorbed headers,
    /// unpoisoned neighbours, old name areas) and marks it poisoned;
    /// outside check mode, makes sure it is not marked.
    fn poison_merged<const X: bool>(&self, m: Block, parts: Option<&Parts>) {
        if !self.marks::<X>() {
            return;
        }
        let marked = m.flags() & POISONED != 0;
        let Some(parts) = parts else {
            if marked {
                m.set_flags(self.secret, m.flags() & !POISONED);
            }
            return;
        };
        let (from, to) = m.poison_range();
        for &(a, b) in parts.unpoisoned(m.addr()).iter() {
            let (a, b) = (a.max(from), b.min(to));
            if a < b {
                // SAFETY: inside the free block `m`, which is the heap's.
                unsafe { core::ptr::write_bytes(a as *mut u8, POISON, b - a) };
            }
        }
        if !marked {
            m.set_flags(self.secret, m.flags() | POISONED);
        }
    }

    /// Checks the canary bytes a used block's header announces (check
    /// mode; none while the heap has no marks).
    #[inline]
    fn verify_guard<const X: bool>(&self, b: Block) {
        if !self.marks::<X>() {
            return;
        }
        let slack = b.slack();
        if slack != 0 {
            let end = b.payload() + b.usable();
            if let Some(at) = block::first_not(end - slack, end, CANARY) {
                block::buffer_overflow(at);
            }
        }
    }

    /// Checks that a poisoned free block still holds only the pattern.
    #[inline]
    fn verify_poison<const X: bool>(&self, f: Block) {
        if self.marks::<X>() && f.flags() & POISONED != 0 {
            verify_pattern(f);
        }
    }

    /// Free block `f` is about to be cut (a split, or a realloc growing
    /// into it): its pattern is verified, and the result is the flag its
    /// free pieces keep: `POISONED` (their bytes are the verified pattern)
    /// unless a name area lies in it.
    #[inline]
    fn reused_poison<const X: bool>(&self, f: Block) -> u32 {
        self.verify_poison::<X>(f);
        if self.marks::<X>() && f.flags() & (POISONED | NAMED) == POISONED {
            POISONED
        } else {
            0
        }
    }

    /// Unmaps region `d`, which `b`'s free left as one free block. The span
    /// may come back (span cache) as a region with the same id whose blocks
    /// do not cover `b`'s header: marked free, it makes a second free of
    /// `b` a double free there too, as every other header left in the span
    /// already is (free blocks, and headers merged away, keep their mark).
    /// Out of line: the free path stays as short without it.
    #[cold]
    #[inline(never)]
    fn unmap_freed(&mut self, b: Block, d: &RegionDesc) {
        b.set_flags(self.secret, FREE);
        self.unmap_region(b.region(), d);
    }

    fn unmap_region(&mut self, id: u32, d: &RegionDesc) {
        let (start, size, prev, next) = (d.start(), d.size(), d.prev(), d.next());
        if matches!(self.rover, Rover::At { region, .. } if region == id) {
            self.rover = match next {
                0 => Rover::End,
                n => Rover::At {
                    region: n,
                    addr: self.reg.desc(n).start(),
                },
            };
        }
        match prev {
            0 => self.head = next,
            p => self.reg.desc(p).set_next(next),
        }
        match next {
            0 => self.tail = prev,
            n => self.reg.desc(n).set_prev(prev),
        }
        self.index
            .drop_region(self.reg, d, &mut region_ids(self.reg, self.head));
        self.reg.remove_region(id);
        self.counters.mapped -= size;
        self.counters.regions_unmapped += 1;
        self.blocks -= 1;
        // SAFETY: the region was mapped by `map_region` from this source and
        // no block of it is in use or indexed any more.
        unsafe { self.source.unmap(start, size) };
    }

    // ----------------------------------------------------------------------
    // Realloc internals.

    /// Shrinks used block `b` to `need` bytes; the tail is freed.
    fn shrink(&mut self, b: Block, d: &RegionDesc, need: usize) {
        if d.huge() {
            // Before the tail's header is written (it may lie in a huge
            // page nobody has touched yet).
            self.no_longer_huge(d);
        }
        let name = b.is_named().then(|| read_name(b));
        let (s, secret) = (b.size(), self.secret);
        b.set_size(secret, need);
        // SAFETY: `b + need` is 16-aligned and inside `b`, so inside its region.
        let t = unsafe { Block::from_raw(b.addr() + need) };
        t.write(secret, b.region(), need, s - need, 0);
        if let Some(next) = next_in(d, t) {
            next.set_prev_size(t.size());
        }
        if let Some(name) = name {
            write_name(b, &name);
        }
        self.blocks += 1;
        self.counters.in_use -= t.size();
        self.release(t, d);
    }

    /// Grows used block `b` into its free next neighbour `n` to `need` bytes.
    fn absorb(&mut self, b: Block, d: &RegionDesc, n: Block, need: usize) {
        let keep = self.reused_poison::<true>(n);
        let name = b.is_named().then(|| read_name(b));
        let secret = self.secret;
        let (old, total, n_units) = (b.size(), b.size() + n.size(), n.units());
        let rest = total - need;
        if rest >= MIN_BLOCK {
            b.set_size(secret, need);
            // SAFETY: `b + need` is 16-aligned and inside the old `n`.
            let t = unsafe { Block::from_raw(b.addr() + need) };
            t.write(secret, b.region(), need, rest, FREE | keep);
            if let Some(next) = next_in(d, t) {
                next.set_prev_size(rest);
            }
            let rest_units = (rest / ALIGN) as u32;
            self.index
                .replace_in_order(d, n.addr(), n_units, t.addr(), rest_units);
        } else {
            b.set_size(secret, total);
            if let Some(next) = next_in(d, b) {
                next.set_prev_size(total);
            }
            self.index.remove(d, n.addr(), n_units);
            self.blocks -= 1;
        }
        if let Some(name) = name {
            write_name(b, &name);
        }
        self.counters.in_use += b.size() - old;
        self.note_peak();
    }

    // ----------------------------------------------------------------------
    // Helpers.

    /// Region `d`, which may have huge pages, is about to hold a second
    /// block: the pages not touched yet are better small ones (see
    /// `PageSource::prefer_small_pages`).
    #[cold]
    fn no_longer_huge(&mut self, d: &RegionDesc) {
        d.set_huge(false);
        self.source.prefer_small_pages(d.start(), d.size());
    }

    #[inline]
    fn note_peak(&mut self) {
        let c = &mut self.counters;
        if c.in_use > c.peak_in_use {
            c.peak_in_use = c.in_use;
            c.mapped_at_peak_in_use = c.mapped;
        }
    }

    /// `take`, then `hand_out` of a fresh allocation of `size` bytes:
    /// malloc's and memalign's whole allocation in the chosen block.
    #[inline(always)]
    fn allocate<const X: bool>(
        &mut self,
        c: Chosen,
        gap: usize,
        need: usize,
        size: usize,
    ) -> usize {
        let b = self.take::<X>(c, gap, need, 0);
        self.hand_out::<X>(b, size, 0)
    }

    /// Finishes an allocation of `n` bytes in `b` whose first `from` usable
    /// bytes are the caller's (realloc): scribble, canary. Returns the
    /// payload.
    #[inline]
    fn hand_out<const X: bool>(&mut self, b: Block, n: usize, from: usize) -> usize {
        self.scribble_from::<X>(b, from);
        self.guard::<X>(b, n);
        b.payload()
    }

    /// In check mode, fills the usable bytes past the request's `n` (at
    /// most `MAX_SLACK` of them) with canary bytes and records how many in
    /// the header; outside check mode, makes sure none is recorded.
    #[inline]
    fn guard<const X: bool>(&mut self, b: Block, n: usize) {
        if !self.marks::<X>() || (!self.checking::<X>() && b.slack() == 0) {
            return;
        }
        let usable = b.usable();
        let slack = if self.checking::<X>() {
            (usable - n.min(usable)).min(MAX_SLACK)
        } else {
            0
        };
        if slack != b.slack() {
            b.set_flags(self.secret, Block::with_slack(b.flags(), slack));
        }
        // SAFETY: the last `slack` usable bytes of a block we hand out are
        // ours until the caller gets them.
        unsafe { core::ptr::write_bytes((b.payload() + usable - slack) as *mut u8, CANARY, slack) };
    }

    /// Fills the usable bytes of `b` from offset `from` with 0xAA if on.
    #[inline]
    fn scribble_from<const X: bool>(&self, b: Block, from: usize) {
        if self.scribbling::<X>() && b.usable() > from {
            // SAFETY: the usable bytes of an allocated block are ours.
            unsafe {
                core::ptr::write_bytes((b.payload() + from) as *mut u8, 0xAA, b.usable() - from)
            };
        }
    }

    /// Validates a user pointer and returns its used block, the block's
    /// region and its free neighbours (before, after); `spot` is what the
    /// page map says of `p`. Reads no memory before the page map has said
    /// that `p` lies in one of our regions.
    #[inline(always)]
    fn block_in(
        &self,
        spot: Spot,
        p: usize,
    ) -> Result<(Block, &'static RegionDesc, Around), Misuse> {
        let (id, d) = (spot.id, spot.d);
        // Read once: the descriptor's fields are atomics, which the
        // compiler loads again at every use (`d.end()` too reads `start`).
        let start = d.start();
        let end = start + d.size();
        if d.owner() != self.id || !p.is_multiple_of(ALIGN) || p < start + HEADER || p >= end {
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
        if b.end() > end || b.size() < MIN_BLOCK || b.addr() - start < b.prev_size() {
            return Err(Misuse::Corrupted);
        }
        // Neighbours must agree on the shared boundary; a free neighbour (one
        // that free would merge with) must also pass its own check.
        let prev = b.prev();
        let next = (b.end() < end).then(|| b.next());
        if prev.is_some_and(|a| a.size() != b.prev_size())
            || next.is_some_and(|n| n.prev_size() != b.size())
        {
            return Err(Misuse::Corrupted);
        }
        let prev = prev.filter(|a| a.is_free());
        let next = next.filter(|n| n.is_free());
        let sealed = |x: Option<Block>| x.is_none_or(|x| x.is_sealed(self.secret));
        if !sealed(prev) || !sealed(next) {
            return Err(Misuse::Corrupted);
        }
        Ok((
            b,
            d,
            Around {
                start,
                end,
                prev,
                next,
            },
        ))
    }

    /// Only on the error path: `addr` failed the header check. If it is a
    /// block start, its header was corrupted; if the walk over the region
    /// passes it, the pointer was never a block (an interior pointer). A
    /// broken header met on the way means corruption either way.
    #[cold]
    fn why_not_a_block(&self, d: &RegionDesc, addr: usize) -> Misuse {
        let mut b = first_block(d);
        loop {
            if b.addr() == addr {
                return Misuse::Corrupted;
            }
            if b.addr() > addr {
                return Misuse::NotOurs;
            }
            // Inside free memory where a stale header may have been written
            // over: by check mode's pattern, or by the name a merged block
            // keeps in its last bytes. That is a block freed (and merged)
            // being freed again. Elsewhere a stale header stays intact
            // (`block_in` reports it), so this is an interior pointer.
            // (`addr` is the header's address: it overlaps the name area.)
            let hidden = self.marks || (b.is_named() && addr + HEADER + NAME_AREA > b.end());
            if hidden && b.is_free() && addr < b.end() && b.is_sealed(self.secret) {
                return Misuse::DoubleFree;
            }
            let sane = header_sane(b, d, self.secret);
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
            let step = if d.size() >= crate::spans::LARGE {
                d.size() - 4096
            } else {
                4096
            };
            let mut page = d.start();
            while page < d.end() {
                if reg.lookup(page) != id {
                    return Err(("page map does not point at the region", page));
                }
                page += step;
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
        // Every header passed `check_region` above.
        let blocks: usize = self
            .regions()
            .map(|d| region_blocks(d, self.secret).count())
            .sum();
        if blocks != self.blocks {
            return Err(("block count disagrees with the heap", 0));
        }
        if let Rover::At { region, addr } = self.rover {
            let d = reg.desc(region);
            if d.owner() != self.id || addr < d.start() || addr >= d.end() {
                return Err(("the next-fit rover is outside every region", addr));
            }
        }
        let secret = self.secret;
        let mut visit = |addr: usize, units: u32| {
            let id = reg.lookup(addr);
            let ours =
                id != 0 && id != crate::registry::RELEASED && reg.desc(id).owner() == self.id;
            if !ours || !addr.is_multiple_of(ALIGN) {
                return Err("free index holds an address outside the heap");
            }
            // SAFETY: `addr` is 16-aligned inside a live region of this heap.
            let b = unsafe { Block::from_raw(addr) };
            if !b.is_sealed(secret) || !b.is_free() || b.units() != units || b.region() != id {
                return Err("free index holds a block that is not a free block of this heap");
            }
            Ok(())
        };
        let mut regions = region_ids(reg, self.head);
        let indexed = self
            .index
            .check(reg, &mut regions, &mut visit)
            .map_err(|e| (e, 0))?;
        if indexed != free {
            return Err(("free index and free blocks differ in number", 0));
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
        let mut b = first_block(d);
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
            if b.is_named() && b.size() < HEADER + NAME_AREA {
                return Err(("named block is too small for its name", at));
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
        let first = first_block(d);
        if first.is_free() && first.size() == d.size() {
            return Err(("region is one free block but still mapped", d.start()));
        }
        Ok((free, used))
    }
}

impl<S: PageSource> Drop for Heap<S> {
    /// Gives every region back to the page source (a process's heaps are
    /// statics and never dropped; this is for heaps of tests and tools).
    fn drop(&mut self) {
        let mut id = self.head;
        while id != 0 {
            let d = self.reg.desc(id);
            let (start, size, next) = (d.start(), d.size(), d.next());
            self.reg.remove_region(id);
            // SAFETY: the region was mapped from this source by
            // `map_region`; the heap, its only user, is going away.
            unsafe { self.source.unmap(start, size) };
            id = next;
        }
    }
}

/// What a free merges, as it was before the merge: enough to tell which
/// bytes of the merged block do not hold the poison pattern yet.
struct Parts {
    /// (start, end, flags) of the free previous block, if merged.
    prev: Option<(usize, usize, u32)>,
    /// The freed block.
    freed: (usize, usize),
    /// (start, end, flags) of the free next block, if merged.
    next: Option<(usize, usize, u32)>,
}

impl Parts {
    fn of(prev: Option<Block>, b: Block, next: Option<Block>) -> Parts {
        let info = |f: Block| (f.addr(), f.end(), f.flags());
        Parts {
            prev: prev.map(info),
            freed: (b.addr(), b.end()),
            next: next.map(info),
        }
    }

    /// The byte ranges of the merged block starting at `start` that may
    /// hold something else than the pattern (at most six).
    fn unpoisoned(&self, start: usize) -> [(usize, usize); 6] {
        let mut r = [(0, 0); 6];
        let stale_name = |end: usize, flags: u32| {
            if flags & NAMED != 0 {
                (end - NAME_AREA, end)
            } else {
                (0, 0)
            }
        };
        let whole = |a: usize, b: usize, flags: u32| {
            if flags & POISONED != 0 {
                (a, a + HEADER)
            } else {
                (a, b)
            }
        };
        // The freed block (its header too when it is not the merged block's
        // first: the caller clips everything to the merged payload).
        r[0] = (self.freed.0.max(start), self.freed.1);
        if let Some((a, b, f)) = self.prev {
            r[2] = if f & POISONED != 0 {
                (0, 0)
            } else {
                (a + HEADER, b)
            };
            r[3] = stale_name(b, f);
        }
        if let Some((a, b, f)) = self.next {
            r[4] = whole(a, b, f);
            r[5] = stale_name(b, f);
        }
        r
    }
}

/// `verify_poison` of a block marked poisoned (check mode), out of line.
#[cold]
#[inline(never)]
fn verify_pattern(f: Block) {
    let (from, to) = f.poison_range();
    if let Some(at) = block::first_not(from, to, POISON) {
        block::write_after_free(at, f);
    }
}

/// What `block_in` found around a used block: its region's bounds and its
/// free neighbours.
#[derive(Clone, Copy)]
struct Around {
    start: usize,
    end: usize,
    prev: Option<Block>,
    next: Option<Block>,
}

fn first_block(d: &RegionDesc) -> Block {
    // SAFETY: a live region of a heap starts with a block header; callers
    // hold that heap (and its lock).
    unsafe { Block::from_raw(d.start()) }
}

/// The block after `b` in region `d`, if `b` is not the last.
#[inline]
fn next_in(d: &RegionDesc, b: Block) -> Option<Block> {
    (b.end() < d.end()).then(|| b.next())
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

/// Whether `b`'s header passes its check and its size keeps it inside
/// region `d` (what a walk needs before it steps over the block).
fn header_sane(b: Block, d: &RegionDesc, secret: Key) -> bool {
    b.is_sealed(secret) && b.size() >= MIN_BLOCK && b.end() <= d.end()
}

/// The blocks of a region, by address, for the walks over a whole heap
/// (`print_memory`, the leak report, an index rebuild). Each header is
/// checked before anything read from it is used: one a program overwrote
/// (a size of 0 would walk in place forever, a huge one out of the region)
/// ends the process as `corrupted block header`.
fn region_blocks(d: &RegionDesc, secret: Key) -> impl Iterator<Item = Block> + '_ {
    let mut at = Some(first_block(d));
    core::iter::from_fn(move || {
        let b = at?;
        let named_fits = !b.is_named() || b.size() >= HEADER + NAME_AREA;
        if !header_sane(b, d, secret) || !named_fits {
            block::corrupted_header(b.addr());
        }
        at = next_in(d, b);
        Some(b)
    })
}

fn read_name(b: Block) -> [u8; NAME_AREA] {
    b.read_name()
}

fn write_name(b: Block, area: &[u8; NAME_AREA]) {
    // SAFETY: a named block ends with NAME_AREA bytes reserved for the name.
    unsafe { core::ptr::copy_nonoverlapping(area.as_ptr(), b.name_addr() as *mut u8, NAME_AREA) };
}
