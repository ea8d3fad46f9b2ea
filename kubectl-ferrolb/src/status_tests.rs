use serde_json::json;

use ferrolb_crds::contract::reason;
use ferrolb_crds::membership_view::MembershipView;

use super::*;

fn pool(name: &str, status: serde_json::Value) -> IPAddressPool {
    serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": name}, "spec": {"addresses": ["198.51.100.0/24"]}, "status": status,
    }))
    .unwrap()
}

fn service(name: &str, type_: &str, ips: &[&str], conditions: serde_json::Value) -> Service {
    let ingress: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop",
                     "annotations": {(ALLOCATED_FROM_POOL): "lan"}},
        "spec": {"type": type_},
        "status": {"loadBalancer": {"ingress": ingress}, "conditions": conditions},
    }))
    .unwrap()
}

fn facts() -> StatusFacts {
    StatusFacts {
        controller: ControllerFact {
            lease: "ferrolb-system/ferrolb-controller".into(),
            lease_found: true,
            leader: Some("c".into()),
            live: true,
            renewed: None,
        },
        speakers: vec![],
        pools: vec![
            pool(
                "lan",
                json!({"assignedIPv4": 2, "availableIPv4": 252, "assignedIPv6": 0, "availableIPv6": 0,
                               "conditions": [{"type": POOL_EXHAUSTED, "status": "False", "reason": reason::POOL_ADDRESSES_FREE,
                                               "message": "", "lastTransitionTime": "2026-12-05T06:00:00Z"}]}),
            ),
            pool(
                "full",
                json!({"assignedIPv4": 8, "availableIPv4": 0, "assignedIPv6": 0, "availableIPv6": 0,
                                "conditions": [{"type": POOL_EXHAUSTED, "status": "True", "reason": reason::POOL_NO_FREE_ADDRESS,
                                                "message": "every address is held", "lastTransitionTime": "2026-12-05T06:00:00Z"}]}),
            ),
        ],
        services: vec![
            service(
                "web",
                "LoadBalancer",
                &["198.51.100.200"],
                json!([
                {"type": ANNOUNCED, "status": "True", "reason": reason::ANNOUNCED,
                 "message": "node1 announces 198.51.100.200 on eth0", "lastTransitionTime": "2026-12-05T06:00:00Z"}]),
            ),
            service("db", "ClusterIP", &[], json!([])),
            service(
                "queue",
                "LoadBalancer",
                &[],
                json!([
                {"type": IP_ALLOCATED, "status": "False", "reason": reason::POOL_EXHAUSTED,
                 "message": "no free address", "lastTransitionTime": "2026-12-05T06:01:00Z"}]),
            ),
        ],
    }
}

#[test]
fn pools_show_use_per_family_and_what_is_wrong() {
    let s = status(&facts());
    assert_eq!(s.pools[0].name, "full", "sorted by name");
    assert_eq!(s.pools[0].ipv4, Usage { used: 8, free: 0 });
    assert_eq!(
        s.pools[0].problems,
        ["NoFreeAddress: every address is held"]
    );
    assert_eq!(s.pools[1].ipv4, Usage { used: 2, free: 252 });
    assert!(s.pools[1].problems.is_empty());
    let unread = status(&StatusFacts {
        pools: vec![pool("new", json!(null))],
        ..facts()
    });
    assert!(unread.pools[0].problems[0].contains("controller has not read"));
}

#[test]
fn services_show_who_announces_since_when_or_why_not() {
    let s = status(&facts());
    let names: Vec<&str> = s.services.iter().map(|l| l.service.as_str()).collect();
    assert_eq!(
        names,
        ["shop/queue", "shop/web"],
        "LoadBalancer Services only, sorted"
    );
    let web = &s.services[1];
    assert!(web.serving);
    assert_eq!(web.announced, "node1 announces 198.51.100.200 on eth0");
    assert_eq!(web.since.as_deref(), Some("2026-12-05T06:00:00Z"));
    assert_eq!(web.pool.as_deref(), Some("lan"));
    let queue = &s.services[0];
    assert!(!queue.serving);
    assert_eq!(queue.announced, "no address: no free address");
    assert!(!s.healthy());
}

#[test]
fn the_json_form_names_every_field() {
    let s = status(&facts());
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["controller"]["leader"], "c");
    assert_eq!(v["pools"][1]["ipv4"]["free"], 252);
    assert_eq!(
        v["services"][1]["announced"],
        "node1 announces 198.51.100.200 on eth0"
    );
}

#[test]
fn healthy_needs_a_leader_ready_speakers_and_every_service_served() {
    let mut f = facts();
    f.services
        .retain(|s| s.metadata.name.as_deref() != Some("queue"));
    f.speakers = vec![SpeakerFact {
        pod: "p".into(),
        node: "node1".into(),
        ready: true,
        state: "Running".into(),
        membership: None,
        membership_error: None,
    }];
    assert!(status(&f).healthy());
    let no_speakers = StatusFacts {
        speakers: vec![],
        ..f.clone()
    };
    assert!(
        !status(&no_speakers).healthy(),
        "no speaker pod: nobody can announce"
    );
    let mut no_leader = f.clone();
    no_leader.controller.live = false;
    assert!(!status(&no_leader).healthy());
    f.speakers[0].ready = false;
    assert!(!status(&f).healthy());
}

fn speaker_seeing(node: &str, live: &[&str], source: ViewSource) -> SpeakerFact {
    SpeakerFact {
        pod: format!("ferrolb-speaker-{node}"),
        node: node.into(),
        ready: true,
        state: "Running".into(),
        membership: Some(MembershipView {
            node: node.into(),
            source,
            live: live.iter().map(|n| n.to_string()).collect(),
        }),
        membership_error: None,
    }
}

#[test]
fn speakers_that_agree_are_no_problem_and_unread_views_are_left_out() {
    let all = ["node1", "node2", "node3"];
    let mut speakers: Vec<SpeakerFact> = all
        .iter()
        .map(|n| speaker_seeing(n, &all, ViewSource::Mesh))
        .collect();
    speakers[2].membership = None;
    speakers[2].membership_error = Some("not allowed to get pods/proxy".into());
    assert_eq!(membership_problems(&speakers), Vec::<String>::new());
}

#[test]
fn a_split_view_names_who_sees_what_and_makes_status_unhealthy() {
    let speakers = vec![
        speaker_seeing("node1", &["node1", "node2", "node3"], ViewSource::Mesh),
        speaker_seeing("node2", &["node1", "node2", "node3"], ViewSource::Mesh),
        speaker_seeing("node3", &["node2", "node3"], ViewSource::Mesh),
    ];
    let problems = membership_problems(&speakers);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(
            "split view: the speakers disagree about who is alive (node1, node2 see node1, node2, node3; node3 see node2, node3)"
        ),
        "{}",
        problems[0]
    );
    let mut f = facts();
    f.services
        .retain(|s| s.metadata.name.as_deref() != Some("queue"));
    f.speakers = speakers;
    let s = status(&f);
    assert_eq!(s.membership_problems, problems);
    assert!(!s.healthy());
}

#[test]
fn a_speaker_on_the_node_fallback_is_named() {
    let speakers = vec![
        speaker_seeing("node1", &["node1", "node2"], ViewSource::NodeFallback),
        speaker_seeing("node2", &["node1", "node2"], ViewSource::Mesh),
    ];
    let problems = membership_problems(&speakers);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("the speaker on node1 hears no heartbeat"),
        "{}",
        problems[0]
    );
}
