//! Churn: 2,000 Services created and deleted in a random order (seeded; the seed is printed and
//! `FERROLB_CHURN_SEED=<seed>` repeats a run) against the real controller and a pool smaller than
//! what the live Services need at the peak. Many share addresses under `allow-shared-ip` keys,
//! some of those deliberately collide (same port, or different backends) and so must not share.
//!
//! Every 500 operations, and at the end, the test waits until the controller has converged and
//! checks, from the Services the apiserver returns:
//! - no address is held by two Services unless sharing allows it (same key, same backends, no
//!   port+protocol in common), at every look, converged or not;
//! - converged means: every Service holds one address from the pool or waits with reason
//!   PoolExhausted; a Service waits only while the pool has no free address and no address of its
//!   sharing key would take it; the pool's status counts what the Services hold.
//!
//! A second test pins the churn findings about waiting Services of a sharing key in their
//! smallest forms.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::bail;
use fastrand::Rng;
use ferrolb_crds::contract::reason;
use ferrolb_tests::control_plane::{self};
use ferrolb_tests::controller::{Controller, Options, TestNamespace};
use ferrolb_tests::services::{self, Observed, Port, Spec};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::Api;
use tokio::task::block_in_place;

const SERVICES: usize = 2000;
/// Deletions: the rest live on to the end.
const DELETES: usize = 1700;
/// Percent of steps that create (while Services are left to create).
const CREATE_PERCENT: usize = 55;
const CHECKPOINT_EVERY: usize = 500;
/// Requests in flight at once.
const CONCURRENCY: usize = 16;
const POOL_FIRST: Ipv4Addr = Ipv4Addr::new(198, 19, 20, 1);
const POOL_SIZE: usize = 100;
const CONVERGE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Create(usize),
    Delete(usize),
}

fn name(i: usize) -> String {
    format!("c-{i:04}")
}

/// Service `i`: about half plain, the rest under three sharing keys whose members often collide.
fn spec(i: usize, rng: &mut Rng) -> Spec {
    const WEB: [i32; 6] = [80, 443, 8080, 8443, 9000, 9090];
    const DNS: [&[Port]; 3] = [&[(53, "UDP")], &[(53, "TCP")], &[(53, "UDP"), (53, "TCP")]];
    let mut s = Spec::new(name(i));
    match rng.usize(..100) {
        0..55 => {}
        55..80 => {
            s.sharing_key = Some("web".into());
            s.ports = vec![(WEB[rng.usize(..WEB.len())], "TCP")];
        }
        80..90 => {
            s.sharing_key = Some("dns".into());
            s.ports = DNS[rng.usize(..DNS.len())].to_vec();
        }
        _ => {
            // Same key, but Local with two different selectors: only equal ones may share.
            s.sharing_key = Some("local".into());
            s.local_app = Some(if rng.bool() { "a" } else { "b" }.to_string());
            s.ports = vec![(WEB[rng.usize(..3)], "TCP")];
        }
    }
    s
}

/// Every Service is created once; `DELETES` of them are deleted, each a random live one.
fn plan(rng: &mut Rng) -> (Vec<Op>, usize) {
    let mut ops = Vec::new();
    let mut live: Vec<usize> = Vec::new();
    let (mut created, mut deleted, mut peak) = (0, 0, 0);
    while created < SERVICES || deleted < DELETES {
        let create = created < SERVICES
            && (live.is_empty() || deleted == DELETES || rng.usize(..100) < CREATE_PERCENT);
        if create {
            ops.push(Op::Create(created));
            live.push(created);
            created += 1;
            peak = peak.max(live.len());
        } else {
            let i = live.swap_remove(rng.usize(..live.len()));
            ops.push(Op::Delete(i));
            deleted += 1;
        }
    }
    (ops, peak)
}

/// The same seed gives the same Services and the same operations (so `FERROLB_CHURN_SEED`
/// repeats a run); another seed gives another run.
#[test]
fn a_seed_plans_the_same_run_every_time() {
    let run = |seed| {
        let mut rng = Rng::with_seed(seed);
        let specs: Vec<Spec> = (0..SERVICES).map(|i| spec(i, &mut rng)).collect();
        (specs, plan(&mut rng))
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

fn in_pool(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let first = u32::from(POOL_FIRST);
            (first..first + POOL_SIZE as u32).contains(&u32::from(*v4))
        }
        IpAddr::V6(_) => false,
    }
}

/// What a converged checkpoint looked like.
#[derive(Debug)]
struct Converged {
    live: usize,
    waiting: usize,
    held: usize,
    shared: usize,
}

