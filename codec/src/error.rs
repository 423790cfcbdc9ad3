//! Errors. One enum per operation; each variant says what was wrong and carries a stable
//! `counter()` label so receivers can count protocol violations by kind.

use crate::{FrameKind, StatusCode};

/// A frame or batch could not be decoded. Every variant is a protocol error: the receiver
/// answers with an `Error` frame (id 0, status given by [`DecodeError::status`]) and closes
/// the connection, except [`DecodeError::Incomplete`], which only asks for more bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// More bytes are needed to finish the frame (not an error on a stream transport).
    #[error("incomplete frame: need {needed} more bytes")]
    Incomplete {
        /// How many more bytes are needed at least.
        needed: usize,
    },
    /// The length field is below the 16-byte header size.
    #[error("frame length {length} is shorter than the 16-byte header")]
    LengthTooShort {
        /// The length field.
        length: u32,
    },
    /// The length field exceeds the negotiated maximum frame size.
    #[error(
        "frame length {length} exceeds the maximum frame size {max}; raise max_frame_size on both sides or send smaller frames"
    )]
    FrameTooLarge {
        /// The length field.
        length: u32,
        /// The limit in force.
        max: u32,
    },
    /// The kind byte names no known frame kind.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// A flag bit is set that this kind does not allow, or HAS_HEADERS disagrees with header_len.
    #[error("flags {flags:#04x} are not valid on a {} frame", kind.name())]
    BadFlags {
        /// The frame kind.
        kind: FrameKind,
        /// The raw flags byte.
        flags: u8,
    },
    /// The header block length runs past the end of the frame.
    #[error("header block of {header_len} bytes does not fit in a frame of {length} bytes")]
    HeaderBlockOutOfBounds {
        /// The header_len field.
        header_len: u16,
        /// The length field.
        length: u32,
    },
    /// A header block on a kind that carries none.
    #[error("a {} frame may not carry a header block", .0.name())]
    UnexpectedHeaders(FrameKind),
    /// A payload on a kind that carries none.
    #[error("a {} frame may not carry a payload", .0.name())]
    UnexpectedPayload(FrameKind),
    /// A batch holds more frames than negotiated.
    #[error("batch holds more than {max} frames")]
    TooManyFrames {
        /// The limit in force.
        max: u32,
    },
    /// A batch is larger than negotiated.
    #[error("batch of {len} bytes exceeds the maximum batch size {max}")]
    BatchTooLarge {
        /// The batch length.
        len: usize,
        /// The limit in force.
        max: u32,
    },
    /// A FlatBuffers body failed verification.
    #[error("invalid {table} body in a {} frame: {reason}", kind.name())]
    InvalidBody {
        /// The frame kind.
        kind: FrameKind,
        /// The expected table type.
        table: &'static str,
        /// What the verifier reported.
        reason: String,
    },
    /// The header block is malformed.
    #[error(transparent)]
    Headers(#[from] HeaderError),
    /// The payload could not be decompressed.
    #[error(transparent)]
    Compression(#[from] CompressionError),
    /// A QUIC header block (§27.4) is malformed or out of range.
    #[error(transparent)]
    Qpack(#[from] crate::qpack::QpackError),
}

impl DecodeError {
    /// A stable, low-cardinality label for counters (e.g. `netron_protocol_errors{kind=...}`).
    pub fn counter(&self) -> &'static str {
        match self {
            DecodeError::Incomplete { .. } => "incomplete",
            DecodeError::LengthTooShort { .. } => "length_too_short",
            DecodeError::FrameTooLarge { .. } => "frame_too_large",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::BadFlags { .. } => "bad_flags",
            DecodeError::HeaderBlockOutOfBounds { .. } => "header_block_out_of_bounds",
            DecodeError::UnexpectedHeaders(_) => "unexpected_headers",
            DecodeError::UnexpectedPayload(_) => "unexpected_payload",
            DecodeError::TooManyFrames { .. } => "too_many_frames",
            DecodeError::BatchTooLarge { .. } => "batch_too_large",
            DecodeError::InvalidBody { .. } => "invalid_body",
            DecodeError::Headers(e) => e.counter(),
            DecodeError::Compression(e) => e.counter(),
            DecodeError::Qpack(e) => e.counter(),
        }
    }

    /// The status code to report to the peer for this violation.
    pub fn status(&self) -> StatusCode {
        match self {
            DecodeError::FrameTooLarge { .. }
            | DecodeError::TooManyFrames { .. }
            | DecodeError::BatchTooLarge { .. }
            | DecodeError::Headers(HeaderError::ListTooLarge { .. })
            | DecodeError::Compression(CompressionError::TooLarge { .. }) => {
                StatusCode::ResourceExhausted
            }
            DecodeError::Compression(CompressionError::Unsupported(_)) => StatusCode::Unimplemented,
            DecodeError::Qpack(e) => e.status(),
            _ => StatusCode::Internal,
        }
    }
}

/// A header block is malformed. Decoding never trusts indices or lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The block ended in the middle of a field.
    #[error("header block truncated in the middle of a field")]
    Truncated,
    /// A prefix integer does not fit in 32 bits or uses too many bytes.
    #[error("header block integer overflows 32 bits")]
    IntegerOverflow,
    /// Index 0 is never valid.
    #[error("header index 0 is invalid")]
    ZeroIndex,
    /// An index past the static and dynamic tables.
    #[error("header index {index} is out of range (static + dynamic table hold {len} entries)")]
    IndexOutOfRange {
        /// The index received.
        index: u32,
        /// Entries in the static and dynamic tables together.
        len: u32,
    },
    /// The string's Huffman bit is set; Netron sends strings raw.
    #[error("header string uses Huffman coding, which Netron does not use")]
    HuffmanNotSupported,
    /// A dynamic table size update above the negotiated maximum.
    #[error("dynamic table size update to {requested} exceeds the negotiated {max}")]
    TableSizeTooLarge {
        /// The size asked for.
        requested: u32,
        /// The negotiated maximum.
        max: u32,
    },
    /// A dynamic table size update after the first field of a block.
    #[error("dynamic table size update after the first field of a header block")]
    SizeUpdateNotFirst,
    /// The decoded header list exceeds the limit.
    #[error("decoded header list of {size} bytes exceeds the limit of {max}")]
    ListTooLarge {
        /// Size so far (name + value + 32 per field).
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// The encoder was asked to write a header block larger than 65535 bytes.
    #[error("header block exceeds 65535 bytes")]
    BlockTooLarge,
    /// A packed value (H bit set, docs/protocol.md §9.10) that is malformed, refers to a
    /// trace-id not sent yet, or arrived without `PACKED_TRACE` in force; says which.
    #[error("bad packed header value: {0}")]
    PackedValue(&'static str),
}

impl HeaderError {
    /// A stable label for counters.
    pub fn counter(&self) -> &'static str {
        match self {
            HeaderError::Truncated => "header_truncated",
            HeaderError::IntegerOverflow => "header_integer_overflow",
            HeaderError::ZeroIndex => "header_zero_index",
            HeaderError::IndexOutOfRange { .. } => "header_index_out_of_range",
            HeaderError::HuffmanNotSupported => "header_huffman",
            HeaderError::TableSizeTooLarge { .. } => "header_table_size_too_large",
            HeaderError::SizeUpdateNotFirst => "header_size_update_not_first",
            HeaderError::ListTooLarge { .. } => "header_list_too_large",
            HeaderError::BlockTooLarge => "header_block_too_large",
            HeaderError::PackedValue(_) => "header_packed_value",
        }
    }
}

/// A payload could not be (de)compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressionError {
    /// The algorithm was not negotiated or is not compiled in.
    #[error("payload compressed with {0:?}, which was not negotiated")]
    Unsupported(crate::Compression),
    /// The declared decompressed size exceeds the negotiated limit (decompression bomb guard).
    #[error("declared decompressed size {declared} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The size the payload declares.
        declared: u64,
        /// The limit in force.
        max: u32,
    },
    /// The compressed bytes are corrupt or decompress to a size other than declared.
    #[error("compressed payload is corrupt")]
    Corrupt,
}

