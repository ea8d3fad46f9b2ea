//! The real `ferrolb-controller` binary as a test process: started with a kubeconfig (normally
//! the chart's ServiceAccount, see [`crate::rbac::controller_kubeconfig`]), probed over its
//! `/healthz`, `/readyz` and `/metrics` endpoint, killed or stopped on demand.
//!
//! The binary is `ferrolb-controller` in the running executable's target directory (see
//! [`bins::cargo_binary`]; or `$FERROLB_CONTROLLER_BIN`); `cargo xtask test` builds it before the
//! integration tests run.

use std::net::{SocketAddr, TcpListener};
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};
use tokio::task::block_in_place;

use crate::daemon::Daemon;
pub use crate::daemon::{get, parse_sample};
use crate::{bins, control_plane, rbac};

/// Path of the controller binary.
pub fn binary() -> Result<PathBuf> {
    bins::cargo_binary(
        "ferrolb-controller",
        "FERROLB_CONTROLLER_BIN",
        "cargo build -p ferrolb-controller",
    )
}

/// How to run one controller.
#[derive(Clone, Debug)]
pub struct Options {
    /// Kubeconfig the controller uses.
    pub kubeconfig: PathBuf,
    /// Log file.
    pub log: PathBuf,
    /// `--lb-class`.
    pub lb_class: Option<String>,
    /// Leader election: `(namespace, identity)`; `None` runs with `--no-leader-election`.
    pub lease: Option<(String, String)>,
    /// Further arguments.
    pub extra_args: Vec<String>,
}

impl Options {
    /// A controller with `kubeconfig`, logging to `log`: no class, no leader election, no
    /// further arguments.
    pub fn new(kubeconfig: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Options {
        Options {
            kubeconfig: kubeconfig.into(),
            log: log.into(),
            lb_class: None,
            lease: None,
            extra_args: Vec::new(),
        }
    }
}

/// A namespace of one test's own on the shared control plane (CRDs installed), holding the
/// chart's controller RBAC, with a kubeconfig for that ServiceAccount and a directory for the
/// test's files (`process_dir()/<name>`). The Services of the test go in the namespace too.
#[derive(Clone)]
pub struct TestNamespace {
    /// An admin client of the shared control plane.
    pub client: Client,
    /// The namespace (`<prefix>-<pid>-<n>`), also the release name of the RBAC.
    pub name: String,
    /// The test's directory.
    pub dir: PathBuf,
    /// Kubeconfig of the chart's controller ServiceAccount.
    pub kubeconfig: PathBuf,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl TestNamespace {
    /// Creates it; blocks a worker thread of a multi-threaded runtime while the control plane
    /// starts and kubectl runs.
    pub async fn create(prefix: &str) -> Result<TestNamespace> {
        let cp = block_in_place(control_plane::shared_with_crds);
        let client = cp.client().await?;
        let name = control_plane::unique_name(prefix);
        let dir = control_plane::process_dir().join(&name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let kubeconfig = block_in_place(|| rbac::controller_kubeconfig(cp, &name, &name, &dir))
            .context("the chart's controller RBAC")?;
        Ok(TestNamespace {
            client,
            name,
            dir,
            kubeconfig,
        })
    }

    /// The Services of the namespace.
    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

/// A running controller; dropping it kills it.
#[derive(Debug)]
pub struct Controller {
    daemon: Daemon,
}

impl Controller {
    /// Starts a controller and waits until `/healthz` answers (not until it is ready: a standby
    /// never syncs).
    pub fn start(opts: &Options) -> Result<Controller> {
        Self::launch(opts, false)
    }

    /// Like [`Controller::start`], in a session of its own that may outlive this process (see
    /// [`Controller::release`]); for `cargo xtask cluster up`.
    pub fn start_detached(opts: &Options) -> Result<Controller> {
        Self::launch(opts, true)
    }

    fn launch(opts: &Options, detached: bool) -> Result<Controller> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut cmd = Command::new(binary()?);
        cmd.arg("run")
            .arg(format!("--metrics-addr={addr}"))
            .env("KUBECONFIG", &opts.kubeconfig)
            .env("RUST_LOG", "info,ferrolb_controller=debug");
        if let Some(class) = &opts.lb_class {
            cmd.arg(format!("--lb-class={class}"));
        }
        match &opts.lease {
            Some((namespace, identity)) => {
                cmd.args([
                    format!("--lease-namespace={namespace}"),
                    format!("--identity={identity}"),
                    "--lease-duration=2s".into(),
                    "--renew-deadline=1s".into(),
                    "--retry-period=200ms".into(),
                ]);
            }
            None => {
                cmd.arg("--no-leader-election");
            }
        }
        cmd.args(&opts.extra_args);
        let mut daemon = Daemon::spawn("ferrolb-controller", cmd, &opts.log, addr, detached)?;
        daemon.wait_for_200("/healthz", Duration::from_secs(20))?;
        Ok(Controller { daemon })
    }

    /// Leaves the process running past drop; returns its pid.
    pub fn release(self) -> u32 {
        self.daemon.release()
    }
}

/// The process's own calls (`pid`, `addr`, `log_tail`, `metric`, `wait_ready`, `kill`,
/// `terminate`, ...) are [`Daemon`]'s.
impl Deref for Controller {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl DerefMut for Controller {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
