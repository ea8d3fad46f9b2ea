//! The real controller killed (SIGKILL) and restarted five times while 200 Services hold every
//! address of a pool and more wait: no address changes hands, none is held twice, freed
//! addresses go to the waiting Services (oldest first), the pool's status counts what the
//! Services hold, and a restart writes nothing for Services that are already right.
//!
//! Between restarts the test deletes holders and waiting Services, creates new ones and edits
//! others while the controller is down, and once kills it in the middle of serving waiters.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use ferrolb_crds::contract::reason;
use ferrolb_tests::control_plane::{self};
use ferrolb_tests::controller::{Controller, Options, TestNamespace};
use ferrolb_tests::services::{self, Observed, Spec};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::task::block_in_place;

/// Addresses of the pool: exactly as many as Services that get one.
const POOL_SIZE: usize = 200;
/// Services beyond the pool's size: they wait.
const WAITING: usize = 50;
const POOL_RANGE: &str = "198.19.10.1-198.19.10.200";
const PROBE_RANGE: &str = "198.19.11.1-198.19.11.16";
/// Upper bound for the controller to converge after a start.
const CONVERGE: Duration = Duration::from_secs(90);
const SERVICE_WRITES: &str = r#"ferrolb_controller_writes_total{object="service",result="ok"}"#;
const SERVICE_WRITE_ERRORS: &str =
    r#"ferrolb_controller_writes_total{object="service",result="error"}"#;
const ALLOCATIONS: &str = "ferrolb_controller_allocations_total";

/// Everything the test tracks between restarts.
struct Bed {
    client: Client,
    api: Api<Service>,
    pool: String,
    probe_pool: String,
    opts: Options,
    controller: Controller,
    /// Holder name -> the one address it must keep while it lives.
    holders: BTreeMap<String, IpAddr>,
    /// Names of the test's Services that exist (probes excluded).
    live: BTreeSet<String>,
    /// Addresses freed by deleting holders since the last convergence.
    freed: BTreeSet<IpAddr>,
    next_service: usize,
    probes: usize,
}

fn name(i: usize) -> String {
    format!("svc-{i:03}")
}

fn start(opts: &Options) -> Controller {
    block_in_place(|| {
        let mut c = Controller::start(opts).expect("the controller starts");
        if let Err(e) = c.wait_ready(Duration::from_secs(60)) {
            panic!("controller not ready: {e:#}\n{}", c.log_tail());
        }
        c
    })
}

async fn delete_all(api: Api<Service>, names: Vec<String>, concurrency: usize) {
    services::for_each_concurrent(names, concurrency, |name| {
        let api = api.clone();
        async move { services::delete(&api, &name).await }
    })
    .await
    .unwrap();
}

fn metric(c: &Controller, sample: &str) -> f64 {
    block_in_place(|| c.metric(sample))
        .expect("/metrics answers")
        .unwrap_or(0.0)
}

impl Bed {
    async fn new() -> Bed {
        // The chart's RBAC in the test's namespace, which also holds the Services.
        let ns = TestNamespace::create("restart").await.unwrap();
        let client = ns.client.clone();
        let pool = control_plane::unique_name("restart-pool");
        let probe_pool = control_plane::unique_name("restart-probe");
        services::apply_pool(&client, &pool, &[POOL_RANGE], true)
            .await
            .unwrap();
        // Serves only Services that name it: a probe that proves the controller is working.
        services::apply_pool(&client, &probe_pool, &[PROBE_RANGE], false)
            .await
            .unwrap();
        let opts = Options::new(&ns.kubeconfig, ns.dir.join("controller.log"));
        let controller = start(&opts);
        Bed {
            api: ns.services(),
            client,
            pool,
            probe_pool,
            opts,
            controller,
            holders: BTreeMap::new(),
            live: BTreeSet::new(),
            freed: BTreeSet::new(),
            next_service: 0,
            probes: 0,
        }
    }

    async fn create(&mut self, n: usize) {
        let names: Vec<String> = (self.next_service..self.next_service + n)
            .map(name)
            .collect();
        self.next_service += n;
        let api = self.api.clone();
        services::for_each_concurrent(names.clone(), 16, |name| {
            let api = api.clone();
            async move { services::create(&api, &Spec::new(name)).await.map(|_| ()) }
        })
        .await
        .unwrap();
        self.live.extend(names);
    }

    async fn delete(&mut self, names: Vec<String>) {
        delete_all(self.api.clone(), names.clone(), 4).await;
        self.forget(names);
    }

    /// Books Services as deleted: their addresses are free for waiting ones.
    fn forget(&mut self, names: Vec<String>) {
        for name in names {
            self.live.remove(&name);
            if let Some(ip) = self.holders.remove(&name) {
                self.freed.insert(ip);
            }
        }
    }

    /// Every `step`-th holder, `n` of them, in name order.
    fn some_holders(&self, n: usize, step: usize) -> Vec<String> {
        self.holders.keys().step_by(step).take(n).cloned().collect()
    }

