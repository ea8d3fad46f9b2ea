//! The chart's secured /metrics: HTTPS ports on both components, a certificate Secret when given,
//! and PodMonitors that scrape with the chart's token.

use serde_json::{Value, json};

use crate::{controller_doc, render, speaker_doc, strings, the_container_of_the_chart_image};

fn pod(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

fn port_named<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no port {name} in {container}"))
}

#[test]
fn both_components_serve_https_metrics_on_a_port_named_metrics() {
    let docs = render("ferrolb", "lb-system", &[]);
    for (workload, port) in [
        (controller_doc(&docs, "Deployment"), 9120),
        (speaker_doc(&docs, "DaemonSet"), 9121),
    ] {
        let c = the_container_of_the_chart_image(pod(workload));
        assert_eq!(port_named(c, "metrics")["containerPort"], port);
        assert!(strings(&c["args"]).contains(&format!("--secure-metrics-addr=0.0.0.0:{port}")));
        // The probes stay on the plain port.
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "monitoring");
        assert!(
            !strings(&c["args"])
                .iter()
                .any(|a| a.starts_with("--metrics-tls")),
            "self-signed unless metrics.tlsSecret is set"
        );
    }
    let docs = render("ferrolb", "lb-system", &["metrics.secure=false"]);
    for workload in [
        controller_doc(&docs, "Deployment"),
        speaker_doc(&docs, "DaemonSet"),
    ] {
        let c = the_container_of_the_chart_image(pod(workload));
        assert!(
            !strings(&c["args"])
                .iter()
                .any(|a| a.contains("secure-metrics"))
        );
        assert!(
            !c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "metrics")
        );
    }
}

#[test]
fn a_tls_secret_is_mounted_read_only_and_passed_as_files() {
    let docs = render(
        "ferrolb",
        "lb-system",
        &["metrics.tlsSecret=ferrolb-metrics-tls"],
    );
    for workload in [
        controller_doc(&docs, "Deployment"),
        speaker_doc(&docs, "DaemonSet"),
    ] {
        let pod = pod(workload);
        let c = the_container_of_the_chart_image(pod);
        let args = strings(&c["args"]);
        assert!(args.contains(&"--metrics-tls-cert-file=/etc/ferrolb/metrics-tls/tls.crt".into()));
        assert!(args.contains(&"--metrics-tls-key-file=/etc/ferrolb/metrics-tls/tls.key".into()));
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "metrics-tls")
            .expect("mounted");
        assert_eq!(mount["readOnly"], true);
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "metrics-tls")
            .expect("a volume");
        assert_eq!(volume["secret"]["secretName"], "ferrolb-metrics-tls");
        assert_eq!(volume["secret"]["defaultMode"], 256);
    }
}

#[test]
fn pod_monitors_scrape_each_component_over_https_with_the_scraper_token() {
    let docs = render("ferrolb", "lb-system", &[]);
    assert!(
        !docs.iter().any(|d| d["kind"] == "PodMonitor"),
        "off by default"
    );
    let docs = render(
        "ferrolb",
        "lb-system",
        &[
            "metrics.podMonitor.enabled=true",
            "metrics.podMonitor.labels.release=prom",
        ],
    );
    for (workload, monitor) in [
        (
            controller_doc(&docs, "Deployment"),
            controller_doc(&docs, "PodMonitor"),
        ),
        (
            speaker_doc(&docs, "DaemonSet"),
            speaker_doc(&docs, "PodMonitor"),
        ),
    ] {
        assert_eq!(
            monitor["spec"]["selector"]["matchLabels"],
            workload["spec"]["selector"]["matchLabels"]
        );
        assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
        assert_eq!(
            monitor["spec"]["namespaceSelector"],
            json!({"matchNames": ["lb-system"]})
        );
        let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
        assert_eq!(
            (&endpoint["port"], &endpoint["scheme"], &endpoint["path"]),
            (&json!("metrics"), &json!("https"), &json!("/metrics"))
        );
        assert_eq!(
            endpoint["authorization"],
            json!({"type": "Bearer", "credentials": {"name": "ferrolb-metrics-scraper", "key": "token"}})
        );
        assert_eq!(endpoint["tlsConfig"]["insecureSkipVerify"], true);
    }
    let secret = docs
        .iter()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == "ferrolb-metrics-scraper")
        .expect("the scraper token Secret");
    assert_eq!(secret["type"], "kubernetes.io/service-account-token");
    assert_eq!(
        secret["metadata"]["annotations"]["kubernetes.io/service-account.name"],
        "ferrolb-metrics-scraper"
    );
    let err = crate::rbac::render_chart(
        "ferrolb",
        "lb-system",
        &["metrics.podMonitor.enabled=true", "metrics.secure=false"],
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("metrics.podMonitor needs metrics.secure"),
        "{err:#}"
    );
}

#[test]
fn the_prometheus_rule_and_the_dashboard_ship_the_charts_files() {
    let docs = render("ferrolb", "lb-system", &[]);
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "PrometheusRule" || d["kind"] == "ConfigMap"),
        "off by default"
    );
    let docs = render(
        "ferrolb",
        "lb-system",
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.labels.release=prom",
            "metrics.grafanaDashboard.enabled=true",
        ],
    );
    let files = ferrolb_tests::bins::workspace_root().join("charts/ferrolb/files");
    let rules: Value = serde_yaml::from_str(
        &std::fs::read_to_string(files.join("prometheus-rules.yaml")).unwrap(),
    )
    .unwrap();
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    assert_eq!(rule["metadata"]["namespace"], "lb-system");
    assert_eq!(rule["metadata"]["labels"]["release"], "prom");
    assert_eq!(rule["spec"]["groups"], rules["groups"]);
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(files.join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let map = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("the dashboard ConfigMap");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(map["data"]["ferrolb.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard);
}
