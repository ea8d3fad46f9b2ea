//! The benchmark report: what was measured (JSON) and a Markdown rendering with the headline
//! figures against their goals.
//!
//! ```text
//!  Report (this file: parameters, build, medians over repetitions, headline figures)
//!    reps: Rep ── phases.rs (raw writers, (a) pending burst, latency, (b) running burst)
//!                 └─ controller_metrics.rs (the controller's counters per phase)
//!    ipam: ipam_bench's JSON
//!  -> report.json (serde), report.md (markdown.rs; figure tables from ../figure.rs)
//! ```

mod controller_metrics;
mod markdown;
mod phases;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use ferrolb_crds::contract::annotation::ALLOCATED_FROM_POOL;
use ferrolb_crds::contract::condition::IP_ALLOCATED;
use serde::Serialize;

use super::figure::Figure;
use super::procfs::{Machine, round3};
use super::stats::{Distribution, median};

pub use controller_metrics::ControllerMetrics;
use phases::cpu;
pub use phases::{LatencyPhase, LoopPhase, PendingPhase, Rep, RunningPhase};

/// How the figures are defined; printed into every report.
pub fn definitions() -> String {
    format!(
        "\
- **Raw writer** (the baseline, the best concurrent writer): N pending Services exist (no \
controller running); one kube client (same library and settings as the controller, field \
manager `ferrolb-bench-loop`) applies the exact status body the controller writes \
(`service_patch`: `status.loadBalancer.ingress` with `ipMode: VIP`, the `{ALLOCATED_FROM_POOL}` \
annotation and the `{IP_ALLOCATED}` condition) to each Service's `/status`, with 8, 32 and 128 (the \
controller's `--concurrency`) patches in flight, one run each on fresh Services. Time: \
first request sent to the watch event of the last write (a watch of the namespace runs \
meanwhile, as in (a)); the fastest run is the baseline.
- **(a) Pending burst, the headline ratio**: N Services are created (`in_flight` creates at a \
time) while no controller runs; a watch of the namespace is listed (none has an IP); then the \
release controller process is spawned. Time: spawn to the watch event that shows the last \
Service with an ingress IP (includes process start, cache sync of N Services, allocation, every \
status write, and watch delivery). Ratio (a) = that time / the raw writer's time (goal <= 1.1).
- **(b) Running burst**: the controller runs, synced, with no Services; N Services are created \
(`in_flight` at a time). Time: first create sent to the watch event showing the last IP. \
Ratio (b) = that time / the time the same creates took (first sent to last returned), i.e. how \
far allocation trails creation.
- **Create-to-status latency**: with the N Services of (a) holding IPs and the controller \
settled, `probes` more Services are created one at a time, `probe_rate` per second; per Service, \
from the create call's return to the watch event that shows its IP. Nearest-rank percentiles \
over every probe of every repetition.
- **Pure IPAM**: `ipam_bench` (release); ns per allocate+release pair in a 10.0.0.0/12 pool \
with 100,000 addresses held; median over runs. `churn` scenarios are fragmented (150,000 \
taken, 50,000 pseudo-random ones released) and release a pseudo-random holder each pair; \
`hot` ones release what they just took.
- **Memory**: VmRSS (and VmHWM, the peak) of the controller from /proc/<pid>/status after (a), \
with N Services holding IPs and 100 pools, once its write counters have been still for 3 s.
- CPU seconds: user+system time each process used from the start of a phase to its last IP \
(`wall` is that interval); 2 cores means at most 2 CPU seconds per wall second in total. `other \
processes` is what the rest of the machine used meanwhile (other builds and tests on a shared \
machine): a large value means the phase was slowed by them. Before each timed phase the \
benchmark waits (at most 60 s) for the machine to be quiet (under 25 % busy for 2 s).
- Medians are over repetitions, each on a fresh control plane (etcd + kube-apiserver built from \
the pinned Go modules, no kube-controller-manager)."
    )
}

/// The run's parameters.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    /// Services per burst (N).
    pub services: usize,
    /// Repetitions of the cluster scenario.
    pub reps: usize,
    /// Latency probes per repetition.
    pub probes: usize,
    /// Latency probes created per second.
    pub probe_rate_per_s: u32,
    /// Creates/deletes in flight.
    pub in_flight: usize,
    /// Pools present.
    pub pools: usize,
    /// Extra environment of the controller process (experiments, e.g. allocator tunables).
    pub controller_env: Vec<(String, String)>,
    /// Command the controller runs under (a profiler), if any; timings then include its cost.
    pub controller_wrapper: Vec<String>,
}

