//! Raw access to one ring's control block and data area. This and `segment.rs` are the only
//! places the ring touches raw pointers.
//!
//! Record header words are atomics: they carry the publication (the consumer polls the header
//! at its read position, the producer publishes a batch with one release store of its first
//! header), and a peer writing the same word at the same time is no data race. Payloads are
//! lent as slices (see docs/shm.md, "What is validated", for what a malicious peer can and
//! cannot do to a lent slice).
//!
//! Under `--cfg loom` header words live in loom atomics (one per 8-byte word, kept apart from
//! the bytes, so a stale header of an earlier lap is never silently overwritten by payload),
//! and every payload access is reported to loom through one `loom::cell::UnsafeCell<()>` per
//! 8-byte word, so a missing happens-before edge between the producer's writes and the
//! consumer's reads (or the reverse, on reuse) fails the model.

use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::sync::{AtomicU64 as Word, Ordering};

use crate::layout::RingControl;

/// Whatever keeps a ring's memory alive (a mapping or a heap allocation).
pub(crate) type Owner = Arc<dyn Any + Send + Sync>;

/// A handle on one ring's memory; the producer and the consumer each hold one.
pub(crate) struct RingMem {
    ctrl: NonNull<RingControl>,
    data: NonNull<u8>,
    cap: usize,
    _owner: Owner,
    #[cfg(loom)]
    cells: Arc<[loom::cell::UnsafeCell<()>]>,
    #[cfg(loom)]
    headers: Arc<[Word]>,
}

// SAFETY: the pointers stay valid while `_owner` (which is `Send + Sync`) lives, and all
// cross-thread access goes through atomics or through the SPSC protocol (a slice is only
// accessed by the side that currently owns that part of the ring).
unsafe impl Send for RingMem {}

impl RingMem {
    /// Builds a handle.
    ///
    /// # Safety
    /// `ctrl` must point to a `RingControl` and `data` to `cap` bytes (8-aligned, `cap` a power
    /// of two >= 64), both valid for reads and writes for as long as `owner` is alive, and not
    /// accessed through Rust references other than those this type hands out.
    pub(crate) unsafe fn new(
        ctrl: NonNull<RingControl>,
        data: NonNull<u8>,
        cap: usize,
        owner: Owner,
    ) -> Self {
        debug_assert!(cap.is_power_of_two() && cap >= 64);
        debug_assert!(data.as_ptr().align_offset(8) == 0);
        Self {
            ctrl,
            data,
            cap,
            _owner: owner,
            #[cfg(loom)]
            cells: (0..cap / 8)
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect(),
            #[cfg(loom)]
            headers: (0..cap / 8).map(|_| Word::new(0)).collect(),
        }
    }

    /// A second handle on the same memory (the other side's).
    pub(crate) fn share(&self) -> Self {
        Self {
            ctrl: self.ctrl,
            data: self.data,
            cap: self.cap,
            _owner: Arc::clone(&self._owner),
            #[cfg(loom)]
            cells: Arc::clone(&self.cells),
            #[cfg(loom)]
            headers: Arc::clone(&self.headers),
        }
    }

    /// The control block.
    #[inline]
    pub(crate) fn ctrl(&self) -> &RingControl {
        // SAFETY: `new`'s contract: `ctrl` is valid while `_owner` lives, which outlives `&self`;
        // the block only holds atomics, so a shared reference is fine even if the peer writes.
        unsafe { self.ctrl.as_ref() }
    }

    /// Capacity of the data area in bytes.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    #[cfg(not(loom))]
    #[inline]
    fn word(&self, pos: usize) -> &Word {
        assert!(
            pos % 8 == 0 && pos < self.cap,
            "ring word offset out of range"
        );
        let p = self.data.as_ptr().wrapping_add(pos).cast::<u64>();
        // SAFETY: `pos + 8 <= cap` (8-aligned and below `cap`, which is a multiple of 8), so `p`
        // is in bounds and 8-aligned; the memory lives as long as `&self`. Header words are only
        // ever accessed atomically.
        unsafe { Word::from_ptr(p) }
    }

    #[cfg(loom)]
    fn word(&self, pos: usize) -> &Word {
        assert!(
            pos % 8 == 0 && pos < self.cap,
            "ring word offset out of range"
        );
        &self.headers[pos / 8]
    }

    /// Reads the record header word at `pos` (acquire: a non-zero header publishes the record
    /// and, for the first record of a batch, every record after it in the batch).
    ///
    /// Header words are atomics that both sides touch concurrently by design (the consumer
    /// polls the slot the producer will publish into), so they are not tracked as data cells
    /// under loom; payload words are.
    #[inline]
    pub(crate) fn load_header(&self, pos: usize) -> u64 {
        self.word(pos).load(Ordering::Acquire)
    }

    /// Writes the record header word at `pos` (relaxed: a later release store publishes it).
    #[inline]
    pub(crate) fn store_header(&self, pos: usize, value: u64) {
        self.word(pos).store(value, Ordering::Relaxed);
    }

