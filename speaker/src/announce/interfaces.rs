//! The interfaces answered on: which ones (up, suitable, not excluded; re-read on every netlink
//! event), the responder sockets and threads of each, their kernel filters narrowed to the
//! addresses owned there, and the solicited-node groups of owned IPv6 addresses on them.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{Owned, Shared, responders};
use crate::eligibility::Interfaces;
use crate::netio::link_events::LinkEvents;
use crate::netio::links::{self, Excludes, Link};
use crate::netio::packet_socket::{PacketSocket, Protocol};
use crate::wire;
use crate::wire::filter::{self, Program};

/// One interface being answered on, by responder threads (per protocol, one per fanout member)
/// that stop when this is dropped.
#[derive(Debug)]
pub(super) struct LinkIo {
    pub(super) link: Link,
    /// The ARP group's members; the first sends announcements (ARP and IPv6 alike: a packet
    /// socket sends frames as they are).
    pub(super) arp: Vec<Arc<PacketSocket>>,
    ipv6: Vec<Arc<PacketSocket>>,
    /// The programs attached to every member of `arp` and `ipv6` (`None`: not known to be
    /// the same on every member, so the next refresh attaches again).
    filters: Mutex<[Option<Program>; 2]>,
    stop: Arc<AtomicBool>,
}

impl Drop for LinkIo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Names of the interfaces this node would answer on (up, suitable, not excluded), for
/// messages about them.
pub fn suitable_interfaces(excludes: &Excludes) -> io::Result<Vec<String>> {
    Ok(links::list()?
        .into_iter()
        .filter(|l| l.suitability(excludes).is_ok())
        .map(|l| l.name)
        .collect())
}

/// Re-reads the interfaces on every netlink notification, for as long as the task runs.
pub(super) fn spawn_watcher(shared: Arc<Shared>, events: LinkEvents) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = events.changed().await {
                warn!(error = %e, "netlink notifications failed; re-reading interfaces in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if let Err(e) = shared.rescan() {
                warn!(error = %e, "re-reading interfaces failed");
            }
        }
    })
}

impl Shared {
    /// Solicited-node memberships for an IPv6 `ip` on every link `interfaces` allows.
    pub(super) fn join_groups(&self, ip: IpAddr, interfaces: &Interfaces) {
        let IpAddr::V6(v6) = ip else { return };
        let group = wire::solicited_node_address(v6);
        let mut groups = self.lock_groups();
        for l in self.read_links().values() {
            if interfaces.allows(&l.link.name)
                && let Err(e) = groups.join(l.link.index, group)
            {
                warn!(%ip, interface = %l.link.name, error = %e, "joining the solicited-node group failed");
            }
        }
    }

    pub(super) fn leave_groups(&self, ip: IpAddr, interfaces: &Interfaces) {
        let IpAddr::V6(v6) = ip else { return };
        let group = wire::solicited_node_address(v6);
        let mut groups = self.lock_groups();
        for l in self.read_links().values() {
            if interfaces.allows(&l.link.name) {
                let _ = groups.leave(l.link.index, group);
            }
        }
    }

