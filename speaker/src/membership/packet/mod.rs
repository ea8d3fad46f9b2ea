//! Membership wire format, authentication and replay protection. Pure: no sockets, the clock is
//! passed in. The datagram codec is in `codec.rs`; the signer and the verifier with its replay
//! window in `auth.rs`.
//!
//! # Wire format (version 1)
//! One UDP datagram per message, integers big-endian (network order):
//!
//! ```text
//!  offset  size  field
//!       0     4  magic "FLB1"
//!       4     1  version = 1
//!       5     1  kind: 1 Alive, 2 Leave, 3 Probe (answered by an Alive to the sender),
//!                4 Join (the sender is live: at start, or refuting a report of its death),
//!                5 Report (one observer's verdict on a peer it watches)
//!       6     8  boot id: random, drawn once per process start
//!      14     8  seq: per process, +1 for every message signed
//!      22     8  sent_at: sender's wall clock, milliseconds since the Unix epoch
//!      30     1  n = length of the node name, 1..=253
//!      31     n  node name, UTF-8
//!    31+n        Report only (m = 31+n):
//!    m       1     verdict: 1 dead, 2 alive again
//!    m+1     8     the subject's boot id as last heard by the sender (0: never heard)
//!    m+9     8     the subject's sent_at in that packet (its own clock; 0: never heard; 0
//!                  with a boot id: that process ended, per the lifeline, before any packet
//!                  of it reached the sender)
//!    m+17    1     k = length of the subject's name, 1..=253
//!    m+18    k     subject's name, UTF-8
//!    end    32  HMAC-SHA256(shared key, every byte before the tag)
//! ```
//! A datagram is 64 to 587 bytes long (316 without a Report).
//!
//! # Checks on receipt, in order (each failure is counted under its metric label)
//! 1. `malformed`: length outside 64..=587.
//! 2. `bad_mac`: the tag does not verify (constant-time, `ring::hmac::verify`). The tag is
//!    checked before any field is interpreted, so a change to any byte is `bad_mac`.
//! 3. `malformed`: wrong magic, version or kind, a name length not matching the datagram
//!    length, a name not UTF-8, a Report's verdict not 1 or 2. (Only a sender holding the key
//!    can get here.)
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

mod auth;
mod codec;

pub use auth::{Signer, Verifier};
pub use codec::{Kind, MAX_LEN, MAX_NAME_LEN, Report, valid_name};

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

/// What the codec and verifier tests share.
#[cfg(test)]
mod fixtures {
    use std::time::Duration;

    use ring::hmac;

    use super::codec::{Kind, Packet, TAG_LEN};

    pub const NOW: u64 = 1_700_000_000_000;
    pub const SKEW: Duration = Duration::from_secs(10);

    pub fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef-test-key")
    }

    pub fn other_key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, b"fedcba9876543210-test-key")
    }

    pub fn mk_packet(node: &str, seq: u64, sent_at_ms: u64) -> Packet {
        Packet {
            kind: Kind::Alive,
            boot_id: 0x0123_4567_89ab_cdef,
            seq,
            sent_at_ms,
            node: node.to_string(),
            report: None,
        }
    }

    pub fn peers_bc(name: &str) -> bool {
        name == "node-b" || name == "node-c"
    }

    /// A datagram with a valid tag over `body` (to reach the checks after the tag).
    pub fn signed(body: &[u8]) -> Vec<u8> {
        let mut buf = body.to_vec();
        buf.extend_from_slice(hmac::sign(&key(), body).as_ref());
        buf
    }

    pub fn body_of(p: &Packet) -> Vec<u8> {
        let buf = p.encode(&key()).unwrap();
        buf[..buf.len() - TAG_LEN].to_vec()
    }

    /// `len` seeded pseudo-random bytes.
    pub fn random_bytes(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        rng.fill(&mut bytes);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::codec::Packet;
    use super::fixtures::*;
    use super::*;

    #[test]
    fn random_signed_bodies_never_panic() {
        // Signed random bodies get past the tag, so the field parsing is exercised too.
        let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
        let good = body_of(&mk_packet("node-b", 1, NOW));
        for i in 0..20_000 {
            let body = if i % 2 == 0 {
                let len = rng.usize(..MAX_LEN);
                random_bytes(&mut rng, len)
            } else {
                // A valid body with a few random bytes changed: mostly near misses.
                let mut b = good.clone();
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(..b.len());
                    b[at] = rng.u8(..);
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
