//! A connection's header coding: HPACK (docs/protocol.md §9) on the ordered transports, the
//! QPACK-style scheme of §27.4 (c) on `quic://` (RFC 9204 with Netron's static table), where
//! each exchange has its own QUIC stream and blocks may arrive in any order across them.
//!
//! With QPACK the dynamic table changes only through the *encoder stream*; a header block
//! whose insertions have not arrived yet is *blocked*: its frame, and every later frame of the
//! same exchange, waits here until they do (at most 16 exchanges,
//! charged to the core's buffer budget), then goes on in order. Exchanges are named by their
//! frame id on both header streams (§27.4: a Section Acknowledgment or Stream Cancellation
//! carries the exchange id, not the QUIC stream id), so neither side needs a map between the
//! two.

use netron_codec::hpack::{Header, HeaderDecoder, HeaderEncoder, HeaderList};
use netron_codec::qpack::{Decoded, QpackDecoder, QpackEncoder, QpackError};
use netron_codec::{HeaderBlockEncoder, HeaderError};

/// The sending side's header encoder. HPACK, the coder of every call on the ordered
/// transports, stays inline (as it was before QPACK: no indirection per encode); QPACK's
/// state is boxed.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum HeaderSend {
    /// One ordered byte stream (also `quic://` with `header_table_size` 0, §27.4 (a)).
    Hpack(HeaderEncoder),
    /// `quic://` with a dynamic table (§27.4 (c)).
    Qpack(Box<QpackSend>),
}

/// The QPACK encoder and the encoder-stream bytes it produced that the link has not taken.
#[derive(Debug)]
pub(crate) struct QpackSend {
    enc: QpackEncoder,
    out: Vec<u8>,
}

impl HeaderBlockEncoder for HeaderSend {
    #[inline]
    fn encode_block<B: netron_codec::OutBuf + ?Sized>(
        &mut self,
        id: u32,
        headers: &[Header<'_>],
        out: &mut B,
    ) -> Result<(), HeaderError> {
        self.encode(Some(id), headers, out)
    }
}

impl HeaderSend {
    /// A `quic://` client's encoder for 0-RTT calls (§27.3), before the settings are known:
    /// the format the server will decode (`qpack`: the last connection to it negotiated a
    /// table), without dynamic table (QPACK blocks with Required Insert Count 0, or
    /// static-only HPACK), so every block is valid whatever this connection negotiates.
    pub(crate) fn early(qpack: bool) -> Self {
        if qpack {
            HeaderSend::Qpack(Box::new(QpackSend {
                enc: QpackEncoder::new(0),
                out: Vec::new(),
            }))
        } else {
            HeaderSend::Hpack(HeaderEncoder::new(0))
        }
    }

    /// The encoder for the negotiated `table_size`: QPACK when `quic` and the size is not 0.
    pub(crate) fn new(quic: bool, table_size: u32, packed_trace: bool) -> Self {
        if quic && table_size > 0 {
            HeaderSend::Qpack(Box::new(QpackSend {
                enc: QpackEncoder::new(table_size),
                out: Vec::new(),
            }))
        } else {
            let mut e = HeaderEncoder::new(table_size);
            e.set_packed_trace(packed_trace);
            HeaderSend::Hpack(e)
        }
    }

    /// Whether encoder-stream bytes wait for the link.
    #[inline]
    pub(crate) fn has_output(&self) -> bool {
        matches!(self, HeaderSend::Qpack(q) if !q.out.is_empty())
    }

    /// Appends the encoder-stream bytes produced so far to `out`.
    pub(crate) fn take_output(&mut self, out: &mut Vec<u8>) {
        if let HeaderSend::Qpack(q) = self {
            out.append(&mut q.out);
        }
    }

