//! Pools: `autoAssign`, `avoidBuggyIPs`, priority, namespace and Service selectors, exhaustion
//! and growth, overlaps, status counts, and pools that shrink, move or go away.

use anyhow::Result;
use ferrolb_crds::contract::annotation::{ADDRESS_POOL, POOL_LOAD_BALANCER_CLASS};
use ferrolb_crds::contract::{condition, reason};
use ferrolb_tests::scenario::{Scenario, ingress, pool_annotation};
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::v4_pool;

#[tokio::test]
async fn auto_assign_false_pools_serve_only_services_that_name_them() -> Result<()> {
    let s = Scenario::start("manual").await?;
    s.pool(
        "manual",
        json!({"addresses": ["203.0.113.10/31"], "autoAssign": false}),
    )
    .await?;
    s.service("auto", json!({})).await?;
    let c = s.wait_reason("auto", reason::NO_POOL_MATCHES).await?;
    assert!(
        c.message
            .contains("pool manual autoAssign is false and the Service neither names it"),
        "{}",
        c.message
    );
    s.service(
        "named",
        json!({"metadata": {"annotations": {ADDRESS_POOL: "manual"}}}),
    )
    .await?;
    s.wait_ips("named", &["203.0.113.10"]).await?;
    s.service(
        "requested",
        json!({"spec": {"loadBalancerIP": "203.0.113.11"}}),
    )
    .await?;
    s.wait_ips("requested", &["203.0.113.11"]).await?;
    Ok(())
}

#[tokio::test]
async fn avoid_buggy_ips_never_hands_out_dot_zero_or_dot_255() -> Result<()> {
    let s = Scenario::start("buggy").await?;
    s.pool(
        "buggy",
        json!({"addresses": ["198.51.100.255-198.51.101.1"], "avoidBuggyIPs": true}),
    )
    .await?;
    s.service("a", json!({})).await?;
    s.wait_ips("a", &["198.51.101.1"]).await?;
    s.service("b", json!({})).await?;
    s.wait_reason("b", reason::POOL_EXHAUSTED).await?;
    Ok(())
}

#[tokio::test]
async fn lowest_positive_priority_wins_then_unset_then_name() -> Result<()> {
    let s = Scenario::start("priority").await?;
    s.pool("a-plain", v4_pool(&["203.0.113.50/32"])).await?;
    s.pool(
        "b-second",
        json!({"addresses": ["203.0.113.20/32"], "serviceAllocation": {"priority": 20}}),
    )
    .await?;
    s.pool(
        "c-first",
        json!({"addresses": ["203.0.113.10/32"], "serviceAllocation": {"priority": 10}}),
    )
    .await?;
    for (i, want) in ["203.0.113.10", "203.0.113.20", "203.0.113.50"]
        .iter()
        .enumerate()
    {
        let name = format!("s{i}");
        s.service(&name, json!({})).await?;
        s.wait_ips(&name, &[want]).await?;
    }
    Ok(())
}

#[tokio::test]
async fn service_allocation_namespaces_restrict_a_pool() -> Result<()> {
    let s = Scenario::start("nslist").await?;
    s.pool(
        "team",
        json!({"addresses": ["203.0.113.10/32"], "serviceAllocation": {"namespaces": ["elsewhere"]}}),
    )
    .await?;
    s.service("svc", json!({})).await?;
    let c = s.wait_reason("svc", reason::NO_POOL_MATCHES).await?;
    assert!(
        c.message.contains(&format!(
            "pool team serviceAllocation.namespaces does not list \"{}\"",
            s.ns
        )),
        "{}",
        c.message
    );
    s.pool(
        "team",
        json!({"addresses": ["203.0.113.10/32"], "serviceAllocation": {"namespaces": ["elsewhere", s.ns]}}),
    )
    .await?;
    s.wait_ips("svc", &["203.0.113.10"]).await?;
    Ok(())
}

