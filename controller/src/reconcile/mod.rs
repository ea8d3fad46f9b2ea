//! The reconciler: watches in, one state machine, concurrent status writes out; gated by a Lease
//! so that of several replicas only one acts.
//!
//! ```text
//!  watch Services ─┐
//!  watch pools ────┼─> Input ─> State (pure) ─> Action ─> Writer (SSA, Events) ─┐
//!  watch namespaces┘     ^                                                      │
//!                        └──────────── ServiceWritten / PoolWritten ────────────┘
//! ```

pub mod desired;
pub mod observed;
pub mod state;
pub mod writer;

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrolb_crds::IPAddressPool;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::memory::TrimPolicy;
use crate::metrics::Metrics;
use ferrolb_crds::ServiceKey;
use ferrolb_runtime::health::{HealthState, WatchStatus};
use ferrolb_runtime::lean::LeanService;
use ferrolb_runtime::lease::{LeaderElector, LeaseConfig};
use ferrolb_runtime::watch;
use state::State;
use writer::Writer;

/// How the reconciler runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// `spec.loadBalancerClass` handled; `None`: Services without a class.
    pub lb_class: Option<String>,
    /// Leader election; `None` acts at once (a single replica).
    pub lease: Option<LeaseConfig>,
    /// Status writes in flight at once.
    pub concurrency: usize,
    /// This replica's name, for Events.
    pub identity: String,
}

/// A change the state machine reacts to.
#[derive(Debug)]
pub enum Input {
    /// A Service watch event.
    Service(Box<Watched<Service>>),
    /// A pool watch event.
    Pool(Box<Watched<IPAddressPool>>),
    /// A namespace watch event.
    Namespace(Box<Watched<PartialObjectMeta<Namespace>>>),
    /// A Service status write finished, with the object written (`None`: it failed).
    ServiceWritten(ServiceKey, Option<Box<Service>>),
    /// A pool status write finished.
    PoolWritten(String, Result<Box<IPAddressPool>, ()>),
}

/// A watch event, with (re)lists delivered whole.
#[derive(Debug)]
pub enum Watched<K> {
    /// Added or changed.
    Applied(K),
    /// Deleted.
    Deleted(K),
    /// A list is complete: these objects exist (each came as `Applied`), every other is gone.
    Listed(HashSet<ObjectName>),
}

impl<K> Watched<K> {
    /// The same event about `f(object)`.
    fn map<T>(self, f: impl FnOnce(K) -> T) -> Watched<T> {
        match self {
            Watched::Applied(k) => Watched::Applied(f(k)),
            Watched::Deleted(k) => Watched::Deleted(f(k)),
            Watched::Listed(seen) => Watched::Listed(seen),
        }
    }
}

/// Runs until `shutdown` completes: waits for leadership (when configured), then reconciles
/// until leadership is lost, and starts over.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Metrics,
    health: HealthState,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let Some(lease) = config.lease.clone() else {
        metrics.leader.set(1);
        return tokio::select! {
            r = lead(client, &config, &metrics, &health) => r,
            () = &mut shutdown => Ok(()),
        };
    };
    loop {
        let mut elector = LeaderElector::new(client.clone(), lease.clone())
            .report_to(health.watch_status("Lease"));
        // A standby has nothing to sync; it is ready to take over while it reaches the Lease.
        health.set_ready();
        tokio::select! {
            r = elector.acquire() => r.with_context(|| format!("acquiring Lease {}/{}", lease.namespace, lease.name))?,
            () = &mut shutdown => return Ok(()),
        }
        info!(identity = %lease.identity, "leading");
        health.set_not_ready("leading: caches not synced");
        metrics.leader.set(1);
        tokio::select! {
            lost = elector.hold() => {
                metrics.leader.set(0);
                warn!(reason = %lost, "lost leadership; stopped acting, standing by");
            }
            r = lead(client.clone(), &config, &metrics, &health) => return r,
            () = &mut shutdown => {
                metrics.leader.set(0);
                if let Err(e) = elector.release().await {
                    warn!(error = %e, "could not release the Lease; a standby takes over when it expires");
                }
                return Ok(());
            }
        }
    }
}

