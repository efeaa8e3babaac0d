//! A small futex lock that never allocates (PITFALLS: no parking_lot).
//!
//! Three states (Drepper, "Futexes Are Tricky"): 0 unlocked, 1 locked,
//! 2 locked with waiters. The uncontended path is one compare-and-swap; a
//! contended lock spins briefly, then sleeps in `futex_wait`.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering::*};

/// A mutual-exclusion lock without data.
pub struct RawLock {
    state: AtomicU32,
}

impl Default for RawLock {
    fn default() -> Self {
        Self::new()
    }
}

impl RawLock {
    /// An unlocked lock.
    pub const fn new() -> RawLock {
        RawLock {
            state: AtomicU32::new(0),
        }
    }

    /// Takes the lock; the guard releases it.
    #[inline]
    pub fn lock(&self) -> RawGuard<'_> {
        self.acquire();
        RawGuard(self)
    }

    /// Takes the lock without a guard (for fork handlers); pair with `release`.
    #[inline]
    pub fn acquire(&self) {
        if self.state.compare_exchange(0, 1, Acquire, Relaxed).is_err() {
            self.acquire_slow();
        }
    }

    /// Takes the lock if it is free; false if someone holds it.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        self.state.compare_exchange(0, 1, Acquire, Relaxed).is_ok()
    }

    #[cold]
    fn acquire_slow(&self) {
        for _ in 0..100 {
            core::hint::spin_loop();
            if self.state.load(Relaxed) == 0
                && self.state.compare_exchange(0, 1, Acquire, Relaxed).is_ok()
            {
                return;
            }
        }
        while self.state.swap(2, Acquire) != 0 {
            futex(&self.state, libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, 2);
        }
    }

    /// Releases a lock taken with `acquire`.
    #[inline]
    pub fn release(&self) {
        if self.state.swap(0, Release) == 2 {
            futex(&self.state, libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1);
        }
    }

    /// Makes the lock free again without waking anyone: for the child of
    /// `fork`, where the thread that held it no longer exists.
    pub fn reset(&self) {
        self.state.store(0, Release);
    }
}

fn futex(word: &AtomicU32, op: i32, val: u32) {
    // SAFETY: the futex word is a live, aligned u32; a null timeout waits
    // without limit; FUTEX_WAIT returns at once if the word changed.
    crate::os::keep_errno(|| unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            core::ptr::null::<libc::timespec>(),
        )
    });
}

/// Releases a [`RawLock`] when dropped.
pub struct RawGuard<'a>(&'a RawLock);

impl Drop for RawGuard<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Data behind a [`RawLock`].
pub struct Lock<T> {
    raw: RawLock,
    data: UnsafeCell<T>,
}

// SAFETY: the lock gives one thread at a time access to `data`.
unsafe impl<T: Send> Sync for Lock<T> {}
// SAFETY: moving the lock moves the data, which is Send.
unsafe impl<T: Send> Send for Lock<T> {}

impl<T> Lock<T> {
    /// Wraps `data`.
    pub const fn new(data: T) -> Lock<T> {
        Lock {
            raw: RawLock::new(),
            data: UnsafeCell::new(data),
        }
    }

    /// Locks and returns a guard giving access to the data.
    #[inline]
    pub fn lock(&self) -> Guard<'_, T> {
        self.raw.acquire();
        Guard(self, true)
    }

    /// Like `lock`, but takes no lock while the process has a single thread
    /// (`crate::os::single_threaded`): nobody can race, and the lock's
    /// atomic operations are the largest part of an uncontended call.
    #[inline]
    pub fn lock_if_threaded(&self) -> Guard<'_, T> {
        let threaded = !crate::os::single_threaded();
        if threaded {
            self.raw.acquire();
        }
        Guard(self, threaded)
    }

    /// The raw lock, for fork handlers.
    pub fn raw(&self) -> &RawLock {
        &self.raw
    }

    /// The data, for code that holds the raw lock without a guard (fork
    /// handlers). Dereferencing it is sound only while this thread holds
    /// the lock and no guard exists.
    pub fn data_ptr(&self) -> *mut T {
        self.data.get()
    }
}