    /// Re-reads the interfaces and starts or stops answering on them.
    pub(super) fn rescan(self: &Arc<Self>) -> io::Result<()> {
        let all = links::list()?;
        let suitable: HashMap<u32, Link> = all
            .into_iter()
            .filter(|l| match l.suitability(&self.config.excludes) {
                Ok(()) => true,
                Err(why) => {
                    debug!(interface = %l.name, ?why, "not answering on interface");
                    false
                }
            })
            .map(|l| (l.index, l))
            .collect();
        let mut added = Vec::new();
        let mut removed = Vec::new();
        // New sockets start with the targeted filters of what is owned now (taken before the
        // links lock: refresh_filters takes owned, then links). A change meanwhile is caught by
        // the refresh below.
        let mut programs: HashMap<u32, [Program; 2]> = {
            let owned = self.read_owned();
            suitable
                .values()
                .map(|l| (l.index, wanted_filters(&owned, &l.name)))
                .collect()
        };
        {
            let mut current = self.links.write().unwrap_or_else(|e| e.into_inner());
            current.retain(|index, io| {
                let keep = suitable.get(index) == Some(&io.link);
                if !keep {
                    info!(interface = %io.link.name, "stopped answering on interface");
                    removed.push(*index);
                }
                keep
            });
            let mut errors = Vec::new();
            for (index, link) in suitable {
                if current.contains_key(&index) {
                    continue;
                }
                let Some(programs) = programs.remove(&index) else {
                    continue;
                };
                match self.open_link(link.clone(), programs) {
                    Ok(io) => {
                        info!(interface = %link.name, mac = %link.mac, "answering on interface");
                        current.insert(index, Arc::new(io));
                        added.push(index);
                    }
                    Err(e) => errors.push(format!("{}: {e}", link.name)),
                }
            }
            self.metrics.interfaces.set(current.len() as i64);
            if current.is_empty() && !errors.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "cannot open a raw socket on any interface ({}); the speaker needs CAP_NET_RAW",
                        errors.join("; ")
                    ),
                ));
            }
            for e in errors {
                warn!(error = %e, "cannot answer on interface");
            }
        }
        // Groups lock after the links lock is released: join_groups takes them the other way.
        for index in &removed {
            self.lock_groups().forget_interface(*index);
        }
        if !removed.is_empty() || !added.is_empty() {
            self.links_changed.send_modify(|n| *n = n.wrapping_add(1));
        }
        if !added.is_empty() {
            self.refresh_filters();
        }
        // New (or returning) interfaces: join the groups of owned IPv6 addresses there and
        // announce everything owned on them.
        let owned: Vec<(IpAddr, Interfaces, u64)> = self
            .read_owned()
            .by_ip()
            .iter()
            .map(|(ip, e)| (*ip, e.interfaces.clone(), e.generation))
            .collect();
        for index in added {
            let Some(name) = self.read_links().get(&index).map(|l| l.link.name.clone()) else {
                continue;
            };
            for (ip, interfaces, generation) in &owned {
                if !interfaces.allows(&name) {
                    continue;
                }
                if let IpAddr::V6(v6) = ip {
                    let _ = self
                        .lock_groups()
                        .join(index, wire::solicited_node_address(*v6));
                }
                self.clone().spawn_burst(*ip, *generation, Some(index));
            }
        }
        Ok(())
    }

    fn open_link(self: &Arc<Self>, link: Link, programs: [Program; 2]) -> io::Result<LinkIo> {
        let [arp_program, ipv6_program] = programs;
        let (arp, arp_layout) = responders::open_group(
            &link,
            Protocol::Arp,
            arp_program.instructions(),
            &self.layout,
        )?;
        let (ipv6, ipv6_layout) = responders::open_group(
            &link,
            Protocol::Ipv6,
            ipv6_program.instructions(),
            &self.layout,
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        // A failed spawn leaves no LinkIo whose drop would stop the threads already started.
        let started = responders::spawn(self, &link, "arp", &arp, &arp_layout, &stop)
            .and_then(|()| responders::spawn(self, &link, "ndp", &ipv6, &ipv6_layout, &stop));
        if let Err(e) = started {
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
        Ok(LinkIo {
            link,
            arp,
            ipv6,
            filters: Mutex::new([Some(arp_program), Some(ipv6_program)]),
            stop,
        })
    }

    /// Narrows every socket's kernel filter to the addresses owned on its interface. Opened
    /// sockets start with the filters of what was owned when they opened.
    /// A program that cannot be attached leaves the broad one in place: more wake-ups, the same
    /// answers, since the responder checks every target itself.
    pub(super) fn refresh_filters(&self) {
        let _serial = self
            .refreshing_filters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let owned = self.read_owned();
        for l in self.read_links().values() {
            let wanted = wanted_filters(&owned, &l.link.name);
            let mut attached = l.filters.lock().unwrap_or_else(|e| e.into_inner());
            for (i, (group, program)) in [&l.arp, &l.ipv6].into_iter().zip(wanted).enumerate() {
                if attached[i].as_ref() == Some(&program) {
                    continue;
                }
                if let Program::Broad(_) = program {
                    debug!(interface = %l.link.name, "too many addresses for a targeted kernel filter; waking for every request");
                }
                let set = group
                    .iter()
                    .try_for_each(|socket| socket.set_filter(program.instructions()));
                match set {
                    Ok(()) => attached[i] = Some(program),
                    Err(e) => {
                        warn!(interface = %l.link.name, error = %e, "narrowing the kernel filter failed; answering through the broad one");
                        let broad = [filter::ARP_REQUESTS, filter::NEIGHBOR_SOLICITATIONS][i];
                        if group.iter().all(|socket| socket.set_filter(broad).is_ok()) {
                            attached[i] = Some(Program::Broad(broad));
                        } else {
                            // Mixed programs: the next refresh must attach again.
                            attached[i] = None;
                        }
                    }
                }
            }
        }
    }
}

/// The kernel filters for `link`'s ARP and IPv6 sockets: requests for what is owned there.
fn wanted_filters(owned: &Owned, link: &str) -> [Program; 2] {
    let (v4, v6) = owned.targets_on(link);
    [
        filter::arp_requests_for(v4),
        filter::neighbor_solicitations_for(v6),
    ]
}
