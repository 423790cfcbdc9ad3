//! The dynamic table: a FIFO of (name, value) entries bounded by size, as in RFC 7541 §4.
//!
//! Entry size is `name.len() + value.len() + 32`. Inserting evicts the oldest entries until the
//! new one fits; an entry larger than the whole table empties it and is not added. Encoder and
//! decoder apply the same rule to the same sequence of insertions, so their indices agree.
//!
//! Storage is one byte arena of `2 * limit` bytes with entries laid out contiguously, wrapping
//! to offset 0 when an entry does not fit at the end (like a ring with a padding record). The
//! factor two guarantees the new entry always fits next to the live ones (see `place`), so the
//! layout never forces an eviction the size rule would not. The arena grows lazily, so an idle
//! connection pays nothing; in steady state inserts allocate nothing.

use std::collections::VecDeque;

/// Per-entry overhead counted by the size rule.
pub const ENTRY_OVERHEAD: usize = 32;

#[derive(Debug, Clone, Copy)]
struct Entry {
    off: u32,
    name_len: u32,
    value_len: u32,
}

impl Entry {
    fn bytes(&self) -> usize {
        (self.name_len + self.value_len) as usize
    }
    fn size(&self) -> usize {
        self.bytes() + ENTRY_OVERHEAD
    }
}

/// Where a new entry's name comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NameSource<'a> {
    /// Bytes outside the table.
    Bytes(&'a [u8]),
    /// The name of the dynamic entry with this 1-based index (1 = newest), read before the
    /// insertion evicts anything.
    Entry(u32),
}

#[derive(Debug)]
pub(crate) struct DynamicTable {
    entries: VecDeque<Entry>,
    arena: Vec<u8>,
    /// Offset where the next entry goes if it fits before the end.
    tail: usize,
    /// Sum of entry sizes.
    size: usize,
    /// Current maximum size (changed by size updates, never above `limit`).
    max_size: usize,
    /// Negotiated upper bound for `max_size`.
    limit: usize,
    /// Number of entries ever inserted; the newest entry's id is `inserted - 1`.
    inserted: u64,
}

