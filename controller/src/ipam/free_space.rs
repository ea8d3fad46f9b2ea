//! The free addresses of one pool and family, as disjoint intervals keyed by their first address.
//!
//! Every operation is O(log n) in the number of intervals (fragments), never in the number of
//! addresses, so a /8 or a /64 pool costs what a /30 does. Choices are deterministic: the lowest
//! eligible free address is handed out first.
//!
//! "Eligible" excludes IPv4 addresses ending in .0 or .255 when the pool avoids buggy IPs. Such
//! addresses may sit inside an interval (a /8 stays one interval) and are skipped arithmetically
//! when allocating and counting, but no interval holds only ineligible addresses, so the first
//! interval always yields an address at once.
//!
//! Counts saturate at 2^128 - 1 (only `::/0` has more addresses than that).

use std::collections::BTreeMap;

use ferrolb_crds::{AddressRange, Family};

/// Free addresses of one family in one pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreeSpace {
    family: Family,
    avoid_buggy: bool,
    /// first -> last (inclusive), disjoint and non-adjacent.
    free: BTreeMap<u128, u128>,
    /// Eligible free addresses, kept up to date by every operation.
    available: u128,
}

impl FreeSpace {
    /// All of `ranges` (of `family`; others are ignored) free. Overlapping ranges count once.
    pub fn new(family: Family, ranges: &[AddressRange], avoid_buggy: bool) -> FreeSpace {
        let mut space = FreeSpace {
            family,
            avoid_buggy: avoid_buggy && family == Family::V4,
            free: BTreeMap::new(),
            available: 0,
        };
        for r in ranges.iter().filter(|r| r.family() == family) {
            space.insert_interval(r.first_bits(), r.last_bits());
        }
        space
    }

    /// Eligible free addresses.
    pub fn available(&self) -> u128 {
        self.available
    }

    /// Takes the lowest eligible free address.
    pub fn allocate_lowest(&mut self) -> Option<u128> {
        let ip = self.lowest()?;
        self.take(ip).then_some(ip)
    }

    /// The lowest eligible free address, left free.
    pub fn lowest(&self) -> Option<u128> {
        let (&first, &last) = self.free.iter().next()?;
        self.first_eligible(first, last)
    }

    /// Takes `ip` if it is free and eligible.
    pub fn take(&mut self, ip: u128) -> bool {
        if !self.is_eligible(ip) {
            return false;
        }
        let Some((&first, &last)) = self.free.range(..=ip).next_back() else {
            return false;
        };
        if ip > last {
            return false;
        }
        self.free.remove(&first);
        if first < ip {
            self.keep_if_eligible(first, ip - 1);
        }
        if ip < last {
            self.keep_if_eligible(ip + 1, last);
        }
        self.available = self.available.saturating_sub(1);
        true
    }

    /// Whether `ip` is free and may be handed out.
    pub fn is_free(&self, ip: u128) -> bool {
        self.is_eligible(ip)
            && self
                .free
                .range(..=ip)
                .next_back()
                .is_some_and(|(_, &last)| ip <= last)
    }

    /// Returns `ip` (taken earlier) to the free space. Returns false when it was already free.
    pub fn release(&mut self, ip: u128) -> bool {
        if self
            .free
            .range(..=ip)
            .next_back()
            .is_some_and(|(_, &last)| ip <= last)
        {
            return false;
        }
        self.insert_interval(ip, ip);
        true
    }

    /// Whether `ip` may ever be handed out by this pool's rules (not whether it is free).
    pub fn is_eligible(&self, ip: u128) -> bool {
        !(self.avoid_buggy && matches!(ip & 0xff, 0 | 0xff))
    }

    fn first_eligible(&self, first: u128, last: u128) -> Option<u128> {
        let mut ip = first;
        // At most two steps: .255 -> .0 -> .1.
        while ip <= last && !self.is_eligible(ip) {
            ip = ip.checked_add(1)?;
        }
        (ip <= last).then_some(ip)
    }

    /// Adds [first, last], merging with overlapping or adjacent intervals.
    fn insert_interval(&mut self, mut first: u128, mut last: u128) {
        // Absorb every interval that overlaps or touches [first, last].
        while let Some((&f, &l)) = self.free.range(..=last.saturating_add(1)).next_back() {
            if l.saturating_add(1) < first {
                break;
            }
            self.free.remove(&f);
            self.available = self.available.saturating_sub(self.eligible_in(f, l));
            first = first.min(f);
            last = last.max(l);
        }
        let eligible = self.eligible_in(first, last);
        if eligible > 0 {
            self.free.insert(first, last);
            self.available = self.available.saturating_add(eligible);
        }
    }

    /// Stores a remainder of a split interval unless it holds only ineligible addresses.
    fn keep_if_eligible(&mut self, first: u128, last: u128) {
        if self.eligible_in(first, last) > 0 {
            self.free.insert(first, last);
        }
    }

    /// Eligible addresses in [first, last].
    fn eligible_in(&self, first: u128, last: u128) -> u128 {
        let all = (last - first).saturating_add(1);
        if !self.avoid_buggy {
            return all;
        }
        let buggy_before = if first == 0 {
            0
        } else {
            buggy_up_to(first - 1)
        };
        all - (buggy_up_to(last) - buggy_before)
    }

