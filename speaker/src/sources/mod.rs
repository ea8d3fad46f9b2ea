//! What the speaker reads from the API: caches (reflectors) of Services, EndpointSlices, Nodes,
//! IPAddressPools, L2Advertisements and the BGP objects (`bgp.rs`), a change counter, a journal of what changed
//! (`journal.rs`), and their conversion into the [`crate::model`] types ([`Snapshot`],
//! membership [`Peer`]s) the pure code works on: whole ([`Sources::snapshot`]) or by updating
//! only what the journal names ([`Sources::refresh`]).

mod bgp;
mod journal;

pub use journal::{Journal, SliceIndex};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use ferrolb_crds::address::parse_entry;
use ferrolb_crds::contract::{annotation, label};
use ferrolb_crds::{
    BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement, ServiceKey,
};
use ferrolb_runtime::health::HealthState;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::membership::Peer;
use crate::model::{Advertisement, NodeInfo, PoolInfo, ServiceInfo, Snapshot};

/// The caches, kept current by background watches.
#[derive(Clone, Debug)]
pub struct Sources {
    /// LoadBalancer Services (every namespace).
    pub services: Store<Service>,
    /// EndpointSlices (every namespace).
    pub slices: Store<EndpointSlice>,
    /// Nodes.
    pub nodes: Store<Node>,
    /// Pools.
    pub pools: Store<IPAddressPool>,
    /// Advertisements.
    pub advertisements: Store<L2Advertisement>,
    /// BGP peers.
    pub bgp_peers: Store<BGPPeer>,
    /// BGP advertisements.
    pub bgp_advertisements: Store<BGPAdvertisement>,
    /// Community names.
    pub communities: Store<Community>,
    /// BFD profiles.
    pub bfd_profiles: Store<BFDProfile>,
    /// What the watches changed since [`Sources::refresh`] last read it.
    pub journal: Arc<Mutex<Journal>>,
}

