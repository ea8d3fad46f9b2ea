//! Unit tests of the wire codec: golden frames written out byte by byte, one rejecting test per
//! validation rule, the BPF programs run by a small interpreter, and robustness against
//! truncated, random and mutated frames.
//!
//! Addresses are from documentation ranges: 198.51.100.0/24, 2001:db8::/32, MACs 02:fe:...
//! ICMPv6 checksums in the golden frames were computed outside this codebase and are checked
//! again here by [`ones_complement_checksum`], which shares no code with the codec.

mod arp;
mod bpf;
mod filter;
mod mac;
mod ndp;
mod robustness;
mod targeted;

use std::net::{Ipv4Addr, Ipv6Addr};

use super::Mac;

/// The speaker's MAC.
const OUR_MAC: Mac = Mac([0x02, 0xfe, 0x00, 0x00, 0x00, 0x01]);
/// The asking client's MAC.
const CLIENT_MAC: Mac = Mac([0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa]);
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
/// 2001:db8:1::c8
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xc8);
/// 2001:db8:1::64
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x64);
/// ff02::1:ff00:c8, the solicited-node group of VIP6.
const VIP6_SOLICITED: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0xc8);

// === golden input frames ===

/// A broadcast ARP request from the client for VIP4, padded to 60 bytes as on the wire.
#[rustfmt::skip]
const ARP_REQUEST: [u8; 60] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast
    0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa, // Ethernet source: client
    0x08, 0x06,                         // ethertype ARP
    0x00, 0x01,                         // hardware type Ethernet
    0x08, 0x00,                         // protocol type IPv4
    0x06,                               // hardware address length
    0x04,                               // protocol address length
    0x00, 0x01,                         // opcode request
    0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa, // sender MAC: client
    198, 51, 100, 100,                  // sender IP: client
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC: unknown
    198, 51, 100, 200,                  // target IP: VIP
    0, 0, 0, 0, 0, 0, 0, 0, 0,          // padding to 60 bytes
    0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// An RFC 5227 probe from the client checking whether VIP4 is free, unpadded (42 bytes).
#[rustfmt::skip]
const ARP_PROBE: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast
    0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa, // Ethernet source: client
    0x08, 0x06,                         // ethertype ARP
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet, IPv4, 6, 4
    0x00, 0x01,                         // opcode request
    0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa, // sender MAC: client
    0, 0, 0, 0,                         // sender IP: 0.0.0.0 (probe)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC: unknown
    198, 51, 100, 200,                  // target IP: VIP
];

/// The client's NS for VIP6 to its solicited-node group, with a source link-layer address.
#[rustfmt::skip]
const NS_WITH_SLLA: [u8; 86] = [
    0x33, 0x33, 0xff, 0x00, 0x00, 0xc8, // Ethernet destination: 33:33 + ff00:00c8
    0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa, // Ethernet source: client
    0x86, 0xdd,                         // ethertype IPv6
    0x60, 0x00, 0x00, 0x00,             // version 6, traffic class 0, flow label 0
    0x00, 0x20,                         // payload length 32
    0x3a,                               // next header ICMPv6
    0xff,                               // hop limit 255
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, // source 2001:db8:1::64
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x64,
    0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // destination ff02::1:ff00:c8
    0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x00, 0xc8,
    0x87,                               // ICMPv6 type 135 (NS)
    0x00,                               // code 0
    0x18, 0x8f,                         // checksum
    0x00, 0x00, 0x00, 0x00,             // reserved
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, // target 2001:db8:1::c8
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc8,
    0x01,                               // option: source link-layer address
    0x01,                               // length 1 (8 bytes)
    0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa, // client MAC
];

/// The client checking reachability of VIP6: unicast to it, no link-layer option.
#[rustfmt::skip]
const NS_UNICAST_NO_SLLA: [u8; 78] = [
    0x02, 0xfe, 0x00, 0x00, 0x00, 0x01, // Ethernet destination: us
    0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa, // Ethernet source: client
    0x86, 0xdd,                         // ethertype IPv6
    0x60, 0x00, 0x00, 0x00,             // version 6
    0x00, 0x18,                         // payload length 24
    0x3a,                               // next header ICMPv6
    0xff,                               // hop limit 255
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, // source 2001:db8:1::64
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x64,
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, // destination 2001:db8:1::c8
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc8,
    0x87, 0x00,                         // NS, code 0
    0xed, 0x8a,                         // checksum
    0x00, 0x00, 0x00, 0x00,             // reserved
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, // target 2001:db8:1::c8
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc8,
];

