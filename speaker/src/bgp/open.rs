//! The OPEN exchange (RFC 4271 §4.2, §6.2): the OPEN this speaker sends, and what it accepts
//! from the router, as negotiated session parameters or the NOTIFICATION to refuse with (pure).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use bytes::Bytes;
use rustbgpd_wire::notification::open_subcode;
use rustbgpd_wire::{
    Afi, Capability, GracefulRestartFamily, NotificationCode, NotificationMessage, OpenMessage,
    Safi,
};

use ferrolb_crds::Family;

use super::config::RemoteAsn;

/// `AS_TRANS` (RFC 6793): the 2-octet stand-in for an AS number above 65535.
pub const AS_TRANS: u16 = 23456;
/// Seconds a router keeps this speaker's routes after the session drops, when graceful restart
/// is offered (RFC 4724 "Restart Time"): long enough for a speaker Pod to be restarted.
pub const RESTART_TIME: u16 = 120;

/// The AFI of `family` (ferrolb announces unicast routes only).
fn afi(family: Family) -> Afi {
    match family {
        Family::V4 => Afi::Ipv4,
        Family::V6 => Afi::Ipv6,
    }
}

/// What this speaker says about itself in OPEN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalOpen {
    /// Its AS number.
    pub asn: u32,
    /// Hold time offered, in seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Families it announces.
    pub families: BTreeSet<Family>,
    /// Offer graceful restart; `restarted` sets the R bit (this speaker restarted and the
    /// router should keep its routes until the End-of-RIB).
    pub graceful_restart: Option<Restart>,
}

/// The graceful-restart offer (RFC 4724).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restart {
    /// The R bit: this is the first session after a restart.
    pub restarted: bool,
}

/// The OPEN this speaker sends.
pub fn build_open(local: &LocalOpen) -> OpenMessage {
    let mut capabilities: Vec<Capability> = local
        .families
        .iter()
        .map(|f| Capability::MultiProtocol {
            afi: afi(*f),
            safi: Safi::Unicast,
        })
        .collect();
    capabilities.push(Capability::RouteRefresh);
    capabilities.push(Capability::FourOctetAs { asn: local.asn });
    if let Some(restart) = local.graceful_restart {
        capabilities.push(Capability::GracefulRestart {
            restart_state: restart.restarted,
            notification: false,
            restart_time: RESTART_TIME,
            // Forwarding does not go through the speaker: kube-proxy keeps forwarding while it
            // restarts, so the state is always preserved.
            families: local
                .families
                .iter()
                .map(|f| GracefulRestartFamily {
                    afi: afi(*f),
                    safi: Safi::Unicast,
                    forwarding_preserved: true,
                })
                .collect(),
        });
    }
    OpenMessage {
        version: 4,
        my_as: u16::try_from(local.asn).unwrap_or(AS_TRANS),
        hold_time: local.hold_time,
        bgp_identifier: local.router_id,
        capabilities,
    }
}

/// The session's parameters once both OPENs are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The router's AS number.
    pub peer_asn: u32,
    /// The router's BGP identifier.
    pub peer_id: Ipv4Addr,
    /// Both ends in the same AS.
    pub ibgp: bool,
    /// The smaller of the two hold times, in seconds (0: no keepalives, no hold timer).
    pub hold_time: u16,
    /// Seconds between KEEPALIVEs (0 when the hold time is 0).
    pub keepalive: u16,
    /// Both sides speak 4-octet AS numbers.
    pub four_octet_as: bool,
    /// Families both sides take.
    pub families: BTreeSet<Family>,
    /// The router asks this speaker to keep sending while it restarts (it offered graceful
    /// restart).
    pub peer_graceful_restart: bool,
}

/// Why the router's OPEN is refused: the NOTIFICATION to send, and a sentence for the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct OpenRefused {
    /// OPEN Message Error subcode (RFC 4271 §6.2).
    pub subcode: u8,
    /// Data for the NOTIFICATION.
    pub data: Bytes,
    /// What was wrong, for logs and conditions.
    pub reason: String,
}

impl OpenRefused {
    /// The NOTIFICATION that tells the router.
    pub fn notification(&self) -> NotificationMessage {
        NotificationMessage::new(
            NotificationCode::OpenMessage,
            self.subcode,
            self.data.clone(),
        )
    }
}

