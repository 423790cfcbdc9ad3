//! Shared pieces of the netron-codec and netron-shm fuzz targets: how a target turns its first
//! input bytes into settings, the invariants every decoded frame must satisfy, "touch every
//! field" helpers for verified FlatBuffers tables, and the structured (`arbitrary`) inputs of
//! the stateful targets. The corpus generator (`examples/gen_corpus.rs`) uses the same definitions, so the
//! seeds it writes mean what the targets expect.

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use arbitrary::{Arbitrary, Result, Unstructured};
use netron_codec::compress::Compression;
use netron_codec::hpack::Indexing;
use netron_codec::wire;
use netron_codec::{Body, DecodeError, Flags, Frame, FrameKind, HEADER_LEN, Limits};

// ---------------------------------------------------------------------------------------------
// Settings taken from the first input bytes (byte-oriented targets).

/// Bytes of settings in front of a `batch_decode` input.
pub const BATCH_PREFIX: usize = 4;

/// `batch_decode` limits from its 4-byte prefix: `[max_batch_frames, max_batch_bytes (u16 LE),
/// frame size code]`. Frame size code 0xff = no practical limit, else `16 + 64 * code`.
pub fn batch_limits(p: [u8; BATCH_PREFIX]) -> Limits {
    let max_frame_size = if p[3] == 0xff {
        u32::MAX
    } else {
        16 + 64 * p[3] as u32
    };
    Limits::default()
        .with_max_batch_frames(p[0] as u32)
        .with_max_batch_bytes(u16::from_le_bytes([p[1], p[2]]) as u32)
        .with_max_frame_size(max_frame_size)
}

/// The inverse of [`batch_limits`] for the corpus generator.
pub fn batch_prefix(max_batch_frames: u8, max_batch_bytes: u16, frame_code: u8) -> [u8; 4] {
    let b = max_batch_bytes.to_le_bytes();
    [max_batch_frames, b[0], b[1], frame_code]
}

/// Bytes of settings in front of a `header_block` input.
pub const HEADER_BLOCK_PREFIX: usize = 4;

/// `header_block` settings from its prefix: dynamic table size (u16 LE) and max header list
/// size (u16 LE, times 4).
pub fn header_block_params(p: [u8; HEADER_BLOCK_PREFIX]) -> (u32, usize) {
    (
        u16::from_le_bytes([p[0], p[1]]) as u32,
        u16::from_le_bytes([p[2], p[3]]) as usize * 4,
    )
}

/// Bytes of settings in front of a `decompress` input.
pub const DECOMPRESS_PREFIX: usize = 2;

/// `decompress` settings: algorithm (byte 0 mod 3: Lz4, Zstd, None) and limit
/// (`1 << (byte 1 mod 18)`, or 0 for byte 1 = 0xff).
pub fn decompress_params(p: [u8; DECOMPRESS_PREFIX]) -> (Compression, u32) {
    let algo = match p[0] % 3 {
        0 => Compression::Lz4,
        1 => Compression::Zstd,
        _ => Compression::None,
    };
    let max = if p[1] == 0xff { 0 } else { 1u32 << (p[1] % 18) };
    (algo, max)
}

// ---------------------------------------------------------------------------------------------
// Frame invariants.