    /// Encodes `headers` for a QUIC datagram (§27.6): no insertion and no reference to the
    /// dynamic table (QPACK's Required Insert Count 0; over HPACK, only used with
    /// `header_table_size` 0, literals and the static table anyway).
    ///
    /// # Errors
    /// A block above 65 535 bytes.
    pub(crate) fn encode_datagram(
        &mut self,
        headers: &[Header<'_>],
        out: &mut (impl netron_codec::OutBuf + ?Sized),
    ) -> Result<(), HeaderError> {
        self.encode(None, headers, out)
    }

    /// Encodes `headers` for exchange `id`'s stream, or (`None`) for a datagram.
    #[inline]
    fn encode(
        &mut self,
        exchange: Option<u32>,
        headers: &[Header<'_>],
        out: &mut (impl netron_codec::OutBuf + ?Sized),
    ) -> Result<(), HeaderError> {
        let q = match self {
            HeaderSend::Hpack(e) => return e.encode(headers, out),
            HeaderSend::Qpack(q) => q,
        };
        // Its one error is a block above 65 535 bytes; on a stream the insertions it
        // appended are sent all the same (the table moved), the block is not tracked.
        let r = match exchange {
            Some(id) => q
                .enc
                .encode(u64::from(id), headers, out, &mut q.out)
                .is_ok(),
            None => q.enc.encode_datagram(headers, out).is_ok(),
        };
        if r {
            Ok(())
        } else {
            Err(HeaderError::BlockTooLarge)
        }
    }

    /// Applies the peer's decoder-stream bytes (its acknowledgements of our blocks).
    ///
    /// # Errors
    ///
    /// A [`QpackError`] (a connection error): an acknowledgement of nothing, a bad increment,
    /// or any instruction at all on a connection without a dynamic table.
    pub(crate) fn on_decoder_stream(&mut self, bytes: &[u8]) -> Result<(), QpackError> {
        match self {
            HeaderSend::Qpack(q) => q.enc.feed_decoder_stream(bytes),
            // No block of ours ever needed an acknowledgement.
            HeaderSend::Hpack(_) if bytes.is_empty() => Ok(()),
            HeaderSend::Hpack(_) => Err(QpackError::NoDynamicTable),
        }
    }
}

/// The receiving side's header decoder (inline HPACK, boxed QPACK, as [`HeaderSend`]).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum HeaderRecv {
    /// Before the handshake completes: encoder-stream bytes that came early (QUIC streams are
    /// independent, so the peer's first insertions may overtake its Welcome), applied once the
    /// table size is known. At most [`EARLY_LIMIT`] bytes.
    Pending(Vec<u8>),
    /// One ordered byte stream (see [`HeaderSend::Hpack`]).
    Hpack(HeaderDecoder),
    /// `quic://` with a dynamic table.
    Qpack(Box<QpackRecv>),
}

/// The QPACK decoder and the frames held behind blocked header blocks.
#[derive(Debug)]
pub(crate) struct QpackRecv {
    dec: QpackDecoder,
    /// Per blocked exchange: its id and its frames from the blocked one on, whole, in arrival
    /// order. At most [`MAX_BLOCKED_STREAMS`](netron_codec::qpack::MAX_BLOCKED_STREAMS) entries (the decoder refuses a 17th).
    held: Vec<Held>,
}

#[derive(Debug)]
struct Held {
    id: u32,
    frames: Vec<u8>,
    /// The exchange's blocks may never all arrive (see [`HeaderRecv::on_reset`]): once the
    /// held frames are decoded, the encoder is told to forget the exchange.
    cancel: bool,
}

/// Encoder-stream bytes kept before the handshake completes, at most (bytes): a peer's
/// first insertions are a few entries, far below this.
pub(crate) const EARLY_LIMIT: usize = 64 << 10;

/// What [`HeaderRecv::decode`] did with a frame's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Block {
    /// Decoded into the list: the frame goes on.
    Ready,
    /// Blocked: keep the frame, and those after it of its exchange ([`HeaderRecv::hold`]).
    Held,
}

impl HeaderRecv {
    /// The decoder for the negotiated `table_size` and `max_list` (bytes, §9.3's size rule),
    /// with the encoder-stream bytes that came before it applied.
    ///
    /// # Errors
    ///
    /// As [`HeaderRecv::on_encoder_stream`], for those early bytes.
    pub(crate) fn start(
        &mut self,
        quic: bool,
        table_size: u32,
        max_list: usize,
        packed_trace: bool,
    ) -> Result<(), QpackError> {
        let early = match self {
            HeaderRecv::Pending(early) => std::mem::take(early),
            _ => Vec::new(),
        };
        *self = if quic && table_size > 0 {
            HeaderRecv::Qpack(Box::new(QpackRecv {
                dec: QpackDecoder::new(table_size, max_list),
                held: Vec::new(),
            }))
        } else {
            let mut d = HeaderDecoder::new(table_size, max_list);
            d.set_packed_trace(packed_trace);
            HeaderRecv::Hpack(d)
        };
        self.on_encoder_stream(&early, &mut Vec::new())
    }

