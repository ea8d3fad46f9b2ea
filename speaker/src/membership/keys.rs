//! Membership key rotation without downtime (pure, time passed in).
//!
//! Speakers pick up a new key at different moments (the kubelet refreshes a Secret volume on
//! each node on its own schedule, up to a minute or two apart), so no speaker may sign with the
//! new key before every other one accepts it, and none may stop accepting the old key before
//! every other one has stopped signing with it. With a window `W` longer than the spread of
//! pick-up times, each speaker, from the moment it reads a new key:
//!
//! ```text
//!  t0 (reads new key)        t0 + W                    t0 + 2W
//!  |  accepts old and new      |  accepts old and new     |  accepts new only
//!  |  signs with old           |  signs with new          |  signs with new
//! ```
//!
//! A speaker that read the key at `t1 <= t0 + W` accepts the new key before this one signs with
//! it, and signs with the new key from `t1 + W <= t0 + 2W`, before this one retires the old
//! key. Rotating again starts a new window; rotate at most once per `2W`.

use std::time::{Duration, Instant};

/// The keys a speaker signs with and accepts, over a rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRing {
    window: Duration,
    current: Vec<u8>,
    /// The key being rotated to, and when this speaker read it.
    next: Option<(Vec<u8>, Instant)>,
}

impl KeyRing {
    /// Starts with `key`; a rotation takes `2 * window`.
    pub fn new(key: Vec<u8>, window: Duration) -> KeyRing {
        KeyRing {
            window,
            current: key,
            next: None,
        }
    }

    /// A key read from the key file at `now`. Returns whether anything changed: a new key
    /// starts a rotation; the current key read again during a rotation cancels it (the Secret
    /// was rolled back); the same key again changes nothing.
    pub fn offer(&mut self, key: Vec<u8>, now: Instant) -> bool {
        self.settle(now);
        match &self.next {
            Some((next, _)) if *next == key => false,
            None if self.current == key => false,
            Some(_) if self.current == key => {
                self.next = None;
                true
            }
            _ => {
                // A third key during a rotation: the one already signed with becomes current.
                if let Some((next, since)) = self.next.take()
                    && now >= since + self.window
                {
                    self.current = next;
                }
                self.next = Some((key, now));
                true
            }
        }
    }

    /// Ends a rotation whose window has passed twice: the new key alone remains.
    pub fn settle(&mut self, now: Instant) {
        if let Some((_, since)) = &self.next
            && now >= *since + 2 * self.window
        {
            let (next, _) = self.next.take().expect("checked above");
            self.current = next;
        }
    }

    /// The key to sign with at `now`.
    pub fn signing(&self, now: Instant) -> &[u8] {
        match &self.next {
            Some((next, since)) if now >= *since + self.window => next,
            _ => &self.current,
        }
    }

    /// The keys a datagram may be signed with, the one this speaker signs with first.
    pub fn accepted(&self, now: Instant) -> Vec<&[u8]> {
        let signing = self.signing(now);
        let mut keys = vec![signing];
        keys.extend(
            [
                Some(self.current.as_slice()),
                self.next.as_ref().map(|(k, _)| k.as_slice()),
            ]
            .into_iter()
            .flatten()
            .filter(|k| *k != signing),
        );
        keys
    }

    /// When the keys change next without a new key being offered, if a rotation is under way.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        let (_, since) = self.next.as_ref()?;
        let switch = *since + self.window;
        Some(if now < switch {
            switch
        } else {
            *since + 2 * self.window
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    fn key(b: u8) -> Vec<u8> {
        vec![b; 32]
    }

    #[test]
    fn a_rotation_accepts_both_then_signs_new_then_retires_old() {
        let t0 = Instant::now();
        let mut ring = KeyRing::new(key(1), W);
        assert_eq!(ring.accepted(t0), [key(1).as_slice()]);
        assert_eq!(ring.next_change(t0), None);

        assert!(ring.offer(key(2), t0));
        assert_eq!(ring.signing(t0), key(1));
        assert_eq!(ring.accepted(t0), [key(1).as_slice(), &key(2)]);
        assert_eq!(ring.next_change(t0), Some(t0 + W));

        let t = t0 + W;
        assert_eq!(ring.signing(t), key(2));
        assert_eq!(ring.accepted(t), [key(2).as_slice(), &key(1)]);
        assert_eq!(ring.next_change(t), Some(t0 + 2 * W));

        let t = t0 + 2 * W;
        ring.settle(t);
        assert_eq!(ring.signing(t), key(2));
        assert_eq!(ring.accepted(t), [key(2).as_slice()]);
        assert_eq!(ring.next_change(t), None);
    }

    #[test]
    fn two_speakers_reading_the_key_up_to_a_window_apart_always_understand_each_other() {
        let t0 = Instant::now();
        for lag_s in [0u64, 1, 30, 59, 60] {
            let (mut a, mut b) = (KeyRing::new(key(1), W), KeyRing::new(key(1), W));
            a.offer(key(2), t0);
            let t1 = t0 + Duration::from_secs(lag_s);
            for step in 0..=300u64 {
                let now = t0 + Duration::from_secs(step);
                if now >= t1 && step == lag_s {
                    b.offer(key(2), now);
                }
                a.settle(now);
                b.settle(now);
                assert!(
                    b.accepted(now).contains(&a.signing(now)),
                    "lag {lag_s}s, t+{step}s: b rejects a"
                );
                assert!(
                    a.accepted(now).contains(&b.signing(now)),
                    "lag {lag_s}s, t+{step}s: a rejects b"
                );
            }
        }
    }

    #[test]
    fn the_same_key_again_changes_nothing_and_the_old_key_again_cancels() {
        let t0 = Instant::now();
        let mut ring = KeyRing::new(key(1), W);
        assert!(!ring.offer(key(1), t0));
        assert!(ring.offer(key(2), t0));
        assert!(!ring.offer(key(2), t0 + Duration::from_secs(5)));
        assert!(
            ring.offer(key(1), t0 + Duration::from_secs(10)),
            "rolled back"
        );
        assert_eq!(ring, KeyRing::new(key(1), W));
    }

    #[test]
    fn a_third_key_during_a_rotation_keeps_the_key_being_signed_with() {
        let t0 = Instant::now();
        let mut ring = KeyRing::new(key(1), W);
        ring.offer(key(2), t0);
        // Before the switch: key 2 was never signed with; key 1 stays current.
        ring.offer(key(3), t0 + Duration::from_secs(10));
        assert_eq!(
            ring.accepted(t0 + Duration::from_secs(10)),
            [key(1).as_slice(), &key(3)]
        );
        // After the switch: key 3 signs, so it becomes current when key 4 comes.
        let t = t0 + Duration::from_secs(10) + W;
        assert_eq!(ring.signing(t), key(3));
        ring.offer(key(4), t);
        assert_eq!(ring.accepted(t), [key(3).as_slice(), &key(4)]);
    }
}
