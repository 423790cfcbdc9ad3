//! Encoding: frames written into one reusable batch buffer, flushed as one write.

use core::time::Duration;

use crate::compress::Compressor;
use crate::hpack::{Header, HeaderEncoder};
use crate::txbuf::{OutBuf, TxBuf};
use crate::{Deadline, EncodeError, Flags, FrameHeader, FrameKind, HEADER_LEN, Limits};

/// Frames queued for one write (one SQE, one shared-memory record, one datagram).
///
/// The buffer is reused: [`BatchEncoder::clear`] keeps its capacity, so in steady state
/// encoding allocates nothing. The encoder refuses to start a frame once the batch holds
/// `max_batch_frames` frames or `max_batch_bytes` bytes ([`EncodeError::BatchFull`]: flush,
/// then encode again); only the last frame of a batch may cross `max_batch_bytes`.
///
/// The buffer is a [`TxBuf`]: a heap `Vec`, or memory a transport lent (a shared-memory
/// ring's free space, so the batch is encoded in place: [`BatchEncoder::replace_buffer`]).
#[derive(Debug)]
pub struct BatchEncoder {
    buf: TxBuf,
    frames: u32,
    limits: Limits,
    /// Payload bytes of the frame being built that were refused at `max_frame_size` (0: none).
    overflow: usize,
}

impl BatchEncoder {
    /// An empty batch with the given limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            buf: TxBuf::new(),
            frames: 0,
            limits,
            overflow: 0,
        }
    }

    /// An empty batch with room for `bytes` bytes before it first allocates.
    pub fn with_capacity(limits: Limits, bytes: usize) -> Self {
        Self {
            buf: TxBuf::from(Vec::with_capacity(bytes)),
            frames: 0,
            limits,
            overflow: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Replaces the limits (e.g. after the handshake).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The encoded frames, ready to write.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        self.buf.as_slice()
    }

    /// Bytes queued.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no frame is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Frames queued.
    #[inline]
    pub fn frame_count(&self) -> u32 {
        self.frames
    }

    /// Whether no further frame may be started before a flush: `max_batch_frames` frames, or
    /// `max_batch_bytes` bytes (or a lent buffer's [`TxBuf::batch_cap`], if smaller).
    #[inline]
    pub fn is_full(&self) -> bool {
        self.frames >= self.limits.max_batch_frames
            || self.buf.len() >= (self.limits.max_batch_bytes as usize).min(self.buf.batch_cap())
    }

    /// Whether the batch is being encoded into lent memory ([`TxBuf::is_lent`]).
    #[inline]
    pub fn is_lent(&self) -> bool {
        self.buf.is_lent()
    }

    /// Forgets the queued frames (after they were written), keeping the capacity.
    #[inline]
    pub fn clear(&mut self) {
        self.buf.clear();
        self.frames = 0;
    }

    /// Swaps the internal buffer with `other` (e.g. to hand the bytes to an in-flight write
    /// and keep encoding into a spare buffer). The batch is empty afterwards if `other` was.
    /// A lent buffer's bytes are copied into a `Vec` for `other` (use
    /// [`BatchEncoder::replace_buffer`] to take them in place).
    pub fn swap_buffer(&mut self, other: &mut Vec<u8>) {
        let old = self.replace_buffer(TxBuf::from(core::mem::take(other)));
        *other = old.into_vec();
    }

    /// Cuts the queued frames off as a batch of their own and goes on encoding in the lent
    /// space after them ([`TxBuf::split_batch`]), if at least `min` bytes are left there;
    /// returns the batch. `None` on the heap, or with less room left.
    pub fn split_batch(&mut self, min: usize) -> Option<TxBuf> {
        let done = self.buf.split_batch(min)?;
        self.frames = 0;
        Some(done)
    }

    /// Puts `with` (emptied) in place of the buffer and returns the old one with the queued
    /// frames; the batch is empty afterwards. With a lent buffer this hands the frames back
    /// to the lender in place, or starts encoding into lent memory.
    pub fn replace_buffer(&mut self, mut with: TxBuf) -> TxBuf {
        with.clear();
        self.frames = 0;
        core::mem::replace(&mut self.buf, with)
    }

    /// Appends `count` complete frames encoded elsewhere (e.g. by the handshake state
    /// machines), bypassing the batch limits. The caller vouches that `frames` holds exactly
    /// `count` well-formed frames.
    pub fn push_encoded(&mut self, frames: &[u8], count: u32) {
        self.buf.extend_from_slice(frames);
        self.frames += count;
    }

    /// Starts a frame of `kind` for `id`.
    #[inline]
    pub fn frame(&mut self, kind: FrameKind, id: u32) -> Result<FrameBuilder<'_>, EncodeError> {
        if self.is_full() {
            return Err(EncodeError::BatchFull);
        }
        let start = self.buf.len();
        self.buf
            .extend_from_slice(FrameHeader::new(0, kind, Flags::empty(), 0, id, 0).as_bytes());
        Ok(FrameBuilder {
            batch: self,
            start,
            flags: Flags::empty(),
            headers_encoded: false,
            arg: 0,
        })
    }

    /// Starts a Request with a relative deadline.
    #[inline]
    pub fn request(
        &mut self,
        id: u32,
        deadline: Option<Duration>,
    ) -> Result<FrameBuilder<'_>, EncodeError> {
        Ok(self
            .frame(FrameKind::Request, id)?
            .arg(Deadline::encode(deadline)))
    }

    /// Starts a Response.
    #[inline]
    pub fn response(&mut self, id: u32) -> Result<FrameBuilder<'_>, EncodeError> {
        self.frame(FrameKind::Response, id)
    }

    /// Queues a frame with no header block and no payload (Cancel, WindowUpdate, Ping, ...).
    pub fn empty_frame(&mut self, kind: FrameKind, id: u32, arg: u32) -> Result<(), EncodeError> {
        self.frame(kind, id)?.arg(arg).finish().map(|_| ())
    }
}

