//! Real Kubernetes nodes in the lab: each node namespace runs its own containerd (with runc and
//! the CNI plugins), a kubelet and a kube-proxy, all built from the same Go modules as the
//! control plane (see [`crate::bins`]). Pods get addresses on their node, hostNetwork pods (the
//! speaker) share the node's namespace, and Services are served by the real kube-proxy.
//!
//! ```text
//!  node1 netns (eth0 198.51.100.11 on lab0)            host (shared with every node)
//!    containerd  <-- /run/ferrolb-lab/node1/containerd.sock        /var/lib/ferrolb-lab/node1
//!      shims, runc (root /run/ferrolb-lab/node1/runc)              cgroups /ferrolb-lab-node1
//!      pods: cni0 198.19.1.1/24 2001:db8:2:1::1/64 (bridge + host-local), masqueraded out
//!    kubelet (system:node:node1, --node-ip 198.51.100.11,2001:db8:1::11)
//!    kube-proxy (system:kube-proxy, iptables or nftables mode)
//!    routes to the other nodes' pod ranges via their lab addresses
//! ```
//!
//! Images are never pulled: the archives given in [`Options::images`] (ferrolb's, the echo
//! workload, the pause image pinned as the sandbox) are imported into every node's containerd
//! before its kubelet starts. Each process is started with `nsenter --net` (not `ip netns
//! exec`, which remounts /sys and hides the cgroup hierarchies). Details of this machine kind:
//! shared/reference/real-nodes.md.

pub mod config;
pub mod host;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bins;
use crate::control_plane::ControlPlane;
use crate::lab::Host;
use crate::pki::Pki;
use crate::process::{Supervised, run, wait_for};
pub use config::ProxyMode;
use config::{KubeletSettings, NodePaths};

/// Where Debian's containernetworking-plugins installs the CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// How long nodes may take to register and become Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What to start on every node.
#[derive(Clone, Debug)]
pub struct Options {
    /// kube-proxy's mode.
    pub proxy_mode: ProxyMode,
    /// OCI image archives to import into every node's containerd.
    pub images: Vec<PathBuf>,
    /// Reference of the sandbox (pause) image, one of `images`.
    pub pause_image: String,
    /// Directory for configuration, credentials and logs (`<dir>/<node>/`).
    pub dir: PathBuf,
    /// Run the processes in their own session so they outlive this process (`cluster up`).
    pub detached: bool,
}

/// One running node.
#[derive(Debug)]
pub struct RealNode {
    host: Host,
    paths: NodePaths,
    /// containerd, kubelet, kube-proxy, in start order.
    processes: Vec<(Supervised, PathBuf)>,
}

impl RealNode {
    /// The lab namespace (and Node name).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Where this node's state, sockets and configuration live.
    pub fn paths(&self) -> &NodePaths {
        &self.paths
    }

    /// `ctr` against this node's containerd, in the `k8s.io` namespace the kubelet uses.
    pub fn ctr(&self) -> Result<Command> {
        let mut cmd = Command::new(bins::binary("ctr")?);
        cmd.arg("--address")
            .arg(self.paths.containerd_socket())
            .args(["--namespace", "k8s.io"]);
        Ok(cmd)
    }

    /// Log files of containerd, the kubelet and kube-proxy.
    pub fn logs(&self) -> Vec<&Path> {
        self.processes
            .iter()
            .map(|(_, log)| log.as_path())
            .collect()
    }
}

/// Nodes started by [`RealNodes::start`]; dropping this stops them all and removes what they
/// left on the machine.
#[derive(Debug)]
pub struct RealNodes {
    nodes: Vec<RealNode>,
    released: bool,
    last_power_cut: Option<std::time::SystemTime>,
}

