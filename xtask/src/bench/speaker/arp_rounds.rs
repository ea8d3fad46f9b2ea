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
    let med = |f: &dyn Fn(&ArpRound) -> f64| {
        round3(median(&summary.rounds.iter().map(f).collect::<Vec<_>>()))
    };
    let mut m = BTreeMap::new();
    m.insert("speaker.p50_us".into(), med(&|r| r.speaker.rtt_us.p50));
    m.insert("speaker.p90_us".into(), med(&|r| r.speaker.rtt_us.p90));
    m.insert("speaker.p99_us".into(), med(&|r| r.speaker.rtt_us.p99));
    m.insert("speaker.max_us".into(), med(&|r| r.speaker.rtt_us.max));
    m.insert(
        "speaker.achieved_rate".into(),
        med(&|r| r.speaker.achieved_rate),
    );
    m.insert("speaker.lost".into(), med(&|r| r.speaker.lost as f64));
    m.insert("kernel.p50_us".into(), med(&|r| r.kernel.rtt_us.p50));
    m.insert("kernel.p90_us".into(), med(&|r| r.kernel.rtt_us.p90));
    m.insert("kernel.p99_us".into(), med(&|r| r.kernel.rtt_us.p99));
    m.insert("kernel.max_us".into(), med(&|r| r.kernel.rtt_us.max));
    m.insert(
        "kernel.achieved_rate".into(),
        med(&|r| r.kernel.achieved_rate),
    );
    m.insert(
        "ratio.p50".into(),
        med(&|r| r.speaker.rtt_us.p50 / r.kernel.rtt_us.p50),
    );
    m.insert(
        "ratio.p90".into(),
        med(&|r| r.speaker.rtt_us.p90 / r.kernel.rtt_us.p90),
    );
    m.insert(
        "ratio.p99".into(),
        med(&|r| r.speaker.rtt_us.p99 / r.kernel.rtt_us.p99),
    );
    for (name, pick) in [
        (
            "reference",
            (|r: &ArpRound| &r.reference) as fn(&ArpRound) -> &arp_load::LoadRun,
        ),
        ("reference_spin", |r: &ArpRound| &r.reference_spin),
    ] {
        m.insert(format!("{name}.p50_us"), med(&|r| pick(r).rtt_us.p50));
        m.insert(format!("{name}.p99_us"), med(&|r| pick(r).rtt_us.p99));
        m.insert(
            format!("{name}.ratio.p50"),
            med(&|r| pick(r).rtt_us.p50 / r.kernel.rtt_us.p50),
        );
        m.insert(
            format!("{name}.ratio.p99"),
            med(&|r| pick(r).rtt_us.p99 / r.kernel.rtt_us.p99),
        );
    }
    m.insert(
        "speaker_cpu_s_total".into(),
        med(&|r| r.speaker.speaker_cpu_s.values().sum()),
    );
    summary.medians = m;
    Ok(summary)
}