/// Checks everything a successfully parsed frame promises, given the buffer it was parsed
/// from (the frame starts at `buf[0]`).
pub fn check_frame(frame: &Frame<'_>, buf: &[u8], limits: &Limits) {
    let len = frame.len();
    assert!(len >= HEADER_LEN, "frame shorter than its header");
    assert!(len <= buf.len(), "frame longer than the buffer");
    assert!(
        len as u64 <= limits.max_frame_size as u64,
        "frame above max_frame_size"
    );
    assert_eq!(frame.as_bytes(), &buf[..len]);
    assert_eq!(frame.header().length() as usize, len);
    assert_eq!(frame.header().as_bytes(), &buf[..HEADER_LEN]);
    let (hb, payload) = (frame.header_block(), frame.payload());
    assert_eq!(hb.len() + payload.len(), len - HEADER_LEN);
    assert_eq!(hb.len(), frame.header().header_len() as usize);
    assert_eq!(hb, &buf[HEADER_LEN..HEADER_LEN + hb.len()]);
    let kind = frame.kind();
    assert_eq!(kind as u8, frame.header().kind_byte());
    assert_eq!(frame.flags().bits(), frame.header().flags_byte());
    assert!(
        kind.allowed_flags().contains(frame.flags()),
        "{kind:?} {:?}",
        frame.flags()
    );
    assert_eq!(frame.flags().contains(Flags::HAS_HEADERS), !hb.is_empty());
    if !kind.may_have_headers() {
        assert!(hb.is_empty());
    }
    if kind.body() == Body::Empty {
        assert!(payload.is_empty());
    }
    if frame.flags().contains(Flags::COMPRESSED) {
        assert_eq!(kind.body(), Body::Opaque);
    }
    match kind {
        FrameKind::Request | FrameKind::StreamOpen => {
            assert_eq!(frame.deadline().is_some(), frame.arg() != 0)
        }
        _ => assert_eq!(frame.deadline(), None),
    }
    assert_eq!(frame.id(), frame.header().id());
    assert_eq!(frame.arg(), frame.header().arg());
    // Parsing depends on the frame's own bytes only.
    let again = Frame::parse(&buf[..len], limits).expect("a frame parses from its own bytes");
    assert_eq!(again.as_bytes(), frame.as_bytes());
    black_box(kind.name());
}

/// Checks what an error from [`Frame::parse`] on `buf` promises.
pub fn check_parse_error(err: &DecodeError, buf: &[u8], limits: &Limits) {
    black_box(err.counter());
    black_box(err.status());
    black_box(err.to_string());
    match *err {
        DecodeError::Incomplete { needed } => {
            assert!(needed > 0, "Incomplete with nothing needed");
            if buf.len() >= HEADER_LEN {
                let length = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
                assert_eq!(buf.len() + needed, length);
                assert!(length as u64 <= limits.max_frame_size as u64);
            } else {
                assert_eq!(needed, HEADER_LEN - buf.len());
            }
        }
        DecodeError::FrameTooLarge { length, max } => {
            assert!(length > max);
            assert_eq!(max, limits.max_frame_size);
        }
        DecodeError::LengthTooShort { length } => assert!((length as usize) < HEADER_LEN),
        _ => assert!(buf.len() >= HEADER_LEN),
    }
}

// ---------------------------------------------------------------------------------------------
// Verified tables: read every field (the verifier's promise is that this cannot go wrong).

fn touch_str(s: Option<&str>) {
    if let Some(s) = s {
        assert!(std::str::from_utf8(s.as_bytes()).is_ok());
        black_box(s.chars().count());
    }
}

fn touch_bytes(v: Option<flatbuffers::Vector<'_, u8>>) {
    if let Some(v) = v {
        let b = v.bytes();
        assert_eq!(b.len(), v.len());
        black_box(b.iter().fold(0u8, |a, x| a ^ x));
        black_box(v.iter().count());
    }
}

/// Reads every field of a verified Hello.
pub fn touch_hello(h: &wire::Hello<'_>) {
    black_box((h.features(), h.max_frame_size(), h.header_table_size()));
    black_box((
        h.max_batch_frames(),
        h.max_batch_bytes(),
        h.max_decompressed_size(),
    ));
    if let Some(c) = h.compression() {
        for x in c.iter() {
            black_box(x.variant_name());
        }
        if !c.is_empty() {
            black_box(c.get(c.len() - 1));
        }
    }
    touch_bytes(h.auth_token());
    touch_str(h.client_name());
    black_box(format!("{h:?}"));
}

/// Reads every field of a verified Welcome.
pub fn touch_welcome(w: &wire::Welcome<'_>) {
    black_box((
        w.version_minor(),
        w.features(),
        w.compression().variant_name(),
    ));
    black_box((
        w.compression_threshold(),
        w.max_frame_size(),
        w.header_table_size(),
    ));
    black_box((
        w.max_batch_frames(),
        w.max_batch_bytes(),
        w.max_decompressed_size(),
    ));
    black_box((
        w.max_concurrent_calls(),
        w.initial_stream_window(),
        w.keepalive_interval_ms(),
    ));
    touch_str(w.server_id());
    black_box(format!("{w:?}"));
}

