//! The announcer: answers requests for owned addresses on every suitable interface, sends
//! gratuitous announcements on takeover and periodically, and follows interface changes.
//!
//! ```text
//!   apply(desired) ──> Owned table (RwLock) <── responder threads per interface and protocol
//!        │                                        (one per CPU, fanout; recv -> respond() -> send)
//!        ├─> kernel filter per socket: only requests for the addresses owned there wake it
//!        └─> burst task per takeover (0, 250 ms, 1 s, 2 s), refresh task (every 20 s)
//!   netlink event ──> rescan interfaces ──> start/stop responders, join groups, burst
//! ```
//! The VIP is never added to an interface: answering in userspace avoids duplicate address
//! detection fights and leaves nothing behind after a crash.

mod layout;
mod respond;
mod responders;
mod table;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::eligibility::Interfaces;
use crate::metrics::Metrics;
use crate::netio::cpus;
use crate::netio::link_events::LinkEvents;
use crate::netio::links::{self, Excludes, Link};
use crate::netio::multicast::Groups;
use crate::netio::packet_socket::{PacketSocket, Protocol};
use crate::wire::filter::{self, Program};
use crate::wire::{self, GratuitousKind};

use layout::Layout;
pub use respond::{Response, respond};
pub use table::{Owned, OwnedIp};

/// Announcer settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Interface name patterns never answered on.
    pub excludes: Excludes,
    /// Offsets after a takeover at which gratuitous packets go out.
    pub burst: Vec<Duration>,
    /// Interval of the periodic re-announcement (keeps switch MAC tables and caches fresh).
    pub refresh: Duration,
    /// Most responder threads per interface and protocol (one per CPU up to this).
    pub responder_threads: usize,
}

impl Config {
    /// Defaults: announce at once, then at 250 ms, 1 s and 2 s; refresh every 20 s, well inside
    /// the 60 s after which many switches age out MAC entries.
    pub fn new(excludes: Excludes) -> Config {
        Config {
            excludes,
            burst: [0, 250, 1000, 2000]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            refresh: Duration::from_secs(20),
            responder_threads: 16,
        }
    }
}

/// How long a responder thread blocks before it checks whether it should stop.
const RESPONDER_POLL: Duration = Duration::from_millis(200);

/// One interface being answered on, by responder threads (per protocol, one per fanout member)
/// that stop when this is dropped.
#[derive(Debug)]
struct LinkIo {
    link: Link,
    /// The ARP group's members; the first sends announcements (ARP and IPv6 alike: a packet
    /// socket sends frames as they are).
    arp: Vec<Arc<PacketSocket>>,
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

#[derive(Debug)]
struct Shared {
    owned: RwLock<Owned>,
    links: RwLock<BTreeMap<u32, Arc<LinkIo>>>,
    groups: Mutex<Groups>,
    metrics: Metrics,
    config: Config,
    generation: std::sync::atomic::AtomicU64,
    /// Bumped whenever the set of interfaces answered on changes.
    links_changed: tokio::sync::watch::Sender<u64>,
    /// Held while kernel filters are computed and attached, so a later state never loses to an
    /// earlier one.
    refreshing_filters: Mutex<()>,
    /// Responder threads per interface and protocol, and their CPUs.
    layout: Layout,
}

/// A change of ownership [`Announcer::apply`] made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Addresses taken over (or whose interfaces changed).
    pub added: BTreeSet<IpAddr>,
    /// Addresses given up.
    pub removed: BTreeSet<IpAddr>,
}

