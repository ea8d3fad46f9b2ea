//! The incremental planner against the plan from scratch, over seeded random histories.

use std::collections::BTreeMap;

use ferrolb_crds::LabelSelector;
use ferrolb_crds::address::parse_entry;

use super::*;
use crate::model::{Advertisement, NodeInfo, PoolInfo, ServiceInfo};

const NODES: usize = 6;

fn node_name(i: usize) -> String {
    format!("node{i}")
}

/// Six nodes (node5 has no Node object's label `zone=a`), a pool of 198.51.100.192/28 and
/// 2001:db8:1::200/124, and one advertisement that `edge` limits to zone `a` when set.
fn base(edge: bool) -> Snapshot {
    let pool = PoolInfo {
        name: "lan".into(),
        labels: BTreeMap::new(),
        ranges: vec![
            parse_entry("198.51.100.192/28").unwrap(),
            parse_entry("2001:db8:1::200/124").unwrap(),
        ],
    };
    let node_selectors = if edge {
        vec![LabelSelector {
            match_labels: [("zone".to_string(), "a".to_string())].into(),
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    Snapshot {
        nodes: (0..NODES)
            .map(|i| {
                let zone = if i == 5 { "b" } else { "a" };
                let info = NodeInfo {
                    name: node_name(i),
                    labels: [("zone".to_string(), zone.to_string())].into(),
                    network_unavailable: i == 4,
                };
                (node_name(i), info)
            })
            .collect(),
        pools: [("lan".to_string(), pool)].into(),
        advertisements: vec![Advertisement {
            name: "all".into(),
            node_selectors,
            ..Default::default()
        }],
        services: BTreeMap::new(),
        ..Default::default()
    }
}

/// A random Service among 40 names, on one to three of 24 addresses (some outside the pool, so
/// some are skipped; few, so Services share them), sometimes `Local` with random endpoints.
fn random_service(rng: &mut fastrand::Rng) -> ServiceInfo {
    let addr = |rng: &mut fastrand::Rng| -> IpAddr {
        let n = rng.u16(0..24);
        if n < 18 {
            format!("198.51.100.{}", 192 + n).parse().unwrap()
        } else {
            format!("2001:db8:1::{:x}", 0x200 + n - 18).parse().unwrap()
        }
    };
    let ips: Vec<IpAddr> = (0..rng.usize(1..=3)).map(|_| addr(rng)).collect();
    let local = rng.bool();
    ServiceInfo {
        key: ServiceKey::new("ns", format!("s{}", rng.u8(0..40))),
        ips,
        pool: rng.bool().then(|| "lan".to_string()),
        local,
        endpoint_nodes: if local {
            (0..NODES)
                .filter(|_| rng.u8(0..3) == 0)
                .map(node_name)
                .collect()
        } else {
            BTreeSet::new()
        },
    }
}

fn random_live(rng: &mut fastrand::Rng) -> BTreeSet<String> {
    (0..NODES + 1)
        .filter(|_| rng.u8(0..4) != 0)
        .map(node_name)
        .collect()
}

#[track_caller]
fn assert_matches_from_scratch(p: &Planner, snap: &Snapshot, live: &BTreeSet<String>, at: &str) {
    let want = plan::plan(snap, live).decisions;
    let got: Vec<Decision> = p.decisions().values().cloned().collect();
    assert_eq!(got, want, "{at}");
    let owned: usize = live.iter().map(|n| p.owned_by(n).count()).sum();
    assert_eq!(owned + p.unowned().len(), want.len(), "{at}: owner index");
}

/// Applies `update` to a copy of the decisions, as the planner's consumers do, and checks it
/// lands on the planner's decisions.
#[track_caller]
fn assert_update_is_complete(
    before: &BTreeMap<IpAddr, Decision>,
    update: &Update,
    p: &Planner,
    at: &str,
) {
    let mut applied = before.clone();
    for d in &update.removed {
        assert_eq!(
            applied.remove(&d.group.key).as_ref(),
            Some(d),
            "{at}: removed"
        );
    }
    for key in &update.added {
        applied.insert(*key, p.decision(key).unwrap().clone());
    }
    assert_eq!(&applied, p.decisions(), "{at}: update");
}

#[test]
fn random_histories_match_the_plan_from_scratch() {
    for seed in 0..60u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut snap = base(false);
        let mut live = random_live(&mut rng);
        let mut p = Planner::default();
        p.rebuild(&snap, &live);
        for step in 0..150 {
            let at = format!("seed {seed} step {step}");
            let before = p.decisions().clone();
            let update = match rng.u8(0..10) {
                0..=4 => {
                    let svc = random_service(&mut rng);
                    let key = svc.key.clone();
                    snap.insert_service(svc);
                    p.services_changed(&snap, &[key].into())
                }
                5 | 6 => {
                    let Some(key) = snap
                        .services
                        .keys()
                        .nth(rng.usize(..snap.services.len().max(1)))
                        .cloned()
                    else {
                        continue;
                    };
                    snap.services.remove(&key);
                    p.services_changed(&snap, &[key].into())
                }
                7 => {
                    // Several Services at once, some of them unchanged.
                    let mut keys = BTreeSet::new();
                    for _ in 0..rng.usize(1..5) {
                        let svc = random_service(&mut rng);
                        keys.insert(svc.key.clone());
                        snap.insert_service(svc);
                    }
                    keys.extend(snap.services.keys().take(2).cloned());
                    p.services_changed(&snap, &keys)
                }
                8 => {
                    // One node more or less, or several.
                    let mut next = live.clone();
                    for _ in 0..rng.usize(1..3) {
                        let n = node_name(rng.usize(0..NODES + 1));
                        if !next.remove(&n) {
                            next.insert(n);
                        }
                    }
                    live = next;
                    p.live_changed(&snap, &live)
                }
                _ => {
                    // Nodes, pools or advertisements changed: everything again.
                    let services = std::mem::take(&mut snap.services);
                    snap = base(rng.bool());
                    snap.services = services;
                    p.rebuild(&snap, &live)
                }
            };
            assert_update_is_complete(&before, &update, &p, &at);
            assert_matches_from_scratch(&p, &snap, &live, &at);
        }
    }
}

#[test]
fn a_dead_owner_moves_only_its_groups_and_a_newcomer_takes_only_what_it_wins() {
    let mut snap = base(false);
    for i in 0..14u16 {
        snap.insert_service(ServiceInfo {
            key: ServiceKey::new("ns", format!("s{i}")),
            ips: vec![format!("198.51.100.{}", 192 + i).parse().unwrap()],
            pool: Some("lan".into()),
            ..Default::default()
        });
    }
    let all: BTreeSet<String> = (0..4).map(node_name).collect();
    let mut p = Planner::default();
    p.rebuild(&snap, &all);
    let owned_by_1: BTreeSet<IpAddr> = p.owned_by("node1").copied().collect();
    assert!(!owned_by_1.is_empty());
    let without_1: BTreeSet<String> = all.iter().filter(|n| *n != "node1").cloned().collect();
    let update = p.live_changed(&snap, &without_1);
    let moved: BTreeSet<IpAddr> = update.removed.iter().map(|d| d.group.key).collect();
    assert_eq!(moved, owned_by_1, "only node1's groups are decided again");
    let update = p.live_changed(&snap, &all);
    assert_eq!(
        update.added.iter().copied().collect::<BTreeSet<_>>(),
        owned_by_1,
        "node1 back: it takes exactly its groups, nothing else is touched"
    );
    assert!(p.live_changed(&snap, &all).is_empty());
}

#[test]
fn a_service_change_touches_only_its_group() {
    let mut snap = base(false);
    for i in 0..10u16 {
        snap.insert_service(ServiceInfo {
            key: ServiceKey::new("ns", format!("s{i}")),
            ips: vec![format!("198.51.100.{}", 192 + i).parse().unwrap()],
            pool: Some("lan".into()),
            ..Default::default()
        });
    }
    let live: BTreeSet<String> = (0..4).map(node_name).collect();
    let mut p = Planner::default();
    p.rebuild(&snap, &live);
    // s3 joins s4 on .196: one group of two, s3's old group gone.
    let key = ServiceKey::new("ns", "s3");
    snap.services.get_mut(&key).unwrap().ips = vec!["198.51.100.196".parse().unwrap()];
    let update = p.services_changed(&snap, &[key].into());
    let removed: BTreeSet<String> = update
        .removed
        .iter()
        .map(|d| d.group.key.to_string())
        .collect();
    assert_eq!(
        removed,
        ["198.51.100.195", "198.51.100.196"]
            .map(String::from)
            .into()
    );
    assert_eq!(update.added, ["198.51.100.196".parse::<IpAddr>().unwrap()]);
    let group = &p.decision(&update.added[0]).unwrap().group;
    assert_eq!(group.services.len(), 2);
    assert_eq!(p.decisions().len(), 9);
}
