//! The allocation rules, one test per rule (pure; no cluster).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_crds::address::parse_addresses;
use ferrolb_crds::{AddressCount, Family, LabelSelector, ServiceAllocation};

use super::allocator::{Allocator, Failure, Outcome};
use super::error::AllocationError;
use super::pool::{PoolConfig, RuledOut};
use super::request::{Backends, FamilyPolicy, Port, Request, ServiceKey};

fn pool(name: &str, addresses: &[&str]) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        created: 0,
        ranges: parse_addresses(addresses).map_err(|e| e.to_string()),
        auto_assign: true,
        avoid_buggy: false,
        allocation: None,
    }
}

fn v4() -> Request {
    Request {
        families: vec![Family::V4],
        policy: FamilyPolicy::SingleStack,
        requested: vec![],
        pool: None,
        sharing_key: None,
        ports: vec![Port {
            port: 80,
            protocol: "TCP".into(),
        }],
        backends: Backends::Cluster,
        labels: BTreeMap::new(),
    }
}

fn dual(policy: FamilyPolicy) -> Request {
    Request {
        families: vec![Family::V4, Family::V6],
        policy,
        ..v4()
    }
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("ns", name)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

fn no_labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn with_pools(pools: Vec<PoolConfig>) -> Allocator {
    let mut a = Allocator::new();
    a.set_pools(pools);
    a
}

fn assign(a: &mut Allocator, name: &str, req: &Request) -> Result<Outcome, Failure> {
    a.assign(&key(name), req, &no_labels(), &[])
}

fn got(a: &mut Allocator, name: &str, req: &Request) -> (String, Vec<IpAddr>) {
    let o = assign(a, name, req).unwrap_or_else(|f| panic!("{name}: {}", f.error));
    (o.assignment.pool, o.assignment.ips)
}

fn error(a: &mut Allocator, name: &str, req: &Request) -> AllocationError {
    *assign(a, name, req)
        .expect_err("allocation should fail")
        .error
}

fn sharing(k: &str, port: i32) -> Request {
    Request {
        sharing_key: Some(k.into()),
        ports: vec![Port {
            port,
            protocol: "TCP".into(),
        }],
        ..v4()
    }
}

#[test]
fn lowest_free_address_first_and_deterministic() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.10-203.0.113.12"])]);
    assert_eq!(got(&mut a, "a", &v4()).1, ips(&["203.0.113.10"]));
    assert_eq!(got(&mut a, "b", &v4()).1, ips(&["203.0.113.11"]));
    let mut b = with_pools(vec![pool("p", &["203.0.113.10-203.0.113.12"])]);
    assert_eq!(got(&mut b, "a", &v4()).1, ips(&["203.0.113.10"]));
}

#[test]
fn a_released_address_is_handed_out_again() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.10-203.0.113.11"])]);
    got(&mut a, "a", &v4());
    got(&mut a, "b", &v4());
    assert_eq!(error(&mut a, "c", &v4()).reason(), "PoolExhausted");
    assert_eq!(a.release(&key("a")), ips(&["203.0.113.10"]));
    assert_eq!(got(&mut a, "c", &v4()).1, ips(&["203.0.113.10"]));
}

#[test]
fn huge_pools_are_not_enumerated() {
    let mut a = with_pools(vec![pool("big", &["10.0.0.0/8", "2001:db8::/32"])]);
    assert_eq!(got(&mut a, "a", &v4()).1, ips(&["10.0.0.0"]));
    let c = a.counts("big").unwrap();
    assert_eq!(c.available_v4, AddressCount((1 << 24) - 1));
    assert_eq!(c.assigned_v4, AddressCount(1));
    assert_eq!(c.available_v6, AddressCount(1 << 96));
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let mut p = pool("p", &["198.51.100.255-198.51.101.1"]);
    p.avoid_buggy = true;
    let mut a = with_pools(vec![p]);
    assert_eq!(got(&mut a, "a", &v4()).1, ips(&["198.51.101.1"]));
    assert_eq!(error(&mut a, "b", &v4()).reason(), "PoolExhausted");
    let req = Request {
        requested: ips(&["198.51.101.0"]),
        ..v4()
    };
    let err = error(&mut a, "c", &req);
    assert_eq!(err.reason(), "IneligibleIP");
    assert!(err.to_string().contains("avoidBuggyIPs"), "{err}");
}

