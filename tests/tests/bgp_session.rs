//! One BGP session of the speaker (in this process, from the host's lab address 198.51.100.1)
//! against real routers in the lab's `router` namespace: FRR and BIRD take the routes with the
//! right next hops and attributes, withdraw them when told, and every refusal (wrong AS,
//! wrong password) ends in a clear error and retries, never a crash.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_crds::BGPPeerSpec;
use ferrolb_crds::community::CommunityValue;
use ferrolb_speaker::bgp::config::peer_config;
use ferrolb_speaker::bgp::fsm::State;
use ferrolb_speaker::bgp::routes::{Attributes, Prefix};
use ferrolb_speaker::bgp::session::{Session, SessionConfig, SessionStatus};
use ferrolb_tests::lab::{BRIDGE_IPV4, BRIDGE_IPV6, Lab};
use ferrolb_tests::router::{
    Kind, NODE_ASN, ROUTER_ASN, ROUTER_IPV4, ROUTER_IPV6, Router, RouterConfig,
};

const TIMEOUT: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn host(s: &str) -> Prefix {
    let a = ip(s);
    Prefix::covering(a, if a.is_ipv4() { 32 } else { 128 })
}

fn session_config(peer: IpAddr, peer_asn: u32, password: Option<&str>) -> SessionConfig {
    let spec = BGPPeerSpec {
        my_asn: NODE_ASN,
        peer_asn: Some(peer_asn),
        peer_address: peer.to_string(),
        peer_port: 179,
        hold_time: Some("9s".into()),
        connect_time: Some("2s".into()),
        password: password.map(str::to_string),
        ..Default::default()
    };
    SessionConfig {
        peer: peer_config("router", &spec).unwrap(),
        md5_key: password.map(|p| p.as_bytes().to_vec()),
        node: "lab-host".into(),
        bfd: None,
    }
}

async fn wait_status(
    session: &Session,
    what: &str,
    mut ok: impl FnMut(&SessionStatus) -> bool,
) -> SessionStatus {
    let mut rx = session.status();
    let result = tokio::time::timeout(TIMEOUT, async {
        loop {
            if ok(&rx.borrow_and_update()) {
                return rx.borrow().clone();
            }
            rx.changed().await.unwrap();
        }
    })
    .await;
    result.unwrap_or_else(|_| panic!("{what}: last status {:?}", session.status().borrow()))
}

