//! What the speaker says about a node that undermines it:
//!
//! - a node whose own kernel answers ARP/NDP for a LoadBalancer IP (kube-proxy IPVS without
//!   `strictARP`, a VIP on `lo`): reproduced for real in the lab, seen from the client with
//!   arping/ndisc6, reported by that node's speaker (log, metric, Warning Event) and cleared once
//!   fixed;
//! - a speaker without `CAP_NET_RAW`: an error line saying what to change, `/readyz` 503, a
//!   metric, and no crash loop.
//!
//! The speakers run as uid 65534 with CAP_NET_RAW only: the checks need nothing more.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use ferrolb_crds::contract::reason;
use ferrolb_tests::daemon::{self, Daemon};
use ferrolb_tests::l2lab::{Rig, TIMEOUT};
use ferrolb_tests::lab::Host;
use ferrolb_tests::process::wait_for;
use ferrolb_tests::speaker::{self, METRICS_PORT};
use ferrolb_tests::{Lab, control_plane, rbac};
use serde_json::json;

/// The fix the speaker must name for an address on another interface.
const SYSCTL_FIX: &str =
    "sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2";

fn answered(family: &str) -> String {
    format!("ferrolb_speaker_kernel_answered_addresses{{family=\"{family}\",interface=\"eth0\"}}")
}

fn log_count(path: &Path, what: &str) -> Result<usize> {
    Ok(std::fs::read_to_string(path)?.matches(what).count())
}

fn distinct(macs: Vec<String>) -> BTreeSet<String> {
    macs.into_iter().collect()
}

