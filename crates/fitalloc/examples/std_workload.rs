//! A real std workload on fitalloc as the global allocator: collections,
//! strings and threads, then the heap in the `print_memory` format.
//!
//! Run: `cargo run --release -p fitalloc --example std_workload`
//! (set `ALLOCATOR_ALGORITHM=best_fit` etc. to change the policy).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;

use fitalloc::FitAlloc;

#[global_allocator]
static GLOBAL: FitAlloc = FitAlloc::new();

fn main() {
    // Word counts over generated text.
    let text: String = (0..50_000)
        .map(|i| ["alpha", "beta", "gamma", "delta"][i % 4].repeat(1 + i % 3))
        .collect::<Vec<_>>()
        .join(" ");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in text.split(' ') {
        *counts.entry(w).or_default() += 1;
    }
    let sorted: BTreeMap<_, _> = counts.into_iter().collect();

    // Threads handing buffers to each other.
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    tx.send(vec![t; 16 + i % 500]).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let received: usize = rx.iter().map(|v| v.len()).sum();
    for w in workers {
        w.join().unwrap();
    }

    println!("distinct words: {}", sorted.len());
    println!("bytes received from threads: {received}");
    let c = GLOBAL.counters();
    println!(
        "policy {}: {} bytes in use (peak {}), {} mapped (peak {}), {} regions mapped",
        GLOBAL.policy().name(),
        c.in_use,
        c.peak_in_use,
        c.mapped,
        c.peak_mapped,
        c.regions_mapped
    );
    GLOBAL.check().expect("heap check");
    // What is still allocated: std's buffers and the data above.
    GLOBAL.print_memory();
}
