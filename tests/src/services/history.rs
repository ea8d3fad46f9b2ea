//! [`IngressHistory`]: every ingress value each Service of a namespace showed, recorded by a
//! chain of watch requests.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchParams};
use kube::core::{Request, WatchEvent};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{Observed, eventually};

/// What a watch saw of one Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Distinct consecutive ingress address lists, first to last (empty included).
    pub ingress: Vec<Vec<IpAddr>>,
    /// MODIFIED events that changed the controller's part (ingress, condition, pool annotation).
    pub status_changes: u32,
    /// Whether the Service was deleted.
    pub deleted: bool,
}

#[derive(Debug, Default)]
struct Recorded {
    services: BTreeMap<String, Seen>,
    last: BTreeMap<String, Observed>,
    resource_version: u64,
    error: Option<String>,
}

/// Watches the Services of one namespace from a point in time on and records, per Service,
/// every ingress value it showed. Runs back-to-back one-second watch requests, each resuming at
/// the last resourceVersion seen, so no event is missed (and the crate needs no stream library).
#[derive(Debug)]
pub struct IngressHistory {
    recorded: Arc<Mutex<Recorded>>,
    task: tokio::task::JoinHandle<()>,
    api: Api<Service>,
}

impl IngressHistory {
    /// Starts recording from now: the current Services are the first values.
    pub async fn start(client: &Client, namespace: &str) -> Result<IngressHistory> {
        let api: Api<Service> = Api::namespaced(client.clone(), namespace);
        let list = api.list(&ListParams::default()).await?;
        let mut recorded = Recorded::default();
        for svc in &list.items {
            recorded.observe(svc, false);
        }
        let rv = list.metadata.resource_version.unwrap_or_default();
        recorded.resource_version = rv.parse().context("a numeric resourceVersion")?;
        let recorded = Arc::new(Mutex::new(recorded));
        let task = tokio::spawn(record(
            client.clone(),
            namespace.to_string(),
            rv,
            recorded.clone(),
        ));
        Ok(IngressHistory {
            recorded,
            task,
            api,
        })
    }

    /// Waits until the recorder has seen every change made before this call: creates a
    /// ClusterIP Service (ignored by the controller) and waits for its event.
    pub async fn sync(&self, timeout: Duration) -> Result<()> {
        let name = format!("sync-{}", crate::control_plane::unique_name("h"));
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"type": "ClusterIP", "ports": [{"port": 1}]},
        }))?;
        let created = self.api.create(&PostParams::default(), &svc).await?;
        let rv: u64 = created.resource_version().unwrap_or_default().parse()?;
        eventually("the watch to catch up", timeout, || async {
            let r = self.recorded.lock().unwrap();
            if let Some(e) = &r.error {
                bail!("the watch failed: {e}");
            }
            Ok(if r.resource_version >= rv {
                Ok(())
            } else {
                Err(format!(
                    "at resourceVersion {}, want {rv}",
                    r.resource_version
                ))
            })
        })
        .await?;
        self.api.delete(&name, &DeleteParams::default()).await?;
        Ok(())
    }

    /// What was seen so far, per Service name (sync helpers excluded).
    pub fn seen(&self) -> BTreeMap<String, Seen> {
        let r = self.recorded.lock().unwrap();
        r.services
            .iter()
            .filter(|(name, _)| !name.starts_with("sync-"))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect()
    }
}

impl Drop for IngressHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorded {
    fn observe(&mut self, svc: &Service, modified: bool) {
        let now = Observed::of(svc);
        let name = now.name.clone();
        let seen = self.services.entry(name.clone()).or_default();
        if seen.ingress.last() != Some(&now.ips) {
            seen.ingress.push(now.ips.clone());
        }
        if modified
            && let Some(before) = self.last.get(&name)
            && (before.ips != now.ips
                || before.condition != now.condition
                || before.pool != now.pool)
        {
            seen.status_changes += 1;
        }
        self.last.insert(name, now);
    }
}

async fn record(client: Client, namespace: String, mut rv: String, recorded: Arc<Mutex<Recorded>>) {
    let path = format!("/api/v1/namespaces/{namespace}/services");
    let params = WatchParams::default().timeout(1);
    let mut failures = 0;
    loop {
        let request = match Request::new(&path).watch(&params, &rv) {
            Ok(r) => r,
            Err(e) => {
                recorded.lock().unwrap().error = Some(e.to_string());
                return;
            }
        };
        let body = match client.request_text(request).await {
            Ok(body) => {
                failures = 0;
                body
            }
            Err(e) => {
                failures += 1;
                if failures > 20 {
                    recorded.lock().unwrap().error = Some(format!("watch requests fail: {e}"));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut r = recorded.lock().unwrap();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let event: WatchEvent<Service> = match serde_json::from_str(line) {
                Ok(e) => e,
                Err(e) => {
                    r.error = Some(format!("undecodable watch event ({e}): {line}"));
                    return;
                }
            };
            let object_rv = match &event {
                WatchEvent::Added(s) | WatchEvent::Modified(s) | WatchEvent::Deleted(s) => {
                    s.resource_version().unwrap_or_default()
                }
                WatchEvent::Bookmark(b) => b.metadata.resource_version.clone(),
                WatchEvent::Error(status) => {
                    r.error = Some(format!("watch error: {status:?}"));
                    return;
                }
            };
            match event {
                WatchEvent::Added(s) => r.observe(&s, false),
                WatchEvent::Modified(s) => r.observe(&s, true),
                WatchEvent::Deleted(s) => {
                    r.services.entry(s.name_any()).or_default().deleted = true;
                    r.last.remove(&s.name_any());
                }
                WatchEvent::Bookmark(_) | WatchEvent::Error(_) => {}
            }
            if let Ok(n) = object_rv.parse::<u64>() {
                r.resource_version = r.resource_version.max(n);
            }
            rv = object_rv;
        }
    }
}
