//! ferrolb controller: allocates EXTERNAL-IPs from `IPAddressPool`s to LoadBalancer Services.
//!
//! ```text
//!  pools + Services + namespaces (watches) -> reconcile::state (pure) -> ipam (pure)
//!      -> desired status -> reconcile::writer (server-side apply, Events)
//!  memory: trims after bursts; metrics: the controller's Prometheus metrics
//!  (ferrolb_runtime: start-up, /healthz /readyz /metrics, Lease election, Event recording)
//! ```
#![deny(unsafe_code)]

pub mod ipam;
/// The only `unsafe`: two calls into glibc's allocator.
pub mod memory;
pub mod metrics;
pub mod reconcile;
