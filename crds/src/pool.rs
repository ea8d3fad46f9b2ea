//! `IPAddressPool`: the addresses ferrolb may hand out, and to whom.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::address::{AddressListError, AddressRange, parse_addresses};
use crate::cel;
use crate::count::AddressCount;
use crate::selector::LabelSelector;

/// Desired state of an `IPAddressPool`. Field names are MetalLB's, so its manifests port by
/// changing `apiVersion` and dropping `metadata.namespace`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    plural = "ipaddresspools",
    shortname = "ippool",
    shortname = "ippools",
    category = "ferrolb",
    status = "IPAddressPoolStatus",
    derive = "PartialEq",
    doc = "A set of addresses that ferrolb allocates to LoadBalancer Services.",
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#,
    printcolumn = r#"{"name":"Auto Assign","type":"boolean","jsonPath":".spec.autoAssign"}"#,
    printcolumn = r#"{"name":"Assigned IPv4","type":"string","jsonPath":".status.assignedIPv4"}"#,
    printcolumn = r#"{"name":"Available IPv4","type":"string","jsonPath":".status.availableIPv4"}"#,
    printcolumn = r#"{"name":"Assigned IPv6","type":"string","jsonPath":".status.assignedIPv6"}"#,
    printcolumn = r#"{"name":"Available IPv6","type":"string","jsonPath":".status.availableIPv6"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// CIDRs, `a-b` ranges and single addresses, IPv4 and IPv6.
    #[schemars(schema_with = "cel::addresses_schema")]
    pub addresses: Vec<String>,
    /// Whether Services that name no pool may get addresses from this one. When false, the pool
    /// serves only Services that name it or request an address inside it.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// Never hand out IPv4 addresses ending in .0 or .255 (some old clients drop them).
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Restricts the pool to some Services and orders pools by priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

fn default_true() -> bool {
    true
}

/// Which Services a pool serves, and how it ranks against other pools.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Among pools that may serve a Service, the lowest positive priority wins; unset or 0 ranks
    /// after every positive priority; ties go by pool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub priority: Option<i32>,
    /// Namespaces whose Services the pool serves (any of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cel::namespace_names_schema")]
    pub namespaces: Vec<String>,
    /// Selectors over namespace labels (any of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Selectors over Service labels (any of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub service_selectors: Vec<LabelSelector>,
}

/// Observed state of an `IPAddressPool`, written by the controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IPAddressPoolStatus {
    /// IPv4 addresses held by Services.
    #[serde(rename = "assignedIPv4", default)]
    pub assigned_ipv4: AddressCount,
    /// IPv4 addresses still free to hand out.
    #[serde(rename = "availableIPv4", default)]
    pub available_ipv4: AddressCount,
    /// IPv6 addresses held by Services.
    #[serde(rename = "assignedIPv6", default)]
    pub assigned_ipv6: AddressCount,
    /// IPv6 addresses still free to hand out.
    #[serde(rename = "availableIPv6", default)]
    pub available_ipv6: AddressCount,
    /// `Valid` (the spec parsed) and `Exhausted`-style conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` these counts and conditions describe.
    #[serde(
        rename = "observedGeneration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub observed_generation: Option<i64>,
}

impl IPAddressPoolSpec {
    /// The parsed address ranges, in the order written; the error names the `spec.addresses`
    /// entry at fault.
    pub fn ranges(&self) -> Result<Vec<AddressRange>, AddressListError> {
        parse_addresses(&self.addresses)
    }
}
