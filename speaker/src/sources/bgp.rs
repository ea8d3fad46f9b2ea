//! The BGP objects read into [`BgpConfig`].

use std::collections::BTreeMap;

use ferrolb_crds::community::{parse_community_entry, parse_community_value};
use ferrolb_crds::{BGPAdvertisement, Community};
use kube::ResourceExt;
use tracing::warn;

use super::Sources;
use crate::bfd::session::BfdConfig;
use crate::bgp::config::peer_config;
use crate::model::{BgpAdvertisement, BgpConfig};

impl Sources {
    /// Every BGP peer, advertisement and community name.
    pub fn bgp_config(&self) -> BgpConfig {
        let peers = self
            .bgp_peers
            .state()
            .iter()
            .map(|p| (p.name_any(), peer_config(&p.name_any(), &p.spec)))
            .collect();
        let mut advertisements: Vec<BgpAdvertisement> = self
            .bgp_advertisements
            .state()
            .iter()
            .map(|a| bgp_advertisement(a))
            .collect();
        advertisements.sort_by(|a, b| a.name.cmp(&b.name));
        let mut objects = self.communities.state();
        objects.sort_by_key(|c| c.name_any());
        let bfd_profiles = self
            .bfd_profiles
            .state()
            .iter()
            .map(|p| {
                let spec = &p.spec;
                let config = BfdConfig {
                    desired_min_tx: spec.transmit(),
                    required_min_rx: spec.receive(),
                    detect_mult: spec.multiplier(),
                    passive: spec.passive_mode.unwrap_or(false),
                };
                (p.name_any(), config)
            })
            .collect();
        BgpConfig {
            peers,
            advertisements,
            communities: community_names(objects.iter().map(|c| c.as_ref())),
            bfd_profiles,
        }
    }
}

/// The advertisement's fields the decision reads; `communities` entries that do not parse are
/// left out with a warning (the apiserver's rules refuse them first).
pub fn bgp_advertisement(ad: &BGPAdvertisement) -> BgpAdvertisement {
    let communities = ad
        .spec
        .communities
        .iter()
        .filter_map(|c| match parse_community_entry(c) {
            Ok(entry) => Some(entry),
            Err(e) => {
                warn!(advertisement = %ad.name_any(), error = %e, "BGPAdvertisement {}: spec.communities: {e}", ad.name_any());
                None
            }
        })
        .collect();
    BgpAdvertisement {
        name: ad.name_any(),
        pools: ad.spec.ip_address_pools.clone(),
        pool_selectors: ad.spec.ip_address_pool_selectors.clone(),
        node_selectors: ad.spec.node_selectors.clone(),
        peers: ad.spec.peers.clone(),
        aggregation_v4: ad.spec.ipv4_aggregation(),
        aggregation_v6: ad.spec.ipv6_aggregation(),
        local_pref: ad.spec.local_pref,
        communities,
    }
}

/// Community names from every `Community` object, in name order: a name defined twice keeps
/// the first object's value.
pub fn community_names<'a>(
    objects: impl Iterator<Item = &'a Community>,
) -> BTreeMap<String, ferrolb_crds::CommunityValue> {
    let mut names = BTreeMap::new();
    for object in objects {
        for alias in &object.spec.communities {
            match parse_community_value(&alias.value) {
                Ok(value) => {
                    names.entry(alias.name.clone()).or_insert(value);
                }
                Err(e) => {
                    warn!(community = %object.name_any(), error = %e, "Community {}: spec.communities {}: {e}", object.name_any(), alias.name)
                }
            }
        }
    }
    names
}
