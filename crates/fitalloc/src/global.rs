//! One process-wide heap behind a lock: what `allocator.so` and the Rust
//! global allocator type use.
//!
//! Every operation goes through [`Shared::run`]: it takes the lock,
//! initialises the heap on first use (malloc is called before any constructor
//! runs), applies changed options, counts the call, runs the operation,
//! appends a trace record if tracing, and under `ALLOCATOR_CHECK=1` checks the
//! whole heap afterwards.

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::cache::CachedPages;
use crate::fmt::FdWriter;
use crate::heap::{Heap, Misuse, Policy};
use crate::lock::Lock;
use crate::options::Options;
use crate::os;
use crate::registry::Registry;
use crate::trace::{Op, Record};
use crate::tracer::Tracer;

/// The registry shared by every heap of this copy of the crate.
pub static REGISTRY: Registry = Registry::new();

static NEXT_HEAP_ID: AtomicU32 = AtomicU32::new(1);

/// The heap type of a process: regions through the span cache.
pub type ProcessHeap = Heap<CachedPages>;

/// The entry points counted by `ALLOCATOR_STATS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `malloc`, `__libc_malloc`.
    Malloc,
    /// `free`, `cfree`, `__libc_free`.
    Free,
    /// `calloc`, `__libc_calloc`.
    Calloc,
    /// `realloc`, `__libc_realloc`.
    Realloc,
    /// `reallocarray`.
    Reallocarray,
    /// `posix_memalign`, `__posix_memalign`.
    PosixMemalign,
    /// `aligned_alloc`.
    AlignedAlloc,
    /// `memalign`, `__libc_memalign`.
    Memalign,
    /// `valloc`, `__libc_valloc`.
    Valloc,
    /// `pvalloc`, `__libc_pvalloc`.
    Pvalloc,
    /// `malloc_usable_size`.
    UsableSize,
    /// `malloc_name`.
    MallocName,
}

/// Number of [`Call`] kinds.
pub const CALLS: usize = 12;

impl Call {
    /// Every call kind, in report order.
    pub const ALL: [Call; CALLS] = [
        Call::Malloc,
        Call::Free,
        Call::Calloc,
        Call::Realloc,
        Call::Reallocarray,
        Call::PosixMemalign,
        Call::AlignedAlloc,
        Call::Memalign,
        Call::Valloc,
        Call::Pvalloc,
        Call::UsableSize,
        Call::MallocName,
    ];

    /// The C name.
    pub const fn name(self) -> &'static str {
        match self {
            Call::Malloc => "malloc",
            Call::Free => "free",
            Call::Calloc => "calloc",
            Call::Realloc => "realloc",
            Call::Reallocarray => "reallocarray",
            Call::PosixMemalign => "posix_memalign",
            Call::AlignedAlloc => "aligned_alloc",
            Call::Memalign => "memalign",
            Call::Valloc => "valloc",
            Call::Pvalloc => "pvalloc",
            Call::UsableSize => "malloc_usable_size",
            Call::MallocName => "malloc_name",
        }
    }
}

/// A lazily created heap plus its options, counters and trace.
pub struct State {
    /// The heap, once something was allocated.
    pub heap: Option<ProcessHeap>,
    /// The options last read from the environment.
    pub options: Options,
    /// Calls per entry point, indexed by `Call as usize`.
    pub calls: [u64; CALLS],
    tracer: Tracer,
    marks: u64,
}

/// A process-wide heap.
pub struct Shared {
    inner: Lock<State>,
    fixed: Option<Policy>,
}

fn thread_id() -> u32 {
    // SAFETY: pthread_self has no preconditions and does not allocate.
    (unsafe { libc::pthread_self() } >> 6) as u32
}

fn record(op: Op, out: Option<usize>) -> Option<Record> {
    Some(Record {
        op,
        thread: thread_id(),
        out: out.unwrap_or(0) as u64,
    })
}

impl Shared {
    /// A heap whose policy comes from `ALLOCATOR_ALGORITHM` (`None`) or is
    /// fixed.
    pub const fn new(fixed: Option<Policy>) -> Shared {
        Shared {
            inner: Lock::new(State {
                heap: None,
                options: Options::new(),
                calls: [0; CALLS],
                tracer: Tracer::new(),
                marks: 0,
            }),
            fixed,
        }
    }