/// The watch tasks; dropping this stops them.
#[derive(Debug)]
pub struct Watches(Vec<JoinHandle<()>>);

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl Sources {
    /// Starts the watches, each reported in `health`'s readiness while it fails. The receiver's
    /// value changes on every watch event.
    pub fn start(
        client: &Client,
        health: &HealthState,
    ) -> (Sources, watch::Receiver<u64>, Watches) {
        let (tx, rx) = watch::channel(0u64);
        let journal = Arc::new(Mutex::new(Journal::everything()));
        let mut spawner = Spawner {
            client,
            health,
            changed: tx,
            journal: journal.clone(),
            tasks: Vec::new(),
        };
        let all = watcher::Config::default;
        let sources = Sources {
            services: spawner.watch(
                all().fields("spec.type=LoadBalancer"),
                "Services",
                Journal::note_service,
            ),
            slices: spawner.watch(all(), "EndpointSlices", Journal::note_slice),
            nodes: spawner.watch(all(), "Nodes", |j, _| j.nodes = true),
            pools: spawner.watch(all(), "IPAddressPools", |j, _| j.pools = true),
            advertisements: spawner
                .watch(all(), "L2Advertisements", |j, _| j.advertisements = true),
            bgp_peers: spawner.watch(all(), "BGPPeers", |j, _| j.bgp = true),
            bgp_advertisements: spawner.watch(all(), "BGPAdvertisements", |j, _| j.bgp = true),
            communities: spawner.watch(all(), "Communities", |j, _| j.bgp = true),
            bfd_profiles: spawner.watch(all(), "BFDProfiles", |j, _| j.bgp = true),
            journal,
        };
        (sources, rx, Watches(spawner.tasks))
    }

    /// Waits until every cache holds a complete first list.
    pub async fn synced(&self) {
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
        let _ = self.pools.wait_until_ready().await;
        let _ = self.advertisements.wait_until_ready().await;
        let _ = self.bgp_peers.wait_until_ready().await;
        let _ = self.bgp_advertisements.wait_until_ready().await;
        let _ = self.communities.wait_until_ready().await;
        let _ = self.bfd_profiles.wait_until_ready().await;
    }

    /// The current state as election input, for Services of `lb_class`.
    pub fn snapshot(&self, lb_class: Option<&str>) -> Snapshot {
        let all_services = self.services.state();
        // Endpoints matter only for handled `externalTrafficPolicy: Local` Services: every
        // other EndpointSlice of the cluster (most of them, usually) is skipped unread.
        let local: HashSet<(&str, &str)> = all_services
            .iter()
            .filter(|s| is_handled_local(s, lb_class))
            .filter_map(|s| {
                Some((
                    s.metadata.namespace.as_deref()?,
                    s.metadata.name.as_deref()?,
                ))
            })
            .collect();
        let mut endpoints: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
        if !local.is_empty() {
            for slice in self.slices.state() {
                let (Some(ns), Some(svc)) = (
                    slice.metadata.namespace.as_deref(),
                    slice.labels().get(label::SERVICE_NAME),
                ) else {
                    continue;
                };
                if !local.contains(&(ns, svc.as_str())) {
                    continue;
                }
                endpoints
                    .entry((ns.to_string(), svc.clone()))
                    .or_default()
                    .extend(ready_endpoint_nodes(&slice));
            }
        }
        let services = all_services
            .iter()
            .filter_map(|s| service_info(s, lb_class, &endpoints))
            .map(|svc| (svc.key.clone(), svc))
            .collect();
        Snapshot {
            nodes: self.node_infos(),
            pools: self.pool_infos(),
            advertisements: self.advertisement_infos(),
            services,
            bgp: self.bgp_config(),
        }
    }

    /// Every Node, as eligibility reads it.
    fn node_infos(&self) -> BTreeMap<String, NodeInfo> {
        self.nodes
            .state()
            .iter()
            .map(|n| (n.name_any(), node_info(n)))
            .collect()
    }

    /// Every pool, as eligibility reads it.
    fn pool_infos(&self) -> BTreeMap<String, PoolInfo> {
        self.pools
            .state()
            .iter()
            .map(|p| (p.name_any(), pool_info(p)))
            .collect()
    }

    /// Every advertisement, by name (the caches iterate in no fixed order).
    fn advertisement_infos(&self) -> Vec<Advertisement> {
        let mut ads: Vec<Advertisement> = self
            .advertisements
            .state()
            .iter()
            .map(|a| advertisement(a))
            .collect();
        ads.sort_by(|a, b| a.name.cmp(&b.name));
        ads
    }

    /// Whether a Node event arrived since the snapshot was last refreshed.
    pub fn nodes_changed(&self) -> bool {
        self.journal.lock().unwrap_or_else(|e| e.into_inner()).nodes
    }

    /// Every other node as a membership peer, at its InternalIP of `family_v4`'s family.
    pub fn peers(&self, me: &str, port: u16, family_v4: bool) -> Vec<Peer> {
        self.nodes
            .state()
            .iter()
            .filter(|n| n.name_any() != me)
            .filter_map(|n| {
                let ip = internal_ip(n, family_v4)?;
                Some(Peer {
                    name: n.name_any(),
                    addr: SocketAddr::new(ip, port),
                    node_ready: condition_true(n, "Ready"),
                })
            })
            .collect()
    }

    /// This node's InternalIP addresses (IPv4 first).
    pub fn own_addresses(&self, me: &str) -> Vec<IpAddr> {
        let Some(node) = self.nodes.get(&reflector::ObjectRef::new(me)) else {
            return Vec::new();
        };
        let mut ips: Vec<IpAddr> = [true, false]
            .iter()
            .filter_map(|v4| internal_ip(&node, *v4))
            .collect();
        ips.dedup();
        ips
    }
}

/// Starts watches that share one change counter.
struct Spawner<'a> {
    client: &'a Client,
    health: &'a HealthState,
    changed: watch::Sender<u64>,
    journal: Arc<Mutex<Journal>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Spawner<'_> {
    /// A cache of every `K` (cluster-wide) matching `config`, kept current by a new task that
    /// notes each event in the journal (`note`) and bumps the change counter; `what` names the
    /// objects in warnings and readiness.
    fn watch<K>(
        &mut self,
        config: watcher::Config,
        what: &'static str,
        note: fn(&mut Journal, &watcher::Event<K>),
    ) -> Store<K>
    where
        K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone,
    {
        let api = Api::<K>::all(self.client.clone());
        let changed = self.changed.clone();
        let journal = self.journal.clone();
        let (store, writer) = reflector::store();
        let status = self.health.watch_status(what);
        // The caches hold every object of the cluster; managed fields' field sets (a JSON tree
        // per writer, a large part of each object) are never read, so they are dropped first.
        let objects = watcher(api, config).modify(|o| o.managed_fields_mut().clear());
        let stream =
            ferrolb_runtime::watch::resilient(reflector::reflector(writer, objects), status);
        self.tasks.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                note(
                    &mut journal.lock().unwrap_or_else(|e| e.into_inner()),
                    &event,
                );
                changed.send_modify(|n| *n = n.wrapping_add(1));
            }
        }));
        store
    }
}

fn condition_true(node: &Node, type_: &str) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

fn internal_ip(node: &Node, v4: bool) -> Option<IpAddr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv4() == v4)
}

/// The node fields eligibility reads.
pub fn node_info(node: &Node) -> NodeInfo {
    NodeInfo {
        name: node.name_any(),
        labels: node.labels().clone(),
        network_unavailable: condition_true(node, "NetworkUnavailable"),
    }
}

