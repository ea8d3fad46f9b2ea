//! Parsing of `IPAddressPool.spec.addresses` entries.
//!
//! An entry is one of
//! - a CIDR, `198.51.100.0/24` or `2001:db8:1::/64` (host bits must be zero),
//! - a range, `198.51.100.10-198.51.100.20` (spaces around the dash allowed; both ends inclusive,
//!   same family, start not after end),
//! - a single address, `198.51.100.7` or `2001:db8::7`.
//!
//! The same rules are compiled into the CRD as CEL `x-kubernetes-validations` (see [`crate::cel`]),
//! so the apiserver rejects what this parser rejects, with the same wording where CEL allows.
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) and zones (`fe80::1%eth0`) are refused, as the
//! apiserver's CEL IP library refuses them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Longest prefix length of this family (32 or 128).
    pub fn max_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// An inclusive range of addresses of one family, `first <= last`.
///
/// Addresses are held as integers (`u128` for both families) so that ranges of any size, a /8 or a
/// /64, are handled without enumerating them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRange {
    family: Family,
    first: u128,
    last: u128,
}

impl AddressRange {
    /// The range `first..=last`. Fails when the families differ or `first > last`.
    pub fn new(first: IpAddr, last: IpAddr) -> Result<AddressRange, AddressError> {
        let family = Family::of(first);
        if Family::of(last) != family {
            return Err(AddressError::MixedFamilies {
                first: first.to_string(),
                last: last.to_string(),
            });
        }
        let (lo, hi) = (to_u128(first), to_u128(last));
        if lo > hi {
            return Err(AddressError::ReversedRange {
                first: first.to_string(),
                last: last.to_string(),
            });
        }
        Ok(AddressRange {
            family,
            first: lo,
            last: hi,
        })
    }

    /// The family of every address in the range.
    pub fn family(&self) -> Family {
        self.family
    }

    /// First address (inclusive).
    pub fn first(&self) -> IpAddr {
        from_u128(self.family, self.first)
    }

    /// Last address (inclusive).
    pub fn last(&self) -> IpAddr {
        from_u128(self.family, self.last)
    }

    /// First address as an integer.
    pub fn first_bits(&self) -> u128 {
        self.first
    }

    /// Last address as an integer.
    pub fn last_bits(&self) -> u128 {
        self.last
    }

    /// Number of addresses; `None` only for the whole IPv6 space (2^128 does not fit a `u128`).
    pub fn len(&self) -> Option<u128> {
        (self.last - self.first).checked_add(1)
    }

    /// A range is never empty; present for API completeness with `len`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.first..=self.last).contains(&to_u128(ip))
    }

    /// Whether the two ranges share at least one address.
    pub fn overlaps(&self, other: &AddressRange) -> bool {
        self.family == other.family && self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first())
        } else {
            write!(f, "{}-{}", self.first(), self.last())
        }
    }
}

impl std::str::FromStr for AddressRange {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_entry(s)
    }
}

/// Why one address entry was refused. Messages quote the entry and say what was meant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not a CIDR, range or address at all.
    #[error(
        "\"{0}\" is not an IP address, a CIDR (198.51.100.0/24) or a range (198.51.100.10-198.51.100.20)"
    )]
    Garbage(String),
    /// A range whose ends are not both IP addresses.
    #[error("range \"{0}\" must be two IP addresses joined by \"-\"")]
    BadRangeEnd(String),
    /// A range from one family to the other.
    #[error("range {first}-{last} mixes IPv4 and IPv6; use one range per family")]
    MixedFamilies {
        /// Start of the range as written.
        first: String,
        /// End of the range as written.
        last: String,
    },
    /// A range whose start lies after its end.
    #[error("range start {first} is after its end {last}; write it as {last}-{first}")]
    ReversedRange {
        /// Start of the range as written.
        first: String,
        /// End of the range as written.
        last: String,
    },
    /// A prefix length beyond the family's width.
    #[error("prefix length /{prefix} is out of range for {family} (0 to {max})", max = family.max_prefix())]
    PrefixOutOfRange {
        /// The prefix length as written.
        prefix: u32,
        /// The family of the address before the slash.
        family: Family,
    },
    /// A CIDR with bits set after the prefix.
    #[error("\"{written}\" has host bits set; the network address is {network}")]
    HostBitsSet {
        /// The entry as written.
        written: String,
        /// The CIDR that was probably meant.
        network: String,
    },
    /// Holds an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), which the apiserver refuses too.
    #[error("\"{0}\" holds an IPv4-mapped IPv6 address; write the IPv4 address instead")]
    Ipv4Mapped(String),
}

