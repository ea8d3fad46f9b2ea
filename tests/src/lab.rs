//! The lab network: network namespaces `node1..nodeN` and `client`, each joined by a veth to the
//! bridge `lab0` in the host namespace. Documentation addresses only (RFC 5737, RFC 3849):
//!
//! ```text
//!   host ns: lab0 198.51.100.1/24 2001:db8:1::1/64   (kube-apiserver listens here)
//!      ├── lab0-n1 ══ node1:eth0 198.51.100.11  2001:db8:1::11  02:fe:00:00:00:01
//!      ├── lab0-n2 ══ node2:eth0 198.51.100.12  2001:db8:1::12  02:fe:00:00:00:02
//!      └── lab0-c  ══ client:eth0 198.51.100.100 2001:db8:1::100
//! ```
//!
//! `lab0` is never enslaved to or routed towards a real interface, so nothing leaves the lab.
//! One lab exists at a time on a machine (the names are fixed); [`Lab::create`] takes an
//! exclusive file lock for the lab's lifetime and removes leftovers of a crashed run first.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use crate::backend::Backends;
use crate::process::run;

/// The bridge every lab namespace hangs off.
pub const BRIDGE: &str = "lab0";
/// The bridge's IPv4 address (where the apiserver listens).
pub const BRIDGE_IPV4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The bridge's IPv6 address.
pub const BRIDGE_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// Name of the client namespace.
pub const CLIENT: &str = "client";
/// Most nodes a lab may have (addresses .11 to .99).
pub const MAX_NODES: usize = 89;
const LOCK_PATH: &str = "/run/lock/ferrolb-lab.lock";
/// Present while a `cargo xtask cluster up` lab runs; holds the path of its env file.
pub const CLUSTER_MARKER: &str = "/run/ferrolb-cluster-up";
/// The IPv4 addresses lab pools hand out as VIPs (198.51.100.192-255, holding the documented
/// pool 198.51.100.200-250); node namespaces DNAT them to their backends
/// ([`crate::backend`]).
pub const VIP_RANGE_V4: &str = "198.51.100.192/26";
/// The IPv6 addresses lab pools hand out as VIPs (2001:db8:1::200-2ff).
pub const VIP_RANGE_V6: &str = "2001:db8:1::200/120";

/// A lab namespace (a node or the client).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// Namespace name, and Node name for nodes (`node1`, ...).
    pub name: String,
    /// Address on the lab LAN.
    pub ipv4: Ipv4Addr,
    /// IPv6 address on the lab LAN.
    pub ipv6: Ipv6Addr,
    /// MAC of the namespace's `eth0`.
    pub mac: String,
    /// Host-side end of the veth (a port of `lab0`).
    pub host_veth: String,
}

impl Host {
    fn node(i: usize) -> Host {
        let octet = 10 + i as u8;
        Host {
            name: format!("node{i}"),
            ipv4: Ipv4Addr::new(198, 51, 100, octet),
            ipv6: Ipv6Addr::new(
                0x2001,
                0xdb8,
                1,
                0,
                0,
                0,
                0,
                u16::from_str_radix(&octet.to_string(), 16).unwrap_or(0),
            ),
            mac: format!("02:fe:00:00:00:{i:02x}"),
            host_veth: format!("lab0-n{i}"),
        }
    }

    fn client() -> Host {
        Host {
            name: CLIENT.into(),
            ipv4: Ipv4Addr::new(198, 51, 100, 100),
            ipv6: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100),
            mac: "02:fe:00:00:01:00".into(),
            host_veth: "lab0-c".into(),
        }
    }

    /// `ip netns exec <name> <program> <args>`, as a command to adjust and run.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `program args` inside the namespace; stdout, or an error with stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        run(self.command(program).args(args))
    }
}

/// A lab of `n` node namespaces and a client, torn down on drop.
#[derive(Debug)]
pub struct Lab {
    nodes: Vec<Host>,
    client: Host,
    /// Held while this handle owns the lab; `None` once released.
    lock: Option<File>,
}

