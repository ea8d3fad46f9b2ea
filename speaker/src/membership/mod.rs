//! Speaker membership: which speakers are live, learned from authenticated UDP heartbeats, with
//! the Node objects as the fallback.
//!
//! ```text
//!  Node watch --set_peers--> +------------------- task (one per speaker) ---------------------+
//!                            | every interval: Alive --sign--> unicast to every peer (UDP)    |
//!  peers' Alive/Leave ------>| recv -> Verifier (packet/: tag, peer, skew, replay)           |
//!                            |      -> View (view.rs: pure liveness rules)                    |
//!                            | timer at View::next_change -> re-evaluate                      |
//!                            +--> watch::Receiver<LiveView> (published only when it changes)  |
//!  leave() ----------------> Leave x3 to every peer, task ends                                |
//!  rotate_key() ------------> KeyRing (keys.rs: both keys accepted over a window, no downtime)|
//! ```
//!
//! With the defaults (Alive every 50 ms, dead after 250 ms of silence) a crashed speaker is seen
//! dead 250 ms after its last heartbeat, i.e. between 200 and 250 ms after the crash plus
//! scheduling delay; a speaker that stops with [`Membership::leave`] is seen dead as soon as its
//! Leave arrives. The liveness rules, the fallback to Node readiness and the start-up grace are
//! described in `view.rs`; the wire format in `packet/mod.rs`.

mod config;
mod fence;
pub mod keys;
mod lifeline;
mod metrics;
pub mod packet;
mod slowness;
mod view;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::hmac;
use ring::rand::SystemRandom;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info};

pub use config::{Config, MIN_KEY_LEN, read_key_file};
pub use fence::Fence;
pub use metrics::{Metrics, ResultLabels};
pub use view::{LiveView, ViewSource};

use fence::{Lease, Renewal};
use keys::KeyRing;
use lifeline::Lifelines;
use packet::{Kind, Rejection, Signer, Verifier};
use slowness::Slowness;
use view::View;

/// How many times [`Membership::leave`] sends Leave to every peer.
const LEAVE_REPEATS: usize = 3;
/// Pause between the Leave repeats.
const LEAVE_GAP: Duration = Duration::from_millis(5);
/// How often the key file is read again (a Secret volume changes by an atomic symlink swap,
/// which file watches see unreliably; a 2 s poll of a 32-byte file costs nothing).
pub const KEY_FILE_POLL: Duration = Duration::from_secs(2);
/// Probes of a suspect per `dead_after`: one every 10 ms with the defaults, so the 100 ms
/// between suspicion and death hold ten round trips.
const PROBES_PER_DEAD_AFTER: u32 = 25;
/// Most datagrams read in one go before a verdict (bounds the work a flood can cause).
const DRAIN_MAX: usize = 4096;
/// At most one debug log line about rejected datagrams or send errors per this period.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Another speaker, from its Node object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Node name.
    pub name: String,
    /// Where its speaker listens (node address and the membership port).
    pub addr: SocketAddr,
    /// The Node's `Ready` condition is `True`.
    pub node_ready: bool,
}

/// A running membership task. Dropping it stops the task without sending Leave (peers then see
/// this speaker dead after `dead_after`); [`Membership::leave`] stops it gracefully.
#[derive(Debug)]
pub struct Membership {
    peers: watch::Sender<Vec<Peer>>,
    keys: watch::Sender<Vec<u8>>,
    /// Reads the key file again while the membership runs.
    _key_poll: Option<AbortOnDrop>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    local_addr: SocketAddr,
    fence_lifted: watch::Receiver<u64>,
}

// === impl Membership ===

