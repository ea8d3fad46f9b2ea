//! The control plane goes away: the apiserver killed and restarted, etcd killed and restarted,
//! a node cut off from the apiserver (both ways) and healed. The VIP keeps answering from the same
//! node, readiness reports the outage, and a Service created once the control plane is back gets
//! its address and its announcement within the bound.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferrolb_crds::contract::condition;
use ferrolb_tests::control_plane::{self, ControlPlane};
use ferrolb_tests::l2lab::{Rig, announced, cut_from_apiserver};
use ferrolb_tests::scenario::{self, ingress};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::task::block_in_place;

use crate::RECOVERY_BOUND;

/// How long each outage lasts: longer than readiness's grace, and long enough that kube's
/// default backoff would have grown to several seconds.
const OUTAGE: Duration = Duration::from_secs(12);

fn runs() -> usize {
    std::env::var("FERROLB_FAULT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// What a fault does to the control plane; `restart` returns when the apiserver is ready again.
struct Fault {
    name: &'static str,
    /// Whether the speakers' watches fail too. Without etcd the apiserver keeps their watches
    /// open (from its watch cache) and they only see no events: the speakers stay ready, and
    /// only the controller, whose Lease renewals fail, reports the outage.
    speakers_notice: bool,
    kill: fn(&ControlPlane),
    restart: fn(&ControlPlane) -> Result<Instant>,
}

const APISERVER: Fault = Fault {
    name: "apiserver",
    speakers_notice: true,
    kill: ControlPlane::kill_apiserver,
    restart: ControlPlane::restart_apiserver,
};

const ETCD: Fault = Fault {
    name: "etcd",
    speakers_notice: false,
    kill: ControlPlane::kill_etcd,
    restart: ControlPlane::restart_etcd,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_killed_and_restarted() -> Result<()> {
    outages(APISERVER).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_and_restarted() -> Result<()> {
    outages(ETCD).await
}

/// How long the partition lasts: past the TCP keepalive and user timeouts of the speaker's
/// apiserver connections (~10 s), so its watches fail and reconnect, and past readiness's grace.
const PARTITION: Duration = Duration::from_secs(20);

/// One node, its speaker cut off from the apiserver while the controller is not: the VIP keeps
/// answering, readiness says the apiserver is unreachable, and once the partition heals the
/// speaker sees a Service created meanwhile and announces it within the recovery bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cut_from_the_apiserver_and_healed() -> Result<()> {
    let mut rig = Rig::start("fault-partition", 1, &[], false).await?;
    rig.pool_and_advertisement("partition", &["198.51.100.232-198.51.100.236"], json!({}))
        .await?;
    rig.scenario.service("web", json!({})).await?;
    let vip: IpAddr = rig.scenario.wait_any_ip("web").await?[0].parse()?;
    let owner = rig.wait_announcer("web", None).await?;
    let server = control_plane::shared().server().to_string();
    let node = rig.lab.nodes()[0].name.clone();

    let block = cut_from_apiserver(std::slice::from_ref(&node), &server)?;
    let cut = Instant::now();
    // Created during the partition: the controller gives it an address, the speaker cannot
    // know yet.
    let api: Api<Service> = rig.scenario.services();
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "during"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 8080}],
                     "selector": {"app": "web"}},
        }))?,
    )
    .await?;
    rig.scenario.wait_any_ip("during").await?;
    let mut reported = false;
    while cut.elapsed() < PARTITION {
        let answer = block_in_place(|| rig.curl(vip)).context("the VIP stopped answering")?;
        assert_eq!(answer, owner, "the VIP moved during the partition");
        if !reported {
            let (code, body) = rig.speaker(0)?.readyz()?;
            reported = code == 503 && body.contains("cannot reach the apiserver");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(
        reported,
        "the cut-off speaker never said it cannot reach the apiserver"
    );
    let during = api.get("during").await?;
    ensure!(
        announced(&during).is_none(),
        "the speaker announced a Service it could not have seen"
    );
    drop(block);
    let healed = Instant::now();
    let took = loop {
        let svc = api.get("during").await?;
        if announced(&svc).is_some_and(|c| c.status == "True") {
            break healed.elapsed();
        }
        ensure!(
            healed.elapsed() < Duration::from_secs(30),
            "no announcement 30 s after the heal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "partition of {PARTITION:?} healed: Service created meanwhile announced {took:?} later"
    );
    ensure!(took < RECOVERY_BOUND, "announced {took:?} after the heal");
    block_in_place(|| rig.speaker(0)?.wait_ready(Duration::from_secs(10)))?;
    assert_eq!(rig.wait_announcer("web", None).await?, owner);
    Ok(())
}

/// A control-plane process killed by the test; started again at the latest when dropped, so a
/// failing test leaves the shared control plane whole for the next.
struct Outage<'a> {
    cp: &'a ControlPlane,
    fault: &'a Fault,
}

impl Outage<'_> {
    /// Starts the process again; returns when the apiserver is ready.
    fn end(self) -> Result<Instant> {
        let ready = (self.fault.restart)(self.cp);
        std::mem::forget(self);
        ready
    }
}

impl Drop for Outage<'_> {
    fn drop(&mut self) {
        if let Err(e) = (self.fault.restart)(self.cp) {
            eprintln!("restarting {} after a failed test: {e:#}", self.fault.name);
        }
    }
}

