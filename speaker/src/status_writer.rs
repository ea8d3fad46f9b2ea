//! Writes the conditions [`crate::report`] wants, with an Event each, off the announcing path.
//! At most [`IN_FLIGHT`] writes run at once. A Service that shows the wanted condition is left
//! alone, and so is one written with the same content whose cached object has not changed since
//! (the watch has not caught up yet); steady state makes no API calls. Once the cached object
//! changes, the cache decides again: if another speaker overwrote the condition meanwhile (say,
//! while this node was cut off and someone stood in), it is written again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_crds::contract::{action, field_manager};
use ferrolb_runtime::events::{EventRecorder, ServiceEvent};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use crate::metrics::{Metrics, WriteLabels};
use crate::plan::ServiceKey;
use crate::report::{self, Wanted};

/// API writes in flight at once.
pub const IN_FLIGHT: usize = 8;

/// Remembers what was written so nothing is written twice.
pub struct StatusWriter {
    client: Client,
    recorder: EventRecorder,
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
            recorder: EventRecorder::new(client.clone(), field_manager::SPEAKER, node),
            client,
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
            let Some(svc) = services.get(&ObjectRef::new(&key.name).within(&key.namespace)) else {
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
                recorder: self.recorder.clone(),
                metrics: self.metrics.clone(),
                service: key.clone(),
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
    recorder: EventRecorder,
    metrics: Metrics,
    service: ServiceKey,
    uid: Option<String>,
    want: Wanted,
}

impl Job {
    /// Writes the condition and its Event; false when the condition could not be written.
    async fn run(self) -> bool {
        let now = Timestamp::now();
        let ServiceKey { namespace, name } = &self.service;
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let stamp = serde_json::to_value(Time(now))
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let body = report::patch(namespace, name, &self.want, &stamp);
        let params = PatchParams::apply(field_manager::SPEAKER).force();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            api.patch_status(name, &params, &Patch::Apply(&body)),
        )
        .await;
        let ok = matches!(result, Ok(Ok(_)));
        self.count("status", ok);
        if !ok {
            // A deleted Service is not worth a warning.
            warn!(service = %self.service, error = ?result.map(|r| r.err()), "writing the announcement condition failed; retrying");
            return false;
        }
        record_event(
            &self.recorder,
            &self.metrics,
            &ServiceEvent {
                service: &self.service,
                uid: self.uid.as_deref(),
                warning: self.want.status != "True",
                reason: self.want.reason,
                action: action::ANNOUNCE,
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

/// Records `event` (reported by `ferrolb-speaker` from this node) and counts the write; whether
/// it was recorded.
pub async fn record_event(
    recorder: &EventRecorder,
    metrics: &Metrics,
    event: &ServiceEvent<'_>,
) -> bool {
    let ok = recorder.record(event).await;
    if let Err(e) = &ok {
        debug!(error = %e, "event not recorded");
    }
    count(metrics, "event", ok.is_ok());
    ok.is_ok()
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter")
            .field("recorder", &self.recorder)
            .field("written", &self.written.len())
            .finish_non_exhaustive()
    }
}
