//! The controller's state machine at scale, in one process: heap and resident memory per
//! Service once every Service holds its addresses.
//!
//! ```sh
//! cargo run --release -p ferrolb-controller --example state_memory [-- --services 100000 --pools 1000]
//! ```
//!
//! Prints one JSON object on stdout (what `cargo xtask bench` reads). It feeds [`State`] what the
//! watches deliver for the same objects as the bench's "Controller at scale" section (IPv6
//! single-stack Services, Service `i` naming pool `i % pools`, each pool a /120), starts it, and
//! answers every status write the way the apiserver does: the written object, with the applied
//! status and annotation, the field manager and a new resourceVersion, comes back through
//! [`State::write_done`]. Events are dropped. What it reports:
//!
//! - `heap_bytes`: bytes the state holds (counted by this program's global allocator), in
//!   total and per Service, after each phase;
//! - `rss_anon_kib`: the process's anonymous resident memory once settled (after the
//!   controller's own trim), the figure the real controller's VmRSS adds its runtime to.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ferrolb_controller::reconcile::state::{Action, State};
use ferrolb_crds::IPAddressPool;
use ferrolb_crds::contract::annotation;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// Counts the bytes live on the heap as glibc's malloc lays them out: each block rounded up
/// with its 8-byte header to 16 bytes, 32 at least.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

fn chunk(size: usize) -> usize {
    (size + 8).next_multiple_of(16).max(32)
}

#[allow(unsafe_code)]
// SAFETY: every call forwards to the system allocator with the caller's own arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(chunk(layout.size()), Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(chunk(new_size), Ordering::Relaxed);
        LIVE.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn pool(i: usize) -> IPAddressPool {
    serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": format!("bench-pool-{i:04}"), "uid": format!("pool-uid-{i}"), "generation": 1},
        "spec": {"addresses": [format!("2001:db8:100:{i:x}::/120")]},
    }))
    .expect("a valid pool")
}

/// Service `i` as a watch delivers it, with what the apiserver adds.
fn service(i: usize, pools: usize) -> Service {
    let cluster_ip = Ipv6Addr::from(0xfd00_0000_0000_0000_0000_0000_0010_u128 + i as u128);
    let name = format!("svc-{i:06}");
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": "bench",
            "uid": format!("{:08x}-0000-4000-8000-{:012x}", i, i),
            "resourceVersion": (1000 + i).to_string(),
            "creationTimestamp": "2026-12-04T12:00:00Z",
            "annotations": {annotation::ADDRESS_POOL: format!("bench-pool-{:04}", i % pools)},
            "managedFields": [{
                "manager": "bench", "operation": "Update", "apiVersion": "v1",
                "time": "2026-12-04T12:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:type": {}, "f:ports": {}}},
            }],
        },
        // The fields the controller reads (the bench's Services also have a selector, and
        // clusterIPs and allocateLoadBalancerNodePorts set).
        "spec": {
            "type": "LoadBalancer",
            "ipFamilyPolicy": "SingleStack",
            "ipFamilies": ["IPv6"],
            "clusterIP": cluster_ip.to_string(),
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        },
    }))
    .expect("a valid Service")
}

/// The object the apiserver returns for an apply of `body` to `svc`'s status.
fn written(svc: &Service, body: &str, manager: &str, resource_version: u64) -> Service {
    let body: Value = serde_json::from_str(body).expect("apply bodies are JSON");
    let mut out = svc.clone();
    out.status = serde_json::from_value(body["status"].clone()).expect("a Service status");
    if let Some(Value::Object(added)) = body["metadata"].get("annotations") {
        let annotations = out.metadata.annotations.get_or_insert_default();
        for (k, v) in added {
            annotations.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
        }
    }
    out.metadata.managed_fields.get_or_insert_default().push(
        serde_json::from_value(json!({
            "manager": manager, "operation": "Apply", "apiVersion": "v1",
            "time": "2026-12-04T12:00:01Z", "fieldsType": "FieldsV1", "subresource": "status",
            "fieldsV1": {"f:status": {"f:loadBalancer": {"f:ingress": {}}}},
        }))
        .expect("a managed fields entry"),
    );
    out.metadata.resource_version = Some(resource_version.to_string());
    out
}

/// RssAnon of this process, KiB.
fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let services = arg("--services", 100_000);
    let pools = arg("--pools", 1_000);
    ferrolb_controller::memory::limit_arenas(1);
    let now = Timestamp::now();
    let started = Instant::now();
    let base = live();
    let rss_base = rss_anon_kib();

    let mut state = State::new(None);
    for i in 0..pools {
        state.pool_applied(pool(i), now);
    }
    state.namespace_applied("bench", Default::default(), now);
    for i in 0..services {
        state.service_applied(&service(i, pools), now);
    }
    let heap_listed = live() - base;
    state.start(now);

    // Index of each Service by name, for the echo.
    let index = |name: &str| -> usize { name["svc-".len()..].parse().expect("svc-NNNNNN") };
    let manager = state.field_manager().to_string();
    let mut resource_version = 1_000_000_u64;
    let mut with_address = 0;
    loop {
        let actions = state.take_actions(Timestamp::now());
        let mut wrote = false;
        for action in actions {
            if let Action::ApplyService { key, body } = action {
                wrote = true;
                resource_version += 1;
                let i = index(&key.name);
                let echo = written(&service(i, pools), &body, &manager, resource_version);
                if echo
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .is_some()
                {
                    with_address += 1;
                }
                state.write_done(&key, Some(&echo), Timestamp::now(), Instant::now());
            }
        }
        if !wrote {
            break;
        }
    }
    state.flush_pools(Timestamp::now());
    drop(state.take_actions(Timestamp::now()));
    drop(state.take_tally());
    state.shrink_queues();
    let settled_s = started.elapsed().as_secs_f64();
    let heap = live() - base;
    ferrolb_controller::memory::release_free();
    let rss = rss_anon_kib().saturating_sub(rss_base);
    let per = |bytes: usize| bytes as f64 / services as f64;
    let report = json!({
        "services": services,
        "pools": pools,
        "with_address": with_address,
        "seconds": settled_s,
        "heap_bytes": {
            "listed": heap_listed,
            "per_service_listed": per(heap_listed),
            "settled": heap,
            "per_service_settled": per(heap),
        },
        "rss_anon_kib_settled": rss,
        "rss_anon_per_service_bytes": per(rss as usize * 1024),
    });
    println!("{report}");
    assert_eq!(with_address, services, "every Service must get an address");
}
