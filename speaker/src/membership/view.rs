//! Liveness decisions: which speakers are live, from what was heard and when. Pure: every method
//! takes the current `Instant`, so the rules are tested with synthetic times and no sockets.
//!
//! # Rules
//! - **Heard**: a peer whose last accepted Alive is less than `dead_after` old is live.
//! - **Suspect**: a peer silent for `suspect_after` (3/5 of `dead_after`: three heartbeats
//!   missed) is still live, but the task probes it directly, many times, until it answers or
//!   `dead_after` is reached: a lossy link must lose every heartbeat *and* every probe round trip
//!   before a live peer is declared dead.
//! - **Silent**: a peer heard before that has been silent for `dead_after` or more is dead.
//! - **Ended**: a peer whose process the kernel reported gone (its lifeline connection closed and
//!   a new connection was refused, see `lifeline.rs`) is dead at once. Heartbeats of that same
//!   process still in flight do not revive it; one from a new process (another boot id) does.
//! - **Slowness** (Lifeguard's local health): while this speaker sees its own timers fire late it
//!   is the slow one, and its silence verdicts are stretched: `suspect_after` and `dead_after`
//!   are multiplied by `1 + slowness`.
//! - **Left**: a peer that sent Leave is dead at once, until it sends Alive again (the packet
//!   layer only lets through packets newer than the Leave, so a replayed Alive cannot revive it).
//! - **Fallback**: when no packet at all has been accepted from any peer for `fallback_after`
//!   (counted from start when nothing was ever heard) and at least one peer never heard from has
//!   a Ready Node, the mesh is presumed unavailable for it (UDP blocked, wrong key, ...): the view
//!   is [`ViewSource::NodeFallback`] and peers never heard from count live when their Node is
//!   Ready. Evidence still wins: a peer heard and then silent stays dead, and so does one that
//!   sent Leave (authenticated, explicit statements outrank a Node's readiness, which lags by
//!   tens of seconds). Otherwise a two-node cluster whose other node crashed would fall back
//!   after `fallback_after` and count the crashed peer live again until its Node turns NotReady
//!   (about 40 s), leaving its addresses unannounced. The next accepted packet returns the view
//!   to the mesh.
//! - **Start-up grace**: until `fallback_after` has passed since start, a peer never heard from
//!   yet counts as live when its Node is Ready.
//! - The speaker itself is always live; peers removed from the peer list are forgotten.
//!
//! # Watched mode (more than [`WATCHERS`](super::topology::WATCHERS) peers)
//! Each peer is watched by [`WATCHERS`](super::topology::WATCHERS) observers (`topology.rs`); this speaker applies the rules
//! above only to the peers it watches (its *subjects*), and those verdicts become its votes.
//! - **Reported**: a peer is dead when a majority of its observers (this speaker included when
//!   it is one) hold a death vote that no later sign of life voids (`ballots.rs`).
//! - **Watched**: a peer this speaker does not watch and without such a majority is live.
//! - **Disputed**: a subject this speaker sees dead but the majority does not is live: the
//!   fault is more likely the link between the two than the peer.
//! - **Watching**: a peer that became a subject moments ago and has not been heard since is live
//!   for `dead_after` (then probed, then voted dead), so a new observer never votes at once.
//! - Left is still final at once (Leave goes to every peer), and so is the fallback.
//!
//! # Why the start-up grace
//! Without it a speaker that has just started has heard nobody, sees only itself, and elects
//! itself owner of every address for the first interval: gratuitous ARP for all of them, then a
//! second takeover back a few milliseconds later. With it, a fresh speaker starts from what the
//! Node objects say, and the mesh then refines the view:
//! - a speaker restarting while the others run sees them live at once (they are Ready) and hears
//!   them within one interval, since they keep sending to its node's address;
//! - two speakers starting together each count the other live from the first instant; each
//!   hears the other within one interval, and nothing changes;
//! - if the mesh never works, the view at the end of the grace is exactly the fallback view
//!   (self + Ready peers), so the switch to [`ViewSource::NodeFallback`] moves no address.
//!
//! The cost: a peer whose Node is still Ready but whose speaker is gone counts as live on a
//! fresh speaker for at most `fallback_after`; the other speakers already see it dead, so the
//! only effect is that the fresh speaker does not announce that peer's addresses for that long.
//! A peer heard once and then silent is dead even during the grace: the grace covers ignorance,
//! never evidence.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use super::ballots::{Ballots, Sign};
use super::packet::Report;
use super::topology::Topology;

