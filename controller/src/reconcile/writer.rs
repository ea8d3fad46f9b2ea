//! Carries out the state machine's [`Action`]s against the apiserver, concurrently, and reports
//! each result back as an [`Input`].
//!
//! Actions wait in queues, as compact JSON text, and at most `concurrency` status applies (the
//! state machine keeps at most one per object in flight, so order per object is kept) and
//! [`EVENT_LANE`] Event creations run at once. So a burst of 10,000 Services costs 10,000 small
//! queue entries, not 10,000 tasks each holding a JSON tree. Events never hold up status: an
//! Event starts only while no status apply waits for a slot, so in a burst the apiserver spends
//! itself on the addresses first and records the Events right after.

use std::collections::VecDeque;
use std::time::Duration;

use ferrolb_crds::contract::{action, field_manager, reason};
use ferrolb_crds::{IPAddressPool, ServiceKey};
use ferrolb_runtime::events::{self, EventRecorder};
use ferrolb_runtime::lean::LeanService;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::Input;
use super::state::{Action, ServiceEvent};
use crate::metrics::Metrics;

/// Event creations in flight at once.
pub const EVENT_LANE: usize = 4;

/// What a finished write task was, so the writer can start the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// A Service or pool status apply.
    Status,
    /// An Event creation.
    Event,
}

/// Runs actions as tasks of a [`JoinSet`] owned by the caller: dropping it stops every write.
pub struct Writer {
    client: Client,
    results: mpsc::UnboundedSender<Input>,
    concurrency: usize,
    status_queue: VecDeque<(Target, Box<RawValue>)>,
    event_queue: VecDeque<ServiceEvent>,
    status_in_flight: usize,
    events_in_flight: usize,
    recorder: EventRecorder,
    manager: String,
    metrics: Metrics,
}

enum Target {
    Service(ServiceKey),
    Pool(String),
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("queued_status", &self.status_queue.len())
            .field("queued_events", &self.event_queue.len())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer reporting to `results`, writing as field manager `manager`.
    pub fn new(
        client: Client,
        results: mpsc::UnboundedSender<Input>,
        concurrency: usize,
        instance: String,
        manager: String,
        metrics: Metrics,
    ) -> Writer {
        Writer {
            recorder: EventRecorder::new(client.clone(), field_manager::CONTROLLER, instance),
            client,
            results,
            concurrency: concurrency.max(1),
            status_queue: VecDeque::new(),
            event_queue: VecDeque::new(),
            status_in_flight: 0,
            events_in_flight: 0,
            manager,
            metrics,
        }
    }

    /// Queues `actions` and starts what fits.
    pub fn dispatch(&mut self, actions: Vec<Action>, tasks: &mut JoinSet<Finished>) {
        for action in actions {
            match action {
                Action::ApplyService { key, body } => {
                    self.status_queue
                        .push_back((Target::Service(key), raw(body)));
                }
                Action::ApplyPool { name, body } => {
                    self.status_queue.push_back((Target::Pool(name), raw(body)));
                }
                Action::Event(event) => self.event_queue.push_back(event),
            }
        }
        self.pump(tasks);
    }

    /// Nothing queued and nothing in flight.
    pub fn idle(&self) -> bool {
        self.status_queue.is_empty()
            && self.event_queue.is_empty()
            && self.status_in_flight == 0
            && self.events_in_flight == 0
    }

    /// Gives back the queues' capacity, which a burst grew to one entry per Service.
    pub fn shrink_queues(&mut self) {
        self.status_queue.shrink_to_fit();
        self.event_queue.shrink_to_fit();
    }

    /// A task finished: start the next queued one.
    pub fn finished(&mut self, what: Finished, tasks: &mut JoinSet<Finished>) {
        match what {
            Finished::Status => self.status_in_flight -= 1,
            Finished::Event => self.events_in_flight -= 1,
        }
        self.pump(tasks);
    }

    fn pump(&mut self, tasks: &mut JoinSet<Finished>) {
        while self.status_in_flight < self.concurrency {
            let Some((target, body)) = self.status_queue.pop_front() else {
                break;
            };
            self.status_in_flight += 1;
            let results = self.results.clone();
            let metrics = self.metrics.clone();
            let manager = self.manager.clone();
            match target {
                Target::Service(key) => {
                    let api: Api<LeanService> =
                        Api::namespaced(self.client.clone(), &key.namespace);
                    tasks.spawn(async move {
                        let result = apply_status(&api, &manager, &key.name, &body).await;
                        metrics.write("service", result.is_ok());
                        let written = match result {
                            Ok(svc) => Some(Box::new(svc.0)),
                            Err(e) => {
                                warn!(service = %key, error = %e, "status write failed; retrying");
                                None
                            }
                        };
                        let _ = results.send(Input::ServiceWritten(key, written));
                        Finished::Status
                    });
                }
                Target::Pool(name) => {
                    let api: Api<IPAddressPool> = Api::all(self.client.clone());
                    tasks.spawn(async move {
                        let result = apply_status(&api, &manager, &name, &body).await;
                        metrics.write("pool", result.is_ok());
                        let written = match result {
                            Ok(pool) => Ok(Box::new(pool)),
                            Err(e) => {
                                warn!(pool = %name, error = %e, "pool status write failed; retrying");
                                Err(())
                            }
                        };
                        let _ = results.send(Input::PoolWritten(name, written));
                        Finished::Status
                    });
                }
            }
        }
        while self.events_in_flight < EVENT_LANE && self.status_queue.is_empty() {
            let Some(event) = self.event_queue.pop_front() else {
                break;
            };
            self.events_in_flight += 1;
            let recorder = self.recorder.clone();
            let metrics = self.metrics.clone();
            tasks.spawn(async move {
                let ok = publish(&recorder, &event).await;
                metrics.write("event", ok);
                Finished::Event
            });
        }
    }
}

/// The body as raw JSON (the state machine serialized it from a `Value`).
fn raw(body: String) -> Box<RawValue> {
    RawValue::from_string(body).expect("a serialized Value is valid JSON")
}

/// Applies `body` to `name`'s status, forcing ownership of the fields it names.
async fn apply_status<K>(
    api: &Api<K>,
    manager: &str,
    name: &str,
    body: &RawValue,
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

/// Records the Event. The state machine already sends each distinct failure once, so no
/// client-side series aggregation (and no cache of past Events) is needed.
async fn publish(recorder: &EventRecorder, e: &ServiceEvent) -> bool {
    let event = events::ServiceEvent {
        service: &e.key,
        uid: Some(&e.uid),
        warning: e.warning,
        reason: e.reason,
        action: if e.reason == reason::IP_RELEASED {
            action::RELEASE
        } else {
            action::ALLOCATE
        },
        note: &e.note,
    };
    match recorder.record(&event).await {
        Ok(()) => true,
        Err(err) => {
            debug!(service = %e.key, error = %err, "event not recorded");
            false
        }
    }
}
