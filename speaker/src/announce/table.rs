//! The addresses this node announces, and where: shared by the responders (read on every
//! request) and the announcer (written on ownership changes).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use crate::eligibility::Interfaces;
use crate::metrics::IpCounters;

/// One owned address.
#[derive(Clone, Debug)]
pub struct OwnedIp {
    /// Interfaces it may be announced on.
    pub interfaces: Interfaces,
    /// When this node took it over.
    pub since: SystemTime,
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

    /// The entry for `ip`.
    pub fn get(&self, ip: IpAddr) -> Option<&OwnedIp> {
        self.by_ip.get(&ip)
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

    /// Every owned address.
    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &OwnedIp)> {
        self.by_ip.iter()
    }

    /// Number of owned addresses.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// Whether nothing is owned.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    pub(super) fn insert(&mut self, ip: IpAddr, entry: OwnedIp) -> Option<OwnedIp> {
        self.by_ip.insert(ip, entry)
    }

    pub(super) fn remove(&mut self, ip: IpAddr) -> Option<OwnedIp> {
        self.by_ip.remove(&ip)
    }

    pub(super) fn get_mut(&mut self, ip: IpAddr) -> Option<&mut OwnedIp> {
        self.by_ip.get_mut(&ip)
    }
}
