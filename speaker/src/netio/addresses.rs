//! The node's own IP addresses and IPv6 proxy-NDP entries, dumped over netlink
//! (`RTM_GETADDR`, `RTM_GETNEIGH` with `NTF_PROXY`). Dumps need no privilege.
//!
//! ```text
//!  dump() ──request──> NETLINK_ROUTE ──multipart replies──> parse_dump (pure) ──> Dump
//! ```
//! Only the socket calls are here; decoding is pure and unit-tested on byte buffers. sysfs and
//! `/proc/net/if_inet6` would not do: neither lists IPv4 addresses, and the address scope
//! (which `arp_ignore=3` looks at) is only in the netlink message.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::{check, set_receive_timeout};

/// One address configured on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddress {
    /// Interface index.
    pub ifindex: u32,
    /// The local address (`IFA_LOCAL`, else `IFA_ADDRESS`).
    pub ip: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// `RT_SCOPE_*` (0 global, 200 site, 253 link, 254 host).
    pub scope: u8,
    /// `IFA_F_*` flags (`IFA_FLAGS` when present, which holds all 32 bits).
    pub flags: u32,
}

/// One IPv6 proxy-NDP entry (`ip -6 neigh add proxy ADDR dev IF`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyEntry {
    /// Interface index; `None` for an entry that applies to every interface.
    pub ifindex: Option<u32>,
    /// The proxied address.
    pub ip: Ipv6Addr,
}

/// Wire constants of the Linux netlink ABI (linux/netlink.h, linux/rtnetlink.h,
/// linux/if_addr.h, linux/neighbour.h); fixed, so spelled out rather than taken from libc,
/// which does not export every one for every target.
const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const NDA_DST: u16 = 1;
const NTF_PROXY: u8 = 0x08;
const IFADDRMSG_LEN: usize = 8;
const NDMSG_LEN: usize = 12;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Every address of every interface in this network namespace.
pub fn addresses() -> io::Result<Vec<IfAddress>> {
    // struct ifaddrmsg, family AF_UNSPEC: both families.
    dump_all(
        RTM_GETADDR,
        1,
        &[0u8; IFADDRMSG_LEN],
        RTM_NEWADDR,
        parse_address,
    )
}

/// Every IPv6 proxy-NDP entry in this network namespace.
pub fn ipv6_proxies() -> io::Result<Vec<ProxyEntry>> {
    // struct ndmsg with ndm_flags == NTF_PROXY asks for the proxy table.
    let mut ndmsg = [0u8; NDMSG_LEN];
    ndmsg[0] = AF_INET6;
    ndmsg[10] = NTF_PROXY;
    dump_all(RTM_GETNEIGH, 2, &ndmsg, RTM_NEWNEIGH, parse_proxy)
}

/// Dumps with a `kind` request carrying `body` (sequence number `seq`) over a new socket, and
/// returns every reply message of type `reply` that `parse` reads.
fn dump_all<T>(
    kind: u16,
    seq: u32,
    body: &[u8],
    reply: u16,
    parse: impl Fn(&[u8]) -> Option<T>,
) -> io::Result<Vec<T>> {
    let socket = Socket::open()?;
    let mut out = Vec::new();
    socket.dump(&request(kind, seq, body), seq, |kind, payload| {
        if kind == reply
            && let Some(item) = parse(payload)
        {
            out.push(item);
        }
    })?;
    Ok(out)
}

/// A blocking `NETLINK_ROUTE` socket for one dump.
struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: socket(2) with constant arguments; the result is checked and owned at once.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        set_receive_timeout(fd.as_raw_fd(), Duration::from_secs(2))?;
        Ok(Socket(fd))
    }

    /// Sends `request` to the kernel and hands every message of the reply to `each` until
    /// `NLMSG_DONE`.
    fn dump(&self, request: &[u8], seq: u32, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_nl addresses the kernel (pid 0, no groups).
        let mut kernel: libc::sockaddr_nl = unsafe { zeroed() };
        kernel.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `request` and `kernel` are valid for the duration of the call.
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        // Dump parts are at most 32 KiB: a larger buffer never truncates one.
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(err);
            }
            if parse_dump(&buf[..n as usize], seq, &mut each)? == Progress::Done {
                return Ok(());
            }
        }
    }
}

/// A dump request: `nlmsghdr` then `body`.
fn request(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDR + body.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(body);
    out
}

/// Whether a dump has more parts to come.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    More,
    Done,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Walks the messages of one datagram of a dump with sequence number `seq`, handing each
