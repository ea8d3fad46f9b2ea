use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_crds::address::parse_entry;
use ferrolb_crds::contract::label::EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS;
use ferrolb_crds::selector::labels;
use ferrolb_crds::{BGPPeerSpec, LabelSelector};

use super::*;
use crate::bgp::config::peer_config;
use crate::model::{ServiceInfo, Snapshot};

pub(crate) const NODE: &str = "node1";

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn select(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels(pairs),
        ..Default::default()
    }
}

pub(crate) fn peer(
    name: &str,
    node_selectors: Vec<LabelSelector>,
) -> (String, Result<PeerConfig, crate::bgp::config::ConfigError>) {
    (
        name.to_string(),
        peer_config(
            name,
            &BGPPeerSpec {
                my_asn: 64512,
                peer_asn: Some(64513),
                peer_address: "198.51.100.1".into(),
                peer_port: 179,
                node_selectors,
                ..Default::default()
            },
        ),
    )
}

pub(crate) fn ad(name: &str) -> BgpAdvertisement {
    BgpAdvertisement {
        name: name.into(),
        aggregation_v4: 32,
        aggregation_v6: 128,
        ..Default::default()
    }
}

pub(crate) fn service(name: &str, ips: &[&str]) -> ServiceInfo {
    ServiceInfo {
        key: ServiceKey::new("default", name),
        ips: ips.iter().map(|s| ip(s)).collect(),
        ..Default::default()
    }
}

/// One node (labelled rack=a), one pool (198.51.100.0/24 and 2001:db8:1::/64), peers r1 and
/// r2 on every node, one empty advertisement, and Services as given.
pub(crate) fn snapshot(services: Vec<ServiceInfo>) -> Snapshot {
    let mut s = Snapshot::default();
    for n in [NODE, "node2"] {
        s.nodes.insert(
            n.into(),
            NodeInfo {
                name: n.into(),
                labels: labels(&[("rack", if n == NODE { "a" } else { "b" })]),
                network_unavailable: false,
            },
        );
    }
    s.pools.insert(
        "lan".into(),
        PoolInfo {
            name: "lan".into(),
            labels: labels(&[("tier", "edge")]),
            ranges: vec![
                parse_entry("198.51.100.0/24").unwrap(),
                parse_entry("2001:db8:1::/64").unwrap(),
            ],
        },
    );
    s.pools.insert(
        "small".into(),
        PoolInfo {
            name: "small".into(),
            labels: BTreeMap::new(),
            ranges: vec![parse_entry("203.0.113.8-203.0.113.15").unwrap()],
        },
    );
    s.bgp.peers = [peer("r1", vec![]), peer("r2", vec![])]
        .into_iter()
        .collect();
    s.bgp.advertisements = vec![ad("all")];
    for svc in services {
        s.insert_service(svc);
    }
    s
}

fn routes_to(d: &Decision, peer: &str) -> Vec<String> {
    d.routes
        .get(peer)
        .map(|r| r.keys().map(|p| p.to_string()).collect())
        .unwrap_or_default()
}

fn outcome(d: &Decision, svc: &str, address: &str) -> Result<BTreeSet<String>, NotAnnounced> {
    d.services[&ServiceKey::new("default", svc)][&ip(address)].clone()
}

fn both() -> BTreeSet<String> {
    BTreeSet::from(["r1".to_string(), "r2".to_string()])
}

#[test]
fn by_default_every_address_goes_to_every_peer_as_a_host_route() {
    let d = decide(
        &snapshot(vec![service("web", &["198.51.100.10", "2001:db8:1::10"])]),
        NODE,
    );
    assert_eq!(
        routes_to(&d, "r1"),
        ["198.51.100.10/32", "2001:db8:1::10/128"]
    );
    assert_eq!(routes_to(&d, "r2"), routes_to(&d, "r1"));
    assert_eq!(outcome(&d, "web", "198.51.100.10"), Ok(both()));
    assert!(d.problems.is_empty());
    assert_eq!(
        d.routes["r1"].values().next(),
        Some(&Attributes::default()),
        "no communities, no localPref"
    );
}

