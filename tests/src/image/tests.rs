//! The archive format, read back with the `tar` crate: reproducible bytes, blobs matching their
//! descriptors, layer entries normalised, config and both manifests consistent.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value;

use super::oci::{self, Entry, Reference};
use super::*;

const EPOCH: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn provenance() -> Provenance {
    Provenance {
        revision: "0123456789abcdef0123456789abcdef01234567".into(),
        epoch: EPOCH,
    }
}

fn reference() -> Reference {
    Reference {
        repository: FERROLB_REPOSITORY.into(),
        tag: "0.1.0".into(),
    }
}

fn files(controller: &[u8]) -> Vec<Entry> {
    let mut files = rootfs::base_entries();
    files.push(rootfs::binary_entry(
        "ferrolb-speaker",
        b"\x7fELF speaker".to_vec(),
    ));
    files.push(rootfs::binary_entry(
        "ferrolb-controller",
        controller.to_vec(),
    ));
    files.push(Entry::file(
        "lib/x86_64-linux-gnu/libc.so.6",
        0o755,
        b"libc".to_vec(),
    ));
    files.push(Entry::file(
        "lib64/ld-linux-x86-64.so.2",
        0o755,
        b"ld".to_vec(),
    ));
    files
}

fn build(controller: &[u8]) -> oci::Archive {
    let config = image_config(ImageKind::Ferrolb, "amd64", "0.1.0", &provenance());
    oci::archive(&reference(), &config, &files(controller)).unwrap()
}

/// One tar entry as read back.
#[derive(Debug)]
struct TarEntry {
    path: String,
    kind: ::tar::EntryType,
    mode: u32,
    mtime: u64,
    uid: u64,
    gid: u64,
    user_name: Option<String>,
    group_name: Option<String>,
    data: Vec<u8>,
}

fn read_tar(bytes: &[u8]) -> Vec<TarEntry> {
    let mut archive = ::tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            TarEntry {
                path: String::from_utf8(entry.path_bytes().to_vec()).unwrap(),
                kind: header.entry_type(),
                mode: header.mode().unwrap(),
                mtime: header.mtime().unwrap(),
                uid: header.uid().unwrap(),
                gid: header.gid().unwrap(),
                user_name: header.username().unwrap().map(str::to_string),
                group_name: header.groupname().unwrap().map(str::to_string),
                data,
            }
        })
        .collect()
}

/// The outer archive as path -> contents.
fn blobs(archive: &oci::Archive) -> BTreeMap<String, Vec<u8>> {
    read_tar(&archive.bytes)
        .into_iter()
        .filter(|e| e.kind == ::tar::EntryType::Regular)
        .map(|e| (e.path, e.data))
        .collect()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &Value) -> &'a [u8] {
    let path = oci::blob_path(digest.as_str().unwrap());
    files.get(&path).unwrap_or_else(|| panic!("no {path}"))
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// (manifest, config, uncompressed layer) of an archive, found from index.json.
fn parts(archive: &oci::Archive) -> (Value, Value, Vec<u8>) {
    let files = blobs(archive);
    let index = json(&files["index.json"]);
    let manifest = json(blob(&files, &index["manifests"][0]["digest"]));
    let config = json(blob(&files, &manifest["config"]["digest"]));
    let layer = gunzip(blob(&files, &manifest["layers"][0]["digest"]));
    (manifest, config, layer)
}

#[test]
fn the_same_inputs_give_identical_bytes_and_digest() {
    let a = build(b"\x7fELF controller");
    let b = build(b"\x7fELF controller");
    assert_eq!(a.manifest_digest, b.manifest_digest);
    assert!(a.bytes == b.bytes, "archives differ");
    assert!(a.manifest_digest.starts_with("sha256:") && a.manifest_digest.len() == 7 + 64);
}

#[test]
fn changing_a_file_changes_the_layer_config_and_manifest_digests() {
    let a = build(b"\x7fELF controller");
    let b = build(b"\x7fELF controller v2");
    assert_ne!(a.diff_id, b.diff_id);
    assert_ne!(a.config_digest, b.config_digest);
    assert_ne!(a.manifest_digest, b.manifest_digest);
}

