//! When the speaker plans again, and what it then does (pure): the rules of the main loop, fed
//! events by [`crate::run`], which carries out what a [`Step`] says.
//!
//! - The snapshot of the caches is rebuilt only after a watch reported a change
//!   ([`Replanner::sources_changed`]), and counts as new (a new *generation*) only when it differs
//!   from the last one: Node heartbeats and unrelated Service edits change objects without
//!   changing the snapshot, and need no new plan. Rebuilding takes 25 ms at 10,000 Services, so a
//!   peer's death replans from the last snapshot and failover does not pay for reading the caches.
//! - A plan is made when (snapshot generation, live speakers) differs from the last plan's, or
//!   when forced ([`Replanner::force`]: a status write failed, or the interfaces answered on
//!   changed, whose names appear in the conditions).
//! - When a speaker joins while others were already live (a peer came back, or this speaker was
//!   cut off and rejoined), everything owned is announced again: whoever stood in meanwhile may
//!   still be in clients' caches.
//! - The kernel check is given the handled addresses and interfaces only when the snapshot
//!   generation or the interfaces changed: who is live does not change them, so a failover's
//!   replan skips it.
//! - The conditions wanted are those of the last plan; the loop hands them to the status writer
//!   after every event, not only after a new plan (a condition another speaker overwrote while
//!   this one was cut off changes nothing in the plan, yet needs a write).
//! - The membership is told the peer list only when it changed.
//!
//! No rule depends on time, so nothing here reads a clock; the liveness rules that do take it
//! as an argument (`membership/view.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::eligibility::Interfaces;
use crate::hazard::watch::Handled;
use crate::membership::{LiveView, Peer, ViewSource};
use crate::model::Snapshot;
use crate::plan::{self, ServiceKey};
use crate::report::{self, Wanted};

/// The main loop's memory between events.
#[derive(Debug)]
pub struct Replanner {
    /// This node's name.
    me: String,
    /// The last snapshot read, and its generation (bumped when a read differs).
    snapshot: Snapshot,
    generation: u64,
    /// A watch reported a change since the last read.
    snapshot_stale: bool,
    /// (snapshot generation, live speakers) of the last plan.
    planned: Option<(u64, BTreeSet<String>)>,
    /// Plan at the next step even if nothing changed.
    forced: bool,
    /// The live speakers and the liveness source of the last step.
    last_live: BTreeSet<String>,
    last_source: ViewSource,
    /// (snapshot generation, interfaces) the kernel check was last given.
    kernel_checked: Option<(u64, Vec<String>)>,
    /// The conditions the last plan wants.
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
    /// New input for the kernel check, when it changed.
    pub kernel: Option<Handled>,
}

impl Replanner {
    /// The state before the first step of speaker `me`, whose membership was given `peers`.
    pub fn new(me: impl Into<String>, peers: Vec<Peer>) -> Replanner {
        Replanner {
            me: me.into(),
            snapshot: Snapshot::default(),
            generation: 0,
            snapshot_stale: true,
            planned: None,
            forced: false,
            last_live: BTreeSet::new(),
            last_source: ViewSource::Mesh,
            kernel_checked: None,
            wanted: BTreeMap::new(),
            peers,
        }
    }

    /// A watch reported a change: the snapshot must be read again before the next step.
    pub fn sources_changed(&mut self) {
        self.snapshot_stale = true;
    }

    /// Whether the loop must read a snapshot and hand it to [`Replanner::snapshot_read`].
    pub fn snapshot_stale(&self) -> bool {
        self.snapshot_stale
    }

    /// A snapshot read from the caches after a change: a new generation if it differs.
    pub fn snapshot_read(&mut self, fresh: Snapshot) {
        self.snapshot_stale = false;
        if fresh != self.snapshot {
            self.snapshot = fresh;
            self.generation += 1;
        }
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

        let input = (self.generation, view.live.clone());
        if !self.forced && self.planned.as_ref() == Some(&input) {
            return step;
        }
        self.forced = false;
        let plan = plan::plan(&self.snapshot, &view.live);
        let desired = plan
            .owned_by(&self.me)
            .flat_map(|d| {
                let interfaces = d
                    .owner
                    .as_ref()
                    .map(|(_, i)| i.clone())
                    .unwrap_or(Interfaces::All);
                d.group.ips.iter().map(move |ip| (*ip, interfaces.clone()))
            })
            .collect();
        self.wanted = report::wanted(&plan.decisions, &self.me, |d| {
            d.owner
                .as_ref()
                .map(|(_, allowed)| names_allowed(links, allowed))
                .unwrap_or_default()
        });
        let checked = (self.generation, links.to_vec());
        let kernel = (self.kernel_checked.as_ref() != Some(&checked)).then(|| Handled {
            ips: plan
                .decisions
                .iter()
                .flat_map(|d| d.group.ips.iter().map(|ip| (*ip, d.group.services.clone())))
                .collect(),
            interfaces: links.to_vec(),
        });
        if kernel.is_some() {
            self.kernel_checked = Some(checked);
        }
        self.planned = Some(input);
        step.replan = Some(Replan {
            desired,
            reannounce: rejoined,
            kernel,
        });
        step
    }
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
