//! The testbed itself: control plane lifecycle, lab connectivity, apiserver reachable from a node.

use std::time::Duration;

use ferrolb_tests::control_plane::{self, ControlPlane, Options};
use ferrolb_tests::process::wait_for;
use ferrolb_tests::{Lab, lab};
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

fn pid_alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; a reaped process does not. Our handles reap on kill.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A control plane of this test's own (no controller manager), not the shared one.
fn private_control_plane(prefix: &str) -> ControlPlane {
    ControlPlane::start(&Options {
        dir: control_plane::process_dir().join(control_plane::unique_name(prefix)),
        controller_manager: false,
        workloads: false,
        port: 0,
        detached: false,
    })
    .unwrap()
}

#[test]
fn control_plane_serves_and_leaves_no_process_behind_when_dropped() {
    let cp = private_control_plane("own");
    let version = cp.kubectl_run(&["version", "-o", "json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert!(
        v["serverVersion"]["gitVersion"]
            .as_str()
            .unwrap()
            .starts_with("v1.37."),
        "version ldflags are set: {v}"
    );
    let pids = cp.pids();
    assert!(pids[0] > 0 && pids[1] > 0 && pids[2] == 0, "{pids:?}");
    assert!(pids[..2].iter().all(|p| pid_alive(*p)));
    drop(cp);
    assert!(
        pids[..2].iter().all(|p| !pid_alive(*p)),
        "etcd and kube-apiserver are gone after drop"
    );
}

#[test]
fn control_plane_is_torn_down_when_a_test_panics() {
    let pids = std::sync::Mutex::new([0u32; 3]);
    let outcome = std::panic::catch_unwind(|| {
        let cp = private_control_plane("panic");
        *pids.lock().unwrap() = cp.pids();
        panic!("a failing test");
    });
    assert!(outcome.is_err());
    let pids = *pids.lock().unwrap();
    assert!(pids[0] > 0 && pids[1] > 0);
    assert!(
        pids[..2].iter().all(|p| !pid_alive(*p)),
        "unwinding killed etcd and kube-apiserver"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apiserver_has_rbac_and_dual_stack_service_ranges() {
    let cp = control_plane::shared();
    let client = cp.client().await.unwrap();
    let ns = control_plane::unique_name("dual");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "dual"},
        "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"],
                 "ports": [{"port": 80, "protocol": "TCP"}]}
    }))
    .unwrap();
    let created = services.create(&PostParams::default(), &svc).await.unwrap();
    let ips = created.spec.unwrap().cluster_ips.unwrap();
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert!(
        ips[0].starts_with("198.18.") && ips[1].starts_with("2001:db8:ffff:"),
        "{ips:?}"
    );
    let v6: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "v6-only"},
        "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"], "ports": [{"port": 80}]}
    }))
    .unwrap();
    let created = services.create(&PostParams::default(), &v6).await.unwrap();
    assert!(
        created
            .spec
            .unwrap()
            .cluster_ip
            .unwrap()
            .starts_with("2001:db8:ffff:")
    );

    // RBAC is enforced: an unknown service account may not list Nodes.
    let denied = cp
        .kubectl_run(&[
            "auth",
            "can-i",
            "list",
            "nodes",
            "--as=system:serviceaccount:default:nobody",
        ])
        .unwrap_err();
    assert!(format!("{denied:#}").contains("no"), "{denied:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn lab_client_reaches_every_node_and_nodes_reach_the_apiserver() {
    let cp = control_plane::shared();
    let lab = Lab::create(3).unwrap();
    let client = cp.client().await.unwrap();
    lab.register_nodes(&client).await.unwrap();

    for node in lab.nodes() {
        for addr in [node.ipv4.to_string(), node.ipv6.to_string()] {
            lab.client()
                .exec("ping", &["-c", "1", "-W", "2", &addr])
                .unwrap_or_else(|e| panic!("client cannot ping {} at {addr}: {e:#}", node.name));
        }
        // The client learned the node's real MAC over the bridge.
        let neigh = lab
            .client()
            .exec("ip", &["neigh", "show", &node.ipv4.to_string()])
            .unwrap();
        assert!(neigh.contains(&node.mac), "{neigh}");
    }

    // A process inside node2 lists Nodes from the apiserver over lab0.
    let kubectl = ferrolb_tests::bins::binary("kubectl").unwrap();
    let out = lab.nodes()[1]
        .exec(
            kubectl.to_str().unwrap(),
            &[
                &format!("--kubeconfig={}", cp.kubeconfig().display()),
                "get",
                "nodes",
                "-o",
                "name",
            ],
        )
        .unwrap();
    for node in lab.nodes() {
        assert!(out.contains(&format!("node/{}", node.name)), "{out}");
    }
    // Node objects carry the lab addresses and are Ready.
    let nodes: Api<Node> = Api::all(client);
    let node1 = nodes.get("node1").await.unwrap();
    let addrs: Vec<String> = node1
        .status
        .unwrap()
        .addresses
        .unwrap()
        .into_iter()
        .map(|a| a.address)
        .collect();
    assert!(
        addrs.contains(&"198.51.100.11".to_string())
            && addrs.contains(&"2001:db8:1::11".to_string()),
        "{addrs:?}"
    );
    let listed = nodes
        .list(&ListParams::default().labels("ferrolb.io/lab-node=true"))
        .await
        .unwrap();
    assert!(listed.items.len() >= 3);

    drop(lab);
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left
            .lines()
            .any(|l| l.starts_with("node") || l.starts_with(lab::CLIENT)),
        "namespaces left: {left}"
    );
}

