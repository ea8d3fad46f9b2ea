//! Writes the conditions [`crate::report`] wants, with an Event each, off the announcing path.
//! At most [`IN_FLIGHT`] writes run at once. A Service that shows the wanted condition is left
//! alone, and so is one written with the same content whose cached object has not changed since
//! (the watch has not caught up yet); steady state makes no API calls. Once the cached object
//! changes, the cache decides again: if another speaker overwrote the condition meanwhile (say,
//! while this node was cut off and someone stood in), it is written again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use crate::metrics::{Metrics, WriteLabels};
use crate::plan::ServiceKey;
use crate::report::{self, FIELD_MANAGER, Wanted};

/// API writes in flight at once.
pub const IN_FLIGHT: usize = 8;

/// Remembers what was written so nothing is written twice.
pub struct StatusWriter {
    client: Client,
    node: String,
    metrics: Metrics,
    permits: Arc<Semaphore>,
    /// What was written, and the Service's resourceVersion in the cache when it was.
    written: HashMap<ServiceKey, (Wanted, Option<String>)>,
    failed_tx: mpsc::UnboundedSender<ServiceKey>,
    failed_rx: mpsc::UnboundedReceiver<ServiceKey>,
}

/// Pause before a failed write is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

impl StatusWriter {
    /// A writer reporting as speaker of `node`.
    pub fn new(client: Client, node: String, metrics: Metrics) -> Self {
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        StatusWriter {
            client,
            node,
            metrics,
            permits: Arc::new(Semaphore::new(IN_FLIGHT)),
            written: HashMap::new(),
            failed_tx,
            failed_rx,
        }
    }

    /// Waits for a write that failed (after a pause) and forgets it, so the next
    /// [`StatusWriter::update`] tries again.
    pub async fn failed(&mut self) {
        if let Some(key) = self.failed_rx.recv().await {
            self.written.remove(&key);
        }
    }

    /// Writes every condition in `wanted` the Service does not show yet.
    pub fn update(&mut self, wanted: BTreeMap<ServiceKey, Wanted>, services: &Store<Service>) {
        self.written.retain(|k, _| wanted.contains_key(k));
        for (key, want) in wanted {
            let Some((namespace, name)) = key.split_once('/') else {
                continue;
            };
            let Some(svc) = services.get(&ObjectRef::new(name).within(namespace)) else {
                continue;
            };
            let version = svc.resource_version();
            if report::shows(&svc, &want) {
                self.written.insert(key, (want, version));
                continue;
            }
            if self.written.get(&key) == Some(&(want.clone(), version.clone())) {
                // Written, and the cache has not seen any change of the Service since.
                continue;
            }
            self.written.insert(key.clone(), (want.clone(), version));
            let job = Job {
                client: self.client.clone(),
                node: self.node.clone(),
                metrics: self.metrics.clone(),
                namespace: namespace.to_string(),
                name: name.to_string(),
                uid: svc.uid(),
                want,
            };
            let permits = self.permits.clone();
            let failed = self.failed_tx.clone();
            tokio::spawn(async move {
                let Ok(permit) = permits.acquire_owned().await else {
                    return;
                };
                if !job.run().await {
                    drop(permit);
                    tokio::time::sleep(RETRY_AFTER).await;
                    let _ = failed.send(key);
                }
            });
        }
    }

    /// Number of conditions remembered as written.
    pub fn remembered(&self) -> usize {
        self.written.len()
    }
}

/// One condition write and its Event.
struct Job {
    client: Client,
    node: String,
    metrics: Metrics,
    namespace: String,
    name: String,
    uid: Option<String>,
    want: Wanted,
}

impl Job {
    /// Writes the condition and its Event; false when the condition could not be written.
    async fn run(self) -> bool {
        let now = Timestamp::now();
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let stamp = serde_json::to_value(Time(now))
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let body = report::patch(&self.namespace, &self.name, &self.want, &stamp);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            api.patch_status(&self.name, &params, &Patch::Apply(&body)),
        )
        .await;
        let ok = matches!(result, Ok(Ok(_)));
        self.count("status", ok);
        if !ok {
            // A deleted Service is not worth a warning.
            warn!(service = %format!("{}/{}", self.namespace, self.name), error = ?result.map(|r| r.err()), "writing the announcement condition failed; retrying");
            return false;
        }
        record_event(
            &self.client,
            &self.node,
            &self.metrics,
            &ServiceEvent {
                namespace: &self.namespace,
                name: &self.name,
                uid: self.uid.clone(),
                warning: self.want.status != "True",
                reason: self.want.reason,
                action: "Announce",
                note: &self.want.message,
            },
        )
        .await;
        true
    }

    fn count(&self, object: &'static str, ok: bool) {
        count(&self.metrics, object, ok);
    }
}

fn count(metrics: &Metrics, object: &'static str, ok: bool) {
    metrics
        .writes
        .get_or_create(&WriteLabels {
            object,
            result: if ok { "ok" } else { "error" },
        })
        .inc();
}

/// An Event about a Service, reported by this node's speaker.
#[derive(Debug)]
pub struct ServiceEvent<'a> {
    /// The Service's namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its uid, when known.
    pub uid: Option<String>,
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// The Event's reason (`Announced`, `KernelAnswersForAddress`, ...).
    pub reason: &'a str,
    /// The Event's action.
    pub action: &'a str,
    /// The message (cut to 1,000 characters, the API's limit).
    pub note: &'a str,
}

/// Creates `event` (an `events.k8s.io/v1` Event regarding the Service, reported by
/// `ferrolb-speaker` from `node`) and counts the write; whether it was recorded.
pub async fn record_event(
    client: &Client,
    node: &str,
    metrics: &Metrics,
    event: &ServiceEvent<'_>,
) -> bool {
    let now = Timestamp::now();
    let events: Api<Event> = Api::namespaced(client.clone(), event.namespace);
    let body = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", event.name, now.as_nanosecond())),
            namespace: Some(event.namespace.to_string()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        regarding: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(event.namespace.to_string()),
            name: Some(event.name.to_string()),
            uid: event.uid.clone(),
            ..Default::default()
        }),
        type_: Some(if event.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(event.reason.into()),
        action: Some(event.action.into()),
        note: Some(event.note.chars().take(1000).collect()),
        reporting_controller: Some(FIELD_MANAGER.into()),
        reporting_instance: Some(node.to_string()),
        ..Default::default()
    };
    let ok = events.create(&PostParams::default(), &body).await;
    if let Err(e) = &ok {
        debug!(error = %e, "event not recorded");
    }
    count(metrics, "event", ok.is_ok());
    ok.is_ok()
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter")
            .field("node", &self.node)
            .field("written", &self.written.len())
            .finish_non_exhaustive()
    }
}
