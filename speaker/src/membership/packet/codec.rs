//! The membership datagram codec: a [`Packet`] to its signed bytes and back (the layout is in
//! the [module docs](super)). The HMAC tag is part of the datagram, so decoding authenticates
//! before it interprets any field. Pure.

use ring::hmac;

use super::Rejection;

/// First bytes of every membership datagram.
pub const MAGIC: [u8; 4] = *b"FLB1";
/// Wire format version.
pub const VERSION: u8 = 1;
/// Longest node name (a DNS subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Bytes before the node name.
const HEADER_LEN: usize = 31;
/// HMAC-SHA256 tag length.
pub(super) const TAG_LEN: usize = 32;
/// Shortest datagram: a one-byte name.
pub const MIN_LEN: usize = HEADER_LEN + 1 + TAG_LEN;
/// Longest datagram.
pub const MAX_LEN: usize = HEADER_LEN + MAX_NAME_LEN + TAG_LEN;

/// What a message says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The sender is running.
    Alive,
    /// The sender is stopping: count it dead now.
    Leave,
    /// The receiver is suspected: answer with an Alive to the sender at once.
    Probe,
}

impl Kind {
    fn to_wire(self) -> u8 {
        match self {
            Kind::Alive => 1,
            Kind::Leave => 2,
            Kind::Probe => 3,
        }
    }

    fn from_wire(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Alive),
            2 => Some(Kind::Leave),
            3 => Some(Kind::Probe),
            _ => None,
        }
    }
}

/// A decoded, authenticated message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Alive or Leave.
    pub kind: Kind,
    /// Random per sender process start.
    pub boot_id: u64,
    /// Per sender process, increasing.
    pub seq: u64,
    /// Sender's wall clock, ms since the Unix epoch.
    pub sent_at_ms: u64,
    /// Sender's node name.
    pub node: String,
}

/// Whether a node name fits the wire format.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
}

impl Packet {
    /// The signed datagram. `None` if the node name does not fit (see [`valid_name`]).
    pub fn encode(&self, key: &hmac::Key) -> Option<Vec<u8>> {
        if !valid_name(&self.node) {
            return None;
        }
        let mut buf = Vec::with_capacity(HEADER_LEN + self.node.len() + TAG_LEN);
        buf.extend_from_slice(&MAGIC);
        buf.push(VERSION);
        buf.push(self.kind.to_wire());
        buf.extend_from_slice(&self.boot_id.to_be_bytes());
        buf.extend_from_slice(&self.seq.to_be_bytes());
        buf.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        buf.push(u8::try_from(self.node.len()).ok()?);
        buf.extend_from_slice(self.node.as_bytes());
        let tag = hmac::sign(key, &buf);
        buf.extend_from_slice(tag.as_ref());
        Some(buf)
    }

    /// Authenticates and parses a datagram (checks 1 to 3 of the module docs). Never panics.
    pub fn decode(buf: &[u8], key: &hmac::Key) -> Result<Packet, Rejection> {
        if !(MIN_LEN..=MAX_LEN).contains(&buf.len()) {
            return Err(Rejection::Malformed);
        }
        let (body, tag) = buf.split_at(buf.len() - TAG_LEN);
        hmac::verify(key, body, tag).map_err(|_| Rejection::BadMac)?;

        let (header, name) = body.split_at(HEADER_LEN);
        let field = |at: usize| -> u64 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_be_bytes(b)
        };
        if header[..4] != MAGIC || header[4] != VERSION {
            return Err(Rejection::Malformed);
        }
        let kind = Kind::from_wire(header[5]).ok_or(Rejection::Malformed)?;
        if usize::from(header[30]) != name.len() {
            return Err(Rejection::Malformed);
        }
        let node = std::str::from_utf8(name).map_err(|_| Rejection::Malformed)?;
        Ok(Packet {
            kind,
            boot_id: field(6),
            seq: field(14),
            sent_at_ms: field(22),
            node: node.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn round_trip() {
        for kind in [Kind::Alive, Kind::Leave, Kind::Probe] {
            for node in ["n", "node-b", &"x".repeat(MAX_NAME_LEN), "nœud-ü"] {
                let p = Packet {
                    kind,
                    boot_id: u64::MAX,
                    seq: 42,
                    sent_at_ms: NOW,
                    node: node.to_string(),
                };
                let buf = p.encode(&key()).unwrap();
                assert_eq!(buf.len(), HEADER_LEN + node.len() + TAG_LEN);
                assert_eq!(Packet::decode(&buf, &key()), Ok(p));
            }
        }
    }

    #[test]
    fn golden_bytes() {
        let p = Packet {
            kind: Kind::Leave,
            boot_id: 0x0102_0304_0506_0708,
            seq: 9,
            sent_at_ms: 0x0000_018b_cfe5_6800,
            node: "ab".to_string(),
        };
        let buf = p.encode(&key()).unwrap();
        let mut expect = b"FLB1".to_vec();
        expect.extend_from_slice(&[1, 2]);
        expect.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        expect.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9]);
        expect.extend_from_slice(&[0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00]);
        expect.extend_from_slice(&[2, b'a', b'b']);
        assert_eq!(&buf[..buf.len() - TAG_LEN], &expect[..]);
        assert_eq!(
            &buf[buf.len() - TAG_LEN..],
            hmac::sign(&key(), &expect).as_ref()
        );
        assert_eq!(buf.len(), 65);
    }

