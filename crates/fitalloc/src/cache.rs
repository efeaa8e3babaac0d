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
//! The heaps still see regions of exactly the size they asked for; only the
//! system calls and page faults change.

use crate::os::{self, PageSource};

/// Bytes the cache may keep when the heaps hold no region at all.
pub const BUDGET: usize = 8 << 20;
/// Requests below this are carved from a fresh chunk of this size.
pub const CHUNK: usize = 1 << 20;
const SLOTS: usize = 128;
/// Fresh spans this large are aligned for transparent huge pages.
pub const HUGE_FROM: usize = 4 << 20;

#[derive(Clone, Copy, Debug, Default)]
struct Span {
    addr: usize,
    len: usize,
    zero: bool,
    /// When it was cached (larger: more recent).
    stamp: u64,
}

/// A page source that caches released spans (see the module docs).
#[derive(Debug)]
pub struct CachedPages {
    spans: [Span; SLOTS],
    count: usize,
    bytes: usize,
    /// Bytes handed out by `map` and not yet given back.
    outstanding: usize,
    clock: u64,
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
            spans: [Span {
                addr: 0,
                len: 0,
                zero: false,
                stamp: 0,
            }; SLOTS],
            count: 0,
            bytes: 0,
            outstanding: 0,
            clock: 0,
            page: 0,
            on_return: hook,
        }
    }

    /// Bytes currently cached (mapped but not part of any region).
    pub fn cached_bytes(&self) -> usize {
        self.bytes
    }

    /// What the cache may hold now.
    pub fn budget(&self) -> usize {
        BUDGET + self.outstanding / 2
    }

    /// The smallest cached span of at least `len` bytes; among equals the
    /// most recently cached (its pages are the likeliest to be resident and
    /// in cache).
    fn best(&self, len: usize) -> Option<usize> {
        (0..self.count)
            .filter(|&i| self.spans[i].len >= len)
            .min_by_key(|&i| (self.spans[i].len, u64::MAX - self.spans[i].stamp))
    }

    fn newest(&self) -> Option<usize> {
        (0..self.count).max_by_key(|&i| self.spans[i].stamp)
    }

    fn remove(&mut self, i: usize) -> Span {
        let s = self.spans[i];
        self.bytes -= s.len;
        self.count -= 1;
        self.spans[i] = self.spans[self.count];
        s
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
    fn put(&mut self, mut s: Span) {
        self.clock += 1;
        s.stamp = self.clock;
        let mut i = 0;
        while i < self.count {
            let c = self.spans[i];
            if c.zero == s.zero && (c.addr + c.len == s.addr || s.addr + s.len == c.addr) {
                self.remove(i);
                s.addr = c.addr.min(s.addr);
                s.len += c.len;
                continue;
            }
            i += 1;
        }
        if self.count == SLOTS {
            let old = (0..self.count)
                .min_by_key(|&i| self.spans[i].stamp)
                .unwrap_or(0);
            let o = self.remove(old);
            self.give_back(o.addr, o.len);
        }
        self.spans[self.count] = s;
        self.count += 1;
        self.bytes += s.len;
        self.trim(self.budget());
    }

    /// Unmaps the least recently cached memory until at most `keep` bytes
    /// are cached; a span is cut (its front kept) rather than dropped whole
    /// when that is enough.
    fn trim(&mut self, keep: usize) {
        while self.bytes > keep {
            let Some(i) = (0..self.count).min_by_key(|&i| self.spans[i].stamp) else {
                return;
            };
            let excess = self.bytes - keep;
            let s = self.spans[i];
            if s.len <= excess {
                self.remove(i);
                self.give_back(s.addr, s.len);
            } else {
                let cut = excess.next_multiple_of(self.page_size()).min(s.len);
                self.spans[i].len -= cut;
                self.bytes -= cut;
                self.give_back(s.addr + s.len - cut, cut);
                if self.spans[i].len == 0 {
                    self.remove(i);
                }
            }
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
            let s = self.remove(i);
            if s.len > len {
                self.spans[self.count] = Span {
                    addr: s.addr + len,
                    len: s.len - len,
                    zero: s.zero,
                    stamp: s.stamp,
                };
                self.count += 1;
                self.bytes += s.len - len;
            }
            return Some((s.addr, s.zero));
        }
        if len < CHUNK {
            return None;
        }
        let i = self.newest()?;
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
            self.put(Span {
                addr: a + len,
                len: CHUNK - len,
                zero: true,
                stamp: 0,
            });
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
        self.put(Span {
            addr,
            len,
            zero: false,
            stamp: 0,
        });
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