/// Another host's duplicate address detection for VIP6: from ::, no link-layer option.
#[rustfmt::skip]
const NS_DAD: [u8; 78] = [
    0x33, 0x33, 0xff, 0x00, 0x00, 0xc8, // Ethernet destination: 33:33 + ff00:00c8
    0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa, // Ethernet source: client
    0x86, 0xdd,                         // ethertype IPv6
    0x60, 0x00, 0x00, 0x00,             // version 6
    0x00, 0x18,                         // payload length 24
    0x3a,                               // next header ICMPv6
    0xff,                               // hop limit 255
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // source :: (unspecified)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // destination ff02::1:ff00:c8
    0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x00, 0xc8,
    0x87, 0x00,                         // NS, code 0
    0x4b, 0x5e,                         // checksum
    0x00, 0x00, 0x00, 0x00,             // reserved
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, // target 2001:db8:1::c8
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc8,
];

// === golden output frames ===

/// Our reply to ARP_REQUEST.
#[rustfmt::skip]
const ARP_REPLY: [u8; 42] = [
    0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa, // Ethernet destination: client
    0x02, 0xfe, 0x00, 0x00, 0x00, 0x01, // Ethernet source: us
    0x08, 0x06,                         // ethertype ARP
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet, IPv4, 6, 4
    0x00, 0x02,                         // opcode reply
    0x02, 0xfe, 0x00, 0x00, 0x00, 0x01, // sender MAC: us
    198, 51, 100, 200,                  // sender IP: VIP
    0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa, // target MAC: client
    198, 51, 100, 100,                  // target IP: client
];

/// Our reply to ARP_PROBE: the same, with target IP 0.0.0.0.
#[rustfmt::skip]
const ARP_REPLY_TO_PROBE: [u8; 42] = [
    0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa, // Ethernet destination: client
    0x02, 0xfe, 0x00, 0x00, 0x00, 0x01, // Ethernet source: us
    0x08, 0x06,                         // ethertype ARP
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet, IPv4, 6, 4
    0x00, 0x02,                         // opcode reply
    0x02, 0xfe, 0x00, 0x00, 0x00, 0x01, // sender MAC: us
    198, 51, 100, 200,                  // sender IP: VIP
    0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa, // target MAC: client
    0, 0, 0, 0,                         // target IP: the probe's 0.0.0.0
];

/// RFC 5227 announcement of VIP4, request form.
#[rustfmt::skip]
const GRATUITOUS_REQUEST: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast
    0x02, 0xfe, 0x00, 0x00, 0x00, 0x01, // Ethernet source: us
    0x08, 0x06,                         // ethertype ARP
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet, IPv4, 6, 4
    0x00, 0x01,                         // opcode request
    0x02, 0xfe, 0x00, 0x00, 0x00, 0x01, // sender MAC: us
    198, 51, 100, 200,                  // sender IP: VIP
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC: zero (RFC 5227 §3)
    198, 51, 100, 200,                  // target IP: VIP
];

/// Gratuitous ARP of VIP4, reply form.
#[rustfmt::skip]
const GRATUITOUS_REPLY: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast
    0x02, 0xfe, 0x00, 0x00, 0x00, 0x01, // Ethernet source: us
    0x08, 0x06,                         // ethertype ARP
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet, IPv4, 6, 4
    0x00, 0x02,                         // opcode reply
    0x02, 0xfe, 0x00, 0x00, 0x00, 0x01, // sender MAC: us
    198, 51, 100, 200,                  // sender IP: VIP
    0x02, 0xfe, 0x00, 0x00, 0x00, 0x01, // target MAC: us (RFC 5944 §4.6)
    198, 51, 100, 200,                  // target IP: VIP
];

/// Our solicited NA answering NS_WITH_SLLA.
#[rustfmt::skip]
const NA_TO_CLIENT: [u8; 86] = [
    0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa, // Ethernet destination: client (from its SLLA)
    0x02, 0xfe, 0x00, 0x00, 0x00, 0x01, // Ethernet source: us
    0x86, 0xdd,                         // ethertype IPv6
    0x60, 0x00, 0x00, 0x00,             // version 6
    0x00, 0x20,                         // payload length 32
    0x3a,                               // next header ICMPv6
    0xff,                               // hop limit 255
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, // source 2001:db8:1::c8 (the VIP)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc8,
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, // destination 2001:db8:1::64
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x64,
    0x88,                               // ICMPv6 type 136 (NA)
    0x00,                               // code 0
    0x87, 0x82,                         // checksum
    0x60, 0x00, 0x00, 0x00,             // R=0 S=1 O=1, reserved
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, // target 2001:db8:1::c8
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc8,
    0x02,                               // option: target link-layer address
    0x01,                               // length 1 (8 bytes)
    0x02, 0xfe, 0x00, 0x00, 0x00, 0x01, // our MAC
];

