//! This node's BGP sessions (I/O): one [`Session`] per `BGPPeer` that selects the node, started,
//! restarted and stopped as the peers change, each handed the routes the decision gives it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_crds::BGPSessionStatus;
use kube::Client;
use tracing::{error, info};

use super::config::PasswordSource;
use super::fsm::{State, StopReason};
use super::metrics::BgpMetrics;
use super::route_table::RouteTable;
use super::routes::peers_of;
use super::secrets::Secrets;
use super::session::{Routes, Session, SessionConfig};
use super::{status, status_writer};
use crate::bfd::task::Bfd;
use crate::model::{Snapshot, SnapshotDelta};

/// The sessions of this node.
pub struct BgpSpeaker {
    node: String,
    client: Client,
    sessions: BTreeMap<String, (SessionConfig, Session)>,
    secrets: Secrets,
    /// The routes to each peer, kept up to date Service by Service.
    table: RouteTable,
    reported: BTreeSet<String>,
    metrics: BgpMetrics,
    /// The node's BFD task, started when a peer first asks for BFD.
    bfd: Option<Bfd>,
    /// Each peer's session state and when it was entered.
    since: BTreeMap<String, (State, String)>,
    /// This node's entry for each of its peers, for the status writer task.
    status_out: tokio::sync::watch::Sender<BTreeMap<String, BGPSessionStatus>>,
}

