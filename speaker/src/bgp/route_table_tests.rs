use std::collections::{BTreeMap, BTreeSet};

use ferrolb_crds::community::{CommunityEntry, CommunityValue};
use ferrolb_crds::selector::labels;

use super::*;
use crate::bgp::routes::decide;
use crate::bgp::routes::tests::{NODE, ad, ip, peer, service, snapshot};
use crate::model::{BgpAdvertisement, ServiceInfo};

fn changed(keys: &[&str]) -> SnapshotDelta {
    SnapshotDelta {
        services: keys
            .iter()
            .map(|k| ServiceKey::new("default", *k))
            .collect(),
        everything: false,
    }
}

fn everything() -> SnapshotDelta {
    SnapshotDelta {
        everything: true,
        ..SnapshotDelta::default()
    }
}

/// The table equals the full decision.
fn assert_follows(table: &RouteTable, s: &Snapshot, step: &str) {
    let d = decide(s, NODE);
    assert_eq!(table.routes(), &d.routes, "routes after {step}");
    assert_eq!(table.problems(), d.problems, "problems after {step}");
}

/// A small deterministic generator (no dependency for one test).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn random_service(g: &mut Lcg, name: &str) -> ServiceInfo {
    let mut ips = Vec::new();
    for _ in 0..=g.below(2) {
        ips.push(match g.below(4) {
            0 => ip(&format!("2001:db8:1::{:x}", g.below(8))),
            1 => ip(&format!("203.0.113.{}", 8 + g.below(10))),
            _ => ip(&format!("198.51.100.{}", g.below(8))),
        });
    }
    ips.dedup();
    let mut svc = service(name, &[]);
    svc.ips = ips;
    svc.pool = match g.below(4) {
        0 => Some("small".into()),
        1 => Some("lan".into()),
        _ => None,
    };
    svc.local = g.below(3) == 0;
    if g.below(2) == 0 {
        svc.endpoint_nodes.insert(NODE.into());
    }
    svc
}

/// Changes to Services one at a time and to the configuration, in a long random order: after
/// every step the table is what deciding everything again gives.
#[test]
fn follows_the_full_decision_through_every_kind_of_change() {
    let mut g = Lcg(7);
    let mut s = snapshot(vec![]);
    let mut table = RouteTable::default();
    table.update(&s, NODE, &SnapshotDelta::default());
    assert_follows(&table, &s, "the first pass");
    for step in 0..3000 {
        let what = g.below(20);
        let delta = match what {
            0 => {
                // Configuration: aggregation, communities, peers, node labels, in turn.
                match g.below(5) {
                    0 => {
                        s.bgp.advertisements = vec![BgpAdvertisement {
                            aggregation_v4: 29,
                            aggregation_v6: 125,
                            communities: vec![CommunityEntry::Value(CommunityValue::Standard(
                                64512,
                                g.below(3) as u16,
                            ))],
                            ..ad("agg")
                        }];
                    }
                    1 => {
                        s.bgp.advertisements = vec![
                            BgpAdvertisement {
                                local_pref: Some(100),
                                ..ad("all")
                            },
                            BgpAdvertisement {
                                local_pref: Some(200),
                                peers: vec!["r2".into()],
                                communities: vec![CommunityEntry::Value(CommunityValue::Large(
                                    1, 2, 3,
                                ))],
                                ..ad("r2-only")
                            },
                        ];
                    }
                    2 => s.bgp.advertisements = vec![],
                    3 => {
                        s.bgp.peers = if s.bgp.peers.is_empty() {
                            [peer("r1", vec![]), peer("r2", vec![])]
                                .into_iter()
                                .collect()
                        } else {
                            BTreeMap::new()
                        };
                    }
                    _ => {
                        let node = s.nodes.get_mut(NODE).unwrap();
                        node.labels = if node.labels.is_empty() {
                            labels(&[("rack", "a")])
                        } else {
                            BTreeMap::new()
                        };
                    }
                }
                everything()
            }
            1..=5 => {
                let name = format!("s{}", g.below(12));
                s.services.remove(&ServiceKey::new("default", &name));
                changed(&[&name])
            }
            _ => {
                let name = format!("s{}", g.below(12));
                s.insert_service(random_service(&mut g, &name));
                changed(&[&name])
            }
        };
        table.update(&s, NODE, &delta);
        assert_follows(&table, &s, &format!("step {step} ({what})"));
    }
}

