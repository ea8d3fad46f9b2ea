//! What the speaker's pure core knows of the cluster: the facts about Nodes, `IPAddressPool`s,
//! `L2Advertisement`s, LoadBalancer Services and their endpoints that eligibility and election
//! read, gathered in one [`Snapshot`]. Plain data: [`crate::sources`] fills it from the watched
//! objects, [`crate::eligibility`] and [`crate::plan`] decide on it, nothing here reads the API.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_crds::community::{CommunityEntry, CommunityValue};
use ferrolb_crds::{AddressRange, LabelSelector};

use crate::bgp::config::{ConfigError, PeerConfig};

use crate::plan::ServiceKey;

/// What the speaker needs of a Node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Its labels (for `nodeSelectors`).
    pub labels: BTreeMap<String, String>,
    /// The `NetworkUnavailable` condition is True.
    pub network_unavailable: bool,
}

/// What the speaker needs of an `IPAddressPool`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolInfo {
    /// Pool name.
    pub name: String,
    /// Its labels (for `ipAddressPoolSelectors`).
    pub labels: BTreeMap<String, String>,
    /// Its addresses (entries that do not parse are left out; the controller reports them).
    pub ranges: Vec<AddressRange>,
}

impl PoolInfo {
    /// Whether `ip` is one of the pool's addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }
}

/// What the speaker needs of an `L2Advertisement`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Advertisement {
    /// Object name.
    pub name: String,
    /// `spec.ipAddressPools`.
    pub pools: Vec<String>,
    /// `spec.ipAddressPoolSelectors`.
    pub pool_selectors: Vec<LabelSelector>,
    /// `spec.nodeSelectors` (empty: every node).
    pub node_selectors: Vec<LabelSelector>,
    /// `spec.interfaces` (empty: every suitable interface).
    pub interfaces: Vec<String>,
}

/// What the speaker needs of a `BGPAdvertisement`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BgpAdvertisement {
    /// Object name.
    pub name: String,
    /// `spec.ipAddressPools`.
    pub pools: Vec<String>,
    /// `spec.ipAddressPoolSelectors`.
    pub pool_selectors: Vec<LabelSelector>,
    /// `spec.nodeSelectors` (empty: every node).
    pub node_selectors: Vec<LabelSelector>,
    /// `spec.peers` (empty: every peer).
    pub peers: Vec<String>,
    /// IPv4 aggregation length in effect (32 unless set).
    pub aggregation_v4: u8,
    /// IPv6 aggregation length in effect (128 unless set).
    pub aggregation_v6: u8,
    /// `spec.localPref`.
    pub local_pref: Option<u32>,
    /// `spec.communities`, read (entries that do not parse are left out and reported).
    pub communities: Vec<CommunityEntry>,
}

/// The BGP configuration the speaker reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BgpConfig {
    /// Every `BGPPeer` by name, read or refused.
    pub peers: BTreeMap<String, Result<PeerConfig, ConfigError>>,
    /// Every `BGPAdvertisement`.
    pub advertisements: Vec<BgpAdvertisement>,
    /// Community names defined by `Community` objects.
    pub communities: BTreeMap<String, CommunityValue>,
    /// BFD timers of every `BFDProfile`, by name.
    pub bfd_profiles: BTreeMap<String, crate::bfd::session::BfdConfig>,
}

/// What the speaker needs of a LoadBalancer Service it may announce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `namespace/name`.
    pub key: ServiceKey,
    /// Addresses in `status.loadBalancer.ingress`.
    pub ips: Vec<IpAddr>,
    /// The `ferrolb.io/ip-allocated-from-pool` annotation.
    pub pool: Option<String>,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// Nodes with a ready (or serving) endpoint of the Service (used when `local`).
    pub endpoint_nodes: BTreeSet<String>,
}

/// Everything election needs, as read from the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Pools by name.
    pub pools: BTreeMap<String, PoolInfo>,
    /// Every L2Advertisement.
    pub advertisements: Vec<Advertisement>,
    /// Every handled LoadBalancer Service with at least one ingress IP, by key.
    pub services: BTreeMap<ServiceKey, ServiceInfo>,
    /// BGP peers, advertisements and community names.
    pub bgp: BgpConfig,
}

impl Snapshot {
    /// Adds (or replaces) a Service.
    pub fn insert_service(&mut self, svc: ServiceInfo) {
        self.services.insert(svc.key.clone(), svc);
    }
}

/// What changed in a [`Snapshot`] kept up to date.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotDelta {
    /// Services whose facts changed (added, edited, removed).
    pub services: BTreeSet<ServiceKey>,
    /// Nodes, pools or advertisements changed, or everything was read again.
    pub everything: bool,
}

impl SnapshotDelta {
    /// Adds what `later` changed.
    pub fn merge(&mut self, later: SnapshotDelta) {
        self.everything |= later.everything;
        self.services.extend(later.services);
    }
}