impl Membership {
    /// Binds the UDP socket and spawns the membership task. The receiver holds the current
    /// [`LiveView`] (at first: this speaker only) and changes only when the view changes; it is
    /// closed when the task ends. Call [`Membership::set_peers`] before acting on the view.
    ///
    /// Errors: `InvalidInput` for bad settings (key shorter than 16 bytes, ...), or the bind
    /// error.
    pub async fn start(
        cfg: Config,
        metrics: Metrics,
    ) -> io::Result<(Membership, watch::Receiver<LiveView>)> {
        cfg.validate()?;
        let socket = UdpSocket::bind(cfg.bind).await?;
        let local_addr = socket.local_addr()?;
        // The lifelines listen on the same port, over TCP.
        let listener = TcpListener::bind(local_addr).await?;
        let boot_id = ring::rand::generate::<[u8; 8]>(&SystemRandom::new())
            .map(|b| u64::from_be_bytes(b.expose()))
            .map_err(|_| io::Error::other("no system randomness for the membership boot id"))?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &cfg.key);

        let view = View::new(
            cfg.node.clone(),
            Instant::now(),
            cfg.dead_after,
            cfg.fallback_after,
        );
        let current = view.evaluate(Instant::now());
        let (view_tx, view_rx) = watch::channel(current.clone());
        let (peers_tx, peers_rx) = watch::channel(Vec::new());
        let (keys_tx, keys_rx) = watch::channel(cfg.key.clone());
        let (stop_tx, stop_rx) = oneshot::channel();
        let (lifted_tx, lifted_rx) = watch::channel(0);
        let lease = Lease::new(Instant::now(), cfg.dead_after, cfg.interval);
        cfg.fence.set(lease);
        metrics.live_peers.set(0);
        metrics.fenced.set(0);
        metrics.fallback.set(0);
        info!(node = %cfg.node, %local_addr, boot_id, "membership started");

        let key_poll = cfg
            .key_file
            .clone()
            .map(|path| AbortOnDrop(tokio::spawn(poll_key_file(path, keys_tx.clone()))));
        let lifeline_keys = lifeline::Keys {
            signing: key.clone(),
            accepted: vec![key.clone()],
        };
        let (lifelines, ended) = Lifelines::start(
            listener,
            &cfg.node,
            boot_id,
            lifeline_keys,
            metrics.lifelines.clone(),
        );
        let task = Task {
            lifelines,
            ended,
            signer: Signer::new(key.clone(), cfg.node.clone(), boot_id),
            verifier: Verifier::new(key, cfg.max_clock_skew),
            keys: KeyRing::new(cfg.key.clone(), cfg.key_rotation_window),
            key_change_at: None,
            socket,
            slowness: Slowness::new(cfg.interval, cfg.dead_after),
            view,
            peers: Vec::new(),
            current,
            next_check: None,
            next_probe: None,
            probe_answers: Vec::new(),
            lease,
            resume_at: None,
            fence_lifted: lifted_tx,
            view_tx,
            metrics,
            reject_log: RateLimit::default(),
            io_log: RateLimit::default(),
            cfg,
        };
        let task = tokio::spawn(task.run(peers_rx, keys_rx, stop_rx));
        let membership = Membership {
            peers: peers_tx,
            keys: keys_tx,
            _key_poll: key_poll,
            stop: stop_tx,
            task,
            local_addr,
            fence_lifted: lifted_rx,
        };
        Ok((membership, view_rx))
    }

    /// Replaces the peer list (this speaker's own node, by name, is ignored).
    pub fn set_peers(&self, peers: Vec<Peer>) {
        self.peers.send_replace(peers);
    }

    /// Offers the shared key as read now (say, from the Secret's file): a new key is accepted
    /// at once and signed with after the rotation window (see `keys.rs`); the same key changes
    /// nothing. Keys shorter than [`MIN_KEY_LEN`] are ignored with a warning.
    pub fn rotate_key(&self, key: Vec<u8>) {
        offer_key(&self.keys, key);
    }

    /// The bound UDP address (the lifelines listen on the same port, over TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Changes each time this speaker answers again after a fence: the moment to announce every
    /// owned address again, since peers stood in for it meanwhile.
    pub fn fence_lifted(&self) -> watch::Receiver<u64> {
        self.fence_lifted.clone()
    }

    /// Graceful stop: sends Leave to every peer three times, a few ms apart, and ends the task.
    pub async fn leave(self) {
        // An error means the task already ended; there is nothing left to stop.
        let _ = self.stop.send(());
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            tracing::error!(error = %e, "membership task panicked");
        }
    }

    /// Stops the task abruptly, as a crash would: no Leave.
    #[cfg(test)]
    fn kill(self) {
        self.task.abort();
    }
}

