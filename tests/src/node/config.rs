//! What a real node's components read: containerd's TOML, the kubelet's and kube-proxy's
//! configuration files, the CNI network list and kubeconfigs. Pure: paths and addresses in, text
//! out; [`super`] writes the files and starts the processes.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde_json::json;

/// Pod addresses come from RFC 2544's benchmarking range, next to the Service range
/// (198.18.0.0/16, [`crate::control_plane::SERVICE_CIDR_V4`]): node `i` hands out
/// `198.19.i.0/24` and `2001:db8:2:i::/64`. They exist only inside node namespaces; nodes route
/// each other's pod ranges over the lab LAN.
pub const POD_CIDR_V4: &str = "198.19.0.0/16";
/// IPv6 pods, inside the documentation prefix.
pub const POD_CIDR_V6: &str = "2001:db8:2::/48";

/// The CNI network's name (also in the CNI library's machine-wide result cache file names).
pub const CNI_NETWORK: &str = "ferrolb-lab";

/// The pod ranges of lab node `index` (1-based): `(198.19.i.0/24, 2001:db8:2:i::/64)`.
pub fn pod_ranges(index: usize) -> (String, String) {
    let i = u8::try_from(index).expect("a lab has at most 89 nodes");
    (
        format!("{}/24", Ipv4Addr::new(198, 19, i, 0)),
        format!(
            "{}/64",
            Ipv6Addr::new(0x2001, 0xdb8, 2, u16::from(i), 0, 0, 0, 0)
        ),
    )
}

/// Where one node's components keep their state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePaths {
    /// Persistent state: containerd's root (images, snapshots), the kubelet's root, pod logs,
    /// the CNI configuration.
    pub data: PathBuf,
    /// Runtime state: sockets, containerd's state dir (with the pods' network namespaces), runc's
    /// state. Short, since a unix socket path has at most 107 bytes.
    pub run: PathBuf,
    /// Configuration files and credentials.
    pub config: PathBuf,
}

impl NodePaths {
    /// containerd's gRPC socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.run.join("containerd.sock")
    }
    /// containerd's `root`.
    pub fn containerd_root(&self) -> PathBuf {
        self.data.join("containerd")
    }
    /// containerd's `state`.
    pub fn containerd_state(&self) -> PathBuf {
        self.run.join("containerd")
    }
    /// runc's `--root` (the default, /run/containerd/runc, would be shared by every node).
    pub fn runc_root(&self) -> PathBuf {
        self.run.join("runc")
    }
    /// The kubelet's `--root-dir`.
    pub fn kubelet_root(&self) -> PathBuf {
        self.data.join("kubelet")
    }
    /// The CNI configuration directory.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.data.join("cni")
    }
    /// Where the kubelet writes container logs.
    pub fn pod_logs(&self) -> PathBuf {
        self.data.join("pods")
    }
}

