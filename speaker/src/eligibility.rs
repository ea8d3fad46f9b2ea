//! Which nodes may announce an address, and on which interfaces (pure).
//!
//! An address is announced only if it lies in a ferrolb `IPAddressPool` (the speaker answers for
//! nothing else). A node is eligible for it when some `L2Advertisement` selects the pool and the
//! node, the node is not excluded (`node.kubernetes.io/exclude-from-external-load-balancers`,
//! `NetworkUnavailable`), and, for `externalTrafficPolicy: Local`, the node has a ready or serving
//! endpoint of the Service.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_crds::contract::label::EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS;
use ferrolb_crds::selector;

use crate::model::{Advertisement, NodeInfo, PoolInfo};

// The eligibility rules that read one model object alone.

impl NodeInfo {
    /// Why this node may never announce, if so.
    pub fn excluded(&self) -> Option<Ineligible> {
        if self
            .labels
            .contains_key(EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS)
        {
            Some(Ineligible::ExcludedByLabel)
        } else if self.network_unavailable {
            Some(Ineligible::NetworkUnavailable)
        } else {
            None
        }
    }
}

impl Advertisement {
    /// Whether this advertisement announces `pool`: named, selected, or (naming and selecting
    /// nothing) every pool.
    pub fn selects_pool(&self, pool: &PoolInfo) -> bool {
        selector::named_or_selected(&self.pools, &self.pool_selectors, &pool.name, &pool.labels)
    }

    /// Whether this advertisement lets `node` announce.
    pub fn selects_node(&self, node: &NodeInfo) -> bool {
        selector::any_matches(&self.node_selectors, &node.labels)
    }
}

/// Where a node announces an address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Interfaces {
    /// Every suitable interface (an advertisement named none).
    All,
    /// Only these (the union of the selecting advertisements' `interfaces`).
    Only(BTreeSet<String>),
}

impl Interfaces {
    /// Whether announcing on interface `name` is allowed.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Interfaces::All => true,
            Interfaces::Only(names) => names.contains(name),
        }
    }

    /// Both allowances together (the narrower wins); `None` when nothing is left.
    pub fn intersect(&self, other: &Interfaces) -> Option<Interfaces> {
        let out = match (self, other) {
            (Interfaces::All, x) | (x, Interfaces::All) => x.clone(),
            (Interfaces::Only(a), Interfaces::Only(b)) => {
                Interfaces::Only(a.intersection(b).cloned().collect())
            }
        };
        match &out {
            Interfaces::Only(names) if names.is_empty() => None,
            _ => Some(out),
        }
    }
}

/// Why a node may not announce an address. Ordered from the most general reason.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ineligible {
    /// The address is in no `IPAddressPool`.
    NotInAnyPool,
    /// No `L2Advertisement` selects the pool.
    PoolNotAdvertised(String),
    /// The node carries the exclude-from-external-load-balancers label.
    ExcludedByLabel,
    /// The node's `NetworkUnavailable` condition is True.
    NetworkUnavailable,
    /// No advertisement of the pool selects the node.
    NodeNotSelected,
    /// `externalTrafficPolicy: Local` and the node has no ready or serving endpoint.
    NoLocalEndpoint,
    /// The advertisements' interface lists of the group's addresses have nothing in common.
    NoCommonInterface,
}

impl std::fmt::Display for Ineligible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ineligible::NotInAnyPool => write!(f, "the address is in no IPAddressPool"),
            Ineligible::PoolNotAdvertised(pool) => write!(
                f,
                "no L2Advertisement selects IPAddressPool {pool} (add one naming it in spec.ipAddressPools)"
            ),
            Ineligible::ExcludedByLabel => write!(
                f,
                "the node has the label {EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS}"
            ),
            Ineligible::NetworkUnavailable => {
                write!(f, "the node's NetworkUnavailable condition is True")
            }
            Ineligible::NodeNotSelected => write!(
                f,
                "no L2Advertisement of the pool selects the node (spec.nodeSelectors)"
            ),
            Ineligible::NoLocalEndpoint => write!(
                f,
                "externalTrafficPolicy is Local and the node has no ready endpoint"
            ),
            Ineligible::NoCommonInterface => write!(
                f,
                "the L2Advertisements of the Service's addresses name no common interface"
            ),
        }
    }
}

