//! The controller's own counters (`/metrics`) at the end of a phase: writes by object, errors,
//! inputs processed and allocations.

use serde::Serialize;

use super::super::procfs::round3;

/// The controller's own counters at the end of a phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ControllerMetrics {
    /// Service status writes that succeeded.
    pub service_writes: f64,
    /// Events written.
    pub event_writes: f64,
    /// Pool status writes.
    pub pool_writes: f64,
    /// Failed writes of any kind.
    pub write_errors: f64,
    /// Inputs processed by the state machine.
    pub reconcile_count: f64,
    /// Time spent processing them.
    pub reconcile_sum_s: f64,
    /// New assignments.
    pub allocations: f64,
}

impl ControllerMetrics {
    /// Reads the controller's `/metrics` text.
    pub fn parse(text: &str) -> ControllerMetrics {
        let mut m = ControllerMetrics::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if let Some(labels) = name.strip_prefix("ferrolb_controller_writes_total") {
                if labels.contains("result=\"error\"") {
                    m.write_errors += value;
                } else if labels.contains("object=\"service\"") {
                    m.service_writes += value;
                } else if labels.contains("object=\"event\"") {
                    m.event_writes += value;
                } else if labels.contains("object=\"pool\"") {
                    m.pool_writes += value;
                }
            } else if name == "ferrolb_controller_reconcile_seconds_count" {
                m.reconcile_count = value;
            } else if name == "ferrolb_controller_reconcile_seconds_sum" {
                m.reconcile_sum_s = value;
            } else if name == "ferrolb_controller_allocations_total" {
                m.allocations = value;
            }
        }
        m
    }

    /// Every write, successful or not.
    pub fn all_writes(&self) -> f64 {
        self.service_writes + self.event_writes + self.pool_writes + self.write_errors
    }

    /// Turns totals into what happened since `before`.
    pub fn subtract(&mut self, before: &ControllerMetrics) {
        self.service_writes -= before.service_writes;
        self.event_writes -= before.event_writes;
        self.pool_writes -= before.pool_writes;
        self.write_errors -= before.write_errors;
        self.reconcile_count -= before.reconcile_count;
        self.reconcile_sum_s = round3(self.reconcile_sum_s - before.reconcile_sum_s);
        self.allocations -= before.allocations;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_metrics_are_read_from_the_exposition() {
        let text = "# HELP x\n\
            ferrolb_controller_writes_total{object=\"service\",result=\"ok\"} 10\n\
            ferrolb_controller_writes_total{object=\"event\",result=\"ok\"} 7\n\
            ferrolb_controller_writes_total{object=\"pool\",result=\"ok\"} 3\n\
            ferrolb_controller_writes_total{object=\"service\",result=\"error\"} 1\n\
            ferrolb_controller_reconcile_seconds_sum 0.5\n\
            ferrolb_controller_reconcile_seconds_count 42\n\
            ferrolb_controller_allocations_total 10\n";
        let m = ControllerMetrics::parse(text);
        assert_eq!(
            (
                m.service_writes,
                m.event_writes,
                m.pool_writes,
                m.write_errors
            ),
            (10.0, 7.0, 3.0, 1.0)
        );
        assert_eq!(
            (m.reconcile_count, m.reconcile_sum_s, m.allocations),
            (42.0, 0.5, 10.0)
        );
        assert_eq!(m.all_writes(), 21.0);
    }
}
