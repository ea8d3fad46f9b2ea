//! The testbed driver: a control plane in workloads mode, a lab of `N` node namespaces running
//! real kubelets, containerd and kube-proxy ([`crate::node`]), and the lab's client namespace.
//! ferrolb's images, the echo workload and the pause image are built locally
//! ([`crate::image`]) and imported into every node; nothing is pulled.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{Context, Result};

use super::Driver;
use crate::control_plane::{self, ControlPlane};
use crate::image::{self, BuildOptions, ImageKind};
use crate::lab::Lab;
use crate::node::{self, ProxyMode, RealNodes};
use crate::{bins, process};

/// A testbed cluster with real nodes; dropping it stops the nodes, the lab and the control plane.
#[derive(Debug)]
pub struct Testbed {
    // Field order is drop order: nodes first (their processes live in the lab's namespaces),
    // then the lab, then the control plane.
    nodes: RealNodes,
    lab: Lab,
    control_plane: ControlPlane,
    proxy_mode: ProxyMode,
}

/// The images every node holds: ferrolb, echo, pause. Builds them (release; cargo makes that
/// quick when `cargo xtask image` already did) once per process, so tests starting testbeds at
/// the same time never rewrite an archive another is importing. Returns the archives and the
/// pause image's reference.
pub fn images() -> Result<(Vec<PathBuf>, String)> {
    static BUILT: std::sync::Mutex<Option<(Vec<PathBuf>, String)>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(images) = built.as_ref() {
        return Ok(images.clone());
    }
    let archives = image::build_all(&BuildOptions::default()).context("building the images")?;
    let images = (
        archives.into_iter().map(|b| b.archive).collect(),
        ImageKind::Pause.reference()?,
    );
    *built = Some(images.clone());
    Ok(images)
}

impl Testbed {
    /// Starts a control plane, a lab of `nodes` nodes and real nodes in it with kube-proxy in
    /// `proxy_mode`; returns once every node is Ready. Logs go under `dir`.
    pub fn start(dir: &Path, nodes: usize, proxy_mode: ProxyMode) -> Result<Testbed> {
        let (archives, pause_image) = images()?;
        // A fresh cluster every time: etcd's data of an earlier run in `dir` would bring back
        // its releases and objects.
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let control_plane = ControlPlane::start(&control_plane::Options {
            dir: dir.join("control-plane"),
            controller_manager: true,
            workloads: true,
            port: 0,
            detached: false,
        })?;
        let lab = Lab::create(nodes)?;
        let nodes = RealNodes::start(
            &control_plane,
            lab.nodes(),
            &node::Options {
                proxy_mode,
                images: archives,
                pause_image,
                dir: dir.join("nodes"),
                detached: false,
            },
        )?;
        Ok(Testbed {
            nodes,
            lab,
            control_plane,
            proxy_mode,
        })
    }

    /// The control plane.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    /// The real nodes.
    pub fn real_nodes(&self) -> &RealNodes {
        &self.nodes
    }

    /// The lab (node and client namespaces).
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// Powers `node` back on after [`Driver::power_off`]; returns once it is Ready.
    pub fn power_on(&mut self, node: &str) -> Result<()> {
        self.nodes.power_on(&self.control_plane, node)
    }

    /// Imports image `archives` into every node's containerd (images the testbed does not
    /// hold from the start, such as MetalLB's).
    pub fn import_images(&self, archives: &[PathBuf]) -> Result<()> {
        for node in self.nodes.nodes() {
            for archive in archives {
                process::run(node.ctr()?.args(["images", "import"]).arg(archive)).with_context(
                    || format!("importing {} into {}", archive.display(), node.host().name),
                )?;
            }
        }
        Ok(())
    }

    /// The tail of every node component's log.
    pub fn diagnostics(&self) -> String {
        self.nodes.diagnostics()
    }
}

impl Driver for Testbed {
    fn describe(&self) -> String {
        format!("testbed, kube-proxy in {} mode", self.proxy_mode.as_str())
    }

    fn kubeconfig(&self) -> &Path {
        self.control_plane.kubeconfig()
    }

    fn kubectl_binary(&self) -> Result<PathBuf> {
        bins::binary("kubectl")
    }

    fn helm_binary(&self) -> Result<PathBuf> {
        bins::binary("helm")
    }

    fn client(&self, program: &str, args: &[&str]) -> Result<Output> {
        let mut cmd = self.lab.client().command(program);
        cmd.args(args).stdin(std::process::Stdio::null());
        cmd.output()
            .with_context(|| format!("running {program} in the client namespace"))
    }

    fn client_interface(&self) -> &str {
        "eth0"
    }

    fn client_ipv4(&self) -> IpAddr {
        IpAddr::V4(self.lab.client().ipv4)
    }

    fn pool_ranges(&self) -> Vec<String> {
        vec![
            "198.51.100.200-198.51.100.250".into(),
            "2001:db8:1::200-2001:db8:1::2ff".into(),
        ]
    }

    fn node_mac(&self, node: &str) -> Result<String> {
        self.lab
            .nodes()
            .iter()
            .find(|h| h.name == node)
            .map(|h| h.mac.to_lowercase())
            .with_context(|| format!("no lab node {node}"))
    }

    fn nodes(&self) -> Vec<String> {
        self.lab.nodes().iter().map(|h| h.name.clone()).collect()
    }

    fn power_off(&mut self, node: &str) -> Result<()> {
        self.nodes.power_off(node)
    }

    fn on_node(&self, node: &str, program: &str, args: &[&str]) -> Result<Output> {
        let host = self
            .lab
            .nodes()
            .iter()
            .find(|h| h.name == node)
            .with_context(|| format!("no lab node {node}"))?;
        host.command(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("running {program} on {node}"))
    }

    fn tag_ferrolb_image(&self, reference: &str) -> Result<()> {
        let source = ImageKind::Ferrolb.reference()?;
        for node in self.nodes.nodes() {
            process::run(
                node.ctr()?
                    .args(["images", "tag", "--force", &source, reference]),
            )
            .with_context(|| format!("tagging {source} as {reference} on {}", node.host().name))?;
        }
        Ok(())
    }
}
