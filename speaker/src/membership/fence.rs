//! Self-fencing: a speaker answers for its addresses only while its peers cannot have declared
//! it dead for not running. Peers declare a speaker dead `dead_after` after the last heartbeat they received, so
//! a heartbeat round sent at `t` lets this speaker answer until `t + dead_after - margin`. When
//! the next round comes later than that (the process was paused, starved of CPU or swapping),
//! the answering stopped by itself when the lease ran out, before any peer could take over; it
//! resumes one interval after that round, once the peers have heard it again and handed its
//! addresses back, so two nodes never answer for one address at once.
//!
//! What it does not cover: a network partition between speakers (heartbeats sent on time but
//! lost or refused). Then each side answers the clients it reaches, as a load balancer should
//! rather than go dark; the heal settles within a heartbeat or two.
//!
//! [`Lease`] is the pure rule; [`Fence`] is the lock-free copy that the responder threads and
//! the gratuitous announcements check before every frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When this speaker may answer (pure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Answering starts (again) here.
    pub from: Instant,
    /// Answering stops here unless renewed.
    pub until: Instant,
}

/// What a renewal found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The lease was still valid: answering goes on.
    Continued,
    /// The lease had run out this long ago: answering stopped then and resumes at `from`.
    Resumed {
        /// How long this speaker had stopped answering until this renewal.
        fenced_for: Duration,
    },
}

impl Lease {
    /// A lease starting at `now`, for a speaker whose heartbeats go out every `interval` and
    /// whose peers declare it dead after `dead_after`.
    pub fn new(now: Instant, dead_after: Duration, interval: Duration) -> Lease {
        Lease {
            from: now,
            until: now + lifetime(dead_after, interval),
        }
    }

    /// A heartbeat round went out at `sent`: extends the lease, or, if it had run out, starts a
    /// new one that answers from one `interval` on.
    pub fn renew(&mut self, sent: Instant, dead_after: Duration, interval: Duration) -> Renewal {
        let until = sent + lifetime(dead_after, interval);
        if sent <= self.until {
            self.until = until.max(self.until);
            return Renewal::Continued;
        }
        let fenced_for = sent.saturating_duration_since(self.until);
        *self = Lease {
            from: sent + interval,
            until,
        };
        Renewal::Resumed { fenced_for }
    }

    /// Whether answering is allowed at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        self.from <= now && now < self.until
    }
}

/// How long one heartbeat round lets this speaker answer: `dead_after` minus half an interval
/// (the margin covers the frames already on their way when the lease ends), at least half of
/// `dead_after`.
fn lifetime(dead_after: Duration, interval: Duration) -> Duration {
    dead_after.saturating_sub(interval / 2).max(dead_after / 2)
}

/// The current [`Lease`], shared with the threads that answer (cheap to clone and to check).
#[derive(Clone, Debug)]
pub struct Fence(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    /// `None`: always open (no membership decides, as in tests of the announcer alone).
    base: Option<Instant>,
    from_ns: AtomicU64,
    until_ns: AtomicU64,
}

impl Fence {
    /// A fence that never closes.
    pub fn open() -> Fence {
        Fence(Arc::new(Shared {
            base: None,
            from_ns: AtomicU64::new(0),
            until_ns: AtomicU64::new(u64::MAX),
        }))
    }

    /// A fence following the leases [`Fence::set`] gives it, all later than `base`; open until
    /// the first one.
    pub fn new(base: Instant) -> Fence {
        Fence(Arc::new(Shared {
            base: Some(base),
            from_ns: AtomicU64::new(0),
            until_ns: AtomicU64::new(u64::MAX),
        }))
    }

