//! Who may share an address (pure): Services with the same `allow-shared-ip` key, no port and
//! protocol in common, and the same backends.

use std::fmt;

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
    /// The sharing-relevant part of a request.
    pub fn of(req: &Request) -> Usage {
        Usage {
            key: req.sharing_key.clone(),
            ports: req.ports.clone(),
            backends: req.backends.clone(),
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
            Conflict::Ports(_) => "PortCollision",
            _ => "IPInUse",
        }
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::NoKey => f.write_str(
                "sharing needs the same ferrolb.io/allow-shared-ip key on both Services",
            ),
            Conflict::OtherKey { theirs, ours } => write!(
                f,
                "its ferrolb.io/allow-shared-ip key is {theirs:?}, this Service's is {ours:?}"
            ),
            Conflict::Ports(ports) => write!(
                f,
                "both use port {}",
                ports
                    .iter()
                    .map(Port::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
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

/// The users of one address, sorted by Service. Almost every address has one user, so a sorted
/// vector (one small allocation) instead of a map (a node of eleven slots).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Users(Vec<(ServiceKey, Usage)>);

impl Users {
    /// `key`'s usage.
    pub fn get(&self, key: &ServiceKey) -> Option<&Usage> {
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    /// Adds or replaces `key`'s usage.
    pub fn insert(&mut self, key: ServiceKey, usage: Usage) {
        match self.position(&key) {
            Ok(i) => self.0[i].1 = usage,
            Err(i) => self.0.insert(i, (key, usage)),
        }
    }

    /// Removes `key`'s usage.
    pub fn remove(&mut self, key: &ServiceKey) -> Option<Usage> {
        self.position(key).ok().map(|i| self.0.remove(i).1)
    }

    /// Whether nobody uses the address.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The users, in order.
    pub fn keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.0.iter().map(|(k, _)| k)
    }

    /// Users and their usages, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&ServiceKey, &Usage)> {
        self.0.iter().map(|(k, u)| (k, u))
    }

    fn position(&self, key: &ServiceKey) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(key))
    }
}

/// Whether `new` (Service `who`) may join an address used by `users`; the error names the first
/// user in conflict.
pub fn may_join(
    users: &Users,
    who: &ServiceKey,
    new: &Usage,
) -> Result<(), (ServiceKey, Conflict)> {
    for (holder, usage) in users.iter().filter(|(k, _)| *k != who) {
        compatible(usage, new).map_err(|c| (holder.clone(), c))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn usage(key: Option<&str>, ports: &[i32], backends: Backends) -> Usage {
        Usage {
            key: key.map(Into::into),
            ports: ports
                .iter()
                .map(|p| Port {
                    port: *p,
                    protocol: "TCP".into(),
                })
                .collect(),
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
        assert_eq!(err.reason(), "PortCollision");
        // Same number, other protocol: no collision.
        let udp = Usage {
            ports: vec![Port {
                port: 80,
                protocol: "UDP".into(),
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
    fn joining_checks_every_other_user_but_not_itself() {
        let me = ServiceKey::new("ns", "me");
        let other = ServiceKey::new("ns", "other");
        let mut users = Users::default();
        users.insert(me.clone(), usage(Some("k"), &[80], Backends::Cluster));
        assert_eq!(
            may_join(&users, &me, &usage(Some("k"), &[80], Backends::Cluster)),
            Ok(())
        );
        users.insert(other.clone(), usage(Some("k"), &[443], Backends::Cluster));
        let err = may_join(&users, &me, &usage(Some("k"), &[443], Backends::Cluster));
        assert_eq!(err.unwrap_err().0, other);
    }
}
