//! A 16-ary max tree over `u32` leaves: "the first leaf at or after `i`
//! whose value is at least `k`" in one cache line per level.
//!
//! ```text
//!  level 2 (root group)   [ m0 m1 .. m15 ]                  top = max of it
//!  level 1                [ .. 16 .. ] [ .. 16 .. ] ...      entry j = max of group j below
//!  level 0 (leaves)       [ .. 16 .. ] [ .. 16 .. ] ...      leaf values
//! ```
//!
//! Every level is an array of groups of 16 values (64 bytes, one cache
//! line); entry `j` of level `l + 1` is the maximum of group `j` of level
//! `l`. A search reads one group per level and picks its first fitting
//! entry with a 16-lane comparison; a leaf that grows walks up while its
//! ancestors are smaller, a leaf that shrinks walks up while the group
//! maximum changes (SSE4.1's unsigned maximum where the CPU has it, a
//! compare-and-select otherwise). A million leaves take 5 levels.
//!
//! Values must stay below 2^31 (the comparisons are signed, which is what
//! SSE2 offers). Invariant (checked by [`MaxTree::check`]): every entry above
//! the leaves is the maximum of its group, and `top` is the maximum of the
//! root group.

use crate::os;

/// Entries per group.
const FAN: usize = 16;
/// Most levels (16^8 = 2^32 leaves).
const MAX_LEVELS: usize = 8;

/// A group of 16 entries, one cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Group([u32; FAN]);

/// The tree (see the module docs). An empty tree (no mapping) has no leaves.
pub struct MaxTree {
    /// Leaves (a multiple of 16).
    cap: usize,
    /// Number of levels, leaves included (the last is the root group).
    levels: usize,
    /// Where each level's groups start, in groups from `base`.
    start: [usize; MAX_LEVELS],
    /// Each level's first entry (`base + start[level]`, as entries).
    level: [*mut u32; MAX_LEVELS],
    base: *mut Group,
    /// Groups mapped.
    groups: usize,
    top: u32,
}

/// The entries of `g` that are at least `k` (`k` > 0), as a bit mask.
#[cfg(target_arch = "x86_64")]
#[inline]
fn fits(g: &Group, k: u32) -> u32 {
    use core::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline; `g` is 64-byte aligned,
    // so the four 16-byte loads are aligned and inside it.
    unsafe {
        let p = g.0.as_ptr() as *const __m128i;
        // `k` is at most 2^31 (entries are below it): wraps only to MAX.
        let t = _mm_set1_epi32((k as i32).wrapping_sub(1));
        let a = _mm_cmpgt_epi32(_mm_load_si128(p), t);
        let b = _mm_cmpgt_epi32(_mm_load_si128(p.add(1)), t);
        let c = _mm_cmpgt_epi32(_mm_load_si128(p.add(2)), t);
        let d = _mm_cmpgt_epi32(_mm_load_si128(p.add(3)), t);
        let all = _mm_packs_epi16(_mm_packs_epi32(a, b), _mm_packs_epi32(c, d));
        _mm_movemask_epi8(all) as u32
    }
}

/// The entries of `g` that are at least `k`, as a bit mask.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn fits(g: &Group, k: u32) -> u32 {
    let mut m = 0u32;
    for (j, &v) in g.0.iter().enumerate() {
        m |= ((v >= k) as u32) << j;
    }
    m
}

/// The largest entry of `g`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn group_max(g: &Group) -> u32 {
    use core::arch::x86_64::*;
    // SAFETY: as in `fits`. SSE2 has no 32-bit max, so it is a compare and
    // a select (entries are below 2^31, so signed order is right).
    unsafe {
        /// Lane-wise signed maximum of four 32-bit integers.
        ///
        /// # Safety
        /// Needs SSE2 (every x86_64 has it).
        #[inline(always)]
        unsafe fn max(a: __m128i, b: __m128i) -> __m128i {
            // SAFETY: SSE2 intrinsics on registers.
            unsafe { _mm_xor_si128(b, _mm_and_si128(_mm_xor_si128(a, b), _mm_cmpgt_epi32(a, b))) }
        }
        let p = g.0.as_ptr() as *const __m128i;
        let ab = max(_mm_load_si128(p), _mm_load_si128(p.add(1)));
        let cd = max(_mm_load_si128(p.add(2)), _mm_load_si128(p.add(3)));
        let m = max(ab, cd);
        let m = max(m, _mm_shuffle_epi32(m, 0b01_00_11_10));
        let m = max(m, _mm_shuffle_epi32(m, 0b10_11_00_01));
        _mm_cvtsi128_si32(m) as u32
    }
}

