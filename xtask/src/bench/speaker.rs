//! The speaker section of `cargo xtask bench`: failover, ARP reply latency under load, and the
//! speakers' footprint, on a 3-node lab with real speakers (default settings) and the real
//! controller.
//!
//! ```text
//!  Rig (ferrolb_tests::l2lab): control plane + controller, lab node1..3 + client, backends,
//!  one release ferrolb-speaker per node
//!   0. run-loop  plan_bench (in-process, before the lab starts)   -> plan_pass
//!      membership membership_scale at 10, 100, 1,000 members      -> membership::measure
//!   1. failover  Service `web` (198.51.100.200-210): N trials of SIGKILL of the owner's
//!                speaker, N of cutting its link            -> failover::run_trials
//!   2. footprint 1,000 Services (198.19.0.0/22): owners per node, VmRSS/PSS, idle CPU over
//!                30 s, API writes over a minute            -> footprint::measure_footprint
//!   3. ARP load  ferrolb-bench-arp at 10,000 requests/s over the 1,000 owned IPs, and against
//!                one address node1's kernel owns, alternating -> arp_rounds::measure_arp
//!                (each run: arp_load)
//!  -> SpeakerSection (section.rs), its figures and anomalies (summary.rs) and Markdown
//!     (markdown.rs), merged into target/bench/report.{json,md} by bench.rs
//! ```
//!
//! The speakers' `/metrics` are read in metrics.rs.

mod arp_load;
mod arp_rounds;
pub(crate) mod failover;
mod footprint;
mod markdown;
mod membership;
mod metrics;
pub(crate) mod pcap;
mod section;
mod summary;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_tests::l2lab::Rig;
use serde::Serialize;
use serde_json::json;

use super::procfs::{self, round3};

pub use failover::Action;
pub use section::{FailoverSummary, PlanPass, SpeakerSection};

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
    /// The speaker's `membership_scale` example.
    pub membership: PathBuf,
    /// The speaker's build, for the report (commit, profile, local changes).
    pub build: String,
}

/// Services and nodes of the plan pass.
const PLAN_SERVICES: u32 = 100_000;
const PLAN_NODES: u32 = 1_000;
/// Whole reads and plans at that size take 2-3 s each: three are enough for a median.
const PLAN_RUNS: u32 = 3;

/// Runs `plan_bench` (before the lab starts, on a quiet machine).
fn plan_pass(bin: &Path) -> Result<PlanPass> {
    let mut cmd = std::process::Command::new(bin);
    cmd.args([
        "--services",
        &PLAN_SERVICES.to_string(),
        "--nodes",
        &PLAN_NODES.to_string(),
        "--runs",
        &PLAN_RUNS.to_string(),
    ]);
    super::json_output(cmd, "plan_bench")
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
        definitions: markdown::definitions(),
        ..Default::default()
    };
    eprintln!(
        "==> speaker: run-loop pass, {PLAN_SERVICES} Services over {PLAN_NODES} nodes ({})",
        bins.plan.display()
    );
    section.plan_pass = Some(plan_pass(&bins.plan)?);
    section.membership = membership::measure(&bins.membership)?;
    section.summarise();
    on_progress(&section)?;
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
        for action in [
            Action::Kill,
            Action::Graceful,
            Action::LinkDown,
            Action::NodeLoss,
        ] {
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
        let (footprint, ips) = footprint::measure_footprint(&mut rig, params).await?;
        section.footprint = Some(footprint);
        section.summarise();
        on_progress(&section)?;

        // 3. ARP reply latency.
        if params.arp_rounds > 0 {
            let arp = arp_rounds::measure_arp(&mut rig, params, bins, &ips).await?;
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

/// (node, pid) of every speaker of the lab.
fn speaker_pids(rig: &mut Rig) -> Result<Vec<(String, u32)>> {
    (0..NODES)
        .map(|i| {
            let s = rig.speaker(i)?;
            Ok((s.node().to_string(), s.pid()))
        })
        .collect()
}