#[test]
fn addresses_outside_every_pool_are_never_announced() {
    let d = decide(&snapshot(vec![service("web", &["192.0.2.1"])]), NODE);
    assert!(d.routes.is_empty());
    assert!(d.services.is_empty());
}

#[test]
fn a_pool_no_advertisement_selects_is_left_to_layer_2() {
    let mut s = snapshot(vec![service("web", &["198.51.100.10"])]);
    s.bgp.advertisements = vec![BgpAdvertisement {
        pools: vec!["small".into()],
        ..ad("other")
    }];
    let d = decide(&s, NODE);
    assert!(d.routes.is_empty());
    assert_eq!(
        outcome(&d, "web", "198.51.100.10"),
        Err(NotAnnounced::PoolNotAdvertised)
    );
    // Selected by label instead: announced.
    s.bgp.advertisements[0].pool_selectors = vec![select(&[("tier", "edge")])];
    assert_eq!(
        outcome(&decide(&s, NODE), "web", "198.51.100.10"),
        Ok(both())
    );
}

#[test]
fn advertisement_node_selectors_pick_the_announcing_nodes() {
    let mut s = snapshot(vec![service("web", &["198.51.100.10"])]);
    s.bgp.advertisements[0].node_selectors = vec![select(&[("rack", "b")])];
    let d = decide(&s, NODE);
    assert_eq!(
        outcome(&d, "web", "198.51.100.10"),
        Err(NotAnnounced::NodeNotSelected)
    );
    assert!(d.routes.is_empty());
    assert_eq!(routes_to(&decide(&s, "node2"), "r1"), ["198.51.100.10/32"]);
}

#[test]
fn peer_node_selectors_and_advertisement_peers_pick_the_peers() {
    let mut s = snapshot(vec![service("web", &["198.51.100.10"])]);
    s.bgp.peers = [
        peer("r1", vec![select(&[("rack", "b")])]),
        peer("r2", vec![]),
    ]
    .into_iter()
    .collect();
    let d = decide(&s, NODE);
    assert_eq!(
        routes_to(&d, "r1"),
        Vec::<String>::new(),
        "r1 does not peer with node1"
    );
    assert_eq!(routes_to(&d, "r2"), ["198.51.100.10/32"]);
    s.bgp.advertisements[0].peers = vec!["r1".into()];
    let d = decide(&s, NODE);
    assert!(d.routes.is_empty());
    assert_eq!(
        outcome(&d, "web", "198.51.100.10"),
        Err(NotAnnounced::NoPeer)
    );
    assert_eq!(routes_to(&decide(&s, "node2"), "r1"), ["198.51.100.10/32"]);
}

#[test]
fn a_refused_peer_gets_nothing_and_a_missing_one_is_a_problem() {
    let mut s = snapshot(vec![service("web", &["198.51.100.10"])]);
    s.bgp.peers.insert(
        "broken".into(),
        peer_config(
            "broken",
            &BGPPeerSpec {
                peer_address: "nowhere".into(),
                ..Default::default()
            },
        ),
    );
    s.bgp.advertisements[0].peers = vec!["broken".into(), "r9".into()];
    let d = decide(&s, NODE);
    assert!(d.routes.is_empty());
    assert_eq!(
        d.problems.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        ["BGPAdvertisement all: spec.peers names BGPPeer r9, which does not exist"]
    );
}

#[test]
fn excluded_and_unavailable_nodes_announce_nothing() {
    let mut s = snapshot(vec![service("web", &["198.51.100.10"])]);
    s.nodes
        .get_mut(NODE)
        .unwrap()
        .labels
        .insert(EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS.into(), String::new());
    let d = decide(&s, NODE);
    assert!(d.routes.is_empty());
    assert!(matches!(
        outcome(&d, "web", "198.51.100.10"),
        Err(NotAnnounced::NodeExcluded(why)) if why.contains(EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS)
    ));
    let mut s = snapshot(vec![service("web", &["198.51.100.10"])]);
    s.nodes.get_mut(NODE).unwrap().network_unavailable = true;
    assert!(decide(&s, NODE).routes.is_empty());
    assert!(decide(&s, "unknown-node").routes.is_empty());
}

