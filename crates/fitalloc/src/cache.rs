//! A bounded cache of spans between the heaps and the kernel.
//!
//! SPEC §2 allows it "if it is invisible to `print_memory` and keeps the
//! process's virtual size bounded". [`CachedPages`] is a [`PageSource`]:
//!
//! - `unmap` keeps the span (merged with an adjacent cached span of the same
//!   zero state), then trims the cache to its budget: [`BUDGET`] plus half
//!   the bytes the heaps hold as regions right now. Trimming unmaps the
//!   least recently cached memory first, and only as much as exceeds the
//!   budget (a span may be cut, keeping its front), so the cache is always
//!   exactly `min(budget, bytes released)`: a program that frees everything
//!   and starts again finds the same virtual size every time, and once
//!   every region is freed the cache holds at most `BUDGET`.
//! - `map` serves a request from the smallest cached span that holds it
//!   (the rest stays cached). A large request that no span holds grows the
//!   most recently cached span with `mremap`, so its pages, already
//!   faulted in, are used again; otherwise a request smaller than [`CHUNK`]
//!   maps a whole chunk and caches the rest, so a heap that grows one page
//!   at a time makes one `mmap` per chunk, not per page.
//!
//! Every step is O(1) but for large spans (see below): threads whose
//! regions come and go hold the process-wide cache lock for a few dozen
//! instructions, and thousands of scattered free pages stay cached instead
//! of being unmapped one by one (each `munmap` of a threaded process costs
//! a TLB shootdown on every core).
//!
//! ```text
//!  spans[SLOTS]   addr, len, zero  + links (slot + 1; 0: none)
//!  age list       newest <-> ... <-> oldest        trim / evict the oldest
//!  class lists    class c: spans of c + 1 pages (c < 64, newest first),
//!                 then one class per power of two of pages (scanned)
//!  nonempty       bitmap of the classes with a span
//!  by_start,      open-addressed tables: address -> slot, to merge a
//!  by_end         released span with its neighbours in two probes
//! ```
//!
//! The heaps still see regions of exactly the size they asked for; only the
//! system calls and page faults change.

use crate::os::{self, PageSource};

/// Bytes the cache may keep when the heaps hold no region at all.
pub const BUDGET: usize = 8 << 20;
/// Requests below this are carved from a fresh chunk of this size.
pub const CHUNK: usize = 1 << 20;
/// Spans cached at most (a release beyond it unmaps the oldest span).
const SLOTS: usize = 1024;
/// Slots of each address table (a power of two, twice `SLOTS`).
const TABLE: usize = 2 * SLOTS;
/// Classes of exactly `c + 1` pages.
const EXACT: usize = 64;
/// Classes in all: the exact ones, then one per power of two of pages.
const CLASSES: usize = 128;
/// Fresh spans this large are aligned for transparent huge pages.
pub const HUGE_FROM: usize = 4 << 20;

/// A cached span and its places in the lists (slot numbers + 1; 0: none).
#[derive(Clone, Copy, Debug)]
struct Span {
    addr: usize,
    len: usize,
    zero: bool,
    newer: u16,
    older: u16,
    prev: u16,
    next: u16,
}

const NO_SPAN: Span = Span {
    addr: 0,
    len: 0,
    zero: false,
    newer: 0,
    older: 0,
    prev: 0,
    next: 0,
};

/// The size class of `pages` pages.
#[inline]
fn class_of(pages: usize) -> usize {
    debug_assert!(pages > 0);
    if pages <= EXACT {
        pages - 1
    } else {
        (EXACT + (pages.ilog2() as usize - EXACT.ilog2() as usize)).min(CLASSES - 1)
    }
}

/// The home slot of `addr` in an address table.
#[inline]
fn home(addr: usize) -> usize {
    ((addr as u64 >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - TABLE.trailing_zeros()))
        as usize
}