/// The largest entry of `g`.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn group_max(g: &Group) -> u32 {
    g.0.iter().copied().max().unwrap_or(0)
}

/// The largest entry of a group with SSE4.1's unsigned 32-bit maximum
/// (six instructions instead of SSE2's compare-and-select), for CPUs that
/// have it (nearly all x86-64 since 2008; checked once with `cpuid`).
#[cfg(target_arch = "x86_64")]
mod sse41 {
    use super::Group;
    use core::arch::x86_64::*;
    use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

    /// 0: not asked yet, 1: no, 2: yes.
    static HAVE: AtomicU8 = AtomicU8::new(0);

    /// Whether the CPU has SSE4.1.
    #[inline]
    pub fn available() -> bool {
        match HAVE.load(Relaxed) {
            0 => detect(),
            h => h == 2,
        }
    }

    #[cold]
    fn detect() -> bool {
        // CPUID leaf 1, ECX bit 19: SSE4.1 (leaf 1 exists on every x86-64).
        let yes = __cpuid(1).ecx & 1 << 19 != 0;
        HAVE.store(if yes { 2 } else { 1 }, Relaxed);
        yes
    }

    /// The largest entry of `g`.
    ///
    /// # Safety
    /// The CPU must have SSE4.1 ([`available`]).
    #[inline]
    #[target_feature(enable = "sse4.1")]
    pub unsafe fn group_max(g: &Group) -> u32 {
        let p = g.0.as_ptr() as *const __m128i;
        // SAFETY: `g` is 64-byte aligned: four aligned 16-byte loads inside it.
        let (a, b, c, d) = unsafe {
            (
                _mm_load_si128(p),
                _mm_load_si128(p.add(1)),
                _mm_load_si128(p.add(2)),
                _mm_load_si128(p.add(3)),
            )
        };
        let m = _mm_max_epu32(_mm_max_epu32(a, b), _mm_max_epu32(c, d));
        let m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0b01_00_11_10));
        let m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0b10_11_00_01));
        _mm_cvtsi128_si32(m) as u32
    }
}

impl MaxTree {
    /// A tree with no leaves.
    pub const fn empty() -> MaxTree {
        MaxTree {
            cap: 0,
            levels: 0,
            start: [0; MAX_LEVELS],
            level: [core::ptr::null_mut(); MAX_LEVELS],
            base: core::ptr::null_mut(),
            groups: 0,
            top: 0,
        }
    }

    /// A tree of `cap` zero leaves (`cap` a multiple of 16, at least 16);
    /// `None` if it could not be mapped.
    pub fn new(cap: usize) -> Option<MaxTree> {
        debug_assert!(cap >= FAN && cap.is_multiple_of(FAN));
        let mut t = MaxTree::empty();
        let mut n = cap / FAN;
        let mut total = 0;
        loop {
            t.start[t.levels] = total;
            t.levels += 1;
            total += n;
            if n == 1 {
                break;
            }
            n = n.div_ceil(FAN);
        }
        let bytes = total * core::mem::size_of::<Group>();
        t.base = os::map_meta(bytes)? as *mut Group;
        for l in 0..t.levels {
            // SAFETY: `start[l]` is a group of the mapping just made.
            t.level[l] = unsafe { t.base.add(t.start[l]) } as *mut u32;
        }
        t.groups = total;
        t.cap = cap;
        Some(t)
    }

    /// Number of leaves.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The largest leaf (0 for an empty tree).
    #[inline]
    pub fn top(&self) -> u32 {
        self.top
    }

