//! The ARP figure's rounds: each round runs the generator against the speakers, the reference
//! responder (sleeping, then spinning) and node1's kernel, on a quiet machine; the summary keeps
//! every run and the medians over rounds of the figures and ratios.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use ferrolb_tests::l2lab::Rig;
use serde::Serialize;
use tokio::task::block_in_place;

use super::super::procfs::{quiesce, round3};
use super::super::stats::median;
use super::arp_load;
use super::{Binaries, Params, speaker_pids};

/// One round of the ARP figure: speakers, the reference responder sleeping and spinning, then
/// the kernel.
#[derive(Clone, Debug, Serialize)]
pub struct ArpRound {
    /// Against the owned addresses.
    pub speaker: arp_load::LoadRun,
    /// Against the minimal responder on node1, blocking between requests.
    pub reference: arp_load::LoadRun,
    /// Against the minimal responder on node1, polling on a whole CPU.
    pub reference_spin: arp_load::LoadRun,
    /// Against the address node1's kernel owns.
    pub kernel: arp_load::LoadRun,
}

/// The ARP figure.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArpSummary {
    /// Owned addresses asked for.
    pub ips: usize,
    /// Requests per second asked for.
    pub rate: u32,
    /// The kernel's address.
    pub kernel_ip: String,
    /// Medians over rounds.
    pub medians: BTreeMap<String, f64>,
    /// Each round.
    pub rounds: Vec<ArpRound>,
}

/// Alternates speaker and kernel runs of the ARP generator.
pub(super) async fn measure_arp(
    rig: &mut Rig,
    params: &Params,
    bins: &Binaries,
    ips: &[Ipv4Addr],
) -> Result<ArpSummary> {
    let targets: Vec<Ipv4Addr> = ips.iter().copied().take(params.ips).collect();
    let duration = Duration::from_secs_f64(params.arp_seconds);
    let client = rig.lab.client().clone();
    let node1 = rig.lab.nodes()[0].clone();
    let mut summary = ArpSummary {
        ips: targets.len(),
        rate: params.arp_rate,
        kernel_ip: arp_load::KERNEL_BASELINE_IP.to_string(),
        ..Default::default()
    };
    for round in 0..params.arp_rounds {
        let pids = speaker_pids(rig)?;
        quiesce(Duration::from_secs(30)).await;
        eprintln!(
            "==> speaker: ARP round {}/{}: {} owned IPs at {}/s",
            round + 1,
            params.arp_rounds,
            targets.len(),
            params.arp_rate
        );
        let speaker = block_in_place(|| {
            arp_load::against_speakers(
                &client,
                &bins.arp,
                &targets,
                params.arp_rate,
                duration,
                &pids,
            )
        })?;
        let reference_targets = arp_load::reference_addresses(targets.len());
        let mut references = Vec::new();
        for spin in [false, true] {
            quiesce(Duration::from_secs(30)).await;
            eprintln!(
                "    reference responder on node1 ({}): {} addresses from {}",
                if spin { "spinning" } else { "sleeping" },
                reference_targets.len(),
                arp_load::REFERENCE_FIRST_IP
            );
            let log = rig
                .dir()
                .join(format!("reference-responder-{round}-{spin}.log"));
            let reference = arp_load::Reference {
                node: &node1,
                spin,
                log: &log,
            };
            references.push(block_in_place(|| {
                arp_load::against_reference(
                    &client,
                    &bins.arp,
                    &reference_targets,
                    params.arp_rate,
                    duration,
                    reference,
                )
            })?);
        }
        let reference_spin = references.pop().context("spinning reference run")?;
        let reference = references.pop().context("sleeping reference run")?;
        quiesce(Duration::from_secs(30)).await;
        eprintln!(
            "    kernel baseline: {} on node1",
            arp_load::KERNEL_BASELINE_IP
        );
        let kernel = block_in_place(|| {
            arp_load::against_kernel(&client, &node1, &bins.arp, params.arp_rate, duration)
        })?;
        eprintln!(
            "    p50/p99 µs: speakers {}/{} at {}/s; reference sleeping {}/{}, spinning {}/{}; kernel {}/{} at {}/s",
            speaker.rtt_us.p50,
            speaker.rtt_us.p99,
            speaker.achieved_rate.round(),
            reference.rtt_us.p50,
            reference.rtt_us.p99,
            reference_spin.rtt_us.p50,
            reference_spin.rtt_us.p99,
            kernel.rtt_us.p50,
            kernel.rtt_us.p99,
            kernel.achieved_rate.round()
        );
        summary.rounds.push(ArpRound {
            speaker,
            reference,
            reference_spin,
            kernel,
        });
    }
    summary.medians = medians(&summary.rounds);
    Ok(summary)
}

