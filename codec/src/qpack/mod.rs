//! Header compression across independent streams (QUIC): a QPACK-style scheme (RFC 9204)
//! with Netron's static table and no Huffman coding. Normative text: docs/protocol.md §27.
//!
//! HPACK (§9) needs every header block of a direction decoded in one order, which separate
//! QUIC streams do not give. Here, as in QPACK, the dynamic table changes only through
//! *encoder instructions* on one ordered unidirectional stream (the encoder stream), header
//! blocks on the call streams only *reference* entries, and each block starts with the
//! number of insertions it needs (the Required Insert Count). A block that arrives before
//! those insertions is *blocked* until they do; at most [`MAX_BLOCKED_STREAMS`] streams may be
//! blocked at once. The decoder tells the encoder what it has seen through *decoder
//! instructions* on its own unidirectional stream (section acknowledgements, stream
//! cancellations, insert count increments), so the encoder never evicts an entry a block in
//! flight still needs.
//!
//! Blocks are tracked per *stream*, a `u64` the caller chooses: Netron uses the exchange id
//! (the frame's `id`), which has one QUIC stream per direction (§27.4).
//!
//! - [`QpackEncoder`]: one per connection and direction, at the sender. Encodes header
//!   blocks for a stream and appends the insertions they rely on to the encoder stream;
//!   reads the peer's decoder stream.
//! - [`QpackDecoder`]: at the receiver. Reads the encoder stream, decodes header blocks (or
//!   reports them blocked), and produces the decoder stream.
//!
//! ```
//! use netron_codec::hpack::{Header, HeaderList};
//! use netron_codec::qpack::{Decoded, QpackDecoder, QpackEncoder};
//!
//! let mut enc = QpackEncoder::new(4096);
//! let mut dec = QpackDecoder::new(4096, 16 * 1024);
//! let (mut block, mut enc_stream, mut dec_stream) = (Vec::new(), Vec::new(), Vec::new());
//! let fields = [Header::service(b"calc@1.2.0"), Header::method(b"add")];
//! enc.encode(4, &fields, &mut block, &mut enc_stream).unwrap();
//!
//! // The block overtakes the encoder stream: it is blocked, not an error.
//! let mut list = HeaderList::default();
//! assert_eq!(dec.decode(4, &block, &mut list).unwrap(), Decoded::Blocked);
//! dec.feed_encoder_stream(&enc_stream).unwrap();
//! assert_eq!(dec.unblocked().collect::<Vec<_>>(), [4]);
//! assert_eq!(dec.decode(4, &block, &mut list).unwrap(), Decoded::Done);
//! assert_eq!(list.method(), Some(&b"add"[..]));
//!
//! // Once the encoder has read the acknowledgement, the same fields cost one byte each
//! // plus the two-byte prefix, and nothing on the encoder stream.
//! dec.take_instructions(&mut dec_stream);
//! enc.feed_decoder_stream(&dec_stream).unwrap();
//! block.clear();
//! enc_stream.clear();
//! enc.encode(8, &fields, &mut block, &mut enc_stream).unwrap();
//! assert_eq!((block.len(), enc_stream.len()), (4, 0));
//! ```

mod decoder;
mod encoder;
mod prefix;
mod table;

pub use decoder::{Decoded, QpackDecoder};
pub use encoder::{MAX_UNACKED_SECTIONS, QpackEncoder};

use crate::StatusCode;

/// QUIC unidirectional stream type of the header encoder stream (first byte of the stream).
pub const ENCODER_STREAM_TYPE: u8 = 0x02;
/// QUIC unidirectional stream type of the header decoder stream.
pub const DECODER_STREAM_TYPE: u8 = 0x03;
/// Which of a side's two header streams bytes belong to (docs/protocol.md §27.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderStream {
    /// Encoder instructions ([`ENCODER_STREAM_TYPE`]): the peer's feed our decoder.
    Encoder,
    /// Decoder instructions ([`DECODER_STREAM_TYPE`]): the peer's feed our encoder.
    Decoder,
}

impl HeaderStream {
    /// The stream's type byte, the first byte on the stream.
    pub fn type_byte(self) -> u8 {
        match self {
            HeaderStream::Encoder => ENCODER_STREAM_TYPE,
            HeaderStream::Decoder => DECODER_STREAM_TYPE,
        }
    }

    /// The stream a type byte names, if any.
    pub fn from_type_byte(t: u8) -> Option<Self> {
        match t {
            ENCODER_STREAM_TYPE => Some(HeaderStream::Encoder),
            DECODER_STREAM_TYPE => Some(HeaderStream::Decoder),
            _ => None,
        }
    }
}

/// Most streams whose header blocks may be blocked at a decoder at once (fixed in version 1).
pub const MAX_BLOCKED_STREAMS: usize = 16;

