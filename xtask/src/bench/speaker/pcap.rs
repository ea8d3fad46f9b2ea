//! Reads the ARP frames of a classic pcap file (what `tcpdump -w` writes), with their capture
//! timestamps, which tcpdump's `host` time stamp type takes from `CLOCK_REALTIME`.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// One captured ARP frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArpFrame {
    /// Capture time, microseconds since the epoch.
    pub at_us: u64,
    /// Ethernet source address, `aa:bb:...`.
    pub eth_src: String,
    /// ARP opcode (1 request, 2 reply).
    pub op: u16,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl ArpFrame {
    /// A gratuitous ARP for `ip`: sender and target address are both `ip` (either opcode).
    pub fn is_gratuitous_for(&self, ip: Ipv4Addr) -> bool {
        self.sender_ip == ip && self.target_ip == ip
    }
}

/// The ARP frames in the pcap file at `path` (other frames are skipped; a frame cut short at the
/// end of the file, as a killed tcpdump may leave, ends the list).
pub fn arp_frames(path: &Path) -> Result<Vec<ArpFrame>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("parsing {}", path.display()))
}

fn parse(bytes: &[u8]) -> Result<Vec<ArpFrame>> {
    if bytes.len() < 24 {
        bail!("{} bytes: no pcap header", bytes.len());
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into()?);
    let (little, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        other => bail!("magic {other:#x}: not a pcap file"),
    };
    let u32_at = |b: &[u8], at: usize| -> u32 {
        let raw: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
        if little {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        }
    };
    let link_type = u32_at(bytes, 20);
    if link_type != 1 {
        bail!("link type {link_type}: only Ethernet captures are read");
    }
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let (sec, frac, len) = (
            u64::from(u32_at(bytes, at)),
            u64::from(u32_at(bytes, at + 4)),
            u32_at(bytes, at + 8) as usize,
        );
        let data = at + 16;
        if data + len > bytes.len() {
            break;
        }
        let frame = &bytes[data..data + len];
        at = data + len;
        let us = sec * 1_000_000 + if nanos { frac / 1000 } else { frac };
        if frame.len() < 42 || frame[12..14] != [0x08, 0x06] {
            continue;
        }
        let ip = |o: usize| Ipv4Addr::new(frame[o], frame[o + 1], frame[o + 2], frame[o + 3]);
        frames.push(ArpFrame {
            at_us: us,
            eth_src: frame[6..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
            op: u16::from_be_bytes([frame[20], frame[21]]),
            sender_ip: ip(28),
            target_ip: ip(38),
        });
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sec: u32, usec: u32, frame: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        for v in [sec, usec, frame.len() as u32, frame.len() as u32] {
            r.extend_from_slice(&v.to_le_bytes());
        }
        r.extend_from_slice(frame);
        r
    }

    #[test]
    fn gratuitous_arps_are_read_with_their_microsecond_stamps() {
        // Global header: magic, version 2.4, zone and sigfigs, snaplen, Ethernet.
        let mut file = Vec::new();
        file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        file.extend_from_slice(&2u16.to_le_bytes());
        file.extend_from_slice(&4u16.to_le_bytes());
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&262_144u32.to_le_bytes());
        file.extend_from_slice(&1u32.to_le_bytes());
        let mut garp = vec![0xff; 6];
        garp.extend_from_slice(&[2, 0xfe, 0, 0, 0, 2, 0x08, 0x06]);
        garp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        garp.extend_from_slice(&[2, 0xfe, 0, 0, 0, 2, 198, 51, 100, 200]);
        garp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 198, 51, 100, 200]);
        let mut ipv6 = garp.clone();
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        file.extend(record(1_700_000_000, 123_456, &ipv6));
        file.extend(record(1_700_000_001, 5, &garp));
        file.extend_from_slice(&[1, 2, 3]); // a record cut short
        let frames = parse(&file).unwrap();
        assert_eq!(frames.len(), 1);
        let f = &frames[0];
        assert_eq!(f.at_us, 1_700_000_001_000_005);
        assert_eq!(f.eth_src, "02:fe:00:00:00:02");
        assert_eq!(f.op, 1);
        assert!(f.is_gratuitous_for(Ipv4Addr::new(198, 51, 100, 200)));
        assert!(!f.is_gratuitous_for(Ipv4Addr::new(198, 51, 100, 201)));
        assert!(parse(&[0; 10]).is_err());
    }
}
