//! The placement policies (SPEC §3) and the order each one needs its free
//! blocks in. Both the heap and the free index use these, so they live below
//! both.

/// Where a new allocation goes (ARCHITECTURE.md §3, "Choose").
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Policy {
    /// The first free block in list order that fits.
    #[default]
    FirstFit,
    /// The first block that fits at or after the previous choice, wrapping once.
    NextFit,
    /// The smallest block that fits; ties to the first in list order.
    BestFit,
    /// The largest block; ties to the first in list order.
    WorstFit,
}

/// How a free index orders its blocks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Order {
    /// List order: region creation, then address (first, next, worst fit).
    Position,
    /// `(size, position)` (best fit).
    Size,
}

impl Policy {
    /// All four, in the order the docs list them.
    pub const ALL: [Policy; 4] = [
        Policy::FirstFit,
        Policy::NextFit,
        Policy::BestFit,
        Policy::WorstFit,
    ];

    /// The name used by `ALLOCATOR_ALGORITHM`.
    pub const fn name(self) -> &'static str {
        match self {
            Policy::FirstFit => "first_fit",
            Policy::NextFit => "next_fit",
            Policy::BestFit => "best_fit",
            Policy::WorstFit => "worst_fit",
        }
    }

    /// Parses an `ALLOCATOR_ALGORITHM` value.
    pub fn from_name(s: &[u8]) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name().as_bytes() == s)
    }

    /// The order of the free index this policy asks.
    pub const fn order(self) -> Order {
        match self {
            Policy::BestFit => Order::Size,
            _ => Order::Position,
        }
    }
}