impl CompressionError {
    /// A stable label for counters.
    pub fn counter(&self) -> &'static str {
        match self {
            CompressionError::Unsupported(_) => "compression_unsupported",
            CompressionError::TooLarge { .. } => "decompression_too_large",
            CompressionError::Corrupt => "compression_corrupt",
        }
    }
}

/// A frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The frame would exceed the negotiated maximum frame size.
    #[error(
        "frame of {length} bytes exceeds the maximum frame size {max}; send the data as a stream"
    )]
    FrameTooLarge {
        /// The frame length.
        length: usize,
        /// The limit in force.
        max: u32,
        /// Whether a header block had been encoded: the header encoder is then ahead of the
        /// peer's decoder and the connection must be closed. Check payload sizes first.
        headers_encoded: bool,
    },
    /// The batch is full (frames or bytes); flush it and encode again.
    #[error("batch is full; flush it first")]
    BatchFull,
    /// The header block could not be encoded.
    #[error(transparent)]
    Headers(#[from] HeaderError),
}

impl EncodeError {
    /// Whether the connection must be closed: a header block was encoded (the encoder's
    /// dynamic table moved) but the frame could not be queued, so the peer's decoder would no
    /// longer be in step.
    pub fn must_close(&self) -> bool {
        matches!(
            self,
            EncodeError::FrameTooLarge {
                headers_encoded: true,
                ..
            } | EncodeError::Headers(HeaderError::BlockTooLarge)
        )
    }
}

/// The handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The first 6 bytes are not the Netron magic (a server reading a client), or not a frame
    /// header (a client reading a server's answer): the peer does not speak Netron.
    #[error("the peer does not speak Netron/1: bad preface or first frame (first bytes {0:02x?})")]
    BadPreface([u8; 6]),
    /// The peer's major version is not ours.
    #[error("protocol major version {theirs} is incompatible with ours ({ours}); upgrade one side")]
    IncompatibleVersion {
        /// The peer's major version.
        theirs: u8,
        /// Ours.
        ours: u8,
    },
    /// The server refused the connection.
    #[error("rejected by the server: {status}: {reason}")]
    Rejected {
        /// Why.
        status: StatusCode,
        /// The server's explanation.
        reason: String,
        /// Do not retry before this many milliseconds (0 = no advice).
        retry_after_ms: u32,
    },
    /// A frame other than the one the handshake expects arrived.
    #[error("expected {expected} during the handshake, got a {} frame", got.name())]
    UnexpectedFrame {
        /// What was expected.
        expected: &'static str,
        /// What arrived.
        got: FrameKind,
    },
    /// The settings offered are unusable (e.g. a frame size below the minimum).
    #[error("invalid settings: {0}")]
    InvalidSettings(&'static str),
    /// The handshake frame was malformed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl HandshakeError {
    /// A stable label for counters.
    pub fn counter(&self) -> &'static str {
        match self {
            HandshakeError::BadPreface(_) => "bad_preface",
            HandshakeError::IncompatibleVersion { .. } => "incompatible_version",
            HandshakeError::Rejected { .. } => "rejected",
            HandshakeError::UnexpectedFrame { .. } => "unexpected_handshake_frame",
            HandshakeError::InvalidSettings(_) => "invalid_settings",
            HandshakeError::Decode(e) => e.counter(),
        }
    }
}
