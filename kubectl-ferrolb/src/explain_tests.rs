use serde_json::{Value, json};

use ferrolb_crds::contract::annotation::{ADDRESS_POOL, ALLOW_SHARED_IP};
use ferrolb_crds::contract::label::{EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS, SERVICE_NAME};

use super::*;

fn svc(spec: Value, conditions: Value, ips: &[&str]) -> Service {
    let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": ingress}, "conditions": conditions},
    }))
    .unwrap()
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2026-12-05T06:00:00Z"})
}

fn live_controller() -> ControllerFact {
    ControllerFact {
        lease: "ferrolb-system/ferrolb-controller".into(),
        lease_found: true,
        leader: Some("ferrolb-controller-7d9".into()),
        live: true,
        renewed: None,
    }
}

fn speaker(node: &str, ready: bool) -> SpeakerFact {
    SpeakerFact {
        pod: format!("ferrolb-speaker-{node}"),
        node: node.into(),
        ready,
        state: "Running".into(),
        membership: None,
        membership_error: None,
    }
}

fn facts(service: Service) -> ServiceFacts {
    ServiceFacts {
        service,
        warnings: Vec::new(),
        controller: live_controller(),
        speakers: vec![speaker("node1", true), speaker("node2", true)],
        ferrolb_namespace: "ferrolb-system".into(),
    }
}

fn lb() -> Value {
    json!({"type": "LoadBalancer"})
}

#[test]
fn a_served_service_says_where_from_and_who_answers() {
    let e = explain(&facts(svc(
        lb(),
        json!([
            condition(
                IP_ALLOCATED,
                "True",
                reason::ALLOCATED,
                "198.51.100.200 from pool lan"
            ),
            condition(
                ANNOUNCED,
                "True",
                reason::ANNOUNCED,
                "node2 announces 198.51.100.200 on eth0"
            ),
        ]),
        &["198.51.100.200"],
    )));
    assert_eq!(e.verdict, Verdict::Serving);
    assert_eq!(
        e.findings
            .iter()
            .map(|f| f.sentence.as_str())
            .collect::<Vec<_>>(),
        [
            "Service shop/web has 198.51.100.200 (198.51.100.200 from pool lan, since 2026-12-05T06:00:00Z).",
            "Who answers: node2 announces 198.51.100.200 on eth0 (since 2026-12-05T06:00:00Z).",
        ]
    );
    assert!(e.findings.iter().all(|f| f.ok));
}

#[test]
fn a_service_of_another_type_is_told_to_become_a_load_balancer() {
    let e = explain(&facts(svc(json!({"type": "NodePort"}), json!([]), &[])));
    assert_eq!(e.verdict, Verdict::NotALoadBalancer);
    assert!(e.findings[0].sentence.contains("is of type NodePort"));
    assert!(e.findings[0].fixes[0].contains("kubectl patch service web -n shop"));
}

#[test]
fn another_class_is_left_to_another_implementation() {
    let e = explain(&facts(svc(
        json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/other"}),
        json!([]),
        &[],
    )));
    assert_eq!(e.verdict, Verdict::OtherClass);
    assert!(
        e.findings[0]
            .sentence
            .contains("spec.loadBalancerClass example.com/other")
    );
    assert!(
        e.findings[0]
            .fixes
            .iter()
            .any(|f| f.contains("--lb-class example.com/other"))
    );
}

#[test]
fn no_condition_and_no_live_leader_blames_the_missing_controller() {
    let mut f = facts(svc(lb(), json!([]), &[]));
    f.controller = ControllerFact {
        lease: "ferrolb-system/ferrolb-controller".into(),
        ..ControllerFact::default()
    };
    let e = explain(&f);
    assert_eq!(e.verdict, Verdict::NoAddress);
    assert!(
        e.findings[0].sentence.contains("no ferrolb controller is running (Lease ferrolb-system/ferrolb-controller does not exist)"),
        "{}",
        e.findings[0].sentence
    );
    // With a live leader: not handled yet.
    let e = explain(&facts(svc(lb(), json!([]), &[])));
    assert!(
        e.findings[0]
            .sentence
            .contains("ferrolb-controller-7d9, the leader")
    );
}

#[test]
fn each_allocation_failure_keeps_the_controllers_words_and_adds_its_fix() {
    let cases: [(&str, &str); 9] = [
        (
            reason::POOL_EXHAUSTED,
            "add addresses to the pool's spec.addresses",
        ),
        (
            reason::NO_POOL_MATCHES,
            "widen a pool's spec.serviceAllocation",
        ),
        (reason::NO_POOL, "create an IPAddressPool"),
        (
            reason::POOL_NOT_FOUND,
            &format!("correct the annotation {ADDRESS_POOL}"),
        ),
        (reason::IP_IN_USE, ALLOW_SHARED_IP),
        (reason::PORT_COLLISION, "different ports"),
        (reason::NOT_IN_ANY_POOL, "add the address to a pool"),
        (reason::INELIGIBLE_IP, "avoidBuggyIPs: false"),
        (reason::INVALID_REQUEST, "correct the request"),
    ];
    for (why, fix) in cases {
        let e = explain(&facts(svc(
            lb(),
            json!([condition(
                IP_ALLOCATED,
                "False",
                why,
                "the controller's words."
            )]),
            &[],
        )));
        assert_eq!(e.verdict, Verdict::NoAddress, "{why}");
        assert_eq!(
            e.findings[0].sentence,
            format!(
                "Service shop/web has no EXTERNAL-IP: the controller's words ({why}, since 2026-12-05T06:00:00Z)."
            )
        );
        assert!(
            e.findings[0].fixes.iter().any(|f| f.contains(fix)),
            "{why}: {:?}",
            e.findings[0].fixes
        );
        assert!(
            e.findings[0]
                .fixes
                .iter()
                .any(|f| f.contains("kubectl describe service web -n shop"))
        );
    }
}

