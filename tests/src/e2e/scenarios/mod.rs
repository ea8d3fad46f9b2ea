//! The end-to-end scenarios, each a step a user takes or a failure a cluster sees, checked from
//! the client on the LAN. They run on any [`Driver`].
//!
//! ```text
//!  mod.rs       install (README's command), rollouts, pods, the missing-image report, everything
//!  workload.rs  pool, echo Deployments, Services, ingress addresses, owners
//!  checks.rs    each step of the journey, checked from the client
//! ```

mod checks;
mod workload;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

pub use checks::*;
pub use workload::*;

use super::Driver;
use crate::image::ImageKind;
use crate::process::wait_for;

/// The release and namespace README's install command uses.
pub const RELEASE: &str = "ferrolb";
/// Where the chart is installed.
pub const NAMESPACE: &str = "ferrolb-system";
/// Where the scenarios' workloads and Services live.
pub const APP_NAMESPACE: &str = "e2e";
/// The pool and L2Advertisement the scenarios apply.
pub const POOL: &str = "lan";
/// How long a rollout, an allocation or a move may take before a scenario fails.
pub const TIMEOUT: Duration = Duration::from_secs(180);
/// How long the network may take to converge after a change.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(20);

/// Prints a progress line.
fn step(d: &dyn Driver, what: &str) {
    eprintln!("==> e2e ({}): {what}", d.describe());
}

/// README's install command, as helm's arguments (run from the repository root).
pub const INSTALL: [&str; 6] = [
    "install",
    RELEASE,
    "charts/ferrolb",
    "-n",
    NAMESPACE,
    "--create-namespace",
];
/// What the chart runs, in the release namespace.
pub const WORKLOADS: [&str; 2] = ["deployment/ferrolb-controller", "daemonset/ferrolb-speaker"];

/// `kubectl rollout status` arguments for `object` in `namespace`, with [`TIMEOUT`].
pub fn rollout_status_args(namespace: &str, object: &str) -> Vec<String> {
    ["rollout", "status", "-n", namespace, object]
        .into_iter()
        .map(str::to_string)
        .chain([format!("--timeout={}s", TIMEOUT.as_secs())])
        .collect()
}

/// Waits until `object` in `namespace` is fully rolled out.
fn rollout_status(d: &dyn Driver, namespace: &str, object: &str) -> Result<()> {
    let args = rollout_status_args(namespace, object);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    d.kubectl(&args)
        .with_context(|| format!("waiting for {object} to roll out: {}", pods_summary(d)))?;
    Ok(())
}

/// `helm install ferrolb charts/ferrolb -n ferrolb-system --create-namespace`, exactly as the
/// README says, then waits for the controller Deployment and the speaker DaemonSet to be Ready.
/// Returns how long the install and the rollout took.
pub fn install(d: &dyn Driver) -> Result<Duration> {
    step(d, "helm install, as in the README");
    let started = Instant::now();
    d.helm(&INSTALL)
        .context("helm install as the README says")?;
    wait_rollout(d)?;
    Ok(started.elapsed())
}

/// `helm upgrade` of the release to the repository's chart with `flags`, then waits for the
/// rollout.
pub fn helm_upgrade(d: &dyn Driver, flags: &[&str]) -> Result<()> {
    let mut args = vec!["upgrade", RELEASE, "charts/ferrolb", "-n", NAMESPACE];
    args.extend_from_slice(flags);
    d.helm(&args)?;
    wait_rollout(d)
}

/// Waits until the controller Deployment and the speaker DaemonSet are fully rolled out.
pub fn wait_rollout(d: &dyn Driver) -> Result<()> {
    for object in WORKLOADS {
        rollout_status(d, NAMESPACE, object)?;
    }
    Ok(())
}

/// `kubectl get pods -A -o wide` and why each waiting container waits, for error messages.
pub fn pods_summary(d: &dyn Driver) -> String {
    let table = d
        .kubectl(&["get", "pods", "-A", "-o", "wide"])
        .unwrap_or_else(|e| format!("(kubectl get pods failed: {e:#})"));
    let waiting = waiting_containers(d)
        .map(|w| w.join("\n"))
        .unwrap_or_else(|e| format!("(reading container states failed: {e:#})"));
    format!("{table}{waiting}")
}

