//! TCP MD5 keys from Secrets (I/O), read by a task of their own so that the speaker's main loop
//! never waits on the apiserver: the loop uses what is cached and asks for reads, and hears when
//! one finished.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};
use tracing::warn;

/// How long a key read from a Secret is used before it is read again.
pub const REFRESH: Duration = Duration::from_secs(60);
/// Longest wait for the apiserver for one read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// `(namespace, name)` of a Secret.
pub type SecretName = (String, String);

type Cache = Arc<Mutex<HashMap<SecretName, (Instant, Result<Vec<u8>, String>)>>>;

/// The cache and its reader task.
#[derive(Debug)]
pub struct Secrets {
    cache: Cache,
    requests: mpsc::UnboundedSender<SecretName>,
    read: watch::Receiver<u64>,
}

impl Secrets {
    /// Starts the reader.
    pub fn start(client: Client) -> Secrets {
        let cache: Cache = Arc::default();
        let (requests, rx) = mpsc::unbounded_channel();
        let (done, read) = watch::channel(0u64);
        tokio::spawn(reader(client, cache.clone(), rx, done));
        Secrets {
            cache,
            requests,
            read,
        }
    }

    /// The `password` key of Secret `name` as last read (asking for a read when there is none
    /// yet or it is older than [`REFRESH`]); `None` until the first read finishes.
    pub fn get(&self, name: &SecretName) -> Option<Result<Vec<u8>, String>> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        if cached
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= REFRESH)
        {
            let _ = self.requests.send(name.clone());
        }
        cached.map(|(_, value)| value)
    }

    /// Changes when a read finished (the loop then uses the new value).
    pub fn read(&self) -> watch::Receiver<u64> {
        self.read.clone()
    }
}

async fn reader(
    client: Client,
    cache: Cache,
    mut requests: mpsc::UnboundedReceiver<SecretName>,
    done: watch::Sender<u64>,
) {
    let mut in_flight: HashSet<SecretName> = HashSet::new();
    while let Some(name) = requests.recv().await {
        // Collapse the requests queued meanwhile: one read per Secret.
        in_flight.insert(name);
        while let Ok(more) = requests.try_recv() {
            in_flight.insert(more);
        }
        for (namespace, secret) in in_flight.drain() {
            let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            let read = match tokio::time::timeout(READ_TIMEOUT, api.get(&secret)).await {
                Ok(Ok(s)) => s
                    .data
                    .and_then(|d| d.get("password").map(|v| v.0.clone()))
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("Secret {namespace}/{secret} has no key \"password\"")),
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => {
                    Err(format!("Secret {namespace}/{secret} does not exist"))
                }
                Ok(Err(e)) => Err(format!("reading Secret {namespace}/{secret}: {e}")),
                Err(_) => Err(format!(
                    "reading Secret {namespace}/{secret}: no answer within {}s",
                    READ_TIMEOUT.as_secs()
                )),
            };
            let key = (namespace, secret);
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            // A read that failed for want of an apiserver keeps the key read before: an outage
            // must not take sessions down. A Secret that is gone, or has no password, does not.
            let gone = |e: &str| e.contains("does not exist") || e.contains("has no key");
            let value = match (read, cache.get(&key)) {
                (Err(e), Some((_, Ok(previous)))) if !gone(&e) => {
                    warn!(error = %e, "keeping the TCP MD5 key read before");
                    Ok(previous.clone())
                }
                (read, _) => read,
            };
            cache.insert(key, (Instant::now(), value));
        }
        done.send_modify(|n| *n = n.wrapping_add(1));
    }
}
