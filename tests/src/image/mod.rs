//! ferrolb's container images, built without a Docker daemon and reproducibly: what
//! `cargo xtask image` writes, and what the test harness imports into containerd.
//!
//! ```text
//! cargo build --release ──> target/release/{ferrolb-controller,ferrolb-speaker,ferrolb-echo,ferrolb-pause}
//!   rootfs: binaries in /usr/local/bin + the libraries `ldd` names + /etc/{passwd,group} + /tmp
//!   oci:    one gzip layer, config (User 65534:65534, OCI labels), manifest, index.json,
//!           manifest.json ──> target/images/{ferrolb,echo,pause}.tar
//! ```
//!
//! | image     | reference                                | holds                                 |
//! |-----------|------------------------------------------|---------------------------------------|
//! | `ferrolb` | `ghcr.io/ferrolb/ferrolb:<appVersion>`   | `ferrolb-controller`, `ferrolb-speaker` (what the chart runs by default) |
//! | `echo`    | `localhost/ferrolb/echo:<appVersion>`    | `ferrolb-echo`, the tests' workload   |
//! | `pause`   | `localhost/ferrolb/pause:<appVersion>`   | `ferrolb-pause`, the test nodes' sandbox image |
//!
//! `<appVersion>` is the chart's (`charts/ferrolb/Chart.yaml`). Two builds of one commit give
//! byte-identical archives: every time in them is the commit's time (`SOURCE_DATE_EPOCH` when
//! set), tar entries are sorted with uid 0 and fixed modes, gzip carries no name or time.
//!
//! ```no_run
//! use ferrolb_tests::image::{self, BuildOptions, ImageKind};
//! let built = image::build_all(&BuildOptions::default())?;
//! for image in &built {
//!     println!("{} {} {}", image.name, image.archive.display(), image.digest);
//! }
//! assert_eq!(built[0].archive, image::archive_path(ImageKind::Ferrolb));
//! # anyhow::Ok(())
//! ```

pub mod oci;
pub mod rootfs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::bins;

/// The ferrolb image's repository: the chart's default `image.repository`.
pub const FERROLB_REPOSITORY: &str = "ghcr.io/ferrolb/ferrolb";
/// The echo test workload's repository (never pushed: `localhost/`).
pub const ECHO_REPOSITORY: &str = "localhost/ferrolb/echo";
/// The test nodes' pod sandbox image's repository (never pushed: `localhost/`).
pub const PAUSE_REPOSITORY: &str = "localhost/ferrolb/pause";
/// Largest allowed image, compressed (manifest + config + gzip layer): 25 MB.
pub const MAX_COMPRESSED_SIZE: u64 = 25_000_000;
/// The user every image runs as unless the pod says otherwise: nobody:nogroup.
pub const USER: &str = "65534:65534";
/// The images' `PATH`: where the binaries are.
pub const PATH: &str = rootfs::BIN_DIR;

/// One of the images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageKind {
    /// `ferrolb-controller`, `ferrolb-speaker` and `kubectl-ferrolb`.
    Ferrolb,
    /// `ferrolb-echo`, the tests' HTTP workload.
    Echo,
    /// `ferrolb-pause`, the test nodes' sandbox (containerd `sandbox` image).
    Pause,
}

impl ImageKind {
    pub const ALL: [ImageKind; 3] = [ImageKind::Ferrolb, ImageKind::Echo, ImageKind::Pause];

    /// Short name: `ferrolb`, `echo`, `pause` (also the archive's file stem).
    pub fn name(self) -> &'static str {
        match self {
            ImageKind::Ferrolb => "ferrolb",
            ImageKind::Echo => "echo",
            ImageKind::Pause => "pause",
        }
    }

    /// Repository part of the reference, without tag.
    pub fn repository(self) -> &'static str {
        match self {
            ImageKind::Ferrolb => FERROLB_REPOSITORY,
            ImageKind::Echo => ECHO_REPOSITORY,
            ImageKind::Pause => PAUSE_REPOSITORY,
        }
    }

    /// `(package, binary)` pairs the image holds.
    pub fn binaries(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ImageKind::Ferrolb => &[
                ("ferrolb-controller", "ferrolb-controller"),
                ("ferrolb-speaker", "ferrolb-speaker"),
                ("kubectl-ferrolb", "kubectl-ferrolb"),
            ],
            ImageKind::Echo => &[("ferrolb-tests", "ferrolb-echo")],
            ImageKind::Pause => &[("ferrolb-tests", "ferrolb-pause")],
        }
    }

    /// Full reference with the chart's appVersion as tag, e.g. `ghcr.io/ferrolb/ferrolb:0.1.0`.
    pub fn reference(self) -> Result<String> {
        Ok(format!("{}:{}", self.repository(), app_version()?))
    }

    /// `org.opencontainers.image.title` and `.description`.
    fn title_and_description(self) -> (&'static str, &'static str) {
        match self {
            ImageKind::Ferrolb => (
                "ferrolb",
                "Bare-metal LoadBalancer for Kubernetes: ferrolb-controller allocates \
                 EXTERNAL-IPs from IPAddressPools, ferrolb-speaker announces them (ARP/NDP, \
                 BGP), kubectl-ferrolb explains what they do.",
            ),
            ImageKind::Echo => (
                "ferrolb-echo",
                "ferrolb's test workload: answers HTTP on :8080 with \
                 `pod=<pod> node=<node> client=<client ip>`.",
            ),
            ImageKind::Pause => (
                "ferrolb-pause",
                "ferrolb's pod sandbox image for test nodes: waits for SIGTERM and reaps zombies.",
            ),
        }
    }
}

