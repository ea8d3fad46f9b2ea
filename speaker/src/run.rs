//! The speaker's main loop: caches and membership in, plan, announcer and status writer out.
//!
//! ```text
//!  watch events ─┐                      ┌─> Announcer::apply (owned addresses, at once)
//!  live view ────┼─> Snapshot ─> plan ──┤
//!                │  (pure)     (pure)   └─> StatusWriter (conditions + Events, on change only)
//!  Nodes ────────┴─> membership peers
//!  plan's addresses + interfaces ──> KernelWatch (does the kernel answer for them itself?)
//! ```
//!
//! Without `CAP_NET_RAW` the speaker cannot answer at all: it then stays out of the membership
//! (so no peer counts on it), reports not ready, sets `missing_capability`, says in an error
//! line what to change, and tries again every [`CAPABILITY_RETRY`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use ferrolb_controller::http::HealthState;
use kube::Client;
use tracing::{error, info, warn};

use crate::announce::{self, Announcer};
use crate::eligibility::Interfaces;
use crate::hazard::watch::{Handled, KernelWatch};
use crate::membership::{self, Membership, ViewSource};
use crate::metrics::{CapabilityLabels, Metrics};
use crate::model::Snapshot;
use crate::plan::{self, Decision};
use crate::privilege::{Privileges, why_no_packet_sockets};
use crate::report;
use crate::sources::Sources;
use crate::status_writer::StatusWriter;

/// How the speaker runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's name (the Node object's).
    pub node: String,
    /// `spec.loadBalancerClass` handled; `None`: Services without a class.
    pub lb_class: Option<String>,
    /// Membership port (every speaker uses the same).
    pub memberlist_port: u16,
    /// Shared membership key.
    pub memberlist_key: Vec<u8>,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is dead.
    pub dead_after: Duration,
    /// Announcer settings.
    pub announce: announce::Config,
    /// How often the node's addresses and ARP sysctls are checked (also on every address
    /// change): does the kernel answer for a LoadBalancer address itself?
    pub kernel_check_interval: Duration,
}

/// Pause between attempts to open raw sockets while they are refused.
pub const CAPABILITY_RETRY: Duration = Duration::from_secs(30);

/// The readiness reason while raw sockets are refused.
pub const NOT_READY_NO_NET_RAW: &str =
    "cannot open raw packet sockets (CAP_NET_RAW missing); see the speaker's log";

