//! Tests of the liveness rules, with synthetic instants.

use super::*;

const DEAD: Duration = Duration::from_millis(250);
const FALLBACK: Duration = Duration::from_secs(3);
/// Silence after which a peer is probed: 3/5 of [`DEAD`].
const SUSPECT: Duration = Duration::from_millis(150);
const BOOT: u64 = 7;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A view of speaker `a` started at `t0`, with peers given as `(name, node ready)`.
fn mk_view(t0: Instant, peers: &[(&str, bool)]) -> View {
    let mut v = View::new("a", t0, DEAD, FALLBACK);
    v.set_peers(peers.iter().map(|(n, r)| (n.to_string(), *r)));
    v
}

fn live(v: &View, now: Instant) -> Vec<String> {
    v.evaluate(now).live.into_iter().collect()
}

fn names(ns: &[&str]) -> Vec<String> {
    ns.iter().map(|n| n.to_string()).collect()
}

/// Asserts where `view` comes from and who is live in it.
#[track_caller]
fn assert_view(view: &LiveView, source: ViewSource, live: &[&str]) {
    assert_eq!(view.source, source);
    assert_eq!(view.live.iter().cloned().collect::<Vec<_>>(), names(live));
}

#[test]
fn self_is_live_without_peers() {
    let t0 = Instant::now();
    let v = mk_view(t0, &[]);
    for at in [t0, t0 + ms(1), t0 + FALLBACK, t0 + FALLBACK * 10] {
        assert_view(&v.evaluate(at), ViewSource::Mesh, &["a"]);
    }
}

#[test]
fn self_in_the_peer_list_is_ignored() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("a", false), ("b", false)]);
    assert!(!v.is_peer("a"));
    assert!(!v.alive("a", BOOT, t0 + ms(1)));
    assert_eq!(live(&v, t0 + FALLBACK * 2), names(&["a"]));
}

#[test]
fn peer_heard_within_dead_after_is_live() {
    let t0 = Instant::now() + FALLBACK * 2; // grace over
    let mut v = mk_view(t0 - FALLBACK * 2, &[("b", false), ("c", false)]);
    assert!(v.alive("b", BOOT, t0));
    assert_eq!(live(&v, t0), names(&["a", "b"]));
    assert_eq!(live(&v, t0 + DEAD - ms(1)), names(&["a", "b"]));
    assert_eq!(v.status("b", t0 + ms(10)), Some(Status::Heard(ms(10))));
    assert_eq!(v.status("c", t0 + ms(10)), Some(Status::NeverHeard));
}

#[test]
fn silent_peer_is_dead_after_dead_after() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", false)]);
    v.alive("b", BOOT, t0 + ms(10));
    assert_eq!(live(&v, t0 + ms(10) + DEAD - ms(1)), names(&["a", "b"]));
    assert_eq!(live(&v, t0 + ms(10) + DEAD), names(&["a"]));
    assert_eq!(
        v.status("b", t0 + ms(10) + DEAD),
        Some(Status::Silent(DEAD))
    );
}

#[test]
fn heartbeats_keep_a_peer_live() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", false)]);
    for i in 0..100 {
        let at = t0 + ms(50 * i);
        v.alive("b", BOOT, at);
        assert_eq!(live(&v, at + ms(49)), names(&["a", "b"]));
    }
}

#[test]
fn repeated_heartbeats_report_no_change() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", false)]);
    assert!(v.alive("b", BOOT, t0), "first heartbeat");
    assert!(!v.alive("b", BOOT, t0 + ms(50)), "steady state");
    assert!(v.alive("b", BOOT, t0 + ms(50) + DEAD), "back after silence");
}

#[test]
fn leave_makes_a_peer_dead_at_once() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", true), ("c", true)]);
    v.alive("b", BOOT, t0 + ms(1));
    v.alive("c", BOOT, t0 + ms(1));
    assert!(v.leave("b", t0 + ms(2)));
    assert_eq!(live(&v, t0 + ms(2)), names(&["a", "c"]));
    assert_eq!(v.status("b", t0 + ms(5)), Some(Status::Left(ms(3))));
}

#[test]
fn leave_outranks_start_up_grace() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", true)]);
    assert_eq!(live(&v, t0), names(&["a", "b"]));
    v.leave("b", t0 + ms(1));
    assert_eq!(live(&v, t0 + ms(1)), names(&["a"]));
}

