//! Generation-checked handle tables: what a C handle's 64-bit id refers to.
//!
//! An id is `tag << 56 | generation << 32 | (index + 1)`: `tag` names the table (each kind of
//! handle has its own, so a subscription's id given where a stream's is expected is refused;
//! tags 1 to 8 are taken here, and 9 by the prepared calls, kept outside these tables in
//! `core_prepared.rs`), `generation` (24 bits) the slot's current occupant. Id 0 (a zeroed
//! handle) is never valid; freeing an entry bumps its slot's generation, so a freed id (use
//! after free, double free) no longer matches and is refused with `NTR_INVALID_HANDLE` even
//! after the slot is reused (until the same slot was reused 2^24 times). No pointer from C
//! is ever dereferenced to find an object.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::status::{Error, NTR_INVALID_HANDLE};

#[derive(Debug)]
struct Entry<T> {
    generation: u32,
    value: Option<T>,
}

#[derive(Debug)]
struct Slots<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
}

/// A table of live objects of one kind, shared by all threads.
#[derive(Debug)]
pub(crate) struct Table<T> {
    tag: u8,
    kind: &'static str,
    slots: Mutex<Slots<T>>,
}

/// Generations are 24 bits (the id's bits 32..56).
const GENERATIONS: u32 = 0x00ff_ffff;

impl<T> Table<T> {
    /// A table whose ids carry `tag` (distinct per table, non-zero) and say `kind` in errors.
    pub(crate) const fn new(tag: u8, kind: &'static str) -> Self {
        Table {
            tag,
            kind,
            slots: Mutex::new(Slots {
                entries: Vec::new(),
                free: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots<T>> {
        // A panic while holding the lock left the table consistent (every change is one
        // assignment), so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `value`; returns its id (never 0). Allocates only when the table grows.
    pub(crate) fn insert(&self, value: T) -> u64 {
        let mut s = self.lock();
        let index = match s.free.pop() {
            Some(i) => i,
            None => {
                // Ids hold the index in 32 bits: 4 billion live handles of one kind is a
                // leak in the program (each holds memory); refuse rather than alias one.
                let i = u32::try_from(s.entries.len())
                    .ok()
                    .filter(|&i| i < u32::MAX)
                    .expect("more than 4 billion live handles of one kind");
                s.entries.push(Entry {
                    generation: 1,
                    value: None,
                });
                i
            }
        };
        let e = &mut s.entries[index as usize];
        e.value = Some(value);
        u64::from(self.tag) << 56 | u64::from(e.generation) << 32 | (u64::from(index) + 1)
    }

    fn slot<'s>(&self, s: &'s mut Slots<T>, id: u64) -> Option<&'s mut Entry<T>> {
        if (id >> 56) as u8 != self.tag {
            return None;
        }
        let index = (id & 0xffff_ffff).checked_sub(1)? as usize;
        let generation = (id >> 32) as u32 & GENERATIONS;
        s.entries
            .get_mut(index)
            .filter(|e| e.generation == generation && e.value.is_some())
    }

    fn invalid(&self, id: u64) -> Error {
        Error::new(
            NTR_INVALID_HANDLE,
            format!(
                "invalid {} handle {id:#x}: zero, already freed or consumed, or not a {} handle",
                self.kind, self.kind
            ),
        )
    }

    /// Removes the object of `id` and returns it (the id is invalid from now on).
    pub(crate) fn remove(&self, id: u64) -> Result<T, Error> {
        let mut s = self.lock();
        let index = (id & 0xffff_ffff).wrapping_sub(1) as u32;
        let Some(e) = self.slot(&mut s, id) else {
            return Err(self.invalid(id));
        };
        let v = e.value.take();
        e.generation = (e.generation + 1) & GENERATIONS;
        if e.generation == 0 {
            e.generation = 1;
        }
        s.free.push(index);
        v.ok_or_else(|| self.invalid(id))
    }

    /// Runs `f` on the object of `id` while the table is locked (keep `f` short; it must not
    /// call back into C or into this table).
    pub(crate) fn with<R>(&self, id: u64, f: impl FnOnce(&mut T) -> R) -> Result<R, Error> {
        let mut s = self.lock();
        match self.slot(&mut s, id) {
            Some(e) => Ok(f(e.value.as_mut().ok_or_else(|| self.invalid(id))?)),
            None => Err(self.invalid(id)),
        }
    }

    /// Replaces the object of `id` by `f(object)`, under the table's lock (`f` must not call
    /// back into C). If `f` panics the entry is left empty, so the handle is invalid.
    pub(crate) fn update(&self, id: u64, f: impl FnOnce(T) -> T) -> Result<(), Error> {
        let mut s = self.lock();
        let Some(e) = self.slot(&mut s, id) else {
            return Err(self.invalid(id));
        };
        let old = e.value.take().ok_or_else(|| self.invalid(id))?;
        e.value = Some(f(old));
        Ok(())
    }
}

impl<T: Clone> Table<T> {
    /// A clone of the object of `id` (handles hold `Arc`s or cheap clones).
    pub(crate) fn get(&self, id: u64) -> Result<T, Error> {
        self.with(id, |v| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_and_forged_ids_are_refused() {
        let t = Table::<u32>::new(100, "test");
        let a = t.insert(7);
        assert_ne!(a, 0);
        assert_eq!(t.get(a).unwrap(), 7);
        assert_eq!(t.remove(a).unwrap(), 7);
        assert_eq!(t.get(a).unwrap_err().status, NTR_INVALID_HANDLE);
        assert_eq!(
            t.remove(a).unwrap_err().status,
            NTR_INVALID_HANDLE,
            "double free"
        );
        let b = t.insert(8);
        assert_ne!(a, b, "the reused slot has a new generation");
        assert_eq!(t.get(a).unwrap_err().status, NTR_INVALID_HANDLE);
        assert_eq!(t.get(b).unwrap(), 8);
        assert!(t.get(0).is_err());
        assert!(t.get(u64::MAX).is_err());
    }

    #[test]
    fn an_id_of_another_table_is_refused_even_at_the_same_slot() {
        let (a, b) = (Table::<u32>::new(101, "a"), Table::<u32>::new(102, "b"));
        let (ia, ib) = (a.insert(1), b.insert(2));
        assert_eq!(
            ia & 0x00ff_ffff_ffff_ffff,
            ib & 0x00ff_ffff_ffff_ffff,
            "same slot"
        );
        assert_eq!(a.get(ib).unwrap_err().status, NTR_INVALID_HANDLE);
        assert_eq!(b.remove(ia).unwrap_err().status, NTR_INVALID_HANDLE);
        assert_eq!((a.get(ia).unwrap(), b.get(ib).unwrap()), (1, 2));
    }
}
