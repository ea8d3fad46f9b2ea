//! Control-plane faults against the real controller, three real speakers in lab node namespaces
//! and the test's own apiserver and etcd: the apiserver killed and restarted, etcd killed and
//! restarted, a node cut off from the apiserver (a partition, both ways) and healed. Each asserts that the announced VIP keeps answering throughout, that no address
//! moves, that readiness reports the outage, and that a Service created once the control plane
//! is back gets its address and its announcement within the recovery bounds.
//!
//! The bound asserted here is [`RECOVERY_BOUND`] (5 s), looser than the goal of 2 s so that a
//! loaded CI machine does not fail the suite; each run prints its figures, and
//! `FERROLB_FAULT_RUNS=5` repeats the outage for a p50/max. kube's default watch backoff took
//! 40-63 s here.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferrolb_crds::contract::condition;
use ferrolb_tests::control_plane::{self, ControlPlane};
use ferrolb_tests::l2lab::{ApiBlock, Rig, announced};
use ferrolb_tests::scenario::{self, ingress};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::task::block_in_place;

/// How long each outage lasts: longer than readiness's grace, and long enough that kube's
/// default backoff would have grown to several seconds.
const OUTAGE: Duration = Duration::from_secs(12);
/// The recovery bound the test asserts (goal: 2 s).
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

fn runs() -> usize {
    std::env::var("FERROLB_FAULT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// What a fault does to the control plane; `restart` returns when the apiserver is ready again.
struct Fault {
    name: &'static str,
    /// Whether the speakers' watches fail too. Without etcd the apiserver keeps their watches
    /// open (from its watch cache) and they only see no events: the speakers stay ready, and
    /// only the controller, whose Lease renewals fail, reports the outage.
    speakers_notice: bool,
    kill: fn(&ControlPlane),
    restart: fn(&ControlPlane) -> Result<Instant>,
}

const APISERVER: Fault = Fault {
    name: "apiserver",
    speakers_notice: true,
    kill: ControlPlane::kill_apiserver,
    restart: ControlPlane::restart_apiserver,
};

const ETCD: Fault = Fault {
    name: "etcd",
    speakers_notice: false,
    kill: ControlPlane::kill_etcd,
    restart: ControlPlane::restart_etcd,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_killed_and_restarted() -> Result<()> {
    outages(APISERVER).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_and_restarted() -> Result<()> {
    outages(ETCD).await
}

/// How long the partition lasts: past the TCP keepalive and user timeouts of the speaker's
/// apiserver connections (~10 s), so its watches fail and reconnect, and past readiness's grace.
const PARTITION: Duration = Duration::from_secs(20);

/// One node, its speaker cut off from the apiserver while the controller is not: the VIP keeps
/// answering, readiness says the apiserver is unreachable, and once the partition heals the
/// speaker sees a Service created meanwhile and announces it within the recovery bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cut_from_the_apiserver_and_healed() -> Result<()> {
    let mut rig = Rig::start("fault-partition", 1, &[], false).await?;
    rig.pool_and_advertisement("partition", &["198.51.100.232-198.51.100.236"], json!({}))
        .await?;
    rig.scenario.service("web", json!({})).await?;
    let vip: IpAddr = rig.scenario.wait_any_ip("web").await?[0].parse()?;
    let owner = rig.wait_announcer("web", None).await?;
    let server = control_plane::shared().server().to_string();
    let node = rig.lab.nodes()[0].name.clone();

    let block = ApiBlock::new(std::slice::from_ref(&node), &server)?;
    let cut = Instant::now();
    // Created during the partition: the controller gives it an address, the speaker cannot
    // know yet.
    let api: Api<Service> = rig.scenario.services();
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "during"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 8080}],
                     "selector": {"app": "web"}},
        }))?,
    )
    .await?;
    rig.scenario.wait_any_ip("during").await?;
    let mut reported = false;
    while cut.elapsed() < PARTITION {
        let answer = block_in_place(|| rig.curl(vip)).context("the VIP stopped answering")?;
        assert_eq!(answer, owner, "the VIP moved during the partition");
        if !reported {
            let (code, body) = rig.speaker(0)?.readyz()?;
            reported = code == 503 && body.contains("cannot reach the apiserver");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(
        reported,
        "the cut-off speaker never said it cannot reach the apiserver"
    );
    let during = api.get("during").await?;
    ensure!(
        announced(&during).is_none(),
        "the speaker announced a Service it could not have seen"
    );
    drop(block);
    let healed = Instant::now();
    let took = loop {
        let svc = api.get("during").await?;
        if announced(&svc).is_some_and(|c| c.status == "True") {
            break healed.elapsed();
        }
        ensure!(
            healed.elapsed() < Duration::from_secs(30),
            "no announcement 30 s after the heal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "partition of {PARTITION:?} healed: Service created meanwhile announced {took:?} later"
    );
    ensure!(took < RECOVERY_BOUND, "announced {took:?} after the heal");
    block_in_place(|| rig.speaker(0)?.wait_ready(Duration::from_secs(10)))?;
    assert_eq!(rig.wait_announcer("web", None).await?, owner);
    Ok(())
}

/// A control-plane process killed by the test; started again at the latest when dropped, so a
/// failing test leaves the shared control plane whole for the next.
struct Outage<'a> {
    cp: &'a ControlPlane,
    fault: &'a Fault,
}

impl Outage<'_> {
    /// Starts the process again; returns when the apiserver is ready.
    fn end(self) -> Result<Instant> {
        let ready = (self.fault.restart)(self.cp);
        std::mem::forget(self);
        ready
    }
}

