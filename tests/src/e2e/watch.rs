//! Watching a change as it happens, not only its end: every state of every Service the
//! apiserver records ([`ServiceWatch`]), and what the LAN sees of each address, over and over
//! ([`LanWatch`]): who answers ARP or NDP for it and whether HTTP gets through.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::probes::{self, EchoAnswer};
use crate::lab::Host;
use crate::process::wait_for;
use answer_capture::AnswerCapture;

mod answer_capture;

/// How long after a request an answer counts as its answer (arping waits 300 ms).
const ANSWER_WINDOW: Duration = Duration::from_millis(350);

/// One state of a Service, as a watch event delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceState {
    /// Since the watch started.
    pub at: Duration,
    /// `ADDED`, `MODIFIED`, `DELETED`.
    pub event: String,
    pub name: String,
    /// `status.loadBalancer.ingress[*].ip`, sorted.
    pub ips: Vec<IpAddr>,
}

/// `kubectl get services -w --output-watch-events` in a namespace, recording every event: the
/// apiserver sends each change of each Service, so a status cleared and written back a moment
/// later shows up, where polling could miss it.
#[derive(Debug)]
pub struct ServiceWatch {
    child: Child,
    reader: JoinHandle<Result<()>>,
    states: Arc<Mutex<Vec<ServiceState>>>,
}

impl ServiceWatch {
    /// Starts the watch and waits until it has delivered the current state of `names`.
    pub fn start(
        kubectl: &Path,
        kubeconfig: &Path,
        namespace: &str,
        names: &[&str],
    ) -> Result<ServiceWatch> {
        let mut child = Command::new(kubectl)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["get", "services", "-n", namespace, "-w"])
            .args(["--output-watch-events", "-o", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting kubectl get services -w")?;
        let stdout = child.stdout.take().context("kubectl's stdout")?;
        let states = Arc::new(Mutex::new(Vec::new()));
        let sink = states.clone();
        let started = Instant::now();
        let reader = std::thread::spawn(move || -> Result<()> {
            let events = serde_json::Deserializer::from_reader(BufReader::new(stdout));
            for event in events.into_iter::<Value>() {
                let event = event.context("reading kubectl's watch output")?;
                let state = parse_event(&event, started.elapsed())?;
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(state);
            }
            Ok(())
        });
        let watch = ServiceWatch {
            child,
            reader,
            states,
        };
        wait_for(
            "the Service watch to deliver every Service",
            Duration::from_secs(30),
            || {
                let seen = watch.states();
                Ok(names
                    .iter()
                    .all(|n| seen.iter().any(|s| s.name == *n))
                    .then_some(()))
            },
        )?;
        Ok(watch)
    }

    /// Every state so far.
    pub fn states(&self) -> Vec<ServiceState> {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the watch; every state it saw. Fails if kubectl stopped watching on its own (the
    /// record would have a hole).
    pub fn stop(mut self) -> Result<Vec<ServiceState>> {
        if let Some(status) = self.child.try_wait()? {
            bail!("kubectl get services -w ended on its own ({status}): the record has a hole");
        }
        self.child.kill()?;
        self.child.wait()?;
        let states = self.states.clone();
        match self.reader.join() {
            Ok(result) => result?,
            Err(_) => bail!("the watch reader panicked"),
        }
        let states = states.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(states)
    }
}

fn parse_event(event: &Value, at: Duration) -> Result<ServiceState> {
    let object = &event["object"];
    let name = object["metadata"]["name"]
        .as_str()
        .with_context(|| format!("a watch event without a name: {event}"))?;
    let mut ips = object["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str())
        .map(|ip| {
            ip.parse()
                .with_context(|| format!("Service {name}: ingress IP {ip:?}"))
        })
        .collect::<Result<Vec<IpAddr>>>()?;
    ips.sort();
    Ok(ServiceState {
        at,
        event: event["type"].as_str().unwrap_or_default().to_string(),
        name: name.to_string(),
        ips,
    })
}

/// Each state of a Service of `expected` that does not show exactly its expected IPs, in words.
pub fn ip_deviations(
    states: &[ServiceState],
    expected: &BTreeMap<String, Vec<IpAddr>>,
) -> Vec<String> {
    states
        .iter()
        .filter_map(|s| {
            let want = expected.get(&s.name)?;
            let mut want = want.clone();
            want.sort();
            (s.ips != want).then(|| {
                format!(
                    "{:.3} s: Service {} {} with IPs {:?}, expected {:?}",
                    s.at.as_secs_f64(),
                    s.name,
                    s.event,
                    s.ips,
                    want
                )
            })
        })
        .collect()
}

/// One look at one address from the LAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Look {
    /// Since the watch started.
    pub at: Duration,
    pub ip: IpAddr,
    pub port: u16,
    /// The MAC of every answer to one request (an ARP request by arping, an NDP solicitation
    /// by ndisc6): the replies and advertisements addressed to the client within
    /// [`ANSWER_WINDOW`], from the capture ([`answer_capture`]). Two different MACs mean two
    /// nodes answered one request. `None` until the watch stops and fills it in.
    pub answers: Option<Vec<String>>,
    /// The echo answer to one HTTP request, or why there was none.
    pub http: Result<String, String>,
}

/// A thread in the client namespace that, round after round, asks who has each address (one
/// ARP request or NDP solicitation) and sends each address one HTTP request; the answers are
/// read from a capture ([`answer_capture`]).
#[derive(Debug)]
pub struct LanWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Look>>,
    capture: AnswerCapture,
    started: SystemTime,
}

impl LanWatch {
    /// Starts looking at `targets` (address, port) from `client` through `interface`; the
    /// answers are captured into `pcap`.
    pub fn start(
        client: Host,
        interface: &str,
        targets: Vec<(IpAddr, u16)>,
        pcap: &Path,
    ) -> Result<LanWatch> {
        let capture = AnswerCapture::start(&client, interface, pcap)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let interface = interface.to_string();
        let (started, wall) = (Instant::now(), SystemTime::now());
        let thread = std::thread::spawn(move || {
            let mut looks = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                for &(ip, port) in &targets {
                    let at = started.elapsed();
                    ask_neighbours(&client, &interface, ip);
                    let http = get(&client, ip, port);
                    looks.push(Look {
                        at,
                        ip,
                        port,
                        answers: None,
                        http,
                    });
                }
            }
            looks
        });
        Ok(LanWatch {
            stop,
            thread,
            capture,
            started: wall,
        })
    }

    /// Stops after the current round; every look, its answers filled in from the capture.
    pub fn stop(self) -> Result<Vec<Look>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut looks = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the LAN watch panicked"))?;
        let answers = self.capture.stop()?;
        let started = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        for look in &mut looks {
            let sent = started + look.at.as_secs_f64();
            look.answers = Some(answer_capture::answers_to(
                &answers,
                look.ip,
                sent,
                ANSWER_WINDOW,
            ));
        }
        Ok(looks)
    }
}