/// Handle to the running announcer; dropping it stops every task.
#[derive(Debug)]
pub struct Announcer {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Announcer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.shared
            .links
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Announcer {
    /// Opens the interfaces and starts answering (for nothing until [`Announcer::apply`]).
    /// Fails when no raw socket can be opened (the speaker needs CAP_NET_RAW): with
    /// [`io::ErrorKind::PermissionDenied`] when that is why, also while no interface is there.
    pub async fn start(config: Config, metrics: Metrics) -> io::Result<Announcer> {
        crate::netio::packet_socket::probe()?;
        let events = LinkEvents::open()?;
        let layout = match cpus::allowed() {
            Ok(allowed) => Layout::new(&allowed, config.responder_threads),
            Err(e) => {
                warn!(error = %e, "cannot read the CPU affinity; one responder thread per interface and protocol");
                Layout::single()
            }
        };
        debug!(members = layout.members(), cpus = ?layout.cpus, "responder threads per interface and protocol");
        let shared = Arc::new(Shared {
            owned: RwLock::new(Owned::default()),
            links: RwLock::new(BTreeMap::new()),
            groups: Mutex::new(Groups::new()?),
            metrics,
            config,
            generation: Default::default(),
            links_changed: tokio::sync::watch::channel(0).0,
            refreshing_filters: Mutex::new(()),
            layout,
        });
        shared.rescan()?;
        let watcher = {
            let shared = shared.clone();
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
        };
        let refresher = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let period = shared.config.refresh;
                let mut tick = tokio::time::interval_at(Instant::now() + period, period);
                loop {
                    tick.tick().await;
                    let ips: Vec<IpAddr> = shared.read_owned().iter().map(|(ip, _)| *ip).collect();
                    for ip in ips {
                        shared.announce(ip, None);
                    }
                }
            })
        };
        Ok(Announcer {
            shared,
            tasks: vec![watcher, refresher],
        })
    }

    /// Makes `desired` the set of announced addresses: new ones are answered at once and
    /// announced with a burst; dropped ones are no longer answered from this call on.
    pub fn apply(&self, desired: &BTreeMap<IpAddr, Interfaces>) -> Changes {
        let mut changes = Changes::default();
        let mut bursts = Vec::new();
        {
            let mut owned = self.shared.write_owned();
            let current: Vec<IpAddr> = owned.iter().map(|(ip, _)| *ip).collect();
            for ip in current {
                if !desired.contains_key(&ip) {
                    let old = owned.remove(ip);
                    self.shared.metrics.ownership_changes.inc();
                    changes.removed.insert(ip);
                    if let Some(old) = old {
                        self.shared.leave_groups(ip, &old.interfaces);
                    }
                }
            }
            for (ip, interfaces) in desired {
                let generation = self.shared.generation.fetch_add(1, Ordering::Relaxed);
                match owned.get_mut(*ip) {
                    Some(entry) if entry.interfaces == *interfaces => continue,
                    Some(entry) => {
                        let old = std::mem::replace(&mut entry.interfaces, interfaces.clone());
                        entry.generation = generation;
                        self.shared.leave_groups(*ip, &old);
                    }
                    None => {
                        owned.insert(
                            *ip,
                            OwnedIp {
                                interfaces: interfaces.clone(),
                                since: SystemTime::now(),
                                generation,
                                counters: self.shared.metrics.for_ip(*ip),
                            },
                        );
                        self.shared.metrics.ownership_changes.inc();
                    }
                }
                self.shared.join_groups(*ip, interfaces);
                changes.added.insert(*ip);
                bursts.push((*ip, generation));
            }
            self.shared.metrics.owned_ips.set(owned.len() as i64);
        }
        if !changes.added.is_empty() || !changes.removed.is_empty() {
            self.shared.refresh_filters();
        }
        for ip in &changes.removed {
            let labels = crate::metrics::IpLabels { ip: ip.to_string() };
            for family in [
                &self.shared.metrics.requests,
                &self.shared.metrics.replies,
                &self.shared.metrics.gratuitous,
                &self.shared.metrics.conflicts,
            ] {
                family.remove(&labels);
            }
        }
        for (ip, generation) in bursts {
            self.shared.clone().spawn_burst(ip, generation, None);
        }
        changes
    }

    /// Announces every owned address again (a burst), e.g. after peers came back: a node that
    /// was cut off may have been replaced meanwhile, and clients still point at the stand-in.
    pub fn reannounce_all(&self) {
        let owned: Vec<(IpAddr, u64)> = self
            .shared
            .read_owned()
            .iter()
            .map(|(ip, e)| (*ip, e.generation))
            .collect();
        for (ip, generation) in owned {
            self.shared.clone().spawn_burst(ip, generation, None);
        }
    }

    /// Changes whenever the interfaces answered on change (their names appear in conditions).
    pub fn links_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.links_changed.subscribe()
    }

    /// Names of the interfaces `interfaces` resolves to on this node right now.
    pub fn interface_names(&self, interfaces: &Interfaces) -> Vec<String> {
        self.shared
            .read_links()
            .values()
            .filter(|l| interfaces.allows(&l.link.name))
            .map(|l| l.link.name.clone())
            .collect()
    }

    /// When this node took `ip` over, if it announces it.
    pub fn since(&self, ip: IpAddr) -> Option<SystemTime> {
        self.shared.read_owned().get(ip).map(|e| e.since)
    }

    /// Number of interfaces answered on.
    pub fn interface_count(&self) -> usize {
        self.shared.read_links().len()
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

impl Shared {
    fn read_owned(&self) -> std::sync::RwLockReadGuard<'_, Owned> {
        self.owned.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_owned(&self) -> std::sync::RwLockWriteGuard<'_, Owned> {
        self.owned.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read_links(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, Arc<LinkIo>>> {
        self.links.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_groups(&self) -> std::sync::MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Solicited-node memberships for an IPv6 `ip` on every link `interfaces` allows.
    fn join_groups(&self, ip: IpAddr, interfaces: &Interfaces) {
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

    fn leave_groups(&self, ip: IpAddr, interfaces: &Interfaces) {
        let IpAddr::V6(v6) = ip else { return };
        let group = wire::solicited_node_address(v6);
        let mut groups = self.lock_groups();
        for l in self.read_links().values() {
            if interfaces.allows(&l.link.name) {
                let _ = groups.leave(l.link.index, group);
            }
        }
    }

    /// Gratuitous announcements of `ip` at the configured burst offsets, as long as this
    /// takeover (`generation`) stands. `only_link` limits them to one interface.
    fn spawn_burst(self: Arc<Self>, ip: IpAddr, generation: u64, only_link: Option<u32>) {
        tokio::spawn(async move {
            let start = Instant::now();
            for offset in self.config.burst.clone() {
                tokio::time::sleep_until(start + offset).await;
                let current = self.read_owned().get(ip).map(|e| e.generation);
                if current != Some(generation) {
                    return;
                }
                self.announce(ip, only_link);
            }
        });
    }

    /// Sends one round of gratuitous packets for `ip` on its interfaces (or only `only_link`).
    fn announce(&self, ip: IpAddr, only_link: Option<u32>) {
        let Some((interfaces, counters)) = self
            .read_owned()
            .get(ip)
            .map(|e| (e.interfaces.clone(), e.counters.clone()))
        else {
            return;
        };
        let links: Vec<Arc<LinkIo>> = self
            .read_links()
            .values()
            .filter(|l| interfaces.allows(&l.link.name))
            .filter(|l| only_link.is_none_or(|i| i == l.link.index))
            .cloned()
            .collect();
        for l in links {
            let frames: Vec<Vec<u8>> = match ip {
                IpAddr::V4(v4) => vec![
                    wire::gratuitous_arp(l.link.mac, v4, GratuitousKind::Request).to_vec(),
                    wire::gratuitous_arp(l.link.mac, v4, GratuitousKind::Reply).to_vec(),
                ],
                IpAddr::V6(v6) => vec![wire::unsolicited_advertisement(l.link.mac, v6)],
            };
            for frame in frames {
                match l.arp[0].send(&frame) {
                    Ok(()) => {
                        counters.gratuitous.inc();
                    }
                    Err(e) => {
                        self.metrics.send_errors.inc();
                        debug!(%ip, interface = %l.link.name, error = %e, "sending an announcement failed");
                    }
                };
            }
        }
    }

    /// Re-reads the interfaces and starts or stops answering on them.
    fn rescan(self: &Arc<Self>) -> io::Result<()> {
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
    fn refresh_filters(&self) {
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
