//! The kind driver: the scenarios on a [kind](https://kind.sigs.k8s.io) cluster, for people who
//! have Docker and kind (the testbed driver needs neither).
//!
//! ```text
//!  Docker network `kind` (e.g. 172.18.0.0/16 + fc00:f853:ccd:e793::/64)
//!   ├─ ferrolb-e2e-control-plane   kubeadm labels it exclude-from-external-load-balancers
//!   ├─ ferrolb-e2e-worker          ┐ node containers: kubelet, containerd, kube-proxy,
//!   ├─ ferrolb-e2e-worker2         ┘ ferrolb's and echo's images loaded from target/images
//!   └─ ferrolb-e2e-client          debian:bookworm-slim + curl, arping, ndisc6, iproute2
//!  pool: the top of each subnet, e.g. 172.18.255.200-172.18.255.250 (as MetalLB's kind docs)
//! ```
//!
//! [`Kind::start`] checks the tools, creates the cluster (`networking.ipFamily: dual`, kube-proxy
//! in the chosen mode), loads the image archives with `kind load image-archive`, writes the
//! kubeconfig to a file of its own (the user's `~/.kube/config` is left alone) and starts the
//! client container on the `kind` network. Dropping it deletes the client and the cluster unless
//! [`Options::keep`] is set.
//!
//! The node names are the node containers' names: kind names each Kubernetes node after its
//! container. [`Driver::nodes`] lists the workers first, then the control-plane node: the
//! scenarios pin pods to the first two, and the control-plane node is tainted `NoSchedule` and
//! (in clusters with workers) labelled `node.kubernetes.io/exclude-from-external-load-balancers`
//! by kubeadm, so it never answers for an address and is never the node powered off.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use super::Driver;
use crate::image::{self, ImageKind};
use crate::node::ProxyMode;
use crate::process;

mod network;
mod tools;

use network::check_dual_stack_network;
pub use network::{
    Container, interface_with_address, network_name, network_subnets, order_nodes,
    parse_containers, pool_range, pool_ranges_of_network, render_config,
};
pub use tools::{Missing, Problem, Tools, check_tools, parse_kind_version, tool_binary};

/// The cluster's name (`kind create cluster --name`), and so the prefix of its node containers.
pub const CLUSTER_NAME: &str = "ferrolb-e2e";
/// The Docker network kind puts every cluster on (`KIND_EXPERIMENTAL_DOCKER_NETWORK` overrides it).
pub const DEFAULT_NETWORK: &str = "kind";
/// The client container's image when `FERROLB_E2E_CLIENT_IMAGE` is unset: Debian, with the same
/// packages as the testbed's client namespace (the probes parse Debian's `arping`, Thomas
/// Habets' one, and `ndisc6`), installed with apt-get when the container starts.
pub const DEFAULT_CLIENT_IMAGE: &str = "debian:bookworm-slim";
/// The Debian packages the client needs, and a command each provides.
pub const CLIENT_PACKAGES: &[(&str, &str)] = &[
    ("curl", "curl"),
    ("arping", "arping"),
    ("ndisc6", "ndisc6"),
    ("iproute2", "ip"),
];
/// Environment variable naming the kind node image (`kind create cluster --image`).
pub const NODE_IMAGE_ENV: &str = "FERROLB_E2E_KIND_IMAGE";
/// Environment variable naming the client container's image.
pub const CLIENT_IMAGE_ENV: &str = "FERROLB_E2E_CLIENT_IMAGE";
/// The Docker label kind puts on node containers with the node's role.
pub const ROLE_LABEL: &str = "io.x-k8s.kind.role";
/// The Docker label kind puts on node containers with the cluster's name.
pub const CLUSTER_LABEL: &str = "io.x-k8s.kind.cluster";
/// The Docker label on the client container, with the cluster's name.
pub const CLIENT_LABEL: &str = "io.ferrolb.e2e.client";
/// The first kind release that accepts `networking.kubeProxyMode: nftables` (v0.23.0).
pub const KIND_NFTABLES_SINCE: (u32, u32, u32) = (0, 23, 0);
/// How many addresses each pool range holds.
pub const POOL_SIZE: u128 = 51;
/// How far below the subnet's last address each pool range ends.
pub const POOL_TOP_GAP: u128 = 5;
/// How long nodes may take to become Ready after `kind create cluster` returns.
const NODES_READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `docker info` may take to answer.
const DOCKER_INFO_TIMEOUT: Duration = Duration::from_secs(20);

