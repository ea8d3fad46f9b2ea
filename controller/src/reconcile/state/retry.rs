//! When a failed Service status write is tried again (pure: the caller passes the time in and
//! sleeps until [`Retries::next`]).
//!
//! The n-th failure in a row of a Service's write is tried again [`backoff`]`(n)` later: 500 ms,
//! 1 s, 2 s, ... up to 32 s from the seventh failure on. The count is the Service's own (kept
//! in its entry, so it goes with the Service); a successful write starts it again. Every failure
//! schedules one retry; a retry of a Service that converged or went meanwhile writes nothing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::ipam::ServiceKey;

/// The delay before trying again a write that failed `failures` times in a row.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250 << failures.min(7))
}

/// Scheduled retries of failed writes.
#[derive(Debug, Default)]
pub struct Retries {
    /// Scheduled retries, earliest first.
    due: BinaryHeap<Reverse<(Instant, ServiceKey)>>,
}

impl Retries {
    /// A write of `key` failed at `now`, its `failures`-th in a row: schedules a retry.
    /// Returns when it is due.
    pub fn failed(&mut self, key: &ServiceKey, failures: u32, now: Instant) -> Instant {
        let at = now + backoff(failures);
        self.due.push(Reverse((at, key.clone())));
        at
    }

    /// When the earliest scheduled retry is due.
    pub fn next(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the retries due at `now`, earliest first.
    pub fn take_due(&mut self, now: Instant) -> Vec<ServiceKey> {
        let mut keys = Vec::new();
        while let Some(Reverse((at, _))) = self.due.peek()
            && *at <= now
        {
            let Reverse((_, key)) = self.due.pop().expect("peeked");
            keys.push(key);
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ServiceKey {
        ServiceKey::new("ns", name)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_delay_doubles_from_half_a_second_up_to_32_seconds() {
        let delays: Vec<Duration> = (1..=9).map(backoff).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16_000, 32_000, 32_000, 32_000].map(ms)
        );
    }

    #[test]
    fn later_failures_in_a_row_wait_longer() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        assert_eq!(r.next(), None);
        assert_eq!(r.failed(&key("a"), 1, t0), t0 + ms(500));
        assert_eq!(r.failed(&key("a"), 2, t0), t0 + ms(1000));
        assert_eq!(r.failed(&key("b"), 1, t0), t0 + ms(500));
        assert_eq!(r.failed(&key("a"), 1, t0 + ms(10)), t0 + ms(510));
    }

    #[test]
    fn retries_come_due_in_time_order_each_once() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        r.failed(&key("a"), 1, t0);
        r.failed(&key("a"), 2, t0);
        r.failed(&key("b"), 1, t0 + ms(100));
        assert_eq!(r.next(), Some(t0 + ms(500)));
        assert!(r.take_due(t0 + ms(499)).is_empty());
        assert_eq!(r.take_due(t0 + ms(600)), [key("a"), key("b")]);
        assert_eq!(r.next(), Some(t0 + ms(1000)));
        assert_eq!(r.take_due(t0 + ms(5000)), [key("a")]);
        assert_eq!(r.next(), None);
        assert!(r.take_due(t0 + ms(99_999)).is_empty());
    }
}
