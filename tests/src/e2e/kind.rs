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

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::Driver;
use crate::image::{self, ImageKind};
use crate::node::ProxyMode;
use crate::{bins, process};

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

/// What the kind driver needs and this machine lacks: `Display` says what and how to install it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// Each missing piece.
    pub problems: Vec<Problem>,
}

/// One missing piece.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No `docker` on PATH.
    DockerNotFound,
    /// `docker` is there but the daemon does not answer `docker info`; what it said.
    DockerDaemon(String),
    /// No `kind` on PATH.
    KindNotFound,
    /// Neither the Go-built nor a PATH `kubectl`/`helm`.
    ClientNotFound(&'static str),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::DockerNotFound => write!(
                f,
                "docker: not found on PATH. Install Docker Engine \
                 (https://docs.docker.com/engine/install/; on Debian/Ubuntu `apt-get install docker.io`) \
                 and start its daemon (`systemctl start docker`)."
            ),
            Problem::DockerDaemon(said) => write!(
                f,
                "docker: the daemon does not answer `docker info` ({said}). Start it \
                 (`systemctl start docker`) and check that this user may use it (the `docker` \
                 group, or DOCKER_HOST)."
            ),
            Problem::KindNotFound => write!(
                f,
                "kind: not found on PATH. Install kind >= v0.23 \
                 (https://kind.sigs.k8s.io/docs/user/quick-start/#installation, e.g. \
                 `go install sigs.k8s.io/kind@latest`)."
            ),
            Problem::ClientNotFound(name) => write!(
                f,
                "{name}: neither built by `cargo xtask k8s-build` (target/k8s) nor on PATH. \
                 Run `cargo xtask k8s-build`, or install {name}."
            ),
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the kind driver (`cargo xtask e2e --kind`) needs Docker and kind, and this machine lacks:"
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        write!(
            f,
            "`cargo xtask e2e` without --kind runs the same scenarios on the testbed driver (real \
             kubelets in network namespaces), which needs neither: only root, Go and Rust."
        )
    }
}

impl std::error::Error for Missing {}

/// What [`check_tools`] found.
#[derive(Clone, Debug)]
pub struct Tools {
    /// `kind version`'s semantic version, e.g. (0, 27, 0).
    pub kind_version: (u32, u32, u32),
    /// `docker info`'s server version.
    pub docker_version: String,
}

/// Checks that `docker` and `kind` are on PATH, that the Docker daemon answers, and that
/// kubectl and helm exist (built or on PATH). Cheap: call it before building anything.
pub fn check_tools() -> std::result::Result<Tools, Missing> {
    let mut problems = Vec::new();
    let mut docker_version = String::new();
    if bins::which("docker").is_none() {
        problems.push(Problem::DockerNotFound);
    } else {
        let mut cmd = Command::new("docker");
        cmd.args(["info", "--format", "{{.ServerVersion}}"]);
        match output_within(&mut cmd, DOCKER_INFO_TIMEOUT) {
            Ok(out) if out.status.success() && !out.stdout.trim_ascii().is_empty() => {
                docker_version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            Ok(out) => {
                let said = first_line(&out.stderr)
                    .or_else(|| first_line(&out.stdout))
                    .unwrap_or_else(|| format!("exit {}", out.status));
                problems.push(Problem::DockerDaemon(said));
            }
            Err(e) => problems.push(Problem::DockerDaemon(format!("{e:#}"))),
        }
    }
    let mut kind_version = (0, 0, 0);
    if bins::which("kind").is_none() {
        problems.push(Problem::KindNotFound);
    } else if let Ok(out) = Command::new("kind").arg("version").output() {
        kind_version =
            parse_kind_version(&String::from_utf8_lossy(&out.stdout)).unwrap_or_default();
    }
    for name in ["kubectl", "helm"] {
        if tool_binary(name).is_err() {
            problems.push(Problem::ClientNotFound(name));
        }
    }
    if problems.is_empty() {
        Ok(Tools {
            kind_version,
            docker_version,
        })
    } else {
        Err(Missing { problems })
    }
}

fn first_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// Runs `cmd` (stdin closed, output captured), killing it after `timeout`.
fn output_within(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let deadline = Instant::now() + timeout;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no answer within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.wait_with_output()?)
}

