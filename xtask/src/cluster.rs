//! `cargo xtask cluster up|down`: the testbed for humans.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use ferrolb_tests::control_plane::{ControlPlane, Options};
use ferrolb_tests::{Lab, bins, lab};

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

fn dir() -> PathBuf {
    bins::workspace_root().join("target/cluster")
}

pub fn run(action: Action) -> Result<()> {
    match action {
        Action::Up { nodes } => up(nodes),
        Action::Down => down(),
    }
}

fn up(nodes: usize) -> Result<()> {
    if std::path::Path::new(lab::CLUSTER_MARKER).exists() {
        bail!(
            "a cluster is already up (see target/cluster/env); run `cargo xtask cluster down` first"
        );
    }
    crate::deps::ensure(true)?;
    bins::build_if_missing()?;
    let dir = dir();
    let _ = std::fs::remove_dir_all(&dir);
    let lab = Lab::create(nodes)?;
    let cp = ControlPlane::start(&Options {
        dir: dir.clone(),
        controller_manager: true,
        port: 6443,
        detached: true,
    })?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async { lab.register_nodes(&cp.client().await?).await })?;

    let mut env = String::new();
    writeln!(
        env,
        "# Written by `cargo xtask cluster up`; source it: . target/cluster/env"
    )?;
    writeln!(env, "export KUBECONFIG={}", cp.kubeconfig().display())?;
    writeln!(env, "export PATH={}:$PATH", bins::bin_dir()?.display())?;
    writeln!(env, "export FERROLB_APISERVER={}", cp.server())?;
    let names: Vec<&str> = lab.nodes().iter().map(|n| n.name.as_str()).collect();
    writeln!(env, "export FERROLB_LAB_NODES=\"{}\"", names.join(" "))?;
    writeln!(env, "export FERROLB_LAB_CLIENT={}", lab.client().name)?;
    writeln!(env, "export FERROLB_LAB_BRIDGE={}", lab::BRIDGE)?;
    writeln!(env, "export FERROLB_CLUSTER_LOGS={}", dir.display())?;
    let env_path = dir.join("env");
    std::fs::write(&env_path, &env)?;
    let pids = cp.release();
    std::fs::write(
        dir.join("pids"),
        pids.iter().map(|p| format!("{p}\n")).collect::<String>(),
    )?;
    std::fs::write(lab::CLUSTER_MARKER, env_path.display().to_string())?;
    lab.release();
    println!(
        "cluster is up: {nodes} lab nodes, apiserver at https://{}:6443",
        lab::BRIDGE_IPV4
    );
    println!(
        "  . {}   # KUBECONFIG, PATH with kubectl and helm, lab names",
        env_path.display()
    );
    println!("  ip netns exec node1 ...     # run something on a node");
    println!("  cargo xtask cluster down    # stop it");
    Ok(())
}

fn down() -> Result<()> {
    let pids_path = dir().join("pids");
    if let Ok(pids) = std::fs::read_to_string(&pids_path) {
        for pid in pids.lines().filter(|l| !l.is_empty()) {
            // kill(1) rather than libc: the pid may be gone already, which is fine.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid])
                .status();
        }
        std::fs::remove_file(&pids_path).context("removing target/cluster/pids")?;
    }
    lab::remove_all()?;
    let _ = std::fs::remove_file(lab::CLUSTER_MARKER);
    println!(
        "cluster is down: processes stopped, lab namespaces and {} removed",
        lab::BRIDGE
    );
    Ok(())
}
