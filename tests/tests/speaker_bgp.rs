//! BGP mode end to end: real speakers in lab node namespaces peer with a real router (FRR or
//! BIRD) and announce each LoadBalancer IP with every eligible node as next hop; the remote
//! client behind the router reaches the IP through them, spread by ECMP.

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::Result;
use ferrolb_crds::contract::label::SERVICE_NAME;
use ferrolb_tests::bgplab::BgpRig;
use ferrolb_tests::router::{Kind, NODE_ASN, ROUTER_ASN, ROUTER_IPV4, ROUTER_IPV6, RouterConfig};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const NODES: [&str; 3] = ["node1", "node2", "node3"];

fn node_ip(name: &str) -> IpAddr {
    let i: u8 = name.trim_start_matches("node").parse().unwrap();
    IpAddr::from([198, 51, 100, 10 + i])
}

fn node_ip6(name: &str) -> IpAddr {
    let i: u16 = name.trim_start_matches("node").parse().unwrap();
    format!("2001:db8:1::{}", 10 + i).parse().unwrap()
}

async fn ecmp(kind: Kind, over_ipv6: bool) -> Result<()> {
    let name = format!("bgp-{}", kind.name());
    let b = BgpRig::start(&name, 3, &[], RouterConfig::new(kind)).await?;
    let peer_address = if over_ipv6 {
        ROUTER_IPV6.to_string()
    } else {
        ROUTER_IPV4.to_string()
    };
    b.announce_pool(
        "bgp",
        json!([
            "198.51.100.200-198.51.100.210",
            "2001:db8:1::200-2001:db8:1::20f"
        ]),
        json!({"peerAddress": peer_address, "holdTime": "9s"}),
    )
    .await?;
    b.rig
        .scenario
        .service(
            "web",
            json!({"spec": {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"]}}),
        )
        .await?;
    let ips = b.rig.scenario.wait_any_ip("web").await?;
    let vip4: IpAddr = ips.iter().find(|i| !i.contains(':')).unwrap().parse()?;
    let all4: Vec<IpAddr> = NODES.iter().map(|n| node_ip(n)).collect();
    b.wait_next_hops(&format!("{vip4}/32"), &all4).await?;
    if let Some(vip6) = ips.iter().find(|i| i.contains(':')) {
        let all6: Vec<IpAddr> = NODES.iter().map(|n| node_ip6(n)).collect();
        b.wait_next_hops(&format!("{vip6}/128"), &all6).await?;
    }
    assert_eq!(b.router.established()?.len(), 3, "one session per node");
    // The Service's condition names the announcing nodes and the peer.
    let c = b
        .rig
        .scenario
        .wait("web", "Announced over BGP", |svc| {
            ferrolb_tests::l2lab::announced(svc)
                .filter(|c| c.status == "True" && c.message.contains("over BGP"))
                .cloned()
        })
        .await?;
    assert!(
        c.message.starts_with("node1, node2, node3 announce "),
        "{}",
        c.message
    );
    assert!(c.message.ends_with(" over BGP to router"), "{}", c.message);
    let mut b = b;
    for i in 0..3 {
        let text = b.rig.speaker(i)?.metrics()?;
        let sample = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("ferrolb_speaker_bgp_{name}{{peer=\"router\"}} ")))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        let bgp: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ferrolb_speaker_bgp"))
            .collect();
        assert_eq!(sample("session_up"), Some(1.0), "{bgp:#?}");
        assert!(
            sample("announced_prefixes").unwrap_or(0.0) >= 1.0,
            "{bgp:#?}"
        );
        assert!(
            sample("updates_sent_total").unwrap_or(0.0) >= 1.0,
            "{bgp:#?}"
        );
    }

    // Each node's session is in the BGPPeer's status, written by that node.
    let peers: Api<ferrolb_crds::BGPPeer> = Api::all(b.rig.scenario.client.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let peer = peers.get("router").await?;
        let sessions = peer.status.map(|s| s.sessions).unwrap_or_default();
        let up: BTreeSet<&str> = sessions
            .iter()
            .filter(|s| s.state == "Established" && s.prefixes >= 1 && s.held_back == 0)
            .map(|s| s.node.as_str())
            .collect();
        if up == BTreeSet::from(NODES) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status.sessions {sessions:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The remote client's requests are spread over the nodes.
    let mut answered = BTreeSet::new();
    for _ in 0..40 {
        let node = b.remote_curl(vip4)?;
        assert!(NODES.contains(&node.as_str()), "answer {node:?}");
        answered.insert(node);
    }
    assert!(answered.len() >= 2, "ECMP used only {answered:?}");

    // No advertisement, no route.
    b.delete_advertisement("bgp").await?;
    b.wait_route(&format!("{vip4}/32"), "withdrawn", |e| e.is_none())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frr_spreads_the_remote_client_over_every_node() -> Result<()> {
    ecmp(Kind::Frr, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_over_ipv6_sessions_spreads_the_remote_client_over_every_node() -> Result<()> {
    ecmp(Kind::Bird, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_policy_routes_follow_the_endpoints() -> Result<()> {
    let b = BgpRig::start("bgp-local", 3, &[], RouterConfig::new(Kind::Frr)).await?;
    b.announce_pool(
        "bgp-local",
        json!(["198.51.100.220-198.51.100.225"]),
        json!({}),
    )
    .await?;
    b.rig
        .scenario
        .service("web", json!({"spec": {"externalTrafficPolicy": "Local"}}))
        .await?;
    let vip: IpAddr = b.rig.scenario.wait_any_ip("web").await?[0].parse()?;
    let prefix = format!("{vip}/32");
    // No endpoint: no node may announce.
    let slices: Api<EndpointSlice> =
        Api::namespaced(b.rig.scenario.client.clone(), &b.rig.scenario.ns);
    let slice = |node: &str| -> EndpointSlice {
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "labels": {SERVICE_NAME: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [node_ip(node).to_string()], "nodeName": node,
                           "conditions": {"ready": true, "serving": true, "terminating": false}}],
        }))
        .unwrap()
    };
    slices
        .create(&PostParams::default(), &slice("node2"))
        .await?;
    b.wait_next_hops(&prefix, &[node_ip("node2")]).await?;
    assert_eq!(b.remote_curl(vip)?, "node2");
    // The endpoint moves: so does the route.
    slices
        .patch(
            "web-1",
            &PatchParams::apply("ferrolb-tests").force(),
            &Patch::Apply(&slice("node3")),
        )
        .await?;
    b.wait_next_hops(&prefix, &[node_ip("node3")]).await?;
    assert_eq!(b.remote_curl(vip)?, "node3");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_pick_who_peers_and_who_announces() -> Result<()> {
    let b = BgpRig::start("bgp-selectors", 3, &[], RouterConfig::new(Kind::Frr)).await?;
    b.rig
        .scenario
        .pool(
            "bgp-sel",
            json!({"addresses": ["198.51.100.230-198.51.100.235"]}),
        )
        .await?;
    // Only node1 and node2 peer; only node2 and node3 announce: node2 alone is next hop.
    b.peer("router", json!({"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": ROUTER_IPV4.to_string(),
        "nodeSelectors": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["node1", "node2"]}]}]}))
        .await?;
    b.advertisement("bgp-sel", json!({"ipAddressPools": ["bgp-sel"],
        "nodeSelectors": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["node1"]}]}]}))
        .await?;
    b.rig.scenario.service("web", json!({})).await?;
    let vip: IpAddr = b.rig.scenario.wait_any_ip("web").await?[0].parse()?;
    b.wait_next_hops(&format!("{vip}/32"), &[node_ip("node2")])
        .await?;
    let sessions = b.router.established()?;
    assert_eq!(
        sessions,
        BTreeSet::from([node_ip("node1"), node_ip("node2")]),
        "node3 never peers"
    );
    Ok(())
}

