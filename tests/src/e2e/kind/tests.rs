//! Unit tests of the kind driver's pure parts: pool ranges, Docker's JSON, node order, the
//! kind config, versions, interfaces and the missing-tools message.

use super::*;

/// `docker network inspect kind` of a kind network: IPv6 listed first, as kind creates it.
const NETWORK: &str = r#"[
{
    "Name": "kind",
    "Id": "0b6c3a8f7e4d",
    "Created": "2025-01-10T09:12:44.123456789Z",
    "Scope": "local",
    "Driver": "bridge",
    "EnableIPv6": true,
    "IPAM": {
        "Driver": "default",
        "Options": {},
        "Config": [
            {"Subnet": "fc00:f853:ccd:e793::/64", "Gateway": "fc00:f853:ccd:e793::1"},
            {"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}
        ]
    },
    "Internal": false,
    "Containers": {},
    "Options": {"com.docker.network.bridge.enable_ip_masquerade": "true",
                "com.docker.network.driver.mtu": "1500"},
    "Labels": {}
}
]"#;

/// `docker inspect` of two kind nodes (trimmed to the fields read), one killed: Docker
/// clears a stopped container's addresses.
const NODES: &str = r#"[
{
    "Id": "a1",
    "Name": "/ferrolb-e2e-worker2",
    "State": {"Status": "running", "Running": true, "Pid": 4242},
    "Config": {"Hostname": "ferrolb-e2e-worker2",
               "Labels": {"io.x-k8s.kind.cluster": "ferrolb-e2e", "io.x-k8s.kind.role": "worker"}},
    "NetworkSettings": {"Networks": {"kind": {
        "IPAddress": "172.18.0.4", "IPPrefixLen": 16,
        "GlobalIPv6Address": "fc00:f853:ccd:e793::4", "GlobalIPv6PrefixLen": 64,
        "MacAddress": "02:42:AC:12:00:04", "NetworkID": "0b6c3a8f7e4d"}}}
},
{
    "Id": "b2",
    "Name": "/ferrolb-e2e-control-plane",
    "State": {"Status": "running", "Running": true},
    "Config": {"Labels": {"io.x-k8s.kind.cluster": "ferrolb-e2e", "io.x-k8s.kind.role": "control-plane"}},
    "NetworkSettings": {"Networks": {"kind": {
        "IPAddress": "172.18.0.2", "GlobalIPv6Address": "fc00:f853:ccd:e793::2",
        "MacAddress": "02:42:ac:12:00:02"}}}
},
{
    "Id": "c3",
    "Name": "/ferrolb-e2e-worker",
    "State": {"Status": "exited", "Running": false},
    "Config": {"Labels": {"io.x-k8s.kind.role": "worker"}},
    "NetworkSettings": {"Networks": {"kind": {
        "IPAddress": "", "GlobalIPv6Address": "", "MacAddress": ""}}}
}
]"#;

#[test]
fn pool_ranges_sit_at_the_top_of_each_subnet() {
    assert_eq!(
        pool_range("172.18.0.0/16").unwrap(),
        "172.18.255.200-172.18.255.250"
    );
    assert_eq!(
        pool_range("172.19.0.0/16").unwrap(),
        "172.19.255.200-172.19.255.250"
    );
    assert_eq!(
        pool_range("192.168.49.0/24").unwrap(),
        "192.168.49.200-192.168.49.250"
    );
    assert_eq!(
        pool_range("10.0.0.0/8").unwrap(),
        "10.255.255.200-10.255.255.250"
    );
    assert_eq!(
        pool_range("10.1.2.128/25").unwrap(),
        "10.1.2.200-10.1.2.250"
    );
    // Not the network address: the host bits are ignored.
    assert_eq!(
        pool_range("172.18.0.1/16").unwrap(),
        "172.18.255.200-172.18.255.250"
    );
    assert_eq!(
        pool_range("fc00:f853:ccd:e793::/64").unwrap(),
        "fc00:f853:ccd:e793:ffff:ffff:ffff:ffc8-fc00:f853:ccd:e793:ffff:ffff:ffff:fffa"
    );
    assert_eq!(
        pool_range("2001:db8:1::/120").unwrap(),
        "2001:db8:1::c8-2001:db8:1::fa"
    );
    assert!(pool_range("172.18.0.0/26").is_err());
    assert!(pool_range("2001:db8::/122").is_err());
    assert!(pool_range("kind").is_err());
}

