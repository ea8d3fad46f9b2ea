//! A hostile or broken network: forged ARP requests and garbage heartbeats from the client, and
//! a partition between the speakers that the client does not see.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use ferrolb_tests::l2lab::{NodeFirewall, Rig};
use serde_json::json;
use tokio::task::block_in_place;

use crate::RECOVERY_BOUND;

/// Sends `frames` (hex) out of the client namespace's `eth0` through a raw socket.
fn send_frames(rig: &Rig, frames: &[String]) -> Result<()> {
    const SEND: &str = "import socket, sys\n\
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
        s.bind(('eth0', 0))\n\
        for f in sys.argv[1:]:\n    s.send(bytes.fromhex(f))\n";
    let mut args = vec!["-c", SEND];
    args.extend(frames.iter().map(String::as_str));
    rig.client("python3", &args).map(drop)
}

/// Sends each of `datagrams` (hex) from the client namespace to `to`.
fn send_datagrams(rig: &Rig, to: std::net::SocketAddr, datagrams: &[String]) -> Result<()> {
    const SEND: &str = "import socket, sys\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
        for d in sys.argv[3:]:\n    s.sendto(bytes.fromhex(d), (sys.argv[1], int(sys.argv[2])))\n";
    let (ip, port) = (to.ip().to_string(), to.port().to_string());
    let mut args = vec!["-c", SEND, &ip, &port];
    args.extend(datagrams.iter().map(String::as_str));
    rig.client("python3", &args).map(drop)
}

