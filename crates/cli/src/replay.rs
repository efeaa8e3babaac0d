//! Loading an `ALLOCATOR_TRACE` file and replaying it on fitalloc's own heap.
//!
//! Loading decodes every record once and resolves recorded pointers to
//! *slots* (one per allocation the trace made), so that replaying is a loop
//! over a vector with no hashing: the time measured is the heap's.
//!
//! An operation on a pointer that the trace never returned (a fork child
//! freeing a block of its parent, say) and a recorded operation that failed
//! (returned 0) are skipped and counted. An allocation that succeeded when
//! recorded but fails in the replay is counted too; later operations on that
//! block are then skipped.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use fitalloc::cache::CachedPages;
use fitalloc::os::PageSource;
use fitalloc::registry::Registry;
use fitalloc::trace::{Header, Op, Reader, RECORD};
use fitalloc::{Counters, Heap, Policy};
use indicatif::ProgressBar;

use crate::layout::Layout;

/// One decoded operation, with pointers resolved to slots.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// `malloc(size)` whose block goes to `slot`.
    Malloc { size: u64, slot: u32 },
    /// `calloc(count, size)`.
    Calloc { count: u64, size: u64, slot: u32 },
    /// The memalign family.
    Memalign { align: u64, size: u64, slot: u32 },
    /// `malloc_name(size, names[name])`.
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

/// A decoded trace.
pub struct Trace {
    /// The file header.
    pub header: Header,
    /// Every record in file order.
    pub steps: Vec<Step>,
    /// The names of `malloc_name` calls.
    pub names: Vec<[u8; 31]>,
    /// Number of slots (allocations) the steps refer to.
    pub slots: usize,
    /// Operation records (everything but marks).
    pub ops: u64,
    /// Mark records.
    pub marks: u64,
}

impl Trace {
    /// Reads and decodes a trace file; errors say what is wrong and where.
    pub fn load(path: &Path) -> Result<Trace> {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read trace {}", path.display()))?;
        Trace::decode(&data).with_context(|| format!("{}", path.display()))
    }

    /// Decodes the bytes of a trace file.
    pub fn decode(data: &[u8]) -> Result<Trace> {
        if data.is_empty() {
            bail!(
                "empty file: the traced process wrote no trace (did it end with _exit, \
                 or exec another program, before its trace buffer was written?)"
            );
        }
        let (header, mut reader) = Reader::new(data).map_err(|e| anyhow!("{e}"))?;
        let page = header.page_size as usize;
        if page != fitalloc::os::page_size() {
            bail!(
                "the trace was recorded with {page}-byte pages, this machine has {}-byte pages",
                fitalloc::os::page_size()
            );
        }
        let mut t = Trace {
            header,
            steps: Vec::with_capacity(data.len() / RECORD),
            names: Vec::new(),
            slots: 0,
            ops: 0,
            marks: 0,
        };
        let mut live: HashMap<u64, u32> = HashMap::new();
        loop {
            let at = reader.position();
            let Some(rec) = reader.next() else { break };
            let rec = rec.map_err(|e| anyhow!("{e} (record at byte {at})"))?;
            let mut new_slot = |out: u64, live: &mut HashMap<u64, u32>| -> Result<u32> {
                let slot = u32::try_from(t.slots).context("more than 2^32 allocations")?;
                t.slots += 1;
                live.insert(out, slot);
                Ok(slot)
            };
            let step = match rec.op {
                Op::Mark { .. } => Step::Mark,
                _ if rec.out == 0 && !matches!(rec.op, Op::Free { .. }) => Step::SkipFailed,
                Op::Malloc { size } => Step::Malloc {
                    size,
                    slot: new_slot(rec.out, &mut live)?,
                },
                Op::Calloc { count, size } => Step::Calloc {
                    count,
                    size,
                    slot: new_slot(rec.out, &mut live)?,
                },
                Op::Memalign { align, size } => {
                    if !align.is_power_of_two() {
                        bail!("record at byte {at}: alignment {align} is not a power of two");
                    }
                    Step::Memalign {
                        align,
                        size,
                        slot: new_slot(rec.out, &mut live)?,
                    }
                }
                Op::Named { size, name } => {
                    let index = u32::try_from(t.names.len()).context("too many names")?;
                    t.names.push(name);
                    Step::Named {
                        size,
                        name: index,
                        slot: new_slot(rec.out, &mut live)?,
                    }
                }
                Op::Realloc { ptr, size } => match live.remove(&ptr) {
                    Some(slot) => {
                        live.insert(rec.out, slot);
                        Step::Realloc { slot, size }
                    }
                    None => Step::SkipUnknown,
                },
                Op::Free { ptr } => match live.remove(&ptr) {
                    Some(slot) => Step::Free { slot },
                    None => Step::SkipUnknown,
                },
            };
            match step {
                Step::Mark => t.marks += 1,
                _ => t.ops += 1,
            }
            t.steps.push(step);
        }
        Ok(t)
    }
}

/// Where a replay stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// At the end of the trace.
    End,
    /// Right after the N-th mark record (1-based).
    Mark(u64),
    /// Right after the N-th operation record (marks not counted; 0: before
    /// the first).
    Op(u64),
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

/// How often the progress bar moves (operations).
const TICK: u64 = 1 << 16;