/// How to make the cluster.
#[derive(Clone, Debug)]
pub struct Options {
    /// Cluster name (default [`CLUSTER_NAME`]).
    pub name: String,
    /// Worker nodes beside the one control-plane node (at least 2: the scenarios pin pods to two
    /// nodes and power one off).
    pub workers: usize,
    /// kube-proxy's mode (kind's default is iptables; nftables needs kind >= v0.23 and a
    /// Kubernetes >= v1.31 node image).
    pub proxy_mode: ProxyMode,
    /// Node image (`kind create cluster --image`); `None` for kind's default.
    pub node_image: Option<String>,
    /// The client container's image.
    pub client_image: String,
    /// Image archives loaded into every node with `kind load image-archive`.
    pub archives: Vec<PathBuf>,
    /// Where the kind config, the kubeconfig and exported logs go.
    pub dir: PathBuf,
    /// Leave the cluster and the client running when dropped.
    pub keep: bool,
}

impl Default for Options {
    /// 1 control-plane + 2 workers, iptables, the node image from `$FERROLB_E2E_KIND_IMAGE`
    /// (else kind's default), the client image from `$FERROLB_E2E_CLIENT_IMAGE` (else
    /// [`DEFAULT_CLIENT_IMAGE`]), the ferrolb and echo archives of `cargo xtask image`, files
    /// under `target/e2e-kind`.
    fn default() -> Options {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Options {
            name: CLUSTER_NAME.into(),
            workers: 2,
            proxy_mode: ProxyMode::Iptables,
            node_image: env(NODE_IMAGE_ENV),
            client_image: env(CLIENT_IMAGE_ENV).unwrap_or_else(|| DEFAULT_CLIENT_IMAGE.into()),
            // kind nodes have their own pause image; ours is only for the testbed's containerd.
            archives: [ImageKind::Ferrolb, ImageKind::Echo]
                .into_iter()
                .map(image::archive_path)
                .collect(),
            dir: image::target_dir().join("e2e-kind"),
            keep: false,
        }
    }
}

fn docker() -> Command {
    let mut cmd = Command::new("docker");
    cmd.stdin(Stdio::null());
    cmd
}

fn kind() -> Command {
    let mut cmd = Command::new("kind");
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `cmd` with its output shown (long steps: cluster creation, apt-get).
fn run_shown(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> kind: {what}");
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    ensure!(status.success(), "{what} failed ({status}): {cmd:?}");
    Ok(())
}

/// What [`Kind`] created, removed on drop unless kept.
#[derive(Debug)]
struct Created {
    name: String,
    client: String,
    kubeconfig: PathBuf,
    cluster: bool,
    client_container: bool,
    keep: bool,
}

impl Drop for Created {
    fn drop(&mut self) {
        if self.keep {
            if self.cluster {
                eprintln!(
                    "==> kind: keeping cluster {} and client container {}:\n  \
                     export KUBECONFIG={}\n  \
                     kubectl get pods -A -o wide; kubectl get svc -A\n  \
                     docker exec -it {} bash             # the client on the kind network\n  \
                     docker exec -it {}-worker bash      # a node\n  \
                     docker rm -f {}; kind delete cluster --name {}   # clean up",
                    self.name,
                    self.client,
                    self.kubeconfig.display(),
                    self.client,
                    self.name,
                    self.client,
                    self.name
                );
            }
            return;
        }
        if self.client_container {
            eprintln!("==> kind: removing the client container {}", self.client);
            let _ = docker()
                .args(["rm", "-f", &self.client])
                .stdout(Stdio::null())
                .status();
        }
        if self.cluster {
            eprintln!("==> kind: deleting cluster {}", self.name);
            let status = kind()
                .args(["delete", "cluster", "--name", &self.name, "--kubeconfig"])
                .arg(&self.kubeconfig)
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!(
                    "warning: `kind delete cluster --name {}` failed ({status:?}); run it by hand",
                    self.name
                );
            }
        }
    }
}