/// Access to a [`Lock`]'s data while it is held (or while the process is
/// single-threaded, when the second field is false).
pub struct Guard<'a, T>(&'a Lock<T>, bool);

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held.
        unsafe { &*self.0.data.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the lock is held, and `&mut self`
        // makes this the only reference through the guard.
        unsafe { &mut *self.0.data.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        if self.1 {
            self.0.raw.release();
        }
    }
}

// ---------------------------------------------------------------------------
// The arena lock: free for its owner thread.

/// `open`: the owner may enter without the lock.
const OPEN: u32 = 1;
/// `open`: closed, and the owner reopens it at its next (locked) entry.
const CLOSED: u32 = 0;
/// `open`: closed for good (threads share the arena).
const PINNED: u32 = 2;

/// Whether [`OwnedLock`]s let their owners in without the lock: 0 not known
/// yet, 1 yes (the process is registered for expedited `membarrier`), 2 no.
static BIASED: AtomicU32 = AtomicU32::new(0);

/// Whether owners enter without the lock; the first call registers the
/// process for `MEMBARRIER_CMD_PRIVATE_EXPEDITED` and the first answer
/// stands for the life of the process.
#[inline]
pub fn biased() -> bool {
    match BIASED.load(Relaxed) {
        1 => true,
        2 => false,
        _ => decide_bias(),
    }
}

#[cold]
fn decide_bias() -> bool {
    // SAFETY: membarrier registration takes no pointers.
    let r = crate::os::keep_errno(|| unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            libc::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            0,
            0,
        )
    });
    let want = if r == 0 { 1 } else { 2 };
    match BIASED.compare_exchange(0, want, Relaxed, Relaxed) {
        Ok(_) => want == 1,
        Err(now) => now == 1,
    }
}

