//! Watches that come back within a second of the apiserver: a bounded, jittered retry delay that
//! resets as soon as the watch delivers again, an immediate relist when the apiserver says the
//! last resource version expired, and readiness that reports a watch down for too long.
//!
//! kube's `default_backoff()` starts at 800 ms, doubles to 30 s and resets only after 120 s
//! without errors: after a 20 s outage the next attempt can be half a minute away. Here the
//! delay is 50-100 ms after the first failure and never more than 1 s, so once the apiserver is
//! back every watch resumes (from its last bookmark, or with a fresh list) within about a second.
//! A retry a second costs the apiserver nothing it notices, and a watch that is down has no
//! cheaper way to learn that the apiserver is back.

use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use tracing::{info, warn};

use crate::health::WatchStatus;

/// The first delay after a failure, before jitter.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// How long a failed watch must go on without a new error to count as up again when nothing
/// changed meanwhile: a watch resumed from its last resource version delivers nothing until an
/// object changes, and a failing attempt fails sooner than this (connect timeout 3 s).
pub const UP_AFTER: Duration = Duration::from_secs(5);

/// The delay before the next attempt of a failing watch (pure): 100 ms doubling to
/// [`MAX_DELAY`], each drawn from the upper half of its step ("equal jitter") so that many
/// watchers that failed together do not retry in step; back to the first step after a success.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryDelay {
    failures: u32,
}

impl RetryDelay {
    /// The delay after one more failure; `unit` is a random number in `[0, 1)`.
    pub fn failed(&mut self, unit: f64) -> Duration {
        let step = FIRST_DELAY
            .saturating_mul(1 << self.failures.min(10))
            .min(MAX_DELAY);
        self.failures = self.failures.saturating_add(1);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        step / 2 + (step / 2).mul_f64(unit)
    }

    /// The watch delivered: the next failure starts from the first step again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Whether `error` is the apiserver saying the watch's resource version is gone (410 Expired or
/// Gone): the watcher relists on its next poll, and waiting first would only delay that.
pub fn is_expired(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchError(status) if status.code == 410)
}

/// What to add to the first warning about `error`: a hint when the apiserver does not serve the
/// resource at all, which for ferrolb's own kinds means the CRDs are not installed.
fn hint(error: &watcher::Error) -> &'static str {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
            if status.code == 404 =>
        {
            " (the API server does not serve this resource: is its CRD installed? helm install \
             ferrolb charts/ferrolb installs ferrolb's)"
        }
        _ => "",
    }
}

/// `stream` (a watcher, or a reflector around one) without its errors: each error is logged,
/// recorded in `status` (readiness), and followed by a [`RetryDelay`] before the stream is polled
/// again, which is when the watcher retries. The watch counts as up again at its next item, or
/// after [`UP_AFTER`] without a new error. Items pass through unchanged.
pub fn resilient<S, T>(stream: S, status: WatchStatus) -> impl Stream<Item = T> + Send
where
    S: Stream<Item = Result<T, watcher::Error>> + Send,
    T: Send,
{
    let state = (Box::pin(stream), RetryDelay::default(), status);
    futures::stream::unfold(state, |(mut stream, mut delay, status)| async move {
        loop {
            let next = if delay.failures() > 0 {
                match tokio::time::timeout(UP_AFTER, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        // Resumed without news: the watch holds.
                        resumed(&status, &mut delay);
                        continue;
                    }
                }
            } else {
                stream.next().await
            };
            match next? {
                Ok(item) => {
                    resumed(&status, &mut delay);
                    return Some((item, (stream, delay, status)));
                }
                Err(e) => {
                    let first = status.down(&e.to_string());
                    if first {
                        let hint = hint(&e);
                        warn!(watch = status.name(), error = %e, "watch failed; retrying every second at most, acting on the last known state{hint}");
                    } else {
                        tracing::debug!(watch = status.name(), error = %e, "watch still failing");
                    }
                    if !is_expired(&e) {
                        tokio::time::sleep(delay.failed(fastrand::f64())).await;
                    }
                }
            }
        }
    })
}

