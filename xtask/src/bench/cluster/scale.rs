//! The controller at scale (issue #14, part 5), on a fresh control plane: `services`
//! LoadBalancer Services spread over `pools` pools, each Service asking for its pool by the
//! `ferrolb.io/address-pool` annotation (Service `i` in pool `i % pools`). Services are IPv6
//! single-stack: the testbed's IPv4 cluster-IP range (a /16) holds about 65,000 Services, its
//! IPv6 one (a /108) a million. Pools are /120s of 2001:db8:100::/40 (documentation range; the
//! controller only writes the addresses into statuses).
//!
//! 1. Every Service is created pending (no controller), by a kube-apiserver built without the
//!    cluster-IP usage gauges ([`bulk_apiserver`]: the stock one recounts every IPAddress per
//!    create, hours at 100,000); then the stock kube-apiserver takes over on the same etcd and
//!    runs every measured phase.
//! 2. Raw writer: for each of [`RAW_IN_FLIGHT`], one client applies the controller's own status
//!    body to every Service that many requests at once, until a watch has seen every write;
//!    then the statuses are cleared again (an empty apply by the same field manager).
//! 3. The controller starts: time to every Service seen with its address, VmRSS over the run
//!    and settled.
//! 4. With all of them present, Services are created one at a time (create-to-status).
//! 5. The controller stops, its statuses are cleared, and the raw writer runs once more at
//!    [`RAW_AFTER_IN_FLIGHT`] on Services written as often as the controller found them. The
//!    fastest raw run is the baseline of the ratio.
//!
//! The state machine alone at 100,000 Services (`controller/examples/state_memory.rs`) is run
//! by `bench.rs` after this section and reported with it.

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_crds::contract::{annotation, field_manager};
use ferrolb_crds::{IPAddressPool, IPAddressPoolSpec};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde_json::json;

use super::super::procfs::{self, CpuSnapshot, Memory, round3};
use super::super::report::{ControllerMetrics, Params};
use super::super::stats::Distribution;
use super::super::watch::Watch;
use super::controller::{RssSampler, RunningController, rss_near};
use super::{LOOP_FIELD_MANAGER, NAMESPACE, burst_timeout, controller_body, latest, quiesce, secs};
use ferrolb_tests::control_plane::{ControlPlane, SERVICE_CIDR_V6};
use ferrolb_tests::{bins, bulk_apiserver};
use tokio::task::block_in_place;

/// In-flight counts of the raw-writer baseline at scale: the controller's `--concurrency` (128)
/// and 32. 8 is left out here: it was the slowest at every size, and each run costs two writes
/// per Service.
pub const RAW_IN_FLIGHT: [usize; 2] = [32, 128];

/// In-flight count of the raw-writer run after the controller's.
pub const RAW_AFTER_IN_FLIGHT: usize = 128;

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleParams {
    pub services: usize,
    pub pools: usize,
    /// Services created one at a time with all present (create-to-status).
    pub probes: usize,
    pub probe_rate_per_s: u32,
}

/// One raw-writer run.
#[derive(Clone, Debug, Serialize)]
pub struct RawRun {
    pub in_flight: usize,
    /// First apply sent to the watch showing the last write.
    pub seen_s: f64,
    /// Run after the controller's (on Services whose status had been written and cleared as
    /// often as the controller's were when it ran).
    pub after_controller: bool,
}

/// What the scale section measured.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleSection {
    pub params: ScaleParams,
    /// Creating every Service, `in_flight` at once.
    pub create_s: f64,
    pub raw: Vec<RawRun>,
    /// The fastest raw writer.
    pub raw_best_s: f64,
    /// Controller start to `/readyz` answering 200.
    pub ready_s: f64,
    /// Controller start to the first Service seen with its address.
    pub first_ip_s: f64,
    /// Controller start to the last Service seen with its address.
    pub all_ip_s: f64,
    /// `all_ip_s / raw_best_s`.
    pub ratio_vs_raw: f64,
    /// CPU seconds per process during the controller's burst.
    pub cpu_s: std::collections::BTreeMap<String, f64>,
    /// The controller's counters when the last address was seen: Service, pool and Event
    /// writes in the burst.
    pub writes_in_burst: ControllerMetrics,
    /// VmRSS when the last address was seen, MiB.
    pub rss_at_all_ip_mib: f64,
    /// Memory once the controller's writes had been still for 3 s.
    pub settled: Memory,
    /// Create-to-status with every Service present, ms.
    pub latency_ms: Distribution,
    /// The state machine alone at 100,000 Services, in one process.
    pub state_memory: Option<StateMemory>,
}

