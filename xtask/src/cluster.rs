//! `cargo xtask cluster up|down`: the testbed for humans (logic in `ferrolb_tests::cluster`).

use anyhow::Result;
use clap::Subcommand;
use ferrolb_tests::node::ProxyMode;
use ferrolb_tests::{bins, cluster, lab};

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Build what is missing, start etcd + kube-apiserver + kube-controller-manager +
    /// kube-scheduler and a lab of network namespaces, each a real node (containerd, kubelet,
    /// kube-proxy, with ferrolb's, the echo and the pause images imported); with --run-ferrolb,
    /// `helm install` ferrolb too. Returns once ready and writes target/cluster/env.
    Up {
        /// Number of node namespaces (node1..nodeN).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Also run ferrolb: `helm install` of charts/ferrolb (with --host-processes: the CRDs,
        /// the controller on the host, a speaker per node namespace and a lab backend per node,
        /// so `curl http://VIP/` from the client names the node that answered).
        #[arg(long)]
        run_ferrolb: bool,
        /// kube-proxy's mode on real nodes.
        #[arg(long, value_enum, default_value_t = ProxyModeArg::Nftables)]
        proxy_mode: ProxyModeArg,
        /// The fast development loop: no kubelets, hand-made Node objects, ferrolb as host
        /// processes and a DNAT rule per node standing in for kube-proxy.
        #[arg(long)]
        host_processes: bool,
        /// Add a BGP router (frr or bird) in a `router` namespace on the nodes' LAN with a
        /// `remote` client namespace behind it; the env file names its address and ASNs
        /// (FERROLB_ROUTER_ADDRESS, FERROLB_ROUTER_ASN, FERROLB_NODE_ASN). The router accepts
        /// a session from every node; apply your own BGPPeer and BGPAdvertisement.
        #[arg(long, value_parser = ["frr", "bird"])]
        router: Option<String>,
    },
    /// Stop every process and remove every namespace and link `up` made.
    Down,
}

/// kube-proxy's modes on this kernel (no IPVS).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ProxyModeArg {
    /// nftables rules.
    Nftables,
    /// iptables rules.
    Iptables,
}

impl ProxyModeArg {
    fn as_str(self) -> &'static str {
        ProxyMode::from(self).as_str()
    }
}

impl From<ProxyModeArg> for ProxyMode {
    fn from(m: ProxyModeArg) -> ProxyMode {
        match m {
            ProxyModeArg::Nftables => ProxyMode::Nftables,
            ProxyModeArg::Iptables => ProxyMode::Iptables,
        }
    }
}

pub fn run(action: Action) -> Result<()> {
    match action {
        Action::Up {
            nodes,
            run_ferrolb,
            proxy_mode,
            host_processes,
            router,
        } => {
            let router = router
                .as_deref()
                .map(ferrolb_tests::router::Kind::parse)
                .transpose()?;
            crate::deps::ensure_testbed(true)?;
            if run_ferrolb && host_processes {
                cluster::build_ferrolb()?;
            }
            let real_nodes = (!host_processes).then_some(proxy_mode.into());
            let up = cluster::up_with(
                &bins::workspace_root().join("target/cluster"),
                &cluster::UpOptions {
                    nodes,
                    port: 6443,
                    real_nodes,
                    run_ferrolb,
                    router,
                },
            )?;
            println!(
                "cluster is up: {nodes} lab nodes ({}), apiserver at {}",
                if host_processes {
                    "host processes".to_string()
                } else {
                    format!("real nodes, kube-proxy in {} mode", proxy_mode.as_str())
                },
                up.server
            );
            if let Some(f) = &up.ferrolb {
                println!("  ferrolb-controller: {}", f.controller.describe());
                for (node, s) in &f.speakers {
                    println!("  ferrolb-speaker in {node}: {}", s.describe());
                }
                println!(
                    "  lab backends: port 80 of 198.51.100.192/26 and 2001:db8:1::200/120 on each node"
                );
            }
            if let Some(kind) = up.router {
                println!(
                    "  router ({}): {} AS {}, nodes AS {}; remote client namespace `{}`",
                    kind.name(),
                    ferrolb_tests::router::ROUTER_IPV4,
                    ferrolb_tests::router::ROUTER_ASN,
                    ferrolb_tests::router::NODE_ASN,
                    ferrolb_tests::router::REMOTE
                );
            }
            println!(
                "  . {}   # KUBECONFIG, PATH with kubectl and helm, lab names",
                up.env_file.display()
            );
            println!("  ip netns exec node1 ...     # run something on a node");
            println!("  cargo xtask cluster down    # stop it");
        }
        Action::Down => {
            cluster::down()?;
            println!(
                "cluster is down: processes stopped, lab namespaces and {} removed",
                lab::BRIDGE
            );
        }
    }
    Ok(())
}