    #[test]
    fn names_that_do_not_fit_are_not_encoded() {
        assert_eq!(mk_packet("", 1, NOW).encode(&key()), None);
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(mk_packet(&long, 1, NOW).encode(&key()), None);
        assert!(!valid_name(""));
        assert!(!valid_name(&long));
        assert!(valid_name("node-a"));
    }

    #[test]
    fn another_key_is_bad_mac() {
        let buf = mk_packet("node-b", 1, NOW).encode(&other_key()).unwrap();
        assert_eq!(Packet::decode(&buf, &key()), Err(Rejection::BadMac));
    }

    #[test]
    fn any_altered_byte_is_bad_mac() {
        let buf = mk_packet("node-b", 7, NOW).encode(&key()).unwrap();
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(
                    Packet::decode(&bad, &key()),
                    Err(Rejection::BadMac),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn truncated_or_extended_datagrams_are_rejected() {
        let buf = mk_packet("node-b", 7, NOW).encode(&key()).unwrap();
        for len in 0..buf.len() {
            let r = Packet::decode(&buf[..len], &key());
            let expect = if len < MIN_LEN {
                Rejection::Malformed
            } else {
                Rejection::BadMac
            };
            assert_eq!(r, Err(expect), "length {len}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(Packet::decode(&longer, &key()), Err(Rejection::BadMac));
        assert_eq!(
            Packet::decode(&vec![0; MAX_LEN + 1], &key()),
            Err(Rejection::Malformed)
        );
    }

    #[test]
    fn signed_but_malformed_fields_are_malformed() {
        let good = body_of(&mk_packet("node-b", 1, NOW));
        type Change = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Change)> = vec![
            ("magic", Box::new(|b| b[0] = b'X')),
            ("version 0", Box::new(|b| b[4] = 0)),
            ("version 2", Box::new(|b| b[4] = 2)),
            ("kind 0", Box::new(|b| b[5] = 0)),
            ("kind 4", Box::new(|b| b[5] = 4)),
            ("name length too long", Box::new(|b| b[30] = 7)),
            ("name length too short", Box::new(|b| b[30] = 5)),
            ("name length zero", Box::new(|b| b[30] = 0)),
            ("name not UTF-8", Box::new(|b| b[31] = 0xff)),
        ];
        for (what, change) in cases {
            let mut body = good.clone();
            change(&mut body);
            assert_eq!(
                Packet::decode(&signed(&body), &key()),
                Err(Rejection::Malformed),
                "{what}"
            );
        }
        assert!(Packet::decode(&signed(&good), &key()).is_ok());
    }

    #[test]
    fn random_bytes_never_panic_nor_pass() {
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = rng.usize(..MAX_LEN + 40);
            let buf = random_bytes(&mut rng, len);
            assert!(Packet::decode(&buf, &key()).is_err());
        }
    }
}
