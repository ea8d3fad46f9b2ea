//! Who may announce, end to end: real speakers in lab node namespaces, the real controller, and
//! the client's own kernel, curl, arping and ndisc6 as peers. Each test changes one input of
//! eligibility (endpoints of a `Local` Service, `nodeSelectors`, `interfaces`, excluded Nodes)
//! or of grouping (dual-stack, shared IPs) and checks the wire, the data path and the condition.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use ferrolb_crds::L2Advertisement;
use ferrolb_speaker::election;
use ferrolb_tests::l2lab::{Capture, EXCLUDE_LABEL, Rig, TIMEOUT, announced};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Waits until the speakers' condition on Service `svc` satisfies `ok`.
async fn wait_condition(
    rig: &Rig,
    svc: &str,
    what: &str,
    ok: impl Fn(&Condition) -> bool,
) -> Result<Condition> {
    rig.scenario
        .wait(svc, what, |s| announced(s).filter(|c| ok(c)).cloned())
        .await
}

/// Waits until the condition on `svc` says `node` announces on `eth0` (every lab node's one
/// interface).
async fn wait_announced_by(rig: &Rig, svc: &str, node: &str) -> Result<Condition> {
    wait_condition(rig, svc, &format!("announced by {node} on eth0"), |c| {
        c.status == "True"
            && c.reason == "Announced"
            && c.message.starts_with(&format!("{node} announces "))
            && c.message.ends_with(" on eth0")
    })
    .await
}

/// arping (`count` requests) until the replies satisfy `ok`; the last replies otherwise.
fn arping_until(
    rig: &Rig,
    vip: IpAddr,
    count: u32,
    ok: impl Fn(&[String]) -> bool,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let replies = rig.arping(vip, count)?;
        if ok(&replies) {
            return Ok(replies);
        }
        if Instant::now() > deadline {
            bail!(
                "arping {vip}: replies never satisfied the check within {TIMEOUT:?}; last: {replies:?}"
            );
        }
    }
}

/// Stops `capture`; what it saw of ARP for `vip` (see [`ArpWire`]).
fn arp_wire(capture: Capture, rig: &Rig, vip: IpAddr) -> Result<ArpWire> {
    let client = rig.lab.client().mac.to_lowercase();
    let mut wire = ArpWire::default();
    let frames = capture.finish(
        &format!("arp.src.proto_ipv4 == {vip} || arp.dst.proto_ipv4 == {vip}"),
        &["arp.opcode", "eth.src", "eth.dst", "arp.src.proto_ipv4"],
    )?;
    for frame in frames {
        let f: Vec<String> = frame.split('\t').map(str::to_lowercase).collect();
        let [opcode, src, dst, spa] = &f[..] else {
            bail!("unexpected tshark line {frame:?}");
        };
        let claims_vip = *spa == vip.to_string();
        if opcode == "1" && *src == client && !claims_vip {
            wire.requests += 1;
        }
        if opcode == "2" && claims_vip && *dst == client {
            wire.replies.push(src.clone());
        }
        if claims_vip {
            wire.claims.insert(src.clone());
        }
    }
    Ok(wire)
}

/// ARP about one address on the client's wire.
#[derive(Debug, Default)]
struct ArpWire {
    /// Requests the client sent for it (arping's and its kernel's).
    requests: usize,
    /// Source MACs of the replies unicast to the client.
    replies: Vec<String>,
    /// Source MACs of every frame claiming the address (replies, gratuitous announcements).
    claims: BTreeSet<String>,
}

/// arping `count` requests from the client while capturing: arping's replies and the wire.
fn arping_on_wire(rig: &Rig, vip: IpAddr, count: u32) -> Result<(Vec<String>, ArpWire)> {
    let capture = rig.capture("arp")?;
    let replies = rig.arping(vip, count)?;
    Ok((replies, arp_wire(capture, rig, vip)?))
}

