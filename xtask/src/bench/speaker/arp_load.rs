//! ARP reply latency under load: `ferrolb-bench-arp` in the client namespace asks for the owned
//! addresses at a fixed rate; the same run against an address the kernel of a node owns is the
//! baseline.
//!
//! ```text
//!  client ns: ferrolb-bench-arp --targets <owned IPs> --rate R   ──> speakers (userspace)
//!  client ns: ferrolb-bench-arp --targets <KERNEL_BASELINE_IP> --rate R ──> node1's kernel
//!             (address added to node1:eth0 for the run, removed after)
//!  client ns: ferrolb-bench-arp --targets <reference IPs> --rate R
//!             ──> `ferrolb-bench-arp respond [--spin]` in node1 (minimal userspace responder)
//! ```

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferrolb_tests::Host;
use ferrolb_tests::process::{Supervised, run, wait_for};
use serde::Serialize;

use super::super::procfs::{self, round3};

/// The address node1's kernel answers for in the baseline: RFC 2544 benchmarking space, outside
/// the pool the Services take their addresses from.
pub const KERNEL_BASELINE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 4, 1);

/// Round trips of one generator run, µs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rtt {
    /// Replies timed.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

/// One generator run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadRun {
    /// Requests per second asked for.
    pub rate_requested: f64,
    /// Requests per second sent (after the warm-up).
    pub achieved_rate: f64,
    /// Requests timed (sent after the warm-up).
    pub measured_sent: u64,
    /// Their replies' round trips, µs.
    pub rtt_us: Rtt,
    /// Requests without a reply.
    pub lost: u64,
    /// Second replies to one request (two owners, or a late reply).
    pub duplicates: u64,
    /// Targets that never answered.
    pub targets_never_answered: u64,
    /// Targets answered from more than one MAC (more than one owner).
    pub targets_answered_by_several_macs: u64,
    /// How late sends were against the schedule: p99, µs.
    pub send_lateness_p99_us: f64,
    /// Frames the generator's receive socket lost in the kernel.
    pub receive_drops: u64,
    /// The sender thread's scheduling policy (`idle`: yields to whatever its requests wake).
    pub sender_policy: String,
    /// Replies per replying MAC.
    pub replies_by_mac: BTreeMap<String, u64>,
    /// CPU seconds per speaker (`nodeN`) during the run (speaker runs only).
    pub speaker_cpu_s: BTreeMap<String, f64>,
    /// Wall time of the run, s.
    pub wall_s: f64,
    /// Share of the machine's CPUs busy during the run (everything, other sessions included).
    pub machine_busy: f64,
}

/// Runs the generator in the client namespace against `targets` and reads its JSON.
pub fn generate(
    client: &Host,
    bin: &Path,
    targets: &[Ipv4Addr],
    rate: u32,
    duration: Duration,
) -> Result<LoadRun> {
    let list: Vec<String> = targets.iter().map(Ipv4Addr::to_string).collect();
    let started = std::time::Instant::now();
    let busy_before = procfs::machine_busy_seconds();
    let out = run(client
        .command(bin.to_str().context("generator path is not UTF-8")?)
        .args([
            "--interface",
            "eth0",
            "--targets",
            &list.join(","),
            "--rate",
            &rate.to_string(),
            "--duration-s",
            &format!("{:.3}", duration.as_secs_f64()),
            "--warmup-s",
            "1",
        ]))
    .context("running ferrolb-bench-arp in the client namespace")?;
    let wall_s = round3(started.elapsed().as_secs_f64());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let machine_busy =
        round3((procfs::machine_busy_seconds() - busy_before) / wall_s.max(1e-3) / cores);
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .with_context(|| format!("ferrolb-bench-arp printed no JSON: {out}"))?;
    let num =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
    let int = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let rtt = v.get("rtt_us").cloned().unwrap_or_default();
    let mut run = LoadRun {
        rate_requested: num(&v, "rate_requested"),
        achieved_rate: round3(num(&v, "achieved_rate")),
        measured_sent: int("measured_sent"),
        rtt_us: Rtt {
            count: rtt.get("count").and_then(|x| x.as_u64()).unwrap_or(0),
            p50: round3(num(&rtt, "p50")),
            p90: round3(num(&rtt, "p90")),
            p99: round3(num(&rtt, "p99")),
            p999: round3(num(&rtt, "p999")),
            max: round3(num(&rtt, "max")),
        },
        lost: int("lost"),
        duplicates: int("duplicates"),
        targets_never_answered: int("targets_never_answered"),
        targets_answered_by_several_macs: int("targets_answered_by_several_macs"),
        send_lateness_p99_us: round3(
            v.get("send_lateness_us")
                .map_or(f64::NAN, |l| num(l, "p99")),
        ),
        receive_drops: v
            .get("receive_socket")
            .and_then(|s| s.get("drops"))
            .and_then(|x| x.as_u64())
            .unwrap_or(0),
        sender_policy: v
            .get("sender_policy")
            .and_then(|x| x.as_str())
            .unwrap_or("unknown")
            .to_string(),
        replies_by_mac: serde_json::from_value(
            v.get("replies_by_mac").cloned().unwrap_or_default(),
        )
        .unwrap_or_default(),
        speaker_cpu_s: BTreeMap::new(),
        wall_s,
        machine_busy,
    };
    if run.rtt_us.count == 0 {
        run.rtt_us = Rtt::default();
        bail!(
            "no ARP reply at all to {} requests: {out}",
            run.measured_sent
        );
    }
    Ok(run)
}

