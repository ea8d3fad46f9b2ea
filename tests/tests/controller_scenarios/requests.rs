//! Requested addresses and pools: `spec.loadBalancerIP`, the annotations (MetalLB's
//! spellings too), conflicting or garbage requests, held or unknown addresses, named pools.

use anyhow::Result;
use ferrolb_crds::contract::annotation::{ADDRESS_POOL, ALLOW_SHARED_IP, LOAD_BALANCER_IPS};
use ferrolb_crds::contract::reason;
use ferrolb_tests::scenario::{Scenario, ingress, pool_annotation};
use serde_json::json;

use crate::v4_pool;

#[tokio::test]
async fn spec_load_balancer_ip_is_honoured() -> Result<()> {
    let s = Scenario::start("lbip").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.20"])).await?;
    s.service("svc", json!({"spec": {"loadBalancerIP": "203.0.113.17"}}))
        .await?;
    s.wait_ips("svc", &["203.0.113.17"]).await?;
    Ok(())
}

#[tokio::test]
async fn annotation_requests_one_ip_per_family() -> Result<()> {
    let s = Scenario::start("annot").await?;
    s.pool(
        "p",
        json!({"addresses": ["203.0.113.10-203.0.113.20", "2001:db8:40::/120"]}),
    )
    .await?;
    s.service(
        "svc",
        json!({
            "metadata": {"annotations": {LOAD_BALANCER_IPS: "2001:db8:40::7,203.0.113.15"}},
            "spec": {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"},
        }),
    )
    .await?;
    s.wait_ips("svc", &["203.0.113.15", "2001:db8:40::7"])
        .await?;
    Ok(())
}

#[tokio::test]
async fn metallb_annotation_spellings_are_accepted() -> Result<()> {
    let s = Scenario::start("metallb").await?;
    s.pool("a", v4_pool(&["203.0.113.10/31"])).await?;
    s.pool("b", v4_pool(&["203.0.113.20/31"])).await?;
    s.service(
        "old",
        json!({"metadata": {"annotations": {"metallb.universe.tf/loadBalancerIPs": "203.0.113.11"}}}),
    )
    .await?;
    s.service(
        "new",
        json!({"metadata": {"annotations": {"metallb.io/address-pool": "b"}}}),
    )
    .await?;
    s.wait_ips("old", &["203.0.113.11"]).await?;
    s.wait_ips("new", &["203.0.113.20"]).await?;
    Ok(())
}

#[tokio::test]
async fn both_request_forms_are_refused_with_both_values_named() -> Result<()> {
    let s = Scenario::start("both").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.17"])).await?;
    s.service(
        "svc",
        json!({
            "metadata": {"annotations": {LOAD_BALANCER_IPS: "203.0.113.12"}},
            "spec": {"loadBalancerIP": "203.0.113.11"},
        }),
    )
    .await?;
    let c = s.wait_reason("svc", reason::INVALID_REQUEST).await?;
    assert_eq!(
        c.message,
        format!(
            "spec.loadBalancerIP \"203.0.113.11\" and annotation {LOAD_BALANCER_IPS}=\"203.0.113.12\" are both set; keep only the annotation"
        )
    );
    assert_eq!(c.status, "False");
    let note = s.wait_event("svc", reason::ALLOCATION_FAILED).await?;
    assert_eq!(note, c.message);
    Ok(())
}

#[tokio::test]
async fn a_garbage_annotation_names_the_value_and_fixing_it_serves_the_service() -> Result<()> {
    let s = Scenario::start("garbage").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.17"])).await?;
    s.service(
        "svc",
        json!({"metadata": {"annotations": {LOAD_BALANCER_IPS: "203.0.113.300"}}}),
    )
    .await?;
    let c = s.wait_reason("svc", reason::INVALID_REQUEST).await?;
    assert_eq!(
        c.message,
        format!("annotation {LOAD_BALANCER_IPS}: \"203.0.113.300\" is not an IP address")
    );
    s.patch_service(
        "svc",
        json!({"metadata": {"annotations": {LOAD_BALANCER_IPS: "203.0.113.13"}}}),
    )
    .await?;
    s.wait_ips("svc", &["203.0.113.13"]).await?;
    Ok(())
}

#[tokio::test]
async fn an_empty_list_element_is_refused_with_a_warning_and_affects_no_other_service() -> Result<()>
{
    let s = Scenario::start("emptyelem").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.17"])).await?;
    s.service(
        "bad",
        json!({"metadata": {"annotations": {LOAD_BALANCER_IPS: "203.0.113.11,,"}}}),
    )
    .await?;
    s.service("good", json!({})).await?;
    let c = s.wait_reason("bad", reason::INVALID_REQUEST).await?;
    let expected = format!(
        "annotation {LOAD_BALANCER_IPS} has an empty element in \"203.0.113.11,,\": separate \
         entries with single commas, with none at the end"
    );
    assert_eq!(
        (c.status.as_str(), c.message.as_str()),
        ("False", expected.as_str())
    );
    assert_eq!(
        s.wait_event("bad", reason::ALLOCATION_FAILED).await?,
        expected
    );
    s.wait_any_ip("good").await?;
    let bad = s.services().get("bad").await?;
    assert!(
        ingress(&bad).is_empty(),
        "the refused Service got an address"
    );
    Ok(())
}

#[tokio::test]
async fn a_requested_ip_held_by_another_names_the_holder_and_is_served_when_freed() -> Result<()> {
    let s = Scenario::start("held").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.17"])).await?;
    s.service(
        "holder",
        json!({"spec": {"loadBalancerIP": "203.0.113.12"}}),
    )
    .await?;
    s.wait_ips("holder", &["203.0.113.12"]).await?;
    s.service(
        "wants",
        json!({"metadata": {"annotations": {LOAD_BALANCER_IPS: "203.0.113.12"}}}),
    )
    .await?;
    let c = s.wait_reason("wants", reason::IP_IN_USE).await?;
    assert_eq!(
        c.message,
        format!(
            "203.0.113.12 is held by {}/holder: sharing needs the same {ALLOW_SHARED_IP} key on both Services",
            s.ns
        )
    );
    s.delete_service("holder").await?;
    s.wait_ips("wants", &["203.0.113.12"]).await?;
    Ok(())
}

#[tokio::test]
async fn a_requested_ip_outside_every_pool_is_refused() -> Result<()> {
    let s = Scenario::start("outside").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.17"])).await?;
    s.service("svc", json!({"spec": {"loadBalancerIP": "198.51.100.250"}}))
        .await?;
    let c = s.wait_reason("svc", reason::NOT_IN_ANY_POOL).await?;
    assert!(
        c.message
            .starts_with("the requested 198.51.100.250 is in no IPAddressPool"),
        "{}",
        c.message
    );
    Ok(())
}

#[tokio::test]
async fn the_address_pool_annotation_picks_the_pool() -> Result<()> {
    let s = Scenario::start("named").await?;
    s.pool("a", v4_pool(&["203.0.113.10/31"])).await?;
    s.pool("b", v4_pool(&["203.0.113.20/31"])).await?;
    s.service(
        "svc",
        json!({"metadata": {"annotations": {ADDRESS_POOL: "b"}}}),
    )
    .await?;
    let svc = s.wait_ips("svc", &["203.0.113.20"]).await?;
    assert_eq!(pool_annotation(&svc).as_deref(), Some("b"));
    Ok(())
}

#[tokio::test]
async fn a_missing_named_pool_is_reported_and_served_once_created() -> Result<()> {
    let s = Scenario::start("missing").await?;
    s.pool("a", v4_pool(&["203.0.113.10/31"])).await?;
    s.service(
        "svc",
        json!({"metadata": {"annotations": {ADDRESS_POOL: "later"}}}),
    )
    .await?;
    let c = s.wait_reason("svc", reason::POOL_NOT_FOUND).await?;
    assert_eq!(
        c.message,
        format!("annotation {ADDRESS_POOL} names pool later, which does not exist (pools: a)")
    );
    s.pool("later", v4_pool(&["203.0.113.30/31"])).await?;
    s.wait_ips("svc", &["203.0.113.30"]).await?;
    Ok(())
}
