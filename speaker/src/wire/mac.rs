//! Ethernet (EUI-48) MAC addresses.

use std::fmt;
use std::str::FromStr;

/// An Ethernet MAC address, most significant byte first as on the wire.
///
/// Displayed and parsed as six lowercase hex pairs separated by colons: `02:fe:00:00:00:01`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `ff:ff:ff:ff:ff:ff`, the Ethernet broadcast address.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// `00:00:00:00:00:00`, used as the unknown target hardware address of ARP requests.
    pub const ZERO: Mac = Mac([0; 6]);

    /// The six bytes, as on the wire.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Whether the group bit (least significant bit of the first byte) is set: multicast and
    /// broadcast addresses. Such an address never identifies a single sender.
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl From<[u8; 6]> for Mac {
    fn from(octets: [u8; 6]) -> Self {
        Mac(octets)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A string that is not a MAC address of the form `02:fe:00:00:00:01`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address {input:?}: expected six two-digit hex bytes separated by ':' or '-', \
     like 02:fe:00:00:00:01"
)]
pub struct ParseMacError {
    /// The rejected input.
    pub input: String,
}

impl FromStr for Mac {
    type Err = ParseMacError;

    /// Parses `02:fe:00:00:00:01` (or with `-` separators, as Windows prints them); hex digits
    /// in either case. Exactly six groups of exactly two digits, one kind of separator.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError {
            input: s.to_owned(),
        };
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut octets = [0u8; 6];
        let mut groups = s.split(sep);
        for octet in &mut octets {
            let group = groups.next().ok_or_else(err)?;
            if group.len() != 2 || !group.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *octet = u8::from_str_radix(group, 16).map_err(|_| err())?;
        }
        if groups.next().is_some() {
            return Err(err());
        }
        Ok(Mac(octets))
    }
}
