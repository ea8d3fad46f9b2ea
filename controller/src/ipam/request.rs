//! What a Service asks of the allocator, read from its spec and annotations (pure).
//!
//! [`read_service`] decides whether ferrolb handles a Service at all and, if so, turns it into a
//! [`Request`]: the families it needs, the addresses and pool it asks for, its sharing key, ports
//! and backends. Malformed requests become a [`RequestError`] that names the field or annotation.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ferrolb_crds::Family;
use ferrolb_crds::contract::annotation::{
    ADDRESS_POOL_SUFFIX, ALLOW_SHARED_IP_SUFFIX, LOAD_BALANCER_IPS_SUFFIX, REQUEST_PREFIXES,
};
use k8s_openapi::api::core::v1::Service;

use super::error::comma_separated;

pub use ferrolb_crds::ServiceKey;

/// `spec.ipFamilyPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyPolicy {
    /// One address, of the first family.
    SingleStack,
    /// Both families from one pool when possible, else the first.
    PreferDualStack,
    /// Both families from one pool, or nothing.
    RequireDualStack,
}

/// A port as sharing sees it: number and protocol.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    /// `spec.ports[].port`.
    pub port: i32,
    /// `spec.ports[].protocol` (TCP when unset).
    pub protocol: String,
}

impl Port {
    /// TCP port `port`.
    pub fn tcp(port: i32) -> Port {
        Port {
            port,
            protocol: "TCP".into(),
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// Where traffic to the Service goes, which Services sharing an address must agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backends {
    /// `externalTrafficPolicy: Cluster`: any node forwards.
    Cluster,
    /// `externalTrafficPolicy: Local` with this Pod selector: only nodes with endpoints forward.
    Local(BTreeMap<String, String>),
}

/// What a handled Service asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Families needed, primary first (`spec.ipFamilies`; one entry for SingleStack).
    pub families: Vec<Family>,
    /// `spec.ipFamilyPolicy`.
    pub policy: FamilyPolicy,
    /// Requested addresses, at most one per family.
    pub requested: Vec<IpAddr>,
    /// Requested pool.
    pub pool: Option<String>,
    /// Sharing key.
    pub sharing_key: Option<String>,
    /// Ports, for sharing.
    pub ports: Vec<Port>,
    /// Backends, for sharing.
    pub backends: Backends,
    /// The Service's labels (pool `serviceSelectors`).
    pub labels: BTreeMap<String, String>,
}

impl Request {
    /// A Service of `families` under `policy` asking for nothing else: no address, pool or
    /// sharing key, no ports, `externalTrafficPolicy: Cluster`, no labels.
    pub fn new(families: Vec<Family>, policy: FamilyPolicy) -> Request {
        Request {
            families,
            policy,
            requested: Vec::new(),
            pool: None,
            sharing_key: None,
            ports: Vec::new(),
            backends: Backends::Cluster,
            labels: BTreeMap::new(),
        }
    }

    /// The requested address of `family`, if any.
    pub fn requested_of(&self, family: Family) -> Option<IpAddr> {
        self.requested
            .iter()
            .copied()
            .find(|ip| Family::of(*ip) == family)
    }
}

/// Why ferrolb leaves a Service alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotHandled {
    /// `spec.type` is not LoadBalancer.
    NotLoadBalancer,
    /// Headless or not yet given a cluster IP.
    NoClusterIp,
    /// `spec.loadBalancerClass` is another implementation's.
    OtherClass,
}

/// Whether and how ferrolb handles a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handling {
    /// Not ours; any address ferrolb gave it earlier must go.
    NotHandled(NotHandled),
    /// Ours, with a well-formed request or an error naming what is malformed.
    Handled(Result<Request, RequestError>),
}