#[test]
fn requested_address_is_given_or_refused_with_the_holder() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/28"])]);
    let req = Request {
        requested: ips(&["203.0.113.7"]),
        ..v4()
    };
    assert_eq!(got(&mut a, "a", &req).1, ips(&["203.0.113.7"]));
    let err = error(&mut a, "b", &req);
    assert_eq!(err.reason(), "IPInUse");
    assert_eq!(
        err.to_string(),
        "203.0.113.7 is held by ns/a: sharing needs the same ferrolb.io/allow-shared-ip key on both Services"
    );
    let outside = Request {
        requested: ips(&["198.51.100.9"]),
        ..v4()
    };
    assert_eq!(
        error(&mut a, "c", &outside),
        AllocationError::NotInAnyPool(ip("198.51.100.9"))
    );
}

#[test]
fn auto_assign_false_pools_serve_only_who_names_them_or_requests_inside() {
    let mut manual = pool("manual", &["203.0.113.0/30"]);
    manual.auto_assign = false;
    let mut a = with_pools(vec![manual]);
    let err = error(&mut a, "a", &v4());
    assert_eq!(err.reason(), "NoPoolMatches");
    assert!(
        err.to_string().contains("pool manual autoAssign is false"),
        "{err}"
    );
    let named = Request {
        pool: Some("manual".into()),
        ..v4()
    };
    assert_eq!(got(&mut a, "b", &named).0, "manual");
    let requested = Request {
        requested: ips(&["203.0.113.3"]),
        ..v4()
    };
    assert_eq!(got(&mut a, "c", &requested).1, ips(&["203.0.113.3"]));
}

#[test]
fn named_pool_is_the_only_candidate_and_a_missing_one_is_reported() {
    let mut a = with_pools(vec![
        pool("a", &["203.0.113.0/30"]),
        pool("b", &["203.0.113.4/30"]),
    ]);
    let named = Request {
        pool: Some("b".into()),
        ..v4()
    };
    assert_eq!(
        got(&mut a, "x", &named),
        ("b".into(), ips(&["203.0.113.4"]))
    );
    let missing = Request {
        pool: Some("c".into()),
        ..v4()
    };
    assert_eq!(
        error(&mut a, "y", &missing).to_string(),
        "annotation ferrolb.io/address-pool names pool c, which does not exist (pools: a, b)"
    );
}

fn allocation(edit: impl FnOnce(&mut ServiceAllocation)) -> Option<ServiceAllocation> {
    let mut s = ServiceAllocation::default();
    edit(&mut s);
    Some(s)
}

#[test]
fn priority_lowest_positive_first_unset_last_then_name() {
    let mut p3 = pool("p3", &["203.0.113.30/32"]);
    p3.allocation = allocation(|s| s.priority = Some(3));
    let mut p1 = pool("p1", &["203.0.113.10/32"]);
    p1.allocation = allocation(|s| s.priority = Some(1));
    let mut zero = pool("a-zero", &["203.0.113.40/32"]);
    zero.allocation = allocation(|s| s.priority = Some(0));
    let plain = pool("a-plain", &["203.0.113.50/32"]);
    let mut a = with_pools(vec![plain, zero, p3, p1]);
    let order: Vec<_> = (0..4)
        .map(|i| got(&mut a, &format!("s{i}"), &v4()).0)
        .collect();
    assert_eq!(order, ["p1", "p3", "a-zero", "a-plain"]);
}

