//! This node's entry in `BGPPeer.status.sessions` (pure): what a session's status becomes, and
//! the server-side apply body that writes only this node's entry. `status_writer.rs` writes them.

use ferrolb_crds::BGPSessionStatus;
use ferrolb_crds::contract::field_manager;

use super::session::SessionStatus;

/// The field manager of `node`'s entries.
pub fn manager(node: &str) -> String {
    format!("{}{node}", field_manager::SPEAKER_NODE_PREFIX)
}

/// The entry `node` writes for a session in `status`, in that state since `since` (RFC 3339).
pub fn entry(node: &str, status: &SessionStatus, since: &str) -> BGPSessionStatus {
    BGPSessionStatus {
        node: node.to_string(),
        state: status.state.name().to_string(),
        since: Some(since.to_string()),
        local_address: status.local_address.map(|a| a.to_string()),
        prefixes: u32::try_from(status.routes_sent).unwrap_or(u32::MAX),
        bfd: status.bfd.map(|b| b.name().to_string()),
        held_back: u32::try_from(status.held_back).unwrap_or(u32::MAX),
        last_error: status.last_error.clone(),
    }
}

/// The apply body for `BGPPeer` `peer`'s status holding `entry` (or, with `None`, none of this
/// node's: applying an empty list under this node's manager removes its entry).
pub fn body(peer: &str, entry: Option<&BGPSessionStatus>) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "BGPPeer",
        "metadata": {"name": peer},
        "status": {"sessions": entry.into_iter().collect::<Vec<_>>()},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bfd::packet::BfdState;
    use crate::bgp::fsm::State;

    #[test]
    fn the_entry_names_the_node_state_and_reason() {
        let status = SessionStatus {
            state: State::Idle,
            last_error: Some("cannot connect: connection refused".into()),
            bfd: Some(BfdState::Down),
            held_back: 2,
            ..SessionStatus::idle()
        };
        let e = entry("node1", &status, "2026-12-05T00:00:00Z");
        assert_eq!(e.state, "Idle");
        assert_eq!(e.bfd.as_deref(), Some("Down"));
        assert_eq!(e.held_back, 2);
        assert_eq!(
            e.last_error.as_deref(),
            Some("cannot connect: connection refused")
        );
        let b = body("tor", Some(&e));
        assert_eq!(b["status"]["sessions"][0]["node"], "node1");
        assert_eq!(
            b["status"]["sessions"][0]["lastError"],
            "cannot connect: connection refused"
        );
        assert_eq!(
            body("tor", None)["status"]["sessions"],
            serde_json::json!([])
        );
        assert_eq!(manager("node1"), "ferrolb-speaker/node1");
    }
}
