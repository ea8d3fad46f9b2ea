//! The benchmark report: what was measured (JSON) and a Markdown rendering with the headline
//! figures against their goals.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::procfs::{Machine, Memory, round3};
use super::stats::{Distribution, median};

/// How the figures are defined; printed into every report.
pub const DEFINITIONS: &str = "\
- **Plain loop** (the baseline): N pending Services exist (no controller running); one kube \
client (same library and settings as the controller, field manager `ferrolb-bench-loop`) applies, \
one after another, the exact status body the controller writes (`service_patch`: \
`status.loadBalancer.ingress` with `ipMode: VIP`, the `ferrolb.io/ip-allocated-from-pool` \
annotation and the `ferrolb.io/IPAllocated` condition) to each Service's `/status`. Time: first \
request sent to last response received. A watch of the namespace runs meanwhile, as in (a).
- **(a) Pending burst, the headline ratio**: N Services are created (`in_flight` creates at a \
time) while no controller runs; a watch of the namespace is listed (none has an IP); then the \
release controller process is spawned. Time: spawn to the watch event that shows the last \
Service with an ingress IP (includes process start, cache sync of N Services, allocation, every \
status write, and watch delivery). Ratio (a) = that time / plain loop time.
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
the pinned Go modules, no kube-controller-manager).";

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

/// The plain loop's figures.
#[derive(Clone, Debug, Serialize)]
pub struct LoopPhase {
    /// Creating the N Services (baseline for nothing; for reference).
    pub create_s: f64,
    /// The loop, first request to last response.
    pub loop_s: f64,
    /// Loop start to the watch event of its last write.
    pub loop_seen_s: f64,
    /// Mean round trip per patch.
    pub mean_patch_ms: f64,
    /// CPU seconds per process during the loop.
    pub cpu_s: BTreeMap<String, f64>,
}

/// The controller's own counters at the end of a phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ControllerMetrics {
    /// Service status writes that succeeded.
    pub service_writes: f64,
    /// Events written.
    pub event_writes: f64,
    /// Pool status writes.
    pub pool_writes: f64,
    /// Failed writes of any kind.
    pub write_errors: f64,
    /// Inputs processed by the state machine.
    pub reconcile_count: f64,
    /// Time spent processing them.
    pub reconcile_sum_s: f64,
    /// New assignments.
    pub allocations: f64,
}

impl ControllerMetrics {
    /// Reads the controller's `/metrics` text.
    pub fn parse(text: &str) -> ControllerMetrics {
        let mut m = ControllerMetrics::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if let Some(labels) = name.strip_prefix("ferrolb_controller_writes_total") {
                if labels.contains("result=\"error\"") {
                    m.write_errors += value;
                } else if labels.contains("object=\"service\"") {
                    m.service_writes += value;
                } else if labels.contains("object=\"event\"") {
                    m.event_writes += value;
                } else if labels.contains("object=\"pool\"") {
                    m.pool_writes += value;
                }
            } else if name == "ferrolb_controller_reconcile_seconds_count" {
                m.reconcile_count = value;
            } else if name == "ferrolb_controller_reconcile_seconds_sum" {
                m.reconcile_sum_s = value;
            } else if name == "ferrolb_controller_allocations_total" {
                m.allocations = value;
            }
        }
        m
    }

    /// Every write, successful or not.
    pub fn all_writes(&self) -> f64 {
        self.service_writes + self.event_writes + self.pool_writes + self.write_errors
    }

    /// Turns totals into what happened since `before`.
    pub fn subtract(&mut self, before: &ControllerMetrics) {
        self.service_writes -= before.service_writes;
        self.event_writes -= before.event_writes;
        self.pool_writes -= before.pool_writes;
        self.write_errors -= before.write_errors;
        self.reconcile_count -= before.reconcile_count;
        self.reconcile_sum_s = round3(self.reconcile_sum_s - before.reconcile_sum_s);
        self.allocations -= before.allocations;
    }
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
    /// `all_ip_s` / the plain loop's `loop_s` (same repetition).
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
    /// `all_ip_s` / the plain loop's `loop_s` (same repetition).
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

/// One headline figure against its goal.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// What it is.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Unit.
    pub unit: String,
    /// The goal, as text (`<= 1.3`), or empty.
    pub goal: String,
    /// Whether the goal is met (`None`: no goal).
    pub met: Option<bool>,
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

