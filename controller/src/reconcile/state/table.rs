//! The state's entry per Service: a map from key to a position in one slab of entries.
//!
//! At 100,000 Services the entries are most of the controller's memory. In one slab they sit in
//! one block grown by an eighth at a time, where boxed entries would each be a heap block
//! allocated amid the short-lived blocks of decoding the watched object, pinning pages the rest
//! of which is freed (resident memory stays high after a burst), and where entries inline in the
//! map would leave up to half of a power-of-two table unused.

use std::collections::HashMap;

use slab::Slab;

use crate::ipam::ServiceKey;

/// Entries by Service key.
#[derive(Debug)]
pub struct Table<T> {
    index: HashMap<ServiceKey, usize>,
    entries: Slab<T>,
}

impl<T> Default for Table<T> {
    fn default() -> Table<T> {
        Table {
            index: HashMap::new(),
            entries: Slab::new(),
        }
    }
}

impl<T> Table<T> {
    /// The entry of `key`.
    pub fn get(&self, key: &ServiceKey) -> Option<&T> {
        self.index.get(key).map(|&i| &self.entries[i])
    }

    /// The entry of `key`, to change.
    pub fn get_mut(&mut self, key: &ServiceKey) -> Option<&mut T> {
        self.index.get(key).map(|&i| &mut self.entries[i])
    }

    /// Whether `key` has an entry.
    pub fn contains_key(&self, key: &ServiceKey) -> bool {
        self.index.contains_key(key)
    }

    /// Makes `value` the entry of `key`; the one it replaces, if any.
    pub fn insert(&mut self, key: ServiceKey, value: T) -> Option<T> {
        if let Some(&i) = self.index.get(&key) {
            return Some(std::mem::replace(&mut self.entries[i], value));
        }
        if self.entries.len() == self.entries.capacity() {
            self.entries.reserve_exact((self.entries.len() / 8).max(64));
        }
        self.index.insert(key, self.entries.insert(value));
        None
    }

    /// Removes the entry of `key`.
    pub fn remove(&mut self, key: &ServiceKey) -> Option<T> {
        self.index.remove(key).map(|i| self.entries.remove(i))
    }

    /// Every key and its entry.
    pub fn iter(&self) -> impl Iterator<Item = (&ServiceKey, &T)> {
        self.index.iter().map(|(k, &i)| (k, &self.entries[i]))
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.index.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_replaced_and_removed_by_key() {
        let mut t: Table<u32> = Table::default();
        let key = |i: u32| ServiceKey::new("ns", format!("svc-{i}"));
        for i in 0..1_000 {
            assert_eq!(t.insert(key(i), i), None);
        }
        let capacity = t.entries.capacity();
        assert_eq!(t.insert(key(7), 70), Some(7));
        assert_eq!(t.get(&key(7)), Some(&70));
        *t.get_mut(&key(8)).unwrap() += 1;
        assert_eq!(t.get(&key(8)), Some(&9));
        for i in (0..1_000).step_by(2) {
            assert!(t.remove(&key(i)).is_some());
        }
        assert_eq!(t.remove(&key(0)), None);
        assert!(!t.contains_key(&key(0)) && t.contains_key(&key(1)));
        // Freed positions are reused, and nobody's entry moves.
        for i in 1_000..1_500 {
            t.insert(key(i), i);
        }
        assert_eq!(t.entries.capacity(), capacity);
        assert_eq!(t.iter().count(), 1_000);
        for i in (1..1_000).step_by(2).chain(1_000..1_500) {
            let want = if i == 7 {
                70
            } else if i == 8 {
                9
            } else {
                i
            };
            assert_eq!(t.get(&key(i)), Some(&want), "{i}");
        }
        let mut keys: Vec<_> = t.keys().cloned().collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 1_000);
    }

    #[test]
    fn the_slab_grows_by_an_eighth() {
        let mut t: Table<u8> = Table::default();
        for i in 0..10_000 {
            t.insert(ServiceKey::new("ns", i.to_string()), 0);
        }
        assert!(t.entries.capacity() <= 10_000 + 10_000 / 8 + 64);
    }
}
