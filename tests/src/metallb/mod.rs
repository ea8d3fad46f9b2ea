//! MetalLB from its Go module (`go.universe.tf/metallb`, pinned), fetched through the Go module
//! proxy like the testbed's Kubernetes modules:
//!
//! - its files at [`VERSION`]: the CRDs (`config/crd/bases`) and the sample manifests of its
//!   documentation (`configsamples/`), which `kubectl ferrolb migrate metallb` must translate;
//! - a release that runs ([`release`]): controller and speaker built from the module at
//!   [`release::VERSION`], as images under MetalLB's own references, and its
//!   `metallb-native.yaml`, for the live migration.

pub mod release;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::bins::which;

/// The module.
pub const MODULE: &str = "go.universe.tf/metallb";
/// The pinned version whose documentation samples and CRDs the translation is tested on.
pub const VERSION: &str = "v0.16.2";

/// The module's source directory at [`VERSION`] (in Go's module cache), downloaded once.
pub fn module_dir() -> Result<PathBuf> {
    module_dir_at(VERSION)
}

/// The module's source directory at `version` (in Go's module cache), downloaded once.
pub fn module_dir_at(version: &str) -> Result<PathBuf> {
    let go = which("go").context("Go is needed to fetch MetalLB's module (go mod download)")?;
    let out = Command::new(go)
        // Outside any module: `go mod download path@version` then fetches just that module.
        .current_dir(std::env::temp_dir())
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .args(["mod", "download", "-json", &format!("{MODULE}@{version}")])
        .stdin(Stdio::null())
        .output()
        .context("running go mod download")?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "go mod download {MODULE}@{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let dir = info["Dir"]
        .as_str()
        .with_context(|| format!("go mod download {MODULE}@{version} gave no directory: {info}"))?;
    Ok(PathBuf::from(dir))
}

/// The `*.yaml` files of `sub` in the module, sorted.
pub fn files(sub: &str) -> Result<Vec<PathBuf>> {
    let dir = module_dir()?.join(sub);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}
