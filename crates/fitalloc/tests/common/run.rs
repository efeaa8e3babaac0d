//! The differential driver: the real heap and the reference model side by
//! side, every step checked (see `tests/model.rs`). Shared by the model test
//! and the `heap_ops` fuzz target (`fuzz/`).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::{Hits, Mapper, Model, Pos, Realloc};
use fitalloc::os::{self, OsPages, PageSource};
use fitalloc::registry::Registry;
use fitalloc::{Heap, Policy};

// ---------------------------------------------------------------------------
// Page source with failure injection
// ---------------------------------------------------------------------------

/// `OsPages`, except that `map` fails while `fail` is set.
#[derive(Default)]
pub struct Pages {
    pub fail: bool,
    pub failed: u64,
}

impl PageSource for Pages {
    fn page_size(&self) -> usize {
        os::page_size()
    }

    fn map(&mut self, len: usize) -> Option<(usize, bool)> {
        if self.fail {
            self.failed += 1;
            return None;
        }
        OsPages.map(len)
    }

    unsafe fn unmap(&mut self, addr: usize, len: usize) {
        // SAFETY: our caller upholds `unmap`'s contract, which we forward.
        unsafe { OsPages.unmap(addr, len) }
    }
}

// ---------------------------------------------------------------------------
// Byte patterns
// ---------------------------------------------------------------------------

pub fn pattern(tag: u8, i: usize) -> u8 {
    tag ^ (i as u8) ^ ((i >> 8) as u8).wrapping_mul(7)
}

pub fn fill(p: usize, len: usize, tag: u8) {
    // SAFETY: `p` is a live allocation of at least `len` usable bytes owned
    // by the test (its usable size agreed between heap and model).
    let s = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len) };
    for (i, b) in s.iter_mut().enumerate() {
        *b = pattern(tag, i);
    }
}

pub fn check_pattern(p: usize, len: usize, tag: u8) -> Result<(), String> {
    // SAFETY: as in `fill`: `p` holds at least `len` bytes the test wrote.
    let s = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
    match s
        .iter()
        .enumerate()
        .position(|(i, &b)| b != pattern(tag, i))
    {
        None => Ok(()),
        Some(i) => Err(format!(
            "payload {p:#x}: byte {i} of {len} is {:#04x}, expected {:#04x}",
            s[i],
            pattern(tag, i)
        )),
    }
}

pub fn check_zero(p: usize, len: usize) -> Result<(), String> {
    // SAFETY: `p` is a fresh allocation of at least `len` usable bytes.
    let s = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
    match s.iter().position(|&b| b != 0) {
        None => Ok(()),
        Some(i) => Err(format!("calloc {p:#x}: byte {i} of {len} is not zero")),
    }
}

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

/// One step of a run. `Free(k)` and `Realloc(k, _)` act on live block
/// `k % live` (no-ops when nothing is live), so any subsequence of a
/// sequence is again a valid sequence (for shrinking).
#[derive(Clone, Debug)]
pub enum Op {
    Malloc(usize),
    Calloc(usize, usize),
    Memalign(usize, usize),
    Named(usize, &'static str),
    Free(usize),
    Realloc(usize, usize),
    SetPolicy(Policy),
    FailMaps(bool),
}

#[derive(Clone, Copy, Debug)]
pub struct Live {
    pub p: usize,
    pub pos: Pos,
    pub usable: usize,
    pub tag: u8,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub steps: u64,
    pub allocs: u64,
    pub failed_allocs: u64,
    pub frees: u64,
    pub realloc_same: u64,
    pub realloc_moved: u64,
    pub realloc_failed: u64,
    pub policy_switches: u64,
    pub max_live: usize,
    pub max_regions: usize,
    pub max_blocks: usize,
    /// Stale cell maxima settled by searches (`Heap::index_settled`).
    pub settled: u64,
    pub hits: Hits,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.allocs += o.allocs;
        self.failed_allocs += o.failed_allocs;
        self.frees += o.frees;
        self.realloc_same += o.realloc_same;
        self.realloc_moved += o.realloc_moved;
        self.realloc_failed += o.realloc_failed;
        self.policy_switches += o.policy_switches;
        self.settled += o.settled;
        self.max_live = self.max_live.max(o.max_live);
        self.max_regions = self.max_regions.max(o.max_regions);
        self.max_blocks = self.max_blocks.max(o.max_blocks);
        let (h, o) = (&mut self.hits, &o.hits);
        h.wraps += o.wraps;
        h.maps += o.maps;
        h.splits += o.splits;
        h.gap_bumped += o.gap_bumped;
        h.gaps += o.gaps;
        h.shrinks += o.shrinks;
        h.absorbs += o.absorbs;
        h.absorbs_whole += o.absorbs_whole;
        h.merges_next += o.merges_next;
        h.merges_prev += o.merges_prev;
    }
}

