//! A replay recorded as the changes each operation made to the heap's
//! layout: what `fitalloc view` puts in its page, so that the page can show
//! the heap after any operation.
//!
//! ```text
//!  before op: the blocks the op names      after op: walk the heap from the
//!  (free, realloc) are looked up in the    block before each touched one to
//!  mirror (a copy of the layout)           the end of the one after it, and
//!                                          diff against the mirror:
//!   mirror  | a | B | c |  d  |            | a |    B'     |  d  |
//!                                            -> SPLICE region, index 1,
//!                                               delete 2, insert [B']
//! ```
//!
//! An operation changes at most the block it names (or the free block it
//! takes) and that block's two neighbours: a split stays inside the block
//! taken, a merge takes at most one neighbour on each side (no two free
//! blocks are ever adjacent). So the walk reads a handful of headers, and
//! the cost per operation does not grow with the heap. A region that
//! appears is announced (NEW), one that is unmapped removed (DEL). If the
//! walk does not end on the boundary it expects (it always should), the
//! whole region is read again: slower, never wrong.
//!
//! # Event stream
//!
//! Bytes, per operation: its events, then `0` (end of operation). Numbers
//! are LEB128 varints; sizes are in 16-byte units.
//!
//! | first byte | event | then |
//! |---|---|---|
//! | `0` | end of the operation | |
//! | `1` | NEW region (appended to the list; ids count from 0) | size |
//! | `2` | DEL region | id |
//! | `3 \| d << 2 \| n << 5` | SPLICE: replace `d` blocks from `index` by `n` blocks (`d`, `n` < 8; 0: a varint follows) | id, index, `d` and `n` if 0 above, the `n` blocks |
//!
//! A spliced block is `size << 2 | named << 1 | used` (and a name id if
//! named), except the last, which is `named << 1 | used` only: blocks tile
//! their region, so its size is what the others leave of the deleted
//! blocks. Names are ids into [`Recorder::names`] (0: no name).

use std::collections::{BTreeMap, HashMap};

use fitalloc::block::{Block, HEADER};
use fitalloc::heap::Spot;
use fitalloc::Heap;

use crate::layout::{self, Layout};
use crate::pages::Pages;
use crate::replay::{Step, Watch};

/// End of an operation.
pub const END: u8 = 0;
/// A new region.
pub const NEW: u8 = 1;
/// A region unmapped.
pub const DEL: u8 = 2;
/// Blocks of a region replaced.
pub const SPLICE: u8 = 3;

/// A block of the mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MBlock {
    /// Offset in the region, bytes.
    off: u64,
    size: u64,
    used: bool,
    name: u32,
}

/// A region of the mirror.
#[derive(Clone, Debug)]
struct MRegion {
    /// Creation index in this replay (the page's region id).
    id: u32,
    /// The registry's sequence number (tells a new region at the same
    /// address from the old one).
    seq: u64,
    size: u64,
    blocks: Vec<MBlock>,
}

impl MRegion {
    /// Index of the block holding offset `off`.
    fn block_at(&self, off: u64) -> usize {
        self.blocks.partition_point(|b| b.off + b.size <= off)
    }
}

/// Records one policy's replay as an event stream (see the module docs).
#[derive(Default)]
pub struct Recorder {
    /// The mirror: regions by start address.
    regions: BTreeMap<usize, MRegion>,
    next_id: u32,
    out: Vec<u8>,
    names: Vec<String>,
    name_ids: HashMap<Vec<u8>, u32>,
    /// Header addresses named by the current operation, read before it ran.
    touched: Vec<usize>,
    /// Operations recorded.
    ops: u64,
    /// Regions read whole because a walk went astray.
    rescans: u64,
    /// Most blocks the heap held after an operation.
    most_blocks: usize,
    blocks: usize,
}

impl Recorder {
    /// An empty recording.
    pub fn new() -> Recorder {
        Recorder {
            names: vec![String::new()],
            ..Recorder::default()
        }
    }

    /// The event stream.
    pub fn events(&self) -> &[u8] {
        &self.out
    }

    /// Block names by id (0: none).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Operations recorded.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Regions read whole because a walk did not end where expected (0
    /// unless something is wrong).
    pub fn rescans(&self) -> u64 {
        self.rescans
    }

    /// Most blocks the heap held after any operation.
    pub fn most_blocks(&self) -> usize {
        self.most_blocks
    }

    fn name_id(&mut self, b: Block) -> u32 {
        if !b.is_named() {
            return 0;
        }
        let area = b.read_name();
        let len = area.iter().take(31).position(|&c| c == 0).unwrap_or(31);
        let key = &area[..len];
        if let Some(&id) = self.name_ids.get(key) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(layout::show_name(key));
        self.name_ids.insert(key.to_vec(), id);
        id
    }