impl Lab {
    /// Builds the lab, waiting for any other lab on this machine to be torn down first.
    pub fn create(nodes: usize) -> Result<Lab> {
        if nodes == 0 || nodes > MAX_NODES {
            bail!("a lab has 1 to {MAX_NODES} nodes, not {nodes}");
        }
        let lock = lock_exclusive()?;
        if let Ok(env) = std::fs::read_to_string(CLUSTER_MARKER) {
            bail!(
                "a lab made by `cargo xtask cluster up` is running ({}); run `cargo xtask cluster down` first",
                env.trim()
            );
        }
        remove_namespaces()?;
        crate::node::host::remove_leftovers()?;
        ensure_bridge()?;
        let lab = Lab {
            nodes: (1..=nodes).map(Host::node).collect(),
            client: Host::client(),
            lock: Some(lock),
        };
        for host in lab.nodes.iter().chain([&lab.client]) {
            add_host(host).with_context(|| format!("creating lab namespace {}", host.name))?;
        }
        Ok(lab)
    }

    /// The node namespaces, `node1` first.
    pub fn nodes(&self) -> &[Host] {
        &self.nodes
    }

    /// The client namespace.
    pub fn client(&self) -> &Host {
        &self.client
    }

    /// Starts a [`Backends`]: a `ferrolb-lab-backend` and the VIP DNAT rules in every node
    /// namespace (logs under the test process's scratch directory). Keep the guard for as long as
    /// the backends should run; the lab's teardown stops them too.
    pub fn start_backends(&self) -> Result<Backends> {
        Backends::start(
            &self.nodes,
            &crate::control_plane::process_dir().join("backends"),
            false,
        )
    }

