use std::mem::{align_of, offset_of, size_of};

use super::super::filter::{ARP_REQUESTS, NEIGHBOR_SOLICITATIONS, SockFilter};
use super::super::{GratuitousKind, gratuitous_arp, neighbor_advertisement, parse_frame};
use super::bpf::{check, run};
use super::*;

fn accepts(program: &[SockFilter], frame: &[u8]) -> bool {
    run(program, frame) != 0
}

/// An ICMPv6 echo request from the client to the VIP, hop limit 64.
fn echo_request() -> Vec<u8> {
    let mut frame = NS_UNICAST_NO_SLLA[..54].to_vec();
    frame[18..20].copy_from_slice(&12u16.to_be_bytes());
    frame[21] = 64;
    frame.extend_from_slice(&[128, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g']);
    fix_checksum(&mut frame);
    frame
}

/// A UDP datagram from the client to the VIP whose first payload byte is 135.
fn udp_in_ipv6() -> Vec<u8> {
    let mut frame = NS_UNICAST_NO_SLLA[..54].to_vec();
    frame[18..20].copy_from_slice(&12u16.to_be_bytes());
    frame[20] = 17;
    // Source port 0x8700: the byte at the ICMPv6 type offset is 135.
    frame.extend_from_slice(&[0x87, 0x00, 0x00, 0x35, 0, 12, 0, 0, 1, 2, 3, 4]);
    frame
}

/// An IPv4 UDP datagram, padded to 60 bytes, whose byte 20 (the ARP opcode's low byte in an ARP
/// frame) is 1.
fn ipv4_frame() -> Vec<u8> {
    let mut frame = ARP_REQUEST.to_vec();
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame[14..34].copy_from_slice(&[
        0x45, 0, 0, 28, 0, 1, 0x00, 0x01, 64, 17, 0, 0, 198, 51, 100, 100, 198, 51, 100, 200,
    ]);
    frame
}

#[test]
fn sock_filter_has_the_layout_of_struct_sock_filter() {
    assert_eq!(size_of::<SockFilter>(), 8);
    assert_eq!(align_of::<SockFilter>(), 4);
    assert_eq!(offset_of!(SockFilter, code), 0);
    assert_eq!(offset_of!(SockFilter, jt), 2);
    assert_eq!(offset_of!(SockFilter, jf), 3);
    assert_eq!(offset_of!(SockFilter, k), 4);
}

#[test]
fn filters_pass_the_kernels_structural_checks() {
    assert_eq!(check(ARP_REQUESTS), Ok(()));
    assert_eq!(check(NEIGHBOR_SOLICITATIONS), Ok(()));
}

#[test]
fn arp_filter_accepts_requests_and_probes_whole() {
    for frame in [&ARP_REQUEST[..], &ARP_PROBE[..], &ARP_REQUEST[..42]] {
        assert_eq!(run(ARP_REQUESTS, frame), u32::MAX);
    }
}

#[test]
fn arp_filter_passes_announcements_which_the_responder_must_not_answer() {
    let announcement = gratuitous_arp(OUR_MAC, VIP4, GratuitousKind::Request);
    assert!(accepts(ARP_REQUESTS, &announcement));
}

#[test]
fn arp_filter_drops_replies_ipv6_ipv4_and_short_frames() {
    let gratuitous_reply = gratuitous_arp(OUR_MAC, VIP4, GratuitousKind::Reply);
    let rejected: [(&str, &[u8]); 7] = [
        ("ARP reply", &ARP_REPLY),
        ("gratuitous reply", &gratuitous_reply),
        ("NS", &NS_WITH_SLLA),
        ("NA", &NA_TO_CLIENT),
        ("IPv4", &ipv4_frame()),
        ("ARP cut before the opcode", &ARP_REQUEST[..21]),
        ("empty", &[]),
    ];
    for (name, frame) in rejected {
        assert!(!accepts(ARP_REQUESTS, frame), "{name}");
    }
}

#[test]
fn ns_filter_accepts_every_golden_solicitation_whole() {
    for frame in [&NS_WITH_SLLA[..], &NS_UNICAST_NO_SLLA[..], &NS_DAD[..]] {
        assert_eq!(run(NEIGHBOR_SOLICITATIONS, frame), u32::MAX);
    }
}

#[test]
fn ns_filter_drops_advertisements_echo_udp_ipv4_arp_and_short_frames() {
    let dad_answer = neighbor_advertisement(OUR_MAC, &{
        let Ok(super::super::Solicitation::Neighbor(ns)) = parse_frame(&NS_DAD) else {
            panic!("golden DAD NS does not parse");
        };
        ns
    });
    let rejected: [(&str, &[u8]); 9] = [
        ("NA to client", &NA_TO_CLIENT),
        ("NA to all nodes", &NA_TO_ALL_NODES),
        ("NA answering DAD", &dad_answer),
        ("ICMPv6 echo request", &echo_request()),
        ("UDP in IPv6", &udp_in_ipv6()),
        ("IPv4", &ipv4_frame()),
        ("ARP request", &ARP_REQUEST),
        ("NS cut before the ICMPv6 type", &NS_WITH_SLLA[..54]),
        ("empty", &[]),
    ];
    for (name, frame) in rejected {
        assert!(!accepts(NEIGHBOR_SOLICITATIONS, frame), "{name}");
    }
}

#[test]
fn filters_drop_every_truncation_too_short_to_decide() {
    for len in 0..22 {
        assert!(!accepts(ARP_REQUESTS, &ARP_REQUEST[..len]), "ARP at {len}");
    }
    for len in 0..55 {
        assert!(
            !accepts(NEIGHBOR_SOLICITATIONS, &NS_WITH_SLLA[..len]),
            "NS at {len}"
        );
    }
}

#[test]
fn filters_let_every_golden_solicitation_through_to_the_right_socket_only() {
    for (name, frame) in GOLDEN {
        let parsed = parse_frame(frame);
        let (arp, ns) = (
            accepts(ARP_REQUESTS, frame),
            accepts(NEIGHBOR_SOLICITATIONS, frame),
        );
        match parsed {
            Ok(super::super::Solicitation::Arp(_)) => assert!(arp && !ns, "{name}"),
            Ok(super::super::Solicitation::Neighbor(_)) => assert!(ns && !arp, "{name}"),
            Err(_) => assert!(!ns, "{name}"),
        }
    }
}
