//! IPv6 neighbour discovery (RFC 4861) over Ethernet (RFC 2464): validate neighbour
//! solicitations, build neighbour advertisements.
//!
//! `pnet_packet` provides the views (`Ipv6Packet`, `NeighborSolicitPacket`,
//! `MutableNeighborAdvertPacket`, `MutableNdpOptionPacket`) and the pseudo-header checksum
//! (`icmpv6::checksum`). NS options are walked by hand instead of with pnet's
//! `get_options_iter()`: pnet computes an option's size as `length * 8` in `u8` arithmetic, which
//! overflows (a panic in debug builds) for a hostile length of 32 or more, and it does not report
//! options that run past the message or have length zero, both of which RFC 4861 §7.1.1 makes a
//! reason to drop the packet.

use std::net::Ipv6Addr;

use pnet_packet::ethernet::EtherTypes;
use pnet_packet::icmpv6::ndp::{
    Icmpv6Codes, MutableNdpOptionPacket, MutableNeighborAdvertPacket, NdpOptionTypes,
    NeighborAdvertFlags, NeighborSolicitPacket,
};
use pnet_packet::icmpv6::{self, Icmpv6Packet, Icmpv6Types, MutableIcmpv6Packet};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};

use super::arp::write_ethernet;
use super::{ETHERNET_HEADER_LEN, Header, Mac, WireError};

const IPV6_HEADER_LEN: usize = 40;
/// ICMPv6 header, reserved/flags word and target address of an NS or NA.
const ND_MESSAGE_LEN: usize = 24;
/// An Ethernet source or target link-layer address option: type, length 1, six bytes.
const LINK_LAYER_OPTION_LEN: usize = 8;
/// The NA we build: fixed part and one target link-layer address option.
const NA_LEN: usize = ND_MESSAGE_LEN + LINK_LAYER_OPTION_LEN;
/// RFC 4861: hop limit of every NS and NA.
const ND_HOP_LIMIT: u8 = 255;

/// `ff02::1`, all nodes on the link.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// A neighbour solicitation (ICMPv6 type 135) that passed RFC 4861 §7.1.1 validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighborSolicitation {
    /// Ethernet source address of the frame.
    pub eth_src: Mac,
    /// IPv6 source; `::` for duplicate address detection.
    pub src_ip: Ipv6Addr,
    /// IPv6 destination: the target's solicited-node group, or the target itself when a
    /// neighbour checks reachability.
    pub dst_ip: Ipv6Addr,
    /// The address whose link-layer address is asked for.
    pub target: Ipv6Addr,
    /// The source link-layer address option, if present (never for DAD).
    pub source_link_addr: Option<Mac>,
}

impl NeighborSolicitation {
    /// Whether this is duplicate address detection (RFC 4862 §5.4): a host checking, from the
    /// unspecified address, that nobody else uses `target`.
    pub fn is_dad(&self) -> bool {
        self.src_ip.is_unspecified()
    }
}

