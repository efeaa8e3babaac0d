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
//! A leaf none of whose pages maps anything any more is remembered, and the
//! next window of the address space that needs a leaf takes it over, so the
//! map's memory follows the address space in use, not every address ever
//! used: a program that frees everything and starts again (at other
//! addresses) finds the same virtual size. A thread looking up an address
//! that is not ours may meanwhile read a moved leaf and get another
//! region's id: every caller checks that the address lies inside the region
//! it was told, so such a lookup still says "not ours".
//!
//! Regions of [`LARGE`] bytes or more are not in the page map but in a
//! sorted table of spans ([`crate::spans`]), which `lookup` consults when
//! the page map says nothing.
//!
//! Metadata comes straight from `os::map_anon` and is never returned; it is
//! bounded by the address span and the peak number of regions.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

use crate::lock::{Lock, RawLock};
use crate::os;
use crate::spans::{Spans, LARGE};

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

/// A middle node: its leaves, and how many pages of each map something
/// (a region or RELEASED). A leaf whose count drops to 0 may be moved to
/// another window of the address space (see `Registry::spare`).
struct Mid {
    leaves: [AtomicPtr<Leaf>; FANOUT],
    used: [AtomicU32; FANOUT],
}

/// Unused leaves remembered for reuse (leaf number = page >> LEVEL_BITS).
const SPARES: usize = 64;

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
    /// The region may be backed by huge pages (see `Heap::take`).
    huge: AtomicU32,
}