/// The watch works again: readiness and the retry delay learn it.
fn resumed(status: &WatchStatus, delay: &mut RetryDelay) {
    if let Some(down_for) = status.up() {
        info!(watch = status.name(), failures = delay.failures(), down_for = ?down_for, "watch resumed");
    }
    delay.succeeded();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_50_100_ms_to_at_most_a_second() {
        let mut delay = RetryDelay::default();
        let low: Vec<_> = (0..8).map(|_| delay.failed(0.0).as_millis()).collect();
        assert_eq!(low, [50, 100, 200, 400, 500, 500, 500, 500]);
        let mut delay = RetryDelay::default();
        let high: Vec<_> = (0..8)
            .map(|_| delay.failed(0.999_999).as_millis())
            .collect();
        assert_eq!(high, [99, 199, 399, 799, 999, 999, 999, 999]);
    }

    #[test]
    fn a_success_starts_over_from_the_first_step() {
        let mut delay = RetryDelay::default();
        for _ in 0..20 {
            delay.failed(0.5);
        }
        assert_eq!(delay.failures(), 20);
        delay.succeeded();
        assert_eq!(delay.failures(), 0);
        assert_eq!(delay.failed(0.0), Duration::from_millis(50));
    }

    #[test]
    fn no_failure_count_overflows_or_exceeds_the_bound() {
        let mut delay = RetryDelay {
            failures: u32::MAX - 1,
        };
        for unit in [0.0, 0.5, 1.0, 7.0, -3.0, f64::NAN] {
            let d = delay.failed(unit);
            assert!(d <= MAX_DELAY && d >= MAX_DELAY / 2, "{d:?} for {unit}");
        }
        assert_eq!(delay.failures(), u32::MAX);
    }

    fn health() -> crate::health::HealthState {
        let health = crate::health::HealthState::new(std::sync::Arc::new(Default::default()));
        health.set_ready();
        health
    }

    /// Ready as seen a minute from now: a watch still down by then is past any grace.
    fn ready_later(health: &crate::health::HealthState) -> bool {
        health
            .readiness(std::time::Instant::now() + Duration::from_secs(60))
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_hidden_items_pass_and_readiness_follows() {
        let health = health();
        let items = futures::stream::iter(vec![
            Ok(1),
            Err(watcher::Error::NoResourceVersion),
            Err(watcher::Error::NoResourceVersion),
            Ok(2),
        ]);
        let stream = resilient(items, health.watch_status("Services"));
        futures::pin_mut!(stream);
        assert_eq!(stream.next().await, Some(1));
        assert_eq!(stream.next().await, Some(2));
        assert!(ready_later(&health), "an item brings the watch back up");
        assert_eq!(stream.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_resumed_watch_without_news_counts_as_up_after_a_quiet_while() {
        let health = health();
        let failing_then_quiet =
            futures::stream::iter(vec![Err::<u32, _>(watcher::Error::NoResourceVersion)])
                .chain(futures::stream::pending());
        let stream = resilient(failing_then_quiet, health.watch_status("Nodes"));
        futures::pin_mut!(stream);
        // The error is swallowed; the watch is down at first.
        let quiet = tokio::time::timeout(Duration::from_millis(10), stream.next()).await;
        assert!(quiet.is_err());
        assert!(!ready_later(&health), "down right after the error");
        // After the retry delay and UP_AFTER without a new error, it counts as up.
        let quiet = tokio::time::timeout(UP_AFTER + MAX_DELAY, stream.next()).await;
        assert!(quiet.is_err(), "no item appears");
        assert!(ready_later(&health));
    }

    #[test]
    fn only_410_from_the_apiserver_counts_as_expired() {
        let status = |code| {
            let mut s = kube::core::Status::failure("too old resource version", "Expired");
            s.code = code;
            watcher::Error::WatchError(Box::new(s))
        };
        assert!(is_expired(&status(410)));
        assert!(!is_expired(&status(500)));
        assert!(!is_expired(&watcher::Error::NoResourceVersion));
    }
}
