//! `allocator.so`: fitalloc as the C library's allocator.
//!
//! The only `extern "C"` code of the project. Every exported function is a
//! thin wrapper over [`fitalloc::global::Shared`]; none calls another exported
//! symbol (a call through the symbol table could be interposed). Misuse found
//! by the heap is reported as one line on stderr, then the process aborts.
//!
//! `#![no_std]`, `panic = "abort"`, no thread-local storage, no allocation:
//! see PITFALLS.md.
#![no_std]

use core::ffi::{c_char, c_int, c_void, CStr};
use core::ptr::null_mut;

use fitalloc::eprint_raw;
use fitalloc::global::{Call, Shared};
use fitalloc::heap::Misuse;
use fitalloc::os::{self, errno, set_errno};

static HEAP: Shared = Shared::new(None);

const ENOMEM: c_int = libc::ENOMEM;
const EINVAL: c_int = libc::EINVAL;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    eprint_raw!("fitalloc: internal error: {info}\n");
    os::abort()
}

// ---------------------------------------------------------------------------
// Internal operations (what the exported symbols call).

fn out_of_memory() -> *mut c_void {
    set_errno(ENOMEM);
    null_mut()
}

fn result(p: Option<usize>) -> *mut c_void {
    match p {
        Some(p) => p as *mut c_void,
        None => out_of_memory(),
    }
}

#[cold]
fn misuse(call: Call, m: Misuse, p: *mut c_void) -> ! {
    fitalloc::report::misuse(call, m, p as usize)
}

fn alloc(call: Call, size: usize) -> *mut c_void {
    result(HEAP.malloc(call, size))
}

fn dealloc(call: Call, p: *mut c_void) {
    if p.is_null() {
        return;
    }
    if let Err(m) = HEAP.free(call, p as usize) {
        misuse(call, m, p);
    }
}

fn resize(call: Call, p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return alloc(call, size);
    }
    if size == 0 {
        dealloc(call, p);
        return null_mut();
    }
    match HEAP.realloc(call, p as usize, size) {
        Ok(q) => result(q),
        Err(m) => misuse(call, m, p),
    }
}

fn aligned(call: Call, align: usize, size: usize) -> *mut c_void {
    result(HEAP.memalign(call, align, size))
}

fn zeroed(n: usize, size: usize) -> *mut c_void {
    result(HEAP.calloc(Call::Calloc, n, size))
}

fn rounded_memalign(call: Call, align: usize, size: usize) -> *mut c_void {
    match align.max(1).checked_next_power_of_two() {
        Some(a) => aligned(call, a, size),
        None => {
            set_errno(EINVAL);
            null_mut()
        }
    }
}

fn page_aligned(call: Call, size: usize) -> *mut c_void {
    aligned(call, os::page_size(), size)
}

fn whole_pages(call: Call, size: usize) -> *mut c_void {
    let page = os::page_size();
    match fitalloc::block::round_up(size.max(1), page) {
        Some(s) => aligned(call, page, s),
        None => out_of_memory(),
    }
}

// ---------------------------------------------------------------------------
// The C allocation family.

/// `malloc(3)`.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    alloc(Call::Malloc, size)
}

/// `free(3)`. Aborts on a double free or a pointer not from malloc.
#[no_mangle]
pub extern "C" fn free(p: *mut c_void) {
    dealloc(Call::Free, p)
}

/// `cfree`: an old name of free.
#[no_mangle]
pub extern "C" fn cfree(p: *mut c_void) {
    dealloc(Call::Free, p)
}

/// `calloc(3)`: zeroed, with the multiplication checked.
#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    zeroed(n, size)
}

/// `realloc(3)`; `realloc(p, 0)` frees and returns NULL, as glibc does.
#[no_mangle]
pub extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    resize(Call::Realloc, p, size)
}

/// `reallocarray(3)`.
#[no_mangle]
pub extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(total) => resize(Call::Reallocarray, p, total),
        None => out_of_memory(),
    }
}

