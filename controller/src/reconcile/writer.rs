//! Carries out the state machine's [`Action`]s against the apiserver, concurrently, and reports
//! each result back as an [`Input`].
//!
//! Status applies run up to `concurrency` at a time (the state machine keeps at most one per
//! object in flight, so order per object is kept); Events go through a smaller lane so they never
//! hold up status writes.

use std::sync::Arc;
use std::time::Duration;

use ferrolb_crds::IPAddressPool;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::Input;
use super::state::{Action, ServiceEvent};
use crate::metrics::Metrics;

/// Runs actions as tasks of a [`JoinSet`] owned by the caller: dropping it stops every write.
pub struct Writer {
    client: Client,
    results: mpsc::UnboundedSender<Input>,
    status_lane: Arc<Semaphore>,
    event_lane: Arc<Semaphore>,
    instance: Arc<str>,
    manager: Arc<str>,
    metrics: Metrics,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer reporting to `results`.
    pub fn new(
        client: Client,
        results: mpsc::UnboundedSender<Input>,
        concurrency: usize,
        instance: String,
        manager: String,
        metrics: Metrics,
    ) -> Writer {
        Writer {
            manager: manager.into(),
            instance: instance.into(),
            client,
            results,
            status_lane: Arc::new(Semaphore::new(concurrency)),
            event_lane: Arc::new(Semaphore::new(4)),
            metrics,
        }
    }

    /// Starts `actions` on `tasks`.
    pub fn dispatch(&self, actions: Vec<Action>, tasks: &mut JoinSet<()>) {
        for action in actions {
            match action {
                Action::ApplyService { key, body } => {
                    let lane = self.status_lane.clone();
                    let api: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
                    let results = self.results.clone();
                    let metrics = self.metrics.clone();
                    let manager = self.manager.clone();
                    tasks.spawn(async move {
                        let _permit = lane.acquire_owned().await;
                        let result = apply_status(&api, &manager, &key.name, &body).await;
                        metrics.write("service", result.is_ok());
                        let written = match result {
                            Ok(svc) => Some(svc),
                            Err(e) => {
                                warn!(service = %key, error = %e, "status write failed; retrying");
                                None
                            }
                        };
                        let _ = results.send(Input::ServiceWritten(key, written.map(Box::new)));
                    });
                }
                Action::ApplyPool { name, body } => {
                    let api: Api<IPAddressPool> = Api::all(self.client.clone());
                    let results = self.results.clone();
                    let metrics = self.metrics.clone();
                    let manager = self.manager.clone();
                    tasks.spawn(async move {
                        let result = apply_status(&api, &manager, &name, &body).await;
                        metrics.write("pool", result.is_ok());
                        let written = match result {
                            Ok(pool) => Ok(pool),
                            Err(e) => {
                                warn!(pool = %name, error = %e, "pool status write failed; retrying");
                                Err(())
                            }
                        };
                        let _ = results.send(Input::PoolWritten(name, written.map(Box::new)));
                    });
                }
                Action::Event(event) => {
                    let lane = self.event_lane.clone();
                    let api: Api<Event> =
                        Api::namespaced(self.client.clone(), &event.key.namespace);
                    let instance = self.instance.clone();
                    let metrics = self.metrics.clone();
                    tasks.spawn(async move {
                        let _permit = lane.acquire_owned().await;
                        let ok = publish(&api, &instance, &event).await;
                        metrics.write("event", ok);
                    });
                }
            }
        }
    }
}

/// Applies `body` to `name`'s status, forcing ownership of the fields it names.
async fn apply_status<K>(
    api: &Api<K>,
    manager: &str,
    name: &str,
    body: &serde_json::Value,
) -> kube::Result<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams::apply(manager).force();
    tokio::time::timeout(
        Duration::from_secs(10),
        api.patch_status(name, &params, &Patch::Apply(body)),
    )
    .await
    .unwrap_or_else(|_| {
        Err(kube::Error::Service(
            format!("no answer from the apiserver within 10 s for {name}").into(),
        ))
    })
}

/// Creates an events.k8s.io/v1 Event. The state machine already sends each distinct failure once,
/// so no client-side series aggregation (and no cache of past Events) is needed.
async fn publish(api: &Api<Event>, instance: &str, e: &ServiceEvent) -> bool {
    let now = Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", e.key.name, now.as_nanosecond())),
            namespace: Some(e.key.namespace.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        regarding: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(e.key.namespace.clone()),
            name: Some(e.key.name.clone()),
            uid: Some(e.uid.clone()),
            ..Default::default()
        }),
        type_: Some(if e.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(e.reason.into()),
        action: Some(
            match e.reason {
                "IPReleased" => "Release",
                _ => "Allocate",
            }
            .into(),
        ),
        note: Some(truncate_note(&e.note)),
        // The class is in the field manager, not here: a reporting controller is a plain name.
        reporting_controller: Some(super::desired::FIELD_MANAGER.into()),
        reporting_instance: Some(instance.to_string()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => true,
        Err(err) => {
            debug!(service = %e.key, error = %err, "event not recorded");
            false
        }
    }
}

/// Events carry at most 1 kB of note.
fn truncate_note(note: &str) -> String {
    if note.len() <= 1024 {
        return note.to_string();
    }
    let mut end = 1020;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}
