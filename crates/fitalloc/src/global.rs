//! Process-wide heaps: what `allocator.so` and the Rust global allocator
//! type use.
//!
//! A [`Shared`] is a table of arenas ([`crate::arena`]): each thread
//! allocates from the arena of its slot, an exact [`Heap`] over its own
//! regions, so a single-threaded program behaves exactly as SPEC §3 says.
//! `free`, `realloc` and `malloc_usable_size` find the block's arena
//! through the page map; a block of another thread's arena is pushed onto
//! that arena's remote list and freed there at its next call.
//!
//! Every operation on an arena goes through `Shared::run`, the hot path:
//! enter the arena's lock (as its owner, without a read-modify-write; none
//! while the process has a single thread), make
//! sure the heap exists and the options are current (one comparison when
//! `environ` did not change), fold in remote frees (one load when there are
//! none), run the operation; counting calls, tracing and checking the heap
//! only when asked for.

use core::cell::UnsafeCell;
use core::ffi::c_char;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering::*};

use crate::arena::{self, Remote, MAX_ARENAS, REMOTE_BYTES, REMOTE_LIMIT};
use crate::block::{self, ALIGN, HEADER};
use crate::cache::CachedPages;
use crate::heap::{Counters, Heap, Misuse, Policy, Spot};
use crate::lock::{Lock, OwnedLock, RawLock};
use crate::options::Options;
use crate::os::{self, PageSource};
use crate::registry::{RegionDesc, Registry, RELEASED};
use crate::report;
use crate::trace::{Op, Record};
use crate::tracer::Tracer;

/// The registry shared by every heap of this copy of the crate.
pub static REGISTRY: Registry = Registry::new();

/// The span cache shared by every heap of this copy of the crate. Spans it
/// gives back to the kernel are forgotten by the page map.
/// Zero-initialised, so that it lies in `.bss` (see `Tracer`): `refresh`
/// sets its return hook, beside the trim hook, before any heap maps.
static PAGES: Lock<CachedPages> = Lock::new(CachedPages::new());

fn forget(addr: usize, len: usize) {
    REGISTRY.forget_pages(addr, len);
}

/// When the kernel refuses metadata memory: give the cached spans back.
fn trim_pages() {
    PAGES.lock_if_threaded().trim_all();
}

static NEXT_HEAP_ID: AtomicU32 = AtomicU32::new(1);

/// Regions through the process-wide span cache.
#[derive(Clone, Copy, Debug, Default)]
pub struct SharedPages;

impl PageSource for SharedPages {
    fn page_size(&self) -> usize {
        os::page_size_cached()
    }

    fn map(&mut self, len: usize) -> Option<(usize, bool)> {
        PAGES.lock_if_threaded().map(len)
    }

    unsafe fn unmap(&mut self, addr: usize, len: usize) {
        // SAFETY: the caller's contract (a span from `map`, no longer used)
        // is passed on unchanged.
        unsafe { PAGES.lock_if_threaded().unmap(addr, len) }
    }

    fn huge_from(&self) -> usize {
        crate::cache::HUGE_FROM
    }

    fn prefer_small_pages(&mut self, addr: usize, len: usize) {
        os::no_huge_pages(addr, len);
    }
}

/// The heap type of a process.
pub type ProcessHeap = Heap<SharedPages>;

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
// Arenas.

/// One arena: a lazily created heap plus its options and call counts.
pub struct Arena {
    /// The heap, once something was allocated here.
    pub heap: Option<ProcessHeap>,
    /// The options last read from the environment.
    pub options: Options,
    /// Calls per entry point (counted while `ALLOCATOR_STATS` is on).
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

/// An arena with its lock and its remote-free list (on its own cache line:
/// other threads write it, the arena's thread mostly reads it).
#[repr(align(64))]
struct Slot {
    lock: OwnedLock,
    arena: UnsafeCell<Arena>,
    remote: Remote,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            lock: OwnedLock::new(),
            arena: UnsafeCell::new(Arena::new()),
            remote: Remote::new(),
        }
    }
}

/// Arenas per chunk, and in place in `Shared`. Eight, not more: the
/// process state is initialised data (`.data`), and the kernel maps a
/// library's file pages 64 KiB around each one read, so 64 slots in place
/// (52 KB) were resident in every process (tests/27-vmsize.sh bounds
/// `.data`). Threads past the eighth take one more load per call.
const CHUNK: usize = 8;
type Chunk = [Slot; CHUNK];

