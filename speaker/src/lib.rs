//! ferrolb speaker: answers ARP (IPv4) and NDP (IPv6) for the LoadBalancer IPs its node owns,
//! elected per address over the live speakers. See `DESIGN.md`.
//!
//! ```text
//!  Services, pools, L2Advertisements, Nodes, EndpointSlices (watch)
//!     -> eligibility (pure) -> election (pure, rendezvous over membership's live set)
//!     -> announcer: owned IPs per interface -> netio responders (raw sockets)
//!  wire: pure ARP/NDP codec; netio: the only place with `unsafe`
//! ```

pub mod announce;
pub mod election;
pub mod eligibility;
pub mod hazard;
pub mod membership;
pub mod metrics;
pub mod model;
pub mod netio;
pub mod plan;
pub mod privilege;
pub mod replan;
pub mod report;
pub mod run;
pub mod sources;
pub mod status_writer;
pub mod wire;
