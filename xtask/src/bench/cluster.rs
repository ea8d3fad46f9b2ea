//! One repetition of the cluster figures on a fresh control plane (etcd + kube-apiserver, no
//! kube-controller-manager): plain loop, pending burst, create-to-status latency, running burst,
//! and the controller's memory.
//!
//! Every Service is `type: LoadBalancer` with one TCP port and
//! `allocateLoadBalancerNodePorts: false` (10,000 Services would not fit the NodePort range),
//! in the namespace [`NAMESPACE`]. Pools come from the benchmarking range 198.19.0.0/16 and
//! the documentation range 203.0.113.0/24; the controller never sends anything to them.

mod controller;
pub mod scale;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_controller::reconcile::desired::{ConditionState, ServiceState, service_patch};
use ferrolb_controller::reconcile::observed::Observed;
use ferrolb_crds::ServiceKey;
use ferrolb_crds::contract::reason;
use ferrolb_crds::{IPAddressPool, IPAddressPoolSpec};
use ferrolb_tests::control_plane::{ControlPlane, Options};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::task::block_in_place;

use super::procfs::{self, CpuSnapshot, round3};
use super::report::{LatencyPhase, LoopPhase, Params, PendingPhase, Rep, RunningPhase};
use super::stats::Distribution;
use super::watch::Watch;
use controller::{RssSampler, RunningController, rss_near};

/// Namespace of every benchmark Service.
pub const NAMESPACE: &str = "bench";
/// Pools created: `bench-pool-000` (198.19.0.0/18, where every Service's address comes from,
/// first by name), 98 pools of 64 addresses in 198.19.64.0/18 and one of 203.0.113.0/24.
pub const POOLS: usize = 100;
/// The pool the controller hands addresses out of (and the plain loop writes).
const SERVING_POOL: &str = "bench-pool-000";
/// Field manager of the plain loop's writes.
const LOOP_FIELD_MANAGER: &str = "ferrolb-bench-loop";
/// In-flight counts of the raw-writer baseline: the controller's default `--concurrency` (128)
/// and two below it; the best of them is the baseline (issue #14).
const RAW_WRITERS_IN_FLIGHT: [usize; 3] = [8, 32, 128];

/// What one repetition measured.
#[derive(Debug)]
pub struct RepResult {
    /// `gitVersion` of the apiserver.
    pub apiserver_version: String,
    /// The figures.
    pub rep: Rep,
}

/// The lab bridge the apiserver listens on disappeared mid-repetition: another session ran
/// `cargo xtask cluster down` (or the cluster test), which removes it. The repetition is void.
#[derive(Debug)]
pub struct BridgeRemoved;

impl std::fmt::Display for BridgeRemoved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the bridge {} (where the apiserver listens) was removed by another process, e.g. `cargo xtask cluster down` or the cluster test",
            ferrolb_tests::lab::BRIDGE
        )
    }
}

impl std::error::Error for BridgeRemoved {}

/// Resolves when the lab bridge is gone (checked every 200 ms).
async fn bridge_removed() -> BridgeRemoved {
    let path = format!("/sys/class/net/{}", ferrolb_tests::lab::BRIDGE);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !Path::new(&path).exists() {
            return BridgeRemoved;
        }
    }
}

/// Runs one repetition in `dir` (removed first). Fails with [`BridgeRemoved`] at once if the lab
/// bridge disappears meanwhile (every process of the repetition is stopped).
pub async fn run_rep(params: &Params, controller_bin: &Path, dir: &Path) -> Result<RepResult> {
    let rep = run_rep_inner(params, controller_bin, dir);
    tokio::pin!(rep);
    tokio::select! {
        result = &mut rep => result,
        removed = bridge_removed() => Err(removed.into()),
    }
}