impl DynamicTable {
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            entries: VecDeque::new(),
            arena: Vec::new(),
            tail: 0,
            size: 0,
            max_size: limit as usize,
            limit: limit as usize,
            inserted: 0,
        }
    }

    pub(crate) fn len(&self) -> u32 {
        self.entries.len() as u32
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn max_size(&self) -> usize {
        self.max_size
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The insertion id of the entry at 1-based dynamic index `idx` (1 = newest).
    pub(crate) fn id_of(&self, idx: u32) -> u64 {
        self.inserted - idx as u64
    }

    /// The 1-based dynamic index of the entry with insertion id `id`, if still present.
    pub(crate) fn index_of_id(&self, id: u64) -> Option<u32> {
        let age = self.inserted.checked_sub(id)?;
        (age >= 1 && age <= self.entries.len() as u64).then_some(age as u32)
    }

    /// Arena offset of the entry at 1-based dynamic index `idx` (stable while it lives).
    #[inline]
    pub(crate) fn offset_of(&self, idx: u32) -> Option<u32> {
        let i = self.entries.len().checked_sub(idx as usize)?;
        (idx != 0).then(|| self.entries[i].off)
    }

    /// `len` arena bytes at `off` (for verifying an encoder hint without the entry list).
    #[inline]
    pub(crate) fn arena_bytes(&self, off: u32, len: usize) -> Option<&[u8]> {
        self.arena.get(off as usize..off as usize + len)
    }

    /// Name and value of the entry at 1-based dynamic index `idx` (1 = newest).
    #[inline]
    pub(crate) fn get(&self, idx: u32) -> Option<(&[u8], &[u8])> {
        let n = self.entries.len();
        let i = n.checked_sub(idx as usize)?;
        if idx == 0 {
            return None;
        }
        let e = self.entries[i];
        let off = e.off as usize;
        let mid = off + e.name_len as usize;
        Some((
            &self.arena[off..mid],
            &self.arena[mid..mid + e.value_len as usize],
        ))
    }

    /// Sets a new maximum size (≤ limit, checked by the caller), evicting as needed.
    pub(crate) fn set_max_size(
        &mut self,
        max: usize,
        on_evict: &mut impl FnMut(&[u8], &[u8], u64),
    ) {
        debug_assert!(max <= self.limit);
        self.max_size = max;
        while self.size > self.max_size {
            self.evict_oldest(on_evict);
        }
    }

    fn evict_oldest(&mut self, on_evict: &mut impl FnMut(&[u8], &[u8], u64)) {
        let id = self.inserted - self.entries.len() as u64;
        if let Some(e) = self.entries.pop_front() {
            let off = e.off as usize;
            let mid = off + e.name_len as usize;
            on_evict(
                &self.arena[off..mid],
                &self.arena[mid..mid + e.value_len as usize],
                id,
            );
            self.size -= e.size();
        }
        if self.entries.is_empty() {
            self.tail = 0;
        }
    }

    /// Inserts (name, value), evicting by the size rule. Returns `false` if the entry is larger
    /// than the table (the table is then empty and nothing was added).
    pub(crate) fn insert(
        &mut self,
        name: NameSource<'_>,
        value: &[u8],
        on_evict: &mut impl FnMut(&[u8], &[u8], u64),
    ) -> bool {
        // Resolve the name's location before evicting: an evicted entry's bytes stay in the
        // arena until overwritten, and the copy below is a memmove, so a name that lies in an
        // entry this insertion evicts is still copied correctly (RFC 7541 §4.4).
        let (name_len, name_src) = match name {
            NameSource::Bytes(b) => (b.len(), None),
            NameSource::Entry(idx) => {
                let i = self.entries.len() - idx as usize;
                let e = self.entries[i];
                (e.name_len as usize, Some(e.off as usize))
            }
        };
        let bytes = name_len + value.len();
        let size = bytes + ENTRY_OVERHEAD;
        if size > self.max_size {
            while !self.entries.is_empty() {
                self.evict_oldest(on_evict);
            }
            return false;
        }
        while self.size + size > self.max_size {
            self.evict_oldest(on_evict);
        }
        // Every entry occupies at least one byte so that offsets order the live entries
        // unambiguously (an empty entry would otherwise sit where the next one goes).
        let span = bytes.max(1);
        let off = self.place(span);
        let end = off + span;
        if self.arena.len() < end {
            self.arena.resize(end, 0);
        }
        match (name, name_src) {
            (_, Some(src)) => self.arena.copy_within(src..src + name_len, off),
            (NameSource::Bytes(b), None) => self.arena[off..off + name_len].copy_from_slice(b),
            (NameSource::Entry(_), None) => unreachable!("entry names always have a source"),
        }
        self.arena[off + name_len..off + bytes].copy_from_slice(value);
        self.entries.push_back(Entry {
            off: off as u32,
            name_len: name_len as u32,
            value_len: value.len() as u32,
        });
        self.tail = end;
        self.size += size;
        self.inserted += 1;
        true
    }

    /// Chooses the offset for `bytes` new bytes, after eviction made room by the size rule.
    ///
    /// Live entries occupy the arc from the oldest entry's offset forward to `tail`, possibly
    /// wrapping once, with at most one unused gap (before a wrap) shorter than the entry that
    /// wrapped. Each entry spans at most its size minus 31 bytes, so with capacity
    /// `2 * limit` and live sizes `<= limit - size_of_new`, the free space is at least
    /// `bytes`, and it is contiguous at `tail` or at 0. (`head == tail` with live entries
    /// would mean a full arena, which that bound rules out.)
    fn place(&self, bytes: usize) -> usize {
        let cap = 2 * self.limit;
        let Some(oldest) = self.entries.front() else {
            return 0;
        };
        let head = oldest.off as usize;
        if head < self.tail {
            // Not wrapped: free space is [tail, cap) and [0, head).
            if self.tail + bytes <= cap {
                self.tail
            } else {
                0
            }
        } else {
            // Wrapped: free space is [tail, head).
            self.tail
        }
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let sum: usize = self.entries.iter().map(Entry::size).sum();
        assert_eq!(sum, self.size);
        assert!(self.size <= self.max_size);
        assert!(self.arena.len() <= 2 * self.limit.max(1));
        // No two live entries overlap.
        let mut spans: Vec<(usize, usize)> = self
            .entries
            .iter()
            .map(|e| (e.off as usize, e.off as usize + e.bytes().max(1)))
            .collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap {w:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn no_evict() -> impl FnMut(&[u8], &[u8], u64) {
        |_, _, _| {}
    }

    #[test]
    fn evicts_oldest_first_and_indexes_newest_first() {
        let mut t = DynamicTable::new(100);
        assert!(t.insert(NameSource::Bytes(b"a"), b"1", &mut no_evict())); // 34
        assert!(t.insert(NameSource::Bytes(b"b"), b"2", &mut no_evict())); // 68
        assert_eq!(t.get(1), Some((&b"b"[..], &b"2"[..])));
        assert_eq!(t.get(2), Some((&b"a"[..], &b"1"[..])));
        let mut evicted = Vec::new();
        assert!(t.insert(
            NameSource::Bytes(b"c"),
            b"3",
            &mut |n: &[u8], _: &[u8], id| evicted.push((n.to_vec(), id))
        ));
        assert_eq!(evicted, vec![(b"a".to_vec(), 0)]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(3), None);
        assert_eq!(t.get(0), None);
    }

    #[test]
    fn oversized_entry_empties_the_table() {
        let mut t = DynamicTable::new(64);
        t.insert(NameSource::Bytes(b"a"), b"1", &mut no_evict());
        assert!(!t.insert(NameSource::Bytes(b"name"), &[0u8; 40], &mut no_evict()));
        assert_eq!(t.len(), 0);
        assert_eq!(t.size(), 0);
    }

    #[test]
    fn name_from_an_entry_being_evicted() {
        let mut t = DynamicTable::new(80);
        t.insert(NameSource::Bytes(b"long-name"), b"v", &mut no_evict()); // 42
        // Needs the whole table: evicts entry 1, whose name it copies.
        assert!(t.insert(NameSource::Entry(1), b"0123456789ab", &mut no_evict()));
        assert_eq!(t.get(1), Some((&b"long-name"[..], &b"0123456789ab"[..])));
        t.check_invariants();
    }

    proptest! {
        #[test]
        fn arena_never_overlaps_and_sizes_hold(
            limit in 32u32..600,
            ops in proptest::collection::vec((0usize..40, 0usize..120, any::<bool>()), 1..200),
        ) {
            let mut t = DynamicTable::new(limit);
            let mut model: VecDeque<(Vec<u8>, Vec<u8>)> = VecDeque::new();
            for (i, (nl, vl, from_entry)) in ops.into_iter().enumerate() {
                let value = vec![i as u8; vl];
                let name: Vec<u8> = if from_entry && t.len() > 0 {
                    t.get(1).unwrap().0.to_vec()
                } else {
                    vec![b'n'; nl]
                };
                let src = if from_entry && t.len() > 0 { NameSource::Entry(1) } else { NameSource::Bytes(&name) };
                let added = t.insert(src, &value, &mut no_evict());
                // Model: RFC 7541 rule.
                let size = name.len() + value.len() + 32;
                if size > limit as usize { model.clear(); prop_assert!(!added); }
                else {
                    while model.iter().map(|(n, v)| n.len() + v.len() + 32).sum::<usize>() + size > limit as usize {
                        model.pop_front();
                    }
                    model.push_back((name, value));
                    prop_assert!(added);
                }
                t.check_invariants();
                prop_assert_eq!(t.len() as usize, model.len());
                for (k, (n, v)) in model.iter().rev().enumerate() {
                    let (tn, tv) = t.get(k as u32 + 1).unwrap();
                    prop_assert_eq!(tn, &n[..]);
                    prop_assert_eq!(tv, &v[..]);
                }
            }
        }
    }
}
