//! `cargo xtask test`: everything CI checks, in the order a failure is cheapest to find.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ferrolb_tests::{bins, lab};

use crate::run_step;

pub fn run(install: bool, filter: Option<&str>) -> Result<()> {
    let started = Instant::now();
    if std::path::Path::new(lab::CLUSTER_MARKER).exists() {
        bail!(
            "a `cargo xtask cluster up` cluster is running and its lab would clash with the tests; run `cargo xtask cluster down` first"
        );
    }
    crate::deps::ensure_testbed(install)?;
    let root = bins::workspace_root();
    let cargo = || {
        let mut c = bins::cargo_command();
        c.current_dir(&root);
        c
    };
    crate::shape::check(&root)?;
    crate::supply_chain::check(&root)?;
    run_step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run_step(
        "cargo clippy -D warnings",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    crate::crds::run(true)?;
    run_step(
        "helm lint charts/ferrolb",
        Command::new(bins::binary("helm")?)
            .args(["lint", "--strict", "--quiet"])
            .arg(root.join("charts/ferrolb")),
    )?;
    crate::manifests::run(true)?;

    let unit = counted_tests(
        "unit tests",
        cargo().args(["test", "--workspace", "--lib", "--bins"]),
    )?;
    let fuzzed = crate::fuzz::fuzz(&root, &crate::fuzz::TARGETS, crate::fuzz::TEST_SECONDS)?;
    crate::fuzz::report(&fuzzed);
    // The integration tests run the real controller, speaker and kubectl plugin binaries
    // (ferrolb_tests::controller, ferrolb_tests::speaker, tests/tests/plugin.rs).
    run_step(
        "cargo build -p ferrolb-controller -p ferrolb-speaker -p kubectl-ferrolb",
        cargo().args([
            "build",
            "-p",
            "ferrolb-controller",
            "-p",
            "ferrolb-speaker",
            "-p",
            "kubectl-ferrolb",
            "--bins",
        ]),
    )?;
    // The end-to-end tests install the chart with these images on real nodes; building them
    // here (release, fat LTO) shows the step and its time instead of hiding it in a test.
    eprintln!("==> cargo xtask image (ferrolb, echo, pause)");
    let images_started = Instant::now();
    for image in ferrolb_tests::image::build_all(&Default::default())? {
        eprintln!(
            "==> {} {} ({})",
            image.name,
            image.digest,
            ferrolb_tests::image::human_size(image.compressed_size)
        );
    }
    eprintln!(
        "==> images built in {:.0} s",
        images_started.elapsed().as_secs_f64()
    );
    // MetalLB's controller and speaker for the migration test, built from its Go module (once
    // per machine, then cached) here, not inside the tests: a Go build saturating both cores
    // beside an end-to-end journey would be a load the journey was not meant to measure.
    let metallb_started = Instant::now();
    ferrolb_tests::metallb::release::images()?;
    eprintln!(
        "==> MetalLB {} images ready in {:.0} s",
        ferrolb_tests::metallb::release::VERSION,
        metallb_started.elapsed().as_secs_f64()
    );
    let mut integration = cargo();
    integration.args(["test", "-p", "ferrolb-tests", "--test", "*"]);
    if let Some(f) = filter {
        integration.args(["--", f]);
    }
    let result = counted_tests("real-cluster and lab tests", &mut integration);
    let cleanup = cleanup();
    let integration = result?;
    cleanup?;
    eprintln!(
        "==> all passed in {:.0} s: {} unit tests, {} real-cluster and lab tests",
        started.elapsed().as_secs_f64(),
        unit.passed,
        integration.passed
    );
    println!("{} passed, 0 failed", unit.passed + integration.passed);
    Ok(())
}

/// Totals over every `test result:` line of a cargo test run.
#[derive(Debug, Default)]
struct Counts {
    passed: u64,
    failed: u64,
}

fn counted_tests(what: &str, cmd: &mut Command) -> Result<Counts> {
    eprintln!("==> {what}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut counts = Counts::default();
    for line in BufReader::new(child.stdout.take().context("no stdout")?).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            counts.passed += number_before(rest, " passed");
            counts.failed += number_before(rest, " failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "{what} failed ({status}): {} passed, {} failed",
            counts.passed,
            counts.failed
        );
    }
    eprintln!("==> {what}: {} passed", counts.passed);
    Ok(counts)
}

fn number_before(text: &str, label: &str) -> u64 {
    text.split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(label.trim_start())
                .map(str::trim)
                .and_then(|n| n.split_whitespace().last()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Removes what test processes could not: a cluster a failed `cluster` test left up, lab
/// namespaces and bridge, scratch directories.
fn cleanup() -> Result<()> {
    ferrolb_tests::cluster::down()?;
    let scratch = bins::workspace_root().join("target/testbed");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("removing {}", scratch.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cargo_test_summary_lines() {
        let l = "ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(number_before(l, " passed"), 12);
        assert_eq!(number_before(l, " failed"), 0);
        assert_eq!(
            number_before("FAILED. 3 passed; 2 failed; 0 ignored", " failed"),
            2
        );
    }
}
