//! Process start-up both binaries share: logging and the Tokio runtime ([`run_to_end`]), then the
//! Kubernetes client, the metrics registry and the `/healthz` `/readyz` `/metrics` endpoint
//! ([`Runtime::start`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tracing::{error, info};

use crate::cli::{LogFormat, init_logging};
use crate::health::{self, HealthState};

/// Which Tokio scheduler runs a binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduler {
    /// Every task on the calling thread. For the controller: one state machine and its I/O.
    /// On two workers a third of its CPU in a burst went to waking the other worker (futex,
    /// epoll) and to glibc's allocator locks (`perf`, docs/benchmarks.md).
    CurrentThread,
    /// Two workers: the speaker's membership timers keep running while another task works.
    TwoWorkers,
}

/// Starts logging in `log_format`, runs `main` on a Tokio runtime of `scheduler`, and logs the
/// error `main` ends with, if any, as the last line.
pub fn run_to_end<F>(
    component: &str,
    log_format: LogFormat,
    scheduler: Scheduler,
    main: F,
) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    init_logging(log_format);
    let mut builder = match scheduler {
        Scheduler::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Scheduler::TwoWorkers => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    };
    let result = builder
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?
        .block_on(main);
    if let Err(e) = &result {
        error!(error = format!("{e:#}"), "{component} stopped");
    }
    result
}

/// What a started process has: a client for its cluster and the health state its endpoint
/// serves (not ready until the process says so).
#[derive(Clone)]
pub struct Runtime {
    /// In-cluster configuration, or `KUBECONFIG` / `~/.kube/config`.
    pub client: kube::Client,
    /// Shared with the endpoint: readiness and the metrics registry.
    pub health: HealthState,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

/// How the process secures /metrics (flags both binaries share; each has its own
/// `--metrics-addr` for the plain listener).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct SecureMetricsArgs {
    /// Serve /metrics here instead of on --metrics-addr, over HTTPS, only to callers whose bearer token Kubernetes
    /// allows `get` on the non-resource URL /metrics (TokenReview + SubjectAccessReview).
    #[arg(long)]
    pub secure_metrics_addr: Option<SocketAddr>,
    /// PEM certificate (chain) for --secure-metrics-addr; without it a self-signed one is made
    /// at start.
    #[arg(long, requires = "metrics_tls_key_file")]
    pub metrics_tls_cert_file: Option<PathBuf>,
    /// PEM private key of --metrics-tls-cert-file.
    #[arg(long, requires = "metrics_tls_cert_file")]
    pub metrics_tls_key_file: Option<PathBuf>,
}

impl Runtime {
    /// Connects to the cluster, registers the process's metrics with `register`, and serves
    /// `/healthz` and `/readyz` on `metrics_addr` (`--metrics-addr`), with `/metrics` there too
    /// unless `secure` moves it to an authenticated HTTPS listener; `name` goes into a
    /// self-signed certificate.
    pub async fn start<M>(
        name: &str,
        metrics_addr: SocketAddr,
        secure: &SecureMetricsArgs,
        register: impl FnOnce(&mut Registry) -> M,
    ) -> anyhow::Result<(Runtime, M)> {
        let endpoints = secure;
        let client = crate::client::connect().await?;
        let mut registry = Registry::default();
        let metrics = register(&mut registry);
        let mut health = HealthState::new(Arc::new(registry));
        if let Some(addr) = endpoints.secure_metrics_addr {
            let files = endpoints
                .metrics_tls_cert_file
                .as_deref()
                .zip(endpoints.metrics_tls_key_file.as_deref());
            let tls = crate::secure_metrics::tls::server_config(files, vec![name.to_owned()])?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --secure-metrics-addr {addr}"))?;
            info!(addr = %listener.local_addr()?, self_signed = files.is_none(), "serving /metrics over HTTPS to authorized callers");
            health = health.with_secure_metrics(addr);
            let access = crate::secure_metrics::access::Access::new(client.clone());
            tokio::spawn(crate::secure_metrics::serve(
                listener,
                tls,
                health.clone(),
                access,
            ));
        }
        let addr = metrics_addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding --metrics-addr {addr}"))?;
        info!(addr = %listener.local_addr()?, metrics = endpoints.secure_metrics_addr.is_none(), "serving /healthz, /readyz");
        tokio::spawn(health::serve(listener, health.clone()));
        Ok((Runtime { client, health }, metrics))
    }
}