/// New heap regions handed to the model in order; the model must ask for
/// exactly these, with exactly these sizes.
pub struct Maps {
    pub queue: VecDeque<(usize, usize)>,
    pub fail: bool,
    pub err: Option<String>,
}

impl Mapper for Maps {
    fn map(&mut self, len: usize) -> Option<usize> {
        match self.queue.pop_front() {
            Some((start, size)) => {
                if size != len && self.err.is_none() {
                    self.err = Some(format!(
                        "model maps a region of {len} bytes, heap mapped {size}"
                    ));
                }
                Some(start)
            }
            None => {
                if !self.fail && self.err.is_none() {
                    self.err = Some(format!(
                        "model maps a region of {len} bytes, heap mapped none"
                    ));
                }
                None
            }
        }
    }
}

type Snapshot = Vec<(usize, usize, Vec<(usize, usize, bool, Vec<u8>)>)>;

// ---------------------------------------------------------------------------
// The differential harness
// ---------------------------------------------------------------------------

pub struct Run {
    pub heap: Heap<Pages>,
    pub model: Model,
    pub live: Vec<Live>,
    pub seen_seq: Option<u64>,
    pub next_tag: u8,
    pub fail_maps: bool,
    pub stats: Stats,
}

impl Run {
    pub fn new(policy: Policy) -> Run {
        Run::with_registry(policy, Box::leak(Box::new(Registry::new())))
    }

    /// A run whose heap records its regions in `registry` (a fuzz target
    /// shares one between runs, instead of leaking one each time).
    pub fn with_registry(policy: Policy, registry: &'static Registry) -> Run {
        Run {
            heap: Heap::new(Pages::default(), registry, 1, policy),
            model: Model::new(os::page_size(), policy),
            live: Vec::new(),
            seen_seq: None,
            next_tag: 1,
            fail_maps: false,
            stats: Stats::default(),
        }
    }

    /// Regions the heap created since the last call, in list order.
    pub fn new_regions(&mut self) -> VecDeque<(usize, usize)> {
        let mut q = VecDeque::new();
        let mut max = self.seen_seq;
        for d in self.heap.regions() {
            if Some(d.seq()) > self.seen_seq {
                q.push_back((d.start(), d.size()));
            }
            max = max.max(Some(d.seq()));
        }
        self.seen_seq = max;
        q
    }

    /// Runs `f` on the model, feeding it the regions the heap just mapped.
    pub fn model_op<T>(
        &mut self,
        f: impl FnOnce(&mut Model, &mut dyn Mapper) -> T,
    ) -> Result<T, String> {
        let mut maps = Maps {
            queue: self.new_regions(),
            fail: self.fail_maps,
            err: None,
        };
        let r = f(&mut self.model, &mut maps);
        if let Some(e) = maps.err {
            return Err(e);
        }
        if !maps.queue.is_empty() {
            return Err(format!(
                "heap mapped region(s) {:x?} that the model did not",
                maps.queue
            ));
        }
        Ok(r)
    }

