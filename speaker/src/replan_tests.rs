//! One test per rule of the main loop, driven with hand-made snapshots and live views.

use std::net::SocketAddr;

use ferrolb_crds::address::parse_entry;

use super::*;
use crate::model::{Advertisement, NodeInfo, PoolInfo, ServiceInfo};
use crate::plan::{self, ServiceKey};

fn key(namespaced: &str) -> ServiceKey {
    namespaced.parse().unwrap()
}

const ME: &str = "node1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn names(ns: &[&str]) -> Vec<String> {
    ns.iter().map(|n| n.to_string()).collect()
}

fn view(live: &[&str]) -> LiveView {
    LiveView {
        live: live.iter().map(|n| n.to_string()).collect(),
        source: ViewSource::Mesh,
    }
}

/// Nodes `node1`..`node3`, one pool holding 198.51.100.192/26, one advertisement of everything,
/// and a Service `ns/s<i>` on 198.51.100.<200 + i> for each `i` in `services`.
fn snapshot(services: std::ops::Range<u8>) -> Snapshot {
    let nodes = ["node1", "node2", "node3"].map(|name| {
        let info = NodeInfo {
            name: name.into(),
            ..Default::default()
        };
        (name.to_string(), info)
    });
    let pool = PoolInfo {
        name: "lan".into(),
        labels: BTreeMap::new(),
        ranges: vec![parse_entry("198.51.100.192/26").unwrap()],
    };
    Snapshot {
        nodes: nodes.into(),
        pools: [("lan".to_string(), pool)].into(),
        advertisements: vec![Advertisement {
            name: "all".into(),
            ..Default::default()
        }],
        services: services
            .map(|i| ServiceInfo {
                key: ServiceKey::new("ns", format!("s{i}")),
                ips: vec![ip(&format!("198.51.100.{}", 200 + u16::from(i)))],
                pool: Some("lan".into()),
                ..Default::default()
            })
            .map(|svc| (svc.key.clone(), svc))
            .collect(),
        ..Default::default()
    }
}

/// A replanner that has read `snap` and made its first plan with `live` on `eth0`.
fn planned(snap: Snapshot, live: &[&str]) -> Replanner {
    let mut r = Replanner::new(ME, Vec::new());
    r.snapshot_read(snap);
    assert!(r.step(&view(live), &names(&["eth0"])).replan.is_some());
    r
}

fn peer(name: &str, node_ready: bool) -> Peer {
    Peer {
        name: name.into(),
        addr: SocketAddr::from(([198, 51, 100, 12], 7946)),
        node_ready,
    }
}

#[test]
fn the_first_step_plans_announces_what_is_owned_here_and_checks_the_kernel() {
    let mut r = Replanner::new(ME, Vec::new());
    assert!(
        r.snapshot_stale(),
        "the caches are read before the first plan"
    );
    r.snapshot_read(snapshot(0..1));
    assert!(!r.snapshot_stale());
    let step = r.step(&view(&[ME]), &names(&["eth0", "eth1"]));
    assert_eq!(step.joined, names(&[ME]));
    let replan = step.replan.unwrap();
    // Alone, this node owns everything, on every interface.
    assert_eq!(
        replan.desired,
        BTreeMap::from([(ip("198.51.100.200"), Interfaces::All)])
    );
    assert!(!replan.reannounce, "nobody was live before: no rejoin");
    let kernel = replan.kernel.unwrap();
    assert_eq!(kernel.interfaces, Some(names(&["eth0", "eth1"])));
    assert_eq!(
        kernel.upserted,
        BTreeMap::from([(ip("198.51.100.200"), [key("ns/s0")].into())])
    );
    assert!(kernel.removed.is_empty());
    assert_eq!(
        r.wanted()[&key("ns/s0")].message,
        "node1 announces 198.51.100.200 on eth0, eth1"
    );
}

#[test]
fn only_the_addresses_this_node_wins_are_desired() {
    let snap = snapshot(0..30);
    let live = view(&["node1", "node2", "node3"]);
    let mut r = Replanner::new(ME, Vec::new());
    r.snapshot_read(snap.clone());
    let replan = r.step(&live, &names(&["eth0"])).replan.unwrap();
    let mine: BTreeSet<IpAddr> = plan::plan(&snap, &live.live)
        .owned_by(ME)
        .flat_map(|d| d.group.ips.iter().copied())
        .collect();
    assert!(!mine.is_empty() && mine.len() < 30);
    assert_eq!(
        replan.desired.keys().copied().collect::<BTreeSet<_>>(),
        mine
    );
    // The wanted conditions are those of the owned Services only.
    assert_eq!(r.wanted().len(), mine.len());
}

