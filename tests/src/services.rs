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

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_crds::IPAddressPool;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::core::{Request, WatchEvent};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinSet;

/// The controller's condition type on Services.
pub const CONDITION: &str = "ferrolb.io/IPAllocated";
/// The annotation the controller writes with the pool an address came from.
pub const POOL_ANNOTATION: &str = "ferrolb.io/ip-allocated-from-pool";
/// The annotation that lets Services share an address.
pub const SHARED_IP: &str = "ferrolb.io/allow-shared-ip";
/// The annotation naming the pool a Service wants.
pub const ADDRESS_POOL: &str = "ferrolb.io/address-pool";
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
            annotations.insert(SHARED_IP.to_string(), key.clone());
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

// === What the apiserver shows ===

/// Who may share an address with whom: the Service's sharing inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sharing {
    /// `ferrolb.io/allow-shared-ip`.
    pub key: Option<String>,
    /// `(port, protocol)` pairs.
    pub ports: BTreeSet<(i32, String)>,
    /// `None` for `externalTrafficPolicy: Cluster`, else the selector (Local).
    pub local_selector: Option<BTreeMap<String, String>>,
}

impl Sharing {
    /// Whether two Services may hold the same address: same key, same backends, no port and
    /// protocol in common.
    pub fn compatible(&self, other: &Sharing) -> bool {
        self.key.is_some()
            && self.key == other.key
            && self.local_selector == other.local_selector
            && self.ports.is_disjoint(&other.ports)
    }
}

/// The controller's part of a Service, as the apiserver returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `metadata.name`.
    pub name: String,
    /// `status.loadBalancer.ingress[].ip`.
    pub ips: Vec<IpAddr>,
    /// Whether every ingress entry has `ipMode: VIP`.
    pub vip_mode: bool,
    /// The [`CONDITION`] condition: `(status, reason, message)`.
    pub condition: Option<(String, String, String)>,
    /// The [`POOL_ANNOTATION`] annotation.
    pub pool: Option<String>,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `metadata.creationTimestamp`, in seconds.
    pub created: i64,
    /// Sharing inputs.
    pub sharing: Sharing,
}

impl Observed {
    /// Reads `svc`.
    pub fn of(svc: &Service) -> Observed {
        let status = svc.status.as_ref();
        let ingress = status
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.clone())
            .unwrap_or_default();
        let ips = ingress
            .iter()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        let vip_mode = ingress.iter().all(|i| i.ip_mode.as_deref() == Some("VIP"));
        let condition = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == CONDITION)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
        let spec = svc.spec.clone().unwrap_or_default();
        let ports = spec
            .ports
            .iter()
            .flatten()
            .map(|p| (p.port, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
            .collect();
        let local_selector = (spec.external_traffic_policy.as_deref() == Some("Local"))
            .then(|| spec.selector.clone().unwrap_or_default());
        Observed {
            name: svc.name_any(),
            ips,
            vip_mode,
            condition,
            pool: svc.annotations().get(POOL_ANNOTATION).cloned(),
            resource_version: svc.resource_version().unwrap_or_default(),
            created: svc
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()),
            sharing: Sharing {
                key: svc.annotations().get(SHARED_IP).cloned(),
                ports,
                local_selector,
            },
        }
    }

    /// The condition's reason, when there is a condition.
    pub fn reason(&self) -> Option<&str> {
        self.condition
            .as_ref()
            .map(|(_, reason, _)| reason.as_str())
    }

    /// Whether the Service shows one address, allocated from `pool`, as the controller writes it.
    pub fn allocated_from(&self, pool: &str) -> bool {
        self.ips.len() == 1
            && self.vip_mode
            && self.pool.as_deref() == Some(pool)
            && self
                .condition
                .as_ref()
                .is_some_and(|(status, reason, _)| status == "True" && reason == "Allocated")
    }

    /// Whether the Service shows no address and a condition saying the pools are exhausted.
    pub fn waits_for_exhausted_pool(&self) -> bool {
        self.ips.is_empty()
            && self
                .condition
                .as_ref()
                .is_some_and(|(status, reason, _)| status == "False" && reason == "PoolExhausted")
    }

    /// One line for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} ips={:?} pool={:?} condition={:?} key={:?} ports={:?} local={:?}",
            self.name,
            self.ips,
            self.pool,
            self.condition,
            self.sharing.key,
            self.sharing.ports,
            self.sharing.local_selector
        )
    }
}

/// Every Service of `api` (one namespace), by name.
pub async fn observe(api: &Api<Service>) -> Result<BTreeMap<String, Observed>> {
    let list = api
        .list(&ListParams::default())
        .await
        .context("listing Services")?;
    Ok(list
        .items
        .iter()
        .map(|s| (s.name_any(), Observed::of(s)))
        .collect())
}