/// A rig of two unprivileged speakers (checking the kernel every second) and Service `name`
/// of `spec` with an announced address; the address, the owner, and the other node.
async fn two_nodes_and_a_service(
    rig_name: &str,
    pool: &str,
    name: &str,
    spec: serde_json::Value,
) -> Result<(Rig, IpAddr, String, String)> {
    let mut rig = Rig::start(rig_name, 2, &["--kernel-check-interval=1s"], true).await?;
    rig.pool_and_advertisement(rig_name, &[pool], json!({}))
        .await?;
    rig.scenario.service(name, spec).await?;
    let vip: IpAddr = rig.scenario.wait_any_ip(name).await?[0].parse()?;
    let owner = rig.wait_announcer(name, None).await?;
    let other = rig
        .lab
        .nodes()
        .iter()
        .map(|h| h.name.clone())
        .find(|n| *n != owner)
        .context("a second node")?;
    // arping and ndisc6 print gratuitous frames too: let the takeover burst (4 rounds over 2 s)
    // end first.
    let i = rig.index_of(&owner)?;
    let sample = format!("ferrolb_speaker_gratuitous_sent_total{{ip=\"{vip}\"}}");
    let rounds = if vip.is_ipv4() { 8.0 } else { 4.0 };
    wait_for("the takeover burst to end", TIMEOUT, || {
        Ok((rig.metric(i, &sample)? >= rounds).then_some(()))
    })?;
    for n in 0..2 {
        assert_eq!(
            rig.metric(
                n,
                "ferrolb_speaker_missing_capability{capability=\"CAP_NET_RAW\"}"
            )?,
            0.0
        );
    }
    Ok((rig, vip, owner, other))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vip_on_lo_of_another_node_is_answered_by_its_kernel_reported_and_cleared() -> Result<()>
{
    let (mut rig, vip, owner, other) = two_nodes_and_a_service(
        "khazard4",
        "198.51.100.200-198.51.100.210",
        "web",
        json!({}),
    )
    .await?;
    let owner_mac = rig.host(&owner)?.mac.clone();
    let other_host: Host = rig.host(&other)?.clone();
    let other_mac = other_host.mac.clone();
    let (o, n) = (rig.index_of(&owner)?, rig.index_of(&other)?);
    let log = rig.speaker(n)?.log().to_path_buf();

    assert_eq!(distinct(rig.arping(vip, 3)?), [owner_mac.clone()].into());
    assert_eq!(rig.metric(n, &answered("ipv4"))?, 0.0);

    // A fresh namespace has Linux's defaults: arp_ignore 0 (answer for any local address).
    for key in [
        "net.ipv4.conf.all.arp_ignore",
        "net.ipv4.conf.eth0.arp_ignore",
    ] {
        assert_eq!(
            other_host.exec("sysctl", &["-n", key])?.trim(),
            "0",
            "{key}"
        );
    }
    // What kube-proxy in IPVS mode does with kube-ipvs0 (a dummy link this kernel lacks), or
    // an admin with lo: the VIP becomes a local address of a node that does not own it.
    other_host.exec("ip", &["addr", "add", &format!("{vip}/32"), "dev", "lo"])?;

    // The hazard is real: the client now gets two MACs for the VIP.
    let macs = wait_for("a second MAC in arping", TIMEOUT, || {
        let macs = distinct(rig.arping(vip, 3)?);
        Ok((macs.len() > 1).then_some(macs))
    })?;
    assert_eq!(macs, [owner_mac.clone(), other_mac.clone()].into());

    // The other node's speaker says so: metric, log line, Warning Event with the fix.
    wait_for(
        "the other speaker's kernel_answered_addresses",
        TIMEOUT,
        || Ok((rig.metric(n, &answered("ipv4"))? == 1.0).then_some(())),
    )?;
    let lines = std::fs::read_to_string(&log)?;
    let line = lines
        .lines()
        .find(|l| l.contains(&format!("{other}'s kernel answers ARP for {vip} on eth0")))
        .with_context(|| format!("no warning line in {}", log.display()))?;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("configured on lo of"), "{line}");
    assert!(line.contains(SYSCTL_FIX), "{line}");
    assert!(line.contains("strictARP: true"), "{line}");
    let note = rig
        .scenario
        .wait_event("web", reason::KERNEL_ANSWERS_FOR_ADDRESS)
        .await?;
    assert!(
        note.starts_with(&format!(
            "{other}'s kernel answers ARP for {vip} on eth0 itself"
        )),
        "{note}"
    );
    assert!(note.contains(SYSCTL_FIX), "{note}");
    assert!(note.contains("strictARP: true"), "{note}");
    assert!(note.contains("--ipvs-strict-arp"), "{note}");
    // The owner's kernel does not hold the address: nothing to say there.
    assert_eq!(rig.metric(o, &answered("ipv4"))?, 0.0);
    // Reported once, not on every check.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        log_count(&log, &format!("{other}'s kernel answers ARP for {vip}"))?,
        1
    );
    assert_eq!(
        rig.scenario
            .events("web", reason::KERNEL_ANSWERS_FOR_ADDRESS)
            .await?
            .len(),
        1
    );

    // The fix the message names (the arp_ignore half; arp_announce only changes which source
    // address the node's own requests carry).
    other_host.exec("sysctl", &["-qw", "net.ipv4.conf.all.arp_ignore=1"])?;
    let macs = wait_for("a single MAC in arping again", TIMEOUT, || {
        let macs = distinct(rig.arping(vip, 3)?);
        Ok((macs.len() == 1).then_some(macs))
    })?;
    assert_eq!(macs, [owner_mac].into());
    wait_for("the metric to clear", TIMEOUT, || {
        Ok((rig.metric(n, &answered("ipv4"))? == 0.0).then_some(()))
    })?;
    let metrics = rig.speaker(n)?.metrics()?;
    assert!(
        !metrics.contains("ferrolb_speaker_kernel_answered_addresses{"),
        "{metrics}"
    );
    wait_for("the all-clear in the log", TIMEOUT, || {
        Ok((log_count(
            &log,
            &format!("{other}'s kernel no longer answers for {vip} on eth0"),
        )? == 1)
            .then_some(()))
    })?;
    let cleared = rig
        .scenario
        .wait_event("web", reason::KERNEL_NO_LONGER_ANSWERS)
        .await?;
    assert!(
        cleared.starts_with(&format!("{other}'s kernel no longer answers")),
        "{cleared}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_vip_on_eth0_of_another_node_is_answered_by_its_kernel_reported_and_cleared()
-> Result<()> {
    let spec = json!({ "spec": { "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack" } });
    let (mut rig, vip, owner, other) =
        two_nodes_and_a_service("khazard6", "2001:db8:1::200-2001:db8:1::20f", "web6", spec)
            .await?;
    let owner_mac = rig.host(&owner)?.mac.clone();
    let other_host: Host = rig.host(&other)?.clone();
    let n = rig.index_of(&other)?;
    let log = rig.speaker(n)?.log().to_path_buf();
    assert_eq!(rig.ndisc6(vip)?, vec![owner_mac.clone()]);

    // On lo an IPv6 address is never answered for on eth0: no hazard.
    other_host.exec(
        "ip",
        &["-6", "addr", "add", &format!("{vip}/128"), "dev", "lo"],
    )?;
    // With duplicate address detection, the owner's speaker defends the address and the
    // other kernel gives it up (dadfailed): no hazard either.
    other_host.exec(
        "ip",
        &["-6", "addr", "add", &format!("{vip}/128"), "dev", "eth0"],
    )?;
    wait_for("DAD to fail on the other node", TIMEOUT, || {
        let shown = other_host.exec("ip", &["-6", "addr", "show", "dev", "eth0"])?;
        Ok(shown.contains("dadfailed").then_some(()))
    })?;
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(rig.metric(n, &answered("ipv6"))?, 0.0);
    assert_eq!(rig.ndisc6(vip)?, vec![owner_mac.clone()]);

    // Without DAD the kernel takes the address and answers for it.
    other_host.exec(
        "ip",
        &["-6", "addr", "del", &format!("{vip}/128"), "dev", "eth0"],
    )?;
    other_host.exec(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &format!("{vip}/128"),
            "dev",
            "eth0",
            "nodad",
        ],
    )?;
    let macs = wait_for("a second advertisement", TIMEOUT, || {
        let macs = distinct(rig.ndisc6(vip)?);
        Ok((macs.len() > 1).then_some(macs))
    })?;
    assert_eq!(macs, [owner_mac.clone(), other_host.mac.clone()].into());
    wait_for(
        "the other speaker's IPv6 kernel_answered_addresses",
        TIMEOUT,
        || Ok((rig.metric(n, &answered("ipv6"))? == 1.0).then_some(())),
    )?;
    let note = rig
        .scenario
        .wait_event("web6", reason::KERNEL_ANSWERS_FOR_ADDRESS)
        .await?;
    assert!(
        note.starts_with(&format!(
            "{other}'s kernel answers neighbour solicitations for {vip} on eth0 itself"
        )),
        "{note}"
    );
    assert!(
        note.contains(&format!("ip -6 addr del {vip}/128 dev eth0")),
        "{note}"
    );
    assert!(
        log_count(
            &log,
            &format!("{other}'s kernel answers neighbour solicitations for {vip}")
        )? == 1
    );

    // The fix: remove it.
    other_host.exec(
        "ip",
        &["-6", "addr", "del", &format!("{vip}/128"), "dev", "eth0"],
    )?;
    wait_for("the IPv6 metric to clear", TIMEOUT, || {
        Ok((rig.metric(n, &answered("ipv6"))? == 0.0).then_some(()))
    })?;
    let macs = wait_for("one advertiser again", TIMEOUT, || {
        let macs = distinct(rig.ndisc6(vip)?);
        Ok((macs.len() == 1).then_some(macs))
    })?;
    assert_eq!(macs, [owner_mac].into());
    Ok(())
}

