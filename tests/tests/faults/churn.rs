//! Speakers die and come back while Services come and go.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, ensure};
use ferrolb_tests::l2lab::Rig;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::task::block_in_place;

/// The owner's speaker SIGKILLed and restarted three times while Services come and go: at the
/// end every Service with an address is announced, each address by exactly one node, which alone
/// answers ARP for it; no speaker holds an address another holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_sigkill_and_restart_under_churn() -> Result<()> {
    let mut rig = Rig::start("fault-churn", 3, &[], false).await?;
    rig.pool_and_advertisement("churn", &["198.51.100.240-198.51.100.251"], json!({}))
        .await?;
    rig.scenario.service("web", json!({})).await?;
    rig.scenario.wait_any_ip("web").await?;
    let api: Api<Service> = rig.scenario.services();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let churn = {
        let (api, stop, count) = (api.clone(), stop.clone(), count.clone());
        tokio::spawn(async move {
            let mut created = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let svc: Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("churn-{created}")},
                    "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 8080}],
                             "selector": {"app": "web"}},
                }))?;
                api.create(&PostParams::default(), &svc).await?;
                if created >= 6 {
                    api.delete(&format!("churn-{}", created - 6), &Default::default())
                        .await?;
                }
                created += 1;
                count.store(created, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            anyhow::Ok(created)
        })
    };
    for round in 0..3 {
        let owner = rig.wait_announcer("web", None).await?;
        let i = rig.index_of(&owner)?;
        rig.speaker(i)?.kill();
        rig.speakers[i] = None;
        let next = rig.wait_announcer("web", Some(&owner)).await?;
        ensure!(
            next != owner,
            "round {round}: web stayed with its dead owner"
        );
        block_in_place(|| -> Result<()> {
            rig.start_speaker(i)?;
            rig.speaker(i)?.wait_ready(Duration::from_secs(20))
        })?;
    }
    // The churn goes on for a while after the last restart too.
    let until = count.load(Ordering::Relaxed) + 10;
    while count.load(Ordering::Relaxed) < until && !churn.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let created = churn.await??;
    ensure!(
        created >= 10,
        "only {created} Services were created during the run"
    );

    // Converged: every Service with an address is announced by one node, which alone answers.
    let services = api.list(&Default::default()).await?.items;
    let mut vips = Vec::new();
    for svc in &services {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let ips = rig.scenario.wait_any_ip(&name).await?;
        let announcer = rig.wait_announcer(&name, None).await?;
        vips.push((name, ips[0].parse::<IpAddr>()?, announcer));
    }
    let owned = "ferrolb_speaker_owned_ips";
    block_in_place(|| {
        ferrolb_tests::process::wait_for("each address owned once", Duration::from_secs(10), || {
            let total: f64 = (0..3).map(|i| rig.metric(i, owned)).sum::<Result<f64>>()?;
            Ok((total == vips.len() as f64).then_some(()))
        })
    })?;
    for (name, vip, announcer) in &vips {
        let mac = rig.host(announcer)?.mac.clone();
        let replies = block_in_place(|| rig.arping(*vip, 1))?;
        assert_eq!(replies, [mac], "{name} ({vip}), announced by {announcer}");
    }
    Ok(())
}
