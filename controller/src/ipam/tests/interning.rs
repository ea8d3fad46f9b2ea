//! The interned Services behind the allocator: random operations keep every invariant, released
//! slots are reused cleanly, and keys are told apart even when their hashes collide.

use super::*;

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
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    for _ in 0..5000 {
        let name = format!("s{}", rng.u32(..40));
        match rng.u32(..5) {
            0 => {
                assert_eq!(a.release(&key(&name)), colliding.release(&key(&name)));
            }
            _ => {
                let req = match rng.u32(..4) {
                    0 => dual(FamilyPolicy::PreferDualStack),
                    1 => sharing(["k1", "k2"][rng.usize(..2)], rng.i32(0..4)),
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
        assert_eq!(a.assignment(&k.to_key()), Some(asg));
        for ip in &asg.ips {
            per_ip.entry(*ip).or_default().push(k.to_key());
        }
    }
    assert_eq!(a.assigned_count(), services);
    for (ip, holders) in &per_ip {
        let users: Vec<_> = a.users(*ip).map(|k| k.to_key()).collect();
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
        assert_eq!(a.users(second[0]).collect::<Vec<_>>(), [key("d")]);
        // "b" comes back as a new Service, "a" is untouched.
        let again = got(&mut a, "b", &sharing("j", 80)).1;
        assert_ne!(again, second);
        assert_eq!(a.sharing_key(&key("b")).as_deref(), Some("j"));
        assert_eq!(a.assignment(&key("a")).unwrap().ips.to_vec(), first);
        assert_eq!(a.assignment(&key("d")).unwrap().ips.to_vec(), second);
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

/// Keys of every length are told apart, also when they share a prefix or a hash: up to the
/// longest valid ones (63 + 63 bytes, held in the slot) and beyond (held on the heap), with
/// multi-byte characters; a slot that held a long key serves a short one after it.
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
        long(100, 100, 'a'),
        long(100, 100, 'b'),
        ServiceKey::new("é", "ñame"),
    ];
    for mut a in [Allocator::new(), Allocator::with_colliding_hashes()] {
        a.set_pools(vec![pool("p", &["203.0.113.0/28"])]);
        let mut held = Vec::new();
        for k in &keys {
            held.push(a.assign(k, &v4(), &no_labels(), &[]).result.unwrap().ips);
        }
        for (k, ips) in keys.iter().zip(&held) {
            assert_eq!(&a.assignment(k).unwrap().ips, ips, "{k}");
            assert_eq!(a.users(ips[0]).collect::<Vec<_>>(), std::slice::from_ref(k));
        }
        for k in keys.iter().step_by(2) {
            assert!(!a.release(k).is_empty());
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(a.assignment(k).is_some(), i % 2 == 1, "{k}");
        }
        // Freed slots (long keys among them) go to new short keys.
        let short: Vec<ServiceKey> = (0..5)
            .map(|i| ServiceKey::new("x", format!("{i}")))
            .collect();
        for k in &short {
            let ips = a.assign(k, &v4(), &no_labels(), &[]).result.unwrap().ips;
            assert_eq!(a.users(ips[0]).collect::<Vec<_>>(), std::slice::from_ref(k));
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(a.assignment(k).is_some(), i % 2 == 1, "{k}");
        }
    }
}
