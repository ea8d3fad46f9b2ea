use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferrolb_crds::Family;
use ferrolb_crds::community::CommunityValue;
use rustbgpd_wire::attribute::{AsPathSegment, LargeCommunity, PathAttribute};
use rustbgpd_wire::nlri::Prefix as WirePrefix;
use rustbgpd_wire::{Message, UpdateMessage, decode_message, encode_message};

use super::*;
use crate::bgp::routes::{Attributes, Prefix};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn session(ibgp: bool) -> SessionView {
    SessionView {
        local_asn: 64512,
        ibgp,
        four_octet_as: true,
        families: BTreeSet::from([Family::V4, Family::V6]),
        next_hops: BTreeMap::from([
            (Family::V4, ip("198.51.100.11")),
            (Family::V6, ip("2001:db8:1::11")),
        ]),
    }
}

fn host(s: &str) -> Prefix {
    let a = ip(s);
    Prefix::covering(a, Family::of(a).max_prefix())
}

/// What the router would read: each UPDATE through the codec and back.
#[derive(Debug, Default)]
struct Seen {
    announced: Vec<String>,
    withdrawn: Vec<String>,
    attributes: Vec<Vec<PathAttribute>>,
}

fn wire(updates: &[UpdateMessage]) -> Seen {
    let mut seen = Seen::default();
    for u in updates {
        let bytes = encode_message(&Message::Update(u.clone()))
            .unwrap()
            .freeze();
        assert!(bytes.len() <= 4096);
        let Message::Update(back) = decode_message(&mut bytes.clone(), 4096).unwrap() else {
            panic!("not an UPDATE")
        };
        let parsed = back.parse(true, false, &[]).unwrap();
        for e in parsed.withdrawn {
            seen.withdrawn
                .push(format!("{}/{}", e.prefix.addr, e.prefix.len));
        }
        for e in parsed.announced {
            seen.announced
                .push(format!("{}/{}", e.prefix.addr, e.prefix.len));
        }
        let show = |p: &WirePrefix| match p {
            WirePrefix::V4(p) => format!("{}/{}", p.addr, p.len),
            WirePrefix::V6(p) => format!("{}/{}", p.addr, p.len),
        };
        for a in &parsed.attributes {
            match a {
                PathAttribute::MpReachNlri(mp) => {
                    seen.announced
                        .extend(mp.announced.iter().map(|e| show(&e.prefix)));
                }
                PathAttribute::MpUnreachNlri(mp) => {
                    seen.withdrawn
                        .extend(mp.withdrawn.iter().map(|e| show(&e.prefix)));
                }
                _ => {}
            }
        }
        seen.attributes.push(parsed.attributes);
    }
    seen
}

fn wanted(entries: &[(&str, Attributes)]) -> BTreeMap<Prefix, Attributes> {
    entries.iter().map(|(p, a)| (host(p), a.clone())).collect()
}

#[test]
fn announcing_carries_origin_as_path_next_hop_and_families() {
    let mut rib = AdjRibOut::default();
    let out = rib.sync(
        &session(false),
        &wanted(&[
            ("198.51.100.10", Attributes::default()),
            ("2001:db8:1::10", Attributes::default()),
        ]),
    );
    assert_eq!(out.len(), 2, "one UPDATE per family");
    let seen = wire(&out);
    assert_eq!(seen.announced, ["198.51.100.10/32", "2001:db8:1::10/128"]);
    let v4 = &seen.attributes[0];
    assert!(v4.contains(&PathAttribute::Origin(Origin::Igp)));
    assert!(v4.iter().any(|a| matches!(a, PathAttribute::AsPath(p)
        if p.segments == [AsPathSegment::AsSequence(vec![64512])])));
    assert!(v4.contains(&PathAttribute::NextHop("198.51.100.11".parse().unwrap())));
    assert!(
        !v4.iter().any(|a| matches!(a, PathAttribute::LocalPref(_))),
        "no LOCAL_PREF to an external peer"
    );
    let v6 = &seen.attributes[1];
    assert!(v6.iter().any(|a| matches!(a, PathAttribute::MpReachNlri(mp)
        if mp.next_hop == ip("2001:db8:1::11"))));
    // Nothing changed: nothing sent.
    assert!(
        rib.sync(
            &session(false),
            &wanted(&[
                ("198.51.100.10", Attributes::default()),
                ("2001:db8:1::10", Attributes::default()),
            ])
        )
        .is_empty()
    );
}

#[test]
fn ibgp_gets_local_pref_and_an_empty_as_path() {
    let mut rib = AdjRibOut::default();
    let seen = wire(&rib.sync(
        &session(true),
        &wanted(&[
            ("198.51.100.10", Attributes::default()),
            (
                "198.51.100.20",
                Attributes {
                    local_pref: Some(250),
                    ..Default::default()
                },
            ),
        ]),
    ));
    let prefs: BTreeSet<u32> = seen
        .attributes
        .iter()
        .flatten()
        .filter_map(|a| match a {
            PathAttribute::LocalPref(p) => Some(*p),
            _ => None,
        })
        .collect();
    assert_eq!(prefs, BTreeSet::from([DEFAULT_LOCAL_PREF, 250]));
    assert!(
        seen.attributes
            .iter()
            .flatten()
            .any(|a| matches!(a, PathAttribute::AsPath(p) if p.segments.is_empty()))
    );
}

