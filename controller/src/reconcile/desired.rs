//! What a Service's and a pool's status should say, what they say now, and the server-side apply
//! bodies that move one to the other (pure).
//!
//! The controller owns, on a Service: `status.loadBalancer.ingress`, the condition
//! [`IP_ALLOCATED`](contract::condition::IP_ALLOCATED) in `status.conditions`, and the annotation
//! [`ALLOCATED_FROM_POOL`]. All three go in one apply
//! to the `/status` subresource (the Service status strategy keeps metadata changes), so a
//! Service converges in one write.

use std::borrow::Cow;
use std::net::IpAddr;

use ferrolb_crds::contract::annotation::ALLOCATED_FROM_POOL;
use ferrolb_crds::contract::{self, reason};
use ferrolb_crds::{IPAddressPool, IPAddressPoolStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::observed::Observed;
use crate::ipam::error::comma_separated;
use crate::ipam::{AllocationError, Allocator, Assignment, ServiceKey};

/// The field manager for `lb_class`: [`contract::field_manager::CONTROLLER`] for classless
/// Services; a controller with `--lb-class` writes as `ferrolb-controller/<class>`, so two
/// controllers never release each other's fields.
pub fn field_manager(lb_class: Option<&str>) -> String {
    let manager = contract::field_manager::CONTROLLER;
    match lb_class {
        None => manager.to_string(),
        Some(class) => format!("{manager}/{class}"),
    }
}

/// The condition as the controller decides it (times are filled in when writing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionState {
    /// True when addresses are allocated.
    pub allocated: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human message.
    pub message: String,
}

/// The controller's part of a Service's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceState {
    /// `status.loadBalancer.ingress[].ip`, all with `ipMode: VIP`.
    pub ips: Vec<IpAddr>,
    /// The `ip-allocated-from-pool` annotation.
    pub pool: Option<String>,
    /// The condition.
    pub condition: Option<ConditionState>,
}

impl ServiceState {
    /// What a handled Service's object should show: its assignment, else its allocation
    /// failure, else nothing.
    pub fn of(assignment: Option<&Assignment>, failure: Option<&AllocationError>) -> ServiceState {
        match (assignment, failure) {
            (Some(a), _) => ServiceState {
                ips: a.ips.to_vec(),
                pool: Some(a.pool.to_string()),
                condition: Some(ConditionState {
                    allocated: true,
                    reason: reason::ALLOCATED.into(),
                    message: format!("{} from pool {}", comma_separated(&a.ips), a.pool),
                }),
            },
            (None, Some(err)) => ServiceState {
                ips: Vec::new(),
                pool: None,
                condition: Some(ConditionState {
                    allocated: false,
                    reason: err.reason().into(),
                    message: err.to_string(),
                }),
            },
            (None, None) => ServiceState::default(),
        }
    }
}

/// The apply body for a Service's `/status`: exactly the fields the controller owns. Fields left
/// out are released, so an empty `desired` removes everything the controller wrote.
pub fn service_patch(
    key: &ServiceKey,
    desired: &ServiceState,
    observed: &Observed,
    now: Timestamp,
) -> Value {
    let mut metadata = json!({"name": key.name, "namespace": key.namespace});
    if let Some(pool) = &desired.pool {
        metadata["annotations"] = json!({ ALLOCATED_FROM_POOL: pool });
    }
    let mut status = json!({});
    if !desired.ips.is_empty() {
        let ingress: Vec<Value> = desired
            .ips
            .iter()
            .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
            .collect();
        status["loadBalancer"] = json!({ "ingress": ingress });
    }
    if let Some(c) = &desired.condition {
        status["conditions"] = json!([condition(c, observed, now)]);
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": metadata, "status": status})
}

fn condition(c: &ConditionState, observed: &Observed, now: Timestamp) -> Condition {
    let same_status = observed
        .condition
        .is_some_and(|o| o.allocated == c.allocated);
    let since = match (&observed.condition_since, same_status) {
        (Some(t), true) => t.clone(),
        _ => Time(now),
    };
    Condition {
        type_: contract::condition::IP_ALLOCATED.into(),
        status: if c.allocated { "True" } else { "False" }.into(),
        reason: c.reason.clone(),
        message: shown_message(&c.message).into_owned(),
        last_transition_time: since,
        observed_generation: None,
    }
}

/// Longest condition message written, in bytes: longer ones are cut (the apiserver refuses
/// messages over 32,768).
const MESSAGE_MAX: usize = 32_768;

/// A condition message as written: cut to [`MESSAGE_MAX`] bytes on a char boundary, ending in
/// `...`, when longer.
pub fn shown_message(s: &str) -> Cow<'_, str> {
    if s.len() <= MESSAGE_MAX {
        return Cow::Borrowed(s);
    }
    let mut end = MESSAGE_MAX - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...", &s[..end]))
}

