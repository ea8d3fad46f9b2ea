//! OCI image archives from values, without I/O: a layer tar from an in-memory file list, its gzip
//! blob, the image config, the OCI manifest and index, Docker's `manifest.json`, and the outer
//! tar holding them all. The same inputs give the same bytes, so the same manifest digest.
//!
//! ```text
//! archive.tar
//!   blobs/sha256/<config>     application/vnd.oci.image.config.v1+json  (rootfs.diff_ids[0] =
//!   blobs/sha256/<layer>      ...layer.v1.tar+gzip                        sha256 of the layer tar)
//!   blobs/sha256/<manifest>   ...manifest.v1+json -> config, layer
//!   index.json                -> manifest, annotated io.containerd.image.name / ...ref.name
//!   manifest.json             [{"Config", "RepoTags", "Layers"}] for `docker load` and friends
//!   oci-layout
//! ```
//!
//! This is the layout `docker save` writes since Docker 25, which `docker load`,
//! `kind load image-archive`, `ctr images import` and `skopeo` (`oci-archive:` and
//! `docker-archive:`) all read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Index annotation with the tag part of the reference (OCI image layout).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Index annotation with the full reference (what containerd and Docker name the image).
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// The gzip level of layers: the best, since images are built once and pulled often.
const GZIP_LEVEL: u32 = 9;
/// The gzip header's OS byte: "unknown", so the host does not show through.
const GZIP_OS_UNKNOWN: u8 = 255;

/// One entry of a tar: a directory or a regular file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the tar, relative (`usr/local/bin/ferrolb-echo`, `tmp`), `/`-separated.
    pub path: String,
    /// Permission bits, e.g. `0o755`, `0o644`, `0o1777`.
    pub mode: u32,
    /// File contents; `None` for a directory.
    pub contents: Option<Vec<u8>>,
}

impl Entry {
    /// A regular file.
    pub fn file(path: &str, mode: u32, contents: impl Into<Vec<u8>>) -> Entry {
        Entry {
            path: path.to_string(),
            mode,
            contents: Some(contents.into()),
        }
    }

    /// A directory.
    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry {
            path: path.to_string(),
            mode,
            contents: None,
        }
    }
}

/// A tar of `entries` that depends on nothing else: entries sorted by path, every parent
/// directory present (added with mode 0755 when missing), directories written as `path/`, every
/// mtime `mtime`, uid and gid 0, no user or group names. Fails on an absolute path, `..`, an
/// empty component, or a path given twice.
pub fn tar(entries: &[Entry], mtime: u64) -> Result<Vec<u8>> {
    let mut by_path: BTreeMap<String, &Entry> = BTreeMap::new();
    for entry in entries {
        let path = normalise(&entry.path)?;
        if by_path.insert(path.clone(), entry).is_some() {
            bail!("{path:?} is given twice");
        }
    }
    // Parents that were not given explicitly.
    let implied_dir = Entry::dir("", 0o755);
    let mut implied: BTreeSet<String> = BTreeSet::new();
    for path in by_path.keys() {
        let mut parent = path.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            parent = p;
            match by_path.get(parent) {
                Some(e) if e.contents.is_some() => {
                    bail!("{parent:?} is a file but {path:?} is inside it")
                }
                Some(_) => {}
                None => {
                    implied.insert(parent.to_string());
                }
            }
        }
    }
    let mut all: Vec<(String, &Entry)> = by_path.into_iter().collect();
    all.extend(implied.into_iter().map(|p| (p, &implied_dir)));
    // Written names: directories end with `/`. Sorting on them puts a directory right before
    // its contents.
    let mut named: Vec<(String, &Entry)> = all
        .into_iter()
        .map(|(p, e)| match e.contents {
            None => (format!("{p}/"), e),
            Some(_) => (p, e),
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));

    let mut builder = ::tar::Builder::new(Vec::new());
    for (name, entry) in named {
        let mut header = ::tar::Header::new_ustar();
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(entry.mode);
        let data: &[u8] = match &entry.contents {
            Some(contents) => {
                header.set_entry_type(::tar::EntryType::Regular);
                contents
            }
            None => {
                header.set_entry_type(::tar::EntryType::Directory);
                &[]
            }
        };
        header.set_size(data.len() as u64);
        builder
            .append_data(&mut header, &name, data)
            .with_context(|| format!("adding {name:?} to a tar"))?;
    }
    Ok(builder.into_inner()?)
}

/// `path` without leading `/` or `./`, or an error saying what is wrong with it.
fn normalise(path: &str) -> Result<String> {
    let trimmed = path.trim_start_matches("./").trim_end_matches('/');
    if trimmed.starts_with('/') {
        bail!("{path:?}: tar paths must be relative");
    }
    if trimmed
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        bail!("{path:?}: empty, `.` or `..` component");
    }
    Ok(trimmed.to_string())
}