impl std::str::FromStr for ImageKind {
    type Err = String;

    fn from_str(s: &str) -> Result<ImageKind, String> {
        ImageKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown image {s:?} (one of: ferrolb, echo, pause)"))
    }
}

impl std::fmt::Display for ImageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An image archive written to disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    pub kind: ImageKind,
    /// Full reference, e.g. `ghcr.io/ferrolb/ferrolb:0.1.0`.
    pub name: String,
    /// The OCI archive (also readable as a `docker save` archive).
    pub archive: PathBuf,
    /// Manifest digest, `sha256:...`: what `crictl images --digests` and a registry show.
    pub digest: String,
    /// Manifest + config + compressed layer, in bytes.
    pub compressed_size: u64,
}

/// What the images record about the source: `org.opencontainers.image.revision` and the time
/// used for every timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// `git rev-parse HEAD`, or `unknown` outside a git checkout.
    pub revision: String,
    /// Seconds since the epoch: `$SOURCE_DATE_EPOCH`, else the commit's time, else 0.
    pub epoch: u64,
}

impl Provenance {
    /// From the environment and the checkout (`git` in the workspace).
    pub fn of_checkout() -> Result<Provenance> {
        let revision = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
        let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(value) => value.trim().parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={value:?} is not a whole number of seconds")
            })?,
            Err(_) => git(&["log", "-1", "--format=%ct"])
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
        };
        Ok(Provenance { revision, epoch })
    }
}

/// `git <args>` in the workspace, its trimmed output when it succeeds.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(bins::workspace_root())
        .output()
        .ok()?;
    let out = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !out.trim().is_empty()).then(|| out.trim().to_string())
}

/// What to build, and where.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Images to build, in this order.
    pub images: Vec<ImageKind>,
    /// Directory of the archives; `target/images` by default.
    pub out_dir: PathBuf,
    /// Run `cargo build --release` first (false: use what is in `target/release`).
    pub cargo_build: bool,
    /// Revision and time to record; `None` reads them with [`Provenance::of_checkout`].
    pub provenance: Option<Provenance>,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions {
            images: ImageKind::ALL.to_vec(),
            out_dir: images_dir(),
            cargo_build: true,
            provenance: None,
        }
    }
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| bins::workspace_root().join("target"))
}

/// Where `cargo xtask image` writes the archives: `target/images`.
pub fn images_dir() -> PathBuf {
    target_dir().join("images")
}

/// The archive of `kind` as `cargo xtask image` writes it: `target/images/<name>.tar`.
pub fn archive_path(kind: ImageKind) -> PathBuf {
    images_dir().join(format!("{}.tar", kind.name()))
}

/// The chart's `appVersion` (charts/ferrolb/Chart.yaml): the images' tag.
pub fn app_version() -> Result<String> {
    let path = bins::workspace_root().join("charts/ferrolb/Chart.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    app_version_of(&text).with_context(|| format!("in {}", path.display()))
}

fn app_version_of(chart_yaml: &str) -> Result<String> {
    let chart: serde_yaml::Value = serde_yaml::from_str(chart_yaml)?;
    match &chart["appVersion"] {
        serde_yaml::Value::String(v) if !v.is_empty() => Ok(v.clone()),
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        _ => bail!("no appVersion"),
    }
}

/// The OCI (GOARCH-style) name of a Rust target architecture.
pub fn oci_architecture(rust_arch: &str) -> Result<&'static str> {
    Ok(match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => bail!("no OCI architecture name known for {other}"),
    })
}

