//! The route decision (pure): which prefixes this node announces to which of its peers, with
//! which attributes, and why a Service's address is not announced.
//!
//! A node announces an address of a Service when a `BGPAdvertisement` selects the address's
//! pool and the node (`nodeSelectors`), the node is not excluded
//! (`node.kubernetes.io/exclude-from-external-load-balancers`, `NetworkUnavailable`), and, for
//! `externalTrafficPolicy: Local`, the node has a ready endpoint of the Service. It announces
//! to each of its peers (a `BGPPeer` whose `nodeSelectors` select the node) that the
//! advertisement names, or to all of them when it names none. Addresses shared by several
//! Services are announced when any of them makes the node eligible.
//!
//! The prefix is the address's aggregate at the advertisement's `aggregationLength`; an
//! aggregate that would reach beyond the pool's range is not announced (it would draw traffic
//! for addresses ferrolb does not hold). Two advertisements giving one prefix to one peer merge:
//! the union of their communities, the highest `localPref`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ferrolb_crds::address::{from_u128, to_u128};
use ferrolb_crds::community::{CommunityEntry, CommunityValue};
use ferrolb_crds::{Family, selector};

use crate::bgp::config::PeerConfig;
use crate::eligibility::pool_of;
use crate::model::{BgpAdvertisement, NodeInfo, PoolInfo, ServiceInfo, Snapshot};
use crate::plan::ServiceKey;

/// An IP prefix, its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl Prefix {
    /// The prefix of length `len` holding `ip`.
    pub fn covering(ip: IpAddr, len: u8) -> Prefix {
        let family = Family::of(ip);
        let len = len.min(family.max_prefix());
        let host_bits = u32::from(family.max_prefix() - len);
        let mask = if host_bits >= 128 {
            0
        } else {
            !((1u128 << host_bits) - 1)
        };
        Prefix {
            addr: from_u128(family, to_u128(ip) & mask),
            len,
        }
    }

    /// Its address family.
    pub fn family(&self) -> Family {
        Family::of(self.addr)
    }

    /// First and last address, as numbers.
    fn bounds(&self) -> (u128, u128) {
        let first = to_u128(self.addr);
        let host_bits = u32::from(self.family().max_prefix() - self.len);
        let span = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        (first, first | span)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The path attributes ferrolb sets on a route (beyond ORIGIN, AS_PATH and NEXT_HOP).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attributes {
    /// Standard and large communities.
    pub communities: BTreeSet<CommunityValue>,
    /// LOCAL_PREF (sent to iBGP peers only).
    pub local_pref: Option<u32>,
}

impl Attributes {
    /// Adds `other`'s communities; keeps the higher LOCAL_PREF.
    pub fn merge(&mut self, other: &Attributes) {
        self.communities.extend(other.communities.iter().copied());
        self.local_pref = self.local_pref.max(other.local_pref);
    }
}

/// Why an address is not announced over BGP from this node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NotAnnounced {
    /// No `BGPAdvertisement` selects its pool (it may be announced by layer 2 only).
    PoolNotAdvertised,
    /// The node carries the exclude label or is `NetworkUnavailable`.
    NodeExcluded(String),
    /// No advertisement of the pool selects the node.
    NodeNotSelected,
    /// `externalTrafficPolicy: Local` and no ready endpoint here.
    NoLocalEndpoint,
    /// The selecting advertisements name no peer this node has.
    NoPeer,
}

impl fmt::Display for NotAnnounced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAnnounced::PoolNotAdvertised => write!(f, "no BGPAdvertisement selects its pool"),
            NotAnnounced::NodeExcluded(why) => write!(f, "{why}"),
            NotAnnounced::NodeNotSelected => write!(
                f,
                "no BGPAdvertisement of the pool selects the node (spec.nodeSelectors)"
            ),
            NotAnnounced::NoLocalEndpoint => write!(
                f,
                "externalTrafficPolicy is Local and the node has no ready endpoint"
            ),
            NotAnnounced::NoPeer => write!(
                f,
                "the BGPAdvertisements of the pool name no BGPPeer this node peers with"
            ),
        }
    }
}

/// A configuration problem that keeps routes from being announced, naming the object and field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem(pub String);