/// Reads every field of a verified Reject.
pub fn touch_reject(r: &wire::Reject<'_>) {
    black_box((
        netron_codec::control::status(r.status()),
        r.retry_after_ms(),
    ));
    touch_str(r.reason());
    black_box(format!("{r:?}"));
}

/// Reads every field of a verified ErrorBody.
pub fn touch_error(e: &wire::ErrorBody<'_>) {
    black_box(netron_codec::control::status(e.status()));
    touch_str(e.message());
    touch_bytes(e.details());
    black_box(format!("{e:?}"));
}

/// Reads every field of a verified GoAway.
pub fn touch_go_away(g: &wire::GoAway<'_>) {
    black_box((g.last_id(), netron_codec::control::status(g.status())));
    touch_str(g.reason());
    black_box(format!("{g:?}"));
}

/// Reads every field of a verified Subscribe.
pub fn touch_subscribe(s: &wire::Subscribe<'_>) {
    black_box((s.queue_depth(), s.datagrams()));
    touch_str(s.pattern());
    black_box(format!("{s:?}"));
}

/// Reads every field of a verified ServiceList, methods included.
pub fn touch_service_list(l: &wire::ServiceList<'_>) {
    if let Some(services) = l.services() {
        for s in services.iter() {
            touch_str(Some(s.name()));
            touch_str(Some(s.version()));
            if let Some(methods) = s.methods() {
                for m in methods.iter() {
                    touch_str(Some(m.name()));
                    black_box(m.kind().variant_name());
                }
            }
        }
    }
    black_box(format!("{l:?}"));
}

// ---------------------------------------------------------------------------------------------
// Structured inputs (`arbitrary`).

/// Header names the structured targets favour, so that fields repeat and hit the tables.
pub const NAMES: &[&[u8]] = &[
    b":service",
    b":method",
    b":topic",
    b"traceparent",
    b"authorization",
    b"content-type",
    b"user-agent",
    b"x-request-id",
    b"deadline",
    b"x-tenant",
    b"baggage",
    b"",
];

/// Header values the structured targets favour (none longer than [`SCRATCH_LEN`]).
pub const VALUES: &[&[u8]] = &[
    b"",
    b"calc@1.0.0",
    b"add",
    b"orders.*",
    b"application/json",
    b"application/flatbuffers",
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    b"Bearer dG9rZW4",
    b"acme",
];

/// Size of each reused value buffer in `header_sequence` (values are at most 700 bytes).
pub const SCRATCH_LEN: usize = 1024;

/// One header field to encode.
///
/// Names and values from [`NAMES`] / [`VALUES`] are borrowed `'static` slices, so the same
/// address comes back call after call (the encoder keeps address-keyed hints); `scratch` asks
/// `header_sequence` to pass the value from a buffer reused at the same address with changing
/// contents (a stale hint must never be trusted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    /// Field name.
    pub name: Cow<'static, [u8]>,
    /// Field value.
    pub value: Cow<'static, [u8]>,
    /// Indexing policy.
    pub indexing: Indexing,
    /// Pass the value from a reused buffer (header_sequence only).
    pub scratch: bool,
}

impl<'a> Arbitrary<'a> for FieldSpec {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let name = if u.ratio(3u8, 4)? {
            Cow::Borrowed(*u.choose(NAMES)?)
        } else {
            let n = u.int_in_range(0..=40usize)?;
            Cow::Owned(u.bytes(n)?.to_vec())
        };
        let value = match u.int_in_range(0..=6u8)? {
            0..=2 => Cow::Borrowed(*u.choose(VALUES)?),
            // A canonical traceparent (packed when PACKED_TRACE is on): one of two trace-ids,
            // so the 10-byte form that reuses the last one is exercised too.
            6 => Cow::Owned(
                format!(
                    "{:02x}-{}-{:016x}-{:02x}",
                    u.arbitrary::<u8>()?,
                    if u.arbitrary()? {
                        "4bf92f3577b34da6a3ce929d0e0e4736"
                    } else {
                        "0af7651916cd43dd8448eb211c80319c"
                    },
                    u.arbitrary::<u64>()?,
                    u.arbitrary::<u8>()?
                )
                .into_bytes(),
            ),
            3 | 4 => {
                let n = u.int_in_range(0..=24usize)?;
                Cow::Owned(u.bytes(n)?.to_vec())
            }
            // Large values: evictions, and entries larger than small tables.
            _ => Cow::Owned(vec![u.arbitrary::<u8>()?; u.int_in_range(0..=700usize)?]),
        };
        let indexing = match u.int_in_range(0..=3u8)? {
            0 => Indexing::Auto,
            1 => Indexing::Incremental,
            2 => Indexing::No,
            _ => Indexing::Never,
        };
        Ok(FieldSpec {
            name,
            value,
            indexing,
            scratch: u.ratio(1u8, 4)?,
        })
    }
}

