//! Which pools' status writes start on a flush (plain data).
//!
//! Service status comes first. A flush normally writes every pool whose status changed. But
//! while Service writes wait for the write window (a burst larger than the apiserver absorbs at
//! once), pools get [`WHILE_SERVICES_WAIT`] write in flight, taken in turn by name: without
//! that, a burst over 1,000 pools spent a third of its writes on pool counts (every pool
//! rewritten about once a second), and the Services' addresses came that much later. In turn,
//! so every pool's status still moves during a long burst; the rest are written once it drains.

use std::collections::BTreeSet;
use std::ops::Bound;

/// Pool writes in flight at most while Service writes wait.
pub const WHILE_SERVICES_WAIT: usize = 1;

/// Pools whose status may need a write, and those being written.
#[derive(Debug, Default)]
pub struct PoolWrites {
    dirty: BTreeSet<String>,
    in_flight: BTreeSet<String>,
    /// The pool last written while Service writes waited: the turn goes on after it.
    last: Option<String>,
}

impl PoolWrites {
    /// `name`'s status may need a write.
    pub fn mark(&mut self, name: &str) {
        if !self.dirty.contains(name) {
            self.dirty.insert(name.to_string());
        }
    }

    /// Every one of `names` may need a write.
    pub fn mark_all<'a>(&mut self, names: impl IntoIterator<Item = &'a String>) {
        for name in names {
            self.mark(name);
        }
    }

    /// The pools to look at on this flush, in turn, each taken off the dirty set (the caller
    /// [`started`](Self::started) a write for those that need one): none while the allowance
    /// is used up. Pools being written stay dirty, and are looked at after their write.
    pub fn due(&mut self, services_wait: bool) -> Vec<String> {
        let allowance = if services_wait {
            WHILE_SERVICES_WAIT
        } else {
            usize::MAX
        };
        if self.in_flight.len() >= allowance {
            return Vec::new();
        }
        let after = match &self.last {
            Some(last) if services_wait => Bound::Excluded(last.clone()),
            _ => Bound::Unbounded,
        };
        let mut due: Vec<String> = self
            .dirty
            .range::<String, _>((after.clone(), Bound::Unbounded))
            .chain(
                self.dirty
                    .range::<String, _>((Bound::Unbounded, flip(&after))),
            )
            .filter(|n| !self.in_flight.contains(*n))
            .cloned()
            .collect();
        if services_wait {
            // Looked at one by one: a pool whose status already shows its counts costs no write.
            due.truncate(LOOK_AHEAD);
        }
        for name in &due {
            self.dirty.remove(name);
        }
        due
    }

    /// A write of `name` started.
    pub fn started(&mut self, name: String) {
        self.last = Some(name.clone());
        self.in_flight.insert(name);
    }

    /// Whether the allowance for this flush is used up.
    pub fn full(&self, services_wait: bool) -> bool {
        services_wait && self.in_flight.len() >= WHILE_SERVICES_WAIT
    }

    /// Pools among `looked_at` not yet decided on go back to the dirty set.
    pub fn put_back(&mut self, looked_at: impl IntoIterator<Item = String>) {
        self.dirty.extend(looked_at);
    }

    /// The write of `name` finished; a failed one is written again on a later flush.
    pub fn finished(&mut self, name: &str, ok: bool) {
        self.in_flight.remove(name);
        if !ok {
            self.mark(name);
        }
    }

    /// Whether `name` is being written.
    #[cfg(test)]
    fn in_flight(&self, name: &str) -> bool {
        self.in_flight.contains(name)
    }
}

/// Pools looked at per flush while Service writes wait (those already showing their counts need
/// no write, so more than the allowance are looked at).
const LOOK_AHEAD: usize = 16;

/// The end bound of the wrapped-around part of a turn starting at `after`.
fn flip(after: &Bound<String>) -> Bound<String> {
    match after {
        Bound::Excluded(last) => Bound::Included(last.clone()),
        _ => Bound::Excluded(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("pool-{i}")).collect()
    }

    #[test]
    fn with_no_service_write_waiting_every_dirty_pool_is_due() {
        let mut w = PoolWrites::default();
        w.mark_all(&pools(5));
        let due = w.due(false);
        assert_eq!(due, pools(5));
        assert!(w.due(false).is_empty(), "taken off the dirty set");
    }

    #[test]
    fn while_service_writes_wait_one_pool_write_is_out_and_pools_take_turns() {
        let mut w = PoolWrites::default();
        let names = pools(3);
        w.mark_all(&names);
        let mut written = Vec::new();
        for _ in 0..6 {
            let due = w.due(true);
            let first = due[0].clone();
            w.put_back(due.into_iter().skip(1));
            w.started(first.clone());
            assert!(w.full(true));
            assert!(w.due(true).is_empty(), "the allowance is used");
            w.finished(&first, true);
            w.mark(&first); // changed again meanwhile
            written.push(first);
        }
        assert_eq!(
            written,
            ["pool-0", "pool-1", "pool-2", "pool-0", "pool-1", "pool-2"]
        );
    }

    #[test]
    fn a_pool_being_written_stays_dirty_and_is_not_due_twice() {
        let mut w = PoolWrites::default();
        w.mark_all(&pools(2));
        let due = w.due(false);
        w.started(due[0].clone());
        w.mark(&due[0]);
        assert!(w.in_flight(&due[0]));
        assert!(w.due(false).is_empty(), "pool-0 is in flight");
        w.finished(&due[0], true);
        assert_eq!(w.due(false), vec![due[0].clone()]);
    }

    #[test]
    fn a_failed_write_makes_the_pool_due_again() {
        let mut w = PoolWrites::default();
        w.mark("a");
        let due = w.due(false);
        w.started(due[0].clone());
        w.finished("a", false);
        assert_eq!(w.due(false), vec!["a".to_string()]);
    }

    #[test]
    fn while_services_wait_only_a_few_pools_are_looked_at_per_flush() {
        let mut w = PoolWrites::default();
        w.mark_all(&pools(100));
        let due = w.due(true);
        assert_eq!(due.len(), LOOK_AHEAD);
        w.put_back(due);
        assert_eq!(w.due(false).len(), 100, "nothing lost");
    }
}