#[tokio::test]
async fn namespace_label_changes_take_effect() -> Result<()> {
    let s = Scenario::start("nslabels").await?;
    s.pool(
        "team-a",
        json!({"addresses": ["203.0.113.10/32"],
               "serviceAllocation": {"namespaceSelectors": [{"matchLabels": {"team": "a"}}]}}),
    )
    .await?;
    s.pool("z-open", v4_pool(&["203.0.113.90/32"])).await?;
    s.service("svc", json!({})).await?;
    s.wait_ips("svc", &["203.0.113.90"]).await?;
    // Labelling the namespace does not move a Service whose address stays valid.
    s.label_namespace(json!({"team": "a"})).await?;
    s.service("second", json!({})).await?;
    s.wait_ips("second", &["203.0.113.10"]).await?;
    assert_eq!(ingress(&s.services().get("svc").await?), ["203.0.113.90"]);
    // Unlabelling it ends team-a's service of "second", which says why.
    s.label_namespace(json!({"team": null})).await?;
    let c = s.wait_reason("second", reason::POOL_EXHAUSTED).await?;
    assert!(
        c.message.contains("pool z-open has 0 IPv4 free"),
        "{}",
        c.message
    );
    let note = s.wait_event("second", reason::IP_RELEASED).await?;
    assert!(note.contains("namespaceSelectors"), "{note}");
    Ok(())
}

#[tokio::test]
async fn service_selectors_restrict_a_pool() -> Result<()> {
    let s = Scenario::start("svcsel").await?;
    s.pool(
        "edge",
        json!({"addresses": ["203.0.113.10/32"],
               "serviceAllocation": {"serviceSelectors": [{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["edge"]}]}]}}),
    )
    .await?;
    s.service("plain", json!({})).await?;
    let c = s.wait_reason("plain", reason::NO_POOL_MATCHES).await?;
    assert!(
        c.message
            .contains("serviceSelectors match no labels of the Service"),
        "{}",
        c.message
    );
    s.service("edge", json!({"metadata": {"labels": {"tier": "edge"}}}))
        .await?;
    s.wait_ips("edge", &["203.0.113.10"]).await?;
    Ok(())
}

#[tokio::test]
async fn services_no_restricted_pool_selects_fall_back_to_unrestricted_pools() -> Result<()> {
    let s = Scenario::start("fallback").await?;
    s.pool(
        "restricted",
        json!({"addresses": ["203.0.113.10/32"],
               "serviceAllocation": {"priority": 1, "serviceSelectors": [{"matchLabels": {"tier": "edge"}}]}}),
    )
    .await?;
    s.pool("open", v4_pool(&["203.0.113.90/32"])).await?;
    s.service("edge", json!({"metadata": {"labels": {"tier": "edge"}}}))
        .await?;
    s.service("other", json!({})).await?;
    s.wait_ips("edge", &["203.0.113.10"]).await?;
    s.wait_ips("other", &["203.0.113.90"]).await?;
    Ok(())
}

#[tokio::test]
async fn exhaustion_lists_pools_with_free_counts_and_growth_serves_waiters() -> Result<()> {
    let s = Scenario::start("exhausted").await?;
    s.pool("a", v4_pool(&["203.0.113.10/32"])).await?;
    s.pool(
        "b",
        json!({"addresses": ["203.0.113.20/32", "2001:db8:50::/127"]}),
    )
    .await?;
    s.service("one", json!({})).await?;
    s.service("two", json!({})).await?;
    s.wait_any_ip("one").await?;
    s.wait_any_ip("two").await?;
    s.service("three", json!({})).await?;
    let c = s.wait_reason("three", reason::POOL_EXHAUSTED).await?;
    assert_eq!(
        c.message,
        "no free address: pool a has 0 IPv4 free; pool b has 0 IPv4 free. Add addresses to a pool or delete Services that hold some"
    );
    s.wait_pool("a", &format!("{}=True", condition::POOL_EXHAUSTED), |p| {
        p.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == condition::POOL_EXHAUSTED && c.status == "True")
        })
    })
    .await?;
    s.pool("a", v4_pool(&["203.0.113.10/31"])).await?;
    s.wait_ips("three", &["203.0.113.11"]).await?;
    Ok(())
}