/// Our NA of VIP6 to all nodes: the answer to NS_DAD and the unsolicited announcement.
#[rustfmt::skip]
const NA_TO_ALL_NODES: [u8; 86] = [
    0x33, 0x33, 0x00, 0x00, 0x00, 0x01, // Ethernet destination: 33:33 + ff02::1's low 32 bits
    0x02, 0xfe, 0x00, 0x00, 0x00, 0x01, // Ethernet source: us
    0x86, 0xdd,                         // ethertype IPv6
    0x60, 0x00, 0x00, 0x00,             // version 6
    0x00, 0x20,                         // payload length 32
    0x3a,                               // next header ICMPv6
    0xff,                               // hop limit 255
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, // source 2001:db8:1::c8 (the VIP)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc8,
    0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // destination ff02::1
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x88, 0x00,                         // NA, code 0
    0xf6, 0x9c,                         // checksum
    0x20, 0x00, 0x00, 0x00,             // R=0 S=0 O=1, reserved
    0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, // target 2001:db8:1::c8
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc8,
    0x02, 0x01,                         // option: target link-layer address, 8 bytes
    0x02, 0xfe, 0x00, 0x00, 0x00, 0x01, // our MAC
];

/// Every golden frame, named, for the robustness and filter tests.
const GOLDEN: &[(&str, &[u8])] = &[
    ("ARP request", &ARP_REQUEST),
    ("ARP probe", &ARP_PROBE),
    ("NS with SLLA", &NS_WITH_SLLA),
    ("unicast NS without SLLA", &NS_UNICAST_NO_SLLA),
    ("DAD NS", &NS_DAD),
    ("ARP reply", &ARP_REPLY),
    ("ARP reply to probe", &ARP_REPLY_TO_PROBE),
    ("gratuitous ARP request", &GRATUITOUS_REQUEST),
    ("gratuitous ARP reply", &GRATUITOUS_REPLY),
    ("NA to client", &NA_TO_CLIENT),
    ("NA to all nodes", &NA_TO_ALL_NODES),
];

// === independent helpers ===

/// The Internet checksum (RFC 1071) of an ICMPv6 message with its IPv6 pseudo-header
/// (RFC 8200 §8.1), written here from the RFCs and sharing no code with the codec. The checksum
/// field of `icmp` must be zero, or the result is the value that makes the sum check out.
fn ones_complement_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&src.octets());
    bytes.extend_from_slice(&dst.octets());
    bytes.extend_from_slice(&u32::try_from(icmp.len()).unwrap().to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 58]);
    bytes.extend_from_slice(icmp);
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|pair| u64::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Recomputes the ICMPv6 checksum of an untagged Ethernet/IPv6 frame in place, over the IPv6
/// payload length (clamped to the frame), so that a test can change a field and still reach the
/// rule after the checksum.
fn fix_checksum(frame: &mut [u8]) {
    if frame.len() < 58 {
        return;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[22..38]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[38..54]).unwrap());
    let len = usize::from(u16::from_be_bytes([frame[18], frame[19]])).min(frame.len() - 54);
    frame[56..58].copy_from_slice(&[0, 0]);
    let sum = ones_complement_checksum(src, dst, &frame[54..54 + len]);
    frame[56..58].copy_from_slice(&sum.to_be_bytes());
}

/// An Ethernet/IPv6 frame carrying an NS from `src` to `dst` for `target` with raw `options`,
/// hop limit 255 and a correct checksum, assembled without the codec.
fn ns_frame(src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr, options: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&[0x33, 0x33, 0xff, 0x00, 0x00, 0xc8]);
    frame.extend_from_slice(&CLIENT_MAC.0);
    frame.extend_from_slice(&[0x86, 0xdd]);
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&u16::try_from(24 + options.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&[58, 255]);
    frame.extend_from_slice(&src.octets());
    frame.extend_from_slice(&dst.octets());
    frame.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(&target.octets());
    frame.extend_from_slice(options);
    fix_checksum(&mut frame);
    frame
}

/// A source link-layer address option carrying `mac`.
fn slla(mac: Mac) -> Vec<u8> {
    let mut option = vec![1, 1];
    option.extend_from_slice(&mac.0);
    option
}

#[test]
fn golden_checksums_match_an_independent_computation() {
    for (name, frame) in GOLDEN.iter().filter(|(_, f)| f[12..14] == [0x86, 0xdd]) {
        let mut fixed = frame.to_vec();
        fix_checksum(&mut fixed);
        assert_eq!(&fixed[..], *frame, "{name}: checksum");
    }
}
