//! ferrolb speaker: answers ARP (IPv4) and NDP (IPv6) for the LoadBalancer IPs its node owns,
//! elected per address over the live speakers.
//!
//! # Data flow
//! Each name is a module of this crate; [`run`] is the loop that carries every arrow that
//! crosses into or out of [`replan`].
//!
//! ```text
//!  kube API ─watch─> sources ──model::Snapshot───────────────┐
//!                      └──peers (when changed)──> membership │ LiveView
//!  UDP heartbeats <──> membership (packet/, view.rs) ────────┤
//!  announce: interfaces changed ─force─┐                     v
//!  status_writer: a write failed ─force┴─────────────────> replan ─> plan ─> eligibility,
//!                                                            │                election
//!         ┌──desired addresses───────────────────────────────┤
//!         v                                                  ├─wanted (report)─> status_writer
//!  announce: owned table ─> responders (netio sockets, wire) │    ─> Service conditions, Events
//!           gratuitous bursts and refresh (wire)             └─handled addresses, interfaces
//!                                                                 ─> hazard::watch ─> hazard
//! ```
//!
//! # Pure modules (no sockets, no API, no clock reads; unit-tested with synthetic input)
//! - [`model`]: the facts the core decides on (Nodes, pools, advertisements, Services).
//! - [`eligibility`]: which node may announce an address, and where.
//! - [`election`]: rendezvous hashing of addresses over nodes.
//! - [`plan`]: groups, winners and reasons, over a snapshot and the live speakers.
//! - [`planner`]: the plan kept current, touching only what a change can affect.
//! - [`replan`]: when the main loop plans again, and what it then does.
//! - [`report`]: the Service conditions a plan wants this speaker to write.
//! - [`wire`]: the ARP/NDP codec and the kernel filters.
//! - [`hazard`] (`hazard/mod.rs`): whether the node's kernel answers for an address itself.
//! - In [`membership`]: `packet/` (datagram codec, signer and verifier), `view.rs` (liveness
//!   rules, time passed in), `slowness.rs` (local health), `fence.rs` (the answering lease) and
//!   `lifeline/hello.rs`; in [`announce`]: `respond.rs`, `table.rs` and `layout.rs`.
//!
//! # I/O modules
//! - [`run`]: the main loop. [`sources`]: the API watches and their conversion into [`model`].
//! - [`membership`]: the heartbeat and probe task, the lifelines (`lifeline/`). [`announce`]: the responder threads, the interfaces
//!   answered on (`interfaces.rs`) and gratuitous announcements (`gratuitous.rs`).
//! - [`status_writer`]: condition and Event writes. [`hazard`] (`read.rs`, `watch.rs`): reading
//!   the node's addresses and sysctls.
//! - [`netio`]: raw sockets and netlink, the only place with `unsafe`. [`privilege`]: why raw
//!   sockets are refused. [`metrics`]: the Prometheus metrics.

// Pure.
pub mod bfd;
pub mod bgp;
pub mod election;
pub mod eligibility;
pub mod model;
pub mod plan;
pub mod planner;
pub mod replan;
pub mod report;
pub mod wire;

// I/O (or mixed: pure rules in submodules, named above).
pub mod announce;
pub mod hazard;
pub mod membership;
pub mod metrics;
pub mod netio;
pub mod privilege;
pub mod run;
pub mod sources;
pub mod status_writer;
