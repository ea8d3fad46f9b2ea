//! The end-to-end scenarios, each a step a user takes or a failure a cluster sees, checked from
//! the client on the LAN. They run on any [`Driver`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use super::Driver;
use super::probes;
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
/// up at once as the pods' waiting reason naming the image; uninstalling cleans it up.
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
    d.helm(&[
        "uninstall",
        RELEASE,
        "-n",
        NAMESPACE,
        "--wait",
        "--timeout=120s",
    ])?;
    Ok(())
}

/// Applies the pool (every range of [`Driver::pool_ranges`]) and an L2Advertisement for it.
pub fn apply_pool(d: &dyn Driver) -> Result<()> {
    step(d, "apply an IPAddressPool and an L2Advertisement");
    let manifests = [
        json!({
            "apiVersion": "ferrolb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": POOL},
            "spec": {"addresses": d.pool_ranges()},
        }),
        json!({
            "apiVersion": "ferrolb.io/v1beta1",
            "kind": "L2Advertisement",
            "metadata": {"name": POOL},
            "spec": {"ipAddressPools": [POOL]},
        }),
    ];
    for m in manifests {
        d.kubectl_input(&["apply", "-f", "-"], &m.to_string())?;
    }
    Ok(())
}

/// A Deployment of `replicas` echo pods labelled `app: <name>`, optionally pinned to `node`;
/// waits until it is available.
pub fn deploy_echo(d: &dyn Driver, name: &str, replicas: u32, node: Option<&str>) -> Result<()> {
    step(d, &format!("deploy {replicas} echo pod(s) as {name}"));
    d.kubectl_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP_NAMESPACE}})
            .to_string(),
    )?;
    let image = ImageKind::Echo.reference()?;
    let mut spec = json!({
        "terminationGracePeriodSeconds": 2,
        "containers": [{
            "name": "echo",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 8080, "name": "http"}],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            ],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
            "securityContext": {
                "runAsNonRoot": true,
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]},
            },
        }],
    });
    if let Some(node) = node {
        spec["nodeSelector"] = json!({"kubernetes.io/hostname": node});
    }
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": APP_NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    });
    d.kubectl_input(&["apply", "-f", "-"], &deployment.to_string())?;
    rollout_status(d, APP_NAMESPACE, &format!("deployment/{name}"))
}

/// Which IP families a Service asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Families {
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
    /// Both (RequireDualStack).
    Dual,
}

/// A LoadBalancer Service `name` on port 80 in front of the pods `app: <app>`.
pub fn expose(
    d: &dyn Driver,
    name: &str,
    app: &str,
    families: Families,
    local: bool,
) -> Result<()> {
    step(d, &format!("create LoadBalancer Service {name}"));
    let (policy, list) = match families {
        Families::V4 => ("SingleStack", json!(["IPv4"])),
        Families::V6 => ("SingleStack", json!(["IPv6"])),
        Families::Dual => ("RequireDualStack", json!(["IPv4", "IPv6"])),
    };
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": APP_NAMESPACE},
        "spec": {
            "type": "LoadBalancer",
            "ipFamilyPolicy": policy,
            "ipFamilies": list,
            "externalTrafficPolicy": if local { "Local" } else { "Cluster" },
            "selector": {"app": app},
            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP", "name": "http"}],
        },
    });
    d.kubectl_input(&["apply", "-f", "-"], &svc.to_string())?;
    Ok(())
}

/// The Service's ingress IPs (status.loadBalancer.ingress), possibly none yet.
pub fn ingress(d: &dyn Driver, name: &str) -> Result<Vec<IpAddr>> {
    let out = d.kubectl(&[
        "get",
        "service",
        name,
        "-n",
        APP_NAMESPACE,
        "-o",
        "jsonpath={.status.loadBalancer.ingress[*].ip}",
    ])?;
    out.split_whitespace()
        .map(|ip| {
            ip.parse()
                .with_context(|| format!("ingress IP {ip:?} of {name}"))
        })
        .collect()
}

