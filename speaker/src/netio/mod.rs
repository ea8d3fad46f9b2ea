//! Network I/O: the only module with `unsafe` (raw `AF_PACKET` and netlink sockets through libc).
//!
//! - [`packet_socket`]: an `AF_PACKET` socket per interface and protocol, with a classic BPF filter
//!   attached in the kernel so only ARP requests and neighbour solicitations reach userspace.
//! - [`links`]: which interfaces exist and which are suitable for answering (sysfs, pure rules).
//! - [`addresses`]: the node's own addresses and IPv6 proxy-NDP entries (netlink dumps).
//! - [`link_events`]: a netlink subscription that says when links or addresses change.
//! - [`multicast`]: solicited-node group memberships for owned IPv6 addresses.
//! - [`tcp`]: TCP connections to BGP routers (source address, TTL, TCP MD5 keys).
//! - [`udp_ttl`]: UDP datagrams with their TTL, for BFD's single-hop check.
//! - [`cpus`]: which CPUs the speaker may use, and pinning a responder thread to some of them.
//!
//! Everything here needs only `CAP_NET_RAW` (for `AF_PACKET`); netlink notifications and dumps,
//! sysfs reads, IPv6 group joins and a thread's own CPU affinity need no privilege.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

pub mod addresses;
pub mod cpus;
pub mod link_events;
pub mod links;
pub mod multicast;
pub mod packet_socket;
pub mod tcp;
pub mod udp_ttl;

/// `setsockopt(fd, level, name)` to `value`, passed as the bytes of a `T`: the type the kernel
/// expects for that option (`c_int`, `timeval`, `sock_fprog`, ...).
fn set_option<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a valid `T` for the duration of the call and the length is its size;
    // the kernel copies what it reads (and checks any pointer inside) before returning.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Makes blocking reads on `fd` give up after `timeout` (`SO_RCVTIMEO`).
fn set_receive_timeout(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    set_option(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

/// `Err(last OS error)` when a libc call returned -1.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