/// A task aborted when this is dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `key` to the membership task if it differs from the last one sent.
fn offer_key(keys: &watch::Sender<Vec<u8>>, key: Vec<u8>) {
    if key.len() < MIN_KEY_LEN {
        tracing::warn!(
            bytes = key.len(),
            "ignoring a membership key shorter than {MIN_KEY_LEN} bytes; keeping the current one"
        );
        return;
    }
    keys.send_if_modified(|current| {
        let changed = *current != key;
        *current = key;
        changed
    });
}

/// Reads the key file every [`KEY_FILE_POLL`] and offers what it holds. A file that cannot be
/// read (mid-update, removed) keeps the current key; the first failure of a streak is logged.
async fn poll_key_file(path: PathBuf, keys: watch::Sender<Vec<u8>>) {
    let mut failing = false;
    loop {
        tokio::time::sleep(KEY_FILE_POLL).await;
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || read_key_file(&path)).await
        };
        match read {
            Ok(Ok(key)) => {
                failing = false;
                offer_key(&keys, key);
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(path = %path.display(), error = %e, "cannot read the membership key file; keeping the current key");
            }
            _ => {}
        }
    }
}

/// Logs at most once per [`LOG_EVERY`], counting what was not logged.
#[derive(Debug, Default)]
struct RateLimit {
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
struct Task {
    cfg: Config,
    socket: UdpSocket,
    /// TCP connections to the peers that their kernels close when their processes die.
    lifelines: Lifelines,
    /// Peers whose process ended, from the lifelines.
    ended: mpsc::UnboundedReceiver<lifeline::Ended>,
    signer: Signer,
    verifier: Verifier,
    /// The keys signed with and accepted, over a rotation.
    keys: KeyRing,
    /// When the keys change next (see [`Task::apply_keys`]).
    key_change_at: Option<Instant>,
    view: View,
    /// How late this speaker's own heartbeat ticks fire.
    slowness: Slowness,
    /// Where to send (name, address), this speaker excluded.
    peers: Vec<(String, SocketAddr)>,
    /// The last published view.
    current: LiveView,
    /// When the view must be evaluated again even if nothing is heard.
    next_check: Option<Instant>,
    /// When the suspects are probed next (`None`: no suspect).
    next_probe: Option<Instant>,
    /// Where probes came from that are not answered yet.
    probe_answers: Vec<SocketAddr>,
    /// While this speaker may answer (published to `cfg.fence`).
    lease: Lease,
    /// When answering resumes after a fence.
    resume_at: Option<Instant>,
    /// Bumped when answering resumes after a fence.
    fence_lifted: watch::Sender<u64>,
    view_tx: watch::Sender<LiveView>,
    metrics: Metrics,
    /// Limits debug logs of rejected datagrams.
    reject_log: RateLimit,
    /// Limits debug logs of socket errors.
    io_log: RateLimit,
}

// === impl Task ===

impl Task {
    async fn run(
        mut self,
        mut peers_rx: watch::Receiver<Vec<Peer>>,
        mut keys_rx: watch::Receiver<Vec<u8>>,
        mut stop_rx: oneshot::Receiver<()>,
    ) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut buf = [0u8; packet::MAX_LEN + 1];
        loop {
            if !self.probe_answers.is_empty() {
                self.answer_probes().await;
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
                    if self.keys.offer(key, Instant::now()) {
                        info!(
                            window_s = self.cfg.key_rotation_window.as_secs(),
                            "membership key changed: accepting both keys, signing with the new one after the window, retiring the old one after another"
                        );
                        self.apply_keys(Instant::now());
                    }
                }
                _ = sleep_until(key_change), if key_change.is_some() => {
                    let now = Instant::now();
                    self.keys.settle(now);
                    self.apply_keys(now);
                    if self.keys.next_change(now).is_some() {
                        info!("membership key rotation: signing with the new key, still accepting the old one");
                    } else {
                        info!("membership key rotation done: the old key is no longer accepted");
                    }
                }
                scheduled = tick.tick() => {
                    let now = Instant::now();
                    self.slowness.record(now, now.saturating_duration_since(scheduled.into_std()));
                    self.send_all(Kind::Alive).await;
                    // The round ran on time: what the fence guards against is this speaker not
                    // running (paused, starved), not a send the network refused. A partition
                    // leaves each side answering the clients it reaches, as before.
                    self.renew_lease(now);
                    let level = self.slowness.level(now);
                    self.metrics.slowness.set(i64::from(level));
                    if self.view.set_slowness(level) {
                        self.drain(&mut buf);
                        self.refresh(Instant::now());
                    }
                }
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(&buf[..len], from),
                    Err(e) => {
                        if let Some(suppressed) = self.io_log.allow(Instant::now()) {
                            debug!(error = %e, suppressed, "membership receive failed");
                        }
                    }
                },
                _ = sleep_until(check), if check.is_some() => {
                    // Heartbeats waiting in the socket count before any silence verdict: after
                    // a pause of this task they are there, and the peers were not silent.
                    self.drain(&mut buf);
                    let now = Instant::now();
                    self.view.set_slowness(self.slowness.level(now));
                    self.refresh(now);
                }
                _ = sleep_until(probe), if probe.is_some() => self.probe_suspects().await,
                _ = sleep_until(resume), if resume.is_some() => {
                    self.resume_at = None;
                    self.metrics.fenced.set(0);
                    info!("answering again: peers have heard this speaker since its fence");
                    self.fence_lifted.send_modify(|n| *n += 1);
                }
                Some(ended) = self.ended.recv() => {
                    let now = Instant::now();
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
        self.lifelines.set_keys(lifeline::Keys {
            signing: key(self.keys.signing(now)),
            accepted,
        });
    }