/// `posix_memalign(3)`: EINVAL unless `align` is a power of two multiple of
/// `sizeof(void *)`; never sets errno; `*memptr` is written only on success.
///
/// # Safety
/// `memptr` must be valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(
    memptr: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<usize>()) {
        return EINVAL;
    }
    let saved = errno();
    let p = HEAP.memalign(Call::PosixMemalign, align, size);
    set_errno(saved);
    match p {
        Some(p) => {
            // SAFETY: the caller passes a writable pointer slot.
            unsafe { *memptr = p as *mut c_void };
            0
        }
        None => ENOMEM,
    }
}

/// `aligned_alloc(3)`: EINVAL for an alignment that is not a power of two.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(EINVAL);
        return null_mut();
    }
    aligned(Call::AlignedAlloc, align, size)
}

/// `memalign(3)`: a non-power-of-two alignment is rounded up (as glibc does).
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    rounded_memalign(Call::Memalign, align, size)
}

/// `valloc(3)`: page aligned.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    page_aligned(Call::Valloc, size)
}

/// `pvalloc(3)`: page aligned, size rounded up to whole pages.
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    whole_pages(Call::Pvalloc, size)
}

/// `malloc_usable_size(3)`: the writable bytes of the block.
#[no_mangle]
pub extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    match HEAP.usable_size(p as usize) {
        Ok(n) => n,
        Err(m) => misuse(Call::UsableSize, m, p),
    }
}

// glibc's internal names, so that no memory of another heap reaches us.

/// glibc alias of malloc.
#[no_mangle]
pub extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
    alloc(Call::Malloc, size)
}

/// glibc alias of free.
#[no_mangle]
pub extern "C" fn __libc_free(p: *mut c_void) {
    dealloc(Call::Free, p)
}

/// glibc alias of calloc.
#[no_mangle]
pub extern "C" fn __libc_calloc(n: usize, size: usize) -> *mut c_void {
    zeroed(n, size)
}

/// glibc alias of realloc.
#[no_mangle]
pub extern "C" fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    resize(Call::Realloc, p, size)
}

/// glibc alias of memalign.
#[no_mangle]
pub extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
    rounded_memalign(Call::Memalign, align, size)
}

/// glibc alias of valloc.
#[no_mangle]
pub extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
    page_aligned(Call::Valloc, size)
}

/// glibc alias of pvalloc.
#[no_mangle]
pub extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
    whole_pages(Call::Pvalloc, size)
}

/// glibc alias of posix_memalign.
///
/// # Safety
/// As `posix_memalign`.
#[no_mangle]
pub unsafe extern "C" fn __posix_memalign(
    memptr: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    // SAFETY: the caller's contract is posix_memalign's.
    unsafe { posix_memalign(memptr, align, size) }
}

// ---------------------------------------------------------------------------
// Harmless stand-ins for glibc's tuning and statistics calls.

/// `mallopt(3)`: accepted and ignored.
#[no_mangle]
pub extern "C" fn mallopt(_param: c_int, _value: c_int) -> c_int {
    1
}

/// `malloc_trim(3)`: empty regions are already returned; nothing to do.
#[no_mangle]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    0
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Default)]
pub struct Mallinfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

/// glibc's `struct mallinfo` (int fields).
#[repr(C)]
#[derive(Default)]
pub struct Mallinfo {
    arena: c_int,
    ordblks: c_int,
    smblks: c_int,
    hblks: c_int,
    hblkhd: c_int,
    usmblks: c_int,
    fsmblks: c_int,
    uordblks: c_int,
    fordblks: c_int,
    keepcost: c_int,
}

fn info() -> Mallinfo2 {
    let (c, free_blocks) = HEAP.totals();
    Mallinfo2 {
        arena: c.mapped,
        ordblks: free_blocks,
        usmblks: c.peak_in_use,
        uordblks: c.in_use,
        fordblks: c.mapped - c.in_use,
        ..Mallinfo2::default()
    }
}

/// `mallinfo2(3)`: bytes mapped, in use and free.
#[no_mangle]
pub extern "C" fn mallinfo2() -> Mallinfo2 {
    info()
}

/// `mallinfo(3)`: as mallinfo2, truncated to int like glibc.
#[no_mangle]
pub extern "C" fn mallinfo() -> Mallinfo {
    let i = info();
    Mallinfo {
        arena: i.arena as c_int,
        ordblks: i.ordblks as c_int,
        usmblks: i.usmblks as c_int,
        uordblks: i.uordblks as c_int,
        fordblks: i.fordblks as c_int,
        ..Mallinfo::default()
    }
}

