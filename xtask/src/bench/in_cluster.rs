//! The in-cluster section of `cargo xtask bench`: ferrolb installed with the chart's defaults on
//! the testbed's real nodes (kubelet, containerd, kube-proxy in nftables mode), as a user runs
//! it.
//!
//! ```text
//!  Testbed (3 real nodes) ── echo Deployment + dual-stack LoadBalancer Service (pending)
//!    helm install (README's command) ── pool + L2Advertisement ── first curl answer
//!    per trial: ferrolb-bench-prober in the client namespace against the IPv4 VIP,
//!               power the owner node off (link down, every process killed),
//!               first request answered after the cut; power it back on, wait until Ready
//!    1,000 IPv6 Services ── all announced ── container working set from the kubelets'
//!               /stats/summary (through the apiserver's node proxy)
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_crds::contract::annotation::ADDRESS_POOL;
use ferrolb_crds::contract::condition::ANNOUNCED;
use ferrolb_tests::e2e::Driver;
use ferrolb_tests::e2e::scenarios::{self, APP_NAMESPACE, Families, NAMESPACE};
use ferrolb_tests::e2e::testbed::Testbed;
use ferrolb_tests::node::ProxyMode;
use ferrolb_tests::process::wait_for;
use serde::Serialize;
use serde_json::{Value, json};

use super::speaker::failover::{Capture, Prober, realtime_us};
use super::stats::Distribution;

/// What the section does.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    /// Real nodes.
    pub nodes: usize,
    /// Power-off trials.
    pub trials: usize,
    /// Services for the memory figure.
    pub services: usize,
}

/// One power-off trial.
#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    /// The node that answered for the VIP and was powered off.
    pub node: String,
    /// The MAC the client's kernel still held for the VIP at the trial's start when it was not
    /// the owner's (the owner's gratuitous ARP after rejoining did not reach or update it).
    pub stale_client_entry: Option<String>,
    /// From the power cut (the node's link down; its processes are killed right after) to the
    /// end of the first request started after it and answered, ms.
    pub first_answer_ms: Option<f64>,
    /// From the cut to the first gratuitous ARP for the VIP from another node, as the client
    /// captured it, ms: the speakers' part of the failover.
    pub first_garp_ms: Option<f64>,
    /// The node the client's kernel resolved the VIP to once it was answered again.
    pub answered_via: Option<String>,
    /// Requests that failed between the cut and that answer.
    pub failed_requests: usize,
    /// What went wrong, if the trial produced no figure.
    pub error: Option<String>,
}

/// Memory of one container, from its kubelet.
#[derive(Clone, Debug, Serialize)]
pub struct ContainerMemory {
    /// `namespace/pod`.
    pub pod: String,
    /// The node it runs on.
    pub node: String,
    /// Container working set (what the kubelet evicts and `kubectl top` reports by), MiB.
    pub working_set_mib: f64,
}

/// The in-cluster figures.
#[derive(Clone, Debug, Serialize)]
pub struct InClusterSection {
    /// Parameters.
    pub params: Params,
    /// `helm install` until the controller and every speaker are Ready (images present), s.
    pub install_to_ready_s: f64,
    /// `helm install` until a Service created before it answers curl from the client, with the
    /// pool applied right after the install, s.
    pub install_to_first_answer_s: f64,
    /// The power-off trials.
    pub trials: Vec<Trial>,
    /// Distribution of the trials' first-answer times, ms.
    pub failover_ms: Distribution,
    /// ferrolb's containers with `services` Services announced.
    pub memory: Vec<ContainerMemory>,
    /// Services that had an EXTERNAL-IP and an announcement when memory was read.
    pub services_announced: usize,
}

