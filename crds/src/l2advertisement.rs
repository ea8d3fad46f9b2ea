//! `L2Advertisement`: which pools are announced over ARP/NDP, from which nodes and interfaces.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cel;
use crate::selector::LabelSelector;

/// Desired state of an `L2Advertisement`. With no pool named or selected, every pool is
/// announced; with no node selector, every node may announce.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    plural = "l2advertisements",
    shortname = "l2adv",
    category = "ferrolb",
    derive = "PartialEq",
    doc = "Announces the addresses of some IPAddressPools on the local network with ARP and NDP.",
    printcolumn = r#"{"name":"IPAddressPools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"Pool Selectors","type":"string","jsonPath":".spec.ipAddressPoolSelectors","priority":1}"#,
    printcolumn = r#"{"name":"Interfaces","type":"string","jsonPath":".spec.interfaces"}"#,
    printcolumn = r#"{"name":"Node Selectors","type":"string","jsonPath":".spec.nodeSelectors","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Names of the pools to announce.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::pool_names_schema")]
    pub ip_address_pools: Vec<String>,
    /// Selectors over pool labels (any of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Selectors over node labels (any of them); empty means every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to announce on; empty means every suitable interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::interface_names_schema")]
    pub interfaces: Vec<String>,
}