    /// Family of the addresses.
    pub fn family(&self) -> Family {
        self.family
    }
}

/// IPv4 addresses ending in .0 or .255 in [0, n].
fn buggy_up_to(n: u128) -> u128 {
    let full_blocks = n / 256;
    let rest = n % 256;
    full_blocks * 2 + 1 + u128::from(rest == 255)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(entries: &[&str], avoid_buggy: bool) -> FreeSpace {
        let ranges: Vec<AddressRange> = entries.iter().map(|e| e.parse().unwrap()).collect();
        let family = ranges[0].family();
        FreeSpace::new(family, &ranges, avoid_buggy)
    }

    fn v4(s: &str) -> u128 {
        ferrolb_crds::address::to_u128(s.parse().unwrap())
    }

    #[test]
    fn hands_out_the_lowest_free_address_first() {
        let mut s = space(&["198.51.100.10-198.51.100.12"], false);
        assert_eq!(s.available(), 3);
        assert_eq!(s.allocate_lowest(), Some(v4("198.51.100.10")));
        assert_eq!(s.allocate_lowest(), Some(v4("198.51.100.11")));
        assert!(s.release(v4("198.51.100.10")));
        assert_eq!(
            s.allocate_lowest(),
            Some(v4("198.51.100.10")),
            "a released address is reused first"
        );
        assert_eq!(s.allocate_lowest(), Some(v4("198.51.100.12")));
        assert_eq!(s.allocate_lowest(), None);
        assert_eq!(s.available(), 0);
    }

    #[test]
    fn specific_addresses_split_and_release_merges() {
        let mut s = space(&["198.51.100.0/24"], false);
        assert!(s.take(v4("198.51.100.77")));
        assert!(!s.take(v4("198.51.100.77")), "taken twice");
        assert!(!s.is_free(v4("198.51.100.77")));
        assert_eq!(s.available(), 255);
        assert!(s.release(v4("198.51.100.77")));
        assert!(!s.release(v4("198.51.100.77")), "released twice");
        assert_eq!(s.free.len(), 1, "neighbours merge back into one interval");
        assert_eq!(s.available(), 256);
    }

    #[test]
    fn addresses_outside_the_pool_are_never_taken() {
        let mut s = space(&["198.51.100.10-198.51.100.20"], false);
        assert!(!s.take(v4("198.51.100.9")));
        assert!(!s.take(v4("198.51.100.21")));
        assert_eq!(s.available(), 11);
    }

    #[test]
    fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
        let mut s = space(&["198.51.100.255-198.51.101.1"], true);
        assert_eq!(s.available(), 1, ".255 and .0 do not count");
        assert!(!s.take(v4("198.51.101.0")));
        assert_eq!(s.allocate_lowest(), Some(v4("198.51.101.1")));
        assert_eq!(s.allocate_lowest(), None);
        let s = space(&["10.0.0.0/8"], true);
        assert_eq!(s.available(), (1 << 24) - 2 * 65536);
        let s = space(&["198.51.100.0/24"], false);
        assert_eq!(s.available(), 256, "without the flag every address counts");
    }

    #[test]
    fn allocating_a_whole_avoid_buggy_pool_stays_unfragmented_by_skipped_addresses() {
        let mut s = space(&["198.51.100.0/23"], true);
        let mut got = Vec::new();
        while let Some(ip) = s.allocate_lowest() {
            got.push(ip);
        }
        assert_eq!(got.len(), 508);
        assert!(got.iter().all(|ip| !matches!(ip & 0xff, 0 | 0xff)));
        assert!(
            s.free.is_empty(),
            "no interval of only skipped addresses is kept: {:?}",
            s.free
        );
        assert!(s.release(v4("198.51.100.254")));
        assert_eq!(s.allocate_lowest(), Some(v4("198.51.100.254")));
    }

    #[test]
    fn huge_ipv6_pools_need_no_enumeration() {
        let mut s = space(&["2001:db8:1::/64"], true);
        assert_eq!(s.available(), 1 << 64, "avoidBuggyIPs is IPv4-only");
        let first = s.allocate_lowest().unwrap();
        assert_eq!(
            first,
            ferrolb_crds::address::to_u128("2001:db8:1::".parse().unwrap())
        );
        assert_eq!(s.available(), (1 << 64) - 1);
        let s = space(&["::/0"], false);
        assert_eq!(s.available(), u128::MAX, "2^128 saturates")
    }

    #[test]
    fn overlapping_entries_count_once() {
        let s = space(&["198.51.100.0/28", "198.51.100.8-198.51.100.20"], false);
        assert_eq!(s.available(), 21);
        assert_eq!(s.free.len(), 1);
    }

    #[test]
    fn buggy_count_matches_enumeration() {
        for (a, b) in [
            (0u128, 0u128),
            (0, 255),
            (255, 256),
            (1, 1000),
            (254, 513),
            (65535, 70000),
        ] {
            let want = (a..=b).filter(|x| matches!(x & 0xff, 0 | 0xff)).count() as u128;
            let s = FreeSpace {
                family: Family::V4,
                avoid_buggy: true,
                free: BTreeMap::new(),
                available: 0,
            };
            assert_eq!((b - a + 1) - s.eligible_in(a, b), want, "[{a}, {b}]");
        }
    }
}