impl InClusterSection {
    /// The section's Markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::from("## In cluster: the chart's defaults on real nodes\n\n");
        md.push_str(&format!(
            "{} real nodes (kubelet, containerd, kube-proxy nftables), ferrolb installed with \
             `helm install ferrolb charts/ferrolb -n ferrolb-system --create-namespace`.\n\n",
            self.params.nodes
        ));
        md.push_str("| figure | value | goal |\n|---|---:|---|\n");
        md.push_str(&format!(
            "| helm install to controller and speakers Ready | {:.1} s | report |\n",
            self.install_to_ready_s
        ));
        md.push_str(&format!(
            "| helm install to the first Service answering curl | {:.1} s | report |\n",
            self.install_to_first_answer_s
        ));
        let d = &self.failover_ms;
        md.push_str(&format!(
            "| owner node powered off: first request answered, p50 ({} trials) | {:.0} ms | < 300 ms{} |\n",
            d.count,
            d.p50,
            met(d.p50 < 300.0)
        ));
        md.push_str(&format!(
            "| owner node powered off: first request answered, p99 | {:.0} ms | < 1000 ms{} |\n",
            d.p99,
            met(d.p99 < 1000.0)
        ));
        md.push_str(&format!("| ... max | {:.0} ms | |\n\n", d.max));
        md.push_str(&format!(
            "Container working set with {} Services announced:\n\n| pod | node | MiB |\n|---|---|---:|\n",
            self.services_announced
        ));
        for m in &self.memory {
            md.push_str(&format!(
                "| {} | {} | {:.1} |\n",
                m.pod, m.node, m.working_set_mib
            ));
        }
        let stale = self
            .trials
            .iter()
            .filter(|t| t.stale_client_entry.is_some())
            .count();
        md.push_str(&format!(
            "Trials that started with the client still resolving the VIP to an earlier owner \
             (flushed before measuring): {stale} of {}.\n\n",
            self.trials.len()
        ));
        md.push_str(
            "\nTrials (node powered off: first answer ms / first gratuitous ARP ms / failed requests):",
        );
        for t in &self.trials {
            match (&t.first_answer_ms, &t.error) {
                (Some(ms), _) => md.push_str(&format!(
                    " {} {ms:.0}/{}/{};",
                    t.node,
                    t.first_garp_ms
                        .map_or("-".to_string(), |g| format!("{g:.0}")),
                    t.failed_requests
                )),
                (None, Some(e)) => md.push_str(&format!(" {} failed: {e};", t.node)),
                (None, None) => {}
            }
        }
        md.push('\n');
        md
    }
}

fn met(ok: bool) -> &'static str {
    if ok { " (met)" } else { " (NOT met)" }
}

/// Runs the section in `dir` with `prober` (the release `ferrolb-bench-prober`).
pub fn run(params: &Params, prober: &Path, dir: &Path) -> Result<InClusterSection> {
    eprintln!(
        "==> in-cluster: starting {} real nodes (images, kubelet, containerd, kube-proxy)",
        params.nodes
    );
    let mut tb = Testbed::start(dir, params.nodes, ProxyMode::Nftables)?;
    let result = measure(&mut tb, params, prober, dir);
    if result.is_err() {
        eprintln!("{}\n{}", scenarios::pods_summary(&tb), tb.diagnostics());
    }
    result
}