struct TraceState {
    tracer: Tracer,
    path: *const c_char,
    marks: u64,
}

// SAFETY: `path` points into the environment, which lives as long as the
// process; the state is only used under its lock.
unsafe impl Send for TraceState {}

/// Process-wide heaps: an arena per thread slot.
pub struct Shared {
    /// Arenas 0 to CHUNK - 1, in place: the common case needs no look-up.
    first: Chunk,
    /// Arenas from CHUNK on (entry 0 stays null).
    chunks: [AtomicPtr<Chunk>; MAX_ARENAS / CHUNK],
    /// Taken while a chunk is created (and by fork, which must see them all).
    grow: RawLock,
    fixed: Option<Policy>,
    /// Heap id of arena 0 (arena i has `base + i`); 0 until first use.
    base: AtomicU32,
    tracing: AtomicBool,
    trace: Lock<TraceState>,
}

// SAFETY: every arena is used only under its lock (or while the process has
// one thread); chunks are published once and never freed.
unsafe impl Sync for Shared {}

/// Who runs an operation on an arena.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    /// Any thread while the process has a single thread (as `mine` found
    /// it): no lock at all, without asking again.
    Alone,
    /// The thread whose slot it is: enters without the lock.
    Owner,
    /// One of the threads that share the slot (more live threads than
    /// arenas): the lock, for every thread, for good.
    Sharer,
    /// Any other thread: the lock, the owner shut out meanwhile.
    Other,
}

impl Who {
    /// The calling thread, for its own slot `s` (from `arena::my_slot`).
    #[inline]
    fn of(s: usize) -> Who {
        if s & arena::SHARED != 0 {
            Who::Sharer
        } else {
            Who::Owner
        }
    }
}

/// The calling thread's arena, and how it uses it; `None` once the thread
/// is past its exit destructor (see `borrow_arena`).
#[inline]
fn my_arena() -> Option<(usize, Who)> {
    let s = arena::my_slot();
    (s != arena::NO_SLOT).then(|| (s & arena::SLOT_MASK, Who::of(s)))
}

/// Where the calling thread allocates: its own arena, or one borrowed for
/// this call (true: give it back after the call).
#[inline]
fn arena_to_allocate() -> (usize, Who, bool) {
    match my_arena() {
        Some((i, who)) => (i, who, false),
        None => borrow_arena(),
    }
}

/// A thread past its exit destructor has no arena of its own any more: it
/// borrows a free one for the call and gives it back (taking one for good
/// would lose it, as no destructor runs again), or, with every arena
/// taken, enters arena 0 as another thread. Its frees take the
/// other-thread path, with no arena of their own.
#[cold]
#[inline(never)]
fn borrow_arena() -> (usize, Who, bool) {
    match arena::claim() {
        Some(i) => (i, Who::Owner, true),
        None => (0, Who::Other, false),
    }
}

/// How a traced operation holds the trace lock.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Traced {
    /// Not at all: the process has a single thread.
    Alone,
    Locked,
}

/// What an operation returned, as far as `run` needs to know.
trait Outcome {
    /// Whether the operation found a misuse (and changed nothing).
    fn is_misuse(&self) -> bool {
        false
    }
}