/// The set of live speakers, as published on the membership watch channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveView {
    /// Node names of the live speakers; always contains this speaker's own node.
    pub live: BTreeSet<String>,
    /// Where the liveness came from.
    pub source: ViewSource,
}

/// Where a [`LiveView`] came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewSource {
    /// The membership mesh: heartbeats heard (plus the start-up grace).
    Mesh,
    /// No heartbeat accepted for `fallback_after`: the Node objects' readiness decides.
    NodeFallback,
}

/// Why a peer is live or dead at a given instant (used for decisions and log messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Alive accepted this long ago (less than `dead_after`). Live.
    Heard(Duration),
    /// Never heard, Node Ready, this speaker still within its start-up grace. Live.
    Grace,
    /// Mesh fallback, Node Ready. Live.
    NodeReady,
    /// Mesh fallback, Node not Ready. Dead.
    NodeNotReady,
    /// Silent for this long (at least `suspect_after`, less than `dead_after`): being probed.
    /// Live.
    Suspect(Duration),
    /// Heard before, silent for this long (at least `dead_after`). Dead.
    Silent(Duration),
    /// Its process ended (the kernel closed its lifeline) this long ago. Dead.
    Ended(Duration),
    /// Sent Leave this long ago. Dead.
    Left(Duration),
    /// Never heard and no grace applies. Dead.
    NeverHeard,
    /// Watched mode: this many of its observers (of the second number) report it dead. Dead.
    Reported(usize, usize),
    /// Watched mode: watched by others, no majority of them reports it dead. Live.
    Watched,
    /// Watched mode: this speaker watches it and sees it dead, but no majority agrees. Live.
    Disputed,
    /// Watched mode: this speaker started watching it this long ago and has not heard it
    /// since. Live.
    Watching(Duration),
}

impl Status {
    /// Whether a peer with this status is live.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Status::Heard(_)
                | Status::Suspect(_)
                | Status::Grace
                | Status::NodeReady
                | Status::Watched
                | Status::Disputed
                | Status::Watching(_)
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Heard(ago) => write!(f, "heartbeat accepted {} ms ago", ago.as_millis()),
            Status::Grace => f.write_str("not heard yet, Node Ready, within start-up grace"),
            Status::NodeReady => f.write_str("mesh unavailable, Node Ready"),
            Status::NodeNotReady => f.write_str("mesh unavailable, Node not Ready"),
            Status::Suspect(d) => write!(f, "silent for {} ms, probing", d.as_millis()),
            Status::Silent(d) => write!(f, "silent for {} ms", d.as_millis()),
            Status::Ended(ago) => write!(
                f,
                "process ended {} ms ago (lifeline closed by its kernel)",
                ago.as_millis()
            ),
            Status::Left(ago) => write!(f, "sent Leave {} ms ago", ago.as_millis()),
            Status::NeverHeard => f.write_str("never heard"),
            Status::Reported(votes, observers) => {
                write!(f, "reported dead by {votes} of its {observers} observers")
            }
            Status::Watched => f.write_str("watched by others, not reported dead"),
            Status::Disputed => {
                f.write_str("silent here, but most of its observers do not report it dead")
            }
            Status::Watching(d) => {
                write!(f, "watched for {} ms, not heard since", d.as_millis())
            }
        }
    }
}

/// What was last heard from a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heard {
    Never,
    Alive(Instant),
    Left(Instant),
    /// The process of this boot id ended.
    Ended(Instant, u64),
}

