//! Which Services the controller serves: LoadBalancers of its class, with the address,
//! annotation, condition, Event and `ipMode: VIP`; the rest are left alone.

use anyhow::Result;
use ferrolb_crds::contract::reason;
use ferrolb_tests::scenario::{Scenario, condition, ingress, pool_annotation};
use serde_json::json;

use crate::v4_pool;

#[tokio::test]
async fn allocates_lowest_ipv4_with_annotation_condition_event_and_vip_mode() -> Result<()> {
    let s = Scenario::start("basic").await?;
    s.pool("basic", v4_pool(&["203.0.113.10-203.0.113.20"]))
        .await?;
    s.service("web", json!({})).await?;
    let svc = s.wait_ips("web", &["203.0.113.10"]).await?;
    let lb = svc.status.as_ref().unwrap().load_balancer.as_ref().unwrap();
    assert_eq!(
        lb.ingress.as_ref().unwrap()[0].ip_mode.as_deref(),
        Some("VIP")
    );
    assert_eq!(pool_annotation(&svc).as_deref(), Some("basic"));
    let c = condition(&svc).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", reason::ALLOCATED)
    );
    assert_eq!(c.message, "203.0.113.10 from pool basic");
    let note = s.wait_event("web", reason::IP_ALLOCATED).await?;
    assert_eq!(note, "Assigned 203.0.113.10 from pool basic");
    Ok(())
}

#[tokio::test]
async fn services_that_are_not_load_balancers_or_of_another_class_are_left_alone() -> Result<()> {
    let s = Scenario::start("alone").await?;
    s.pool("alone", v4_pool(&["203.0.113.10-203.0.113.20"]))
        .await?;
    s.service("plain", json!({"spec": {"type": "ClusterIP"}}))
        .await?;
    s.service(
        "other",
        json!({"spec": {"loadBalancerClass": "example.com/other"}}),
    )
    .await?;
    // Services are watched in order: once a later one is served, the earlier ones were seen.
    s.service("sentinel", json!({})).await?;
    s.wait_ips("sentinel", &["203.0.113.10"]).await?;
    for name in ["plain", "other"] {
        let svc = s.services().get(name).await?;
        assert!(ingress(&svc).is_empty(), "{name}");
        assert_eq!(pool_annotation(&svc), None, "{name}");
        assert!(condition(&svc).is_none(), "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn a_service_that_stops_being_a_load_balancer_loses_its_ip_to_a_waiting_one() -> Result<()> {
    let s = Scenario::start("type-change").await?;
    s.pool("tc", v4_pool(&["203.0.113.10/32"])).await?;
    s.service("first", json!({})).await?;
    s.wait_ips("first", &["203.0.113.10"]).await?;
    s.service("second", json!({})).await?;
    s.wait_reason("second", reason::POOL_EXHAUSTED).await?;
    s.patch_service("first", json!({"spec": {"type": "ClusterIP"}}))
        .await?;
    s.wait_ips("second", &["203.0.113.10"]).await?;
    let first = s
        .wait("first", "everything ferrolb wrote removed", |svc| {
            (ingress(svc).is_empty() && pool_annotation(svc).is_none() && condition(svc).is_none())
                .then_some(())
        })
        .await;
    first?;
    let note = s.wait_event("first", reason::IP_RELEASED).await?;
    assert!(note.contains("no longer a LoadBalancer"), "{note}");
    Ok(())
}

#[tokio::test]
async fn lb_class_services_are_not_served_by_the_default_controller() -> Result<()> {
    let s = Scenario::start("class").await?;
    s.pool("class", v4_pool(&["203.0.113.10-203.0.113.20"]))
        .await?;
    s.service(
        "classed",
        json!({"spec": {"loadBalancerClass": "ferrolb.io/other"}}),
    )
    .await?;
    s.service("sentinel", json!({})).await?;
    // The classed one is skipped: the sentinel gets the lowest address.
    s.wait_ips("sentinel", &["203.0.113.10"]).await?;
    assert!(ingress(&s.services().get("classed").await?).is_empty());
    Ok(())
}
