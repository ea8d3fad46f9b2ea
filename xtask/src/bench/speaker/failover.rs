//! Failover trials: kill the owner's speaker (SIGKILL) or cut the owner's link, and time, from
//! the client namespace, the new owner's first gratuitous ARP and the first HTTP request another
//! node answers. Every trial ends by restoring the lab and waiting until the original owner
//! announces and serves again, so trials are independent.
//!
//! ```text
//!  client ns: tcpdump -j host --time-stamp-precision micro (ARP)   ferrolb-bench-prober (HTTP)
//!                 │ capture stamps, CLOCK_REALTIME                     │ start/end, CLOCK_REALTIME
//!  harness:  t0 = CLOCK_REALTIME ── SIGKILL speaker | ip link set lab0-nX down
//!  GARP time = first gratuitous ARP for the VIP from another MAC after t0, minus t0
//!  HTTP time = end of the first request after t0 answered by another node, minus t0
//! ```

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use ferrolb_tests::Host;
use ferrolb_tests::capture::Tcpdump;
use ferrolb_tests::l2lab::{Rig, TIMEOUT, announced};
use ferrolb_tests::process::run;
use serde::Serialize;
use tokio::task::block_in_place;

use super::super::procfs;
use super::{metrics, pcap};

/// How a trial takes the owner away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// SIGKILL of the owner's speaker (a crash: no goodbye to its peers).
    Kill,
    /// SIGTERM of the owner's speaker: it sends Leave and stops answering.
    Graceful,
    /// `ip link set lab0-nX down` on the host end of the owner's veth (the node drops off the
    /// LAN; its speaker keeps running and, alone, still believes it owns the address).
    LinkDown,
    /// The whole node lost: every process in its namespace frozen with SIGSTOP and its link
    /// down (no kernel closes anything, nothing is sent).
    NodeLoss,
}

impl Action {
    /// What the report calls it.
    pub fn describe(self) -> &'static str {
        match self {
            Action::Kill => "SIGKILL of the owner's speaker",
            Action::Graceful => "SIGTERM of the owner's speaker (graceful stop)",
            Action::LinkDown => "owner's link cut (host veth down)",
            Action::NodeLoss => "owner node lost (all its processes SIGSTOPped, link down)",
        }
    }
}

/// How long a trial waits for another node to answer.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-request timeout of the prober.
const PROBE_TIMEOUT_MS: u32 = 20;
/// The takeover burst lasts 2 s (offsets 0, 250 ms, 1 s, 2 s); a trial starts after it.
const BURST_TAIL: Duration = Duration::from_millis(2500);

/// One trial's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Trial {
    /// The node that announced the VIP before.
    pub owner: String,
    /// The node that answered HTTP afterwards.
    pub new_owner: Option<String>,
    /// Action to the new owner's first gratuitous ARP seen by the client, ms.
    pub garp_ms: Option<f64>,
    /// Node whose MAC sent that gratuitous ARP.
    pub garp_from: Option<String>,
    /// Action to the end of the first request answered by another node, ms.
    pub http_ms: Option<f64>,
    /// Requests that failed (timeout, refused) between the action and that answer.
    pub failed_requests: usize,
    /// Requests the old owner still answered after the action.
    pub old_owner_answers: usize,
    /// Other MACs than the new owner's that announced the VIP meanwhile (should be none).
    pub other_announcers: Vec<String>,
    /// How long the action itself took (the kill and reap, or the `ip` command), ms: the
    /// uncertainty of the action instant.
    pub action_ms: f64,
    /// Share of the machine's CPUs busy during the trial (other sessions' builds included).
    pub machine_busy: f64,
    /// Restoring and waiting for the original owner to serve again, s.
    pub restore_s: f64,
    /// After the restore, the original owner announced and served the VIP again, but the
    /// Service's `ferrolb.io/Announced` condition still named another node 5 s later.
    pub condition_stale_after_restore: bool,
    /// What went wrong, if the trial produced no figure.
    pub error: Option<String>,
}

/// Microseconds since the epoch, `CLOCK_REALTIME` (the clock of tcpdump's `host` stamps and of
/// the prober's lines).
pub(crate) fn realtime_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The address the trials take away: Service `service`'s `vip`, announced by `owner` when
/// every speaker runs.
#[derive(Clone, Debug)]
pub struct Target {
    /// The Service (in the rig's scenario namespace).
    pub service: String,
    /// Its address.
    pub vip: Ipv4Addr,
    /// The node announcing it.
    pub owner: String,
}

