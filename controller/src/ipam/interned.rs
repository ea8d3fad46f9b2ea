//! Interned Services (pure): the allocator's table of the Services it knows, each with a dense
//! id ([`UserId`]) found from its key with one hash lookup, and a slot holding everything the
//! allocator keeps about it.
//!
//! The table only finds, adds and forgets ids; what a slot's Service holds is the allocator's
//! business ([`Slot`]'s public fields). A forgotten id's slot keeps its strings and vectors and
//! goes to the next Service interned (last-in first-out), so churn reuses memory instead of
//! allocating it. A slot holds its key's bytes itself (a namespace and a name of a valid
//! Service, at most 63 bytes each, always fit), so the key costs no heap block.
//!
//! Hand-written rather than `hashbrown::HashTable` + `slab`: a slab drops a removed entry's
//! value, and with it the strings and vectors this table keeps for reuse. A `HashTable` alone
//! would replace only the same-hash chains (about forty lines, one `u32` per slot) with a new
//! dependency: a lookup is one probe of a map of `u32`s plus the slot either way, and the slot's
//! hand-made layout (hash and inline key bytes in its first cache line) is what keeps it cheap.

use std::collections::hash_map::Entry;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::ops::{Index, IndexMut};

use super::FastMap;
use super::assignment::{Assignment, Ips, no_pool};
use super::held::{MAX_ID, UserId};
use super::request::{Backends, ServiceKey};
use super::sharing::Usage;

/// No id (end of a same-hash chain).
const NO_ID: UserId = UserId::MAX;

/// `Slot::namespace_len` when the key does not fit the slot.
const SPILLED: u8 = u8::MAX;

/// Key bytes a slot holds: what is left of its four cache lines, and at least the longest
/// namespace (63) plus the longest Service name (63).
const INLINE_KEY: usize = 126;
const _: () = assert!(INLINE_KEY >= 63 + 63);

/// The usage of a Service without a sharing key.
static NO_USAGE: Usage = Usage {
    key: None,
    ports: Vec::new(),
    backends: Backends::Cluster,
};

/// A Service key as a slot holds it. Orders as [`ServiceKey`] does (namespace, then name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRef<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
}

impl KeyRef<'_> {
    /// `key`, borrowed.
    pub fn of(key: &ServiceKey) -> KeyRef<'_> {
        KeyRef {
            namespace: &key.namespace,
            name: &key.name,
        }
    }

    /// The key, owned.
    pub fn to_key(self) -> ServiceKey {
        ServiceKey::new(self.namespace, self.name)
    }
}

impl PartialEq<ServiceKey> for KeyRef<'_> {
    fn eq(&self, other: &ServiceKey) -> bool {
        self.namespace == other.namespace && self.name == other.name
    }
}

/// An interned Service, in four adjacent cache lines holding everything finding it, releasing
/// it and committing a new Service in its place (the free list is last-in first-out) touch:
/// those read no other per-Service memory. Laid out by hand: finding a Service reads the first
/// line (the whole key when it has at most 48 bytes; the second holds the next 64), releasing it
/// the last two (its addresses, inline in `assignment`), as does committing.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Slot {
    /// Hash of `key` (its upper half is its entry in `Interned::first`).
    hash: u64,
    /// The next id with the same entry in `Interned::first`, or [`NO_ID`].
    next: UserId,
    /// Whether the Service holds addresses (else the id is free, or inside
    /// `Allocator::assign` between releasing and committing). The fields below are valid
    /// while it does.
    pub live: bool,
    /// Length of the namespace in `inline`, or [`SPILLED`] when the key does not fit (then in
    /// `spilled`).
    namespace_len: u8,
    /// Length of the name in `inline`.
    name_len: u8,
    /// The key's namespace then name.
    inline: [u8; INLINE_KEY],
    /// A key too long for `inline` (not a valid Service's).
    spilled: Option<Box<ServiceKey>>,
    /// What the Service holds; set its addresses with [`Slot::set_ips`].
    pub assignment: Assignment,
    /// Its usage of every address it holds, when it has a sharing key (else none).
    pub usage: Option<Box<Usage>>,
}

const _: () = assert!(size_of::<Slot>() == 256);

impl Slot {
    fn new(key: &ServiceKey, hash: u64) -> Slot {
        let mut slot = Slot {
            spilled: None,
            namespace_len: SPILLED,
            name_len: 0,
            inline: [0; INLINE_KEY],
            hash,
            next: NO_ID,
            live: false,
            assignment: Assignment {
                pool: no_pool(),
                ips: Ips::new(),
            },
            usage: None,
        };
        slot.set_key(key);
        slot
    }