    /// Creates (or updates) one Ready Node object per lab node, with its addresses, labels
    /// `kubernetes.io/hostname` and `ferrolb.io/lab-node`.
    pub async fn register_nodes(&self, client: &kube::Client) -> Result<()> {
        let api: Api<Node> = Api::all(client.clone());
        for host in &self.nodes {
            let labels = BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), host.name.clone()),
                ("ferrolb.io/lab-node".to_string(), "true".to_string()),
            ]);
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(host.name.clone()),
                    labels: Some(labels),
                    ..Default::default()
                },
                ..Default::default()
            };
            match api.create(&PostParams::default(), &node).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e).with_context(|| format!("creating Node {}", host.name)),
            }
            let status = Node {
                status: Some(NodeStatus {
                    addresses: Some(vec![
                        address("InternalIP", host.ipv4.to_string()),
                        address("InternalIP", host.ipv6.to_string()),
                        address("Hostname", host.name.clone()),
                    ]),
                    conditions: Some(vec![NodeCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        reason: Some("LabNode".into()),
                        message: Some("lab namespace is up".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            // A merge patch: server-side apply cannot carry two InternalIP entries, since
            // `status.addresses` is a list map keyed by type alone.
            api.patch_status(&host.name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .with_context(|| format!("writing the status of Node {}", host.name))?;
        }
        Ok(())
    }
}

impl Lab {
    /// Keeps the namespaces after this handle is gone (for `cargo xtask cluster up`, whose
    /// `down` removes them) and gives up the lock; the cluster-up marker keeps other labs out.
    pub fn release(mut self) {
        self.lock = None;
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.lock.is_none() {
            return;
        }
        if let Err(e) = remove_namespaces() {
            eprintln!("lab teardown: {e:#}");
        }
    }
}

fn address(type_: &str, address: String) -> NodeAddress {
    NodeAddress {
        type_: type_.into(),
        address,
    }
}

fn lock_exclusive() -> Result<File> {
    lock(libc::LOCK_EX)?.context("flock without LOCK_NB returned EWOULDBLOCK")
}

/// The lab lock if nobody holds it (a test's [`Lab`] holds it for its lifetime; a `cluster up`
/// lab does not), else `None`. Hold the returned file while removing a lab.
pub fn try_lock() -> Result<Option<File>> {
    lock(libc::LOCK_EX | libc::LOCK_NB)
}

fn lock(operation: libc::c_int) -> Result<Option<File>> {
    if let Some(dir) = std::path::Path::new(LOCK_PATH).parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = File::create(LOCK_PATH).with_context(|| format!("creating {LOCK_PATH}"))?;
    use std::os::fd::AsRawFd;
    #[allow(unsafe_code)]
    // SAFETY: flock(2) on a descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        bail!("locking {LOCK_PATH}: {err}");
    }
    Ok(Some(file))
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// Creates `lab0` with its addresses unless it exists. Idempotent, and safe when tests of one
/// process start control planes at the same time (they call this without the lab lock): a
/// bridge another caller created a moment earlier is fine, and addresses are replaced, not added.
pub fn ensure_bridge() -> Result<()> {
    if !link_exists(BRIDGE)? {
        let created = ip(&[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        if created.is_err() && !link_exists(BRIDGE)? {
            created.context("creating the lab bridge (needs root and iproute2)")?;
        }
    }
    // Never forward between lab0 and anything else: the host keeps its own forwarding
    // settings, and lab0 has no real ports, so traffic cannot leave.
    ip(&[
        "addr",
        "replace",
        &format!("{BRIDGE_IPV4}/24"),
        "dev",
        BRIDGE,
    ])?;
    ip(&[
        "addr",
        "replace",
        &format!("{BRIDGE_IPV6}/64"),
        "dev",
        BRIDGE,
        "nodad",
    ])?;
    ip(&["link", "set", BRIDGE, "up"])?;
    Ok(())
}

fn link_exists(name: &str) -> Result<bool> {
    Ok(Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()?
        .status
        .success())
}

fn add_host(host: &Host) -> Result<()> {
    ip(&["netns", "add", &host.name])?;
    ip(&[
        "link",
        "add",
        &host.host_veth,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &host.name,
    ])?;
    ip(&["link", "set", &host.host_veth, "master", BRIDGE, "up"])?;
    let inside = |args: &[&str]| -> Result<String> {
        let mut all = vec!["-n", host.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    };
    inside(&["link", "set", "lo", "up"])?;
    inside(&["link", "set", "eth0", "address", &host.mac])?;
    inside(&["addr", "add", &format!("{}/24", host.ipv4), "dev", "eth0"])?;
    inside(&[
        "addr",
        "add",
        &format!("{}/64", host.ipv6),
        "dev",
        "eth0",
        "nodad",
    ])?;
    inside(&["link", "set", "eth0", "up"])?;
    Ok(())
}

/// Every lab namespace name present on the machine (`node<N>` and `client`).
fn lab_namespaces() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            *n == CLIENT
                || n.strip_prefix("node")
                    .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
        .collect())
}

/// Host-side veth ends of lab namespaces (`lab0-n1`, `lab0-c`, ...).
fn lab_veths() -> Result<Vec<String>> {
    let out = ip(&["-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name))
        .filter(|name| name.starts_with("lab0-"))
        .map(str::to_string)
        .collect())
}

/// Deletes every lab namespace and its veth, first killing every process still running inside
/// one (backends, speakers, leftovers of a crashed run): `ip netns del` only unmounts the name,
/// and a process inside would keep the namespace alive, unreachable. Leaves the bridge.
pub fn remove_namespaces() -> Result<()> {
    crate::router::remove()?;
    let namespaces = lab_namespaces()?;
    for ns in &namespaces {
        kill_processes_in(ns)?;
    }
    // Deleting a namespace frees its veths asynchronously; deleting the host end first removes
    // the pair at once, so a lab created right after finds the names free.
    for veth in lab_veths()? {
        ip(&["link", "del", &veth])?;
    }
    for ns in &namespaces {
        ip(&["netns", "del", ns])?;
    }
    Ok(())
}

/// SIGKILLs the processes whose network namespace is `ns` (`ip netns pids`) and waits briefly
/// for them to go.
pub fn kill_processes_in(ns: &str) -> Result<()> {
    let pids: Vec<String> = ip(&["netns", "pids", ns])?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if pids.is_empty() {
        return Ok(());
    }
    // Some may exit meanwhile: `kill` then fails for those, which is fine.
    let _ = Command::new("kill").arg("-KILL").args(&pids).output();
    let gone = || {
        pids.iter().all(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .map_or(true, |s| s.contains("State:\tZ"))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !gone() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// Deletes every lab namespace and the bridge, and what real nodes left on the machine.
pub fn remove_all() -> Result<()> {
    remove_namespaces()?;
    crate::node::host::remove_leftovers()?;
    if link_exists(BRIDGE)? {
        ip(&["link", "del", BRIDGE])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_follow_the_testbed_plan() {
        let n1 = Host::node(1);
        assert_eq!(
            (n1.ipv4.to_string(), n1.ipv6.to_string()),
            ("198.51.100.11".into(), "2001:db8:1::11".into())
        );
        let n12 = Host::node(12);
        assert_eq!(
            (n12.ipv4.to_string(), n12.ipv6.to_string(), n12.mac),
            (
                "198.51.100.22".into(),
                "2001:db8:1::22".into(),
                "02:fe:00:00:00:0c".into()
            )
        );
        assert_eq!(Host::client().ipv6.to_string(), "2001:db8:1::100");
    }
}
