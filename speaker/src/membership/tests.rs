//! Membership over real UDP sockets on 127.0.0.1 (never any other address), with short timings.
//! Every wait is on the watch channel or a counter, bounded by a timeout.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use prometheus_client::registry::Registry;
use ring::hmac;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::timeout;

use super::packet::{Kind, Signer};
use super::transport::system_unix_ms as unix_ms;
use super::*;

const KEY: &[u8] = b"membership-test-key-0123456789";
const OTHER_KEY: &[u8] = b"another-membership-key-987654321";
const INTERVAL: Duration = Duration::from_millis(20);
const DEAD_AFTER: Duration = Duration::from_millis(100);
/// Allowance for scheduling on a busy machine; the rules themselves are tested in `view.rs`.
const SLACK: Duration = Duration::from_millis(500);

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// Short timings; no fallback within a test unless a test asks for it.
fn fast(node: &str) -> Config {
    let mut cfg = Config::new(node, loopback(), KEY);
    cfg.interval = INTERVAL;
    cfg.dead_after = DEAD_AFTER;
    cfg.fallback_after = Duration::from_secs(30);
    cfg
}

struct Speaker {
    name: String,
    membership: Membership,
    rx: watch::Receiver<LiveView>,
    metrics: Metrics,
}

impl Speaker {
    async fn start(cfg: Config) -> Speaker {
        let metrics = Metrics::register(&mut Registry::default());
        let name = cfg.node.clone();
        let (membership, rx) = Membership::start(cfg, metrics.clone()).await.unwrap();
        Speaker {
            name,
            membership,
            rx,
            metrics,
        }
    }

    /// This speaker as a peer of the others.
    fn as_peer(&self, node_ready: bool) -> Peer {
        Peer {
            name: self.name.clone(),
            addr: self.membership.local_addr(),
            node_ready,
        }
    }

    /// Waits until the live set is exactly `names`.
    async fn wait_live(&mut self, names: &[&str], within: Duration) -> LiveView {
        let want = set(names);
        let what = format!("{} sees {want:?}", self.name);
        wait_view(&mut self.rx, within, &what, |v| v.live == want).await
    }
}

