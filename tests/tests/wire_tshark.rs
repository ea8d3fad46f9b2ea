//! The speaker's wire codec against an independent decoder: every frame kind the speaker sends
//! is written to a classic pcap file and read back with `tshark`, which must decode the ARP
//! fields, neighbour advertisement flags and options as intended, find the ICMPv6 checksum
//! good, and report nothing malformed and no expert warning or error.
//!
//! Skips (with a message) only when `tshark` is not on PATH; `cargo xtask test` installs it.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;

use ferrolb_speaker::wire::{
    ArpRequest, GratuitousKind, Mac, NeighborSolicitation, arp_reply, gratuitous_arp,
    neighbor_advertisement, solicited_node_address, unsolicited_advertisement,
};

const OUR_MAC: Mac = Mac([0x02, 0xfe, 0x00, 0x00, 0x00, 0x01]);
const CLIENT_MAC: Mac = Mac([0x02, 0xfe, 0x00, 0x00, 0x00, 0xaa]);
const OTHER_MAC: Mac = Mac([0x02, 0xfe, 0x00, 0x00, 0x00, 0xbb]);
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xc8);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x64);

/// The fields asked of tshark, in column order.
const FIELDS: &[&str] = &[
    "frame.number",
    "eth.dst",
    "eth.src",
    "eth.type",
    "arp.opcode",
    "arp.src.hw_mac",
    "arp.src.proto_ipv4",
    "arp.dst.hw_mac",
    "arp.dst.proto_ipv4",
    "arp.isgratuitous",
    "ipv6.hlim",
    "ipv6.src",
    "ipv6.dst",
    "icmpv6.type",
    "icmpv6.code",
    "icmpv6.checksum.status",
    "icmpv6.nd.na.flag.r",
    "icmpv6.nd.na.flag.s",
    "icmpv6.nd.na.flag.o",
    "icmpv6.nd.na.target_address",
    "icmpv6.opt.type",
    "icmpv6.opt.linkaddr",
    "_ws.expert.severity",
    "_ws.expert.message",
    "_ws.malformed",
];

/// Expert severities from `epan/proto.h`: `PI_WARN` and above mean something is wrong.
const PI_WARN: u32 = 0x0060_0000;

