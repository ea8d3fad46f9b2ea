//! A long-lived testbed for humans (`cargo xtask cluster up|down`): the control plane runs
//! detached, the lab stays, and an env file tells a shell how to reach them. With
//! [`UpOptions::run_ferrolb`], ferrolb itself runs on it too:
//!
//! ```text
//!  control plane (etcd, kube-apiserver, kube-controller-manager) + CRDs
//!  ferrolb-controller        host, out of cluster, admin kubeconfig, --no-leader-election
//!  ferrolb-speaker per node  ip netns exec nodeN, uid 65534 + CAP_NET_RAW only, admin kubeconfig
//!  ferrolb-lab-backend + DNAT per node  (curl http://VIP/ from the client names the node)
//!  dir/env  dir/pids  dir/*.log          every process detached; `down` kills them all
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::backend::Backends;
use crate::control_plane::{ControlPlane, Options};
use crate::controller::{self, Controller};
use crate::image::ImageKind;
use crate::node::{self, ProxyMode, RealNodes};
use crate::router::{self, Router, RouterConfig};
use crate::speaker::{self, Speaker, SpeakerOptions};
use crate::{Lab, bins, lab};

/// The binaries [`UpOptions::run_ferrolb`] runs, as `(package, binary)`: build them first with
/// [`build_ferrolb`].
pub const FERROLB_BINARIES: [(&str, &str); 3] = [
    ("ferrolb-controller", "ferrolb-controller"),
    ("ferrolb-speaker", "ferrolb-speaker"),
    ("ferrolb-tests", "ferrolb-lab-backend"),
];

/// How long the controller and each speaker may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What to start.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// Number of lab nodes.
    pub nodes: usize,
    /// Apiserver port; 0 picks a free one.
    pub port: u16,
    /// Real nodes (kubelet, containerd, kube-proxy in this mode per node, images imported;
    /// [`crate::node`]), or `None` for hand-made Node objects and host processes.
    pub real_nodes: Option<ProxyMode>,
    /// Also run ferrolb: on real nodes `helm install` of the chart as the README says; else
    /// the CRDs, the controller, a speaker per node and the lab backends as host processes.
    pub run_ferrolb: bool,
    /// A BGP router (FRR or BIRD) in a `router` namespace on the nodes' LAN, with the `remote`
    /// client behind it ([`crate::router`]).
    pub router: Option<router::Kind>,
}

/// What `up` started.
#[derive(Debug)]
pub struct Up {
    /// The env file (shell exports).
    pub env_file: PathBuf,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Apiserver URL.
    pub server: String,
    /// Pids of kube-controller-manager, kube-apiserver and etcd.
    pub pids: Vec<u32>,
    /// The lab's node namespaces.
    pub nodes: Vec<lab::Host>,
    /// The client namespace.
    pub client: lab::Host,
    /// What runs of ferrolb as host processes, with [`UpOptions::run_ferrolb`] and no real nodes.
    pub ferrolb: Option<Ferrolb>,
    /// Whether the nodes are real (kubelet, containerd, kube-proxy): pods run.
    pub real_nodes: bool,
    /// The router running beside the lab, if any.
    pub router: Option<router::Kind>,
}

/// A detached process `up` started, as listed in the env file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    /// Process id.
    pub pid: u32,
    /// Log file.
    pub log: PathBuf,
    /// Base URL of `/healthz`, `/readyz`, `/metrics`, if it serves them.
    pub metrics: Option<String>,
}

impl Started {
    /// `pid=1 log=/path metrics=http://...`: the value of its env-file line.
    pub fn describe(&self) -> String {
        let mut s = format!("pid={} log={}", self.pid, self.log.display());
        if let Some(m) = &self.metrics {
            write!(s, " metrics={m}").unwrap();
        }
        s
    }
}

/// The ferrolb processes of a cluster.
#[derive(Clone, Debug)]
pub struct Ferrolb {
    /// The controller.
    pub controller: Started,
    /// `(node, speaker)`, in node order.
    pub speakers: Vec<(String, Started)>,
    /// `(node, backend)`, in node order.
    pub backends: Vec<(String, Started)>,
    /// The memberlist key file the speakers share.
    pub key_file: PathBuf,
}

