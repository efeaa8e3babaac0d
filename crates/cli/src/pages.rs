//! Where replay heaps get their memory from, so that replaying many traces
//! in one process (a fuzz target, a test suite) does not leak.
//!
//! A [`Heap`](fitalloc::Heap) needs a registry that lives for ever, and it
//! leaves its page source's cached spans mapped when it is dropped. So every
//! replay heap of the process shares one registry ([`REGISTRY`]), and takes
//! its span cache from a per-thread pool ([`Pages`]) that gets it back when
//! the heap is dropped: the memory kept is bounded by the heaps alive at
//! once, not by the number of replays.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use fitalloc::cache::CachedPages;
use fitalloc::os::PageSource;
use fitalloc::registry::Registry;

/// The registry of every replay heap of this process.
pub static REGISTRY: Registry = Registry::new();

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

thread_local! {
    /// Span caches of dropped heaps, for this thread's next heaps.
    static POOL: RefCell<Vec<CachedPages>> = const { RefCell::new(Vec::new()) };
}

/// A span given back to the kernel is no longer the registry's business.
fn forget(addr: usize, len: usize) {
    REGISTRY.forget_pages(addr, len);
}

/// A fresh heap id for [`REGISTRY`] (never 0; distinct among live heaps).
pub fn heap_id() -> u32 {
    loop {
        let id = NEXT_ID.fetch_add(1, Relaxed);
        if id != 0 {
            return id;
        }
    }
}

/// A span cache from this thread's pool, returned to it on drop.
pub struct Pages(CachedPages);

impl Pages {
    /// A cache from the pool, or a new one.
    pub fn take() -> Pages {
        let pooled = POOL.with(|p| p.borrow_mut().pop());
        Pages(pooled.unwrap_or(CachedPages::with_return_hook(Some(forget))))
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        let cache = std::mem::take(&mut self.0);
        // At thread exit the pool may be gone: the spans then stay mapped
        // until the process ends.
        let _ = POOL.try_with(|p| p.borrow_mut().push(cache));
    }
}

impl PageSource for Pages {
    fn page_size(&self) -> usize {
        self.0.page_size()
    }

    fn map(&mut self, len: usize) -> Option<(usize, bool)> {
        self.0.map(len)
    }

    unsafe fn unmap(&mut self, addr: usize, len: usize) {
        // SAFETY: the caller's contract (a span from `map`, no longer used)
        // is passed on unchanged.
        unsafe { self.0.unmap(addr, len) }
    }
}