#[test]
fn a_second_lab_waits_for_the_first() {
    let first = Lab::create(1).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let second = Lab::create(2).unwrap();
        tx.send(second.nodes().len()).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "second lab must block while the first exists"
    );
    drop(first);
    assert_eq!(
        wait_for("second lab", Duration::from_secs(30), || Ok(rx
            .try_recv()
            .ok()))
        .unwrap(),
        2
    );
    waiter.join().unwrap();
}

/// Points the client's neighbour entries for the lab's first VIPs at `node`, as an ARP/NDP answer
/// from that node would.
fn resolve_vips_to(lab: &Lab, node: &ferrolb_tests::Host) {
    for vip in ["198.51.100.200", "2001:db8:1::200"] {
        lab.client()
            .exec(
                "ip",
                &[
                    "neigh",
                    "replace",
                    vip,
                    "lladdr",
                    &node.mac,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ],
            )
            .unwrap();
    }
}

/// `curl` from the client: the body.
fn curl_from_client(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["-sS", "--max-time", "5"];
    all.extend_from_slice(args);
    lab.client()
        .exec("curl", &all)
        .unwrap_or_else(|e| panic!("curl {}: {e:#}", args.join(" ")))
}

fn process_gone(pid: u32) -> bool {
    // Gone, or a zombie its (killed) handle has not reaped yet.
    std::fs::read_to_string(format!("/proc/{pid}/status")).map_or(true, |s| s.contains("State:\tZ"))
}

#[test]
fn backends_answer_a_vip_on_the_node_the_client_resolved_it_to() {
    let lab = Lab::create(3).unwrap();
    let backends = lab.start_backends().unwrap();
    let pids = backends.pids();
    assert_eq!(pids.len(), 3);

    for node in [&lab.nodes()[1], &lab.nodes()[2]] {
        resolve_vips_to(&lab, node);
        let want = format!("{}\n", node.name);
        assert_eq!(
            curl_from_client(&lab, &["http://198.51.100.200/"]),
            want,
            "IPv4"
        );
        assert_eq!(
            curl_from_client(&lab, &["-6", "http://[2001:db8:1::200]/"]),
            want,
            "IPv6"
        );
        // Other ports and protocols reach the node itself: ping answers from the VIP.
        for vip in ["198.51.100.200", "2001:db8:1::200"] {
            let out = lab
                .client()
                .exec("ping", &["-c", "1", "-W", "2", vip])
                .unwrap_or_else(|e| panic!("ping {vip} via {}: {e:#}", node.name));
            assert!(out.contains(&format!("from {vip}")), "{out}");
        }
    }

    // The rules match the lab VIP ranges.
    let ruleset = lab.nodes()[0].exec("nft", &["list", "ruleset"]).unwrap();
    assert!(ruleset.contains(lab::VIP_RANGE_V4) && ruleset.contains(lab::VIP_RANGE_V6));

    // Tearing the lab down stops the backends even while their guard is alive; dropping the guard
    // afterwards is harmless.
    drop(lab);
    assert!(
        pids.iter().all(|p| process_gone(*p)),
        "backends outlived the lab"
    );
    drop(backends);
}

#[test]
fn dropping_backends_stops_them_and_removes_their_rules() {
    let lab = Lab::create(1).unwrap();
    let node = &lab.nodes()[0];
    let backends = lab.start_backends().unwrap();
    let pids = backends.pids();
    assert!(
        node.exec("nft", &["list", "tables"])
            .unwrap()
            .contains("ferrolb_lab")
    );
    drop(backends);
    assert!(pids.iter().all(|p| process_gone(*p)));
    assert!(
        !node
            .exec("nft", &["list", "tables"])
            .unwrap()
            .contains("ferrolb_lab")
    );
}
