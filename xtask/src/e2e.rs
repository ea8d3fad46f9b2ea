//! `cargo xtask e2e [--kind] [--keep] [--proxy-mode M] [--nodes N] [--kind-image I]`: the
//! end-to-end scenarios (`ferrolb_tests::e2e::scenarios::everything`: helm install, dual-stack
//! Service, Local policy, speaker pod deletion, upgrade, node power-off, uninstall) on the
//! testbed's real nodes, or with `--kind` on a kind cluster; prints the report.
//!
//! Exit codes: 0 passed, 1 a scenario (or the set-up) failed, 2 a prerequisite is missing
//! (Docker or kind for `--kind`; root for the testbed).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_tests::control_plane::process_dir;
use ferrolb_tests::e2e::Driver;
use ferrolb_tests::e2e::kind::{self, Kind};
use ferrolb_tests::e2e::scenarios::{self, Report};
use ferrolb_tests::e2e::testbed::Testbed;
use ferrolb_tests::image::{self, BuildOptions};
use ferrolb_tests::lab;
use ferrolb_tests::node::ProxyMode;

use crate::cluster::ProxyModeArg;

/// Exit code when a prerequisite is missing (a failed scenario exits 1).
pub const EXIT_MISSING: i32 = 2;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run on a kind cluster (needs Docker and kind) instead of the testbed's real nodes (needs
    /// root).
    #[arg(long)]
    kind: bool,
    /// Leave the kind cluster and its client container running afterwards, and say how to look
    /// around and clean up (for the testbed use `cargo xtask cluster up`).
    #[arg(long, requires = "kind")]
    keep: bool,
    /// kube-proxy's mode [default: iptables on kind (kind's default), nftables on the testbed].
    #[arg(long, value_enum)]
    proxy_mode: Option<ProxyModeArg>,
    /// Nodes that run workloads and announce addresses (at least 2) [default: testbed 3 node
    /// namespaces; kind 2 workers beside the control-plane node].
    #[arg(long)]
    nodes: Option<usize>,
    /// kind node image (`kind create cluster --image`) [default: $FERROLB_E2E_KIND_IMAGE, else
    /// kind's own default].
    #[arg(long, requires = "kind")]
    kind_image: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(n) = args.nodes
        && n < 2
    {
        bail!(
            "--nodes {n}: the scenarios need at least 2 nodes (they pin pods to two nodes and power one off)"
        );
    }
    if args.kind {
        run_kind(args)
    } else {
        run_testbed(args)
    }
}

/// Prints `message` and exits with [`EXIT_MISSING`]; nothing has been created yet.
fn missing(message: &dyn std::fmt::Display) -> ! {
    eprintln!("error: {message}");
    std::process::exit(EXIT_MISSING)
}

fn run_kind(args: Args) -> Result<()> {
    // Before building anything: the message comes at once.
    if let Err(m) = kind::check_tools() {
        missing(&m);
    }
    let proxy_mode: ProxyMode = args.proxy_mode.unwrap_or(ProxyModeArg::Iptables).into();
    eprintln!("==> images (what `cargo xtask image` builds)");
    let built = image::build_all(&BuildOptions::default()).context("building the images")?;
    for b in &built {
        eprintln!("    {} {}", b.name, b.archive.display());
    }
    let mut opts = kind::Options {
        proxy_mode,
        keep: args.keep,
        ..kind::Options::default()
    };
    if let Some(n) = args.nodes {
        opts.workers = n;
    }
    if let Some(i) = args.kind_image {
        opts.node_image = Some(i);
    }
    let started = Instant::now();
    let mut driver = match Kind::start(opts) {
        Ok(d) => d,
        Err(e) => match e.downcast_ref::<kind::Missing>() {
            Some(m) => missing(m),
            None => return Err(e.context("starting the kind cluster")),
        },
    };
    let setup = started.elapsed();
    let result = scenarios::everything(&mut driver);
    if result.is_err() {
        eprintln!("{}", scenarios::pods_summary(&driver));
        eprintln!("{}", driver.diagnostics());
        match driver.export_logs() {
            Ok(dir) => eprintln!("every node's logs: {}", dir.display()),
            Err(e) => eprintln!("(kind export logs failed: {e:#})"),
        }
    }
    let describe = driver.describe();
    // Delete the cluster (unless --keep) before reporting.
    drop(driver);
    finish(&describe, setup, result)
}

fn run_testbed(args: Args) -> Result<()> {
    if !is_root() {
        missing(
            &"the testbed driver needs root (it creates network namespaces and runs kubelets); \
              run `sudo -E cargo xtask e2e`, or `cargo xtask e2e --kind` with Docker and kind",
        );
    }
    if std::path::Path::new(lab::CLUSTER_MARKER).exists() {
        bail!(
            "a `cargo xtask cluster up` cluster is running and its lab would clash with the testbed; run `cargo xtask cluster down` first"
        );
    }
    crate::deps::ensure_testbed(true)?;
    let proxy_mode: ProxyMode = args.proxy_mode.unwrap_or(ProxyModeArg::Nftables).into();
    let nodes = args.nodes.unwrap_or(3);
    let dir = process_dir().join(format!("e2e-{}", proxy_mode.as_str()));
    let started = Instant::now();
    let mut driver = Testbed::start(&dir, nodes, proxy_mode).context("starting the testbed")?;
    let setup = started.elapsed();
    let result = scenarios::everything(&mut driver);
    if result.is_err() {
        eprintln!("{}", scenarios::pods_summary(&driver));
        eprintln!("{}", driver.diagnostics());
        eprintln!("logs: {}", dir.display());
    }
    let describe = driver.describe();
    drop(driver);
    finish(&describe, setup, result)
}

fn finish(describe: &str, setup: Duration, result: Result<Report>) -> Result<()> {
    let report = result.with_context(|| format!("e2e on {describe}"))?;
    println!("{}", render_report(describe, setup, &report));
    Ok(())
}

/// The report `cargo xtask e2e` prints.
fn render_report(describe: &str, setup: Duration, r: &Report) -> String {
    let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    [
        format!("e2e passed on {describe}"),
        format!("  cluster set-up:                            {}", s(setup)),
        format!(
            "  helm install until every pod is Ready:     {}",
            s(r.install)
        ),
        format!(
            "  helm install until the first answer:       {}",
            s(r.install_to_first_answer)
        ),
        format!(
            "  failover, speaker pod deleted:             {}",
            ms(r.speaker_pod_deleted_failover)
        ),
        format!(
            "  failover, owner node powered off:          {}",
            ms(r.node_power_off_failover)
        ),
    ]
    .join("\n")
}

/// Whether this process runs as root (uid 0), from /proc/self/status.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_the_driver_and_every_figure() {
        let r = Report {
            install: Duration::from_millis(12_345),
            install_to_first_answer: Duration::from_millis(30_100),
            speaker_pod_deleted_failover: Duration::from_millis(412),
            node_power_off_failover: Duration::from_micros(380_400),
        };
        let text = render_report("kind ferrolb-e2e", Duration::from_secs(95), &r);
        for needle in [
            "kind ferrolb-e2e",
            "95.0 s",
            "12.3 s",
            "30.1 s",
            "412 ms",
            "380 ms",
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
    }
}
