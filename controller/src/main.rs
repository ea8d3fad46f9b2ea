//! `ferrolb-controller`: allocates EXTERNAL-IPs from `IPAddressPool`s to LoadBalancer Services.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ferrolb_controller::metrics::Metrics;
use ferrolb_controller::reconcile::{self, Config};
use ferrolb_runtime::cli::{LogFormat, parse_duration};
use ferrolb_runtime::lease::LeaseConfig;
use ferrolb_runtime::{Runtime, Scheduler, SecureMetricsArgs, run_to_end, shutdown_signal};

#[derive(Debug, Parser)]
#[command(
    name = "ferrolb-controller",
    version,
    about = "ferrolb controller: allocates LoadBalancer IPs from IPAddressPools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller (in-cluster, or with KUBECONFIG / ~/.kube/config).
    Run(Box<RunArgs>),
    /// Print every ferrolb CustomResourceDefinition as a YAML stream (`... crds | kubectl apply -f -`).
    Crds,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Handle Services with this spec.loadBalancerClass (default: only Services without a class).
    #[arg(long)]
    lb_class: Option<String>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "ferrolb-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "ferrolb-controller")]
    lease_name: String,
    /// This replica's identity in the Lease and in Events (default: POD_NAME, else host-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Act at once without a Lease (only safe with a single replica).
    #[arg(long)]
    no_leader_election: bool,
    /// How long a standby waits after the leader's last renewal before taking over.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// How long a leader keeps acting without renewing (below --lease-duration).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    renew_deadline: Duration,
    /// Pause between Lease attempts.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    retry_period: Duration,
    /// Address for /healthz and /readyz, and /metrics unless --secure-metrics-addr is set.
    #[arg(long, default_value = "0.0.0.0:7472")]
    metrics_addr: SocketAddr,
    #[command(flatten)]
    secure_metrics: SecureMetricsArgs,
    /// Status writes in flight at once.
    // 128: in a burst of 10,000 the writes then took 14.2 s against 15.6 s at 32, as the
    // apiserver and etcd batch more per commit (docs/benchmarks.md). API Priority and
    // Fairness still queues them behind other clients' requests.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds => {
            let yaml = ferrolb_crds::crd::all_yaml()?;
            std::io::stdout().lock().write_all(yaml.as_bytes())?;
            Ok(())
        }
        Command::Run(args) => {
            // Before the runtime's threads exist: one arena, so freed memory is in one place for
            // malloc_trim (the controller allocates little per second; contention is negligible).
            ferrolb_controller::memory::limit_arenas(1);
            run_to_end(
                "controller",
                args.log_format,
                Scheduler::CurrentThread,
                run(*args),
            )
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.renew_deadline >= args.lease_duration {
        anyhow::bail!(
            "--renew-deadline ({:?}) must be shorter than --lease-duration ({:?})",
            args.renew_deadline,
            args.lease_duration
        );
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let (runtime, metrics) = Runtime::start(
        "ferrolb-controller",
        args.metrics_addr,
        &args.secure_metrics,
        Metrics::register,
    )
    .await?;
    let lease = (!args.no_leader_election).then(|| LeaseConfig {
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
        ..LeaseConfig::new(&args.lease_namespace, &args.lease_name, &identity)
    });
    let config = Config {
        lb_class: args.lb_class,
        lease,
        concurrency: args.concurrency.max(1),
        identity,
    };
    reconcile::run(
        runtime.client,
        config,
        metrics,
        runtime.health,
        shutdown_signal(),
    )
    .await
}
