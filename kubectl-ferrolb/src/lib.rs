//! `kubectl ferrolb`: what ferrolb does for each Service and pool, and why a Service has no IP,
//! read from the API only (no access to nodes or pods' logs needed).
//!
//! ```text
//!  read.rs (I/O: kubeconfig, context, API reads) ─> facts.rs (pure summaries of Leases,
//!       pods, Events) ─> explain.rs / status.rs (pure) ─> render.rs (text, JSON, YAML)
//! ```

pub mod explain;
pub mod facts;
pub mod read;
pub mod render;
pub mod status;
