//! What the allocator tells its callers (plain data): what a Service holds, what it lost and
//! why, and a pool's counts.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use ferrolb_crds::AddressCount;

use smallvec::SmallVec;

use super::error::AllocationError;

/// Addresses a Service holds: one or two inline, more on the heap.
pub type Ips = SmallVec<[IpAddr; 2]>;

/// The pool name of an assignment from no pool yet (one shared empty name).
pub fn no_pool() -> Arc<str> {
    static EMPTY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));
    Arc::clone(&EMPTY)
}

/// The addresses a Service holds, primary family first, and the pool they come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Pool name (shared with the pool).
    pub pool: Arc<str>,
    /// Addresses (inline: a Service holds one or two).
    pub ips: Ips,
}

/// Addresses a Service lost, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loss {
    /// The addresses it had.
    pub ips: Vec<IpAddr>,
    /// Why it lost them.
    pub why: String,
}

/// What [`Allocator::assign`](super::Allocator::assign) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// What the Service holds now, or why it holds nothing (boxed: the error is large and
    /// failures are rare).
    pub result: Result<Assignment, Box<AllocationError>>,
    /// What it held before and lost, when its earlier addresses became invalid.
    pub lost: Option<Loss>,
}

/// Per-family counts of one pool, for its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Held IPv4 addresses.
    pub assigned_v4: AddressCount,
    /// Free IPv4 addresses.
    pub available_v4: AddressCount,
    /// Held IPv6 addresses.
    pub assigned_v6: AddressCount,
    /// Free IPv6 addresses.
    pub available_v6: AddressCount,
}