    /// Applies a new peer list; returns whether an address was added.
    fn set_peers(&mut self, peers: Vec<Peer>) -> bool {
        let me = &self.cfg.node;
        let mut seen = BTreeSet::new();
        let targets: Vec<(String, SocketAddr)> = peers
            .iter()
            .filter(|p| &p.name != me && seen.insert(p.name.as_str()))
            .map(|p| (p.name.clone(), p.addr))
            .collect();
        let old: HashSet<&(String, SocketAddr)> = self.peers.iter().collect();
        let added = targets.iter().any(|t| !old.contains(t));
        self.lifelines.set_peers(targets.clone());
        self.peers = targets;
        self.view
            .set_peers(peers.into_iter().map(|p| (p.name, p.node_ready)));
        let view = &self.view;
        self.verifier.forget(unix_ms(), |n| view.is_peer(n));
        self.refresh(Instant::now());
        added
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
    fn drain(&mut self, buf: &mut [u8]) {
        for _ in 0..DRAIN_MAX {
            match self.socket.try_recv_from(buf) {
                Ok((len, from)) => self.on_datagram(&buf[..len], from),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            }
        }
    }

    /// Sends a Probe to every suspect, and schedules the next round while any is left.
    async fn probe_suspects(&mut self) {
        let now = Instant::now();
        let suspects: Vec<SocketAddr> = self
            .view
            .suspects(now)
            .filter_map(|name| self.peers.iter().find(|(n, _)| n == name))
            .map(|(_, addr)| *addr)
            .collect();
        if suspects.is_empty() {
            self.next_probe = None;
            return;
        }
        self.metrics.probes_sent.inc_by(suspects.len() as u64);
        for addr in suspects {
            self.send_one(Kind::Probe, addr).await;
        }
        self.next_probe = now.checked_add(self.probe_interval());
    }

    fn probe_interval(&self) -> Duration {
        (self.view.dead_after() / PROBES_PER_DEAD_AFTER).max(Duration::from_millis(1))
    }

    fn on_datagram(&mut self, buf: &[u8], from: SocketAddr) {
        let now = Instant::now();
        let view = &self.view;
        let checked = self.verifier.check(buf, unix_ms(), |n| view.is_peer(n));
        let accepted = match checked {
            Ok(accepted) => accepted,
            Err(rejection) => {
                self.on_rejected(rejection, from, now);
                return;
            }
        };
        self.metrics.received("accepted");
        let peer = &accepted.packet.node;
        if accepted.restarted {
            info!(peer = %peer, %from, "membership peer restarted (new boot id)");
            self.lifelines.dial_now(peer);
        }
        let boot = accepted.packet.boot_id;
        let changed = match accepted.packet.kind {
            Kind::Alive => self.view.alive(peer, boot, now),
            Kind::Leave => self.view.leave(peer, now),
            Kind::Probe => {
                if let Some((_, addr)) = self.peers.iter().find(|(n, _)| n == peer) {
                    self.probe_answers.push(*addr);
                }
                self.view.alive(peer, boot, now)
            }
        };
        if changed {
            self.refresh(now);
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
        let new = self.view.evaluate(now);
        self.next_check = self.view.next_change(now);
        if self.next_probe.is_none() && self.view.suspects(now).next().is_some() {
            self.next_probe = Some(now);
        }
        if new == self.current {
            return;
        }
        for up in new.live.difference(&self.current.live) {
            self.lifelines.dial_now(up);
            let reason = self.view.status(up, now);
            info!(peer = %up, reason = %DisplayStatus(reason), "membership peer up");
        }
        for down in self.current.live.difference(&new.live) {
            let reason = self.view.status(down, now);
            match reason {
                Some(view::Status::Left(_)) => self.metrics.died("left"),
                Some(view::Status::Ended(_)) => self.metrics.died("ended"),
                Some(view::Status::Silent(_)) => self.metrics.died("silent"),
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

    /// Signs one message of `kind` and sends it to `addr`.
    async fn send_one(&mut self, kind: Kind, addr: SocketAddr) {
        let Some(datagram) = self.signer.sign(kind, unix_ms()) else {
            return;
        };
        match self.socket.send_to(&datagram, addr).await {
            Ok(_) => {
                self.metrics.packets_sent.inc();
            }
            Err(e) => {
                if let Some(suppressed) = self.io_log.allow(Instant::now()) {
                    debug!(%addr, error = %e, suppressed, "membership send failed");
                }
            }
        }
    }

    /// Answers the probes received since the last call, each with an Alive.
    async fn answer_probes(&mut self) {
        for addr in std::mem::take(&mut self.probe_answers) {
            self.send_one(Kind::Alive, addr).await;
        }
    }

    /// Signs one message of `kind` and sends it to every peer.
    async fn send_all(&mut self, kind: Kind) {
        let Some(datagram) = self.signer.sign(kind, unix_ms()) else {
            return; // unreachable: the node name was validated at start
        };
        for (name, addr) in &self.peers {
            match self.socket.send_to(&datagram, *addr).await {
                Ok(_) => {
                    self.metrics.packets_sent.inc();
                }
                Err(e) => {
                    if let Some(suppressed) = self.io_log.allow(Instant::now()) {
                        debug!(peer = %name, %addr, error = %e, suppressed, "membership send failed");
                    }
                }
            }
        }
    }

    async fn send_leave(&mut self) {
        for i in 0..LEAVE_REPEATS {
            if i > 0 {
                tokio::time::sleep(LEAVE_GAP).await;
            }
            self.send_all(Kind::Leave).await;
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

/// This node's wall clock in ms since the Unix epoch (0 if it reads before 1970).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
