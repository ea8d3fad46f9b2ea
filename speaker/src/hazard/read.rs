//! Reads what [`super::kernel_answers`] decides on: the node's addresses and IPv6 proxy entries
//! (netlink dumps) and the ARP/NDP sysctls (`/proc/sys/net`, the speaker's own network
//! namespace: the node's, with `hostNetwork`). Needs no privilege: `/proc/sys` is readable by
//! everyone, also where a container runtime mounts it read-only.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::path::Path;

use super::{Address, Ipv4Conf, Ipv6Conf, KernelState, ProxyEntry};
use crate::netio::{addresses, links};

/// The node's state as far as `ips` and the interfaces in `announce_on` are concerned.
pub fn kernel_state(announce_on: &[String], ips: &BTreeSet<IpAddr>) -> io::Result<KernelState> {
    let names: BTreeMap<u32, String> = links::list()?
        .into_iter()
        .map(|l| (l.index, l.name))
        .collect();
    let addresses: Vec<Address> = addresses::addresses()?
        .into_iter()
        .filter_map(|a| {
            Some(Address {
                interface: names.get(&a.ifindex)?.clone(),
                ip: a.ip,
                prefix_len: a.prefix_len,
                scope: a.scope,
                flags: a.flags,
            })
        })
        .collect();
    let mut state = sysctls(Path::new("/proc/sys/net"), announce_on, ips, addresses);
    let proxying = announce_on.iter().any(|i| {
        let conf = state.ipv6.get(i).copied().unwrap_or_default();
        conf.forwarding && (conf.proxy_ndp || state.ipv6_all.proxy_ndp)
    });
    // The proxy table matters only where proxy NDP is on: not dumped otherwise.
    if proxying && ips.iter().any(IpAddr::is_ipv6) {
        state.proxies = addresses::ipv6_proxies()?
            .into_iter()
            .filter_map(|p| {
                let interface = match p.ifindex {
                    Some(i) => Some(names.get(&i)?.clone()),
                    None => None,
                };
                Some(ProxyEntry {
                    interface,
                    ip: p.ip,
                })
            })
            .collect();
    }
    Ok(state)
}

/// `addresses` plus the sysctls under `root` (`/proc/sys/net`) of `all`, the announce
/// interfaces, and the interfaces holding one of `ips`. A value that cannot be read (the
/// interface just vanished, IPv6 is disabled) reads as 0, the kernel's default.
fn sysctls(
    root: &Path,
    announce_on: &[String],
    ips: &BTreeSet<IpAddr>,
    addresses: Vec<Address>,
) -> KernelState {
    let int = |family: &str, interface: &str, name: &str| -> u32 {
        std::fs::read_to_string(root.join(family).join("conf").join(interface).join(name))
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map_or(0, |v| v.clamp(0, i64::from(u32::MAX)) as u32)
    };
    let v4 = |interface: &str| Ipv4Conf {
        arp_ignore: int("ipv4", interface, "arp_ignore"),
        arp_filter: int("ipv4", interface, "arp_filter") != 0,
        route_localnet: int("ipv4", interface, "route_localnet") != 0,
    };
    let v6 = |interface: &str| Ipv6Conf {
        proxy_ndp: int("ipv6", interface, "proxy_ndp") != 0,
        forwarding: int("ipv6", interface, "forwarding") != 0,
    };
    let holders: BTreeSet<&str> = addresses
        .iter()
        .filter(|a| ips.contains(&a.ip))
        .map(|a| a.interface.as_str())
        .collect();
    let v4_interfaces: BTreeSet<&str> = announce_on
        .iter()
        .map(String::as_str)
        .chain(holders)
        .collect();
    let any_v6 = ips.iter().any(IpAddr::is_ipv6);
    KernelState {
        ipv4_all: v4("all"),
        ipv4: v4_interfaces
            .iter()
            .map(|i| (i.to_string(), v4(i)))
            .collect(),
        ipv6_all: if any_v6 {
            v6("all")
        } else {
            Ipv6Conf::default()
        },
        ipv6: if any_v6 {
            announce_on.iter().map(|i| (i.clone(), v6(i))).collect()
        } else {
            BTreeMap::new()
        },
        addresses,
        proxies: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, value: &str) {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, format!("{value}\n")).unwrap();
    }

    #[test]
    fn reads_the_sysctls_that_matter() {
        let dir = std::env::temp_dir().join(format!("ferrolb-sysctl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(&dir, "ipv4/conf/all/arp_ignore", "1");
        write(&dir, "ipv4/conf/all/arp_filter", "0");
        write(&dir, "ipv4/conf/eth0/arp_ignore", "0");
        write(&dir, "ipv4/conf/eth0/arp_filter", "1");
        write(&dir, "ipv4/conf/lo/route_localnet", "1");
        write(&dir, "ipv4/conf/eth9/arp_ignore", "3"); // neither announced nor holding
        write(&dir, "ipv4/conf/eth0.100/arp_ignore", "-2");
        write(&dir, "ipv6/conf/all/proxy_ndp", "1");
        write(&dir, "ipv6/conf/eth0/forwarding", "1");
        let vip: IpAddr = "198.51.100.200".parse().unwrap();
        let vip6: IpAddr = "2001:db8:1::200".parse().unwrap();
        let held = vec![Address {
            interface: "lo".into(),
            ip: vip,
            prefix_len: 32,
            scope: 0,
            flags: 0,
        }];
        let announce = vec!["eth0".to_string(), "eth0.100".to_string()];
        let s = sysctls(&dir, &announce, &[vip, vip6].into(), held.clone());
        assert_eq!(s.ipv4_all.arp_ignore, 1);
        assert!(s.ipv4["eth0"].arp_filter && s.ipv4["eth0"].arp_ignore == 0);
        assert!(s.ipv4["lo"].route_localnet);
        assert_eq!(s.ipv4["eth0.100"].arp_ignore, 0);
        assert!(!s.ipv4.contains_key("eth9"));
        assert!(s.ipv6_all.proxy_ndp);
        assert!(s.ipv6["eth0"].forwarding && !s.ipv6["eth0"].proxy_ndp);
        assert_eq!(s.addresses, held);
        // No IPv6 address handled: IPv6 sysctls are not read.
        let s = sysctls(&dir, &announce, &[vip].into(), held);
        assert!(s.ipv6.is_empty() && !s.ipv6_all.proxy_ndp);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_real_node_can_be_read_unprivileged() {
        let ips: BTreeSet<IpAddr> = ["127.0.0.1".parse().unwrap()].into();
        let s = kernel_state(&["lo".to_string()], &ips).unwrap();
        assert!(s.addresses.iter().any(|a| a.interface == "lo"));
    }
}