/// A fresh control plane (no kube-controller-manager) with the CRDs, in `dir` (removed
/// first), and the namespace [`NAMESPACE`].
async fn fresh_control_plane(dir: &Path) -> Result<(ControlPlane, Client)> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let cp = block_in_place(|| {
        ControlPlane::start(&Options {
            dir: dir.join("control-plane"),
            controller_manager: false,
            workloads: false,
            port: 0,
            detached: false,
        })
    })
    .context("starting the control plane")?;
    block_in_place(|| cp.install_crds())?;
    let client = cp.client().await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await
        .context("creating the bench namespace")?;
    Ok((cp, client))
}

async fn run_rep_inner(params: &Params, controller_bin: &Path, dir: &Path) -> Result<RepResult> {
    let (cp, client) = fresh_control_plane(dir).await?;
    let apiserver_version = client.apiserver_version().await?.git_version;
    setup(&client).await?;
    let bench = Bench {
        cp: &cp,
        client: client.clone(),
        api: Api::namespaced(client, NAMESPACE),
        params,
        names: (0..params.services)
            .map(|i| format!("svc-{i:05}"))
            .collect(),
        controller_bin,
        dir,
    };
    let loadavg_start = procfs::loadavg();

    eprintln!("    raw writers (the baseline)");
    let plain = bench.raw_writers().await?;

    eprintln!("    pending burst");
    let (pending, mut controller, mut watch) = bench.pending_burst(plain.loop_seen_s).await?;

    eprintln!("    create-to-status latency");
    let latency = bench.latency(&mut watch).await;
    let latency = latency.with_context(|| controller.context())?;
    drop(watch);
    controller.kill();

    eprintln!("    running burst");
    let mut all: Vec<String> = bench.names.clone();
    all.extend(latency.names.iter().cloned());
    bench.delete_all(&all).await?;
    let running = bench.running_burst(plain.loop_seen_s).await?;

    Ok(RepResult {
        apiserver_version,
        rep: Rep {
            loadavg_start,
            loadavg_end: procfs::loadavg(),
            plain_loop: plain,
            pending,
            latency: latency.phase,
            running,
        },
    })
}

/// The pools.
async fn setup(client: &Client) -> Result<()> {
    let pools: Api<IPAddressPool> = Api::all(client.clone());
    for i in 0..POOLS {
        let addresses = match i {
            0 => "198.19.0.0/18".to_string(),
            i if i == POOLS - 1 => "203.0.113.0/24".to_string(),
            i => {
                let offset = (i - 1) * 64;
                format!("198.19.{}.{}/26", 64 + offset / 256, offset % 256)
            }
        };
        let pool = IPAddressPool::new(
            &format!("bench-pool-{i:03}"),
            IPAddressPoolSpec {
                addresses: vec![addresses],
                auto_assign: true,
                avoid_buggy_ips: false,
                service_allocation: None,
            },
        );
        pools
            .create(&PostParams::default(), &pool)
            .await
            .with_context(|| format!("creating pool {i}"))?;
    }
    Ok(())
}

/// A LoadBalancer Service with one port and no node ports.
fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "type": "LoadBalancer",
            "allocateLoadBalancerNodePorts": false,
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        },
    }))
    .expect("a valid Service")
}

/// The status body the controller writes for a Service that gets `ip` from `pool`: built by
/// the controller's own [`service_patch`].
fn controller_body(name: &str, ip: IpAddr, pool: &str) -> serde_json::Value {
    let desired = ServiceState {
        ips: vec![ip],
        pool: Some(pool.into()),
        condition: Some(ConditionState {
            allocated: true,
            reason: reason::ALLOCATED.into(),
            message: format!("{ip} from pool {pool}"),
        }),
    };
    service_patch(
        &ServiceKey::new(NAMESPACE, name),
        &desired,
        &Observed::default(),
        Timestamp::now(),
    )
}