/// message's type and payload to `each`. Messages of other sequence numbers (none are
/// expected on a socket of our own) are skipped.
fn parse_dump(buf: &[u8], seq: u32, each: &mut impl FnMut(u16, &[u8])) -> io::Result<Progress> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"));
    let mut at = 0;
    while at + NLMSG_HDR <= buf.len() {
        let len = u32_at(buf, at).unwrap_or(0) as usize;
        let kind = u16_at(buf, at + 4).unwrap_or(0);
        let msg_seq = u32_at(buf, at + 8).unwrap_or(0);
        if len < NLMSG_HDR || at + len > buf.len() {
            return Err(bad(&format!("message of length {len} at offset {at}")));
        }
        let payload = &buf[at + NLMSG_HDR..at + len];
        at += align4(len);
        if msg_seq != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(Progress::Done),
            NLMSG_ERROR => {
                let errno = u32_at(payload, 0).ok_or_else(|| bad("short error message"))? as i32;
                if errno == 0 {
                    // An acknowledgement; dumps end with NLMSG_DONE.
                    continue;
                }
                return Err(io::Error::from_raw_os_error(-errno));
            }
            _ => each(kind, payload),
        }
    }
    Ok(Progress::More)
}

/// The attributes (`rtattr`: length, type, value; 4-byte aligned) in `b`, as (type, value).
fn attributes(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = u16_at(b, at)? as usize;
        let kind = u16_at(b, at + 2)? & 0x3fff;
        if len < 4 || at + len > b.len() {
            return None;
        }
        let value = &b[at + 4..at + len];
        at += align4(len);
        Some((kind, value))
    })
}

fn ip_of(family: u8, value: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(value).ok()?))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(value).ok()?,
        ))),
        _ => None,
    }
}

/// An `RTM_NEWADDR` payload: `ifaddrmsg` then attributes.
fn parse_address(payload: &[u8]) -> Option<IfAddress> {
    let header = payload.get(..IFADDRMSG_LEN)?;
    let family = header[0];
    let mut local = None;
    let mut address = None;
    let mut flags = u32::from(header[2]);
    for (kind, value) in attributes(payload.get(IFADDRMSG_LEN..)?) {
        match kind {
            IFA_LOCAL => local = ip_of(family, value),
            IFA_ADDRESS => address = ip_of(family, value),
            IFA_FLAGS => flags = u32_at(value, 0).unwrap_or(flags),
            _ => {}
        }
    }
    Some(IfAddress {
        ifindex: u32_at(header, 4)?,
        ip: local.or(address)?,
        prefix_len: header[1],
        scope: header[3],
        flags,
    })
}