/// How the controller was built.
#[derive(Clone, Debug, Serialize)]
pub struct Build {
    /// Path of the controller binary.
    pub controller_binary: String,
    /// Its cargo profile.
    pub controller_profile: String,
    /// The benchmark harness's profile.
    pub harness_profile: String,
    /// `git rev-parse HEAD`.
    pub git_commit: String,
    /// Whether controller/ or crds/ differ from that commit.
    pub controller_sources_modified: bool,
}

/// Everything measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// UTC time the report was written.
    pub date: String,
    /// The machine.
    pub machine: Machine,
    /// `gitVersion` of the apiserver.
    pub apiserver_version: String,
    /// The controller build.
    pub build: Build,
    /// Parameters.
    pub params: Params,
    /// Headline figures (medians).
    pub figures: Vec<Figure>,
    /// Medians over repetitions of every per-repetition number.
    pub medians: BTreeMap<String, f64>,
    /// Create-to-status latency over every probe of every repetition, ms.
    pub latency_ms: Option<Distribution>,
    /// `ipam_bench`'s output.
    pub ipam: Option<serde_json::Value>,
    /// Each repetition.
    pub reps: Vec<Rep>,
    /// How the figures are defined.
    pub definitions: String,
    /// Wall time of the whole benchmark.
    pub duration_s: f64,
}

impl Report {
    /// An empty report.
    pub fn new(params: Params, build: Build) -> Report {
        Report {
            date: k8s_openapi::jiff::Timestamp::now()
                .round(k8s_openapi::jiff::Unit::Second)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            machine: Machine::default(),
            apiserver_version: String::new(),
            build,
            params,
            figures: Vec::new(),
            medians: BTreeMap::new(),
            latency_ms: None,
            ipam: None,
            reps: Vec::new(),
            definitions: definitions(),
            duration_s: 0.0,
        }
    }

