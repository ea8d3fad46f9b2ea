//! ferrolb's alert rules and Grafana dashboard (the chart's `files/`): `promtool` (built from
//! the Prometheus module) checks the rules and runs their unit tests, every alert has a test,
//! and every metric the rules and the dashboard query is one the real controller and speaker
//! export (their /metrics scraped on the lab).

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrolb_crds::contract::annotation::LOAD_BALANCER_IPS;
use ferrolb_crds::contract::reason;
use ferrolb_tests::bins::workspace_root;
use ferrolb_tests::l2lab::Rig;
use ferrolb_tests::process::run;
use ferrolb_tests::router::{NODE_ASN, ROUTER_ASN};
use serde_json::{Value, json};

fn rules_file() -> PathBuf {
    workspace_root().join("charts/ferrolb/files/prometheus-rules.yaml")
}

fn dashboard() -> Value {
    let path = workspace_root().join("charts/ferrolb/files/grafana-dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn alert_names() -> BTreeSet<String> {
    let rules: Value =
        serde_yaml::from_str(&std::fs::read_to_string(rules_file()).unwrap()).unwrap();
    rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| Some(r["alert"].as_str()?.to_string()))
        .collect()
}

/// Every `ferrolb_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("ferrolb_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn promtool_checks_the_rules_and_passes_every_alerts_test() -> Result<()> {
    let promtool = ferrolb_tests::prometheus::promtool()?;
    let checked = run(std::process::Command::new(&promtool)
        .args(["check", "rules"])
        .arg(rules_file()))?;
    eprintln!("{checked}");
    let tests = workspace_root().join("tests/prometheus/rules-test.yaml");
    let tested = run(std::process::Command::new(&promtool)
        .args(["test", "rules"])
        .arg(&tests))
    .context("promtool test rules")?;
    eprintln!("{tested}");
    // Every alert is exercised by a test case that expects it to fire.
    let cases = std::fs::read_to_string(&tests)?;
    let alerts = alert_names();
    assert!(alerts.len() >= 9, "{alerts:?}");
    for alert in &alerts {
        assert!(
            cases.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "no test case expects {alert} to fire"
        );
    }
    Ok(())
}

#[test]
fn the_dashboard_is_grafana_json_with_a_query_in_every_panel() {
    let d = dashboard();
    assert_eq!(d["uid"], "ferrolb");
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let ids: BTreeSet<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| e.contains("ferrolb_")),
                "{t}"
            );
            assert_eq!(t["datasource"]["uid"], "${datasource}");
        }
    }
}

/// The names a scrape of /metrics declares (`# TYPE name kind`), with the sample names each
/// kind adds (`_total` for counters, `_bucket`, `_sum`, `_count` for histograms).
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in scrape.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#") || words.next() != Some("TYPE") {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        out.insert(name.to_string());
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            _ => &[],
        };
        for s in suffixes {
            out.insert(format!("{name}{s}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_query_only_metrics_ferrolb_exports() -> Result<()> {
    let mut rig = Rig::start("alerts-metrics", 1, &[], false).await?;
    // A pool and a BGP peer, so the pool and BGP families have samples too (the families are
    // declared either way).
    rig.pool_and_advertisement("metrics", &["198.51.100.112/30"], json!({}))
        .await?;
    let peers: kube::Api<ferrolb_crds::BGPPeer> = kube::Api::all(rig.scenario.client.clone());
    let peer: ferrolb_crds::BGPPeer = serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "BGPPeer", "metadata": {"name": "nobody"},
        // Nothing listens there: the session only retries, which is all this needs.
        "spec": {"myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": "198.51.100.253"},
    }))?;
    peers
        .patch(
            "nobody",
            &kube::api::PatchParams::apply("ferrolb-tests").force(),
            &kube::api::Patch::Apply(&peer),
        )
        .await?;
    // A family shows in /metrics once it has a sample: an address answered for (a reply), a
    // Service refused (a failure counted), a pool counted.
    rig.scenario.service("served", json!({})).await?;
    let ip: std::net::IpAddr = rig.scenario.wait_any_ip("served").await?[0].parse()?;
    rig.wait_announcer("served", None).await?;
    rig.arping(ip, 1)?;
    rig.scenario
        .service(
            "refused",
            json!({"metadata": {"annotations": {(LOAD_BALANCER_IPS): "203.0.113.99"}}}),
        )
        .await?;
    rig.scenario
        .wait_reason("refused", reason::NOT_IN_ANY_POOL)
        .await?;
    let queried: BTreeSet<String> = metric_names(&std::fs::read_to_string(rules_file())?)
        .union(&metric_names(&dashboard().to_string()))
        .cloned()
        .collect();
    assert!(queried.len() >= 15, "{queried:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let exported = loop {
        let controller = ferrolb_tests::scenario::controller()
            .lock()
            .unwrap()
            .metrics()?;
        let speaker = rig.speaker(0)?.metrics()?;
        let exported: BTreeSet<String> = exported(&controller)
            .union(&exported(&speaker))
            .cloned()
            .collect();
        if queried.is_subset(&exported) || std::time::Instant::now() > deadline {
            break exported;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let unknown: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "queried but not exported: {unknown:?}\nexported: {exported:?}"
    );
    peers.delete("nobody", &Default::default()).await?;
    Ok(())
}
