//! One BGP session's task (I/O): connects to the router, frames messages, runs the
//! [`Fsm`](super::fsm::Fsm) with real time, and keeps the router's routes equal to the latest
//! set handed in, through an [`AdjRibOut`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use ferrolb_crds::Family;
use rustbgpd_wire::{Message, encode_message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::config::{PeerConfig, RemoteAsn};
use super::framing::split_messages;
use super::fsm::{Action, Event, Fsm, State, StopReason};
use super::metrics::SessionMetrics;
use super::open::{LocalOpen, Negotiated, Restart};
use super::routes::{Attributes, Prefix};
use super::updates::{AdjRibOut, SessionView, end_of_rib};
use crate::bfd::packet::BfdState;
use crate::bfd::session::BfdConfig;
use crate::bfd::task::{Bfd, Registration, SessionKey};
use crate::netio;

/// The routes one session should announce.
pub type Routes = Arc<BTreeMap<Prefix, Attributes>>;

/// What a session reports about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionStatus {
    /// FSM state.
    pub state: State,
    /// Why the session last went down or failed to come up, until it is up again.
    pub last_error: Option<String>,
    /// Routes the router holds from this session.
    pub routes_sent: usize,
    /// Routes wanted that the session cannot carry (family not negotiated or no next hop).
    pub held_back: usize,
    /// The router's AS number and identifier, while up.
    pub router: Option<(u32, Ipv4Addr)>,
    /// The local address of the connection, while connected.
    pub local_address: Option<IpAddr>,
    /// The BFD session's state, when the peer uses BFD and the session has a local address.
    pub bfd: Option<BfdState>,
}

impl SessionStatus {
    /// A session that has not started.
    pub fn idle() -> SessionStatus {
        SessionStatus {
            state: State::Idle,
            last_error: None,
            routes_sent: 0,
            held_back: 0,
            router: None,
            local_address: None,
            bfd: None,
        }
    }
}

/// What a session needs to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// The peer's configuration.
    pub peer: PeerConfig,
    /// The TCP MD5 key, resolved from `password` or `passwordSecret`.
    pub md5_key: Option<Vec<u8>>,
    /// The node's name (for a router identifier on IPv6-only nodes and in logs).
    pub node: String,
    /// BFD timers, when the peer names a `BFDProfile`.
    pub bfd: Option<BfdConfig>,
}

enum Command {
    Routes(Routes),
    Stop(StopReason),
}

/// A running session; dropping it shuts the session down without a NOTIFICATION when graceful
/// restart applies.
#[derive(Debug)]
pub struct Session {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<SessionStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Routes(r) => write!(f, "Routes({})", r.len()),
            Command::Stop(s) => write!(f, "Stop({s:?})"),
        }
    }
}