    /// (region index, offset) of the heap block whose payload is `p`.
    pub fn locate(&self, p: usize) -> Result<(usize, usize), String> {
        let b = p.wrapping_sub(super::HEADER);
        self.heap
            .regions()
            .enumerate()
            .find(|(_, d)| d.start() <= b && b < d.start() + d.size())
            .map(|(k, d)| (k, b - d.start()))
            .ok_or_else(|| format!("payload {p:#x} is in no region of the heap"))
    }

    pub fn tag(&mut self) -> u8 {
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        self.next_tag
    }

    pub fn snapshot(&self) -> Snapshot {
        self.heap
            .regions()
            .map(|d| {
                let blocks = self
                    .heap
                    .blocks(d)
                    .map(|b| (b.addr, b.size, b.free, b.name().to_vec()))
                    .collect();
                (d.start(), d.size(), blocks)
            })
            .collect()
    }

    /// The heap's layout in the model's text format.
    pub fn heap_layout(&self) -> String {
        let mut s = String::new();
        for (k, d) in self.heap.regions().enumerate() {
            if k > 0 {
                s.push(' ');
            }
            s.push('[');
            for (i, b) in self.heap.blocks(d).enumerate() {
                if i > 0 {
                    s.push(' ');
                }
                let _ = write!(s, "{}+{}", b.addr - d.start(), b.size);
                s.push(if b.free { 'F' } else { 'U' });
                let name = b.name();
                if !name.is_empty() {
                    let _ = write!(s, "N({})", String::from_utf8_lossy(name));
                }
            }
            s.push(']');
        }
        s
    }

    /// Compares every region and block, the counters, and runs the checker.
    pub fn verify_state(&mut self) -> Result<(), String> {
        if let Err((what, at)) = self.heap.check() {
            return Err(format!("heap.check: {what} at {at:#x}"));
        }
        let mut regions = 0;
        let mut blocks = 0;
        let mut mr = self.model.regions.iter();
        for (k, d) in self.heap.regions().enumerate() {
            regions += 1;
            let Some(m) = mr.next() else {
                return Err(format!("heap has an extra region {k}"));
            };
            if d.start() != m.base || d.size() != m.size {
                return Err(format!(
                    "region {k}: heap {:#x}+{}, model {:#x}+{}",
                    d.start(),
                    d.size(),
                    m.base,
                    m.size
                ));
            }
            let mut mb = m.blocks.iter();
            for (i, b) in self.heap.blocks(d).enumerate() {
                blocks += 1;
                let same = mb.next().is_some_and(|x| {
                    b.addr - d.start() == x.offset
                        && b.size == x.size
                        && b.free == x.free
                        && b.name() == x.name.as_slice()
                });
                if !same {
                    return Err(format!(
                        "region {k} block {i} differs:\n heap  {}\n model {}",
                        self.heap_layout(),
                        self.model.layout()
                    ));
                }
            }
            if mb.next().is_some() {
                return Err(format!("region {k}: model has more blocks"));
            }
        }
        if mr.next().is_some() {
            return Err("model has more regions".into());
        }
        let c = self.heap.counters();
        let want = (
            self.model.in_use(),
            self.model.mapped(),
            self.model.regions_mapped,
            self.model.regions_unmapped,
        );
        let got = (c.in_use, c.mapped, c.regions_mapped, c.regions_unmapped);
        if got != want {
            return Err(format!(
                "counters (in_use, mapped, regions mapped, unmapped): heap {got:?}, model {want:?}"
            ));
        }
        if c.peak_in_use < c.in_use || c.peak_mapped < c.mapped {
            return Err(format!("peak counters below current: {c:?}"));
        }
        let s = &mut self.stats;
        s.max_live = s.max_live.max(self.live.len());
        s.max_regions = s.max_regions.max(regions);
        s.max_blocks = s.max_blocks.max(blocks);
        s.hits = self.model.hits;
        Ok(())
    }