/// A page source that caches released spans (see the module docs).
#[derive(Debug)]
pub struct CachedPages {
    spans: [Span; SLOTS],
    /// Slots ever used (slots above it are free and zero).
    used: usize,
    /// Free slots below `used`, linked through `next` (slot + 1; 0: none).
    free: u16,
    count: usize,
    bytes: usize,
    /// Bytes handed out by `map` and not yet given back.
    outstanding: usize,
    newest: u16,
    oldest: u16,
    heads: [u16; CLASSES],
    nonempty: [u64; CLASSES / 64],
    by_start: [u16; TABLE],
    by_end: [u16; TABLE],
    page: usize,
    /// Called with each span given back to the kernel.
    on_return: Option<fn(usize, usize)>,
}

impl Default for CachedPages {
    fn default() -> Self {
        Self::new()
    }
}

impl CachedPages {
    /// An empty cache.
    pub const fn new() -> CachedPages {
        Self::with_return_hook(None)
    }

    /// An empty cache that calls `hook(addr, len)` whenever it gives a span
    /// back to the kernel.
    pub const fn with_return_hook(hook: Option<fn(usize, usize)>) -> CachedPages {
        CachedPages {
            spans: [NO_SPAN; SLOTS],
            used: 0,
            free: 0,
            count: 0,
            bytes: 0,
            outstanding: 0,
            newest: 0,
            oldest: 0,
            heads: [0; CLASSES],
            nonempty: [0; CLASSES / 64],
            by_start: [0; TABLE],
            by_end: [0; TABLE],
            page: 0,
            on_return: hook,
        }
    }

    /// Sets what is called with each span given back to the kernel (a
    /// static made with `new` is all zero and costs no file page: see
    /// `global::PAGES`).
    #[inline]
    pub fn set_return_hook(&mut self, hook: fn(usize, usize)) {
        self.on_return = Some(hook);
    }

    /// Bytes currently cached (mapped but not part of any region).
    pub fn cached_bytes(&self) -> usize {
        self.bytes
    }

    /// What the cache may hold now.
    pub fn budget(&self) -> usize {
        BUDGET + self.outstanding / 2
    }

    // ------------------------------------------------------------------
    // The address tables (linear probing, deletion by backward shift).

    /// The key of slot `i` in the start (`end` false) or end table.
    #[inline]
    fn key(&self, i: usize, end: bool) -> usize {
        let s = &self.spans[i];
        if end {
            s.addr + s.len
        } else {
            s.addr
        }
    }

    fn table(&mut self, end: bool) -> &mut [u16; TABLE] {
        if end {
            &mut self.by_end
        } else {
            &mut self.by_start
        }
    }

    /// The slot whose start (or end) is `addr`.
    #[inline]
    fn find(&self, addr: usize, end: bool) -> Option<usize> {
        let t = if end { &self.by_end } else { &self.by_start };
        let mut h = home(addr);
        loop {
            match t[h] {
                0 => return None,
                e if self.key(e as usize - 1, end) == addr => return Some(e as usize - 1),
                _ => h = (h + 1) & (TABLE - 1),
            }
        }
    }

    fn enter(&mut self, i: usize, end: bool) {
        let mut h = home(self.key(i, end));
        let t = self.table(end);
        while t[h] != 0 {
            h = (h + 1) & (TABLE - 1);
        }
        t[h] = i as u16 + 1;
    }

    fn leave(&mut self, i: usize, end: bool) {
        let mut h = home(self.key(i, end));
        while self.table(end)[h] != i as u16 + 1 {
            h = (h + 1) & (TABLE - 1);
        }
        // Backward shift: move up every later entry of the run that may
        // not stay behind the hole.
        let mut j = h;
        loop {
            j = (j + 1) & (TABLE - 1);
            let e = self.table(end)[j];
            if e == 0 {
                break;
            }
            let k = home(self.key(e as usize - 1, end));
            // Whether `k` lies cyclically in (h, j]: then the entry stays.
            let stays = if h <= j {
                h < k && k <= j
            } else {
                h < k || k <= j
            };
            if !stays {
                let t = self.table(end);
                t[h] = e;
                h = j;
            }
        }
        self.table(end)[h] = 0;
    }

