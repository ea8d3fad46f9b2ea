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
        m
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
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "ferrolb_speaker_live_peers 2",
            "ferrolb_speaker_membership_packets_sent_total 1",
            "ferrolb_speaker_membership_packets_received_total{result=\"accepted\"} 1",
            "ferrolb_speaker_membership_packets_received_total{result=\"bad_mac\"} 1",
            "ferrolb_speaker_membership_fallback 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert_eq!(m.received_count("accepted"), 1);
        assert_eq!(m.received_count("stale"), 0);
    }
}
