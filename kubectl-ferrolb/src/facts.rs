//! The facts the commands read from the API, and the pure rules that summarise API objects
//! into them (a Lease into a leader that is or is not alive, a pod into a ready speaker, an
//! Event into a line).

use ferrolb_crds::membership_view::MembershipView;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Serialize;

/// The controller's leader election, from its Lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerFact {
    /// `namespace/name` of the Lease.
    pub lease: String,
    /// Whether the Lease exists.
    pub lease_found: bool,
    /// Its holder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Whether the holder renewed it within its duration.
    pub live: bool,
    /// Its last renewal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewed: Option<String>,
}

impl ControllerFact {
    /// The leader `lease` (named `name`, `None` when it does not exist) shows at `now`.
    pub fn from_lease(name: &str, lease: Option<&Lease>, now: Timestamp) -> ControllerFact {
        let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
            return ControllerFact {
                lease: name.to_string(),
                lease_found: lease.is_some(),
                ..ControllerFact::default()
            };
        };
        let renewed = spec.renew_time.as_ref().map(|t| t.0);
        let live = match (renewed, spec.lease_duration_seconds) {
            (Some(at), Some(secs)) => {
                spec.holder_identity
                    .as_deref()
                    .is_some_and(|h| !h.is_empty())
                    && at + SignedDuration::from_secs(i64::from(secs)) >= now
            }
            _ => false,
        };
        ControllerFact {
            lease: name.to_string(),
            lease_found: true,
            leader: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            live,
            renewed: renewed.map(|t| t.to_string()),
        }
    }

    /// In words: who leads, or why nobody does.
    pub fn describe(&self) -> String {
        match (&self.leader, self.live, self.lease_found) {
            (_, _, false) => format!("Lease {} does not exist", self.lease),
            (Some(leader), true, _) => format!("{leader} leads (Lease {})", self.lease),
            (Some(leader), false, _) => format!(
                "Lease {} was last renewed by {leader} at {} and has expired",
                self.lease,
                self.renewed.as_deref().unwrap_or("an unknown time")
            ),
            (None, _, _) => format!("Lease {} has no holder", self.lease),
        }
    }
}

/// A speaker pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerFact {
    /// Its name.
    pub pod: String,
    /// Its node.
    pub node: String,
    /// Whether it is Ready.
    pub ready: bool,
    /// Its phase or the reason its container waits (`CrashLoopBackOff`, ...).
    pub state: String,
    /// Its view of which speakers are alive (its `/membership` page), when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership: Option<MembershipView>,
    /// Why its view could not be read (not running, no permission for `pods/proxy`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership_error: Option<String>,
}

impl SpeakerFact {
    /// What `pod` shows.
    pub fn from_pod(pod: &Pod) -> SpeakerFact {
        let status = pod.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let waiting = status
            .container_statuses
            .iter()
            .flatten()
            .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
        SpeakerFact {
            pod: pod.metadata.name.clone().unwrap_or_default(),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_else(|| "(not scheduled)".into()),
            ready,
            state: waiting.or(status.phase).unwrap_or_else(|| "Unknown".into()),
            membership: None,
            membership_error: None,
        }
    }
}

/// An Event about a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFact {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Its reason.
    pub reason: String,
    /// Its message.
    pub message: String,
    /// Who reported it (`ferrolb-controller`, `ferrolb-speaker`, ...).
    pub source: String,
    /// How often it happened.
    pub count: i32,
    /// When it last happened.
    pub last: String,
}

impl EventFact {
    /// What `event` says; its time is the newest of the times it carries.
    pub fn from_event(event: &Event) -> EventFact {
        let last = event
            .series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
            .or(event.last_timestamp.as_ref().map(|t| t.0))
            .or(event.event_time.as_ref().map(|t| t.0))
            .or(event.first_timestamp.as_ref().map(|t| t.0));
        EventFact {
            type_: event.type_.clone().unwrap_or_default(),
            reason: event.reason.clone().unwrap_or_default(),
            message: event.message.clone().unwrap_or_default(),
            source: event
                .reporting_component
                .clone()
                .filter(|c| !c.is_empty())
                .or_else(|| event.source.as_ref().and_then(|s| s.component.clone()))
                .unwrap_or_else(|| "unknown".into()),
            count: event
                .series
                .as_ref()
                .and_then(|s| s.count)
                .or(event.count)
                .unwrap_or(1),
            last: last.map(|t| t.to_string()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
#[path = "facts_tests.rs"]
mod tests;
