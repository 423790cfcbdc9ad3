//! The shared segment: a sealed memfd mapped with `memmap2`.
//!
//! The server creates it (and seals it against shrinking and growing, so the client cannot
//! make the server's accesses fault with `SIGBUS`); the client checks the seals, the size and
//! the header before using it.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{MemfdFlags, SealFlags};

use crate::error::{Error, Result};
use crate::layout::{HEADER_WORDS, MAX_CAPACITY, SegmentLayout};
use crate::ring::mem::RingMem;

/// A mapped segment and its validated layout.
pub(crate) struct Segment {
    map: MmapRaw,
    layout: SegmentLayout,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("layout", &self.layout)
            .finish()
    }
}

impl Segment {
    /// Creates a zeroed, sealed memfd of the layout's size, maps it and writes the header.
    /// Returns the segment and the memfd to send to the client.
    pub(crate) fn create(layout: SegmentLayout) -> Result<(Arc<Self>, OwnedFd)> {
        let fd = rustix::fs::memfd_create(
            "netron-shm",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| Error::io("memfd_create", e))?;
        rustix::fs::ftruncate(&fd, layout.len as u64).map_err(|e| Error::io("ftruncate", e))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(|e| Error::io("fcntl(F_ADD_SEALS)", e))?;
        let file = File::from(fd);
        let map = map(&file)?;
        let seg = Self { map, layout };
        for (i, w) in layout.to_words().iter().enumerate() {
            seg.header_word(i).store(*w, Ordering::Relaxed);
        }
        Ok((Arc::new(seg), OwnedFd::from(file)))
    }

    /// Maps a segment received from the server and validates it.
    pub(crate) fn open(fd: OwnedFd) -> Result<Arc<Self>> {
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|_| Error::Handshake {
            what: "the segment fd is not a sealable memfd",
        })?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(Error::Handshake {
                what: "the segment memfd is not sealed against shrinking",
            });
        }
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("fstat on the segment", e))?;
        let len = usize::try_from(st.st_size).unwrap_or(usize::MAX);
        if !(4096..=4096 * 3 + 2 * MAX_CAPACITY).contains(&len) {
            return Err(Error::Corrupt {
                what: "segment size is out of range",
            });
        }
        let file = File::from(fd);
        let map = map(&file)?;
        if map.len() != len {
            return Err(Error::Corrupt {
                what: "segment size changed while mapping",
            });
        }
        let words: [u64; HEADER_WORDS] =
            std::array::from_fn(|i| header_word(&map, i).load(Ordering::Relaxed));
        let layout = SegmentLayout::from_words(&words, len)?;
        Ok(Arc::new(Self { map, layout }))
    }

    /// Base address and length of the mapping.
    pub(crate) fn span(&self) -> (*mut u8, usize) {
        (self.map.as_mut_ptr(), self.map.len())
    }

    fn header_word(&self, i: usize) -> &AtomicU64 {
        header_word(&self.map, i)
    }

    /// Handle on ring `index` (0: client → server, 1: server → client).
    pub(crate) fn ring(self: &Arc<Self>, index: usize) -> RingMem {
        let r = self.layout.rings[index];
        let base = self.map.as_mut_ptr();
        let ctrl = NonNull::new(base.wrapping_add(r.ctrl).cast()).expect("mapping is non-null");
        let data = NonNull::new(base.wrapping_add(r.data)).expect("mapping is non-null");
        let owner: crate::ring::mem::Owner = self.clone();
        // SAFETY: the layout was validated (or computed) against this mapping's length: the
        // control block (384 bytes, 128-aligned) and the data area (`capacity` bytes, a power
        // of two, 128-aligned) lie inside it and do not overlap each other or the header. The
        // mapping lives as long as `owner` (this segment). The memory is shared with the peer,
        // which is why every value read from it is validated by the ring.
        unsafe { RingMem::new(ctrl, data, r.capacity, owner) }
    }
}

/// Maps the whole memfd shared, with every page faulted in now (`MAP_POPULATE`): the data path
/// must never stop for a page fault, so a connection pays for its rings up front.
fn map(file: &File) -> Result<MmapRaw> {
    MmapOptions::new()
        .populate()
        .map_raw(file)
        .map_err(|e| Error::io("mmap", e))
}

fn header_word(map: &MmapRaw, i: usize) -> &AtomicU64 {
    assert!(i < HEADER_WORDS && map.len() >= HEADER_WORDS * 8);
    let p = map.as_mut_ptr().wrapping_add(i * 8).cast::<u64>();
    // SAFETY: the mapping is page-aligned and at least 128 bytes long, so word `i < 16` is in
    // bounds and 8-aligned; it lives as long as `map`. Header words are only accessed
    // atomically, so a peer writing them concurrently is not a data race.
    unsafe { AtomicU64::from_ptr(p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_open_agrees() {
        let layout = SegmentLayout::new(4096, 8192).unwrap();
        let (seg, fd) = Segment::create(layout).unwrap();
        let other = Segment::open(fd).unwrap();
        assert_eq!(other.layout, seg.layout);
    }

    #[test]
    fn open_refuses_unsealed_and_garbage_segments() {
        let fd = rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 16384).unwrap();
        assert!(matches!(Segment::open(fd), Err(Error::Handshake { .. })));

        let layout = SegmentLayout::new(4096, 4096).unwrap();
        let (seg, fd) = Segment::create(layout).unwrap();
        seg.header_word(5).store(1 << 40, Ordering::Relaxed);
        assert!(matches!(Segment::open(fd), Err(Error::Corrupt { .. })));
    }
}
