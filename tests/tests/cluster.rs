//! `cargo xtask cluster up|down` (through the library functions it calls). In a test binary of
//! its own: while it runs, a cluster-up lab exists and other lab tests must not.

use std::sync::Mutex;

use ferrolb_tests::router;
use ferrolb_tests::{bins, cluster, control_plane, demo, lab, process::run};

/// One `cluster up` at a time: they share the lab names and the marker.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `cluster::down` when dropped, so a failing test leaves no cluster behind.
struct DownOnDrop;

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if let Err(e) = cluster::down() {
            eprintln!("cluster down: {e:#}");
        }
    }
}

fn running(pid: u32) -> bool {
    // Gone, or a zombie awaiting its (re)parent: either way no longer running.
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|status| !status.contains("State:\tZ"))
}

fn namespaces() -> String {
    run(std::process::Command::new("ip").args(["netns", "list"])).unwrap()
}

#[test]
fn cluster_up_serves_a_ready_lab_and_down_removes_everything() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = control_plane::process_dir().join("cluster");
    let up = cluster::up(&dir, 2, 0).unwrap();

    // The env file is enough to use the cluster from a shell.
    let env = std::fs::read_to_string(&up.env_file).unwrap();
    for line in [
        "export KUBECONFIG=",
        "export PATH=",
        "FERROLB_LAB_NODES=\"node1 node2\"",
        "FERROLB_LAB_CLIENT=client",
    ] {
        assert!(env.contains(line), "{line} missing from:\n{env}");
    }
    assert!(env.contains(&bins::bin_dir().unwrap().display().to_string()));
    let script = format!(
        ". {} && kubectl get nodes -o name && which helm",
        up.env_file.display()
    );
    let out = run(std::process::Command::new("bash").args(["-c", &script])).unwrap();
    assert!(
        out.contains("node/node1") && out.contains("node/node2") && out.contains("/helm"),
        "{out}"
    );
    // Processes outlive the call that started them, and another lab is refused meanwhile.
    assert!(
        up.pids
            .iter()
            .all(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    );
    let refused = ferrolb_tests::Lab::create(1).unwrap_err();
    assert!(
        format!("{refused:#}").contains("cluster down"),
        "{refused:#}"
    );
    assert!(namespaces().contains("node2"));

    cluster::down().unwrap();
    for p in &up.pids {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        // Gone, or a zombie awaiting its (re)parent: either way no longer running.
        assert!(
            status.is_empty() || status.contains("State:\tZ"),
            "pid {p} still runs:\n{status}"
        );
    }
    let left = namespaces();
    assert!(
        !left
            .lines()
            .any(|l| l.starts_with("node") || l.starts_with("client")),
        "{left}"
    );
    assert!(
        std::process::Command::new("ip")
            .args(["link", "show", lab::BRIDGE])
            .output()
            .unwrap()
            .status
            .code()
            != Some(0)
    );
    assert!(!std::path::Path::new(lab::CLUSTER_MARKER).exists());
}

