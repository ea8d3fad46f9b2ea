//! `BGPPeer`: a router the speakers open BGP sessions to. Field names are MetalLB's
//! (`metallb.io/v1beta2`), so its manifests port by changing `apiVersion`.

use k8s_openapi::api::core::v1::SecretReference;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bgp_cel;
use crate::selector::LabelSelector;

/// Desired state of a `BGPPeer`: one session from every selected node to this router.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPPeer",
    plural = "bgppeers",
    shortname = "bgppeer",
    category = "ferrolb",
    derive = "PartialEq",
    status = "BGPPeerStatus",
    doc = "A BGP router that the speakers on the selected nodes peer with and announce LoadBalancer IPs to.",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.peerAddress"}"#,
    printcolumn = r#"{"name":"ASN","type":"string","jsonPath":".spec.peerASN"}"#,
    printcolumn = r#"{"name":"My ASN","type":"string","jsonPath":".spec.myASN"}"#,
    printcolumn = r#"{"name":"BFD Profile","type":"string","jsonPath":".spec.bfdProfile"}"#,
    printcolumn = r#"{"name":"Multi Hops","type":"string","jsonPath":".spec.ebgpMultiHop","priority":1}"#,
    printcolumn = r#"{"name":"Sessions","type":"string","jsonPath":".status.sessions[*].state"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = bgp_cel::peer_spec_rules()))]
pub struct BGPPeerSpec {
    /// The nodes' AS number on the session.
    #[serde(rename = "myASN")]
    #[schemars(schema_with = "bgp_cel::asn_schema")]
    pub my_asn: u32,
    /// The router's AS number; the session is refused if the router's OPEN says otherwise.
    /// Exactly one of this and `dynamicASN`.
    #[serde(rename = "peerASN", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "bgp_cel::asn_schema")]
    pub peer_asn: Option<u32>,
    /// Accept the router's AS number from its OPEN: `internal` (must equal `myASN`) or
    /// `external` (must differ). Exactly one of this and `peerASN`.
    #[serde(
        rename = "dynamicASN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dynamic_asn: Option<DynamicAsn>,
    /// The router's address.
    #[schemars(schema_with = "bgp_cel::peer_address_schema")]
    pub peer_address: String,
    /// The router's TCP port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub peer_port: u16,
    /// Local address to connect from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "bgp_cel::source_address_schema")]
    pub source_address: Option<String>,
    /// Hold time offered in OPEN (default 90s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "bgp_cel::hold_time_schema")]
    pub hold_time: Option<String>,
    /// Keepalive interval (default a third of the negotiated hold time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "bgp_cel::keepalive_time_schema")]
    pub keepalive_time: Option<String>,
    /// Longest wait between connection attempts (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "bgp_cel::connect_time_schema")]
    pub connect_time: Option<String>,
    /// BGP identifier (an IPv4 address) sent in OPEN.
    #[serde(rename = "routerID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "bgp_cel::router_id_schema")]
    pub router_id: Option<String>,
    /// Selectors over node labels (any of them): only these nodes peer. Empty: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub node_selectors: Vec<LabelSelector>,
    /// TCP MD5 key, in clear text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "bgp_cel::password_schema")]
    pub password: Option<String>,
    /// A Secret of type `kubernetes.io/basic-auth` whose `password` key holds the TCP MD5 key.
    /// Without a namespace, the speaker's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretReference>,
    /// Name of a `BFDProfile`: run BFD (RFC 5880) beside the session and drop the session the
    /// moment BFD says the path is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "bgp_cel::object_name_schema")]
    pub bfd_profile: Option<String>,
    /// The router is more than one hop away (eBGP multihop: TTL 255 instead of 1).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ebgp_multi_hop: bool,
    /// Offer graceful restart (RFC 4724): when a speaker restarts, the router keeps its routes
    /// until the session is back, instead of withdrawing them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_graceful_restart: bool,
    /// Announce only the session's own address family (IPv4 routes over an IPv4 session, IPv6
    /// over IPv6). By default both families go over every session (MP-BGP, RFC 4760).
    #[serde(
        rename = "disableMP",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_mp: bool,
}

fn default_port() -> u16 {
    179
}

/// Observed state of a `BGPPeer`: one entry per node that peers, each written by that node's
/// speaker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BGPPeerStatus {
    /// Each node's session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub sessions: Vec<BGPSessionStatus>,
}

/// One node's session with the router.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStatus {
    /// The node.
    pub node: String,
    /// RFC 4271 state: Idle, Connect, OpenSent, OpenConfirm or Established.
    pub state: String,
    /// When the session entered this state (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The node's address on the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_address: Option<String>,
    /// Prefixes the router holds from this node.
    #[serde(default)]
    pub prefixes: u32,
    /// Routes this node should announce to the router that the session cannot carry: their
    /// family was not negotiated, or the node has no address of that family on the link to
    /// use as next hop.
    #[serde(default)]
    pub held_back: u32,
    /// BFD state (Up, Down, Init), when the peer uses BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<String>,
    /// Why the session last went down or failed to come up, until it is up again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// How the router's AS number is learnt when `peerASN` is not set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DynamicAsn {
    /// iBGP: the router's ASN must be `myASN`.
    Internal,
    /// eBGP: the router's ASN must differ from `myASN`.
    External,
}