/// containerd 2.x configuration (version 3) for one node: its own root, state, socket and runc
/// root; the CRI plugin with the local pause image pinned (nothing is ever pulled), CNI plugins
/// from `cni_bin_dir`, and `restrict_oom_score_adj` (this machine's processes lack
/// CAP_SYS_RESOURCE, so the negative score the kubelet asks for sandboxes would fail in runc).
pub fn containerd_toml(
    paths: &NodePaths,
    pause_image: &str,
    runc: &Path,
    cni_bin_dir: &Path,
) -> String {
    let mut s = String::new();
    let q = |p: &Path| toml_string(&p.to_string_lossy());
    writeln!(s, "version = 3").unwrap();
    writeln!(s, "root = {}", q(&paths.containerd_root())).unwrap();
    writeln!(s, "state = {}", q(&paths.containerd_state())).unwrap();
    // NRI would listen on the machine-wide /var/run/nri/nri.sock, shared by every node.
    writeln!(s, "disabled_plugins = [\"io.containerd.nri.v1.nri\"]").unwrap();
    writeln!(s).unwrap();
    writeln!(s, "[grpc]\n  address = {}", q(&paths.containerd_socket())).unwrap();
    writeln!(
        s,
        "[ttrpc]\n  address = {}",
        q(&paths.run.join("containerd.sock.ttrpc"))
    )
    .unwrap();
    writeln!(s, "[debug]\n  address = \"\"\n  level = \"info\"").unwrap();
    writeln!(s, "[metrics]\n  address = \"\"").unwrap();
    writeln!(s).unwrap();
    writeln!(s, "[plugins.'io.containerd.cri.v1.images']").unwrap();
    writeln!(s, "  snapshotter = \"overlayfs\"").unwrap();
    writeln!(s, "  [plugins.'io.containerd.cri.v1.images'.pinned_images]").unwrap();
    writeln!(s, "    sandbox = {}", toml_string(pause_image)).unwrap();
    writeln!(s).unwrap();
    writeln!(s, "[plugins.'io.containerd.cri.v1.runtime']").unwrap();
    writeln!(s, "  restrict_oom_score_adj = true").unwrap();
    writeln!(s, "  enable_selinux = false").unwrap();
    writeln!(s, "  disable_apparmor = true").unwrap();
    // Pods' network namespaces under this node's state dir, not the machine-wide /run/netns.
    writeln!(s, "  netns_mounts_under_state_dir = true").unwrap();
    writeln!(s, "  [plugins.'io.containerd.cri.v1.runtime'.cni]").unwrap();
    writeln!(s, "    bin_dirs = [{}]", q(cni_bin_dir)).unwrap();
    writeln!(s, "    conf_dir = {}", q(&paths.cni_conf_dir())).unwrap();
    writeln!(s, "    max_conf_num = 1").unwrap();
    writeln!(s, "  [plugins.'io.containerd.cri.v1.runtime'.containerd]").unwrap();
    writeln!(s, "    default_runtime_name = \"runc\"").unwrap();
    writeln!(
        s,
        "    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]"
    )
    .unwrap();
    writeln!(s, "      runtime_type = \"io.containerd.runc.v2\"").unwrap();
    writeln!(
        s,
        "      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]"
    )
    .unwrap();
    writeln!(s, "        BinaryName = {}", q(runc)).unwrap();
    writeln!(s, "        Root = {}", q(&paths.runc_root())).unwrap();
    writeln!(s, "        SystemdCgroup = false").unwrap();
    writeln!(s).unwrap();
    // kubectl exec/logs stream through the CRI streaming server: on the node's loopback, inside
    // its namespace, on a free port.
    writeln!(s, "[plugins.'io.containerd.grpc.v1.cri']").unwrap();
    writeln!(s, "  stream_server_address = \"127.0.0.1\"").unwrap();
    writeln!(s, "  stream_server_port = \"0\"").unwrap();
    s
}

/// A TOML basic string (quotes and backslashes escaped).
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// What the kubelet of one node needs to know.
#[derive(Clone, Debug)]
pub struct KubeletSettings<'a> {
    /// Node name (also the hostname override).
    pub node: &'a str,
    /// The node's lab address (the kubelet serves on it).
    pub address: Ipv4Addr,
    /// The node's state directories.
    pub paths: &'a NodePaths,
    /// The control plane's CA, which signs the clients allowed to call the kubelet.
    pub client_ca: &'a Path,
    /// The cgroup (in every v1 hierarchy) that holds this node's pods.
    pub cgroup_root: &'a str,
}

/// KubeletConfiguration for a lab node on this machine: cgroup v1 allowed, cgroupfs driver, a
/// cgroup root per node, no swap check, images never garbage-collected (they are imported, never
/// pulled), and eviction thresholds low enough that a busy build disk does not evict pods.
pub fn kubelet_config(k: &KubeletSettings) -> String {
    let config = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": k.cgroup_root,
        "cgroupsPerQOS": true,
        "enforceNodeAllocatable": ["pods"],
        "address": k.address.to_string(),
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": false},
            "x509": {"clientCAFile": k.client_ca.to_string_lossy()},
        },
        // Only holders of a certificate from the testbed CA reach the kubelet at all.
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": format!("unix://{}", k.paths.containerd_socket().display()),
        "imageServiceEndpoint": format!("unix://{}", k.paths.containerd_socket().display()),
        "podLogsDir": k.paths.pod_logs().to_string_lossy(),
        "volumePluginDir": k.paths.kubelet_root().join("volume-plugins").to_string_lossy(),
        "failSwapOn": false,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "imageMinimumGCAge": "87600h",
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "serializeImagePulls": false,
        "maxPods": 60,
        "clusterDomain": "cluster.local",
        "resolvConf": "/etc/resolv.conf",
        "rotateCertificates": false,
        "serverTLSBootstrap": false,
        "protectKernelDefaults": false,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "shutdownGracePeriod": "0s",
        "logging": {"format": "text"},
    });
    serde_yaml::to_string(&config).expect("a JSON value serialises as YAML")
}

