//! The speaker's Prometheus metrics (prefix `ferrolb_speaker_`). Membership's own live-peer and
//! packet metrics are registered by [`crate::membership::Metrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of per-address series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IpLabels {
    /// The announced address.
    pub ip: String,
}

/// Labels of per-protocol series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// `arp` or `ndp`.
    pub protocol: &'static str,
}

/// Labels of dropped-frame series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// Why the frame was dropped (a [`crate::wire::WireError::metric_label`]).
    pub reason: &'static str,
}

/// Labels of API write series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `status` or `event`.
    pub object: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of the kernel-answers series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KernelLabels {
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// The interface the kernel answers on.
    pub interface: String,
}

/// Labels of the missing-capability series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapabilityLabels {
    /// `CAP_NET_RAW`.
    pub capability: &'static str,
}

/// Every speaker metric. Cheap to clone (all handles share their values).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Requests (ARP requests, neighbour solicitations) received for an owned address.
    pub requests: Family<IpLabels, Counter>,
    /// Replies and advertisements sent in answer.
    pub replies: Family<IpLabels, Counter>,
    /// Gratuitous ARPs and unsolicited advertisements sent.
    pub gratuitous: Family<IpLabels, Counter>,
    /// Requests for addresses this node does not announce.
    pub not_owned: Family<ProtocolLabels, Counter>,
    /// Frames that are not valid requests.
    pub dropped: Family<DropLabels, Counter>,
    /// Another host announced an address this node owns.
    pub conflicts: Family<IpLabels, Counter>,
    /// Send errors.
    pub send_errors: Counter,
    /// Addresses this node announces.
    pub owned_ips: Gauge,
    /// Addresses this node started or stopped announcing.
    pub ownership_changes: Counter,
    /// Requests not answered because the fence was closed (`fenced_requests_total`).
    pub fenced_requests: Counter,
    /// Interfaces answered on.
    pub interfaces: Gauge,
    /// API writes (only on ownership changes).
    pub writes: Family<WriteLabels, Counter>,
    /// LoadBalancer addresses this node's kernel would answer ARP/NDP for itself, per family and
    /// interface (see [`crate::hazard`]); absent while there are none.
    pub kernel_answered: Family<KernelLabels, Gauge>,
    /// Reads of the node's addresses and sysctls that failed.
    pub kernel_check_errors: Counter,
    /// 1 while the speaker lacks a capability it needs (and so answers nothing).
    pub missing_capability: Family<CapabilityLabels, Gauge>,
    /// Services this speaker reports as announced by nobody.
    pub services_unannounced: Gauge,
    /// BGP sessions (`ferrolb_speaker_bgp_*`).
    pub bgp: crate::bgp::metrics::BgpMetrics,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("ferrolb_speaker");
        r.register(
            "requests_received",
            "ARP requests and neighbour solicitations received for an owned address",
            m.requests.clone(),
        );
        r.register(
            "replies_sent",
            "ARP replies and neighbour advertisements sent in answer",
            m.replies.clone(),
        );
        r.register(
            "gratuitous_sent",
            "Gratuitous ARPs and unsolicited neighbour advertisements sent",
            m.gratuitous.clone(),
        );
        r.register(
            "requests_not_owned",
            "Requests for addresses this node does not announce",
            m.not_owned.clone(),
        );
        r.register(
            "frames_dropped",
            "Frames that are not valid requests, by reason",
            m.dropped.clone(),
        );
        r.register(
            "address_conflicts",
            "Announcements by another host of an address this node owns",
            m.conflicts.clone(),
        );
        r.register(
            "send_errors",
            "Frames that could not be sent",
            m.send_errors.clone(),
        );
        r.register(
            "owned_ips",
            "Addresses this node announces",
            m.owned_ips.clone(),
        );
        r.register(
            "ownership_changes",
            "Addresses this node started or stopped announcing",
            m.ownership_changes.clone(),
        );
        r.register(
            "fenced_requests",
            "Requests for owned addresses left unanswered while this speaker was fenced (its heartbeats were late)",
            m.fenced_requests.clone(),
        );
        r.register("interfaces", "Interfaces answered on", m.interfaces.clone());
        r.register(
            "api_writes",
            "Kubernetes API writes, by object and result",
            m.writes.clone(),
        );
        r.register(
            "kernel_answered_addresses",
            "LoadBalancer addresses this node's kernel answers ARP/NDP for itself on an \
             interface the speaker announces on (configured on an interface, e.g. kube-ipvs0 \
             without strictARP); should be absent",
            m.kernel_answered.clone(),
        );
        r.register(
            "kernel_check_errors",
            "Failed reads of the node's addresses and ARP/NDP sysctls",
            m.kernel_check_errors.clone(),
        );
        r.register(
            "missing_capability",
            "1 while the speaker lacks a capability it needs and answers nothing",
            m.missing_capability.clone(),
        );
        r.register(
            "services_unannounced",
            "LoadBalancer Services with addresses that no node announces, as reported by this speaker (one speaker reports each such Service: sum over speakers)",
            m.services_unannounced.clone(),
        );
        let bgp = crate::bgp::metrics::BgpMetrics::register(r);
        Metrics { bgp, ..m }
    }

    /// The per-address counters for `ip`, resolved once so the packet path does not hash labels.
    pub fn for_ip(&self, ip: std::net::IpAddr) -> IpCounters {
        let labels = IpLabels { ip: ip.to_string() };
        IpCounters {
            requests: self.requests.get_or_create(&labels).clone(),
            replies: self.replies.get_or_create(&labels).clone(),
            gratuitous: self.gratuitous.get_or_create(&labels).clone(),
        }
    }
}

/// Counters of one announced address.
#[derive(Clone, Debug, Default)]
pub struct IpCounters {
    /// Requests received.
    pub requests: Counter,
    /// Replies sent.
    pub replies: Counter,
    /// Gratuitous packets sent.
    pub gratuitous: Counter,
}
