//! `cargo xtask bench`: the performance figures of issue #3, measured on a real apiserver.
//!
//! ```text
//!  cargo xtask bench [--quick]
//!    └─ re-runs itself as a release build (the harness must not be the slow part)
//!       ├─ cargo build --release -p ferrolb-controller (binary + examples ipam_bench,
//!       │    state_memory)
//!       ├─ ipam_bench (pure IPAM, ns per allocate+release pair)          -> ipam
//!       ├─ per repetition, a fresh control plane (etcd + kube-apiserver):  -> cluster::run_rep
//!       │    plain loop, pending burst, create-to-status latency, running burst, memory
//!       ├─ controller at scale: 30,000 IPv6 Services over 1,000 pools on a fresh control
//!       │    plane: time to all allocated / best raw writer, memory, latency; then the
//!       │    state machine alone with 100,000 Services (state_memory)      -> cluster::scale
//!       ├─ speaker section: 3-node lab with release speakers (+ ferrolb-bench-prober and
//!       │    ferrolb-bench-arp in the client namespace): failover, footprint, ARP latency
//!       │                                                               -> speaker::run
//!       └─ in-cluster section: the chart's defaults on 3 real nodes: helm install to first
//!            answer, owner node powered off (20 trials), pod memory with 1,000 Services
//!                                                                       -> in_cluster::run
//!  -> target/bench/report.json + target/bench/report.md (also printed)
//! ```
//!
//! This command only measures; tests never assert times. What each figure means is written into
//! the report itself ([`report::definitions`]) and into `docs/benchmarks.md`.

mod bgp;
mod cluster;
mod figure;
mod in_cluster;
mod procfs;
mod report;
mod speaker;
mod stats;
mod watch;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ferrolb_tests::bins;

use report::{Build, Params, Report};

/// Set on the release re-run so that it does not re-run itself again.
const REEXEC_GUARD: &str = "FERROLB_BENCH_RELEASE_HARNESS";