#[test]
fn local_traffic_policy_announces_only_from_nodes_with_endpoints() {
    let mut web = service("web", &["198.51.100.10"]);
    web.local = true;
    web.endpoint_nodes = BTreeSet::from(["node2".to_string()]);
    let s = snapshot(vec![web.clone()]);
    assert_eq!(
        outcome(&decide(&s, NODE), "web", "198.51.100.10"),
        Err(NotAnnounced::NoLocalEndpoint)
    );
    assert_eq!(routes_to(&decide(&s, "node2"), "r1"), ["198.51.100.10/32"]);
    // The endpoint moves: so does the route.
    web.endpoint_nodes = BTreeSet::from([NODE.to_string()]);
    let s = snapshot(vec![web]);
    assert_eq!(routes_to(&decide(&s, NODE), "r1"), ["198.51.100.10/32"]);
    assert!(decide(&s, "node2").routes.is_empty());
}

#[test]
fn a_shared_address_is_announced_when_any_of_its_services_allows_it() {
    let mut local = service("a", &["198.51.100.10"]);
    local.local = true;
    let cluster = service("b", &["198.51.100.10"]);
    let d = decide(&snapshot(vec![local, cluster]), NODE);
    assert_eq!(routes_to(&d, "r1"), ["198.51.100.10/32"]);
    assert_eq!(
        outcome(&d, "a", "198.51.100.10"),
        Err(NotAnnounced::NoLocalEndpoint)
    );
    assert_eq!(outcome(&d, "b", "198.51.100.10"), Ok(both()));
}

#[test]
fn communities_names_and_local_pref_become_attributes_and_merge() {
    let mut s = snapshot(vec![service("web", &["198.51.100.10"])]);
    s.bgp.communities = BTreeMap::from([(
        "no-advertise".to_string(),
        CommunityValue::Standard(65535, 65282),
    )]);
    s.bgp.advertisements = vec![
        BgpAdvertisement {
            local_pref: Some(100),
            communities: vec![
                CommunityEntry::Value(CommunityValue::Standard(64512, 1)),
                CommunityEntry::Name("no-advertise".into()),
            ],
            ..ad("a")
        },
        BgpAdvertisement {
            local_pref: Some(200),
            communities: vec![CommunityEntry::Value(CommunityValue::Large(64512, 7, 8))],
            peers: vec!["r2".into()],
            ..ad("b")
        },
    ];
    let d = decide(&s, NODE);
    let only = |peer: &str| d.routes[peer].values().next().unwrap().clone();
    assert_eq!(
        only("r1"),
        Attributes {
            communities: BTreeSet::from([
                CommunityValue::Standard(64512, 1),
                CommunityValue::Standard(65535, 65282)
            ]),
            local_pref: Some(100),
        }
    );
    assert_eq!(
        only("r2"),
        Attributes {
            communities: BTreeSet::from([
                CommunityValue::Standard(64512, 1),
                CommunityValue::Standard(65535, 65282),
                CommunityValue::Large(64512, 7, 8)
            ]),
            local_pref: Some(200),
        },
        "both advertisements reach r2: union of communities, highest localPref"
    );
}

#[test]
fn an_unknown_community_name_withholds_that_advertisement() {
    let mut s = snapshot(vec![service("web", &["198.51.100.10"])]);
    s.bgp.advertisements = vec![BgpAdvertisement {
        communities: vec![CommunityEntry::Name("no-export".into())],
        ..ad("strict")
    }];
    let d = decide(&s, NODE);
    assert!(d.routes.is_empty());
    assert_eq!(
        d.problems.iter().next().unwrap().0,
        "BGPAdvertisement strict: spec.communities names \"no-export\", which no Community object defines; its routes are not announced"
    );
}

