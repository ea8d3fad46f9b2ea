//! The allocation rules of issue #3 on the real apiserver, against the real controller binary
//! running under the chart's RBAC. One scenario at a time (see `ferrolb_tests::scenario`).

use anyhow::Result;
use ferrolb_tests::scenario::{Scenario, condition, ingress, metric, pool_annotation};
use serde_json::json;

fn v4_pool(addresses: &[&str]) -> serde_json::Value {
    json!({ "addresses": addresses })
}

// ---- handling ------------------------------------------------------------------------------

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
        ("True", "Allocated")
    );
    assert_eq!(c.message, "203.0.113.10 from pool basic");
    let note = s.wait_event("web", "IPAllocated").await?;
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
    s.wait_reason("second", "PoolExhausted").await?;
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
    let note = s.wait_event("first", "IPReleased").await?;
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

// ---- families ------------------------------------------------------------------------------

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
    let c = s.wait_reason("dual", "PoolExhausted").await?;
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
    assert!(s.events("svc", "IPReleased").await?.is_empty());
    Ok(())
}

// ---- requests ------------------------------------------------------------------------------

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
            "metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "2001:db8:40::7,203.0.113.15"}},
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
            "metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "203.0.113.12"}},
            "spec": {"loadBalancerIP": "203.0.113.11"},
        }),
    )
    .await?;
    let c = s.wait_reason("svc", "InvalidRequest").await?;
    assert_eq!(
        c.message,
        "spec.loadBalancerIP (203.0.113.11) and annotation ferrolb.io/loadBalancerIPs (203.0.113.12) are both set; keep only the annotation"
    );
    assert_eq!(c.status, "False");
    let note = s.wait_event("svc", "AllocationFailed").await?;
    assert_eq!(note, c.message);
    Ok(())
}

#[tokio::test]
async fn a_garbage_annotation_names_the_value_and_fixing_it_serves_the_service() -> Result<()> {
    let s = Scenario::start("garbage").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.17"])).await?;
    s.service(
        "svc",
        json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "203.0.113.300"}}}),
    )
    .await?;
    let c = s.wait_reason("svc", "InvalidRequest").await?;
    assert_eq!(
        c.message,
        "annotation ferrolb.io/loadBalancerIPs: \"203.0.113.300\" is not an IP address"
    );
    s.patch_service(
        "svc",
        json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "203.0.113.13"}}}),
    )
    .await?;
    s.wait_ips("svc", &["203.0.113.13"]).await?;
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
        json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "203.0.113.12"}}}),
    )
    .await?;
    let c = s.wait_reason("wants", "IPInUse").await?;
    assert_eq!(
        c.message,
        format!(
            "203.0.113.12 is held by {}/holder: sharing needs the same ferrolb.io/allow-shared-ip key on both Services",
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
    let c = s.wait_reason("svc", "NotInAnyPool").await?;
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
        json!({"metadata": {"annotations": {"ferrolb.io/address-pool": "b"}}}),
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
        json!({"metadata": {"annotations": {"ferrolb.io/address-pool": "later"}}}),
    )
    .await?;
    let c = s.wait_reason("svc", "PoolNotFound").await?;
    assert_eq!(
        c.message,
        "annotation ferrolb.io/address-pool names pool later, which does not exist (pools: a)"
    );
    s.pool("later", v4_pool(&["203.0.113.30/31"])).await?;
    s.wait_ips("svc", &["203.0.113.30"]).await?;
    Ok(())
}

// ---- pools ---------------------------------------------------------------------------------

