//! The checks of the user journey, each a step a user takes or a failure a cluster sees:
//! dual-stack and Local-policy traffic, a node's kernel answering, speaker pod deletion, upgrade,
//! node power-off, uninstall, and the nodes' own networking.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferrolb_crds::contract::reason::KERNEL_ANSWERS_FOR_ADDRESS;
use serde_json::{Value, json};

use super::workload::node_of_mac;
use super::*;
use crate::e2e::{Driver, probes};
use crate::image::ImageKind;
use crate::process::wait_for;

/// The dual-stack Service answers curl over both families, and exactly one node answers ARP
/// and NDP for each address. Returns the Service's IPs.
pub fn check_dual_stack(d: &dyn Driver, svc: &str) -> Result<Vec<IpAddr>> {
    let ips = wait_ingress(d, svc, 2)?;
    for ip in &ips {
        step(
            d,
            &format!("curl {ip} and check that exactly one node answers for it"),
        );
        let (answer, _) = probes::curl_until(d, *ip, 80, NETWORK_TIMEOUT, |_| true)?;
        ensure!(
            answer.pod.starts_with("echo-"),
            "{ip} answered {answer:?}, not an echo pod"
        );
        owner(d, *ip)?;
    }
    ensure!(
        ips.iter().any(IpAddr::is_ipv4) && ips.iter().any(IpAddr::is_ipv6),
        "a RequireDualStack Service got {ips:?}"
    );
    Ok(ips)
}

/// `externalTrafficPolicy: Local`: only the node running the echo pod answers, the pod sees the
/// client's own address, and when the pod moves to another node the announcement follows.
pub fn check_local_traffic_policy(d: &dyn Driver) -> Result<()> {
    let nodes = d.nodes();
    ensure!(nodes.len() >= 2, "the Local scenario needs two nodes");
    let (first, second) = (nodes[0].as_str(), nodes[1].as_str());
    deploy_echo(d, "echo-local", 1, Some(second))?;
    expose(d, "echo-local", "echo-local", Families::V4, true)?;
    let ip = wait_ingress(d, "echo-local", 1)?[0];
    step(
        d,
        &format!("Local policy: only {second}, which runs the pod, answers for {ip}"),
    );
    let owner_node = wait_owner(d, ip, None)?;
    ensure!(
        owner_node == second,
        "{ip} (externalTrafficPolicy: Local) is answered by {owner_node}, but its only pod runs on {second}"
    );
    let (answer, _) = probes::curl_until(d, ip, 80, NETWORK_TIMEOUT, |_| true)?;
    ensure!(
        answer.node == second && answer.client == d.client_ipv4().to_string(),
        "Local policy: the pod should run on {second} and see the client's own address {}, got {answer:?}",
        d.client_ipv4()
    );

    step(
        d,
        &format!("Local policy: move the pod to {first}; the announcement follows"),
    );
    d.kubectl(&[
        "patch",
        "deployment",
        "echo-local",
        "-n",
        APP_NAMESPACE,
        "--type=merge",
        "-p",
        &json!({"spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/hostname": first}}}}})
            .to_string(),
    ])?;
    rollout_status(d, APP_NAMESPACE, "deployment/echo-local")?;
    let moved = wait_for(
        &format!("{ip} to be answered by {first} only"),
        NETWORK_TIMEOUT,
        || Ok(owner(d, ip).ok().filter(|n| n == first)),
    )?;
    let (answer, _) = probes::curl_until(d, ip, 80, NETWORK_TIMEOUT, |a| a.node == moved)?;
    ensure!(
        answer.client == d.client_ipv4().to_string(),
        "Local policy after the move: the pod saw {}, not the client's {}",
        answer.client,
        d.client_ipv4()
    );
    Ok(())
}

