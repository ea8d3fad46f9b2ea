//! Speaker membership: which speakers are live, learned from authenticated UDP heartbeats, with
//! the Node objects as the fallback.
//!
//! ```text
//!  Node watch --set_peers--> +------------------- task (one per speaker) ---------------------+
//!                            | every interval: Alive --sign--> unicast to each observer (UDP) |
//!  peers' datagrams -------->| recv -> Verifier (packet/: tag, peer, skew, replay)           |
//!                            |      -> View (view.rs: pure liveness rules, votes)             |
//!                            | timer at View::next_change -> re-evaluate                      |
//!                            | own votes changed -> Report x3 to every peer (task/send.rs)    |
//!                            +--> watch::Receiver<LiveView> (published only when it changes)  |
//!  leave() ----------------> Leave x3 to every peer, task ends                                |
//!  rotate_key() ------------> KeyRing (keys.rs: both keys accepted over a window, no downtime)|
//! ```
//!
//! With at most four peers every speaker watches every other one (a full mesh): it sends each
//! an Alive every interval and decides alone. Beyond that each speaker is watched by four
//! observers (`topology.rs`): its heartbeats go only to them, they alone hold lifelines to it
//! and probe it, and their verdicts are votes, sent to everyone as Reports; a majority of its
//! observers makes it dead everywhere (`ballots.rs`, `view.rs`). A speaker sends and receives
//! about four heartbeats per interval whatever the cluster's size (80 datagrams per second with
//! the defaults), plus a few Reports when someone dies.
//!
//! With the defaults (Alive every 50 ms, dead after 250 ms of silence) a speaker whose process
//! dies is seen dead at once (its lifelines close), one that goes silent 250 ms after its last
//! heartbeat; a speaker that stops with [`Membership::leave`] is seen dead as soon as its Leave
//! arrives. The liveness rules, the fallback to Node readiness and the start-up grace are
//! described in `view.rs`; the wire format in `packet/mod.rs`.

mod ballots;
mod config;
mod fence;
pub mod keys;
mod lifeline;
mod metrics;
pub mod packet;
mod page;
mod slowness;
mod task;
mod topology;
mod transport;
mod view;

#[cfg(test)]
mod scale_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ring::hmac;
use ring::rand::SystemRandom;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::info;

pub use config::{Config, MIN_KEY_LEN, read_key_file};
pub use fence::Fence;
pub use metrics::{Metrics, ResultLabels};
pub use page::page;
pub use transport::SimNetwork;
pub use view::{LiveView, ViewSource};

use fence::Lease;
use keys::KeyRing;
use lifeline::Lifelines;
use packet::{Signer, Verifier};
use slowness::Slowness;
use task::Task;
use task::send::Outbox;
use transport::Socket;
use view::View;

/// How often the key file is read again (a Secret volume changes by an atomic symlink swap,
/// which file watches see unreliably; a 2 s poll of a 32-byte file costs nothing).
pub const KEY_FILE_POLL: Duration = Duration::from_secs(2);

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

/// The heartbeat socket (UDP) and the lifelines' listener (TCP) on the same port. With an
/// ephemeral port (0, as tests bind), the port the kernel picked for UDP may be taken for TCP
/// (another socket's ephemeral end): then both are bound again on a new port.
async fn bind_both(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut attempts = 0;
    loop {
        let socket = UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        match TcpListener::bind(local).await {
            Ok(listener) => return Ok((socket, listener)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && addr.port() == 0 && attempts < 20 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

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
        let boot_id = ring::rand::generate::<[u8; 8]>(&SystemRandom::new())
            .map(|b| u64::from_be_bytes(b.expose()))
            .map_err(|_| io::Error::other("no system randomness for the membership boot id"))?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &cfg.key);
        let lifeline_keys = lifeline::Keys {
            signing: key.clone(),
            accepted: vec![key.clone()],
        };
        let (socket, local_addr, lifelines, ended) = match &cfg.simulated {
            Some(net) => {
                let (socket, ended) = net.bind(cfg.bind, &cfg.node, boot_id)?;
                let addr = socket.local_addr();
                (Socket::Simulated(socket), addr, None, ended)
            }
            None => {
                let (socket, listener) = bind_both(cfg.bind).await?;
                let local_addr = socket.local_addr()?;
                let (lifelines, ended) = Lifelines::start(
                    listener,
                    &cfg.node,
                    boot_id,
                    lifeline_keys,
                    metrics.lifelines.clone(),
                );
                (Socket::Udp(socket), local_addr, Some(lifelines), ended)
            }
        };

        let view = View::new(cfg.node.clone(), now(), cfg.dead_after, cfg.fallback_after);
        let current = view.evaluate(now());
        let (view_tx, view_rx) = watch::channel(current.clone());
        let (peers_tx, peers_rx) = watch::channel(Vec::new());
        let (keys_tx, keys_rx) = watch::channel(cfg.key.clone());
        let (stop_tx, stop_rx) = oneshot::channel();
        let (lifted_tx, lifted_rx) = watch::channel(0);
        let lease = Lease::new(now(), cfg.dead_after, cfg.interval);
        cfg.fence.set(lease);
        metrics.live_peers.set(0);
        metrics.fenced.set(0);
        metrics.fallback.set(0);
        info!(node = %cfg.node, %local_addr, boot_id, "membership started");

        let key_poll = cfg
            .key_file
            .clone()
            .map(|path| AbortOnDrop(tokio::spawn(poll_key_file(path, keys_tx.clone()))));
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
            peers: BTreeMap::new(),
            current,
            next_check: None,
            evaluated_at: now(),
            next_probe: None,
            unicasts: Vec::new(),
            outbox: Outbox::default(),
            reported: BTreeSet::new(),
            observers: BTreeSet::new(),
            joined: None,
            lease,
            resume_at: None,
            fence_lifted: lifted_tx,
            view_tx,
            metrics,
            reject_log: Default::default(),
            io_log: Default::default(),
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

/// The current instant: tokio's clock, which is the system's except in simulations (paused,
/// virtual time).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