/// A header block or an encoder/decoder-stream instruction is malformed. Every variant is a
/// connection error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QpackError {
    /// A header block ended inside a field line or its prefix.
    #[error("header block truncated")]
    Truncated,
    /// An integer above 2^62 − 1 or with too many continuation bytes.
    #[error("integer overflows 62 bits")]
    IntegerOverflow,
    /// A string with the Huffman bit set.
    #[error("string uses Huffman coding, which Netron does not use")]
    HuffmanNotSupported,
    /// A string longer than anything the receiver accepts there.
    #[error("string of {len} bytes exceeds {max}")]
    StringTooLong {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The Required Insert Count of a block cannot be decoded (RFC 9204 §4.5.1.1).
    #[error("invalid Required Insert Count")]
    BadRequiredInsertCount,
    /// The Base of a block is negative.
    #[error("invalid Base")]
    BadBase,
    /// A static index past the table, or a dynamic index that is evicted, not yet inserted,
    /// or at or above the block's Required Insert Count.
    #[error("header index out of range")]
    IndexOutOfRange,
    /// An inserted entry larger than the table capacity.
    #[error("entry of {size} bytes exceeds the table capacity {capacity}")]
    EntryTooLarge {
        /// Entry size (name + value + 32).
        size: usize,
        /// Capacity in force.
        capacity: usize,
    },
    /// A Set Dynamic Table Capacity above the negotiated `header_table_size`.
    #[error("table capacity {requested} exceeds the negotiated {max}")]
    CapacityTooLarge {
        /// Requested capacity.
        requested: u64,
        /// Negotiated maximum.
        max: usize,
    },
    /// A block would make more than [`MAX_BLOCKED_STREAMS`] streams blocked.
    #[error("more than 16 streams blocked on header-table insertions")]
    BlockedStreamsExceeded,
    /// A Section Acknowledgement for a stream with no unacknowledged block.
    #[error("section acknowledgement for stream {0} with no block outstanding")]
    UnexpectedAck(u64),
    /// An Insert Count Increment of 0 or beyond the insertions sent.
    #[error("invalid insert count increment")]
    BadIncrement,
    /// A decoded header list above the receiver's `max_header_list_size`.
    #[error("decoded header list of {size} bytes exceeds {max}")]
    ListTooLarge {
        /// Size so far.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// A block that references the dynamic table where none may be used (a datagram).
    #[error("header block references the dynamic table in a datagram")]
    DynamicInDatagram,
    /// Encoder side: a header block above 65 535 bytes.
    #[error("header block exceeds 65535 bytes")]
    BlockTooLarge,
    /// Encoder- or decoder-stream instructions on a connection without a dynamic table
    /// (`header_table_size` 0 offered by either side: blocks are HPACK with literals only and
    /// no header streams are used, docs/protocol.md §27.4 (a)).
    #[error(
        "header-table instructions on a connection without a dynamic table (header_table_size 0 \
         negotiated, so no encoder or decoder stream is used)"
    )]
    NoDynamicTable,
    /// Encoder-stream bytes that came before the handshake settled the table size, above
    /// what a receiver keeps for them.
    #[error(
        "{len} bytes of header-table insertions before the handshake completed exceed the {max} \
         kept until then"
    )]
    EarlyInstructionsTooLarge {
        /// Bytes so far.
        len: u64,
        /// What is kept at most.
        max: usize,
    },
}

impl QpackError {
    /// A stable label for counters.
    pub fn counter(&self) -> &'static str {
        match self {
            QpackError::Truncated => "qpack_truncated",
            QpackError::IntegerOverflow => "qpack_integer_overflow",
            QpackError::HuffmanNotSupported => "qpack_huffman",
            QpackError::StringTooLong { .. } => "qpack_string_too_long",
            QpackError::BadRequiredInsertCount => "qpack_required_insert_count",
            QpackError::BadBase => "qpack_base",
            QpackError::IndexOutOfRange => "qpack_index_out_of_range",
            QpackError::EntryTooLarge { .. } => "qpack_entry_too_large",
            QpackError::CapacityTooLarge { .. } => "qpack_capacity_too_large",
            QpackError::BlockedStreamsExceeded => "qpack_blocked_streams",
            QpackError::UnexpectedAck(_) => "qpack_unexpected_ack",
            QpackError::BadIncrement => "qpack_bad_increment",
            QpackError::ListTooLarge { .. } => "qpack_list_too_large",
            QpackError::DynamicInDatagram => "qpack_dynamic_in_datagram",
            QpackError::BlockTooLarge => "qpack_block_too_large",
            QpackError::NoDynamicTable => "qpack_no_dynamic_table",
            QpackError::EarlyInstructionsTooLarge { .. } => "qpack_early_instructions",
        }
    }

    /// The status of the connection error a receiver sends.
    pub fn status(&self) -> StatusCode {
        match self {
            QpackError::ListTooLarge { .. }
            | QpackError::BlockedStreamsExceeded
            | QpackError::EarlyInstructionsTooLarge { .. } => StatusCode::ResourceExhausted,
            _ => StatusCode::Internal,
        }
    }
}

/// `MaxEntries` of RFC 9204 §3.2.2 for a negotiated maximum capacity.
pub(crate) fn max_entries(max_capacity: usize) -> u64 {
    (max_capacity / crate::hpack::ENTRY_OVERHEAD) as u64
}
