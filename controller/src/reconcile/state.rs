//! The controller's state machine (pure): watch events in, writes and Events out.
//!
//! It keeps a compact view of every Service (its request and what its status shows, never the
//! whole object), the pools, the namespaces' labels and the allocator, and decides which objects
//! must be written. Nothing is written for a converged object, and at most one write per object
//! is in flight; its result comes back through [`State::write_done`].
//!
//! Order on start ([`State::start`]): pools first, then every Service whose status already holds
//! addresses reclaims them (oldest first), then waiting Services are served (oldest first). So a
//! restart never hands an address held by one Service to another.
//!
//! A failed write is tried again after a backoff ([`retry`]); the caller sleeps until
//! [`State::next_retry`] and calls [`State::retry_due`].

mod actions;
mod names;
mod pool_writes;
pub mod retry;
mod table;
mod uid;
mod writes;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

use ferrolb_crds::IPAddressPool;
use ferrolb_crds::contract::reason;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;

pub use self::actions::{Action, ServiceEvent, Tally};
use self::names::Names;
use self::pool_writes::PoolWrites;
use self::retry::Retries;
use self::table::Table;
use self::uid::Uid;
use self::writes::{Write, Writes};
use super::desired::{
    ServiceState, field_manager, pool_patch, pool_shows, pool_status, service_patch,
};
use super::observed::{Observed, ShownCondition};
use crate::ipam::error::comma_separated;
use crate::ipam::{
    AllocationError, Allocator, Handling, PoolConfig, Request, ServiceKey, pool_class, read_service,
};

/// What the state keeps of one Service.
#[derive(Debug)]
struct Tracked {
    uid: Uid,
    created: i64,
    handling: Handling,
    observed: Observed,
    /// The last allocation failure (cleared on success); an Event is sent once per message.
    /// Boxed: most Services have none, and the map holds one entry per Service.
    failure: Option<Box<AllocationError>>,
    write: Write,
    /// Status writes that failed in a row (0 after a success): the next retry's backoff.
    write_failures: u32,
}

/// The controller's state.
#[derive(Debug)]
pub struct State {
    lb_class: Option<String>,
    /// Field manager of this controller's writes (one per class).
    manager: String,
    alloc: Allocator,
    services: Table<Tracked>,
    /// The pool names Services ask for, one copy each.
    pool_names: Names,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    pools: BTreeMap<String, IPAddressPool>,
    /// Services without addresses that may get some later, oldest first.
    waiting: BTreeSet<(i64, ServiceKey)>,
    /// Pools whose status may need a write, and those being written.
    pool_writes: PoolWrites,
    /// Failed Service writes to try again.
    retries: Retries,
    /// Service writes waiting to be handed out.
    writes: Writes,
    started: bool,
    actions: Vec<Action>,
    tally: Tally,
}