#[test]
fn a_pool_range_holds_51_addresses_and_parses_as_a_range() {
    for subnet in ["172.18.0.0/16", "fc00:f853:ccd:e793::/64", "10.1.2.128/25"] {
        let range = pool_range(subnet).unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
        let n = |ip: IpAddr| match ip {
            IpAddr::V4(v) => u128::from(u32::from(v)),
            IpAddr::V6(v) => u128::from(v),
        };
        assert_eq!(n(b) - n(a) + 1, POOL_SIZE, "{range}");
        let net: ipnetwork::IpNetwork = subnet.parse().unwrap();
        assert!(net.contains(a) && net.contains(b), "{range} in {subnet}");
    }
}

#[test]
fn network_inspect_gives_both_families_in_either_order() {
    assert_eq!(
        network_subnets(NETWORK).unwrap(),
        (
            Some("172.18.0.0/16".into()),
            Some("fc00:f853:ccd:e793::/64".into())
        )
    );
    assert_eq!(
        pool_ranges_of_network(NETWORK).unwrap(),
        [
            "172.18.255.200-172.18.255.250",
            "fc00:f853:ccd:e793:ffff:ffff:ffff:ffc8-fc00:f853:ccd:e793:ffff:ffff:ffff:fffa"
        ]
    );
    check_dual_stack_network("kind", NETWORK).unwrap();
}

#[test]
fn an_ipv4_only_network_gives_one_range_and_fails_the_dual_stack_check() {
    let v4_only = r#"[{"Name": "kind", "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Config": [{"Subnet": "172.19.0.0/16", "Gateway": "172.19.0.1"}]}}]"#;
    assert_eq!(
        pool_ranges_of_network(v4_only).unwrap(),
        ["172.19.255.200-172.19.255.250"]
    );
    let err = check_dual_stack_network("kind", v4_only)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no IPv6 subnet") && err.contains("docker network rm kind"),
        "{err}"
    );
    assert!(pool_ranges_of_network("[]").is_err());
    assert!(pool_ranges_of_network(r#"[{"IPAM": {"Config": []}}]"#).is_err());
}

#[test]
fn docker_inspect_gives_names_roles_macs_and_addresses() {
    let c = parse_containers(NODES, "kind").unwrap();
    assert_eq!(c.len(), 3);
    assert_eq!(
        c[0],
        Container {
            name: "ferrolb-e2e-worker2".into(),
            role: Some("worker".into()),
            running: true,
            mac: "02:42:ac:12:00:04".into(),
            ipv4: Some("172.18.0.4".parse().unwrap()),
            ipv6: Some("fc00:f853:ccd:e793::4".parse().unwrap()),
        }
    );
    assert_eq!(c[1].role.as_deref(), Some("control-plane"));
    assert!(!c[2].running);
    assert_eq!((c[2].mac.as_str(), c[2].ipv4), ("", None));
    let err = parse_containers(NODES, "bridge").unwrap_err().to_string();
    assert!(err.contains("not on the Docker network bridge"), "{err}");
}

#[test]
fn nodes_list_workers_in_numeric_order_then_the_control_plane() {
    let mut nodes = parse_containers(NODES, "kind").unwrap();
    let mut w10 = nodes[0].clone();
    w10.name = "ferrolb-e2e-worker10".into();
    nodes.push(w10);
    let names: Vec<String> = order_nodes(nodes).into_iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "ferrolb-e2e-worker",
            "ferrolb-e2e-worker2",
            "ferrolb-e2e-worker10",
            "ferrolb-e2e-control-plane"
        ]
    );
}

