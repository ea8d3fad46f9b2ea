//! Leader election against a real kube-apiserver: one leader at a time, takeover after a crash,
//! prompt handover on release, and a leader that loses the Lease (or the apiserver) stops.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrolb_runtime::health::HealthState;
use ferrolb_runtime::lease::{LeaderElector, LeadershipLost, LeaseConfig, LeaseError};
use ferrolb_tests::control_plane;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Short timings so tests run fast; renew deadline < lease duration as in production.
fn fast(name: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(500),
        retry_period: Duration::from_millis(100),
        ..LeaseConfig::new("default", name, identity)
    }
}

/// Generous bound for "promptly" on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(3);

#[derive(Debug)]
enum Event {
    Acquired(String, Instant),
    Lost(String, LeadershipLost, Instant),
    Released(String),
    Failed(String, String),
}

/// A replica's leader loop in a task: acquire, then hold until leadership is lost or `stop`
/// asks for a graceful release. Aborting the task is a crash (no release).
struct Candidate {
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl Candidate {
    fn spawn(
        client: kube::Client,
        config: LeaseConfig,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let (stop, stopped) = oneshot::channel();
        let id = config.identity.clone();
        let task = tokio::spawn(async move {
            let mut elector = LeaderElector::new(client, config);
            if let Err(e) = elector.acquire().await {
                let _ = events.send(Event::Failed(id, e.to_string()));
                return;
            }
            let _ = events.send(Event::Acquired(id.clone(), Instant::now()));
            tokio::select! {
                lost = elector.hold() => {
                    let _ = events.send(Event::Lost(id, lost, Instant::now()));
                }
                _ = stopped => {
                    let event = match elector.release().await {
                        Ok(()) => Event::Released(id),
                        Err(e) => Event::Failed(id, e.to_string()),
                    };
                    let _ = events.send(event);
                }
            }
        });
        Candidate {
            task,
            stop: Some(stop),
        }
    }

    fn release(&mut self) {
        self.stop.take().unwrap().send(()).unwrap();
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The next event, failing the test on a timeout or a candidate's error.
async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>, within: Duration) -> Event {
    let event = tokio::time::timeout(within, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no election event within {within:?}"))
        .unwrap();
    if let Event::Failed(id, error) = &event {
        panic!("candidate {id} failed: {error}");
    }
    event
}

/// Polls `check` every 50 ms until it yields a value or `timeout` passes.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client() -> kube::Client {
    control_plane::shared().client().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_of_two_candidates_leads_and_the_other_takes_over_after_a_crash() {
    let client = client().await;
    let name = control_plane::unique_name("lease-crash");
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut candidates = [
        Some(Candidate::spawn(
            client.clone(),
            fast(&name, "a"),
            tx.clone(),
        )),
        Some(Candidate::spawn(
            client.clone(),
            fast(&name, "b"),
            tx.clone(),
        )),
    ];

    let Event::Acquired(leader, _) = next_event(&mut events, MARGIN * 3).await else {
        panic!("expected an acquisition");
    };
    let (leader_idx, standby) = if leader == "a" { (0, "b") } else { (1, "a") };

    // The leader keeps renewing for three lease durations (by the Lease's own times); all that
    // while, the standby must not acquire.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let spec = eventually(
        "three lease durations of renewals",
        Duration::from_secs(20),
        || async {
            let spec = leases.get(&name).await.unwrap().spec.unwrap();
            let held = spec.acquire_time.as_ref().zip(spec.renew_time.as_ref());
            let (acquired, renewed) = held?;
            (renewed.0.duration_since(acquired.0).as_secs_f64() >= 3.0).then_some(spec)
        },
    )
    .await;
    assert_eq!(spec.holder_identity.as_deref(), Some(leader.as_str()));
    assert_eq!(spec.lease_duration_seconds, Some(1));
    assert_eq!(
        spec.lease_transitions,
        Some(0),
        "a new Lease starts at 0 transitions"
    );
    assert!(
        events.try_recv().is_err(),
        "no other event while the leader holds"
    );

    // Crash: the leader's task dies without releasing.
    candidates[leader_idx].take();
    let crashed = Instant::now();
    let Event::Acquired(new_leader, at) =
        next_event(&mut events, Duration::from_secs(1) + MARGIN).await
    else {
        panic!("expected the standby to acquire");
    };
    assert_eq!(new_leader, standby);
    // The crashed leader may have renewed just before dying and would have acted until its
    // renew deadline; the standby must not lead before then.
    assert!(
        at.duration_since(crashed) >= Duration::from_millis(500),
        "standby took over {:?} after the crash, before the old leader's renew deadline",
        at.duration_since(crashed)
    );
    let spec = leases.get(&name).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(standby));
    assert_eq!(
        spec.lease_transitions,
        Some(1),
        "a takeover counts one transition"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn release_hands_over_well_before_the_lease_expires() {
    let client = client().await;
    let name = control_plane::unique_name("lease-release");
    // A long lease: only a release can explain a takeover within the margin.
    let slow = |id| LeaseConfig {
        lease_duration: Duration::from_secs(30),
        renew_deadline: Duration::from_secs(15),
        retry_period: Duration::from_millis(100),
        ..LeaseConfig::new("default", &name, id)
    };
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut first = Candidate::spawn(client.clone(), slow("first"), tx.clone());
    let Event::Acquired(id, _) = next_event(&mut events, MARGIN).await else {
        panic!("expected the first candidate to acquire");
    };
    assert_eq!(id, "first");
    let _second = Candidate::spawn(client.clone(), slow("second"), tx.clone());
    // The leader renews for a second (ten of the standby's retries) and the standby stands by.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let before = eventually("a second of renewals", Duration::from_secs(10), || async {
        let lease = leases.get(&name).await.unwrap();
        let spec = lease.spec.as_ref()?;
        let (acquired, renewed) = spec.acquire_time.as_ref().zip(spec.renew_time.as_ref())?;
        (renewed.0.duration_since(acquired.0).as_secs_f64() >= 1.0).then_some(lease)
    })
    .await;
    assert!(
        events.try_recv().is_err(),
        "the standby waits on a held Lease"
    );

    first.release();
    let released = Instant::now();
    assert!(matches!(next_event(&mut events, MARGIN).await, Event::Released(id) if id == "first"));
    let Event::Acquired(id, at) = next_event(&mut events, MARGIN).await else {
        panic!("expected the standby to acquire");
    };
    assert_eq!(id, "second");
    assert!(at.duration_since(released) < MARGIN);
    let after = leases.get(&name).await.unwrap().spec.unwrap();
    assert_eq!(after.holder_identity.as_deref(), Some("second"));
    assert_eq!(
        after.lease_transitions,
        before.spec.unwrap().lease_transitions.map(|t| t + 1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn release_leaves_a_lease_held_by_another_alone() {
    let client = client().await;
    let name = control_plane::unique_name("lease-foreign");
    let mut a = LeaderElector::new(client.clone(), fast(&name, "a"));
    a.acquire().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let mut lease = leases.get(&name).await.unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace(&name, &PostParams::default(), &lease)
        .await
        .unwrap();

    a.release().await.unwrap();
    let spec = leases.get(&name).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread")]
async fn hold_returns_when_another_identity_overwrites_the_holder() {
    let client = client().await;
    let name = control_plane::unique_name("lease-stolen");
    let (tx, mut events) = mpsc::unbounded_channel();
    let _leader = Candidate::spawn(client.clone(), fast(&name, "leader"), tx);
    assert!(matches!(
        next_event(&mut events, MARGIN).await,
        Event::Acquired(..)
    ));

    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    // The leader renews concurrently: retry our optimistic write until it lands.
    eventually("overwriting the holder", MARGIN, || async {
        let mut lease = leases.get(&name).await.unwrap();
        lease.spec.as_mut().unwrap().holder_identity = Some("intruder".into());
        leases
            .replace(&name, &PostParams::default(), &lease)
            .await
            .ok()
    })
    .await;

    match next_event(&mut events, MARGIN).await {
        Event::Lost(id, reason, _) => {
            assert_eq!(id, "leader");
            assert_eq!(reason, LeadershipLost::TakenBy("intruder".into()));
        }
        other => panic!("expected the leader to lose the Lease, got {other:?}"),
    }
    // It did not write itself back.
    let spec = leases.get(&name).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("intruder"));
}

/// A TCP relay to the apiserver that the test can cut: open connections are closed, new ones are
/// accepted and never answered (a partition, not a clean refusal).
struct Relay {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut hung = Vec::new();
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    continue;
                };
                if *cut_rx.borrow() {
                    hung.push(down);
                    continue;
                }
                let mut cut = cut_rx.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay { addr, cut, task }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_cut_off_from_the_apiserver_stops_before_the_standby_takes_over() {
    let cp = control_plane::shared();
    let upstream = cp.server().trim_start_matches("https://").to_owned();
    let relay = Relay::start(upstream).await;
    // The leader talks through the relay (the serving cert covers 127.0.0.1), the standby directly.
    let kubeconfig = kube::config::Kubeconfig::read_from(cp.kubeconfig()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.cluster_url = format!("https://{}", relay.addr).parse().unwrap();
    let relayed = kube::Client::try_from(config).unwrap();
    let direct = cp.client().await.unwrap();

    let name = control_plane::unique_name("lease-cut");
    let (tx, mut events) = mpsc::unbounded_channel();
    let _leader = Candidate::spawn(relayed, fast(&name, "leader"), tx.clone());
    assert!(
        matches!(next_event(&mut events, MARGIN).await, Event::Acquired(id, _) if id == "leader")
    );
    let _standby = Candidate::spawn(direct, fast(&name, "standby"), tx);

    relay.cut();
    let cut = Instant::now();
    let lost_at = match next_event(&mut events, MARGIN).await {
        Event::Lost(id, LeadershipLost::RenewDeadline { .. }, at) if id == "leader" => at,
        other => panic!("expected the leader to give up at its renew deadline, got {other:?}"),
    };
    let acquired_at = match next_event(&mut events, MARGIN).await {
        Event::Acquired(id, at) if id == "standby" => at,
        other => panic!("expected the standby to acquire, got {other:?}"),
    };
    assert!(
        lost_at < acquired_at,
        "the old leader stopped {:?} after the cut, the standby led {:?} after it",
        lost_at.duration_since(cut),
        acquired_at.duration_since(cut)
    );
    assert!(lost_at.duration_since(cut) <= Duration::from_millis(500) + MARGIN);
}

/// A refusal is retried, not fatal (an apiserver that has just started answers 403 until its
/// authorizer has caught up; the controller used to exit on it), and readiness names the Lease
/// and the fix while it lasts.
#[tokio::test(flavor = "multi_thread")]
async fn acquire_without_rbac_keeps_retrying_and_readiness_names_the_lease_and_the_fix() {
    let cp = control_plane::shared();
    let kubeconfig = kube::config::Kubeconfig::read_from(cp.kubeconfig()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some("system:serviceaccount:default:nobody".into());
    let client = kube::Client::try_from(config).unwrap();
    let name = control_plane::unique_name("lease-rbac");
    let health = HealthState::new(std::sync::Arc::new(Default::default()));
    health.set_ready();

    let mut elector =
        LeaderElector::new(client, fast(&name, "a")).report_to(health.watch_status("Lease"));
    let acquired = tokio::time::timeout(MARGIN, elector.acquire()).await;
    assert!(acquired.is_err(), "a refusal is retried: {acquired:?}");
    let reason = health
        .readiness(Instant::now() + Duration::from_secs(60))
        .unwrap_err();
    assert!(
        reason.contains(&format!("Lease default/{name}")),
        "{reason}"
    );
    assert!(reason.contains("leases.coordination.k8s.io"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn timings_that_allow_two_leaders_are_refused() {
    let client = client().await;
    let config = LeaseConfig {
        renew_deadline: Duration::from_secs(4),
        ..LeaseConfig::new("default", "unused", "a")
    };
    let err = LeaderElector::new(client, config)
        .acquire()
        .await
        .unwrap_err();
    assert!(matches!(err, LeaseError::Timings { .. }), "{err:?}");
}
