//! What the membership task sends: heartbeats to this speaker's observers, Reports and Joins
//! to every peer a few times over (loss must not hide a death vote), answers to one peer, and
//! Leave.

use std::net::SocketAddr;
use std::time::Duration;

use tracing::debug;

use super::Task;
use crate::membership::packet::{Kind, Report};

/// How many times a Report or Join goes to every peer: at once and on the next two ticks. A
/// datagram dropped with probability p is then missed with p³ (10⁻³ at 10 % loss).
const BROADCAST_SENDS: u8 = 3;
/// How many times [`Task::send_leave`] sends Leave to every peer.
const LEAVE_REPEATS: usize = 3;
/// Pause between the Leave repeats.
const LEAVE_GAP: Duration = Duration::from_millis(5);

/// A message for one peer.
#[derive(Clone, Debug)]
pub(in crate::membership) enum Unicast {
    /// The answer to a Probe.
    Alive,
    /// One of this speaker's death votes, for a peer that joined.
    Report(Report),
}

/// A message for every peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::membership) enum Broadcast {
    /// This speaker is live (start, or refuting a report of its death).
    Join,
    /// A vote, or taking one back.
    Report(Report),
}

/// Broadcasts still to be sent, each a few more times.
#[derive(Debug, Default)]
pub(in crate::membership) struct Outbox {
    pending: Vec<(Broadcast, u8)>,
    due: bool,
}

impl Outbox {
    /// Queues `message`, sent at once and on the next ticks; it replaces a pending message of
    /// the same kind on the same subject.
    pub(in crate::membership) fn queue(&mut self, message: Broadcast) {
        self.pending.retain(|(m, _)| !same_topic(m, &message));
        self.pending.push((message, BROADCAST_SENDS));
        self.due = true;
    }

    /// Whether a round is due now.
    pub(in crate::membership) fn due(&self) -> bool {
        self.due
    }

    /// A heartbeat tick: the next round of what is pending is due.
    pub(in crate::membership) fn tick(&mut self) {
        self.due = !self.pending.is_empty();
    }

    /// The messages of this round; each is dropped after its last send.
    fn round(&mut self) -> Vec<Broadcast> {
        self.due = false;
        let round = self.pending.iter().map(|(m, _)| m.clone()).collect();
        for (_, left) in &mut self.pending {
            *left -= 1;
        }
        self.pending.retain(|(_, left)| *left > 0);
        round
    }
}

fn same_topic(a: &Broadcast, b: &Broadcast) -> bool {
    match (a, b) {
        (Broadcast::Join, Broadcast::Join) => true,
        (Broadcast::Report(a), Broadcast::Report(b)) => a.subject == b.subject,
        _ => false,
    }
}

impl Task {
    /// An Alive to each of this speaker's observers.
    pub(super) async fn send_heartbeats(&mut self) {
        let targets: Vec<SocketAddr> = self
            .view
            .observers()
            .into_iter()
            .filter_map(|name| self.peers.get(name).copied())
            .collect();
        if let Some(datagram) = self.signer.sign(Kind::Alive, self.socket.unix_ms()) {
            self.send_to_each(&datagram, &targets).await;
        }
    }

    /// This round of the outbox, to every peer.
    pub(super) async fn flush_outbox(&mut self) {
        let targets: Vec<SocketAddr> = self.peers.values().copied().collect();
        for message in self.outbox.round() {
            let datagram = match message {
                Broadcast::Join => self.signer.sign(Kind::Join, self.socket.unix_ms()),
                Broadcast::Report(report) => self.signer.sign_report(report, self.socket.unix_ms()),
            };
            if let Some(datagram) = datagram {
                self.send_to_each(&datagram, &targets).await;
            }
        }
    }

    /// The queued messages for one peer each.
    pub(super) async fn send_unicasts(&mut self) {
        for (unicast, addr) in std::mem::take(&mut self.unicasts) {
            let datagram = match unicast {
                Unicast::Alive => self.signer.sign(Kind::Alive, self.socket.unix_ms()),
                Unicast::Report(report) => self.signer.sign_report(report, self.socket.unix_ms()),
            };
            if let Some(datagram) = datagram {
                self.send_to_each(&datagram, &[addr]).await;
            }
        }
    }

    /// A Probe to each of `targets`.
    pub(super) async fn send_probes(&mut self, targets: &[SocketAddr]) {
        self.metrics.probes_sent.inc_by(targets.len() as u64);
        if let Some(datagram) = self.signer.sign(Kind::Probe, self.socket.unix_ms()) {
            self.send_to_each(&datagram, targets).await;
        }
    }

    /// Leave to every peer, [`LEAVE_REPEATS`] times a few ms apart.
    pub(super) async fn send_leave(&mut self) {
        let targets: Vec<SocketAddr> = self.peers.values().copied().collect();
        for i in 0..LEAVE_REPEATS {
            if i > 0 {
                tokio::time::sleep(LEAVE_GAP).await;
            }
            if let Some(datagram) = self.signer.sign(Kind::Leave, self.socket.unix_ms()) {
                self.send_to_each(&datagram, &targets).await;
            }
        }
    }

    async fn send_to_each(&mut self, datagram: &[u8], targets: &[SocketAddr]) {
        for addr in targets {
            match self.socket.send_to(datagram, *addr).await {
                Ok(_) => {
                    self.metrics.packets_sent.inc();
                }
                Err(e) => {
                    if let Some(suppressed) = self.io_log.allow(crate::membership::now()) {
                        debug!(%addr, error = %e, suppressed, "membership send failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(subject: &str, dead: bool) -> Broadcast {
        Broadcast::Report(Report {
            subject: subject.into(),
            dead,
            boot_id: 1,
            clock_ms: 2,
        })
    }

    #[test]
    fn each_broadcast_goes_out_at_once_and_on_the_next_two_ticks() {
        let mut o = Outbox::default();
        assert!(!o.due());
        o.queue(report("x", true));
        assert!(o.due());
        assert_eq!(o.round(), [report("x", true)]);
        assert!(!o.due(), "not again before the next tick");
        o.tick();
        assert_eq!(o.round(), [report("x", true)]);
        o.tick();
        assert_eq!(o.round(), [report("x", true)]);
        o.tick();
        assert!(!o.due());
        assert!(o.round().is_empty());
    }

    #[test]
    fn a_newer_message_on_the_same_subject_replaces_the_pending_one() {
        let mut o = Outbox::default();
        o.queue(report("x", true));
        o.queue(report("y", true));
        o.queue(Broadcast::Join);
        assert_eq!(o.round().len(), 3);
        o.queue(report("x", false));
        o.queue(Broadcast::Join);
        let round = o.round();
        assert_eq!(
            round,
            [report("y", true), report("x", false), Broadcast::Join]
        );
    }
}
