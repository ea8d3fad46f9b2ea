//! Stability: addresses never move without a reason, converged Services are not written again,
//! tampered status is restored, failures are reported once, and the metrics tell the counts.

use std::time::Duration;

use anyhow::Result;
use ferrolb_crds::contract::annotation::{ADDRESS_POOL, LOAD_BALANCER_IPS};
use ferrolb_crds::contract::reason;
use ferrolb_tests::scenario::{Scenario, ingress, metric};
use ferrolb_tests::services::eventually;
use serde_json::json;

use crate::v4_pool;

#[tokio::test]
async fn deleting_other_services_never_changes_an_ip() -> Result<()> {
    let s = Scenario::start("others").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.20"])).await?;
    for i in 0..5 {
        let name = format!("s{i}");
        s.service(&name, json!({})).await?;
        s.wait_any_ip(&name).await?;
    }
    let before = ingress(&s.services().get("s3").await?);
    for name in ["s0", "s1", "s4"] {
        s.delete_service(name).await?;
    }
    s.service("new", json!({})).await?;
    s.wait_ips("new", &["203.0.113.10"]).await?;
    assert_eq!(ingress(&s.services().get("s3").await?), before);
    Ok(())
}

#[tokio::test]
async fn a_changed_request_moves_the_ip_and_says_why() -> Result<()> {
    let s = Scenario::start("moved").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.17"])).await?;
    s.service("svc", json!({})).await?;
    s.wait_ips("svc", &["203.0.113.10"]).await?;
    s.patch_service(
        "svc",
        json!({"metadata": {"annotations": {LOAD_BALANCER_IPS: "203.0.113.14"}}}),
    )
    .await?;
    s.wait_ips("svc", &["203.0.113.14"]).await?;
    let note = s.wait_event("svc", reason::IP_RELEASED).await?;
    assert_eq!(
        note,
        "Released 203.0.113.10: the Service now requests 203.0.113.14 instead of 203.0.113.10"
    );
    Ok(())
}

#[tokio::test]
async fn a_converged_service_is_not_written_again() -> Result<()> {
    let s = Scenario::start("converged").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.17"])).await?;
    let before = service_writes();
    s.service("svc", json!({})).await?;
    let svc = s.wait_ips("svc", &["203.0.113.10"]).await?;
    // The controller counts a write when the apiserver's answer reaches it, which may be just
    // after the watch event that showed the IP here.
    let writes = counted_at_least(before + 1.0).await?;
    // A change the controller does not care about, then a sync point.
    let touched = s
        .patch_service("svc", json!({"metadata": {"labels": {"unrelated": "yes"}}}))
        .await?;
    s.service("sentinel", json!({})).await?;
    s.wait_any_ip("sentinel").await?;
    counted_at_least(writes + 1.0).await?;
    let now = s.services().get("svc").await?;
    assert_eq!(
        now.metadata.resource_version,
        touched.metadata.resource_version
    );
    assert_ne!(
        svc.metadata.resource_version,
        touched.metadata.resource_version
    );
    assert_eq!(
        service_writes() - writes,
        1.0,
        "only the sentinel was written"
    );
    Ok(())
}

/// Service status writes the shared controller has made.
fn service_writes() -> f64 {
    metric("ferrolb_controller_writes_total{object=\"service\",result=\"ok\"}").unwrap_or_default()
}

/// Waits until the controller has counted at least `n` Service writes; returns its count.
async fn counted_at_least(n: f64) -> Result<f64> {
    eventually(
        "the controller to count its write",
        Duration::from_secs(10),
        || async {
            let counted = tokio::task::spawn_blocking(service_writes).await?;
            Ok(if counted >= n {
                Ok(counted)
            } else {
                Err(format!("{counted} writes counted"))
            })
        },
    )
    .await
}

