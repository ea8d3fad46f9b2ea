//! The image archives of `cargo xtask image` (`ferrolb_tests::image`) as other tools and the
//! kernel see them:
//!
//! - `skopeo` (installed by `cargo xtask test`) reads every archive both as `oci-archive:` and
//!   as `docker-archive:`, finds it by its tag / full reference, and reports the manifest digest,
//!   User 65534:65534 and the OCI labels; `skopeo copy` checks every blob against its digest.
//! - Two consecutive builds give byte-identical archives.
//! - Each image's own files run its binaries as uid 65534 (chroot into the unpacked layer), and
//!   echo and pause, as the init of a fresh PID namespace like in a container, stop on SIGTERM
//!   at once. Needs root, like the lab tests.
//!
//! The first run builds the release binaries (several minutes on 2 cores).

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferrolb_tests::http_client::{self, Get};
use ferrolb_tests::image::{self, BuildOptions, BuiltImage, ImageKind, Provenance};
use serde_json::Value;
use tempfile::TempDir;

/// One build for all tests, into a temporary directory (target/images is left alone).
struct Built {
    _dir: TempDir,
    provenance: Provenance,
    images: Vec<BuiltImage>,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = TempDir::new().unwrap();
        let provenance = Provenance::of_checkout().unwrap();
        let images = image::build_all(&BuildOptions {
            out_dir: dir.path().to_path_buf(),
            provenance: Some(provenance.clone()),
            ..BuildOptions::default()
        })
        .unwrap();
        Built {
            _dir: dir,
            provenance,
            images,
        }
    })
}

fn image_of(kind: ImageKind) -> &'static BuiltImage {
    built().images.iter().find(|i| i.kind == kind).unwrap()
}

fn skopeo(args: &[&str]) -> Value {
    let output = Command::new("skopeo")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run skopeo ({e}); `cargo xtask test` installs it (apt-get install skopeo)"
            )
        });
    assert!(
        output.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

#[test]
fn skopeo_reads_each_archive_as_oci_and_docker_archive_by_its_reference() {
    let built = built();
    let version = image::app_version().unwrap();
    for image in &built.images {
        assert_eq!(image.name, format!("{}:{version}", image.kind.repository()));
        assert_eq!(
            image.archive.file_name().unwrap(),
            format!("{}.tar", image.kind).as_str()
        );
        assert!(
            image.compressed_size <= image::MAX_COMPRESSED_SIZE,
            "{image:?}"
        );
        let path = image.archive.display();
        let oci = format!("oci-archive:{path}:{version}");
        let docker = format!("docker-archive:{path}:{}", image.name);
        for source in [&oci, &docker] {
            let inspect = skopeo(&["inspect", source]);
            assert_eq!(
                inspect["Architecture"],
                image::oci_architecture(std::env::consts::ARCH).unwrap()
            );
            assert_eq!(inspect["Os"], "linux");
            let labels = &inspect["Labels"];
            assert_eq!(
                labels["org.opencontainers.image.source"], "https://github.com/ferrolb/ferrolb",
                "{source}"
            );
            assert_eq!(labels["org.opencontainers.image.version"], version.as_str());
            assert_eq!(
                labels["org.opencontainers.image.revision"],
                built.provenance.revision.as_str()
            );
            assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
            let config = skopeo(&["inspect", "--config", source]);
            assert_eq!(config["config"]["User"], "65534:65534", "{source}");
            assert_eq!(
                config["config"]["Env"],
                serde_json::json!(["PATH=/usr/local/bin"])
            );
        }
        // The OCI view is the archive's own manifest.
        assert_eq!(skopeo(&["inspect", &oci])["Digest"], image.digest.as_str());
        // A tag the archive does not hold is refused: the reference above was really checked.
        let wrong = format!(
            "docker-archive:{path}:{}:0.0.0-not",
            image.kind.repository()
        );
        let status = Command::new("skopeo")
            .args(["inspect", &wrong])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "{wrong} was accepted");
        // Copying reads every blob and checks it against its digest.
        let copy = TempDir::new().unwrap();
        let dest = format!("dir:{}", copy.path().display());
        skopeo(&["copy", "--quiet", &oci, &dest]);
    }
}

#[test]
fn two_consecutive_builds_give_byte_identical_archives() {
    let first = built();
    let dir = TempDir::new().unwrap();
    let second = image::build_all(&BuildOptions {
        out_dir: dir.path().to_path_buf(),
        provenance: Some(first.provenance.clone()),
        ..BuildOptions::default()
    })
    .unwrap();
    assert_eq!(second.len(), first.images.len());
    for (a, b) in first.images.iter().zip(&second) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.digest, b.digest, "{}", a.name);
        assert_eq!(a.compressed_size, b.compressed_size, "{}", a.name);
        let same = std::fs::read(&a.archive).unwrap() == std::fs::read(&b.archive).unwrap();
        assert!(
            same,
            "{} and {} differ",
            a.archive.display(),
            b.archive.display()
        );
    }
}

