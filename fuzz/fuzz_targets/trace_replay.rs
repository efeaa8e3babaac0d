//! Arbitrary bytes as a trace file (what `fitalloc replay FILE` and
//! `fitalloc map --trace FILE` read), replayed under every policy at once.
//!
//! An `Err` is the command's clean error path (one `fitalloc: error:` line);
//! a panic, an abort, a sanitizer report or a timeout is a bug. On top of
//! the replay's own checks (in these debug-assertion builds, the whole heap
//! is checked after each replay), each outcome's layout must agree with the
//! heap's counters.
//!
//! Byte 28 of the header (reserved, 0 in real traces) chooses where the
//! replay stops: 0 the end, else after mark 1-3 or after operation N.
//!
//! Limit of the harness: a trace asking for more than [`LIMIT`] bytes at
//! once (but less than the 64 GiB that fail at once) is not replayed. Such
//! requests are real, but they would make the fuzzer's memory (4 heaps
//! alive, calloc and realloc touching what they get), not the code, the
//! limit.
#![no_main]

use fitalloc::trace::{Op, Reader};
use fitalloc::Policy;
use fitalloc_cli::replay::{replay, Stop};
use libfuzzer_sys::fuzz_target;

/// Largest request replayed.
const LIMIT: u64 = 1 << 20;
/// Requests from here on fail without mapping anything (a block of 2^32
/// units or more).
const HUGE: u64 = 1 << 36;

fn within_limits(data: &[u8]) -> bool {
    let ok = |n: u64| n <= LIMIT || n >= HUGE;
    let Ok((_, records)) = Reader::new(data) else {
        return true;
    };
    records.map_while(Result::ok).all(|r| match r.op {
        Op::Malloc { size } | Op::Named { size, .. } | Op::Realloc { size, .. } => ok(size),
        Op::Calloc { count, size } => ok(count.saturating_mul(size)),
        Op::Memalign { align, size } => ok(align) && ok(size),
        Op::Free { .. } | Op::Mark { .. } => true,
    })
}

fn stop(data: &[u8]) -> Stop {
    match data.get(28).copied().unwrap_or(0) {
        0 => Stop::End,
        b @ 1..=3 => Stop::Mark(b as u64),
        b => Stop::Op((b - 4) as u64),
    }
}

fuzz_target!(|data: &[u8]| {
    if !within_limits(data) {
        return;
    }
    let Ok((summary, outcomes)) = replay(data, &Policy::ALL, stop(data), true, None) else {
        return;
    };
    assert!(summary.ops >= outcomes[0].ops);
    for o in &outcomes {
        let layout = o.layout.as_ref().expect("asked for");
        assert_eq!(layout.in_use(), o.counters.in_use as u64, "{:?}", o.policy);
        assert_eq!(layout.mapped(), o.counters.mapped as u64, "{:?}", o.policy);
        assert_eq!(o.ops, outcomes[0].ops);
    }
});