fn table_size(u: &mut Unstructured<'_>) -> Result<u32> {
    Ok(match u.int_in_range(0..=4u8)? {
        0 => 0,
        1 => 64,
        2 => 256,
        3 => 4096,
        _ => u.int_in_range(0..=8192u32)?,
    })
}

/// Input of `header_sequence`: one connection direction's header traffic.
#[derive(Debug, Clone)]
pub struct HeaderSequence {
    /// The negotiated dynamic table size (both encoder and decoder).
    pub table_size: u32,
    /// Whether `PACKED_TRACE` is in force (both encoder and decoder).
    pub packed_trace: bool,
    /// What happens, in order.
    pub steps: Vec<HeaderStep>,
}

/// One step of [`HeaderSequence`].
#[derive(Debug, Clone)]
pub enum HeaderStep {
    /// Encode this list as one block and decode it.
    Block(Vec<FieldSpec>),
    /// `HeaderEncoder::set_max_table_size` (may exceed the negotiated size: then an error).
    SetMaxTableSize(u32),
    /// Raw bytes for the separate garbage decoder.
    Garbage(Vec<u8>),
}

impl<'a> Arbitrary<'a> for HeaderSequence {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let table_size = table_size(u)?;
        let packed_trace = u.arbitrary()?;
        let mut steps = Vec::new();
        while !u.is_empty() && steps.len() < 64 {
            steps.push(match u.int_in_range(0..=9u8)? {
                0..=5 => {
                    let n = u.int_in_range(0..=12usize)?;
                    let mut fields = Vec::with_capacity(n);
                    for _ in 0..n {
                        fields.push(u.arbitrary()?);
                    }
                    HeaderStep::Block(fields)
                }
                6 | 7 => HeaderStep::SetMaxTableSize(u.int_in_range(0..=table_size + 64)?),
                _ => {
                    let n = u.int_in_range(0..=64usize)?;
                    HeaderStep::Garbage(u.bytes(n)?.to_vec())
                }
            });
        }
        Ok(HeaderSequence {
            table_size,
            packed_trace,
            steps,
        })
    }
}

/// A payload: raw bytes or a compressible repetition.
#[derive(Debug, Clone)]
pub enum PayloadSpec {
    /// These bytes.
    Bytes(Vec<u8>),
    /// `pattern` repeated `times` times (compresses well).
    Repeat(Vec<u8>, u16),
}

impl PayloadSpec {
    /// The payload bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            PayloadSpec::Bytes(b) => b.clone(),
            PayloadSpec::Repeat(p, n) => p.repeat(*n as usize),
        }
    }
}

impl<'a> Arbitrary<'a> for PayloadSpec {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(if u.arbitrary()? {
            let n = u.int_in_range(0..=256usize)?;
            PayloadSpec::Bytes(u.bytes(n)?.to_vec())
        } else {
            let n = u.int_in_range(1..=16usize)?;
            PayloadSpec::Repeat(u.bytes(n)?.to_vec(), u.int_in_range(0..=4096u16)?)
        })
    }
}

/// One data or control-less frame for `roundtrip`.
#[derive(Debug, Clone)]
pub struct FrameSpec {
    /// Kind (any of the 17).
    pub kind: FrameKind,
    /// Flags: only ones the kind allows, never HAS_HEADERS / COMPRESSED (the builder sets those).
    pub flags: Flags,
    /// id field.
    pub id: u32,
    /// arg field (ignored for a Request with `deadline`).
    pub arg: u32,
    /// For Requests: encode with `BatchEncoder::request` and this deadline.
    pub deadline: Option<Option<Duration>>,
    /// Header fields (only for kinds that may carry a header block).
    pub headers: Vec<FieldSpec>,
    /// Payload (none for kinds whose body is empty).
    pub payload: Option<PayloadSpec>,
    /// Use `payload_compressed` (only for opaque payloads).
    pub compress: bool,
    /// Use `payload_with` instead of `payload`.
    pub payload_with: bool,
}