/// One look at the Services and the pool. `Err`: an invariant broke. `Ok(Err(why))`: not
/// converged yet.
async fn look(
    api: &Api<Service>,
    client: &Client,
    pool: &str,
    live: &BTreeSet<String>,
) -> anyhow::Result<Result<Converged, String>> {
    let seen = services::observe(api).await?;
    let bad = services::invalid_sharing(seen.values());
    if !bad.is_empty() {
        bail!(
            "addresses held against the sharing rules:\n{}",
            bad.join("\n")
        );
    }
    if let Some(s) = seen.values().find(|s| !s.ips.iter().all(in_pool)) {
        bail!("an address outside the pool: {}", s.describe());
    }
    let names: BTreeSet<String> = seen.keys().cloned().collect();
    if names != *live {
        return Ok(Err("the list does not show the test's changes yet".into()));
    }
    let (holders, waiting): (Vec<&Observed>, Vec<&Observed>) =
        seen.values().partition(|s| !s.ips.is_empty());
    if let Some(s) = holders.iter().find(|s| !s.allocated_from(pool)) {
        return Ok(Err(format!("not (yet) as written: {}", s.describe())));
    }
    if let Some(s) = waiting.iter().find(|s| !s.waits_for_exhausted_pool()) {
        return Ok(Err(format!(
            "waits without {}: {}",
            reason::POOL_EXHAUSTED,
            s.describe()
        )));
    }
    let held = services::held_ips(seen.values());
    if let Some(w) = waiting.first()
        && held.len() < POOL_SIZE
    {
        return Ok(Err(format!(
            "{} waits while {} addresses are free",
            w.describe(),
            POOL_SIZE - held.len()
        )));
    }
    // A waiting keyed Service must not fit on any address its key holds.
    let mut users: BTreeMap<IpAddr, Vec<&Observed>> = BTreeMap::new();
    for s in &holders {
        users.entry(s.ips[0]).or_default().push(s);
    }
    for w in waiting.iter().filter(|w| w.sharing.key.is_some()) {
        if let Some((ip, with)) = users
            .iter()
            .find(|(_, with)| with.iter().all(|h| h.sharing.compatible(&w.sharing)))
        {
            return Ok(Err(format!(
                "{} waits, but could share {ip} with {:?}",
                w.describe(),
                with.iter().map(|h| h.describe()).collect::<Vec<_>>()
            )));
        }
    }
    let counts = services::pool_ipv4_counts(client, pool).await?;
    let truth = (held.len() as u128, (POOL_SIZE - held.len()) as u128);
    if counts != Some(truth) {
        return Ok(Err(format!(
            "pool status (assigned, available) = {counts:?}, truth {truth:?}"
        )));
    }
    Ok(Ok(Converged {
        live: live.len(),
        waiting: waiting.len(),
        held: held.len(),
        shared: users.values().filter(|u| u.len() > 1).count(),
    }))
}

/// One test at a time: each runs a controller that acts on every class-less Service.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A namespace, the chart's RBAC, pool `pool` with `addresses`, and a ready controller.
async fn setup(
    prefix: &str,
    pool: &str,
    addresses: &str,
    auto_assign: bool,
) -> (Client, Api<Service>, Controller) {
    let ns = TestNamespace::create(prefix).await.unwrap();
    services::apply_pool(&ns.client, pool, &[addresses], auto_assign)
        .await
        .unwrap();
    let controller = block_in_place(|| {
        let mut c = Controller::start(&Options::new(&ns.kubeconfig, ns.dir.join("controller.log")))
            .unwrap();
        c.wait_ready(Duration::from_secs(60)).unwrap();
        c
    });
    (ns.client.clone(), ns.services(), controller)
}

