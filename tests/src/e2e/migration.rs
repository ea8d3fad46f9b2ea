//! The move from MetalLB to ferrolb on real nodes, as `docs/migrate-from-metallb.md` tells it.
//!
//! MetalLB (controller and speaker built from its Go module, [`crate::metallb::release`]) is
//! installed from its own `metallb-native.yaml` and allocates IPs to Services that use its
//! annotations. Then every `sh` block of the guide runs in order ([`super::doc_steps`]), while
//! [`ServiceWatch`] records every state of every Service and [`LanWatch`] asks the LAN, round
//! after round, who answers for each IP and whether HTTP gets through. The journey fails if a
//! Service ever shows other IPs than MetalLB gave it (none included), if any request is answered
//! twice, or if a step's own check fails; afterwards MetalLB's annotations must still work for
//! new Services.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use ferrolb_crds::contract::annotation::{
    ADDRESS_POOL_SUFFIX, ALLOCATED_FROM_POOL, ALLOW_SHARED_IP_SUFFIX, LOAD_BALANCER_IPS_SUFFIX,
    REQUEST_PREFIXES,
};
use serde_json::{Value, json};

use super::Driver;
use super::doc_steps::{self, Shell};
use super::probes;
use super::scenarios::{self, APP_NAMESPACE, NETWORK_TIMEOUT, TIMEOUT};
use super::testbed::Testbed;
use super::watch::{self, LanSummary, LanWatch, ServiceWatch};
use crate::bins;
use crate::metallb::release::{self, Component};
use crate::process::wait_for;

/// The guide the journey follows, from the repository root.
pub const GUIDE: &str = "docs/migrate-from-metallb.md";
/// The headings of the guide's `sh` blocks, in the page's order: the journey checks each
/// block's outcome, so a guide whose steps change must change the journey too.
pub const STEPS: [&str; 8] = [
    "1. Translate MetalLB's configuration",
    "2. Install ferrolb, idle",
    "3. Hand allocation over",
    "3. Hand allocation over",
    "4. Hand announcing over",
    "4. Hand announcing over",
    "5. Remove MetalLB",
    "Going back",
];
/// The order the journey runs the blocks in (indices into [`STEPS`]): forward to the end of
/// step 4, back to MetalLB, steps 3 and 4 again, then step 5.
pub const RUN_ORDER: [usize; 12] = [0, 1, 2, 3, 4, 5, 7, 2, 3, 4, 5, 6];

/// MetalLB's pool with automatic assignment, and the one Services must ask for by name.
const POOL: &str = "lan";
const RESERVED_POOL: &str = "reserved";
const RESERVED_RANGE: &str = "198.51.100.192-198.51.100.199";
const PINNED_IP: &str = "198.51.100.240";
const SHARED_IP: &str = "198.51.100.230";
const SHARING_KEY: &str = "shared";

/// What the move looked like.
#[derive(Debug)]
pub struct Report {
    /// Each Service's IPs, MetalLB's and kept.
    pub ips: BTreeMap<String, Vec<IpAddr>>,
    /// Service states the watch saw during the move.
    pub service_states: usize,
    /// What the LAN saw during the move.
    pub lan: LanSummary,
}

/// MetalLB's annotation `metallb.io/<suffix>` (`universe`: `metallb.universe.tf/<suffix>`).
fn metallb_annotation(suffix: &str, universe: bool) -> String {
    let prefix = REQUEST_PREFIXES
        .iter()
        .find(|p| p.starts_with("metallb.") && p.contains("universe") == universe)
        .expect("both MetalLB spellings are request prefixes");
    format!("{prefix}{suffix}")
}

/// A LoadBalancer Service over the echo pods on `port`, with `annotations`.
fn service(name: &str, port: u16, annotations: &[(String, &str)]) -> Value {
    let annotations: BTreeMap<&str, &str> =
        annotations.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": APP_NAMESPACE, "annotations": annotations},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "echo"},
            "ports": [{"port": port, "targetPort": 8080, "protocol": "TCP", "name": "http"}],
        },
    })
}

