//! The real `ferrolb-speaker` binary as a test process, one per lab node namespace, as the
//! DaemonSet runs it on a node's host network:
//!
//! ```text
//!  ip netns exec nodeN [setpriv: uid/gid 65534, CAP_NET_RAW only, no_new_privs]
//!     ferrolb-speaker run --node-name nodeN --memberlist-key-file K --metrics-addr <nodeN ipv4>:7473
//!     KUBECONFIG=... (normally the chart's speaker ServiceAccount, see
//!     crate::rbac::speaker_kubeconfig)
//!  host ──lab0──> http://198.51.100.1X:7473/{healthz,readyz,metrics}
//! ```
//!
//! The binary is `ferrolb-speaker` in the running executable's target directory (see
//! [`bins::cargo_binary`]), or `$FERROLB_SPEAKER_BIN`.

use std::net::{IpAddr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::bins;
use crate::daemon::Daemon;
use crate::lab::Host;

/// Port of the speaker's `/healthz`, `/readyz` and `/metrics` (the chart's `speaker.port`).
pub const METRICS_PORT: u16 = 7473;
/// uid and gid of an unprivileged speaker (`nobody`).
pub const UNPRIVILEGED_ID: u32 = 65534;
/// How long [`Speaker::start`] waits for `/healthz`.
const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(20);

/// Path of the speaker binary.
pub fn binary() -> Result<PathBuf> {
    bins::cargo_binary(
        "ferrolb-speaker",
        "FERROLB_SPEAKER_BIN",
        "cargo build -p ferrolb-speaker",
    )
}

/// How to run one speaker.
#[derive(Clone, Debug)]
pub struct SpeakerOptions<'a> {
    /// The node namespace it runs in; also `--node-name` and the metrics address.
    pub host: &'a Host,
    /// Kubeconfig it uses (`KUBECONFIG`).
    pub kubeconfig: &'a Path,
    /// The memberlist key (`--memberlist-key-file`), see [`write_key_file`].
    pub key_file: &'a Path,
    /// Log file (stdout and stderr, appended).
    pub log: PathBuf,
    /// Further arguments after `run`'s own.
    pub extra_args: Vec<String>,
    /// Run as uid/gid 65534 with `CAP_NET_RAW` as its only capability (permitted, effective,
    /// inheritable, ambient and bounding) and `no_new_privs`, which is what the chart grants
    /// (and less: not even root's file access). The kubeconfig and key are copied, owned by
    /// 65534, next to the log, so the log's directory must be reachable by that user.
    pub unprivileged: bool,
    /// Run in a session of its own that may outlive this process ([`Speaker::release`]); for
    /// `cargo xtask cluster up`.
    pub detached: bool,
}

impl<'a> SpeakerOptions<'a> {
    /// A privileged, attached speaker on `host` with no extra arguments.
    pub fn new(host: &'a Host, kubeconfig: &'a Path, key_file: &'a Path, log: PathBuf) -> Self {
        SpeakerOptions {
            host,
            kubeconfig,
            key_file,
            log,
            extra_args: Vec::new(),
            unprivileged: false,
            detached: false,
        }
    }
}

/// A running speaker; dropping it kills it.
#[derive(Debug)]
pub struct Speaker {
    daemon: Daemon,
    node: String,
    /// The copies an unprivileged speaker reads; removed after the process is gone.
    credentials: Option<TempDir>,
}

impl Speaker {
    /// Starts a speaker in its node namespace and waits until `/healthz` answers (not until it
    /// is ready; see [`Speaker::wait_ready`]).
    pub fn start(opts: &SpeakerOptions) -> Result<Speaker> {
        let bin = binary()?;
        let host = opts.host;
        let addr = SocketAddr::new(IpAddr::V4(host.ipv4), METRICS_PORT);
        let log_dir = opts
            .log
            .parent()
            .context("the speaker log path has no directory")?;
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;

        let (credentials, kubeconfig, key_file) = if opts.unprivileged {
            let (dir, kubeconfig, key_file) =
                credentials_for_nobody(opts.kubeconfig, opts.key_file, log_dir, &opts.host.name)?;
            (Some(dir), kubeconfig, key_file)
        } else {
            (
                None,
                opts.kubeconfig.to_path_buf(),
                opts.key_file.to_path_buf(),
            )
        };

        let mut cmd = if opts.unprivileged {
            setpriv_command(host, "-all,+net_raw", "-all,+net_raw", &bin)
        } else {
            host.command(bin.to_str().context("speaker path is not UTF-8")?)
        };
        cmd.args(["run", "--node-name", &host.name])
            .arg("--memberlist-key-file")
            .arg(&key_file)
            .arg(format!("--metrics-addr={addr}"))
            .args(&opts.extra_args)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info,ferrolb_speaker=debug");
        let name = format!("ferrolb-speaker in {}", host.name);
        let mut daemon = Daemon::spawn(&name, cmd, &opts.log, addr, opts.detached)?;
        daemon.wait_for_200("/healthz", HEALTHZ_TIMEOUT)?;
        Ok(Speaker {
            daemon,
            node: host.name.clone(),
            credentials,
        })
    }

