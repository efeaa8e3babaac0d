//! The free-block index: an intrusive AVL tree augmented with subtree maxima.
//!
//! Each free block's first 16 payload bytes are its node; nothing is ever
//! allocated for the tree. The node packs two 64-bit words:
//!
//! ```text
//!  word 0: | max units, low 20 bits (20) | left child address / 16 (44) |
//!  word 1: | height (8) | max units, high 12 bits (12) | right child / 16 (44) |
//! ```
//!
//! Invariants (checked by [`Tree::check`]): keys strictly increase in order;
//! `height = 1 + max(children's heights)` and differs by at most one between
//! the children; `max = max(own units, children's max)`.
//!
//! Operations are iterative over a root-to-node path of at most
//! `MAX_DEPTH` nodes (an AVL tree of 2^43 blocks is at most 62 deep).

use core::cmp::Ordering;

use crate::block::Block;
use crate::registry::Registry;

/// How the tree orders its blocks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Order {
    /// `(region seq, address)`: list order.
    Position,
    /// `(size, region seq, address)`.
    Size,
}

/// A position in list order: `(region seq, address)`.
pub type Position = (u64, usize);

type Link = Option<Block>;

const ADDR_BITS: u32 = 44;
const ADDR_MASK: u64 = (1 << ADDR_BITS) - 1;
const MAX_LO_BITS: u32 = 20;
const MAX_HI_MASK: u64 = 0xfff;

/// The two words of a node.
fn words(b: Block) -> *mut [u64; 2] {
    b.payload() as *mut [u64; 2]
}

fn read_words(b: Block) -> [u64; 2] {
    // SAFETY: as in `word`.
    unsafe { *words(b) }
}

fn unpack_max(w0: u64, w1: u64) -> u64 {
    (((w1 >> ADDR_BITS) & MAX_HI_MASK) << MAX_LO_BITS) | (w0 >> ADDR_BITS)
}

/// Height and max of the node whose packed link is `bits` (0: no node).
fn meta_of(bits: u64) -> (u64, u64) {
    match unpack(bits) {
        None => (0, 0),
        Some(c) => {
            let [w0, w1] = read_words(c);
            (w1 >> 56, unpack_max(w0, w1))
        }
    }
}

fn word(b: Block, i: usize) -> u64 {
    // SAFETY: a free block is at least MIN_BLOCK (32) bytes, so its payload
    // holds the 16-byte node; `Block`'s invariant makes it mapped and ours.
    unsafe { (*words(b))[i] }
}

fn set_word(b: Block, i: usize, v: u64) {
    // SAFETY: as in `word`.
    unsafe { (*words(b))[i] = v }
}

fn unpack(bits: u64) -> Link {
    let addr = ((bits & ADDR_MASK) << 4) as usize;
    // SAFETY: the tree links only free blocks of live regions of the heap
    // that owns it (invariant 5 of ARCHITECTURE.md).
    (addr != 0).then(|| unsafe { Block::from_raw(addr) })
}

fn pack(l: Link) -> u64 {
    l.map_or(0, |b| (b.addr() >> 4) as u64)
}

fn left(b: Block) -> Link {
    unpack(word(b, 0))
}

fn right(b: Block) -> Link {
    unpack(word(b, 1))
}

fn height(b: Block) -> u32 {
    (word(b, 1) >> 56) as u32
}

fn max(b: Block) -> u32 {
    let lo = word(b, 0) >> ADDR_BITS;
    let hi = (word(b, 1) >> ADDR_BITS) & MAX_HI_MASK;
    (hi << MAX_LO_BITS | lo) as u32
}

fn set_left(b: Block, l: Link) {
    set_word(b, 0, (word(b, 0) & !ADDR_MASK) | pack(l));
}

fn set_right(b: Block, r: Link) {
    set_word(b, 1, (word(b, 1) & !ADDR_MASK) | pack(r));
}

/// Writes height and max, keeping the links.
fn set_meta(b: Block, height: u32, max: u32) {
    let max = max as u64;
    let lo = (max & ((1 << MAX_LO_BITS) - 1)) << ADDR_BITS;
    let hi = (max >> MAX_LO_BITS) << ADDR_BITS | (height as u64) << 56;
    set_word(b, 0, (word(b, 0) & ADDR_MASK) | lo);
    set_word(b, 1, (word(b, 1) & ADDR_MASK) | hi);
}