#[test]
fn service_allocation_must_select_namespace_and_service() {
    let mut restricted = pool("team", &["203.0.113.0/30"]);
    restricted.allocation = allocation(|s| {
        s.namespaces = vec!["ns".into()];
        s.namespace_selectors = vec![LabelSelector {
            match_labels: BTreeMap::from([("team".into(), "a".into())]),
            ..Default::default()
        }];
        s.service_selectors = vec![LabelSelector {
            match_labels: BTreeMap::from([("tier".into(), "edge".into())]),
            ..Default::default()
        }];
    });
    let mut a = with_pools(vec![restricted]);
    let edge = Request {
        labels: BTreeMap::from([("tier".into(), "edge".into())]),
        ..v4()
    };
    let team_a = BTreeMap::from([("team".to_string(), "a".to_string())]);
    // Wrong namespace labels.
    let err = a
        .assign(&key("s"), &edge, &no_labels(), &[])
        .unwrap_err()
        .error;
    assert!(
        matches!(&*err, AllocationError::NoPoolMatches(r) if r[0].1 == RuledOut::NamespaceNotSelected("ns".into())),
        "{err}"
    );
    // Wrong Service labels.
    let err = a.assign(&key("s"), &v4(), &team_a, &[]).unwrap_err().error;
    assert!(
        err.to_string().contains("serviceSelectors match no labels"),
        "{err}"
    );
    // Wrong namespace.
    let other_ns = ServiceKey::new("other", "s");
    let err = a.assign(&other_ns, &edge, &team_a, &[]).unwrap_err().error;
    assert!(err.to_string().contains("does not list \"other\""), "{err}");
    // Everything matches.
    assert!(a.assign(&key("s"), &edge, &team_a, &[]).is_ok());
}

#[test]
fn restricted_pool_never_serves_unselected_even_when_named() {
    let mut restricted = pool("team", &["203.0.113.0/30"]);
    restricted.allocation = allocation(|s| s.namespaces = vec!["elsewhere".into()]);
    let mut a = with_pools(vec![restricted]);
    let named = Request {
        pool: Some("team".into()),
        ..v4()
    };
    assert_eq!(error(&mut a, "s", &named).reason(), "NoPoolMatches");
}

#[test]
fn selected_restricted_pools_win_and_others_fall_back_to_unrestricted() {
    let mut restricted = pool("z-team", &["203.0.113.0/30"]);
    restricted.allocation = allocation(|s| s.namespaces = vec!["ns".into()]);
    let open = pool("a-open", &["198.51.100.0/30"]);
    let mut a = with_pools(vec![open, restricted]);
    assert_eq!(got(&mut a, "s", &v4()).0, "z-team");
    let elsewhere = ServiceKey::new("other", "s");
    let o = a.assign(&elsewhere, &v4(), &no_labels(), &[]).unwrap();
    assert_eq!(o.assignment.pool, "a-open");
}

#[test]
fn exhausted_lists_every_pool_considered_with_free_counts() {
    let mut a = with_pools(vec![
        pool("a", &["203.0.113.0/32"]),
        pool("b", &["203.0.113.1/32", "2001:db8::/127"]),
    ]);
    got(&mut a, "x", &v4());
    got(&mut a, "y", &v4());
    assert_eq!(
        error(&mut a, "z", &v4()).to_string(),
        "no free address: pool a has 0 IPv4 free; pool b has 0 IPv4 free. Add addresses to a pool or delete Services that hold some"
    );
    let err = error(&mut a, "w", &dual(FamilyPolicy::RequireDualStack));
    assert!(
        err.to_string()
            .contains("(needs IPv4 and IPv6 from one pool): pool a has 0 IPv4 free, no IPv6; pool b has 0 IPv4 free, 2 IPv6 free"),
        "{err}"
    );
}

#[test]
fn require_dual_stack_gets_both_from_one_pool_or_nothing() {
    let mut a = with_pools(vec![
        pool("a-v4", &["203.0.113.0/30"]),
        pool("b-v6", &["2001:db8::/126"]),
        pool("c-both", &["198.51.100.0/30", "2001:db8:1::/126"]),
    ]);
    let (p, got_ips) = got(&mut a, "s", &dual(FamilyPolicy::RequireDualStack));
    assert_eq!(p, "c-both");
    assert_eq!(got_ips, ips(&["198.51.100.0", "2001:db8:1::"]));
    // IPv6 first when the Service's primary family is IPv6.
    let v6_first = Request {
        families: vec![Family::V6, Family::V4],
        ..dual(FamilyPolicy::RequireDualStack)
    };
    assert_eq!(
        got(&mut a, "t", &v6_first).1,
        ips(&["2001:db8:1::1", "198.51.100.1"])
    );
}