/// Every speaker gets all the others as peers whose Node is not Ready, so that only heartbeats
/// make them live (no start-up grace, no fallback).
fn mesh(speakers: &[&Speaker]) {
    for s in speakers {
        let peers = speakers
            .iter()
            .filter(|o| o.name != s.name)
            .map(|o| o.as_peer(false))
            .collect();
        s.membership.set_peers(peers);
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

async fn wait_view(
    rx: &mut watch::Receiver<LiveView>,
    within: Duration,
    what: &str,
    pred: impl FnMut(&LiveView) -> bool,
) -> LiveView {
    let got = timeout(within, rx.wait_for(pred))
        .await
        .map(|r| r.map(|v| v.clone()));
    match got {
        Ok(Ok(view)) => view,
        Ok(Err(_)) => panic!("{what}: the membership task ended"),
        Err(_) => panic!("{what}: not within {within:?}; view is {:?}", *rx.borrow()),
    }
}

async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let polled = timeout(within, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "{what}: not within {within:?}");
}

/// A test socket that plays a peer by sending hand-made datagrams.
async fn forger() -> UdpSocket {
    UdpSocket::bind(loopback()).await.unwrap()
}

/// The peer `name` whose speaker is the forger `socket`.
fn forged_peer(name: &str, socket: &UdpSocket, node_ready: bool) -> Peer {
    Peer {
        name: name.to_string(),
        addr: socket.local_addr().unwrap(),
        node_ready,
    }
}

fn signer(node: &str, key: &[u8]) -> Signer {
    Signer::new(hmac::Key::new(hmac::HMAC_SHA256, key), node.to_string(), 7)
}

#[tokio::test]
async fn three_speakers_see_each_other() {
    let mut a = Speaker::start(fast("a")).await;
    let mut b = Speaker::start(fast("b")).await;
    let mut c = Speaker::start(fast("c")).await;
    mesh(&[&a, &b, &c]);
    for s in [&mut a, &mut b, &mut c] {
        let view = s.wait_live(&["a", "b", "c"], SLACK).await;
        assert_eq!(view.source, ViewSource::Mesh);
    }
    for s in [&a, &b, &c] {
        assert_eq!(s.metrics.live_peers.get(), 2);
        assert_eq!(s.metrics.fallback.get(), 0);
        assert!(s.metrics.packets_sent.get() > 0);
        assert!(s.metrics.received_count("accepted") > 0);
        assert_eq!(s.metrics.received_count("bad_mac"), 0);
    }
}

#[tokio::test]
async fn a_crashed_speaker_is_known_dead_from_its_kernel() {
    // dead_after is long here, so only the lifeline can explain a quick verdict.
    let slow = |node| Config {
        dead_after: Duration::from_secs(20),
        fallback_after: Duration::from_secs(30),
        ..fast(node)
    };
    let mut a = Speaker::start(slow("a")).await;
    let mut b = Speaker::start(slow("b")).await;
    let mut c = Speaker::start(slow("c")).await;
    mesh(&[&a, &b, &c]);
    for s in [&mut a, &mut b, &mut c] {
        s.wait_live(&["a", "b", "c"], SLACK).await;
    }
    for s in [&a, &b] {
        let m = s.metrics.clone();
        wait_until(SLACK * 4, "lifelines to both peers", || {
            m.lifelines.get() == 2
        })
        .await;
    }
    c.membership.kill();
    for s in [&mut a, &mut b] {
        s.wait_live(&["a", "b"], SLACK).await;
        assert_eq!(s.metrics.live_peers.get(), 1);
        let ended = s
            .metrics
            .peer_deaths
            .get_or_create(&metrics::CauseLabels { cause: "ended" })
            .get();
        assert_eq!(ended, 1);
    }
}

#[tokio::test]
async fn a_peer_that_goes_silent_is_dead_after_dead_after() {
    // A forged peer has no lifeline: only its silence can tell.
    let mut a = Speaker::start(fast("a")).await;
    let x = forger().await;
    a.membership.set_peers(vec![forged_peer("x", &x, false)]);
    let mut s = signer("x", KEY);
    x.send_to(
        &s.sign(Kind::Alive, unix_ms()).unwrap(),
        a.membership.local_addr(),
    )
    .await
    .unwrap();
    a.wait_live(&["a", "x"], SLACK).await;
    a.wait_live(&["a"], DEAD_AFTER + SLACK).await;
    let silent = a
        .metrics
        .peer_deaths
        .get_or_create(&metrics::CauseLabels { cause: "silent" })
        .get();
    assert_eq!(silent, 1);
    assert!(a.metrics.probes_sent.get() > 0, "probed before the verdict");
}

#[tokio::test]
async fn a_leaving_speaker_is_gone_at_once() {
    // dead_after is long here, so only the Leave can explain a quick departure.
    let slow = |node| Config {
        dead_after: Duration::from_secs(20),
        ..fast(node)
    };
    let mut a = Speaker::start(slow("a")).await;
    let mut b = Speaker::start(slow("b")).await;
    let mut c = Speaker::start(slow("c")).await;
    mesh(&[&a, &b, &c]);
    for s in [&mut a, &mut b, &mut c] {
        s.wait_live(&["a", "b", "c"], SLACK).await;
    }
    let mut c_rx = c.rx.clone();
    c.membership.leave().await;
    for s in [&mut a, &mut b] {
        s.wait_live(&["a", "b"], SLACK).await;
    }
    assert!(c_rx.changed().await.is_err(), "c's task has ended");
}

#[tokio::test]
async fn a_speaker_with_another_key_is_ignored() {
    let mut a = Speaker::start(fast("a")).await;
    let mut b = Speaker::start(fast("b")).await;
    let mut m = Speaker::start(Config::new("m", loopback(), OTHER_KEY)).await;
    mesh(&[&a, &b, &m]);
    a.wait_live(&["a", "b"], SLACK).await;
    b.wait_live(&["a", "b"], SLACK).await;
    wait_until(SLACK, "a rejects m's datagrams", || {
        a.metrics.received_count("bad_mac") >= 3
    })
    .await;
    wait_until(SLACK, "m rejects a's datagrams", || {
        m.metrics.received_count("bad_mac") >= 3
    })
    .await;
    assert_eq!(a.rx.borrow().live, set(&["a", "b"]));
    assert_eq!(m.rx.borrow().live, set(&["m"]));
    assert_eq!(m.metrics.received_count("accepted"), 0);
    m.wait_live(&["m"], SLACK).await;
}

#[tokio::test]
async fn every_rejection_is_counted_and_changes_nothing() {
    let mut a = Speaker::start(fast("a")).await;
    let x = forger().await;
    let to = a.membership.local_addr();
    a.membership.set_peers(vec![forged_peer("x", &x, false)]);
    let send = |datagram: Vec<u8>| {
        let x = &x;
        async move { x.send_to(&datagram, to).await.unwrap() }
    };
    let counted = |a: &Speaker, result: &'static str, n: u64| {
        let m = a.metrics.clone();
        async move {
            wait_until(SLACK, result, || m.received_count(result) == n).await;
        }
    };

    send(signer("x", OTHER_KEY).sign(Kind::Alive, unix_ms()).unwrap()).await;
    counted(&a, "bad_mac", 1).await;
    send(signer("y", KEY).sign(Kind::Alive, unix_ms()).unwrap()).await;
    counted(&a, "unknown_peer", 1).await;
    send(b"FLB1 but not a membership datagram".to_vec()).await;
    counted(&a, "malformed", 1).await;
    send(
        signer("x", KEY)
            .sign(Kind::Alive, unix_ms() - 60_000)
            .unwrap(),
    )
    .await;
    counted(&a, "stale", 1).await;
    assert_eq!(a.rx.borrow().live, set(&["a"]));
    assert_eq!(a.metrics.received_count("accepted"), 0);

    // The same peer with the right key is heard, once.
    let good = signer("x", KEY).sign(Kind::Alive, unix_ms()).unwrap();
    send(good.clone()).await;
    a.wait_live(&["a", "x"], SLACK).await;
    send(good).await;
    counted(&a, "replayed", 1).await;
    assert_eq!(a.metrics.received_count("accepted"), 1);
    // Then silent: dead after dead_after.
    a.wait_live(&["a"], DEAD_AFTER + SLACK).await;
}

