//! The speaker's end-to-end rig: a lab of node namespaces with backends, one real
//! `ferrolb-speaker` per node (under the chart's RBAC), the shared controller of this test
//! binary, and the client-side probes (kernel neighbour cache, curl, arping, ndisc6, captures).
//!
//! ```text
//!  Scenario (exclusive controller, own namespace) ─┐
//!  Lab node1..N + client ── backends + DNAT ───────┼─ Rig
//!  Speaker per node (KUBECONFIG = speaker SA) ─────┘
//! ```

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_crds::L2Advertisement;
use ferrolb_crds::contract::{condition, label};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

use crate::backend::Backends;
use crate::control_plane::{self};
use crate::lab::{Host, Lab};
use crate::process::run;
use crate::rbac;
use crate::scenario::Scenario;
use crate::speaker::{Speaker, SpeakerOptions, write_key_file};

/// How long the rig waits for the network to settle.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A lab with speakers, on top of a controller scenario.
pub struct Rig {
    /// The controller scenario (namespace, client, Services).
    pub scenario: Scenario,
    /// The lab (dropped last: it removes the namespaces).
    pub lab: Lab,
    /// One slot per node; `None` while that node's speaker is stopped.
    pub speakers: Vec<Option<Speaker>>,
    _backends: Backends,
    dir: PathBuf,
    kubeconfig: PathBuf,
    key_file: PathBuf,
    speaker_args: Vec<String>,
    /// Run speakers as uid 65534 with CAP_NET_RAW only.
    pub unprivileged: bool,
}

