//! When each Service was first seen with an ingress IP, from a watch (never by polling objects).
//!
//! A task runs a `kube::runtime::watcher` over one namespace and stamps every event that shows an
//! ingress IP with the time it arrived; the stamps are taken in that task, so they do not depend
//! on when the benchmark gets round to reading them.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

enum Seen {
    /// The initial list is complete.
    Listed,
    /// A Service showed an ingress IP.
    Ip(String, Instant),
    /// The watch failed (it retries).
    Error(String),
}

/// A running watch of one namespace's Services.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::UnboundedReceiver<Seen>,
    task: JoinHandle<()>,
    /// Name -> when an event first showed it with an IP.
    first_ip: HashMap<String, Instant>,
    /// Names added to `first_ip` since `wait_all` last looked (so it never rescans the rest).
    fresh: Vec<String>,
    listed: bool,
    errors: Vec<String>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::Listed => write!(f, "Listed"),
            Seen::Ip(name, _) => write!(f, "Ip({name})"),
            Seen::Error(e) => write!(f, "Error({e})"),
        }
    }
}

fn has_ip(svc: &Service) -> bool {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|ingress| ingress.iter().any(|i| i.ip.is_some()))
}

impl Watch {
    /// Starts watching `namespace` and waits until its initial list is in.
    pub async fn start(client: Client, namespace: &str) -> Result<Watch> {
        let api: Api<Service> = Api::namespaced(client, namespace);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let seen = match event {
                    Ok(watcher::Event::Apply(svc) | watcher::Event::InitApply(svc)) => {
                        if !has_ip(&svc) {
                            continue;
                        }
                        Seen::Ip(svc.name_any(), Instant::now())
                    }
                    Ok(watcher::Event::InitDone) => Seen::Listed,
                    Ok(watcher::Event::Init | watcher::Event::Delete(_)) => continue,
                    Err(e) => Seen::Error(e.to_string()),
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
        let mut watch = Watch {
            rx,
            task,
            first_ip: HashMap::new(),
            fresh: Vec::new(),
            listed: false,
            errors: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !watch.listed {
            watch.next(deadline).await?;
        }
        Ok(watch)
    }

    async fn next(&mut self, deadline: Instant) -> Result<bool> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.rx.recv()).await {
            Err(_) => Ok(false),
            Ok(None) => bail!("the Service watch ended"),
            Ok(Some(Seen::Listed)) => {
                self.listed = true;
                Ok(true)
            }
            Ok(Some(Seen::Ip(name, at))) => {
                self.record(name, at);
                Ok(true)
            }
            Ok(Some(Seen::Error(e))) => {
                if self.errors.len() < 20 {
                    self.errors.push(e);
                }
                Ok(true)
            }
        }
    }

    /// `name` was seen with an IP at `at`; only the first sighting counts.
    fn record(&mut self, name: String, at: Instant) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.first_ip.entry(name) {
            self.fresh.push(e.key().clone());
            e.insert(at);
        }
    }

    /// How many Services the watch has seen with an IP so far (reading what has arrived).
    pub fn with_ip(&mut self) -> usize {
        while let Ok(seen) = self.rx.try_recv() {
            match seen {
                Seen::Ip(name, at) => self.record(name, at),
                Seen::Listed => self.listed = true,
                Seen::Error(e) if self.errors.len() < 20 => self.errors.push(e),
                Seen::Error(_) => {}
            }
        }
        self.first_ip.len()
    }

    /// Waits until every one of `names` has been seen with an IP; returns when each was first
    /// seen, in the order of `names`. Fails after `timeout`, saying how many are missing.
    pub async fn wait_all(&mut self, names: &[String], timeout: Duration) -> Result<Vec<Instant>> {
        let deadline = Instant::now() + timeout;
        self.fresh.clear();
        let mut missing: HashSet<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !self.first_ip.contains_key(*n))
            .collect();
        while !missing.is_empty() {
            if !self.next(deadline).await? {
                let mut example: Vec<&&str> = missing.iter().take(5).collect();
                example.sort();
                bail!(
                    "after {timeout:?}, {} of {} Services still had no IP (e.g. {example:?}); watch errors: {:?}",
                    missing.len(),
                    names.len(),
                    self.errors
                );
            }
            // Only the names just seen: rescanning `missing` after every event made a burst
            // of n Services cost the harness n^2 / 2 lookups (156 CPU-s at 100,000).
            for name in self.fresh.drain(..) {
                missing.remove(name.as_str());
            }
        }
        Ok(names.iter().map(|n| self.first_ip[n.as_str()]).collect())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
