//! From what the API says and who is alive to who announces what (pure).
//!
//! Addresses are grouped first: all ingress IPs of one Service, and all Services on one IP, form
//! one group (connected components), elected once under the group's lowest address. A node is a
//! candidate for a group when it is live and eligible for every (Service, address) pair in it;
//! the interfaces it may use are the intersection over those pairs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::election;
use crate::eligibility::{Ineligible, Interfaces, node_may_announce, pool_of};
use crate::model::{NodeInfo, PoolInfo, ServiceInfo, Snapshot};

pub use ferrolb_crds::ServiceKey;

/// Addresses announced together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The election key: the lowest address.
    pub key: IpAddr,
    /// Every address of the group.
    pub ips: BTreeSet<IpAddr>,
    /// Every Service holding one of them.
    pub services: BTreeSet<ServiceKey>,
}

/// The outcome for one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The addresses and Services concerned.
    pub group: Group,
    /// The winner and its interfaces, or why no live node may announce.
    pub owner: Result<(String, Interfaces), NoOwner>,
    /// The live node that reports a group nobody announces (so exactly one writes why).
    pub reporter: Option<String>,
}

/// Why a group is not announced: the reason per live node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoOwner {
    /// Each live node's reason (a node without a Node object is left out).
    pub reasons: BTreeMap<String, Ineligible>,
}

impl std::fmt::Display for NoOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let distinct: BTreeSet<&Ineligible> = self.reasons.values().collect();
        match distinct.len() {
            0 => write!(f, "no live speaker runs on a known Node"),
            1 => write!(
                f,
                "no node may announce: {}",
                distinct.first().map(|r| r.to_string()).unwrap_or_default()
            ),
            _ => {
                write!(f, "no node may announce:")?;
                for (i, (node, why)) in self.reasons.iter().enumerate() {
                    write!(f, "{} {node}: {why}", if i == 0 { "" } else { ";" })?;
                }
                Ok(())
            }
        }
    }
}

/// Addresses skipped before grouping, with the Service and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The Service.
    pub service: ServiceKey,
    /// The address.
    pub ip: IpAddr,
    /// Why (only [`Ineligible::NotInAnyPool`] today).
    pub why: Ineligible,
}

/// The full outcome: one decision per group, and the addresses no pool contains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Decisions, ordered by group key.
    pub decisions: Vec<Decision>,
    /// Addresses that are announced by nobody because no pool holds them.
    pub skipped: Vec<Skipped>,
}

impl Plan {
    /// The decisions `node` announces.
    pub fn owned_by<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Decision> + 'a {
        self.decisions
            .iter()
            .filter(move |d| matches!(&d.owner, Ok((owner, _)) if owner == node))
    }
}

/// A Service, one of its addresses, and the pool that holds it.
pub(crate) type Pair<'a> = (&'a ServiceInfo, IpAddr, &'a PoolInfo);

/// Elects an owner for every group, over the `live` speakers.
pub fn plan(snapshot: &Snapshot, live: &BTreeSet<String>) -> Plan {
    let mut skipped = Vec::new();
    let mut pairs: Vec<Pair<'_>> = Vec::new();
    for svc in snapshot.services.values() {
        pairs_of(snapshot, svc, &mut pairs, |ip| {
            skipped.push(Skipped {
                service: svc.key.clone(),
                ip,
                why: Ineligible::NotInAnyPool,
            })
        });
    }
    let decisions = groups(&pairs)
        .into_iter()
        .map(|members| decide(snapshot, live, &pairs, &members))
        .collect();
    Plan { decisions, skipped }
}

/// Appends `svc`'s (Service, address, pool) pairs to `pairs`; calls `no_pool` for each address
/// no pool holds.
pub(crate) fn pairs_of<'a>(
    snapshot: &'a Snapshot,
    svc: &'a ServiceInfo,
    pairs: &mut Vec<Pair<'a>>,
    mut no_pool: impl FnMut(IpAddr),
) {
    for &ip in &svc.ips {
        match pool_of(ip, svc.pool.as_deref(), &snapshot.pools) {
            Some(pool) => pairs.push((svc, ip, pool)),
            None => no_pool(ip),
        }
    }
}

