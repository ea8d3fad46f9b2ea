//! What a Service keeps, and what it loses with which reason, as pools, requests, namespaces and
//! the controller itself change.

use super::*;

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
    let (o, lost) = ok(assign(&mut a, "s3", &v4()));
    assert_eq!(o, before);
    assert_eq!(lost, None);
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
            .all(|k| ok(assign(&mut a, &k.name, &v4())).1.is_none())
    );
    let affected = a.set_pools(vec![pool("p", &["203.0.113.0-203.0.113.2"])]);
    for k in affected {
        assert_eq!(ok(assign(&mut a, &k.name, &v4())).1, None);
    }
    assert_eq!(a.counts("p").unwrap().available_v4, AddressCount(0));
    // Shrinking past a held address takes it away, with the reason.
    let affected = a.set_pools(vec![pool("p", &["203.0.113.0-203.0.113.1"])]);
    assert_eq!(affected, vec![key("s0"), key("s1"), key("s2")]);
    let (err, lost) = failed(assign(&mut a, "s2", &v4()));
    assert_eq!(
        lost.unwrap().why,
        "no IPAddressPool in use contains 203.0.113.2 any more"
    );
    assert_eq!(err.reason(), reason::POOL_EXHAUSTED);
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
    let (o, lost) = ok(assign(&mut a, "s", &v4()));
    assert_eq!((&*o.pool, o.ips.to_vec()), ("new", held.clone()));
    assert_eq!(lost, None);
    // Delete first, then create: the address is reclaimed when the Service is checked again
    // (its status still shows it).
    a.set_pools(vec![]);
    a.set_pools(vec![pool("again", &["203.0.113.0/28"])]);
    let o = a.assign(&key("s"), &v4(), &no_labels(), &held);
    assert_eq!(ok(o).0.ips.to_vec(), held);
}

#[test]
fn restart_reclaims_status_addresses_before_serving_pending() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/29"])]);
    // The status of "b" shows .3; a pending Service must not get it.
    let o = a.assign(&key("b"), &v4(), &no_labels(), &ips(&["203.0.113.3"]));
    assert_eq!(ok(o).0.ips.to_vec(), ips(&["203.0.113.3"]));
    for name in ["p1", "p2", "p3", "p4"] {
        assert_ne!(got(&mut a, name, &v4()).1, ips(&["203.0.113.3"]));
    }
    // Two statuses claiming one address: the first reclaimed keeps it, the other moves on.
    let f = a.assign(&key("dup"), &v4(), &no_labels(), &ips(&["203.0.113.3"]));
    let (o, lost) = ok(f);
    assert!(lost.unwrap().why.contains("also used by ns/b"));
    assert_ne!(o.ips.to_vec(), ips(&["203.0.113.3"]));
}

#[test]
fn request_changes_move_the_service_with_a_reason() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/29"])]);
    got(&mut a, "s", &v4());
    let moved = Request {
        requested: ips(&["203.0.113.5"]),
        ..v4()
    };
    let (o, lost) = ok(assign(&mut a, "s", &moved));
    assert_eq!(o.ips.to_vec(), ips(&["203.0.113.5"]));
    assert_eq!(
        lost.unwrap().why,
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
    let (o, lost) = ok(assign(&mut a, "s", &named));
    assert_eq!(&*o.pool, "b");
    assert_eq!(lost.unwrap().why, "pool a the Service names pool b");
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
            .result
            .unwrap()
            .pool,
        "team".into()
    );
    let (o, lost) = ok(a.assign(&key("s"), &v4(), &no_labels(), &[]));
    assert_eq!(&*o.pool, "z-open");
    assert!(lost.unwrap().why.contains("namespaceSelectors"));
}
