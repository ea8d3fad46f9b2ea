//! The secured /metrics of a real speaker in a lab node namespace, scraped from the client
//! namespace as anyone on the LAN could: refused without a token, refused for a token Kubernetes
//! does not allow, served with the token of the chart's scraper ServiceAccount (the identity the
//! chart's PodMonitors scrape with).

use std::time::Duration;

use anyhow::{Context, Result};
use ferrolb_tests::control_plane;
use ferrolb_tests::l2lab::Rig;
use ferrolb_tests::process::wait_for;
use ferrolb_tests::rbac;
use tokio::task::block_in_place;

const SECURE_PORT: u16 = 9121;

/// `curl -k` from the client namespace: (status, body).
fn scrape(rig: &Rig, url: &str, token: Option<&str>) -> Result<(u16, String)> {
    let header = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["-sk", "--max-time", "5", "-w", "\n%{http_code}"];
    if let Some(h) = &header {
        args.extend(["-H", h]);
    }
    args.push(url);
    let out = rig.client("curl", &args)?;
    let (body, code) = out.rsplit_once('\n').context("no status line")?;
    Ok((code.trim().parse()?, body.to_string()))
}

/// The token Kubernetes' token controller writes into the chart's scraper Secret.
fn scraper_token(namespace: &str, release: &str) -> Result<String> {
    let cp = control_plane::shared();
    let rendered = rbac::render_chart(release, namespace, &["metrics.podMonitor.enabled=true"])?;
    let secret = rbac::documents(&rendered)?
        .into_iter()
        .find(|d| d["kind"] == "Secret" && d["type"] == "kubernetes.io/service-account-token")
        .context("the chart renders no scraper token Secret")?;
    let name = secret["metadata"]["name"]
        .as_str()
        .context("name")?
        .to_string();
    ferrolb_tests::process::run_input(
        cp.kubectl()?.args(["apply", "-n", namespace, "-f", "-"]),
        &serde_json::to_string(&secret)?,
    )?;
    wait_for(
        "the token controller to fill the scraper Secret",
        Duration::from_secs(30),
        || {
            let token = cp.kubectl_run(&[
                "get",
                "secret",
                &name,
                "-n",
                namespace,
                "-o",
                "jsonpath={.data.token}",
            ])?;
            if token.trim().is_empty() {
                return Ok(None);
            }
            let decoded = ferrolb_tests::process::run_input(
                std::process::Command::new("base64").arg("-d"),
                token.trim(),
            )?;
            Ok(Some(decoded))
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_metrics_answer_only_tokens_kubernetes_allows() -> Result<()> {
    let secure = format!("--secure-metrics-addr=0.0.0.0:{SECURE_PORT}");
    let rig = Rig::start("secmetrics", 1, &[&secure], true).await?;
    let ip = rig.lab.nodes()[0].ipv4;
    let url = format!("https://{ip}:{SECURE_PORT}/metrics");

    block_in_place(|| -> Result<()> {
        // Anyone on the LAN: no token, no metrics.
        let (code, body) = scrape(&rig, &url, None)?;
        assert_eq!(code, 401, "{body}");
        assert!(body.contains("bearer token is required"), "{body}");
        let (code, _) = scrape(&rig, &url, Some("not-a-token"))?;
        assert_eq!(code, 401);
        // Nor over the plain probe port.
        let plain = rig.client(
            "curl",
            &[
                "-s",
                "-w",
                "\n%{http_code}",
                &format!("http://{ip}:7473/metrics"),
            ],
        )?;
        assert!(
            plain.ends_with("\n404") && plain.contains(&SECURE_PORT.to_string()),
            "{plain}"
        );
        let ready = rig.client("curl", &["-s", &format!("http://{ip}:7473/readyz")])?;
        assert_eq!(ready, "ready", "the probes stay plain");

        // A valid token whose identity may not get /metrics.
        let cp = control_plane::shared();
        cp.kubectl_run(&["create", "serviceaccount", "nosy", "-n", "default"])
            .or_else(|e| {
                if format!("{e:#}").contains("AlreadyExists") {
                    Ok(String::new())
                } else {
                    Err(e)
                }
            })?;
        let nosy = cp.kubectl_run(&["create", "token", "nosy", "-n", "default"])?;
        let (code, body) = scrape(&rig, &url, Some(nosy.trim()))?;
        assert_eq!(code, 403, "{body}");
        assert!(
            body.contains("system:serviceaccount:default:nosy may not get /metrics"),
            "{body}"
        );

        // The chart's scraper identity, as the PodMonitors use it.
        rbac::apply_rbac(
            cp,
            "scrape",
            "ferrolb-system",
            &["metrics.podMonitor.enabled=true"],
        )?;
        let scraper =
            rbac::service_account_user("ferrolb-system", "scrape-ferrolb-metrics-scraper");
        rbac::wait_until_granted(cp, &scraper, &[&["get", "/metrics"]])?;
        let token = scraper_token("ferrolb-system", "scrape")?;
        let (code, body) = scrape(&rig, &url, Some(&token))?;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("ferrolb_speaker_live_peers"), "{body}");
        Ok(())
    })
}
