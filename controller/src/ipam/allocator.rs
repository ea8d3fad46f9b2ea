//! The allocator: every valid pool, every held address and who holds it (pure, deterministic).
//!
//! Invariants:
//! - valid pools never overlap (the older of two overlapping pools wins, the other is reported);
//! - an address is held by one Service, or by several that may share it ([`sharing`]);
//! - each valid pool's free space is its addresses minus every held address;
//! - a Service's addresses come from one pool.
//!
//! The same calls in the same order give the same addresses: pools are tried in rank order and
//! each hands out its lowest free address.
//!
//! Services are interned ([`interned`](super::interned)): each Service holding addresses has a
//! dense id and a slot. The users of an address ([`Held`]) are ids, so the hot path neither
//! clones, hashes nor compares Service keys beyond one lookup. Ids never decide anything: users
//! of an address are kept in Service key order, the order conflicts name them in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_crds::address::to_u128;
use ferrolb_crds::{AddressCount, Family};

use super::FastMap;
use super::assignment::{Assigned, Assignment, Ips, Loss, PoolCounts, no_pool};
use super::error::{AllocationError, Considered, comma_separated};
use super::held::{Held, Removed, UserId};
use super::interned::{Interned, KeyRef, Slot};
use super::pool::{Pool, PoolConfig, RuledOut, family_index};
use super::request::{FamilyPolicy, Request, ServiceKey};
use super::sharing::{self, Conflict, Usage};

/// A Service asking for addresses, as the checks see it.
#[derive(Clone, Copy)]
struct Asking<'a> {
    key: &'a ServiceKey,
    /// Its slot, if interned.
    id: Option<UserId>,
    req: &'a Request,
    usage: &'a Usage,
    namespace_labels: &'a BTreeMap<String, String>,
}

enum PickError {
    InUse(IpAddr, ServiceKey, Conflict),
    Ineligible(IpAddr),
}

/// Pools, held addresses and assignments.
#[derive(Debug, Default)]
pub struct Allocator {
    /// Valid pools, in configuration order (`index`, `names` and `order` refer to them by
    /// position).
    pools: Vec<Pool>,
    /// Pool name -> position in `pools`.
    names: BTreeMap<String, usize>,
    /// Valid pools in rank order.
    order: Vec<usize>,
    /// Pools not in use, and why.
    problems: BTreeMap<String, String>,
    /// Per family: disjoint intervals (first, last, pool), sorted.
    index: [Vec<(u128, u128, usize)>; 2],
    /// Held address -> its users.
    held: Held,
    /// Interned Services, by id.
    services: Interned,
    /// Live ids.
    assigned: usize,
    /// Sharing key -> addresses held under it.
    by_key: FastMap<String, BTreeSet<IpAddr>>,
}

impl Allocator {
    /// An allocator with no pools.
    pub fn new() -> Allocator {
        Allocator::default()
    }

    /// An allocator whose Service keys all have the same hash (tests the same-hash chains).
    #[cfg(test)]
    pub(crate) fn with_colliding_hashes() -> Allocator {
        Allocator {
            services: Interned::with_colliding_hashes(),
            ..Allocator::default()
        }
    }

    /// Replaces the pool set. Returns the Services whose assignment must be checked again
    /// ([`Allocator::assign`]): those whose pool changed, went away or is not the pool that now
    /// contains their addresses.
    pub fn set_pools(&mut self, mut configs: Vec<PoolConfig>) -> Vec<ServiceKey> {
        configs.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        let mut old: BTreeMap<String, Pool> = std::mem::take(&mut self.pools)
            .into_iter()
            .map(|p| (p.name().to_string(), p))
            .collect();
        self.names.clear();
        let mut changed: BTreeSet<String> = old.keys().cloned().collect();
        self.problems.clear();
        self.index = Default::default();
        for config in configs {
            let ranges = match &config.ranges {
                Ok(r) => r.clone(),
                Err(e) => {
                    self.problems.insert(config.name.clone(), e.clone());
                    continue;
                }
            };
            let intervals = merged(&ranges);
            if let Some(other) = intervals.iter().find_map(|(f, first, last)| {
                let index = &self.index[family_index(*f)];
                index[..index.partition_point(|(i_first, ..)| i_first <= last)]
                    .last()
                    .filter(|(_, i_last, _)| i_last >= first)
                    .map(|(.., pool)| self.pools[*pool].name().to_string())
            }) {
                self.problems.insert(
                    config.name.clone(),
                    format!(
                        "its addresses overlap pool {other}'s; an address belongs to one pool, and the older pool ({other}) keeps it"
                    ),
                );
                continue;
            }
            let name = config.name.clone();
            let position = self.names.get(&name).copied().unwrap_or(self.pools.len());
            for (f, first, last) in intervals {
                let index = &mut self.index[family_index(f)];
                let at = index.partition_point(|(i_first, ..)| *i_first < first);
                index.insert(at, (first, last, position));
            }
            let pool = match old.remove(&name) {
                Some(pool) if *pool.config() == config => {
                    changed.remove(&name);
                    pool
                }
                _ => {
                    changed.insert(name.clone());
                    let mut pool = Pool::new(config);
                    for ip in self.held_in(&pool) {
                        pool.hold(ip);
                    }
                    pool
                }
            };
            if position == self.pools.len() {
                self.pools.push(pool);
            } else {
                self.pools[position] = pool;
            }
            self.names.insert(name, position);
        }
        self.order = (0..self.pools.len()).collect();
        self.order
            .sort_by(|a, b| self.pools[*a].rank().cmp(&self.pools[*b].rank()));

        let mut affected: Vec<ServiceKey> = self
            .assigned_slots()
            .filter(|s| {
                let a = &s.assignment;
                changed.contains(&*a.pool)
                    || a.ips.iter().any(|ip| self.pool_of(*ip) != Some(&*a.pool))
            })
            .map(|s| s.key().to_key())
            .collect();
        affected.sort();
        affected
    }

