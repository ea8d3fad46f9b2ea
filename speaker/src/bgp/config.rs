//! A `BGPPeer` read into what a session needs, every duration and address parsed (pure).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ferrolb_crds::duration::parse_go_duration;
use ferrolb_crds::{BGPPeerSpec, DynamicAsn, LabelSelector};

/// Hold time offered when `spec.holdTime` is unset (RFC 4271's suggestion, FRR's and MetalLB's).
pub const DEFAULT_HOLD_TIME: u16 = 90;
/// Longest wait between connection attempts when `spec.connectTime` is unset.
pub const DEFAULT_CONNECT_TIME: Duration = Duration::from_secs(30);

/// Which AS numbers the router may open the session with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemoteAsn {
    /// Exactly this one (`spec.peerASN`).
    Fixed(u32),
    /// The nodes' own (`dynamicASN: internal`).
    Internal,
    /// Any other than the nodes' own (`dynamicASN: external`).
    External,
}

impl RemoteAsn {
    /// Whether a router announcing `theirs` is the one configured, the nodes being in `local`.
    pub fn accepts(self, local: u32, theirs: u32) -> bool {
        match self {
            RemoteAsn::Fixed(asn) => asn == theirs,
            RemoteAsn::Internal => theirs == local,
            RemoteAsn::External => theirs != local,
        }
    }
}

/// Where the TCP MD5 key comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PasswordSource {
    /// `spec.password`.
    Inline(String),
    /// `spec.passwordSecret`: the `password` key of this Secret (namespace `None`: the
    /// speaker's own).
    Secret {
        /// The Secret's namespace, if given.
        namespace: Option<String>,
        /// The Secret's name.
        name: String,
    },
}

/// A `BGPPeer` as the sessions use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The `BGPPeer`'s name.
    pub name: String,
    /// `spec.myASN`.
    pub local_asn: u32,
    /// `spec.peerASN` or `spec.dynamicASN`.
    pub remote_asn: RemoteAsn,
    /// `spec.peerAddress`.
    pub address: IpAddr,
    /// `spec.peerPort`.
    pub port: u16,
    /// `spec.sourceAddress`.
    pub source: Option<IpAddr>,
    /// Hold time offered, in seconds (0: no keepalives).
    pub hold_time: u16,
    /// Keepalive interval asked for, in seconds (`None`: a third of the negotiated hold time).
    pub keepalive: Option<u16>,
    /// Longest wait between connection attempts.
    pub connect_time: Duration,
    /// `spec.routerID`.
    pub router_id: Option<Ipv4Addr>,
    /// The TCP MD5 key's source, if any.
    pub password: Option<PasswordSource>,
    /// `spec.bfdProfile`.
    pub bfd_profile: Option<String>,
    /// `spec.ebgpMultiHop`.
    pub multihop: bool,
    /// `spec.enableGracefulRestart`.
    pub graceful_restart: bool,
    /// `spec.disableMP`: only the session's own address family.
    pub own_family_only: bool,
    /// `spec.nodeSelectors` (empty: every node).
    pub node_selectors: Vec<LabelSelector>,
}

