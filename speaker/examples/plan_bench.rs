//! What one pass of the speaker's run loop costs at scale, without an apiserver: the caches are
//! filled in-process with N LoadBalancer Services (half `externalTrafficPolicy: Local`), one
//! EndpointSlice each with 3 endpoints, and `--nodes` Nodes; then, medians:
//!
//! ```text
//! cargo run --release -p ferrolb-speaker --example plan_bench -- [--services 10000] [--nodes 100] [--runs 15]
//!   whole reads and plans (--runs each):
//!     snapshot: Sources::snapshot (caches -> pure Snapshot)
//!     compare:  Snapshot == Snapshot
//!     plan:     plan::plan over every live node
//!   the run loop's passes (200 each), as run.rs makes them:
//!     service_change_pass: one Service's endpoints move (a watch event): refresh the snapshot
//!                          from the journal and step the Replanner
//!     peer_death_pass:     one node leaves the live set, then comes back: step the Replanner
//! ```

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferrolb_crds::contract::{annotation, label};
use ferrolb_crds::{IPAddressPool, L2Advertisement};
use ferrolb_speaker::membership::{LiveView, ViewSource};
use ferrolb_speaker::plan;
use ferrolb_speaker::replan::Replanner;
use ferrolb_speaker::sources::{Journal, SliceIndex, Sources};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde_json::json;

fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    filled(objects).0
}

fn filled<K>(objects: Vec<K>) -> (Store<K>, reflector::store::Writer<K>)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, mut writer) = reflector::store();
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(o));
    }
    (reader, writer)
}