/// arping gets replies from `node` only, and on the wire exactly one reply answers each
/// request and nothing but `node` claims `vip`. (arping also prints gratuitous ARP replies
/// that arrive while it listens, so one reply per request is counted on the wire.)
fn expect_replies_from(rig: &Rig, vip: IpAddr, node: &str, count: u32) -> Result<()> {
    let mac = rig.host(node)?.mac.clone();
    let (replies, wire) = arping_on_wire(rig, vip, count)?;
    assert!(
        replies.len() >= count as usize && replies.iter().all(|m| *m == mac),
        "arping {vip}: {count} requests, replies only from {node} ({mac}): {replies:?}"
    );
    assert!(
        wire.requests >= count as usize
            && wire.replies.len() == wire.requests
            && wire.replies.iter().all(|m| *m == mac),
        "{vip}: exactly one reply per request, from {node} ({mac}); on the wire: {wire:?}"
    );
    assert_eq!(
        wire.claims,
        BTreeSet::from([mac]),
        "ARP frames claiming {vip} from another MAC than {node}'s"
    );
    Ok(())
}

/// `node` alone announces IPv4 `vip` of Service `svc`: the condition names it, the client's
/// kernel resolves the VIP to its MAC and curl is answered by it, and arping gets exactly one
/// reply per request, from it, with no other MAC claiming the VIP on the wire meanwhile.
async fn expect_owner(rig: &Rig, svc: &str, vip: IpAddr, node: &str) -> Result<Condition> {
    let c = wait_announced_by(rig, svc, node).await?;
    let mac = rig.host(node)?.mac.clone();
    // The previous owner may take a moment longer to let go than the new one to take over.
    arping_until(rig, vip, 1, |r| r == [mac.clone()])?;
    let answer = rig
        .curl_until(vip, TIMEOUT, |a| a == node)
        .with_context(|| format!("curl {vip} should reach {node}"))?;
    ensure!(answer == node);
    assert_eq!(
        rig.client_neighbour(vip)?,
        Some(mac.clone()),
        "the client's neighbour entry for {vip} is not {node}'s MAC"
    );
    expect_replies_from(rig, vip, node, 3)?;
    Ok(c)
}

/// Nobody answers for IPv4 `vip`: arping gets no reply, and no frame claims the VIP.
fn expect_silence(rig: &Rig, vip: IpAddr) -> Result<()> {
    // The last owner may take a moment to let go after the condition changed.
    arping_until(rig, vip, 1, |r| r.is_empty())?;
    let (replies, wire) = arping_on_wire(rig, vip, 3)?;
    assert!(replies.is_empty(), "arping {vip}: replies {replies:?}");
    assert!(
        wire.requests >= 3 && wire.claims.is_empty(),
        "ARP frames claiming {vip}: {wire:?}"
    );
    Ok(())
}

/// The node rendezvous election picks for `vip` when every lab node may announce.
fn natural_winner(vip: IpAddr) -> String {
    election::owner(vip, NODES).unwrap().to_string()
}

// ---- externalTrafficPolicy: Local ------------------------------------------------------------

/// An EndpointSlice of Service `svc` with one endpoint on `node`.
fn slice(name: &str, svc: &str, node: &str, ready: bool) -> Result<EndpointSlice> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [endpoint(node, ready)],
    }))?)
}

