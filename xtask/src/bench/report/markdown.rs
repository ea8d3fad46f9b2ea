//! The report as Markdown: the run's description, the headline figures, a table per
//! repetition (times, CPU per phase, memory, counters), the pure IPAM scenarios and the
//! definitions. The speaker and in-cluster sections are inserted before the definitions by
//! bench.rs.

use std::fmt::Write as _;

use super::super::figure::{self, fmt};
use super::Report;
use super::phases::cpu;

impl Report {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let p = &self.params;
        let _ = writeln!(s, "# ferrolb benchmark report\n");
        let _ = writeln!(
            s,
            "{} · {} × {} ({} MiB, kernel {}) · load at start {} · kube-apiserver {} · controller {} build of {}{} · harness {} · N = {} Services, {} pools, {} repetition(s), {} latency probes at {}/s, {} creates in flight\n",
            self.date,
            self.machine.nproc,
            self.machine.cpu_model,
            self.machine.memory_mib,
            self.machine.kernel,
            self.machine.loadavg_at_start,
            if self.apiserver_version.is_empty() {
                "-"
            } else {
                &self.apiserver_version
            },
            self.build.controller_profile,
            self.build.git_commit,
            if self.build.controller_sources_modified {
                " (with uncommitted controller changes)"
            } else {
                ""
            },
            self.build.harness_profile,
            p.services,
            p.pools,
            self.reps.len(),
            p.probes,
            p.probe_rate_per_s,
            p.in_flight,
        );
        if !p.controller_env.is_empty() {
            let env: Vec<String> = p
                .controller_env
                .iter()
                .map(|(k, v)| format!("`{k}={v}`"))
                .collect();
            let _ = writeln!(s, "Controller environment: {}\n", env.join(" "));
        }
        if !p.controller_wrapper.is_empty() {
            let _ = writeln!(
                s,
                "**The controller ran under `{}`: its timings include the wrapper's cost.**\n",
                p.controller_wrapper.join(" ")
            );
        }
        let _ = writeln!(s, "## Figures (medians)\n");
        figure::table(&mut s, &self.figures);
        if let Some(d) = &self.latency_ms {
            let _ = writeln!(
                s,
                "\nCreate-to-status latency over {} probes: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms.",
                d.count,
                fmt(d.p50),
                fmt(d.p90),
                fmt(d.p99),
                fmt(d.max)
            );
        }
        if !self.reps.is_empty() {
            let _ = writeln!(s, "\n## Per repetition (seconds unless marked)\n");
            let _ = writeln!(
                s,
                "| rep | raw writer | (a) ready | (a) first IP | (a) all IPs | (a) writes done | ratio (a) | (b) creates | (b) all IPs | ratio (b) | (b) vs loop | latency p50/p99/max ms | RSS / HWM MiB (a) | RSS / HWM MiB (b) | load |"
            );
            let _ = writeln!(
                s,
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|"
            );
            for (i, r) in self.reps.iter().enumerate() {
                let d = &r.latency.distribution_ms;
                let _ = writeln!(
                    s,
                    "| {} | {} ({} in flight) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} / {} | {} / {} | {} → {} |",
                    i + 1,
                    fmt(r.plain_loop.loop_seen_s),
                    r.plain_loop.in_flight,
                    fmt(r.pending.ready_s),
                    fmt(r.pending.first_ip_s),
                    fmt(r.pending.all_ip_s),
                    fmt(r.pending.writes_settled_s),
                    fmt(r.pending.ratio_vs_loop),
                    fmt(r.running.create_s),
                    fmt(r.running.all_ip_s),
                    fmt(r.running.ratio_vs_create),
                    fmt(r.running.ratio_vs_loop),
                    fmt(d.p50),
                    fmt(d.p99),
                    fmt(d.max),
                    fmt(r.pending.memory.vm_rss_mib),
                    fmt(r.pending.memory.vm_hwm_mib),
                    fmt(r.running.memory.vm_rss_mib),
                    fmt(r.running.memory.vm_hwm_mib),
                    r.loadavg_start,
                    r.loadavg_end,
                );
            }
            let _ = writeln!(s, "\n### Where the time goes (CPU seconds per phase)\n");
            let _ = writeln!(
                s,
                "| rep | phase | wall | controller | kube-apiserver | etcd | harness | other processes |\n|---|---|---:|---:|---:|---:|---:|---:|"
            );
            for (i, r) in self.reps.iter().enumerate() {
                for (phase, cpu_s) in [
                    ("plain loop", &r.plain_loop.cpu_s),
                    ("(a) pending burst", &r.pending.cpu_s),
                    ("(b) running burst", &r.running.cpu_s),
                ] {
                    let _ = writeln!(
                        s,
                        "| {} | {phase} | {} | {} | {} | {} | {} | {} |",
                        i + 1,
                        fmt(cpu(cpu_s, "wall")),
                        fmt(cpu(cpu_s, "controller")),
                        fmt(cpu(cpu_s, "kube-apiserver")),
                        fmt(cpu(cpu_s, "etcd")),
                        fmt(cpu(cpu_s, "harness")),
                        fmt(cpu(cpu_s, "others")),
                    );
                }
            }
            let _ = writeln!(s, "\n### Controller memory (MiB)\n");
            let _ = writeln!(
                s,
                "| rep | (a) at ready | (a) at last IP | (a) settled VmRSS | (a) VmHWM | (a) RssAnon | (a) RssFile | (b) settled VmRSS | (b) VmHWM | (b) RssAnon |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for (i, r) in self.reps.iter().enumerate() {
                let (a, b) = (&r.pending.memory, &r.running.memory);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    i + 1,
                    fmt(r.pending.rss_at_ready_mib),
                    fmt(r.pending.rss_at_all_ip_mib),
                    fmt(a.vm_rss_mib),
                    fmt(a.vm_hwm_mib),
                    fmt(a.rss_anon_mib),
                    fmt(a.rss_file_mib),
                    fmt(b.vm_rss_mib),
                    fmt(b.vm_hwm_mib),
                    fmt(b.rss_anon_mib),
                );
            }
            let _ = writeln!(s, "\n### Controller counters\n");
            let _ = writeln!(
                s,
                "| rep | phase | Service writes | Events | pool writes | errors | inputs | input time s |\n|---|---|---:|---:|---:|---:|---:|---:|"
            );
            for (i, r) in self.reps.iter().enumerate() {
                for (phase, m) in [
                    ("(a) start-up with N pending", &r.pending.metrics),
                    ("(b) running burst", &r.running.metrics),
                ] {
                    let _ = writeln!(
                        s,
                        "| {} | {phase} | {} | {} | {} | {} | {} | {} |",
                        i + 1,
                        m.service_writes,
                        m.event_writes,
                        m.pool_writes,
                        m.write_errors,
                        m.reconcile_count,
                        fmt(m.reconcile_sum_s),
                    );
                }
            }
        }
        if let Some(scenarios) = self
            .ipam
            .as_ref()
            .and_then(|v| v.get("scenarios"))
            .and_then(|v| v.as_array())
        {
            let _ = writeln!(s, "\n## Pure IPAM (ns per pair)\n");
            let _ = writeln!(
                s,
                "| scenario | median | min | max | pairs/run | free intervals | what |\n|---|---:|---:|---:|---:|---:|---|"
            );
            for sc in scenarios {
                let num = |k: &str| sc.get(k).and_then(|v| v.as_f64()).map_or("-".into(), fmt);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    sc.get("name").and_then(|v| v.as_str()).unwrap_or("?"),
                    num("median_ns_per_pair"),
                    num("min_ns_per_pair"),
                    num("max_ns_per_pair"),
                    num("pairs_per_run"),
                    num("free_intervals_before"),
                    sc.get("what").and_then(|v| v.as_str()).unwrap_or(""),
                );
            }
        }
        let _ = writeln!(s, "\n## Definitions\n\n{}", self.definitions);
        s
    }
}
