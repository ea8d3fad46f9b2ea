//! Lifelines: one idle TCP connection from this speaker to every peer's speaker, so that a peer
//! whose process dies (crash, OOM kill, SIGKILL) is known dead at once: its kernel closes the
//! connection, and a new connection to its port is refused. Heartbeat silence still covers what
//! the kernel cannot say (node loss, link cut, a frozen node).
//!
//! ```text
//!  dialer (one per peer)                          listener (this speaker's membership port, TCP)
//!   connect, send nonce ──────────────────────────> answer hello(boot id) signed over the nonce
//!   verify hello: peer name, key, boot id B        hold the connection; read nothing
//!   ... idle: no traffic at all ...
//!   EOF or reset ─> connect again at once:
//!      refused            => Ended{peer, B}   (no listener: the process of boot B is gone)
//!      hello, boot B      => nothing happened (a reset that was not the peer's death)
//!      hello, boot B' != B=> Ended{peer, B}, then hold the new connection (the peer restarted)
//!      timeout, no route  => no statement; retry with backoff (silence decides)
//! ```
//!
//! Only a refused connection after a verified one counts: a forged FIN or RST alone cannot kill
//! a live peer, because the redial reaches its listener. Idle lifelines cost no packets; TCP
//! keepalive (30 s idle) only cleans up connections whose far end vanished.

mod hello;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use ring::hmac;
use ring::rand::SystemRandom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::debug;

/// Longest wait for a connection or a hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// First pause after a failed dial; doubles up to [`MAX_BACKOFF`]. A peer heard again is
/// dialed at once ([`Lifelines::dial_now`]), whatever the pause.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Redials after a reset (see [`redial`]), and the pause between them.
const REDIAL_ATTEMPTS: usize = 5;
const REDIAL_GAP: Duration = Duration::from_millis(5);
/// Most connections the listener holds (two per peer are expected; more is someone else).
const MAX_ACCEPTED: usize = 4096;
/// Idle time before TCP keepalive probes a lifeline.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// The keys a hello is signed with and accepted under (two during a key rotation).
#[derive(Clone)]
pub struct Keys {
    /// Signs this speaker's hellos.
    pub signing: hmac::Key,
    /// Verify peers' hellos.
    pub accepted: Vec<hmac::Key>,
}

/// A peer's process ended: `boot` is the boot id its hello gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// Node name.
    pub node: String,
    /// Boot id of the process that ended.
    pub boot: u64,
}

