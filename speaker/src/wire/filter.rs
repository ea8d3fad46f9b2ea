//! Classic BPF programs, as data, that an `AF_PACKET` socket attaches with `SO_ATTACH_FILTER` so
//! the kernel wakes the speaker only for ARP requests or neighbour solicitations.
//!
//! Offsets are from the start of the Ethernet header, as on a `SOCK_RAW` packet socket, and
//! assume no 802.1Q tag in the frame: Linux hands packet sockets the frame with an offloaded VLAN
//! tag removed (it lives in the packet metadata), and a socket bound to a VLAN interface sees
//! untagged frames. A frame that still carries a tag inline has ethertype 0x8100 at offset 12 and
//! is dropped, as [`super::parse_frame`] would reject it.
//!
//! The filters are a first cut, not validation: [`super::parse_frame`] still checks every rule.
//! A load beyond the end of the frame makes the kernel return 0 (drop), so short frames never
//! pass.
//!
//! Opcode values are those of `<linux/filter.h>`; [`SockFilter`] has the layout of
//! `struct sock_filter`, so a program's slice can be handed to the kernel as a `sock_fprog`.

/// One classic BPF instruction, laid out as Linux's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SockFilter {
    /// Opcode: class, size, mode / operation and source bits.
    pub code: u16,
    /// Jump offset (from the next instruction) when a conditional jump is true.
    pub jt: u8,
    /// Jump offset (from the next instruction) when a conditional jump is false.
    pub jf: u8,
    /// The constant operand: offset, comparison value or return value.
    pub k: u32,
}

// === opcodes (linux/bpf_common.h) ===

/// Class: load into the accumulator.
pub const BPF_LD: u16 = 0x00;
/// Class: jump.
pub const BPF_JMP: u16 = 0x05;
/// Class: return.
pub const BPF_RET: u16 = 0x06;
/// Size: 32-bit word.
pub const BPF_W: u16 = 0x00;
/// Size: 16-bit half word.
pub const BPF_H: u16 = 0x08;
/// Size: byte.
pub const BPF_B: u16 = 0x10;
/// Mode: absolute offset into the packet (big-endian loads).
pub const BPF_ABS: u16 = 0x20;
/// Jump: if accumulator == operand.
pub const BPF_JEQ: u16 = 0x10;
/// Source: the constant `k`.
pub const BPF_K: u16 = 0x00;

/// Return value that accepts the whole frame (the kernel truncates it to the frame length).
pub const ACCEPT: u32 = u32::MAX;
/// Return value that drops the frame.
pub const DROP: u32 = 0;

/// `A = packet[k..k+2]` (big-endian).
const fn load_half(offset: u32) -> SockFilter {
    SockFilter {
        code: BPF_LD | BPF_H | BPF_ABS,
        jt: 0,
        jf: 0,
        k: offset,
    }
}

/// `A = packet[k]`.
const fn load_byte(offset: u32) -> SockFilter {
    SockFilter {
        code: BPF_LD | BPF_B | BPF_ABS,
        jt: 0,
        jf: 0,
        k: offset,
    }
}

/// `if A == value { continue } else { skip jf instructions }`.
const fn jump_unless_eq(value: u32, jf: u8) -> SockFilter {
    SockFilter {
        code: BPF_JMP | BPF_JEQ | BPF_K,
        jt: 0,
        jf,
        k: value,
    }
}

/// `return value`.
const fn ret(value: u32) -> SockFilter {
    SockFilter {
        code: BPF_RET | BPF_K,
        jt: 0,
        jf: 0,
        k: value,
    }
}

/// Offset of the ethertype in an untagged Ethernet II frame.
const ETHERTYPE: u32 = 12;
/// Offset of the ARP opcode: 14 (Ethernet) + 6 (htype, ptype, hlen, plen).
const ARP_OPCODE: u32 = 20;
/// Offset of the IPv6 next header field: 14 (Ethernet) + 6.
const IPV6_NEXT_HEADER: u32 = 20;
/// Offset of the ICMPv6 type right after a 40-byte IPv6 header: 14 + 40.
const ICMPV6_TYPE: u32 = 54;

/// Accepts ARP frames (ethertype 0x0806) with opcode 1 (request); drops everything else.
pub const ARP_REQUESTS: &[SockFilter] = &[
    /* 0 */ load_half(ETHERTYPE),
    /* 1 */ jump_unless_eq(0x0806, 3), // -> 5
    /* 2 */ load_half(ARP_OPCODE),
    /* 3 */ jump_unless_eq(1, 1), // -> 5
    /* 4 */ ret(ACCEPT),
    /* 5 */ ret(DROP),
];

/// Accepts IPv6 frames (ethertype 0x86dd) whose next header is ICMPv6 (58) and whose ICMPv6 type
/// is 135 (neighbour solicitation); drops everything else, including NS behind extension
/// headers, which RFC 4861 validation rejects anyway.
pub const NEIGHBOR_SOLICITATIONS: &[SockFilter] = &[
    /* 0 */ load_half(ETHERTYPE),
    /* 1 */ jump_unless_eq(0x86dd, 5), // -> 7
    /* 2 */ load_byte(IPV6_NEXT_HEADER),
    /* 3 */ jump_unless_eq(58, 3), // -> 7
    /* 4 */ load_byte(ICMPV6_TYPE),
    /* 5 */ jump_unless_eq(135, 1), // -> 7
    /* 6 */ ret(ACCEPT),
    /* 7 */ ret(DROP),
];
