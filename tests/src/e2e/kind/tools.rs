//! What the kind driver needs on this machine: `docker` with an answering daemon, `kind`, and
//! kubectl and helm (built or on PATH); [`Missing`] says what lacks and how to install it.

use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::DOCKER_INFO_TIMEOUT;
use crate::bins;

/// What the kind driver needs and this machine lacks: `Display` says what and how to install it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// Each missing piece.
    pub problems: Vec<Problem>,
}

/// One missing piece.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No `docker` on PATH.
    DockerNotFound,
    /// `docker` is there but the daemon does not answer `docker info`; what it said.
    DockerDaemon(String),
    /// No `kind` on PATH.
    KindNotFound,
    /// Neither the Go-built nor a PATH `kubectl`/`helm`.
    ClientNotFound(&'static str),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::DockerNotFound => write!(
                f,
                "docker: not found on PATH. Install Docker Engine \
                 (https://docs.docker.com/engine/install/; on Debian/Ubuntu `apt-get install docker.io`) \
                 and start its daemon (`systemctl start docker`)."
            ),
            Problem::DockerDaemon(said) => write!(
                f,
                "docker: the daemon does not answer `docker info` ({said}). Start it \
                 (`systemctl start docker`) and check that this user may use it (the `docker` \
                 group, or DOCKER_HOST)."
            ),
            Problem::KindNotFound => write!(
                f,
                "kind: not found on PATH. Install kind >= v0.23 \
                 (https://kind.sigs.k8s.io/docs/user/quick-start/#installation, e.g. \
                 `go install sigs.k8s.io/kind@latest`)."
            ),
            Problem::ClientNotFound(name) => write!(
                f,
                "{name}: neither built by `cargo xtask k8s-build` (target/k8s) nor on PATH. \
                 Run `cargo xtask k8s-build`, or install {name}."
            ),
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the kind driver (`cargo xtask e2e --kind`) needs Docker and kind, and this machine lacks:"
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        write!(
            f,
            "`cargo xtask e2e` without --kind runs the same scenarios on the testbed driver (real \
             kubelets in network namespaces), which needs neither: only root, Go and Rust."
        )
    }
}

impl std::error::Error for Missing {}

/// What [`check_tools`] found.
#[derive(Clone, Debug)]
pub struct Tools {
    /// `kind version`'s semantic version, e.g. (0, 27, 0).
    pub kind_version: (u32, u32, u32),
    /// `docker info`'s server version.
    pub docker_version: String,
}

/// Checks that `docker` and `kind` are on PATH, that the Docker daemon answers, and that
/// kubectl and helm exist (built or on PATH). Cheap: call it before building anything.
pub fn check_tools() -> std::result::Result<Tools, Missing> {
    let mut problems = Vec::new();
    let mut docker_version = String::new();
    if bins::which("docker").is_none() {
        problems.push(Problem::DockerNotFound);
    } else {
        let mut cmd = Command::new("docker");
        cmd.args(["info", "--format", "{{.ServerVersion}}"]);
        match output_within(&mut cmd, DOCKER_INFO_TIMEOUT) {
            Ok(out) if out.status.success() && !out.stdout.trim_ascii().is_empty() => {
                docker_version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            Ok(out) => {
                let said = first_line(&out.stderr)
                    .or_else(|| first_line(&out.stdout))
                    .unwrap_or_else(|| format!("exit {}", out.status));
                problems.push(Problem::DockerDaemon(said));
            }
            Err(e) => problems.push(Problem::DockerDaemon(format!("{e:#}"))),
        }
    }
    let mut kind_version = (0, 0, 0);
    if bins::which("kind").is_none() {
        problems.push(Problem::KindNotFound);
    } else if let Ok(out) = Command::new("kind").arg("version").output() {
        kind_version =
            parse_kind_version(&String::from_utf8_lossy(&out.stdout)).unwrap_or_default();
    }
    for name in ["kubectl", "helm"] {
        if tool_binary(name).is_err() {
            problems.push(Problem::ClientNotFound(name));
        }
    }
    if problems.is_empty() {
        Ok(Tools {
            kind_version,
            docker_version,
        })
    } else {
        Err(Missing { problems })
    }
}

fn first_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// Runs `cmd` (stdin closed, output captured), killing it after `timeout`.
fn output_within(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let deadline = Instant::now() + timeout;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no answer within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.wait_with_output()?)
}

/// The testbed's Go-built `name` (it works against any cluster), else `name` on PATH.
pub fn tool_binary(name: &str) -> Result<PathBuf> {
    bins::binary(name)
        .ok()
        .or_else(|| bins::which(name))
        .with_context(|| format!("{name}: neither built by `cargo xtask k8s-build` nor on PATH"))
}

/// The semantic version in `kind version`'s output (`kind v0.27.0 go1.23.6 linux/amd64`, or
/// `0.27.0` with `-q`); pre-release and build parts are ignored.
pub fn parse_kind_version(out: &str) -> Option<(u32, u32, u32)> {
    let word = out.split_whitespace().find(|w| {
        w.trim_start_matches('v')
            .starts_with(|c: char| c.is_ascii_digit())
    })?;
    let core = word.trim_start_matches('v');
    let core = core.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}
