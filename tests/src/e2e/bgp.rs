//! BGP mode as users run it: the chart installed with `helm install` on the testbed's real
//! nodes, a real FRR router on the nodes' LAN (BFD on), and the `remote` client behind the
//! router reaching LoadBalancer IPs only through the routes the speaker pods announced, then
//! through the real kube-proxy to the echo pods.
//!
//! ```text
//!  remote 203.0.113.10 ── router (FRR, ECMP) ══ lab0 ══ node1..3 (speaker pods, kube-proxy)
//! ```

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ferrolb_crds::contract::condition::ANNOUNCED;
use serde_json::{Value, json};

use super::Driver;
use super::probes::{self, EchoAnswer};
use super::scenarios::{self, APP_NAMESPACE, Families, NETWORK_TIMEOUT, TIMEOUT};
use super::testbed::Testbed;
use crate::lab::Host;
use crate::process::wait_for;
use crate::router::{self, Kind, NODE_ASN, ROUTER_ASN, ROUTER_IPV4, Router, RouterConfig};

/// The BGP-only pool the journey applies (no L2Advertisement selects it).
pub const POOL: &str = "routed";
/// The BGPPeer every node's speaker opens a session with.
pub const PEER: &str = "router";

/// What [`journey`] measured.
#[derive(Clone, Debug, Default)]
pub struct BgpReport {
    /// BGPPeer applied until the router has an Established session with every node.
    pub sessions_up: Duration,
    /// Service created until the remote client's first answer through BGP.
    pub service_to_remote_answer: Duration,
    /// Node powered off until the first of 10 requests in a row from the remote client that
    /// succeeded (the route no longer uses the node).
    pub node_power_off_failover: Duration,
}

fn step(what: &str) {
    eprintln!("==> e2e (BGP, testbed): {what}");
}

/// The whole BGP journey: install, router, BGPPeer with BFD and graceful restart, a dual-stack
/// Service announced by every node, ECMP over the nodes with `externalTrafficPolicy: Local`,
/// a speaker pod restart that withdraws nothing, a node power-off withdrawn by BFD.
pub fn journey(tb: &mut Testbed) -> Result<BgpReport> {
    let mut report = BgpReport::default();
    scenarios::install(tb)?;
    step("start FRR on the nodes' LAN, BFD on, the remote client behind it");
    let router = Router::start(RouterConfig {
        bfd: true,
        ..RouterConfig::new(Kind::Frr)
    })?;
    let hosts: Vec<Host> = tb.lab().nodes().to_vec();
    for host in &hosts {
        Router::route_from(host)?;
    }
    let result = (|| {
        report.sessions_up = apply_bgp_config(tb, &router, &hosts)?;
        report.service_to_remote_answer = check_cluster_policy_service(tb, &router, &hosts)?;
        check_local_policy_ecmp(tb, &router, &hosts)?;
        check_speaker_restart_withdraws_nothing(tb, &router, &hosts[0])?;
        report.node_power_off_failover = check_power_off(tb, &router, &hosts)?;
        Ok(report)
    })();
    result.map_err(|e: anyhow::Error| {
        anyhow::anyhow!(
            "{e:#}\nrouter RIB: {:?}\nrouter log:\n{}",
            router.rib(),
            router.log_tail()
        )
    })
}