    // ------------------------------------------------------------------
    // The lists.

    /// The class of slot `i`'s span (from its length, so a span's length
    /// changes only while it is out of its class list).
    fn class(&self, i: usize) -> usize {
        class_of((self.spans[i].len / self.page_size()).max(1))
    }

    fn link_class(&mut self, i: usize) {
        let c = self.class(i);
        let head = self.heads[c];
        self.spans[i].prev = 0;
        self.spans[i].next = head;
        if head != 0 {
            self.spans[head as usize - 1].prev = i as u16 + 1;
        }
        self.heads[c] = i as u16 + 1;
        self.nonempty[c / 64] |= 1 << (c % 64);
    }

    fn unlink_class(&mut self, i: usize) {
        let Span { prev, next, .. } = self.spans[i];
        let c = self.class(i);
        if prev != 0 {
            self.spans[prev as usize - 1].next = next;
        } else {
            self.heads[c] = next;
            if next == 0 {
                self.nonempty[c / 64] &= !(1 << (c % 64));
            }
        }
        if next != 0 {
            self.spans[next as usize - 1].prev = prev;
        }
    }

    /// Makes slot `i` the newest.
    fn link_newest(&mut self, i: usize) {
        self.spans[i].newer = 0;
        self.spans[i].older = self.newest;
        if self.newest != 0 {
            self.spans[self.newest as usize - 1].newer = i as u16 + 1;
        } else {
            self.oldest = i as u16 + 1;
        }
        self.newest = i as u16 + 1;
    }

    fn unlink_age(&mut self, i: usize) {
        let Span { newer, older, .. } = self.spans[i];
        if newer != 0 {
            self.spans[newer as usize - 1].older = older;
        } else {
            self.newest = older;
        }
        if older != 0 {
            self.spans[older as usize - 1].newer = newer;
        } else {
            self.oldest = newer;
        }
    }

    // ------------------------------------------------------------------
    // Spans in and out.

    /// Caches `[addr, addr + len)` as the newest span (a slot is free).
    fn add(&mut self, addr: usize, len: usize, zero: bool) {
        let i = if self.free != 0 {
            let i = self.free as usize - 1;
            self.free = self.spans[i].next;
            i
        } else {
            self.used += 1;
            self.used - 1
        };
        self.spans[i] = Span {
            addr,
            len,
            zero,
            ..NO_SPAN
        };
        self.enter(i, false);
        self.enter(i, true);
        self.link_class(i);
        self.link_newest(i);
        self.count += 1;
        self.bytes += len;
    }

    /// Takes slot `i` out of the cache; returns its span.
    fn remove(&mut self, i: usize) -> Span {
        let s = self.spans[i];
        self.leave(i, false);
        self.leave(i, true);
        self.unlink_class(i);
        self.unlink_age(i);
        self.spans[i] = Span {
            next: self.free,
            ..NO_SPAN
        };
        self.free = i as u16 + 1;
        self.count -= 1;
        self.bytes -= s.len;
        s
    }

    /// Slot `i` keeps `[addr, addr + len)` of its span, in its place in
    /// the age list.
    fn shrink(&mut self, i: usize, addr: usize, len: usize) {
        let s = self.spans[i];
        debug_assert!(addr >= s.addr && addr + len <= s.addr + s.len && len > 0);
        let (moves_start, moves_end) = (addr != s.addr, addr + len != s.addr + s.len);
        if moves_start {
            self.leave(i, false);
        }
        if moves_end {
            self.leave(i, true);
        }
        self.unlink_class(i);
        self.spans[i].addr = addr;
        self.spans[i].len = len;
        self.bytes -= s.len - len;
        if moves_start {
            self.enter(i, false);
        }
        if moves_end {
            self.enter(i, true);
        }
        self.link_class(i);
    }

