//! The real `ferrolb-controller` binary as a test process: started with a kubeconfig (normally
//! the chart's ServiceAccount, see [`crate::rbac::controller_kubeconfig`]), probed over its
//! `/healthz`, `/readyz` and `/metrics` endpoint, killed or stopped on demand.
//!
//! The binary is `ferrolb-controller` in the running executable's target directory (see
//! [`bins::cargo_binary`]; or `$FERROLB_CONTROLLER_BIN`); `cargo xtask test` builds it before the
//! integration tests run.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::bins;
use crate::daemon::Daemon;
pub use crate::daemon::{get, parse_sample};

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

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served (loopback).
    pub fn addr(&self) -> SocketAddr {
        self.daemon.addr()
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        self.daemon.log()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.daemon.log_tail()
    }

    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        self.daemon.ready()
    }

    /// Waits for `/readyz`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        self.daemon.wait_ready(timeout)
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        self.daemon.metrics()
    }

    /// The value of a sample in `/metrics` (`name{labels}` exactly as printed, or a bare name).
    pub fn metric(&self, sample: &str) -> Result<Option<f64>> {
        self.daemon.metric(sample)
    }

    /// Fails if the process exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.daemon.check_running()
    }

    /// SIGKILL, and wait for it to be reaped.
    pub fn kill(&mut self) {
        self.daemon.kill();
    }

    /// SIGTERM (a graceful stop that releases the Lease), and wait up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<()> {
        self.daemon.terminate(timeout)
    }

    /// Leaves the process running past drop; returns its pid.
    pub fn release(self) -> u32 {
        self.daemon.release()
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
