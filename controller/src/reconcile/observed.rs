//! What a Service's object shows of the controller's part, kept compactly (pure).
//!
//! The state machine keeps one [`Observed`] per Service for as long as the Service exists, so at
//! 100,000 Services every byte counts 100,000 times. It keeps the addresses (they are needed to
//! reclaim them after a restart) and, of the pool annotation and the condition, only what the
//! controller compares: whether they are there, the condition's status and since when, and a
//! keyed 64-bit digest of the texts. Comparing digests instead of strings can only go wrong on a
//! collision of SipHash under a key drawn at start-up, which nobody outside the process knows
//! (odds about 2^-64 per comparison, and a wrong "converged" would last until the next change).

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::LazyLock;

use ferrolb_crds::contract;
use ferrolb_crds::contract::annotation::ALLOCATED_FROM_POOL;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::desired::{ServiceState, shown_message};
use crate::ipam::Ips;

/// The key of every digest: drawn once per process.
static DIGEST_KEY: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// A keyed digest of `parts`, each ended by a byte UTF-8 text never holds (so `("ab", "c")` and
/// `("a", "bc")` differ).
fn digest(parts: &[&str]) -> u64 {
    let mut h = DIGEST_KEY.build_hasher();
    for part in parts {
        h.write(part.as_bytes());
        h.write_u8(0xff);
    }
    h.finish()
}

/// The controller's condition as an object shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShownCondition {
    /// `status: "True"`.
    pub allocated: bool,
    /// Digest of reason and message.
    digest: u64,
}

impl ShownCondition {
    /// How an object shows a condition with these fields (the message as written: long ones
    /// are cut, see [`shown_message`]).
    pub fn of(allocated: bool, reason: &str, message: &str) -> ShownCondition {
        ShownCondition {
            allocated,
            digest: digest(&[reason, &shown_message(message)]),
        }
    }
}

/// What a Service's object shows of the controller's part.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Well-formed VIP-mode ingress addresses.
    pub ips: Ips,
    /// Digest of the `ip-allocated-from-pool` annotation, when present.
    pool: Option<u64>,
    /// The condition, when present.
    pub condition: Option<ShownCondition>,
    /// Ingress entries that are not a plain VIP address (hostname, other ipMode, garbage).
    pub foreign_ingress: bool,
    /// `lastTransitionTime` of the observed condition.
    pub condition_since: Option<Time>,
    /// Whether the controller's field manager owns fields of the status.
    pub managed: bool,
    /// `metadata.resourceVersion`, when numeric.
    pub resource_version: Option<u64>,
}

impl Observed {
    /// Reads the part of a Service the controller writing as `manager` owns.
    pub fn of(svc: &Service, manager: &str) -> Observed {
        let mut observed = Observed::default();
        let status = svc.status.as_ref();
        for ingress in status
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
        {
            match ingress.ip.as_deref().map(str::parse::<IpAddr>) {
                Some(Ok(ip))
                    if ingress.hostname.is_none()
                        && ingress.ip_mode.as_deref() == Some("VIP")
                        && ingress.ports.is_none() =>
                {
                    observed.ips.push(ip)
                }
                _ => observed.foreign_ingress = true,
            }
        }
        observed.pool = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ALLOCATED_FROM_POOL))
            .map(|pool| digest(&[pool]));
        if let Some(c) = ferrolb_crds::service_condition(svc, contract::condition::IP_ALLOCATED) {
            observed.condition = Some(ShownCondition {
                allocated: c.status == "True",
                digest: digest(&[&c.reason, &c.message]),
            });
            observed.condition_since = Some(c.last_transition_time.clone());
        }
        observed.managed = svc
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some(manager));
        observed.resource_version = svc
            .metadata
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse().ok());
        observed
    }

    /// Whether the object already shows `desired`.
    pub fn shows(&self, desired: &ServiceState) -> bool {
        !self.foreign_ingress
            && *self.ips == *desired.ips
            && self.pool == desired.pool.as_deref().map(|p| digest(&[p]))
            && self.condition
                == desired
                    .condition
                    .as_ref()
                    .map(|c| ShownCondition::of(c.allocated, &c.reason, &c.message))
    }

    /// Whether it shows nothing of the controller's: no address, annotation or condition.
    pub fn shows_nothing(&self) -> bool {
        self.ips.is_empty() && self.pool.is_none() && self.condition.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::desired::tests::{allocated, service_showing};
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
    use std::collections::BTreeMap;

    #[test]
    fn a_written_state_reads_back_as_converged_and_any_difference_is_seen() {
        let svc = service_showing(&allocated(), "2026-01-01T00:00:00Z");
        let observed = Observed::of(&svc, contract::field_manager::CONTROLLER);
        assert!(observed.shows(&allocated()));
        assert!(observed.managed && !observed.shows_nothing());
        assert_eq!(observed.resource_version, Some(42));
        assert!(!observed.shows(&ServiceState::default()));

        let mut other = allocated();
        other.ips = vec!["203.0.113.6".parse().unwrap()];
        assert!(!observed.shows(&other), "addresses differ");
        let mut other = allocated();
        other.pool = Some("q".into());
        assert!(!observed.shows(&other), "pool differs");
        other.pool = None;
        assert!(!observed.shows(&other), "pool missing");
        for change in 0..3 {
            let mut other = allocated();
            let c = other.condition.as_mut().unwrap();
            match change {
                0 => c.allocated = false,
                1 => c.reason = "Other".into(),
                _ => c.message.push('.'),
            }
            assert!(!observed.shows(&other), "condition change {change}");
        }
        let mut other = allocated();
        other.condition = None;
        assert!(!observed.shows(&other), "condition missing");
    }

    #[test]
    fn texts_are_digested_with_their_boundaries() {
        let a = ShownCondition::of(false, "ab", "c");
        let b = ShownCondition::of(false, "a", "bc");
        assert_ne!(a, b);
        assert_eq!(a, ShownCondition::of(false, "ab", "c"));
    }

    #[test]
    fn an_overlong_message_converges_once_written_cut() {
        let mut long = allocated();
        long.condition.as_mut().unwrap().message = "x".repeat(40_000);
        let svc = service_showing(&long, "2026-01-01T00:00:00Z");
        let observed = Observed::of(&svc, contract::field_manager::CONTROLLER);
        assert!(observed.shows(&long));
    }

    #[test]
    fn an_empty_status_shows_nothing() {
        let svc = service_showing(&ServiceState::default(), "2026-01-01T00:00:00Z");
        let observed = Observed::of(&svc, contract::field_manager::CONTROLLER);
        assert!(observed.shows_nothing());
        assert!(observed.shows(&ServiceState::default()));
    }

    #[test]
    fn foreign_ingress_is_not_converged() {
        let mut svc = service_showing(&allocated(), "2026-01-01T00:00:00Z");
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    hostname: Some("lb.example.com".into()),
                    ..Default::default()
                }]),
            }),
            conditions: None,
        });
        svc.metadata.annotations = Some(BTreeMap::new());
        let observed = Observed::of(&svc, contract::field_manager::CONTROLLER);
        assert!(observed.foreign_ingress);
        assert!(!observed.shows(&ServiceState::default()));
    }
}
