//! The reference model of ARCHITECTURE.md §3, written from the text alone.
//!
//! Deliberately simple: a `Vec` of regions in creation order, each a `Vec` of
//! blocks by offset, and every policy a linear scan of that list. Nothing here
//! is shared with `src/heap.rs` or `src/tree.rs`.
//!
//! Positions are `(seq, offset)` with the model's own `seq` counter; only the
//! order of regions matters when comparing with the heap, whose `seq` is
//! process-wide.

#![allow(dead_code)]

pub mod run;

use fitalloc::Policy;

/// Bytes of header in front of every payload.
pub const HEADER: usize = 16;
/// Every block size and payload is a multiple of this.
pub const ALIGN: usize = 16;
/// The smallest block.
pub const MIN_BLOCK: usize = 32;
/// Bytes at the end of a named block holding its name.
pub const NAME_AREA: usize = 32;
/// Largest block, in 16-byte units.
pub const MAX_UNITS: usize = i32::MAX as usize;

/// `round(x, a)` of §3: `x` rounded up to a multiple of `a`.
pub fn round(x: usize, a: usize) -> Option<usize> {
    Some(x.checked_add(a - 1)? / a * a)
}

/// `need(n, named)` of §3; `None` when the block would exceed `MAX_UNITS`.
pub fn need(n: usize, named: bool) -> Option<usize> {
    let s = round(n, ALIGN)?
        .checked_add(HEADER)?
        .checked_add(if named { NAME_AREA } else { 0 })?;
    let s = s.max(MIN_BLOCK);
    (s / ALIGN <= MAX_UNITS).then_some(s)
}

/// The name a block keeps: the first 31 bytes, up to a NUL.
pub fn stored_name(name: &[u8]) -> Vec<u8> {
    let name = &name[..name.len().min(31)];
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    name[..end].to_vec()
}

/// A position `(region seq, offset in region)`; the derive orders it
/// lexicographically, which is list order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Pos {
    /// The region's creation number (the model's own counter).
    pub seq: u64,
    /// Offset of the block in its region.
    pub offset: usize,
}

/// A block of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blk {
    /// Offset in the region.
    pub offset: usize,
    /// Whole size, header included.
    pub size: usize,
    /// Free or used.
    pub free: bool,
    /// Whether the block carries a name area. A freed block keeps its name
    /// (SPEC §5); a merge keeps the name of its lowest block.
    pub named: bool,
    /// The name as `BlockInfo::name` shows it.
    pub name: Vec<u8>,
}

impl Blk {
    fn free(offset: usize, size: usize) -> Blk {
        Blk {
            offset,
            size,
            free: true,
            named: false,
            name: Vec::new(),
        }
    }
}

/// A region of the model.
#[derive(Clone, Debug)]
pub struct Region {
    /// Creation number.
    pub seq: u64,
    /// Its address (taken from the heap under test: the OS chooses it, and
    /// the memalign gap rule depends on it).
    pub base: usize,
    /// Size in bytes.
    pub size: usize,
    /// Blocks by offset, tiling the region.
    pub blocks: Vec<Blk>,
}

/// Where new regions come from (the address the OS gave the real heap).
pub trait Mapper {
    /// Maps `len` bytes and returns the address, or `None` (out of memory).
    fn map(&mut self, len: usize) -> Option<usize>;
}

/// The outcome of `realloc`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Realloc {
    /// Rules 1 and 2: the block stays where it is.
    Same(Pos),
    /// Rule 3: the block moved.
    Moved(Pos),
    /// Rule 3 failed: nothing changed.
    Failed,
}

/// The reference heap.
#[derive(Clone, Debug)]
pub struct Model {
    /// `PAGE`.
    pub page: usize,
    /// The current policy.
    pub policy: Policy,
    /// Regions in list (creation) order.
    pub regions: Vec<Region>,
    next_seq: u64,
    /// The next-fit rover; `None` is "the smallest position".
    pub rover: Option<Pos>,
    /// §3 is ambiguous about the rover under the other policies ("After
    /// every Choose, next fit sets rover := ..."). `false`: only a Choose
    /// made while the policy is next fit moves it. `true`: every Choose
    /// moves it, whatever the policy (what the heap does). The two differ
    /// only after `set_policy` to next fit.
    pub rover_every_choose: bool,
    /// Regions mapped so far.
    pub regions_mapped: u64,
    /// Regions unmapped so far.
    pub regions_unmapped: u64,
    /// How often each rule fired (to show a run covered them).
    pub hits: Hits,
}