#[tokio::test(flavor = "multi_thread")]
async fn random_creates_and_deletes_never_share_wrongly_and_pool_status_tells_the_truth() {
    let t0 = Instant::now();
    let seed = services::seed_from_env("FERROLB_CHURN_SEED");
    let mut rng = Rng::with_seed(seed);
    let specs: Vec<Spec> = (0..SERVICES).map(|i| spec(i, &mut rng)).collect();
    let (ops, peak) = plan(&mut rng);
    println!(
        "{} operations, at most {peak} Services at once, a pool of {POOL_SIZE}",
        ops.len()
    );

    let _serial = LOCK.lock().await;
    let pool = control_plane::unique_name("churn-pool");
    let last = Ipv4Addr::from(u32::from(POOL_FIRST) + POOL_SIZE as u32 - 1);
    let (client, api, controller) =
        setup("churn", &pool, &format!("{POOL_FIRST}-{last}"), true).await;

    let mut live: BTreeSet<String> = BTreeSet::new();
    let mut max_waiting = 0;
    for (n, batch) in ops.chunks(CHECKPOINT_EVERY).enumerate() {
        let started = Instant::now();
        // Per Service, its operations in order; different Services concurrently.
        let mut per_service: Vec<(usize, Vec<Op>)> = Vec::new();
        let mut index: BTreeMap<usize, usize> = BTreeMap::new();
        for op in batch {
            let (Op::Create(i) | Op::Delete(i)) = *op;
            let at = *index.entry(i).or_insert_with(|| {
                per_service.push((i, Vec::new()));
                per_service.len() - 1
            });
            per_service[at].1.push(*op);
            match op {
                Op::Create(_) => live.insert(name(i)),
                Op::Delete(_) => live.remove(&name(i)),
            };
        }
        services::for_each_concurrent(per_service, CONCURRENCY, |(_, ops)| {
            let api = api.clone();
            let specs: Vec<Option<Spec>> = ops
                .iter()
                .map(|op| match op {
                    Op::Create(i) => Some(specs[*i].clone()),
                    Op::Delete(_) => None,
                })
                .collect();
            async move {
                for (op, spec) in ops.iter().zip(specs) {
                    match (op, spec) {
                        (Op::Create(_), Some(spec)) => {
                            services::create(&api, &spec).await?;
                        }
                        (Op::Delete(i), _) => services::delete(&api, &name(*i)).await?,
                        (Op::Create(_), None) => unreachable!(),
                    }
                }
                Ok(())
            }
        })
        .await
        .unwrap();
        let applied = started.elapsed();
        let done = n * CHECKPOINT_EVERY + batch.len();
        let what = format!("convergence after operation {done}");
        let c = services::eventually(&what, CONVERGE, || look(&api, &client, &pool, &live))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "seed {seed}: {e:#}\ncontroller log:\n{}",
                    controller.log_tail()
                )
            });
        max_waiting = max_waiting.max(c.waiting);
        println!(
            "after {done} operations: {} live, {} hold {} addresses ({} shared), {} wait; \
             operations took {applied:?}, convergence {:?}",
            c.live,
            c.live - c.waiting,
            c.held,
            c.shared,
            c.waiting,
            started.elapsed() - applied
        );
    }
    assert!(
        max_waiting > 0,
        "seed {seed}: the pool was never exhausted; the test did not test waiting"
    );

    // The end: everything deleted, the pool is all free again.
    let names: Vec<String> = live.iter().cloned().collect();
    services::for_each_concurrent(names, CONCURRENCY, |name| {
        let api = api.clone();
        async move { services::delete(&api, &name).await }
    })
    .await
    .unwrap();
    live.clear();
    let c = services::eventually("every address released", CONVERGE, || {
        look(&api, &client, &pool, &live)
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "seed {seed}: {e:#}\ncontroller log:\n{}",
            controller.log_tail()
        )
    });
    assert_eq!(c.held, 0);
    services::delete_pool(&client, &pool).await.unwrap();
    println!("seed {seed}: done in {:?}", t0.elapsed());
}

/// What the churn test finds, in its smallest forms: Services of one sharing key that wait must
/// join their key's address as soon as they fit on it, and an address freed while such a Service
/// waits must still serve a plain waiting one. Each case has a two-address pool of its own
/// (`autoAssign: false`, named by its Services); all cases run, then the failures are listed.
#[tokio::test(flavor = "multi_thread")]
async fn waiting_services_join_their_keys_address_once_they_fit() {
    let _serial = LOCK.lock().await;
    let pools: Vec<String> = (0..3)
        .map(|_| control_plane::unique_name("join-pool"))
        .collect();
    let (client, api, controller) =
        setup("join", &pools[0], "198.19.21.1-198.19.21.2", false).await;
    for (pool, range) in pools[1..]
        .iter()
        .zip(["198.19.21.3-198.19.21.4", "198.19.21.5-198.19.21.6"])
    {
        services::apply_pool(&client, pool, &[range], false)
            .await
            .unwrap();
    }
    let outcomes = [
        (
            "a colliding Service leaves",
            Join::new(&api, &pools[0], "a")
                .after_a_collider_leaves()
                .await,
        ),
        (
            "a freed address goes to another Service of the key",
            Join::new(&api, &pools[1], "b")
                .next_to_a_newly_served_one()
                .await,
        ),
        (
            "a plain Service waits behind one of the key that now fits",
            Join::new(&api, &pools[2], "c")
                .a_freed_address_still_serves_a_plain_one()
                .await,
        ),
    ];
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|(case, r)| r.as_ref().err().map(|e| format!("{case}: {e:#}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{}\ncontroller log:\n{}",
        failures.join("\n"),
        controller.log_tail()
    );
    for pool in &pools {
        services::delete_pool(&client, pool).await.unwrap();
    }
}

/// One case of [`waiting_services_join_their_keys_address_once_they_fit`]: Services `<case>-<n>`
/// of one pool, sharing key `k`.
struct Join<'a> {
    api: &'a Api<Service>,
    pool: &'a str,
    case: &'a str,
}

