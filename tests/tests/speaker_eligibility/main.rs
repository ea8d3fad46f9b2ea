//! Who may announce, end to end: real speakers in lab node namespaces, the real controller, and
//! the client's own kernel, curl, arping and ndisc6 as peers. Each test changes one input of
//! eligibility (endpoints of a `Local` Service, `nodeSelectors`, `interfaces`, excluded Nodes)
//! or of grouping (dual-stack, shared IPs) and checks the wire, the data path and the condition.
//!
//! ```text
//!  eligibility  Local policy endpoints, nodeSelectors, interfaces, excluded Nodes
//!  grouping     dual-stack addresses and shared IPs: one announcer per group
//!  wire         what the client sees: arping, tcpdump of ARP, curl, its neighbour table
//! ```

mod eligibility;
mod grouping;
mod wire;

use std::net::IpAddr;

use anyhow::Result;
use ferrolb_crds::contract::reason;
use ferrolb_speaker::election;
use ferrolb_tests::l2lab::{Rig, announced};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

const NODES: [&str; 3] = ["node1", "node2", "node3"];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Waits until the speakers' condition on Service `svc` satisfies `ok`.
async fn wait_condition(
    rig: &Rig,
    svc: &str,
    what: &str,
    ok: impl Fn(&Condition) -> bool,
) -> Result<Condition> {
    rig.scenario
        .wait(svc, what, |s| announced(s).filter(|c| ok(c)).cloned())
        .await
}

/// Waits until the condition on `svc` says `node` announces on `eth0` (every lab node's one
/// interface).
async fn wait_announced_by(rig: &Rig, svc: &str, node: &str) -> Result<Condition> {
    wait_condition(rig, svc, &format!("announced by {node} on eth0"), |c| {
        c.status == "True"
            && c.reason == reason::ANNOUNCED
            && c.message.starts_with(&format!("{node} announces "))
            && c.message.ends_with(" on eth0")
    })
    .await
}

/// The node rendezvous election picks for `vip` when every lab node may announce.
fn natural_winner(vip: IpAddr) -> String {
    election::owner(vip, NODES).unwrap().to_string()
}
