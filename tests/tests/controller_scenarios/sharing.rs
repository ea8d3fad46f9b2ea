//! Shared addresses under `ferrolb.io/allow-shared-ip`: distinct ports share, colliding ports
//! or different traffic policies do not.

use anyhow::Result;
use ferrolb_crds::contract::annotation::ALLOW_SHARED_IP;
use ferrolb_crds::contract::reason;
use ferrolb_tests::scenario::{Scenario, ingress};
use serde_json::json;

use crate::v4_pool;

fn shared(key: &str, port: i32) -> serde_json::Value {
    json!({
        "metadata": {"annotations": {ALLOW_SHARED_IP: key}},
        "spec": {"ports": [{"port": port, "name": "p"}], "selector": {"app": "shared"}},
    })
}

#[tokio::test]
async fn services_with_one_key_and_distinct_ports_share_an_ip() -> Result<()> {
    let s = Scenario::start("share").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.13"])).await?;
    s.service("dns-tcp", shared("dns", 53)).await?;
    s.wait_ips("dns-tcp", &["203.0.113.10"]).await?;
    s.service("dns-alt", shared("dns", 5353)).await?;
    s.wait_ips("dns-alt", &["203.0.113.10"]).await?;
    s.wait_pool("p", "one address counted once", |p| {
        p.status
            .as_ref()
            .is_some_and(|st| st.assigned_ipv4.0 == 1 && st.available_ipv4.0 == 3)
    })
    .await?;
    // The address stays with the remaining user.
    s.delete_service("dns-tcp").await?;
    s.service("sentinel", json!({})).await?;
    s.wait_ips("sentinel", &["203.0.113.11"]).await?;
    assert_eq!(
        ingress(&s.services().get("dns-alt").await?),
        ["203.0.113.10"]
    );
    Ok(())
}

#[tokio::test]
async fn a_colliding_port_takes_a_fresh_ip_or_names_the_port_when_requested() -> Result<()> {
    let s = Scenario::start("collide").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.13"])).await?;
    s.service("a", shared("k", 80)).await?;
    s.wait_ips("a", &["203.0.113.10"]).await?;
    s.service("b", shared("k", 80)).await?;
    s.wait_ips("b", &["203.0.113.11"]).await?;
    let mut requested = shared("k", 80);
    requested["spec"]["loadBalancerIP"] = json!("203.0.113.10");
    s.service("c", requested).await?;
    let c = s.wait_reason("c", reason::PORT_COLLISION).await?;
    assert!(c.message.contains("both use port 80/TCP"), "{}", c.message);
    Ok(())
}

#[tokio::test]
async fn sharing_needs_matching_traffic_policy() -> Result<()> {
    let s = Scenario::start("etp").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.13"])).await?;
    s.service("cluster", shared("k", 80)).await?;
    s.wait_ips("cluster", &["203.0.113.10"]).await?;
    let mut local = shared("k", 81);
    local["spec"]["externalTrafficPolicy"] = json!("Local");
    local["spec"]["loadBalancerIP"] = json!("203.0.113.10");
    s.service("local", local).await?;
    let c = s.wait_reason("local", reason::IP_IN_USE).await?;
    assert!(
        c.message.contains("same externalTrafficPolicy"),
        "{}",
        c.message
    );
    Ok(())
}

#[tokio::test]
async fn local_policy_services_with_one_selector_share() -> Result<()> {
    let s = Scenario::start("local-share").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.13"])).await?;
    for (name, port) in [("l1", 80), ("l2", 443)] {
        let mut body = shared("k", port);
        body["spec"]["externalTrafficPolicy"] = json!("Local");
        s.service(name, body).await?;
        s.wait_ips(name, &["203.0.113.10"]).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_port_change_that_breaks_sharing_moves_the_changed_service() -> Result<()> {
    let s = Scenario::start("share-break").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.13"])).await?;
    s.service("a", shared("k", 80)).await?;
    s.wait_ips("a", &["203.0.113.10"]).await?;
    s.service("b", shared("k", 81)).await?;
    s.wait_ips("b", &["203.0.113.10"]).await?;
    s.patch_service("b", json!({"spec": {"ports": [{"port": 80, "name": "p"}]}}))
        .await?;
    s.wait_ips("b", &["203.0.113.11"]).await?;
    let note = s.wait_event("b", reason::IP_RELEASED).await?;
    assert!(note.contains("both use port 80/TCP"), "{note}");
    assert_eq!(ingress(&s.services().get("a").await?), ["203.0.113.10"]);
    Ok(())
}
