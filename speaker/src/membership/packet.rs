//! Membership wire format, authentication and replay protection. Pure: no sockets, the clock is
//! passed in.
//!
//! # Wire format (version 1)
//! One UDP datagram per message, integers big-endian (network order):
//!
//! ```text
//!  offset  size  field
//!       0     4  magic "FLB1"
//!       4     1  version = 1
//!       5     1  kind: 1 Alive, 2 Leave
//!       6     8  boot id: random, drawn once per process start
//!      14     8  seq: per process, +1 for every message signed
//!      22     8  sent_at: sender's wall clock, milliseconds since the Unix epoch
//!      30     1  n = length of the node name, 1..=253
//!      31     n  node name, UTF-8
//!    31+n    32  HMAC-SHA256(shared key, bytes 0 .. 31+n)
//! ```
//! A datagram is 64 to 316 bytes long.
//!
//! # Checks on receipt, in order (each failure is counted under its metric label)
//! 1. `malformed`: length outside 64..=316.
//! 2. `bad_mac`: the tag does not verify (constant-time, `ring::hmac::verify`). The tag is
//!    checked before any field is interpreted, so a change to any byte is `bad_mac`.
//! 3. `malformed`: wrong magic, version or kind, name length not matching the datagram length,
//!    name not UTF-8. (Only a sender holding the key can get here.)
//! 4. `unknown_peer`: the name is not a current peer.
//! 5. `stale`: `|now - sent_at| > max_clock_skew`.
//! 6. `replayed`: `(sent_at, seq)` not strictly greater than the last accepted from that name.
//!
//! `sent_at` makes the order survive restarts (a new process starts `seq` at 0 again, but later);
//! `seq` orders messages sent within one millisecond. A sender never lets its `sent_at` go
//! backwards, so a wall clock stepped back a little does not make its peers reject it; only the
//! skew check relies on synchronised clocks. The boot id is not needed for ordering; it tells the
//! receiver that a peer restarted (logged). The source address is not checked: the tag is what
//! authenticates a message, and a node may send from another address than its Node's.

use std::collections::HashMap;
use std::time::Duration;

use ring::hmac;

/// First bytes of every membership datagram.
pub const MAGIC: [u8; 4] = *b"FLB1";
/// Wire format version.
pub const VERSION: u8 = 1;
/// Longest node name (a DNS subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Bytes before the node name.
const HEADER_LEN: usize = 31;
/// HMAC-SHA256 tag length.
const TAG_LEN: usize = 32;
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
}

impl Kind {
    fn to_wire(self) -> u8 {
        match self {
            Kind::Alive => 1,
            Kind::Leave => 2,
        }
    }

    fn from_wire(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Alive),
            2 => Some(Kind::Leave),
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

/// Why a datagram was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not a membership datagram of this version.
    #[error("malformed datagram")]
    Malformed,
    /// The HMAC tag does not verify: another key, or the datagram was altered.
    #[error("bad HMAC tag (another membership key, or altered in transit)")]
    BadMac,
    /// The sender's name is not among the current peers.
    #[error("sender is not a known peer")]
    UnknownPeer,
    /// `sent_at` is further from this node's clock than `max_clock_skew`.
    #[error("timestamp outside the allowed clock skew (check NTP on both nodes)")]
    Stale,
    /// Not newer than the last message accepted from that sender.
    #[error("replayed or reordered message")]
    Replayed,
}

impl Rejection {
    /// Value of the `result` label of `ferrolb_speaker_membership_packets_received_total`.
    pub fn metric_label(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::BadMac => "bad_mac",
            Rejection::UnknownPeer => "unknown_peer",
            Rejection::Stale => "stale",
            Rejection::Replayed => "replayed",
        }
    }
}

/// Whether a node name fits the wire format.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
}

// === impl Packet ===

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

// === impl Signer ===

/// Makes this speaker's messages: one boot id, increasing `seq`, non-decreasing `sent_at`.
#[derive(Debug)]
pub struct Signer {
    key: hmac::Key,
    node: String,
    boot_id: u64,
    seq: u64,
    last_sent_at_ms: u64,
}

impl Signer {
    /// A signer for `node` (must satisfy [`valid_name`]).
    pub fn new(key: hmac::Key, node: String, boot_id: u64) -> Signer {
        Signer {
            key,
            node,
            boot_id,
            seq: 0,
            last_sent_at_ms: 0,
        }
    }