    /// Publishes `lease`.
    pub fn set(&self, lease: Lease) {
        let Some(base) = self.0.base else {
            return;
        };
        let ns = |t: Instant| {
            u64::try_from(t.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
        };
        // `from` first: after a fence the new `from` lies ahead, so a reader between the two
        // stores sees no window rather than the old `from` with the new `until`.
        self.0.from_ns.store(ns(lease.from), Ordering::Release);
        self.0.until_ns.store(ns(lease.until), Ordering::Release);
    }

    /// Whether this speaker may answer at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        let Some(base) = self.0.base else {
            return true;
        };
        let now = u64::try_from(now.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX);
        self.0.from_ns.load(Ordering::Acquire) <= now
            && now < self.0.until_ns.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD: Duration = Duration::from_millis(250);
    const INTERVAL: Duration = Duration::from_millis(50);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rounds_on_time_keep_the_lease_and_it_ends_before_any_peer_can_take_over() {
        let t0 = Instant::now();
        let mut lease = Lease::new(t0, DEAD, INTERVAL);
        assert!(lease.allows(t0));
        for i in 1..100 {
            assert_eq!(
                lease.renew(t0 + INTERVAL * i, DEAD, INTERVAL),
                Renewal::Continued
            );
            assert!(lease.allows(t0 + INTERVAL * i + ms(1)));
        }
        let last = t0 + INTERVAL * 99;
        // Peers declare this speaker dead dead_after after receiving that round, at the
        // earliest at last + DEAD; the lease ended half an interval before.
        assert!(lease.allows(last + DEAD - INTERVAL / 2 - ms(1)));
        assert!(!lease.allows(last + DEAD - INTERVAL / 2));
        assert!(!lease.allows(last + DEAD));
    }

    #[test]
    fn a_late_round_resumes_answering_only_one_interval_later() {
        let t0 = Instant::now();
        let mut lease = Lease::new(t0, DEAD, INTERVAL);
        let late = t0 + ms(600);
        assert_eq!(
            lease.renew(late, DEAD, INTERVAL),
            Renewal::Resumed {
                fenced_for: ms(600) - (DEAD - INTERVAL / 2)
            }
        );
        assert!(!lease.allows(late));
        assert!(!lease.allows(late + INTERVAL - ms(1)));
        assert!(lease.allows(late + INTERVAL));
        // The next round on time continues the new lease.
        assert_eq!(
            lease.renew(late + INTERVAL, DEAD, INTERVAL),
            Renewal::Continued
        );
        assert!(lease.allows(late + INTERVAL + DEAD - INTERVAL));
    }

    #[test]
    fn a_round_that_is_late_but_within_the_lease_continues() {
        let t0 = Instant::now();
        let mut lease = Lease::new(t0, DEAD, INTERVAL);
        let renewal = lease.renew(t0 + DEAD - INTERVAL / 2, DEAD, INTERVAL);
        assert_eq!(renewal, Renewal::Continued);
        // An earlier timestamp never shortens the lease.
        let until = lease.until;
        lease.renew(t0, DEAD, INTERVAL);
        assert_eq!(lease.until, until);
    }

    #[test]
    fn tiny_dead_after_keeps_a_positive_lifetime() {
        assert_eq!(lifetime(ms(20), ms(50)), ms(10));
        assert_eq!(lifetime(DEAD, INTERVAL), ms(225));
    }

    #[test]
    fn the_shared_fence_follows_the_lease() {
        let t0 = Instant::now();
        let open = Fence::open();
        assert!(open.allows(t0));
        open.set(Lease::new(t0, ms(1), ms(1)));
        assert!(open.allows(t0 + ms(1000)), "an open fence ignores leases");

        let mut lease = Lease::new(t0, DEAD, INTERVAL);
        let fence = Fence::new(t0);
        assert!(fence.allows(t0 + ms(300)), "open until the first lease");
        fence.set(lease);
        assert!(fence.allows(t0 + ms(10)));
        assert!(!fence.allows(t0 + ms(300)));
        lease.renew(t0 + ms(400), DEAD, INTERVAL);
        fence.set(lease);
        assert!(!fence.allows(t0 + ms(420)));
        assert!(fence.allows(t0 + ms(450)));
        assert!(!fence.allows(t0 + ms(700)));
    }
}