impl<'a> Join<'a> {
    fn new(api: &'a Api<Service>, pool: &'a str, case: &'a str) -> Join<'a> {
        Join { api, pool, case }
    }

    /// Creates `<case>-<name>`: with key `k` on `port`, or a plain Service (`None`).
    async fn create(&self, name: &str, port: Option<i32>) -> anyhow::Result<()> {
        let mut s = Spec::new(format!("{}-{name}", self.case));
        s.pool = Some(self.pool.to_string());
        if let Some(port) = port {
            s.sharing_key = Some("k".into());
            s.ports = vec![(port, "TCP")];
        }
        services::create(self.api, &s).await.map(|_| ())
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        services::delete(self.api, &format!("{}-{name}", self.case)).await
    }

    /// Waits until `<case>-<name>` holds an address (`ip`, when given) of the pool, and returns it.
    async fn holds(&self, name: &str, ip: Option<IpAddr>) -> anyhow::Result<IpAddr> {
        let name = format!("{}-{name}", self.case);
        let what = format!(
            "{name} to hold {}",
            ip.map_or("an address".into(), |ip| ip.to_string())
        );
        services::eventually(&what, Duration::from_secs(20), || async {
            let s = Observed::of(&self.api.get(&name).await?);
            Ok(match s.ips[..] {
                [got] if s.allocated_from(self.pool) && ip.is_none_or(|ip| ip == got) => Ok(got),
                _ => Err(s.describe()),
            })
        })
        .await
    }

    /// Waits until `<case>-<name>` waits with reason PoolExhausted.
    async fn waits(&self, name: &str) -> anyhow::Result<()> {
        let name = format!("{}-{name}", self.case);
        services::eventually(
            &format!("{name} to wait"),
            Duration::from_secs(20),
            || async {
                let s = Observed::of(&self.api.get(&name).await?);
                Ok(if s.waits_for_exhausted_pool() {
                    Ok(())
                } else {
                    Err(s.describe())
                })
            },
        )
        .await
    }

    /// a (k, 80) and a plain one fill the pool; b (k, 80) collides with a and waits; c (k, 443)
    /// joins a. When a leaves, b fits next to c.
    async fn after_a_collider_leaves(&self) -> anyhow::Result<()> {
        self.create("a", Some(80)).await?;
        let x = self.holds("a", None).await?;
        self.create("plain", None).await?;
        self.holds("plain", None).await?;
        self.create("b", Some(80)).await?;
        self.waits("b").await?;
        self.create("c", Some(443)).await?;
        self.holds("c", Some(x)).await?;
        self.delete("a").await?;
        self.holds("b", Some(x)).await?;
        Ok(())
    }

    /// Two plain Services fill the pool; d (k, 80) and e (k, 443) wait. When a plain one leaves,
    /// d takes its address and e fits next to d.
    async fn next_to_a_newly_served_one(&self) -> anyhow::Result<()> {
        for plain in ["p", "q"] {
            self.create(plain, None).await?;
            self.holds(plain, None).await?;
        }
        self.create("d", Some(80)).await?;
        self.create("e", Some(443)).await?;
        self.waits("d").await?;
        self.waits("e").await?;
        let x = self.holds("p", None).await?;
        self.delete("p").await?;
        self.holds("d", Some(x)).await?;
        self.holds("e", Some(x)).await?;
        Ok(())
    }

    /// g (k, 80) and a plain one fill the pool, h (k, 443) joins g; f (k, 80) and then w (plain)
    /// wait. g leaves (f now fits next to h), then the plain one: f shares with h, and the freed
    /// address serves w.
    async fn a_freed_address_still_serves_a_plain_one(&self) -> anyhow::Result<()> {
        self.create("g", Some(80)).await?;
        let x = self.holds("g", None).await?;
        self.create("plain", None).await?;
        let y = self.holds("plain", None).await?;
        self.create("h", Some(443)).await?;
        self.holds("h", Some(x)).await?;
        self.create("f", Some(80)).await?;
        self.waits("f").await?;
        self.create("w", None).await?;
        self.waits("w").await?;
        self.delete("g").await?;
        self.delete("plain").await?;
        self.holds("f", Some(x)).await?;
        self.holds("w", Some(y)).await?;
        Ok(())
    }
}
