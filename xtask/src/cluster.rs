//! `cargo xtask cluster up|down`: the testbed for humans (logic in `ferrolb_tests::cluster`).

use anyhow::Result;
use clap::Subcommand;
use ferrolb_tests::{bins, cluster, lab};

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Build what is missing, start etcd + kube-apiserver + kube-controller-manager and a lab of
    /// network namespaces; returns once ready and writes target/cluster/env.
    Up {
        /// Number of node namespaces (node1..nodeN), each with a Node object.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// Stop every process and remove every namespace and link `up` made.
    Down,
}

pub fn run(action: Action) -> Result<()> {
    match action {
        Action::Up { nodes } => {
            crate::deps::ensure(true)?;
            bins::build_if_missing()?;
            let up = cluster::up(&bins::workspace_root().join("target/cluster"), nodes, 6443)?;
            println!(
                "cluster is up: {nodes} lab nodes, apiserver at {}",
                up.server
            );
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
