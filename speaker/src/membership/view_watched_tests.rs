//! Tests of watched mode (more than four peers): votes, majorities, signs of life.

use super::*;

const DEAD: Duration = Duration::from_millis(250);
const FALLBACK: Duration = Duration::from_secs(3);
const BOOT: u64 = 7;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn sign(clock_ms: u64) -> Sign {
    Sign {
        boot: BOOT,
        clock_ms,
    }
}

fn dead_vote(subject: &str, clock_ms: u64) -> Report {
    Report {
        subject: subject.into(),
        dead: true,
        boot_id: BOOT,
        clock_ms,
    }
}

/// Ten speakers `n0`..`n9`; the view is `me`'s, past its start-up grace.
struct Lab {
    names: Vec<String>,
    topology: Topology,
    view: View,
    t0: Instant,
}

impl Lab {
    fn new(me: &str) -> Lab {
        let names: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        let t0 = Instant::now();
        let mut view = View::new(me, t0, DEAD, FALLBACK);
        // Nodes not Ready: no start-up grace and no fallback, only what the mesh says.
        view.set_peers(names.iter().map(|n| (n.clone(), false)));
        let topology = Topology::new(names.iter().map(String::as_str));
        let mut lab = Lab {
            names,
            topology,
            view,
            t0,
        };
        lab.settle(Duration::ZERO);
        lab
    }

    fn at(&self, after: Duration) -> Instant {
        self.t0 + FALLBACK + after
    }

    fn settle(&mut self, after: Duration) -> LiveView {
        let now = self.at(after);
        self.view.settle(now)
    }

    /// Every peer heard at `after` (their own clock = ms since t0).
    fn hear_all(&mut self, after: Duration) {
        let now = self.at(after);
        for n in self.names.clone() {
            self.view.heard(&n, sign(clock(after)), now);
        }
    }

