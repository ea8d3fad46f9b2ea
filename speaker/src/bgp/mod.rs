//! BGP mode: every eligible node announces each Service IP to its routers, with itself as next
//! hop, so the routers spread flows across the nodes (ECMP) and withdraw a node's routes when it
//! fails.
//!
//! # Pure
//! - `config.rs`: a `BGPPeer` read into a [`config::PeerConfig`].
//! - `open.rs`: the OPEN sent and the negotiation with the router's.
//! - `framing.rs`: bytes from the router split into messages.
//! - `fsm.rs`: one session's state machine (RFC 4271), time passed in.
//! - `routes.rs`: the route decision: which prefixes to which peer, with which attributes.
//! - `route_table.rs`: that decision kept up to date Service by Service.
//! - `status.rs`: this node's entry in `BGPPeer.status.sessions`.
//! - `updates.rs`: the Adj-RIB-Out of a session and the UPDATEs that bring it up to date.
//!
//! # I/O
//! - `session.rs`: one session's task (TCP via [`crate::netio::tcp`], timers, the FSM).
//! - `secrets.rs`: TCP MD5 keys read from Secrets off the main loop.
//! - `speaker.rs`: this node's sessions, started and stopped as `BGPPeer`s change, fed routes.
//! - `status_writer.rs`: writes this node's `BGPPeer.status.sessions` entries.
//!
//! Messages are encoded and decoded by `rustbgpd-wire`, a codec crate with no I/O, no `unsafe`
//! and no panics on malformed input, covering every message and attribute used here (4-octet
//! ASNs, MP-BGP, communities, large communities, graceful restart, route refresh).

pub mod config;
pub mod framing;
pub mod fsm;
pub mod metrics;
pub mod open;
pub mod route_table;
pub mod routes;
pub mod secrets;
pub mod session;
pub mod speaker;
pub mod status;
pub mod status_writer;
pub mod updates;
