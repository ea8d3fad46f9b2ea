//! The lifeline handshake: the dialer sends a random nonce, the listener answers with a hello
//! that names its node and process (boot id) and is signed over the nonce, so the dialer knows
//! the connection ends in that peer's speaker and no recorded hello can be played back. Pure.
//!
//! ```text
//!  dialer -> listener   16  nonce (random)
//!  listener -> dialer    4  magic "FLL1"  (not "FLB1": a hello is never a heartbeat)
//!                        8  boot id
//!                        1  n = name length, 1..=253
//!                        n  node name
//!                       32  HMAC-SHA256(key, magic | nonce | boot id | n | name)
//! ```

use ring::hmac;

/// Nonce length.
pub const NONCE_LEN: usize = 16;
/// First bytes of a hello.
const MAGIC: [u8; 4] = *b"FLL1";
/// Bytes before the name.
const HEADER_LEN: usize = 4 + 8 + 1;
const TAG_LEN: usize = 32;
/// Longest hello.
pub const MAX_LEN: usize = HEADER_LEN + super::super::packet::MAX_NAME_LEN + TAG_LEN;

/// The hello answering `nonce`, signed with `key`; `None` if the name does not fit.
pub fn encode(key: &hmac::Key, nonce: &[u8; NONCE_LEN], boot: u64, node: &str) -> Option<Vec<u8>> {
    if !super::super::packet::valid_name(node) {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + node.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&boot.to_be_bytes());
    out.push(u8::try_from(node.len()).ok()?);
    out.extend_from_slice(node.as_bytes());
    let tag = hmac::sign(key, &signed_bytes(nonce, &out));
    out.extend_from_slice(tag.as_ref());
    Some(out)
}

/// How many bytes the hello starting with `head` (at least [`HEADER_LEN`] bytes) has in all.
pub fn total_len(head: &[u8]) -> Option<usize> {
    let n = usize::from(*head.get(HEADER_LEN - 1)?);
    (n >= 1).then_some(HEADER_LEN + n + TAG_LEN)
}

/// Bytes to read before [`total_len`] can tell the length.
pub const HEAD_LEN: usize = HEADER_LEN;

/// The boot id in `hello` if it answers `nonce`, comes from `node` and verifies with one of
/// `keys`.
pub fn verify(
    hello: &[u8],
    nonce: &[u8; NONCE_LEN],
    node: &str,
    keys: &[hmac::Key],
) -> Option<u64> {
    if hello.len() < HEADER_LEN + 1 + TAG_LEN || hello[..4] != MAGIC {
        return None;
    }
    if total_len(hello) != Some(hello.len()) {
        return None;
    }
    let (body, tag) = hello.split_at(hello.len() - TAG_LEN);
    let signed = signed_bytes(nonce, body);
    if !keys.iter().any(|k| hmac::verify(k, &signed, tag).is_ok()) {
        return None;
    }
    if &body[HEADER_LEN..] != node.as_bytes() {
        return None;
    }
    let mut boot = [0u8; 8];
    boot.copy_from_slice(&body[4..12]);
    Some(u64::from_be_bytes(boot))
}

/// magic | nonce | the rest of the body.
fn signed_bytes(nonce: &[u8; NONCE_LEN], body: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(body.len() + NONCE_LEN);
    signed.extend_from_slice(&body[..4]);
    signed.extend_from_slice(nonce);
    signed.extend_from_slice(&body[4..]);
    signed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &[u8]) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, k)
    }

    const NONCE: [u8; NONCE_LEN] = [7; NONCE_LEN];

    #[test]
    fn a_hello_verifies_for_its_nonce_node_and_key_only() {
        let (k, other) = (
            key(b"lifeline-test-key-0123"),
            key(b"another-key-0123456789"),
        );
        let hello = encode(&k, &NONCE, 42, "node-b").unwrap();
        assert_eq!(total_len(&hello[..HEAD_LEN]), Some(hello.len()));
        assert_eq!(
            verify(&hello, &NONCE, "node-b", std::slice::from_ref(&k)),
            Some(42)
        );
        assert_eq!(
            verify(&hello, &NONCE, "node-b", &[other.clone(), k.clone()]),
            Some(42)
        );
        assert_eq!(
            verify(&hello, &NONCE, "node-b", &[other]),
            None,
            "other key"
        );
        assert_eq!(
            verify(&hello, &[8; NONCE_LEN], "node-b", std::slice::from_ref(&k)),
            None,
            "replayed for another nonce"
        );
        assert_eq!(
            verify(&hello, &NONCE, "node-c", std::slice::from_ref(&k)),
            None,
            "another node"
        );
        assert_eq!(
            verify(
                &hello[..hello.len() - 1],
                &NONCE,
                "node-b",
                std::slice::from_ref(&k)
            ),
            None
        );
        for i in 0..hello.len() {
            let mut bad = hello.clone();
            bad[i] ^= 1;
            assert_eq!(
                verify(&bad, &NONCE, "node-b", std::slice::from_ref(&k)),
                None,
                "byte {i}"
            );
        }
        let heartbeat_like = {
            let mut h = hello.clone();
            h[..4].copy_from_slice(b"FLB1");
            h
        };
        assert_eq!(verify(&heartbeat_like, &NONCE, "node-b", &[k]), None);
    }

    #[test]
    fn names_that_do_not_fit_are_refused_and_garbage_never_panics() {
        let k = key(b"lifeline-test-key-0123");
        assert!(encode(&k, &NONCE, 1, "").is_none());
        assert!(encode(&k, &NONCE, 1, &"x".repeat(254)).is_none());
        assert!(encode(&k, &NONCE, 1, &"x".repeat(253)).is_some());
        assert_eq!(total_len(&[0; 3]), None);
        assert_eq!(total_len(&[0; HEAD_LEN]), None, "zero-length name");
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..10_000 {
            let len = rng.usize(..MAX_LEN + 8);
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            assert_eq!(verify(&bytes, &NONCE, "n", std::slice::from_ref(&k)), None);
        }
    }
}
