//! Classic BPF programs, as data, that an `AF_PACKET` socket attaches with `SO_ATTACH_FILTER` so
//! the kernel wakes the speaker only for ARP requests or neighbour solicitations, and (with
//! [`arp_requests_for`] and [`neighbor_solicitations_for`]) only for those asking for an address
//! this node announces on that interface. Every speaker sees every broadcast on the LAN; without
//! the target check each one would wake for every request, though only one answers it.
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
/// Jump: always, by `k` instructions.
pub const BPF_JA: u16 = 0x00;
/// Jump: if accumulator == operand.
pub const BPF_JEQ: u16 = 0x10;
/// Jump: if accumulator >= operand (unsigned).
pub const BPF_JGE: u16 = 0x30;
/// Source: the constant `k`.
pub const BPF_K: u16 = 0x00;

/// Most instructions the kernel accepts in one classic program (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;

/// Return value that accepts the whole frame (the kernel truncates it to the frame length).
pub const ACCEPT: u32 = u32::MAX;
/// Return value that drops the frame.
pub const DROP: u32 = 0;

/// One instruction.
const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// `A = packet[k..k+2]` (big-endian).
const fn load_half(offset: u32) -> SockFilter {
    insn(BPF_LD | BPF_H | BPF_ABS, 0, 0, offset)
}

/// `A = packet[k]`.
const fn load_byte(offset: u32) -> SockFilter {
    insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, offset)
}

/// `A = packet[k..k+4]` (big-endian).
const fn load_word(offset: u32) -> SockFilter {
    insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, offset)
}

/// `if A == value { continue } else { skip jf instructions }`.
const fn jump_unless_eq(value: u32, jf: u8) -> SockFilter {
    insn(BPF_JMP | BPF_JEQ | BPF_K, 0, jf, value)
}

/// `if A == value { skip jt instructions } else { continue }`.
const fn jump_if_eq(value: u32, jt: u8) -> SockFilter {
    insn(BPF_JMP | BPF_JEQ | BPF_K, jt, 0, value)
}

/// `if A >= value { skip jt instructions } else { skip jf instructions }`.
const fn jump_if_at_least(value: u32, jt: u8, jf: u8) -> SockFilter {
    insn(BPF_JMP | BPF_JGE | BPF_K, jt, jf, value)
}

/// `skip k instructions` (a 32-bit offset, where conditional jumps reach only 255).
const fn jump_always(k: u32) -> SockFilter {
    insn(BPF_JMP | BPF_JA, 0, 0, k)
}

/// `return value`.
const fn ret(value: u32) -> SockFilter {
    insn(BPF_RET | BPF_K, 0, 0, value)
}

/// Offset of the ethertype in an untagged Ethernet II frame.
const ETHERTYPE: u32 = 12;
/// Offset of the ARP opcode: 14 (Ethernet) + 6 (htype, ptype, hlen, plen).
const ARP_OPCODE: u32 = 20;
/// Offset of the IPv6 next header field: 14 (Ethernet) + 6.
const IPV6_NEXT_HEADER: u32 = 20;
/// Offset of the ICMPv6 type right after a 40-byte IPv6 header: 14 + 40.
const ICMPV6_TYPE: u32 = 54;
/// Offset of the ARP target protocol address: 14 + 8 + 6 (sha) + 4 (spa) + 6 (tha).
const ARP_TARGET_IP: u32 = 38;
/// Offset of the last 32 bits of the NS target address: 14 + 40 + 8 (type .. reserved) + 12.
const NS_TARGET_LOW_WORD: u32 = 74;

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

/// A program for one socket: narrowed to the addresses announced there, or, when those are too
/// many for one program, the broad filter of the protocol (the responder still checks every
/// target, so only the wake-ups grow).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// Accepts requests for the given targets only.
    Targeted(Vec<SockFilter>),
    /// Accepts every request of the protocol ([`ARP_REQUESTS`] or [`NEIGHBOR_SOLICITATIONS`]).
    Broad(&'static [SockFilter]),
}

