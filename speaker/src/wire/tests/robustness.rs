//! Truncated, random and mutated frames: `parse_frame` returns, never panics, and whatever it
//! accepts the kernel filters accept too.

use super::super::filter::{ARP_REQUESTS, NEIGHBOR_SOLICITATIONS};
use super::super::{Solicitation, WireError, parse_frame};
use super::bpf::run;
use super::*;

/// Parses `frame` and checks that an accepted frame would have passed its socket's filter.
fn parse_checked(frame: &[u8]) -> Result<Solicitation, WireError> {
    let parsed = parse_frame(frame);
    match &parsed {
        Ok(Solicitation::Arp(_)) => assert_ne!(run(ARP_REQUESTS, frame), 0, "{frame:02x?}"),
        Ok(Solicitation::Neighbor(_)) => {
            assert_ne!(run(NEIGHBOR_SOLICITATIONS, frame), 0, "{frame:02x?}");
        }
        Err(err) => assert!(!err.to_string().is_empty() && !err.metric_label().is_empty()),
    }
    parsed
}

#[test]
fn every_truncation_of_every_golden_frame_is_an_error_not_a_panic() {
    for (name, frame) in GOLDEN {
        let full = parse_checked(frame);
        for len in 0..frame.len() {
            let cut = parse_checked(&frame[..len]);
            // Only Ethernet padding may be cut from a frame that parsed.
            if full.is_ok() && len < 42 {
                assert!(cut.is_err(), "{name} cut to {len} bytes parsed: {cut:?}");
            }
            if full.is_ok() && frame[12..14] == [0x86, 0xdd] {
                assert!(cut.is_err(), "{name} cut to {len} bytes parsed: {cut:?}");
            }
        }
    }
    // Padding is all that ARP_REQUEST loses between 42 and 60 bytes.
    for len in 42..=60 {
        assert_eq!(parse_frame(&ARP_REQUEST[..len]), parse_frame(&ARP_REQUEST));
    }
}

#[test]
fn random_frames_never_panic() {
    // A fixed seed makes every run see the same frames.
    let mut rng = fastrand::Rng::with_seed(0x5eed_f00d_cafe_d00d);
    let mut accepted = 0;
    for i in 0..6000 {
        let len = rng.usize(..140);
        let mut frame = vec![0; len];
        rng.fill(&mut frame);
        // Steer most frames past the early checks so the deeper rules see garbage too.
        if len >= 14 && i % 4 != 0 {
            let ethertype: [u8; 2] = if i % 2 == 0 {
                [0x08, 0x06]
            } else {
                [0x86, 0xdd]
            };
            frame[12..14].copy_from_slice(&ethertype);
        }
        if len >= 58 && frame[12..14] == [0x86, 0xdd] && i % 3 != 0 {
            frame[14] = 0x60 | (frame[14] & 0x0f);
            frame[18..20].copy_from_slice(&u16::try_from(len - 54).unwrap().to_be_bytes());
            frame[20] = 58;
            frame[21] = 255;
            frame[54] = 135;
            frame[55] = 0;
            fix_checksum(&mut frame);
        }
        if len >= 22 && frame[12..14] == [0x08, 0x06] && i % 3 != 0 {
            frame[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            // A unicast sender that is the Ethernet source, as the strict rules require.
            frame[6] &= 0xfe;
            if len >= 28 {
                frame.copy_within(6..12, 22);
            }
        }
        if len >= 14 && frame[12..14] == [0x86, 0xdd] && i % 3 != 0 {
            frame[6] &= 0xfe;
        }
        accepted += usize::from(parse_checked(&frame).is_ok());
    }
    // The steering works: some random frames are well-formed requests.
    assert!(accepted > 100, "only {accepted} random frames parsed");
}

#[test]
fn mutated_golden_frames_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x0dd_ba11_5ca1_ab1e);
    for (_, golden) in GOLDEN {
        for round in 0..1500 {
            let mut frame = golden.to_vec();
            for _ in 0..rng.usize(1..5) {
                let at = rng.usize(..frame.len());
                frame[at] = rng.u8(..);
            }
            match round % 5 {
                // Grow or shrink the frame, with or without a matching payload length.
                0 => frame.resize(rng.usize(..golden.len() + 40), rng.u8(..)),
                1 if frame.len() > 20 => {
                    let payload_len = u16::try_from(rng.usize(..frame.len() + 8)).unwrap();
                    frame[18..20].copy_from_slice(&payload_len.to_be_bytes());
                }
                // Random options after a valid NS header, checksum fixed so they get walked.
                2 if frame.len() >= 78 && frame[12..14] == [0x86, 0xdd] => {
                    frame.truncate(78);
                    let extra = rng.usize(..48);
                    frame.extend(std::iter::repeat_with(|| rng.u8(..)).take(extra));
                    let payload_len = u16::try_from(frame.len() - 54).unwrap();
                    frame[18..20].copy_from_slice(&payload_len.to_be_bytes());
                }
                _ => {}
            }
            if round % 2 == 0 {
                fix_checksum(&mut frame);
            }
            let _ = parse_checked(&frame);
        }
    }
}

#[test]
fn options_of_every_type_and_length_never_panic() {
    for option_type in [0u8, 1, 2, 14, 255] {
        for units in 0..=255u8 {
            for data_len in [0usize, 1, 6, 8, 14, 30] {
                let mut options = vec![option_type, units];
                options.extend(std::iter::repeat_n(0xa5, data_len));
                let frame = ns_frame(CLIENT6, VIP6_SOLICITED, VIP6, &options);
                let parsed = parse_checked(&frame);
                if units == 0 {
                    assert_eq!(parsed, Err(WireError::ZeroLengthOption(option_type)));
                }
            }
        }
    }
}