/// Parses and validates the IPv6 packet in an Ethernet payload as a neighbour solicitation.
pub(super) fn parse(eth_src: Mac, payload: &[u8]) -> Result<NeighborSolicitation, WireError> {
    let ip = Ipv6Packet::new(payload).ok_or(WireError::Truncated {
        header: Header::Ipv6,
        needed: IPV6_HEADER_LEN,
        got: payload.len(),
    })?;
    if ip.get_version() != 6 {
        return Err(WireError::NotIpv6(ip.get_version()));
    }
    let next_header = ip.get_next_header();
    if next_header != IpNextHeaderProtocols::Icmpv6 {
        return Err(WireError::NotIcmpv6(next_header.0));
    }
    // The ICMP length is the IPv6 payload length; bytes after it are link padding.
    let icmp_len = usize::from(ip.get_payload_length());
    let icmp = payload
        .get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + icmp_len)
        .ok_or(WireError::Truncated {
            header: Header::Ipv6Payload,
            needed: icmp_len,
            got: payload.len() - IPV6_HEADER_LEN,
        })?;
    let (icmp_type, code) = match icmp {
        [t, c, ..] => (*t, *c),
        _ => return Err(WireError::ShortNeighborSolicitation(icmp.len())),
    };
    if icmp_type != Icmpv6Types::NeighborSolicit.0 || code != Icmpv6Codes::NoCode.0 {
        return Err(WireError::NotNeighborSolicitation { icmp_type, code });
    }
    if ip.get_hop_limit() != ND_HOP_LIMIT {
        return Err(WireError::HopLimit(ip.get_hop_limit()));
    }
    let ns =
        NeighborSolicitPacket::new(icmp).ok_or(WireError::ShortNeighborSolicitation(icmp.len()))?;
    let (src_ip, dst_ip) = (ip.get_source(), ip.get_destination());
    verify_checksum(icmp, src_ip, dst_ip)?;

    let target = ns.get_target_addr();
    if target.is_multicast() {
        return Err(WireError::MulticastTarget(target));
    }
    if src_ip.is_multicast() {
        return Err(WireError::MulticastSource(src_ip));
    }
    let source_link_addr = source_link_addr_option(&icmp[ND_MESSAGE_LEN..])?;
    // Not a §7.1.1 rule but the same harm ARP guards against: the advertisement goes to the
    // option's address or else the Ethernet source, and a group address there would make the
    // owner send it to every host of the group.
    if let Some(group) = [Some(eth_src), source_link_addr]
        .into_iter()
        .flatten()
        .find(|mac| mac.is_multicast())
    {
        return Err(WireError::GroupLinkAddr(group));
    }
    if src_ip.is_unspecified() {
        if !is_solicited_node(dst_ip) {
            return Err(WireError::DadNotToSolicitedNode(dst_ip));
        }
        if source_link_addr.is_some() {
            return Err(WireError::DadWithSourceLinkAddr);
        }
    }
    Ok(NeighborSolicitation {
        eth_src,
        src_ip,
        dst_ip,
        target,
        source_link_addr,
    })
}

/// Checks the ICMPv6 checksum over the pseudo-header (RFC 8200 §8.1) and `icmp`.
fn verify_checksum(icmp: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<(), WireError> {
    let packet = Icmpv6Packet::new(icmp).ok_or(WireError::ShortNeighborSolicitation(icmp.len()))?;
    let got = packet.get_checksum();
    let expected = icmpv6::checksum(&packet, &src, &dst);
    // In one's complement 0x0000 and 0xffff are both zero; a sender may write either.
    if got == expected || (expected == 0 && got == 0xffff) {
        Ok(())
    } else {
        Err(WireError::BadChecksum { got, expected })
    }
}

/// Walks the NS options (RFC 4861 §4.6): each is type, length in units of 8 bytes, data.
/// Returns the first source link-layer address option's MAC; other option types are skipped, as
/// §4.6 requires of unknown options.
fn source_link_addr_option(mut options: &[u8]) -> Result<Option<Mac>, WireError> {
    let mut found = None;
    while !options.is_empty() {
        let [option_type, units, ..] = *options else {
            return Err(WireError::TruncatedOption {
                option_type: options[0],
                len: 2,
                remaining: options.len(),
            });
        };
        if units == 0 {
            return Err(WireError::ZeroLengthOption(option_type));
        }
        let len = usize::from(units) * 8;
        let Some(option) = options.get(..len) else {
            return Err(WireError::TruncatedOption {
                option_type,
                len,
                remaining: options.len(),
            });
        };
        if option_type == NdpOptionTypes::SourceLLAddr.0 && found.is_none() {
            let [_, _, a, b, c, d, e, f] = *option else {
                return Err(WireError::BadLinkLayerOption(units));
            };
            found = Some(Mac([a, b, c, d, e, f]));
        }
        options = &options[len..];
    }
    Ok(found)
}

/// The answer to `ns` saying its target is at `our_mac` (RFC 4861 §7.2.4). Source IP is the
/// target itself, hop limit 255, Router 0, Override 1, with a target link-layer address option.
///
/// - From a neighbour: unicast to `ns.src_ip`, Ethernet destination its source link-layer
///   address option or else the frame's source MAC; Solicited 1.
/// - From duplicate address detection (`::`): to all nodes `ff02::1` (`33:33:00:00:00:01`);
///   Solicited 0.
pub fn neighbor_advertisement(our_mac: Mac, ns: &NeighborSolicitation) -> Vec<u8> {
    if ns.is_dad() {
        return unsolicited_advertisement(our_mac, ns.target);
    }
    build_advertisement(
        our_mac,
        ns.source_link_addr.unwrap_or(ns.eth_src),
        ns.src_ip,
        ns.target,
        NeighborAdvertFlags::Solicited | NeighborAdvertFlags::Override,
    )
}

/// An unsolicited advertisement of `target` at `our_mac` to all nodes, `ff02::1`
/// (`33:33:00:00:00:01`): Router 0, Solicited 0, Override 1, so that neighbours replace a cached
/// address at once on takeover (RFC 4861 §7.2.6).
pub fn unsolicited_advertisement(our_mac: Mac, target: Ipv6Addr) -> Vec<u8> {
    build_advertisement(
        our_mac,
        multicast_mac(ALL_NODES),
        ALL_NODES,
        target,
        NeighborAdvertFlags::Override,
    )
}

/// The solicited-node multicast group of `ip` (RFC 4291 §2.7.1): `ff02::1:ff00:0/104` followed
/// by the low 24 bits of `ip`. A neighbour solicitation for `ip` is sent there.
pub fn solicited_node_address(ip: Ipv6Addr) -> Ipv6Addr {
    let [.., a, b, c] = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(a),
        u16::from_be_bytes([b, c]),
    )
}

