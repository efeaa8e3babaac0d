//! Process-wide heaps: what `allocator.so` and the Rust global allocator
//! type use.
//!
//! A [`Shared`] is [`ARENAS`] arenas, each a [`Heap`] behind its own lock.
//! The first thread that allocates (the main thread) uses arena 0; every
//! other thread is given one of the others, round robin, remembered in a
//! pthread key (PITFALLS: no Rust TLS in the malloc path). Each arena is
//! exact over its own regions, so a single-threaded program behaves exactly
//! as SPEC §3 says. `free` and `realloc` go to the arena that owns the
//! block's region (found through the page map), whichever thread calls.
//!
//! Every operation goes through `Shared::run`: it takes the arena's lock
//! (none while the process has a single thread), initialises the heap on
//! first use (malloc is called before any constructor runs), applies changed
//! options, counts the call, runs the operation, appends a trace record if
//! tracing, and under `ALLOCATOR_CHECK=1` checks the arena afterwards.

use core::ffi::{c_char, c_void};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering::*};

use crate::cache::CachedPages;
use crate::fmt::FdWriter;
use crate::heap::{Counters, Heap, Misuse, Policy};
use crate::lock::{Guard, Lock};
use crate::options::Options;
use crate::os::{self, PageSource};
use crate::registry::Registry;
use crate::trace::{Op, Record};
use crate::tracer::Tracer;

/// The registry shared by every heap of this copy of the crate.
pub static REGISTRY: Registry = Registry::new();

/// The span cache shared by every heap of this copy of the crate. Spans it
/// gives back to the kernel are forgotten by the page map.
static PAGES: Lock<CachedPages> = Lock::new(CachedPages::with_return_hook(Some(forget)));

fn forget(addr: usize, len: usize) {
    REGISTRY.forget_pages(addr, len);
}

static NEXT_HEAP_ID: AtomicU32 = AtomicU32::new(1);

/// Arenas per [`Shared`].
pub const ARENAS: usize = 8;

/// Regions through the process-wide span cache.
#[derive(Clone, Copy, Debug, Default)]
pub struct SharedPages;

impl PageSource for SharedPages {
    fn page_size(&self) -> usize {
        static PAGE: AtomicUsize = AtomicUsize::new(0);
        match PAGE.load(Relaxed) {
            0 => {
                let p = os::page_size();
                PAGE.store(p, Relaxed);
                p
            }
            p => p,
        }
    }

    fn map(&mut self, len: usize) -> Option<(usize, bool)> {
        PAGES.lock_if_threaded().map(len)
    }

    unsafe fn unmap(&mut self, addr: usize, len: usize) {
        // SAFETY: the caller's contract (a span from `map`, no longer used)
        // is passed on unchanged.
        unsafe { PAGES.lock_if_threaded().unmap(addr, len) }
    }
}

/// The heap type of a process.
pub type ProcessHeap = Heap<SharedPages>;

// ---------------------------------------------------------------------------
// Which arena a thread uses.

/// The pthread key holding each thread's arena number + 1 (stored as key +
/// 1; 0: not created yet; u32::MAX: could not be created).
static KEY: AtomicU32 = AtomicU32::new(0);
static NEXT_ARENA: AtomicU32 = AtomicU32::new(0);
/// `pthread_self()` of the first thread that allocated.
static FIRST_THREAD: AtomicUsize = AtomicUsize::new(0);

fn self_id() -> usize {
    // SAFETY: pthread_self has no preconditions and does not allocate.
    unsafe { libc::pthread_self() as usize }
}

fn thread_key() -> Option<libc::pthread_key_t> {
    match KEY.load(Acquire) {
        0 => {}
        u32::MAX => return None,
        k => return Some(k - 1),
    }
    let mut k: libc::pthread_key_t = 0;
    // SAFETY: creating a key without destructor; glibc does not allocate
    // for the first 32 keys, and allocator.so creates its key early.
    if unsafe { libc::pthread_key_create(&mut k, None) } != 0 {
        let _ = KEY.compare_exchange(0, u32::MAX, AcqRel, Acquire);
        return None;
    }
    match KEY.compare_exchange(0, k + 1, AcqRel, Acquire) {
        Ok(_) => Some(k),
        Err(won) => {
            // SAFETY: our key was never used; another thread's won.
            unsafe { libc::pthread_key_delete(k) };
            (won != u32::MAX).then(|| won - 1)
        }
    }
}