#[tokio::test]
async fn a_leave_is_undone_by_a_newer_alive() {
    let mut a = Speaker::start(fast("a")).await;
    let x = forger().await;
    let to = a.membership.local_addr();
    a.membership.set_peers(vec![forged_peer("x", &x, false)]);
    let mut s = signer("x", KEY);
    let first_alive = s.sign(Kind::Alive, unix_ms()).unwrap();
    x.send_to(&first_alive, to).await.unwrap();
    a.wait_live(&["a", "x"], SLACK).await;
    x.send_to(&s.sign(Kind::Leave, unix_ms()).unwrap(), to)
        .await
        .unwrap();
    a.wait_live(&["a"], SLACK).await;
    // A replay of the Alive sent before the Leave does not revive x...
    x.send_to(&first_alive, to).await.unwrap();
    let m = a.metrics.clone();
    wait_until(SLACK, "replay rejected", || {
        m.received_count("replayed") == 1
    })
    .await;
    assert_eq!(a.rx.borrow().live, set(&["a"]));
    // ...a new one does.
    x.send_to(&s.sign(Kind::Alive, unix_ms()).unwrap(), to)
        .await
        .unwrap();
    a.wait_live(&["a", "x"], SLACK).await;
}

#[tokio::test]
async fn a_peer_removed_from_the_list_disappears_at_once() {
    let mut a = Speaker::start(fast("a")).await;
    let mut b = Speaker::start(fast("b")).await;
    mesh(&[&a, &b]);
    a.wait_live(&["a", "b"], SLACK).await;
    a.membership.set_peers(Vec::new());
    a.wait_live(&["a"], SLACK).await;
    // b keeps sending, now as an unknown peer.
    let m = a.metrics.clone();
    wait_until(SLACK, "b is unknown", || {
        m.received_count("unknown_peer") > 0
    })
    .await;
    b.wait_live(&["a", "b"], SLACK).await;
}