/// A kind cluster with ferrolb's images loaded and a client container on its network.
#[derive(Debug)]
pub struct Kind {
    opts: Options,
    network: String,
    /// Workers first, then the control-plane node; MACs read at start (a killed container's
    /// network settings are cleared).
    nodes: Vec<Container>,
    client_ipv4: IpAddr,
    client_interface: String,
    pool_ranges: Vec<String>,
    created: Created,
}

impl Kind {
    /// Creates the cluster, loads the images, starts the client; returns once every node is
    /// Ready. Fails with a [`Missing`] (downcast the error) when Docker or kind is missing.
    pub fn start(opts: Options) -> Result<Kind> {
        let tools = check_tools()?;
        ensure!(
            opts.workers >= 2,
            "the scenarios need at least 2 kind workers (they pin pods to two nodes and power one off), got {}",
            opts.workers
        );
        if opts.proxy_mode == ProxyMode::Nftables {
            ensure!(
                tools.kind_version >= KIND_NFTABLES_SINCE,
                "kube-proxy in nftables mode needs kind >= v{}.{}.{} (`networking.kubeProxyMode: \
                 nftables`); this kind is v{}.{}.{}. Upgrade kind, or use --proxy-mode iptables.",
                KIND_NFTABLES_SINCE.0,
                KIND_NFTABLES_SINCE.1,
                KIND_NFTABLES_SINCE.2,
                tools.kind_version.0,
                tools.kind_version.1,
                tools.kind_version.2
            );
        }
        for archive in &opts.archives {
            ensure!(
                archive.is_file(),
                "{} is missing: run `cargo xtask image` first",
                archive.display()
            );
        }
        let clusters = process::run(kind().args(["get", "clusters"]))?;
        if clusters.lines().any(|l| l.trim() == opts.name) {
            bail!(
                "a kind cluster named {0} already exists (kept by an earlier `--keep` run?); \
                 delete it with `kind delete cluster --name {0}` (and `docker rm -f {0}-client`)",
                opts.name
            );
        }
        let network = network_name();
        if let Ok(json) = process::run(docker().args(["network", "inspect", &network])) {
            check_dual_stack_network(&network, &json)?;
        }
        std::fs::create_dir_all(&opts.dir)
            .with_context(|| format!("creating {}", opts.dir.display()))?;
        let kubeconfig = opts.dir.join("kubeconfig");
        let config_path = opts.dir.join("kind-config.yaml");
        std::fs::write(&config_path, render_config(opts.workers, opts.proxy_mode))
            .with_context(|| format!("writing {}", config_path.display()))?;

        let client = format!("{}-client", opts.name);
        let mut created = Created {
            name: opts.name.clone(),
            client: client.clone(),
            kubeconfig: kubeconfig.clone(),
            cluster: true,
            client_container: false,
            keep: opts.keep,
        };
        let mut create = kind();
        create
            .args(["create", "cluster", "--name", &opts.name, "--wait", "5m"])
            .arg("--config")
            .arg(&config_path)
            .arg("--kubeconfig")
            .arg(&kubeconfig);
        if let Some(image) = &opts.node_image {
            create.args(["--image", image]);
        }
        run_shown(
            &format!(
                "kind create cluster --name {} (1 control-plane + {} workers, dual-stack, kube-proxy in {} mode{})",
                opts.name,
                opts.workers,
                opts.proxy_mode.as_str(),
                opts.node_image
                    .as_deref()
                    .map(|i| format!(", node image {i}"))
                    .unwrap_or_default()
            ),
            &mut create,
        )?;
        let config = process::run(kind().args(["get", "kubeconfig", "--name", &opts.name]))?;
        std::fs::write(&kubeconfig, config)
            .with_context(|| format!("writing {}", kubeconfig.display()))?;

        for archive in &opts.archives {
            run_shown(
                &format!("kind load image-archive {}", archive.display()),
                kind()
                    .args(["load", "image-archive"])
                    .arg(archive)
                    .args(["--name", &opts.name]),
            )?;
        }

        let names: Vec<String> = process::run(kind().args(["get", "nodes", "--name", &opts.name]))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        ensure!(!names.is_empty(), "kind lists no nodes for {}", opts.name);
        let nodes = order_nodes(parse_containers(
            &process::run(docker().arg("inspect").args(&names))?,
            &network,
        )?);
        for n in &nodes {
            ensure!(
                !n.mac.is_empty(),
                "node container {} has no MAC on {network}",
                n.name
            );
        }

        let json = process::run(docker().args(["network", "inspect", &network]))?;
        check_dual_stack_network(&network, &json)?;
        let pool_ranges = pool_ranges_of_network(&json)?;

        eprintln!("==> kind: waiting for every node to be Ready");
        process::run(
            Command::new(tool_binary("kubectl")?)
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .args(["wait", "--for=condition=Ready", "nodes", "--all"])
                .arg(format!("--timeout={}s", NODES_READY_TIMEOUT.as_secs())),
        )?;

        // A stale client of a run that was killed before its clean-up; the cluster is new.
        let _ = docker()
            .args(["rm", "-f", &client])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        created.client_container = true;
        process::run(docker().args([
            "run",
            "-d",
            "--name",
            &client,
            "--hostname",
            &client,
            "--network",
            &network,
            "--cap-add",
            "NET_RAW",
            "--cap-add",
            "NET_ADMIN",
            "--label",
            &format!("{CLIENT_LABEL}={}", opts.name),
            &opts.client_image,
            "sleep",
            "infinity",
        ]))
        .with_context(|| format!("starting the client container from {}", opts.client_image))?;
        install_client_tools(&client, &opts.client_image)?;
        let [client_info] = parse_containers(
            &process::run(docker().args(["inspect", &client]))?,
            &network,
        )?
        .try_into()
        .map_err(|v: Vec<Container>| anyhow::anyhow!("docker inspect {client}: {v:?}"))?;
        let client_ipv4 = client_info
            .ipv4
            .with_context(|| format!("the client container has no IPv4 address on {network}"))?;
        let addrs = process::run(docker().args(["exec", &client, "ip", "-o", "addr", "show"]))?;
        let client_interface = interface_with_address(&addrs, client_ipv4)
            .with_context(|| format!("no interface holds {client_ipv4} in the client: {addrs}"))?;

        let kind = Kind {
            opts,
            network,
            nodes,
            client_ipv4,
            client_interface,
            pool_ranges,
            created,
        };
        eprintln!(
            "==> kind: ready: nodes {}, client {} ({}), pool {}",
            kind.nodes().join(" "),
            client,
            kind.client_ipv4,
            kind.pool_ranges.join(" ")
        );
        Ok(kind)
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.opts.name
    }

