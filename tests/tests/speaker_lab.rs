//! The speaker end to end: real speakers in lab node namespaces, the real controller, and the
//! client's own kernel, arping, ndisc6 and captures as peers.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use ferrolb_tests::l2lab::{Rig, TIMEOUT};
use serde_json::json;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_the_owner_alone_answers_and_serves() -> Result<()> {
    let mut rig = Rig::start("v4", 3, &[], false).await?;
    rig.pool_and_advertisement("v4", &["198.51.100.200-198.51.100.210"], json!({}))
        .await?;
    rig.scenario.service("web", json!({})).await?;
    let ips = rig.scenario.wait_any_ip("web").await?;
    let vip = ip(&ips[0]);
    let owner = rig.wait_announcer("web", None).await?;
    let owner_mac = rig.host(&owner)?.mac.clone();

    let capture = rig.capture("arp")?;
    let answer = rig.curl_until(vip, TIMEOUT, |a| !a.is_empty())?;
    assert_eq!(answer, owner, "curl was answered by another node than the announcer");
    assert_eq!(rig.client_neighbour(vip)?, Some(owner_mac.clone()));
    let replies = rig.arping(vip, 3)?;
    assert_eq!(replies.len(), 3, "arping: one reply per request, got {replies:?}");
    assert!(replies.iter().all(|m| *m == owner_mac), "{replies:?}");
    let senders: BTreeSet<String> = capture
        .finish(
            &format!("arp.opcode == 2 && arp.src.proto_ipv4 == {vip}"),
            &["eth.src"],
        )?
        .into_iter()
        .collect();
    assert_eq!(senders, [owner_mac.clone()].into(), "ARP replies from other nodes");
    let i = rig.index_of(&owner)?;
    assert!(rig.metric(i, &format!("ferrolb_speaker_replies_sent_total{{ip=\"{vip}\"}}"))? >= 3.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_sigkill() -> Result<()> {
    let mut rig = Rig::start("kill", 3, &[], false).await?;
    rig.pool_and_advertisement("kill", &["198.51.100.200-198.51.100.210"], json!({}))
        .await?;
    rig.scenario.service("web", json!({})).await?;
    let vip = ip(&rig.scenario.wait_any_ip("web").await?[0]);
    let owner = rig.wait_announcer("web", None).await?;
    assert_eq!(rig.curl_until(vip, TIMEOUT, |a| !a.is_empty())?, owner);

    let i = rig.index_of(&owner)?;
    rig.speaker(i)?.kill();
    rig.speakers[i] = None;
    let next = rig.curl_until(vip, Duration::from_secs(5), |a| !a.is_empty() && a != owner)?;
    assert_ne!(next, owner);
    let next_mac = rig.host(&next)?.mac.clone();
    assert_eq!(rig.client_neighbour(vip)?, Some(next_mac.clone()));
    assert_eq!(rig.wait_announcer("web", Some(&owner)).await?, next);
    let replies = rig.arping(vip, 2)?;
    assert!(!replies.is_empty() && replies.iter().all(|m| *m == next_mac), "{replies:?}");
    Ok(())
}
