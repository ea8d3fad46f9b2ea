//! The testbed's Go-built binaries, from the Go modules in `tests/k8s/` into
//! `target/k8s/<versions>/bin`: the control plane (kube-apiserver, kube-controller-manager,
//! kube-scheduler, kubectl, etcd), what real nodes run (kubelet, kube-proxy, containerd with its
//! runc shim and ctr) and helm.
//!
//! The cache key is the versions pinned in the `go.mod` files, so bumping one rebuilds and
//! everything else reuses. A build goes to a `.partial` directory first and is renamed into place
//! only when every binary built, so an interrupted build is never mistaken for a finished one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Repository root (the workspace directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where the Go modules live.
pub fn go_modules_dir() -> PathBuf {
    workspace_root().join("tests/k8s")
}

/// Every binary the testbed runs.
pub const BINARIES: [&str; 11] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kube-proxy",
    "etcd",
    "helm",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
];

/// Pinned versions, read from the Go modules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versions {
    /// `k8s.io/kubernetes`, e.g. `v1.37.2`.
    pub kubernetes: String,
    /// `go.etcd.io/etcd/server/v3`.
    pub etcd: String,
    /// `helm.sh/helm/v4`.
    pub helm: String,
    /// `github.com/containerd/containerd/v2`.
    pub containerd: String,
}

impl Versions {
    /// Reads the versions from `tests/k8s/{apiserver,helm,containerd}/go.mod`.
    pub fn pinned() -> Result<Versions> {
        let dir = go_modules_dir();
        let read = |module: &str| {
            let path = dir.join(module).join("go.mod");
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let apiserver = read("apiserver")?;
        Ok(Versions {
            kubernetes: required_version(&apiserver, "k8s.io/kubernetes")?,
            etcd: required_version(&apiserver, "go.etcd.io/etcd/server/v3")?,
            helm: required_version(&read("helm")?, "helm.sh/helm/v4")?,
            containerd: required_version(
                &read("containerd")?,
                "github.com/containerd/containerd/v2",
            )?,
        })
    }

    /// Cache directory name.
    pub fn key(&self) -> String {
        format!(
            "kubernetes-{}_etcd-{}_helm-{}_containerd-{}",
            self.kubernetes, self.etcd, self.helm, self.containerd
        )
    }
}

/// The version of `module` in a go.mod `require` line.
fn required_version(go_mod: &str, module: &str) -> Result<String> {
    go_mod
        .lines()
        .map(|l| l.trim().trim_start_matches("require").trim())
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(module))
                .then(|| words.next().map(str::to_string))
                .flatten()
        })
        .with_context(|| format!("no `require {module}` line in go.mod"))
}

/// Directory holding the binaries: `$FERROLB_K8S_BIN` if set, else the versioned cache.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FERROLB_K8S_BIN") {
        return Ok(PathBuf::from(dir));
    }
    Ok(workspace_root()
        .join("target/k8s")
        .join(Versions::pinned()?.key())
        .join("bin"))
}

/// Path of one binary, failing with what to run when the cache is empty.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: the control plane has not been built on this machine. \
             Run `cargo xtask test` or `cargo xtask cluster up`, which build it from tests/k8s \
             (about 15 minutes once), or `cargo xtask k8s-build` alone.",
            path.display()
        );
    }
    Ok(path)
}

/// Whether every binary is already in the cache.
pub fn is_built() -> Result<bool> {
    let dir = bin_dir()?;
    Ok(BINARIES.iter().all(|b| dir.join(b).is_file()))
}