fn measure(
    tb: &mut Testbed,
    params: &Params,
    prober: &Path,
    dir: &Path,
) -> Result<InClusterSection> {
    // The workload and its Service exist before ferrolb does, as on a cluster that had none.
    scenarios::deploy_echo(tb, "echo", params.nodes as u32, None)?;
    scenarios::expose(tb, "echo", "echo", Families::Dual, false)?;
    let started = Instant::now();
    let install_to_ready = scenarios::install(tb)?;
    scenarios::apply_pool(tb)?;
    let ips = scenarios::wait_ingress(tb, "echo", 2)?;
    let v4 = *ips
        .iter()
        .find(|ip| ip.is_ipv4())
        .context("no IPv4 EXTERNAL-IP")?;
    wait_for(
        "the first answer from the VIP",
        Duration::from_secs(60),
        || Ok(ferrolb_tests::e2e::probes::curl(tb, v4, 80, Duration::from_millis(200)).ok()),
    )?;
    let install_to_first_answer = started.elapsed();
    eprintln!(
        "    helm install to Ready {:.1} s, to the first answer {:.1} s",
        install_to_ready.as_secs_f64(),
        install_to_first_answer.as_secs_f64()
    );

    let mut trials = Vec::new();
    for i in 0..params.trials {
        let trial = power_off_trial(tb, prober, v4, dir, i + 1).unwrap_or_else(|e| Trial {
            node: String::new(),
            stale_client_entry: None,
            first_garp_ms: None,
            answered_via: None,
            first_answer_ms: None,
            failed_requests: 0,
            error: Some(format!("{e:#}")),
        });
        eprintln!(
            "    trial {}/{}: {} off, first answer {:?} ms via {:?}, first GARP {:?} ms ({} failed requests){}",
            i + 1,
            params.trials,
            trial.node,
            trial.first_answer_ms.map(|v| v.round()),
            trial.answered_via,
            trial.first_garp_ms.map(|v| v.round()),
            trial.failed_requests,
            trial
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
        trials.push(trial);
    }
    let times: Vec<f64> = trials.iter().filter_map(|t| t.first_answer_ms).collect();
    if times.is_empty() && params.trials > 0 {
        bail!("no power-off trial produced a figure: {trials:?}");
    }

    let services_announced = create_services(tb, params.services)?;
    let memory = ferrolb_memory(tb)?;
    Ok(InClusterSection {
        params: params.clone(),
        install_to_ready_s: install_to_ready.as_secs_f64(),
        install_to_first_answer_s: install_to_first_answer.as_secs_f64(),
        failover_ms: Distribution::of(&times),
        trials,
        memory,
        services_announced,
    })
}

/// Powers off the node answering for `vip` while the prober requests it; powers it back on.
fn power_off_trial(
    tb: &mut Testbed,
    prober_bin: &Path,
    vip: IpAddr,
    dir: &Path,
    index: usize,
) -> Result<Trial> {
    let node = scenarios::wait_owner(tb, vip, None)?;
    // The client's kernel may still hold the MAC of an earlier owner (a stand-in that answered
    // while this node was off): record it, then make it resolve the address afresh.
    let owner_mac = tb.node_mac(&node)?;
    let stale_client_entry =
        ferrolb_tests::e2e::probes::neighbour(tb, vip)?.filter(|mac| *mac != owner_mac);
    tb.lab().client().exec(
        "ip",
        &["neigh", "flush", "to", &vip.to_string(), "dev", "eth0"],
    )?;
    let IpAddr::V4(vip4) = vip else {
        bail!("the power-off trials take an IPv4 VIP, not {vip}");
    };
    let capture_file = dir.join(format!("trial-{index:02}.pcap"));
    let capture = Capture::start(tb.lab().client(), &capture_file)?;
    let mut prober = Prober::start(tb.lab().client(), prober_bin, vip)?;
    prober.wait_for(realtime_us(), Duration::from_secs(10), |l| l.ok)?;
    let resolved = ferrolb_tests::e2e::probes::neighbour(tb, vip)?;
    if resolved.as_deref() != Some(owner_mac.as_str()) {
        bail!("the client resolved {vip} to {resolved:?}, not to its owner {node} ({owner_mac})");
    }
    tb.power_off(&node)?;
    let cut_us = tb
        .real_nodes()
        .last_power_cut()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_micros() as u64)
        .context("power_off recorded no cut")?;
    // A request that started before the link went down may have been answered by the old owner.
    let answered = prober.wait_for(cut_us, Duration::from_secs(10), |l| {
        l.ok && l.start_us >= cut_us
    });
    let lines = prober.stop();
    let answered_via = match ferrolb_tests::e2e::probes::neighbour(tb, vip)? {
        Some(mac) => tb
            .nodes()
            .into_iter()
            .find(|n| tb.node_mac(n).is_ok_and(|m| m == mac))
            .or(Some(mac)),
        None => None,
    };
    let first_garp_ms = capture
        .finish()?
        .iter()
        .find(|f| f.at_us >= cut_us && f.is_gratuitous_for(vip4) && f.eth_src != owner_mac)
        .map(|f| (f.at_us - cut_us) as f64 / 1000.0);
    let trial = match answered {
        Ok(line) => Trial {
            node: node.clone(),
            stale_client_entry: stale_client_entry.clone(),
            first_garp_ms,
            answered_via,
            first_answer_ms: Some((line.end_us - cut_us) as f64 / 1000.0),
            failed_requests: lines
                .iter()
                .filter(|l| l.end_us > cut_us && l.end_us <= line.end_us && !l.ok)
                .count(),
            error: None,
        },
        Err(e) => Trial {
            node: node.clone(),
            stale_client_entry,
            first_garp_ms,
            answered_via,
            first_answer_ms: None,
            failed_requests: lines.iter().filter(|l| l.end_us > cut_us && !l.ok).count(),
            error: Some(format!("{e:#}")),
        },
    };
    let powered_on = rfc3339_now();
    tb.power_on(&node)?;
    // The node was off for seconds only, so its pods' Ready conditions never turned False and
    // `rollout status` would pass at once: wait for the speaker container that the rebooted
    // kubelet started, and for it to be Ready.
    wait_for(
        &format!("the speaker on {node} to run again and be Ready"),
        Duration::from_secs(120),
        || {
            let out = scenarios::speaker_pod_on(
                tb,
                &node,
                "jsonpath={.items[0].status.containerStatuses[0].state.running.startedAt} \
                 {.items[0].status.containerStatuses[0].ready}",
            )?;
            let mut words = out.split_whitespace();
            let started = words.next().unwrap_or_default();
            // RFC 3339 UTC timestamps of one format compare as strings.
            Ok((started >= powered_on.as_str() && words.next() == Some("true")).then_some(()))
        },
    )?;
    scenarios::wait_rollout(tb)?;
    tb.kubectl(&[
        "rollout",
        "status",
        "-n",
        APP_NAMESPACE,
        "deployment/echo",
        "--timeout=180s",
    ])?;
    Ok(trial)
}

