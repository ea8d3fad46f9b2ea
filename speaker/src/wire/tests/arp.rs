use super::super::{
    ArpRequest, GratuitousKind, Header, Mac, Solicitation, WireError, arp_reply, gratuitous_arp,
    parse_frame,
};
use super::*;

fn parse_arp(frame: &[u8]) -> Result<ArpRequest, WireError> {
    match parse_frame(frame)? {
        Solicitation::Arp(req) => Ok(req),
        other => panic!("not ARP: {other:?}"),
    }
}

/// ARP_REQUEST with `edit` applied.
fn request_with(edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut frame = ARP_REQUEST.to_vec();
    edit(&mut frame);
    frame
}

// === parsing ===

#[test]
fn padded_arp_request_parses_into_asker_and_target() {
    let req = parse_arp(&ARP_REQUEST).unwrap();
    assert_eq!(
        req,
        ArpRequest {
            sender_mac: CLIENT_MAC,
            sender_ip: CLIENT4,
            target_ip: VIP4,
        }
    );
    assert!(!req.is_announcement());
    assert!(!req.is_probe());
}

#[test]
fn unpadded_arp_request_parses_the_same() {
    assert_eq!(parse_arp(&ARP_REQUEST[..42]), parse_arp(&ARP_REQUEST));
}

#[test]
fn arp_probe_is_a_valid_request_from_0_0_0_0() {
    let req = parse_arp(&ARP_PROBE).unwrap();
    assert_eq!(req.sender_ip, Ipv4Addr::UNSPECIFIED);
    assert_eq!(req.sender_mac, CLIENT_MAC);
    assert_eq!(req.target_ip, VIP4);
    assert!(req.is_probe());
    assert!(!req.is_announcement());
}

// === strict input: requests whose answer would be wrong or harmful ===

/// ARP_REQUEST from `mac` in both the Ethernet source and the ARP sender hardware address.
fn request_from_mac(mac: Mac) -> Vec<u8> {
    request_with(|f| {
        f[6..12].copy_from_slice(&mac.0);
        f[22..28].copy_from_slice(&mac.0);
    })
}

#[test]
fn sender_hardware_address_other_than_the_ethernet_source_is_refused() {
    let other = Mac([0x02, 0xfe, 0, 0, 0, 0xbb]);
    let frame = request_with(|f| f[6..12].copy_from_slice(&other.0));
    let err = parse_arp(&frame).unwrap_err();
    assert_eq!(
        err,
        WireError::ArpSenderNotEthernetSource {
            sender: CLIENT_MAC,
            eth_src: other
        }
    );
    assert_eq!(err.metric_label(), "arp_sender_not_eth_source");
    assert_eq!(
        err.to_string(),
        "ARP sender hardware address 02:fe:00:00:00:aa differs from the Ethernet source \
         02:fe:00:00:00:bb"
    );
}

#[test]
fn group_sender_hardware_addresses_are_refused_even_when_the_ethernet_source_matches() {
    let groups = [
        Mac::BROADCAST,
        Mac([0x01, 0x80, 0xc2, 0, 0, 0]), // bridge group address (STP)
        Mac([0x01, 0x00, 0x5e, 0, 0, 1]), // IPv4 multicast
        Mac([0x33, 0x33, 0, 0, 0, 1]),    // IPv6 multicast
        Mac([0x03, 0, 0, 0, 0, 0]),       // group bit with the local bit
    ];
    for group in groups {
        let err = parse_arp(&request_from_mac(group)).unwrap_err();
        assert_eq!(err, WireError::ArpGroupSenderMac(group), "{group}");
        assert_eq!(err.metric_label(), "arp_group_sender_mac");
    }
    // With a unicast Ethernet source the group rule still applies first.
    let frame = request_with(|f| f[22..28].copy_from_slice(&Mac::BROADCAST.0));
    assert_eq!(
        parse_arp(&frame),
        Err(WireError::ArpGroupSenderMac(Mac::BROADCAST))
    );
}

#[test]
fn group_and_limited_broadcast_sender_protocol_addresses_are_refused() {
    for ip in [
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::new(239, 255, 255, 250),
    ] {
        let frame = request_with(|f| f[28..32].copy_from_slice(&ip.octets()));
        let err = parse_arp(&frame).unwrap_err();
        assert_eq!(err, WireError::ArpGroupSenderIp(ip), "{ip}");
        assert_eq!(err.metric_label(), "arp_group_sender_ip");
    }
    // Neighbours of the group range stay valid senders.
    for ip in [
        Ipv4Addr::new(223, 255, 255, 255),
        Ipv4Addr::new(240, 0, 0, 1),
    ] {
        let frame = request_with(|f| f[28..32].copy_from_slice(&ip.octets()));
        assert_eq!(parse_arp(&frame).unwrap().sender_ip, ip);
    }
}