/// Replays `trace` under `policy` on a fresh registry and heap until `stop`.
/// Errors if the stop is never reached or the heap reports a misuse (which
/// would mean the trace and the replay disagree).
pub fn replay(
    trace: &Trace,
    policy: Policy,
    stop: Stop,
    want_layout: bool,
    progress: Option<&ProgressBar>,
) -> Result<Outcome> {
    let reg: &'static Registry = Box::leak(Box::new(Registry::new()));
    let mut heap = Heap::new(CachedPages::new(), reg, 1, policy);
    let mut slots = vec![0usize; trace.slots];
    let mut o = Outcome {
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
    };
    let mut marks = 0u64;
    let mut peak = 0usize;
    let mut reached = stop == Stop::End || stop == Stop::Op(0);
    let start = Instant::now();
    if stop != Stop::Op(0) {
        for step in &trace.steps {
            if let Step::Mark = step {
                marks += 1;
                if stop == Stop::Mark(marks) {
                    reached = true;
                    break;
                }
                continue;
            }
            o.ops += 1;
            run_step(&mut heap, trace, &mut slots, step, &mut o)?;
            let p = heap.counters().in_use;
            if p > peak {
                peak = p;
                o.peak_op = o.ops;
            }
            if let Some(pb) = progress {
                if o.ops.is_multiple_of(TICK) {
                    pb.set_position(o.ops);
                }
            }
            if stop == Stop::Op(o.ops) {
                reached = true;
                break;
            }
        }
    }
    o.nanos = start.elapsed().as_nanos();
    if let Some(pb) = progress {
        pb.set_position(o.ops);
    }
    if !reached {
        match stop {
            Stop::Mark(n) => bail!("the trace has {marks} mark records, not {n}"),
            Stop::Op(n) => bail!("the trace has {} operations, not {n}", o.ops),
            Stop::End => unreachable!(),
        }
    }
    o.counters = heap.counters();
    if want_layout {
        o.layout = Some(Layout::of_heap(&heap));
    }
    // Give the memory back before the next policy (not timed).
    for &p in slots.iter().filter(|&&p| p != 0) {
        heap.free(p)
            .map_err(|m| anyhow!("cleanup: {} at {p:#x}", m.what()))?;
    }
    Ok(o)
}

#[inline]
fn run_step<S: PageSource>(
    heap: &mut Heap<S>,
    trace: &Trace,
    slots: &mut [usize],
    step: &Step,
    o: &mut Outcome,
) -> Result<()> {
    let fresh = |r: Option<usize>, slot: u32, slots: &mut [usize], o: &mut Outcome| {
        match r {
            Some(p) => slots[slot as usize] = p,
            None => o.replay_failed += 1,
        }
        o.replayed += 1;
    };
    match *step {
        Step::Malloc { size, slot } => fresh(heap.malloc(size as usize), slot, slots, o),
        Step::Calloc { count, size, slot } => {
            fresh(heap.calloc(count as usize, size as usize), slot, slots, o)
        }
        Step::Memalign { align, size, slot } => {
            let r = usize::try_from(align)
                .ok()
                .and_then(|a| heap.memalign(a, size as usize));
            fresh(r, slot, slots, o)
        }
        Step::Named { size, name, slot } => {
            let name = &trace.names[name as usize];
            let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            fresh(
                heap.malloc_named(size as usize, &name[..len]),
                slot,
                slots,
                o,
            )
        }
        Step::Realloc { slot, size } => {
            let p = slots[slot as usize];
            if p == 0 {
                o.replay_failed += 1;
                return Ok(());
            }
            match heap.realloc(p, size as usize) {
                Ok(Some(q)) => slots[slot as usize] = q,
                Ok(None) => o.replay_failed += 1,
                Err(m) => bail!("operation {}: realloc: {} at {p:#x}", o.ops, m.what()),
            }
            o.replayed += 1;
        }
        Step::Free { slot } => {
            let p = std::mem::take(&mut slots[slot as usize]);
            if p == 0 {
                o.replay_failed += 1;
                return Ok(());
            }
            heap.free(p)
                .map_err(|m| anyhow!("operation {}: free: {} at {p:#x}", o.ops, m.what()))?;
            o.replayed += 1;
        }
        Step::SkipUnknown => o.skipped_unknown += 1,
        Step::SkipFailed => o.skipped_failed += 1,
        Step::Mark => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fitalloc::trace::{Record, VERSION};

    fn file(ops: &[(Op, u64)]) -> Vec<u8> {
        let h = Header {
            version: VERSION,
            page_size: fitalloc::os::page_size() as u32,
            pid: 1,
            parent: 0,
        };
        let mut f = h.encode().to_vec();
        for &(op, out) in ops {
            let mut buf = [0u8; 2 * RECORD];
            let n = Record { op, thread: 0, out }.encode(&mut buf);
            f.extend_from_slice(&buf[..n]);
        }
        f
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
        let t = Trace::decode(&f).unwrap();
        assert_eq!((t.ops, t.marks, t.slots), (7, 1, 2));
        let o = replay(&t, Policy::FirstFit, Stop::End, true, None).unwrap();
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
        let at = replay(&t, Policy::BestFit, Stop::Mark(1), true, None).unwrap();
        assert_eq!(at.ops, 4);
        assert_eq!(at.layout.unwrap().block_count(), 3, "two used and the rest");
        assert!(replay(&t, Policy::BestFit, Stop::Mark(2), false, None).is_err());
        let at = replay(&t, Policy::NextFit, Stop::Op(1), false, None).unwrap();
        assert_eq!(at.counters.in_use, 128);
        assert_eq!(o.peak_op, 5, "the realloc to 5000 bytes");
    }

    #[test]
    fn bad_input() {
        assert!(Trace::decode(b"hello").is_err());
        let mut f = file(&[(Op::Malloc { size: 1 }, 0x10)]);
        f.truncate(f.len() - 1);
        let e = Trace::decode(&f).err().unwrap().to_string();
        assert!(e.contains("ends mid-record"), "{e}");
    }
}
