//! The BGP section of `cargo xtask bench`: failover through a real router (FRR with bfdd) when
//! a node drops off the network, with BFD and, as the baseline, with the shortest hold timer BGP
//! allows and no BFD; and announcing 10,000 Service IPs to FRR over three sessions.
//!
//! ```text
//!  remote ns: ferrolb-bench-prober ── router ns (FRR, ECMP) ── lab0 ── node1..3 (speakers)
//! ```
//!
//! Failover time is what a client sees: from the moment the node's link goes down to the end
//! of the last request that failed (every request after it, for two seconds, succeeded).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_tests::bgplab::BgpRig;
use ferrolb_tests::process::run as run_command;
use ferrolb_tests::router::{Kind, NODE_ASN, ROUTER_ASN, ROUTER_IPV4, ROUTER_IPV6, RouterConfig};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde_json::json;
use tokio::task::block_in_place;

use super::figure::{self, Figure};
use super::procfs;
use super::speaker::failover::{Prober, realtime_us};
use super::stats::{median, percentile};

/// Lab nodes.
const NODES: usize = 3;
/// Quiet time after the last failed request that ends a trial.
const QUIET: Duration = Duration::from_secs(2);
/// Longest a trial may take.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// What to measure.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    /// Trials with BFD.
    pub trials: usize,
    /// Trials of the baseline (3 s hold time, no BFD).
    pub baseline_trials: usize,
    /// Service IPs announced to FRR for the route figure (0: skip it).
    pub routes: usize,
}

/// One failover trial.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Trial {
    /// The node cut off.
    pub node: String,
    /// Milliseconds from the cut until the last failed request ended (0: none failed).
    pub recovered_ms: Option<f64>,
    /// Requests that failed meanwhile.
    pub failed_requests: usize,
    /// Milliseconds until the router's RIB no longer had the node as next hop.
    pub withdrawn_ms: Option<f64>,
    /// Why the trial has no figure.
    pub error: Option<String>,
}

/// The trials of one configuration.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FailoverRun {
    /// What was configured.
    pub label: String,
    /// Each trial.
    pub trials: Vec<Trial>,
}

impl FailoverRun {
    fn recovered(&self) -> Vec<f64> {
        self.trials.iter().filter_map(|t| t.recovered_ms).collect()
    }

    fn withdrawn(&self) -> Vec<f64> {
        self.trials.iter().filter_map(|t| t.withdrawn_ms).collect()
    }
}

/// Announcing many routes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Routes {
    /// Service IPs.
    pub routes: usize,
    /// Sessions of the node measured.
    pub sessions: usize,
    /// Seconds from the BGPAdvertisement's creation until FRR held every route on every session.
    pub announce_s: f64,
    /// The speaker's VmRSS with the Services and no BGP, MiB.
    pub rss_without_bgp_mib: f64,
    /// The speaker's VmRSS with its 3 sessions up and nothing announced yet, MiB.
    pub rss_sessions_mib: f64,
    /// The speaker's VmRSS with every route sent on every session, MiB.
    pub rss_with_bgp_mib: f64,
    /// The speaker's VmRSS once every Service's Announced condition names BGP too (10,000
    /// status writes done) and 5 s passed, MiB.
    pub rss_settled_mib: f64,
    /// The speaker's peak VmRSS (VmHWM) by then, MiB.
    pub hwm_mib: f64,
}

/// The section.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BgpSection {
    /// What was asked for.
    pub params: Option<Params>,
    /// Headline figures against the issue's goals.
    pub figures: Vec<Figure>,
    /// With BFD (300 ms x 3).
    pub bfd: FailoverRun,
    /// With BFD at 100 ms x 3.
    pub bfd_fast: FailoverRun,
    /// Without BFD, hold time 3 s.
    pub hold_timer: FailoverRun,
    /// The route figure.
    pub routes: Option<Routes>,
    /// Seconds in all.
    pub duration_s: f64,
}

/// Runs the section.
pub async fn run(params: &Params, prober: &Path) -> Result<BgpSection> {
    let started = Instant::now();
    let mut section = BgpSection {
        params: Some(params.clone()),
        ..Default::default()
    };
    eprintln!("==> bgp: failover with BFD ({} trials)", params.trials);
    section.bfd = failover(
        "BFD 300 ms x 3, hold time 9 s",
        json!({"bfdProfile": "bench", "holdTime": "9s"}),
        Some(300),
        params.trials,
        prober,
    )
    .await?;
    eprintln!(
        "==> bgp: failover with BFD at 100 ms x 3 ({} trials)",
        params.trials
    );
    section.bfd_fast = failover(
        "BFD 100 ms x 3, hold time 9 s",
        json!({"bfdProfile": "bench", "holdTime": "9s"}),
        Some(100),
        params.trials,
        prober,
    )
    .await?;
    if params.baseline_trials > 0 {
        eprintln!(
            "==> bgp: failover without BFD, hold time 3 s ({} trials)",
            params.baseline_trials
        );
        section.hold_timer = failover(
            "no BFD, hold time 3 s (RFC 4271's shortest)",
            json!({"holdTime": "3s"}),
            None,
            params.baseline_trials,
            prober,
        )
        .await?;
    }
    if params.routes > 0 {
        eprintln!("==> bgp: announcing {} Service IPs to FRR", params.routes);
        section.routes = Some(routes(params.routes).await?);
    }
    section.duration_s = started.elapsed().as_secs_f64();
    section.summarise();
    Ok(section)
}

