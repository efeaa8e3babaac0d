//! The `ALLOCATOR_*` options, read from `environ` without allocating.
//!
//! Reading walks the environment once. To notice a `setenv()` without a
//! `getenv` per call, [`Options::stale`] compares a fingerprint: the
//! `environ` pointer, the terminating NULL at the old length, the last
//! entry's pointer, and the entry pointer of every option found. Any
//! difference means "read again". (glibc's `unsetenv` shrinks the array in
//! place, and the next `setenv` may realloc it back to the same address and
//! length with the new entry last: only the last entry tells.)

use core::ffi::c_char;
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use crate::heap::Policy;

extern "C" {
    static mut environ: *const *const c_char;
}

const KEYS: [&[u8]; 6] = [
    b"ALLOCATOR_ALGORITHM=",
    b"ALLOCATOR_SCRIBBLE=",
    b"ALLOCATOR_CHECK=",
    b"ALLOCATOR_LEAK_CHECK=",
    b"ALLOCATOR_STATS=",
    b"ALLOCATOR_TRACE=",
];

/// `Options::env` before the first read: no pointer to the `environ`
/// array (which holds pointers, so is aligned) has this value.
const NOT_READ: usize = usize::MAX;

/// A word that is always 0: what `Options::end_at` and `Options::last_at`
/// point to when the environment has no such entry.
static NOTHING: usize = 0;

/// The options in effect.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// `ALLOCATOR_ALGORITHM` (None when unset or unknown).
    pub policy: Option<Policy>,
    /// `ALLOCATOR_SCRIBBLE`.
    pub scribble: bool,
    /// `ALLOCATOR_CHECK`.
    pub check: bool,
    /// `ALLOCATOR_LEAK_CHECK`.
    pub leak_check: bool,
    /// `ALLOCATOR_STATS`.
    pub stats: bool,
    /// `ALLOCATOR_TRACE`: the value (a C string in the environment) or null.
    pub trace: *const c_char,
    /// The `environ` pointer when read; `NOT_READ` before the first read.
    env: usize,
    /// Where the array's terminating null was (`environ + len`), or
    /// `NOTHING` when there was no array.
    end_at: *const usize,
    /// Where its last entry was (`environ + len - 1`), or `NOTHING` when
    /// there was none.
    last_at: *const usize,
    /// The last entry's pointer (0 when the environment is empty).
    last: usize,
    /// Per key: (index in environ, entry pointer), pointer 0 if absent.
    found: [(usize, usize); KEYS.len()],
    /// Whether any key was found (most programs: none, one branch).
    any_found: bool,
}

// SAFETY: `trace` points into the environment, which lives for the process;
// the struct is only used under the heap lock.
unsafe impl Send for Options {}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

impl Options {
    /// No options, not yet read.
    pub const fn new() -> Options {
        Options {
            policy: None,
            scribble: false,
            check: false,
            leak_check: false,
            stats: false,
            trace: core::ptr::null(),
            env: NOT_READ,
            end_at: &NOTHING,
            last_at: &NOTHING,
            last: 0,
            found: [(0, 0); KEYS.len()],
            any_found: false,
        }
    }

    /// Whether the environment may have changed since the last `read`.
    #[inline]
    pub fn stale(&self) -> bool {
        let env = environ_ptr();
        if env as usize != self.env {
            return true;
        }
        // SAFETY: both point at `NOTHING` or into the array at `env`, which
        // held every entry up to `end_at` when read. `unsetenv` shrinks it
        // in place (its memory stays); a `setenv` that reallocs it to fewer
        // entries keeps the pointer only by shrinking it in place, and the
        // tail it gives back stays mapped in its region; an array of the
        // program's own stays its own. Both words are readable.
        if unsafe { *self.end_at != 0 || *self.last_at != self.last } {
            return true;
        }
        self.any_found
            && self.found.iter().any(|&(i, p)| {
                // SAFETY: entry `i` lies before `end_at`, in the array
                // checked above.
                p != 0 && unsafe { *env.add(i) as usize != p }
            })
    }

    /// Reads every option from the environment.
    pub fn read(&mut self) {
        *self = Options::new();
        let env = environ_ptr();
        self.env = env as usize;
        if env.is_null() {
            return;
        }
        // A setuid/setgid program obeys none of them (as glibc ignores its
        // own malloc settings there): the caller must not choose where its
        // files go or learn its heap addresses.
        let obey = !secure();
        let mut i = 0;
        loop {
            // SAFETY: environ is a NULL-terminated array of C strings.
            let entry = unsafe { *env.add(i) };
            if entry.is_null() {
                break;
            }
            if !obey {
                i += 1;
                continue;
            }
            // SAFETY: each entry is a NUL-terminated string.
            let bytes = unsafe { core::ffi::CStr::from_ptr(entry) }.to_bytes();
            let key = KEYS.iter().position(|k| bytes.starts_with(k));
            // The first occurrence wins, as with getenv.
            if let Some(k) = key.filter(|&k| self.found[k].1 == 0) {
                self.found[k] = (i, entry as usize);
                self.any_found = true;
                // SAFETY: the value starts right after the key, inside the string.
                let raw = unsafe { entry.add(KEYS[k].len()) };
                self.set(k, &bytes[KEYS[k].len()..], raw);
            }
            i += 1;
        }
        self.end_at = env.wrapping_add(i) as *const usize;
        if i > 0 {
            self.last_at = env.wrapping_add(i - 1) as *const usize;
            // SAFETY: entry `i - 1` was read above.
            self.last = unsafe { *env.add(i - 1) } as usize;
        }
    }

    fn set(&mut self, key: usize, value: &[u8], raw: *const c_char) {
        let on = !value.is_empty() && value != b"0";
        match key {
            0 => {
                self.policy = Policy::from_name(value);
                if self.policy.is_none() && !value.is_empty() {
                    warn_unknown_policy(value);
                }
            }
            1 => self.scribble = on,
            2 => self.check = on,
            3 => self.leak_check = on,
            4 => self.stats = on,
            _ => {
                self.trace = if value.is_empty() {
                    core::ptr::null()
                } else {
                    raw
                }
            }
        }
    }
}

/// Longest part of an unknown policy value that the warning shows.
const SHOWN: usize = 40;

/// Warns about an unknown `ALLOCATOR_ALGORITHM` value, once per process
/// (however many arenas read it, however often the environment changes),
/// showing at most its first `SHOWN` bytes.
fn warn_unknown_policy(value: &[u8]) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if WARNED.swap(true, Relaxed) {
        return;
    }
    let (shown, more) = if value.len() > SHOWN {
        (&value[..SHOWN], "...")
    } else {
        (value, "")
    };
    crate::eprint_raw!(
        "fitalloc: unknown ALLOCATOR_ALGORITHM '{}{more}', using first_fit\n",
        crate::fmt::Text(shown)
    );
}

/// Whether the process is privileged (AT_SECURE), asked once.
fn secure() -> bool {
    static SECURE: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);
    match SECURE.load(Relaxed) {
        0 => {
            let s = crate::os::secure();
            SECURE.store(1 + s as u8, Relaxed);
            s
        }
        v => v == 2,
    }
}

fn environ_ptr() -> *const *const c_char {
    // SAFETY: reading the `environ` pointer itself; a concurrent setenv is a
    // race the C library has too (getenv), and a stale value is re-checked.
    unsafe { core::ptr::addr_of!(environ).read_volatile() }
}
