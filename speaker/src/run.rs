//! The speaker's main loop (I/O): feeds watch changes, live views and write failures to the
//! pure [`Replanner`] and carries out each step it returns.
//!
//! ```text
//!  watch events ──> sources.rs: Snapshot, peers ─┐
//!  live view (membership) ───────────────────────┼─> replan.rs ──> Announcer::apply (at once)
//!  writer failed, interfaces changed: force ─────┘   (plan.rs)  ├─> KernelWatch (hazard/)
//!                                                               ├─> StatusWriter (conditions)
//!                                                               └─> Membership::set_peers
//! ```
//!
//! Without `CAP_NET_RAW` the speaker cannot answer at all: it then stays out of the membership
//! (so no peer counts on it), reports not ready, sets `missing_capability`, says in an error
//! line what to change, and tries again every [`CAPABILITY_RETRY`].

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use ferrolb_runtime::health::HealthState;
use kube::Client;
use tracing::{error, info, warn};

use crate::announce::{self, Announcer};
use crate::bgp::speaker::BgpSpeaker;
use crate::hazard::watch::KernelWatch;
use crate::membership::{self, Membership};
use crate::metrics::{CapabilityLabels, Metrics};
use crate::privilege::{Privileges, why_no_packet_sockets};
use crate::replan::Replanner;
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
    /// Where the key came from, read again for rotations (`None`: the key never changes).
    pub memberlist_key_file: Option<std::path::PathBuf>,
    /// See [`membership::Config::key_rotation_window`].
    pub key_rotation_window: Duration,
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
    // Shared by the membership (which opens and closes it) and the announcer (which obeys it).
    let fence = membership::Fence::new(std::time::Instant::now());
    let mut config = config;
    config.announce.fence = fence.clone();
    let Some(announcer) = start_announcer(&config, &metrics, &health, &mut shutdown).await? else {
        return Ok(());
    };
    let (sources, mut changes, _watches) = Sources::start(&client, &health);
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
    mcfg.key_file = config.memberlist_key_file.clone();
    mcfg.key_rotation_window = config.key_rotation_window;
    mcfg.fence = fence;
    let (membership, mut live) = Membership::start(mcfg, membership_metrics)
        .await
        .with_context(|| format!("starting membership on {bind}"))?;
    let peers = sources.peers(&config.node, config.memberlist_port, v4);
    membership.set_peers(peers.clone());
    let (page_node, page_view) = (config.node.clone(), live.clone());
    health.set_page(ferrolb_crds::membership_view::PATH, move || {
        membership::page(&page_node, &page_view.borrow())
    });
    health.set_ready();

    let mut writer = StatusWriter::new(client.clone(), config.node.clone(), metrics.clone());
    let kernel = KernelWatch::start(
        config.node.clone(),
        config.kernel_check_interval,
        client.clone(),
        sources.services.clone(),
        metrics.clone(),
    );
    let mut replanner = Replanner::new(config.node.clone(), peers);
    let mut slice_index = crate::sources::SliceIndex::default();
    let mut links_changed = announcer.links_changed();
    let mut fence_lifted = membership.fence_lifted();
    let mut bgp = BgpSpeaker::new(config.node.clone(), client.clone(), metrics.bgp.clone());
    // Passwords from Secrets are read again this often, even when nothing else changes.
    let mut bgp_refresh = tokio::time::interval(crate::bgp::secrets::REFRESH);
    let mut secrets_read = bgp.secrets_read();
    let mut bgp_due = true;
    // What changed in the snapshot since BGP last looked.
    let mut bgp_delta = crate::model::SnapshotDelta::default();
    // Each node's entry in BGPPeer.status.sessions follows its sessions within a second.
    let mut bgp_report = tokio::time::interval(Duration::from_secs(1));
    loop {
        let view = live.borrow_and_update().clone();
        if replanner.snapshot_stale() {
            bgp_delta.merge(replanner.update_snapshot(|snapshot| {
                sources.refresh(snapshot, &mut slice_index, config.lb_class.as_deref())
            }));
            bgp_due = true;
        }
        if bgp_due {
            bgp.update(replanner.snapshot(), &std::mem::take(&mut bgp_delta));
            bgp_due = false;
        }
        let links = announcer.interface_names();
        let step = replanner.step(&view, &links);
        if let Some(source) = &step.source_changed {
            warn!(?source, "liveness source changed");
        }
        if !step.joined.is_empty() {
            info!(peers = ?step.joined, live = view.live.len(), "speakers joined");
        }
        for gone in &step.gone {
            info!(peer = %gone, live = view.live.len(), "speaker gone");
        }
        if let Some(replan) = step.replan {
            let changed = announcer.apply(&replan.desired);
            if replan.reannounce {
                announcer.reannounce_all();
            }
            for ip in &changed.added {
                info!(%ip, "announcing");
            }
            for ip in &changed.removed {
                info!(%ip, "stopped announcing");
            }
            if let Some(handled) = replan.kernel {
                kernel.update(handled);
            }
        }
        writer.update(replanner.wanted().clone(), &sources.services);
        let unannounced = replanner
            .wanted()
            .values()
            .filter(|w| w.status != "True")
            .count();
        metrics.services_unannounced.set(unannounced as i64);

        tokio::select! {
            r = changes.changed() => {
                if r.is_err() { anyhow::bail!("the API watches stopped"); }
                replanner.sources_changed();
                // Only Node events change the peers (the journal keeps the flag until the
                // snapshot is refreshed at the top of the loop).
                if sources.nodes_changed() {
                    let peers = sources.peers(&config.node, config.memberlist_port, v4);
                    if let Some(peers) = replanner.peers_read(peers) {
                        membership.set_peers(peers);
                    }
                }
            }
            r = live.changed() => {
                if r.is_err() { anyhow::bail!("membership stopped"); }
            }
            () = writer.failed() => replanner.force(),
            r = fence_lifted.changed() => {
                if r.is_err() { anyhow::bail!("membership stopped"); }
                // Peers stood in for this speaker while it was fenced; clients still point at them.
                announcer.reannounce_all();
            }
            r = links_changed.changed() => {
                if r.is_err() { anyhow::bail!("the announcer stopped"); }
                replanner.force();
            }
            _ = bgp_refresh.tick() => bgp_due = true,
            r = secrets_read.changed() => {
                if r.is_ok() { bgp_due = true; }
            }
            _ = bgp_report.tick() => bgp.report(),
            () = &mut shutdown => break,
        }
    }
    info!("leaving: peers take over our addresses now");
    health.set_not_ready("shutting down");
    bgp.shutdown().await;
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