fn endpoint(node: &str, ready: bool) -> Value {
    // A pod address on the node (documentation range; nothing is sent there).
    let octet = 10 + node.trim_start_matches("node").parse::<u8>().unwrap_or(0);
    json!({
        "addresses": [format!("198.51.100.{octet}")],
        "nodeName": node,
        "conditions": {"ready": ready, "serving": ready, "terminating": false},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_policy_announces_only_from_nodes_with_a_ready_endpoint() -> Result<()> {
    let rig = Rig::start("local", 3, &[], false).await?;
    rig.pool_and_advertisement("local", &["198.51.100.200-198.51.100.210"], json!({}))
        .await?;
    rig.scenario
        .service("web", json!({"spec": {"externalTrafficPolicy": "Local"}}))
        .await?;
    let vip = ip(&rig.scenario.wait_any_ip("web").await?[0]);

    // No endpoint anywhere yet: nobody announces, and the condition says why.
    let c = rig.wait_announced("web", "False").await?;
    assert_eq!(c.reason, "NotAnnounced");
    assert!(c.message.contains("no ready endpoint"), "{}", c.message);
    expect_silence(&rig, vip)?;

    // Endpoints go on nodes election would not pick on its own, so only Local explains them.
    let natural = natural_winner(vip);
    let others: Vec<&str> = NODES.into_iter().filter(|n| *n != natural).collect();
    let (first, second) = (others[0], others[1]);
    let slices: Api<EndpointSlice> = Api::namespaced(rig.scenario.client.clone(), &rig.scenario.ns);
    slices
        .create(&PostParams::default(), &slice("web-1", "web", first, true)?)
        .await?;
    let c = expect_owner(&rig, "web", vip, first).await?;
    assert_eq!(c.message, format!("{first} announces {vip} on eth0"));

    // The endpoint moves: so does the address.
    let moved = json!({"endpoints": [endpoint(second, true)]});
    slices
        .patch("web-1", &PatchParams::default(), &Patch::Merge(&moved))
        .await?;
    expect_owner(&rig, "web", vip, second).await?;

    // The endpoint stays but is neither ready nor serving: nobody may announce.
    let unready = json!({"endpoints": [endpoint(second, false)]});
    slices
        .patch("web-1", &PatchParams::default(), &Patch::Merge(&unready))
        .await?;
    let c = wait_condition(&rig, "web", "NotAnnounced", |c| c.status == "False").await?;
    assert_eq!(c.reason, "NotAnnounced");
    assert_eq!(
        c.message,
        format!(
            "nobody announces {vip}: no node may announce: externalTrafficPolicy is Local and the node has no ready endpoint"
        )
    );
    expect_silence(&rig, vip)?;
    Ok(())
}

// ---- nodeSelectors ---------------------------------------------------------------------------

fn only_node(name: &str) -> Value {
    json!({"nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": name}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selectors_pick_the_one_announcing_node_for_every_service() -> Result<()> {
    let rig = Rig::start("selectors", 3, &[], false).await?;
    rig.pool_and_advertisement(
        "selectors",
        &["198.51.100.200-198.51.100.210"],
        only_node("node2"),
    )
    .await?;
    let names = ["a", "b", "c", "d"];
    let mut vips = Vec::new();
    for name in names {
        rig.scenario.service(name, json!({})).await?;
    }
    for name in names {
        vips.push(ip(&rig.scenario.wait_any_ip(name).await?[0]));
    }
    // Left to election, the addresses would spread over the nodes: neither node2 nor node3
    // would hold them all.
    let natural: BTreeSet<String> = vips.iter().map(|v| natural_winner(*v)).collect();
    assert!(
        natural.iter().any(|n| n != "node2") && natural.iter().any(|n| n != "node3"),
        "pick other addresses: election alone gives {natural:?}"
    );
    for (name, vip) in names.iter().zip(&vips) {
        expect_owner(&rig, name, *vip, "node2").await?;
    }

    // Selecting another node moves every address there.
    Api::<L2Advertisement>::all(rig.scenario.client.clone())
        .patch(
            "selectors",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": only_node("node3")})),
        )
        .await?;
    for (name, vip) in names.iter().zip(&vips) {
        expect_owner(&rig, name, *vip, "node3").await?;
    }
    Ok(())
}

// ---- interfaces ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertisement_interfaces_limit_where_the_address_is_answered() -> Result<()> {
    let rig = Rig::start("ifaces", 3, &[], false).await?;
    rig.pool_and_advertisement(
        "ifaces",
        &["198.51.100.200-198.51.100.210"],
        json!({"interfaces": ["eth0"]}),
    )
    .await?;
    rig.scenario.service("web", json!({})).await?;
    let vip = ip(&rig.scenario.wait_any_ip("web").await?[0]);
    let owner = rig.wait_announcer("web", None).await?;
    let c = expect_owner(&rig, "web", vip, &owner).await?;
    assert_eq!(c.message, format!("{owner} announces {vip} on eth0"));

    // An interface no node has: nobody answers, and the condition says it is on no interface.
    let ads = Api::<L2Advertisement>::all(rig.scenario.client.clone());
    ads.patch(
        "ifaces",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"interfaces": ["eth9"]}})),
    )
    .await?;
    let c = wait_condition(&rig, "web", "answers on no interface", |c| {
        c.message.contains("answers on no interface")
    })
    .await?;
    // The elected node cannot answer anywhere and says so (election does not know other nodes'
    // interfaces, so it does not move the address to a node that has eth9).
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "NoInterface")
    );
    assert!(
        c.message.starts_with(&format!(
            "{owner} is elected for {vip} but answers on no interface: none it may use (eth9)"
        )),
        "{}",
        c.message
    );
    expect_silence(&rig, vip)?;

    // Back to eth0: answered again.
    ads.patch(
        "ifaces",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"interfaces": ["eth0"]}})),
    )
    .await?;
    let c = expect_owner(&rig, "web", vip, &owner).await?;
    assert_eq!(c.message, format!("{owner} announces {vip} on eth0"));
    Ok(())
}

