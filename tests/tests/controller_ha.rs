//! Two replicas of the real controller, one Lease (the chart's RBAC, different identities): one
//! leads, the other stands by; when the leader dies (SIGKILL) or stops (SIGTERM) in the middle of
//! a burst of Services, the standby takes over promptly and nothing is lost, duplicated or
//! changed. A watch started before the burst records every ingress value each Service shows:
//! each must go from empty to one address, once, and never change.
//!
//! The cases run one after the other (the controllers handle every class-less Service and every
//! pool of the shared control plane) and clean up behind them; each names its own pool
//! (`autoAssign: false`), so what a failed case leaves behind cannot serve another's Services.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use ferrolb_tests::control_plane::{self};
use ferrolb_tests::controller::{Controller, Options, TestNamespace};
use ferrolb_tests::rbac::CONTROLLER_LEASE;
use ferrolb_tests::services::{self, IngressHistory, Observed, Spec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, ListParams};
use tokio::task::block_in_place;

/// One test at a time: both run controllers that would act on each other's Services.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The harness's `--lease-duration` (see `ferrolb_tests::controller`).
const LEASE_DURATION: Duration = Duration::from_secs(2);
/// Room for a loaded 2-core machine on top of the protocol's own delays.
const MARGIN: Duration = Duration::from_secs(3);
const CONVERGE: Duration = Duration::from_secs(120);
/// Addresses in each test's pool (a /22).
const POOL_SIZE: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// SIGKILL: the Lease must expire.
    Kill,
    /// SIGTERM: the leader releases the Lease.
    Terminate,
}

fn metric(c: &Controller, sample: &str) -> Option<f64> {
    block_in_place(|| c.metric(sample)).ok().flatten()
}

/// Which of the two leads, once exactly one does; fails at once if both do.
async fn leader_of(replicas: &[Controller; 2]) -> usize {
    services::eventually("exactly one leader", MARGIN * 3, || async {
        let leading: Vec<Option<f64>> = replicas
            .iter()
            .map(|c| metric(c, "ferrolb_controller_leader"))
            .collect();
        match leading[..] {
            [Some(a), Some(b)] if a == 1.0 && b == 1.0 => bail!("both replicas lead"),
            [Some(a), Some(b)] if a + b == 1.0 => Ok(Ok(if a == 1.0 { 0 } else { 1 })),
            _ => Ok(Err(format!("leader metrics {leading:?}"))),
        }
    })
    .await
    .unwrap()
}