/// `cargo xtask bench` options.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Development run: 1,000 Services, one repetition, 50 latency probes, a short IPAM run.
    #[arg(long)]
    pub quick: bool,
    /// Services per burst (default 10,000; 1,000 with --quick).
    #[arg(long)]
    pub services: Option<usize>,
    /// Repetitions of the cluster scenario, each on a fresh control plane (default 3; 1 with
    /// --quick).
    #[arg(long)]
    pub reps: Option<usize>,
    /// Services created one at a time for the create-to-status latency (default 200; 50 with
    /// --quick).
    #[arg(long)]
    pub probes: Option<usize>,
    /// Latency probes created per second.
    #[arg(long, default_value_t = 20)]
    pub probe_rate: u32,
    /// Creates (and deletes) in flight at once when making a burst.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Use the binaries already in target/release instead of building them.
    #[arg(long)]
    pub no_build: bool,
    /// Skip the pure IPAM figure.
    #[arg(long)]
    pub skip_ipam: bool,
    /// Skip the cluster figures (burst ratio, latency, memory).
    #[arg(long)]
    pub skip_cluster: bool,
    /// Skip the controller at scale (30,000 Services over 1,000 pools).
    #[arg(long)]
    pub skip_scale: bool,
    /// Services of the scale section (default 30,000; 5,000 with --quick). The goal is stated
    /// at 100,000 (about 25 minutes; the Services are created on a bulk-create apiserver, see
    /// `ferrolb_tests::bulk_apiserver`, and measured on the stock one).
    #[arg(long)]
    pub scale_services: Option<usize>,
    /// Pools of the scale section (default 1,000; 100 with --quick).
    #[arg(long)]
    pub scale_pools: Option<usize>,
    /// Skip the speaker figures (failover, ARP reply latency, speaker footprint).
    #[arg(long)]
    pub skip_speaker: bool,
    /// Failover trials per action, SIGKILL and link cut (default 20; 5 with --quick).
    #[arg(long)]
    pub speaker_trials: Option<usize>,
    /// Owned addresses (one Service each) for the ARP and footprint figures (at most 1,024).
    #[arg(long, default_value_t = 1_000)]
    pub speaker_ips: usize,
    /// ARP requests per second of the load generator.
    #[arg(long, default_value_t = 10_000)]
    pub arp_rate: u32,
    /// Seconds of each timed ARP run (default 10; 3 with --quick).
    #[arg(long)]
    pub arp_seconds: Option<f64>,
    /// ARP rounds, each a speaker run and a kernel run (default 3; 1 with --quick).
    #[arg(long)]
    pub arp_rounds: Option<usize>,
    /// Extra flags for every speaker (e.g. `--dead-after=500ms`), split at spaces; the default
    /// is none, the speaker's own defaults.
    #[arg(long)]
    pub speaker_args: Option<String>,
    /// Skip the BGP figures (failover with BFD through FRR, the hold-timer baseline, 10,000
    /// routes).
    #[arg(long)]
    pub skip_bgp: bool,
    /// Failover trials with BFD (default 20; 5 with --quick).
    #[arg(long)]
    pub bgp_trials: Option<usize>,
    /// Failover trials of the no-BFD baseline (default 5; 2 with --quick).
    #[arg(long)]
    pub bgp_baseline_trials: Option<usize>,
    /// Service IPs announced to FRR for the route figure (default 10,000; 1,000 with --quick).
    #[arg(long)]
    pub bgp_routes: Option<usize>,
    /// Skip the in-cluster figures (the chart on real nodes: install time, failover after a
    /// node power-off, pod memory).
    #[arg(long)]
    pub skip_in_cluster: bool,
    /// Power-off trials of the in-cluster section (default 20; 5 with --quick).
    #[arg(long)]
    pub in_cluster_trials: Option<usize>,
    /// Services for the in-cluster memory figure (default 1,000; 100 with --quick).
    #[arg(long)]
    pub in_cluster_services: Option<usize>,
    /// Where the report and each repetition's logs go (relative to the workspace root).
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Extra environment for the controller process, KEY=VALUE (repeatable), for experiments
    /// such as `GLIBC_TUNABLES=glibc.malloc.arena_max=1`; recorded in the report.
    #[arg(long, value_parser = parse_env)]
    pub controller_env: Vec<(String, String)>,
    /// Run the controller under this command (split at spaces), e.g. a profiler:
    /// `--controller-wrapper "perf record -g -o /tmp/controller-{phase}.perf --"` or
    /// `--controller-wrapper "heaptrack -o /tmp/heap-{phase}"` (`{phase}` becomes `pending` or
    /// `running`, one file per controller run). CPU and memory are still read from the
    /// controller process itself; timings include the wrapper's overhead.
    #[arg(long)]
    pub controller_wrapper: Option<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

impl Args {
    fn speaker_params(&self) -> speaker::Params {
        let mut p = speaker::Params::new(self.quick);
        if let Some(t) = self.speaker_trials {
            p.trials = t;
        }
        p.ips = self.speaker_ips;
        p.arp_rate = self.arp_rate.max(1);
        if let Some(s) = self.arp_seconds {
            p.arp_seconds = s.max(0.1);
        }
        if let Some(r) = self.arp_rounds {
            p.arp_rounds = r;
        }
        p.speaker_args = self
            .speaker_args
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        p
    }

    fn scale_params(&self, params: &Params) -> cluster::scale::ScaleParams {
        cluster::scale::ScaleParams {
            services: self
                .scale_services
                .unwrap_or(if self.quick { 5_000 } else { 30_000 }),
            pools: self
                .scale_pools
                .unwrap_or(if self.quick { 100 } else { 1_000 }),
            probes: params.probes,
            probe_rate_per_s: params.probe_rate_per_s,
        }
    }

    fn in_cluster_params(&self) -> in_cluster::Params {
        in_cluster::Params {
            nodes: 3,
            trials: self
                .in_cluster_trials
                .unwrap_or(if self.quick { 5 } else { 20 }),
            services: self
                .in_cluster_services
                .unwrap_or(if self.quick { 100 } else { 1_000 }),
        }
    }

