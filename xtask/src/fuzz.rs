//! `cargo xtask fuzz`: coverage-guided fuzzing (libFuzzer through cargo-fuzz) of every parser
//! of untrusted input, the targets in `fuzz/fuzz_targets/`.
//!
//! cargo-fuzz needs a nightly toolchain (its instrumentation flags are unstable): the machine's
//! `nightly` is used, installed with rustup (minimal profile) when missing. cargo-fuzz itself is
//! built once per machine into `target/tools/cargo-fuzz-<version>`, the targets into
//! `target/fuzz`. Each run starts from the committed seeds (`fuzz/corpus/<target>`) plus what
//! earlier runs on this machine found (`target/fuzz/corpus/<target>`, where new inputs go), and
//! stops at the first failure: a panic, an input that takes over 2 s (quadratic blow-up), or
//! one that makes the process use more than 1 GiB (unbounded allocation). The failing input is
//! kept under `target/fuzz/artifacts/<target>/` and its path printed.
//!
//! Targets build with debug assertions (overflow checks) and without a sanitizer: the fuzzed
//! code has no `unsafe`, so AddressSanitizer would double the build for nothing it could find.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The cargo-fuzz release used.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Every fuzz target, as named in fuzz/Cargo.toml.
pub const TARGETS: [&str; 7] = [
    "wire_frame",
    "bgp_stream",
    "membership_datagram",
    "address_entry",
    "service_request",
    "label_selector",
    "crd_spec",
];
/// Seconds per target in `cargo xtask test`.
pub const TEST_SECONDS: u64 = 20;

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The targets to run (default: all).
    pub targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 300)]
    pub seconds: u64,
}

/// What one target did.
#[derive(Debug)]
pub struct Outcome {
    /// The target.
    pub target: &'static str,
    /// Inputs executed.
    pub executions: u64,
    /// Seconds it ran.
    pub seconds: f64,
}

/// `cargo xtask fuzz`: builds, then runs each selected target for `seconds`.
pub fn run(args: Args) -> Result<()> {
    let targets: Vec<&'static str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets
            .iter()
            .map(|t| {
                TARGETS
                    .iter()
                    .find(|known| *known == t)
                    .copied()
                    .with_context(|| format!("no fuzz target {t}; the targets: {TARGETS:?}"))
            })
            .collect::<Result<_>>()?
    };
    let outcomes = fuzz(
        &ferrolb_tests::bins::workspace_root(),
        &targets,
        args.seconds,
    )?;
    report(&outcomes);
    Ok(())
}

/// Builds every target, then runs `targets` for `seconds` each; fails at the first finding.
pub fn fuzz(root: &Path, targets: &[&'static str], seconds: u64) -> Result<Vec<Outcome>> {
    ensure_nightly()?;
    let (cargo_fuzz, _) = crate::supply_chain::cargo_tool(root, "cargo-fuzz", CARGO_FUZZ_VERSION)?;
    let started = Instant::now();
    crate::run_step(
        "cargo fuzz build (nightly, debug assertions)",
        &mut cargo_fuzz_command(&cargo_fuzz, root, "build"),
    )?;
    eprintln!(
        "==> fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    targets
        .iter()
        .map(|target| run_target(root, &cargo_fuzz, target, seconds))
        .collect()
}

/// Prints one line per target.
pub fn report(outcomes: &[Outcome]) {
    for o in outcomes {
        eprintln!(
            "==> fuzz {}: {} executions in {:.0} s ({:.0}/s), nothing found",
            o.target,
            o.executions,
            o.seconds,
            o.executions as f64 / o.seconds.max(0.001)
        );
    }
}

fn run_target(
    root: &Path,
    cargo_fuzz: &Path,
    target: &'static str,
    seconds: u64,
) -> Result<Outcome> {
    let work = root.join("target/fuzz/corpus").join(target);
    let artifacts = root.join("target/fuzz/artifacts").join(target);
    for dir in [&work, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let seeds = root.join("fuzz/corpus").join(target);
    eprintln!("==> fuzz {target} for {seconds} s");
    let started = Instant::now();
    let output = cargo_fuzz_command(cargo_fuzz, root, "run")
        .arg(target)
        .arg(&work)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=2")
        .arg("-rss_limit_mb=1024")
        .arg("-max_len=4096")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(Stdio::inherit())
        .output()
        .with_context(|| format!("starting cargo fuzz run {target}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {target} failed ({}); the input is under {}:\n{}",
            output.status,
            artifacts.display(),
            tail.join("\n")
        );
    }
    let executions = final_stat(&log, "stat::number_of_executed_units:")
        .with_context(|| format!("fuzz {target}: no execution count in libFuzzer's output"))?;
    Ok(Outcome {
        target,
        executions,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The value of libFuzzer's final statistic `name` in `log`.
fn final_stat(log: &str, name: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// `cargo fuzz <subcommand>` on nightly, with ferrolb's fuzz and target directories, built
/// without a sanitizer and with debug assertions.
fn cargo_fuzz_command(cargo_fuzz: &Path, root: &Path, subcommand: &str) -> Command {
    let mut cmd = Command::new(cargo_fuzz);
    cmd.args(["fuzz", subcommand])
        .current_dir(root)
        .env("RUSTUP_TOOLCHAIN", "nightly")
        .args(["--fuzz-dir", "fuzz", "--target-dir", "target/fuzz"])
        .args(["-O", "--debug-assertions", "--sanitizer", "none"]);
    cmd
}

/// Installs the nightly toolchain (minimal profile) when rustup does not have it.
fn ensure_nightly() -> Result<()> {
    let present = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    crate::run_step(
        "rustup toolchain install nightly --profile minimal (once per machine)",
        Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log = "#1024\tDONE   cov: 88 ft: 120\nstat::number_of_executed_units: 123456\n\
                   stat::average_exec_per_sec:     4115\nstat::new_units_added:          7\n";
        assert_eq!(
            final_stat(log, "stat::number_of_executed_units:"),
            Some(123_456)
        );
        assert_eq!(final_stat(log, "stat::missing:"), None);
    }

    #[test]
    fn every_target_has_a_source_file_and_seeds() {
        let root = ferrolb_tests::bins::workspace_root();
        for target in TARGETS {
            let source = root.join("fuzz/fuzz_targets").join(format!("{target}.rs"));
            assert!(source.is_file(), "{}", source.display());
            let seeds = root.join("fuzz/corpus").join(target);
            let count = std::fs::read_dir(&seeds).map(|d| d.count()).unwrap_or(0);
            assert!(count > 0, "no seeds in {}", seeds.display());
        }
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
        assert_eq!(
            manifest.matches("[[bin]]").count(),
            TARGETS.len(),
            "fuzz/Cargo.toml and TARGETS list different targets"
        );
    }
}
