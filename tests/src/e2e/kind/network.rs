//! The kind cluster's shape and what Docker says of it, as pure functions: the kind config,
//! pool ranges at the top of the network's subnets, and the containers (nodes, client) with
//! their addresses on the network.

use std::net::IpAddr;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use super::{DEFAULT_NETWORK, POOL_SIZE, POOL_TOP_GAP, ROLE_LABEL};
#[cfg(doc)]
use crate::e2e::Driver;
use crate::node::ProxyMode;

/// The kind cluster config: one control-plane node and `workers` workers, dual-stack, kube-proxy
/// in `proxy_mode`.
pub fn render_config(workers: usize, proxy_mode: ProxyMode) -> String {
    let mut yaml = String::from(
        "kind: Cluster\n\
         apiVersion: kind.x-k8s.io/v1alpha4\n\
         networking:\n  \
           ipFamily: dual\n",
    );
    yaml.push_str(&format!("  kubeProxyMode: {}\n", proxy_mode.as_str()));
    yaml.push_str("nodes:\n- role: control-plane\n");
    for _ in 0..workers {
        yaml.push_str("- role: worker\n");
    }
    yaml
}

/// A pool range at the top of `subnet` (`a.b.c.d/len` or an IPv6 CIDR): [`POOL_SIZE`] addresses
/// ending [`POOL_TOP_GAP`] below the last one, as MetalLB's docs do for kind (172.18.0.0/16 ->
/// 172.18.255.200-172.18.255.250). Docker hands out addresses from the bottom of the subnet,
/// so the top stays free. Fails for subnets of fewer than 128 addresses.
pub fn pool_range(subnet: &str) -> Result<String> {
    let net: ipnetwork::IpNetwork = subnet
        .trim()
        .parse()
        .with_context(|| format!("subnet {subnet:?}"))?;
    let (bits, value) = match net.network() {
        IpAddr::V4(a) => (32u32, u128::from(u32::from(a))),
        IpAddr::V6(a) => (128u32, u128::from(a)),
    };
    let host_bits = bits - u32::from(net.prefix());
    ensure!(
        host_bits >= 7,
        "subnet {subnet} is too small for a pool of {POOL_SIZE} addresses at its top (needs /{} or larger)",
        bits - 7
    );
    let last = value | ((1u128 << host_bits) - 1);
    let end = last - POOL_TOP_GAP;
    let start = end - (POOL_SIZE - 1);
    let addr = |v: u128| -> IpAddr {
        if bits == 32 {
            IpAddr::V4((v as u32).into())
        } else {
            IpAddr::V6(v.into())
        }
    };
    Ok(format!("{}-{}", addr(start), addr(end)))
}

/// The subnets of a Docker network, from `docker network inspect <network>`'s JSON (an array of
/// one network; `IPAM.Config[].Subnet`, IPv4 and IPv6 in any order): (IPv4, IPv6).
pub fn network_subnets(inspect_json: &str) -> Result<(Option<String>, Option<String>)> {
    let v: Value = serde_json::from_str(inspect_json).context("docker network inspect JSON")?;
    let net = v
        .as_array()
        .and_then(|a| a.first())
        .context("docker network inspect printed no network")?;
    let (mut v4, mut v6) = (None, None);
    for cfg in net["IPAM"]["Config"].as_array().into_iter().flatten() {
        let Some(subnet) = cfg["Subnet"].as_str() else {
            continue;
        };
        let parsed: ipnetwork::IpNetwork = subnet
            .parse()
            .with_context(|| format!("subnet {subnet:?} of the network"))?;
        let slot = if parsed.is_ipv4() { &mut v4 } else { &mut v6 };
        slot.get_or_insert_with(|| subnet.to_string());
    }
    Ok((v4, v6))
}

/// Pool ranges for a Docker network: IPv4 first, then IPv6 if the network has it.
pub fn pool_ranges_of_network(inspect_json: &str) -> Result<Vec<String>> {
    let (v4, v6) = network_subnets(inspect_json)?;
    let v4 = v4.context("the Docker network has no IPv4 subnet")?;
    let mut ranges = vec![pool_range(&v4)?];
    if let Some(v6) = v6 {
        ranges.push(pool_range(&v6)?);
    }
    Ok(ranges)
}

