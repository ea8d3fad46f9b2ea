//! Child processes that never outlive the test process.
//!
//! Every child gets `PR_SET_PDEATHSIG(SIGKILL)`. The kernel sends that signal when the *thread*
//! that forked the child exits, so all children are forked from one long-lived spawner thread:
//! a control plane started inside one test keeps running while later tests share it, and dies
//! with the test process however that process ends (panic, abort, SIGKILL).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("ferrolb-testbed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_parent_death_signal(&mut cmd));
                }
            })
            .expect("spawner thread starts");
        Mutex::new(tx)
    })
}

#[allow(unsafe_code)]
fn spawn_with_parent_death_signal(cmd: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and calls only prctl(2), which is
    // async-signal-safe, and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// A running child process, killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Option<Child>,
}

impl Supervised {
    /// Starts `cmd` with stdout and stderr appended to `log`; it dies with the test process.
    pub fn spawn(name: &str, cmd: Command, log: &Path) -> Result<Supervised> {
        Self::start(name, cmd, log, false)
    }

    /// Starts `cmd` in a session of its own that outlives this process (for `cargo xtask cluster
    /// up`); call [`Supervised::release`] to keep it running past drop.
    pub fn spawn_detached(name: &str, mut cmd: Command, log: &Path) -> Result<Supervised> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        Self::start(name, cmd, log, true)
    }

    /// Forgets the process: it keeps running and is no longer killed on drop.
    pub fn release(mut self) -> u32 {
        let pid = self.pid();
        self.child = None;
        pid
    }

    fn start(name: &str, mut cmd: Command, log: &Path, detached: bool) -> Result<Supervised> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = if detached {
            cmd.spawn().with_context(|| format!("starting {name}"))?
        } else {
            let (tx, rx) = mpsc::channel();
            spawner()
                .lock()
                .unwrap()
                .send((cmd, tx))
                .context("spawner thread is gone")?;
            rx.recv()
                .context("spawner thread is gone")?
                .with_context(|| format!("starting {name}"))?
        };
        Ok(Supervised {
            name: name.to_string(),
            child: Some(child),
        })
    }

    /// A handle with no process (what a released handle leaves behind).
    pub fn none(name: &str) -> Supervised {
        Supervised {
            name: name.to_string(),
            child: None,
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails if the process has exited (with its status), so a readiness wait can stop early.
    pub fn check_running(&mut self, log: &Path) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!(
                "{} exited early ({status}); last lines of {}:\n{}",
                self.name,
                log.display(),
                tail(log, 30)
            );
        }
        Ok(())
    }

    /// Kills the process and waits for it to be reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` to completion; fails with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    stdout_of(cmd, &out)
}

/// `out`'s stdout, or an error naming `cmd` with its stderr (and stdout) when it exited non-zero.
fn stdout_of(cmd: &Command, out: &Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with `input` on its stdin to completion; stdout, or an error with its stderr.
pub fn run_input(cmd: &mut Command, input: &str) -> Result<String> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let mut stdin = child.stdin.take().context("no stdin pipe")?;
    // Write from a thread: a child that answers before reading everything must not deadlock us.
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("stdin writer panicked"))?;
    let stdout = stdout_of(cmd, &out)?;
    written.with_context(|| format!("writing the input of {cmd:?}"))?;
    Ok(stdout)
}

/// Polls `check` every 50 ms until it returns `Ok(Some(_))` or `timeout` passes. `Ok(None)` means
/// "not yet"; an error (say, the awaited process died) ends the wait at once.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().with_context(|| format!("waiting for {what}"))? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