    /// Runs `f` on the heap under the lock (see the module docs); `trace`
    /// turns the result into a trace record when tracing.
    #[inline]
    fn run<R>(
        &self,
        call: Option<Call>,
        f: impl FnOnce(&mut ProcessHeap) -> R,
        trace: impl FnOnce(&R) -> Option<Record>,
    ) -> R {
        let mut guard = self.inner.lock();
        let st = &mut *guard;
        if st.options.stale() || st.heap.is_none() {
            self.refresh(st);
        }
        if let Some(c) = call {
            st.calls[c as usize] += 1;
        }
        let heap = st.heap.as_mut().expect("heap initialised by refresh");
        let r = f(heap);
        if st.tracer.is_on() {
            if let Some(rec) = trace(&r) {
                st.tracer.write(&rec);
            }
        }
        if st.options.check {
            if let Err((what, at)) = heap.check() {
                drop(guard);
                crate::eprint_raw!("fitalloc: heap check failed: {what} at {at:#x}\n");
                os::abort();
            }
        }
        r
    }

    /// Runs `f` on the heap under the lock, counting and tracing nothing.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut ProcessHeap) -> R) -> R {
        self.run(None, f, |_| None)
    }

    /// Runs `f` on the whole state (the heap may be absent) under the lock,
    /// without refreshing options.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.inner.lock())
    }

    /// `malloc` (counted as `call`).
    pub fn malloc(&self, call: Call, size: usize) -> Option<usize> {
        self.run(
            Some(call),
            |h| h.malloc(size),
            |&r| record(Op::Malloc { size: size as u64 }, r),
        )
    }

    /// `calloc`.
    pub fn calloc(&self, call: Call, n: usize, size: usize) -> Option<usize> {
        let op = Op::Calloc {
            count: n as u64,
            size: size as u64,
        };
        self.run(Some(call), |h| h.calloc(n, size), |&r| record(op, r))
    }

    /// The memalign family (`align` a power of two).
    pub fn memalign(&self, call: Call, align: usize, size: usize) -> Option<usize> {
        let op = Op::Memalign {
            align: align as u64,
            size: size as u64,
        };
        self.run(Some(call), |h| h.memalign(align, size), |&r| record(op, r))
    }

    /// `malloc_name`.
    pub fn malloc_named(&self, size: usize, name: &[u8]) -> Option<usize> {
        let mut kept = [0u8; 31];
        let n = name.len().min(31);
        kept[..n].copy_from_slice(&name[..n]);
        let op = Op::Named {
            size: size as u64,
            name: kept,
        };
        self.run(
            Some(Call::MallocName),
            |h| h.malloc_named(size, name),
            |&r| record(op, r),
        )
    }

    /// `realloc` of a non-null pointer to a non-zero size.
    pub fn realloc(&self, call: Call, p: usize, size: usize) -> Result<Option<usize>, Misuse> {
        let op = Op::Realloc {
            ptr: p as u64,
            size: size as u64,
        };
        self.run(
            Some(call),
            |h| h.realloc(p, size),
            |r| record(op, *r.as_ref().ok()?),
        )
    }

    /// `free` of a non-null pointer.
    pub fn free(&self, call: Call, p: usize) -> Result<(), Misuse> {
        let op = Op::Free { ptr: p as u64 };
        self.run(
            Some(call),
            |h| h.free(p),
            |r| r.ok().and_then(|_| record(op, None)),
        )
    }

    /// `malloc_usable_size` of a non-null pointer.
    pub fn usable_size(&self, p: usize) -> Result<usize, Misuse> {
        self.run(Some(Call::UsableSize), |h| h.usable_size(p), |_| None)
    }

    /// Writes a mark record (print_memory / write_memory was called).
    pub fn mark(&self) {
        self.with_state(|st| {
            if st.tracer.is_on() {
                st.marks += 1;
                let number = st.marks;
                st.tracer.write(&Record {
                    op: Op::Mark { number },
                    thread: thread_id(),
                    out: 0,
                });
            }
        });
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
        if !st.options.trace.is_null() && !st.tracer.started() {
            st.tracer.start(st.options.trace, 0);
        }
    }

    /// At exit: writes out the trace and prints the leak report and the
    /// statistics if asked (stderr, without allocating).
    pub fn at_exit(&self) {
        self.with_state(|st| {
            st.tracer.flush();
            let Some(heap) = st.heap.as_ref() else { return };
            let mut w = FdWriter::new(2);
            if st.options.leak_check {
                let _ = leak_report(heap, &mut w);
            }
            if st.options.stats {
                let _ = stats_report(heap, &st.calls, &mut w);
            }
            w.flush();
        });
    }

    /// Fork "prepare" handler: writes out the trace and takes every lock.
    pub fn fork_prepare(&self) {
        self.inner.raw().acquire();
        // SAFETY: the lock was just taken by this thread, so no other
        // reference to the state exists until `fork_parent`/`fork_child`.
        let st = unsafe { &mut *self.inner.data_ptr() };
        st.tracer.flush();
        REGISTRY.fork_prepare();
    }

    /// Fork "parent" handler: releases what `fork_prepare` took.
    pub fn fork_parent(&self) {
        REGISTRY.fork_parent();
        self.inner.raw().release();
    }

    /// Fork "child" handler: the locks' owners are gone; free them, and
    /// continue the trace in a file of the child's own.
    pub fn fork_child(&self) {
        REGISTRY.fork_child();
        // SAFETY: in the child only this thread exists, and `fork_prepare`
        // left the lock held by it; nothing else refers to the state.
        let st = unsafe { &mut *self.inner.data_ptr() };
        if st.tracer.is_on() {
            st.tracer.restart_in_child(st.options.trace);
            st.marks = 0;
        }
        self.inner.raw().reset();
    }
}

