//! ferrolb controller: allocates EXTERNAL-IPs from `IPAddressPool`s to LoadBalancer Services.
//!
//! ```text
//!  pools + Services (watches) -> ipam (pure) -> desired status -> one writer (server-side apply)
//! ```
//!
//! Only the pure IPAM core exists so far (`ipam`); the reconciler and status writer follow.
#![forbid(unsafe_code)]

pub mod ipam;
