use super::*;
use crate::model::{Advertisement, ServiceInfo};
use ferrolb_crds::LabelSelector;
use ferrolb_crds::address::parse_entry;
use ferrolb_crds::contract::label::EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn live(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn snapshot(nodes: usize) -> Snapshot {
    let pool = PoolInfo {
        name: "lan".into(),
        labels: BTreeMap::new(),
        ranges: vec![
            parse_entry("198.51.100.192/26").unwrap(),
            parse_entry("2001:db8:1::200/120").unwrap(),
        ],
    };
    Snapshot {
        nodes: (1..=nodes)
            .map(|i| {
                let name = format!("node{i}");
                let info = NodeInfo {
                    name: name.clone(),
                    labels: [("kubernetes.io/hostname".to_string(), name.clone())].into(),
                    network_unavailable: false,
                };
                (name, info)
            })
            .collect(),
        pools: [("lan".to_string(), pool)].into(),
        advertisements: vec![Advertisement {
            name: "all".into(),
            ..Default::default()
        }],
        services: BTreeMap::new(),
        ..Default::default()
    }
}

fn key(namespaced: &str) -> ServiceKey {
    namespaced.parse().unwrap()
}

fn svc(key: &str, ips: &[&str]) -> ServiceInfo {
    ServiceInfo {
        key: key.parse().unwrap(),
        ips: ips.iter().map(|s| ip(s)).collect(),
        pool: Some("lan".into()),
        ..Default::default()
    }
}

/// Adds Services `ns/s0` to `ns/s<n - 1>`, Service `i` on 198.51.100.<last(i)>.
fn add_services(s: &mut Snapshot, n: usize, last: impl Fn(usize) -> usize) {
    for i in 0..n {
        s.insert_service(svc(
            &format!("ns/s{i}"),
            &[&format!("198.51.100.{}", last(i))],
        ));
    }
}

fn owner_of(plan: &Plan, addr: &str) -> Option<String> {
    plan.decisions
        .iter()
        .find(|d| d.group.ips.contains(&ip(addr)))
        .and_then(|d| d.owner.as_ref().ok().map(|(n, _)| n.clone()))
}

const ALL3: [&str; 3] = ["node1", "node2", "node3"];

#[test]
fn every_address_of_a_dual_stack_service_lands_on_one_node() {
    let mut s = snapshot(3);
    for i in 0..40 {
        s.insert_service(svc(
            &format!("default/web{i}"),
            &[
                &format!("198.51.100.{}", 200 + i),
                &format!("2001:db8:1::{:x}", 0x200 + i),
            ],
        ));
    }
    let p = plan(&s, &live(&ALL3));
    assert_eq!(p.decisions.len(), 40);
    for d in &p.decisions {
        assert_eq!(d.group.ips.len(), 2);
        assert_eq!(d.group.key, *d.group.ips.first().unwrap());
        assert!(d.owner.is_ok());
    }
    // Across 40 groups all three nodes get some.
    let owners: BTreeSet<String> = p
        .decisions
        .iter()
        .map(|d| d.owner.clone().unwrap().0)
        .collect();
    assert_eq!(owners.len(), 3);
}

#[test]
fn services_sharing_an_address_are_announced_together_even_transitively() {
    let mut s = snapshot(3);
    // a: v4 .200 + v6 ::200; b shares .200; c shares ::200 and holds .201 too.
    s.insert_service(svc("ns/a", &["198.51.100.200", "2001:db8:1::200"]));
    s.insert_service(svc("ns/b", &["198.51.100.200"]));
    s.insert_service(svc("ns/c", &["2001:db8:1::200", "198.51.100.201"]));
    s.insert_service(svc("ns/d", &["198.51.100.202"]));
    let p = plan(&s, &live(&ALL3));
    assert_eq!(p.decisions.len(), 2);
    let g = &p.decisions[0].group;
    assert_eq!(g.key, ip("198.51.100.200"));
    assert_eq!(g.services, ["ns/a", "ns/b", "ns/c"].map(key).into());
    assert_eq!(g.ips.len(), 3);
    assert_eq!(p.decisions[1].group.services, [key("ns/d")].into());
}

#[test]
fn the_result_does_not_depend_on_the_order_services_arrive_in() {
    let mut s = snapshot(5);
    add_services(&mut s, 30, |i| 200 + i % 20);
    let nodes = live(&["node1", "node2", "node3", "node4", "node5"]);
    let forward = plan(&s, &nodes);
    let mut reversed = Snapshot {
        services: BTreeMap::new(),
        ..s.clone()
    };
    for svc in s.services.values().rev() {
        reversed.insert_service(svc.clone());
    }
    assert_eq!(plan(&reversed, &nodes), forward);
}

#[test]
fn only_the_dead_nodes_groups_move() {
    let mut s = snapshot(3);
    add_services(&mut s, 50, |i| 195 + i);
    let before = plan(&s, &live(&ALL3));
    let after = plan(&s, &live(&["node1", "node3"]));
    for (b, a) in before.decisions.iter().zip(&after.decisions) {
        let (b, a) = (&b.owner.as_ref().unwrap().0, &a.owner.as_ref().unwrap().0);
        if b != "node2" {
            assert_eq!(a, b);
        } else {
            assert_ne!(a, "node2");
        }
    }
}

#[test]
fn a_hundred_addresses_over_three_nodes_none_holds_half() {
    let mut s = snapshot(3);
    let mut addrs = Vec::new();
    for i in 0..50 {
        addrs.push(format!("198.51.100.{}", 200 + i));
        addrs.push(format!("2001:db8:1::{:x}", 0x200 + i));
    }
    for (i, a) in addrs.iter().enumerate() {
        s.insert_service(svc(&format!("ns/s{i}"), &[a]));
    }
    let p = plan(&s, &live(&ALL3));
    for n in ALL3 {
        let count = p.owned_by(n).count();
        assert!(count < 50, "{n} owns {count} of 100");
        assert!(count > 0);
    }
}

#[test]
fn local_traffic_policy_follows_the_endpoints() {
    let mut s = snapshot(3);
    let mut local = svc("ns/local", &["198.51.100.210"]);
    local.local = true;
    local.endpoint_nodes = ["node3".to_string()].into();
    s.insert_service(local.clone());
    assert_eq!(
        owner_of(&plan(&s, &live(&ALL3)), "198.51.100.210"),
        Some("node3".into())
    );
    // The endpoint moves: so does the address.
    let local_key = key("ns/local");
    s.services.get_mut(&local_key).unwrap().endpoint_nodes = ["node1".to_string()].into();
    assert_eq!(
        owner_of(&plan(&s, &live(&ALL3)), "198.51.100.210"),
        Some("node1".into())
    );
    // No endpoint anywhere: nobody announces, and every node says why.
    s.services
        .get_mut(&local_key)
        .unwrap()
        .endpoint_nodes
        .clear();
    let p = plan(&s, &live(&ALL3));
    let d = &p.decisions[0];
    let no = d.owner.as_ref().unwrap_err();
    assert!(
        no.reasons
            .values()
            .all(|r| *r == Ineligible::NoLocalEndpoint)
    );
    assert!(no.to_string().contains("no ready endpoint"));
    assert!(d.reporter.is_some());
}

#[test]
fn node_selectors_and_exclusions_limit_the_candidates() {
    let mut s = snapshot(3);
    s.advertisements = vec![Advertisement {
        name: "edge".into(),
        node_selectors: vec![LabelSelector {
            match_labels: [("kubernetes.io/hostname".to_string(), "node2".to_string())].into(),
            ..Default::default()
        }],
        ..Default::default()
    }];
    add_services(&mut s, 20, |i| 200 + i);
    let p = plan(&s, &live(&ALL3));
    assert!(
        p.decisions
            .iter()
            .all(|d| d.owner.as_ref().unwrap().0 == "node2")
    );
    // node2 excluded by label: nobody may announce; NetworkUnavailable likewise.
    s.nodes
        .get_mut("node2")
        .unwrap()
        .labels
        .insert(EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS.into(), "true".into());
    let p = plan(&s, &live(&ALL3));
    let no = p.decisions[0].owner.as_ref().unwrap_err();
    assert_eq!(no.reasons["node2"], Ineligible::ExcludedByLabel);
    assert_eq!(no.reasons["node1"], Ineligible::NodeNotSelected);
    assert!(no.to_string().contains("node2: the node has the label"));
}

#[test]
fn network_unavailable_nodes_are_skipped() {
    let mut s = snapshot(2);
    s.nodes.get_mut("node1").unwrap().network_unavailable = true;
    add_services(&mut s, 20, |i| 200 + i);
    let p = plan(&s, &live(&["node1", "node2"]));
    assert_eq!(p.owned_by("node2").count(), 20);
    assert_eq!(p.owned_by("node1").count(), 0);
}

#[test]
fn interfaces_narrow_over_a_group_and_an_empty_intersection_is_reported() {
    let mut s = snapshot(1);
    s.pools.insert(
        "v6".into(),
        PoolInfo {
            name: "v6".into(),
            labels: BTreeMap::new(),
            ranges: vec![parse_entry("2001:db8:2::/64").unwrap()],
        },
    );
    s.pools.get_mut("lan").unwrap().ranges.truncate(1);
    let only = |pool: &str, ifs: &[&str]| Advertisement {
        name: pool.into(),
        pools: vec![pool.into()],
        interfaces: ifs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    s.advertisements = vec![only("lan", &["eth0", "eth1"]), only("v6", &["eth1"])];
    let mut a = svc("ns/a", &["198.51.100.200", "2001:db8:2::1"]);
    a.pool = None;
    s.insert_service(a);
    let p = plan(&s, &live(&["node1"]));
    assert_eq!(
        p.decisions[0].owner,
        Ok((
            "node1".into(),
            Interfaces::Only(["eth1".to_string()].into())
        ))
    );
    s.advertisements[1].interfaces = vec!["eth9".into()];
    let p = plan(&s, &live(&["node1"]));
    assert_eq!(
        p.decisions[0].owner.as_ref().unwrap_err().reasons["node1"],
        Ineligible::NoCommonInterface
    );
}

#[test]
fn addresses_outside_every_pool_are_never_announced() {
    let mut s = snapshot(2);
    s.insert_service(svc("ns/foreign", &["203.0.113.7", "198.51.100.200"]));
    let p = plan(&s, &live(&["node1", "node2"]));
    assert_eq!(p.skipped.len(), 1);
    assert_eq!(p.skipped[0].ip, ip("203.0.113.7"));
    assert_eq!(p.decisions.len(), 1);
    assert!(!p.decisions[0].group.ips.contains(&ip("203.0.113.7")));
}

#[test]
fn live_speakers_without_a_node_object_are_not_candidates() {
    let mut s = snapshot(1);
    s.insert_service(svc("ns/a", &["198.51.100.200"]));
    let p = plan(&s, &live(&["ghost"]));
    let d = &p.decisions[0];
    assert!(d.owner.as_ref().unwrap_err().reasons.is_empty());
    assert_eq!(
        d.owner.as_ref().unwrap_err().to_string(),
        "no live speaker runs on a known Node"
    );
    // Nobody live at all: no owner and no reporter.
    let p = plan(&s, &BTreeSet::new());
    assert_eq!(p.decisions[0].reporter, None);
}

#[test]
fn the_reporter_is_one_live_node_agreed_by_all() {
    let mut s = snapshot(3);
    let mut a = svc("ns/a", &["198.51.100.200"]);
    a.local = true;
    s.insert_service(a);
    let p1 = plan(&s, &live(&ALL3));
    let p2 = plan(&s, &live(&["node3", "node2", "node1"]));
    assert_eq!(p1.decisions[0].reporter, p2.decisions[0].reporter);
    assert!(p1.decisions[0].reporter.is_some());
}

/// The winner as first specified: every live node with a Node object checked, the highest score
/// among the eligible ones (what `elect` must equal while checking far fewer).
fn exhaustive_owner(s: &Snapshot, live: &BTreeSet<String>, d: &Decision) -> Option<String> {
    let eligible: Vec<&str> = live
        .iter()
        .filter(|name| {
            let Some(node) = s.nodes.get(*name) else {
                return false;
            };
            d.group.services.iter().all(|key| {
                let svc = &s.services[key];
                svc.ips
                    .iter()
                    .filter(|ip| d.group.ips.contains(ip))
                    .all(|&ip| {
                        let Some(pool) = pool_of(ip, svc.pool.as_deref(), &s.pools) else {
                            return false;
                        };
                        node_may_announce(node, pool, &s.advertisements).is_ok()
                            && (!svc.local || svc.endpoint_nodes.contains(*name))
                    })
            })
        })
        .map(String::as_str)
        .collect();
    election::owner(d.group.key, eligible).map(str::to_string)
}

#[test]
fn the_ranked_election_equals_checking_every_node() {
    // Seeded, so the random test is the same every run.
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let mut decided = 0;
    let mut unowned = 0;
    for round in 0..300 {
        let nodes = 1 + rng.u64(..12) as usize;
        let mut s = snapshot(nodes);
        for (_, n) in s.nodes.iter_mut() {
            match rng.u64(..10) {
                0 => {
                    n.labels
                        .insert(EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS.into(), String::new());
                }
                1 => n.network_unavailable = true,
                2 | 3 => {
                    n.labels.insert("zone".into(), "a".into());
                }
                _ => {}
            }
        }
        // Sometimes only nodes in zone a are selected, with an interface list.
        if rng.u64(..3) == 0 {
            s.advertisements = vec![Advertisement {
                name: "zone-a".into(),
                node_selectors: vec![LabelSelector {
                    match_labels: [("zone".to_string(), "a".to_string())].into(),
                    ..Default::default()
                }],
                interfaces: vec!["eth1".into()],
                ..Default::default()
            }];
        }
        for i in 0..(1 + rng.u64(..25)) {
            let a = format!("198.51.100.{}", 192 + rng.u64(..20));
            let mut ips = vec![a.clone()];
            if rng.u64(..4) == 0 {
                ips.push(format!("2001:db8:1::{:x}", 0x200 + rng.u64(..10)));
            }
            let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
            let mut info = svc(&format!("ns/r{round}-{i}"), &refs);
            if rng.u64(..2) == 0 {
                info.local = true;
                info.endpoint_nodes = (0..rng.u64(..4))
                    .map(|_| format!("node{}", 1 + rng.u64(..nodes as u64 + 2)))
                    .collect();
            }
            s.insert_service(info);
        }
        let live: BTreeSet<String> = (1..=nodes + 1)
            .filter(|_| rng.u64(..5) != 0)
            .map(|i| format!("node{i}"))
            .collect();
        let p = plan(&s, &live);
        for d in &p.decisions {
            let got = d.owner.as_ref().ok().map(|(n, _)| n.clone());
            assert_eq!(
                got,
                exhaustive_owner(&s, &live, d),
                "round {round}, group {}",
                d.group.key
            );
            match &d.owner {
                Ok(_) => decided += 1,
                Err(no) => {
                    unowned += 1;
                    // Every live node with a Node object has its reason.
                    let known = live.iter().filter(|n| s.nodes.contains_key(*n)).count();
                    assert_eq!(no.reasons.len(), known, "round {round}");
                }
            }
        }
    }
    // The cases both occur often enough to mean something.
    assert!(
        decided > 500 && unowned > 200,
        "{decided} owned, {unowned} not"
    );
}
