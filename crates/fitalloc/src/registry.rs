//! Region descriptors and the page map, shared by every heap of a process.
//!
//! - A region *descriptor* (start, size, creation `seq`, list links, owner)
//!   lives here rather than in the region, so blocks tile a region from its
//!   first byte. Descriptors are named by a 32-bit id; id 0 means "none".
//! - The *page map* answers "which region holds this address?" without
//!   touching the address: a three-level radix tree over 4 KiB page numbers
//!   (12 + 12 + 12 bits of a 48-bit address space), whose leaves hold region
//!   ids. Setting up a region writes one entry per page.
//!
//! Invariant: for every live region, every 4 KiB page in `[start, start+size)`
//! maps to its id, and a freed id maps no page. Pages of released regions map
//! to [`RELEASED`] until they are reused or go back to the kernel
//! ([`Registry::forget_pages`]).
//!
//! Metadata comes straight from `os::map_meta` and is never returned; it is
//! bounded by the address span and the peak number of regions.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

use crate::lock::RawLock;
use crate::os;

const PAGE_SHIFT: u32 = 12;
const LEVEL_BITS: u32 = 12;
const FANOUT: usize = 1 << LEVEL_BITS;
/// Page-map value of a page whose region was released but which may still
/// be mapped (in the span cache): a free there is a free of freed memory.
pub const RELEASED: u32 = u32::MAX;

/// Addresses at or above this are never ours.
pub const ADDRESS_LIMIT: usize = 1 << (PAGE_SHIFT + 3 * LEVEL_BITS);

const DESC_CHUNK: usize = 1024;
const DESC_CHUNKS: usize = 16384;

type Leaf = [AtomicU32; FANOUT];
type Mid = [AtomicPtr<Leaf>; FANOUT];

/// The descriptor of one region. Fields are atomics so that any thread may
/// read them; only the owning heap (under its lock) writes them.
pub struct RegionDesc {
    start: AtomicUsize,
    size: AtomicUsize,
    seq: AtomicU64,
    prev: AtomicU32,
    next: AtomicU32,
    owner: AtomicU32,
    base: AtomicU32,
}

impl RegionDesc {
    /// First byte of the region.
    pub fn start(&self) -> usize {
        self.start.load(Relaxed)
    }
    /// Size in bytes (a whole number of pages).
    pub fn size(&self) -> usize {
        self.size.load(Relaxed)
    }
    /// One past the last byte.
    pub fn end(&self) -> usize {
        self.start() + self.size()
    }
    /// Creation number: regions created later have larger numbers.
    pub fn seq(&self) -> u64 {
        self.seq.load(Relaxed)
    }
    /// The previous region of the owning heap (0 if first).
    pub fn prev(&self) -> u32 {
        self.prev.load(Relaxed)
    }
    /// The next region of the owning heap (0 if last).
    pub fn next(&self) -> u32 {
        self.next.load(Relaxed)
    }
    /// The owning heap's id (0 while the descriptor is unused).
    pub fn owner(&self) -> u32 {
        self.owner.load(Acquire)
    }
    /// Sets the previous link.
    pub fn set_prev(&self, id: u32) {
        self.prev.store(id, Relaxed)
    }
    /// Sets the next link.
    pub fn set_next(&self, id: u32) {
        self.next.store(id, Relaxed)
    }
    /// The region's first cell in its heap's position index.
    pub fn base(&self) -> u32 {
        self.base.load(Relaxed)
    }
    /// Sets the first cell.
    pub fn set_base(&self, base: u32) {
        self.base.store(base, Relaxed)
    }
}