/// Failover trials; `bfd_ms`: BFD intervals on both sides (the router's profile and the
/// BFDProfile), or no BFD.
async fn failover(
    label: &str,
    peer_extra: serde_json::Value,
    bfd_ms: Option<u32>,
    trials: usize,
    prober_bin: &Path,
) -> Result<FailoverRun> {
    let mut router = RouterConfig::new(Kind::Frr);
    router.bfd = bfd_ms.is_some();
    router.bfd_interval_ms = bfd_ms.unwrap_or(300);
    let bfd = bfd_ms.is_some();
    let b = BgpRig::start("bench-bgp", NODES, &[], router).await?;
    if let Some(ms) = bfd_ms {
        let profile: ferrolb_crds::BFDProfile = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "BFDProfile",
            "metadata": {"name": "bench"},
            "spec": {"receiveInterval": ms, "transmitInterval": ms, "detectMultiplier": 3},
        }))?;
        Api::<ferrolb_crds::BFDProfile>::all(b.rig.scenario.client.clone())
            .patch(
                "bench",
                &PatchParams::apply("ferrolb-bench").force(),
                &Patch::Apply(&profile),
            )
            .await?;
    }
    b.rig
        .scenario
        .pool(
            "bench-bgp",
            json!({"addresses": ["198.51.100.200-198.51.100.210"]}),
        )
        .await?;
    let mut peer =
        json!({"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": ROUTER_IPV4.to_string()});
    ferrolb_tests::scenario::merge(&mut peer, peer_extra);
    b.peer("router", peer).await?;
    b.advertisement("bench-bgp", json!({"ipAddressPools": ["bench-bgp"]}))
        .await?;
    b.rig.scenario.service("web", json!({})).await?;
    let vip: IpAddr = b.rig.scenario.wait_any_ip("web").await?[0].parse()?;
    let prefix = format!("{vip}/32");
    let all: Vec<IpAddr> = b
        .rig
        .lab
        .nodes()
        .iter()
        .map(|h| IpAddr::V4(h.ipv4))
        .collect();
    let mut run_ = FailoverRun {
        label: label.into(),
        trials: Vec::new(),
    };
    for i in 0..trials {
        settle(&b, &prefix, &all, bfd).await?;
        let host = b.rig.lab.nodes()[i % NODES].clone();
        let t = trial(&b, &host, vip, &prefix, prober_bin).await;
        let trial = t.unwrap_or_else(|e| Trial {
            node: host.name.clone(),
            error: Some(format!("{e:#}")),
            ..Default::default()
        });
        eprintln!(
            "    trial {}/{trials} ({}): recovered {:?} ms, withdrawn {:?} ms, {} failed requests{}",
            i + 1,
            trial.node,
            trial.recovered_ms,
            trial.withdrawn_ms,
            trial.failed_requests,
            trial
                .error
                .as_deref()
                .map(|e| format!(", {e}"))
                .unwrap_or_default()
        );
        run_.trials.push(trial);
        run_command(std::process::Command::new("ip").args(["link", "set", &host.host_veth, "up"]))?;
    }
    Ok(run_)
}