/// Why a pool's address list was refused: which entry (`spec.addresses[index]`) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressListError {
    /// `spec.addresses` has no entry.
    #[error("spec.addresses: must list at least one CIDR, range or address")]
    Empty,
    /// One entry is malformed.
    #[error("spec.addresses[{index}]: {error}")]
    Entry {
        /// Position of the entry in `spec.addresses`.
        index: usize,
        /// What is wrong with it.
        error: AddressError,
    },
}

/// Parses every entry of a pool's `spec.addresses`, in order.
pub fn parse_addresses<S: AsRef<str>>(
    entries: &[S],
) -> Result<Vec<AddressRange>, AddressListError> {
    if entries.is_empty() {
        return Err(AddressListError::Empty);
    }
    entries
        .iter()
        .enumerate()
        .map(|(index, e)| {
            parse_entry(e.as_ref()).map_err(|error| AddressListError::Entry { index, error })
        })
        .collect()
}

/// Parses one entry: CIDR, `a-b` range or single address.
pub fn parse_entry(entry: &str) -> Result<AddressRange, AddressError> {
    let s = entry.trim();
    if let Some((start, end)) = s.split_once('-') {
        let (start, end) = (start.trim(), end.trim());
        let (Some(first), Some(last)) = (parse_ip(start, entry)?, parse_ip(end, entry)?) else {
            return Err(AddressError::BadRangeEnd(entry.to_string()));
        };
        // Errors quote the ends as written, as the apiserver's CEL rules do.
        return AddressRange::new(first, last).map_err(|e| match e {
            AddressError::MixedFamilies { .. } => AddressError::MixedFamilies {
                first: start.to_string(),
                last: end.to_string(),
            },
            AddressError::ReversedRange { .. } => AddressError::ReversedRange {
                first: start.to_string(),
                last: end.to_string(),
            },
            other => other,
        });
    }
    if let Some((addr, prefix)) = s.split_once('/') {
        let Some(ip) = parse_ip(addr, entry)? else {
            return Err(AddressError::Garbage(entry.to_string()));
        };
        let Some(prefix) = parse_prefix(prefix) else {
            return Err(AddressError::Garbage(entry.to_string()));
        };
        return cidr_range(entry, ip, prefix);
    }
    match parse_ip(s, entry)? {
        Some(ip) => AddressRange::new(ip, ip),
        None => Err(AddressError::Garbage(entry.to_string())),
    }
}

/// `Ok(None)` for text that is no address; an error (quoting `entry`) for addresses the
/// apiserver also refuses.
fn parse_ip(s: &str, entry: &str) -> Result<Option<IpAddr>, AddressError> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => {
            Err(AddressError::Ipv4Mapped(entry.to_string()))
        }
        Ok(ip) => Ok(Some(ip)),
        Err(_) => Ok(None),
    }
}