/// This node's decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// For each peer (by `BGPPeer` name) the routes to announce.
    pub routes: BTreeMap<String, BTreeMap<Prefix, Attributes>>,
    /// For each Service address: the peers it goes to from this node, or why none.
    pub services: BTreeMap<ServiceKey, BTreeMap<IpAddr, Result<BTreeSet<String>, NotAnnounced>>>,
    /// Problems found in the configuration.
    pub problems: BTreeSet<Problem>,
}

/// This node's peers: the usable `BGPPeer`s whose node selectors select `node`.
pub fn peers_of<'a>(snapshot: &'a Snapshot, node: &NodeInfo) -> BTreeMap<&'a str, &'a PeerConfig> {
    snapshot
        .bgp
        .peers
        .iter()
        .filter_map(|(name, peer)| peer.as_ref().ok().map(|p| (name.as_str(), p)))
        .filter(|(_, p)| selector::any_matches(&p.node_selectors, &node.labels))
        .collect()
}

impl BgpAdvertisement {
    fn selects_pool(&self, pool: &PoolInfo) -> bool {
        selector::named_or_selected(&self.pools, &self.pool_selectors, &pool.name, &pool.labels)
    }

    fn selects_node(&self, node: &NodeInfo) -> bool {
        selector::any_matches(&self.node_selectors, &node.labels)
    }

    fn aggregation(&self, family: Family) -> u8 {
        match family {
            Family::V4 => self.aggregation_v4,
            Family::V6 => self.aggregation_v6,
        }
    }
}

/// The advertisement's attributes, its community names looked up; an unknown name is a problem
/// and the advertisement is not used (announcing without a community the operator asked for,
/// say `no-export`, could leak the route).
fn attributes_of(
    ad: &BgpAdvertisement,
    names: &BTreeMap<String, CommunityValue>,
) -> Result<Attributes, Problem> {
    let mut communities = BTreeSet::new();
    for entry in &ad.communities {
        match entry {
            CommunityEntry::Value(v) => {
                communities.insert(*v);
            }
            CommunityEntry::Name(name) => match names.get(name) {
                Some(v) => {
                    communities.insert(*v);
                }
                None => {
                    return Err(Problem(format!(
                        "BGPAdvertisement {}: spec.communities names {name:?}, which no Community object defines; its routes are not announced",
                        ad.name
                    )));
                }
            },
        }
    }
    Ok(Attributes {
        communities,
        local_pref: ad.local_pref,
    })
}

/// The aggregate of `ip` at `len` if it lies inside one of the pool's ranges; otherwise the
/// aggregate at the shortest length that does, and the problem.
fn aggregate(ip: IpAddr, len: u8, pool: &PoolInfo, ad: &str) -> (Prefix, Option<Problem>) {
    let fits = |p: &Prefix| {
        let (first, last) = p.bounds();
        pool.ranges
            .iter()
            .any(|r| r.family() == p.family() && r.first_bits() <= first && last <= r.last_bits())
    };
    let prefix = Prefix::covering(ip, len);
    if fits(&prefix) {
        return (prefix, None);
    }
    let max = Family::of(ip).max_prefix();
    let shortest = (len..=max)
        .find(|&l| fits(&Prefix::covering(ip, l)))
        .unwrap_or(max);
    let field = if Family::of(ip) == Family::V4 {
        "aggregationLength"
    } else {
        "aggregationLengthV6"
    };
    let problem = Problem(format!(
        "BGPAdvertisement {ad}: spec.{field} {len} would announce {prefix}, which reaches beyond IPAddressPool {}; {ip} is announced at /{shortest}, the shortest length inside the pool",
        pool.name
    ));
    (Prefix::covering(ip, shortest), Some(problem))
}

/// The advertisements' attributes (`None` where a community name is unknown) and the problems
/// found in them and in their peer names.
fn advertisement_attributes(snapshot: &Snapshot) -> (Vec<Option<Attributes>>, BTreeSet<Problem>) {
    let mut problems = BTreeSet::new();
    let peer_names: BTreeSet<&str> = snapshot.bgp.peers.keys().map(String::as_str).collect();
    let mut attributes = Vec::new();
    for ad in &snapshot.bgp.advertisements {
        for name in &ad.peers {
            if !peer_names.contains(name.as_str()) {
                problems.insert(Problem(format!(
                    "BGPAdvertisement {}: spec.peers names BGPPeer {name}, which does not exist",
                    ad.name
                )));
            }
        }
        match attributes_of(ad, &snapshot.bgp.communities) {
            Ok(a) => attributes.push(Some(a)),
            Err(p) => {
                problems.insert(p);
                attributes.push(None);
            }
        }
    }
    (attributes, problems)
}

