//! A small, bounded cache of spans between the heap and the kernel.
//!
//! SPEC §2 allows it "if it is invisible to `print_memory` and keeps the
//! process's virtual size bounded". [`CachedPages`] is a [`PageSource`]:
//!
//! - `unmap` keeps the span (merged with an adjacent cached span of the same
//!   zero state) while the cache holds at most [`BUDGET`] bytes; beyond that,
//!   or for a span larger than the budget, the span goes back to the kernel.
//! - `map` serves a request from the smallest cached span that holds it
//!   (the rest stays cached); otherwise a request smaller than [`CHUNK`]
//!   maps a whole chunk and caches the remainder, so a heap that grows one
//!   page at a time makes one `mmap` per chunk, not per page.
//!
//! The heap still sees regions of exactly the size it asked for; only the
//! syscalls change. Virtual memory held beyond the heap's regions is at most
//! `BUDGET` (8 MiB), under the 10 MB the SPEC's test allows.

use crate::os::{self, PageSource};

/// Most bytes kept mapped while unused.
pub const BUDGET: usize = 8 << 20;
/// Requests below this are carved from a fresh chunk of this size.
pub const CHUNK: usize = 1 << 20;
const SLOTS: usize = 32;

#[derive(Clone, Copy, Debug, Default)]
struct Span {
    addr: usize,
    len: usize,
    zero: bool,
}

/// A page source that caches released spans (see the module docs).
#[derive(Debug)]
pub struct CachedPages {
    spans: [Span; SLOTS],
    count: usize,
    bytes: usize,
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
            }; SLOTS],
            count: 0,
            bytes: 0,
            page: 0,
            on_return: hook,
        }
    }

    /// Bytes currently cached (mapped but not part of any region).
    pub fn cached_bytes(&self) -> usize {
        self.bytes
    }

    /// Gives every cached span back to the kernel.
    pub fn trim(&mut self) {
        while self.count > 0 {
            let s = self.spans[self.count - 1];
            self.remove(self.count - 1);
            // SAFETY: cached spans came from map_anon and nothing uses them.
            unsafe { os::unmap_anon(s.addr, s.len) };
            if let Some(hook) = self.on_return {
                hook(s.addr, s.len);
            }
        }
    }

    /// The smallest cached span of at least `len` bytes (first by address).
    fn best(&self, len: usize) -> Option<usize> {
        (0..self.count)
            .filter(|&i| self.spans[i].len >= len)
            .min_by_key(|&i| (self.spans[i].len, self.spans[i].addr))
    }

    fn remove(&mut self, i: usize) {
        self.bytes -= self.spans[i].len;
        self.count -= 1;
        self.spans[i] = self.spans[self.count];
    }

    /// Caches a span, or gives it back to the kernel if it does not fit.
    fn put(&mut self, mut s: Span) {
        let mut i = 0;
        while i < self.count {
            let c = self.spans[i];
            if c.zero == s.zero && (c.addr + c.len == s.addr || s.addr + s.len == c.addr) {
                self.remove(i);
                s = Span {
                    addr: c.addr.min(s.addr),
                    len: c.len + s.len,
                    zero: s.zero,
                };
                continue;
            }
            i += 1;
        }
        if self.count == SLOTS || self.bytes + s.len > BUDGET {
            // SAFETY: every cached or released span came from map_anon, and the
            // heap no longer uses it; munmap accepts ranges across mappings.
            unsafe { os::unmap_anon(s.addr, s.len) };
            if let Some(hook) = self.on_return {
                hook(s.addr, s.len);
            }
            return;
        }
        self.spans[self.count] = s;
        self.count += 1;
        self.bytes += s.len;
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
        if let Some(i) = self.best(len) {
            let s = self.spans[i];
            self.remove(i);
            if s.len > len {
                self.put(Span {
                    addr: s.addr + len,
                    len: s.len - len,
                    zero: s.zero,
                });
            }
            return Some((s.addr, s.zero));
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
        });
        Some((a, true))
    }

    unsafe fn unmap(&mut self, addr: usize, len: usize) {
        self.put(Span {
            addr,
            len,
            zero: false,
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
        let big = BUDGET + page;
        let (e, _) = c.map(big).unwrap();
        // SAFETY: as above.
        unsafe { c.unmap(e, big) };
        assert!(
            c.cached_bytes() <= BUDGET,
            "a span above the budget is not kept"
        );
    }
}
