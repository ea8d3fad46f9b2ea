//! The speaker section of `cargo xtask bench`: failover, ARP reply latency under load, and the
//! speakers' footprint, on a 3-node lab with real speakers (default settings) and the real
//! controller.
//!
//! ```text
//!  Rig (ferrolb_tests::l2lab): control plane + controller, lab node1..3 + client, backends,
//!  one release ferrolb-speaker per node
//!   1. failover  Service `web` (198.51.100.200-210): N trials of SIGKILL of the owner's
//!                speaker, N of cutting its link            -> failover::run_trials
//!   2. footprint 1,000 Services (198.19.0.0/22): owners per node, VmRSS/PSS, idle CPU over
//!                30 s, API writes over a minute            -> measure_footprint
//!   3. ARP load  ferrolb-bench-arp at 10,000 requests/s over the 1,000 owned IPs, and against
//!                one address node1's kernel owns, alternating -> arp_load
//!  -> SpeakerSection, merged into target/bench/report.{json,md} by bench.rs
//! ```

mod arp_load;
pub(crate) mod failover;
pub(crate) mod pcap;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_tests::l2lab::{Rig, announced};
use ferrolb_tests::scenario::ingress;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::ListParams;
use serde::Serialize;
use serde_json::json;
use tokio::task::block_in_place;

use super::procfs::{self, round3};
use super::report::Figure;
use super::stats::{Distribution, median};

pub use failover::Action;

/// Nodes of the lab.
const NODES: usize = 3;
/// The failover Service's pool: inside the lab's VIP range, so the nodes' DNAT rules serve it.
const FAILOVER_POOL: &str = "198.51.100.200-198.51.100.210";
/// The pool of the many Services: RFC 2544 benchmarking space (the documentation ranges hold
/// fewer than 1,000 IPv4 addresses together). Only ARP is ever sent for these addresses, as
/// broadcasts on the lab bridge.
const LOAD_POOL: &str = "198.19.0.0/22";
/// Services of the footprint and ARP figures at most (the pool's size).
const MAX_IPS: usize = 1024;

/// The section's parameters.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    /// Trials per failover action.
    pub trials: usize,
    /// Owned addresses (one Service each) for the footprint and ARP figures.
    pub ips: usize,
    /// ARP requests per second.
    pub arp_rate: u32,
    /// Seconds of each timed ARP run (after a 1 s warm-up).
    pub arp_seconds: f64,
    /// Speaker runs (each followed by a kernel run).
    pub arp_rounds: usize,
    /// Idle CPU window, s.
    pub idle_window_s: f64,
    /// API writes window, s.
    pub writes_window_s: f64,
    /// Speaker flags (none: the defaults).
    pub speaker_args: Vec<String>,
}

impl Params {
    /// The defaults, or the `--quick` ones.
    pub fn new(quick: bool) -> Params {
        Params {
            trials: if quick { 5 } else { 20 },
            ips: 1_000,
            arp_rate: 10_000,
            arp_seconds: if quick { 3.0 } else { 10.0 },
            arp_rounds: if quick { 1 } else { 3 },
            idle_window_s: if quick { 10.0 } else { 30.0 },
            writes_window_s: if quick { 20.0 } else { 60.0 },
            speaker_args: Vec::new(),
        }
    }
}

/// The binaries the section runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `ferrolb-bench-prober`.
    pub prober: PathBuf,
    /// `ferrolb-bench-arp`.
    pub arp: PathBuf,
    /// The speaker's `plan_bench` example.
    pub plan: PathBuf,
    /// The speaker's build, for the report (commit, profile, local changes).
    pub build: String,
}

/// One failover action's trials.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverSummary {
    /// What was done to the owner.
    pub action: Action,
    /// In words.
    pub describe: String,
    /// Action to the new owner's first gratuitous ARP at the client, ms.
    pub garp_ms: Distribution,
    /// Action to the first request another node answered, ms.
    pub http_ms: Distribution,
    /// Trials without a figure.
    pub failed_trials: usize,
    /// Median duration of the action itself (kill and reap, or `ip link set`), ms.
    pub action_ms_median: f64,
    /// Highest machine busy share during a trial.
    pub machine_busy_max: f64,
    /// Each trial.
    pub trials: Vec<failover::Trial>,
}

impl FailoverSummary {
    fn of(action: Action, trials: Vec<failover::Trial>) -> FailoverSummary {
        let garp: Vec<f64> = trials.iter().filter_map(|t| t.garp_ms).collect();
        let http: Vec<f64> = trials.iter().filter_map(|t| t.http_ms).collect();
        let actions: Vec<f64> = trials.iter().map(|t| t.action_ms).collect();
        FailoverSummary {
            action,
            describe: action.describe().into(),
            garp_ms: Distribution::of(&garp),
            http_ms: Distribution::of(&http),
            failed_trials: trials
                .iter()
                .filter(|t| t.garp_ms.is_none() || t.http_ms.is_none())
                .count(),
            action_ms_median: round3(median(&actions)),
            machine_busy_max: trials.iter().map(|t| t.machine_busy).fold(0.0, f64::max),
            trials,
        }
    }
}

/// One speaker's footprint.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpeakerFootprint {
    /// Its node.
    pub node: String,
    /// Its pid.
    pub pid: u32,
    /// `ferrolb_speaker_owned_ips`.
    pub owned_ips: f64,
    /// Settled, before the ARP load: VmRSS, MiB.
    pub vm_rss_mib: f64,
    /// RssAnon, MiB.
    pub rss_anon_mib: f64,
    /// RssFile, MiB.
    pub rss_file_mib: f64,
    /// Proportional set size (shared pages split among their users), MiB.
    pub pss_mib: f64,
    /// VmHWM (peak so far), MiB.
    pub vm_hwm_mib: f64,
    /// CPU seconds (user + system) over the idle window.
    pub idle_cpu_s: f64,
    /// The same as a share of one CPU, %.
    pub idle_cpu_percent: f64,
    /// Context switches per second over the idle window, all threads (how often it wakes).
    pub idle_wakeups_per_s: f64,
    /// CPU seconds over the idle window per thread name (threads of one name summed).
    pub idle_cpu_by_thread: BTreeMap<String, f64>,
    /// API writes since the speaker started (failover trials included).
    pub api_writes_since_start: f64,
    /// API writes from the first Service's create until settled (a condition and an Event per
    /// owned Service is the expected count).
    pub api_writes_creating: f64,
    /// API writes in the writes window.
    pub api_writes_in_window: f64,
    /// VmRSS after the ARP load, MiB.
    pub vm_rss_after_load_mib: f64,
    /// VmHWM after the ARP load, MiB.
    pub vm_hwm_after_load_mib: f64,
}