    /// The node (namespace) it runs in.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Leaves the process (and an unprivileged speaker's credential copies) in place past drop;
    /// returns the pid.
    pub fn release(mut self) -> u32 {
        if let Some(dir) = self.credentials.take() {
            let _ = dir.keep();
        }
        self.daemon.release()
    }
}

/// The process's own calls are [`Daemon`]'s: `pid` (the speaker itself: `ip netns exec` and
/// `setpriv` exec into it), `addr` (the node's IPv4 address, port [`METRICS_PORT`], reachable
/// from the host over the bridge), `log_tail`, `metric`, `wait_ready` (failing early, with the
/// log's tail, if the speaker exits), `kill` (a crash: no goodbye to its peers), `terminate`, ...
impl Deref for Speaker {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl DerefMut for Speaker {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

/// `setpriv` in `host`'s namespace, about to exec `program` as uid/gid [`UNPRIVILEGED_ID`] with no
/// supplementary groups, `no_new_privs`, `caps` as its inheritable and ambient capabilities and
/// `bounding` as its bounding set (setpriv syntax: `-all,+net_raw`). Add `program`'s arguments.
pub fn setpriv_command(host: &Host, caps: &str, bounding: &str, program: &Path) -> Command {
    let id = UNPRIVILEGED_ID.to_string();
    let mut cmd = host.command("setpriv");
    cmd.args([
        "--reuid",
        &id,
        "--regid",
        &id,
        "--clear-groups",
        &format!("--inh-caps={caps}"),
        &format!("--ambient-caps={caps}"),
        &format!("--bounding-set={bounding}"),
        "--no-new-privs",
        // Changing uid clears the parent-death signal; keep it, so an attached speaker still
        // dies with the test process.
        "--pdeathsig=keep",
        "--",
    ])
    .arg(program);
    cmd
}

/// Copies `kubeconfig` and `key_file` into a new directory `<prefix>-credentials-*` in `parent`,
/// all owned by [`UNPRIVILEGED_ID`] and private to it (0700 / 0600): an unprivileged speaker can
/// read them, other users cannot. Returns the directory (removed on drop) and the two copies.
pub fn credentials_for_nobody(
    kubeconfig: &Path,
    key_file: &Path,
    parent: &Path,
    prefix: &str,
) -> Result<(TempDir, PathBuf, PathBuf)> {
    use std::os::unix::fs::{PermissionsExt, chown};
    for dir in parent.ancestors() {
        let mode = std::fs::metadata(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            bail!(
                "an unprivileged speaker (uid {UNPRIVILEGED_ID}) cannot reach {}: {} is mode {:o}; \
                 put the speaker's log in a directory others may traverse",
                parent.display(),
                dir.display(),
                mode & 0o7777
            );
        }
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}-credentials-"))
        .tempdir_in(parent)
        .with_context(|| format!("creating a credentials directory in {}", parent.display()))?;
    let id = Some(UNPRIVILEGED_ID);
    chown(dir.path(), id, id)?;
    let copy = |from: &Path, name: &str| -> Result<PathBuf> {
        let to = dir.path().join(name);
        std::fs::copy(from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))?;
        chown(&to, id, id)?;
        Ok(to)
    };
    let kubeconfig = copy(kubeconfig, "kubeconfig")?;
    let key_file = copy(key_file, "memberlist.key")?;
    Ok((dir, kubeconfig, key_file))
}

/// Writes a fresh memberlist key to `path`: 32 random letters and digits (the speaker wants at
/// least 16 bytes; the chart generates the same shape with `randAlphaNum 32`), mode 0600.
pub fn write_key_file(path: &Path) -> Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut random = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    let mut key = Vec::with_capacity(32);
    while key.len() < 32 {
        let mut byte = [0u8; 1];
        random.read_exact(&mut byte)?;
        // 248 = 4 * 62: rejecting the rest keeps every character equally likely.
        if byte[0] < 248 {
            key.push(ALPHABET[usize::from(byte[0]) % 62]);
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(&key))
        .with_context(|| format!("writing the memberlist key {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_hold_32_fresh_alphanumerics_for_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_key_file(&a).unwrap();
        write_key_file(&b).unwrap();
        let key = std::fs::read(&a).unwrap();
        assert_eq!(key.len(), 32);
        assert!(key.iter().all(u8::is_ascii_alphanumeric), "{key:?}");
        assert_ne!(key, std::fs::read(&b).unwrap());
        let mode = std::fs::metadata(&a).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