/// Makes every running thread of the process execute a full memory
/// barrier (and every other one will have one before it runs again).
fn barrier_everywhere() {
    // The kernel's barrier orders this thread's accesses too; the fences
    // say so in the language's own terms.
    core::sync::atomic::fence(SeqCst);
    for tries in 0.. {
        // SAFETY: the process registered for this command in `decide_bias`
        // (the only way `biased()` is true); it takes no pointers.
        let err = crate::os::keep_errno(|| unsafe {
            let r = libc::syscall(
                libc::SYS_membarrier,
                libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED,
                0,
                0,
            );
            if r == 0 {
                0
            } else {
                *libc::__errno_location()
            }
        });
        match err {
            0 => break,
            // The kernel could not get memory for the CPU mask: try again.
            libc::ENOMEM | libc::EAGAIN | libc::EINTR if tries < 1000 => {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
            _ => {
                crate::eprint_raw!("fitalloc: membarrier failed (errno {err})\n");
                crate::os::abort();
            }
        }
    }
    core::sync::atomic::fence(SeqCst);
}

/// The owner entered its lock again before leaving it: an allocation from
/// a signal handler that interrupted one. Going on would let both change
/// the heap at once.
#[cold]
#[inline(never)]
fn reentered() -> ! {
    crate::eprint_raw!("fitalloc: allocator entered again from inside itself (malloc or free in a signal handler?)\n");
    crate::os::abort()
}

/// How a thread entered an [`OwnedLock`]; give it back to `exit`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
pub enum Entry {
    /// The owner, without the lock.
    Owner,
    /// The owner, with the lock (and its `busy` flag set, so that a
    /// re-entry is seen here too).
    OwnerLocked,
    /// Another thread, with the lock.
    Locked,
}

/// A lock with an owner thread that enters and leaves with two plain
/// stores and a load (no read-modify-write, no fence), while any other
/// thread takes the lock and first shuts the owner out.
///
/// The owner's entry: store `busy = 1`, then load `open`; if the lock is
/// open it is in. Another thread takes `lock`, stores `open = CLOSED`,
/// makes every running thread execute a memory barrier (`membarrier`,
/// which is what replaces the owner's own fence), then waits for `busy ==
/// 0`. After that barrier the owner either had already stored `busy = 1`
/// (and the closer sees it and waits for its exit) or loads `open` after
/// the store of `CLOSED` (and takes the lock instead): the two cannot both
/// miss each other. A closed lock stays closed until its owner enters
/// again: it then takes the lock (waiting for whoever holds it), reopens
/// it, and enters the next time without it; so a thread that often visits
/// an arena whose owner is idle (folding its remote list) pays for the
/// barrier once. Without `membarrier` ([`biased`] false) everyone takes
/// the lock.
///
/// Which thread is the owner is the caller's business: at most one thread
/// may use `enter_owner` at a time.
pub struct OwnedLock {
    lock: RawLock,
    busy: AtomicU32,
    open: AtomicU32,
}

impl Default for OwnedLock {
    fn default() -> Self {
        Self::new()
    }
}

impl OwnedLock {
    /// An unlocked lock, closed (its owner takes the lock once).
    pub const fn new() -> OwnedLock {
        OwnedLock {
            lock: RawLock::new(),
            busy: AtomicU32::new(0),
            open: AtomicU32::new(CLOSED),
        }
    }

    /// Enters as the owner.
    #[inline]
    pub fn enter_owner(&self) -> Entry {
        if biased() {
            if self.busy.load(Relaxed) != 0 {
                // Only the owner sets it: the owner is inside already.
                reentered();
            }
            self.busy.store(1, Relaxed);
            // Keeps the compiler from loading `open` before the store; the
            // processor's own reordering is what the closer's barrier
            // covers.
            core::sync::atomic::compiler_fence(SeqCst);
            if self.open.load(Acquire) == OPEN {
                return Entry::Owner;
            }
            self.busy.store(0, Release);
        }
        self.enter_owner_slow()
    }

    #[cold]
    #[inline(never)]
    fn enter_owner_slow(&self) -> Entry {
        self.lock.acquire();
        if !biased() {
            return Entry::Locked;
        }
        if self.open.load(Relaxed) == CLOSED {
            self.open.store(OPEN, Relaxed);
        }
        // Nobody else looks at it while we hold the lock.
        self.busy.store(1, Relaxed);
        Entry::OwnerLocked
    }

    /// Leaves, after `enter_owner` or `enter`.
    #[inline]
    pub fn exit(&self, e: Entry) {
        match e {
            Entry::Owner => self.busy.store(0, Release),
            Entry::OwnerLocked => {
                self.busy.store(0, Relaxed);
                self.lock.release();
            }
            Entry::Locked => self.lock.release(),
        }
    }

    /// Enters as any thread but the owner: takes the lock and shuts the
    /// owner out. `share`: the caller will come again and again (threads
    /// share the arena), so the owner stays on the lock too.
    pub fn enter(&self, share: bool) -> Entry {
        self.lock.acquire();
        self.shut_owner_out(share)
    }

    /// Enters as any thread but the owner if nobody holds the lock.
    pub fn try_enter(&self) -> Option<Entry> {
        self.lock.try_acquire().then(|| self.shut_owner_out(false))
    }

    /// With the lock held: closes it and, if the owner may be inside,
    /// waits for it to leave.
    fn shut_owner_out(&self, share: bool) -> Entry {
        if self.close(share) {
            barrier_everywhere();
            self.wait_owner();
        }
        Entry::Locked
    }

    /// Takes the lock and closes it; true if it was open, in which case
    /// the caller must run [`OwnedLock::barrier`] and then `wait_owner`
    /// before it touches what the lock guards. (Split so that a thread
    /// taking many locks needs one barrier.)
    pub fn lock_closing(&self, share: bool) -> bool {
        self.lock.acquire();
        self.close(share)
    }

    fn close(&self, share: bool) -> bool {
        let was = self.open.load(Relaxed);
        let now = if share || was == PINNED {
            PINNED
        } else {
            CLOSED
        };
        if was != now {
            self.open.store(now, Relaxed);
        }
        was == OPEN
    }

    /// The barrier of [`OwnedLock::lock_closing`] (one for any number of
    /// locks closed before it).
    pub fn barrier() {
        barrier_everywhere();
    }

    /// Waits until the owner has left (after the barrier).
    pub fn wait_owner(&self) {
        let mut spins = 0u32;
        while self.busy.load(Acquire) != 0 {
            spins += 1;
            if spins < 200 {
                core::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }

    /// Releases a lock taken with `lock_closing`.
    pub fn release(&self) {
        self.lock.release();
    }

    /// For the child of `fork` (only the forking thread lives): frees the
    /// lock, which stays closed (the owner reopens it).
    pub fn reset(&self) {
        self.busy.store(0, Relaxed);
        self.lock.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Two words that every holder changes one after the other, with a
    /// pause between: two holders at once lose an update or see them
    /// differ.
    struct Guarded {
        lock: OwnedLock,
        pair: UnsafeCell<[u64; 2]>,
    }

    // SAFETY: `pair` is only touched inside `lock`.
    unsafe impl Sync for Guarded {}

    fn bump(g: &Guarded) {
        // SAFETY: called only inside `g.lock`.
        let pair = unsafe { &mut *g.pair.get() };
        let a = core::hint::black_box(pair[0]);
        assert_eq!(a, pair[1], "two threads inside the lock at once");
        for _ in 0..500 {
            core::hint::spin_loop();
        }
        pair[0] = a + 1;
        core::hint::black_box(&pair);
        pair[1] = a + 1;
    }

    #[test]
    fn the_owner_and_others_never_overlap() {
        let g = Arc::new(Guarded {
            lock: OwnedLock::new(),
            pair: UnsafeCell::new([0, 0]),
        });
        let (owner_steps, other_steps) = (50_000u64, 2_000u64);
        let owner = {
            let g = g.clone();
            std::thread::spawn(move || {
                let mut fast = 0u64;
                for _ in 0..owner_steps {
                    let e = g.lock.enter_owner();
                    fast += (e == Entry::Owner) as u64;
                    bump(&g);
                    g.lock.exit(e);
                }
                fast
            })
        };
        let others: std::vec::Vec<_> = (0..2)
            .map(|k| {
                let g = g.clone();
                std::thread::spawn(move || {
                    for n in 0..other_steps {
                        let e = if (n + k) % 3 == 0 {
                            match g.lock.try_enter() {
                                Some(e) => e,
                                None => g.lock.enter(false),
                            }
                        } else {
                            g.lock.enter(false)
                        };
                        bump(&g);
                        g.lock.exit(e);
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        let fast = owner.join().unwrap();
        for t in others {
            t.join().unwrap();
        }
        // SAFETY: every thread that used the lock has been joined.
        let pair = unsafe { *g.pair.get() };
        assert_eq!(pair, [owner_steps + 2 * other_steps; 2]);
        if biased() {
            // Each visit of another thread costs the owner at most one
            // locked entry.
            assert!(
                fast >= owner_steps - 2 * other_steps - 1,
                "fast entries {fast}"
            );
        } else {
            assert_eq!(fast, 0);
        }
    }

    #[test]
    fn the_owner_entering_twice_ends_the_process() {
        if !biased() {
            std::eprintln!("membarrier refused: owners take the lock, nothing to test");
            return;
        }
        // Outer entry without the lock (an open lock), then with it (a
        // closed one: a new lock is closed).
        for open in [true, false] {
            // SAFETY: the child only uses the lock and ends (abort or _exit).
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                let l = OwnedLock::new();
                if open {
                    let e = l.enter_owner();
                    l.exit(e);
                }
                let outer = l.enter_owner();
                if (outer == Entry::Owner) != open {
                    // SAFETY: leaving the child without running the harness.
                    unsafe { libc::_exit(3) };
                }
                let _inner = l.enter_owner();
                // SAFETY: as above.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(
                libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGABRT,
                "open {open}: status {status:#x}"
            );
        }
    }

    #[test]
    fn closed_until_the_owner_comes_back_pinned_for_good() {
        let l = OwnedLock::new();
        let locked = if biased() {
            Entry::OwnerLocked
        } else {
            Entry::Locked
        };
        let first = l.enter_owner();
        assert_eq!(first, locked, "a new lock is closed");
        l.exit(first);
        let want = if biased() {
            Entry::Owner
        } else {
            Entry::Locked
        };
        let e = l.enter_owner();
        assert_eq!(e, want);
        l.exit(e);
        let e = l.enter(false);
        l.exit(e);
        let e = l.enter_owner();
        assert_eq!(e, locked, "another thread closed it");
        l.exit(e);
        let e = l.enter_owner();
        assert_eq!(e, want, "its owner reopened it");
        l.exit(e);
        let e = l.enter(true);
        l.exit(e);
        for _ in 0..3 {
            let e = l.enter_owner();
            assert_eq!(e, locked, "shared: the lock for everyone");
            l.exit(e);
        }
        assert!(!l.lock_closing(false), "a pinned lock needs no barrier");
        l.release();
    }
}
