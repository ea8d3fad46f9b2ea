//! Death reports from observers and the signs of life that overrule them. Pure.
//!
//! Once speakers watch only some of their peers (see `topology.rs`), a speaker learns that a
//! peer it does not watch is dead from the peer's observers: each one reports its verdict
//! (a *vote*) to everyone. A vote carries the subject's own clock and boot id as last heard by
//! the observer, so it can be weighed against later *signs of life* of the subject without
//! comparing the clocks of different nodes:
//!
//! - a sign from another process (boot id) stamped after the vote's: the subject restarted since;
//! - a sign stamped more than `dead_after` after the vote's: the subject spoke after the observer
//!   gave up on it (the observer's own link to it failed).
//!
//! A vote stamped with a boot id and clock 0 says "process B ended, and I never heard a packet
//! of it": the observer learnt B from the lifeline, whose end is the kernel's word. Only
//! another process voids it, never B's own signs (they are all older than its end). A vote
//! stamped 0/0 (never heard, no lifeline either) is voided by any sign of the subject.
//!
//! Either makes the vote void. Signs come from the subject's own packets, its Join (sent at start
//! and to refute a report of its death) and observers' Alive reports.

use std::collections::{BTreeMap, HashMap};

/// A moment in a speaker's life, in its own terms: which process, and its clock then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sign {
    /// Boot id of the process (0: never heard).
    pub boot: u64,
    /// Its `sent_at`, milliseconds on its own clock (0: never heard).
    pub clock_ms: u64,
}

impl Sign {
    /// The stamp of a vote on process `boot`, which ended (its lifeline said so) before the
    /// voter heard any packet of it: nothing that process sent can void the vote.
    pub fn ended_unheard(boot: u64) -> Sign {
        Sign { boot, clock_ms: 0 }
    }

    /// Whether `self`, a sign of life, voids a death vote stamped `vote`.
    pub fn voids(self, vote: Sign, dead_after_ms: u64) -> bool {
        let restarted = self.boot != vote.boot && self.clock_ms > vote.clock_ms;
        let ended_unheard = vote.boot != 0 && vote.clock_ms == 0;
        let spoke_later =
            !ended_unheard && self.clock_ms > vote.clock_ms.saturating_add(dead_after_ms);
        restarted || spoke_later
    }
}

/// Every vote and the newest sign of life known, per subject.
#[derive(Clone, Debug, Default)]
pub struct Ballots {
    /// Newest sign of life per subject.
    signs: HashMap<String, Sign>,
    /// Death votes: subject -> reporter -> the subject as last heard by the reporter.
    votes: HashMap<String, BTreeMap<String, Sign>>,
}

impl Ballots {
    /// Records a sign of life of `subject` (kept if newer than the one known).
    pub fn sign(&mut self, subject: &str, sign: Sign) {
        match self.signs.get_mut(subject) {
            Some(known) if known.clock_ms >= sign.clock_ms => {}
            Some(known) => *known = sign,
            None => {
                self.signs.insert(subject.to_owned(), sign);
            }
        }
    }

    /// The newest sign of life of `subject` known (default: never heard).
    pub fn newest(&self, subject: &str) -> Sign {
        self.signs.get(subject).copied().unwrap_or_default()
    }

    /// `reporter` says `subject`, last heard as `last`, is dead. Returns whether it is new.
    pub fn vote(&mut self, reporter: &str, subject: &str, last: Sign) -> bool {
        let votes = self.votes.entry(subject.to_owned()).or_default();
        votes.insert(reporter.to_owned(), last) != Some(last)
    }

    /// `reporter` takes back its vote on `subject`. Returns whether it had one.
    pub fn retract(&mut self, reporter: &str, subject: &str) -> bool {
        let Some(votes) = self.votes.get_mut(subject) else {
            return false;
        };
        let had = votes.remove(reporter).is_some();
        if votes.is_empty() {
            self.votes.remove(subject);
        }
        had
    }

    /// Whether anyone holds a vote on `subject`.
    pub fn has_votes(&self, subject: &str) -> bool {
        self.votes.contains_key(subject)
    }

    /// Whether `reporter` holds a vote on `subject`.
    pub fn has_vote(&self, reporter: &str, subject: &str) -> bool {
        self.votes
            .get(subject)
            .is_some_and(|votes| votes.contains_key(reporter))
    }

