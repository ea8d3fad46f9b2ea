//! Which address a Service gets from a pool, and counting what is held.

use super::*;

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
    assert_eq!(error(&mut a, "c", &v4()).reason(), reason::POOL_EXHAUSTED);
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
    assert_eq!(error(&mut a, "b", &v4()).reason(), reason::POOL_EXHAUSTED);
    let req = Request {
        requested: ips(&["198.51.101.0"]),
        ..v4()
    };
    let err = error(&mut a, "c", &req);
    assert_eq!(err.reason(), reason::INELIGIBLE_IP);
    assert_says(&err, "avoidBuggyIPs");
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
    assert_eq!(err.reason(), reason::IP_IN_USE);
    assert_eq!(
        err.to_string(),
        format!(
            "203.0.113.7 is held by ns/a: sharing needs the same {} key on both Services",
            annotation::ALLOW_SHARED_IP
        )
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
    assert_says(
        &err,
        "(needs IPv4 and IPv6 from one pool): pool a has 0 IPv4 free, no IPv6; pool b has 0 IPv4 free, 2 IPv6 free",
    );
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
    assert_eq!(assigned_per_family(&a, "p"), (1, 0));
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
    assert_says(&error(&mut a, "s", &named), "garbage");
}