    /// The mirror region holding `addr`, by start address.
    fn region_of(&self, addr: usize) -> Option<usize> {
        let (&start, r) = self.regions.range(..=addr).next_back()?;
        (addr < start + r.size as usize).then_some(start)
    }

    /// Whether the mirror region at `start` is still a live region of
    /// `heap` (the same one).
    fn alive(heap: &Heap<Pages>, start: usize, r: &MRegion) -> bool {
        let reg = heap.registry();
        let Ok(spot) = Spot::of(reg, reg.lookup(start)) else {
            return false;
        };
        heap.holds(spot, start + HEADER) && {
            let d = spot.desc();
            d.start() == start && d.seq() == r.seq && d.size() as u64 == r.size
        }
    }

    /// Announces the heap region holding `addr`, new since the last
    /// operation; returns its start.
    fn add_region(&mut self, heap: &Heap<Pages>, addr: usize) -> Option<usize> {
        let reg = heap.registry();
        let spot = Spot::of(reg, reg.lookup(addr)).ok()?;
        if !heap.holds(spot, addr + HEADER) {
            return None;
        }
        let d = spot.desc();
        let size = d.size() as u64;
        self.regions.insert(
            d.start(),
            MRegion {
                id: self.next_id,
                seq: d.seq(),
                size,
                blocks: vec![MBlock {
                    off: 0,
                    size,
                    used: false,
                    name: 0,
                }],
            },
        );
        self.next_id += 1;
        self.blocks += 1;
        self.out.push(NEW);
        varint(&mut self.out, size / 16);
        Some(d.start())
    }

    /// The blocks of `heap` from `from` up to `to` (addresses), or `None`
    /// if the walk does not land on `to`.
    fn walk(&mut self, start: usize, end: usize, from: usize, to: usize) -> Option<Vec<MBlock>> {
        let mut v = Vec::new();
        let mut x = from;
        while x < to {
            // SAFETY: `x` is 16-aligned (block sizes are multiples of 16
            // from a block start) and lies inside the live region
            // `start..end` of the replay's heap, which nothing else
            // modifies while the recorder holds it borrowed.
            let b = unsafe { Block::from_raw(x) };
            let size = b.size();
            if size == 0 || x + size > end {
                return None;
            }
            v.push(MBlock {
                off: (x - start) as u64,
                size: size as u64,
                used: !b.is_free(),
                name: self.name_id(b),
            });
            x += size;
        }
        (x == to).then_some(v)
    }

    /// Brings the mirror region at `start` up to date around the blocks
    /// holding the addresses `at`, emitting splices.
    fn update(&mut self, start: usize, at: &[usize]) {
        let r = &self.regions[&start];
        let last = r.blocks.len() - 1;
        // Windows: each touched block with its neighbours, merged when
        // they overlap or touch; handled from the last, so that earlier
        // indices stay valid.
        let mut idx: Vec<usize> = at.iter().map(|&a| r.block_at((a - start) as u64)).collect();
        idx.sort_unstable();
        idx.dedup();
        let mut windows: Vec<(usize, usize)> = Vec::new();
        for i in idx {
            let (lo, hi) = (i.saturating_sub(1), (i + 1).min(last));
            match windows.last_mut() {
                Some(w) if lo <= w.1 + 1 => w.1 = hi,
                _ => windows.push((lo, hi)),
            }
        }
        let end = start + r.size as usize;
        for &(lo, hi) in windows.iter().rev() {
            let r = &self.regions[&start];
            let from = start + r.blocks[lo].off as usize;
            let to = start + (r.blocks[hi].off + r.blocks[hi].size) as usize;
            match self.walk(start, end, from, to) {
                Some(new) => self.splice(start, lo, hi + 1 - lo, new),
                None => {
                    self.rescans += 1;
                    let n = self.regions[&start].blocks.len();
                    let all = self
                        .walk(start, end, start, end)
                        .expect("a live region's blocks tile it");
                    self.splice(start, 0, n, all);
                    return;
                }
            }
        }
    }