    #[inline]
    fn group(&self, level: usize, g: usize) -> &Group {
        debug_assert!(level < self.levels && self.start[level] + g < self.groups);
        // SAFETY: `start[level] + g` is a group of the mapping (levels are
        // laid out by `new` to hold every group they can be asked for), and
        // `self.level[level]` is its level's first group.
        unsafe { &*(self.level[level].add(g * FAN) as *const Group) }
    }

    #[inline]
    fn entry(&self, level: usize, i: usize) -> u32 {
        debug_assert!(level < self.levels && self.start[level] + i / FAN < self.groups);
        // SAFETY: as in `group`: entry `i` of `level` is in the mapping.
        unsafe { *self.level[level].add(i) }
    }

    #[inline]
    fn set_entry(&mut self, level: usize, i: usize, v: u32) {
        debug_assert!(level < self.levels && self.start[level] + i / FAN < self.groups);
        // SAFETY: as in `entry`, with the tree borrowed mutably.
        unsafe { *self.level[level].add(i) = v }
    }

    /// Leaf `i`.
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        self.entry(0, i)
    }

    /// Raises leaf `i` to `v` if `v` is larger; ancestors follow while they
    /// are smaller.
    #[inline]
    pub fn raise(&mut self, mut i: usize, v: u32) {
        debug_assert!(v < 1 << 31);
        for level in 0..self.levels {
            if self.entry(level, i) >= v {
                return;
            }
            self.set_entry(level, i, v);
            i /= FAN;
        }
        self.top = self.top.max(v);
    }

    /// Sets leaf `i` to `v`, at most its value; ancestors follow while the
    /// maximum of their group changes. A parent larger than the old value
    /// was not set by it and stays, without looking at the group.
    #[inline]
    pub fn lower(&mut self, i: usize, v: u32) {
        #[cfg(target_arch = "x86_64")]
        if sse41::available() {
            // SAFETY: the CPU has SSE4.1.
            return unsafe { self.lower_sse41(i, v) };
        }
        self.lower_with(i, v, group_max)
    }

    /// `lower` with SSE4.1's maximum.
    ///
    /// # Safety
    /// The CPU must have SSE4.1.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse4.1")]
    unsafe fn lower_sse41(&mut self, i: usize, v: u32) {
        // SAFETY: the caller checked that the CPU has SSE4.1.
        self.lower_with(i, v, |g| unsafe { sse41::group_max(g) })
    }

    /// `lower`, with `max` computing a group's largest entry. The group's
    /// new maximum is computed whole: the old value was its maximum (the
    /// parent equals it), and usually no other entry matches it (first fit
    /// takes a block larger than every block before it).
    #[inline(always)]
    fn lower_with(&mut self, mut i: usize, mut v: u32, max: impl Fn(&Group) -> u32) {
        let old = self.entry(0, i);
        if old == v {
            return;
        }
        self.set_entry(0, i, v);
        for level in 1..self.levels {
            let parent = self.entry(level, i / FAN);
            if parent > old {
                return;
            }
            v = max(self.group(level - 1, i / FAN));
            i /= FAN;
            if v == parent {
                return;
            }
            self.set_entry(level, i, v);
        }
        self.top = max(self.group(self.levels - 1, 0));
    }

    /// Sets leaf `i` to `v` (larger or smaller).
    #[inline]
    pub fn set(&mut self, i: usize, v: u32) {
        if v >= self.get(i) {
            self.raise(i, v);
        } else {
            self.lower(i, v);
        }
    }

    /// The first leaf under entry `i` of `level` (which fits) that fits.
    #[inline]
    fn descend(&self, mut level: usize, mut i: usize, k: u32) -> usize {
        while level > 0 {
            level -= 1;
            let m = fits(self.group(level, i), k);
            debug_assert!(m != 0);
            i = i * FAN + m.trailing_zeros() as usize;
        }
        i
    }

    /// The first leaf whose value is at least `k` (`k` > 0).
    #[inline]
    pub fn first(&self, k: u32) -> Option<usize> {
        if self.top < k {
            return None;
        }
        let root = self.levels - 1;
        let m = fits(self.group(root, 0), k);
        Some(self.descend(root, m.trailing_zeros() as usize, k))
    }

    /// The first leaf at or after `from` whose value is at least `k`.
    pub fn first_from(&self, from: usize, k: u32) -> Option<usize> {
        if self.top < k {
            return None;
        }
        // `i` is an entry of `level`: search the rest of its group, then
        // continue from the next group (the next entry one level up).
        let mut i = from;
        for level in 0..self.levels {
            let g = i / FAN;
            if g >= self.level_groups(level) {
                return None;
            }
            let m = fits(self.group(level, g), k) & (!0u32 << (i % FAN));
            if m != 0 {
                return Some(self.descend(level, g * FAN + m.trailing_zeros() as usize, k));
            }
            i = g + 1;
        }
        None
    }

    /// Recomputes every entry above the leaves (after leaves were written
    /// with [`MaxTree::put_leaf`]).
    pub fn rebuild(&mut self) {
        for level in 1..self.levels {
            let groups = self.level_groups(level - 1);
            for g in 0..groups {
                // Written only where it changes: a sparse tree stays
                // untouched where it is zero (see `Cells::add_region`).
                let m = group_max(self.group(level - 1, g));
                if self.entry(level, g) != m {
                    self.set_entry(level, g, m);
                }
            }
        }
        self.top = if self.levels == 0 {
            0
        } else {
            group_max(self.group(self.levels - 1, 0))
        };
    }

    /// Writes leaf `i` without fixing its ancestors (see `rebuild`).
    pub fn put_leaf(&mut self, i: usize, v: u32) {
        self.set_entry(0, i, v);
    }

    fn level_groups(&self, level: usize) -> usize {
        let end = if level + 1 < self.levels {
            self.start[level + 1]
        } else {
            self.groups
        };
        end - self.start[level]
    }

    /// Verifies that every entry above the leaves is its group's maximum.
    pub fn check(&self) -> Result<(), &'static str> {
        for level in 1..self.levels {
            for g in 0..self.level_groups(level - 1) {
                if self.entry(level, g) != group_max(self.group(level - 1, g)) {
                    return Err("max tree entry is not the maximum of its group");
                }
            }
        }
        if self.levels > 0 && self.top != group_max(self.group(self.levels - 1, 0)) {
            return Err("max tree top is not the maximum of the root group");
        }
        Ok(())
    }
}

