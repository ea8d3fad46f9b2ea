//! `cargo xtask demo`: ferrolb end to end on a fresh 3-node lab, the way a user meets it.
//!
//! ```text
//!  cluster::up_with(real nodes, run_ferrolb) ── control plane, kubelet + containerd + kube-proxy
//!      per node, images built and imported, `helm install ferrolb charts/ferrolb` (README's)
//!  kubectl apply docs/examples/{ipaddresspool,l2advertisement,deployment,service}.yaml
//!  wait for the pods and the Service's EXTERNAL-IPs ── kubectl get svc -o wide
//!  ip netns exec client curl http://<each IP>/ ── the echo pod that answered, its node, and the
//!      node the client's ARP/NDP resolved the IP to
//!  cluster::down (unless kept)
//! ```
//!
//! The building (control plane) is the caller's (`xtask/src/demo.rs`); the images are built by
//! [`cluster::up_with`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferrolb_crds::contract::condition::ANNOUNCED;
use serde_json::Value;

use crate::bins;
use crate::cluster::{self, Up, UpOptions};
use crate::node::ProxyMode;
use crate::process::{run, wait_for};

/// Lab nodes the demo runs.
pub const NODES: usize = 3;
/// Apiserver port (as `cargo xtask cluster up`).
pub const PORT: u16 = 6443;
/// The sample manifests, applied in this order, under the workspace root.
pub const EXAMPLES: [&str; 4] = [
    "docs/examples/ipaddresspool.yaml",
    "docs/examples/l2advertisement.yaml",
    "docs/examples/deployment.yaml",
    "docs/examples/service.yaml",
];
/// The sample Service (namespace `default`).
pub const SERVICE: &str = "demo";
const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the demo with its cluster in `dir`; tears everything down afterwards unless `keep`
/// (also when the demo fails, so a failed run leaves nothing behind).
pub fn run_demo(dir: &Path, keep: bool) -> Result<()> {
    eprintln!(
        "==> starting a control plane and {NODES} real nodes (kubelet, containerd, kube-proxy), \
         building and loading the images, and installing ferrolb with helm"
    );
    let up = cluster::up_with(
        dir,
        &UpOptions {
            nodes: NODES,
            port: PORT,
            real_nodes: Some(ProxyMode::Nftables),
            run_ferrolb: true,
            router: None,
        },
    )?;
    let shown = show(&up).map(|_| ());
    if let Err(e) = &shown {
        eprintln!("demo failed: {e:#}");
        eprintln!("logs: {}", dir.display());
    }
    if keep {
        println!();
        println!("The cluster keeps running:");
        println!(
            "  . {}   # KUBECONFIG, kubectl and helm on PATH, lab names",
            up.env_file.display()
        );
        println!("  kubectl get svc -o wide");
        println!("  ip netns exec client curl http://<EXTERNAL-IP>/");
        println!("  cargo xtask cluster down    # stop it");
    } else {
        eprintln!("==> tearing the cluster down (pass --keep to keep it)");
        cluster::down()?;
    }
    shown
}

/// `kubectl` with the cluster's admin kubeconfig.
fn kubectl(up: &Up) -> Result<Command> {
    let mut cmd = Command::new(bins::binary("kubectl")?);
    cmd.arg(format!("--kubeconfig={}", up.kubeconfig.display()));
    Ok(cmd)
}

/// What the client got from one EXTERNAL-IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The EXTERNAL-IP.
    pub ip: IpAddr,
    /// The HTTP body: on real nodes `pod=<echo pod> node=<its node> client=<address it saw>`;
    /// with host processes the name of the node whose lab backend answered, and a newline.
    pub body: String,
    /// The lab node whose MAC the client's kernel resolved the IP to, if any.
    pub resolved_to: Option<String>,
}

