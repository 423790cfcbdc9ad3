//! The handshake as sans-IO state machines: bytes in, bytes out, settings when done.
//!
//! The client writes the 8-byte [`PREFACE`] and a Hello frame; the server answers with a
//! Welcome (the settings in force) or a Reject and closes. Neither side sends anything else
//! before the handshake completes. See docs/protocol.md, "Handshake".
//!
//! ```
//! use netron_codec::handshake::*;
//!
//! let mut client = ClientHandshake::new(ClientConfig::default());
//! let mut server = ServerHandshake::new(ServerConfig::default());
//! let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
//! client.start(&mut to_server).unwrap();
//! let offer = match server.handle(&to_server).unwrap() {
//!     ServerProgress::Offer { offer, .. } => offer,
//!     ServerProgress::NeedMore { .. } => unreachable!(),
//! };
//! let server_settings = server.accept(&offer, &mut to_client);
//! let ClientProgress::Done { settings, .. } = client.handle(&to_client).unwrap() else { unreachable!() };
//! assert_eq!(settings, server_settings);
//! ```

use crate::control::{self, ControlEncoder, HelloFields, WelcomeFields};
use crate::{
    BatchEncoder, Compression, DecodeError, Frame, FrameKind, HandshakeError, Limits, StatusCode,
};

/// Protocol major version: frames and preface layout. A peer with another major is rejected.
pub const VERSION_MAJOR: u8 = 1;
/// Protocol minor version: additions that older peers can ignore.
pub const VERSION_MINOR: u8 = 0;
/// The client's first 8 bytes: `"NTRN"`, CR LF, major, minor.
pub const PREFACE: [u8; 8] = [
    b'N',
    b'T',
    b'R',
    b'N',
    b'\r',
    b'\n',
    VERSION_MAJOR,
    VERSION_MINOR,
];
/// The QUIC ALPN protocol id of Netron major version 1 (docs/protocol.md §27.1).
pub const ALPN: &[u8] = b"netron/1";
/// Largest Hello, Welcome or Reject frame (bytes) accepted before settings are negotiated.
pub const HANDSHAKE_MAX_FRAME: u32 = 64 << 10;

fn handshake_limits() -> Limits {
    Limits::default().with_max_frame_size(HANDSHAKE_MAX_FRAME)
}

/// What a client offers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Feature bits: the protocol features the client understands and what it serves (see
    /// [`crate::features`]; unknown bits are ignored by servers).
    pub features: u64,
    /// Compression algorithms the client can decode, preferred first.
    pub compression: Vec<Compression>,
    /// The client's receive limits (its offer; the server may lower them).
    pub limits: Limits,
    /// Dynamic-table size the client's decoder keeps (bytes).
    pub header_table_size: u32,
    /// Authentication token sent in the Hello.
    pub auth_token: Option<Vec<u8>>,
    /// Name for the server's logs.
    pub client_name: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            features: 0,
            compression: Compression::supported().to_vec(),
            limits: Limits::default(),
            header_table_size: 4096,
            auth_token: None,
            client_name: None,
        }
    }
}

impl ClientConfig {
    /// Sets the feature bits: protocol features the client understands and what it serves
    /// (see [`crate::features`]).
    pub fn with_features(mut self, features: u64) -> Self {
        self.features = features;
        self
    }
    /// Sets the authentication token.
    pub fn with_auth_token(mut self, token: impl Into<Vec<u8>>) -> Self {
        self.auth_token = Some(token.into());
        self
    }
    /// Sets the client name.
    pub fn with_client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }
    /// Sets the compression algorithms offered (empty: none).
    pub fn with_compression(mut self, algos: &[Compression]) -> Self {
        self.compression = algos.to_vec();
        self
    }
    /// Sets the limits offered.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Sets the dynamic-table size offered. Cost: up to twice this many bytes per direction
    /// and connection once the table fills.
    pub fn with_header_table_size(mut self, size: u32) -> Self {
        self.header_table_size = size;
        self
    }
}