async fn wait_rib(
    router: &Router,
    what: &str,
    mut ok: impl FnMut(&BTreeMap<String, ferrolb_tests::router::RibEntry>) -> bool,
) -> BTreeMap<String, ferrolb_tests::router::RibEntry> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let rib = router.rib().unwrap_or_default();
        if ok(&rib) {
            return rib;
        }
        if tokio::time::Instant::now() > deadline {
            let raw = match router.config.kind {
                Kind::Frr => router
                    .vtysh("show bgp ipv4 unicast json")
                    .unwrap_or_default(),
                Kind::Bird => router.birdc("show route all").unwrap_or_default(),
            };
            panic!("{what}: router RIB {rib:?}\n{raw}\n{}", router.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn routes(entries: &[(&str, Attributes)]) -> Arc<BTreeMap<Prefix, Attributes>> {
    Arc::new(entries.iter().map(|(p, a)| (host(p), a.clone())).collect())
}

async fn announce_and_withdraw(kind: Kind, ibgp: bool, over_ipv6: bool) {
    let _lab = tokio::task::spawn_blocking(|| Lab::create(1))
        .await
        .unwrap()
        .unwrap();
    let mut config = RouterConfig::new(kind);
    if ibgp {
        config.asn = NODE_ASN;
    }
    let router_asn = config.asn;
    let router = Router::start(config).unwrap();
    let peer = if over_ipv6 {
        IpAddr::V6(ROUTER_IPV6)
    } else {
        IpAddr::V4(ROUTER_IPV4)
    };
    let attrs = Attributes {
        communities: [
            CommunityValue::Standard(65535, 65282),
            CommunityValue::Large(64512, 7, 8),
        ]
        .into_iter()
        .collect(),
        local_pref: Some(150),
    };
    let session = Session::start(
        session_config(peer, router_asn, None),
        routes(&[
            ("198.51.100.200", attrs.clone()),
            ("2001:db8:1::200", Attributes::default()),
        ]),
        Default::default(),
        None,
    );
    let status = wait_status(&session, "established", |s| s.state == State::Established).await;
    assert_eq!(status.router.map(|r| r.0), Some(router_asn));
    let rib = wait_rib(&router, "both routes in the RIB", |rib| {
        rib.contains_key("198.51.100.200/32") && rib.contains_key("2001:db8:1::200/128")
    })
    .await;
    // The host's lab addresses are the next hops, whichever family the session runs over.
    assert!(
        rib["198.51.100.200/32"]
            .next_hops
            .contains(&IpAddr::V4(BRIDGE_IPV4)),
        "{rib:?} {}",
        router
            .vtysh("show bgp ipv4 unicast json")
            .unwrap_or_default()
    );
    assert!(
        rib["2001:db8:1::200/128"]
            .next_hops
            .contains(&IpAddr::V6(BRIDGE_IPV6)),
        "{rib:?}"
    );
    if kind == Kind::Bird || ibgp {
        // BIRD shows every attribute; FRR's summary JSON carries localPref (iBGP) only.
        if ibgp {
            assert_eq!(rib["198.51.100.200/32"].local_pref, Some(150));
        }
        if kind == Kind::Bird {
            assert!(rib["198.51.100.200/32"].communities.contains("65535:65282"));
            assert!(
                rib["198.51.100.200/32"]
                    .communities
                    .contains("large:64512:7:8")
            );
        }
    }
    session.set_routes(routes(&[("2001:db8:1::200", Attributes::default())]));
    wait_rib(&router, "the IPv4 route withdrawn", |rib| {
        !rib.contains_key("198.51.100.200/32") && rib.contains_key("2001:db8:1::200/128")
    })
    .await;
    let status = wait_status(&session, "one route sent", |s| s.routes_sent == 1).await;
    assert_eq!(status.state, State::Established);
    drop(session);
    wait_rib(&router, "routes gone after a Cease", |rib| rib.is_empty()).await;
}

#[tokio::test]
async fn frr_ebgp_over_ipv4_takes_both_families() {
    announce_and_withdraw(Kind::Frr, false, false).await;
}

#[tokio::test]
async fn frr_ibgp_over_ipv6_takes_both_families_and_local_pref() {
    announce_and_withdraw(Kind::Frr, true, true).await;
}

#[tokio::test]
async fn bird_ebgp_over_ipv4_takes_both_families_and_communities() {
    announce_and_withdraw(Kind::Bird, false, false).await;
}

#[tokio::test]
async fn bird_ibgp_over_ipv6_takes_both_families() {
    announce_and_withdraw(Kind::Bird, true, true).await;
}

#[tokio::test]
async fn a_wrong_asn_is_refused_clearly_and_retried() {
    let _lab = tokio::task::spawn_blocking(|| Lab::create(1))
        .await
        .unwrap()
        .unwrap();
    let router = Router::start(RouterConfig::new(Kind::Frr)).unwrap();
    let session = Session::start(
        session_config(IpAddr::V4(ROUTER_IPV4), 65000, None),
        routes(&[]),
        Default::default(),
        None,
    );
    // Either side may notice first: our check of the router's OPEN, or the router's
    // NOTIFICATION. (A connection that reaches FRR before zebra has told bgpd about its
    // interfaces is refused with an FSM error instead; the retry then meets the real answer.)
    let says_why = |e: &str| {
        e.contains(&format!(
            "the router says it is in AS {ROUTER_ASN}, expected AS 65000"
        )) || e.contains("Bad Peer AS")
    };
    let status = wait_status(&session, "refused for its AS", |s| {
        s.last_error.as_deref().is_some_and(says_why)
    })
    .await;
    assert_ne!(status.state, State::Established, "{}", router.log_tail());
    assert!(router.established().unwrap().is_empty());
    // It keeps trying (the state leaves Idle again) and never comes up.
    wait_status(&session, "retrying", |s| s.state != State::Idle).await;
}

#[tokio::test]
async fn passwords_must_match_frr() {
    passwords_must_match(Kind::Frr).await;
}

#[tokio::test]
async fn passwords_must_match_bird() {
    passwords_must_match(Kind::Bird).await;
}

async fn passwords_must_match(kind: Kind) {
    let _lab = tokio::task::spawn_blocking(|| Lab::create(1))
        .await
        .unwrap()
        .unwrap();
    let mut config = RouterConfig::new(kind);
    config.password = Some("lab-secret".into());
    let router = Router::start(config).unwrap();
    let wrong = Session::start(
        session_config(IpAddr::V4(ROUTER_IPV4), ROUTER_ASN, Some("not-it")),
        routes(&[("198.51.100.201", Attributes::default())]),
        Default::default(),
        None,
    );
    let status = wait_status(&wrong, "wrong password fails", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot connect"))
    })
    .await;
    assert_ne!(status.state, State::Established);
    drop(wrong);
    let right = Session::start(
        session_config(IpAddr::V4(ROUTER_IPV4), ROUTER_ASN, Some("lab-secret")),
        routes(&[("198.51.100.201", Attributes::default())]),
        Default::default(),
        None,
    );
    wait_status(&right, "right password", |s| s.state == State::Established).await;
    wait_rib(&router, "route in", |rib| {
        rib.contains_key("198.51.100.201/32")
    })
    .await;
}

/// A session to a fake router on loopback, port `port`.
fn loopback_config(port: u16) -> SessionConfig {
    let mut config = session_config(IpAddr::from([127, 0, 0, 1]), ROUTER_ASN, None);
    config.peer.port = port;
    config
}

#[tokio::test]
async fn an_unreachable_peer_is_retried_with_backoff_and_says_why() {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let session = Session::start(loopback_config(port), routes(&[]), Default::default(), None);
    let status = wait_status(&session, "refused", |s| s.last_error.is_some()).await;
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("cannot connect: "),
        "{status:?}"
    );
    assert_eq!(status.state, State::Idle);
    // Once something listens there, a retry connects (and waits for the OPEN that never comes).
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let _accepted = tokio::spawn(async move {
        let held = listener.accept().await;
        tokio::time::sleep(TIMEOUT).await;
        drop(held);
    });
    wait_status(&session, "retried and connected", |s| {
        s.state == State::OpenSent
    })
    .await;
}