#[test]
fn changing_the_revision_or_time_changes_the_digest() {
    let a = build(b"x");
    for p in [
        Provenance {
            revision: "other".into(),
            ..provenance()
        },
        Provenance {
            epoch: EPOCH + 1,
            ..provenance()
        },
    ] {
        let config = image_config(ImageKind::Ferrolb, "amd64", "0.1.0", &p);
        let b = oci::archive(&reference(), &config, &files(b"x")).unwrap();
        assert_ne!(a.manifest_digest, b.manifest_digest, "{p:?}");
    }
}

#[test]
fn every_blob_is_named_by_its_digest_and_descriptors_match_the_blobs() {
    let archive = build(b"\x7fELF controller");
    let files = blobs(&archive);
    for (path, data) in &files {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            assert_eq!(oci::digest(data), format!("sha256:{hex}"), "{path}");
        }
    }
    let index = json(&files["index.json"]);
    let descriptor = &index["manifests"][0];
    assert_eq!(descriptor["digest"], archive.manifest_digest.as_str());
    let manifest_bytes = blob(&files, &descriptor["digest"]);
    assert_eq!(descriptor["size"], manifest_bytes.len() as u64);
    assert_eq!(descriptor["mediaType"], oci::MEDIA_TYPE_MANIFEST);

    let manifest = json(manifest_bytes);
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["config"]["mediaType"], oci::MEDIA_TYPE_CONFIG);
    assert_eq!(manifest["config"]["digest"], archive.config_digest.as_str());
    let config_bytes = blob(&files, &manifest["config"]["digest"]);
    assert_eq!(manifest["config"]["size"], config_bytes.len() as u64);

    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], oci::MEDIA_TYPE_LAYER_GZIP);
    let layer = blob(&files, &layers[0]["digest"]);
    assert_eq!(layers[0]["size"], layer.len() as u64);

    let config = json(config_bytes);
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), 1);
    assert_eq!(diff_ids[0], oci::digest(&gunzip(layer)).as_str());
    assert_eq!(diff_ids[0], archive.diff_id.as_str());
    assert_eq!(config["rootfs"]["type"], "layers");

    let total = manifest_bytes.len() + config_bytes.len() + layer.len();
    assert_eq!(archive.compressed_size, total as u64);
}

#[test]
fn layer_entries_are_sorted_with_fixed_times_owners_and_modes() {
    let (_, _, layer) = parts(&build(b"\x7fELF controller"));
    let entries = read_tar(&layer);
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "etc/",
            "etc/group",
            "etc/passwd",
            "lib/",
            "lib/x86_64-linux-gnu/",
            "lib/x86_64-linux-gnu/libc.so.6",
            "lib64/",
            "lib64/ld-linux-x86-64.so.2",
            "tmp/",
            "usr/",
            "usr/local/",
            "usr/local/bin/",
            "usr/local/bin/ferrolb-controller",
            "usr/local/bin/ferrolb-speaker",
        ]
    );
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    for e in &entries {
        assert_eq!(e.mtime, EPOCH, "{}", e.path);
        assert_eq!((e.uid, e.gid), (0, 0), "{}", e.path);
        assert!(
            e.user_name.as_deref().unwrap_or("").is_empty(),
            "{}",
            e.path
        );
        assert!(
            e.group_name.as_deref().unwrap_or("").is_empty(),
            "{}",
            e.path
        );
        let want_mode = match e.path.as_str() {
            "tmp/" => 0o1777,
            "etc/group" | "etc/passwd" => 0o644,
            _ => 0o755,
        };
        assert_eq!(e.mode, want_mode, "{}", e.path);
        let want_kind = if e.path.ends_with('/') {
            ::tar::EntryType::Directory
        } else {
            ::tar::EntryType::Regular
        };
        assert_eq!(e.kind, want_kind, "{}", e.path);
    }
    let by_path: BTreeMap<&str, &TarEntry> = entries.iter().map(|e| (e.path.as_str(), e)).collect();
    assert_eq!(by_path["etc/passwd"].data, rootfs::PASSWD.as_bytes());
    assert_eq!(
        by_path["usr/local/bin/ferrolb-controller"].data,
        b"\x7fELF controller"
    );
}

