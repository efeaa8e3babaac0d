//! The size index (best fit): a B+tree of every free block, keyed by
//! `(size, region seq, address)`, kept entirely outside the heap's memory.
//!
//! A key is one `u128`, so comparing keys is comparing integers:
//!
//! ```text
//!  bit 127        96 95                     44 43                 0
//!     | size units  | region seq (52 bits)    | address / 16 (44)  |
//! ```
//!
//! Best fit for `n` units is the first key at or above `key(n, 0, 0)`: the
//! smallest size that fits, then the earliest region, then the lowest
//! address, which is exactly SPEC §3's tie rule.
//!
//! ```text
//!                 inner [ s0 | s1 ]           child i holds keys in [s(i-1), s(i))
//!                /        |       \
//!   leaf [k k k] -> [k k k k] -> [k k]        leaves linked in key order
//! ```
//!
//! Nodes (15 keys, 16 children) live in chunks of 256 (80 KiB each, mapped
//! as needed, so that growing never needs a large mapping: a `free` may
//! have to grow the tree) and are named by `u32` index through a directory
//! of chunks; freed nodes go on a free list. Every node
//! but the root holds at least 7 keys, so a tree of a million blocks is at
//! most 7 levels deep and most searches touch 2 or 3 cache-resident levels.
//!
//! A *finger* remembers the last leaf a search reached and the range of
//! keys it covers (the separators on its path: keys in `[lo, hi)` belong to
//! it and to no other leaf). A search for a key inside that range starts at
//! the leaf instead of the root, and so do a replacement, a removal that
//! leaves the leaf at least half full and an insertion into a leaf with
//! room; anything that changes the tree's shape (a split, a borrow, a
//! merge, a new or removed root) forgets the finger. Best fit keeps asking about the same few sizes
//! (the block it takes is freed again, and lands in the same leaf), so most
//! of its searches and updates skip the descent. The answers are the same:
//! the finger is only taken when the leaf is the one the descent would
//! reach.
//!
//! *Bins* answer best fit without a descent: one per size below 1024 units
//! and one for every larger size, each with the smallest key of its sizes,
//! and a bitmap of the non-empty ones. Best fit for `n` units is the
//! smallest key of the first non-empty bin at or above `n`'s (every key of
//! a bin is below every key of a later bin). A bin also remembers the leaf
//! of its smallest key (or of its last one) with the tree's *epoch*, which
//! every change of shape bumps: while the epoch holds, removing that key
//! starts at that leaf, and an insertion starts there when the leaf has
//! keys on both sides of the new one (so it can be no other leaf's). A bin
//! also remembers the last key of its sizes that was removed and the leaf
//! it left: while the epoch holds no separator has moved, so that key, put
//! back, belongs to that leaf even at the leaf's edge (best fit takes a
//! block, and the next step puts it back when it takes another). Both
//! hints carry a guess of the key's index in the leaf, used only when the
//! leaf's keys confirm it.
//!
//! Invariants (checked by [`SizeTree::check`]): keys strictly increase
//! along the leaf chain and within every node; each child's keys lie between
//! its separators; all leaves are at the same depth; non-root nodes hold at
//! least `MIN` keys; `len` is the number of keys; the bins agree with the
//! keys (see `check_bins`).

use crate::os;

/// Keys per node.
const CAP: usize = 15;
/// Keys of every node but the root, at least.
const MIN: usize = CAP / 2;
/// Deepest possible tree (MIN + 1 = 8 children per level: 8^16 = 2^48).
const MAX_DEPTH: usize = 16;
const NIL: u32 = u32::MAX;
/// Nodes per chunk (a power of two).
const CHUNK: usize = 256;
const ADDR_BITS: u32 = 44;
const SEQ_BITS: u32 = 52;

/// Sizes (units) below this have a bin each (blocks under 16 KiB); the
/// larger ones share the last bin, number `BINNED`.
const BINNED: usize = 1024;
const BINS: usize = BINNED + 1;
const BIN_WORDS: usize = BINS.div_ceil(64);

/// The bin of a key: its size, or `BINNED` for every larger size.
#[inline]
fn class(k: u128) -> usize {
    (key_units(k) as usize).min(BINNED)
}

/// A bin. While its sizes have keys (its bit is set), `min` is the
/// smallest of them; `leaf` held a key of the bin when the tree's epoch
/// was `epoch` (the smallest one, while the bin has keys). `gone` is the
/// last key of the bin removed, which was in leaf `gone_leaf` when the
/// epoch was `gone_epoch`. A hint whose epoch is not the tree's is stale
/// and never read. `min_at` and `gone_at` are where in the leaf those keys
/// were (or go): only a guess, checked against the leaf's keys before use.
#[derive(Clone, Copy)]
#[repr(C)]
struct Bin {
    min: u128,
    gone: u128,
    epoch: u64,
    gone_epoch: u64,
    leaf: u32,
    gone_leaf: u32,
    min_at: u32,
    gone_at: u32,
}

/// No guess of a key's place in its leaf.
const NO_SLOT: usize = usize::MAX;

/// A bin per small size and the bitmap of sizes with keys (`summary` bit
/// w: word w of `bits` is not 0).
#[repr(C)]
struct Bins {
    bin: [Bin; BINS],
    bits: [u64; BIN_WORDS],
    summary: u64,
}

impl Bins {
    #[inline]
    fn has(&self, s: usize) -> bool {
        self.bits[s / 64] & 1 << (s % 64) != 0
    }

    #[inline]
    fn set(&mut self, s: usize) {
        self.bits[s / 64] |= 1 << (s % 64);
        self.summary |= 1 << (s / 64);
    }

    #[inline]
    fn unset(&mut self, s: usize) {
        let w = s / 64;
        self.bits[w] &= !(1 << (s % 64));
        if self.bits[w] == 0 {
            self.summary &= !(1 << w);
        }
    }

