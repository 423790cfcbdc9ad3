//! The dynamic table shared in structure by encoder and decoder: entries addressed by
//! absolute index (0 = the first entry ever inserted), evicted oldest first.

use std::collections::VecDeque;

use crate::hpack::ENTRY_OVERHEAD;

/// Entry size: name + value + 32 (RFC 9204 §3.2.1).
pub(crate) fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + ENTRY_OVERHEAD
}

/// One entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);

#[derive(Debug, Default)]
pub(crate) struct Table {
    entries: VecDeque<Entry>,
    /// Absolute index of `entries[0]` (= entries evicted so far).
    dropped: u64,
    size: usize,
    capacity: usize,
}

impl Table {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    /// Insertions so far (the next entry's absolute index).
    pub(crate) fn insert_count(&self) -> u64 {
        self.dropped + self.entries.len() as u64
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn get(&self, abs: u64) -> Option<(&[u8], &[u8])> {
        let i = abs.checked_sub(self.dropped)?;
        let (n, v) = self.entries.get(usize::try_from(i).ok()?)?;
        Some((n, v))
    }

    /// Newest entry with this name and value (`field`) or this name (`name_only`).
    pub(crate) fn find(&self, name: &[u8], value: &[u8]) -> (Option<u64>, Option<u64>) {
        let mut by_name = None;
        for (i, (n, v)) in self.entries.iter().enumerate().rev() {
            if **n == *name {
                let abs = self.dropped + i as u64;
                if **v == *value {
                    return (Some(abs), by_name.or(Some(abs)));
                }
                by_name = by_name.or(Some(abs));
            }
        }
        (None, by_name)
    }

    /// Whether an entry of `size` bytes fits after evicting only entries with an absolute
    /// index below `evictable_below`.
    pub(crate) fn can_fit(&self, size: usize, evictable_below: u64) -> bool {
        if size > self.capacity {
            return false;
        }
        let mut free = self.capacity - self.size;
        let mut abs = self.dropped;
        let mut it = self.entries.iter();
        while free < size {
            if abs >= evictable_below {
                return false;
            }
            let Some((n, v)) = it.next() else {
                return false;
            };
            free += entry_size(n, v);
            abs += 1;
        }
        true
    }

    fn evict_until(&mut self, limit: usize) {
        while self.size > limit {
            let Some((n, v)) = self.entries.pop_front() else {
                break;
            };
            self.size -= entry_size(&n, &v);
            self.dropped += 1;
        }
    }

    /// Inserts (the caller checked that the entry fits the capacity).
    pub(crate) fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = entry_size(name, value);
        debug_assert!(size <= self.capacity);
        self.evict_until(self.capacity.saturating_sub(size));
        self.entries.push_back((name.into(), value.into()));
        self.size += size;
    }

    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.evict_until(capacity);
    }
}
