//! When a failed Service status write is tried again (pure: the caller passes the time in and
//! sleeps until [`Retries::next`]).
//!
//! The n-th failure in a row of a Service's write is tried again [`backoff`]`(n)` later: 500 ms,
//! 1 s, 2 s, ... up to 32 s from the seventh failure on. A successful write starts the count
//! again. Every failure schedules one retry; a retry of a Service that converged meanwhile
//! writes nothing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use crate::ipam::ServiceKey;

/// The delay before trying again a write that failed `failures` times in a row.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250 << failures.min(7))
}

/// Failed writes and when to try them again.
#[derive(Debug, Default)]
pub struct Retries {
    /// Failures in a row, per Service (until a write of it succeeds).
    failures: HashMap<ServiceKey, u32>,
    /// Scheduled retries, earliest first.
    due: BinaryHeap<Reverse<(Instant, ServiceKey)>>,
}

impl Retries {
    /// A write of `key` succeeded: its next failure waits the shortest delay again.
    pub fn succeeded(&mut self, key: &ServiceKey) {
        self.failures.remove(key);
    }

    /// A write of `key` failed at `now`: schedules a retry. Returns when it is due.
    pub fn failed(&mut self, key: &ServiceKey, now: Instant) -> Instant {
        let failures = self.failures.entry(key.clone()).or_default();
        *failures += 1;
        let at = now + backoff(*failures);
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
    fn failures_in_a_row_wait_longer_and_a_success_starts_again() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        assert_eq!(r.next(), None);
        assert_eq!(r.failed(&key("a"), t0), t0 + ms(500));
        assert_eq!(r.failed(&key("a"), t0), t0 + ms(1000));
        assert_eq!(r.failed(&key("b"), t0), t0 + ms(500));
        r.succeeded(&key("a"));
        assert_eq!(r.failed(&key("a"), t0 + ms(10)), t0 + ms(510));
    }

    #[test]
    fn retries_come_due_in_time_order_each_once() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        r.failed(&key("a"), t0);
        r.failed(&key("a"), t0);
        r.failed(&key("b"), t0 + ms(100));
        assert_eq!(r.next(), Some(t0 + ms(500)));
        assert!(r.take_due(t0 + ms(499)).is_empty());
        assert_eq!(r.take_due(t0 + ms(600)), [key("a"), key("b")]);
        assert_eq!(r.next(), Some(t0 + ms(1000)));
        assert_eq!(r.take_due(t0 + ms(5000)), [key("a")]);
        assert_eq!(r.next(), None);
        assert!(r.take_due(t0 + ms(99_999)).is_empty());
    }

    #[test]
    fn a_success_keeps_the_retry_already_scheduled() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        r.failed(&key("a"), t0);
        r.succeeded(&key("a"));
        assert_eq!(r.take_due(t0 + ms(500)), [key("a")]);
    }
}
