//! IP families: SingleStack, PreferDualStack and RequireDualStack.

use super::*;

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
        families: vec![Family::V6, Family::V4].into(),
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
            families: vec![Family::V6].into(),
            ..v4()
        },
    );
    let prefer = dual(FamilyPolicy::PreferDualStack);
    assert_eq!(got(&mut a, "s", &prefer).1, ips(&["203.0.113.0"]));
    a.release(&key("holds-v6"));
    let (o, lost) = ok(assign(&mut a, "s", &prefer));
    assert_eq!(o.ips.to_vec(), ips(&["203.0.113.0", "2001:db8::"]));
    assert_eq!(lost, None);
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
        families: vec![Family::V6].into(),
        ..v4()
    };
    assert_eq!(got(&mut a, "s", &req).1, ips(&["2001:db8::"]));
    assert_eq!(assigned_per_family(&a, "p"), (0, 1));
}

#[test]
fn single_to_dual_gains_a_family_from_the_same_pool() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/30", "2001:db8::/126"])]);
    let held = got(&mut a, "s", &v4()).1;
    let (o, lost) = ok(assign(&mut a, "s", &dual(FamilyPolicy::RequireDualStack)));
    assert_eq!(o.ips.to_vec(), vec![held[0], ip("2001:db8::")]);
    assert_eq!(lost, None);
    // And back: the IPv6 address is dropped, the IPv4 one stays.
    let (o, _) = ok(assign(&mut a, "s", &v4()));
    assert_eq!(o.ips.to_vec(), held);
    assert_eq!(a.counts("p").unwrap().assigned_v6, AddressCount(0));
}
