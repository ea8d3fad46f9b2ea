//! Authentication beyond the tag: the [`Signer`] stamps this speaker's messages (boot id,
//! increasing `seq`, non-decreasing `sent_at`), the [`Verifier`] runs the checks after decoding
//! (known peer, clock skew) and keeps the replay window, the last `(sent_at, seq)` accepted per
//! sender. Pure: the clock is passed in.

use std::collections::HashMap;
use std::time::Duration;

use ring::hmac;

use super::Rejection;
use super::codec::{Kind, Packet, Report};

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
        self.stamp(kind, None, now_ms)
    }

    /// The next signed [`Kind::Report`] carrying `report`. `None` if a name does not fit.
    pub fn sign_report(&mut self, report: Report, now_ms: u64) -> Option<Vec<u8>> {
        self.stamp(Kind::Report, Some(report), now_ms)
    }

    /// The boot id stamped on every message.
    pub fn boot_id(&self) -> u64 {
        self.boot_id
    }

    /// This speaker's clock as its next message would carry it (never behind the last one).
    pub fn clock(&self, now_ms: u64) -> u64 {
        self.last_sent_at_ms.max(now_ms)
    }

    fn stamp(&mut self, kind: Kind, report: Option<Report>, now_ms: u64) -> Option<Vec<u8>> {
        self.seq = self.seq.wrapping_add(1);
        self.last_sent_at_ms = self.last_sent_at_ms.max(now_ms);
        Packet {
            kind,
            boot_id: self.boot_id,
            seq: self.seq,
            sent_at_ms: self.last_sent_at_ms,
            node: self.node.clone(),
            report,
        }
        .encode(&self.key)
    }

    /// Signs with `key` from now on (a key rotation, see `membership/keys.rs`).
    pub fn set_key(&mut self, key: hmac::Key) {
        self.key = key;
    }
}

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
    /// Every key a datagram may be signed with; the usual one first.
    keys: Vec<hmac::Key>,
    max_skew_ms: u64,
    last: HashMap<String, Last>,
}

impl Verifier {
    /// A verifier with the shared `key`.
    pub fn new(key: hmac::Key, max_clock_skew: Duration) -> Verifier {
        Verifier {
            keys: vec![key],
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
        let packet = self.decode(buf)?;
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

    /// Accepts datagrams signed with any of `keys` from now on (a key rotation); an empty list
    /// leaves the keys as they were.
    pub fn set_keys(&mut self, keys: Vec<hmac::Key>) {
        if !keys.is_empty() {
            self.keys = keys;
        }
    }

    /// The datagram decoded with the first key whose tag verifies.
    fn decode(&self, buf: &[u8]) -> Result<Packet, Rejection> {
        let mut result = Err(Rejection::BadMac);
        for key in &self.keys {
            result = Packet::decode(buf, key);
            if !matches!(result, Err(Rejection::BadMac)) {
                break;
            }
        }
        result
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
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn verifier_accepts_a_peer() {
        let mut v = Verifier::new(key(), SKEW);
        let p = mk_packet("node-b", 1, NOW);
        let got = v.check(&p.encode(&key()).unwrap(), NOW, peers_bc).unwrap();
        assert_eq!(got.packet, p);
        assert!(!got.restarted);
    }

    #[test]
    fn during_a_rotation_both_keys_verify_and_the_replay_window_spans_them() {
        let mut v = Verifier::new(key(), SKEW);
        v.set_keys(vec![other_key(), key()]);
        let old = mk_packet("node-b", 1, NOW).encode(&key()).unwrap();
        let new = mk_packet("node-b", 2, NOW).encode(&other_key()).unwrap();
        assert!(v.check(&old, NOW, peers_bc).is_ok());
        assert!(v.check(&new, NOW, peers_bc).is_ok());
        // A replay under either key is still a replay.
        assert_eq!(v.check(&old, NOW, peers_bc), Err(Rejection::Replayed));
        // Once the old key is retired, its datagrams fail the tag.
        v.set_keys(vec![other_key()]);
        let late_old = mk_packet("node-b", 3, NOW).encode(&key()).unwrap();
        assert_eq!(v.check(&late_old, NOW, peers_bc), Err(Rejection::BadMac));
        v.set_keys(Vec::new());
        let next = mk_packet("node-b", 4, NOW).encode(&other_key()).unwrap();
        assert!(
            v.check(&next, NOW, peers_bc).is_ok(),
            "an empty list changes nothing"
        );
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
}
