//! What the client on the LAN observes: HTTP answers from the echo pods, who answers ARP and NDP
//! for an address, and its own kernel's neighbour entry.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Driver;

/// One answer of the echo workload (`pod=<name> node=<name> client=<address>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoAnswer {
    /// The pod that answered.
    pub pod: String,
    /// The node that pod runs on.
    pub node: String,
    /// The source address the pod saw.
    pub client: String,
}

impl EchoAnswer {
    /// Parses the echo body.
    pub fn parse(body: &str) -> Result<EchoAnswer> {
        let field = |name: &str| {
            body.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
                .with_context(|| format!("no {name}= in the echo answer {body:?}"))
        };
        Ok(EchoAnswer {
            pod: field("pod")?,
            node: field("node")?,
            client: field("client")?,
        })
    }
}

/// `http://ip:port/` as a URL (IPv6 in brackets).
pub fn url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{port}/"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}/"),
    }
}

/// One `curl` from the client with a `timeout`; the echo answer.
pub fn curl(d: &dyn Driver, ip: IpAddr, port: u16, timeout: Duration) -> Result<EchoAnswer> {
    let max_time = format!("{:.3}", timeout.as_secs_f64());
    let body = d.client_ok("curl", &["-sS", "--max-time", &max_time, &url(ip, port)])?;
    EchoAnswer::parse(body.trim())
}

/// Curls until an answer satisfies `ok` or `timeout` passes; returns it and when it came.
pub fn curl_until(
    d: &dyn Driver,
    ip: IpAddr,
    port: u16,
    timeout: Duration,
    ok: impl Fn(&EchoAnswer) -> bool,
) -> Result<(EchoAnswer, Instant)> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match curl(d, ip, port, Duration::from_millis(500)) {
            Ok(answer) if ok(&answer) => return Ok((answer, Instant::now())),
            Ok(answer) => format!("{answer:?}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "curl {}: no satisfying answer within {timeout:?}; last: {last}",
                url(ip, port)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `arping` from the client: the sender MAC of every reply to `count` requests (lowercase).
pub fn arping(d: &dyn Driver, ip: IpAddr, count: u32) -> Result<Vec<String>> {
    let out = d.client(
        "arping",
        &[
            "-i",
            d.client_interface(),
            "-c",
            &count.to_string(),
            "-W",
            "0.2",
            &ip.to_string(),
        ],
    )?;
    Ok(arping_replies(&String::from_utf8_lossy(&out.stdout)))
}

/// The sender MAC of every reply in `arping`'s output (lowercase, one per reply: a MAC twice
/// means it answered twice).
pub fn arping_replies(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.split_whitespace().nth(3))
        .map(str::to_lowercase)
        .collect()
}

/// `ndisc6` from the client: the target link-layer address of every advertisement.
pub fn ndisc6(d: &dyn Driver, ip: IpAddr) -> Result<Vec<String>> {
    let out = d.client(
        "ndisc6",
        &[
            "-m",
            "-n",
            "-r",
            "2",
            "-w",
            "500",
            &ip.to_string(),
            d.client_interface(),
        ],
    )?;
    Ok(ndisc6_replies(&String::from_utf8_lossy(&out.stdout)))
}

/// The target link-layer address of every advertisement in `ndisc6 -m`'s output (lowercase).
pub fn ndisc6_replies(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.contains("Target link-layer address"))
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_lowercase)
        .collect()
}

/// The MACs answering for `ip` (ARP for IPv4, NDP for IPv6), deduplicated and sorted.
pub fn answering_macs(d: &dyn Driver, ip: IpAddr) -> Result<Vec<String>> {
    let mut macs = match ip {
        IpAddr::V4(_) => arping(d, ip, 3)?,
        IpAddr::V6(_) => ndisc6(d, ip)?,
    };
    macs.sort();
    macs.dedup();
    Ok(macs)
}

/// The MAC the client's kernel holds for `ip`, if any (not FAILED/INCOMPLETE).
pub fn neighbour(d: &dyn Driver, ip: IpAddr) -> Result<Option<String>> {
    let out = d.client_ok(
        "ip",
        &[
            "neigh",
            "show",
            &ip.to_string(),
            "dev",
            d.client_interface(),
        ],
    )?;
    Ok(out
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_answers_parse_in_any_field_order() {
        let a = EchoAnswer::parse("pod=echo-7d9 node=node2 client=198.51.100.100").unwrap();
        assert_eq!(
            a,
            EchoAnswer {
                pod: "echo-7d9".into(),
                node: "node2".into(),
                client: "198.51.100.100".into()
            }
        );
        let b = EchoAnswer::parse("client=2001:db8:1::100 node=n pod=p").unwrap();
        assert_eq!(
            (b.pod.as_str(), b.client.as_str()),
            ("p", "2001:db8:1::100")
        );
        assert!(EchoAnswer::parse("hello").is_err());
    }

    #[test]
    fn urls_bracket_ipv6() {
        assert_eq!(
            url("198.51.100.200".parse().unwrap(), 80),
            "http://198.51.100.200:80/"
        );
        assert_eq!(
            url("2001:db8:1::200".parse().unwrap(), 80),
            "http://[2001:db8:1::200]:80/"
        );
    }
}