#[test]
fn prefer_dual_stack_falls_back_to_primary_then_gains_the_second() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/30", "2001:db8::/128"])]);
    got(
        &mut a,
        "holds-v6",
        &Request {
            families: vec![Family::V6],
            ..v4()
        },
    );
    let prefer = dual(FamilyPolicy::PreferDualStack);
    assert_eq!(got(&mut a, "s", &prefer).1, ips(&["203.0.113.0"]));
    a.release(&key("holds-v6"));
    let o = assign(&mut a, "s", &prefer).unwrap();
    assert_eq!(o.assignment.ips, ips(&["203.0.113.0", "2001:db8::"]));
    assert_eq!(o.lost, None);
}

#[test]
fn prefer_dual_stack_prefers_a_pool_with_both_families() {
    let mut a = with_pools(vec![
        pool("a-v4", &["203.0.113.0/30"]),
        pool("b-both", &["198.51.100.0/30", "2001:db8::/126"]),
    ]);
    assert_eq!(
        got(&mut a, "s", &dual(FamilyPolicy::PreferDualStack)).0,
        "b-both"
    );
}

#[test]
fn single_stack_ipv6() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/30", "2001:db8::/64"])]);
    let req = Request {
        families: vec![Family::V6],
        ..v4()
    };
    assert_eq!(got(&mut a, "s", &req).1, ips(&["2001:db8::"]));
    let c = a.counts("p").unwrap();
    assert_eq!(
        (c.assigned_v4, c.assigned_v6),
        (AddressCount(0), AddressCount(1))
    );
}

#[test]
fn sharing_same_key_joins_the_keys_address() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/30"])]);
    let first = got(&mut a, "dns-tcp", &sharing("dns", 53)).1;
    let second = got(&mut a, "dns-udp", &sharing("dns", 54)).1;
    assert_eq!(first, second);
    // Ports collide: a fresh address.
    assert_ne!(got(&mut a, "dns-again", &sharing("dns", 53)).1, first);
    // The shared address counts once.
    assert_eq!(a.counts("p").unwrap().assigned_v4, AddressCount(2));
    // It stays held until its last user goes.
    assert!(a.release(&key("dns-tcp")).is_empty());
    assert_eq!(a.release(&key("dns-udp")), first);
}

#[test]
fn sharing_a_requested_address_checks_ports_and_backends() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/30"])]);
    let at = |k: &str, port| Request {
        requested: ips(&["203.0.113.1"]),
        ..sharing(k, port)
    };
    got(&mut a, "a", &at("k", 80));
    assert_eq!(got(&mut a, "b", &at("k", 443)).1, ips(&["203.0.113.1"]));
    let err = error(&mut a, "c", &at("k", 443));
    assert_eq!(err.reason(), "PortCollision");
    assert!(err.to_string().contains("both use port 443/TCP"), "{err}");
    let err = error(&mut a, "d", &at("other", 8080));
    assert!(err.to_string().contains("key is \"k\""), "{err}");
    let local = Request {
        backends: Backends::Local(BTreeMap::from([("app".into(), "x".into())])),
        ..at("k", 9000)
    };
    assert!(
        error(&mut a, "e", &local)
            .to_string()
            .contains("externalTrafficPolicy")
    );
}

#[test]
fn a_service_keeps_its_address_while_others_come_and_go() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/28"])]);
    for i in 0..5 {
        got(&mut a, &format!("s{i}"), &v4());
    }
    let before = a.assignment(&key("s3")).unwrap().clone();
    a.release(&key("s0"));
    a.release(&key("s1"));
    got(&mut a, "new", &v4());
    let o = assign(&mut a, "s3", &v4()).unwrap();
    assert_eq!(o.assignment, before);
    assert_eq!(o.lost, None);
}