impl Drop for MaxTree {
    fn drop(&mut self) {
        if self.groups != 0 {
            // SAFETY: the mapping was made by `new` with this many groups and
            // only this tree refers to it.
            unsafe {
                os::unmap_anon(
                    self.base as usize,
                    self.groups * core::mem::size_of::<Group>(),
                )
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Both ways of lowering: the CPU's (SSE4.1 where it has it) and the
    /// SSE2 one every x86-64 has.
    #[test]
    fn against_a_vector() {
        for sse2_only in [false, true] {
            against_a_vector_lowering(sse2_only);
        }
    }

    fn against_a_vector_lowering(sse2_only: bool) {
        for cap in [16usize, 256, 4096, 16 * 300] {
            let mut t = MaxTree::new(cap).unwrap();
            let mut v: Vec<u32> = std::vec![0; cap];
            let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ cap as u64;
            for step in 0..20_000 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let i = (s as usize >> 3) % cap;
                let x = ((s >> 40) % 1000) as u32;
                if sse2_only && x < t.get(i) {
                    t.lower_with(i, x, group_max);
                } else {
                    t.set(i, x);
                }
                v[i] = x;
                let k = ((s >> 20) % 1000) as u32 + 1;
                let from = (s as usize >> 30) % cap;
                assert_eq!(t.first(k), v.iter().position(|&y| y >= k));
                assert_eq!(
                    t.first_from(from, k),
                    v[from..].iter().position(|&y| y >= k).map(|p| p + from)
                );
                assert_eq!(t.top(), v.iter().copied().max().unwrap());
                if step % 1000 == 0 {
                    t.check().unwrap();
                }
            }
            for (i, &x) in v.iter().enumerate() {
                t.put_leaf(i, x / 2);
            }
            t.rebuild();
            t.check().unwrap();
        }
    }
}