/// The arena of the calling thread.
#[inline]
fn my_arena() -> usize {
    if os::single_threaded() {
        if FIRST_THREAD.load(Relaxed) == 0 {
            FIRST_THREAD.store(self_id(), Relaxed);
        }
        return 0;
    }
    let key = thread_key();
    if let Some(k) = key {
        // SAFETY: reading this thread's value of our key.
        let v = unsafe { libc::pthread_getspecific(k) } as usize;
        if v != 0 {
            return v - 1;
        }
    }
    assign_arena(key)
}

#[cold]
fn assign_arena(key: Option<libc::pthread_key_t>) -> usize {
    let me = self_id();
    let first = match FIRST_THREAD.compare_exchange(0, me, Relaxed, Relaxed) {
        Ok(_) => me,
        Err(f) => f,
    };
    let arena = match key {
        _ if first == me => 0,
        None => 1 + (me >> 12) % (ARENAS - 1),
        Some(_) => 1 + NEXT_ARENA.fetch_add(1, Relaxed) as usize % (ARENAS - 1),
    };
    if let Some(k) = key {
        // SAFETY: setting this thread's value of our key; for keys below 32
        // glibc stores it inline without allocating.
        unsafe { libc::pthread_setspecific(k, (arena + 1) as *const c_void) };
    }
    arena
}

/// Creates the arena key early (called from allocator.so's constructor), so
/// that it gets a small key number.
pub fn prepare_threads() {
    let _ = thread_key();
}

// ---------------------------------------------------------------------------
// Calls.

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

// ---------------------------------------------------------------------------
// The arenas.

/// One arena: a lazily created heap plus its options and call counts.
pub struct Arena {
    /// The heap, once something was allocated here.
    pub heap: Option<ProcessHeap>,
    /// The options last read from the environment.
    pub options: Options,
    /// Calls per entry point, indexed by `Call as usize`.
    pub calls: [u64; CALLS],
}

impl Arena {
    const fn new() -> Arena {
        Arena {
            heap: None,
            options: Options::new(),
            calls: [0; CALLS],
        }
    }
}

struct TraceState {
    tracer: Tracer,
    path: *const c_char,
    marks: u64,
}

// SAFETY: `path` points into the environment, which lives as long as the
// process; the state is only used under its lock.
unsafe impl Send for TraceState {}

/// Process-wide heaps: [`ARENAS`] arenas.
pub struct Shared {
    arenas: [Lock<Arena>; ARENAS],
    fixed: Option<Policy>,
    /// Heap id of arena 0 (arena i has `base + i`); 0 until first use.
    base: AtomicU32,
    tracing: AtomicBool,
    trace: Lock<TraceState>,
    /// Where the exit reports go: a close-on-exec copy of stderr taken when
    /// a report was first asked for (programs such as coreutils close fd 2
    /// before exiting); -1 until then.
    report_fd: AtomicI32,
}

/// What an operation returned, as far as `run` needs to know.
trait Outcome {
    /// Whether the operation found a misuse (and changed nothing).
    fn is_misuse(&self) -> bool {
        false
    }
}

impl Outcome for Option<usize> {}
impl Outcome for Policy {}
impl<T> Outcome for Result<T, Misuse> {
    fn is_misuse(&self) -> bool {
        self.is_err()
    }
}

fn thread_id() -> u32 {
    (self_id() >> 6) as u32
}

fn record(op: Op, out: Option<usize>) -> Option<Record> {
    Some(Record {
        op,
        thread: thread_id(),
        out: out.unwrap_or(0) as u64,
    })
}