impl RealNodes {
    /// Starts containerd, a kubelet and kube-proxy in each of `hosts` (lab node namespaces,
    /// `nodeN`), imports the images, and returns once every node is Ready. The control plane
    /// must run with [`crate::control_plane::Options::workloads`].
    pub fn start(cp: &ControlPlane, hosts: &[Host], opts: &Options) -> Result<RealNodes> {
        for tool in [
            "/usr/sbin/runc",
            "/usr/sbin/iptables",
            "/usr/sbin/conntrack",
        ] {
            if !Path::new(tool).is_file() {
                bail!(
                    "{tool} is missing: real lab nodes need Debian's runc, iptables and conntrack \
                     (`cargo xtask test` installs them)"
                );
            }
        }
        if !Path::new(CNI_BIN_DIR).join("bridge").is_file() {
            bail!(
                "{CNI_BIN_DIR}/bridge is missing: install Debian's containernetworking-plugins \
                 (`cargo xtask test` installs it)"
            );
        }
        host::remove_leftovers().context("removing what earlier lab nodes left")?;
        let pki = Pki::read(&cp.dir().join("pki"))?;
        let mut nodes = RealNodes {
            nodes: Vec::new(),
            released: false,
            last_power_cut: None,
        };
        for host in hosts {
            let node = start_node(cp, &pki, host, hosts, opts)
                .with_context(|| format!("starting real node {}", host.name))?;
            nodes.nodes.push(node);
        }
        nodes.wait_ready(cp, READY_TIMEOUT)?;
        Ok(nodes)
    }

    /// The nodes, in start order.
    pub fn nodes(&self) -> &[RealNode] {
        &self.nodes
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Result<&RealNode> {
        self.nodes
            .iter()
            .find(|n| n.host.name == name)
            .with_context(|| format!("no real node {name}"))
    }

    /// Waits until every node reports Ready.
    pub fn wait_ready(&self, cp: &ControlPlane, timeout: Duration) -> Result<()> {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.host.name.as_str()).collect();
        wait_for(
            &format!("nodes {} to be Ready", names.join(", ")),
            timeout,
            || {
                let out = cp.kubectl_run(&[
                    "get",
                    "nodes",
                    "-o",
                    r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
                ])?;
                let ready: Vec<&str> = out
                    .lines()
                    .filter_map(|l| l.strip_suffix("=True"))
                    .collect();
                Ok(names.iter().all(|n| ready.contains(n)).then_some(()))
            },
        )
        .with_context(|| self.diagnostics())
    }

    /// Powers `name` off: its link goes down and every process of it dies at once (kubelet,
    /// containerd, kube-proxy, shims and every container, hostNetwork or not), as when a machine
    /// loses power. Its Node object stays, as it would.
    pub fn power_off(&mut self, name: &str) -> Result<()> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.host.name == name)
            .with_context(|| format!("no real node {name}"))?;
        run(Command::new("ip").args(["link", "set", &node.host.host_veth, "down"]))?;
        // From here on the node is gone for everyone else; killing its processes takes a while.
        self.last_power_cut = Some(std::time::SystemTime::now());
        for (process, _) in &mut node.processes {
            process.kill();
        }
        crate::lab::kill_processes_in(&node.host.name)?;
        host::kill_cgroup(&host::cgroup_root(&node.host.name))?;
        Ok(())
    }

    /// When the last [`RealNodes::power_off`] took its node's link down (wall clock): the
    /// instant the node stopped existing for the rest of the lab.
    pub fn last_power_cut(&self) -> Option<std::time::SystemTime> {
        self.last_power_cut
    }

    /// Powers `name` back on after [`RealNodes::power_off`]: its link comes up and containerd,
    /// the kubelet and kube-proxy start again from the node's state, as after a reboot (the
    /// kubelet restarts its pods). Returns once the node is Ready again.
    pub fn power_on(&mut self, cp: &ControlPlane, name: &str) -> Result<()> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.host.name == name)
            .with_context(|| format!("no real node {name}"))?;
        node.processes.clear();
        run(Command::new("ip").args(["link", "set", &node.host.host_veth, "up"]))?;
        start_processes(node, false, &[])?;
        wait_for(
            &format!("node {name} to be Ready again"),
            READY_TIMEOUT,
            || {
                let ready = cp.kubectl_run(&[
                    "get",
                    "node",
                    name,
                    "-o",
                    r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
                ])?;
                Ok((ready.trim() == "True").then_some(()))
            },
        )
        .with_context(|| self.diagnostics())
    }

    /// Keeps the nodes running after this handle is gone (`cargo xtask cluster up`); returns
    /// the pids of containerd, kubelet and kube-proxy of every node.
    pub fn release(mut self) -> Vec<u32> {
        self.released = true;
        let mut pids = Vec::new();
        for node in &mut self.nodes {
            for (process, _) in node.processes.drain(..) {
                pids.push(process.release());
            }
        }
        pids
    }

    /// The tail of every node process's log, for an error message.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        for node in &self.nodes {
            for (_, log) in &node.processes {
                s.push_str(&format!(
                    "\n--- {} (last lines) ---\n{}",
                    log.display(),
                    crate::process::tail(log, 15)
                ));
            }
        }
        s
    }
}

