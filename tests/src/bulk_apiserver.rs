//! A kube-apiserver for creating Services in bulk, used only by the benchmark that fills a
//! control plane with 100,000 of them before the stock apiserver takes over.
//!
//! Kubernetes 1.37's cluster-IP allocator updates two gauges after every allocation and release
//! (`kube_apiserver_clusterip_allocator_allocated_ips` and `..._available_ips`) by listing and
//! parsing every `IPAddress` object, so each Service create costs time in proportion to the
//! Services already there: creating 100,000 takes about two hours on 2 cores, nearly all of it in
//! that count. This build is the pinned release with those four gauge updates removed and
//! nothing else changed; it writes the same objects to etcd. The benchmark stops it once the
//! Services exist and measures on the stock apiserver.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::bins::{self, Versions};

/// The allocator's source file, inside the `k8s.io/kubernetes` module.
const ALLOCATOR_SOURCE: &str = "pkg/registry/core/service/ipallocator/ipallocator.go";

/// The gauge updates removed: each is a whole line, twice in the file (after an allocation and
/// after a release).
const GAUGE_UPDATES: [&str; 2] = [
    "a.metrics.setAllocated(a.metricLabel, a.Used())",
    "a.metrics.setAvailable(a.metricLabel, a.Free())",
];

/// `source` without the gauge updates; fails unless each appears exactly twice, so a new
/// Kubernetes release whose allocator changed is noticed rather than built unpatched.
pub fn without_gauge_updates(source: &str) -> Result<String> {
    let mut removed = [0usize; 2];
    let mut out = String::with_capacity(source.len());
    for line in source.split_inclusive('\n') {
        match GAUGE_UPDATES.iter().position(|g| line.trim() == *g) {
            Some(i) => removed[i] += 1,
            None => out.push_str(line),
        }
    }
    for (gauge, n) in GAUGE_UPDATES.iter().zip(removed) {
        if n != 2 {
            bail!(
                "{ALLOCATOR_SOURCE}: expected `{gauge}` on 2 lines, found {n}; the allocator \
                 changed in this Kubernetes release, so the bulk-create apiserver needs a new patch"
            );
        }
    }
    Ok(out)
}

/// The bulk-create kube-apiserver, built unless cached (in `target/k8s/<versions>/bulk-create/`,
/// from the same Go modules and flags as the testbed's). With Go's build cache warm from the
/// testbed build it takes seconds; cold, several minutes.
pub fn build_if_missing() -> Result<PathBuf> {
    let versions = Versions::pinned()?;
    let dir = bins::workspace_root()
        .join("target/k8s")
        .join(versions.key())
        .join("bulk-create");
    let binary = dir.join("bin/kube-apiserver");
    if binary.is_file() {
        return Ok(binary);
    }
    let go = bins::which("go").context("Go is needed to build the bulk-create kube-apiserver")?;
    let started = Instant::now();
    eprintln!(
        "building a kube-apiserver without the cluster-IP usage gauges into {}",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
    let module_copy = dir.join("src/kubernetes");
    copy_module(&go, &versions, &module_copy)?;
    let allocator = module_copy.join(ALLOCATOR_SOURCE);
    let source = std::fs::read_to_string(&allocator)
        .with_context(|| format!("reading {}", allocator.display()))?;
    std::fs::write(&allocator, without_gauge_updates(&source)?)?;

    // The testbed's module, with k8s.io/kubernetes replaced by the patched copy.
    let main = dir.join("src/apiserver");
    std::fs::create_dir_all(&main)?;
    let testbed = bins::go_modules_dir().join("apiserver");
    std::fs::copy(testbed.join("go.sum"), main.join("go.sum"))?;
    let go_mod = std::fs::read_to_string(testbed.join("go.mod"))?;
    std::fs::write(
        main.join("go.mod"),
        format!(
            "{go_mod}\nreplace k8s.io/kubernetes => {}\n",
            module_copy.display()
        ),
    )?;
    let out = dir.join("bin.partial");
    std::fs::create_dir_all(&out)?;
    bins::go_build(
        &go,
        &main,
        &out,
        &[
            "-tags",
            "selinux,notest",
            "-ldflags",
            &bins::kubernetes_ldflags(&versions),
        ],
        &["k8s.io/kubernetes/cmd/kube-apiserver"],
        started,
    )?;
    std::fs::rename(&out, dir.join("bin"))?;
    eprintln!(
        "bulk-create kube-apiserver built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(binary)
}

/// Copies the pinned `k8s.io/kubernetes` module out of Go's module cache (read-only there) to
/// `to`, writable.
fn copy_module(go: &Path, versions: &Versions, to: &Path) -> Result<()> {
    let testbed = bins::go_modules_dir().join("apiserver");
    let output = Command::new(go)
        .current_dir(&testbed)
        .env("GOTOOLCHAIN", "local")
        .args([
            "mod",
            "download",
            "-json",
            &format!("k8s.io/kubernetes@{}", versions.kubernetes),
        ])
        .stdin(Stdio::null())
        .output()
        .context("running go mod download")?;
    if !output.status.success() {
        bail!(
            "go mod download k8s.io/kubernetes@{} failed: {}",
            versions.kubernetes,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let info: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let source = info["Dir"]
        .as_str()
        .context("go mod download named no directory")?;
    std::fs::create_dir_all(to.parent().expect("a parent"))?;
    for (program, args) in [
        ("cp", vec!["-R", source, &to.display().to_string()]),
        ("chmod", vec!["-R", "u+w", &to.display().to_string()]),
    ] {
        let status = Command::new(program).args(&args).status()?;
        if !status.success() {
            bail!("{program} {} failed ({status})", args.join(" "));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOCATOR: &str = "\tif err != nil {\n\t\treturn err\n\t}\n\t// update metrics\n\ta.metrics.incrementAllocations(a.metricLabel, scope)\n\ta.metrics.setAllocated(a.metricLabel, a.Used())\n\ta.metrics.setAvailable(a.metricLabel, a.Free())\n\treturn nil\n}\n\nfunc (a *Allocator) release() {\n\t\ta.metrics.setAllocated(a.metricLabel, a.Used())\n\t\ta.metrics.setAvailable(a.metricLabel, a.Free())\n}\n";

    #[test]
    fn the_four_gauge_updates_go_and_nothing_else_changes() {
        let patched = without_gauge_updates(ALLOCATOR).unwrap();
        assert!(!patched.contains("Used()"), "{patched}");
        assert!(!patched.contains("Free()"), "{patched}");
        let kept: Vec<&str> = ALLOCATOR
            .lines()
            .filter(|l| !l.contains("Used()") && !l.contains("Free()"))
            .collect();
        assert_eq!(patched.lines().collect::<Vec<_>>(), kept);
        assert!(patched.contains("incrementAllocations"));
    }

    #[test]
    fn a_changed_allocator_is_refused_with_the_file_named() {
        let once = ALLOCATOR.replacen(
            "\t\ta.metrics.setAllocated(a.metricLabel, a.Used())\n",
            "",
            1,
        );
        let err = without_gauge_updates(&once).unwrap_err().to_string();
        assert!(err.contains(ALLOCATOR_SOURCE), "{err}");
        assert!(err.contains("found 1"), "{err}");
    }
}