#[test]
fn alive_after_leave_revives_the_peer() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", false)]);
    v.alive("b", BOOT, t0);
    v.leave("b", t0 + ms(10));
    assert_eq!(live(&v, t0 + ms(20)), names(&["a"]));
    assert!(v.alive("b", BOOT, t0 + ms(500)));
    assert_eq!(live(&v, t0 + ms(500)), names(&["a", "b"]));
    assert_eq!(live(&v, t0 + ms(500) + DEAD), names(&["a"]));
}

#[test]
fn fallback_when_no_packet_since_start() {
    let t0 = Instant::now();
    let v = mk_view(t0, &[("b", true), ("c", false)]);
    let before = v.evaluate(t0 + FALLBACK - ms(1));
    assert_eq!(before.source, ViewSource::Mesh);
    assert_view(
        &v.evaluate(t0 + FALLBACK),
        ViewSource::NodeFallback,
        &["a", "b"],
    );
    assert_eq!(v.status("b", t0 + FALLBACK), Some(Status::NodeReady));
    assert_eq!(v.status("c", t0 + FALLBACK), Some(Status::NodeNotReady));
}

#[test]
fn fallback_when_the_mesh_goes_silent_and_back_on_the_next_packet() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", true), ("c", false), ("d", true)]);
    v.alive("b", BOOT, t0 + ms(100));
    v.alive("c", BOOT, t0 + ms(200));
    // Everyone silent: dead after dead_after, mesh still the source.
    let quiet = t0 + ms(200) + DEAD;
    assert_eq!(v.evaluate(quiet).source, ViewSource::Mesh);
    assert_eq!(live(&v, t0 + FALLBACK + ms(100)), names(&["a"]));
    // fallback_after after the last accepted packet: Node readiness decides for d, never
    // heard; b was heard and went silent, which is evidence its Node's readiness cannot undo.
    let fb = t0 + ms(200) + FALLBACK;
    assert_eq!(v.evaluate(fb - ms(1)).source, ViewSource::Mesh);
    assert_view(&v.evaluate(fb), ViewSource::NodeFallback, &["a", "d"]);
    // One packet from anyone: back to the mesh, where only c has been heard.
    assert!(v.alive("c", BOOT, fb + ms(5)));
    assert_view(&v.evaluate(fb + ms(5)), ViewSource::Mesh, &["a", "c"]);
}

#[test]
fn a_crashed_peer_of_a_two_node_cluster_stays_dead() {
    // The other node's speaker crashed; its Node stays Ready for tens of seconds.
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", true)]);
    v.alive("b", BOOT, t0 + ms(10));
    for after in [DEAD, FALLBACK, FALLBACK * 10] {
        assert_view(&v.evaluate(t0 + ms(10) + after), ViewSource::Mesh, &["a"]);
    }
}

#[test]
fn a_leave_also_ends_the_fallback() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", true), ("c", true)]);
    assert_eq!(v.evaluate(t0 + FALLBACK).source, ViewSource::NodeFallback);
    v.leave("b", t0 + FALLBACK + ms(1));
    assert_view(&v.evaluate(t0 + FALLBACK + ms(1)), ViewSource::Mesh, &["a"]);
}

#[test]
fn no_fallback_without_a_ready_peer() {
    let t0 = Instant::now();
    let v = mk_view(t0, &[("b", false), ("c", false)]);
    assert_view(&v.evaluate(t0 + FALLBACK * 5), ViewSource::Mesh, &["a"]);
}

#[test]
fn peers_that_left_stay_dead_in_fallback_and_do_not_cause_it() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", true)]);
    v.alive("b", BOOT, t0);
    v.leave("b", t0 + ms(10));
    // The only Ready peer left: nothing to fall back to, the mesh view stands.
    assert_view(&v.evaluate(t0 + FALLBACK * 5), ViewSource::Mesh, &["a"]);
    // With another Ready peer the fallback happens, without the one that left.
    v.set_peers([("b".to_string(), true), ("c".to_string(), true)]);
    assert_view(
        &v.evaluate(t0 + FALLBACK * 5),
        ViewSource::NodeFallback,
        &["a", "c"],
    );
}

#[test]
fn start_up_grace_counts_ready_unheard_peers_live() {
    let t0 = Instant::now();
    let v = mk_view(t0, &[("b", true), ("c", false)]);
    for at in [t0, t0 + ms(1), t0 + FALLBACK - ms(1)] {
        assert_view(&v.evaluate(at), ViewSource::Mesh, &["a", "b"]);
    }
    assert_eq!(v.status("b", t0), Some(Status::Grace));
    assert_eq!(v.status("c", t0), Some(Status::NeverHeard));
}

