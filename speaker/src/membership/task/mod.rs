//! The membership task: one per speaker, owning the socket, the view and the lifelines. It
//! receives and checks datagrams, keeps the view (`view.rs`) settled, and sends what the view
//! asks for (`send.rs`): heartbeats to this speaker's observers, probes to suspect subjects,
//! its death votes to everyone.

pub(super) mod send;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ring::hmac;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;
use tracing::{debug, info};

use super::ballots::Sign;
use super::fence::{Lease, Renewal};
use super::keys::KeyRing;
use super::lifeline::{self, Lifelines};
use super::packet::{self, Kind, Rejection, Report, Signer, Verifier};
use super::slowness::Slowness;
use super::transport::Socket;
use super::view::{self, View};
use super::{Config, LiveView, Metrics, Peer, ViewSource};

/// Probes of a suspect per `dead_after`: one every 10 ms with the defaults, so the 100 ms
/// between suspicion and death hold ten round trips.
const PROBES_PER_DEAD_AFTER: u32 = 25;
/// Most datagrams read in one go before a verdict (bounds the work a flood can cause).
const DRAIN_MAX: usize = 4096;
/// At most one debug log line about rejected datagrams or send errors per this period.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Logs at most once per [`LOG_EVERY`], counting what was not logged.
#[derive(Debug, Default)]
pub(super) struct RateLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// `Some(number suppressed since the last log)` if a line may be logged now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The membership task's state.
#[derive(Debug)]
pub(super) struct Task {
    pub(super) cfg: Config,
    pub(super) socket: Socket,
    /// TCP connections to the subjects that their kernels close when their processes die
    /// (`None` on a simulated network, which tells of deaths itself).
    pub(super) lifelines: Option<Lifelines>,
    /// Subjects whose process ended, from the lifelines.
    pub(super) ended: mpsc::UnboundedReceiver<lifeline::Ended>,
    pub(super) signer: Signer,
    pub(super) verifier: Verifier,
    /// The keys signed with and accepted, over a rotation.
    pub(super) keys: KeyRing,
    /// When the keys change next (see [`Task::apply_keys`]).
    pub(super) key_change_at: Option<Instant>,
    pub(super) view: View,
    /// How late this speaker's own heartbeat ticks fire.
    pub(super) slowness: Slowness,
    /// Where every peer listens, this speaker excluded.
    pub(super) peers: BTreeMap<String, SocketAddr>,
    /// The last published view.
    pub(super) current: LiveView,
    /// When the view must be evaluated again even if nothing is heard.
    pub(super) next_check: Option<Instant>,
    /// When it was evaluated last.
    pub(super) evaluated_at: Instant,
    /// When the suspects are probed next (`None`: no suspect).
    pub(super) next_probe: Option<Instant>,
    /// Datagrams to send to one peer each at the next turn of the loop (probe answers,
    /// votes for a joining peer).
    pub(super) unicasts: Vec<(send::Unicast, SocketAddr)>,
    /// Reports and Joins sent to every peer, each a few times over the next ticks.
    pub(super) outbox: send::Outbox,
    /// Subjects this speaker told everyone it sees dead (and has not taken back).
    pub(super) reported: BTreeSet<String>,
    /// The observers this speaker's heartbeats go to, as of the last evaluation.
    pub(super) observers: BTreeSet<String>,
    /// This speaker as stamped in its last Join, and when it was sent (`None`: never).
    pub(super) joined: Option<(Sign, Instant)>,
    /// While this speaker may answer (published to `cfg.fence`).
    pub(super) lease: Lease,
    /// When answering resumes after a fence.
    pub(super) resume_at: Option<Instant>,
    /// Bumped when answering resumes after a fence.
    pub(super) fence_lifted: watch::Sender<u64>,
    pub(super) view_tx: watch::Sender<LiveView>,
    pub(super) metrics: Metrics,
    /// Limits debug logs of rejected datagrams.
    pub(super) reject_log: RateLimit,
    /// Limits debug logs of socket errors.
    pub(super) io_log: RateLimit,
}