    /// The smallest cached span of at least `len` bytes; among equals the
    /// most recently cached of the first class that has one (its pages
    /// are the likeliest to be resident and in cache).
    fn best(&self, len: usize) -> Option<usize> {
        let page = self.page_size();
        let c0 = class_of(len.div_ceil(page));
        let mut w = c0 / 64;
        let mut bits = self.nonempty[w] & (!0u64 << (c0 % 64));
        loop {
            while bits != 0 {
                let c = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let head = self.heads[c] as usize - 1;
                if c < EXACT && self.spans[head].len >= len {
                    // Every span of an exact class at or above the need
                    // holds it (but one shorter than a page, in class 0);
                    // the head is the newest.
                    return Some(head);
                }
                // A class of many sizes: the smallest that fits, the
                // first (newest) among equals.
                let mut found: Option<usize> = None;
                let mut e = self.heads[c];
                while e != 0 {
                    let i = e as usize - 1;
                    let l = self.spans[i].len;
                    if l >= len && found.is_none_or(|f| l < self.spans[f].len) {
                        found = Some(i);
                    }
                    e = self.spans[i].next;
                }
                if found.is_some() {
                    return found;
                }
            }
            w += 1;
            if w == CLASSES / 64 {
                return None;
            }
            bits = self.nonempty[w];
        }
    }

    /// Gives `[addr, addr + len)` back to the kernel.
    fn give_back(&self, addr: usize, len: usize) {
        // SAFETY: every cached span came from map_anon (or remap_anon) and
        // no heap uses it; munmap accepts ranges across mappings.
        unsafe { os::unmap_anon(addr, len) };
        if let Some(hook) = self.on_return {
            hook(addr, len);
        }
    }

    /// Caches a span (merging it with adjacent ones), then trims.
    fn put(&mut self, mut addr: usize, mut len: usize, zero: bool) {
        if let Some(i) = self
            .find(addr, true)
            .filter(|&i| self.spans[i].zero == zero)
        {
            let s = self.remove(i);
            addr = s.addr;
            len += s.len;
        }
        if let Some(i) = self
            .find(addr + len, false)
            .filter(|&i| self.spans[i].zero == zero)
        {
            len += self.remove(i).len;
        }
        if self.count == SLOTS {
            let o = self.remove(self.oldest as usize - 1);
            self.give_back(o.addr, o.len);
        }
        self.add(addr, len, zero);
        self.trim(self.budget());
    }

    /// Unmaps the least recently cached memory until at most `keep` bytes
    /// are cached; a span is cut (its front kept) rather than dropped whole
    /// when that is enough.
    fn trim(&mut self, keep: usize) {
        while self.bytes > keep && self.oldest != 0 {
            let i = self.oldest as usize - 1;
            let excess = self.bytes - keep;
            let s = self.spans[i];
            let cut = excess.next_multiple_of(self.page_size()).min(s.len);
            if cut == s.len {
                self.remove(i);
            } else {
                self.shrink(i, s.addr, s.len - cut);
            }
            self.give_back(s.addr + s.len - cut, cut);
        }
    }

    /// Gives every cached span back to the kernel.
    pub fn trim_all(&mut self) {
        self.trim(0);
    }

    /// Serves `len` from cached spans: the smallest that holds it, or the
    /// most recent one grown in place (or moved) by `mremap`.
    fn reuse(&mut self, len: usize) -> Option<(usize, bool)> {
        if let Some(i) = self.best(len) {
            let s = self.spans[i];
            if s.len > len {
                self.shrink(i, s.addr + len, s.len - len);
            } else {
                self.remove(i);
            }
            return Some((s.addr, s.zero));
        }
        if len < CHUNK || self.newest == 0 {
            return None;
        }
        let i = self.newest as usize - 1;
        let s = self.spans[i];
        // SAFETY: the span is ours and unused; on success the old range is
        // not used again (the span leaves the cache).
        let addr = unsafe { os::remap_anon(s.addr, s.len, len) }?;
        self.remove(i);
        if addr != s.addr {
            // The pages moved: their old addresses are not ours any more.
            if let Some(hook) = self.on_return {
                hook(s.addr, s.len);
            }
        }
        Some((addr, false))
    }

