//! A ferrolb binary under test as a running daemon: a supervised process, its log file, and the
//! address of its `/healthz`, `/readyz` and `/metrics` endpoint. [`crate::controller`] and
//! [`crate::speaker`] wrap it with what is particular to each binary.
//!
//! ```text
//!  Command ──Supervised::spawn(_detached)──> process ──stdout+stderr──> log file
//!  http_client::get(addr, "/healthz" | "/readyz" | "/metrics") ──HTTP/1.1──> (status, body)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::http_client::Get;
use crate::process::{Supervised, run, tail, wait_for};

/// Kept at its old path for the callers that probe a daemon's address directly.
pub use crate::http_client::get;

/// A running daemon; dropping it kills it (unless released).
#[derive(Debug)]
pub struct Daemon {
    name: String,
    process: Supervised,
    log: PathBuf,
    addr: SocketAddr,
}

impl Daemon {
    /// Starts `cmd` with its output appended to `log`, serving probes on `addr`. A `detached`
    /// daemon runs in a session of its own and may outlive this process ([`Daemon::release`]);
    /// otherwise it dies with the test process. Does not wait for anything.
    pub fn spawn(
        name: &str,
        cmd: Command,
        log: &Path,
        addr: SocketAddr,
        detached: bool,
    ) -> Result<Daemon> {
        let process = if detached {
            Supervised::spawn_detached(name, cmd, log)?
        } else {
            Supervised::spawn(name, cmd, log)?
        };
        Ok(Daemon {
            name: name.to_string(),
            process,
            log: log.to_path_buf(),
            addr,
        })
    }

    /// Waits until `path` answers 200, failing early (with the log's tail) if the process exits.
    pub fn wait_for_200(&mut self, path: &str, timeout: Duration) -> Result<()> {
        let (addr, log) = (self.addr, self.log.clone());
        let process = &mut self.process;
        wait_for(&format!("{}'s {path}", self.name), timeout, || {
            process.check_running(&log)?;
            Ok(get(addr, path).ok().filter(|(code, _)| *code == 200))
        })
        .map(|_| ())
    }

    /// Process id (0 once killed or released).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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

    /// `/readyz`'s status code and body.
    pub fn readyz(&self) -> Result<(u16, String)> {
        get(self.addr, "/readyz")
    }

    /// Waits for `/readyz`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        self.wait_for_200("/readyz", timeout)
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        Get::new(self.addr, "/metrics")
            .send()
            .map_err(anyhow::Error::from)
            .and_then(|response| response.ok_body())
            .with_context(|| format!("scraping {}'s /metrics at {}", self.name, self.addr))
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

    /// SIGTERM (a graceful stop), and wait up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<()> {
        let pid = self.process.pid();
        if pid == 0 {
            return Ok(());
        }
        run(Command::new("kill").args(["-TERM", &pid.to_string()]))?;
        let log = self.log.clone();
        let process = &mut self.process;
        wait_for(
            &format!("{} to exit after SIGTERM", self.name),
            timeout,
            || Ok(process.check_running(&log).is_err().then_some(())),
        )?;
        self.process.kill();
        Ok(())
    }

    /// Leaves the process running past drop (for `cargo xtask cluster up`); returns its pid.
    pub fn release(self) -> u32 {
        self.process.release()
    }
}

/// The value of `sample` in a Prometheus text exposition.
pub fn parse_sample(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok())?
    })
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