/// Runs `trials` trials of `action` against `target`, captures in `dir`.
pub async fn run_trials(
    rig: &mut Rig,
    action: Action,
    target: &Target,
    trials: usize,
    prober_bin: &Path,
    dir: &Path,
) -> Result<Vec<Trial>> {
    let (service, vip, owner) = (target.service.as_str(), target.vip, target.owner.as_str());
    let mut out = Vec::new();
    for n in 0..trials {
        procfs::quiesce(Duration::from_secs(30)).await;
        let capture_file = dir.join(format!("{action:?}-{n:02}.pcap").to_lowercase());
        let trial = trial(rig, action, vip, owner, prober_bin, &capture_file).await;
        let mut trial = match trial {
            Ok(t) => t,
            Err(e) => Trial {
                owner: owner.to_string(),
                error: Some(format!("{e:#}")),
                ..Default::default()
            },
        };
        let restore_started = Instant::now();
        let settled = restore(rig, action, service, vip, owner)
            .await
            .with_context(|| format!("restoring the lab after {action:?} trial {}", n + 1))?;
        trial.condition_stale_after_restore = !settled.condition_current;
        trial.restore_s = procfs::round3(restore_started.elapsed().as_secs_f64());
        eprintln!(
            "    {action:?} trial {}/{trials}: GARP {} ms, HTTP {} ms (new owner {}){}",
            n + 1,
            trial.garp_ms.map_or("-".into(), |v| format!("{v:.1}")),
            trial.http_ms.map_or("-".into(), |v| format!("{v:.1}")),
            trial.new_owner.as_deref().unwrap_or("-"),
            trial
                .error
                .as_deref()
                .map_or(String::new(), |e| format!("; {e}"))
        );
        out.push(trial);
    }
    Ok(out)
}

