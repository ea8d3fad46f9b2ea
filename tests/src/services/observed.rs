//! The controller's part of a Service as the apiserver returns it ([`Observed`]), and the
//! invariants over many: who may share an address ([`Sharing`], [`invalid_sharing`]) and which
//! addresses are held.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::{Context, Result};
use ferrolb_crds::contract::annotation::{ALLOCATED_FROM_POOL, ALLOW_SHARED_IP};
use ferrolb_crds::contract::{condition, reason};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

/// Who may share an address with whom: the Service's sharing inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sharing {
    /// `ferrolb.io/allow-shared-ip`.
    pub key: Option<String>,
    /// `(port, protocol)` pairs.
    pub ports: BTreeSet<(i32, String)>,
    /// `None` for `externalTrafficPolicy: Cluster`, else the selector (Local).
    pub local_selector: Option<BTreeMap<String, String>>,
}

impl Sharing {
    /// Whether two Services may hold the same address: same key, same backends, no port and
    /// protocol in common.
    pub fn compatible(&self, other: &Sharing) -> bool {
        self.key.is_some()
            && self.key == other.key
            && self.local_selector == other.local_selector
            && self.ports.is_disjoint(&other.ports)
    }
}

/// The controller's part of a Service, as the apiserver returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `metadata.name`.
    pub name: String,
    /// `status.loadBalancer.ingress[].ip`.
    pub ips: Vec<IpAddr>,
    /// Whether every ingress entry has `ipMode: VIP`.
    pub vip_mode: bool,
    /// The [`condition::IP_ALLOCATED`] condition: `(status, reason, message)`.
    pub condition: Option<(String, String, String)>,
    /// The [`ALLOCATED_FROM_POOL`] annotation.
    pub pool: Option<String>,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `metadata.creationTimestamp`, in seconds.
    pub created: i64,
    /// Sharing inputs.
    pub sharing: Sharing,
}

impl Observed {
    /// Reads `svc`.
    pub fn of(svc: &Service) -> Observed {
        let status = svc.status.as_ref();
        let ingress = status
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.clone())
            .unwrap_or_default();
        let ips = ingress
            .iter()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        let vip_mode = ingress.iter().all(|i| i.ip_mode.as_deref() == Some("VIP"));
        let condition = ferrolb_crds::service_condition(svc, condition::IP_ALLOCATED)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
        let spec = svc.spec.clone().unwrap_or_default();
        let ports = spec
            .ports
            .iter()
            .flatten()
            .map(|p| (p.port, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
            .collect();
        let local_selector = (spec.external_traffic_policy.as_deref() == Some("Local"))
            .then(|| spec.selector.clone().unwrap_or_default());
        Observed {
            name: svc.name_any(),
            ips,
            vip_mode,
            condition,
            pool: svc.annotations().get(ALLOCATED_FROM_POOL).cloned(),
            resource_version: svc.resource_version().unwrap_or_default(),
            created: svc
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()),
            sharing: Sharing {
                key: svc.annotations().get(ALLOW_SHARED_IP).cloned(),
                ports,
                local_selector,
            },
        }
    }

    /// The condition's reason, when there is a condition.
    pub fn reason(&self) -> Option<&str> {
        self.condition
            .as_ref()
            .map(|(_, reason, _)| reason.as_str())
    }

    /// Whether the Service shows one address, allocated from `pool`, as the controller writes it.
    pub fn allocated_from(&self, pool: &str) -> bool {
        self.ips.len() == 1
            && self.vip_mode
            && self.pool.as_deref() == Some(pool)
            && self
                .condition
                .as_ref()
                .is_some_and(|(status, reason, _)| status == "True" && reason == reason::ALLOCATED)
    }

    /// Whether the Service shows no address and a condition saying the pools are exhausted.
    pub fn waits_for_exhausted_pool(&self) -> bool {
        self.ips.is_empty()
            && self.condition.as_ref().is_some_and(|(status, reason, _)| {
                status == "False" && reason == reason::POOL_EXHAUSTED
            })
    }

    /// One line for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} ips={:?} pool={:?} condition={:?} key={:?} ports={:?} local={:?}",
            self.name,
            self.ips,
            self.pool,
            self.condition,
            self.sharing.key,
            self.sharing.ports,
            self.sharing.local_selector
        )
    }
}