#[test]
fn a_change_to_one_service_decides_only_that_service_and_names_its_peers() {
    let mut s = snapshot(vec![
        service("a", &["198.51.100.10"]),
        service("b", &["198.51.100.11"]),
    ]);
    s.bgp.advertisements = vec![BgpAdvertisement {
        peers: vec!["r1".into()],
        ..ad("to-r1")
    }];
    let mut table = RouteTable::default();
    assert_eq!(
        table.update(&s, NODE, &SnapshotDelta::default()),
        BTreeSet::from(["r1".to_string()])
    );
    // "b" changes in the snapshot, but only "a" is named: "b" keeps what it had (the table
    // trusts the delta, as the planner does).
    s.insert_service(service("b", &["198.51.100.12"]));
    s.insert_service(service("a", &["198.51.100.13"]));
    assert_eq!(
        table.update(&s, NODE, &changed(&["a"])),
        BTreeSet::from(["r1".to_string()])
    );
    let prefixes: Vec<String> = table.routes()["r1"].keys().map(|p| p.to_string()).collect();
    assert_eq!(prefixes, ["198.51.100.11/32", "198.51.100.13/32"]);
    assert!(table.update(&s, NODE, &changed(&["unknown"])).is_empty());
}

#[test]
fn a_shared_aggregate_keeps_the_attributes_of_the_services_left() {
    let mut s = snapshot(vec![
        service("a", &["198.51.100.10"]),
        service("b", &["198.51.100.11"]),
    ]);
    s.bgp.advertisements = vec![BgpAdvertisement {
        aggregation_v4: 24,
        local_pref: Some(300),
        ..ad("agg")
    }];
    let mut table = RouteTable::default();
    table.update(&s, NODE, &SnapshotDelta::default());
    assert_eq!(table.routes()["r1"].len(), 1, "one /24 for both");
    s.services.remove(&ServiceKey::new("default", "a"));
    table.update(&s, NODE, &changed(&["a"]));
    let (prefix, attrs) = table.routes()["r1"].iter().next().unwrap();
    assert_eq!(prefix.to_string(), "198.51.100.0/24", "b still holds it");
    assert_eq!(attrs.local_pref, Some(300));
    s.services.remove(&ServiceKey::new("default", "b"));
    table.update(&s, NODE, &changed(&["b"]));
    assert!(table.routes().is_empty(), "{:?}", table.routes());
    assert!(table.contributions.is_empty() && table.by_service.is_empty());
}

#[test]
fn without_a_peer_or_an_advertisement_nothing_is_held() {
    let services: Vec<ServiceInfo> = (0..50)
        .map(|i| service(&format!("s{i}"), &["198.51.100.10"]))
        .collect();
    let mut s = snapshot(services);
    s.bgp.advertisements.clear();
    let mut table = RouteTable::default();
    assert!(table.update(&s, NODE, &SnapshotDelta::default()).is_empty());
    assert!(table.by_service.is_empty() && table.routes().is_empty());
    s.bgp.advertisements = vec![ad("all")];
    s.bgp.peers.clear();
    assert!(table.update(&s, NODE, &everything()).is_empty());
    assert!(table.by_service.is_empty());
    // The Node unknown: nothing either.
    let mut table = RouteTable::default();
    let s = snapshot(vec![service("a", &["198.51.100.10"])]);
    assert!(
        table
            .update(&s, "nowhere", &SnapshotDelta::default())
            .is_empty()
    );
}
