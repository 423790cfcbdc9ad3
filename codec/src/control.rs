//! The FlatBuffers control bodies: building them, and reading them only after verification.
//!
//! Readers return the generated zero-copy table views (see [`crate::wire`]) after running the
//! FlatBuffers verifier with [`verifier_options`]; a body that fails verification is a
//! [`DecodeError::InvalidBody`]. Writers take plain structs and use a reusable
//! [`ControlEncoder`], so sending control frames allocates nothing in steady state.

use flatbuffers::{FlatBufferBuilder, Follow, Verifiable, VerifierOptions};

use crate::generated as fb;
use crate::{BatchEncoder, Compression, DecodeError, EncodeError, Frame, FrameKind, StatusCode};

/// Verifier limits for control bodies: depth 8, 4096 tables, 1 MiB apparent size.
pub fn verifier_options() -> VerifierOptions {
    VerifierOptions {
        max_depth: 8,
        max_tables: 4096,
        max_apparent_size: 1 << 20,
        ..VerifierOptions::default()
    }
}

fn verify<'a, T>(
    kind: FrameKind,
    table: &'static str,
    buf: &'a [u8],
) -> Result<T::Inner, DecodeError>
where
    T: Follow<'a> + Verifiable + 'a,
{
    flatbuffers::root_with_opts::<T>(&verifier_options(), buf).map_err(|e| {
        DecodeError::InvalidBody {
            kind,
            table,
            reason: e.to_string(),
        }
    })
}

fn expect(frame: &Frame<'_>, kind: FrameKind) -> Result<(), DecodeError> {
    if frame.kind() == kind {
        Ok(())
    } else {
        Err(DecodeError::InvalidBody {
            kind: frame.kind(),
            table: kind.name(),
            reason: format!("expected a {} frame", kind.name()),
        })
    }
}

/// Reads the verified `Hello` body of a Hello frame.
pub fn read_hello<'a>(frame: &Frame<'a>) -> Result<fb::Hello<'a>, DecodeError> {
    expect(frame, FrameKind::Hello)?;
    verify::<fb::Hello<'a>>(frame.kind(), "Hello", frame.payload())
}

/// Reads the verified `Welcome` body of a Welcome frame.
pub fn read_welcome<'a>(frame: &Frame<'a>) -> Result<fb::Welcome<'a>, DecodeError> {
    expect(frame, FrameKind::Welcome)?;
    verify::<fb::Welcome<'a>>(frame.kind(), "Welcome", frame.payload())
}

/// Reads the verified `Reject` body of a Reject frame.
pub fn read_reject<'a>(frame: &Frame<'a>) -> Result<fb::Reject<'a>, DecodeError> {
    expect(frame, FrameKind::Reject)?;
    verify::<fb::Reject<'a>>(frame.kind(), "Reject", frame.payload())
}

/// Reads the verified `ErrorBody` of an Error frame.
pub fn read_error<'a>(frame: &Frame<'a>) -> Result<fb::ErrorBody<'a>, DecodeError> {
    expect(frame, FrameKind::Error)?;
    verify::<fb::ErrorBody<'a>>(frame.kind(), "ErrorBody", frame.payload())
}

/// Reads the optional `ErrorBody` of a StreamEnd frame (`None`: the stream ended OK).
pub fn read_stream_end<'a>(frame: &Frame<'a>) -> Result<Option<fb::ErrorBody<'a>>, DecodeError> {
    expect(frame, FrameKind::StreamEnd)?;
    if frame.payload().is_empty() {
        return Ok(None);
    }
    verify::<fb::ErrorBody<'a>>(frame.kind(), "ErrorBody", frame.payload()).map(Some)
}

/// Reads the verified `GoAway` body of a GoAway frame.
pub fn read_go_away<'a>(frame: &Frame<'a>) -> Result<fb::GoAway<'a>, DecodeError> {
    expect(frame, FrameKind::GoAway)?;
    verify::<fb::GoAway<'a>>(frame.kind(), "GoAway", frame.payload())
}

