//! The pure part of leader election: given the Lease as last read and what we remember of earlier
//! reads, decide whether to take it, renew it or wait. No I/O, no clocks read here.
//!
//! Expiry is judged on the *local* monotonic clock, never on `renewTime`: a candidate remembers
//! when it first saw the current `(holderIdentity, renewTime, resourceVersion)` and waits
//! `leaseDurationSeconds` from then. Remote clocks may be skewed; our own observation can only be
//! later than the holder's write, so waiting from it is always long enough.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;

/// What a candidate remembers about the Lease record it last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    /// `spec.holderIdentity`, empty when nobody holds the Lease.
    pub holder: String,
    /// `spec.renewTime` as written by the holder (compared, never used as a clock).
    pub renew_time: Option<MicroTime>,
    /// `metadata.resourceVersion`: changes on every write, including a renewal that keeps
    /// `renewTime` equal (coarse clocks).
    pub resource_version: String,
    /// Local time at which this exact record was first seen.
    pub since: Instant,
}

/// What to do with the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (absent, empty holder, or held by another identity that has not renewed
    /// for its lease duration): take it over.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Another identity holds it; it cannot be taken before `until` (local clock).
    Wait {
        /// The current holder's identity.
        holder: String,
        /// When the holder's lease expires unless it renews (local clock).
        until: Instant,
    },
}

/// Records a read of the Lease: keeps `previous.since` when the record is unchanged, else starts
/// a new sighting at `now`. `observed` is `None` when the Lease does not exist.
pub fn observe(
    previous: Option<&Sighting>,
    observed: Option<(&LeaseSpec, &str)>,
    now: Instant,
) -> Option<Sighting> {
    let (spec, resource_version) = observed?;
    let current = Sighting {
        holder: spec.holder_identity.clone().unwrap_or_default(),
        renew_time: spec.renew_time.clone(),
        resource_version: resource_version.to_owned(),
        since: now,
    };
    Some(match previous {
        Some(p)
            if p.holder == current.holder
                && p.renew_time == current.renew_time
                && p.resource_version == current.resource_version =>
        {
            p.clone()
        }
        _ => current,
    })
}

/// Decides what `me` does about the Lease described by `observed` (`None`: no Lease object, or a
/// Lease without spec) and `sighting` (from [`observe`] on the same read). `default_duration` is
/// used when the Lease carries no usable `leaseDurationSeconds`.
pub fn decide(
    observed: Option<&LeaseSpec>,
    sighting: Option<&Sighting>,
    me: &str,
    now: Instant,
    default_duration: Duration,
) -> Decision {
    let holder = observed
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == me {
        return Decision::Renew;
    }
    let duration = observed
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(default_duration, Duration::from_secs);
    // Without a sighting of this record we have not watched it age: start the clock now.
    let since = sighting
        .filter(|s| s.holder == holder)
        .map_or(now, |s| s.since);
    let until = since + duration;
    if now >= until {
        Decision::Acquire
    } else {
        Decision::Wait {
            holder: holder.to_owned(),
            until,
        }
    }
}

/// The spec to write after deciding [`Decision::Acquire`] or [`Decision::Renew`] at remote time
/// `now`: `me` as holder, `renewTime` now, `acquireTime` and `leaseTransitions` kept on a renewal
/// and moved on a takeover (transitions count every change of holder; a new Lease starts at 0).
pub fn next_spec(
    observed: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    lease_duration: Duration,
) -> LeaseSpec {
    let now = MicroTime(now);
    let held_by_me = observed.and_then(|s| s.holder_identity.as_deref()) == Some(me);
    let (acquire_time, transitions) = match observed {
        Some(old) if held_by_me => (
            old.acquire_time.clone().unwrap_or_else(|| now.clone()),
            old.lease_transitions.unwrap_or(0),
        ),
        Some(old) => (
            now.clone(),
            old.lease_transitions.unwrap_or(0).saturating_add(1),
        ),
        None => (now.clone(), 0),
    };
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(duration_seconds(lease_duration)),
        acquire_time: Some(acquire_time),
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        // Coordinated leader election fields belong to the apiserver's coordinator: keep them.
        preferred_holder: observed.and_then(|s| s.preferred_holder.clone()),
        strategy: observed.and_then(|s| s.strategy.clone()),
    }
}

