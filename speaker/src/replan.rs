//! When the speaker plans again, and what it then does (pure): the rules of the main loop, fed
//! events by [`crate::run`], which carries out what a [`Step`] says.
//!
//! - The snapshot of the caches is read only after a watch reported a change
//!   ([`Replanner::sources_changed`]). What differs from the last one decides what is planned:
//!   changed Services re-plan only their groups, changed Nodes, pools or advertisements
//!   everything (see [`crate::planner`]); Node heartbeats and unrelated Service edits change
//!   objects without changing the snapshot, and plan nothing.
//! - A change of the live speakers re-plans only the groups it can move: a peer's death, those
//!   it owned; a newcomer, those it outranks the owner of. Failover reads no cache.
//! - [`Replanner::force`] (a status write failed, or the interfaces answered on changed, whose
//!   names appear in the conditions) re-derives this node's own conditions.
//! - When a speaker joins while others were already live (a peer came back, or this speaker was
//!   cut off and rejoined), everything owned is announced again: whoever stood in meanwhile may
//!   still be in clients' caches.
//! - The kernel check is told what changed in the handled addresses and the interfaces, and
//!   nothing when neither did (a failover moves owners, not addresses).
//! - The conditions wanted are those of the current plan; the loop hands them to the status
//!   writer after every event (a condition another speaker overwrote while this one was cut off
//!   changes nothing in the plan, yet needs a write).
//! - The membership is told the peer list only when it changed.
//!
//! No rule depends on time, so nothing here reads a clock; the liveness rules that do take it
//! as an argument (`membership/view.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::bgp;
use crate::eligibility::Interfaces;
use crate::hazard::watch::HandledChange;
use crate::membership::{LiveView, Peer, ViewSource};
use crate::model::{Snapshot, SnapshotDelta};
use crate::plan::{Decision, ServiceKey};
use crate::planner::{Planner, Update};
use crate::report::{self, Wanted};

/// The main loop's memory between events.
#[derive(Debug)]
pub struct Replanner {
    /// This node's name.
    me: String,
    /// The last snapshot read.
    snapshot: Snapshot,
    /// The plan over it.
    planner: Planner,
    /// A watch reported a change since the last read.
    snapshot_stale: bool,
    /// Services whose facts changed since the last step.
    changed_services: BTreeSet<ServiceKey>,
    /// Nodes, pools or advertisements changed since the last step (or nothing was planned yet).
    changed_everything: bool,
    /// Plan at the next step even if nothing changed.
    forced: bool,
    /// The live speakers and the liveness source of the last step.
    last_live: BTreeSet<String>,
    last_source: ViewSource,
    /// The interfaces the kernel check was last given.
    kernel_interfaces: Option<Vec<String>>,
    /// The addresses this node announces, and where.
    desired: BTreeMap<IpAddr, Interfaces>,
    /// The conditions the current plan wants this node to write.
    wanted: BTreeMap<ServiceKey, Wanted>,
    /// The peer list the membership was last given.
    peers: Vec<Peer>,
}

/// What one step found and decided.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// The liveness source, when it changed.
    pub source_changed: Option<ViewSource>,
    /// Speakers live now that were not at the last step.
    pub joined: Vec<String>,
    /// Speakers live at the last step that are not now.
    pub gone: Vec<String>,
    /// A new plan to carry out, if one was made.
    pub replan: Option<Replan>,
}

/// What to do after a new plan.
#[derive(Debug, PartialEq)]
pub struct Replan {
    /// The addresses this node announces now, and where ([`crate::announce::Announcer::apply`]).
    pub desired: BTreeMap<IpAddr, Interfaces>,
    /// Announce everything owned again (a speaker rejoined).
    pub reannounce: bool,
    /// What the kernel check must learn, when anything changed for it.
    pub kernel: Option<HandledChange>,
}

impl Replanner {
    /// The state before the first step of speaker `me`, whose membership was given `peers`.
    pub fn new(me: impl Into<String>, peers: Vec<Peer>) -> Replanner {
        Replanner {
            me: me.into(),
            snapshot: Snapshot::default(),
            planner: Planner::default(),
            snapshot_stale: true,
            changed_services: BTreeSet::new(),
            changed_everything: true,
            forced: false,
            last_live: BTreeSet::new(),
            last_source: ViewSource::Mesh,
            kernel_interfaces: None,
            desired: BTreeMap::new(),
            wanted: BTreeMap::new(),
            peers,
        }
    }