/// The whole move; `scratch` is the reader's working directory.
pub fn journey(tb: &Testbed, scratch: &Path) -> Result<Report> {
    let manifest = install_metallb(tb)?;
    configure_metallb(tb)?;
    let before = metallb_allocates(tb)?;

    let mut targets = vec![];
    for (name, port) in [
        ("web", 80),
        ("pinned", 80),
        ("shared-b", 81),
        ("reserved", 80),
    ] {
        for ip in &before[name] {
            targets.push((*ip, port));
        }
    }
    for &(ip, port) in &targets {
        probes::curl_until(tb, ip, port, NETWORK_TIMEOUT, |_| true)
            .with_context(|| format!("MetalLB should serve {ip}:{port} before the move"))?;
    }

    let names: Vec<&str> = before.keys().map(String::as_str).collect();
    let services = ServiceWatch::start(
        &tb.kubectl_binary()?,
        tb.kubeconfig(),
        APP_NAMESPACE,
        &names,
    )?;
    let pcap = scratch.with_extension("ndp.pcap");
    let lan = LanWatch::start(
        tb.lab().client().clone(),
        tb.client_interface(),
        targets.clone(),
        &pcap,
    )?;
    let followed = follow_guide(tb, scratch, &manifest, &before, &targets);
    let lan = watch::summarize(&lan.stop()?);
    let states = services.stop()?;
    followed?;

    let deviations = watch::ip_deviations(&states, &before);
    ensure!(
        deviations.is_empty(),
        "a Service's IPs changed during the move:\n{}",
        deviations.join("\n")
    );
    ensure!(
        lan.http_failures.is_empty(),
        "HTTP from the LAN failed during the move:\n{}",
        lan.http_failures.join("\n")
    );
    ensure!(
        lan.double_answers.is_empty(),
        "two nodes answered one ARP request or NDP solicitation during the move:\n{}",
        lan.double_answers.join("\n")
    );
    eprintln!("==> migration: LAN during the move: {lan:?}");
    metallb_annotations_still_work(tb)?;
    Ok(Report {
        ips: before,
        service_states: states.len(),
        lan,
    })
}

/// MetalLB's images on every node, then `kubectl apply -f metallb-native.yaml` as MetalLB's
/// docs say; returns the manifest's path.
fn install_metallb(tb: &Testbed) -> Result<std::path::PathBuf> {
    eprintln!(
        "==> migration: MetalLB {} from its Go module",
        release::VERSION
    );
    tb.import_images(&release::images()?)?;
    let manifest = release::native_manifest()?;
    let manifest_arg = manifest.display().to_string();
    tb.kubectl(&["apply", "-f", &manifest_arg])
        .context("kubectl apply -f metallb-native.yaml")?;
    // The testbed's apiserver runs outside the pod network (as on many managed control planes
    // without extra routing), so it cannot call MetalLB's validating webhook; without this
    // every MetalLB object would be refused. Validation is not what this journey tests.
    tb.kubectl(&[
        "delete",
        "validatingwebhookconfiguration",
        "metallb-webhook-configuration",
    ])?;
    for component in Component::ALL {
        let kind = match component {
            Component::Controller => "deployment",
            Component::Speaker => "daemonset",
        };
        let args = scenarios::rollout_status_args(
            release::NAMESPACE,
            &format!("{kind}/{}", component.name()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tb.kubectl(&args).with_context(|| {
            format!(
                "MetalLB's {} should roll out: {}",
                component.name(),
                scenarios::pods_summary(tb)
            )
        })?;
    }
    Ok(manifest)
}

/// Two MetalLB pools (one only for Services that name it) and an L2Advertisement of both.
fn configure_metallb(tb: &Testbed) -> Result<()> {
    let ns = release::NAMESPACE;
    let objects = [
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
               "metadata": {"name": POOL, "namespace": ns},
               "spec": {"addresses": tb.pool_ranges()}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
               "metadata": {"name": RESERVED_POOL, "namespace": ns},
               "spec": {"addresses": [RESERVED_RANGE], "autoAssign": false}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
               "metadata": {"name": POOL, "namespace": ns},
               "spec": {"ipAddressPools": [POOL, RESERVED_POOL]}}),
    ];
    for object in objects {
        tb.kubectl_input(&["apply", "-f", "-"], &object.to_string())?;
    }
    Ok(())
}