impl Outcome for Option<usize> {}
impl Outcome for () {}
impl<T> Outcome for Result<T, Misuse> {
    fn is_misuse(&self) -> bool {
        self.is_err()
    }
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
    /// Heaps whose policy comes from `ALLOCATOR_ALGORITHM` (`None`) or is
    /// fixed.
    pub const fn new(fixed: Option<Policy>) -> Shared {
        Shared {
            first: [const { Slot::new() }; CHUNK],
            chunks: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_ARENAS / CHUNK],
            grow: RawLock::new(),
            fixed,
            base: AtomicU32::new(0),
            tracing: AtomicBool::new(false),
            trace: Lock::new(TraceState {
                tracer: Tracer::new(),
                path: core::ptr::null(),
                marks: 0,
            }),
        }
    }

    fn base(&self) -> u32 {
        let b = self.base.load(Acquire);
        if b != 0 {
            return b;
        }
        let fresh = NEXT_HEAP_ID.fetch_add(MAX_ARENAS as u32, Relaxed);
        match self.base.compare_exchange(0, fresh, AcqRel, Acquire) {
            Ok(_) => fresh,
            Err(won) => won,
        }
    }

    /// Arena `i`'s slot, its chunk created if needed.
    #[inline]
    fn slot(&self, i: usize) -> &Slot {
        if i < CHUNK {
            return &self.first[i];
        }
        let chunk = self.chunks[i / CHUNK].load(Acquire);
        if chunk.is_null() {
            return self.new_chunk(i);
        }
        // SAFETY: published chunks are never freed; `i % CHUNK` is in range.
        unsafe { &(*chunk)[i % CHUNK] }
    }

    #[cold]
    fn new_chunk(&self, i: usize) -> &Slot {
        let _g = self.grow.lock();
        let at = &self.chunks[i / CHUNK];
        let mut chunk = at.load(Acquire);
        if chunk.is_null() {
            let bytes = core::mem::size_of::<Chunk>();
            let Some(mem) = os::map_anon(bytes) else {
                crate::eprint_raw!("fitalloc: out of memory for a thread's arena\n");
                os::abort()
            };
            chunk = mem as *mut Chunk;
            for s in 0..CHUNK {
                // SAFETY: the mapping holds CHUNK slots, none initialised yet.
                unsafe { core::ptr::addr_of_mut!((*chunk)[s]).write(Slot::new()) };
            }
            at.store(chunk, Release);
        }
        // SAFETY: as in `slot`.
        unsafe { &(*chunk)[i % CHUNK] }
    }

    /// The slots of every chunk created so far, in arena order.
    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.first
            .iter()
            .chain(self.chunks[1..].iter().flat_map(|c| {
                let chunk = c.load(Acquire);
                let slots: &[Slot] = if chunk.is_null() {
                    &[]
                } else {
                    // SAFETY: published chunks are never freed.
                    unsafe { &*chunk }
                };
                slots.iter()
            }))
    }

    /// The arena that owns the block at `p`, and what the page map says of
    /// `p` (passed on, so the heap does not look it up again).
    #[inline]
    fn arena_of(&self, p: usize) -> Result<(usize, Spot), Misuse> {
        let spot = Spot::of(&REGISTRY, REGISTRY.lookup(p))?;
        let base = self.base.load(Relaxed);
        if base == 0 {
            return Err(Misuse::NotOurs);
        }
        match spot.desc().owner().wrapping_sub(base) {
            i if (i as usize) < MAX_ARENAS => Ok((i as usize, spot)),
            _ => Err(Misuse::NotOurs),
        }
    }

    /// Runs `f` on arena `i`'s heap (see the module docs) as `who`;
    /// `trace` turns the result into a trace record when tracing.
    #[inline]
    fn run<R: Outcome>(
        &self,
        i: usize,
        who: Who,
        call: Call,
        f: impl FnOnce(&mut ProcessHeap) -> R,
        trace: impl FnOnce(&R) -> Option<Record>,
    ) -> R {
        self.run_in(i, who, call, true, f, trace)
    }

    /// `run`; `reread` says whether a changed environment is read first.
    /// SPEC §4 asks options to hold from "the allocation they concern", so
    /// a `free` skips that look (a few loads and branches a call) and uses
    /// the options of the arena's last allocation.
    #[inline]
    fn run_in<R: Outcome>(
        &self,
        i: usize,
        who: Who,
        call: Call,
        reread: bool,
        f: impl FnOnce(&mut ProcessHeap) -> R,
        trace: impl FnOnce(&R) -> Option<Record>,
    ) -> R {
        let slot = self.slot(i);
        let entry = match who {
            Who::Alone => None,
            _ if os::single_threaded() => None,
            Who::Owner => Some(slot.lock.enter_owner()),
            Who::Sharer => Some(slot.lock.enter(true)),
            Who::Other => Some(slot.lock.enter(false)),
        };
        // SAFETY: this thread is inside the arena's lock (as its owner or
        // with the lock), or is the only thread.
        let a = unsafe { &mut *slot.arena.get() };
        if a.heap.is_none() || (reread && a.options.stale()) {
            self.refresh(i, a);
        }
        if !slot.remote.is_empty() {
            self.fold(slot, a);
        }
        let r = self.apply(a, call, f, trace);
        if let Some(e) = entry {
            slot.lock.exit(e);
        }
        r
    }

    /// `apply` inside the trace lock (taken after the arena's, and after
    /// the fold, which takes it itself), writing the operation's record: a
    /// free can hand its region's span to another arena, whose record of an
    /// allocation there must come after this one. Out of line, so that the
    /// untraced path keeps its operation inlined.
    #[cold]
    #[inline(never)]
    fn apply_traced<R: Outcome>(
        &self,
        a: &mut Arena,
        call: Call,
        f: impl FnOnce(&mut ProcessHeap) -> R,
        trace: impl FnOnce(&R) -> Option<Record>,
    ) -> R {
        let held = self.trace_enter();
        let mut rec = None;
        let r = self.apply_untraced(a, call, |h| {
            let r = f(h);
            rec = trace(&r);
            r
        });
        self.trace_exit(held, rec);
        r
    }

    /// The operation, traced if tracing.
    #[inline]
    fn apply<R: Outcome>(
        &self,
        a: &mut Arena,
        call: Call,
        f: impl FnOnce(&mut ProcessHeap) -> R,
        trace: impl FnOnce(&R) -> Option<Record>,
    ) -> R {
        if self.tracing.load(Relaxed) {
            return self.apply_traced(a, call, f, trace);
        }
        self.apply_untraced(a, call, f)
    }

    /// The operation itself, with what the options ask around it.
    #[inline(always)]
    fn apply_untraced<R: Outcome>(
        &self,
        a: &mut Arena,
        call: Call,
        f: impl FnOnce(&mut ProcessHeap) -> R,
    ) -> R {
        if a.options.stats {
            a.calls[call as usize] += 1;
        }
        // SAFETY: `run_in` called `refresh`, which creates the heap, if
        // there was none.
        let heap = unsafe { a.heap.as_mut().unwrap_unchecked() };
        let r = f(heap);
        // A misuse is reported by the caller; checking the heap first would
        // report the same broken header under a vaguer name.
        if a.options.check && !r.is_misuse() {
            if let Err((what, at)) = heap.check() {
                crate::eprint_raw!("fitalloc: heap check failed: {what} at {at:#x}\n");
                os::abort();
            }
        }
        r
    }

    /// Before a traced operation: takes the trace lock (none while the
    /// process has a single thread).
    fn trace_enter(&self) -> Traced {
        if os::single_threaded() {
            return Traced::Alone;
        }
        self.trace.raw().acquire();
        Traced::Locked
    }

    /// After a traced operation (`apply_traced`, or a folded free): writes
    /// its record, if any, and gives the trace lock back (`traced`: what
    /// `trace_enter` returned).
    fn trace_exit(&self, traced: Traced, rec: Option<Record>) {
        // SAFETY: this thread holds the trace lock (`Locked`), or is the
        // only thread (`Alone`); no guard of it exists meanwhile (the
        // operation in between takes none).
        let t = unsafe { &mut *self.trace.data_ptr() };
        if let Some(rec) = rec {
            t.tracer.write(&rec);
        }
        if traced == Traced::Locked {
            self.trace.raw().release();
        }
    }

    #[cold]
    #[inline(never)]
    fn refresh(&self, i: usize, a: &mut Arena) {
        os::set_trim_hook(trim_pages);
        PAGES.lock_if_threaded().set_return_hook(forget);
        // Decided early (usually while the process has one thread, when
        // registering is cheap): see `arena::prepare_threads`.
        let _ = crate::lock::biased();
        a.options.read();
        let policy = self.fixed.or(a.options.policy).unwrap_or_default();
        let heap = a.heap.get_or_insert_with(|| {
            Heap::new(SharedPages, &REGISTRY, self.base() + i as u32, policy)
        });
        heap.set_policy(policy);
        heap.set_scribble(a.options.scribble);
        heap.set_check(a.options.check);
        if a.options.leak_check || a.options.stats {
            report::prepare(true);
        }
        if !a.options.trace.is_null() && !self.tracing.load(Acquire) {
            let mut t = self.trace.lock_if_threaded();
            if !t.tracer.started() {
                t.path = a.options.trace;
                let path = t.path;
                t.tracer.start(path, false);
                self.tracing.store(t.tracer.is_on(), Release);
            }
        }
    }

    /// Frees the blocks other threads pushed onto `slot`'s remote list
    /// (the caller holds the arena's lock). Every listed block must lie in
    /// a region of this arena's heap before its link is read.
    #[cold]
    #[inline(never)]
    fn fold(&self, slot: &Slot, a: &mut Arena) {
        let Some(heap) = a.heap.as_mut() else { return };
        let key = REGISTRY.link_secret();
        let mut p = slot.remote.take();
        while p != 0 {
            let spot = match Spot::of(&REGISTRY, REGISTRY.lookup(p)) {
                Ok(spot) if heap.holds(spot, p) => spot,
                _ => block::corrupted_free_block(p),
            };
            // SAFETY: `p` lies in a live region of this heap.
            let next = unsafe { Remote::next(p, key) };
            // The link goes: a block handed out again must not look listed
            // (`foreign_block`) if the program never writes that word.
            // SAFETY: `p` lies in a live region of this heap, 16 bytes or
            // more before its end. A genuine link names a used block the
            // program gave up; one that was not (it needs the links' key)
            // fails `free_in` below, which ends the process.
            unsafe { (p as *mut u64).write(0) };
            // Inside the trace lock, as in `apply_traced`.
            let traced = self.tracing.load(Relaxed).then(|| self.trace_enter());
            let r = heap.free_in(spot, p);
            if let Some(held) = traced {
                self.trace_exit(
                    held,
                    r.ok()
                        .and_then(|_| record(Op::Free { ptr: p as u64 }, None)),
                );
            }
            if let Err(m) = r {
                report::misuse(Call::Free, m, p);
            }
            p = next;
        }
    }

    /// Pushes the block at `p` (region `id` of arena `i`, not the caller's)
    /// onto that arena's remote list, after the checks that need nothing
    /// but the block's own header, which does not change while the block is
    /// in use. Folds the list itself when the arena has no thread or the
    /// list is long.
    fn free_remote(&self, i: usize, spot: Spot, p: usize) -> Result<(), Misuse> {
        // A block with its name or check mode's canary bytes within the
        // first 8 bytes (where the link would go) is freed under the
        // owner's lock.
        let b = match foreign_block(spot, p) {
            Ok(b) if b.usable() - b.slack() >= 8 => b,
            // Otherwise the owner's heap says exactly what is wrong
            // (nothing changes: the block is not valid).
            _ => {
                let op = Op::Free { ptr: p as u64 };
                let trace = |r: &Result<(), Misuse>| r.ok().and_then(|_| record(op, None));
                return self.run(i, Who::Other, Call::Free, |h| h.free_in(spot, p), trace);
            }
        };
        let slot = self.slot(i);
        // SAFETY: `p` is the payload of a used block of a live region that
        // the program gives up; its first word is ours until the fold.
        let (count, bytes) = unsafe { slot.remote.push(p, b.size(), REGISTRY.link_secret()) };
        if count >= REMOTE_LIMIT || bytes >= REMOTE_BYTES {
            self.fold_for(i, true);
        } else if !arena::slot_taken(i) {
            self.fold_for(i, false);
        }
        Ok(())
    }

    /// Thread slot `i` was given back (its thread exited): folds the blocks
    /// other threads freed into its arena meanwhile, unless a new thread
    /// took the slot already (it folds them at its next call). Pushes made
    /// after this look find the slot free and fold themselves.
    pub fn slot_released(&self, i: usize) {
        if i >= MAX_ARENAS || (i >= CHUNK && self.chunks[i / CHUNK].load(Acquire).is_null()) {
            return;
        }
        let slot = self.slot(i);
        if !slot.remote.is_empty_seqcst() && !arena::slot_taken(i) {
            self.fold_for(i, true);
        }
    }

    /// Folds arena `i`'s remote list from another thread: waiting for the
    /// lock (`wait`), or only if it is free, then again while the list is
    /// not empty and no thread owns the arena.
    #[cold]
    fn fold_for(&self, i: usize, wait: bool) {
        let slot = self.slot(i);
        loop {
            let e = if wait {
                slot.lock.enter(false)
            } else {
                let Some(e) = slot.lock.try_enter() else {
                    return;
                };
                e
            };
            // SAFETY: we hold the arena's lock (its owner shut out).
            let a = unsafe { &mut *slot.arena.get() };
            self.fold(slot, a);
            slot.lock.exit(e);
            // A push whose `try_enter` found the lock still held must be
            // seen here (the exit's release alone does not order this load).
            core::sync::atomic::fence(SeqCst);
            if slot.remote.is_empty() || arena::slot_taken(i) {
                return;
            }
        }
    }

    // -----------------------------------------------------------------------
    // Operations.

    /// An operation that allocates in the calling thread's arena and is
    /// traced as `op()` with its result (made only when tracing: an
    /// untraced call writes no record anywhere).
    #[inline]
    fn alloc_op(
        &self,
        call: Call,
        op: impl FnOnce() -> Op,
        f: impl FnOnce(&mut ProcessHeap) -> Option<usize>,
    ) -> Option<usize> {
        self.run_own(call, f, move |&r| record(op(), r))
    }

    /// `run` in the calling thread's own arena (borrowed for the call by a
    /// thread past its exit destructor).
    #[inline]
    fn run_own<R: Outcome>(
        &self,
        call: Call,
        f: impl FnOnce(&mut ProcessHeap) -> R,
        trace: impl FnOnce(&R) -> Option<Record>,
    ) -> R {
        let (i, who, borrowed) = arena_to_allocate();
        let r = self.run(i, who, call, f, trace);
        if borrowed {
            arena::release(i);
        }
        r
    }

    /// `malloc` (counted as `call`).
    #[inline]
    pub fn malloc(&self, call: Call, size: usize) -> Option<usize> {
        let op = move || Op::Malloc { size: size as u64 };
        self.alloc_op(call, op, move |h| h.malloc(size))
    }

    /// `calloc`.
    pub fn calloc(&self, call: Call, n: usize, size: usize) -> Option<usize> {
        let op = move || Op::Calloc {
            count: n as u64,
            size: size as u64,
        };
        self.alloc_op(call, op, move |h| h.calloc(n, size))
    }

    /// The memalign family (`align` a power of two).
    pub fn memalign(&self, call: Call, align: usize, size: usize) -> Option<usize> {
        let op = move || Op::Memalign {
            align: align as u64,
            size: size as u64,
        };
        self.alloc_op(call, op, move |h| h.memalign(align, size))
    }

    /// `malloc_name`.
    pub fn malloc_named(&self, size: usize, name: &[u8]) -> Option<usize> {
        let op = move || {
            let mut kept = [0u8; 31];
            let n = name.len().min(31);
            kept[..n].copy_from_slice(&name[..n]);
            Op::Named {
                size: size as u64,
                name: kept,
            }
        };
        self.alloc_op(Call::MallocName, op, move |h| h.malloc_named(size, name))
    }

    /// How the calling thread uses arena `i` if it is its own (always,
    /// while the process has a single thread); `None` if it is another
    /// thread's.
    #[inline]
    fn mine(i: usize) -> Option<Who> {
        if os::single_threaded() {
            return Some(Who::Alone);
        }
        my_arena().and_then(|(mine, who)| (mine == i).then_some(who))
    }

    /// `realloc` of a non-null pointer to a non-zero size. In the arena
    /// that owns the block when it is the caller's; a block of another
    /// thread's arena moves to the caller's (unless it is big enough).
    pub fn realloc(&self, call: Call, p: usize, size: usize) -> Result<Option<usize>, Misuse> {
        let op = move || Op::Realloc {
            ptr: p as u64,
            size: size as u64,
        };
        let (i, spot) = self.arena_of(p)?;
        let Some(who) = Self::mine(i) else {
            return self.realloc_remote(call, i, spot, p, size);
        };
        self.run(
            i,
            who,
            call,
            // Forced: with the traced copy of the path beside it, the
            // compiler would call it out of line (realloc 808 -> 830
            // instructions).
            #[inline(always)]
            move |h| h.realloc_in(spot, p, size),
            move |r| record(op(), *r.as_ref().ok()?),
        )
    }

    /// `realloc` of a block of another thread's arena: allocate in the
    /// caller's, copy, and free the old block remotely.
    fn realloc_remote(
        &self,
        call: Call,
        i: usize,
        spot: Spot,
        p: usize,
        size: usize,
    ) -> Result<Option<usize>, Misuse> {
        let Ok(b) = foreign_block(spot, p) else {
            let f = |h: &mut ProcessHeap| h.realloc_in(spot, p, 0).map(|_| None);
            return self.run(i, Who::Other, call, f, |_| None);
        };
        // In place while the size stays clear of check mode's canary bytes
        // (the header, which records them, is the owner's to change).
        let clear = b.usable() - b.slack();
        if size <= clear {
            if self.tracing.load(Relaxed) {
                let op = Op::Realloc {
                    ptr: p as u64,
                    size: size as u64,
                };
                if let Some(rec) = record(op, Some(p)) {
                    self.trace.lock_if_threaded().tracer.write(&rec);
                }
            }
            return Ok(Some(p));
        }
        let q = if b.is_named() {
            let name = b.read_name();
            let len = name.iter().position(|&c| c == 0).unwrap_or(31);
            self.malloc_named(size, &name[..len])
        } else {
            self.malloc(call, size)
        };
        let Some(q) = q else { return Ok(None) };
        let n = b.usable().min(size);
        // SAFETY: both blocks are live and distinct; `p` holds `usable`
        // bytes, `q` at least `size` (its canary, if any, starts there).
        unsafe { core::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, n) };
        self.free_remote(i, spot, p)?;
        Ok(Some(q))
    }

    /// `free` of a non-null pointer.
    #[inline]
    pub fn free(&self, call: Call, p: usize) -> Result<(), Misuse> {
        let (i, spot) = self.arena_of(p)?;
        let Some(who) = Self::mine(i) else {
            return self.free_remote(i, spot, p);
        };
        let op = move || Op::Free { ptr: p as u64 };
        self.run_in(
            i,
            who,
            call,
            false,
            move |h| h.free_in(spot, p),
            move |r| r.ok().and_then(|_| record(op(), None)),
        )
    }

    /// `malloc_usable_size` of a non-null pointer.
    pub fn usable_size(&self, p: usize) -> Result<usize, Misuse> {
        let (i, spot) = self.arena_of(p)?;
        let who = Self::mine(i);
        if who.is_none() {
            // Without the owner's lock only when no canary must be dropped
            // (all the usable bytes become the caller's).
            if let Some(b) = foreign_block(spot, p).ok().filter(|b| b.slack() == 0) {
                return Ok(b.usable());
            }
        }
        let who = who.unwrap_or(Who::Other);
        self.run(
            i,
            who,
            Call::UsableSize,
            |h| h.usable_size_in(spot, p),
            |_| None,
        )
    }

    // -----------------------------------------------------------------------
    // Looking at every arena.

    /// Takes the chunk lock (so that no arena appears meanwhile) and every
    /// arena's lock (in index order), and shuts their owners out (one
    /// barrier for all).
    fn lock_all(&self) {
        self.grow.acquire();
        let mut barrier = false;
        for slot in self.slots() {
            barrier |= slot.lock.lock_closing(false);
        }
        if barrier {
            OwnedLock::barrier();
            for slot in self.slots() {
                slot.lock.wait_owner();
            }
        }
    }

    /// Locks every arena (in index order), folds the remote frees, and runs
    /// `f` on the heaps that exist, in arena order.
    pub fn with_heaps<R>(&self, f: impl FnOnce(&Heaps<'_>) -> R) -> R {
        let threaded = !os::single_threaded();
        if threaded {
            self.lock_all();
        }
        for slot in self.slots() {
            // SAFETY: we hold the arena's lock (its owner shut out), or
            // are the only thread.
            self.fold(slot, unsafe { &mut *slot.arena.get() });
        }
        let r = f(&Heaps { shared: self });
        if threaded {
            self.unlock_all();
        }
        r
    }

    /// Releases what `lock_all` took.
    fn unlock_all(&self) {
        for slot in self.slots() {
            slot.lock.release();
        }
        self.grow.release();
    }

    /// The arenas, while `with_heaps` holds their locks.
    fn arenas(&self) -> impl Iterator<Item = &Arena> {
        // SAFETY: only called by `Heaps` and `at_exit` inside `with_heaps`,
        // which holds every arena's lock meanwhile.
        self.slots().map(|s| unsafe { &*s.arena.get() })
    }

    /// The policy of the calling thread's arena.
    pub fn policy(&self) -> Policy {
        let mut p = Policy::default();
        self.run_own(Call::Malloc, |h| p = h.policy(), |_| None);
        p
    }

    /// Counters summed over the arenas (peaks are sums of per-arena peaks),
    /// and the number of free blocks.
    pub fn totals(&self) -> (Counters, usize) {
        self.with_heaps(|heaps| {
            let (mut t, mut free) = (Counters::default(), 0);
            for h in heaps.iter() {
                t.add(&h.counters());
                free += h.free_blocks();
            }
            (t, free)
        })
    }

    /// Runs the heap checker on every arena.
    pub fn check(&self) -> Result<(), (&'static str, usize)> {
        self.with_heaps(|heaps| {
            for h in heaps.iter() {
                h.check()?;
            }
            Ok(())
        })
    }

    /// Like `with_heaps`, and first writes a mark record to the trace (if
    /// tracing), so that a replay can stop exactly where this view was taken.
    pub fn with_heaps_marked<R>(&self, f: impl FnOnce(&Heaps<'_>) -> R) -> R {
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
    /// statistics if asked (without allocating).
    pub fn at_exit(&self) {
        // Written out before the fold (which aborts on a corrupted listed
        // block, when the trace matters most) and again after it, with the
        // frees it recorded.
        self.trace.lock_if_threaded().tracer.flush();
        self.with_heaps(|_| {
            self.trace.lock_if_threaded().tracer.flush();
            let arenas = || self.arenas().filter(|a| a.heap.is_some());
            let Some(options) = arenas().next().map(|a| a.options) else {
                return;
            };
            report::at_exit(&options, &mut arenas(), &mut arenas());
        });
    }

    // -----------------------------------------------------------------------
    // fork.

    /// Fork "prepare" handler: takes every lock and writes out the trace.
    pub fn fork_prepare(&self) {
        self.lock_all();
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
        self.unlock_all();
    }

    /// Fork "child" handler: the locks' owners are gone; free them, give
    /// the other threads' slots back, and continue any trace in a file of
    /// the child's own.
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
        for slot in self.slots() {
            slot.lock.reset();
        }
        self.grow.reset();
        arena::fork_child();
    }
}

/// The heaps of every arena, while [`Shared::with_heaps`] holds their locks.
pub struct Heaps<'a> {
    shared: &'a Shared,
}