    fn some_waiting(&self, n: usize) -> Vec<String> {
        self.live
            .iter()
            .filter(|s| !self.holders.contains_key(*s))
            .take(n)
            .cloned()
            .collect()
    }

    async fn patch(&self, names: &[String], patch: serde_json::Value) {
        for name in names {
            self.api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    }

    fn kill(&mut self) {
        block_in_place(|| self.controller.kill());
    }

    fn restart(&mut self) {
        self.controller = start(&self.opts);
    }

    /// Waits until the controller has converged, checking the invariants on every look: no
    /// holder's address changed, no address is held twice. Converged: `min(200, live)` Services
    /// hold an address, every other one says PoolExhausted, and the pool's status counts match.
    /// Then checks that the newly served Services are the oldest waiting ones and got freed
    /// addresses, and records them as holders.
    async fn converge(&mut self, what: &str) -> BTreeMap<String, Observed> {
        let started = Instant::now();
        let result = services::eventually(what, CONVERGE, || async {
            let seen: BTreeMap<String, Observed> = services::observe(&self.api)
                .await?
                .into_iter()
                .filter(|(n, _)| n.starts_with("svc-"))
                .collect();
            let bad = services::invalid_sharing(seen.values());
            if !bad.is_empty() {
                bail!("addresses held twice:\n{}", bad.join("\n"));
            }
            for (name, ip) in &self.holders {
                if let Some(s) = seen.get(name)
                    && s.ips != [*ip]
                {
                    bail!("{name} held {ip} and now shows {:?}", s.ips);
                }
            }
            let names: BTreeSet<String> = seen.keys().cloned().collect();
            if names != self.live {
                return Ok(Err("the list does not show the test's changes yet".into()));
            }
            let holding: Vec<&Observed> = seen.values().filter(|s| !s.ips.is_empty()).collect();
            let want = POOL_SIZE.min(self.live.len());
            if holding.len() != want {
                return Ok(Err(format!(
                    "{} Services hold addresses, want {want}",
                    holding.len()
                )));
            }
            if let Some(s) = holding.iter().find(|s| !s.allocated_from(&self.pool)) {
                return Ok(Err(format!("not (yet) as written: {}", s.describe())));
            }
            if let Some(s) = seen
                .values()
                .find(|s| s.ips.is_empty() && !s.waits_for_exhausted_pool())
            {
                return Ok(Err(format!(
                    "waits without {}: {}",
                    reason::POOL_EXHAUSTED,
                    s.describe()
                )));
            }
            let counts = services::pool_ipv4_counts(&self.client, &self.pool).await?;
            let truth = (want as u128, (POOL_SIZE - want) as u128);
            if counts != Some(truth) {
                return Ok(Err(format!(
                    "pool status (assigned, available) = {counts:?}, truth {truth:?}"
                )));
            }
            Ok(Ok(seen))
        })
        .await;
        let seen = match result {
            Ok(seen) => seen,
            Err(e) => panic!("{e:#}\ncontroller log:\n{}", self.controller.log_tail()),
        };
        let mut waiting: Vec<(i64, &String)> = seen
            .iter()
            .filter(|(n, _)| !self.holders.contains_key(*n))
            .map(|(n, s)| (s.created, n))
            .collect();
        waiting.sort();
        let served: Vec<&String> = waiting
            .iter()
            .filter(|(_, n)| !seen[*n].ips.is_empty())
            .map(|(_, n)| *n)
            .collect();
        if !self.holders.is_empty() {
            let oldest: Vec<&String> = waiting.iter().take(served.len()).map(|(_, n)| *n).collect();
            assert_eq!(
                served, oldest,
                "{what}: freed addresses go to the oldest waiting Services"
            );
            for name in &served {
                let ip = seen[*name].ips[0];
                assert!(
                    self.freed.remove(&ip),
                    "{what}: {name} got {ip}, which no deleted Service freed (freed: {:?})",
                    self.freed
                );
            }
        }
        for name in served {
            self.holders.insert(name.clone(), seen[name].ips[0]);
        }
        println!(
            "{what}: converged in {:?}: {} holding, {} waiting",
            started.elapsed(),
            self.holders.len(),
            self.live.len() - self.holders.len()
        );
        seen
    }

    /// A Service of the probe pool, created after a restart: once it has its address, the
    /// restarted controller has processed everything it listed and the writes it started then.
    async fn probe(&mut self) {
        self.probes += 1;
        let mut spec = Spec::new(format!("probe-{}", self.probes));
        spec.pool = Some(self.probe_pool.clone());
        services::create(&self.api, &spec).await.unwrap();
        let (api, pool) = (self.api.clone(), self.probe_pool.clone());
        let name = spec.name.clone();
        services::eventually("the probe Service's address", CONVERGE, || async {
            let s = Observed::of(&api.get(&name).await?);
            Ok(if s.allocated_from(&pool) {
                Ok(())
            } else {
                Err(s.describe())
            })
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", self.controller.log_tail()));
        let c = &self.controller;
        services::eventually("the probe's write in the metrics", CONVERGE, || async {
            let n = metric(c, SERVICE_WRITES);
            Ok(if n >= 1.0 {
                Ok(())
            } else {
                Err(format!("{n}"))
            })
        })
        .await
        .unwrap();
    }

    /// Kill, restart with nothing changed: the restarted controller writes only the probe, counts
    /// no reclaimed address as an allocation, and no Service object changes.
    async fn restart_without_changes(&mut self, round: usize) {
        let before: BTreeMap<String, String> = self
            .converge(&format!("round {round}: before"))
            .await
            .into_iter()
            .map(|(n, s)| (n, s.resource_version))
            .collect();
        self.kill();
        self.restart();
        self.probe().await;
        let c = &self.controller;
        assert_eq!(
            metric(c, SERVICE_WRITES),
            1.0,
            "round {round}: after a restart with nothing changed, the only Service write is the \
             probe's\n{}",
            c.log_tail()
        );
        assert_eq!(metric(c, SERVICE_WRITE_ERRORS), 0.0);
        assert_eq!(
            metric(c, ALLOCATIONS),
            1.0,
            "round {round}: reclaimed addresses are not new allocations; only the probe's is"
        );
        let after: BTreeMap<String, String> = self
            .converge(&format!("round {round}: after"))
            .await
            .into_iter()
            .map(|(n, s)| (n, s.resource_version))
            .collect();
        assert_eq!(
            before, after,
            "round {round}: no Service object changed across the restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn five_kills_keep_every_address_and_serve_waiting_services_from_freed_ones() {
    let t0 = Instant::now();
    let mut bed = Bed::new().await;
    bed.create(POOL_SIZE + WAITING).await;
    let seen = bed.converge("the first allocation").await;
    assert_eq!(bed.holders.len(), POOL_SIZE);
    assert_eq!(seen.values().filter(|s| s.ips.is_empty()).count(), WAITING);

    // 1: nothing changes while the controller is down.
    bed.restart_without_changes(1).await;

    // 2: while it is down, holders go away and some Services are edited.
    bed.kill();
    let gone = bed.some_holders(10, 17);
    bed.delete(gone).await;
    let edited = bed.some_holders(5, 23);
    bed.patch(&edited, json!({"metadata": {"labels": {"edited": "yes"}}}))
        .await;
    let edited = bed.some_waiting(3);
    bed.patch(&edited, json!({"metadata": {"labels": {"edited": "yes"}}}))
        .await;
    bed.restart();
    bed.converge("round 2: 10 holders deleted while down").await;

    // 3: holders deleted, then killed while more deletions arrive and it serves waiters; new
    // Services are created while it is down.
    let gone = bed.some_holders(15, 11);
    bed.delete(gone).await;
    bed.converge("round 3: 15 holders deleted while running")
        .await;
    let gone = bed.some_holders(15, 7);
    let served_before = metric(&bed.controller, ALLOCATIONS);
    // One deletion at a time; the kill lands once it has served a few of them.
    let deleting = tokio::spawn(delete_all(bed.api.clone(), gone.clone(), 1));
    let c = &bed.controller;
    let served = services::eventually("the controller to serve waiters", CONVERGE, || async {
        let n = metric(c, ALLOCATIONS) - served_before;
        Ok(if n >= 3.0 {
            Ok(n)
        } else {
            Err(format!("{n} served"))
        })
    })
    .await
    .unwrap();
    bed.kill();
    println!("round 3: killed after serving at least {served} of 15 waiters");
    deleting.await.unwrap();
    bed.forget(gone);
    bed.create(5).await;
    bed.restart();
    bed.converge("round 3: killed amid deletions, 5 created while down")
        .await;

    // 4: waiters and holders deleted, ports changed, while it is down.
    bed.kill();
    let gone: Vec<String> = bed
        .some_waiting(5)
        .into_iter()
        .chain(bed.some_holders(5, 9))
        .collect();
    bed.delete(gone).await;
    let edited = bed.some_holders(3, 31);
    bed.patch(
        &edited,
        json!({"spec": {"ports": [{"name": "p80-tcp", "port": 8080, "protocol": "TCP"}]}}),
    )
    .await;
    bed.restart();
    bed.converge("round 4: holders and waiters deleted, ports edited, while down")
        .await;

    // 5: nothing changes again.
    bed.restart_without_changes(5).await;

    assert_eq!(bed.holders.len(), POOL_SIZE);
    assert_eq!(
        bed.live.len() - POOL_SIZE,
        WAITING - 10 - 30 + 5 - 5 - 5,
        "some Services still wait: the pool stayed full throughout"
    );
    println!("done in {:?}", t0.elapsed());
    services::delete_pool(&bed.client, &bed.pool).await.unwrap();
    services::delete_pool(&bed.client, &bed.probe_pool)
        .await
        .unwrap();
}
