//! Services sharing an address (`allow-shared-ip`).

use super::*;
use crate::ipam::request::Protocol;

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
    assert_eq!(err.reason(), reason::PORT_COLLISION);
    assert_says(&err, "both use port 443/TCP");
    let err = error(&mut a, "d", &at("other", 8080));
    assert_says(&err, "key is \"k\"");
    let local = Request {
        backends: Backends::Local(BTreeMap::from([("app".into(), "x".into())])),
        ..at("k", 9000)
    };
    assert_says(&error(&mut a, "e", &local), "externalTrafficPolicy");
}

#[test]
fn sharing_that_became_invalid_moves_the_service_that_changed() {
    let mut a = with_pools(vec![pool("p", &["203.0.113.0/30"])]);
    let shared = got(&mut a, "a", &sharing("k", 80)).1;
    assert_eq!(got(&mut a, "b", &sharing("k", 81)).1, shared);
    let (o, lost) = ok(assign(&mut a, "b", &sharing("k", 80)));
    assert_ne!(o.ips.to_vec(), shared);
    assert!(lost.unwrap().why.contains("both use port 80/TCP"));
    assert_eq!(a.assignment(&key("a")).unwrap().ips.to_vec(), shared);
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
    let (o, _) = ok(assign(&mut a, "a", &sharing("j", 80)));
    assert_ne!(o.ips.to_vec(), shared);
    assert_eq!(a.sharing_key(&key("a")).as_deref(), Some("j"));
    assert_eq!(a.users(shared[0]).collect::<Vec<_>>(), [key("b"), key("c")]);
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
                protocol: Protocol::Tcp,
            })
            .into_iter()
            .collect(),
        ..sharing("k", 0)
    };
    match error(&mut a, "c", &both) {
        AllocationError::InUse { holder, .. } => assert_eq!(holder, key("b")),
        other => panic!("{other}"),
    }
    assert_eq!(a.users(shared[0]).collect::<Vec<_>>(), [key("b"), key("z")]);
}
