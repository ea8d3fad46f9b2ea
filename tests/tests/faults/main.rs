//! Faults against the real controller, real speakers in lab node namespaces and the binary's
//! own apiserver and etcd. Each asserts that announced addresses keep answering, that nothing moves
//! or is held twice without cause, and that recovery stays within [`RECOVERY_BOUND`].
//!
//! ```text
//!  control_plane  the apiserver or etcd killed and restarted; a node cut off from the apiserver
//!  network        forged ARP requests and garbage heartbeats; a partition between speakers
//!  churn          speakers SIGKILLed and restarted while Services come and go
//! ```
//!
//! The bound asserted is 5 s, looser than the goal of 2 s so that a loaded CI machine does not
//! fail the suite; each test prints its figures, and `FERROLB_FAULT_RUNS=5` repeats the outages
//! for a p50/max. kube's default watch backoff took 40-63 s here.

mod churn;
mod control_plane;
mod network;

use std::time::Duration;

/// The recovery bound the tests assert (goal: 2 s).
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