/// `malloc_stats(3)`: a short summary on stderr.
#[no_mangle]
pub extern "C" fn malloc_stats() {
    let i = info();
    eprint_raw!(
        "fitalloc: mapped bytes = {}\nfitalloc: in use bytes = {}\n",
        i.arena,
        i.uordblks
    );
}

// ---------------------------------------------------------------------------
// Extensions (include/allocator.h).

/// malloc that records `name` (its first 31 bytes) for `print_memory` and the
/// leak report. A null `name` gives an unnamed block.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn malloc_name(size: usize, name: *const c_char) -> *mut c_void {
    if name.is_null() {
        return alloc(Call::MallocName, size);
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    result(HEAP.malloc_named(size, name))
}

extern "C" {
    static mut stdout: *mut libc::FILE;
}

/// Prints the heap to stdout (through stdio, so it interleaves with the
/// program's own output).
#[no_mangle]
pub extern "C" fn print_memory() {
    // SAFETY: reading the C library's `stdout` pointer.
    let out = unsafe { core::ptr::addr_of!(stdout).read() };
    // SAFETY: stdout is a valid stream.
    unsafe { write_memory(out) }
}

/// Writes the heap in the `print_memory` format to `fp`.
///
/// The text is rendered into a private mapping under the heap lock, then
/// written with `fwrite` after the lock is released: stdio may allocate its
/// buffer in the middle of the call, which then takes the lock itself.
///
/// # Safety
/// `fp` is a valid, open `FILE *`.
#[no_mangle]
pub unsafe extern "C" fn write_memory(fp: *mut libc::FILE) {
    let Some((buf, len, mapped)) = HEAP.with_heaps_marked(render) else {
        return;
    };
    // SAFETY: `buf` holds `len` bytes of text; `fp` is valid per the contract.
    unsafe {
        libc::fwrite(buf as *const c_void, 1, len, fp);
        libc::fflush(fp);
        os::unmap_anon(buf, mapped);
    }
}

/// Renders the dump of every arena into a fresh mapping; returns (address,
/// length, mapped length).
fn render(heaps: &fitalloc::global::Heaps<'_>) -> Option<(usize, usize, usize)> {
    let lines: usize = heaps.iter().map(|h| h.dump_lines()).sum();
    let bytes = fitalloc::TITLE.len() + lines * fitalloc::MAX_LINE;
    let mapped = fitalloc::block::round_up(bytes, os::page_size())?;
    let buf = os::map_anon(mapped)?;
    // SAFETY: the mapping is fresh, private and `mapped` bytes long.
    let slice = unsafe { core::slice::from_raw_parts_mut(buf as *mut u8, mapped) };
    let mut w = fitalloc::fmt::SliceWriter::new(slice);
    let _ = core::fmt::Write::write_str(&mut w, fitalloc::TITLE);
    for h in heaps.iter() {
        let _ = h.dump(&mut w);
    }
    let len = w.bytes().len();
    Some((buf, len, mapped))
}

// ---------------------------------------------------------------------------
// Process hooks.

extern "C" fn fork_prepare() {
    HEAP.fork_prepare();
}

extern "C" fn fork_parent() {
    HEAP.fork_parent();
}

extern "C" fn fork_child() {
    HEAP.fork_child();
}

/// A thread gave its slot back: what other threads freed into its arena is
/// folded now (see `Shared::slot_released`).
fn slot_released(i: usize) {
    HEAP.slot_released(i);
}

extern "C" fn on_load() {
    fitalloc::arena::set_exit_hook(slot_released);
    fitalloc::arena::prepare_threads();
    let mut options = fitalloc::options::Options::new();
    options.read();
    fitalloc::report::prepare(options.leak_check || options.stats);
    // SAFETY: registering three handlers that only touch our own locks.
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
}

extern "C" fn on_unload() {
    HEAP.at_exit();
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

/// At exit (after the program's own destructors): the trace is written out
/// and the leak report and statistics printed, when asked for. The heap is
/// never torn down: late threads may still allocate.
#[used]
#[link_section = ".fini_array"]
static ON_UNLOAD: extern "C" fn() = on_unload;