fn set_max(b: Block, max: u32) {
    set_meta(b, height(b), max);
}

fn h(l: Link) -> u32 {
    l.map_or(0, height)
}

fn m(l: Link) -> u32 {
    l.map_or(0, max)
}

/// Recomputes height and max from the children.
fn update(b: Block) {
    let (l, r) = (left(b), right(b));
    set_meta(b, 1 + h(l).max(h(r)), b.units().max(m(l)).max(m(r)));
}

fn rotate_right(b: Block) -> Block {
    let l = left(b).expect("rotate_right without a left child");
    set_left(b, right(l));
    update(b);
    set_right(l, Some(b));
    update(l);
    l
}

fn rotate_left(b: Block) -> Block {
    let r = right(b).expect("rotate_left without a right child");
    set_right(b, left(r));
    update(b);
    set_left(r, Some(b));
    update(r);
    r
}

/// Restores the AVL balance at `b` (children already balanced).
fn rebalance(b: Block) -> Block {
    update(b);
    let (l, r) = (left(b), right(b));
    if h(l) > h(r) + 1 {
        let l = l.expect("left-heavy node without a left child");
        if h(left(l)) < h(right(l)) {
            set_left(b, Some(rotate_left(l)));
        }
        return rotate_right(b);
    }
    if h(r) > h(l) + 1 {
        let r = r.expect("right-heavy node without a right child");
        if h(right(r)) < h(left(r)) {
            set_right(b, Some(rotate_right(r)));
        }
        return rotate_left(b);
    }
    b
}

/// A block's sort key, read once per descent.
struct Key {
    units: u32,
    region: u32,
    seq: u64,
    addr: usize,
}

/// Deepest possible tree: AVL height <= 1.44 log2(n + 2), n < 2^43.
const MAX_DEPTH: usize = 64;

/// An AVL tree of free blocks.
///
/// Every operation is iterative over an explicit root-to-node path. The last
/// search remembers its path, so the removal, replacement or resize of the
/// block it found (the common case: malloc splits the block it just chose)
/// needs no second descent. Fix-ups walk up the path and stop as soon as a
/// subtree's height and maximum are unchanged.
#[derive(Debug)]
pub struct Tree {
    root: Link,
    order: Order,
    len: usize,
    path: [usize; MAX_DEPTH],
    path_len: usize,
    /// The block whose path is in `path` (0: none).
    path_for: usize,
}

impl Tree {
    /// An empty tree with the given order.
    pub const fn new(order: Order) -> Tree {
        Tree {
            root: None,
            order,
            len: 0,
            path: [0; MAX_DEPTH],
            path_len: 0,
            path_for: 0,
        }
    }

    /// The order of the keys.
    pub fn order(&self) -> Order {
        self.order
    }

    /// Number of blocks in the tree.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every node and switches to `order` (for a rebuild).
    pub fn clear(&mut self, order: Order) {
        *self = Tree::new(order);
    }

    /// The largest block size in the tree, in units.
    pub fn max_units(&self) -> u32 {
        m(self.root)
    }

    /// Makes the tree rooted at `root` (a packed link, see `root_bits`) the
    /// one operated on; the block count is kept (it counts every tree the
    /// engine has held).
    pub fn load(&mut self, root: u64) {
        self.root = unpack(root);
    }

    /// The packed root link, for storing a tree outside the engine.
    pub fn root_bits(&self) -> u64 {
        pack(self.root)
    }

    #[inline]
    fn cmp(&self, reg: &Registry, a: Block, b: Block) -> Ordering {
        if self.order == Order::Size && a.units() != b.units() {
            return a.units().cmp(&b.units());
        }
        if a.region() == b.region() {
            a.addr().cmp(&b.addr())
        } else {
            let sa = reg.desc(a.region()).seq();
            sa.cmp(&reg.desc(b.region()).seq())
        }
    }

    #[inline]
    fn less(&self, reg: &Registry, a: Block, b: Block) -> bool {
        self.cmp(reg, a, b) == Ordering::Less
    }

