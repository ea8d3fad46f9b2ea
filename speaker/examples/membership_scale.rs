//! Membership at scale: `--members` real membership instances in one process, each with its own
//! UDP socket and lifeline listener on its own loopback address (127.0.x.y), default timings;
//! or, with `--simulated`, the same membership code on an in-memory network under tokio's paused
//! clock (virtual time: the figures are the protocol's, free of this machine's CPU limits, which
//! a thousand real sockets sending 80 datagrams a second each exceed on two cores). Prints one
//! JSON object:
//!
//! ```text
//! membership_scale --members 1000 [--simulated [--loss 0.1]] [--kill-trials 20]
//!                  [--silence-trials 20] [--measure-s 5]
//!   steady state: datagrams sent and received per member per second (mean, max), and the
//!                 view changes seen meanwhile (false deaths: should be 0)
//!   kill:    drop one member (its sockets close as at a process death), time until every other
//!            member's view has lost it; then start it again (new boot id, new port) and wait
//!            until every view has it back
//!   silence: drop every packet from and to one member's address with nftables (a frozen or cut
//!            node: no lifeline closes), same measure; then lift the rule
//! ```
//!
//! On real sockets, silence trials need root and nftables; run them in a network namespace of
//! their own (`cargo xtask bench` does: `ip netns exec`), so the rules touch nothing else.
//! Everything stays on that namespace's loopback. Simulated, a silenced address is dropped by
//! the in-memory network.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferrolb_speaker::membership::{Config, LiveView, Membership, Metrics, Peer, SimNetwork};
use serde_json::json;
use tokio::sync::watch;

#[derive(Parser, Debug)]
struct Args {
    /// Membership instances.
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Deaths by process end (sockets closed) to time.
    #[arg(long, default_value_t = 20)]
    kill_trials: usize,
    /// Deaths by silence (nftables drop) to time; needs root, in a namespace of its own.
    #[arg(long, default_value_t = 0)]
    silence_trials: usize,
    /// Seconds of steady state over which datagrams are counted.
    #[arg(long, default_value_t = 5)]
    measure_s: u64,
    /// Seed of the victims' choice and of the simulated losses.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run on a simulated network in virtual time instead of loopback sockets.
    #[arg(long)]
    simulated: bool,
    /// Simulated only: drop each datagram with this probability.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
}

const KEY: &[u8] = b"membership-scale-bench-key-0123456789";
/// Longest wait for a view to settle (all live, or a victim gone or back).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
const NFT_TABLE: &str = "ferrolb_membership_scale";

struct Member {
    name: String,
    ip: Ipv4Addr,
    addr: SocketAddr,
    membership: Option<Membership>,
    view: watch::Receiver<LiveView>,
    metrics: Metrics,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.members < 2 || args.members > 60_000 {
        bail!("--members must be 2..=60000");
    }
    if args.simulated {
        // One thread and a paused clock: time moves only when every speaker waits.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()?
            .block_on(async {
                let net = SimNetwork::new(args.seed);
                net.set_loss(args.loss);
                run(args, Some(net)).await
            })
    } else {
        if args.loss > 0.0 {
            bail!("--loss needs --simulated (on loopback, use nftables)");
        }
        raise_fd_limit(args.members)?;
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(args, None))
    }
}

async fn run(args: Args, net: Option<SimNetwork>) -> Result<()> {
    let mut members = Vec::with_capacity(args.members);
    for i in 0..args.members {
        let name = format!("node-{i:05}");
        let ip = Ipv4Addr::new(127, 0, (i / 250) as u8 + 1, (i % 250) as u8 + 1);
        let (membership, view, metrics) =
            start(&name, SocketAddr::new(IpAddr::V4(ip), 0), &net).await?;
        members.push(Member {
            name,
            ip,
            addr: membership.local_addr(),
            membership: Some(membership),
            view,
            metrics,
        });
    }
    set_peers(&members);
    let started = Instant::now();
    // Past the start-up grace (3 s), every view must hold everyone from the mesh alone.
    tokio::time::sleep(Config::new("x", any_addr(), KEY).fallback_after + Duration::from_secs(1))
        .await;
    let all: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    wait_for(&members, None, |live| live.len() == all.len())
        .await
        .context("the views never held every member")?;
    let settled_s = started.elapsed().as_secs_f64();

    let steady = steady_state(&mut members, args.measure_s).await;
    let silencer = match &net {
        Some(net) => Silencer::Simulated(net.clone()),
        None => Silencer::Nft,
    };
    if std::env::var_os("SCALE_DEBUG").is_some() {
        let gauge = |f: fn(&Metrics) -> i64| members.iter().map(|m| f(&m.metrics)).sum::<i64>();
        eprintln!(
            "steady {steady} slowness {} watching {} lifelines {}",
            gauge(|m| m.slowness.get()),
            gauge(|m| m.watching.get()),
            gauge(|m| m.lifelines.get())
        );
    }
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut kill = Vec::new();
    let mut kill_each = Vec::new();
    for _ in 0..args.kill_trials {
        let victim = rng.usize(..members.len());
        let (all_ms, each) = kill_trial(&mut members, victim, &net).await?;
        kill.push(all_ms);
        kill_each.extend(each);
    }
    let mut silence = Vec::new();
    let mut silence_each = Vec::new();
    if args.silence_trials > 0 {
        silencer.prepare()?;
        for _ in 0..args.silence_trials {
            let victim = rng.usize(..members.len());
            let (all_ms, each) = silence_trial(&members, victim, &silencer).await?;
            silence.push(all_ms);
            silence_each.extend(each);
        }
        silencer.clean_up()?;
    }
    let cfg = Config::new("x", any_addr(), KEY);
    let report = json!({
        "members": args.members,
        "network": if args.simulated { "simulated, virtual time" } else { "loopback UDP and TCP" },
        "loss": args.loss,
        "interval_ms": cfg.interval.as_millis() as u64,
        "dead_after_ms": cfg.dead_after.as_millis() as u64,
        "settled_s": settled_s,
        "steady": steady,
        "kill": summary(&kill, &kill_each),
        "silence": summary(&silence, &silence_each),
    });
    println!("{report}");
    Ok(())
}

