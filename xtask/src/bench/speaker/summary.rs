//! The speaker section's headline figures (against the goals) and its anomalies,
//! recomputed from what has been measured after every part.

use ferrolb_crds::contract::condition::ANNOUNCED;

use super::super::figure::{Figure, fmt};
use super::failover::Action;
use super::section::SpeakerSection;

/// The goal for the ARP reply p50, speakers / kernel.
const ARP_RATIO_GOAL: f64 = 1.5;

impl SpeakerSection {
    /// Recomputes the headline figures and the notes from what has been measured.
    pub fn summarise(&mut self) {
        let mut figures = Vec::new();
        let mut notes = self.notes_before.clone();
        if let Some(p) = &self.plan_pass {
            let what = format!("{} Services over {} nodes", p.services, p.nodes);
            // Issue #14: a watch event changes only what it touches.
            figures.push(Figure::new(
                &format!("Run-loop pass after one Service changed, {what}"),
                p.service_change_pass_ms,
                "ms",
                "< 1",
                Some(p.service_change_pass_ms < 1.0),
            ));
            figures.push(Figure::new(
                &format!("Run-loop pass after a peer's death, {what}"),
                p.peer_death_pass_ms,
                "ms",
                "",
                None,
            ));
            figures.push(Figure::new(
                &format!("Whole snapshot + election (the pass before issue #14; now the first pass only), {what}"),
                p.snapshot_ms + p.plan_ms,
                "ms",
                "",
                None,
            ));
        }
        membership_figures(&self.membership, &mut figures, &mut notes);
        for f in &self.failover {
            // The goals of issue #14: the kernel (lifeline) or a Leave tells of a process that
            // ends at once; a lost node or link is noticed by heartbeat silence.
            let (what, goal_p99_ms) = match f.action {
                Action::Kill => ("after SIGKILL", 50.0),
                Action::Graceful => ("after SIGTERM", 50.0),
                Action::LinkDown => ("after link cut", 300.0),
                Action::NodeLoss => ("after node loss", 300.0),
            };
            for (name, d) in [
                ("new owner's first GARP", &f.garp_ms),
                ("first request answered elsewhere", &f.http_ms),
            ] {
                if d.count == 0 {
                    continue;
                }
                figures.push(Figure::new(
                    &format!("Failover {what}: {name}, p50"),
                    d.p50,
                    "ms",
                    "",
                    None,
                ));
                figures.push(Figure::new(
                    &format!("Failover {what}: {name}, p99"),
                    d.p99,
                    "ms",
                    &format!("< {goal_p99_ms}"),
                    Some(d.p99 < goal_p99_ms),
                ));
            }
            if f.failed_trials > 0 {
                notes.push(format!(
                    "{}: {} of {} trials gave no figure: {}",
                    f.describe,
                    f.failed_trials,
                    f.trials.len(),
                    f.trials
                        .iter()
                        .filter_map(|t| t.error.clone())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            let dup: Vec<String> = f
                .trials
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.other_announcers.is_empty())
                .map(|(i, t)| format!("trial {}: {:?}", i + 1, t.other_announcers))
                .collect();
            if !dup.is_empty() {
                notes.push(format!(
                    "{}: more than one node announced the VIP after the action ({})",
                    f.describe,
                    dup.join(", ")
                ));
            }
            let stale: Vec<String> = f
                .trials
                .iter()
                .enumerate()
                .filter(|(_, t)| t.condition_stale_after_restore)
                .map(|(i, _)| (i + 1).to_string())
                .collect();
            if !stale.is_empty() {
                notes.push(format!(
                    "{}: after the restore, {} announced and served the VIP again (its own owned_ips, curl from the client) but the Service's {ANNOUNCED} condition still named the stand-in 5 s later (trials {})",
                    f.describe,
                    f.trials.first().map_or("the owner", |t| t.owner.as_str()),
                    stale.join(", ")
                ));
            }
            let owners: std::collections::BTreeSet<&str> = f
                .trials
                .iter()
                .filter_map(|t| t.new_owner.as_deref())
                .collect();
            if owners.len() > 1 {
                notes.push(format!(
                    "{}: the new owner differed between trials ({owners:?}); the election is deterministic, so this is unexpected",
                    f.describe
                ));
            }
        }
        if let Some(fp) = &self.footprint {
            notes.extend(fp.notes.iter().cloned());
            let changed: usize = fp.window_object_changes.values().sum();
            if changed > 0 {
                notes.push(format!(
                    "in steady state, {changed} watched objects changed within {} s ({:?}; the controller wrote {} times): every change wakes every speaker",
                    fmt(fp.writes_window_s),
                    fp.window_object_changes,
                    fp.window_controller_writes
                ));
            }
            for sp in &fp.speakers {
                // A condition and an Event per owned Service; a few more for Services that
                // changed owner while the others were created.
                let expected = 2.0 * sp.owned_ips;
                if sp.api_writes_creating > expected * 1.1 + 10.0 {
                    notes.push(format!(
                        "{} made {} API writes while the Services were created, for {} owned: expected about {expected} (a condition and an Event each)",
                        sp.node, sp.api_writes_creating, sp.owned_ips
                    ));
                }
            }
            if let Some(max) = fp.speakers.iter().map(|s| s.vm_rss_mib).reduce(f64::max) {
                figures.push(Figure::new(
                    &format!(
                        "Speaker VmRSS, {} owned IPs over 3 speakers, largest",
                        fp.ips
                    ),
                    max,
                    "MiB",
                    "",
                    None,
                ));
            }
            if let Some(max) = fp
                .speakers
                .iter()
                .map(|s| s.idle_cpu_percent)
                .reduce(f64::max)
            {
                figures.push(Figure::new(
                    "Speaker idle CPU, largest (share of one CPU)",
                    max,
                    "%",
                    "",
                    None,
                ));
            }
            figures.push(Figure::new(
                "Speaker API writes in steady state (all speakers)",
                fp.api_writes_per_minute,
                "per min",
                "0",
                Some(fp.api_writes_in_window == 0.0),
            ));
            if fp.owned_total > fp.ips as f64 {
                notes.push(format!(
                    "the speakers own {} addresses in total for {} Services: some address has two owners",
                    fp.owned_total, fp.ips
                ));
            } else if fp.owned_total < fp.ips as f64 {
                notes.push(format!(
                    "the speakers own {} addresses in total for {} Services: some address has no owner",
                    fp.owned_total, fp.ips
                ));
            }
        }
        if let Some(arp) = &self.arp {
            let m = |k: &str| arp.medians.get(k).copied().unwrap_or(f64::NAN);
            figures.push(Figure::new(
                &format!(
                    "ARP reply p50, speakers / kernel, {} IPs at {}/s",
                    arp.ips, arp.rate
                ),
                m("ratio.p50"),
                "x",
                "<= 1.5",
                // NaN (no round) compares false: not met.
                Some(m("ratio.p50") <= ARP_RATIO_GOAL),
            ));
            figures.push(Figure::new(
                &format!(
                    "ARP reply p99, speakers / kernel, {} IPs at {}/s",
                    arp.ips, arp.rate
                ),
                m("ratio.p99"),
                "x",
                "",
                None,
            ));
            figures.push(Figure::new(
                "ARP reply p50, reference responder sleeping / kernel (a plain responder that sleeps)",
                m("reference.ratio.p50"),
                "x",
                "",
                None,
            ));
            figures.push(Figure::new(
                "ARP reply p50, reference responder spinning / kernel (no wake-up; a whole CPU)",
                m("reference_spin.ratio.p50"),
                "x",
                "",
                None,
            ));
            figures.push(Figure::new(
                "ARP reply p50, speakers",
                m("speaker.p50_us"),
                "µs",
                "",
                None,
            ));
            figures.push(Figure::new(
                "ARP reply p99, speakers",
                m("speaker.p99_us"),
                "µs",
                "",
                None,
            ));
            let rate = m("speaker.achieved_rate");
            if rate < 0.95 * f64::from(arp.rate) {
                notes.push(format!(
                    "the ARP generator reached {rate:.0} requests/s, not {}: the machine is too small (or busy) for the asked rate",
                    arp.rate
                ));
            }
            for (i, r) in arp.rounds.iter().enumerate() {
                if r.speaker.targets_answered_by_several_macs > 0 || r.speaker.duplicates > 0 {
                    notes.push(format!(
                        "ARP round {}: {} addresses answered from several MACs, {} duplicate replies",
                        i + 1,
                        r.speaker.targets_answered_by_several_macs,
                        r.speaker.duplicates
                    ));
                }
                if r.speaker.lost > 0 || r.speaker.targets_never_answered > 0 {
                    notes.push(format!(
                        "ARP round {}: {} requests unanswered ({} addresses never answered), {} frames dropped by the generator's socket",
                        i + 1,
                        r.speaker.lost,
                        r.speaker.targets_never_answered,
                        r.speaker.receive_drops
                    ));
                }
            }
        }
        self.figures = figures;
        self.notes = notes;
    }
}

/// Issue #14's membership goals, from the 1,000-member simulated run, and a note for every run
/// in which a view changed while nothing happened.
fn membership_figures(
    runs: &[super::membership::MembershipRun],
    figures: &mut Vec<Figure>,
    notes: &mut Vec<String>,
) {
    for r in runs {
        if r.steady.members_whose_view_changed > 0 {
            notes.push(format!(
                "membership, {} members ({}, {} % loss): {} members' views changed while no member died",
                r.members,
                r.network,
                fmt(100.0 * r.loss),
                r.steady.members_whose_view_changed
            ));
        }
    }
    let Some(r) = runs
        .iter()
        .find(|r| r.members == 1000 && r.loss == 0.0 && r.kill.is_some())
    else {
        return;
    };
    figures.push(Figure::new(
        "Membership datagrams sent per member per second, 1,000 members (simulated)",
        r.steady.sent_per_member_s.mean,
        "/s",
        "< 100",
        Some(r.steady.sent_per_member_s.mean < 100.0),
    ));
    for (what, d) in [("silence", &r.silence), ("process end", &r.kill)] {
        if let Some(d) = d {
            figures.push(Figure::new(
                &format!(
                    "Membership detection after {what}, all of 1,000 members, p99 (simulated)"
                ),
                d.all_members_ms.p99,
                "ms",
                "< 1000",
                Some(d.all_members_ms.p99 < 1000.0),
            ));
        }
    }
}