    /// The key of `x`, read once for a descent.
    #[inline]
    fn key(&self, reg: &Registry, x: Block) -> Key {
        Key {
            units: x.units(),
            region: x.region(),
            seq: reg.desc(x.region()).seq(),
            addr: x.addr(),
        }
    }

    /// Whether key `k` sorts before node `n`.
    #[inline]
    fn key_less(&self, reg: &Registry, k: &Key, n: Block) -> bool {
        if self.order == Order::Size && k.units != n.units() {
            return k.units < n.units();
        }
        if k.region == n.region() {
            k.addr < n.addr()
        } else {
            k.seq < reg.desc(n.region()).seq()
        }
    }

    // ----------------------------------------------------------------------
    // Paths.

    fn node_at(&self, i: usize) -> Block {
        // SAFETY: paths hold only blocks of this tree (see `unpack`).
        unsafe { Block::from_raw(self.path[i]) }
    }

    fn push(&mut self, b: Block) {
        assert!(
            self.path_len < MAX_DEPTH,
            "free tree deeper than an AVL tree can be"
        );
        self.path[self.path_len] = b.addr();
        self.path_len += 1;
    }

    /// Records the current path as leading to `b`.
    fn found(&mut self, b: Option<Block>) -> Option<Block> {
        self.path_for = b.map_or(0, |b| b.addr());
        b
    }

    /// Makes `path[..path_len]` the path from the root to `x`; reuses the
    /// last search's path when it led to `x`.
    fn locate(&mut self, reg: &Registry, x: Block) {
        if self.path_for == x.addr() {
            return;
        }
        self.path_len = 0;
        let k = self.key(reg, x);
        let mut t = self.root;
        loop {
            let n = t.expect("free tree lost a block");
            self.push(n);
            if n == x {
                break;
            }
            t = if self.key_less(reg, &k, n) {
                left(n)
            } else {
                right(n)
            };
        }
        self.path_for = x.addr();
    }

    /// Points the parent of path level `i` (or the root) at `new`.
    fn set_child(&mut self, i: usize, old: Block, new: Link) {
        if i == 0 {
            self.root = new;
            return;
        }
        let parent = self.node_at(i - 1);
        if left(parent) == Some(old) {
            set_left(parent, new);
        } else {
            set_right(parent, new);
        }
    }

    /// Restores heights, maxima and balance from path level `i` up to the
    /// root, stopping once a subtree at or above level `floor` is unchanged.
    fn fix_up(&mut self, mut i: usize, floor: usize) {
        loop {
            let n = self.node_at(i);
            // Fast path: read each node once; no rotation needed.
            let [w0, w1] = read_words(n);
            let (h0, m0) = (w1 >> 56, unpack_max(w0, w1));
            let (hl, ml) = meta_of(w0 & ADDR_MASK);
            let (hr, mr) = meta_of(w1 & ADDR_MASK);
            let (h, m) = (1 + hl.max(hr), (n.units() as u64).max(ml).max(mr));
            let unchanged = if hl.abs_diff(hr) <= 1 {
                if (h, m) != (h0, m0) {
                    set_meta(n, h as u32, m as u32);
                }
                (h, m) == (h0, m0)
            } else {
                let r = rebalance(n);
                self.set_child(i, n, Some(r));
                (height(r) as u64, max(r) as u64) == (h0, m0)
            };
            if i == 0 || (i <= floor && unchanged) {
                break;
            }
            i -= 1;
        }
        self.path_for = 0;
    }

    /// After the size of the node at path level `i` changed (no structural
    /// change), refreshes the maxima above it. Heights cannot change, and a
    /// parent's new maximum follows from its child's old and new maximum
    /// unless the child was the parent's maximum and shrank: only then is
    /// the sibling read.
    fn fix_max_up(&mut self, i: usize) {
        let n = self.node_at(i);
        let (mut old, mut new) = (max(n), n.units().max(m(left(n))).max(m(right(n))));
        set_max(n, new);
        let mut child = n;
        for level in (0..i).rev() {
            if old == new {
                break;
            }
            let p = self.node_at(level);
            let pm = max(p);
            let pnew = if new >= pm {
                new
            } else if old < pm {
                pm
            } else {
                let sibling = if left(p) == Some(child) {
                    right(p)
                } else {
                    left(p)
                };
                p.units().max(new).max(m(sibling))
            };
            set_max(p, pnew);
            (old, new, child) = (pm, pnew, p);
        }
        self.path_for = 0;
    }

