//! One process-wide heap behind a lock: what `allocator.so` and the Rust
//! global allocator type use.
//!
//! [`Shared::with`] is the single entry: it takes the lock, initialises the
//! heap on first use (malloc is called before any constructor runs), applies
//! changed options, runs the operation and, under `ALLOCATOR_CHECK=1`, checks
//! the whole heap afterwards.

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::cache::CachedPages;
use crate::heap::{Heap, Policy};
use crate::lock::Lock;
use crate::options::Options;
use crate::os;
use crate::registry::Registry;

/// The registry shared by every heap of this copy of the crate.
pub static REGISTRY: Registry = Registry::new();

static NEXT_HEAP_ID: AtomicU32 = AtomicU32::new(1);

/// The heap type of a process: regions through the span cache.
pub type ProcessHeap = Heap<CachedPages>;

/// A lazily created heap plus its options.
pub struct State {
    /// The heap, once something was allocated.
    pub heap: Option<ProcessHeap>,
    /// The options last read from the environment.
    pub options: Options,
}

/// A process-wide heap.
pub struct Shared {
    inner: Lock<State>,
    fixed: Option<Policy>,
}

impl Shared {
    /// A heap whose policy comes from `ALLOCATOR_ALGORITHM` (`None`) or is
    /// fixed.
    pub const fn new(fixed: Option<Policy>) -> Shared {
        Shared {
            inner: Lock::new(State {
                heap: None,
                options: Options::new(),
            }),
            fixed,
        }
    }

    /// Runs `f` on the heap under the lock.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut ProcessHeap) -> R) -> R {
        let mut guard = self.inner.lock();
        let st = &mut *guard;
        if st.options.stale() || st.heap.is_none() {
            self.refresh(st);
        }
        let heap = st.heap.as_mut().expect("heap initialised by refresh");
        let r = f(heap);
        if st.options.check {
            if let Err((what, at)) = heap.check() {
                drop(guard);
                crate::eprint_raw!("fitalloc: heap check failed: {what} at {at:#x}\n");
                os::abort();
            }
        }
        r
    }

    /// Runs `f` on the whole state (heap may be absent) under the lock,
    /// without refreshing options.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.inner.lock())
    }

    #[cold]
    fn refresh(&self, st: &mut State) {
        st.options.read();
        let policy = self.fixed.or(st.options.policy).unwrap_or_default();
        let heap = st.heap.get_or_insert_with(|| {
            let id = NEXT_HEAP_ID.fetch_add(1, Relaxed);
            Heap::new(CachedPages::new(), &REGISTRY, id, policy)
        });
        heap.set_policy(policy);
        heap.set_scribble(st.options.scribble);
    }

    /// Fork "prepare" handler: takes every lock.
    pub fn fork_prepare(&self) {
        self.inner.raw().acquire();
        REGISTRY.fork_prepare();
    }

    /// Fork "parent" handler: releases what `fork_prepare` took.
    pub fn fork_parent(&self) {
        REGISTRY.fork_parent();
        self.inner.raw().release();
    }

    /// Fork "child" handler: the locks' owners are gone; free them.
    pub fn fork_child(&self) {
        REGISTRY.fork_child();
        self.inner.raw().reset();
    }
}