    fn observers(&self, subject: &str) -> Vec<String> {
        self.topology
            .observers(subject, &|_| true)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// A peer `me` does not watch, and one it does.
    fn unwatched_and_watched(&self) -> (String, String) {
        let me = &self.view.me;
        let others = self.names.iter().filter(|n| *n != me);
        let unwatched = others
            .clone()
            .find(|n| !self.observers(n).contains(me))
            .unwrap()
            .clone();
        let watched = others
            .clone()
            .find(|n| self.observers(n).contains(me))
            .unwrap()
            .clone();
        (unwatched, watched)
    }

    fn status(&self, name: &str, after: Duration) -> Status {
        self.view.status(name, self.at(after)).unwrap()
    }
}

fn clock(after: Duration) -> u64 {
    10_000 + u64::try_from(after.as_millis()).unwrap()
}

#[test]
fn beyond_four_peers_each_speaker_watches_only_its_subjects() {
    let lab = Lab::new("n0");
    assert!(!lab.view.is_direct());
    let observers: Vec<&str> = lab.view.observers();
    assert_eq!(observers.len(), WATCHERS_FOR_TESTS);
    assert_eq!(
        observers,
        lab.observers("n0")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    let subjects: Vec<&str> = lab.view.subjects().collect();
    for name in &lab.names[1..] {
        let watches = lab.observers(name).contains(&"n0".to_string());
        assert_eq!(subjects.contains(&name.as_str()), watches, "{name}");
    }
}

const WATCHERS_FOR_TESTS: usize = super::super::topology::WATCHERS;

#[test]
fn an_unwatched_peer_is_live_until_a_majority_of_its_observers_reports_it_dead() {
    let mut lab = Lab::new("n0");
    let (x, _) = lab.unwatched_and_watched();
    lab.hear_all(ms(0));
    lab.settle(ms(1));
    // Not heard since: still live, since this speaker does not watch it.
    assert_eq!(lab.status(&x, ms(1000)), Status::Watched);
    let obs = lab.observers(&x);
    let vote = dead_vote(&x, clock(ms(0)));
    assert!(lab.view.report(&obs[0], &vote));
    assert!(lab.view.report(&obs[1], &vote));
    // A vote from a speaker that is not an observer of x does not count.
    let stranger = lab
        .names
        .iter()
        .find(|n| !obs.contains(n) && **n != x && *n != "n0")
        .unwrap()
        .clone();
    lab.view.report(&stranger, &vote);
    assert!(lab.settle(ms(300)).live.contains(&x), "two of four");
    lab.view.report(&obs[2], &vote);
    assert!(!lab.settle(ms(300)).live.contains(&x), "three of four");
    assert_eq!(lab.status(&x, ms(300)), Status::Reported(3, 4));
    // One takes its vote back: live again.
    let mut alive = vote.clone();
    alive.dead = false;
    assert!(lab.view.report(&obs[2], &alive));
    assert!(lab.settle(ms(310)).live.contains(&x));
}

#[test]
fn a_later_sign_of_life_voids_the_votes() {
    for (what, later) in [
        ("spoke after the observers gave up", sign(clock(ms(300)))),
        (
            "restarted",
            Sign {
                boot: BOOT + 1,
                clock_ms: clock(ms(10)),
            },
        ),
    ] {
        let mut lab = Lab::new("n0");
        let (x, _) = lab.unwatched_and_watched();
        let vote = dead_vote(&x, clock(ms(0)));
        for o in lab.observers(&x) {
            lab.view.report(&o, &vote);
        }
        assert!(!lab.settle(ms(300)).live.contains(&x), "{what}");
        // Its Join (or any packet of it) reaches this speaker.
        assert!(lab.view.heard(&x, later, lab.at(ms(300))), "{what}");
        assert!(lab.settle(ms(301)).live.contains(&x), "{what}");
        // An old sign changes nothing.
        let mut lab2 = Lab::new("n0");
        for o in lab2.observers(&x) {
            lab2.view.report(&o, &vote);
        }
        lab2.view.heard(&x, sign(clock(ms(100))), lab2.at(ms(300)));
        assert!(!lab2.settle(ms(301)).live.contains(&x), "{what}: old sign");
    }
}

#[test]
fn a_silent_subject_gets_this_speakers_vote_and_is_dead_with_a_majority() {
    let mut lab = Lab::new("n0");
    let (_, s) = lab.unwatched_and_watched();
    lab.hear_all(ms(0));
    lab.settle(ms(0));
    assert!(lab.view.my_votes().is_empty());
    // Silent past dead_after: this speaker votes, but alone it is a dispute, not a death.
    let v = lab.settle(ms(260));
    assert!(v.live.contains(&s));
    assert_eq!(lab.status(&s, ms(260)), Status::Disputed);
    let votes = lab.view.my_votes();
    assert!(votes.iter().any(|r| r.subject == s && r.dead));
    let mine = votes.iter().find(|r| r.subject == s).unwrap();
    assert_eq!((mine.boot_id, mine.clock_ms), (BOOT, clock(ms(0))));
    // Two other observers agree: three of four.
    let others: Vec<String> = lab
        .observers(&s)
        .into_iter()
        .filter(|o| o != "n0")
        .take(2)
        .collect();
    for o in &others {
        lab.view.report(o, &dead_vote(&s, clock(ms(0))));
    }
    assert!(!lab.settle(ms(270)).live.contains(&s));
    // Heard again: the vote is taken back, and it is live.
    lab.view.heard(&s, sign(clock(ms(400))), lab.at(ms(400)));
    assert!(lab.settle(ms(400)).live.contains(&s));
    assert!(lab.view.my_votes().iter().all(|r| r.subject != s));
}

#[test]
fn a_subject_never_heard_is_watched_for_dead_after_before_the_vote() {
    let mut lab = Lab::new("n0");
    let (_, s) = lab.unwatched_and_watched();
    // Nobody heard: just after the grace, every subject is being watched, not voted on.
    assert!(matches!(lab.status(&s, ms(1)), Status::Watching(_)));
    assert!(matches!(lab.status(&s, ms(200)), Status::Suspect(_)));
    assert!(lab.view.suspects(lab.at(ms(200))).any(|n| n == s));
    lab.settle(ms(100));
    assert!(lab.view.my_votes().is_empty());
    lab.settle(ms(300));
    assert!(lab.view.my_votes().iter().any(|r| r.subject == s));
    // Suspects are only subjects.
    let (x, _) = lab.unwatched_and_watched();
    assert!(lab.view.suspects(lab.at(ms(200))).all(|n| n != x));
}

#[test]
fn a_process_that_ended_before_it_was_heard_is_voted_on_by_its_boot_id() {
    let mut lab = Lab::new("n0");
    let (_, s) = lab.unwatched_and_watched();
    // n0 never heard s (it just became an observer); its lifeline says process BOOT ended.
    assert!(lab.view.ended(&s, BOOT, lab.at(ms(1))));
    lab.settle(ms(1));
    let votes = lab.view.my_votes();
    let mine = votes.iter().find(|r| r.subject == s).unwrap();
    assert_eq!((mine.boot_id, mine.clock_ms), (BOOT, 0));
    // The other observers heard that process: one says so (a sign of life of BOOT), two vote.
    let others: Vec<String> = lab
        .observers(&s)
        .into_iter()
        .filter(|o| o != "n0")
        .collect();
    let alive_again = Report {
        dead: false,
        ..dead_vote(&s, clock(ms(0)))
    };
    lab.view.report(&others[0], &alive_again);
    for o in &others[1..3] {
        lab.view.report(o, &dead_vote(&s, clock(ms(0))));
    }
    // BOOT's own packets, however late, do not void n0's vote: three of four.
    assert_eq!(lab.status(&s, ms(2)), Status::Reported(3, 4));
    assert!(!lab.settle(ms(2)).live.contains(&s));
    // A new process of s does.
    let restarted = Sign {
        boot: BOOT + 1,
        clock_ms: clock(ms(10)),
    };
    lab.view.heard(&s, restarted, lab.at(ms(10)));
    assert!(lab.settle(ms(10)).live.contains(&s));
}

#[test]
fn a_dead_observer_is_replaced() {
    let mut lab = Lab::new("n0");
    lab.hear_all(ms(0));
    let before = lab.view.observers().len();
    let dead = lab.view.observers()[0].to_owned();
    let obs_of_dead = lab.observers(&dead);
    for o in &obs_of_dead {
        lab.view.report(o, &dead_vote(&dead, clock(ms(0))));
    }
    let v = lab.settle(ms(10));
    assert!(!v.live.contains(&dead));
    let after: Vec<&str> = lab.view.observers();
    assert_eq!(after.len(), before);
    assert!(!after.contains(&dead.as_str()));
}

#[test]
fn leave_is_final_at_once_in_watched_mode() {
    let mut lab = Lab::new("n0");
    let (x, _) = lab.unwatched_and_watched();
    assert!(lab.view.leave(&x, lab.at(ms(5))));
    assert!(!lab.settle(ms(5)).live.contains(&x));
}

#[test]
fn reports_on_strangers_or_from_strangers_are_ignored() {
    let mut lab = Lab::new("n0");
    assert!(!lab.view.report("stranger", &dead_vote("n1", 1)));
    assert!(!lab.view.report("n1", &dead_vote("stranger", 1)));
    assert!(!lab.view.report("n1", &dead_vote("n0", 1)), "on itself");
}

#[test]
fn shrinking_to_four_peers_returns_to_direct_mode_and_drops_own_votes() {
    let mut lab = Lab::new("n0");
    lab.settle(ms(300));
    assert!(
        !lab.view.my_votes().is_empty(),
        "never-heard subjects voted"
    );
    lab.view
        .set_peers(lab.names[..5].iter().map(|n| (n.clone(), false)));
    lab.settle(ms(301));
    assert!(lab.view.is_direct());
    assert!(lab.view.my_votes().is_empty());
    assert_eq!(lab.view.subjects().count(), 4);
    assert_eq!(lab.view.observers().len(), 4);
    // Peers it did not watch have not been sending to it: their silence counts from the switch,
    // so they are live, then probed, before any verdict.
    let v = lab.settle(ms(302));
    assert_eq!(v.live.len(), 5, "{v:?}");
    assert!(lab.view.suspects(lab.at(ms(301 + 200))).count() > 0);
}

#[test]
fn refuted_means_a_join_after_the_vote() {
    let lab = Lab::new("n0");
    let vote = sign(1_000);
    assert!(lab.view.refuted(vote, sign(1_251)));
    assert!(!lab.view.refuted(vote, sign(1_250)));
    assert!(lab.view.refuted(
        vote,
        Sign {
            boot: BOOT + 1,
            clock_ms: 1_001
        }
    ));
}
