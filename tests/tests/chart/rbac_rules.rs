//! The rendered RBAC, rule by rule: least privilege for the controller and the speakers, and
//! cluster-scoped names that carry the release name.

use ferrolb_tests::rbac::CONTROLLER_LEASE;
use serde_json::{Value, json};

use crate::{controller_doc, render, speaker_doc, strings};

/// A policy rule as a comparable tuple: (apiGroups, resources, resourceNames, verbs), each sorted.
type Rule = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

/// A role's rules, sorted.
fn rules(role: &Value) -> Vec<Rule> {
    let sorted = |v: &Value| {
        let mut s = if v.is_null() { Vec::new() } else { strings(v) };
        s.sort();
        s
    };
    let mut out: Vec<_> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                sorted(&r["apiGroups"]),
                sorted(&r["resources"]),
                sorted(&r["resourceNames"]),
                sorted(&r["verbs"]),
            )
        })
        .collect();
    out.sort();
    out
}

fn rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> Rule {
    let v = |s: &[&str]| {
        let mut v: Vec<String> = s.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    (v(groups), v(resources), v(names), v(verbs))
}

/// What a component needs to check /metrics callers: TokenReview and SubjectAccessReview.
fn review_rules() -> [Rule; 2] {
    [
        rule(
            &["authentication.k8s.io"],
            &["tokenreviews"],
            &[],
            &["create"],
        ),
        rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
            &[],
            &["create"],
        ),
    ]
}

#[test]
fn without_secure_metrics_no_component_may_review_tokens() {
    let docs = render("plain", "lb-system", &["metrics.secure=false"]);
    for role in [
        controller_doc(&docs, "ClusterRole"),
        speaker_doc(&docs, "ClusterRole"),
    ] {
        for review in review_rules() {
            assert!(!rules(role).contains(&review), "{review:?}");
        }
    }
    assert!(
        !docs
            .iter()
            .any(|d| d["rules"].to_string().contains("nonResourceURLs")),
        "no metrics-reader ClusterRole without secure metrics"
    );
}

#[test]
fn the_metrics_reader_role_grants_get_on_metrics_only_and_binds_the_readers() {
    let docs = render("ferrolb", "lb-system", &[]);
    let reader = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "ferrolb-metrics-reader")
        .expect("the metrics-reader ClusterRole");
    assert_eq!(
        reader["rules"],
        json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])
    );
    assert!(
        !docs.iter().any(|d| d["kind"] == "ClusterRoleBinding"
            && d["metadata"]["name"] == "ferrolb-metrics-reader"),
        "nobody is bound without metrics.readers or a PodMonitor"
    );
    let docs = render(
        "ferrolb",
        "lb-system",
        &[
            "metrics.readers[0].name=prometheus-k8s",
            "metrics.readers[0].namespace=monitoring",
            "metrics.podMonitor.enabled=true",
        ],
    );
    let binding = docs
        .iter()
        .find(|d| {
            d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == "ferrolb-metrics-reader"
        })
        .expect("the metrics-reader binding");
    assert_eq!(
        binding["subjects"],
        json!([
            {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"},
            {"kind": "ServiceAccount", "name": "ferrolb-metrics-scraper", "namespace": "lb-system"},
        ])
    );
}