/// Every Service of `api` (one namespace), by name.
pub async fn observe(api: &Api<Service>) -> Result<BTreeMap<String, Observed>> {
    let list = api
        .list(&ListParams::default())
        .await
        .context("listing Services")?;
    Ok(list
        .items
        .iter()
        .map(|s| (s.name_any(), Observed::of(s)))
        .collect())
}

/// Addresses held by Services that may not share them, one line each. Users of one address must
/// all have the same sharing key, the same backends and pairwise disjoint ports.
pub fn invalid_sharing<'a>(services: impl IntoIterator<Item = &'a Observed>) -> Vec<String> {
    let mut by_ip: BTreeMap<IpAddr, Vec<&Observed>> = BTreeMap::new();
    for s in services {
        for ip in &s.ips {
            by_ip.entry(*ip).or_default().push(s);
        }
    }
    let mut bad = Vec::new();
    for (ip, users) in by_ip {
        for (i, a) in users.iter().enumerate() {
            for b in &users[i + 1..] {
                if !a.sharing.compatible(&b.sharing) {
                    bad.push(format!(
                        "{ip} is held by both {} and {}, which may not share",
                        a.describe(),
                        b.describe()
                    ));
                }
            }
        }
    }
    bad
}

/// Distinct addresses the Services hold.
pub fn held_ips<'a>(services: impl IntoIterator<Item = &'a Observed>) -> BTreeSet<IpAddr> {
    services
        .into_iter()
        .flat_map(|s| s.ips.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharing(key: Option<&str>, ports: &[(i32, &str)], local: Option<&str>) -> Sharing {
        Sharing {
            key: key.map(Into::into),
            ports: ports.iter().map(|(p, pr)| (*p, pr.to_string())).collect(),
            local_selector: local.map(|app| BTreeMap::from([("app".into(), app.into())])),
        }
    }

    #[test]
    fn sharing_needs_key_backends_and_disjoint_ports() {
        let web80 = sharing(Some("web"), &[(80, "TCP")], None);
        assert!(web80.compatible(&sharing(Some("web"), &[(443, "TCP")], None)));
        assert!(web80.compatible(&sharing(Some("web"), &[(80, "UDP")], None)));
        assert!(!web80.compatible(&sharing(Some("web"), &[(80, "TCP")], None)));
        assert!(!web80.compatible(&sharing(Some("dns"), &[(53, "UDP")], None)));
        assert!(!web80.compatible(&sharing(None, &[(443, "TCP")], None)));
        assert!(!sharing(None, &[(80, "TCP")], None).compatible(&sharing(
            None,
            &[(81, "TCP")],
            None
        )));
        let local_a = sharing(Some("l"), &[(80, "TCP")], Some("a"));
        assert!(local_a.compatible(&sharing(Some("l"), &[(81, "TCP")], Some("a"))));
        assert!(!local_a.compatible(&sharing(Some("l"), &[(81, "TCP")], Some("b"))));
        assert!(!local_a.compatible(&sharing(Some("l"), &[(81, "TCP")], None)));
    }

    #[test]
    fn invalid_sharing_names_the_address_and_both_services() {
        let svc = |name: &str, ip: &str, key: Option<&str>, port: i32| Observed {
            name: name.into(),
            ips: vec![ip.parse().unwrap()],
            vip_mode: true,
            condition: None,
            pool: None,
            resource_version: "1".into(),
            created: 0,
            sharing: sharing(key, &[(port, "TCP")], None),
        };
        let ok = [
            svc("a", "198.19.0.1", Some("k"), 80),
            svc("b", "198.19.0.1", Some("k"), 443),
        ];
        assert!(invalid_sharing(&ok).is_empty());
        let bad = [
            svc("a", "198.19.0.1", Some("k"), 80),
            svc("b", "198.19.0.1", Some("k"), 80),
            svc("c", "198.19.0.2", None, 80),
        ];
        let found = invalid_sharing(&bad);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("198.19.0.1 is held by both a "),
            "{found:?}"
        );
        assert_eq!(held_ips(&bad).len(), 2);
    }
}
