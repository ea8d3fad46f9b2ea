//! The Adj-RIB-Out of one session: what was sent to the router, and the UPDATEs that bring it
//! to what the route decision wants (pure).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ferrolb_crds::Family;
use ferrolb_crds::community::CommunityValue;
use rustbgpd_wire::attribute::{
    AsPath, AsPathSegment, LargeCommunity, MpReachNlri, MpUnreachNlri, Origin, PathAttribute,
    RawAttribute,
};
use rustbgpd_wire::nlri::{Ipv4NlriEntry, Ipv4Prefix, Ipv6Prefix, NlriEntry};
use rustbgpd_wire::{Afi, Ipv4UnicastMode, MAX_MESSAGE_LEN, Safi, UpdateMessage};

use super::routes::{Attributes, Prefix};

/// LOCAL_PREF sent to iBGP peers when the advertisement sets none (RFC 4271 requires the
/// attribute on internal sessions; 100 is the value routers assume by convention).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// What an established session allows to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    /// This speaker's AS number.
    pub local_asn: u32,
    /// The router is in the same AS.
    pub ibgp: bool,
    /// 4-octet AS numbers negotiated.
    pub four_octet_as: bool,
    /// Families negotiated and allowed by the peer's configuration.
    pub families: BTreeSet<Family>,
    /// This node's next-hop address for each family it has one for on the session's link.
    pub next_hops: BTreeMap<Family, IpAddr>,
}

impl SessionView {
    /// Whether a route of `family` can go to this router: the family was negotiated and the
    /// node has a next hop of it.
    pub fn carries(&self, family: Family) -> bool {
        self.families.contains(&family) && self.next_hops.contains_key(&family)
    }
}

/// The routes sent on one session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdjRibOut {
    sent: BTreeMap<Prefix, Attributes>,
}

impl AdjRibOut {
    /// The routes the router holds from this session.
    pub fn sent(&self) -> &BTreeMap<Prefix, Attributes> {
        &self.sent
    }

    /// Forgets everything (the session went down: the router dropped the routes, or keeps them
    /// as stale until the next session's End-of-RIB).
    pub fn clear(&mut self) {
        self.sent.clear();
    }

    /// The UPDATEs that turn what was sent into `wanted` (less what the session cannot carry),
    /// withdrawals first; records the result as sent.
    pub fn sync(
        &mut self,
        session: &SessionView,
        wanted: &BTreeMap<Prefix, Attributes>,
    ) -> Vec<UpdateMessage> {
        let wanted: BTreeMap<Prefix, &Attributes> = wanted
            .iter()
            .filter(|(p, _)| session.carries(p.family()))
            .map(|(p, a)| (*p, a))
            .collect();
        let withdrawn: Vec<Prefix> = self
            .sent
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        let mut by_attributes: BTreeMap<(Family, &Attributes), Vec<Prefix>> = BTreeMap::new();
        for (prefix, attributes) in &wanted {
            if self.sent.get(prefix) != Some(*attributes) {
                by_attributes
                    .entry((prefix.family(), *attributes))
                    .or_default()
                    .push(*prefix);
            }
        }
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            let gone: Vec<Prefix> = withdrawn
                .iter()
                .filter(|p| p.family() == family)
                .copied()
                .collect();
            for chunk in gone.chunks(chunk_len(family)) {
                out.push(withdraw(family, chunk));
            }
        }
        for ((family, attributes), prefixes) in &by_attributes {
            let attrs = path_attributes(session, *family, attributes);
            for chunk in prefixes.chunks(chunk_len(*family)) {
                out.push(announce(*family, chunk, &attrs, session.four_octet_as));
            }
        }
        for p in withdrawn {
            self.sent.remove(&p);
        }
        for (prefix, attributes) in wanted {
            self.sent.insert(prefix, attributes.clone());
        }
        out
    }
}

/// Prefixes per UPDATE: with at most 64 standard and 64 large communities (1.1 KB of
/// attributes) every message stays under 4,096 bytes (5 bytes per IPv4 prefix, 17 per IPv6).
fn chunk_len(family: Family) -> usize {
    match family {
        Family::V4 => 400,
        Family::V6 => 120,
    }
}

fn afi(family: Family) -> Afi {
    match family {
        Family::V4 => Afi::Ipv4,
        Family::V6 => Afi::Ipv6,
    }
}

fn nlri(prefix: &Prefix) -> NlriEntry {
    let prefix = match prefix.addr {
        IpAddr::V4(addr) => rustbgpd_wire::nlri::Prefix::V4(Ipv4Prefix {
            addr,
            len: prefix.len,
        }),
        IpAddr::V6(addr) => rustbgpd_wire::nlri::Prefix::V6(Ipv6Prefix {
            addr,
            len: prefix.len,
        }),
    };
    NlriEntry { path_id: 0, prefix }
}

