//! The footprint figure: 1,000 Services (one owned address each) created at once, then, once
//! the speakers and every object they watch have been still for 5 s, each speaker's memory,
//! idle CPU and wake-ups, and the API writes of a steady-state window (with the controller's
//! writes and the watched objects that changed meanwhile, so a busy speaker can be told apart
//! from a busy cluster).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_tests::l2lab::{Rig, announced};
use ferrolb_tests::scenario::ingress;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::ListParams;
use serde::Serialize;
use serde_json::json;

use super::super::procfs::{self, Threads, quiesce, round3};
use super::metrics::{controller_writes, metric, speaker_writes};
use super::{LOAD_POOL, NODES, Params, speaker_pids};

/// One speaker's footprint.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpeakerFootprint {
    /// Its node.
    pub node: String,
    /// Its pid.
    pub pid: u32,
    /// `ferrolb_speaker_owned_ips`.
    pub owned_ips: f64,
    /// Settled, before the ARP load: VmRSS, MiB.
    pub vm_rss_mib: f64,
    /// RssAnon, MiB.
    pub rss_anon_mib: f64,
    /// RssFile, MiB.
    pub rss_file_mib: f64,
    /// Proportional set size (shared pages split among their users), MiB.
    pub pss_mib: f64,
    /// VmHWM (peak so far), MiB.
    pub vm_hwm_mib: f64,
    /// CPU seconds (user + system) over the idle window.
    pub idle_cpu_s: f64,
    /// The same as a share of one CPU, %.
    pub idle_cpu_percent: f64,
    /// Context switches per second over the idle window, all threads (how often it wakes).
    pub idle_wakeups_per_s: f64,
    /// CPU seconds over the idle window per thread name (threads of one name summed).
    pub idle_cpu_by_thread: BTreeMap<String, f64>,
    /// API writes since the speaker started (failover trials included).
    pub api_writes_since_start: f64,
    /// API writes from the first Service's create until settled (a condition and an Event per
    /// owned Service is the expected count).
    pub api_writes_creating: f64,
    /// API writes in the writes window.
    pub api_writes_in_window: f64,
    /// VmRSS after the ARP load, MiB.
    pub vm_rss_after_load_mib: f64,
    /// VmHWM after the ARP load, MiB.
    pub vm_hwm_after_load_mib: f64,
}

/// The footprint figure.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Footprint {
    /// Services (one address each) present.
    pub ips: usize,
    /// Sum of owned addresses over the speakers (more than `ips`: two owners somewhere).
    pub owned_total: f64,
    /// Services whose `ferrolb.io/Announced` condition is True.
    pub announced_services: usize,
    /// Creating the Services until every speaker's writes and every watched object were still for
    /// 5 s, s.
    pub settle_s: f64,
    /// Per speaker.
    pub speakers: Vec<SpeakerFootprint>,
    /// Idle window, s.
    pub idle_window_s: f64,
    /// Writes window, s.
    pub writes_window_s: f64,
    /// API writes of all speakers in the window.
    pub api_writes_in_window: f64,
    /// The same per minute.
    pub api_writes_per_minute: f64,
    /// Objects the speakers watch that changed during the writes window, by kind
    /// (resourceVersion compared before and after): each change wakes every speaker.
    pub window_object_changes: BTreeMap<String, usize>,
    /// The controller's API writes during the writes window.
    pub window_controller_writes: f64,
    /// Oddities seen while measuring. None are looked for any more: this held the failures of a
    /// second, HTTP/1.0 scrape that the testbed used to make; the field keeps report.json's
    /// shape.
    pub notes: Vec<String>,
}

