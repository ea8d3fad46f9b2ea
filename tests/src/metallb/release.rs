//! A MetalLB release that runs on the testbed: its controller and speaker built from the Go
//! module with `go install`, packed into images under MetalLB's own references
//! (`quay.io/metallb/controller:<version>`, as `metallb-native.yaml` names them, so its manifest
//! applies unchanged once the images are on the nodes), and that manifest from the module.
//!
//! The version is v0.15.3, not the [`super::VERSION`] whose samples the translation is tested
//! on: v0.16.2 requires `github.com/metallb/frr-k8s` v0.0.27, which the module proxy here
//! refuses (403), and its BGP code does not build against the newest served one (v0.0.21).
//! v0.15.3 requires exactly v0.0.21. Layer 2, which the migration test runs, is the same in
//! both.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::go_tool;
use crate::image::{self, oci, rootfs};

/// The release that runs.
pub const VERSION: &str = "v0.15.3";
/// The namespace `metallb-native.yaml` installs into.
pub const NAMESPACE: &str = "metallb-system";

/// One of MetalLB's two programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Controller,
    Speaker,
}

impl Component {
    pub const ALL: [Component; 2] = [Component::Controller, Component::Speaker];

    /// `controller`, `speaker`: the package, the binary, the image and the workload's name.
    pub fn name(self) -> &'static str {
        match self {
            Component::Controller => "controller",
            Component::Speaker => "speaker",
        }
    }

    /// The image reference `metallb-native.yaml` uses.
    pub fn reference(self) -> oci::Reference {
        oci::Reference {
            repository: format!("quay.io/metallb/{}", self.name()),
            tag: VERSION.to_string(),
        }
    }
}

/// The image archives of both components, built unless they are in `target/images`.
pub fn images() -> Result<Vec<PathBuf>> {
    let dir = go_tool::tools_dir("metallb", VERSION);
    let packages: Vec<String> = Component::ALL
        .iter()
        .map(|c| format!("{}/{}", super::MODULE, c.name()))
        .collect();
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    let binaries = go_tool::install(&dir, &packages, VERSION)?;
    let out = image::images_dir();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut archives = Vec::new();
    for (component, binary) in Component::ALL.into_iter().zip(binaries) {
        let path = out.join(format!("metallb-{}-{VERSION}.tar", component.name()));
        if !path.is_file() {
            let archive = archive(component, &std::fs::read(&binary)?)?;
            image::write_atomically(&path, &archive.bytes)?;
        }
        archives.push(path);
    }
    Ok(archives)
}

/// The image as MetalLB's Containerfile makes it (distroless/static: the binary at `/<name>`
/// as the entrypoint, root unless the pod says otherwise, as the speaker needs for NET_RAW).
fn archive(component: Component, binary: &[u8]) -> Result<oci::Archive> {
    let reference = component.reference();
    let mut entries = rootfs::base_entries();
    entries.push(oci::Entry::file(component.name(), 0o755, binary));
    let config = oci::Config {
        architecture: image::oci_architecture(std::env::consts::ARCH)?.to_string(),
        created: 0,
        user: "0:0".into(),
        env: vec![],
        entrypoint: vec![format!("/{}", component.name())],
        cmd: vec![],
        exposed_ports: vec![],
        labels: [(
            "org.opencontainers.image.source".to_string(),
            format!("{}@{VERSION}", super::MODULE),
        )]
        .into(),
        created_by: format!(
            "go install {}/{}@{VERSION}",
            super::MODULE,
            component.name()
        ),
    };
    oci::archive(&reference, &config, &entries).with_context(|| format!("assembling {reference}"))
}

/// `config/manifests/metallb-native.yaml` of the release: what MetalLB's docs apply.
pub fn native_manifest() -> Result<PathBuf> {
    Ok(super::module_dir_at(VERSION)?.join("config/manifests/metallb-native.yaml"))
}
