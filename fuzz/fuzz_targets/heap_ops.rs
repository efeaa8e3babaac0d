//! Arbitrary bytes as a sequence of heap operations, run on the real heap
//! and on the reference model of ARCHITECTURE.md §3 side by side: the
//! model test's driver (`crates/fitalloc/tests/common/run.rs`), which after
//! every operation compares the chosen block, the whole layout, the usable
//! sizes and the counters, verifies every block's contents, and runs the
//! heap checker. Any disagreement or broken invariant panics.
//!
//! Byte 0 picks the policy (and whether the heap runs in check mode), then
//! each 4 bytes are one operation: a kind and 3 bytes of argument. Sizes are
//! kept below 2 MiB (the harness' time and memory, not the code, are the
//! limit).
#![no_main]

#[path = "../../crates/fitalloc/tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::run::{Op, Run};
use fitalloc::registry::Registry;
use fitalloc::Policy;
use libfuzzer_sys::fuzz_target;

static REGISTRY: Registry = Registry::new();

const NAMES: [&str; 4] = ["", "a", "thirty-one bytes of name, exact", "a name longer than thirty-one bytes"];

/// A size from 3 argument bytes: mostly small, sometimes a few pages, now
/// and then a large region's worth (every byte of every block is written and
/// verified, so sizes set the speed).
fn size(a: [u8; 3]) -> usize {
    let v = u32::from_le_bytes([a[0], a[1], a[2], 0]) as usize;
    match a[2] {
        0..=191 => v % 600,
        192..=254 => v % 20_000,
        255 => v % (1 << 20) + (1 << 20),
    }
}

fn op(chunk: &[u8]) -> Op {
    let k = chunk[0];
    let a = [chunk[1], chunk[2], chunk[3]];
    let n = u32::from_le_bytes([a[0], a[1], a[2], 0]) as usize;
    match k % 16 {
        0..=4 => Op::Malloc(size(a)),
        5 => Op::Calloc(1 + (a[0] % 8) as usize, size([a[1], a[2], 0]) / 4),
        6 => Op::Memalign(1 << (a[0] % 14), size([a[1], a[2], 0])),
        7 => Op::Named(size([a[0], a[1], 0]), NAMES[(a[2] % 4) as usize]),
        8..=11 => Op::Free(n),
        12 | 13 => Op::Realloc(n % 1024, size([a[1], a[2], a[0]])),
        14 => Op::SetPolicy(Policy::ALL[(a[0] % 4) as usize]),
        _ => Op::FailMaps(a[0] & 1 == 1),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let mut run = Run::with_registry(Policy::ALL[(head % 4) as usize], &REGISTRY);
    run.heap.set_check(head & 4 != 0);
    for (i, chunk) in rest.chunks_exact(4).enumerate() {
        let op = op(chunk);
        if let Err(e) = run.step(&op) {
            panic!("op {i} {op:?}: {e}\n{}", run.describe());
        }
    }
    if let Err(e) = run.finish() {
        panic!("freeing everything: {e}\n{}", run.describe());
    }
});