impl Shared {
    /// Heaps whose policy comes from `ALLOCATOR_ALGORITHM` (`None`) or is
    /// fixed.
    pub const fn new(fixed: Option<Policy>) -> Shared {
        Shared {
            arenas: [const { Lock::new(Arena::new()) }; ARENAS],
            fixed,
            base: AtomicU32::new(0),
            tracing: AtomicBool::new(false),
            trace: Lock::new(TraceState {
                tracer: Tracer::new(),
                path: core::ptr::null(),
                marks: 0,
            }),
            report_fd: AtomicI32::new(-1),
        }
    }

    fn base(&self) -> u32 {
        let b = self.base.load(Acquire);
        if b != 0 {
            return b;
        }
        let fresh = NEXT_HEAP_ID.fetch_add(ARENAS as u32, Relaxed);
        match self.base.compare_exchange(0, fresh, AcqRel, Acquire) {
            Ok(_) => fresh,
            Err(won) => won,
        }
    }

    /// The arena that owns the block at `p`, and what the page map says of
    /// `p` (passed on, so the heap does not look it up again).
    fn arena_of(&self, p: usize) -> Result<(usize, u32), Misuse> {
        let id = REGISTRY.lookup(p);
        let base = self.base.load(Acquire);
        if id == crate::registry::RELEASED {
            return Err(Misuse::DoubleFree);
        }
        if id == 0 || base == 0 {
            return Err(Misuse::NotOurs);
        }
        let owner = REGISTRY.desc(id).owner();
        match owner.checked_sub(base) {
            Some(i) if (i as usize) < ARENAS => Ok((i as usize, id)),
            _ => Err(Misuse::NotOurs),
        }
    }

    /// Runs `f` on arena `i`'s heap (see the module docs); `trace` turns the
    /// result into a trace record when tracing.
    #[inline]
    fn run<R: Outcome>(
        &self,
        i: usize,
        call: Option<Call>,
        f: impl FnOnce(&mut ProcessHeap) -> R,
        trace: impl FnOnce(&R) -> Option<Record>,
    ) -> R {
        let mut guard = self.arenas[i].lock_if_threaded();
        let st = &mut *guard;
        if st.options.stale() || st.heap.is_none() {
            self.refresh(i, st);
        }
        if let Some(c) = call {
            st.calls[c as usize] += 1;
        }
        let heap = st.heap.as_mut().expect("heap initialised by refresh");
        let r = f(heap);
        if self.tracing.load(Relaxed) {
            if let Some(rec) = trace(&r) {
                self.trace.lock_if_threaded().tracer.write(&rec);
            }
        }
        // A misuse is reported by the caller; checking the heap first would
        // report the same broken header under a vaguer name.
        if st.options.check && !r.is_misuse() {
            if let Err((what, at)) = heap.check() {
                drop(guard);
                crate::eprint_raw!("fitalloc: heap check failed: {what} at {at:#x}\n");
                os::abort();
            }
        }
        r
    }

