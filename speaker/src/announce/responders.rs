//! The responder threads of one interface: per protocol a fanout group of packet sockets, one
//! blocking thread per member, pinned as the [`Layout`] says.
//!
//! ```text
//!  frame handled on CPU c ──> member c % n (kernel, PACKET_FANOUT_CPU)
//!       ──> its thread, pinned to CPU c: recv -> respond() -> send
//! ```

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{debug, warn};

use super::layout::Layout;
use super::respond::{Response, respond};
use super::{RESPONDER_POLL, Shared};
use crate::metrics::{DropLabels, ProtocolLabels};
use crate::netio::cpus;
use crate::netio::links::Link;
use crate::netio::packet_socket::{PacketSocket, Protocol};
use crate::wire::filter::SockFilter;

/// Stack of a responder thread: it holds a 2 KiB frame buffer and calls nothing deep.
const STACK: usize = 256 * 1024;

/// Opens `protocol`'s sockets on `link`, all with `filter` attached: `layout.members()` of
/// them in one fanout group, or a single socket when the kernel refuses the group (the threads
/// then run unpinned). Returns the sockets and the layout actually used.
pub fn open_group(
    link: &Link,
    protocol: Protocol,
    filter: &[SockFilter],
    layout: &Layout,
) -> io::Result<(Vec<Arc<PacketSocket>>, Layout)> {
    let open = || PacketSocket::open(link.index, protocol, filter, RESPONDER_POLL).map(Arc::new);
    let first = open()?;
    if layout.members() == 1 {
        return Ok((vec![first], layout.clone()));
    }
    let grouped = || -> io::Result<Vec<Arc<PacketSocket>>> {
        let id = first.join_fanout(None)?;
        let mut members = vec![first.clone()];
        for _ in 1..layout.members() {
            let s = open()?;
            s.join_fanout(Some(id))?;
            members.push(s);
        }
        Ok(members)
    };
    match grouped() {
        Ok(members) => Ok((members, layout.clone())),
        Err(e) => {
            warn!(interface = %link.name, ?protocol, error = %e, "no fanout group (Linux 6.9 or later); one responder thread answers here");
            // `first` may have joined a group of its own making: start over with a fresh one.
            Ok((vec![open()?], Layout::single()))
        }
    }
}

/// Starts one thread per socket, member `i` pinned to `layout.cpus[i]`, until `stop`.
pub fn spawn(
    shared: &Arc<Shared>,
    link: &Link,
    what: &str,
    sockets: &[Arc<PacketSocket>],
    layout: &Layout,
    stop: &Arc<AtomicBool>,
) -> io::Result<()> {
    for (i, socket) in sockets.iter().enumerate() {
        let (shared, link, socket, stop) =
            (shared.clone(), link.clone(), socket.clone(), stop.clone());
        let pin = layout.cpus.get(i).cloned().unwrap_or_default();
        std::thread::Builder::new()
            .name(format!("{what}{i}-{}", link.name))
            .stack_size(STACK)
            .spawn(move || {
                if !pin.is_empty()
                    && let Err(e) = cpus::pin_current_thread(&pin)
                {
                    debug!(interface = %link.name, cpus = ?pin, error = %e, "cannot pin a responder thread; it runs anywhere");
                }
                answer(&shared, &link, &socket, &stop);
            })?;
    }
    Ok(())
}

/// Answers every request arriving on `socket` (one interface, one protocol) until `stop`.
fn answer(shared: &Shared, link: &Link, socket: &PacketSocket, stop: &AtomicBool) {
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let n = match socket.recv(&mut buf) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                warn!(interface = %link.name, error = %e, "receiving failed; stopped answering here");
                return;
            }
        };
        let (frame, counters) = {
            let owned = shared.read_owned();
            match respond(&buf[..n], &link.name, link.mac, &owned) {
                Response::Reply { frame, owned, .. } => (frame, owned.counters.clone()),
                Response::NotOwned(protocol) => {
                    shared
                        .metrics
                        .not_owned
                        .get_or_create(&ProtocolLabels { protocol })
                        .inc();
                    continue;
                }
                Response::Conflict { ip, from, .. } => {
                    shared
                        .metrics
                        .conflicts
                        .get_or_create(&crate::metrics::IpLabels { ip: ip.to_string() })
                        .inc();
                    debug!(%ip, %from, interface = %link.name, "another host announces an address we own");
                    continue;
                }
                Response::Own => continue,
                Response::Invalid(e) => {
                    shared
                        .metrics
                        .dropped
                        .get_or_create(&DropLabels {
                            reason: e.metric_label(),
                        })
                        .inc();
                    continue;
                }
            }
        };
        counters.requests.inc();
        if !shared.config.fence.allows(std::time::Instant::now()) {
            // Peers may have taken this address over while this speaker could not be heard.
            shared.metrics.fenced_requests.inc();
            continue;
        }
        match socket.send(&frame) {
            Ok(()) => {
                counters.replies.inc();
            }
            Err(e) => {
                shared.metrics.send_errors.inc();
                debug!(interface = %link.name, error = %e, "sending a reply failed");
            }
        }
    }
}
