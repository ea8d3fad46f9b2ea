//! A real BGP router for the lab: FRR (zebra, bgpd, bfdd) or BIRD 2 from Debian, in a `router`
//! namespace on the nodes' LAN, with a `remote` client namespace behind it that reaches the
//! LoadBalancer IPs only through the router. Documentation addresses only:
//!
//! ```text
//!   lab0 (nodes' LAN) ── lab0-r ══ router:eth0 198.51.100.254  2001:db8:1::fe
//!                                  router:eth1 203.0.113.1     2001:db8:2::1
//!                                      ══ remote:eth0 203.0.113.10  2001:db8:2::10
//! ```
//!
//! The router accepts a session from every address of the LAN (`bgp listen range` in FRR,
//! `neighbor range` in BIRD), installs what it learns in its kernel with ECMP across the nodes,
//! and forwards between the two networks. Tests read its RIB through `vtysh ... json` or
//! `birdc show route`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::lab::{BRIDGE, Host, kill_processes_in};
use crate::process::{run, wait_for};

/// The router namespace.
pub const ROUTER: &str = "router";
/// The client namespace behind the router.
pub const REMOTE: &str = "remote";
/// The router's address on the nodes' LAN.
pub const ROUTER_IPV4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
/// The router's IPv6 address on the nodes' LAN.
pub const ROUTER_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xfe);
/// The remote client's address.
pub const REMOTE_IPV4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The remote client's IPv6 address.
pub const REMOTE_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10);
/// The router's AS number by default.
pub const ROUTER_ASN: u32 = 64513;
/// The AS number the nodes use by default (eBGP to the router).
pub const NODE_ASN: u32 = 64512;
/// Where the router's configuration, sockets and logs live (the daemons drop to user `frr`,
/// which must reach them; the lab lock makes one router at a time).
const DIR: &str = "/run/ferrolb-lab-router";

/// Which router software.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// FRR (bgpd, zebra, bfdd).
    Frr,
    /// BIRD 2.
    Bird,
}

impl Kind {
    /// `frr` or `bird`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Frr => "frr",
            Kind::Bird => "bird",
        }
    }

    /// Parses `frr` or `bird`.
    pub fn parse(s: &str) -> Result<Kind> {
        match s {
            "frr" => Ok(Kind::Frr),
            "bird" => Ok(Kind::Bird),
            other => bail!("unknown router {other:?}: use frr or bird"),
        }
    }
}

/// How the router is set up.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// FRR or BIRD.
    pub kind: Kind,
    /// The router's AS number.
    pub asn: u32,
    /// The nodes' AS number (equal to `asn`: iBGP).
    pub node_asn: u32,
    /// TCP MD5 password the router requires.
    pub password: Option<String>,
    /// Run BFD with every node (FRR only), at `bfd_interval_ms` x 3.
    pub bfd: bool,
    /// BFD receive and transmit interval, milliseconds.
    pub bfd_interval_ms: u32,
    /// Hold time the router offers, in seconds.
    pub hold_time: u16,
}

impl RouterConfig {
    /// eBGP with the default ASNs, no password, no BFD, 9 s hold time.
    pub fn new(kind: Kind) -> RouterConfig {
        RouterConfig {
            kind,
            asn: ROUTER_ASN,
            node_asn: NODE_ASN,
            password: None,
            bfd: false,
            bfd_interval_ms: 300,
            hold_time: 9,
        }
    }
}

/// A route in the router's RIB: its prefix and the next hops it uses (best paths, all of them
/// with ECMP).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RibEntry {
    /// Next-hop addresses of the selected (multi)paths.
    pub next_hops: BTreeSet<IpAddr>,
    /// Standard communities (`65000:100`) and large ones (`large:1:2:3`) of the best path.
    pub communities: BTreeSet<String>,
    /// LOCAL_PREF of the best path.
    pub local_pref: Option<u32>,
}

/// The running router; stops and removes its namespaces on drop.
#[derive(Debug)]
pub struct Router {
    /// Its configuration.
    pub config: RouterConfig,
    /// The router namespace.
    pub host: Host,
    /// The remote client namespace.
    pub remote: Host,
    dir: PathBuf,
    /// Left running on drop (`cargo xtask cluster up`; `down` removes it).
    released: bool,
}