    /// Recomputes the medians and the headline figures from what has been measured.
    pub fn summarise(&mut self) {
        let mut medians = BTreeMap::new();
        let mut put = |name: &str, f: &dyn Fn(&Rep) -> f64| {
            let values: Vec<f64> = self.reps.iter().map(f).collect();
            if !values.is_empty() {
                medians.insert(name.to_string(), round3(median(&values)));
            }
        };
        put("loop.create_s", &|r| r.plain_loop.create_s);
        put("loop.loop_s", &|r| r.plain_loop.loop_s);
        put("loop.loop_seen_s", &|r| r.plain_loop.loop_seen_s);
        put("loop.mean_patch_ms", &|r| r.plain_loop.mean_patch_ms);
        put("loop.in_flight", &|r| r.plain_loop.in_flight as f64);
        put("pending.create_s", &|r| r.pending.create_s);
        put("pending.ready_s", &|r| r.pending.ready_s);
        put("pending.first_ip_s", &|r| r.pending.first_ip_s);
        put("pending.all_ip_s", &|r| r.pending.all_ip_s);
        put("pending.writes_settled_s", &|r| r.pending.writes_settled_s);
        put("pending.ratio_vs_loop", &|r| r.pending.ratio_vs_loop);
        put("pending.vm_rss_mib", &|r| r.pending.memory.vm_rss_mib);
        put("pending.vm_hwm_mib", &|r| r.pending.memory.vm_hwm_mib);
        put("pending.rss_anon_mib", &|r| r.pending.memory.rss_anon_mib);
        put("pending.rss_file_mib", &|r| r.pending.memory.rss_file_mib);
        put("pending.rss_at_ready_mib", &|r| r.pending.rss_at_ready_mib);
        put("pending.rss_at_all_ip_mib", &|r| {
            r.pending.rss_at_all_ip_mib
        });
        put("pending.controller_cpu_s", &|r| {
            cpu(&r.pending.cpu_s, "controller")
        });
        put("pending.apiserver_cpu_s", &|r| {
            cpu(&r.pending.cpu_s, "kube-apiserver")
        });
        put("pending.etcd_cpu_s", &|r| cpu(&r.pending.cpu_s, "etcd"));
        put("pending.harness_cpu_s", &|r| {
            cpu(&r.pending.cpu_s, "harness")
        });
        put("loop.apiserver_cpu_s", &|r| {
            cpu(&r.plain_loop.cpu_s, "kube-apiserver")
        });
        put("loop.etcd_cpu_s", &|r| cpu(&r.plain_loop.cpu_s, "etcd"));
        put("loop.harness_cpu_s", &|r| {
            cpu(&r.plain_loop.cpu_s, "harness")
        });
        put("latency.p99_ms", &|r| r.latency.distribution_ms.p99);
        put("running.create_s", &|r| r.running.create_s);
        put("running.all_ip_s", &|r| r.running.all_ip_s);
        put("running.after_last_create_s", &|r| {
            r.running.after_last_create_s
        });
        put("running.ratio_vs_create", &|r| r.running.ratio_vs_create);
        put("running.ratio_vs_loop", &|r| r.running.ratio_vs_loop);
        put("running.create_to_ip_p99_ms", &|r| {
            r.running.create_to_ip_ms.p99
        });
        put("running.vm_rss_mib", &|r| r.running.memory.vm_rss_mib);
        put("running.vm_hwm_mib", &|r| r.running.memory.vm_hwm_mib);
        put("running.rss_anon_mib", &|r| r.running.memory.rss_anon_mib);
        put("running.controller_cpu_s", &|r| {
            cpu(&r.running.cpu_s, "controller")
        });
        put("running.apiserver_cpu_s", &|r| {
            cpu(&r.running.cpu_s, "kube-apiserver")
        });
        self.medians = medians;

        let all_probes: Vec<f64> = self
            .reps
            .iter()
            .flat_map(|r| r.latency.samples_ms.iter().copied())
            .collect();
        self.latency_ms = (!all_probes.is_empty()).then(|| Distribution::of(&all_probes));

        let mut figures = Vec::new();
        let m = &self.medians;
        if let Some(&r) = m.get("pending.ratio_vs_loop") {
            figures.push(Figure::new(
                "Burst ratio (a, headline): pending burst / best concurrent raw writer",
                r,
                "x",
                "<= 1.1",
                Some(r <= 1.1),
            ));
        }
        if let Some(&r) = m.get("running.ratio_vs_create") {
            figures.push(Figure::new(
                "Burst ratio (b): running burst, last IP / last create",
                r,
                "x",
                "",
                None,
            ));
        }
        if let Some(d) = &self.latency_ms {
            figures.push(Figure::new(
                "Create-to-status latency p99, N Services present",
                d.p99,
                "ms",
                "< 100",
                Some(d.p99 < 100.0),
            ));
        }
        for (scenario, name) in [
            (
                "free_space_churn",
                "Pure IPAM: FreeSpace allocate+release, /12, fragmented",
            ),
            (
                "allocator_churn",
                "Pure IPAM: Allocator assign+release, /12, fragmented",
            ),
            (
                "free_space_hot",
                "Pure IPAM: FreeSpace allocate+release, /12, same address",
            ),
            (
                "allocator_hot",
                "Pure IPAM: Allocator assign+release, /12, same Service",
            ),
        ] {
            if let Some(ns) = self.ipam_median(scenario) {
                figures.push(Figure::new(name, ns, "ns", "< 1000", Some(ns < 1000.0)));
            }
        }
        if let Some(&rss) = m.get("pending.vm_rss_mib") {
            figures.push(Figure::new(
                "Controller VmRSS, N Services + 100 pools, settled",
                rss,
                "MiB",
                "< 40",
                Some(rss < 40.0),
            ));
        }
        if let Some(&hwm) = m.get("pending.vm_hwm_mib") {
            figures.push(Figure::new(
                "Controller VmHWM (peak) over start-up with N pending",
                hwm,
                "MiB",
                "",
                None,
            ));
        }
        self.figures = figures;
    }

    fn ipam_median(&self, scenario: &str) -> Option<f64> {
        self.ipam
            .as_ref()?
            .get("scenarios")?
            .as_array()?
            .iter()
            .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(scenario))?
            .get("median_ns_per_pair")?
            .as_f64()
    }

    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        Ok(())
    }
}