#[test]
fn pools_growing_or_shrinking_elsewhere_keep_addresses() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/28"])]);
    for i in 0..3 {
        got(&mut a, &format!("s{i}"), &v4());
    }
    // Grow, then shrink to what is held: no Service is affected.
    assert!(
        a.set_pools(vec![pool("p", &["203.0.113.0/28", "198.51.100.0/24"])])
            .iter()
            .all(|k| assign(&mut a, &k.name, &v4()).unwrap().lost.is_none())
    );
    let affected = a.set_pools(vec![pool("p", &["203.0.113.0-203.0.113.2"])]);
    for k in affected {
        assert_eq!(assign(&mut a, &k.name, &v4()).unwrap().lost, None);
    }
    assert_eq!(a.counts("p").unwrap().available_v4, AddressCount(0));
    // Shrinking past a held address takes it away, with the reason.
    let affected = a.set_pools(vec![pool("p", &["203.0.113.0-203.0.113.1"])]);
    assert_eq!(affected, vec![key("s0"), key("s1"), key("s2")]);
    let f = assign(&mut a, "s2", &v4()).unwrap_err();
    assert_eq!(
        f.lost.unwrap().why,
        "no IPAddressPool in use contains 203.0.113.2 any more"
    );
    assert_eq!(f.error.reason(), "PoolExhausted");
}

#[test]
fn a_renamed_pool_with_the_same_addresses_keeps_every_address() {
    let mut a = with_pools(vec![pool("old", &["203.0.113.0/28"])]);
    let held = got(&mut a, "s", &v4()).1;
    // Apply the new name, then delete the old one.
    let mut renamed = pool("new", &["203.0.113.0/28"]);
    renamed.created = 10;
    let affected = a.set_pools(vec![pool("old", &["203.0.113.0/28"]), renamed.clone()]);
    assert!(affected.is_empty());
    assert!(a.problems()["new"].contains("overlap pool old"));
    let affected = a.set_pools(vec![renamed.clone()]);
    assert_eq!(affected, vec![key("s")]);
    let o = assign(&mut a, "s", &v4()).unwrap();
    assert_eq!(
        (o.assignment.pool.as_str(), o.assignment.ips.clone()),
        ("new", held.clone())
    );
    assert_eq!(o.lost, None);
    // Delete first, then create: the address is reclaimed when the Service is checked again
    // (its status still shows it).
    a.set_pools(vec![]);
    a.set_pools(vec![pool("again", &["203.0.113.0/28"])]);
    let o = a.assign(&key("s"), &v4(), &no_labels(), &held);
    assert_eq!(o.unwrap().assignment.ips, held);
}

#[test]
fn overlapping_pools_older_wins_and_no_address_is_given_twice() {
    let mut older = pool("older", &["203.0.113.0/30"]);
    older.created = 1;
    let mut newer = pool("newer", &["203.0.113.2-203.0.113.9"]);
    newer.created = 2;
    let mut a = with_pools(vec![newer, older]);
    assert_eq!(a.pools().map(|p| p.name()).collect::<Vec<_>>(), ["older"]);
    assert!(a.problems()["newer"].contains("older pool (older) keeps it"));
    let named = Request {
        pool: Some("newer".into()),
        ..v4()
    };
    assert!(
        error(&mut a, "s", &named)
            .to_string()
            .contains("is not in use")
    );
}

#[test]
fn restart_reclaims_status_addresses_before_serving_pending() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/29"])]);
    // The status of "b" shows .3; a pending Service must not get it.
    let o = a.assign(&key("b"), &v4(), &no_labels(), &ips(&["203.0.113.3"]));
    assert_eq!(o.unwrap().assignment.ips, ips(&["203.0.113.3"]));
    for name in ["p1", "p2", "p3", "p4"] {
        assert_ne!(got(&mut a, name, &v4()).1, ips(&["203.0.113.3"]));
    }
    // Two statuses claiming one address: the first reclaimed keeps it, the other moves on.
    let f = a.assign(&key("dup"), &v4(), &no_labels(), &ips(&["203.0.113.3"]));
    let o = f.unwrap();
    assert!(o.lost.unwrap().why.contains("also used by ns/b"));
    assert_ne!(o.assignment.ips, ips(&["203.0.113.3"]));
}