/// What a server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Feature bits: the protocol features the server understands and what it serves (see
    /// [`crate::features`]).
    pub features: u64,
    /// Compression algorithms the server can use, in the server's preference order (the
    /// client's order wins among those both support).
    pub compression: Vec<Compression>,
    /// Payloads below this size are never compressed.
    pub compression_threshold: u32,
    /// The server's limits.
    pub limits: Limits,
    /// Largest dynamic table the server keeps (bytes).
    pub header_table_size: u32,
    /// Calls and streams a client may have open at once.
    pub max_concurrent_calls: u32,
    /// Initial per-stream window (bytes).
    pub initial_stream_window: u32,
    /// Keepalive interval (ms, 0 = none).
    pub keepalive_interval_ms: u32,
    /// Server id sent in the Welcome.
    pub server_id: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            features: 0,
            compression: Compression::supported().to_vec(),
            compression_threshold: 1024,
            limits: Limits::default(),
            header_table_size: 4096,
            max_concurrent_calls: 1024,
            initial_stream_window: 256 << 10,
            keepalive_interval_ms: 15_000,
            server_id: String::from("netron"),
        }
    }
}

impl ServerConfig {
    /// Sets the feature bits: protocol features the server understands and what it serves
    /// (see [`crate::features`]).
    pub fn with_features(mut self, features: u64) -> Self {
        self.features = features;
        self
    }
    /// Sets the largest dynamic table the server keeps (bytes; 0: none). The connection
    /// uses the smaller of this and the client's offer (docs/protocol.md §13.2). Cost: up to
    /// twice this many bytes per direction and connection once the table fills.
    pub fn with_header_table_size(mut self, size: u32) -> Self {
        self.header_table_size = size;
        self
    }
}

/// The settings in force after the handshake (the Welcome's contents).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Minor version in use.
    pub version_minor: u8,
    /// Protocol features in force: the protocol bits (0–31) both sides set
    /// ([`crate::features::in_force`]).
    pub features: u64,
    /// What the server serves: the offer bits (32–63) of its Welcome
    /// ([`crate::features::offers`]). What the client serves is in [`ClientOffer::features`].
    pub server_offers: u64,
    /// Payload compression in use.
    pub compression: Compression,
    /// Compression threshold (bytes).
    pub compression_threshold: u32,
    /// Negotiated limits (both directions).
    pub limits: Limits,
    /// Negotiated dynamic-table size (both directions).
    pub header_table_size: u32,
    /// Concurrent calls allowed.
    pub max_concurrent_calls: u32,
    /// Initial stream window.
    pub initial_stream_window: u32,
    /// Keepalive interval in ms (0 = none).
    pub keepalive_interval_ms: u32,
    /// The server's id.
    pub server_id: String,
}

/// The client's offer, as the server received it (owned; the receive buffer can be reused).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientOffer {
    /// Feature bits of the Hello: protocol features offered and, in bits 32–63, what the
    /// client serves ([`crate::features::offers`]).
    pub features: u64,
    /// Compression algorithms offered (unknown values dropped).
    pub compression: Vec<Compression>,
    /// Limits offered.
    pub limits: Limits,
    /// Dynamic-table size offered.
    pub header_table_size: u32,
    /// Authentication token, if any.
    pub auth_token: Option<Vec<u8>>,
    /// Client name, if any.
    pub client_name: Option<String>,
}

