//! Visibility: who announces each Service's addresses, as a condition on the Service written by
//! the announcing speaker, plus an Event when it changes. Nothing is written in steady state: a
//! condition already showing the same thing is left alone.
//!
//! Every speaker applies with the same field manager, so a new owner's apply simply replaces the
//! old owner's condition. A speaker that loses an address writes nothing (the new owner, or the
//! group's reporter when nobody may announce, says what is true now).

use std::collections::BTreeMap;

use ferrolb_crds::contract::{condition, reason};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::eligibility::{Ineligible, Interfaces};
use crate::plan::{Decision, ServiceKey};

/// What the condition should say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// `True` (announced) or `False`.
    pub status: &'static str,
    /// `Announced` or `NotAnnounced`.
    pub reason: &'static str,
    /// Who announces what where, or why nobody does.
    pub message: String,
}

/// The conditions this speaker (`me`) is responsible for, given the plan's decisions:
/// the groups it owns, and the unowned groups it is the reporter of. `interfaces` resolves an
/// owned group's interface allowance to names on this node; `bgp` says which nodes announce the
/// group over BGP, if any (layer 2 and BGP both apply; the layer-2 owner, or the reporter when
/// no node answers ARP/NDP, tells both).
pub fn wanted<'a>(
    decisions: impl IntoIterator<Item = &'a Decision>,
    me: &str,
    interfaces: impl Fn(&Decision) -> Vec<String>,
    bgp: impl Fn(&Decision) -> Option<String>,
) -> BTreeMap<ServiceKey, Wanted> {
    let mut out = BTreeMap::new();
    for d in decisions {
        let ips: Vec<String> = d.group.ips.iter().map(|ip| ip.to_string()).collect();
        let wanted = match &d.owner {
            Ok((owner, allowed)) if owner == me => {
                let names = interfaces(d);
                if names.is_empty() {
                    // Elected, but nowhere to answer: say so rather than claim an announcement.
                    let allowed = match allowed {
                        Interfaces::All => "any".to_string(),
                        Interfaces::Only(set) => set.iter().cloned().collect::<Vec<_>>().join(", "),
                    };
                    Wanted {
                        status: "False",
                        reason: reason::NO_INTERFACE,
                        message: format!(
                            "{me} is elected for {} but answers on no interface: none it may use \
                             ({allowed}) is up and suitable here (check the L2Advertisement's \
                             spec.interfaces and the speaker's --exclude-interfaces)",
                            ips.join(", ")
                        ),
                    }
                } else {
                    let mut message =
                        format!("{me} announces {} on {}", ips.join(", "), names.join(", "));
                    if let Some(over_bgp) = bgp(d) {
                        message.push_str(&format!("; {over_bgp}"));
                    }
                    Wanted {
                        status: "True",
                        reason: reason::ANNOUNCED,
                        message,
                    }
                }
            }
            Err(no_owner) if d.reporter.as_deref() == Some(me) => {
                let layer2_unused = no_owner
                    .reasons
                    .values()
                    .all(|r| matches!(r, Ineligible::PoolNotAdvertised(_)));
                match bgp(d) {
                    Some(over_bgp) if layer2_unused => Wanted {
                        status: "True",
                        reason: reason::ANNOUNCED,
                        message: over_bgp,
                    },
                    Some(over_bgp) => Wanted {
                        status: "True",
                        reason: reason::ANNOUNCED,
                        message: format!("{over_bgp}; nobody answers ARP/NDP for them: {no_owner}"),
                    },
                    None if layer2_unused => Wanted {
                        status: "False",
                        reason: reason::NOT_ANNOUNCED,
                        message: format!(
                            "nobody announces {}: {no_owner}, and no BGPAdvertisement announces it from a node with a BGPPeer",
                            ips.join(", ")
                        ),
                    },
                    None => Wanted {
                        status: "False",
                        reason: reason::NOT_ANNOUNCED,
                        message: format!("nobody announces {}: {no_owner}", ips.join(", ")),
                    },
                }
            }
            _ => continue,
        };
        for key in &d.group.services {
            out.insert(key.clone(), wanted.clone());
        }
    }
    out
}

/// Whether the Service already shows `wanted`.
pub fn shows(svc: &Service, wanted: &Wanted) -> bool {
    observed(svc).is_some_and(|c| {
        c.status == wanted.status && c.reason == wanted.reason && c.message == wanted.message
    })
}

/// The speakers' condition on the Service, if any.
pub fn observed(svc: &Service) -> Option<&Condition> {
    ferrolb_crds::service_condition(svc, condition::ANNOUNCED)
}