impl<'a> Arbitrary<'a> for FrameSpec {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let kind = *u.choose(&FrameKind::ALL)?;
        let flags = Flags::from_bits_truncate(u.arbitrary()?)
            & kind.allowed_flags()
            & !(Flags::HAS_HEADERS | Flags::COMPRESSED);
        let deadline = if kind == FrameKind::Request && u.arbitrary()? {
            Some(if u.arbitrary()? {
                Some(Duration::new(
                    u.int_in_range(0..=4_000_000u64)?,
                    u.int_in_range(0..=999_999_999u32)?,
                ))
            } else {
                None
            })
        } else {
            None
        };
        let mut headers = Vec::new();
        if kind.may_have_headers() {
            for _ in 0..u.int_in_range(0..=6usize)? {
                headers.push(u.arbitrary()?);
            }
        }
        let payload = if kind.body() == Body::Empty {
            None
        } else {
            Some(u.arbitrary()?)
        };
        Ok(FrameSpec {
            kind,
            flags,
            id: u.arbitrary()?,
            arg: u.arbitrary()?,
            deadline,
            headers,
            payload,
            compress: kind.body() == Body::Opaque && u.arbitrary()?,
            payload_with: u.arbitrary()?,
        })
    }
}

fn small_string(u: &mut Unstructured<'_>) -> Result<String> {
    let s: String = u.arbitrary()?;
    Ok(s.chars().take(200).collect())
}

/// A control body for `roundtrip`, built with `ControlEncoder` and read back with `control`.
#[derive(Debug, Clone)]
pub enum ControlSpec {
    /// A Hello (body fields).
    Hello {
        /// Feature bits.
        features: u64,
        /// Compression wire values (mod 3).
        compression: Vec<Compression>,
        /// max_frame_size, header_table_size, max_batch_frames, max_batch_bytes,
        /// max_decompressed_size.
        numbers: [u32; 5],
        /// Auth token.
        auth_token: Option<Vec<u8>>,
        /// Client name.
        client_name: Option<String>,
    },
    /// A Welcome.
    Welcome {
        /// version_minor.
        version_minor: u8,
        /// features.
        features: u64,
        /// compression.
        compression: Compression,
        /// compression_threshold, max_frame_size, header_table_size, max_batch_frames,
        /// max_batch_bytes, max_decompressed_size, max_concurrent_calls,
        /// initial_stream_window, keepalive_interval_ms.
        numbers: [u32; 9],
        /// server_id.
        server_id: String,
    },
    /// A Reject.
    Reject {
        /// Status wire value.
        status: u16,
        /// Reason.
        reason: String,
        /// Retry hint.
        retry_after_ms: u32,
    },
    /// An Error frame.
    Error {
        /// Call id.
        id: u32,
        /// Status wire value.
        status: u16,
        /// Message.
        message: String,
        /// Details.
        details: Vec<u8>,
    },
    /// A StreamEnd carrying an error.
    StreamEndError {
        /// Stream id.
        id: u32,
        /// Status wire value.
        status: u16,
        /// Message.
        message: String,
    },
    /// A GoAway.
    GoAway {
        /// Last id.
        last_id: u32,
        /// Status wire value.
        status: u16,
        /// Reason.
        reason: String,
    },
    /// A Subscribe.
    Subscribe {
        /// Subscription id.
        id: u32,
        /// Pattern.
        pattern: String,
        /// Queue depth.
        queue_depth: u32,
    },
}

fn compression(u: &mut Unstructured<'_>) -> Result<Compression> {
    Ok(Compression::from_u8(u.int_in_range(0..=2u8)?).unwrap())
}