/// What `controller/examples/state_memory.rs` measured: the controller's state machine fed the
/// same kind of Services in one process (no apiserver), every write answered as the apiserver
/// does. It reaches sizes the testbed apiserver takes hours to create.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct StateMemory {
    pub services: usize,
    pub pools: usize,
    /// Bytes the state holds once every Service has its address (counted as glibc lays out
    /// blocks), per Service.
    pub heap_per_service: f64,
    /// The same, in total, MiB.
    pub heap_mib: f64,
    /// The process's RssAnon once settled (after the controller's trim), MiB.
    pub rss_anon_mib: f64,
}

impl StateMemory {
    /// Reads the example's JSON line.
    pub fn from_json(v: &serde_json::Value) -> Result<StateMemory> {
        let num = |path: &[&str]| {
            path.iter()
                .try_fold(v, |v, k| v.get(k))
                .and_then(serde_json::Value::as_f64)
                .with_context(|| format!("state_memory printed no {}", path.join(".")))
        };
        Ok(StateMemory {
            services: num(&["services"])? as usize,
            pools: num(&["pools"])? as usize,
            heap_per_service: round3(num(&["heap_bytes", "per_service_settled"])?),
            heap_mib: round3(num(&["heap_bytes", "settled"])? / 1_048_576.0),
            rss_anon_mib: round3(num(&["rss_anon_kib_settled"])? / 1024.0),
        })
    }
}

/// Pool `i`: `bench-pool-NNNN`, 2001:db8:100:i::/120.
fn pool(i: usize) -> (String, String) {
    (
        format!("bench-pool-{i:04}"),
        format!("2001:db8:100:{i:x}::/120"),
    )
}

/// The address the raw writer gives Service `i` (the `i / pools`-th of its pool).
fn raw_address(i: usize, pools: usize) -> IpAddr {
    let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0));
    let pool = (i % pools) as u128;
    let offset = (i / pools) as u128;
    IpAddr::V6(Ipv6Addr::from(base + (pool << 64) + offset))
}

/// Service number `i`: single-stack IPv6, asking for pool `i mod pools`, with its cluster IP
/// given (the `i`-th of the testbed's IPv6 Service range): the apiserver's dynamic IPv6
/// cluster-IP allocation slows down as Services accumulate (about 80 creates a second at first,
/// 25 at 10,000 Services on this machine), and a static one costs the same as IPv4's.
fn service(name: &str, i: usize, pools: usize) -> Service {
    let (pool, _) = pool(i % pools);
    let network: Ipv6Addr = SERVICE_CIDR_V6
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("the IPv6 Service range");
    // Past the first 16 addresses, which the apiserver may keep for itself.
    let cluster_ip = Ipv6Addr::from(u128::from(network) + 16 + i as u128);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "annotations": {annotation::ADDRESS_POOL: pool},
        },
        "spec": {
            "type": "LoadBalancer",
            "ipFamilyPolicy": "SingleStack",
            "ipFamilies": ["IPv6"],
            "clusterIP": cluster_ip.to_string(),
            "clusterIPs": [cluster_ip.to_string()],
            "allocateLoadBalancerNodePorts": false,
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        },
    }))
    .expect("a valid Service")
}

