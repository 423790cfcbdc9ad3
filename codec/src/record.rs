//! Frames on record transports (shared-memory rings): batches, and frames larger than a
//! record sent in fragments (docs/protocol.md §26.3).
//!
//! Each record normally holds one batch of whole frames (§2.2), decoded in place. A frame
//! longer than the direction's *record limit* (the largest record the ring can carry:
//! `capacity − 16` for a netron-shm ring) is sent **fragmented**: its first record holds only
//! the frame's first bytes (at least its 16-byte header, fewer bytes than the frame), and the
//! following records hold only the rest of it, in order, until exactly `length` bytes have
//! arrived. A receiver recognises the first fragment because the record ends inside its first
//! frame *and* that frame is longer than the record limit; a partial frame that would have
//! fitted in a record is still `Incomplete`, as in §10.2. Nothing changes for frames that fit,
//! and nothing is added to the wire: the header's `length` says how much follows.
//!
//! ```
//! use netron_codec::record::{Record, RecordReader};
//! use netron_codec::{BatchEncoder, FrameKind, Limits};
//!
//! let limits = Limits::default();
//! let mut batch = BatchEncoder::new(limits);
//! batch.frame(FrameKind::Response, 1).unwrap().payload(&[7; 100]).finish().unwrap();
//! let frame = batch.as_slice();
//! // A 116-byte frame over a ring whose records hold at most 48 bytes: three records.
//! let mut rx = RecordReader::new(limits, 48);
//! assert!(matches!(rx.push(&frame[..48]), Ok(Record::Fragment { missing: 68 })));
//! assert!(matches!(rx.push(&frame[48..96]), Ok(Record::Fragment { missing: 20 })));
//! match rx.push(&frame[96..]).unwrap() {
//!     Record::Reassembled(f) => assert_eq!(f.payload(), &[7; 100]),
//!     _ => unreachable!(),
//! }
//! ```

use crate::{DecodeError, Frame, FrameIter, HEADER_LEN, Limits, decode_batch};

/// A record broke the fragmentation rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record's frames are invalid (including a partial frame that fits a record).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A continuation record holds more bytes than the fragmented frame still needs (another
    /// frame may not share a record with a fragment).
    #[error("continuation record of {got} bytes, but the fragmented frame needs only {missing}")]
    FragmentOverrun {
        /// Bytes still missing.
        missing: usize,
        /// Bytes in the record.
        got: usize,
    },
    /// An empty record while a fragmented frame is incomplete.
    #[error("empty record inside a fragmented frame")]
    EmptyFragment,
}

impl RecordError {
    /// A stable label for counters.
    pub fn counter(&self) -> &'static str {
        match self {
            RecordError::Decode(e) => e.counter(),
            RecordError::FragmentOverrun { .. } => "fragment_overrun",
            RecordError::EmptyFragment => "fragment_empty",
        }
    }

    /// The status of the connection error a receiver sends.
    pub fn status(&self) -> crate::StatusCode {
        match self {
            RecordError::Decode(e) => e.status(),
            _ => crate::StatusCode::Internal,
        }
    }
}

/// What one record held.
#[derive(Debug)]
pub enum Record<'r> {
    /// A batch of whole frames, borrowed from the record: walk it (the batch checks of §10.2
    /// apply; the first frame has already been validated).
    Batch(FrameIter<'r>),
    /// A fragment of a frame larger than a record; `missing` bytes are still to come.
    Fragment {
        /// Bytes of the frame not yet received.
        missing: usize,
    },
    /// The last fragment arrived: the whole frame, reassembled in the reader's buffer (which
    /// the next [`RecordReader::push`] reuses).
    Reassembled(Frame<'r>),
}

/// Turns the records of one direction into frames (sans-IO; one per connection and direction).
#[derive(Debug)]
pub struct RecordReader {
    limits: Limits,
    record_limit: usize,
    buf: Vec<u8>,
    /// Total length of the frame being reassembled (0: none).
    want: usize,
}

impl RecordReader {
    /// A reader with the negotiated `limits`, for a transport whose records carry at most
    /// `record_limit` bytes.
    pub fn new(limits: Limits, record_limit: u32) -> Self {
        Self {
            limits,
            record_limit: record_limit as usize,
            buf: Vec::new(),
            want: 0,
        }
    }

    /// Replaces the limits (after the handshake).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Whether a fragmented frame is incomplete.
    pub fn in_fragment(&self) -> bool {
        self.want > 0
    }

    /// Takes the next record.
    ///
    /// # Errors
    ///
    /// [`RecordError`]: every error is a connection error. The first frame of a record is
    /// validated before anything else (§7 checks 2–8, so an oversized `length` is refused
    /// before any byte is buffered); a reassembly buffer never exceeds `max_frame_size`.
    pub fn push<'r>(&'r mut self, record: &'r [u8]) -> Result<Record<'r>, RecordError> {
        if self.want > 0 {
            let missing = self.want - self.buf.len();
            if record.is_empty() {
                return Err(RecordError::EmptyFragment);
            }
            if record.len() > missing {
                return Err(RecordError::FragmentOverrun {
                    missing,
                    got: record.len(),
                });
            }
            self.buf.extend_from_slice(record);
            if record.len() < missing {
                return Ok(Record::Fragment {
                    missing: missing - record.len(),
                });
            }
            self.want = 0;
            let frame = Frame::parse(&self.buf, &self.limits)?;
            return Ok(Record::Reassembled(frame));
        }
        if record.is_empty() {
            return Ok(Record::Batch(decode_batch(record, &self.limits)));
        }
        match Frame::parse(record, &self.limits) {
            Err(DecodeError::Incomplete { needed })
                if record.len() >= HEADER_LEN && record.len() + needed > self.record_limit =>
            {
                // The first fragment: the header was validated (length <= max_frame_size).
                let total = record.len() + needed;
                self.buf.clear();
                self.buf.reserve(total);
                self.buf.extend_from_slice(record);
                self.want = total;
                Ok(Record::Fragment { missing: needed })
            }
            Err(e) => Err(e.into()),
            Ok(_) => Ok(Record::Batch(decode_batch(record, &self.limits))),
        }
    }
}

/// How a sender cuts a frame into records: the sizes of the records that carry a frame of
/// `len` bytes, each at most `record_limit` bytes (one record if it fits). `None` if
/// `record_limit` is below the 16-byte header.
pub fn fragment_sizes(len: usize, record_limit: usize) -> Option<impl Iterator<Item = usize>> {
    if record_limit < HEADER_LEN {
        return None;
    }
    let n = len.div_ceil(record_limit).max(1);
    Some((0..n).map(move |i| (len - i * record_limit).min(record_limit)))
}