/// Applies the sample manifests to a cluster `up` made with ferrolb running, waits for the
/// Service's EXTERNAL-IPs and the speakers' condition, and curls each IP from the client,
/// printing what a user would see. Returns what each IP answered.
pub fn show(up: &Up) -> Result<Vec<Answer>> {
    let root = bins::workspace_root();
    for example in EXAMPLES {
        println!("$ kubectl apply -f {example}");
        let out = run(kubectl(up)?.args(["apply", "-f"]).arg(root.join(example)))?;
        print!("{out}");
    }
    if up.real_nodes {
        eprintln!("==> waiting for the demo pods");
        run(kubectl(up)?.args([
            "rollout",
            "status",
            "deployment/demo",
            "-n",
            "default",
            &format!("--timeout={}s", TIMEOUT.as_secs()),
        ]))
        .context("the demo pods did not become ready (kubectl get pods -o wide tells why)")?;
    }

    eprintln!("==> waiting for the Service's EXTERNAL-IPs");
    let ips = wait_for("an EXTERNAL-IP for each family", TIMEOUT, || {
        let svc = service(up)?;
        let families = svc["spec"]["ipFamilies"].as_array().map_or(0, Vec::len);
        let ips = external_ips(&svc);
        Ok((families > 0 && ips.len() == families).then_some(ips))
    })
    .with_context(|| {
        "the Service got no EXTERNAL-IP; see `kubectl logs -n ferrolb-system \
         deploy/ferrolb-controller` and `kubectl describe svc demo`"
            .to_string()
    })?;
    println!("$ kubectl get svc -o wide");
    print!("{}", run(kubectl(up)?.args(["get", "svc", "-o", "wide"]))?);
    println!("$ kubectl get ipaddresspools");
    print!("{}", run(kubectl(up)?.args(["get", "ipaddresspools"]))?);

    let announced = wait_for("the speakers' Announced condition", TIMEOUT, || {
        let svc = service(up)?;
        Ok(svc["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == ANNOUNCED))
            .filter(|c| c["status"] == "True")
            .and_then(|c| c["message"].as_str().map(str::to_string)))
    })
    .with_context(|| {
        "no speaker reported announcing the Service; see `kubectl logs -n ferrolb-system \
         ds/ferrolb-speaker`"
            .to_string()
    })?;
    println!("{ANNOUNCED}: {announced}");

    let mut answers = Vec::new();
    for ip in ips {
        let url = match ip {
            IpAddr::V4(v4) => format!("http://{v4}/"),
            IpAddr::V6(v6) => format!("http://[{v6}]/"),
        };
        println!("$ ip netns exec {} curl {url}", up.client.name);
        let answer = wait_for(&format!("an answer from {url}"), TIMEOUT, || {
            Ok(up
                .client
                .exec("curl", &["-sS", "--max-time", "2", &url])
                .ok()
                .filter(|body| !body.trim().is_empty()))
        })
        .with_context(|| {
            format!(
                "nothing answered {url} from the client namespace; see the speaker logs \
                 (`kubectl logs -n ferrolb-system ds/ferrolb-speaker`) and the node logs in {}",
                dir_of(up).join("nodes").display()
            )
        })?;
        print!("{answer}");
        let mac = up
            .client
            .exec("ip", &["neigh", "show", &ip.to_string()])
            .unwrap_or_default();
        let owner = up.nodes.iter().find(|n| mac.contains(&n.mac));
        println!(
            "  ({ip} resolved to {} on the client: {})",
            mac.split_whitespace()
                .skip_while(|w| *w != "lladdr")
                .nth(1)
                .unwrap_or("nothing"),
            owner.map_or("no lab node", |n| n.name.as_str())
        );
        answers.push(Answer {
            ip,
            body: answer,
            resolved_to: owner.map(|n| n.name.clone()),
        });
    }
    Ok(answers)
}

/// The demo Service as JSON.
fn service(up: &Up) -> Result<Value> {
    let out = run(kubectl(up)?.args(["get", "svc", SERVICE, "-n", "default", "-o", "json"]))?;
    Ok(serde_json::from_str(&out)?)
}

/// `status.loadBalancer.ingress[*].ip`, parsed.
fn external_ips(svc: &Value) -> Vec<IpAddr> {
    svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str()?.parse().ok())
        .collect()
}

fn dir_of(up: &Up) -> PathBuf {
    up.env_file
        .parent()
        .map_or_else(PathBuf::new, Path::to_path_buf)
}

/// Fails unless every sample manifest exists (a cheap check before the long start-up).
pub fn check_examples() -> Result<()> {
    let root = bins::workspace_root();
    for example in EXAMPLES {
        if !root.join(example).is_file() {
            bail!("{example} is missing from {}", root.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ips_are_read_from_the_status() {
        let svc = serde_json::json!({"status": {"loadBalancer": {"ingress": [
            {"ip": "198.51.100.200", "ipMode": "VIP"}, {"ip": "2001:db8:1::200"}, {"hostname": "x"}
        ]}}});
        assert_eq!(
            external_ips(&svc),
            [
                "198.51.100.200".parse::<IpAddr>().unwrap(),
                "2001:db8:1::200".parse().unwrap()
            ]
        );
        assert!(external_ips(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn sample_manifests_match_the_lab() {
        check_examples().unwrap();
        let root = bins::workspace_root();
        let pool = std::fs::read_to_string(root.join(EXAMPLES[0])).unwrap();
        let pool: Value = serde_yaml::from_str(&pool).unwrap();
        assert_eq!(pool["kind"], "IPAddressPool");
        let addresses: Vec<&str> = pool["spec"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            addresses,
            [
                "198.51.100.200-198.51.100.250",
                "2001:db8:1::200-2001:db8:1::2ff"
            ]
        );
        let l2: Value =
            serde_yaml::from_str(&std::fs::read_to_string(root.join(EXAMPLES[1])).unwrap())
                .unwrap();
        assert_eq!(l2["spec"]["ipAddressPools"][0], pool["metadata"]["name"]);
        let deployment: Value =
            serde_yaml::from_str(&std::fs::read_to_string(root.join(EXAMPLES[2])).unwrap())
                .unwrap();
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            crate::image::ImageKind::Echo.reference().unwrap()
        );
        let svc: Value =
            serde_yaml::from_str(&std::fs::read_to_string(root.join(EXAMPLES[3])).unwrap())
                .unwrap();
        assert_eq!(
            svc["spec"]["selector"],
            deployment["spec"]["template"]["metadata"]["labels"]
        );
        assert_eq!(svc["metadata"]["name"], SERVICE);
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        assert_eq!(svc["spec"]["ipFamilyPolicy"], "PreferDualStack");
        assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    }
}