impl std::fmt::Debug for Rig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rig")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Rig {
    /// Builds the lab (`nodes` nodes), registers the Nodes, deletes every L2Advertisement left by
    /// an earlier test, starts the backends and one speaker per node with `speaker_args`, and
    /// waits until all are ready.
    pub async fn start(
        name: &str,
        nodes: usize,
        speaker_args: &[&str],
        unprivileged: bool,
    ) -> Result<Rig> {
        let scenario = Scenario::start(name).await?;
        let lab = tokio::task::spawn_blocking(move || Lab::create(nodes)).await??;
        lab.register_nodes(&scenario.client).await?;
        reset_nodes(&scenario.client, &lab).await?;
        let ads: Api<L2Advertisement> = Api::all(scenario.client.clone());
        for ad in ads.list(&ListParams::default()).await? {
            if let Some(n) = ad.metadata.name {
                ads.delete(&n, &DeleteParams::default()).await?;
            }
        }
        let cp = control_plane::shared();
        let dir = control_plane::process_dir().join(format!("rig-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        // Reachable by the unprivileged speaker's uid (it reads its copies from below here).
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let kubeconfig = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                rbac::speaker_kubeconfig(cp, "lab", "ferrolb-system", &dir)
            })
            .await??
        };
        let key_file = dir.join("memberlist.key");
        write_key_file(&key_file)?;
        let backends = Backends::start(lab.nodes(), &dir, false)?;
        let mut rig = Rig {
            scenario,
            speakers: (0..nodes).map(|_| None).collect(),
            lab,
            _backends: backends,
            dir,
            kubeconfig,
            key_file,
            speaker_args: speaker_args.iter().map(|s| s.to_string()).collect(),
            unprivileged,
        };
        for i in 0..nodes {
            rig.start_speaker(i)?;
        }
        for i in 0..nodes {
            rig.speaker(i)?.wait_ready(TIMEOUT)?;
        }
        Ok(rig)
    }

    /// Starts (or restarts) the speaker of node index `i` (0-based) and waits for /healthz.
    pub fn start_speaker(&mut self, i: usize) -> Result<()> {
        let host = self.lab.nodes()[i].clone();
        let mut opts = SpeakerOptions::new(
            &host,
            &self.kubeconfig,
            &self.key_file,
            self.dir.join(format!("speaker-{}.log", host.name)),
        );
        opts.extra_args = self.speaker_args.clone();
        opts.unprivileged = self.unprivileged;
        self.speakers[i] = Some(Speaker::start(&opts)?);
        Ok(())
    }

    /// The membership key file every speaker of the rig reads.
    pub fn key_file(&self) -> &std::path::Path {
        &self.key_file
    }

    /// The running speaker of node index `i`.
    pub fn speaker(&mut self, i: usize) -> Result<&mut Speaker> {
        self.speakers[i]
            .as_mut()
            .with_context(|| format!("the speaker of node{} is not running", i + 1))
    }

    /// The rig's directory (logs, credentials).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Node index of `name` (`node2` -> 1).
    pub fn index_of(&self, name: &str) -> Result<usize> {
        self.lab
            .nodes()
            .iter()
            .position(|h| h.name == name)
            .with_context(|| format!("no lab node {name}"))
    }

    /// The lab host named `name`.
    pub fn host(&self, name: &str) -> Result<&Host> {
        Ok(&self.lab.nodes()[self.index_of(name)?])
    }

    /// Creates an IPAddressPool and an L2Advertisement announcing it (`ad_spec` merged into
    /// `{ipAddressPools: [name]}`).
    pub async fn pool_and_advertisement(
        &self,
        name: &str,
        addresses: &[&str],
        ad_spec: Value,
    ) -> Result<()> {
        self.scenario
            .pool(name, json!({ "addresses": addresses }))
            .await?;
        let mut spec = json!({ "ipAddressPools": [name] });
        if let (Some(base), Some(extra)) = (spec.as_object_mut(), ad_spec.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        let ad: L2Advertisement = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1beta1",
            "kind": "L2Advertisement",
            "metadata": { "name": name },
            "spec": spec,
        }))?;
        Api::<L2Advertisement>::all(self.scenario.client.clone())
            .create(&PostParams::default(), &ad)
            .await
            .with_context(|| format!("creating L2Advertisement {name}"))?;
        Ok(())
    }

    /// The node the speakers' condition on Service `name` says announces it, once it names one
    /// other than `not`.
    pub async fn wait_announcer(&self, name: &str, not: Option<&str>) -> Result<String> {
        self.scenario
            .wait(
                name,
                &format!("{} True (not by {not:?})", condition::ANNOUNCED),
                |svc| {
                    let c = announced(svc)?;
                    let node = c.message.split_whitespace().next()?.to_string();
                    (c.status == "True" && Some(node.as_str()) != not).then_some(node)
                },
            )
            .await
    }

    /// The speakers' condition on Service `name`, once its status is `status`.
    pub async fn wait_announced(&self, name: &str, status: &str) -> Result<Condition> {
        self.scenario
            .wait(name, &format!("{} {status}", condition::ANNOUNCED), |svc| {
                announced(svc).filter(|c| c.status == status).cloned()
            })
            .await
    }

    /// Runs `program args` in the client namespace.
    pub fn client(&self, program: &str, args: &[&str]) -> Result<String> {
        self.lab.client().exec(program, args)
    }

    /// The MAC the client's kernel has for `ip` (any state but FAILED/INCOMPLETE), if any.
    pub fn client_neighbour(&self, ip: IpAddr) -> Result<Option<String>> {
        let out = self.client("ip", &["neigh", "show", &ip.to_string(), "dev", "eth0"])?;
        Ok(out
            .split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(str::to_lowercase))
    }

    /// Forgets the client's neighbour entry for `ip`.
    pub fn flush_client_neighbour(&self, ip: IpAddr) -> Result<()> {
        let _ = self.client(
            "ip",
            &["neigh", "flush", "to", &ip.to_string(), "dev", "eth0"],
        );
        Ok(())
    }

    /// `curl http://ip/` from the client: the answering node's name.
    pub fn curl(&self, ip: IpAddr) -> Result<String> {
        let url = match ip {
            IpAddr::V4(v4) => format!("http://{v4}/"),
            IpAddr::V6(v6) => format!("http://[{v6}]/"),
        };
        Ok(self
            .client("curl", &["-sS", "--max-time", "2", &url])?
            .trim()
            .to_string())
    }

    /// Curls `ip` until the answer satisfies `ok` or `timeout` passes; returns the last answer.
    pub fn curl_until(
        &self,
        ip: IpAddr,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.curl(ip) {
                Ok(answer) if ok(&answer) => return Ok(answer),
                Ok(answer) => last = answer,
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("curl {ip}: no satisfying answer within {timeout:?}; last: {last}")
    }

    /// `arping` from the client: the MAC of every reply to `count` requests.
    pub fn arping(&self, ip: IpAddr, count: u32) -> Result<Vec<String>> {
        let out = self
            .lab
            .client()
            .command("arping")
            .args([
                "-i",
                "eth0",
                "-c",
                &count.to_string(),
                "-W",
                "0.2",
                &ip.to_string(),
            ])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| l.split_whitespace().nth(3))
            .map(str::to_lowercase)
            .collect())
    }

    /// `ndisc6 -m` from the client: the target link-layer address of every advertisement.
    pub fn ndisc6(&self, ip: IpAddr) -> Result<Vec<String>> {
        let out = self
            .lab
            .client()
            .command("ndisc6")
            .args(["-m", "-n", "-r", "1", "-w", "500", &ip.to_string(), "eth0"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter(|l| l.contains("Target link-layer address"))
            .filter_map(|l| l.split_whitespace().last())
            .map(str::to_lowercase)
            .collect())
    }

    /// Starts a capture in the client namespace (`tcpdump -w`), stopped by [`Capture::finish`];
    /// returns once tcpdump listens.
    pub fn capture(&self, filter: &str) -> Result<Capture> {
        let name = control_plane::unique_name("capture");
        let file = self.dir.join(format!("{name}.pcap"));
        let log = self.dir.join(format!("{name}.log"));
        let child = self
            .lab
            .client()
            .command("tcpdump")
            // Immediate mode: without it, frames wait in the kernel's capture ring for up to a
            // second and the ones still there when tcpdump is stopped are lost (seen: an empty
            // capture of an arping whose three replies had arrived).
            .args(["-i", "eth0", "--immediate-mode", "-U", "-n", "-w"])
            .arg(&file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting tcpdump")?;
        let capture = Capture { child, file };
        // tcpdump says "listening on" once the capture runs.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)?.contains("listening on") {
            if Instant::now() > deadline {
                bail!("tcpdump did not start: {}", std::fs::read_to_string(&log)?);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(capture)
    }

    /// The speaker metric `sample` on node index `i` (0 when absent).
    pub fn metric(&mut self, i: usize, sample: &str) -> Result<f64> {
        Ok(self.speaker(i)?.metric(sample)?.unwrap_or(0.0))
    }

    /// Requests of `protocol` (`arp` or `ndp`) that reached the responders of every node but
    /// `owner` without being for an address that node announces: 0 while the kernel filters
    /// narrow each socket to its owned addresses (the lab's own ARP and NDP for node addresses
    /// would otherwise wake every speaker).
    pub fn not_owned_requests_elsewhere(&mut self, owner: &str, protocol: &str) -> Result<f64> {
        let sample = format!("ferrolb_speaker_requests_not_owned_total{{protocol=\"{protocol}\"}}");
        let owner = self.index_of(owner)?;
        let mut total = 0.0;
        for i in 0..self.speakers.len() {
            if i != owner && self.speakers[i].is_some() {
                total += self.metric(i, &sample)?;
            }
        }
        Ok(total)
    }
}

/// A running packet capture.
#[derive(Debug)]
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    /// Stops the capture and returns `tshark -T fields -e <fields>` over it, one line per frame.
    pub fn finish(mut self, display_filter: &str, fields: &[&str]) -> Result<Vec<String>> {
        std::thread::sleep(Duration::from_millis(200));
        // SIGINT makes tcpdump flush and close the file.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let mut cmd = Command::new("tshark");
        cmd.args(["-r"])
            .arg(&self.file)
            .args(["-Y", display_filter, "-T", "fields"]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        Ok(run(&mut cmd)?.lines().map(str::to_string).collect())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes labels and conditions earlier tests put on the lab Nodes.
async fn reset_nodes(client: &kube::Client, lab: &Lab) -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Patch, PatchParams};
    let api: Api<Node> = Api::all(client.clone());
    for host in lab.nodes() {
        let labels = json!({ "metadata": { "labels": {
            "kubernetes.io/hostname": host.name,
            "ferrolb.io/lab-node": "true",
            (label::EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS): null,
            "ferrolb.io/role": null,
        }}});
        api.patch(&host.name, &PatchParams::default(), &Patch::Merge(&labels))
            .await?;
    }
    // Nodes of an earlier, larger rig would still count as Ready peers (the membership falls
    // back to Node readiness) and win addresses no speaker answers for.
    let ours: Vec<&str> = lab.nodes().iter().map(|h| h.name.as_str()).collect();
    let labelled = api
        .list(&ListParams::default().labels("ferrolb.io/lab-node=true"))
        .await?;
    for node in labelled.items {
        let name = node.metadata.name.unwrap_or_default();
        if !ours.contains(&name.as_str()) {
            api.delete(&name, &DeleteParams::default()).await?;
        }
    }
    lab.register_nodes(client).await?;
    Ok(())
}

/// The speakers' condition on `svc`.
pub fn announced(svc: &Service) -> Option<&Condition> {
    ferrolb_crds::service_condition(svc, condition::ANNOUNCED)
}

/// An nftables table installed in lab node namespaces while it lives, deleted on drop (also when
/// the test fails): the tests' way to drop chosen traffic in chosen nodes.
#[derive(Debug)]
pub struct NodeFirewall {
    table: &'static str,
    nodes: Vec<String>,
}

impl NodeFirewall {
    /// Installs `table inet <table> { <chains> }` in each of `nodes` (namespace names).
    pub fn new(nodes: &[String], table: &'static str, chains: &str) -> Result<NodeFirewall> {
        let firewall = NodeFirewall {
            table,
            nodes: nodes.to_vec(),
        };
        let rules = format!("table inet {table} {{\n{chains}\n}}\n");
        for n in nodes {
            crate::process::run_input(
                Command::new("ip").args(["netns", "exec", n, "nft", "-f", "-"]),
                &rules,
            )?;
        }
        Ok(firewall)
    }

    /// Drops `matching` packets (an nftables match) both sent and received, in every one of
    /// `nodes`, as a filter table named `table`.
    pub fn drop_both_ways(
        nodes: &[String],
        table: &'static str,
        sent: &str,
        received: &str,
    ) -> Result<NodeFirewall> {
        let chains = format!(
            " chain out {{\n  type filter hook output priority 0;\n  {sent} drop\n }}\n chain in {{\n  type filter hook input priority 0;\n  {received} drop\n }}"
        );
        NodeFirewall::new(nodes, table, &chains)
    }
}

impl Drop for NodeFirewall {
    fn drop(&mut self) {
        for n in &self.nodes {
            let _ = Command::new("ip")
                .args([
                    "netns", "exec", n, "nft", "delete", "table", "inet", self.table,
                ])
                .status();
        }
    }
}

/// A partition between lab nodes and the apiserver at `server` (`https://ip:port`), both ways,
/// while it lives: the nodes still reach each other and the client.
pub fn cut_from_apiserver(nodes: &[String], server: &str) -> Result<NodeFirewall> {
    let authority = server.trim_start_matches("https://").trim_end_matches('/');
    let (ip, port) = authority
        .rsplit_once(':')
        .with_context(|| format!("no port in {server}"))?;
    NodeFirewall::drop_both_ways(
        nodes,
        "ferrolb_apiblock",
        &format!("ip daddr {ip} tcp dport {port}"),
        &format!("ip saddr {ip} tcp sport {port}"),
    )
}
