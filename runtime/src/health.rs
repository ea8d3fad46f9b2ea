//! The probe and metrics endpoint: `/healthz`, `/readyz`, `/metrics` over HTTP/1.1.
//!
//! `/healthz` says the process serves requests; `/readyz` says whether it is ready (caches synced,
//! no watch down for longer than [`WATCH_DOWN_GRACE`]), with the reason when not; `/metrics` is
//! the Prometheus registry in OpenMetrics text. A binary may add read-only JSON pages of its own
//! ([`HealthState::set_page`]), such as the speaker's `/membership`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The reason `/readyz` gives until [`HealthState::set_ready`] is called.
pub const NOT_SYNCED: &str = "caches not synced";

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// How long a watch may fail before `/readyz` says so. Shorter outages (an apiserver rolling
/// over, a leader change of etcd) pass without flapping readiness.
pub const WATCH_DOWN_GRACE: Duration = Duration::from_secs(5);

/// What the endpoint reports: readiness and the metrics registry. Cheap to clone; clones share
/// state, so the reconciler keeps one to flip readiness and [`serve`] gets another.
#[derive(Clone, Debug)]
pub struct HealthState {
    readiness: Arc<Mutex<Readiness>>,
    registry: Arc<Registry>,
    /// Where `/metrics` is served securely instead ([`crate::secure_metrics`]); the plain
    /// listener then refuses it.
    secure_metrics: Option<std::net::SocketAddr>,
    /// Extra JSON pages by path.
    pages: Arc<Mutex<BTreeMap<&'static str, Page>>>,
}

/// A page's body, made at each request.
#[derive(Clone)]
struct Page(Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Page")
    }
}

#[derive(Debug, Default)]
struct Readiness {
    /// `None` when the process says it is ready, else why not.
    not_ready: Option<String>,
    /// Each live watch, by name: since when and with what error it fails, if it does.
    watches: BTreeMap<&'static str, Option<(Instant, String)>>,
}

impl Readiness {
    /// `Ok` when ready at `now`, else the reason.
    fn check(&self, now: Instant) -> Result<(), String> {
        if let Some(reason) = &self.not_ready {
            return Err(reason.clone());
        }
        for (name, down) in &self.watches {
            if let Some((since, error)) = down {
                let down_for = now.saturating_duration_since(*since);
                if down_for > WATCH_DOWN_GRACE {
                    return Err(format!(
                        "cannot reach the apiserver for {}s ({name}: {error})",
                        down_for.as_secs()
                    ));
                }
            }
        }
        Ok(())
    }
}

impl HealthState {
    /// Not ready ([`NOT_SYNCED`]) and serving `registry`: register metrics before this.
    pub fn new(registry: Arc<Registry>) -> Self {
        HealthState {
            readiness: Arc::new(Mutex::new(Readiness {
                not_ready: Some(NOT_SYNCED.to_owned()),
                watches: BTreeMap::new(),
            })),
            registry,
            secure_metrics: None,
            pages: Arc::default(),
        }
    }

    /// Serves `body()` as JSON at `path` from now on (replacing an earlier page there).
    pub fn set_page(&self, path: &'static str, body: impl Fn() -> String + Send + Sync + 'static) {
        self.pages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path, Page(Arc::new(body)));
    }

    /// The body of the page at `path`, if there is one.
    fn page(&self, path: &str) -> Option<String> {
        let page = self
            .pages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned()?;
        Some((page.0)())
    }

    /// `/metrics` is served over HTTPS with authentication at `addr`: the plain listener says so
    /// instead of answering it.
    pub fn with_secure_metrics(mut self, addr: std::net::SocketAddr) -> Self {
        self.secure_metrics = Some(addr);
        self
    }

    /// `/readyz` answers 200 from now on, unless a watch is down.
    pub fn set_ready(&self) {
        self.lock().not_ready = None;
    }

    /// `/readyz` answers 503 with `not ready: <reason>` from now on.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        self.lock().not_ready = Some(reason.into());
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.readiness(Instant::now()).is_ok()
    }

    /// `Ok` when `/readyz` answers 200 at `now`, else its reason.
    pub fn readiness(&self, now: Instant) -> Result<(), String> {
        self.lock().check(now)
    }

    /// Tracks the watch `name` (or another standing request to the apiserver, like the Lease)
    /// for readiness, up until it fails, until the returned status is dropped. A second watch of
    /// the same name replaces the first.
    pub fn watch_status(&self, name: &'static str) -> WatchStatus {
        self.lock().watches.insert(name, None);
        WatchStatus {
            health: self.clone(),
            name,
        }
    }

    /// The registry `/metrics` serves.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Readiness> {
        // The guarded value is always valid, even if a holder panicked.
        self.readiness.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One watch's part in readiness; see [`crate::watch::resilient`]. Dropping it forgets the watch.