/// Builds the binaries unless cached; prints progress to stderr. Returns the build time, or
/// `None` when the cache was warm.
pub fn build_if_missing() -> Result<Option<Duration>> {
    if is_built()? {
        return Ok(None);
    }
    let go = which("go").context(
        "Go is not installed, and the test control plane (kube-apiserver, etcd, kubectl, helm) is \
         built from Go modules: install Go >= 1.26 and put `go` on PATH",
    )?;
    let versions = Versions::pinned()?;
    let final_dir = bin_dir()?;
    let partial = final_dir.with_file_name("bin.partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let started = Instant::now();
    eprintln!(
        "building the control plane ({}) from Go modules into {}; the first build takes 10-25 minutes",
        versions.key(),
        final_dir.display()
    );

    let ldflags = kubernetes_ldflags(&versions);
    let modules = go_modules_dir();
    go_build(
        &go,
        &modules.join("apiserver"),
        &partial,
        &["-tags", "selinux,notest", "-ldflags", &ldflags],
        &[
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-scheduler",
            "k8s.io/kubernetes/cmd/kubectl",
            "k8s.io/kubernetes/cmd/kubelet",
            "k8s.io/kubernetes/cmd/kube-proxy",
            "go.etcd.io/etcd/server/v3",
        ],
        started,
    )?;
    // etcd's main package is the module root, so `go build` names the binary after it.
    std::fs::rename(partial.join("server"), partial.join("etcd"))?;
    go_build(
        &go,
        &modules.join("helm"),
        &partial,
        &["-ldflags", "-s -w"],
        &["helm.sh/helm/v4/cmd/helm"],
        started,
    )?;
    // containerd's own release flags: no btrfs, devmapper or zfs snapshotters (overlayfs and
    // native are what the nodes use), and the shim without its gRPC server (ttrpc only).
    let containerd_ldflags = format!(
        "-s -w -X github.com/containerd/containerd/v2/version.Version={}",
        versions.containerd
    );
    let containerd = modules.join("containerd");
    go_build(
        &go,
        &containerd,
        &partial,
        &[
            "-tags",
            "no_btrfs,no_devmapper,no_zfs",
            "-ldflags",
            &containerd_ldflags,
        ],
        &[
            "github.com/containerd/containerd/v2/cmd/containerd",
            "github.com/containerd/containerd/v2/cmd/ctr",
        ],
        started,
    )?;
    go_build(
        &go,
        &containerd,
        &partial,
        &[
            "-tags",
            "no_btrfs,no_devmapper,no_zfs,no_grpc",
            "-ldflags",
            &containerd_ldflags,
        ],
        &["github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"],
        started,
    )?;
    for b in BINARIES {
        if !partial.join(b).is_file() {
            bail!(
                "go build finished but {} is missing from {}",
                b,
                partial.display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&partial, &final_dir)?;
    let took = started.elapsed();
    eprintln!("control plane built in {:.0} s", took.as_secs_f64());
    Ok(Some(took))
}

/// Upstream's release link flags: stripped, with the version variables set so `/version`
/// reports the pinned release.
pub(crate) fn kubernetes_ldflags(versions: &Versions) -> String {
    let mut ldflags = String::from("-s -w");
    let minor = versions
        .kubernetes
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap_or("0")
        .to_string();
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        for (var, value) in [
            ("gitVersion", versions.kubernetes.as_str()),
            ("gitMajor", "1"),
            ("gitMinor", minor.as_str()),
            ("gitCommit", "0000000000000000000000000000000000000000"),
            ("gitTreeState", "clean"),
            ("buildDate", "1970-01-01T00:00:00Z"),
        ] {
            ldflags.push_str(&format!(" -X {pkg}.{var}={value}"));
        }
    }
    ldflags
}

pub(crate) fn go_build(
    go: &Path,
    module: &Path,
    out: &Path,
    flags: &[&str],
    packages: &[&str],
    started: Instant,
) -> Result<()> {
    let mut cmd = Command::new(go);
    cmd.current_dir(module)
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-buildvcs=false -mod=readonly")
        .arg("build")
        .arg("-trimpath")
        .args(flags)
        .arg("-o")
        .arg(format!("{}/", out.display()))
        .args(packages)
        .stdin(Stdio::null());
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    wait_with_progress(child, &packages.join(", "), started).with_context(|| {
        format!(
            "go build of {} in {} failed; see the Go errors above",
            packages.join(" "),
            module.display()
        )
    })
}

/// A binary of this workspace: `$<env>` when set, else `name` in the target directory of the
/// running executable (`target/<profile>/`, also for test executables in `target/<profile>/deps/`),
/// else `target/debug/<name>`. Fails with `build_hint` (the command that builds it) when missing.
pub fn cargo_binary(name: &str, env: &str, build_hint: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("${env} is {}, which is not a file", path.display());
        }
        return Ok(path);
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        if dir.file_name().is_some_and(|n| n == "deps")
            && let Some(profile) = dir.parent()
        {
            candidates.push(profile.join(name));
        }
        candidates.push(dir.join(name));
    }
    candidates.push(workspace_root().join("target/debug").join(name));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "{name} is missing (looked for {}); build it with `{build_hint}` or set ${env}",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// The `kubectl-ferrolb` plugin of this workspace (`$KUBECTL_FERROLB_BIN` when set).
pub fn kubectl_ferrolb() -> Result<PathBuf> {
    cargo_binary(
        "kubectl-ferrolb",
        "KUBECTL_FERROLB_BIN",
        "cargo build -p kubectl-ferrolb",
    )
}

/// A `cargo` command (`$CARGO`, else `cargo`) without the variables cargo sets for the process
/// it runs (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...). Build scripts such as ring's rerun when
/// `CARGO_MANIFEST_DIR` changes, so a build started from `cargo xtask` and one started from a
/// test (each with its own package's values) would rebuild half the dependency tree, release
/// profile included, every time they alternate.
pub fn cargo_command() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo = name.starts_with("CARGO_PKG_")
            || matches!(
                name.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            );
        if set_by_cargo {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

/// `cargo build` of `bins` (`(package, binary)` pairs) in the workspace, with cargo's output on
/// the terminal and a `==>` line now and then, so a long first build is visibly alive.
pub fn cargo_build(bins: &[(&str, &str)]) -> Result<()> {
    cargo_build_profile(bins, false)
}

/// [`cargo_build`] with `--release` (into `target/release`; fat LTO, so several minutes the
/// first time).
pub fn cargo_build_release(bins: &[(&str, &str)]) -> Result<()> {
    cargo_build_profile(bins, true)
}

fn cargo_build_profile(bins: &[(&str, &str)], release: bool) -> Result<()> {
    let names: Vec<&str> = bins.iter().map(|(_, b)| *b).collect();
    let release_flag = if release { " --release" } else { "" };
    eprintln!(
        "==> cargo build{release_flag} {} (the first build takes a few minutes)",
        names.join(" ")
    );
    let mut cmd = cargo_command();
    cmd.current_dir(workspace_root()).arg("build");
    if release {
        cmd.arg("--release");
    }
    for (package, bin) in bins {
        cmd.args(["-p", package, "--bin", bin]);
    }
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    wait_with_progress(child, &names.join(", "), started).with_context(|| {
        format!(
            "cargo build of {}; see cargo's errors above",
            names.join(" ")
        )
    })?;
    eprintln!(
        "==> built {} in {:.0} s",
        names.join(" "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits for `child`, printing a line every minute; fails when it exits non-zero.
fn wait_with_progress(mut child: std::process::Child, what: &str, started: Instant) -> Result<()> {
    let mut last_report = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("building {what} failed ({status})");
            }
            return Ok(());
        }
        if last_report.elapsed() >= Duration::from_secs(60) {
            eprintln!(
                "==> still building {what} ({:.0} s so far)",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// First `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([
            PathBuf::from("/usr/local/go/bin"),
            PathBuf::from("/usr/lib/go/bin"),
        ])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_committed_go_modules() {
        let v = Versions::pinned().unwrap();
        assert!(v.kubernetes.starts_with("v1.37."), "{v:?}");
        assert!(v.etcd.starts_with("v3."), "{v:?}");
        assert!(v.helm.starts_with("v4."), "{v:?}");
        assert!(v.containerd.starts_with("v2."), "{v:?}");
    }

    #[test]
    fn require_lines_in_blocks_and_single_form_are_read() {
        let m = "module x\n\nrequire k8s.io/kubernetes v1.37.2\n\nrequire (\n\tgo.etcd.io/etcd/server/v3 v3.7.0 // indirect\n)\n";
        assert_eq!(required_version(m, "k8s.io/kubernetes").unwrap(), "v1.37.2");
        assert_eq!(
            required_version(m, "go.etcd.io/etcd/server/v3").unwrap(),
            "v3.7.0"
        );
        assert!(required_version(m, "helm.sh/helm/v4").is_err());
    }
}
