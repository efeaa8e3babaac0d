//! Arenas: every thread allocates from a heap of its own.
//!
//! ```text
//!  thread slots (process-wide bitmap)    arena table of a `Shared` (chunks of 64)
//!   slot 0: main thread  ───────────────>  [ lock | remote list | Arena { heap, options, calls } ]
//!   slot 1: worker A     ───────────────>  [ lock | remote list | Arena ... ]
//!   slot 2: (free: its thread exited; the next new thread takes it, heap and all)
//! ```
//!
//! - A thread's **slot** is the lowest free number when it first allocates
//!   (the first thread gets 0), kept in a pthread key whose destructor gives
//!   it back when the thread exits, and read on every call from a word of
//!   the thread's own (initial-exec) TLS. Every [`crate::global::Shared`] uses
//!   arena `slot` for that thread, so a thread's malloc and free of its own
//!   blocks enter only its own arena's lock, as its owner: two plain
//!   stores and a load ([`crate::lock::OwnedLock`]).
//! - A block freed by **another** thread is pushed onto its arena's
//!   [`Remote`] list (one compare-and-swap); the arena's user folds the list
//!   into its heap at its next call. The list is linked through the freed
//!   blocks' first payload word, encoded with a key of its own (not the
//!   header checks') and checked (page map, owner) before it is followed,
//!   so a program writing into a freed block cannot steer the fold. A list
//!   whose arena has no thread (it exited) or that grows past
//!   [`REMOTE_LIMIT`] blocks or [`REMOTE_BYTES`] is folded by the pusher
//!   itself, under the arena's lock, and an exiting thread folds its own
//!   (the exit hook): no list grows without bound, and none outlives its
//!   thread for long.
//! - More than [`MAX_ARENAS`] live threads share arenas (the lock makes
//!   that correct, only slower): such a thread's slot carries [`SHARED`],
//!   and is not given back when it exits.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

/// Arenas (and thread slots) at most.
pub const MAX_ARENAS: usize = 1024;
/// A remote list this long is folded by the thread that pushes onto it.
pub const REMOTE_LIMIT: u64 = 1024;
/// A remote list holding this many bytes of blocks is folded by the thread
/// that pushes onto it (so an owner that stops allocating holds at most
/// this much in blocks of a page or more, and `REMOTE_LIMIT` smaller ones,
/// for others).
pub const REMOTE_BYTES: u64 = 4 << 20;
/// Blocks under this size are not counted in a list's bytes (the count
/// bounds them).
const SMALL_REMOTE: usize = 4096;
/// In a [`my_slot`] answer: the thread did not get a slot of its own (more
/// live threads than arenas) and shares this one.
pub const SHARED: usize = 1 << 15;
/// In a [`my_slot`] answer: the slot number.
pub const SLOT_MASK: usize = MAX_ARENAS - 1;
/// [`my_slot`]'s answer to a thread past its exit destructor (glibc frees
/// its thread-exit buffers after every key destructor has run, and a
/// program's destructor may allocate after ours): it has no slot any more,
/// and must not take one for good, since no destructor would give it back.
pub const NO_SLOT: usize = usize::MAX - 1;
/// The TLS word of such a thread (read as `NO_SLOT + 1`).
const EXITED: usize = NO_SLOT + 1;

static TAKEN: [AtomicU64; MAX_ARENAS / 64] = [const { AtomicU64::new(0) }; MAX_ARENAS / 64];
/// The pthread key holding each thread's slot + 1 (stored as key + 1; 0:
/// not created yet; u32::MAX: could not be created).
static KEY: AtomicU32 = AtomicU32::new(0);
/// Where a thread finds its slot on every call, without asking the key:
/// `get` returns slot + 1 (the key's encoding; 0: not known yet).
///
/// On x86-64 Linux, one word of initial-exec TLS (glibc asks a malloc for
/// exactly that model: its static TLS block exists before the thread's
/// first instruction, and reading it is two loads, no call, no
/// allocation). Rust's own TLS is general-dynamic and registers
/// destructors, so the word is declared in assembly.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod fast {
    core::arch::global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 3",
        ".globl fitalloc_thread_slot",
        ".hidden fitalloc_thread_slot",
        ".type fitalloc_thread_slot, @object",
        ".size fitalloc_thread_slot, 8",
        "fitalloc_thread_slot:",
        ".zero 8",
        ".popsection",
    );

    /// The calling thread's word.
    #[inline(always)]
    pub fn get() -> usize {
        let v: usize;
        // SAFETY: reads the calling thread's own TLS word (its offset from
        // the thread pointer is in the GOT); nothing else writes it.
        unsafe {
            core::arch::asm!(
                "mov {t}, qword ptr [rip + fitalloc_thread_slot@GOTTPOFF]",
                "mov {v}, qword ptr fs:[{t}]",
                t = out(reg) _,
                v = out(reg) v,
                options(nostack, readonly, preserves_flags),
            )
        };
        v
    }

    /// Sets the calling thread's word.
    #[inline]
    pub fn set(v: usize) {
        // SAFETY: as in `get`; the word is the calling thread's.
        unsafe {
            core::arch::asm!(
                "mov {t}, qword ptr [rip + fitalloc_thread_slot@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {v}",
                t = out(reg) _,
                v = in(reg) v,
                options(nostack, preserves_flags),
            )
        };
    }
}