/// `ALLOCATOR_LEAK_CHECK`: every block still in use, then the total.
fn leak_report(heap: &ProcessHeap, w: &mut FdWriter) -> core::fmt::Result {
    let (mut n, mut bytes) = (0usize, 0usize);
    writeln!(w, "fitalloc: leak check: blocks still in use at exit")?;
    for d in heap.regions() {
        for b in heap.blocks(d).filter(|b| !b.free) {
            let name = crate::fmt::Text(b.name());
            writeln!(
                w,
                "  [BLOCK {:#x}-{:#x}] {} [USED] '{name}'",
                b.addr,
                b.addr + b.size,
                b.size
            )?;
            n += 1;
            bytes += b.size;
        }
    }
    writeln!(w, "{n} blocks lost ({bytes} bytes)")
}

/// `ALLOCATOR_STATS`: counters, one `key: value` line each.
fn stats_report(heap: &ProcessHeap, calls: &[u64; CALLS], w: &mut FdWriter) -> core::fmt::Result {
    let c = heap.counters();
    writeln!(w, "fitalloc: stats (policy {})", heap.policy().name())?;
    write!(w, "  calls:")?;
    for call in Call::ALL {
        write!(w, " {}={}", call.name(), calls[call as usize])?;
    }
    writeln!(w)?;
    writeln!(w, "  in use now: {} bytes", c.in_use)?;
    writeln!(w, "  in use peak: {} bytes", c.peak_in_use)?;
    writeln!(w, "  mapped now: {} bytes", c.mapped)?;
    writeln!(w, "  mapped peak: {} bytes", c.peak_mapped)?;
    writeln!(w, "  regions mapped: {}", c.regions_mapped)?;
    writeln!(w, "  regions unmapped: {}", c.regions_unmapped)?;
    let (m, u) = (c.mapped_at_peak_in_use, c.peak_in_use);
    if u == 0 {
        return writeln!(w, "  fragmentation at peak: n/a");
    }
    // mapped / in use - 1, to three decimals without floating point.
    let milli = (m as u128 * 1000 / u as u128).saturating_sub(1000);
    writeln!(
        w,
        "  fragmentation at peak: {}.{:03}",
        milli / 1000,
        milli % 1000
    )
}