    #[cold]
    fn refresh(&self, i: usize, st: &mut Arena) {
        st.options.read();
        let policy = self.fixed.or(st.options.policy).unwrap_or_default();
        let heap = st.heap.get_or_insert_with(|| {
            Heap::new(SharedPages, &REGISTRY, self.base() + i as u32, policy)
        });
        heap.set_policy(policy);
        heap.set_scribble(st.options.scribble);
        if (st.options.leak_check || st.options.stats) && self.report_fd.load(Relaxed) < 0 {
            // SAFETY: duplicating our own stderr; F_DUPFD_CLOEXEC allocates
            // nothing and keeps the copy out of exec'd programs.
            let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 100) };
            self.report_fd.store(fd, Relaxed);
        }
        if !st.options.trace.is_null() && !self.tracing.load(Acquire) {
            let mut t = self.trace.lock_if_threaded();
            if !t.tracer.started() {
                t.path = st.options.trace;
                let path = t.path;
                t.tracer.start(path, false);
                self.tracing.store(t.tracer.is_on(), Release);
            }
        }
    }

    // -----------------------------------------------------------------------
    // Operations.

    /// An operation that allocates in the calling thread's arena and is
    /// traced as `op` with its result.
    fn alloc_op(
        &self,
        call: Call,
        op: Op,
        f: impl FnOnce(&mut ProcessHeap) -> Option<usize>,
    ) -> Option<usize> {
        self.run(my_arena(), Some(call), f, |&r| record(op, r))
    }

    /// `malloc` (counted as `call`).
    pub fn malloc(&self, call: Call, size: usize) -> Option<usize> {
        let op = Op::Malloc { size: size as u64 };
        self.alloc_op(call, op, |h| h.malloc(size))
    }

    /// `calloc`.
    pub fn calloc(&self, call: Call, n: usize, size: usize) -> Option<usize> {
        let op = Op::Calloc {
            count: n as u64,
            size: size as u64,
        };
        self.alloc_op(call, op, |h| h.calloc(n, size))
    }

    /// The memalign family (`align` a power of two).
    pub fn memalign(&self, call: Call, align: usize, size: usize) -> Option<usize> {
        let op = Op::Memalign {
            align: align as u64,
            size: size as u64,
        };
        self.alloc_op(call, op, |h| h.memalign(align, size))
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
        self.alloc_op(Call::MallocName, op, |h| h.malloc_named(size, name))
    }

    /// `realloc` of a non-null pointer to a non-zero size (in the arena that
    /// owns the block).
    pub fn realloc(&self, call: Call, p: usize, size: usize) -> Result<Option<usize>, Misuse> {
        let op = Op::Realloc {
            ptr: p as u64,
            size: size as u64,
        };
        let (i, id) = self.arena_of(p)?;
        self.run(
            i,
            Some(call),
            |h| h.realloc_in(id, p, size),
            |r| record(op, *r.as_ref().ok()?),
        )
    }

    /// `free` of a non-null pointer (in the arena that owns the block).
    pub fn free(&self, call: Call, p: usize) -> Result<(), Misuse> {
        let op = Op::Free { ptr: p as u64 };
        let (i, id) = self.arena_of(p)?;
        self.run(
            i,
            Some(call),
            |h| h.free_in(id, p),
            |r| r.ok().and_then(|_| record(op, None)),
        )
    }

    /// `malloc_usable_size` of a non-null pointer.
    pub fn usable_size(&self, p: usize) -> Result<usize, Misuse> {
        let (i, id) = self.arena_of(p)?;
        self.run(
            i,
            Some(Call::UsableSize),
            |h| h.usable_size_in(id, p),
            |_| None,
        )
    }

    // -----------------------------------------------------------------------
    // Looking at every arena.

    /// Locks every arena (in index order) and runs `f` on the heaps that
    /// exist, in arena order.
    pub fn with_heaps<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = &ProcessHeap>) -> R) -> R {
        let guards: [Guard<'_, Arena>; ARENAS] =
            core::array::from_fn(|i| self.arenas[i].lock_if_threaded());
        let mut heaps = guards.iter().filter_map(|g| g.heap.as_ref());
        f(&mut heaps)
    }

    /// The policy of the calling thread's arena.
    pub fn policy(&self) -> Policy {
        self.run(my_arena(), None, |h| h.policy(), |_| None)
    }

    /// Counters summed over the arenas (peaks are sums of per-arena peaks),
    /// and the number of free blocks.
    pub fn totals(&self) -> (Counters, usize) {
        self.with_heaps(|heaps| {
            let (mut t, mut free) = (Counters::default(), 0);
            for h in heaps {
                t.add(&h.counters());
                free += h.free_blocks();
            }
            (t, free)
        })
    }

    /// Runs the heap checker on every arena.
    pub fn check(&self) -> Result<(), (&'static str, usize)> {
        self.with_heaps(|heaps| {
            for h in heaps {
                h.check()?;
            }
            Ok(())
        })
    }

    /// Like `with_heaps`, and first writes a mark record to the trace (if
    /// tracing), so that a replay can stop exactly where this view was taken.
    pub fn with_heaps_marked<R>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = &ProcessHeap>) -> R,
    ) -> R {
        self.with_heaps(|heaps| {
            self.mark();
            f(heaps)
        })
    }

    /// Writes a mark record (print_memory / write_memory was called).
    fn mark(&self) {
        if !self.tracing.load(Acquire) {
            return;
        }
        let mut t = self.trace.lock_if_threaded();
        t.marks += 1;
        let number = t.marks;
        t.tracer.write(&Record {
            op: Op::Mark { number },
            thread: thread_id(),
            out: 0,
        });
    }

    /// At exit: writes out the trace and prints the leak report and the
    /// statistics if asked (stderr, without allocating).
    pub fn at_exit(&self) {
        self.trace.lock_if_threaded().tracer.flush();
        let guards: [Guard<'_, Arena>; ARENAS] =
            core::array::from_fn(|i| self.arenas[i].lock_if_threaded());
        let Some(options) = guards.iter().find(|g| g.heap.is_some()).map(|g| g.options) else {
            return;
        };
        let fd = match self.report_fd.load(Relaxed) {
            fd if fd >= 0 => fd,
            _ => 2,
        };
        let mut w = FdWriter::new(fd);
        if options.leak_check {
            let _ = leak_report(&guards, &mut w);
        }
        if options.stats {
            let _ = stats_report(&guards, &mut w);
        }
        w.flush();
    }

    // -----------------------------------------------------------------------
    // fork.

    /// Fork "prepare" handler: takes every lock and writes out the trace.
    pub fn fork_prepare(&self) {
        for a in &self.arenas {
            a.raw().acquire();
        }
        self.trace.raw().acquire();
        // SAFETY: this thread holds the trace lock (taken just above) and no
        // guard exists, so this is the only access until parent/child.
        unsafe { (*self.trace.data_ptr()).tracer.flush() };
        PAGES.raw().acquire();
        REGISTRY.fork_prepare();
    }

    /// Fork "parent" handler: releases what `fork_prepare` took.
    pub fn fork_parent(&self) {
        REGISTRY.fork_parent();
        PAGES.raw().release();
        self.trace.raw().release();
        for a in self.arenas.iter().rev() {
            a.raw().release();
        }
    }

    /// Fork "child" handler: the locks' owners are gone; free them, and
    /// continue the trace in a file of the child's own.
    pub fn fork_child(&self) {
        REGISTRY.fork_child();
        PAGES.raw().reset();
        if self.tracing.load(Relaxed) {
            // SAFETY: only this thread exists in the child and `fork_prepare`
            // left the trace lock held by it.
            let t = unsafe { &mut *self.trace.data_ptr() };
            t.tracer.restart_in_child(t.path);
            t.marks = 0;
            self.tracing.store(t.tracer.is_on(), Relaxed);
        }
        self.trace.raw().reset();
        for a in &self.arenas {
            a.raw().reset();
        }
    }
}

