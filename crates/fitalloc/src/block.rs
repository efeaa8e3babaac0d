//! The block header and every pointer step between blocks.
//!
//! ```text
//!  block start (16-aligned)
//!  +------------+------------+------------+--------------+
//!  | prev_units | region id  | size_units | flags | check |   Header, 16 bytes
//!  +------------+------------+------------+--------------+
//!  | payload (used) / free-tree node (free) ...            |   <- payload()
//!  |                                 [name, 32 bytes]      |   only if NAMED
//!  +-------------------------------------------------------+
//! ```
//!
//! Sizes are kept in 16-byte *units*. `prev_units == 0` marks the first block
//! of a region. The `check` field is 24 bits of a keyed hash over the block's
//! address, region, size and flags; `write` computes it, `is_sealed` tests
//! it. `prev_units` is left out of the hash so that a neighbour's split or
//! merge updates it with one store; it is never trusted on its own: every
//! step backwards checks that the previous block ends where this one starts.

/// Alignment of every payload and every block.
pub const ALIGN: usize = 16;
/// Bytes of header in front of every payload.
pub const HEADER: usize = 16;
/// Smallest block: a header plus room for one free-tree node.
pub const MIN_BLOCK: usize = 32;
/// Bytes at the end of a named block that hold its name (31 bytes + NUL).
pub const NAME_AREA: usize = 32;
/// The largest block size, in units (32 GiB: fits the 32-bit size fields
/// and the signed comparisons of the max tree).
pub const MAX_UNITS: usize = i32::MAX as usize;

/// The block is free.
pub const FREE: u32 = 1;
/// The block stores a name in its last `NAME_AREA` bytes.
pub const NAMED: u32 = 2;
/// A free block whose payload (but its name) was filled with [`POISON`]
/// when it was freed in check mode; verified before it is used again.
pub const POISONED: u32 = 4;
/// A used block's last `slack()` usable bytes are [`CANARY`] bytes past the
/// requested size (check mode), verified at free and realloc.
const SLACK_SHIFT: u32 = 3;
/// Most canary bytes a header can announce.
pub const MAX_SLACK: usize = 31;
const FLAG_MASK: u32 = 0xff;
/// The byte freed payloads are filled with in check mode.
pub const POISON: u8 = 0xDD;
/// The byte after a request's end in check mode.
pub const CANARY: u8 = 0xCB;

/// The in-memory block header.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    prev_units: u32,
    region: u32,
    size_units: u32,
    tag: u32,
}

/// A pointer to a block header.
///
/// A `Block` is created (unsafely, with [`Block::from_raw`]) only for a
/// 16-aligned address inside a mapped region owned by the caller's heap, with
/// at least `HEADER` bytes before the region's end. Its methods rely on that:
/// a `Block` must not be used after its region is unmapped or while another
/// thread may modify the same header (the heap lock prevents that).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Block(*mut Header);

impl Block {
    /// Wraps a header address.
    ///
    /// # Safety
    /// `addr` must be 16-aligned and lie inside a mapped region of the
    /// caller's heap with at least `HEADER` bytes before the region's end, and
    /// the caller must hold that heap's lock for as long as the `Block` is used.
    #[inline]
    pub unsafe fn from_raw(addr: usize) -> Block {
        debug_assert!(addr.is_multiple_of(ALIGN) && addr != 0);
        Block(addr as *mut Header)
    }

    /// The block's address (its header).
    #[inline]
    pub fn addr(self) -> usize {
        self.0 as usize
    }

    #[inline]
    fn header(self) -> Header {
        // SAFETY: by the type invariant the header is mapped, aligned and not
        // modified concurrently.
        unsafe { self.0.read() }
    }

    /// The region and size fields as one word (`region | size_units << 32`,
    /// the hash's first input), read with one load: 5 instructions fewer
    /// per malloc+free than two loads and a shift under callgrind.
    #[inline]
    fn fields(self) -> u64 {
        // SAFETY: as in `header`; bytes 4..12 of the header are `region`
        // then `size_units` (`repr(C)`), little-endian.
        unsafe { (core::ptr::addr_of!((*self.0).region) as *const u64).read_unaligned() }
    }

    #[inline]
    fn store(self, h: Header) {
        // SAFETY: as in `header`; the heap lock gives this thread the only
        // access to the header.
        unsafe { self.0.write(h) }
    }

    /// Whole size in bytes, header included.
    #[inline]
    pub fn size(self) -> usize {
        (self.header().size_units as usize) * ALIGN
    }

    /// Whole size in 16-byte units.
    #[inline]
    pub fn units(self) -> u32 {
        self.header().size_units
    }