/// One address of one Service on one node: the peers it goes to and, for each, the prefix and
/// attributes; or why it is not announced.
type Outcome = Result<Vec<(String, Prefix, Attributes)>, NotAnnounced>;

/// Whether `node` (with `peers`) announces `ip` of `svc`, and how.
fn outcome(
    snapshot: &Snapshot,
    node: &NodeInfo,
    peers: &BTreeMap<&str, &PeerConfig>,
    attributes: &[Option<Attributes>],
    svc: &ServiceInfo,
    ip: IpAddr,
    problems: &mut BTreeSet<Problem>,
) -> Option<Outcome> {
    let pool = pool_of(ip, svc.pool.as_deref(), &snapshot.pools)?;
    let ads = &snapshot.bgp.advertisements;
    let selecting: Vec<usize> = (0..ads.len())
        .filter(|&i| ads[i].selects_pool(pool))
        .collect();
    if selecting.is_empty() {
        return Some(Err(NotAnnounced::PoolNotAdvertised));
    }
    if let Some(why) = node.excluded() {
        return Some(Err(NotAnnounced::NodeExcluded(why.to_string())));
    }
    if svc.local && !svc.endpoint_nodes.contains(&node.name) {
        return Some(Err(NotAnnounced::NoLocalEndpoint));
    }
    let with_node: Vec<usize> = selecting
        .into_iter()
        .filter(|&i| ads[i].selects_node(node))
        .collect();
    if with_node.is_empty() {
        return Some(Err(NotAnnounced::NodeNotSelected));
    }
    let mut routes = Vec::new();
    for i in with_node {
        let ad = &ads[i];
        let Some(attrs) = &attributes[i] else {
            continue;
        };
        let (prefix, problem) = aggregate(ip, ad.aggregation(Family::of(ip)), pool, &ad.name);
        problems.extend(problem);
        for peer in peers.keys() {
            if ad.peers.is_empty() || ad.peers.iter().any(|p| p == peer) {
                routes.push((peer.to_string(), prefix, attrs.clone()));
            }
        }
    }
    Some(if routes.is_empty() {
        Err(NotAnnounced::NoPeer)
    } else {
        Ok(routes)
    })
}

/// What every Service's decision on this node shares: the node, its peers and the
/// advertisements' attributes.
#[derive(Debug)]
pub struct NodeContext<'a> {
    node: &'a NodeInfo,
    peers: BTreeMap<&'a str, &'a PeerConfig>,
    attributes: Vec<Option<Attributes>>,
}

impl<'a> NodeContext<'a> {
    /// The context of `node_name` and the problems found in the advertisements; `None` when the
    /// Node is unknown (it announces nothing).
    pub fn new(
        snapshot: &'a Snapshot,
        node_name: &str,
    ) -> (Option<NodeContext<'a>>, BTreeSet<Problem>) {
        let (attributes, problems) = advertisement_attributes(snapshot);
        let context = snapshot.nodes.get(node_name).map(|node| NodeContext {
            node,
            peers: peers_of(snapshot, node),
            attributes,
        });
        (context, problems)
    }

    /// Whether any Service can be announced from here: the node has a peer and some
    /// advertisement exists. When not, every Service's routes are empty.
    pub fn may_announce(&self, snapshot: &Snapshot) -> bool {
        !self.peers.is_empty() && !snapshot.bgp.advertisements.is_empty()
    }
}

/// One Service's decision on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRoutes {
    /// For each of its addresses: the peers it goes to, or why none.
    pub per_ip: BTreeMap<IpAddr, Result<BTreeSet<String>, NotAnnounced>>,
    /// The routes it contributes: peer, prefix, attributes.
    pub routes: Vec<(String, Prefix, Attributes)>,
    /// Problems found while deciding (an aggregate reaching beyond the pool).
    pub problems: BTreeSet<Problem>,
}

/// What `context`'s node announces for `svc`.
pub fn service_routes(
    snapshot: &Snapshot,
    context: &NodeContext,
    svc: &ServiceInfo,
) -> ServiceRoutes {
    let mut out = ServiceRoutes::default();
    for &ip in &svc.ips {
        let Some(result) = outcome(
            snapshot,
            context.node,
            &context.peers,
            &context.attributes,
            svc,
            ip,
            &mut out.problems,
        ) else {
            continue;
        };
        let result = result.map(|routes| {
            let to = routes.iter().map(|(peer, _, _)| peer.clone()).collect();
            out.routes.extend(routes);
            to
        });
        out.per_ip.insert(ip, result);
    }
    out
}

