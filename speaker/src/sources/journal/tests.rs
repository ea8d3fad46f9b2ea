//! The refreshed snapshot against one read whole, after every kind of event.

use ferrolb_crds::contract::annotation;
use kube::runtime::reflector::{self, store::Writer};
use serde_json::json;

use super::*;

/// The caches with their writers: each change goes to the cache and the journal, as a watch's
/// event would.
struct Caches {
    sources: Sources,
    services: Writer<Service>,
    slices: Writer<EndpointSlice>,
}

impl Caches {
    fn new() -> Caches {
        let (services_r, services) = reflector::store();
        let (slices_r, slices) = reflector::store();
        let sources = Sources {
            services: services_r,
            slices: slices_r,
            nodes: reflector::store().0,
            pools: reflector::store().0,
            advertisements: reflector::store().0,
            bgp_peers: reflector::store().0,
            bgp_advertisements: reflector::store().0,
            communities: reflector::store().0,
            bfd_profiles: reflector::store().0,
            journal: Default::default(),
        };
        Caches {
            sources,
            services,
            slices,
        }
    }

    fn service(&mut self, event: watcher::Event<Service>) {
        self.services.apply_watcher_event(&event);
        self.sources.journal.lock().unwrap().note_service(&event);
    }

    fn slice(&mut self, event: watcher::Event<EndpointSlice>) {
        self.slices.apply_watcher_event(&event);
        self.sources.journal.lock().unwrap().note_slice(&event);
    }
}

fn svc(name: &str, ip: &str, local: bool) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns",
                     "annotations": {(annotation::ALLOCATED_FROM_POOL): "lan"}},
        "spec": {"type": "LoadBalancer",
                 "externalTrafficPolicy": if local { "Local" } else { "Cluster" }},
        "status": {"loadBalancer": {"ingress": [{"ip": ip}]}},
    }))
    .unwrap()
}

fn slice(name: &str, service: &str, node: &str) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "labels": {(label::SERVICE_NAME): service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": node}],
    }))
    .unwrap()
}

fn keys(names: &[&str]) -> BTreeSet<ServiceKey> {
    names.iter().map(|n| ServiceKey::new("ns", *n)).collect()
}

#[test]
fn each_event_changes_only_its_service_and_the_result_equals_a_whole_read() {
    use watcher::Event::{Apply, Delete};
    let mut c = Caches::new();
    for i in 0..5 {
        c.service(Apply(svc(
            &format!("s{i}"),
            &format!("198.51.100.{}", 200 + i),
            i % 2 == 0,
        )));
    }
    c.slice(Apply(slice("s0-a", "s0", "node1")));
    let (mut snap, mut index) = (Snapshot::default(), SliceIndex::default());
    *c.sources.journal.lock().unwrap() = Journal::everything();
    let delta = c.sources.refresh(&mut snap, &mut index, None);
    assert!(delta.everything);
    assert_eq!(snap, c.sources.snapshot(None));

    let mut step = |c: &mut Caches, want: &[&str], what: &str| {
        let delta = c.sources.refresh(&mut snap, &mut index, None);
        assert!(!delta.everything, "{what}");
        assert_eq!(delta.services, keys(want), "{what}");
        assert_eq!(snap, c.sources.snapshot(None), "{what}");
    };
    c.service(Apply(svc("s1", "198.51.100.210", false)));
    step(&mut c, &["s1"], "an address changed");
    c.slice(Apply(slice("s0-b", "s0", "node2")));
    step(&mut c, &["s0"], "a second slice of a Local Service");
    c.slice(Apply(slice("s1-a", "s1", "node3")));
    step(&mut c, &[], "a slice of a Cluster Service changes nothing");
    c.slice(Apply(slice("s0-b", "s2", "node2")));
    step(&mut c, &["s0", "s2"], "a slice moved to another Service");
    c.slice(Delete(slice("s0-a", "s0", "node1")));
    step(&mut c, &["s0"], "a slice deleted");
    c.service(Delete(svc("s3", "198.51.100.203", false)));
    step(&mut c, &["s3"], "a Service deleted");
    c.service(Apply(svc("s4", "198.51.100.204", true)));
    step(&mut c, &[], "an edit that changes no fact");
    c.service(Apply(svc("s9", "198.51.100.209", true)));
    c.slice(Apply(slice("s9-a", "s9", "node1")));
    step(&mut c, &["s9"], "a new Service and its slice");
}

#[test]
fn a_relist_reads_everything() {
    let mut c = Caches::new();
    c.service(watcher::Event::Apply(svc("s0", "198.51.100.200", false)));
    let (mut snap, mut index) = (Snapshot::default(), SliceIndex::default());
    c.sources.refresh(&mut snap, &mut index, None);
    c.service(watcher::Event::Init);
    c.service(watcher::Event::InitApply(svc(
        "s1",
        "198.51.100.201",
        false,
    )));
    c.service(watcher::Event::InitDone);
    let delta = c.sources.refresh(&mut snap, &mut index, None);
    assert!(delta.everything);
    assert_eq!(
        snap.services.keys().cloned().collect::<BTreeSet<_>>(),
        keys(&["s1"])
    );
    assert_eq!(
        c.sources.refresh(&mut snap, &mut index, None),
        SnapshotDelta::default()
    );
}
