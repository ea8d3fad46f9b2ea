//! What the allocator tells its callers (plain data): what a Service holds, what it lost and
//! why, and a pool's counts.

use std::net::IpAddr;

use ferrolb_crds::AddressCount;

use super::error::AllocationError;

/// The addresses a Service holds, primary family first, and the pool they come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Pool name.
    pub pool: String,
    /// Addresses.
    pub ips: Vec<IpAddr>,
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
