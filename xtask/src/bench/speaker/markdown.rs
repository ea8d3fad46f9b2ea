//! The speaker section as Markdown: its parameters, the figure table, anomalies, and a table
//! per part (failover trials, footprint per speaker, ARP rounds), then its definitions.

use std::fmt::Write as _;

use ferrolb_crds::contract::condition::ANNOUNCED;

use super::super::figure::{self, fmt};
use super::super::stats::Distribution;
use super::section::SpeakerSection;

/// How the speaker figures are defined; printed into every report.
pub fn definitions() -> String {
    format!(
        "\
- **Lab**: 3 node namespaces and a client on the `lab0` bridge, one release `ferrolb-speaker` \
per node with default settings (heartbeat 50 ms, dead after 250 ms, refresh 20 s), the release \
controller, a backend and VIP DNAT rules per node (kube-proxy's part). Nothing leaves the lab.
- **Failover**: Service `web` gets one address from 198.51.100.200-210. In the client namespace \
`tcpdump -j host --time-stamp-precision micro` captures ARP (host stamps are CLOCK_REALTIME; \
veth has no hardware stamps) and `ferrolb-bench-prober` loops over fresh TCP connections \
`GET http://VIP/` with a 20 ms timeout, printing CLOCK_REALTIME start and end of each. The \
harness reads CLOCK_REALTIME right before the action: SIGKILL of the owner's speaker (its \
kernel closes its lifelines), SIGTERM (it sends Leave), `ip link set lab0-nX down` on the host \
end of the owner's veth (link cut), or node loss (SIGSTOP of every process in the owner's \
namespace, then its link down: nothing is closed or sent). *GARP* = first gratuitous ARP \
(sender = target = VIP, either opcode) from another MAC after that instant; *HTTP* = end of \
the first request after it that another node's backend answered. After SIGKILL the old node's \
kernel and backend still serve, so the client is only moved by the new owner's announcement; \
after a cut, requests fail until then (so the HTTP figure has the prober's 20 ms \
granularity). Between trials the speaker is restarted (or the link brought up and the \
processes continued) and the harness waits until every speaker sees its 2 peers and holds a \
lifeline to each, and the original owner alone announces \
(`ferrolb_speaker_owned_ips`), curl from the client reaches it, and 2.5 s more for its \
takeover burst (0, 250 ms, 1 s, 2 s); whether the Service's `{ANNOUNCED}` condition \
names the owner again within 5 s is recorded (an anomaly if not). Nearest-rank percentiles over \
trials: with 20 trials p99 is the slowest trial.
- **ARP reply latency**: `ferrolb-bench-arp` in the client namespace sends broadcast ARP \
requests at a fixed rate, round robin over the owned addresses, each request's sender address \
one of 64 unused lab addresses (198.51.100.128/26) so that every reply names its request; round \
trip = kernel receive timestamp of the reply (SO_TIMESTAMPNS) - CLOCK_REALTIME just before the \
send. 1 s warm-up not timed. The sender thread runs SCHED_IDLE, standing for a client on \
another machine: a responder woken on its CPU runs as soon as the request's softirq ends, not \
after the sender has armed its next sleep (until 2026-12-02 it ran SCHED_FIFO, which added \
about 10 µs to every userspace reply and nothing to the kernel's). It keeps the schedule (late \
sends go out at once; their lateness is reported). The baseline is the same run against one address added to node1's \
eth0 (`198.19.4.1/32`), which node1's kernel answers; speakers keep running (every speaker and \
node kernel sees every broadcast in both runs). Ratio = speaker percentile / kernel percentile, \
median over rounds. The achieved send rate is reported as measured: sender, 3 speakers, 3 node \
kernels and the bridge share 2 CPUs. Context for the ratio, each round: the same run against \
`ferrolb-bench-arp respond` on node1 answering for as many addresses from 198.19.8.0 (one \
thread, one socket, receive -> set lookup -> send, nothing else): *sleeping* blocks in recv \
between requests like the speaker, *spinning* polls without sleeping on a whole CPU. Their \
ratios show what a plain userspace responder pays on this machine for being woken (on \
whichever CPU the scheduler picks), and what is left without any wake-up.
- **Run-loop pass**: `plan_bench` (release example of the speaker, no apiserver): reflector \
caches filled in-process with 100,000 LoadBalancer Services (half `externalTrafficPolicy: \
Local`, one EndpointSlice of 3 endpoints each) and 1,000 Nodes. Through the same calls as the \
run loop: the median of 200 passes after one Service's EndpointSlice changed (the watch journal \
names it, the snapshot is refreshed for it, its group re-elected) and of 100 passes after a \
peer's death; for reference the whole read and election (median of 3), which every pass paid \
before issue #14 and only the first pass pays now.
- **Membership at scale**: `membership_scale` (release example of the speaker): N membership \
instances in one process with default timings, each on its own address 127.0.x.y. *Simulated*: \
the speakers' own code on an in-memory network under tokio's paused clock (virtual time, so the \
figures are the protocol's and not this machine's: a thousand real sockets sending 80 \
datagrams a second each need more than 2 CPUs); a process end is told to the others at once, \
as the kernel does through the lifelines. *Loopback*: real UDP sockets and TCP lifelines in a \
network namespace made for the run; silence = nftables drop of the member's address there. \
Steady state: datagrams sent and received per member per second over 10 s (60 s under loss), \
and how many members' views changed meanwhile (each change is a false death; goal 0). \
Detection: time from the death (drop of the instance, or the drop rule) until every other \
member's view has lost it; the member then comes back (same address, new process) and every \
view must hold it again before the next trial. Victims drawn with a fixed seed.
- **Footprint**: with one Service per owned address (pool 198.19.0.0/22, RFC 2544 \
benchmarking space), once every speaker's API writes and every object the speakers watch \
(Services, EndpointSlices, Nodes, pools, L2Advertisements) have been still for 5 s \
(kube-controller-manager needs about 50 s to write 1,000 EndpointSlices): owned addresses per speaker \
(`ferrolb_speaker_owned_ips`), VmRSS/RssAnon/RssFile/VmHWM from /proc/<pid>/status, PSS from \
/proc/<pid>/smaps_rollup; idle CPU = utime+stime over the idle window (per thread name too), \
wake-ups = context switches of all its threads per second; API writes = the sum of \
`ferrolb_speaker_api_writes_total` over speakers and labels, difference over the writes window \
(the idle window lies inside it; goal: 0). Over the same window the harness also counts the \
controller's writes and the watched objects whose resourceVersion changed, so a busy speaker \
can be told apart from a busy cluster."
    )
}

impl SpeakerSection {
    /// The section as Markdown (a `##` heading and its tables).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## Speaker\n");
        if let Some(p) = &self.params {
            let _ = writeln!(
                s,
                "3-node lab, speaker `{}` ({}) with {} · {} failover trials per action · {} owned IPs · ARP {}/s for {} s × {} round(s) · idle window {} s · writes window {} s · {} s in all\n",
                self.speaker_binary,
                self.speaker_build,
                if p.speaker_args.is_empty() {
                    "default settings".to_string()
                } else {
                    format!("`{}`", p.speaker_args.join(" "))
                },
                p.trials,
                p.ips,
                p.arp_rate,
                p.arp_seconds,
                p.arp_rounds,
                p.idle_window_s,
                p.writes_window_s,
                self.duration_s,
            );
        }
        figure::table(&mut s, &self.figures);
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\n**Anomalies:**\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        if !self.membership.is_empty() {
            super::membership::table(&mut s, &self.membership);
        }
        if !self.failover.is_empty() {
            let _ = writeln!(s, "\n### Failover (ms from the action)\n");
            let _ = writeln!(
                s,
                "| action | trials | GARP p50 / p90 / p99 / max | HTTP p50 / p90 / p99 / max | no figure | action took (median) | machine busy (max) |\n|---|---:|---|---|---:|---:|---:|"
            );
            for f in &self.failover {
                let d = |d: &Distribution| {
                    format!(
                        "{} / {} / {} / {}",
                        fmt(d.p50),
                        fmt(d.p90),
                        fmt(d.p99),
                        fmt(d.max)
                    )
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} ms | {} % |",
                    f.describe,
                    f.trials.len(),
                    d(&f.garp_ms),
                    d(&f.http_ms),
                    f.failed_trials,
                    fmt(f.action_ms_median),
                    fmt(100.0 * f.machine_busy_max),
                );
            }
            let _ = writeln!(
                s,
                "\n| action | trial | owner → new | GARP ms | from | HTTP ms | failed requests | old owner answers |\n|---|---:|---|---:|---|---:|---:|---:|"
            );
            for f in &self.failover {
                for (i, t) in f.trials.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "| {:?} | {} | {} → {} | {} | {} | {} | {} | {} |",
                        f.action,
                        i + 1,
                        t.owner,
                        t.new_owner.as_deref().unwrap_or("-"),
                        t.garp_ms.map_or("-".into(), fmt),
                        t.garp_from.as_deref().unwrap_or("-"),
                        t.http_ms.map_or("-".into(), fmt),
                        t.failed_requests,
                        t.old_owner_answers,
                    );
                }
            }
        }
        if let Some(fp) = &self.footprint {
            let _ = writeln!(
                s,
                "\n### Footprint with {} owned IPs ({} in total over the speakers, {} Services announced, settled {} s after the first create)\n",
                fp.ips,
                fp.owned_total,
                fp.announced_services,
                fmt(fp.settle_s)
            );
            let _ = writeln!(
                s,
                "| node | owned IPs | VmRSS MiB | RssAnon | RssFile | PSS MiB | VmHWM | idle CPU s / {} s | idle CPU % | idle wake-ups/s | busiest threads (CPU s) | API writes creating the Services | API writes in {} s | VmRSS / VmHWM after ARP load |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
                fmt(fp.idle_window_s),
                fmt(fp.writes_window_s)
            );
            for sp in &fp.speakers {
                let mut busiest: Vec<(&String, &f64)> = sp.idle_cpu_by_thread.iter().collect();
                busiest.sort_by(|a, b| b.1.total_cmp(a.1));
                let busiest: Vec<String> = busiest
                    .iter()
                    .take(3)
                    .map(|(n, c)| format!("{n} {}", fmt(**c)))
                    .collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                    sp.node,
                    sp.owned_ips,
                    fmt(sp.vm_rss_mib),
                    fmt(sp.rss_anon_mib),
                    fmt(sp.rss_file_mib),
                    fmt(sp.pss_mib),
                    fmt(sp.vm_hwm_mib),
                    fmt(sp.idle_cpu_s),
                    fmt(sp.idle_cpu_percent),
                    fmt(sp.idle_wakeups_per_s),
                    busiest.join(", "),
                    sp.api_writes_creating,
                    sp.api_writes_in_window,
                    fmt(none_if_zero(sp.vm_rss_after_load_mib)),
                    fmt(none_if_zero(sp.vm_hwm_after_load_mib)),
                );
            }
            let changes: Vec<String> = fp
                .window_object_changes
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(
                s,
                "\nAPI writes in steady state: {} in {} s ({} per minute). Meanwhile the controller wrote {} times, and watched objects that changed: {}.",
                fp.api_writes_in_window,
                fmt(fp.writes_window_s),
                fmt(fp.api_writes_per_minute),
                fp.window_controller_writes,
                if changes.is_empty() {
                    "none".to_string()
                } else {
                    changes.join(", ")
                }
            );
        }
        if let Some(arp) = &self.arp {
            let _ = writeln!(
                s,
                "\n### ARP reply latency (µs), {} owned IPs vs one kernel-owned address ({}), {} requests/s asked\n",
                arp.ips, arp.kernel_ip, arp.rate
            );
            let _ = writeln!(
                s,
                "| round | responder | sent/s | timed | p50 | p90 | p99 | p99.9 | max | lost | duplicates | send lateness p99 | machine busy | speaker CPU s |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
            );
            for (i, r) in arp.rounds.iter().enumerate() {
                for (who, run) in [
                    ("speakers", &r.speaker),
                    ("reference, sleeping", &r.reference),
                    ("reference, spinning", &r.reference_spin),
                    ("node1 kernel", &r.kernel),
                ] {
                    let cpu: Vec<String> = run
                        .speaker_cpu_s
                        .iter()
                        .map(|(n, c)| format!("{n} {}", fmt(*c)))
                        .collect();
                    let _ = writeln!(
                        s,
                        "| {} | {who} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} % | {} |",
                        i + 1,
                        fmt(run.achieved_rate.round()),
                        run.rtt_us.count,
                        fmt(run.rtt_us.p50),
                        fmt(run.rtt_us.p90),
                        fmt(run.rtt_us.p99),
                        fmt(run.rtt_us.p999),
                        fmt(run.rtt_us.max),
                        run.lost,
                        run.duplicates,
                        fmt(run.send_lateness_p99_us),
                        fmt((100.0 * run.machine_busy).round()),
                        if cpu.is_empty() {
                            "-".into()
                        } else {
                            cpu.join(", ")
                        },
                    );
                }
            }
            let m = |k: &str| arp.medians.get(k).copied().map_or("-".into(), fmt);
            let _ = writeln!(
                s,
                "\nMedians over rounds: speakers p50 / p90 / p99 {} / {} / {} µs, kernel {} / {} / {} µs; ratio p50 {} x, p90 {} x, p99 {} x.",
                m("speaker.p50_us"),
                m("speaker.p90_us"),
                m("speaker.p99_us"),
                m("kernel.p50_us"),
                m("kernel.p90_us"),
                m("kernel.p99_us"),
                m("ratio.p50"),
                m("ratio.p90"),
                m("ratio.p99"),
            );
            let _ = writeln!(
                s,
                "Reference responder (the least a userspace responder does per request): sleeping p50 / p99 {} / {} µs, ratio {} x / {} x; spinning {} / {} µs, ratio {} x / {} x.",
                m("reference.p50_us"),
                m("reference.p99_us"),
                m("reference.ratio.p50"),
                m("reference.ratio.p99"),
                m("reference_spin.p50_us"),
                m("reference_spin.p99_us"),
                m("reference_spin.ratio.p50"),
                m("reference_spin.ratio.p99"),
            );
        }
        let _ = writeln!(s, "\n### Speaker definitions\n\n{}", self.definitions);
        s
    }
}

/// NaN (printed `-`) for a figure that was not measured.
fn none_if_zero(x: f64) -> f64 {
    if x == 0.0 { f64::NAN } else { x }
}