    /// Replaces `del` mirror blocks of region `start` from `index` by
    /// `new`, emitting the smallest splice that does it.
    fn splice(&mut self, start: usize, index: usize, del: usize, new: Vec<MBlock>) {
        let r = self.regions.get_mut(&start).expect("a mirror region");
        let old = &r.blocks[index..index + del];
        let prefix = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
        let room = old.len().min(new.len()) - prefix;
        let suffix = old
            .iter()
            .rev()
            .zip(new.iter().rev())
            .take(room)
            .take_while(|(a, b)| a == b)
            .count();
        let (d, ins) = (del - prefix - suffix, &new[prefix..new.len() - suffix]);
        if d == 0 && ins.is_empty() {
            return;
        }
        debug_assert!(d > 0 && !ins.is_empty(), "blocks tile their region");
        let at = index + prefix;
        let out = &mut self.out;
        let small = |k: usize| if k < 8 { k as u8 } else { 0 };
        out.push(SPLICE | small(d) << 2 | small(ins.len()) << 5);
        varint(out, r.id as u64);
        varint(out, at as u64);
        if d >= 8 {
            varint(out, d as u64);
        }
        if ins.len() >= 8 {
            varint(out, ins.len() as u64);
        }
        for (k, b) in ins.iter().enumerate() {
            let flags = (b.name != 0) as u64 * 2 + b.used as u64;
            if k + 1 < ins.len() {
                varint(out, (b.size / 16) << 2 | flags);
            } else {
                out.push(flags as u8);
            }
            if b.name != 0 {
                varint(out, b.name as u64);
            }
        }
        r.blocks.splice(at..at + d, ins.iter().copied());
    }
}

impl Watch for Recorder {
    fn before(&mut self, _heap: &Heap<Pages>, _op: u64, step: &Step, slots: &[usize]) {
        self.touched.clear();
        if let Step::Free { slot } | Step::Realloc { slot, .. } = *step {
            match slots[slot as usize] {
                0 => {}
                p => self.touched.push(p - HEADER),
            }
        }
    }

    fn after(&mut self, heap: &Heap<Pages>, _op: u64, step: &Step, slots: &[usize]) {
        let result = match *step {
            Step::Malloc { slot, .. }
            | Step::Calloc { slot, .. }
            | Step::Memalign { slot, .. }
            | Step::Named { slot, .. }
            | Step::Realloc { slot, .. } => slots[slot as usize],
            _ => 0,
        };
        let mut touched = std::mem::take(&mut self.touched);
        if result != 0 && !touched.contains(&(result - HEADER)) {
            touched.push(result - HEADER);
        }
        // Group the touched addresses by mirror region; an address in no
        // mirror region is in a region the operation mapped.
        let mut by_region: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &a in &touched {
            let start = match self.region_of(a) {
                Some(s) => Some(s),
                None => self.add_region(heap, a),
            };
            if let Some(s) = start {
                by_region.entry(s).or_default().push(a);
            }
        }
        for (start, at) in by_region {
            let r = &self.regions[&start];
            if Self::alive(heap, start, r) {
                let before = r.blocks.len();
                self.update(start, &at);
                self.blocks = self.blocks + self.regions[&start].blocks.len() - before;
            } else {
                let r = self.regions.remove(&start).expect("a mirror region");
                self.blocks -= r.blocks.len();
                self.out.push(DEL);
                varint(&mut self.out, r.id as u64);
            }
        }
        self.touched = touched;
        self.out.push(END);
        self.ops += 1;
        self.most_blocks = self.most_blocks.max(self.blocks);
    }
}

/// Appends `v` as a LEB128 varint.
pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A block as the player keeps it: size, in use, name id.
type PBlock = (u64, bool, u32);

/// Plays an event stream back, as the page does (the reference for its
/// script, and the tests' check of the recorder).
#[derive(Clone, Debug, Default)]
pub struct Player {
    /// Live regions by id, in list order (ids increase along the list).
    regions: BTreeMap<u32, (u64, Vec<PBlock>)>,
    next_id: u32,
    pos: usize,
}

impl Player {
    /// A player at the start (an empty heap).
    pub fn new() -> Player {
        Player::default()
    }

    /// Plays one operation's events from `events`; `false` at the end of
    /// the stream. Panics on a malformed stream (the recorder's bug).
    pub fn step(&mut self, events: &[u8]) -> bool {
        if self.pos >= events.len() {
            return false;
        }
        let mut read = Reader {
            b: events,
            pos: self.pos,
        };
        loop {
            let first = read.byte();
            match first & 3 {
                END if first == END => break,
                NEW => {
                    let size = read.varint() * 16;
                    self.regions
                        .insert(self.next_id, (size, vec![(size, false, 0)]));
                    self.next_id += 1;
                }
                DEL => {
                    let id = read.varint() as u32;
                    self.regions.remove(&id).expect("DEL of a live region");
                }
                _ => {
                    let id = read.varint() as u32;
                    let at = read.varint() as usize;
                    let d = match (first >> 2) & 7 {
                        0 => read.varint() as usize,
                        k => k as usize,
                    };
                    let n = match first >> 5 {
                        0 => read.varint() as usize,
                        k => k as usize,
                    };
                    let blocks = &mut self.regions.get_mut(&id).expect("a live region").1;
                    let mut left: u64 = blocks[at..at + d].iter().map(|b| b.0).sum();
                    let mut ins = Vec::with_capacity(n);
                    for k in 0..n {
                        let v = read.varint();
                        let size = if k + 1 < n { (v >> 2) * 16 } else { left };
                        left -= size;
                        let name = if v & 2 != 0 { read.varint() as u32 } else { 0 };
                        ins.push((size, v & 1 != 0, name));
                    }
                    blocks.splice(at..at + d, ins);
                }
            }
        }
        self.pos = read.pos;
        true
    }

