use super::super::{
    Header, Mac, NeighborSolicitation, Solicitation, WireError, multicast_mac,
    neighbor_advertisement, parse_frame, solicited_node_address, unsolicited_advertisement,
};
use super::*;

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn parse_ns(frame: &[u8]) -> Result<NeighborSolicitation, WireError> {
    match parse_frame(frame)? {
        Solicitation::Neighbor(ns) => Ok(ns),
        other => panic!("not an NS: {other:?}"),
    }
}

/// `frame` with `edit` applied and, if `rechecksum`, its checksum made valid again.
fn edited(frame: &[u8], rechecksum: bool, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut frame = frame.to_vec();
    edit(&mut frame);
    if rechecksum {
        fix_checksum(&mut frame);
    }
    frame
}

// === parsing golden frames ===

#[test]
fn ns_with_source_link_layer_address_parses() {
    assert_eq!(
        parse_ns(&NS_WITH_SLLA),
        Ok(NeighborSolicitation {
            eth_src: CLIENT_MAC,
            src_ip: CLIENT6,
            dst_ip: VIP6_SOLICITED,
            target: VIP6,
            source_link_addr: Some(CLIENT_MAC),
        })
    );
}

#[test]
fn unicast_ns_without_source_link_layer_address_parses() {
    let ns = parse_ns(&NS_UNICAST_NO_SLLA).unwrap();
    assert_eq!(
        ns,
        NeighborSolicitation {
            eth_src: CLIENT_MAC,
            src_ip: CLIENT6,
            dst_ip: VIP6,
            target: VIP6,
            source_link_addr: None,
        }
    );
    assert!(!ns.is_dad());
}

#[test]
fn dad_ns_parses_from_the_unspecified_address() {
    let ns = parse_ns(&NS_DAD).unwrap();
    assert_eq!(
        ns,
        NeighborSolicitation {
            eth_src: CLIENT_MAC,
            src_ip: Ipv6Addr::UNSPECIFIED,
            dst_ip: VIP6_SOLICITED,
            target: VIP6,
            source_link_addr: None,
        }
    );
    assert!(ns.is_dad());
}

#[test]
fn bytes_after_the_ipv6_payload_are_ignored() {
    let padded = edited(&NS_UNICAST_NO_SLLA, false, |f| {
        f.extend_from_slice(&[0xee; 10])
    });
    assert_eq!(parse_ns(&padded), parse_ns(&NS_UNICAST_NO_SLLA));
}

