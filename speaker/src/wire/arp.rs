//! ARP for IPv4 over Ethernet (RFC 826): parse requests, build replies and RFC 5227
//! announcements.
//!
//! Parsing and building use `pnet_packet`'s `ArpPacket` and `EthernetPacket`; every field is at
//! a fixed offset inside the 28 bytes its `new()` checks, so no accessor can read past the
//! buffer. Frames we build are exactly 42 bytes (14 Ethernet + 28 ARP), no padding: Ethernet
//! drivers pad short frames to the 60-byte minimum, and receivers accept them either way.

use std::net::Ipv4Addr;

use pnet_packet::arp::{
    ArpHardwareTypes, ArpOperation, ArpOperations, ArpPacket, MutableArpPacket,
};
use pnet_packet::ethernet::{EtherTypes, MutableEthernetPacket};

use super::{ETHERNET_HEADER_LEN, Header, Mac, WireError};

/// Length of an ARP packet for Ethernet and IPv4.
const ARP_LEN: usize = 28;
/// Length of the frames [`arp_reply`] and [`gratuitous_arp`] build.
const FRAME_LEN: usize = ETHERNET_HEADER_LEN + ARP_LEN;

/// An ARP request (RFC 826 opcode 1) for IPv4 over Ethernet, from one host that can be answered:
/// [`parse`] has checked that its sender hardware address is the frame's Ethernet source and a
/// unicast address, and that its sender protocol address is not a group address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRequest {
    /// ar$sha, equal to the Ethernet source: the asker's MAC, where the reply goes.
    pub sender_mac: Mac,
    /// ar$spa: the asker's IPv4 address; `0.0.0.0` in an RFC 5227 probe.
    pub sender_ip: Ipv4Addr,
    /// ar$tpa: the address whose MAC is asked for.
    pub target_ip: Ipv4Addr,
}

impl ArpRequest {
    /// Whether this is a gratuitous ARP / RFC 5227 announcement (sender IP equals target IP):
    /// someone claiming `target_ip`, not asking for it. Answering it would be wrong; if the
    /// address is ours, it is a conflict to report.
    pub fn is_announcement(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// Whether this is an RFC 5227 probe (sender IP `0.0.0.0`): a host checking that
    /// `target_ip` is free before it uses it. A reply tells it the address is taken.
    pub fn is_probe(&self) -> bool {
        self.sender_ip.is_unspecified()
    }
}

/// Which ARP opcode a gratuitous announcement uses. Both are common; some old stacks update
/// their caches only from one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GratuitousKind {
    /// Opcode 1, the RFC 5227 §3 "ARP Announcement".
    Request,
    /// Opcode 2, the form RFC 5944 §4.6 describes (`arping -A`).
    Reply,
}

/// Parses the ARP packet in an Ethernet payload (padding after its 28 bytes is ignored).
///
/// Beyond RFC 826's format, a request is refused when answering it would be wrong or harmful:
/// - a group (broadcast or multicast) sender hardware address: the unicast reply would go to a
///   group, so one forged frame would make the owner flood the segment;
/// - a sender hardware address other than the Ethernet source: the reply would go to a host that
///   did not send the request (a reflection, and a way to poison switches' tables);
/// - a multicast or limited-broadcast (255.255.255.255) sender protocol address: no host has it.
///
/// `0.0.0.0` stays valid: it is an RFC 5227 probe, and a reply tells the prober the address is
/// taken.
pub(super) fn parse(eth_src: Mac, payload: &[u8]) -> Result<ArpRequest, WireError> {
    let arp = ArpPacket::new(payload).ok_or(WireError::Truncated {
        header: Header::Arp,
        needed: ARP_LEN,
        got: payload.len(),
    })?;
    let (htype, ptype) = (arp.get_hardware_type(), arp.get_protocol_type());
    let (hlen, plen) = (arp.get_hw_addr_len(), arp.get_proto_addr_len());
    if htype != ArpHardwareTypes::Ethernet || ptype != EtherTypes::Ipv4 || hlen != 6 || plen != 4 {
        return Err(WireError::ArpNotEthernetIpv4 {
            htype: htype.0,
            ptype: ptype.0,
            hlen,
            plen,
        });
    }
    let op = arp.get_operation();
    if op != ArpOperations::Request {
        return Err(WireError::NotArpRequest(op.0));
    }
    let sender_mac = Mac(arp.get_sender_hw_addr().octets());
    if sender_mac.is_multicast() {
        return Err(WireError::ArpGroupSenderMac(sender_mac));
    }
    if sender_mac != eth_src {
        return Err(WireError::ArpSenderNotEthernetSource {
            sender: sender_mac,
            eth_src,
        });
    }
    let sender_ip = arp.get_sender_proto_addr();
    if sender_ip.is_multicast() || sender_ip.is_broadcast() {
        return Err(WireError::ArpGroupSenderIp(sender_ip));
    }
    Ok(ArpRequest {
        sender_mac,
        sender_ip,
        target_ip: arp.get_target_proto_addr(),
    })
}

