//! `/metrics` over HTTPS for callers Kubernetes allows, and no one else.
//!
//! ```text
//!  scraper --TLS (tls.rs: given or self-signed certificate)--> GET /metrics
//!          Authorization: Bearer <token>
//!            -> access.rs: TokenReview (who?) + SubjectAccessReview (get /metrics?)
//!               cached 30 s, at most 10 new tokens reviewed per second (cache.rs)
//!            -> 200 metrics | 401 no or invalid token | 403 not allowed
//!               | 429 review budget spent | 503 apiserver unreachable
//! ```
//!
//! The speaker serves on the host network, so without this anyone on the node's LAN could read
//! every Service's name and address from its metrics. `/healthz` and `/readyz` stay on the plain
//! listener ([`crate::health`]) for the kubelet's probes; they tell nothing about the cluster.

pub mod access;
pub mod cache;
pub mod tls;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::health::{self, HealthState};
use access::{Access, AccessError, bearer_token};
use cache::Decision;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `state`'s metrics on `listener` over TLS with `tls`, to callers `access` allows.
/// Like [`health::serve`], it does not return in practice.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: HealthState,
    access: Access,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let stream = health::accept(&listener).await;
        let (acceptor, state, access) = (acceptor.clone(), state.clone(), access.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "metrics TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = service_fn(move |req| {
                let (state, access) = (state.clone(), access.clone());
                async move { Ok::<_, Infallible>(respond(&req, &state, &access).await) }
            });
            let served = health::http1_server()
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

async fn respond(
    req: &Request<Incoming>,
    state: &HealthState,
    access: &Access,
) -> Response<String> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return health::text(StatusCode::METHOD_NOT_ALLOWED, "use GET".into());
    }
    if req.uri().path() != access::PATH {
        return health::text(StatusCode::NOT_FOUND, "not found; try /metrics".into());
    }
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let Some(token) = token else {
        return unauthorized("a bearer token is required (Authorization: Bearer <token>)");
    };
    match access.check(token).await {
        Ok(Decision::Allowed { .. }) => health::metrics(state),
        Ok(Decision::Unauthenticated) => unauthorized("the token is not valid"),
        Ok(Decision::Forbidden { user, reason }) => {
            tracing::debug!(%user, %reason, "refused a metrics scrape");
            health::text(
                StatusCode::FORBIDDEN,
                format!("{user} may not get {}: {reason}", access::PATH),
            )
        }
        Err(AccessError::Throttled) => health::text(
            StatusCode::TOO_MANY_REQUESTS,
            AccessError::Throttled.to_string(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a metrics scraper's token");
            health::text(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

fn unauthorized(why: &str) -> Response<String> {
    let mut response = health::text(StatusCode::UNAUTHORIZED, format!("unauthorized: {why}"));
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
