//! What the state machine asks of the I/O layer (status writes and Events) and what it counts
//! for metrics (plain data).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::IpAddr;

use ferrolb_crds::contract::reason;

use crate::ipam::ServiceKey;
use crate::ipam::error::comma_separated;

/// Something for the I/O layer to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Server-side apply `body` to the Service's `/status`.
    ApplyService {
        /// Which Service.
        key: ServiceKey,
        /// The apply body, as JSON text (compact: a burst queues thousands).
        body: String,
    },
    /// Server-side apply `body` to the pool's `/status`.
    ApplyPool {
        /// Which pool.
        name: String,
        /// The apply body, as JSON text.
        body: String,
    },
    /// Record a Kubernetes Event about a Service.
    Event(ServiceEvent),
}

/// An Event about a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEvent {
    /// The Service.
    pub key: ServiceKey,
    /// Its UID.
    pub uid: String,
    /// Warning (true) or Normal.
    pub warning: bool,
    /// CamelCase reason: IPAllocated, IPReleased, AllocationFailed.
    pub reason: &'static str,
    /// What happened.
    pub note: String,
}

impl ServiceEvent {
    /// An Event about Service `key` (UID `uid`).
    pub fn new(
        key: &ServiceKey,
        uid: &str,
        warning: bool,
        reason: &'static str,
        note: String,
    ) -> ServiceEvent {
        ServiceEvent {
            key: key.clone(),
            uid: uid.to_string(),
            warning,
            reason,
            note,
        }
    }

    /// The Service released `ips` because of `why`.
    pub fn released(
        key: &ServiceKey,
        uid: &str,
        warning: bool,
        ips: &[IpAddr],
        why: impl Display,
    ) -> ServiceEvent {
        let note = format!("Released {}: {why}", comma_separated(ips));
        ServiceEvent::new(key, uid, warning, reason::IP_RELEASED, note)
    }
}

/// What an allocation step did, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// New assignments.
    pub allocated: u64,
    /// Failures by reason.
    pub failed: BTreeMap<&'static str, u64>,
}
