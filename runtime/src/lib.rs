//! What ferrolb's controller and speaker share around their logic, so neither borrows from the
//! other: both binaries call [`run_to_end`] and [`Runtime::start`], then hand the client and the
//! health state to their own run loop.
//!
//! ```text
//!  main ─ cli (flags, logging) ─ run_to_end (Tokio runtime, last error line)
//!       └ Runtime::start ─ client::connect (kube::Client, keepalive, short timeouts)
//!                        └ health::serve  /healthz /readyz /metrics (prometheus-client Registry)
//!                        └ secure_metrics::serve  /metrics over TLS, TokenReview + SubjectAccessReview
//!  run loops use: watch::resilient (1 s-bounded retries, readiness), events::EventRecorder (Events about Services), lease (leader election;
//!                 lease/decide.rs is the pure, monotonic-clock decision), shutdown_signal
//! ```
#![deny(unsafe_code)]

pub mod cli;
pub mod client;
pub mod events;
pub mod health;
pub mod lean;
pub mod lease;
pub mod secure_metrics;
mod shutdown;
mod start;
pub mod watch;

pub use shutdown::shutdown_signal;
pub use start::{Runtime, Scheduler, SecureMetricsArgs, run_to_end};