#[test]
fn an_unannounced_service_gets_the_fix_for_each_cause_named() {
    let cases: [(&str, &str); 5] = [
        (
            "nobody announces 198.51.100.200: no node may announce: no L2Advertisement selects IPAddressPool lan (add one naming it in spec.ipAddressPools), and no BGPAdvertisement announces it from a node with a BGPPeer",
            "spec.ipAddressPools: [lan]",
        ),
        (
            "nobody announces 198.51.100.200: no node may announce: externalTrafficPolicy is Local and the node has no ready endpoint",
            &format!("kubectl get endpointslices -n shop -l {SERVICE_NAME}=web"),
        ),
        (
            &format!(
                "nobody announces 198.51.100.200: no node may announce: node1: the node has the label {EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS}; node2: the node's NetworkUnavailable condition is True"
            ),
            &format!("kubectl label node <node> {EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS}-"),
        ),
        (
            "nobody announces 198.51.100.200: no node may announce: no L2Advertisement of the pool selects the node (spec.nodeSelectors)",
            "widen the advertisement's spec.nodeSelectors",
        ),
        (
            "nobody announces 198.51.100.200: no live speaker runs on a known Node",
            "get pods -l app.kubernetes.io/component=speaker",
        ),
    ];
    for (message, fix) in cases {
        let e = explain(&facts(svc(
            lb(),
            json!([
                condition(
                    IP_ALLOCATED,
                    "True",
                    reason::ALLOCATED,
                    "198.51.100.200 from pool lan"
                ),
                condition(ANNOUNCED, "False", reason::NOT_ANNOUNCED, message),
            ]),
            &["198.51.100.200"],
        )));
        assert_eq!(e.verdict, Verdict::NotAnnounced);
        let f = &e.findings[1];
        assert!(
            f.sentence
                .starts_with("Nobody announces 198.51.100.200: no"),
            "{}",
            f.sentence
        );
        assert!(
            !f.sentence.contains("nobody announces"),
            "said once: {}",
            f.sentence
        );
        assert!(
            f.fixes.iter().any(|x| x.contains(fix)),
            "{message}: {:?}",
            f.fixes
        );
    }
}

#[test]
fn no_report_blames_the_speakers_when_none_is_ready() {
    let allocated = json!([condition(
        IP_ALLOCATED,
        "True",
        reason::ALLOCATED,
        "from pool lan"
    )]);
    let mut f = facts(svc(lb(), allocated.clone(), &["198.51.100.200"]));
    f.speakers = vec![speaker("node1", false)];
    let e = explain(&f);
    assert_eq!(e.verdict, Verdict::NotAnnounced);
    assert!(
        e.findings[1]
            .sentence
            .contains("no speaker pod is ready (1 speaker pods in ferrolb-system)")
    );
    let e = explain(&facts(svc(lb(), allocated, &["198.51.100.200"])));
    assert!(e.findings[1].sentence.contains("2 of 2 speaker pods ready"));
}

#[test]
fn recent_warnings_are_listed_newest_first_up_to_five() {
    let mut f = facts(svc(
        lb(),
        json!([condition(
            IP_ALLOCATED,
            "False",
            reason::POOL_EXHAUSTED,
            "no free address"
        )]),
        &[],
    ));
    f.warnings = (0..7)
        .map(|i| EventFact {
            type_: "Warning".into(),
            reason: reason::ALLOCATION_FAILED.into(),
            message: format!("try {i}"),
            source: "ferrolb-controller".into(),
            count: 1,
            last: format!("t{i}"),
        })
        .collect();
    let e = explain(&f);
    assert_eq!(e.findings.len(), 1 + 5);
    assert_eq!(
        e.findings[1].sentence,
        "Warning AllocationFailed from ferrolb-controller (1x, last t0): try 0"
    );
}

#[test]
fn a_warning_that_repeats_the_condition_is_left_out() {
    let mut f = facts(svc(
        lb(),
        json!([condition(
            IP_ALLOCATED,
            "False",
            reason::POOL_EXHAUSTED,
            "no free address."
        )]),
        &[],
    ));
    let warning = |message: &str| EventFact {
        type_: "Warning".into(),
        reason: reason::ALLOCATION_FAILED.into(),
        message: message.into(),
        source: "ferrolb-controller".into(),
        count: 2,
        last: "t".into(),
    };
    f.warnings = vec![warning("no free address"), warning("something else")];
    let e = explain(&f);
    assert_eq!(e.findings.len(), 2);
    assert!(e.findings[1].sentence.ends_with(": something else"));
}
