//! ferrolb's testbed: a real control plane built from Go modules and a lab of network namespaces.
//!
//! ```text
//!  tests/k8s (Go) ──bins::build_if_missing──> target/k8s/<versions>/bin/{etcd,kube-apiserver,...}
//!  control_plane::ControlPlane ── etcd (loopback) + kube-apiserver (lab0 address) [+ kcm]
//!  lab::Lab ── lab0 bridge, node1..N + client namespaces, Node objects
//!     backend::Backends ── ferrolb-lab-backend + VIP DNAT rules per node (kube-proxy's part)
//!  daemon::Daemon ── a ferrolb binary with /healthz, /readyz, /metrics (read with http_client):
//!     controller::Controller (loopback)   speaker::Speaker (one per node namespace)
//!  image ── target/images/{ferrolb,echo,pause}.tar: OCI archives of the release binaries
//! ```
//!
//! Used by the integration tests in `tests/tests/` and by `cargo xtask cluster`.

pub mod backend;
pub mod bgplab;
pub mod bins;
pub mod bulk_apiserver;
pub mod capture;
pub mod cluster;
pub mod control_plane;
pub mod controller;
pub mod daemon;
pub mod demo;
pub mod e2e;
pub mod go_tool;
pub mod http_client;
pub mod image;
pub mod l2lab;
pub mod lab;
pub mod metallb;
pub mod node;
pub mod pki;
pub mod process;
pub mod prometheus;
pub mod rbac;
pub mod router;
pub mod scenario;
pub mod services;
pub mod speaker;

pub use control_plane::{ControlPlane, shared, unique_name};
pub use lab::{Host, Lab};
