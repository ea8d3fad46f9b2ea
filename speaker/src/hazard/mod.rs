//! Would this node's kernel answer ARP or NDP for a LoadBalancer address itself? (pure)
//!
//! ferrolb never configures a LoadBalancer IP on an interface, but others do: kube-proxy in IPVS
//! mode puts every one on its `kube-ipvs0` dummy interface on every node, and people add VIPs to
//! `lo` by hand. An address configured anywhere on a node is local to its kernel, and with
//! Linux's default `arp_ignore=0` the kernel answers ARP for any local address on any
//! interface: every such node answers with its own MAC, beside the elected speaker, and clients
//! send traffic to whichever answered last. [`kernel_answers`] says, from the node's addresses
//! and sysctls, on which announce interface the kernel would answer for which address.
//!
//! IPv4 (`net/ipv4/arp.c`, `arp_process` and `arp_ignore`; `Documentation/networking/ip-sysctl.rst`),
//! for a request received on interface `in`, effective value `max(conf/all, conf/in)`:
//!
//! | arp_ignore | the kernel answers for a local address |
//! |---|---|
//! | 0 (default), 4-7 (reserved), 9 and above | configured on any interface |
//! | 1 | configured on `in` |
//! | 2 | configured on `in`, to a sender in a subnet of `in` (and to every ARP probe, sender 0.0.0.0); treated as 1 here, since the requesters are on that LAN |
//! | 3 | configured on any interface with a scope other than host (route_localnet on the holding interface lets host scope through too) |
//! | 8 | never |
//!
//! `arp_filter` (all or `in`) is not taken as a remedy: it only withholds answers to senders
//! whose route back leaves through another interface, and the LAN the speaker announces on is
//! reached through `in`. It is mentioned in the report.
//!
//! IPv6 (`net/ipv6/ndisc.c`, `ndisc_recv_ns`): a solicitation is answered only for an address of
//! the receiving interface (tentative ones not, unless optimistic; failed DAD never), or for a
//! proxy-NDP entry on it (or on no interface) when `proxy_ndp` (all or `in`) and `forwarding`
//! (`in`) are on. An IPv6 VIP on `lo` or `kube-ipvs0` is therefore harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

pub mod read;
#[cfg(test)]
mod tests;
pub mod watch;

/// `RT_SCOPE_LINK`.
pub const SCOPE_LINK: u8 = 253;
/// `RT_SCOPE_HOST`.
pub const SCOPE_HOST: u8 = 254;
/// `IFA_F_OPTIMISTIC`.
pub const IFA_F_OPTIMISTIC: u32 = 0x04;
/// `IFA_F_DADFAILED`.
pub const IFA_F_DADFAILED: u32 = 0x08;
/// `IFA_F_TENTATIVE`.
pub const IFA_F_TENTATIVE: u32 = 0x40;

/// One address configured on an interface of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// Interface name.
    pub interface: String,
    /// The address.
    pub ip: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// `RT_SCOPE_*`: 0 global, 200 site, 253 link, 254 host.
    pub scope: u8,
    /// `IFA_F_*` flags.
    pub flags: u32,
}

/// The IPv4 sysctls of one `net.ipv4.conf.<name>` (or `all`) that decide ARP answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv4Conf {
    /// `arp_ignore`.
    pub arp_ignore: u32,
    /// `arp_filter`.
    pub arp_filter: bool,
    /// `route_localnet`.
    pub route_localnet: bool,
}

/// The IPv6 sysctls of one `net.ipv6.conf.<name>` (or `all`) that decide proxy answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv6Conf {
    /// `proxy_ndp`.
    pub proxy_ndp: bool,
    /// `forwarding`.
    pub forwarding: bool,
}

/// An IPv6 proxy-NDP entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyEntry {
    /// Its interface; `None`: every interface.
    pub interface: Option<String>,
    /// The proxied address.
    pub ip: Ipv6Addr,
}

/// What the kernel's answers depend on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelState {
    /// Every address configured on the node.
    pub addresses: Vec<Address>,
    /// `net.ipv4.conf.all`.
    pub ipv4_all: Ipv4Conf,
    /// `net.ipv4.conf.<interface>`; a missing interface reads as all zero.
    pub ipv4: BTreeMap<String, Ipv4Conf>,
    /// `net.ipv6.conf.all`.
    pub ipv6_all: Ipv6Conf,
    /// `net.ipv6.conf.<interface>`; a missing interface reads as all off.
    pub ipv6: BTreeMap<String, Ipv6Conf>,
    /// IPv6 proxy-NDP entries.
    pub proxies: Vec<ProxyEntry>,
}

/// The kernel would answer for `ip` on `interface`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hazard {
    /// The LoadBalancer address.
    pub ip: IpAddr,
    /// The announce interface the kernel answers on.
    pub interface: String,
    /// Why.
    pub cause: Cause,
}

