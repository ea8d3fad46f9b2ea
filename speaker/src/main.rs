//! `ferrolb-speaker`: answers ARP and NDP for the LoadBalancer IPs this node owns.
//! Needs CAP_NET_RAW and nothing else (without it: an error line saying what to change, not
//! ready, and retries; see [`ferrolb_speaker::run`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrolb_runtime::cli::{LogFormat, parse_duration};
use ferrolb_runtime::{Runtime, Scheduler, SecureMetricsArgs, run_to_end, shutdown_signal};
use ferrolb_speaker::announce;
use ferrolb_speaker::membership;
use ferrolb_speaker::metrics::Metrics;
use ferrolb_speaker::netio::links::{DEFAULT_EXCLUDES, Excludes};
use ferrolb_speaker::run::{self, Config};
use tracing::info;

#[derive(Debug, Parser)]
#[command(
    name = "ferrolb-speaker",
    version,
    about = "ferrolb speaker: answers ARP and NDP for the LoadBalancer IPs its node owns"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the speaker (in a Pod with hostNetwork, or with KUBECONFIG).
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// This node's name, as in its Node object.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// File holding the shared membership key (at least 16 bytes), e.g. mounted from a Secret.
    /// Read again every 2 s: a new key is rotated to without a restart.
    #[arg(long, env = "FERROLB_MEMBERLIST_KEY_FILE")]
    memberlist_key_file: PathBuf,
    /// After a new key appears in the key file: how long both keys are accepted before this
    /// speaker signs with the new one, and again before the old one is retired. Must exceed the
    /// spread of the moments the nodes see the new Secret (the kubelet's sync period, ~1 min).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    memberlist_key_rotation_window: Duration,
    /// UDP port of the membership heartbeats (the same on every node).
    #[arg(long, default_value_t = 7946)]
    memberlist_port: u16,
    /// Interval between heartbeats to each peer.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    heartbeat_interval: Duration,
    /// Silence after which a peer counts as dead and its addresses move.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    dead_after: Duration,
    /// Interval of the periodic gratuitous re-announcement.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    refresh_interval: Duration,
    /// Most responder threads per interface and protocol. Up to this, one per CPU, each pinned
    /// to its CPU and handed the requests that CPU receives (PACKET_FANOUT_CPU), so answering
    /// needs no wake-up of another CPU. 1: a single unpinned thread.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    responder_threads: u16,
    /// Handle Services with this spec.loadBalancerClass (default: only Services without one).
    #[arg(long)]
    lb_class: Option<String>,
    /// Interface name patterns never answered on (comma-separated, `*` wildcards).
    #[arg(long, default_value = DEFAULT_EXCLUDES)]
    exclude_interfaces: String,
    /// How often to check whether this node's kernel answers ARP/NDP itself for a LoadBalancer
    /// IP (an address on kube-ipvs0 or lo with arp_ignore=0); also checked on every address
    /// change.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    kernel_check_interval: Duration,
    /// Address for /healthz and /readyz, and /metrics unless --secure-metrics-addr is set.
    #[arg(long, default_value = "0.0.0.0:7473")]
    metrics_addr: SocketAddr,
    #[command(flatten)]
    secure_metrics: SecureMetricsArgs,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run_to_end(
            "speaker",
            args.log_format,
            Scheduler::TwoWorkers,
            start(args),
        ),
    }
}

async fn start(args: RunArgs) -> anyhow::Result<()> {
    let key = membership::read_key_file(&args.memberlist_key_file).with_context(|| {
        format!(
            "--memberlist-key-file {}",
            args.memberlist_key_file.display()
        )
    })?;
    if args.dead_after <= args.heartbeat_interval {
        anyhow::bail!(
            "--dead-after ({:?}) must be longer than --heartbeat-interval ({:?})",
            args.dead_after,
            args.heartbeat_interval
        );
    }
    if args.kernel_check_interval < Duration::from_millis(100) {
        anyhow::bail!(
            "--kernel-check-interval ({:?}) must be at least 100ms",
            args.kernel_check_interval
        );
    }
    let (runtime, (metrics, membership_metrics)) = Runtime::start(
        "ferrolb-speaker",
        args.metrics_addr,
        &args.secure_metrics,
        |r| (Metrics::register(r), membership::Metrics::register(r)),
    )
    .await?;
    info!(node = %args.node_name, "speaker starting");

    let mut announce = announce::Config::new(Excludes::parse(&args.exclude_interfaces));
    announce.refresh = args.refresh_interval;
    announce.responder_threads = usize::from(args.responder_threads);
    let config = Config {
        node: args.node_name,
        lb_class: args.lb_class,
        memberlist_port: args.memberlist_port,
        memberlist_key: key,
        memberlist_key_file: Some(args.memberlist_key_file),
        key_rotation_window: args.memberlist_key_rotation_window,
        heartbeat_interval: args.heartbeat_interval,
        dead_after: args.dead_after,
        announce,
        kernel_check_interval: args.kernel_check_interval,
    };
    run::run(
        runtime.client,
        config,
        metrics,
        membership_metrics,
        runtime.health,
        shutdown_signal(),
    )
    .await
}
