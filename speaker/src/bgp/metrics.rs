//! BGP metrics of the speaker (prefix `ferrolb_speaker_bgp_`), labelled by `BGPPeer` name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of every BGP metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The `BGPPeer`'s name.
    pub peer: String,
}

/// The families.
#[derive(Clone, Debug, Default)]
pub struct BgpMetrics {
    /// 1 while the session is Established.
    pub session_up: Family<PeerLabels, Gauge>,
    /// Prefixes the router holds from this node.
    pub announced_prefixes: Family<PeerLabels, Gauge>,
    /// UPDATE messages sent.
    pub updates_sent: Family<PeerLabels, Counter>,
    /// UPDATE messages received.
    pub updates_received: Family<PeerLabels, Counter>,
    /// NOTIFICATION messages sent.
    pub notifications_sent: Family<PeerLabels, Counter>,
    /// NOTIFICATION messages received.
    pub notifications_received: Family<PeerLabels, Counter>,
    /// 1 while the BFD session is Up.
    pub bfd_session_up: Family<PeerLabels, Gauge>,
}

/// One session's handles into [`BgpMetrics`].
#[derive(Clone, Debug, Default)]
pub struct SessionMetrics {
    /// See [`BgpMetrics::session_up`].
    pub up: Gauge,
    /// See [`BgpMetrics::announced_prefixes`].
    pub announced: Gauge,
    /// See [`BgpMetrics::updates_sent`].
    pub updates_sent: Counter,
    /// See [`BgpMetrics::updates_received`].
    pub updates_received: Counter,
    /// See [`BgpMetrics::notifications_sent`].
    pub notifications_sent: Counter,
    /// See [`BgpMetrics::notifications_received`].
    pub notifications_received: Counter,
    /// See [`BgpMetrics::bfd_session_up`].
    pub bfd_up: Gauge,
}

impl BgpMetrics {
    /// Registers the families in `registry` (already prefixed `ferrolb_speaker`).
    pub fn register(registry: &mut Registry) -> BgpMetrics {
        let m = BgpMetrics::default();
        let r = registry.sub_registry_with_prefix("bgp");
        r.register(
            "session_up",
            "1 while this node's BGP session with the peer is Established",
            m.session_up.clone(),
        );
        r.register(
            "announced_prefixes",
            "Prefixes the peer holds from this node",
            m.announced_prefixes.clone(),
        );
        r.register(
            "updates_sent",
            "UPDATE messages sent to the peer",
            m.updates_sent.clone(),
        );
        r.register(
            "updates_received",
            "UPDATE messages received from the peer",
            m.updates_received.clone(),
        );
        r.register(
            "notifications_sent",
            "NOTIFICATION messages sent to the peer",
            m.notifications_sent.clone(),
        );
        r.register(
            "notifications_received",
            "NOTIFICATION messages received from the peer",
            m.notifications_received.clone(),
        );
        r.register(
            "bfd_session_up",
            "1 while the BFD session with the peer is Up",
            m.bfd_session_up.clone(),
        );
        m
    }

    /// The handles of peer `peer`.
    pub fn session(&self, peer: &str) -> SessionMetrics {
        let l = PeerLabels {
            peer: peer.to_string(),
        };
        SessionMetrics {
            up: self.session_up.get_or_create(&l).clone(),
            announced: self.announced_prefixes.get_or_create(&l).clone(),
            updates_sent: self.updates_sent.get_or_create(&l).clone(),
            updates_received: self.updates_received.get_or_create(&l).clone(),
            notifications_sent: self.notifications_sent.get_or_create(&l).clone(),
            notifications_received: self.notifications_received.get_or_create(&l).clone(),
            bfd_up: self.bfd_session_up.get_or_create(&l).clone(),
        }
    }

    /// Drops the series of a peer this node no longer has.
    pub fn forget(&self, peer: &str) {
        let l = PeerLabels {
            peer: peer.to_string(),
        };
        self.session_up.remove(&l);
        self.announced_prefixes.remove(&l);
        self.bfd_session_up.remove(&l);
    }
}
