//! The announcer: answers requests for owned addresses on every suitable interface, sends
//! gratuitous announcements on takeover and periodically, and follows interface changes.
//!
//! ```text
//!   apply(desired) ──> Owned table (table.rs, RwLock) <── responder threads per interface and
//!        │              protocol (responders.rs: one per CPU, fanout; recv -> respond() -> send)
//!        ├─> kernel filter per socket: only requests for the addresses owned there wake it
//!        └─> gratuitous.rs: burst per takeover (0, 250 ms, 1 s, 2 s), refresh (every 20 s)
//!   netlink event ──> interfaces.rs: rescan, start/stop responders, join groups, burst
//! ```
//! The VIP is never added to an interface: answering in userspace avoids duplicate address
//! detection fights and leaves nothing behind after a crash.

mod gratuitous;
mod interfaces;
mod layout;
mod respond;
mod responders;
mod table;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::eligibility::Interfaces;
use crate::metrics::Metrics;
use crate::netio::cpus;
use crate::netio::link_events::LinkEvents;
use crate::netio::links::Excludes;
use crate::netio::multicast::Groups;

use interfaces::LinkIo;
pub use interfaces::suitable_interfaces;
use layout::Layout;
pub use respond::{Response, respond};
pub use table::{Owned, OwnedIp};

/// Announcer settings.
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
    /// Nothing is sent while it is closed (see `membership/fence.rs`).
    pub fence: crate::membership::Fence,
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
            fence: crate::membership::Fence::open(),
        }
    }
}

/// How long a responder thread blocks before it checks whether it should stop.
const RESPONDER_POLL: Duration = Duration::from_millis(200);

/// What the announcer's tasks and responder threads share.
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
        let watcher = interfaces::spawn_watcher(shared.clone(), events);
        let refresher = gratuitous::spawn_refresher(shared.clone());
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
            let current: Vec<IpAddr> = owned.by_ip().keys().copied().collect();
            for ip in current {
                if !desired.contains_key(&ip) {
                    let old = owned.by_ip_mut().remove(&ip);
                    self.shared.metrics.ownership_changes.inc();
                    changes.removed.insert(ip);
                    if let Some(old) = old {
                        self.shared.leave_groups(ip, &old.interfaces);
                    }
                }
            }
            for (ip, interfaces) in desired {
                let generation = self.shared.generation.fetch_add(1, Ordering::Relaxed);
                match owned.by_ip_mut().get_mut(ip) {
                    Some(entry) if entry.interfaces == *interfaces => continue,
                    Some(entry) => {
                        let old = std::mem::replace(&mut entry.interfaces, interfaces.clone());
                        entry.generation = generation;
                        self.shared.leave_groups(*ip, &old);
                    }
                    None => {
                        owned.by_ip_mut().insert(
                            *ip,
                            OwnedIp {
                                interfaces: interfaces.clone(),
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
            self.shared
                .metrics
                .owned_ips
                .set(owned.by_ip().len() as i64);
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

    /// Changes whenever the interfaces answered on change (their names appear in conditions).
    pub fn links_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.links_changed.subscribe()
    }

    /// Names of the interfaces answered on right now, in interface index order.
    pub fn interface_names(&self) -> Vec<String> {
        self.shared
            .read_links()
            .values()
            .map(|l| l.link.name.clone())
            .collect()
    }
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
}