/// One container as `docker inspect` describes it, seen from one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// Name, without Docker's leading `/`.
    pub name: String,
    /// kind's role label (`control-plane`, `worker`), if any.
    pub role: Option<String>,
    /// Whether it runs.
    pub running: bool,
    /// MAC on the network, lowercase.
    pub mac: String,
    /// IPv4 address on the network.
    pub ipv4: Option<IpAddr>,
    /// Global IPv6 address on the network.
    pub ipv6: Option<IpAddr>,
}

/// Containers from `docker inspect <names>...`'s JSON, with their addresses on `network`
/// (`NetworkSettings.Networks.<network>.{MacAddress,IPAddress,GlobalIPv6Address}`).
pub fn parse_containers(inspect_json: &str, network: &str) -> Result<Vec<Container>> {
    let v: Value = serde_json::from_str(inspect_json).context("docker inspect JSON")?;
    let items = v.as_array().context("docker inspect printed no array")?;
    items
        .iter()
        .map(|c| {
            let name = c["Name"]
                .as_str()
                .context("a container without Name")?
                .trim_start_matches('/')
                .to_string();
            let net = &c["NetworkSettings"]["Networks"][network];
            ensure!(
                net.is_object(),
                "container {name} is not on the Docker network {network}"
            );
            let ip = |key: &str| {
                net[key]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .and_then(|s| s.parse().ok())
            };
            Ok(Container {
                role: c["Config"]["Labels"][ROLE_LABEL]
                    .as_str()
                    .map(str::to_string),
                running: c["State"]["Running"].as_bool().unwrap_or(false),
                mac: net["MacAddress"]
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase(),
                ipv4: ip("IPAddress"),
                ipv6: ip("GlobalIPv6Address"),
                name,
            })
        })
        .collect()
}

/// Node containers in the order [`Driver::nodes`] gives them: workers (by name), then the rest
/// (the control-plane node).
pub fn order_nodes(mut nodes: Vec<Container>) -> Vec<Container> {
    nodes.sort_by(|a, b| {
        let worker = |c: &Container| c.role.as_deref() != Some("worker");
        (worker(a), natural_key(&a.name)).cmp(&(worker(b), natural_key(&b.name)))
    });
    nodes
}

/// `worker`, `worker2`, ..., `worker10` in numeric order.
fn natural_key(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, n) = name.split_at(name.len() - digits);
    (stem.to_string(), n.parse().unwrap_or(1))
}

/// The interface holding `ip`, from `ip -o addr show` (`15: eth0    inet 172.18.0.5/16 ...`;
/// `eth0@if16` forms are cut at the `@`).
pub fn interface_with_address(ip_o_addr: &str, ip: IpAddr) -> Option<String> {
    ip_o_addr.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let _index = words.next()?;
        let ifname = words.next()?;
        let _family = words.next()?;
        let addr = words.next()?.split('/').next()?;
        (addr.parse::<IpAddr>().ok()? == ip)
            .then(|| ifname.split('@').next().unwrap_or(ifname).to_string())
    })
}

/// The Docker network kind uses: `$KIND_EXPERIMENTAL_DOCKER_NETWORK`, else `kind`.
pub fn network_name() -> String {
    std::env::var("KIND_EXPERIMENTAL_DOCKER_NETWORK")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NETWORK.into())
}

/// Fails when `network` has no IPv6 subnet: the dual-stack cluster would have no IPv6 node
/// addresses and the scenarios' dual-stack Service could not be reached over IPv6.
pub(super) fn check_dual_stack_network(network: &str, inspect_json: &str) -> Result<()> {
    let (_, v6) = network_subnets(inspect_json)?;
    ensure!(
        v6.is_some(),
        "the Docker network {network} has no IPv6 subnet, so a dual-stack kind cluster cannot \
         serve IPv6. Enable IPv6 in Docker (\"ipv6\": true and ip6tables in daemon.json), then \
         remove the network (`docker network rm {network}`, with no kind cluster on it) so kind \
         re-creates it with an IPv6 subnet."
    );
    Ok(())
}