/// `cargo build`s [`FERROLB_BINARIES`], with progress lines.
pub fn build_ferrolb() -> Result<()> {
    bins::cargo_build(&FERROLB_BINARIES)
}

/// Starts a control plane (with kube-controller-manager) on `port` and a lab of `nodes` nodes
/// with their Node objects; writes `dir/env` and `dir/pids` and returns once all is ready. The
/// processes and namespaces outlive the caller until [`down`].
pub fn up(dir: &Path, nodes: usize, port: u16) -> Result<Up> {
    up_with(
        dir,
        &UpOptions {
            nodes,
            port,
            real_nodes: None,
            run_ferrolb: false,
            router: None,
        },
    )
}

/// [`up`] with options; with `run_ferrolb`, the binaries must be built ([`build_ferrolb`]).
/// Nothing is left running when it fails.
pub fn up_with(dir: &Path, opts: &UpOptions) -> Result<Up> {
    if Path::new(lab::CLUSTER_MARKER).exists() {
        bail!(
            "a cluster is already up (see {}); run `cargo xtask cluster down` first",
            lab::CLUSTER_MARKER
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    let images = match opts.real_nodes {
        Some(_) => Some(crate::e2e::testbed::images()?),
        None => None,
    };
    let lab = Lab::create(opts.nodes)?;
    let cp = ControlPlane::start(&Options {
        dir: dir.to_path_buf(),
        controller_manager: true,
        workloads: opts.real_nodes.is_some(),
        port: opts.port,
        detached: true,
    })?;
    let real_nodes = match (opts.real_nodes, images) {
        (Some(proxy_mode), Some((archives, pause_image))) => {
            eprintln!(
                "==> starting containerd, kubelet and kube-proxy ({}) on every node",
                proxy_mode.as_str()
            );
            let nodes = RealNodes::start(
                &cp,
                lab.nodes(),
                &node::Options {
                    proxy_mode,
                    images: archives,
                    pause_image,
                    dir: dir.join("nodes"),
                    detached: true,
                },
            )?;
            if opts.run_ferrolb {
                helm_install(&cp).map_err(|e| e.context(nodes.diagnostics()))?;
            }
            Some(nodes)
        }
        _ => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async { lab.register_nodes(&cp.client().await?).await })?;
            None
        }
    };
    let router = match opts.router {
        Some(kind) => {
            eprintln!("==> starting the {} router", kind.name());
            let router = Router::start(RouterConfig::new(kind))?;
            for node in lab.nodes() {
                Router::route_from(node)?;
            }
            Some(router)
        }
        None => None,
    };
    let running = if opts.run_ferrolb && real_nodes.is_none() {
        Some(start_ferrolb(dir, &cp, &lab)?)
    } else {
        None
    };

    let mut env = String::new();
    writeln!(
        env,
        "# Written by `cargo xtask cluster up`; load it with: . {}",
        dir.join("env").display()
    )?;
    writeln!(env, "export KUBECONFIG={}", cp.kubeconfig().display())?;
    writeln!(env, "export PATH={}:$PATH", bins::bin_dir()?.display())?;
    writeln!(env, "export FERROLB_APISERVER={}", cp.server())?;
    let names: Vec<&str> = lab.nodes().iter().map(|n| n.name.as_str()).collect();
    writeln!(env, "export FERROLB_LAB_NODES=\"{}\"", names.join(" "))?;
    writeln!(env, "export FERROLB_LAB_CLIENT={}", lab.client().name)?;
    writeln!(env, "export FERROLB_LAB_BRIDGE={}", lab::BRIDGE)?;
    writeln!(env, "export FERROLB_CLUSTER_LOGS={}", dir.display())?;
    if let Some(r) = &router {
        writeln!(env, "export FERROLB_ROUTER={}", r.config.kind.name())?;
        writeln!(env, "export FERROLB_ROUTER_ADDRESS={}", router::ROUTER_IPV4)?;
        writeln!(
            env,
            "export FERROLB_ROUTER_ADDRESS_V6={}",
            router::ROUTER_IPV6
        )?;
        writeln!(env, "export FERROLB_ROUTER_ASN={}", r.config.asn)?;
        writeln!(env, "export FERROLB_NODE_ASN={}", r.config.node_asn)?;
        writeln!(env, "export FERROLB_ROUTER_CLI=\"{}\"", r.cli())?;
        writeln!(env, "export FERROLB_REMOTE_CLIENT={}", router::REMOTE)?;
    }
    if real_nodes.is_some() {
        writeln!(
            env,
            "export FERROLB_IMAGE={}",
            ImageKind::Ferrolb.reference()?
        )?;
        writeln!(
            env,
            "export FERROLB_ECHO_IMAGE={}",
            ImageKind::Echo.reference()?
        )?;
        writeln!(
            env,
            "export FERROLB_PAUSE_IMAGE={}",
            ImageKind::Pause.reference()?
        )?;
        writeln!(
            env,
            "export FERROLB_NODE_LOGS={}",
            dir.join("nodes").display()
        )?;
    }

    let ferrolb = running.as_ref().map(Running::describe);
    let mut pids = Vec::new();
    if let Some(f) = &ferrolb {
        writeln!(
            env,
            "export FERROLB_CONTROLLER=\"{}\"",
            f.controller.describe()
        )?;
        for (node, s) in &f.speakers {
            writeln!(env, "export FERROLB_SPEAKER_{node}=\"{}\"", s.describe())?;
        }
        for (node, b) in &f.backends {
            writeln!(
                env,
                "export FERROLB_LAB_BACKEND_{node}=\"{}\"",
                b.describe()
            )?;
        }
        writeln!(
            env,
            "export FERROLB_MEMBERLIST_KEY_FILE={}",
            f.key_file.display()
        )?;
        pids.push(f.controller.pid);
        pids.extend(f.speakers.iter().map(|(_, s)| s.pid));
        pids.extend(f.backends.iter().map(|(_, b)| b.pid));
    }
    // Only now, with everything started and written down, does anything outlive this function.
    if let Some(nodes) = real_nodes {
        pids.extend(nodes.release());
    }
    // kube-scheduler, kube-controller-manager, kube-apiserver, then etcd.
    pids.push(cp.scheduler_pid());
    pids.extend(cp.pids().into_iter().rev());
    pids.retain(|p| *p != 0);
    let env_file = dir.join("env");
    std::fs::write(&env_file, &env)?;
    std::fs::write(
        dir.join("pids"),
        pids.iter().map(|p| format!("{p}\n")).collect::<String>(),
    )?;
    std::fs::write(lab::CLUSTER_MARKER, dir.display().to_string())?;

    if let Some(running) = running {
        running.release();
    }
    let kubeconfig = cp.kubeconfig().to_path_buf();
    let server = cp.server().to_string();
    let released = cp.release();
    let (nodes, client) = (lab.nodes().to_vec(), lab.client().clone());
    lab.release();
    let router = router.map(|r| {
        let kind = r.config.kind;
        r.release();
        kind
    });
    Ok(Up {
        env_file,
        kubeconfig,
        server,
        pids: released,
        nodes,
        client,
        ferrolb,
        real_nodes: opts.real_nodes.is_some(),
        router,
    })
}

