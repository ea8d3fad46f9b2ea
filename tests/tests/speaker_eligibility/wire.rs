//! What the client sees of an address: arping's replies, ARP on its wire (captured with
//! tcpdump), curl's answer and its neighbour table; who owns it, or that nobody answers.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use ferrolb_tests::l2lab::{Capture, Rig, TIMEOUT};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::wait_announced_by;

/// arping (`count` requests) until the replies satisfy `ok`; the last replies otherwise.
pub(crate) fn arping_until(
    rig: &Rig,
    vip: IpAddr,
    count: u32,
    ok: impl Fn(&[String]) -> bool,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let replies = rig.arping(vip, count)?;
        if ok(&replies) {
            return Ok(replies);
        }
        if Instant::now() > deadline {
            bail!(
                "arping {vip}: replies never satisfied the check within {TIMEOUT:?}; last: {replies:?}"
            );
        }
    }
}

/// Stops `capture`; what it saw of ARP for `vip` (see [`ArpWire`]).
pub(crate) fn arp_wire(capture: Capture, rig: &Rig, vip: IpAddr) -> Result<ArpWire> {
    let client = rig.lab.client().mac.to_lowercase();
    let mut wire = ArpWire::default();
    let frames = capture.finish(
        &format!("arp.src.proto_ipv4 == {vip} || arp.dst.proto_ipv4 == {vip}"),
        &["arp.opcode", "eth.src", "eth.dst", "arp.src.proto_ipv4"],
    )?;
    for frame in frames {
        let f: Vec<String> = frame.split('\t').map(str::to_lowercase).collect();
        let [opcode, src, dst, spa] = &f[..] else {
            bail!("unexpected tshark line {frame:?}");
        };
        let claims_vip = *spa == vip.to_string();
        if opcode == "1" && *src == client && !claims_vip {
            wire.requests += 1;
        }
        if opcode == "2" && claims_vip && *dst == client {
            wire.replies.push(src.clone());
        }
        if claims_vip {
            wire.claims.insert(src.clone());
        }
    }
    Ok(wire)
}

/// ARP about one address on the client's wire.
#[derive(Debug, Default)]
pub(crate) struct ArpWire {
    /// Requests the client sent for it (arping's and its kernel's).
    pub(crate) requests: usize,
    /// Source MACs of the replies unicast to the client.
    pub(crate) replies: Vec<String>,
    /// Source MACs of every frame claiming the address (replies, gratuitous announcements).
    pub(crate) claims: BTreeSet<String>,
}

/// arping `count` requests from the client while capturing: arping's replies and the wire.
pub(crate) fn arping_on_wire(rig: &Rig, vip: IpAddr, count: u32) -> Result<(Vec<String>, ArpWire)> {
    let capture = rig.capture("arp")?;
    let replies = rig.arping(vip, count)?;
    Ok((replies, arp_wire(capture, rig, vip)?))
}

/// arping gets replies from `node` only, and on the wire exactly one reply answers each
/// request and nothing but `node` claims `vip`. (arping also prints gratuitous ARP replies
/// that arrive while it listens, so one reply per request is counted on the wire.)
pub(crate) fn expect_replies_from(rig: &Rig, vip: IpAddr, node: &str, count: u32) -> Result<()> {
    let mac = rig.host(node)?.mac.clone();
    let (replies, wire) = arping_on_wire(rig, vip, count)?;
    assert!(
        replies.len() >= count as usize && replies.iter().all(|m| *m == mac),
        "arping {vip}: {count} requests, replies only from {node} ({mac}): {replies:?}"
    );
    assert!(
        wire.requests >= count as usize
            && wire.replies.len() == wire.requests
            && wire.replies.iter().all(|m| *m == mac),
        "{vip}: exactly one reply per request, from {node} ({mac}); on the wire: {wire:?}"
    );
    assert_eq!(
        wire.claims,
        BTreeSet::from([mac]),
        "ARP frames claiming {vip} from another MAC than {node}'s"
    );
    Ok(())
}

/// `node` alone announces IPv4 `vip` of Service `svc`: the condition names it, the client's
/// kernel resolves the VIP to its MAC and curl is answered by it, and arping gets exactly one
/// reply per request, from it, with no other MAC claiming the VIP on the wire meanwhile.
pub(crate) async fn expect_owner(
    rig: &Rig,
    svc: &str,
    vip: IpAddr,
    node: &str,
) -> Result<Condition> {
    let c = wait_announced_by(rig, svc, node).await?;
    let mac = rig.host(node)?.mac.clone();
    // The previous owner may take a moment longer to let go than the new one to take over.
    arping_until(rig, vip, 1, |r| r == [mac.clone()])?;
    let answer = rig
        .curl_until(vip, TIMEOUT, |a| a == node)
        .with_context(|| format!("curl {vip} should reach {node}"))?;
    ensure!(answer == node);
    assert_eq!(
        rig.client_neighbour(vip)?,
        Some(mac.clone()),
        "the client's neighbour entry for {vip} is not {node}'s MAC"
    );
    expect_replies_from(rig, vip, node, 3)?;
    Ok(c)
}

/// Nobody answers for IPv4 `vip`: arping gets no reply, and no frame claims the VIP.
pub(crate) fn expect_silence(rig: &Rig, vip: IpAddr) -> Result<()> {
    // The last owner may take a moment to let go after the condition changed.
    arping_until(rig, vip, 1, |r| r.is_empty())?;
    let (replies, wire) = arping_on_wire(rig, vip, 3)?;
    assert!(replies.is_empty(), "arping {vip}: replies {replies:?}");
    assert!(
        wire.requests >= 3 && wire.claims.is_empty(),
        "ARP frames claiming {vip}: {wire:?}"
    );
    Ok(())
}
