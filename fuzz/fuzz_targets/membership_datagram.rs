//! Any bytes as a membership datagram, twice: as received (almost all fail the MAC check, which
//! comes first), and signed with the key, so the fuzzer explores every check after the MAC: the
//! codec, the peer check, the skew check and the replay window.
#![no_main]

use std::time::Duration;

use ferrolb_speaker::membership::packet::Verifier;
use libfuzzer_sys::fuzz_target;
use ring::hmac;

const KEY: &[u8] = b"fuzzing key of thirty-two bytes!";
const NOW_MS: u64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    let key = || hmac::Key::new(hmac::HMAC_SHA256, KEY);
    let mut verifier = Verifier::new(key(), Duration::from_secs(5));
    let is_peer = |name: &str| name.starts_with("node");
    let _ = verifier.check(data, NOW_MS, is_peer);
    let mut signed = data.to_vec();
    signed.extend_from_slice(hmac::sign(&key(), data).as_ref());
    if let Ok(accepted) = verifier.check(&signed, NOW_MS, is_peer) {
        assert!(is_peer(&accepted.packet.node));
        // The same datagram again is a replay.
        assert!(verifier.check(&signed, NOW_MS, is_peer).is_err());
    }
});
