//! Who may share an address (pure): Services with the same `allow-shared-ip` key, no port and
//! protocol in common, and the same backends.

use std::fmt;

use ferrolb_crds::contract::annotation::ALLOW_SHARED_IP;
use ferrolb_crds::contract::reason;

use super::error::comma_separated;
use super::interned::KeyRef;
use super::request::{Backends, Port, Request, ServiceKey};

/// What sharing needs to know of one user of an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Sharing key.
    pub key: Option<String>,
    /// Ports.
    pub ports: Vec<Port>,
    /// Backends.
    pub backends: Backends,
}

impl Usage {
    /// The sharing-relevant part of a request. Without a sharing key nothing else matters
    /// (such a Service shares with nobody, [`compatible`]), so ports and backends are left out.
    pub fn of(req: &Request) -> Usage {
        if req.sharing_key.is_none() {
            return Usage::of_none();
        }
        Usage {
            key: req.sharing_key.clone(),
            ports: req.ports.to_vec(),
            backends: req.backends.clone(),
        }
    }

    /// The usage of a Service without a sharing key.
    pub fn of_none() -> Usage {
        Usage {
            key: None,
            ports: Vec::new(),
            backends: Backends::Cluster,
        }
    }
}

/// Why a Service may not use an address another Service holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// The holder has no sharing key, or this Service has none.
    NoKey,
    /// Both have keys, different ones.
    OtherKey {
        /// The holder's key.
        theirs: String,
        /// This Service's key.
        ours: String,
    },
    /// Same key, but ports in common.
    Ports(Vec<Port>),
    /// Same key, but different `externalTrafficPolicy` or (for Local) selectors.
    Backends,
}

impl Conflict {
    /// CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Conflict::Ports(_) => reason::PORT_COLLISION,
            _ => reason::IP_IN_USE,
        }
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::NoKey => write!(
                f,
                "sharing needs the same {ALLOW_SHARED_IP} key on both Services"
            ),
            Conflict::OtherKey { theirs, ours } => write!(
                f,
                "its {ALLOW_SHARED_IP} key is {theirs:?}, this Service's is {ours:?}"
            ),
            Conflict::Ports(ports) => write!(f, "both use port {}", comma_separated(ports)),
            Conflict::Backends => f.write_str(
                "Services sharing an address need the same externalTrafficPolicy, and the same selector when it is Local",
            ),
        }
    }
}

/// Whether `new` may join an address `holder` uses.
pub fn compatible(holder: &Usage, new: &Usage) -> Result<(), Conflict> {
    let (Some(theirs), Some(ours)) = (&holder.key, &new.key) else {
        return Err(Conflict::NoKey);
    };
    if theirs != ours {
        return Err(Conflict::OtherKey {
            theirs: theirs.clone(),
            ours: ours.clone(),
        });
    }
    if holder.backends != new.backends {
        return Err(Conflict::Backends);
    }
    let common: Vec<Port> = holder
        .ports
        .iter()
        .filter(|p| new.ports.contains(p))
        .cloned()
        .collect();
    if !common.is_empty() {
        return Err(Conflict::Ports(common));
    }
    Ok(())
}

/// Whether `new` may join an address used by `others` (its users other than the joining
/// Service, in order); the error names the first user in conflict.
pub fn may_join<'a>(
    others: impl IntoIterator<Item = (KeyRef<'a>, &'a Usage)>,
    new: &Usage,
) -> Result<(), (ServiceKey, Conflict)> {
    for (holder, usage) in others {
        compatible(usage, new).map_err(|c| (holder.to_key(), c))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::request::{FamilyPolicy, Protocol};
    use std::collections::BTreeMap;

    fn usage(key: Option<&str>, ports: &[i32], backends: Backends) -> Usage {
        Usage {
            key: key.map(Into::into),
            ports: ports.iter().copied().map(Port::tcp).collect(),
            backends,
        }
    }

    #[test]
    fn same_key_disjoint_ports_same_backends_share() {
        let a = usage(Some("k"), &[80], Backends::Cluster);
        let b = usage(Some("k"), &[443], Backends::Cluster);
        assert_eq!(compatible(&a, &b), Ok(()));
    }

    #[test]
    fn keys_must_both_exist_and_match() {
        let keyed = usage(Some("k"), &[80], Backends::Cluster);
        let bare = usage(None, &[443], Backends::Cluster);
        assert_eq!(compatible(&keyed, &bare), Err(Conflict::NoKey));
        assert_eq!(compatible(&bare, &keyed), Err(Conflict::NoKey));
        let other = usage(Some("j"), &[443], Backends::Cluster);
        assert!(matches!(
            compatible(&keyed, &other),
            Err(Conflict::OtherKey { .. })
        ));
    }

    #[test]
    fn colliding_ports_are_named() {
        let a = usage(Some("k"), &[80, 443], Backends::Cluster);
        let b = usage(Some("k"), &[443, 8080], Backends::Cluster);
        let err = compatible(&a, &b).unwrap_err();
        assert_eq!(err.to_string(), "both use port 443/TCP");
        assert_eq!(err.reason(), reason::PORT_COLLISION);
        // Same number, other protocol: no collision.
        let udp = Usage {
            ports: vec![Port {
                port: 80,
                protocol: Protocol::Udp,
            }],
            ..usage(Some("k"), &[], Backends::Cluster)
        };
        assert_eq!(compatible(&a, &udp), Ok(()));
    }

    #[test]
    fn backends_must_agree() {
        let sel = |v: &str| BTreeMap::from([("app".to_string(), v.to_string())]);
        let local_a = usage(Some("k"), &[80], Backends::Local(sel("a")));
        let local_a2 = usage(Some("k"), &[81], Backends::Local(sel("a")));
        let local_b = usage(Some("k"), &[82], Backends::Local(sel("b")));
        let cluster = usage(Some("k"), &[83], Backends::Cluster);
        assert_eq!(compatible(&local_a, &local_a2), Ok(()));
        assert_eq!(compatible(&local_a, &local_b), Err(Conflict::Backends));
        assert_eq!(compatible(&local_a, &cluster), Err(Conflict::Backends));
    }

    #[test]
    fn joining_checks_every_other_user_in_order() {
        let a = ServiceKey::new("ns", "a");
        let b = ServiceKey::new("ns", "b");
        let new = usage(Some("k"), &[443], Backends::Cluster);
        let fine = usage(Some("k"), &[80], Backends::Cluster);
        let clash = usage(Some("k"), &[443], Backends::Cluster);
        assert_eq!(may_join([(KeyRef::of(&a), &fine)], &new), Ok(()));
        let err = may_join([(KeyRef::of(&a), &fine), (KeyRef::of(&b), &clash)], &new).unwrap_err();
        assert_eq!(err.0, b);
        let err = may_join([(KeyRef::of(&a), &clash), (KeyRef::of(&b), &clash)], &new).unwrap_err();
        assert_eq!(err.0, a);
    }

    #[test]
    fn usage_without_a_key_leaves_out_ports_and_backends() {
        let req = Request {
            ports: vec![Port::tcp(80)].into(),
            backends: Backends::Local(BTreeMap::new()),
            ..Request::new(vec![], FamilyPolicy::SingleStack)
        };
        assert_eq!(Usage::of(&req), Usage::of_none());
        let keyed = Request {
            sharing_key: Some("k".into()),
            ..req
        };
        assert_eq!(Usage::of(&keyed).ports.len(), 1);
    }
}