/// The pool an address belongs to: the one the controller recorded (`allocated_from`) when it
/// still contains the address, else the first pool by name that does. Pools never overlap once
/// the controller accepted them, so the fallback only matters while it catches up.
pub fn pool_of<'a>(
    ip: IpAddr,
    allocated_from: Option<&str>,
    pools: &'a BTreeMap<String, PoolInfo>,
) -> Option<&'a PoolInfo> {
    allocated_from
        .and_then(|name| pools.get(name))
        .filter(|p| p.contains(ip))
        .or_else(|| pools.values().find(|p| p.contains(ip)))
}

/// Whether `node` may announce an address of `pool`, and on which interfaces.
pub fn node_may_announce(
    node: &NodeInfo,
    pool: &PoolInfo,
    advertisements: &[Advertisement],
) -> Result<Interfaces, Ineligible> {
    let selecting: Vec<&Advertisement> = advertisements
        .iter()
        .filter(|a| a.selects_pool(pool))
        .collect();
    if selecting.is_empty() {
        return Err(Ineligible::PoolNotAdvertised(pool.name.clone()));
    }
    if let Some(why) = node.excluded() {
        return Err(why);
    }
    let mut names = BTreeSet::new();
    let mut any = false;
    for ad in selecting.iter().filter(|a| a.selects_node(node)) {
        any = true;
        if ad.interfaces.is_empty() {
            return Ok(Interfaces::All);
        }
        names.extend(ad.interfaces.iter().cloned());
    }
    if any {
        Ok(Interfaces::Only(names))
    } else {
        Err(Ineligible::NodeNotSelected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::LabelSelector;
    use ferrolb_crds::address::parse_entry;
    use ferrolb_crds::selector::labels;

    fn node(name: &str, l: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: labels(l),
            network_unavailable: false,
        }
    }

    fn pool(name: &str, entries: &[&str], l: &[(&str, &str)]) -> PoolInfo {
        PoolInfo {
            name: name.into(),
            labels: labels(l),
            ranges: entries.iter().map(|e| parse_entry(e).unwrap()).collect(),
        }
    }

    fn select(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: labels(pairs),
            ..Default::default()
        }
    }

    fn ad(name: &str) -> Advertisement {
        Advertisement {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_empty_advertisement_announces_every_pool_from_every_node_everywhere() {
        let p = pool("lan", &["198.51.100.200-198.51.100.250"], &[]);
        assert_eq!(
            node_may_announce(&node("node1", &[]), &p, &[ad("all")]),
            Ok(Interfaces::All)
        );
    }

    #[test]
    fn a_pool_no_advertisement_selects_is_not_announced() {
        let p = pool("lan", &["198.51.100.200/29"], &[("tier", "web")]);
        let other = Advertisement {
            pools: vec!["other".into()],
            pool_selectors: vec![select(&[("tier", "db")])],
            ..ad("a")
        };
        assert_eq!(
            node_may_announce(&node("node1", &[]), &p, &[other]),
            Err(Ineligible::PoolNotAdvertised("lan".into()))
        );
        assert_eq!(
            node_may_announce(&node("node1", &[]), &p, &[]),
            Err(Ineligible::PoolNotAdvertised("lan".into()))
        );
    }

    #[test]
    fn naming_one_pool_does_not_select_the_others() {
        let lan = pool("lan", &["198.51.100.200/29"], &[]);
        let other = pool("other", &["198.51.100.208/29"], &[("tier", "web")]);
        let by_name = Advertisement {
            pools: vec!["lan".into()],
            ..ad("a")
        };
        assert!(by_name.selects_pool(&lan));
        assert!(!by_name.selects_pool(&other));
        let by_label = Advertisement {
            pool_selectors: vec![select(&[("tier", "web")])],
            ..ad("b")
        };
        assert!(by_label.selects_pool(&other));
        assert!(!by_label.selects_pool(&lan));
    }

    #[test]
    fn pools_are_selected_by_name_or_by_labels() {
        let p = pool("lan", &["198.51.100.200/29"], &[("tier", "web")]);
        let by_name = Advertisement {
            pools: vec!["lan".into()],
            ..ad("a")
        };
        let by_label = Advertisement {
            pool_selectors: vec![select(&[("tier", "db")]), select(&[("tier", "web")])],
            ..ad("b")
        };
        let n = node("node1", &[]);
        assert_eq!(node_may_announce(&n, &p, &[by_name]), Ok(Interfaces::All));
        assert_eq!(node_may_announce(&n, &p, &[by_label]), Ok(Interfaces::All));
    }

    #[test]
    fn node_selectors_pick_the_announcing_nodes() {
        let p = pool("lan", &["198.51.100.200/29"], &[]);
        let edge_only = Advertisement {
            node_selectors: vec![select(&[("role", "edge")])],
            ..ad("edge")
        };
        assert_eq!(
            node_may_announce(
                &node("node1", &[("role", "edge")]),
                &p,
                std::slice::from_ref(&edge_only)
            ),
            Ok(Interfaces::All)
        );
        assert_eq!(
            node_may_announce(&node("node2", &[("role", "worker")]), &p, &[edge_only]),
            Err(Ineligible::NodeNotSelected)
        );
    }

    #[test]
    fn excluded_and_network_unavailable_nodes_never_announce() {
        let p = pool("lan", &["198.51.100.200/29"], &[]);
        let excluded = node("node1", &[(EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS, "")]);
        assert_eq!(
            node_may_announce(&excluded, &p, &[ad("all")]),
            Err(Ineligible::ExcludedByLabel)
        );
        let unavailable = NodeInfo {
            network_unavailable: true,
            ..node("node2", &[])
        };
        assert_eq!(
            node_may_announce(&unavailable, &p, &[ad("all")]),
            Err(Ineligible::NetworkUnavailable)
        );
    }

    #[test]
    fn interfaces_are_the_union_over_advertisements_selecting_the_node() {
        let p = pool("lan", &["198.51.100.200/29"], &[]);
        let a = Advertisement {
            interfaces: vec!["eth1".into()],
            ..ad("a")
        };
        let b = Advertisement {
            interfaces: vec!["eth2".into()],
            ..ad("b")
        };
        let c_other_nodes = Advertisement {
            interfaces: vec!["eth3".into()],
            node_selectors: vec![select(&[("role", "edge")])],
            ..ad("c")
        };
        let got = node_may_announce(&node("node1", &[]), &p, &[a.clone(), b, c_other_nodes]);
        assert_eq!(
            got,
            Ok(Interfaces::Only(
                ["eth1".to_string(), "eth2".to_string()].into()
            ))
        );
        // One advertisement without a list opens every interface.
        assert_eq!(
            node_may_announce(&node("node1", &[]), &p, &[a, ad("open")]),
            Ok(Interfaces::All)
        );
    }

    #[test]
    fn interface_sets_intersect() {
        let only = |names: &[&str]| Interfaces::Only(names.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            Interfaces::All.intersect(&only(&["eth0"])),
            Some(only(&["eth0"]))
        );
        assert_eq!(
            only(&["eth0", "eth1"]).intersect(&only(&["eth1", "eth2"])),
            Some(only(&["eth1"]))
        );
        assert_eq!(only(&["eth0"]).intersect(&only(&["eth1"])), None);
        assert!(only(&["eth0"]).allows("eth0") && !only(&["eth0"]).allows("eth1"));
        assert!(Interfaces::All.allows("anything"));
    }

    #[test]
    fn the_recorded_pool_wins_while_it_contains_the_address() {
        let pools: BTreeMap<String, PoolInfo> = [
            pool("a", &["198.51.100.200/29"], &[]),
            pool("b", &["198.51.100.208/29"], &[]),
        ]
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
        let ip: IpAddr = "198.51.100.209".parse().unwrap();
        assert_eq!(pool_of(ip, Some("b"), &pools).unwrap().name, "b");
        // A stale or missing record falls back to containment.
        assert_eq!(pool_of(ip, Some("a"), &pools).unwrap().name, "b");
        assert_eq!(pool_of(ip, None, &pools).unwrap().name, "b");
        assert_eq!(pool_of(ip, Some("gone"), &pools).unwrap().name, "b");
        assert!(pool_of("203.0.113.1".parse().unwrap(), None, &pools).is_none());
    }

    #[test]
    fn reasons_read_as_advice() {
        assert!(
            Ineligible::PoolNotAdvertised("lan".into())
                .to_string()
                .contains("IPAddressPool lan")
        );
        assert!(
            Ineligible::ExcludedByLabel
                .to_string()
                .contains(EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS)
        );
    }
}