    /// The Docker network the nodes and the client are on.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The client container's name.
    pub fn client_container(&self) -> &str {
        &self.created.client
    }

    /// Every node container and its state, for error messages.
    pub fn diagnostics(&self) -> String {
        let ps = process::run(docker().args([
            "ps",
            "-a",
            "--filter",
            &format!("label={CLUSTER_LABEL}={}", self.opts.name),
            "--format",
            "{{.Names}}\t{{.Status}}",
        ]))
        .unwrap_or_else(|e| format!("(docker ps failed: {e:#})"));
        format!(
            "kind node containers:\n{ps}\nevery node's logs: kind export logs <dir> --name {}",
            self.opts.name
        )
    }

    /// `kind export logs` into `<dir>/logs`; returns that directory.
    pub fn export_logs(&self) -> Result<PathBuf> {
        let dir = self.opts.dir.join("logs");
        process::run(
            kind()
                .args(["export", "logs"])
                .arg(&dir)
                .args(["--name", &self.opts.name]),
        )?;
        Ok(dir)
    }
}

/// Installs the client's tools with apt-get unless the image already has them.
fn install_client_tools(client: &str, image: &str) -> Result<()> {
    let check = CLIENT_PACKAGES
        .iter()
        .map(|(_, cmd)| format!("command -v {cmd} >/dev/null"))
        .collect::<Vec<_>>()
        .join(" && ");
    let present = docker()
        .args(["exec", client, "sh", "-c", &check])
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    let packages: Vec<&str> = CLIENT_PACKAGES.iter().map(|(p, _)| *p).collect();
    run_shown(
        &format!("apt-get install {} in the client container", packages.join(" ")),
        docker().args([
            "exec",
            "-e",
            "DEBIAN_FRONTEND=noninteractive",
            client,
            "sh",
            "-c",
            &format!(
                "apt-get update -qq && apt-get install -y -qq --no-install-recommends {} >/dev/null",
                packages.join(" ")
            ),
        ]),
    )
    .with_context(|| {
        format!(
            "the client image {image} lacks {} and apt-get could not install them; set \
             {CLIENT_IMAGE_ENV} to an image that has them",
            packages.join(", ")
        )
    })
}