/// Region descriptors and the page map.
pub struct Registry {
    lock: RawLock,
    map: [AtomicPtr<Mid>; FANOUT],
    descs: [AtomicPtr<RegionDesc>; DESC_CHUNKS],
    /// Ids handed out so far (the next fresh id is `fresh + 1`).
    fresh: AtomicU32,
    /// Head of the list of released ids, linked through `next`.
    released: AtomicU32,
    seq: AtomicU64,
    secret: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry (usable in a `static`).
    pub const fn new() -> Registry {
        Registry {
            lock: RawLock::new(),
            map: [const { AtomicPtr::new(core::ptr::null_mut()) }; FANOUT],
            descs: [const { AtomicPtr::new(core::ptr::null_mut()) }; DESC_CHUNKS],
            fresh: AtomicU32::new(0),
            released: AtomicU32::new(0),
            seq: AtomicU64::new(0),
            secret: AtomicU64::new(0),
        }
    }

    /// The key of the header checks, chosen once per registry.
    #[inline]
    pub fn secret(&self) -> u64 {
        let s = self.secret.load(Relaxed);
        if s != 0 {
            return s;
        }
        let fresh = os::random_seed() | 1;
        match self.secret.compare_exchange(0, fresh, Relaxed, Relaxed) {
            Ok(_) => fresh,
            Err(won) => won,
        }
    }

    /// The descriptor with id `id` (which must have been handed out).
    #[inline]
    pub fn desc(&self, id: u32) -> &RegionDesc {
        let i = id as usize;
        let chunk = self.descs[i / DESC_CHUNK].load(Acquire);
        debug_assert!(!chunk.is_null());
        // SAFETY: ids are handed out only after their chunk was published, and
        // chunks are never freed; `i % DESC_CHUNK` is within the chunk.
        unsafe { &*chunk.add(i % DESC_CHUNK) }
    }

    /// The region id holding `addr`: 0 if no region does, [`RELEASED`] if a
    /// released region did.
    #[inline]
    pub fn lookup(&self, addr: usize) -> u32 {
        if addr >= ADDRESS_LIMIT {
            return 0;
        }
        let page = addr >> PAGE_SHIFT;
        let mid = self.map[page >> (2 * LEVEL_BITS)].load(Acquire);
        if mid.is_null() {
            return 0;
        }
        // SAFETY: published mid nodes are never freed; the index is < FANOUT.
        let leaf = unsafe { (*mid)[(page >> LEVEL_BITS) & (FANOUT - 1)].load(Acquire) };
        if leaf.is_null() {
            return 0;
        }
        // SAFETY: published leaves are never freed; the index is < FANOUT.
        unsafe { (*leaf)[page & (FANOUT - 1)].load(Relaxed) }
    }

    /// Records a new region of heap `owner` and returns its id; `None` if the
    /// metadata could not be mapped (then nothing changed).
    pub fn add_region(&self, start: usize, size: usize, owner: u32) -> Option<u32> {
        debug_assert!(owner != 0 && start.is_multiple_of(1 << PAGE_SHIFT));
        if start.checked_add(size)? > ADDRESS_LIMIT || !self.ensure_pages(start, size) {
            return None;
        }
        let id = self.take_id()?;
        let d = self.desc(id);
        d.start.store(start, Relaxed);
        d.size.store(size, Relaxed);
        d.seq.store(self.seq.fetch_add(1, Relaxed) + 1, Relaxed);
        d.prev.store(0, Relaxed);
        d.next.store(0, Relaxed);
        d.owner.store(owner, Release);
        self.fill_pages(start, size, id);
        Some(id)
    }

    /// Forgets region `id`: its pages map to [`RELEASED`] and the id is
    /// reused.
    pub fn remove_region(&self, id: u32) {
        let d = self.desc(id);
        self.fill_pages(d.start(), d.size(), RELEASED);
        d.owner.store(0, Release);
        let _g = self.lock.lock();
        d.next.store(self.released.load(Relaxed), Relaxed);
        self.released.store(id, Relaxed);
    }

    fn take_id(&self) -> Option<u32> {
        let _g = self.lock.lock();
        let head = self.released.load(Relaxed);
        if head != 0 {
            self.released.store(self.desc(head).next(), Relaxed);
            return Some(head);
        }
        let id = self.fresh.load(Relaxed) as usize + 1;
        if id >= DESC_CHUNK * DESC_CHUNKS {
            return None;
        }
        let slot = &self.descs[id / DESC_CHUNK];
        if slot.load(Relaxed).is_null() {
            let bytes = DESC_CHUNK * core::mem::size_of::<RegionDesc>();
            slot.store(os::map_meta(bytes)? as *mut RegionDesc, Release);
        }
        self.fresh.store(id as u32, Relaxed);
        Some(id as u32)
    }