    /// The next signed datagram of `kind`, stamped `now_ms` (or the previous stamp if the clock
    /// went backwards). `None` only if the node name does not fit the wire format.
    pub fn sign(&mut self, kind: Kind, now_ms: u64) -> Option<Vec<u8>> {
        self.seq = self.seq.wrapping_add(1);
        self.last_sent_at_ms = self.last_sent_at_ms.max(now_ms);
        Packet {
            kind,
            boot_id: self.boot_id,
            seq: self.seq,
            sent_at_ms: self.last_sent_at_ms,
            node: self.node.clone(),
        }
        .encode(&self.key)
    }
}

// === impl Verifier ===

/// The last message accepted from one sender.
#[derive(Clone, Copy, Debug)]
struct Last {
    sent_at_ms: u64,
    seq: u64,
    boot_id: u64,
}

/// An accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The message.
    pub packet: Packet,
    /// The sender's boot id differs from that of its previous accepted message.
    pub restarted: bool,
}

/// Checks received datagrams and remembers the last accepted message of every sender.
#[derive(Debug)]
pub struct Verifier {
    key: hmac::Key,
    max_skew_ms: u64,
    last: HashMap<String, Last>,
}

impl Verifier {
    /// A verifier with the shared `key`.
    pub fn new(key: hmac::Key, max_clock_skew: Duration) -> Verifier {
        Verifier {
            key,
            max_skew_ms: u64::try_from(max_clock_skew.as_millis()).unwrap_or(u64::MAX),
            last: HashMap::new(),
        }
    }

    /// Runs every check of the module docs on `buf`, received when this node's wall clock read
    /// `now_ms`; `is_peer` says whether a node name is a current peer. Never panics.
    pub fn check(
        &mut self,
        buf: &[u8],
        now_ms: u64,
        is_peer: impl Fn(&str) -> bool,
    ) -> Result<Accepted, Rejection> {
        let packet = Packet::decode(buf, &self.key)?;
        if !is_peer(&packet.node) {
            return Err(Rejection::UnknownPeer);
        }
        if now_ms.abs_diff(packet.sent_at_ms) > self.max_skew_ms {
            return Err(Rejection::Stale);
        }
        let restarted = match self.last.get(&packet.node) {
            Some(last) if (packet.sent_at_ms, packet.seq) <= (last.sent_at_ms, last.seq) => {
                return Err(Rejection::Replayed);
            }
            Some(last) => last.boot_id != packet.boot_id,
            None => false,
        };
        let last = Last {
            sent_at_ms: packet.sent_at_ms,
            seq: packet.seq,
            boot_id: packet.boot_id,
        };
        self.last.insert(packet.node.clone(), last);
        Ok(Accepted { packet, restarted })
    }

    /// Forgets senders that are no longer peers and whose last message is older than the
    /// allowed skew: any replay of their messages is `stale` anyway, so this keeps memory
    /// bounded without opening a replay window.
    pub fn forget(&mut self, now_ms: u64, is_peer: impl Fn(&str) -> bool) {
        let max_skew_ms = self.max_skew_ms;
        self.last.retain(|name, last| {
            is_peer(name) || now_ms.saturating_sub(last.sent_at_ms) <= max_skew_ms
        });
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const SKEW: Duration = Duration::from_secs(10);

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef-test-key")
    }

