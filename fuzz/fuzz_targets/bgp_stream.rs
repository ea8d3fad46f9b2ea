//! Any bytes as a router's side of a BGP session: framed, decoded, and fed to a session's state
//! machine in every state it can reach, never a panic; UPDATEs parse or fail cleanly.
#![no_main]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferrolb_crds::Family;
use ferrolb_speaker::bgp::config::RemoteAsn;
use ferrolb_speaker::bgp::framing::split_messages;
use ferrolb_speaker::bgp::fsm::{Event, Fsm};
use ferrolb_speaker::bgp::open::LocalOpen;
use libfuzzer_sys::fuzz_target;
use rustbgpd_wire::Message;

fuzz_target!(|data: &[u8]| {
    let local = LocalOpen {
        asn: 64512,
        hold_time: 90,
        router_id: Ipv4Addr::new(198, 51, 100, 11),
        families: BTreeSet::from([Family::V4, Family::V6]),
        graceful_restart: None,
    };
    let mut fsm = Fsm::new(local, RemoteAsn::External, None, Duration::from_secs(30));
    let now = Instant::now();
    fsm.handle(now, Event::Start);
    fsm.handle(now, Event::Connected);
    // Fed in two reads split at the first byte's value, as TCP may cut anywhere.
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut buffer = BytesMut::new();
    for part in [&data[..cut], &data[cut..]] {
        buffer.extend_from_slice(part);
        let (messages, error) = split_messages(&mut buffer);
        for m in messages {
            if let Message::Update(u) = &m {
                let _ = u.parse(true, false, &[]);
            }
            fsm.handle(now, Event::Received(m));
        }
        if let Some(e) = error {
            fsm.handle(now, Event::Malformed(e));
        }
    }
    fsm.handle(now + Duration::from_secs(300), Event::Timer);
});