    /// Held addresses inside `pool` (a scan of every held address: pools change rarely,
    /// allocations often, so the held set is a hash map).
    fn held_in(&self, pool: &Pool) -> Vec<IpAddr> {
        self.held.ips().filter(|ip| pool.contains(*ip)).collect()
    }

    /// The slots of Services holding addresses.
    fn assigned_slots(&self) -> impl Iterator<Item = &Slot> {
        self.services.live()
    }

    /// The valid pool containing `ip`.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&str> {
        indexed_pool(&self.index, ip).map(|p| self.pools[p].name())
    }

    /// Pools not in use, and why.
    pub fn problems(&self) -> &BTreeMap<String, String> {
        &self.problems
    }

    /// Counts of a valid pool.
    pub fn counts(&self, pool: &str) -> Option<PoolCounts> {
        let p = &self.pools[*self.names.get(pool)?];
        Some(PoolCounts {
            assigned_v4: AddressCount(p.assigned(Family::V4)),
            available_v4: AddressCount(p.available(Family::V4)),
            assigned_v6: AddressCount(p.assigned(Family::V6)),
            available_v6: AddressCount(p.available(Family::V6)),
        })
    }

    /// Valid pools, in rank order.
    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.order.iter().map(|p| &self.pools[*p])
    }

    /// What `key` holds.
    pub fn assignment(&self, key: &ServiceKey) -> Option<&Assignment> {
        let slot = &self.services[self.services.find(key).1?];
        slot.live.then_some(&slot.assignment)
    }

    /// Services holding addresses.
    pub fn assigned_services(&self) -> impl Iterator<Item = (KeyRef<'_>, &Assignment)> {
        self.assigned_slots().map(|s| (s.key(), &s.assignment))
    }

    /// The sharing key `key` holds its addresses under.
    pub fn sharing_key(&self, key: &ServiceKey) -> Option<String> {
        let slot = &self.services[self.services.find(key).1?];
        slot.assignment.ips.first().filter(|_| slot.live)?;
        slot.usage().key.clone()
    }

    /// How many Services hold addresses.
    pub fn assigned_count(&self) -> usize {
        self.assigned
    }

    /// The Services using `ip`, in key order.
    pub fn users(&self, ip: IpAddr) -> impl Iterator<Item = KeyRef<'_>> {
        self.held
            .users(ip)
            .iter()
            .map(|id| self.services[*id].key())
    }

    /// Gives `key` addresses for `req`, keeping what it holds while that stays valid.
    ///
    /// `observed` are the addresses the Service's status shows; they count as held when the
    /// allocator does not know the Service yet (a restart), so they are reclaimed, not reissued.
    pub fn assign(
        &mut self,
        key: &ServiceKey,
        req: &Request,
        namespace_labels: &BTreeMap<String, String>,
        observed: &[IpAddr],
    ) -> Assigned {
        let usage = Usage::of(req);
        let (hash, id) = self.services.find(key);
        let asking = Asking {
            key,
            id,
            req,
            usage: &usage,
            namespace_labels,
        };
        let observed_assignment;
        let current = match id {
            Some(id) => Some(&self.services[id].assignment),
            None if !observed.is_empty() => {
                observed_assignment = Assignment {
                    pool: no_pool(),
                    ips: Ips::from_slice(observed),
                };
                Some(&observed_assignment)
            }
            None => None,
        };
        let mut lost = None;
        if let Some(current) = current {
            match self.check_current(&asking, current) {
                Ok((pool, mut ips)) => {
                    let missing: Vec<Family> = req
                        .families
                        .iter()
                        .copied()
                        .filter(|f| !ips.iter().any(|ip| Family::of(*ip) == *f))
                        .collect();
                    for family in missing {
                        if let Ok(Some(ip)) = self.pick(pool, family, &asking) {
                            ips.push(ip);
                        }
                    }
                    order_by_family(&mut ips, &req.families);
                    if ips.len() == req.families.len()
                        || req.policy != FamilyPolicy::RequireDualStack
                    {
                        let assignment = self.commit(key, hash, id, usage, pool, ips);
                        return Assigned {
                            result: Ok(assignment),
                            lost: None,
                        };
                    }
                    let pool = self.pools[pool].name();
                    lost = Some(Loss {
                        ips: current.ips.to_vec(),
                        why: format!(
                            "RequireDualStack needs both families from one pool and pool {pool} has no free {}",
                            req.families
                                .iter()
                                .find(|f| !ips.iter().any(|ip| Family::of(*ip) == **f))
                                .map_or(String::new(), Family::to_string)
                        ),
                    });
                }
                Err(why) => {
                    lost = Some(Loss {
                        ips: current.ips.to_vec(),
                        why,
                    })
                }
            }
            if let Some(id) = id {
                self.unhold(id);
            }
        }
        let result = match self.allocate_fresh(&asking) {
            Ok((pool, ips)) => Ok(self.commit(key, hash, id, usage, pool, ips)),
            Err(error) => {
                if let Some(id) = id {
                    self.services.forget(id);
                }
                Err(Box::new(error))
            }
        };
        Assigned { result, lost }
    }

    /// Frees what `key` holds. Returns the addresses that became free (shared ones stay held by
    /// their other users).
    pub fn release(&mut self, key: &ServiceKey) -> Vec<IpAddr> {
        let (_, Some(id)) = self.services.find(key) else {
            return Vec::new();
        };
        let freed = self.unhold(id);
        self.services.forget(id);
        freed
    }

    /// Takes `id`'s addresses back (it stays interned, no longer live). Returns the addresses
    /// that became free.
    fn unhold(&mut self, id: UserId) -> Vec<IpAddr> {
        let slot = &mut self.services[id];
        if !slot.live {
            return Vec::new();
        }
        slot.live = false;
        self.assigned -= 1;
        let slot = &self.services[id];
        let ips = slot.ips();
        let mut freed = Vec::new();
        for &ip in ips {
            if self.held.remove(ip, id) != Removed::Last {
                continue;
            }
            if let Some(k) = &slot.usage().key
                && let Some(ips) = self.by_key.get_mut(k)
            {
                ips.remove(&ip);
                if ips.is_empty() {
                    self.by_key.remove(k);
                }
            }
            if let Some(pool) = indexed_pool(&self.index, ip) {
                self.pools[pool].unhold(ip);
                if freed.capacity() == 0 {
                    freed = Vec::with_capacity(ips.len());
                }
                freed.push(ip);
            }
        }
        freed
    }

    /// Whether `current` may stay: the addresses of families still wanted, and the valid pool
    /// that contains them. The error says why not.
    fn check_current(
        &self,
        asking: &Asking,
        current: &Assignment,
    ) -> Result<(usize, Vec<IpAddr>), String> {
        let Asking {
            key,
            id,
            req,
            usage,
            namespace_labels,
        } = *asking;
        let mut ips = Vec::with_capacity(current.ips.len());
        for ip in &current.ips {
            let family = Family::of(*ip);
            if !req.families.contains(&family) {
                continue;
            }
            if let Some(requested) = req.requested_of(family)
                && requested != *ip
            {
                return Err(format!(
                    "the Service now requests {requested} instead of {ip}"
                ));
            }
            ips.push(*ip);
        }
        let Some(first) = ips.first() else {
            return Err(format!(
                "spec.ipFamilies no longer includes the family of {}",
                comma_separated(&current.ips)
            ));
        };
        let Some(pool) = indexed_pool(&self.index, *first) else {
            return Err(format!("no IPAddressPool in use contains {first} any more"));
        };
        if let Some(other) = ips
            .iter()
            .find(|ip| indexed_pool(&self.index, **ip) != Some(pool))
        {
            return Err(format!(
                "{other} and {first} are no longer in the same pool"
            ));
        }
        let p = &self.pools[pool];
        p.may_serve(req, &key.namespace, namespace_labels, true)
            .map_err(|why| format!("pool {} {why}", p.name()))?;
        for ip in &ips {
            self.may_join(*ip, id, usage)
                .map_err(|(holder, conflict)| {
                    format!("{ip} is also used by {holder} and {conflict}")
                })?;
        }
        Ok((pool, ips))
    }

    /// Whether Service `who` (with `usage`) may use `ip` along with its users; the error names
    /// the first other user in key order that is in conflict.
    fn may_join(
        &self,
        ip: IpAddr,
        who: Option<UserId>,
        usage: &Usage,
    ) -> Result<(), (ServiceKey, Conflict)> {
        sharing::may_join(
            self.held
                .users(ip)
                .iter()
                .filter(|id| Some(**id) != who)
                .map(|id| {
                    let slot = &self.services[*id];
                    (slot.key(), slot.usage())
                }),
            usage,
        )
    }

    /// Whether the pool at `p` may serve `asking` new addresses.
    fn serves(&self, p: usize, asking: &Asking) -> Result<(), RuledOut> {
        let Asking {
            key,
            req,
            namespace_labels,
            ..
        } = *asking;
        self.pools[p].may_serve(req, &key.namespace, namespace_labels, false)
    }

    fn allocate_fresh(&self, asking: &Asking) -> Result<(usize, Vec<IpAddr>), AllocationError> {
        let req = asking.req;
        if self.pools.is_empty() && req.pool.is_none() {
            return Err(AllocationError::NoPools);
        }
        if let Some(named) = req.pool.as_deref()
            && !self.names.contains_key(named)
        {
            return Err(AllocationError::PoolNotFound {
                name: named.to_string(),
                problem: self.problems.get(named).cloned(),
                known: self.pools().map(|p| p.name().to_string()).collect(),
            });
        }
        if let Some(ip) = req.requested.iter().find(|ip| self.pool_of(**ip).is_none()) {
            return Err(AllocationError::NotInAnyPool(*ip));
        }
        // Candidates are the pools that may serve, in rank order; they are checked as the
        // passes reach them (no list on the common path, where the first one serves). A
        // Service that names its pool has that one only: no walk past a thousand others.
        let named = req.pool.as_deref().and_then(|n| self.names.get(n));
        let order: &[usize] = match named {
            Some(p) => std::slice::from_ref(p),
            None => &self.order,
        };
        let candidate = |p: &usize| self.serves(*p, asking).is_ok();
        let Some(first) = order.iter().position(candidate) else {
            let ruled_out = order
                .iter()
                .filter_map(|p| match self.serves(*p, asking) {
                    Ok(()) | Err(RuledOut::NotNamed(_)) | Err(RuledOut::LacksRequested(_)) => None,
                    Err(why) => Some((self.pools[*p].name().to_string(), why)),
                })
                .collect();
            return Err(AllocationError::NoPoolMatches(ruled_out));
        };
        let candidates = || {
            order[first..]
                .iter()
                .enumerate()
                .filter(|(i, p)| *i == 0 || candidate(p))
                .map(|(_, p)| *p)
        };
        // PreferDualStack falls back to the primary family alone.
        let fallback = req.policy == FamilyPolicy::PreferDualStack && req.families.len() > 1;
        let passes: [&[Family]; 2] = [&req.families, &req.families[..1]];
        let mut conflict = None;
        for families in &passes[..if fallback { 2 } else { 1 }] {
            'pools: for p in candidates() {
                let mut ips = Vec::with_capacity(families.len());
                for family in families.iter() {
                    match self.pick(p, *family, asking) {
                        Ok(Some(ip)) => ips.push(ip),
                        Ok(None) => continue 'pools,
                        Err(e) => {
                            conflict.get_or_insert(e);
                            continue 'pools;
                        }
                    }
                }
                return Ok((p, ips));
            }
        }
        Err(match conflict {
            Some(PickError::InUse(ip, holder, conflict)) => AllocationError::InUse {
                ip,
                holder,
                conflict,
            },
            Some(PickError::Ineligible(ip)) => AllocationError::Ineligible {
                ip,
                pool: self.pool_of(ip).unwrap_or_default().to_string(),
            },
            None => AllocationError::Exhausted {
                families: req.families,
                considered: candidates()
                    .map(|p| {
                        let p = &self.pools[p];
                        Considered {
                            pool: p.name().to_string(),
                            free: req
                                .families
                                .iter()
                                .map(|f| (*f, p.has_family(*f).then(|| p.available(*f))))
                                .collect(),
                        }
                    })
                    .collect(),
            },
        })
    }

    /// An address of `family` in the pool at `p` for `asking`: the requested one, one its
    /// sharing key already holds there, or the lowest free one.
    fn pick(&self, p: usize, family: Family, asking: &Asking) -> Result<Option<IpAddr>, PickError> {
        let Asking {
            id: who,
            req,
            usage,
            ..
        } = *asking;
        let pool = &self.pools[p];
        if let Some(ip) = req.requested_of(family) {
            if self.held.is_held(ip) {
                return self
                    .may_join(ip, who, usage)
                    .map(|()| Some(ip))
                    .map_err(|(holder, c)| PickError::InUse(ip, holder, c));
            }
            return if pool.is_free(ip) {
                Ok(Some(ip))
            } else {
                Err(PickError::Ineligible(ip))
            };
        }
        if let Some(k) = &req.sharing_key
            && let Some(ips) = self.by_key.get(k)
        {
            let joinable = ips.iter().find(|ip| {
                Family::of(**ip) == family
                    && indexed_pool(&self.index, **ip) == Some(p)
                    && self.may_join(**ip, who, usage).is_ok()
            });
            if let Some(ip) = joinable {
                return Ok(Some(*ip));
            }
        }
        Ok(pool.lowest_free(family))
    }

    /// Makes `ips` from the pool at `pool` what `key` (slot `id` if interned, hash `hash`) holds,
    /// with `usage`. Returns the assignment.
    fn commit(
        &mut self,
        key: &ServiceKey,
        hash: u64,
        id: Option<UserId>,
        usage: Usage,
        pool: usize,
        ips: Vec<IpAddr>,
    ) -> Assignment {
        let (id, holding) = match id {
            Some(id) => {
                let slot = &self.services[id];
                // The same addresses under the same sharing key (a Service assigned again as
                // it was): only its usage and the pool's name may have changed.
                if slot.live && *slot.assignment.ips == *ips && slot.usage().key == usage.key {
                    (id, false)
                } else {
                    self.unhold(id);
                    (id, true)
                }
            }
            None => (self.services.intern(key, hash), true),
        };
        {
            let slot = &mut self.services[id];
            if usage.key.is_none() {
                slot.usage = None;
            } else if let Some(kept) = &mut slot.usage {
                **kept = usage;
            } else {
                slot.usage = Some(Box::new(usage));
            }
        }
        for ip in ips.iter().filter(|_| holding) {
            let services = &self.services;
            if !self.held.add(*ip, id, |id| services[id].key()) {
                continue;
            }
            if let Some(pool) = indexed_pool(&self.index, *ip) {
                self.pools[pool].hold(*ip);
            }
            if let Some(k) = &self.services[id].usage().key {
                self.by_key.entry(k.clone()).or_default().insert(*ip);
            }
        }
        let name = self.pools[pool].shared_name();
        let slot = &mut self.services[id];
        slot.assignment.pool = Arc::clone(name);
        slot.set_ips(&ips);
        if !slot.live {
            slot.live = true;
            self.assigned += 1;
        }
        Assignment {
            pool: Arc::clone(name),
            ips: ips.into(),
        }
    }
}