/// Addresses held by Services that may not share them, one line each. Users of one address must
/// all have the same sharing key, the same backends and pairwise disjoint ports.
pub fn invalid_sharing<'a>(services: impl IntoIterator<Item = &'a Observed>) -> Vec<String> {
    let mut by_ip: BTreeMap<IpAddr, Vec<&Observed>> = BTreeMap::new();
    for s in services {
        for ip in &s.ips {
            by_ip.entry(*ip).or_default().push(s);
        }
    }
    let mut bad = Vec::new();
    for (ip, users) in by_ip {
        for (i, a) in users.iter().enumerate() {
            for b in &users[i + 1..] {
                if !a.sharing.compatible(&b.sharing) {
                    bad.push(format!(
                        "{ip} is held by both {} and {}, which may not share",
                        a.describe(),
                        b.describe()
                    ));
                }
            }
        }
    }
    bad
}

/// Distinct addresses the Services hold.
pub fn held_ips<'a>(services: impl IntoIterator<Item = &'a Observed>) -> BTreeSet<IpAddr> {
    services
        .into_iter()
        .flat_map(|s| s.ips.iter().copied())
        .collect()
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

// === Every ingress value a Service ever showed ===

/// What a watch saw of one Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Distinct consecutive ingress address lists, first to last (empty included).
    pub ingress: Vec<Vec<IpAddr>>,
    /// MODIFIED events that changed the controller's part (ingress, condition, pool annotation).
    pub status_changes: u32,
    /// Whether the Service was deleted.
    pub deleted: bool,
}

#[derive(Debug, Default)]
struct Recorded {
    services: BTreeMap<String, Seen>,
    last: BTreeMap<String, Observed>,
    resource_version: u64,
    error: Option<String>,
}

/// Watches the Services of one namespace from a point in time on and records, per Service,
/// every ingress value it showed. Runs back-to-back one-second watch requests, each resuming at
/// the last resourceVersion seen, so no event is missed (and the crate needs no stream library).
#[derive(Debug)]
pub struct IngressHistory {
    recorded: Arc<Mutex<Recorded>>,
    task: tokio::task::JoinHandle<()>,
    api: Api<Service>,
}

impl IngressHistory {
    /// Starts recording from now: the current Services are the first values.
    pub async fn start(client: &Client, namespace: &str) -> Result<IngressHistory> {
        let api: Api<Service> = Api::namespaced(client.clone(), namespace);
        let list = api.list(&ListParams::default()).await?;
        let mut recorded = Recorded::default();
        for svc in &list.items {
            recorded.observe(svc, false);
        }
        let rv = list.metadata.resource_version.unwrap_or_default();
        recorded.resource_version = rv.parse().context("a numeric resourceVersion")?;
        let recorded = Arc::new(Mutex::new(recorded));
        let task = tokio::spawn(record(
            client.clone(),
            namespace.to_string(),
            rv,
            recorded.clone(),
        ));
        Ok(IngressHistory {
            recorded,
            task,
            api,
        })
    }

    /// Waits until the recorder has seen every change made before this call: creates a
    /// ClusterIP Service (ignored by the controller) and waits for its event.
    pub async fn sync(&self, timeout: Duration) -> Result<()> {
        let name = format!("sync-{}", crate::control_plane::unique_name("h"));
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"type": "ClusterIP", "ports": [{"port": 1}]},
        }))?;
        let created = self.api.create(&PostParams::default(), &svc).await?;
        let rv: u64 = created.resource_version().unwrap_or_default().parse()?;
        eventually("the watch to catch up", timeout, || async {
            let r = self.recorded.lock().unwrap();
            if let Some(e) = &r.error {
                bail!("the watch failed: {e}");
            }
            Ok(if r.resource_version >= rv {
                Ok(())
            } else {
                Err(format!(
                    "at resourceVersion {}, want {rv}",
                    r.resource_version
                ))
            })
        })
        .await?;
        self.api.delete(&name, &DeleteParams::default()).await?;
        Ok(())
    }

    /// What was seen so far, per Service name (sync helpers excluded).
    pub fn seen(&self) -> BTreeMap<String, Seen> {
        let r = self.recorded.lock().unwrap();
        r.services
            .iter()
            .filter(|(name, _)| !name.starts_with("sync-"))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect()
    }
}

impl Drop for IngressHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorded {
    fn observe(&mut self, svc: &Service, modified: bool) {
        let now = Observed::of(svc);
        let name = now.name.clone();
        let seen = self.services.entry(name.clone()).or_default();
        if seen.ingress.last() != Some(&now.ips) {
            seen.ingress.push(now.ips.clone());
        }
        if modified
            && let Some(before) = self.last.get(&name)
            && (before.ips != now.ips
                || before.condition != now.condition
                || before.pool != now.pool)
        {
            seen.status_changes += 1;
        }
        self.last.insert(name, now);
    }
}