#[tokio::test]
async fn auto_assign_false_pools_serve_only_services_that_name_them() -> Result<()> {
    let s = Scenario::start("manual").await?;
    s.pool(
        "manual",
        json!({"addresses": ["203.0.113.10/31"], "autoAssign": false}),
    )
    .await?;
    s.service("auto", json!({})).await?;
    let c = s.wait_reason("auto", "NoPoolMatches").await?;
    assert!(
        c.message
            .contains("pool manual autoAssign is false and the Service neither names it"),
        "{}",
        c.message
    );
    s.service(
        "named",
        json!({"metadata": {"annotations": {"ferrolb.io/address-pool": "manual"}}}),
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
    s.wait_reason("b", "PoolExhausted").await?;
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
    let c = s.wait_reason("svc", "NoPoolMatches").await?;
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
    let c = s.wait_reason("second", "PoolExhausted").await?;
    assert!(
        c.message.contains("pool z-open has 0 IPv4 free"),
        "{}",
        c.message
    );
    let note = s.wait_event("second", "IPReleased").await?;
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
    let c = s.wait_reason("plain", "NoPoolMatches").await?;
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
    let c = s.wait_reason("three", "PoolExhausted").await?;
    assert_eq!(
        c.message,
        "no free address: pool a has 0 IPv4 free; pool b has 0 IPv4 free. Add addresses to a pool or delete Services that hold some"
    );
    s.wait_pool("a", "Exhausted=True", |p| {
        p.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Exhausted" && c.status == "True")
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
    s.wait_reason("waiter", "PoolExhausted").await?;
    s.delete_service("holder").await?;
    s.wait_ips("waiter", &["203.0.113.10"]).await?;
    let note = s.wait_event("waiter", "IPAllocated").await?;
    assert_eq!(note, "Assigned 203.0.113.10 from pool p");
    Ok(())
}

#[tokio::test]
async fn an_overlapping_pool_is_refused_and_the_older_keeps_its_addresses() -> Result<()> {
    let s = Scenario::start("overlap").await?;
    s.pool("older", v4_pool(&["203.0.113.0/28"])).await?;
    s.wait_pool("older", "Valid", |p| p.status.is_some())
        .await?;
    // Creation timestamps have second precision: make the newer one clearly newer.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    s.pool("newer", v4_pool(&["203.0.113.8-203.0.113.20"]))
        .await?;
    let newer = s
        .wait_pool("newer", "Valid=False", |p| {
            p.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Valid" && c.status == "False")
            })
        })
        .await?;
    let c = &newer.status.unwrap().conditions[0];
    assert_eq!(c.reason, "Overlap");
    assert!(c.message.contains("overlap pool older's"), "{}", c.message);
    s.service(
        "svc",
        json!({"metadata": {"annotations": {"ferrolb.io/address-pool": "newer"}}}),
    )
    .await?;
    let c = s.wait_reason("svc", "PoolNotFound").await?;
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
    let note = s.wait_event("b", "IPReleased").await?;
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
        json!({"metadata": {"annotations": {"ferrolb.io/address-pool": "zz-other"}}}),
    )
    .await?;
    s.wait_ips("sentinel", &["198.51.100.200"]).await?;
    for (name, ip) in [
        ("a", "203.0.113.10"),
        ("b", "203.0.113.11"),
        ("c", "203.0.113.12"),
    ] {
        assert_eq!(ingress(&s.services().get(name).await?), [ip], "{name}");
        assert!(s.events(name, "IPReleased").await?.is_empty(), "{name}");
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
    assert!(s.events("svc", "IPReleased").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn deleting_the_only_pool_releases_addresses_and_says_no_pool() -> Result<()> {
    let s = Scenario::start("nopool").await?;
    s.pool("p", v4_pool(&["203.0.113.10-203.0.113.13"])).await?;
    s.service("svc", json!({})).await?;
    s.wait_ips("svc", &["203.0.113.10"]).await?;
    s.delete_pool("p").await?;
    let c = s.wait_reason("svc", "NoPool").await?;
    assert!(
        c.message.starts_with("no IPAddressPool is in use"),
        "{}",
        c.message
    );
    assert!(ingress(&s.services().get("svc").await?).is_empty());
    Ok(())
}

// ---- sharing -------------------------------------------------------------------------------

fn shared(key: &str, port: i32) -> serde_json::Value {
    json!({
        "metadata": {"annotations": {"ferrolb.io/allow-shared-ip": key}},
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
    let c = s.wait_reason("c", "PortCollision").await?;
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
    let c = s.wait_reason("local", "IPInUse").await?;
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
    let note = s.wait_event("b", "IPReleased").await?;
    assert!(note.contains("both use port 80/TCP"), "{note}");
    assert_eq!(ingress(&s.services().get("a").await?), ["203.0.113.10"]);
    Ok(())
}

// ---- stability -----------------------------------------------------------------------------

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
        json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "203.0.113.14"}}}),
    )
    .await?;
    s.wait_ips("svc", &["203.0.113.14"]).await?;
    let note = s.wait_event("svc", "IPReleased").await?;
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
    s.service("svc", json!({})).await?;
    let svc = s.wait_ips("svc", &["203.0.113.10"]).await?;
    let writes = metric("ferrolb_controller_writes_total{object=\"service\",result=\"ok\"}")
        .unwrap_or_default();
    // A change the controller does not care about, then a sync point.
    let touched = s
        .patch_service("svc", json!({"metadata": {"labels": {"unrelated": "yes"}}}))
        .await?;
    s.service("sentinel", json!({})).await?;
    s.wait_any_ip("sentinel").await?;
    let now = s.services().get("svc").await?;
    assert_eq!(
        now.metadata.resource_version,
        touched.metadata.resource_version
    );
    assert_ne!(
        svc.metadata.resource_version,
        touched.metadata.resource_version
    );
    let after = metric("ferrolb_controller_writes_total{object=\"service\",result=\"ok\"}")
        .unwrap_or_default();
    assert_eq!(after - writes, 1.0, "only the sentinel was written");
    Ok(())
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
    s.wait_reason("waiter", "PoolExhausted").await?;
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
        json!({"metadata": {"annotations": {"ferrolb.io/address-pool": "q"}}}),
    )
    .await?;
    s.wait_any_ip("sentinel").await?;
    s.wait_event("waiter", "AllocationFailed").await?;
    assert_eq!(s.events("waiter", "AllocationFailed").await?.len(), 1);
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
    let failures_before =
        metric("ferrolb_controller_allocation_failures_total{reason=\"InvalidRequest\"}")
            .unwrap_or_default();
    s.service("bad", json!({"spec": {"loadBalancerIP": "nope"}}))
        .await
        .ok();
    s.service(
        "bad2",
        json!({"metadata": {"annotations": {"ferrolb.io/loadBalancerIPs": "nope"}}}),
    )
    .await?;
    s.wait_reason("bad2", "InvalidRequest").await?;
    tokio::task::spawn_blocking(move || {
        ferrolb_tests::process::wait_for("pool metrics", std::time::Duration::from_secs(10), || {
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
    let failures =
        metric("ferrolb_controller_allocation_failures_total{reason=\"InvalidRequest\"}")
            .unwrap_or_default();
    assert!(failures > failures_before);
    assert_eq!(metric("ferrolb_controller_leader"), Some(1.0));
    Ok(())
}