    /// A watch reported a change: the snapshot must be read again before the next step.
    pub fn sources_changed(&mut self) {
        self.snapshot_stale = true;
    }

    /// The snapshot the last step planned on.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Whether the loop must read a snapshot and hand it to [`Replanner::snapshot_read`].
    pub fn snapshot_stale(&self) -> bool {
        self.snapshot_stale
    }

    /// A snapshot read from the caches after a change: notes what differs from the last one.
    pub fn snapshot_read(&mut self, fresh: Snapshot) {
        self.snapshot_stale = false;
        let old = std::mem::replace(&mut self.snapshot, fresh);
        let new = &self.snapshot;
        if old.nodes != new.nodes
            || old.pools != new.pools
            || old.advertisements != new.advertisements
            || old.bgp != new.bgp
        {
            self.changed_everything = true;
        }
        if old.services != new.services {
            let keys: BTreeSet<&ServiceKey> =
                old.services.keys().chain(new.services.keys()).collect();
            self.changed_services.extend(
                keys.into_iter()
                    .filter(|k| old.services.get(*k) != new.services.get(*k))
                    .cloned(),
            );
        }
    }

    /// Brings the snapshot up to date in place (`update` says what it changed), after a
    /// watch reported a change: the cheap way of [`Replanner::snapshot_read`]. Returns what
    /// changed.
    pub fn update_snapshot(
        &mut self,
        update: impl FnOnce(&mut Snapshot) -> SnapshotDelta,
    ) -> SnapshotDelta {
        self.snapshot_stale = false;
        let delta = update(&mut self.snapshot);
        self.changed_everything |= delta.everything;
        self.changed_services.extend(delta.services.iter().cloned());
        delta
    }

    /// Plan at the next step even if neither the snapshot nor the live speakers changed.
    pub fn force(&mut self) {
        self.forced = true;
    }

    /// The peer list read after a watch change; `Some` when the membership must be told it.
    pub fn peers_read(&mut self, peers: Vec<Peer>) -> Option<Vec<Peer>> {
        if peers == self.peers {
            return None;
        }
        self.peers = peers.clone();
        Some(peers)
    }

    /// The conditions this speaker is responsible for, as of the last plan.
    pub fn wanted(&self) -> &BTreeMap<ServiceKey, Wanted> {
        &self.wanted
    }

    /// One pass of the loop with the live `view` and the names of the interfaces answered on
    /// now (`links`, [`crate::announce::Announcer::interface_names`]).
    pub fn step(&mut self, view: &LiveView, links: &[String]) -> Step {
        let mut step = Step::default();
        if view.source != self.last_source {
            self.last_source = view.source.clone();
            step.source_changed = Some(view.source.clone());
        }
        step.joined = view.live.difference(&self.last_live).cloned().collect();
        step.gone = self.last_live.difference(&view.live).cloned().collect();
        let rejoined = !self.last_live.is_empty() && !step.joined.is_empty();
        self.last_live = view.live.clone();

        let mut updates = Vec::new();
        if std::mem::take(&mut self.changed_everything) {
            self.changed_services.clear();
            updates.push(self.planner.rebuild(&self.snapshot, &view.live));
        } else {
            let changed = std::mem::take(&mut self.changed_services);
            if !changed.is_empty() {
                updates.push(self.planner.services_changed(&self.snapshot, &changed));
            }
            updates.push(self.planner.live_changed(&self.snapshot, &view.live));
        }
        let interfaces_changed = self.kernel_interfaces.as_deref() != Some(links);
        let forced = std::mem::take(&mut self.forced);
        if updates.iter().all(Update::is_empty) && !forced && !interfaces_changed {
            return step;
        }
        let mut handled = HandledDiff::default();
        for update in &updates {
            self.apply(update, links, &mut handled);
        }
        let mut kernel = handled.change();
        if forced || interfaces_changed {
            self.rederive_own(links);
        }
        if interfaces_changed {
            self.kernel_interfaces = Some(links.to_vec());
            kernel.interfaces = Some(links.to_vec());
        }
        step.replan = Some(Replan {
            desired: self.desired.clone(),
            reannounce: rejoined,
            kernel: (!kernel.is_empty()).then_some(kernel),
        });
        step
    }

