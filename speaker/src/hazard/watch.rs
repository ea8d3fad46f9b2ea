//! Checks the node's kernel every few seconds, on every address change (netlink) and whenever
//! the handled addresses change, and reports what [`super::kernel_answers`] finds: a Warning log
//! line per new (address, interface), the `kernel_answered_addresses{family,interface}` gauge,
//! and a Warning Event on each Service concerned (`KernelAnswersForAddress`), repeated while it
//! lasts so `kubectl events` keeps showing it. When it is gone: one log line, the gauge series
//! removed, and a Normal Event (`KernelNoLongerAnswers`).
//!
//! ```text
//!  run loop ──update(Handled)──┐
//!  netlink address events ─────┼─> read::kernel_state ─> kernel_answers ─> Reporter::step
//!  tick (--kernel-check-interval)┘      (blocking pool)       (pure)         (pure) ─> logs,
//!                                                                            gauge, Events
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ferrolb_crds::contract::{action, field_manager, reason};
use ferrolb_runtime::events::{EventRecorder, ServiceEvent};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{Hazard, kernel_answers, read};
use crate::metrics::{KernelLabels, Metrics};
use crate::netio::link_events::LinkEvents;
use crate::plan::ServiceKey;
use crate::status_writer::record_event;

/// A Warning Event is repeated this often while its hazard lasts (Events expire after an hour
/// by default).
pub const REPEAT_EVENT: Duration = Duration::from_secs(30 * 60);

/// What the speaker handles: every address of a group some pool holds (owned here or not),
/// with its Services, and the interfaces this speaker answers on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    /// Addresses and the Services holding them.
    pub ips: BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
    /// Interfaces answered on.
    pub interfaces: Vec<String>,
}

/// What changed in [`Handled`]: the run loop sends only this, so a step costs what it changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandledChange {
    /// Addresses handled now (new, or with other Services).
    pub upserted: BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
    /// Addresses no longer handled.
    pub removed: BTreeSet<IpAddr>,
    /// The interfaces answered on, when they changed.
    pub interfaces: Option<Vec<String>>,
}

impl HandledChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty() && self.interfaces.is_none()
    }

    /// Applies the change to `handled`.
    pub fn apply_to(self, handled: &mut Handled) {
        for ip in &self.removed {
            handled.ips.remove(ip);
        }
        handled.ips.extend(self.upserted);
        if let Some(interfaces) = self.interfaces {
            handled.interfaces = interfaces;
        }
    }
}

/// The running check; dropping it stops it.
#[derive(Debug)]
pub struct KernelWatch {
    changes: mpsc::UnboundedSender<HandledChange>,
    task: JoinHandle<()>,
}

impl Drop for KernelWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KernelWatch {
    /// Starts checking every `interval` for `node`, writing Events through `client`.
    pub fn start(
        node: String,
        interval: Duration,
        client: Client,
        services: Store<Service>,
        metrics: Metrics,
    ) -> KernelWatch {
        let (changes, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(node, interval, client, services, metrics, rx));
        KernelWatch { changes, task }
    }

    /// Checks against the handled addresses changed by `change` from now on (at once).
    pub fn update(&self, change: HandledChange) {
        // An error means the task ended; there is nothing left to tell.
        let _ = self.changes.send(change);
    }
}