    /// The first bin with keys at or above bin `s`.
    #[inline]
    fn first_from(&self, s: usize) -> Option<usize> {
        let w = s / 64;
        let here = self.bits[w] & (!0u64 << (s % 64));
        if here != 0 {
            return Some(w * 64 + here.trailing_zeros() as usize);
        }
        let above = self.summary & (!1u64 << w);
        if above == 0 {
            return None;
        }
        let w = above.trailing_zeros() as usize;
        Some(w * 64 + self.bits[w].trailing_zeros() as usize)
    }
}

/// The key of a free block of `units` units at `addr` in the region with
/// creation number `seq`.
#[inline]
pub fn key(units: u32, seq: u64, addr: usize) -> u128 {
    debug_assert!(seq < 1 << SEQ_BITS && addr < 1 << (ADDR_BITS + 4));
    (units as u128) << 96
        | ((seq as u128) & ((1 << SEQ_BITS) - 1)) << ADDR_BITS
        | (addr >> 4) as u128
}

/// The block address of a key.
#[inline]
pub fn key_addr(k: u128) -> usize {
    ((k & ((1 << ADDR_BITS) - 1)) as usize) << 4
}

/// The size (units) of a key.
#[inline]
pub fn key_units(k: u128) -> u32 {
    (k >> 96) as u32
}

#[repr(C, align(64))]
struct Node {
    keys: [u128; CAP],
    /// Inner node: children (`len + 1` of them). Leaf: `kids[0]` is the
    /// next leaf (NIL for the last).
    kids: [u32; CAP + 1],
    len: u32,
}

/// The size index (see the module docs).
pub struct SizeTree {
    root: u32,
    /// Levels (0: empty; 1: the root is a leaf).
    depth: usize,
    len: usize,
    /// The directory: `dir_cap` chunk addresses, of which `chunks` mapped.
    dir: *mut *mut Node,
    dir_cap: usize,
    chunks: usize,
    /// Nodes handed out from the chunks so far (`cap` = chunks * CHUNK).
    used: usize,
    /// Freed nodes, linked through `kids[0]`.
    free: u32,
    /// The finger: a leaf (NIL for none) and the keys `[lo, hi)` that
    /// belong to it (see the module docs).
    finger: u32,
    finger_lo: u128,
    finger_hi: u128,
    /// Operations that started at the finger (tests look at it).
    #[cfg(test)]
    finger_hits: usize,
    /// Bumped whenever the tree's shape changes (never 0).
    epoch: u64,
    /// The bins (mapped by the first `reserve_keys`; null before).
    bins: *mut Bins,
    /// Operations that started at a bin's leaf (tests look at it).
    #[cfg(test)]
    hint_hits: usize,
    /// Insertions that started at the leaf the key was removed from.
    #[cfg(test)]
    gone_hits: usize,
    /// Leaf updates that took their index from a bin's guess.
    #[cfg(test)]
    slot_hits: usize,
}

/// A node and the child taken from it, root first.
type Path = [(u32, usize); MAX_DEPTH];

impl Default for SizeTree {
    fn default() -> Self {
        Self::new()
    }
}