/// A header-block encoder a [`FrameBuilder`] can use: HPACK's [`HeaderEncoder`] (one ordered
/// byte stream, §9), or a QUIC connection's, whose blocks are tracked per exchange (§27.4: the
/// frame's `id` names the exchange, so a QPACK encoder knows which blocks a Section
/// Acknowledgment settles).
pub trait HeaderBlockEncoder {
    /// Appends the header block of `headers` for a frame of exchange `id` to `out`.
    ///
    /// # Errors
    ///
    /// A [`HeaderError`](crate::HeaderError) if the list cannot be encoded (a block above
    /// 65 535 bytes); what `out` then holds past its old length is the caller's to drop.
    fn encode_block<B: OutBuf + ?Sized>(
        &mut self,
        id: u32,
        headers: &[Header<'_>],
        out: &mut B,
    ) -> Result<(), crate::HeaderError>;
}

impl HeaderBlockEncoder for HeaderEncoder {
    #[inline]
    fn encode_block<B: OutBuf + ?Sized>(
        &mut self,
        _id: u32,
        headers: &[Header<'_>],
        out: &mut B,
    ) -> Result<(), crate::HeaderError> {
        self.encode(headers, out)
    }
}

/// One frame being written into a [`BatchEncoder`]. Call the setters in wire order (flags and
/// arg any time, then headers, then the payload) and finish with [`FrameBuilder::finish`].
/// Dropping a builder without finishing removes the partial frame; but if a header block was
/// already encoded, the header encoder is then ahead of the peer's decoder and the connection
/// must be closed (see [`EncodeError::FrameTooLarge`]).
#[derive(Debug)]
#[must_use = "a frame is only queued by finish()"]
pub struct FrameBuilder<'a> {
    batch: &'a mut BatchEncoder,
    start: usize,
    flags: Flags,
    headers_encoded: bool,
    arg: u32,
}

impl<'a> FrameBuilder<'a> {
    /// Adds flags (HAS_HEADERS and COMPRESSED are managed by the builder).
    #[inline]
    pub fn flags(mut self, flags: Flags) -> Self {
        self.flags |= flags - (Flags::HAS_HEADERS | Flags::COMPRESSED);
        self
    }

    /// Sets the kind-specific argument.
    #[inline]
    pub fn arg(mut self, arg: u32) -> Self {
        self.arg = arg;
        self
    }