/// gzip of `data` that depends on nothing else: mtime 0, no file name, OS "unknown", level 9.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNKNOWN)
        .write(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
    encoder
        .write_all(data)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// `2024-05-01T12:00:00Z` for seconds since the Unix epoch (UTC; RFC 3339).
pub fn rfc3339(epoch: u64) -> String {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days, for days >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// An image reference split at its tag: `ghcr.io/ferrolb/ferrolb` and `0.1.0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub repository: String,
    pub tag: String,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

/// What the image config says besides its layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// GOARCH-style: `amd64`, `arm64`.
    pub architecture: String,
    /// Creation time, seconds since the epoch (the commit's time, for reproducibility).
    pub created: u64,
    /// `uid:gid`.
    pub user: String,
    /// `NAME=value`.
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// e.g. `8080/tcp`.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// The history entry's `created_by`: what made the layer.
    pub created_by: String,
}

/// An archive in memory, and what identifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    /// The outer tar.
    pub bytes: Vec<u8>,
    /// `sha256:...` of the manifest: the image's digest in a registry and in containerd.
    pub manifest_digest: String,
    /// `sha256:...` of the config: the image ID Docker shows.
    pub config_digest: String,
    /// `sha256:...` of the uncompressed layer tar (`rootfs.diff_ids[0]`).
    pub diff_id: String,
    /// Bytes a registry stores and a pull transfers: manifest + config + compressed layer.
    pub compressed_size: u64,
}

// === JSON documents (field order as written) ===

#[derive(Serialize)]
struct Descriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'a str, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform<'a>>,
}

#[derive(Serialize)]
struct Platform<'a> {
    architecture: &'a str,
    os: &'a str,
}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
struct Index<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    created: String,
    architecture: &'a str,
    os: &'a str,
    config: RunConfig<'a>,
    rootfs: RootFs,
    history: Vec<History<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig<'a> {
    user: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    exposed_ports: BTreeMap<&'a str, Empty>,
    env: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    entrypoint: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    cmd: &'a [String],
    working_dir: &'a str,
    labels: &'a BTreeMap<String, String>,
}

/// `{}`: the value of each `ExposedPorts` key.
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History<'a> {
    created: String,
    created_by: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest<'a> {
    config: String,
    repo_tags: Vec<&'a str>,
    layers: Vec<String>,
}

/// `blobs/sha256/<hex>` for a `sha256:<hex>` digest.
pub fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// The whole archive for an image of one layer holding `files`.
pub fn archive(reference: &Reference, config: &Config, files: &[Entry]) -> Result<Archive> {
    let layer_tar = tar(files, config.created).context("building the layer")?;
    let diff_id = digest(&layer_tar);
    let layer = gzip(&layer_tar);
    let layer_digest = digest(&layer);

    let created = rfc3339(config.created);
    let image_config = ImageConfig {
        created: created.clone(),
        architecture: &config.architecture,
        os: "linux",
        config: RunConfig {
            user: &config.user,
            exposed_ports: config
                .exposed_ports
                .iter()
                .map(|p| (p.as_str(), Empty {}))
                .collect(),
            env: &config.env,
            entrypoint: &config.entrypoint,
            cmd: &config.cmd,
            working_dir: "/",
            labels: &config.labels,
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids: vec![diff_id.clone()],
        },
        history: vec![History {
            created,
            created_by: &config.created_by,
        }],
    };
    let config_json = serde_json::to_vec(&image_config)?;
    let config_digest = digest(&config_json);

    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST,
        config: Descriptor {
            media_type: MEDIA_TYPE_CONFIG,
            digest: config_digest.clone(),
            size: config_json.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        },
        layers: vec![Descriptor {
            media_type: MEDIA_TYPE_LAYER_GZIP,
            digest: layer_digest.clone(),
            size: layer.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        }],
    };
    let manifest_json = serde_json::to_vec(&manifest)?;
    let manifest_digest = digest(&manifest_json);

    let full_name = reference.to_string();
    let index = Index {
        schema_version: 2,
        media_type: MEDIA_TYPE_INDEX,
        manifests: vec![Descriptor {
            media_type: MEDIA_TYPE_MANIFEST,
            digest: manifest_digest.clone(),
            size: manifest_json.len() as u64,
            annotations: BTreeMap::from([
                (ANNOTATION_CONTAINERD_NAME, full_name.clone()),
                (ANNOTATION_REF_NAME, reference.tag.clone()),
            ]),
            platform: Some(Platform {
                architecture: &config.architecture,
                os: "linux",
            }),
        }],
    };
    let docker_manifest = [DockerManifest {
        config: blob_path(&config_digest),
        repo_tags: vec![&full_name],
        layers: vec![blob_path(&layer_digest)],
    }];

    let compressed_size = (manifest_json.len() + config_json.len() + layer.len()) as u64;
    let outer = vec![
        Entry::file(&blob_path(&config_digest), 0o644, config_json),
        Entry::file(&blob_path(&manifest_digest), 0o644, manifest_json),
        Entry::file("index.json", 0o644, serde_json::to_vec(&index)?),
        Entry::file(
            "manifest.json",
            0o644,
            serde_json::to_vec(&docker_manifest)?,
        ),
        Entry::file("oci-layout", 0o644, r#"{"imageLayoutVersion":"1.0.0"}"#),
        Entry::file(&blob_path(&layer_digest), 0o644, layer),
    ];
    let bytes = tar(&outer, config.created).context("building the archive")?;
    Ok(Archive {
        bytes,
        manifest_digest,
        config_digest,
        diff_id,
        compressed_size,
    })
}
