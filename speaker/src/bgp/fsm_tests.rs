use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use rustbgpd_wire::notification::{cease_subcode, open_subcode};
use rustbgpd_wire::{Capability, OpenMessage, RouteRefreshMessage, UpdateMessage};

use super::*;
use ferrolb_crds::Family;

use crate::bgp::open::Restart;

const LOCAL_ASN: u32 = 64512;
const ROUTER_ASN: u32 = 64513;

fn local(gr: bool) -> LocalOpen {
    LocalOpen {
        asn: LOCAL_ASN,
        hold_time: 9,
        router_id: Ipv4Addr::new(198, 51, 100, 11),
        families: BTreeSet::from([Family::V4]),
        graceful_restart: gr.then_some(Restart { restarted: true }),
    }
}

fn router_open(hold: u16, gr: bool) -> Message {
    let mut capabilities = vec![Capability::FourOctetAs { asn: ROUTER_ASN }];
    if gr {
        capabilities.push(Capability::GracefulRestart {
            restart_state: false,
            notification: false,
            restart_time: 120,
            families: vec![],
        });
    }
    Message::Open(OpenMessage {
        version: 4,
        my_as: ROUTER_ASN as u16,
        hold_time: hold,
        bgp_identifier: Ipv4Addr::new(198, 51, 100, 1),
        capabilities,
    })
}

fn fsm(gr: bool) -> Fsm {
    Fsm::new(
        local(gr),
        RemoteAsn::Fixed(ROUTER_ASN),
        None,
        Duration::from_secs(8),
    )
}

/// Brings `f` to Established at `t0`; returns the actions of the last step.
fn establish(f: &mut Fsm, t0: Instant, router_hold: u16, router_gr: bool) -> Vec<Action> {
    assert_eq!(f.handle(t0, Event::Start), vec![Action::Connect]);
    assert_eq!(f.state(), State::Connect);
    let sent = f.handle(t0, Event::Connected);
    assert!(matches!(&sent[..], [Action::Send(Message::Open(_))]));
    assert_eq!(f.state(), State::OpenSent);
    assert_eq!(
        f.handle(t0, Event::Received(router_open(router_hold, router_gr))),
        vec![Action::Send(Message::Keepalive)]
    );
    assert_eq!(f.state(), State::OpenConfirm);
    let up = f.handle(t0, Event::Received(Message::Keepalive));
    assert_eq!(f.state(), State::Established);
    up
}

fn downs(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Down(why) => Some(why.as_str()),
            _ => None,
        })
        .collect()
}

fn notification(actions: &[Action]) -> Option<(NotificationCode, u8)> {
    actions.iter().find_map(|a| match a {
        Action::Send(Message::Notification(n)) => Some((n.code, n.subcode)),
        _ => None,
    })
}

#[test]
fn the_happy_path_reaches_established_with_negotiated_timers() {
    let t0 = Instant::now();
    let mut f = fsm(false);
    let up = establish(&mut f, t0, 30, false);
    let [Action::Up(n)] = &up[..] else {
        panic!("{up:?}")
    };
    assert_eq!((n.hold_time, n.keepalive, n.peer_asn), (9, 3, ROUTER_ASN));
    assert_eq!(f.negotiated().unwrap().hold_time, 9);
    assert_eq!(f.last_error(), None);
    // Keepalives every 3 s; the hold timer is 9 s from the last message received.
    assert_eq!(f.next_deadline(), Some(t0 + Duration::from_secs(3)));
    assert_eq!(
        f.handle(t0 + Duration::from_secs(3), Event::Timer),
        vec![Action::Send(Message::Keepalive)]
    );
    assert!(
        f.handle(
            t0 + Duration::from_secs(5),
            Event::Received(Message::Keepalive)
        )
        .is_empty()
    );
    // No hold expiry at 9 s: the KEEPALIVE at 5 s moved it to 14 s.
    let at9 = f.handle(t0 + Duration::from_secs(9), Event::Timer);
    assert_eq!(at9, vec![Action::Send(Message::Keepalive)]);
    assert_eq!(f.state(), State::Established);
}

#[test]
fn silence_for_the_hold_time_drops_the_session_with_hold_timer_expired() {
    let t0 = Instant::now();
    let mut f = fsm(false);
    establish(&mut f, t0, 9, false);
    let mut t = t0;
    let mut last = Vec::new();
    while f.state() == State::Established {
        t = f.next_deadline().unwrap();
        last = f.handle(t, Event::Timer);
    }
    assert_eq!(t, t0 + Duration::from_secs(9));
    assert_eq!(
        notification(&last),
        Some((NotificationCode::HoldTimerExpired, 0))
    );
    assert!(last.contains(&Action::Close));
    assert_eq!(
        downs(&last),
        ["hold timer expired: nothing from the router for 9s"]
    );
    // Retry after 1 s, then connect again.
    assert_eq!(f.next_deadline(), Some(t + FIRST_RETRY));
    assert_eq!(
        f.handle(t + FIRST_RETRY, Event::Timer),
        vec![Action::Connect]
    );
}