/// The running lifelines; dropping this stops them all.
pub struct Lifelines {
    peers: watch::Sender<Vec<(String, SocketAddr)>>,
    keys: watch::Sender<Keys>,
    /// Wakes the dialer of a peer that was heard again (by node name).
    wake: Arc<std::sync::Mutex<BTreeMap<String, Arc<Notify>>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Lifelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifelines")
            .field("peers", &*self.peers.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Lifelines {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What every lifeline task shares.
#[derive(Clone)]
struct Shared {
    node: Arc<str>,
    boot: u64,
    keys: watch::Receiver<Keys>,
    ended: mpsc::UnboundedSender<Ended>,
    /// Established outgoing lifelines (`ferrolb_speaker_membership_lifelines`).
    up: Gauge,
    /// One wake-up per dialer, by node name.
    wake: Arc<std::sync::Mutex<BTreeMap<String, Arc<Notify>>>>,
}

impl Lifelines {
    /// Listens on `listener` and dials peers given by [`Lifelines::set_peers`]; ended peers are
    /// sent on the returned channel.
    pub fn start(
        listener: TcpListener,
        node: &str,
        boot: u64,
        keys: Keys,
        up: Gauge,
    ) -> (Lifelines, mpsc::UnboundedReceiver<Ended>) {
        let (keys_tx, keys_rx) = watch::channel(keys);
        let (peers_tx, peers_rx) = watch::channel(Vec::new());
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        let wake = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let shared = Shared {
            node: node.into(),
            boot,
            keys: keys_rx,
            ended: ended_tx,
            up,
            wake: wake.clone(),
        };
        let tasks = vec![
            tokio::spawn(listen(listener, shared.clone())),
            tokio::spawn(manage(peers_rx, shared)),
        ];
        let lifelines = Lifelines {
            peers: peers_tx,
            keys: keys_tx,
            wake,
            tasks,
        };
        (lifelines, ended_rx)
    }

    /// Replaces the peers dialed: (node name, membership address).
    pub fn set_peers(&self, peers: Vec<(String, SocketAddr)>) {
        self.peers.send_if_modified(|current| {
            let changed = *current != peers;
            *current = peers;
            changed
        });
    }

    /// Replaces the keys.
    pub fn set_keys(&self, keys: Keys) {
        self.keys.send_replace(keys);
    }

    /// `node` was heard again (a restart, or back from a cut): if its lifeline is down, dial it
    /// now rather than after the backoff, so its next crash is noticed at once too.
    pub fn dial_now(&self, node: &str) {
        if let Some(wake) = self
            .wake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
        {
            wake.notify_one();
        }
    }
}

/// Accepts lifelines and answers each with a hello; holds each until the dialer closes it.
async fn listen(listener: TcpListener, shared: Shared) {
    let slots = Arc::new(Semaphore::new(MAX_ACCEPTED));
    // Dropped with this task: every held connection closes with the listener.
    let mut held = tokio::task::JoinSet::new();
    loop {
        while held.try_join_next().is_some() {}
        let Ok((stream, from)) = listener.accept().await else {
            // Out of file descriptors and the like: try again shortly.
            tokio::time::sleep(MIN_BACKOFF).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%from, "lifeline refused: too many connections");
            continue;
        };
        let shared = shared.clone();
        held.spawn(async move {
            let _slot = slot;
            if let Err(e) = answer(stream, &shared).await {
                debug!(%from, error = %e, "lifeline from a peer ended");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut nonce = [0u8; hello::NONCE_LEN];
    timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut nonce)).await??;
    let key = shared.keys.borrow().signing.clone();
    let hello = hello::encode(&key, &nonce, shared.boot, &shared.node)
        .ok_or_else(|| io::Error::other("node name does not fit a hello"))?;
    stream.write_all(&hello).await?;
    keepalive(&stream);
    // Held open until the dialer goes: its end closing is all this connection says.
    let mut sink = [0u8; 64];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

/// Runs one dialer per peer, started and stopped as the peer list changes.
async fn manage(mut peers: watch::Receiver<Vec<(String, SocketAddr)>>, shared: Shared) {
    let mut dialers: BTreeMap<(String, SocketAddr), JoinHandle<()>> = BTreeMap::new();
    loop {
        let wanted: Vec<(String, SocketAddr)> = peers.borrow_and_update().clone();
        dialers.retain(|k, task| {
            let keep = wanted.contains(k);
            if !keep {
                task.abort();
            }
            keep
        });
        let wakes: Vec<Arc<Notify>> = {
            let mut wake = shared.wake.lock().unwrap_or_else(|e| e.into_inner());
            wake.retain(|name, _| wanted.iter().any(|(n, _)| n == name));
            wanted
                .iter()
                .map(|(name, _)| wake.entry(name.clone()).or_default().clone())
                .collect()
        };
        for (peer, wake) in wanted.into_iter().zip(wakes) {
            dialers.entry(peer.clone()).or_insert_with(|| {
                tokio::spawn(dial_forever(peer.0, peer.1, shared.clone(), wake))
            });
        }
        if peers.changed().await.is_err() {
            for task in dialers.values() {
                task.abort();
            }
            return;
        }
    }
}

/// How a dial went.
enum Dialed {
    /// Verified hello: the peer's process of this boot id holds the other end.
    Up(TcpStream, u64),
    /// Nothing listens on the peer's port: its kernel said so.
    Refused,
    /// No statement (timeout, no route, bad hello).
    Failed(io::Error),
}

/// Keeps a lifeline to `node` at `addr` until aborted; reports its process ending.
async fn dial_forever(node: String, addr: SocketAddr, shared: Shared, wake: Arc<Notify>) {
    let mut backoff = MIN_BACKOFF;
    let mut held: Option<(TcpStream, u64)> = None;
    loop {
        let Some((stream, boot)) = held.take() else {
            match dial(&node, addr, &shared).await {
                Dialed::Up(stream, boot) => {
                    backoff = MIN_BACKOFF;
                    held = Some((stream, boot));
                }
                Dialed::Refused | Dialed::Failed(_) => {
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                        () = wake.notified() => backoff = MIN_BACKOFF,
                    }
                }
            }
            continue;
        };
        let up = Counted::new(&shared.up);
        let closed = wait_closed(stream).await;
        drop(up);
        debug!(peer = %node, %addr, boot, reason = %closed, "lifeline closed; dialing again to tell a death from a reset");
        match redial(&node, addr, &shared).await {
            Dialed::Refused => {
                let _ = shared.ended.send(Ended {
                    node: node.clone(),
                    boot,
                });
            }
            Dialed::Up(stream, again) => {
                if again != boot {
                    let _ = shared.ended.send(Ended {
                        node: node.clone(),
                        boot,
                    });
                }
                held = Some((stream, again));
            }
            Dialed::Failed(e) => {
                debug!(peer = %node, %addr, error = %e, "lifeline redial failed; heartbeat silence decides");
            }
        }
    }
}

/// Dials again after a lifeline closed. A process that is exiting closes its connections a
/// moment before its listener: a dial in between is accepted by the kernel and then reset, so
/// a reset is tried again (a few times, [`REDIAL_GAP`] apart) until the dial is refused or
/// answered.
async fn redial(node: &str, addr: SocketAddr, shared: &Shared) -> Dialed {
    let mut attempt = 0;
    loop {
        match dial(node, addr, shared).await {
            Dialed::Failed(e) if is_reset(&e) && attempt < REDIAL_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(REDIAL_GAP).await;
            }
            other => return other,
        }
    }
}

/// Whether `e` says the far end reset the connection (or closed it during the hello).
fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

async fn dial(node: &str, addr: SocketAddr, shared: &Shared) -> Dialed {
    let mut stream = match timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => return Dialed::Refused,
        Ok(Err(e)) => return Dialed::Failed(e),
        Err(_) => return Dialed::Failed(io::ErrorKind::TimedOut.into()),
    };
    let nonce = match ring::rand::generate::<[u8; hello::NONCE_LEN]>(&SystemRandom::new()) {
        Ok(n) => n.expose(),
        Err(_) => return Dialed::Failed(io::Error::other("no system randomness")),
    };
    let exchange = async {
        stream.write_all(&nonce).await?;
        let mut head = [0u8; hello::HEAD_LEN];
        stream.read_exact(&mut head).await?;
        let len = hello::total_len(&head)
            .filter(|l| *l <= hello::MAX_LEN)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a lifeline hello"))?;
        let mut buf = vec![0u8; len];
        buf[..head.len()].copy_from_slice(&head);
        stream.read_exact(&mut buf[head.len()..]).await?;
        io::Result::Ok(buf)
    };
    let hello = match timeout(HANDSHAKE_TIMEOUT, exchange).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Dialed::Failed(e),
        Err(_) => return Dialed::Failed(io::ErrorKind::TimedOut.into()),
    };
    let accepted = shared.keys.borrow().accepted.clone();
    match hello::verify(&hello, &nonce, node, &accepted) {
        Some(boot) => {
            keepalive(&stream);
            Dialed::Up(stream, boot)
        }
        None => Dialed::Failed(io::Error::new(
            io::ErrorKind::InvalidData,
            "the hello does not verify (another key, or not this peer)",
        )),
    }
}

/// Waits until the far end closes or resets the connection; says how.
async fn wait_closed(mut stream: TcpStream) -> String {
    let mut sink = [0u8; 64];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) => return "closed by the peer".to_string(),
            Ok(_) => {}
            Err(e) => return e.to_string(),
        }
    }
}

/// Counts one in a gauge while it lives (also when its task is aborted).
struct Counted(Gauge);

impl Counted {
    fn new(gauge: &Gauge) -> Counted {
        gauge.inc();
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Keepalive so a lifeline whose far end vanished without a FIN is eventually dropped.
fn keepalive(stream: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(Duration::from_secs(5));
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&ka);
}

#[cfg(test)]
mod tests;