/// The pool fields eligibility reads; entries that do not parse are skipped (the controller
/// reports them on the pool).
pub fn pool_info(pool: &IPAddressPool) -> PoolInfo {
    PoolInfo {
        name: pool.name_any(),
        labels: pool.labels().clone(),
        ranges: pool
            .spec
            .addresses
            .iter()
            .filter_map(|e| parse_entry(e).ok())
            .collect(),
    }
}

/// The advertisement fields eligibility reads.
pub fn advertisement(ad: &L2Advertisement) -> Advertisement {
    Advertisement {
        name: ad.name_any(),
        pools: ad.spec.ip_address_pools.clone(),
        pool_selectors: ad.spec.ip_address_pool_selectors.clone(),
        node_selectors: ad.spec.node_selectors.clone(),
        interfaces: ad.spec.interfaces.clone(),
    }
}

/// Nodes with an endpoint that is ready, or serving while terminating (a ready condition that
/// is absent counts as ready, per the EndpointSlice API).
fn ready_endpoint_nodes(slice: &EndpointSlice) -> impl Iterator<Item = String> + '_ {
    slice.endpoints.iter().flatten().filter_map(|e| {
        let c = e.conditions.as_ref();
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        let serving = c.and_then(|c| c.serving).unwrap_or(ready);
        (ready || serving).then(|| e.node_name.clone()).flatten()
    })
}

/// Whether `svc` is a LoadBalancer Service of `lb_class` with `externalTrafficPolicy: Local`.
fn is_handled_local(svc: &Service, lb_class: Option<&str>) -> bool {
    svc.spec.as_ref().is_some_and(|spec| {
        spec.type_.as_deref() == Some("LoadBalancer")
            && spec.load_balancer_class.as_deref() == lb_class
            && spec.external_traffic_policy.as_deref() == Some("Local")
    })
}

