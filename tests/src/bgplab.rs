//! The BGP rig: the layer-2 [`Rig`] (lab nodes, real speakers, the controller) plus a real
//! router ([`Router`]) on the nodes' LAN with the `remote` client behind it. The remote client
//! reaches LoadBalancer IPs only through routes the router learnt from the speakers.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_crds::{BGPAdvertisement, BGPPeer};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::l2lab::Rig;
use crate::router::{NODE_ASN, ROUTER_IPV4, RibEntry, Router, RouterConfig};

/// How long BGP changes may take to reach the router.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A rig with a router.
pub struct BgpRig {
    /// Lab, speakers, controller scenario.
    pub rig: Rig,
    /// The router and remote client.
    pub router: Router,
}

impl std::fmt::Debug for BgpRig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgpRig")
            .field("router", &self.router)
            .finish_non_exhaustive()
    }
}

impl BgpRig {
    /// Starts the layer-2 rig (`nodes` nodes, speakers with `speaker_args`), deletes every
    /// BGPPeer and BGPAdvertisement an earlier test left, starts the router, and routes the
    /// remote network from each node through it (what a node's default route does in a real
    /// network).
    pub async fn start(
        name: &str,
        nodes: usize,
        speaker_args: &[&str],
        router: RouterConfig,
    ) -> Result<BgpRig> {
        let rig = Rig::start(name, nodes, speaker_args, false).await?;
        let client = rig.scenario.client.clone();
        delete_all::<BGPPeer>(&client).await?;
        delete_all::<BGPAdvertisement>(&client).await?;
        let router = tokio::task::spawn_blocking(move || Router::start(router)).await??;
        for host in rig.lab.nodes() {
            Router::route_from(host)?;
        }
        Ok(BgpRig { rig, router })
    }

    /// The usual setup: pool `pool` with `addresses`, BGPPeer `router` (the nodes' AS, the
    /// router's AS and IPv4 address, with `peer_extra` merged over them) and a BGPAdvertisement
    /// `pool` of the pool.
    pub async fn announce_pool(
        &self,
        pool: &str,
        addresses: Value,
        peer_extra: Value,
    ) -> Result<()> {
        self.rig
            .scenario
            .pool(pool, json!({"addresses": addresses}))
            .await?;
        let mut peer = json!({"myASN": NODE_ASN, "peerASN": self.router.config.asn,
                              "peerAddress": ROUTER_IPV4.to_string()});
        crate::scenario::merge(&mut peer, peer_extra);
        self.peer("router", peer).await?;
        self.advertisement(pool, json!({"ipAddressPools": [pool]}))
            .await
    }

    /// Applies `BGPPeer` `name` with `spec`.
    pub async fn peer(&self, name: &str, spec: Value) -> Result<()> {
        apply::<BGPPeer>(&self.rig.scenario.client, "BGPPeer", name, spec).await
    }

    /// Applies `BGPAdvertisement` `name` with `spec`.
    pub async fn advertisement(&self, name: &str, spec: Value) -> Result<()> {
        apply::<BGPAdvertisement>(&self.rig.scenario.client, "BGPAdvertisement", name, spec).await
    }

    /// Deletes `BGPAdvertisement` `name`.
    pub async fn delete_advertisement(&self, name: &str) -> Result<()> {
        Api::<BGPAdvertisement>::all(self.rig.scenario.client.clone())
            .delete(name, &DeleteParams::default())
            .await?;
        Ok(())
    }

    /// Waits until the router's route for `prefix` satisfies `ok` (`None`: no route).
    pub async fn wait_route(
        &self,
        prefix: &str,
        what: &str,
        ok: impl Fn(Option<&RibEntry>) -> bool,
    ) -> Result<Option<RibEntry>> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let rib = self.router.rib()?;
            if ok(rib.get(prefix)) {
                return Ok(rib.get(prefix).cloned());
            }
            if Instant::now() > deadline {
                bail!(
                    "{prefix}: {what} not reached within {TIMEOUT:?}; the router has {:?}\n{}",
                    rib.get(prefix),
                    self.router.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the router's route for `prefix` has exactly the next hops `hops`.
    pub async fn wait_next_hops(&self, prefix: &str, hops: &[IpAddr]) -> Result<RibEntry> {
        let want: BTreeSet<IpAddr> = hops.iter().copied().collect();
        self.wait_route(prefix, &format!("next hops {want:?}"), |e| {
            e.is_some_and(|e| e.next_hops == want)
        })
        .await?
        .context("route present")
    }

    /// `curl http://ip/` from the remote client: the answering node's name.
    pub fn remote_curl(&self, ip: IpAddr) -> Result<String> {
        let url = match ip {
            IpAddr::V4(v4) => format!("http://{v4}/"),
            IpAddr::V6(v6) => format!("http://[{v6}]/"),
        };
        Ok(self
            .router
            .remote
            .exec("curl", &["-sS", "--max-time", "2", &url])?
            .trim()
            .to_string())
    }
}

async fn delete_all<K>(client: &kube::Client) -> Result<()>
where
    K: kube::Resource<Scope = kube::core::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(client.clone());
    for o in api.list(&ListParams::default()).await? {
        if let Some(n) = o.meta().name.clone() {
            api.delete(&n, &DeleteParams::default()).await?;
        }
    }
    Ok(())
}

async fn apply<K>(client: &kube::Client, kind: &str, name: &str, spec: Value) -> Result<()>
where
    K: kube::Resource<Scope = kube::core::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let body = json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    });
    Api::<K>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("ferrolb-tests").force(),
            &Patch::Apply(&body),
        )
        .await
        .with_context(|| format!("applying {kind} {name}"))?;
    Ok(())
}
