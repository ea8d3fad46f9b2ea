//! Lifelines over real TCP on 127.0.0.1 (never any other address).

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use ring::hmac;
use tokio::net::TcpListener;
use tokio::time::timeout;

use super::*;

const WITHIN: Duration = Duration::from_secs(5);

fn keys(k: &[u8]) -> Keys {
    let key = hmac::Key::new(hmac::HMAC_SHA256, k);
    Keys {
        signing: key.clone(),
        accepted: vec![key],
    }
}

struct Side {
    lifelines: Lifelines,
    ended: mpsc::UnboundedReceiver<Ended>,
    addr: SocketAddr,
    up: Gauge,
}

async fn side(node: &str, boot: u64, key: &[u8]) -> Side {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = Gauge::default();
    let (lifelines, ended) = Lifelines::start(listener, node, boot, keys(key), up.clone());
    Side {
        lifelines,
        ended,
        addr,
        up,
    }
}

async fn wait_up(s: &Side, want: i64) {
    let polled = timeout(WITHIN, async {
        while s.up.get() != want {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "lifelines up {} (want {want})", s.up.get());
}

#[tokio::test]
async fn a_peer_whose_process_ends_is_reported_with_its_boot_id() {
    let mut a = side("a", 1, b"lifeline-key-0123456789").await;
    let b = side("b", 22, b"lifeline-key-0123456789").await;
    let c = side("c", 33, b"lifeline-key-0123456789").await;
    a.lifelines
        .set_peers(vec![("b".into(), b.addr), ("c".into(), c.addr)]);
    wait_up(&a, 2).await;
    // b's tasks end as a crash would end them: listener and held connections close.
    drop(b);
    let ended = timeout(WITHIN, a.ended.recv()).await.unwrap().unwrap();
    assert_eq!(
        ended,
        Ended {
            node: "b".into(),
            boot: 22
        }
    );
    wait_up(&a, 1).await;
    assert!(a.ended.try_recv().is_err(), "c still runs");
}

#[tokio::test]
async fn a_peer_with_another_key_or_name_gets_no_lifeline_and_no_verdict() {
    let mut a = side("a", 1, b"lifeline-key-0123456789").await;
    let other_key = side("b", 2, b"another-key-9876543210").await;
    let impostor = side("x", 3, b"lifeline-key-0123456789").await;
    a.lifelines.set_peers(vec![
        ("b".into(), other_key.addr),
        ("c".into(), impostor.addr),
    ]);
    tokio::time::sleep(MIN_BACKOFF * 3).await;
    assert_eq!(a.up.get(), 0);
    drop(other_key);
    drop(impostor);
    tokio::time::sleep(MIN_BACKOFF * 3).await;
    assert!(a.ended.try_recv().is_err(), "never verified: no statement");
}

#[tokio::test]
async fn removed_peers_are_no_longer_dialed_and_a_rotated_key_is_used() {
    let mut a = side("a", 1, b"lifeline-key-0123456789").await;
    let b = side("b", 2, b"lifeline-key-0123456789").await;
    a.lifelines.set_peers(vec![("b".into(), b.addr)]);
    wait_up(&a, 1).await;
    a.lifelines.set_peers(vec![]);
    wait_up(&a, 0).await;
    drop(b);
    tokio::time::sleep(MIN_BACKOFF).await;
    assert!(a.ended.try_recv().is_err(), "not a peer any more");

    let c = side("c", 3, b"rotated-key-0123456789").await;
    a.lifelines.set_peers(vec![("c".into(), c.addr)]);
    tokio::time::sleep(MIN_BACKOFF * 2).await;
    assert_eq!(a.up.get(), 0, "c signs with a key a does not accept yet");
    let both = keys(b"lifeline-key-0123456789");
    a.lifelines.set_keys(Keys {
        signing: both.signing,
        accepted: vec![
            hmac::Key::new(hmac::HMAC_SHA256, b"lifeline-key-0123456789"),
            hmac::Key::new(hmac::HMAC_SHA256, b"rotated-key-0123456789"),
        ],
    });
    wait_up(&a, 1).await;
}

#[tokio::test]
async fn a_peer_heard_again_is_dialed_at_once_whatever_the_backoff() {
    let mut a = side("a", 1, b"lifeline-key-0123456789").await;
    let b = side("b", 2, b"lifeline-key-0123456789").await;
    let addr = b.addr;
    a.lifelines.set_peers(vec![("b".into(), addr)]);
    wait_up(&a, 1).await;
    drop(b);
    timeout(WITHIN, a.ended.recv()).await.unwrap().unwrap();
    // Refused again and again: the pause before the next dial has grown past a second.
    tokio::time::sleep(MIN_BACKOFF * 16).await;
    let listener = TcpListener::bind(addr).await.unwrap();
    let up = Gauge::default();
    let (_b2, _) = Lifelines::start(listener, "b", 3, keys(b"lifeline-key-0123456789"), up);
    a.lifelines.dial_now("b");
    let polled = timeout(MIN_BACKOFF * 4, async {
        while a.up.get() != 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "the restarted peer was not dialed at once");
}