    /// The layout now.
    pub fn layout(&self, names: &[String]) -> Layout {
        Layout {
            regions: self
                .regions
                .values()
                .map(|(size, blocks)| {
                    let mut off = 0;
                    layout::Region {
                        size: *size,
                        blocks: blocks
                            .iter()
                            .map(|&(size, used, name)| {
                                let b = layout::Block {
                                    offset: off,
                                    size,
                                    used,
                                    name: names[name as usize].clone(),
                                };
                                off += size;
                                b
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        self.pos += 1;
        self.b[self.pos - 1]
    }

    fn varint(&mut self) -> u64 {
        let mut v = 0;
        let mut shift = 0;
        loop {
            let b = self.byte();
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{replay_watched, Stop};
    use fitalloc::trace::{Header, Op, Record, RECORD, VERSION};
    use fitalloc::Policy;

    /// A random trace: mallocs of many sizes (some named, some aligned),
    /// frees, reallocs, now and then a large block (its own region).
    fn random_trace(n: usize, seed: u64) -> Vec<u8> {
        let h = Header {
            version: VERSION,
            page_size: fitalloc::os::page_size() as u32,
            pid: 1,
            parent: 0,
            fork_child: false,
            program_units: 0,
        };
        let mut f = h.encode().to_vec();
        let mut x = seed;
        let mut rnd = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut live: Vec<u64> = Vec::new();
        let mut next = 0x10_0000u64;
        let push = |f: &mut Vec<u8>, op: Op, out: u64| {
            let mut buf = [0u8; 2 * RECORD];
            let k = Record { op, thread: 0, out }.encode(&mut buf);
            f.extend_from_slice(&buf[..k]);
        };
        for _ in 0..n {
            let r = rnd(100);
            if r < 45 || live.is_empty() {
                let size = match rnd(20) {
                    0 => 20_000 + rnd(200_000),
                    1..=4 => rnd(3000),
                    _ => rnd(200),
                };
                next += 0x10_0000;
                let op = match rnd(10) {
                    0 => {
                        let mut name = [0u8; 31];
                        name[..5].copy_from_slice(format!("n{:04}", rnd(3)).as_bytes());
                        Op::Named { size, name }
                    }
                    1 => Op::Memalign {
                        align: 64 << rnd(4),
                        size,
                    },
                    _ => Op::Malloc { size },
                };
                push(&mut f, op, next);
                live.push(next);
            } else if r < 85 {
                let p = live.swap_remove(rnd(live.len() as u64) as usize);
                push(&mut f, Op::Free { ptr: p }, 0);
            } else {
                let k = rnd(live.len() as u64) as usize;
                next += 0x10_0000;
                let size = rnd(4000);
                push(&mut f, Op::Realloc { ptr: live[k], size }, next);
                live[k] = next;
            }
        }
        f
    }

    #[test]
    fn the_events_rebuild_every_layout() {
        let f = random_trace(6000, 0x9e3779b97f4a7c15);
        for (at, policy) in [
            (1usize, Policy::FirstFit),
            (7, Policy::NextFit),
            (13, Policy::BestFit),
            (31, Policy::WorstFit),
        ] {
            let stop = Stop::Op(3000 + at as u64);
            let (_, runs) =
                replay_watched(&f[..], &[policy], stop, true, None, |_| Recorder::new()).unwrap();
            let (o, rec) = &runs[0];
            assert_eq!(rec.rescans(), 0, "{policy:?}");
            assert_eq!(rec.ops(), o.ops);
            let mut p = Player::new();
            while p.step(rec.events()) {}
            assert_eq!(
                p.layout(rec.names()),
                *o.layout.as_ref().unwrap(),
                "{policy:?}"
            );
            // And at every moment on the way, against replays stopped there.
            let mut p = Player::new();
            for k in 1..=o.ops {
                p.step(rec.events());
                if k % 997 == at as u64 {
                    let (_, o) =
                        crate::replay::replay(&f[..], &[policy], Stop::Op(k), true, None).unwrap();
                    assert_eq!(
                        p.layout(rec.names()),
                        o[0].layout.clone().unwrap(),
                        "{policy:?} op {k}"
                    );
                }
            }
            assert!(rec.most_blocks() > 10);
        }
    }

    #[test]
    fn varints() {
        let mut v = Vec::new();
        for x in [0, 1, 127, 128, 300, u64::MAX] {
            v.clear();
            varint(&mut v, x);
            assert_eq!(Reader { b: &v, pos: 0 }.varint(), x);
        }
    }
}
