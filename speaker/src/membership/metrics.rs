//! Membership metrics, under `ferrolb_speaker_*`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of the received-packets counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `accepted`, `bad_mac`, `replayed`, `stale`, `unknown_peer` or `malformed`.
    pub result: &'static str,
}

/// Labels of the peer-deaths counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    /// `left` (sent Leave), `ended` (its kernel closed the lifeline) or `silent`.
    pub cause: &'static str,
}

/// Every membership metric. Clones share the same series.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Live speakers other than this one (`ferrolb_speaker_live_peers`).
    pub live_peers: Gauge,
    /// Datagrams sent (`ferrolb_speaker_membership_packets_sent_total`).
    pub packets_sent: Counter,
    /// Datagrams received, by result (`ferrolb_speaker_membership_packets_received_total`).
    pub packets_received: Family<ResultLabels, Counter>,
    /// 1 while the live view comes from the Node objects (`ferrolb_speaker_membership_fallback`).
    pub fallback: Gauge,
    /// Probes sent to suspected peers (`ferrolb_speaker_membership_probes_sent_total`).
    pub probes_sent: Counter,
    /// Peers seen dying, by cause (`ferrolb_speaker_membership_peer_deaths_total`).
    pub peer_deaths: Family<CauseLabels, Counter>,
    /// How many times this speaker stretches its silence verdicts, minus one, because its own
    /// timers fire late (`ferrolb_speaker_membership_slowness`).
    pub slowness: Gauge,
    /// 1 while this speaker does not answer because its peers may have declared it dead
    /// (`ferrolb_speaker_membership_fenced`).
    pub fenced: Gauge,
    /// Times this speaker fenced itself (`ferrolb_speaker_membership_fences_total`).
    pub fences: Counter,
    /// Lifelines established to peers (`ferrolb_speaker_membership_lifelines`).
    pub lifelines: Gauge,
    /// Peers this speaker watches: all of them up to four, about four beyond
    /// (`ferrolb_speaker_membership_watching`).
    pub watching: Gauge,
}

impl Metrics {
    /// Metrics registered in `registry` under `ferrolb_speaker_*`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("ferrolb_speaker");
        r.register(
            "live_peers",
            "Live speakers other than this one, as seen by membership",
            m.live_peers.clone(),
        );
        r.register(
            "membership_packets_sent",
            "Membership datagrams sent",
            m.packets_sent.clone(),
        );
        r.register(
            "membership_packets_received",
            "Membership datagrams received, by result",
            m.packets_received.clone(),
        );
        r.register(
            "membership_fallback",
            "1 while the live speakers are taken from Node readiness because no heartbeat was accepted",
            m.fallback.clone(),
        );
        r.register(
            "membership_probes_sent",
            "Probes sent to peers silent for longer than three heartbeat intervals",
            m.probes_sent.clone(),
        );
        r.register(
            "membership_peer_deaths",
            "Peers seen dying, by cause: left (Leave received), ended (process gone, from its kernel), silent",
            m.peer_deaths.clone(),
        );
        r.register(
            "membership_slowness",
            "How many times the silence timeouts are stretched, minus one, because this speaker's own timers fire late",
            m.slowness.clone(),
        );
        r.register(
            "membership_fenced",
            "1 while this speaker answers for no address because its heartbeats were late enough for peers to take over",
            m.fenced.clone(),
        );
        r.register(
            "membership_fences",
            "Times this speaker stopped answering because its heartbeats were late",
            m.fences.clone(),
        );
        r.register(
            "membership_lifelines",
            "Peers whose speaker holds a lifeline connection from this one (its kernel closes it when the process dies)",
            m.lifelines.clone(),
        );
        r.register(
            "membership_watching",
            "Peers this speaker watches (heartbeat silence, lifeline, probes) and reports on to the others",
            m.watching.clone(),
        );
        m
    }

    /// Counts a peer's death under `cause`.
    pub(crate) fn died(&self, cause: &'static str) {
        self.peer_deaths.get_or_create(&CauseLabels { cause }).inc();
    }

    /// Counts a received datagram under `result`.
    pub(crate) fn received(&self, result: &'static str) {
        self.packets_received
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Number of received datagrams counted under `result`.
    pub fn received_count(&self, result: &'static str) -> u64 {
        self.packets_received
            .get(&ResultLabels { result })
            .map_or(0, |c| c.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.live_peers.set(2);
        m.packets_sent.inc();
        m.received("accepted");
        m.received("bad_mac");
        m.fallback.set(1);
        m.probes_sent.inc();
        m.died("ended");
        m.slowness.set(3);
        m.fenced.set(1);
        m.fences.inc();
        m.lifelines.set(2);
        m.watching.set(4);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "ferrolb_speaker_live_peers 2",
            "ferrolb_speaker_membership_packets_sent_total 1",
            "ferrolb_speaker_membership_packets_received_total{result=\"accepted\"} 1",
            "ferrolb_speaker_membership_packets_received_total{result=\"bad_mac\"} 1",
            "ferrolb_speaker_membership_fallback 1",
            "ferrolb_speaker_membership_probes_sent_total 1",
            "ferrolb_speaker_membership_peer_deaths_total{cause=\"ended\"} 1",
            "ferrolb_speaker_membership_slowness 3",
            "ferrolb_speaker_membership_fenced 1",
            "ferrolb_speaker_membership_fences_total 1",
            "ferrolb_speaker_membership_lifelines 2",
            "ferrolb_speaker_membership_watching 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert_eq!(m.received_count("accepted"), 1);
        assert_eq!(m.received_count("stale"), 0);
    }
}