impl Session {
    /// Starts connecting at once, announcing `routes` once up; counts into `metrics`; runs BFD
    /// through `bfd` when the config asks for it.
    pub fn start(
        config: SessionConfig,
        routes: Routes,
        metrics: SessionMetrics,
        bfd: Option<Bfd>,
    ) -> Session {
        let (commands, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(SessionStatus::idle());
        let task = tokio::spawn(run(config, routes, rx, status_tx, metrics, bfd));
        Session {
            commands,
            status,
            task,
        }
    }

    /// Hands in the routes to announce from now on.
    pub fn set_routes(&self, routes: Routes) {
        let _ = self.commands.send(Command::Routes(routes));
    }

    /// Stops the session (it ends after telling the router).
    pub fn stop(&self, reason: StopReason) {
        let _ = self.commands.send(Command::Stop(reason));
    }

    /// The session's status, as it changes.
    pub fn status(&self) -> watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    /// Waits for the task to end (after [`Session::stop`]).
    pub async fn finished(self) {
        let _ = self.task.await;
    }
}

/// The local part of the OPEN for `peer`; the router identifier is filled in once connected.
fn local_open(peer: &PeerConfig) -> LocalOpen {
    let families = if peer.own_family_only {
        BTreeSet::from([Family::of(peer.address)])
    } else {
        BTreeSet::from([Family::V4, Family::V6])
    };
    LocalOpen {
        asn: peer.local_asn,
        hold_time: peer.hold_time,
        router_id: peer.router_id.unwrap_or(Ipv4Addr::UNSPECIFIED),
        families,
        // This process just started: the first session carries the R bit.
        graceful_restart: peer.graceful_restart.then_some(Restart { restarted: true }),
    }
}

/// TTL of the session's packets: 1 to a directly connected external router, 255 otherwise
/// (iBGP, multihop, or a router whose AS is only learnt from its OPEN).
fn ttl(peer: &PeerConfig) -> u32 {
    match peer.remote_asn {
        RemoteAsn::Fixed(asn) if asn != peer.local_asn && !peer.multihop => 1,
        RemoteAsn::External if !peer.multihop => 1,
        _ => 255,
    }
}

/// The default router identifier: the session's local IPv4 address, else one derived from the
/// node's name (IPv6-only nodes), stable across restarts.
fn default_router_id(local: IpAddr, node: &str) -> Ipv4Addr {
    match local {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => {
            // FNV-1a of the name, kept out of 0.0.0.0 and multicast.
            let mut h: u32 = 0x811c_9dc5;
            for b in node.bytes() {
                h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
            Ipv4Addr::from((h & 0x7fff_ffff) | 0x0100_0000)
        }
    }
}

/// This node's next hop per family on the link the session runs over: the connection's own
/// address, and a global address of the other family on the same interface.
fn next_hops(local: IpAddr) -> BTreeMap<Family, IpAddr> {
    let mut hops = BTreeMap::from([(Family::of(local), local)]);
    if let Ok(addresses) = netio::addresses::addresses()
        && let Some(link) = addresses.iter().find(|a| a.ip == local).map(|a| a.ifindex)
        && let Some(other) = addresses
            .iter()
            .find(|a| a.ifindex == link && a.scope == 0 && Family::of(a.ip) != Family::of(local))
    {
        hops.insert(Family::of(other.ip), other.ip);
    }
    hops
}

struct Connection {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    buffer: BytesMut,
    local: IpAddr,
}

async fn run(
    config: SessionConfig,
    routes: Routes,
    mut commands: mpsc::UnboundedReceiver<Command>,
    status: watch::Sender<SessionStatus>,
    metrics: SessionMetrics,
    bfd: Option<Bfd>,
) {
    let peer = &config.peer;
    let target = SocketAddr::new(peer.address, peer.port);
    let options = netio::tcp::ConnectOptions {
        peer: target,
        source: peer.source,
        md5_key: config.md5_key.clone(),
        ttl: ttl(peer),
    };
    let mut fsm = Fsm::new(
        local_open(peer),
        peer.remote_asn,
        peer.keepalive,
        peer.connect_time,
    );
    let mut wanted = routes;
    let mut rib = AdjRibOut::default();
    let mut view: Option<SessionView> = None;
    let mut connection: Option<Connection> = None;
    let mut connecting: Option<
        std::pin::Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>>,
    > = None;
    let mut pending = fsm.handle(Instant::now(), Event::Start);
    let mut stopped = false;
    // The BFD session beside this one, once the local address is known.
    let mut bfd_session: Option<Registration> = None;
    let mut bfd_was_up = false;
    let mut bfd_state: Option<BfdState> = None;
    loop {
        // Carry out the actions; each may produce more events (a failed write).
        while !pending.is_empty() {
            let actions = std::mem::take(&mut pending);
            for action in actions {
                match action {
                    Action::Connect => {
                        let options = options.clone();
                        connecting =
                            Some(Box::pin(async move { netio::tcp::connect(&options).await }));
                    }
                    Action::Send(message) => {
                        if let Message::Notification(_) = &message {
                            metrics.notifications_sent.inc();
                        }
                        if let Err(e) = send(&mut connection, &message).await {
                            pending
                                .extend(fsm.handle(Instant::now(), Event::Closed(e.to_string())));
                        }
                    }
                    Action::Close => {
                        connection = None;
                        connecting = None;
                    }
                    Action::Up(negotiated) => {
                        let local = connection.as_ref().map(|c| c.local);
                        let v = session_view(peer, &negotiated, local);
                        info!(peer = %peer.name, router = %target, asn = negotiated.peer_asn,
                              hold_time = negotiated.hold_time, families = ?v.families,
                              "BGP session established");
                        rib.clear();
                        let mut messages: Vec<Message> = rib
                            .sync(&v, &wanted)
                            .into_iter()
                            .map(Message::Update)
                            .collect();
                        messages.extend(end_of_rib(&v.families).into_iter().map(Message::Update));
                        view = Some(v);
                        if let Err(e) = send_all(&mut connection, &messages, &metrics).await {
                            pending
                                .extend(fsm.handle(Instant::now(), Event::Closed(e.to_string())));
                        }
                    }
                    Action::Resend => {
                        if let Some(v) = &view {
                            rib.clear();
                            let messages: Vec<Message> = rib
                                .sync(v, &wanted)
                                .into_iter()
                                .map(Message::Update)
                                .collect();
                            if let Err(e) = send_all(&mut connection, &messages, &metrics).await {
                                pending.extend(
                                    fsm.handle(Instant::now(), Event::Closed(e.to_string())),
                                );
                            }
                        }
                    }
                    Action::Down(why) => {
                        if !stopped {
                            warn!(peer = %peer.name, router = %target, error = %why, "BGP session down");
                        }
                        rib.clear();
                        view = None;
                    }
                }
            }
        }
        publish(
            &status,
            &fsm,
            &rib,
            &wanted,
            view.as_ref(),
            connection.as_ref(),
            bfd_state,
        );
        // A stopped session leaves the gauges to the session that replaces it (same peer).
        if !stopped {
            metrics.up.set(i64::from(fsm.state() == State::Established));
            metrics.announced.set(rib.sent().len() as i64);
        }
        if stopped && fsm.state() == State::Idle && fsm.next_deadline().is_none() {
            return;
        }
        let deadline = fsm.next_deadline();
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Routes(routes)) => {
                    wanted = routes;
                    if let (Some(v), State::Established) = (&view, fsm.state()) {
                        let messages: Vec<Message> =
                            rib.sync(v, &wanted).into_iter().map(Message::Update).collect();
                        if let Err(e) = send_all(&mut connection, &messages, &metrics).await {
                            pending.extend(fsm.handle(Instant::now(), Event::Closed(e.to_string())));
                        }
                    }
                }
                Some(Command::Stop(reason)) => {
                    stopped = !matches!(reason, StopReason::Reconfigured | StopReason::BfdDown);
                    pending = fsm.handle(Instant::now(), Event::Stop(reason));
                }
                None => {
                    // The owner is gone: the speaker is stopping.
                    stopped = true;
                    pending = fsm.handle(Instant::now(), Event::Stop(StopReason::Shutdown));
                }
            },
            result = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                connecting = None;
                match result {
                    Ok(stream) => {
                        let local = stream.local_addr().map(|a| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                        if peer.router_id.is_none() {
                            fsm.set_router_id(default_router_id(local, &config.node));
                        }
                        if let (Some(bfd), Some(timers)) = (&bfd, config.bfd) {
                            let key = SessionKey { peer: peer.address, local };
                            if bfd_session.as_ref().is_none_or(|r| r.key() != key) {
                                bfd_session = Some(bfd.add(key, timers));
                                bfd_was_up = false;
                                bfd_state = Some(BfdState::Down);
                            }
                        }
                        let (reader, writer) = stream.into_split();
                        connection = Some(Connection { reader, writer, buffer: BytesMut::with_capacity(8192), local });
                        pending = fsm.handle(Instant::now(), Event::Connected);
                    }
                    Err(e) => pending = fsm.handle(Instant::now(), Event::ConnectFailed(e.to_string())),
                }
            },
            events = read(&mut connection), if connection.is_some() => {
                for event in events {
                    match &event {
                        Event::Received(Message::Update(_)) => { metrics.updates_received.inc(); }
                        Event::Received(Message::Notification(_)) => { metrics.notifications_received.inc(); }
                        _ => {}
                    }
                    pending.extend(fsm.handle(Instant::now(), event));
                }
            },
            () = sleep_until(deadline), if deadline.is_some() => {
                pending = fsm.handle(Instant::now(), Event::Timer);
            },
            r = async { bfd_session.as_mut().expect("guarded").state.changed().await }, if bfd_session.is_some() => {
                if r.is_err() {
                    bfd_session = None;
                    continue;
                }
                let state = *bfd_session.as_ref().expect("guarded").state.borrow();
                bfd_state = Some(state);
                let up = state == BfdState::Up;
                if !stopped {
                    metrics.bfd_up.set(i64::from(up));
                }
                if bfd_was_up && !up && fsm.state() != State::Idle {
                    pending = fsm.handle(Instant::now(), Event::Stop(StopReason::BfdDown));
                }
                bfd_was_up = up;
            },
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await;
    }
}