// ---- excluded nodes --------------------------------------------------------------------------

fn ready_condition() -> Value {
    json!({"type": "Ready", "status": "True", "reason": "LabNode", "message": "lab namespace is up"})
}

async fn set_network_unavailable(rig: &Rig, node: &str, unavailable: bool) -> Result<()> {
    let mut conditions = vec![ready_condition()];
    if unavailable {
        conditions.push(json!({
            "type": "NetworkUnavailable", "status": "True",
            "reason": "LabTest", "message": "set by speaker_eligibility",
        }));
    }
    // A merge patch replaces the whole list: Ready is written again with it.
    Api::<Node>::all(rig.scenario.client.clone())
        .patch_status(
            node,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": conditions}})),
        )
        .await
        .with_context(|| format!("writing the conditions of Node {node}"))?;
    Ok(())
}

async fn set_excluded(rig: &Rig, node: &str, excluded: bool) -> Result<()> {
    let value = if excluded { json!("") } else { Value::Null };
    Api::<Node>::all(rig.scenario.client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {EXCLUDE_LABEL: value}}})),
        )
        .await
        .with_context(|| format!("labelling Node {node}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_and_network_unavailable_nodes_hand_over_and_stay_silent() -> Result<()> {
    let rig = Rig::start("excluded", 3, &[], false).await?;
    rig.pool_and_advertisement("excluded", &["198.51.100.200-198.51.100.210"], json!({}))
        .await?;
    rig.scenario.service("web", json!({})).await?;
    let vip = ip(&rig.scenario.wait_any_ip("web").await?[0]);
    let first = rig.wait_announcer("web", None).await?;
    expect_owner(&rig, "web", vip, &first).await?;
    let first_mac = rig.host(&first)?.mac.clone();

    // Excluded by label: another node takes over, and the labelled one stays silent.
    set_excluded(&rig, &first, true).await?;
    let second = rig.wait_announcer("web", Some(&first)).await?;
    expect_owner(&rig, "web", vip, &second).await?;
    let watch = rig.capture("arp")?;
    let second_mac = rig.host(&second)?.mac.clone();

    // NetworkUnavailable on the new owner: the last node takes over.
    set_network_unavailable(&rig, &second, true).await?;
    let third = rig.wait_announcer("web", Some(&second)).await?;
    assert_ne!(third, first, "{first} announces although it is excluded");
    expect_owner(&rig, "web", vip, &third).await?;
    let third_mac = rig.host(&third)?.mac.clone();
    // Give both excluded nodes a few more requests to (wrongly) answer.
    expect_replies_from(&rig, vip, &third, 5)?;
    let claims = arp_wire(watch, &rig, vip)?.claims;
    assert!(
        !claims.contains(&first_mac),
        "{first} claimed {vip} after it was excluded: {claims:?}"
    );
    assert!(
        claims.is_subset(&BTreeSet::from([second_mac, third_mac])),
        "{claims:?}"
    );

    // Nobody else left: with the last node unavailable too, nobody announces, and says why.
    set_network_unavailable(&rig, &third, true).await?;
    let c = wait_condition(&rig, "web", "NotAnnounced", |c| c.status == "False").await?;
    assert_eq!(c.reason, "NotAnnounced");
    assert!(
        c.message.contains(EXCLUDE_LABEL) && c.message.contains("NetworkUnavailable"),
        "{}",
        c.message
    );
    expect_silence(&rig, vip)?;

    // Cleared again: election is deterministic, so the first owner takes the address back.
    set_excluded(&rig, &first, false).await?;
    set_network_unavailable(&rig, &second, false).await?;
    set_network_unavailable(&rig, &third, false).await?;
    expect_owner(&rig, "web", vip, &first).await?;
    Ok(())
}

// ---- dual-stack ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_addresses_are_announced_by_one_node() -> Result<()> {
    let rig = Rig::start("dual", 3, &[], false).await?;
    rig.pool_and_advertisement(
        "dual",
        &[
            "198.51.100.200-198.51.100.210",
            "2001:db8:1::200-2001:db8:1::20f",
        ],
        json!({}),
    )
    .await?;
    rig.scenario
        .service(
            "web",
            json!({"spec": {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}}),
        )
        .await?;
    let ips = rig
        .scenario
        .wait("web", "an IPv4 and an IPv6 ingress address", |s| {
            let ips = ferrolb_tests::scenario::ingress(s);
            (ips.len() == 2).then_some(ips)
        })
        .await?;
    let (v4, v6) = (ip(&ips[0]), ip(&ips[1]));
    assert!(v4.is_ipv4() && v6.is_ipv6(), "{ips:?}");

    let owner = rig.wait_announcer("web", None).await?;
    let c = expect_owner(&rig, "web", v4, &owner).await?;
    assert_eq!(c.message, format!("{owner} announces {v4}, {v6} on eth0"));
    let mac = rig.host(&owner)?.mac.clone();

    let answer = rig.curl_until(v6, TIMEOUT, |a| !a.is_empty())?;
    assert_eq!(
        answer, owner,
        "curl over IPv6 reached another node than over IPv4"
    );
    assert_eq!(rig.client_neighbour(v6)?, Some(mac.clone()));
    // ndisc6 prints every advertisement for the target while it listens, solicited or not
    // (a takeover's gratuitous burst or the periodic refresh may fall into its window), so
    // "once" is checked on the wire: exactly one solicited advertisement answers the one
    // solicitation, and nothing else advertises the address meanwhile.
    let capture = rig.capture("icmp6")?;
    let advertised = rig.ndisc6(v6)?;
    let adverts = capture.finish(
        &format!("icmpv6.type == 136 && icmpv6.nd.na.target_address == {v6}"),
        &["eth.src", "icmpv6.nd.na.flag.s", "ipv6.dst"],
    )?;
    assert!(
        !advertised.is_empty() && advertised.iter().all(|m| *m == mac),
        "ndisc6 {v6}: advertisements only from {owner}: {advertised:?}"
    );
    // (source MAC, destination) of each solicited advertisement; ndisc6 solicits from the
    // client's link-local address, so the answer goes there.
    let solicited: Vec<(&str, &str)> = adverts
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            matches!(f.get(1), Some(&("1" | "True")))
                .then(|| (f[0], f.get(2).copied().unwrap_or("")))
        })
        .collect();
    assert!(
        solicited.len() == 1 && solicited[0].0 == mac && !solicited[0].1.starts_with("ff"),
        "exactly one solicited advertisement, from {owner} to the client; all (source, \
         solicited, destination): {adverts:?}"
    );
    assert!(
        adverts.iter().all(|l| l.starts_with(&mac)),
        "advertisements of {v6} from another node: {adverts:?}"
    );
    Ok(())
}

