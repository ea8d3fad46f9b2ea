//! Reading the facts from the API (I/O), with kubectl's way of finding the cluster: `--kubeconfig`
//! or `KUBECONFIG` or `~/.kube/config`, `--context`, and the context's namespace.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrolb_crds::IPAddressPool;
use ferrolb_crds::membership_view::{self, MembershipView};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::explain::ServiceFacts;
use crate::facts::{ControllerFact, EventFact, SpeakerFact};
use crate::status::StatusFacts;

/// Where the cluster and ferrolb are.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
    /// The namespace ferrolb runs in.
    pub ferrolb_namespace: String,
    /// The controller's Lease there.
    pub lease: String,
}

/// A client for `target` and the namespace its context names (`default` when none).
pub async fn connect(target: &Target) -> Result<(Client, String)> {
    let kubeconfig = match &target.kubeconfig {
        Some(path) => Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?,
        None => {
            Kubeconfig::read().context("reading the kubeconfig (KUBECONFIG or ~/.kube/config)")?
        }
    };
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .context("loading the kubeconfig's context")?;
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).context("building the API client")?;
    Ok((client, namespace))
}

/// The controller's Lease, the speaker pods.
async fn components(
    client: &Client,
    target: &Target,
) -> Result<(ControllerFact, Vec<SpeakerFact>)> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &target.ferrolb_namespace);
    let lease = leases.get_opt(&target.lease).await.with_context(|| {
        format!(
            "reading Lease {}/{}",
            target.ferrolb_namespace, target.lease
        )
    })?;
    let controller = ControllerFact::from_lease(
        &format!("{}/{}", target.ferrolb_namespace, target.lease),
        lease.as_ref(),
        Timestamp::now(),
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &target.ferrolb_namespace);
    let pods = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=speaker"))
        .await
        .with_context(|| format!("listing speaker pods in {}", target.ferrolb_namespace))?
        .items;
    let mut speakers = Vec::new();
    for pod in &pods {
        let mut speaker = SpeakerFact::from_pod(pod);
        match membership_view(client, &target.ferrolb_namespace, pod).await {
            Ok(view) => speaker.membership = Some(view),
            Err(why) => speaker.membership_error = Some(why),
        }
        speakers.push(speaker);
    }
    Ok((controller, speakers))
}

/// The speaker container's port that serves the probes and `/membership` (the chart's name).
const PROBE_PORT_NAME: &str = "monitoring";

/// A speaker's view of live speakers, read from its probe port through the apiserver's pod
/// proxy (so it needs `get` on `pods/proxy` in ferrolb's namespace, and nothing on the nodes);
/// or why it could not be read.
async fn membership_view(
    client: &Client,
    namespace: &str,
    pod: &Pod,
) -> std::result::Result<MembershipView, String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
        return Err("not running".into());
    }
    let port = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(PROBE_PORT_NAME))
        .map(|p| p.container_port)
        .ok_or_else(|| format!("its pod has no port named {PROBE_PORT_NAME}"))?;
    let uri = format!(
        "/api/v1/namespaces/{namespace}/pods/{name}:{port}/proxy{}",
        membership_view::PATH
    );
    let request = http::Request::get(uri)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client
        .request::<MembershipView>(request)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => {
                format!("not allowed to get pods/proxy in {namespace}, which reading it needs")
            }
            kube::Error::Api(s) if s.code == 404 => {
                "it serves no /membership (a speaker older than this plugin)".into()
            }
            other => other.to_string(),
        })
}

/// What `explain` needs about Service `namespace/name`.
pub async fn service_facts(
    client: &Client,
    target: &Target,
    namespace: &str,
    name: &str,
) -> Result<ServiceFacts> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service = services
        .get_opt(name)
        .await
        .with_context(|| format!("reading Service {namespace}/{name}"))?
        .with_context(|| format!("Service {namespace}/{name} does not exist"))?;
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let mut warnings: Vec<EventFact> = events
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=Service,involvedObject.name={name},type=Warning"
        )))
        .await
        .with_context(|| format!("listing the Events of Service {namespace}/{name}"))?
        .items
        .iter()
        .map(EventFact::from_event)
        .collect();
    warnings.sort_by(|a, b| b.last.cmp(&a.last));
    let (controller, speakers) = components(client, target).await?;
    Ok(ServiceFacts {
        service,
        warnings,
        controller,
        speakers,
        ferrolb_namespace: target.ferrolb_namespace.clone(),
    })
}