/// The footprint figure.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Footprint {
    /// Services (one address each) present.
    pub ips: usize,
    /// Sum of owned addresses over the speakers (more than `ips`: two owners somewhere).
    pub owned_total: f64,
    /// Services whose `ferrolb.io/Announced` condition is True.
    pub announced_services: usize,
    /// Creating the Services until every speaker's writes and every watched object were still for
    /// 5 s, s.
    pub settle_s: f64,
    /// Per speaker.
    pub speakers: Vec<SpeakerFootprint>,
    /// Idle window, s.
    pub idle_window_s: f64,
    /// Writes window, s.
    pub writes_window_s: f64,
    /// API writes of all speakers in the window.
    pub api_writes_in_window: f64,
    /// The same per minute.
    pub api_writes_per_minute: f64,
    /// Objects the speakers watch that changed during the writes window, by kind
    /// (resourceVersion compared before and after): each change wakes every speaker.
    pub window_object_changes: BTreeMap<String, usize>,
    /// The controller's API writes during the writes window.
    pub window_controller_writes: f64,
    /// Oddities seen while measuring.
    pub notes: Vec<String>,
}

/// One round of the ARP figure: speakers, the reference responder sleeping and spinning, then
/// the kernel.
#[derive(Clone, Debug, Serialize)]
pub struct ArpRound {
    /// Against the owned addresses.
    pub speaker: arp_load::LoadRun,
    /// Against the minimal responder on node1, blocking between requests.
    pub reference: arp_load::LoadRun,
    /// Against the minimal responder on node1, polling on a whole CPU.
    pub reference_spin: arp_load::LoadRun,
    /// Against the address node1's kernel owns.
    pub kernel: arp_load::LoadRun,
}

/// The ARP figure.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArpSummary {
    /// Owned addresses asked for.
    pub ips: usize,
    /// Requests per second asked for.
    pub rate: u32,
    /// The kernel's address.
    pub kernel_ip: String,
    /// Medians over rounds.
    pub medians: BTreeMap<String, f64>,
    /// Each round.
    pub rounds: Vec<ArpRound>,
}

/// Everything the section measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpeakerSection {
    /// Parameters.
    pub params: Option<Params>,
    /// The speaker binary.
    pub speaker_binary: String,
    /// `git rev-parse HEAD` and whether speaker/ differs from it.
    pub speaker_build: String,
    /// Headline figures.
    pub figures: Vec<Figure>,
    /// Failover, per action.
    pub failover: Vec<FailoverSummary>,
    /// Footprint with many addresses.
    pub footprint: Option<Footprint>,
    /// ARP reply latency.
    pub arp: Option<ArpSummary>,
    /// One pass of the run loop at scale, in-process (`plan_bench`).
    pub plan_pass: Option<PlanPass>,
    /// Anything that looked wrong.
    pub notes: Vec<String>,
    /// Notes made while measuring (kept by [`SpeakerSection::summarise`]).
    #[serde(skip)]
    pub notes_before: Vec<String>,
    /// How the figures are defined.
    pub definitions: String,
    /// Wall time, s.
    pub duration_s: f64,
}

/// `plan_bench`'s output: what one pass of the speaker's run loop costs at scale.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct PlanPass {
    /// LoadBalancer Services (half `externalTrafficPolicy: Local`), one EndpointSlice each.
    pub services: u64,
    /// Nodes, all live.
    pub nodes: u64,
    /// Caches to snapshot, median, ms.
    pub snapshot_ms: f64,
    /// Snapshot comparison, median, ms.
    pub compare_ms: f64,
    /// Election over every group, median, ms.
    pub plan_ms: f64,
}

/// Services and nodes of the plan pass.
const PLAN_SERVICES: u32 = 10_000;
const PLAN_NODES: u32 = 100;

/// Runs `plan_bench` (before the lab starts, on a quiet machine).
fn plan_pass(bin: &Path) -> Result<PlanPass> {
    let mut cmd = std::process::Command::new(bin);
    cmd.args([
        "--services",
        &PLAN_SERVICES.to_string(),
        "--nodes",
        &PLAN_NODES.to_string(),
    ]);
    super::json_output(cmd, "plan_bench")
}

/// How the speaker figures are defined; printed into every report.
pub const DEFINITIONS: &str = "\
- **Lab**: 3 node namespaces and a client on the `lab0` bridge, one release `ferrolb-speaker` \
per node with default settings (heartbeat 50 ms, dead after 250 ms, refresh 20 s), the release \
controller, a backend and VIP DNAT rules per node (kube-proxy's part). Nothing leaves the lab.
- **Failover**: Service `web` gets one address from 198.51.100.200-210. In the client namespace \
`tcpdump -j host --time-stamp-precision micro` captures ARP (host stamps are CLOCK_REALTIME; \
veth has no hardware stamps) and `ferrolb-bench-prober` loops over fresh TCP connections \
`GET http://VIP/` with a 20 ms timeout, printing CLOCK_REALTIME start and end of each. The \
harness reads CLOCK_REALTIME right before the action: SIGKILL of the owner's speaker, or \
`ip link set lab0-nX down` on the host end of the owner's veth. *GARP* = first gratuitous ARP \
(sender = target = VIP, either opcode) from another MAC after that instant; *HTTP* = end of \
the first request after it that another node's backend answered. After SIGKILL the old node's \
kernel and backend still serve, so the client is only moved by the new owner's announcement; \
after a cut, requests fail until then (so the HTTP figure has the prober's 20 ms \
granularity). Between trials the speaker is restarted (or the link brought up) and the harness \
waits until every speaker sees its 2 peers and the original owner alone announces \
(`ferrolb_speaker_owned_ips`), curl from the client reaches it, and 2.5 s more for its \
takeover burst (0, 250 ms, 1 s, 2 s); whether the Service's `ferrolb.io/Announced` condition \
names the owner again within 5 s is recorded (an anomaly if not). Nearest-rank percentiles over \
trials: with 20 trials p99 is the slowest trial.
- **ARP reply latency**: `ferrolb-bench-arp` in the client namespace sends broadcast ARP \
requests at a fixed rate, round robin over the owned addresses, each request's sender address \
one of 64 unused lab addresses (198.51.100.128/26) so that every reply names its request; round \
trip = kernel receive timestamp of the reply (SO_TIMESTAMPNS) - CLOCK_REALTIME just before the \
send. 1 s warm-up not timed. The sender thread runs SCHED_IDLE, standing for a client on \
another machine: a responder woken on its CPU runs as soon as the request's softirq ends, not \
after the sender has armed its next sleep (until 2026-12-02 it ran SCHED_FIFO, which added \
about 10 µs to every userspace reply and nothing to the kernel's). It keeps the schedule (late \
sends go out at once; their lateness is reported). The baseline is the same run against one address added to node1's \
eth0 (`198.19.4.1/32`), which node1's kernel answers; speakers keep running (every speaker and \
node kernel sees every broadcast in both runs). Ratio = speaker percentile / kernel percentile, \
median over rounds. The achieved send rate is reported as measured: sender, 3 speakers, 3 node \
kernels and the bridge share 2 CPUs. Context for the ratio, each round: the same run against \
`ferrolb-bench-arp respond` on node1 answering for as many addresses from 198.19.8.0 (one \
thread, one socket, receive -> set lookup -> send, nothing else): *sleeping* blocks in recv \
between requests like the speaker, *spinning* polls without sleeping on a whole CPU. Their \
ratios show what a plain userspace responder pays on this machine for being woken (on \
whichever CPU the scheduler picks), and what is left without any wake-up.
- **Run-loop pass**: `plan_bench` (release example of the speaker, no apiserver): reflector \
caches filled in-process with 10,000 LoadBalancer Services (half `externalTrafficPolicy: Local`, \
one EndpointSlice of 3 endpoints each) and 100 Nodes; medians of 15 passes of what the run loop \
does after a watch event (caches to snapshot, then election over every group). After a peer's \
death only the election runs.
- **Footprint**: with one Service per owned address (pool 198.19.0.0/22, RFC 2544 \
benchmarking space), once every speaker's API writes and every object the speakers watch \
(Services, EndpointSlices, Nodes, pools, L2Advertisements) have been still for 5 s \
(kube-controller-manager needs about 50 s to write 1,000 EndpointSlices): owned addresses per speaker \
(`ferrolb_speaker_owned_ips`), VmRSS/RssAnon/RssFile/VmHWM from /proc/<pid>/status, PSS from \
/proc/<pid>/smaps_rollup; idle CPU = utime+stime over the idle window (per thread name too), \
wake-ups = context switches of all its threads per second; API writes = the sum of \
`ferrolb_speaker_api_writes_total` over speakers and labels, difference over the writes window \
(the idle window lies inside it; goal: 0). Over the same window the harness also counts the \
controller's writes and the watched objects whose resourceVersion changed, so a busy speaker \
can be told apart from a busy cluster.";

/// Metric sample prefix of the speaker's API writes.
const API_WRITES: &str = "ferrolb_speaker_api_writes_total";

/// Waits (at most `max`) until the machine has been under 25 % busy for 2 s in a row.
pub(super) async fn quiesce(max: Duration) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let give_up = Instant::now() + max;
    let mut quiet = 0;
    while quiet < 2 && Instant::now() < give_up {
        let before = procfs::machine_busy_seconds();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = (procfs::machine_busy_seconds() - before) / cores;
        quiet = if busy < 0.25 { quiet + 1 } else { 0 };
    }
}