    /// Whether frames of exchange `id` wait behind a blocked block (later frames of it must
    /// wait too, to keep their order).
    #[inline]
    pub(crate) fn holds(&self, id: u32) -> bool {
        match self {
            HeaderRecv::Qpack(q) => q.held.iter().any(|h| h.id == id),
            _ => false,
        }
    }

    /// Decodes the header block of a frame of exchange `id` into `list`.
    ///
    /// # Errors
    ///
    /// The decoder's error (a connection error), including more than 16 blocked exchanges
    /// (`qpack_blocked_streams`).
    #[inline]
    pub(crate) fn decode(
        &mut self,
        id: u32,
        block: &[u8],
        list: &mut HeaderList,
    ) -> Result<Block, netron_codec::DecodeError> {
        match self {
            HeaderRecv::Hpack(d) => {
                d.decode_into(block, list)?;
                Ok(Block::Ready)
            }
            // A frame without HAS_HEADERS has no block at all (a QPACK block is never empty:
            // it starts with its two-byte prefix, §27.4).
            HeaderRecv::Qpack(_) if block.is_empty() => {
                list.clear();
                Ok(Block::Ready)
            }
            HeaderRecv::Qpack(q) => match q.dec.decode(u64::from(id), block, list)? {
                Decoded::Done => Ok(Block::Ready),
                Decoded::Blocked => Ok(Block::Held),
            },
            // No frame is dispatched before the handshake completes.
            HeaderRecv::Pending(_) => Err(HeaderError::Truncated.into()),
        }
    }

    /// Decodes the header block of a frame that came in a QUIC datagram into `list`: it may
    /// not reference the dynamic table (§27.6), so it never blocks.
    ///
    /// # Errors
    /// The decoder's error; `qpack_dynamic_in_datagram` for a block with a Required Insert
    /// Count.
    pub(crate) fn decode_datagram(
        &mut self,
        block: &[u8],
        list: &mut HeaderList,
    ) -> Result<(), netron_codec::DecodeError> {
        match self {
            HeaderRecv::Hpack(d) => Ok(d.decode_into(block, list)?),
            HeaderRecv::Qpack(q) => Ok(q.dec.decode_datagram(block, list)?),
            HeaderRecv::Pending(_) => Err(HeaderError::Truncated.into()),
        }
    }

    /// Keeps `frame` (whole, as on the wire) of exchange `id` until its exchange is released,
    /// growing the exchange's buffer by at most `room` bytes of capacity (what the core's
    /// buffer budget has left; the growth is reserved exactly, so the budget cannot be passed
    /// by a doubling it did not see). `false`: it does not fit, nothing was kept.
    pub(crate) fn hold(&mut self, id: u32, frame: &[u8], room: usize) -> bool {
        let HeaderRecv::Qpack(q) = self else {
            return false;
        };
        let at = q.held.iter().position(|h| h.id == id);
        let (len, cap) = at.map_or((0, 0), |at| {
            let f = &q.held[at].frames;
            (f.len(), f.capacity())
        });
        let need = len + frame.len();
        if need > cap {
            // Doubling while the budget allows (amortised copies for a long held run), else
            // exactly what this frame needs.
            let target = if need.max(2 * cap) - cap <= room {
                need.max(2 * cap)
            } else {
                need
            };
            if target - cap > room {
                return false;
            }
            let at = at.unwrap_or_else(|| {
                q.held.push(Held {
                    id,
                    frames: Vec::new(),
                    cancel: false,
                });
                q.held.len() - 1
            });
            q.held[at].frames.reserve_exact(target - len);
            q.held[at].frames.extend_from_slice(frame);
        } else if let Some(at) = at {
            q.held[at].frames.extend_from_slice(frame);
        }
        true
    }

