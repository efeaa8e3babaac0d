//! The large regions of the address space: a sorted table of spans, the
//! page map's complement.
//!
//! The page map ([`crate::registry`]) gives a 16 KiB leaf to every 16 MiB
//! window of address space it ever covers, and a leaf can never be unmapped
//! (another thread may be reading it). Small regions are carved from 1 MiB
//! chunks that stay close together, so that is cheap; but large regions are
//! mapped one by one wherever the kernel puts them, and a program that
//! frees them and allocates again would make the map grow round after
//! round. So regions of [`LARGE`] bytes or more are kept here instead:
//!
//! ```text
//!   [ start0 .. end0 : id0 ] [ start1 .. end1 : RELEASED ] [ start2 .. end2 : id2 ] ...
//!   sorted by start, never overlapping; RELEASED: a released region whose
//!   memory the span cache still holds (so a second free of it is a double free)
//! ```
//!
//! The table is one mapping that doubles when full, used under its own lock
//! (freeing a large block is rare enough): `find` is a binary search.

use crate::os;

/// Regions of at least this many bytes are kept in the table.
pub const LARGE: usize = 1 << 20;

/// One large region, or the memory of a released one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// The region's id, or `RELEASED`.
    pub id: u32,
}

/// The table (see the module docs).
pub struct Spans {
    ptr: *mut Span,
    cap: usize,
    len: usize,
}

// SAFETY: the table owns its mapping; it is used under a lock.
unsafe impl Send for Spans {}

impl Default for Spans {
    fn default() -> Self {
        Self::new()
    }
}

impl Spans {
    /// An empty table (maps nothing until the first insert).
    pub const fn new() -> Spans {
        Spans {
            ptr: core::ptr::null_mut(),
            cap: 0,
            len: 0,
        }
    }

    fn all(&self) -> &[Span] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `len` entries of the mapping are initialised.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn all_mut(&mut self) -> &mut [Span] {
        if self.cap == 0 {
            return &mut [];
        }
        // SAFETY: the mapping holds `cap` entries, `len` of them in use; the
        // table is borrowed mutably.
        unsafe { core::slice::from_raw_parts_mut(self.ptr, self.cap) }
    }

    /// The id of the span holding `addr` (0 if none).
    pub fn find(&self, addr: usize) -> u32 {
        let all = self.all();
        let i = all.partition_point(|s| s.start <= addr);
        match i.checked_sub(1).map(|i| all[i]) {
            Some(s) if addr < s.end => s.id,
            _ => 0,
        }
    }

    /// Makes room for `more` entries; false if the table could not grow.
    pub fn reserve(&mut self, more: usize) -> bool {
        if self.len + more <= self.cap {
            return true;
        }
        let cap = (2 * self.cap).max(256).max(self.len + more);
        let size = core::mem::size_of::<Span>();
        let Some(fresh) = os::map_anon(cap * size) else {
            return false;
        };
        if self.cap != 0 {
            // SAFETY: both mappings hold at least `len` entries and do not
            // overlap; the old one is unmapped right after and never used.
            unsafe {
                core::ptr::copy_nonoverlapping(self.ptr, fresh as *mut Span, self.len);
                os::unmap_anon(self.ptr as usize, self.cap * size);
            }
        }
        self.ptr = fresh as *mut Span;
        self.cap = cap;
        true
    }

    /// Records region `id` at `[start, end)`, after taking out whatever
    /// released memory the table had there. False if the table could not
    /// grow (then nothing changed).
    pub fn insert(&mut self, start: usize, end: usize, id: u32) -> bool {
        // Clearing may split one span in two: one more entry at most.
        if !self.reserve(2) {
            return false;
        }
        self.clear(start, end, None);
        let i = self.all().partition_point(|s| s.start < start);
        let len = self.len;
        let all = self.all_mut();
        all.copy_within(i..len, i + 1);
        all[i] = Span { start, end, id };
        self.len += 1;
        true
    }

    /// Marks region `id`'s span released.
    pub fn release(&mut self, start: usize, id: u32, released: u32) {
        let len = self.len;
        let all = &mut self.all_mut()[..len];
        let i = all.partition_point(|s| s.start < start);
        if let Some(s) = all.get_mut(i).filter(|s| s.start == start && s.id == id) {
            s.id = released;
        }
    }

    /// Takes `[start, end)` out of every span that overlaps it (only spans
    /// with id `only`, if given), cutting spans that stick out on either
    /// side. Needs room for one more entry (a span split in two) when
    /// `[start, end)` lies strictly inside a span.
    pub fn clear(&mut self, start: usize, end: usize, only: Option<u32>) {
        let mut i = self.all().partition_point(|s| s.end <= start);
        while i < self.len {
            let s = self.all()[i];
            if s.start >= end {
                return;
            }
            if only.is_some_and(|id| id != s.id) {
                i += 1;
                continue;
            }
            let (left, right) = (s.start < start, s.end > end);
            let (len, cap) = (self.len, self.cap);
            let all = self.all_mut();
            match (left, right) {
                (false, false) => {
                    all.copy_within(i + 1..len, i);
                    self.len -= 1;
                    continue;
                }
                (true, false) => all[i].end = start,
                (false, true) => all[i].start = end,
                (true, true) => {
                    if len == cap {
                        // No room to split: keep the span whole (its
                        // memory is then still reported as ours, released).
                        return;
                    }
                    all.copy_within(i + 1..len, i + 2);
                    all[i].end = start;
                    all[i + 1] = Span { start: end, ..s };
                    self.len += 1;
                    return;
                }
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_release_clear() {
        let mut t = Spans::new();
        let m = LARGE;
        assert!(t.insert(10 * m, 12 * m, 1));
        assert!(t.insert(2 * m, 4 * m, 2));
        assert!(t.insert(20 * m, 30 * m, 3));
        assert_eq!((t.find(2 * m), t.find(4 * m - 1), t.find(4 * m)), (2, 2, 0));
        assert_eq!((t.find(11 * m), t.find(25 * m), t.find(m)), (1, 3, 0));
        t.release(20 * m, 3, 99);
        assert_eq!(t.find(25 * m), 99);
        // A new region inside the released span splits it.
        assert!(t.insert(22 * m, 23 * m, 4));
        assert_eq!(
            (t.find(21 * m), t.find(22 * m), t.find(23 * m)),
            (99, 4, 99)
        );
        // Giving released memory back only touches released spans.
        t.clear(0, 40 * m, Some(99));
        assert_eq!((t.find(21 * m), t.find(22 * m), t.find(29 * m)), (0, 4, 0));
        assert_eq!((t.find(2 * m), t.find(11 * m)), (2, 1));
    }
}