fn parse<K: serde::de::DeserializeOwned>(v: serde_json::Value) -> K {
    serde_json::from_value(v).expect("a valid object")
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort_unstable();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn main() {
    let mut services = 10_000usize;
    let mut nodes = 100usize;
    let mut runs = 15usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{a} needs a number"))
        };
        match a.as_str() {
            "--services" => services = value(),
            "--nodes" => nodes = value(),
            "--runs" => runs = value().max(1),
            other => panic!("unknown argument {other:?}"),
        }
    }
    let node_name = |i: usize| format!("node{}", i % nodes);
    let node_objects = (0..nodes)
        .map(|i| {
            parse::<Node>(json!({
                "metadata": {"name": node_name(i), "labels": {"kubernetes.io/hostname": node_name(i)}},
                "status": {"addresses": [{"type": "InternalIP", "address": format!("198.51.100.{}", i % 250 + 1)}],
                           "conditions": [{"type": "Ready", "status": "True"}]}
            }))
        })
        .collect();
    let service_objects = (0..services)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(
                u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + i as u32,
            );
            parse::<Service>(json!({
                "metadata": {"name": format!("svc{i}"), "namespace": "bench",
                             "annotations": {(annotation::ALLOCATED_FROM_POOL): "bench"}},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}],
                         "externalTrafficPolicy": if i % 2 == 0 { "Local" } else { "Cluster" }},
                "status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}}
            }))
        })
        .collect();
    let slice_of = |i: usize, shift: usize| {
        let endpoints: Vec<_> = (0..3)
            .map(|e| {
                json!({"addresses": [format!("10.{}.{}.{}", e, i / 250 % 250, i % 250)],
                            "conditions": {"ready": true}, "nodeName": node_name(i + e + shift)})
            })
            .collect();
        parse::<EndpointSlice>(json!({
            "metadata": {"name": format!("svc{i}-abcde"), "namespace": "bench",
                         "labels": {(label::SERVICE_NAME): format!("svc{i}")}},
            "addressType": "IPv4", "endpoints": endpoints
        }))
    };
    let slice_objects = (0..services).map(|i| slice_of(i, 0)).collect();
    let pool = parse::<IPAddressPool>(json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "bench"}, "spec": {"addresses": ["198.18.0.0/15"]}
    }));
    let adv = parse::<L2Advertisement>(json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": {"name": "bench"}, "spec": {}
    }));
    let (slices, mut slice_writer) = filled(slice_objects);
    let sources = Sources {
        services: store(service_objects),
        slices,
        nodes: store(node_objects),
        pools: store(vec![pool]),
        advertisements: store(vec![adv]),
        bgp_peers: store(Vec::new()),
        bgp_advertisements: store(Vec::new()),
        communities: store(Vec::new()),
        bfd_profiles: store(Vec::new()),
        journal: Default::default(),
    };
    let live: BTreeSet<String> = (0..nodes).map(node_name).collect();
    trim();
    let caches_rss_anon_mib = status_mib("RssAnon:");

    let (mut snap_t, mut cmp_t, mut plan_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut owned = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let a = sources.snapshot(None);
        snap_t.push(t.elapsed());
        let b = sources.snapshot(None);
        let t = Instant::now();
        assert!(a == b, "two snapshots of the same caches differ");
        cmp_t.push(t.elapsed());
        let t = Instant::now();
        let p = plan::plan(&a, &live);
        plan_t.push(t.elapsed());
        owned = p.owned_by(&node_name(0)).count();
        assert_eq!(
            a.services.len(),
            services,
            "every Service is in the snapshot"
        );
    }

    // The run loop's passes, through the same calls as run.rs.
    let links = vec!["eth0".to_string()];
    let view = |live: &BTreeSet<String>| LiveView {
        live: live.clone(),
        source: ViewSource::Mesh,
    };
    let mut replanner = Replanner::new(node_name(0), Vec::new());
    let mut index = SliceIndex::default();
    *sources.journal.lock().unwrap() = Journal::everything();
    let t = Instant::now();
    replanner.update_snapshot(|snap| sources.refresh(snap, &mut index, None));
    assert!(replanner.step(&view(&live), &links).replan.is_some());
    let first_pass_ms = t.elapsed().as_secs_f64() * 1000.0;
    const PASSES: usize = 200;
    let (mut change_t, mut replanned) = (Vec::new(), 0);
    for n in 0..PASSES {
        // A Local Service's endpoints move one node on (even indices are Local).
        let i = (n * 2 * 7919) % services / 2 * 2;
        let event = watcher::Event::Apply(slice_of(i, 1 + n % (nodes - 1).max(1)));
        slice_writer.apply_watcher_event(&event);
        sources.journal.lock().unwrap().note_slice(&event);
        let t = Instant::now();
        replanner.sources_changed();
        replanner.update_snapshot(|snap| sources.refresh(snap, &mut index, None));
        let step = replanner.step(&view(&live), &links);
        change_t.push(t.elapsed());
        replanned += usize::from(step.replan.is_some());
    }
    let mut death_t = Vec::new();
    for n in 0..PASSES / 2 {
        let mut fewer = live.clone();
        fewer.remove(&node_name(1 + n % (nodes - 1).max(1)));
        let t = Instant::now();
        let step = replanner.step(&view(&fewer), &links);
        death_t.push(t.elapsed());
        assert!(step.replan.is_some());
        replanner.step(&view(&live), &links);
    }
    // Freed blocks of the runs above go back to the OS first, so RSS is what is held.
    trim();
    println!(
        "{}",
        json!({
            "services": services, "nodes": nodes, "runs": runs,
            "snapshot_ms": median(snap_t), "compare_ms": median(cmp_t), "plan_ms": median(plan_t),
            "groups_owned_by_node0": owned,
            "first_pass_ms": first_pass_ms,
            "service_change_pass_ms": median(change_t.clone()),
            "service_change_pass_max_ms": change_t.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            "peer_death_pass_ms": median(death_t),
            "passes": PASSES,
            "service_change_passes_that_replanned": replanned,
            // With the caches, the snapshot and the replanner all held: the speaker's memory at
            // this size, less the watch machinery and the runtime.
            "vm_rss_mib": status_mib("VmRSS:"),
            "rss_anon_mib": status_mib("RssAnon:"),
            "rss_anon_with_caches_only_mib": caches_rss_anon_mib,
        })
    );
}

/// A `kB` line of `/proc/self/status`, in MiB (0 when missing).
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| (kib / 1024.0 * 10.0).round() / 10.0)
}

/// Returns glibc's free pages to the OS.
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own free lists; no memory is passed.
    unsafe {
        libc::malloc_trim(0);
    }
}