fn goal(name: &str, value: f64, unit: &str, goal: &str, met: Option<bool>) -> Figure {
    Figure {
        name: name.into(),
        value: round3(value),
        unit: unit.into(),
        goal: goal.into(),
        met,
    }
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
            definitions: DEFINITIONS.into(),
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
            figures.push(goal(
                "Burst ratio (a, headline): pending burst / plain loop",
                r,
                "x",
                "<= 1.3",
                Some(r <= 1.3),
            ));
        }
        if let Some(&r) = m.get("running.ratio_vs_create") {
            figures.push(goal(
                "Burst ratio (b): running burst, last IP / last create",
                r,
                "x",
                "",
                None,
            ));
        }
        if let Some(d) = &self.latency_ms {
            figures.push(goal(
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
                figures.push(goal(name, ns, "ns", "< 1000", Some(ns < 1000.0)));
            }
        }
        if let Some(&rss) = m.get("pending.vm_rss_mib") {
            figures.push(goal(
                "Controller VmRSS, N Services + 100 pools, settled",
                rss,
                "MiB",
                "< 40",
                Some(rss < 40.0),
            ));
        }
        if let Some(&hwm) = m.get("pending.vm_hwm_mib") {
            figures.push(goal(
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

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let p = &self.params;
        let _ = writeln!(s, "# ferrolb benchmark report\n");
        let _ = writeln!(
            s,
            "{} · {} × {} ({} MiB, kernel {}) · load at start {} · kube-apiserver {} · controller {} build of {}{} · harness {} · N = {} Services, {} pools, {} repetition(s), {} latency probes at {}/s, {} creates in flight\n",
            self.date,
            self.machine.nproc,
            self.machine.cpu_model,
            self.machine.memory_mib,
            self.machine.kernel,
            self.machine.loadavg_at_start,
            if self.apiserver_version.is_empty() {
                "-"
            } else {
                &self.apiserver_version
            },
            self.build.controller_profile,
            self.build.git_commit,
            if self.build.controller_sources_modified {
                " (with uncommitted controller changes)"
            } else {
                ""
            },
            self.build.harness_profile,
            p.services,
            p.pools,
            self.reps.len(),
            p.probes,
            p.probe_rate_per_s,
            p.in_flight,
        );
        if !p.controller_env.is_empty() {
            let env: Vec<String> = p
                .controller_env
                .iter()
                .map(|(k, v)| format!("`{k}={v}`"))
                .collect();
            let _ = writeln!(s, "Controller environment: {}\n", env.join(" "));
        }
        if !p.controller_wrapper.is_empty() {
            let _ = writeln!(
                s,
                "**The controller ran under `{}`: its timings include the wrapper's cost.**\n",
                p.controller_wrapper.join(" ")
            );
        }
        let _ = writeln!(s, "## Figures (medians)\n");
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
        if let Some(d) = &self.latency_ms {
            let _ = writeln!(
                s,
                "\nCreate-to-status latency over {} probes: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms.",
                d.count,
                fmt(d.p50),
                fmt(d.p90),
                fmt(d.p99),
                fmt(d.max)
            );
        }
        if !self.reps.is_empty() {
            let _ = writeln!(s, "\n## Per repetition (seconds unless marked)\n");
            let _ = writeln!(
                s,
                "| rep | loop | (a) ready | (a) first IP | (a) all IPs | (a) writes done | ratio (a) | (b) creates | (b) all IPs | ratio (b) | (b) vs loop | latency p50/p99/max ms | RSS / HWM MiB (a) | RSS / HWM MiB (b) | load |"
            );
            let _ = writeln!(
                s,
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|"
            );
            for (i, r) in self.reps.iter().enumerate() {
                let d = &r.latency.distribution_ms;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} / {} | {} / {} | {} → {} |",
                    i + 1,
                    fmt(r.plain_loop.loop_s),
                    fmt(r.pending.ready_s),
                    fmt(r.pending.first_ip_s),
                    fmt(r.pending.all_ip_s),
                    fmt(r.pending.writes_settled_s),
                    fmt(r.pending.ratio_vs_loop),
                    fmt(r.running.create_s),
                    fmt(r.running.all_ip_s),
                    fmt(r.running.ratio_vs_create),
                    fmt(r.running.ratio_vs_loop),
                    fmt(d.p50),
                    fmt(d.p99),
                    fmt(d.max),
                    fmt(r.pending.memory.vm_rss_mib),
                    fmt(r.pending.memory.vm_hwm_mib),
                    fmt(r.running.memory.vm_rss_mib),
                    fmt(r.running.memory.vm_hwm_mib),
                    r.loadavg_start,
                    r.loadavg_end,
                );
            }
            let _ = writeln!(s, "\n### Where the time goes (CPU seconds per phase)\n");
            let _ = writeln!(
                s,
                "| rep | phase | wall | controller | kube-apiserver | etcd | harness | other processes |\n|---|---|---:|---:|---:|---:|---:|---:|"
            );
            for (i, r) in self.reps.iter().enumerate() {
                for (phase, cpu_s) in [
                    ("plain loop", &r.plain_loop.cpu_s),
                    ("(a) pending burst", &r.pending.cpu_s),
                    ("(b) running burst", &r.running.cpu_s),
                ] {
                    let _ = writeln!(
                        s,
                        "| {} | {phase} | {} | {} | {} | {} | {} | {} |",
                        i + 1,
                        fmt(cpu(cpu_s, "wall")),
                        fmt(cpu(cpu_s, "controller")),
                        fmt(cpu(cpu_s, "kube-apiserver")),
                        fmt(cpu(cpu_s, "etcd")),
                        fmt(cpu(cpu_s, "harness")),
                        fmt(cpu(cpu_s, "others")),
                    );
                }
            }
            let _ = writeln!(s, "\n### Controller memory (MiB)\n");
            let _ = writeln!(
                s,
                "| rep | (a) at ready | (a) at last IP | (a) settled VmRSS | (a) VmHWM | (a) RssAnon | (a) RssFile | (b) settled VmRSS | (b) VmHWM | (b) RssAnon |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for (i, r) in self.reps.iter().enumerate() {
                let (a, b) = (&r.pending.memory, &r.running.memory);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    i + 1,
                    fmt(r.pending.rss_at_ready_mib),
                    fmt(r.pending.rss_at_all_ip_mib),
                    fmt(a.vm_rss_mib),
                    fmt(a.vm_hwm_mib),
                    fmt(a.rss_anon_mib),
                    fmt(a.rss_file_mib),
                    fmt(b.vm_rss_mib),
                    fmt(b.vm_hwm_mib),
                    fmt(b.rss_anon_mib),
                );
            }
            let _ = writeln!(s, "\n### Controller counters\n");
            let _ = writeln!(
                s,
                "| rep | phase | Service writes | Events | pool writes | errors | inputs | input time s |\n|---|---|---:|---:|---:|---:|---:|---:|"
            );
            for (i, r) in self.reps.iter().enumerate() {
                for (phase, m) in [
                    ("(a) start-up with N pending", &r.pending.metrics),
                    ("(b) running burst", &r.running.metrics),
                ] {
                    let _ = writeln!(
                        s,
                        "| {} | {phase} | {} | {} | {} | {} | {} | {} |",
                        i + 1,
                        m.service_writes,
                        m.event_writes,
                        m.pool_writes,
                        m.write_errors,
                        m.reconcile_count,
                        fmt(m.reconcile_sum_s),
                    );
                }
            }
        }
        if let Some(scenarios) = self
            .ipam
            .as_ref()
            .and_then(|v| v.get("scenarios"))
            .and_then(|v| v.as_array())
        {
            let _ = writeln!(s, "\n## Pure IPAM (ns per pair)\n");
            let _ = writeln!(
                s,
                "| scenario | median | min | max | pairs/run | free intervals | what |\n|---|---:|---:|---:|---:|---:|---|"
            );
            for sc in scenarios {
                let num = |k: &str| sc.get(k).and_then(|v| v.as_f64()).map_or("-".into(), fmt);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    sc.get("name").and_then(|v| v.as_str()).unwrap_or("?"),
                    num("median_ns_per_pair"),
                    num("min_ns_per_pair"),
                    num("max_ns_per_pair"),
                    num("pairs_per_run"),
                    num("free_intervals_before"),
                    sc.get("what").and_then(|v| v.as_str()).unwrap_or(""),
                );
            }
        }
        let _ = writeln!(s, "\n## Definitions\n\n{}", self.definitions);
        s
    }
}

