//! Replaying an `ALLOCATOR_TRACE` file on fitalloc's own heap, under one
//! policy or several at once, reading the trace once as a stream.
//!
//! ```text
//!  Records ──> Decoder ──> batch of Steps ──> heap of policy 1 (timed)
//!  (records.rs) pointers    (up to BATCH)  ──> heap of policy 2 (timed) ...
//!               -> slots
//! ```
//!
//! - **Decoding**: a recorded pointer becomes a *slot*, one per live
//!   allocation (a freed slot is reused), so that replaying is a loop over a
//!   batch of steps with no hashing: the time measured is the heap's.
//! - **Replaying**: every heap runs each batch in turn. The trace is read
//!   once (it may be a pipe) and memory is the batch, the slots of live
//!   allocations and the heaps themselves, whatever the trace's length.
//! - **Stopping**: the batch ends at the stop (a mark or an operation); the
//!   rest of the trace is still read and checked, to count its operations.
//! - **Watching**: [`replay_watched`] gives each policy's heap a [`Watch`]
//!   that sees every operation right before and right after the heap runs
//!   it (the timeline samples the counters there, the page records what
//!   changed); [`replay`] watches nothing, at no cost.
//!
//! An operation on a pointer that the trace never returned (a fork child
//! freeing a block of its parent, say) and a recorded operation that failed
//! (returned 0) are skipped and counted. An allocation that succeeded when
//! recorded but fails in the replay is counted too; later operations on that
//! block are then skipped. A trace that ends mid-record is replayed up to its
//! last complete record ([`Summary::cut_short`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use fitalloc::trace::{Header, Op, Record};
use fitalloc::{Counters, Heap, Policy};
use indicatif::ProgressBar;

use crate::layout::Layout;
use crate::pages::{self, Pages};
use crate::records::{Program, Records};

/// Steps decoded before the heaps run them.
pub const BATCH: usize = 1 << 15;

/// One decoded operation, with pointers resolved to slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `malloc(size)` whose block goes to `slot`.
    Malloc { size: u64, slot: u32 },
    /// `calloc(count, size)`.
    Calloc { count: u64, size: u64, slot: u32 },
    /// The memalign family.
    Memalign { align: u64, size: u64, slot: u32 },
    /// `malloc_name(size, the batch's names[name])`.
    Named { size: u64, name: u32, slot: u32 },
    /// `realloc` of the block in `slot`; the result stays in `slot`.
    Realloc { slot: u32, size: u64 },
    /// `free` of the block in `slot`.
    Free { slot: u32 },
    /// An operation on a pointer the trace never returned.
    SkipUnknown,
    /// A recorded operation that failed (returned 0).
    SkipFailed,
    /// `print_memory` / `write_memory` was called.
    Mark,
}

/// Where a replay stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// At the end of the trace.
    End,
    /// Right after the N-th mark record (1-based; 0: before the first
    /// record).
    Mark(u64),
    /// Right after the N-th operation record (marks not counted; 0: before
    /// the first).
    Op(u64),
}

impl Step {
    /// Bytes the program asked for in this operation (a realloc's new
    /// size; 0 for a free, a mark or a skipped operation).
    pub fn requested(&self) -> u64 {
        match *self {
            Step::Malloc { size, .. }
            | Step::Memalign { size, .. }
            | Step::Named { size, .. }
            | Step::Realloc { size, .. } => size,
            Step::Calloc { count, size, .. } => count.saturating_mul(size),
            Step::Free { .. } | Step::SkipUnknown | Step::SkipFailed | Step::Mark => 0,
        }
    }
}

/// Sees one policy's replay operation by operation. Every method has an
/// empty default; `()` watches nothing.
pub trait Watch {
    /// Right before operation `op` (1-based; marks not counted) runs.
    /// `slots` maps slots to payload addresses (0: none).
    fn before(&mut self, _heap: &Heap<Pages>, _op: u64, _step: &Step, _slots: &[usize]) {}
    /// Right after it ran (also when it was skipped or failed).
    fn after(&mut self, _heap: &Heap<Pages>, _op: u64, _step: &Step, _slots: &[usize]) {}
    /// A mark record, after `ops` operations.
    fn mark(&mut self, _ops: u64) {}
}