/// Waits until every node is next hop again (and BFD is up with each, when used).
async fn settle(b: &BgpRig, prefix: &str, all: &[IpAddr], bfd: bool) -> Result<()> {
    b.wait_next_hops(prefix, all).await?;
    if bfd {
        let want: BTreeSet<IpAddr> = all.iter().copied().collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while b.router.bfd_up()? != want {
            if Instant::now() > deadline {
                bail!(
                    "BFD never came up with every node: {:?}",
                    b.router.bfd_up()?
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Let the prober's first connections find every path before the cut.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

async fn trial(
    b: &BgpRig,
    host: &ferrolb_tests::Host,
    vip: IpAddr,
    prefix: &str,
    prober_bin: &Path,
) -> Result<Trial> {
    let mut prober = Prober::start(&b.router.remote, prober_bin, vip)?;
    block_in_place(|| prober.wait_for(0, Duration::from_secs(10), |l| l.ok && l.body == host.name))
        .context("the prober never reached the node before the cut")?;
    let t0 = realtime_us();
    let cut = Instant::now();
    run_command(std::process::Command::new("ip").args(["link", "set", &host.host_veth, "down"]))?;
    let mut withdrawn_ms = None;
    let deadline = cut + TRIAL_TIMEOUT;
    loop {
        if withdrawn_ms.is_none() {
            let hops = b.router.rib()?.get(prefix).map(|e| e.next_hops.clone());
            if hops.is_some_and(|h| !h.contains(&IpAddr::V4(host.ipv4))) {
                withdrawn_ms = Some(cut.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let lines = prober.lines();
        let last_failure = lines
            .iter()
            .filter(|l| l.end_us > t0 && !l.ok)
            .map(|l| l.end_us)
            .max();
        let last_ok_after = lines
            .iter()
            .filter(|l| l.ok)
            .map(|l| l.end_us)
            .max()
            .unwrap_or(0);
        let quiet_since = last_failure.unwrap_or(t0);
        if withdrawn_ms.is_some() && last_ok_after > quiet_since + QUIET.as_micros() as u64 {
            let lines = prober.stop();
            let failed = lines.iter().filter(|l| l.end_us > t0 && !l.ok).count();
            return Ok(Trial {
                node: host.name.clone(),
                recovered_ms: Some(last_failure.map_or(0.0, |f| (f - t0) as f64 / 1000.0)),
                failed_requests: failed,
                withdrawn_ms: withdrawn_ms.map(procfs::round3),
                error: None,
            });
        }
        if Instant::now() > deadline {
            bail!("no quiet {QUIET:?} within {TRIAL_TIMEOUT:?} of the cut");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn routes(count: usize) -> Result<Routes> {
    let b = BgpRig::start("bench-bgp-routes", 1, &[], RouterConfig::new(Kind::Frr)).await?;
    let node = b.rig.lab.nodes()[0].clone();
    // A second IPv4 address on the node: a third session, from it (FRR tells peers apart by
    // their address).
    node.exec("ip", &["addr", "add", "198.51.100.111/24", "dev", "eth0"])?;
    // Never sent traffic: 198.18.0.0/15 is the benchmark range (RFC 2544).
    b.rig
        .scenario
        .pool("bench-routes", json!({"addresses": ["198.18.0.0/17"]}))
        .await?;
    let services = b.rig.scenario.services();
    let ns = b.rig.scenario.ns.clone();
    let mut created = 0usize;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let services = services.clone();
        let ns = ns.clone();
        tasks.spawn(async move {
            let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("r{i}"), "namespace": ns},
                // 10,000 node ports do not exist (the range holds 2,768).
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}],
                         "allocateLoadBalancerNodePorts": false},
            }))?;
            services.create(&PostParams::default(), &svc).await?;
            anyhow::Ok(())
        });
        while tasks.len() >= 64 {
            tasks.join_next().await.context("join")???;
            created += 1;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r??;
        created += 1;
    }
    eprintln!("    {created} Services created; waiting for every address");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = services
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|s| !ferrolb_tests::scenario::ingress(s).is_empty())
            .count();
        if n >= count {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {n} of {count} Services got an address");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The speaker has read them all once its memory stops growing; then the baseline.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = b.rig.speakers[0].as_ref().context("speaker")?.pid();
    let without = procfs::memory(pid).vm_rss_mib;
    for (name, address, source) in [
        ("router", ROUTER_IPV4.to_string(), None),
        (
            "router-second",
            ROUTER_IPV4.to_string(),
            Some("198.51.100.111"),
        ),
        ("router-v6", ROUTER_IPV6.to_string(), None),
    ] {
        let mut peer = json!({"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": address});
        if let Some(s) = source {
            peer["sourceAddress"] = json!(s);
        }
        b.peer(name, peer).await?;
    }
    let sessions = [
        node.ipv4.to_string(),
        "198.51.100.111".to_string(),
        node.ipv6.to_string(),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.router.established()?.len() < sessions.len() {
        if Instant::now() > deadline {
            bail!(
                "only {:?} of the 3 sessions came up",
                b.router.established()?
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_sessions = procfs::memory(pid).vm_rss_mib;
    let t0 = Instant::now();
    b.advertisement("bench-routes", json!({"ipAddressPools": ["bench-routes"]}))
        .await?;
    let deadline = t0 + Duration::from_secs(600);
    loop {
        let received = received_per_peer(&b)?;
        if sessions
            .iter()
            .all(|s| received.get(s).copied().unwrap_or(0) >= count)
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("FRR holds {received:?} after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let announce_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_routes = procfs::memory(pid).vm_rss_mib;
    eprintln!("    waiting for every Service's Announced condition to name BGP");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let over_bgp = services
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|s| {
                ferrolb_tests::l2lab::announced(s).is_some_and(|c| c.message.contains("over BGP"))
            })
            .count();
        if over_bgp >= count {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {over_bgp} of {count} Services' conditions name BGP after 600 s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let settled = procfs::memory(pid);
    Ok(Routes {
        routes: count,
        sessions: sessions.len(),
        announce_s: procfs::round3(announce_s),
        rss_without_bgp_mib: procfs::round3(without),
        rss_sessions_mib: procfs::round3(with_sessions),
        rss_with_bgp_mib: procfs::round3(with_routes),
        rss_settled_mib: procfs::round3(settled.vm_rss_mib),
        hwm_mib: procfs::round3(settled.vm_hwm_mib),
    })
}

/// Prefixes received from each neighbor (`show bgp summary json`, both families).
fn received_per_peer(b: &BgpRig) -> Result<std::collections::BTreeMap<String, usize>> {
    let json: serde_json::Value = serde_json::from_str(&b.router.vtysh("show bgp summary json")?)?;
    let mut out = std::collections::BTreeMap::new();
    for family in ["ipv4Unicast", "ipv6Unicast"] {
        for (peer, v) in json[family]["peers"].as_object().into_iter().flatten() {
            *out.entry(peer.clone()).or_default() += v["pfxRcd"].as_u64().unwrap_or(0) as usize;
        }
    }
    Ok(out)
}

impl BgpSection {
    fn summarise(&mut self) {
        let mut figures = Vec::new();
        let fast = self.bfd_fast.recovered();
        let bfd = self.bfd.recovered();
        if !bfd.is_empty() {
            let p50 = median(&bfd);
            let p99 = percentile(&bfd, 99.0);
            figures.push(Figure::new(
                "failover with BFD 300 ms x 3, node cut off, p50",
                p50,
                "ms",
                "< 500",
                Some(p50 < 500.0),
            ));
            figures.push(Figure::new(
                "failover with BFD 300 ms x 3, node cut off, p99",
                p99,
                "ms",
                "< 1000",
                Some(p99 < 1000.0),
            ));
            let w = self.bfd.withdrawn();
            figures.push(Figure::new(
                "router withdrew the node (BFD 300 ms x 3), p50",
                median(&w),
                "ms",
                "",
                None,
            ));
        }
        if !fast.is_empty() {
            figures.push(Figure::new(
                "failover with BFD 100 ms x 3, node cut off, p50",
                median(&fast),
                "ms",
                "",
                None,
            ));
            figures.push(Figure::new(
                "failover with BFD 100 ms x 3, node cut off, p99",
                percentile(&fast, 99.0),
                "ms",
                "",
                None,
            ));
        }
        let hold = self.hold_timer.recovered();
        if !hold.is_empty() {
            figures.push(Figure::new(
                "failover without BFD, hold time 3 s, p50",
                median(&hold),
                "ms",
                "",
                None,
            ));
            figures.push(Figure::new(
                "failover without BFD, hold time 3 s, p99",
                percentile(&hold, 99.0),
                "ms",
                "",
                None,
            ));
        }
        if let Some(r) = &self.routes {
            figures.push(Figure::new(
                &format!(
                    "{} routes on {} sessions: until FRR held all",
                    r.routes, r.sessions
                ),
                r.announce_s,
                "s",
                "",
                None,
            ));
            figures.push(Figure::new(
                "speaker VmRSS, Services without BGP",
                r.rss_without_bgp_mib,
                "MiB",
                "",
                None,
            ));
            for (what, mib) in [
                (
                    "speaker VmRSS, 3 sessions up, nothing announced",
                    r.rss_sessions_mib,
                ),
                (
                    "speaker VmRSS, every route sent on 3 sessions",
                    r.rss_with_bgp_mib,
                ),
                (
                    "speaker VmRSS, every Service's condition rewritten, 5 s later",
                    r.rss_settled_mib,
                ),
                ("speaker peak VmRSS (VmHWM)", r.hwm_mib),
            ] {
                figures.push(Figure::new(what, mib, "MiB", "", None));
            }
        }
        self.figures = figures;
    }

    /// The section in Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## BGP\n");
        let _ = writeln!(
            s,
            "3-node lab, FRR 8.4 (bgpd, bfdd, zebra with ECMP) in a router namespace, the prober in the remote client namespace behind it; each trial cuts one node's link (the router's side stays up) · {:.0} s in all\n",
            self.duration_s
        );
        figure::table(&mut s, &self.figures);
        for run_ in [&self.bfd, &self.bfd_fast, &self.hold_timer] {
            if run_.trials.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "\n{}: recovered (ms) per trial: {}",
                run_.label,
                run_.trials
                    .iter()
                    .map(|t| t.recovered_ms.map_or_else(
                        || format!("error ({})", t.error.clone().unwrap_or_default()),
                        figure::fmt
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        s
    }
}