impl Drop for RealNodes {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        for node in &mut self.nodes {
            for (process, _) in node.processes.iter_mut().rev() {
                process.kill();
            }
            if let Err(e) = crate::lab::kill_processes_in(&node.host.name) {
                eprintln!("real node teardown: {e:#}");
            }
        }
        if let Err(e) = host::remove_leftovers() {
            eprintln!("real node teardown: {e:#}");
        }
    }
}

/// The 1-based index of lab node `nodeN`.
fn node_index(host: &Host) -> Result<usize> {
    host.name
        .strip_prefix("node")
        .and_then(|i| i.parse().ok())
        .with_context(|| format!("{} is not a lab node (nodeN)", host.name))
}

fn start_node(
    cp: &ControlPlane,
    pki: &Pki,
    host: &Host,
    all: &[Host],
    opts: &Options,
) -> Result<RealNode> {
    let index = node_index(host)?;
    let paths = NodePaths {
        data: Path::new(host::DATA_ROOT).join(&host.name),
        run: Path::new(host::RUN_ROOT).join(&host.name),
        config: opts.dir.join(&host.name),
    };
    for dir in [
        &paths.data,
        &paths.run,
        &paths.config,
        &paths.cni_conf_dir(),
        &paths.pod_logs(),
    ] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let cgroup_root = host::cgroup_root(&host.name);
    host::create_cgroup_root(&cgroup_root)?;
    route_lab_ranges(host, index, all)?;
    std::fs::write(
        paths.cni_conf_dir().join("10-ferrolb-lab.conflist"),
        config::cni_conflist(index, &paths),
    )?;
    std::fs::write(
        paths.config.join(CONTAINERD_CONFIG),
        config::containerd_toml(
            &paths,
            &opts.pause_image,
            Path::new("/usr/sbin/runc"),
            Path::new(CNI_BIN_DIR),
        ),
    )?;

    let server = cp.server().to_string();
    let ca = std::fs::read_to_string(&pki.ca_cert)?;
    let kubeconfig = |stem: &str, user: &str, group: Option<&str>| -> Result<PathBuf> {
        let (cert, key) = pki.issue_client(&paths.config, stem, user, group)?;
        let path = paths.config.join(format!("{stem}.kubeconfig"));
        std::fs::write(
            &path,
            config::client_kubeconfig(
                &server,
                &ca,
                user,
                &std::fs::read_to_string(cert)?,
                &std::fs::read_to_string(key)?,
            ),
        )?;
        Ok(path)
    };
    kubeconfig(
        "kubelet",
        &format!("system:node:{}", host.name),
        Some("system:nodes"),
    )?;
    std::fs::write(
        paths.config.join(KUBELET_CONFIG),
        config::kubelet_config(&KubeletSettings {
            node: &host.name,
            address: host.ipv4,
            paths: &paths,
            client_ca: &pki.ca_cert,
            cgroup_root: &cgroup_root,
        }),
    )?;
    let proxy_kubeconfig = kubeconfig("kube-proxy", "system:kube-proxy", None)?;
    std::fs::write(
        paths.config.join(PROXY_CONFIG),
        config::kube_proxy_config(&host.name, &proxy_kubeconfig, opts.proxy_mode),
    )?;

    let mut node = RealNode {
        host: host.clone(),
        paths,
        processes: Vec::new(),
    };
    start_processes(&mut node, opts.detached, &opts.images)?;
    Ok(node)
}

/// The files [`start_node`] writes into a node's configuration directory.
const CONTAINERD_CONFIG: &str = "containerd.toml";
const KUBELET_CONFIG: &str = "kubelet.yaml";
const PROXY_CONFIG: &str = "kube-proxy.yaml";

