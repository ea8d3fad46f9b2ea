//! `cargo xtask cluster up|down`: the testbed for humans (logic in `ferrolb_tests::cluster`).

use anyhow::Result;
use clap::Subcommand;
use ferrolb_tests::{bins, cluster, lab};

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Build what is missing, start etcd + kube-apiserver + kube-controller-manager and a lab of
    /// network namespaces (with --run-ferrolb, ferrolb too); returns once ready and writes
    /// target/cluster/env.
    Up {
        /// Number of node namespaces (node1..nodeN), each with a Node object.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Also build and run ferrolb: install the CRDs, run the controller (on the host) and a
        /// speaker per node namespace, and a lab backend per node so `curl http://VIP/` from the
        /// client names the node that answered.
        #[arg(long)]
        run_ferrolb: bool,
    },
    /// Stop every process and remove every namespace and link `up` made.
    Down,
}

pub fn run(action: Action) -> Result<()> {
    match action {
        Action::Up { nodes, run_ferrolb } => {
            crate::deps::ensure(true)?;
            bins::build_if_missing()?;
            if run_ferrolb {
                cluster::build_ferrolb()?;
            }
            let up = cluster::up_with(
                &bins::workspace_root().join("target/cluster"),
                &cluster::UpOptions {
                    nodes,
                    port: 6443,
                    run_ferrolb,
                },
            )?;
            println!(
                "cluster is up: {nodes} lab nodes, apiserver at {}",
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