/// One frame and what tshark must say about it.
struct Case {
    name: &'static str,
    frame: Vec<u8>,
    expect: Vec<(&'static str, String)>,
}

fn arp_case(
    name: &'static str,
    frame: [u8; 42],
    eth_dst: Mac,
    opcode: u16,
    sender: (Mac, Ipv4Addr),
    target: (Mac, Ipv4Addr),
    gratuitous: bool,
) -> Case {
    Case {
        name,
        frame: frame.to_vec(),
        expect: vec![
            ("eth.dst", eth_dst.to_string()),
            ("eth.src", OUR_MAC.to_string()),
            ("eth.type", "0x0806".into()),
            ("arp.opcode", opcode.to_string()),
            ("arp.src.hw_mac", sender.0.to_string()),
            ("arp.src.proto_ipv4", sender.1.to_string()),
            ("arp.dst.hw_mac", target.0.to_string()),
            ("arp.dst.proto_ipv4", target.1.to_string()),
            ("arp.isgratuitous", bool_field(gratuitous)),
        ],
    }
}

fn na_case(
    name: &'static str,
    frame: Vec<u8>,
    eth_dst: Mac,
    ip_dst: Ipv6Addr,
    solicited: bool,
) -> Case {
    Case {
        name,
        frame,
        expect: vec![
            ("eth.dst", eth_dst.to_string()),
            ("eth.src", OUR_MAC.to_string()),
            ("eth.type", "0x86dd".into()),
            ("ipv6.hlim", "255".into()),
            ("ipv6.src", VIP6.to_string()),
            ("ipv6.dst", ip_dst.to_string()),
            ("icmpv6.type", "136".into()),
            ("icmpv6.code", "0".into()),
            ("icmpv6.checksum.status", "good".into()),
            ("icmpv6.nd.na.flag.r", bool_field(false)),
            ("icmpv6.nd.na.flag.s", bool_field(solicited)),
            ("icmpv6.nd.na.flag.o", bool_field(true)),
            ("icmpv6.nd.na.target_address", VIP6.to_string()),
            ("icmpv6.opt.type", "2".into()),
            ("icmpv6.opt.linkaddr", OUR_MAC.to_string()),
        ],
    }
}

/// How an expected boolean is written in [`Case::expect`]; [`normalize`] maps tshark's
/// spellings (`1`/`0` in 4.0, `True`/`False` in later releases) onto it.
fn bool_field(value: bool) -> String {
    if value { "true" } else { "false" }.into()
}

fn normalize(field: &str, value: &str) -> String {
    let boolean = matches!(
        field,
        "arp.isgratuitous" | "icmpv6.nd.na.flag.r" | "icmpv6.nd.na.flag.s" | "icmpv6.nd.na.flag.o"
    );
    match value {
        "1" | "True" | "TRUE" if boolean => "true".into(),
        "0" | "False" | "FALSE" if boolean => "false".into(),
        // tshark adds arp.isgratuitous only to gratuitous frames.
        "" if field == "arp.isgratuitous" => "false".into(),
        // checksum.status: 1 (or "Good") is PROTO_CHECKSUM_E_GOOD.
        "1" | "Good" if field == "icmpv6.checksum.status" => "good".into(),
        other => other.to_ascii_lowercase(),
    }
}

fn cases() -> Vec<Case> {
    let request = ArpRequest {
        sender_mac: CLIENT_MAC,
        sender_ip: CLIENT4,
        target_ip: VIP4,
    };
    let probe = ArpRequest {
        sender_ip: Ipv4Addr::UNSPECIFIED,
        ..request
    };
    let ns = NeighborSolicitation {
        eth_src: CLIENT_MAC,
        src_ip: CLIENT6,
        dst_ip: solicited_node_address(VIP6),
        target: VIP6,
        source_link_addr: Some(CLIENT_MAC),
    };
    let ns_without_slla = NeighborSolicitation {
        eth_src: OTHER_MAC,
        dst_ip: VIP6,
        source_link_addr: None,
        ..ns
    };
    let dad = NeighborSolicitation {
        src_ip: Ipv6Addr::UNSPECIFIED,
        source_link_addr: None,
        ..ns
    };
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    let all_nodes_mac = Mac([0x33, 0x33, 0, 0, 0, 1]);
    vec![
        arp_case(
            "ARP reply",
            arp_reply(OUR_MAC, VIP4, &request),
            CLIENT_MAC,
            2,
            (OUR_MAC, VIP4),
            (CLIENT_MAC, CLIENT4),
            false,
        ),
        arp_case(
            "ARP reply to a probe",
            arp_reply(OUR_MAC, VIP4, &probe),
            CLIENT_MAC,
            2,
            (OUR_MAC, VIP4),
            (CLIENT_MAC, Ipv4Addr::UNSPECIFIED),
            false,
        ),
        arp_case(
            "gratuitous ARP request",
            gratuitous_arp(OUR_MAC, VIP4, GratuitousKind::Request),
            Mac::BROADCAST,
            1,
            (OUR_MAC, VIP4),
            (Mac([0; 6]), VIP4),
            true,
        ),
        arp_case(
            "gratuitous ARP reply",
            gratuitous_arp(OUR_MAC, VIP4, GratuitousKind::Reply),
            Mac::BROADCAST,
            2,
            (OUR_MAC, VIP4),
            (OUR_MAC, VIP4),
            true,
        ),
        na_case(
            "NA to an NS with a source link-layer address",
            neighbor_advertisement(OUR_MAC, &ns),
            CLIENT_MAC,
            CLIENT6,
            true,
        ),
        na_case(
            "NA to an NS without a source link-layer address",
            neighbor_advertisement(OUR_MAC, &ns_without_slla),
            OTHER_MAC,
            CLIENT6,
            true,
        ),
        na_case(
            "NA to a DAD NS",
            neighbor_advertisement(OUR_MAC, &dad),
            all_nodes_mac,
            all_nodes,
            false,
        ),
        na_case(
            "unsolicited NA",
            unsolicited_advertisement(OUR_MAC, VIP6),
            all_nodes_mac,
            all_nodes,
            false,
        ),
    ]
}

/// Writes `frames` as a classic pcap file (microsecond timestamps, little-endian, linktype 1 =
/// Ethernet), one second apart.
fn write_pcap(path: &Path, frames: &[&[u8]]) {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // magic: microsecond resolution
    bytes.extend_from_slice(&2u16.to_le_bytes()); // version major
    bytes.extend_from_slice(&4u16.to_le_bytes()); // version minor
    bytes.extend_from_slice(&0i32.to_le_bytes()); // thiszone: UTC
    bytes.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    bytes.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
    bytes.extend_from_slice(&1u32.to_le_bytes()); // network: LINKTYPE_ETHERNET
    for (i, frame) in frames.iter().enumerate() {
        let len = u32::try_from(frame.len()).unwrap();
        bytes.extend_from_slice(&u32::try_from(i + 1).unwrap().to_le_bytes()); // ts_sec
        bytes.extend_from_slice(&0u32.to_le_bytes()); // ts_usec
        bytes.extend_from_slice(&len.to_le_bytes()); // incl_len
        bytes.extend_from_slice(&len.to_le_bytes()); // orig_len
        bytes.extend_from_slice(frame);
    }
    std::fs::write(path, bytes).unwrap();
}

/// Runs tshark over `path` and returns one map of field to value per frame.
fn decode(path: &Path) -> Vec<HashMap<&'static str, String>> {
    let mut command = Command::new("tshark");
    command.args(["-n", "-r"]).arg(path);
    command.args(["-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]);
    for field in FIELDS {
        command.args(["-e", field]);
    }
    let output = command.output().expect("running tshark");
    assert!(
        output.status.success(),
        "tshark failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let values: Vec<&str> = line.split('|').collect();
            assert_eq!(values.len(), FIELDS.len(), "tshark row {line:?}");
            FIELDS
                .iter()
                .zip(values)
                .map(|(field, value)| (*field, value.to_owned()))
                .collect()
        })
        .collect()
}

fn tshark_is_installed() -> bool {
    match Command::new("tshark").arg("--version").output() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => panic!("cannot run tshark: {e}"),
    }
}

