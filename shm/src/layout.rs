//! The segment layout: header words, ring control blocks, data areas, and the validation a
//! client applies to a segment it did not create.
//!
//! Byte map (all integers native-endian `u64`, i.e. little-endian on x86-64; see docs/shm.md):
//!
//! ```text
//! 0      header, 16 words (128 bytes): magic, version, segment_len, header_len,
//!        ring0 {ctrl, data, capacity}, ring1 {ctrl, data, capacity}, 6 reserved zero words
//! 128    ring0 control block (256 bytes): head @+0, sleeping @+128
//! 384    ring1 control block (256 bytes)
//! 4096   ring0 data (capacity bytes, client -> server)
//! ...    ring1 data (capacity bytes, server -> client), 4096-aligned
//! ```

use crate::error::{Error, Result};
use crate::sync::AtomicU64;

/// `b"NTRNSHM\0"` read as a little-endian `u64`: the first word of every segment.
pub const MAGIC: u64 = u64::from_le_bytes(*b"NTRNSHM\0");
/// Layout version; bumped on any incompatible change.
pub const VERSION: u64 = 2;
/// Size of the header in bytes (16 words).
pub const HEADER_LEN: usize = 128;
/// Number of header words.
pub const HEADER_WORDS: usize = HEADER_LEN / 8;
/// Size of one ring control block: two 128-byte lines (head, sleeping).
///
/// There is no tail index: the producer publishes by storing record headers in the data area
/// and the consumer polls the header at its read position (docs/shm.md, "Publication").
pub const CTRL_LEN: usize = 256;
/// Byte offset of the consumer's `head` index inside a control block.
pub const HEAD_OFFSET: usize = 0;
/// Byte offset of the consumer's `sleeping` flag inside a control block.
pub const SLEEPING_OFFSET: usize = 128;
/// Smallest ring capacity in bytes.
pub const MIN_CAPACITY: usize = 64;
/// Largest ring capacity in bytes (1 GiB; record lengths are `u32`).
pub const MAX_CAPACITY: usize = 1 << 30;
/// Where the first data area starts (one page: header and control blocks fit below).
pub const DATA_START: usize = 4096;
/// Alignment of control blocks and data areas in a segment.
pub const REGION_ALIGN: usize = 128;

/// Index of the client-to-server ring (client produces, server consumes).
pub const RING_TO_SERVER: usize = 0;
/// Index of the server-to-client ring (server produces, client consumes).
pub const RING_TO_CLIENT: usize = 1;

/// One `u64` on its own 128-byte line (two 64-byte lines: the adjacent-line prefetcher pulls
/// pairs, so 64 bytes of padding is not enough to stop false sharing).
#[repr(C, align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

/// A ring's control block as it lies in shared memory.
///
/// Both words are written by the consumer only (the producer reads them). The peer can write
/// either at any time with any value, so every value read here is validated before use.
#[repr(C)]
pub(crate) struct RingControl {
    /// Bytes ever released by the consumer (monotonic, multiple of 8, never past what was
    /// published).
    pub(crate) head: CachePadded<AtomicU64>,
    /// Non-zero while the consumer sleeps (or is about to) and wants a doorbell ring.
    pub(crate) sleeping: CachePadded<AtomicU64>,
}

impl RingControl {
    /// A zeroed control block (for in-process rings; a fresh memfd is zero already).
    pub(crate) fn new() -> Self {
        Self {
            head: CachePadded(AtomicU64::new(0)),
            sleeping: CachePadded(AtomicU64::new(0)),
        }
    }
}

// With std atomics the control block must match the documented byte layout exactly, since it
// is placed over shared memory. (loom's atomics are bigger; loom only uses heap rings.)
#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<RingControl>() == CTRL_LEN);
    assert!(std::mem::offset_of!(RingControl, head) == HEAD_OFFSET);
    assert!(std::mem::offset_of!(RingControl, sleeping) == SLEEPING_OFFSET);
    assert!(std::mem::size_of::<AtomicU64>() == 8);
};

/// Where one ring lives in the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Byte offset of the control block.
    pub ctrl: usize,
    /// Byte offset of the data area.
    pub data: usize,
    /// Data area size in bytes (a power of two).
    pub capacity: usize,
}

/// The validated layout of a whole segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentLayout {
    /// Total segment length in bytes.
    pub len: usize,
    /// `[client -> server, server -> client]`.
    pub rings: [RingLayout; 2],
}

/// Checks that `cap` is a valid ring capacity.
pub(crate) fn check_capacity(cap: usize) -> Result<()> {
    if !cap.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap) {
        return Err(Error::Config {
            what: "ring capacity must be a power of two between 64 bytes and 1 GiB",
        });
    }
    Ok(())
}

fn align_up(v: usize, a: usize) -> usize {
    (v + a - 1) & !(a - 1)
}

