//! Who watches whom once a full mesh would cost too much. Pure: names in, names out.
//!
//! With at most [`WATCHERS`] peers every speaker watches every other one (the full mesh, *direct*
//! mode). Beyond that each speaker is watched by [`WATCHERS`] others, its *observers*, chosen
//! from [`WATCHERS`] pseudo-random rings over all speakers' names (Rapid's monitoring rings):
//! ring `r` orders the names by SHA-256(`r` ‖ name); a speaker's observers are the first live
//! speakers after it on the rings, taken round-robin (first successor on ring 0, on ring 1, ...,
//! then the second successors, ...), skipping itself, repeats and speakers that are not live.
//!
//! Every speaker computes the same observers from the same peer list and live set, so the
//! observers of a speaker agree on who they are, and everyone else knows whose death reports to
//! count. Observer sets are spread evenly: each speaker watches about [`WATCHERS`] others. When
//! an observer dies the next live successor takes its place.

use std::collections::BTreeSet;

use ring::digest;

/// How many observers watch each speaker (and how many peers a speaker has at most before the
/// full mesh gives way to observers).
pub const WATCHERS: usize = 4;

/// The monitoring rings over one set of names.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Every speaker's name, this one's included, sorted.
    names: Vec<String>,
    /// `rings[r]` lists indices into `names` in ring `r`'s order.
    rings: Vec<Vec<usize>>,
    /// `positions[i][r]` is where `names[i]` sits in ring `r`.
    positions: Vec<[usize; WATCHERS]>,
}