#[test]
fn start_up_grace_ends_after_fallback_after_when_the_mesh_works() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", true), ("c", true)]);
    // b heartbeats all along, c is never heard.
    let mut at = t0;
    while at < t0 + FALLBACK + ms(100) {
        v.alive("b", BOOT, at);
        let expect = if at < t0 + FALLBACK {
            names(&["a", "b", "c"])
        } else {
            names(&["a", "b"])
        };
        assert_eq!(live(&v, at), expect, "at {:?}", at - t0);
        assert_eq!(v.evaluate(at).source, ViewSource::Mesh);
        at += ms(50);
    }
}

#[test]
fn start_up_grace_does_not_cover_a_peer_heard_then_silent() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", true)]);
    v.alive("b", BOOT, t0 + ms(5));
    assert_eq!(live(&v, t0 + ms(5) + DEAD), names(&["a"]));
}

#[test]
fn start_up_grace_and_fallback_agree_when_the_mesh_never_works() {
    // Nothing heard: the view is the same set right before and after the fallback begins.
    let t0 = Instant::now();
    let v = mk_view(t0, &[("b", true), ("c", false)]);
    let before = v.evaluate(t0 + FALLBACK - ms(1));
    let after = v.evaluate(t0 + FALLBACK);
    assert_eq!(before.live, after.live);
    assert_eq!(before.source, ViewSource::Mesh);
    assert_eq!(after.source, ViewSource::NodeFallback);
}

#[test]
fn two_speakers_starting_together_agree_at_once() {
    let t0 = Instant::now();
    let mut a = View::new("a", t0, DEAD, FALLBACK);
    let mut b = View::new("b", t0 + ms(30), DEAD, FALLBACK);
    a.set_peers([("b".to_string(), true)]);
    b.set_peers([("a".to_string(), true)]);
    let both = names(&["a", "b"]);
    assert_eq!(live(&a, t0), both);
    assert_eq!(live(&b, t0 + ms(30)), both);
    a.alive("b", BOOT, t0 + ms(31));
    b.alive("a", BOOT, t0 + ms(50));
    for at in [t0 + ms(31), t0 + ms(50), t0 + ms(60)] {
        assert_eq!(live(&a, at), both);
        assert_eq!(live(&b, at), both);
    }
}

#[test]
fn restarted_speaker_sees_running_peers_at_once() {
    // b and c have run for an hour; a restarts and has not heard them yet.
    let t0 = Instant::now();
    let v = mk_view(t0, &[("b", true), ("c", true)]);
    assert_eq!(live(&v, t0), names(&["a", "b", "c"]));
}

#[test]
fn packets_from_unknown_peers_are_ignored() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", true)]);
    assert!(!v.is_peer("x"));
    assert!(!v.alive("x", BOOT, t0 + ms(1)));
    assert!(!v.leave("x", t0 + ms(1)));
    assert_eq!(v.status("x", t0), None);
    assert_eq!(live(&v, t0 + ms(1)), names(&["a", "b"]));
    // An ignored packet does not count as mesh traffic.
    assert_eq!(v.evaluate(t0 + FALLBACK).source, ViewSource::NodeFallback);
}

#[test]
fn peers_removed_from_the_list_disappear() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", false), ("c", false)]);
    v.alive("b", BOOT, t0);
    v.alive("c", BOOT, t0);
    assert_eq!(live(&v, t0 + ms(1)), names(&["a", "b", "c"]));
    v.set_peers([("c".to_string(), false)]);
    assert_eq!(live(&v, t0 + ms(1)), names(&["a", "c"]));
    assert!(!v.is_peer("b"));
}

#[test]
fn peers_kept_in_the_list_keep_their_state() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", false), ("c", false)]);
    v.alive("b", BOOT, t0);
    v.leave("c", t0);
    v.set_peers([
        ("c".to_string(), true),
        ("b".to_string(), true),
        ("b".to_string(), false),
        ("d".to_string(), true),
        ("d".to_string(), false),
    ]);
    assert_eq!(v.status("b", t0 + ms(1)), Some(Status::Heard(ms(1))));
    assert_eq!(v.status("c", t0 + ms(1)), Some(Status::Left(ms(1))));
    // The first of two entries with the same name wins: d, never heard, is Ready.
    assert_eq!(v.status("d", t0 + FALLBACK * 2), Some(Status::NodeReady));
}