/// The reply to `req` saying `vip` is at `our_mac`, unicast to the asker (RFC 826): opcode 2,
/// sender (`our_mac`, `vip`), target (`req.sender_mac`, `req.sender_ip`). For a probe the target
/// IP is therefore `0.0.0.0`; the prober sees a packet whose sender IP is the address it probed,
/// which RFC 5227 §2.1.1 makes a conflict: the address is taken.
pub fn arp_reply(our_mac: Mac, vip: Ipv4Addr, req: &ArpRequest) -> [u8; 42] {
    build(
        req.sender_mac,
        our_mac,
        ArpOperations::Reply,
        (our_mac, vip),
        (req.sender_mac, req.sender_ip),
    )
}

/// A gratuitous ARP announcing `vip` at `our_mac` to the broadcast address, so that hosts and
/// switches update their caches at once on takeover (RFC 5227 §3).
///
/// - [`GratuitousKind::Request`]: opcode 1, sender (`our_mac`, `vip`), target
///   (`00:00:00:00:00:00`, `vip`). RFC 5227 §3: the target hardware address is ignored and
///   SHOULD be zero.
/// - [`GratuitousKind::Reply`]: opcode 2, sender (`our_mac`, `vip`), target (`our_mac`, `vip`).
///   RFC 5944 §4.6 (gratuitous ARP for mobile IP) sets the target hardware address of the reply
///   form to the address being announced, and `arping -A` (iputils) does the same.
pub fn gratuitous_arp(our_mac: Mac, vip: Ipv4Addr, kind: GratuitousKind) -> [u8; 42] {
    let (op, target_mac) = match kind {
        GratuitousKind::Request => (ArpOperations::Request, Mac::ZERO),
        GratuitousKind::Reply => (ArpOperations::Reply, our_mac),
    };
    build(
        Mac::BROADCAST,
        our_mac,
        op,
        (our_mac, vip),
        (target_mac, vip),
    )
}

fn build(
    eth_dst: Mac,
    eth_src: Mac,
    op: ArpOperation,
    sender: (Mac, Ipv4Addr),
    target: (Mac, Ipv4Addr),
) -> [u8; FRAME_LEN] {
    let mut frame = [0u8; FRAME_LEN];
    let (eth_bytes, arp_bytes) = frame.split_at_mut(ETHERNET_HEADER_LEN);
    let mut arp = MutableArpPacket::new(arp_bytes).expect("28 bytes hold an ARP packet");
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(op);
    arp.set_sender_hw_addr(sender.0.0.into());
    arp.set_sender_proto_addr(sender.1);
    arp.set_target_hw_addr(target.0.0.into());
    arp.set_target_proto_addr(target.1);
    write_ethernet(eth_bytes, eth_dst, eth_src, EtherTypes::Arp);
    frame
}

/// Fills a 14-byte Ethernet II header. Shared with `ndp`.
pub(super) fn write_ethernet(
    header: &mut [u8],
    dst: Mac,
    src: Mac,
    ethertype: pnet_packet::ethernet::EtherType,
) {
    let mut eth = MutableEthernetPacket::new(header).expect("14 bytes hold an Ethernet header");
    eth.set_destination(dst.0.into());
    eth.set_source(src.0.into());
    eth.set_ethertype(ethertype);
}