fn truncate(s: &str, max: usize) -> &str {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

fn parse_one(input: &[u8]) -> Result<Option<Frame<'_>>, DecodeError> {
    match Frame::parse(input, &handshake_limits()) {
        Ok(f) => Ok(Some(f)),
        Err(DecodeError::Incomplete { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn needed(input: &[u8]) -> usize {
    match Frame::parse(input, &handshake_limits()) {
        Err(DecodeError::Incomplete { needed }) => needed,
        _ => 0,
    }
}

/// Client side progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientProgress {
    /// Call again with more bytes (at least `needed` more).
    NeedMore {
        /// Bytes still missing at least.
        needed: usize,
    },
    /// The server welcomed us. `consumed` bytes of the input belonged to the handshake; the
    /// rest are ordinary frames.
    Done {
        /// The settings in force.
        settings: Settings,
        /// Handshake bytes consumed from the input.
        consumed: usize,
    },
}

/// The client's half of the handshake.
#[derive(Debug)]
pub struct ClientHandshake {
    config: ClientConfig,
    started: bool,
}

impl ClientHandshake {
    /// A client handshake with `config`.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            started: false,
        }
    }

    /// Appends the preface and the Hello frame to `out`. Fails only if the Hello would exceed
    /// [`HANDSHAKE_MAX_FRAME`] (an auth token or client name far too long).
    pub fn start(&mut self, out: &mut Vec<u8>) -> Result<(), HandshakeError> {
        out.extend_from_slice(&PREFACE);
        let c = &self.config;
        let mut batch = BatchEncoder::new(handshake_limits());
        let fields = HelloFields {
            features: c.features,
            compression: &c.compression,
            max_frame_size: c.limits.max_frame_size,
            header_table_size: c.header_table_size,
            max_batch_frames: c.limits.max_batch_frames,
            max_batch_bytes: c.limits.max_batch_bytes,
            max_decompressed_size: c.limits.max_decompressed_size,
            auth_token: c.auth_token.as_deref(),
            client_name: c.client_name.as_deref(),
        };
        ControlEncoder::new()
            .hello(&mut batch, &fields)
            .map_err(|_| {
                HandshakeError::InvalidSettings(
                    "Hello exceeds 64 KiB: auth token or client name too long",
                )
            })?;
        out.extend_from_slice(batch.as_slice());
        self.started = true;
        Ok(())
    }

    /// Feeds the bytes received so far (from the start of the connection).
    pub fn handle(&mut self, input: &[u8]) -> Result<ClientProgress, HandshakeError> {
        let frame = match parse_one(input) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                return Ok(ClientProgress::NeedMore {
                    needed: needed(input),
                });
            }
            // The first bytes are not even a frame header (an HTTP server answers "HTTP/1.1",
            // which reads as a 1.3 GB frame): the peer does not speak Netron.
            Err(_) => {
                let mut got = [0u8; 6];
                let n = input.len().min(6);
                got[..n].copy_from_slice(&input[..n]);
                return Err(HandshakeError::BadPreface(got));
            }
        };
        match frame.kind() {
            FrameKind::Welcome => {
                let w = control::read_welcome(&frame)?;
                let settings = self.check_welcome(&w)?;
                Ok(ClientProgress::Done {
                    settings,
                    consumed: frame.len(),
                })
            }
            FrameKind::Reject => {
                let r = control::read_reject(&frame)?;
                Err(HandshakeError::Rejected {
                    status: control::status(r.status()),
                    reason: r.reason().unwrap_or("").to_owned(),
                    retry_after_ms: r.retry_after_ms(),
                })
            }
            other => Err(HandshakeError::UnexpectedFrame {
                expected: "Welcome or Reject",
                got: other,
            }),
        }
    }

    fn check_welcome(&self, w: &crate::wire::Welcome<'_>) -> Result<Settings, HandshakeError> {
        let c = &self.config;
        let compression = Compression::from_u8(w.compression().0)
            .ok_or(HandshakeError::InvalidSettings("unknown compression"))?;
        if compression != Compression::None && !c.compression.contains(&compression) {
            return Err(HandshakeError::InvalidSettings(
                "server chose a compression algorithm the client did not offer",
            ));
        }
        let mfs = w.max_frame_size();
        if !(Limits::MIN_FRAME_SIZE..=c.limits.max_frame_size).contains(&mfs) {
            return Err(HandshakeError::InvalidSettings(
                "max_frame_size out of range",
            ));
        }
        if w.header_table_size() > c.header_table_size
            || w.max_batch_frames() < Limits::MIN_BATCH_FRAMES.min(c.limits.max_batch_frames)
            || w.max_batch_bytes() < Limits::MIN_BATCH_BYTES.min(c.limits.max_batch_bytes)
            || w.max_batch_frames() > c.limits.max_batch_frames
            || w.max_batch_bytes() > c.limits.max_batch_bytes
            || w.max_decompressed_size() > c.limits.max_decompressed_size
        {
            return Err(HandshakeError::InvalidSettings(
                "server raised a limit above the client's offer",
            ));
        }
        Ok(Settings {
            version_minor: w.version_minor(),
            features: crate::features::in_force(w.features(), c.features),
            server_offers: crate::features::offers(w.features()),
            compression,
            compression_threshold: w.compression_threshold(),
            limits: Limits {
                max_frame_size: mfs,
                max_batch_frames: w.max_batch_frames(),
                max_batch_bytes: w.max_batch_bytes(),
                max_header_list_size: c.limits.max_header_list_size,
                max_decompressed_size: w.max_decompressed_size(),
            },
            header_table_size: w.header_table_size(),
            max_concurrent_calls: w.max_concurrent_calls(),
            initial_stream_window: w.initial_stream_window(),
            keepalive_interval_ms: w.keepalive_interval_ms(),
            server_id: w.server_id().unwrap_or("").to_owned(),
        })
    }
}