/// `ALLOCATOR_LEAK_CHECK`: every block still in use, then the total.
fn leak_report(arenas: &[Guard<'_, Arena>], w: &mut FdWriter) -> core::fmt::Result {
    let (mut n, mut bytes) = (0usize, 0usize);
    writeln!(w, "fitalloc: leak check: blocks still in use at exit")?;
    for heap in arenas.iter().filter_map(|g| g.heap.as_ref()) {
        for d in heap.regions() {
            for b in heap.blocks(d).filter(|b| !b.free) {
                let name = crate::fmt::Text(b.name());
                let end = b.addr + b.size;
                writeln!(
                    w,
                    "  [BLOCK {:#x}-{end:#x}] {} [USED] '{name}'",
                    b.addr, b.size
                )?;
                n += 1;
                bytes += b.size;
            }
        }
    }
    writeln!(w, "{n} blocks lost ({bytes} bytes)")
}

/// `ALLOCATOR_STATS`: counters, one `key: value` line each.
fn stats_report(arenas: &[Guard<'_, Arena>], w: &mut FdWriter) -> core::fmt::Result {
    let mut c = Counters::default();
    let mut calls = [0u64; CALLS];
    let (mut used, mut policy) = (0, Policy::default());
    for g in arenas {
        let Some(h) = g.heap.as_ref() else { continue };
        c.add(&h.counters());
        for (t, n) in calls.iter_mut().zip(g.calls) {
            *t += n;
        }
        if used == 0 {
            policy = h.policy();
        }
        used += 1;
    }
    writeln!(
        w,
        "fitalloc: stats (policy {}, {used} arena(s))",
        policy.name()
    )?;
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