#[test]
fn request_changes_move_the_service_with_a_reason() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/29"])]);
    got(&mut a, "s", &v4());
    let moved = Request {
        requested: ips(&["203.0.113.5"]),
        ..v4()
    };
    let o = assign(&mut a, "s", &moved).unwrap();
    assert_eq!(o.assignment.ips, ips(&["203.0.113.5"]));
    assert_eq!(
        o.lost.unwrap().why,
        "the Service now requests 203.0.113.5 instead of 203.0.113.0"
    );
    // The old address is free again.
    assert_eq!(got(&mut a, "t", &v4()).1, ips(&["203.0.113.0"]));
}

#[test]
fn changing_to_a_pool_the_address_is_not_in_moves_it() {
    let mut a = with_pools(vec![
        pool("a", &["203.0.113.0/30"]),
        pool("b", &["198.51.100.0/30"]),
    ]);
    got(&mut a, "s", &v4());
    let named = Request {
        pool: Some("b".into()),
        ..v4()
    };
    let o = assign(&mut a, "s", &named).unwrap();
    assert_eq!(o.assignment.pool, "b");
    assert_eq!(o.lost.unwrap().why, "pool a the Service names pool b");
}

#[test]
fn single_to_dual_gains_a_family_from_the_same_pool() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/30", "2001:db8::/126"])]);
    let held = got(&mut a, "s", &v4()).1;
    let o = assign(&mut a, "s", &dual(FamilyPolicy::RequireDualStack)).unwrap();
    assert_eq!(o.assignment.ips, vec![held[0], ip("2001:db8::")]);
    assert_eq!(o.lost, None);
    // And back: the IPv6 address is dropped, the IPv4 one stays.
    let o = assign(&mut a, "s", &v4()).unwrap();
    assert_eq!(o.assignment.ips, held);
    assert_eq!(a.counts("p").unwrap().assigned_v6, AddressCount(0));
}

#[test]
fn sharing_that_became_invalid_moves_the_service_that_changed() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/30"])]);
    let shared = got(&mut a, "a", &sharing("k", 80)).1;
    assert_eq!(got(&mut a, "b", &sharing("k", 81)).1, shared);
    let o = assign(&mut a, "b", &sharing("k", 80)).unwrap();
    assert_ne!(o.assignment.ips, shared);
    assert!(o.lost.unwrap().why.contains("both use port 80/TCP"));
    assert_eq!(a.assignment(&key("a")).unwrap().ips, shared);
}

#[test]
fn namespace_label_change_ends_a_restricted_pools_service() {
    let mut team = pool("team", &["203.0.113.0/30"]);
    team.allocation = allocation(|s| {
        s.namespace_selectors = vec![LabelSelector {
            match_labels: BTreeMap::from([("team".into(), "a".into())]),
            ..Default::default()
        }]
    });
    let open = pool("z-open", &["198.51.100.0/30"]);
    let mut a = with_pools(vec![team, open]);
    let team_a = BTreeMap::from([("team".to_string(), "a".to_string())]);
    assert_eq!(
        a.assign(&key("s"), &v4(), &team_a, &[])
            .unwrap()
            .assignment
            .pool,
        "team"
    );
    let o = a.assign(&key("s"), &v4(), &no_labels(), &[]).unwrap();
    assert_eq!(o.assignment.pool, "z-open");
    assert!(o.lost.unwrap().why.contains("namespaceSelectors"));
}

#[test]
fn counts_track_assignments_per_family() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/30", "2001:db8::/126"])]);
    got(&mut a, "a", &dual(FamilyPolicy::RequireDualStack));
    got(&mut a, "b", &v4());
    let c = a.counts("p").unwrap();
    assert_eq!(
        (c.assigned_v4, c.available_v4, c.assigned_v6, c.available_v6),
        (
            AddressCount(2),
            AddressCount(2),
            AddressCount(1),
            AddressCount(3)
        )
    );
    a.release(&key("a"));
    let c = a.counts("p").unwrap();
    assert_eq!(
        (c.assigned_v4, c.assigned_v6),
        (AddressCount(1), AddressCount(0))
    );
}