async fn trial(
    rig: &mut Rig,
    action: Action,
    vip: Ipv4Addr,
    owner: &str,
    prober_bin: &Path,
    capture_file: &Path,
) -> Result<Trial> {
    let i = rig.index_of(owner)?;
    let owner_host = rig.host(owner)?.clone();
    let capture = block_in_place(|| Capture::start(rig.lab.client(), capture_file))?;
    let mut prober = Prober::start(rig.lab.client(), prober_bin, IpAddr::V4(vip))?;
    block_in_place(|| prober.wait_for(0, Duration::from_secs(5), |l| l.ok && l.body == owner))
        .context("the prober never reached the owner before the action")?;

    let busy_before = (procfs::machine_busy_seconds(), Instant::now());
    let t0 = realtime_us();
    match action {
        Action::Kill => {
            rig.speaker(i)?.kill();
        }
        Action::Graceful => {
            let pid = rig.speaker(i)?.pid().to_string();
            run(Command::new("kill").args(["-TERM", &pid]))?;
        }
        Action::LinkDown => {
            run(Command::new("ip").args(["link", "set", &owner_host.host_veth, "down"]))?;
        }
        Action::NodeLoss => {
            signal_namespace(&owner_host.name, "-STOP")?;
            run(Command::new("ip").args(["link", "set", &owner_host.host_veth, "down"]))?;
        }
    }
    let action_ms = (realtime_us() - t0) as f64 / 1000.0;

    let answered = block_in_place(|| {
        prober.wait_for(t0, FAILOVER_TIMEOUT, |l| {
            l.ok && l.body != owner && !l.body.is_empty()
        })
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let machine_busy = (procfs::machine_busy_seconds() - busy_before.0)
        / busy_before.1.elapsed().as_secs_f64().max(1e-3)
        / cores;
    // Let the burst's first rounds reach the capture before stopping it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = prober.stop();
    let frames = block_in_place(|| capture.finish())?;
    if (action == Action::Kill || action == Action::Graceful)
        && let Some(mut speaker) = rig.speakers[i].take()
    {
        speaker.kill();
    }

    let mut trial = Trial {
        owner: owner.to_string(),
        action_ms: procfs::round3(action_ms),
        machine_busy: procfs::round3(machine_busy),
        ..Default::default()
    };
    match answered {
        Ok(line) => {
            trial.http_ms = Some(ms_since(t0, line.end_us));
            trial.new_owner = Some(line.body.clone());
            let before_answer = lines
                .iter()
                .filter(|l| l.end_us > t0 && l.end_us < line.end_us);
            let (failed, old): (Vec<&ProbeLine>, Vec<&ProbeLine>) =
                before_answer.partition(|l| !l.ok);
            trial.failed_requests = failed.len();
            trial.old_owner_answers = old.iter().filter(|l| l.body == owner).count();
        }
        Err(e) => trial.error = Some(format!("{e:#}")),
    }

    let macs: Vec<(String, String)> = rig
        .lab
        .nodes()
        .iter()
        .map(|h| (h.mac.to_lowercase(), h.name.clone()))
        .collect();
    let node_of = |mac: &str| {
        macs.iter()
            .find(|(m, _)| m == mac)
            .map_or_else(|| mac.to_string(), |(_, n)| n.clone())
    };
    let owner_mac = owner_host.mac.to_lowercase();
    let garps: Vec<&pcap::ArpFrame> = frames
        .iter()
        .filter(|f| f.at_us >= t0 && f.is_gratuitous_for(vip) && f.eth_src != owner_mac)
        .collect();
    if let Some(first) = garps.first() {
        trial.garp_ms = Some(ms_since(t0, first.at_us));
        trial.garp_from = Some(node_of(&first.eth_src));
        let mut others: Vec<String> = garps
            .iter()
            .filter(|f| f.eth_src != first.eth_src)
            .map(|f| node_of(&f.eth_src))
            .collect();
        others.sort();
        others.dedup();
        trial.other_announcers = others;
    } else if trial.error.is_none() {
        trial.error = Some(format!(
            "no gratuitous ARP for {vip} from another node was captured ({} ARP frames)",
            frames.len()
        ));
    }
    Ok(trial)
}

fn ms_since(t0_us: u64, at_us: u64) -> f64 {
    procfs::round3((at_us as f64 - t0_us as f64) / 1000.0)
}

/// Brings the owner back and waits until it announces and serves the VIP again, every speaker
/// sees all its peers, and the returning owner's takeover burst is over.
async fn restore(
    rig: &mut Rig,
    action: Action,
    service: &str,
    vip: Ipv4Addr,
    owner: &str,
) -> Result<Settled> {
    let i = rig.index_of(owner)?;
    match action {
        Action::Kill | Action::Graceful => {
            if rig.speakers[i].is_none() {
                block_in_place(|| -> Result<()> {
                    rig.start_speaker(i)?;
                    rig.speaker(i)?.wait_ready(TIMEOUT)
                })?;
            }
        }
        Action::LinkDown => {
            let veth = rig.host(owner)?.host_veth.clone();
            run(Command::new("ip").args(["link", "set", &veth, "up"]))?;
        }
        Action::NodeLoss => {
            let host = rig.host(owner)?.clone();
            run(Command::new("ip").args(["link", "set", &host.host_veth, "up"]))?;
            signal_namespace(&host.name, "-CONT")?;
        }
    }
    settle(rig, service, vip, owner).await
}

/// Sends `signal` (`-STOP`, `-CONT`) to every process in network namespace `ns`.
fn signal_namespace(ns: &str, signal: &str) -> Result<()> {
    let pids = run(Command::new("ip").args(["netns", "pids", ns]))?;
    let pids: Vec<&str> = pids.split_whitespace().collect();
    if pids.is_empty() {
        bail!("no process runs in namespace {ns}");
    }
    // A process may exit meanwhile; the others still get the signal.
    let _ = Command::new("kill").arg(signal).args(&pids).output();
    Ok(())
}

/// What [`settle`] found.
#[derive(Clone, Copy, Debug)]
pub struct Settled {
    /// The Service's condition named the owner within 5 s of everything else being in place.
    pub condition_current: bool,
}

/// How long [`settle`] waits for the condition once the owner announces and serves.
const CONDITION_GRACE: Duration = Duration::from_secs(5);

/// Waits until every speaker sees all the others and holds a lifeline to each, `owner` alone announces (the speakers' own
/// `ferrolb_speaker_owned_ips`: the VIP is the only address while the trials run) and the client
/// reaches `owner` at `vip`; then lets the takeover burst finish. Whether Service `service`'s
/// condition names `owner` is recorded, not required: it is visibility, not the data path.
pub async fn settle(rig: &mut Rig, service: &str, vip: Ipv4Addr, owner: &str) -> Result<Settled> {
    let nodes = rig.lab.nodes().len();
    let owner_index = rig.index_of(owner)?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut all = true;
        for i in 0..nodes {
            let peers = metrics::metric(rig, i, "ferrolb_speaker_live_peers");
            let lifelines = metrics::metric(rig, i, "ferrolb_speaker_membership_lifelines");
            let owned = metrics::metric(rig, i, "ferrolb_speaker_owned_ips");
            let want_owned = if i == owner_index { 1.0 } else { 0.0 };
            all &= peers.is_ok_and(|p| p as usize == nodes - 1);
            all &= lifelines.is_ok_and(|l| l as usize == nodes - 1);
            all &= owned.is_ok_and(|o| o == want_owned);
        }
        if all {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "within {TIMEOUT:?}, the speakers did not all see each other again with {owner} alone announcing"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    block_in_place(|| rig.curl_until(IpAddr::V4(vip), TIMEOUT, |a| a == owner))?;
    let prefix = format!("{owner} announces");
    let services = rig.scenario.services();
    let grace = Instant::now() + CONDITION_GRACE;
    let condition_current = loop {
        let svc = services.get(service).await?;
        if announced(&svc).is_some_and(|c| c.status == "True" && c.message.starts_with(&prefix)) {
            break true;
        }
        if Instant::now() > grace {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(BURST_TAIL).await;
    Ok(Settled { condition_current })
}

/// `tcpdump` of ARP in the client namespace, writing `file`.
pub(crate) struct Capture(Tcpdump);

impl Capture {
    /// Starts the capture in `client`'s namespace; returns once tcpdump says it is listening.
    pub(crate) fn start(client: &Host, file: &Path) -> Result<Capture> {
        Ok(Capture(Tcpdump::start(client, "eth0", file, "arp")?))
    }

    /// Stops tcpdump and reads the ARP frames.
    pub(crate) fn finish(self) -> Result<Vec<pcap::ArpFrame>> {
        pcap::arp_frames(&self.0.stop())
    }
}

/// One line of `ferrolb-bench-prober`.
#[derive(Clone, Debug)]
pub(crate) struct ProbeLine {
    /// When the attempt started, µs since the epoch (`CLOCK_REALTIME`).
    pub(crate) start_us: u64,
    /// When the attempt ended, µs since the epoch (`CLOCK_REALTIME`).
    pub(crate) end_us: u64,
    /// Whether it got an answer.
    pub(crate) ok: bool,
    /// The answer's first word (ok) or the failed stage.
    pub(crate) body: String,
}

fn parse_probe_line(line: &str) -> Option<ProbeLine> {
    let mut words = line.split_whitespace();
    let start_us = words.next()?.parse().ok()?;
    let end_us = words.next()?.parse().ok()?;
    let ok = words.next()? == "ok";
    Some(ProbeLine {
        start_us,
        end_us,
        ok,
        body: words.next().unwrap_or("").to_string(),
    })
}

/// The HTTP prober running in the client namespace, its lines collected by a thread.
pub(crate) struct Prober {
    child: Child,
    lines: Arc<Mutex<Vec<ProbeLine>>>,
}

impl Prober {
    /// Starts `bin` in `client`'s namespace against port 80 of `vip`.
    pub(crate) fn start(client: &Host, bin: &Path, vip: IpAddr) -> Result<Prober> {
        let mut child = client
            .command(bin.to_str().context("prober path is not UTF-8")?)
            .args([
                "--target",
                &std::net::SocketAddr::new(vip, 80).to_string(),
                "--timeout-ms",
                &PROBE_TIMEOUT_MS.to_string(),
                "--for-s",
                "120",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the prober in the client namespace")?;
        let stdout = child.stdout.take().context("the prober's stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(l) = parse_probe_line(&line) {
                        lines.lock().unwrap().push(l);
                    }
                }
            });
        }
        Ok(Prober { child, lines })
    }

    /// The first line ending after `after_us` that satisfies `ok`, waiting up to `timeout`.
    pub(crate) fn wait_for(
        &mut self,
        after_us: u64,
        timeout: Duration,
        ok: impl Fn(&ProbeLine) -> bool,
    ) -> Result<ProbeLine> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.end_us > after_us && ok(l))
            {
                return Ok(l.clone());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the prober exited ({status})");
            }
            if Instant::now() > deadline {
                let last = self.lines.lock().unwrap().last().cloned();
                bail!("no satisfying answer within {timeout:?}; last line: {last:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every line so far.
    pub(crate) fn lines(&self) -> Vec<ProbeLine> {
        self.lines.lock().unwrap().clone()
    }

    /// Stops the prober; every line it printed.
    pub(crate) fn stop(mut self) -> Vec<ProbeLine> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(20));
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prober_lines_are_parsed() {
        let l = parse_probe_line("1700000000000000 1700000000001500 ok node2").unwrap();
        assert!(l.ok);
        assert_eq!(
            (l.end_us, l.body.as_str()),
            (1_700_000_000_001_500, "node2")
        );
        let l = parse_probe_line("1 21000 err connect").unwrap();
        assert!(!l.ok);
        assert_eq!(l.body, "connect");
        assert!(parse_probe_line("garbage").is_none());
    }
}