#[tokio::test]
async fn a_released_ip_serves_the_oldest_waiting_service_at_once() -> Result<()> {
    let s = Scenario::start("released").await?;
    s.pool("p", v4_pool(&["203.0.113.10/32"])).await?;
    s.service("holder", json!({})).await?;
    s.wait_ips("holder", &["203.0.113.10"]).await?;
    s.service("waiter", json!({})).await?;
    s.wait_reason("waiter", reason::POOL_EXHAUSTED).await?;
    s.delete_service("holder").await?;
    s.wait_ips("waiter", &["203.0.113.10"]).await?;
    let note = s.wait_event("waiter", reason::IP_ALLOCATED).await?;
    assert_eq!(note, "Assigned 203.0.113.10 from pool p");
    Ok(())
}

#[tokio::test]
async fn an_overlapping_pool_is_refused_and_the_older_keeps_its_addresses() -> Result<()> {
    let s = Scenario::start("overlap").await?;
    s.pool("older", v4_pool(&["203.0.113.0/28"])).await?;
    s.wait_pool("older", condition::POOL_VALID, |p| p.status.is_some())
        .await?;
    // Creation timestamps have second precision: make the newer one clearly newer.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    s.pool("newer", v4_pool(&["203.0.113.8-203.0.113.20"]))
        .await?;
    let newer = s
        .wait_pool("newer", &format!("{}=False", condition::POOL_VALID), |p| {
            p.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == condition::POOL_VALID && c.status == "False")
            })
        })
        .await?;
    let c = &newer.status.unwrap().conditions[0];
    assert_eq!(c.reason, reason::POOL_OVERLAP);
    assert!(c.message.contains("overlap pool older's"), "{}", c.message);
    s.service(
        "svc",
        json!({"metadata": {"annotations": {ADDRESS_POOL: "newer"}}}),
    )
    .await?;
    let c = s.wait_reason("svc", reason::POOL_NOT_FOUND).await?;
    assert!(c.message.contains("is not in use"), "{}", c.message);
    Ok(())
}

#[tokio::test]
async fn pool_status_counts_per_family_including_huge_ipv6() -> Result<()> {
    let s = Scenario::start("counts").await?;
    s.pool(
        "p",
        json!({"addresses": ["203.0.113.0/28", "2001:db8:60::/64"]}),
    )
    .await?;
    s.service(
        "dual",
        json!({"spec": {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}}),
    )
    .await?;
    s.service("v4", json!({})).await?;
    s.wait_any_ip("dual").await?;
    s.wait_any_ip("v4").await?;
    let p = s
        .wait_pool("p", "2 IPv4 assigned", |p| {
            p.status.as_ref().is_some_and(|st| st.assigned_ipv4.0 == 2)
        })
        .await?;
    let st = p.status.unwrap();
    assert_eq!((st.available_ipv4.0, st.assigned_ipv6.0), (14, 1));
    assert_eq!(st.available_ipv6.0, (1u128 << 64) - 1);
    // The count beyond int64 is exact decimal text on the wire.
    let raw = s
        .client
        .request_text(http_get("/apis/ferrolb.io/v1beta1/ipaddresspools/p")?)
        .await?;
    assert!(
        raw.contains("\"availableIPv6\":\"18446744073709551615\""),
        "{raw}"
    );
    assert_eq!(st.observed_generation, Some(1));
    Ok(())
}

fn http_get(path: &str) -> Result<http::Request<Vec<u8>>> {
    Ok(http::Request::get(path).body(Vec::new())?)
}

#[tokio::test]
async fn shrinking_a_pool_past_a_held_ip_moves_that_service_with_an_event() -> Result<()> {
    let s = Scenario::start("shrink").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.13"])).await?;
    for name in ["a", "b"] {
        s.service(name, json!({})).await?;
        s.wait_any_ip(name).await?;
    }
    s.pool("p", v4_pool(&["203.0.113.10", "203.0.113.12-203.0.113.13"]))
        .await?;
    s.wait_ips("b", &["203.0.113.12"]).await?;
    let note = s.wait_event("b", reason::IP_RELEASED).await?;
    assert_eq!(
        note,
        "Released 203.0.113.11: no IPAddressPool in use contains 203.0.113.11 any more"
    );
    assert_eq!(ingress(&s.services().get("a").await?), ["203.0.113.10"]);
    Ok(())
}

