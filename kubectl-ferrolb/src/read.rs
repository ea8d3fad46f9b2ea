//! Reading the facts from the API (I/O), with kubectl's way of finding the cluster: `--kubeconfig`
//! or `KUBECONFIG` or `~/.kube/config`, `--context`, and the context's namespace.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrolb_crds::IPAddressPool;
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
    let speakers = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=speaker"))
        .await
        .with_context(|| format!("listing speaker pods in {}", target.ferrolb_namespace))?
        .items
        .iter()
        .map(SpeakerFact::from_pod)
        .collect();
    Ok((controller, speakers))
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