/// Figures of one outage.
#[derive(Debug)]
struct Recovery {
    /// Apiserver ready -> the new Service has an address.
    address: Duration,
    /// Apiserver ready -> a speaker announces it (condition written).
    announced: Duration,
}

async fn outages(fault: Fault) -> Result<()> {
    let mut rig = Rig::start(&format!("fault-{}", fault.name), 3, &[], false).await?;
    rig.pool_and_advertisement(fault.name, &["198.51.100.220-198.51.100.230"], json!({}))
        .await?;
    rig.scenario.service("web", json!({})).await?;
    let vip: IpAddr = rig.scenario.wait_any_ip("web").await?[0].parse()?;
    let owner = rig.wait_announcer("web", None).await?;
    assert_eq!(
        rig.curl_until(vip, Duration::from_secs(10), |a| !a.is_empty())?,
        owner
    );
    let cp = control_plane::shared();

    let mut figures = Vec::new();
    for run in 0..runs() {
        (fault.kill)(cp);
        let outage = Outage { cp, fault: &fault };
        let down = Instant::now();
        // Throughout the outage the owner keeps answering; once readiness's grace has passed,
        // the controller and every speaker say their watches are down.
        let mut reported = false;
        while down.elapsed() < OUTAGE {
            let answer = block_in_place(|| rig.curl(vip)).with_context(|| {
                format!(
                    "{} outage, run {run}: the VIP stopped answering",
                    fault.name
                )
            })?;
            assert_eq!(answer, owner, "the VIP moved during the outage");
            if !reported && down.elapsed() > Duration::from_secs(7) {
                check_not_ready(&mut rig, &fault)?;
                reported = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ready = block_in_place(|| outage.end())?;
        let name = format!("after-{run}");
        let recovery = serve_new_service(&rig, &name, ready).await?;
        eprintln!(
            "{} outage {run}: {:?} down; new Service addressed {:?} and announced {:?} after the apiserver was ready",
            fault.name,
            ready - down,
            recovery.address,
            recovery.announced
        );
        ensure!(
            recovery.address < RECOVERY_BOUND && recovery.announced < RECOVERY_BOUND,
            "{} outage {run}: recovery {recovery:?} exceeds {RECOVERY_BOUND:?}",
            fault.name
        );
        // Nothing moved: web keeps its address and its announcer, and the pool counts both.
        assert_eq!(rig.scenario.wait_any_ip("web").await?, [vip.to_string()]);
        assert_eq!(rig.wait_announcer("web", None).await?, owner);
        let assigned = 2 + run as u128;
        rig.scenario
            .wait_pool(fault.name, &format!("{assigned} assigned"), |p| {
                p.status.as_ref().map(|s| s.assigned_ipv4.0) == Some(assigned)
            })
            .await?;
        check_ready_again(&mut rig)?;
        figures.push(recovery);
    }
    eprintln!("{} outages: {figures:?}", fault.name);
    Ok(())
}

/// Creates Service `name` (retrying while the test's own connections recover) and measures, from
/// `ready`, when it has an address and when a speaker announces it.
async fn serve_new_service(rig: &Rig, name: &str, ready: Instant) -> Result<Recovery> {
    let api: Api<Service> = rig.scenario.services();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 8080}],
                 "selector": {"app": "web"}},
    }))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match api.create(&PostParams::default(), &svc).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("creating {name}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e).context(format!("creating Service {name}")),
        }
    }
    let mut address = None;
    loop {
        if let Ok(svc) = api.get(name).await {
            if address.is_none() && !ingress(&svc).is_empty() {
                address = Some(ready.elapsed());
            }
            if let (Some(address), Some(c)) = (address, announced(&svc))
                && c.status == "True"
            {
                return Ok(Recovery {
                    address,
                    announced: ready.elapsed(),
                });
            }
        }
        if Instant::now() > deadline {
            bail!(
                "Service {name}: no address or no {} condition 30 s after the apiserver was ready",
                condition::ANNOUNCED
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The controller (and every speaker, when its watches fail) answers `/readyz` 503, saying it
/// cannot reach the apiserver.
fn check_not_ready(rig: &mut Rig, fault: &Fault) -> Result<()> {
    let name = fault.name;
    let (code, body) = scenario::controller().lock().unwrap().readyz()?;
    ensure!(
        code == 503 && body.contains("cannot reach the apiserver"),
        "{name} down for 7 s: the controller answers /readyz {code} {body:?}"
    );
    if !fault.speakers_notice {
        return Ok(());
    }
    for i in 0..rig.speakers.len() {
        let speaker = rig.speaker(i)?;
        let (code, body) = speaker.readyz()?;
        ensure!(
            code == 503 && body.contains("cannot reach the apiserver"),
            "{name} down for 7 s: speaker {i} answers /readyz {code} {body:?}"
        );
    }
    Ok(())
}

/// The controller and every speaker are ready again within a few seconds.
fn check_ready_again(rig: &mut Rig) -> Result<()> {
    block_in_place(|| {
        scenario::controller()
            .lock()
            .unwrap()
            .wait_ready(Duration::from_secs(10))?;
        for i in 0..rig.speakers.len() {
            rig.speaker(i)?.wait_ready(Duration::from_secs(10))?;
        }
        Ok(())
    })
}