/// `helm install ferrolb charts/ferrolb -n ferrolb-system --create-namespace`, as the README
/// says, then waits for the controller and every speaker to be Ready.
fn helm_install(cp: &ControlPlane) -> Result<()> {
    use crate::e2e::scenarios::{INSTALL, NAMESPACE, WORKLOADS, rollout_status_args};
    eprintln!("==> helm {}", INSTALL.join(" "));
    crate::process::run(
        std::process::Command::new(bins::binary("helm")?)
            .args(INSTALL)
            .env("KUBECONFIG", cp.kubeconfig())
            .current_dir(bins::workspace_root()),
    )?;
    for object in WORKLOADS {
        eprintln!("==> waiting for {object} to be Ready");
        let args = rollout_status_args(NAMESPACE, object);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cp.kubectl_run(&args)?;
    }
    Ok(())
}

/// ferrolb's processes while `up` is still starting them: dropped (killed) on failure.
struct Running {
    controller: Controller,
    speakers: Vec<Speaker>,
    backends: Backends,
    key_file: PathBuf,
}

impl Running {
    /// What the env file lists.
    fn describe(&self) -> Ferrolb {
        let controller = Started {
            pid: self.controller.pid(),
            log: self.controller.log().to_path_buf(),
            metrics: Some(format!("http://{}", self.controller.addr())),
        };
        let speakers = self
            .speakers
            .iter()
            .map(|s| {
                let started = Started {
                    pid: s.pid(),
                    log: s.log().to_path_buf(),
                    metrics: Some(format!("http://{}", s.addr())),
                };
                (s.node().to_string(), started)
            })
            .collect();
        let backends = self
            .backends
            .nodes()
            .zip(self.backends.pids().into_iter().zip(self.backends.logs()))
            .map(|(node, (pid, log))| {
                let started = Started {
                    pid,
                    log: log.clone(),
                    metrics: None,
                };
                (node.to_string(), started)
            })
            .collect();
        Ferrolb {
            controller,
            speakers,
            backends,
            key_file: self.key_file.clone(),
        }
    }

