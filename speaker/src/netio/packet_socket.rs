//! `AF_PACKET` raw sockets bound to one interface, filtered in the kernel.
//!
//! Blocking, for a dedicated responder thread: the kernel wakes the thread blocked in `recv`
//! directly, one hop fewer than epoll plus an async runtime's wake-up, which is most of what a
//! userspace answer costs over the kernel's own ARP reply. A receive timeout lets the thread
//! notice when it should stop.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{check, set_option, set_receive_timeout};
use crate::wire::filter::SockFilter;

/// Which frames a socket receives (its `sll_protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// EtherType 0x0806.
    Arp,
    /// EtherType 0x86dd.
    Ipv6,
}

impl Protocol {
    fn ethertype(self) -> u16 {
        match self {
            Protocol::Arp => libc::ETH_P_ARP as u16,
            Protocol::Ipv6 => libc::ETH_P_IPV6 as u16,
        }
    }
}

/// A raw socket on one interface. Frames sent by this host are not looped back to it.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    /// Opens a socket for `protocol` on interface `ifindex` with `filter` attached; `recv`
    /// gives up after `read_timeout`. Needs CAP_NET_RAW.
    pub fn open(
        ifindex: u32,
        protocol: Protocol,
        filter: &[SockFilter],
        read_timeout: Duration,
    ) -> io::Result<Self> {
        let proto_be = protocol.ethertype().to_be();
        // SAFETY: socket(2) with constant arguments; the result is checked and owned at once.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto_be),
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        attach_filter(fd.as_raw_fd(), filter)?;
        let on: libc::c_int = 1;
        set_option(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            &on,
        )?;
        // SAFETY: an all-zero sockaddr_ll is valid; the fields we need are set below.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto_be;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll and the length matches it.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        })?;
        // Frames that arrived between socket() and the filter/bind are unfiltered: drop them.
        drain(fd.as_raw_fd());
        set_receive_timeout(fd.as_raw_fd(), read_timeout)?;
        Ok(PacketSocket { fd, ifindex })
    }

    /// Replaces the socket's filter; the kernel swaps programs atomically, so every frame is
    /// judged by the old or the new one.
    pub fn set_filter(&self, filter: &[SockFilter]) -> io::Result<()> {
        attach_filter(self.fd.as_raw_fd(), filter)
    }

    /// Joins a `PACKET_FANOUT_CPU` group: each frame goes to the member whose index is the
    /// receiving CPU modulo the group's size, so a thread pinned to that CPU is woken where the
    /// frame was handled instead of through an interrupt to another, idle CPU. `group: None`
    /// creates a group with an id the kernel picks (unique in the network namespace) and
    /// returns it, for the other members to join. Our own frames stay ignored (the group's
    /// hook replaces this socket's, so the flag is given again; Linux 6.9; older kernels may
    /// loop them back, and the responder drops them as its own).
    pub fn join_fanout(&self, group: Option<u16>) -> io::Result<u16> {
        let mut flags = PACKET_FANOUT_CPU | PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
        if group.is_none() {
            flags |= PACKET_FANOUT_FLAG_UNIQUEID;
        }
        let arg = i32::from(group.unwrap_or(0)) | (flags << 16);
        set_option(self.fd.as_raw_fd(), libc::SOL_PACKET, PACKET_FANOUT, &arg)?;
        if let Some(id) = group {
            return Ok(id);
        }
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` is valid for writes of `len` bytes for the duration of the call.
        check(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_FANOUT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        // The low 16 bits are the id; above them, type and flags.
        Ok((value & 0xffff) as u16)
    }

    /// The interface this socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Waits for one frame and copies it into `buf`: its length (frames longer than `buf` are
    /// cut), or `None` when the read timeout passed first.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n >= 0 {
                return Ok(Some((n as usize).min(buf.len())));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::EINTR) => continue,
                _ => return Err(err),
            }
        }
    }

    /// Sends one complete Ethernet frame out of the bound interface, without blocking: the
    /// socket buffer is large compared with the bursts we send, so a full buffer is reported
    /// rather than awaited.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is valid for reads of `frame.len()` bytes.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(io::Error::other(format!(
                "short send on interface {}: {n} of {} bytes",
                self.ifindex,
                frame.len()
            )));
        }
        Ok(())
    }
}

/// Whether this process may open `AF_PACKET` sockets at all (it needs `CAP_NET_RAW`): opens one
/// with protocol 0, which is bound to nothing and receives no frame, and closes it. Answers the
/// question before any interface is there to open a socket on.
pub fn probe() -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked and owned at once.
    let raw =
        check(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `raw` is a fresh descriptor nobody else owns; dropping it closes it.
    drop(unsafe { OwnedFd::from_raw_fd(raw) });
    Ok(())
}

/// `PACKET_IGNORE_OUTGOING` (Linux 4.20): libc does not export it for every target.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// `PACKET_FANOUT` and its mode and flags (linux/if_packet.h).
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_FANOUT_CPU: libc::c_int = 2;
const PACKET_FANOUT_FLAG_UNIQUEID: libc::c_int = 0x2000;
const PACKET_FANOUT_FLAG_IGNORE_OUTGOING: libc::c_int = 0x4000;

fn attach_filter(fd: RawFd, filter: &[SockFilter]) -> io::Result<()> {
    let mut program: Vec<libc::sock_filter> = filter
        .iter()
        .map(|f| libc::sock_filter {
            code: f.code,
            jt: f.jt,
            jf: f.jf,
            k: f.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // `fprog` points into `program`, which outlives the call; the kernel copies it.
    set_option(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

fn drain(fd: RawFd) {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: `buf` is valid for writes of its length; the socket is non-blocking.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            return;
        }
    }
}
