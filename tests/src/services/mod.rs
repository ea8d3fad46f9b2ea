//! LoadBalancer Services in bulk, and the invariants the controller must keep over them: for the
//! restart, churn and HA integration tests.
//!
//! ```text
//!  Spec ──to_service──> apiserver ──list──> [Observed] ──> invalid_sharing, held_ips,
//!                                     │                     pool counts vs truth
//!                                     └──watch──> IngressHistory (every ingress value seen)
//! ```
//!
//! Nothing here trusts the controller's own view: the truth is counted from the Services the
//! apiserver returns.

mod history;
mod observed;

pub use history::{IngressHistory, Seen};
pub use observed::{Observed, Sharing, held_ips, invalid_sharing, observe};

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_crds::IPAddressPool;
use ferrolb_crds::contract::annotation::{ADDRESS_POOL, ALLOW_SHARED_IP};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::task::JoinSet;

/// Field manager of the tests' applies.
const FIELD_MANAGER: &str = "ferrolb-tests";

// === Deterministic randomness ===

/// The seed in environment variable `var` (decimal), else one from the clock, for a seeded
/// generator (`fastrand::Rng::with_seed`): the same seed gives the same test run. Printed, so a
/// failing run can be repeated with `var=<seed>`.
pub fn seed_from_env(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    println!("seed: {seed} (repeat this run with {var}={seed})");
    seed
}

// === Services as the tests create them ===

/// One port of a Service: number and protocol (`TCP`, `UDP`).
pub type Port = (i32, &'static str);

/// A LoadBalancer Service as a test wants it: IPv4 single-stack, no node ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// `metadata.name`.
    pub name: String,
    /// `ferrolb.io/allow-shared-ip`.
    pub sharing_key: Option<String>,
    /// Ports; the first is also the target port.
    pub ports: Vec<Port>,
    /// `externalTrafficPolicy: Local` with selector `app=<value>`; `None`: Cluster with selector
    /// `app=<name>`.
    pub local_app: Option<String>,
    /// `ferrolb.io/address-pool`.
    pub pool: Option<String>,
    /// `spec.loadBalancerClass`.
    pub class: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl Spec {
    /// A plain Service `name` with port 80/TCP.
    pub fn new(name: impl Into<String>) -> Spec {
        Spec {
            name: name.into(),
            sharing_key: None,
            ports: vec![(80, "TCP")],
            local_app: None,
            pool: None,
            class: None,
            labels: BTreeMap::new(),
        }
    }

    /// The object to create in `namespace`.
    pub fn to_service(&self, namespace: &str) -> Service {
        let mut annotations = BTreeMap::new();
        if let Some(key) = &self.sharing_key {
            annotations.insert(ALLOW_SHARED_IP.to_string(), key.clone());
        }
        if let Some(pool) = &self.pool {
            annotations.insert(ADDRESS_POOL.to_string(), pool.clone());
        }
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|(port, protocol)| {
                json!({"name": format!("p{port}-{}", protocol.to_lowercase()), "port": port,
                       "protocol": protocol})
            })
            .collect();
        let (policy, app) = match &self.local_app {
            Some(app) => ("Local", app.as_str()),
            None => ("Cluster", self.name.as_str()),
        };
        let mut spec = json!({
            "type": "LoadBalancer",
            "allocateLoadBalancerNodePorts": false,
            "ipFamilyPolicy": "SingleStack",
            "ipFamilies": ["IPv4"],
            "externalTrafficPolicy": policy,
            "selector": {"app": app},
            "ports": ports,
        });
        if let Some(class) = &self.class {
            spec["loadBalancerClass"] = json!(class);
        }
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": namespace,
                         "labels": self.labels, "annotations": annotations},
            "spec": spec,
        }))
        .expect("a well-formed Service")
    }
}

/// Creates namespace `name`.
pub async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}}))?,
    )
    .await
    .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// Creates `spec` in `api`'s namespace.
pub async fn create(api: &Api<Service>, spec: &Spec) -> Result<Service> {
    let ns = api.namespace().unwrap_or("default").to_string();
    api.create(&PostParams::default(), &spec.to_service(&ns))
        .await
        .with_context(|| format!("creating Service {ns}/{}", spec.name))
}

/// Deletes Service `name`; it must exist.
pub async fn delete(api: &Api<Service>, name: &str) -> Result<()> {
    api.delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting Service {name}"))?;
    Ok(())
}

/// Runs `f` on every item with at most `limit` calls in flight; the first error ends the run.
pub async fn for_each_concurrent<T, F, Fut>(
    items: impl IntoIterator<Item = T>,
    limit: usize,
    f: F,
) -> Result<()>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for item in items {
        if tasks.len() >= limit.max(1) {
            tasks.join_next().await.expect("a task")??;
        }
        tasks.spawn(f(item));
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

// === Pools ===

/// Creates or replaces pool `name` (server-side apply).
pub async fn apply_pool(
    client: &Client,
    name: &str,
    addresses: &[&str],
    auto_assign: bool,
) -> Result<IPAddressPool> {
    let body = json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": name},
        "spec": {"addresses": addresses, "autoAssign": auto_assign},
    });
    Api::<IPAddressPool>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .with_context(|| format!("applying pool {name}"))
}

/// Deletes pool `name` if it exists.
pub async fn delete_pool(client: &Client, name: &str) -> Result<()> {
    match Api::<IPAddressPool>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting pool {name}")),
    }
}

/// A pool's IPv4 `(assigned, available)` status counts; `None` before the first status write.
pub async fn pool_ipv4_counts(client: &Client, name: &str) -> Result<Option<(u128, u128)>> {
    let pool = Api::<IPAddressPool>::all(client.clone())
        .get(name)
        .await
        .with_context(|| format!("reading pool {name}"))?;
    Ok(pool.status.map(|s| (s.assigned_ipv4.0, s.available_ipv4.0)))
}

// === Waiting ===

/// Polls `check` every 100 ms until it yields `Ok(Ok(value))`. `Ok(Err(why))` means "not yet,
/// because why" and is quoted on timeout; `Err` fails at once (an invariant broke).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<std::result::Result<T, String>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let why = match check()
            .await
            .with_context(|| format!("waiting for {what}"))?
        {
            Ok(v) => return Ok(v),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last: {why}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
