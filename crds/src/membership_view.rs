//! What a speaker serves at [`PATH`] on its probe port: its view of which speakers are alive.
//! `kubectl ferrolb status` reads it through the apiserver's pod proxy to show each speaker's
//! view and whether they agree. It names nodes only: no addresses, no Services.

use serde::{Deserialize, Serialize};

/// The path on the speaker's probe port (`speaker.port`, next to `/healthz` and `/readyz`).
pub const PATH: &str = "/membership";

/// One speaker's view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MembershipView {
    /// The speaker's own node.
    pub node: String,
    /// Where its view comes from.
    pub source: ViewSource,
    /// The nodes whose speakers it sees alive (its own included), sorted.
    pub live: Vec<String>,
}

/// Where a speaker's view of live speakers comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ViewSource {
    /// Authenticated heartbeats between the speakers.
    Mesh,
    /// No heartbeat accepted for a while: the Node objects' readiness stands in (slow failover).
    NodeFallback,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_camel_case_json() {
        let view = MembershipView {
            node: "node1".into(),
            source: ViewSource::NodeFallback,
            live: vec!["node1".into(), "node2".into()],
        };
        let json = serde_json::to_string(&view).unwrap();
        assert_eq!(
            json,
            r#"{"node":"node1","source":"nodeFallback","live":["node1","node2"]}"#
        );
        assert_eq!(serde_json::from_str::<MembershipView>(&json).unwrap(), view);
        assert!(
            serde_json::from_str::<MembershipView>(r#"{"node":"n","source":"x","live":[]}"#)
                .is_err()
        );
    }
}
