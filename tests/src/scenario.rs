//! Controller scenarios on the real apiserver: one controller per test binary (the real binary,
//! under the Helm chart's RBAC, with leader election), scenarios run one at a time.
//!
//! Pools are cluster-scoped and every unrestricted pool serves every namespace, so scenarios
//! cannot run side by side: [`Scenario::start`] takes a lock, deletes the previous scenario's
//! Services and every pool, and waits until the controller reports that it holds nothing, before
//! the next scenario creates its own objects in a fresh namespace.

use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_crds::IPAddressPool;
use ferrolb_crds::contract::annotation::ALLOCATED_FROM_POOL;
use ferrolb_crds::contract::condition::IP_ALLOCATED;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::control_plane::{self, ControlPlane};
use crate::controller::{Controller, Options};
use crate::process::wait_for;
use crate::rbac;

/// Label on every scenario Service, so the next scenario can delete them.
pub const SCENARIO_LABEL: &str = "ferrolb-tests/scenario";
/// How long a scenario waits for the controller.
pub const TIMEOUT: Duration = Duration::from_secs(20);

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static CONTROLLER: OnceLock<Mutex<Controller>> = OnceLock::new();

/// One scenario: a namespace of its own and exclusive use of the controller.
pub struct Scenario {
    /// Admin client.
    pub client: Client,
    /// The scenario's namespace.
    pub ns: String,
    _guard: tokio::sync::MutexGuard<'static, ()>,
}

/// The shared controller of this test binary.
pub fn controller() -> &'static Mutex<Controller> {
    CONTROLLER.get_or_init(|| {
        let cp = control_plane::shared_with_crds();
        let dir = control_plane::process_dir().join("scenario-controller");
        std::fs::create_dir_all(&dir).expect("dir");
        let kubeconfig =
            rbac::controller_kubeconfig(cp, "scenarios", "ferrolb-system", &dir).expect("RBAC");
        let mut c = Controller::start(&Options {
            lease: Some(("ferrolb-system".into(), "scenarios-0".into())),
            ..Options::new(kubeconfig, dir.join("controller.log"))
        })
        .expect("controller starts");
        c.wait_ready(Duration::from_secs(30))
            .expect("controller ready");
        Mutex::new(c)
    })
}

/// Reads a metric of the shared controller.
pub fn metric(sample: &str) -> Option<f64> {
    controller().lock().unwrap().metric(sample).ok().flatten()
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario").field("ns", &self.ns).finish()
    }
}

impl Scenario {
    /// Waits for the controller to be free, clears the previous scenario's objects, and creates
    /// namespace `s-<name>`.
    pub async fn start(name: &str) -> Result<Scenario> {
        let guard = LOCK.lock().await;
        let cp: &ControlPlane = tokio::task::spawn_blocking(|| {
            let cp = control_plane::shared();
            controller();
            cp
        })
        .await?;
        let client = cp.client().await?;
        clear(&client).await?;
        let ns = control_plane::unique_name(&format!("s-{name}"))
            .to_lowercase()
            .replace('_', "-");
        let ns_api: Api<Namespace> = Api::all(client.clone());
        ns_api
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
        Ok(Scenario {
            client,
            ns,
            _guard: guard,
        })
    }

    /// Services of the scenario's namespace.
    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Pools.
    pub fn pools(&self) -> Api<IPAddressPool> {
        Api::all(self.client.clone())
    }

