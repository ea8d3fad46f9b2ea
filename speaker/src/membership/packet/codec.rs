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
/// Bytes of a Report's fixed fields after the sender's name: verdict, subject boot id, subject
/// clock, subject name length.
const REPORT_FIXED_LEN: usize = 1 + 8 + 8 + 1;
/// Longest datagram (a Report with two names of the longest length).
pub const MAX_LEN: usize = HEADER_LEN + MAX_NAME_LEN + REPORT_FIXED_LEN + MAX_NAME_LEN + TAG_LEN;

/// What a message says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The sender is running.
    Alive,
    /// The sender is stopping: count it dead now.
    Leave,
    /// The receiver is suspected: answer with an Alive to the sender at once.
    Probe,
    /// The sender (re)starts, or refutes a report of its death: count it live, and tell it
    /// which of your watched peers you see dead.
    Join,
    /// What the sender, one of a peer's watchers, concludes about that peer ([`Report`]).
    Report,
}

impl Kind {
    fn to_wire(self) -> u8 {
        match self {
            Kind::Alive => 1,
            Kind::Leave => 2,
            Kind::Probe => 3,
            Kind::Join => 4,
            Kind::Report => 5,
        }
    }

    fn from_wire(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Alive),
            2 => Some(Kind::Leave),
            3 => Some(Kind::Probe),
            4 => Some(Kind::Join),
            5 => Some(Kind::Report),
            _ => None,
        }
    }
}

/// A watcher's verdict on one peer it watches (the body of a [`Kind::Report`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The peer reported on.
    pub subject: String,
    /// Dead (silent, ended, never heard) or live again.
    pub dead: bool,
    /// The subject's boot id last heard by the watcher (0: never heard).
    pub boot_id: u64,
    /// The subject's `sent_at` in the last packet the watcher accepted from it (0: never
    /// heard): the subject's own clock, so reports and the subject's own packets are ordered
    /// without comparing clocks of different nodes.
    pub clock_ms: u64,
}

/// A decoded, authenticated message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// What the message says.
    pub kind: Kind,
    /// Random per sender process start.
    pub boot_id: u64,
    /// Per sender process, increasing.
    pub seq: u64,
    /// Sender's wall clock, ms since the Unix epoch.
    pub sent_at_ms: u64,
    /// Sender's node name.
    pub node: String,
    /// The verdict, present exactly when `kind` is [`Kind::Report`].
    pub report: Option<Report>,
}

/// Whether a node name fits the wire format.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
}

impl Packet {
    /// The signed datagram. `None` if a name does not fit (see [`valid_name`]) or `report` is
    /// not present exactly for [`Kind::Report`].
    pub fn encode(&self, key: &hmac::Key) -> Option<Vec<u8>> {
        if !valid_name(&self.node) || (self.kind == Kind::Report) != self.report.is_some() {
            return None;
        }
        let mut buf = Vec::with_capacity(MAX_LEN);
        buf.extend_from_slice(&MAGIC);
        buf.push(VERSION);
        buf.push(self.kind.to_wire());
        buf.extend_from_slice(&self.boot_id.to_be_bytes());
        buf.extend_from_slice(&self.seq.to_be_bytes());
        buf.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        buf.push(u8::try_from(self.node.len()).ok()?);
        buf.extend_from_slice(self.node.as_bytes());
        if let Some(report) = &self.report {
            if !valid_name(&report.subject) {
                return None;
            }
            buf.push(if report.dead { 1 } else { 2 });
            buf.extend_from_slice(&report.boot_id.to_be_bytes());
            buf.extend_from_slice(&report.clock_ms.to_be_bytes());
            buf.push(u8::try_from(report.subject.len()).ok()?);
            buf.extend_from_slice(report.subject.as_bytes());
        }
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

        let (header, rest) = body.split_at(HEADER_LEN);
        if header[..4] != MAGIC || header[4] != VERSION {
            return Err(Rejection::Malformed);
        }
        let kind = Kind::from_wire(header[5]).ok_or(Rejection::Malformed)?;
        let name_len = usize::from(header[30]);
        if name_len == 0 {
            return Err(Rejection::Malformed);
        }
        let (name, trailer) = match kind {
            Kind::Report if name_len < rest.len() => rest.split_at(name_len),
            Kind::Report => return Err(Rejection::Malformed),
            _ => (rest, &[][..]),
        };
        if name_len != name.len() {
            return Err(Rejection::Malformed);
        }
        let report = match kind {
            Kind::Report => Some(decode_report(trailer)?),
            _ => None,
        };
        Ok(Packet {
            kind,
            boot_id: be_u64(&header[6..14]),
            seq: be_u64(&header[14..22]),
            sent_at_ms: be_u64(&header[22..30]),
            node: utf8(name)?,
            report,
        })
    }
}

/// A Report's fields after the sender's name.
fn decode_report(trailer: &[u8]) -> Result<Report, Rejection> {
    if trailer.len() <= REPORT_FIXED_LEN {
        return Err(Rejection::Malformed);
    }
    let (fixed, subject) = trailer.split_at(REPORT_FIXED_LEN);
    let dead = match fixed[0] {
        1 => true,
        2 => false,
        _ => return Err(Rejection::Malformed),
    };
    if usize::from(fixed[17]) != subject.len() {
        return Err(Rejection::Malformed);
    }
    Ok(Report {
        subject: utf8(subject)?,
        dead,
        boot_id: be_u64(&fixed[1..9]),
        clock_ms: be_u64(&fixed[9..17]),
    })
}

