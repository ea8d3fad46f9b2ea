//! How many responder threads answer on each interface and protocol, and where they run (pure).
//!
//! The sockets of one interface and protocol form a `PACKET_FANOUT_CPU` group: the kernel hands
//! a frame received on CPU `c` to member `c % members`. Member `i`'s thread is pinned to the
//! allowed CPUs congruent to `i`, so with one member per CPU the thread woken for a request runs
//! on the CPU that just handled the frame: no wake-up interrupt to another, idle CPU, which on a
//! virtual machine costs more than the rest of the answer (measured in docs/benchmarks.md). A
//! NIC hands broadcast ARP to one receive queue, so in practice one of these threads does the
//! work and the others sleep.

/// Member `i` of a group runs on `cpus[i]`; an empty list means "anywhere allowed" (no CPU
/// that maps to this member is ours to run on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Per member, the CPUs its thread is pinned to.
    pub cpus: Vec<Vec<usize>>,
}

impl Layout {
    /// One member per CPU id up to the highest `allowed` one, but at most `max_threads`
    /// (at least 1). `allowed` is the speaker's CPU affinity (its cpuset).
    pub fn new(allowed: &[usize], max_threads: usize) -> Layout {
        let span = allowed.iter().max().map_or(1, |m| m + 1);
        let members = span.min(max_threads).max(1);
        if members == 1 {
            return Layout {
                cpus: vec![Vec::new()],
            };
        }
        Layout {
            cpus: (0..members)
                .map(|i| {
                    allowed
                        .iter()
                        .copied()
                        .filter(|c| c % members == i)
                        .collect()
                })
                .collect(),
        }
    }

    /// One unpinned member: what is left when the kernel refuses a fanout group.
    pub fn single() -> Layout {
        Layout::new(&[], 1)
    }

    /// Members per group.
    pub fn members(&self) -> usize {
        self.cpus.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_member_per_cpu_each_pinned_to_its_own() {
        let l = Layout::new(&[0, 1, 2, 3], 16);
        assert_eq!(l.cpus, vec![vec![0], vec![1], vec![2], vec![3]]);
    }

    #[test]
    fn a_single_cpu_or_a_cap_of_one_gives_one_unpinned_member() {
        assert_eq!(Layout::new(&[0], 16).cpus, vec![Vec::<usize>::new()]);
        assert_eq!(
            Layout::new(&[0, 1, 2, 3], 1).cpus,
            vec![Vec::<usize>::new()]
        );
        assert_eq!(Layout::new(&[0, 1], 0).members(), 1);
        assert_eq!(Layout::single().members(), 1);
        assert_eq!(Layout::new(&[], 16).members(), 1);
    }

    #[test]
    fn a_cap_folds_cpus_onto_members_by_the_kernels_modulo() {
        let l = Layout::new(&(0..10).collect::<Vec<_>>(), 4);
        assert_eq!(
            l.cpus,
            vec![vec![0, 4, 8], vec![1, 5, 9], vec![2, 6], vec![3, 7]]
        );
    }

    #[test]
    fn cpus_outside_the_cpuset_keep_their_member_but_it_runs_anywhere() {
        // cpuset {4, 5}: frames handled on CPUs 0-3 still reach members 0-3.
        let l = Layout::new(&[4, 5], 16);
        assert_eq!(l.members(), 6);
        assert_eq!(l.cpus[4], vec![4]);
        assert_eq!(l.cpus[5], vec![5]);
        assert!(l.cpus[..4].iter().all(Vec::is_empty));
    }

    #[test]
    fn every_allowed_cpu_is_pinned_to_exactly_one_member() {
        for (allowed, cap) in [
            ((0..64).collect::<Vec<_>>(), 16),
            (vec![1, 3, 5, 7, 11], 3),
            (vec![2, 3], 2),
        ] {
            let l = Layout::new(&allowed, cap);
            for c in &allowed {
                let owners: Vec<usize> = (0..l.members())
                    .filter(|i| l.cpus[*i].contains(c))
                    .collect();
                assert_eq!(
                    owners,
                    vec![c % l.members()],
                    "cpu {c} in {allowed:?} cap {cap}"
                );
            }
        }
    }
}