/// Reads the verified `Subscribe` body of a Subscribe frame.
pub fn read_subscribe<'a>(frame: &Frame<'a>) -> Result<fb::Subscribe<'a>, DecodeError> {
    expect(frame, FrameKind::Subscribe)?;
    verify::<fb::Subscribe<'a>>(frame.kind(), "Subscribe", frame.payload())
}

/// Verifies the control body of any frame, whatever its kind: the same check, with the same
/// error ([`DecodeError::InvalidBody`], status Internal), wherever a frame arrives
/// (docs/protocol.md §12.1). Kinds with an opaque or no body pass; a receiver calls this
/// before acting on a frame, so a malformed body is reported as such even for a kind the
/// receiver then refuses (e.g. a Subscribe to a peer that serves no events).
///
/// # Errors
/// [`DecodeError::InvalidBody`] if a body that must be a FlatBuffers table fails the verifier.
pub fn verify_body(frame: &Frame<'_>) -> Result<(), DecodeError> {
    match frame.kind() {
        FrameKind::Hello => read_hello(frame).map(|_| ()),
        FrameKind::Welcome => read_welcome(frame).map(|_| ()),
        FrameKind::Reject => read_reject(frame).map(|_| ()),
        FrameKind::Error => read_error(frame).map(|_| ()),
        FrameKind::GoAway => read_go_away(frame).map(|_| ()),
        FrameKind::Subscribe => read_subscribe(frame).map(|_| ()),
        FrameKind::StreamEnd => read_stream_end(frame).map(|_| ()),
        _ => Ok(()),
    }
}

/// Reads a verified `ServiceList` (the reply payload of `$sys.list`).
pub fn read_service_list(payload: &[u8]) -> Result<fb::ServiceList<'_>, DecodeError> {
    verify::<fb::ServiceList<'_>>(FrameKind::Response, "ServiceList", payload)
}

/// The fields of a Hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloFields<'a> {
    /// Feature bits offered.
    pub features: u64,
    /// Compression algorithms the sender can decode, preferred first.
    pub compression: &'a [Compression],
    /// Largest frame accepted.
    pub max_frame_size: u32,
    /// Dynamic-table size the sender's decoder keeps.
    pub header_table_size: u32,
    /// Most frames per batch accepted.
    pub max_batch_frames: u32,
    /// Most bytes per batch accepted.
    pub max_batch_bytes: u32,
    /// Largest decompressed payload accepted.
    pub max_decompressed_size: u32,
    /// Authentication token, if any.
    pub auth_token: Option<&'a [u8]>,
    /// Client name, if any.
    pub client_name: Option<&'a str>,
}

/// The fields of a Welcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WelcomeFields<'a> {
    /// Minor version the server speaks.
    pub version_minor: u8,
    /// Feature bits in force.
    pub features: u64,
    /// Compression in force.
    pub compression: Compression,
    /// Compression threshold (bytes).
    pub compression_threshold: u32,
    /// Negotiated max frame size.
    pub max_frame_size: u32,
    /// Negotiated dynamic-table size.
    pub header_table_size: u32,
    /// Negotiated frames per batch.
    pub max_batch_frames: u32,
    /// Negotiated bytes per batch.
    pub max_batch_bytes: u32,
    /// Negotiated decompressed-size limit.
    pub max_decompressed_size: u32,
    /// Concurrent calls allowed.
    pub max_concurrent_calls: u32,
    /// Initial stream window (bytes).
    pub initial_stream_window: u32,
    /// Keepalive interval (ms, 0 = none).
    pub keepalive_interval_ms: u32,
    /// Server id.
    pub server_id: &'a str,
}

/// The fields of a Subscribe (docs/protocol.md §24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeFields<'a> {
    /// Subject pattern (`orders.*`, `orders.>`; see [`crate::subject`]).
    pub pattern: &'a str,
    /// Requested queue depth in events (0 = the publisher's default).
    pub queue_depth: u32,
    /// QUIC with DATAGRAM_EVENTS in force: events may come in datagrams (loss-tolerant).
    pub datagrams: bool,
    /// When the queue is full (§24.4): 0 = the publisher's default, 1 = drop the oldest
    /// queued event, 2 = end the subscription with ResourceExhausted.
    pub on_full: u8,
    /// Queue group (§24.6; empty = none): one subscription of the group gets each event.
    pub queue_group: &'a str,
}

