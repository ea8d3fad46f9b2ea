//! `BFDProfile`: the timers of the BFD sessions (RFC 5880, single hop RFC 5881) run beside the
//! BGP sessions of the peers that name it.

use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a `BFDProfile`. Unset fields take the defaults of FRR and MetalLB: 300 ms
/// intervals, a multiplier of 3 (a dead path is detected within 900 ms).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BFDProfile",
    plural = "bfdprofiles",
    shortname = "bfdprofile",
    category = "ferrolb",
    derive = "PartialEq",
    doc = "Timers of the BFD sessions that detect a dead path to a BGP peer in under a second.",
    printcolumn = r#"{"name":"Passive Mode","type":"boolean","jsonPath":".spec.passiveMode"}"#,
    printcolumn = r#"{"name":"Transmit Interval","type":"integer","jsonPath":".spec.transmitInterval"}"#,
    printcolumn = r#"{"name":"Receive Interval","type":"integer","jsonPath":".spec.receiveInterval"}"#,
    printcolumn = r#"{"name":"Multiplier","type":"integer","jsonPath":".spec.detectMultiplier"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BFDProfileSpec {
    /// Shortest interval between control packets this node can receive, in milliseconds
    /// (10 to 60000, default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub receive_interval: Option<u32>,
    /// Shortest interval at which this node wants to send control packets, in milliseconds
    /// (10 to 60000, default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub transmit_interval: Option<u32>,
    /// Missed packets after which the path counts as down (2 to 255, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 255))]
    pub detect_multiplier: Option<u32>,
    /// Echo receive interval, in milliseconds (10 to 60000). Accepted for MetalLB manifests;
    /// it has no effect, because echo mode is not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub echo_interval: Option<u32>,
    /// Echo mode. Only `false` is accepted: the speaker sends control packets only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!self",
        "message": "echo mode is not supported (BFD control packets only); remove spec.echoMode or set it to false",
    }]))]
    pub echo_mode: Option<bool>,
    /// Wait for the router's first control packet before sending any (RFC 5880 passive role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_mode: Option<bool>,
    /// Lowest TTL accepted on control packets of multihop sessions (1 to 254, default 254).
    /// Single-hop sessions always require 255 (RFC 5881, GTSM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub minimum_ttl: Option<u32>,
}

impl BFDProfileSpec {
    /// Required minimum receive interval in effect.
    pub fn receive(&self) -> Duration {
        Duration::from_millis(self.receive_interval.unwrap_or(300).into())
    }

    /// Desired minimum transmit interval in effect.
    pub fn transmit(&self) -> Duration {
        Duration::from_millis(self.transmit_interval.unwrap_or(300).into())
    }

    /// Detection multiplier in effect.
    pub fn multiplier(&self) -> u8 {
        self.detect_multiplier.unwrap_or(3).clamp(2, 255) as u8
    }
}