/// The testbed's Go-built `name` (it works against any cluster), else `name` on PATH.
pub fn tool_binary(name: &str) -> Result<PathBuf> {
    bins::binary(name)
        .ok()
        .or_else(|| bins::which(name))
        .with_context(|| format!("{name}: neither built by `cargo xtask k8s-build` nor on PATH"))
}

/// The semantic version in `kind version`'s output (`kind v0.27.0 go1.23.6 linux/amd64`, or
/// `0.27.0` with `-q`); pre-release and build parts are ignored.
pub fn parse_kind_version(out: &str) -> Option<(u32, u32, u32)> {
    let word = out.split_whitespace().find(|w| {
        w.trim_start_matches('v')
            .starts_with(|c: char| c.is_ascii_digit())
    })?;
    let core = word.trim_start_matches('v');
    let core = core.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// The kind cluster config: one control-plane node and `workers` workers, dual-stack, kube-proxy
/// in `proxy_mode`.
pub fn render_config(workers: usize, proxy_mode: ProxyMode) -> String {
    let mut yaml = String::from(
        "kind: Cluster\n\
         apiVersion: kind.x-k8s.io/v1alpha4\n\
         networking:\n  \
           ipFamily: dual\n",
    );
    yaml.push_str(&format!("  kubeProxyMode: {}\n", proxy_mode.as_str()));
    yaml.push_str("nodes:\n- role: control-plane\n");
    for _ in 0..workers {
        yaml.push_str("- role: worker\n");
    }
    yaml
}

/// A pool range at the top of `subnet` (`a.b.c.d/len` or an IPv6 CIDR): [`POOL_SIZE`] addresses
/// ending [`POOL_TOP_GAP`] below the last one, as MetalLB's docs do for kind (172.18.0.0/16 ->
/// 172.18.255.200-172.18.255.250). Docker hands out addresses from the bottom of the subnet,
/// so the top stays free. Fails for subnets of fewer than 128 addresses.
pub fn pool_range(subnet: &str) -> Result<String> {
    let net: ipnetwork::IpNetwork = subnet
        .trim()
        .parse()
        .with_context(|| format!("subnet {subnet:?}"))?;
    let (bits, value) = match net.network() {
        IpAddr::V4(a) => (32u32, u128::from(u32::from(a))),
        IpAddr::V6(a) => (128u32, u128::from(a)),
    };
    let host_bits = bits - u32::from(net.prefix());
    ensure!(
        host_bits >= 7,
        "subnet {subnet} is too small for a pool of {POOL_SIZE} addresses at its top (needs /{} or larger)",
        bits - 7
    );
    let last = value | ((1u128 << host_bits) - 1);
    let end = last - POOL_TOP_GAP;
    let start = end - (POOL_SIZE - 1);
    let addr = |v: u128| -> IpAddr {
        if bits == 32 {
            IpAddr::V4((v as u32).into())
        } else {
            IpAddr::V6(v.into())
        }
    };
    Ok(format!("{}-{}", addr(start), addr(end)))
}

/// The subnets of a Docker network, from `docker network inspect <network>`'s JSON (an array of
/// one network; `IPAM.Config[].Subnet`, IPv4 and IPv6 in any order): (IPv4, IPv6).
pub fn network_subnets(inspect_json: &str) -> Result<(Option<String>, Option<String>)> {
    let v: Value = serde_json::from_str(inspect_json).context("docker network inspect JSON")?;
    let net = v
        .as_array()
        .and_then(|a| a.first())
        .context("docker network inspect printed no network")?;
    let (mut v4, mut v6) = (None, None);
    for cfg in net["IPAM"]["Config"].as_array().into_iter().flatten() {
        let Some(subnet) = cfg["Subnet"].as_str() else {
            continue;
        };
        let parsed: ipnetwork::IpNetwork = subnet
            .parse()
            .with_context(|| format!("subnet {subnet:?} of the network"))?;
        let slot = if parsed.is_ipv4() { &mut v4 } else { &mut v6 };
        slot.get_or_insert_with(|| subnet.to_string());
    }
    Ok((v4, v6))
}

/// Pool ranges for a Docker network: IPv4 first, then IPv6 if the network has it.
pub fn pool_ranges_of_network(inspect_json: &str) -> Result<Vec<String>> {
    let (v4, v6) = network_subnets(inspect_json)?;
    let v4 = v4.context("the Docker network has no IPv4 subnet")?;
    let mut ranges = vec![pool_range(&v4)?];
    if let Some(v6) = v6 {
        ranges.push(pool_range(&v6)?);
    }
    Ok(ranges)
}

/// One container as `docker inspect` describes it, seen from one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// Name, without Docker's leading `/`.
    pub name: String,
    /// kind's role label (`control-plane`, `worker`), if any.
    pub role: Option<String>,
    /// Whether it runs.
    pub running: bool,
    /// MAC on the network, lowercase.
    pub mac: String,
    /// IPv4 address on the network.
    pub ipv4: Option<IpAddr>,
    /// Global IPv6 address on the network.
    pub ipv6: Option<IpAddr>,
}