    /// Leaves every process running.
    fn release(self) {
        self.controller.release();
        for s in self.speakers {
            s.release();
        }
        self.backends.release();
    }
}

/// Installs the CRDs and starts the controller, a speaker per node and the backends, detached,
/// each ready before the next starts.
fn start_ferrolb(dir: &Path, cp: &ControlPlane, lab: &Lab) -> Result<Running> {
    // Look the binaries up before anything starts, so a missing one fails at once.
    controller::binary()?;
    speaker::binary()?;
    crate::backend::binary()?;
    eprintln!("==> installing the CRDs");
    cp.install_crds()?;

    eprintln!("==> starting ferrolb-controller");
    let mut controller = Controller::start_detached(&controller::Options::new(
        cp.kubeconfig(),
        dir.join("controller.log"),
    ))?;
    controller
        .wait_ready(READY_TIMEOUT)
        .context("the controller did not become ready")?;

    let key_file = dir.join("memberlist.key");
    speaker::write_key_file(&key_file)?;
    let mut speakers = Vec::new();
    for host in lab.nodes() {
        eprintln!("==> starting ferrolb-speaker in {}", host.name);
        let mut speaker = Speaker::start(&SpeakerOptions {
            host,
            kubeconfig: cp.kubeconfig(),
            key_file: &key_file,
            log: dir.join(format!("speaker-{}.log", host.name)),
            extra_args: Vec::new(),
            unprivileged: true,
            detached: true,
        })?;
        speaker
            .wait_ready(READY_TIMEOUT)
            .with_context(|| format!("the speaker in {} did not become ready", host.name))?;
        speakers.push(speaker);
    }

    eprintln!("==> starting the lab backends (ferrolb-lab-backend and VIP DNAT per node)");
    let backends = Backends::start(lab.nodes(), dir, true)?;
    Ok(Running {
        controller,
        speakers,
        backends,
        key_file,
    })
}

/// Stops what [`up`] started (the directory is read from the marker `up` left) and removes every
/// lab namespace, veth and the bridge. Safe to run when nothing is up. Refuses (touching nothing)
/// while a test's lab holds the lab lock: that lab is not ours to remove.
pub fn down() -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let _lock = loop {
        // `Lab::create` holds the lock a moment even when it then refuses to run next to a
        // cluster-up lab; wait that moment out.
        if let Some(lock) = lab::try_lock()? {
            break lock;
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "a test's lab is running (it holds the lab lock), not a `cluster up` one; \
                 not removing it. Run `cluster down` again once the tests are done"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if let Ok(dir) = std::fs::read_to_string(lab::CLUSTER_MARKER) {
        let pids_path = Path::new(dir.trim()).join("pids");
        if let Ok(pids) = std::fs::read_to_string(&pids_path) {
            for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                kill(pid);
            }
            std::fs::remove_file(&pids_path)
                .with_context(|| format!("removing {}", pids_path.display()))?;
        }
    }
    // Also kills whatever still runs inside the lab namespaces.
    lab::remove_all()?;
    let _ = std::fs::remove_file(lab::CLUSTER_MARKER);
    Ok(())
}

#[allow(unsafe_code)]
fn kill(pid: i32) {
    // SAFETY: kill(2) has no memory effects; a pid that is already gone just fails with ESRCH.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}
