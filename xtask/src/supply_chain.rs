//! The supply-chain check of `cargo xtask test`: cargo-deny's licences, bans (duplicate versions,
//! banned crates, wildcards) and sources checks against `deny.toml`. None of them needs GitHub;
//! `cargo metadata` underneath may download crates from crates.io on a fresh machine, so the run
//! is not `--offline`.
//!
//! cargo-deny is built from crates.io once per machine into `target/tools/cargo-deny-<version>`
//! (a few minutes on two cores), so the pinned version, not whatever is on PATH, decides. The
//! advisories check needs the RustSec database from GitHub, which the CI machine cannot reach;
//! deny.toml says how to run it elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

/// The cargo-deny release the check runs (its `--locked` dependency set comes with it).
pub const CARGO_DENY_VERSION: &str = "0.20.2";

/// Builds cargo-deny if this machine has not yet, then runs its checks over `root`.
pub fn check(root: &Path) -> Result<()> {
    let deny = ensure_cargo_deny(root)?;
    crate::run_step(
        "cargo deny check licenses bans sources",
        Command::new(&deny).current_dir(root).args([
            "check",
            "--hide-inclusion-graph",
            "licenses",
            "bans",
            "sources",
        ]),
    )
}

/// The cargo-deny binary under `target/tools`, built when missing.
fn ensure_cargo_deny(root: &Path) -> Result<PathBuf> {
    let started = Instant::now();
    let (binary, built) = cargo_tool(root, "cargo-deny", CARGO_DENY_VERSION)?;
    if built {
        eprintln!(
            "==> cargo-deny built in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(binary)
}

/// `crate_name` at `version` (its own `--locked` dependency set) under
/// `target/tools/<crate_name>-<version>`, installed from crates.io when missing; whether it was
/// just built. Pinned tools, not whatever is on PATH, decide the checks.
pub fn cargo_tool(root: &Path, crate_name: &str, version: &str) -> Result<(PathBuf, bool)> {
    let dir = root
        .join("target/tools")
        .join(format!("{crate_name}-{version}"));
    let binary = dir.join("bin").join(crate_name);
    if binary.is_file() {
        return Ok((binary, false));
    }
    crate::run_step(
        &format!("cargo install {crate_name} {version} (once per machine)"),
        ferrolb_tests::bins::cargo_command()
            .args(["install", crate_name, "--locked", "--quiet", "--version"])
            .arg(format!("={version}"))
            .arg("--root")
            .arg(&dir),
    )?;
    binary
        .is_file()
        .then_some((binary.clone(), true))
        .with_context(|| format!("cargo install finished but {} is missing", binary.display()))
}