impl Router {
    /// Starts the router on the lab's bridge (a [`crate::lab::Lab`] must exist).
    pub fn start(config: RouterConfig) -> Result<Router> {
        remove()?;
        let dir = PathBuf::from(DIR);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let router = Router {
            host: Host {
                name: ROUTER.into(),
                ipv4: ROUTER_IPV4,
                ipv6: ROUTER_IPV6,
                mac: "02:fe:00:00:02:54".into(),
                host_veth: "lab0-r".into(),
            },
            remote: Host {
                name: REMOTE.into(),
                ipv4: REMOTE_IPV4,
                ipv6: REMOTE_IPV6,
                mac: "02:fe:00:00:03:10".into(),
                host_veth: String::new(),
            },
            config,
            dir,
            released: false,
        };
        router
            .plumb()
            .context("creating the router and remote namespaces")?;
        match router.config.kind {
            Kind::Frr => router.start_frr()?,
            Kind::Bird => router.start_bird()?,
        }
        Ok(router)
    }

    fn plumb(&self) -> Result<()> {
        let ip = |args: &[&str]| run(Command::new("ip").args(args));
        ip(&["netns", "add", ROUTER])?;
        ip(&["netns", "add", REMOTE])?;
        ip(&[
            "link", "add", "lab0-r", "type", "veth", "peer", "name", "eth0", "netns", ROUTER,
        ])?;
        ip(&["link", "set", "lab0-r", "master", BRIDGE, "up"])?;
        ip(&[
            "-n", ROUTER, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns",
            REMOTE,
        ])?;
        for (ns, cmds) in [
            (
                ROUTER,
                vec![
                    vec!["link", "set", "lo", "up"],
                    vec!["link", "set", "eth0", "address", &self.host.mac],
                    vec!["addr", "add", "198.51.100.254/24", "dev", "eth0"],
                    vec!["addr", "add", "2001:db8:1::fe/64", "dev", "eth0", "nodad"],
                    vec!["addr", "add", "203.0.113.1/24", "dev", "eth1"],
                    vec!["addr", "add", "2001:db8:2::1/64", "dev", "eth1", "nodad"],
                    vec!["link", "set", "eth0", "up"],
                    vec!["link", "set", "eth1", "up"],
                ],
            ),
            (
                REMOTE,
                vec![
                    vec!["link", "set", "lo", "up"],
                    vec!["link", "set", "eth0", "address", &self.remote.mac],
                    vec!["addr", "add", "203.0.113.10/24", "dev", "eth0"],
                    vec!["addr", "add", "2001:db8:2::10/64", "dev", "eth0", "nodad"],
                    vec!["link", "set", "eth0", "up"],
                    vec!["route", "add", "default", "via", "203.0.113.1"],
                    vec!["-6", "route", "add", "default", "via", "2001:db8:2::1"],
                ],
            ),
        ] {
            for cmd in cmds {
                let mut all = vec!["-n", ns];
                all.extend(cmd);
                ip(&all)?;
            }
        }
        // Forward between the networks, and spread flows over equal-cost paths by ports too.
        for sysctl in [
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.fib_multipath_hash_policy=1",
            "net.ipv6.fib_multipath_hash_policy=1",
        ] {
            self.host.exec("sysctl", &["-qw", sysctl])?;
        }
        Ok(())
    }

    fn chown_to_frr(&self) -> Result<()> {
        run(Command::new("chown").args(["-R", "frr:frr"]).arg(&self.dir))?;
        Ok(())
    }

    fn frr_config(&self) -> String {
        let c = &self.config;
        let remote_as = if c.asn == c.node_asn {
            "internal".to_string()
        } else {
            c.node_asn.to_string()
        };
        let mut groups = String::new();
        for group in ["NODES", "NODES6"] {
            groups.push_str(&format!(" neighbor {group} peer-group\n neighbor {group} remote-as {remote_as}\n neighbor {group} timers 3 {}\n", c.hold_time));
            if let Some(p) = &c.password {
                groups.push_str(&format!(" neighbor {group} password {p}\n"));
            }
            if c.bfd {
                groups.push_str(&format!(" neighbor {group} bfd profile nodes\n"));
            }
        }
        let families: String = ["ipv4", "ipv6"]
            .iter()
            .map(|af| {
                format!(
                    " address-family {af} unicast\n  neighbor NODES activate\n  neighbor NODES6 activate\n  maximum-paths 16\n  maximum-paths ibgp 16\n exit-address-family\n"
                )
            })
            .collect();
        let bfd = if c.bfd {
            format!(
                "bfd\n profile nodes\n  detect-multiplier 3\n  receive-interval {ms}\n  transmit-interval {ms}\n !\n!\n",
                ms = c.bfd_interval_ms
            )
        } else {
            String::new()
        };
        format!(
            "frr defaults datacenter\nhostname router\nlog file {dir}/frr.log debugging\n!\n{bfd}router bgp {asn}\n bgp router-id {ROUTER_IPV4}\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n bgp bestpath as-path multipath-relax\n bgp graceful-restart\n{groups} bgp listen range 198.51.100.0/24 peer-group NODES\n bgp listen range 2001:db8:1::/64 peer-group NODES6\n{families}!\n",
            dir = self.dir.display(),
            asn = c.asn,
        )
    }