/// Why the kernel answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// IPv4: the address is configured on `configured_on` (name, prefix length; only those
    /// that make the kernel answer), and `arp_ignore` on the receiving interface lets it.
    Arp {
        /// Interfaces holding the address that the kernel answers for.
        configured_on: Vec<(String, u8)>,
        /// `net.ipv4.conf.all.arp_ignore`.
        arp_ignore_all: u32,
        /// `net.ipv4.conf.<interface>.arp_ignore`.
        arp_ignore_interface: u32,
        /// `arp_filter` is on (all or the interface).
        arp_filter: bool,
    },
    /// IPv6: the address is configured on the receiving interface itself.
    Ndp {
        /// Its prefix length.
        prefix_len: u8,
    },
    /// IPv6: a proxy-NDP entry, with `proxy_ndp` and `forwarding` on.
    ProxyNdp {
        /// The entry's interface (`None`: every interface).
        entry_interface: Option<String>,
    },
}

/// Where and why the kernel would answer ARP or NDP for one of `ips` on one of `announce_on`,
/// sorted by address, then interface.
pub fn kernel_answers(
    state: &KernelState,
    announce_on: &[String],
    ips: &BTreeSet<IpAddr>,
) -> Vec<Hazard> {
    // The handled addresses configured on the node, by address.
    let mut holders: BTreeMap<IpAddr, Vec<&Address>> = BTreeMap::new();
    for a in state.addresses.iter().filter(|a| ips.contains(&a.ip)) {
        holders.entry(a.ip).or_default().push(a);
    }
    let announce: BTreeSet<&String> = announce_on.iter().collect();
    let mut out = Vec::new();
    for &ip in ips {
        let held: &[&Address] = holders.get(&ip).map(Vec::as_slice).unwrap_or_default();
        for interface in &announce {
            let cause = match ip {
                IpAddr::V4(_) => arp_cause(state, interface, held),
                IpAddr::V6(v6) => ndp_cause(state, interface, v6, held),
            };
            if let Some(cause) = cause {
                out.push(Hazard {
                    ip,
                    interface: interface.to_string(),
                    cause,
                });
            }
        }
    }
    out
}

fn ipv4_conf(state: &KernelState, interface: &str) -> Ipv4Conf {
    state.ipv4.get(interface).copied().unwrap_or_default()
}

fn ipv6_conf(state: &KernelState, interface: &str) -> Ipv6Conf {
    state.ipv6.get(interface).copied().unwrap_or_default()
}

/// What a request for an address held as `held` and received on `interface` gets.
fn arp_cause(state: &KernelState, interface: &str, held: &[&Address]) -> Option<Cause> {
    if held.is_empty() {
        return None;
    }
    let here = ipv4_conf(state, interface);
    let mode = state.ipv4_all.arp_ignore.max(here.arp_ignore);
    let answering: Vec<&&Address> = match mode {
        8 => Vec::new(),
        1 | 2 => held.iter().filter(|a| a.interface == interface).collect(),
        3 => held
            .iter()
            .filter(|a| {
                let localnet =
                    state.ipv4_all.route_localnet || ipv4_conf(state, &a.interface).route_localnet;
                a.scope <= SCOPE_LINK || localnet
            })
            .collect(),
        _ => held.iter().collect(),
    };
    if answering.is_empty() {
        return None;
    }
    let mut configured_on: Vec<(String, u8)> = answering
        .iter()
        .map(|a| (a.interface.clone(), a.prefix_len))
        .collect();
    configured_on.sort();
    configured_on.dedup_by(|a, b| a.0 == b.0);
    Some(Cause::Arp {
        configured_on,
        arp_ignore_all: state.ipv4_all.arp_ignore,
        arp_ignore_interface: here.arp_ignore,
        arp_filter: state.ipv4_all.arp_filter || here.arp_filter,
    })
}

/// What a solicitation for `ip` received on `interface` gets.
fn ndp_cause(
    state: &KernelState,
    interface: &str,
    ip: Ipv6Addr,
    held: &[&Address],
) -> Option<Cause> {
    let usable = |a: &&&Address| {
        a.interface == interface
            && a.flags & IFA_F_DADFAILED == 0
            && (a.flags & IFA_F_TENTATIVE == 0 || a.flags & IFA_F_OPTIMISTIC != 0)
    };
    if let Some(a) = held.iter().find(usable) {
        return Some(Cause::Ndp {
            prefix_len: a.prefix_len,
        });
    }
    let here = ipv6_conf(state, interface);
    if !(here.forwarding && (state.ipv6_all.proxy_ndp || here.proxy_ndp)) {
        return None;
    }
    state
        .proxies
        .iter()
        .find(|p| p.ip == ip && p.interface.as_deref().is_none_or(|i| i == interface))
        .map(|p| Cause::ProxyNdp {
            entry_interface: p.interface.clone(),
        })
}

/// How `sysctl` spells an interface in a key: a dot in its name (a VLAN, `eth0.100`) is a
/// slash there.
fn sysctl_key(interface: &str) -> String {
    interface.replace('.', "/")
}