/// Applies the pool, a BFDProfile with MetalLB's defaults, the BGPPeer (BFD, graceful restart)
/// and the BGPAdvertisement with kubectl; waits for a session and BFD with every node and for
/// each node's entry in the BGPPeer's status. Returns how long the sessions took.
fn apply_bgp_config(tb: &Testbed, router: &Router, hosts: &[Host]) -> Result<Duration> {
    step("apply an IPAddressPool, a BFDProfile, a BGPPeer and a BGPAdvertisement");
    let started = Instant::now();
    let manifests = [
        json!({"kind": "IPAddressPool", "metadata": {"name": POOL},
               "spec": {"addresses": ["198.51.100.200-198.51.100.210", "2001:db8:1::200-2001:db8:1::20f"]}}),
        json!({"kind": "BFDProfile", "metadata": {"name": "default"}}),
        json!({"kind": "BGPPeer", "metadata": {"name": PEER},
               "spec": {"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": ROUTER_IPV4.to_string(),
                        "holdTime": "9s", "bfdProfile": "default", "enableGracefulRestart": true}}),
        json!({"kind": "BGPAdvertisement", "metadata": {"name": POOL},
               "spec": {"ipAddressPools": [POOL]}}),
    ];
    for mut m in manifests {
        m["apiVersion"] = json!("ferrolb.io/v1beta1");
        tb.kubectl_input(&["apply", "-f", "-"], &m.to_string())?;
    }
    let all: BTreeSet<IpAddr> = hosts.iter().map(|h| IpAddr::V4(h.ipv4)).collect();
    wait_for(
        "the router to have a session and BFD up with every node",
        TIMEOUT,
        || Ok((router.established()? == all && router.bfd_up()? == all).then_some(())),
    )?;
    let took = started.elapsed();
    step("every node's session is in the BGPPeer's status");
    let names: BTreeSet<String> = hosts.iter().map(|h| h.name.clone()).collect();
    wait_for(
        &format!("BGPPeer {PEER} status.sessions: Established, BFD up, on every node"),
        NETWORK_TIMEOUT,
        || {
            let peer: Value =
                serde_json::from_str(&tb.kubectl(&["get", "bgppeer", PEER, "-o", "json"])?)?;
            let up: BTreeSet<String> = peer["status"]["sessions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["state"] == "Established" && s["bfd"] == "Up")
                .filter_map(|s| Some(s["node"].as_str()?.to_string()))
                .collect();
            Ok((up == names).then_some(()))
        },
    )?;
    Ok(took)
}

/// A dual-stack `externalTrafficPolicy: Cluster` Service over echo pods: the router's route to
/// each IP has every node as next hop, the remote client reaches both IPs through kube-proxy,
/// and the Service's Announced condition names the nodes and the peer. Returns the time from
/// creating the Service to the remote client's first answer.
fn check_cluster_policy_service(tb: &Testbed, router: &Router, hosts: &[Host]) -> Result<Duration> {
    scenarios::deploy_echo(tb, "echo-bgp", 3, None)?;
    let started = Instant::now();
    scenarios::expose(tb, "echo-bgp", "echo-bgp", Families::Dual, false)?;
    let ips = scenarios::wait_ingress(tb, "echo-bgp", 2)?;
    let mut first_answer = None;
    for ip in &ips {
        step(&format!(
            "the router routes {ip} over every node; the remote client reaches it"
        ));
        let hops: BTreeSet<IpAddr> = hosts.iter().map(|h| next_hop(h, *ip)).collect();
        wait_next_hops(router, *ip, &hops)?;
        remote_until(router, *ip)?;
        first_answer.get_or_insert(started.elapsed());
    }
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let mut last = String::new();
    let message = wait_for(
        "the Service's Announced condition to name the BGP announcers",
        NETWORK_TIMEOUT,
        || {
            let m = tb.kubectl(&[
                "get",
                "service",
                "echo-bgp",
                "-n",
                APP_NAMESPACE,
                "-o",
                &format!(r#"jsonpath={{.status.conditions[?(@.type=="{ANNOUNCED}")].message}}"#),
            ])?;
            last.clone_from(&m);
            Ok(m.contains("over BGP").then_some(m))
        },
    )
    .with_context(|| {
        format!(
            "the last message was {last:?}; the Service: {}; speaker logs:\n{}",
            tb.kubectl(&[
                "get",
                "service",
                "echo-bgp",
                "-n",
                APP_NAMESPACE,
                "-o",
                "json"
            ])
            .unwrap_or_default(),
            tb.kubectl(&[
                "logs",
                "-n",
                scenarios::NAMESPACE,
                "-l",
                "app.kubernetes.io/component=speaker",
                "--tail=20"
            ])
            .unwrap_or_default()
        )
    })?;
    ensure!(
        message.starts_with(&format!("{} announce ", names.join(", ")))
            && message.ends_with(&format!(" over BGP to {PEER}")),
        "Announced condition of echo-bgp: {message:?}"
    );
    first_answer.context("the Service has no IP")
}

/// `externalTrafficPolicy: Local` with one pod on each of the first two nodes: only those
/// nodes announce, and the remote client's connections are spread over both (ECMP) and reach
/// the pods with the client's own address.
fn check_local_policy_ecmp(tb: &Testbed, router: &Router, hosts: &[Host]) -> Result<()> {
    let with_pods: Vec<&str> = hosts[..2].iter().map(|h| h.name.as_str()).collect();
    scenarios::deploy_echo_on_each(tb, "echo-bgp-local", &with_pods)?;
    scenarios::expose(tb, "echo-bgp-local", "echo-bgp-local", Families::V4, true)?;
    let ip = scenarios::wait_ingress(tb, "echo-bgp-local", 1)?[0];
    step(&format!(
        "Local policy: only {with_pods:?} announce {ip}; ECMP spreads the remote client over them"
    ));
    let hops: BTreeSet<IpAddr> = hosts[..2].iter().map(|h| next_hop(h, ip)).collect();
    wait_next_hops(router, ip, &hops)?;
    let mut answered = BTreeSet::new();
    for _ in 0..40 {
        let answer = remote_until(router, ip)?;
        ensure!(
            with_pods.contains(&answer.node.as_str())
                && answer.client == router::REMOTE_IPV4.to_string(),
            "Local policy: expected a pod on {with_pods:?} seeing the remote client's own address {}, got {answer:?}",
            router::REMOTE_IPV4
        );
        answered.insert(answer.node);
        if answered.len() == with_pods.len() {
            return Ok(());
        }
    }
    anyhow::bail!("40 connections from the remote client all went to {answered:?}: no ECMP")
}

/// Deletes the speaker pod on `host`'s node (graceful restart on): while the DaemonSet brings
/// a new pod up and its session back, the router keeps `host` as a next hop of every route.
fn check_speaker_restart_withdraws_nothing(
    tb: &Testbed,
    router: &Router,
    host: &Host,
) -> Result<()> {
    let hop = IpAddr::V4(host.ipv4);
    let ip = scenarios::wait_ingress(tb, "echo-bgp", 2)?
        .into_iter()
        .find(IpAddr::is_ipv4)
        .context("echo-bgp has no IPv4")?;
    let prefix = format!("{ip}/32");
    let pod = scenarios::speaker_pod_on(tb, &host.name, "jsonpath={.items[0].metadata.name}")?;
    step(&format!(
        "delete speaker pod {pod} on {}: graceful restart keeps its route to {ip}",
        host.name
    ));
    tb.kubectl(&[
        "delete",
        "pod",
        "-n",
        scenarios::NAMESPACE,
        &pod,
        "--wait=false",
    ])?;
    let mut lost = None;
    let mut session_dropped = false;
    let started = Instant::now();
    wait_for(
        &format!(
            "a new speaker pod on {} to re-establish its session",
            host.name
        ),
        TIMEOUT,
        || {
            let hops = router
                .rib()?
                .get(&prefix)
                .map(|e| e.next_hops.clone())
                .unwrap_or_default();
            if !hops.contains(&hop) && lost.is_none() {
                lost = Some((started.elapsed(), hops));
            }
            let established = router.established()?.contains(&hop);
            session_dropped |= !established;
            let new_pod =
                scenarios::speaker_pod_on(tb, &host.name, "jsonpath={.items[0].metadata.name}")?;
            Ok((session_dropped && established && new_pod != pod).then_some(()))
        },
    )?;
    ensure!(
        lost.is_none(),
        "the router dropped {} from {prefix} during the speaker's restart: {lost:?}",
        host.name
    );
    wait_next_hops(
        router,
        ip,
        &tb.lab()
            .nodes()
            .iter()
            .map(|h| IpAddr::V4(h.ipv4))
            .collect(),
    )?;
    Ok(())
}

/// Powers off the second node, one of the two with a pod behind the Local Service: BFD tells the
/// router at once, the route uses only the first node, and the remote client's requests all
/// succeed through it (Local: the first node serves from its own pod, so the dead node's pod,
/// Ready in the EndpointSlices until the node controller notices, is never picked). Returns the
/// time from the power cut to the first of 10 requests in a row that succeeded.
fn check_power_off(tb: &mut Testbed, router: &Router, hosts: &[Host]) -> Result<Duration> {
    let ip = scenarios::wait_ingress(tb, "echo-bgp-local", 1)?[0];
    let (survivor, gone) = (&hosts[0], &hosts[1]);
    step(&format!(
        "power {} off: BFD withdraws it from {ip}; the remote client is served by {}",
        gone.name, survivor.name
    ));
    let started = Instant::now();
    tb.power_off(&gone.name)?;
    wait_next_hops(router, ip, &BTreeSet::from([IpAddr::V4(survivor.ipv4)]))?;
    let withdrawn = started.elapsed();
    ensure!(
        withdrawn < Duration::from_secs(9),
        "{} withdrawn after {withdrawn:?}: by the 9 s hold time, not BFD",
        gone.name
    );
    // The first of 10 successes in a row.
    let mut streak: Option<(Duration, u32)> = None;
    wait_for(
        "10 requests in a row from the remote client to succeed",
        NETWORK_TIMEOUT,
        || {
            streak = match (
                remote_answer(router, ip, Duration::from_millis(500)),
                streak,
            ) {
                (Ok(a), Some((first, n))) if a.node == survivor.name => Some((first, n + 1)),
                (Ok(a), None) if a.node == survivor.name => Some((started.elapsed(), 1)),
                _ => None,
            };
            Ok(streak.and_then(|(first, n)| (n == 10).then_some(first)))
        },
    )
}

/// The next hop `host` announces for `ip`: its address of `ip`'s family on the LAN.
fn next_hop(host: &Host, ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(host.ipv4),
        IpAddr::V6(_) => IpAddr::V6(host.ipv6),
    }
}

/// Waits until the router's route to `ip` has exactly the next hops `hops`.
fn wait_next_hops(router: &Router, ip: IpAddr, hops: &BTreeSet<IpAddr>) -> Result<()> {
    let prefix = match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    };
    wait_for(
        &format!("the router's route to {prefix} via exactly {hops:?}"),
        NETWORK_TIMEOUT,
        || {
            let rib = router.rib()?;
            Ok(rib
                .get(&prefix)
                .is_some_and(|e| e.next_hops == *hops)
                .then_some(()))
        },
    )
}

/// One `curl` from the remote client to `ip`, parsed.
fn remote_answer(router: &Router, ip: IpAddr, timeout: Duration) -> Result<EchoAnswer> {
    let body = router.remote.exec(
        "curl",
        &[
            "-sS",
            "--max-time",
            &format!("{:.1}", timeout.as_secs_f64()),
            &probes::url(ip, 80),
        ],
    )?;
    EchoAnswer::parse(&body)
}

/// Curls `ip` from the remote client until it answers.
fn remote_until(router: &Router, ip: IpAddr) -> Result<EchoAnswer> {
    wait_for(
        &format!("the remote client's curl to {ip}"),
        NETWORK_TIMEOUT,
        || Ok(remote_answer(router, ip, Duration::from_secs(1)).ok()),
    )
}