    /// Size of the previous block in bytes (0 for the first block of a region).
    #[inline]
    pub fn prev_size(self) -> usize {
        (self.header().prev_units as usize) * ALIGN
    }

    /// The id of the region that holds this block.
    #[inline]
    pub fn region(self) -> u32 {
        self.header().region
    }

    /// The flag bits (`FREE`, `NAMED`).
    #[inline]
    pub fn flags(self) -> u32 {
        self.header().tag & FLAG_MASK
    }

    /// Whether the block is free.
    #[inline]
    pub fn is_free(self) -> bool {
        self.flags() & FREE != 0
    }

    /// Whether the block carries a name.
    #[inline]
    pub fn is_named(self) -> bool {
        self.flags() & NAMED != 0
    }

    /// Canary bytes at the end of the usable area (0 outside check mode).
    #[inline]
    pub fn slack(self) -> usize {
        (self.flags() >> SLACK_SHIFT) as usize
    }

    /// The flags with `slack` canary bytes announced.
    #[inline]
    pub fn with_slack(flags: u32, slack: usize) -> u32 {
        debug_assert!(slack <= MAX_SLACK);
        (flags & ((1 << SLACK_SHIFT) - 1)) | (slack as u32) << SLACK_SHIFT
    }

    /// The bytes of a free block that check mode poisons: the payload
    /// without the name area.
    #[inline]
    pub fn poison_range(self) -> (usize, usize) {
        let name = if self.is_named() { NAME_AREA } else { 0 };
        (self.payload(), self.end() - name)
    }

    /// First byte after the block.
    #[inline]
    pub fn end(self) -> usize {
        self.addr() + self.size()
    }

    /// The payload address handed to the user.
    #[inline]
    pub fn payload(self) -> usize {
        self.addr() + HEADER
    }

    /// Bytes the user may write: the payload minus the name area.
    #[inline]
    pub fn usable(self) -> usize {
        let name = if self.is_named() { NAME_AREA } else { 0 };
        self.size() - HEADER - name
    }

    /// Address of the name area (meaningful only when `is_named`).
    #[inline]
    pub fn name_addr(self) -> usize {
        self.end() - NAME_AREA
    }

    /// The name area of a named block (the name, NUL padded).
    pub fn read_name(self) -> [u8; NAME_AREA] {
        let mut area = [0u8; NAME_AREA];
        // SAFETY: a named block ends with NAME_AREA bytes of name, inside
        // its region.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.name_addr() as *const u8,
                area.as_mut_ptr(),
                NAME_AREA,
            )
        };
        area
    }

    /// The block that follows in memory. The caller must know it exists
    /// (`end() < region end`).
    #[inline]
    pub fn next(self) -> Block {
        Block(self.end() as *mut Header)
    }

    /// The block that precedes in memory, if this is not the region's first.
    #[inline]
    pub fn prev(self) -> Option<Block> {
        match self.prev_size() {
            0 => None,
            p => Some(Block((self.addr() - p) as *mut Header)),
        }
    }

    /// Writes every header field and the check. `size` and `prev_size` are
    /// in bytes and must be multiples of 16 below `MAX_UNITS * 16`.
    #[inline]
    pub fn write(self, secret: Key, region: u32, prev_size: usize, size: usize, flags: u32) {
        debug_assert!(size.is_multiple_of(ALIGN) && size / ALIGN <= MAX_UNITS);
        debug_assert!(prev_size.is_multiple_of(ALIGN) && prev_size / ALIGN <= MAX_UNITS);
        let mut h = Header {
            prev_units: (prev_size / ALIGN) as u32,
            region,
            size_units: (size / ALIGN) as u32,
            tag: flags & FLAG_MASK,
        };
        let fields = (h.size_units as u64) << 32 | h.region as u64;
        h.tag |= check_fields(self.addr(), secret, fields, h.tag) << 8;
        self.store(h);
    }

    /// Changes the size, keeping the other fields.
    #[inline]
    pub fn set_size(self, secret: Key, size: usize) {
        self.write(secret, self.region(), self.prev_size(), size, self.flags());
    }

    /// Changes the recorded size of the previous block. `prev_units` is not
    /// covered by the check (so this is one store): it is verified against
    /// the previous block itself wherever it is followed.
    #[inline]
    pub fn set_prev_size(self, prev_size: usize) {
        debug_assert!(prev_size.is_multiple_of(ALIGN) && prev_size / ALIGN <= MAX_UNITS);
        // SAFETY: by the type invariant the header is mapped, aligned and
        // ours alone; `prev_units` is its first field.
        unsafe { (*self.0).prev_units = (prev_size / ALIGN) as u32 };
    }

    /// Changes the flags, keeping the other fields.
    #[inline]
    pub fn set_flags(self, secret: Key, flags: u32) {
        self.write(secret, self.region(), self.prev_size(), self.size(), flags);
    }

    /// Whether the check field matches the other fields.
    #[inline]
    pub fn is_sealed(self, secret: Key) -> bool {
        let tag = self.header().tag;
        tag >> 8 == check_fields(self.addr(), secret, self.fields(), tag)
    }

    /// The size in units of a block that the free index records as free.
    /// The header must pass its check and say FREE; otherwise a program
    /// wrote over it, which is reported (`corrupted free block`) and ends
    /// the process: nothing read from such a header is ever used.
    #[inline]
    pub fn indexed_units(self, secret: Key) -> u32 {
        let h = self.header();
        if h.tag & FREE == 0
            || h.tag >> 8 != check_fields(self.addr(), secret, self.fields(), h.tag)
        {
            corrupted_free_block(self.addr());
        }
        h.size_units
    }
}