    // ----------------------------------------------------------------------
    // Changes.

    /// Adds a free block (not already in the tree).
    pub fn insert(&mut self, reg: &Registry, x: Block) {
        set_word(x, 0, 0);
        set_word(x, 1, 0);
        set_meta(x, 1, x.units());
        self.len += 1;
        self.path_len = 0;
        let k = self.key(reg, x);
        let mut t = self.root;
        let (mut parent, mut went_left) = (None, false);
        while let Some(n) = t {
            self.push(n);
            parent = Some(n);
            went_left = self.key_less(reg, &k, n);
            t = if went_left { left(n) } else { right(n) };
        }
        let Some(p) = parent else {
            self.root = Some(x);
            self.path_for = 0;
            return;
        };
        if went_left {
            set_left(p, Some(x));
        } else {
            set_right(p, Some(x));
        }
        self.fix_up(self.path_len - 1, MAX_DEPTH);
    }

    /// Removes a block that is in the tree. Its key (size and position) must
    /// be the one it was inserted with.
    pub fn remove(&mut self, reg: &Registry, x: Block) {
        self.locate(reg, x);
        self.len -= 1;
        let k = self.path_len - 1;
        let (l, r) = (left(x), right(x));
        let (Some(l), Some(r)) = (l, r) else {
            self.set_child(k, x, l.or(r));
            if k > 0 {
                self.fix_up(k - 1, MAX_DEPTH);
            }
            self.path_for = 0;
            return;
        };
        // Two children: the successor `s` (leftmost of the right subtree)
        // takes x's place (and x's old height and max, so that the fix-up
        // compares against what x had); the fix-up starts where `s` was
        // taken out and may not stop below x's level.
        let mut s = r;
        while let Some(next) = left(s) {
            self.push(s);
            s = next;
        }
        let sp_level = self.path_len - 1;
        if sp_level != k {
            let sp = self.node_at(sp_level);
            set_left(sp, right(s));
            set_right(s, Some(r));
        }
        set_left(s, Some(l));
        set_meta(s, height(x), max(x));
        self.set_child(k, x, Some(s));
        self.path[k] = s.addr();
        self.fix_up(sp_level, k);
    }

    /// Puts `new` where `old` is. `new` must sort exactly where `old` does
    /// (between the same neighbours); sizes may differ. `new`'s header must
    /// be written and must not overlap `old`'s node.
    pub fn replace(&mut self, reg: &Registry, old: Block, new: Block) {
        self.locate(reg, old);
        let k = self.path_len - 1;
        set_word(new, 0, word(old, 0));
        set_word(new, 1, word(old, 1));
        self.set_child(k, old, Some(new));
        self.path[k] = new.addr();
        self.fix_max_up(k);
    }

    /// Refreshes the maxima after `x`'s size changed without changing its
    /// key (position order only).
    pub fn resized(&mut self, reg: &Registry, x: Block) {
        debug_assert!(self.order == Order::Position);
        self.locate(reg, x);
        self.fix_max_up(self.path_len - 1);
    }

    // ----------------------------------------------------------------------
    // Searches (each remembers the path to what it found).

    /// The first block in key order whose size is at least `units`.
    pub fn first_fit(&mut self, units: u32) -> Option<Block> {
        self.path_len = 0;
        let root = self.root;
        let b = self.first_fit_below(root, units);
        self.found(b)
    }

    /// Appends to the path the descent to the first fitting block of
    /// subtree `t`.
    fn first_fit_below(&mut self, mut t: Link, units: u32) -> Option<Block> {
        if m(t) < units {
            return None;
        }
        while let Some(n) = t {
            self.push(n);
            if m(left(n)) >= units {
                t = left(n);
            } else if n.units() >= units {
                return Some(n);
            } else {
                t = right(n);
            }
        }
        None
    }

