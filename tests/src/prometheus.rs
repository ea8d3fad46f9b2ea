//! `promtool` (Prometheus' rule checker and rule unit-test runner), built from the Prometheus Go
//! module (pinned) into `target/tools/` the first time a test needs it.

use std::path::PathBuf;

use anyhow::Result;

use crate::go_tool;

/// The Prometheus module version (Prometheus 3.16).
pub const VERSION: &str = "v0.316.0";

/// The path of `promtool`, built unless it is there.
pub fn promtool() -> Result<PathBuf> {
    let dir = go_tool::tools_dir("promtool", VERSION);
    let mut built = go_tool::install(
        &dir,
        &["github.com/prometheus/prometheus/cmd/promtool"],
        VERSION,
    )?;
    Ok(built.remove(0))
}
