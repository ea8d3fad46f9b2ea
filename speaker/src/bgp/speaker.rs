//! This node's BGP sessions (I/O): one [`Session`] per `BGPPeer` that selects the node, started,
//! restarted and stopped as the peers change, each handed the routes the decision gives it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb_crds::{BGPPeer, BGPSessionStatus};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tracing::{error, info, warn};

use super::config::PasswordSource;
use super::fsm::{State, StopReason};
use super::metrics::BgpMetrics;
use super::routes::{Decision, decide, peers_of};
use super::session::{Routes, Session, SessionConfig, SessionStatus};
use super::status;
use crate::bfd::task::Bfd;
use crate::model::Snapshot;

/// How long a password read from a Secret is used before it is read again.
pub const SECRET_REFRESH: Duration = Duration::from_secs(60);

/// A password read from a Secret (namespace, name), and when.
type ReadSecret = (Instant, Result<Vec<u8>, String>);

/// The sessions of this node.
pub struct BgpSpeaker {
    node: String,
    client: Client,
    sessions: BTreeMap<String, (SessionConfig, Session)>,
    secrets: HashMap<(String, String), ReadSecret>,
    decision: Decision,
    reported: BTreeSet<String>,
    metrics: BgpMetrics,
    /// The node's BFD task, started when a peer first asks for BFD.
    bfd: Option<Bfd>,
    /// Each peer's session state and when it was entered.
    since: BTreeMap<String, (State, String)>,
    /// This node's entry as last written to each peer's status.
    written: BTreeMap<String, Option<BGPSessionStatus>>,
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
        BgpSpeaker {
            node: node.into(),
            client,
            sessions: BTreeMap::new(),
            secrets: HashMap::new(),
            decision: Decision::default(),
            reported: BTreeSet::new(),
            metrics,
            bfd: None,
            since: BTreeMap::new(),
            written: BTreeMap::new(),
        }
    }

    /// The latest decision.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// Each session's status, by peer.
    pub fn statuses(&self) -> BTreeMap<String, SessionStatus> {
        self.sessions
            .iter()
            .map(|(name, (_, s))| (name.clone(), s.status().borrow().clone()))
            .collect()
    }

    /// Brings the sessions and their routes in line with `snapshot`.
    pub async fn update(&mut self, snapshot: &Snapshot) {
        let decision = decide(snapshot, &self.node);
        // Every problem seen in this pass; each is logged once, when it first appears.
        let mut problems: BTreeSet<String> =
            decision.problems.iter().map(|p| p.0.clone()).collect();
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
                        }) => match self.secret(namespace.as_deref(), secret).await {
                            Ok(key) => Some(key),
                            Err(e) => {
                                error!(peer = %name, error = %e, "BGPPeer {name}: spec.passwordSecret cannot be read; no session until it can");
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
            let routes: Routes = decision
                .routes
                .get(&name)
                .map(|r| Arc::new(r.clone()))
                .unwrap_or_else(|| empty.clone());
            match self.sessions.get(&name) {
                Some((current, session)) if *current == config => {
                    if self.decision.routes.get(&name) != decision.routes.get(&name) {
                        session.set_routes(routes);
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
                        routes,
                        self.metrics.session(&name),
                        self.bfd.clone(),
                    );
                    self.sessions.insert(name, (config, session));
                }
            }
        }
        self.decision = decision;
    }

    /// The `password` key of Secret `namespace/name` (the speaker's namespace when `None`; no
    /// other is allowed, its RBAC grants only that one), read again after [`SECRET_REFRESH`].
    async fn secret(&mut self, namespace: Option<&str>, name: &str) -> Result<Vec<u8>, String> {
        let own = self.client.default_namespace().to_string();
        let namespace = namespace.unwrap_or(&own).to_string();
        if namespace != own {
            return Err(format!(
                "Secret {namespace}/{name} is outside the speaker's namespace {own}; the speaker reads Secrets only there (move the Secret, or leave spec.passwordSecret.namespace empty)"
            ));
        }
        let key = (namespace.clone(), name.to_string());
        if let Some((at, value)) = self.secrets.get(&key)
            && at.elapsed() < SECRET_REFRESH
        {
            return value.clone();
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let value = match api.get(name).await {
            Ok(secret) => secret
                .data
                .and_then(|d| d.get("password").map(|v| v.0.clone()))
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("Secret {namespace}/{name} has no key \"password\"")),
            Err(e) => Err(format!("reading Secret {namespace}/{name}: {e}")),
        };
        self.secrets.insert(key, (Instant::now(), value.clone()));
        value
    }

    /// Writes this node's entry of each peer's `status.sessions` that changed since the last
    /// call, and removes its entry from peers it no longer has. Failed writes are retried on
    /// the next call.
    pub async fn report(&mut self) {
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
        for name in self.written.keys() {
            wanted.entry(name.clone()).or_insert(None);
        }
        self.since
            .retain(|name, _| self.sessions.contains_key(name));
        let api: Api<BGPPeer> = Api::all(self.client.clone());
        let params = PatchParams::apply(&status::manager(&self.node)).force();
        for (name, entry) in wanted {
            if self.written.get(&name) == Some(&entry) {
                continue;
            }
            match api
                .patch_status(
                    &name,
                    &params,
                    &Patch::Apply(&status::body(&name, entry.as_ref())),
                )
                .await
            {
                Ok(_) => {
                    if entry.is_some() {
                        self.written.insert(name, entry);
                    } else {
                        self.written.remove(&name);
                    }
                }
                // The peer is gone, and its status with it.
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    self.written.remove(&name);
                }
                Err(e) => {
                    warn!(peer = %name, error = %e, "writing BGPPeer {name} status.sessions failed; retrying")
                }
            }
        }
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