#[test]
fn communities_standard_and_large_are_encoded() {
    let mut rib = AdjRibOut::default();
    let attrs = Attributes {
        communities: BTreeSet::from([
            CommunityValue::Standard(65535, 65282),
            CommunityValue::Large(64512, 1, 2),
        ]),
        local_pref: None,
    };
    let seen = wire(&rib.sync(&session(false), &wanted(&[("198.51.100.10", attrs)])));
    let a = &seen.attributes[0];
    assert!(a.contains(&PathAttribute::Communities(vec![0xFFFF_FF02])));
    assert!(
        a.contains(&PathAttribute::LargeCommunities(vec![LargeCommunity::new(
            64512, 1, 2
        )]))
    );
}

#[test]
fn changes_send_only_the_difference_withdrawals_first() {
    let mut rib = AdjRibOut::default();
    let s = session(false);
    rib.sync(
        &s,
        &wanted(&[
            ("198.51.100.10", Attributes::default()),
            ("198.51.100.11", Attributes::default()),
            ("2001:db8:1::10", Attributes::default()),
        ]),
    );
    let changed = Attributes {
        local_pref: Some(5),
        ..Default::default()
    };
    let out = rib.sync(
        &s,
        &wanted(&[
            ("198.51.100.11", changed.clone()),
            ("198.51.100.12", Attributes::default()),
        ]),
    );
    let seen = wire(&out);
    assert_eq!(seen.withdrawn, ["198.51.100.10/32", "2001:db8:1::10/128"]);
    assert_eq!(seen.announced, ["198.51.100.12/32", "198.51.100.11/32"]);
    assert!(
        wire(&out[..2]).announced.is_empty(),
        "withdrawals come first"
    );
    assert_eq!(rib.sent().len(), 2);
    assert_eq!(rib.sent()[&host("198.51.100.11")], changed);
}

#[test]
fn families_the_session_cannot_carry_are_held_back() {
    let mut rib = AdjRibOut::default();
    let mut s = session(false);
    s.families = BTreeSet::from([Family::V4]);
    let w = wanted(&[
        ("198.51.100.10", Attributes::default()),
        ("2001:db8:1::10", Attributes::default()),
    ]);
    assert_eq!(wire(&rib.sync(&s, &w)).announced, ["198.51.100.10/32"]);
    // No IPv4 next hop on the link (an IPv6-only node): no IPv4 routes either.
    let mut rib = AdjRibOut::default();
    let mut s = session(false);
    s.next_hops.remove(&Family::V4);
    assert_eq!(wire(&rib.sync(&s, &w)).announced, ["2001:db8:1::10/128"]);
}

#[test]
fn thousands_of_routes_split_into_messages_under_4096_bytes() {
    let mut rib = AdjRibOut::default();
    let attrs = Attributes {
        communities: (0..64)
            .map(|i| CommunityValue::Standard(64512, i))
            .chain((0..64).map(|i| CommunityValue::Large(64512, i, i)))
            .collect(),
        local_pref: Some(1),
    };
    let mut w = BTreeMap::new();
    for i in 0..10_000u32 {
        // Never sent anywhere; 198.18.0.0/15 holds 10,000 host routes.
        let v4 = Ipv4Addr::from(0xC612_0000u32 + i);
        w.insert(Prefix::covering(IpAddr::V4(v4), 32), attrs.clone());
        let v6 = Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0000_0000u128 + u128::from(i));
        w.insert(Prefix::covering(IpAddr::V6(v6), 128), attrs.clone());
    }
    let out = rib.sync(&session(true), &w);
    let seen = wire(&out);
    assert_eq!(seen.announced.len(), 20_000);
    assert!(out.len() < 120, "{} messages", out.len());
    let out = rib.sync(&session(true), &BTreeMap::new());
    assert_eq!(wire(&out).withdrawn.len(), 20_000);
}

#[test]
fn a_2_octet_router_gets_as_trans_and_as4_path() {
    let mut rib = AdjRibOut::default();
    let mut s = session(false);
    s.local_asn = 4_200_000_001;
    s.four_octet_as = false;
    let out = rib.sync(&s, &wanted(&[("198.51.100.10", Attributes::default())]));
    let bytes = encode_message(&Message::Update(out[0].clone())).unwrap();
    // AS_PATH carries AS_TRANS (23456 = 0x5ba0); AS4_PATH (type 17) the real number.
    let b = bytes.to_vec();
    assert!(b.windows(2).any(|w| w == [0x5b, 0xa0]));
    assert!(b.windows(3).any(|w| w == [0xC0, 17, 6]));
}

#[test]
fn end_of_rib_is_an_empty_update_per_family() {
    let out = end_of_rib(&BTreeSet::from([Family::V4, Family::V6]));
    assert_eq!(out.len(), 2);
    assert_eq!(
        encode_message(&Message::Update(out[0].clone()))
            .unwrap()
            .len(),
        23,
        "IPv4 End-of-RIB: header and two zero lengths"
    );
    let seen = wire(&out);
    assert!(seen.announced.is_empty() && seen.withdrawn.is_empty());
    assert!(
        matches!(&seen.attributes[1][..], [PathAttribute::MpUnreachNlri(mp)] if mp.withdrawn.is_empty())
    );
}
