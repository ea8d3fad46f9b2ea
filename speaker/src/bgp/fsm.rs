//! One BGP session's state machine (RFC 4271 §8), with time passed in (pure).
//!
//! The speaker only connects out: it never listens on port 179, so it needs no privilege to
//! bind, and the RFC's `Active` state (waiting for the router to connect) has no use. A failed
//! or dropped session waits in `Idle` for its retry time, which backs off from 1 s to the peer's
//! `connectTime`.
//!
//! The I/O task feeds [`Event`]s and carries out the [`Action`]s; [`Fsm::next_deadline`] says
//! when to feed [`Event::Timer`] next.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rustbgpd_wire::notification::cease_subcode;
use rustbgpd_wire::{DecodeError, Message, NotificationCode, NotificationMessage};

use super::config::RemoteAsn;
use super::open::{LocalOpen, Negotiated, accept_open, build_open};

/// First wait before connecting again after a failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait for the TCP handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Hold time while waiting for the router's OPEN (RFC 4271 §8: "a large value", 4 minutes).
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

/// Where the session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Not connected: stopped, or waiting to retry.
    Idle,
    /// TCP connection under way.
    Connect,
    /// Connected, OPEN sent, waiting for the router's.
    OpenSent,
    /// OPENs exchanged, waiting for the router's KEEPALIVE.
    OpenConfirm,
    /// Up: routes flow.
    Established,
}

impl State {
    /// The name used in metrics, logs and status (RFC 4271's names).
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

/// Why the session is being stopped on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The `BGPPeer` no longer applies to this node: Cease / Peer De-configured, no retry.
    Deconfigured,
    /// Its settings changed: Cease / Other Configuration Change, then reconnect at once.
    Reconfigured,
    /// The speaker is shutting down: with graceful restart negotiated, the connection is just
    /// closed so the router keeps the routes (RFC 4724); otherwise Cease / Administrative
    /// Shutdown. No retry.
    Shutdown,
    /// BFD says the path is down: Cease / BFD Down (RFC 9384), retry with backoff.
    BfdDown,
}

/// What happened.
#[derive(Debug)]
pub enum Event {
    /// Configuration is ready: start connecting.
    Start,
    /// Stop on purpose.
    Stop(StopReason),
    /// The TCP connection is up.
    Connected,
    /// The TCP connection could not be made.
    ConnectFailed(String),
    /// The connection closed or failed while open.
    Closed(String),
    /// A message arrived.
    Received(Message),
    /// Bytes arrived that are no valid message.
    Malformed(DecodeError),
    /// Time passed: check the deadlines.
    Timer,
}

/// What the I/O must do, in order.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Open the TCP connection.
    Connect,
    /// Send this message.
    Send(Message),
    /// Close the connection.
    Close,
    /// The session came up: send every route, then End-of-RIB.
    Up(Negotiated),
    /// The router asked for every route again (ROUTE-REFRESH).
    Resend,
    /// The session went down (or never came up), and why.
    Down(String),
}

/// The state machine of one session.
#[derive(Debug)]
pub struct Fsm {
    local: LocalOpen,
    remote: RemoteAsn,
    keepalive_asked: Option<u16>,
    max_backoff: Duration,
    state: State,
    running: bool,
    negotiated: Option<Negotiated>,
    backoff: Duration,
    retry_at: Option<Instant>,
    connect_deadline: Option<Instant>,
    hold_deadline: Option<Instant>,
    keepalive_due: Option<Instant>,
    last_error: Option<String>,
}

impl Fsm {
    /// A stopped session that will send `local` as its OPEN, accept a router in `remote`, ask
    /// for `keepalive` seconds between KEEPALIVEs, and back off up to `max_backoff`.
    pub fn new(
        local: LocalOpen,
        remote: RemoteAsn,
        keepalive: Option<u16>,
        max_backoff: Duration,
    ) -> Fsm {
        Fsm {
            local,
            remote,
            keepalive_asked: keepalive,
            max_backoff: max_backoff.max(FIRST_RETRY),
            state: State::Idle,
            running: false,
            negotiated: None,
            backoff: FIRST_RETRY,
            retry_at: None,
            connect_deadline: None,
            hold_deadline: None,
            keepalive_due: None,
            last_error: None,
        }
    }