/// A malformed request. Messages name the field or annotation and the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Two spellings of one annotation with different values.
    #[error("annotations {first}={first_value:?} and {second}={second_value:?} disagree; keep one")]
    ConflictingSpellings {
        /// First annotation name.
        first: String,
        /// Its value.
        first_value: String,
        /// Second annotation name.
        second: String,
        /// Its value.
        second_value: String,
    },
    /// Both `spec.loadBalancerIP` and the annotation.
    #[error(
        "spec.loadBalancerIP ({field}) and annotation {annotation} ({value}) are both set; keep only the annotation"
    )]
    BothForms {
        /// `spec.loadBalancerIP`.
        field: String,
        /// Annotation name.
        annotation: String,
        /// Its value.
        value: String,
    },
    /// An entry that is not an IP address.
    #[error("{source_name}: {value:?} is not an IP address")]
    NotAnIp {
        /// Field or annotation name.
        source_name: String,
        /// The entry.
        value: String,
    },
    /// Two addresses of one family.
    #[error(
        "{source_name} lists two {family} addresses ({first}, {second}); give at most one per family"
    )]
    TwoOfFamily {
        /// Field or annotation name.
        source_name: String,
        /// The family.
        family: Family,
        /// First address.
        first: IpAddr,
        /// Second address.
        second: IpAddr,
    },
    /// A requested address of a family the Service does not have.
    #[error("{source_name} requests {ip}, an {family} address, but spec.ipFamilies is {families}")]
    FamilyNotInService {
        /// Field or annotation name.
        source_name: String,
        /// The address.
        ip: IpAddr,
        /// Its family.
        family: Family,
        /// The Service's families, as written.
        families: String,
    },
    /// An annotation with an empty value.
    #[error("annotation {0} is empty; remove it or give a value")]
    Empty(String),
}

/// Reads a Service: whether ferrolb handles it (for `lb_class`: `None` handles only Services
/// without `spec.loadBalancerClass`) and what it requests.
pub fn read_service(svc: &Service, lb_class: Option<&str>) -> Handling {
    let Some(spec) = svc.spec.as_ref() else {
        return Handling::NotHandled(NotHandled::NotLoadBalancer);
    };
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return Handling::NotHandled(NotHandled::NotLoadBalancer);
    }
    if spec.load_balancer_class.as_deref() != lb_class {
        return Handling::NotHandled(NotHandled::OtherClass);
    }
    match spec.cluster_ip.as_deref() {
        None | Some("") | Some("None") => return Handling::NotHandled(NotHandled::NoClusterIp),
        Some(_) => {}
    }
    Handling::Handled(read_request(svc))
}

fn read_request(svc: &Service) -> Result<Request, RequestError> {
    let spec = svc.spec.as_ref().expect("checked by read_service");
    let empty = BTreeMap::new();
    let annotations = svc.metadata.annotations.as_ref().unwrap_or(&empty);

    let mut all_families: Vec<Family> = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        })
        .collect();
    if all_families.is_empty() {
        // Not yet defaulted by the apiserver: infer from the cluster IP.
        let ip = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok());
        all_families.push(ip.map_or(Family::V4, Family::of));
    }
    let policy = match spec.ip_family_policy.as_deref() {
        Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
        _ => FamilyPolicy::SingleStack,
    };
    let families = match policy {
        FamilyPolicy::SingleStack => all_families[..1].to_vec(),
        _ => all_families,
    };

    let requested = requested_ips(spec.load_balancer_ip.as_deref(), annotations, &families)?;
    let pool = annotation(annotations, ADDRESS_POOL_SUFFIX)?;
    let sharing_key = annotation(annotations, ALLOW_SHARED_IP_SUFFIX)?;
    let mut ports: Vec<Port> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| Port {
            port: p.port,
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        })
        .collect();
    ports.sort();
    let backends = match spec.external_traffic_policy.as_deref() {
        Some("Local") => Backends::Local(spec.selector.clone().unwrap_or_default()),
        _ => Backends::Cluster,
    };
    Ok(Request {
        families,
        policy,
        requested,
        pool,
        sharing_key,
        ports,
        backends,
        labels: svc.metadata.labels.clone().unwrap_or_default(),
    })
}

/// The value of annotation `suffix` under any accepted prefix; spellings must agree.
fn annotation(
    annotations: &BTreeMap<String, String>,
    suffix: &str,
) -> Result<Option<String>, RequestError> {
    Ok(annotation_entry(annotations, suffix)?.map(|(_, v)| v))
}

fn annotation_entry(
    annotations: &BTreeMap<String, String>,
    suffix: &str,
) -> Result<Option<(String, String)>, RequestError> {
    let mut found: Option<(String, String)> = None;
    for prefix in REQUEST_PREFIXES {
        let name = format!("{prefix}{suffix}");
        let Some(value) = annotations.get(&name) else {
            continue;
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(RequestError::Empty(name));
        }
        match &found {
            Some((first, first_value)) if *first_value != value => {
                return Err(RequestError::ConflictingSpellings {
                    first: first.clone(),
                    first_value: first_value.clone(),
                    second: name,
                    second_value: value,
                });
            }
            Some(_) => {}
            None => found = Some((name, value)),
        }
    }
    Ok(found)
}

