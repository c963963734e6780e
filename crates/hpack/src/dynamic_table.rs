//! The decoder's dynamic table (RFC 7541 §2.3.2, §4).
//!
//! Newest entry first in a `VecDeque`, so index lookups are O(1) and eviction
//! pops from the back. Each entry is one boxed slice holding name then value
//! (one allocation per insert; entries that cannot fit are never allocated).

use std::collections::VecDeque;

/// Per-entry overhead in the RFC 7541 §4.1 size accounting.
const ENTRY_OVERHEAD: usize = 32;

/// A resolved table entry: `(name, value, static name index)`.
pub(crate) type Resolved<'a> = (&'a [u8], &'a [u8], Option<u8>);

/// One owned table entry, ready to insert.
#[derive(Debug)]
pub(crate) struct Entry {
    bytes: Box<[u8]>,
    name_len: usize,
    static_name: Option<u8>,
}

impl Entry {
    /// The §4.1 size: name + value + 32.
    fn size(&self) -> usize {
        self.bytes.len().saturating_add(ENTRY_OVERHEAD)
    }

    fn parts(&self) -> (&[u8], &[u8]) {
        self.bytes
            .split_at_checked(self.name_len)
            .unwrap_or((&[], &[]))
    }
}

/// The dynamic table: entries, their total §4.1 size and the current limit.
#[derive(Debug)]
pub(crate) struct DynamicTable {
    entries: VecDeque<Entry>,
    size: usize,
    capacity: usize,
}

impl DynamicTable {
    /// An empty table limited to `capacity` octets.
    pub(crate) fn new(capacity: usize) -> DynamicTable {
        DynamicTable {
            entries: VecDeque::new(),
            size: 0,
            capacity,
        }
    }

    /// Current size in octets (§4.1 accounting).
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Current maximum size, as last set by a size update.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entry `i`, 0 = newest: `(name, value, static name index)`.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<Resolved<'_>> {
        let entry = self.entries.get(i)?;
        let (name, value) = entry.parts();
        Some((name, value, entry.static_name))
    }

    /// Copies `name` and `value` into an entry, or returns `None` when the
    /// entry is larger than the whole table (§4.4: inserting it only empties
    /// the table), in which case nothing is allocated.
    pub(crate) fn prepare(
        &self,
        name: &[u8],
        value: &[u8],
        static_name: Option<u8>,
    ) -> Option<Entry> {
        let size = name
            .len()
            .saturating_add(value.len())
            .saturating_add(ENTRY_OVERHEAD);
        if size > self.capacity {
            return None;
        }
        let mut bytes = Vec::with_capacity(name.len() + value.len());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        Some(Entry {
            bytes: bytes.into_boxed_slice(),
            name_len: name.len(),
            static_name,
        })
    }

    /// Inserts a prepared entry, evicting oldest entries until it fits
    /// (§4.4); `None` (an oversized entry) empties the table.
    pub(crate) fn insert(&mut self, entry: Option<Entry>) {
        match entry {
            Some(entry) => {
                let size = entry.size();
                self.evict_to(self.capacity.saturating_sub(size));
                if size <= self.capacity {
                    self.size += size;
                    self.entries.push_front(entry);
                }
            }
            None => self.evict_to(0),
        }
    }

    /// Applies a dynamic table size update (§4.3), evicting as needed.
    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.evict_to(capacity);
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_back() {
                Some(old) => self.size = self.size.saturating_sub(old.size()),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(t: &mut DynamicTable, name: &str, value: &str) {
        let e = t.prepare(name.as_bytes(), value.as_bytes(), None);
        t.insert(e);
    }

    #[test]
    fn evicts_oldest_first() {
        let mut t = DynamicTable::new(100);
        insert(&mut t, "a", "1"); // 34
        insert(&mut t, "b", "2"); // 68
        assert_eq!((t.len(), t.size()), (2, 68));
        insert(&mut t, "c", "3"); // would be 102: evict "a"
        assert_eq!((t.len(), t.size()), (2, 68));
        assert_eq!(t.get(0), Some((&b"c"[..], &b"3"[..], None)));
        assert_eq!(t.get(1), Some((&b"b"[..], &b"2"[..], None)));
        assert_eq!(t.get(2), None);
    }

    #[test]
    fn exact_fit_and_oversized() {
        let mut t = DynamicTable::new(40);
        insert(&mut t, "ab", "cdef"); // 38
        assert_eq!(t.size(), 38);
        insert(&mut t, "abc", "defgh"); // 40: evicts, then fits exactly
        assert_eq!((t.len(), t.size()), (1, 40));
        insert(&mut t, "abc", "defghi"); // 41: empties the table
        assert_eq!((t.len(), t.size()), (0, 0));
    }

    #[test]
    fn shrinking_evicts() {
        let mut t = DynamicTable::new(4096);
        for i in 0..10 {
            insert(&mut t, "name", &i.to_string()); // 37 each
        }
        assert_eq!(t.size(), 370);
        t.set_capacity(100);
        assert_eq!((t.len(), t.size()), (2, 74));
        assert_eq!(t.get(0).unwrap().1, b"9");
        t.set_capacity(0);
        assert_eq!((t.len(), t.size()), (0, 0));
        insert(&mut t, "", "");
        assert_eq!(t.len(), 0);
    }
}