async fn run(
    node: String,
    interval: Duration,
    client: Client,
    services: Store<Service>,
    metrics: Metrics,
    mut changes: mpsc::UnboundedReceiver<HandledChange>,
) {
    let mut handled = Handled::default();
    let events = match LinkEvents::open() {
        Ok(e) => Some(e),
        Err(e) => {
            warn!(error = %e, "no netlink notifications for the kernel check; checking every {interval:?} only");
            None
        }
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let recorder = EventRecorder::new(client, field_manager::SPEAKER, node.clone());
    let mut reporter = Reporter::default();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            change = changes.recv() => match change {
                Some(change) => change.apply_to(&mut handled),
                None => return,
            },
            r = address_change(events.as_ref()) => if r.is_err() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            },
        }
        // Bursts of address notifications (pods starting) cost one check per MIN_GAP at most.
        let next_allowed = tokio::time::Instant::now() + MIN_GAP;
        while let Ok(change) = changes.try_recv() {
            change.apply_to(&mut handled);
        }
        let hazards = if handled.ips.is_empty() || handled.interfaces.is_empty() {
            Vec::new()
        } else {
            let ips: BTreeSet<IpAddr> = handled.ips.keys().copied().collect();
            let interfaces = handled.interfaces.clone();
            let read = tokio::task::spawn_blocking(move || {
                read::kernel_state(&interfaces, &ips).map(|s| kernel_answers(&s, &interfaces, &ips))
            })
            .await;
            match read {
                Ok(Ok(h)) => {
                    failing = false;
                    h
                }
                Ok(Err(e)) => {
                    metrics.kernel_check_errors.inc();
                    if !failing {
                        warn!(node = %node, error = %e, "reading the node's addresses and ARP sysctls failed; the kernel check retries");
                        failing = true;
                    }
                    tokio::time::sleep_until(next_allowed).await;
                    continue;
                }
                Err(_) => {
                    tokio::time::sleep_until(next_allowed).await;
                    continue;
                }
            }
        };
        let step = reporter.step(&node, hazards, &handled, Instant::now());
        for h in &step.new {
            warn!(
                node = %node,
                ip = %h.ip,
                interface = %h.interface,
                family = h.family(),
                "{}",
                h.message(&node)
            );
        }
        for h in &step.gone {
            info!(
                node = %node,
                ip = %h.ip,
                interface = %h.interface,
                family = h.family(),
                "{node}'s kernel no longer answers for {} on {}",
                h.ip,
                h.interface
            );
        }
        for labels in &step.gauge_removed {
            metrics.kernel_answered.remove(labels);
        }
        for (labels, n) in &step.gauge {
            metrics.kernel_answered.get_or_create(labels).set(*n);
        }
        for event in step.events {
            let service = event.service;
            let uid = services
                .get(&ObjectRef::new(&service.name).within(&service.namespace))
                .and_then(|s| s.uid());
            let (recorder, metrics) = (recorder.clone(), metrics.clone());
            tokio::spawn(async move {
                record_event(
                    &recorder,
                    &metrics,
                    &ServiceEvent {
                        service: &service,
                        uid: uid.as_deref(),
                        warning: event.warning,
                        reason: if event.warning {
                            reason::KERNEL_ANSWERS_FOR_ADDRESS
                        } else {
                            reason::KERNEL_NO_LONGER_ANSWERS
                        },
                        action: action::CHECK_KERNEL,
                        note: &event.note,
                    },
                )
                .await;
            });
        }
        tokio::time::sleep_until(next_allowed).await;
    }
}

/// Least time between two checks.
const MIN_GAP: Duration = Duration::from_millis(250);

/// The next address or link change, or never without a subscription.
async fn address_change(events: Option<&LinkEvents>) -> std::io::Result<()> {
    match events {
        Some(e) => e.changed().await,
        None => std::future::pending().await,
    }
}

/// An Event to write about a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventToWrite {
    /// `namespace/name`.
    pub service: ServiceKey,
    /// Warning (the kernel answers) or Normal (no longer).
    pub warning: bool,
    /// The message.
    pub note: String,
}

/// What one check changes.
#[derive(Debug, Default)]
pub struct Step {
    /// Hazards not reported before.
    pub new: Vec<Hazard>,
    /// Hazards reported before and gone now.
    pub gone: Vec<Hazard>,
    /// Gauge values: distinct addresses per family and interface.
    pub gauge: Vec<(KernelLabels, i64)>,
    /// Gauge series to remove.
    pub gauge_removed: Vec<KernelLabels>,
    /// Events to write.
    pub events: Vec<EventToWrite>,
}