    /// The Service's key.
    pub fn key(&self) -> KeyRef<'_> {
        if let Some(key) = &self.spilled {
            return KeyRef {
                namespace: &key.namespace,
                name: &key.name,
            };
        }
        let (n, m) = (usize::from(self.namespace_len), usize::from(self.name_len));
        let text = |bytes| std::str::from_utf8(bytes).expect("copied from a str");
        KeyRef {
            namespace: text(&self.inline[..n]),
            name: text(&self.inline[n..n + m]),
        }
    }

    /// Its sharing usage.
    pub fn usage(&self) -> &Usage {
        self.usage.as_deref().unwrap_or(&NO_USAGE)
    }

    /// The addresses it holds.
    pub fn ips(&self) -> &[IpAddr] {
        &self.assignment.ips
    }

    /// Makes `ips` the addresses it holds.
    pub fn set_ips(&mut self, ips: &[IpAddr]) {
        self.assignment.ips.clear();
        self.assignment.ips.extend_from_slice(ips);
    }

    /// Whether the key is `key`.
    fn is(&self, key: &ServiceKey) -> bool {
        if let Some(spilled) = &self.spilled {
            return **spilled == *key;
        }
        let (namespace, name) = (key.namespace.as_bytes(), key.name.as_bytes());
        let (n, m) = (usize::from(self.namespace_len), usize::from(self.name_len));
        n == namespace.len()
            && m == name.len()
            && self.inline[..n] == *namespace
            && self.inline[n..n + m] == *name
    }

    /// Makes the key `key`.
    fn set_key(&mut self, key: &ServiceKey) {
        let (namespace, name) = (key.namespace.as_bytes(), key.name.as_bytes());
        if namespace.len() + name.len() <= INLINE_KEY {
            self.inline[..namespace.len()].copy_from_slice(namespace);
            self.inline[namespace.len()..][..name.len()].copy_from_slice(name);
            self.namespace_len = namespace.len() as u8;
            self.name_len = name.len() as u8;
            self.spilled = None;
        } else {
            self.namespace_len = SPILLED;
            self.spilled = Some(Box::new(key.clone()));
        }
    }
}

/// The interned Services: slots by id, a free list and the same-hash chains.
#[derive(Debug, Default)]
pub struct Interned {
    /// Slots, by id.
    slots: Vec<Slot>,
    /// Ids that are not interned, reused last-in first-out.
    free: Vec<UserId>,
    /// Upper half of a key hash -> first interned id with it (the rest chain through
    /// `Slot::next`).
    first: FastMap<u32, UserId>,
    /// Hashes Service keys.
    hasher: foldhash::fast::RandomState,
    /// Tests: every key hashes the same, so every Service shares one chain.
    #[cfg(test)]
    colliding: bool,
}

impl Interned {
    /// A table whose keys all have the same hash (tests the same-hash chains).
    #[cfg(test)]
    pub fn with_colliding_hashes() -> Interned {
        Interned {
            colliding: true,
            ..Interned::default()
        }
    }

    /// The hash of `key` and its id, if interned.
    pub fn find(&self, key: &ServiceKey) -> (u64, Option<UserId>) {
        let hash = self.hash(key);
        let mut id = self.first.get(&entry(hash)).copied().unwrap_or(NO_ID);
        while id != NO_ID {
            let slot = &self.slots[id as usize];
            if slot.hash == hash && slot.is(key) {
                return (hash, Some(id));
            }
            id = slot.next;
        }
        (hash, None)
    }

    fn hash(&self, key: &ServiceKey) -> u64 {
        #[cfg(test)]
        if self.colliding {
            return 0;
        }
        self.hasher.hash_one(key)
    }

    /// An id for `key` (not interned; `hash` is its hash from [`Interned::find`]), reusing a
    /// free one and its slot when there is. The slot is not live.
    pub fn intern(&mut self, key: &ServiceKey, hash: u64) -> UserId {
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize].set_key(key);
                id
            }
            None => {
                let id = UserId::try_from(self.slots.len())
                    .ok()
                    .filter(|id| *id <= MAX_ID)
                    .expect("fewer than 2^32 - 2 Services");
                if self.slots.len() == self.slots.capacity() {
                    // Grow by an eighth, not double: at 100,000 Services a doubled table
                    // would leave up to 25 MiB of slots unused.
                    self.slots.reserve_exact((self.slots.len() / 8).max(64));
                }
                self.slots.push(Slot::new(key, hash));
                id
            }
        };
        let first = self.first.entry(entry(hash)).or_insert(NO_ID);
        let slot = &mut self.slots[id as usize];
        slot.hash = hash;
        slot.next = std::mem::replace(first, id);
        id
    }

    /// Forgets `id` (not live): out of its hash chain and onto the free list. Its slot keeps
    /// its memory for the next Service.
    pub fn forget(&mut self, id: UserId) {
        let Slot {
            hash, next, live, ..
        } = self.slots[id as usize];
        debug_assert!(!live);
        match self.first.entry(entry(hash)) {
            Entry::Occupied(mut first) if *first.get() == id => {
                if next == NO_ID {
                    first.remove();
                } else {
                    *first.get_mut() = next;
                }
            }
            Entry::Occupied(first) => {
                let mut before = *first.get();
                while self.slots[before as usize].next != id {
                    before = self.slots[before as usize].next;
                    assert_ne!(before, NO_ID, "an interned id is in its hash chain");
                }
                self.slots[before as usize].next = next;
            }
            Entry::Vacant(_) => unreachable!("an interned id's hash is in the map"),
        }
        self.slots[id as usize].next = NO_ID;
        self.free.push(id);
    }

    /// The live slots.
    pub fn live(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.live)
    }
}

impl Index<UserId> for Interned {
    type Output = Slot;

    fn index(&self, id: UserId) -> &Slot {
        &self.slots[id as usize]
    }
}

impl IndexMut<UserId> for Interned {
    fn index_mut(&mut self, id: UserId) -> &mut Slot {
        &mut self.slots[id as usize]
    }
}

/// The entry of a key hash in `Interned::first`: its upper half (the map hashes it again, so
/// the half it uses to place entries is not the half every entry of a chain shares).
fn entry(hash: u64) -> u32 {
    (hash >> 32) as u32
}
