//! What the watches changed, and the snapshot updated from it: a pass after one Service or
//! EndpointSlice event reads that Service and its slices, not the caches.
//!
//! ```text
//!  watch event ──note──> Journal (Services, slices touched; Nodes, pools, ads: a flag;
//!                         a relist: everything)
//!  Sources::refresh ─take the journal─> recompute the touched Services' ServiceInfo
//!       (endpoints through SliceIndex: Service -> its slices), the flagged maps,
//!       or everything after a relist ─> SnapshotDelta (Services whose facts changed,
//!       or everything) ─> Replanner
//! ```

use std::collections::{BTreeSet, HashMap};

use ferrolb_crds::ServiceKey;
use ferrolb_crds::contract::label;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::{Sources, ready_endpoint_nodes, service_info};
use crate::model::{Snapshot, SnapshotDelta};

/// What the watches changed since it was last taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    /// Services added, changed or deleted.
    pub services: BTreeSet<ServiceKey>,
    /// EndpointSlices added, changed or deleted, as (namespace, name).
    pub slices: BTreeSet<(String, String)>,
    /// A Node event.
    pub nodes: bool,
    /// A pool event.
    pub pools: bool,
    /// An advertisement event.
    pub advertisements: bool,
    /// A `BGPPeer`, `BGPAdvertisement`, `Community` or `BFDProfile` event.
    pub bgp: bool,
    /// A Service or EndpointSlice watch listed everything again (or nothing was read yet): the
    /// snapshot is read whole.
    pub relisted: bool,
}

impl Journal {
    /// A journal that makes the next refresh read everything.
    pub fn everything() -> Journal {
        Journal {
            relisted: true,
            nodes: true,
            pools: true,
            advertisements: true,
            bgp: true,
            ..Journal::default()
        }
    }

    /// Notes a Service watch event.
    pub fn note_service(&mut self, event: &watcher::Event<Service>) {
        match event {
            watcher::Event::Apply(svc) | watcher::Event::Delete(svc) => {
                self.services.insert(ServiceKey::new(
                    svc.namespace().unwrap_or_default(),
                    svc.name_any(),
                ));
            }
            // The cache is replaced at the end of a relist: then everything is read again.
            watcher::Event::InitDone => self.relisted = true,
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }

    /// Notes an EndpointSlice watch event.
    pub fn note_slice(&mut self, event: &watcher::Event<EndpointSlice>) {
        match event {
            watcher::Event::Apply(slice) | watcher::Event::Delete(slice) => {
                self.slices
                    .insert((slice.namespace().unwrap_or_default(), slice.name_any()));
            }
            watcher::Event::InitDone => self.relisted = true,
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }
}

/// Which EndpointSlices belong to which Service (their `kubernetes.io/service-name` label).
#[derive(Debug, Default)]
pub struct SliceIndex {
    service_of: HashMap<(String, String), ServiceKey>,
    slices_of: HashMap<ServiceKey, BTreeSet<String>>,
}

impl SliceIndex {
    /// The index of every slice in `slices`.
    pub fn of(slices: &Store<EndpointSlice>) -> SliceIndex {
        let mut index = SliceIndex::default();
        for slice in slices.state() {
            let ns = slice.namespace().unwrap_or_default();
            if let Some(svc) = slice.labels().get(label::SERVICE_NAME) {
                index.link(
                    (ns.clone(), slice.name_any()),
                    ServiceKey::new(ns, svc.clone()),
                );
            }
        }
        index
    }

    /// Follows slice `id` to its state in `slices`; returns the Services it belonged to before
    /// and belongs to now.
    fn update(&mut self, slices: &Store<EndpointSlice>, id: (String, String)) -> Vec<ServiceKey> {
        let (ns, name) = &id;
        let now = slices
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|s| s.labels().get(label::SERVICE_NAME).cloned())
            .map(|svc| ServiceKey::new(ns.clone(), svc));
        let before = self.unlink(&id);
        if let Some(svc) = &now {
            self.link(id, svc.clone());
        }
        before.into_iter().chain(now).collect()
    }

    fn link(&mut self, id: (String, String), svc: ServiceKey) {
        self.slices_of
            .entry(svc.clone())
            .or_default()
            .insert(id.1.clone());
        self.service_of.insert(id, svc);
    }

    fn unlink(&mut self, id: &(String, String)) -> Option<ServiceKey> {
        let svc = self.service_of.remove(id)?;
        if let Some(names) = self.slices_of.get_mut(&svc) {
            names.remove(&id.1);
            if names.is_empty() {
                self.slices_of.remove(&svc);
            }
        }
        Some(svc)
    }

    /// Nodes with a ready (or serving) endpoint of `svc`, from its slices in `slices`.
    fn endpoint_nodes(&self, slices: &Store<EndpointSlice>, svc: &ServiceKey) -> BTreeSet<String> {
        let mut nodes = BTreeSet::new();
        for name in self.slices_of.get(svc).into_iter().flatten() {
            if let Some(slice) = slices.get(&ObjectRef::new(name).within(&svc.namespace)) {
                nodes.extend(ready_endpoint_nodes(&slice));
            }
        }
        nodes
    }
}

impl Sources {
    /// Brings `snapshot` (last read with `index`) up to date with what the journal says
    /// changed, for Services of `lb_class`; returns what changed in it.
    pub fn refresh(
        &self,
        snapshot: &mut Snapshot,
        index: &mut SliceIndex,
        lb_class: Option<&str>,
    ) -> SnapshotDelta {
        let journal = std::mem::take(&mut *self.journal.lock().unwrap_or_else(|e| e.into_inner()));
        if journal.relisted {
            *snapshot = self.snapshot(lb_class);
            *index = SliceIndex::of(&self.slices);
            return SnapshotDelta {
                services: BTreeSet::new(),
                everything: true,
            };
        }
        let mut delta = SnapshotDelta::default();
        if journal.nodes {
            delta.everything |= replace_if_changed(&mut snapshot.nodes, self.node_infos());
        }
        if journal.pools {
            delta.everything |= replace_if_changed(&mut snapshot.pools, self.pool_infos());
        }
        if journal.advertisements {
            let ads = self.advertisement_infos();
            delta.everything |= replace_if_changed(&mut snapshot.advertisements, ads);
        }
        if journal.bgp {
            // Routes are decided apart from layer 2 (crate::bgp), but the Services' condition
            // tells both: a BGP change is reported through a full replan.
            delta.everything |= replace_if_changed(&mut snapshot.bgp, self.bgp_config());
        }
        let mut touched = journal.services;
        for id in journal.slices {
            touched.extend(index.update(&self.slices, id));
        }
        for key in touched {
            let info = self
                .services
                .get(&ObjectRef::new(&key.name).within(&key.namespace))
                .and_then(|svc| {
                    let endpoints = HashMap::from([(
                        (key.namespace.clone(), key.name.clone()),
                        index.endpoint_nodes(&self.slices, &key),
                    )]);
                    service_info(&svc, lb_class, &endpoints)
                });
            if snapshot.services.get(&key) != info.as_ref() {
                match info {
                    Some(info) => snapshot.services.insert(key.clone(), info),
                    None => snapshot.services.remove(&key),
                };
                delta.services.insert(key);
            }
        }
        delta
    }
}

/// Replaces `current` with `fresh` if they differ; returns whether they did.
fn replace_if_changed<T: PartialEq>(current: &mut T, fresh: T) -> bool {
    let changed = *current != fresh;
    if changed {
        *current = fresh;
    }
    changed
}

#[cfg(test)]
mod tests;