    /// Makes sure every page-map node covering the span exists.
    fn ensure_pages(&self, start: usize, size: usize) -> bool {
        let first = start >> PAGE_SHIFT;
        let last = (start + size - 1) >> PAGE_SHIFT;
        let mut leaf = first >> LEVEL_BITS;
        while leaf <= last >> LEVEL_BITS {
            if self.leaf_for(leaf, true).is_null() {
                return false;
            }
            leaf += 1;
        }
        true
    }

    /// The leaf for leaf number `n` (page >> LEVEL_BITS), created if asked.
    fn leaf_for(&self, n: usize, create: bool) -> *mut Leaf {
        let mid_slot = &self.map[n >> LEVEL_BITS];
        let mut mid = mid_slot.load(Acquire);
        if mid.is_null() {
            if !create {
                return core::ptr::null_mut();
            }
            mid = self.publish(mid_slot, core::mem::size_of::<Mid>());
            if mid.is_null() {
                return mid.cast();
            }
        }
        // SAFETY: `mid` is a published, never-freed node; the index is < FANOUT.
        let leaf_slot = unsafe { &(*mid)[n & (FANOUT - 1)] };
        let leaf = leaf_slot.load(Acquire);
        if !leaf.is_null() || !create {
            return leaf;
        }
        self.publish(leaf_slot, core::mem::size_of::<Leaf>())
    }

    /// Maps a zeroed node and installs it in `slot` unless another thread
    /// won the race; returns the installed node (null if mapping failed).
    fn publish<T>(&self, slot: &AtomicPtr<T>, bytes: usize) -> *mut T {
        let Some(fresh) = os::map_meta(bytes) else {
            return core::ptr::null_mut();
        };
        let fresh = fresh as *mut T;
        match slot.compare_exchange(core::ptr::null_mut(), fresh, AcqRel, Acquire) {
            Ok(_) => fresh,
            Err(won) => {
                // SAFETY: `fresh` was mapped just above and never shared.
                unsafe { os::unmap_anon(fresh as usize, bytes) };
                won
            }
        }
    }

    /// The span went back to the kernel: its released pages map to nothing.
    pub fn forget_pages(&self, start: usize, size: usize) {
        if start.saturating_add(size) > ADDRESS_LIMIT || size == 0 {
            return;
        }
        for page in start >> PAGE_SHIFT..=(start + size - 1) >> PAGE_SHIFT {
            let leaf = self.leaf_for(page >> LEVEL_BITS, false);
            if !leaf.is_null() {
                // SAFETY: published leaves are never freed; index < FANOUT.
                let slot = unsafe { &(*leaf)[page & (FANOUT - 1)] };
                let _ = slot.compare_exchange(RELEASED, 0, Relaxed, Relaxed);
            }
        }
    }

    fn fill_pages(&self, start: usize, size: usize, id: u32) {
        let first = start >> PAGE_SHIFT;
        let last = (start + size - 1) >> PAGE_SHIFT;
        for page in first..=last {
            let leaf = self.leaf_for(page >> LEVEL_BITS, false);
            debug_assert!(!leaf.is_null());
            // SAFETY: `ensure_pages` created this leaf before the region was
            // added; leaves are never freed; the index is < FANOUT.
            unsafe { (*leaf)[page & (FANOUT - 1)].store(id, Relaxed) };
        }
    }
}

impl Registry {
    /// Fork "prepare": hold the registry lock across `fork`.
    pub fn fork_prepare(&self) {
        self.lock.acquire();
    }

    /// Fork "parent": release it.
    pub fn fork_parent(&self) {
        self.lock.release();
    }

    /// Fork "child": the holder is gone; reset it.
    pub fn fork_child(&self) {
        self.lock.reset();
    }
}
