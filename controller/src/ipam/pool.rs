//! One address pool as the allocator sees it: its rules, its free space per family, and whether
//! it may serve a given Service (pure).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_crds::address::to_u128;
use ferrolb_crds::contract::annotation::ADDRESS_POOL;
use ferrolb_crds::selector::any_matches;
use ferrolb_crds::{AddressRange, Family, IPAddressPool, ServiceAllocation};

use super::free_space::FreeSpace;
use super::request::Request;

/// A pool's configuration, read from an `IPAddressPool`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.creationTimestamp` in seconds: the older of two overlapping pools wins.
    pub created: i64,
    /// Parsed `spec.addresses`, or what is wrong with them.
    pub ranges: Result<Vec<AddressRange>, String>,
    /// `spec.autoAssign`.
    pub auto_assign: bool,
    /// `spec.avoidBuggyIPs`.
    pub avoid_buggy: bool,
    /// `spec.serviceAllocation`.
    pub allocation: Option<ServiceAllocation>,
}

impl PoolConfig {
    /// A pool named `name` with `ranges` and every other setting at its default: created at
    /// the epoch, `autoAssign: true`, `avoidBuggyIPs: false`, no `serviceAllocation`.
    pub fn new(name: impl Into<String>, ranges: Result<Vec<AddressRange>, String>) -> PoolConfig {
        PoolConfig {
            name: name.into(),
            created: 0,
            ranges,
            auto_assign: true,
            avoid_buggy: false,
            allocation: None,
        }
    }

    /// Reads an `IPAddressPool` object.
    pub fn from_object(pool: &IPAddressPool) -> PoolConfig {
        PoolConfig {
            name: pool.metadata.name.clone().unwrap_or_default(),
            created: pool
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()),
            ranges: match super::request::pool_class(pool) {
                Err(e) => Err(e.to_string()),
                Ok(_) => pool.spec.ranges().map_err(|e| e.to_string()),
            },
            auto_assign: pool.spec.auto_assign,
            avoid_buggy: pool.spec.avoid_buggy_ips,
            allocation: pool.spec.service_allocation.clone(),
        }
    }
}

/// Why a pool may not serve a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuledOut {
    /// The Service names another pool.
    NotNamed(String),
    /// `autoAssign: false` and the Service neither names the pool nor requests an address in it.
    AutoAssignOff,
    /// A requested address lies outside the pool.
    LacksRequested(IpAddr),
    /// `serviceAllocation.namespaces` does not list the namespace.
    NamespaceNotListed(String),
    /// No `serviceAllocation.namespaceSelectors` term matches the namespace's labels.
    NamespaceNotSelected(String),
    /// No `serviceAllocation.serviceSelectors` term matches the Service's labels.
    ServiceNotSelected,
    /// The pool has no address of a family the Service needs.
    NoFamily(Family),
    /// The pool is not in use (see its conditions).
    Invalid(String),
}

impl fmt::Display for RuledOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuledOut::NotNamed(named) => write!(f, "the Service names pool {named}"),
            RuledOut::AutoAssignOff => write!(
                f,
                "autoAssign is false and the Service neither names it ({ADDRESS_POOL}) nor requests an address in it",
            ),
            RuledOut::LacksRequested(ip) => write!(f, "does not contain the requested {ip}"),
            RuledOut::NamespaceNotListed(ns) => {
                write!(f, "serviceAllocation.namespaces does not list {ns:?}")
            }
            RuledOut::NamespaceNotSelected(ns) => write!(
                f,
                "serviceAllocation.namespaceSelectors match no labels of namespace {ns:?}"
            ),
            RuledOut::ServiceNotSelected => {
                f.write_str("serviceAllocation.serviceSelectors match no labels of the Service")
            }
            RuledOut::NoFamily(family) => write!(f, "has no {family} addresses"),
            RuledOut::Invalid(why) => write!(f, "is not in use: {why}"),
        }
    }
}

/// A valid pool: rules plus free space and assigned counts per family.
#[derive(Clone, Debug)]
pub struct Pool {
    config: PoolConfig,
    /// The name, shared by every assignment from the pool (no copy per Service).
    shared_name: Arc<str>,
    ranges: Vec<AddressRange>,
    free: [FreeSpace; 2],
    assigned: [u128; 2],
}