fn session_view(peer: &PeerConfig, negotiated: &Negotiated, local: Option<IpAddr>) -> SessionView {
    SessionView {
        local_asn: peer.local_asn,
        ibgp: negotiated.ibgp,
        four_octet_as: negotiated.four_octet_as,
        families: negotiated.families.clone(),
        next_hops: local.map(next_hops).unwrap_or_default(),
    }
}

fn publish(
    status: &watch::Sender<SessionStatus>,
    fsm: &Fsm,
    rib: &AdjRibOut,
    wanted: &Routes,
    view: Option<&SessionView>,
    connection: Option<&Connection>,
    bfd: Option<BfdState>,
) {
    let held_back = view.map_or(0, |v| {
        wanted.keys().filter(|p| !v.carries(p.family())).count()
    });
    let next = SessionStatus {
        state: fsm.state(),
        last_error: fsm.last_error().map(str::to_string),
        routes_sent: rib.sent().len(),
        held_back,
        router: fsm.negotiated().map(|n| (n.peer_asn, n.peer_id)),
        local_address: connection.map(|c| c.local),
        bfd,
    };
    status.send_if_modified(|s| {
        let changed = *s != next;
        *s = next;
        changed
    });
}

async fn send(connection: &mut Option<Connection>, message: &Message) -> std::io::Result<()> {
    let Some(c) = connection.as_mut() else {
        return Ok(());
    };
    let bytes = encode_message(message)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    c.writer.write_all(&bytes).await
}