/// The pool whose indexed interval holds `ip`.
fn indexed_pool(index: &[Vec<(u128, u128, usize)>; 2], ip: IpAddr) -> Option<usize> {
    let bits = to_u128(ip);
    let index = &index[family_index(Family::of(ip))];
    index[..index.partition_point(|(first, ..)| *first <= bits)]
        .last()
        .filter(|(_, last, _)| *last >= bits)
        .map(|(.., pool)| *pool)
}

/// A pool's ranges as disjoint, non-adjacent intervals per family.
fn merged(ranges: &[ferrolb_crds::AddressRange]) -> Vec<(Family, u128, u128)> {
    let mut sorted: Vec<(Family, u128, u128)> = ranges
        .iter()
        .map(|r| (r.family(), r.first_bits(), r.last_bits()))
        .collect();
    sorted.sort();
    let mut out: Vec<(Family, u128, u128)> = Vec::new();
    for (f, first, last) in sorted {
        match out.last_mut() {
            Some((pf, _, plast)) if *pf == f && first <= plast.saturating_add(1) => {
                *plast = (*plast).max(last);
            }
            _ => out.push((f, first, last)),
        }
    }
    out
}

fn order_by_family(ips: &mut [IpAddr], families: &[Family]) {
    ips.sort_by_key(|ip| families.iter().position(|f| *f == Family::of(*ip)));
}