/// Counts of the rules that fired in a model.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hits {
    /// Next fit found nothing at or after the rover and wrapped.
    pub wraps: u64,
    /// Choose found no candidate and mapped a region.
    pub maps: u64,
    /// Alloc split the chosen block.
    pub splits: u64,
    /// A memalign gap of `0 < g < MIN_BLOCK` grew by `a`.
    pub gap_bumped: u64,
    /// A memalign left a free gap block in front.
    pub gaps: u64,
    /// Realloc rule 1 shrank the block; rule 2 absorbed the next one.
    pub shrinks: u64,
    /// Realloc rule 2.
    pub absorbs: u64,
    /// Realloc rule 2 taking all of the next block (no free tail left).
    pub absorbs_whole: u64,
    /// Free merged with the next / previous block.
    pub merges_next: u64,
    /// Free merged with the previous block.
    pub merges_prev: u64,
}

impl Model {
    /// An empty heap.
    pub fn new(page: usize, policy: Policy) -> Model {
        Model {
            page,
            policy,
            regions: Vec::new(),
            next_seq: 0,
            rover: None,
            rover_every_choose: true,
            regions_mapped: 0,
            regions_unmapped: 0,
            hits: Hits::default(),
        }
    }

    /// Switches the policy. §3 says nothing about the rover here; it is kept.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// (region index, block index) of the block at `pos`.
    pub fn locate(&self, pos: Pos) -> (usize, usize) {
        let ri = self
            .regions
            .binary_search_by_key(&pos.seq, |r| r.seq)
            .unwrap_or_else(|_| panic!("model: no region for {pos:?}"));
        let bi = self.regions[ri]
            .blocks
            .binary_search_by_key(&pos.offset, |b| b.offset)
            .unwrap_or_else(|_| panic!("model: no block at {pos:?}"));
        (ri, bi)
    }

    /// (region index in the list, offset): how results are compared.
    pub fn place(&self, pos: Pos) -> (usize, usize) {
        (self.locate(pos).0, pos.offset)
    }

    /// The block at `pos`.
    pub fn block(&self, pos: Pos) -> &Blk {
        let (ri, bi) = self.locate(pos);
        &self.regions[ri].blocks[bi]
    }

    /// Usable bytes of the used block at `pos`.
    pub fn usable(&self, pos: Pos) -> usize {
        let b = self.block(pos);
        b.size - HEADER - if b.named { NAME_AREA } else { 0 }
    }

    /// Sum of the sizes of used blocks.
    pub fn in_use(&self) -> usize {
        self.regions
            .iter()
            .flat_map(|r| &r.blocks)
            .filter(|b| !b.free)
            .map(|b| b.size)
            .sum()
    }

    /// Sum of the region sizes.
    pub fn mapped(&self) -> usize {
        self.regions.iter().map(|r| r.size).sum()
    }