#[tokio::test]
async fn a_restarted_speaker_sees_ready_peers_live_at_once() {
    let mut a = Speaker::start(fast("a")).await;
    let mut b = Speaker::start(fast("b")).await;
    a.membership.set_peers(vec![b.as_peer(true)]);
    b.membership.set_peers(vec![a.as_peer(true)]);
    a.wait_live(&["a", "b"], SLACK).await;
    // c starts; a and b do not know its address yet, so c cannot have heard them: the view
    // comes from the start-up grace.
    let mut c = Speaker::start(fast("c")).await;
    c.membership
        .set_peers(vec![a.as_peer(true), b.as_peer(true)]);
    let view = c.wait_live(&["a", "b", "c"], SLACK).await;
    assert_eq!(view.source, ViewSource::Mesh);
    assert_eq!(c.metrics.received_count("accepted"), 0);
    // Once a and b learn of c, everyone agrees through heartbeats.
    a.membership
        .set_peers(vec![b.as_peer(true), c.as_peer(true)]);
    b.membership
        .set_peers(vec![a.as_peer(true), c.as_peer(true)]);
    for s in [&mut a, &mut b] {
        s.wait_live(&["a", "b", "c"], SLACK).await;
    }
    let m = c.metrics.clone();
    wait_until(SLACK, "c hears a and b", || {
        m.received_count("accepted") > 0
    })
    .await;
    assert_eq!(c.rx.borrow().live, set(&["a", "b", "c"]));
}

#[tokio::test]
async fn without_heartbeats_node_readiness_decides() {
    let fallback_after = Duration::from_millis(300);
    let mut cfg = fast("a");
    cfg.fallback_after = fallback_after;
    let mut a = Speaker::start(cfg).await;
    // x never answers (as if UDP were blocked) until the test makes it; y's Node is not Ready.
    let x = forger().await;
    let y = forger().await;
    let to = a.membership.local_addr();
    a.membership.set_peers(vec![
        forged_peer("x", &x, true),
        forged_peer("y", &y, false),
    ]);
    // Start-up grace, then the fallback: same set, another source.
    a.wait_live(&["a", "x"], SLACK).await;
    let what = "fallback on";
    let view = wait_view(&mut a.rx, fallback_after + SLACK, what, |v| {
        v.source == ViewSource::NodeFallback
    })
    .await;
    assert_eq!(view.live, set(&["a", "x"]));
    assert_eq!(a.metrics.fallback.get(), 1);
    // One heartbeat: back to the mesh.
    let mut s = signer("x", KEY);
    x.send_to(&s.sign(Kind::Alive, unix_ms()).unwrap(), to)
        .await
        .unwrap();
    let view = wait_view(&mut a.rx, SLACK, "fallback off", |v| {
        v.source == ViewSource::Mesh
    })
    .await;
    assert_eq!(view.live, set(&["a", "x"]));
    assert_eq!(a.metrics.fallback.get(), 0);
    // Silent again: dead after dead_after. x was heard, so its Node's readiness no longer
    // speaks for it (view.rs: evidence wins); that it stays dead is tested there with
    // synthetic time.
    let view = a.wait_live(&["a"], DEAD_AFTER + SLACK).await;
    assert_eq!(view.source, ViewSource::Mesh);
}

#[tokio::test]
async fn start_rejects_bad_settings() {
    let bad: Vec<(&str, Config)> = vec![
        (
            "at least 16 bytes",
            Config::new("a", loopback(), vec![0; 15]),
        ),
        ("1 to 253 bytes", Config::new("", loopback(), KEY)),
        (
            "1 to 253 bytes",
            Config::new("x".repeat(254), loopback(), KEY),
        ),
        (
            "greater than zero",
            Config {
                interval: Duration::ZERO,
                ..fast("a")
            },
        ),
        (
            "longer than interval",
            Config {
                dead_after: INTERVAL,
                ..fast("a")
            },
        ),
        (
            "at least dead_after",
            Config {
                fallback_after: DEAD_AFTER / 2,
                ..fast("a")
            },
        ),
    ];
    for (message, cfg) in bad {
        let metrics = Metrics::register(&mut Registry::default());
        let err = Membership::start(cfg, metrics).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains(message), "{err}");
    }
    let metrics = Metrics::register(&mut Registry::default());
    let cfg = Config::new("a", loopback(), vec![0; 16]);
    let (m, rx) = Membership::start(cfg, metrics).await.unwrap();
    assert_eq!(rx.borrow().live, set(&["a"]));
    m.leave().await;
}