/// Starts containerd (importing `images` once it serves), the kubelet and kube-proxy of a node
/// whose files [`start_node`] wrote; after a power-off, the same files bring it back.
fn start_processes(node: &mut RealNode, detached: bool, images: &[PathBuf]) -> Result<()> {
    let host = node.host.clone();
    let paths = node.paths.clone();
    let spawn = |name: &str, cmd: Command, log: &Path| {
        if detached {
            Supervised::spawn_detached(name, cmd, log)
        } else {
            Supervised::spawn(name, cmd, log)
        }
    };

    let mut containerd = in_node(&host, &bins::binary("containerd")?);
    containerd
        .arg("--config")
        .arg(paths.config.join(CONTAINERD_CONFIG));
    // The runc shim is found on PATH.
    containerd.env("PATH", path_with(&bins::bin_dir()?));
    let log = paths.config.join("containerd.log");
    let mut process = spawn(&format!("containerd on {}", host.name), containerd, &log)?;
    let socket = paths.containerd_socket();
    wait_for(
        &format!("containerd on {} to serve", host.name),
        Duration::from_secs(30),
        || {
            process.check_running(&log)?;
            Ok((socket.exists()
                && node
                    .ctr()?
                    .arg("version")
                    .output()
                    .is_ok_and(|o| o.status.success()))
            .then_some(()))
        },
    )?;
    node.processes.push((process, log));
    for archive in images {
        run(node.ctr()?.args(["images", "import"]).arg(archive)).with_context(|| {
            format!(
                "importing {} into {}'s containerd",
                archive.display(),
                host.name
            )
        })?;
    }

    let mut kubelet = in_node(&host, &bins::binary("kubelet")?);
    kubelet.args([
        format!("--config={}", paths.config.join(KUBELET_CONFIG).display()),
        format!(
            "--kubeconfig={}",
            paths.config.join("kubelet.kubeconfig").display()
        ),
        format!("--hostname-override={}", host.name),
        format!("--node-ip={},{}", host.ipv4, host.ipv6),
        format!("--root-dir={}", paths.kubelet_root().display()),
        format!("--cert-dir={}", paths.config.join("kubelet-pki").display()),
        "--node-labels=ferrolb.io/lab-node=true".into(),
        "--v=1".into(),
    ]);
    let log = paths.config.join("kubelet.log");
    let process = spawn(&format!("kubelet on {}", host.name), kubelet, &log)?;
    node.processes.push((process, log));

    let mut proxy = in_node(&host, &bins::binary("kube-proxy")?);
    proxy.arg(format!(
        "--config={}",
        paths.config.join(PROXY_CONFIG).display()
    ));
    // iptables mode runs iptables-restore and conntrack.
    proxy.env("PATH", path_with(Path::new("/usr/sbin")));
    let log = paths.config.join("kube-proxy.log");
    let process = spawn(&format!("kube-proxy on {}", host.name), proxy, &log)?;
    node.processes.push((process, log));
    Ok(())
}

/// `nsenter --net=/run/netns/<node> <program>`.
fn in_node(host: &Host, program: &Path) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", host.name))
        .arg("--")
        .arg(program);
    cmd
}

/// `$PATH` with `dir` first.
fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        dirs.push(d.into());
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// Forwarding on, a route for Service ClusterIPs, and a route to every other node's pod ranges
/// via that node's lab address: kube-proxy may send a client's connection to a pod on another
/// node.
fn route_lab_ranges(host: &Host, index: usize, all: &[Host]) -> Result<()> {
    let ns = host.name.as_str();
    for sysctl in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
        run(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", sysctl]))?;
    }
    // Service ClusterIPs: kube-proxy rewrites them in OUTPUT, after routing, so a hostNetwork pod
    // (the speaker reaching the `kubernetes` Service) needs a route before there is a rule. The
    // lab bridge is that route; nothing behind it forwards anywhere.
    let (v4, v6) = (
        crate::control_plane::SERVICE_CIDR_V4,
        crate::control_plane::SERVICE_CIDR_V6,
    );
    let (via4, via6) = (
        crate::lab::BRIDGE_IPV4.to_string(),
        crate::lab::BRIDGE_IPV6.to_string(),
    );
    run(Command::new("ip").args(["-n", ns, "route", "replace", v4, "via", &via4]))?;
    run(Command::new("ip").args(["-n", ns, "-6", "route", "replace", v6, "via", &via6]))?;
    for other in all {
        let other_index = node_index(other)?;
        if other_index == index {
            continue;
        }
        let (v4, v6) = config::pod_ranges(other_index);
        run(Command::new("ip").args([
            "-n",
            ns,
            "route",
            "replace",
            &v4,
            "via",
            &other.ipv4.to_string(),
        ]))?;
        run(Command::new("ip").args([
            "-n",
            ns,
            "-6",
            "route",
            "replace",
            &v6,
            "via",
            &other.ipv6.to_string(),
        ]))?;
    }
    Ok(())
}
