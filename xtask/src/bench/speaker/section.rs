//! What the speaker section measured: the failover summaries, the footprint, the ARP rounds and
//! the run-loop pass, as `report.json` holds them under `speaker` ([`SpeakerSection`]).
//! [`summary`](super::summary) derives the headline figures and anomalies from it and
//! [`markdown`](super::markdown) renders it.

use serde::Serialize;

use super::super::figure::Figure;
use super::super::procfs::round3;
use super::super::stats::{Distribution, median};
use super::Params;
use super::arp_rounds::ArpSummary;
use super::failover::{self, Action};
use super::footprint::Footprint;
use super::membership::MembershipRun;

/// One failover action's trials.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverSummary {
    /// What was done to the owner.
    pub action: Action,
    /// In words.
    pub describe: String,
    /// Action to the new owner's first gratuitous ARP at the client, ms.
    pub garp_ms: Distribution,
    /// Action to the first request another node answered, ms.
    pub http_ms: Distribution,
    /// Trials without a figure.
    pub failed_trials: usize,
    /// Median duration of the action itself (kill and reap, or `ip link set`), ms.
    pub action_ms_median: f64,
    /// Highest machine busy share during a trial.
    pub machine_busy_max: f64,
    /// Each trial.
    pub trials: Vec<failover::Trial>,
}

impl FailoverSummary {
    pub(super) fn of(action: Action, trials: Vec<failover::Trial>) -> FailoverSummary {
        let garp: Vec<f64> = trials.iter().filter_map(|t| t.garp_ms).collect();
        let http: Vec<f64> = trials.iter().filter_map(|t| t.http_ms).collect();
        let actions: Vec<f64> = trials.iter().map(|t| t.action_ms).collect();
        FailoverSummary {
            action,
            describe: action.describe().into(),
            garp_ms: Distribution::of(&garp),
            http_ms: Distribution::of(&http),
            failed_trials: trials
                .iter()
                .filter(|t| t.garp_ms.is_none() || t.http_ms.is_none())
                .count(),
            action_ms_median: round3(median(&actions)),
            machine_busy_max: trials.iter().map(|t| t.machine_busy).fold(0.0, f64::max),
            trials,
        }
    }
}

/// Everything the section measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpeakerSection {
    /// Parameters.
    pub params: Option<Params>,
    /// The speaker binary.
    pub speaker_binary: String,
    /// `git rev-parse HEAD` and whether speaker/ differs from it.
    pub speaker_build: String,
    /// Headline figures.
    pub figures: Vec<Figure>,
    /// Failover, per action.
    pub failover: Vec<FailoverSummary>,
    /// Footprint with many addresses.
    pub footprint: Option<Footprint>,
    /// ARP reply latency.
    pub arp: Option<ArpSummary>,
    /// One pass of the run loop at scale, in-process (`plan_bench`).
    pub plan_pass: Option<PlanPass>,
    /// Membership at 10, 100 and 1,000 members (`membership_scale`).
    pub membership: Vec<MembershipRun>,
    /// Anything that looked wrong.
    pub notes: Vec<String>,
    /// Notes made while measuring (kept by [`SpeakerSection::summarise`]).
    #[serde(skip)]
    pub notes_before: Vec<String>,
    /// How the figures are defined.
    pub definitions: String,
    /// Wall time, s.
    pub duration_s: f64,
}

/// `plan_bench`'s output: what one pass of the speaker's run loop costs at scale.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct PlanPass {
    /// LoadBalancer Services (half `externalTrafficPolicy: Local`), one EndpointSlice each.
    pub services: u64,
    /// Nodes, all live.
    pub nodes: u64,
    /// Caches to snapshot, median, ms.
    pub snapshot_ms: f64,
    /// Snapshot comparison, median, ms.
    pub compare_ms: f64,
    /// Election over every group, median, ms.
    pub plan_ms: f64,
    /// The run loop's pass after one Service's endpoints moved (journal, snapshot refresh,
    /// incremental plan), median, ms.
    pub service_change_pass_ms: f64,
    /// The same, slowest of the passes, ms.
    pub service_change_pass_max_ms: f64,
    /// The run loop's pass after a peer's death, median, ms.
    pub peer_death_pass_ms: f64,
    /// The first pass (everything read and planned), ms.
    pub first_pass_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_summary_counts_trials_without_figures() {
        let t = |garp: Option<f64>, http: Option<f64>| failover::Trial {
            owner: "node2".into(),
            garp_ms: garp,
            http_ms: http,
            ..Default::default()
        };
        let s = FailoverSummary::of(
            Action::Kill,
            vec![
                t(Some(26.0), Some(26.5)),
                t(Some(28.0), None),
                t(None, None),
            ],
        );
        assert_eq!(s.failed_trials, 2);
        assert_eq!((s.garp_ms.count, s.garp_ms.p50), (2, 26.0));
        assert_eq!(s.http_ms.max, 26.5);
        let mut section = SpeakerSection {
            failover: vec![s],
            ..Default::default()
        };
        section.summarise();
        assert!(
            section
                .figures
                .iter()
                .any(|f| f.name.contains("GARP") && f.met == Some(true))
        );
        let goals: Vec<&str> = section.figures.iter().map(|f| f.goal.as_str()).collect();
        assert_eq!(goals, ["", "< 50", "", "< 50"], "p50 reported, p99 judged");
        assert!(section.notes[0].contains("2 of 3 trials"));
        assert!(section.markdown().contains("| Kill | 2 | node2 → - | 28 |"));
    }
}