/// Eight bytes, big-endian (callers pass exactly eight).
fn be_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    u64::from_be_bytes(b)
}

fn utf8(bytes: &[u8]) -> Result<String, Rejection> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| Rejection::Malformed)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn round_trip() {
        for kind in [Kind::Alive, Kind::Leave, Kind::Probe, Kind::Join] {
            for node in ["n", "node-b", &"x".repeat(MAX_NAME_LEN), "nœud-ü"] {
                let p = Packet {
                    kind,
                    boot_id: u64::MAX,
                    seq: 42,
                    sent_at_ms: NOW,
                    node: node.to_string(),
                    report: None,
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
            report: None,
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
        let cases: Vec<(&str, Change)> = vec![
            ("magic", Box::new(|b| b[0] = b'X')),
            ("version 0", Box::new(|b| b[4] = 0)),
            ("version 2", Box::new(|b| b[4] = 2)),
            ("kind 0", Box::new(|b| b[5] = 0)),
            ("kind 6", Box::new(|b| b[5] = 6)),
            ("a Report without its verdict", Box::new(|b| b[5] = 5)),
            ("name length too long", Box::new(|b| b[30] = 7)),
            ("name length too short", Box::new(|b| b[30] = 5)),
            ("name length zero", Box::new(|b| b[30] = 0)),
            ("name not UTF-8", Box::new(|b| b[31] = 0xff)),
        ];
        each_is_malformed(&good, cases);
    }

    /// A change to a datagram's body.
    type Change = Box<dyn Fn(&mut Vec<u8>)>;

    /// Each change of `good` (a well-formed body, checked too) decodes as malformed.
    fn each_is_malformed(good: &[u8], cases: Vec<(&str, Change)>) {
        for (what, change) in cases {
            let mut body = good.to_vec();
            change(&mut body);
            assert_eq!(
                Packet::decode(&signed(&body), &key()),
                Err(Rejection::Malformed),
                "{what}"
            );
        }
        assert!(Packet::decode(&signed(good), &key()).is_ok());
    }

    fn report(subject: &str, dead: bool) -> Packet {
        Packet {
            kind: Kind::Report,
            report: Some(Report {
                subject: subject.to_string(),
                dead,
                boot_id: 0x1111_2222_3333_4444,
                clock_ms: NOW - 250,
            }),
            ..mk_packet("node-b", 3, NOW)
        }
    }

    #[test]
    fn reports_round_trip() {
        for dead in [true, false] {
            for subject in ["c", "node-c", &"y".repeat(MAX_NAME_LEN), "nœud-ü"] {
                let p = report(subject, dead);
                let buf = p.encode(&key()).unwrap();
                let len = HEADER_LEN + "node-b".len() + REPORT_FIXED_LEN + subject.len();
                assert_eq!(buf.len(), len + TAG_LEN);
                assert_eq!(Packet::decode(&buf, &key()), Ok(p));
            }
        }
        let longest = Packet {
            node: "x".repeat(MAX_NAME_LEN),
            ..report(&"y".repeat(MAX_NAME_LEN), true)
        };
        assert_eq!(longest.encode(&key()).unwrap().len(), MAX_LEN);
    }

    #[test]
    fn report_golden_trailer() {
        let buf = report("cd", false).encode(&key()).unwrap();
        let trailer = &buf[HEADER_LEN + "node-b".len()..buf.len() - TAG_LEN];
        let mut expect = vec![2];
        expect.extend_from_slice(&0x1111_2222_3333_4444u64.to_be_bytes());
        expect.extend_from_slice(&(NOW - 250).to_be_bytes());
        expect.extend_from_slice(&[2, b'c', b'd']);
        assert_eq!(trailer, &expect[..]);
    }

    #[test]
    fn a_report_is_present_exactly_for_its_kind() {
        let mut alive_with_report = report("node-c", true);
        alive_with_report.kind = Kind::Alive;
        assert_eq!(alive_with_report.encode(&key()), None);
        let mut report_without = report("node-c", true);
        report_without.report = None;
        assert_eq!(report_without.encode(&key()), None);
        assert_eq!(report("", true).encode(&key()), None);
        let long = "y".repeat(MAX_NAME_LEN + 1);
        assert_eq!(report(&long, true).encode(&key()), None);
    }

    #[test]
    fn signed_but_malformed_reports_are_malformed() {
        let good = body_of(&report("node-c", true));
        let at = HEADER_LEN + "node-b".len();
        let cases: Vec<(&str, Change)> = vec![
            ("verdict 0", Box::new(move |b| b[at] = 0)),
            ("verdict 3", Box::new(move |b| b[at] = 3)),
            ("subject length too long", Box::new(move |b| b[at + 17] = 7)),
            (
                "subject length too short",
                Box::new(move |b| b[at + 17] = 5),
            ),
            ("subject not UTF-8", Box::new(move |b| b[at + 18] = 0xff)),
            ("no subject", Box::new(move |b| b.truncate(at + 17))),
            ("no trailer", Box::new(move |b| b.truncate(at))),
            ("sender name swallows the trailer", Box::new(|b| b[30] = 30)),
            ("sender name length zero", Box::new(|b| b[30] = 0)),
            ("a trailer on an Alive", Box::new(|b| b[5] = 1)),
        ];
        each_is_malformed(&good, cases);
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