#[test]
fn kind_config_is_dual_stack_with_the_proxy_mode_and_the_workers() {
    let yaml = render_config(2, ProxyMode::Iptables);
    assert_eq!(
        yaml,
        "kind: Cluster\n\
         apiVersion: kind.x-k8s.io/v1alpha4\n\
         networking:\n  ipFamily: dual\n  kubeProxyMode: iptables\n\
         nodes:\n- role: control-plane\n- role: worker\n- role: worker\n"
    );
    let v: serde_yaml::Value =
        serde_yaml::from_str(&render_config(3, ProxyMode::Nftables)).unwrap();
    assert_eq!(v["kind"], "Cluster");
    assert_eq!(v["apiVersion"], "kind.x-k8s.io/v1alpha4");
    assert_eq!(v["networking"]["ipFamily"], "dual");
    assert_eq!(v["networking"]["kubeProxyMode"], "nftables");
    let roles: Vec<&str> = v["nodes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|n| n["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["control-plane", "worker", "worker", "worker"]);
}

#[test]
fn kind_versions_parse_from_either_form() {
    assert_eq!(
        parse_kind_version("kind v0.27.0 go1.23.6 linux/amd64"),
        Some((0, 27, 0))
    );
    assert_eq!(parse_kind_version("0.23.0\n"), Some((0, 23, 0)));
    assert_eq!(
        parse_kind_version("kind v0.33.0-alpha.12+fed26882b7a1 go1.24.2 linux/arm64"),
        Some((0, 33, 0))
    );
    assert_eq!(parse_kind_version("kind"), None);
    assert!(parse_kind_version("kind v0.22.0 go1.21").unwrap() < KIND_NFTABLES_SINCE);
    assert!(parse_kind_version("kind v0.23.0 go1.22").unwrap() >= KIND_NFTABLES_SINCE);
}

#[test]
fn the_client_interface_is_the_one_holding_its_address() {
    let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n\
               1: lo    inet6 ::1/128 scope host \\       valid_lft forever preferred_lft forever\n\
               23: eth0    inet 172.18.0.5/16 brd 172.18.255.255 scope global eth0\\       valid_lft forever preferred_lft forever\n\
               23: eth0    inet6 fc00:f853:ccd:e793::5/64 scope global nodad \\       valid_lft forever preferred_lft forever\n";
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        interface_with_address(out, ip("172.18.0.5")).as_deref(),
        Some("eth0")
    );
    assert_eq!(
        interface_with_address(out, ip("fc00:f853:ccd:e793::5")).as_deref(),
        Some("eth0")
    );
    assert_eq!(
        interface_with_address(
            "7: eth1@if8    inet 10.0.0.2/24 scope global eth1",
            ip("10.0.0.2")
        )
        .as_deref(),
        Some("eth1")
    );
    assert_eq!(interface_with_address(out, ip("172.18.0.6")), None);
}

#[test]
fn the_missing_message_says_what_and_how_to_install_it() {
    let m = Missing {
        problems: vec![Problem::DockerNotFound, Problem::KindNotFound],
    };
    let text = m.to_string();
    for needle in [
        "needs Docker and kind",
        "docker: not found on PATH",
        "https://docs.docker.com/engine/install/",
        "kind: not found on PATH",
        "https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
        "testbed driver",
        "needs neither",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    let daemon = Missing {
        problems: vec![Problem::DockerDaemon(
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock".into(),
        )],
    }
    .to_string();
    assert!(daemon.contains("does not answer `docker info`") && daemon.contains("docker.sock"));
    // What the error carries through anyhow, for callers that pick an exit code.
    let e = anyhow::Error::new(m.clone());
    assert_eq!(e.downcast_ref::<Missing>(), Some(&m));
}

#[test]
fn default_options_load_ferrolb_and_echo_into_two_workers() {
    let o = Options::default();
    assert_eq!((o.name.as_str(), o.workers), (CLUSTER_NAME, 2));
    assert_eq!(o.proxy_mode, ProxyMode::Iptables);
    let names: Vec<String> = o
        .archives
        .iter()
        .map(|a| a.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["ferrolb.tar", "echo.tar"]);
}
