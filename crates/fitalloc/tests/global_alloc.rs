//! `FitAlloc` installed as this test binary's global allocator: std
//! collections, threads, large `Vec` growth and over-aligned layouts, with
//! the heap checker run afterwards.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap};
use std::sync::{mpsc, Arc, Mutex};

use fitalloc::FitAlloc;

#[global_allocator]
static GLOBAL: FitAlloc = FitAlloc::new();

fn checked() {
    if let Err((what, at)) = GLOBAL.check() {
        panic!("heap check failed: {what} at {at:#x}");
    }
}

#[test]
fn collections() {
    let mut m: HashMap<String, Vec<u32>> = HashMap::new();
    for i in 0..20_000u32 {
        m.entry(format!("key{}", i % 3000)).or_default().push(i);
    }
    assert_eq!(m.len(), 3000);
    assert_eq!(m["key7"].len(), 7);
    let b: BTreeMap<u32, String> = (0..10_000).map(|i| (i, i.to_string())).collect();
    assert_eq!(b[&9999], "9999");
    let mut s = String::new();
    for i in 0..10_000 {
        s.push_str(&i.to_string());
    }
    assert_eq!(s.len(), 38890);
    drop(m);
    checked();
}

#[test]
fn large_vec_growth() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..4_000_000u64 {
        v.push(i);
    }
    assert_eq!(v.iter().sum::<u64>(), 4_000_000 * 3_999_999 / 2);
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v, (0..10).collect::<Vec<_>>());
    checked();
}

#[test]
fn threads_and_cross_thread_frees() {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..5_000usize {
                    tx.send(vec![t as u8; 1 + (i * 37) % 2000]).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let shared = Arc::new(Mutex::new(Vec::new()));
    let mut n = 0;
    for v in rx {
        assert!(v.iter().all(|&b| b == v[0]), "a block lost its contents");
        n += 1;
        if n % 7 == 0 {
            shared.lock().unwrap().push(v);
        }
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(n, 20_000);
    checked();
}

#[test]
fn over_aligned_layouts() {
    let mut blocks = Vec::new();
    for shift in 4..=16 {
        let align = 1usize << shift;
        for size in [1, 17, 100, 4096, 70_000] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: the layout has a non-zero size; freed below.
            let p = unsafe { GLOBAL.alloc(layout) };
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "alignment {align}");
            // SAFETY: `p` holds `size` bytes.
            unsafe { std::ptr::write_bytes(p, 0x5a, size) };
            blocks.push((p, layout));
        }
    }
    checked();
    for (p, layout) in blocks.iter_mut() {
        // SAFETY: `p` was allocated with `layout`; the new size is non-zero.
        let q = unsafe { GLOBAL.realloc(*p, *layout, layout.size() * 3) };
        assert!(!q.is_null());
        assert_eq!(q as usize % layout.align(), 0, "realloc keeps alignment");
        // SAFETY: the first `size` bytes were preserved by realloc.
        let kept = unsafe { std::slice::from_raw_parts(q, layout.size()) };
        assert!(kept.iter().all(|&b| b == 0x5a));
        *p = q;
        *layout = Layout::from_size_align(layout.size() * 3, layout.align()).unwrap();
    }
    for (p, layout) in blocks {
        // SAFETY: allocated above with this layout.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
    let zl = Layout::from_size_align(5000, 256).unwrap();
    // SAFETY: non-zero size; freed below.
    let z = unsafe { GLOBAL.alloc_zeroed(zl) };
    // SAFETY: `z` holds 5000 bytes.
    assert!(unsafe { std::slice::from_raw_parts(z, 5000) }
        .iter()
        .all(|&b| b == 0));
    // SAFETY: allocated above with `zl`.
    unsafe { GLOBAL.dealloc(z, zl) };
    checked();
}

#[test]
fn dump_lists_the_heap() {
    let keep = vec![1u8; 1000];
    let mut text = String::new();
    // `text` grows while the heap is locked if written directly, so render
    // into a fixed buffer first.
    let mut buf = vec![0u8; 1 << 20];
    let mut w = fitalloc::fmt::SliceWriter::new(&mut buf);
    GLOBAL.write_memory(&mut w).unwrap();
    assert!(!w.overflowed);
    text.push_str(std::str::from_utf8(w.bytes()).unwrap());
    assert!(text.starts_with("-- Current Memory State --\n"));
    assert!(text.contains("[REGION 0x"));
    assert!(text.contains("[USED] ''"));
    let c = GLOBAL.counters();
    assert!(c.in_use >= 1000 && c.mapped >= c.in_use);
    drop(keep);
}