/// Reconciles forever. Dropping the future stops every watch and write at once.
async fn lead(
    client: Client,
    config: &Config,
    metrics: &Metrics,
    health: &HealthState,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Input>();
    let mut tasks: JoinSet<()> = JoinSet::new();
    // Services are decoded without their managed fields' field sets: every status write adds
    // to them, and the state machine never reads them.
    let services = watcher(
        Api::<LeanService>::all(client.clone()),
        watcher::Config::default(),
    );
    tasks.spawn(forward(
        services,
        health.watch_status("Services"),
        tx.clone(),
        |w| Input::Service(Box::new(w.map(|s| s.0))),
    ));
    let pools = watcher(
        Api::<IPAddressPool>::all(client.clone()),
        watcher::Config::default(),
    );
    tasks.spawn(forward(
        pools,
        health.watch_status("IPAddressPools"),
        tx.clone(),
        |w| Input::Pool(Box::new(w)),
    ));
    let namespaces = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    );
    tasks.spawn(forward(
        namespaces,
        health.watch_status("Namespaces"),
        tx.clone(),
        |w| Input::Namespace(Box::new(w)),
    ));

    let mut state = State::new(config.lb_class.clone());
    let mut writer = Writer::new(
        client,
        tx.clone(),
        config.concurrency,
        config.identity.clone(),
        state.field_manager().to_string(),
        metrics.clone(),
    );
    let mut listed = [false; 3];
    let mut flush = tokio::time::interval(Duration::from_millis(250));
    let mut writes: JoinSet<writer::Finished> = JoinSet::new();
    let mut trim = TrimPolicy::default();
    loop {
        tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { anyhow::bail!("every watch stopped") };
                trim.worked(1);
                let started = Instant::now();
                let now = Timestamp::now();
                match input {
                    Input::Service(w) => {
                        listed[0] |= matches!(*w, Watched::Listed(_));
                        apply_services(&mut state, *w, now);
                    }
                    Input::Pool(w) => {
                        listed[1] |= matches!(*w, Watched::Listed(_));
                        match *w {
                            Watched::Applied(p) => state.pool_applied(p, now),
                            Watched::Deleted(p) => state.pool_deleted(&p.name_any(), now),
                            Watched::Listed(seen) => {
                                let names: HashSet<String> = seen.into_iter().map(|o| o.name).collect();
                                state.retain_pools(&names, now);
                            }
                        }
                    }
                    Input::Namespace(w) => {
                        listed[2] |= matches!(*w, Watched::Listed(_));
                        match *w {
                            Watched::Applied(ns) => state.namespace_applied(&ns.name_any(), ns.labels().clone(), now),
                            Watched::Deleted(ns) => state.namespace_deleted(&ns.name_any()),
                            Watched::Listed(seen) => {
                                let names: HashSet<String> = seen.into_iter().map(|o| o.name).collect();
                                state.retain_namespaces(&names);
                            }
                        }
                    }
                    Input::ServiceWritten(key, written) => {
                        state.write_done(&key, written.as_deref(), now, started);
                    }
                    Input::PoolWritten(name, result) => {
                        let ok = result.is_ok();
                        state.pool_write_done(&name, result.ok().map(|p| *p), ok);
                    }
                }
                if !state.started() && listed.iter().all(|l| *l) {
                    state.start(now);
                    health.set_ready();
                    info!(
                        services = state.allocator().assigned_count(),
                        waiting = state.waiting(),
                        "caches synced; addresses reclaimed"
                    );
                }
                writer.dispatch(state.take_actions(Timestamp::now()), &mut writes);
                let tally = state.take_tally();
                metrics.allocations.inc_by(tally.allocated);
                for (reason, n) in tally.failed {
                    metrics.failures.get_or_create(&crate::metrics::ReasonLabels { reason: reason.into() }).inc_by(n);
                }
                metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
            }
            () = sleep_until(state.next_retry()) => {
                let started = Instant::now();
                let retried = state.retry_due(started);
                trim.worked(retried as u64);
                writer.dispatch(state.take_actions(Timestamp::now()), &mut writes);
                metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
            }
            _ = flush.tick() => {
                state.flush_pools(Timestamp::now());
                writer.dispatch(state.take_actions(Timestamp::now()), &mut writes);
                metrics.observe_pools(state.allocator());
                metrics.waiting.set(state.waiting() as i64);
                metrics.assigned.set(state.allocator().assigned_count() as i64);
                if trim.due(writer.idle() && rx.is_empty()) {
                    writer.shrink_queues();
                    state.shrink_queues();
                    if crate::memory::release_free() {
                        debug!("returned memory freed after a burst to the OS");
                    }
                }
            }
            Some(done) = writes.join_next(), if !writes.is_empty() => {
                match done {
                    Ok(finished) => {
                        trim.worked(1);
                        writer.finished(finished, &mut writes);
                    }
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => {}
                }
            }
            Some(done) = tasks.join_next() => {
                done.context("a watch task failed")?;
                anyhow::bail!("a watch stopped");
            }
        }
    }
}

/// Sleeps until `at`; forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn apply_services(state: &mut State, w: Watched<Service>, now: Timestamp) {
    match w {
        Watched::Applied(svc) => state.service_applied(&svc, now),
        Watched::Deleted(svc) => state.service_deleted(
            &ServiceKey::new(svc.namespace().unwrap_or_default(), svc.name_any()),
            now,
        ),
        Watched::Listed(seen) => {
            let keys: HashSet<ServiceKey> = seen
                .into_iter()
                .map(|o| ServiceKey::new(o.namespace, o.name))
                .collect();
            state.retain_services(&keys, now);
        }
    }
}

/// Forwards a watch as [`Input`]s. A (re)list arrives object by object as `Applied` (so full
/// objects are never buffered), then `Listed` with the names seen. Errors are logged and retried
/// within a second by [`watch::resilient`], which also reports a long outage in readiness.
async fn forward<K, S>(
    stream: S,
    status: WatchStatus,
    tx: mpsc::UnboundedSender<Input>,
    wrap: fn(Watched<K>) -> Input,
) where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    K: kube::Resource + Send + 'static,
{
    let stream = watch::resilient(stream, status);
    futures::pin_mut!(stream);
    let mut seen: HashSet<ObjectName> = HashSet::new();
    while let Some(event) = stream.next().await {
        let watched = match event {
            watcher::Event::Apply(k) => Watched::Applied(k),
            watcher::Event::Delete(k) => Watched::Deleted(k),
            watcher::Event::Init => {
                seen.clear();
                continue;
            }
            watcher::Event::InitApply(k) => {
                seen.insert(ObjectName::of(&k));
                Watched::Applied(k)
            }
            watcher::Event::InitDone => Watched::Listed(std::mem::take(&mut seen)),
        };
        if tx.send(wrap(watched)).is_err() {
            return;
        }
    }
}

/// Namespace and name of a watched object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectName {
    /// Namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectName {
    fn of<K: kube::Resource>(k: &K) -> ObjectName {
        ObjectName {
            namespace: k.meta().namespace.clone().unwrap_or_default(),
            name: k.meta().name.clone().unwrap_or_default(),
        }
    }
}
