//! A real control plane for tests: etcd + kube-apiserver (+ kube-controller-manager), built from
//! Go modules (see [`crate::bins`]), RBAC on, dual-stack Service ranges, an admin kubeconfig.
//!
//! The apiserver listens on the lab bridge address ([`crate::lab::BRIDGE_IPV4`]) so processes in
//! node namespaces reach it; the bridge is created first if missing. etcd listens on loopback.
//!
//! Sharing: one control plane per test binary ([`shared`]), started by the first test that asks
//! and killed when the test process exits (see [`crate::process`]). Tests isolate by name: each
//! uses its own namespace and prefixes cluster-scoped objects (pools, advertisements, nodes) with
//! a name of its own ([`unique_name`]).

use std::ffi::OsString;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::bins;
use crate::lab;
use crate::pki::Pki;
use crate::process::{Supervised, run, run_input, wait_for};

/// IPv4 range for Services' cluster IPs: 198.18.0.0/15 is reserved for benchmarking (RFC 2544)
/// and never routed; nothing is ever sent to these addresses (there is no kube-proxy).
pub const SERVICE_CIDR_V4: &str = "198.18.0.0/16";
/// IPv6 range for Services' cluster IPs, inside the documentation prefix.
pub const SERVICE_CIDR_V6: &str = "2001:db8:ffff::/108";

/// What to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// Directory for certificates, data, kubeconfig and logs.
    pub dir: PathBuf,
    /// Also run kube-controller-manager (EndpointSlices from Pods, namespace deletion, GC).
    pub controller_manager: bool,
    /// Run as for real nodes ([`crate::node`]): kube-scheduler, every default controller of
    /// kube-controller-manager (Deployments, DaemonSets, node lifecycle, ...), the Node
    /// authorizer and NodeRestriction for kubelets, the apiserver's client certificate for
    /// kubelets (logs, exec), and the `kubernetes` Service's endpoints kept (pods reach the
    /// apiserver through it). Implies `controller_manager`.
    pub workloads: bool,
    /// Apiserver port; 0 picks a free one.
    pub port: u16,
    /// Run the processes in their own session so they outlive this process (`cluster up`).
    pub detached: bool,
}

/// A running control plane; dropping it kills its processes (etcd last). The apiserver and etcd
/// can be killed and started again ([`ControlPlane::kill_apiserver`] and the like), for fault
/// tests.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    scheduler: Option<Supervised>,
    controller_manager: Option<Supervised>,
    apiserver: Restartable,
    etcd: Restartable,
    etcd_port: u16,
}

/// A process that can be killed and started again with the same command line.
#[derive(Debug)]
struct Restartable {
    running: Mutex<Supervised>,
    program: Mutex<PathBuf>,
    args: Vec<OsString>,
    log: PathBuf,
    detached: bool,
}