/// Echo pods and five Services, four of them using MetalLB's annotations; waits until MetalLB
/// gave each its IPs and checks it honoured the annotations. Returns every Service's IPs.
fn metallb_allocates(tb: &Testbed) -> Result<BTreeMap<String, Vec<IpAddr>>> {
    scenarios::deploy_echo(tb, "echo", 2, None)?;
    scenarios::expose(tb, "web", "echo", scenarios::Families::Dual, false)?;
    let ips = metallb_annotation(LOAD_BALANCER_IPS_SUFFIX, true);
    let shared = metallb_annotation(ALLOW_SHARED_IP_SUFFIX, false);
    let ips_io = metallb_annotation(LOAD_BALANCER_IPS_SUFFIX, false);
    let pool = metallb_annotation(ADDRESS_POOL_SUFFIX, true);
    let services = [
        service("pinned", 80, &[(ips, PINNED_IP)]),
        service(
            "shared-a",
            80,
            &[(shared.clone(), SHARING_KEY), (ips_io.clone(), SHARED_IP)],
        ),
        service(
            "shared-b",
            81,
            &[(shared, SHARING_KEY), (ips_io, SHARED_IP)],
        ),
        service("reserved", 80, &[(pool, RESERVED_POOL)]),
    ];
    for svc in services {
        tb.kubectl_input(&["apply", "-f", "-"], &svc.to_string())?;
    }
    let mut all = BTreeMap::new();
    for (name, count) in [
        ("web", 2),
        ("pinned", 1),
        ("shared-a", 1),
        ("shared-b", 1),
        ("reserved", 1),
    ] {
        all.insert(name.to_string(), scenarios::wait_ingress(tb, name, count)?);
    }
    let one = |name: &str| all[name][0].to_string();
    ensure!(
        one("pinned") == PINNED_IP,
        "MetalLB gave pinned {}",
        one("pinned")
    );
    ensure!(
        one("shared-a") == SHARED_IP && one("shared-b") == SHARED_IP,
        "MetalLB should share {SHARED_IP}: {all:?}"
    );
    ensure!(
        in_range(all["reserved"][0], RESERVED_RANGE),
        "MetalLB gave reserved {} outside {RESERVED_RANGE}",
        one("reserved")
    );
    eprintln!("==> migration: MetalLB allocated {all:?}");
    Ok(all)
}

fn in_range(ip: IpAddr, range: &str) -> bool {
    let Some((first, last)) = range.split_once('-') else {
        return false;
    };
    match (first.parse::<IpAddr>(), last.parse::<IpAddr>()) {
        (Ok(first), Ok(last)) => first <= ip && ip <= last,
        _ => false,
    }
}

/// Runs every `sh` block of the guide, checking after each what its step promises.
fn follow_guide(
    tb: &Testbed,
    scratch: &Path,
    manifest: &Path,
    before: &BTreeMap<String, Vec<IpAddr>>,
    targets: &[(IpAddr, u16)],
) -> Result<()> {
    let page = bins::workspace_root().join(GUIDE);
    let text = std::fs::read_to_string(&page).with_context(|| format!("reading {GUIDE}"))?;
    let steps = doc_steps::sh_blocks(&text);
    let headings: Vec<&str> = steps.iter().map(|s| s.heading.as_str()).collect();
    ensure!(
        headings == STEPS,
        "{GUIDE}'s sh blocks are under {headings:?}; the journey checks {STEPS:?}"
    );
    // The reader's directory: the repository's chart where the guide says `charts/ferrolb`,
    // and the manifest MetalLB was installed from.
    if scratch.exists() {
        std::fs::remove_dir_all(scratch)?;
    }
    std::fs::create_dir_all(scratch)?;
    std::os::unix::fs::symlink(
        bins::workspace_root().join("charts"),
        scratch.join("charts"),
    )?;
    std::fs::copy(manifest, scratch.join("metallb-native.yaml"))?;
    let plugin = bins::kubectl_ferrolb()?;
    let shell = Shell {
        dir: scratch.to_path_buf(),
        path: [tb.kubectl_binary()?, tb.helm_binary()?, plugin]
            .iter()
            .filter_map(|b| b.parent().map(Path::to_path_buf))
            .collect(),
        kubeconfig: tb.kubeconfig().to_path_buf(),
    };
    for i in RUN_ORDER {
        let out = shell.run(Path::new(GUIDE), &steps[i])?;
        match i {
            0 => check_translation(scratch, &out.stderr)?,
            2 => check_ferrolb_adopted(tb, before)?,
            3 => check_status_lists_every_ip(&out.stdout, before)?,
            5 => {
                check_status_lists_every_ip(&out.stdout, before)?;
                check_status_shows_membership(tb, &out.stdout)?;
            }
            4 => check_ferrolb_answers(tb, targets)?,
            6 => check_metallb_gone(tb)?,
            7 => check_metallb_answers(tb, targets)?,
            _ => {}
        }
    }
    Ok(())
}