    fn start_frr(&self) -> Result<()> {
        let conf = self.dir.join("frr.conf");
        std::fs::write(&conf, self.frr_config())?;
        self.chown_to_frr()?;
        let sock = self.dir.join("zserv.api");
        let mut daemons = vec!["zebra", "bgpd"];
        if self.config.bfd {
            daemons.push("bfdd");
        }
        for daemon in daemons {
            let mut cmd = self.host.command(&format!("/usr/lib/frr/{daemon}"));
            cmd.args(["-d", "-u", "frr", "-g", "frr", "-P", "0"])
                .arg("-f")
                .arg(&conf)
                .arg("-i")
                .arg(self.dir.join(format!("{daemon}.pid")))
                .arg("--vty_socket")
                .arg(&self.dir)
                .arg("--log")
                .arg(format!("file:{}/{daemon}.log", self.dir.display()));
            // bgpd asks bfdd for sessions through zebra, so every daemon talks to zebra.
            cmd.arg("-z").arg(&sock);
            run(&mut cmd).with_context(|| format!("starting FRR's {daemon}"))?;
            let vty = self.dir.join(format!("{daemon}.vty"));
            wait_for(&format!("FRR {daemon} up"), Duration::from_secs(10), || {
                Ok(vty.exists().then_some(()))
            })?;
        }
        Ok(())
    }

    fn bird_config(&self) -> String {
        let c = &self.config;
        let password = c
            .password
            .as_ref()
            .map(|p| format!("  password \"{p}\";\n"))
            .unwrap_or_default();
        let remote_as = if c.asn == c.node_asn {
            "internal".to_string()
        } else {
            format!("as {}", c.node_asn)
        };
        let template = |name: &str, range: &str| {
            format!(
                "protocol bgp {name} {{\n  local as {asn};\n  neighbor range {range} {remote_as};\n  dynamic name \"{name}_\";\n  hold time {hold};\n  keepalive time 3;\n  graceful restart on;\n{password}  ipv4 {{ import all; export none; next hop keep; }};\n  ipv6 {{ import all; export none; next hop keep; }};\n}}\n",
                asn = c.asn,
                hold = c.hold_time,
            )
        };
        format!(
            "log \"{dir}/bird.log\" all;\nrouter id {ROUTER_IPV4};\nprotocol device {{ }}\nprotocol kernel {{ ipv4 {{ export all; }}; merge paths on; }}\nprotocol kernel {{ ipv6 {{ export all; }}; merge paths on; }}\n{v4}{v6}",
            dir = self.dir.display(),
            v4 = template("nodes", "198.51.100.0/24"),
            v6 = template("nodes6", "2001:db8:1::/64"),
        )
    }