    /// Verifies the lists and tables against the spans.
    #[cfg(test)]
    fn check(&self) -> Result<(), &'static str> {
        let (mut n, mut bytes, mut e, mut newer) = (0, 0, self.newest, 0u16);
        while e != 0 {
            let s = &self.spans[e as usize - 1];
            if s.newer != newer || s.len == 0 {
                return Err("age list broken");
            }
            if self.find(s.addr, false) != Some(e as usize - 1)
                || self.find(s.addr + s.len, true) != Some(e as usize - 1)
            {
                return Err("address tables miss a span");
            }
            (n, bytes, newer, e) = (n + 1, bytes + s.len, e, s.older);
        }
        if newer != self.oldest || n != self.count || bytes != self.bytes {
            return Err("age list does not hold every span");
        }
        let mut m = 0;
        for c in 0..CLASSES {
            let (mut e, mut prev) = (self.heads[c], 0u16);
            if (e != 0) != (self.nonempty[c / 64] & 1 << (c % 64) != 0) {
                return Err("class bitmap wrong");
            }
            while e != 0 {
                let s = &self.spans[e as usize - 1];
                if self.class(e as usize - 1) != c || s.prev != prev {
                    return Err("class list broken");
                }
                (m, prev, e) = (m + 1, e, s.next);
            }
        }
        let live = |t: &[u16; TABLE]| t.iter().filter(|&&x| x != 0).count();
        if m != n || live(&self.by_start) != n || live(&self.by_end) != n {
            return Err("a span is listed twice or not at all");
        }
        Ok(())
    }
}

impl Drop for CachedPages {
    fn drop(&mut self) {
        self.trim_all();
    }
}

impl PageSource for CachedPages {
    fn page_size(&self) -> usize {
        if self.page == 0 {
            os::page_size()
        } else {
            self.page
        }
    }

    fn map(&mut self, len: usize) -> Option<(usize, bool)> {
        if self.page == 0 {
            self.page = os::page_size();
        }
        let got = self.reuse(len).or_else(|| {
            if len >= HUGE_FROM {
                return os::map_huge(len).map(|a| (a, true));
            }
            if len >= CHUNK {
                return os::map_anon(len).map(|a| (a, true));
            }
            let Some(a) = os::map_anon(CHUNK) else {
                return os::map_anon(len).map(|a| (a, true));
            };
            self.put(a + len, CHUNK - len, true);
            Some((a, true))
        });
        if got.is_some() {
            self.outstanding += len;
        }
        got
    }

    fn huge_from(&self) -> usize {
        HUGE_FROM
    }

    fn prefer_small_pages(&mut self, addr: usize, len: usize) {
        os::no_huge_pages(addr, len);
    }