fn ipv4_nlri(prefix: &Prefix) -> Ipv4NlriEntry {
    let addr = match prefix.addr {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    Ipv4NlriEntry {
        path_id: 0,
        prefix: Ipv4Prefix {
            addr,
            len: prefix.len,
        },
    }
}

fn path_attributes(session: &SessionView, family: Family, a: &Attributes) -> Vec<PathAttribute> {
    let mut attrs = vec![
        PathAttribute::Origin(Origin::Igp),
        PathAttribute::AsPath(AsPath {
            segments: if session.ibgp {
                Vec::new()
            } else {
                vec![AsPathSegment::AsSequence(vec![session.local_asn])]
            },
        }),
    ];
    // A router without 4-octet AS support sees AS_TRANS in AS_PATH and the real number in
    // AS4_PATH (RFC 6793 §4.2.2).
    if !session.ibgp && !session.four_octet_as && session.local_asn > u32::from(u16::MAX) {
        let mut data = vec![2, 1];
        data.extend_from_slice(&session.local_asn.to_be_bytes());
        attrs.push(PathAttribute::Unknown(RawAttribute {
            flags: 0xC0,
            type_code: 17,
            data: bytes::Bytes::from(data),
        }));
    }
    let next_hop = session.next_hops[&family];
    if let (Family::V4, IpAddr::V4(nh)) = (family, next_hop) {
        attrs.push(PathAttribute::NextHop(nh));
    }
    if session.ibgp {
        attrs.push(PathAttribute::LocalPref(
            a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF),
        ));
    }
    let standard: Vec<u32> = a
        .communities
        .iter()
        .filter_map(|c| match c {
            CommunityValue::Standard(hi, lo) => Some(u32::from(*hi) << 16 | u32::from(*lo)),
            CommunityValue::Large(..) => None,
        })
        .collect();
    if !standard.is_empty() {
        attrs.push(PathAttribute::Communities(standard));
    }
    if family == Family::V6 {
        attrs.push(PathAttribute::MpReachNlri(Box::new(mp_reach(next_hop))));
    }
    let large: Vec<LargeCommunity> = a
        .communities
        .iter()
        .filter_map(|c| match c {
            CommunityValue::Large(g, l1, l2) => Some(LargeCommunity::new(*g, *l1, *l2)),
            CommunityValue::Standard(..) => None,
        })
        .collect();
    if !large.is_empty() {
        attrs.push(PathAttribute::LargeCommunities(large));
    }
    attrs
}

fn mp_reach(next_hop: IpAddr) -> MpReachNlri {
    MpReachNlri {
        afi: Afi::Ipv6,
        safi: Safi::Unicast,
        next_hop,
        link_local_next_hop: None,
        announced: Vec::new(),
        flowspec_announced: Vec::new(),
        evpn_announced: Vec::new(),
        bgpls_announced: Vec::new(),
        vpn_announced: Vec::new(),
        labeled_announced: Vec::new(),
        rtc_announced: Vec::new(),
    }
}

fn mp_unreach(family: Family, prefixes: &[Prefix]) -> MpUnreachNlri {
    MpUnreachNlri {
        afi: afi(family),
        safi: Safi::Unicast,
        withdrawn: prefixes.iter().map(nlri).collect(),
        flowspec_withdrawn: Vec::new(),
        evpn_withdrawn: Vec::new(),
        bgpls_withdrawn: Vec::new(),
        vpn_withdrawn: Vec::new(),
        labeled_withdrawn: Vec::new(),
        rtc_withdrawn: Vec::new(),
    }
}

fn announce(
    family: Family,
    prefixes: &[Prefix],
    attrs: &[PathAttribute],
    four_octet_as: bool,
) -> UpdateMessage {
    let mut attrs = attrs.to_vec();
    let body: Vec<Ipv4NlriEntry> = match family {
        Family::V4 => prefixes.iter().map(ipv4_nlri).collect(),
        Family::V6 => {
            for a in &mut attrs {
                if let PathAttribute::MpReachNlri(mp) = a {
                    mp.announced = prefixes.iter().map(nlri).collect();
                }
            }
            Vec::new()
        }
    };
    build(&body, &[], &attrs, four_octet_as)
}

fn withdraw(family: Family, prefixes: &[Prefix]) -> UpdateMessage {
    match family {
        Family::V4 => {
            let body: Vec<Ipv4NlriEntry> = prefixes.iter().map(ipv4_nlri).collect();
            build(&[], &body, &[], true)
        }
        Family::V6 => build(
            &[],
            &[],
            &[PathAttribute::MpUnreachNlri(Box::new(mp_unreach(
                family, prefixes,
            )))],
            true,
        ),
    }
}

fn build(
    announced: &[Ipv4NlriEntry],
    withdrawn: &[Ipv4NlriEntry],
    attrs: &[PathAttribute],
    four_octet_as: bool,
) -> UpdateMessage {
    let update = UpdateMessage::try_build(
        announced,
        withdrawn,
        attrs,
        four_octet_as,
        false,
        Ipv4UnicastMode::Body,
    )
    .expect("attributes built from validated values encode");
    debug_assert!(update.encoded_len() <= usize::from(MAX_MESSAGE_LEN));
    update
}

/// End-of-RIB markers (RFC 4724 §2) for `families`: an empty UPDATE for IPv4, an empty
/// MP_UNREACH_NLRI for IPv6.
pub fn end_of_rib(families: &BTreeSet<Family>) -> Vec<UpdateMessage> {
    families
        .iter()
        .map(|f| match f {
            Family::V4 => build(&[], &[], &[], true),
            Family::V6 => withdraw(Family::V6, &[]),
        })
        .collect()
}

#[cfg(test)]
#[path = "updates_tests.rs"]
mod tests;