#[derive(Debug)]
pub struct WatchStatus {
    health: HealthState,
    name: &'static str,
}

impl WatchStatus {
    /// The watch's name, as readiness and logs give it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The watch failed with `error`; true if it was up until now.
    pub fn down(&self, error: &str) -> bool {
        let mut readiness = self.health.lock();
        let entry = readiness.watches.entry(self.name).or_default();
        match entry {
            Some((_, last)) => {
                error.clone_into(last);
                false
            }
            None => {
                *entry = Some((Instant::now(), error.to_owned()));
                true
            }
        }
    }

    /// The watch delivered; how long it had been down, if it was.
    pub fn up(&self) -> Option<Duration> {
        let mut readiness = self.health.lock();
        let entry = readiness.watches.entry(self.name).or_default();
        entry.take().map(|(since, _)| since.elapsed())
    }
}

impl Drop for WatchStatus {
    fn drop(&mut self) {
        self.health.lock().watches.remove(self.name);
    }
}

/// Serves `state` on `listener` forever, one task per connection. Accept errors (a reset
/// connection, running out of file descriptors) are logged and retried, so this does not return
/// in practice; the `Result` lets callers treat it like any other server future.
pub async fn serve(listener: TcpListener, state: HealthState) -> std::io::Result<()> {
    loop {
        let stream = accept(&listener).await;
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = respond(&req, &state);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = http1_server()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

/// The next connection on `listener`. Accept errors (a reset connection, running out of file
/// descriptors) are logged and retried after a moment instead of spinning.
pub(crate) async fn accept(listener: &TcpListener) -> tokio::net::TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The HTTP/1.1 server settings of both listeners: a slow or idle client holds a connection's
/// header read for at most 10 s.
pub(crate) fn http1_server() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    builder
}

fn respond(req: &Request<Incoming>, state: &HealthState) -> Response<String> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok".into()),
        "/readyz" => match state.readiness(Instant::now()) {
            Ok(()) => text(StatusCode::OK, "ready".into()),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}"),
            ),
        },
        "/metrics" => match state.secure_metrics {
            None => metrics(state),
            Some(addr) => text(
                StatusCode::NOT_FOUND,
                format!(
                    "/metrics is served over HTTPS on port {} to callers allowed to get it",
                    addr.port()
                ),
            ),
        },
        path => match state.page(path) {
            Some(body) => with_type(StatusCode::OK, body, JSON),
            None => text(
                StatusCode::NOT_FOUND,
                "not found; try /healthz, /readyz or /metrics".into(),
            ),
        },
    }
}

/// The metrics in OpenMetrics text.
pub(crate) fn metrics(state: &HealthState) -> Response<String> {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, state.registry()) {
        Ok(()) => with_type(StatusCode::OK, body, OPENMETRICS),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        ),
    }
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: String) -> Response<String> {
    with_type(status, body, TEXT)
}