/// Step 1 wrote both pools and the advertisement as ferrolb's, and MetalLB's copy; the
/// plugin said that the apiserver could not check its output yet (ferrolb is not installed).
fn check_translation(scratch: &Path, stderr: &str) -> Result<()> {
    ensure!(
        stderr.contains("ferrolb's CRDs are not installed in this cluster"),
        "kubectl ferrolb migrate metallb should say its output is unchecked: {stderr}"
    );
    let config = std::fs::read_to_string(scratch.join("ferrolb-config.yaml"))?;
    let mut kinds = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&config) {
        let object: Value = serde::Deserialize::deserialize(doc)?;
        if object.is_null() {
            continue;
        }
        ensure!(
            object["apiVersion"] == "ferrolb.io/v1beta1"
                && object["metadata"]["namespace"].is_null(),
            "ferrolb-config.yaml should hold cluster-scoped ferrolb objects: {object}"
        );
        kinds.push(format!(
            "{}/{}",
            object["kind"].as_str().unwrap_or_default(),
            object["metadata"]["name"].as_str().unwrap_or_default()
        ));
    }
    kinds.sort();
    ensure!(
        kinds
            == [
                "IPAddressPool/lan",
                "IPAddressPool/reserved",
                "L2Advertisement/lan"
            ],
        "ferrolb-config.yaml holds {kinds:?}"
    );
    ensure!(
        std::fs::metadata(scratch.join("metallb-config.yaml"))?.len() > 0,
        "metallb-config.yaml is empty"
    );
    Ok(())
}

/// After ferrolb's controller starts: every Service carries ferrolb's pool annotation, naming
/// the pool that holds its IPs, and its IPs are MetalLB's.
fn check_ferrolb_adopted(tb: &Testbed, before: &BTreeMap<String, Vec<IpAddr>>) -> Result<()> {
    wait_for(
        "ferrolb's controller to adopt every Service",
        TIMEOUT,
        || {
            let list: Value = serde_json::from_str(&tb.kubectl(&[
                "get",
                "services",
                "-n",
                APP_NAMESPACE,
                "-o",
                "json",
            ])?)?;
            let mut adopted = 0;
            for svc in list["items"].as_array().into_iter().flatten() {
                let name = svc["metadata"]["name"].as_str().unwrap_or_default();
                let Some(want) = before.get(name) else {
                    continue;
                };
                let Some(pool) = svc["metadata"]["annotations"][ALLOCATED_FROM_POOL].as_str()
                else {
                    continue;
                };
                let expected_pool = if name == "reserved" {
                    RESERVED_POOL
                } else {
                    POOL
                };
                if pool != expected_pool {
                    bail!("ferrolb put Service {name} in pool {pool}, not {expected_pool}");
                }
                let ips: Vec<IpAddr> = svc["status"]["loadBalancer"]["ingress"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["ip"].as_str()?.parse().ok())
                    .collect();
                if ips != *want {
                    bail!(
                        "Service {name} has {ips:?} after ferrolb adopted it, MetalLB gave {want:?}"
                    );
                }
                adopted += 1;
            }
            Ok((adopted == before.len()).then_some(()))
        },
    )
}

/// `kubectl ferrolb status` printed every Service's IPs.
fn check_status_lists_every_ip(out: &str, before: &BTreeMap<String, Vec<IpAddr>>) -> Result<()> {
    for (name, ips) in before {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("{APP_NAMESPACE}/{name} ")))
            .with_context(|| format!("kubectl ferrolb status does not list {name}:\n{out}"))?;
        for ip in ips {
            ensure!(
                line.contains(&ip.to_string()),
                "kubectl ferrolb status shows {name} without {ip}: {line}"
            );
        }
    }
    Ok(())
}

/// `kubectl ferrolb status` (which exited 0: healthy) showed each speaker pod seeing every
/// node's speaker alive, read from the speakers' `/membership` through the pod proxy.
fn check_status_shows_membership(tb: &Testbed, out: &str) -> Result<()> {
    let all = tb.nodes().join(",");
    for node in tb.nodes() {
        let line = out
            .lines()
            .find(|l| {
                l.trim_start().starts_with(&format!("{node} ")) && l.contains("ferrolb-speaker-")
            })
            .with_context(|| {
                format!("kubectl ferrolb status lists no speaker on {node}:\n{out}")
            })?;
        ensure!(
            line.contains(&all),
            "the speaker on {node} should see {all} alive: {line}\n{out}"
        );
    }
    Ok(())
}