impl<'a> Arbitrary<'a> for ControlSpec {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0..=6u8)? {
            0 => ControlSpec::Hello {
                features: u.arbitrary()?,
                compression: (0..u.int_in_range(0..=4usize)?)
                    .map(|_| compression(u))
                    .collect::<Result<_>>()?,
                numbers: u.arbitrary()?,
                auth_token: u.arbitrary()?,
                client_name: if u.arbitrary()? {
                    Some(small_string(u)?)
                } else {
                    None
                },
            },
            1 => ControlSpec::Welcome {
                version_minor: u.arbitrary()?,
                features: u.arbitrary()?,
                compression: compression(u)?,
                numbers: u.arbitrary()?,
                server_id: small_string(u)?,
            },
            2 => ControlSpec::Reject {
                status: u.int_in_range(0..=20u16)?,
                reason: small_string(u)?,
                retry_after_ms: u.arbitrary()?,
            },
            3 => ControlSpec::Error {
                id: u.arbitrary()?,
                status: u.int_in_range(0..=20u16)?,
                message: small_string(u)?,
                details: u.arbitrary()?,
            },
            4 => ControlSpec::StreamEndError {
                id: u.arbitrary()?,
                status: u.int_in_range(0..=20u16)?,
                message: small_string(u)?,
            },
            5 => ControlSpec::GoAway {
                last_id: u.arbitrary()?,
                status: u.int_in_range(0..=20u16)?,
                reason: small_string(u)?,
            },
            _ => ControlSpec::Subscribe {
                id: u.arbitrary()?,
                pattern: small_string(u)?,
                queue_depth: u.arbitrary()?,
            },
        })
    }
}

/// One item queued in `roundtrip`.
#[derive(Debug, Clone, Arbitrary)]
pub enum Item {
    /// A frame with opaque (or unverified) payload.
    Frame(FrameSpec),
    /// A control frame with a real FlatBuffers body.
    Control(ControlSpec),
    /// Flush: decode and check the batch so far, then clear it.
    Flush,
}

/// Input of `roundtrip`: connection settings and the frames one side sends.
#[derive(Debug, Clone)]
pub struct RoundTrip {
    /// Limits of both sides (max_frame_size >= 1 KiB, batch limits >= 1).
    pub limits: Limits,
    /// Payload compression in use.
    pub compression: Compression,
    /// Compression threshold.
    pub threshold: usize,
    /// Dynamic table size.
    pub table_size: u32,
    /// What is sent, in order.
    pub items: Vec<Item>,
}

