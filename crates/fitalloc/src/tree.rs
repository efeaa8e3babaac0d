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
//! Operations are recursive; the depth is the tree height, at most about
//! 1.44 * log2(n) (62 for the largest possible heap).

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

/// An AVL tree of free blocks.
#[derive(Debug)]
pub struct Tree {
    root: Link,
    order: Order,
    len: usize,
}

impl Tree {
    /// An empty tree with the given order.
    pub const fn new(order: Order) -> Tree {
        Tree {
            root: None,
            order,
            len: 0,
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

    fn cmp(&self, reg: &Registry, a: Block, b: Block) -> Ordering {
        let pos = |x: Block, y: Block| {
            if x.region() == y.region() {
                x.addr().cmp(&y.addr())
            } else {
                let sx = reg.desc(x.region()).seq();
                sx.cmp(&reg.desc(y.region()).seq())
            }
        };
        match self.order {
            Order::Position => pos(a, b),
            Order::Size => a.units().cmp(&b.units()).then_with(|| pos(a, b)),
        }
    }

    fn less(&self, reg: &Registry, a: Block, b: Block) -> bool {
        self.cmp(reg, a, b) == Ordering::Less
    }

    /// Adds a free block (not already in the tree).
    pub fn insert(&mut self, reg: &Registry, x: Block) {
        self.root = Some(self.insert_at(reg, self.root, x));
        self.len += 1;
    }

    fn insert_at(&self, reg: &Registry, t: Link, x: Block) -> Block {
        let Some(n) = t else {
            set_word(x, 0, 0);
            set_word(x, 1, 0);
            set_meta(x, 1, x.units());
            return x;
        };
        if self.less(reg, x, n) {
            set_left(n, Some(self.insert_at(reg, left(n), x)));
        } else {
            set_right(n, Some(self.insert_at(reg, right(n), x)));
        }
        rebalance(n)
    }

    /// Removes a block that is in the tree. Its key (size and position) must
    /// be the one it was inserted with.
    pub fn remove(&mut self, reg: &Registry, x: Block) {
        let root = self.root.expect("remove from an empty free tree");
        self.root = self.remove_at(reg, root, x);
        self.len -= 1;
    }

    fn remove_at(&self, reg: &Registry, t: Block, x: Block) -> Link {
        if t == x {
            return match (left(t), right(t)) {
                (None, r) => r,
                (l, None) => l,
                (Some(l), Some(r)) => {
                    let (rest, min) = remove_min(r);
                    set_left(min, Some(l));
                    set_right(min, rest);
                    Some(rebalance(min))
                }
            };
        }
        if self.less(reg, x, t) {
            let l = left(t).expect("free tree lost a block");
            set_left(t, self.remove_at(reg, l, x));
        } else {
            let r = right(t).expect("free tree lost a block");
            set_right(t, self.remove_at(reg, r, x));
        }
        Some(rebalance(t))
    }

    /// Puts `new` where `old` is. `new` must sort exactly where `old` does
    /// (between the same neighbours); sizes may differ.
    pub fn replace(&mut self, reg: &Registry, old: Block, new: Block) {
        let root = self.root.expect("replace in an empty free tree");
        self.root = Some(self.replace_at(reg, root, old, new));
    }

    fn replace_at(&self, reg: &Registry, t: Block, old: Block, new: Block) -> Block {
        if t == old {
            let (w0, w1) = (word(old, 0), word(old, 1));
            set_word(new, 0, w0);
            set_word(new, 1, w1);
            update(new);
            return new;
        }
        if self.less(reg, old, t) {
            let l = left(t).expect("free tree lost a block");
            set_left(t, Some(self.replace_at(reg, l, old, new)));
        } else {
            let r = right(t).expect("free tree lost a block");
            set_right(t, Some(self.replace_at(reg, r, old, new)));
        }
        update(t);
        t
    }

    /// Refreshes the maxima after `x`'s size changed without changing its
    /// key (position order only).
    pub fn resized(&mut self, reg: &Registry, x: Block) {
        debug_assert!(self.order == Order::Position);
        let root = self.root.expect("resize in an empty free tree");
        self.resized_at(reg, root, x);
    }

    fn resized_at(&self, reg: &Registry, t: Block, x: Block) {
        if t != x {
            let child = if self.less(reg, x, t) {
                left(t)
            } else {
                right(t)
            };
            self.resized_at(reg, child.expect("free tree lost a block"), x);
        }
        update(t);
    }

    /// The first block in key order whose size is at least `units`.
    pub fn first_fit(&self, units: u32) -> Option<Block> {
        first_fit_in(self.root, units)
    }

    /// The first block at or after `from` in position order whose size is at
    /// least `units` (position order only).
    pub fn first_fit_from(&self, reg: &Registry, from: Position, units: u32) -> Option<Block> {
        debug_assert!(self.order == Order::Position);
        let key = |b: Block| (reg.desc(b.region()).seq(), b.addr());
        first_fit_from_in(self.root, &key, from, units)
    }

    /// The first block (in key order) among the largest (position order).
    pub fn worst_fit(&self) -> Option<Block> {
        let top = self.max_units();
        if top == 0 {
            return None;
        }
        self.first_fit(top)
    }

    /// The first block in key order with size at least `units` (size order:
    /// the smallest fitting size, ties to the first position).
    pub fn lower_bound(&self, units: u32) -> Option<Block> {
        debug_assert!(self.order == Order::Size);
        let (mut t, mut best) = (self.root, None);
        while let Some(n) = t {
            if n.units() >= units {
                best = Some(n);
                t = left(n);
            } else {
                t = right(n);
            }
        }
        best
    }

    /// Calls `f` on every block in key order.
    pub fn for_each(&self, f: &mut dyn FnMut(Block)) {
        fn walk(t: Link, f: &mut dyn FnMut(Block)) {
            if let Some(n) = t {
                walk(left(n), f);
                f(n);
                walk(right(n), f);
            }
        }
        walk(self.root, f);
    }

    /// Verifies every tree invariant; `visit` sees each block in order and
    /// may reject it. Returns the number of blocks.
    pub fn check(
        &self,
        reg: &Registry,
        visit: &mut dyn FnMut(Block) -> Result<(), &'static str>,
    ) -> Result<usize, &'static str> {
        let mut prev: Link = None;
        let mut count = 0;
        self.check_at(reg, self.root, &mut prev, &mut count, visit)?;
        if count != self.len {
            return Err("free tree length is wrong");
        }
        Ok(count)
    }

    fn check_at(
        &self,
        reg: &Registry,
        t: Link,
        prev: &mut Link,
        count: &mut usize,
        visit: &mut dyn FnMut(Block) -> Result<(), &'static str>,
    ) -> Result<(u32, u32), &'static str> {
        let Some(n) = t else { return Ok((0, 0)) };
        visit(n)?;
        let (lh, lm) = self.check_at(reg, left(n), prev, count, visit)?;
        if let Some(p) = *prev {
            if !self.less(reg, p, n) {
                return Err("free tree keys out of order");
            }
        }
        *prev = Some(n);
        *count += 1;
        let (rh, rm) = self.check_at(reg, right(n), prev, count, visit)?;
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

fn remove_min(t: Block) -> (Link, Block) {
    match left(t) {
        None => (right(t), t),
        Some(l) => {
            let (rest, min) = remove_min(l);
            set_left(t, rest);
            (Some(rebalance(t)), min)
        }
    }
}

fn first_fit_in(mut t: Link, units: u32) -> Option<Block> {
    if m(t) < units {
        return None;
    }
    while let Some(n) = t {
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

fn first_fit_from_in(
    t: Link,
    key: &dyn Fn(Block) -> Position,
    from: Position,
    units: u32,
) -> Option<Block> {
    let n = t?;
    if max(n) < units {
        return None;
    }
    if key(n) < from {
        return first_fit_from_in(right(n), key, from, units);
    }
    if let Some(b) = first_fit_from_in(left(n), key, from, units) {
        return Some(b);
    }
    if n.units() >= units {
        return Some(n);
    }
    first_fit_in(right(n), units)
}
