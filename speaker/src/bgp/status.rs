//! This node's entry in `BGPPeer.status.sessions`: what a session's status becomes and the
//! server-side apply body that writes only this node's entry (pure), and the task that writes
//! them (I/O).

use std::collections::BTreeMap;

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

/// Writes each change of `wanted` (this node's entry per peer): entries that differ from what
/// was written, and empty lists for peers this node no longer has. Failures are retried every
/// second; each write waits at most five seconds.
pub async fn writer(
    client: kube::Client,
    node: String,
    mut wanted: tokio::sync::watch::Receiver<BTreeMap<String, BGPSessionStatus>>,
) {
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<ferrolb_crds::BGPPeer> = Api::all(client);
    let params = PatchParams::apply(&manager(&node)).force();
    let mut written: BTreeMap<String, BGPSessionStatus> = BTreeMap::new();
    let mut failed = false;
    loop {
        if failed {
            tokio::select! {
                r = wanted.changed() => if r.is_err() { return },
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        } else if wanted.changed().await.is_err() {
            return;
        }
        failed = false;
        let now = wanted.borrow_and_update().clone();
        let gone: Vec<String> = written
            .keys()
            .filter(|p| !now.contains_key(*p))
            .cloned()
            .collect();
        let changes: Vec<(String, Option<BGPSessionStatus>)> = now
            .iter()
            .filter(|(p, e)| written.get(*p) != Some(*e))
            .map(|(p, e)| (p.clone(), Some(e.clone())))
            .chain(gone.into_iter().map(|p| (p, None)))
            .collect();
        for (peer, entry) in changes {
            let apply = Patch::Apply(body(&peer, entry.as_ref()));
            let patch = api.patch_status(&peer, &params, &apply);
            match tokio::time::timeout(std::time::Duration::from_secs(5), patch).await {
                Ok(Ok(_)) => match entry {
                    Some(e) => {
                        written.insert(peer, e);
                    }
                    None => {
                        written.remove(&peer);
                    }
                },
                // The peer is gone, and its status with it.
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => {
                    written.remove(&peer);
                }
                Ok(Err(e)) => {
                    tracing::warn!(peer = %peer, error = %e, "writing BGPPeer {peer} status.sessions failed; retrying");
                    failed = true;
                }
                Err(_) => failed = true,
            }
        }
    }
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
            ..SessionStatus::idle()
        };
        let e = entry("node1", &status, "2026-12-05T00:00:00Z");
        assert_eq!(e.state, "Idle");
        assert_eq!(e.bfd.as_deref(), Some("Down"));
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
