//! BFD (RFC 5880, single hop RFC 5881) beside BGP sessions: detects a dead path in under a
//! second, both ways.
//!
//! # Pure
//! - `packet.rs`: control packets.
//! - `session.rs`: one session's state machine, time passed in.
//!
//! # I/O
//! - `task.rs`: the UDP sockets (port 3784, TTL 255 both ways) and one task running every
//!   session of the node.

pub mod packet;
pub mod session;
pub mod task;