pub(crate) fn family_index(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl Pool {
    /// A pool with every address free; `config.ranges` must be `Ok`.
    pub fn new(config: PoolConfig) -> Pool {
        let ranges = config.ranges.clone().unwrap_or_default();
        let free = [Family::V4, Family::V6]
            .map(|family| FreeSpace::new(family, &ranges, config.avoid_buggy));
        Pool {
            shared_name: config.name.as_str().into(),
            config,
            ranges,
            free,
            assigned: [0, 0],
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The pool's name, to keep.
    pub fn shared_name(&self) -> &Arc<str> {
        &self.shared_name
    }

    /// Its configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Its address ranges.
    pub fn ranges(&self) -> &[AddressRange] {
        &self.ranges
    }

    /// Whether any range holds `ip` (eligible or not).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Whether the pool has addresses of `family`.
    pub fn has_family(&self, family: Family) -> bool {
        self.ranges.iter().any(|r| r.family() == family)
    }

    /// Free eligible addresses of `family`.
    pub fn available(&self, family: Family) -> u128 {
        self.free[family_index(family)].available()
    }

    /// Addresses of `family` held by Services.
    pub fn assigned(&self, family: Family) -> u128 {
        self.assigned[family_index(family)]
    }

    /// Whether `ip` is free and may be handed out.
    pub fn is_free(&self, ip: IpAddr) -> bool {
        self.free[family_index(Family::of(ip))].is_free(to_u128(ip))
    }

    /// The address [`Pool::allocate_lowest`] would hand out, without taking it.
    pub fn lowest_free(&self, family: Family) -> Option<IpAddr> {
        self.free[family_index(family)]
            .lowest()
            .map(|bits| ferrolb_crds::address::from_u128(family, bits))
    }

    /// Marks `ip` held: taken from the free space (if it was free) and counted as assigned.
    pub fn hold(&mut self, ip: IpAddr) {
        let i = family_index(Family::of(ip));
        self.free[i].take(to_u128(ip));
        self.assigned[i] += 1;
    }

    /// Marks `ip` no longer held: back to the free space and out of the assigned count.
    pub fn unhold(&mut self, ip: IpAddr) {
        let i = family_index(Family::of(ip));
        self.free[i].release(to_u128(ip));
        self.assigned[i] = self.assigned[i].saturating_sub(1);
    }

    /// Ranking among pools that may serve a Service: pools with `serviceAllocation` (which must
    /// have selected it) first, then lowest positive priority, unset or 0 last, then name.
    pub fn rank(&self) -> (bool, u32, &str) {
        let allocation = self.config.allocation.as_ref();
        let priority = allocation
            .and_then(|a| a.priority)
            .filter(|p| *p > 0)
            .map_or(u32::MAX, |p| p as u32);
        (allocation.is_none(), priority, &self.config.name)
    }

    /// Whether the pool may serve `req` (a Service in namespace `namespace` with labels
    /// `ns_labels`). `keeping` relaxes `autoAssign`, which only gates new allocations.
    pub fn may_serve(
        &self,
        req: &Request,
        namespace: &str,
        ns_labels: &BTreeMap<String, String>,
        keeping: bool,
    ) -> Result<(), RuledOut> {
        if let Some(named) = req.pool.as_deref()
            && named != self.config.name
        {
            return Err(RuledOut::NotNamed(named.to_string()));
        }
        if let Some(ip) = req.requested.iter().find(|ip| !self.contains(**ip)) {
            return Err(RuledOut::LacksRequested(*ip));
        }
        if !keeping && !self.config.auto_assign && req.pool.is_none() && req.requested.is_empty() {
            return Err(RuledOut::AutoAssignOff);
        }
        if let Some(a) = &self.config.allocation {
            if !a.namespaces.is_empty() && !a.namespaces.iter().any(|n| n == namespace) {
                return Err(RuledOut::NamespaceNotListed(namespace.into()));
            }
            if !any_matches(&a.namespace_selectors, ns_labels) {
                return Err(RuledOut::NamespaceNotSelected(namespace.into()));
            }
            if !any_matches(&a.service_selectors, &req.labels) {
                return Err(RuledOut::ServiceNotSelected);
            }
        }
        if let Some(family) = req.families.first().filter(|f| !self.has_family(**f)) {
            return Err(RuledOut::NoFamily(*family));
        }
        Ok(())
    }
}