impl<'a> Arbitrary<'a> for RoundTrip {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let limits = Limits::default()
            .with_max_frame_size(u.int_in_range(Limits::MIN_FRAME_SIZE..=1 << 20)?)
            .with_max_batch_frames(u.int_in_range(1..=128)?)
            .with_max_batch_bytes(u.int_in_range(1..=64 << 10)?)
            .with_max_header_list_size(1 << 20)
            // Larger than any generated payload (see docs/fuzzing.md: the sender does not
            // check the peer's decompression limit).
            .with_max_decompressed_size(1 << 20);
        let compression = compression(u)?;
        let threshold = u.int_in_range(0..=2048usize)?;
        let table_size = table_size(u)?;
        let mut items = Vec::new();
        while !u.is_empty() && items.len() < 64 {
            items.push(u.arbitrary()?);
        }
        Ok(RoundTrip {
            limits,
            compression,
            threshold,
            table_size,
            items,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Header block representations (RFC 7541 §6), read independently of the codec's decoder.

/// The representation of one header-block entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rep {
    /// `1xxxxxxx`: indexed field.
    Indexed,
    /// `01xxxxxx`: literal, added to the table.
    Incremental,
    /// `0000xxxx`: literal, not added.
    NotIndexed,
    /// `0001xxxx`: literal, never indexed.
    NeverIndexed,
    /// `001xxxxx`: dynamic table size update.
    SizeUpdate,
}

fn skip_int(b: &[u8], pos: &mut usize, prefix: u8) -> Option<u64> {
    let max = (1u64 << prefix) - 1;
    let mut v = (*b.get(*pos)? as u64) & max;
    *pos += 1;
    if v < max {
        return Some(v);
    }
    let mut shift = 0;
    loop {
        let x = *b.get(*pos)?;
        *pos += 1;
        v += ((x & 0x7f) as u64) << shift;
        if x & 0x80 == 0 || shift > 28 {
            return Some(v);
        }
        shift += 7;
    }
}

fn skip_str(b: &[u8], pos: &mut usize) -> Option<()> {
    let n = skip_int(b, pos, 7)? as usize;
    *pos = pos.checked_add(n).filter(|&e| e <= b.len())?;
    Some(())
}

/// The representations in a well-formed block (`None` if it is not well-formed).
pub fn representations(b: &[u8]) -> Option<Vec<Rep>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < b.len() {
        let x = b[pos];
        let (rep, prefix) = if x & 0x80 != 0 {
            (Rep::Indexed, 7)
        } else if x & 0xc0 == 0x40 {
            (Rep::Incremental, 6)
        } else if x & 0xe0 == 0x20 {
            (Rep::SizeUpdate, 5)
        } else if x & 0xf0 == 0x10 {
            (Rep::NeverIndexed, 4)
        } else {
            (Rep::NotIndexed, 4)
        };
        let idx = skip_int(b, &mut pos, prefix)?;
        if matches!(rep, Rep::Incremental | Rep::NotIndexed | Rep::NeverIndexed) {
            if idx == 0 {
                skip_str(b, &mut pos)?;
            }
            skip_str(b, &mut pos)?;
        }
        out.push(rep);
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// netron-shm: a ring driven by honest calls and by a peer that writes whatever it likes, and
// segment headers written by a peer.

/// Tag of a data record in a ring (`"DATA"` little-endian; docs/shm.md, "Records").
pub const SHM_TAG_DATA: u32 = u32::from_le_bytes(*b"DATA");
/// Tag of a padding record in a ring (`"PADD"` little-endian).
pub const SHM_TAG_PAD: u32 = u32::from_le_bytes(*b"PADD");

/// One step of the `shm_ring` target.
#[derive(Debug, Clone, Arbitrary)]
pub enum ShmOp {
    /// The producer sends a record of `len % (capacity + 64)` bytes, then publishes if asked.
    Send {
        /// Payload length before reduction.
        len: u16,
        /// Publish right after.
        publish: bool,
    },
    /// The producer lends `min % (capacity + 64)` bytes, writes `len` of them (at most what
    /// was lent), then commits (`part`: with `commit_lent_part`, then gives the rest back) or
    /// cancels.
    Lend {
        /// Least bytes to lend, before reduction.
        min: u16,
        /// Bytes to write, before reduction.
        len: u16,
        /// Commit with `commit_lent_part`.
        part: bool,
        /// Cancel instead of committing.
        cancel: bool,
    },
    /// The producer publishes what it committed.
    Publish,
    /// The consumer reads up to `n % 8` records.
    Read {
        /// How many reads.
        n: u8,
    },
    /// The consumer releases what it read.
    Release,
    /// The consumer asks whether a record is ready.
    Ready,
    /// The peer forges a record header at byte `pos` of the data area.
    Header {
        /// Byte offset (wrapped into the ring, rounded down to 8).
        pos: u16,
        /// Tag to forge.
        tag: ShmTag,
        /// Length field to forge.
        len: ShmLen,
    },
    /// The peer forges the header the consumer polls next (at its read position).
    NextHeader {
        /// Tag to forge.
        tag: ShmTag,
        /// Length field to forge.
        len: ShmLen,
    },
    /// The peer stores any word at byte `pos` of the data area.
    Word {
        /// Byte offset (wrapped, rounded down to 8).
        pos: u16,
        /// The word.
        word: u64,
    },
    /// The peer writes bytes into the data area from `pos` on.
    Bytes {
        /// Byte offset (wrapped).
        pos: u16,
        /// The bytes (at most 512 are written).
        bytes: Vec<u8>,
    },
    /// The peer moves `head` by `delta` 8-byte words from where it is.
    HeadBy {
        /// Signed move in words.
        delta: i16,
    },
    /// The peer stores any value to `head`.
    Head {
        /// The value.
        value: u64,
    },
    /// The peer stores any value to the consumer's sleep word.
    Sleeping {
        /// The value.
        value: u64,
    },
}

/// The tag a forged header carries.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum ShmTag {
    /// A data record's tag.
    Data,
    /// A padding record's tag.
    Pad,
    /// A skip record's tag.
    Skip,
    /// Anything else.
    Other(u32),
}

impl ShmTag {
    /// The 32-bit tag value.
    pub fn value(self) -> u32 {
        match self {
            Self::Data => SHM_TAG_DATA,
            Self::Pad => SHM_TAG_PAD,
            Self::Skip => u32::from_le_bytes(*b"SKIP"),
            Self::Other(v) => v,
        }
    }
}

/// The length field of a forged header: mostly near the ring's size, where the bounds checks
/// decide (a random `u32` would almost never land there), sometimes anything.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum ShmLen {
    /// `v % (2 * capacity)`.
    Near(u16),
    /// Any value.
    Raw(u32),
}

impl ShmLen {
    /// The length field for a ring of `capacity` bytes.
    pub fn value(self, capacity: usize) -> u32 {
        match self {
            Self::Near(v) => (v as usize % (2 * capacity)) as u32,
            Self::Raw(v) => v,
        }
    }
}

/// Input of the `shm_ring` target: a ring capacity and the steps to run on it.
#[derive(Debug, Clone, Arbitrary)]
pub struct ShmRing {
    /// Capacity code: the ring holds `64 << (cap_log % 11)` bytes (64 B to 64 KiB).
    pub cap_log: u8,
    /// The steps.
    pub ops: Vec<ShmOp>,
}

impl ShmRing {
    /// The ring capacity in bytes.
    pub fn capacity(&self) -> usize {
        64 << (self.cap_log % 11)
    }