#[test]
fn a_wrong_asn_is_refused_with_bad_peer_as_and_retried_with_backoff() {
    let t0 = Instant::now();
    let mut f = Fsm::new(
        local(false),
        RemoteAsn::Fixed(65000),
        None,
        Duration::from_secs(8),
    );
    let mut t = t0;
    let mut waits = Vec::new();
    f.handle(t, Event::Start);
    for _ in 0..6 {
        f.handle(t, Event::Connected);
        let out = f.handle(t, Event::Received(router_open(90, false)));
        assert_eq!(
            notification(&out),
            Some((NotificationCode::OpenMessage, open_subcode::BAD_PEER_AS))
        );
        assert_eq!(
            out.last(),
            Some(&Action::Down(f.last_error().unwrap().to_string()))
        );
        assert!(f.last_error().unwrap().contains("expected AS 65000"));
        let next = f.next_deadline().unwrap();
        waits.push((next - t).as_secs());
        t = next;
        assert_eq!(f.handle(t, Event::Timer), vec![Action::Connect]);
    }
    assert_eq!(waits, [1, 2, 4, 8, 8, 8], "backs off up to connectTime");
}

#[test]
fn connect_failures_and_timeouts_retry_and_say_why() {
    let t0 = Instant::now();
    let mut f = fsm(false);
    f.handle(t0, Event::Start);
    let out = f.handle(t0, Event::ConnectFailed("connection refused".into()));
    assert_eq!(downs(&out), ["cannot connect: connection refused"]);
    assert!(!out.contains(&Action::Close), "nothing to close");
    let t1 = f.next_deadline().unwrap();
    assert_eq!(f.handle(t1, Event::Timer), vec![Action::Connect]);
    // No answer at all: the connect deadline closes the attempt.
    assert_eq!(f.next_deadline(), Some(t1 + CONNECT_TIMEOUT));
    let out = f.handle(t1 + CONNECT_TIMEOUT, Event::Timer);
    assert_eq!(out[0], Action::Close);
    assert_eq!(downs(&out), ["cannot connect: no answer within 10s"]);
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn a_notification_from_the_router_is_reported_in_words() {
    let t0 = Instant::now();
    let mut f = fsm(false);
    establish(&mut f, t0, 90, false);
    let mut data = vec![7u8];
    data.extend_from_slice(b"bye now");
    let out = f.handle(
        t0,
        Event::Received(Message::Notification(NotificationMessage::new(
            NotificationCode::Cease,
            cease_subcode::ADMINISTRATIVE_SHUTDOWN,
            Bytes::from(data),
        ))),
    );
    assert_eq!(notification(&out), None, "never answer a NOTIFICATION");
    assert_eq!(
        downs(&out),
        ["the router sent NOTIFICATION Cease, Administrative Shutdown (6/2): \"bye now\""]
    );
}

#[test]
fn garbage_and_out_of_order_messages_get_the_right_notification() {
    let t0 = Instant::now();
    let mut f = fsm(false);
    f.handle(t0, Event::Start);
    f.handle(t0, Event::Connected);
    let out = f.handle(t0, Event::Received(Message::Keepalive));
    assert_eq!(notification(&out), Some((NotificationCode::FsmError, 1)));
    assert_eq!(downs(&out), ["the router sent KEEPALIVE in state OpenSent"]);

    let mut f = fsm(false);
    establish(&mut f, t0, 90, false);
    let out = f.handle(t0, Event::Received(router_open(90, false)));
    assert_eq!(notification(&out), Some((NotificationCode::FsmError, 3)));

    let mut f = fsm(false);
    establish(&mut f, t0, 90, false);
    let out = f.handle(t0, Event::Malformed(DecodeError::InvalidMarker));
    assert_eq!(
        notification(&out).map(|n| n.0),
        Some(NotificationCode::MessageHeader)
    );
    assert!(downs(&out)[0].starts_with("the router sent a malformed message"));
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn route_refresh_asks_for_everything_again_and_updates_are_ignored() {
    let t0 = Instant::now();
    let mut f = fsm(false);
    establish(&mut f, t0, 90, false);
    assert_eq!(
        f.handle(
            t0,
            Event::Received(Message::RouteRefresh(RouteRefreshMessage::new(
                rustbgpd_wire::Afi::Ipv4,
                rustbgpd_wire::Safi::Unicast
            )))
        ),
        vec![Action::Resend]
    );
    let empty = UpdateMessage::build(
        &[],
        &[],
        &[],
        true,
        false,
        rustbgpd_wire::Ipv4UnicastMode::Body,
    );
    assert!(
        f.handle(t0, Event::Received(Message::Update(empty)))
            .is_empty()
    );
    assert_eq!(f.state(), State::Established);
}

#[test]
fn stops_send_the_matching_cease() {
    let t0 = Instant::now();
    for (reason, subcode, retries) in [
        (
            StopReason::Deconfigured,
            cease_subcode::PEER_DECONFIGURED,
            false,
        ),
        (
            StopReason::Shutdown,
            cease_subcode::ADMINISTRATIVE_SHUTDOWN,
            false,
        ),
        (StopReason::BfdDown, cease_subcode::BFD_DOWN, true),
    ] {
        let mut f = fsm(false);
        establish(&mut f, t0, 90, false);
        let out = f.handle(t0, Event::Stop(reason));
        assert_eq!(notification(&out), Some((NotificationCode::Cease, subcode)));
        assert!(out.contains(&Action::Close));
        assert_eq!(downs(&out).len(), 1);
        assert_eq!(f.state(), State::Idle);
        assert_eq!(f.next_deadline().is_some(), retries, "{reason:?}");
    }
    let mut f = fsm(false);
    establish(&mut f, t0, 90, false);
    let out = f.handle(t0, Event::Stop(StopReason::Reconfigured));
    assert_eq!(
        notification(&out),
        Some((
            NotificationCode::Cease,
            cease_subcode::OTHER_CONFIGURATION_CHANGE
        ))
    );
    assert!(out.contains(&Action::Connect), "reconnects at once");
}

#[test]
fn graceful_restart_shutdown_closes_without_a_notification() {
    let t0 = Instant::now();
    let mut f = fsm(true);
    establish(&mut f, t0, 90, true);
    let out = f.handle(t0, Event::Stop(StopReason::Shutdown));
    assert_eq!(notification(&out), None, "the router must keep the routes");
    assert!(out.contains(&Action::Close));
    // A router that does not speak graceful restart gets the Cease.
    let mut f = fsm(true);
    establish(&mut f, t0, 90, false);
    let out = f.handle(t0, Event::Stop(StopReason::Shutdown));
    assert!(notification(&out).is_some());
}

#[test]
fn the_restart_bit_is_set_on_the_first_session_only() {
    let t0 = Instant::now();
    let mut f = fsm(true);
    f.handle(t0, Event::Start);
    let restart_bit = |actions: &[Action]| {
        actions.iter().find_map(|a| match a {
            Action::Send(Message::Open(o)) => o.capabilities.iter().find_map(|c| match c {
                Capability::GracefulRestart { restart_state, .. } => Some(*restart_state),
                _ => None,
            }),
            _ => None,
        })
    };
    assert_eq!(restart_bit(&f.handle(t0, Event::Connected)), Some(true));
    f.handle(t0, Event::Received(router_open(90, true)));
    f.handle(t0, Event::Received(Message::Keepalive));
    f.handle(t0, Event::Closed("reset".into()));
    let t1 = f.next_deadline().unwrap();
    f.handle(t1, Event::Timer);
    assert_eq!(restart_bit(&f.handle(t1, Event::Connected)), Some(false));
}

#[test]
fn zero_hold_time_means_no_timers() {
    let t0 = Instant::now();
    let mut f = fsm(false);
    establish(&mut f, t0, 0, false);
    assert_eq!(f.next_deadline(), None);
}

#[test]
fn events_that_do_not_apply_are_ignored() {
    let t0 = Instant::now();
    let mut f = fsm(false);
    assert!(f.handle(t0, Event::Closed("x".into())).is_empty());
    assert!(f.handle(t0, Event::ConnectFailed("x".into())).is_empty());
    assert!(f.handle(t0, Event::Timer).is_empty());
    assert_eq!(f.handle(t0, Event::Connected), vec![Action::Close]);
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn messages_after_a_refusal_do_not_replace_its_reason() {
    let t0 = Instant::now();
    let mut f = Fsm::new(
        local(false),
        RemoteAsn::Fixed(65000),
        None,
        Duration::from_secs(8),
    );
    f.handle(t0, Event::Start);
    f.handle(t0, Event::Connected);
    f.handle(t0, Event::Received(router_open(90, false)));
    let reason = f.last_error().unwrap().to_string();
    // The router's NOTIFICATION, read in the same batch, arrives after the session is over.
    let late = f.handle(
        t0,
        Event::Received(Message::Notification(NotificationMessage::new(
            NotificationCode::FsmError,
            0,
            Bytes::new(),
        ))),
    );
    assert!(late.is_empty());
    assert!(
        f.handle(t0, Event::Malformed(DecodeError::InvalidMarker))
            .is_empty()
    );
    assert_eq!(f.last_error(), Some(reason.as_str()));
}