    /// Choose(need) of §3: (region index, block index) of the chosen free
    /// block, mapping a region when there is no candidate.
    fn choose(&mut self, need: usize, m: &mut dyn Mapper) -> Option<(usize, usize)> {
        let mut chosen: Option<(usize, usize, usize)> = None; // ri, bi, size
        let mut first: Option<(usize, usize, usize)> = None;
        'scan: for (ri, r) in self.regions.iter().enumerate() {
            for (bi, b) in r.blocks.iter().enumerate() {
                if !b.free || b.size < need {
                    continue;
                }
                let pos = Pos {
                    seq: r.seq,
                    offset: b.offset,
                };
                let cand = (ri, bi, b.size);
                match self.policy {
                    Policy::FirstFit => {
                        chosen = Some(cand);
                        break 'scan;
                    }
                    Policy::NextFit => {
                        if first.is_none() {
                            first = Some(cand);
                        }
                        if self.rover.is_none_or(|rv| pos >= rv) {
                            chosen = Some(cand);
                            break 'scan;
                        }
                    }
                    // Strict comparisons: ties stay with the earlier block.
                    Policy::BestFit => {
                        if chosen.is_none_or(|c| b.size < c.2) {
                            chosen = Some(cand);
                        }
                    }
                    Policy::WorstFit => {
                        if chosen.is_none_or(|c| b.size > c.2) {
                            chosen = Some(cand);
                        }
                    }
                }
            }
        }
        if chosen.is_none() && first.is_some() {
            chosen = first; // next fit wraps once
            self.hits.wraps += 1;
        }
        let (ri, bi) = match chosen {
            Some((ri, bi, _)) => (ri, bi),
            None => {
                let len = round(need, self.page)?;
                let base = m.map(len)?;
                self.regions.push(Region {
                    seq: self.next_seq,
                    base,
                    size: len,
                    blocks: vec![Blk::free(0, len)],
                });
                self.next_seq += 1;
                self.regions_mapped += 1;
                self.hits.maps += 1;
                (self.regions.len() - 1, 0)
            }
        };
        if self.policy == Policy::NextFit || self.rover_every_choose {
            self.rover = Some(Pos {
                seq: self.regions[ri].seq,
                offset: self.regions[ri].blocks[bi].offset,
            });
        }
        Some((ri, bi))
    }

    /// Makes the free block (ri, bi) an allocation of `need`, splitting off
    /// the tail when it is at least `MIN_BLOCK`.
    fn take(&mut self, ri: usize, bi: usize, need: usize, name: Option<&[u8]>) -> Pos {
        let r = &mut self.regions[ri];
        let b = &mut r.blocks[bi];
        assert!(b.free && b.size >= need, "model: take of {b:?} for {need}");
        let s = b.size;
        let offset = b.offset;
        b.free = false;
        b.named = name.is_some();
        b.name = name.map(stored_name).unwrap_or_default();
        if s - need >= MIN_BLOCK {
            b.size = need;
            r.blocks.insert(bi + 1, Blk::free(offset + need, s - need));
            self.hits.splits += 1;
        }
        Pos { seq: r.seq, offset }
    }

    /// Alloc(need) of §3.
    fn alloc(&mut self, need: usize, name: Option<&[u8]>, m: &mut dyn Mapper) -> Option<Pos> {
        let (ri, bi) = self.choose(need, m)?;
        Some(self.take(ri, bi, need, name))
    }

    /// `malloc(n)`.
    pub fn malloc(&mut self, n: usize, m: &mut dyn Mapper) -> Option<Pos> {
        self.alloc(need(n, false)?, None, m)
    }

    /// `malloc_named(n, name)`.
    pub fn malloc_named(&mut self, n: usize, name: &[u8], m: &mut dyn Mapper) -> Option<Pos> {
        self.alloc(need(n, true)?, Some(name), m)
    }

    /// `calloc(k, n)` (the zeroing is checked by the caller).
    pub fn calloc(&mut self, k: usize, n: usize, m: &mut dyn Mapper) -> Option<Pos> {
        self.malloc(k.checked_mul(n)?, m)
    }

    /// Memalign(a, n) of §3.
    pub fn memalign(&mut self, a: usize, n: usize, m: &mut dyn Mapper) -> Option<Pos> {
        assert!(a.is_power_of_two());
        if a <= ALIGN {
            return self.malloc(n, m);
        }
        let need = need(n, false)?;
        let padded = need.checked_add(a)?.checked_add(HEADER)?;
        let (ri, bi) = self.choose(padded, m)?;
        let r = &mut self.regions[ri];
        let c = r.blocks[bi].offset;
        let s = r.blocks[bi].size;
        let q = round(r.base + c + HEADER, a)? - r.base;
        let mut g = q - HEADER - c;
        if g > 0 && g < MIN_BLOCK {
            g += a;
            self.hits.gap_bumped += 1;
        }
        let bi = if g > 0 {
            self.hits.gaps += 1;
            // The gap is the remainder of a split: it has no name.
            r.blocks[bi] = Blk::free(c, g);
            r.blocks.insert(bi + 1, Blk::free(c + g, s - g));
            bi + 1
        } else {
            bi
        };
        Some(self.take(ri, bi, need, None))
    }

    /// Free(B) of §3.
    pub fn free(&mut self, pos: Pos) {
        let (ri, mut bi) = self.locate(pos);
        let r = &mut self.regions[ri];
        let b = &mut r.blocks[bi];
        assert!(!b.free, "model: double free at {pos:?}");
        b.free = true;
        if bi + 1 < r.blocks.len() && r.blocks[bi + 1].free {
            let n = r.blocks.remove(bi + 1);
            r.blocks[bi].size += n.size;
            self.hits.merges_next += 1;
        }
        if bi > 0 && r.blocks[bi - 1].free {
            let b = r.blocks.remove(bi);
            bi -= 1;
            r.blocks[bi].size += b.size;
            self.hits.merges_prev += 1;
        }
        if r.blocks.len() == 1 {
            assert_eq!(r.blocks[0].size, r.size);
            self.regions.remove(ri);
            self.regions_unmapped += 1;
        }
    }

    /// Realloc(B, n) of §3, rules 1 to 3. `realloc(NULL, n)` and
    /// `realloc(p, 0)` are the C layer's (`crates/preload`): `Heap::realloc`
    /// with `n = 0` is rule 1 with `need(0) = MIN_BLOCK`, and so is this.
    pub fn realloc(&mut self, pos: Pos, n: usize, m: &mut dyn Mapper) -> Realloc {
        let (ri, bi) = self.locate(pos);
        let r = &mut self.regions[ri];
        let b = &r.blocks[bi];
        assert!(!b.free, "model: realloc of free block {pos:?}");
        let (s, named, name) = (b.size, b.named, b.name.clone());
        let Some(need) = need(n, named) else {
            return Realloc::Failed;
        };
        // 1. shrink (or nothing)
        if need <= s {
            if s - need >= MIN_BLOCK {
                r.blocks[bi].size = need;
                let tail = Blk {
                    offset: pos.offset + need,
                    size: s - need,
                    free: false,
                    named: false,
                    name: Vec::new(),
                };
                r.blocks.insert(bi + 1, tail);
                self.hits.shrinks += 1;
                self.free(Pos {
                    seq: pos.seq,
                    offset: pos.offset + need,
                });
            }
            return Realloc::Same(pos);
        }
        // 2. absorb the free next neighbour
        if let Some(nx) = r.blocks.get(bi + 1) {
            if nx.free && s + nx.size >= need {
                let total = s + nx.size;
                r.blocks.remove(bi + 1);
                self.hits.absorbs += 1;
                if total - need >= MIN_BLOCK {
                    r.blocks[bi].size = need;
                    r.blocks
                        .insert(bi + 1, Blk::free(pos.offset + need, total - need));
                } else {
                    r.blocks[bi].size = total;
                    self.hits.absorbs_whole += 1;
                }
                return Realloc::Same(pos);
            }
        }
        // 3. move: Alloc, (copy), Free
        let name = named.then_some(name);
        match self.alloc(need, name.as_deref(), m) {
            None => Realloc::Failed,
            Some(np) => {
                self.free(pos);
                Realloc::Moved(np)
            }
        }
    }

    /// The layout as text: one `[...]` per region, each block
    /// `offset+size` then `U` (used) or `F` (free), then `N(name)` if the
    /// block has a non-empty name (a freed block keeps its name).
    pub fn layout(&self) -> String {
        let mut s = String::new();
        for (k, r) in self.regions.iter().enumerate() {
            if k > 0 {
                s.push(' ');
            }
            s.push('[');
            for (i, b) in r.blocks.iter().enumerate() {
                if i > 0 {
                    s.push(' ');
                }
                s.push_str(&format!("{}+{}", b.offset, b.size));
                s.push(if b.free { 'F' } else { 'U' });
                if !b.name.is_empty() {
                    s.push_str(&format!("N({})", String::from_utf8_lossy(&b.name)));
                }
            }
            s.push(']');
        }
        s
    }
}