#[test]
fn aggregation_announces_the_covering_prefix_once() {
    let mut s = snapshot(vec![
        service("a", &["198.51.100.10", "2001:db8:1::10"]),
        service("b", &["198.51.100.77", "2001:db8:1::ff:10"]),
    ]);
    s.bgp.advertisements = vec![
        ad("hosts"),
        BgpAdvertisement {
            aggregation_v4: 24,
            aggregation_v6: 64,
            ..ad("aggregate")
        },
    ];
    let d = decide(&s, NODE);
    assert_eq!(
        routes_to(&d, "r1"),
        [
            "198.51.100.0/24",
            "198.51.100.10/32",
            "198.51.100.77/32",
            "2001:db8:1::/64",
            "2001:db8:1::10/128",
            "2001:db8:1::ff:10/128"
        ]
    );
    assert!(d.problems.is_empty());
}

#[test]
fn an_aggregate_beyond_the_pool_is_narrowed_and_reported() {
    let mut s = snapshot(vec![service("web", &["203.0.113.9"])]);
    s.bgp.advertisements = vec![BgpAdvertisement {
        aggregation_v4: 24,
        ..ad("wide")
    }];
    let d = decide(&s, NODE);
    // 203.0.113.8-15 is exactly a /29.
    assert_eq!(routes_to(&d, "r1"), ["203.0.113.8/29"]);
    assert_eq!(
        d.problems.iter().next().unwrap().0,
        "BGPAdvertisement wide: spec.aggregationLength 24 would announce 203.0.113.0/24, which reaches beyond IPAddressPool small; 203.0.113.9 is announced at /29, the shortest length inside the pool"
    );
}

#[test]
fn prefixes_clear_host_bits_at_every_length() {
    assert_eq!(
        Prefix::covering(ip("198.51.100.77"), 24).to_string(),
        "198.51.100.0/24"
    );
    assert_eq!(
        Prefix::covering(ip("198.51.100.77"), 32).to_string(),
        "198.51.100.77/32"
    );
    assert_eq!(
        Prefix::covering(ip("198.51.100.77"), 0).to_string(),
        "0.0.0.0/0"
    );
    assert_eq!(Prefix::covering(ip("198.51.100.77"), 40).len, 32);
    assert_eq!(Prefix::covering(ip("2001:db8::1"), 0).to_string(), "::/0");
    assert_eq!(
        Prefix::covering(ip("2001:db8::1"), 128).to_string(),
        "2001:db8::1/128"
    );
    assert_eq!(
        Prefix::covering(ip("2001:db8:1:2::1"), 48).to_string(),
        "2001:db8:1::/48"
    );
    assert_eq!(
        Prefix::covering(ip("2001:db8::1"), 0).bounds(),
        (0, u128::MAX)
    );
}

#[test]
fn announcers_are_every_node_that_announces_and_their_peers() {
    let mut s = snapshot(vec![service("web", &["198.51.100.10"])]);
    let ips = BTreeSet::from([ip("198.51.100.10")]);
    let services = BTreeSet::from([ServiceKey::new("default", "web")]);
    let all = announcers(&s, &ips, &services);
    assert_eq!(all.len(), 2);
    assert_eq!(
        describe_announcers(&ips, &all).unwrap(),
        "node1, node2 announce 198.51.100.10 over BGP to r1, r2"
    );
    // r1 only on node2: the peers differ per node.
    s.bgp.peers = [
        peer("r1", vec![select(&[("rack", "b")])]),
        peer("r2", vec![]),
    ]
    .into_iter()
    .collect();
    let all = announcers(&s, &ips, &services);
    assert_eq!(
        describe_announcers(&ips, &all).unwrap(),
        "198.51.100.10 announced over BGP by node1 to r2; node2 to r1, r2"
    );
    s.bgp.advertisements.clear();
    assert_eq!(
        describe_announcers(&ips, &announcers(&s, &ips, &services)),
        None
    );
}

#[test]
fn long_lists_name_ten_nodes() {
    let ips = BTreeSet::from([ip("198.51.100.10")]);
    let many: BTreeMap<String, BTreeSet<String>> = (0..25)
        .map(|i| (format!("n{i:02}"), BTreeSet::from(["r".to_string()])))
        .collect();
    let text = describe_announcers(&ips, &many).unwrap();
    assert!(text.starts_with("n00, n01,"));
    assert!(text.contains("n09, 15 more announce"), "{text}");
}