impl SegmentLayout {
    /// The layout the server uses for the given capacities.
    pub fn new(to_server: usize, to_client: usize) -> Result<Self> {
        check_capacity(to_server)?;
        check_capacity(to_client)?;
        let data0 = DATA_START;
        let data1 = align_up(data0 + to_server, 4096);
        let len = align_up(data1 + to_client, 4096);
        Ok(Self {
            len,
            rings: [
                RingLayout {
                    ctrl: HEADER_LEN,
                    data: data0,
                    capacity: to_server,
                },
                RingLayout {
                    ctrl: HEADER_LEN + CTRL_LEN,
                    data: data1,
                    capacity: to_client,
                },
            ],
        })
    }

    /// The header words that describe this layout.
    pub fn to_words(&self) -> [u64; HEADER_WORDS] {
        let mut w = [0u64; HEADER_WORDS];
        w[0] = MAGIC;
        w[1] = VERSION;
        w[2] = self.len as u64;
        w[3] = HEADER_LEN as u64;
        for (i, r) in self.rings.iter().enumerate() {
            w[4 + 3 * i] = r.ctrl as u64;
            w[5 + 3 * i] = r.data as u64;
            w[6 + 3 * i] = r.capacity as u64;
        }
        w
    }

    /// Validates header words read from a segment of `mapped_len` bytes that a peer wrote.
    ///
    /// Checks the magic, the version, the lengths, every offset's alignment and bounds, the
    /// capacities, and that no two regions (header, control blocks, data areas) overlap.
    pub fn from_words(w: &[u64; HEADER_WORDS], mapped_len: usize) -> Result<Self> {
        let bad = |what| Err(Error::Corrupt { what });
        if w[0] != MAGIC {
            return bad("segment header has the wrong magic (not a netron-shm segment)");
        }
        if w[1] != VERSION {
            return bad("segment header has an unsupported layout version");
        }
        if w[2] != mapped_len as u64 {
            return bad("segment header length differs from the size of the shared memory");
        }
        if w[3] != HEADER_LEN as u64 {
            return bad("segment header has the wrong header length");
        }
        if w[10..].iter().any(|&x| x != 0) {
            return bad("segment header has non-zero reserved words");
        }
        let mut rings = [RingLayout {
            ctrl: 0,
            data: 0,
            capacity: 0,
        }; 2];
        // Regions as (start, len) to check bounds and overlap.
        let mut regions: Vec<(u64, u64)> = vec![(0, HEADER_LEN as u64)];
        for (i, ring) in rings.iter_mut().enumerate() {
            let (ctrl, data, cap) = (w[4 + 3 * i], w[5 + 3 * i], w[6 + 3 * i]);
            let cap_ok =
                cap.is_power_of_two() && (MIN_CAPACITY as u64..=MAX_CAPACITY as u64).contains(&cap);
            if !cap_ok {
                return bad(
                    "segment header has a ring capacity that is not a power of two in range",
                );
            }
            if ctrl % REGION_ALIGN as u64 != 0 || data % REGION_ALIGN as u64 != 0 {
                return bad("segment header has a misaligned ring offset");
            }
            regions.push((ctrl, CTRL_LEN as u64));
            regions.push((data, cap));
            *ring = RingLayout {
                ctrl: ctrl as usize,
                data: data as usize,
                capacity: cap as usize,
            };
        }
        for &(start, len) in &regions {
            match start.checked_add(len) {
                Some(end) if end <= mapped_len as u64 => {}
                _ => return bad("segment header has a region outside the segment"),
            }
        }
        for (i, a) in regions.iter().enumerate() {
            for b in &regions[i + 1..] {
                if a.0 < b.0 + b.1 && b.0 < a.0 + a.1 {
                    return bad("segment header has overlapping regions");
                }
            }
        }
        Ok(Self {
            len: mapped_len,
            rings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_words() {
        let l = SegmentLayout::new(1 << 16, 1 << 20).unwrap();
        assert_eq!(SegmentLayout::from_words(&l.to_words(), l.len).unwrap(), l);
        assert_eq!(l.rings[0].data, DATA_START);
        assert_eq!(l.len % 4096, 0);
    }

    #[test]
    fn rejects_bad_capacities() {
        assert!(SegmentLayout::new(100, 4096).is_err());
        assert!(SegmentLayout::new(32, 4096).is_err());
        assert!(SegmentLayout::new(4096, 1 << 31).is_err());
    }

    #[test]
    fn rejects_every_corrupted_field() {
        let l = SegmentLayout::new(4096, 4096).unwrap();
        let good = l.to_words();
        let cases: &[(usize, u64)] = &[
            (0, 0),
            (1, VERSION + 1),
            (2, l.len as u64 + 4096),
            (3, 64),
            (4, 4096 + 8),               // misaligned ctrl
            (5, l.rings[1].data as u64), // data areas overlap
            (6, 8192),                   // ring 0 now overlaps ring 1's data
            (6, 100),                    // not a power of two
            (8, u64::MAX - 127),         // overflowing offset
            (9, 1 << 40),
            (12, 1),
        ];
        for &(i, v) in cases {
            let mut w = good;
            w[i] = v;
            let r = SegmentLayout::from_words(&w, l.len);
            assert!(
                matches!(r, Err(Error::Corrupt { .. })),
                "word {i} = {v:#x} accepted"
            );
        }
        assert!(SegmentLayout::from_words(&good, l.len + 4096).is_err());
    }
}