async fn handover_mid_burst(prefix: &str, pool_cidr: &str, burst: usize, stop: Stop) {
    let _serial = LOCK.lock().await;
    let TestNamespace {
        client,
        name: ns,
        dir,
        kubeconfig,
    } = TestNamespace::create(prefix).await.unwrap();
    let pool = control_plane::unique_name(&format!("{prefix}-pool"));
    // Served only to Services that name it: a pool left behind by a failed case serves nobody else.
    services::apply_pool(&client, &pool, &[pool_cidr], false)
        .await
        .unwrap();

    let ids = ["replica-a", "replica-b"];
    let mut replicas: [Controller; 2] = ids.map(|id| {
        block_in_place(|| {
            Controller::start(&Options {
                lease: Some((ns.clone(), id.to_string())),
                ..Options::new(&kubeconfig, dir.join(format!("{id}.log")))
            })
            .unwrap()
        })
    });
    let leader = leader_of(&replicas).await;
    let standby = 1 - leader;
    block_in_place(|| replicas[leader].wait_ready(Duration::from_secs(30))).unwrap();
    println!("{} leads, {} stands by", ids[leader], ids[standby]);

    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    let history = IngressHistory::start(&client, &ns).await.unwrap();
    let created = Arc::new(AtomicUsize::new(0));
    let creating = {
        let (api, created, pool) = (api.clone(), created.clone(), pool.clone());
        tokio::spawn(services::for_each_concurrent(0..burst, 16, move |i| {
            let (api, created) = (api.clone(), created.clone());
            let mut spec = Spec::new(format!("burst-{i:04}"));
            spec.pool = Some(pool.clone());
            async move {
                services::create(&api, &spec).await?;
                created.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }))
    };
    let t0 = Instant::now();

    // Stop the leader a third of the way into the burst.
    services::eventually("a third of the burst", CONVERGE, || async {
        let n = created.load(Ordering::Relaxed);
        Ok(if n >= burst / 3 {
            Ok(())
        } else {
            Err(format!("{n} created"))
        })
    })
    .await
    .unwrap();
    let stopped = Instant::now();
    match stop {
        Stop::Kill => block_in_place(|| replicas[leader].kill()),
        Stop::Terminate => block_in_place(|| replicas[leader].terminate(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", replicas[leader].log_tail())),
    }
    let at = created.load(Ordering::Relaxed);
    let survivor = &replicas[standby];
    services::eventually(
        "the standby to lead",
        LEASE_DURATION + MARGIN * 2,
        || async {
            Ok(match metric(survivor, "ferrolb_controller_leader") {
                Some(1.0) => Ok(()),
                other => Err(format!("leader metric {other:?}")),
            })
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", survivor.log_tail()));
    let takeover = stopped.elapsed();
    println!(
        "{:?} of {} at {at} of {burst} Services created; {} took over after {takeover:?}",
        stop, ids[leader], ids[standby]
    );
    match stop {
        Stop::Kill => assert!(
            takeover <= LEASE_DURATION + MARGIN,
            "the standby took over {takeover:?} after the leader died"
        ),
        // A released Lease is taken at the standby's next try (200 ms); an expiring one only
        // after the lease duration, counted from the leader's last renewal (at most 200 ms
        // before the stop): taking over in under 1.5 s proves the release.
        Stop::Terminate => assert!(
            takeover < Duration::from_millis(1500),
            "after SIGTERM the standby took over only {takeover:?} later: the Lease was not \
             released"
        ),
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = leases.get(CONTROLLER_LEASE).await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some(ids[standby]));
    block_in_place(|| replicas[standby].wait_ready(Duration::from_secs(30))).unwrap();

    creating.await.unwrap().unwrap();
    let seen = services::eventually("every Service to hold an address", CONVERGE, || async {
        let seen = services::observe(&api).await?;
        let bad = services::invalid_sharing(seen.values());
        if !bad.is_empty() {
            bail!("addresses held twice:\n{}", bad.join("\n"));
        }
        let waiting: Vec<&Observed> = seen.values().filter(|s| !s.allocated_from(&pool)).collect();
        if seen.len() != burst || !waiting.is_empty() {
            return Ok(Err(format!(
                "{} Services, {} without an address (first: {:?})",
                seen.len(),
                waiting.len(),
                waiting.first().map(|s| s.describe())
            )));
        }
        let counts = services::pool_ipv4_counts(&client, &pool).await?;
        let truth = (burst as u128, (POOL_SIZE - burst) as u128);
        if counts != Some(truth) {
            return Ok(Err(format!(
                "pool status (assigned, available) = {counts:?}, truth {truth:?}"
            )));
        }
        Ok(Ok(seen))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", replicas[standby].log_tail()));
    println!(
        "all {burst} Services hold an address {:?} after the burst began",
        t0.elapsed()
    );
    assert_eq!(
        services::held_ips(seen.values()).len(),
        burst,
        "no address is held twice"
    );

    // Every ingress value each Service ever showed: none, then its one address.
    history.sync(Duration::from_secs(30)).await.unwrap();
    let watched = history.seen();
    let mut changed = Vec::new();
    let mut rewritten = Vec::new();
    for (name, s) in &seen {
        let w = &watched[name];
        let shown: Vec<_> = w.ingress.iter().filter(|ips| !ips.is_empty()).collect();
        if shown != [&s.ips] || w.ingress.last() != Some(&s.ips) {
            changed.push(format!("{name}: {:?}", w.ingress));
        }
        if w.status_changes != 1 {
            rewritten.push(format!("{name}: {} status changes", w.status_changes));
        }
    }
    assert!(
        changed.is_empty(),
        "{} Services showed more than one address or lost theirs: {:?}",
        changed.len(),
        &changed[..changed.len().min(10)]
    );
    assert!(
        rewritten.is_empty(),
        "each Service's status is written once, by one replica: {:?}",
        &rewritten[..rewritten.len().min(10)]
    );

    // Clean up for the next case: the controllers stop first, so nothing is re-allocated.
    drop(replicas);
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    services::delete_pool(&client, &pool).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_leader_mid_burst_loses_duplicates_and_changes_nothing() {
    handover_mid_burst("ha-kill", "198.19.32.0/22", 1000, Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_hands_over_at_once_mid_burst() {
    handover_mid_burst("ha-term", "198.19.36.0/22", 600, Stop::Terminate).await;
}

/// Two installations side by side, one per `--lb-class`: the one of another class must leave the
/// class-less Service alone (not clear what the first one wrote; they share the field manager).
#[tokio::test(flavor = "multi_thread")]
async fn a_controller_of_another_class_leaves_the_service_alone() {
    let _serial = LOCK.lock().await;
    let TestNamespace {
        client,
        name: ns,
        dir,
        kubeconfig,
    } = TestNamespace::create("classes").await.unwrap();
    let pool = control_plane::unique_name("classes-pool");
    services::apply_pool(&client, &pool, &["198.19.40.0/30"], false)
        .await
        .unwrap();
    let start = |id: &str, class: Option<&str>| {
        block_in_place(|| {
            let mut c = Controller::start(&Options {
                lb_class: class.map(Into::into),
                ..Options::new(&kubeconfig, dir.join(format!("{id}.log")))
            })
            .unwrap();
            c.wait_ready(Duration::from_secs(30)).unwrap();
            c
        })
    };
    let ours = start("default-class", None);
    let other = start("other-class", Some("example.com/other"));
    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    let history = IngressHistory::start(&client, &ns).await.unwrap();
    let mut spec = Spec::new("s");
    spec.pool = Some(pool.clone());
    services::create(&api, &spec).await.unwrap();
    let ip = services::eventually("s to hold an address", CONVERGE, || async {
        let s = Observed::of(&api.get("s").await?);
        Ok(if s.allocated_from(&pool) {
            Ok(s.ips)
        } else {
            Err(s.describe())
        })
    })
    .await
    .unwrap();
    // Barrier: the other controller has processed an event of s after s got its address.
    let processed = |c: &Controller| metric(c, "ferrolb_controller_reconcile_seconds_count");
    let before = processed(&other).unwrap_or(0.0);
    api.patch(
        "s",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {"seen": "yes"}}})),
    )
    .await
    .unwrap();
    services::eventually("the other controller to see s", MARGIN, || async {
        let n = processed(&other).unwrap_or(0.0);
        Ok(if n > before {
            Ok(())
        } else {
            Err(format!("{n}"))
        })
    })
    .await
    .unwrap();
    history.sync(Duration::from_secs(30)).await.unwrap();
    let seen = &history.seen()["s"];
    let writes = |c: &Controller| {
        metric(
            c,
            r#"ferrolb_controller_writes_total{object="service",result="ok"}"#,
        )
        .unwrap_or(0.0)
    };
    let shown = seen.ingress.len();
    assert!(
        seen.ingress == [vec![], ip.clone()] && writes(&ours) == 1.0 && writes(&other) == 0.0,
        "s showed {shown} ingress values (first ones: {:?}); status writes: class-less \
         controller {}, other-class controller {} (want [[], {ip:?}], 1 and 0)\n{}",
        &seen.ingress[..shown.min(4)],
        writes(&ours),
        writes(&other),
        other.log_tail()
    );
    drop((ours, other));
    api.delete("s", &DeleteParams::default()).await.unwrap();
    services::delete_pool(&client, &pool).await.unwrap();
}
