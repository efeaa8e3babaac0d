//! [`FitAlloc`]: fitalloc as a Rust `#[global_allocator]`.
//!
//! ```
//! use fitalloc::{FitAlloc, Policy};
//!
//! // In a program: #[global_allocator] static GLOBAL: FitAlloc = FitAlloc::new();
//! static HEAP: FitAlloc = FitAlloc::with_policy(Policy::BestFit);
//!
//! let layout = std::alloc::Layout::from_size_align(100, 64).unwrap();
//! // SAFETY: the layout has a non-zero size; the pointer is freed below.
//! unsafe {
//!     use std::alloc::GlobalAlloc;
//!     let p = HEAP.alloc(layout);
//!     assert_eq!(p as usize % 64, 0);
//!     HEAP.dealloc(p, layout);
//! }
//! assert!(HEAP.check().is_ok());
//! ```
//!
//! Each `FitAlloc` value is its own heap (with its own lock); all of them
//! share the page map. Using the type does not export or interpose the C
//! `malloc`: only `allocator.so` does that.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt;

use crate::block::ALIGN;
use crate::global::{Call, Shared};
use crate::heap::{Counters, Misuse, Policy};

/// A thread-safe fitalloc heap usable as `#[global_allocator]`.
pub struct FitAlloc {
    shared: Shared,
}

impl Default for FitAlloc {
    fn default() -> Self {
        Self::new()
    }
}

impl FitAlloc {
    /// A heap whose policy comes from `ALLOCATOR_ALGORITHM` (default first
    /// fit), read when the heap is first used and whenever the environment
    /// changes.
    pub const fn new() -> FitAlloc {
        FitAlloc {
            shared: Shared::new(None),
        }
    }

    /// A heap with a fixed policy (`ALLOCATOR_ALGORITHM` is ignored).
    pub const fn with_policy(policy: Policy) -> FitAlloc {
        FitAlloc {
            shared: Shared::new(Some(policy)),
        }
    }

    /// The policy in effect (in the calling thread's arena).
    pub fn policy(&self) -> Policy {
        self.shared.policy()
    }

    /// The heap's counters (bytes in use and mapped, with peaks; regions),
    /// summed over its arenas.
    pub fn counters(&self) -> Counters {
        self.shared.totals().0
    }

    /// Runs the heap checker on every arena: every invariant of
    /// ARCHITECTURE.md §2.
    pub fn check(&self) -> Result<(), (&'static str, usize)> {
        self.shared.check()
    }

    /// Writes the heap in the `print_memory` format (SPEC §5), every arena
    /// in turn. The writer must not allocate from this heap (it is locked
    /// meanwhile).
    pub fn write_memory(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        self.shared.with_heaps(|heaps| {
            out.write_str(crate::TITLE)?;
            for h in heaps.iter() {
                h.dump(out)?;
            }
            Ok(())
        })
    }

    /// Prints the heap to standard output (file descriptor 1), without
    /// allocating.
    pub fn print_memory(&self) {
        let mut w = crate::fmt::FdWriter::new(1);
        let _ = self.write_memory(&mut w);
        w.flush();
    }
}

#[cold]
fn misuse(call: Call, m: Misuse, p: *mut u8) -> ! {
    crate::report::misuse(call, m, p as usize)
}

fn ptr(p: Option<usize>) -> *mut u8 {
    p.map_or(core::ptr::null_mut(), |p| p as *mut u8)
}

// SAFETY: `alloc` returns blocks of at least `layout.size()` bytes aligned to
// `layout.align()` that no other allocation overlaps until `dealloc`; the heap
// is behind a lock, so the type is thread safe.
unsafe impl GlobalAlloc for FitAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        ptr(if align <= ALIGN {
            self.shared.malloc(Call::Malloc, size)
        } else {
            self.shared.memalign(Call::Memalign, align, size)
        })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if align <= ALIGN {
            return ptr(self.shared.calloc(Call::Calloc, 1, size));
        }
        // SAFETY: the caller's layout contract is passed on unchanged.
        let p = unsafe { self.alloc(layout) };
        if !p.is_null() {
            // SAFETY: `p` holds at least `size` bytes we just allocated.
            unsafe { core::ptr::write_bytes(p, 0, size) };
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        if let Err(m) = self.shared.free(Call::Free, p as usize) {
            misuse(Call::Free, m, p);
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        if align <= ALIGN {
            return match self.shared.realloc(Call::Realloc, p as usize, new_size) {
                Ok(q) => ptr(q),
                Err(m) => misuse(Call::Realloc, m, p),
            };
        }
        // Over-aligned: keep the block if it is already big enough, otherwise
        // allocate, copy and free (the heap's realloc only keeps 16 bytes of
        // alignment when it moves).
        match self.shared.usable_size(p as usize) {
            Ok(n) if n >= new_size => return p,
            Ok(_) => {}
            Err(m) => misuse(Call::Realloc, m, p),
        }
        // SAFETY: `align` came from a valid layout and `new_size` is the
        // caller's (non-zero, not overflowing when rounded) new size.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        // SAFETY: a valid layout.
        let q = unsafe { self.alloc(new_layout) };
        if !q.is_null() {
            // SAFETY: both blocks are live and distinct; the old one holds
            // `layout.size()` bytes, the new one at least `new_size`.
            unsafe {
                core::ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
        }
        q
    }
}
