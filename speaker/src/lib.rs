//! ferrolb speaker: answers ARP (IPv4) and NDP (IPv6) for the LoadBalancer IPs its node owns,
//! elected per address over the live speakers. See `DESIGN.md`; the wire codec, election,
//! membership and network I/O land here (issue #4). This crate has no binary yet.