/// Connected components of the Service-address graph, as lists of indices into `pairs`,
/// ordered by their lowest address.
pub(crate) fn groups(pairs: &[Pair<'_>]) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..pairs.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_by_service: BTreeMap<&ServiceKey, usize> = BTreeMap::new();
    let mut first_by_ip: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for (i, &(svc, ip, _)) in pairs.iter().enumerate() {
        for first in [
            *first_by_service.entry(&svc.key).or_insert(i),
            *first_by_ip.entry(ip).or_insert(i),
        ] {
            let (a, b) = (root(&mut parent, first), root(&mut parent, i));
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..pairs.len() {
        let r = root(&mut parent, i);
        by_root.entry(r).or_default().push(i);
    }
    let mut out: Vec<Vec<usize>> = by_root.into_values().collect();
    out.sort_by_key(|members| members.iter().map(|&i| pairs[i].1).min());
    out
}

/// The decision for the group of `pairs` at `members` (a component of [`groups`]).
pub(crate) fn decide(
    snapshot: &Snapshot,
    live: &BTreeSet<String>,
    pairs: &[Pair<'_>],
    members: &[usize],
) -> Decision {
    let ips: BTreeSet<IpAddr> = members.iter().map(|&i| pairs[i].1).collect();
    let key = ips.first().copied().expect("a group has a member");
    let group = Group {
        key,
        services: members.iter().map(|&i| pairs[i].0.key.clone()).collect(),
        ips,
    };
    let owner = match elect(snapshot, live, pairs, members, key) {
        Some(won) => Ok(won),
        None => Err(NoOwner {
            reasons: live
                .iter()
                .filter_map(|name| {
                    let node = snapshot.nodes.get(name)?;
                    node_interfaces(snapshot, node, pairs, members)
                        .err()
                        .map(|why| (name.clone(), why))
                })
                .collect(),
        }),
    };
    let reporter = match owner {
        Ok(_) => None,
        Err(_) => election::owner(key, live.iter().map(String::as_str)).map(str::to_string),
    };
    Decision {
        group,
        owner,
        reporter,
    }
}

/// The winner of the group: the eligible live node that ranks first for `key`, and where it
/// may announce. The same as [`election::owner`] over every eligible node, but eligibility is
/// checked in rank order and stops at the first eligible node, and a group with an
/// `externalTrafficPolicy: Local` Service only ranks nodes with an endpoint of it: at 10,000
/// groups and 100 nodes that is the difference between one and a hundred checks per group.
fn elect<'a>(
    snapshot: &'a Snapshot,
    live: &'a BTreeSet<String>,
    pairs: &[Pair<'a>],
    members: &[usize],
    key: IpAddr,
) -> Option<(String, Interfaces)> {
    // The smallest endpoint set among the group's Local Services bounds who can be eligible.
    let bound = members
        .iter()
        .map(|&i| pairs[i].0)
        .filter(|svc| svc.local)
        .map(|svc| &svc.endpoint_nodes)
        .min_by_key(|nodes| nodes.len());
    let scorer = election::Scorer::new(key);
    let rank = |name: &'a String| -> Option<(u64, &'a str, &'a NodeInfo)> {
        let node = snapshot.nodes.get(name)?;
        Some((scorer.score(name), name.as_str(), node))
    };
    let mut ranked: Vec<(u64, &str, &NodeInfo)> = match bound {
        Some(nodes) => nodes
            .iter()
            .filter(|n| live.contains(*n))
            .filter_map(rank)
            .collect(),
        None => live.iter().filter_map(rank).collect(),
    };
    let order = |a: &(u64, &str, &NodeInfo), b: &(u64, &str, &NodeInfo)| {
        election::ranks_before((a.0, a.1), (b.0, b.1))
    };
    let eligible = |(_, name, node): &(u64, &str, &NodeInfo)| {
        node_interfaces(snapshot, node, pairs, members)
            .ok()
            .map(|interfaces| (name.to_string(), interfaces))
    };
    // Usually the first-ranked node is eligible: find it without sorting everyone.
    let first = ranked
        .iter()
        .enumerate()
        .min_by(|(_, a), (_, b)| order(a, b))
        .map(|(i, _)| i)?;
    if let Some(won) = eligible(&ranked[first]) {
        return Some(won);
    }
    ranked.swap_remove(first);
    ranked.sort_unstable_by(order);
    ranked.iter().find_map(eligible)
}

/// Where `node` may announce every pair of the group, or the first reason it may not.
fn node_interfaces(
    snapshot: &Snapshot,
    node: &NodeInfo,
    pairs: &[Pair<'_>],
    members: &[usize],
) -> Result<Interfaces, Ineligible> {
    let mut allowed = Interfaces::All;
    for &i in members {
        let (svc, _, pool) = pairs[i];
        let here = node_may_announce(node, pool, &snapshot.advertisements)?;
        if svc.local && !svc.endpoint_nodes.contains(&node.name) {
            return Err(Ineligible::NoLocalEndpoint);
        }
        allowed = allowed
            .intersect(&here)
            .ok_or(Ineligible::NoCommonInterface)?;
    }
    Ok(allowed)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