/// Checks the router's OPEN against ours and the configuration (`remote`, what `keepalive`
/// asks for) and negotiates the session.
pub fn accept_open(
    local: &LocalOpen,
    remote: RemoteAsn,
    keepalive: Option<u16>,
    theirs: &OpenMessage,
) -> Result<Negotiated, OpenRefused> {
    let refuse = |subcode: u8, data: Bytes, reason: String| OpenRefused {
        subcode,
        data,
        reason,
    };
    if theirs.version != 4 {
        return Err(refuse(
            open_subcode::UNSUPPORTED_VERSION,
            Bytes::from_static(&[0, 4]),
            format!("the router speaks BGP version {}, not 4", theirs.version),
        ));
    }
    let four_octet_as = theirs
        .capabilities
        .iter()
        .any(|c| matches!(c, Capability::FourOctetAs { .. }));
    let peer_asn = theirs.four_byte_as();
    if !remote.accepts(local.asn, peer_asn) {
        let expected = match remote {
            RemoteAsn::Fixed(asn) => format!("AS {asn} (spec.peerASN)"),
            RemoteAsn::Internal => format!("AS {} (dynamicASN: internal)", local.asn),
            RemoteAsn::External => format!("an AS other than {} (dynamicASN: external)", local.asn),
        };
        return Err(refuse(
            open_subcode::BAD_PEER_AS,
            Bytes::copy_from_slice(&theirs.my_as.to_be_bytes()),
            format!("the router says it is in AS {peer_asn}, expected {expected}"),
        ));
    }
    if theirs.hold_time == 1 || theirs.hold_time == 2 {
        return Err(refuse(
            open_subcode::UNACCEPTABLE_HOLD_TIME,
            Bytes::new(),
            format!(
                "the router offers a hold time of {}s; RFC 4271 allows 0 or at least 3s",
                theirs.hold_time
            ),
        ));
    }
    let ibgp = peer_asn == local.asn;
    if theirs.bgp_identifier.is_unspecified()
        || theirs.bgp_identifier.is_multicast()
        || (ibgp && theirs.bgp_identifier == local.router_id)
    {
        return Err(refuse(
            open_subcode::BAD_BGP_IDENTIFIER,
            Bytes::new(),
            format!(
                "the router's BGP identifier {} is unusable{}",
                theirs.bgp_identifier,
                if theirs.bgp_identifier == local.router_id {
                    " (it is this node's own; set spec.routerID)"
                } else {
                    ""
                }
            ),
        ));
    }
    let offered: BTreeSet<Family> = theirs
        .capabilities
        .iter()
        .filter_map(|c| match c {
            Capability::MultiProtocol {
                afi: Afi::Ipv4,
                safi: Safi::Unicast,
            } => Some(Family::V4),
            Capability::MultiProtocol {
                afi: Afi::Ipv6,
                safi: Safi::Unicast,
            } => Some(Family::V6),
            _ => None,
        })
        .collect();
    let any_mp = theirs
        .capabilities
        .iter()
        .any(|c| matches!(c, Capability::MultiProtocol { .. }));
    // Without Multiprotocol capabilities a router takes IPv4 unicast only (RFC 4760 §8).
    let theirs_families = if any_mp {
        offered
    } else {
        BTreeSet::from([Family::V4])
    };
    let hold_time = local.hold_time.min(theirs.hold_time);
    let keepalive = if hold_time == 0 {
        0
    } else {
        keepalive
            .filter(|&k| k > 0 && k < hold_time)
            .unwrap_or((hold_time / 3).max(1))
    };
    Ok(Negotiated {
        peer_asn,
        peer_id: theirs.bgp_identifier,
        ibgp,
        hold_time,
        keepalive,
        four_octet_as,
        families: local
            .families
            .intersection(&theirs_families)
            .copied()
            .collect(),
        peer_graceful_restart: theirs
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::GracefulRestart { .. })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalOpen {
        LocalOpen {
            asn: 64512,
            hold_time: 90,
            router_id: Ipv4Addr::new(198, 51, 100, 11),
            families: BTreeSet::from([Family::V4, Family::V6]),
            graceful_restart: None,
        }
    }

    fn router(asn: u32, hold: u16, caps: Vec<Capability>) -> OpenMessage {
        OpenMessage {
            version: 4,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time: hold,
            bgp_identifier: Ipv4Addr::new(198, 51, 100, 1),
            capabilities: caps,
        }
    }

    fn mp(afi: Afi) -> Capability {
        Capability::MultiProtocol {
            afi,
            safi: Safi::Unicast,
        }
    }

    #[test]
    fn our_open_carries_families_route_refresh_and_the_4_octet_asn() {
        let big = LocalOpen {
            asn: 4_200_000_001,
            graceful_restart: Some(Restart { restarted: true }),
            ..local()
        };
        let open = build_open(&big);
        assert_eq!(open.my_as, AS_TRANS);
        assert_eq!(open.four_byte_as(), 4_200_000_001);
        assert!(open.capabilities.contains(&mp(Afi::Ipv4)));
        assert!(open.capabilities.contains(&mp(Afi::Ipv6)));
        assert!(open.capabilities.contains(&Capability::RouteRefresh));
        assert!(open.capabilities.iter().any(|c| matches!(
            c,
            Capability::GracefulRestart {
                restart_state: true,
                restart_time: RESTART_TIME,
                ..
            }
        )));
        // And it survives the codec.
        let bytes = rustbgpd_wire::encode_message(&rustbgpd_wire::Message::Open(open.clone()))
            .unwrap()
            .freeze();
        let back = rustbgpd_wire::decode_message(&mut bytes.clone(), 4096).unwrap();
        assert_eq!(back, rustbgpd_wire::Message::Open(open));
        assert_eq!(build_open(&local()).my_as, 64512);
    }

    #[test]
    fn negotiation_takes_the_smaller_hold_time_and_common_families() {
        let four = Capability::FourOctetAs { asn: 64513 };
        let n = accept_open(
            &local(),
            RemoteAsn::Fixed(64513),
            None,
            &router(64513, 30, vec![mp(Afi::Ipv4), four.clone()]),
        )
        .unwrap();
        assert_eq!((n.hold_time, n.keepalive), (30, 10));
        assert_eq!(n.families, BTreeSet::from([Family::V4]));
        assert!(n.four_octet_as && !n.ibgp && !n.peer_graceful_restart);
        let n = accept_open(
            &local(),
            RemoteAsn::Fixed(64513),
            Some(5),
            &router(64513, 180, vec![]),
        )
        .unwrap();
        assert_eq!((n.hold_time, n.keepalive), (90, 5));
        assert_eq!(n.families, BTreeSet::from([Family::V4]), "no MP: IPv4 only");
        assert!(!n.four_octet_as);
        let n = accept_open(
            &local(),
            RemoteAsn::Internal,
            Some(5),
            &router(64512, 0, vec![]),
        )
        .unwrap();
        assert_eq!((n.hold_time, n.keepalive, n.ibgp), (0, 0, true));
    }

    #[test]
    fn a_4_octet_router_is_matched_by_its_capability() {
        let n = accept_open(
            &local(),
            RemoteAsn::Fixed(4_200_000_002),
            None,
            &router(
                4_200_000_002,
                90,
                vec![Capability::FourOctetAs { asn: 4_200_000_002 }],
            ),
        )
        .unwrap();
        assert_eq!(n.peer_asn, 4_200_000_002);
    }

    #[test]
    fn refusals_carry_the_rfc_subcode_and_say_why() {
        let cases: Vec<(RemoteAsn, OpenMessage, u8, &str)> = vec![
            (
                RemoteAsn::Fixed(64513),
                router(64999, 90, vec![]),
                open_subcode::BAD_PEER_AS,
                "the router says it is in AS 64999, expected AS 64513 (spec.peerASN)",
            ),
            (
                RemoteAsn::Internal,
                router(64513, 90, vec![]),
                open_subcode::BAD_PEER_AS,
                "expected AS 64512 (dynamicASN: internal)",
            ),
            (
                RemoteAsn::External,
                router(64512, 90, vec![]),
                open_subcode::BAD_PEER_AS,
                "expected an AS other than 64512 (dynamicASN: external)",
            ),
            (
                RemoteAsn::Fixed(64513),
                router(64513, 2, vec![]),
                open_subcode::UNACCEPTABLE_HOLD_TIME,
                "hold time of 2s",
            ),
            (
                RemoteAsn::Fixed(64513),
                OpenMessage {
                    version: 3,
                    ..router(64513, 90, vec![])
                },
                open_subcode::UNSUPPORTED_VERSION,
                "version 3",
            ),
            (
                RemoteAsn::Fixed(64513),
                OpenMessage {
                    bgp_identifier: Ipv4Addr::UNSPECIFIED,
                    ..router(64513, 90, vec![])
                },
                open_subcode::BAD_BGP_IDENTIFIER,
                "identifier 0.0.0.0 is unusable",
            ),
            (
                RemoteAsn::Internal,
                OpenMessage {
                    bgp_identifier: local().router_id,
                    ..router(64512, 90, vec![])
                },
                open_subcode::BAD_BGP_IDENTIFIER,
                "it is this node's own; set spec.routerID",
            ),
        ];
        for (remote, open, subcode, says) in cases {
            let e = accept_open(&local(), remote, None, &open).unwrap_err();
            assert_eq!(e.subcode, subcode, "{e}");
            assert!(e.reason.contains(says), "{e}");
            assert_eq!(e.notification().code, NotificationCode::OpenMessage);
        }
    }
}