impl Watch for () {}

/// Two watchers side by side.
impl<A: Watch, B: Watch> Watch for (A, B) {
    fn before(&mut self, heap: &Heap<Pages>, op: u64, step: &Step, slots: &[usize]) {
        self.0.before(heap, op, step, slots);
        self.1.before(heap, op, step, slots);
    }

    fn after(&mut self, heap: &Heap<Pages>, op: u64, step: &Step, slots: &[usize]) {
        self.0.after(heap, op, step, slots);
        self.1.after(heap, op, step, slots);
    }

    fn mark(&mut self, ops: u64) {
        self.0.mark(ops);
        self.1.mark(ops);
    }
}

/// What the whole trace held (also past the stop).
#[derive(Clone, Debug)]
pub struct Summary {
    /// The file header.
    pub header: Header,
    /// The program that wrote it (empty for a version 1 trace).
    pub program: Program,
    /// Operation records (everything but marks).
    pub ops: u64,
    /// Mark records.
    pub marks: u64,
    /// The file ends inside a record (cut short): everything before it was
    /// replayed.
    pub cut_short: bool,
}

/// What one replay under one policy measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The policy.
    pub policy: Policy,
    /// Operation records processed (skipped ones included).
    pub ops: u64,
    /// Operations run on the heap.
    pub replayed: u64,
    /// Operations on pointers the trace never returned.
    pub skipped_unknown: u64,
    /// Recorded operations that had failed.
    pub skipped_failed: u64,
    /// Operations that succeeded when recorded but failed in the replay
    /// (plus later operations on their blocks).
    pub replay_failed: u64,
    /// The heap's counters where the replay stopped.
    pub counters: Counters,
    /// The operation (1-based) after which bytes in use were highest
    /// (first such; 0 if nothing was ever in use). Unlike the counters'
    /// `peak_in_use`, this ignores the moment inside a moving realloc when
    /// both the old and the new block are in use.
    pub peak_op: u64,
    /// Time spent in the replay loop.
    pub nanos: u128,
    /// The layout where the replay stopped, if asked for.
    pub layout: Option<Layout>,
}

impl Outcome {
    /// `mapped_at_peak_in_use / peak_in_use - 1`, if anything was in use.
    pub fn fragmentation(&self) -> Option<f64> {
        let c = &self.counters;
        (c.peak_in_use > 0).then(|| c.mapped_at_peak_in_use as f64 / c.peak_in_use as f64 - 1.0)
    }

    /// Nanoseconds per operation run on the heap.
    pub fn ns_per_op(&self) -> f64 {
        if self.replayed == 0 {
            0.0
        } else {
            self.nanos as f64 / self.replayed as f64
        }
    }
}

/// Replays the trace file at `path`; see [`replay`].
pub fn replay_file(
    path: &Path,
    policies: &[Policy],
    stop: Stop,
    want_layout: bool,
    progress: Option<&ProgressBar>,
) -> Result<(Summary, Vec<Outcome>)> {
    let (s, runs) = replay_file_watched(path, policies, stop, want_layout, progress, |_| ())?;
    Ok((s, runs.into_iter().map(|(o, ())| o).collect()))
}

/// Replays the trace file at `path` with watchers; see [`replay_watched`].
pub fn replay_file_watched<W: Watch>(
    path: &Path,
    policies: &[Policy],
    stop: Stop,
    want_layout: bool,
    progress: Option<&ProgressBar>,
    watch: impl FnMut(Policy) -> W,
) -> Result<(Summary, Vec<(Outcome, W)>)> {
    let file = File::open(path).with_context(|| format!("cannot read trace {}", path.display()))?;
    replay_watched(file, policies, stop, want_layout, progress, watch)
        .with_context(|| format!("{}", path.display()))
}