#[test]
fn the_same_snapshot_and_live_speakers_plan_nothing() {
    let mut r = planned(snapshot(0..3), &[ME]);
    let step = r.step(&view(&[ME]), &names(&["eth0"]));
    assert_eq!(step, Step::default());
}

#[test]
fn a_watch_event_that_changes_nothing_in_the_snapshot_plans_nothing() {
    let mut r = planned(snapshot(0..3), &[ME]);
    r.sources_changed();
    assert!(r.snapshot_stale());
    r.snapshot_read(snapshot(0..3));
    assert!(!r.snapshot_stale());
    assert!(r.step(&view(&[ME]), &names(&["eth0"])).replan.is_none());
}

#[test]
fn a_changed_snapshot_plans_again_and_checks_the_kernel_again() {
    let mut r = planned(snapshot(0..1), &[ME]);
    r.sources_changed();
    r.snapshot_read(snapshot(0..2));
    let replan = r.step(&view(&[ME]), &names(&["eth0"])).replan.unwrap();
    assert_eq!(replan.desired.len(), 2);
    let kernel = replan.kernel.unwrap();
    assert_eq!(
        kernel.upserted,
        BTreeMap::from([(ip("198.51.100.201"), [key("ns/s1")].into())]),
        "only what changed"
    );
    assert_eq!(kernel.interfaces, None);
    assert!(r.wanted().contains_key(&key("ns/s1")));
    // And back: the address leaves the kernel check, the condition is no longer wanted.
    r.sources_changed();
    r.snapshot_read(snapshot(0..1));
    let replan = r.step(&view(&[ME]), &names(&["eth0"])).replan.unwrap();
    assert_eq!(replan.desired.len(), 1);
    let kernel = replan.kernel.unwrap();
    assert_eq!(kernel.removed, [ip("198.51.100.201")].into());
    assert!(kernel.upserted.is_empty());
    assert!(!r.wanted().contains_key(&key("ns/s1")));
}

#[test]
fn a_peer_death_replans_from_the_last_snapshot_and_skips_the_kernel_check() {
    let mut r = planned(snapshot(0..30), &["node1", "node2"]);
    let step = r.step(&view(&[ME]), &names(&["eth0"]));
    assert!(!r.snapshot_stale(), "no cache read on failover");
    assert_eq!(step.gone, names(&["node2"]));
    let replan = step.replan.unwrap();
    assert_eq!(replan.desired.len(), 30, "node2's addresses move here");
    assert_eq!(replan.kernel, None, "the handled addresses did not change");
    assert!(!replan.reannounce, "a speaker leaving is no rejoin");
}

#[test]
fn a_speaker_joining_live_peers_makes_this_node_announce_again() {
    let mut r = planned(snapshot(0..30), &[ME]);
    let step = r.step(&view(&["node1", "node2"]), &names(&["eth0"]));
    assert_eq!(step.joined, names(&["node2"]));
    assert!(step.replan.unwrap().reannounce);
    // Only on the step it joined.
    let mut r2 = planned(snapshot(0..30), &["node1", "node2"]);
    r2.force();
    let again = r2.step(&view(&["node1", "node2"]), &names(&["eth0"]));
    assert!(!again.replan.unwrap().reannounce);
}

#[test]
fn force_plans_once_with_an_unchanged_input() {
    let mut r = planned(snapshot(0..3), &[ME]);
    r.force();
    let replan = r.step(&view(&[ME]), &names(&["eth0"])).replan.unwrap();
    assert_eq!(replan.kernel, None);
    assert!(r.step(&view(&[ME]), &names(&["eth0"])).replan.is_none());
}

#[test]
fn new_interfaces_reach_the_conditions_and_the_kernel_check() {
    // The announcer's links changed: the loop forces a plan, with the new names.
    let mut r = planned(snapshot(0..1), &[ME]);
    r.force();
    let links = names(&["eth0", "eth1"]);
    let replan = r.step(&view(&[ME]), &links).replan.unwrap();
    assert_eq!(replan.kernel.unwrap().interfaces, Some(links));
    assert_eq!(
        r.wanted()[&key("ns/s0")].message,
        "node1 announces 198.51.100.200 on eth0, eth1"
    );
}

