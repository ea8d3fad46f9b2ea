//! Service status writes waiting for their turn (plain data).
//!
//! A Service that needs a write is queued by key; its body is built only when the write is
//! handed to the I/O layer, at most [`WINDOW`] ahead of the results. So a burst of 100,000
//! Services holds 100,000 keys, not 100,000 JSON bodies, and each body shows the state as it is
//! when the write starts, not as it was when the Service was first seen.

use std::collections::VecDeque;

use crate::ipam::ServiceKey;

/// Service writes handed out and not yet finished, at most: enough to keep every write slot of
/// the I/O layer busy (its `--concurrency`, 32 by default, up to 256) with the next ones queued.
pub const WINDOW: usize = 512;

/// Where a Service's status write stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// None queued or running.
    Idle,
    /// Queued: the body is built when it is handed out.
    Queued,
    /// Handed out; its result has not come back.
    InFlight,
}

/// The queue of Services whose write waits, and how many writes are out.
#[derive(Debug, Default)]
pub struct Writes {
    queued: VecDeque<ServiceKey>,
    out: usize,
}

impl Writes {
    /// `key` needs a write (its [`Write`] becomes `Queued`).
    pub fn queue(&mut self, key: ServiceKey) {
        self.queued.push_back(key);
    }

    /// The next key to hand out while fewer than [`WINDOW`] writes are out (the caller skips
    /// keys whose Service is gone or no longer `Queued`, and calls [`Writes::handed_out`] for
    /// the others).
    pub fn next(&mut self) -> Option<ServiceKey> {
        if self.out >= WINDOW {
            return None;
        }
        self.queued.pop_front()
    }

    /// A write was handed out.
    pub fn handed_out(&mut self) {
        self.out += 1;
    }

    /// A write handed out finished.
    pub fn finished(&mut self) {
        self.out = self.out.saturating_sub(1);
    }

    /// Whether writes wait to be handed out (the window is full).
    pub fn waiting(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Writes queued and not handed out yet.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// Gives back the capacity a burst grew the queue to.
    pub fn shrink(&mut self) {
        if self.queued.is_empty() {
            self.queued.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_a_window_of_writes_is_out() {
        let mut w = Writes::default();
        for i in 0..WINDOW + 2 {
            w.queue(ServiceKey::new("ns", format!("s{i}")));
        }
        for _ in 0..WINDOW {
            assert!(w.next().is_some());
            w.handed_out();
        }
        assert_eq!(w.next(), None, "the window is full");
        assert_eq!(w.queued(), 2);
        w.finished();
        assert_eq!(w.next(), Some(ServiceKey::new("ns", format!("s{WINDOW}"))));
        w.handed_out();
        assert_eq!(w.next(), None);
    }
}
