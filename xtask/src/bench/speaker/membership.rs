//! Membership at scale (`membership_scale`, a release example of the speaker): datagrams per
//! member per second and detection times at 10, 100 and 1,000 members, before the lab starts.
//!
//! ```text
//!  simulated (in-memory network, tokio's paused clock): 10, 100, 1,000 members
//!      20 deaths by process end, 20 by silence; then 1,000 members under 10 % loss
//!  loopback (real UDP and TCP lifelines) in a network namespace made for it: 10, 100
//!      20 deaths by process end, 20 by silence (nftables drop in that namespace)
//! ```

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::super::figure::fmt;

/// The namespace of the loopback runs (its nftables rules touch nothing else).
const NETNS: &str = "ferrolb-bench-membership";
/// Deaths timed per kind and run.
const TRIALS: usize = 20;

/// One `membership_scale` run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MembershipRun {
    /// Membership instances.
    pub members: u64,
    /// "simulated, virtual time" or "loopback UDP and TCP".
    pub network: String,
    /// Probability that a datagram is dropped (simulated runs).
    pub loss: f64,
    /// Heartbeat interval and silence before death, ms.
    pub interval_ms: u64,
    pub dead_after_ms: u64,
    /// Datagrams and view changes over a quiet stretch.
    pub steady: Steady,
    /// Deaths by process end (sockets closed: the lifelines tell).
    pub kill: Option<Detection>,
    /// Deaths by silence (every datagram from and to the member dropped).
    pub silence: Option<Detection>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Steady {
    pub seconds: f64,
    pub sent_per_member_s: MeanMax,
    pub received_per_member_s: MeanMax,
    /// Members whose view changed at all meanwhile (each change is a false death).
    pub members_whose_view_changed: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MeanMax {
    pub mean: f64,
    pub max: f64,
}

/// Time from the death until every other member's view had lost it (and each member's own).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Detection {
    pub trials: u64,
    pub all_members_ms: Percentiles,
    pub each_member_ms: Percentiles,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    #[serde(default)]
    pub max: f64,
}

/// Every run of the module docs, in order.
pub fn measure(bin: &Path) -> Result<Vec<MembershipRun>> {
    let mut runs = Vec::new();
    for members in [10, 100, 1000] {
        eprintln!("==> speaker: membership, {members} members, simulated");
        runs.push(run(bin, members, Mode::Simulated { loss: 0.0 })?);
    }
    eprintln!("==> speaker: membership, 1000 members, simulated, 10 % loss");
    runs.push(run(bin, 1000, Mode::Simulated { loss: 0.1 })?);
    let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
    ip(&["netns", "add", NETNS])?;
    let loopback = [10, 100]
        .into_iter()
        .map(|members| {
            eprintln!("==> speaker: membership, {members} members, loopback UDP in netns {NETNS}");
            run(bin, members, Mode::Loopback)
        })
        .collect::<Result<Vec<_>>>();
    let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
    runs.extend(loopback?);
    Ok(runs)
}

enum Mode {
    Simulated { loss: f64 },
    Loopback,
}

fn run(bin: &Path, members: usize, mode: Mode) -> Result<MembershipRun> {
    let trials = TRIALS.to_string();
    let count = members.to_string();
    let mut args = vec!["--members", &count, "--measure-s", "10"];
    let loss_arg;
    let mut cmd = match mode {
        Mode::Simulated { loss } if loss > 0.0 => {
            loss_arg = loss.to_string();
            // Under loss only the quiet stretch matters: a minute of it.
            args = vec![
                "--members",
                &count,
                "--measure-s",
                "60",
                "--kill-trials",
                "0",
            ];
            args.extend(["--simulated", "--loss", &loss_arg]);
            Command::new(bin)
        }
        Mode::Simulated { .. } => {
            args.extend(["--simulated", "--kill-trials", &trials]);
            args.extend(["--silence-trials", &trials]);
            Command::new(bin)
        }
        Mode::Loopback => {
            ip(&["-n", NETNS, "link", "set", "lo", "up"])?;
            args.extend(["--kill-trials", &trials, "--silence-trials", &trials]);
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", NETNS]).arg(bin);
            cmd
        }
    };
    cmd.args(&args);
    super::super::json_output(cmd, "membership_scale")
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The runs as a Markdown table.
pub fn table(s: &mut String, runs: &[MembershipRun]) {
    let _ = writeln!(
        s,
        "\n### Membership at scale\n\n| members | network | loss | sent / member / s (mean, max) | received / member / s (mean, max) | views changed | process end: all members p50 / p99 / max ms | silence: all members p50 / p99 / max ms |\n|---:|---|---:|---|---|---:|---|---|"
    );
    let detection = |d: &Option<Detection>| match d {
        Some(d) => format!(
            "{} / {} / {} ({} trials)",
            fmt(d.all_members_ms.p50),
            fmt(d.all_members_ms.p99),
            fmt(d.all_members_ms.max),
            d.trials
        ),
        None => "-".into(),
    };
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} % | {}, {} | {}, {} | {} | {} | {} |",
            r.members,
            r.network,
            fmt(100.0 * r.loss),
            fmt(r.steady.sent_per_member_s.mean),
            fmt(r.steady.sent_per_member_s.max),
            fmt(r.steady.received_per_member_s.mean),
            fmt(r.steady.received_per_member_s.max),
            r.steady.members_whose_view_changed,
            detection(&r.kill),
            detection(&r.silence),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_example_prints() {
        let printed = r#"{"dead_after_ms":250,"interval_ms":50,"kill":{"all_members_ms":{"max":1.0,"p50":1.0,"p99":1.0},"each_member_ms":{"p50":1.0,"p99":1.0},"trials":2},"loss":0.0,"members":100,"network":"simulated, virtual time","settled_s":4.0,"silence":null,"steady":{"members_whose_view_changed":0,"received_per_member_s":{"max":100.0,"mean":80.0},"seconds":2.0,"sent_per_member_s":{"max":80.0,"mean":80.0}}}"#;
        let run: MembershipRun = serde_json::from_str(printed).unwrap();
        assert_eq!(run.members, 100);
        assert_eq!(run.steady.sent_per_member_s.mean, 80.0);
        assert!(run.silence.is_none());
        let mut s = String::new();
        table(&mut s, &[run]);
        assert!(
            s.contains("| 100 | simulated, virtual time | 0 % | 80, 80 |"),
            "{s}"
        );
    }
}
