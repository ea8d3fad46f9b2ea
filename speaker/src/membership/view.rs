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
}

impl Status {
    /// Whether a peer with this status is live.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Status::Heard(_) | Status::Suspect(_) | Status::Grace | Status::NodeReady
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
        View {
            me: me.into(),
            started,
            dead_after,
            fallback_after,
            slowness: 0,
            peers: BTreeMap::new(),
            last_accepted: None,
        }
    }

    /// Replaces the peer list with `(node name, node ready)` pairs. Peers that stay keep what was
    /// heard from them; new ones start as never heard; missing ones are forgotten. This
    /// speaker's own name is ignored, and so is a repeated name.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = (String, bool)>) {
        let mut old = std::mem::take(&mut self.peers);
        for (name, node_ready) in peers {
            if name == self.me || self.peers.contains_key(&name) {
                continue;
            }
            let (heard, boot) = old
                .remove(&name)
                .map_or((Heard::Never, None), |p| (p.heard, p.boot));
            self.peers.insert(
                name,
                PeerState {
                    node_ready,
                    heard,
                    boot,
                },
            );
        }
    }

    /// Whether `name` is a current peer (packets from anyone else are rejected).
    pub fn is_peer(&self, name: &str) -> bool {
        self.peers.contains_key(name)
    }

    /// Records an accepted Alive (or probe answer) from process `boot` of `name` at `now`.
    /// Returns whether the live view may have changed (false when the peer was already live by
    /// heartbeat and the mesh was not silent). Packets from names that are not peers, and those
    /// of a process that ended, are ignored.
    pub fn alive(&mut self, name: &str, boot: u64, now: Instant) -> bool {
        let mesh_was_silent = self.mesh_silent(now);
        let dead_after = self.dead_after();
        let Some(peer) = self.peers.get_mut(name) else {
            return false;
        };
        if matches!(peer.heard, Heard::Ended(_, ended) if ended == boot) {
            return false;
        }
        let was_live_by_heartbeat = matches!(
            peer.heard,
            Heard::Alive(t) if now.saturating_duration_since(t) < dead_after
        );
        peer.heard = Heard::Alive(now);
        peer.boot = Some(boot);
        self.last_accepted = Some(now);
        mesh_was_silent || !was_live_by_heartbeat
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
        self.peers
            .iter()
            .filter(move |(_, p)| matches!(self.status_of(p, &source, now), Status::Suspect(_)))
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
        Some(self.status_of(peer, &self.source(now), now))
    }

    /// The live view at `now`.
    pub fn evaluate(&self, now: Instant) -> LiveView {
        let source = self.source(now);
        let mut live: BTreeSet<String> = self
            .peers
            .iter()
            .filter(|(_, p)| self.status_of(p, &source, now).is_live())
            .map(|(name, _)| name.clone())
            .collect();
        live.insert(self.me.clone());
        LiveView { live, source }
    }

    /// The earliest instant after `now` at which [`View::evaluate`] may give a different answer
    /// without anything being heard or the peers changing, or `None` if there is none.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        let (suspect_after, dead_after) = (self.suspect_after(), self.dead_after());
        let expiries = self.peers.values().flat_map(|p| match p.heard {
            Heard::Alive(t) => [t.checked_add(suspect_after), t.checked_add(dead_after)],
            Heard::Never | Heard::Left(_) | Heard::Ended(..) => [None, None],
        });
        let grace_end = self.started.checked_add(self.fallback_after);
        let fallback_start = self
            .last_accepted
            .unwrap_or(self.started)
            .checked_add(self.fallback_after);
        expiries
            .flatten()
            .chain(grace_end)
            .chain(fallback_start)
            .filter(|t| *t > now)
            .min()
    }

    fn mesh_silent(&self, now: Instant) -> bool {
        let since = self.last_accepted.unwrap_or(self.started);
        now.saturating_duration_since(since) >= self.fallback_after
    }

    fn in_grace(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) < self.fallback_after
    }

    fn status_of(&self, peer: &PeerState, source: &ViewSource, now: Instant) -> Status {
        match (peer.heard, source) {
            (Heard::Left(t), _) => Status::Left(now.saturating_duration_since(t)),
            (Heard::Ended(t, _), _) => Status::Ended(now.saturating_duration_since(t)),
            (Heard::Never, ViewSource::NodeFallback) if peer.node_ready => Status::NodeReady,
            (Heard::Never, ViewSource::NodeFallback) => Status::NodeNotReady,
            (Heard::Alive(t), _) => {
                let ago = now.saturating_duration_since(t);
                if ago < self.suspect_after() {
                    Status::Heard(ago)
                } else if ago < self.dead_after() {
                    Status::Suspect(ago)
                } else {
                    Status::Silent(ago)
                }
            }
            (Heard::Never, ViewSource::Mesh) if peer.node_ready && self.in_grace(now) => {
                Status::Grace
            }
            (Heard::Never, ViewSource::Mesh) => Status::NeverHeard,
        }
    }
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
