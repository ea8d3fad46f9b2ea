//! Writes this node's entries of `BGPPeer.status.sessions` (I/O), on a task of its own so the
//! speaker's main loop never waits on the apiserver.

use std::collections::BTreeMap;

use ferrolb_crds::BGPSessionStatus;
use kube::api::{Api, Patch, PatchParams};

use super::status::{body, manager};

/// Writes each change of `wanted` (this node's entry per peer): entries that differ from what
/// was written, and empty lists for peers this node no longer has. Failures are retried every
/// second; each write waits at most five seconds.
pub async fn writer(
    client: kube::Client,
    node: String,
    mut wanted: tokio::sync::watch::Receiver<BTreeMap<String, BGPSessionStatus>>,
) {
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