/// What was reported so far (pure state machine over successive checks).
#[derive(Debug, Default)]
pub struct Reporter {
    reported: BTreeMap<(IpAddr, String), Hazard>,
    /// Per Service: the last Warning note written and when.
    warned: BTreeMap<ServiceKey, (String, Instant)>,
    gauge: BTreeSet<(&'static str, String)>,
}

impl Reporter {
    /// Compares `hazards` (the check's result, for `handled`) with what was reported.
    pub fn step(
        &mut self,
        node: &str,
        hazards: Vec<Hazard>,
        handled: &Handled,
        now: Instant,
    ) -> Step {
        let mut step = Step::default();
        let current: BTreeMap<(IpAddr, String), Hazard> = hazards
            .into_iter()
            .map(|h| ((h.ip, h.interface.clone()), h))
            .collect();
        for (key, h) in &current {
            if self.reported.get(key) != Some(h) {
                step.new.push(h.clone());
            }
        }
        for (key, h) in &self.reported {
            if !current.contains_key(key) {
                step.gone.push(h.clone());
            }
        }

        let mut counts: BTreeMap<(&'static str, String), BTreeSet<IpAddr>> = BTreeMap::new();
        for h in current.values() {
            counts
                .entry((h.family(), h.interface.clone()))
                .or_default()
                .insert(h.ip);
        }
        for key in &self.gauge {
            if !counts.contains_key(key) {
                step.gauge_removed.push(labels(key));
            }
        }
        step.gauge = counts
            .iter()
            .map(|(key, ips)| (labels(key), ips.len() as i64))
            .collect();
        self.gauge = counts.into_keys().collect();

        // One Event per Service, naming every hazard of its addresses.
        let mut notes: BTreeMap<&ServiceKey, Vec<String>> = BTreeMap::new();
        for h in current.values() {
            for svc in handled.ips.get(&h.ip).into_iter().flatten() {
                notes.entry(svc).or_default().push(h.message(node));
            }
        }
        for (svc, messages) in &notes {
            let note = messages.join(" ");
            let due = match self.warned.get(*svc) {
                Some((last, at)) => *last != note || now.duration_since(*at) >= REPEAT_EVENT,
                None => true,
            };
            if due {
                self.warned.insert((*svc).clone(), (note.clone(), now));
                step.events.push(EventToWrite {
                    service: (*svc).clone(),
                    warning: true,
                    note,
                });
            }
        }
        let handled_services: BTreeSet<&ServiceKey> = handled.ips.values().flatten().collect();
        let cleared: Vec<ServiceKey> = self
            .warned
            .keys()
            .filter(|svc| !notes.contains_key(svc))
            .cloned()
            .collect();
        for svc in cleared {
            self.warned.remove(&svc);
            // A Service no longer handled (deleted, or its address gone) gets no Event.
            if handled_services.contains(&svc) {
                step.events.push(EventToWrite {
                    note: format!(
                        "{node}'s kernel no longer answers ARP/NDP itself for the addresses of \
                         this Service"
                    ),
                    service: svc,
                    warning: false,
                });
            }
        }
        self.reported = current;
        step
    }
}

fn labels((family, interface): &(&'static str, String)) -> KernelLabels {
    KernelLabels {
        family,
        interface: interface.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Cause;
    use super::*;

    fn hazard(ip: &str, interface: &str) -> Hazard {
        let ip: IpAddr = ip.parse().unwrap();
        Hazard {
            ip,
            interface: interface.into(),
            cause: if ip.is_ipv4() {
                Cause::Arp {
                    configured_on: vec![("lo".into(), 32)],
                    arp_ignore_all: 0,
                    arp_ignore_interface: 0,
                    arp_filter: false,
                }
            } else {
                Cause::Ndp { prefix_len: 128 }
            },
        }
    }

    fn handled(pairs: &[(&str, &str)]) -> Handled {
        let mut h = Handled {
            interfaces: vec!["eth0".into()],
            ..Default::default()
        };
        for (ip, svc) in pairs {
            h.ips
                .entry(ip.parse().unwrap())
                .or_default()
                .insert(svc.parse().unwrap());
        }
        h
    }

    const V4: &str = "198.51.100.200";
    const V6: &str = "2001:db8:1::200";

    #[test]
    fn a_hazard_is_reported_once_then_cleared_once() {
        let mut r = Reporter::default();
        let h = handled(&[(V4, "ns/web")]);
        let t0 = Instant::now();
        let s = r.step("node2", vec![hazard(V4, "eth0")], &h, t0);
        assert_eq!(s.new.len(), 1);
        assert_eq!(s.events.len(), 1);
        assert!(s.events[0].warning && s.events[0].service.to_string() == "ns/web");
        assert!(
            s.events[0]
                .note
                .starts_with("node2's kernel answers ARP for 198.51.100.200")
        );
        assert_eq!(s.gauge.len(), 1);
        assert_eq!(s.gauge[0].0.family, "ipv4");
        assert_eq!(s.gauge[0].1, 1);

        // Unchanged: nothing new, no Event, the gauge stays.
        let s = r.step(
            "node2",
            vec![hazard(V4, "eth0")],
            &h,
            t0 + Duration::from_secs(5),
        );
        assert!(s.new.is_empty() && s.gone.is_empty() && s.events.is_empty());
        assert_eq!(s.gauge.len(), 1);

        // Still there after REPEAT_EVENT: the Warning again.
        let s = r.step("node2", vec![hazard(V4, "eth0")], &h, t0 + REPEAT_EVENT);
        assert_eq!(s.events.len(), 1);
        assert!(s.new.is_empty());

        // Gone: one log, the series removed, a Normal Event.
        let s = r.step(
            "node2",
            vec![],
            &h,
            t0 + REPEAT_EVENT + Duration::from_secs(5),
        );
        assert_eq!(s.gone.len(), 1);
        assert!(s.gauge.is_empty());
        assert_eq!(s.gauge_removed.len(), 1);
        assert_eq!(s.events.len(), 1);
        assert!(!s.events[0].warning);
        let s = r.step(
            "node2",
            vec![],
            &h,
            t0 + REPEAT_EVENT + Duration::from_secs(10),
        );
        assert!(s.gone.is_empty() && s.events.is_empty() && s.gauge_removed.is_empty());
    }

    #[test]
    fn one_event_per_service_naming_all_its_hazards() {
        let mut r = Reporter::default();
        let h = handled(&[(V4, "ns/web"), (V6, "ns/web"), (V4, "ns/shared")]);
        let s = r.step(
            "node1",
            vec![hazard(V4, "eth0"), hazard(V4, "eth1"), hazard(V6, "eth0")],
            &h,
            Instant::now(),
        );
        assert_eq!(s.new.len(), 3);
        let web = s
            .events
            .iter()
            .find(|e| e.service.to_string() == "ns/web")
            .unwrap();
        assert_eq!(web.note.matches("node1's kernel answers").count(), 3);
        let shared = s
            .events
            .iter()
            .find(|e| e.service.to_string() == "ns/shared")
            .unwrap();
        assert_eq!(shared.note.matches("node1's kernel answers").count(), 2);
        let gauge: Vec<(&str, &str, i64)> = s
            .gauge
            .iter()
            .map(|(l, n)| (l.family, l.interface.as_str(), *n))
            .collect();
        assert_eq!(
            gauge,
            vec![
                ("ipv4", "eth0", 1),
                ("ipv4", "eth1", 1),
                ("ipv6", "eth0", 1)
            ]
        );
    }

    #[test]
    fn a_changed_cause_is_new_and_a_deleted_service_gets_no_event() {
        let mut r = Reporter::default();
        let h = handled(&[(V4, "ns/web")]);
        let t = Instant::now();
        r.step("n", vec![hazard(V4, "eth0")], &h, t);
        let mut other = hazard(V4, "eth0");
        other.cause = Cause::Arp {
            configured_on: vec![("kube-ipvs0".into(), 32)],
            arp_ignore_all: 0,
            arp_ignore_interface: 0,
            arp_filter: false,
        };
        let s = r.step("n", vec![other], &h, t);
        assert_eq!(s.new.len(), 1);
        assert_eq!(s.events.len(), 1, "the message changed");
        // The Service is deleted: the hazard is gone with it, silently as far as Events go.
        let s = r.step("n", vec![], &Handled::default(), t);
        assert_eq!(s.gone.len(), 1);
        assert!(s.events.is_empty());
    }
}