/// A decimal prefix length without leading zeros (as Go's `netip.ParsePrefix` wants).
fn parse_prefix(s: &str) -> Option<u32> {
    let ok = !s.is_empty()
        && s.len() <= 3
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

fn cidr_range(entry: &str, ip: IpAddr, prefix: u32) -> Result<AddressRange, AddressError> {
    let family = Family::of(ip);
    let width = u32::from(family.max_prefix());
    if prefix > width {
        return Err(AddressError::PrefixOutOfRange { prefix, family });
    }
    let bits = to_u128(ip);
    // Host mask within the family's width: the low (width - prefix) bits.
    let host_mask = if width - prefix == 128 {
        u128::MAX
    } else {
        (1u128 << (width - prefix)) - 1
    };
    let network = bits & !host_mask;
    if network != bits {
        return Err(AddressError::HostBitsSet {
            written: entry.trim().to_string(),
            network: format!("{}/{prefix}", from_u128(family, network)),
        });
    }
    Ok(AddressRange {
        family,
        first: network,
        last: network | host_mask,
    })
}

/// An address as an integer (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of `family` whose integer value is `bits` (IPv4 uses the low 32 bits).
pub fn from_u128(family: Family, bits: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(bits as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn range(s: &str) -> (String, String, Option<u128>) {
        let r = parse_entry(s).unwrap();
        (r.first().to_string(), r.last().to_string(), r.len())
    }

    #[test]
    fn ipv4_cidr_covers_network_to_broadcast() {
        assert_eq!(
            range("198.51.100.0/24"),
            ("198.51.100.0".into(), "198.51.100.255".into(), Some(256))
        );
        assert_eq!(
            range("198.51.100.7/32"),
            ("198.51.100.7".into(), "198.51.100.7".into(), Some(1))
        );
        assert_eq!(
            range("0.0.0.0/0"),
            ("0.0.0.0".into(), "255.255.255.255".into(), Some(1 << 32))
        );
        assert_eq!(range("10.0.0.0/8").2, Some(1 << 24));
    }

    #[test]
    fn ipv6_cidr_of_any_size() {
        assert_eq!(
            range("2001:db8:1::/64"),
            (
                "2001:db8:1::".into(),
                "2001:db8:1:0:ffff:ffff:ffff:ffff".into(),
                Some(1 << 64)
            )
        );
        assert_eq!(range("2001:db8::1/128").2, Some(1));
        assert_eq!(
            range("::/0").2,
            None,
            "the whole IPv6 space has 2^128 addresses"
        );
        assert_eq!(range("::/1").2, Some(1 << 127));
    }

    #[test]
    fn ranges_allow_spaces_around_the_dash() {
        for s in [
            "198.51.100.10-198.51.100.20",
            "198.51.100.10 - 198.51.100.20",
            " 198.51.100.10 -198.51.100.20 ",
        ] {
            assert_eq!(
                range(s),
                ("198.51.100.10".into(), "198.51.100.20".into(), Some(11)),
                "{s}"
            );
        }
        assert_eq!(range("2001:db8::1-2001:db8::ff").2, Some(255));
        assert_eq!(
            range("198.51.100.9-198.51.100.9").2,
            Some(1),
            "a one-address range is fine"
        );
    }

    #[test]
    fn single_addresses_are_one_address_ranges() {
        assert_eq!(
            range("203.0.113.9"),
            ("203.0.113.9".into(), "203.0.113.9".into(), Some(1))
        );
        assert_eq!(range("2001:db8::9").2, Some(1));
    }

    #[test]
    fn reversed_range_is_refused_with_the_fix() {
        let e = parse_entry("198.51.100.20-198.51.100.10").unwrap_err();
        assert_eq!(
            e,
            AddressError::ReversedRange {
                first: "198.51.100.20".into(),
                last: "198.51.100.10".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "range start 198.51.100.20 is after its end 198.51.100.10; write it as 198.51.100.10-198.51.100.20"
        );
        assert!(matches!(
            parse_entry("2001:db8::ff-2001:db8::1"),
            Err(AddressError::ReversedRange { .. })
        ));
    }

    #[test]
    fn range_mixing_families_is_refused() {
        let e = parse_entry("198.51.100.1-2001:db8::1").unwrap_err();
        assert!(matches!(e, AddressError::MixedFamilies { .. }));
        assert!(e.to_string().contains("mixes IPv4 and IPv6"));
    }

    #[test]
    fn prefix_length_out_of_range_names_the_limit() {
        assert_eq!(
            parse_entry("198.51.100.0/33").unwrap_err().to_string(),
            "prefix length /33 is out of range for IPv4 (0 to 32)"
        );
        assert_eq!(
            parse_entry("2001:db8::/129").unwrap_err().to_string(),
            "prefix length /129 is out of range for IPv6 (0 to 128)"
        );
    }

    #[test]
    fn cidr_with_host_bits_says_which_network_was_meant() {
        let e = parse_entry("198.51.100.1/24").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"198.51.100.1/24\" has host bits set; the network address is 198.51.100.0/24"
        );
        let e = parse_entry("2001:db8:1::5/64").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"2001:db8:1::5/64\" has host bits set; the network address is 2001:db8:1::/64"
        );
    }

    #[test]
    fn garbage_is_refused_with_the_accepted_forms() {
        for s in [
            "",
            " ",
            "hello",
            "198.51.100",
            "198.51.100.256",
            "198.51.100.0/",
            "198.51.100.0/abc",
            "198.51.100.0/024",
            "/24",
            "01.2.3.4",
            "fe80::1%eth0",
            "198.51.100.0/24/1",
        ] {
            let e = parse_entry(s).unwrap_err();
            assert_eq!(e, AddressError::Garbage(s.to_string()), "{s:?}");
            assert!(
                e.to_string().contains("is not an IP address, a CIDR"),
                "{s:?}"
            );
        }
    }

    #[test]
    fn range_with_a_bad_end_is_refused() {
        for s in [
            "198.51.100.1-foo",
            "-198.51.100.1",
            "198.51.100.1-",
            "198.51.100.1-198.51.100.2-198.51.100.3",
            "198.51.100.0/24-198.51.100.255",
        ] {
            assert_eq!(
                parse_entry(s).unwrap_err(),
                AddressError::BadRangeEnd(s.to_string()),
                "{s:?}"
            );
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_is_refused() {
        assert!(matches!(
            parse_entry("::ffff:198.51.100.1"),
            Err(AddressError::Ipv4Mapped(_))
        ));
        assert!(matches!(
            parse_entry("::ffff:198.51.100.0/120"),
            Err(AddressError::Ipv4Mapped(_))
        ));
    }

    #[test]
    fn list_errors_name_the_entry_index() {
        assert_eq!(
            parse_addresses::<&str>(&[]).unwrap_err(),
            AddressListError::Empty
        );
        let e = parse_addresses(&["198.51.100.0/28", "2001:db8::/64", "bogus"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.addresses[2]: \"bogus\" is not an IP address, a CIDR (198.51.100.0/24) or a range (198.51.100.10-198.51.100.20)"
        );
        let ok = parse_addresses(&["198.51.100.0/28", "2001:db8::/64", "203.0.113.5"]).unwrap();
        assert_eq!(
            ok.iter().map(|r| r.family()).collect::<Vec<_>>(),
            [Family::V4, Family::V6, Family::V4]
        );
    }

    #[test]
    fn contains_and_overlaps_respect_family() {
        let r = parse_entry("198.51.100.0/30").unwrap();
        assert!(r.contains(ip("198.51.100.3")));
        assert!(!r.contains(ip("198.51.100.4")));
        assert!(!r.contains(ip("::c633:6400")), "same integer, other family");
        assert!(r.overlaps(&parse_entry("198.51.100.3-198.51.100.9").unwrap()));
        assert!(!r.overlaps(&parse_entry("198.51.100.4-198.51.100.9").unwrap()));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "198.51.100.0-198.51.100.255",
            "2001:db8::1",
            "2001:db8::-2001:db8::ff",
        ] {
            assert_eq!(parse_entry(s).unwrap().to_string(), s);
        }
    }
}