#[tokio::test]
async fn a_tampered_status_is_restored() -> Result<()> {
    let s = Scenario::start("tamper").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.17"])).await?;
    s.service("svc", json!({})).await?;
    s.wait_ips("svc", &["203.0.113.10"]).await?;
    s.services()
        .patch_status(
            "svc",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.99", "ipMode": "VIP"}]}}})),
        )
        .await?;
    s.wait_ips("svc", &["203.0.113.10"]).await?;
    Ok(())
}

#[tokio::test]
async fn a_service_recreated_under_the_same_name_is_served_again() -> Result<()> {
    let s = Scenario::start("recreate").await?;
    s.pool("p", v4_pool(&["203.0.113.10/32"])).await?;
    s.service("svc", json!({})).await?;
    s.wait_ips("svc", &["203.0.113.10"]).await?;
    s.delete_service("svc").await?;
    s.service("svc", json!({})).await?;
    s.wait_ips("svc", &["203.0.113.10"]).await?;
    Ok(())
}

#[tokio::test]
async fn a_failure_event_is_not_repeated_while_the_reason_stays() -> Result<()> {
    let s = Scenario::start("no-repeat").await?;
    s.pool("p", v4_pool(&["203.0.113.10/32"])).await?;
    s.service("holder", json!({})).await?;
    s.wait_any_ip("holder").await?;
    s.service("waiter", json!({})).await?;
    s.wait_reason("waiter", reason::POOL_EXHAUSTED).await?;
    // Unrelated changes to the waiter, then a sync point.
    for i in 0..3 {
        s.patch_service(
            "waiter",
            json!({"metadata": {"labels": {"n": i.to_string()}}}),
        )
        .await?;
    }
    s.pool(
        "q",
        json!({"addresses": ["198.51.100.200/32"], "autoAssign": false}),
    )
    .await?;
    s.service(
        "sentinel",
        json!({"metadata": {"annotations": {ADDRESS_POOL: "q"}}}),
    )
    .await?;
    s.wait_any_ip("sentinel").await?;
    s.wait_event("waiter", reason::ALLOCATION_FAILED).await?;
    assert_eq!(
        s.events("waiter", reason::ALLOCATION_FAILED).await?.len(),
        1
    );
    Ok(())
}

#[tokio::test]
async fn metrics_report_pool_usage_and_failures_by_reason() -> Result<()> {
    let s = Scenario::start("metrics").await?;
    s.pool(
        "metrics-pool",
        json!({"addresses": ["203.0.113.10/31", "2001:db8:70::/126"]}),
    )
    .await?;
    s.service("a", json!({})).await?;
    s.wait_any_ip("a").await?;
    let failures_before = metric(&format!(
        "ferrolb_controller_allocation_failures_total{{reason=\"{}\"}}",
        reason::INVALID_REQUEST
    ))
    .unwrap_or_default();
    s.service("bad", json!({"spec": {"loadBalancerIP": "nope"}}))
        .await
        .ok();
    s.service(
        "bad2",
        json!({"metadata": {"annotations": {LOAD_BALANCER_IPS: "nope"}}}),
    )
    .await?;
    s.wait_reason("bad2", reason::INVALID_REQUEST).await?;
    tokio::task::spawn_blocking(move || {
        ferrolb_tests::process::wait_for("pool metrics", Duration::from_secs(10), || {
            let cap =
                metric("ferrolb_controller_pool_addresses{pool=\"metrics-pool\",family=\"ipv4\"}");
            let used = metric(
                "ferrolb_controller_pool_addresses_in_use{pool=\"metrics-pool\",family=\"ipv4\"}",
            );
            let cap6 =
                metric("ferrolb_controller_pool_addresses{pool=\"metrics-pool\",family=\"ipv6\"}");
            Ok((cap == Some(2.0) && used == Some(1.0) && cap6 == Some(4.0)).then_some(()))
        })
    })
    .await??;
    let failures = metric(&format!(
        "ferrolb_controller_allocation_failures_total{{reason=\"{}\"}}",
        reason::INVALID_REQUEST
    ))
    .unwrap_or_default();
    assert!(failures > failures_before);
    assert_eq!(metric("ferrolb_controller_leader"), Some(1.0));
    Ok(())
}
