//! The plan kept current (pure): what [`plan::plan`] would decide for the whole cluster, updated
//! by touching only what an event can change, so a pass costs what the event touches, not what
//! the cluster holds.
//!
//! - **Services changed** (added, removed, addresses, pool, endpoints): the groups that held
//!   them or hold their new addresses are taken apart, and their Services regrouped and decided
//!   again. Every other group keeps its decision: groups are connected components, so nothing
//!   outside them shares an address with the Services concerned.
//! - **Speakers gone**: only the groups they owned, and the groups nobody owns (whose reasons
//!   and reporter name every live node), are decided again. A winner that is still live stays the
//!   first-ranked eligible node when others leave.
//! - **Speakers joined**: a group changes hands only if a newcomer ranks before its owner; one
//!   hash per group and newcomer finds those, and only they (and the unowned groups) are decided
//!   again. Many newcomers at once (start-up, the end of a partition) decide everything again.
//! - **Nodes, pools or advertisements changed**: eligibility may change anywhere; everything is
//!   decided again.
//!
//! Each update returns the [`Update`] (decisions removed, group keys added) that the consumers of
//! the plan (desired addresses, conditions, the kernel check) apply in turn. The tests check
//! after every step of random histories that the result equals [`plan::plan`] from scratch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::election;
use crate::model::Snapshot;
use crate::plan::{self, Decision, Pair, ServiceKey};

/// More newcomers than this at once are decided from scratch.
const MAX_JOINED_INCREMENTAL: usize = 8;

/// The current decisions and the indexes that find what an event touches.
#[derive(Debug, Default)]
pub struct Planner {
    /// Decisions by group key.
    decisions: BTreeMap<IpAddr, Decision>,
    /// Group key of every address in a group.
    group_of_ip: HashMap<IpAddr, IpAddr>,
    /// Group key of every Service in a group.
    group_of_service: HashMap<ServiceKey, IpAddr>,
    /// Group keys by owner.
    by_owner: HashMap<String, BTreeSet<IpAddr>>,
    /// Keys of the groups nobody may announce.
    unowned: BTreeSet<IpAddr>,
    /// The live speakers the decisions were made with.
    live: BTreeSet<String>,
}

/// What an update changed.
#[derive(Debug, Default, PartialEq)]
pub struct Update {
    /// Decisions that no longer hold (taken apart or decided again).
    pub removed: Vec<Decision>,
    /// Keys of the decisions made (look them up with [`Planner::decision`]).
    pub added: Vec<IpAddr>,
}

impl Update {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

impl Planner {
    /// Every decision, by group key.
    pub fn decisions(&self) -> &BTreeMap<IpAddr, Decision> {
        &self.decisions
    }

    /// The decision of the group with key `key`.
    pub fn decision(&self, key: &IpAddr) -> Option<&Decision> {
        self.decisions.get(key)
    }

    /// Keys of the groups `node` owns.
    pub fn owned_by(&self, node: &str) -> impl Iterator<Item = &IpAddr> + '_ {
        self.by_owner.get(node).into_iter().flatten()
    }

    /// Keys of the groups nobody may announce.
    pub fn unowned(&self) -> &BTreeSet<IpAddr> {
        &self.unowned
    }

    /// Decides everything again from `snapshot` with the `live` speakers.
    pub fn rebuild(&mut self, snapshot: &Snapshot, live: &BTreeSet<String>) -> Update {
        let removed: Vec<Decision> = std::mem::take(&mut self.decisions).into_values().collect();
        self.group_of_ip.clear();
        self.group_of_service.clear();
        self.by_owner.clear();
        self.unowned.clear();
        self.live = live.clone();
        let mut update = Update {
            removed,
            added: Vec::new(),
        };
        for d in plan::plan(snapshot, live).decisions {
            update.added.push(d.group.key);
            self.insert(d);
        }
        update
    }