    /// Records a new allocation after checking heap and model agree.
    pub fn finish_alloc(
        &mut self,
        h: Option<usize>,
        m: Option<Pos>,
        zero: Option<usize>,
        align: usize,
    ) -> Result<Option<usize>, String> {
        match (h, m) {
            (None, None) => {
                self.stats.failed_allocs += 1;
                Ok(None)
            }
            (Some(p), None) => Err(format!(
                "heap allocated at {:?}, model fails",
                self.locate(p)?
            )),
            (None, Some(pos)) => Err(format!(
                "heap fails, model allocates at {:?}",
                self.model.place(pos)
            )),
            (Some(p), Some(pos)) => {
                let (hw, mw) = (self.locate(p)?, self.model.place(pos));
                if hw != mw {
                    return Err(format!("heap chose (region, offset) {hw:?}, model {mw:?}"));
                }
                if p % align.max(super::ALIGN) != 0 {
                    return Err(format!("{p:#x} is not aligned to {align}"));
                }
                let usable = self.model.usable(pos);
                let hu = self.heap.usable_size(p).map_err(|e| format!("{e:?}"))?;
                if hu != usable {
                    return Err(format!("usable_size {hu}, model {usable}"));
                }
                if let Some(z) = zero {
                    check_zero(p, z)?;
                }
                let tag = self.tag();
                fill(p, usable, tag);
                self.live.push(Live {
                    p,
                    pos,
                    usable,
                    tag,
                });
                self.stats.allocs += 1;
                Ok(Some(p))
            }
        }
    }

    /// Runs one operation on both sides and compares everything. Returns the
    /// payload an allocating operation produced.
    pub fn step(&mut self, op: &Op) -> Result<Option<usize>, String> {
        self.stats.steps += 1;
        let before = if self.fail_maps {
            Some(self.snapshot())
        } else {
            None
        };
        let out = match *op {
            Op::Malloc(n) => {
                let h = self.heap.malloc(n);
                let m = self.model_op(|m, mp| m.malloc(n, mp))?;
                self.finish_alloc(h, m, None, 1)?
            }
            Op::Calloc(k, n) => {
                let h = self.heap.calloc(k, n);
                let m = self.model_op(|m, mp| m.calloc(k, n, mp))?;
                self.finish_alloc(h, m, Some(k.saturating_mul(n)), 1)?
            }
            Op::Memalign(a, n) => {
                let h = self.heap.memalign(a, n);
                let m = self.model_op(|m, mp| m.memalign(a, n, mp))?;
                self.finish_alloc(h, m, None, a)?
            }
            Op::Named(n, name) => {
                let h = self.heap.malloc_named(n, name.as_bytes());
                let m = self.model_op(|m, mp| m.malloc_named(n, name.as_bytes(), mp))?;
                self.finish_alloc(h, m, None, 1)?
            }
            Op::Free(k) => {
                if self.live.is_empty() {
                    return Ok(None);
                }
                let l = self.live.swap_remove(k % self.live.len());
                check_pattern(l.p, l.usable, l.tag)?;
                self.heap.free(l.p).map_err(|e| format!("free: {e:?}"))?;
                self.model_op(|m, _| m.free(l.pos))?;
                self.stats.frees += 1;
                None
            }
            Op::Realloc(k, n) => {
                if self.live.is_empty() {
                    return Ok(None);
                }
                let k = k % self.live.len();
                let l = self.live[k];
                check_pattern(l.p, l.usable, l.tag)?;
                let h = self
                    .heap
                    .realloc(l.p, n)
                    .map_err(|e| format!("realloc: {e:?}"))?;
                let m = self.model_op(|m, mp| m.realloc(l.pos, n, mp))?;
                match (h, m) {
                    (None, Realloc::Failed) => {
                        // The block and its bytes are untouched.
                        check_pattern(l.p, l.usable, l.tag)?;
                        let u = self.heap.usable_size(l.p).map_err(|e| format!("{e:?}"))?;
                        if u != l.usable {
                            return Err(format!("failed realloc changed usable to {u}"));
                        }
                        self.stats.realloc_failed += 1;
                        None
                    }
                    (Some(q), Realloc::Same(pos) | Realloc::Moved(pos)) => {
                        let (hw, mw) = (self.locate(q)?, self.model.place(pos));
                        if hw != mw {
                            return Err(format!(
                                "realloc: heap result (region, offset) {hw:?}, model {mw:?} ({m:?})"
                            ));
                        }
                        check_pattern(q, l.usable.min(n), l.tag)
                            .map_err(|e| format!("realloc lost the prefix: {e}"))?;
                        let usable = self.model.usable(pos);
                        let hu = self.heap.usable_size(q).map_err(|e| format!("{e:?}"))?;
                        if hu != usable {
                            return Err(format!("usable_size {hu}, model {usable}"));
                        }
                        let tag = self.tag();
                        fill(q, usable, tag);
                        self.live[k] = Live {
                            p: q,
                            pos,
                            usable,
                            tag,
                        };
                        if matches!(m, Realloc::Same(_)) {
                            self.stats.realloc_same += 1;
                        } else {
                            self.stats.realloc_moved += 1;
                        }
                        Some(q)
                    }
                    (h, m) => {
                        return Err(format!("realloc: heap returned {h:x?}, model {m:?}"));
                    }
                }
            }
            Op::SetPolicy(p) => {
                self.heap.set_policy(p);
                self.model.set_policy(p);
                self.stats.policy_switches += 1;
                None
            }
            Op::FailMaps(on) => {
                self.fail_maps = on;
                self.heap.source_mut().fail = on;
                None
            }
        };
        self.verify_state()?;
        // Out of memory changes nothing, model or not.
        let allocating = matches!(
            op,
            Op::Malloc(_) | Op::Calloc(..) | Op::Memalign(..) | Op::Named(..) | Op::Realloc(..)
        );
        if let (Some(before), None, true) = (before, out, allocating) {
            if self.snapshot() != before {
                return Err("a failed operation changed the heap".into());
            }
        }
        Ok(out)
    }

