//! Record framing inside a ring's data area.
//!
//! Every record starts on an 8-byte boundary with one 8-byte header word:
//! low 32 bits = payload length, high 32 bits = tag. A data record occupies
//! `align8(8 + len)` bytes. A padding record fills the space from its start to the end of the
//! data area exactly (written when the next record would not fit contiguously), so a reader
//! always finds each payload in one piece.
//!
//! A zero header word means "nothing here yet": the producer always leaves a zero word right
//! after the last record it publishes (so it keeps 8 bytes of slack: a full ring holds at most
//! `capacity - 8` bytes of records), and the consumer polls the header at its read position.

/// Size of a record header.
pub(crate) const HEADER: usize = 8;
/// Tag of a data record (`"DATA"` little-endian).
pub(crate) const TAG_DATA: u32 = u32::from_le_bytes(*b"DATA");
/// Tag of a padding record (`"PADD"` little-endian).
pub(crate) const TAG_PAD: u32 = u32::from_le_bytes(*b"PADD");
/// Tag of a skip record (`"SKIP"` little-endian): bytes the reader passes over, anywhere in
/// the ring, written so that the next record's payload starts on a fresh cache line
/// (`Producer::lend`).
pub(crate) const TAG_SKIP: u32 = u32::from_le_bytes(*b"SKIP");

/// The header word for a record.
#[inline]
pub(crate) fn encode(tag: u32, len: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(len)
}

/// Bytes a record with a `len`-byte payload occupies, or `None` on overflow.
#[inline]
pub(crate) fn size_for(len: usize) -> Option<usize> {
    len.checked_add(HEADER + 7).map(|v| v & !7)
}

/// A decoded, validated record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    /// A data record: payload of `len` bytes right after the header, `size` bytes in all.
    Data { len: usize, size: usize },
    /// A padding record of `size` bytes, reaching the end of the data area.
    Pad { size: usize },
    /// A skip record of `size` bytes (passed over; no payload for the reader).
    Skip { size: usize },
}

/// Decodes and checks the non-zero header word found at offset `pos` of a `cap`-byte data area,
/// where the producer may have written at most `avail` bytes of records (the space the consumer
/// has released, less the 8 bytes of slack for the closing zero word).
///
/// Callers guarantee `pos % 8 == 0`, `pos < cap`, `avail % 8 == 0` and `avail <= cap`; the
/// header itself comes from the untrusted peer and is checked here.
#[inline]
pub(crate) fn decode(
    word: u64,
    pos: usize,
    avail: u64,
    cap: usize,
) -> Result<Record, &'static str> {
    let len = (word & 0xFFFF_FFFF) as usize;
    let tag = (word >> 32) as u32;
    let room = (cap - pos) as u64;
    if tag == TAG_DATA || tag == TAG_SKIP {
        // len < 2^32, so this cannot overflow on 64-bit targets.
        let size = (len + HEADER + 7) & !7;
        if size as u64 > avail {
            return Err("record length runs past the space the consumer released");
        }
        if size as u64 > room {
            return Err("record length runs past the end of the ring");
        }
        if tag == TAG_SKIP {
            return Ok(Record::Skip { size });
        }
        Ok(Record::Data { len, size })
    } else if tag == TAG_PAD {
        let size = len + HEADER;
        if size as u64 != room {
            return Err("padding record does not end exactly at the end of the ring");
        }
        if size as u64 > avail {
            return Err("padding record runs past the space the consumer released");
        }
        Ok(Record::Pad { size })
    } else {
        Err("record header has an unknown tag")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_aligned() {
        assert_eq!(size_for(0), Some(8));
        assert_eq!(size_for(1), Some(16));
        assert_eq!(size_for(8), Some(16));
        assert_eq!(size_for(9), Some(24));
        assert_eq!(size_for(usize::MAX), None);
    }

    #[test]
    fn decodes_good_records() {
        assert_eq!(
            decode(encode(TAG_DATA, 5), 0, 64, 64),
            Ok(Record::Data { len: 5, size: 16 })
        );
        assert_eq!(
            decode(encode(TAG_PAD, 8), 48, 16, 64),
            Ok(Record::Pad { size: 16 })
        );
        assert_eq!(
            decode(encode(TAG_SKIP, 40), 8, 56, 64),
            Ok(Record::Skip { size: 48 })
        );
    }

    #[test]
    fn rejects_bad_records() {
        assert!(decode(encode(TAG_DATA, 60), 0, 64, 64).is_err()); // 72 > avail
        assert!(decode(encode(TAG_DATA, 9), 48, 64, 64).is_err()); // past the end
        assert!(decode(encode(TAG_DATA, 8), 0, 8, 64).is_err()); // past the released space
        assert!(decode(encode(TAG_PAD, 0), 48, 16, 64).is_err()); // does not reach the end
        assert!(decode(encode(TAG_PAD, 8), 48, 8, 64).is_err()); // past the released space
        assert!(decode(encode(TAG_SKIP, 60), 0, 64, 64).is_err()); // 72 > avail
        assert!(decode(encode(TAG_SKIP, 9), 48, 64, 64).is_err()); // past the end
        assert!(decode(encode(7, 0), 0, 64, 64).is_err());
        assert!(decode(u64::MAX, 0, 64, 64).is_err());
    }
}