/// The IPVS hazard, reproduced: the IPv4 `ip` is added to `lo` of a node that does not own it
/// (what kube-proxy's IPVS mode does on every node, on `kube-ipvs0`), so that node's kernel
/// answers ARP for it too. Its speaker reports it with a Warning Event on the Service naming the
/// node and the fix; after the fix (`arp_ignore=1`) one node answers again. Leaves the node as
/// it found it.
pub fn check_kernel_answering_is_reported(d: &dyn Driver, svc: &str, ip: IpAddr) -> Result<()> {
    let owner_node = owner(d, ip)?;
    let other = d
        .nodes()
        .into_iter()
        .find(|n| *n != owner_node)
        .context("the kernel scenario needs a second node")?;
    step(
        d,
        &format!("add {ip} to lo of {other} (not its owner): {other}'s kernel answers ARP too"),
    );
    let node_ok = |program: &str, args: &[&str]| -> Result<String> {
        let out = d.on_node(&other, program, args)?;
        ensure!(
            out.status.success(),
            "{program} {} on {other}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let arp_ignore = node_ok("sysctl", &["-n", "net.ipv4.conf.all.arp_ignore"])?
        .trim()
        .to_string();
    let address = format!("{ip}/32");
    node_ok("sysctl", &["-qw", "net.ipv4.conf.all.arp_ignore=0"])?;
    node_ok("ip", &["addr", "add", &address, "dev", "lo"])?;
    let result = (|| {
        let hazard = wait_for(
            &format!("two MACs answering for {ip}"),
            NETWORK_TIMEOUT,
            || Ok((probes::answering_macs(d, ip)?.len() >= 2).then_some(())),
        );
        hazard?;
        let event = wait_for(
            &format!("a {KERNEL_ANSWERS_FOR_ADDRESS} Event on {svc} naming {other}"),
            Duration::from_secs(60),
            || {
                let out = d.kubectl(&[
                    "get",
                    "events",
                    "-n",
                    APP_NAMESPACE,
                    "--field-selector",
                    &format!("involvedObject.name={svc},reason={KERNEL_ANSWERS_FOR_ADDRESS}"),
                    "-o",
                    "jsonpath={range .items[*]}{.type} {.message}{\"\\n\"}{end}",
                ])?;
                Ok(out
                    .lines()
                    .find(|l| {
                        l.starts_with("Warning") && l.contains(&other) && l.contains("arp_ignore=1")
                    })
                    .map(str::to_string))
            },
        )?;
        eprintln!("    reported: {event}");
        step(
            d,
            &format!("fix it on {other}: net.ipv4.conf.all.arp_ignore=1"),
        );
        node_ok("sysctl", &["-qw", "net.ipv4.conf.all.arp_ignore=1"])?;
        wait_for(
            &format!("only {owner_node} to answer for {ip} again"),
            NETWORK_TIMEOUT,
            || Ok(owner(d, ip).ok().filter(|n| *n == owner_node)),
        )?;
        Ok(())
    })();
    let _ = d.on_node(&other, "ip", &["addr", "del", &address, "dev", "lo"]);
    let _ = d.on_node(
        &other,
        "sysctl",
        &["-qw", &format!("net.ipv4.conf.all.arp_ignore={arp_ignore}")],
    );
    result
}

/// Waits until a request to `ip` is served and the client's kernel resolves `ip` to a node
/// other than `old_owner` (its gratuitous ARP/NA reached the client); returns that node and
/// when it happened.
fn wait_moved(d: &dyn Driver, ip: IpAddr, old_owner: &str) -> Result<(String, Instant)> {
    let old_mac = d.node_mac(old_owner)?;
    let deadline = Instant::now() + NETWORK_TIMEOUT;
    loop {
        let served = probes::curl(d, ip, 80, Duration::from_millis(300)).is_ok();
        if served
            && let Some(mac) = probes::neighbour(d, ip)?
            && mac != old_mac
        {
            return Ok((node_of_mac(d, &mac)?, Instant::now()));
        }
        if Instant::now() >= deadline {
            bail!(
                "{ip} was not served through a node other than {old_owner} within {NETWORK_TIMEOUT:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Deletes the speaker pod on the node answering for `ip`: another node takes over, and the
/// DaemonSet's new pod comes up. Returns the time to the first request served elsewhere.
pub fn check_speaker_pod_deletion(d: &dyn Driver, ip: IpAddr) -> Result<Duration> {
    let old = owner(d, ip)?;
    let pod = speaker_pod_on(d, &old, "name")?.trim().to_string();
    ensure!(
        !pod.is_empty(),
        "no speaker pod on {old}: {}",
        pods_summary(d)
    );
    step(
        d,
        &format!("delete {pod} on {old}, the node answering for {ip}"),
    );
    let deleted = Instant::now();
    d.kubectl(&["delete", "-n", NAMESPACE, &pod, "--wait=false"])?;
    let (new, served) = wait_moved(d, ip, &old)?;
    let took = served - deleted;
    eprintln!(
        "    {ip} served through {new} {:.0} ms after the deletion",
        took.as_secs_f64() * 1e3
    );
    wait_rollout(d)?;
    Ok(took)
}

/// `helm upgrade` to a rebuilt image (the same content under a new tag, so every pod is
/// replaced): every Service keeps its IPs and answers afterwards.
pub fn check_upgrade_keeps_ips(d: &dyn Driver) -> Result<()> {
    let before = all_ingress(d)?;
    let tag = format!("{}-rebuilt", crate::image::app_version()?);
    let reference = format!("{}:{tag}", ImageKind::Ferrolb.repository());
    d.tag_ferrolb_image(&reference)?;
    step(d, &format!("helm upgrade to {reference}"));
    helm_upgrade(d, &["--reuse-values", "--set", &format!("image.tag={tag}")])?;
    // Rollouts finish when the new pods are Ready; the old ones may still be terminating.
    wait_for(
        &format!("every ferrolb pod to run {reference} and no other"),
        TIMEOUT,
        || {
            let images = d.kubectl(&[
                "get",
                "pods",
                "-n",
                NAMESPACE,
                "-o",
                "jsonpath={.items[*].spec.containers[*].image}",
            ])?;
            Ok(images
                .split_whitespace()
                .all(|i| i == reference)
                .then_some(()))
        },
    )?;
    let after = all_ingress(d)?;
    ensure!(
        before == after,
        "helm upgrade changed Service IPs: {before:?} -> {after:?}"
    );
    for ips in after.values() {
        for ip in ips {
            probes::curl_until(d, *ip, 80, NETWORK_TIMEOUT, |_| true)?;
            owner(d, *ip)?;
        }
    }
    Ok(())
}

/// Powers off the node answering for `ip`: another node takes over. Returns the time to the
/// first request served elsewhere.
pub fn check_power_off(d: &mut dyn Driver, ip: IpAddr) -> Result<Duration> {
    let old = owner(d, ip)?;
    step(d, &format!("power off {old}, the node answering for {ip}"));
    let cut = Instant::now();
    d.power_off(&old)?;
    let (new, served) = wait_moved(d, ip, &old)?;
    let took = served - cut;
    eprintln!(
        "    {ip} served through {new} {:.0} ms after the power cut",
        took.as_secs_f64() * 1e3
    );
    Ok(took)
}

/// `helm uninstall`: every ferrolb object goes (the CRDs too, as templates of the crds
/// subchart), and nobody answers for the Services' IPs any more.
pub fn check_uninstall(d: &dyn Driver) -> Result<()> {
    let ips: Vec<IpAddr> = all_ingress(d)?.into_values().flatten().collect();
    step(d, "helm uninstall");
    d.helm(&["uninstall", RELEASE, "-n", NAMESPACE])?;
    wait_release_gone(d)?;
    for ip in ips {
        wait_for(
            &format!("nobody to answer for {ip} after helm uninstall"),
            TIMEOUT,
            || Ok(probes::answering_macs(d, ip)?.is_empty().then_some(())),
        )?;
    }
    Ok(())
}

/// Waits until the CRDs and every object of the release are gone after `helm uninstall`, with
/// kubectl rather than `helm uninstall --wait`, whose kstatus watcher now and then misses a
/// deletion (helm/helm#31766); a CRD that stays is shown with the apiserver's reason.
fn wait_release_gone(d: &dyn Driver) -> Result<()> {
    wait_for("the ferrolb CRDs to be gone", TIMEOUT, || {
        let crds = d.kubectl(&["get", "crd", "-o", "name"])?;
        Ok((!crds.contains("ferrolb.io")).then_some(()))
    })
    .with_context(|| {
        // Why a CRD stays: its deletion timestamp and the apiserver's Terminating condition.
        d.kubectl(&[
            "get",
            "crd",
            "-o",
            "custom-columns=NAME:.metadata.name,DELETED:.metadata.deletionTimestamp,\
             TERMINATING:.status.conditions[?(@.type==\"Terminating\")].message",
        ])
        .unwrap_or_else(|e| format!("(kubectl get crd failed: {e:#})"))
    })?;
    wait_for(
        "every ferrolb object of the release to be gone",
        TIMEOUT,
        || {
            let left = d.kubectl(&[
                "get",
                "deployments,daemonsets,serviceaccounts,roles,rolebindings,secrets,services",
                "-n",
                NAMESPACE,
                "-l",
                &format!("app.kubernetes.io/instance={RELEASE}"),
                "-o",
                "name",
            ])?;
            let cluster = d.kubectl(&[
                "get",
                "clusterroles,clusterrolebindings",
                "-l",
                &format!("app.kubernetes.io/instance={RELEASE}"),
                "-o",
                "name",
            ])?;
            Ok((left.trim().is_empty() && cluster.trim().is_empty()).then_some(()))
        },
    )?;
    Ok(())
}

/// Every node registered itself through its kubelet and is Ready; the echo pods have addresses
/// of their own, and every speaker (hostNetwork) has its node's address.
pub fn check_nodes_and_pod_networking(d: &dyn Driver) -> Result<()> {
    step(
        d,
        "nodes registered by their kubelets, pods on their node's network",
    );
    let nodes: Value = serde_json::from_str(&d.kubectl(&["get", "nodes", "-o", "json"])?)?;
    let mut node_ips = BTreeMap::new();
    for node in nodes["items"].as_array().into_iter().flatten() {
        let name = node["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let info = &node["status"]["nodeInfo"];
        ensure!(
            info["kubeletVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with('v'))
                && info["containerRuntimeVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("containerd://")),
            "node {name} was not registered by a kubelet on containerd: {info}"
        );
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ensure!(ready, "node {name} is not Ready");
        let ips: Vec<String> = node["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["type"] == "InternalIP")
            .filter_map(|a| a["address"].as_str().map(str::to_string))
            .collect();
        node_ips.insert(name, ips);
    }
    let expected: std::collections::BTreeSet<String> = d.nodes().into_iter().collect();
    let registered: std::collections::BTreeSet<String> = node_ips.keys().cloned().collect();
    ensure!(
        expected.is_subset(&registered),
        "nodes {expected:?} should have registered, got {registered:?}"
    );
    let pods: Value = serde_json::from_str(&d.kubectl(&["get", "pods", "-A", "-o", "json"])?)?;
    for pod in pods["items"].as_array().into_iter().flatten() {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        let ips: Vec<&str> = pod["status"]["podIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["ip"].as_str())
            .collect();
        let own = node_ips.get(node).cloned().unwrap_or_default();
        if pod["spec"]["hostNetwork"] == true {
            ensure!(
                !ips.is_empty() && ips.iter().all(|ip| own.iter().any(|o| o == ip)),
                "hostNetwork pod {name} should have its node {node}'s addresses {own:?}, has {ips:?}"
            );
        } else if pod["status"]["phase"] == "Running" {
            ensure!(
                ips.len() == 2 && ips.iter().all(|ip| !own.iter().any(|o| o == ip)),
                "pod {name} on {node} should have an IPv4 and an IPv6 address of its own, has {ips:?}"
            );
        }
    }
    Ok(())
}