/// Replays the trace read from `input` under each of `policies` (each from
/// an empty heap) until `stop`, reading the input to its end. Errors if the
/// input is not a trace, a record is bad, the stop is never reached, or a
/// heap reports a misuse (which would mean the trace and the replay
/// disagree). `progress`, if given, moves with the bytes read.
pub fn replay(
    input: impl Read,
    policies: &[Policy],
    stop: Stop,
    want_layout: bool,
    progress: Option<&ProgressBar>,
) -> Result<(Summary, Vec<Outcome>)> {
    let (s, runs) = replay_watched(input, policies, stop, want_layout, progress, |_| ())?;
    Ok((s, runs.into_iter().map(|(o, ())| o).collect()))
}

/// [`replay`], with the watcher `watch(policy)` beside each policy's heap;
/// each outcome comes back with its watcher.
pub fn replay_watched<W: Watch>(
    input: impl Read,
    policies: &[Policy],
    stop: Stop,
    want_layout: bool,
    progress: Option<&ProgressBar>,
    mut watch: impl FnMut(Policy) -> W,
) -> Result<(Summary, Vec<(Outcome, W)>)> {
    let mut records = Records::new(input)?;
    let header = records.header();
    check_page_size(&header)?;
    let mut runs: Vec<Run<W>> = policies.iter().map(|&p| Run::new(p, watch(p))).collect();
    let mut dec = Decoder::default();
    let mut steps = Vec::new();
    let mut count = Counts::default();
    let mut stopped = matches!(stop, Stop::Mark(0) | Stop::Op(0));
    let mut more = true;
    while more {
        steps.clear();
        dec.names.clear();
        more = false;
        for rec in records.by_ref().take(BATCH) {
            let step = dec.step(&rec?)?;
            count.add(&step);
            if !stopped {
                steps.push(step);
                stopped = count.reached(stop, &step);
            }
            more = true;
        }
        for run in &mut runs {
            run.play(&steps, &dec)?;
        }
        if let Some(pb) = progress {
            pb.set_position(records.consumed());
        }
    }
    match stop {
        Stop::Mark(n) if count.marks < n => {
            bail!("the trace has {} mark records, not {n}", count.marks)
        }
        Stop::Op(n) if count.ops < n => bail!("the trace has {} operations, not {n}", count.ops),
        _ => {}
    }
    let summary = Summary {
        header,
        program: records.program().clone(),
        ops: count.ops,
        marks: count.marks,
        cut_short: records.cut_short(),
    };
    let outcomes = runs
        .into_iter()
        .map(|r| r.finish(want_layout))
        .collect::<Result<_>>()?;
    Ok((summary, outcomes))
}

fn check_page_size(h: &Header) -> Result<()> {
    let (page, ours) = (h.page_size as usize, fitalloc::os::page_size());
    if page != ours {
        bail!("the trace was recorded with {page}-byte pages, this machine has {ours}-byte pages");
    }
    Ok(())
}

/// Operation and mark records read so far.
#[derive(Default)]
struct Counts {
    ops: u64,
    marks: u64,
}

impl Counts {
    fn add(&mut self, step: &Step) {
        match step {
            Step::Mark => self.marks += 1,
            _ => self.ops += 1,
        }
    }

    /// `step`, just counted, is where the replay stops.
    fn reached(&self, stop: Stop, step: &Step) -> bool {
        match (stop, step) {
            (Stop::Mark(n), Step::Mark) => self.marks == n,
            (Stop::Op(n), s) if *s != Step::Mark => self.ops == n,
            _ => false,
        }
    }
}

/// Recorded pointers to slots, and the names of the current batch.
#[derive(Default)]
struct Decoder {
    /// Recorded pointer of each live allocation → its slot.
    live: HashMap<u64, u32>,
    /// Slots freed, reused first.
    free: Vec<u32>,
    /// Slots handed out (the heaps' slot tables have this many entries).
    slots: u32,
    /// Names of the batch's `malloc_name` calls.
    names: Vec<[u8; 31]>,
}