/// Waits until the Service has `count` ingress IPs; returns them.
pub fn wait_ingress(d: &dyn Driver, name: &str, count: usize) -> Result<Vec<IpAddr>> {
    wait_for(
        &format!("Service {APP_NAMESPACE}/{name} to get {count} EXTERNAL-IP(s)"),
        TIMEOUT,
        || {
            let ips = ingress(d, name)?;
            Ok((ips.len() == count).then_some(ips))
        },
    )
}

/// The one node answering ARP/NDP for `ip`; fails when none or several answer.
pub fn owner(d: &dyn Driver, ip: IpAddr) -> Result<String> {
    let macs = probes::answering_macs(d, ip)?;
    let [mac] = macs.as_slice() else {
        bail!("{ip} should be answered by exactly one MAC, got {macs:?}");
    };
    node_of_mac(d, mac)
}

fn node_of_mac(d: &dyn Driver, mac: &str) -> Result<String> {
    for node in d.nodes() {
        if d.node_mac(&node)? == *mac {
            return Ok(node);
        }
    }
    bail!("MAC {mac} belongs to no node")
}

/// Waits until exactly one MAC, a node's, answers for `ip` (and, with `not`, not that node's).
pub fn wait_owner(d: &dyn Driver, ip: IpAddr, not: Option<&str>) -> Result<String> {
    wait_for(
        &format!("one node other than {not:?} to answer for {ip}"),
        NETWORK_TIMEOUT,
        || match owner(d, ip) {
            Ok(node) if Some(node.as_str()) != not => Ok(Some(node)),
            _ => Ok(None),
        },
    )
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
            &format!("a KernelAnswersForAddress Event on {svc} naming {other}"),
            Duration::from_secs(60),
            || {
                let out = d.kubectl(&[
                    "get",
                    "events",
                    "-n",
                    APP_NAMESPACE,
                    "--field-selector",
                    &format!("involvedObject.name={svc},reason=KernelAnswersForAddress"),
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

/// `kubectl get pods -o <output>` of the speaker pod on `node`.
pub fn speaker_pod_on(d: &dyn Driver, node: &str, output: &str) -> Result<String> {
    d.kubectl(&[
        "get",
        "pods",
        "-n",
        NAMESPACE,
        "-l",
        "app.kubernetes.io/component=speaker",
        "--field-selector",
        &format!("spec.nodeName={node}"),
        "-o",
        output,
    ])
}

/// Every Service's ingress IPs in the app namespace, by name.
pub fn all_ingress(d: &dyn Driver) -> Result<BTreeMap<String, Vec<IpAddr>>> {
    let out = d.kubectl(&["get", "services", "-n", APP_NAMESPACE, "-o", "json"])?;
    let list: Value = serde_json::from_str(&out)?;
    let mut map = BTreeMap::new();
    for svc in list["items"].as_array().into_iter().flatten() {
        let name = svc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ips = svc["status"]["loadBalancer"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["ip"].as_str()?.parse().ok())
            .collect();
        map.insert(name, ips);
    }
    Ok(map)
}

/// `helm upgrade` to a rebuilt image (the same content under a new tag, so every pod is
/// replaced): every Service keeps its IPs and answers afterwards.
pub fn check_upgrade_keeps_ips(d: &dyn Driver) -> Result<()> {
    let before = all_ingress(d)?;
    let tag = format!("{}-rebuilt", crate::image::app_version()?);
    let reference = format!("{}:{tag}", ImageKind::Ferrolb.repository());
    d.tag_ferrolb_image(&reference)?;
    step(d, &format!("helm upgrade to {reference}"));
    d.helm(&[
        "upgrade",
        RELEASE,
        "charts/ferrolb",
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--set",
        &format!("image.tag={tag}"),
    ])?;
    wait_rollout(d)?;
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
    wait_for("the ferrolb CRDs to be gone", TIMEOUT, || {
        let crds = d.kubectl(&["get", "crd", "-o", "name"])?;
        Ok((!crds.contains("ferrolb.io")).then_some(()))
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
    for ip in ips {
        wait_for(
            &format!("nobody to answer for {ip} after helm uninstall"),
            TIMEOUT,
            || Ok(probes::answering_macs(d, ip)?.is_empty().then_some(())),
        )?;
    }
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
