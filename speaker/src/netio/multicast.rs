//! Solicited-node multicast memberships for owned IPv6 addresses.
//!
//! Joining through an ordinary UDP socket (`IPV6_ADD_MEMBERSHIP`) makes the kernel program the
//! interface's multicast MAC filter, so neighbour solicitations for the VIP reach our packet
//! socket on real NICs, and send MLD reports, so MLD-snooping switches forward them to us.
//! Several addresses can share one group (same low 24 bits): memberships are reference counted.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};

/// Group memberships per interface, reference counted.
#[derive(Debug)]
pub struct Groups {
    socket: UdpSocket,
    joined: HashMap<(u32, Ipv6Addr), usize>,
}

impl Groups {
    /// A socket to hold the memberships (bound to an ephemeral port, never read).
    pub fn new() -> io::Result<Self> {
        let socket = UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))?;
        Ok(Groups {
            socket,
            joined: HashMap::new(),
        })
    }

    /// Joins `group` on `ifindex` unless already joined there.
    pub fn join(&mut self, ifindex: u32, group: Ipv6Addr) -> io::Result<()> {
        if let Some(count) = self.joined.get_mut(&(ifindex, group)) {
            *count += 1;
            return Ok(());
        }
        self.socket.join_multicast_v6(&group, ifindex)?;
        self.joined.insert((ifindex, group), 1);
        Ok(())
    }

    /// Drops one reference; leaves the group with the last one.
    pub fn leave(&mut self, ifindex: u32, group: Ipv6Addr) -> io::Result<()> {
        let Some(count) = self.joined.get_mut(&(ifindex, group)) else {
            return Ok(());
        };
        *count -= 1;
        if *count == 0 {
            self.joined.remove(&(ifindex, group));
            self.socket.leave_multicast_v6(&group, ifindex)?;
        }
        Ok(())
    }

    /// Forgets every membership on `ifindex` (the interface went away with them).
    pub fn forget_interface(&mut self, ifindex: u32) {
        self.joined.retain(|(i, _), _| *i != ifindex);
    }
}