/// Starts the speaker in `host` as uid 65534 with `bounding` as its bounding set
/// (setpriv syntax) and no capability in any other set: what a Pod whose policy dropped
/// NET_RAW, or one running as non-root, gives it.
fn speaker_without_net_raw(
    host: &Host,
    kubeconfig: &Path,
    key: &Path,
    log: &Path,
    bounding: &str,
) -> Result<Daemon> {
    let addr = SocketAddr::new(IpAddr::V4(host.ipv4), METRICS_PORT);
    let mut cmd = speaker::setpriv_command(host, "-all", bounding, &speaker::binary()?);
    cmd.args(["run", "--node-name", &host.name])
        .arg("--memberlist-key-file")
        .arg(key)
        .arg(format!("--metrics-addr={addr}"))
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info");
    let mut daemon = Daemon::spawn(
        &format!("capability-less speaker in {}", host.name),
        cmd,
        log,
        addr,
        false,
    )?;
    daemon.wait_for_200("/healthz", Duration::from_secs(20))?;
    Ok(daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_speaker_without_cap_net_raw_says_what_to_change_and_stays_unready() -> Result<()> {
    // The speaker's RBAC names the ferrolb resources: the authorizer grants them once they exist.
    let cp = tokio::task::spawn_blocking(control_plane::shared_with_crds).await?;
    let release = control_plane::unique_name("nocap");
    let dir = control_plane::process_dir().join("speakers").join(&release);
    let kubeconfig = {
        let (dir, release) = (dir.clone(), release.clone());
        tokio::task::spawn_blocking(move || {
            rbac::speaker_kubeconfig(cp, &release, &control_plane::unique_name("spk"), &dir)
        })
        .await??
    };
    let key = dir.join("memberlist.key");
    speaker::write_key_file(&key)?;
    let (_credentials, kubeconfig, key) =
        speaker::credentials_for_nobody(&kubeconfig, &key, &dir, "nocap")?;
    let lab = tokio::task::spawn_blocking(|| Lab::create(1)).await??;
    lab.register_nodes(&cp.client().await?).await?;
    let host = lab.nodes()[0].clone();

    // Not even in the bounding set (the Pod or a policy dropped it), then in the bounding set
    // but not effective (a non-root container: added capabilities are never ambient).
    for (bounding, why) in [
        ("-all", "not in its bounding set"),
        ("-all,+net_raw", "runs as uid 65534"),
    ] {
        let log = dir.join(format!("speaker-nocap{bounding}.log"));
        let mut speaker = speaker_without_net_raw(&host, &kubeconfig, &key, &log, bounding)?;
        let line = wait_for("the error line", Duration::from_secs(10), || {
            speaker.check_running()?;
            Ok(std::fs::read_to_string(&log)?
                .lines()
                .find(|l| l.contains("cannot open raw packet sockets"))
                .map(str::to_string))
        })?;
        assert!(line.contains("ERROR"), "{line}");
        assert!(
            line.contains(
                "node1: the speaker cannot open raw packet sockets to answer ARP/NDP on eth0"
            ),
            "{line}"
        );
        assert!(line.contains("Operation not permitted"), "{line}");
        assert!(line.contains("CAP_NET_RAW"), "{line}");
        assert!(line.contains(why), "{bounding}: {line}");
        if bounding == "-all" {
            assert!(line.contains("add [NET_RAW]"), "{line}");
            assert!(line.contains("PodSecurity"), "{line}");
        } else {
            assert!(line.contains("runAsUser: 0"), "{line}");
        }
        let (code, body) = daemon::get(speaker.addr(), "/readyz")?;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("CAP_NET_RAW"), "{body}");
        assert_eq!(
            speaker.metric("ferrolb_speaker_missing_capability{capability=\"CAP_NET_RAW\"}")?,
            Some(1.0)
        );
        // It stays up, unready, out of the membership (nothing listens on its UDP port).
        std::thread::sleep(Duration::from_secs(2));
        speaker.check_running()?;
        assert!(!speaker.ready());
        let udp = host.exec("ss", &["-Hlun", "sport = :7946"])?;
        assert!(udp.trim().is_empty(), "{udp}");
        speaker.terminate(Duration::from_secs(10))?;
    }
    Ok(())
}
