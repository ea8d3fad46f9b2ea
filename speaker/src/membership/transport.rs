//! Where the membership task's datagrams go: a UDP socket, or a simulated network in memory
//! for running a thousand speakers in one process under tokio's paused (virtual) clock.
//!
//! The simulation replaces only what the kernel does: it carries datagrams between the
//! speakers' sockets (dropping some at random, and all to or from a silenced address), and when
//! a speaker's socket closes (its task ended: a process death) it tells the others, as the
//! kernel does through the lifelines. Everything above the socket is the speaker's own code.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::lifeline::Ended;

/// The membership task's socket.
#[derive(Debug)]
pub(super) enum Socket {
    Udp(UdpSocket),
    Simulated(SimSocket),
}

impl Socket {
    pub(super) async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            Socket::Udp(s) => s.recv_from(buf).await,
            Socket::Simulated(s) => match s.rx.recv().await {
                Some(datagram) => Ok(copy(datagram, buf)),
                None => std::future::pending().await,
            },
        }
    }

    pub(super) fn try_recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            Socket::Udp(s) => s.try_recv_from(buf),
            Socket::Simulated(s) => match s.rx.try_recv() {
                Ok(datagram) => Ok(copy(datagram, buf)),
                Err(_) => Err(io::ErrorKind::WouldBlock.into()),
            },
        }
    }

    pub(super) async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self {
            Socket::Udp(s) => s.send_to(buf, to).await,
            Socket::Simulated(s) => {
                s.net.deliver(s.addr, to, buf);
                Ok(buf.len())
            }
        }
    }

    /// This speaker's clock in ms since the Unix epoch (0 before 1970). Simulated: the wall
    /// clock when the network was made, advanced by tokio's (virtual) clock since.
    pub(super) fn unix_ms(&self) -> u64 {
        match self {
            Socket::Udp(_) => system_unix_ms(),
            Socket::Simulated(s) => {
                let net = s.net.lock();
                let elapsed = net.started.elapsed().as_millis();
                net.epoch_ms + u64::try_from(elapsed).unwrap_or(u64::MAX)
            }
        }
    }
}

/// A datagram as received: bytes and sender, truncated to `buf` like a UDP read.
fn copy((bytes, from): (Vec<u8>, SocketAddr), buf: &mut [u8]) -> (usize, SocketAddr) {
    let len = bytes.len().min(buf.len());
    buf[..len].copy_from_slice(&bytes[..len]);
    (len, from)
}

/// The wall clock in ms since the Unix epoch (0 if it reads before 1970).
pub(super) fn system_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One speaker's end of a [`SimNetwork`]. Dropping it is the speaker's death.
#[derive(Debug)]
pub(super) struct SimSocket {
    net: SimNetwork,
    addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<(Vec<u8>, SocketAddr)>,
}

impl SimSocket {
    pub(super) fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        self.net.closed(self.addr);
    }
}

/// A simulated network of membership speakers, in memory (see the module docs). Clones share
/// it.
#[derive(Clone, Debug)]
pub struct SimNetwork(Arc<Mutex<Net>>);

#[derive(Debug)]
struct Net {
    epoch_ms: u64,
    started: tokio::time::Instant,
    endpoints: HashMap<SocketAddr, Endpoint>,
    next_port: u16,
    /// Addresses all of whose datagrams are dropped, both ways.
    silenced: HashSet<IpAddr>,
    /// Probability that a datagram is dropped.
    loss: f64,
    rng: fastrand::Rng,
}

#[derive(Debug)]
struct Endpoint {
    node: String,
    boot: u64,
    datagrams: mpsc::UnboundedSender<(Vec<u8>, SocketAddr)>,
    ended: mpsc::UnboundedSender<Ended>,
}

impl SimNetwork {
    /// An empty network; `seed` drives the random losses.
    pub fn new(seed: u64) -> SimNetwork {
        SimNetwork(Arc::new(Mutex::new(Net {
            epoch_ms: system_unix_ms(),
            started: tokio::time::Instant::now(),
            endpoints: HashMap::new(),
            next_port: 1,
            silenced: HashSet::new(),
            loss: 0.0,
            rng: fastrand::Rng::with_seed(seed),
        })))
    }

    /// Drops each datagram with probability `loss` from now on.
    pub fn set_loss(&self, loss: f64) {
        self.lock().loss = loss.clamp(0.0, 1.0);
    }

    /// Drops every datagram from or to `ip` (a frozen or cut node), or stops doing so.
    pub fn silence(&self, ip: IpAddr, silenced: bool) {
        let mut net = self.lock();
        if silenced {
            net.silenced.insert(ip);
        } else {
            net.silenced.remove(&ip);
        }
    }

    /// A socket for process `boot` of `node` at `addr` (port 0: a fresh one), and where the
    /// deaths of other speakers' processes are told. Errors if the address is taken.
    pub(super) fn bind(
        &self,
        addr: SocketAddr,
        node: &str,
        boot: u64,
    ) -> io::Result<(SimSocket, mpsc::UnboundedReceiver<Ended>)> {
        let (datagrams, rx) = mpsc::unbounded_channel();
        let (ended, ended_rx) = mpsc::unbounded_channel();
        let mut net = self.lock();
        let addr = if addr.port() == 0 {
            let port = net.next_port;
            net.next_port = net.next_port.wrapping_add(1).max(1);
            SocketAddr::new(addr.ip(), port)
        } else {
            addr
        };
        if net.endpoints.contains_key(&addr) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        net.endpoints.insert(
            addr,
            Endpoint {
                node: node.to_owned(),
                boot,
                datagrams,
                ended,
            },
        );
        let socket = SimSocket {
            net: self.clone(),
            addr,
            rx,
        };
        Ok((socket, ended_rx))
    }

    fn deliver(&self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let mut net = self.lock();
        if net.silenced.contains(&from.ip()) || net.silenced.contains(&to.ip()) {
            return;
        }
        let loss = net.loss;
        if loss > 0.0 && net.rng.f64() < loss {
            return;
        }
        if let Some(endpoint) = net.endpoints.get(&to) {
            // A closed receiver is a speaker that just ended: the datagram is lost.
            let _ = endpoint.datagrams.send((bytes.to_vec(), from));
        }
    }

    /// The socket at `addr` closed: every other speaker hears that its process ended, as the
    /// kernel tells them through their lifelines (unless the address is silenced: a frozen
    /// node's lifelines say nothing).
    fn closed(&self, addr: SocketAddr) {
        let mut net = self.lock();
        let Some(gone) = net.endpoints.remove(&addr) else {
            return;
        };
        if net.silenced.contains(&addr.ip()) {
            return;
        }
        for endpoint in net.endpoints.values() {
            let _ = endpoint.ended.send(Ended {
                node: gone.node.clone(),
                boot: gone.boot,
            });
        }
    }

    fn lock(&self) -> MutexGuard<'_, Net> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