/// Elsewhere: the key itself (`pthread_getspecific` does not allocate).
/// It cannot mark an exited thread: one that allocates after its exit
/// destructor takes a slot again, given back only if glibc runs the
/// destructors once more.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod fast {
    #[inline]
    pub fn get() -> usize {
        match super::thread_key() {
            // SAFETY: reading this thread's value of our key.
            Some(k) => unsafe { libc::pthread_getspecific(k) as usize },
            None => 0,
        }
    }

    /// The key already holds it.
    #[inline]
    pub fn set(_v: usize) {}
}

/// Whether slot `s` belongs to a live thread. Sequentially consistent,
/// as are `release` and a push onto a remote list: a thread that pushes
/// and then finds the slot free, and an exiting thread that frees its slot
/// and then looks at its list, cannot both miss the other (one of them
/// folds the list).
pub fn slot_taken(s: usize) -> bool {
    TAKEN[s / 64].load(SeqCst) & 1 << (s % 64) != 0
}

/// Claims the lowest free slot; `None` if all are taken.
pub fn claim() -> Option<usize> {
    for (w, word) in TAKEN.iter().enumerate() {
        let mut v = word.load(Relaxed);
        while v != !0 {
            let bit = (!v).trailing_zeros() as usize;
            match word.compare_exchange_weak(v, v | 1 << bit, AcqRel, Relaxed) {
                Ok(_) => return Some(w * 64 + bit),
                Err(now) => v = now,
            }
        }
    }
    None
}

/// Gives slot `s` back.
pub fn release(s: usize) {
    TAKEN[s / 64].fetch_and(!(1 << (s % 64)), SeqCst);
}