// === impl Task ===

impl Task {
    pub(super) async fn run(
        mut self,
        mut peers_rx: watch::Receiver<Vec<Peer>>,
        mut keys_rx: watch::Receiver<Vec<u8>>,
        mut stop_rx: oneshot::Receiver<()>,
    ) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut buf = [0u8; packet::MAX_LEN + 1];
        loop {
            if !self.unicasts.is_empty() {
                self.send_unicasts().await;
            }
            if self.outbox.due() {
                self.flush_outbox().await;
            }
            let check = self.next_check.map(tokio::time::Instant::from_std);
            let probe = self.next_probe.map(tokio::time::Instant::from_std);
            let resume = self.resume_at.map(tokio::time::Instant::from_std);
            let key_change = self.key_change_at.map(tokio::time::Instant::from_std);
            tokio::select! {
                stop = &mut stop_rx => {
                    if stop.is_ok() {
                        self.send_leave().await;
                    }
                    info!(node = %self.cfg.node, graceful = stop.is_ok(), "membership stopped");
                    return;
                }
                changed = peers_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let peers = peers_rx.borrow_and_update().clone();
                    if self.set_peers(peers) {
                        // New addresses hear from this speaker now, not an interval later.
                        tick.reset_immediately();
                    }
                }
                changed = keys_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let key = keys_rx.borrow_and_update().clone();
                    if self.keys.offer(key, super::now()) {
                        info!(
                            window_s = self.cfg.key_rotation_window.as_secs(),
                            "membership key changed: accepting both keys, signing with the new one after the window, retiring the old one after another"
                        );
                        self.apply_keys(super::now());
                    }
                }
                _ = sleep_until(key_change), if key_change.is_some() => {
                    let now = super::now();
                    self.keys.settle(now);
                    self.apply_keys(now);
                    if self.keys.next_change(now).is_some() {
                        info!("membership key rotation: signing with the new key, still accepting the old one");
                    } else {
                        info!("membership key rotation done: the old key is no longer accepted");
                    }
                }
                scheduled = tick.tick() => {
                    let now = super::now();
                    self.slowness.record(now, now.saturating_duration_since(scheduled.into_std()));
                    self.send_heartbeats().await;
                    self.outbox.tick();
                    // The round ran on time: what the fence guards against is this speaker not
                    // running (paused, starved), not a send the network refused. A partition
                    // leaves each side answering the clients it reaches, as before.
                    self.renew_lease(now);
                    let level = self.slowness.level(now);
                    self.metrics.slowness.set(i64::from(level));
                    if self.view.set_slowness(level) {
                        self.drain(&mut buf);
                        self.refresh(super::now());
                    }
                }
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => {
                        // What else is waiting is handled before one verdict on it all: a burst
                        // of reports costs one evaluation.
                        let changed = self.on_datagram(&buf[..len], from) | self.drain(&mut buf);
                        if changed {
                            self.refresh(super::now());
                        }
                    }
                    Err(e) => {
                        if let Some(suppressed) = self.io_log.allow(super::now()) {
                            debug!(error = %e, suppressed, "membership receive failed");
                        }
                    }
                },
                _ = sleep_until(check), if check.is_some() => {
                    // Heartbeats waiting in the socket count before any silence verdict: after
                    // a pause of this task they are there, and the peers were not silent.
                    let heard = self.drain(&mut buf);
                    let now = super::now();
                    let slower = self.view.set_slowness(self.slowness.level(now));
                    if heard || slower || self.view.expired_between(self.evaluated_at, now) {
                        self.refresh(now);
                    } else {
                        // The deadline moved on (its peer was heard): nothing to evaluate.
                        self.next_check = self.view.next_change(now);
                    }
                }
                _ = sleep_until(probe), if probe.is_some() => self.probe_suspects().await,
                _ = sleep_until(resume), if resume.is_some() => {
                    self.resume_at = None;
                    self.metrics.fenced.set(0);
                    info!("answering again: peers have heard this speaker since its fence");
                    self.fence_lifted.send_modify(|n| *n += 1);
                }
                Some(ended) = self.ended.recv() => {
                    let now = super::now();
                    if self.view.ended(&ended.node, ended.boot, now) {
                        self.refresh(now);
                    }
                }
            }
        }
    }

    /// Signs and verifies with the key ring's keys at `now`.
    fn apply_keys(&mut self, now: Instant) {
        let key = |bytes: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, bytes);
        self.signer.set_key(key(self.keys.signing(now)));
        // Kept, not recomputed from the clock on every pass: a pass that comes just after the
        // switch must still carry it out (the next change from then on would be the retirement).
        self.key_change_at = self.keys.next_change(now);
        let accepted: Vec<hmac::Key> = self.keys.accepted(now).into_iter().map(key).collect();
        self.verifier.set_keys(accepted.clone());
        if let Some(lifelines) = &self.lifelines {
            lifelines.set_keys(lifeline::Keys {
                signing: key(self.keys.signing(now)),
                accepted,
            });
        }
    }

    /// Applies a new peer list; returns whether an address was added.
    fn set_peers(&mut self, peers: Vec<Peer>) -> bool {
        let me = &self.cfg.node;
        let mut targets = BTreeMap::new();
        for p in &peers {
            if &p.name != me {
                targets.entry(p.name.clone()).or_insert(p.addr);
            }
        }
        let added = targets
            .iter()
            .any(|(name, addr)| self.peers.get(name) != Some(addr));
        self.peers = targets;
        self.view
            .set_peers(peers.into_iter().map(|p| (p.name, p.node_ready)));
        let view = &self.view;
        self.verifier
            .forget(self.socket.unix_ms(), |n| view.is_peer(n));
        self.reported.retain(|n| view.is_peer(n));
        if self.joined.is_none() && !self.view.is_direct() {
            // Everyone learns this process is live, and answers with its death votes.
            self.join(super::now());
        }
        self.refresh(super::now());
        added
    }

    /// Queues a Join to every peer (refuting a report of this speaker's death, or starting).
    fn join(&mut self, now: Instant) {
        let sign = Sign {
            boot: self.signer.boot_id(),
            clock_ms: self.signer.clock(self.socket.unix_ms()),
        };
        self.joined = Some((sign, now));
        self.outbox.queue(send::Broadcast::Join);
    }

    /// A heartbeat round went out at `sent`: renews the lease; after a fence, says why and when
    /// answering resumes.
    fn renew_lease(&mut self, sent: Instant) {
        let renewal = self
            .lease
            .renew(sent, self.cfg.dead_after, self.cfg.interval);
        self.cfg.fence.set(self.lease);
        if let Renewal::Resumed { fenced_for } = renewal {
            self.metrics.fences.inc();
            self.metrics.fenced.set(1);
            self.resume_at = Some(self.lease.from);
            tracing::warn!(
                fenced_ms = fenced_for.as_millis(),
                late_ms = (fenced_for + self.cfg.dead_after).as_millis(),
                "this speaker could not send heartbeats in time (paused, or starved of CPU): it \
                 stopped answering before its peers could declare it dead and take over, and \
                 answers again one interval after this heartbeat"
            );
        }
    }

    /// Handles every datagram already in the socket (at most [`DRAIN_MAX`]) without waiting.
    /// Returns whether the view may have changed.
    fn drain(&mut self, buf: &mut [u8]) -> bool {
        let mut changed = false;
        for _ in 0..DRAIN_MAX {
            match self.socket.try_recv_from(buf) {
                Ok((len, from)) => changed |= self.on_datagram(&buf[..len], from),
                Err(_) => break,
            }
        }
        changed
    }

    /// Sends a Probe to every suspect, and schedules the next round while any is left.
    async fn probe_suspects(&mut self) {
        let now = super::now();
        let suspects: Vec<SocketAddr> = self
            .view
            .suspects(now)
            .filter_map(|name| self.peers.get(name).copied())
            .collect();
        if suspects.is_empty() {
            self.next_probe = None;
            return;
        }
        self.send_probes(&suspects).await;
        self.next_probe = now.checked_add(self.probe_interval());
    }

    fn probe_interval(&self) -> Duration {
        (self.view.dead_after() / PROBES_PER_DEAD_AFTER).max(Duration::from_millis(1))
    }

    /// Handles one datagram; returns whether the view may have changed.
    fn on_datagram(&mut self, buf: &[u8], from: SocketAddr) -> bool {
        let now = super::now();
        let view = &self.view;
        let checked = self
            .verifier
            .check(buf, self.socket.unix_ms(), |n| view.is_peer(n));
        let accepted = match checked {
            Ok(accepted) => accepted,
            Err(rejection) => {
                self.on_rejected(rejection, from, now);
                return false;
            }
        };
        self.metrics.received("accepted");
        let packet = accepted.packet;
        let peer = packet.node.as_str();
        if accepted.restarted {
            info!(peer = %peer, %from, "membership peer restarted (new boot id)");
            if let Some(l) = &self.lifelines {
                l.dial_now(peer);
            }
        }
        let sign = Sign {
            boot: packet.boot_id,
            clock_ms: packet.sent_at_ms,
        };
        match packet.kind {
            Kind::Leave => self.view.leave(peer, now),
            Kind::Alive => self.view.heard(peer, sign, now),
            Kind::Probe => {
                self.answer(peer, send::Unicast::Alive);
                self.view.heard(peer, sign, now)
            }
            Kind::Join => {
                for vote in self.view.my_votes() {
                    self.answer(peer, send::Unicast::Report(vote));
                }
                self.view.heard(peer, sign, now)
            }
            Kind::Report => {
                let heard = self.view.heard(peer, sign, now);
                match &packet.report {
                    Some(report) if report.subject == self.cfg.node => {
                        self.on_report_of_my_death(report, now);
                        heard
                    }
                    Some(report) => self.view.report(peer, report) || heard,
                    None => heard,
                }
            }
        }
    }

    /// Queues `unicast` to `peer`, if it is one.
    fn answer(&mut self, peer: &str, unicast: send::Unicast) {
        if let Some(addr) = self.peers.get(peer) {
            self.unicasts.push((unicast, *addr));
        }
    }

    /// An observer reports this speaker dead: unless the last Join already refutes it, or one
    /// went out less than an interval ago, everyone hears this process is live.
    fn on_report_of_my_death(&mut self, report: &Report, now: Instant) {
        if !report.dead {
            return;
        }
        let vote = Sign {
            boot: report.boot_id,
            clock_ms: report.clock_ms,
        };
        let recent = self.joined.is_some_and(|(mine, at)| {
            self.view.refuted(vote, mine) || now.saturating_duration_since(at) < self.cfg.interval
        });
        if !recent {
            info!("an observer reports this speaker dead: telling every peer it is live");
            self.join(now);
        }
    }

    fn on_rejected(&mut self, rejection: Rejection, from: SocketAddr, now: Instant) {
        self.metrics.received(rejection.metric_label());
        if let Some(suppressed) = self.reject_log.allow(now) {
            debug!(%from, reason = %rejection, suppressed, "membership datagram rejected");
        }
    }

    /// Re-evaluates the view; publishes, logs and updates the metrics if it changed.
    fn refresh(&mut self, now: Instant) {
        let new = self.view.settle(now);
        self.evaluated_at = now;
        self.next_check = self.view.next_change(now);
        self.publish_votes();
        self.greet_new_observers();
        let subjects: Vec<(String, SocketAddr)> = self
            .view
            .subjects()
            .filter_map(|name| Some((name.to_owned(), *self.peers.get(name)?)))
            .collect();
        self.metrics
            .watching
            .set(i64::try_from(subjects.len()).unwrap_or(i64::MAX));
        if let Some(l) = &self.lifelines {
            l.set_peers(subjects);
        }
        if self.next_probe.is_none() && self.view.suspects(now).next().is_some() {
            self.next_probe = Some(now);
        }
        if new == self.current {
            return;
        }
        for up in new.live.difference(&self.current.live) {
            if let Some(l) = &self.lifelines {
                l.dial_now(up);
            }
            let reason = self.view.status(up, now);
            info!(peer = %up, reason = %DisplayStatus(reason), "membership peer up");
        }
        for down in self.current.live.difference(&new.live) {
            let reason = self.view.status(down, now);
            match reason {
                Some(view::Status::Left(_)) => self.metrics.died("left"),
                Some(view::Status::Ended(_)) => self.metrics.died("ended"),
                Some(view::Status::Silent(_)) => self.metrics.died("silent"),
                Some(view::Status::Reported(..)) => self.metrics.died("reported"),
                _ => {}
            }
            info!(peer = %down, reason = %DisplayStatus(reason), "membership peer down");
        }
        if new.source != self.current.source {
            match new.source {
                ViewSource::NodeFallback => info!(
                    silent_for_ms = self.cfg.fallback_after.as_millis(),
                    "membership fallback on: no heartbeat accepted, live speakers taken from \
                     Node readiness (check that UDP to the membership port is allowed between \
                     nodes and that every speaker has the same key)"
                ),
                ViewSource::Mesh => info!("membership fallback off: heartbeats accepted again"),
            }
        }
        let peers = i64::try_from(new.live.len().saturating_sub(1)).unwrap_or(i64::MAX);
        self.metrics.live_peers.set(peers);
        self.metrics
            .fallback
            .set(i64::from(new.source == ViewSource::NodeFallback));
        self.current = new.clone();
        self.view_tx.send_replace(new);
    }

    /// A heartbeat at once to each observer this speaker did not have at the last evaluation:
    /// a new observer (say, one that just restarted) must hear it before it may vote, or its
    /// vote could only say "never heard".
    fn greet_new_observers(&mut self) {
        let observers: BTreeSet<String> = self
            .view
            .observers()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let new: Vec<String> = observers.difference(&self.observers).cloned().collect();
        for name in new {
            self.answer(&name, send::Unicast::Alive);
        }
        self.observers = observers;
    }

    /// Tells everyone about changes in this speaker's death votes: new ones, and the ones it
    /// takes back (the subject was heard again, or is no longer watched by this speaker).
    fn publish_votes(&mut self) {
        let votes: BTreeMap<String, Report> = self
            .view
            .my_votes()
            .into_iter()
            .map(|r| (r.subject.clone(), r))
            .collect();
        for (subject, vote) in &votes {
            if self.reported.insert(subject.clone()) {
                self.outbox.queue(send::Broadcast::Report(vote.clone()));
            }
        }
        let taken_back: Vec<String> = self
            .reported
            .iter()
            .filter(|s| !votes.contains_key(*s))
            .cloned()
            .collect();
        for subject in taken_back {
            self.reported.remove(&subject);
            if self.view.is_peer(&subject) {
                let last = self.view.newest_sign(&subject);
                self.outbox.queue(send::Broadcast::Report(Report {
                    subject,
                    dead: false,
                    boot_id: last.boot,
                    clock_ms: last.clock_ms,
                }));
            }
        }
    }
}

/// A peer's status for a log line (`None`: no longer a peer).
struct DisplayStatus(Option<view::Status>);

impl fmt::Display for DisplayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(status) => status.fmt(f),
            None => f.write_str("removed from the peer list"),
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
