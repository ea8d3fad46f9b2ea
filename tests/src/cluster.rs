//! A long-lived testbed for humans (`cargo xtask cluster up|down`): the control plane runs
//! detached, the lab stays, and an env file tells a shell how to reach them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::control_plane::{ControlPlane, Options};
use crate::{Lab, bins, lab};

/// What `up` started.
#[derive(Debug)]
pub struct Up {
    /// The env file (shell exports).
    pub env_file: PathBuf,
    /// Apiserver URL.
    pub server: String,
    /// Pids of kube-controller-manager, kube-apiserver and etcd.
    pub pids: Vec<u32>,
}

/// Starts a control plane (with kube-controller-manager) on `port` and a lab of `nodes` nodes
/// with their Node objects; writes `dir/env` and `dir/pids` and returns once all is ready. The
/// processes and namespaces outlive the caller until [`down`].
pub fn up(dir: &Path, nodes: usize, port: u16) -> Result<Up> {
    if Path::new(lab::CLUSTER_MARKER).exists() {
        bail!(
            "a cluster is already up (see {}); run `cargo xtask cluster down` first",
            lab::CLUSTER_MARKER
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    let lab = Lab::create(nodes)?;
    let cp = ControlPlane::start(&Options {
        dir: dir.to_path_buf(),
        controller_manager: true,
        port,
        detached: true,
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async { lab.register_nodes(&cp.client().await?).await })?;

    let mut env = String::new();
    writeln!(
        env,
        "# Written by `cargo xtask cluster up`; load it with: . {}",
        dir.join("env").display()
    )?;
    writeln!(env, "export KUBECONFIG={}", cp.kubeconfig().display())?;
    writeln!(env, "export PATH={}:$PATH", bins::bin_dir()?.display())?;
    writeln!(env, "export FERROLB_APISERVER={}", cp.server())?;
    let names: Vec<&str> = lab.nodes().iter().map(|n| n.name.as_str()).collect();
    writeln!(env, "export FERROLB_LAB_NODES=\"{}\"", names.join(" "))?;
    writeln!(env, "export FERROLB_LAB_CLIENT={}", lab.client().name)?;
    writeln!(env, "export FERROLB_LAB_BRIDGE={}", lab::BRIDGE)?;
    writeln!(env, "export FERROLB_CLUSTER_LOGS={}", dir.display())?;
    let env_file = dir.join("env");
    std::fs::write(&env_file, &env)?;
    let server = cp.server().to_string();
    let pids = cp.release();
    std::fs::write(
        dir.join("pids"),
        pids.iter().map(|p| format!("{p}\n")).collect::<String>(),
    )?;
    std::fs::write(lab::CLUSTER_MARKER, dir.display().to_string())?;
    lab.release();
    Ok(Up {
        env_file,
        server,
        pids,
    })
}

/// Stops what [`up`] started (the directory is read from the marker `up` left) and removes every
/// lab namespace, veth and the bridge. Safe to run when nothing is up.
pub fn down() -> Result<()> {
    if let Ok(dir) = std::fs::read_to_string(lab::CLUSTER_MARKER) {
        let pids_path = Path::new(dir.trim()).join("pids");
        if let Ok(pids) = std::fs::read_to_string(&pids_path) {
            for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                kill(pid);
            }
            std::fs::remove_file(&pids_path)
                .with_context(|| format!("removing {}", pids_path.display()))?;
        }
    }
    lab::remove_all()?;
    let _ = std::fs::remove_file(lab::CLUSTER_MARKER);
    Ok(())
}

#[allow(unsafe_code)]
fn kill(pid: i32) {
    // SAFETY: kill(2) has no memory effects; a pid that is already gone just fails with ESRCH.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}