    /// Carries `update` into the desired addresses, the wanted conditions and `handled`.
    fn apply(&mut self, update: &Update, links: &[String], handled: &mut HandledDiff) {
        for d in &update.removed {
            for ip in &d.group.ips {
                self.desired.remove(ip);
                handled.removed(*ip, &d.group.services);
            }
            for svc in &d.group.services {
                self.wanted.remove(svc);
            }
        }
        for key in &update.added {
            let Some(d) = self.planner.decision(key) else {
                continue;
            };
            for ip in &d.group.ips {
                handled.added(*ip, &d.group.services);
            }
            add_own(
                &self.me,
                d,
                links,
                &self.snapshot,
                &mut self.desired,
                &mut self.wanted,
            );
        }
    }

    /// Derives this node's desired addresses and conditions again (the interfaces' names
    /// changed, or a write must be retried).
    fn rederive_own(&mut self, links: &[String]) {
        let mine: Vec<&Decision> = self
            .planner
            .owned_by(&self.me)
            .chain(self.planner.unowned())
            .filter_map(|k| self.planner.decision(k))
            .collect();
        for d in mine {
            add_own(
                &self.me,
                d,
                links,
                &self.snapshot,
                &mut self.desired,
                &mut self.wanted,
            );
        }
    }
}

/// The handled addresses before and after one step's updates, for the kernel check.
#[derive(Debug, Default)]
struct HandledDiff {
    /// Each address's Services before the step (`None`: not handled), as first seen.
    was: BTreeMap<IpAddr, Option<BTreeSet<ServiceKey>>>,
    /// And after.
    now: BTreeMap<IpAddr, Option<BTreeSet<ServiceKey>>>,
}

impl HandledDiff {
    /// `ip`'s decision, which gave it `services`, was removed. (Removals come first: an address
    /// first seen here was handled with those Services before the step.)
    fn removed(&mut self, ip: IpAddr, services: &BTreeSet<ServiceKey>) {
        self.was.entry(ip).or_insert_with(|| Some(services.clone()));
        self.now.insert(ip, None);
    }

    /// `ip` is in a new decision, with `services`. (An address first seen here was not handled
    /// before the step: had it been, its old decision would have been removed first.)
    fn added(&mut self, ip: IpAddr, services: &BTreeSet<ServiceKey>) {
        self.was.entry(ip).or_insert(None);
        self.now.insert(ip, Some(services.clone()));
    }

    /// What differs, for the kernel check.
    fn change(self) -> HandledChange {
        let mut change = HandledChange::default();
        for (ip, now) in self.now {
            if self.was.get(&ip) == Some(&now) {
                continue;
            }
            match now {
                Some(services) => {
                    change.upserted.insert(ip, services);
                }
                None => {
                    change.removed.insert(ip);
                }
            }
        }
        change
    }
}

/// Adds what decision `d` asks of node `me`: its addresses if `me` owns it, and the conditions
/// `me` writes for it (as owner, or as the reporter of a group nobody announces).
fn add_own(
    me: &str,
    d: &Decision,
    links: &[String],
    snapshot: &Snapshot,
    desired: &mut BTreeMap<IpAddr, Interfaces>,
    wanted: &mut BTreeMap<ServiceKey, Wanted>,
) {
    if let Ok((owner, allowed)) = &d.owner
        && owner == me
    {
        for ip in &d.group.ips {
            desired.insert(*ip, allowed.clone());
        }
    }
    wanted.extend(report::wanted(
        [d],
        me,
        |d| {
            d.owner
                .as_ref()
                .map(|(_, allowed)| names_allowed(links, allowed))
                .unwrap_or_default()
        },
        |d| {
            let by = bgp::routes::announcers(snapshot, &d.group.ips, &d.group.services);
            bgp::routes::describe_announcers(&d.group.ips, &by)
        },
    ));
}

/// The names among `links` that `allowed` lets this node announce on.
fn names_allowed(links: &[String], allowed: &Interfaces) -> Vec<String> {
    links
        .iter()
        .filter(|name| allowed.allows(name))
        .cloned()
        .collect()
}

#[cfg(test)]
#[path = "replan_tests.rs"]
mod tests;