/// The Ethernet address an IPv6 multicast group is sent to (RFC 2464 §7): `33:33` followed by
/// the group's low 32 bits.
pub fn multicast_mac(group: Ipv6Addr) -> Mac {
    let [.., a, b, c, d] = group.octets();
    Mac([0x33, 0x33, a, b, c, d])
}

/// Whether `ip` is in `ff02::1:ff00:0/104`.
fn is_solicited_node(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    s[..6] == [0xff02, 0, 0, 0, 0, 1] && s[6] & 0xff00 == 0xff00
}

fn build_advertisement(
    our_mac: Mac,
    eth_dst: Mac,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    flags: u8,
) -> Vec<u8> {
    let mut frame = vec![0u8; ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + NA_LEN];
    let (eth_bytes, rest) = frame.split_at_mut(ETHERNET_HEADER_LEN);
    write_ethernet(eth_bytes, eth_dst, our_mac, EtherTypes::Ipv6);
    let (ip_bytes, icmp) = rest.split_at_mut(IPV6_HEADER_LEN);

    let mut ip = MutableIpv6Packet::new(ip_bytes).expect("40 bytes hold an IPv6 header");
    ip.set_version(6);
    ip.set_payload_length(NA_LEN as u16);
    ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
    ip.set_hop_limit(ND_HOP_LIMIT);
    ip.set_source(target);
    ip.set_destination(dst);

    let mut na = MutableNeighborAdvertPacket::new(icmp).expect("32 bytes hold an NA");
    na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
    na.set_icmpv6_code(Icmpv6Codes::NoCode);
    na.set_flags(flags);
    na.set_target_addr(target);

    let mut option = MutableNdpOptionPacket::new(&mut icmp[ND_MESSAGE_LEN..])
        .expect("8 bytes hold a link-layer address option");
    option.set_option_type(NdpOptionTypes::TargetLLAddr);
    option.set_length(1);
    option.set_data(&our_mac.0);

    let checksum = icmpv6::checksum(
        &Icmpv6Packet::new(icmp).expect("an NA is an ICMPv6 message"),
        &target,
        &dst,
    );
    MutableIcmpv6Packet::new(icmp)
        .expect("an NA is an ICMPv6 message")
        .set_checksum(checksum);
    frame
}
