//! Gratuitous announcements: a burst of gratuitous ARP (request and reply form) or unsolicited
//! neighbour advertisements at the configured offsets after each takeover, again on an
//! interface that (re)appears and after peers rejoin, and a periodic refresh of everything owned
//! that keeps switch MAC tables and neighbour caches fresh.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use super::interfaces::LinkIo;
use super::{Announcer, Shared};
use crate::wire::{self, GratuitousKind};

/// Announces every owned address every `config.refresh`, for as long as the task runs.
pub(super) fn spawn_refresher(shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let period = shared.config.refresh;
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        loop {
            tick.tick().await;
            let ips: Vec<IpAddr> = shared.read_owned().by_ip().keys().copied().collect();
            for ip in ips {
                shared.announce(ip, None);
            }
        }
    })
}

impl Announcer {
    /// Announces every owned address again (a burst), e.g. after peers came back: a node that
    /// was cut off may have been replaced meanwhile, and clients still point at the stand-in.
    pub fn reannounce_all(&self) {
        let owned: Vec<(IpAddr, u64)> = self
            .shared
            .read_owned()
            .by_ip()
            .iter()
            .map(|(ip, e)| (*ip, e.generation))
            .collect();
        for (ip, generation) in owned {
            self.shared.clone().spawn_burst(ip, generation, None);
        }
    }
}

impl Shared {
    /// Gratuitous announcements of `ip` at the configured burst offsets, as long as this
    /// takeover (`generation`) stands. `only_link` limits them to one interface.
    pub(super) fn spawn_burst(
        self: Arc<Self>,
        ip: IpAddr,
        generation: u64,
        only_link: Option<u32>,
    ) {
        tokio::spawn(async move {
            let start = Instant::now();
            for offset in self.config.burst.clone() {
                tokio::time::sleep_until(start + offset).await;
                let current = self.read_owned().by_ip().get(&ip).map(|e| e.generation);
                if current != Some(generation) {
                    return;
                }
                self.announce(ip, only_link);
            }
        });
    }

    /// Sends one round of gratuitous packets for `ip` on its interfaces (or only `only_link`),
    /// unless the fence is closed.
    fn announce(&self, ip: IpAddr, only_link: Option<u32>) {
        if !self.config.fence.allows(std::time::Instant::now()) {
            return;
        }
        let Some((interfaces, counters)) = self
            .read_owned()
            .by_ip()
            .get(&ip)
            .map(|e| (e.interfaces.clone(), e.counters.clone()))
        else {
            return;
        };
        let links: Vec<Arc<LinkIo>> = self
            .read_links()
            .values()
            .filter(|l| interfaces.allows(&l.link.name))
            .filter(|l| only_link.is_none_or(|i| i == l.link.index))
            .cloned()
            .collect();
        for l in links {
            let frames: Vec<Vec<u8>> = match ip {
                IpAddr::V4(v4) => vec![
                    wire::gratuitous_arp(l.link.mac, v4, GratuitousKind::Request).to_vec(),
                    wire::gratuitous_arp(l.link.mac, v4, GratuitousKind::Reply).to_vec(),
                ],
                IpAddr::V6(v6) => vec![wire::unsolicited_advertisement(l.link.mac, v6)],
            };
            for frame in frames {
                match l.arp[0].send(&frame) {
                    Ok(()) => {
                        counters.gratuitous.inc();
                    }
                    Err(e) => {
                        self.metrics.send_errors.inc();
                        debug!(%ip, interface = %l.link.name, error = %e, "sending an announcement failed");
                    }
                };
            }
        }
    }
}