/// Containers from `docker inspect <names>...`'s JSON, with their addresses on `network`
/// (`NetworkSettings.Networks.<network>.{MacAddress,IPAddress,GlobalIPv6Address}`).
pub fn parse_containers(inspect_json: &str, network: &str) -> Result<Vec<Container>> {
    let v: Value = serde_json::from_str(inspect_json).context("docker inspect JSON")?;
    let items = v.as_array().context("docker inspect printed no array")?;
    items
        .iter()
        .map(|c| {
            let name = c["Name"]
                .as_str()
                .context("a container without Name")?
                .trim_start_matches('/')
                .to_string();
            let net = &c["NetworkSettings"]["Networks"][network];
            ensure!(
                net.is_object(),
                "container {name} is not on the Docker network {network}"
            );
            let ip = |key: &str| {
                net[key]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .and_then(|s| s.parse().ok())
            };
            Ok(Container {
                role: c["Config"]["Labels"][ROLE_LABEL]
                    .as_str()
                    .map(str::to_string),
                running: c["State"]["Running"].as_bool().unwrap_or(false),
                mac: net["MacAddress"]
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase(),
                ipv4: ip("IPAddress"),
                ipv6: ip("GlobalIPv6Address"),
                name,
            })
        })
        .collect()
}

/// Node containers in the order [`Driver::nodes`] gives them: workers (by name), then the rest
/// (the control-plane node).
pub fn order_nodes(mut nodes: Vec<Container>) -> Vec<Container> {
    nodes.sort_by(|a, b| {
        let worker = |c: &Container| c.role.as_deref() != Some("worker");
        (worker(a), natural_key(&a.name)).cmp(&(worker(b), natural_key(&b.name)))
    });
    nodes
}

/// `worker`, `worker2`, ..., `worker10` in numeric order.
fn natural_key(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, n) = name.split_at(name.len() - digits);
    (stem.to_string(), n.parse().unwrap_or(1))
}

/// The interface holding `ip`, from `ip -o addr show` (`15: eth0    inet 172.18.0.5/16 ...`;
/// `eth0@if16` forms are cut at the `@`).
pub fn interface_with_address(ip_o_addr: &str, ip: IpAddr) -> Option<String> {
    ip_o_addr.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let _index = words.next()?;
        let ifname = words.next()?;
        let _family = words.next()?;
        let addr = words.next()?.split('/').next()?;
        (addr.parse::<IpAddr>().ok()? == ip)
            .then(|| ifname.split('@').next().unwrap_or(ifname).to_string())
    })
}

/// The Docker network kind uses: `$KIND_EXPERIMENTAL_DOCKER_NETWORK`, else `kind`.
pub fn network_name() -> String {
    std::env::var("KIND_EXPERIMENTAL_DOCKER_NETWORK")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NETWORK.into())
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