/// Server side progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerProgress {
    /// Call again with more bytes (at least `needed` more).
    NeedMore {
        /// Bytes still missing at least.
        needed: usize,
    },
    /// The client's Hello arrived: decide with [`ServerHandshake::accept`] or
    /// [`ServerHandshake::reject`] (e.g. after checking the token).
    Offer {
        /// What the client offered.
        offer: ClientOffer,
        /// Bytes consumed (preface + Hello); the client sends nothing else before our answer.
        consumed: usize,
    },
}

/// The server's half of the handshake.
#[derive(Debug)]
pub struct ServerHandshake {
    config: ServerConfig,
    control: ControlEncoder,
}

impl ServerHandshake {
    /// A server handshake with `config`.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            control: ControlEncoder::new(),
        }
    }

    /// Feeds the bytes received so far (from the start of the connection). A bad preface is an
    /// error with no reply (the peer does not speak Netron); an incompatible major version
    /// is an error after a Reject has been appended to `out` for the caller to send.
    pub fn handle_with_reply(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<ServerProgress, HandshakeError> {
        let n = input.len().min(PREFACE.len());
        let magic_len = n.min(6);
        if input[..magic_len] != PREFACE[..magic_len] {
            let mut got = [0u8; 6];
            got[..magic_len].copy_from_slice(&input[..magic_len]);
            return Err(HandshakeError::BadPreface(got));
        }
        if n < PREFACE.len() {
            return Ok(ServerProgress::NeedMore {
                needed: PREFACE.len() - n,
            });
        }
        if input[6] != VERSION_MAJOR {
            self.reject(
                StatusCode::FailedPrecondition,
                "unsupported protocol major version; this server speaks Netron/1",
                0,
                out,
            );
            return Err(HandshakeError::IncompatibleVersion {
                theirs: input[6],
                ours: VERSION_MAJOR,
            });
        }
        let rest = &input[PREFACE.len()..];
        let Some(frame) = parse_one(rest)? else {
            return Ok(ServerProgress::NeedMore {
                needed: needed(rest),
            });
        };
        if frame.kind() != FrameKind::Hello {
            return Err(HandshakeError::UnexpectedFrame {
                expected: "Hello",
                got: frame.kind(),
            });
        }
        let h = control::read_hello(&frame)?;
        let offer = ClientOffer {
            features: h.features(),
            compression: h
                .compression()
                .map(|v| v.iter().filter_map(|c| Compression::from_u8(c.0)).collect())
                .unwrap_or_default(),
            limits: Limits {
                max_frame_size: h.max_frame_size(),
                max_batch_frames: h.max_batch_frames(),
                max_batch_bytes: h.max_batch_bytes(),
                max_header_list_size: self.config.limits.max_header_list_size,
                max_decompressed_size: h.max_decompressed_size(),
            },
            header_table_size: h.header_table_size(),
            auth_token: h.auth_token().map(|t| t.bytes().to_vec()),
            client_name: h.client_name().map(str::to_owned),
        };
        Ok(ServerProgress::Offer {
            offer,
            consumed: PREFACE.len() + frame.len(),
        })
    }

    /// Like [`ServerHandshake::handle_with_reply`], dropping any Reject it would send.
    pub fn handle(&mut self, input: &[u8]) -> Result<ServerProgress, HandshakeError> {
        self.handle_with_reply(input, &mut Vec::new())
    }

    /// Computes the settings for `offer` (the minimum of both sides for every limit, the
    /// client's most preferred compression that the server supports, common feature bits).
    /// Fails with a status and reason to put in a Reject when the offer is unusable.
    pub fn negotiate(&self, offer: &ClientOffer) -> Result<Settings, (StatusCode, &'static str)> {
        let s = &self.config;
        if offer.limits.max_frame_size < Limits::MIN_FRAME_SIZE {
            return Err((
                StatusCode::InvalidArgument,
                "max_frame_size below the 1024-byte minimum",
            ));
        }
        if offer.limits.max_batch_frames < Limits::MIN_BATCH_FRAMES {
            return Err((
                StatusCode::InvalidArgument,
                "max_batch_frames below the minimum of 16",
            ));
        }
        if offer.limits.max_batch_bytes < Limits::MIN_BATCH_BYTES {
            return Err((
                StatusCode::InvalidArgument,
                "max_batch_bytes below the minimum of 16384",
            ));
        }
        let compression = offer
            .compression
            .iter()
            .copied()
            .find(|c| *c != Compression::None && c.is_available() && s.compression.contains(c))
            .filter(|_| {
                offer.limits.max_decompressed_size > 0 && s.limits.max_decompressed_size > 0
            })
            .unwrap_or(Compression::None);
        Ok(Settings {
            version_minor: VERSION_MINOR,
            features: crate::features::in_force(offer.features, s.features),
            server_offers: crate::features::offers(s.features),
            compression,
            compression_threshold: s.compression_threshold,
            limits: Limits {
                max_frame_size: offer
                    .limits
                    .max_frame_size
                    .min(s.limits.max_frame_size)
                    .min(Limits::MAX_FRAME_SIZE),
                max_batch_frames: offer.limits.max_batch_frames.min(s.limits.max_batch_frames),
                max_batch_bytes: offer.limits.max_batch_bytes.min(s.limits.max_batch_bytes),
                max_header_list_size: s.limits.max_header_list_size,
                max_decompressed_size: offer
                    .limits
                    .max_decompressed_size
                    .min(s.limits.max_decompressed_size),
            },
            header_table_size: offer.header_table_size.min(s.header_table_size),
            max_concurrent_calls: s.max_concurrent_calls,
            initial_stream_window: s.initial_stream_window,
            keepalive_interval_ms: s.keepalive_interval_ms,
            server_id: truncate(&s.server_id, 256).to_owned(),
        })
    }

    /// Accepts `offer`: appends the Welcome to `out` and returns the settings in force. If the
    /// offer is unusable (see [`ServerHandshake::negotiate`]) a Reject is appended instead and
    /// the error returned.
    pub fn try_accept(
        &mut self,
        offer: &ClientOffer,
        out: &mut Vec<u8>,
    ) -> Result<Settings, HandshakeError> {
        let settings = match self.negotiate(offer) {
            Ok(s) => s,
            Err((status, reason)) => {
                self.reject(status, reason, 0, out);
                return Err(HandshakeError::InvalidSettings(reason));
            }
        };
        let mut batch = BatchEncoder::new(handshake_limits());
        let w = WelcomeFields {
            version_minor: settings.version_minor,
            features: settings.features | settings.server_offers,
            compression: settings.compression,
            compression_threshold: settings.compression_threshold,
            max_frame_size: settings.limits.max_frame_size,
            header_table_size: settings.header_table_size,
            max_batch_frames: settings.limits.max_batch_frames,
            max_batch_bytes: settings.limits.max_batch_bytes,
            max_decompressed_size: settings.limits.max_decompressed_size,
            max_concurrent_calls: settings.max_concurrent_calls,
            initial_stream_window: settings.initial_stream_window,
            keepalive_interval_ms: settings.keepalive_interval_ms,
            server_id: &settings.server_id,
        };
        self.control
            .welcome(&mut batch, &w)
            .expect("a Welcome fits in an empty batch");
        out.extend_from_slice(batch.as_slice());
        Ok(settings)
    }

    /// Accepts `offer` (see [`ServerHandshake::try_accept`]); panics never: an unusable offer
    /// yields the server's own limits clamped to the minimum sizes.
    pub fn accept(&mut self, offer: &ClientOffer, out: &mut Vec<u8>) -> Settings {
        let mut fixed = offer.clone();
        fixed.limits.max_frame_size = fixed.limits.max_frame_size.max(Limits::MIN_FRAME_SIZE);
        fixed.limits.max_batch_frames = fixed.limits.max_batch_frames.max(Limits::MIN_BATCH_FRAMES);
        fixed.limits.max_batch_bytes = fixed.limits.max_batch_bytes.max(Limits::MIN_BATCH_BYTES);
        self.try_accept(&fixed, out)
            .unwrap_or_else(|_| unreachable!("offer was made usable"))
    }

    /// Appends a Reject with `status` and `reason` to `out`; the caller sends it and closes.
    pub fn reject(
        &mut self,
        status: StatusCode,
        reason: &str,
        retry_after_ms: u32,
        out: &mut Vec<u8>,
    ) {
        let mut batch = BatchEncoder::new(handshake_limits());
        self.control
            .reject(&mut batch, status, truncate(reason, 1024), retry_after_ms)
            .expect("a Reject with a reason of at most 1 KiB fits in an empty batch");
        out.extend_from_slice(batch.as_slice());
    }
}