#[test]
fn the_outer_archive_is_sorted_with_fixed_times_too() {
    let archive = build(b"c");
    let entries = read_tar(&archive.bytes);
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(&paths[..2], ["blobs/", "blobs/sha256/"]);
    assert_eq!(
        &paths[paths.len() - 3..],
        ["index.json", "manifest.json", "oci-layout"]
    );
    assert_eq!(paths.len(), 2 + 3 + 3);
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    for e in &entries {
        assert_eq!((e.mtime, e.uid, e.gid), (EPOCH, 0, 0), "{}", e.path);
    }
    let layout = json(&blobs(&archive)["oci-layout"]);
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
}

#[test]
fn the_config_runs_as_nobody_with_path_and_oci_labels() {
    let (_, config, _) = parts(&build(b"c"));
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["created"], "2026-01-01T00:00:00Z");
    assert_eq!(config["history"][0]["created"], "2026-01-01T00:00:00Z");
    let run = &config["config"];
    assert_eq!(run["User"], "65534:65534");
    assert_eq!(run["Env"], serde_json::json!(["PATH=/usr/local/bin"]));
    let labels = &run["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/ferrolb/ferrolb"
    );
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        provenance().revision.as_str()
    );
    assert_eq!(labels["org.opencontainers.image.version"], "0.1.0");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(labels["org.opencontainers.image.title"], "ferrolb");
    assert!(
        labels["org.opencontainers.image.description"]
            .as_str()
            .unwrap()
            .contains("LoadBalancer")
    );
}

#[test]
fn echo_and_pause_start_their_binary_by_absolute_path() {
    let echo = image_config(ImageKind::Echo, "arm64", "0.1.0", &provenance());
    assert_eq!(echo.entrypoint, ["/usr/local/bin/ferrolb-echo"]);
    assert_eq!(echo.exposed_ports, ["8080/tcp"]);
    let pause = image_config(ImageKind::Pause, "arm64", "0.1.0", &provenance());
    assert_eq!(pause.entrypoint, ["/usr/local/bin/ferrolb-pause"]);
    assert_eq!(pause.user, USER);
    assert_eq!(
        pause.labels["org.opencontainers.image.title"],
        "ferrolb-pause"
    );
}

#[test]
fn docker_manifest_and_index_name_the_same_blobs_and_reference() {
    let archive = build(b"c");
    let files = blobs(&archive);
    let (manifest, _, _) = parts(&archive);
    let index = json(&files["index.json"]);
    assert_eq!(index["mediaType"], oci::MEDIA_TYPE_INDEX);
    let annotations = &index["manifests"][0]["annotations"];
    assert_eq!(
        annotations[oci::ANNOTATION_CONTAINERD_NAME],
        "ghcr.io/ferrolb/ferrolb:0.1.0"
    );
    assert_eq!(annotations[oci::ANNOTATION_REF_NAME], "0.1.0");
    assert_eq!(
        index["manifests"][0]["platform"],
        serde_json::json!({"architecture": "amd64", "os": "linux"})
    );

    let docker = json(&files["manifest.json"]);
    let docker = docker.as_array().unwrap();
    assert_eq!(docker.len(), 1);
    assert_eq!(
        docker[0]["RepoTags"],
        serde_json::json!(["ghcr.io/ferrolb/ferrolb:0.1.0"])
    );
    assert_eq!(
        docker[0]["Config"],
        oci::blob_path(manifest["config"]["digest"].as_str().unwrap()).as_str()
    );
    assert_eq!(
        docker[0]["Layers"],
        serde_json::json!([oci::blob_path(
            manifest["layers"][0]["digest"].as_str().unwrap()
        )])
    );
}