    fn params(&self) -> Params {
        Params {
            services: self
                .services
                .unwrap_or(if self.quick { 1_000 } else { 10_000 }),
            reps: self.reps.unwrap_or(if self.quick { 1 } else { 3 }).max(1),
            probes: self.probes.unwrap_or(if self.quick { 50 } else { 200 }),
            probe_rate_per_s: self.probe_rate.max(1),
            in_flight: self.in_flight.max(1),
            pools: cluster::POOLS,
            controller_env: self.controller_env.clone(),
            controller_wrapper: self
                .controller_wrapper
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }
    }
}

/// Runs the benchmark and writes the report.
pub fn run(args: Args) -> Result<()> {
    if cfg!(debug_assertions) && std::env::var_os(REEXEC_GUARD).is_none() {
        return rerun_in_release();
    }
    let root = bins::workspace_root();
    let out_dir = root.join(&args.out);
    std::fs::create_dir_all(&out_dir)?;
    let params = args.params();
    if params.services + params.probes > 60_000 {
        bail!("the Service cluster-IP range holds about 65,000 Services; ask for fewer");
    }
    let started = Instant::now();

    if !args.no_build {
        build_release(
            &root,
            "cargo build --release -p ferrolb-controller (binary, examples ipam_bench and state_memory)",
            &[
                "-p",
                "ferrolb-controller",
                "--bin",
                "ferrolb-controller",
                "--example",
                "ipam_bench",
                "--example",
                "state_memory",
            ],
        )?;
    }
    if !args.no_build && (!args.skip_speaker || !args.skip_bgp) {
        build_release(
            &root,
            "cargo build --release: ferrolb-speaker (and examples plan_bench, membership_scale), ferrolb-lab-backend, ferrolb-bench-prober, ferrolb-bench-arp",
            &[
                "-p",
                "ferrolb-speaker",
                "-p",
                "ferrolb-tests",
                "--bin",
                "ferrolb-speaker",
                "--bin",
                "ferrolb-lab-backend",
                "--bin",
                "ferrolb-bench-prober",
                "--bin",
                "ferrolb-bench-arp",
                "--example",
                "plan_bench",
                "--example",
                "membership_scale",
            ],
        )?;
    }
    if !args.no_build && args.skip_speaker && !args.skip_in_cluster {
        build_release(
            &root,
            "cargo build --release: ferrolb-bench-prober",
            &["-p", "ferrolb-tests", "--bin", "ferrolb-bench-prober"],
        )?;
    }
    let controller_bin = root.join("target/release/ferrolb-controller");
    let ipam_bin = root.join("target/release/examples/ipam_bench");

    let mut report = Report::new(params.clone(), build_info(&root, &controller_bin)?);
    report.machine = procfs::machine();
    let mut sections = Sections::default();

    if !args.skip_ipam {
        eprintln!("==> pure IPAM ({})", ipam_bin.display());
        report.ipam = Some(run_ipam(&ipam_bin, args.quick)?);
        write_report(&report, &sections, &out_dir)?;
    }
    if !args.skip_cluster {
        bins::build_if_missing()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        for rep in 0..params.reps {
            let dir = out_dir.join(format!("rep-{}", rep + 1));
            let mut attempt = 1;
            let result = loop {
                eprintln!(
                    "==> cluster repetition {}/{} (attempt {attempt})",
                    rep + 1,
                    params.reps
                );
                match runtime.block_on(cluster::run_rep(&params, &controller_bin, &dir)) {
                    Err(e) if e.is::<cluster::BridgeRemoved>() && attempt < 3 => {
                        eprintln!("    {e}; starting the repetition again");
                        attempt += 1;
                    }
                    other => break other?,
                }
            };
            report.apiserver_version = result.apiserver_version.clone();
            report.reps.push(result.rep);
            // Written after every repetition, so a later failure keeps what was measured.
            report.summarise();
            write_report(&report, &sections, &out_dir)?;
        }
    }
    report.summarise();
    if !args.skip_scale {
        bins::build_if_missing()?;
        eprintln!("==> controller at scale");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let mut section = runtime.block_on(cluster::scale::run(
            &args.scale_params(&params),
            &params,
            &controller_bin,
            &out_dir.join("scale"),
        ))?;
        let state_memory = root.join("target/release/examples/state_memory");
        eprintln!("    state machine alone ({})", state_memory.display());
        section.state_memory = Some(run_state_memory(&state_memory, args.quick)?);
        sections.scale = Some(section);
        write_report(&report, &sections, &out_dir)?;
    }
    if !args.skip_speaker {
        bins::build_if_missing()?;
        let release = root.join("target/release");
        let speaker_bins = speaker::Binaries {
            prober: release.join("ferrolb-bench-prober"),
            arp: release.join("ferrolb-bench-arp"),
            plan: release.join("examples/plan_bench"),
            membership: release.join("examples/membership_scale"),
            build: speaker_build(&root),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let section = runtime.block_on(speaker::run(
            &args.speaker_params(),
            &speaker_bins,
            &out_dir.join("speaker"),
            |partial| {
                let partial_sections = Sections {
                    scale: sections.scale.clone(),
                    speaker: Some(partial.clone()),
                    bgp: None,
                    in_cluster: None,
                };
                write_report(&report, &partial_sections, &out_dir)
            },
        ))?;
        sections.speaker = Some(section);
        write_report(&report, &sections, &out_dir)?;
    }
    if !args.skip_bgp {
        bins::build_if_missing()?;
        crate::deps::ensure_testbed(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let params = bgp::Params {
            trials: args.bgp_trials.unwrap_or(if args.quick { 5 } else { 20 }),
            baseline_trials: args
                .bgp_baseline_trials
                .unwrap_or(if args.quick { 2 } else { 5 }),
            routes: args
                .bgp_routes
                .unwrap_or(if args.quick { 1_000 } else { 10_000 }),
        };
        let section = runtime.block_on(bgp::run(
            &params,
            &root.join("target/release/ferrolb-bench-prober"),
        ))?;
        sections.bgp = Some(section);
        write_report(&report, &sections, &out_dir)?;
    }
    if !args.skip_in_cluster {
        bins::build_if_missing()?;
        let section = in_cluster::run(
            &args.in_cluster_params(),
            &root.join("target/release/ferrolb-bench-prober"),
            &in_cluster::dir(&out_dir),
        )?;
        sections.in_cluster = Some(section);
    }
    report.duration_s = started.elapsed().as_secs_f64();
    write_report(&report, &sections, &out_dir)?;
    println!("{}", markdown(&report, &sections));
    eprintln!(
        "==> report: {} and {}",
        out_dir.join("report.md").display(),
        out_dir.join("report.json").display()
    );
    Ok(())
}

/// The harness times apiserver round trips and decodes every watch event of 10,000 Services: a
/// debug build of it would slow the baseline loop and steal CPU from the controller. So the debug
/// `cargo xtask` re-runs this command from a release build.
fn rerun_in_release() -> Result<()> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    crate::run_step(
        "cargo run --release -p xtask -- bench (the harness runs as a release build)",
        bins::cargo_command()
            .current_dir(bins::workspace_root())
            .args(["run", "--release", "-p", "xtask", "--"])
            .args(args)
            .env(REEXEC_GUARD, "1"),
    )
}

/// The sections measured besides the controller's figures.
#[derive(Default)]
struct Sections {
    scale: Option<cluster::scale::ScaleSection>,
    speaker: Option<speaker::SpeakerSection>,
    bgp: Option<bgp::BgpSection>,
    in_cluster: Option<in_cluster::InClusterSection>,
}

/// The report's Markdown with each section measured, before the definitions.
fn markdown(report: &Report, sections: &Sections) -> String {
    let mut md = report.markdown();
    let extra: Vec<String> = [
        sections.scale.as_ref().map(|s| s.markdown()),
        sections.speaker.as_ref().map(|s| s.markdown()),
        sections.bgp.as_ref().map(|s| s.markdown()),
        sections.in_cluster.as_ref().map(|s| s.markdown()),
    ]
    .into_iter()
    .flatten()
    .collect();
    for section in extra.iter().rev() {
        let at = md.rfind("\n## Definitions").unwrap_or(md.len());
        md.insert_str(at, &format!("\n{section}"));
    }
    md
}

/// Writes `report.json` (with `scale`, `speaker` and `in_cluster` members) and `report.md` into `dir`.
fn write_report(report: &Report, sections: &Sections, dir: &Path) -> Result<()> {
    report.write(dir)?;
    if sections.scale.is_none()
        && sections.speaker.is_none()
        && sections.bgp.is_none()
        && sections.in_cluster.is_none()
    {
        return Ok(());
    }
    let mut json = serde_json::to_value(report)?;
    if let Some(object) = json.as_object_mut() {
        if let Some(section) = &sections.scale {
            object.insert("scale".into(), serde_json::to_value(section)?);
        }
        if let Some(section) = &sections.speaker {
            object.insert("speaker".into(), serde_json::to_value(section)?);
        }
        if let Some(section) = &sections.bgp {
            object.insert("bgp".into(), serde_json::to_value(section)?);
        }
        if let Some(section) = &sections.in_cluster {
            object.insert("in_cluster".into(), serde_json::to_value(section)?);
        }
    }
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    std::fs::write(dir.join("report.md"), markdown(report, sections))?;
    Ok(())
}

/// The speaker build for the report: release, commit, and whether speaker/ has local changes.
fn speaker_build(root: &Path) -> String {
    let git = |args: &[&str]| git(root, args);
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_default();
    let dirty = git(&["status", "--porcelain", "--", "speaker", "runtime", "crds"])
        .is_some_and(|s| !s.is_empty());
    format!(
        "release build of {commit}{}",
        if dirty {
            " with uncommitted speaker changes"
        } else {
            ""
        }
    )
}

/// `git <args>` in `root`: its output, trimmed, if it succeeded.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// `cargo build --release <targets>` in the workspace, as the step `step`.
fn build_release(root: &Path, step: &str, targets: &[&str]) -> Result<()> {
    crate::run_step(
        step,
        bins::cargo_command()
            .current_dir(root)
            .args(["build", "--release"])
            .args(targets),
    )
}

fn run_ipam(bin: &Path, quick: bool) -> Result<serde_json::Value> {
    let mut cmd = Command::new(bin);
    if quick {
        cmd.arg("--quick");
    }
    json_output(cmd, "ipam_bench")
}

/// The state machine alone in one process: 100,000 Services over 1,000 pools (`--quick`:
/// 10,000 over 100).
fn run_state_memory(bin: &Path, quick: bool) -> Result<cluster::scale::StateMemory> {
    let (services, pools) = if quick {
        (10_000, 100)
    } else {
        (100_000, 1_000)
    };
    let mut cmd = Command::new(bin);
    cmd.args([
        "--services",
        &services.to_string(),
        "--pools",
        &pools.to_string(),
    ]);
    cluster::scale::StateMemory::from_json(&json_output(cmd, "state_memory")?)
}

/// Runs a measuring tool that prints one JSON object, and reads it.
fn json_output<T: serde::de::DeserializeOwned>(mut cmd: Command, name: &str) -> Result<T> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{name} printed no JSON"))
}

fn build_info(root: &Path, controller_bin: &Path) -> Result<Build> {
    let git = |args: &[&str]| git(root, args);
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "controller",
        "runtime",
        "crds",
    ])
    .map(|s| !s.is_empty())
    .unwrap_or(false);
    if !controller_bin.exists() {
        bail!(
            "{} is missing; run without --no-build",
            controller_bin.display()
        );
    }
    Ok(Build {
        controller_binary: controller_bin.display().to_string(),
        controller_profile: "release".into(),
        harness_profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .into(),
        git_commit: git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_default(),
        controller_sources_modified: dirty,
    })
}
