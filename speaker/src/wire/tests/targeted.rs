//! Filters narrowed to the announced addresses: exactly the requests for those addresses pass,
//! whatever their number and values, and every program is one the kernel accepts.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::super::filter::{
    ARP_REQUESTS, MAX_INSTRUCTIONS, NEIGHBOR_SOLICITATIONS, Program, arp_requests_for,
    neighbor_solicitations_for,
};
use super::super::{GratuitousKind, gratuitous_arp};
use super::bpf::{check, run};
use super::*;

/// ARP_REQUEST asking for `target`.
fn arp_request_for(target: Ipv4Addr) -> Vec<u8> {
    let mut frame = ARP_REQUEST.to_vec();
    frame[38..42].copy_from_slice(&target.octets());
    frame
}

/// NS_WITH_SLLA asking for `target` (the filter does not read the checksum).
fn solicitation_for(target: Ipv6Addr) -> Vec<u8> {
    let mut frame = NS_WITH_SLLA.to_vec();
    frame[62..78].copy_from_slice(&target.octets());
    frame
}

fn targeted(program: &Program) -> &[SockFilter] {
    match program {
        Program::Targeted(p) => {
            assert_eq!(check(p), Ok(()));
            p
        }
        Program::Broad(_) => panic!("expected a targeted program"),
    }
}

use super::super::filter::SockFilter;

/// `n` seeded pseudo-random addresses: the same every run.
fn pseudo_random(seed: u64, n: usize) -> Vec<u32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    std::iter::repeat_with(|| rng.u32(..)).take(n).collect()
}

#[test]
fn no_targets_drops_every_request() {
    let program = arp_requests_for([]);
    let p = targeted(&program);
    for frame in [&ARP_REQUEST[..], &ARP_PROBE[..]] {
        assert_eq!(run(p, frame), 0);
    }
    let program = neighbor_solicitations_for([]);
    assert_eq!(run(targeted(&program), &NS_WITH_SLLA), 0);
}

#[test]
fn arp_accepts_exactly_the_targets_for_every_count_up_to_a_thousand() {
    for n in (1..=40).chain([63, 64, 65, 127, 128, 129, 255, 256, 511, 1000]) {
        // Neighbours of every target are the likeliest mistakes of a search: test them all.
        let targets: Vec<u32> = (0..n).map(|i| 0xc633_6400 + 3 * i as u32).collect();
        let program = arp_requests_for(targets.iter().map(|t| Ipv4Addr::from(*t)));
        let p = targeted(&program);
        for t in &targets {
            assert_eq!(
                run(p, &arp_request_for((*t).into())),
                u32::MAX,
                "n={n} {t:#x}"
            );
            for miss in [t - 1, t + 1] {
                assert_eq!(run(p, &arp_request_for(miss.into())), 0, "n={n} {miss:#x}");
            }
        }
        for edge in [0, u32::MAX, targets[0] - 3, targets[targets.len() - 1] + 3] {
            assert_eq!(run(p, &arp_request_for(edge.into())), 0, "n={n} {edge:#x}");
        }
    }
}

#[test]
fn arp_accepts_exactly_random_targets_including_extremes_and_duplicates() {
    let mut targets = pseudo_random(0x9e37_79b9_7f4a_7c15, 2000);
    targets.extend([0, 1, u32::MAX, u32::MAX - 1, targets[0], targets[1]]);
    let program = arp_requests_for(targets.iter().map(|t| Ipv4Addr::from(*t)));
    let p = targeted(&program);
    let set: std::collections::BTreeSet<u32> = targets.iter().copied().collect();
    for t in &set {
        assert_eq!(run(p, &arp_request_for((*t).into())), u32::MAX, "{t:#x}");
    }
    for probe in pseudo_random(7, 20_000) {
        let expected = if set.contains(&probe) { u32::MAX } else { 0 };
        assert_eq!(
            run(p, &arp_request_for(probe.into())),
            expected,
            "{probe:#x}"
        );
    }
}

#[test]
fn arp_targeted_keeps_the_broad_rules_for_other_frames() {
    let program = arp_requests_for([VIP4, CLIENT4]);
    let p = targeted(&program);
    assert_eq!(run(p, &ARP_REQUEST), u32::MAX);
    assert_eq!(run(p, &ARP_PROBE), u32::MAX);
    // Announcements by others of an owned address must still reach the conflict check.
    assert_eq!(
        run(p, &gratuitous_arp(OUR_MAC, VIP4, GratuitousKind::Request)),
        u32::MAX
    );
    let mut reply_for_vip = ARP_REPLY.to_vec();
    reply_for_vip[38..42].copy_from_slice(&VIP4.octets());
    for (name, frame) in [
        ("ARP reply", &reply_for_vip[..]),
        (
            "gratuitous reply",
            &gratuitous_arp(OUR_MAC, VIP4, GratuitousKind::Reply)[..],
        ),
        ("NS", &NS_WITH_SLLA[..]),
        ("cut before the target", &ARP_REQUEST[..41]),
        ("empty", &[]),
    ] {
        assert_eq!(run(p, frame), 0, "{name}");
    }
}

#[test]
fn ns_accepts_the_targets_and_prefilters_on_their_last_32_bits() {
    let targets: Vec<Ipv6Addr> = (0..600u128)
        .map(|i| Ipv6Addr::from(u128::from(VIP6) + 5 * i))
        .collect();
    let program = neighbor_solicitations_for(targets.iter().copied());
    let p = targeted(&program);
    for t in &targets {
        assert_eq!(run(p, &solicitation_for(*t)), u32::MAX, "{t}");
        let next = Ipv6Addr::from(u128::from(*t) + 1);
        assert_eq!(run(p, &solicitation_for(next)), 0, "{next}");
    }
    // Same last 32 bits in another prefix: passes, and the responder compares the rest.
    let other_prefix = Ipv6Addr::from(u128::from(VIP6) ^ (1 << 100));
    assert_eq!(run(p, &solicitation_for(other_prefix)), u32::MAX);
    for frame in [&NS_UNICAST_NO_SLLA[..], &NS_DAD[..]] {
        assert_eq!(run(p, frame), u32::MAX, "golden NS for VIP6");
    }
    for (name, frame) in [
        ("NA to all nodes", &NA_TO_ALL_NODES[..]),
        ("ARP request", &ARP_REQUEST[..]),
        ("cut before the target's end", &NS_WITH_SLLA[..77]),
    ] {
        assert_eq!(run(p, frame), 0, "{name}");
    }
}

#[test]
fn too_many_targets_fall_back_to_the_broad_filter() {
    let fits = arp_requests_for((0..2000u32).map(|i| Ipv4Addr::from(i * 2)));
    assert!(targeted(&fits).len() <= MAX_INSTRUCTIONS);
    let many = arp_requests_for((0..5000u32).map(|i| Ipv4Addr::from(i * 2)));
    assert_eq!(many, Program::Broad(ARP_REQUESTS));
    assert_eq!(many.instructions(), ARP_REQUESTS);
    let many6 = neighbor_solicitations_for((0..5000u128).map(|i| Ipv6Addr::from(i * 2)));
    assert_eq!(many6, Program::Broad(NEIGHBOR_SOLICITATIONS));
}

#[test]
fn size_grows_linearly_with_the_targets() {
    for n in [1usize, 10, 100, 1000, 2000] {
        let program = arp_requests_for((0..n as u32).map(Ipv4Addr::from));
        let len = targeted(&program).len();
        assert!(len <= 7 + 2 * n + 2, "n={n}: {len} instructions");
    }
}