    /// Bytes of buffer capacity the held frames use.
    pub(crate) fn held_bytes(&self) -> usize {
        match self {
            HeaderRecv::Qpack(q) => q.held.iter().map(|h| h.frames.capacity()).sum(),
            HeaderRecv::Pending(early) => early.capacity(),
            HeaderRecv::Hpack(_) => 0,
        }
    }

    /// Exchanges held now (for tests and stats).
    #[cfg(test)]
    pub(crate) fn held_exchanges(&self) -> usize {
        match self {
            HeaderRecv::Qpack(q) => q.held.len(),
            _ => 0,
        }
    }

    /// Applies the peer's encoder-stream bytes; the exchanges this unblocked go to
    /// `released` with their held frames, to be dispatched in order, and whether a reset
    /// came meanwhile (then [`HeaderRecv::on_reset`] once they are dispatched).
    ///
    /// # Errors
    ///
    /// A [`QpackError`] (a connection error); any instruction at all on a connection without
    /// a dynamic table is one (an insertion into a table of capacity 0).
    pub(crate) fn on_encoder_stream(
        &mut self,
        bytes: &[u8],
        released: &mut Vec<(u32, Vec<u8>, bool)>,
    ) -> Result<(), QpackError> {
        let q = match self {
            HeaderRecv::Qpack(q) => q,
            HeaderRecv::Pending(early) => {
                if early.len() + bytes.len() > EARLY_LIMIT {
                    return Err(QpackError::EarlyInstructionsTooLarge {
                        len: (early.len() + bytes.len()) as u64,
                        max: EARLY_LIMIT,
                    });
                }
                early.extend_from_slice(bytes);
                return Ok(());
            }
            HeaderRecv::Hpack(_) if bytes.is_empty() => return Ok(()),
            HeaderRecv::Hpack(_) => return Err(QpackError::NoDynamicTable),
        };
        q.dec.feed_encoder_stream(bytes)?;
        if q.held.is_empty() {
            return Ok(());
        }
        let QpackRecv { dec, held, .. } = &mut **q;
        for id in dec.unblocked() {
            if let Some(at) = held.iter().position(|h| u64::from(h.id) == id) {
                let h = held.swap_remove(at);
                released.push((h.id, h.frames, h.cancel));
            }
        }
        Ok(())
    }

    /// Header blocks of exchange `id` may never be decoded (its QUIC stream was reset, or we
    /// stopped reading it): the peer's encoder is told to forget the exchange (RFC 9204
    /// §4.4.2; a Stream Cancellation), once the frames held for it, if any, are decoded (the
    /// cancellation then follows their release).
    pub(crate) fn on_reset(&mut self, id: u32) {
        if let HeaderRecv::Qpack(q) = self {
            match q.held.iter_mut().find(|h| h.id == id) {
                Some(h) => h.cancel = true,
                None => q.dec.cancel_stream(u64::from(id)),
            }
        }
    }

    /// Whether decoder-stream bytes wait for the link.
    #[inline]
    pub(crate) fn has_output(&self) -> bool {
        matches!(self, HeaderRecv::Qpack(q) if q.dec.has_instructions())
    }

    /// Appends the decoder-stream bytes produced so far to `out`.
    pub(crate) fn take_output(&mut self, out: &mut Vec<u8>) {
        if let HeaderRecv::Qpack(q) = self {
            q.dec.take_instructions(out);
        }
    }
}