    fn start_bird(&self) -> Result<()> {
        let conf = self.dir.join("bird.conf");
        std::fs::write(&conf, self.bird_config())?;
        let sock = self.dir.join("bird.ctl");
        let mut cmd = self.host.command("bird");
        cmd.arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&sock)
            .arg("-P")
            .arg(self.dir.join("bird.pid"));
        run(&mut cmd).context("starting BIRD")?;
        wait_for("BIRD up", Duration::from_secs(10), || {
            Ok(sock.exists().then_some(()))
        })?;
        Ok(())
    }

    /// `vtysh -c <command>` in the router (FRR).
    pub fn vtysh(&self, command: &str) -> Result<String> {
        run(self
            .host
            .command("vtysh")
            .arg("--vty_socket")
            .arg(&self.dir)
            .args(["-c", command]))
    }

    /// `birdc <command>` in the router (BIRD).
    pub fn birdc(&self, command: &str) -> Result<String> {
        let mut cmd = self.host.command("birdc");
        cmd.arg("-s").arg(self.dir.join("bird.ctl"));
        cmd.args(command.split_whitespace());
        run(&mut cmd)
    }

    /// The router's BGP routes of both families, by prefix (`198.51.100.200/32`).
    pub fn rib(&self) -> Result<BTreeMap<String, RibEntry>> {
        match self.config.kind {
            Kind::Frr => {
                let mut all = BTreeMap::new();
                for af in ["ipv4", "ipv6"] {
                    let json: Value =
                        serde_json::from_str(&self.vtysh(&format!("show bgp {af} unicast json"))?)
                            .context("parsing vtysh's JSON")?;
                    all.extend(frr_rib(&json));
                }
                Ok(all)
            }
            Kind::Bird => Ok(bird_rib(&self.birdc("show route all")?)),
        }
    }

    /// The addresses of the nodes with an Established session, any family.
    pub fn established(&self) -> Result<BTreeSet<IpAddr>> {
        match self.config.kind {
            Kind::Frr => {
                let json: Value = serde_json::from_str(&self.vtysh("show bgp neighbors json")?)?;
                Ok(json
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, n)| n["bgpState"] == "Established")
                    .filter_map(|(addr, _)| addr.parse().ok())
                    .collect())
            }
            Kind::Bird => Ok(bird_established(&self.birdc("show protocols all")?)),
        }
    }

    /// The peers whose BFD session is up (FRR).
    pub fn bfd_up(&self) -> Result<BTreeSet<IpAddr>> {
        let json: Value = serde_json::from_str(&self.vtysh("show bfd peers json")?)?;
        Ok(json
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"] == "up")
            .filter_map(|p| p["peer"].as_str()?.parse().ok())
            .collect())
    }

    /// The router's log so far (for failure messages).
    pub fn log_tail(&self) -> String {
        let name = match self.config.kind {
            Kind::Frr => "bgpd.log",
            Kind::Bird => "bird.log",
        };
        let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Router {
    /// Keeps the router running after this handle is gone (`cargo xtask cluster up`).
    pub fn release(mut self) {
        self.released = true;
    }

    /// Routes the remote network from `node` through the router, as a node's default route
    /// would in a real network.
    pub fn route_from(node: &Host) -> Result<()> {
        node.exec(
            "ip",
            &[
                "route",
                "replace",
                "203.0.113.0/24",
                "via",
                "198.51.100.254",
            ],
        )?;
        node.exec(
            "ip",
            &[
                "-6",
                "route",
                "replace",
                "2001:db8:2::/64",
                "via",
                "2001:db8:1::fe",
            ],
        )?;
        Ok(())
    }

    /// The command line that queries the router (`vtysh ...` or `birdc ...`).
    pub fn cli(&self) -> String {
        match self.config.kind {
            Kind::Frr => format!(
                "ip netns exec {ROUTER} vtysh --vty_socket {}",
                self.dir.display()
            ),
            Kind::Bird => format!(
                "ip netns exec {ROUTER} birdc -s {}",
                self.dir.join("bird.ctl").display()
            ),
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Err(e) = remove() {
            eprintln!("router teardown: {e:#}");
        }
    }
}

/// Stops every process in the router and remote namespaces and deletes them.
pub fn remove() -> Result<()> {
    let existing = run(Command::new("ip").args(["netns", "list"]))?;
    for ns in [ROUTER, REMOTE] {
        if existing
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns))
        {
            kill_processes_in(ns)?;
            run(Command::new("ip").args(["netns", "del", ns]))?;
        }
    }
    let _ = Command::new("ip").args(["link", "del", "lab0-r"]).output();
    Ok(())
}

/// FRR's `show bgp <af> unicast json`: `routes` maps each prefix to its paths.
fn frr_rib(json: &Value) -> BTreeMap<String, RibEntry> {
    let mut out = BTreeMap::new();
    let Some(routes) = json["routes"].as_object() else {
        return out;
    };
    for (prefix, paths) in routes {
        let mut entry = RibEntry::default();
        let mut selected = false;
        for path in paths.as_array().into_iter().flatten() {
            let best = path["bestpath"].as_bool().unwrap_or(false);
            let multipath = path["multipath"].as_bool().unwrap_or(false);
            if !(best || multipath) {
                continue;
            }
            selected = true;
            for hop in path["nexthops"].as_array().into_iter().flatten() {
                if let Some(ip) = hop["ip"].as_str().and_then(|s| s.parse().ok())
                    && hop["scope"].as_str() != Some("link-local")
                {
                    entry.next_hops.insert(ip);
                }
            }
            if best {
                entry.local_pref = path["locPrf"].as_u64().map(|v| v as u32);
            }
        }
        // A route still being validated (next-hop tracking) has no selected path yet.
        if selected {
            out.insert(prefix.clone(), entry);
        }
    }
    out
}