impl Program {
    /// The instructions to attach.
    pub fn instructions(&self) -> &[SockFilter] {
        match self {
            Program::Targeted(p) => p,
            Program::Broad(p) => p,
        }
    }
}

/// Accepts ARP requests (as [`ARP_REQUESTS`]) whose target address is one of `targets`.
/// About 1.8 instructions per address, so up to about 2,150 addresses fit in one program; beyond
/// that the result is [`Program::Broad`]. A lookup runs about 2 log2(n) instructions.
pub fn arp_requests_for(targets: impl IntoIterator<Item = std::net::Ipv4Addr>) -> Program {
    let header = [
        load_half(ETHERTYPE),
        jump_if_eq(0x0806, 1),
        ret(DROP),
        load_half(ARP_OPCODE),
        jump_if_eq(1, 1),
        ret(DROP),
        load_word(ARP_TARGET_IP),
    ];
    targeted(&header, targets.into_iter().map(u32::from), ARP_REQUESTS)
}

/// Accepts neighbour solicitations (as [`NEIGHBOR_SOLICITATIONS`]) whose target address ends in
/// the last 32 bits of one of `targets`. Only those bits are compared (a program that compares
/// 128 bits would be four times the size): a solicitation for another address with the same
/// last 32 bits passes, and the responder, which compares the whole address, ignores it.
pub fn neighbor_solicitations_for(
    targets: impl IntoIterator<Item = std::net::Ipv6Addr>,
) -> Program {
    let header = [
        load_half(ETHERTYPE),
        jump_if_eq(0x86dd, 1),
        ret(DROP),
        load_byte(IPV6_NEXT_HEADER),
        jump_if_eq(58, 1),
        ret(DROP),
        load_byte(ICMPV6_TYPE),
        jump_if_eq(135, 1),
        ret(DROP),
        load_word(NS_TARGET_LOW_WORD),
    ];
    targeted(
        &header,
        targets
            .into_iter()
            .map(|ip| (u128::from(ip) & 0xffff_ffff) as u32),
        NEIGHBOR_SOLICITATIONS,
    )
}

/// `header` (which leaves the key in the accumulator), then a search of the sorted `keys`.
fn targeted(
    header: &[SockFilter],
    keys: impl Iterator<Item = u32>,
    broad: &'static [SockFilter],
) -> Program {
    let keys: Vec<u32> = keys
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .collect();
    if keys.is_empty() {
        return Program::Targeted(vec![ret(DROP)]);
    }
    let mut program = header.to_vec();
    search(&keys, &mut program);
    if program.len() > MAX_INSTRUCTIONS {
        return Program::Broad(broad);
    }
    Program::Targeted(program)
}

/// Keys a leaf compares one by one; above it the search splits in two.
const LEAF_KEYS: usize = 4;

/// Appends a binary search for the accumulator among the sorted, distinct `keys` that returns
/// [`ACCEPT`] on a match and [`DROP`] otherwise. Every path ends in its own `ret`, so no jump
/// crosses more than a leaf, except a split's jump over its lower half, which becomes an
/// unconditional 32-bit jump when the half is longer than a conditional jump reaches (255).
fn search(keys: &[u32], out: &mut Vec<SockFilter>) {
    if keys.len() <= LEAF_KEYS {
        let n = keys.len();
        for (i, key) in keys.iter().enumerate() {
            // From compare i, the ACCEPT after the DROP is n - i instructions ahead.
            out.push(jump_if_eq(*key, (n - i) as u8));
        }
        out.push(ret(DROP));
        out.push(ret(ACCEPT));
        return;
    }
    let (lower, upper) = keys.split_at(keys.len() / 2);
    let mut lower_code = Vec::new();
    search(lower, &mut lower_code);
    match u8::try_from(lower_code.len()) {
        Ok(skip) => out.push(jump_if_at_least(upper[0], skip, 0)),
        Err(_) => {
            // A >= upper[0]: fall into the long jump over the lower half; else skip it.
            out.push(jump_if_at_least(upper[0], 0, 1));
            out.push(jump_always(lower_code.len() as u32));
        }
    }
    out.extend(lower_code);
    search(upper, out);
}