impl SizeTree {
    /// An empty tree (maps nothing until the first insert).
    pub const fn new() -> SizeTree {
        SizeTree {
            root: NIL,
            depth: 0,
            len: 0,
            dir: core::ptr::null_mut(),
            dir_cap: 0,
            chunks: 0,
            used: 0,
            free: NIL,
            finger: NIL,
            finger_lo: 0,
            finger_hi: 0,
            #[cfg(test)]
            finger_hits: 0,
            epoch: 1,
            bins: core::ptr::null_mut(),
            #[cfg(test)]
            hint_hits: 0,
            #[cfg(test)]
            gone_hits: 0,
            #[cfg(test)]
            slot_hits: 0,
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    // ------------------------------------------------------------------
    // Nodes.

    /// Nodes the mapped chunks hold.
    fn cap(&self) -> usize {
        self.chunks * CHUNK
    }

    #[inline]
    fn node_ptr(&self, n: u32) -> *mut Node {
        debug_assert!((n as usize) < self.used);
        let n = n as usize;
        // SAFETY: `n < used <= cap`, so chunk `n / CHUNK` is mapped and its
        // address is in the directory.
        unsafe { (*self.dir.add(n / CHUNK)).add(n % CHUNK) }
    }

    #[inline]
    fn node(&self, n: u32) -> &Node {
        // SAFETY: a node handed out lies in a mapped chunk; the tree is
        // borrowed for the reference's life.
        unsafe { &*self.node_ptr(n) }
    }

    #[inline]
    fn node_mut(&mut self, n: u32) -> &mut Node {
        // SAFETY: as in `node`, with the tree borrowed mutably.
        unsafe { &mut *self.node_ptr(n) }
    }

    /// A fresh empty node; `None` if a chunk could not be mapped.
    fn alloc(&mut self) -> Option<u32> {
        // A new node is a split or a new root: leaf ranges change.
        self.reshape();
        let n = if self.free != NIL {
            let n = self.free;
            self.free = self.node(n).kids[0];
            n
        } else {
            if self.used == self.cap() {
                self.grow()?;
            }
            self.used += 1;
            (self.used - 1) as u32
        };
        let node = self.node_mut(n);
        node.len = 0;
        node.kids[0] = NIL;
        Some(n)
    }

    fn release(&mut self, n: u32) {
        self.reshape();
        let free = self.free;
        self.node_mut(n).kids[0] = free;
        self.free = n;
    }

    /// Maps one more chunk (and doubles the directory when it is full).
    fn grow(&mut self) -> Option<()> {
        let ptr = core::mem::size_of::<*mut Node>();
        if self.chunks == self.dir_cap {
            let cap = if self.dir_cap == 0 {
                512
            } else {
                2 * self.dir_cap
            };
            let dir = if self.dir_cap == 0 {
                crate::os::map_meta(cap * ptr)?
            } else {
                // SAFETY: the directory was mapped with `dir_cap * ptr` bytes.
                unsafe { os::remap_anon(self.dir as usize, self.dir_cap * ptr, cap * ptr)? }
            };
            self.dir = dir as *mut *mut Node;
            self.dir_cap = cap;
        }
        let chunk = crate::os::map_meta(CHUNK * core::mem::size_of::<Node>())?;
        // SAFETY: `chunks < dir_cap`: the slot is inside the directory.
        unsafe { *self.dir.add(self.chunks) = chunk as *mut Node };
        self.chunks += 1;
        Some(())
    }

    /// Makes sure `n` more nodes can be had without mapping (an insert
    /// splits at most one node per level, plus a new root).
    fn reserve(&mut self, n: usize) -> Option<()> {
        let mut spare = self.cap() - self.used;
        let mut f = self.free;
        while spare < n && f != NIL {
            spare += 1;
            f = self.node(f).kids[0];
        }
        while spare < n {
            self.grow()?;
            spare += CHUNK;
        }
        Some(())
    }

    /// Makes sure the tree can hold `keys` keys without mapping: non-root
    /// nodes are at least half full, so `keys / 6` nodes plus a path's worth
    /// for splits in flight always suffice. The heap calls this with its
    /// number of blocks before any operation that adds blocks: the free
    /// blocks never outnumber the blocks, so a `free` never maps.
    pub fn reserve_keys(&mut self, keys: usize) -> Option<()> {
        let need = keys / 6 + 2 * (self.depth + 2);
        while self.cap() < need {
            self.grow()?;
        }
        if self.bins.is_null() {
            self.map_bins()?;
        }
        Some(())
    }

    /// Maps the bins and fills them from the keys already there.
    #[cold]
    fn map_bins(&mut self) -> Option<()> {
        let bins = crate::os::map_meta(core::mem::size_of::<Bins>())? as *mut Bins;
        self.bins = bins;
        self.reshape();
        let mut n = if self.depth == 0 {
            NIL
        } else {
            self.descend(0, &mut [(0, 0); MAX_DEPTH]).0
        };
        while n != NIL {
            let node = self.node(n);
            let (len, next) = (node.len as usize, node.kids[0]);
            for i in 0..len {
                let k = self.node(n).keys[i];
                self.note_insert(k, n, i);
            }
            n = next;
        }
        Some(())
    }

    /// The bins, once mapped.
    #[inline]
    fn bins(&self) -> Option<&Bins> {
        // SAFETY: a non-null `bins` is this tree's own mapping of a `Bins`
        // (zeroed memory is a valid one).
        unsafe { self.bins.as_ref() }
    }

    #[inline]
    fn bins_mut(&mut self) -> Option<&mut Bins> {
        // SAFETY: as in `bins`; `&mut self` makes this the only reference.
        unsafe { self.bins.as_mut() }
    }

    /// The tree's shape changes: the finger and every bin's leaf go stale.
    #[inline]
    fn reshape(&mut self) {
        self.finger = NIL;
        self.epoch += 1;
    }

    /// `k` was inserted into leaf `n` at index `at` (NIL: a leaf of a
    /// split, not known).
    #[inline]
    fn note_insert(&mut self, k: u128, n: u32, at: usize) {
        let s = class(k);
        let epoch = if n == NIL { 0 } else { self.epoch };
        let Some(b) = self.bins_mut() else { return };
        if !b.has(s) || k < b.bin[s].min {
            let bin = &mut b.bin[s];
            (bin.min, bin.epoch, bin.leaf, bin.min_at) = (k, epoch, n, at as u32);
            b.set(s);
        }
    }

    /// `k` left leaf `n`, where its successor now is at index `at` (or, if
    /// `at` is past the leaf's end, first in the next leaf).
    #[inline]
    fn note_remove(&mut self, k: u128, n: u32, at: usize) {
        let s = class(k);
        if self.bins().is_none_or(|b| !b.has(s) || b.bin[s].min != k) {
            return;
        }
        let node = self.node(n);
        let succ = if at < node.len as usize {
            Some((node.keys[at], n, at))
        } else if node.kids[0] != NIL {
            let next = node.kids[0];
            Some((self.node(next).keys[0], next, 0))
        } else {
            None
        };
        let epoch = self.epoch;
        let Some(b) = self.bins_mut() else { return };
        match succ {
            Some((m, leaf, i)) if class(m) == s => {
                let bin = &mut b.bin[s];
                (bin.min, bin.epoch, bin.leaf, bin.min_at) = (m, epoch, leaf, i as u32);
            }
            _ => {
                // The bin is empty; its leaf stays a hint for insertions.
                b.unset(s);
                b.bin[s].leaf = n;
                b.bin[s].epoch = epoch;
            }
        }
    }

    /// `k` was removed from index `at` of leaf `n` (before any
    /// rebalancing).
    #[inline]
    fn note_gone(&mut self, k: u128, n: u32, at: usize) {
        let epoch = self.epoch;
        if let Some(b) = self.bins_mut() {
            let bin = &mut b.bin[class(k)];
            (bin.gone, bin.gone_leaf, bin.gone_epoch, bin.gone_at) = (k, n, epoch, at as u32);
        }
    }

    /// A leaf where `k` belongs, from its bin: the leaf `k` itself was
    /// last removed from, or one that held a key of the bin and still has
    /// keys on both sides of `k`. (While the epoch holds no separator has
    /// moved, so a key is in the range of the leaf it was in.)
    /// With it, a guess of `k`'s index there (or `NO_SLOT`).
    #[inline]
    fn hinted(&mut self, k: u128) -> Option<(u32, usize)> {
        let s = class(k);
        let h = *self.bins()?.bin.get(s)?;
        if h.gone == k && h.gone_epoch == self.epoch {
            #[cfg(test)]
            {
                self.gone_hits += 1;
            }
            return Some((h.gone_leaf, h.gone_at as usize));
        }
        if h.epoch != self.epoch {
            return None;
        }
        let node = self.node(h.leaf);
        let len = node.len as usize;
        let inside = len >= 2 && node.keys[0] < k && k < node.keys[len - 1];
        #[cfg(test)]
        {
            self.hint_hits += inside as usize;
        }
        inside.then_some((h.leaf, NO_SLOT))
    }

    /// The leaf of `k` if `k` is the smallest key of its bin and the bin
    /// knows its leaf, with a guess of its index there.
    #[inline]
    fn leaf_of_min(&mut self, k: u128) -> Option<(u32, usize)> {
        let s = class(k);
        let b = self.bins()?;
        let h = *b.bin.get(s)?;
        let hit = b.has(s) && h.min == k && h.epoch == self.epoch;
        #[cfg(test)]
        {
            self.hint_hits += hit as usize;
        }
        hit.then_some((h.leaf, h.min_at as usize))
    }

    /// Best fit: the smallest key of at least `units` units (the smallest
    /// size that fits, then the earliest region and address). From the
    /// bins for small sizes, else from the tree.
    #[inline]
    pub fn best(&mut self, units: u32) -> Option<u128> {
        if let Some(b) = self.bins() {
            let u = units as usize;
            if u < BINNED {
                // Every key of a later bin is larger than every key of an
                // earlier one.
                return b.first_from(u).map(|s| b.bin[s].min);
            }
            if !b.has(BINNED) {
                return None;
            }
            let m = b.bin[BINNED].min;
            if key_units(m) >= units {
                return Some(m);
            }
        }
        self.lower_bound(key(units, 0, 0))
    }

    // ------------------------------------------------------------------
    // Searching.

    /// Keys of node `n` that are at most `k` (the child to follow).
    #[inline]
    fn child_index(node: &Node, k: u128) -> usize {
        let keys = &node.keys[..node.len as usize];
        keys.partition_point(|&s| s <= k)
    }

    /// The leaf where `k` belongs, with the path to it.
    #[inline]
    fn find_leaf(&mut self, k: u128, path: &mut Path) -> u32 {
        let (n, lo, hi) = self.descend(k, path);
        (self.finger, self.finger_lo, self.finger_hi) = (n, lo, hi);
        n
    }

    /// The leaf where `k` belongs and the keys `[lo, hi)` that belong to
    /// it, with the path to it.
    #[inline]
    fn descend(&self, k: u128, path: &mut Path) -> (u32, u128, u128) {
        const NONE: (u128, u128) = (0, u128::MAX);
        // The separators beside the deepest turn that has them (read at the
        // end: only where they are is kept on the way down).
        let (mut lo, mut hi) = (&NONE.0, &NONE.1);
        let mut n = self.root;
        for slot in path.iter_mut().take(self.depth - 1) {
            let node = self.node(n);
            let i = Self::child_index(node, k);
            if i > 0 {
                lo = &node.keys[i - 1];
            }
            if i < node.len as usize {
                hi = &node.keys[i];
            }
            *slot = (n, i);
            n = node.kids[i];
        }
        (n, *lo, *hi)
    }

    /// The finger's leaf if `k` belongs to it.
    #[inline]
    fn fingered(&mut self, k: u128) -> Option<u32> {
        let hit = self.finger != NIL && self.finger_lo <= k && k < self.finger_hi;
        #[cfg(test)]
        {
            self.finger_hits += hit as usize;
        }
        hit.then_some(self.finger)
    }

    /// The smallest key at or above `k`.
    #[inline]
    pub fn lower_bound(&mut self, k: u128) -> Option<u128> {
        if self.depth == 0 {
            return None;
        }
        let leaf = match self.fingered(k) {
            Some(n) => n,
            None => self.find_leaf(k, &mut [(0, 0); MAX_DEPTH]),
        };
        let leaf = self.node(leaf);
        let keys = &leaf.keys[..leaf.len as usize];
        let i = keys.partition_point(|&x| x < k);
        if i < keys.len() {
            return Some(keys[i]);
        }
        match leaf.kids[0] {
            NIL => None,
            next => Some(self.node(next).keys[0]),
        }
    }

    // ------------------------------------------------------------------
    // Inserting.

    /// Adds `k` (not present). `None` if a node could not be mapped (then
    /// nothing changed).
    pub fn insert(&mut self, k: u128) -> Option<()> {
        self.reserve(self.depth + 1)?;
        if self.depth == 0 {
            let n = self.alloc()?;
            let node = self.node_mut(n);
            node.keys[0] = k;
            node.len = 1;
            self.root = n;
            self.depth = 1;
            self.len = 1;
            self.note_insert(k, n, 0);
            return Some(());
        }
        let near = match self.fingered(k) {
            Some(n) => Some((n, NO_SLOT)),
            None => self.hinted(k),
        };
        if let Some((n, guess)) = near {
            if (self.node(n).len as usize) < CAP {
                self.len += 1;
                let Ok(at) = self.leaf_insert(n, k, guess) else {
                    unreachable!("a leaf with room split")
                };
                self.note_insert(k, n, at);
                return Some(());
            }
        }
        let mut path = [(0, 0); MAX_DEPTH];
        let leaf = self.find_leaf(k, &mut path);
        self.len += 1;
        let (mut sep, mut right) = match self.leaf_insert(leaf, k, NO_SLOT) {
            Ok(at) => {
                self.note_insert(k, leaf, at);
                return Some(());
            }
            Err(split) => split,
        };
        self.note_insert(k, NIL, 0);
        for level in (0..self.depth - 1).rev() {
            let (n, i) = path[level];
            match self.inner_insert(n, i, sep, right) {
                None => return Some(()),
                Some((s, r)) => (sep, right) = (s, r),
            }
        }
        // The root split: a new root above it.
        let old = self.root;
        let n = self.alloc()?;
        let node = self.node_mut(n);
        node.keys[0] = sep;
        node.kids[0] = old;
        node.kids[1] = right;
        node.len = 1;
        self.root = n;
        self.depth += 1;
        Some(())
    }

    /// The number of keys of leaf `n` below `k` (where `k` is or goes):
    /// `guess` when the keys beside it confirm it, else a search.
    #[inline]
    fn rank(&mut self, n: u32, k: u128, guess: usize) -> usize {
        let node = self.node(n);
        let keys = &node.keys[..node.len as usize];
        let right = guess <= keys.len()
            && (guess == 0 || keys[guess - 1] < k)
            && (guess == keys.len() || k <= keys[guess]);
        let i = if right {
            guess
        } else {
            keys.partition_point(|&x| x < k)
        };
        #[cfg(test)]
        {
            self.slot_hits += right as usize;
        }
        i
    }

    /// Inserts `k` into leaf `n` (at index `guess` if that is its place:
    /// a guess is checked) and returns its index; on overflow splits the
    /// leaf and returns the separator and the new right leaf.
    fn leaf_insert(&mut self, n: u32, k: u128, guess: usize) -> Result<usize, (u128, u32)> {
        let i = self.rank(n, k, guess);
        let node = self.node_mut(n);
        let len = node.len as usize;
        debug_assert!(i == len || node.keys[i] != k, "key already indexed");
        if len < CAP {
            node.keys.copy_within(i..len, i + 1);
            node.keys[i] = k;
            node.len += 1;
            return Ok(i);
        }
        let mut all = [0u128; CAP + 1];
        all[..i].copy_from_slice(&node.keys[..i]);
        all[i] = k;
        all[i + 1..].copy_from_slice(&node.keys[i..]);
        let left = CAP.div_ceil(2);
        let next = node.kids[0];
        node.keys[..left].copy_from_slice(&all[..left]);
        node.len = left as u32;
        let r = self.alloc().expect("node reserved before the insert");
        self.node_mut(n).kids[0] = r;
        let right = self.node_mut(r);
        right.keys[..CAP + 1 - left].copy_from_slice(&all[left..]);
        right.len = (CAP + 1 - left) as u32;
        right.kids[0] = next;
        Err((all[left], r))
    }

    /// Inserts separator `sep` and child `r` after child `i` of inner node
    /// `n`; on overflow splits it and returns the key that goes up and the
    /// new right node.
    fn inner_insert(&mut self, n: u32, i: usize, sep: u128, r: u32) -> Option<(u128, u32)> {
        let node = self.node_mut(n);
        let len = node.len as usize;
        if len < CAP {
            node.keys.copy_within(i..len, i + 1);
            node.keys[i] = sep;
            node.kids.copy_within(i + 1..len + 1, i + 2);
            node.kids[i + 1] = r;
            node.len += 1;
            return None;
        }
        let mut keys = [0u128; CAP + 1];
        let mut kids = [0u32; CAP + 2];
        keys[..i].copy_from_slice(&node.keys[..i]);
        keys[i] = sep;
        keys[i + 1..].copy_from_slice(&node.keys[i..]);
        kids[..i + 1].copy_from_slice(&node.kids[..i + 1]);
        kids[i + 1] = r;
        kids[i + 2..].copy_from_slice(&node.kids[i + 1..]);
        let left = CAP.div_ceil(2);
        node.keys[..left].copy_from_slice(&keys[..left]);
        node.kids[..left + 1].copy_from_slice(&kids[..left + 1]);
        node.len = left as u32;
        let up = keys[left];
        let rn = self.alloc().expect("node reserved before the insert");
        let right = self.node_mut(rn);
        let rlen = CAP - left;
        right.keys[..rlen].copy_from_slice(&keys[left + 1..]);
        right.kids[..rlen + 1].copy_from_slice(&kids[left + 1..]);
        right.len = rlen as u32;
        Some((up, rn))
    }

    // ------------------------------------------------------------------
    // Removing.

    /// Removes `k`, which must be present.
    pub fn remove(&mut self, k: u128) {
        let near = match self.fingered(k) {
            Some(n) => Some((n, NO_SLOT)),
            None => self.leaf_of_min(k),
        };
        if let Some((n, guess)) = near {
            // Stays at least half full (a root leaf: not empty), so no
            // rebalancing and no path is needed.
            let floor = if self.depth == 1 { 1 } else { MIN };
            if self.node(n).len as usize > floor {
                let at = self.leaf_remove(n, k, guess);
                self.note_remove(k, n, at);
                self.note_gone(k, n, at);
                return;
            }
        }
        let mut path = [(0, 0); MAX_DEPTH];
        let leaf = self.find_leaf(k, &mut path);
        let at = self.leaf_remove(leaf, k, NO_SLOT);
        // Before the rebalance, which bumps the epoch if it moves keys.
        self.note_remove(k, leaf, at);
        self.note_gone(k, leaf, at);
        self.rebalance(leaf, &path);
    }

    /// Takes `k`, which must be there, out of leaf `n`; returns the index
    /// its successor in the leaf now has.
    fn leaf_remove(&mut self, n: u32, k: u128, guess: usize) -> usize {
        let i = self.rank(n, k, guess);
        let node = self.node_mut(n);
        let len = node.len as usize;
        assert!(i < len && node.keys[i] == k, "size index lost a key");
        node.keys.copy_within(i + 1..len, i);
        node.len -= 1;
        self.len -= 1;
        i
    }

    /// Restores the minimum occupancy from node `n` (at the bottom of
    /// `path`) up.
    fn rebalance(&mut self, mut n: u32, path: &Path) {
        let mut level = self.depth - 1;
        loop {
            let len = self.node(n).len as usize;
            if level == 0 {
                self.shrink_root(n);
                return;
            }
            if len >= MIN {
                return;
            }
            // A borrow moves a separator: leaf ranges change.
            self.reshape();
            let leaf = level == self.depth - 1;
            let (p, i) = path[level - 1];
            if self.borrow(p, i, leaf) {
                return;
            }
            self.merge(p, i, leaf);
            n = p;
            level -= 1;
        }
    }

    fn shrink_root(&mut self, n: u32) {
        let node = self.node(n);
        if node.len > 0 {
            return;
        }
        if self.depth == 1 {
            self.root = NIL;
            self.depth = 0;
        } else {
            self.root = node.kids[0];
            self.depth -= 1;
        }
        self.release(n);
    }

    /// Child `i` of `p` takes a key from a sibling that can spare one;
    /// false if neither can.
    fn borrow(&mut self, p: u32, i: usize, leaf: bool) -> bool {
        let plen = self.node(p).len as usize;
        let n = self.node(p).kids[i];
        if i > 0 {
            let l = self.node(p).kids[i - 1];
            if self.node(l).len as usize > MIN {
                self.rotate_right(p, i - 1, l, n, leaf);
                return true;
            }
        }
        if i < plen {
            let r = self.node(p).kids[i + 1];
            if self.node(r).len as usize > MIN {
                self.rotate_left(p, i, n, r, leaf);
                return true;
            }
        }
        false
    }

    /// Moves the last key of `l` into `r` (children `s` and `s + 1` of `p`).
    fn rotate_right(&mut self, p: u32, s: usize, l: u32, r: u32, leaf: bool) {
        let (lk, lc) = {
            let ln = self.node_mut(l);
            ln.len -= 1;
            let j = ln.len as usize;
            (ln.keys[j], ln.kids[j + 1])
        };
        let sep = self.node(p).keys[s];
        let rn = self.node_mut(r);
        let len = rn.len as usize;
        rn.keys.copy_within(0..len, 1);
        if leaf {
            rn.keys[0] = lk;
        } else {
            rn.keys[0] = sep;
            rn.kids.copy_within(0..len + 1, 1);
            rn.kids[0] = lc;
        }
        rn.len += 1;
        self.node_mut(p).keys[s] = lk;
    }

    /// Moves the first key of `r` into `l` (children `s` and `s + 1` of `p`).
    fn rotate_left(&mut self, p: u32, s: usize, l: u32, r: u32, leaf: bool) {
        let (rk, rc, rk2) = {
            let rn = self.node_mut(r);
            let len = rn.len as usize;
            let (k, c) = (rn.keys[0], rn.kids[0]);
            rn.keys.copy_within(1..len, 0);
            if !leaf {
                rn.kids.copy_within(1..len + 1, 0);
            }
            rn.len -= 1;
            (k, c, rn.keys[0])
        };
        let sep = self.node(p).keys[s];
        let ln = self.node_mut(l);
        let len = ln.len as usize;
        if leaf {
            ln.keys[len] = rk;
        } else {
            ln.keys[len] = sep;
            ln.kids[len + 1] = rc;
        }
        ln.len += 1;
        self.node_mut(p).keys[s] = if leaf { rk2 } else { rk };
    }

    /// Merges child `i` of `p` with a sibling and removes the separator.
    fn merge(&mut self, p: u32, i: usize, leaf: bool) {
        let s = if i > 0 { i - 1 } else { i };
        let (l, r, sep) = {
            let pn = self.node(p);
            (pn.kids[s], pn.kids[s + 1], pn.keys[s])
        };
        let (rkeys, rkids, rlen) = {
            let rn = self.node(r);
            (rn.keys, rn.kids, rn.len as usize)
        };
        let ln = self.node_mut(l);
        let len = ln.len as usize;
        if leaf {
            ln.keys[len..len + rlen].copy_from_slice(&rkeys[..rlen]);
            ln.kids[0] = rkids[0];
            ln.len = (len + rlen) as u32;
        } else {
            ln.keys[len] = sep;
            ln.keys[len + 1..len + 1 + rlen].copy_from_slice(&rkeys[..rlen]);
            ln.kids[len + 1..len + 2 + rlen].copy_from_slice(&rkids[..rlen + 1]);
            ln.len = (len + 1 + rlen) as u32;
        }
        self.release(r);
        let pn = self.node_mut(p);
        let plen = pn.len as usize;
        pn.keys.copy_within(s + 1..plen, s);
        pn.kids.copy_within(s + 2..plen + 1, s + 1);
        pn.len -= 1;
    }

    /// Replaces key `old` (present) by `new` (absent). In place when `new`
    /// keeps `old`'s rank inside its leaf without touching a separator;
    /// otherwise a remove and an insert. `None` if the insert could not map
    /// a node (then `old` is gone and `new` absent).
    pub fn replace(&mut self, old: u128, new: u128) -> Option<()> {
        if self.depth > 0 {
            let leaf = match self.fingered(old) {
                Some(n) => n,
                None => self.find_leaf(old, &mut [(0, 0); MAX_DEPTH]),
            };
            // The leftmost leaf has no lower bound (its range starts at 0,
            // below every key: sizes are never 0), the rightmost (no next
            // leaf) no upper bound: a key at their edge may move freely.
            let leftmost = self.finger_lo == 0;
            let node = self.node_mut(leaf);
            let len = node.len as usize;
            let rightmost = node.kids[0] == NIL;
            let i = node.keys[..len].partition_point(|&x| x < old);
            debug_assert!(i < len && node.keys[i] == old);
            let above_prev = if i > 0 {
                node.keys[i - 1] < new
            } else {
                leftmost || new >= old
            };
            let below_next = if i + 1 < len {
                new < node.keys[i + 1]
            } else {
                rightmost || new <= old
            };
            if above_prev && below_next {
                node.keys[i] = new;
                self.note_remove(old, leaf, i + 1);
                self.note_insert(new, leaf, i);
                return Some(());
            }
        }
        self.remove(old);
        self.insert(new)
    }

    // ------------------------------------------------------------------
    // Whole-tree operations.

    /// Removes every key (keeps the node array).
    pub fn clear(&mut self) {
        self.reshape();
        if let Some(b) = self.bins_mut() {
            b.bits = [0; BIN_WORDS];
            b.summary = 0;
        }
        self.root = NIL;
        self.depth = 0;
        self.len = 0;
        self.used = 0;
        self.free = NIL;
    }

    /// Every key in increasing order.
    pub fn keys(&self) -> impl Iterator<Item = u128> + '_ {
        let mut n = self.root;
        for _ in 1..self.depth {
            n = self.node(n).kids[0];
        }
        let mut i = 0;
        core::iter::from_fn(move || {
            if self.depth == 0 || n == NIL {
                return None;
            }
            let node = self.node(n);
            let k = node.keys[i];
            i += 1;
            if i == node.len as usize {
                (n, i) = (node.kids[0], 0);
            }
            Some(k)
        })
    }

    /// Verifies every invariant of the module docs; `visit` vets each key.
    /// Returns the number of keys.
    pub fn check(
        &self,
        visit: &mut dyn FnMut(u128) -> Result<(), &'static str>,
    ) -> Result<usize, &'static str> {
        if self.depth == 0 {
            return if self.len == 0 {
                self.check_bins().map(|_| 0)
            } else {
                Err("size index length is wrong")
            };
        }
        let mut leaves = 0usize;
        let count = self.check_node(self.root, 1, None, None, &mut leaves)?;
        if self.finger != NIL
            && self.descend(self.finger_lo, &mut [(0, 0); MAX_DEPTH])
                != (self.finger, self.finger_lo, self.finger_hi)
        {
            return Err("size index finger is not a leaf with its range");
        }
        let mut last: Option<u128> = None;
        let mut chained = 0usize;
        for k in self.keys() {
            if last.is_some_and(|l| l >= k) {
                return Err("size index keys are not increasing");
            }
            last = Some(k);
            chained += 1;
            visit(k)?;
        }
        if count != self.len || chained != self.len {
            return Err("size index length is wrong");
        }
        self.check_bins()?;
        Ok(count)
    }

