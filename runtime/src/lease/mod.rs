//! Leader election through a `coordination.k8s.io/v1` Lease: of the controller's replicas, exactly
//! one acts.
//!
//! ```text
//!  acquire()  get -> decide (pure, decide.rs) -> create (404) / replace with resourceVersion
//!  hold()     the same every retry_period; returns when another identity holds the Lease or no
//!             renewal succeeded for renew_deadline
//!  release()  clears holderIdentity if it is still ours, so a standby takes over at once
//! ```
//!
//! Safety: a leader counts its `renew_deadline` from the moment it *sent* its last successful
//! write, and `renew_deadline < lease_duration`. A candidate counts `lease_duration` from when it
//! first *saw* that write, which is later. So a leader that cannot renew has stopped before anyone
//! may take the Lease, whatever the clocks of the machines say. Writes carry the resourceVersion
//! they were based on: of two candidates racing for a free Lease, exactly one write lands.

mod decide;

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::health::WatchStatus;
use tokio::time::{Instant, sleep, sleep_until, timeout};

pub use decide::{Decision, Sighting, decide, duration_seconds, next_spec, observe};

/// Identity and timings of one candidate for one Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate's identity (the pod name): unique among the candidates.
    pub identity: String,
    /// How long a candidate waits after last seeing the Lease change before it takes it over.
    /// Written to `leaseDurationSeconds`, rounded up to whole seconds.
    pub lease_duration: Duration,
    /// How long a leader keeps acting without a successful renewal. Must be below
    /// `lease_duration`.
    pub renew_deadline: Duration,
    /// Pause between two attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// Default timings: lease 4 s, renew deadline 2 s, retry every 500 ms.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
        }
    }

    fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A failed call to the apiserver about the Lease that retrying will not fix.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The apiserver refused a request.
    // The cause is in the message (not a `source`) so one line in a log says everything.
    #[error("{action} Lease {lease}: {cause}{hint}")]
    Api {
        /// The Lease, `namespace/name`.
        lease: String,
        /// What we were doing: "reading", "creating", "updating".
        action: &'static str,
        /// What to do about it, when we know.
        hint: &'static str,
        /// The apiserver's answer.
        cause: kube::Error,
    },
    /// The configuration cannot give the safety guarantee.
    #[error(
        "Lease {lease}: renew deadline {renew_deadline:?} must be shorter than the lease duration \
         {lease_duration:?}, else two replicas may act at once"
    )]
    Timings {
        /// The Lease, `namespace/name`.
        lease: String,
        /// The configured renew deadline.
        renew_deadline: Duration,
        /// The configured lease duration.
        lease_duration: Duration,
    },
}

/// Why [`LeaderElector::hold`] returned: this instance must stop acting at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeadershipLost {
    /// Another identity holds the Lease.
    TakenBy(String),
    /// The Lease was deleted or its holder cleared by someone else.
    Cleared,
    /// No renewal succeeded within the renew deadline.
    RenewDeadline {
        /// The configured renew deadline.
        deadline: Duration,
        /// The last renewal error, if the attempts failed rather than hung.
        last_error: Option<String>,
    },
}

impl fmt::Display for LeadershipLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeadershipLost::TakenBy(holder) => write!(f, "the Lease is now held by {holder}"),
            LeadershipLost::Cleared => write!(f, "the Lease was deleted or its holder cleared"),
            LeadershipLost::RenewDeadline {
                deadline,
                last_error,
            } => {
                write!(f, "no renewal succeeded within {deadline:?}")?;
                match last_error {
                    Some(e) => write!(f, "; last error: {e}"),
                    None => write!(f, "; requests did not complete"),
                }
            }
        }
    }
}

/// One candidate in the election for one Lease.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The record as last read, with when we first saw it (local clock).
    sighting: Option<Sighting>,
    /// When the last successful acquire/renew was sent: we lead until this + renew_deadline.
    renewed_at: Option<Instant>,
    /// Where [`acquire`](Self::acquire) reports whether it reaches the Lease, if anywhere.
    reachability: Option<WatchStatus>,
}

/// The result of one get-decide-write round.
enum Outcome {
    /// Our write landed.
    Leading,
    /// Another write landed between our read and our write.
    Conflict,
    /// The Lease is not ours (and this round was not allowed to, or could not yet, take it).
    NotOurs { holder: String, decision: Decision },
}