#[test]
fn tshark_decodes_every_frame_the_speaker_sends_as_intended() {
    if !tshark_is_installed() {
        eprintln!(
            "SKIPPED: tshark is not on PATH; install it (apt-get install tshark, or run \
             `cargo xtask test`, which does) to check the speaker's frames against it"
        );
        return;
    }
    let cases = cases();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("speaker-frames.pcap");
    let frames: Vec<&[u8]> = cases.iter().map(|c| c.frame.as_slice()).collect();
    write_pcap(&pcap, &frames);

    let rows = decode(&pcap);
    assert_eq!(rows.len(), cases.len(), "tshark read {} frames", rows.len());
    let mut problems = Vec::new();
    for (case, row) in cases.iter().zip(&rows) {
        for (field, want) in &case.expect {
            let got = normalize(field, &row[field]);
            if &got != want {
                problems.push(format!(
                    "{}: {field} is {:?}, want {want:?}",
                    case.name, row[field]
                ));
            }
        }
        if !row["_ws.malformed"].is_empty() {
            problems.push(format!("{}: tshark says malformed", case.name));
        }
        let severities = row["_ws.expert.severity"]
            .split(',')
            .filter(|s| !s.is_empty());
        for severity in severities {
            let severity: u32 = severity.parse().expect("numeric expert severity");
            if severity >= PI_WARN {
                problems.push(format!(
                    "{}: expert info {severity:#x}: {}",
                    case.name, row["_ws.expert.message"]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn tshark_flags_a_broken_checksum_so_the_good_verdict_means_something() {
    if !tshark_is_installed() {
        eprintln!("SKIPPED: tshark is not on PATH");
        return;
    }
    let mut frame = unsolicited_advertisement(OUR_MAC, VIP6);
    frame[57] ^= 0x01; // low byte of the ICMPv6 checksum (14 + 40 + 3)
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("broken.pcap");
    write_pcap(&pcap, &[&frame]);
    let rows = decode(&pcap);
    assert_eq!(rows.len(), 1);
    assert_ne!(
        normalize("icmpv6.checksum.status", &rows[0]["icmpv6.checksum.status"]),
        "good"
    );
    assert!(!rows[0]["_ws.expert.severity"].is_empty());
}