#[tokio::test]
async fn pools_growing_shrinking_or_appearing_elsewhere_keep_every_ip() -> Result<()> {
    let s = Scenario::start("stable-pools").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.19"])).await?;
    for name in ["a", "b", "c"] {
        s.service(name, json!({})).await?;
        s.wait_any_ip(name).await?;
    }
    s.pool(
        "p",
        v4_pool(&["203.0.113.10-203.0.113.12", "203.0.113.100/30"]),
    )
    .await?;
    s.pool("zz-other", v4_pool(&["198.51.100.200/30"])).await?;
    s.service(
        "sentinel",
        json!({"metadata": {"annotations": {ADDRESS_POOL: "zz-other"}}}),
    )
    .await?;
    s.wait_ips("sentinel", &["198.51.100.200"]).await?;
    for (name, ip) in [
        ("a", "203.0.113.10"),
        ("b", "203.0.113.11"),
        ("c", "203.0.113.12"),
    ] {
        assert_eq!(ingress(&s.services().get(name).await?), [ip], "{name}");
        assert!(
            s.events(name, reason::IP_RELEASED).await?.is_empty(),
            "{name}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn renaming_a_pool_with_the_same_addresses_keeps_the_ip() -> Result<()> {
    let s = Scenario::start("rename").await?;
    s.pool("old-name", v4_pool(&["203.0.113.10-203.0.113.13"]))
        .await?;
    s.service("svc", json!({})).await?;
    s.wait_ips("svc", &["203.0.113.10"]).await?;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    s.pool("new-name", v4_pool(&["203.0.113.10-203.0.113.13"]))
        .await?;
    s.delete_pool("old-name").await?;
    s.wait("svc", "annotation new-name", |svc| {
        (pool_annotation(svc).as_deref() == Some("new-name")).then_some(())
    })
    .await?;
    assert_eq!(ingress(&s.services().get("svc").await?), ["203.0.113.10"]);
    assert!(s.events("svc", reason::IP_RELEASED).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn deleting_the_only_pool_releases_addresses_and_says_no_pool() -> Result<()> {
    let s = Scenario::start("nopool").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.13"])).await?;
    s.service("svc", json!({})).await?;
    s.wait_ips("svc", &["203.0.113.10"]).await?;
    s.delete_pool("p").await?;
    let c = s.wait_reason("svc", reason::NO_POOL).await?;
    assert!(
        c.message.starts_with("no IPAddressPool is in use"),
        "{}",
        c.message
    );
    assert!(ingress(&s.services().get("svc").await?).is_empty());
    Ok(())
}

#[tokio::test]
async fn a_malformed_class_annotation_makes_the_pool_invalid_and_serves_no_one() -> Result<()> {
    let s = Scenario::start("badclass").await?;
    let body = json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "badclass",
                     "annotations": {POOL_LOAD_BALANCER_CLASS: "example.com/lb\t"}},
        "spec": {"addresses": ["203.0.113.40/30"]},
    });
    s.pools()
        .patch(
            "badclass",
            &PatchParams::apply("scenario").force(),
            &Patch::Apply(&body),
        )
        .await?;
    let pool = s
        .wait_pool(
            "badclass",
            &format!("{}=False", condition::POOL_VALID),
            |p| {
                p.status.as_ref().is_some_and(|st| {
                    st.conditions
                        .iter()
                        .any(|c| c.type_ == condition::POOL_VALID && c.status == "False")
                })
            },
        )
        .await?;
    let c = &pool.status.unwrap().conditions[0];
    assert_eq!(c.reason, reason::POOL_INVALID_ANNOTATION);
    assert!(
        c.message.starts_with(&format!(
            "annotation {POOL_LOAD_BALANCER_CLASS} holds '\\t' (U+0009)"
        )),
        "{}",
        c.message
    );
    // No controller allocates from it: the only pool is not in use.
    s.service("svc", json!({})).await?;
    s.wait_reason("svc", reason::NO_POOL).await?;
    Ok(())
}