/// Starts `name` at `addr` again once its old sockets are gone (they close when its task ends).
async fn restart(
    name: &str,
    addr: SocketAddr,
    net: &Option<SimNetwork>,
) -> Result<(Membership, watch::Receiver<LiveView>, Metrics)> {
    let t0 = Instant::now();
    loop {
        match start(name, addr, net).await {
            Err(e) if t0.elapsed() < SETTLE_TIMEOUT => {
                if !format!("{e:#}").contains("in use") {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            other => return other,
        }
    }
}

async fn start(
    name: &str,
    addr: SocketAddr,
    net: &Option<SimNetwork>,
) -> Result<(Membership, watch::Receiver<LiveView>, Metrics)> {
    let mut cfg = Config::new(name, addr, KEY);
    cfg.simulated = net.clone();
    let metrics = Metrics::default();
    let (membership, view) = Membership::start(cfg, metrics.clone())
        .await
        .with_context(|| format!("starting {name} on {addr}"))?;
    Ok((membership, view, metrics))
}

fn any_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
}

/// Every member as a peer.
fn peer_list(members: &[Member]) -> Vec<Peer> {
    members
        .iter()
        .map(|m| Peer {
            name: m.name.clone(),
            addr: m.addr,
            node_ready: true,
        })
        .collect()
}

/// Gives every running member the list of all members.
fn set_peers(members: &[Member]) {
    let peers = peer_list(members);
    for m in members {
        if let Some(membership) = &m.membership {
            membership.set_peers(peers.clone());
        }
    }
}

/// Datagrams per member per second over `secs`, and view changes meanwhile.
async fn steady_state(members: &mut [Member], secs: u64) -> serde_json::Value {
    let counts = |members: &[Member]| -> Vec<(u64, u64)> {
        members
            .iter()
            .map(|m| {
                let received = [
                    "accepted",
                    "malformed",
                    "bad_mac",
                    "unknown_peer",
                    "stale",
                    "replayed",
                ]
                .iter()
                .map(|r| m.metrics.received_count(r))
                .sum();
                (m.metrics.packets_sent.get(), received)
            })
            .collect()
    };
    for m in members.iter_mut() {
        m.view.mark_unchanged();
    }
    let before = counts(members);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = counts(members);
    let elapsed = t0.elapsed().as_secs_f64();
    let changes = members
        .iter()
        .filter(|m| m.view.has_changed().unwrap_or(false))
        .count();
    let rate = |pick: fn(&(u64, u64)) -> u64| -> Vec<f64> {
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| (pick(a) - pick(b)) as f64 / elapsed)
            .collect()
    };
    let sent = rate(|c| c.0);
    let received = rate(|c| c.1);
    json!({
        "seconds": elapsed,
        "sent_per_member_s": {"mean": mean(&sent), "max": max(&sent)},
        "received_per_member_s": {"mean": mean(&received), "max": max(&received)},
        "members_whose_view_changed": changes,
    })
}

/// Drops member `victim` (its sockets close, as when its process dies); returns the ms until
/// every other member's view lost it, and each member's own detection time. Then starts it
/// again and waits until every view has it back.
async fn kill_trial(
    members: &mut [Member],
    victim: usize,
    net: &Option<SimNetwork>,
) -> Result<(f64, Vec<f64>)> {
    let t0 = Instant::now();
    drop(members[victim].membership.take());
    let gone = &members[victim].name.clone();
    let each = wait_for(members, Some(victim), |live| !live.contains(gone))
        .await
        .with_context(|| format!("{gone} killed: not seen dead by every member"))?;
    let all = t0.elapsed().as_secs_f64() * 1e3;
    // Back on the same address, as a restarted pod on its node: the peer lists stay as they are.
    let addr = members[victim].addr;
    let (membership, view, metrics) = restart(gone, addr, net).await?;
    members[victim].membership = Some(membership);
    members[victim].view = view;
    members[victim].metrics = metrics;
    let peers = peer_list(members);
    if let Some(m) = &members[victim].membership {
        m.set_peers(peers);
    }
    wait_for(members, None, |live| live.len() == members.len())
        .await
        .with_context(|| format!("{gone} restarted: not seen live again by every member"))?;
    Ok((all, each))
}