    /// The first block at or after `from` in position order whose size is at
    /// least `units` (position order only).
    pub fn first_fit_from(&mut self, reg: &Registry, from: Position, units: u32) -> Option<Block> {
        debug_assert!(self.order == Order::Position);
        self.path_len = 0;
        self.path_for = 0;
        if m(self.root) < units {
            return None;
        }
        // Walk down towards `from`, noting the levels of nodes >= from (where
        // the walk turned left): in order, each such node and then its right
        // subtree hold every key >= from, the deepest first.
        let mut turned = [0u8; MAX_DEPTH];
        let mut nturned = 0;
        let mut t = self.root;
        while let Some(n) = t {
            self.push(n);
            if (reg.desc(n.region()).seq(), n.addr()) >= from {
                turned[nturned] = (self.path_len - 1) as u8;
                nturned += 1;
                t = left(n);
            } else {
                t = right(n);
            }
        }
        for &level in turned[..nturned].iter().rev() {
            self.path_len = level as usize + 1;
            let n = self.node_at(level as usize);
            if n.units() >= units {
                return self.found(Some(n));
            }
            if m(right(n)) >= units {
                let b = self.first_fit_below(right(n), units);
                return self.found(b);
            }
        }
        None
    }

    /// The first block in key order with size at least `units` (size order:
    /// the smallest fitting size, ties to the first position).
    pub fn lower_bound(&mut self, units: u32) -> Option<Block> {
        debug_assert!(self.order == Order::Size);
        self.path_len = 0;
        let (mut t, mut best, mut best_len) = (self.root, None, 0);
        while let Some(n) = t {
            self.push(n);
            if n.units() >= units {
                (best, best_len) = (Some(n), self.path_len);
                t = left(n);
            } else {
                t = right(n);
            }
        }
        self.path_len = best_len;
        self.found(best)
    }

    /// Verifies every tree invariant; `visit` sees each block (before its
    /// node is read) and may reject it. Returns the number of blocks.
    pub fn check(
        &self,
        reg: &Registry,
        visit: &mut dyn FnMut(Block) -> Result<(), &'static str>,
    ) -> Result<usize, &'static str> {
        let mut prev: Link = None;
        let mut count = 0;
        self.check_at(reg, self.root, 0, &mut prev, &mut count, visit)?;
        if count != self.len {
            return Err("free tree length is wrong");
        }
        Ok(count)
    }

    /// Like `check` for the tree rooted at `root` (packed), without the
    /// length check. Returns the number of blocks and the largest size.
    pub fn check_root(
        &self,
        reg: &Registry,
        root: u64,
        visit: &mut dyn FnMut(Block) -> Result<(), &'static str>,
    ) -> Result<(usize, u32), &'static str> {
        let mut prev: Link = None;
        let mut count = 0;
        let (_, max) = self.check_at(reg, unpack(root), 0, &mut prev, &mut count, visit)?;
        Ok((count, max))
    }

    fn check_at(
        &self,
        reg: &Registry,
        t: Link,
        depth: usize,
        prev: &mut Link,
        count: &mut usize,
        visit: &mut dyn FnMut(Block) -> Result<(), &'static str>,
    ) -> Result<(u32, u32), &'static str> {
        let Some(n) = t else { return Ok((0, 0)) };
        if depth >= MAX_DEPTH {
            return Err("free tree is deeper than possible (a cycle?)");
        }
        visit(n)?;
        let (lh, lm) = self.check_at(reg, left(n), depth + 1, prev, count, visit)?;
        if let Some(p) = *prev {
            if !self.less(reg, p, n) {
                return Err("free tree keys out of order");
            }
        }
        *prev = Some(n);
        *count += 1;
        let (rh, rm) = self.check_at(reg, right(n), depth + 1, prev, count, visit)?;
        if lh.abs_diff(rh) > 1 {
            return Err("free tree unbalanced");
        }
        if height(n) != 1 + lh.max(rh) {
            return Err("free tree height is wrong");
        }
        if max(n) != n.units().max(lm).max(rm) {
            return Err("free tree subtree maximum is wrong");
        }
        Ok((height(n), max(n)))
    }
}
