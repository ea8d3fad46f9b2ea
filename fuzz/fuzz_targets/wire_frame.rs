//! Any bytes as a received Ethernet frame: the codec returns a solicitation or an error naming a
//! rule, never panics, and every solicitation it accepts yields a well-formed answer.
#![no_main]

use ferrolb_speaker::wire::{self, Mac, Solicitation};
use libfuzzer_sys::fuzz_target;

const OUR_MAC: Mac = Mac([0x02, 0xfe, 0, 0, 0, 1]);

fuzz_target!(|frame: &[u8]| {
    match wire::parse_frame(frame) {
        Ok(Solicitation::Arp(request)) => {
            assert!(!request.sender_mac.is_multicast());
            let reply = wire::arp_reply(OUR_MAC, request.target_ip, &request);
            assert!(wire::parse_frame(&reply).is_err(), "a reply is not a request");
        }
        Ok(Solicitation::Neighbor(ns)) => {
            let advert = wire::neighbor_advertisement(OUR_MAC, &ns);
            assert!(advert.len() >= 86);
        }
        Err(e) => assert!(!e.metric_label().is_empty()),
    }
});