/// Fails when `network` has no IPv6 subnet: the dual-stack cluster would have no IPv6 node
/// addresses and the scenarios' dual-stack Service could not be reached over IPv6.
fn check_dual_stack_network(network: &str, inspect_json: &str) -> Result<()> {
    let (_, v6) = network_subnets(inspect_json)?;
    ensure!(
        v6.is_some(),
        "the Docker network {network} has no IPv6 subnet, so a dual-stack kind cluster cannot \
         serve IPv6. Enable IPv6 in Docker (\"ipv6\": true and ip6tables in daemon.json), then \
         remove the network (`docker network rm {network}`, with no kind cluster on it) so kind \
         re-creates it with an IPv6 subnet."
    );
    Ok(())
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
mod tests {
    use super::*;

    /// `docker network inspect kind` of a kind network: IPv6 listed first, as kind creates it.
    const NETWORK: &str = r#"[
    {
        "Name": "kind",
        "Id": "0b6c3a8f7e4d",
        "Created": "2025-01-10T09:12:44.123456789Z",
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": true,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [
                {"Subnet": "fc00:f853:ccd:e793::/64", "Gateway": "fc00:f853:ccd:e793::1"},
                {"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}
            ]
        },
        "Internal": false,
        "Containers": {},
        "Options": {"com.docker.network.bridge.enable_ip_masquerade": "true",
                    "com.docker.network.driver.mtu": "1500"},
        "Labels": {}
    }
]"#;

    /// `docker inspect` of two kind nodes (trimmed to the fields read), one killed: Docker
    /// clears a stopped container's addresses.
    const NODES: &str = r#"[
    {
        "Id": "a1",
        "Name": "/ferrolb-e2e-worker2",
        "State": {"Status": "running", "Running": true, "Pid": 4242},
        "Config": {"Hostname": "ferrolb-e2e-worker2",
                   "Labels": {"io.x-k8s.kind.cluster": "ferrolb-e2e", "io.x-k8s.kind.role": "worker"}},
        "NetworkSettings": {"Networks": {"kind": {
            "IPAddress": "172.18.0.4", "IPPrefixLen": 16,
            "GlobalIPv6Address": "fc00:f853:ccd:e793::4", "GlobalIPv6PrefixLen": 64,
            "MacAddress": "02:42:AC:12:00:04", "NetworkID": "0b6c3a8f7e4d"}}}
    },
    {
        "Id": "b2",
        "Name": "/ferrolb-e2e-control-plane",
        "State": {"Status": "running", "Running": true},
        "Config": {"Labels": {"io.x-k8s.kind.cluster": "ferrolb-e2e", "io.x-k8s.kind.role": "control-plane"}},
        "NetworkSettings": {"Networks": {"kind": {
            "IPAddress": "172.18.0.2", "GlobalIPv6Address": "fc00:f853:ccd:e793::2",
            "MacAddress": "02:42:ac:12:00:02"}}}
    },
    {
        "Id": "c3",
        "Name": "/ferrolb-e2e-worker",
        "State": {"Status": "exited", "Running": false},
        "Config": {"Labels": {"io.x-k8s.kind.role": "worker"}},
        "NetworkSettings": {"Networks": {"kind": {
            "IPAddress": "", "GlobalIPv6Address": "", "MacAddress": ""}}}
    }
]"#;

    #[test]
    fn pool_ranges_sit_at_the_top_of_each_subnet() {
        assert_eq!(
            pool_range("172.18.0.0/16").unwrap(),
            "172.18.255.200-172.18.255.250"
        );
        assert_eq!(
            pool_range("172.19.0.0/16").unwrap(),
            "172.19.255.200-172.19.255.250"
        );
        assert_eq!(
            pool_range("192.168.49.0/24").unwrap(),
            "192.168.49.200-192.168.49.250"
        );
        assert_eq!(
            pool_range("10.0.0.0/8").unwrap(),
            "10.255.255.200-10.255.255.250"
        );
        assert_eq!(
            pool_range("10.1.2.128/25").unwrap(),
            "10.1.2.200-10.1.2.250"
        );
        // Not the network address: the host bits are ignored.
        assert_eq!(
            pool_range("172.18.0.1/16").unwrap(),
            "172.18.255.200-172.18.255.250"
        );
        assert_eq!(
            pool_range("fc00:f853:ccd:e793::/64").unwrap(),
            "fc00:f853:ccd:e793:ffff:ffff:ffff:ffc8-fc00:f853:ccd:e793:ffff:ffff:ffff:fffa"
        );
        assert_eq!(
            pool_range("2001:db8:1::/120").unwrap(),
            "2001:db8:1::c8-2001:db8:1::fa"
        );
        assert!(pool_range("172.18.0.0/26").is_err());
        assert!(pool_range("2001:db8::/122").is_err());
        assert!(pool_range("kind").is_err());
    }

    #[test]
    fn a_pool_range_holds_51_addresses_and_parses_as_a_range() {
        for subnet in ["172.18.0.0/16", "fc00:f853:ccd:e793::/64", "10.1.2.128/25"] {
            let range = pool_range(subnet).unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
            let n = |ip: IpAddr| match ip {
                IpAddr::V4(v) => u128::from(u32::from(v)),
                IpAddr::V6(v) => u128::from(v),
            };
            assert_eq!(n(b) - n(a) + 1, POOL_SIZE, "{range}");
            let net: ipnetwork::IpNetwork = subnet.parse().unwrap();
            assert!(net.contains(a) && net.contains(b), "{range} in {subnet}");
        }
    }

    #[test]
    fn network_inspect_gives_both_families_in_either_order() {
        assert_eq!(
            network_subnets(NETWORK).unwrap(),
            (
                Some("172.18.0.0/16".into()),
                Some("fc00:f853:ccd:e793::/64".into())
            )
        );
        assert_eq!(
            pool_ranges_of_network(NETWORK).unwrap(),
            [
                "172.18.255.200-172.18.255.250",
                "fc00:f853:ccd:e793:ffff:ffff:ffff:ffc8-fc00:f853:ccd:e793:ffff:ffff:ffff:fffa"
            ]
        );
        check_dual_stack_network("kind", NETWORK).unwrap();
    }

    #[test]
    fn an_ipv4_only_network_gives_one_range_and_fails_the_dual_stack_check() {
        let v4_only = r#"[{"Name": "kind", "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Config": [{"Subnet": "172.19.0.0/16", "Gateway": "172.19.0.1"}]}}]"#;
        assert_eq!(
            pool_ranges_of_network(v4_only).unwrap(),
            ["172.19.255.200-172.19.255.250"]
        );
        let err = check_dual_stack_network("kind", v4_only)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no IPv6 subnet") && err.contains("docker network rm kind"),
            "{err}"
        );
        assert!(pool_ranges_of_network("[]").is_err());
        assert!(pool_ranges_of_network(r#"[{"IPAM": {"Config": []}}]"#).is_err());
    }

    #[test]
    fn docker_inspect_gives_names_roles_macs_and_addresses() {
        let c = parse_containers(NODES, "kind").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[0],
            Container {
                name: "ferrolb-e2e-worker2".into(),
                role: Some("worker".into()),
                running: true,
                mac: "02:42:ac:12:00:04".into(),
                ipv4: Some("172.18.0.4".parse().unwrap()),
                ipv6: Some("fc00:f853:ccd:e793::4".parse().unwrap()),
            }
        );
        assert_eq!(c[1].role.as_deref(), Some("control-plane"));
        assert!(!c[2].running);
        assert_eq!((c[2].mac.as_str(), c[2].ipv4), ("", None));
        let err = parse_containers(NODES, "bridge").unwrap_err().to_string();
        assert!(err.contains("not on the Docker network bridge"), "{err}");
    }

    #[test]
    fn nodes_list_workers_in_numeric_order_then_the_control_plane() {
        let mut nodes = parse_containers(NODES, "kind").unwrap();
        let mut w10 = nodes[0].clone();
        w10.name = "ferrolb-e2e-worker10".into();
        nodes.push(w10);
        let names: Vec<String> = order_nodes(nodes).into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "ferrolb-e2e-worker",
                "ferrolb-e2e-worker2",
                "ferrolb-e2e-worker10",
                "ferrolb-e2e-control-plane"
            ]
        );
    }

    #[test]
    fn kind_config_is_dual_stack_with_the_proxy_mode_and_the_workers() {
        let yaml = render_config(2, ProxyMode::Iptables);
        assert_eq!(
            yaml,
            "kind: Cluster\n\
             apiVersion: kind.x-k8s.io/v1alpha4\n\
             networking:\n  ipFamily: dual\n  kubeProxyMode: iptables\n\
             nodes:\n- role: control-plane\n- role: worker\n- role: worker\n"
        );
        let v: serde_yaml::Value =
            serde_yaml::from_str(&render_config(3, ProxyMode::Nftables)).unwrap();
        assert_eq!(v["kind"], "Cluster");
        assert_eq!(v["apiVersion"], "kind.x-k8s.io/v1alpha4");
        assert_eq!(v["networking"]["ipFamily"], "dual");
        assert_eq!(v["networking"]["kubeProxyMode"], "nftables");
        let roles: Vec<&str> = v["nodes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|n| n["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["control-plane", "worker", "worker", "worker"]);
    }

    #[test]
    fn kind_versions_parse_from_either_form() {
        assert_eq!(
            parse_kind_version("kind v0.27.0 go1.23.6 linux/amd64"),
            Some((0, 27, 0))
        );
        assert_eq!(parse_kind_version("0.23.0\n"), Some((0, 23, 0)));
        assert_eq!(
            parse_kind_version("kind v0.33.0-alpha.12+fed26882b7a1 go1.24.2 linux/arm64"),
            Some((0, 33, 0))
        );
        assert_eq!(parse_kind_version("kind"), None);
        assert!(parse_kind_version("kind v0.22.0 go1.21").unwrap() < KIND_NFTABLES_SINCE);
        assert!(parse_kind_version("kind v0.23.0 go1.22").unwrap() >= KIND_NFTABLES_SINCE);
    }

    #[test]
    fn the_client_interface_is_the_one_holding_its_address() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n\
                   1: lo    inet6 ::1/128 scope host \\       valid_lft forever preferred_lft forever\n\
                   23: eth0    inet 172.18.0.5/16 brd 172.18.255.255 scope global eth0\\       valid_lft forever preferred_lft forever\n\
                   23: eth0    inet6 fc00:f853:ccd:e793::5/64 scope global nodad \\       valid_lft forever preferred_lft forever\n";
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            interface_with_address(out, ip("172.18.0.5")).as_deref(),
            Some("eth0")
        );
        assert_eq!(
            interface_with_address(out, ip("fc00:f853:ccd:e793::5")).as_deref(),
            Some("eth0")
        );
        assert_eq!(
            interface_with_address(
                "7: eth1@if8    inet 10.0.0.2/24 scope global eth1",
                ip("10.0.0.2")
            )
            .as_deref(),
            Some("eth1")
        );
        assert_eq!(interface_with_address(out, ip("172.18.0.6")), None);
    }

    #[test]
    fn the_missing_message_says_what_and_how_to_install_it() {
        let m = Missing {
            problems: vec![Problem::DockerNotFound, Problem::KindNotFound],
        };
        let text = m.to_string();
        for needle in [
            "needs Docker and kind",
            "docker: not found on PATH",
            "https://docs.docker.com/engine/install/",
            "kind: not found on PATH",
            "https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
            "testbed driver",
            "needs neither",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
        let daemon = Missing {
            problems: vec![Problem::DockerDaemon(
                "Cannot connect to the Docker daemon at unix:///var/run/docker.sock".into(),
            )],
        }
        .to_string();
        assert!(daemon.contains("does not answer `docker info`") && daemon.contains("docker.sock"));
        // What the error carries through anyhow, for callers that pick an exit code.
        let e = anyhow::Error::new(m.clone());
        assert_eq!(e.downcast_ref::<Missing>(), Some(&m));
    }

    #[test]
    fn default_options_load_ferrolb_and_echo_into_two_workers() {
        let o = Options::default();
        assert_eq!((o.name.as_str(), o.workers), (CLUSTER_NAME, 2));
        assert_eq!(o.proxy_mode, ProxyMode::Iptables);
        let names: Vec<String> = o
            .archives
            .iter()
            .map(|a| a.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["ferrolb.tar", "echo.tar"]);
    }
}