    /// The votes `reporter` holds: (subject, the subject as last heard).
    pub fn votes_by<'a>(&'a self, reporter: &'a str) -> impl Iterator<Item = (&'a str, Sign)> + 'a {
        self.votes.iter().filter_map(move |(subject, votes)| {
            votes.get(reporter).map(|last| (subject.as_str(), *last))
        })
    }

    /// Forgets the votes of reporters `keep` rejects.
    pub fn retain_votes_of(&mut self, keep: impl Fn(&str) -> bool) {
        self.votes.retain(|_, votes| {
            votes.retain(|reporter, _| keep(reporter));
            !votes.is_empty()
        });
    }

    /// How many of `reporters` hold a vote on `subject` that no known sign of life voids.
    pub fn count<'a>(
        &self,
        subject: &str,
        reporters: impl IntoIterator<Item = &'a str>,
        dead_after_ms: u64,
    ) -> usize {
        let Some(votes) = self.votes.get(subject) else {
            return 0;
        };
        let newest = self.newest(subject);
        reporters
            .into_iter()
            .filter_map(|r| votes.get(r))
            .filter(|vote| !newest.voids(**vote, dead_after_ms))
            .count()
    }

    /// Forgets subjects and reporters that are no longer speakers.
    pub fn retain(&mut self, is_speaker: impl Fn(&str) -> bool) {
        self.signs.retain(|name, _| is_speaker(name));
        self.votes.retain(|subject, votes| {
            votes.retain(|reporter, _| is_speaker(reporter));
            is_speaker(subject) && !votes.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD_MS: u64 = 250;

    fn sign(boot: u64, clock_ms: u64) -> Sign {
        Sign { boot, clock_ms }
    }

    fn reporters<'a>(names: &'a [&'a str]) -> Vec<&'a str> {
        names.to_vec()
    }

    #[test]
    fn what_voids_a_vote() {
        let vote = sign(1, 10_000);
        let cases = [
            (sign(1, 10_000), false, "the same packet"),
            (sign(1, 9_000), false, "older, same process"),
            (sign(1, 10_250), false, "within dead_after of the vote"),
            (
                sign(1, 10_251),
                true,
                "more than dead_after later: it spoke after",
            ),
            (
                sign(2, 10_001),
                true,
                "another process, later: it restarted",
            ),
            (sign(2, 10_000), false, "another process, not later"),
            (sign(2, 9_000), false, "an older process"),
            (sign(0, 0), false, "never heard"),
        ];
        for (s, voids, what) in cases {
            assert_eq!(s.voids(vote, DEAD_MS), voids, "{what}");
        }
        // A process that ended before the voter heard it: only another process voids the vote.
        let ended = Sign::ended_unheard(1);
        assert!(
            !sign(1, 10_000).voids(ended, DEAD_MS),
            "its own last packet"
        );
        assert!(
            !sign(1, u64::MAX).voids(ended, DEAD_MS),
            "any packet of its own"
        );
        assert!(sign(2, 10_000).voids(ended, DEAD_MS), "another process");
        assert!(!Sign::default().voids(ended, DEAD_MS), "never heard");
        // A vote on a speaker never heard is voided by any sign of it.
        assert!(sign(5, 1).voids(Sign::default(), DEAD_MS));
        assert!(!Sign::default().voids(Sign::default(), DEAD_MS));
    }

    #[test]
    fn votes_count_only_from_the_reporters_asked_and_only_while_they_stand() {
        let mut b = Ballots::default();
        assert!(b.vote("o1", "x", sign(1, 1_000)));
        assert!(!b.vote("o1", "x", sign(1, 1_000)), "the same vote again");
        assert!(b.vote("o2", "x", sign(1, 1_000)));
        assert!(b.vote("stranger", "x", sign(1, 1_000)));
        let obs = reporters(&["o1", "o2", "o3"]);
        assert_eq!(b.count("x", obs.clone(), DEAD_MS), 2);
        assert_eq!(b.count("y", obs.clone(), DEAD_MS), 0);
        // x refutes: it spoke well after the observers last heard it.
        b.sign("x", sign(1, 1_300));
        assert_eq!(b.count("x", obs.clone(), DEAD_MS), 0);
        // A later vote, after that sign, stands again.
        b.vote("o3", "x", sign(1, 1_300));
        assert_eq!(b.count("x", obs.clone(), DEAD_MS), 1);
    }

    #[test]
    fn signs_keep_the_newest() {
        let mut b = Ballots::default();
        assert_eq!(b.newest("x"), Sign::default());
        b.sign("x", sign(1, 2_000));
        b.sign("x", sign(1, 1_500));
        assert_eq!(b.newest("x"), sign(1, 2_000));
        b.sign("x", sign(2, 2_100));
        assert_eq!(b.newest("x"), sign(2, 2_100));
    }

    #[test]
    fn retract_and_retain() {
        let mut b = Ballots::default();
        b.vote("o1", "x", sign(1, 1));
        b.vote("o2", "x", sign(1, 1));
        b.vote("o1", "y", sign(1, 1));
        b.sign("y", sign(1, 1));
        assert!(b.retract("o1", "x"));
        assert!(!b.retract("o1", "x"));
        assert!(!b.retract("o1", "z"));
        let all = reporters(&["o1", "o2"]);
        assert_eq!(b.count("x", all.clone(), DEAD_MS), 1);
        b.retain(|n| n != "o2" && n != "y");
        assert_eq!(b.count("x", all.clone(), DEAD_MS), 0);
        assert_eq!(b.count("y", all.clone(), DEAD_MS), 0);
        assert_eq!(b.newest("y"), Sign::default());
    }
}
