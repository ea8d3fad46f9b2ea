//! Held addresses and the Services using each (pure): the allocator's address -> users map.
//!
//! Pools hand out their lowest free addresses, so held addresses cluster. They are kept in pages
//! of 16 consecutive addresses, each page one cache line of user ids in a hash map keyed by
//! page: 100k held addresses of one pool take well under a megabyte and stay in cache, where a
//! map entry per address took several megabytes and a cache miss per lookup. An address with
//! several users (sharing) has a marker in its page and its users in a side map.
//!
//! Users are numbers the allocator gives the Services it knows ([`UserId`]); several users of
//! one address are kept in the order of their Service keys, the order conflicts name them in,
//! never in id order.

use std::collections::hash_map::Entry;
use std::net::IpAddr;

use ferrolb_crds::Family;
use ferrolb_crds::address::{from_u128, to_u128};

use super::FastMap;
use super::interned::KeyRef;

/// A Service as the allocator numbers it.
pub type UserId = u32;

/// The largest id a user may have (the two above it mark page entries).
pub const MAX_ID: UserId = UserId::MAX - 2;

const FREE: UserId = UserId::MAX;
const SHARED: UserId = UserId::MAX - 1;
const PAGE_BITS: u32 = 4;
const PAGE: usize = 1 << PAGE_BITS;
/// Set in the page key of IPv6 pages (IPv6 page numbers have at most 124 bits).
const V6_PAGE: u128 = 1 << 127;

/// Users of 16 consecutive addresses: a user id, [`FREE`] or [`SHARED`] (see `shared`).
#[derive(Clone, Debug)]
struct Page([UserId; PAGE]);

/// What [`Held::remove`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    /// It was not a user.
    Absent,
    /// Removed; others remain.
    Remaining,
    /// Removed the only user: the address is no longer held.
    Last,
}

/// Held addresses and their users.
#[derive(Debug, Default)]
pub struct Held {
    /// Page key ([`locate`]) -> page.
    pages: FastMap<u128, Page>,
    /// Addresses with two or more users -> the users, in key order.
    shared: FastMap<IpAddr, Vec<UserId>>,
}

/// The page key of `ip` and its position in the page.
fn locate(ip: IpAddr) -> (u128, usize) {
    let bits = to_u128(ip);
    let family = if ip.is_ipv6() { V6_PAGE } else { 0 };
    (family | bits >> PAGE_BITS, bits as usize & (PAGE - 1))
}

impl Held {
    /// The users of `ip`, in key order (empty when it is not held).
    pub fn users(&self, ip: IpAddr) -> &[UserId] {
        let (page, at) = locate(ip);
        let Some(p) = self.pages.get(&page) else {
            return &[];
        };
        match p.0[at] {
            FREE => &[],
            SHARED => &self.shared[&ip],
            _ => std::slice::from_ref(&p.0[at]),
        }
    }

    /// Whether `ip` has users.
    pub fn is_held(&self, ip: IpAddr) -> bool {
        !self.users(ip).is_empty()
    }