    /// Sets the BGP identifier of the next OPEN (the I/O learns the default, the session's
    /// local IPv4 address, only once connected).
    pub fn set_router_id(&mut self, id: std::net::Ipv4Addr) {
        self.local.router_id = id;
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The session's parameters while it is Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated
            .as_ref()
            .filter(|_| self.state == State::Established)
    }

    /// Why the session last failed, until it is Established again.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The next moment [`Event::Timer`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.retry_at,
            self.connect_deadline,
            self.hold_deadline,
            self.keepalive_due,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Feeds one event; returns what to do.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        match event {
            Event::Start => {
                self.running = true;
                if self.state == State::Idle && self.retry_at.is_none() {
                    return self.connect(now);
                }
                Vec::new()
            }
            Event::Stop(reason) => self.stop(now, reason),
            Event::Connected if self.state == State::Connect => {
                self.connect_deadline = None;
                self.state = State::OpenSent;
                self.hold_deadline = Some(now + OPEN_HOLD_TIME);
                vec![Action::Send(Message::Open(build_open(&self.local)))]
            }
            Event::Connected => vec![Action::Close],
            Event::ConnectFailed(why) => {
                if self.state == State::Connect {
                    self.fail(now, format!("cannot connect: {why}"), None)
                } else {
                    Vec::new()
                }
            }
            Event::Closed(why) => {
                if self.state == State::Idle {
                    Vec::new()
                } else {
                    self.fail(now, format!("connection lost: {why}"), None)
                }
            }
            // Bytes read before the connection was dropped belong to a session that is over.
            Event::Received(_) | Event::Malformed(_)
                if matches!(self.state, State::Idle | State::Connect) =>
            {
                Vec::new()
            }
            Event::Malformed(error) => {
                let (code, subcode, data) = error.to_notification();
                self.fail(
                    now,
                    format!("the router sent a malformed message: {error}"),
                    Some(NotificationMessage::new(code, subcode, data)),
                )
            }
            Event::Received(message) => self.received(now, message),
            Event::Timer => self.timer(now),
        }
    }

    fn connect(&mut self, now: Instant) -> Vec<Action> {
        self.retry_at = None;
        self.state = State::Connect;
        self.connect_deadline = Some(now + CONNECT_TIMEOUT);
        vec![Action::Connect]
    }

    fn received(&mut self, now: Instant, message: Message) -> Vec<Action> {
        match (self.state, message) {
            (State::OpenSent, Message::Open(open)) => {
                match accept_open(&self.local, self.remote, self.keepalive_asked, &open) {
                    Ok(negotiated) => {
                        self.state = State::OpenConfirm;
                        self.arm_timers(now, &negotiated);
                        self.negotiated = Some(negotiated);
                        vec![Action::Send(Message::Keepalive)]
                    }
                    Err(refused) => {
                        self.fail(now, refused.reason.clone(), Some(refused.notification()))
                    }
                }
            }
            (State::OpenConfirm, Message::Keepalive) => {
                self.state = State::Established;
                self.backoff = FIRST_RETRY;
                self.last_error = None;
                // The first session after a restart carried the R bit; later ones do not.
                if let Some(restart) = self.local.graceful_restart.as_mut() {
                    restart.restarted = false;
                }
                let negotiated = self.negotiated.clone().expect("negotiated in OpenConfirm");
                self.reset_hold(now);
                vec![Action::Up(negotiated)]
            }
            (State::Established, Message::Keepalive | Message::Update(_)) => {
                // Routes from the router are not used: the speaker only announces.
                self.reset_hold(now);
                Vec::new()
            }
            (State::Established, Message::RouteRefresh(_)) => vec![Action::Resend],
            (_, Message::Notification(n)) => {
                let why = format!("the router sent NOTIFICATION {}", describe(&n));
                self.fail(now, why, None)
            }
            (state, other) => {
                let name = match other {
                    Message::Open(_) => "OPEN",
                    Message::Update(_) => "UPDATE",
                    Message::Keepalive => "KEEPALIVE",
                    Message::RouteRefresh(_) => "ROUTE-REFRESH",
                    _ => "message",
                };
                self.fail(
                    now,
                    format!("the router sent {name} in state {}", state.name()),
                    Some(NotificationMessage::new(
                        NotificationCode::FsmError,
                        fsm_subcode(state),
                        Bytes::new(),
                    )),
                )
            }
        }
    }

    fn timer(&mut self, now: Instant) -> Vec<Action> {
        if self.retry_at.is_some_and(|t| now >= t) {
            return if self.running {
                self.connect(now)
            } else {
                self.retry_at = None;
                Vec::new()
            };
        }
        if self.connect_deadline.is_some_and(|t| now >= t) {
            let mut out = vec![Action::Close];
            out.extend(self.fail(
                now,
                format!(
                    "cannot connect: no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ),
                None,
            ));
            return out;
        }
        if self.hold_deadline.is_some_and(|t| now >= t) {
            let hold = self
                .negotiated
                .as_ref()
                .map_or(OPEN_HOLD_TIME.as_secs(), |n| u64::from(n.hold_time));
            return self.fail(
                now,
                format!("hold timer expired: nothing from the router for {hold}s"),
                Some(NotificationMessage::new(
                    NotificationCode::HoldTimerExpired,
                    0,
                    Bytes::new(),
                )),
            );
        }
        if let Some(due) = self.keepalive_due
            && now >= due
        {
            let every = self.negotiated.as_ref().map_or(0, |n| n.keepalive);
            self.keepalive_due = Some(now + Duration::from_secs(every.into()));
            return vec![Action::Send(Message::Keepalive)];
        }
        Vec::new()
    }

    fn arm_timers(&mut self, now: Instant, negotiated: &Negotiated) {
        if negotiated.hold_time == 0 {
            self.hold_deadline = None;
            self.keepalive_due = None;
        } else {
            self.hold_deadline = Some(now + Duration::from_secs(negotiated.hold_time.into()));
            self.keepalive_due = Some(now + Duration::from_secs(negotiated.keepalive.into()));
        }
    }

    fn reset_hold(&mut self, now: Instant) {
        if let Some(n) = &self.negotiated
            && n.hold_time > 0
        {
            self.hold_deadline = Some(now + Duration::from_secs(n.hold_time.into()));
        }
    }

    fn stop(&mut self, now: Instant, reason: StopReason) -> Vec<Action> {
        let connected = matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        );
        let graceful = reason == StopReason::Shutdown
            && self.state == State::Established
            && self.local.graceful_restart.is_some()
            && self
                .negotiated
                .as_ref()
                .is_some_and(|n| n.peer_graceful_restart);
        let subcode = match reason {
            StopReason::Deconfigured => cease_subcode::PEER_DECONFIGURED,
            StopReason::Reconfigured => cease_subcode::OTHER_CONFIGURATION_CHANGE,
            StopReason::Shutdown => cease_subcode::ADMINISTRATIVE_SHUTDOWN,
            StopReason::BfdDown => cease_subcode::BFD_DOWN,
        };
        let mut out = Vec::new();
        if connected && !graceful {
            out.push(Action::Send(Message::Notification(
                NotificationMessage::new(NotificationCode::Cease, subcode, Bytes::new()),
            )));
        }
        if self.state != State::Idle {
            out.push(Action::Close);
        }
        let was_established = self.state == State::Established;
        let why = match reason {
            StopReason::Deconfigured => "the BGPPeer no longer applies to this node",
            StopReason::Reconfigured => "the BGPPeer's settings changed",
            StopReason::Shutdown if graceful => {
                "the speaker is stopping (graceful restart: the router keeps the routes)"
            }
            StopReason::Shutdown => "the speaker is stopping",
            StopReason::BfdDown => "BFD reports the path to the router down",
        };
        self.enter_idle();
        match reason {
            StopReason::Deconfigured | StopReason::Shutdown => self.running = false,
            StopReason::Reconfigured => {
                out.extend(self.connect(now));
                return with_down(out, was_established || connected, why);
            }
            StopReason::BfdDown => {
                self.last_error = Some(why.to_string());
                self.schedule_retry(now);
            }
        }
        with_down(out, was_established || connected, why)
    }

    /// Drops the session after an error: NOTIFICATION first if one applies, then close, then
    /// retry after the backoff.
    fn fail(
        &mut self,
        now: Instant,
        why: String,
        notification: Option<NotificationMessage>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(n) = notification {
            out.push(Action::Send(Message::Notification(n)));
        }
        if self.state != State::Idle && self.state != State::Connect || !out.is_empty() {
            out.push(Action::Close);
        }
        self.enter_idle();
        self.last_error = Some(why.clone());
        if self.running {
            self.schedule_retry(now);
        }
        out.push(Action::Down(why));
        out
    }

    fn enter_idle(&mut self) {
        self.state = State::Idle;
        self.negotiated = None;
        self.connect_deadline = None;
        self.hold_deadline = None;
        self.keepalive_due = None;
    }

    fn schedule_retry(&mut self, now: Instant) {
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.max_backoff);
    }
}

