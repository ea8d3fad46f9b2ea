//! The controller process of a repetition: the release binary started for a phase (under a
//! profiler if asked), its `/readyz` and `/metrics` read with the testbed's HTTP client, and a
//! sampler of its VmRSS.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrolb_tests::http_client::{Get, get};
use ferrolb_tests::process::{Supervised, tail};
use tokio::task::block_in_place;

use super::super::procfs::{self, round3};
use super::super::report::{ControllerMetrics, Params};

/// Samples a process's VmRSS every 250 ms from a background task.
pub(super) struct RssSampler {
    task: tokio::task::JoinHandle<()>,
    samples: std::sync::Arc<std::sync::Mutex<Vec<[f64; 2]>>>,
}

impl RssSampler {
    /// Starts sampling `pid`; times are seconds since `start`.
    pub(super) fn start(pid: u32, start: Instant) -> RssSampler {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                let rss = procfs::memory(pid).vm_rss_mib;
                out.lock()
                    .expect("sampler lock")
                    .push([round3(start.elapsed().as_secs_f64()), round3(rss)]);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        RssSampler { task, samples }
    }

    /// Stops and returns `[seconds, MiB]` pairs.
    pub(super) fn stop(&self) -> Vec<[f64; 2]> {
        self.task.abort();
        std::mem::take(&mut *self.samples.lock().expect("sampler lock"))
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The VmRSS sample closest to `at` seconds.
pub(super) fn rss_near(timeline: &[[f64; 2]], at: f64) -> f64 {
    timeline
        .iter()
        .min_by(|a, b| (a[0] - at).abs().total_cmp(&(b[0] - at).abs()))
        .map_or(f64::NAN, |s| s[1])
}

/// The release controller binary, run as `ferrolb-controller run --no-leader-election` with the
/// admin kubeconfig, optionally under a wrapper (a profiler).
pub(super) struct RunningController {
    process: Supervised,
    /// The controller's own pid (not the wrapper's).
    pid: u32,
    wrapped: bool,
    addr: SocketAddr,
    log: PathBuf,
}

impl RunningController {
    /// Spawns it (waits for nothing but, under a wrapper, the controller process to appear).
    pub(super) fn start(
        bin: &Path,
        kubeconfig: &Path,
        log: &Path,
        params: &Params,
    ) -> Result<RunningController> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        // `{phase}` in the wrapper becomes `pending` or `running`, so each run has its own file.
        let phase = log
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.strip_prefix("controller-"))
            .unwrap_or("controller");
        let wrapper: Vec<String> = params
            .controller_wrapper
            .iter()
            .map(|a| a.replace("{phase}", phase))
            .collect();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.args(["run", "--no-leader-election"])
            .arg(format!("--metrics-addr={addr}"))
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .envs(params.controller_env.iter().map(|(k, v)| (k, v)));
        let process = Supervised::spawn("ferrolb-controller", cmd, log)?;
        let pid = if wrapper.is_empty() {
            process.pid()
        } else {
            let root = process.pid();
            block_in_place(|| {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    if let Some(pid) = procfs::descendant_running(root, bin) {
                        return Ok(pid);
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "no {} process appeared under the wrapper {wrapper:?}",
                            bin.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })?
        };
        Ok(RunningController {
            process,
            pid,
            wrapped: !wrapper.is_empty(),
            addr,
            log: log.to_path_buf(),
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// Stops it: SIGKILL, or under a wrapper SIGTERM to the controller so that the wrapper can
    /// write its data and exit (up to 3 minutes).
    pub(super) fn kill(&mut self) {
        if self.wrapped && self.pid != 0 {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(180);
            let log = self.log.clone();
            block_in_place(|| {
                while Instant::now() < deadline && self.process.check_running(&log).is_ok() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            self.pid = 0;
        }
        self.process.kill();
    }

    /// The end of its log, to explain a failure.
    pub(super) fn context(&self) -> String {
        format!(
            "controller log {}:\n{}",
            self.log.display(),
            tail(&self.log, 30)
        )
    }

    /// Polls `/readyz` every 20 ms on a blocking thread; yields when it first answered 200
    /// (`None` at `deadline`).
    pub(super) fn ready_poller(
        &self,
        deadline: Instant,
    ) -> tokio::task::JoinHandle<Option<Instant>> {
        let addr = self.addr;
        tokio::task::spawn_blocking(move || {
            while Instant::now() < deadline {
                if get(addr, "/readyz").is_ok_and(|(code, _)| code == 200) {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        })
    }

    fn metrics_text(&self) -> Result<String> {
        let addr = self.addr;
        block_in_place(|| Get::new(addr, "/metrics").send()?.ok_body())
            .context("the controller's /metrics")
    }

    /// The controller's metrics now; the text is kept in `file`.
    pub(super) fn metrics_snapshot(&self, file: &Path) -> Result<ControllerMetrics> {
        let text = self.metrics_text()?;
        std::fs::write(file, &text)?;
        Ok(ControllerMetrics::parse(&text))
    }

    /// Waits until the controller's write counters (Services, pools, Events) have not moved for
    /// 3 s (at most 3 minutes); returns when they last moved.
    pub(super) async fn settle(&self) -> Result<Instant> {
        let give_up = Instant::now() + Duration::from_secs(180);
        let mut last: Option<f64> = None;
        let mut moved = Instant::now();
        loop {
            let total = ControllerMetrics::parse(&self.metrics_text()?).all_writes();
            if last != Some(total) {
                last = Some(total);
                moved = Instant::now();
            } else if moved.elapsed() >= Duration::from_secs(3) || Instant::now() > give_up {
                return Ok(moved);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