/// Runs until `shutdown` completes, then leaves the membership (peers take over at once) and
/// stops answering.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Metrics,
    membership_metrics: membership::Metrics,
    health: HealthState,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let Some(announcer) = start_announcer(&config, &metrics, &health, &mut shutdown).await? else {
        return Ok(());
    };
    let (sources, mut changes, _watches) = Sources::start(&client);
    health.set_not_ready("caches not synced");
    tokio::select! {
        () = sources.synced() => {}
        () = &mut shutdown => return Ok(()),
    }
    info!("caches synced");

    // Membership speaks the family of this node's first InternalIP.
    let own = sources.own_addresses(&config.node);
    let v4 = own.first().is_none_or(IpAddr::is_ipv4);
    if own.is_empty() {
        warn!(node = %config.node, "the Node object has no InternalIP (or does not exist); peers cannot be told apart from us by address");
    }
    let bind = if v4 {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.memberlist_port))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, config.memberlist_port))
    };
    let mut mcfg = membership::Config::new(&config.node, bind, config.memberlist_key.clone());
    mcfg.interval = config.heartbeat_interval;
    mcfg.dead_after = config.dead_after;
    let (membership, mut live) = Membership::start(mcfg, membership_metrics)
        .await
        .with_context(|| format!("starting membership on {bind}"))?;
    membership.set_peers(sources.peers(&config.node, config.memberlist_port, v4));
    health.set_ready();

    let mut writer = StatusWriter::new(client.clone(), config.node.clone(), metrics.clone());
    let kernel = KernelWatch::start(
        config.node.clone(),
        config.kernel_check_interval,
        client.clone(),
        sources.services.clone(),
        metrics.clone(),
    );
    let mut peers = sources.peers(&config.node, config.memberlist_port, v4);
    let mut last_source = ViewSource::Mesh;
    let mut last_live = BTreeSet::new();
    // The last input planned from: Node heartbeats and unrelated Service edits change objects
    // without changing the snapshot, and need no new plan. The snapshot is only rebuilt when a
    // watch reported a change (25 ms at 10,000 Services): a peer's death replans from the last
    // one, so failover does not pay for reading the caches.
    let mut snapshot = Snapshot::default();
    let mut snapshot_generation = 0u64;
    let mut sources_changed = true;
    // (snapshot generation, live speakers) of the last plan.
    let mut planned: Option<(u64, BTreeSet<String>)> = None;
    let mut force = false;
    let mut last_wanted = BTreeMap::new();
    let mut links_changed = announcer.links_changed();
    // (snapshot generation, interfaces) the kernel check was last given.
    let mut kernel_checked: Option<(u64, Vec<String>)> = None;
    loop {
        let view = live.borrow_and_update().clone();
        if view.source != last_source {
            last_source = view.source.clone();
            warn!(source = ?view.source, "liveness source changed");
        }
        let joined: Vec<&String> = view.live.difference(&last_live).collect();
        let rejoined = !last_live.is_empty() && !joined.is_empty();
        if !joined.is_empty() {
            info!(peers = ?joined, live = view.live.len(), "speakers joined");
        }
        for gone in last_live.difference(&view.live) {
            info!(peer = %gone, live = view.live.len(), "speaker gone");
        }
        last_live = view.live.clone();
        if sources_changed {
            sources_changed = false;
            let fresh = sources.snapshot(config.lb_class.as_deref());
            if fresh != snapshot {
                snapshot = fresh;
                snapshot_generation += 1;
            }
        }
        let input = (snapshot_generation, view.live.clone());
        if force || planned.as_ref() != Some(&input) {
            force = false;
            let plan = plan::plan(&snapshot, &view.live);
            let desired: BTreeMap<IpAddr, Interfaces> = plan
                .owned_by(&config.node)
                .flat_map(|d| {
                    let interfaces = d
                        .owner
                        .as_ref()
                        .map(|(_, i)| i.clone())
                        .unwrap_or(Interfaces::All);
                    d.group.ips.iter().map(move |ip| (*ip, interfaces.clone()))
                })
                .collect();
            let changed = announcer.apply(&desired);
            if rejoined {
                // Whoever stood in for us while a peer (or we) was cut off may still be in clients'
                // caches: announce what we own again. Cheap, and peers join rarely.
                announcer.reannounce_all();
            }
            for ip in &changed.added {
                info!(%ip, "announcing");
            }
            for ip in &changed.removed {
                info!(%ip, "stopped announcing");
            }
            let wanted = report::wanted(&plan.decisions, &config.node, |d: &Decision| {
                d.owner
                    .as_ref()
                    .map(|(_, i)| announcer.interface_names(i))
                    .unwrap_or_default()
            });
            last_wanted = wanted;
            // The handled addresses depend on the snapshot only, not on who is live: a
            // failover's replan skips this.
            let interfaces = announcer.interface_names(&Interfaces::All);
            let checked = (snapshot_generation, interfaces);
            if kernel_checked.as_ref() != Some(&checked) {
                kernel.update(Handled {
                    ips: plan
                        .decisions
                        .iter()
                        .flat_map(|d| d.group.ips.iter().map(|ip| (*ip, d.group.services.clone())))
                        .collect(),
                    interfaces: checked.1.clone(),
                });
                kernel_checked = Some(checked);
            }
            planned = Some(input);
        }
        // Every time, not only after a new plan: a Service whose condition another speaker
        // overwrote (while this one was cut off) changes nothing in the plan, yet needs a write.
        writer.update(last_wanted.clone(), &sources.services);

        tokio::select! {
            r = changes.changed() => {
                if r.is_err() { anyhow::bail!("the API watches stopped"); }
                sources_changed = true;
                let now = sources.peers(&config.node, config.memberlist_port, v4);
                if now != peers {
                    membership.set_peers(now.clone());
                    peers = now;
                }
            }
            r = live.changed() => {
                if r.is_err() { anyhow::bail!("membership stopped"); }
            }
            () = writer.failed() => force = true,
            r = links_changed.changed() => {
                if r.is_err() { anyhow::bail!("the announcer stopped"); }
                force = true;
            }
            () = &mut shutdown => break,
        }
    }
    info!("leaving: peers take over our addresses now");
    health.set_not_ready("shutting down");
    membership.leave().await;
    drop(announcer);
    Ok(())
}

/// Starts the announcer. While raw sockets are refused (no `CAP_NET_RAW`), says why and what to
/// change, reports not ready and tries again every [`CAPABILITY_RETRY`]; `None` when `shutdown`
/// came first. Other errors end the speaker.
async fn start_announcer(
    config: &Config,
    metrics: &Metrics,
    health: &HealthState,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> anyhow::Result<Option<Announcer>> {
    let missing = metrics.missing_capability.get_or_create(&CapabilityLabels {
        capability: "CAP_NET_RAW",
    });
    missing.set(0);
    loop {
        match Announcer::start(config.announce.clone(), metrics.clone()).await {
            Ok(announcer) => {
                if missing.get() != 0 {
                    info!(node = %config.node, "raw packet sockets open now; answering ARP/NDP");
                    missing.set(0);
                }
                return Ok(Some(announcer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                missing.set(1);
                health.set_not_ready(NOT_READY_NO_NET_RAW);
                let interfaces = match announce::suitable_interfaces(&config.announce.excludes) {
                    Ok(names) if !names.is_empty() => names.join(", "),
                    _ => "no interface yet".to_string(),
                };
                let privileges = Privileges::current();
                error!(
                    node = %config.node,
                    interfaces = %interfaces,
                    capability = "CAP_NET_RAW",
                    uid = privileges.map(|p| p.uid),
                    error = %e,
                    "{}: the speaker cannot open raw packet sockets to answer ARP/NDP on {} ({e}): {}. \
                     Until then this node answers for no LoadBalancer IP, stays out of the \
                     election and reports not ready; retrying every {}s",
                    config.node,
                    interfaces,
                    why_no_packet_sockets(privileges),
                    CAPABILITY_RETRY.as_secs(),
                );
            }
            Err(e) => return Err(e).context("starting the ARP/NDP responders"),
        }
        tokio::select! {
            () = tokio::time::sleep(CAPABILITY_RETRY) => {}
            () = &mut *shutdown => return Ok(None),
        }
    }
}