/// Adds `attrs` to `prefix`'s route to `peer` in `routes`, merging with what is there.
pub fn merge_route(
    routes: &mut BTreeMap<String, BTreeMap<Prefix, Attributes>>,
    peer: &str,
    prefix: Prefix,
    attrs: &Attributes,
) {
    let table = match routes.get_mut(peer) {
        Some(table) => table,
        None => routes.entry(peer.to_string()).or_default(),
    };
    table
        .entry(prefix)
        .and_modify(|a| a.merge(attrs))
        .or_insert_with(|| attrs.clone());
}

/// Decides what node `node_name` announces, over every Service (the reference the
/// incremental [`crate::bgp::route_table::RouteTable`] is tested against).
pub fn decide(snapshot: &Snapshot, node_name: &str) -> Decision {
    let (context, problems) = NodeContext::new(snapshot, node_name);
    let mut decision = Decision {
        problems,
        ..Decision::default()
    };
    let Some(context) = context else {
        return decision;
    };
    for svc in snapshot.services.values() {
        let decided = service_routes(snapshot, &context, svc);
        for (peer, prefix, attrs) in &decided.routes {
            merge_route(&mut decision.routes, peer, *prefix, attrs);
        }
        decision.problems.extend(decided.problems);
        if !decided.per_ip.is_empty() {
            decision.services.insert(svc.key.clone(), decided.per_ip);
        }
    }
    decision
}

/// For a group of addresses shared by `services`: every node that announces one of them over
/// BGP, with the peers it announces to (a node counts when any of the Services lets it).
pub fn announcers(
    snapshot: &Snapshot,
    ips: &BTreeSet<IpAddr>,
    services: &BTreeSet<ServiceKey>,
) -> BTreeMap<String, BTreeSet<String>> {
    // Layer-2-only clusters pay nothing for this in their full replans.
    if snapshot.bgp.peers.is_empty() || snapshot.bgp.advertisements.is_empty() {
        return BTreeMap::new();
    }
    let (attributes, _) = advertisement_attributes(snapshot);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut ignored = BTreeSet::new();
    for node in snapshot.nodes.values() {
        let peers = peers_of(snapshot, node);
        if peers.is_empty() {
            continue;
        }
        for key in services {
            let Some(svc) = snapshot.services.get(key) else {
                continue;
            };
            for &ip in ips {
                if let Some(Ok(routes)) =
                    outcome(snapshot, node, &peers, &attributes, svc, ip, &mut ignored)
                {
                    out.entry(node.name.clone())
                        .or_default()
                        .extend(routes.into_iter().map(|(peer, _, _)| peer));
                }
            }
        }
    }
    out
}

/// `announcers` in a sentence for the Service's condition, at most ten nodes named.
pub fn describe_announcers(
    ips: &BTreeSet<IpAddr>,
    announcers: &BTreeMap<String, BTreeSet<String>>,
) -> Option<String> {
    if announcers.is_empty() {
        return None;
    }
    let ips: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
    let listed = |names: Vec<&String>| {
        let more = names.len().saturating_sub(10);
        let mut text: Vec<String> = names.into_iter().take(10).cloned().collect();
        if more > 0 {
            text.push(format!("{more} more"));
        }
        text.join(", ")
    };
    let peer_sets: BTreeSet<&BTreeSet<String>> = announcers.values().collect();
    Some(if peer_sets.len() == 1 {
        let peers: Vec<&str> = announcers
            .values()
            .next()
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        format!(
            "{} announce {} over BGP to {}",
            listed(announcers.keys().collect()),
            ips.join(", "),
            peers.join(", ")
        )
    } else {
        let per_node: Vec<String> = announcers
            .iter()
            .map(|(node, peers)| {
                format!(
                    "{node} to {}",
                    peers.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        let more = per_node.len().saturating_sub(10);
        let mut shown: Vec<String> = per_node.into_iter().take(10).collect();
        if more > 0 {
            shown.push(format!("{more} more"));
        }
        format!(
            "{} announced over BGP by {}",
            ips.join(", "),
            shown.join("; ")
        )
    })
}

#[cfg(test)]
#[path = "routes_tests.rs"]
pub(super) mod tests;
