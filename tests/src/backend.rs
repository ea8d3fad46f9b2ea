//! Lab backends: kube-proxy's part in the lab, so `curl http://VIP/` from the client says which
//! node the client's kernel sent the VIP's traffic to (docs/testing.md, the lab).
//!
//! ```text
//!  client ──(dst MAC: the node the VIP resolved to)──> nodeN:eth0
//!     nftables `inet ferrolb_lab` prerouting (dstnat), VIP ranges only:
//!       tcp dport 80  ──dnat──> <nodeN's own address>:8080 ──> ferrolb-lab-backend --name nodeN
//!       anything else ──dnat──> <nodeN's own address>        (ping answers from the VIP)
//! ```
//!
//! The node's kernel never owns the VIP, so without the rules it would drop the packets; with
//! them, replies carry the VIP as source (conntrack undoes the DNAT). Whoever answered ARP/NDP for
//! the VIP (a speaker, or a static neighbour entry in a test) decides which node's name comes back.
//!
//! The binary is `ferrolb-lab-backend` from this crate (built with the integration tests, or
//! `$FERROLB_LAB_BACKEND_BIN`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bins;
use crate::daemon::get;
use crate::lab::{Host, VIP_RANGE_V4, VIP_RANGE_V6};
use crate::process::{Supervised, run_input, wait_for};

/// Port the backends listen on (what port 80 of a VIP is DNATed to).
pub const BACKEND_PORT: u16 = 8080;
/// The nftables table (family `inet`) holding the DNAT rules in each node namespace.
pub const NFT_TABLE: &str = "ferrolb_lab";

/// Path of the backend binary.
pub fn binary() -> Result<PathBuf> {
    bins::cargo_binary(
        "ferrolb-lab-backend",
        "FERROLB_LAB_BACKEND_BIN",
        "cargo build -p ferrolb-tests --bin ferrolb-lab-backend",
    )
}

/// The nftables script that makes `host` answer for the lab VIP ranges (idempotent: it replaces
/// an earlier table of the same name).
pub fn dnat_rules(host: &Host) -> String {
    format!(
        "table inet {NFT_TABLE} {{}}\n\
         delete table inet {NFT_TABLE}\n\
         table inet {NFT_TABLE} {{\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tip daddr {VIP_RANGE_V4} tcp dport 80 dnat ip to {v4}:{BACKEND_PORT}\n\
         \t\tip daddr {VIP_RANGE_V4} dnat ip to {v4}\n\
         \t\tip6 daddr {VIP_RANGE_V6} tcp dport 80 dnat ip6 to [{v6}]:{BACKEND_PORT}\n\
         \t\tip6 daddr {VIP_RANGE_V6} dnat ip6 to {v6}\n\
         \t}}\n\
         }}\n",
        v4 = host.ipv4,
        v6 = host.ipv6,
    )
}

/// One backend per node namespace, with its DNAT rules. Dropping it kills the processes and
/// removes the rules (unless released). The lab's teardown also kills whatever still runs in
/// its namespaces, so a lab dropped first leaves nothing behind either.
#[derive(Debug)]
pub struct Backends {
    hosts: Vec<Host>,
    processes: Vec<Supervised>,
    logs: Vec<PathBuf>,
}

impl Backends {
    /// Installs the DNAT rules in each of `nodes` and starts a backend there (`--name` is the
    /// node's name, logs in `log_dir/backend-<node>.log`); returns once every backend answers
    /// over the bridge on both its IPv4 and IPv6 address. `detached` backends run in sessions of
    /// their own and outlive this process once [`Backends::release`]d (`cargo xtask cluster up`).
    pub fn start(nodes: &[Host], log_dir: &Path, detached: bool) -> Result<Backends> {
        let bin = binary()?;
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let mut backends = Backends {
            hosts: Vec::new(),
            processes: Vec::new(),
            logs: Vec::new(),
        };
        for host in nodes {
            backends.hosts.push(host.clone());
            run_input(host.command("nft").args(["-f", "-"]), &dnat_rules(host))
                .with_context(|| format!("installing the VIP DNAT rules in {}", host.name))?;
            let log = log_dir.join(format!("backend-{}.log", host.name));
            let mut cmd = host.command(bin.to_str().context("backend path is not UTF-8")?);
            cmd.args([
                "--name",
                &host.name,
                "--listen",
                &format!("[::]:{BACKEND_PORT}"),
            ]);
            let name = format!("ferrolb-lab-backend in {}", host.name);
            let process = if detached {
                Supervised::spawn_detached(&name, cmd, &log)?
            } else {
                Supervised::spawn(&name, cmd, &log)?
            };
            backends.processes.push(process);
            backends.logs.push(log);
        }
        for (i, host) in nodes.iter().enumerate() {
            for ip in [IpAddr::V4(host.ipv4), IpAddr::V6(host.ipv6)] {
                let addr = SocketAddr::new(ip, BACKEND_PORT);
                let (process, log) = (&mut backends.processes[i], &backends.logs[i]);
                let body = wait_for(
                    &format!("the backend in {} at {addr}", host.name),
                    Duration::from_secs(10),
                    || {
                        process.check_running(log)?;
                        Ok(get(addr, "/").ok())
                    },
                )?;
                if body != (200, format!("{}\n", host.name)) {
                    bail!(
                        "the backend in {} answered {body:?} at {addr}, not 200 {:?}",
                        host.name,
                        host.name
                    );
                }
            }
        }
        Ok(backends)
    }

    /// The nodes, in order (empty once released).
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.hosts.iter().map(|h| h.name.as_str())
    }

    /// Process ids, in node order.
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(Supervised::pid).collect()
    }

    /// Log files, in node order.
    pub fn logs(&self) -> &[PathBuf] {
        &self.logs
    }

    /// Leaves the processes and rules in place; returns the pids. Removing the namespaces
    /// (`cargo xtask cluster down`) takes the rules with them.
    pub fn release(mut self) -> Vec<u32> {
        self.hosts.clear();
        std::mem::take(&mut self.processes)
            .into_iter()
            .map(Supervised::release)
            .collect()
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        for process in &mut self.processes {
            process.kill();
        }
        for host in &self.hosts {
            // Fails harmlessly when the namespace is already gone.
            let _ = Command::new("ip")
                .args([
                    "netns", "exec", &host.name, "nft", "delete", "table", "inet",
                ])
                .arg(NFT_TABLE)
                .output();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_send_the_vip_ranges_to_the_node_itself() {
        let host = Host {
            name: "node2".into(),
            ipv4: "198.51.100.12".parse().unwrap(),
            ipv6: "2001:db8:1::12".parse().unwrap(),
            mac: "02:fe:00:00:00:02".into(),
            host_veth: "lab0-n2".into(),
        };
        let rules = dnat_rules(&host);
        for line in [
            "ip daddr 198.51.100.192/26 tcp dport 80 dnat ip to 198.51.100.12:8080",
            "ip daddr 198.51.100.192/26 dnat ip to 198.51.100.12",
            "ip6 daddr 2001:db8:1::200/120 tcp dport 80 dnat ip6 to [2001:db8:1::12]:8080",
            "ip6 daddr 2001:db8:1::200/120 dnat ip6 to 2001:db8:1::12",
        ] {
            assert!(rules.contains(line), "{line} missing:\n{rules}");
        }
        // The port rule comes first: nftables stops at the first dnat.
        assert!(
            rules.find("tcp dport 80").unwrap() < rules.find("dnat ip to 198.51.100.12\n").unwrap()
        );
    }
}
