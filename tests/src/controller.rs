//! The real `ferrolb-controller` binary as a test process: started with a kubeconfig (normally
//! the chart's ServiceAccount, see [`crate::rbac::controller_kubeconfig`]), probed over its
//! `/healthz`, `/readyz` and `/metrics` endpoint, killed or stopped on demand.
//!
//! The binary is `target/debug/ferrolb-controller` (or `$FERROLB_CONTROLLER_BIN`); `cargo xtask
//! test` builds it before the integration tests run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bins;
use crate::process::{Supervised, tail, wait_for};

/// Path of the controller binary.
pub fn binary() -> Result<PathBuf> {
    let path = std::env::var_os("FERROLB_CONTROLLER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| bins::workspace_root().join("target/debug/ferrolb-controller"));
    if !path.exists() {
        bail!(
            "{} is missing; build it with `cargo build -p ferrolb-controller` (cargo xtask test does)",
            path.display()
        );
    }
    Ok(path)
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
    process: Supervised,
    log: PathBuf,
    addr: SocketAddr,
}

impl Controller {
    /// Starts a controller and waits until `/healthz` answers (not until it is ready: a standby
    /// never syncs).
    pub fn start(opts: &Options) -> Result<Controller> {
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
        let mut process = Supervised::spawn("ferrolb-controller", cmd, &opts.log)?;
        let log = opts.log.clone();
        wait_for("the controller's /healthz", Duration::from_secs(20), || {
            process.check_running(&log)?;
            Ok(get(addr, "/healthz").ok().filter(|(code, _)| *code == 200))
        })?;
        Ok(Controller {
            process,
            log: opts.log.clone(),
            addr,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 40)
    }

    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        get(self.addr, "/readyz").is_ok_and(|(code, _)| code == 200)
    }

    /// Waits for `/readyz`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let (addr, log) = (self.addr, self.log.clone());
        let process = &mut self.process;
        wait_for("the controller's /readyz", timeout, || {
            process.check_running(&log)?;
            Ok(get(addr, "/readyz").ok().filter(|(code, _)| *code == 200))
        })
        .map(|_| ())
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        let (code, body) = get(self.addr, "/metrics")?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(body)
    }

    /// The value of a sample in `/metrics` (`name{labels}` exactly as printed, or a bare name).
    pub fn metric(&self, sample: &str) -> Result<Option<f64>> {
        Ok(parse_sample(&self.metrics()?, sample))
    }

    /// Fails if the process exited.
    pub fn check_running(&mut self) -> Result<()> {
        let log = self.log.clone();
        self.process.check_running(&log)
    }

    /// SIGKILL, and wait for it to be reaped.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM (a graceful stop that releases the Lease), and wait up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<()> {
        let pid = self.process.pid();
        if pid == 0 {
            return Ok(());
        }
        crate::process::run(Command::new("kill").args(["-TERM", &pid.to_string()]))?;
        let log = self.log.clone();
        let process = &mut self.process;
        wait_for("the controller to exit after SIGTERM", timeout, || {
            Ok(process.check_running(&log).is_err().then_some(()))
        })?;
        self.process.kill();
        Ok(())
    }
}

/// The value of `sample` in a Prometheus text exposition.
pub fn parse_sample(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok())?
    })
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP status line")?;
    Ok((code, body.to_string()))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_exact_name_and_labels() {
        let text = "# HELP x y\nferrolb_a_total 3\nferrolb_b{pool=\"p\",family=\"ipv4\"} 2.0\n";
        assert_eq!(parse_sample(text, "ferrolb_a_total"), Some(3.0));
        assert_eq!(
            parse_sample(text, "ferrolb_b{pool=\"p\",family=\"ipv4\"}"),
            Some(2.0)
        );
        assert_eq!(parse_sample(text, "ferrolb_b"), None);
    }
}
