//! The controller's Prometheus metrics.

use std::sync::atomic::AtomicU64;

use ferrolb_crds::Family as AddressFamily;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ipam::Allocator;

/// Labels of per-pool gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Pool name.
    pub pool: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
}

/// Labels of failure counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// CamelCase reason, as in the Service condition.
    pub reason: String,
}

/// Labels of write counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `service`, `pool` or `event`.
    pub object: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Every controller metric.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Addresses per pool and family (held + free).
    pub pool_capacity: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    /// Held addresses per pool and family.
    pub pool_in_use: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    /// New assignments.
    pub allocations: Counter,
    /// Failed allocations by reason (counted once per distinct failure of a Service).
    pub failures: Family<ReasonLabels, Counter>,
    /// Services waiting for addresses.
    pub waiting: Gauge,
    /// Services holding addresses.
    pub assigned: Gauge,
    /// Time to process one watch event or write result, in seconds.
    pub reconcile_seconds: Histogram,
    /// Writes by object kind and result.
    pub writes: Family<WriteLabels, Counter>,
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// Pools refused (their Valid condition says why).
    pub pools_invalid: Gauge,
}

impl Metrics {
    /// Metrics registered in `registry` under `ferrolb_controller_*`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            pool_capacity: Family::default(),
            pool_in_use: Family::default(),
            allocations: Counter::default(),
            failures: Family::default(),
            waiting: Gauge::default(),
            assigned: Gauge::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.000_05, 4.0, 10)),
            writes: Family::default(),
            leader: Gauge::default(),
            pools_invalid: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("ferrolb_controller");
        r.register(
            "pool_addresses",
            "Addresses of a pool (held and free) per family",
            m.pool_capacity.clone(),
        );
        r.register(
            "pool_addresses_in_use",
            "Addresses of a pool held by Services, per family",
            m.pool_in_use.clone(),
        );
        r.register(
            "allocations",
            "New address assignments",
            m.allocations.clone(),
        );
        r.register(
            "allocation_failures",
            "Failed allocations by reason",
            m.failures.clone(),
        );
        r.register(
            "services_waiting",
            "LoadBalancer Services waiting for an address",
            m.waiting.clone(),
        );
        r.register(
            "services_assigned",
            "LoadBalancer Services holding addresses",
            m.assigned.clone(),
        );
        r.register(
            "reconcile_seconds",
            "Time to process one watch event or write result",
            m.reconcile_seconds.clone(),
        );
        r.register(
            "writes",
            "API writes by object and result",
            m.writes.clone(),
        );
        r.register("leader", "1 while this replica leads", m.leader.clone());
        r.register(
            "pools_invalid",
            "IPAddressPools refused (addresses that do not parse, a bad annotation, overlap with another pool); each says why in its Valid condition",
            m.pools_invalid.clone(),
        );
        m
    }

    /// Updates the pool gauges from the allocator.
    pub fn observe_pools(&self, alloc: &Allocator) {
        self.pools_invalid.set(alloc.problems().len() as i64);
        self.pool_capacity.clear();
        self.pool_in_use.clear();
        for pool in alloc.pools() {
            for family in [AddressFamily::V4, AddressFamily::V6] {
                if !pool.has_family(family) {
                    continue;
                }
                let labels = PoolLabels {
                    pool: pool.name().to_string(),
                    family: match family {
                        AddressFamily::V4 => "ipv4",
                        AddressFamily::V6 => "ipv6",
                    }
                    .into(),
                };
                let used = pool.assigned(family) as f64;
                let free = pool.available(family) as f64;
                self.pool_capacity.get_or_create(&labels).set(used + free);
                self.pool_in_use.get_or_create(&labels).set(used);
            }
        }
    }

    /// Counts one write.
    pub fn write(&self, object: &str, ok: bool) {
        self.writes
            .get_or_create(&WriteLabels {
                object: object.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
    }
}