impl State {
    /// An empty state for Services of `lb_class` (`None`: Services without a class).
    pub fn new(lb_class: Option<String>) -> State {
        let manager = field_manager(lb_class.as_deref());
        State {
            manager,
            lb_class,
            alloc: Allocator::new(),
            services: Table::default(),
            pool_names: Names::default(),
            namespaces: HashMap::new(),
            pools: BTreeMap::new(),
            waiting: BTreeSet::new(),
            pool_writes: PoolWrites::default(),
            retries: Retries::default(),
            writes: Writes::default(),
            started: false,
            actions: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// The field manager this controller writes with.
    pub fn field_manager(&self) -> &str {
        &self.manager
    }

    /// Whether [`State::start`] ran.
    pub fn started(&self) -> bool {
        self.started
    }

    /// The allocator, for inspection.
    pub fn allocator(&self) -> &Allocator {
        &self.alloc
    }

    /// Services waiting for addresses.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Takes the actions decided so far, with the next Service writes (their bodies built at
    /// `now`, see `state/writes.rs`).
    pub fn take_actions(&mut self, now: Timestamp) -> Vec<Action> {
        self.hand_out_writes(now);
        std::mem::take(&mut self.actions)
    }

    /// Gives back the capacity a burst grew the write queue to, and forgets pool names no
    /// Service asks for any more.
    pub fn shrink_queues(&mut self) {
        self.writes.shrink();
        self.pool_names.forget_unused();
    }

    /// Takes the allocation tally since the last call.
    pub fn take_tally(&mut self) -> Tally {
        std::mem::take(&mut self.tally)
    }

    /// All caches are filled: reclaim held addresses, then serve the rest, oldest first.
    pub fn start(&mut self, now: Timestamp) {
        self.started = true;
        self.alloc.set_pools(self.pool_configs());
        let mut order: Vec<(bool, i64, ServiceKey)> = self
            .services
            .iter()
            .map(|(k, t)| (t.observed.ips.is_empty(), t.created, k.clone()))
            .collect();
        order.sort();
        for (_, _, key) in order {
            self.reconcile(&key, now);
        }
        self.pool_writes.mark_all(self.pools.keys());
    }

    /// A Service was added or changed.
    pub fn service_applied(&mut self, svc: &Service, now: Timestamp) {
        let key = ServiceKey::of(svc);
        let mut handling = read_service(svc, self.lb_class.as_deref());
        if let Handling::Handled(Ok(req)) = &mut handling
            && let Some(pool) = &mut req.pool
        {
            *pool = self.pool_names.share(pool);
        }
        let observed = Observed::of(svc, &self.manager);
        let uid = Uid::new(svc.metadata.uid.as_deref().unwrap_or_default());
        let created = svc
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second());
        if let Some(t) = self.services.get_mut(&key).filter(|t| t.uid == uid) {
            // Events older than one already seen (our own write's result) are stale.
            if let (Some(old), Some(new)) = (t.observed.resource_version, observed.resource_version)
                && new < old
            {
                return;
            }
            let changed = t.handling != handling;
            t.handling = handling;
            t.observed = observed;
            if self.started {
                if changed {
                    self.reconcile(&key, now);
                } else {
                    self.converge(&key);
                }
            }
            return;
        }
        if self.services.contains_key(&key) {
            // Re-created under the same name: the old one is gone.
            self.service_deleted(&key, now);
        }
        self.services.insert(
            key.clone(),
            Tracked {
                uid,
                created,
                handling,
                observed,
                failure: None,
                write: Write::Idle,
                write_failures: 0,
            },
        );
        if self.started {
            self.reconcile(&key, now);
        }
    }

    /// A Service was deleted.
    pub fn service_deleted(&mut self, key: &ServiceKey, now: Timestamp) {
        if let Some(t) = self.services.remove(key) {
            self.waiting.remove(&(t.created, key.clone()));
        }
        let sharing_key = self.alloc.sharing_key(key);
        let freed = self.alloc.release(key);
        if self.started && (!freed.is_empty() || sharing_key.is_some()) {
            self.serve_waiting(&freed, sharing_key.as_deref(), now);
        }
    }

    /// A complete list of Services arrived: every Service not in it is gone.
    pub fn retain_services(&mut self, keep: &HashSet<ServiceKey>, now: Timestamp) {
        let mut gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        gone.sort();
        for key in gone {
            self.service_deleted(&key, now);
        }
    }

    /// A complete list of pools arrived: every pool not in it is gone.
    pub fn retain_pools(&mut self, keep: &HashSet<String>, now: Timestamp) {
        let gone: Vec<String> = self
            .pools
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for name in gone {
            self.pool_deleted(&name, now);
        }
    }

    /// A pool was added or changed. Pools annotated with another controller's class
    /// (`ferrolb.io/load-balancer-class`) are not this controller's: they count as absent; pools
    /// without it belong to the controller of classless Services. So controllers of different
    /// classes never hand out one pool's addresses twice or fight over its status. A malformed
    /// class is nobody's to allocate from; the classless controller reports it on the pool.
    pub fn pool_applied(&mut self, pool: IPAddressPool, now: Timestamp) {
        let name = pool.metadata.name.clone().unwrap_or_default();
        let ours = match pool_class(&pool) {
            Ok(class) => class == self.lb_class.as_deref(),
            Err(_) => self.lb_class.is_none(),
        };
        if !ours {
            self.pool_deleted(&name, now);
            return;
        }
        let spec_changed = self
            .pools
            .get(&name)
            .is_none_or(|old| old.spec != pool.spec || old.metadata.uid != pool.metadata.uid);
        self.pools.insert(name.clone(), pool);
        if self.started {
            if spec_changed {
                self.pools_changed(now);
            } else {
                self.pool_writes.mark(&name);
            }
        }
    }

    /// A pool was deleted.
    pub fn pool_deleted(&mut self, name: &str, now: Timestamp) {
        if self.pools.remove(name).is_some() && self.started {
            self.pools_changed(now);
        }
    }

    /// A namespace was added or its labels changed.
    pub fn namespace_applied(
        &mut self,
        name: &str,
        labels: BTreeMap<String, String>,
        now: Timestamp,
    ) {
        let old = self.namespaces.insert(name.to_string(), labels.clone());
        if !self.started || old.as_ref() == Some(&labels) {
            return;
        }
        let mut keys: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| k.namespace == name)
            .cloned()
            .collect();
        keys.sort();
        for key in keys {
            self.reconcile(&key, now);
        }
    }