    /// Frees every live block (checking each step) and expects an empty heap.
    pub fn finish(&mut self) -> Result<(), String> {
        self.step(&Op::FailMaps(false))?;
        while !self.live.is_empty() {
            let k = self.live.len() / 2;
            self.step(&Op::Free(k))?;
        }
        if self.heap.regions().next().is_some() || !self.model.regions.is_empty() {
            return Err("regions left after freeing everything".into());
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        format!(
            "policy {:?}, rover {:?}\n  model: {}\n  heap:  {}",
            self.model.policy,
            self.model.rover,
            self.model.layout(),
            self.heap_layout()
        )
    }
}

/// Replays `ops` from a fresh heap; `Err` (with both layouts) on the first
/// discrepancy or panic.
pub fn replay(policy: Policy, ops: &[Op]) -> Result<Run, String> {
    let mut run = Run::new(policy);
    for (i, op) in ops.iter().enumerate() {
        let r = catch_unwind(AssertUnwindSafe(|| run.step(op)));
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("op {i} {op:?}: {e}\n{}", run.describe())),
            Err(_) => return Err(format!("op {i} {op:?}: panicked")),
        }
    }
    Ok(run)
}

/// Shrinks a failing sequence (delta debugging, within `budget`).
pub fn shrink(policy: Policy, mut ops: Vec<Op>, budget: Duration) -> Vec<Op> {
    let start = Instant::now();
    let mut chunk = ops.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        let mut removed = false;
        while i < ops.len() {
            if start.elapsed() > budget {
                return ops;
            }
            let end = (i + chunk).min(ops.len());
            let cand: Vec<Op> = ops[..i].iter().chain(&ops[end..]).cloned().collect();
            if replay(policy, &cand).is_err() {
                ops = cand;
                removed = true;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 && !removed {
            return ops;
        }
        if !removed {
            chunk = chunk.div_ceil(2);
        }
    }
}
