//! What a Service asks of the allocator, read from its spec and annotations (pure).
//!
//! [`read_service`] decides whether ferrolb handles a Service at all and, if so, turns it into a
//! [`Request`]: the families it needs, the addresses and pool it asks for, its sharing key, ports
//! and backends. Malformed requests become a [`RequestError`] that names the field or annotation.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_crds::Family;
use ferrolb_crds::contract::annotation::{
    ADDRESS_POOL_SUFFIX, ALLOW_SHARED_IP_SUFFIX, LOAD_BALANCER_IPS_SUFFIX,
    POOL_LOAD_BALANCER_CLASS, REQUEST_PREFIXES,
};
use k8s_openapi::api::core::v1::Service;
use smallvec::SmallVec;

use super::error::comma_separated;

mod error;
mod families;
#[cfg(test)]
mod tests;
pub(crate) mod text;

pub use error::RequestError;
pub use families::Families;

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

/// `spec.ports[].protocol`: the three Kubernetes accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (also when unset).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Reads a protocol as the API spells it.
    pub fn parse(text: &str) -> Option<Protocol> {
        match text {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// A port as sharing sees it: number and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    /// `spec.ports[].port`.
    pub port: i32,
    /// `spec.ports[].protocol`.
    pub protocol: Protocol,
}

impl Port {
    /// TCP port `port`.
    pub fn tcp(port: i32) -> Port {
        Port {
            port,
            protocol: Protocol::Tcp,
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
    pub families: Families,
    /// `spec.ipFamilyPolicy`.
    pub policy: FamilyPolicy,
    /// Requested addresses, at most one per family.
    pub requested: Vec<IpAddr>,
    /// Requested pool (the state machine shares one copy of each name).
    pub pool: Option<Arc<str>>,
    /// Sharing key.
    pub sharing_key: Option<String>,
    /// Ports, for sharing (inline: most Services have one or two).
    pub ports: SmallVec<[Port; 2]>,
    /// Backends, for sharing.
    pub backends: Backends,
    /// The Service's labels (pool `serviceSelectors`).
    pub labels: BTreeMap<String, String>,
}

impl Request {
    /// A Service of `families` under `policy` asking for nothing else: no address, pool or
    /// sharing key, no ports, `externalTrafficPolicy: Cluster`, no labels.
    pub fn new(families: impl Into<Families>, policy: FamilyPolicy) -> Request {
        Request {
            families: families.into(),
            policy,
            requested: Vec::new(),
            pool: None,
            sharing_key: None,
            ports: SmallVec::new(),
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
    let families: Families = match policy {
        FamilyPolicy::SingleStack => all_families[..1].iter().copied().collect(),
        _ => all_families.into(),
    };

    let requested = requested_ips(spec.load_balancer_ip.as_deref(), annotations, &families)?;
    let pool = pool_annotation(annotations)?;
    let sharing_key = annotation(annotations, ALLOW_SHARED_IP_SUFFIX)?;
    let mut ports = spec
        .ports
        .iter()
        .flatten()
        .enumerate()
        .map(|(index, p)| {
            let text = p.protocol.as_deref().unwrap_or("TCP");
            let protocol = Protocol::parse(text).ok_or_else(|| RequestError::UnknownProtocol {
                index,
                value: text.to_string(),
            })?;
            Ok(Port {
                port: p.port,
                protocol,
            })
        })
        .collect::<Result<SmallVec<[Port; 2]>, RequestError>>()?;
    ports.sort();
    ports.shrink_to_fit();
    let backends = match spec.external_traffic_policy.as_deref() {
        Some("Local") => Backends::Local(spec.selector.clone().unwrap_or_default()),
        _ => Backends::Cluster,
    };
    Ok(Request {
        families,
        policy,
        requested,
        pool: pool.map(Arc::from),
        sharing_key,
        ports,
        backends,
        labels: svc.metadata.labels.clone().unwrap_or_default(),
    })
}

/// The value of annotation `suffix` under any accepted prefix, checked by the text rules for a
/// single value; spellings must agree.
fn annotation(
    annotations: &BTreeMap<String, String>,
    suffix: &str,
) -> Result<Option<String>, RequestError> {
    Ok(checked_annotation(annotations, suffix)?.map(|(_, value)| value))
}

/// [`annotation`] with the source it came from (`annotation <name>`), for messages.
fn checked_annotation(
    annotations: &BTreeMap<String, String>,
    suffix: &str,
) -> Result<Option<(String, String)>, RequestError> {
    let Some((name, value)) = annotation_entry(annotations, suffix)? else {
        return Ok(None);
    };
    let source = format!("annotation {name}");
    let value = text::single(&source, &value)?.to_owned();
    Ok(Some((source, value)))
}

/// The pool annotation: a name a pool can have.
fn pool_annotation(annotations: &BTreeMap<String, String>) -> Result<Option<String>, RequestError> {
    match checked_annotation(annotations, ADDRESS_POOL_SUFFIX)? {
        Some((source_name, name)) if !text::is_object_name(&name) => {
            Err(RequestError::NotAPoolName {
                source_name,
                shown: text::shown(&name),
            })
        }
        other => Ok(other.map(|(_, name)| name)),
    }
}

/// The annotation `suffix` under whichever accepted prefixes are present, as written: its name
/// and value. Spellings must agree (compared without surrounding spaces).
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
        match &found {
            Some((first, first_value))
                if first_value.trim_matches(' ') != value.trim_matches(' ') =>
            {
                return Err(RequestError::ConflictingSpellings {
                    first: first.clone(),
                    first_value: text::shown(first_value),
                    second: name,
                    second_value: text::shown(value),
                });
            }
            Some(_) => {}
            None => found = Some((name, value.clone())),
        }
    }
    Ok(found)
}

/// The pool's `ferrolb.io/load-balancer-class` annotation, by the same text rules as a
/// Service's: `Ok(None)` when absent, the class when well formed. A malformed class matches no
/// controller; the classless controller reports it on the pool.
pub fn pool_class(pool: &ferrolb_crds::IPAddressPool) -> Result<Option<&str>, RequestError> {
    let Some(value) = pool
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POOL_LOAD_BALANCER_CLASS))
    else {
        return Ok(None);
    };
    text::single(&format!("annotation {POOL_LOAD_BALANCER_CLASS}"), value).map(Some)
}

/// The Service field that requests one address (deprecated by Kubernetes, still honoured).
const LOAD_BALANCER_IP_FIELD: &str = "spec.loadBalancerIP";

fn requested_ips(
    field: Option<&str>,
    annotations: &BTreeMap<String, String>,
    families: &[Family],
) -> Result<Vec<IpAddr>, RequestError> {
    // An empty field is unset; anything else passes the same text rules as the annotation.
    let field = field.filter(|f| !f.is_empty());
    let annotated = annotation_entry(annotations, LOAD_BALANCER_IPS_SUFFIX)?;
    let (source_name, text) = match (field, annotated) {
        (Some(field), Some((annotation, value))) => {
            return Err(RequestError::BothForms {
                field: text::shown(field),
                annotation,
                value: text::shown(&value),
            });
        }
        (Some(field), None) => (LOAD_BALANCER_IP_FIELD.to_string(), field.to_string()),
        (None, Some((annotation, value))) => (format!("annotation {annotation}"), value),
        (None, None) => return Ok(Vec::new()),
    };
    let entries = if source_name == LOAD_BALANCER_IP_FIELD {
        vec![text::single(&source_name, &text)?]
    } else {
        text::list(&source_name, &text)?
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for entry in entries {
        let ip: IpAddr = entry.parse().map_err(|_| RequestError::NotAnIp {
            source_name: source_name.clone(),
            value: entry.into(),
        })?;
        if ips.contains(&ip) {
            // The same address in two spellings (2001:db8::1 and 2001:DB8:0::1).
            return Err(RequestError::Duplicate {
                source_name,
                element: ip.to_string(),
                shown: text::shown(&text),
            });
        }
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
