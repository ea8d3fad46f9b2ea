//! Pure ARP and NDP codec: parse the solicitations a speaker answers, build its answers and
//! announcements, and the classic BPF programs that keep everything else out of its sockets.
//!
//! ```text
//!  AF_PACKET frame --(filter: kernel drops all but ARP requests / NS)--> parse_frame
//!     -> Solicitation::Arp(ArpRequest)              -> arp_reply              (RFC 826)
//!     -> Solicitation::Neighbor(NeighborSolicitation) -> neighbor_advertisement (RFC 4861 §7.2.4)
//!  takeover / refresh:  gratuitous_arp (RFC 5227 §3), unsolicited_advertisement (RFC 4861 §7.2.6)
//! ```
//!
//! Everything here is a function over bytes and values: no sockets, no clocks, no `unsafe`.
//! Frames are Ethernet II as an `AF_PACKET`/`SOCK_RAW` socket delivers them: destination MAC
//! first, no 802.1Q tag (see [`filter`] for what that means for VLANs), possibly padded to the
//! 60-byte Ethernet minimum. Any byte sequence is a valid input to [`parse_frame`]: truncated,
//! garbage or hostile frames yield a [`WireError`] naming the rule they broke, never a panic.
//!
//! The codec decides what a well-formed solicitation is; which addresses to answer for, and
//! whether to answer an announcement or a duplicate address detection probe at all, is the
//! responder's call.

#![forbid(unsafe_code)]

mod arp;
pub mod filter;
mod mac;
mod ndp;
#[cfg(test)]
mod tests;

use pnet_packet::Packet;
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};

pub use arp::{ArpRequest, GratuitousKind, arp_reply, gratuitous_arp};
pub use mac::{Mac, ParseMacError};
pub use ndp::{
    NeighborSolicitation, multicast_mac, neighbor_advertisement, solicited_node_address,
    unsolicited_advertisement,
};

/// Length of an Ethernet II header: destination MAC, source MAC, ethertype.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Ethertype of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// A request for the link-layer address of an IP address: what a speaker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Solicitation {
    /// An ARP request (IPv4).
    Arp(ArpRequest),
    /// An NDP neighbour solicitation (IPv6).
    Neighbor(NeighborSolicitation),
}

/// The headers [`WireError::Truncated`] can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The 14-byte Ethernet II header.
    Ethernet,
    /// The 28-byte ARP packet for Ethernet and IPv4.
    Arp,
    /// The 40-byte fixed IPv6 header.
    Ipv6,
    /// The IPv6 payload, as long as the header's payload length says.
    Ipv6Payload,
}

impl std::fmt::Display for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Header::Ethernet => "Ethernet header",
            Header::Arp => "ARP packet",
            Header::Ipv6 => "IPv6 header",
            Header::Ipv6Payload => "IPv6 payload",
        })
    }
}