    /// `keys` changed in `snapshot` (added, removed or edited): regroups and decides the groups
    /// they were or are now in.
    pub fn services_changed(&mut self, snapshot: &Snapshot, keys: &BTreeSet<ServiceKey>) -> Update {
        let mut touched: BTreeSet<IpAddr> = BTreeSet::new();
        for key in keys {
            if let Some(g) = self.group_of_service.get(key) {
                touched.insert(*g);
            }
            for ip in snapshot.services.get(key).into_iter().flat_map(|s| &s.ips) {
                if let Some(g) = self.group_of_ip.get(ip) {
                    touched.insert(*g);
                }
            }
        }
        let mut update = Update::default();
        let mut regroup: BTreeSet<ServiceKey> = keys.clone();
        for g in touched {
            if let Some(d) = self.remove(&g) {
                regroup.extend(d.group.services.iter().cloned());
                update.removed.push(d);
            }
        }
        let mut pairs: Vec<Pair<'_>> = Vec::new();
        for svc in regroup.iter().filter_map(|k| snapshot.services.get(k)) {
            plan::pairs_of(snapshot, svc, &mut pairs, |_| {});
        }
        let decisions: Vec<Decision> = plan::groups(&pairs)
            .into_iter()
            .map(|members| plan::decide(snapshot, &self.live, &pairs, &members))
            .collect();
        for d in decisions {
            update.added.push(d.group.key);
            self.insert(d);
        }
        update
    }

    /// The live speakers are now `live`: decides again the groups this can change.
    pub fn live_changed(&mut self, snapshot: &Snapshot, live: &BTreeSet<String>) -> Update {
        if *live == self.live {
            return Update::default();
        }
        let joined: Vec<&String> = live.difference(&self.live).collect();
        if joined.len() > MAX_JOINED_INCREMENTAL {
            return self.rebuild(snapshot, live);
        }
        let mut affected: BTreeSet<IpAddr> = self.unowned.clone();
        for gone in self.live.difference(live) {
            affected.extend(self.owned_by(gone).copied());
        }
        if !joined.is_empty() {
            for (key, d) in &self.decisions {
                let Ok((owner, _)) = &d.owner else { continue };
                let scorer = election::Scorer::new(*key);
                let owner_rank = (scorer.score(owner), owner.as_str());
                let outranked = joined.iter().any(|j| {
                    election::ranks_before((scorer.score(j), j.as_str()), owner_rank).is_lt()
                });
                if outranked {
                    affected.insert(*key);
                }
            }
        }
        self.live = live.clone();
        let mut update = Update::default();
        for key in affected {
            let Some(old) = self.remove(&key) else {
                continue;
            };
            let mut pairs: Vec<Pair<'_>> = Vec::new();
            for svc in old
                .group
                .services
                .iter()
                .filter_map(|k| snapshot.services.get(k))
            {
                plan::pairs_of(snapshot, svc, &mut pairs, |_| {});
            }
            let members: Vec<usize> = (0..pairs.len()).collect();
            let d = plan::decide(snapshot, &self.live, &pairs, &members);
            update.removed.push(old);
            update.added.push(d.group.key);
            self.insert(d);
        }
        update
    }

    fn insert(&mut self, d: Decision) {
        let key = d.group.key;
        for ip in &d.group.ips {
            self.group_of_ip.insert(*ip, key);
        }
        for svc in &d.group.services {
            self.group_of_service.insert(svc.clone(), key);
        }
        match &d.owner {
            Ok((owner, _)) => {
                self.by_owner.entry(owner.clone()).or_default().insert(key);
            }
            Err(_) => {
                self.unowned.insert(key);
            }
        }
        self.decisions.insert(key, d);
    }

    fn remove(&mut self, key: &IpAddr) -> Option<Decision> {
        let d = self.decisions.remove(key)?;
        for ip in &d.group.ips {
            self.group_of_ip.remove(ip);
        }
        for svc in &d.group.services {
            self.group_of_service.remove(svc);
        }
        match &d.owner {
            Ok((owner, _)) => {
                if let Some(keys) = self.by_owner.get_mut(owner) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.by_owner.remove(owner);
                    }
                }
            }
            Err(_) => {
                self.unowned.remove(key);
            }
        }
        Some(d)
    }
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
