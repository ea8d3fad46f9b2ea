//! The addresses this node announces, and where: shared by the responders (read on every
//! request) and the announcer (written on ownership changes).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::eligibility::Interfaces;
use crate::metrics::IpCounters;

/// One owned address.
#[derive(Clone, Debug)]
pub struct OwnedIp {
    /// Interfaces it may be announced on.
    pub interfaces: Interfaces,
    /// Bumped on every takeover, so a stale announcement burst stops.
    pub generation: u64,
    /// Its counters.
    pub counters: IpCounters,
}

/// Owned addresses by IP.
#[derive(Debug, Default)]
pub struct Owned {
    by_ip: HashMap<IpAddr, OwnedIp>,
}

impl Owned {
    /// The entry for `ip` if it is announced on interface `link`.
    pub fn on(&self, ip: IpAddr, link: &str) -> Option<&OwnedIp> {
        self.by_ip.get(&ip).filter(|e| e.interfaces.allows(link))
    }

    /// The owned addresses announced on interface `link`, by family: what its kernel filters
    /// let through.
    pub fn targets_on(&self, link: &str) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (ip, entry) in &self.by_ip {
            if !entry.interfaces.allows(link) {
                continue;
            }
            match ip {
                IpAddr::V4(a) => v4.push(*a),
                IpAddr::V6(a) => v6.push(*a),
            }
        }
        (v4, v6)
    }

    /// Every owned address, by IP.
    pub fn by_ip(&self) -> &HashMap<IpAddr, OwnedIp> {
        &self.by_ip
    }

    /// The owned addresses, for the announcer to change.
    pub(super) fn by_ip_mut(&mut self) -> &mut HashMap<IpAddr, OwnedIp> {
        &mut self.by_ip
    }
}