fn requested_ips(
    field: Option<&str>,
    annotations: &BTreeMap<String, String>,
    families: &[Family],
) -> Result<Vec<IpAddr>, RequestError> {
    let field = field.map(str::trim).filter(|f| !f.is_empty());
    let annotated = annotation_entry(annotations, LOAD_BALANCER_IPS_SUFFIX)?;
    let (source_name, text) = match (field, annotated) {
        (Some(field), Some((annotation, value))) => {
            return Err(RequestError::BothForms {
                field: field.into(),
                annotation,
                value,
            });
        }
        (Some(field), None) => ("spec.loadBalancerIP".to_string(), field.to_string()),
        (None, Some((annotation, value))) => (format!("annotation {annotation}"), value),
        (None, None) => return Ok(Vec::new()),
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let ip: IpAddr = entry.parse().map_err(|_| RequestError::NotAnIp {
            source_name: source_name.clone(),
            value: entry.into(),
        })?;
        let family = Family::of(ip);
        if let Some(first) = ips.iter().find(|i| Family::of(**i) == family) {
            return Err(RequestError::TwoOfFamily {
                source_name,
                family,
                first: *first,
                second: ip,
            });
        }
        if !families.contains(&family) {
            return Err(RequestError::FamilyNotInService {
                source_name,
                ip,
                family,
                families: format!("[{}]", comma_separated(families)),
            });
        }
        ips.push(ip);
    }
    // Primary family first, as in the Service's ingress list.
    ips.sort_by_key(|ip| families.iter().position(|f| *f == Family::of(*ip)));
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::contract::annotation::{ADDRESS_POOL, ALLOW_SHARED_IP, LOAD_BALANCER_IPS};
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use kube::api::ObjectMeta;

    fn svc(edit: impl FnOnce(&mut ServiceSpec, &mut BTreeMap<String, String>)) -> Service {
        let mut spec = ServiceSpec {
            type_: Some("LoadBalancer".into()),
            cluster_ip: Some("198.18.0.10".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let mut annotations = BTreeMap::new();
        edit(&mut spec, &mut annotations);
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    /// The request of a Service with `annotations` (and nothing else unusual).
    fn annotated(annotations: &[(&str, &str)]) -> Result<Request, RequestError> {
        request(&svc(|_, a| {
            for (name, value) in annotations {
                a.insert(name.to_string(), value.to_string());
            }
        }))
    }

    fn request(s: &Service) -> Result<Request, RequestError> {
        match read_service(s, None) {
            Handling::Handled(r) => r,
            other => panic!("not handled: {other:?}"),
        }
    }

    #[test]
    fn only_load_balancers_with_a_cluster_ip_and_our_class_are_handled() {
        let cluster_ip = svc(|s, _| s.type_ = Some("ClusterIP".into()));
        assert_eq!(
            read_service(&cluster_ip, None),
            Handling::NotHandled(NotHandled::NotLoadBalancer)
        );
        let headless = svc(|s, _| s.cluster_ip = Some("None".into()));
        assert_eq!(
            read_service(&headless, None),
            Handling::NotHandled(NotHandled::NoClusterIp)
        );
        let classed = svc(|s, _| s.load_balancer_class = Some("example.com/lb".into()));
        assert_eq!(
            read_service(&classed, None),
            Handling::NotHandled(NotHandled::OtherClass)
        );
        assert!(matches!(
            read_service(&classed, Some("example.com/lb")),
            Handling::Handled(Ok(_))
        ));
        assert_eq!(
            read_service(&svc(|_, _| {}), Some("example.com/lb")),
            Handling::NotHandled(NotHandled::OtherClass)
        );
    }

    #[test]
    fn families_follow_policy() {
        let single = request(&svc(|s, _| {
            s.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
        }))
        .unwrap();
        assert_eq!(single.families, vec![Family::V6]);
        assert_eq!(single.policy, FamilyPolicy::SingleStack);
        let dual = request(&svc(|s, _| {
            s.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
            s.ip_family_policy = Some("RequireDualStack".into());
        }))
        .unwrap();
        assert_eq!(dual.families, vec![Family::V6, Family::V4]);
        assert_eq!(dual.policy, FamilyPolicy::RequireDualStack);
        let undefaulted = request(&svc(|s, _| {
            s.ip_families = None;
            s.cluster_ip = Some("2001:db8:ffff::5".into());
        }))
        .unwrap();
        assert_eq!(undefaulted.families, vec![Family::V6]);
    }

    #[test]
    fn requested_addresses_from_field_or_any_annotation_spelling() {
        let field = request(&svc(|s, _| s.load_balancer_ip = Some("203.0.113.5".into()))).unwrap();
        assert_eq!(
            field.requested,
            vec!["203.0.113.5".parse::<IpAddr>().unwrap()]
        );
        for prefix in REQUEST_PREFIXES {
            let r = request(&svc(|s, a| {
                s.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
                s.ip_family_policy = Some("PreferDualStack".into());
                a.insert(
                    format!("{prefix}{LOAD_BALANCER_IPS_SUFFIX}"),
                    "2001:db8::5, 203.0.113.5".into(),
                );
            }))
            .unwrap();
            assert_eq!(
                r.requested,
                vec![
                    "203.0.113.5".parse::<IpAddr>().unwrap(),
                    "2001:db8::5".parse().unwrap()
                ],
                "{prefix}"
            );
        }
    }

    #[test]
    fn malformed_requests_name_the_annotation_and_value() {
        let both = request(&svc(|s, a| {
            s.load_balancer_ip = Some("203.0.113.5".into());
            a.insert(LOAD_BALANCER_IPS.into(), "203.0.113.6".into());
        }))
        .unwrap_err();
        assert_eq!(
            both.to_string(),
            format!(
                "spec.loadBalancerIP (203.0.113.5) and annotation {LOAD_BALANCER_IPS} (203.0.113.6) are both set; keep only the annotation"
            )
        );
        let garbage = annotated(&[("metallb.io/loadBalancerIPs", "203.0.113.5,nope")]).unwrap_err();
        assert_eq!(
            garbage.to_string(),
            "annotation metallb.io/loadBalancerIPs: \"nope\" is not an IP address"
        );
        let two = annotated(&[(LOAD_BALANCER_IPS, "203.0.113.5,203.0.113.6")]).unwrap_err();
        assert!(matches!(
            two,
            RequestError::TwoOfFamily {
                family: Family::V4,
                ..
            }
        ));
        assert!(two.to_string().contains("at most one per family"));
        let wrong_family = annotated(&[(LOAD_BALANCER_IPS, "2001:db8::5")]).unwrap_err();
        assert_eq!(
            wrong_family.to_string(),
            format!(
                "annotation {LOAD_BALANCER_IPS} requests 2001:db8::5, an IPv6 address, but spec.ipFamilies is [IPv4]"
            )
        );
        let disagree = annotated(&[
            (ADDRESS_POOL, "a"),
            ("metallb.universe.tf/address-pool", "b"),
        ])
        .unwrap_err();
        assert!(matches!(
            disagree,
            RequestError::ConflictingSpellings { .. }
        ));
        let agree = annotated(&[(ADDRESS_POOL, "a"), ("metallb.io/address-pool", " a ")]).unwrap();
        assert_eq!(agree.pool.as_deref(), Some("a"));
        let empty = annotated(&[(ALLOW_SHARED_IP, " ")]).unwrap_err();
        assert_eq!(empty, RequestError::Empty(ALLOW_SHARED_IP.into()));
    }

    #[test]
    fn sharing_inputs_ports_and_backends() {
        let r = request(&svc(|s, a| {
            a.insert("metallb.universe.tf/allow-shared-ip".into(), "k".into());
            s.ports = Some(vec![
                ServicePort {
                    port: 53,
                    protocol: Some("UDP".into()),
                    ..Default::default()
                },
                ServicePort {
                    port: 53,
                    ..Default::default()
                },
            ]);
            s.external_traffic_policy = Some("Local".into());
            s.selector = Some(BTreeMap::from([("app".into(), "dns".into())]));
        }))
        .unwrap();
        assert_eq!(r.sharing_key.as_deref(), Some("k"));
        assert_eq!(
            r.ports.iter().map(Port::to_string).collect::<Vec<_>>(),
            ["53/TCP", "53/UDP"]
        );
        assert_eq!(
            r.backends,
            Backends::Local(BTreeMap::from([("app".into(), "dns".into())]))
        );
    }
}