impl Decoder {
    /// A slot for the allocation the trace returned as `out`.
    fn take(&mut self, out: u64) -> Result<u32> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = self.slots;
                self.slots = s
                    .checked_add(1)
                    .context("more than 2^32 live allocations")?;
                s
            }
        };
        // If the trace returned a live pointer again, its first block stays
        // allocated (unreachable) until the end of the replay.
        self.live.insert(out, slot);
        Ok(slot)
    }

    /// The step of one record.
    fn step(&mut self, rec: &Record) -> Result<Step> {
        Ok(match rec.op {
            Op::Mark { .. } => Step::Mark,
            _ if rec.out == 0 && !matches!(rec.op, Op::Free { .. }) => Step::SkipFailed,
            Op::Malloc { size } => Step::Malloc {
                size,
                slot: self.take(rec.out)?,
            },
            Op::Calloc { count, size } => Step::Calloc {
                count,
                size,
                slot: self.take(rec.out)?,
            },
            Op::Memalign { align, size } => {
                if !align.is_power_of_two() {
                    bail!("alignment {align} is not a power of two");
                }
                Step::Memalign {
                    align,
                    size,
                    slot: self.take(rec.out)?,
                }
            }
            Op::Named { size, name } => {
                self.names.push(name);
                Step::Named {
                    size,
                    name: (self.names.len() - 1) as u32,
                    slot: self.take(rec.out)?,
                }
            }
            Op::Realloc { ptr, size } => match self.live.remove(&ptr) {
                Some(slot) => {
                    self.live.insert(rec.out, slot);
                    Step::Realloc { slot, size }
                }
                None => Step::SkipUnknown,
            },
            Op::Free { ptr } => match self.live.remove(&ptr) {
                Some(slot) => {
                    self.free.push(slot);
                    Step::Free { slot }
                }
                None => Step::SkipUnknown,
            },
        })
    }
}

/// One policy's heap, its slot table (slot → block address, 0 if none),
/// what it measured and its watcher. Dropping it frees every block still
/// allocated.
struct Run<W: Watch> {
    heap: Heap<Pages>,
    slots: Vec<usize>,
    o: Outcome,
    peak: usize,
    /// Taken by `finish`.
    watch: Option<W>,
}

impl<W: Watch> Run<W> {
    fn new(policy: Policy, watch: W) -> Run<W> {
        Run {
            heap: Heap::new(Pages::take(), &pages::REGISTRY, pages::heap_id(), policy),
            slots: Vec::new(),
            o: Outcome {
                policy,
                ops: 0,
                replayed: 0,
                skipped_unknown: 0,
                skipped_failed: 0,
                replay_failed: 0,
                counters: Counters::default(),
                peak_op: 0,
                nanos: 0,
                layout: None,
            },
            peak: 0,
            watch: Some(watch),
        }
    }

    /// Runs a batch of steps (timed).
    fn play(&mut self, steps: &[Step], dec: &Decoder) -> Result<()> {
        self.slots.resize(dec.slots as usize, 0);
        let start = Instant::now();
        let Some(mut watch) = self.watch.take() else {
            bail!("replay after finish");
        };
        for step in steps {
            if let Step::Mark = step {
                watch.mark(self.o.ops);
                continue;
            }
            self.o.ops += 1;
            watch.before(&self.heap, self.o.ops, step, &self.slots);
            if let Err(e) = self.step(step, &dec.names) {
                self.watch = Some(watch);
                return Err(e);
            }
            watch.after(&self.heap, self.o.ops, step, &self.slots);
            let p = self.heap.counters().in_use;
            if p > self.peak {
                self.peak = p;
                self.o.peak_op = self.o.ops;
            }
        }
        self.o.nanos += start.elapsed().as_nanos();
        self.watch = Some(watch);
        Ok(())
    }

    /// The outcome, with the layout if asked for, and the watcher; frees
    /// every block (not timed), so a cleanup failure is reported.
    fn finish(mut self, want_layout: bool) -> Result<(Outcome, W)> {
        // A broken invariant is fitalloc's bug, never the trace's: a panic
        // (debug builds, tests and fuzz targets only; O(heap)).
        if cfg!(debug_assertions) {
            let check = self.heap.check();
            assert!(
                check.is_ok(),
                "{:?}: {check:?} after the replay",
                self.o.policy
            );
        }
        self.o.counters = self.heap.counters();
        if want_layout {
            self.o.layout = Some(Layout::of_heap(&self.heap));
        }
        for p in std::mem::take(&mut self.slots) {
            if p != 0 {
                self.heap
                    .free(p)
                    .map_err(|m| anyhow!("cleanup: {} at {p:#x}", m.what()))?;
            }
        }
        let watch = self.watch.take().expect("finish once");
        Ok((self.o.clone(), watch))
    }

