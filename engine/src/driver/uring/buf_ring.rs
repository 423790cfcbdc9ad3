//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): the kernel picks a free buffer for
//! each multishot receive, so idle connections hold no receive memory at all.
//!
//! This is the engine's one module that shares memory with the kernel by hand. Invariants:
//! the ring and the buffers are `memmap2` anonymous mappings owned by this struct, registered
//! with the ring for exactly this struct's lifetime (`Drop` unregisters before unmapping);
//! a buffer id is either owned by the kernel (published in the ring) or lent to the core
//! between its completion and [`BufRing::recycle`], never both.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::{IoUring, Submitter};
use memmap2::MmapMut;

pub(crate) struct BufRing {
    ring: MmapMut,
    bufs: MmapMut,
    entries: u16,
    buf_size: usize,
    bgid: u16,
    tail: u16,
    registered: bool,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("entries", &self.entries)
            .field("buf_size", &self.buf_size)
            .field("bgid", &self.bgid)
            .finish()
    }
}

impl BufRing {
    /// Maps `entries` (a power of two ≤ 32768) buffers of `buf_size` bytes and registers them
    /// as buffer group `bgid`.
    pub(crate) fn new(
        submitter: &Submitter<'_>,
        entries: u16,
        buf_size: usize,
        bgid: u16,
    ) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring entries must be a power of two <= 32768",
            ));
        }
        let ring = MmapMut::map_anon(entries as usize * std::mem::size_of::<BufRingEntry>())?;
        let bufs = MmapMut::map_anon(entries as usize * buf_size)?;
        let mut this = BufRing {
            ring,
            bufs,
            entries,
            buf_size,
            bgid,
            tail: 0,
            registered: false,
        };
        // SAFETY: the ring mapping is page-aligned, `entries` entries long, and owned by `this`,
        // which unregisters it in `Drop` before the mapping is released.
        unsafe {
            submitter.register_buf_ring_with_flags(this.ring.as_ptr() as u64, entries, bgid, 0)?
        };
        this.registered = true;
        for bid in 0..entries {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    fn entry_ptr(&mut self, slot: u16) -> *mut BufRingEntry {
        let idx = (slot & (self.entries - 1)) as usize;
        // SAFETY: `idx < entries`, so the pointer stays inside the ring mapping.
        unsafe { self.ring.as_mut_ptr().cast::<BufRingEntry>().add(idx) }
    }

    /// Writes buffer `bid` into the next ring slot (not yet visible to the kernel).
    fn push(&mut self, bid: u16) {
        let addr = self.bufs.as_ptr() as u64 + bid as u64 * self.buf_size as u64;
        let slot = self.tail;
        let e = self.entry_ptr(slot);
        // SAFETY: `e` points at a slot the kernel does not own: slots past the published tail
        // are the application's until the tail store below publishes them.
        let e = unsafe { &mut *e };
        e.set_addr(addr);
        e.set_len(self.buf_size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes pushed slots to the kernel.
    fn publish(&mut self) {
        let base = self.ring.as_ptr().cast::<BufRingEntry>();
        // SAFETY: `base` is the start of our live ring mapping; `tail` only computes the address
        // of the tail field inside its first entry.
        let tail_ptr = unsafe { BufRingEntry::tail(base) }.cast::<AtomicU16>();
        // SAFETY: the tail field is a properly aligned u16 inside the mapping we own, and it is
        // only ever accessed atomically (by the kernel and by this store).
        let tail = unsafe { &*tail_ptr };
        tail.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`, lent by the kernel's completion. Returns `None`
    /// for an id or length the kernel could not have produced.
    pub(crate) fn get(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= self.entries || len > self.buf_size {
            return None;
        }
        let start = bid as usize * self.buf_size;
        Some(&self.bufs[start..start + len])
    }

    /// Gives buffer `bid` back to the kernel.
    pub(crate) fn recycle(&mut self, bid: u16) {
        if bid < self.entries {
            self.push(bid);
            self.publish();
        }
    }

    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Unregisters from `ring` (call before dropping the ring).
    pub(crate) fn unregister(&mut self, ring: &IoUring) {
        if self.registered {
            let _ = ring.submitter().unregister_buf_ring(self.bgid);
            self.registered = false;
        }
    }
}