    unsafe fn unmap(&mut self, addr: usize, len: usize) {
        self.outstanding -= len;
        self.put(addr, len, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_bounds() {
        let mut c = CachedPages::new();
        let page = c.page_size();
        let (a, z) = c.map(page).unwrap();
        assert!(z);
        assert_eq!(c.cached_bytes(), CHUNK - page);
        let (b, _) = c.map(page).unwrap();
        assert_eq!(b, a + page, "second page carved from the same chunk");
        // SAFETY: both spans came from this cache and are not used again.
        unsafe {
            c.unmap(a, page);
            c.unmap(b, page);
        }
        assert_eq!(c.cached_bytes(), CHUNK);
        let (d, z) = c.map(2 * page).unwrap();
        assert_eq!(d, a, "the two released pages merged");
        assert!(!z, "released memory is not known to be zero");
        // SAFETY: as above.
        unsafe { c.unmap(d, 2 * page) };
        let big = BUDGET + 4 * page;
        let (e, _) = c.map(big).unwrap();
        // SAFETY: as above.
        unsafe { c.unmap(e, big) };
        assert_eq!(
            c.cached_bytes(),
            BUDGET,
            "with no region held, exactly the budget stays"
        );
        let (f, _) = c.map(2 * big).unwrap();
        // SAFETY: the memory is ours; touching it shows the mapping is whole.
        unsafe { core::ptr::write_bytes(f as *mut u8, 1, 2 * big) };
        // SAFETY: as above.
        unsafe { c.unmap(f, 2 * big) };
        assert_eq!(c.cached_bytes(), BUDGET);
        c.trim_all();
        assert_eq!(c.cached_bytes(), 0);
    }

    /// Random regions come and go: after every step the lists and tables
    /// agree, the cache is within its budget, and every region handed out
    /// is writable and overlaps no other.
    #[test]
    fn random_regions_keep_the_structure() {
        let mut c = CachedPages::new();
        let page = c.page_size();
        let mut held: std::vec::Vec<(usize, usize)> = std::vec::Vec::new();
        let mut s = 0x2545_f491_4f6c_dd1du64;
        for step in 0..20_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if held.len() < 300 && (!s.is_multiple_of(3) || held.is_empty()) {
                // Mostly a few pages, sometimes past a chunk.
                let pages = if s >> 60 == 0 {
                    200 + (s >> 8) % 400
                } else {
                    1 + (s >> 8) % 20
                };
                let len = pages as usize * page;
                let (a, _) = c.map(len).unwrap();
                // SAFETY: the span is ours until unmapped.
                unsafe { core::ptr::write_bytes(a as *mut u8, step as u8, len) };
                for &(b, l) in &held {
                    assert!(a + len <= b || b + l <= a, "overlapping regions");
                }
                held.push((a, len));
            } else {
                let (a, len) = held.swap_remove((s >> 20) as usize % held.len());
                // SAFETY: the span came from this cache and is not used again.
                unsafe { c.unmap(a, len) };
            }
            c.check().unwrap();
            assert!(c.cached_bytes() <= c.budget());
        }
        for (a, len) in held.drain(..) {
            // SAFETY: as above.
            unsafe { c.unmap(a, len) };
        }
        c.check().unwrap();
        assert_eq!(c.cached_bytes(), BUDGET.min(c.cached_bytes()));
        c.trim_all();
        c.check().unwrap();
        assert_eq!(c.cached_bytes(), 0);
    }

    /// More scattered free pages than slots: the oldest go back to the
    /// kernel, the structure stays whole.
    #[test]
    fn more_spans_than_slots() {
        let mut c = CachedPages::new();
        let page = c.page_size();
        let pages: std::vec::Vec<usize> = (0..2 * SLOTS + 10)
            .map(|_| c.map(page).unwrap().0)
            .collect();
        // Every other page is released: no two merge.
        for &a in pages.iter().step_by(2) {
            // SAFETY: the span came from this cache and is not used again.
            unsafe { c.unmap(a, page) };
        }
        c.check().unwrap();
        assert!(c.count <= SLOTS);
        for &a in pages.iter().skip(1).step_by(2) {
            // SAFETY: as above.
            unsafe { c.unmap(a, page) };
        }
        c.check().unwrap();
        c.trim_all();
        assert_eq!((c.cached_bytes(), c.count), (0, 0));
    }

    #[test]
    fn budget_follows_what_the_heaps_hold() {
        let mut c = CachedPages::new();
        let held = 4 * BUDGET;
        let (a, _) = c.map(held).unwrap();
        let (b, _) = c.map(BUDGET).unwrap();
        // SAFETY: `b` came from this cache and is not used again.
        unsafe { c.unmap(b, BUDGET) };
        assert_eq!(c.cached_bytes(), BUDGET, "kept while a region is held");
        let (r, _) = c.map(BUDGET + CHUNK).unwrap();
        // SAFETY: the span is ours: all of it must be writable.
        unsafe { core::ptr::write_bytes(r as *mut u8, 2, BUDGET + CHUNK) };
        assert_eq!(c.cached_bytes(), 0, "the cached span grew into the request");
        // SAFETY: as above.
        unsafe {
            c.unmap(r, BUDGET + CHUNK);
            c.unmap(a, held);
        }
        assert_eq!(c.cached_bytes(), BUDGET, "nothing held: the budget alone");
    }
}
