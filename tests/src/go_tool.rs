//! Go programs the tests run but nobody ships (promtool, MetalLB), built with `go install` from
//! their pinned modules through the Go module proxy into `target/tools/<name>-<version>/` the
//! first time a test needs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::bins::{which, workspace_root};

/// `target/tools/<name>-<version>`.
pub fn tools_dir(name: &str, version: &str) -> PathBuf {
    workspace_root().join(format!("target/tools/{name}-{version}"))
}

/// The binaries `go install <package>@<version>` makes of `packages` (static, `-trimpath`,
/// stripped), in `dir`; built only when one is missing. One build at a time in this process.
pub fn install(dir: &Path, packages: &[&str], version: &str) -> Result<Vec<PathBuf>> {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let binaries: Vec<PathBuf> = packages
        .iter()
        .map(|p| dir.join(p.rsplit('/').next().unwrap_or(p)))
        .collect();
    if binaries.iter().all(|b| b.is_file()) {
        return Ok(binaries);
    }
    let go = which("go").context("Go is needed to build the tests' Go tools (go install)")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let targets: Vec<String> = packages.iter().map(|p| format!("{p}@{version}")).collect();
    eprintln!(
        "==> go install {} (once, into {}; a few minutes)",
        targets.join(" "),
        dir.display()
    );
    let started = Instant::now();
    let status = Command::new(go)
        // Outside any module, so `path@version` builds exactly that module's pinned go.sum.
        .current_dir(std::env::temp_dir())
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOBIN", dir)
        .args(["install", "-trimpath", "-ldflags=-s -w"])
        .args(&targets)
        .stdin(Stdio::null())
        .status()
        .context("running go install")?;
    if !status.success() || !binaries.iter().all(|b| b.is_file()) {
        bail!(
            "go install {} failed ({status}); see Go's errors above",
            targets.join(" ")
        );
    }
    eprintln!(
        "==> built {} in {:.0} s",
        targets.join(" "),
        started.elapsed().as_secs_f64()
    );
    Ok(binaries)
}