    /// The bins agree with the keys: a size's bit is set iff it has keys,
    /// its `min` is the smallest of them, a current leaf hint names the
    /// smallest key's leaf (or, for a size without keys, a leaf).
    fn check_bins(&self) -> Result<(), &'static str> {
        let Some(b) = self.bins() else { return Ok(()) };
        let mut seen = [false; BINS];
        for k in self.keys() {
            let s = class(k);
            if seen[s] {
                continue;
            }
            seen[s] = true;
            if !b.has(s) || b.bin[s].min != k {
                return Err("size index bin does not hold its smallest key");
            }
            if b.bin[s].epoch == self.epoch
                && self.descend(k, &mut [(0, 0); MAX_DEPTH]).0 != b.bin[s].leaf
            {
                return Err("size index bin names the wrong leaf");
            }
        }
        for (s, &seen) in seen.iter().enumerate() {
            if b.has(s) != seen {
                return Err("size index bin bit is wrong");
            }
            let gone = b.bin[s].gone;
            if b.bin[s].gone_epoch == self.epoch
                && (class(gone) != s
                    || self.descend(gone, &mut [(0, 0); MAX_DEPTH]).0 != b.bin[s].gone_leaf)
            {
                return Err("size index bin's removed key names the wrong leaf");
            }
            if !seen && b.bin[s].epoch == self.epoch && !self.is_leaf(b.bin[s].leaf) {
                return Err("size index bin hint is not a leaf");
            }
        }
        let summary = (0..BIN_WORDS).fold(0u64, |m, w| m | ((b.bits[w] != 0) as u64) << w);
        if b.summary != summary {
            return Err("size index bin summary is wrong");
        }
        Ok(())
    }

    /// Whether node `n` is on the leaf chain.
    fn is_leaf(&self, n: u32) -> bool {
        if self.depth == 0 {
            return false;
        }
        let mut l = self.descend(0, &mut [(0, 0); MAX_DEPTH]).0;
        while l != NIL {
            if l == n {
                return true;
            }
            l = self.node(l).kids[0];
        }
        false
    }

    fn check_node(
        &self,
        n: u32,
        level: usize,
        lo: Option<u128>,
        hi: Option<u128>,
        leaves: &mut usize,
    ) -> Result<usize, &'static str> {
        if n as usize >= self.used {
            return Err("size index names a node it never made");
        }
        let node = self.node(n);
        let len = node.len as usize;
        if len > CAP || (n != self.root && len < MIN) || len == 0 {
            return Err("size index node has a wrong number of keys");
        }
        let keys = &node.keys[..len];
        if keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err("size index node keys are not increasing");
        }
        let inside = |k: u128| lo.is_none_or(|l| k >= l) && hi.is_none_or(|h| k < h);
        if level == self.depth {
            *leaves += 1;
            if !keys.iter().all(|&k| inside(k)) {
                return Err("size index key lies outside its separators");
            }
            return Ok(len);
        }
        if !keys.iter().all(|&k| inside(k)) {
            return Err("size index separator lies outside its parent's range");
        }
        let mut count = 0;
        for i in 0..=len {
            let clo = if i == 0 { lo } else { Some(keys[i - 1]) };
            let chi = if i == len { hi } else { Some(keys[i]) };
            count += self.check_node(node.kids[i], level + 1, clo, chi, leaves)?;
        }
        Ok(count)
    }
}

