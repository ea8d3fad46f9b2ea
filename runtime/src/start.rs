//! Process start-up both binaries share: logging and the Tokio runtime ([`run_to_end`]), then the
//! Kubernetes client, the metrics registry and the `/healthz` `/readyz` `/metrics` endpoint
//! ([`Runtime::start`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tracing::{error, info};

use crate::cli::{LogFormat, init_logging};
use crate::health::{self, HealthState};

/// Starts logging in `log_format`, runs `main` on a two-worker Tokio runtime (ferrolb's work is
/// small and mostly waiting), and logs the error `main` ends with, if any, as the last line.
pub fn run_to_end<F>(component: &str, log_format: LogFormat, main: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    init_logging(log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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

impl Runtime {
    /// Connects to the cluster, registers the process's metrics with `register`, and serves
    /// `/healthz`, `/readyz` and `/metrics` on `metrics_addr` (`--metrics-addr`).
    pub async fn start<M>(
        metrics_addr: SocketAddr,
        register: impl FnOnce(&mut Registry) -> M,
    ) -> anyhow::Result<(Runtime, M)> {
        let client = crate::client::connect().await?;
        let mut registry = Registry::default();
        let metrics = register(&mut registry);
        let health = HealthState::new(Arc::new(registry));
        let listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("binding --metrics-addr {metrics_addr}"))?;
        info!(addr = %listener.local_addr()?, "serving /healthz, /readyz, /metrics");
        tokio::spawn(health::serve(listener, health.clone()));
        Ok((Runtime { client, health }, metrics))
    }
}