impl<'a> Heaps<'a> {
    /// The heaps that exist, in arena order.
    pub fn iter(&self) -> impl Iterator<Item = &'a ProcessHeap> + 'a {
        self.shared.arenas().filter_map(|a| a.heap.as_ref())
    }
}

/// A used block of region `id` whose payload is `p`, checked from a thread
/// that does not own its arena: only the block's own header is read (its
/// size, region and flags do not change while it is in use), never its
/// neighbours'; a block already waiting on its arena's remote list (freed
/// by another thread, not folded yet) is a double free.
fn foreign_block(spot: Spot, p: usize) -> Result<crate::block::Block, Misuse> {
    let (id, d) = (spot.id(), spot.desc());
    if !p.is_multiple_of(ALIGN) || p < d.start() + HEADER || p >= d.end() {
        return Err(Misuse::NotOurs);
    }
    // SAFETY: `p - HEADER` is 16-aligned inside live region `id`.
    let b = unsafe { crate::block::Block::from_raw(p - HEADER) };
    if !b.is_sealed(block::Key::new(REGISTRY.secret())) || b.region() != id {
        return Err(Misuse::Corrupted);
    }
    if b.is_free() || listed(d, p) {
        return Err(Misuse::DoubleFree);
    }
    if b.end() > d.end() || b.size() < block::MIN_BLOCK {
        return Err(Misuse::Corrupted);
    }
    Ok(b)
}

/// Whether the used block at `p` (of region `d`) waits on a remote list:
/// its first word decodes, under the links' key, to the end of a list or
/// to a payload in a region of the same arena. `fold` clears the word of
/// every block it takes, so a block handed out again never keeps a link;
/// program data (independent of the secret key) decodes to one by chance
/// only, with odds far below 2^-20.
#[inline]
fn listed(d: &RegionDesc, p: usize) -> bool {
    // SAFETY: `p` is the payload of a used block of a live region (at
    // least 16 bytes).
    let next = unsafe { Remote::next(p, REGISTRY.link_secret()) };
    if next == 0 {
        return true;
    }
    if !next.is_multiple_of(ALIGN) {
        return false;
    }
    listed_next(d, next)
}

/// `listed` for a 16-aligned link: whether it names a payload in a region
/// of `d`'s arena.
#[cold]
fn listed_next(d: &RegionDesc, next: usize) -> bool {
    let id = REGISTRY.lookup(next);
    if id == 0 || id == RELEASED {
        return false;
    }
    let n = REGISTRY.desc(id);
    n.owner() == d.owner() && next >= n.start() + HEADER && next < n.end()
}
