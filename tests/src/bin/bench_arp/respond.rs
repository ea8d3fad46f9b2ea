//! `ferrolb-bench-arp respond`: the reference responder of the ARP figure. It does the least any
//! userspace ARP responder can do per request (one receive, a set lookup, one send, one thread,
//! no filter beyond the EtherType, no CPU pinning), so its latency next to the kernel's is what a
//! plain userspace responder that sleeps between requests gets on the machine measured, and the
//! speakers' latency next to it is what the speaker's own code costs or saves.
//!
//! ```text
//! ferrolb-bench-arp respond --addresses 198.19.8.0-198.19.11.231 [--interface eth0]
//!     [--duration-s 15] [--spin]
//!   prints "ready" once listening; after --duration-s one JSON object:
//!   {"mode":"sleep"|"spin","frames":..,"replies":..}
//! ```
//!
//! `--spin` polls without ever sleeping (a whole CPU for the run): what is left of the latency
//! once the wake-up of a sleeping thread is taken away.

use std::collections::HashSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::{parse_addresses, raw};

#[derive(Debug, PartialEq)]
pub struct Args {
    interface: String,
    addresses: Vec<Ipv4Addr>,
    duration: Duration,
    spin: bool,
}

pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        interface: "eth0".into(),
        addresses: Vec::new(),
        duration: Duration::from_secs(15),
        spin: false,
    };
    let mut flags = super::cli::Flags::new(args);
    while let Some(flag) = flags.next_flag() {
        let mut value = || flags.value(&flag);
        match flag.as_str() {
            "--interface" => a.interface = value()?,
            "--addresses" => a.addresses = parse_addresses(&value()?)?,
            "--duration-s" => {
                let v = value()?;
                a.duration = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| format!("--duration-s: {v:?} is not a positive number"))?;
            }
            "--spin" => a.spin = true,
            other => return Err(format!("respond: unknown argument {other:?}")),
        }
    }
    if a.addresses.is_empty() {
        return Err("respond: --addresses is required".into());
    }
    Ok(a)
}

/// The reply to `frame` if it is an ARP request for one of `owned`: to the asker, from `mac`.
pub fn reply_to(frame: &[u8], mac: [u8; 6], owned: &HashSet<Ipv4Addr>) -> Option<[u8; 42]> {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x06] {
        return None;
    }
    let arp = &frame[14..42];
    let header_ok = arp[0..2] == [0, 1] && arp[2..4] == [0x08, 0x00] && arp[4] == 6 && arp[5] == 4;
    if !header_ok || arp[6..8] != [0, 1] {
        return None;
    }
    let target = Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]);
    if !owned.contains(&target) {
        return None;
    }
    let mut r = [0u8; 42];
    r[0..6].copy_from_slice(&arp[8..14]); // to the asker's hardware address
    r[6..12].copy_from_slice(&mac);
    r[12..14].copy_from_slice(&[0x08, 0x06]);
    r[14..20].copy_from_slice(&arp[0..6]);
    r[20..22].copy_from_slice(&[0, 2]);
    r[22..28].copy_from_slice(&mac);
    r[28..32].copy_from_slice(&target.octets());
    r[32..42].copy_from_slice(&arp[8..18]); // the asker's hardware and protocol address
    Some(r)
}

pub fn run(args: &Args) -> Result<(), String> {
    let (ifindex, mac) = super::interface(&args.interface)?;
    let socket = raw::Socket::open(ifindex, 0x0806)
        .map_err(|e| format!("opening the socket (needs CAP_NET_RAW): {e}"))?;
    socket
        .prepare_responder()
        .map_err(|e| format!("configuring the socket: {e}"))?;
    let owned: HashSet<Ipv4Addr> = args.addresses.iter().copied().collect();
    println!("ready");
    let _ = std::io::stdout().flush();
    let (mut frames, mut replies, mut send_errors) = (0u64, 0u64, 0u64);
    let mut buf = [0u8; 2048];
    let end = Instant::now() + args.duration;
    while Instant::now() < end {
        let Some(n) = socket.recv_frame(&mut buf, args.spin) else {
            continue;
        };
        frames += 1;
        if let Some(reply) = reply_to(&buf[..n], mac, &owned) {
            match socket.send(&reply) {
                Ok(()) => replies += 1,
                Err(_) => send_errors += 1,
            }
        }
    }
    let out = serde_json::json!({
        "mode": if args.spin { "spin" } else { "sleep" },
        "frames": frames,
        "replies": replies,
        "send_errors": send_errors,
    });
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{arp_request, parse_reply};

    #[test]
    fn replies_only_to_requests_for_owned_addresses() {
        let asker = [2, 0xfe, 0, 0, 1, 0];
        let ours = [2, 0xfe, 0, 0, 0, 2];
        let owned: HashSet<Ipv4Addr> = [Ipv4Addr::new(198, 19, 8, 1)].into();
        let slot = Ipv4Addr::new(198, 51, 100, 130);
        let req = arp_request(asker, slot, Ipv4Addr::new(198, 19, 8, 1));
        let reply = reply_to(&req, ours, &owned).expect("owned address answered");
        assert_eq!(
            parse_reply(&reply, asker),
            Some((ours, Ipv4Addr::new(198, 19, 8, 1), slot))
        );
        assert_eq!(&reply[0..6], &asker);
        // Not owned, a reply instead of a request, truncated, another EtherType: no answer.
        let other = arp_request(asker, slot, Ipv4Addr::new(198, 19, 8, 2));
        assert_eq!(reply_to(&other, ours, &owned), None);
        assert_eq!(reply_to(&reply, ours, &owned), None);
        assert_eq!(reply_to(&req[..41], ours, &owned), None);
        let mut ipv6 = req;
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(reply_to(&ipv6, ours, &owned), None);
    }

    #[test]
    fn arguments_need_addresses_and_know_spin() {
        let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = parse_args(strings(&["--addresses", "198.19.8.0/30", "--spin"])).unwrap();
        assert_eq!(
            (a.addresses.len(), a.spin, a.interface.as_str()),
            (4, true, "eth0")
        );
        assert!(parse_args(strings(&[])).is_err());
        assert!(parse_args(strings(&["--addresses", "198.19.8.1", "--duration-s", "0"])).is_err());
    }
}