/// The first byte of `[from, to)` that is not `byte`, if any.
pub fn first_not(from: usize, to: usize, byte: u8) -> Option<usize> {
    // SAFETY: callers pass ranges inside blocks of their heap.
    let bytes = unsafe { core::slice::from_raw_parts(from as *const u8, to - from) };
    bytes.iter().position(|&b| b != byte).map(|i| from + i)
}

/// Reports a write into a freed block (check mode) and aborts.
#[cold]
#[inline(never)]
pub fn write_after_free(at: usize, b: Block) -> ! {
    crate::eprint_raw!(
        "fitalloc: write after free at {at:#x} (block {:#x}-{:#x}, {} bytes)\n",
        b.addr(),
        b.end(),
        b.size()
    );
    crate::os::abort()
}

/// Reports a write past the requested size (check mode) and aborts.
#[cold]
#[inline(never)]
pub fn buffer_overflow(at: usize) -> ! {
    crate::eprint_raw!("fitalloc: buffer overflow at {at:#x}\n");
    crate::os::abort()
}

/// Reports a header that fails its check where a walk over the heap meets
/// it (`print_memory`, the leak report) and aborts.
#[cold]
#[inline(never)]
pub fn corrupted_header(addr: usize) -> ! {
    crate::eprint_raw!("fitalloc: corrupted block header at {addr:#x}\n");
    crate::os::abort()
}

/// Reports a free block whose header was overwritten and aborts.
#[cold]
#[inline(never)]
pub fn corrupted_free_block(addr: usize) -> ! {
    crate::eprint_raw!("fitalloc: corrupted free block at {addr:#x}\n");
    crate::os::abort()
}

/// The key of the header checks: the heap's secret, and the same rotated
/// (kept, so that a check does not rotate it again).
#[derive(Clone, Copy)]
pub struct Key {
    fields: u64,
    place: u64,
}

impl Key {
    /// The key made from a secret.
    pub const fn new(secret: u64) -> Key {
        Key {
            fields: secret,
            place: secret.rotate_left(32),
        }
    }
}

// `Block::fields` reads `region` and `size_units` as one little-endian word.
#[cfg(not(target_endian = "little"))]
compile_error!("fitalloc's header check assumes a little-endian target");

/// 24 bits of a keyed hash of a header's address, region, size and flags
/// (not its check, not `prev_units`): one 64 x 64 -> 128-bit multiply of
/// the two key-masked words, folded (the "mum" step of wyhash). `fields` is
/// `region | size_units << 32`, `tag` the flags (and the check, ignored).
#[inline]
fn check_fields(addr: usize, secret: Key, fields: u64, tag: u32) -> u32 {
    let place = (addr as u64) << 4 | (tag & FLAG_MASK) as u64;
    let p = ((fields ^ secret.fields) as u128) * ((place ^ secret.place) as u128);
    (((p as u64) ^ (p >> 64) as u64) >> 40) as u32
}

/// Rounds `n` up to a multiple of `a` (a power of two); `None` on overflow.
#[inline]
pub fn round_up(n: usize, a: usize) -> Option<usize> {
    Some(n.checked_add(a - 1)? & !(a - 1))
}

/// The block size for a request of `n` bytes (ARCHITECTURE.md §3), or `None`
/// when it would exceed the largest block.
#[inline]
pub fn need(n: usize, named: bool) -> Option<usize> {
    let name = if named { NAME_AREA } else { 0 };
    let size = round_up(n, ALIGN)?.checked_add(HEADER + name)?;
    let size = size.max(MIN_BLOCK);
    (size / ALIGN <= MAX_UNITS).then_some(size)
}
