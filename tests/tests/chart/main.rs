//! The Helm chart: what `helm template` renders for the controller and the speakers, and their
//! RBAC on a real apiserver, checked both with `kubectl auth can-i` and with real requests under
//! tokens minted for the chart's ServiceAccounts.
//!
//! ```text
//!  controller      the controller's Deployment (args, hardening, probes) and metrics Service
//!  speaker         the speakers' DaemonSet and their memberlist key Secret
//!  manifests       deploy/ferrolb.yaml, the chart as plain manifests, on a real apiserver
//!  metrics         the secured /metrics: HTTPS ports, a TLS Secret, PodMonitors with a token,
//!                  the PrometheusRule and the dashboard ConfigMap
//!  values          values.schema.json: every value typed and described, wrong values refused
//!  rbac_rules      the rendered Roles and bindings, rule by rule
//!  rbac_apiserver  the same RBAC applied to a real apiserver: can-i and real requests
//! ```

mod controller;
mod manifests;
mod metrics;
mod rbac_apiserver;
mod rbac_rules;
mod speaker;
mod values;

use ferrolb_tests::rbac;
use serde_json::Value;

/// The rendered documents of the chart.
fn render(release: &str, namespace: &str, set: &[&str]) -> Vec<Value> {
    rbac::documents(&rbac::render_chart(release, namespace, set).unwrap()).unwrap()
}

/// The one document of `kind` labelled `app.kubernetes.io/component=<component>`.
fn component_doc<'a>(docs: &'a [Value], kind: &str, component: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            d["kind"] == kind && d["metadata"]["labels"]["app.kubernetes.io/component"] == component
        })
        .collect();
    assert_eq!(found.len(), 1, "one {component} {kind}: {found:#?}");
    found[0]
}

/// The one document of `kind` labelled component=controller.
fn controller_doc<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    component_doc(docs, kind, "controller")
}

/// The one document of `kind` labelled component=speaker.
fn speaker_doc<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    component_doc(docs, kind, "speaker")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn chart_app_version() -> String {
    let chart = std::fs::read_to_string(
        ferrolb_tests::bins::workspace_root().join("charts/ferrolb/Chart.yaml"),
    )
    .unwrap();
    let chart: Value = serde_yaml::from_str(&chart).unwrap();
    chart["appVersion"].as_str().unwrap().to_string()
}

/// Container `c` answers its liveness probe on `/healthz` and its readiness probe on `/readyz`,
/// both on its port named `monitoring`.
fn assert_probes_on_the_monitoring_port(c: &Value) {
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "monitoring");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "monitoring");
}

/// The one container of `pod` (a pod template's spec), running the chart's image at its
/// appVersion.
fn the_container_of_the_chart_image(pod: &Value) -> &Value {
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        c["image"],
        format!("ghcr.io/ferrolb/ferrolb:{}", chart_app_version())
    );
    c
}