impl std::fmt::Debug for BgpSpeaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgpSpeaker")
            .field("node", &self.node)
            .field("sessions", &self.sessions.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl BgpSpeaker {
    /// No sessions yet; `client` reads `passwordSecret`s.
    pub fn new(node: impl Into<String>, client: Client, metrics: BgpMetrics) -> BgpSpeaker {
        let node: String = node.into();
        let secrets = Secrets::start(client.clone());
        let (status_out, status_in) = tokio::sync::watch::channel(BTreeMap::new());
        tokio::spawn(status_writer::writer(
            client.clone(),
            node.clone(),
            status_in,
        ));
        BgpSpeaker {
            node,
            client,
            sessions: BTreeMap::new(),
            secrets,
            table: RouteTable::default(),
            reported: BTreeSet::new(),
            metrics,
            bfd: None,
            since: BTreeMap::new(),
            status_out,
        }
    }

    /// Brings the sessions and their routes in line with `snapshot`, of which `delta` changed
    /// since the last call.
    pub fn update(&mut self, snapshot: &Snapshot, delta: &SnapshotDelta) {
        let touched = self.table.update(snapshot, &self.node, delta);
        // Every problem seen in this pass; each is logged once, when it first appears.
        let mut problems: BTreeSet<String> =
            self.table.problems().into_iter().map(|p| p.0).collect();
        for (name, peer) in &snapshot.bgp.peers {
            if let Err(e) = peer {
                problems.insert(format!("BGPPeer {name} refused: {e}"));
            }
        }
        let wanted: BTreeMap<String, SessionConfig> = match snapshot.nodes.get(&self.node) {
            Some(node) => {
                let mut out = BTreeMap::new();
                for (name, peer) in peers_of(snapshot, node) {
                    let md5_key = match &peer.password {
                        None => None,
                        Some(PasswordSource::Inline(p)) => Some(p.clone().into_bytes()),
                        Some(PasswordSource::Secret {
                            namespace,
                            name: secret,
                        }) => match self.secret(namespace.as_deref(), secret) {
                            Some(Ok(key)) => Some(key),
                            // Asked for; the loop runs again once it is read.
                            None => continue,
                            Some(Err(e)) => {
                                problems.insert(format!("BGPPeer {name}: spec.passwordSecret cannot be read ({e}); no session until it can"));
                                continue;
                            }
                        },
                    };
                    let bfd = match &peer.bfd_profile {
                        None => None,
                        Some(profile) => match snapshot.bgp.bfd_profiles.get(profile) {
                            Some(timers) => Some(*timers),
                            None => {
                                problems.insert(format!("BGPPeer {name}: spec.bfdProfile names BFDProfile {profile}, which does not exist; the session runs without BFD"));
                                None
                            }
                        },
                    };
                    out.insert(
                        name.to_string(),
                        SessionConfig {
                            peer: peer.clone(),
                            md5_key,
                            node: self.node.clone(),
                            bfd,
                        },
                    );
                }
                out
            }
            None => BTreeMap::new(),
        };
        for p in problems.difference(&self.reported) {
            error!(node = %self.node, "{p}");
        }
        self.reported = problems;
        let gone: Vec<String> = self
            .sessions
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some((_, session)) = self.sessions.remove(&name) {
                info!(peer = %name, "BGP peer no longer applies to this node; closing its session");
                session.stop(StopReason::Deconfigured);
                tokio::spawn(session.finished());
                self.metrics.forget(&name);
            }
        }
        let empty: Routes = Arc::new(BTreeMap::new());
        for (name, config) in wanted {
            let routes = || -> Routes {
                self.table
                    .routes()
                    .get(&name)
                    .map(|r| Arc::new(r.clone()))
                    .unwrap_or_else(|| empty.clone())
            };
            match self.sessions.get(&name) {
                Some((current, session)) if *current == config => {
                    if touched.contains(&name) {
                        session.set_routes(routes());
                    }
                }
                _ => {
                    if let Some((_, old)) = self.sessions.remove(&name) {
                        info!(peer = %name, "BGPPeer changed; reconnecting");
                        old.stop(StopReason::Deconfigured);
                        tokio::spawn(old.finished());
                    }
                    info!(peer = %name, router = %config.peer.address, "starting BGP session");
                    if config.bfd.is_some() && self.bfd.is_none() {
                        match Bfd::start() {
                            Ok(bfd) => self.bfd = Some(bfd),
                            Err(e) => {
                                error!(error = %e, "cannot listen for BFD on UDP port {}; sessions run without BFD", crate::bfd::task::CONTROL_PORT)
                            }
                        }
                    }
                    let session = Session::start(
                        config.clone(),
                        routes(),
                        self.metrics.session(&name),
                        self.bfd.clone(),
                    );
                    self.sessions.insert(name, (config, session));
                }
            }
        }
    }

    /// The key of `namespace/name` (the speaker's namespace when `None`; no other is allowed,
    /// its RBAC grants only that one), as cached; `None` until it has been read.
    fn secret(&self, namespace: Option<&str>, name: &str) -> Option<Result<Vec<u8>, String>> {
        let own = self.client.default_namespace().to_string();
        let namespace = namespace.unwrap_or(&own).to_string();
        if namespace != own {
            return Some(Err(format!(
                "Secret {namespace}/{name} is outside the speaker's namespace {own}; the speaker reads Secrets only there (move the Secret, or leave spec.passwordSecret.namespace empty)"
            )));
        }
        self.secrets.get(&(namespace, name.to_string()))
    }

    /// Changes when a Secret read finished: call [`BgpSpeaker::update`] again.
    pub fn secrets_read(&self) -> tokio::sync::watch::Receiver<u64> {
        self.secrets.read()
    }

    /// Hands this node's entries of the peers' `status.sessions` to the status writer task
    /// (which writes what changed, removes entries of peers this node no longer has, and
    /// retries failures), so the main loop never waits on the apiserver.
    pub fn report(&mut self) {
        let now = std::time::SystemTime::now();
        let stamp = k8s_openapi::jiff::Timestamp::try_from(now)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let mut wanted: BTreeMap<String, Option<BGPSessionStatus>> = BTreeMap::new();
        for (name, (_, session)) in &self.sessions {
            let status = session.status().borrow().clone();
            let since = match self.since.get(name) {
                Some((state, at)) if *state == status.state => at.clone(),
                _ => {
                    self.since
                        .insert(name.clone(), (status.state, stamp.clone()));
                    stamp.clone()
                }
            };
            wanted.insert(
                name.clone(),
                Some(status::entry(&self.node, &status, &since)),
            );
        }
        self.since
            .retain(|name, _| self.sessions.contains_key(name));
        self.status_out.send_replace(
            wanted
                .into_iter()
                .filter_map(|(name, entry)| Some((name, entry?)))
                .collect(),
        );
    }

    /// Stops every session: with graceful restart the routers keep the routes; otherwise they
    /// are told (Cease) and withdraw them.
    pub async fn shutdown(self) {
        for (_, (_, session)) in self.sessions {
            session.stop(StopReason::Shutdown);
            let _ = tokio::time::timeout(Duration::from_secs(2), session.finished()).await;
        }
    }
}