    /// Encodes `headers` as this frame's header block with the connection's encoder (HPACK's
    /// [`HeaderEncoder`], or any [`HeaderBlockEncoder`] such as a QUIC connection's QPACK
    /// encoder, which is told the frame's id).
    ///
    /// # Errors
    ///
    /// [`EncodeError::Headers`] if the encoder refuses the list or the block exceeds 65 535
    /// bytes.
    #[inline]
    pub fn headers<E: HeaderBlockEncoder + ?Sized>(
        mut self,
        encoder: &mut E,
        headers: &[Header<'_>],
    ) -> Result<Self, EncodeError> {
        debug_assert_eq!(
            self.batch.buf.len(),
            self.start + HEADER_LEN,
            "headers go before the payload"
        );
        if headers.is_empty() {
            return Ok(self);
        }
        let id = self.header_mut().id();
        encoder.encode_block(id, headers, &mut self.batch.buf)?;
        self.headers_encoded = true;
        let len = self.batch.buf.len() - self.start - HEADER_LEN;
        if len > u16::MAX as usize {
            return Err(EncodeError::Headers(crate::HeaderError::BlockTooLarge));
        }
        if len > 0 {
            self.flags |= Flags::HAS_HEADERS;
        }
        self.header_mut().set_header_len(len as u16);
        Ok(self)
    }

    /// Appends an already encoded header block (e.g. a QUIC block from
    /// [`crate::qpack::QpackEncoder`], §27.4) and sets HAS_HEADERS if it is not empty. The
    /// block counts as encoded for [`EncodeError::FrameTooLarge`]'s `headers_encoded`: if the
    /// frame is then refused, the encoder that produced it is ahead of its peer.
    ///
    /// # Errors
    ///
    /// [`EncodeError::Headers`] with `BlockTooLarge` above 65 535 bytes (nothing is written).
    #[inline]
    pub fn header_block(mut self, block: &[u8]) -> Result<Self, EncodeError> {
        debug_assert_eq!(
            self.batch.buf.len(),
            self.start + HEADER_LEN,
            "headers go before the payload"
        );
        self.headers_encoded |= !block.is_empty();
        let len = u16::try_from(block.len())
            .map_err(|_| EncodeError::Headers(crate::HeaderError::BlockTooLarge))?;
        if len > 0 {
            self.batch.buf.extend_from_slice(block);
            self.flags |= Flags::HAS_HEADERS;
            self.header_mut().set_header_len(len);
        }
        Ok(self)
    }

    /// Appends payload bytes.
    #[inline]
    pub fn payload(self, bytes: &[u8]) -> Self {
        self.batch.buf.extend_from_slice(bytes);
        self
    }

    /// Lets `write` append the payload straight into the batch buffer (e.g. a handler
    /// serialising its reply in place) through an append-only [`PayloadBuf`]: the bytes of
    /// earlier frames cannot be touched, and appends stop at `max_frame_size` (the frame's
    /// `finish` then fails with [`EncodeError::FrameTooLarge`]), so whatever `write` does it
    /// cannot corrupt the batch or make it grow without bound.
    #[inline]
    pub fn payload_with(self, write: impl FnOnce(&mut PayloadBuf<'_>)) -> Self {
        let used = self.batch.buf.len() - self.start;
        let room = (self.batch.limits.max_frame_size as usize).saturating_sub(used);
        let mut p = PayloadBuf {
            buf: &mut self.batch.buf,
            room,
            overflowed: 0,
            written: 0,
        };
        write(&mut p);
        if p.overflowed > 0 {
            self.batch.overflow = p.overflowed;
        }
        self
    }

    /// Appends `bytes` compressed with `compressor` if it is at least the threshold and
    /// compression shrinks it; otherwise appends it raw.
    pub fn payload_compressed(mut self, bytes: &[u8], compressor: &mut Compressor) -> Self {
        if compressor.compress_into(bytes, &mut self.batch.buf) {
            self.flags |= Flags::COMPRESSED;
        } else {
            self.batch.buf.extend_from_slice(bytes);
        }
        self
    }

    fn header_mut(&mut self) -> &mut FrameHeader {
        let bytes = &mut self.batch.buf.as_mut_slice()[self.start..self.start + HEADER_LEN];
        zerocopy::FromBytes::mut_from_bytes(bytes).expect("16 bytes")
    }

    /// Completes the frame: patches length, flags and arg into its header. Returns the frame
    /// length.
    ///
    /// Fails with [`EncodeError::FrameTooLarge`] (and removes the partial frame) if the frame
    /// exceeds `max_frame_size`; `headers_encoded` then says whether the header encoder moved
    /// ahead of the peer, in which case the connection must be closed.
    #[inline]
    pub fn finish(mut self) -> Result<usize, EncodeError> {
        let length = self.batch.buf.len() - self.start;
        let refused = std::mem::take(&mut self.batch.overflow);
        if refused > 0 || length > self.batch.limits.max_frame_size as usize {
            let headers_encoded = self.headers_encoded;
            // Drop removes the partial frame.
            return Err(EncodeError::FrameTooLarge {
                // An overflowed payload stopped at the limit: the frame it wanted, what was
                // kept plus what was refused.
                length: length.saturating_add(refused),
                max: self.batch.limits.max_frame_size,
                headers_encoded,
            });
        }
        let (flags, arg) = (self.flags, self.arg);
        let h = self.header_mut();
        h.set_length(length as u32);
        h.set_flags(flags);
        h.set_arg(arg);
        self.batch.frames += 1;
        self.start = usize::MAX; // finished: Drop keeps the frame
        Ok(length)
    }
}

impl Drop for FrameBuilder<'_> {
    fn drop(&mut self) {
        if self.start != usize::MAX {
            self.batch.buf.truncate(self.start);
            self.batch.overflow = 0;
        }
    }
}

/// Append-only access to the payload of the frame being built (see
/// [`FrameBuilder::payload_with`]).
///
/// Only appends are possible, so the bytes of earlier frames in the batch stay intact, and
/// appends stop once the frame would exceed the negotiated `max_frame_size`: the bytes past
/// that are dropped, [`PayloadBuf::overflowed`] turns true and the frame's `finish` fails with
/// [`EncodeError::FrameTooLarge`]. Writing through [`std::io::Write`] reports the overflow as
/// an error of kind `WriteZero` instead of dropping bytes silently.
#[derive(Debug)]
pub struct PayloadBuf<'a> {
    buf: &'a mut TxBuf,
    /// Bytes that may still be appended before the frame exceeds `max_frame_size`.
    room: usize,
    /// Bytes refused because they did not fit.
    overflowed: usize,
    /// Bytes appended.
    written: usize,
}

impl<'a> PayloadBuf<'a> {
    /// An append-only view of `buf` that takes at most `room` more bytes (for writing a
    /// payload outside a batch, e.g. a reply produced later and sent as a whole).
    pub fn over(buf: &'a mut TxBuf, room: usize) -> Self {
        PayloadBuf {
            buf,
            room,
            overflowed: 0,
            written: 0,
        }
    }
}

impl PayloadBuf<'_> {
    /// Appends `bytes`, or as much of them as fits (see the type docs).
    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.room);
        self.buf.extend_from_slice(&bytes[..n]);
        self.room -= n;
        self.written += n;
        self.overflowed = self.overflowed.saturating_add(bytes.len() - n);
    }

    /// Appends one byte.
    #[inline]
    pub fn push(&mut self, byte: u8) {
        self.extend_from_slice(&[byte]);
    }

    /// Appends `len` zero bytes and lets `fill` write them in place (for serialisers that
    /// need a sized slice). If `len` does not fit, nothing is appended, `fill` is not called,
    /// and the frame fails as described in the type docs.
    pub fn append_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) {
        if len > self.room {
            self.overflowed = self.overflowed.saturating_add(len);
            return;
        }
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        self.room -= len;
        self.written += len;
        fill(&mut self.buf.as_mut_slice()[start..]);
    }

    /// Reserves capacity for at least `additional` more bytes (capped at what may still be
    /// appended).
    #[inline]
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional.min(self.room));
    }

    /// Bytes that may still be appended before the frame exceeds `max_frame_size`.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.room
    }

    /// Bytes appended through this `PayloadBuf` (not counting refused ones).
    #[inline]
    pub fn len_written(&self) -> usize {
        self.written
    }

    /// The bytes appended through this `PayloadBuf` so far.
    #[inline]
    pub fn written(&self) -> &[u8] {
        let b = self.buf.as_slice();
        &b[b.len() - self.written..]
    }

    /// Whether an append was refused because the frame would exceed `max_frame_size`.
    #[inline]
    pub fn overflowed(&self) -> bool {
        self.overflowed > 0
    }
}

impl std::io::Write for PayloadBuf<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 && !bytes.is_empty() {
            self.overflowed = self.overflowed.saturating_add(bytes.len());
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "payload exceeds the negotiated max_frame_size",
            ));
        }
        let n = bytes.len().min(self.room);
        self.buf.extend_from_slice(&bytes[..n]);
        self.room -= n;
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