#[test]
fn cluster_up_runs_ferrolb_whose_vip_answers_and_down_stops_every_process() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = control_plane::process_dir().join("cluster-ferrolb");
    let up = cluster::up_with(
        &dir,
        &cluster::UpOptions {
            nodes: 2,
            port: 0,
            real_nodes: None,
            run_ferrolb: true,
            router: Some(router::Kind::Frr),
        },
    )
    .unwrap();
    let _down = DownOnDrop;
    let ferrolb = up.ferrolb.clone().unwrap();

    // The env file lists each process with its pid and log; the pids file has them all.
    let env = std::fs::read_to_string(&up.env_file).unwrap();
    let mut listed = vec![("FERROLB_CONTROLLER", &ferrolb.controller)];
    assert_eq!(ferrolb.speakers.len(), 2);
    let names: Vec<String> = ferrolb
        .speakers
        .iter()
        .map(|(node, _)| format!("FERROLB_SPEAKER_{node}"))
        .collect();
    for ((_, s), name) in ferrolb.speakers.iter().zip(&names) {
        listed.push((name, s));
    }
    for (name, started) in listed {
        let line = format!("export {name}=\"{}\"", started.describe());
        assert!(env.contains(&line), "{line} missing from:\n{env}");
        assert!(started.log.is_file(), "{}", started.log.display());
        assert!(running(started.pid), "{name} runs");
    }
    assert!(env.contains("FERROLB_SPEAKER_node2=\"pid="), "{env}");
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap();
    let pids: Vec<u32> = pids.lines().map(|l| l.parse().unwrap()).collect();
    let mut ours = vec![ferrolb.controller.pid];
    ours.extend(ferrolb.speakers.iter().map(|(_, s)| s.pid));
    ours.extend(ferrolb.backends.iter().map(|(_, b)| b.pid));
    ours.extend(&up.pids);
    assert_eq!(ours.len(), 1 + 2 + 2 + 3);
    for pid in &ours {
        assert!(
            pids.contains(pid),
            "pid {pid} not in the pids file {pids:?}"
        );
    }

    // What `cargo xtask demo` shows: the Service's addresses answer, each from the node the
    // client resolved it to.
    let answers = demo::show(&up).unwrap();
    assert_eq!(
        answers.len(),
        2,
        "an IPv4 and an IPv6 EXTERNAL-IP: {answers:?}"
    );
    for a in &answers {
        let node = a.resolved_to.clone().unwrap_or_else(|| panic!("{a:?}"));
        assert_eq!(a.body, format!("{node}\n"), "{a:?}");
    }

    // --router frr: the env file says how to peer; a BGPPeer and BGPAdvertisement built from it
    // make the remote client behind the router reach the IPv4 address through the nodes.
    for line in [
        "export FERROLB_ROUTER=frr",
        "export FERROLB_ROUTER_ADDRESS=198.51.100.254",
        "export FERROLB_ROUTER_ADDRESS_V6=2001:db8:1::fe",
        "export FERROLB_ROUTER_ASN=64513",
        "export FERROLB_NODE_ASN=64512",
    ] {
        assert!(env.contains(line), "{line} missing from:\n{env}");
    }
    let manifest = "apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata:\n  name: router\nspec:\n  myASN: 64512\n  peerASN: 64513\n  peerAddress: 198.51.100.254\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata:\n  name: all\n";
    ferrolb_tests::process::run_input(
        std::process::Command::new(bins::binary("kubectl").unwrap())
            .env("KUBECONFIG", &up.kubeconfig)
            .args(["apply", "-f", "-"]),
        manifest,
    )
    .unwrap();
    let vip = answers.iter().find(|a| a.ip.is_ipv4()).unwrap().ip;
    let remote = lab::Host {
        name: router::REMOTE.into(),
        ipv4: router::REMOTE_IPV4,
        ipv6: router::REMOTE_IPV6,
        mac: String::new(),
        host_veth: String::new(),
    };
    let body = ferrolb_tests::process::wait_for(
        "the remote client reaches the VIP through the router",
        std::time::Duration::from_secs(30),
        || {
            Ok(remote
                .exec(
                    "curl",
                    &["-sS", "--max-time", "2", &format!("http://{vip}/")],
                )
                .ok()
                .filter(|b| b.starts_with("node")))
        },
    )
    .unwrap();
    assert!(["node1\n", "node2\n"].contains(&body.as_str()), "{body:?}");

    cluster::down().unwrap();
    for pid in &ours {
        assert!(!running(*pid), "pid {pid} still runs after down");
    }
    assert!(!namespaces().lines().any(|l| l.starts_with("node")));
    assert!(
        !namespaces().lines().any(|l| l.starts_with("router")),
        "down removes the router"
    );
}

/// `cluster up --run-ferrolb` on real nodes is what `cargo xtask demo` runs: every node a kubelet
/// with containerd and kube-proxy, ferrolb installed with `helm install`, the sample Service over
/// echo pods answering through kube-proxy. `down` then leaves no process, mount, cgroup or state
/// directory of the nodes behind.
#[test]
fn cluster_up_on_real_nodes_installs_with_helm_serves_the_demo_and_down_leaves_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = control_plane::process_dir().join("cluster-real-nodes");
    let up = cluster::up_with(
        &dir,
        &cluster::UpOptions {
            nodes: 2,
            port: 0,
            real_nodes: Some(ferrolb_tests::node::ProxyMode::Nftables),
            run_ferrolb: true,
            router: None,
        },
    )
    .unwrap();
    let _down = DownOnDrop;
    assert!(up.real_nodes && up.ferrolb.is_none(), "{up:?}");
    let env = std::fs::read_to_string(&up.env_file).unwrap();
    let echo = ferrolb_tests::image::ImageKind::Echo.reference().unwrap();
    assert!(
        env.contains(&format!("export FERROLB_ECHO_IMAGE={echo}")),
        "{env}"
    );
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap();
    let pids: Vec<u32> = pids.lines().map(|l| l.parse().unwrap()).collect();
    // etcd, apiserver, controller manager, scheduler; containerd, kubelet, kube-proxy per node.
    assert_eq!(pids.len(), 4 + 2 * 3, "{pids:?}");

    let answers = demo::show(&up).unwrap();
    assert_eq!(answers.len(), 2, "IPv4 and IPv6: {answers:?}");
    for a in &answers {
        let answer = ferrolb_tests::e2e::probes::EchoAnswer::parse(a.body.trim()).unwrap();
        assert!(answer.pod.starts_with("demo-"), "{a:?}");
        assert!(a.resolved_to.is_some(), "{a:?}");
    }

    cluster::down().unwrap();
    for pid in &pids {
        assert!(!running(*pid), "pid {pid} still runs after down");
    }
    assert!(!namespaces().lines().any(|l| l.starts_with("node")));
    for dir in [
        ferrolb_tests::node::host::DATA_ROOT,
        ferrolb_tests::node::host::RUN_ROOT,
    ] {
        assert!(!std::path::Path::new(dir).exists(), "{dir} is left");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("ferrolb-lab"), "mounts left:\n{mounts}");
    let cgroups = std::fs::read_dir("/sys/fs/cgroup/memory")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ferrolb-lab-"))
        .count();
    assert_eq!(cgroups, 0, "node cgroups left");
}