/// Builds control bodies into a reusable FlatBuffers builder and queues them as frames.
#[derive(Default)]
pub struct ControlEncoder {
    fbb: FlatBufferBuilder<'static>,
}

impl core::fmt::Debug for ControlEncoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ControlEncoder").finish_non_exhaustive()
    }
}

impl ControlEncoder {
    /// A new encoder (its builder grows once and is reused).
    pub fn new() -> Self {
        Self {
            fbb: FlatBufferBuilder::with_capacity(256),
        }
    }

    fn queue(
        &mut self,
        batch: &mut BatchEncoder,
        kind: FrameKind,
        id: u32,
        arg: u32,
    ) -> Result<usize, EncodeError> {
        let r = batch
            .frame(kind, id)?
            .arg(arg)
            .payload(self.fbb.finished_data())
            .finish();
        self.fbb.reset();
        r
    }

    /// The bytes of a Hello body (for tests and for transports that send it unframed).
    pub fn hello_body(&mut self, h: &HelloFields<'_>) -> &[u8] {
        self.fbb.reset();
        let comp: Vec<fb::Compression> = h
            .compression
            .iter()
            .map(|c| fb::Compression(*c as u8))
            .collect();
        let compression = Some(self.fbb.create_vector(&comp));
        let auth_token = h.auth_token.map(|t| self.fbb.create_vector(t));
        let client_name = h.client_name.map(|n| self.fbb.create_string(n));
        let t = fb::Hello::create(
            &mut self.fbb,
            &fb::HelloArgs {
                features: h.features,
                compression,
                max_frame_size: h.max_frame_size,
                header_table_size: h.header_table_size,
                max_batch_frames: h.max_batch_frames,
                max_batch_bytes: h.max_batch_bytes,
                max_decompressed_size: h.max_decompressed_size,
                auth_token,
                client_name,
            },
        );
        self.fbb.finish_minimal(t);
        self.fbb.finished_data()
    }

    /// Queues a Hello frame.
    pub fn hello(
        &mut self,
        batch: &mut BatchEncoder,
        h: &HelloFields<'_>,
    ) -> Result<usize, EncodeError> {
        self.hello_body(h);
        self.queue(batch, FrameKind::Hello, 0, 0)
    }

    /// Queues a Welcome frame.
    pub fn welcome(
        &mut self,
        batch: &mut BatchEncoder,
        w: &WelcomeFields<'_>,
    ) -> Result<usize, EncodeError> {
        self.fbb.reset();
        let server_id = Some(self.fbb.create_string(w.server_id));
        let t = fb::Welcome::create(
            &mut self.fbb,
            &fb::WelcomeArgs {
                version_minor: w.version_minor,
                features: w.features,
                compression: fb::Compression(w.compression as u8),
                compression_threshold: w.compression_threshold,
                max_frame_size: w.max_frame_size,
                header_table_size: w.header_table_size,
                max_batch_frames: w.max_batch_frames,
                max_batch_bytes: w.max_batch_bytes,
                max_decompressed_size: w.max_decompressed_size,
                max_concurrent_calls: w.max_concurrent_calls,
                initial_stream_window: w.initial_stream_window,
                keepalive_interval_ms: w.keepalive_interval_ms,
                server_id,
            },
        );
        self.fbb.finish_minimal(t);
        self.queue(batch, FrameKind::Welcome, 0, 0)
    }

