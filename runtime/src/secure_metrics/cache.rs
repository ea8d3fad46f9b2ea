//! What the secured `/metrics` remembers between requests (pure, time passed in): recent
//! decisions per token, so a scraper every 15 s costs the apiserver one TokenReview and one
//! SubjectAccessReview per [`TTL`], and a budget of reviews per second, so a flood of made-up
//! tokens cannot turn this endpoint into a load generator against the apiserver.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a decision is reused. A revoked token or permission stops working within this.
pub const TTL: Duration = Duration::from_secs(30);
/// Most tokens remembered; beyond, expired ones are dropped, then all.
pub const CAPACITY: usize = 1024;
/// Reviews (pairs of TokenReview and SubjectAccessReview) allowed per second, with this burst.
pub const REVIEWS_PER_SECOND: u32 = 10;

/// What the apiserver said about a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Authenticated, and allowed `get` on `/metrics`.
    Allowed {
        /// Who, for the log.
        user: String,
    },
    /// Authenticated, but not allowed.
    Forbidden {
        /// Who.
        user: String,
        /// Why, as the authorizer says (may be empty).
        reason: String,
    },
    /// Not a valid token.
    Unauthenticated,
}

/// Decisions by token digest, each valid for [`TTL`].
#[derive(Debug, Default)]
pub struct DecisionCache {
    entries: HashMap<[u8; 32], (Decision, Instant)>,
}

impl DecisionCache {
    /// The decision for `digest` made less than [`TTL`] before `now`.
    pub fn get(&self, digest: &[u8; 32], now: Instant) -> Option<&Decision> {
        self.entries
            .get(digest)
            .filter(|(_, at)| now.saturating_duration_since(*at) < TTL)
            .map(|(d, _)| d)
    }

    /// Remembers `decision` for `digest`, made at `now`.
    pub fn put(&mut self, digest: [u8; 32], decision: Decision, now: Instant) {
        if self.entries.len() >= CAPACITY && !self.entries.contains_key(&digest) {
            self.entries
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < TTL);
            if self.entries.len() >= CAPACITY {
                self.entries.clear();
            }
        }
        self.entries.insert(digest, (decision, now));
    }

    /// Tokens remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A token bucket of reviews: [`REVIEWS_PER_SECOND`] per second, as many in a burst.
#[derive(Debug)]
pub struct ReviewBudget {
    tokens: f64,
    at: Instant,
}

impl ReviewBudget {
    /// A full bucket at `now`.
    pub fn new(now: Instant) -> ReviewBudget {
        ReviewBudget {
            tokens: f64::from(REVIEWS_PER_SECOND),
            at: now,
        }
    }

    /// Takes one review from the bucket at `now`; false when it is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        let refill =
            now.saturating_duration_since(self.at).as_secs_f64() * f64::from(REVIEWS_PER_SECOND);
        self.tokens = (self.tokens + refill).min(f64::from(REVIEWS_PER_SECOND));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u32) -> [u8; 32] {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&n.to_be_bytes());
        d
    }

    #[test]
    fn decisions_are_reused_for_the_ttl_only() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::default();
        cache.put(digest(1), Decision::Unauthenticated, t0);
        assert_eq!(
            cache.get(&digest(1), t0 + TTL - Duration::from_millis(1)),
            Some(&Decision::Unauthenticated)
        );
        assert_eq!(cache.get(&digest(1), t0 + TTL), None);
        assert_eq!(cache.get(&digest(2), t0), None);
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::default();
        for n in 0..(CAPACITY as u32 * 3) {
            cache.put(digest(n), Decision::Unauthenticated, t0);
            assert!(cache.len() <= CAPACITY);
        }
        // Expired entries go first: a fresh one survives the next overflow.
        let mut cache = DecisionCache::default();
        for n in 0..CAPACITY as u32 - 1 {
            cache.put(digest(n), Decision::Unauthenticated, t0);
        }
        let later = t0 + TTL;
        let allowed = Decision::Allowed {
            user: "prometheus".into(),
        };
        cache.put(digest(9_999), allowed.clone(), later);
        cache.put(digest(10_000), Decision::Unauthenticated, later);
        assert_eq!(cache.get(&digest(9_999), later), Some(&allowed));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_review_budget_allows_a_burst_then_refills_with_time() {
        let t0 = Instant::now();
        let mut budget = ReviewBudget::new(t0);
        let burst = (0..100).filter(|_| budget.take(t0)).count();
        assert_eq!(burst, REVIEWS_PER_SECOND as usize);
        assert!(!budget.take(t0 + Duration::from_millis(50)));
        assert!(budget.take(t0 + Duration::from_millis(150)));
        let refilled = (0..100)
            .filter(|_| budget.take(t0 + Duration::from_secs(60)))
            .count();
        assert_eq!(
            refilled, REVIEWS_PER_SECOND as usize,
            "the bucket holds no more than a burst"
        );
    }
}