/// Why a `BGPPeer` cannot be used (the apiserver's rules catch these first; an object written
/// before them, or with the rules bypassed, still gets a clear message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("BGPPeer {peer}: spec.{field}: {message}")]
pub struct ConfigError {
    /// The `BGPPeer`'s name.
    pub peer: String,
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// Reads `spec` of the `BGPPeer` named `name`.
pub fn peer_config(name: &str, spec: &BGPPeerSpec) -> Result<PeerConfig, ConfigError> {
    let fail = |field: &'static str, message: String| ConfigError {
        peer: name.to_string(),
        field,
        message,
    };
    let address: IpAddr = spec.peer_address.parse().map_err(|_| {
        fail(
            "peerAddress",
            format!("{:?} is not an IP address", spec.peer_address),
        )
    })?;
    let source = spec
        .source_address
        .as_deref()
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| fail("sourceAddress", format!("{s:?} is not an IP address")))
        })
        .transpose()?;
    if source.is_some_and(|s| s.is_ipv4() != address.is_ipv4()) {
        return Err(fail(
            "sourceAddress",
            "is not of the same family as peerAddress".into(),
        ));
    }
    let remote_asn = match (spec.peer_asn, spec.dynamic_asn) {
        (Some(asn), None) => RemoteAsn::Fixed(asn),
        (None, Some(DynamicAsn::Internal)) => RemoteAsn::Internal,
        (None, Some(DynamicAsn::External)) => RemoteAsn::External,
        _ => {
            return Err(fail(
                "peerASN",
                "set exactly one of spec.peerASN and spec.dynamicASN".into(),
            ));
        }
    };
    let seconds =
        |field: &'static str, text: &Option<String>| -> Result<Option<u64>, ConfigError> {
            text.as_deref()
                .map(|t| {
                    parse_go_duration(t)
                        .map(|d| d.as_secs())
                        .map_err(|e| fail(field, e.to_string()))
                })
                .transpose()
        };
    let hold_time = seconds("holdTime", &spec.hold_time)?.unwrap_or(DEFAULT_HOLD_TIME.into());
    if hold_time != 0 && !(3..=65535).contains(&hold_time) {
        return Err(fail(
            "holdTime",
            "must be 0 (no keepalives) or from 3s to 65535s (RFC 4271)".into(),
        ));
    }
    let keepalive = seconds("keepaliveTime", &spec.keepalive_time)?;
    if let Some(k) = keepalive
        && (if hold_time == 0 {
            k != 0
        } else {
            k >= hold_time
        })
    {
        return Err(fail(
            "keepaliveTime",
            format!("must be shorter than the hold time ({hold_time}s)"),
        ));
    }
    let connect_time = match seconds("connectTime", &spec.connect_time)? {
        Some(s) if (1..=65535).contains(&s) => Duration::from_secs(s),
        Some(_) => return Err(fail("connectTime", "must be from 1s to 65535s".into())),
        None => DEFAULT_CONNECT_TIME,
    };
    let router_id = spec
        .router_id
        .as_deref()
        .map(|s| {
            s.parse::<Ipv4Addr>()
                .map_err(|_| fail("routerID", format!("{s:?} is not an IPv4 address")))
        })
        .transpose()?;
    let password = match (&spec.password, &spec.password_secret) {
        (Some(p), None) => Some(PasswordSource::Inline(p.clone())),
        (None, Some(secret)) => Some(PasswordSource::Secret {
            namespace: secret.namespace.clone().filter(|n| !n.is_empty()),
            name: secret
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| fail("passwordSecret.name", "names no Secret".into()))?,
        }),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(fail(
                "password",
                "set at most one of spec.password and spec.passwordSecret".into(),
            ));
        }
    };
    if let Some(PasswordSource::Inline(p)) = &password
        && (p.is_empty() || p.len() > 80)
    {
        return Err(fail("password", "must be 1 to 80 bytes long".into()));
    }
    Ok(PeerConfig {
        name: name.to_string(),
        local_asn: spec.my_asn,
        remote_asn,
        address,
        port: spec.peer_port,
        source,
        hold_time: hold_time as u16,
        keepalive: keepalive.map(|k| k as u16),
        connect_time,
        router_id,
        password,
        bfd_profile: spec.bfd_profile.clone(),
        multihop: spec.ebgp_multi_hop,
        graceful_restart: spec.enable_graceful_restart,
        own_family_only: spec.disable_mp,
        node_selectors: spec.node_selectors.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BGPPeerSpec {
        BGPPeerSpec {
            my_asn: 64512,
            peer_asn: Some(64513),
            peer_address: "198.51.100.1".into(),
            peer_port: 179,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_what_is_unset() {
        let c = peer_config("r1", &spec()).unwrap();
        assert_eq!(c.hold_time, 90);
        assert_eq!(c.keepalive, None);
        assert_eq!(c.connect_time, Duration::from_secs(30));
        assert_eq!(c.remote_asn, RemoteAsn::Fixed(64513));
        assert_eq!(c.password, None);
        assert!(!c.own_family_only);
    }

    #[test]
    fn timers_and_secrets_are_read() {
        let c = peer_config(
            "r1",
            &BGPPeerSpec {
                hold_time: Some("1m30s".into()),
                keepalive_time: Some("10s".into()),
                connect_time: Some("5s".into()),
                password_secret: Some(k8s_openapi::api::core::v1::SecretReference {
                    name: Some("bgp".into()),
                    namespace: None,
                }),
                peer_asn: None,
                dynamic_asn: Some(DynamicAsn::Internal),
                router_id: Some("198.51.100.9".into()),
                ..spec()
            },
        )
        .unwrap();
        assert_eq!((c.hold_time, c.keepalive), (90, Some(10)));
        assert_eq!(c.connect_time, Duration::from_secs(5));
        assert_eq!(
            c.password,
            Some(PasswordSource::Secret {
                namespace: None,
                name: "bgp".into()
            })
        );
        assert_eq!(c.remote_asn, RemoteAsn::Internal);
        assert_eq!(c.router_id, Some(Ipv4Addr::new(198, 51, 100, 9)));
    }

    #[test]
    fn bad_values_name_the_peer_and_field() {
        for (s, field) in [
            (
                BGPPeerSpec {
                    peer_address: "router".into(),
                    ..spec()
                },
                "peerAddress",
            ),
            (
                BGPPeerSpec {
                    hold_time: Some("2s".into()),
                    ..spec()
                },
                "holdTime",
            ),
            (
                BGPPeerSpec {
                    keepalive_time: Some("90s".into()),
                    ..spec()
                },
                "keepaliveTime",
            ),
            (
                BGPPeerSpec {
                    hold_time: Some("0s".into()),
                    keepalive_time: Some("1s".into()),
                    ..spec()
                },
                "keepaliveTime",
            ),
            (
                BGPPeerSpec {
                    peer_asn: None,
                    ..spec()
                },
                "peerASN",
            ),
            (
                BGPPeerSpec {
                    source_address: Some("2001:db8::1".into()),
                    ..spec()
                },
                "sourceAddress",
            ),
            (
                BGPPeerSpec {
                    router_id: Some("2001:db8::1".into()),
                    ..spec()
                },
                "routerID",
            ),
            (
                BGPPeerSpec {
                    connect_time: Some("0s".into()),
                    ..spec()
                },
                "connectTime",
            ),
            (
                BGPPeerSpec {
                    password: Some(String::new()),
                    ..spec()
                },
                "password",
            ),
        ] {
            let e = peer_config("r1", &s).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("BGPPeer r1: spec.{field}: "))
            );
        }
    }

    #[test]
    fn remote_asn_rules() {
        assert!(RemoteAsn::Fixed(1).accepts(5, 1));
        assert!(!RemoteAsn::Fixed(1).accepts(5, 2));
        assert!(RemoteAsn::Internal.accepts(5, 5));
        assert!(!RemoteAsn::Internal.accepts(5, 6));
        assert!(RemoteAsn::External.accepts(5, 6));
        assert!(!RemoteAsn::External.accepts(5, 5));
    }
}