fn with_type(status: StatusCode, body: String, content_type: &'static str) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    struct Server {
        addr: std::net::SocketAddr,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn start(state: HealthState) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Server {
            addr,
            task: tokio::spawn(serve(listener, state)),
        }
    }

    /// A raw HTTP/1.1 exchange: (status, headers lowercased, body).
    async fn get(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_lowercase(), body.to_owned())
    }

    fn registry_with_counter() -> (Arc<Registry>, Counter) {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register(
            "ferrolb_test_events",
            "Events seen by the test",
            counter.clone(),
        );
        (Arc::new(registry), counter)
    }

    #[tokio::test]
    async fn healthz_answers_ok() {
        let (registry, _) = registry_with_counter();
        let server = start(HealthState::new(registry)).await;
        let (status, head, body) = get(server.addr, "GET", "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        assert!(head.contains("content-type: text/plain"), "{head}");
    }

    #[tokio::test]
    async fn readyz_follows_the_state() {
        let (registry, _) = registry_with_counter();
        let state = HealthState::new(registry);
        let server = start(state.clone()).await;

        assert!(!state.is_ready());
        let (status, _, body) = get(server.addr, "GET", "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (503, "not ready: caches not synced")
        );

        state.set_ready();
        assert!(state.is_ready());
        let (status, _, body) = get(server.addr, "GET", "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ready"));

        state.set_not_ready("standing by for the leader Lease");
        let (status, _, body) = get(server.addr, "GET", "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (503, "not ready: standing by for the leader Lease")
        );
    }

    #[test]
    fn a_watch_down_longer_than_the_grace_makes_the_process_not_ready() {
        let (registry, _) = registry_with_counter();
        let state = HealthState::new(registry);
        state.set_ready();
        let services = state.watch_status("Services");
        let _pools = state.watch_status("IPAddressPools");
        assert!(services.down("connection refused"));
        assert!(
            !services.down("connection reset"),
            "second failure is not news"
        );
        let now = Instant::now();
        assert_eq!(state.readiness(now), Ok(()), "within the grace");
        let later = now + WATCH_DOWN_GRACE + Duration::from_secs(2);
        assert_eq!(
            state.readiness(later),
            Err("cannot reach the apiserver for 7s (Services: connection reset)".into())
        );
        assert!(services.up().is_some());
        assert_eq!(services.up(), None, "already up");
        assert_eq!(state.readiness(later), Ok(()));
        // A dropped watch no longer counts, even when it was down.
        services.down("gone");
        drop(services);
        assert_eq!(state.readiness(later), Ok(()));
        // The process's own reason comes first.
        state.set_not_ready("standing by");
        assert_eq!(state.readiness(later), Err("standing by".into()));
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text_with_current_values() {
        let (registry, counter) = registry_with_counter();
        let server = start(HealthState::new(registry)).await;
        counter.inc_by(3);
        let (status, head, body) = get(server.addr, "GET", "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.contains(
                "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"
            ),
            "{head}"
        );
        assert!(
            body.contains("# TYPE ferrolb_test_events counter\n"),
            "{body}"
        );
        assert!(body.contains("ferrolb_test_events_total 3\n"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_refused() {
        let (registry, _) = registry_with_counter();
        let server = start(HealthState::new(registry)).await;
        assert_eq!(get(server.addr, "GET", "/").await.0, 404);
        assert_eq!(get(server.addr, "GET", "/healthz/extra").await.0, 404);
        assert_eq!(get(server.addr, "POST", "/healthz").await.0, 405);
        // HEAD: same status, no body.
        let (status, _, body) = get(server.addr, "HEAD", "/healthz").await;
        assert_eq!((status, body.as_str()), (200, ""));
    }

    #[tokio::test]
    async fn pages_are_json_made_at_each_request() {
        let (registry, _) = registry_with_counter();
        let state = HealthState::new(registry);
        let server = start(state.clone()).await;
        assert_eq!(get(server.addr, "GET", "/membership").await.0, 404);
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = calls.clone();
        state.set_page("/membership", move || {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            format!("{{\"calls\":{n}}}")
        });
        let (status, head, body) = get(server.addr, "GET", "/membership").await;
        assert_eq!((status, body.as_str()), (200, "{\"calls\":1}"));
        assert!(head.contains("content-type: application/json"), "{head}");
        assert_eq!(
            get(server.addr, "GET", "/membership").await.2,
            "{\"calls\":2}"
        );
        assert_eq!(get(server.addr, "POST", "/membership").await.0, 405);
    }

    #[tokio::test]
    async fn serves_concurrent_keep_alive_connections() {
        // An idle keep-alive connection must not block others (one task per connection).
        let (registry, _) = registry_with_counter();
        let server = start(HealthState::new(registry)).await;
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        // Read the first response only; the connection then stays open.
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !seen.ends_with(b"ok") {
            let n = idle.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(seen.starts_with(b"HTTP/1.1 200"));
        assert_eq!(get(server.addr, "GET", "/healthz").await.0, 200);
    }
}
