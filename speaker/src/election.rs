//! Election per address: rendezvous (highest random weight) hashing.
//!
//! Every speaker computes `owner(key) = argmax over candidates of score(node, key)` from the same
//! inputs, so all agree without talking. Removing a node moves only the keys it owned; adding one
//! moves only the keys it now wins. The key is the lowest IP of an announcement group (all IPs of
//! one Service, and all Services on one shared IP, form one group), so a group lands on one node.
//!
//! The hash is spelled out here (FNV-1a then a SplitMix64 finaliser) rather than taken from
//! `std::hash`, whose output may change between Rust versions: speakers of different builds
//! must still agree during a rolling upgrade.

use std::net::IpAddr;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// SplitMix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The address as 16 bytes (IPv4 mapped), so both families hash through one path.
fn key_bytes(key: IpAddr) -> [u8; 16] {
    match key {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A node's weight for `key`; stable across platforms, builds and versions.
pub fn score(node: &str, key: IpAddr) -> u64 {
    Scorer::new(key).score(node)
}

/// [`score`] for one key and many nodes: the key's part of the hash is computed once.
#[derive(Clone, Copy, Debug)]
pub struct Scorer(u64);

impl Scorer {
    /// The scorer of `key`.
    pub fn new(key: IpAddr) -> Self {
        let hash = fnv1a(FNV_OFFSET, &key_bytes(key));
        // A separator byte that cannot occur in a node name keeps (key, name) pairs unambiguous.
        Scorer(fnv1a(hash, &[0xff]))
    }

    /// `node`'s weight for the key.
    pub fn score(self, node: &str) -> u64 {
        mix(fnv1a(self.0, node.as_bytes()))
    }
}

/// Whether `a` ranks before `b` (higher score; on a tie, the lower name), the order [`owner`]
/// picks by.
pub fn ranks_before(a: (u64, &str), b: (u64, &str)) -> std::cmp::Ordering {
    b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1))
}

/// The winner among `candidates` for `key`: the highest score, ties (never seen in practice)
/// broken by the lower name so the result does not depend on iteration order.
pub fn owner<'a, I>(key: IpAddr, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let scorer = Scorer::new(key);
    candidates
        .into_iter()
        .map(|node| (scorer.score(node), node))
        .min_by(|a, b| ranks_before(*a, *b))
        .map(|(_, node)| node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
    }

    fn nodes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("node{i}")).collect()
    }

    #[test]
    fn score_is_pinned_so_builds_agree() {
        // Changing the hash reshuffles every IP during a rolling upgrade: these values must hold.
        let pinned = [
            score("node1", v4(200)),
            score("node2", v4(200)),
            score("node1", "2001:db8:1::200".parse().unwrap()),
        ];
        assert_eq!(
            pinned,
            [
                8877984992434328754,
                6499636257149165237,
                13179407989579191973
            ]
        );
        // FNV-1a of the empty input is the offset basis; of "a" the published test vector.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn owner_does_not_depend_on_candidate_order() {
        let all = nodes(7);
        for last in 0..=255 {
            let forward = owner(v4(last), all.iter().map(String::as_str));
            let backward = owner(v4(last), all.iter().rev().map(String::as_str));
            assert_eq!(forward, backward);
            assert!(forward.is_some());
        }
    }

    #[test]
    fn no_candidates_no_owner() {
        assert_eq!(owner(v4(1), std::iter::empty()), None);
    }

    #[test]
    fn removing_a_node_moves_only_its_addresses() {
        let all = nodes(5);
        let without3: Vec<&str> = all
            .iter()
            .map(String::as_str)
            .filter(|n| *n != "node3")
            .collect();
        for last in 0..=255 {
            let before = owner(v4(last), all.iter().map(String::as_str)).unwrap();
            let after = owner(v4(last), without3.iter().copied()).unwrap();
            if before != "node3" {
                assert_eq!(before, after, "198.51.100.{last} moved without cause");
            }
        }
    }

    #[test]
    fn adding_a_node_moves_only_what_it_wins() {
        let four = nodes(4);
        let five = nodes(5);
        for last in 0..=255 {
            let before = owner(v4(last), four.iter().map(String::as_str)).unwrap();
            let after = owner(v4(last), five.iter().map(String::as_str)).unwrap();
            assert!(after == before || after == "node5");
        }
    }

    #[test]
    fn addresses_spread_evenly() {
        // 1,000 IPv4 and 1,000 IPv6 addresses over 3 and 10 nodes: each node within 25 % of its
        // fair share.
        for n in [3usize, 10] {
            let all = nodes(n);
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for i in 0..1000u32 {
                let b = i.to_be_bytes();
                let ip4 = IpAddr::V4(Ipv4Addr::new(203, 0, b[2], b[3]));
                let ip6 = IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0,
                    0,
                    0,
                    0,
                    u16::from_be_bytes([b[0], b[1]]),
                    u16::from_be_bytes([b[2], b[3]]),
                ));
                for ip in [ip4, ip6] {
                    *counts
                        .entry(owner(ip, all.iter().map(String::as_str)).unwrap())
                        .or_default() += 1;
                }
            }
            let fair = 2000 / n;
            for (node, count) in counts {
                assert!(
                    count * 4 > fair * 3 && count * 4 < fair * 5,
                    "{node} owns {count} of 2000 with {n} nodes"
                );
            }
        }
    }

    #[test]
    fn similar_names_and_addresses_do_not_collide() {
        // ("node1", key) and ("node", key with a trailing 1) must not hash alike.
        assert_ne!(score("node1", v4(1)), score("node11", v4(1)));
        assert_ne!(score("node1", v4(1)), score("node1", v4(2)));
    }
}
