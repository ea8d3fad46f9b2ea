//! The answers the client receives to its ARP requests and NDP solicitations, captured with
//! tcpdump for the length of a [`super::LanWatch`] and read back with tshark.
//!
//! Only answers addressed to the client count: ARP replies and neighbour advertisements sent to
//! its MAC. A speaker that takes an address over announces it to everyone (gratuitous ARP,
//! unsolicited advertisement, to the broadcast or all-nodes address); counting those would call
//! a clean handover, where the old owner answered a moment before, two nodes answering. The
//! tools' own output cannot tell the two apart, and ndisc6 does not even report advertisements
//! sent from another address than the target (MetalLB sends them from the link-local one).

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::capture::Tcpdump;
use crate::lab::Host;

/// One ARP reply or neighbour advertisement addressed to the client.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// When it arrived, seconds since the Unix epoch.
    pub epoch: f64,
    /// Its Ethernet source (lowercase).
    pub mac: String,
    /// The address it answers for.
    pub target: IpAddr,
}

/// A running capture.
#[derive(Debug)]
pub struct AnswerCapture {
    tcpdump: Tcpdump,
    client_mac: String,
}

impl AnswerCapture {
    /// Starts tcpdump on `interface` of `client`, writing ARP and neighbour advertisements to
    /// `pcap`; returns once it listens.
    pub fn start(client: &Host, interface: &str, pcap: &Path) -> Result<AnswerCapture> {
        Ok(AnswerCapture {
            tcpdump: Tcpdump::start(client, interface, pcap, "arp or (icmp6 and ip6[40] == 136)")?,
            client_mac: client.mac.to_lowercase(),
        })
    }

    /// Stops the capture; every answer addressed to the client in it.
    pub fn stop(self) -> Result<Vec<Answer>> {
        let pcap = self.tcpdump.stop();
        let out = Command::new("tshark")
            .args(["-r"])
            .arg(&pcap)
            .args(["-T", "fields", "-E", "separator=/t"])
            .args(["-e", "frame.time_epoch", "-e", "eth.src", "-e", "eth.dst"])
            .args(["-e", "arp.opcode", "-e", "arp.src.proto_ipv4"])
            .args(["-e", "icmpv6.nd.na.target_address"])
            .stdin(Stdio::null())
            .output()
            .context("running tshark")?;
        if !out.status.success() {
            bail!(
                "tshark -r {}: {}",
                pcap.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        parse_fields(&String::from_utf8_lossy(&out.stdout), &self.client_mac)
    }
}

/// tshark's `time src dst arp.opcode arp.src.proto_ipv4 na.target` lines (pure): the ARP
/// replies (opcode 2) and advertisements sent to `client_mac`.
pub fn parse_fields(text: &str, client_mac: &str) -> Result<Vec<Answer>> {
    let mut answers = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [epoch, src, dst, opcode, arp_sender, na_target] = fields[..] else {
            bail!("tshark line {line:?} has not six fields");
        };
        if !dst.eq_ignore_ascii_case(client_mac) {
            continue;
        }
        let target = match (opcode, arp_sender, na_target) {
            ("2", sender, _) => sender,
            ("", _, target) if !target.is_empty() => target,
            _ => continue,
        };
        answers.push(Answer {
            epoch: epoch
                .parse()
                .with_context(|| format!("time {epoch:?} in {line:?}"))?,
            mac: src.to_lowercase(),
            target: target
                .parse()
                .with_context(|| format!("target {target:?} in {line:?}"))?,
        });
    }
    Ok(answers)
}

/// The MACs of the answers for `ip` that arrived within `window` after `sent` (epoch seconds):
/// the answers to a request sent then (pure).
pub fn answers_to(answers: &[Answer], ip: IpAddr, sent: f64, window: Duration) -> Vec<String> {
    answers
        .iter()
        .filter(|a| a.target == ip && a.epoch >= sent && a.epoch <= sent + window.as_secs_f64())
        .map(|a| a.mac.clone())
        .collect()
}
