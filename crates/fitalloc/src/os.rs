//! The operating system: the only module that calls `mmap` and `munmap`.
//!
//! [`PageSource`] is what a heap maps its regions from; [`OsPages`] is the
//! real one. Tests wrap it to inject failures.

use core::ptr;

/// Where a heap gets its regions.
pub trait PageSource {
    /// The granularity of `map`: every length passed is a multiple of it.
    fn page_size(&self) -> usize;

    /// Maps `len` bytes of readable, writable memory aligned to a page.
    /// Returns the address and whether the memory is known to be zero.
    fn map(&mut self, len: usize) -> Option<(usize, bool)>;

    /// Gives a span back.
    ///
    /// # Safety
    /// `addr` and `len` must be exactly a span returned by `map` on this
    /// source, and nothing may use that memory afterwards.
    unsafe fn unmap(&mut self, addr: usize, len: usize);

    /// Spans of at least this many bytes may be backed by transparent huge
    /// pages (`usize::MAX`: never).
    fn huge_from(&self) -> usize {
        usize::MAX
    }

    /// The span `[addr, addr + len)` (from `map`) now holds many small
    /// blocks: pages not yet touched should be small ones, or touching a
    /// few headers would make megabytes resident.
    fn prefer_small_pages(&mut self, addr: usize, len: usize) {
        let _ = (addr, len);
    }
}

/// Regions straight from `mmap`, returned with `munmap`.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsPages;

impl PageSource for OsPages {
    fn page_size(&self) -> usize {
        page_size()
    }

    fn map(&mut self, len: usize) -> Option<(usize, bool)> {
        map_anon(len).map(|a| (a, true))
    }

    unsafe fn unmap(&mut self, addr: usize, len: usize) {
        // SAFETY: the caller passes a span that `map` returned and no longer uses.
        unsafe { unmap_anon(addr, len) }
    }
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions and does not allocate.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 {
        4096
    } else {
        p as usize
    }
}