/// Which run of a round.
type Pick = fn(&ArpRound) -> &arp_load::LoadRun;

/// The medians over `rounds` that the figures and the report read, by key (`speaker.p50_us`,
/// `ratio.p99`, `reference.ratio.p50`, ...).
fn medians(rounds: &[ArpRound]) -> BTreeMap<String, f64> {
    let med =
        |f: &dyn Fn(&ArpRound) -> f64| round3(median(&rounds.iter().map(f).collect::<Vec<_>>()));
    let mut m = BTreeMap::new();
    let measured: [(&str, Pick); 2] = [("speaker", |r| &r.speaker), ("kernel", |r| &r.kernel)];
    for (name, pick) in measured {
        m.insert(format!("{name}.p50_us"), med(&|r| pick(r).rtt_us.p50));
        m.insert(format!("{name}.p90_us"), med(&|r| pick(r).rtt_us.p90));
        m.insert(format!("{name}.p99_us"), med(&|r| pick(r).rtt_us.p99));
        m.insert(format!("{name}.max_us"), med(&|r| pick(r).rtt_us.max));
        m.insert(
            format!("{name}.achieved_rate"),
            med(&|r| pick(r).achieved_rate),
        );
    }
    m.insert("speaker.lost".into(), med(&|r| r.speaker.lost as f64));
    let ratio = |q: fn(&arp_load::Rtt) -> f64, pick: Pick| {
        med(&|r: &ArpRound| q(&pick(r).rtt_us) / q(&r.kernel.rtt_us))
    };
    m.insert("ratio.p50".into(), ratio(|d| d.p50, |r| &r.speaker));
    m.insert("ratio.p90".into(), ratio(|d| d.p90, |r| &r.speaker));
    m.insert("ratio.p99".into(), ratio(|d| d.p99, |r| &r.speaker));
    let references: [(&str, Pick); 2] = [
        ("reference", |r| &r.reference),
        ("reference_spin", |r| &r.reference_spin),
    ];
    for (name, pick) in references {
        m.insert(format!("{name}.p50_us"), med(&|r| pick(r).rtt_us.p50));
        m.insert(format!("{name}.p99_us"), med(&|r| pick(r).rtt_us.p99));
        m.insert(format!("{name}.ratio.p50"), ratio(|d| d.p50, pick));
        m.insert(format!("{name}.ratio.p99"), ratio(|d| d.p99, pick));
    }
    m.insert(
        "speaker_cpu_s_total".into(),
        med(&|r| r.speaker.speaker_cpu_s.values().sum()),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p50: f64, p99: f64) -> arp_load::LoadRun {
        arp_load::LoadRun {
            rtt_us: arp_load::Rtt {
                p50,
                p99,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn medians_over_rounds_give_the_ratios_to_the_kernel() {
        let round = |speaker: f64, reference: f64| ArpRound {
            speaker: run(speaker, 2.0 * speaker),
            reference: run(reference, 2.0 * reference),
            reference_spin: run(10.0, 20.0),
            kernel: run(20.0, 40.0),
        };
        let m = medians(&[round(30.0, 40.0), round(24.0, 30.0), round(26.0, 50.0)]);
        assert_eq!(m["speaker.p50_us"], 26.0);
        assert_eq!(m["ratio.p50"], 1.3);
        assert_eq!(m["ratio.p99"], 1.3);
        assert_eq!(m["reference.ratio.p50"], 2.0);
        assert_eq!(m["reference_spin.ratio.p99"], 0.5);
        assert_eq!(m["kernel.achieved_rate"], 0.0);
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "kernel.achieved_rate",
                "kernel.max_us",
                "kernel.p50_us",
                "kernel.p90_us",
                "kernel.p99_us",
                "ratio.p50",
                "ratio.p90",
                "ratio.p99",
                "reference.p50_us",
                "reference.p99_us",
                "reference.ratio.p50",
                "reference.ratio.p99",
                "reference_spin.p50_us",
                "reference_spin.p99_us",
                "reference_spin.ratio.p50",
                "reference_spin.ratio.p99",
                "speaker.achieved_rate",
                "speaker.lost",
                "speaker.max_us",
                "speaker.p50_us",
                "speaker.p90_us",
                "speaker.p99_us",
                "speaker_cpu_s_total",
            ]
        );
    }
}