async fn record(client: Client, namespace: String, mut rv: String, recorded: Arc<Mutex<Recorded>>) {
    let path = format!("/api/v1/namespaces/{namespace}/services");
    let params = WatchParams::default().timeout(1);
    let mut failures = 0;
    loop {
        let request = match Request::new(&path).watch(&params, &rv) {
            Ok(r) => r,
            Err(e) => {
                recorded.lock().unwrap().error = Some(e.to_string());
                return;
            }
        };
        let body = match client.request_text(request).await {
            Ok(body) => {
                failures = 0;
                body
            }
            Err(e) => {
                failures += 1;
                if failures > 20 {
                    recorded.lock().unwrap().error = Some(format!("watch requests fail: {e}"));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut r = recorded.lock().unwrap();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let event: WatchEvent<Service> = match serde_json::from_str(line) {
                Ok(e) => e,
                Err(e) => {
                    r.error = Some(format!("undecodable watch event ({e}): {line}"));
                    return;
                }
            };
            let object_rv = match &event {
                WatchEvent::Added(s) | WatchEvent::Modified(s) | WatchEvent::Deleted(s) => {
                    s.resource_version().unwrap_or_default()
                }
                WatchEvent::Bookmark(b) => b.metadata.resource_version.clone(),
                WatchEvent::Error(status) => {
                    r.error = Some(format!("watch error: {status:?}"));
                    return;
                }
            };
            match event {
                WatchEvent::Added(s) => r.observe(&s, false),
                WatchEvent::Modified(s) => r.observe(&s, true),
                WatchEvent::Deleted(s) => {
                    r.services.entry(s.name_any()).or_default().deleted = true;
                    r.last.remove(&s.name_any());
                }
                WatchEvent::Bookmark(_) | WatchEvent::Error(_) => {}
            }
            if let Ok(n) = object_rv.parse::<u64>() {
                r.resource_version = r.resource_version.max(n);
            }
            rv = object_rv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharing(key: Option<&str>, ports: &[(i32, &str)], local: Option<&str>) -> Sharing {
        Sharing {
            key: key.map(Into::into),
            ports: ports.iter().map(|(p, pr)| (*p, pr.to_string())).collect(),
            local_selector: local.map(|app| BTreeMap::from([("app".into(), app.into())])),
        }
    }

    #[test]
    fn sharing_needs_key_backends_and_disjoint_ports() {
        let web80 = sharing(Some("web"), &[(80, "TCP")], None);
        assert!(web80.compatible(&sharing(Some("web"), &[(443, "TCP")], None)));
        assert!(web80.compatible(&sharing(Some("web"), &[(80, "UDP")], None)));
        assert!(!web80.compatible(&sharing(Some("web"), &[(80, "TCP")], None)));
        assert!(!web80.compatible(&sharing(Some("dns"), &[(53, "UDP")], None)));
        assert!(!web80.compatible(&sharing(None, &[(443, "TCP")], None)));
        assert!(!sharing(None, &[(80, "TCP")], None).compatible(&sharing(
            None,
            &[(81, "TCP")],
            None
        )));
        let local_a = sharing(Some("l"), &[(80, "TCP")], Some("a"));
        assert!(local_a.compatible(&sharing(Some("l"), &[(81, "TCP")], Some("a"))));
        assert!(!local_a.compatible(&sharing(Some("l"), &[(81, "TCP")], Some("b"))));
        assert!(!local_a.compatible(&sharing(Some("l"), &[(81, "TCP")], None)));
    }

    #[test]
    fn invalid_sharing_names_the_address_and_both_services() {
        let svc = |name: &str, ip: &str, key: Option<&str>, port: i32| Observed {
            name: name.into(),
            ips: vec![ip.parse().unwrap()],
            vip_mode: true,
            condition: None,
            pool: None,
            resource_version: "1".into(),
            created: 0,
            sharing: sharing(key, &[(port, "TCP")], None),
        };
        let ok = [
            svc("a", "198.19.0.1", Some("k"), 80),
            svc("b", "198.19.0.1", Some("k"), 443),
        ];
        assert!(invalid_sharing(&ok).is_empty());
        let bad = [
            svc("a", "198.19.0.1", Some("k"), 80),
            svc("b", "198.19.0.1", Some("k"), 80),
            svc("c", "198.19.0.2", None, 80),
        ];
        let found = invalid_sharing(&bad);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("198.19.0.1 is held by both a "),
            "{found:?}"
        );
        assert_eq!(held_ips(&bad).len(), 2);
    }
}
