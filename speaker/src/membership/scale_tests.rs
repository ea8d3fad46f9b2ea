//! Membership beyond four peers (watched mode): real loopback sockets for the lifelines, and the
//! simulated network under tokio's paused clock for a cluster large enough to show the
//! per-speaker traffic stays flat. Every wait is bounded.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::timeout;

use super::topology::{Topology, WATCHERS};
use super::*;

const KEY: &[u8] = b"membership-scale-test-key-0123456789";

struct Member {
    name: String,
    addr: SocketAddr,
    membership: Option<Membership>,
    rx: watch::Receiver<LiveView>,
    metrics: Metrics,
}

async fn start(name: &str, addr: SocketAddr, net: Option<&SimNetwork>) -> Member {
    let mut cfg = Config::new(name, addr, KEY);
    cfg.simulated = net.cloned();
    let metrics = Metrics::default();
    let (membership, rx) = Membership::start(cfg, metrics.clone()).await.unwrap();
    Member {
        name: name.to_owned(),
        addr: membership.local_addr(),
        membership: Some(membership),
        rx,
        metrics,
    }
}

/// `n` members, each given all as peers whose Nodes are not Ready (only the mesh counts).
async fn cluster(n: usize, net: Option<&SimNetwork>) -> Vec<Member> {
    let mut members = Vec::new();
    for i in 0..n {
        let ip = match net {
            // Simulated: one address per member, as on real nodes.
            Some(_) => IpAddr::V4(Ipv4Addr::new(127, 0, 1, i as u8 + 1)),
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        members.push(start(&format!("node-{i:02}"), SocketAddr::new(ip, 0), net).await);
    }
    set_peers(&members);
    members
}

fn peer_list(members: &[Member]) -> Vec<Peer> {
    members
        .iter()
        .map(|m| Peer {
            name: m.name.clone(),
            addr: m.addr,
            node_ready: false,
        })
        .collect()
}

fn set_peers(members: &[Member]) {
    let peers = peer_list(members);
    for m in members.iter().filter_map(|m| m.membership.as_ref()) {
        m.set_peers(peers.clone());
    }
}

/// Waits until every running member but `except`'s view satisfies `pred`.
async fn wait_all(
    members: &[Member],
    except: Option<usize>,
    within: Duration,
    what: &str,
    pred: impl Fn(&BTreeSet<String>) -> bool,
) {
    let polled = timeout(within, async {
        loop {
            let done = members
                .iter()
                .enumerate()
                .filter(|(i, m)| Some(*i) != except && m.membership.is_some())
                .all(|(_, m)| pred(&m.rx.borrow().live));
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    if polled.is_err() {
        let views: Vec<usize> = members.iter().map(|m| m.rx.borrow().live.len()).collect();
        panic!("{what}: not within {within:?}; live-set sizes {views:?}");
    }
}

#[tokio::test]
async fn beyond_four_peers_lifelines_go_to_subjects_only_and_deaths_spread() {
    let mut members = cluster(8, None).await;
    let n = members.len();
    wait_all(&members, None, Duration::from_secs(5), "all live", |l| {
        l.len() == n
    })
    .await;
    // Each member is watched by exactly four: 32 watch relations, each with one lifeline.
    let total = |f: fn(&Metrics) -> i64| members.iter().map(|m| f(&m.metrics)).sum::<i64>();
    let want = (n * WATCHERS) as i64;
    assert_eq!(total(|m| m.watching.get()), want);
    let polled = timeout(Duration::from_secs(5), async {
        while total(|m| m.lifelines.get()) != want {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        polled.is_ok(),
        "lifelines {} of {want}",
        total(|m| m.lifelines.get())
    );
    // One dies (its task aborted: sockets closed, no Leave): everyone else sees it dead.
    let gone = members[3].name.clone();
    if let Some(m) = members[3].membership.take() {
        m.kill();
    }
    wait_all(
        &members,
        Some(3),
        Duration::from_secs(5),
        "death seen",
        |l| !l.contains(&gone),
    )
    .await;
    let reported: u64 = members
        .iter()
        .map(|m| {
            m.metrics
                .peer_deaths
                .get_or_create(&metrics::CauseLabels { cause: "reported" })
                .get()
        })
        .sum();
    assert!(reported >= (n - 1 - WATCHERS) as u64, "reported {reported}");
}

/// 40 simulated members, all live in every view, past the start-up grace.
async fn settled_cluster() -> (SimNetwork, Vec<Member>) {
    let net = SimNetwork::new(7);
    let members = cluster(40, Some(&net)).await;
    wait_all(&members, None, Duration::from_secs(10), "all live", |l| {
        l.len() == 40
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    (net, members)
}

fn sent(members: &[Member]) -> Vec<u64> {
    members
        .iter()
        .map(|m| m.metrics.packets_sent.get())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn forty_members_send_a_flat_eighty_datagrams_a_second_each() {
    let (_net, mut members) = settled_cluster().await;
    for m in &mut members {
        m.rx.mark_unchanged();
    }
    let before = sent(&members);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = sent(&members);
    // An Alive to each of the four observers every 50 ms: 80 a second, not 39 x 20 = 780.
    for ((b, a), m) in before.iter().zip(&after).zip(&members) {
        let per_s = (a - b) / 10;
        assert!((76..=84).contains(&per_s), "{}: {per_s} per second", m.name);
        assert!(!m.rx.has_changed().unwrap(), "{}: view changed", m.name);
    }
}

#[tokio::test(start_paused = true)]
async fn a_dead_member_is_seen_dead_by_all_and_live_again_after_its_restart() {
    let (net, mut members) = settled_cluster().await;
    let gone = members[17].name.clone();
    // Its process ends: the network tells the others at once, as the lifelines would.
    drop(members[17].membership.take());
    wait_all(
        &members,
        Some(17),
        Duration::from_millis(50),
        "death",
        |l| !l.contains(&gone),
    )
    .await;
    restart(&net, &mut members, 17).await;
}

/// Starts member `i` again on its address, as a restarted pod (only it needs the peer list),
/// and waits until every view has it back.
async fn restart(net: &SimNetwork, members: &mut [Member], i: usize) {
    let name = members[i].name.clone();
    let mut cfg = Config::new(&name, members[i].addr, KEY);
    cfg.simulated = Some(net.clone());
    // The old task lets go of the address when it has ended, a moment after the drop.
    let metrics = Metrics::default();
    let (membership, rx) = timeout(Duration::from_secs(1), async {
        loop {
            match Membership::start(cfg.clone(), metrics.clone()).await {
                Ok(started) => return started,
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    })
    .await
    .expect("the address is free again");
    members[i] = Member {
        name,
        addr: membership.local_addr(),
        membership: Some(membership),
        rx,
        metrics,
    };
    if let Some(m) = &members[i].membership {
        m.set_peers(peer_list(members));
    }
    let n = members.len();
    wait_all(members, None, Duration::from_secs(1), "back", |l| {
        l.len() == n
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_member_dying_just_after_its_observers_restarted_is_seen_dead_by_all() {
    let (net, mut members) = settled_cluster().await;
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let topology = Topology::new(names.iter().copied());
    let observers: Vec<usize> = topology
        .observers(&members[23].name, &|_| true)
        .into_iter()
        .map(|o| names.iter().position(|n| *n == o).unwrap())
        .collect();
    // Each observer restarts in turn; the subject dies as soon as the last one is back. The new
    // observers' votes must stand: they heard the subject at once (it greets a new observer),
    // and a vote on a process whose end came first names that process.
    for &o in &observers {
        drop(members[o].membership.take());
        restart(&net, &mut members, o).await;
    }
    let gone = members[23].name.clone();
    drop(members[23].membership.take());
    wait_all(
        &members,
        Some(23),
        Duration::from_millis(50),
        "death",
        |l| !l.contains(&gone),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_member_is_dead_for_all_after_dead_after_and_back_when_heard() {
    let (net, members) = settled_cluster().await;
    let gone = members[5].name.clone();
    net.silence(members[5].addr.ip(), true);
    wait_all(&members, Some(5), Duration::from_secs(1), "silence", |l| {
        !l.contains(&gone)
    })
    .await;
    net.silence(members[5].addr.ip(), false);
    wait_all(&members, None, Duration::from_secs(1), "heard again", |l| {
        l.len() == 40
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn ten_percent_loss_for_a_minute_changes_no_view() {
    let (net, mut members) = settled_cluster().await;
    for m in &mut members {
        m.rx.mark_unchanged();
    }
    net.set_loss(0.1);
    tokio::time::sleep(Duration::from_secs(60)).await;
    for m in &members {
        assert!(
            !m.rx.has_changed().unwrap(),
            "{}: view changed to {:?}",
            m.name,
            m.rx.borrow().live.len()
        );
    }
}
