//! ferrolb controller: allocates EXTERNAL-IPs from `IPAddressPool`s to LoadBalancer Services.
//!
//! ```text
//!  pools + Services + namespaces (watches) -> reconcile::state (pure) -> ipam (pure)
//!      -> desired status -> reconcile::writer (server-side apply, Events)
//!  lease: one acting replica; http: /healthz /readyz /metrics; memory: trims after bursts
//! ```
#![deny(unsafe_code)]

pub mod cli;
pub mod http;
pub mod ipam;
pub mod lease;
/// The only `unsafe`: two calls into glibc's allocator.
pub mod memory;
pub mod metrics;
pub mod reconcile;