async fn send_all(
    connection: &mut Option<Connection>,
    messages: &[Message],
    metrics: &SessionMetrics,
) -> std::io::Result<()> {
    let Some(c) = connection.as_mut() else {
        return Ok(());
    };
    let mut out = BytesMut::new();
    for m in messages {
        out.extend_from_slice(
            &encode_message(m)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?,
        );
    }
    c.writer.write_all(&out).await?;
    let updates = messages
        .iter()
        .filter(|m| matches!(m, Message::Update(_)))
        .count() as u64;
    metrics.updates_sent.inc_by(updates);
    Ok(())
}

/// Reads what arrived and splits it into messages; a closed connection or a framing error ends
/// the list.
async fn read(connection: &mut Option<Connection>) -> Vec<Event> {
    let Some(c) = connection.as_mut() else {
        return std::future::pending().await;
    };
    match c.reader.read_buf(&mut c.buffer).await {
        Ok(0) => return vec![Event::Closed("the router closed the connection".into())],
        Ok(_) => {}
        Err(e) => return vec![Event::Closed(e.to_string())],
    }
    let (messages, error) = split_messages(&mut c.buffer);
    let mut events: Vec<Event> = messages.into_iter().map(Event::Received).collect();
    events.extend(error.map(Event::Malformed));
    events
}
