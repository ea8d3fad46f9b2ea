//! The Kubernetes client both binaries use: kube's default stack over TCP connections that notice
//! a silent apiserver within seconds.
//!
//! kube's own builder (`kube::Client::try_default`) connects with a 30 s connect timeout and no
//! TCP keepalive: a watch whose apiserver vanished without a FIN or RST (a node cut off by a
//! partition, a crashed host) waits for a packet that never comes, up to kube's 295 s read
//! timeout, and a reconnect during a partition waits 30 s for its SYN. It has no knob for socket
//! options, so this module builds the same layers (TLS, base URI, authentication, extra headers,
//! retry of 429/503/504, with a shorter backoff) over its own `HttpConnector`:
//! - keepalive probes after [`KEEPALIVE_IDLE`] of silence, every [`KEEPALIVE_INTERVAL`], and
//!   `TCP_USER_TIMEOUT` [`USER_TIMEOUT`]: a dead connection fails within ~10 s, its watch errors
//!   and is restarted on a new connection (see [`crate::watch`]);
//! - connect timeout [`CONNECT_TIMEOUT`]: during an outage each reconnect attempt ends quickly, so
//!   the next one (at most a second later) finds the apiserver as soon as it is back.
//!
//! The probes cost one empty segment per idle connection every few seconds, handled by the
//! kernels on both ends.

use std::time::Duration;

use anyhow::Context;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

/// How long a TCP connect to the apiserver may take (two SYNs on Linux).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Silence on a connection after which the kernel starts keepalive probes.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(3);
/// Time between keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long sent data or probes may stay unacknowledged before the kernel closes the connection.
pub const USER_TIMEOUT: Duration = Duration::from_secs(7);

/// Requests answered 429, 503 or 504 are retried after 50 ms doubling to at most 1 s (or the
/// server's `Retry-After`), eight times. kube's default policy doubles to 1,000 s over 15
/// retries: a request made while an apiserver starts could wait minutes.
fn retry_policy() -> RetryPolicy {
    RetryPolicy::new(Duration::from_millis(50), Duration::from_secs(1), 8, true)
        .expect("50 ms to 1 s is a valid backoff")
}

/// A client for the cluster: in-cluster configuration, or `KUBECONFIG` / `~/.kube/config`.
pub async fn connect() -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes client configuration: run in a Pod or set KUBECONFIG")?;
    from_config(config)
}

/// A client for `config` over connections with the socket options above.
pub fn from_config(config: kube::Config) -> anyhow::Result<kube::Client> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_keepalive(Some(KEEPALIVE_IDLE));
    http.set_keepalive_interval(Some(KEEPALIVE_INTERVAL));
    http.set_tcp_user_timeout(Some(USER_TIMEOUT));
    let https = config
        .rustls_https_connector_with_connector(http)
        .context("TLS configuration for the apiserver")?;
    let hyper_client =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(retry_policy())),
        )
        .option_layer(config.auth_layer().context("client credentials")?)
        .layer(
            config
                .extra_headers_layer()
                .context("impersonation headers")?,
        )
        .map_err(BoxError::from)
        .service(hyper_client);
    Ok(kube::Client::new(service, config.default_namespace))
}