#[test]
fn defaults_and_debug_without_the_key() {
    let cfg = Config::new("a", loopback(), b"super-secret-membership-key".to_vec());
    assert_eq!(cfg.interval, Duration::from_millis(50));
    assert_eq!(cfg.dead_after, Duration::from_millis(250));
    assert_eq!(cfg.fallback_after, Duration::from_secs(3));
    assert_eq!(cfg.max_clock_skew, Duration::from_secs(10));
    let text = format!("{cfg:?}");
    assert!(!text.contains("super-secret"), "{text}");
    assert!(text.contains("<27 bytes>"), "{text}");
}

#[tokio::test]
async fn a_silent_peer_that_answers_probes_stays_live() {
    let mut a = Speaker::start(fast("a")).await;
    let x = forger().await;
    let to = a.membership.local_addr();
    a.membership.set_peers(vec![forged_peer("x", &x, false)]);
    let mut s = signer("x", KEY);
    x.send_to(&s.sign(Kind::Alive, unix_ms()).unwrap(), to)
        .await
        .unwrap();
    a.wait_live(&["a", "x"], SLACK).await;
    // x sends no heartbeat any more; it only answers a's probes, each with an Alive.
    let (verify_key, mut answered) = (hmac::Key::new(hmac::HMAC_SHA256, KEY), 0);
    let mut buf = [0u8; packet::MAX_LEN + 1];
    let mut verifier = Verifier::new(verify_key, Duration::from_secs(10));
    let until = tokio::time::Instant::now() + DEAD_AFTER * 5;
    while tokio::time::Instant::now() < until {
        let Ok(Ok((len, _))) = tokio::time::timeout_at(until, x.recv_from(&mut buf)).await else {
            break;
        };
        let Ok(got) = verifier.check(&buf[..len], unix_ms(), |n| n == "a") else {
            continue;
        };
        if got.packet.kind == Kind::Probe {
            answered += 1;
            x.send_to(&s.sign(Kind::Alive, unix_ms()).unwrap(), to)
                .await
                .unwrap();
        }
        assert_eq!(
            a.rx.borrow().live,
            set(&["a", "x"]),
            "x died although it answered"
        );
    }
    assert!(answered >= 3, "{answered} probes over 5 x dead_after");
    assert!(a.metrics.probes_sent.get() >= answered);
    // Unanswered, the probes end in death, at dead_after.
    a.wait_live(&["a"], DEAD_AFTER + SLACK).await;
}

#[tokio::test]
async fn a_probe_is_answered_at_once_with_an_alive() {
    let mut a = Speaker::start(fast("a")).await;
    let x = forger().await;
    a.membership.set_peers(vec![forged_peer("x", &x, false)]);
    let mut s = signer("x", KEY);
    x.send_to(
        &s.sign(Kind::Probe, unix_ms()).unwrap(),
        a.membership.local_addr(),
    )
    .await
    .unwrap();
    a.wait_live(&["a", "x"], SLACK).await;
    let mut verifier = Verifier::new(
        hmac::Key::new(hmac::HMAC_SHA256, KEY),
        Duration::from_secs(10),
    );
    let mut buf = [0u8; packet::MAX_LEN + 1];
    // The answer comes well before a's next heartbeat would: it is the first datagram unless a
    // heartbeat happened to be due; either way an Alive arrives within one interval.
    let (len, _) = timeout(INTERVAL, x.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let got = verifier
        .check(&buf[..len], unix_ms(), |n| n == "a")
        .unwrap();
    assert_eq!(got.packet.kind, Kind::Alive);
}