/// The raw writer's work: applies `bodies[i]` to the status of `names[i]` as the field manager
/// [`LOOP_FIELD_MANAGER`], `in_flight` requests at once.
async fn apply_statuses(
    api: &Api<Service>,
    names: &[String],
    bodies: &[serde_json::Value],
    in_flight: usize,
) -> Result<()> {
    let params = &PatchParams::apply(LOOP_FIELD_MANAGER).force();
    futures::stream::iter(names.iter().zip(bodies))
        .map(|(name, body)| async move {
            api.patch_status(name, params, &Patch::Apply(body))
                .await
                .with_context(|| format!("raw writer: applying the status of {name}"))
        })
        .buffer_unordered(in_flight)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Ticks `rate` times a second, late ticks delayed (not bunched): the spacing of latency probes.
fn probe_ticks(rate: u32) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Each probe's create-to-status time in ms: `created[i]` to `seen[i]`.
fn latencies_ms(created: &[Instant], seen: &[Instant]) -> Vec<f64> {
    created
        .iter()
        .zip(seen)
        .map(|(c, s)| round3(s.saturating_duration_since(*c).as_secs_f64() * 1000.0))
        .collect()
}

/// Whole seconds, to the millisecond.
fn secs(d: Duration) -> f64 {
    round3(d.as_secs_f64())
}

/// Waits (at most 60 s) for a quiet machine before a timed phase ([`procfs::quiesce`]).
async fn quiesce() {
    if !procfs::quiesce(Duration::from_secs(60)).await {
        eprintln!("    (the machine stayed busy for 60 s; measuring anyway)");
    }
}

/// The latest of `instants`.
fn latest(instants: &[Instant]) -> Option<Instant> {
    instants.iter().copied().max()
}

struct Bench<'a> {
    cp: &'a ControlPlane,
    client: Client,
    api: Api<Service>,
    params: &'a Params,
    names: Vec<String>,
    controller_bin: &'a Path,
    dir: &'a Path,
}

/// How long to wait for a whole burst to get IPs before giving up.
fn burst_timeout(services: usize) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(50) * services as u32
}

struct LatencyRun {
    phase: LatencyPhase,
    names: Vec<String>,
}