/// After ferrolb's speakers start: each IP is answered by exactly one node and serves HTTP.
fn check_ferrolb_answers(tb: &Testbed, targets: &[(IpAddr, u16)]) -> Result<()> {
    check_one_node_answers(tb, targets, true).context("ferrolb's speakers should answer")
}

/// Each target is answered by exactly one node (IPv4 only unless `ndp`: ndisc6 reports no
/// answer to MetalLB's advertisements, sent from the link-local address); every target serves
/// HTTP.
fn check_one_node_answers(tb: &Testbed, targets: &[(IpAddr, u16)], ndp: bool) -> Result<()> {
    for &(ip, port) in targets {
        if ip.is_ipv4() || ndp {
            scenarios::wait_owner(tb, ip, None)?;
        }
        probes::curl_until(tb, ip, port, NETWORK_TIMEOUT, |_| true)?;
    }
    Ok(())
}

/// After going back: MetalLB's speakers answer for each IP, from one node, and it serves HTTP;
/// no pod of ferrolb runs.
fn check_metallb_answers(tb: &Testbed, targets: &[(IpAddr, u16)]) -> Result<()> {
    let pods = tb.kubectl(&["get", "pods", "-n", scenarios::NAMESPACE, "-o", "name"])?;
    ensure!(
        pods.trim().is_empty(),
        "ferrolb pods still run after going back:\n{pods}"
    );
    check_one_node_answers(tb, targets, false).context("MetalLB's speakers should answer again")
}

/// After step 5: MetalLB's namespace and CRDs are gone.
fn check_metallb_gone(tb: &Testbed) -> Result<()> {
    wait_for("MetalLB's namespace to be deleted", TIMEOUT, || {
        let out = tb.kubectl(&["get", "namespaces", "-o", "name"])?;
        Ok((!out
            .lines()
            .any(|l| l == format!("namespace/{}", release::NAMESPACE)))
        .then_some(()))
    })?;
    let crds = tb.kubectl(&["get", "crd", "-o", "name"])?;
    ensure!(
        !crds.contains(".metallb.io"),
        "MetalLB's CRDs are still there:\n{crds}"
    );
    Ok(())
}

/// New Services with MetalLB's annotations, after MetalLB is gone: a requested IP, a shared
/// IP (with the Services MetalLB put there) and a pool by name, each honoured and served.
fn metallb_annotations_still_work(tb: &Testbed) -> Result<()> {
    let services = [
        service(
            "pinned-2",
            80,
            &[(
                metallb_annotation(LOAD_BALANCER_IPS_SUFFIX, false),
                "198.51.100.241",
            )],
        ),
        service(
            "shared-c",
            82,
            &[
                (
                    metallb_annotation(ALLOW_SHARED_IP_SUFFIX, true),
                    SHARING_KEY,
                ),
                (
                    metallb_annotation(LOAD_BALANCER_IPS_SUFFIX, true),
                    SHARED_IP,
                ),
            ],
        ),
        service(
            "reserved-2",
            80,
            &[(
                metallb_annotation(ADDRESS_POOL_SUFFIX, false),
                RESERVED_POOL,
            )],
        ),
    ];
    for svc in services {
        tb.kubectl_input(&["apply", "-f", "-"], &svc.to_string())?;
    }
    let pinned = scenarios::wait_ingress(tb, "pinned-2", 1)?[0];
    ensure!(
        pinned.to_string() == "198.51.100.241",
        "pinned-2 got {pinned}"
    );
    let shared = scenarios::wait_ingress(tb, "shared-c", 1)?[0];
    ensure!(
        shared.to_string() == SHARED_IP,
        "shared-c got {shared}, not the shared {SHARED_IP}"
    );
    let reserved = scenarios::wait_ingress(tb, "reserved-2", 1)?[0];
    let first = scenarios::ingress(tb, "reserved")?;
    ensure!(
        in_range(reserved, RESERVED_RANGE) && !first.contains(&reserved),
        "reserved-2 got {reserved}: it should come from {RESERVED_RANGE} and not be reserved's {first:?}"
    );
    for (ip, port) in [(pinned, 80), (shared, 82), (reserved, 80)] {
        probes::curl_until(tb, ip, port, NETWORK_TIMEOUT, |_| true)
            .with_context(|| format!("{ip}:{port} should serve after the move"))?;
    }
    Ok(())
}