/// What a pool's status should say: its counts and conditions as `alloc` sees it.
pub fn pool_status(pool: &IPAddressPool, alloc: &Allocator, now: Timestamp) -> IPAddressPoolStatus {
    let name = pool.metadata.name.clone().unwrap_or_default();
    let mut status = IPAddressPoolStatus {
        observed_generation: pool.metadata.generation,
        ..Default::default()
    };
    let now = Time(now);
    let condition = |type_: &str, ok: bool, reason: &str, message: String| Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: now.clone(),
        observed_generation: pool.metadata.generation,
    };
    match (alloc.counts(&name), alloc.problems().get(&name)) {
        (Some(c), _) => {
            let exhausted = c.available_v4.0 == 0 && c.available_v6.0 == 0;
            status.assigned_ipv4 = c.assigned_v4;
            status.available_ipv4 = c.available_v4;
            status.assigned_ipv6 = c.assigned_v6;
            status.available_ipv6 = c.available_v6;
            status.conditions = vec![
                condition(
                    contract::condition::POOL_VALID,
                    true,
                    reason::POOL_VALID,
                    "the pool is in use".into(),
                ),
                condition(
                    contract::condition::POOL_EXHAUSTED,
                    exhausted,
                    if exhausted {
                        reason::POOL_NO_FREE_ADDRESS
                    } else {
                        reason::POOL_ADDRESSES_FREE
                    },
                    if exhausted {
                        "every address is held; Services asking this pool wait".into()
                    } else {
                        "addresses are free".into()
                    },
                ),
            ];
        }
        (None, problem) => {
            let message = problem
                .cloned()
                .unwrap_or_else(|| "not yet processed".into());
            let reason = if message.contains("overlap") {
                reason::POOL_OVERLAP
            } else if message.starts_with("annotation ") {
                reason::POOL_INVALID_ANNOTATION
            } else {
                reason::POOL_INVALID_ADDRESSES
            };
            status.conditions = vec![condition(
                contract::condition::POOL_VALID,
                false,
                reason,
                message,
            )];
        }
    }
    status
}

/// The apply body for a pool's `/status`, keeping condition times that did not change.
pub fn pool_patch(pool: &IPAddressPool, mut status: IPAddressPoolStatus) -> Value {
    let old = pool.status.as_ref();
    for c in &mut status.conditions {
        if let Some(prev) = old
            .into_iter()
            .flat_map(|s| s.conditions.iter())
            .find(|p| p.type_ == c.type_ && p.status == c.status)
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
    json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": pool.metadata.name},
        "status": status,
    })
}

/// Whether a pool's status already says `desired` (ignoring condition times).
pub fn pool_shows(pool: &IPAddressPool, desired: &IPAddressPoolStatus) -> bool {
    let Some(status) = &pool.status else {
        return false;
    };
    let strip = |s: &IPAddressPoolStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(status) == strip(desired)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    pub(crate) fn allocated() -> ServiceState {
        ServiceState {
            ips: vec!["203.0.113.5".parse().unwrap()],
            pool: Some("p".into()),
            condition: Some(ConditionState {
                allocated: true,
                reason: reason::ALLOCATED.into(),
                message: "203.0.113.5 from pool p".into(),
            }),
        }
    }

    pub(crate) fn service_showing(state: &ServiceState, since: &str) -> Service {
        let key = ServiceKey::new("ns", "web");
        let patch = service_patch(&key, state, &Observed::default(), since.parse().unwrap());
        let mut svc: Service = serde_json::from_value(patch).unwrap();
        svc.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(contract::field_manager::CONTROLLER.into()),
            ..Default::default()
        }]);
        svc.metadata.resource_version = Some("42".into());
        svc
    }

    #[test]
    fn patch_has_ingress_vip_annotation_and_condition() {
        let key = ServiceKey::new("ns", "web");
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let p = service_patch(&key, &allocated(), &Observed::default(), now);
        assert_eq!(
            p["status"]["loadBalancer"]["ingress"],
            json!([{"ip": "203.0.113.5", "ipMode": "VIP"}])
        );
        assert_eq!(p["metadata"]["annotations"][ALLOCATED_FROM_POOL], "p");
        assert_eq!(
            p["status"]["conditions"][0]["type"],
            contract::condition::IP_ALLOCATED
        );
        assert_eq!(p["status"]["conditions"][0]["status"], "True");
        assert_eq!(
            p["status"]["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        // An empty state releases every owned field.
        let empty = service_patch(&key, &ServiceState::default(), &Observed::default(), now);
        assert_eq!(empty["status"], json!({}));
        assert!(empty["metadata"].get("annotations").is_none());
    }

    #[test]
    fn transition_time_is_kept_while_the_status_value_stays() {
        let svc = service_showing(&allocated(), "2026-01-01T00:00:00Z");
        let observed = Observed::of(&svc, contract::field_manager::CONTROLLER);
        let later: Timestamp = "2026-02-01T00:00:00Z".parse().unwrap();
        let mut moved = allocated();
        moved.condition.as_mut().unwrap().message = "other".into();
        let p = service_patch(&ServiceKey::new("ns", "web"), &moved, &observed, later);
        assert_eq!(
            p["status"]["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        moved.condition.as_mut().unwrap().allocated = false;
        let p = service_patch(&ServiceKey::new("ns", "web"), &moved, &observed, later);
        assert_eq!(
            p["status"]["conditions"][0]["lastTransitionTime"],
            "2026-02-01T00:00:00Z"
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let s = "é".repeat(20_000);
        let t = shown_message(&s);
        assert!(t.len() <= MESSAGE_MAX && t.ends_with("..."));
    }
}
