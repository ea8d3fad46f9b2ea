//! TCP connections to BGP routers: source address, TTL and the TCP MD5 signature option
//! (RFC 2385) set before connecting. None of this needs a capability: the socket binds an
//! ephemeral port, and the MD5 key and TTL are options of the speaker's own socket.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use super::set_option;

/// The kernel's longest TCP MD5 key (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_MD5_KEY_LEN: usize = 80;

/// How to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The router.
    pub peer: SocketAddr,
    /// Local address to connect from (`None`: the routing table's choice).
    pub source: Option<IpAddr>,
    /// TCP MD5 key shared with the router.
    pub md5_key: Option<Vec<u8>>,
    /// TTL (hop limit) of the session's packets: 1 for a directly connected eBGP router,
    /// 255 for iBGP and multihop.
    pub ttl: u32,
}

/// `struct tcp_md5sig` of `<linux/tcp.h>`.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    ifindex: libc::c_int,
    key: [u8; MAX_MD5_KEY_LEN],
}

/// Sets the MD5 key for segments to and from `peer` on `socket`.
fn set_md5_key(socket: &Socket, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.is_empty() || key.len() > MAX_MD5_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a TCP MD5 key is 1 to {MAX_MD5_KEY_LEN} bytes, this one {}",
                key.len()
            ),
        ));
    }
    let peer = socket2::SockAddr::from(SocketAddr::new(peer, 0));
    // SAFETY: `sockaddr_storage` is plain data; all-zero is a valid value, and the peer's
    // address (at most `sockaddr_storage`'s size, as `SockAddr` guarantees) is copied over it.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    // SAFETY: both regions are valid for `peer.len()` bytes and do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            peer.as_ptr().cast::<u8>(),
            (&raw mut sig.addr).cast::<u8>(),
            peer.len() as usize,
        );
    }
    sig.key_len = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    set_option(
        socket.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_MD5SIG,
        &sig,
    )
}

/// Connects as `options` say.
pub async fn connect(options: &ConnectOptions) -> io::Result<TcpStream> {
    let domain = Domain::for_address(options.peer);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(key) = &options.md5_key {
        set_md5_key(&socket, options.peer.ip(), key)?;
    }
    if options.peer.is_ipv4() {
        socket.set_ttl_v4(options.ttl)?;
    } else {
        socket.set_unicast_hops_v6(options.ttl)?;
    }
    if let Some(source) = options.source {
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    socket.connect(options.peer).await
}
