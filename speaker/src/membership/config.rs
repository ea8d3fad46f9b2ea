//! Membership settings and the shared key: what a speaker starts its membership with, checked
//! before anything binds.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::fence::Fence;
use super::packet;
use super::transport::SimNetwork;

/// Shortest accepted key, in bytes.
pub const MIN_KEY_LEN: usize = 16;
/// Reads a membership key file: its bytes without the trailing newline `echo` adds, refused
/// when shorter than [`MIN_KEY_LEN`].
pub fn read_key_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut key = std::fs::read(path)?;
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.len() < MIN_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the key has {} bytes, at least {MIN_KEY_LEN} are needed",
                key.len()
            ),
        ));
    }
    Ok(key)
}

/// Membership settings.
#[derive(Clone)]
pub struct Config {
    /// This speaker's node name (1 to 253 bytes).
    pub node: String,
    /// Local UDP address to bind (port 0 picks one; see [`Membership::local_addr`]).
    pub bind: SocketAddr,
    /// Shared HMAC-SHA256 key, at least [`MIN_KEY_LEN`] bytes.
    pub key: Vec<u8>,
    /// Alive period. Default 50 ms.
    pub interval: Duration,
    /// Silence after which a peer is dead; must exceed `interval`. Default 250 ms.
    pub dead_after: Duration,
    /// Silence of the whole mesh after which Node readiness decides; also the start-up grace.
    /// At least `dead_after`. Default 3 s.
    pub fallback_after: Duration,
    /// Largest accepted difference between a sender's and this node's wall clock. Default 10 s.
    pub max_clock_skew: Duration,
    /// After a new key is offered ([`Membership::rotate_key`]): how long both keys are accepted
    /// before this speaker signs with the new one, and again before the old one is retired.
    /// Longer than the spread of the moments the speakers read the new key. Default 2 min.
    pub key_rotation_window: Duration,
    /// A file to read the key from again every [`KEY_FILE_POLL`], rotating to a new key when it
    /// changes (`None`: only [`Membership::rotate_key`] changes it).
    pub key_file: Option<PathBuf>,
    /// Closed while peers may have declared this speaker dead (see `fence.rs`); the announcer
    /// checks it before every frame.
    pub fence: Fence,
    /// Run on this simulated network instead of UDP and TCP lifelines (`None`, the default:
    /// the real network). For scale tests under tokio's paused clock; port 0 in `bind` takes
    /// a free one.
    pub simulated: Option<SimNetwork>,
}

impl Config {
    /// Settings with the default timings.
    pub fn new(node: impl Into<String>, bind: SocketAddr, key: impl Into<Vec<u8>>) -> Config {
        Config {
            node: node.into(),
            bind,
            key: key.into(),
            interval: Duration::from_millis(50),
            dead_after: Duration::from_millis(250),
            fallback_after: Duration::from_secs(3),
            max_clock_skew: Duration::from_secs(10),
            key_rotation_window: Duration::from_secs(120),
            key_file: None,
            fence: Fence::new(Instant::now()),
            simulated: None,
        }
    }

    /// Checks the settings; the error names the setting and what to do.
    pub(super) fn validate(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if self.key.len() < MIN_KEY_LEN {
            return invalid(format!(
                "membership key is {} bytes long; it must be at least {MIN_KEY_LEN} bytes \
                 (e.g. 32 random bytes in the speaker's Secret)",
                self.key.len()
            ));
        }
        if !packet::valid_name(&self.node) {
            return invalid(format!(
                "membership node name {:?} must be 1 to {} bytes long",
                self.node,
                packet::MAX_NAME_LEN
            ));
        }
        if self.interval.is_zero() {
            return invalid("membership interval must be greater than zero".to_string());
        }
        if self.dead_after <= self.interval {
            return invalid(format!(
                "membership dead_after ({:?}) must be longer than interval ({:?}), \
                 or live peers are declared dead between two heartbeats",
                self.dead_after, self.interval
            ));
        }
        if self.fallback_after < self.dead_after {
            return invalid(format!(
                "membership fallback_after ({:?}) must be at least dead_after ({:?})",
                self.fallback_after, self.dead_after
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("node", &self.node)
            .field("bind", &self.bind)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("interval", &self.interval)
            .field("dead_after", &self.dead_after)
            .field("fallback_after", &self.fallback_after)
            .field("max_clock_skew", &self.max_clock_skew)
            .finish()
    }
}
