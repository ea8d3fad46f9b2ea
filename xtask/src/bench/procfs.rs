//! What the benchmark reads from `/proc`: the machine and how busy it is, processes' CPU time
//! (per thread too) and memory.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The machine the figures were measured on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    /// `nproc`.
    pub nproc: usize,
    /// `model name` of the first CPU in /proc/cpuinfo.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
    /// MemTotal, MiB.
    pub memory_mib: u64,
    /// /proc/loadavg when the run started (the machine may be shared with builds).
    pub loadavg_at_start: String,
}

/// Describes this machine.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: field(&cpuinfo, "model name"),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        memory_mib: kib(&field(&meminfo, "MemTotal")) / 1024,
        loadavg_at_start: loadavg(),
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn kib(value: &str) -> u64 {
    value
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of a process.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Memory {
    /// VmRSS: resident now, MiB.
    pub vm_rss_mib: f64,
    /// VmHWM: the resident peak so far, MiB.
    pub vm_hwm_mib: f64,
    /// RssAnon: the heap and stacks part of VmRSS, MiB.
    pub rss_anon_mib: f64,
    /// RssFile: the mapped-binary part of VmRSS, MiB.
    pub rss_file_mib: f64,
}

/// VmRSS and VmHWM of `pid` (zeros when it is gone).
pub fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or(0.0, |v| kib(v) as f64 / 1024.0)
    };
    Memory {
        vm_rss_mib: get("VmRSS:"),
        vm_hwm_mib: get("VmHWM:"),
        rss_anon_mib: get("RssAnon:"),
        rss_file_mib: get("RssFile:"),
    }
}

/// User + system CPU seconds `pid` has used (`self` for this process); 0 when it is gone.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; fields after its closing parenthesis are plain.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    match (ticks(14), ticks(15)) {
        (Some(u), Some(s)) => (u + s) as f64 / clock_ticks(),
        _ => 0.0,
    }
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A process running `exe` that descends from `root` (a wrapper such as a profiler).
pub fn descendant_running(root: u32, exe: &std::path::Path) -> Option<u32> {
    let exe = std::fs::canonicalize(exe).ok()?;
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        rest.split_whitespace().nth(1)?.parse().ok()
    };
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe))
        .find(|pid| {
            let mut p = *pid;
            for _ in 0..16 {
                if p == root {
                    return true;
                }
                match parent(p) {
                    Some(next) if next > 0 => p = next,
                    _ => return false,
                }
            }
            false
        })
}

/// Busy (non-idle) CPU seconds of the whole machine, summed over CPUs, from /proc/stat.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy as f64 / clock_ticks()
}

/// Waits (at most `max`) until the machine has been under 25 % busy for 2 s in a row, so that a
/// timed phase does not start in the aftermath of the previous one or of another session's
/// build; whether it got quiet.
pub async fn quiesce(max: Duration) -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let give_up = Instant::now() + max;
    let mut quiet = 0;
    while quiet < 2 && Instant::now() < give_up {
        let before = machine_busy_seconds();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = (machine_busy_seconds() - before) / cores;
        quiet = if busy < 0.25 { quiet + 1 } else { 0 };
    }
    quiet >= 2
}

/// CPU seconds per thread name and context switches of every thread of a process.
#[derive(Debug, Default)]
pub struct Threads {
    /// CPU seconds (user + system) per thread name, threads of one name summed.
    pub cpu_s: BTreeMap<String, f64>,
    /// Voluntary and involuntary context switches of all threads.
    pub switches: u64,
}

/// Reads every thread of `pid` (empty when the process is gone).
pub fn threads(pid: u32) -> Threads {
    let mut t = Threads::default();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return t;
    };
    for task in tasks.filter_map(|e| e.ok()) {
        let tid = task.file_name().to_string_lossy().to_string();
        let dir = format!("/proc/{pid}/task/{tid}");
        let name = std::fs::read_to_string(format!("{dir}/comm"))
            .map(|n| n.trim().to_string())
            .unwrap_or_default();
        *t.cpu_s.entry(name).or_default() += cpu_seconds(&format!("{pid}/task/{tid}"));
        let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
        t.switches += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    t
}

/// `PSS` from /proc/<pid>/smaps_rollup, MiB (0 when unreadable).
pub fn pss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| round3(kib / 1024.0))
}

/// CPU seconds of named processes, taken at one moment.
#[derive(Clone, Debug)]
pub struct CpuSnapshot {
    at: Instant,
    seconds: BTreeMap<&'static str, f64>,
}

impl CpuSnapshot {
    /// Reads `processes` (name, pid; pid 0 is skipped) and this process (`harness`).
    pub fn take(processes: &[(&'static str, u32)]) -> CpuSnapshot {
        let mut seconds = BTreeMap::new();
        for (name, pid) in processes {
            if *pid != 0 {
                seconds.insert(*name, cpu_seconds(&pid.to_string()));
            }
        }
        seconds.insert("harness", cpu_seconds("self"));
        seconds.insert("machine", machine_busy_seconds());
        CpuSnapshot {
            at: Instant::now(),
            seconds,
        }
    }

    /// CPU seconds used since `earlier`, per process, the wall time between (`wall`), and what
    /// every other process on the machine used (`others`: other sessions' builds and tests).
    /// A process that started after `earlier` counts from zero.
    pub fn since(&self, earlier: &CpuSnapshot) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = self
            .seconds
            .iter()
            .map(|(name, s)| {
                let before = earlier.seconds.get(name).copied().unwrap_or(0.0);
                (name.to_string(), round3(s - before))
            })
            .collect();
        let machine = out.remove("machine").unwrap_or(0.0);
        let ours: f64 = out.values().sum();
        out.insert("others".into(), round3((machine - ours).max(0.0)));
        out.insert(
            "wall".into(),
            round3(self.at.duration_since(earlier.at).as_secs_f64()),
        );
        out
    }
}

/// Rounds to milliseconds (for the report).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_and_memory_are_readable() {
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(0);
        }
        assert!(cpu_seconds("self") > 0.0);
        let m = memory(std::process::id());
        assert!(m.vm_rss_mib > 0.0 && m.vm_hwm_mib >= m.vm_rss_mib);
        assert!(machine().nproc > 0);
    }
}