fn with_down(mut out: Vec<Action>, was_up: bool, why: &str) -> Vec<Action> {
    if was_up {
        out.push(Action::Down(why.to_string()));
    }
    out
}

/// FSM Error subcodes (RFC 6608): the state the unexpected message arrived in.
fn fsm_subcode(state: State) -> u8 {
    match state {
        State::OpenSent => 1,
        State::OpenConfirm => 2,
        State::Established => 3,
        State::Idle | State::Connect => 0,
    }
}

/// A NOTIFICATION in words: code, subcode and any Shutdown Communication (RFC 9003).
pub fn describe(n: &NotificationMessage) -> String {
    let code = match n.code {
        NotificationCode::MessageHeader => "Message Header Error",
        NotificationCode::OpenMessage => "OPEN Message Error",
        NotificationCode::UpdateMessage => "UPDATE Message Error",
        NotificationCode::HoldTimerExpired => "Hold Timer Expired",
        NotificationCode::FsmError => "Finite State Machine Error",
        NotificationCode::Cease => "Cease",
        NotificationCode::RouteRefreshMessage => "ROUTE-REFRESH Message Error",
        NotificationCode::SendHoldTimerExpired => "Send Hold Timer Expired",
        _ => "unknown error",
    };
    let subcode = match (n.code, n.subcode) {
        (NotificationCode::OpenMessage, 1) => "Unsupported Version Number",
        (NotificationCode::OpenMessage, 2) => "Bad Peer AS",
        (NotificationCode::OpenMessage, 3) => "Bad BGP Identifier",
        (NotificationCode::OpenMessage, 4) => "Unsupported Optional Parameter",
        (NotificationCode::OpenMessage, 6) => "Unacceptable Hold Time",
        (NotificationCode::OpenMessage, 7) => "Unsupported Capability",
        (NotificationCode::Cease, 1) => "Maximum Number of Prefixes Reached",
        (NotificationCode::Cease, 2) => "Administrative Shutdown",
        (NotificationCode::Cease, 3) => "Peer De-configured",
        (NotificationCode::Cease, 4) => "Administrative Reset",
        (NotificationCode::Cease, 5) => "Connection Rejected",
        (NotificationCode::Cease, 6) => "Other Configuration Change",
        (NotificationCode::Cease, 7) => "Connection Collision Resolution",
        (NotificationCode::Cease, 8) => "Out of Resources",
        (NotificationCode::Cease, 10) => "BFD Down",
        _ => "",
    };
    let mut text = format!("{code} ({}/{})", n.code.as_u8(), n.subcode);
    if !subcode.is_empty() {
        text = format!("{code}, {subcode} ({}/{})", n.code.as_u8(), n.subcode);
    }
    // Shutdown Communication: a length byte, then UTF-8 (Cease 2 and 4).
    if n.code == NotificationCode::Cease
        && matches!(n.subcode, 2 | 4)
        && let Some((&len, rest)) = n.data.split_first()
        && let Some(message) = rest.get(..usize::from(len))
        && let Ok(message) = std::str::from_utf8(message)
        && !message.is_empty()
    {
        text.push_str(&format!(": \"{message}\""));
    }
    text
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;