impl RegionDesc {
    /// Whether the region may be backed by transparent huge pages.
    pub fn huge(&self) -> bool {
        self.huge.load(Relaxed) != 0
    }
    /// Sets whether the region may be backed by transparent huge pages.
    pub fn set_huge(&self, on: bool) {
        self.huge.store(on as u32, Relaxed)
    }
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
    /// Leaf numbers of unused leaves (under `lock`), `spare_count` of them.
    spare: [AtomicU64; SPARES],
    spare_count: AtomicU32,
    /// Regions of `LARGE` bytes or more (not in the page map).
    large: Lock<Spans>,
    descs: [AtomicPtr<RegionDesc>; DESC_CHUNKS],
    /// Ids handed out so far (the next fresh id is `fresh + 1`).
    fresh: AtomicU32,
    /// Head of the list of released ids, linked through `next`.
    released: AtomicU32,
    seq: AtomicU64,
    secret: AtomicU64,
    link_secret: AtomicU64,
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
            spare: [const { AtomicU64::new(0) }; SPARES],
            spare_count: AtomicU32::new(0),
            large: Lock::new(Spans::new()),
            descs: [const { AtomicPtr::new(core::ptr::null_mut()) }; DESC_CHUNKS],
            fresh: AtomicU32::new(0),
            released: AtomicU32::new(0),
            seq: AtomicU64::new(0),
            secret: AtomicU64::new(0),
            link_secret: AtomicU64::new(0),
        }
    }

    /// The key of the remote-free links (ARCHITECTURE §4), chosen once per
    /// registry apart from `secret`: a program that reads a link out of a
    /// freed block learns nothing of the header checks' key.
    #[inline]
    pub fn link_secret(&self) -> u64 {
        drawn_once(&self.link_secret)
    }

    /// The key of the header checks, chosen once per registry.
    #[inline]
    pub fn secret(&self) -> u64 {
        drawn_once(&self.secret)
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
    #[inline(always)]
    pub fn lookup(&self, addr: usize) -> u32 {
        if addr >= ADDRESS_LIMIT {
            return 0;
        }
        let page = addr >> PAGE_SHIFT;
        let mid = self.map[page >> (2 * LEVEL_BITS)].load(Acquire);
        if mid.is_null() {
            return self.lookup_large(addr);
        }
        // SAFETY: published mid nodes are never freed; the index is < FANOUT.
        let leaf = unsafe { (*mid).leaves[(page >> LEVEL_BITS) & (FANOUT - 1)].load(Acquire) };
        if leaf.is_null() {
            return self.lookup_large(addr);
        }
        // SAFETY: leaves are never unmapped (only moved); index < FANOUT.
        match unsafe { (*leaf)[page & (FANOUT - 1)].load(Relaxed) } {
            0 => self.lookup_large(addr),
            id => id,
        }
    }

    /// `lookup` of an address the page map does not hold: a large region's
    /// or none (kept out of line so that the page map's path inlines).
    #[cold]
    #[inline(never)]
    fn lookup_large(&self, addr: usize) -> u32 {
        self.large.lock_if_threaded().find(addr)
    }

    /// Records a new region of heap `owner` and returns its id; `None` if the
    /// metadata could not be mapped (then nothing changed).
    pub fn add_region(&self, start: usize, size: usize, owner: u32) -> Option<u32> {
        debug_assert!(owner != 0 && start.is_multiple_of(1 << PAGE_SHIFT));
        let large = size >= LARGE;
        if start.checked_add(size)? > ADDRESS_LIMIT {
            return None;
        }
        let ready = if large {
            self.large.lock_if_threaded().reserve(2)
        } else {
            self.ensure_pages(start, size)
        };
        if !ready {
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
        if large {
            // Pages of released small regions may lie here: they map nothing now.
            self.unmark_pages(start, size);
            self.large
                .lock_if_threaded()
                .insert(start, start + size, id);
        } else {
            let mut spans = self.large.lock_if_threaded();
            if spans.reserve(1) {
                spans.clear(start, start + size, Some(RELEASED));
            }
            drop(spans);
            self.fill_pages(start, size, id);
        }
        Some(id)
    }

    /// Forgets region `id`: its pages map to [`RELEASED`] and the id is
    /// reused.
    pub fn remove_region(&self, id: u32) {
        let d = self.desc(id);
        if d.size() >= LARGE {
            self.large
                .lock_if_threaded()
                .release(d.start(), id, RELEASED);
        } else {
            self.fill_pages(d.start(), d.size(), RELEASED);
        }
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
            slot.store(os::map_anon(bytes)? as *mut RegionDesc, Release);
        }
        self.fresh.store(id as u32, Relaxed);
        Some(id as u32)
    }

    /// Makes sure every page-map node covering the span exists.
    fn ensure_pages(&self, start: usize, size: usize) -> bool {
        let first = start >> PAGE_SHIFT;
        let last = (start + size - 1) >> PAGE_SHIFT;
        let _g = self.lock.lock();
        (first >> LEVEL_BITS..=last >> LEVEL_BITS).all(|n| self.make_leaf(n))
    }

    /// The middle node for leaf number `n`, if it exists.
    fn mid_of(&self, n: usize) -> Option<&Mid> {
        let mid = self.map[n >> LEVEL_BITS].load(Acquire);
        // SAFETY: published middle nodes are never freed.
        (!mid.is_null()).then(|| unsafe { &*mid })
    }

    /// The leaf for leaf number `n` (page >> LEVEL_BITS), or null.
    fn leaf_for(&self, n: usize) -> *mut Leaf {
        match self.mid_of(n) {
            Some(mid) => mid.leaves[n & (FANOUT - 1)].load(Acquire),
            None => core::ptr::null_mut(),
        }
    }

    /// Creates leaf `n` if missing (with the lock held): an unused leaf of
    /// another window if one is remembered, else a fresh mapping.
    fn make_leaf(&self, n: usize) -> bool {
        let at = &self.map[n >> LEVEL_BITS];
        if at.load(Acquire).is_null() {
            // (map_anon, not map_meta: its retry takes the cache's lock,
            // which may wait for this registry's.)
            let Some(mem) = os::map_anon(core::mem::size_of::<Mid>()) else {
                return false;
            };
            at.store(mem as *mut Mid, Release);
        }
        let Some(mid) = self.mid_of(n) else {
            return false;
        };
        let slot = &mid.leaves[n & (FANOUT - 1)];
        if !slot.load(Acquire).is_null() {
            // In use again: no longer a spare for other windows.
            self.forget_spare(n);
            return true;
        }
        let leaf = match self.take_spare() {
            Some(leaf) => leaf,
            None => match os::map_anon(core::mem::size_of::<Leaf>()) {
                Some(mem) => mem as *mut Leaf,
                None => return false,
            },
        };
        slot.store(leaf, Release);
        true
    }

    /// Unlinks a remembered leaf that is still unused and returns it (its
    /// entries are all 0). With the lock held.
    fn take_spare(&self) -> Option<*mut Leaf> {
        while self.spare_count.load(Relaxed) > 0 {
            let k = self.spare_count.load(Relaxed) - 1;
            self.spare_count.store(k, Relaxed);
            let n = self.spare[k as usize].load(Relaxed) as usize;
            let Some(mid) = self.mid_of(n) else { continue };
            let i = n & (FANOUT - 1);
            let leaf = mid.leaves[i].load(Acquire);
            if leaf.is_null() || mid.used[i].load(Relaxed) != 0 {
                continue;
            }
            mid.leaves[i].store(core::ptr::null_mut(), Release);
            return Some(leaf);
        }
        None
    }

    /// Leaf `n` is wanted by its own window again (with the lock held).
    fn forget_spare(&self, n: usize) {
        let k = self.spare_count.load(Relaxed) as usize;
        if let Some(i) = (0..k).find(|&i| self.spare[i].load(Relaxed) == n as u64) {
            self.spare[i].store(self.spare[k - 1].load(Relaxed), Relaxed);
            self.spare_count.store(k as u32 - 1, Relaxed);
        }
    }

    /// Remembers leaf `n` as unused (with the lock held).
    fn remember_spare(&self, n: usize) {
        let k = self.spare_count.load(Relaxed) as usize;
        if k < SPARES && (0..k).all(|i| self.spare[i].load(Relaxed) != n as u64) {
            self.spare[k].store(n as u64, Relaxed);
            self.spare_count.store(k as u32 + 1, Relaxed);
        }
    }

    /// Page `page`'s entry in the page map (0 if it has no leaf).
    fn page_value(&self, page: usize) -> u32 {
        let leaf = self.leaf_for(page >> LEVEL_BITS);
        if leaf.is_null() {
            return 0;
        }
        // SAFETY: leaves are never unmapped; the index is < FANOUT.
        unsafe { (*leaf)[page & (FANOUT - 1)].load(Relaxed) }
    }

    /// Sets page `page`'s entry to `id`, keeping its leaf's count of pages
    /// in use; returns whether the leaf became unused.
    fn set_page(&self, page: usize, id: u32) -> bool {
        let n = page >> LEVEL_BITS;
        let Some(mid) = self.mid_of(n) else {
            return false;
        };
        let leaf = mid.leaves[n & (FANOUT - 1)].load(Acquire);
        debug_assert!(!leaf.is_null());
        if leaf.is_null() {
            return false;
        }
        // SAFETY: the leaf exists (ensure_pages) and is never unmapped.
        let old = unsafe { (*leaf)[page & (FANOUT - 1)].swap(id, Relaxed) };
        let used = &mid.used[n & (FANOUT - 1)];
        match (old != 0, id != 0) {
            (false, true) => {
                used.fetch_add(1, Relaxed);
                false
            }
            (true, false) => used.fetch_sub(1, Relaxed) == 1,
            _ => false,
        }
    }

    /// The span went back to the kernel: its released pages map to
    /// nothing, and leaves left with nothing to map are remembered.
    pub fn forget_pages(&self, start: usize, size: usize) {
        if start.saturating_add(size) > ADDRESS_LIMIT || size == 0 {
            return;
        }
        self.large
            .lock_if_threaded()
            .clear(start, start + size, Some(RELEASED));
        let _g = self.lock.lock();
        for page in start >> PAGE_SHIFT..=(start + size - 1) >> PAGE_SHIFT {
            if self.page_value(page) == RELEASED && self.set_page(page, 0) {
                self.remember_spare(page >> LEVEL_BITS);
            }
        }
    }

    /// Pages in `[start, start + size)` that still say RELEASED (of small
    /// regions released there before) map nothing any more.
    fn unmark_pages(&self, start: usize, size: usize) {
        let _g = self.lock.lock();
        let (first, last) = (start >> PAGE_SHIFT, (start + size - 1) >> PAGE_SHIFT);
        let mut page = first;
        while page <= last {
            let n = page >> LEVEL_BITS;
            let window_end = ((n + 1) << LEVEL_BITS).min(last + 1);
            if !self.leaf_for(n).is_null() {
                for p in page..window_end {
                    if self.page_value(p) == RELEASED && self.set_page(p, 0) {
                        self.remember_spare(n);
                    }
                }
            }
            page = window_end;
        }
    }

    fn fill_pages(&self, start: usize, size: usize, id: u32) {
        let first = start >> PAGE_SHIFT;
        let last = (start + size - 1) >> PAGE_SHIFT;
        let _g = self.lock.lock();
        for page in first..=last {
            self.set_page(page, id);
        }
    }
}