/// kube-proxy's modes that run on this machine's kernel (it has no IPVS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// iptables rules (through the nftables backend of Debian's iptables).
    Iptables,
    /// Native nftables rules.
    Nftables,
}

impl ProxyMode {
    /// The value of `mode:` in KubeProxyConfiguration.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Nftables => "nftables",
        }
    }
}

/// KubeProxyConfiguration for a lab node: dual-stack cluster CIDRs (traffic from outside them is
/// masqueraded in `externalTrafficPolicy: Cluster`), conntrack sysctls left alone (they are
/// global to the machine, not per namespace), no NodePort on localhost (which would need
/// `route_localnet`).
pub fn kube_proxy_config(node: &str, kubeconfig: &Path, mode: ProxyMode) -> String {
    let config = json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig.to_string_lossy()},
        "hostnameOverride": node,
        "mode": mode.as_str(),
        "clusterCIDR": format!("{POD_CIDR_V4},{POD_CIDR_V6}"),
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": "0.0.0.0:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": false},
        "logging": {"format": "text"},
    });
    serde_yaml::to_string(&config).expect("a JSON value serialises as YAML")
}

/// The CNI network list of node `index`: a bridge `cni0` in the node's namespace, the node as
/// the pods' gateway, host-local addresses from [`pod_ranges`] in both families (recorded under
/// the node's own state, not the machine-wide /var/lib/cni, so a powered-off node's leases go
/// with it), and masquerading of pod traffic leaving the pod ranges (so pods reach the apiserver
/// on the lab bridge, whose host knows no pod routes).
pub fn cni_conflist(index: usize, paths: &NodePaths) -> String {
    let (v4, v6) = pod_ranges(index);
    let list = json!({
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": paths.data.join("cni-ipam").to_string_lossy(),
                    "ranges": [[{"subnet": v4}], [{"subnet": v6}]],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    serde_json::to_string_pretty(&list).expect("JSON serialises")
}

/// A kubeconfig for `user` authenticating with a client certificate.
pub fn client_kubeconfig(
    server: &str,
    ca_cert_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    let b64 = |s: &str| crate::control_plane::base64_encode(s.as_bytes());
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ferrolb-testbed", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca_cert_pem),
        }}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(cert_pem),
            "client-key-data": b64(key_pem),
        }}],
        "contexts": [{"name": user, "context": {"cluster": "ferrolb-testbed", "user": user}}],
        "current-context": user,
    });
    serde_yaml::to_string(&config).expect("a JSON value serialises as YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> NodePaths {
        NodePaths {
            data: "/var/lib/ferrolb-lab/node2".into(),
            run: "/run/ferrolb-lab/node2".into(),
            config: "/tmp/t/node2".into(),
        }
    }

    #[test]
    fn pod_ranges_are_per_node_and_inside_the_cluster_cidrs() {
        assert_eq!(
            pod_ranges(1),
            ("198.19.1.0/24".into(), "2001:db8:2:1::/64".into())
        );
        assert_eq!(
            pod_ranges(12),
            ("198.19.12.0/24".into(), "2001:db8:2:c::/64".into())
        );
        let v4: ipnetwork::Ipv4Network = POD_CIDR_V4.parse().unwrap();
        let v6: ipnetwork::Ipv6Network = POD_CIDR_V6.parse().unwrap();
        for i in 1..=89 {
            let (a, b) = pod_ranges(i);
            let a: ipnetwork::Ipv4Network = a.parse().unwrap();
            let b: ipnetwork::Ipv6Network = b.parse().unwrap();
            assert!(v4.contains(a.network()) && v6.contains(b.network()), "{i}");
        }
    }

    #[test]
    fn containerd_config_keeps_every_path_per_node() {
        let toml = containerd_toml(
            &paths(),
            "localhost/ferrolb/pause:0.1.0",
            Path::new("/usr/sbin/runc"),
            Path::new("/usr/lib/cni"),
        );
        for want in [
            "version = 3",
            "root = \"/var/lib/ferrolb-lab/node2/containerd\"",
            "state = \"/run/ferrolb-lab/node2/containerd\"",
            "address = \"/run/ferrolb-lab/node2/containerd.sock\"",
            "sandbox = \"localhost/ferrolb/pause:0.1.0\"",
            "restrict_oom_score_adj = true",
            "netns_mounts_under_state_dir = true",
            "BinaryName = \"/usr/sbin/runc\"",
            "Root = \"/run/ferrolb-lab/node2/runc\"",
            "conf_dir = \"/var/lib/ferrolb-lab/node2/cni\"",
            "disabled_plugins = [\"io.containerd.nri.v1.nri\"]",
        ] {
            assert!(toml.contains(want), "missing {want:?} in\n{toml}");
        }
        assert!(!toml.contains("/run/containerd"), "{toml}");
    }

    #[test]
    fn kubelet_config_allows_cgroup_v1_and_points_at_its_own_runtime() {
        let p = paths();
        let yaml = kubelet_config(&KubeletSettings {
            node: "node2",
            address: Ipv4Addr::new(198, 51, 100, 12),
            paths: &p,
            client_ca: Path::new("/tmp/ca.crt"),
            cgroup_root: "/ferrolb-lab-node2",
        });
        let v: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(v["failCgroupV1"], false);
        assert_eq!(v["cgroupDriver"], "cgroupfs");
        assert_eq!(v["cgroupRoot"], "/ferrolb-lab-node2");
        assert_eq!(v["address"], "198.51.100.12");
        assert_eq!(
            v["containerRuntimeEndpoint"],
            "unix:///run/ferrolb-lab/node2/containerd.sock"
        );
        assert_eq!(v["imageGCHighThresholdPercent"], 100);
        assert_eq!(v["authentication"]["anonymous"]["enabled"], false);
    }

    #[test]
    fn kube_proxy_config_names_mode_node_and_both_cluster_cidrs() {
        for mode in [ProxyMode::Iptables, ProxyMode::Nftables] {
            let yaml = kube_proxy_config("node3", Path::new("/k"), mode);
            let v: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
            assert_eq!(v["mode"], mode.as_str());
            assert_eq!(v["hostnameOverride"], "node3");
            assert_eq!(v["clusterCIDR"], "198.19.0.0/16,2001:db8:2::/48");
            assert_eq!(v["conntrack"]["maxPerCore"], 0);
        }
    }

    #[test]
    fn cni_list_is_dual_stack_with_the_nodes_ranges() {
        let v: serde_json::Value = serde_json::from_str(&cni_conflist(2, &paths())).unwrap();
        let bridge = &v["plugins"][0];
        assert_eq!(
            bridge["ipam"]["dataDir"],
            "/var/lib/ferrolb-lab/node2/cni-ipam"
        );
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "198.19.2.0/24");
        assert_eq!(
            bridge["ipam"]["ranges"][1][0]["subnet"],
            "2001:db8:2:2::/64"
        );
        assert_eq!(bridge["ipMasq"], true);
    }

    #[test]
    fn client_kubeconfig_embeds_credentials() {
        let yaml = client_kubeconfig("https://198.51.100.1:6443", "CA", "system:node:n", "C", "K");
        let v: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(v["users"][0]["name"], "system:node:n");
        assert_eq!(v["users"][0]["user"]["client-key-data"], "Sw==");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://198.51.100.1:6443"
        );
    }
}