/// Why a frame is not a solicitation this codec accepts. Each variant is one rule, with the
/// RFC it comes from; [`WireError::metric_label`] names it for a drop counter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame ends inside a header.
    #[error("truncated {header}: need {needed} bytes, got {got}")]
    Truncated {
        /// The header that does not fit.
        header: Header,
        /// Bytes the header needs.
        needed: usize,
        /// Bytes there are.
        got: usize,
    },
    /// Neither ARP nor IPv6 (an 802.1Q tag, 0x8100, also lands here).
    #[error("ethertype {0:#06x} is neither ARP (0x0806) nor IPv6 (0x86dd)")]
    UnsupportedEtherType(u16),
    /// ARP for something other than IPv4 over Ethernet (RFC 826).
    #[error(
        "ARP is not IPv4 over Ethernet: hardware type {htype} (want 1), protocol type \
         {ptype:#06x} (want 0x0800), address lengths {hlen}/{plen} (want 6/4)"
    )]
    ArpNotEthernetIpv4 {
        /// ar$hrd.
        htype: u16,
        /// ar$pro.
        ptype: u16,
        /// ar$hln.
        hlen: u8,
        /// ar$pln.
        plen: u8,
    },
    /// An ARP packet that is not a request (RFC 826): replies are not answered.
    #[error("ARP opcode {0} is not a request (1)")]
    NotArpRequest(u16),
    /// An ARP sender hardware address with the group bit set: a reply would go to a group.
    #[error("ARP sender hardware address {0} is a broadcast or multicast address")]
    ArpGroupSenderMac(Mac),
    /// An ARP sender hardware address that is not the frame's Ethernet source.
    #[error("ARP sender hardware address {sender} differs from the Ethernet source {eth_src}")]
    ArpSenderNotEthernetSource {
        /// ar$sha.
        sender: Mac,
        /// The Ethernet source address.
        eth_src: Mac,
    },
    /// An ARP sender protocol address that is multicast or 255.255.255.255: no host has it.
    #[error("ARP sender protocol address {0} is a multicast or limited-broadcast address")]
    ArpGroupSenderIp(std::net::Ipv4Addr),
    /// The IPv6 header's version field is not 6.
    #[error("IP version {0} in an IPv6 frame")]
    NotIpv6(u8),
    /// The IPv6 next header is not ICMPv6. An NS is never preceded by extension headers
    /// (RFC 4861 §7.1.1 requires the ICMPv6 header directly, this codec does too).
    #[error("IPv6 next header {0} is not ICMPv6 (58); extension headers are not accepted")]
    NotIcmpv6(u8),
    /// ICMPv6 but not a neighbour solicitation (type 135, code 0).
    #[error("ICMPv6 type {icmp_type} code {code} is not a neighbour solicitation (135/0)")]
    NotNeighborSolicitation {
        /// ICMPv6 type.
        icmp_type: u8,
        /// ICMPv6 code.
        code: u8,
    },
    /// RFC 4861 §7.1.1: the hop limit must be 255, proof the sender is on the link.
    #[error("NS hop limit {0} is not 255: the sender is not on this link")]
    HopLimit(u8),
    /// RFC 4861 §7.1.1: ICMP length (from the IPv6 payload length) is at least 24 bytes.
    #[error("NS ICMPv6 length {0} is below 24 bytes")]
    ShortNeighborSolicitation(usize),
    /// RFC 4861 §7.1.1: the ICMPv6 checksum is valid.
    #[error("bad ICMPv6 checksum {got:#06x}, expected {expected:#06x}")]
    BadChecksum {
        /// In the frame.
        got: u16,
        /// Computed over the pseudo-header and message.
        expected: u16,
    },
    /// RFC 4861 §7.1.1: the target address is not a multicast address.
    #[error("NS target {0} is a multicast address")]
    MulticastTarget(std::net::Ipv6Addr),
    /// RFC 4291 §2.7: a multicast address is never a source; there would be no one to answer.
    #[error("NS source {0} is a multicast address")]
    MulticastSource(std::net::Ipv6Addr),
    /// RFC 4861 §7.1.1: every option has a length greater than zero.
    #[error("NDP option type {0} has length 0")]
    ZeroLengthOption(u8),
    /// An NDP option runs past the end of the message.
    #[error("NDP option type {option_type} of {len} bytes runs past the message, {remaining} left")]
    TruncatedOption {
        /// Option type.
        option_type: u8,
        /// Option length in bytes (or 2 when even its type and length do not fit).
        len: usize,
        /// Bytes left in the message.
        remaining: usize,
    },
    /// A source link-layer address option whose length is not 1 (8 bytes), the only length for
    /// Ethernet (RFC 2464 §6).
    #[error("source link-layer address option of {0} units; Ethernet uses 1 (8 bytes)")]
    BadLinkLayerOption(u8),
    /// RFC 4861 §7.1.1: an NS from the unspecified address (duplicate address detection) goes to
    /// a solicited-node multicast address.
    #[error("DAD NS (source ::) to {0}, not a solicited-node multicast address")]
    DadNotToSolicitedNode(std::net::Ipv6Addr),
    /// An NS whose Ethernet source or source link-layer address option is a group address: the
    /// advertisement would go to a group.
    #[error("NS link-layer address {0} is a broadcast or multicast address")]
    GroupLinkAddr(Mac),
    /// RFC 4861 §7.1.1: an NS from the unspecified address carries no source link-layer address.
    #[error("DAD NS (source ::) carries a source link-layer address option")]
    DadWithSourceLinkAddr,
}

impl WireError {
    /// A short, stable name of the rule that failed, for a `reason` label on a counter of dropped
    /// frames.
    pub fn metric_label(&self) -> &'static str {
        match self {
            WireError::Truncated { .. } => "truncated",
            WireError::UnsupportedEtherType(_) => "ethertype",
            WireError::ArpNotEthernetIpv4 { .. } => "arp_not_ethernet_ipv4",
            WireError::NotArpRequest(_) => "arp_not_request",
            WireError::ArpGroupSenderMac(_) => "arp_group_sender_mac",
            WireError::ArpSenderNotEthernetSource { .. } => "arp_sender_not_eth_source",
            WireError::ArpGroupSenderIp(_) => "arp_group_sender_ip",
            WireError::NotIpv6(_) => "ip_version",
            WireError::NotIcmpv6(_) => "not_icmpv6",
            WireError::NotNeighborSolicitation { .. } => "not_ns",
            WireError::HopLimit(_) => "hop_limit",
            WireError::ShortNeighborSolicitation(_) => "ns_short",
            WireError::BadChecksum { .. } => "checksum",
            WireError::MulticastTarget(_) => "multicast_target",
            WireError::MulticastSource(_) => "multicast_source",
            WireError::ZeroLengthOption(_) => "option_zero_length",
            WireError::TruncatedOption { .. } => "option_truncated",
            WireError::BadLinkLayerOption(_) => "option_bad_lladdr",
            WireError::DadNotToSolicitedNode(_) => "dad_destination",
            WireError::GroupLinkAddr(_) => "ndp_group_link_addr",
            WireError::DadWithSourceLinkAddr => "dad_with_lladdr",
        }
    }
}

/// Parses an Ethernet II frame into the ARP request or neighbour solicitation it carries.
///
/// Trailing bytes (Ethernet padding, or bytes after the IPv6 payload length) are ignored.
pub fn parse_frame(frame: &[u8]) -> Result<Solicitation, WireError> {
    let eth = EthernetPacket::new(frame).ok_or(WireError::Truncated {
        header: Header::Ethernet,
        needed: ETHERNET_HEADER_LEN,
        got: frame.len(),
    })?;
    let eth_src = Mac(eth.get_source().octets());
    match eth.get_ethertype() {
        EtherTypes::Arp => arp::parse(eth_src, eth.payload()).map(Solicitation::Arp),
        EtherTypes::Ipv6 => ndp::parse(eth_src, eth.payload()).map(Solicitation::Neighbor),
        other => Err(WireError::UnsupportedEtherType(other.0)),
    }
}
