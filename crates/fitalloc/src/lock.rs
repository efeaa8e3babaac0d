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
