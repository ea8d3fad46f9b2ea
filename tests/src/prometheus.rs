//! `promtool` (Prometheus' rule checker and rule unit-test runner), built from the Prometheus Go
//! module (pinned) into `target/tools/` the first time a test needs it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::bins::{which, workspace_root};

/// The Prometheus module version (Prometheus 3.16).
pub const VERSION: &str = "v0.316.0";

/// The path of `promtool`, built unless it is there.
pub fn promtool() -> Result<PathBuf> {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let dir = workspace_root().join(format!("target/tools/promtool-{VERSION}"));
    let binary = dir.join("promtool");
    if binary.is_file() {
        return Ok(binary);
    }
    let go = which("go").context("Go is needed to build promtool from the Prometheus module")?;
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "==> go install github.com/prometheus/prometheus/cmd/promtool@{VERSION} (once; a few minutes)"
    );
    let started = Instant::now();
    let status = Command::new(go)
        .current_dir(std::env::temp_dir())
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOBIN", &dir)
        .args([
            "install",
            "-trimpath",
            &format!("github.com/prometheus/prometheus/cmd/promtool@{VERSION}"),
        ])
        .stdin(Stdio::null())
        .status()
        .context("running go install")?;
    if !status.success() || !binary.is_file() {
        bail!("go install of promtool {VERSION} failed ({status}); see Go's errors above");
    }
    eprintln!(
        "==> built promtool in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(binary)
}