/// Whole seconds for `leaseDurationSeconds`, rounded *up* so that candidates never wait less than
/// our real lease duration, and at least 1 (the apiserver rejects 0).
pub fn duration_seconds(d: Duration) -> i32 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "me";
    const OTHER: &str = "other";
    const DEFAULT: Duration = Duration::from_secs(4);

    fn spec(holder: Option<&str>, duration: Option<i32>, renew: Option<i64>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: duration,
            renew_time: renew.map(|s| MicroTime(Timestamp::from_second(s).unwrap())),
            ..Default::default()
        }
    }

    /// Reads `s` (resourceVersion `rv`) at `at`, then decides at `at`.
    fn read(prev: Option<&Sighting>, s: &LeaseSpec, rv: &str, at: Instant) -> (Sighting, Decision) {
        let seen = observe(prev, Some((s, rv)), at).unwrap();
        let d = decide(Some(s), Some(&seen), ME, at, DEFAULT);
        (seen, d)
    }

    #[test]
    fn a_missing_lease_is_acquired() {
        let now = Instant::now();
        assert_eq!(observe(None, None, now), None);
        assert_eq!(decide(None, None, ME, now, DEFAULT), Decision::Acquire);
    }

    #[test]
    fn a_lease_without_holder_is_acquired_at_once() {
        let now = Instant::now();
        for holder in [None, Some("")] {
            let s = spec(holder, Some(15), Some(100));
            assert_eq!(read(None, &s, "1", now).1, Decision::Acquire, "{holder:?}");
        }
        // A Lease object whose spec is entirely absent.
        assert_eq!(
            decide(Some(&LeaseSpec::default()), None, ME, now, DEFAULT),
            Decision::Acquire
        );
    }

    #[test]
    fn a_lease_held_by_me_is_renewed_whatever_its_age() {
        let t0 = Instant::now();
        let s = spec(Some(ME), Some(1), Some(0));
        let (seen, d) = read(None, &s, "1", t0);
        assert_eq!(d, Decision::Renew);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(read(Some(&seen), &s, "1", later).1, Decision::Renew);
    }

    #[test]
    fn a_lease_held_by_another_is_waited_on_for_its_duration_from_first_sight() {
        let t0 = Instant::now();
        let s = spec(Some(OTHER), Some(2), Some(100));
        let (seen, d) = read(None, &s, "7", t0);
        let until = t0 + Duration::from_secs(2);
        assert_eq!(
            d,
            Decision::Wait {
                holder: OTHER.into(),
                until
            }
        );
        // Unchanged record, re-read later: the clock keeps running from the first sight.
        let t1 = t0 + Duration::from_millis(1999);
        let (seen, d) = read(Some(&seen), &s, "7", t1);
        assert_eq!(seen.since, t0);
        assert_eq!(
            d,
            Decision::Wait {
                holder: OTHER.into(),
                until
            }
        );
        // Exactly at expiry, it is ours to take.
        assert_eq!(read(Some(&seen), &s, "7", until).1, Decision::Acquire);
    }

    #[test]
    fn expiry_ignores_remote_clocks() {
        // renewTime an hour in the past (or the future) by our wall clock changes nothing: a record
        // seen for the first time is waited on for a full duration.
        let t0 = Instant::now();
        let wall = Timestamp::now().as_second();
        for renew in [wall - 3600, wall + 3600, 0] {
            let s = spec(Some(OTHER), Some(4), Some(renew));
            let (_, d) = read(None, &s, "3", t0);
            assert_eq!(
                d,
                Decision::Wait {
                    holder: OTHER.into(),
                    until: t0 + Duration::from_secs(4)
                },
                "renewTime {renew}"
            );
        }
    }

    #[test]
    fn any_change_of_the_record_restarts_the_clock() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(3);
        let base = spec(Some(OTHER), Some(4), Some(100));
        let (seen, _) = read(None, &base, "1", t0);
        let changes = [
            (spec(Some(OTHER), Some(4), Some(101)), "1"), // renewTime moved
            (base.clone(), "2"),                          // same times, new resourceVersion
            (spec(Some("third"), Some(4), Some(100)), "1"), // new holder
        ];
        for (s, rv) in changes {
            let (seen2, d) = read(Some(&seen), &s, rv, t1);
            assert_eq!(seen2.since, t1, "{s:?} {rv}");
            assert!(
                matches!(d, Decision::Wait { until, .. } if until == t1 + Duration::from_secs(4)),
                "{d:?}"
            );
        }
    }

    #[test]
    fn a_lease_that_stopped_renewing_is_taken_over() {
        let t0 = Instant::now();
        let s = spec(Some(OTHER), Some(4), Some(100));
        let (seen, _) = read(None, &s, "1", t0);
        let (seen, d) = read(Some(&seen), &s, "1", t0 + Duration::from_secs(5));
        assert_eq!(seen.since, t0);
        assert_eq!(d, Decision::Acquire);
    }

    #[test]
    fn missing_or_invalid_duration_falls_back_to_ours() {
        let t0 = Instant::now();
        for duration in [None, Some(0), Some(-5)] {
            let s = spec(Some(OTHER), duration, Some(100));
            assert_eq!(
                read(None, &s, "1", t0).1,
                Decision::Wait {
                    holder: OTHER.into(),
                    until: t0 + DEFAULT
                },
                "{duration:?}"
            );
        }
    }

    #[test]
    fn missing_renew_time_is_judged_by_observation_alone() {
        let t0 = Instant::now();
        let s = spec(Some(OTHER), Some(1), None);
        let (seen, d) = read(None, &s, "1", t0);
        assert!(matches!(d, Decision::Wait { .. }));
        let (_, d) = read(Some(&seen), &s, "1", t0 + Duration::from_secs(1));
        assert_eq!(d, Decision::Acquire);
    }

    #[test]
    fn a_sighting_of_another_holder_does_not_age_the_current_one() {
        // Defensive: a stale sighting (other holder) passed with a new spec starts the clock now.
        let t0 = Instant::now();
        let stale = Sighting {
            holder: "third".into(),
            renew_time: None,
            resource_version: "1".into(),
            since: t0,
        };
        let now = t0 + Duration::from_secs(60);
        let s = spec(Some(OTHER), Some(4), Some(100));
        assert_eq!(
            decide(Some(&s), Some(&stale), ME, now, DEFAULT),
            Decision::Wait {
                holder: OTHER.into(),
                until: now + Duration::from_secs(4)
            }
        );
    }

    #[test]
    fn next_spec_creates_renews_and_takes_over() {
        let t = |s| Timestamp::from_second(s).unwrap();
        let d = Duration::from_millis(1500);

        let created = next_spec(None, ME, t(10), d);
        assert_eq!(created.holder_identity.as_deref(), Some(ME));
        assert_eq!(created.lease_duration_seconds, Some(2));
        assert_eq!(created.acquire_time, Some(MicroTime(t(10))));
        assert_eq!(created.renew_time, Some(MicroTime(t(10))));
        assert_eq!(created.lease_transitions, Some(0));

        let renewed = next_spec(Some(&created), ME, t(11), d);
        assert_eq!(renewed.acquire_time, Some(MicroTime(t(10))));
        assert_eq!(renewed.renew_time, Some(MicroTime(t(11))));
        assert_eq!(renewed.lease_transitions, Some(0));

        let taken = next_spec(Some(&renewed), OTHER, t(20), d);
        assert_eq!(taken.holder_identity.as_deref(), Some(OTHER));
        assert_eq!(taken.acquire_time, Some(MicroTime(t(20))));
        assert_eq!(taken.lease_transitions, Some(1));

        // After a release (holder cleared), taking it is a transition too; so is a Lease someone
        // created without the field.
        let released = LeaseSpec {
            holder_identity: None,
            ..taken.clone()
        };
        assert_eq!(
            next_spec(Some(&released), ME, t(30), d).lease_transitions,
            Some(2)
        );
        assert_eq!(
            next_spec(Some(&LeaseSpec::default()), ME, t(30), d).lease_transitions,
            Some(1)
        );
    }

    #[test]
    fn next_spec_keeps_coordinated_election_fields() {
        let old = LeaseSpec {
            holder_identity: Some(ME.into()),
            preferred_holder: Some(OTHER.into()),
            strategy: Some("OldestEmulationVersion".into()),
            ..Default::default()
        };
        let s = next_spec(Some(&old), ME, Timestamp::UNIX_EPOCH, DEFAULT);
        assert_eq!(s.preferred_holder, old.preferred_holder);
        assert_eq!(s.strategy, old.strategy);
    }

    #[test]
    fn lease_duration_seconds_round_up_and_are_positive() {
        assert_eq!(duration_seconds(Duration::from_secs(4)), 4);
        assert_eq!(duration_seconds(Duration::from_millis(4001)), 5);
        assert_eq!(duration_seconds(Duration::from_millis(100)), 1);
        assert_eq!(duration_seconds(Duration::ZERO), 1);
        assert_eq!(duration_seconds(Duration::MAX), i32::MAX);
    }
}