/// The server-side apply body for the Service's status.
pub fn patch(namespace: &str, name: &str, wanted: &Wanted, now: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": namespace },
        "status": { "conditions": [{
            "type": condition::ANNOUNCED,
            "status": wanted.status,
            "reason": wanted.reason,
            "message": wanted.message,
            "lastTransitionTime": now,
        }]}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Group, NoOwner};

    fn key(namespaced: &str) -> ServiceKey {
        namespaced.parse().unwrap()
    }

    fn decision(owner: Result<&str, ()>, reporter: Option<&str>) -> Decision {
        Decision {
            group: Group {
                key: "198.51.100.200".parse().unwrap(),
                ips: [
                    "198.51.100.200".parse().unwrap(),
                    "2001:db8:1::200".parse().unwrap(),
                ]
                .into(),
                services: [key("ns/a"), key("ns/b")].into(),
            },
            owner: owner
                .map(|o| (o.to_string(), Interfaces::All))
                .map_err(|()| NoOwner {
                    reasons: [("node1".to_string(), Ineligible::NoLocalEndpoint)].into(),
                }),
            reporter: reporter.map(str::to_string),
        }
    }

    #[test]
    fn the_owner_reports_every_service_of_its_groups() {
        let w = wanted(
            &[decision(Ok("node2"), None)],
            "node2",
            |_| vec!["eth0".into()],
            |_| None,
        );
        assert_eq!(w.len(), 2);
        assert_eq!(
            w[&key("ns/a")].message,
            "node2 announces 198.51.100.200, 2001:db8:1::200 on eth0"
        );
        assert_eq!(w[&key("ns/a")].status, "True");
        // Others write nothing about it.
        assert!(
            wanted(
                &[decision(Ok("node2"), None)],
                "node1",
                |_| vec![],
                |_| None
            )
            .is_empty()
        );
    }

    #[test]
    fn an_owner_without_a_usable_interface_says_so() {
        let w = wanted(
            &[decision(Ok("node2"), None)],
            "node2",
            |_| vec![],
            |_| None,
        );
        assert_eq!(w[&key("ns/a")].status, "False");
        assert_eq!(w[&key("ns/a")].reason, reason::NO_INTERFACE);
        assert!(w[&key("ns/a")].message.starts_with(
            "node2 is elected for 198.51.100.200, 2001:db8:1::200 but answers on no interface"
        ));
    }

    #[test]
    fn only_the_reporter_says_why_nobody_announces() {
        let d = decision(Err(()), Some("node3"));
        assert!(wanted(std::slice::from_ref(&d), "node1", |_| vec![], |_| None).is_empty());
        let w = wanted(&[d], "node3", |_| vec![], |_| None);
        assert_eq!(w[&key("ns/b")].status, "False");
        assert!(w[&key("ns/b")].message.contains("no ready endpoint"));
    }

    #[test]
    fn a_matching_condition_is_not_rewritten() {
        let want = Wanted {
            status: "True",
            reason: reason::ANNOUNCED,
            message: "node2 announces 198.51.100.200 on eth0".into(),
        };
        let mut svc: Service =
            serde_json::from_value(patch("ns", "a", &want, "2026-11-22T00:00:00Z")).unwrap();
        assert!(shows(&svc, &want));
        let other = Wanted {
            message: "node3 announces 198.51.100.200 on eth0".into(),
            ..want.clone()
        };
        assert!(!shows(&svc, &other));
        svc.status = None;
        assert!(!shows(&svc, &want));
    }
}

#[cfg(test)]
mod bgp_tests {
    use super::*;
    use crate::plan::{Group, NoOwner};

    fn unowned(reason: Ineligible) -> Decision {
        Decision {
            group: Group {
                key: "198.51.100.200".parse().unwrap(),
                ips: ["198.51.100.200".parse().unwrap()].into(),
                services: ["ns/a".parse().unwrap()].into(),
            },
            owner: Err(NoOwner {
                reasons: [("node1".to_string(), reason)].into(),
            }),
            reporter: Some("node1".into()),
        }
    }

    fn bgp(d: &Decision) -> Option<String> {
        Some(format!(
            "node1, node2 announce {} over BGP to router",
            d.group.key
        ))
    }

    #[test]
    fn a_bgp_only_pool_is_reported_announced_by_its_bgp_nodes() {
        let d = unowned(Ineligible::PoolNotAdvertised("bgp".into()));
        let w = &wanted([&d], "node1", |_| vec![], bgp)[&"ns/a".parse::<ServiceKey>().unwrap()];
        assert_eq!((w.status, w.reason), ("True", reason::ANNOUNCED));
        assert_eq!(
            w.message,
            "node1, node2 announce 198.51.100.200 over BGP to router"
        );
        // Neither layer 2 nor BGP: both named.
        let w =
            &wanted([&d], "node1", |_| vec![], |_| None)[&"ns/a".parse::<ServiceKey>().unwrap()];
        assert_eq!(w.status, "False");
        assert!(
            w.message
                .ends_with("and no BGPAdvertisement announces it from a node with a BGPPeer"),
            "{}",
            w.message
        );
    }

    #[test]
    fn layer_2_and_bgp_together_name_both() {
        let d = unowned(Ineligible::NoLocalEndpoint);
        let w = &wanted([&d], "node1", |_| vec![], bgp)[&"ns/a".parse::<ServiceKey>().unwrap()];
        assert_eq!(w.status, "True");
        assert!(
            w.message.contains("; nobody answers ARP/NDP for them: "),
            "{}",
            w.message
        );
    }
}