// ---- shared IPs ------------------------------------------------------------------------------

fn shared(key: &str, port: i32) -> Value {
    json!({
        "metadata": {"annotations": {"ferrolb.io/allow-shared-ip": key}},
        "spec": {"ports": [{"port": port, "name": "p"}], "selector": {"app": "shared"}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_sharing_an_ip_have_one_announcer() -> Result<()> {
    let rig = Rig::start("shared", 3, &[], false).await?;
    rig.pool_and_advertisement("shared", &["198.51.100.200-198.51.100.210"], json!({}))
        .await?;
    rig.scenario.service("http", shared("web", 80)).await?;
    let ips = rig.scenario.wait_any_ip("http").await?;
    rig.scenario.service("alt", shared("web", 8080)).await?;
    rig.scenario.wait_ips("alt", &[ips[0].as_str()]).await?;
    let vip = ip(&ips[0]);

    let owner = rig.wait_announcer("http", None).await?;
    let c = expect_owner(&rig, "http", vip, &owner).await?;
    let alt = wait_announced_by(&rig, "alt", &owner).await?;
    assert_eq!(
        alt.message, c.message,
        "both Services name the same announcer"
    );
    assert_eq!(c.message, format!("{owner} announces {vip} on eth0"));

    // Port 8080 of the VIP lands on the same node (its backend listens there too).
    let alt_answer = rig.client(
        "curl",
        &["-sS", "--max-time", "2", &format!("http://{vip}:8080/")],
    )?;
    assert_eq!(alt_answer.trim(), owner);
    expect_replies_from(&rig, vip, &owner, 5)?;
    Ok(())
}