    /// A complete list of namespaces arrived: forget the others.
    pub fn retain_namespaces(&mut self, keep: &HashSet<String>) {
        self.namespaces.retain(|name, _| keep.contains(name));
    }

    /// A namespace was deleted (its Services' deletions arrive on their own).
    pub fn namespace_deleted(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// The write for `key` finished at `clock`. `written` is the object the apiserver returned;
    /// `None`: the write failed and is tried again after a backoff.
    pub fn write_done(
        &mut self,
        key: &ServiceKey,
        written: Option<&Service>,
        now: Timestamp,
        clock: Instant,
    ) {
        self.writes.finished();
        let Some(t) = self.services.get_mut(key) else {
            return; // Deleted meanwhile: nothing to write, nothing to remember.
        };
        t.write = Write::Idle;
        match written {
            Some(svc) => {
                t.write_failures = 0;
                self.service_applied(svc, now);
            }
            None => {
                t.write_failures = t.write_failures.saturating_add(1);
                self.retries.failed(key, t.write_failures, clock);
            }
        }
    }

    /// When the next failed write is due to be tried again ([`State::retry_due`]).
    pub fn next_retry(&self) -> Option<Instant> {
        self.retries.next()
    }

    /// Tries again the failed writes due at `clock`. Returns how many were due.
    pub fn retry_due(&mut self, clock: Instant) -> usize {
        let due = self.retries.take_due(clock);
        if self.started {
            for key in &due {
                self.converge(key);
            }
        }
        due.len()
    }

    /// The pool write for `name` finished.
    pub fn pool_write_done(&mut self, name: &str, written: Option<IPAddressPool>, ok: bool) {
        self.pool_writes.finished(name, ok);
        if let Some(pool) = written {
            self.pools.insert(name.to_string(), pool);
        }
    }

    /// Status writes for pools whose counts or conditions changed (called on a timer, so a
    /// burst of allocations costs one pool write per tick, not one per Service). While Service
    /// writes wait, pools get one write at a time ([`PoolWrites::due`]).
    pub fn flush_pools(&mut self, now: Timestamp) {
        if !self.started {
            return;
        }
        let services_wait = self.writes.waiting();
        let mut due = self.pool_writes.due(services_wait).into_iter();
        while let Some(name) = due.next() {
            if self.pool_writes.full(services_wait) {
                self.pool_writes.put_back(std::iter::once(name).chain(due));
                break;
            }
            let Some(pool) = self.pools.get(&name) else {
                continue;
            };
            let desired = pool_status(pool, &self.alloc, now);
            if pool_shows(pool, &desired) {
                continue;
            }
            self.actions.push(Action::ApplyPool {
                name: name.clone(),
                body: pool_patch(pool, desired).to_string(),
            });
            self.pool_writes.started(name);
        }
    }

    fn pool_configs(&self) -> Vec<PoolConfig> {
        self.pools.values().map(PoolConfig::from_object).collect()
    }

    fn pools_changed(&mut self, now: Timestamp) {
        let affected = self.alloc.set_pools(self.pool_configs());
        for key in affected {
            self.reconcile(&key, now);
        }
        let waiting: Vec<ServiceKey> = self.waiting.iter().map(|(_, k)| k.clone()).collect();
        for key in waiting {
            self.reconcile(&key, now);
        }
        self.pool_writes.mark_all(self.pools.keys());
    }

    fn mark_pools_of(&mut self, ips: &[IpAddr]) {
        for ip in ips {
            if let Some(p) = self.alloc.pool_of(*ip) {
                self.pool_writes.mark(p);
            }
        }
    }

    /// After a Service released addresses or left a shared one: freed addresses go to waiting
    /// Services that could use them, oldest first, while their pools have free addresses; and
    /// waiters with the leaver's sharing key are retried (a port or an address of theirs may have
    /// come free). Nobody else is looked at.
    fn serve_waiting(&mut self, freed: &[IpAddr], sharing_key: Option<&str>, now: Timestamp) {
        self.mark_pools_of(freed);
        let pools: BTreeSet<String> = freed
            .iter()
            .filter_map(|ip| self.alloc.pool_of(*ip).map(str::to_string))
            .collect();
        let waiters: Vec<ServiceKey> = self.waiting.iter().map(|(_, k)| k.clone()).collect();
        // Sharing keys whose addresses changed: the leaver's, and those of waiters served now
        // (others of their key may join the address they just took).
        let mut keys: BTreeSet<String> = sharing_key.map(str::to_string).into_iter().collect();
        for key in &waiters {
            if !pools.iter().any(|p| self.has_free(p)) {
                break;
            }
            let fits = self
                .services
                .get(key)
                .and_then(|t| t.failure.as_deref())
                .is_some_and(|f| could_use(f, &pools, freed));
            if fits {
                self.reconcile(key, now);
                keys.extend(self.alloc.sharing_key(key));
            }
        }
        if keys.is_empty() {
            return;
        }
        for key in &waiters {
            let same_key = self.waiting_contains(key)
                && self.services.get(key).is_some_and(|t| {
                    matches!(&t.handling, Handling::Handled(Ok(r))
                        if r.sharing_key.as_ref().is_some_and(|k| keys.contains(k)))
                });
            if same_key {
                self.reconcile(key, now);
            }
        }
    }

    fn has_free(&self, pool: &str) -> bool {
        self.alloc
            .counts(pool)
            .is_some_and(|c| c.available_v4.0 > 0 || c.available_v6.0 > 0)
    }

    fn waiting_contains(&self, key: &ServiceKey) -> bool {
        self.services
            .get(key)
            .is_some_and(|t| self.waiting.contains(&(t.created, key.clone())))
    }

    /// Allocates for `key` if its request needs it, then converges its object.
    fn reconcile(&mut self, key: &ServiceKey, now: Timestamp) {
        let Some(t) = self.services.get(key) else {
            return;
        };
        let request: Option<Result<Request, AllocationError>> = match &t.handling {
            Handling::NotHandled(_) => None,
            Handling::Handled(Ok(r)) => Some(Ok(r.clone())),
            Handling::Handled(Err(e)) => Some(Err(AllocationError::Invalid(e.clone()))),
        };
        let created = t.created;
        let uid = t.uid.to_string();
        let observed_ips = t.observed.ips.to_vec();
        let before = self.alloc.assignment(key).cloned();
        let before_key = self.alloc.sharing_key(key);
        let ns_labels = self
            .namespaces
            .get(&key.namespace)
            .cloned()
            .unwrap_or_default();
        let mut events = Vec::new();
        let failure = match request {
            None => {
                let freed = self.alloc.release(key);
                if let Some(b) = &before {
                    events.push(ServiceEvent::released(
                        key,
                        &uid,
                        false,
                        &b.ips,
                        "the Service is no longer a LoadBalancer of this controller's class",
                    ));
                    self.serve_waiting(&freed, before_key.as_deref(), now);
                }
                None
            }
            Some(Err(invalid)) => {
                if let Some(b) = before.as_ref() {
                    events.push(ServiceEvent::released(key, &uid, true, &b.ips, &invalid));
                }
                let freed = self.alloc.release(key);
                if before.is_some() {
                    self.serve_waiting(&freed, before_key.as_deref(), now);
                }
                Some(invalid)
            }
            Some(Ok(req)) => {
                let assigned = self.alloc.assign(key, &req, &ns_labels, &observed_ips);
                if let Some(lost) = &assigned.lost {
                    events.push(ServiceEvent::released(
                        key, &uid, true, &lost.ips, &lost.why,
                    ));
                }
                match assigned.result {
                    Ok(a) => {
                        let changed = before.as_ref() != Some(&a);
                        let reclaimed = before.is_none() && *a.ips == *observed_ips;
                        if changed && !reclaimed {
                            self.tally.allocated += 1;
                            events.push(ServiceEvent::new(
                                key,
                                &uid,
                                false,
                                reason::IP_ALLOCATED,
                                format!(
                                    "Assigned {} from pool {}",
                                    comma_separated(&a.ips),
                                    a.pool
                                ),
                            ));
                        }
                        if changed {
                            self.pool_writes.mark(&a.pool);
                            if let Some(b) = &before {
                                self.pool_writes.mark(&b.pool);
                                let freed = self.freed_of(&b.ips, &a.ips);
                                self.serve_waiting(&freed, before_key.as_deref(), now);
                            }
                        }
                        None
                    }
                    Err(error) => {
                        if let Some(b) = &before {
                            self.pool_writes.mark(&b.pool);
                            let freed = self.freed_of(&b.ips, &[]);
                            self.serve_waiting(&freed, before_key.as_deref(), now);
                        }
                        Some(*error)
                    }
                }
            }
        };
        let Some(t) = self.services.get_mut(key) else {
            return;
        };
        match &failure {
            Some(err) => {
                let message = err.to_string();
                // Already on the object (say, before a restart): not a new failure.
                let shown =
                    t.observed.condition == Some(ShownCondition::of(false, err.reason(), &message));
                if t.failure.as_deref() != Some(err) && !shown {
                    *self.tally.failed.entry(err.reason()).or_default() += 1;
                    events.push(ServiceEvent::new(
                        key,
                        &uid,
                        true,
                        reason::ALLOCATION_FAILED,
                        message,
                    ));
                }
                if err.may_resolve_by_itself() {
                    self.waiting.insert((created, key.clone()));
                } else {
                    self.waiting.remove(&(created, key.clone()));
                }
            }
            None => {
                self.waiting.remove(&(created, key.clone()));
            }
        }
        t.failure = failure.map(Box::new);
        self.actions.extend(events.into_iter().map(Action::Event));
        self.converge(key);
    }

    /// Writes `key`'s object unless it shows what it should or a write is in flight.
    fn converge(&mut self, key: &ServiceKey) {
        let desired = self.desired(key);
        let Some(t) = self.services.get_mut(key) else {
            return;
        };
        // Queued: its body is built when handed out; in flight: write_done looks again.
        if t.write != Write::Idle || !write_needed(desired.as_ref(), t) {
            return;
        }
        t.write = Write::Queued;
        self.writes.queue(key.clone());
    }

    /// Hands out queued Service writes while the window allows, each with its body as of now.
    fn hand_out_writes(&mut self, now: Timestamp) {
        while let Some(key) = self.writes.next() {
            let desired = self.desired(&key);
            let Some(t) = self.services.get_mut(&key) else {
                continue; // Deleted meanwhile.
            };
            if t.write != Write::Queued {
                continue; // Queued twice (deleted and created again): handed out already.
            }
            if !write_needed(desired.as_ref(), t) {
                t.write = Write::Idle;
                continue;
            }
            t.write = Write::InFlight;
            self.writes.handed_out();
            let body = service_patch(&key, &desired.unwrap_or_default(), &t.observed, now);
            self.actions.push(Action::ApplyService {
                key,
                body: body.to_string(),
            });
        }
    }

    /// What `key`'s object should show; `None` when ferrolb does not handle it.
    fn desired(&self, key: &ServiceKey) -> Option<ServiceState> {
        let t = self.services.get(key)?;
        if matches!(t.handling, Handling::NotHandled(_)) {
            return None;
        }
        Some(ServiceState::of(
            self.alloc.assignment(key),
            t.failure.as_deref(),
        ))
    }

    /// Of the addresses `before` a Service held, those it no longer holds (`after`) and that
    /// nobody uses now.
    fn freed_of(&self, before: &[IpAddr], after: &[IpAddr]) -> Vec<IpAddr> {
        before
            .iter()
            .filter(|ip| !after.contains(ip) && self.alloc.users(**ip).next().is_none())
            .copied()
            .collect()
    }
}

/// Whether a Service's object differs from `desired` (`None`: not handled by this controller,
/// whose own fields must then go).
fn write_needed(desired: Option<&ServiceState>, t: &Tracked) -> bool {
    match desired {
        Some(d) => !t.observed.shows(d),
        None => t.observed.managed && !t.observed.shows_nothing(),
    }
}

/// Whether freed addresses in `pools` may cure `failure`.
fn could_use(failure: &AllocationError, pools: &BTreeSet<String>, freed: &[IpAddr]) -> bool {
    match failure {
        AllocationError::Exhausted { considered, .. } => {
            considered.iter().any(|c| pools.contains(&c.pool))
        }
        AllocationError::InUse { ip, .. } => freed.contains(ip),
        _ => false,
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