#[test]
fn unknown_options_are_skipped_and_the_first_slla_wins() {
    let mut options = vec![14, 1, 1, 2, 3, 4, 5, 6]; // nonce (RFC 3971), 8 bytes
    options.extend(slla(CLIENT_MAC));
    options.extend([200, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // unknown, 16 bytes
    options.extend(slla(Mac([0x02, 0xfe, 0, 0, 0, 0xbb])));
    let frame = ns_frame(CLIENT6, VIP6_SOLICITED, VIP6, &options);
    assert_eq!(parse_ns(&frame).unwrap().source_link_addr, Some(CLIENT_MAC));
}

#[test]
fn ns_built_by_the_test_helper_matches_the_golden_frame() {
    let frame = ns_frame(CLIENT6, VIP6_SOLICITED, VIP6, &slla(CLIENT_MAC));
    assert_eq!(frame, NS_WITH_SLLA);
}

// === one rejecting test per rule ===

#[test]
fn ns_with_a_group_source_link_layer_address_is_rejected() {
    for group in [Mac::BROADCAST, Mac([0x01, 0x80, 0xc2, 0, 0, 0])] {
        let frame = ns_frame(CLIENT6, VIP6_SOLICITED, VIP6, &slla(group));
        let err = parse_frame(&frame).unwrap_err();
        assert_eq!(err, WireError::GroupLinkAddr(group));
        assert_eq!(err.metric_label(), "ndp_group_link_addr");
    }
}

#[test]
fn ns_from_a_group_ethernet_source_is_rejected() {
    let group = Mac([0x33, 0x33, 0, 0, 0, 1]);
    let frame = edited(&NS_UNICAST_NO_SLLA, false, |f| {
        f[6..12].copy_from_slice(&group.0)
    });
    assert_eq!(parse_frame(&frame), Err(WireError::GroupLinkAddr(group)));
}

#[test]
fn ns_with_wrong_ip_version_is_rejected() {
    let frame = edited(&NS_WITH_SLLA, false, |f| f[14] = 0x40);
    assert_eq!(parse_frame(&frame), Err(WireError::NotIpv6(4)));
}

#[test]
fn ns_behind_an_extension_header_is_rejected() {
    // A hop-by-hop header (next header 0) carrying 8 bytes, then the same NS.
    let frame = edited(&NS_WITH_SLLA, false, |f| {
        f[20] = 0;
        f[18..20].copy_from_slice(&40u16.to_be_bytes());
        f.splice(54..54, [58, 0, 1, 4, 0, 0, 0, 0]);
    });
    let err = parse_frame(&frame).unwrap_err();
    assert_eq!(err, WireError::NotIcmpv6(0));
    assert!(err.to_string().contains("extension headers"), "{err}");
}

#[test]
fn udp_in_ipv6_is_rejected() {
    let frame = edited(&NS_WITH_SLLA, false, |f| f[20] = 17);
    assert_eq!(parse_frame(&frame), Err(WireError::NotIcmpv6(17)));
}

#[test]
fn ns_with_hop_limit_below_255_is_rejected() {
    for hop_limit in [0u8, 1, 64, 254] {
        let frame = edited(&NS_WITH_SLLA, false, |f| f[21] = hop_limit);
        let err = parse_frame(&frame).unwrap_err();
        assert_eq!(err, WireError::HopLimit(hop_limit));
        assert_eq!(err.metric_label(), "hop_limit");
    }
}

#[test]
fn other_icmpv6_messages_are_not_solicitations() {
    for (icmp_type, code) in [
        (136u8, 0u8),
        (128, 0),
        (129, 0),
        (133, 0),
        (134, 0),
        (137, 0),
    ] {
        let frame = edited(&NS_WITH_SLLA, true, |f| f[54] = icmp_type);
        assert_eq!(
            parse_frame(&frame),
            Err(WireError::NotNeighborSolicitation { icmp_type, code }),
        );
    }
}

#[test]
fn ns_with_nonzero_code_is_rejected() {
    let frame = edited(&NS_WITH_SLLA, true, |f| f[55] = 1);
    assert_eq!(
        parse_frame(&frame),
        Err(WireError::NotNeighborSolicitation {
            icmp_type: 135,
            code: 1
        })
    );
}

#[test]
fn our_own_advertisements_are_not_solicitations() {
    for frame in [&NA_TO_CLIENT[..], &NA_TO_ALL_NODES[..]] {
        assert_eq!(
            parse_frame(frame),
            Err(WireError::NotNeighborSolicitation {
                icmp_type: 136,
                code: 0
            })
        );
    }
}

#[test]
fn ns_shorter_than_24_bytes_is_rejected() {
    for len in [0usize, 1, 2, 8, 20, 23] {
        let frame = edited(&NS_UNICAST_NO_SLLA, true, |f| {
            f.truncate(54 + len);
            f[18..20].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        });
        assert_eq!(
            parse_frame(&frame),
            Err(WireError::ShortNeighborSolicitation(len)),
            "ICMP length {len}"
        );
    }
}

#[test]
fn payload_length_beyond_the_frame_is_truncation() {
    let frame = edited(&NS_WITH_SLLA, false, |f| {
        f[18..20].copy_from_slice(&40u16.to_be_bytes());
    });
    assert_eq!(
        parse_frame(&frame),
        Err(WireError::Truncated {
            header: Header::Ipv6Payload,
            needed: 40,
            got: 32
        })
    );
    assert_eq!(
        parse_frame(&NS_WITH_SLLA[..53]),
        Err(WireError::Truncated {
            header: Header::Ipv6,
            needed: 40,
            got: 39
        })
    );
}

#[test]
fn ns_with_bad_checksum_is_rejected() {
    let frame = edited(&NS_WITH_SLLA, false, |f| f[57] ^= 0x01);
    assert_eq!(
        parse_frame(&frame),
        Err(WireError::BadChecksum {
            got: 0x188e,
            expected: 0x188f
        })
    );
    // A changed byte anywhere in the pseudo-header or message, checksum left alone.
    for offset in [22, 37, 38, 53, 58, 62, 77, 80, 85] {
        let frame = edited(&NS_WITH_SLLA, false, |f| f[offset] ^= 0x10);
        assert!(
            matches!(parse_frame(&frame), Err(WireError::BadChecksum { .. })),
            "byte {offset}: {:?}",
            parse_frame(&frame)
        );
    }
}

#[test]
fn ns_checksum_of_0xffff_is_accepted_as_negative_zero() {
    // Find a reserved-field value that makes the computed checksum 0x0000, then write 0xffff.
    let mut frame = NS_UNICAST_NO_SLLA.to_vec();
    frame[56..58].copy_from_slice(&[0, 0]);
    let sum = ones_complement_checksum(CLIENT6, VIP6, &frame[54..]);
    // Adding the checksum into the reserved word makes the data sum 0xffff: checksum 0.
    frame[60..62].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(ones_complement_checksum(CLIENT6, VIP6, &frame[54..]), 0);
    assert!(parse_ns(&frame).is_ok());
    frame[56..58].copy_from_slice(&[0xff, 0xff]);
    assert!(parse_ns(&frame).is_ok());
}

#[test]
fn ns_for_a_multicast_target_is_rejected() {
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let frame = ns_frame(CLIENT6, VIP6_SOLICITED, group, &slla(CLIENT_MAC));
    assert_eq!(parse_frame(&frame), Err(WireError::MulticastTarget(group)));
}

#[test]
fn ns_from_a_multicast_source_is_rejected() {
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
    let frame = ns_frame(group, VIP6_SOLICITED, VIP6, &[]);
    assert_eq!(parse_frame(&frame), Err(WireError::MulticastSource(group)));
}

#[test]
fn ns_with_a_zero_length_option_is_rejected() {
    let mut options = slla(CLIENT_MAC);
    options.extend([14, 0, 0, 0, 0, 0, 0, 0]);
    let frame = ns_frame(CLIENT6, VIP6_SOLICITED, VIP6, &options);
    assert_eq!(parse_frame(&frame), Err(WireError::ZeroLengthOption(14)));
    // Also as the first option, the one an endless loop would trip over.
    let frame = ns_frame(
        CLIENT6,
        VIP6_SOLICITED,
        VIP6,
        &[1, 0, 2, 0xfe, 0, 0, 0, 0xaa],
    );
    assert_eq!(parse_frame(&frame), Err(WireError::ZeroLengthOption(1)));
}

#[test]
fn ns_with_an_option_past_the_end_is_rejected() {
    let mut options = slla(CLIENT_MAC);
    options.extend([14, 2, 0, 0, 0, 0, 0, 0]); // claims 16 bytes, has 8
    let frame = ns_frame(CLIENT6, VIP6_SOLICITED, VIP6, &options);
    assert_eq!(
        parse_frame(&frame),
        Err(WireError::TruncatedOption {
            option_type: 14,
            len: 16,
            remaining: 8
        })
    );
    // A hostile length that pnet's own option walker would overflow on.
    let frame = ns_frame(CLIENT6, VIP6_SOLICITED, VIP6, &[1, 255, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        parse_frame(&frame),
        Err(WireError::TruncatedOption {
            option_type: 1,
            len: 2040,
            remaining: 8
        })
    );
    // A lone trailing byte: not even type and length.
    let mut options = slla(CLIENT_MAC);
    options.push(1);
    let frame = ns_frame(CLIENT6, VIP6_SOLICITED, VIP6, &options);
    assert_eq!(
        parse_frame(&frame),
        Err(WireError::TruncatedOption {
            option_type: 1,
            len: 2,
            remaining: 1
        })
    );
}

#[test]
fn ns_with_a_non_ethernet_sized_slla_is_rejected() {
    let options = [1, 2, 2, 0xfe, 0, 0, 0, 0xaa, 0, 0, 0, 0, 0, 0, 0, 0];
    let frame = ns_frame(CLIENT6, VIP6_SOLICITED, VIP6, &options);
    assert_eq!(parse_frame(&frame), Err(WireError::BadLinkLayerOption(2)));
}

#[test]
fn dad_ns_not_to_a_solicited_node_group_is_rejected() {
    for dst in [
        VIP6,
        ALL_NODES,
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 2, 0xff00, 0xc8),
    ] {
        let frame = ns_frame(Ipv6Addr::UNSPECIFIED, dst, VIP6, &[]);
        assert_eq!(
            parse_frame(&frame),
            Err(WireError::DadNotToSolicitedNode(dst))
        );
    }
}

#[test]
fn dad_ns_with_a_source_link_layer_address_is_rejected() {
    let frame = ns_frame(
        Ipv6Addr::UNSPECIFIED,
        VIP6_SOLICITED,
        VIP6,
        &slla(CLIENT_MAC),
    );
    let err = parse_frame(&frame).unwrap_err();
    assert_eq!(err, WireError::DadWithSourceLinkAddr);
    assert_eq!(err.metric_label(), "dad_with_lladdr");
}

// === building ===

#[test]
fn na_to_a_neighbor_is_solicited_unicast_from_the_vip() {
    let ns = parse_ns(&NS_WITH_SLLA).unwrap();
    assert_eq!(neighbor_advertisement(OUR_MAC, &ns), NA_TO_CLIENT);
}

#[test]
fn na_without_slla_goes_to_the_ethernet_source() {
    let ns = NeighborSolicitation {
        eth_src: Mac([0x02, 0xfe, 0, 0, 0, 0xbb]),
        ..parse_ns(&NS_UNICAST_NO_SLLA).unwrap()
    };
    let na = neighbor_advertisement(OUR_MAC, &ns);
    let mut expected = NA_TO_CLIENT;
    expected[0..6].copy_from_slice(&[0x02, 0xfe, 0, 0, 0, 0xbb]);
    assert_eq!(na, expected);
}

#[test]
fn na_prefers_the_slla_over_the_ethernet_source() {
    let ns = NeighborSolicitation {
        eth_src: Mac([0x02, 0xfe, 0, 0, 0, 0xbb]),
        ..parse_ns(&NS_WITH_SLLA).unwrap()
    };
    assert_eq!(neighbor_advertisement(OUR_MAC, &ns), NA_TO_CLIENT);
}

#[test]
fn na_to_dad_goes_to_all_nodes_unsolicited() {
    let ns = parse_ns(&NS_DAD).unwrap();
    assert_eq!(neighbor_advertisement(OUR_MAC, &ns), NA_TO_ALL_NODES);
}

#[test]
fn unsolicited_na_goes_to_all_nodes_with_override() {
    assert_eq!(unsolicited_advertisement(OUR_MAC, VIP6), NA_TO_ALL_NODES);
}

#[test]
fn built_advertisements_carry_correct_checksums_for_any_target() {
    for last in [0u16, 1, 0xc8, 0xffff] {
        let target = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 7, 0, 0, 0xabcd, last);
        for frame in [
            unsolicited_advertisement(OUR_MAC, target),
            neighbor_advertisement(
                OUR_MAC,
                &NeighborSolicitation {
                    eth_src: CLIENT_MAC,
                    src_ip: CLIENT6,
                    dst_ip: solicited_node_address(target),
                    target,
                    source_link_addr: None,
                },
            ),
        ] {
            let mut fixed = frame.clone();
            fix_checksum(&mut fixed);
            assert_eq!(fixed, frame, "target {target}");
        }
    }
}

#[test]
fn solicited_node_address_keeps_the_low_24_bits() {
    assert_eq!(solicited_node_address(VIP6), VIP6_SOLICITED);
    assert_eq!(
        solicited_node_address("2001:db8::1:2:3:4567:89ab".parse().unwrap()),
        "ff02::1:ff67:89ab".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(
        solicited_node_address(Ipv6Addr::UNSPECIFIED),
        "ff02::1:ff00:0".parse::<Ipv6Addr>().unwrap()
    );
}

#[test]
fn multicast_mac_is_33_33_and_the_low_32_bits() {
    assert_eq!(multicast_mac(ALL_NODES), Mac([0x33, 0x33, 0, 0, 0, 1]));
    assert_eq!(
        multicast_mac(VIP6_SOLICITED),
        Mac([0x33, 0x33, 0xff, 0x00, 0x00, 0xc8])
    );
    assert_eq!(
        multicast_mac("ff02::1:ff67:89ab".parse().unwrap()).to_string(),
        "33:33:ff:67:89:ab"
    );
}