    /// Queues a Reject frame.
    pub fn reject(
        &mut self,
        batch: &mut BatchEncoder,
        status: StatusCode,
        reason: &str,
        retry_after_ms: u32,
    ) -> Result<usize, EncodeError> {
        self.fbb.reset();
        let reason = Some(self.fbb.create_string(reason));
        let t = fb::Reject::create(
            &mut self.fbb,
            &fb::RejectArgs {
                status: fb::StatusCode(status.as_u16()),
                reason,
                retry_after_ms,
            },
        );
        self.fbb.finish_minimal(t);
        self.queue(batch, FrameKind::Reject, 0, 0)
    }

    fn error_body(&mut self, status: StatusCode, message: &str, details: &[u8]) {
        self.fbb.reset();
        let message = Some(self.fbb.create_string(message));
        let details = (!details.is_empty()).then(|| self.fbb.create_vector(details));
        let t = fb::ErrorBody::create(
            &mut self.fbb,
            &fb::ErrorBodyArgs {
                status: fb::StatusCode(status.as_u16()),
                message,
                details,
            },
        );
        self.fbb.finish_minimal(t);
    }

    /// Queues an Error frame for call `id` (0 = a connection error).
    pub fn error(
        &mut self,
        batch: &mut BatchEncoder,
        id: u32,
        status: StatusCode,
        message: &str,
        details: &[u8],
    ) -> Result<usize, EncodeError> {
        self.error_body(status, message, details);
        self.queue(batch, FrameKind::Error, id, 0)
    }

    /// Queues a StreamEnd frame for stream `id` ending with an error.
    pub fn stream_end_error(
        &mut self,
        batch: &mut BatchEncoder,
        id: u32,
        status: StatusCode,
        message: &str,
    ) -> Result<usize, EncodeError> {
        self.error_body(status, message, &[]);
        self.queue(batch, FrameKind::StreamEnd, id, 0)
    }

    /// Queues a GoAway frame.
    pub fn go_away(
        &mut self,
        batch: &mut BatchEncoder,
        last_id: u32,
        status: StatusCode,
        reason: &str,
    ) -> Result<usize, EncodeError> {
        self.fbb.reset();
        let reason = Some(self.fbb.create_string(reason));
        let t = fb::GoAway::create(
            &mut self.fbb,
            &fb::GoAwayArgs {
                last_id,
                status: fb::StatusCode(status.as_u16()),
                reason,
            },
        );
        self.fbb.finish_minimal(t);
        self.queue(batch, FrameKind::GoAway, last_id, 0)
    }

    /// Queues a Subscribe frame for subscription `id` (reliable delivery).
    pub fn subscribe(
        &mut self,
        batch: &mut BatchEncoder,
        id: u32,
        pattern: &str,
        queue_depth: u32,
    ) -> Result<usize, EncodeError> {
        self.subscribe_with(
            batch,
            id,
            &SubscribeFields {
                pattern,
                queue_depth,
                datagrams: false,
                on_full: 0,
                queue_group: "",
            },
        )
    }

    /// Queues a Subscribe frame for subscription `id` with every field of §24.
    ///
    /// # Errors
    ///
    /// [`EncodeError::BatchFull`] (flush and retry) or [`EncodeError::FrameTooLarge`] (a
    /// pattern far longer than any valid one, §24.2).
    pub fn subscribe_with(
        &mut self,
        batch: &mut BatchEncoder,
        id: u32,
        s: &SubscribeFields<'_>,
    ) -> Result<usize, EncodeError> {
        self.fbb.reset();
        let pattern = Some(self.fbb.create_string(s.pattern));
        let queue_group =
            (!s.queue_group.is_empty()).then(|| self.fbb.create_string(s.queue_group));
        let t = fb::Subscribe::create(
            &mut self.fbb,
            &fb::SubscribeArgs {
                pattern,
                queue_depth: s.queue_depth,
                datagrams: s.datagrams,
                on_full: s.on_full,
                queue_group,
            },
        );
        self.fbb.finish_minimal(t);
        self.queue(batch, FrameKind::Subscribe, id, 0)
    }
}

/// Converts a wire status enum value to a [`StatusCode`].
pub fn status(s: fb::StatusCode) -> StatusCode {
    StatusCode::from_u16(s.0)
}