/// What `status` needs.
pub async fn status_facts(client: &Client, target: &Target) -> Result<StatusFacts> {
    let pools: Api<IPAddressPool> = Api::all(client.clone());
    let pools = pools
        .list(&ListParams::default())
        .await
        .context("listing IPAddressPools (are ferrolb's CRDs installed?)")?
        .items;
    let services: Api<Service> = Api::all(client.clone());
    let services = services
        .list(&ListParams::default())
        .await
        .context("listing Services")?
        .items;
    let (controller, speakers) = components(client, target).await?;
    Ok(StatusFacts {
        controller,
        speakers,
        pools,
        services,
    })
}

/// Every object in the YAML (or JSON) streams of `paths` (`-` is stdin), in order.
pub fn objects_from_files(paths: &[PathBuf]) -> Result<Vec<serde_json::Value>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for path in paths {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading stdin")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = serde_json::Value::deserialize(doc)
                .with_context(|| format!("{}: document {}", path.display(), i + 1))?;
            match value {
                serde_json::Value::Null => {}
                // `kind: List` (kubectl get -o yaml) holds its objects in items.
                serde_json::Value::Object(ref o)
                    if o.get("kind").and_then(|k| k.as_str()) == Some("List") =>
                {
                    out.extend(
                        o.get("items")
                            .and_then(|i| i.as_array())
                            .cloned()
                            .unwrap_or_default(),
                    );
                }
                v => out.push(v),
            }
        }
    }
    Ok(out)
}

/// Every MetalLB configuration object in the cluster ([`crate::migrate::KINDS`], each at the
/// first of its versions the cluster serves), and a note for each kind the cluster lacks.
pub async fn metallb_objects(client: &Client) -> Result<(Vec<serde_json::Value>, Vec<String>)> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    use kube::discovery::pinned_kind;
    let mut objects = Vec::new();
    let mut missing = Vec::new();
    for (kind, versions) in crate::migrate::KINDS {
        let mut found = false;
        for version in versions {
            let gvk = GroupVersionKind::gvk(crate::migrate::METALLB_GROUP, version, kind);
            let Ok((resource, _)) = pinned_kind(client, &gvk).await else {
                continue;
            };
            let api: Api<DynamicObject> = Api::all_with(
                client.clone(),
                &ApiResource::from_gvk_with_plural(&gvk, &resource.plural),
            );
            let list = api.list(&ListParams::default()).await.with_context(|| {
                format!(
                    "listing {kind} ({}/{version})",
                    crate::migrate::METALLB_GROUP
                )
            })?;
            for o in list.items {
                let mut value = serde_json::to_value(&o)?;
                value["apiVersion"] = format!("{}/{version}", crate::migrate::METALLB_GROUP).into();
                value["kind"] = (*kind).into();
                objects.push(value);
            }
            found = true;
            break;
        }
        if !found {
            missing.push(format!(
                "the cluster serves no {kind} of {} ({}): nothing to read",
                crate::migrate::METALLB_GROUP,
                versions.join(", ")
            ));
        }
    }
    Ok((objects, missing))
}

/// Server-side dry-run apply of each of ferrolb's objects: the apiserver's own validation
/// (schema and rules), nothing stored. Returns, per refused object, its index in `objects` and
/// the apiserver's words; `None` when the cluster does not serve ferrolb's API (its CRDs are
/// not installed yet, as before a migration), so nothing could be checked.
pub async fn dry_run(
    client: &Client,
    objects: &[serde_json::Value],
) -> Result<Option<Vec<(usize, String)>>> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let api_version = format!("{}/v1beta1", ferrolb_crds::contract::GROUP);
    // One discovery per kind, not per object.
    let mut resources: std::collections::BTreeMap<String, ApiResource> = Default::default();
    let mut refused = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        if o["apiVersion"] != api_version.as_str() {
            continue;
        }
        let kind = o["kind"].as_str().unwrap_or_default();
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let resource = match resources.get(kind) {
            Some(r) => r.clone(),
            None => {
                let gvk = GroupVersionKind::gvk(ferrolb_crds::contract::GROUP, "v1beta1", kind);
                let found = match kube::discovery::pinned_kind(client, &gvk).await {
                    Ok((found, _)) => found,
                    Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
                    Err(e) => {
                        return Err(e).with_context(|| format!("finding {kind} in the cluster"));
                    }
                };
                let r = ApiResource::from_gvk_with_plural(&gvk, &found.plural);
                resources.insert(kind.to_string(), r.clone());
                r
            }
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let params = PatchParams::apply("kubectl-ferrolb")
            .dry_run()
            .validation_strict();
        if let Err(e) = api.patch(name, &params, &Patch::Apply(o)).await {
            let words = match e {
                kube::Error::Api(s) => s.message,
                other => other.to_string(),
            };
            refused.push((i, words));
        }
    }
    Ok(Some(refused))
}