/// What runs when a thread gives its slot back, with the slot's number:
/// allocator.so folds the slot's remote list there (blocks other threads
/// freed while the owner lived would otherwise wait for the slot's next
/// thread). 0: nothing.
static EXIT_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Sets the hook run when a thread has given its slot back (see
/// `EXIT_HOOK`).
pub fn set_exit_hook(f: fn(usize)) {
    EXIT_HOOK.store(f as usize, Release);
}

/// The thread is exiting: its slot (and arena) is free for the next thread.
extern "C" fn thread_exit(value: *mut c_void) {
    // A later call on this thread (another key's destructor, glibc's own
    // exit cleanup) finds it marked and borrows a slot for that call only
    // (`global::borrow_arena`).
    fast::set(EXITED);
    let v = value as usize;
    if v != 0 && v - 1 < MAX_ARENAS {
        release(v - 1);
        let hook = EXIT_HOOK.load(Acquire);
        if hook != 0 {
            // SAFETY: only `set_exit_hook` stores a non-zero value, a
            // `fn(usize)`.
            let f: fn(usize) = unsafe { core::mem::transmute::<usize, fn(usize)>(hook) };
            f(v - 1);
        }
    }
}

fn thread_key() -> Option<libc::pthread_key_t> {
    match KEY.load(Acquire) {
        0 => {}
        u32::MAX => return None,
        k => return Some(k - 1),
    }
    let mut k: libc::pthread_key_t = 0;
    // SAFETY: creating a key with a destructor that only clears a bit;
    // glibc does not allocate for the first 32 keys, and allocator.so
    // creates its key from its constructor, early.
    if unsafe { libc::pthread_key_create(&mut k, Some(thread_exit)) } != 0 {
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

/// Creates the slot key early (called from allocator.so's constructor), so
/// that it gets a small key number.
pub fn prepare_threads() {
    let _ = thread_key();
    // Registering for membarrier waits for an RCU grace period once there
    // are threads (milliseconds); now it costs microseconds.
    let _ = crate::lock::biased();
}

/// The calling thread's slot (its arena number, `& SLOT_MASK`), with
/// [`SHARED`] set if it shares it; [`NO_SLOT`] once it has exited.
#[inline]
pub fn my_slot() -> usize {
    match fast::get() {
        0 => my_slot_slow(),
        v => v - 1,
    }
}

#[inline(never)]
fn my_slot_slow() -> usize {
    let slot = my_slot_from_key();
    fast::set(slot + 1);
    slot
}

fn my_slot_from_key() -> usize {
    let key = thread_key();
    if let Some(k) = key {
        // SAFETY: reading this thread's value of our key.
        let v = unsafe { libc::pthread_getspecific(k) } as usize;
        if v != 0 {
            return v - 1;
        }
    }
    let slot = claim().unwrap_or_else(|| {
        // More live threads than arenas: share one, chosen by thread (and
        // not given back when the thread exits).
        // SAFETY: pthread_self has no preconditions and does not allocate.
        ((unsafe { libc::pthread_self() } as usize >> 12) % MAX_ARENAS) | SHARED
    });
    if let Some(k) = key {
        // SAFETY: setting this thread's value of our key; for keys below 32
        // glibc stores it inline without allocating.
        unsafe { libc::pthread_setspecific(k, (slot + 1) as *const c_void) };
    }
    slot
}

/// Fork "child": only the forking thread lives on; every other slot is
/// free again (their arenas, with their blocks, go to the next threads).
pub fn fork_child() {
    // The slot the forking thread uses (+ 1), as its calls find it.
    let mine = fast::get();
    for w in &TAKEN {
        w.store(0, Relaxed);
    }
    if mine != 0 && mine - 1 < MAX_ARENAS {
        TAKEN[(mine - 1) / 64].fetch_or(1 << ((mine - 1) % 64), Relaxed);
    }
}

// ---------------------------------------------------------------------------
// The remote-free list.

const ADDR_BITS: u32 = 44;
const ADDR_MASK: u64 = (1 << ADDR_BITS) - 1;
const COUNT_MAX: u64 = (1 << (64 - ADDR_BITS)) - 1;

/// Blocks freed by other threads, waiting for their arena (see the module
/// docs). The head word packs the first block's address / 16 and the
/// list's length, so one compare-and-swap updates both.
#[repr(align(64))]
pub struct Remote {
    head: AtomicU64,
    /// Bytes of the blocks of `SMALL_REMOTE` or more pushed since the list
    /// was last taken (a concurrent push may be counted into the next
    /// list: a hint for when to fold, never used for anything else).
    bytes: AtomicU64,
}

impl Default for Remote {
    fn default() -> Self {
        Self::new()
    }
}

/// The encoded link stored in a listed block's first payload word.
#[inline]
fn encode(p: usize, next: usize, key: u64) -> u64 {
    next as u64 ^ key ^ (p as u64).rotate_left(29)
}

impl Remote {
    /// An empty list.
    pub const fn new() -> Remote {
        Remote {
            head: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Whether the list may hold blocks (one relaxed load).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head.load(Relaxed) == 0
    }

    /// Pushes the block whose payload is `p` (16-aligned, inside a region
    /// of the arena's heap, no longer used by the program), `size` bytes
    /// long; returns the list's length after the push (saturating) and the
    /// bytes it holds.
    ///
    /// # Safety
    /// `p` must be the payload of a block of a live region, with at least 8
    /// bytes that nothing else writes until the list is taken.
    pub unsafe fn push(&self, p: usize, size: usize, key: u64) -> (u64, u64) {
        let mut h = self.head.load(Relaxed);
        loop {
            let next = ((h & ADDR_MASK) << 4) as usize;
            // SAFETY: the caller gives us `p`'s first payload word.
            unsafe { (p as *mut u64).write(encode(p, next, key)) };
            let count = ((h >> ADDR_BITS) + 1).min(COUNT_MAX);
            let new = (p as u64 >> 4) | count << ADDR_BITS;
            // SeqCst: see `slot_taken`.
            match self.head.compare_exchange_weak(h, new, SeqCst, Relaxed) {
                // Blocks under a page are bounded by the count (at most
                // 4 MiB of them): only larger ones pay for the sum.
                Ok(_) if size < SMALL_REMOTE => return (count, 0),
                Ok(_) => {
                    let bytes = self.bytes.fetch_add(size as u64, Relaxed) + size as u64;
                    return (count, bytes);
                }
                Err(now) => h = now,
            }
        }
    }

    /// Whether the list may hold blocks, ordered after this thread's
    /// release of its slot (see `slot_taken`).
    pub fn is_empty_seqcst(&self) -> bool {
        self.head.load(SeqCst) == 0
    }

    /// Takes the whole list; returns its first payload address (0: empty).
    #[inline]
    pub fn take(&self) -> usize {
        self.bytes.store(0, Relaxed);
        ((self.head.swap(0, Acquire) & ADDR_MASK) << 4) as usize
    }

    /// The payload after `p` in a taken list (0 at the end), read from
    /// `p`'s first word; the caller checks it before following it.
    ///
    /// # Safety
    /// `p` must be a payload of a taken list (checked to be the heap's).
    pub unsafe fn next(p: usize, key: u64) -> usize {
        // SAFETY: the caller checked that `p` lies in a region of the heap.
        let word = unsafe { (p as *const u64).read() };
        (word ^ key ^ (p as u64).rotate_left(29)) as usize
    }
}
