use super::*;

const ME: u32 = 11;
const PEER: u32 = 99;

fn peer(state: BfdState, your: u32) -> Control {
    Control {
        diag: diag::NONE,
        state,
        poll: false,
        final_: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: PEER,
        your_discriminator: your,
        desired_min_tx: 300_000,
        required_min_rx: 300_000,
        required_min_echo_rx: 0,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Takes a session from Down to Up through the three-way handshake.
fn up(now: Instant) -> BfdSession {
    let mut s = BfdSession::new(BfdConfig::default(), ME, now);
    let (first, _) = s.poll(now, 0.0);
    let first = first.unwrap();
    assert_eq!((first.state, first.your_discriminator), (BfdState::Down, 0));
    assert_eq!(first.desired_min_tx, 1_000_000, "slow until Up");
    assert_eq!(
        s.receive(now, &peer(BfdState::Down, 0)),
        Some(BfdState::Init)
    );
    assert_eq!(s.receive(now, &peer(BfdState::Up, ME)), Some(BfdState::Up));
    s
}

#[test]
fn the_three_way_handshake_brings_it_up_and_a_poll_speeds_it_up() {
    let t0 = Instant::now();
    let mut s = up(t0);
    let (p, _) = s.poll(t0, 0.0);
    let p = p.unwrap();
    assert_eq!(p.state, BfdState::Up);
    assert_eq!(p.your_discriminator, PEER);
    assert!(p.poll, "the faster rate is announced with a Poll");
    assert_eq!(p.desired_min_tx, 300_000);
    // The peer's Final ends the poll.
    let mut fin = peer(BfdState::Up, ME);
    fin.final_ = true;
    assert_eq!(s.receive(t0, &fin), None);
    let next = s.next_deadline().unwrap();
    let (p, _) = s.poll(next, 1.0);
    assert!(!p.unwrap().poll);
}

#[test]
fn intervals_are_jittered_between_75_and_100_percent() {
    let t0 = Instant::now();
    let mut s = up(t0);
    s.poll(t0, 0.0);
    let a = s.next_tx.unwrap() - t0;
    assert_eq!(a, ms(225));
    let (_, _) = s.poll(t0 + a, 1.0);
    assert_eq!(s.next_tx.unwrap() - (t0 + a), ms(300));
}

#[test]
fn silence_for_the_detection_time_takes_it_down() {
    let t0 = Instant::now();
    let mut s = up(t0);
    // 3 x max(300 ms, 300 ms).
    assert_eq!(s.detect_deadline, Some(t0 + ms(900)));
    let (_, changed) = s.poll(t0 + ms(899), 0.5);
    assert_eq!(changed, None);
    let (_, changed) = s.poll(t0 + ms(900), 0.5);
    assert_eq!(changed, Some(BfdState::Down));
    assert_eq!(s.remote_discriminator(), 0);
    let (p, _) = s.poll(s.next_deadline().unwrap(), 0.5);
    let p = p.unwrap();
    assert_eq!(
        (p.state, p.diag),
        (BfdState::Down, diag::DETECTION_TIME_EXPIRED)
    );
    assert_eq!(p.desired_min_tx, 1_000_000, "slow again");
}

#[test]
fn packets_keep_it_up() {
    let t0 = Instant::now();
    let mut s = up(t0);
    for i in 1..20 {
        let now = t0 + ms(250 * i);
        assert_eq!(s.receive(now, &peer(BfdState::Up, ME)), None);
        assert_eq!(s.poll(now, 0.5).1, None);
    }
    assert_eq!(s.state(), BfdState::Up);
}

#[test]
fn the_peer_going_down_or_admin_down_takes_it_down() {
    let t0 = Instant::now();
    let mut s = up(t0);
    assert_eq!(
        s.receive(t0, &peer(BfdState::Down, ME)),
        Some(BfdState::Down)
    );
    let mut s = up(t0);
    assert_eq!(
        s.receive(t0, &peer(BfdState::AdminDown, ME)),
        Some(BfdState::Down)
    );
    assert_eq!(s.packet().diag, diag::NEIGHBOR_DOWN);
}

#[test]
fn packets_for_another_session_or_out_of_turn_are_ignored() {
    let t0 = Instant::now();
    let mut s = BfdSession::new(BfdConfig::default(), ME, t0);
    assert_eq!(s.receive(t0, &peer(BfdState::Down, 12345)), None);
    assert_eq!(s.remote_discriminator(), 0);
    // Your Discriminator 0 with a state other than Down/AdminDown: discarded.
    assert_eq!(s.receive(t0, &peer(BfdState::Up, 0)), None);
    assert_eq!(s.state(), BfdState::Down);
}

#[test]
fn a_poll_is_answered_with_final_at_once() {
    let t0 = Instant::now();
    let mut s = up(t0);
    s.poll(t0, 0.0);
    let mut poll = peer(BfdState::Up, ME);
    poll.poll = true;
    s.receive(t0 + ms(10), &poll);
    assert_eq!(s.next_deadline(), Some(t0 + ms(10)));
    let (p, _) = s.poll(t0 + ms(10), 0.0);
    assert!(p.unwrap().final_);
    let (p, _) = s.poll(s.next_deadline().unwrap(), 0.0);
    assert!(!p.unwrap().final_);
}

#[test]
fn passive_sessions_wait_for_the_peer() {
    let t0 = Instant::now();
    let config = BfdConfig {
        passive: true,
        ..BfdConfig::default()
    };
    let mut s = BfdSession::new(config, ME, t0);
    assert_eq!(s.next_deadline(), None);
    assert_eq!(s.poll(t0, 0.0).0, None);
    s.receive(t0, &peer(BfdState::Down, 0));
    assert!(s.poll(t0, 0.0).0.is_some());
}

#[test]
fn a_slower_peer_sets_the_detection_time_and_our_rate() {
    let t0 = Instant::now();
    let mut s = up(t0);
    let mut slow = peer(BfdState::Up, ME);
    slow.desired_min_tx = 1_000_000;
    slow.required_min_rx = 500_000;
    slow.detect_mult = 5;
    s.receive(t0, &slow);
    assert_eq!(s.detect_deadline, Some(t0 + Duration::from_secs(5)));
    s.poll(t0, 1.0);
    assert_eq!(
        s.next_tx,
        Some(t0 + ms(500)),
        "never faster than the peer can receive"
    );
}