/// One Service on a 3-node rig with FRR, BGPPeer `peer_extra` merged in; returns the rig and
/// the VIP once every node is its next hop.
async fn three_next_hops(
    name: &str,
    router: RouterConfig,
    peer_extra: serde_json::Value,
    bfd_profile: bool,
) -> Result<(BgpRig, IpAddr)> {
    let b = BgpRig::start(name, 3, &[], router).await?;
    if bfd_profile {
        // MetalLB's documented order: the profile first, then the peer naming it.
        let profiles: Api<ferrolb_crds::BFDProfile> = Api::all(b.rig.scenario.client.clone());
        let profile: ferrolb_crds::BFDProfile = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "BFDProfile",
            "metadata": {"name": "fast"},
            "spec": {"receiveInterval": 300, "transmitInterval": 300, "detectMultiplier": 3},
        }))?;
        profiles
            .patch(
                "fast",
                &PatchParams::apply("ferrolb-tests").force(),
                &Patch::Apply(&profile),
            )
            .await?;
    }
    let mut peer = json!({"holdTime": "9s"});
    ferrolb_tests::scenario::merge(&mut peer, peer_extra);
    b.announce_pool(name, json!(["198.51.100.240-198.51.100.245"]), peer)
        .await?;
    b.rig.scenario.service("web", json!({})).await?;
    let vip: IpAddr = b.rig.scenario.wait_any_ip("web").await?[0].parse()?;
    let all: Vec<IpAddr> = NODES.iter().map(|n| node_ip(n)).collect();
    b.wait_next_hops(&format!("{vip}/32"), &all).await?;
    Ok((b, vip))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_bfd_a_dead_node_is_withdrawn_within_a_second() -> Result<()> {
    let mut router = RouterConfig::new(Kind::Frr);
    router.bfd = true;
    // A 9 s hold time: only BFD can explain a withdrawal in under a second.
    let (b, vip) = three_next_hops("bgp-bfd", router, json!({"bfdProfile": "fast"}), true).await?;
    let all: BTreeSet<IpAddr> = NODES.iter().map(|n| node_ip(n)).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while b.router.bfd_up()? != all {
        assert!(
            std::time::Instant::now() < deadline,
            "BFD up with {:?}\n{}\n{}",
            b.router.bfd_up()?,
            b.router.vtysh("show bfd peers").unwrap_or_default(),
            b.router
                .vtysh("show bgp neighbors 198.51.100.11")
                .unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // node1 drops off the network (its link goes down; the router's side stays up).
    b.rig.lab.nodes()[0].exec("ip", &["link", "set", "eth0", "down"])?;
    let cut = std::time::Instant::now();
    b.wait_next_hops(&format!("{vip}/32"), &[node_ip("node2"), node_ip("node3")])
        .await?;
    let took = cut.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "withdrawn after {took:?}, not by BFD"
    );
    for _ in 0..10 {
        assert!(["node2", "node3"].contains(&b.remote_curl(vip)?.as_str()));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_graceful_restart_a_speaker_restart_withdraws_nothing() -> Result<()> {
    let (mut b, vip) = three_next_hops(
        "bgp-gr",
        RouterConfig::new(Kind::Frr),
        json!({"enableGracefulRestart": true}),
        false,
    )
    .await?;
    let prefix = format!("{vip}/32");
    let all: BTreeSet<IpAddr> = NODES.iter().map(|n| node_ip(n)).collect();
    // Stop node1's speaker the way Kubernetes does (SIGTERM), then start it again, watching
    // the router's RIB all along.
    b.rig
        .speaker(0)?
        .terminate(std::time::Duration::from_secs(10))?;
    let stopped = std::time::Instant::now();
    let mut seen_without = false;
    while std::time::Instant::now() - stopped < std::time::Duration::from_secs(3) {
        let hops = b
            .router
            .rib()?
            .get(&prefix)
            .map(|e| e.next_hops.clone())
            .unwrap_or_default();
        seen_without |= hops != all;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    b.rig.start_speaker(0)?;
    b.rig
        .speaker(0)?
        .wait_ready(ferrolb_tests::l2lab::TIMEOUT)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while b.router.established()?.len() < 3 {
        let hops = b
            .router
            .rib()?
            .get(&prefix)
            .map(|e| e.next_hops.clone())
            .unwrap_or_default();
        seen_without |= hops != all;
        assert!(
            std::time::Instant::now() < deadline,
            "node1 never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    b.wait_next_hops(&prefix, &all.iter().copied().collect::<Vec<_>>())
        .await?;
    assert!(
        !seen_without,
        "the router dropped node1's route during the restart"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn communities_local_pref_and_aggregation_reach_the_router() -> Result<()> {
    // iBGP with BIRD: its RIB shows every attribute, LOCAL_PREF included.
    let mut router = RouterConfig::new(Kind::Bird);
    router.asn = NODE_ASN;
    let b = BgpRig::start("bgp-attributes", 3, &[], router).await?;
    b.rig
        .scenario
        .pool("bgp-attr", json!({"addresses": ["198.51.100.224/28"]}))
        .await?;
    let communities: Api<ferrolb_crds::Community> = Api::all(b.rig.scenario.client.clone());
    let names: ferrolb_crds::Community = serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "Community",
        "metadata": {"name": "names"},
        "spec": {"communities": [{"name": "vpn-only", "value": "1234:1"}]},
    }))?;
    communities
        .patch(
            "names",
            &PatchParams::apply("ferrolb-tests").force(),
            &Patch::Apply(&names),
        )
        .await?;
    b.peer(
        "router",
        json!({"myASN": NODE_ASN, "peerASN": NODE_ASN, "peerAddress": ROUTER_IPV4.to_string()}),
    )
    .await?;
    b.advertisement(
        "hosts",
        json!({"ipAddressPools": ["bgp-attr"], "localPref": 250,
        "communities": ["65535:65282", "large:64512:1:2", "vpn-only"]}),
    )
    .await?;
    b.advertisement(
        "aggregate",
        json!({"ipAddressPools": ["bgp-attr"], "aggregationLength": 28}),
    )
    .await?;
    b.rig.scenario.service("web", json!({})).await?;
    let vip: IpAddr = b.rig.scenario.wait_any_ip("web").await?[0].parse()?;
    let all: Vec<IpAddr> = NODES.iter().map(|n| node_ip(n)).collect();
    let host = b.wait_next_hops(&format!("{vip}/32"), &all).await?;
    assert_eq!(host.local_pref, Some(250));
    assert_eq!(
        host.communities,
        ["1234:1", "65535:65282", "large:64512:1:2"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let aggregate = b.wait_next_hops("198.51.100.224/28", &all).await?;
    assert_eq!(
        aggregate.local_pref,
        Some(100),
        "the aggregate's advertisement sets none"
    );
    assert!(aggregate.communities.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_a_secret_in_the_speakers_namespace_brings_sessions_up() -> Result<()> {
    let mut router = RouterConfig::new(Kind::Frr);
    router.password = Some("from-a-secret".into());
    let b = BgpRig::start("bgp-secret", 3, &[], router).await?;
    // The rig's speakers run as the chart's ServiceAccount in ferrolb-system.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(b.rig.scenario.client.clone(), "ferrolb-system");
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bgp-md5", "namespace": "ferrolb-system"},
        "type": "kubernetes.io/basic-auth",
        "stringData": {"password": "from-a-secret"},
    }))?;
    secrets
        .patch(
            "bgp-md5",
            &PatchParams::apply("ferrolb-tests").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    b.peer(
        "router",
        json!({"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": ROUTER_IPV4.to_string(),
        "passwordSecret": {"name": "bgp-md5"}}),
    )
    .await?;
    let all: BTreeSet<IpAddr> = NODES.iter().map(|n| node_ip(n)).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while b.router.established()? != all {
        assert!(
            std::time::Instant::now() < deadline,
            "sessions {:?}",
            b.router.established()?
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}
