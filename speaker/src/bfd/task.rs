//! The node's BFD sessions (I/O): receives on UDP port 3784 (IPv4 and IPv6), sends from a
//! per-session socket bound to the session's local address and a source port in
//! 49152-65535, all with TTL 255 (RFC 5881), and runs every [`BfdSession`] on one task.
//!
//! Binding port 3784 needs no privilege (it is above 1024).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::packet::{BfdState, Control};
use super::session::{BfdConfig, BfdSession};
use crate::netio::udp_ttl::{recv_with_ttl, report_ttl};

/// UDP port of single-hop BFD control packets.
pub const CONTROL_PORT: u16 = 3784;

/// Which session: the peer, and this node's address towards it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The peer's address.
    pub peer: IpAddr,
    /// This node's address on the path.
    pub local: IpAddr,
}

enum Command {
    Add(SessionKey, BfdConfig, watch::Sender<BfdState>),
    Remove(SessionKey),
}

/// A handle to the node's BFD task.
#[derive(Clone, Debug)]
pub struct Bfd {
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Add(k, c, _) => write!(f, "Add({k:?}, {c:?})"),
            Command::Remove(k) => write!(f, "Remove({k:?})"),
        }
    }
}

/// A registered session; removed when dropped.
#[derive(Debug)]
pub struct Registration {
    key: SessionKey,
    commands: mpsc::UnboundedSender<Command>,
    /// The session's state, as it changes.
    pub state: watch::Receiver<BfdState>,
}

impl Registration {
    /// The session's key.
    pub fn key(&self) -> SessionKey {
        self.key
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Remove(self.key));
    }
}

impl Bfd {
    /// Starts the task. Fails if port 3784 cannot be bound (another BFD daemon on the node).
    pub fn start() -> std::io::Result<Bfd> {
        let v4 = receiver(false)?;
        let v6 = receiver(true)?;
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(v4, v6, rx));
        Ok(Bfd { commands })
    }

    /// Runs a session to `key.peer` from `key.local` with `config` (replacing one of the same
    /// key) until the returned registration is dropped.
    pub fn add(&self, key: SessionKey, config: BfdConfig) -> Registration {
        let (tx, state) = watch::channel(BfdState::Down);
        let _ = self.commands.send(Command::Add(key, config, tx));
        Registration {
            key,
            commands: self.commands.clone(),
            state,
        }
    }
}

fn receiver(ipv6: bool) -> std::io::Result<UdpSocket> {
    let (domain, addr) = if ipv6 {
        (
            Domain::IPV6,
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, CONTROL_PORT)),
        )
    } else {
        (
            Domain::IPV4,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, CONTROL_PORT)),
        )
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if ipv6 {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    report_ttl(&socket, ipv6)?;
    UdpSocket::from_std(socket.into())
}

/// A socket to send one session's packets: from `local`, a port in 49152-65535, TTL 255.
fn sender(key: SessionKey) -> std::io::Result<UdpSocket> {
    let domain = if key.local.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if key.local.is_ipv4() {
        socket.set_ttl_v4(255)?;
    } else {
        socket.set_unicast_hops_v6(255)?;
    }
    socket.set_nonblocking(true)?;
    let start = 49152 + (fastrand::u16(..) % 16384);
    let mut last = None;
    for i in 0..16384u16 {
        let port = 49152 + (start - 49152 + i) % 16384;
        match socket.bind(&SocketAddr::new(key.local, port).into()) {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        return Err(e);
    }
    socket.connect(&SocketAddr::new(key.peer, CONTROL_PORT).into())?;
    UdpSocket::from_std(socket.into())
}

struct Running {
    session: BfdSession,
    socket: UdpSocket,
    state: watch::Sender<BfdState>,
}

async fn run(v4: UdpSocket, v6: UdpSocket, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut sessions: HashMap<SessionKey, Running> = HashMap::new();
    let mut buf4 = [0u8; 512];
    let mut buf6 = [0u8; 512];
    loop {
        let now = Instant::now();
        for (key, r) in sessions.iter_mut() {
            let (packet, changed) = r.session.poll(now, fastrand::f64());
            if let Some(p) = packet
                && let Err(e) = r.socket.try_send(&p.encode())
                && e.kind() != std::io::ErrorKind::WouldBlock
            {
                warn!(peer = %key.peer, error = %e, "sending a BFD packet failed");
            }
            if let Some(state) = changed {
                report(key, state);
                r.state.send_replace(state);
            }
        }
        let deadline = sessions
            .values()
            .filter_map(|r| r.session.next_deadline())
            .min();
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Add(key, config, state)) => match sender(key) {
                    Ok(socket) => {
                        let discriminator = loop {
                            let d = fastrand::u32(1..);
                            if !sessions.values().any(|r| r.session.local_discriminator() == d) {
                                break d;
                            }
                        };
                        info!(peer = %key.peer, local = %key.local, "BFD session started");
                        sessions.insert(key, Running {
                            session: BfdSession::new(config, discriminator, Instant::now()),
                            socket,
                            state,
                        });
                    }
                    Err(e) => warn!(peer = %key.peer, local = %key.local, error = %e, "cannot open the BFD socket; no BFD for this peer"),
                },
                Some(Command::Remove(key)) => {
                    sessions.remove(&key);
                }
            },
            r = v4.async_io(Interest::READABLE, || recv_with_ttl(&v4, &mut buf4)) => {
                receive(&mut sessions, r, &buf4);
            },
            r = v6.async_io(Interest::READABLE, || recv_with_ttl(&v6, &mut buf6)) => {
                receive(&mut sessions, r, &buf6);
            },
            () = sleep_until(deadline), if deadline.is_some() => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await;
    }
}

fn report(key: &SessionKey, state: BfdState) {
    if state == BfdState::Up {
        info!(peer = %key.peer, "BFD session Up");
    } else {
        warn!(peer = %key.peer, state = state.name(), "BFD session left Up");
    }
}

fn receive(
    sessions: &mut HashMap<SessionKey, Running>,
    result: std::io::Result<(usize, SocketAddr, Option<u8>)>,
    buf: &[u8],
) {
    let Ok((n, from, ttl)) = result else { return };
    // RFC 5881 §5: single-hop packets must arrive with TTL 255.
    if ttl != Some(255) {
        return;
    }
    let Ok(control) = Control::parse(&buf[..n]) else {
        return;
    };
    let now = Instant::now();
    let found = sessions.iter_mut().find(|(key, r)| {
        if control.your_discriminator != 0 {
            r.session.local_discriminator() == control.your_discriminator
        } else {
            key.peer == from.ip()
        }
    });
    if let Some((key, r)) = found
        && key.peer == from.ip()
        && let Some(state) = r.session.receive(now, &control)
    {
        report(key, state);
        r.state.send_replace(state);
    }
}