#[test]
fn readded_peer_starts_over_as_never_heard() {
    let t0 = Instant::now() + FALLBACK;
    let mut v = mk_view(t0 - FALLBACK, &[("b", true), ("c", true)]);
    v.alive("b", BOOT, t0);
    v.alive("c", BOOT, t0);
    v.set_peers([("c".to_string(), true)]);
    v.set_peers([("b".to_string(), true), ("c".to_string(), true)]);
    assert_eq!(v.status("b", t0 + ms(1)), Some(Status::NeverHeard));
    assert_eq!(live(&v, t0 + ms(1)), names(&["a", "c"]));
}

#[test]
fn node_readiness_does_not_matter_while_the_mesh_works() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", false)]);
    v.alive("b", BOOT, t0 + FALLBACK * 2);
    assert_eq!(live(&v, t0 + FALLBACK * 2 + ms(1)), names(&["a", "b"]));
}

#[test]
fn next_change_is_the_earliest_expiry() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", false), ("c", false), ("d", true)]);
    // Nothing heard: grace end and fallback start coincide.
    assert_eq!(v.next_change(t0), Some(t0 + FALLBACK));
    v.alive("b", BOOT, t0 + ms(10));
    v.alive("c", BOOT, t0 + ms(20));
    // Each peer's suspicion, then its death.
    assert_eq!(v.next_change(t0 + ms(20)), Some(t0 + ms(10) + SUSPECT));
    assert_eq!(
        v.next_change(t0 + ms(10) + SUSPECT),
        Some(t0 + ms(20) + SUSPECT)
    );
    assert_eq!(
        v.next_change(t0 + ms(20) + SUSPECT),
        Some(t0 + ms(10) + DEAD)
    );
    assert_eq!(v.next_change(t0 + ms(10) + DEAD), Some(t0 + ms(20) + DEAD));
    // Then the end of the grace, then the fallback (fallback_after after c's heartbeat).
    assert_eq!(v.next_change(t0 + ms(20) + DEAD), Some(t0 + FALLBACK));
    assert_eq!(v.next_change(t0 + FALLBACK), Some(t0 + ms(20) + FALLBACK));
    assert_eq!(v.next_change(t0 + ms(20) + FALLBACK), None);
}

#[test]
fn the_view_changes_only_when_announced() {
    // Drive the view as the I/O task does, 1 ms at a time: events apply at their instant
    // and re-evaluate only when they report a possible change; otherwise the view is only
    // re-evaluated at the announced next_change. Whenever the true view differs from the
    // last published one, that instant must have been announced.
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", true), ("c", false), ("d", true), ("e", true)]);
    let mut published = v.evaluate(t0);
    let mut due = v.next_change(t0);
    for step in 0..6_500u64 {
        let at = t0 + ms(step);
        let changed = match step {
            s if s % 50 == 0 && s <= 1_000 => v.alive("b", BOOT, at),
            s if s % 50 == 10 && s <= 1_500 => v.alive("c", BOOT, at),
            s if s % 50 == 20 && s <= 1_900 => v.alive("d", BOOT, at),
            2_000 => v.leave("d", at),
            _ => false,
        };
        let truth = v.evaluate(at);
        if changed || due.is_some_and(|d| d <= at) {
            published = truth;
            due = v.next_change(at);
        } else {
            assert_eq!(truth, published, "unannounced change at {step} ms");
        }
    }
    // e was never heard: its Ready Node speaks for it; b went silent and stays dead.
    assert_view(&published, ViewSource::NodeFallback, &["a", "e"]);
}

#[test]
fn huge_durations_do_not_overflow() {
    let t0 = Instant::now();
    let mut v = View::new("a", t0, Duration::MAX, Duration::MAX);
    v.set_peers([("b".to_string(), true)]);
    v.alive("b", BOOT, t0);
    assert_eq!(v.next_change(t0), None);
    assert_eq!(live(&v, t0 + ms(1)), names(&["a", "b"]));
}

