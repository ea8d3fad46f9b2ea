//! The scenarios' workloads and what they see of them: the pool, echo Deployments, Services
//! over them, their ingress addresses and the node answering for an address.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::*;
use crate::e2e::{Driver, probes};
use crate::image::ImageKind;
use crate::process::wait_for;

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
    let mut spec = echo_pod_spec()?;
    if let Some(node) = node {
        spec["nodeSelector"] = json!({"kubernetes.io/hostname": node});
    }
    apply_echo_deployment(d, name, replicas, spec)
}

/// A Deployment of echo pods labelled `app: <name>`, one on each of `nodes` (required node
/// affinity to them, required anti-affinity between the pods); waits until it is available.
pub fn deploy_echo_on_each(d: &dyn Driver, name: &str, nodes: &[&str]) -> Result<()> {
    step(
        d,
        &format!("deploy echo pods as {name}, one on each of {nodes:?}"),
    );
    let mut spec = echo_pod_spec()?;
    spec["affinity"] = json!({
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": nodes}]},
        ]}},
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": name}}, "topologyKey": "kubernetes.io/hostname"},
        ]},
    });
    apply_echo_deployment(d, name, nodes.len() as u32, spec)
}

/// The echo container's pod spec: its name and node in the environment, a readiness probe,
/// and no privileges.
fn echo_pod_spec() -> Result<Value> {
    let image = ImageKind::Echo.reference()?;
    Ok(json!({
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
    }))
}

/// Applies the Deployment `name` of `replicas` pods with `spec` in the app namespace (creating
/// the namespace) and waits for its rollout.
fn apply_echo_deployment(d: &dyn Driver, name: &str, replicas: u32, spec: Value) -> Result<()> {
    d.kubectl_input(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP_NAMESPACE}})
            .to_string(),
    )?;
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

pub(super) fn node_of_mac(d: &dyn Driver, mac: &str) -> Result<String> {
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