impl Bench<'_> {
    fn processes(&self, controller: Option<&RunningController>) -> Vec<(&'static str, u32)> {
        let [etcd, apiserver, _] = self.cp.pids();
        let mut p = vec![("etcd", etcd), ("kube-apiserver", apiserver)];
        if let Some(c) = controller {
            p.push(("controller", c.pid()));
        }
        p
    }

    /// Creates `names` with `in_flight` creates at once; returns when each create returned.
    async fn create_all(&self, names: &[String]) -> Result<Vec<Instant>> {
        let api = &self.api;
        let mut done: Vec<(usize, Instant)> = futures::stream::iter(names.iter().enumerate())
            .map(|(i, name)| async move {
                api.create(&PostParams::default(), &service(name))
                    .await
                    .with_context(|| format!("creating Service {name}"))?;
                anyhow::Ok((i, Instant::now()))
            })
            .buffer_unordered(self.params.in_flight)
            .try_collect()
            .await?;
        done.sort_by_key(|(i, _)| *i);
        Ok(done.into_iter().map(|(_, at)| at).collect())
    }

    /// Deletes `names` (missing ones are fine), `in_flight` at once.
    async fn delete_all(&self, names: &[String]) -> Result<()> {
        let api = &self.api;
        futures::stream::iter(names)
            .map(|name| async move {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => Err(e).with_context(|| format!("deleting Service {name}")),
                }
            })
            .buffer_unordered(self.params.in_flight)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// The baseline: the best concurrent raw writer. For each of [`RAW_WRITERS_IN_FLIGHT`]
    /// (which holds the controller's `--concurrency`), the Services are created pending and one
    /// client applies the controller's status body to each, that many requests in flight, until
    /// the watch has seen every write; the fastest run is the baseline.
    async fn raw_writers(&self) -> Result<LoopPhase> {
        let mut runs: Vec<LoopPhase> = Vec::new();
        for in_flight in RAW_WRITERS_IN_FLIGHT {
            let run = self.raw_writer(in_flight).await?;
            eprintln!(
                "      {in_flight} in flight: last write seen after {:.3} s",
                run.loop_seen_s
            );
            runs.push(run);
            self.delete_all(&self.names).await?;
        }
        let by_in_flight: Vec<(usize, f64)> =
            runs.iter().map(|r| (r.in_flight, r.loop_seen_s)).collect();
        let mut best = runs
            .into_iter()
            .min_by(|a, b| a.loop_seen_s.total_cmp(&b.loop_seen_s))
            .context("no raw writer ran")?;
        best.by_in_flight = by_in_flight;
        Ok(best)
    }

    /// One raw writer run with `in_flight` status patches at once.
    async fn raw_writer(&self, in_flight: usize) -> Result<LoopPhase> {
        let created = Instant::now();
        self.create_all(&self.names).await?;
        let create_s = secs(created.elapsed());
        // The same watch runs as while the controller works, so the apiserver has the same
        // watcher to feed and this process the same events to decode.
        let mut watch = Watch::start(self.client.clone(), NAMESPACE).await?;
        let loop_client = self.cp.client().await?;
        let api: Api<Service> = Api::namespaced(loop_client, NAMESPACE);
        let base = u32::from(Ipv4Addr::new(198, 19, 0, 0));
        let bodies: Vec<serde_json::Value> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                controller_body(name, Ipv4Addr::from(base + i as u32).into(), SERVING_POOL)
            })
            .collect();
        quiesce().await;
        let cpu_before = CpuSnapshot::take(&self.processes(None));
        let start = Instant::now();
        apply_statuses(&api, &self.names, &bodies, in_flight).await?;
        let loop_time = start.elapsed();
        let cpu = CpuSnapshot::take(&self.processes(None)).since(&cpu_before);
        let seen = watch
            .wait_all(&self.names, burst_timeout(self.names.len()))
            .await?;
        let loop_seen = latest(&seen).map_or(loop_time, |t| t.duration_since(start));
        Ok(LoopPhase {
            in_flight,
            by_in_flight: Vec::new(),
            create_s,
            loop_s: secs(loop_time),
            loop_seen_s: secs(loop_seen),
            mean_patch_ms: round3(
                loop_time.as_secs_f64() * 1000.0 * in_flight as f64 / self.names.len() as f64,
            ),
            cpu_s: cpu,
        })
    }

    /// (a): every Service created while no controller runs, then the controller started.
    async fn pending_burst(&self, loop_s: f64) -> Result<(PendingPhase, RunningController, Watch)> {
        let created = Instant::now();
        self.create_all(&self.names).await?;
        let create_s = secs(created.elapsed());
        let mut watch = Watch::start(self.client.clone(), NAMESPACE).await?;
        if watch.with_ip() != 0 {
            bail!("pending Services already have IPs before the controller started");
        }
        quiesce().await;
        let cpu_before = CpuSnapshot::take(&self.processes(None));
        let start = Instant::now();
        let controller = RunningController::start(
            self.controller_bin,
            self.cp.kubeconfig(),
            &self.dir.join("controller-pending.log"),
            self.params,
        )?;
        let sampler = RssSampler::start(controller.pid(), start);
        let ready = controller.ready_poller(start + burst_timeout(self.names.len()));
        let (seen, cpu, all_ip) = self
            .burst_seen(&mut watch, &controller, &cpu_before, start)
            .await?;
        let first_ip = seen
            .iter()
            .min()
            .context("no Services")?
            .duration_since(start);
        let ready_at = ready.await?.context("the controller never became ready")?;
        let settled = controller.settle().await?;
        let memory = procfs::memory(controller.pid());
        let rss_timeline = sampler.stop();
        let metrics = controller.metrics_snapshot(&self.dir.join("metrics-pending.txt"))?;
        let ready_s = secs(ready_at.duration_since(start));
        Ok((
            PendingPhase {
                create_s,
                ready_s,
                first_ip_s: secs(first_ip),
                all_ip_s: secs(all_ip),
                writes_settled_s: secs(settled.saturating_duration_since(start)),
                ratio_vs_loop: round3(all_ip.as_secs_f64() / loop_s),
                cpu_s: cpu,
                memory,
                rss_at_ready_mib: rss_near(&rss_timeline, ready_s),
                rss_at_all_ip_mib: rss_near(&rss_timeline, all_ip.as_secs_f64()),
                rss_timeline,
                metrics,
            },
            controller,
            watch,
        ))
    }

    /// Waits until the watch has shown every Service of the burst with an IP: when each was
    /// seen, the CPU seconds per process since `cpu_before`, and `start` to the last IP.
    async fn burst_seen(
        &self,
        watch: &mut Watch,
        controller: &RunningController,
        cpu_before: &CpuSnapshot,
        start: Instant,
    ) -> Result<(Vec<Instant>, BTreeMap<String, f64>, Duration)> {
        let seen = watch
            .wait_all(&self.names, burst_timeout(self.names.len()))
            .await
            .with_context(|| controller.context())?;
        let cpu = CpuSnapshot::take(&self.processes(Some(controller))).since(cpu_before);
        let all_ip = latest(&seen).context("no Services")?.duration_since(start);
        Ok((seen, cpu, all_ip))
    }

    /// Services created one at a time, spaced, while the controller runs with the burst present.
    async fn latency(&self, watch: &mut Watch) -> Result<LatencyRun> {
        let names: Vec<String> = (0..self.params.probes)
            .map(|i| format!("probe-{i:04}"))
            .collect();
        quiesce().await;
        let mut tick = probe_ticks(self.params.probe_rate_per_s);
        let mut created = Vec::with_capacity(names.len());
        for name in &names {
            tick.tick().await;
            self.api
                .create(&PostParams::default(), &service(name))
                .await
                .with_context(|| format!("creating Service {name}"))?;
            created.push(Instant::now());
        }
        let seen = watch.wait_all(&names, Duration::from_secs(60)).await?;
        let samples_ms = latencies_ms(&created, &seen);
        Ok(LatencyRun {
            phase: LatencyPhase {
                distribution_ms: Distribution::of(&samples_ms),
                samples_ms,
            },
            names,
        })
    }

    /// (b): the controller runs (synced, no Services), then every Service is created in a burst.
    async fn running_burst(&self, loop_s: f64) -> Result<RunningPhase> {
        let mut controller = RunningController::start(
            self.controller_bin,
            self.cp.kubeconfig(),
            &self.dir.join("controller-running.log"),
            self.params,
        )?;
        controller
            .ready_poller(Instant::now() + Duration::from_secs(120))
            .await?
            .with_context(|| controller.context())?;
        controller.settle().await?;
        let mut watch = Watch::start(self.client.clone(), NAMESPACE).await?;
        let metrics_before = controller.metrics_snapshot(&self.dir.join("metrics-idle.txt"))?;
        quiesce().await;
        let cpu_before = CpuSnapshot::take(&self.processes(Some(&controller)));
        let start = Instant::now();
        let created = self.create_all(&self.names).await?;
        let create_time = latest(&created)
            .context("no Services")?
            .duration_since(start);
        let (seen, cpu, all_ip) = self
            .burst_seen(&mut watch, &controller, &cpu_before, start)
            .await?;
        let per_service_ms: Vec<f64> = created
            .iter()
            .zip(&seen)
            .map(|(c, s)| s.saturating_duration_since(*c).as_secs_f64() * 1000.0)
            .collect();
        let settled = controller.settle().await?;
        let memory = procfs::memory(controller.pid());
        let mut metrics = controller.metrics_snapshot(&self.dir.join("metrics-running.txt"))?;
        metrics.subtract(&metrics_before);
        controller.kill();
        Ok(RunningPhase {
            create_s: secs(create_time),
            all_ip_s: secs(all_ip),
            after_last_create_s: secs(all_ip.saturating_sub(create_time)),
            writes_settled_s: secs(settled.saturating_duration_since(start)),
            ratio_vs_create: round3(all_ip.as_secs_f64() / create_time.as_secs_f64()),
            ratio_vs_loop: round3(all_ip.as_secs_f64() / loop_s),
            create_to_ip_ms: Distribution::of(&per_service_ms),
            cpu_s: cpu,
            memory,
            metrics,
        })
    }
}
