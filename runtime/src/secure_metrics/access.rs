//! Who may read `/metrics`: Kubernetes decides, as for the apiserver's own `/metrics`. The
//! bearer token is checked with a TokenReview, then the user it names with a
//! SubjectAccessReview for `get` on the non-resource URL `/metrics` (grant it with a ClusterRole
//! rule `nonResourceURLs: ["/metrics"], verbs: ["get"]`). Decisions are cached and reviews
//! rate-limited (`cache.rs`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

use super::cache::{Decision, DecisionCache, ReviewBudget};

/// The path and verb a scraper needs.
pub const PATH: &str = "/metrics";
const VERB: &str = "get";

/// Why a request could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// More new tokens than the review budget allows.
    #[error("too many unknown tokens; try again in a second")]
    Throttled,
    /// The apiserver did not answer a review.
    #[error("cannot check the token with the apiserver: {0}")]
    Review(#[from] kube::Error),
}

/// Checks bearer tokens against the cluster; cheap to clone.
#[derive(Clone)]
pub struct Access {
    client: kube::Client,
    state: Arc<Mutex<(DecisionCache, ReviewBudget)>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").finish_non_exhaustive()
    }
}

impl Access {
    /// Reviews with `client` (its identity needs `create` on tokenreviews and
    /// subjectaccessreviews).
    pub fn new(client: kube::Client) -> Access {
        Access {
            client,
            state: Arc::new(Mutex::new((
                DecisionCache::default(),
                ReviewBudget::new(Instant::now()),
            ))),
        }
    }

    /// What the cluster says about `token`, from the cache when recent.
    pub async fn check(&self, token: &str) -> Result<Decision, AccessError> {
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 digests are 32 bytes");
        {
            let mut state = self.lock();
            let now = Instant::now();
            if let Some(decision) = state.0.get(&digest, now) {
                return Ok(decision.clone());
            }
            if !state.1.take(now) {
                return Err(AccessError::Throttled);
            }
        }
        let decision = self.review(token).await?;
        self.lock().0.put(digest, decision.clone(), Instant::now());
        Ok(decision)
    }

    async fn review(&self, token: &str) -> Result<Decision, AccessError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: None,
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = reviewed.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Ok(Decision::Unauthenticated);
        };
        let name = user.username.clone().unwrap_or_default();
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(PATH.to_owned()),
                    verb: Some(VERB.to_owned()),
                }),
                resource_attributes: None,
            },
            ..Default::default()
        };
        let answered = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await?;
        let status = answered.status.unwrap_or_default();
        Ok(if status.allowed {
            Decision::Allowed { user: name }
        } else {
            Decision::Forbidden {
                user: name,
                reason: status.reason.unwrap_or_default(),
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (DecisionCache, ReviewBudget)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The token of an `Authorization: Bearer <token>` header value, if that is what it is.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bearer_headers_carry_a_token() {
        assert_eq!(bearer_token("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token(""), None);
    }
}