    #[inline]
    fn step(&mut self, step: &Step, names: &[[u8; 31]]) -> Result<()> {
        let heap = &mut self.heap;
        let (r, slot) = match *step {
            Step::Malloc { size, slot } => (heap.malloc(size as usize), slot),
            Step::Calloc { count, size, slot } => {
                (heap.calloc(count as usize, size as usize), slot)
            }
            Step::Memalign { align, size, slot } => {
                (heap.memalign(align as usize, size as usize), slot)
            }
            Step::Named { size, name, slot } => {
                let name = &names[name as usize];
                let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                (heap.malloc_named(size as usize, &name[..len]), slot)
            }
            Step::Realloc { slot, size } => return self.realloc(slot, size),
            Step::Free { slot } => return self.free(slot),
            Step::SkipUnknown => {
                self.o.skipped_unknown += 1;
                return Ok(());
            }
            Step::SkipFailed => {
                self.o.skipped_failed += 1;
                return Ok(());
            }
            Step::Mark => return Ok(()),
        };
        match r {
            Some(p) => self.slots[slot as usize] = p,
            None => self.o.replay_failed += 1,
        }
        self.o.replayed += 1;
        Ok(())
    }

    fn realloc(&mut self, slot: u32, size: u64) -> Result<()> {
        let p = self.slots[slot as usize];
        if p == 0 {
            self.o.replay_failed += 1;
            return Ok(());
        }
        match self.heap.realloc(p, size as usize) {
            Ok(Some(q)) => self.slots[slot as usize] = q,
            Ok(None) => self.o.replay_failed += 1,
            Err(m) => bail!("operation {}: realloc: {} at {p:#x}", self.o.ops, m.what()),
        }
        self.o.replayed += 1;
        Ok(())
    }

    fn free(&mut self, slot: u32) -> Result<()> {
        let p = std::mem::take(&mut self.slots[slot as usize]);
        if p == 0 {
            self.o.replay_failed += 1;
            return Ok(());
        }
        self.heap
            .free(p)
            .map_err(|m| anyhow!("operation {}: free: {} at {p:#x}", self.o.ops, m.what()))?;
        self.o.replayed += 1;
        Ok(())
    }
}

