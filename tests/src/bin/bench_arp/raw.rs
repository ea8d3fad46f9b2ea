//! Raw `AF_PACKET` sockets: the only `unsafe` of this program.
//!
//! Why not the speaker's `ferrolb_speaker::netio::packet_socket` (this crate depends on the
//! speaker): what the generator needs is what that socket deliberately lacks, and the reverse.
//! - Round trips are timed with the kernel's receive timestamp (`SO_TIMESTAMPNS`, read from
//!   `recvmsg`'s control messages); the speaker's `recv` has no timestamps.
//! - The send socket is bound to EtherType 0 (it receives nothing) and sends block, so a full
//!   buffer delays a request instead of losing it; the speaker's socket only opens ARP or IPv6
//!   and sends with `MSG_DONTWAIT`, reporting a full buffer.
//! - The receive socket forces an 8 MiB buffer (`SO_RCVBUFFORCE`) and reports the kernel's drops
//!   (`PACKET_STATISTICS`); the reference responder has no BPF filter at all (the least a
//!   responder does), while the speaker's socket always attaches its filter.
//!
//! Adding those generator-only options to the speaker would put test code into its `unsafe`
//! module; the lines the two share are the `socket(2)` + `bind(2)` every packet socket starts
//! with.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// Linux UAPI values (the same on every architecture the lab runs on); libc does not export
// all of them for every target.
const SO_TIMESTAMPNS: libc::c_int = 35;
const SO_RCVBUFFORCE: libc::c_int = 33;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// A raw socket bound to one interface.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl Socket {
    /// Opens a socket on `ifindex` receiving EtherType `protocol` (0: nothing).
    pub fn open(ifindex: i32, protocol: u16) -> io::Result<Socket> {
        let proto_be = protocol.to_be();
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
        // SAFETY: an all-zero sockaddr_ll is valid; the fields we need are set below.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto_be;
        addr.sll_ifindex = ifindex;
        // SAFETY: `addr` is a valid sockaddr_ll and the length matches it.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        })?;
        Ok(Socket { fd })
    }

    fn set_int(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: `value` is a valid c_int for the duration of the call.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&value as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            )
        })
        .map(|_| ())
    }

    /// Kernel receive timestamps, no copies of our own frames, a large buffer, and a 100 ms
    /// receive timeout so the reader can notice it should stop.
    pub fn prepare_receiver(&self) -> io::Result<()> {
        self.set_int(libc::SOL_SOCKET, SO_TIMESTAMPNS, 1)?;
        self.set_int(libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
        if self
            .set_int(libc::SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            .is_err()
        {
            self.set_int(libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 20)?;
        }
        self.set_receive_timeout()
    }

    /// No copies of our own frames and a 100 ms receive timeout: the reference responder's socket.
    pub fn prepare_responder(&self) -> io::Result<()> {
        self.set_int(libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
        self.set_receive_timeout()
    }

    /// A blocking receive returns after at most 100 ms, so a reader can notice it should stop.
    fn set_receive_timeout(&self) -> io::Result<()> {
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: `timeout` is a valid timeval for the duration of the call.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            )
        })?;
        Ok(())
    }

    /// One frame into `buf` (its length, at most `buf.len()`): blocking (up to the receive
    /// timeout), or with `poll` returning at once. `None` when nothing came or on error.
    pub fn recv_frame(&self, buf: &mut [u8], poll: bool) -> Option<usize> {
        let flags = if poll { libc::MSG_DONTWAIT } else { 0 };
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
            )
        };
        usize::try_from(n).ok()
    }

    /// Sends one complete frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is valid for reads of `frame.len()` bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One frame into `buf` and its kernel receive time (ns since the epoch); `None` on
    /// timeout or error.
    pub fn recv(&self, buf: &mut [u8]) -> Option<(usize, u64)> {
        // Room for one cmsghdr + timespec, aligned for cmsghdr.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 8]>() as _;
        // SAFETY: `msg` points at `iov` (into `buf`) and `control`, both valid and writable
        // for their stated lengths for the duration of the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return None;
        }
        let mut stamp = None;
        // SAFETY: the CMSG macros walk `control` within `msg.msg_controllen`, as the kernel
        // filled it; the timespec is read unaligned from the cmsg's data.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == SO_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Some((
            (n as usize).min(buf.len()),
            stamp.unwrap_or_else(super::realtime_ns),
        ))
    }

    /// (packets received, packets dropped) by the kernel for this socket since the last call.
    pub fn stats(&self) -> (u32, u32) {
        let mut stats = [0u32; 2];
        let mut len = size_of::<[u32; 2]>() as libc::socklen_t;
        // SAFETY: `stats` is valid for writes of `len` bytes (struct tpacket_stats is two
        // unsigned ints).
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                stats.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc < 0 { (0, 0) } else { (stats[0], stats[1]) }
    }
}

/// Puts the calling thread under `policy`; whether the kernel granted it.
pub fn set_scheduling(policy: super::SenderPolicy) -> bool {
    let (policy, priority) = match policy {
        super::SenderPolicy::Idle => (libc::SCHED_IDLE, 0),
        super::SenderPolicy::Fifo => (libc::SCHED_FIFO, 10),
    };
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0 is the
    // calling thread.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
}

/// Sleeps end within a microsecond of their deadline instead of the default 50 µs slack.
pub fn fine_timer_slack() {
    // SAFETY: prctl(2) with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}
