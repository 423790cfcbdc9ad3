//! Decoding: a borrowed, validated view of one frame, and iterators over buffers of frames.

use core::time::Duration;

use crate::{Body, Deadline, DecodeError, Flags, FrameHeader, FrameKind, HEADER_LEN, Limits};

/// One validated frame, borrowed from the receive buffer (nothing is copied).
///
/// Validation covers the header fields (length within limits, known kind, allowed flags,
/// header block within the frame, no payload on kinds that carry none). FlatBuffers bodies
/// are verified when read through [`crate::control`].
#[derive(Clone, Copy)]
pub struct Frame<'a> {
    header: &'a FrameHeader,
    kind: FrameKind,
    flags: Flags,
    // Read once at parse time: on shared memory the peer may rewrite the header after it was
    // validated (docs/protocol.md §26.5), so slicing must use the validated value.
    header_len: u16,
    id: u32,
    arg: u32,
    bytes: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Parses and validates the frame at the start of `buf`.
    ///
    /// Returns [`DecodeError::Incomplete`] if `buf` holds only part of it (after the header
    /// fields were validated, so a bad length is reported without waiting for its bytes).
    #[inline]
    pub fn parse(buf: &'a [u8], limits: &Limits) -> Result<Frame<'a>, DecodeError> {
        let Some(header) = FrameHeader::parse(buf) else {
            return Err(DecodeError::Incomplete {
                needed: HEADER_LEN - buf.len(),
            });
        };
        let length = header.length();
        if length < HEADER_LEN as u32 {
            return Err(DecodeError::LengthTooShort { length });
        }
        if length > limits.max_frame_size {
            return Err(DecodeError::FrameTooLarge {
                length,
                max: limits.max_frame_size,
            });
        }
        let kind = FrameKind::from_u8(header.kind_byte())
            .ok_or(DecodeError::UnknownKind(header.kind_byte()))?;
        let header_len = header.header_len();
        if header_len > 0 && !kind.may_have_headers() {
            return Err(DecodeError::UnexpectedHeaders(kind));
        }
        let raw_flags = header.flags_byte();
        let flags = Flags::from_bits_retain(raw_flags);
        if !kind.allowed_flags().contains(flags)
            || flags.contains(Flags::HAS_HEADERS) != (header_len > 0)
        {
            return Err(DecodeError::BadFlags {
                kind,
                flags: raw_flags,
            });
        }
        if HEADER_LEN as u32 + header_len as u32 > length {
            return Err(DecodeError::HeaderBlockOutOfBounds { header_len, length });
        }
        if kind.body() == Body::Empty && length as usize != HEADER_LEN + header_len as usize {
            return Err(DecodeError::UnexpectedPayload(kind));
        }
        let Some(bytes) = buf.get(..length as usize) else {
            return Err(DecodeError::Incomplete {
                needed: length as usize - buf.len(),
            });
        };
        Ok(Frame {
            header,
            kind,
            flags,
            header_len,
            id: header.id(),
            arg: header.arg(),
            bytes,
        })
    }

    /// The fixed header, in place. On shared memory its bytes may change after validation;
    /// the accessors of `Frame` ([`Frame::id`], [`Frame::arg`], [`Frame::header_block`], ...)
    /// return the values read once at parse time.
    #[inline]
    pub fn header(&self) -> &'a FrameHeader {
        self.header
    }
    /// The frame kind.
    #[inline]
    pub fn kind(&self) -> FrameKind {
        self.kind
    }
    /// The flags.
    #[inline]
    pub fn flags(&self) -> Flags {
        self.flags
    }
    /// Request, stream or subscription id.
    #[inline]
    pub fn id(&self) -> u32 {
        self.id
    }
    /// The kind-specific argument.
    #[inline]
    pub fn arg(&self) -> u32 {
        self.arg
    }
    /// The relative deadline of a Request or StreamOpen (`None`: no deadline, or another kind).
    #[inline]
    pub fn deadline(&self) -> Option<Duration> {
        match self.kind {
            FrameKind::Request | FrameKind::StreamOpen => Deadline::decode(self.arg()),
            _ => None,
        }
    }
    /// The raw header block (decode it with the connection's [`crate::hpack::HeaderDecoder`]).
    #[inline]
    pub fn header_block(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..HEADER_LEN + self.header_len as usize]
    }
    /// The payload (compressed if [`Flags::COMPRESSED`] is set; see [`crate::compress`]).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN + self.header_len as usize..]
    }
    /// The whole frame as it was on the wire.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Total length in bytes.
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// Frames are equal when their bytes are.
impl PartialEq for Frame<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Frame<'_> {}