impl Driver for Kind {
    fn describe(&self) -> String {
        format!(
            "kind {}, 1 control-plane + {} workers, kube-proxy in {} mode",
            self.opts.name,
            self.opts.workers,
            self.opts.proxy_mode.as_str()
        )
    }

    fn kubeconfig(&self) -> &Path {
        &self.created.kubeconfig
    }

    fn kubectl_binary(&self) -> Result<PathBuf> {
        tool_binary("kubectl")
    }

    fn helm_binary(&self) -> Result<PathBuf> {
        tool_binary("helm")
    }

    fn client(&self, program: &str, args: &[&str]) -> Result<Output> {
        docker()
            .args(["exec", &self.created.client, program])
            .args(args)
            .output()
            .with_context(|| format!("running {program} in the client container"))
    }

    fn client_interface(&self) -> &str {
        &self.client_interface
    }

    fn client_ipv4(&self) -> IpAddr {
        self.client_ipv4
    }

    fn pool_ranges(&self) -> Vec<String> {
        self.pool_ranges.clone()
    }

    fn node_mac(&self, node: &str) -> Result<String> {
        self.nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.mac.clone())
            .with_context(|| format!("no kind node {node}"))
    }

    fn nodes(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn power_off(&mut self, node: &str) -> Result<()> {
        ensure!(
            self.nodes.iter().any(|n| n.name == node),
            "no kind node {node}"
        );
        process::run(docker().args(["kill", node]))
            .with_context(|| format!("docker kill {node}"))?;
        Ok(())
    }

    fn on_node(&self, node: &str, program: &str, args: &[&str]) -> Result<Output> {
        ensure!(
            self.nodes.iter().any(|n| n.name == node),
            "no kind node {node}"
        );
        docker()
            .args(["exec", node, program])
            .args(args)
            .output()
            .with_context(|| format!("running {program} on kind node {node}"))
    }

    fn tag_ferrolb_image(&self, reference: &str) -> Result<()> {
        let source = ImageKind::Ferrolb.reference()?;
        for node in &self.nodes {
            process::run(docker().args([
                "exec", &node.name, "ctr", "-n", "k8s.io", "images", "tag", "--force", &source,
                reference,
            ]))
            .with_context(|| format!("tagging {source} as {reference} on {}", node.name))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
