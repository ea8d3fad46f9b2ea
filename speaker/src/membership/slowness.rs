//! Lifeguard's local health awareness: a speaker that sees its own timers fire late is the slow
//! one (starved of CPU, paused, swapping), so it trusts its own silence verdicts less. Pure: the
//! task reports each heartbeat tick's lateness; [`Slowness::level`] is the multiplier (minus
//! one) the view stretches its suspicion and death timeouts by.
//!
//! The level is the worst lateness seen in the last [`WINDOW`] in units of a quarter of
//! `dead_after`, rounded up, once it exceeds half an interval: a tick 60 ms late with the
//! defaults (250 ms, 50 ms) doubles the timeouts for 5 s; ticks on time bring it back to 0.

use std::time::{Duration, Instant};

/// How long a late tick keeps counting.
pub const WINDOW: Duration = Duration::from_secs(5);

/// The worst recent lateness of this speaker's own timers.
#[derive(Clone, Debug)]
pub struct Slowness {
    /// Lateness below this is scheduling noise.
    tolerance: Duration,
    /// Lateness per level.
    unit: Duration,
    /// The worst lateness in the current window, and when the window started.
    worst: Option<(Instant, Duration)>,
}

impl Slowness {
    /// For heartbeats every `interval` and peers dead after `dead_after`.
    pub fn new(interval: Duration, dead_after: Duration) -> Slowness {
        Slowness {
            tolerance: interval / 2,
            unit: (dead_after / 4).max(Duration::from_millis(1)),
            worst: None,
        }
    }

    /// Records a tick that fired `late` after its deadline, at `now`.
    pub fn record(&mut self, now: Instant, late: Duration) {
        if late <= self.tolerance {
            return;
        }
        let worst = match self.worst {
            Some((at, worst)) if now.saturating_duration_since(at) < WINDOW => worst.max(late),
            _ => late,
        };
        self.worst = Some((now, worst));
    }

    /// How many times the timeouts are stretched, minus one, at `now`.
    pub fn level(&self, now: Instant) -> u32 {
        match self.worst {
            Some((at, worst)) if now.saturating_duration_since(at) < WINDOW => {
                u32::try_from(worst.as_nanos().div_ceil(self.unit.as_nanos())).unwrap_or(u32::MAX)
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn on_time_ticks_and_noise_leave_it_at_zero() {
        let t0 = Instant::now();
        let mut s = Slowness::new(ms(50), ms(250));
        for i in 0..100 {
            s.record(t0 + ms(50 * i), ms(i % 26));
        }
        assert_eq!(s.level(t0 + ms(5000)), 0);
    }

    #[test]
    fn late_ticks_raise_it_by_quarters_of_dead_after_for_the_window() {
        let t0 = Instant::now();
        let mut s = Slowness::new(ms(50), ms(250));
        s.record(t0, ms(60));
        assert_eq!(s.level(t0), 1);
        s.record(t0 + ms(100), ms(300));
        assert_eq!(s.level(t0 + ms(100)), 5);
        // A smaller lateness within the window keeps the worst and extends the window.
        s.record(t0 + ms(4000), ms(30));
        assert_eq!(s.level(t0 + ms(4000)), 5);
        s.record(t0 + ms(4000), ms(70));
        assert_eq!(s.level(t0 + ms(8000)), 5);
        assert_eq!(s.level(t0 + ms(4000) + WINDOW), 0);
        // After the window a new lateness starts a new worst.
        s.record(t0 + ms(20_000), ms(70));
        assert_eq!(s.level(t0 + ms(20_000)), 2);
    }

    #[test]
    fn huge_lateness_saturates() {
        let t0 = Instant::now();
        let mut s = Slowness::new(ms(50), ms(250));
        s.record(t0, Duration::MAX);
        assert_eq!(s.level(t0), u32::MAX);
    }
}