/// The config of `kind`'s image: user, PATH, command, OCI labels.
pub fn image_config(
    kind: ImageKind,
    architecture: &str,
    version: &str,
    provenance: &Provenance,
) -> oci::Config {
    let (title, description) = kind.title_and_description();
    let labels = BTreeMap::from(
        [
            ("org.opencontainers.image.title", title),
            ("org.opencontainers.image.description", description),
            (
                "org.opencontainers.image.source",
                env!("CARGO_PKG_REPOSITORY"),
            ),
            (
                "org.opencontainers.image.licenses",
                env!("CARGO_PKG_LICENSE"),
            ),
            ("org.opencontainers.image.version", version),
            ("org.opencontainers.image.revision", &provenance.revision),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let bin = |name: &str| format!("{}/{name}", rootfs::BIN_DIR);
    let (entrypoint, cmd, exposed_ports) = match kind {
        // The chart gives the command (`ferrolb-controller run`, `ferrolb-speaker run`).
        ImageKind::Ferrolb => (
            vec![],
            vec!["ferrolb-controller".into(), "--help".into()],
            vec![],
        ),
        ImageKind::Echo => (vec![bin("ferrolb-echo")], vec![], vec!["8080/tcp".into()]),
        ImageKind::Pause => (vec![bin("ferrolb-pause")], vec![], vec![]),
    };
    oci::Config {
        architecture: architecture.to_string(),
        created: provenance.epoch,
        user: USER.to_string(),
        env: vec![format!("PATH={PATH}")],
        entrypoint,
        cmd,
        exposed_ports,
        labels,
        created_by: format!("cargo xtask image {}", kind.name()),
    }
}

/// The `cargo build --release` invocations for `kinds`, as `(package, binary)` lists: images
/// that share a package build together, the others apart. Cargo unifies features across the
/// packages of one invocation, so building `ferrolb-tests` (echo, pause) together with the
/// controller would compile the controller against the testbed's feature set; apart, it is
/// exactly `cargo build --release -p ferrolb-controller -p ferrolb-speaker -p kubectl-ferrolb`.
pub fn cargo_builds(kinds: &[ImageKind]) -> Vec<Vec<(&'static str, &'static str)>> {
    let mut groups: Vec<Vec<(&'static str, &'static str)>> = Vec::new();
    for kind in kinds {
        let shares_a_package = |group: &Vec<(&str, &str)>| {
            group
                .iter()
                .any(|(package, _)| kind.binaries().iter().any(|(p, _)| p == package))
        };
        let group = match groups.iter().position(shares_a_package) {
            Some(i) => &mut groups[i],
            None => {
                groups.push(Vec::new());
                groups.last_mut().expect("just pushed")
            }
        };
        for bin in kind.binaries() {
            if !group.contains(bin) {
                group.push(*bin);
            }
        }
    }
    groups
}

/// Builds the release binaries (unless told not to) and writes one archive per image; prints
/// progress to stderr. Fails when an image exceeds [`MAX_COMPRESSED_SIZE`].
pub fn build_all(opts: &BuildOptions) -> Result<Vec<BuiltImage>> {
    let version = app_version()?;
    let architecture = oci_architecture(std::env::consts::ARCH)?;
    let provenance = match &opts.provenance {
        Some(p) => p.clone(),
        None => Provenance::of_checkout()?,
    };
    if opts.cargo_build {
        for binaries in cargo_builds(&opts.images) {
            bins::cargo_build_release(&binaries)?;
        }
    }
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let release = target_dir().join("release");
    let mut built = Vec::new();
    for &kind in &opts.images {
        let reference = oci::Reference {
            repository: kind.repository().to_string(),
            tag: version.clone(),
        };
        eprintln!("==> assembling {reference}");
        let paths: Vec<PathBuf> = kind
            .binaries()
            .iter()
            .map(|(_, bin)| release.join(bin))
            .collect();
        let mut entries = rootfs::base_entries();
        for path in &paths {
            let contents = std::fs::read(path).with_context(|| {
                format!(
                    "reading {} (built by `cargo build --release`)",
                    path.display()
                )
            })?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            entries.push(rootfs::binary_entry(&name, contents));
        }
        entries.extend(rootfs::shared_libraries(&paths)?);
        let config = image_config(kind, architecture, &version, &provenance);
        let archive = oci::archive(&reference, &config, &entries)
            .with_context(|| format!("assembling {reference}"))?;
        if archive.compressed_size > MAX_COMPRESSED_SIZE {
            bail!(
                "{reference} is {} compressed, over the {} limit",
                human_size(archive.compressed_size),
                human_size(MAX_COMPRESSED_SIZE)
            );
        }
        let path = opts.out_dir.join(format!("{}.tar", kind.name()));
        write_atomically(&path, &archive.bytes)?;
        built.push(BuiltImage {
            kind,
            name: reference.to_string(),
            archive: path,
            digest: archive.manifest_digest,
            compressed_size: archive.compressed_size,
        });
    }
    Ok(built)
}

/// Writes `path` through a temporary file in the same directory, so a reader never sees half
/// an archive.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let partial = path.with_extension("tar.partial");
    std::fs::write(&partial, bytes).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("renaming to {}", path.display()))
}

/// `12.3 MB` (decimal megabytes, as the size limit is stated).
pub fn human_size(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests;