/// The image's layer unpacked into a new directory.
fn unpack(image: &BuiltImage) -> TempDir {
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&image.archive).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(path, data);
    }
    let blob =
        |digest: &str| &files[&format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))];
    let manifest: Value = serde_json::from_slice(blob(&image.digest)).unwrap();
    let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    let root = TempDir::new().unwrap();
    let mut layer = tar::Archive::new(flate2::read::GzDecoder::new(&layer[..]));
    layer.set_preserve_permissions(true);
    layer.unpack(root.path()).unwrap();
    root
}

/// Absolute path of a host tool (the commands below run with the image's PATH only).
fn host_tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .or_else(|| ferrolb_tests::bins::which(name))
        .unwrap_or_else(|| panic!("{name} is not installed (Debian: coreutils, util-linux)"))
}

/// `chroot --userspec=65534:65534 <root> <args>` with only PATH (and `env`) set.
fn as_nobody_in(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(host_tool("chroot"));
    cmd.env_clear()
        .env("PATH", "/usr/local/bin")
        .envs(env.iter().copied())
        .arg("--userspec=65534:65534")
        .arg(root)
        .args(args);
    cmd
}

#[test]
fn the_ferrolb_image_runs_its_binaries_as_nobody_from_its_own_files() {
    let root = unpack(image_of(ImageKind::Ferrolb));
    for binary in ["ferrolb-controller", "ferrolb-speaker", "kubectl-ferrolb"] {
        let output = as_nobody_in(root.path(), &[binary, "--help"], &[])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("Usage:"),
            "{binary} --help in the image: {}\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(!root.path().join("bin/sh").exists(), "a shell in the image");
}

/// A command started as the init (PID 1) of a new PID namespace through `unshare`, killed on
/// drop.
struct Init {
    unshare: Child,
}

impl Init {
    fn start(cmd: &Command) -> Init {
        let mut unshare = Command::new(host_tool("unshare"));
        unshare
            .args(["--pid", "--fork", "--kill-child"])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .env_clear()
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
        Init {
            unshare: unshare.spawn().unwrap(),
        }
    }

    /// Host PID of the namespace's init: the child of `unshare`.
    fn pid(&self) -> u32 {
        let parent = self.unshare.id();
        let started = Instant::now();
        loop {
            let child = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let status = std::fs::read_to_string(e.path().join("status")).ok()?;
                let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:"))?;
                (ppid.trim().parse::<u32>().ok()? == parent).then_some(pid)
            });
            if let Some(pid) = child {
                return pid;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "unshare forked no child"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM to the init and returns how long it took to exit, and whether it exited 0.
    fn terminate(&mut self) -> (Duration, bool) {
        let pid = self.pid().to_string();
        let sent = Instant::now();
        assert!(
            Command::new(host_tool("kill"))
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        loop {
            if let Some(status) = self.unshare.try_wait().unwrap() {
                return (sent.elapsed(), status.success());
            }
            if sent.elapsed() > Duration::from_secs(10) {
                return (sent.elapsed(), false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// `GET path` from the echo server: its body, once it answered `HTTP/1.1 200 OK`.
fn get(addr: SocketAddrV4, path: &str) -> Result<String, http_client::Error> {
    let response = Get::new(addr.into(), path)
        .host("echo")
        .timeouts(Duration::from_secs(1), Duration::from_secs(5))
        .send()?;
    assert_eq!(
        (response.version, response.status),
        (http::Version::HTTP_11, http::StatusCode::OK),
        "{response:?}"
    );
    Ok(response.body)
}

#[test]
fn echo_answers_as_nobody_from_its_image_and_stops_at_once_on_sigterm_as_pid_1() {
    let root = unpack(image_of(ImageKind::Echo));
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let listen = addr.to_string();
    let mut init = Init::start(&as_nobody_in(
        root.path(),
        &["ferrolb-echo", "--listen", &listen],
        &[("POD_NAME", "echo-0"), ("NODE_NAME", "node1")],
    ));
    let started = Instant::now();
    let body = loop {
        match get(addr, "/") {
            Ok(body) => break body,
            Err(e) if started.elapsed() > Duration::from_secs(10) => {
                panic!("echo never answered: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(body, "pod=echo-0 node=node1 client=127.0.0.1\n");
    assert_eq!(get(addr, "/healthz").unwrap(), "ok\n");
    let (took, success) = init.terminate();
    assert!(success, "echo did not exit 0 on SIGTERM ({took:?})");
    assert!(took < Duration::from_secs(3), "echo took {took:?} to stop");
}

#[test]
fn pause_waits_as_nobody_from_its_image_and_exits_0_on_sigterm_as_pid_1() {
    let root = unpack(image_of(ImageKind::Pause));
    let mut init = Init::start(&as_nobody_in(root.path(), &["ferrolb-pause"], &[]));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        init.unshare.try_wait().unwrap().is_none(),
        "pause exited by itself"
    );
    let (took, success) = init.terminate();
    assert!(success, "pause did not exit 0 on SIGTERM ({took:?})");
    assert!(took < Duration::from_secs(3), "pause took {took:?} to stop");
}