impl LeaderElector {
    /// A candidate for the Lease `config.namespace/config.name`. Nothing is sent until
    /// [`acquire`](Self::acquire).
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            sighting: None,
            renewed_at: None,
            reachability: None,
        }
    }

    /// Reports in readiness, through `status`, while [`acquire`](Self::acquire) cannot read or
    /// write the Lease: a standby that cannot reach the apiserver cannot take over either.
    pub fn report_to(mut self, status: WatchStatus) -> Self {
        self.reachability = Some(status);
        self
    }

    fn reached(&self, reached: Result<(), String>) {
        if let Some(status) = &self.reachability {
            match reached {
                Ok(()) => drop(status.up()),
                Err(e) => drop(status.down(&e)),
            }
        }
    }

    /// The configuration this elector runs with.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Waits until this instance holds the Lease, retrying every `retry_period`. Every API
    /// failure is retried, a refusal too: an apiserver that has just started answers 403 until
    /// its authorizer has caught up, so a refusal may pass. The first failure of a streak is
    /// logged as a warning with a hint (RBAC, namespace), the rest at debug level, and the
    /// streak shows in readiness (see [`report_to`](Self::report_to)). Only timings that could
    /// let two replicas act at once are an error.
    pub async fn acquire(&mut self) -> Result<(), LeaseError> {
        self.check_timings()?;
        let mut last_holder: Option<String> = None;
        let mut failing = false;
        loop {
            let round = timeout(self.config.renew_deadline, self.round(true)).await;
            self.reached(match &round {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the apiserver did not answer".into()),
            });
            let failed = !matches!(round, Ok(Ok(_)));
            match round {
                Ok(Ok(Outcome::Leading)) => {
                    let (lease, identity) = (self.config.lease(), &self.config.identity);
                    tracing::info!(%lease, %identity, "acquired leadership");
                    return Ok(());
                }
                Ok(Ok(Outcome::Conflict)) => {
                    let lease = self.config.lease();
                    tracing::debug!(%lease, "lost a race for the Lease; retrying");
                }
                Ok(Ok(Outcome::NotOurs { holder, decision })) => {
                    if last_holder.as_ref() != Some(&holder) {
                        let remaining = match decision {
                            Decision::Wait { until, .. } => {
                                until.saturating_duration_since(Instant::now().into_std())
                            }
                            _ => Duration::ZERO,
                        };
                        let lease = self.config.lease();
                        let msg = "another replica leads; standing by";
                        tracing::info!(%lease, %holder, expires_in = ?remaining, "{msg}");
                        last_holder = Some(holder);
                    }
                }
                Ok(Err(e)) if failing => {
                    tracing::debug!(error = %e, "could not read or write the Lease; retrying");
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not read or write the Lease; retrying every {:?}", self.config.retry_period);
                }
                Err(_) => {
                    let (lease, timeout) = (self.config.lease(), self.config.renew_deadline);
                    if !failing {
                        tracing::warn!(%lease, ?timeout, "apiserver did not answer; retrying");
                    }
                }
            }
            failing = failed;
            sleep(self.config.retry_period).await;
        }
    }

    /// Renews the Lease every `retry_period` while this instance holds it; returns, with the
    /// reason, as soon as leadership is lost: another identity holds the Lease, the Lease was
    /// cleared, or no renewal succeeded for `renew_deadline` since the last successful one was
    /// sent. The caller must stop acting immediately when this returns. Call after
    /// [`acquire`](Self::acquire); returns at once if we do not lead.
    pub async fn hold(&mut self) -> LeadershipLost {
        let renew_deadline = self.config.renew_deadline;
        let deadline_of = |renewed_at: Option<Instant>| {
            renewed_at.map_or_else(Instant::now, |t| t + renew_deadline)
        };
        let mut deadline = deadline_of(self.renewed_at);
        let mut last_error = None;
        loop {
            if Instant::now() >= deadline {
                return self.lost(LeadershipLost::RenewDeadline {
                    deadline: self.config.renew_deadline,
                    last_error,
                });
            }
            // Wake at the deadline even if the next renewal would be later.
            sleep_until((Instant::now() + self.config.retry_period).min(deadline)).await;
            if Instant::now() >= deadline {
                continue;
            }
            // A request still pending at the deadline cannot save our leadership: cut it off.
            match tokio::time::timeout_at(deadline, self.round(false)).await {
                Ok(Ok(Outcome::Leading)) => {
                    deadline = deadline_of(self.renewed_at);
                    last_error = None;
                }
                Ok(Ok(Outcome::Conflict)) => {
                    // Someone wrote since our read; the next read says who.
                    let lease = self.config.lease();
                    tracing::debug!(%lease, "renewal conflicted; re-reading");
                }
                Ok(Ok(Outcome::NotOurs { holder, .. })) => {
                    let reason = if holder.is_empty() {
                        LeadershipLost::Cleared
                    } else {
                        LeadershipLost::TakenBy(holder)
                    };
                    return self.lost(reason);
                }
                Ok(Err(e)) => {
                    if last_error.is_none() {
                        tracing::warn!(error = %e, "renewing the Lease failed; will retry");
                    }
                    last_error = Some(e.to_string());
                }
                Err(_) => {}
            }
        }
    }

    /// Graceful handover: clears `holderIdentity` if this instance still holds the Lease, so a
    /// standby acquires it at once instead of waiting out `lease_duration`. Call only after this
    /// instance stopped acting. A Lease held by someone else, or absent, is left alone.
    pub async fn release(&mut self) -> Result<(), LeaseError> {
        self.renewed_at = None;
        // A conflict means someone wrote since our read: read again to see if it is still ours.
        for _ in 0..3 {
            let Some(mut lease) = self.get().await? else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_default();
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            match self
                .api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => {
                    tracing::info!(lease = %self.config.lease(), "released leadership");
                    return Ok(());
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(self.error("updating", e)),
            }
        }
        // Three writes by others in a row: it has changed hands or soon will. Were it still ours,
        // it would simply expire after lease_duration, as after a crash.
        Ok(())
    }

    /// One read, decision and (if ours to take or renew) write. `take`: may acquire a Lease that
    /// is not ours; hold() passes false, since a Lease that stopped being ours means we lost it.
    async fn round(&mut self, take: bool) -> Result<Outcome, LeaseError> {
        // Our leadership is counted from before the read: the write lands after this instant.
        let sent = Instant::now();
        let lease = self.get().await?;
        let spec = lease.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        let version = lease
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone())
            .unwrap_or_default();
        // Seen now, after the read: no earlier than any write it reflects.
        let seen_at = Instant::now().into_std();
        self.sighting = observe(
            self.sighting.as_ref(),
            spec.as_ref().map(|s| (s, version.as_str())),
            seen_at,
        );
        let me = self.config.identity.as_str();
        let decision = decide(
            spec.as_ref(),
            self.sighting.as_ref(),
            me,
            seen_at,
            self.config.lease_duration,
        );
        let proceed = match decision {
            Decision::Renew => true,
            Decision::Acquire => take,
            Decision::Wait { .. } => false,
        };
        if !proceed {
            let holder = self
                .sighting
                .as_ref()
                .map(|s| s.holder.clone())
                .unwrap_or_default();
            return Ok(Outcome::NotOurs { holder, decision });
        }

        let new_spec = next_spec(
            spec.as_ref(),
            me,
            Timestamp::now(),
            self.config.lease_duration,
        );
        let (action, written) = match lease {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(new_spec),
                };
                (
                    "creating",
                    self.api.create(&PostParams::default(), &lease).await,
                )
            }
            Some(mut lease) => {
                // `lease` keeps the resourceVersion we read: the apiserver rejects the write
                // with 409 if anyone wrote since.
                lease.spec = Some(new_spec);
                let pp = PostParams::default();
                (
                    "updating",
                    self.api.replace(&self.config.name, &pp, &lease).await,
                )
            }
        };
        match written {
            Ok(lease) => {
                self.renewed_at = Some(sent);
                let version = lease.metadata.resource_version.clone().unwrap_or_default();
                self.sighting = observe(
                    None,
                    lease.spec.as_ref().map(|s| (s, version.as_str())),
                    Instant::now().into_std(),
                );
                Ok(Outcome::Leading)
            }
            Err(e) if is_conflict(&e) => Ok(Outcome::Conflict),
            Err(e) => Err(self.error(action, e)),
        }
    }

    async fn get(&self) -> Result<Option<Lease>, LeaseError> {
        self.api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error("reading", e))
    }

    fn lost(&mut self, reason: LeadershipLost) -> LeadershipLost {
        self.renewed_at = None;
        tracing::warn!(lease = %self.config.lease(), %reason, "lost leadership");
        reason
    }

    fn check_timings(&self) -> Result<(), LeaseError> {
        let c = &self.config;
        if c.renew_deadline < c.lease_duration {
            Ok(())
        } else {
            Err(LeaseError::Timings {
                lease: c.lease(),
                renew_deadline: c.renew_deadline,
                lease_duration: c.lease_duration,
            })
        }
    }

    fn error(&self, action: &'static str, cause: kube::Error) -> LeaseError {
        let hint = match status(&cause) {
            Some(403) => {
                "; the service account needs get, create and update on \
                 leases.coordination.k8s.io in this namespace"
            }
            Some(404) => "; does the namespace exist?",
            _ => "",
        };
        LeaseError::Api {
            lease: self.config.lease(),
            action,
            hint,
            cause,
        }
    }
}

fn status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    status(e) == Some(409)
}