/// Creates `count` IPv6 LoadBalancer Services (pool `bench`, announced by an L2Advertisement)
/// in front of the echo pods; waits until every one has an EXTERNAL-IP and the speakers'
/// Announced condition. Returns how many are announced.
fn create_services(tb: &Testbed, count: usize) -> Result<usize> {
    if count == 0 {
        return Ok(0);
    }
    eprintln!("==> in-cluster: {count} Services for the memory figure");
    let pool = json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": "bench"},
        "spec": {"addresses": ["2001:db8:1::1000-2001:db8:1::2fff"]},
    });
    let advertisement = json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "L2Advertisement",
        "metadata": {"name": "bench"},
        "spec": {"ipAddressPools": ["bench"]},
    });
    for m in [pool, advertisement] {
        tb.kubectl_input(&["apply", "-f", "-"], &m.to_string())?;
    }
    let items: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": format!("bench-{i:04}"),
                    "namespace": APP_NAMESPACE,
                    "annotations": {ADDRESS_POOL: "bench"},
                },
                "spec": {
                    "type": "LoadBalancer",
                    "ipFamilyPolicy": "SingleStack",
                    "ipFamilies": ["IPv6"],
                    "selector": {"app": "echo"},
                    "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
                },
            })
        })
        .collect();
    // kubectl sends one request per object; chunks keep each call's input small.
    for chunk in items.chunks(200) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": chunk});
        tb.kubectl_input(&["create", "-f", "-"], &list.to_string())?;
    }
    wait_for(
        &format!("{count} Services to be announced"),
        Duration::from_secs(600),
        || {
            let n = announced_bench_services(tb)?;
            Ok((n >= count).then_some(n))
        },
    )
}

/// Services `bench-*` with an EXTERNAL-IP and `ferrolb.io/Announced` True.
fn announced_bench_services(tb: &Testbed) -> Result<usize> {
    let out = tb.kubectl(&["get", "services", "-n", APP_NAMESPACE, "-o", "json"])?;
    let list: Value = serde_json::from_str(&out)?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("bench-"))
        })
        .filter(|s| s["status"]["loadBalancer"]["ingress"][0]["ip"].is_string())
        .filter(|s| {
            s["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == ANNOUNCED && c["status"] == "True")
        })
        .count())
}

/// The working set of every ferrolb container, from each node's kubelet (`/stats/summary`
/// through the apiserver). Read three times 15 s apart (the kubelet refreshes its stats every
/// 10-15 s); the last reading is reported, each is printed.
fn ferrolb_memory(tb: &Testbed) -> Result<Vec<ContainerMemory>> {
    let mut last = Vec::new();
    for reading in 0..3 {
        if reading > 0 {
            std::thread::sleep(Duration::from_secs(15));
        }
        let mut memory = Vec::new();
        for node in tb.nodes() {
            let out = tb.kubectl(&[
                "get",
                "--raw",
                &format!("/api/v1/nodes/{node}/proxy/stats/summary"),
            ])?;
            memory.extend(parse_summary(&out, &node)?);
        }
        let by_pod: BTreeMap<&str, f64> = memory
            .iter()
            .map(|m| (m.pod.as_str(), m.working_set_mib))
            .collect();
        eprintln!("    working set (MiB): {by_pod:?}");
        last = memory;
    }
    Ok(last)
}

/// ferrolb's containers in a kubelet summary.
fn parse_summary(summary: &str, node: &str) -> Result<Vec<ContainerMemory>> {
    let v: Value = serde_json::from_str(summary).context("parsing the kubelet's /stats/summary")?;
    let mut out = Vec::new();
    for pod in v["pods"].as_array().into_iter().flatten() {
        if pod["podRef"]["namespace"] != NAMESPACE {
            continue;
        }
        for c in pod["containers"].as_array().into_iter().flatten() {
            if let Some(bytes) = c["memory"]["workingSetBytes"].as_f64() {
                out.push(ContainerMemory {
                    pod: format!(
                        "{NAMESPACE}/{}",
                        pod["podRef"]["name"].as_str().unwrap_or_default()
                    ),
                    node: node.to_string(),
                    working_set_mib: bytes / (1024.0 * 1024.0),
                });
            }
        }
    }
    Ok(out)
}

/// The section's directory under the bench output.
pub fn dir(out: &Path) -> PathBuf {
    out.join("in-cluster")
}

/// Now as `2026-12-03T12:00:00Z` (seconds, UTC): the format of the API's timestamps.
fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ferrolb_tests::image::oci::rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_summaries_yield_ferrolbs_containers_only() {
        let summary = json!({"pods": [
            {"podRef": {"namespace": "ferrolb-system", "name": "ferrolb-speaker-x"},
             "containers": [{"name": "speaker", "memory": {"workingSetBytes": 31457280}}]},
            {"podRef": {"namespace": "e2e", "name": "echo-1"},
             "containers": [{"name": "echo", "memory": {"workingSetBytes": 1048576}}]},
        ]});
        let got = parse_summary(&summary.to_string(), "node1").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].pod, "ferrolb-system/ferrolb-speaker-x");
        assert_eq!(got[0].working_set_mib, 30.0);
    }
}