impl<W: Watch> Drop for Run<W> {
    fn drop(&mut self) {
        // After an error, or after `finish` (then there is nothing left).
        for &p in self.slots.iter().filter(|&&p| p != 0) {
            let _ = self.heap.free(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fitalloc::trace::{Record, RECORD, VERSION};

    fn file(ops: &[(Op, u64)]) -> Vec<u8> {
        let h = Header {
            version: VERSION,
            page_size: fitalloc::os::page_size() as u32,
            pid: 1,
            parent: 0,
            fork_child: false,
            program_units: 0,
        };
        let mut f = h.encode().to_vec();
        for &(op, out) in ops {
            let mut buf = [0u8; 2 * RECORD];
            let n = Record { op, thread: 0, out }.encode(&mut buf);
            f.extend_from_slice(&buf[..n]);
        }
        f
    }

    fn one(f: &[u8], policy: Policy, stop: Stop, layout: bool) -> Result<(Summary, Outcome)> {
        let (s, mut o) = replay(f, &[policy], stop, layout, None)?;
        Ok((s, o.pop().unwrap()))
    }

    #[test]
    fn resolves_skips_and_stops() {
        let mut name = [0u8; 31];
        name[..3].copy_from_slice(b"abc");
        let f = file(&[
            (Op::Malloc { size: 100 }, 0x1000),
            (Op::Named { size: 10, name }, 0x2000),
            (Op::Free { ptr: 0x9999 }, 0),
            (Op::Malloc { size: 1 << 50 }, 0),
            (Op::Mark { number: 1 }, 0),
            (
                Op::Realloc {
                    ptr: 0x1000,
                    size: 5000,
                },
                0x3000,
            ),
            (Op::Free { ptr: 0x3000 }, 0),
            (Op::Free { ptr: 0x3000 }, 0),
        ]);
        let (s, o) = one(&f, Policy::FirstFit, Stop::End, true).unwrap();
        assert_eq!((s.ops, s.marks, s.cut_short), (7, 1, false));
        assert_eq!(o.ops, 7);
        assert_eq!(
            (o.skipped_unknown, o.skipped_failed, o.replay_failed),
            (2, 1, 0)
        );
        assert_eq!(o.replayed, 4);
        let l = o.layout.unwrap();
        assert_eq!(l.regions.len(), 1);
        assert!(l.regions[0]
            .blocks
            .iter()
            .any(|b| b.used && b.name == "abc"));
        assert_eq!(o.peak_op, 5, "the realloc to 5000 bytes");
        let (s, at) = one(&f, Policy::BestFit, Stop::Mark(1), true).unwrap();
        assert_eq!(at.ops, 4);
        assert_eq!(s.ops, 7, "the rest of the trace is counted");
        assert_eq!(at.layout.unwrap().block_count(), 3, "two used and the rest");
        assert!(one(&f, Policy::BestFit, Stop::Mark(2), false).is_err());
        let (_, at) = one(&f, Policy::NextFit, Stop::Op(1), false).unwrap();
        assert_eq!(at.counters.in_use, 128);
        let (_, at) = one(&f, Policy::NextFit, Stop::Op(0), true).unwrap();
        assert_eq!((at.ops, at.layout.unwrap().regions.len()), (0, 0));
    }

    #[test]
    fn all_policies_in_one_pass_match_one_at_a_time() {
        let mut ops = Vec::new();
        for i in 0..3 * BATCH as u64 {
            let p = 0x1000 + 16 * (i % 500);
            if (i / 500) % 2 == 0 {
                ops.push((Op::Malloc { size: 24 + i % 300 }, p));
            } else {
                ops.push((Op::Free { ptr: p }, 0));
            }
        }
        let f = file(&ops);
        let (_, all) = replay(&f[..], &Policy::ALL, Stop::End, true, None).unwrap();
        for (o, &p) in all.iter().zip(&Policy::ALL) {
            let (_, alone) = one(&f, p, Stop::End, true).unwrap();
            assert_eq!(o.counters, alone.counters, "{p:?}");
            assert_eq!((o.peak_op, o.replayed), (alone.peak_op, alone.replayed));
            assert_eq!(o.layout, alone.layout);
        }
    }

    #[test]
    fn slots_are_reused() {
        let mut d = Decoder::default();
        let rec = |op, out| Record { op, thread: 0, out };
        for round in 0..10 {
            d.step(&rec(Op::Malloc { size: 1 }, 0x10)).unwrap();
            d.step(&rec(Op::Malloc { size: 1 }, 0x20)).unwrap();
            d.step(&rec(Op::Free { ptr: 0x10 }, 0)).unwrap();
            d.step(&rec(Op::Free { ptr: 0x20 }, 0)).unwrap();
            assert_eq!(d.slots, 2, "round {round}");
        }
    }

    #[test]
    fn cut_short_replays_what_is_complete() {
        let f = file(&[
            (Op::Malloc { size: 1 }, 0x10),
            (Op::Malloc { size: 1 }, 0x20),
        ]);
        let (s, o) = one(&f[..f.len() - 1], Policy::FirstFit, Stop::End, false).unwrap();
        assert!(s.cut_short);
        assert_eq!((s.ops, o.replayed), (1, 1));
    }

    #[test]
    fn bad_input() {
        let err = |f: &[u8]| one(f, Policy::FirstFit, Stop::End, false).unwrap_err();
        assert!(err(b"hello").to_string().contains("bad magic"));
        let mut f = file(&[(Op::Malloc { size: 1 }, 0x10)]);
        f[RECORD] = 42;
        let e = format!("{:#}", err(&f));
        assert!(e.contains("unknown record kind (record at byte 32)"), "{e}");
        let f = file(&[(Op::Memalign { align: 3, size: 1 }, 0x10)]);
        assert!(err(&f).to_string().contains("not a power of two"));
    }
}