/// A fake router: accepts one connection at a time and answers our OPEN with `reply`.
async fn fake_router(reply: Vec<u8>) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let reply = reply.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                // Our OPEN first, then the reply, then whatever we send back until we close.
                if let Ok(n) = stream.read(&mut buf).await {
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = stream.write_all(&reply).await;
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = tx.send(got);
            });
        }
    });
    (port, rx)
}

/// The BGP messages in `bytes`, by type code (1 OPEN, 3 NOTIFICATION, 4 KEEPALIVE, ...), with
/// the NOTIFICATION's code and subcode.
fn message_types(bytes: &[u8]) -> Vec<(u8, Option<(u8, u8)>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 19 {
        let len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
        if len < 19 || len > rest.len() {
            break;
        }
        let notification = (rest[18] == 3 && len >= 21).then(|| (rest[19], rest[20]));
        out.push((rest[18], notification));
        rest = &rest[len..];
    }
    out
}

#[tokio::test]
async fn a_router_that_sends_garbage_gets_a_notification_and_a_retry() {
    let (port, mut seen) = fake_router(vec![0x42; 64]).await;
    let session = Session::start(loopback_config(port), routes(&[]), Default::default(), None);
    let status = wait_status(&session, "garbage refused", |s| s.last_error.is_some()).await;
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("the router sent a malformed message"),
        "{status:?}"
    );
    let first = tokio::time::timeout(TIMEOUT, seen.recv())
        .await
        .unwrap()
        .unwrap();
    // Our OPEN, then a NOTIFICATION: Message Header Error, Connection Not Synchronized (1/1).
    assert_eq!(message_types(&first), vec![(1, None), (3, Some((1, 1)))]);
    // And it comes back for more.
    let second = tokio::time::timeout(TIMEOUT, seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message_types(&second)[0].0, 1);
}

#[tokio::test]
async fn a_router_notification_is_reported_and_retried() {
    // NOTIFICATION Cease / Administrative Shutdown with a Shutdown Communication.
    let mut reply = vec![0xff; 16];
    let text = b"maintenance";
    reply.extend_from_slice(&((21 + 1 + text.len()) as u16).to_be_bytes());
    reply.extend_from_slice(&[3, 6, 2, text.len() as u8]);
    reply.extend_from_slice(text);
    let (port, mut seen) = fake_router(reply).await;
    let session = Session::start(loopback_config(port), routes(&[]), Default::default(), None);
    let status = wait_status(&session, "notification", |s| s.last_error.is_some()).await;
    assert_eq!(
        status.last_error.as_deref(),
        Some("the router sent NOTIFICATION Cease, Administrative Shutdown (6/2): \"maintenance\"")
    );
    let first = tokio::time::timeout(TIMEOUT, seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        message_types(&first),
        vec![(1, None)],
        "no NOTIFICATION answers a NOTIFICATION"
    );
    assert!(
        tokio::time::timeout(TIMEOUT, seen.recv())
            .await
            .unwrap()
            .is_some(),
        "retried"
    );
}