    /// Writes the record header word at `pos` with release ordering: this publishes the
    /// record, and everything this side wrote before (payloads, later headers of the batch,
    /// the zero that ends the batch).
    #[inline]
    pub(crate) fn publish_header(&self, pos: usize, value: u64) {
        self.word(pos).store(value, Ordering::Release);
    }

    /// The `len` bytes at `pos` (a published payload the consumer owns until release).
    #[inline]
    pub(crate) fn bytes(&self, pos: usize, len: usize) -> &[u8] {
        assert!(
            pos <= self.cap && len <= self.cap - pos,
            "ring slice out of range"
        );
        self.track_read(pos, len);
        let p = self.data.as_ptr().wrapping_add(pos);
        // SAFETY: `pos + len <= cap` was just checked, so the range is inside the data area,
        // which lives as long as `&self`. The SPSC protocol gives this side the range: the
        // honest peer does not write it until we release it.
        unsafe { std::slice::from_raw_parts(p, len) }
    }

    /// The address of offset `pos` of the data area and what keeps it mapped, for space lent
    /// out as raw memory (`Producer::lend`).
    #[cfg(not(loom))]
    pub(crate) fn raw(&self, pos: usize) -> (NonNull<u8>, Owner) {
        assert!(pos <= self.cap, "ring offset out of range");
        // `pos <= cap`: inside the data area or one past its end (an empty lend), not null.
        let p = NonNull::new(self.data.as_ptr().wrapping_add(pos)).expect("inside the mapping");
        (p, Arc::clone(&self._owner))
    }

    /// The `len` bytes at `pos`, writable (space the producer reserved).
    #[inline]
    pub(crate) fn bytes_mut(&mut self, pos: usize, len: usize) -> &mut [u8] {
        assert!(
            pos <= self.cap && len <= self.cap - pos,
            "ring slice out of range"
        );
        self.track_write(pos, len);
        let p = self.data.as_ptr().wrapping_add(pos);
        // SAFETY: in bounds as checked above; `&mut self` makes this the only slice this side
        // hands out, and the SPSC protocol keeps the honest peer off reserved space.
        unsafe { std::slice::from_raw_parts_mut(p, len) }
    }

    #[cfg(loom)]
    fn cells(&self, pos: usize, len: usize) -> &[loom::cell::UnsafeCell<()>] {
        let end = (pos + len).div_ceil(8).min(self.cells.len());
        &self.cells[(pos / 8).min(end)..end]
    }

    #[cfg(loom)]
    fn track_read(&self, pos: usize, len: usize) {
        for c in self.cells(pos, len) {
            c.with(|_| ());
        }
    }

    #[cfg(loom)]
    fn track_write(&self, pos: usize, len: usize) {
        for c in self.cells(pos, len) {
            c.with_mut(|_| ());
        }
    }

    #[cfg(not(loom))]
    #[inline(always)]
    fn track_read(&self, _pos: usize, _len: usize) {}

    #[cfg(not(loom))]
    #[inline(always)]
    fn track_write(&self, _pos: usize, _len: usize) {}
}

/// A ring allocated on the heap, for in-process channels, tests and loom models.
struct HeapRing {
    ctrl: NonNull<RingControl>,
    data: NonNull<u8>,
    layout: std::alloc::Layout,
}

// SAFETY: HeapRing only owns two allocations and frees them in Drop; it has no thread affinity.
unsafe impl Send for HeapRing {}
// SAFETY: HeapRing has no methods that access the memory; sharing it shares nothing.
unsafe impl Sync for HeapRing {}

impl Drop for HeapRing {
    fn drop(&mut self) {
        // SAFETY: `ctrl` came from `Box::into_raw` in `heap_ring` and is freed only here.
        drop(unsafe { Box::from_raw(self.ctrl.as_ptr()) });
        // SAFETY: `data` was allocated with exactly `layout` in `heap_ring` and is freed only here.
        unsafe { std::alloc::dealloc(self.data.as_ptr(), self.layout) };
    }
}

/// Allocates a zeroed ring of `cap` bytes (a power of two >= 64) on the heap.
pub(crate) fn heap_ring(cap: usize) -> RingMem {
    let layout = std::alloc::Layout::from_size_align(cap, 128).expect("capacity checked by caller");
    // SAFETY: `layout` has a non-zero size (cap >= 64).
    let raw = unsafe { std::alloc::alloc_zeroed(layout) };
    let Some(data) = NonNull::new(raw) else {
        std::alloc::handle_alloc_error(layout)
    };
    let ctrl = NonNull::from(Box::leak(Box::new(RingControl::new())));
    let owner: Owner = Arc::new(HeapRing { ctrl, data, layout });
    // SAFETY: both allocations are owned by `owner`, live until it drops, are 128-aligned and
    // zeroed, and only accessed through `RingMem`.
    unsafe { RingMem::new(ctrl, data, cap, owner) }
}