impl Drop for SizeTree {
    fn drop(&mut self) {
        let bytes = CHUNK * core::mem::size_of::<Node>();
        for c in 0..self.chunks {
            // SAFETY: each chunk was mapped with `bytes` bytes and only this
            // tree, which is going away, refers to it.
            unsafe { os::unmap_anon(*self.dir.add(c) as usize, bytes) };
        }
        if self.dir_cap != 0 {
            let bytes = self.dir_cap * core::mem::size_of::<*mut Node>();
            // SAFETY: as above, for the directory.
            unsafe { os::unmap_anon(self.dir as usize, bytes) };
        }
        if !self.bins.is_null() {
            // SAFETY: as above, for the bins.
            unsafe { os::unmap_anon(self.bins as usize, core::mem::size_of::<Bins>()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    fn rng(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn against_btreeset() {
        let mut t = SizeTree::new();
        let mut m = BTreeSet::new();
        let mut s = 0x1234_5678_9abc_def1u64;
        for step in 0..60_000 {
            let r = rng(&mut s);
            if step == 20_000 {
                // The bins arrive with keys already in the tree.
                t.reserve_keys(t.len()).unwrap();
                t.check(&mut |_| Ok(())).unwrap();
            }
            // Sizes on both sides of the bins' limit.
            let big = if r.is_multiple_of(11) {
                BINNED as u32 - 150
            } else {
                0
            };
            let k = key(
                (r % 300) as u32 + 2 + big,
                (r >> 20) % 7,
                ((r >> 32) % 5000) as usize * 16,
            );
            match r % 5 {
                0 | 1 if !m.contains(&k) => {
                    t.insert(k).unwrap();
                    m.insert(k);
                }
                2 if !m.is_empty() => {
                    let v: Vec<u128> = m.iter().copied().collect();
                    let old = v[(r as usize >> 8) % v.len()];
                    t.remove(old);
                    m.remove(&old);
                }
                3 if !m.is_empty() && !m.contains(&k) => {
                    let old = *m.range(k..).next().unwrap_or(m.iter().next().unwrap());
                    t.replace(old, k).unwrap();
                    m.remove(&old);
                    m.insert(k);
                }
                _ => {}
            }
            let probe = key((r % 320) as u32, 0, 0);
            assert_eq!(t.lower_bound(probe), m.range(probe..).next().copied());
            let units = (r >> 40) as u32 % (BINNED as u32 + 200);
            let probe = key(units, 0, 0);
            assert_eq!(t.best(units), m.range(probe..).next().copied());
            if step % 97 == 0 {
                t.check(&mut |_| Ok(())).unwrap();
                assert!(t.keys().eq(m.iter().copied()));
            }
        }
        while let Some(&k) = m.iter().next() {
            t.remove(k);
            m.remove(&k);
        }
        assert_eq!(t.check(&mut |_| Ok(())), Ok(0));
    }

    /// Best fit's pattern, where the finger pays: searches, removals and
    /// insertions near the last one (a block taken and given back, its
    /// neighbours split off and merged), mixed with jumps elsewhere that
    /// split, borrow and merge leaves; the structure (finger included) is
    /// checked after every step.
    #[test]
    fn local_operations_use_the_finger_exactly() {
        let mut t = SizeTree::new();
        t.reserve_keys(0).unwrap();
        let mut m = BTreeSet::new();
        let mut s = 0x0ddc_0ffe_e15e_a5e5u64;
        let mut centre = 100u32;
        for step in 0..40_000 {
            let r = rng(&mut s);
            if r.is_multiple_of(50) {
                centre = (r >> 8) as u32 % 400 + 2;
            }
            let units = centre + (r >> 16) as u32 % 6;
            let k = key(units, (r >> 24) % 3, ((r >> 32) % 3000) as usize * 16);
            match r % 7 {
                0..=2 if !m.contains(&k) => {
                    t.insert(k).unwrap();
                    m.insert(k);
                }
                3 | 4 => {
                    // Take the best fit and give it back (or keep it).
                    let probe = key(units, 0, 0);
                    let got = t.best(units);
                    assert_eq!(got, m.range(probe..).next().copied());
                    if let Some(b) = got {
                        t.remove(b);
                        m.remove(&b);
                        // Sometimes a key lands before it meanwhile (and
                        // moves the indexes the bins guessed).
                        let before = b - 1 - u128::from((r >> 40) as u8);
                        if r % 5 == 1 && key_units(before) > 0 && m.insert(before) {
                            t.insert(before).unwrap();
                        }
                        if !r.is_multiple_of(3) {
                            t.insert(b).unwrap();
                            m.insert(b);
                        }
                    }
                }
                5 if !m.is_empty() => {
                    let old = *m.range(k..).next().unwrap_or(m.iter().next().unwrap());
                    t.remove(old);
                    m.remove(&old);
                }
                6 if !m.is_empty() && !m.contains(&k) => {
                    let old = *m.range(k..).next().unwrap_or(m.iter().next().unwrap());
                    t.replace(old, k).unwrap();
                    m.remove(&old);
                    m.insert(k);
                }
                _ => {}
            }
            assert_eq!(t.len(), m.len());
            t.check(&mut |_| Ok(())).unwrap();
            if step % 512 == 0 {
                assert!(t.keys().eq(m.iter().copied()));
            }
        }
        assert!(
            t.finger_hits + t.hint_hits > 20_000,
            "finger used {} times, bins {}",
            t.finger_hits,
            t.hint_hits
        );
        assert!(
            t.hint_hits > 1_000,
            "bins' leaves used {} times",
            t.hint_hits
        );
        assert!(
            t.slot_hits > 1_000,
            "bins' guessed indexes used {} times",
            t.slot_hits
        );
        assert!(
            t.gone_hits > 1_000,
            "removed keys' leaves used {} times (finger {}, bins {})",
            t.gone_hits,
            t.finger_hits,
            t.hint_hits
        );
    }
}