    /// `true` if no step tampers with the ring.
    pub fn honest(&self) -> bool {
        self.ops.iter().all(|op| {
            matches!(
                op,
                ShmOp::Send { .. }
                    | ShmOp::Publish
                    | ShmOp::Read { .. }
                    | ShmOp::Release
                    | ShmOp::Ready
            )
        })
    }
}

/// Input of the `shm_layout` target: a valid segment header for two capacities, then words
/// overwritten, and a mapped length that may differ from the one the header states.
#[derive(Debug, Clone, Arbitrary)]
pub struct ShmLayoutInput {
    /// Client-to-server capacity code (`64 << (code % 25)`, up to 1 GiB).
    pub to_server: u8,
    /// Server-to-client capacity code.
    pub to_client: u8,
    /// `(word index % 16, value)` pairs written over the header words.
    pub writes: Vec<(u8, u64)>,
    /// Added to the header's length to make the mapped length (wrapping).
    pub len_delta: i32,
}

// ---------------------------------------------------------------------------------------------
// Header compression across QUIC streams (`qpack_roundtrip`).

/// One step of a `qpack_roundtrip` run.
#[derive(Debug, Clone, Arbitrary)]
pub enum QpackStep {
    /// Encode this header list on a new QUIC stream (block and insertions go in flight).
    Encode(Vec<FieldSpec>),
    /// Deliver up to this many bytes of the encoder stream to the decoder.
    EncoderBytes(u8),
    /// Deliver the pending block with this index (modulo the number pending).
    Block(u8),
    /// Deliver the decoder stream to the encoder.
    Feedback,
    /// The receiver abandons the pending or blocked block with this index (a reset stream).
    Cancel(u8),
    /// Encode this header list for a datagram and decode it at once.
    Datagram(Vec<FieldSpec>),
}

/// A `qpack_roundtrip` run: a table capacity (`capacity * 16` bytes) and steps.
#[derive(Debug, Clone, Arbitrary)]
pub struct QpackRun {
    /// Table capacity in units of 16 bytes.
    pub capacity: u8,
    /// What happens, in order.
    pub steps: Vec<QpackStep>,
}

/// Bytes of settings in front of a `qpack_decode` input: capacity code (capacity =
/// `code * 32`), then two split points (fractions of 255) cutting the rest into the encoder
/// stream, a header block and the decoder stream.
pub const QPACK_PREFIX: usize = 3;

/// Splits a `qpack_decode` input: (capacity, encoder stream, block, decoder stream).
pub fn qpack_parts(p: [u8; QPACK_PREFIX], rest: &[u8]) -> (u32, &[u8], &[u8], &[u8]) {
    let a = rest.len() * p[1] as usize / 255;
    let b = a + (rest.len() - a) * p[2] as usize / 255;
    (p[0] as u32 * 32, &rest[..a], &rest[a..b], &rest[b..])
}

/// Bytes of settings in front of a `shm_records` input: record limit (`16 + byte`) and frame
/// size limit (`16 + 64 * byte`); then records, each a length byte and that many bytes.
pub const RECORDS_PREFIX: usize = 2;