    fn other_key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, b"fedcba9876543210-test-key")
    }

    fn mk_packet(node: &str, seq: u64, sent_at_ms: u64) -> Packet {
        Packet {
            kind: Kind::Alive,
            boot_id: 0x0123_4567_89ab_cdef,
            seq,
            sent_at_ms,
            node: node.to_string(),
        }
    }

    fn peers_bc(name: &str) -> bool {
        name == "node-b" || name == "node-c"
    }

    /// Seeded xorshift64: deterministic pseudo-random bytes without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn round_trip() {
        for kind in [Kind::Alive, Kind::Leave] {
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

    /// A datagram with a valid tag over `body` (to reach the checks after the tag).
    fn signed(body: &[u8]) -> Vec<u8> {
        let mut buf = body.to_vec();
        buf.extend_from_slice(hmac::sign(&key(), body).as_ref());
        buf
    }

    fn body_of(p: &Packet) -> Vec<u8> {
        let buf = p.encode(&key()).unwrap();
        buf[..buf.len() - TAG_LEN].to_vec()
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
            ("kind 3", Box::new(|b| b[5] = 3)),
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
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = rng.below(MAX_LEN + 40);
            let buf = rng.bytes(len);
            assert!(Packet::decode(&buf, &key()).is_err());
        }
    }

    #[test]
    fn random_signed_bodies_never_panic() {
        // Signed random bodies get past the tag, so the field parsing is exercised too.
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let good = body_of(&mk_packet("node-b", 1, NOW));
        for i in 0..20_000 {
            let body = if i % 2 == 0 {
                let len = rng.below(MAX_LEN);
                rng.bytes(len)
            } else {
                // A valid body with a few random bytes changed: mostly near misses.
                let mut b = good.clone();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(b.len());
                    b[at] = rng.next() as u8;
                }
                b
            };
            if let Ok(p) = Packet::decode(&signed(&body), &key()) {
                assert_eq!(
                    body_of(&p),
                    body,
                    "accepted only if it re-encodes identically"
                );
            }
            let mut v = Verifier::new(key(), SKEW);
            let _ = v.check(&signed(&body), NOW, |_| true);
        }
    }

    #[test]
    fn verifier_accepts_a_peer() {
        let mut v = Verifier::new(key(), SKEW);
        let p = mk_packet("node-b", 1, NOW);
        let got = v.check(&p.encode(&key()).unwrap(), NOW, peers_bc).unwrap();
        assert_eq!(got.packet, p);
        assert!(!got.restarted);
    }

    #[test]
    fn verifier_rejects_unknown_peers() {
        let mut v = Verifier::new(key(), SKEW);
        let buf = mk_packet("node-x", 1, NOW).encode(&key()).unwrap();
        assert_eq!(v.check(&buf, NOW, peers_bc), Err(Rejection::UnknownPeer));
    }

    #[test]
    fn verifier_rejects_bad_mac_before_anything_else() {
        let mut v = Verifier::new(key(), SKEW);
        let buf = mk_packet("node-x", 1, 0).encode(&other_key()).unwrap();
        assert_eq!(v.check(&buf, NOW, peers_bc), Err(Rejection::BadMac));
    }

    #[test]
    fn clock_skew_beyond_the_limit_is_stale() {
        let skew = SKEW.as_millis() as u64;
        let mut v = Verifier::new(key(), SKEW);
        let mut seq = 0;
        let mut check = |sent_at: u64| {
            seq += 1;
            let buf = mk_packet("node-b", seq, sent_at).encode(&key()).unwrap();
            v.check(&buf, NOW, peers_bc).map(|_| ())
        };
        assert_eq!(check(NOW - skew - 1), Err(Rejection::Stale));
        assert_eq!(check(NOW + skew + 1), Err(Rejection::Stale));
        assert_eq!(check(0), Err(Rejection::Stale));
        assert_eq!(check(u64::MAX), Err(Rejection::Stale));
        assert_eq!(check(NOW - skew), Ok(()));
        assert_eq!(check(NOW + skew), Ok(()));
    }

    #[test]
    fn replay_of_an_earlier_packet_is_rejected() {
        let mut v = Verifier::new(key(), SKEW);
        let first = mk_packet("node-b", 1, NOW).encode(&key()).unwrap();
        let second = mk_packet("node-b", 2, NOW).encode(&key()).unwrap();
        assert!(v.check(&first, NOW, peers_bc).is_ok());
        assert_eq!(v.check(&first, NOW, peers_bc), Err(Rejection::Replayed));
        assert!(v.check(&second, NOW, peers_bc).is_ok());
        assert_eq!(v.check(&second, NOW, peers_bc), Err(Rejection::Replayed));
        assert_eq!(v.check(&first, NOW, peers_bc), Err(Rejection::Replayed));
    }

    #[test]
    fn order_is_sent_at_then_seq() {
        let mut v = Verifier::new(key(), SKEW);
        let mut check = |seq: u64, sent_at: u64| {
            let buf = mk_packet("node-b", seq, sent_at).encode(&key()).unwrap();
            v.check(&buf, NOW, peers_bc).map(|_| ())
        };
        assert_eq!(check(10, NOW), Ok(()));
        assert_eq!(check(11, NOW - 1), Err(Rejection::Replayed), "older clock");
        assert_eq!(
            check(9, NOW),
            Err(Rejection::Replayed),
            "same ms, older seq"
        );
        assert_eq!(check(11, NOW), Ok(()), "same ms, newer seq");
        // A restarted sender: seq starts over, its clock is later.
        assert_eq!(check(1, NOW + 1), Ok(()));
    }

    #[test]
    fn senders_are_tracked_separately() {
        let mut v = Verifier::new(key(), SKEW);
        let b = mk_packet("node-b", 5, NOW).encode(&key()).unwrap();
        let c = mk_packet("node-c", 1, NOW - 100).encode(&key()).unwrap();
        assert!(v.check(&b, NOW, peers_bc).is_ok());
        assert!(v.check(&c, NOW, peers_bc).is_ok());
    }

    #[test]
    fn rejected_packets_do_not_advance_the_replay_state() {
        let mut v = Verifier::new(key(), SKEW);
        let later_unknown = mk_packet("node-b", 9, NOW + 5).encode(&key()).unwrap();
        assert_eq!(
            v.check(&later_unknown, NOW, |_| false),
            Err(Rejection::UnknownPeer)
        );
        let p = mk_packet("node-b", 1, NOW).encode(&key()).unwrap();
        assert!(v.check(&p, NOW, peers_bc).is_ok());
    }

    #[test]
    fn a_new_boot_id_is_reported_as_a_restart() {
        let mut v = Verifier::new(key(), SKEW);
        let mut p = mk_packet("node-b", 100, NOW);
        assert!(
            !v.check(&p.encode(&key()).unwrap(), NOW, peers_bc)
                .unwrap()
                .restarted
        );
        p.boot_id ^= 1;
        p.seq = 1;
        p.sent_at_ms += 1;
        assert!(
            v.check(&p.encode(&key()).unwrap(), NOW, peers_bc)
                .unwrap()
                .restarted
        );
    }

    #[test]
    fn forget_keeps_peers_and_recent_senders() {
        let mut v = Verifier::new(key(), SKEW);
        for (node, at) in [("node-b", NOW - 20_000), ("node-c", NOW - 1_000)] {
            let buf = mk_packet(node, 1, at).encode(&key()).unwrap();
            assert!(v.check(&buf, at, peers_bc).is_ok());
        }
        v.forget(NOW, peers_bc);
        assert_eq!(v.remembered(), 2);
        v.forget(NOW, |_| false);
        assert_eq!(v.remembered(), 1, "node-c's last packet is within the skew");
        // Its replay is still caught.
        let replay = mk_packet("node-c", 1, NOW - 1_000).encode(&key()).unwrap();
        assert_eq!(v.check(&replay, NOW, peers_bc), Err(Rejection::Replayed));
        v.forget(NOW + 20_000, |_| false);
        assert_eq!(v.remembered(), 0);
    }

    #[test]
    fn signer_increments_seq_and_never_goes_back_in_time() {
        let mut s = Signer::new(key(), "node-a".to_string(), 77);
        let decode = |buf: Vec<u8>| Packet::decode(&buf, &key()).unwrap();
        let p1 = decode(s.sign(Kind::Alive, NOW).unwrap());
        let p2 = decode(s.sign(Kind::Alive, NOW - 500).unwrap());
        let p3 = decode(s.sign(Kind::Leave, NOW + 1).unwrap());
        assert_eq!((p1.seq, p1.sent_at_ms, p1.boot_id), (1, NOW, 77));
        assert_eq!((p2.seq, p2.sent_at_ms), (2, NOW));
        assert_eq!((p3.seq, p3.sent_at_ms, p3.kind), (3, NOW + 1, Kind::Leave));
        let mut v = Verifier::new(key(), SKEW);
        let is_a = |n: &str| n == "node-a";
        for p in [p1, p2, p3] {
            assert!(v.check(&p.encode(&key()).unwrap(), NOW, is_a).is_ok());
        }
    }

    #[test]
    fn metric_labels() {
        let labels: Vec<_> = [
            Rejection::Malformed,
            Rejection::BadMac,
            Rejection::UnknownPeer,
            Rejection::Stale,
            Rejection::Replayed,
        ]
        .map(Rejection::metric_label)
        .into();
        assert_eq!(
            labels,
            ["malformed", "bad_mac", "unknown_peer", "stale", "replayed"]
        );
    }
}