#[test]
fn gratuitous_request_parses_as_an_announcement() {
    let req = parse_arp(&GRATUITOUS_REQUEST).unwrap();
    assert!(req.is_announcement());
    assert_eq!((req.sender_mac, req.sender_ip), (OUR_MAC, VIP4));
}

#[test]
fn arp_reply_is_not_a_request() {
    assert_eq!(parse_arp(&ARP_REPLY), Err(WireError::NotArpRequest(2)));
    assert_eq!(
        parse_arp(&GRATUITOUS_REPLY),
        Err(WireError::NotArpRequest(2))
    );
}

#[test]
fn other_arp_opcodes_are_rejected() {
    for op in [0u16, 3, 4, 8, 9, 0x0100, 0xffff] {
        let frame = request_with(|f| f[20..22].copy_from_slice(&op.to_be_bytes()));
        assert_eq!(
            parse_arp(&frame),
            Err(WireError::NotArpRequest(op)),
            "op {op}"
        );
    }
}

#[test]
fn arp_for_other_hardware_is_rejected() {
    let frame = request_with(|f| f[14..16].copy_from_slice(&[0x00, 0x06])); // IEEE 802
    assert_eq!(
        parse_arp(&frame),
        Err(WireError::ArpNotEthernetIpv4 {
            htype: 6,
            ptype: 0x0800,
            hlen: 6,
            plen: 4
        })
    );
}

#[test]
fn arp_for_other_protocols_is_rejected() {
    let frame = request_with(|f| f[16..18].copy_from_slice(&[0x86, 0xdd]));
    assert!(matches!(
        parse_arp(&frame),
        Err(WireError::ArpNotEthernetIpv4 { ptype: 0x86dd, .. })
    ));
}

#[test]
fn arp_with_other_address_lengths_is_rejected() {
    let frame = request_with(|f| f[18] = 8);
    assert!(matches!(
        parse_arp(&frame),
        Err(WireError::ArpNotEthernetIpv4 {
            hlen: 8,
            plen: 4,
            ..
        })
    ));
    let frame = request_with(|f| f[19] = 16);
    assert!(matches!(
        parse_arp(&frame),
        Err(WireError::ArpNotEthernetIpv4 {
            hlen: 6,
            plen: 16,
            ..
        })
    ));
}

#[test]
fn truncated_arp_packet_says_how_short_it_is() {
    assert_eq!(
        parse_frame(&ARP_REQUEST[..41]),
        Err(WireError::Truncated {
            header: Header::Arp,
            needed: 28,
            got: 27
        })
    );
    let err = parse_frame(&ARP_REQUEST[..41]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "truncated ARP packet: need 28 bytes, got 27"
    );
}

#[test]
fn truncated_ethernet_header_says_how_short_it_is() {
    assert_eq!(
        parse_frame(&ARP_REQUEST[..13]),
        Err(WireError::Truncated {
            header: Header::Ethernet,
            needed: 14,
            got: 13
        })
    );
    assert_eq!(
        parse_frame(&[]),
        Err(WireError::Truncated {
            header: Header::Ethernet,
            needed: 14,
            got: 0
        })
    );
}

#[test]
fn frames_that_are_neither_arp_nor_ipv6_are_rejected() {
    for ethertype in [0x0800u16, 0x8100, 0x8035, 0x88cc, 0x0000] {
        let frame = request_with(|f| f[12..14].copy_from_slice(&ethertype.to_be_bytes()));
        let err = parse_frame(&frame).unwrap_err();
        assert_eq!(err, WireError::UnsupportedEtherType(ethertype));
        assert_eq!(err.metric_label(), "ethertype");
    }
}

// === building ===

#[test]
fn arp_reply_goes_to_the_asker_with_our_mac_for_the_vip() {
    let req = parse_arp(&ARP_REQUEST).unwrap();
    assert_eq!(arp_reply(OUR_MAC, VIP4, &req), ARP_REPLY);
}

#[test]
fn arp_reply_to_a_probe_targets_0_0_0_0_at_the_askers_mac() {
    let req = parse_arp(&ARP_PROBE).unwrap();
    assert_eq!(arp_reply(OUR_MAC, VIP4, &req), ARP_REPLY_TO_PROBE);
}

#[test]
fn gratuitous_request_announces_the_vip_with_a_zero_target_mac() {
    assert_eq!(
        gratuitous_arp(OUR_MAC, VIP4, GratuitousKind::Request),
        GRATUITOUS_REQUEST
    );
}

#[test]
fn gratuitous_reply_announces_the_vip_with_our_mac_as_target() {
    assert_eq!(
        gratuitous_arp(OUR_MAC, VIP4, GratuitousKind::Reply),
        GRATUITOUS_REPLY
    );
}