/// Runs the section in `dir` (removed first).
pub async fn run(
    scale: &ScaleParams,
    params: &Params,
    controller_bin: &std::path::Path,
    dir: &std::path::Path,
) -> Result<ScaleSection> {
    if scale.pools == 0 || scale.services + scale.probes > scale.pools * 250 {
        bail!("--scale-services must fit the pools (250 Services per pool at most)");
    }
    if scale.services + scale.probes > 1_000_000 {
        bail!("the IPv6 Service range (a /108) holds about a million Services; ask for fewer");
    }
    let bulk = block_in_place(bulk_apiserver::build_if_missing)?;
    let (cp, client) = super::fresh_control_plane(dir).await?;
    setup(&client, scale.pools).await?;
    let names: Vec<String> = (0..scale.services).map(|i| format!("svc-{i:06}")).collect();
    eprintln!(
        "    creating {} Services (on a kube-apiserver without the cluster-IP usage gauges)",
        scale.services
    );
    block_in_place(|| cp.restart_apiserver_as(&bulk))?;
    let created = Instant::now();
    let api = Api::namespaced(cp.client().await?, NAMESPACE);
    create(&api, &names, 0, scale.pools, params.in_flight).await?;
    let create_s = secs(created.elapsed());
    eprintln!("      {create_s:.1} s; back to the stock kube-apiserver");
    block_in_place(|| cp.restart_apiserver_as(&bins::binary("kube-apiserver")?))?;
    let client = cp.client().await?;
    let run = Run {
        cp: &cp,
        client: client.clone(),
        api: Api::namespaced(client, NAMESPACE),
        scale,
        params,
        names,
    };

    let mut raw = Vec::new();
    for in_flight in RAW_IN_FLIGHT {
        raw.push(run.raw_run(in_flight, false).await?);
    }

    eprintln!("    controller burst");
    let mut watch = Watch::start(run.client.clone(), NAMESPACE).await?;
    if watch.with_ip() != 0 {
        bail!("Services still had addresses before the controller started");
    }
    quiesce().await;
    let processes = |c: Option<&RunningController>| {
        let [etcd, apiserver, _] = cp.pids();
        let mut p = vec![("etcd", etcd), ("kube-apiserver", apiserver)];
        p.extend(c.map(|c| ("controller", c.pid())));
        p
    };
    let cpu_before = CpuSnapshot::take(&processes(None));
    let start = Instant::now();
    let mut controller = RunningController::start(
        controller_bin,
        cp.kubeconfig(),
        &dir.join("controller-scale.log"),
        params,
    )?;
    let sampler = RssSampler::start(controller.pid(), start);
    let ready = controller.ready_poller(start + burst_timeout(scale.services));
    let seen = watch
        .wait_all(&run.names, burst_timeout(scale.services))
        .await
        .with_context(|| controller.context())?;
    let cpu_s = CpuSnapshot::take(&processes(Some(&controller))).since(&cpu_before);
    let writes_in_burst =
        controller.metrics_snapshot(&dir.join("controller-at-last-address.prom"))?;
    let all_ip = latest(&seen).context("no Services")?.duration_since(start);
    let first_ip = seen
        .iter()
        .min()
        .context("no Services")?
        .duration_since(start);
    let ready_at = ready.await?.context("the controller never became ready")?;
    controller.settle().await?;
    let settled = procfs::memory(controller.pid());
    let timeline = sampler.stop();
    eprintln!(
        "      all addresses after {:.2} s; VmRSS settled {:.1} MiB",
        all_ip.as_secs_f64(),
        settled.vm_rss_mib
    );

    eprintln!("    create-to-status with every Service present");
    let latency = run.latency(&mut watch).await;
    let latency_ms = latency.with_context(|| controller.context())?;
    controller.kill();

    // The same writer once more, on Services as often written as the controller found them, so
    // the baseline is not the only one to write to fresh objects.
    run.clear_statuses_of(field_manager::CONTROLLER).await?;
    raw.push(run.raw_run(RAW_AFTER_IN_FLIGHT, true).await?);
    let raw_best_s = raw
        .iter()
        .map(|r| r.seen_s)
        .min_by(f64::total_cmp)
        .context("no raw writer ran")?;
    Ok(ScaleSection {
        params: scale.clone(),
        create_s,
        raw,
        raw_best_s,
        ready_s: secs(ready_at.duration_since(start)),
        first_ip_s: secs(first_ip),
        all_ip_s: secs(all_ip),
        ratio_vs_raw: round3(all_ip.as_secs_f64() / raw_best_s),
        cpu_s,
        writes_in_burst,
        rss_at_all_ip_mib: rss_near(&timeline, all_ip.as_secs_f64()),
        settled,
        latency_ms,
        state_memory: None,
    })
}