#[test]
fn the_wanted_conditions_last_until_the_next_plan() {
    let mut r = planned(snapshot(0..2), &[ME]);
    let before = r.wanted().clone();
    assert_eq!(before.len(), 2);
    assert!(r.step(&view(&[ME]), &names(&["eth0"])).replan.is_none());
    assert_eq!(r.wanted(), &before);
    // Another speaker takes everything: this one wants nothing written any more.
    let mut snap = snapshot(0..2);
    snap.nodes.remove(ME);
    r.sources_changed();
    r.snapshot_read(snap);
    r.step(&view(&["node1", "node2"]), &names(&["eth0"]));
    assert!(r.wanted().is_empty());
}

#[test]
fn a_change_of_the_liveness_source_is_reported_once() {
    let mut r = planned(snapshot(0..1), &[ME]);
    let fallback = LiveView {
        source: ViewSource::NodeFallback,
        ..view(&[ME])
    };
    let step = r.step(&fallback, &names(&["eth0"]));
    assert_eq!(step.source_changed, Some(ViewSource::NodeFallback));
    assert!(step.replan.is_none(), "the same speakers are live");
    assert_eq!(r.step(&fallback, &names(&["eth0"])).source_changed, None);
    let back = r.step(&view(&[ME]), &names(&["eth0"]));
    assert_eq!(back.source_changed, Some(ViewSource::Mesh));
}

#[test]
fn the_membership_hears_of_changed_peer_lists_only() {
    let mut r = Replanner::new(ME, vec![peer("node2", true)]);
    assert_eq!(r.peers_read(vec![peer("node2", true)]), None);
    let changed = vec![peer("node2", false)];
    assert_eq!(r.peers_read(changed.clone()), Some(changed.clone()));
    assert_eq!(r.peers_read(changed), None);
}

#[test]
fn every_step_agrees_with_a_plan_from_scratch() {
    // Services, live speakers and pools change in turn; this node's addresses and conditions
    // always equal those of a plan made from scratch.
    let mut r = Replanner::new(ME, Vec::new());
    let links = names(&["eth0"]);
    let histories: [(std::ops::Range<u8>, &[&str]); 7] = [
        (0..10, &["node1", "node2", "node3"]),
        (0..20, &["node1", "node2", "node3"]),
        (5..20, &["node1", "node3"]),
        (5..20, &["node1", "node2", "node3"]),
        (0..3, &["node1"]),
        (0..30, &["node2", "node1"]),
        (0..30, &["node1", "node2", "node3"]),
    ];
    for (services, live) in histories {
        let snap = snapshot(services.clone());
        r.sources_changed();
        r.snapshot_read(snap.clone());
        let view = view(live);
        r.step(&view, &links);
        let p = plan::plan(&snap, &view.live);
        let mine: BTreeSet<IpAddr> = p
            .owned_by(ME)
            .flat_map(|d| d.group.ips.iter().copied())
            .collect();
        assert_eq!(
            r.desired.keys().copied().collect::<BTreeSet<_>>(),
            mine,
            "{services:?} {live:?}"
        );
        let wanted = report::wanted(&p.decisions, ME, |_| links.clone(), |_| None);
        assert_eq!(r.wanted(), &wanted, "{services:?} {live:?}");
    }
}

#[test]
fn a_changed_pool_plans_everything_again() {
    let mut r = planned(snapshot(0..10), &["node1", "node2"]);
    let mut snap = snapshot(0..10);
    snap.pools.get_mut("lan").unwrap().ranges = vec![parse_entry("198.51.100.200/30").unwrap()];
    r.sources_changed();
    r.snapshot_read(snap);
    let replan = r
        .step(&view(&["node1", "node2"]), &names(&["eth0"]))
        .replan
        .unwrap();
    let kernel = replan.kernel.unwrap();
    assert_eq!(kernel.removed.len(), 6, "six addresses left the pool");
    assert!(
        replan
            .desired
            .keys()
            .all(|ip| *ip <= self::ip("198.51.100.203"))
    );
}

#[test]
fn an_updated_snapshot_plans_only_what_changed() {
    let mut r = planned(snapshot(0..10), &["node1", "node2"]);
    r.sources_changed();
    r.update_snapshot(|snap| {
        let svc = snap.services.get_mut(&key("ns/s3")).unwrap();
        svc.local = true;
        svc.endpoint_nodes = ["node2".to_string()].into();
        SnapshotDelta {
            services: [key("ns/s3")].into(),
            everything: false,
        }
    });
    assert!(!r.snapshot_stale());
    let replan = r
        .step(&view(&["node1", "node2"]), &names(&["eth0"]))
        .replan
        .unwrap();
    assert!(
        !replan.desired.contains_key(&ip("198.51.100.203")),
        "only node2 may announce it"
    );
    assert_eq!(replan.kernel, None, "the same addresses and Services");
}
