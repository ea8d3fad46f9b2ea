//! The speaker end to end: real speakers in lab node namespaces, the real controller, and the
//! client's own kernel, arping, ndisc6 and captures as peers.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use ferrolb_tests::l2lab::{Rig, TIMEOUT, cut_from_apiserver};
use serde_json::json;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A rig of `nodes` nodes with a pool, an advertisement and Service `web` that has an address,
/// an announcer, and answers curl from that announcer.
async fn announced_web(
    name: &str,
    nodes: usize,
    unprivileged: bool,
) -> Result<(Rig, IpAddr, String)> {
    let rig = Rig::start(name, nodes, &[], unprivileged).await?;
    rig.pool_and_advertisement(name, &["198.51.100.200-198.51.100.210"], json!({}))
        .await?;
    rig.scenario.service("web", json!({})).await?;
    let vip = ip(&rig.scenario.wait_any_ip("web").await?[0]);
    let owner = rig.wait_announcer("web", None).await?;
    assert_eq!(rig.curl_until(vip, TIMEOUT, |a| !a.is_empty())?, owner);
    Ok((rig, vip, owner))
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
    // arping counts gratuitous replies too: let the takeover burst (2 frames x 4 rounds over
    // 2 s) finish first.
    let i = rig.index_of(&owner)?;
    let sample = format!("ferrolb_speaker_gratuitous_sent_total{{ip=\"{vip}\"}}");
    ferrolb_tests::process::wait_for("the takeover burst to end", TIMEOUT, || {
        Ok((rig.metric(i, &sample)? >= 8.0).then_some(()))
    })?;

    let capture = rig.capture("arp")?;
    let answer = rig.curl_until(vip, TIMEOUT, |a| !a.is_empty())?;
    assert_eq!(
        answer, owner,
        "curl was answered by another node than the announcer"
    );
    assert_eq!(rig.client_neighbour(vip)?, Some(owner_mac.clone()));
    let replies = rig.arping(vip, 3)?;
    assert_eq!(
        replies.len(),
        3,
        "arping: one reply per request, got {replies:?}"
    );
    assert!(replies.iter().all(|m| *m == owner_mac), "{replies:?}");
    let senders: BTreeSet<String> = capture
        .finish(
            &format!("arp.opcode == 2 && arp.src.proto_ipv4 == {vip}"),
            &["eth.src"],
        )?
        .into_iter()
        .collect();
    assert_eq!(
        senders,
        [owner_mac.clone()].into(),
        "ARP replies from other nodes"
    );
    let i = rig.index_of(&owner)?;
    assert!(
        rig.metric(
            i,
            &format!("ferrolb_speaker_replies_sent_total{{ip=\"{vip}\"}}")
        )? >= 3.0
    );
    // The other speakers' kernels dropped those requests (and the lab's ARP for node
    // addresses): no responder of theirs woke for them.
    assert_eq!(rig.not_owned_requests_elsewhere(&owner, "arp")?, 0.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_sigkill() -> Result<()> {
    let (mut rig, vip, owner) = announced_web("kill", 3, false).await?;
    let lifelines = "ferrolb_speaker_membership_lifelines";
    ferrolb_tests::process::wait_for("lifelines between all speakers", TIMEOUT, || {
        let up = (0..3)
            .map(|i| rig.metric(i, lifelines))
            .collect::<Result<Vec<f64>>>()?;
        Ok(up.iter().all(|n| *n == 2.0).then_some(()))
    })?;

    let i = rig.index_of(&owner)?;
    rig.speaker(i)?.kill();
    rig.speakers[i] = None;
    let next = rig.curl_until(vip, Duration::from_secs(5), |a| !a.is_empty() && a != owner)?;
    assert_ne!(next, owner);
    let next_mac = rig.host(&next)?.mac.clone();
    assert_eq!(rig.client_neighbour(vip)?, Some(next_mac.clone()));
    assert_eq!(rig.wait_announcer("web", Some(&owner)).await?, next);
    let replies = rig.arping(vip, 2)?;
    assert!(
        !replies.is_empty() && replies.iter().all(|m| *m == next_mac),
        "{replies:?}"
    );
    // The survivors learned it from the dead process's kernel (its lifelines closed), not
    // from its silence.
    let ended = r#"ferrolb_speaker_membership_peer_deaths_total{cause="ended"}"#;
    let silent = r#"ferrolb_speaker_membership_peer_deaths_total{cause="silent"}"#;
    for j in (0..3).filter(|j| *j != i) {
        assert_eq!(rig.metric(j, ended)?, 1.0, "speaker {j}");
        assert_eq!(rig.metric(j, silent)?, 0.0, "speaker {j}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_one_advertisement_curl_and_unicast_nud() -> Result<()> {
    let mut rig = Rig::start("v6", 3, &[], false).await?;
    rig.pool_and_advertisement("v6", &["2001:db8:1::200-2001:db8:1::20f"], json!({}))
        .await?;
    rig.scenario
        .service(
            "web6",
            json!({ "spec": { "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack" } }),
        )
        .await?;
    let vip = ip(&rig.scenario.wait_any_ip("web6").await?[0]);
    assert!(vip.is_ipv6());
    let owner = rig.wait_announcer("web6", None).await?;
    let owner_mac = rig.host(&owner)?.mac.clone();

    // ndisc6 -m also prints unsolicited advertisements: let the takeover burst (4 rounds over
    // 2 s) finish first.
    let i = rig.index_of(&owner)?;
    let sample = format!("ferrolb_speaker_gratuitous_sent_total{{ip=\"{vip}\"}}");
    ferrolb_tests::process::wait_for("the takeover burst to end", TIMEOUT, || {
        Ok((rig.metric(i, &sample)? >= 4.0).then_some(()))
    })?;
    let adverts = rig.ndisc6(vip)?;
    assert_eq!(
        adverts,
        vec![owner_mac.clone()],
        "ndisc6: exactly one advertisement, from the owner"
    );
    assert_eq!(rig.curl_until(vip, TIMEOUT, |a| !a.is_empty())?, owner);
    assert_eq!(rig.client_neighbour(vip)?, Some(owner_mac.clone()));

    // Unicast reachability probe (NUD): make the entry STALE, send traffic, and let the kernel
    // probe at once. A STALE entry becomes REACHABLE only through a solicited advertisement,
    // and the kernel's probes from DELAY/PROBE are unicast to the cached MAC (RFC 4861 7.3.3),
    // so REACHABLE again proves the unicast probe was answered. (Captures in this sandbox miss
    // locally generated IPv6 frames, so the frames themselves are not inspected here.)
    rig.client(
        "sysctl",
        &["-qw", "net.ipv6.neigh.eth0.delay_first_probe_time=0"],
    )?;
    let v = vip.to_string();
    let requests = format!("ferrolb_speaker_requests_received_total{{ip=\"{v}\"}}");
    let before = rig.metric(i, &requests)?;
    rig.client(
        "ip",
        &[
            "-6", "neigh", "change", &v, "lladdr", &owner_mac, "dev", "eth0", "nud", "stale",
        ],
    )?;
    let state = rig.client("ip", &["-6", "neigh", "show", &v, "dev", "eth0"])?;
    assert!(
        state.contains("STALE"),
        "the entry did not go STALE: {state}"
    );
    let _ = rig.client("ping", &["-6", "-c", "1", "-W", "1", &v]);
    ferrolb_tests::process::wait_for(
        "the client's entry for the VIP to be REACHABLE again",
        TIMEOUT,
        || {
            Ok(rig
                .client("ip", &["-6", "neigh", "show", &v, "dev", "eth0"])?
                .contains("REACHABLE")
                .then_some(()))
        },
    )?;
    assert!(
        rig.metric(i, &requests)? > before,
        "the owner saw no solicitation for the probe"
    );
    assert_eq!(rig.client_neighbour(vip)?, Some(owner_mac.clone()));
    assert!(
        rig.metric(
            i,
            &format!("ferrolb_speaker_replies_sent_total{{ip=\"{v}\"}}")
        )? >= 2.0
    );
    assert_eq!(rig.not_owned_requests_elsewhere(&owner, "ndp")?, 0.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_link_cut_and_back() -> Result<()> {
    let (mut rig, vip, owner) = announced_web("cut", 3, false).await?;
    let veth = rig.host(&owner)?.host_veth.clone();
    let owner_mac = rig.host(&owner)?.mac.clone();

    ferrolb_tests::process::run(
        std::process::Command::new("ip").args(["link", "set", &veth, "down"]),
    )?;
    let cut = LinkRestore(veth.clone());
    let next = rig.curl_until(vip, Duration::from_secs(5), |a| !a.is_empty() && a != owner)?;
    let next_mac = rig.host(&next)?.mac.clone();
    assert_eq!(rig.client_neighbour(vip)?, Some(next_mac.clone()));
    let replies = rig.arping(vip, 2)?;
    assert!(
        !replies.is_empty() && replies.iter().all(|m| *m == next_mac),
        "{replies:?}"
    );

    // Back: the original owner wins the address again and says so; one node answers.
    drop(cut);
    ferrolb_tests::process::wait_for(
        "the client to point at the original owner again",
        TIMEOUT,
        || Ok((rig.client_neighbour(vip)? == Some(owner_mac.clone())).then_some(())),
    )?;
    assert_eq!(rig.curl_until(vip, TIMEOUT, |a| a == owner)?, owner);
    // Each side learns of the other when its heartbeats get through (the kernel re-resolves
    // the peers after the cut): wait until only one speaker owns the address, then only it
    // answers.
    ferrolb_tests::process::wait_for("a single owner after the link is back", TIMEOUT, || {
        let mut total = 0.0;
        for i in 0..3 {
            total += rig.metric(i, "ferrolb_speaker_owned_ips")?;
        }
        Ok((total == 1.0).then_some(()))
    })?;
    let replies = rig.arping(vip, 3)?;
    assert_eq!(replies, vec![owner_mac.clone(); 3]);
    // The stand-in overwrote the condition meanwhile; the owner, which never stopped owning the
    // address in its own view, notices and says it announces again.
    assert_eq!(rig.wait_announcer("web", Some(&next)).await?, owner);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_over_at_once_and_unprivileged_speakers_suffice() -> Result<()> {
    // Speakers run as uid 65534 with CAP_NET_RAW as their only capability.
    let (mut rig, vip, owner) = announced_web("term", 3, true).await?;

    let i = rig.index_of(&owner)?;
    rig.speaker(i)?.terminate(Duration::from_secs(5))?;
    rig.speakers[i] = None;
    // With a Leave the others take over without waiting for dead-after: well under a second.
    let next = rig.curl_until(vip, Duration::from_secs(2), |a| !a.is_empty() && a != owner)?;
    let next_mac = rig.host(&next)?.mac.clone();
    let replies = rig.arping(vip, 2)?;
    assert!(
        !replies.is_empty() && replies.iter().all(|m| *m == next_mac),
        "{replies:?}"
    );
    assert_eq!(rig.wait_announcer("web", Some(&owner)).await?, next);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_addresses_spread_over_three_nodes() -> Result<()> {
    let mut rig = Rig::start("spread", 3, &[], false).await?;
    rig.pool_and_advertisement("spread", &["203.0.113.0/25"], json!({}))
        .await?;
    for n in 0..100 {
        rig.scenario.service(&format!("s{n}"), json!({})).await?;
    }
    ferrolb_tests::process::wait_for(
        "100 owned addresses over the speakers",
        Duration::from_secs(60),
        || {
            let mut total = 0.0;
            for i in 0..3 {
                total += rig.metric(i, "ferrolb_speaker_owned_ips")?;
            }
            Ok((total == 100.0).then_some(()))
        },
    )?;
    let mut counts = Vec::new();
    for i in 0..3 {
        counts.push(rig.metric(i, "ferrolb_speaker_owned_ips")?);
    }
    assert!(
        counts.iter().all(|c| *c < 50.0 && *c > 0.0),
        "owned per node: {counts:?}"
    );
    Ok(())
}

/// Brings a cut link back up when dropped (also when the test fails).
struct LinkRestore(String);

impl Drop for LinkRestore {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "set", &self.0, "up"])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_needs_no_api_server() -> Result<()> {
    let (mut rig, vip, owner) = announced_web("noapi", 3, false).await?;

    // Cut every node off the apiserver, then kill the owner: the others still take over.
    let server = ferrolb_tests::control_plane::shared().server().to_string();
    let names: Vec<String> = rig.lab.nodes().iter().map(|h| h.name.clone()).collect();
    let block = cut_from_apiserver(&names, &server)?;
    let probe = rig.lab.nodes()[0]
        .command("curl")
        .args([
            "-sk",
            "--max-time",
            "1",
            &format!("{}/healthz", server.trim_end_matches('/')),
        ])
        .output()?;
    assert!(
        !probe.status.success(),
        "the block does not hold: the node reaches the apiserver"
    );
    let i = rig.index_of(&owner)?;
    rig.speaker(i)?.kill();
    rig.speakers[i] = None;
    let next = rig.curl_until(vip, Duration::from_secs(5), |a| !a.is_empty() && a != owner)?;
    let next_mac = rig.host(&next)?.mac.clone();
    let replies = rig.arping(vip, 2)?;
    assert!(
        !replies.is_empty() && replies.iter().all(|m| *m == next_mac),
        "{replies:?}"
    );
    // The apiserver back: the new owner's condition write, failed meanwhile, goes through.
    drop(block);
    assert_eq!(rig.wait_announcer("web", Some(&owner)).await?, next);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interface_changes_arrive_through_netlink() -> Result<()> {
    let (mut rig, vip, owner) = announced_web("netlink", 2, false).await?;
    let i = rig.index_of(&owner)?;
    let host = rig.host(&owner)?.clone();
    assert_eq!(rig.metric(i, "ferrolb_speaker_interfaces")?, 1.0);
    let gratuitous = format!("ferrolb_speaker_gratuitous_sent_total{{ip=\"{vip}\"}}");

    // The speaker never polls interfaces: only netlink notifications can tell it. (While eth0
    // is down its metrics are out of reach: its log says what it did.)
    let log = rig.speaker(i)?.log().to_path_buf();
    let count =
        |what: &str| -> Result<usize> { Ok(std::fs::read_to_string(&log)?.matches(what).count()) };
    let started = count("answering on interface")?;
    host.exec("ip", &["link", "set", "eth0", "down"])?;
    let up = LinkUpInside(host.clone());
    ferrolb_tests::process::wait_for("the speaker to stop answering on eth0", TIMEOUT, || {
        Ok((count("stopped answering on interface")? == 1).then_some(()))
    })?;
    drop(up);
    ferrolb_tests::process::wait_for("the speaker to answer on eth0 again", TIMEOUT, || {
        Ok((count("answering on interface")? > started + 1).then_some(()))
    })?;
    let before = rig.metric(i, &gratuitous)?;
    // Back on the interface, it announces what it owns there again.
    ferrolb_tests::process::wait_for(
        "a gratuitous ARP after the interface came back",
        TIMEOUT,
        || Ok((rig.metric(i, &gratuitous)? > before).then_some(())),
    )?;
    assert_eq!(rig.wait_announcer("web", None).await?, owner);
    assert_eq!(rig.curl_until(vip, TIMEOUT, |a| a == owner)?, owner);
    Ok(())
}

/// Sets a namespace's eth0 up again when dropped.
struct LinkUpInside(ferrolb_tests::lab::Host);

impl Drop for LinkUpInside {
    fn drop(&mut self) {
        let _ = self.0.exec("ip", &["link", "set", "eth0", "up"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_key_rotation_needs_no_restart_and_loses_no_heartbeat() -> Result<()> {
    // A 3 s window: both speakers read the key file every 2 s, so they pick the new key up
    // less than a window apart, as the rotation rule requires.
    let rig = Rig::start("keyrot", 2, &["--memberlist-key-rotation-window=3s"], false).await?;
    let mut rig = rig;
    rig.pool_and_advertisement("keyrot", &["198.51.100.240-198.51.100.241"], json!({}))
        .await?;
    rig.scenario.service("web", json!({})).await?;
    let vip = ip(&rig.scenario.wait_any_ip("web").await?[0]);
    let owner = rig.wait_announcer("web", None).await?;
    let bad_mac = r#"ferrolb_speaker_membership_packets_received_total{result="bad_mac"}"#;
    let accepted = r#"ferrolb_speaker_membership_packets_received_total{result="accepted"}"#;
    let changes = "ferrolb_speaker_ownership_changes_total";
    let before: Vec<[f64; 3]> = (0..2)
        .map(|i| {
            Ok([
                rig.metric(i, bad_mac)?,
                rig.metric(i, accepted)?,
                rig.metric(i, changes)?,
            ])
        })
        .collect::<Result<_>>()?;

    // The Secret's new key, written as the kubelet does: a new file renamed over the old.
    let key_file = rig.key_file().to_path_buf();
    let staged = key_file.with_extension("new");
    std::fs::write(&staged, "a-new-membership-key-of-32-bytes\n")?;
    std::fs::rename(&staged, &key_file)?;

    // Each speaker logs when it retires the old key: 2 s to read the file, then two windows.
    let done = "the old key is no longer accepted";
    ferrolb_tests::process::wait_for(
        "both speakers to finish the rotation",
        Duration::from_secs(20),
        || {
            let logs: Vec<String> = (0..2)
                .map(|i| Ok(std::fs::read_to_string(rig.speaker(i)?.log())?))
                .collect::<Result<_>>()?;
            Ok(logs.iter().all(|l| l.contains(done)).then_some(()))
        },
    )?;
    // Heartbeats kept flowing, none was refused, and nothing moved.
    for (i, [bad, ok, moved]) in before.into_iter().enumerate() {
        assert_eq!(
            rig.metric(i, bad_mac)?,
            bad,
            "speaker {i} refused heartbeats during the rotation"
        );
        assert!(
            rig.metric(i, accepted)? > ok + 100.0,
            "speaker {i} heard too few heartbeats"
        );
        assert_eq!(
            rig.metric(i, changes)?,
            moved,
            "speaker {i} changed ownership"
        );
    }
    assert_eq!(rig.wait_announcer("web", None).await?, owner);
    assert_eq!(rig.curl_until(vip, TIMEOUT, |a| !a.is_empty())?, owner);
    Ok(())
}