/// What the kernel does with the effective `arp_ignore` value `mode`, in words.
fn arp_ignore_meaning(mode: u32) -> &'static str {
    match mode {
        1 => "answer for addresses of the receiving interface",
        2 => "answer for addresses of the receiving interface, to senders in its subnets",
        3 => "answer for addresses of any interface unless of scope host",
        8 => "never answer",
        _ => "answer for addresses of any interface",
    }
}

/// The exact commands that make the kernel stop answering ARP for addresses of other
/// interfaces (kube-proxy's `strictARP` runs the same).
pub const ARP_SYSCTL_FIX: &str =
    "sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2";

impl Hazard {
    /// `ipv4` or `ipv6`.
    pub fn family(&self) -> &'static str {
        if self.ip.is_ipv4() { "ipv4" } else { "ipv6" }
    }

    /// What is wrong, for logs and Events, as seen by `node`.
    pub fn describe(&self, node: &str) -> String {
        let (ip, interface) = (self.ip, &self.interface);
        let effect = format!(
            "clients on the LAN may get {node}'s MAC for it instead of the announcing node's"
        );
        match &self.cause {
            Cause::Arp {
                configured_on,
                arp_ignore_all,
                arp_ignore_interface,
                arp_filter,
            } => {
                let names: Vec<&str> = configured_on.iter().map(|(n, _)| n.as_str()).collect();
                let mode = (*arp_ignore_all).max(*arp_ignore_interface);
                format!(
                    "{node}'s kernel answers ARP for {ip} on {interface} itself: the address is \
                     configured on {} of {node} and net.ipv4.conf.all.arp_ignore={arp_ignore_all}, \
                     net.ipv4.conf.{}.arp_ignore={arp_ignore_interface} (the kernel \
                     uses the larger, {mode}: {}){}; {effect}.",
                    names.join(", "),
                    sysctl_key(interface),
                    arp_ignore_meaning(mode),
                    if *arp_filter {
                        "; arp_filter is on, which only withholds answers to senders routed \
                         through another interface"
                    } else {
                        ""
                    },
                )
            }
            Cause::Ndp { .. } => format!(
                "{node}'s kernel answers neighbour solicitations for {ip} on {interface} itself: \
                 the address is configured on {interface} of {node}; {effect}."
            ),
            Cause::ProxyNdp { entry_interface } => format!(
                "{node}'s kernel answers neighbour solicitations for {ip} on {interface} as a \
                 proxy: {node} has a proxy-NDP entry for it ({}) and proxy_ndp and forwarding \
                 are on for {interface}; {effect}.",
                match entry_interface {
                    Some(i) => format!("dev {i}"),
                    None => "for every interface".to_string(),
                }
            ),
        }
    }

    /// The remedy, as commands to run on `node`.
    pub fn fix(&self, node: &str) -> String {
        let (ip, interface) = (self.ip, &self.interface);
        match &self.cause {
            Cause::Arp {
                configured_on,
                arp_ignore_interface,
                ..
            } => {
                let mut parts = Vec::new();
                if configured_on.iter().any(|(n, _)| n != interface) {
                    // After all=1 the interface's own value still counts if it is larger.
                    let own = match arp_ignore_interface {
                        0..=2 | 8 => String::new(),
                        _ => format!(" net.ipv4.conf.{}.arp_ignore=1", sysctl_key(interface)),
                    };
                    parts.push(format!(
                        "run `{ARP_SYSCTL_FIX}{own}` on {node} (and persist it in \
                         /etc/sysctl.d); if kube-proxy runs in IPVS mode (it puts every \
                         LoadBalancer IP on kube-ipvs0), set `strictARP: true` in its \
                         KubeProxyConfiguration (or --ipvs-strict-arp), which sets the same"
                    ));
                }
                if let Some((_, len)) = configured_on.iter().find(|(n, _)| n == interface) {
                    parts.push(format!(
                        "remove the address from {interface} (`ip addr del {ip}/{len} dev \
                         {interface}` on {node}): no arp_ignore value short of 8 stops the \
                         kernel answering for an address of the receiving interface, and \
                         ferrolb answers for it without it being configured"
                    ));
                }
                parts.join("; and ")
            }
            Cause::Ndp { prefix_len } => format!(
                "remove the address (`ip -6 addr del {ip}/{prefix_len} dev {interface}` on \
                 {node}); ferrolb answers for it without it being configured"
            ),
            Cause::ProxyNdp { entry_interface } => format!(
                "delete the proxy entry ({}) or turn proxy NDP off \
                 (`sysctl -w net.ipv6.conf.all.proxy_ndp=0 net.ipv6.conf.{}.proxy_ndp=0` \
                 on {node})",
                match entry_interface {
                    Some(i) => format!("`ip -6 neigh del proxy {ip} dev {i}`"),
                    None => "it applies to every interface".to_string(),
                },
                sysctl_key(interface),
            ),
        }
    }

    /// [`Hazard::describe`] and [`Hazard::fix`] in one sentence pair.
    pub fn message(&self, node: &str) -> String {
        format!("{} Fix: {}.", self.describe(node), self.fix(node))
    }
}