/// Runs the generator against the speakers (`pids`: node name and speaker pid), recording each
/// speaker's CPU seconds meanwhile.
pub fn against_speakers(
    client: &Host,
    bin: &Path,
    targets: &[Ipv4Addr],
    rate: u32,
    duration: Duration,
    pids: &[(String, u32)],
) -> Result<LoadRun> {
    let before: Vec<f64> = pids
        .iter()
        .map(|(_, pid)| procfs::cpu_seconds(&pid.to_string()))
        .collect();
    let mut run = generate(client, bin, targets, rate, duration)?;
    for ((node, pid), b) in pids.iter().zip(before) {
        run.speaker_cpu_s.insert(
            node.clone(),
            round3(procfs::cpu_seconds(&pid.to_string()) - b),
        );
    }
    Ok(run)
}

/// Runs the generator against [`KERNEL_BASELINE_IP`], assigned to `node`'s eth0 for the run.
pub fn against_kernel(
    client: &Host,
    node: &Host,
    bin: &Path,
    rate: u32,
    duration: Duration,
) -> Result<LoadRun> {
    let cidr = format!("{KERNEL_BASELINE_IP}/32");
    let ip = |verb: &str| {
        run(std::process::Command::new("ip")
            .args(["-n", &node.name, "addr", verb, &cidr, "dev", "eth0"]))
    };
    let _ = ip("del");
    ip("add").with_context(|| format!("adding {cidr} to {}'s eth0", node.name))?;
    // The speakers re-read interfaces on address changes; let that pass.
    std::thread::sleep(Duration::from_secs(1));
    let result = generate(client, bin, &[KERNEL_BASELINE_IP], rate, duration);
    let removed = ip("del");
    let run = result?;
    removed.with_context(|| format!("removing {cidr} from {}'s eth0", node.name))?;
    Ok(run)
}

/// The first address the reference responder answers for (RFC 2544 space, outside the Services'
/// pool and [`KERNEL_BASELINE_IP`]); it takes as many consecutive ones as the speakers own.
pub const REFERENCE_FIRST_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 8, 0);

/// `n` consecutive addresses from [`REFERENCE_FIRST_IP`].
pub fn reference_addresses(n: usize) -> Vec<Ipv4Addr> {
    (0..n as u32)
        .map(|i| Ipv4Addr::from(u32::from(REFERENCE_FIRST_IP) + i))
        .collect()
}

/// Where and how the reference responder runs.
#[derive(Clone, Copy, Debug)]
pub struct Reference<'a> {
    /// The node whose eth0 it answers on.
    pub node: &'a Host,
    /// Poll without sleeping (a whole CPU) instead of blocking between requests.
    pub spin: bool,
    /// Its output.
    pub log: &'a Path,
}

/// Runs the generator against `ferrolb-bench-arp respond` answering for `targets`.
pub fn against_reference(
    client: &Host,
    bin: &Path,
    targets: &[Ipv4Addr],
    rate: u32,
    duration: Duration,
    reference: Reference<'_>,
) -> Result<LoadRun> {
    let Reference { node, spin, log } = reference;
    let (Some(first), Some(last)) = (targets.first(), targets.last()) else {
        bail!("the reference responder needs at least one address");
    };
    let mut cmd = node.command(bin.to_str().context("responder path is not UTF-8")?);
    // It stops by itself well after the generator (1 s warm-up, 0.5 s drain) if not killed.
    let lifetime = duration.as_secs_f64() + 10.0;
    cmd.args([
        "respond",
        "--interface",
        "eth0",
        "--addresses",
        &format!("{first}-{last}"),
        "--duration-s",
        &format!("{lifetime:.3}"),
    ]);
    if spin {
        cmd.arg("--spin");
    }
    let mut responder = Supervised::spawn("reference responder", cmd, log)?;
    wait_for(
        "the reference responder to listen",
        Duration::from_secs(10),
        || {
            responder.check_running(log)?;
            Ok(std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .any(|l| l == "ready")
                .then_some(()))
        },
    )?;
    let result = generate(client, bin, targets, rate, duration);
    responder.kill();
    result
}