impl Restartable {
    fn start(opts: &Options, name: &str, cmd: Command, log: &Path) -> Result<Restartable> {
        let program = PathBuf::from(cmd.get_program());
        let args = cmd.get_args().map(OsString::from).collect();
        Ok(Restartable {
            running: Mutex::new(spawn(opts, name, cmd, log)?),
            program: Mutex::new(program),
            args,
            log: log.to_path_buf(),
            detached: opts.detached,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Supervised> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kill(&self) {
        self.lock().kill();
    }

    /// Starts the process again (killing a running one first).
    fn restart(&self, name: &str) -> Result<()> {
        let mut running = self.lock();
        running.kill();
        let program = self
            .program
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut cmd = Command::new(program);
        cmd.args(&self.args);
        *running = if self.detached {
            Supervised::spawn_detached(name, cmd, &self.log)?
        } else {
            Supervised::spawn(name, cmd, &self.log)?
        };
        Ok(())
    }
}

impl ControlPlane {
    /// Starts etcd, the apiserver and optionally the controller manager, and returns once the
    /// apiserver reports ready (and the controller manager has created the default
    /// ServiceAccount).
    pub fn start(opts: &Options) -> Result<ControlPlane> {
        // Ports are picked free and bound later by etcd and kube-apiserver: another process can
        // take one in between. That, and only that, is worth another try on new ports.
        let mut attempt = 1;
        loop {
            match Self::start_once(opts) {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    eprintln!("control plane: a picked port was taken meanwhile ({e:#}); retrying");
                    let _ = std::fs::remove_dir_all(opts.dir.join("etcd"));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn start_once(opts: &Options) -> Result<ControlPlane> {
        lab::ensure_bridge()?;
        let dir = opts.dir.clone();
        std::fs::create_dir_all(&dir)?;
        let bind = IpAddr::V4(lab::BRIDGE_IPV4);
        // Pods reach the apiserver as the `kubernetes` Service: its ClusterIP is the first
        // address of the Service range, and the serving certificate must name it.
        let kubernetes_service: ipnetwork::Ipv4Network = SERVICE_CIDR_V4.parse()?;
        let kubernetes_service = IpAddr::V4(kubernetes_service.nth(1).context("Service range")?);
        let pki = Pki::write(
            &dir.join("pki"),
            &[bind, "127.0.0.1".parse()?, kubernetes_service],
        )?;

        let (etcd_client, etcd_peer) = (free_port()?, free_port()?);
        let etcd_log = dir.join("etcd.log");
        let mut etcd_cmd = Command::new(bins::binary("etcd")?);
        etcd_cmd.args([
            "--name=testbed",
            &format!("--data-dir={}", dir.join("etcd").display()),
            &format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
            &format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
            &format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
            &format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
            &format!("--initial-cluster=testbed=http://127.0.0.1:{etcd_peer}"),
            "--unsafe-no-fsync",
            "--log-level=warn",
            "--quota-backend-bytes=4294967296",
        ]);
        let etcd = Restartable::start(opts, "etcd", etcd_cmd, &etcd_log)?;
        wait_for_etcd(&etcd, etcd_client)?;

        let port = if opts.port == 0 {
            free_port()?
        } else {
            opts.port
        };
        let server = format!("https://{bind}:{port}");
        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &server, &pki)?;
        let apiserver_log = dir.join("kube-apiserver.log");
        let mut apiserver_cmd = Command::new(bins::binary("kube-apiserver")?);
        apiserver_cmd.args([
            format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
            format!("--bind-address={bind}"),
            format!("--advertise-address={bind}"),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", dir.join("pki").display()),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            format!("--service-cluster-ip-range={SERVICE_CIDR_V4},{SERVICE_CIDR_V6}"),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!(
                "--service-account-key-file={}",
                pki.service_account_pub.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ),
            "--profiling=false".into(),
            "--max-requests-inflight=1000".into(),
            "--max-mutating-requests-inflight=500".into(),
            "--v=1".into(),
        ]);
        if opts.workloads {
            apiserver_cmd.args([
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                format!("--kubelet-client-certificate={}", pki.admin_cert.display()),
                format!("--kubelet-client-key={}", pki.admin_key.display()),
                "--kubelet-preferred-address-types=InternalIP".into(),
            ]);
        } else {
            // No kubelet, no pod: the `kubernetes` Service needs no endpoints.
            apiserver_cmd.args([
                "--authorization-mode=RBAC",
                "--endpoint-reconciler-type=none",
            ]);
        }
        let apiserver = Restartable::start(opts, "kube-apiserver", apiserver_cmd, &apiserver_log)?;
        wait_for_apiserver(&apiserver, &server, Duration::from_secs(90))?;
        let kubectl = bins::binary("kubectl")?;

        let controller_manager = if opts.controller_manager || opts.workloads {
            let controllers = if opts.workloads {
                "*"
            } else {
                "endpointslice,endpointslicemirroring,namespace,garbagecollector,serviceaccount,serviceaccount-token"
            };
            let log = dir.join("kube-controller-manager.log");
            let mut cmd = Command::new(bins::binary("kube-controller-manager")?);
            cmd.args([
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                format!(
                    "--service-account-private-key-file={}",
                    pki.service_account_key.display()
                ),
                format!("--root-ca-file={}", pki.ca_cert.display()),
                format!("--controllers={controllers}"),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=false".into(),
                "--secure-port=0".into(),
                "--concurrent-service-endpoint-syncs=10".into(),
                "--v=1".into(),
            ]);
            let mut kcm = spawn(opts, "kube-controller-manager", cmd, &log)?;
            wait_for(
                "kube-controller-manager to create the default ServiceAccount",
                Duration::from_secs(60),
                || {
                    kcm.check_running(&log)?;
                    Ok(kubectl_succeeds(
                        &kubectl,
                        &kubeconfig,
                        &["get", "serviceaccount", "default", "-n", "default"],
                    )
                    .then_some(()))
                },
            )?;
            Some(kcm)
        } else {
            None
        };

        let scheduler = if opts.workloads {
            let log = dir.join("kube-scheduler.log");
            let port = free_port()?;
            let mut cmd = Command::new(bins::binary("kube-scheduler")?);
            cmd.args([
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                "--v=1".into(),
            ]);
            let mut scheduler = spawn(opts, "kube-scheduler", cmd, &log)?;
            wait_for("kube-scheduler to serve", Duration::from_secs(60), || {
                scheduler.check_running(&log)?;
                Ok(TcpStream::connect(("127.0.0.1", port)).ok())
            })?;
            Some(scheduler)
        } else {
            None
        };

        Ok(ControlPlane {
            dir,
            kubeconfig,
            server,
            scheduler,
            controller_manager,
            apiserver,
            etcd,
            etcd_port: etcd_client,
        })
    }

    /// Kills kube-apiserver (SIGKILL): every connection to it is reset.
    pub fn kill_apiserver(&self) {
        self.apiserver.kill();
    }

    /// Starts kube-apiserver again and returns once `/readyz` answers 200, with the instant it
    /// first did (polled every 50 ms).
    pub fn restart_apiserver(&self) -> Result<Instant> {
        self.apiserver.restart("kube-apiserver")?;
        wait_for_apiserver(&self.apiserver, &self.server, Duration::from_secs(90))
    }

    /// Replaces kube-apiserver by `program` (same flags, same etcd) and returns once `/readyz`
    /// answers 200; later restarts run `program` too.
    pub fn restart_apiserver_as(&self, program: &Path) -> Result<Instant> {
        *self
            .apiserver
            .program
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = program.to_path_buf();
        self.restart_apiserver()
    }

    /// Kills etcd (SIGKILL); the apiserver stays up and fails its requests.
    pub fn kill_etcd(&self) {
        self.etcd.kill();
    }

    /// Starts etcd again on the same data and returns once the apiserver's `/readyz` answers 200
    /// again, with the instant it first did.
    pub fn restart_etcd(&self) -> Result<Instant> {
        self.etcd.restart("etcd")?;
        wait_for_etcd(&self.etcd, self.etcd_port)?;
        wait_for_apiserver(&self.apiserver, &self.server, Duration::from_secs(90))
    }

    /// Admin kubeconfig (identity in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Apiserver URL, reachable from the host and from every lab namespace.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Directory with certificates, data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Process ids: etcd, kube-apiserver, kube-controller-manager (0 when not running).
    pub fn pids(&self) -> [u32; 3] {
        [
            self.etcd.lock().pid(),
            self.apiserver.lock().pid(),
            self.controller_manager.as_ref().map_or(0, Supervised::pid),
        ]
    }

    /// Process id of kube-scheduler (0 when not running).
    pub fn scheduler_pid(&self) -> u32 {
        self.scheduler.as_ref().map_or(0, Supervised::pid)
    }

    /// Leaves the processes running (see [`Options::detached`]) and returns their pids.
    pub fn release(mut self) -> Vec<u32> {
        let mut pids = Vec::new();
        if let Some(scheduler) = self.scheduler.take() {
            pids.push(scheduler.release());
        }
        if let Some(kcm) = self.controller_manager.take() {
            pids.push(kcm.release());
        }
        let placeholder = || Supervised::none("released");
        pids.push(std::mem::replace(&mut *self.apiserver.lock(), placeholder()).release());
        pids.push(std::mem::replace(&mut *self.etcd.lock(), placeholder()).release());
        pids
    }

    /// A kube client with admin rights.
    pub async fn client(&self) -> Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// `kubectl` with this control plane's kubeconfig.
    pub fn kubectl(&self) -> Result<Command> {
        let mut cmd = Command::new(bins::binary("kubectl")?);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        Ok(cmd)
    }

    /// Applies the CRDs committed under the chart and waits until each is Established.
    pub fn install_crds(&self) -> Result<()> {
        let dir = bins::workspace_root().join("charts/ferrolb/charts/crds/templates");
        let dir = dir.to_string_lossy();
        self.kubectl_run(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=ferrolb-testbed",
            "-f",
            &dir,
        ])?;
        self.kubectl_run(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            &dir,
        ])?;
        Ok(())
    }

    /// Runs kubectl with `args`, returning stdout or failing with stderr.
    pub fn kubectl_run(&self, args: &[&str]) -> Result<String> {
        run(self.kubectl()?.args(args))
    }

    /// `kubectl apply -f -` of `manifest`: stdout, or an error carrying kubectl's stderr (the
    /// apiserver's message).
    pub fn kubectl_apply(&self, manifest: &str) -> Result<String> {
        run_input(self.kubectl()?.args(["apply", "-f", "-"]), manifest)
    }
}

fn spawn(opts: &Options, name: &str, cmd: Command, log: &Path) -> Result<Supervised> {
    if opts.detached {
        Supervised::spawn_detached(name, cmd, log)
    } else {
        Supervised::spawn(name, cmd, log)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(scheduler) = self.scheduler.as_mut() {
            scheduler.kill();
        }
        if let Some(kcm) = self.controller_manager.as_mut() {
            kcm.kill();
        }
        self.apiserver.kill();
        self.etcd.kill();
    }
}

/// Waits until etcd accepts connections on `port`.
fn wait_for_etcd(etcd: &Restartable, port: u16) -> Result<()> {
    wait_for(
        "etcd to accept connections",
        Duration::from_secs(30),
        || {
            etcd.lock().check_running(&etcd.log)?;
            Ok(TcpStream::connect(("127.0.0.1", port)).ok())
        },
    )
    .map(drop)
}

/// Waits until the apiserver's `/readyz` answers 200 (anonymous, as kubelets probe it) and
/// returns when it first did.
fn wait_for_apiserver(apiserver: &Restartable, server: &str, timeout: Duration) -> Result<Instant> {
    let url = format!("{}/readyz", server.trim_end_matches('/'));
    wait_for("kube-apiserver /readyz", timeout, || {
        apiserver.lock().check_running(&apiserver.log)?;
        let ok = Command::new("curl")
            .args(["-sfk", "--max-time", "1", "-o", "/dev/null", &url])
            .status()
            .is_ok_and(|s| s.success());
        Ok(ok.then(Instant::now))
    })
}

/// Whether `kubectl <args>` exits 0 against `kubeconfig` (a readiness probe).
fn kubectl_succeeds(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> bool {
    Command::new(kubectl)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn write_kubeconfig(path: &Path, server: &str, pki: &Pki) -> Result<()> {
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let b64 = |s: String| base64_encode(s.as_bytes());
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ferrolb-testbed", "cluster": {
            "server": server,
            "certificate-authority-data": b64(read(&pki.ca_cert)?),
        }}],
        "users": [{"name": "admin", "user": {
            "client-certificate-data": b64(read(&pki.admin_cert)?),
            "client-key-data": b64(read(&pki.admin_key)?),
        }}],
        "contexts": [{"name": "ferrolb-testbed", "context": {"cluster": "ferrolb-testbed", "user": "admin"}}],
        "current-context": "ferrolb-testbed",
    });
    std::fs::write(path, serde_yaml::to_string(&config)?)?;
    Ok(())
}

pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A TCP port that was free a moment ago on loopback.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Scratch directory for this test process: `target/testbed/<pid>`.
pub fn process_dir() -> PathBuf {
    bins::workspace_root()
        .join("target/testbed")
        .join(std::process::id().to_string())
}

/// The control plane shared by every test in this test binary (with kube-controller-manager).
pub fn shared() -> &'static ControlPlane {
    static SHARED: OnceLock<ControlPlane> = OnceLock::new();
    SHARED.get_or_init(|| {
        ControlPlane::start(&Options {
            dir: process_dir().join("control-plane"),
            controller_manager: true,
            workloads: false,
            port: 0,
            detached: false,
        })
        .unwrap_or_else(|e| panic!("starting the shared test control plane: {e:#}"))
    })
}

/// [`shared`], with the CRDs installed and Established (once per test binary).
pub fn shared_with_crds() -> &'static ControlPlane {
    static CRDS: OnceLock<()> = OnceLock::new();
    let cp = shared();
    CRDS.get_or_init(|| {
        cp.install_crds()
            .unwrap_or_else(|e| panic!("CRDs install and become Established: {e:#}"))
    });
    cp
}

/// `prefix-<pid>-<n>`: a name no other test (in this or an earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), want);
        }
    }
}