impl Drop for Outage<'_> {
    fn drop(&mut self) {
        if let Err(e) = (self.fault.restart)(self.cp) {
            eprintln!("restarting {} after a failed test: {e:#}", self.fault.name);
        }
    }
}

/// Figures of one outage.
#[derive(Debug)]
struct Recovery {
    /// Apiserver ready -> the new Service has an address.
    address: Duration,
    /// Apiserver ready -> a speaker announces it (condition written).
    announced: Duration,
}

async fn outages(fault: Fault) -> Result<()> {
    let mut rig = Rig::start(&format!("fault-{}", fault.name), 3, &[], false).await?;
    rig.pool_and_advertisement(fault.name, &["198.51.100.220-198.51.100.230"], json!({}))
        .await?;
    rig.scenario.service("web", json!({})).await?;
    let vip: IpAddr = rig.scenario.wait_any_ip("web").await?[0].parse()?;
    let owner = rig.wait_announcer("web", None).await?;
    assert_eq!(
        rig.curl_until(vip, Duration::from_secs(10), |a| !a.is_empty())?,
        owner
    );
    let cp = control_plane::shared();

    let mut figures = Vec::new();
    for run in 0..runs() {
        (fault.kill)(cp);
        let outage = Outage { cp, fault: &fault };
        let down = Instant::now();
        // Throughout the outage the owner keeps answering; once readiness's grace has passed,
        // the controller and every speaker say their watches are down.
        let mut reported = false;
        while down.elapsed() < OUTAGE {
            let answer = block_in_place(|| rig.curl(vip)).with_context(|| {
                format!(
                    "{} outage, run {run}: the VIP stopped answering",
                    fault.name
                )
            })?;
            assert_eq!(answer, owner, "the VIP moved during the outage");
            if !reported && down.elapsed() > Duration::from_secs(7) {
                check_not_ready(&mut rig, &fault)?;
                reported = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ready = block_in_place(|| outage.end())?;
        let name = format!("after-{run}");
        let recovery = serve_new_service(&rig, &name, ready).await?;
        eprintln!(
            "{} outage {run}: {:?} down; new Service addressed {:?} and announced {:?} after the apiserver was ready",
            fault.name,
            ready - down,
            recovery.address,
            recovery.announced
        );
        ensure!(
            recovery.address < RECOVERY_BOUND && recovery.announced < RECOVERY_BOUND,
            "{} outage {run}: recovery {recovery:?} exceeds {RECOVERY_BOUND:?}",
            fault.name
        );
        // Nothing moved: web keeps its address and its announcer, and the pool counts both.
        assert_eq!(rig.scenario.wait_any_ip("web").await?, [vip.to_string()]);
        assert_eq!(rig.wait_announcer("web", None).await?, owner);
        let assigned = 2 + run as u128;
        rig.scenario
            .wait_pool(fault.name, &format!("{assigned} assigned"), |p| {
                p.status.as_ref().map(|s| s.assigned_ipv4.0) == Some(assigned)
            })
            .await?;
        check_ready_again(&mut rig)?;
        figures.push(recovery);
    }
    eprintln!("{} outages: {figures:?}", fault.name);
    Ok(())
}

/// Creates Service `name` (retrying while the test's own connections recover) and measures, from
/// `ready`, when it has an address and when a speaker announces it.
async fn serve_new_service(rig: &Rig, name: &str, ready: Instant) -> Result<Recovery> {
    let api: Api<Service> = rig.scenario.services();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 8080}],
                 "selector": {"app": "web"}},
    }))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match api.create(&PostParams::default(), &svc).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("creating {name}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e).context(format!("creating Service {name}")),
        }
    }
    let mut address = None;
    loop {
        if let Ok(svc) = api.get(name).await {
            if address.is_none() && !ingress(&svc).is_empty() {
                address = Some(ready.elapsed());
            }
            if let (Some(address), Some(c)) = (address, announced(&svc))
                && c.status == "True"
            {
                return Ok(Recovery {
                    address,
                    announced: ready.elapsed(),
                });
            }
        }
        if Instant::now() > deadline {
            bail!(
                "Service {name}: no address or no {} condition 30 s after the apiserver was ready",
                condition::ANNOUNCED
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The controller (and every speaker, when its watches fail) answers `/readyz` 503, saying it
/// cannot reach the apiserver.
fn check_not_ready(rig: &mut Rig, fault: &Fault) -> Result<()> {
    let name = fault.name;
    let (code, body) = scenario::controller().lock().unwrap().readyz()?;
    ensure!(
        code == 503 && body.contains("cannot reach the apiserver"),
        "{name} down for 7 s: the controller answers /readyz {code} {body:?}"
    );
    if !fault.speakers_notice {
        return Ok(());
    }
    for i in 0..rig.speakers.len() {
        let speaker = rig.speaker(i)?;
        let (code, body) = speaker.readyz()?;
        ensure!(
            code == 503 && body.contains("cannot reach the apiserver"),
            "{name} down for 7 s: speaker {i} answers /readyz {code} {body:?}"
        );
    }
    Ok(())
}

/// The controller and every speaker are ready again within a few seconds.
fn check_ready_again(rig: &mut Rig) -> Result<()> {
    block_in_place(|| {
        scenario::controller()
            .lock()
            .unwrap()
            .wait_ready(Duration::from_secs(10))?;
        for i in 0..rig.speakers.len() {
            rig.speaker(i)?.wait_ready(Duration::from_secs(10))?;
        }
        Ok(())
    })
}

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

/// Drops the membership heartbeats (UDP to and from `port`) in the given node namespaces while it
/// lives: a partition between the speakers that the client, on the same LAN, does not see.
struct MembershipSplit(Vec<String>);

impl MembershipSplit {
    fn new(nodes: &[String], port: u16) -> Result<MembershipSplit> {
        let split = MembershipSplit(nodes.to_vec());
        let rules = format!(
            "table inet ferrolb_split {{\n chain out {{\n  type filter hook output priority 0;\n  udp dport {port} drop\n }}\n chain in {{\n  type filter hook input priority 0;\n  udp dport {port} drop\n }}\n}}\n"
        );
        for n in nodes {
            ferrolb_tests::process::run_input(
                std::process::Command::new("ip").args(["netns", "exec", n, "nft", "-f", "-"]),
                &rules,
            )?;
        }
        Ok(split)
    }
}

impl Drop for MembershipSplit {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    n,
                    "nft",
                    "delete",
                    "table",
                    "inet",
                    "ferrolb_split",
                ])
                .status();
        }
    }
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

    let split = MembershipSplit::new(&names, 7946)?;
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
