//! fitalloc: an allocator whose placement you choose and can see.
//!
//! Memory comes from the kernel in page-sized *regions*; each region is tiled
//! by *blocks* linked both ways; a *free index* kept outside the heap's
//! memory answers each placement *policy* — first, next, best or worst fit —
//! exactly as a linear scan of the list would, in O(log n).
//!
//! ```text
//!   allocator.so (C ABI)        FitAlloc (#[global_allocator])
//!            \                      /
//!             global::Shared: an arena per thread (arena::Remote for the
//!                        |     blocks other threads free), options, trace
//!             heap::Heap: alloc / free / realloc / memalign,
//!                        |   split and merge, the checker
//!        +---------------+-----------------+
//!   index::FreeIndex    block::Block    registry::Registry
//!     cells::Cells + maxtree::MaxTree      (page map, region descriptors)
//!     (first, next, worst fit)
//!     sizes::SizeTree (best fit)
//!        |
//!   cache::CachedPages -> os (mmap / munmap)
//! ```
//!
//! Layers, bottom up (see ARCHITECTURE.md):
//!
//! | module | role |
//! |---|---|
//! | [`os`] | the only code that calls `mmap`/`munmap` |
//! | [`cache`] | a bounded cache of released spans (a page source) |
//! | [`registry`] | region descriptors and the page map (address → region) |
//! | [`spans`] | the large regions: a sorted table beside the page map |
//! | [`block`] | the block header and every pointer step |
//! | [`policy`] | the four policies and the order each needs |
//! | [`maxtree`] | a 16-ary max tree: the first leaf at least k |
//! | [`cells`] | the position index: free-block starts per KiB, under a max tree |
//! | [`sizes`] | the size index: a B+tree keyed by (size, position) |
//! | [`index`] | the free index the heap talks to (one of the two) |
//! | [`heap`] | alloc, free, realloc, memalign, split, merge, the checker |
//! | [`lock`] | a futex lock that never allocates |
//! | [`arena`] | thread slots, remote-free lists |
//! | [`global`] | the arenas of a process, options, tracing |
//! | [`report`] | misuse lines and exit reports, on the start-up stderr |
//! | [`options`] | `ALLOCATOR_*` read from `environ` |
//!
//! Glossary: **region** — one `mmap`ed span; **block** — header plus payload,
//! tiling a region; **free index** — where the free blocks are found;
//! **policy** — the rule that picks among fitting free blocks; **position**
//! — (region creation number, address), the list order every policy is
//! defined over; **cell** — 1 KiB of a region in the position index;
//! **arena** — one thread's heap; **remote free** — a free of another
//! arena's block, handed to that arena.
//!
//! The crate is `no_std` and never allocates, so it can run inside `malloc`.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

mod alloc;
pub mod arena;
pub mod block;
pub mod cache;
pub mod cells;
mod dump;
pub mod fmt;
pub mod global;
pub mod heap;
pub mod index;
pub mod lock;
pub mod maxtree;
pub mod options;
pub mod os;
pub mod policy;
pub mod registry;
pub mod report;
pub mod sizes;
pub mod spans;
pub mod trace;
mod tracer;

pub use dump::{MAX_LINE, TITLE};

pub use alloc::FitAlloc;
pub use heap::{Counters, Heap, Misuse, Policy};
