//! `tcpdump` in a lab namespace, writing a pcap file: started once it listens, stopped so the
//! file holds every frame that arrived (SIGINT, after which tcpdump flushes and exits).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lab::Host;

/// A running capture; dropping it kills tcpdump.
#[derive(Debug)]
pub struct Tcpdump {
    child: Child,
    file: PathBuf,
}

impl Tcpdump {
    /// Captures what `filter` (pcap syntax) selects on `interface` of `host` into `file`, with
    /// host time stamps in microseconds; returns once tcpdump says it is listening.
    pub fn start(host: &Host, interface: &str, file: &Path, filter: &str) -> Result<Tcpdump> {
        let mut child = host
            .command("tcpdump")
            .args([
                "-i",
                interface,
                "-j",
                "host",
                "--time-stamp-precision",
                "micro",
            ])
            // Hand every frame to tcpdump at once (not in 1 s blocks) and write it at once, so
            // stopping the capture loses nothing.
            .args(["-n", "--immediate-mode", "-U", "-w"])
            .arg(file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting tcpdump in namespace {}", host.name))?;
        let stderr = child.stderr.take().context("tcpdump's stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads stderr to its end, so tcpdump never blocks on (or dies of) a full or closed pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        let mut capture = Tcpdump {
            child,
            file: file.to_path_buf(),
        };
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            capture.kill();
            bail!("tcpdump did not start listening within 10 s");
        }
        Ok(capture)
    }

    /// Stops tcpdump (SIGINT flushes the file); the file.
    pub fn stop(mut self) -> PathBuf {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        self.file.clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        self.kill();
    }
}
