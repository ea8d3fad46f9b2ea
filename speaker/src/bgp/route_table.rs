//! This node's routes kept up to date Service by Service (pure). A change to some Services
//! decides only those again; a change to nodes, pools or BGP objects (or the first snapshot)
//! decides every Service again. Either way the result equals [`decide`] over the whole
//! snapshot, which the tests check after every step.
//!
//! Each route remembers the Services that contribute to it, so a Service's routes can be taken
//! back without looking at the others; its attributes are the merge of theirs.

use std::collections::{BTreeMap, BTreeSet};

#[cfg(doc)]
use crate::bgp::routes::decide;
use crate::bgp::routes::{
    Attributes, NodeContext, Prefix, Problem, ServiceRoutes, merge_route, service_routes,
};
use crate::model::{Snapshot, SnapshotDelta};
use crate::plan::ServiceKey;

/// Contributions to one peer's routes: prefix, then the attributes each Service asks for
/// (a list: almost always one Service, and a map's node would cost ten times the memory).
type Contributions = BTreeMap<Prefix, Vec<(ServiceKey, Attributes)>>;

/// What one Service contributes.
#[derive(Debug)]
struct Held {
    routes: Vec<(String, Prefix, Attributes)>,
    problems: BTreeSet<Problem>,
}

/// The routes of this node to each of its peers, and the problems found deciding them.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Whether a full pass has run (until then every update is one).
    built: bool,
    /// What each Service contributes (only Services with routes or problems).
    by_service: BTreeMap<ServiceKey, Held>,
    /// By peer.
    contributions: BTreeMap<String, Contributions>,
    /// By peer: each prefix with its contributors' attributes merged.
    routes: BTreeMap<String, BTreeMap<Prefix, Attributes>>,
    /// Found in the advertisements (decided again on every update).
    config_problems: BTreeSet<Problem>,
    /// Found in Services' decisions, with how many Services found each.
    service_problems: BTreeMap<Problem, usize>,
}

impl RouteTable {
    /// Brings the table in line with `snapshot` after `delta`; returns the peers whose routes
    /// may have changed.
    pub fn update(
        &mut self,
        snapshot: &Snapshot,
        node_name: &str,
        delta: &SnapshotDelta,
    ) -> BTreeSet<String> {
        let (context, problems) = NodeContext::new(snapshot, node_name);
        self.config_problems = problems;
        let context = context.filter(|c| c.may_announce(snapshot));
        if !self.built || delta.everything {
            let mut touched: BTreeSet<String> = self.routes.keys().cloned().collect();
            *self = RouteTable {
                built: true,
                config_problems: std::mem::take(&mut self.config_problems),
                ..RouteTable::default()
            };
            if let Some(context) = &context {
                for svc in snapshot.services.values() {
                    touched
                        .extend(self.add(svc.key.clone(), service_routes(snapshot, context, svc)));
                }
            }
            return touched;
        }
        let mut touched = BTreeSet::new();
        for key in &delta.services {
            touched.extend(self.remove(key));
            if let (Some(context), Some(svc)) = (&context, snapshot.services.get(key)) {
                touched.extend(self.add(key.clone(), service_routes(snapshot, context, svc)));
            }
        }
        touched
    }

    /// The routes to each peer.
    pub fn routes(&self) -> &BTreeMap<String, BTreeMap<Prefix, Attributes>> {
        &self.routes
    }

    /// The problems found in the configuration and in the Services' decisions.
    pub fn problems(&self) -> BTreeSet<Problem> {
        let mut all = self.config_problems.clone();
        all.extend(self.service_problems.keys().cloned());
        all
    }

    /// Records `key`'s routes; returns the peers they go to.
    fn add(&mut self, key: ServiceKey, decided: ServiceRoutes) -> BTreeSet<String> {
        if decided.routes.is_empty() && decided.problems.is_empty() {
            return BTreeSet::new();
        }
        let mut touched = BTreeSet::new();
        for (peer, prefix, attrs) in &decided.routes {
            let contributors = self
                .contributions
                .entry(peer.clone())
                .or_default()
                .entry(*prefix)
                .or_default();
            match contributors.iter_mut().find(|(k, _)| *k == key) {
                Some((_, a)) => a.merge(attrs),
                None => contributors.push((key.clone(), attrs.clone())),
            }
            merge_route(&mut self.routes, peer, *prefix, attrs);
            touched.insert(peer.clone());
        }
        for p in &decided.problems {
            *self.service_problems.entry(p.clone()).or_default() += 1;
        }
        self.by_service.insert(
            key,
            Held {
                routes: decided.routes,
                problems: decided.problems,
            },
        );
        touched
    }

    /// Takes `key`'s routes back; returns the peers they went to.
    fn remove(&mut self, key: &ServiceKey) -> BTreeSet<String> {
        let Some(old) = self.by_service.remove(key) else {
            return BTreeSet::new();
        };
        for p in &old.problems {
            if let Some(n) = self.service_problems.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    self.service_problems.remove(p);
                }
            }
        }
        let mut touched = BTreeSet::new();
        for (peer, prefix, _) in &old.routes {
            touched.insert(peer.clone());
            let Some(by_prefix) = self.contributions.get_mut(peer) else {
                continue;
            };
            let Some(contributors) = by_prefix.get_mut(prefix) else {
                continue;
            };
            contributors.retain(|(k, _)| k != key);
            let table = self.routes.entry(peer.clone()).or_default();
            if contributors.is_empty() {
                by_prefix.remove(prefix);
                table.remove(prefix);
            } else {
                let mut merged = Attributes::default();
                for (_, a) in contributors.iter() {
                    merged.merge(a);
                }
                table.insert(*prefix, merged);
            }
            if by_prefix.is_empty() {
                self.contributions.remove(peer);
                self.routes.remove(peer);
            }
        }
        touched
    }
}

#[cfg(test)]
#[path = "route_table_tests.rs"]
mod tests;
