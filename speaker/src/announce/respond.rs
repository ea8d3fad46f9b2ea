//! What to do with one received frame (pure): reply, ignore, or note a conflict.

use std::net::IpAddr;

use crate::wire::{self, Mac, Solicitation, WireError};

use super::table::{Owned, OwnedIp};

/// The decision for one frame.
#[derive(Debug)]
pub enum Response<'a> {
    /// Send `frame` back out of the interface it came in on.
    Reply {
        /// The owned address asked for.
        ip: IpAddr,
        /// Its entry (for counters).
        owned: &'a OwnedIp,
        /// The complete reply frame.
        frame: Vec<u8>,
    },
    /// A request for an address this node does not announce here.
    NotOwned(&'static str),
    /// Another host announced an address we own (gratuitous ARP from another MAC).
    Conflict {
        /// The address.
        ip: IpAddr,
        /// The other host's MAC.
        from: Mac,
        /// Its entry (for counters).
        owned: &'a OwnedIp,
    },
    /// Our own frame, looped back (should not happen with PACKET_IGNORE_OUTGOING).
    Own,
    /// Not a valid request.
    Invalid(WireError),
}

/// Decides the answer to `frame`, received on interface `link` whose MAC is `our_mac`.
pub fn respond<'a>(frame: &[u8], link: &str, our_mac: Mac, owned: &'a Owned) -> Response<'a> {
    let solicitation = match wire::parse_frame(frame) {
        Ok(s) => s,
        Err(e) => return Response::Invalid(e),
    };
    match solicitation {
        Solicitation::Arp(req) => {
            if req.sender_mac == our_mac {
                return Response::Own;
            }
            let ip = IpAddr::V4(req.target_ip);
            let Some(entry) = owned.on(ip, link) else {
                return Response::NotOwned("arp");
            };
            if req.is_announcement() {
                return Response::Conflict {
                    ip,
                    from: req.sender_mac,
                    owned: entry,
                };
            }
            Response::Reply {
                ip,
                owned: entry,
                frame: wire::arp_reply(our_mac, req.target_ip, &req).to_vec(),
            }
        }
        Solicitation::Neighbor(ns) => {
            if ns.eth_src == our_mac {
                return Response::Own;
            }
            let ip = IpAddr::V6(ns.target);
            match owned.on(ip, link) {
                Some(entry) => Response::Reply {
                    ip,
                    owned: entry,
                    frame: wire::neighbor_advertisement(our_mac, &ns),
                },
                None => Response::NotOwned("ndp"),
            }
        }
    }
}
