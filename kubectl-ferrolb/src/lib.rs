//! `kubectl ferrolb`: what ferrolb does for each Service and pool, and why a Service has no IP,
//! read from the API only (no access to nodes or pods' logs needed).
//!
//! ```text
//!  read.rs (I/O: kubeconfig, context, API reads, files, server-side dry runs)
//!    ─> facts.rs (pure summaries of Leases, pods, Events)
//!    ─> explain.rs / status.rs / migrate.rs (pure) ─> render.rs (text, JSON, YAML)
//! ```

pub mod explain;
pub mod facts;
pub mod migrate;
pub mod read;
pub mod render;
pub mod status;