/// A handled LoadBalancer Service with ingress IPs, as election input; `None` for Services of
/// another class, of another type, or without an address yet.
pub fn service_info(
    svc: &Service,
    lb_class: Option<&str>,
    endpoints: &HashMap<(String, String), BTreeSet<String>>,
) -> Option<ServiceInfo> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer")
        || spec.load_balancer_class.as_deref() != lb_class
    {
        return None;
    }
    let ips: Vec<IpAddr> = svc
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .iter()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect();
    if ips.is_empty() {
        return None;
    }
    let namespace = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    let endpoint_nodes = if local {
        endpoints
            .get(&(namespace.clone(), name.clone()))
            .cloned()
            .unwrap_or_default()
    } else {
        BTreeSet::new()
    };
    Some(ServiceInfo {
        key: ServiceKey::new(namespace, name),
        ips,
        pool: svc
            .annotations()
            .get(annotation::ALLOCATED_FROM_POOL)
            .cloned(),
        local,
        endpoint_nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: serde_json::Value, ingress: &[&str]) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns",
                         "annotations": {(annotation::ALLOCATED_FROM_POOL): "lan"}},
            "spec": spec,
            "status": {"loadBalancer": {"ingress":
                ingress.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>()}},
        }))
        .unwrap()
    }

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "ns",
                         "labels": {(label::SERVICE_NAME): "web"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    #[test]
    fn only_handled_load_balancers_with_addresses_are_read() {
        let none = HashMap::new();
        let lb = json!({"type": "LoadBalancer"});
        let info = service_info(&svc(lb.clone(), &["198.51.100.200"]), None, &none).unwrap();
        assert_eq!(info.key.to_string(), "ns/web");
        assert_eq!(info.pool.as_deref(), Some("lan"));
        assert!(!info.local);
        // Another class, another type, or no address yet: not ours to announce.
        let classed = json!({"type": "LoadBalancer", "loadBalancerClass": "other"});
        assert!(service_info(&svc(classed.clone(), &["198.51.100.200"]), None, &none).is_none());
        assert!(service_info(&svc(classed, &["198.51.100.200"]), Some("other"), &none).is_some());
        let cluster_ip = json!({"type": "ClusterIP"});
        assert!(service_info(&svc(cluster_ip, &["198.51.100.200"]), None, &none).is_none());
        assert!(service_info(&svc(lb.clone(), &[]), None, &none).is_none());
        // A hostname-only or garbage ingress entry is skipped, not fatal.
        let odd = svc(lb, &["not-an-ip", "2001:db8:1::200"]);
        let info = service_info(&odd, None, &none).unwrap();
        assert_eq!(info.ips, vec!["2001:db8:1::200".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn local_services_carry_the_nodes_with_ready_or_serving_endpoints() {
        let s = slice(json!([
            {"addresses": ["10.0.0.1"], "nodeName": "node1", "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"], "nodeName": "node2",
             "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.0.0.3"], "nodeName": "node3",
             "conditions": {"ready": false, "serving": false}},
            {"addresses": ["10.0.0.4"], "nodeName": "node4"},
            {"addresses": ["10.0.0.5"], "conditions": {"ready": true}},
        ]));
        let nodes: BTreeSet<String> = ready_endpoint_nodes(&s).collect();
        assert_eq!(nodes, ["node1", "node2", "node4"].map(String::from).into());
        let endpoints = HashMap::from([(("ns".to_string(), "web".to_string()), nodes)]);
        let local = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"});
        let info = service_info(&svc(local, &["198.51.100.200"]), None, &endpoints).unwrap();
        assert!(info.local);
        assert_eq!(info.endpoint_nodes.len(), 3);
        // Cluster policy ignores endpoints.
        let cluster = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Cluster"});
        let info = service_info(&svc(cluster, &["198.51.100.200"]), None, &endpoints).unwrap();
        assert!(info.endpoint_nodes.is_empty());
    }

    fn store<K>(objects: Vec<K>) -> Store<K>
    where
        K: Resource + Clone + 'static,
        K::DynamicType: Default + Eq + Hash + Clone,
    {
        let (reader, mut writer) = reflector::store();
        for o in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(o));
        }
        reader
    }

    fn named_slice(ns: &str, name: &str, service: &str, node: &str) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": {(label::SERVICE_NAME): service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": node}],
        }))
        .unwrap()
    }

    fn named_svc(ns: &str, name: &str, spec: serde_json::Value, ip: &str) -> Service {
        let mut s = svc(spec, &[ip]);
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        s
    }

    #[test]
    fn snapshots_read_the_endpoints_of_local_services_from_every_slice_of_theirs_only() {
        let local = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"});
        let cluster = json!({"type": "LoadBalancer"});
        let sources = Sources {
            services: store(vec![
                named_svc("ns", "web", local.clone(), "198.51.100.200"),
                named_svc("ns", "api", cluster, "198.51.100.201"),
                named_svc("other", "web", local, "198.51.100.202"),
            ]),
            slices: store(vec![
                // Two slices of ns/web; one of the same name in another namespace; one of a
                // Cluster-policy Service; one of a Service that does not exist.
                named_slice("ns", "web-1", "web", "node1"),
                named_slice("ns", "web-2", "web", "node2"),
                named_slice("other", "web-1", "web", "node3"),
                named_slice("ns", "api-1", "api", "node4"),
                named_slice("ns", "gone-1", "gone", "node5"),
            ]),
            nodes: store(Vec::new()),
            pools: store(Vec::new()),
            advertisements: store(Vec::new()),
            bgp_peers: store(Vec::new()),
            bgp_advertisements: store(Vec::new()),
            communities: store(Vec::new()),
            bfd_profiles: store(Vec::new()),
            journal: Default::default(),
        };
        let snap = sources.snapshot(None);
        let by_key: HashMap<String, &ServiceInfo> = snap
            .services
            .iter()
            .map(|(k, s)| (k.to_string(), s))
            .collect();
        assert_eq!(by_key.len(), 3);
        let nodes = |k: &str| by_key[k].endpoint_nodes.iter().cloned().collect::<Vec<_>>();
        assert_eq!(nodes("ns/web"), ["node1", "node2"]);
        assert_eq!(nodes("other/web"), ["node3"]);
        assert!(nodes("ns/api").is_empty());
        // Sorted by key, so equal caches give equal snapshots.
        let keys: Vec<String> = snap.services.keys().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["ns/api", "ns/web", "other/web"]);
        assert_eq!(snap, sources.snapshot(None));
    }

    #[test]
    fn nodes_pools_and_advertisements_convert() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "node1", "labels": {"role": "edge"}},
            "status": {
                "conditions": [{"type": "NetworkUnavailable", "status": "True"},
                               {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "2001:db8:1::11"},
                              {"type": "InternalIP", "address": "198.51.100.11"},
                              {"type": "Hostname", "address": "node1"}]
            }
        }))
        .unwrap();
        let info = node_info(&node);
        assert!(info.network_unavailable);
        assert_eq!(info.labels["role"], "edge");
        assert_eq!(
            internal_ip(&node, true),
            Some("198.51.100.11".parse().unwrap())
        );
        assert_eq!(
            internal_ip(&node, false),
            Some("2001:db8:1::11".parse().unwrap())
        );
        assert!(condition_true(&node, "Ready"));

        let pool: IPAddressPool = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "lan"},
            "spec": {"addresses": ["198.51.100.200/29", "not an address"]}
        }))
        .unwrap();
        let p = pool_info(&pool);
        assert_eq!(p.ranges.len(), 1);
        assert!(p.contains("198.51.100.201".parse().unwrap()));
    }
}