/// `namespace/pod container: Reason: message` for every container that waits (image missing,
/// crash loop, ...).
pub fn waiting_containers(d: &dyn Driver) -> Result<Vec<String>> {
    let out = d.kubectl(&["get", "pods", "-A", "-o", "json"])?;
    let pods: Value = serde_json::from_str(&out)?;
    let mut lines = Vec::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let name = format!(
            "{}/{}",
            pod["metadata"]["namespace"].as_str().unwrap_or_default(),
            pod["metadata"]["name"].as_str().unwrap_or_default()
        );
        for status in pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let waiting = &status["state"]["waiting"];
            if let Some(reason) = waiting["reason"].as_str() {
                lines.push(format!(
                    "{name} {}: {reason}: {}",
                    status["name"].as_str().unwrap_or_default(),
                    waiting["message"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    Ok(lines)
}

/// Installing with an image no node has (and `pullPolicy: Never`, so nothing is fetched) shows
/// up at once as the pods' waiting reason naming the image; `helm upgrade` to the chart's own
/// image, the fix a user makes, rolls the release out.
///
/// Not uninstall and install again: deleting CRDs whose objects nothing ever read can stall in
/// the apiserver (CI saw the CRD finalizer's list fail with "storage is (re)initializing" and
/// back off for minutes); [`check_uninstall`] covers uninstalling a release that ran.
pub fn check_missing_image_is_reported(d: &dyn Driver) -> Result<()> {
    let missing = format!("{}:does-not-exist", ImageKind::Ferrolb.repository());
    step(
        d,
        &format!("helm install with an image no node has ({missing})"),
    );
    d.helm(
        &[
            &INSTALL[..],
            &[
                "--set",
                "image.tag=does-not-exist",
                "--set",
                "image.pullPolicy=Never",
            ],
        ]
        .concat(),
    )?;
    let reported = wait_for("the pods to report the missing image", TIMEOUT, || {
        let lines = waiting_containers(d)?;
        Ok(lines
            .iter()
            .find(|l| {
                l.starts_with(NAMESPACE) && l.contains("ErrImageNeverPull") && l.contains(&missing)
            })
            .cloned())
    })?;
    eprintln!("    reported: {reported}");
    step(d, "helm upgrade to the chart's own image");
    // --reset-values: without values on its command line, `helm upgrade` reuses the release's.
    helm_upgrade(d, &["--reset-values"])
}

/// What [`everything`] measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// `helm install` until the controller and every speaker are Ready.
    pub install: Duration,
    /// `helm install` until the first Service answers curl.
    pub install_to_first_answer: Duration,
    /// Speaker pod deleted on the owner until a request is served through another node.
    pub speaker_pod_deleted_failover: Duration,
    /// Owner node powered off until a request is served through another node.
    pub node_power_off_failover: Duration,
}

/// The whole user journey on one cluster, in order: install, pool, dual-stack Service over echo
/// pods, nodes and pod networking, Local policy, a node's kernel answering for the IP (the IPVS
/// hazard), speaker pod deletion, upgrade, node power-off, uninstall.
pub fn everything(d: &mut dyn Driver) -> Result<Report> {
    let mut report = Report::default();
    let started = Instant::now();
    report.install = install(d)?;
    apply_pool(d)?;
    deploy_echo(d, "echo", 3, None)?;
    expose(d, "echo", "echo", Families::Dual, false)?;
    let ips = check_dual_stack(d, "echo")?;
    report.install_to_first_answer = started.elapsed();
    check_nodes_and_pod_networking(d)?;
    check_local_traffic_policy(d)?;
    let v4 = *ips.iter().find(|ip| ip.is_ipv4()).context("no IPv4")?;
    check_kernel_answering_is_reported(d, "echo", v4)?;
    report.speaker_pod_deleted_failover = check_speaker_pod_deletion(d, v4)?;
    check_upgrade_keeps_ips(d)?;
    report.node_power_off_failover = check_power_off(d, v4)?;
    check_uninstall(d)?;
    Ok(report)
}