/// Runs the section; `on_progress` gets the section after each part, so a later failure keeps
/// what was measured.
pub async fn run(
    params: &Params,
    bins: &Binaries,
    dir: &Path,
    mut on_progress: impl FnMut(&SpeakerSection) -> Result<()>,
) -> Result<SpeakerSection> {
    if params.ips > MAX_IPS {
        bail!("the load pool {LOAD_POOL} holds {MAX_IPS} addresses; ask for fewer IPs");
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let started = Instant::now();
    let mut section = SpeakerSection {
        params: Some(params.clone()),
        speaker_binary: ferrolb_tests::speaker::binary()?.display().to_string(),
        speaker_build: bins.build.clone(),
        definitions: DEFINITIONS.into(),
        ..Default::default()
    };
    eprintln!(
        "==> speaker: run-loop pass, {PLAN_SERVICES} Services over {PLAN_NODES} nodes ({})",
        bins.plan.display()
    );
    section.plan_pass = Some(plan_pass(&bins.plan)?);
    wait_for_cluster_down().await?;
    eprintln!("==> speaker: starting the control plane, controller and a {NODES}-node lab");
    let args: Vec<&str> = params.speaker_args.iter().map(String::as_str).collect();
    let mut rig = Rig::start("bench", NODES, &args, false).await?;

    // 1. Failover.
    if params.trials > 0 {
        rig.pool_and_advertisement("bench-failover", &[FAILOVER_POOL], json!({}))
            .await?;
        rig.scenario.service("web", json!({})).await?;
        let vip: Ipv4Addr = rig.scenario.wait_any_ip("web").await?[0]
            .parse()
            .context("the failover Service got no IPv4 address")?;
        let owner = rig.wait_announcer("web", None).await?;
        let settled = failover::settle(&mut rig, "web", vip, &owner).await?;
        if !settled.condition_current {
            section.notes_before.push(format!(
                "before the failover trials, Service web's Announced condition did not name its owner {owner}"
            ));
        }
        eprintln!("==> speaker: failover of {vip} (owner {owner})");
        let target = failover::Target {
            service: "web".into(),
            vip,
            owner,
        };
        for action in [Action::Kill, Action::LinkDown] {
            let trials =
                failover::run_trials(&mut rig, action, &target, params.trials, &bins.prober, dir)
                    .await?;
            section.failover.push(FailoverSummary::of(action, trials));
            section.summarise();
            on_progress(&section)?;
        }
        rig.scenario.delete_service("web").await?;
    }

    // 2. Footprint, with many owned addresses.
    if params.ips > 0 {
        eprintln!("==> speaker: {} Services in {LOAD_POOL}", params.ips);
        let (footprint, ips) = measure_footprint(&mut rig, params).await?;
        section.footprint = Some(footprint);
        section.summarise();
        on_progress(&section)?;

        // 3. ARP reply latency.
        if params.arp_rounds > 0 {
            let arp = measure_arp(&mut rig, params, bins, &ips).await?;
            section.arp = Some(arp);
            let pids = speaker_pids(&mut rig)?;
            if let Some(f) = section.footprint.as_mut() {
                for (s, (_, pid)) in f.speakers.iter_mut().zip(&pids) {
                    let m = procfs::memory(*pid);
                    s.vm_rss_after_load_mib = round3(m.vm_rss_mib);
                    s.vm_hwm_after_load_mib = round3(m.vm_hwm_mib);
                }
            }
        }
    }
    section.duration_s = round3(started.elapsed().as_secs_f64());
    section.summarise();
    on_progress(&section)?;
    Ok(section)
}

/// A lab made by `cargo xtask cluster up` (another session's, perhaps) keeps every other lab
/// out; wait (at most 15 minutes) for it to go rather than fail. Labs of tests only hold the lab
/// lock, which `Lab::create` waits for anyway.
async fn wait_for_cluster_down() -> Result<()> {
    let marker = Path::new(ferrolb_tests::lab::CLUSTER_MARKER);
    let give_up = Instant::now() + Duration::from_secs(900);
    if marker.exists() {
        eprintln!(
            "==> speaker: a `cargo xtask cluster up` lab is running ({}); waiting up to 15 min for it to go",
            marker.display()
        );
    }
    while marker.exists() {
        if Instant::now() > give_up {
            bail!(
                "a lab made by `cargo xtask cluster up` is still running after 15 min; run `cargo xtask cluster down` first"
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}

fn speaker_pids(rig: &mut Rig) -> Result<Vec<(String, u32)>> {
    (0..NODES)
        .map(|i| {
            let s = rig.speaker(i)?;
            Ok((s.node().to_string(), s.pid()))
        })
        .collect()
}

/// Sum of every `ferrolb_speaker_api_writes_total` sample in a `/metrics` text.
fn api_writes(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(API_WRITES))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The `/metrics` text of speaker `i` (HTTP/1.1, `Connection: close`); a status other than 200
/// fails with the response's head, so an odd answer can be told apart.
pub(super) fn scrape(rig: &mut Rig, i: usize) -> Result<String> {
    use std::io::{Read, Write};
    let addr = rig.speaker(i)?.addr();
    block_in_place(|| {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .with_context(|| format!("reading /metrics from {addr}"))?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .with_context(|| format!("malformed answer from {addr}: {:?}", cut(&text, 300)))?;
        if head.split_whitespace().nth(1) != Some("200") {
            bail!(
                "{addr}/metrics answered {:?} (body starts {:?})",
                head,
                cut(body, 300)
            );
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            bail!("{addr}/metrics answered chunked; expected a plain body");
        }
        Ok(body.to_string())
    })
}

fn cut(s: &str, n: usize) -> &str {
    let mut end = s.len().min(n);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The value of `sample` (exact name and labels) on speaker `i`, 0 when absent.
pub(super) fn metric(rig: &mut Rig, i: usize, sample: &str) -> Result<f64> {
    Ok(ferrolb_tests::daemon::parse_sample(&scrape(rig, i)?, sample).unwrap_or(0.0))
}

/// API writes of speaker `i` since it started.
fn speaker_writes(rig: &mut Rig, i: usize) -> Result<f64> {
    Ok(api_writes(&scrape(rig, i)?))
}

/// `Kind/namespace/name` -> resourceVersion of every object the speakers watch.
async fn watched_versions(client: &kube::Client) -> Result<BTreeMap<String, String>> {
    use ferrolb_crds::{IPAddressPool, L2Advertisement};
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::ResourceExt;
    fn put<K: kube::Resource>(out: &mut BTreeMap<String, String>, kind: &str, items: Vec<K>) {
        for o in items {
            let key = format!(
                "{kind}/{}/{}",
                o.meta().namespace.as_deref().unwrap_or(""),
                o.meta().name.as_deref().unwrap_or("")
            );
            out.insert(key, o.resource_version().unwrap_or_default());
        }
    }
    let lp = ListParams::default();
    let mut out = BTreeMap::new();
    put(
        &mut out,
        "Service",
        kube::Api::<Service>::all(client.clone())
            .list(&lp)
            .await?
            .items,
    );
    put(
        &mut out,
        "EndpointSlice",
        kube::Api::<EndpointSlice>::all(client.clone())
            .list(&lp)
            .await?
            .items,
    );
    put(
        &mut out,
        "Node",
        kube::Api::<Node>::all(client.clone())
            .list(&lp)
            .await?
            .items,
    );
    put(
        &mut out,
        "IPAddressPool",
        kube::Api::<IPAddressPool>::all(client.clone())
            .list(&lp)
            .await?
            .items,
    );
    put(
        &mut out,
        "L2Advertisement",
        kube::Api::<L2Advertisement>::all(client.clone())
            .list(&lp)
            .await?
            .items,
    );
    Ok(out)
}

/// Every API write the shared controller has made (`ferrolb_controller_writes_total`, summed).
fn controller_writes() -> f64 {
    let text = block_in_place(|| {
        ferrolb_tests::scenario::controller()
            .lock()
            .map_err(|_| anyhow::anyhow!("controller lock poisoned"))?
            .metrics()
    })
    .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("ferrolb_controller_writes_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// CPU seconds per thread name and context switches of every thread of a process.
#[derive(Debug, Default)]
struct Threads {
    cpu_s: BTreeMap<String, f64>,
    switches: u64,
}

fn threads(pid: u32) -> Threads {
    let mut t = Threads::default();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return t;
    };
    for task in tasks.filter_map(|e| e.ok()) {
        let tid = task.file_name().to_string_lossy().to_string();
        let dir = format!("/proc/{pid}/task/{tid}");
        let name = std::fs::read_to_string(format!("{dir}/comm"))
            .map(|n| n.trim().to_string())
            .unwrap_or_default();
        *t.cpu_s.entry(name).or_default() += procfs::cpu_seconds(&format!("{pid}/task/{tid}"));
        let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
        t.switches += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    t
}

/// `PSS` from /proc/<pid>/smaps_rollup, MiB (0 when unreadable).
fn pss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| round3(kib / 1024.0))
}

/// Creates the Services, waits until they are announced and the speakers are still, then
/// measures memory, idle CPU and API writes. Returns the owned addresses too.
async fn measure_footprint(rig: &mut Rig, params: &Params) -> Result<(Footprint, Vec<Ipv4Addr>)> {
    rig.pool_and_advertisement("bench-load", &[LOAD_POOL], json!({}))
        .await?;
    let writes_at_start: Vec<f64> = (0..NODES)
        .map(|i| speaker_writes(rig, i))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let names: Vec<String> = (0..params.ips).map(|i| format!("lb-{i:04}")).collect();
    let scenario = &rig.scenario;
    futures::stream::iter(&names)
        .map(|name| async move {
            scenario
                .service(
                    name,
                    json!({"spec": {"allocateLoadBalancerNodePorts": false}}),
                )
                .await
                .with_context(|| format!("creating Service {name}"))
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;

    // Every Service has an address and is announced.
    let services = rig.scenario.services();
    let deadline = Instant::now() + Duration::from_secs(300);
    let (ips, announced_count) = loop {
        let list = services.list(&ListParams::default()).await?;
        let mut ips: Vec<Ipv4Addr> = list
            .items
            .iter()
            .filter(|s| names.contains(s.metadata.name.as_ref().unwrap_or(&String::new())))
            .flat_map(|s| ingress(s).into_iter().filter_map(|ip| ip.parse().ok()))
            .collect();
        ips.sort();
        ips.dedup();
        let announced_count = list
            .items
            .iter()
            .filter(|s: &&Service| announced(s).is_some_and(|c| c.status == "True"))
            .count();
        if ips.len() >= params.ips && announced_count >= params.ips {
            break (ips, announced_count);
        }
        if Instant::now() > deadline {
            bail!(
                "after 300 s only {} of {} Services have an address and {announced_count} are announced",
                ips.len(),
                params.ips
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    // Settled: owned addresses add up, no speaker wrote anything and no watched object changed
    // for 5 s. kube-controller-manager creates the Services' EndpointSlices at its own pace
    // (client QPS 20: about 50 s for 1,000), and every slice written wakes every speaker.
    let mut last: Option<(Vec<f64>, BTreeMap<String, String>)> = None;
    let mut still_since = Instant::now();
    loop {
        let mut writes = Vec::new();
        let mut owned = 0.0;
        for i in 0..NODES {
            writes.push(speaker_writes(rig, i)?);
            owned += metric(rig, i, "ferrolb_speaker_owned_ips")?;
        }
        let now = (writes, watched_versions(&rig.scenario.client).await?);
        if last.as_ref() != Some(&now) || owned < params.ips as f64 {
            last = Some(now);
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_secs(5) {
            break;
        }
        if started.elapsed() > Duration::from_secs(420) {
            bail!(
                "the speakers and the objects they watch did not settle within 420 s (owned {owned}, writes {:?})",
                last.map(|l| l.0)
            );
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let settle_s = round3(started.elapsed().as_secs_f64());
    eprintln!("    settled after {settle_s} s; measuring idle CPU and API writes");
    // The testbed's own scrape (HTTP/1.0, `Speaker::metrics`) once failed here with a status
    // of 426 while this section's HTTP/1.1 scrape works: keep an eye on it.
    let mut notes = Vec::new();
    for i in 0..NODES {
        if let Err(e) = block_in_place(|| rig.speaker(i)?.metrics()) {
            notes.push(format!(
                "the testbed's HTTP/1.0 scrape of node{}'s /metrics failed with {} owned IPs: {e:#}",
                i + 1,
                params.ips
            ));
        }
    }
    quiesce(Duration::from_secs(30)).await;

    let pids = speaker_pids(rig)?;
    let mut speakers: Vec<SpeakerFootprint> = Vec::new();
    for (i, (node, pid)) in pids.iter().enumerate() {
        let m = procfs::memory(*pid);
        speakers.push(SpeakerFootprint {
            node: node.clone(),
            pid: *pid,
            owned_ips: metric(rig, i, "ferrolb_speaker_owned_ips")?,
            vm_rss_mib: round3(m.vm_rss_mib),
            rss_anon_mib: round3(m.rss_anon_mib),
            rss_file_mib: round3(m.rss_file_mib),
            pss_mib: pss_mib(*pid),
            vm_hwm_mib: round3(m.vm_hwm_mib),
            api_writes_since_start: speaker_writes(rig, i)?,
            ..Default::default()
        });
        let last = speakers.last_mut().expect("just pushed");
        last.api_writes_creating = last.api_writes_since_start - writes_at_start[i];
    }
    let writes_before: Vec<f64> = speakers.iter().map(|s| s.api_writes_since_start).collect();
    let objects_before = watched_versions(&rig.scenario.client).await?;
    let controller_before = controller_writes();
    let window_started = Instant::now();
    let cpu_before: Vec<f64> = pids
        .iter()
        .map(|(_, pid)| procfs::cpu_seconds(&pid.to_string()))
        .collect();
    let threads_before: Vec<Threads> = pids.iter().map(|(_, pid)| threads(*pid)).collect();
    tokio::time::sleep(Duration::from_secs_f64(params.idle_window_s)).await;
    let idle_s = window_started.elapsed().as_secs_f64();
    for (((s, (_, pid)), before), threads_before) in speakers
        .iter_mut()
        .zip(&pids)
        .zip(cpu_before)
        .zip(threads_before)
    {
        s.idle_cpu_s = round3(procfs::cpu_seconds(&pid.to_string()) - before);
        s.idle_cpu_percent = round3(100.0 * s.idle_cpu_s / idle_s);
        let after = threads(*pid);
        s.idle_wakeups_per_s = round3((after.switches - threads_before.switches) as f64 / idle_s);
        for (name, cpu) in after.cpu_s {
            let used = cpu - threads_before.cpu_s.get(&name).copied().unwrap_or(0.0);
            s.idle_cpu_by_thread.insert(name, round3(used));
        }
    }
    let rest = params.writes_window_s - window_started.elapsed().as_secs_f64();
    if rest > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(rest)).await;
    }
    let writes_s = window_started.elapsed().as_secs_f64();
    let objects_after = watched_versions(&rig.scenario.client).await?;
    let window_controller_writes = controller_writes() - controller_before;
    let mut window_object_changes: BTreeMap<String, usize> = BTreeMap::new();
    for (key, version) in &objects_after {
        if objects_before.get(key) != Some(version) {
            let kind = key.split('/').next().unwrap_or("?").to_string();
            *window_object_changes.entry(kind).or_default() += 1;
        }
    }
    for key in objects_before.keys() {
        if !objects_after.contains_key(key) {
            let kind = key.split('/').next().unwrap_or("?").to_string();
            *window_object_changes.entry(kind).or_default() += 1;
        }
    }
    let mut in_window = 0.0;
    for (i, s) in speakers.iter_mut().enumerate() {
        s.api_writes_in_window = speaker_writes(rig, i)? - writes_before[i];
        in_window += s.api_writes_in_window;
    }
    let footprint = Footprint {
        ips: ips.len(),
        owned_total: speakers.iter().map(|s| s.owned_ips).sum(),
        announced_services: announced_count,
        settle_s,
        speakers,
        idle_window_s: round3(idle_s),
        writes_window_s: round3(writes_s),
        api_writes_in_window: in_window,
        api_writes_per_minute: round3(in_window * 60.0 / writes_s),
        window_object_changes,
        window_controller_writes,
        notes,
    };
    Ok((footprint, ips))
}

/// Alternates speaker and kernel runs of the ARP generator.
async fn measure_arp(
    rig: &mut Rig,
    params: &Params,
    bins: &Binaries,
    ips: &[Ipv4Addr],
) -> Result<ArpSummary> {
    let targets: Vec<Ipv4Addr> = ips.iter().copied().take(params.ips).collect();
    let duration = Duration::from_secs_f64(params.arp_seconds);
    let client = rig.lab.client().clone();
    let node1 = rig.lab.nodes()[0].clone();
    let mut summary = ArpSummary {
        ips: targets.len(),
        rate: params.arp_rate,
        kernel_ip: arp_load::KERNEL_BASELINE_IP.to_string(),
        ..Default::default()
    };
    for round in 0..params.arp_rounds {
        let pids = speaker_pids(rig)?;
        quiesce(Duration::from_secs(30)).await;
        eprintln!(
            "==> speaker: ARP round {}/{}: {} owned IPs at {}/s",
            round + 1,
            params.arp_rounds,
            targets.len(),
            params.arp_rate
        );
        let speaker = block_in_place(|| {
            arp_load::against_speakers(
                &client,
                &bins.arp,
                &targets,
                params.arp_rate,
                duration,
                &pids,
            )
        })?;
        let reference_targets = arp_load::reference_addresses(targets.len());
        let mut references = Vec::new();
        for spin in [false, true] {
            quiesce(Duration::from_secs(30)).await;
            eprintln!(
                "    reference responder on node1 ({}): {} addresses from {}",
                if spin { "spinning" } else { "sleeping" },
                reference_targets.len(),
                arp_load::REFERENCE_FIRST_IP
            );
            let log = rig
                .dir()
                .join(format!("reference-responder-{round}-{spin}.log"));
            let reference = arp_load::Reference {
                node: &node1,
                spin,
                log: &log,
            };
            references.push(block_in_place(|| {
                arp_load::against_reference(
                    &client,
                    &bins.arp,
                    &reference_targets,
                    params.arp_rate,
                    duration,
                    reference,
                )
            })?);
        }
        let reference_spin = references.pop().context("spinning reference run")?;
        let reference = references.pop().context("sleeping reference run")?;
        quiesce(Duration::from_secs(30)).await;
        eprintln!(
            "    kernel baseline: {} on node1",
            arp_load::KERNEL_BASELINE_IP
        );
        let kernel = block_in_place(|| {
            arp_load::against_kernel(&client, &node1, &bins.arp, params.arp_rate, duration)
        })?;
        eprintln!(
            "    p50/p99 µs: speakers {}/{} at {}/s; reference sleeping {}/{}, spinning {}/{}; kernel {}/{} at {}/s",
            speaker.rtt_us.p50,
            speaker.rtt_us.p99,
            speaker.achieved_rate.round(),
            reference.rtt_us.p50,
            reference.rtt_us.p99,
            reference_spin.rtt_us.p50,
            reference_spin.rtt_us.p99,
            kernel.rtt_us.p50,
            kernel.rtt_us.p99,
            kernel.achieved_rate.round()
        );
        summary.rounds.push(ArpRound {
            speaker,
            reference,
            reference_spin,
            kernel,
        });
    }
    let med = |f: &dyn Fn(&ArpRound) -> f64| {
        round3(median(&summary.rounds.iter().map(f).collect::<Vec<_>>()))
    };
    let mut m = BTreeMap::new();
    m.insert("speaker.p50_us".into(), med(&|r| r.speaker.rtt_us.p50));
    m.insert("speaker.p90_us".into(), med(&|r| r.speaker.rtt_us.p90));
    m.insert("speaker.p99_us".into(), med(&|r| r.speaker.rtt_us.p99));
    m.insert("speaker.max_us".into(), med(&|r| r.speaker.rtt_us.max));
    m.insert(
        "speaker.achieved_rate".into(),
        med(&|r| r.speaker.achieved_rate),
    );
    m.insert("speaker.lost".into(), med(&|r| r.speaker.lost as f64));
    m.insert("kernel.p50_us".into(), med(&|r| r.kernel.rtt_us.p50));
    m.insert("kernel.p90_us".into(), med(&|r| r.kernel.rtt_us.p90));
    m.insert("kernel.p99_us".into(), med(&|r| r.kernel.rtt_us.p99));
    m.insert("kernel.max_us".into(), med(&|r| r.kernel.rtt_us.max));
    m.insert(
        "kernel.achieved_rate".into(),
        med(&|r| r.kernel.achieved_rate),
    );
    m.insert(
        "ratio.p50".into(),
        med(&|r| r.speaker.rtt_us.p50 / r.kernel.rtt_us.p50),
    );
    m.insert(
        "ratio.p90".into(),
        med(&|r| r.speaker.rtt_us.p90 / r.kernel.rtt_us.p90),
    );
    m.insert(
        "ratio.p99".into(),
        med(&|r| r.speaker.rtt_us.p99 / r.kernel.rtt_us.p99),
    );
    for (name, pick) in [
        (
            "reference",
            (|r: &ArpRound| &r.reference) as fn(&ArpRound) -> &arp_load::LoadRun,
        ),
        ("reference_spin", |r: &ArpRound| &r.reference_spin),
    ] {
        m.insert(format!("{name}.p50_us"), med(&|r| pick(r).rtt_us.p50));
        m.insert(format!("{name}.p99_us"), med(&|r| pick(r).rtt_us.p99));
        m.insert(
            format!("{name}.ratio.p50"),
            med(&|r| pick(r).rtt_us.p50 / r.kernel.rtt_us.p50),
        );
        m.insert(
            format!("{name}.ratio.p99"),
            med(&|r| pick(r).rtt_us.p99 / r.kernel.rtt_us.p99),
        );
    }
    m.insert(
        "speaker_cpu_s_total".into(),
        med(&|r| r.speaker.speaker_cpu_s.values().sum()),
    );
    summary.medians = m;
    Ok(summary)
}

/// The issue's goal for the ARP reply p50, speakers / kernel.
const ARP_RATIO_GOAL: f64 = 1.5;

fn figure(name: &str, value: f64, unit: &str, goal: &str, met: Option<bool>) -> Figure {
    Figure {
        name: name.into(),
        value: round3(value),
        unit: unit.into(),
        goal: goal.into(),
        met,
    }
}

impl SpeakerSection {
    /// Recomputes the headline figures and the notes from what has been measured.
    pub fn summarise(&mut self) {
        let mut figures = Vec::new();
        let mut notes = self.notes_before.clone();
        if let Some(p) = &self.plan_pass {
            let what = format!("{} Services over {} nodes", p.services, p.nodes);
            figures.push(figure(
                &format!("Run-loop pass after a watch event, {what}: snapshot + election"),
                p.snapshot_ms + p.plan_ms,
                "ms",
                "",
                None,
            ));
            figures.push(figure(
                &format!("Run-loop pass after a peer's death, {what}: election"),
                p.plan_ms,
                "ms",
                "",
                None,
            ));
        }
        for f in &self.failover {
            let what = match f.action {
                Action::Kill => "after SIGKILL",
                Action::LinkDown => "after link cut",
            };
            for (name, d) in [
                ("new owner's first GARP", &f.garp_ms),
                ("first request answered elsewhere", &f.http_ms),
            ] {
                if d.count == 0 {
                    continue;
                }
                figures.push(figure(
                    &format!("Failover {what}: {name}, p50"),
                    d.p50,
                    "ms",
                    "< 300",
                    Some(d.p50 < 300.0),
                ));
                figures.push(figure(
                    &format!("Failover {what}: {name}, p99"),
                    d.p99,
                    "ms",
                    "< 1000",
                    Some(d.p99 < 1000.0),
                ));
            }
            if f.failed_trials > 0 {
                notes.push(format!(
                    "{}: {} of {} trials gave no figure: {}",
                    f.describe,
                    f.failed_trials,
                    f.trials.len(),
                    f.trials
                        .iter()
                        .filter_map(|t| t.error.clone())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            let dup: Vec<String> = f
                .trials
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.other_announcers.is_empty())
                .map(|(i, t)| format!("trial {}: {:?}", i + 1, t.other_announcers))
                .collect();
            if !dup.is_empty() {
                notes.push(format!(
                    "{}: more than one node announced the VIP after the action ({})",
                    f.describe,
                    dup.join(", ")
                ));
            }
            let stale: Vec<String> = f
                .trials
                .iter()
                .enumerate()
                .filter(|(_, t)| t.condition_stale_after_restore)
                .map(|(i, _)| (i + 1).to_string())
                .collect();
            if !stale.is_empty() {
                notes.push(format!(
                    "{}: after the restore, {} announced and served the VIP again (its own owned_ips, curl from the client) but the Service's ferrolb.io/Announced condition still named the stand-in 5 s later (trials {})",
                    f.describe,
                    f.trials.first().map_or("the owner", |t| t.owner.as_str()),
                    stale.join(", ")
                ));
            }
            let owners: std::collections::BTreeSet<&str> = f
                .trials
                .iter()
                .filter_map(|t| t.new_owner.as_deref())
                .collect();
            if owners.len() > 1 {
                notes.push(format!(
                    "{}: the new owner differed between trials ({owners:?}); the election is deterministic, so this is unexpected",
                    f.describe
                ));
            }
        }
        if let Some(fp) = &self.footprint {
            notes.extend(fp.notes.iter().cloned());
            let changed: usize = fp.window_object_changes.values().sum();
            if changed > 0 {
                notes.push(format!(
                    "in steady state, {changed} watched objects changed within {} s ({:?}; the controller wrote {} times): every change wakes every speaker",
                    fmt(fp.writes_window_s),
                    fp.window_object_changes,
                    fp.window_controller_writes
                ));
            }
            for sp in &fp.speakers {
                // A condition and an Event per owned Service; a few more for Services that
                // changed owner while the others were created.
                let expected = 2.0 * sp.owned_ips;
                if sp.api_writes_creating > expected * 1.1 + 10.0 {
                    notes.push(format!(
                        "{} made {} API writes while the Services were created, for {} owned: expected about {expected} (a condition and an Event each)",
                        sp.node, sp.api_writes_creating, sp.owned_ips
                    ));
                }
            }
            if let Some(max) = fp.speakers.iter().map(|s| s.vm_rss_mib).reduce(f64::max) {
                figures.push(figure(
                    &format!(
                        "Speaker VmRSS, {} owned IPs over 3 speakers, largest",
                        fp.ips
                    ),
                    max,
                    "MiB",
                    "",
                    None,
                ));
            }
            if let Some(max) = fp
                .speakers
                .iter()
                .map(|s| s.idle_cpu_percent)
                .reduce(f64::max)
            {
                figures.push(figure(
                    "Speaker idle CPU, largest (share of one CPU)",
                    max,
                    "%",
                    "",
                    None,
                ));
            }
            figures.push(figure(
                "Speaker API writes in steady state (all speakers)",
                fp.api_writes_per_minute,
                "per min",
                "0",
                Some(fp.api_writes_in_window == 0.0),
            ));
            if fp.owned_total > fp.ips as f64 {
                notes.push(format!(
                    "the speakers own {} addresses in total for {} Services: some address has two owners",
                    fp.owned_total, fp.ips
                ));
            } else if fp.owned_total < fp.ips as f64 {
                notes.push(format!(
                    "the speakers own {} addresses in total for {} Services: some address has no owner",
                    fp.owned_total, fp.ips
                ));
            }
        }
        if let Some(arp) = &self.arp {
            let m = |k: &str| arp.medians.get(k).copied().unwrap_or(f64::NAN);
            figures.push(figure(
                &format!(
                    "ARP reply p50, speakers / kernel, {} IPs at {}/s",
                    arp.ips, arp.rate
                ),
                m("ratio.p50"),
                "x",
                "<= 1.5",
                // NaN (no round) compares false: not met.
                Some(m("ratio.p50") <= ARP_RATIO_GOAL),
            ));
            figures.push(figure(
                &format!(
                    "ARP reply p99, speakers / kernel, {} IPs at {}/s",
                    arp.ips, arp.rate
                ),
                m("ratio.p99"),
                "x",
                "",
                None,
            ));
            figures.push(figure(
                "ARP reply p50, reference responder sleeping / kernel (a plain responder that sleeps)",
                m("reference.ratio.p50"),
                "x",
                "",
                None,
            ));
            figures.push(figure(
                "ARP reply p50, reference responder spinning / kernel (no wake-up; a whole CPU)",
                m("reference_spin.ratio.p50"),
                "x",
                "",
                None,
            ));
            figures.push(figure(
                "ARP reply p50, speakers",
                m("speaker.p50_us"),
                "µs",
                "",
                None,
            ));
            figures.push(figure(
                "ARP reply p99, speakers",
                m("speaker.p99_us"),
                "µs",
                "",
                None,
            ));
            let rate = m("speaker.achieved_rate");
            if rate < 0.95 * f64::from(arp.rate) {
                notes.push(format!(
                    "the ARP generator reached {rate:.0} requests/s, not {}: the machine is too small (or busy) for the asked rate",
                    arp.rate
                ));
            }
            for (i, r) in arp.rounds.iter().enumerate() {
                if r.speaker.targets_answered_by_several_macs > 0 || r.speaker.duplicates > 0 {
                    notes.push(format!(
                        "ARP round {}: {} addresses answered from several MACs, {} duplicate replies",
                        i + 1,
                        r.speaker.targets_answered_by_several_macs,
                        r.speaker.duplicates
                    ));
                }
                if r.speaker.lost > 0 || r.speaker.targets_never_answered > 0 {
                    notes.push(format!(
                        "ARP round {}: {} requests unanswered ({} addresses never answered), {} frames dropped by the generator's socket",
                        i + 1,
                        r.speaker.lost,
                        r.speaker.targets_never_answered,
                        r.speaker.receive_drops
                    ));
                }
            }
        }
        self.figures = figures;
        self.notes = notes;
    }

    /// The section as Markdown (a `##` heading and its tables).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## Speaker\n");
        if let Some(p) = &self.params {
            let _ = writeln!(
                s,
                "3-node lab, speaker `{}` ({}) with {} · {} failover trials per action · {} owned IPs · ARP {}/s for {} s × {} round(s) · idle window {} s · writes window {} s · {} s in all\n",
                self.speaker_binary,
                self.speaker_build,
                if p.speaker_args.is_empty() {
                    "default settings".to_string()
                } else {
                    format!("`{}`", p.speaker_args.join(" "))
                },
                p.trials,
                p.ips,
                p.arp_rate,
                p.arp_seconds,
                p.arp_rounds,
                p.idle_window_s,
                p.writes_window_s,
                self.duration_s,
            );
        }
        let _ = writeln!(s, "| figure | value | goal | met |\n|---|---:|---|---|");
        for f in &self.figures {
            let _ = writeln!(
                s,
                "| {} | {} {} | {} | {} |",
                f.name,
                fmt(f.value),
                f.unit,
                if f.goal.is_empty() { "-" } else { &f.goal },
                match f.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "-",
                }
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\n**Anomalies:**\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        if !self.failover.is_empty() {
            let _ = writeln!(s, "\n### Failover (ms from the action)\n");
            let _ = writeln!(
                s,
                "| action | trials | GARP p50 / p90 / p99 / max | HTTP p50 / p90 / p99 / max | no figure | action took (median) | machine busy (max) |\n|---|---:|---|---|---:|---:|---:|"
            );
            for f in &self.failover {
                let d = |d: &Distribution| {
                    format!(
                        "{} / {} / {} / {}",
                        fmt(d.p50),
                        fmt(d.p90),
                        fmt(d.p99),
                        fmt(d.max)
                    )
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} ms | {} % |",
                    f.describe,
                    f.trials.len(),
                    d(&f.garp_ms),
                    d(&f.http_ms),
                    f.failed_trials,
                    fmt(f.action_ms_median),
                    fmt(100.0 * f.machine_busy_max),
                );
            }
            let _ = writeln!(
                s,
                "\n| action | trial | owner → new | GARP ms | from | HTTP ms | failed requests | old owner answers |\n|---|---:|---|---:|---|---:|---:|---:|"
            );
            for f in &self.failover {
                for (i, t) in f.trials.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "| {:?} | {} | {} → {} | {} | {} | {} | {} | {} |",
                        f.action,
                        i + 1,
                        t.owner,
                        t.new_owner.as_deref().unwrap_or("-"),
                        t.garp_ms.map_or("-".into(), fmt),
                        t.garp_from.as_deref().unwrap_or("-"),
                        t.http_ms.map_or("-".into(), fmt),
                        t.failed_requests,
                        t.old_owner_answers,
                    );
                }
            }
        }
        if let Some(fp) = &self.footprint {
            let _ = writeln!(
                s,
                "\n### Footprint with {} owned IPs ({} in total over the speakers, {} Services announced, settled {} s after the first create)\n",
                fp.ips,
                fp.owned_total,
                fp.announced_services,
                fmt(fp.settle_s)
            );
            let _ = writeln!(
                s,
                "| node | owned IPs | VmRSS MiB | RssAnon | RssFile | PSS MiB | VmHWM | idle CPU s / {} s | idle CPU % | idle wake-ups/s | busiest threads (CPU s) | API writes creating the Services | API writes in {} s | VmRSS / VmHWM after ARP load |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
                fmt(fp.idle_window_s),
                fmt(fp.writes_window_s)
            );
            for sp in &fp.speakers {
                let mut busiest: Vec<(&String, &f64)> = sp.idle_cpu_by_thread.iter().collect();
                busiest.sort_by(|a, b| b.1.total_cmp(a.1));
                let busiest: Vec<String> = busiest
                    .iter()
                    .take(3)
                    .map(|(n, c)| format!("{n} {}", fmt(**c)))
                    .collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                    sp.node,
                    sp.owned_ips,
                    fmt(sp.vm_rss_mib),
                    fmt(sp.rss_anon_mib),
                    fmt(sp.rss_file_mib),
                    fmt(sp.pss_mib),
                    fmt(sp.vm_hwm_mib),
                    fmt(sp.idle_cpu_s),
                    fmt(sp.idle_cpu_percent),
                    fmt(sp.idle_wakeups_per_s),
                    busiest.join(", "),
                    sp.api_writes_creating,
                    sp.api_writes_in_window,
                    fmt(none_if_zero(sp.vm_rss_after_load_mib)),
                    fmt(none_if_zero(sp.vm_hwm_after_load_mib)),
                );
            }
            let changes: Vec<String> = fp
                .window_object_changes
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(
                s,
                "\nAPI writes in steady state: {} in {} s ({} per minute). Meanwhile the controller wrote {} times, and watched objects that changed: {}.",
                fp.api_writes_in_window,
                fmt(fp.writes_window_s),
                fmt(fp.api_writes_per_minute),
                fp.window_controller_writes,
                if changes.is_empty() {
                    "none".to_string()
                } else {
                    changes.join(", ")
                }
            );
        }
        if let Some(arp) = &self.arp {
            let _ = writeln!(
                s,
                "\n### ARP reply latency (µs), {} owned IPs vs one kernel-owned address ({}), {} requests/s asked\n",
                arp.ips, arp.kernel_ip, arp.rate
            );
            let _ = writeln!(
                s,
                "| round | responder | sent/s | timed | p50 | p90 | p99 | p99.9 | max | lost | duplicates | send lateness p99 | machine busy | speaker CPU s |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
            );
            for (i, r) in arp.rounds.iter().enumerate() {
                for (who, run) in [
                    ("speakers", &r.speaker),
                    ("reference, sleeping", &r.reference),
                    ("reference, spinning", &r.reference_spin),
                    ("node1 kernel", &r.kernel),
                ] {
                    let cpu: Vec<String> = run
                        .speaker_cpu_s
                        .iter()
                        .map(|(n, c)| format!("{n} {}", fmt(*c)))
                        .collect();
                    let _ = writeln!(
                        s,
                        "| {} | {who} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} % | {} |",
                        i + 1,
                        fmt(run.achieved_rate.round()),
                        run.rtt_us.count,
                        fmt(run.rtt_us.p50),
                        fmt(run.rtt_us.p90),
                        fmt(run.rtt_us.p99),
                        fmt(run.rtt_us.p999),
                        fmt(run.rtt_us.max),
                        run.lost,
                        run.duplicates,
                        fmt(run.send_lateness_p99_us),
                        fmt((100.0 * run.machine_busy).round()),
                        if cpu.is_empty() {
                            "-".into()
                        } else {
                            cpu.join(", ")
                        },
                    );
                }
            }
            let m = |k: &str| arp.medians.get(k).copied().map_or("-".into(), fmt);
            let _ = writeln!(
                s,
                "\nMedians over rounds: speakers p50 / p90 / p99 {} / {} / {} µs, kernel {} / {} / {} µs; ratio p50 {} x, p90 {} x, p99 {} x.",
                m("speaker.p50_us"),
                m("speaker.p90_us"),
                m("speaker.p99_us"),
                m("kernel.p50_us"),
                m("kernel.p90_us"),
                m("kernel.p99_us"),
                m("ratio.p50"),
                m("ratio.p90"),
                m("ratio.p99"),
            );
            let _ = writeln!(
                s,
                "Reference responder (the least a userspace responder does per request): sleeping p50 / p99 {} / {} µs, ratio {} x / {} x; spinning {} / {} µs, ratio {} x / {} x.",
                m("reference.p50_us"),
                m("reference.p99_us"),
                m("reference.ratio.p50"),
                m("reference.ratio.p99"),
                m("reference_spin.p50_us"),
                m("reference_spin.p99_us"),
                m("reference_spin.ratio.p50"),
                m("reference_spin.ratio.p99"),
            );
        }
        let _ = writeln!(s, "\n### Speaker definitions\n\n{}", self.definitions);
        s
    }
}

/// NaN (printed `-`) for a figure that was not measured.
fn none_if_zero(x: f64) -> f64 {
    if x == 0.0 { f64::NAN } else { x }
}

/// A number for humans: up to 3 decimals, no trailing zeros.
fn fmt(x: f64) -> String {
    if x.is_nan() {
        return "-".into();
    }
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_writes_are_summed_over_labels() {
        let text = "# HELP ferrolb_speaker_api_writes Kubernetes API writes\n\
            ferrolb_speaker_api_writes_total{object=\"status\",result=\"ok\"} 333\n\
            ferrolb_speaker_api_writes_total{object=\"event\",result=\"ok\"} 330\n\
            ferrolb_speaker_api_writes_total{object=\"event\",result=\"error\"} 3\n\
            ferrolb_speaker_owned_ips 333\n";
        assert_eq!(api_writes(text), 666.0);
        assert_eq!(api_writes(""), 0.0);
    }

    #[test]
    fn failover_summary_counts_trials_without_figures() {
        let t = |garp: Option<f64>, http: Option<f64>| failover::Trial {
            owner: "node2".into(),
            garp_ms: garp,
            http_ms: http,
            ..Default::default()
        };
        let s = FailoverSummary::of(
            Action::Kill,
            vec![
                t(Some(260.0), Some(262.0)),
                t(Some(280.0), None),
                t(None, None),
            ],
        );
        assert_eq!(s.failed_trials, 2);
        assert_eq!((s.garp_ms.count, s.garp_ms.p50), (2, 260.0));
        assert_eq!(s.http_ms.max, 262.0);
        let mut section = SpeakerSection {
            failover: vec![s],
            ..Default::default()
        };
        section.summarise();
        assert!(
            section
                .figures
                .iter()
                .any(|f| f.name.contains("GARP") && f.met == Some(true))
        );
        assert!(section.notes[0].contains("2 of 3 trials"));
        assert!(
            section
                .markdown()
                .contains("| Kill | 2 | node2 → - | 280 |")
        );
    }
}