impl Topology {
    /// The rings over `names` (repeats are ignored).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Topology {
        let names: Vec<String> = names
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let rings: Vec<Vec<usize>> = (0..WATCHERS)
            .map(|r| {
                let mut ring: Vec<(u64, usize)> = names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (ring_key(r, name), i))
                    .collect();
                ring.sort_unstable();
                ring.into_iter().map(|(_, i)| i).collect()
            })
            .collect();
        let mut positions = vec![[0; WATCHERS]; names.len()];
        for (r, ring) in rings.iter().enumerate() {
            for (at, &i) in ring.iter().enumerate() {
                positions[i][r] = at;
            }
        }
        Topology {
            names,
            rings,
            positions,
        }
    }

    /// Whether every speaker watches every other one (at most [`WATCHERS`] peers each).
    pub fn is_direct(&self) -> bool {
        self.names.len() <= WATCHERS + 1
    }

    /// The observers of `subject` given which speakers are live: all other speakers in direct
    /// mode, else up to [`WATCHERS`] live ones from the rings. Empty if `subject` is unknown.
    #[cfg(test)]
    pub fn observers(&self, subject: &str, live: &dyn Fn(&str) -> bool) -> Vec<&str> {
        let Some(me) = self.index(subject) else {
            return Vec::new();
        };
        self.observers_of(me, &|i| live(&self.names[i]))
            .into_iter()
            .map(|i| self.names[i].as_str())
            .collect()
    }

    /// The observers of every speaker, by index (see [`Topology::observers`] and
    /// [`Topology::index`]); `live` is asked by index too.
    pub fn all_observers(&self, live: &dyn Fn(usize) -> bool) -> Vec<Vec<usize>> {
        (0..self.names.len())
            .map(|i| self.observers_of(i, live))
            .collect()
    }

    /// Where `name` is in the sorted names.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.binary_search_by(|n| n.as_str().cmp(name)).ok()
    }

    /// The name at `index` (see [`Topology::index`]).
    pub fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// How many speakers the rings hold.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    fn observers_of(&self, me: usize, live: &dyn Fn(usize) -> bool) -> Vec<usize> {
        if self.is_direct() {
            return (0..self.names.len()).filter(|i| *i != me).collect();
        }
        let n = self.names.len();
        let mut chosen: Vec<usize> = Vec::with_capacity(WATCHERS);
        'steps: for step in 1..n {
            for (r, ring) in self.rings.iter().enumerate() {
                let i = ring[(self.positions[me][r] + step) % n];
                if !chosen.contains(&i) && live(i) {
                    chosen.push(i);
                    if chosen.len() == WATCHERS {
                        break 'steps;
                    }
                }
            }
        }
        chosen
    }
}
/// Where `name` sits on ring `r`: the first eight bytes of SHA-256(r ‖ name).
fn ring_key(r: usize, name: &str) -> u64 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&(r as u64).to_be_bytes());
    ctx.update(name.as_bytes());
    let hash = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_ref()[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i:04}")).collect()
    }

    fn topology(names: &[String]) -> Topology {
        Topology::new(names.iter().map(String::as_str))
    }

    #[test]
    fn up_to_watchers_peers_everyone_watches_everyone() {
        for n in 1..=WATCHERS + 1 {
            let names = names(n);
            let t = topology(&names);
            assert!(t.is_direct());
            for name in &names {
                let obs = t.observers(name, &|_| true);
                let others: Vec<&str> = names
                    .iter()
                    .filter(|o| *o != name)
                    .map(String::as_str)
                    .collect();
                assert_eq!(obs, others, "n={n}");
            }
        }
        assert!(!topology(&names(WATCHERS + 2)).is_direct());
    }

    #[test]
    fn each_speaker_has_watchers_distinct_live_observers_other_than_itself() {
        for n in [WATCHERS + 2, 10, 100, 1000] {
            let names = names(n);
            let t = topology(&names);
            for name in &names {
                let obs = t.observers(name, &|_| true);
                assert_eq!(obs.len(), WATCHERS, "n={n} {name}");
                assert!(!obs.contains(&name.as_str()));
                let distinct: BTreeSet<_> = obs.iter().collect();
                assert_eq!(distinct.len(), WATCHERS);
            }
        }
    }

    #[test]
    fn the_watching_load_is_spread_evenly() {
        let names = names(1000);
        let t = topology(&names);
        let mut watching: BTreeMap<&str, usize> = BTreeMap::new();
        for obs in t.all_observers(&|_| true) {
            for o in obs {
                *watching.entry(t.name(o)).or_default() += 1;
            }
        }
        let most = watching.values().max().copied().unwrap_or(0);
        let least = names
            .iter()
            .map(|n| watching.get(n.as_str()).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        // Every speaker watches at least one other, none more than a small multiple of four.
        assert!(least >= 1, "least {least}");
        assert!(most <= 3 * WATCHERS, "most {most}");
        assert_eq!(watching.values().sum::<usize>(), 1000 * WATCHERS);
    }

    #[test]
    fn dead_observers_are_replaced_and_the_others_kept() {
        let names = names(50);
        let t = topology(&names);
        let subject = names[7].as_str();
        let before = t.observers(subject, &|_| true);
        let dead = before[1];
        let after = t.observers(subject, &|n| n != dead);
        assert_eq!(after.len(), WATCHERS);
        assert!(!after.contains(&dead));
        let kept = before.iter().filter(|o| after.contains(o)).count();
        assert_eq!(kept, WATCHERS - 1, "only the dead observer changes");
    }

    #[test]
    fn with_few_live_speakers_the_observers_are_the_live_ones() {
        let names = names(20);
        let t = topology(&names);
        let live = |n: &str| n == "node-0003" || n == "node-0011" || n == "node-0000";
        let obs: BTreeSet<&str> = t.observers("node-0000", &live).into_iter().collect();
        assert_eq!(obs, BTreeSet::from(["node-0003", "node-0011"]));
        assert!(t.observers("node-0000", &|n| n == "node-0000").is_empty());
    }

    #[test]
    fn the_same_names_in_any_order_give_the_same_observers() {
        let names = names(30);
        let mut shuffled = names.clone();
        fastrand::Rng::with_seed(7).shuffle(&mut shuffled);
        shuffled.push(names[3].clone());
        let (a, b) = (topology(&names), topology(&shuffled));
        for name in &names {
            assert_eq!(a.observers(name, &|_| true), b.observers(name, &|_| true));
        }
        assert!(a.observers("not-a-node", &|_| true).is_empty());
    }
}