/// The system page size, asked once.
#[inline]
pub fn page_size_cached() -> usize {
    static PAGE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
    match PAGE.load(core::sync::atomic::Ordering::Relaxed) {
        0 => {
            let p = page_size();
            PAGE.store(p, core::sync::atomic::Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// Maps `len` bytes of fresh zeroed memory; `None` if the kernel refuses.
pub fn map_anon(len: usize) -> Option<usize> {
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as usize)
}

/// Transparent huge page size, where the kernel offers them.
const HUGE: usize = 2 << 20;

/// Asks for small pages in a span `map_huge` gave huge ones.
pub fn no_huge_pages(addr: usize, len: usize) {
    // SAFETY: madvise only changes the paging advice of our own mapping.
    keep_errno(|| unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_NOHUGEPAGE) });
}

/// Maps `len` bytes (a large region's worth) and asks for transparent huge
/// pages: one page fault per 2 MiB instead of per 4 KiB where the program
/// fills its block. Neither the span's first page nor its last lies in a
/// huge page (the span starts one or two small pages before a huge page
/// boundary and does not end on one, so the 2 MiB around each are not all
/// in the mapping): the heap writes headers there at once (the block's,
/// and its tail's when the block does not fill the last page), and a
/// program that never touches its block, or shrinks it and carves it into
/// small ones, must not get megabytes resident for a few headers (nor,
/// under the kernel's default `defrag=madvise`, faults that wait for
/// compaction: 25 ms each on a busy host). Falls back to a plain mapping.
pub fn map_huge(len: usize) -> Option<usize> {
    let Some(span) = map_anon(len + HUGE) else {
        return map_anon(len);
    };
    let page = page_size_cached();
    let mut start = (span + 2 * page).next_multiple_of(HUGE) - page;
    if (start + len).is_multiple_of(HUGE) {
        start -= page;
    }
    let (head, tail) = (start - span, span + len + HUGE - (start + len));
    // SAFETY: both slices lie in the mapping just made and are unused.
    unsafe {
        if head > 0 {
            unmap_anon(span, head);
        }
        if tail > 0 {
            unmap_anon(start + len, tail);
        }
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    Some(start)
}

static TRIM: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Sets what `map_meta` calls when the kernel refuses a mapping: something
/// that gives memory held in reserve (cached spans) back to the kernel.
pub fn set_trim_hook(f: fn()) {
    TRIM.store(f as usize, core::sync::atomic::Ordering::Relaxed);
}

/// Maps `len` bytes of zeroed memory for the allocator's own metadata. If
/// the kernel refuses (address space limit), the trim hook gives cached
/// spans back first and the mapping is tried once more.
pub fn map_meta(len: usize) -> Option<usize> {
    map_anon(len).or_else(|| {
        let hook = TRIM.load(core::sync::atomic::Ordering::Relaxed);
        if hook == 0 {
            return None;
        }
        // SAFETY: only `set_trim_hook` stores here, always a `fn()`.
        let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(hook) };
        f();
        map_anon(len)
    })
}

/// Grows a mapping made by `map_anon` to `new` bytes, moving it if needed;
/// the contents are kept. `None` if the kernel refuses (the old mapping is
/// then untouched).
///
/// # Safety
/// `addr`, `old` must be exactly a live mapping from `map_anon` (or from an
/// earlier `remap_anon`); on success the old range must not be used again.
pub unsafe fn remap_anon(addr: usize, old: usize, new: usize) -> Option<usize> {
    // SAFETY: the caller owns the mapping; MREMAP_MAYMOVE moves it as a whole.
    let p = unsafe { libc::mremap(addr as *mut libc::c_void, old, new, libc::MREMAP_MAYMOVE) };
    (p != libc::MAP_FAILED).then_some(p as usize)
}

/// Unmaps a span.
///
/// # Safety
/// The span must have come from `map_anon` and must not be used afterwards.
pub unsafe fn unmap_anon(addr: usize, len: usize) {
    // SAFETY: the caller gives up the span; munmap of our own mapping is sound.
    keep_errno(|| unsafe { libc::munmap(addr as *mut libc::c_void, len) });
}

/// Runs `f` (a system call) and puts `errno` back as it was: `free` and
/// the other calls that must not change `errno` reach no system call
/// except through this.
#[inline]
pub fn keep_errno<T>(f: impl FnOnce() -> T) -> T {
    let saved = errno();
    let r = f();
    set_errno(saved);
    r
}

/// Writes all of `bytes` to a file descriptor, retrying short writes;
/// `errno` is left as it was.
pub fn write_all(fd: i32, bytes: &[u8]) {
    keep_errno(|| write_all_raw(fd, bytes))
}

fn write_all_raw(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno.
pub fn set_errno(e: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = e }
}

extern "C" {
    /// glibc (2.32+): true while the process has never had a second thread.
    static __libc_single_threaded: u8;
}

/// Whether the process is known to have only one thread (glibc sets this to
/// false before creating the first thread).
#[inline]
pub fn single_threaded() -> bool {
    // SAFETY: a byte that glibc defines for the life of the process; it
    // changes only while this thread is the only one (inside pthread_create).
    unsafe { core::ptr::addr_of!(__libc_single_threaded).read_volatile() != 0 }
}

/// The process id.
pub fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Ends the process with SIGABRT.
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// A 64-bit secret from the kernel's `getrandom` (without blocking). If
/// the pool is not ready yet (very early boot), it falls back to a mix of
/// AT_RANDOM's *second* half (its first 8 bytes are glibc's stack canary,
/// which must not double as this key), the clock and a stack address.
pub fn random_seed() -> u64 {
    let mut v = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into `v`; GRND_NONBLOCK
    // makes it fail rather than wait.
    let n = keep_errno(|| unsafe {
        libc::getrandom((&mut v as *mut u64).cast(), 8, libc::GRND_NONBLOCK)
    });
    if n == 8 && v != 0 {
        return v;
    }
    // SAFETY: getauxval has no preconditions.
    let at = unsafe { libc::getauxval(libc::AT_RANDOM) } as usize;
    let mut x = if at != 0 {
        // SAFETY: AT_RANDOM points at 16 random bytes the kernel placed on
        // the initial stack, valid for the life of the process.
        unsafe { ptr::read_unaligned((at + 8) as *const u64) }
    } else {
        0
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    x ^= (ts.tv_sec as u64) << 32 ^ ts.tv_nsec as u64 ^ (&ts as *const _ as u64).rotate_left(17);
    (x ^ (x >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Whether the process runs with privileges it did not get from its user
/// (setuid, setgid, capabilities): glibc's `__libc_enable_secure`, from the
/// kernel's AT_SECURE. Such a process ignores every `ALLOCATOR_*` option.
pub fn secure() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}
