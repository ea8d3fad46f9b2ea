//! The figures of one repetition of the cluster scenario, phase by phase: the plain loop, (a)
//! the pending burst with the controller's memory, the create-to-status latency and (b) the
//! running burst.

use std::collections::BTreeMap;

use serde::Serialize;

use super::super::procfs::Memory;
use super::super::stats::Distribution;
use super::ControllerMetrics;

/// The baseline's figures: the best concurrent raw writer (the same status patches as the
/// controller's, from one client, a fixed number in flight).
#[derive(Clone, Debug, Serialize)]
pub struct LoopPhase {
    /// Patches in flight in the best run.
    pub in_flight: usize,
    /// Every run: (in flight, start to the watch event of its last write, s).
    pub by_in_flight: Vec<(usize, f64)>,
    /// Creating the N Services (baseline for nothing; for reference).
    pub create_s: f64,
    /// The writes, first request to last response.
    pub loop_s: f64,
    /// Start to the watch event of its last write: what the controller's time is divided by.
    pub loop_seen_s: f64,
    /// Mean round trip per patch.
    pub mean_patch_ms: f64,
    /// CPU seconds per process during the loop.
    pub cpu_s: BTreeMap<String, f64>,
}

/// (a) and the memory figure.
#[derive(Clone, Debug, Serialize)]
pub struct PendingPhase {
    /// Creating the N pending Services.
    pub create_s: f64,
    /// Controller spawn to `/readyz` 200 (caches synced, addresses reclaimed).
    pub ready_s: f64,
    /// Controller spawn to the first IP seen.
    pub first_ip_s: f64,
    /// Controller spawn to the last IP seen.
    pub all_ip_s: f64,
    /// Controller spawn to its last write (Events and pool status included).
    pub writes_settled_s: f64,
    /// `all_ip_s` / the best raw writer's `loop_seen_s` (same repetition).
    pub ratio_vs_loop: f64,
    /// CPU seconds per process, spawn to last IP.
    pub cpu_s: BTreeMap<String, f64>,
    /// The controller's memory once settled.
    pub memory: Memory,
    /// VmRSS when `/readyz` first answered 200 (the sample nearest to it).
    pub rss_at_ready_mib: f64,
    /// VmRSS when the last IP was seen.
    pub rss_at_all_ip_mib: f64,
    /// VmRSS every 250 ms from spawn until settled: `[seconds, MiB]`.
    pub rss_timeline: Vec<[f64; 2]>,
    /// The controller's counters once settled.
    pub metrics: ControllerMetrics,
}

/// Create-to-status latency.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyPhase {
    /// Per probe, ms, in creation order.
    pub samples_ms: Vec<f64>,
    /// Their distribution.
    pub distribution_ms: Distribution,
}

/// (b).
#[derive(Clone, Debug, Serialize)]
pub struct RunningPhase {
    /// First create sent to last create returned.
    pub create_s: f64,
    /// First create sent to last IP seen.
    pub all_ip_s: f64,
    /// Last create returned to last IP seen.
    pub after_last_create_s: f64,
    /// First create sent to the controller's last write.
    pub writes_settled_s: f64,
    /// `all_ip_s` / `create_s`.
    pub ratio_vs_create: f64,
    /// `all_ip_s` / the best raw writer's `loop_seen_s` (same repetition).
    pub ratio_vs_loop: f64,
    /// Per Service, its create's return to its IP, during the burst.
    pub create_to_ip_ms: Distribution,
    /// CPU seconds per process, first create to last IP.
    pub cpu_s: BTreeMap<String, f64>,
    /// The controller's memory once settled.
    pub memory: Memory,
    /// The controller's counters for the burst.
    pub metrics: ControllerMetrics,
}

/// One repetition of the cluster figures.
#[derive(Clone, Debug, Serialize)]
pub struct Rep {
    /// /proc/loadavg before.
    pub loadavg_start: String,
    /// /proc/loadavg after.
    pub loadavg_end: String,
    /// The baseline.
    pub plain_loop: LoopPhase,
    /// (a), memory.
    pub pending: PendingPhase,
    /// Latency.
    pub latency: LatencyPhase,
    /// (b).
    pub running: RunningPhase,
}

/// CPU seconds of `name` in a phase's `cpu_s` (NaN when absent).
pub fn cpu(map: &BTreeMap<String, f64>, name: &str) -> f64 {
    map.get(name).copied().unwrap_or(f64::NAN)
}