/// The pools.
async fn setup(client: &Client, pools: usize) -> Result<()> {
    let api: Api<IPAddressPool> = Api::all(client.clone());
    futures::stream::iter(0..pools)
        .map(|i| {
            let api = &api;
            async move {
                let (name, addresses) = pool(i);
                let spec = IPAddressPoolSpec {
                    addresses: vec![addresses],
                    auto_assign: true,
                    avoid_buggy_ips: false,
                    service_allocation: None,
                };
                api.create(&PostParams::default(), &IPAddressPool::new(&name, spec))
                    .await
                    .with_context(|| format!("creating pool {name}"))
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Creates `names` (the first being Service number `first`), `in_flight` at once.
async fn create(
    api: &Api<Service>,
    names: &[String],
    first: usize,
    pools: usize,
    in_flight: usize,
) -> Result<()> {
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| async move {
            api.create(&PostParams::default(), &service(name, first + i, pools))
                .await
                .with_context(|| format!("creating Service {name}"))
        })
        .buffer_unordered(in_flight)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

struct Run<'a> {
    cp: &'a ControlPlane,
    client: Client,
    api: Api<Service>,
    scale: &'a ScaleParams,
    params: &'a Params,
    names: Vec<String>,
}

impl Run<'_> {
    /// Creates `names` (the first being Service number `first`).
    async fn create(&self, names: &[String], first: usize) -> Result<()> {
        create(
            &self.api,
            names,
            first,
            self.scale.pools,
            self.params.in_flight,
        )
        .await
    }

    /// Applies the controller's status body to every Service, `in_flight` at once; returns the
    /// seconds from the first apply to the watch showing the last one.
    async fn raw_writer(&self, in_flight: usize) -> Result<f64> {
        let mut watch = Watch::start(self.client.clone(), NAMESPACE).await?;
        let api: Api<Service> = Api::namespaced(self.cp.client().await?, NAMESPACE);
        let pools = self.scale.pools;
        let bodies: Vec<serde_json::Value> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| controller_body(name, raw_address(i, pools), &pool(i % pools).0))
            .collect();
        quiesce().await;
        let start = Instant::now();
        super::apply_statuses(&api, &self.names, &bodies, in_flight).await?;
        let seen = watch
            .wait_all(&self.names, burst_timeout(self.names.len()))
            .await?;
        Ok(secs(
            latest(&seen).context("no Services")?.duration_since(start),
        ))
    }

    /// One raw-writer run at `in_flight`, then its statuses cleared again.
    async fn raw_run(&self, in_flight: usize, after_controller: bool) -> Result<RawRun> {
        let seen_s = self.raw_writer(in_flight).await?;
        eprintln!("    raw writer, {in_flight} in flight: {seen_s:.2} s");
        self.clear_statuses_of(LOOP_FIELD_MANAGER).await?;
        Ok(RawRun {
            in_flight,
            seen_s,
            after_controller,
        })
    }

    /// Takes back every status `manager` applied (an empty apply by that field manager), so the
    /// Services are pending again.
    async fn clear_statuses_of(&self, manager: &str) -> Result<()> {
        let params = PatchParams::apply(manager).force();
        let (api, params) = (&self.api, &params);
        futures::stream::iter(&self.names)
            .map(|name| async move {
                let body = json!({
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": name, "namespace": NAMESPACE},
                });
                api.patch_status(name, params, &Patch::Apply(&body))
                    .await
                    .with_context(|| format!("clearing the status of {name}"))
            })
            .buffer_unordered(128)
            .try_collect::<Vec<_>>()
            .await?;
        let mut watch = Watch::start(self.client.clone(), NAMESPACE).await?;
        let left = watch.with_ip();
        if left != 0 {
            bail!("{left} Services kept an address after their status was cleared");
        }
        Ok(())
    }

    /// Services created one at a time, spaced, with every Service present.
    async fn latency(&self, watch: &mut Watch) -> Result<Distribution> {
        let names: Vec<String> = (0..self.scale.probes)
            .map(|i| format!("probe-{i:04}"))
            .collect();
        quiesce().await;
        let mut tick = super::probe_ticks(self.scale.probe_rate_per_s);
        let mut created = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            tick.tick().await;
            self.create(std::slice::from_ref(name), self.scale.services + i)
                .await?;
            created.push(Instant::now());
        }
        let seen = watch.wait_all(&names, Duration::from_secs(60)).await?;
        // Gone again, so the raw writer's last run finds the measured Services only.
        let params = &DeleteParams::default();
        futures::stream::iter(&names)
            .map(|name| self.api.delete(name, params))
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await
            .context("deleting the probe Services")?;
        Ok(Distribution::of(&super::latencies_ms(&created, &seen)))
    }
}