/// Asks who has `ip`: one ARP request (arping) or NDP solicitation (ndisc6). Their output is
/// not read: the answers come from the capture.
fn ask_neighbours(client: &Host, interface: &str, ip: IpAddr) {
    let target = ip.to_string();
    let (program, args): (&str, Vec<&str>) = match ip {
        IpAddr::V4(_) => (
            "arping",
            vec!["-i", interface, "-c", "1", "-W", "0.3", &target],
        ),
        IpAddr::V6(_) => (
            "ndisc6",
            vec!["-m", "-n", "-r", "1", "-w", "300", &target, interface],
        ),
    };
    let _ = client
        .command(program)
        .args(&args)
        .stdin(Stdio::null())
        .output();
}

/// One HTTP request with a 1 s limit: the echo answer, or the error.
fn get(client: &Host, ip: IpAddr, port: u16) -> Result<String, String> {
    let out = client
        .command("curl")
        .args(["-sS", "--max-time", "1", &probes::url(ip, port)])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let body = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    EchoAnswer::parse(body.trim())
        .map(|a| format!("pod {} on {}", a.pod, a.node))
        .map_err(|e| e.to_string())
}

/// What a [`LanWatch`] saw, per address.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LanSummary {
    /// Looks in all.
    pub looks: usize,
    /// Each ARP request or NDP solicitation answered by more than one node (different MACs), in
    /// words.
    pub double_answers: Vec<String>,
    /// Requests answered more than once by one MAC (two responders on one node, or a reply
    /// repeated).
    pub repeated_replies: usize,
    /// Per address: the longest run of looks nobody answered, from the first unanswered look to
    /// the next answered one.
    pub longest_silence: BTreeMap<IpAddr, Duration>,
    /// Each HTTP request that failed, in words.
    pub http_failures: Vec<String>,
    /// Per address: the MACs that answered, in the order they took over.
    pub owners: BTreeMap<IpAddr, Vec<String>>,
}

fn http_failure(look: &Look, error: &str) -> String {
    format!(
        "{:.3} s: {}: {error}",
        look.at.as_secs_f64(),
        probes::url(look.ip, look.port)
    )
}

/// Sums up `looks` (pure).
pub fn summarize(looks: &[Look]) -> LanSummary {
    let mut summary = LanSummary {
        looks: looks.len(),
        ..LanSummary::default()
    };
    let mut silent_since: BTreeMap<IpAddr, Duration> = BTreeMap::new();
    for look in looks {
        let Some(answers) = &look.answers else {
            if let Err(e) = &look.http {
                summary.http_failures.push(http_failure(look, e));
            }
            continue;
        };
        let mut macs = answers.clone();
        macs.sort();
        macs.dedup();
        if macs.len() < answers.len() {
            summary.repeated_replies += 1;
        }
        if macs.len() > 1 {
            summary.double_answers.push(format!(
                "{:.3} s: {} answered by {:?}",
                look.at.as_secs_f64(),
                look.ip,
                answers
            ));
        }
        match answers.first() {
            None => {
                silent_since.entry(look.ip).or_insert(look.at);
            }
            Some(mac) => {
                if let Some(since) = silent_since.remove(&look.ip) {
                    let silence = look.at - since;
                    let longest = summary.longest_silence.entry(look.ip).or_default();
                    *longest = (*longest).max(silence);
                }
                let owners = summary.owners.entry(look.ip).or_default();
                if owners.last() != Some(mac) {
                    owners.push(mac.clone());
                }
            }
        }
        if let Err(e) = &look.http {
            summary.http_failures.push(http_failure(look, e));
        }
    }
    for (ip, since) in silent_since {
        let last = looks.last().map_or(since, |l| l.at);
        let longest = summary.longest_silence.entry(ip).or_default();
        *longest = (*longest).max(last - since);
    }
    summary
}

#[cfg(test)]
mod tests;
