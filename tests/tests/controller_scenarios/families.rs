//! IP families: single-stack IPv6, `RequireDualStack` and `PreferDualStack`, and a Service
//! turning dual-stack.

use anyhow::Result;
use ferrolb_crds::contract::reason;
use ferrolb_tests::scenario::{Scenario, pool_annotation};
use serde_json::json;

use crate::v4_pool;

#[tokio::test]
async fn single_stack_ipv6() -> Result<()> {
    let s = Scenario::start("v6").await?;
    s.pool(
        "v6",
        json!({"addresses": ["203.0.113.10/32", "2001:db8:10::/120"]}),
    )
    .await?;
    s.service(
        "v6",
        json!({"spec": {"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"}}),
    )
    .await?;
    s.wait_ips("v6", &["2001:db8:10::"]).await?;
    Ok(())
}

#[tokio::test]
async fn require_dual_stack_gets_one_of_each_from_one_pool() -> Result<()> {
    let s = Scenario::start("dual").await?;
    s.pool("a-v4", v4_pool(&["203.0.113.10/32"])).await?;
    s.pool(
        "b-both",
        json!({"addresses": ["198.51.100.200/31", "2001:db8:20::/126"]}),
    )
    .await?;
    s.service(
        "dual",
        json!({"spec": {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}}),
    )
    .await?;
    let svc = s
        .wait_ips("dual", &["198.51.100.200", "2001:db8:20::"])
        .await?;
    assert_eq!(pool_annotation(&svc).as_deref(), Some("b-both"));
    Ok(())
}

#[tokio::test]
async fn require_dual_stack_without_a_dual_pool_fails_and_says_why() -> Result<()> {
    let s = Scenario::start("dual-fail").await?;
    s.pool("only-v4", v4_pool(&["203.0.113.10/31"])).await?;
    s.service(
        "dual",
        json!({"spec": {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}}),
    )
    .await?;
    let c = s.wait_reason("dual", reason::POOL_EXHAUSTED).await?;
    assert_eq!(
        c.message,
        "no free address (needs IPv4 and IPv6 from one pool): pool only-v4 has 2 IPv4 free, no IPv6. Add addresses to a pool or delete Services that hold some"
    );
    Ok(())
}

#[tokio::test]
async fn prefer_dual_stack_takes_ipv4_then_gains_ipv6_from_the_same_pool() -> Result<()> {
    let s = Scenario::start("prefer").await?;
    s.pool("p", v4_pool(&["203.0.113.10/32"])).await?;
    s.service(
        "svc",
        json!({"spec": {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack"}}),
    )
    .await?;
    s.wait_ips("svc", &["203.0.113.10"]).await?;
    s.pool(
        "p",
        json!({"addresses": ["203.0.113.10/32", "2001:db8:30::/127"]}),
    )
    .await?;
    s.wait_ips("svc", &["203.0.113.10", "2001:db8:30::"])
        .await?;
    Ok(())
}

#[tokio::test]
async fn single_to_dual_stack_keeps_the_ipv4_address_and_adds_ipv6() -> Result<()> {
    let s = Scenario::start("upgrade").await?;
    s.pool(
        "p",
        json!({"addresses": ["203.0.113.10/31", "2001:db8:31::/127"]}),
    )
    .await?;
    s.service(
        "svc",
        json!({"spec": {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]}}),
    )
    .await?;
    s.wait_ips("svc", &["203.0.113.10"]).await?;
    s.patch_service(
        "svc",
        json!({"spec": {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}}),
    )
    .await?;
    s.wait_ips("svc", &["203.0.113.10", "2001:db8:31::"])
        .await?;
    assert!(s.events("svc", reason::IP_RELEASED).await?.is_empty());
    Ok(())
}
