//! fitalloc: an allocator whose placement you choose and can see.
//!
//! Memory comes from the kernel in page-sized *regions*; each region is tiled
//! by *blocks* linked both ways; a *free index* (an AVL tree living inside the
//! free blocks) answers each placement *policy* — first, next, best or worst
//! fit — exactly as a linear scan of the list would, in O(log n).
//!
//! ```text
//!   allocator.so (C ABI)        FitAlloc (#[global_allocator])
//!            \                      /
//!             global::Shared: 8 arenas, options, trace, stats
//!                        |
//!             heap::Heap: alloc / free / realloc / memalign,
//!                        |   split and merge, the checker
//!        +---------------+----------------+
//!   index::FreeIndex   block::Block   registry::Registry
//!   (tree::Tree)       (headers)      (page map, region descriptors)
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
//! | [`block`] | the block header and every pointer step |
//! | [`tree`] | the intrusive AVL tree (nodes inside free blocks) |
//! | [`index`] | the free index: per-region trees under a segment tree, or one size-ordered tree |
//! | [`heap`] | alloc, free, realloc, memalign, split, merge, the checker |
//! | [`lock`] | a futex lock that never allocates |
//! | [`global`] | one process-wide heap behind a lock, with options |
//! | [`options`] | `ALLOCATOR_*` read from `environ` |
//!
//! Glossary: **region** — one `mmap`ed span; **block** — header plus payload,
//! tiling a region; **free index** — the tree of free blocks; **policy** — the
//! rule that picks among fitting free blocks; **position** — (region creation
//! number, address), the list order every policy is defined over.
//!
//! The crate is `no_std` and never allocates, so it can run inside `malloc`.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

mod alloc;
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
pub mod sizes;
pub mod trace;
mod tracer;

pub use dump::{MAX_LINE, TITLE};

pub use alloc::FitAlloc;
pub use heap::{Counters, Heap, Misuse, Policy};
