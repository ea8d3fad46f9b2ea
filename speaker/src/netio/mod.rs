//! Network I/O: the only module with `unsafe` (raw `AF_PACKET` and netlink sockets through libc).
//!
//! - [`packet_socket`]: an `AF_PACKET` socket per interface and protocol, with a classic BPF filter
//!   attached in the kernel so only ARP requests and neighbour solicitations reach userspace.
//! - [`links`]: which interfaces exist and which are suitable for answering (sysfs, pure rules).
//! - [`addresses`]: the node's own addresses and IPv6 proxy-NDP entries (netlink dumps).
//! - [`link_events`]: a netlink subscription that says when links or addresses change.
//! - [`multicast`]: solicited-node group memberships for owned IPv6 addresses.
//! - [`cpus`]: which CPUs the speaker may use, and pinning a responder thread to some of them.
//!
//! Everything here needs only `CAP_NET_RAW` (for `AF_PACKET`); netlink notifications and dumps,
//! sysfs reads, IPv6 group joins and a thread's own CPU affinity need no privilege.
#![allow(unsafe_code)]

pub mod addresses;
pub mod cpus;
pub mod link_events;
pub mod links;
pub mod multicast;
pub mod packet_socket;

/// Makes blocking reads on `fd` give up after `timeout` (`SO_RCVTIMEO`).
fn set_receive_timeout(
    fd: std::os::fd::RawFd,
    timeout: std::time::Duration,
) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` is a valid timeval for the duration of the call, and the length matches it.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        )
    })?;
    Ok(())
}

/// `Err(last OS error)` when a libc call returned -1.
fn check(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