impl Registry {
    /// Fork "prepare": hold the registry's locks across `fork`.
    pub fn fork_prepare(&self) {
        self.large.raw().acquire();
        self.lock.acquire();
    }

    /// Fork "parent": release them.
    pub fn fork_parent(&self) {
        self.lock.release();
        self.large.raw().release();
    }

    /// Fork "child": the holders are gone; reset them.
    pub fn fork_child(&self) {
        self.lock.reset();
        self.large.raw().reset();
    }
}

/// The random key kept in `cell`, drawn at its first use (never 0).
#[inline]
fn drawn_once(cell: &AtomicU64) -> u64 {
    let s = cell.load(Relaxed);
    if s != 0 {
        return s;
    }
    let fresh = os::random_seed() | 1;
    match cell.compare_exchange(0, fresh, Relaxed, Relaxed) {
        Ok(_) => fresh,
        Err(won) => won,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: usize = 1 << (PAGE_SHIFT + LEVEL_BITS);

    /// The remote-free links' key is drawn apart from the header checks'
    /// (a link read out of a freed block must not give the latter away),
    /// and each stays what it was first drawn as.
    #[test]
    fn link_key_is_not_the_check_key() {
        let reg = Registry::new();
        let (check, link) = (reg.secret(), reg.link_secret());
        assert_ne!(check, link);
        assert_eq!((reg.secret(), reg.link_secret()), (check, link));
    }

    /// Leaves move between windows only when unused, and never away from a
    /// window a new region also covers (the registry records addresses
    /// only, so no memory is needed at them).
    #[test]
    fn leaves_move_only_when_unused() {
        let reg = Registry::new();
        let page = 1 << PAGE_SHIFT;
        let a = 0x10_0000_0000 + 7 * WINDOW;
        let id = reg.add_region(a, 4 * page, 1).unwrap();
        assert_eq!(reg.lookup(a + page), id);
        reg.remove_region(id);
        assert_eq!(reg.lookup(a), RELEASED);
        reg.forget_pages(a, 4 * page);
        assert_eq!(reg.lookup(a), 0);
        // Window 7's leaf is now a spare; a region straddling windows 7 and
        // 8 needs both: 7 keeps its own leaf, 8 gets a fresh one.
        let b = a + WINDOW - 2 * page;
        let id2 = reg.add_region(b, 4 * page, 1).unwrap();
        for p in 0..4 {
            assert_eq!(reg.lookup(b + p * page), id2);
        }
        reg.remove_region(id2);
        reg.forget_pages(b, 4 * page);
        // Both spares; a far window takes one over, and lookups in the old
        // windows say nothing.
        let c = 0x20_0000_0000;
        let id3 = reg.add_region(c, page, 1).unwrap();
        assert_eq!(reg.lookup(c), id3);
        assert_eq!(reg.lookup(b), 0);
        // A large region is in the table, not the page map.
        let big = 0x30_0000_0000;
        let id4 = reg.add_region(big, LARGE * 2, 1).unwrap();
        assert_eq!((reg.lookup(big), reg.lookup(big + LARGE)), (id4, id4));
        reg.remove_region(id4);
        assert_eq!(reg.lookup(big + 5), RELEASED);
        reg.forget_pages(big, LARGE * 2);
        assert_eq!(reg.lookup(big + 5), 0);
    }
}