#[test]
fn no_pools_says_so() {
    let mut a = Allocator::new();
    assert_eq!(error(&mut a, "s", &v4()), AllocationError::NoPools);
    let mut bad = pool("bad", &["nope"]);
    bad.ranges = Err("spec.addresses[0]: garbage".into());
    a.set_pools(vec![bad]);
    let named = Request {
        pool: Some("bad".into()),
        ..v4()
    };
    assert!(error(&mut a, "s", &named).to_string().contains("garbage"));
}

/// Random operations keep the invariants: no address held twice unless shared, counts equal
/// what is held, free space is the complement. An allocator whose Service keys all hash the same
/// (one chain of interned Services) gives the same results.
#[test]
fn random_operations_keep_the_invariants() {
    let pools = || {
        vec![
            pool("a", &["203.0.113.0/28", "2001:db8::/125"]),
            pool("b", &["198.51.100.0/29"]),
        ]
    };
    let mut a = with_pools(pools());
    let mut colliding = Allocator::with_colliding_hashes();
    colliding.set_pools(pools());
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..5000 {
        let name = format!("s{}", next() % 40);
        match next() % 5 {
            0 => {
                assert_eq!(a.release(&key(&name)), colliding.release(&key(&name)));
            }
            _ => {
                let req = match next() % 4 {
                    0 => dual(FamilyPolicy::PreferDualStack),
                    1 => sharing(["k1", "k2"][(next() % 2) as usize], (next() % 4) as i32),
                    _ => v4(),
                };
                assert_eq!(
                    assign(&mut a, &name, &req),
                    assign(&mut colliding, &name, &req)
                );
            }
        }
        check_invariants(&a);
        check_invariants(&colliding);
    }
}

fn check_invariants(a: &Allocator) {
    let mut per_ip: BTreeMap<IpAddr, Vec<ServiceKey>> = BTreeMap::new();
    let mut services = 0;
    for (k, asg) in a.assigned_services() {
        services += 1;
        assert_eq!(a.assignment(k), Some(asg));
        for ip in &asg.ips {
            per_ip.entry(*ip).or_default().push(k.clone());
        }
    }
    assert_eq!(a.assigned_count(), services);
    for (ip, holders) in &per_ip {
        let users: Vec<_> = a.users(*ip).cloned().collect();
        let mut sorted = holders.clone();
        sorted.sort();
        assert_eq!(users, sorted, "{ip}");
    }
    for p in ["a", "b"] {
        let c = a.counts(p).unwrap();
        let held_v4 = per_ip
            .keys()
            .filter(|ip| ip.is_ipv4() && a.pool_of(**ip) == Some(p))
            .count() as u128;
        assert_eq!(c.assigned_v4, AddressCount(held_v4));
        let total: u128 = if p == "a" { 16 } else { 8 };
        assert_eq!(c.available_v4.0 + held_v4, total);
    }
}

/// A released Service's internal slot goes to the next new Service: nothing of the old one
/// (addresses, sharing key, name) shows through, and both keys keep being told apart.
#[test]
fn a_released_services_slot_is_reused_without_mixing_up_services() {
    for mut a in [Allocator::new(), Allocator::with_colliding_hashes()] {
        a.set_pools(vec![pool("p", &["203.0.113.0/29"])]);
        let first = got(&mut a, "a", &v4()).1;
        let second = got(&mut a, "b", &sharing("k", 80)).1;
        got(&mut a, "c", &v4());
        assert_eq!(a.release(&key("b")), second);
        assert_eq!(a.assignment(&key("b")), None);
        assert_eq!(a.sharing_key(&key("b")), None);
        // "d" takes b's slot and its freed address, without b's sharing key.
        assert_eq!(got(&mut a, "d", &v4()).1, second);
        assert_eq!(a.assignment(&key("b")), None);
        assert_eq!(a.sharing_key(&key("d")), None);
        assert_eq!(a.users(second[0]).collect::<Vec<_>>(), [&key("d")]);
        // "b" comes back as a new Service, "a" is untouched.
        let again = got(&mut a, "b", &sharing("j", 80)).1;
        assert_ne!(again, second);
        assert_eq!(a.sharing_key(&key("b")).as_deref(), Some("j"));
        assert_eq!(a.assignment(&key("a")).unwrap().ips, first);
        assert_eq!(a.assignment(&key("d")).unwrap().ips, second);
        assert_eq!(a.assigned_count(), 4);
        // Releasing in any order leaves nothing behind.
        for name in ["d", "a", "b", "c"] {
            assert!(!a.release(&key(name)).is_empty());
            assert_eq!(a.assignment(&key(name)), None);
            assert!(a.release(&key(name)).is_empty());
        }
        assert_eq!(a.assigned_count(), 0);
        assert_eq!(a.counts("p").unwrap().assigned_v4, AddressCount(0));
        assert_eq!(got(&mut a, "e", &v4()).1, first);
    }
}

