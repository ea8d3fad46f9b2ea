//! Kubernetes Events about Services (`events.k8s.io/v1`), built one way for both binaries.
//!
//! Not kube's `Recorder`: it folds repeated Events into series by patching earlier ones, and
//! keeps a cache of them. ferrolb's callers already send each distinct Event once (the
//! controller's state machine, the speaker's status writer), so one `create` per Event is all
//! that is needed, and the tests count Events one to one.

use ferrolb_crds::ServiceKey;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// The API's limit on an Event's note, in bytes.
pub const NOTE_LIMIT: usize = 1024;

/// What happened to a Service.
#[derive(Clone, Copy, Debug)]
pub struct ServiceEvent<'a> {
    /// The Service.
    pub service: &'a ServiceKey,
    /// Its uid, when known (ties the Event to this incarnation of the name).
    pub uid: Option<&'a str>,
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// CamelCase reason, from `ferrolb_crds::contract::reason`.
    pub reason: &'a str,
    /// What the reporter did, from `ferrolb_crds::contract::action`.
    pub action: &'a str,
    /// The message; cut to [`NOTE_LIMIT`] by [`truncate_note`].
    pub note: &'a str,
}

/// Who reports: the component (a field manager from `ferrolb_crds::contract::field_manager`) and
/// this instance of it (the pod or node name).
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    controller: &'static str,
    instance: String,
}

impl EventRecorder {
    /// A recorder reporting as `instance` of `controller`.
    pub fn new(client: kube::Client, controller: &'static str, instance: String) -> Self {
        EventRecorder {
            client,
            controller,
            instance,
        }
    }

    /// Creates the Event.
    pub async fn record(&self, event: &ServiceEvent<'_>) -> kube::Result<()> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &event.service.namespace);
        let body = event_object(event, self.controller, &self.instance, Timestamp::now());
        api.create(&PostParams::default(), &body).await.map(drop)
    }
}

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecorder")
            .field("controller", &self.controller)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The Event object for `event` reported at `now` (pure). The name is the Service's name and the
/// time in nanoseconds, unique per Service in practice.
pub fn event_object(
    event: &ServiceEvent<'_>,
    controller: &str,
    instance: &str,
    now: Timestamp,
) -> Event {
    let ServiceKey { namespace, name } = event.service;
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        regarding: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(namespace.clone()),
            name: Some(name.clone()),
            uid: event.uid.map(str::to_string),
            ..Default::default()
        }),
        type_: Some(if event.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(event.reason.into()),
        action: Some(event.action.into()),
        note: Some(truncate_note(event.note)),
        reporting_controller: Some(controller.into()),
        reporting_instance: Some(instance.into()),
        ..Default::default()
    }
}

/// `note` if it fits [`NOTE_LIMIT`] bytes, else its start (cut at a character boundary) and `...`.
pub fn truncate_note(note: &str) -> String {
    if note.len() <= NOTE_LIMIT {
        return note.to_string();
    }
    let mut end = NOTE_LIMIT - 4;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::contract::{action, field_manager, reason};

    #[test]
    fn notes_fit_the_api_limit_on_a_character_boundary() {
        assert_eq!(truncate_note("short"), "short");
        let exact = "a".repeat(NOTE_LIMIT);
        assert_eq!(truncate_note(&exact), exact);
        let long = "é".repeat(NOTE_LIMIT);
        let cut = truncate_note(&long);
        assert!(cut.len() <= NOTE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with("..."));
        assert!(cut.trim_end_matches("...").chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_event_regards_the_service_and_names_the_reporter() {
        let key = ServiceKey::new("ns", "web");
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let event = event_object(
            &ServiceEvent {
                service: &key,
                uid: Some("u-1"),
                warning: true,
                reason: reason::ALLOCATION_FAILED,
                action: action::ALLOCATE,
                note: "no pool",
            },
            field_manager::CONTROLLER,
            "pod-a",
            now,
        );
        assert_eq!(event.metadata.namespace.as_deref(), Some("ns"));
        assert!(event.metadata.name.as_deref().unwrap().starts_with("web."));
        let regarding = event.regarding.unwrap();
        assert_eq!(regarding.kind.as_deref(), Some("Service"));
        assert_eq!(regarding.name.as_deref(), Some("web"));
        assert_eq!(regarding.uid.as_deref(), Some("u-1"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.reason.as_deref(), Some(reason::ALLOCATION_FAILED));
        assert_eq!(event.action.as_deref(), Some(action::ALLOCATE));
        assert_eq!(event.note.as_deref(), Some("no pool"));
        assert_eq!(
            event.reporting_controller.as_deref(),
            Some(field_manager::CONTROLLER)
        );
        assert_eq!(event.reporting_instance.as_deref(), Some("pod-a"));
        assert_eq!(event.event_time, Some(MicroTime(now)));
    }
}
