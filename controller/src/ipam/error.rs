//! Why a Service has no address, in words a user can act on (pure).

use std::fmt;
use std::net::IpAddr;

use ferrolb_crds::Family;
use ferrolb_crds::contract::annotation::ADDRESS_POOL;
use ferrolb_crds::contract::reason;

use super::pool::RuledOut;
use super::request::{Families, RequestError, ServiceKey};
use super::sharing::Conflict;

/// Items as messages list them: `a, b, c`.
pub fn comma_separated<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Free addresses of one pool, as an exhausted allocation saw them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Considered {
    /// Pool name.
    pub pool: String,
    /// Per needed family: free count, or `None` when the pool has no address of that family.
    pub free: Vec<(Family, Option<u128>)>,
}

/// Why no address could be allocated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    /// The Service's request is malformed.
    #[error("{0}")]
    Invalid(#[from] RequestError),
    /// There is no usable pool at all.
    #[error(
        "no IPAddressPool is in use; create one (kubectl apply -f pool.yaml, see docs/configuration.md)"
    )]
    NoPools,
    /// The named pool does not exist or is not in use.
    #[error("annotation {ann} names pool {name}, which {}", match problem {
        Some(p) => format!("is not in use: {p}"),
        None => format!("does not exist (pools: {})", if known.is_empty() { "none".into() } else { known.join(", ") }),
    }, ann = ADDRESS_POOL)]
    PoolNotFound {
        /// The name given.
        name: String,
        /// Why the pool is not in use, when it exists.
        problem: Option<String>,
        /// Pools in use.
        known: Vec<String>,
    },
    /// A requested address lies in no pool.
    #[error(
        "the requested {0} is in no IPAddressPool; add it to a pool's spec.addresses or request an address from one"
    )]
    NotInAnyPool(IpAddr),
    /// Every pool is ruled out; says why for each.
    #[error("no pool may serve this Service: {}. Name a pool with {ann}, or change a pool's serviceAllocation or autoAssign", describe_ruled_out(.0), ann = ADDRESS_POOL)]
    NoPoolMatches(Vec<(String, RuledOut)>),
    /// Eligible pools exist but none has the addresses needed.
    #[error("no free address{}: {}. Add addresses to a pool or delete Services that hold some",
        if families.len() > 1 { format!(" (needs {} from one pool)", families.iter().map(Family::to_string).collect::<Vec<_>>().join(" and ")) } else { String::new() },
        describe_considered(considered))]
    Exhausted {
        /// Families needed.
        families: Families,
        /// Pools considered, in priority order.
        considered: Vec<Considered>,
    },
    /// A requested address is held by a Service it may not share with.
    #[error("{ip} is held by {holder}: {conflict}")]
    InUse {
        /// The address.
        ip: IpAddr,
        /// Who holds it.
        holder: ServiceKey,
        /// Why it cannot be shared.
        conflict: Conflict,
    },
    /// A requested address the pool never hands out.
    #[error("the requested {ip} ends in .0 or .255 and pool {pool} has avoidBuggyIPs: true")]
    Ineligible {
        /// The address.
        ip: IpAddr,
        /// The pool.
        pool: String,
    },
}

impl AllocationError {
    /// CamelCase reason for the Service condition, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AllocationError::Invalid(_) => reason::INVALID_REQUEST,
            AllocationError::NoPools => reason::NO_POOL,
            AllocationError::PoolNotFound { .. } => reason::POOL_NOT_FOUND,
            AllocationError::NotInAnyPool(_) => reason::NOT_IN_ANY_POOL,
            AllocationError::NoPoolMatches(_) => reason::NO_POOL_MATCHES,
            AllocationError::Exhausted { .. } => reason::POOL_EXHAUSTED,
            AllocationError::InUse { conflict, .. } => conflict.reason(),
            AllocationError::Ineligible { .. } => reason::INELIGIBLE_IP,
        }
    }

    /// Whether freed addresses or pool changes may cure it (the Service waits for them).
    pub fn may_resolve_by_itself(&self) -> bool {
        !matches!(self, AllocationError::Invalid(_))
    }
}

fn describe_ruled_out(ruled_out: &[(String, RuledOut)]) -> String {
    ruled_out
        .iter()
        .map(|(pool, why)| format!("pool {pool} {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_considered(considered: &[Considered]) -> String {
    considered
        .iter()
        .map(|c| {
            let free = c
                .free
                .iter()
                .map(|(family, n)| match n {
                    Some(n) => format!("{n} {family} free"),
                    None => format!("no {family}"),
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("pool {} has {free}", c.pool)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl fmt::Display for Considered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe_considered(std::slice::from_ref(self)))
    }
}
