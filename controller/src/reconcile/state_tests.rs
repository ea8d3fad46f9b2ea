//! The state machine without a cluster: objects in, actions out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferrolb_crds::IPAddressPool;
use ferrolb_crds::contract::annotation::ALLOW_SHARED_IP;
use ferrolb_crds::contract::field_manager;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::{Action, State};
use crate::ipam::ServiceKey;

fn now() -> Timestamp {
    "2026-11-22T12:00:00Z".parse().unwrap()
}

fn pool(name: &str, addresses: &[&str]) -> IPAddressPool {
    serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "generation": 1,
                     "creationTimestamp": "2026-11-22T10:00:00Z"},
        "spec": {"addresses": addresses},
    }))
    .unwrap()
}

fn service(name: &str, created: &str, rv: u64, status_ips: &[&str]) -> Service {
    let ingress: Vec<Value> = status_ips
        .iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                     "resourceVersion": rv.to_string(), "creationTimestamp": created},
        "spec": {"type": "LoadBalancer", "clusterIP": "198.18.0.9", "ipFamilies": ["IPv4"],
                 "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": ingress}},
    }))
    .unwrap()
}

fn writes(actions: &[Action]) -> Vec<(String, Vec<String>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ApplyService { key, body } => Some((
                key.name.clone(),
                serde_json::from_str::<Value>(body).unwrap(),
            )),
            _ => None,
        })
        .map(|(name, body)| {
            (
                name,
                body["status"]["loadBalancer"]["ingress"]
                    .as_array()
                    .map(|i| {
                        i.iter()
                            .map(|e| e["ip"].as_str().unwrap().to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// The object the apiserver would return for an apply of `body` onto `svc`.
fn applied(svc: &Service, body: &Value, rv: u64) -> Service {
    let mut v = serde_json::to_value(svc).unwrap();
    v["status"] = body["status"].clone();
    if let Some(a) = body["metadata"].get("annotations") {
        v["metadata"]["annotations"] = a.clone();
    }
    v["metadata"]["resourceVersion"] = json!(rv.to_string());
    v["metadata"]["managedFields"] = json!([{"manager": field_manager::CONTROLLER}]);
    serde_json::from_value(v).unwrap()
}

fn started(pools: Vec<IPAddressPool>, services: &[Service]) -> State {
    let mut s = State::new(None);
    for p in pools {
        s.pool_applied(p, now());
    }
    s.namespace_applied("ns", BTreeMap::new(), now());
    for svc in services {
        s.service_applied(svc, now());
    }
    s.start(now());
    s
}

/// Started with one Service and one pool of two addresses.
fn started_with_two_addresses(svc: &Service) -> State {
    started(
        vec![pool("p", &["203.0.113.10/31"])],
        std::slice::from_ref(svc),
    )
}

#[test]
fn nothing_is_decided_before_the_caches_are_synced() {
    let mut s = State::new(None);
    s.pool_applied(pool("p", &["203.0.113.10/31"]), now());
    s.service_applied(&service("a", "2026-11-22T11:00:00Z", 1, &[]), now());
    assert!(s.take_actions(now()).is_empty());
    assert!(!s.started());
}

#[test]
fn start_reclaims_status_addresses_before_serving_older_pending_services() {
    // "pending" is older than "holder", but "holder"'s status already shows .10.
    let pending = service("pending", "2026-11-22T10:30:00Z", 1, &[]);
    let holder = service("holder", "2026-11-22T11:00:00Z", 2, &["203.0.113.10"]);
    let mut s = started(vec![pool("p", &["203.0.113.10/31"])], &[pending, holder]);
    let w = writes(&s.take_actions(now()));
    // The holder's status already shows its address (only the annotation/condition are
    // missing); the pending Service gets the other one.
    assert!(
        w.contains(&("pending".into(), vec!["203.0.113.11".into()])),
        "{w:?}"
    );
    assert!(
        w.contains(&("holder".into(), vec!["203.0.113.10".into()])),
        "{w:?}"
    );
}

#[test]
fn a_converged_service_is_not_written_and_one_write_is_in_flight_per_object() {
    let svc = service("a", "2026-11-22T11:00:00Z", 1, &[]);
    let mut s = started_with_two_addresses(&svc);
    let actions = s.take_actions(now());
    let body = match actions
        .iter()
        .find(|a| matches!(a, Action::ApplyService { .. }))
    {
        Some(Action::ApplyService { body, .. }) => serde_json::from_str::<Value>(body).unwrap(),
        _ => panic!("no write: {actions:?}"),
    };
    // Another event for the same object while the write is in flight: no second write.
    let mut labelled = svc.clone();
    labelled.metadata.labels = Some(BTreeMap::from([("x".into(), "y".into())]));
    labelled.metadata.resource_version = Some("2".into());
    s.service_applied(&labelled, now());
    assert!(writes(&s.take_actions(now())).is_empty());
    // The write returns the converged object: nothing more to write.
    let result = applied(&labelled, &body, 3);
    s.write_done(
        &ServiceKey::new("ns", "a"),
        Some(&result),
        now(),
        Instant::now(),
    );
    assert!(writes(&s.take_actions(now())).is_empty());
    // The watch echo of our own write changes nothing either; an older event is ignored.
    s.service_applied(&result, now());
    s.service_applied(&labelled, now());
    assert!(writes(&s.take_actions(now())).is_empty());
}

#[test]
fn a_failed_write_is_retried() {
    let svc = service("a", "2026-11-22T11:00:00Z", 1, &[]);
    let mut s = started_with_two_addresses(&svc);
    assert_eq!(writes(&s.take_actions(now())).len(), 1);
    let failed_at = Instant::now();
    s.write_done(&ServiceKey::new("ns", "a"), None, now(), failed_at);
    assert!(writes(&s.take_actions(now())).is_empty());
    // Tried again after the first backoff, not before.
    let due = failed_at + Duration::from_millis(500);
    assert_eq!(s.next_retry(), Some(due));
    assert_eq!(s.retry_due(due - Duration::from_millis(1)), 0);
    assert!(writes(&s.take_actions(now())).is_empty());
    assert_eq!(s.retry_due(due), 1);
    assert_eq!(s.next_retry(), None);
    assert_eq!(
        writes(&s.take_actions(now())),
        vec![("a".to_string(), vec!["203.0.113.10".to_string()])]
    );
}

#[test]
fn write_failures_in_a_row_back_off_longer_and_are_forgotten_with_the_service() {
    let svc = service("a", "2026-11-22T11:00:00Z", 1, &[]);
    let key = ServiceKey::new("ns", "a");
    let mut s = started_with_two_addresses(&svc);
    let ms = Duration::from_millis;
    let t0 = Instant::now();
    assert_eq!(writes(&s.take_actions(now())).len(), 1);
    s.write_done(&key, None, now(), t0);
    assert_eq!(s.next_retry(), Some(t0 + ms(500)));
    assert_eq!(s.retry_due(t0 + ms(500)), 1);
    assert_eq!(writes(&s.take_actions(now())).len(), 1);
    s.write_done(&key, None, now(), t0 + ms(500));
    assert_eq!(s.next_retry(), Some(t0 + ms(1500)), "second failure: 1 s");

    // Deleted with a retry pending: the retry writes nothing, and a Service of the same name
    // created later starts from the shortest delay.
    s.service_deleted(&key, now());
    assert_eq!(s.retry_due(t0 + ms(1500)), 1);
    assert!(writes(&s.take_actions(now())).is_empty());
    let mut again = service("a", "2026-11-22T12:00:00Z", 5, &[]);
    again.metadata.uid = Some("uid-a-2".into());
    s.service_applied(&again, now());
    assert_eq!(writes(&s.take_actions(now())).len(), 1);
    let t1 = t0 + ms(2000);
    s.write_done(&key, None, now(), t1);
    assert_eq!(
        s.next_retry(),
        Some(t1 + ms(500)),
        "a new Service, a new count"
    );

    // Deleted while its write is in flight: a failed result schedules nothing.
    assert_eq!(s.retry_due(t1 + ms(500)), 1);
    assert_eq!(writes(&s.take_actions(now())).len(), 1);
    s.service_deleted(&key, now());
    s.write_done(&key, None, now(), t1 + ms(600));
    assert_eq!(s.next_retry(), None);
}

#[test]
fn foreign_status_of_unhandled_services_is_never_touched() {
    let mut other = service("other", "2026-11-22T11:00:00Z", 1, &["192.0.2.1"]);
    other.spec.as_mut().unwrap().load_balancer_class = Some("example.com/lb".into());
    let mut s = started(vec![pool("p", &["203.0.113.10/31"])], &[other]);
    assert!(writes(&s.take_actions(now())).is_empty());
}

#[test]
fn pool_status_is_written_on_flush_once_per_burst() {
    let services: Vec<Service> = (0..5)
        .map(|i| service(&format!("s{i}"), "2026-11-22T11:00:00Z", i + 1, &[]))
        .collect();
    let mut s = started(vec![pool("p", &["203.0.113.0/28"])], &services);
    let actions = s.take_actions(now());
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::ApplyPool { .. }))
    );
    s.flush_pools(now());
    let pools: Vec<Value> = s
        .take_actions(now())
        .into_iter()
        .filter_map(|a| match a {
            Action::ApplyPool { body, .. } => Some(serde_json::from_str(&body).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0]["status"]["assignedIPv4"], 5);
    assert_eq!(pools[0]["status"]["availableIPv4"], 11);
    // In flight: a second flush does not write again.
    s.flush_pools(now());
    assert!(s.take_actions(now()).is_empty());
}

#[test]
fn a_deleted_holder_serves_the_oldest_waiter() {
    let a = service("a", "2026-11-22T10:00:00Z", 1, &[]);
    let b = service("b", "2026-11-22T10:01:00Z", 2, &[]);
    let c = service("c", "2026-11-22T10:02:00Z", 3, &[]);
    let mut s = started(vec![pool("p", &["203.0.113.10/32"])], &[a, b, c]);
    s.take_actions(now());
    assert_eq!(s.waiting(), 2);
    s.service_deleted(&ServiceKey::new("ns", "a"), now());
    let key = ServiceKey::new("ns", "b");
    assert_eq!(
        s.allocator().assignment(&key).map(|a| a.ips[0].to_string()),
        Some("203.0.113.10".into())
    );
    assert_eq!(s.waiting(), 1);
}

fn keyed(name: &str, created: &str, rv: u64, port: i32) -> Service {
    let mut svc = service(name, created, rv, &[]);
    svc.metadata.annotations = Some(BTreeMap::from([(
        ALLOW_SHARED_IP.to_string(),
        "k".to_string(),
    )]));
    svc.spec.as_mut().unwrap().ports = Some(vec![k8s_openapi::api::core::v1::ServicePort {
        port,
        ..Default::default()
    }]);
    svc
}

fn holds(s: &State, name: &str) -> Option<String> {
    s.allocator()
        .assignment(&ServiceKey::new("ns", name))
        .map(|a| a.ips[0].to_string())
}

#[test]
fn waiters_of_a_key_join_when_a_colliding_user_leaves() {
    // a (k, 80) holds the only address; b (k, 80) collides and waits.
    let a = keyed("a", "2026-11-22T10:00:00Z", 1, 80);
    let c = keyed("c", "2026-11-22T10:01:00Z", 2, 443);
    let b = keyed("b", "2026-11-22T10:02:00Z", 3, 80);
    let mut s = started(vec![pool("p", &["203.0.113.10/32"])], &[a, c, b]);
    assert_eq!(holds(&s, "c").as_deref(), Some("203.0.113.10"));
    assert_eq!(holds(&s, "b"), None);
    // a leaves: nothing is freed (c still uses the address), but b now fits next to c.
    s.service_deleted(&ServiceKey::new("ns", "a"), now());
    assert_eq!(holds(&s, "b").as_deref(), Some("203.0.113.10"));
}

#[test]
fn a_freed_address_taken_by_a_keyed_waiter_lets_its_key_join() {
    let p = service("p", "2026-11-22T10:00:00Z", 1, &[]);
    let d = keyed("d", "2026-11-22T10:01:00Z", 2, 80);
    let e = keyed("e", "2026-11-22T10:02:00Z", 3, 443);
    let mut s = started(vec![pool("pool", &["203.0.113.10/32"])], &[p, d, e]);
    assert_eq!(s.waiting(), 2);
    s.service_deleted(&ServiceKey::new("ns", "p"), now());
    assert_eq!(holds(&s, "d").as_deref(), Some("203.0.113.10"));
    assert_eq!(holds(&s, "e").as_deref(), Some("203.0.113.10"));
    assert_eq!(s.waiting(), 0);
}

#[test]
fn a_burst_hands_out_a_window_of_writes_and_the_next_as_each_returns() {
    use super::writes::WINDOW;
    let services: Vec<Service> = (0..WINDOW + 3)
        .map(|i| service(&format!("s{i:04}"), "2026-11-22T11:00:00Z", 1, &[]))
        .collect();
    let mut s = started(vec![pool("p", &["198.19.0.0/20"])], &services);
    let first = writes(&s.take_actions(now()));
    assert_eq!(
        first.len(),
        WINDOW,
        "bodies are built only for a window of writes"
    );
    assert!(writes(&s.take_actions(now())).is_empty());
    // One write returns: one more is handed out, with the address allocated at start.
    let done = ServiceKey::new("ns", first[0].0.clone());
    s.write_done(&done, None, now(), Instant::now());
    let next = writes(&s.take_actions(now()));
    assert_eq!(next.len(), 1);
    assert!(!first.iter().any(|(name, _)| *name == next[0].0));
    assert_eq!(next[0].1.len(), 1, "{next:?}");
}

fn pool_writes(actions: Vec<Action>) -> Vec<String> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::ApplyPool { name, .. } => Some(name),
            _ => None,
        })
        .collect()
}

#[test]
fn while_service_writes_wait_pools_are_written_one_at_a_time_in_turn() {
    use super::writes::WINDOW;
    // More Services than the window, spread over five pools.
    let services: Vec<Service> = (0..WINDOW + 30)
        .map(|i| {
            let mut svc = service(&format!("s{i:04}"), "2026-11-22T11:00:00Z", 1, &[]);
            svc.metadata.annotations = Some(BTreeMap::from([(
                ferrolb_crds::contract::annotation::ADDRESS_POOL.to_string(),
                format!("p{}", i % 5),
            )]));
            svc
        })
        .collect();
    let pools = (0..5)
        .map(|i| pool(&format!("p{i}"), &[&format!("198.19.{}.0/22", 4 * i)]))
        .collect();
    let mut s = started(pools, &services);
    s.take_actions(now());
    let mut written = Vec::new();
    for _ in 0..2 {
        s.flush_pools(now());
        let out = pool_writes(s.take_actions(now()));
        assert_eq!(out.len(), 1, "one pool write while Services wait: {out:?}");
        s.flush_pools(now());
        assert!(
            pool_writes(s.take_actions(now())).is_empty(),
            "still in flight"
        );
        s.pool_write_done(&out[0], None, true);
        written.extend(out);
    }
    assert_eq!(written, ["p0", "p1"], "in turn");
    // The burst drains: with no Service write waiting, the other pools are due at once.
    let mut out = Vec::new();
    for i in 0..WINDOW + 30 {
        let key = ServiceKey::new("ns", format!("s{i:04}"));
        s.write_done(&key, None, now(), Instant::now());
        out.extend(pool_writes(s.take_actions(now())));
    }
    s.flush_pools(now());
    out.extend(pool_writes(s.take_actions(now())));
    assert_eq!(out, ["p2", "p3", "p4"]);
}