fn cpu(map: &BTreeMap<String, f64>, name: &str) -> f64 {
    map.get(name).copied().unwrap_or(f64::NAN)
}

/// A number for humans: up to 3 decimals, no trailing zeros.
fn fmt(x: f64) -> String {
    if x.is_nan() {
        return "-".into();
    }
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_metrics_are_read_from_the_exposition() {
        let text = "# HELP x\n\
            ferrolb_controller_writes_total{object=\"service\",result=\"ok\"} 10\n\
            ferrolb_controller_writes_total{object=\"event\",result=\"ok\"} 7\n\
            ferrolb_controller_writes_total{object=\"pool\",result=\"ok\"} 3\n\
            ferrolb_controller_writes_total{object=\"service\",result=\"error\"} 1\n\
            ferrolb_controller_reconcile_seconds_sum 0.5\n\
            ferrolb_controller_reconcile_seconds_count 42\n\
            ferrolb_controller_allocations_total 10\n";
        let m = ControllerMetrics::parse(text);
        assert_eq!(
            (
                m.service_writes,
                m.event_writes,
                m.pool_writes,
                m.write_errors
            ),
            (10.0, 7.0, 3.0, 1.0)
        );
        assert_eq!(
            (m.reconcile_count, m.reconcile_sum_s, m.allocations),
            (42.0, 0.5, 10.0)
        );
        assert_eq!(m.all_writes(), 21.0);
    }

    #[test]
    fn numbers_print_short() {
        assert_eq!(fmt(1.5), "1.5");
        assert_eq!(fmt(2.0), "2");
        assert_eq!(fmt(0.1234), "0.123");
        assert_eq!(fmt(f64::NAN), "-");
    }
}