fn mac_bytes(mac: &str) -> Vec<u8> {
    mac.split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// An ARP request frame in hex: Ethernet source `eth_src`, sender (`sha`, `spa`), target `tpa`.
fn arp_request(eth_src: &[u8], sha: &[u8], spa: [u8; 4], tpa: [u8; 4]) -> String {
    let mut f = vec![0xff; 6];
    f.extend(eth_src);
    f.extend([0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend(sha);
    f.extend(spa);
    f.extend([0; 6]);
    f.extend(tpa);
    f.iter().map(|b| format!("{b:02x}")).collect()
}

/// Forged ARP requests for the announced address (group sender hardware addresses, a sender
/// that is not the Ethernet source, group sender addresses), truncated frames and garbage
/// membership datagrams: the owner answers none of them, counts each by reason, answers a real
/// request as before, and no address moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_and_membership_datagrams_are_dropped_and_counted() -> Result<()> {
    let mut rig = Rig::start("fault-garbage", 2, &[], false).await?;
    rig.pool_and_advertisement("garbage", &["198.51.100.238-198.51.100.239"], json!({}))
        .await?;
    rig.scenario.service("web", json!({})).await?;
    let vip: IpAddr = rig.scenario.wait_any_ip("web").await?[0].parse()?;
    let IpAddr::V4(vip4) = vip else {
        bail!("an IPv4 pool gave {vip}")
    };
    let owner = rig.wait_announcer("web", None).await?;
    let owner_i = rig.index_of(&owner)?;
    let client = rig.lab.client().clone();
    let client_mac = mac_bytes(&client.mac);
    let spa = client.ipv4.octets();
    let tpa = vip4.octets();

    let broadcast = [0xff; 6];
    let ipv4_multicast = [0x01, 0x00, 0x5e, 0, 0, 1];
    let stp_group = [0x01, 0x80, 0xc2, 0, 0, 0];
    let other_host = [0x02, 0xfe, 0, 0, 0, 0xbb];
    let cases: Vec<(&str, String)> = vec![
        (
            "arp_group_sender_mac",
            arp_request(&client_mac, &broadcast, spa, tpa),
        ),
        (
            "arp_group_sender_mac",
            arp_request(&client_mac, &ipv4_multicast, spa, tpa),
        ),
        (
            "arp_group_sender_mac",
            arp_request(&client_mac, &stp_group, spa, tpa),
        ),
        (
            "arp_sender_not_eth_source",
            arp_request(&client_mac, &other_host, spa, tpa),
        ),
        (
            "arp_group_sender_ip",
            arp_request(&client_mac, &client_mac, [255; 4], tpa),
        ),
        (
            "arp_group_sender_ip",
            arp_request(&client_mac, &client_mac, [224, 0, 0, 1], tpa),
        ),
    ];
    let dropped =
        |reason: &str| format!("ferrolb_speaker_frames_dropped_total{{reason=\"{reason}\"}}");
    let reasons = [
        "arp_group_sender_mac",
        "arp_sender_not_eth_source",
        "arp_group_sender_ip",
    ];
    let before: Vec<f64> = reasons
        .iter()
        .map(|r| rig.metric(owner_i, &dropped(r)))
        .collect::<Result<_>>()?;
    let changes = "ferrolb_speaker_ownership_changes_total";
    let moved_before: Vec<f64> = (0..2)
        .map(|i| rig.metric(i, changes))
        .collect::<Result<_>>()?;

    let capture = block_in_place(|| rig.capture("arp"))?;
    const REPEATS: usize = 5;
    let frames: Vec<String> = (0..REPEATS)
        .flat_map(|_| cases.iter().map(|(_, f)| f.clone()))
        .collect();
    block_in_place(|| send_frames(&rig, &frames))?;
    for (reason, before) in reasons.iter().zip(&before) {
        let want = before + (REPEATS * cases.iter().filter(|(r, _)| r == reason).count()) as f64;
        let sample = dropped(reason);
        block_in_place(|| {
            ferrolb_tests::process::wait_for(
                &format!("{sample} to reach {want}"),
                Duration::from_secs(5),
                || Ok((rig.metric(owner_i, &sample)? >= want).then_some(())),
            )
        })?;
    }
    // A real request is answered as before, by the owner only.
    let owner_mac = rig.host(&owner)?.mac.clone();
    assert_eq!(
        block_in_place(|| rig.arping(vip, 2))?,
        [owner_mac.clone(), owner_mac.clone()]
    );
    let replies = block_in_place(|| {
        capture.finish(
            // Answers, not the owner's gratuitous announcements (sender IP = target IP).
            "arp.opcode == 2 && arp.src.proto_ipv4 != arp.dst.proto_ipv4",
            &["eth.dst", "arp.dst.hw_mac"],
        )
    })?;
    assert!(!replies.is_empty(), "the capture saw no reply at all");
    for reply in &replies {
        assert!(
            reply
                .split_whitespace()
                .all(|mac| mac.eq_ignore_ascii_case(&client.mac)),
            "a reply went to someone other than the asker: {reply} ({replies:?})"
        );
    }

    // Garbage membership datagrams to every speaker: rejected, counted, harmless.
    let mut rng = fastrand::Rng::with_seed(7);
    let datagrams: Vec<String> = (0..40)
        .map(|i| {
            let len = if i % 2 == 0 {
                rng.usize(64..=316)
            } else {
                rng.usize(0..400)
            };
            let mut d: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if i % 4 == 0 && d.len() >= 6 {
                d[..6].copy_from_slice(b"FLB1\x01\x01"); // the right header, a wrong tag
            }
            d.iter().map(|b| format!("{b:02x}")).collect()
        })
        .collect();
    let rejected = |i: usize, rig: &mut Rig| -> Result<f64> {
        Ok(rig.metric(
            i,
            r#"ferrolb_speaker_membership_packets_received_total{result="bad_mac"}"#,
        )? + rig.metric(
            i,
            r#"ferrolb_speaker_membership_packets_received_total{result="malformed"}"#,
        )?)
    };
    for i in 0..2 {
        let before = rejected(i, &mut rig)?;
        let to = std::net::SocketAddr::new(rig.lab.nodes()[i].ipv4.into(), 7946);
        block_in_place(|| send_datagrams(&rig, to, &datagrams))?;
        block_in_place(|| {
            ferrolb_tests::process::wait_for(
                "the datagrams to be rejected",
                Duration::from_secs(5),
                || Ok((rejected(i, &mut rig)? >= before + datagrams.len() as f64).then_some(())),
            )
        })?;
    }
    for (i, moved) in moved_before.into_iter().enumerate() {
        assert_eq!(
            rig.metric(i, changes)?,
            moved,
            "speaker {i} changed ownership"
        );
    }
    assert_eq!(rig.wait_announcer("web", None).await?, owner);
    Ok(())
}

/// Two speakers that stop hearing each other both take the address (each sees the other dead;
/// the client still reaches both): the address keeps answering. Once the partition heals, one
/// gives it up: the window in which two nodes answer is measured and bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_partition_and_heal_leaves_one_node_answering() -> Result<()> {
    let mut rig = Rig::start("fault-split", 2, &[], false).await?;
    rig.pool_and_advertisement("split", &["198.51.100.237-198.51.100.237"], json!({}))
        .await?;
    rig.scenario.service("web", json!({})).await?;
    let vip: IpAddr = rig.scenario.wait_any_ip("web").await?[0].parse()?;
    let owner = rig.wait_announcer("web", None).await?;
    let owned = "ferrolb_speaker_owned_ips";
    let names: Vec<String> = rig.lab.nodes().iter().map(|h| h.name.clone()).collect();

    // The heartbeats (UDP to the membership port) dropped both ways in both nodes: a partition
    // between the speakers that the client, on the same LAN, does not see.
    let split =
        NodeFirewall::drop_both_ways(&names, "ferrolb_split", "udp dport 7946", "udp dport 7946")?;
    block_in_place(|| {
        ferrolb_tests::process::wait_for(
            "both sides of the split to take the address",
            Duration::from_secs(5),
            || Ok(((0..2).all(|i| rig.metric(i, owned).is_ok_and(|n| n >= 1.0))).then_some(())),
        )
    })?;
    assert!(
        !block_in_place(|| rig.curl(vip))?.is_empty(),
        "the VIP answers during the split"
    );

    drop(split);
    let healed = Instant::now();
    let window = block_in_place(|| {
        ferrolb_tests::process::wait_for(
            "one side to give the address up",
            Duration::from_secs(10),
            || {
                let holders = (0..2)
                    .map(|i| rig.metric(i, owned))
                    .collect::<Result<Vec<f64>>>()?;
                Ok((holders.iter().sum::<f64>() == 1.0).then(|| healed.elapsed()))
            },
        )
    })?;
    eprintln!("after the heal two nodes announced the address for {window:?}");
    ensure!(
        window < RECOVERY_BOUND,
        "two nodes announced for {window:?} after the heal"
    );
    let announcer = rig.wait_announcer("web", None).await?;
    let mac = rig.host(&announcer)?.mac.clone();
    assert_eq!(block_in_place(|| rig.arping(vip, 2))?, [mac.clone(), mac]);
    assert_eq!(
        announcer, owner,
        "the address went back to the node the election picks"
    );
    Ok(())
}