/// Keys too long to be held inline (namespace and name up to 63 characters each) are told apart
/// as well as short ones, also when they share a prefix or a hash.
#[test]
fn long_keys_are_told_apart() {
    let long = |ns: usize, name: usize, last: char| {
        ServiceKey::new("n".repeat(ns), format!("{}{last}", "s".repeat(name - 1)))
    };
    let keys = [
        long(63, 63, 'a'),
        long(63, 63, 'b'),
        long(14, 63, 'a'),
        long(15, 63, 'a'),
        long(15, 62, 'a'),
        long(1, 1, 'a'),
    ];
    for mut a in [Allocator::new(), Allocator::with_colliding_hashes()] {
        a.set_pools(vec![pool("p", &["203.0.113.0/29"])]);
        let mut held = Vec::new();
        for k in &keys {
            held.push(
                a.assign(k, &v4(), &no_labels(), &[])
                    .unwrap()
                    .assignment
                    .ips,
            );
        }
        for (k, ips) in keys.iter().zip(&held) {
            assert_eq!(&a.assignment(k).unwrap().ips, ips, "{k}");
            assert_eq!(a.users(ips[0]).collect::<Vec<_>>(), [k]);
        }
        for k in keys.iter().step_by(2) {
            assert!(!a.release(k).is_empty());
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(a.assignment(k).is_some(), i % 2 == 1, "{k}");
        }
    }
}

/// Assigning a Service again with the same addresses keeps them and takes its new ports and
/// sharing key into account.
#[test]
fn assigning_again_updates_what_sharing_sees() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/30"])]);
    let shared = got(&mut a, "a", &sharing("k", 80)).1;
    assert_eq!(got(&mut a, "b", &sharing("k", 81)).1, shared);
    // b moves from port 81 to 82 on the same address.
    assert_eq!(got(&mut a, "b", &sharing("k", 82)).1, shared);
    assert_eq!(a.counts("p").unwrap().assigned_v4, AddressCount(1));
    assert_eq!(got(&mut a, "c", &sharing("k", 81)).1, shared);
    assert_ne!(got(&mut a, "d", &sharing("k", 82)).1, shared);
    // a changes its sharing key: it cannot stay with b and c.
    let o = assign(&mut a, "a", &sharing("j", 80)).unwrap();
    assert_ne!(o.assignment.ips, shared);
    assert_eq!(a.sharing_key(&key("a")).as_deref(), Some("j"));
    assert_eq!(
        a.users(shared[0]).collect::<Vec<_>>(),
        [&key("b"), &key("c")]
    );
    assert_eq!(a.assigned_count(), 4);
}

/// A conflict names the first holder in key order, whatever order the holders came in.
#[test]
fn a_conflict_names_the_first_holder_by_key() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/30"])]);
    let shared = got(&mut a, "z", &sharing("k", 80)).1;
    assert_eq!(got(&mut a, "b", &sharing("k", 81)).1, shared);
    let both = Request {
        requested: shared.clone(),
        ports: [80, 81]
            .map(|port| Port {
                port,
                protocol: "TCP".into(),
            })
            .to_vec(),
        ..sharing("k", 0)
    };
    match error(&mut a, "c", &both) {
        AllocationError::InUse { holder, .. } => assert_eq!(holder, key("b")),
        other => panic!("{other}"),
    }
    assert_eq!(
        a.users(shared[0]).collect::<Vec<_>>(),
        [&key("b"), &key("z")]
    );
}