#[test]
fn rendered_rbac_is_exactly_the_least_privilege_rules() {
    let docs = render("rules", "lb-system", &[]);
    let mut want = vec![
        rule(&[""], &["services"], &[], &["get", "list", "watch"]),
        rule(&[""], &["services/status"], &[], &["patch", "update"]),
        rule(&[""], &["namespaces"], &[], &["get", "list", "watch"]),
        rule(
            &["ferrolb.io"],
            &["ipaddresspools"],
            &[],
            &["get", "list", "watch"],
        ),
        rule(
            &["ferrolb.io"],
            &["ipaddresspools/status"],
            &[],
            &["patch", "update"],
        ),
        rule(&["events.k8s.io"], &["events"], &[], &["create", "patch"]),
        rule(&[""], &["events"], &[], &["create", "patch"]),
    ];
    want.extend(review_rules());
    want.sort();
    assert_eq!(rules(controller_doc(&docs, "ClusterRole")), want);

    let role = controller_doc(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "lb-system");
    let mut want = vec![
        rule(&["coordination.k8s.io"], &["leases"], &[], &["create"]),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[CONTROLLER_LEASE],
            &["get", "update"],
        ),
    ];
    want.sort();
    assert_eq!(rules(role), want);

    // Bindings give exactly these roles to the controller's ServiceAccount in the release
    // namespace.
    let sa = controller_doc(&docs, "ServiceAccount")["metadata"]["name"].clone();
    for (binding, role) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        let b = controller_doc(&docs, binding);
        assert_eq!(b["roleRef"]["kind"], role);
        assert_eq!(
            b["roleRef"]["name"],
            controller_doc(&docs, role)["metadata"]["name"]
        );
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": sa, "namespace": "lb-system"}]),
            "{binding}"
        );
    }
}

#[test]
fn cluster_scoped_names_carry_the_release_name() {
    let a = render("alpha", "ns-a", &[]);
    let b = render("beta", "ns-b", &[]);
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        let name_a = controller_doc(&a, kind)["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let name_b = controller_doc(&b, kind)["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            name_a.contains("alpha") && name_b.contains("beta"),
            "{name_a} {name_b}"
        );
        assert_ne!(name_a, name_b);
    }
    // A release named after the chart is not doubled: `ferrolb-controller`.
    let plain = render("ferrolb", "lb-system", &[]);
    assert_eq!(
        controller_doc(&plain, "ClusterRole")["metadata"]["name"],
        "ferrolb-controller"
    );
}

#[test]
fn rendered_speaker_rbac_is_exactly_the_least_privilege_rules() {
    let docs = render("rules", "lb-system", &[]);
    let mut want = vec![
        rule(&[""], &["services"], &[], &["get", "list", "watch"]),
        rule(&[""], &["services/status"], &[], &["patch"]),
        rule(
            &["discovery.k8s.io"],
            &["endpointslices"],
            &[],
            &["get", "list", "watch"],
        ),
        rule(&[""], &["nodes"], &[], &["get", "list", "watch"]),
        rule(
            &["ferrolb.io"],
            &[
                "ipaddresspools",
                "l2advertisements",
                "bgppeers",
                "bgpadvertisements",
                "communities",
                "bfdprofiles",
            ],
            &[],
            &["get", "list", "watch"],
        ),
        rule(&["ferrolb.io"], &["bgppeers/status"], &[], &["patch"]),
        rule(&["events.k8s.io"], &["events"], &[], &["create"]),
        rule(&[""], &["events"], &[], &["create"]),
    ];
    want.extend(review_rules());
    want.sort();
    assert_eq!(rules(speaker_doc(&docs, "ClusterRole")), want);
    // In its own namespace: get Secrets by name (BGP passwords), nothing else.
    let role = speaker_doc(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "lb-system");
    assert_eq!(rules(role), vec![rule(&[""], &["secrets"], &[], &["get"])]);
    let role_binding = speaker_doc(&docs, "RoleBinding");
    assert_eq!(role_binding["roleRef"]["kind"], "Role");
    assert_eq!(
        role_binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "rules-ferrolb-speaker", "namespace": "lb-system"}])
    );
    let binding = speaker_doc(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(
        binding["roleRef"]["name"],
        speaker_doc(&docs, "ClusterRole")["metadata"]["name"]
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "rules-ferrolb-speaker", "namespace": "lb-system"}])
    );
    assert_ne!(
        binding["metadata"]["name"],
        controller_doc(&docs, "ClusterRoleBinding")["metadata"]["name"]
    );
}
