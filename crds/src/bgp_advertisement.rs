//! `BGPAdvertisement`: which pools are announced over BGP, to which peers, from which nodes,
//! and with which attributes.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bgp_cel;
use crate::cel;
use crate::selector::LabelSelector;

/// Desired state of a `BGPAdvertisement`. With no pool named or selected, every pool is
/// announced; with no node selector, every node announces; with no peer named, to every peer.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPAdvertisement",
    plural = "bgpadvertisements",
    shortname = "bgpadv",
    category = "ferrolb",
    derive = "PartialEq",
    doc = "Announces the addresses of some IPAddressPools to BGP peers, with the nodes as next hops.",
    printcolumn = r#"{"name":"IPAddressPools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"Pool Selectors","type":"string","jsonPath":".spec.ipAddressPoolSelectors","priority":1}"#,
    printcolumn = r#"{"name":"Peers","type":"string","jsonPath":".spec.peers"}"#,
    printcolumn = r#"{"name":"Node Selectors","type":"string","jsonPath":".spec.nodeSelectors","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// Prefix length IPv4 addresses are announced under: 32 announces each address; shorter
    /// announces the covering prefix once (e.g. 24: one /24 for every address in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 32))]
    pub aggregation_length: Option<i32>,
    /// The same for IPv6 addresses (128 announces each address).
    #[serde(
        rename = "aggregationLengthV6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 128))]
    pub aggregation_length_v6: Option<i32>,
    /// LOCAL_PREF attribute on the routes; sent to iBGP peers only (RFC 4271 forbids it on
    /// eBGP sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "local_pref_schema")]
    pub local_pref: Option<u32>,
    /// Communities attached to the routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "bgp_cel::communities_schema")]
    pub communities: Vec<String>,
    /// Names of the pools to announce.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::pool_names_schema")]
    pub ip_address_pools: Vec<String>,
    /// Selectors over pool labels (any of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Selectors over node labels (any of them): only these nodes announce. Empty: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub node_selectors: Vec<LabelSelector>,
    /// Names of the BGPPeers to announce to. Empty: every peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "bgp_cel::peer_names_schema")]
    pub peers: Vec<String>,
}

fn local_pref_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let _ = generator;
    schemars::json_schema!({
        "description": "LOCAL_PREF (0 to 4294967295); higher is preferred by the peers' best-path choice.",
        "type": "integer",
        "format": "int64",
        "minimum": 0,
        "maximum": 4294967295_u64,
    })
}

impl BGPAdvertisementSpec {
    /// The IPv4 aggregation length in effect (32 unless set).
    pub fn ipv4_aggregation(&self) -> u8 {
        self.aggregation_length.map_or(32, |l| l.clamp(0, 32) as u8)
    }

    /// The IPv6 aggregation length in effect (128 unless set).
    pub fn ipv6_aggregation(&self) -> u8 {
        self.aggregation_length_v6
            .map_or(128, |l| l.clamp(0, 128) as u8)
    }
}