impl core::fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Frame")
            .field("kind", &self.kind)
            .field("flags", &self.flags)
            .field("id", &self.id())
            .field("arg", &self.arg())
            .field("header_block_len", &self.header_block().len())
            .field("payload_len", &self.payload().len())
            .finish()
    }
}

/// Walks a buffer holding many frames, lending each without copying.
///
/// Stream mode ([`FrameIter::new`], for TCP/Unix/QUIC-stream receive buffers): iteration stops
/// quietly at a partial frame at the end; [`FrameIter::consumed`] says how far it got and
/// [`FrameIter::needed`] how many more bytes the partial frame needs. Batch mode
/// ([`decode_batch`], for shared-memory records and datagrams): the buffer must hold whole
/// frames within the batch limits, and a partial frame is an error.
///
/// After the first error the iterator yields nothing more.
#[derive(Debug, Clone)]
pub struct FrameIter<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: Limits,
    frames: u32,
    batch: bool,
    needed: usize,
    done: bool,
}

impl<'a> FrameIter<'a> {
    /// Stream mode over `buf`.
    #[inline]
    pub fn new(buf: &'a [u8], limits: &Limits) -> Self {
        Self {
            buf,
            pos: 0,
            limits: *limits,
            frames: 0,
            batch: false,
            needed: 0,
            done: false,
        }
    }

    /// Bytes of whole frames consumed so far.
    #[inline]
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// The bytes not yet consumed (a partial frame in stream mode).
    #[inline]
    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// In stream mode, after iteration stopped at a partial frame: the bytes still missing
    /// (at least). 0 when no partial frame was seen.
    #[inline]
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// Frames yielded so far.
    #[inline]
    pub fn frames(&self) -> u32 {
        self.frames
    }
}

impl<'a> Iterator for FrameIter<'a> {
    type Item = Result<Frame<'a>, DecodeError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos == self.buf.len() {
            return None;
        }
        if self.batch {
            if self.frames >= self.limits.max_batch_frames {
                self.done = true;
                return Some(Err(DecodeError::TooManyFrames {
                    max: self.limits.max_batch_frames,
                }));
            }
            if self.pos > 0 && self.pos >= self.limits.max_batch_bytes as usize {
                self.done = true;
                return Some(Err(DecodeError::BatchTooLarge {
                    len: self.buf.len(),
                    max: self.limits.max_batch_bytes,
                }));
            }
        }
        match Frame::parse(&self.buf[self.pos..], &self.limits) {
            Ok(frame) => {
                self.pos += frame.len();
                self.frames += 1;
                Some(Ok(frame))
            }
            Err(DecodeError::Incomplete { needed }) if !self.batch => {
                self.needed = needed;
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Batch mode over one record (a shared-memory record or a datagram): yields its frames,
/// and an error if it holds a partial frame, more than `max_batch_frames` frames, or a frame
/// other than the first starting at or after `max_batch_bytes`.
#[inline]
pub fn decode_batch<'a>(buf: &'a [u8], limits: &Limits) -> FrameIter<'a> {
    FrameIter {
        batch: true,
        ..FrameIter::new(buf, limits)
    }
}