/// How a member is silenced: nftables on loopback, or the simulated network.
enum Silencer {
    Nft,
    Simulated(SimNetwork),
}

impl Silencer {
    fn prepare(&self) -> Result<()> {
        match self {
            Silencer::Nft => nft(&format!(
                "add table inet {NFT_TABLE}\nadd chain inet {NFT_TABLE} out {{ type filter hook output priority 0; }}\n"
            )),
            Silencer::Simulated(_) => Ok(()),
        }
    }

    fn silence(&self, ip: Ipv4Addr, on: bool) -> Result<()> {
        match self {
            Silencer::Nft if on => nft(&format!(
                "add rule inet {NFT_TABLE} out ip saddr {ip} drop\nadd rule inet {NFT_TABLE} out ip daddr {ip} drop\n"
            )),
            Silencer::Nft => nft(&format!("flush chain inet {NFT_TABLE} out\n")),
            Silencer::Simulated(net) => {
                net.silence(IpAddr::V4(ip), on);
                Ok(())
            }
        }
    }

    fn clean_up(&self) -> Result<()> {
        match self {
            Silencer::Nft => nft(&format!("delete table inet {NFT_TABLE}\n")),
            Silencer::Simulated(_) => Ok(()),
        }
    }
}

/// Silences member `victim` (every datagram from or to it dropped: a frozen or cut node);
/// returns as [`kill_trial`]. Then lets it speak again and waits until every view has it back.
async fn silence_trial(
    members: &[Member],
    victim: usize,
    silencer: &Silencer,
) -> Result<(f64, Vec<f64>)> {
    let ip = members[victim].ip;
    let name = &members[victim].name;
    silencer.silence(ip, true)?;
    let t0 = Instant::now();
    let each = wait_for(members, Some(victim), |live| !live.contains(name))
        .await
        .with_context(|| format!("{name} silenced: not seen dead by every member"))?;
    let all = t0.elapsed().as_secs_f64() * 1e3;
    silencer.silence(ip, false)?;
    wait_for(members, None, |live| live.len() == members.len())
        .await
        .with_context(|| format!("{name} heard again: not seen live by every member"))?;
    Ok((all, each))
}

/// Polls every member's view but `except`'s each millisecond until `done` holds for all;
/// returns when each first held, in ms from the call.
async fn wait_for(
    members: &[Member],
    except: Option<usize>,
    done: impl Fn(&std::collections::BTreeSet<String>) -> bool,
) -> Result<Vec<f64>> {
    let t0 = Instant::now();
    let mut when: BTreeMap<usize, f64> = BTreeMap::new();
    let watched: Vec<usize> = (0..members.len()).filter(|i| Some(*i) != except).collect();
    loop {
        for &i in &watched {
            if !when.contains_key(&i) && done(&members[i].view.borrow().live) {
                when.insert(i, t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        if when.len() == watched.len() {
            // Held once by each: all must hold now too (no flapping back).
            if watched
                .iter()
                .all(|&i| done(&members[i].view.borrow().live))
            {
                return Ok(when.into_values().collect());
            }
            when.retain(|&i, _| done(&members[i].view.borrow().live));
        }
        if std::env::var_os("SCALE_DEBUG").is_some() && t0.elapsed().as_millis() % 1000 < 2 {
            eprintln!(
                "{:?}: {} of {} hold",
                t0.elapsed(),
                when.len(),
                watched.len()
            );
        }
        if t0.elapsed() > SETTLE_TIMEOUT {
            let missing: Vec<&str> = watched
                .iter()
                .filter(|i| !when.contains_key(i))
                .take(5)
                .map(|&i| members[i].name.as_str())
                .collect();
            bail!("after {SETTLE_TIMEOUT:?}, e.g. {missing:?} still disagree");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn summary(all: &[f64], each: &[f64]) -> serde_json::Value {
    if all.is_empty() {
        return serde_json::Value::Null;
    }
    json!({
        "trials": all.len(),
        "all_members_ms": {"p50": percentile(all, 50.0), "p99": percentile(all, 99.0), "max": max(all)},
        "each_member_ms": {"p50": percentile(each, 50.0), "p99": percentile(each, 99.0)},
    })
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

fn nft(script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("running nft (silence trials need nftables and root)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("nft -f - failed ({status}) on:\n{script}");
    }
    Ok(())
}

/// Each member holds a UDP socket, a TCP listener and about eight lifeline connections.
#[allow(unsafe_code)]
fn raise_fd_limit(members: usize) -> Result<()> {
    let want = (members as u64) * 16 + 1024;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                bail!("setrlimit: {}", std::io::Error::last_os_error());
            }
        }
    }
    if limit.rlim_cur < want {
        bail!(
            "{members} members need {want} file descriptors; the hard limit is {}",
            limit.rlim_max
        );
    }
    Ok(())
}