/// Creates the Services, waits until they are announced and the speakers are still, then
/// measures memory, idle CPU and API writes. Returns the owned addresses too.
pub(super) async fn measure_footprint(
    rig: &mut Rig,
    params: &Params,
) -> Result<(Footprint, Vec<Ipv4Addr>)> {
    rig.pool_and_advertisement("bench-load", &[LOAD_POOL], json!({}))
        .await?;
    let writes_at_start: Vec<f64> = (0..NODES)
        .map(|i| speaker_writes(rig, i))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let names: Vec<String> = (0..params.ips).map(|i| format!("lb-{i:04}")).collect();
    let scenario = &rig.scenario;
    futures::stream::iter(&names)
        .map(|name| async move {
            scenario
                .service(
                    name,
                    json!({"spec": {"allocateLoadBalancerNodePorts": false}}),
                )
                .await
                .with_context(|| format!("creating Service {name}"))
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;

    // Every Service has an address and is announced.
    let services = rig.scenario.services();
    let deadline = Instant::now() + Duration::from_secs(300);
    let (ips, announced_count) = loop {
        let list = services.list(&ListParams::default()).await?;
        let mut ips: Vec<Ipv4Addr> = list
            .items
            .iter()
            .filter(|s| names.contains(s.metadata.name.as_ref().unwrap_or(&String::new())))
            .flat_map(|s| ingress(s).into_iter().filter_map(|ip| ip.parse().ok()))
            .collect();
        ips.sort();
        ips.dedup();
        let announced_count = list
            .items
            .iter()
            .filter(|s: &&Service| announced(s).is_some_and(|c| c.status == "True"))
            .count();
        if ips.len() >= params.ips && announced_count >= params.ips {
            break (ips, announced_count);
        }
        if Instant::now() > deadline {
            bail!(
                "after 300 s only {} of {} Services have an address and {announced_count} are announced",
                ips.len(),
                params.ips
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    // Settled: owned addresses add up, no speaker wrote anything and no watched object changed
    // for 5 s. kube-controller-manager creates the Services' EndpointSlices at its own pace
    // (client QPS 20: about 50 s for 1,000), and every slice written wakes every speaker.
    let mut last: Option<(Vec<f64>, BTreeMap<String, String>)> = None;
    let mut still_since = Instant::now();
    loop {
        let mut writes = Vec::new();
        let mut owned = 0.0;
        for i in 0..NODES {
            writes.push(speaker_writes(rig, i)?);
            owned += metric(rig, i, "ferrolb_speaker_owned_ips")?;
        }
        let now = (writes, watched_versions(&rig.scenario.client).await?);
        if last.as_ref() != Some(&now) || owned < params.ips as f64 {
            last = Some(now);
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_secs(5) {
            break;
        }
        if started.elapsed() > Duration::from_secs(420) {
            bail!(
                "the speakers and the objects they watch did not settle within 420 s (owned {owned}, writes {:?})",
                last.map(|l| l.0)
            );
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let settle_s = round3(started.elapsed().as_secs_f64());
    eprintln!("    settled after {settle_s} s; measuring idle CPU and API writes");
    quiesce(Duration::from_secs(30)).await;

    let pids = speaker_pids(rig)?;
    let mut speakers: Vec<SpeakerFootprint> = Vec::new();
    for (i, (node, pid)) in pids.iter().enumerate() {
        let m = procfs::memory(*pid);
        speakers.push(SpeakerFootprint {
            node: node.clone(),
            pid: *pid,
            owned_ips: metric(rig, i, "ferrolb_speaker_owned_ips")?,
            vm_rss_mib: round3(m.vm_rss_mib),
            rss_anon_mib: round3(m.rss_anon_mib),
            rss_file_mib: round3(m.rss_file_mib),
            pss_mib: procfs::pss_mib(*pid),
            vm_hwm_mib: round3(m.vm_hwm_mib),
            api_writes_since_start: speaker_writes(rig, i)?,
            ..Default::default()
        });
        let last = speakers.last_mut().expect("just pushed");
        last.api_writes_creating = last.api_writes_since_start - writes_at_start[i];
    }
    let writes_before: Vec<f64> = speakers.iter().map(|s| s.api_writes_since_start).collect();
    let objects_before = watched_versions(&rig.scenario.client).await?;
    let controller_before = controller_writes();
    let window_started = Instant::now();
    let cpu_before: Vec<f64> = pids
        .iter()
        .map(|(_, pid)| procfs::cpu_seconds(&pid.to_string()))
        .collect();
    let threads_before: Vec<Threads> = pids.iter().map(|(_, pid)| procfs::threads(*pid)).collect();
    tokio::time::sleep(Duration::from_secs_f64(params.idle_window_s)).await;
    let idle_s = window_started.elapsed().as_secs_f64();
    for (((s, (_, pid)), before), threads_before) in speakers
        .iter_mut()
        .zip(&pids)
        .zip(cpu_before)
        .zip(threads_before)
    {
        s.idle_cpu_s = round3(procfs::cpu_seconds(&pid.to_string()) - before);
        s.idle_cpu_percent = round3(100.0 * s.idle_cpu_s / idle_s);
        let after = procfs::threads(*pid);
        s.idle_wakeups_per_s = round3((after.switches - threads_before.switches) as f64 / idle_s);
        for (name, cpu) in after.cpu_s {
            let used = cpu - threads_before.cpu_s.get(&name).copied().unwrap_or(0.0);
            s.idle_cpu_by_thread.insert(name, round3(used));
        }
    }
    let rest = params.writes_window_s - window_started.elapsed().as_secs_f64();
    if rest > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(rest)).await;
    }
    let writes_s = window_started.elapsed().as_secs_f64();
    let objects_after = watched_versions(&rig.scenario.client).await?;
    let window_controller_writes = controller_writes() - controller_before;
    let mut window_object_changes: BTreeMap<String, usize> = BTreeMap::new();
    for (key, version) in &objects_after {
        if objects_before.get(key) != Some(version) {
            let kind = key.split('/').next().unwrap_or("?").to_string();
            *window_object_changes.entry(kind).or_default() += 1;
        }
    }
    for key in objects_before.keys() {
        if !objects_after.contains_key(key) {
            let kind = key.split('/').next().unwrap_or("?").to_string();
            *window_object_changes.entry(kind).or_default() += 1;
        }
    }
    let mut in_window = 0.0;
    for (i, s) in speakers.iter_mut().enumerate() {
        s.api_writes_in_window = speaker_writes(rig, i)? - writes_before[i];
        in_window += s.api_writes_in_window;
    }
    let footprint = Footprint {
        ips: ips.len(),
        owned_total: speakers.iter().map(|s| s.owned_ips).sum(),
        announced_services: announced_count,
        settle_s,
        speakers,
        idle_window_s: round3(idle_s),
        writes_window_s: round3(writes_s),
        api_writes_in_window: in_window,
        api_writes_per_minute: round3(in_window * 60.0 / writes_s),
        window_object_changes,
        window_controller_writes,
        notes: Vec::new(),
    };
    Ok((footprint, ips))
}

/// `Kind/namespace/name` -> resourceVersion of every object the speakers watch.
async fn watched_versions(client: &kube::Client) -> Result<BTreeMap<String, String>> {
    use ferrolb_crds::{IPAddressPool, L2Advertisement};
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let mut out = BTreeMap::new();
    versions::<Service>(client, "Service", &mut out).await?;
    versions::<EndpointSlice>(client, "EndpointSlice", &mut out).await?;
    versions::<Node>(client, "Node", &mut out).await?;
    versions::<IPAddressPool>(client, "IPAddressPool", &mut out).await?;
    versions::<L2Advertisement>(client, "L2Advertisement", &mut out).await?;
    Ok(out)
}

/// Adds `kind/namespace/name` -> resourceVersion of every `K` in the cluster to `out`.
async fn versions<K>(
    client: &kube::Client,
    kind: &str,
    out: &mut BTreeMap<String, String>,
) -> Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use kube::ResourceExt;
    for o in kube::Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        let key = format!(
            "{kind}/{}/{}",
            o.meta().namespace.as_deref().unwrap_or(""),
            o.meta().name.as_deref().unwrap_or("")
        );
        out.insert(key, o.resource_version().unwrap_or_default());
    }
    Ok(())
}