    /// Creates or replaces pool `name` with `spec` (server-side apply).
    pub async fn pool(&self, name: &str, spec: Value) -> Result<IPAddressPool> {
        let body = json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name}, "spec": spec,
        });
        Ok(self
            .pools()
            .patch(
                name,
                &PatchParams::apply("scenario").force(),
                &Patch::Apply(&body),
            )
            .await?)
    }

    /// Deletes pool `name`.
    pub async fn delete_pool(&self, name: &str) -> Result<()> {
        self.pools().delete(name, &DeleteParams::default()).await?;
        Ok(())
    }

    /// Creates LoadBalancer Service `name` (one TCP port 80) with `overlay` merged into it.
    pub async fn service(&self, name: &str, overlay: Value) -> Result<Service> {
        let mut body = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": self.ns, "labels": {SCENARIO_LABEL: "1"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "name": "http"}], "selector": {"app": name}},
        });
        merge(&mut body, overlay);
        let svc: Service = serde_json::from_value(body)?;
        Ok(self.services().create(&PostParams::default(), &svc).await?)
    }

    /// Merge-patches Service `name`.
    pub async fn patch_service(&self, name: &str, patch: Value) -> Result<Service> {
        Ok(self
            .services()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?)
    }

    /// Deletes Service `name`.
    pub async fn delete_service(&self, name: &str) -> Result<()> {
        self.services()
            .delete(name, &DeleteParams::default())
            .await?;
        Ok(())
    }

    /// Labels namespace `ns` (merge).
    pub async fn label_namespace(&self, labels: Value) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.patch(
            &self.ns,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": labels}})),
        )
        .await?;
        Ok(())
    }

    /// Waits until Service `name` satisfies `check`, returning what `check` returns.
    pub async fn wait<T>(
        &self,
        name: &str,
        what: &str,
        mut check: impl FnMut(&Service) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let svc = self.services().get(name).await?;
            if let Some(v) = check(&svc) {
                return Ok(v);
            }
            let last = Some(svc);
            if Instant::now() > deadline {
                let tail = controller().lock().unwrap().log_tail();
                bail!(
                    "timed out waiting for {}/{name}: {what}\nlast seen status: {}\nannotations: {:?}\ncontroller log:\n{tail}",
                    self.ns,
                    serde_json::to_string(&last.as_ref().and_then(|s| s.status.clone()))?,
                    last.as_ref().and_then(|s| s.metadata.annotations.clone()),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until Service `name` shows exactly `expected` ingress IPs (in order).
    pub async fn wait_ips(&self, name: &str, expected: &[&str]) -> Result<Service> {
        let want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        self.wait(name, &format!("ingress {want:?}"), |s| {
            (ingress(s) == want).then(|| s.clone())
        })
        .await
    }

    /// Waits until Service `name` has some ingress IP, and returns the IPs.
    pub async fn wait_any_ip(&self, name: &str) -> Result<Vec<String>> {
        self.wait(name, "an ingress IP", |s| {
            let ips = ingress(s);
            (!ips.is_empty()).then_some(ips)
        })
        .await
    }

    /// Waits until Service `name`'s condition has `reason`, and returns it.
    pub async fn wait_reason(&self, name: &str, reason: &str) -> Result<Condition> {
        self.wait(name, &format!("condition reason {reason}"), |s| {
            condition(s).filter(|c| c.reason == reason)
        })
        .await
    }

    /// Waits until an Event with `reason` about Service `name` exists, and returns its note.
    pub async fn wait_event(&self, name: &str, reason: &str) -> Result<String> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let found = wait_async(&format!("a {reason} Event about {name}"), || async {
            let events = api.list(&ListParams::default()).await?;
            Ok(events.items.into_iter().find_map(|e| {
                let about = e.regarding.as_ref()?.name.as_deref()? == name;
                (about && e.reason.as_deref() == Some(reason)).then(|| e.note.unwrap_or_default())
            }))
        })
        .await?;
        Ok(found)
    }

    /// Notes of every Event about Service `name` with `reason`.
    pub async fn events(&self, name: &str, reason: &str) -> Result<Vec<String>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        Ok(api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && e.reason.as_deref() == Some(reason)
            })
            .map(|e| e.note.unwrap_or_default())
            .collect())
    }

    /// Waits until pool `name`'s status satisfies `check`.
    pub async fn wait_pool(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&IPAddressPool) -> bool,
    ) -> Result<IPAddressPool> {
        let pools = self.pools();
        wait_async(&format!("pool {name}: {what}"), || async {
            let p = pools.get(name).await?;
            Ok(check(&p).then_some(p))
        })
        .await
    }
}

/// Polls an async check every 50 ms until it yields a value or [`TIMEOUT`] passes.
pub async fn wait_async<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check()
            .await
            .with_context(|| format!("waiting for {what}"))?
        {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {TIMEOUT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Service's ingress IPs, in order.
pub fn ingress(svc: &Service) -> Vec<String> {
    ferrolb_crds::ingress_ips(svc)
}

/// The controller's condition on the Service.
pub fn condition(svc: &Service) -> Option<Condition> {
    ferrolb_crds::service_condition(svc, IP_ALLOCATED).cloned()
}

/// The `ip-allocated-from-pool` annotation.
pub fn pool_annotation(svc: &Service) -> Option<String> {
    svc.metadata
        .annotations
        .as_ref()?
        .get(ALLOCATED_FROM_POOL)
        .cloned()
}

/// Deep-merges `overlay` into `base` (objects merge, everything else replaces).
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// Deletes every scenario Service and every pool, then waits until the controller holds and
/// awaits nothing.
async fn clear(client: &Client) -> Result<()> {
    let all: Api<Service> = Api::all(client.clone());
    let labelled = all
        .list(&ListParams::default().labels(SCENARIO_LABEL))
        .await?;
    let namespaces: std::collections::BTreeSet<String> = labelled
        .items
        .iter()
        .filter_map(|s| s.metadata.namespace.clone())
        .collect();
    for ns in namespaces {
        let api: Api<Service> = Api::namespaced(client.clone(), &ns);
        api.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await?;
    }
    let pools: Api<IPAddressPool> = Api::all(client.clone());
    pools
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    tokio::task::spawn_blocking(|| {
        wait_for("the controller to hold nothing", TIMEOUT, || {
            let c = controller().lock().unwrap();
            let text = c.metrics()?;
            let value = |name: &str| crate::controller::parse_sample(&text, name);
            let idle = value("ferrolb_controller_services_assigned") == Some(0.0)
                && value("ferrolb_controller_services_waiting") == Some(0.0)
                && !text.contains("ferrolb_controller_pool_addresses{");
            Ok(idle.then_some(()))
        })
    })
    .await??;
    Ok(())
}