    /// Adds `id` (at most [`MAX_ID`]) to the users of `ip`, keeping key order (`key_of` gives a
    /// user's key); no-op when it is one. Returns whether `ip` had no users before.
    pub fn add<'a>(
        &mut self,
        ip: IpAddr,
        id: UserId,
        key_of: impl Fn(UserId) -> KeyRef<'a>,
    ) -> bool {
        assert!(id <= MAX_ID, "user ids stop at MAX_ID");
        let (page, at) = locate(ip);
        let entry = &mut self
            .pages
            .entry(page)
            .or_insert_with(|| Page([FREE; PAGE]))
            .0[at];
        match *entry {
            FREE => {
                *entry = id;
                return true;
            }
            SHARED => {
                let users = self.shared.get_mut(&ip).expect("shared users are listed");
                let key = key_of(id);
                if let Err(i) = users.binary_search_by(|other| key_of(*other).cmp(&key)) {
                    users.insert(i, id);
                }
            }
            only if only == id => {}
            only => {
                *entry = SHARED;
                let users = if key_of(only) < key_of(id) {
                    vec![only, id]
                } else {
                    vec![id, only]
                };
                self.shared.insert(ip, users);
            }
        }
        false
    }

    /// Removes `id` from the users of `ip`.
    pub fn remove(&mut self, ip: IpAddr, id: UserId) -> Removed {
        let (page, at) = locate(ip);
        let Entry::Occupied(mut p) = self.pages.entry(page) else {
            return Removed::Absent;
        };
        let entry = &mut p.get_mut().0[at];
        match *entry {
            FREE => Removed::Absent,
            SHARED => {
                let users = self.shared.get_mut(&ip).expect("shared users are listed");
                let Some(i) = users.iter().position(|other| *other == id) else {
                    return Removed::Absent;
                };
                users.remove(i);
                if let [only] = users[..] {
                    *entry = only;
                    self.shared.remove(&ip);
                }
                Removed::Remaining
            }
            only if only == id => {
                *entry = FREE;
                if p.get().0.iter().all(|u| *u == FREE) {
                    p.remove();
                }
                Removed::Last
            }
            _ => Removed::Absent,
        }
    }

    /// Every held address, in no particular order.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.pages.iter().flat_map(|(key, page)| {
            let family = if key & V6_PAGE != 0 {
                Family::V6
            } else {
                Family::V4
            };
            let base = (key & !V6_PAGE) << PAGE_BITS;
            page.0
                .iter()
                .enumerate()
                .filter(|(_, user)| **user != FREE)
                .map(move |(at, _)| from_u128(family, base | at as u128))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn users_stay_in_key_order_whatever_their_ids() {
        // Ids in the opposite order of their keys.
        let keys = [
            crate::ipam::ServiceKey::new("ns", "c"),
            crate::ipam::ServiceKey::new("ns", "b"),
            crate::ipam::ServiceKey::new("ns", "a"),
        ];
        let key_of = |id: UserId| KeyRef::of(&keys[id as usize]);
        let a = ip("192.0.2.1");
        let mut held = Held::default();
        assert!(held.add(a, 0, key_of));
        assert!(!held.add(a, 0, key_of));
        assert_eq!(held.users(a), &[0]);
        assert!(!held.add(a, 2, key_of));
        assert!(!held.add(a, 1, key_of));
        assert!(!held.add(a, 1, key_of));
        assert_eq!(held.users(a), &[2, 1, 0]);
        assert_eq!(held.remove(a, 7), Removed::Absent);
        assert_eq!(held.remove(a, 1), Removed::Remaining);
        assert_eq!(held.remove(a, 2), Removed::Remaining);
        assert_eq!(held.users(a), &[0]);
        assert!(held.shared.is_empty());
        assert_eq!(held.remove(a, 2), Removed::Absent);
        assert_eq!(held.remove(a, 0), Removed::Last);
        assert!(!held.is_held(a));
        assert!(held.pages.is_empty());
    }

    #[test]
    fn families_and_pages_are_kept_apart() {
        let key = crate::ipam::ServiceKey::new("ns", "a");
        let key_of = |_| KeyRef::of(&key);
        // Same low bits in both families, page edges, the ends of both spaces.
        let all = [
            "0.0.0.5",
            "::5",
            "192.0.2.15",
            "192.0.2.16",
            "255.255.255.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::",
        ]
        .map(ip);
        let mut held = Held::default();
        for (id, ip) in all.iter().enumerate() {
            assert!(held.add(*ip, id as UserId, key_of));
        }
        for (id, ip) in all.iter().enumerate() {
            assert_eq!(held.users(*ip), &[id as UserId], "{ip}");
        }
        assert!(!held.is_held(ip("::6")));
        assert!(!held.is_held(ip("0.0.0.6")));
        let mut listed: Vec<IpAddr> = held.ips().collect();
        listed.sort();
        let mut expected = all.to_vec();
        expected.sort();
        assert_eq!(listed, expected);
        for (id, ip) in all.iter().enumerate() {
            assert_eq!(held.remove(*ip, id as UserId), Removed::Last);
        }
        assert!(held.pages.is_empty());
    }
}