#[test]
fn a_silent_peer_is_suspect_and_probed_but_live_until_dead_after() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", false), ("c", false)]);
    v.alive("b", BOOT, t0);
    v.alive("c", BOOT, t0 + SUSPECT);
    assert_eq!(v.suspects(t0 + SUSPECT - ms(1)).count(), 0);
    assert_eq!(v.status("b", t0 + SUSPECT), Some(Status::Suspect(SUSPECT)));
    assert_eq!(v.suspects(t0 + SUSPECT).collect::<Vec<_>>(), ["b"]);
    assert_eq!(live(&v, t0 + DEAD - ms(1)), names(&["a", "b", "c"]));
    assert_eq!(v.next_change(t0 + ms(1)), Some(t0 + SUSPECT));
    assert_eq!(v.next_change(t0 + SUSPECT), Some(t0 + DEAD));
    // A probe answer ends the suspicion without any change to the live set.
    assert!(!v.alive("b", BOOT, t0 + DEAD - ms(1)));
    assert_eq!(v.suspects(t0 + DEAD).count(), 0);
    assert_eq!(live(&v, t0 + DEAD + ms(100)), names(&["a", "b", "c"]));
    // Unanswered, the suspicion ends in death.
    assert_eq!(
        v.status("c", t0 + SUSPECT + DEAD),
        Some(Status::Silent(DEAD))
    );
    assert!(!v.suspects(t0 + SUSPECT + DEAD).any(|n| n == "c"));
}

#[test]
fn an_ended_process_is_dead_at_once_and_only_a_new_process_revives_the_peer() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", true), ("c", true)]);
    v.alive("b", BOOT, t0);
    v.alive("c", BOOT, t0);
    assert!(v.ended("b", BOOT, t0 + ms(5)));
    assert_eq!(live(&v, t0 + ms(5)), names(&["a", "c"]));
    assert_eq!(v.status("b", t0 + ms(7)), Some(Status::Ended(ms(2))));
    assert!(!v.ended("b", BOOT, t0 + ms(6)), "already ended");
    // A heartbeat the dead process sent before it died, arriving late.
    assert!(!v.alive("b", BOOT, t0 + ms(8)));
    assert_eq!(live(&v, t0 + ms(8)), names(&["a", "c"]));
    assert_eq!(
        v.next_change(t0 + ms(8)),
        Some(t0 + SUSPECT),
        "c's suspicion only"
    );
    // The restarted speaker.
    assert!(v.alive("b", BOOT + 1, t0 + ms(900)));
    assert_eq!(
        live(&v, t0 + ms(900)),
        names(&["a", "b"]),
        "c silent by now"
    );
    assert!(!v.ended("x", BOOT, t0), "not a peer");
}

#[test]
fn an_ended_peer_stays_dead_in_fallback_and_within_the_grace() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", true)]);
    assert!(v.ended("b", BOOT, t0 + ms(1)));
    assert_eq!(live(&v, t0 + ms(1)), names(&["a"]));
    assert_eq!(live(&v, t0 + FALLBACK * 3), names(&["a"]));
}

#[test]
fn a_slow_speaker_stretches_its_verdicts() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", false)]);
    v.alive("b", BOOT, t0);
    assert!(v.set_slowness(2));
    assert!(!v.set_slowness(2));
    assert_eq!(v.dead_after(), DEAD * 3);
    assert_eq!(v.status("b", t0 + DEAD), Some(Status::Heard(DEAD)));
    assert_eq!(
        v.status("b", t0 + SUSPECT * 3),
        Some(Status::Suspect(SUSPECT * 3))
    );
    assert_eq!(live(&v, t0 + DEAD * 3 - ms(1)), names(&["a", "b"]));
    assert_eq!(live(&v, t0 + DEAD * 3), names(&["a"]));
    v.set_slowness(1000);
    assert_eq!(v.dead_after(), DEAD * (1 + MAX_SLOWNESS));
    v.set_slowness(0);
    assert_eq!(live(&v, t0 + DEAD), names(&["a"]));
}

#[test]
fn the_end_of_an_older_process_changes_nothing() {
    let t0 = Instant::now();
    let mut v = mk_view(t0, &[("b", false)]);
    v.alive("b", BOOT, t0);
    v.alive("b", BOOT + 1, t0 + ms(5));
    assert!(
        !v.ended("b", BOOT, t0 + ms(6)),
        "the restarted process is the one heard"
    );
    assert_eq!(live(&v, t0 + ms(6)), names(&["a", "b"]));
    assert!(v.ended("b", BOOT + 1, t0 + ms(7)));
    assert_eq!(live(&v, t0 + ms(7)), names(&["a"]));
}
