//! Random operations on a heap of every policy, with the heap checker after
//! every operation and a byte pattern verified in every live block.

use fitalloc::os::OsPages;
use fitalloc::registry::Registry;
use fitalloc::{Heap, Policy};

fn registry() -> &'static Registry {
    Box::leak(Box::new(Registry::new()))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn fill(p: usize, len: usize, tag: u8) {
    // SAFETY: the test owns `len` usable bytes at `p`.
    unsafe { std::ptr::write_bytes(p as *mut u8, tag, len) }
}

fn verify(p: usize, len: usize, tag: u8) {
    // SAFETY: as in `fill`.
    let s = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
    assert!(
        s.iter().all(|&b| b == tag),
        "block {p:#x} lost its contents"
    );
}

fn run(policy: Policy, seed: u64, ops: usize) {
    let mut heap = Heap::new(OsPages, registry(), 1, policy);
    let mut rng = Rng(seed);
    let mut live: Vec<(usize, usize, u8)> = Vec::new();
    for i in 0..ops {
        let r = rng.below(100);
        let size = if rng.below(10) == 0 {
            rng.below(20000)
        } else {
            rng.below(300)
        } as usize;
        let tag = (i % 251) as u8;
        if r < 45 || live.is_empty() {
            let p = match rng.below(4) {
                0 => heap.memalign(1 << (4 + rng.below(8)), size).unwrap(),
                1 => heap.calloc(1, size).unwrap(),
                _ => heap.malloc(size).unwrap(),
            };
            assert_eq!(p % 16, 0);
            fill(p, size, tag);
            live.push((p, size, tag));
        } else if r < 85 {
            let k = rng.below(live.len() as u64) as usize;
            let (p, s, t) = live.swap_remove(k);
            verify(p, s, t);
            heap.free(p).unwrap();
        } else {
            let k = rng.below(live.len() as u64) as usize;
            let (p, s, t) = live[k];
            verify(p, s, t);
            let q = heap.realloc(p, size).unwrap().unwrap();
            verify(q, s.min(size), t);
            fill(q, size, tag);
            live[k] = (q, size, tag);
        }
        if let Err((what, at)) = heap.check() {
            panic!("{policy:?} op {i}: {what} at {at:#x}");
        }
    }
    for (p, s, t) in live.drain(..) {
        verify(p, s, t);
        heap.free(p).unwrap();
        heap.check().unwrap();
    }
    assert_eq!(heap.regions().count(), 0, "regions left after freeing all");
}

#[test]
fn random_ops_every_policy() {
    for p in Policy::ALL {
        for seed in 1..=4u64 {
            run(p, seed * 0x9E37_79B9 + p as u64, 20_000);
        }
    }
}