/// BIRD's `show route all`: blocks of a prefix line and indented attribute lines.
fn bird_rib(text: &str) -> BTreeMap<String, RibEntry> {
    let mut out: BTreeMap<String, RibEntry> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        let first = line.split_whitespace().next().unwrap_or("");
        if !line.starts_with(char::is_whitespace) && first.contains('/') {
            current = Some(first.to_string());
            out.entry(first.to_string()).or_default();
        }
        let Some(prefix) = &current else { continue };
        let entry = out.get_mut(prefix).expect("inserted above");
        if let Some(rest) = trimmed.strip_prefix("via ") {
            if let Some(ip) = rest.split_whitespace().next().and_then(|s| s.parse().ok()) {
                entry.next_hops.insert(ip);
            }
        } else if let Some(rest) = trimmed.strip_prefix("BGP.next_hop: ") {
            if let Some(ip) = rest.split_whitespace().next().and_then(|s| s.parse().ok()) {
                entry.next_hops.insert(ip);
            }
        } else if let Some(rest) = trimmed.strip_prefix("BGP.local_pref: ") {
            entry.local_pref = rest.trim().parse().ok();
        } else if let Some(rest) = trimmed.strip_prefix("BGP.community: ") {
            for c in rest.split(") (") {
                let c = c.trim_matches(|ch| ch == '(' || ch == ')');
                if let Some((a, b)) = c.split_once(',') {
                    entry
                        .communities
                        .insert(format!("{}:{}", a.trim(), b.trim()));
                }
            }
        } else if let Some(rest) = trimmed.strip_prefix("BGP.large_community: ") {
            for c in rest.split(") (") {
                let parts: Vec<&str> = c
                    .trim_matches(|ch| ch == '(' || ch == ')')
                    .split(',')
                    .map(str::trim)
                    .collect();
                if parts.len() == 3 {
                    entry
                        .communities
                        .insert(format!("large:{}:{}:{}", parts[0], parts[1], parts[2]));
                }
            }
        }
    }
    out
}

/// BIRD's `show protocols all`: dynamic sessions named `nodes_1`..., each with a `Neighbor
/// address:` line and `BGP state: Established`.
fn bird_established(text: &str) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    let mut established = false;
    for line in text.lines() {
        let t = line.trim();
        if !line.starts_with(char::is_whitespace) && !t.is_empty() {
            established = false;
        }
        if t.starts_with("BGP state:") {
            established = t.ends_with("Established");
        }
        if let Some(rest) = t.strip_prefix("Neighbor address:")
            && established
            && let Ok(ip) = rest.trim().parse()
        {
            out.insert(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frr_json_gives_every_multipath_next_hop() {
        let json: Value = serde_json::from_str(r#"{"routes":{"198.51.100.200/32":[
            {"valid":true,"bestpath":true,"locPrf":100,"nexthops":[{"ip":"198.51.100.11","afi":"ipv4"}]},
            {"valid":true,"multipath":true,"nexthops":[{"ip":"198.51.100.12","afi":"ipv4"}]},
            {"valid":true,"nexthops":[{"ip":"198.51.100.13","afi":"ipv4"}]}]}}"#).unwrap();
        let rib = frr_rib(&json);
        let e = &rib["198.51.100.200/32"];
        assert_eq!(e.next_hops.len(), 2);
        assert_eq!(e.local_pref, Some(100));
    }

    #[test]
    fn bird_text_gives_routes_attributes_and_sessions() {
        let routes = "Table master4:\n198.51.100.200/32    unicast [nodes_1 10:00:00.000] * (100) [AS64512i]\n\tvia 198.51.100.11 on eth0\n\tBGP.next_hop: 198.51.100.11\n\tBGP.local_pref: 150\n\tBGP.community: (65535,65282) (64512,1)\n\tBGP.large_community: (64512, 7, 8)\n                     unicast [nodes_2 10:00:00.000] (100) [AS64512i]\n\tvia 198.51.100.12 on eth0\n\tBGP.next_hop: 198.51.100.12\n";
        let rib = bird_rib(routes);
        let e = &rib["198.51.100.200/32"];
        assert_eq!(e.next_hops.len(), 2);
        assert_eq!(e.local_pref, Some(150));
        assert!(e.communities.contains("65535:65282") && e.communities.contains("large:64512:7:8"));
        let protocols = "nodes_1    BGP        ---        up     10:00:00.000  Established\n  BGP state:          Established\n    Neighbor address: 198.51.100.11\nnodes_2    BGP        ---        start  10:00:00.000  Active\n  BGP state:          Active\n    Neighbor address: 198.51.100.12\n";
        assert_eq!(
            bird_established(protocols),
            BTreeSet::from(["198.51.100.11".parse().unwrap()])
        );
    }
}
