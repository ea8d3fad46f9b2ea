//! End-to-end scenarios as a user runs ferrolb: `helm install` of the chart with the locally
//! built images, pools and Services applied with kubectl, traffic from a client on the nodes' LAN
//! through the real kube-proxy. Written once against a [`Driver`]; the testbed's real nodes
//! ([`testbed::Testbed`]) are one driver, a kind cluster is another.
//!
//! ```text
//!  scenarios ── Driver ── kubectl / helm against the cluster
//!                      └─ client: curl, arping, ndisc6 on the nodes' LAN
//!                      └─ nodes: names, MACs, power off
//! ```

pub mod bgp;
pub mod doc_steps;
pub mod kind;
pub mod migration;
pub mod probes;
pub mod scenarios;
pub mod testbed;
pub mod watch;

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Result, bail};

use crate::process::{run, run_input};

/// A cluster the scenarios run on.
pub trait Driver {
    /// What it is, for messages ("testbed (nftables)", "kind").
    fn describe(&self) -> String;
    /// Admin kubeconfig.
    fn kubeconfig(&self) -> &Path;
    /// The kubectl binary.
    fn kubectl_binary(&self) -> Result<std::path::PathBuf>;
    /// The helm binary.
    fn helm_binary(&self) -> Result<std::path::PathBuf>;
    /// Runs `program args` on the client machine (on the nodes' LAN).
    fn client(&self, program: &str, args: &[&str]) -> Result<Output>;
    /// The client's interface on the nodes' LAN.
    fn client_interface(&self) -> &str;
    /// The client's own IPv4 address (what a Service with `externalTrafficPolicy: Local` must
    /// see as the source).
    fn client_ipv4(&self) -> IpAddr;
    /// Pool ranges on the nodes' LAN that nothing else uses: IPv4, and IPv6 if the LAN has it.
    fn pool_ranges(&self) -> Vec<String>;
    /// The MAC of `node`'s interface on the LAN.
    fn node_mac(&self, node: &str) -> Result<String>;
    /// Every node's name.
    fn nodes(&self) -> Vec<String>;
    /// Stops `node` entirely and at once (kubelet, runtime, every pod, its link), as a power cut.
    fn power_off(&mut self, node: &str) -> Result<()>;
    /// Re-tags the ferrolb image on every node as `reference` (a "rebuilt" image for upgrades).
    fn tag_ferrolb_image(&self, reference: &str) -> Result<()>;
    /// Runs `program args` as root on `node` itself (its network namespace), as an operator's
    /// shell on that machine would.
    fn on_node(&self, node: &str, program: &str, args: &[&str]) -> Result<Output>;

    /// `kubectl <args>` as admin: stdout, or an error with stderr.
    fn kubectl(&self, args: &[&str]) -> Result<String> {
        run(self.kubectl_command()?.args(args))
    }

    /// `kubectl <args>` with `input` on stdin (for `apply -f -`).
    fn kubectl_input(&self, args: &[&str], input: &str) -> Result<String> {
        run_input(self.kubectl_command()?.args(args), input)
    }

    /// A kubectl command with the admin kubeconfig.
    fn kubectl_command(&self) -> Result<Command> {
        let mut cmd = Command::new(self.kubectl_binary()?);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig().display()));
        Ok(cmd)
    }

    /// `helm <args>` with `KUBECONFIG` set, run from the repository root (so `charts/ferrolb`
    /// resolves as in the README).
    fn helm(&self, args: &[&str]) -> Result<String> {
        run(Command::new(self.helm_binary()?)
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .current_dir(crate::bins::workspace_root()))
    }

    /// Runs `program args` on the client; stdout, or an error with stderr.
    fn client_ok(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self.client(program, args)?;
        if !out.status.success() {
            bail!(
                "{program} {} on the client failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