impl ScaleSection {
    /// The section as Markdown.
    pub fn markdown(&self) -> String {
        let p = &self.params;
        let raw: Vec<String> = self
            .raw
            .iter()
            .map(|r| {
                let when = if r.after_controller {
                    " after the controller"
                } else {
                    ""
                };
                format!("{:.2} s at {} in flight{when}", r.seen_s, r.in_flight)
            })
            .collect();
        let mut md = format!(
            "## Controller at scale\n\n{} IPv6 LoadBalancer Services over {} pools (each asks for \
             its pool by annotation), created pending in {:.1} s; one repetition on a fresh \
             control plane.\n\n| figure | value | goal |\n|---|---|---|\n",
            p.services, p.pools, self.create_s
        );
        let rows = [
            (
                "best raw writer, first apply to last write seen".to_string(),
                format!("{:.2} s ({})", self.raw_best_s, raw.join(", ")),
                "-",
            ),
            (
                "controller start to every address seen".to_string(),
                format!(
                    "{:.2} s (ready {:.2} s, first address {:.2} s)",
                    self.all_ip_s, self.ready_s, self.first_ip_s
                ),
                "-",
            ),
            (
                "all allocated / best raw writer".to_string(),
                format!("**{:.3} x**", self.ratio_vs_raw),
                "<= 1.2",
            ),
            (
                "controller's writes by the last address: Service status, pool status, Events"
                    .to_string(),
                format!(
                    "{:.0}, {:.0}, {:.0}",
                    self.writes_in_burst.service_writes,
                    self.writes_in_burst.pool_writes,
                    self.writes_in_burst.event_writes
                ),
                "-",
            ),
            (
                "controller VmRSS settled (RssAnon + RssFile)".to_string(),
                format!(
                    "**{:.1} MiB** ({:.1} + {:.1}); at the last address {:.1} MiB; peak (VmHWM) {:.1} MiB",
                    self.settled.vm_rss_mib,
                    self.settled.rss_anon_mib,
                    self.settled.rss_file_mib,
                    self.rss_at_all_ip_mib,
                    self.settled.vm_hwm_mib
                ),
                "< 150 MiB",
            ),
            (
                format!(
                    "create-to-status with every Service present, {} Services at {}/s, p50 / p99",
                    p.probes, p.probe_rate_per_s
                ),
                format!(
                    "{:.1} / **{:.1} ms**",
                    self.latency_ms.p50, self.latency_ms.p99
                ),
                "-",
            ),
        ];
        for (figure, value, goal) in rows {
            md.push_str(&format!("| {figure} | {value} | {goal} |\n"));
        }
        if let Some(m) = &self.state_memory {
            md.push_str(&format!(
                "| state machine alone in one process (`state_memory`), {} Services / {} pools: \
                 heap per Service; total; RssAnon | **{:.0} bytes**; {:.1} MiB; {:.1} MiB | - |\n",
                m.services, m.pools, m.heap_per_service, m.heap_mib, m.rss_anon_mib
            ));
        }
        let cpu: Vec<String> = self
            .cpu_s
            .iter()
            .map(|(k, v)| format!("{k} {v:.1} s"))
            .collect();
        md.push_str(&format!(
            "\nCPU during the controller's burst: {}.\n",
            cpu.join(", ")
        ));
        md
    }
}