#[test]
fn gzip_carries_no_time_or_name() {
    let gz = oci::gzip(b"hello");
    assert_eq!(&gz[..3], [0x1f, 0x8b, 8]);
    assert_eq!(gz[3], 0, "no FNAME/FCOMMENT/FEXTRA flags");
    assert_eq!(&gz[4..8], [0, 0, 0, 0], "mtime 0");
    assert_eq!(gz[9], 255, "OS unknown");
    assert_eq!(gunzip(&gz), b"hello");
}

#[test]
fn bad_tar_paths_are_rejected() {
    let tar = |entries: &[Entry]| oci::tar(entries, 0).unwrap_err().to_string();
    assert!(tar(&[Entry::file("/etc/passwd", 0o644, "x")]).contains("relative"));
    assert!(tar(&[Entry::file("etc/../x", 0o644, "x")]).contains(".."));
    assert!(tar(&[Entry::file("a", 0o644, "x"), Entry::file("a", 0o644, "y")]).contains("twice"));
    assert!(
        tar(&[Entry::file("a", 0o644, "x"), Entry::file("a/b", 0o644, "y")]).contains("is a file")
    );
}

#[test]
fn explicit_directories_keep_their_mode_and_implied_ones_get_0755() {
    let bytes = oci::tar(
        &[Entry::dir("tmp/", 0o1777), Entry::file("a/b/c", 0o644, "x")],
        7,
    )
    .unwrap();
    let modes: Vec<(String, u32)> = read_tar(&bytes)
        .into_iter()
        .map(|e| (e.path, e.mode))
        .collect();
    assert_eq!(
        modes,
        [
            ("a/".to_string(), 0o755),
            ("a/b/".to_string(), 0o755),
            ("a/b/c".to_string(), 0o644),
            ("tmp/".to_string(), 0o1777),
        ]
    );
}

#[test]
fn rfc3339_of_known_instants() {
    assert_eq!(oci::rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(oci::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(oci::rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
    assert_eq!(oci::rfc3339(EPOCH - 1), "2025-12-31T23:59:59Z");
}

#[test]
fn the_ferrolb_reference_is_what_the_chart_runs_by_default() {
    let version = app_version().unwrap();
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(bins::workspace_root().join("charts/ferrolb/values.yaml"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(values["image"]["repository"], FERROLB_REPOSITORY);
    // An empty tag means the chart's appVersion.
    assert_eq!(values["image"]["tag"], "");
    assert_eq!(
        ImageKind::Ferrolb.reference().unwrap(),
        format!("{FERROLB_REPOSITORY}:{version}")
    );
    assert_eq!(
        app_version_of("name: x\nappVersion: \"1.2.3\"\n").unwrap(),
        "1.2.3"
    );
    assert!(app_version_of("name: x\n").is_err());
}

#[test]
fn kinds_parse_from_their_names_and_archives_are_named_after_them() {
    for kind in ImageKind::ALL {
        assert_eq!(kind.name().parse::<ImageKind>().unwrap(), kind);
        assert_eq!(
            archive_path(kind).file_name().unwrap().to_str().unwrap(),
            format!("{}.tar", kind.name())
        );
    }
    assert!("busybox".parse::<ImageKind>().is_err());
    assert_eq!(oci_architecture("x86_64").unwrap(), "amd64");
    assert_eq!(oci_architecture("aarch64").unwrap(), "arm64");
}

#[test]
fn the_controller_and_speaker_build_apart_from_the_test_binaries() {
    assert_eq!(
        cargo_builds(&ImageKind::ALL),
        [
            vec![
                ("ferrolb-controller", "ferrolb-controller"),
                ("ferrolb-speaker", "ferrolb-speaker"),
                ("kubectl-ferrolb", "kubectl-ferrolb"),
            ],
            vec![
                ("ferrolb-tests", "ferrolb-echo"),
                ("ferrolb-tests", "ferrolb-pause"),
            ],
        ]
    );
    assert_eq!(
        cargo_builds(&[ImageKind::Pause, ImageKind::Pause]),
        [vec![("ferrolb-tests", "ferrolb-pause")]]
    );
    assert!(cargo_builds(&[]).is_empty());
}
