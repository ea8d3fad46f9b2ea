//! `cargo xtask`: ferrolb's developer commands.
//!
//! - `test`: installs what is missing, then shape, supply chain (cargo-deny), format, lint, CRD
//!   drift, chart lint, unit tests, and the real-cluster and lab tests (what `.ci/run` calls).
//! - `demo [--keep]`: a 3-node lab with ferrolb, a Service, its EXTERNAL-IP curled from the client.
//! - `cluster up [--nodes N] [--run-ferrolb]` / `cluster down`: a control plane and lab for humans.
//! - `crds [--check]`: regenerate (or check) the CRD YAML under the chart and docs/reference.md.
//! - `manifests [--check]`: regenerate (or check) deploy/ferrolb.yaml, the chart rendered.
//! - `shape`: contract names spelled once, no oversized source file (also run by `test`).
//! - `k8s-build`: build the control plane from Go modules (also done by `test` and `cluster up`).
//! - `bench [--quick]`: performance figures on a real apiserver; writes target/bench/report.{md,json}.
//! - `image [ferrolb|echo|pause]...`: container images as OCI archives in target/images, no daemon.
//! - `fuzz [TARGET...] [--seconds N]`: coverage-guided fuzzing of every parser (`test` runs each
//!   target for 20 s).
//! - `e2e [--kind] [--keep] [--proxy-mode M] [--nodes N]`: the end-to-end scenarios on the
//!   testbed's real nodes, or on a kind cluster; exits 2 when Docker/kind (or root) is missing.
#![forbid(unsafe_code)]

mod bench;
mod cluster;
mod crds;
mod demo;
mod deps;
mod e2e;
mod fuzz;
mod image;
mod manifests;
mod shape;
mod supply_chain;
mod test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "ferrolb developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install missing tools, then run format, lint, CRD drift, unit, real-cluster and lab tests.
    Test {
        /// Skip `apt-get install` of missing Debian packages (fail instead).
        #[arg(long)]
        no_install: bool,
        /// Only run integration tests whose name contains this filter.
        filter: Option<String>,
    },
    /// Build everything, start a 3-node lab running ferrolb, create a LoadBalancer Service, show
    /// its EXTERNAL-IP and curl it from the client namespace; then tear it all down.
    Demo {
        /// Keep the cluster running afterwards (stop it with `cargo xtask cluster down`).
        #[arg(long)]
        keep: bool,
    },
    /// Start or stop a control plane and network lab for manual use.
    Cluster {
        #[command(subcommand)]
        action: cluster::Action,
    },
    /// Regenerate the CRD YAML under charts/ferrolb and docs/reference.md (with --check: fail if
    /// either is stale).
    Crds {
        /// Fail instead of writing when the committed YAML differs from the types.
        #[arg(long)]
        check: bool,
    },
    /// Regenerate deploy/ferrolb.yaml, the chart rendered as plain manifests (with --check:
    /// fail if it is stale).
    Manifests {
        /// Fail instead of writing when the committed file differs from the chart.
        #[arg(long)]
        check: bool,
    },
    /// Check the codebase's shape: API contract names spelled only in crds/src/contract.rs, no
    /// source file over 600 lines of code without a stated reason.
    Shape,
    /// Build kube-apiserver, kube-controller-manager, kubectl, etcd and helm from tests/k8s.
    K8sBuild,
    /// Measure burst ratio, create-to-status latency, pure IPAM and controller memory; writes
    /// target/bench/report.md and report.json.
    Bench(Box<bench::Args>),
    /// Build the container images (ferrolb, echo, pause) as reproducible OCI archives in
    /// target/images, without a Docker daemon.
    Image(image::Args),
    /// Run the end-to-end scenarios (helm install, dual-stack Service, Local policy, speaker
    /// pod deletion, upgrade, node power-off, uninstall) on the testbed's real nodes (root), or
    /// with --kind on a kind cluster (Docker and kind); print install and failover times.
    E2e(e2e::Args),
    /// Fuzz every parser of untrusted input (cargo-fuzz, libFuzzer, nightly): ARP/NDP frames,
    /// membership datagrams, address entries, Service requests, label selectors, CRD specs.
    Fuzz(fuzz::Args),
}

fn main() {
    let result = match Cli::parse().command {
        Command::Test { no_install, filter } => test::run(!no_install, filter.as_deref()),
        Command::Demo { keep } => demo::run(keep),
        Command::Cluster { action } => cluster::run(action),
        Command::Crds { check } => crds::run(check),
        Command::Manifests { check } => manifests::run(check),
        Command::Shape => shape::check(&ferrolb_tests::bins::workspace_root()),
        Command::K8sBuild => ferrolb_tests::bins::build_if_missing().map(|_| ()),
        Command::Bench(args) => bench::run(*args),
        Command::Image(args) => image::run(args),
        Command::E2e(args) => e2e::run(args),
        Command::Fuzz(args) => fuzz::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Runs a command with inherited output; fails naming it when it exits non-zero.
pub(crate) fn run_step(what: &str, cmd: &mut std::process::Command) -> anyhow::Result<()> {
    eprintln!("==> {what}");
    let status = cmd
        .status()
        .map_err(|e| anyhow::anyhow!("{what}: cannot start {cmd:?}: {e}"))?;
    if !status.success() {
        anyhow::bail!("{what} failed ({status})");
    }
    Ok(())
}