/// An `RTM_NEWNEIGH` payload of the proxy table: `ndmsg` then attributes.
fn parse_proxy(payload: &[u8]) -> Option<ProxyEntry> {
    let header = payload.get(..NDMSG_LEN)?;
    if header[0] != AF_INET6 || header[10] & NTF_PROXY == 0 {
        return None;
    }
    let ifindex = u32_at(header, 4)?;
    let ip = attributes(payload.get(NDMSG_LEN..)?)
        .find(|(kind, _)| *kind == NDA_DST)
        .and_then(|(_, value)| ip_of(AF_INET6, value))?;
    let IpAddr::V6(ip) = ip else { return None };
    Some(ProxyEntry {
        ifindex: (ifindex != 0).then_some(ifindex),
        ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align4(out.len()), 0);
        out
    }

    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = request(kind, seq, payload);
        // A reply carries NLM_F_MULTI, not the request flags; the parser does not care.
        out[6..8].copy_from_slice(&0x2u16.to_ne_bytes());
        out.resize(align4(out.len()), 0);
        out
    }

    fn ifaddr(family: u8, prefix: u8, scope: u8, index: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut out = vec![family, prefix, 0x80, scope];
        out.extend_from_slice(&index.to_ne_bytes());
        for a in attrs {
            out.extend_from_slice(a);
        }
        out
    }

    #[test]
    fn requests_are_a_header_and_the_body() {
        let r = request(RTM_GETADDR, 7, &[0u8; IFADDRMSG_LEN]);
        assert_eq!(r.len(), 24);
        assert_eq!(u32_at(&r, 0), Some(24));
        assert_eq!(u16_at(&r, 4), Some(RTM_GETADDR));
        assert_eq!(u16_at(&r, 6), Some(0x301));
        assert_eq!(u32_at(&r, 8), Some(7));
    }

    #[test]
    fn ipv4_addresses_prefer_the_local_attribute_and_keep_the_scope() {
        // A point-to-point address: IFA_ADDRESS is the peer, IFA_LOCAL ours.
        let payload = ifaddr(
            AF_INET,
            32,
            0,
            3,
            &[
                attr(IFA_ADDRESS, &[192, 0, 2, 9]),
                attr(IFA_LOCAL, &[198, 51, 100, 200]),
                attr(3, b"lo\0"),
            ],
        );
        assert_eq!(
            parse_address(&payload),
            Some(IfAddress {
                ifindex: 3,
                ip: "198.51.100.200".parse().unwrap(),
                prefix_len: 32,
                scope: 0,
                flags: 0x80,
            })
        );
    }

    #[test]
    fn ipv6_addresses_take_the_32_bit_flags() {
        let ip: Ipv6Addr = "2001:db8:1::200".parse().unwrap();
        let payload = ifaddr(
            AF_INET6,
            128,
            0,
            2,
            &[
                attr(IFA_ADDRESS, &ip.octets()),
                attr(IFA_FLAGS, &0x248u32.to_ne_bytes()),
            ],
        );
        let a = parse_address(&payload).unwrap();
        assert_eq!(a.ip, IpAddr::V6(ip));
        assert_eq!(a.flags, 0x248);
        assert_eq!(a.ifindex, 2);
    }

    #[test]
    fn truncated_or_addressless_messages_are_skipped() {
        assert_eq!(parse_address(&[2, 24, 0]), None);
        assert_eq!(parse_address(&ifaddr(AF_INET, 24, 0, 1, &[])), None);
        // A wrong-sized address is not an address.
        let short = ifaddr(AF_INET, 24, 0, 1, &[attr(IFA_LOCAL, &[1, 2, 3])]);
        assert_eq!(parse_address(&short), None);
        // An attribute claiming more than there is ends the walk.
        let mut broken = ifaddr(AF_INET, 24, 0, 1, &[attr(IFA_LOCAL, &[1, 2, 3, 4])]);
        broken[8..10].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(parse_address(&broken), None);
    }

    #[test]
    fn proxy_entries_with_and_without_an_interface() {
        let ip: Ipv6Addr = "2001:db8:1::201".parse().unwrap();
        let entry = |index: u32, flags: u8| {
            let mut out = vec![AF_INET6, 0, 0, 0];
            out.extend_from_slice(&index.to_ne_bytes());
            out.extend_from_slice(&0u16.to_ne_bytes());
            out.extend_from_slice(&[flags, 0]);
            out.extend_from_slice(&attr(NDA_DST, &ip.octets()));
            out
        };
        assert_eq!(
            parse_proxy(&entry(4, NTF_PROXY)),
            Some(ProxyEntry {
                ifindex: Some(4),
                ip
            })
        );
        assert_eq!(parse_proxy(&entry(0, NTF_PROXY)).unwrap().ifindex, None);
        // An ordinary neighbour is not a proxy entry.
        assert_eq!(parse_proxy(&entry(4, 0)), None);
    }

    #[test]
    fn a_dump_runs_until_done_and_reports_errors() {
        let a = ifaddr(AF_INET, 24, 0, 2, &[attr(IFA_LOCAL, &[198, 51, 100, 11])]);
        let b = ifaddr(AF_INET, 32, 254, 1, &[attr(IFA_LOCAL, &[127, 0, 0, 1])]);
        let mut part = message(RTM_NEWADDR, 5, &a);
        part.extend(message(RTM_NEWADDR, 9, &b)); // another request's: skipped
        part.extend(message(RTM_NEWADDR, 5, &b));
        let mut seen = Vec::new();
        let mut collect = |kind: u16, payload: &[u8]| {
            assert_eq!(kind, RTM_NEWADDR);
            seen.push(parse_address(payload).unwrap().ip.to_string());
        };
        assert_eq!(parse_dump(&part, 5, &mut collect).unwrap(), Progress::More);
        let done = message(NLMSG_DONE, 5, &0u32.to_ne_bytes());
        assert_eq!(parse_dump(&done, 5, &mut collect).unwrap(), Progress::Done);
        assert_eq!(seen, vec!["198.51.100.11", "127.0.0.1"]);

        let error = message(NLMSG_ERROR, 5, &(-libc::EPERM).to_ne_bytes());
        let err = parse_dump(&error, 5, &mut |_, _| {}).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        // A length running past the datagram is an error, not a panic.
        let mut cut = message(RTM_NEWADDR, 5, &a);
        cut.truncate(20);
        assert!(parse_dump(&cut, 5, &mut |_, _| {}).is_err());
    }

    #[test]
    fn the_real_dump_lists_loopback() {
        // Unprivileged, in whatever namespace the test runs: lo has 127.0.0.1 (scope host)
        // wherever IPv4 is configured at all.
        let all = addresses().expect("an address dump needs no privilege");
        if let Some(lo) = all.iter().find(|a| a.ip == IpAddr::V4(Ipv4Addr::LOCALHOST)) {
            assert_eq!(lo.scope, 254);
            assert_eq!(lo.prefix_len, 8);
        }
        ipv6_proxies().expect("a proxy dump needs no privilege");
    }
}