#[derive(Clone, Copy, Debug)]
struct PeerState {
    node_ready: bool,
    heard: Heard,
    /// Boot id of the last accepted Alive.
    boot: Option<u64>,
    /// Watched mode: since when this speaker watches it (`None`: not a subject).
    watched_since: Option<Instant>,
    /// Where it is in the topology (its index there).
    index: usize,
}

/// Who watches whom, from the live set it was computed with (watched mode only).
#[derive(Clone, Debug)]
struct Watch {
    /// The observers of every speaker, by index in the topology.
    observers: Vec<Vec<usize>>,
    live: BTreeSet<String>,
    /// The peers' watch was started or stopped after these observers were computed.
    marked: bool,
}

/// Largest [`View::set_slowness`]: silence verdicts are stretched at most ninefold.
pub const MAX_SLOWNESS: u32 = 8;

/// Liveness state of every current peer, seen from one speaker.
#[derive(Clone, Debug)]
pub struct View {
    me: String,
    started: Instant,
    dead_after: Duration,
    fallback_after: Duration,
    /// Lifeguard's local health multiplier minus one, 0..=[`MAX_SLOWNESS`].
    slowness: u32,
    peers: BTreeMap<String, PeerState>,
    /// When the last packet (Alive or Leave) from any peer was accepted.
    last_accepted: Option<Instant>,
    /// The monitoring rings over this speaker and its peers.
    topology: Topology,
    /// `None` in direct mode (at most [`WATCHERS`](super::topology::WATCHERS) peers).
    watch: Option<Watch>,
    /// Death votes and signs of life (watched mode).
    ballots: Ballots,
}

// === impl View ===

impl View {
    /// The view of speaker `me`, started at `started`, with no peers yet.
    pub fn new(
        me: impl Into<String>,
        started: Instant,
        dead_after: Duration,
        fallback_after: Duration,
    ) -> View {
        let me = me.into();
        View {
            topology: Topology::new([me.as_str()]),
            me,
            started,
            dead_after,
            fallback_after,
            slowness: 0,
            peers: BTreeMap::new(),
            last_accepted: None,
            watch: None,
            ballots: Ballots::default(),
        }
    }

