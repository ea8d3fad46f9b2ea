//! Each input of eligibility changed in turn: the endpoints of a `Local` Service, an
//! advertisement's `nodeSelectors` and `interfaces`, Nodes excluded by label or unavailable.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use ferrolb_crds::L2Advertisement;
use ferrolb_crds::contract::label::{EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS, SERVICE_NAME};
use ferrolb_crds::contract::reason;
use ferrolb_tests::l2lab::Rig;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::wire::{arp_wire, expect_owner, expect_replies_from, expect_silence};
use crate::{NODES, ip, natural_winner, wait_condition};

// ---- externalTrafficPolicy: Local ------------------------------------------------------------

/// An EndpointSlice of Service `svc` with one endpoint on `node`.
fn slice(name: &str, svc: &str, node: &str, ready: bool) -> Result<EndpointSlice> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {SERVICE_NAME: svc}},
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
    assert_eq!(c.reason, reason::NOT_ANNOUNCED);
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
    let c = wait_condition(&rig, "web", reason::NOT_ANNOUNCED, |c| c.status == "False").await?;
    assert_eq!(c.reason, reason::NOT_ANNOUNCED);
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
        ("False", reason::NO_INTERFACE)
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
            &Patch::Merge(
                &json!({"metadata": {"labels": {EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS: value}}}),
            ),
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
    let c = wait_condition(&rig, "web", reason::NOT_ANNOUNCED, |c| c.status == "False").await?;
    assert_eq!(c.reason, reason::NOT_ANNOUNCED);
    assert!(
        c.message.contains(EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS)
            && c.message.contains("NetworkUnavailable"),
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