    /// Replaces the peer list with `(node name, node ready)` pairs. Peers that stay keep what was
    /// heard from them; new ones start as never heard; missing ones are forgotten. This
    /// speaker's own name is ignored, and so is a repeated name.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = (String, bool)>) {
        let mut old = std::mem::take(&mut self.peers);
        let mut added = Vec::new();
        for (name, node_ready) in peers {
            if name == self.me || self.peers.contains_key(&name) {
                continue;
            }
            let previous = old.remove(&name);
            if previous.is_none() {
                added.push(name.clone());
            }
            let (heard, boot, watched_since) = previous.map_or((Heard::Never, None, None), |p| {
                (p.heard, p.boot, p.watched_since)
            });
            self.peers.insert(
                name,
                PeerState {
                    node_ready,
                    heard,
                    boot,
                    watched_since,
                    index: 0,
                },
            );
        }
        let names = self.peers.keys().map(String::as_str);
        self.topology = Topology::new(names.chain([self.me.as_str()]));
        for (name, peer) in &mut self.peers {
            peer.index = self.topology.index(name).unwrap_or(0);
        }
        let (me, peers) = (&self.me, &self.peers);
        self.ballots.retain(|n| n == me || peers.contains_key(n));
        if let Some(watch) = self.watch.take() {
            // New peers count as live for the choice of observers until the next settle says
            // otherwise; removed ones are gone.
            let mut live = watch.live;
            live.retain(|n| n == me || peers.contains_key(n));
            live.extend(added);
            self.observe(live);
        }
    }

    /// Whether `name` is a current peer (packets from anyone else are rejected).
    pub fn is_peer(&self, name: &str) -> bool {
        self.peers.contains_key(name)
    }

    /// Records an accepted Alive (or probe answer) from process `boot` of `name` at `now` (a
    /// test shorthand for [`View::heard`] without the sender's clock).
    #[cfg(test)]
    pub fn alive(&mut self, name: &str, boot: u64, now: Instant) -> bool {
        self.heard(name, Sign { boot, clock_ms: 0 }, now)
    }

    /// Records an accepted packet other than Leave from `name`, sent by process `sign.boot` at
    /// `sign.clock_ms` on its clock, received at `now`. Returns whether the live view may have
    /// changed (false when the peer was already live by heartbeat, the mesh was not silent and
    /// no vote on it is pending). Packets from names that are not peers, and those of a process
    /// that ended, are ignored.
    pub fn heard(&mut self, name: &str, sign: Sign, now: Instant) -> bool {
        let mesh_was_silent = self.mesh_silent(now);
        let dead_after = self.dead_after();
        let Some(peer) = self.peers.get_mut(name) else {
            return false;
        };
        if matches!(peer.heard, Heard::Ended(_, ended) if ended == sign.boot) {
            return false;
        }
        let was_live_by_heartbeat = matches!(
            peer.heard,
            Heard::Alive(t) if now.saturating_duration_since(t) < dead_after
        );
        peer.heard = Heard::Alive(now);
        peer.boot = Some(sign.boot);
        self.last_accepted = Some(now);
        // In watched mode a peer this speaker does not watch is live whatever it sends, unless
        // votes on it are pending (its packet may void them).
        let watched = self.watch.is_none() || peer.watched_since.is_some();
        self.ballots.sign(name, sign);
        mesh_was_silent || (watched && !was_live_by_heartbeat) || self.ballots.has_votes(name)
    }

    /// Records `report`, sent by the peer `reporter`. Returns whether the live view may have
    /// changed. Reports from names that are not peers, or on names that are neither peers nor
    /// this speaker, are ignored; so are reports on this speaker (see [`View::refuted`]).
    pub fn report(&mut self, reporter: &str, report: &Report) -> bool {
        if !self.is_peer(reporter) || !self.is_peer(&report.subject) {
            return false;
        }
        let last = Sign {
            boot: report.boot_id,
            clock_ms: report.clock_ms,
        };
        if report.dead {
            self.ballots.vote(reporter, &report.subject, last)
        } else {
            self.ballots.sign(&report.subject, last);
            self.ballots.retract(reporter, &report.subject)
        }
    }

    /// Whether this speaker's own sign `mine` (say, its last Join) already voids a death vote on
    /// it stamped `vote`, so that the vote needs no refutation.
    pub fn refuted(&self, vote: Sign, mine: Sign) -> bool {
        mine.voids(vote, self.dead_after_ms())
    }

    /// Records an accepted Leave from `name` at `now`. Returns whether the live view may have
    /// changed. Packets from names that are not peers are ignored.
    pub fn leave(&mut self, name: &str, now: Instant) -> bool {
        let Some(peer) = self.peers.get_mut(name) else {
            return false;
        };
        peer.heard = Heard::Left(now);
        self.last_accepted = Some(now);
        true
    }

    /// Records that process `boot` of `name` ended at `now` (its kernel closed the lifeline and
    /// refused a new one). Returns whether the live view may have changed. A statement about
    /// an older process than the one last heard changes nothing.
    pub fn ended(&mut self, name: &str, boot: u64, now: Instant) -> bool {
        let Some(peer) = self.peers.get_mut(name) else {
            return false;
        };
        if matches!(peer.heard, Heard::Left(_) | Heard::Ended(..))
            || peer.boot.is_some_and(|b| b != boot)
        {
            return false;
        }
        peer.heard = Heard::Ended(now, boot);
        true
    }

    /// The live view at `now` once this speaker's own votes and the observers agree with it:
    /// casts or takes back this speaker's votes on its subjects, and recomputes who watches whom
    /// while the live set moves (a few rounds at most). In direct mode the same as
    /// [`View::evaluate`].
    pub fn settle(&mut self, now: Instant) -> LiveView {
        for _ in 0..4 {
            if self.topology.is_direct() {
                if self.watch.take().is_some() {
                    // Back to the full mesh: peers this speaker did not watch were not sending
                    // to it, so their silence counts from now (they are probed, and answer,
                    // while their own peer lists catch up).
                    self.peers
                        .values_mut()
                        .for_each(|p| p.watched_since = Some(now));
                    let me = self.me.clone();
                    self.ballots.retain_votes_of(|r| r != me);
                }
                return self.evaluate(now);
            }
            if self.watch.is_none() {
                // Everyone counts live until reported dead: that is the first observer choice.
                let all = self.peers.keys().chain([&self.me]).cloned().collect();
                self.observe(all);
            }
            self.mark_subjects(now);
            self.cast_votes(now);
            let view = self.evaluate(now);
            if self.watch.as_ref().is_some_and(|w| w.live == view.live) {
                return view;
            }
            self.observe(view.live);
        }
        self.mark_subjects(now);
        self.cast_votes(now);
        self.evaluate(now)
    }

    /// Recomputes the observers with `live` as the live set.
    fn observe(&mut self, live: BTreeSet<String>) {
        let topology = &self.topology;
        let is_live: Vec<bool> = (0..topology.len())
            .map(|i| live.contains(topology.name(i)))
            .collect();
        let observers = topology.all_observers(&|i| is_live[i]);
        self.watch = Some(Watch {
            observers,
            live,
            marked: false,
        });
    }

    /// Starts or stops the watch on each peer as the observers say (once per observer choice).
    fn mark_subjects(&mut self, now: Instant) {
        let Some(watch) = &mut self.watch else {
            return;
        };
        if std::mem::replace(&mut watch.marked, true) {
            return;
        }
        let me = self.topology.index(&self.me);
        for peer in self.peers.values_mut() {
            let watched = me.is_some_and(|me| watch.observers[peer.index].contains(&me));
            peer.watched_since = match (watched, peer.watched_since) {
                (false, _) => None,
                (true, since) => since.or(Some(now)),
            };
        }
    }

    /// The observers of the speaker at `index` (empty in direct mode).
    fn observers_of(&self, index: Option<usize>) -> &[usize] {
        match (&self.watch, index) {
            (Some(w), Some(i)) => &w.observers[i],
            _ => &[],
        }
    }

    /// Votes on every subject seen dead here, takes back the vote on every other peer.
    fn cast_votes(&mut self, now: Instant) {
        let source = self.source(now);
        let dead: Vec<(String, bool)> = self
            .peers
            .iter()
            .map(|(name, p)| {
                let local = self.local_status(p, &source, now);
                let voting = p.watched_since.is_some() && votes_dead(local);
                (name.clone(), voting)
            })
            .collect();
        for (name, voting) in dead {
            if !voting {
                self.ballots.retract(&self.me, &name);
            } else if !self.ballots.has_vote(&self.me, &name) {
                let stamp = self.vote_stamp(&name);
                self.ballots.vote(&self.me, &name, stamp);
            }
        }
    }

    /// How this speaker's vote on `name` is stamped: the newest sign of it known; for a process
    /// whose end the lifeline told before any packet of it was heard, that process's boot id
    /// (see [`Sign::ended_unheard`]).
    fn vote_stamp(&self, name: &str) -> Sign {
        let newest = self.ballots.newest(name);
        match self.peers.get(name).map(|p| p.heard) {
            Some(Heard::Ended(_, boot)) if newest.boot != boot => Sign::ended_unheard(boot),
            _ => newest,
        }
    }

    /// This speaker's death votes, as reports to send (empty in direct mode).
    pub fn my_votes(&self) -> Vec<Report> {
        self.ballots
            .votes_by(&self.me)
            .map(|(subject, last)| Report {
                subject: subject.to_owned(),
                dead: true,
                boot_id: last.boot,
                clock_ms: last.clock_ms,
            })
            .collect()
    }

    /// The newest sign of life known of `name`.
    pub fn newest_sign(&self, name: &str) -> Sign {
        self.ballots.newest(name)
    }

    /// Whether every speaker watches every other one (at most [`WATCHERS`](super::topology::WATCHERS) peers).
    pub fn is_direct(&self) -> bool {
        self.topology.is_direct()
    }

    /// The peers this speaker watches: heartbeat silence, lifelines and probes apply to them.
    /// Every peer in direct mode.
    pub fn subjects(&self) -> impl Iterator<Item = &str> + '_ {
        let direct = self.watch.is_none();
        self.peers
            .iter()
            .filter(move |(_, p)| direct || p.watched_since.is_some())
            .map(|(name, _)| name.as_str())
    }

    /// The peers that watch this speaker: its heartbeats go to them. Every peer in direct mode.
    pub fn observers(&self) -> Vec<&str> {
        match &self.watch {
            None => self.peers.keys().map(String::as_str).collect(),
            Some(_) => self
                .observers_of(self.topology.index(&self.me))
                .iter()
                .map(|&i| self.topology.name(i))
                .collect(),
        }
    }

    fn dead_after_ms(&self) -> u64 {
        u64::try_from(self.dead_after.as_millis()).unwrap_or(u64::MAX)
    }

    /// Sets how slow this speaker sees itself (0: on time), capped at [`MAX_SLOWNESS`].
    /// Returns whether it changed.
    pub fn set_slowness(&mut self, slowness: u32) -> bool {
        let slowness = slowness.min(MAX_SLOWNESS);
        std::mem::replace(&mut self.slowness, slowness) != slowness
    }

    /// Silence after which a peer is dead, stretched by the slowness.
    pub fn dead_after(&self) -> Duration {
        self.dead_after.saturating_mul(1 + self.slowness)
    }

    /// Silence after which a peer is probed, stretched by the slowness.
    pub fn suspect_after(&self) -> Duration {
        (self.dead_after / 5)
            .saturating_mul(3)
            .saturating_mul(1 + self.slowness)
    }

    /// Peers being probed at `now` (silent for at least `suspect_after`, not yet dead).
    pub fn suspects(&self, now: Instant) -> impl Iterator<Item = &str> + '_ {
        let source = self.source(now);
        let direct = self.watch.is_none();
        self.peers
            .iter()
            .filter(move |(_, p)| direct || p.watched_since.is_some())
            .filter(move |(_, p)| matches!(self.local_status(p, &source, now), Status::Suspect(_)))
            .map(|(name, _)| name.as_str())
    }

    /// Where the view comes from at `now`.
    pub fn source(&self, now: Instant) -> ViewSource {
        let candidate = self
            .peers
            .values()
            .any(|p| p.node_ready && matches!(p.heard, Heard::Never));
        if candidate && self.mesh_silent(now) {
            ViewSource::NodeFallback
        } else {
            ViewSource::Mesh
        }
    }

    /// Status of peer `name` at `now`, or `None` if it is not a peer.
    pub fn status(&self, name: &str, now: Instant) -> Option<Status> {
        let peer = self.peers.get(name)?;
        Some(self.status_of(name, peer, &self.source(now), now))
    }

    /// The live view at `now`.
    pub fn evaluate(&self, now: Instant) -> LiveView {
        let source = self.source(now);
        let mut live: BTreeSet<String> = self
            .peers
            .iter()
            .filter(|(name, p)| self.status_of(name, p, &source, now).is_live())
            .map(|(name, _)| name.clone())
            .collect();
        live.insert(self.me.clone());
        LiveView { live, source }
    }

    /// The earliest instant after `now` at which [`View::evaluate`] may give a different answer
    /// without anything being heard or the peers changing, or `None` if there is none.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        self.expiries().filter(|t| *t > now).min()
    }

    /// Whether time alone may have changed [`View::evaluate`]'s answer after `since`, up to and
    /// including `now` (a timer that fired after the deadline it was set for moved on).
    pub fn expired_between(&self, since: Instant, now: Instant) -> bool {
        self.expiries().any(|t| since < t && t <= now)
    }

    /// Every instant at which a status may change by time alone: the silence deadlines of the
    /// subjects (non-subjects change only by what is heard), the end of the grace, the start
    /// of the fallback.
    fn expiries(&self) -> impl Iterator<Item = Instant> + '_ {
        let (suspect_after, dead_after) = (self.suspect_after(), self.dead_after());
        let direct = self.watch.is_none();
        let silences = self
            .peers
            .values()
            .filter(move |p| direct || p.watched_since.is_some())
            .flat_map(move |p| {
                let heard = match p.heard {
                    Heard::Alive(t) => Some(t),
                    Heard::Never | Heard::Left(_) | Heard::Ended(..) => None,
                };
                [heard, p.watched_since]
                    .into_iter()
                    .flatten()
                    .flat_map(move |t| [t.checked_add(suspect_after), t.checked_add(dead_after)])
            });
        let grace_end = self.started.checked_add(self.fallback_after);
        let fallback_start = self
            .last_accepted
            .unwrap_or(self.started)
            .checked_add(self.fallback_after);
        silences.flatten().chain(grace_end).chain(fallback_start)
    }

    fn mesh_silent(&self, now: Instant) -> bool {
        let since = self.last_accepted.unwrap_or(self.started);
        now.saturating_duration_since(since) >= self.fallback_after
    }

    fn in_grace(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) < self.fallback_after
    }

    /// A peer's status: this speaker's own verdict in direct mode; in watched mode, what its
    /// observers' votes make of it.
    fn status_of(&self, name: &str, peer: &PeerState, source: &ViewSource, now: Instant) -> Status {
        let local = self.local_status(peer, source, now);
        if self.watch.is_none() {
            return local;
        }
        if matches!(
            local,
            Status::Left(_) | Status::NodeReady | Status::NodeNotReady
        ) {
            return local;
        }
        let observers = self.observers_of(Some(peer.index));
        let reporters = observers.iter().map(|&i| self.topology.name(i));
        let votes = self.ballots.count(name, reporters, self.dead_after_ms());
        if !observers.is_empty() && votes > observers.len() / 2 {
            Status::Reported(votes, observers.len())
        } else if peer.watched_since.is_none() {
            Status::Watched
        } else if local.is_live() {
            local
        } else {
            Status::Disputed
        }
    }

    /// This speaker's own verdict on a peer, from what it heard (the whole story in direct
    /// mode).
    fn local_status(&self, peer: &PeerState, source: &ViewSource, now: Instant) -> Status {
        let since = |t: Instant| now.saturating_duration_since(t);
        match (peer.heard, source) {
            (Heard::Left(t), _) => Status::Left(since(t)),
            (Heard::Ended(t, _), _) => Status::Ended(since(t)),
            (Heard::Never, ViewSource::NodeFallback) if peer.node_ready => Status::NodeReady,
            (Heard::Never, ViewSource::NodeFallback) => Status::NodeNotReady,
            (Heard::Alive(t), _) => match peer.watched_since {
                // Watched since after it was last heard: its silence counts from then.
                Some(w) if w > t && since(w) < self.dead_after() => self.silence(since(w)),
                _ => match self.silence(since(t)) {
                    Status::Watching(ago) => Status::Heard(ago),
                    status => status,
                },
            },
            (Heard::Never, ViewSource::Mesh) if peer.node_ready && self.in_grace(now) => {
                Status::Grace
            }
            (Heard::Never, ViewSource::Mesh) => match peer.watched_since {
                Some(w) if since(w) < self.dead_after() => self.silence(since(w)),
                _ => Status::NeverHeard,
            },
        }
    }

    /// Watching, Suspect or Silent after `silent` without a packet.
    fn silence(&self, silent: Duration) -> Status {
        if silent < self.suspect_after() {
            Status::Watching(silent)
        } else if silent < self.dead_after() {
            Status::Suspect(silent)
        } else {
            Status::Silent(silent)
        }
    }
}

/// Whether a local verdict is a death vote.
fn votes_dead(local: Status) -> bool {
    matches!(
        local,
        Status::Silent(_) | Status::Ended(_) | Status::NeverHeard
    )
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "view_watched_tests.rs"]
mod watched_tests;
