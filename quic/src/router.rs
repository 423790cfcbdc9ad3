//! The frame router: Netron frames between one sans-IO connection and many QUIC streams
//! (docs/protocol.md §27.2, docs/quic.md "In the engine").
//!
//! The engine's `Connection` speaks one ordered byte stream of frames. On QUIC each call,
//! Netron stream and subscription has its own bidirectional QUIC stream and connection-level
//! frames travel on the control stream, so the router sits between the two, sans-IO:
//!
//! - **outgoing** ([`Router::send`]): cuts a batch of whole frames at the frame headers
//!   (kind, id, length) and writes each to its QUIC stream: connection-level kinds to the
//!   control stream, an opening frame with our parity to a newly opened stream, later frames
//!   to the stream of their id. Our sending half is finished (FIN) after the frame that ends it
//!   (§27.2 rule 3). A Cancel for a call whose Request half is already finished becomes
//!   STOP_SENDING ([`CANCELLED`]); the peer's router turns that into a Cancel frame.
//! - **incoming** ([`Router::on_bytes`], [`Router::on_reset`], [`Router::on_stopped`]):
//!   reassembles frames per QUIC stream and hands whole frames (and the client's 8-byte
//!   preface) to the connection, enforcing §27.2 rule 2; a RESET_STREAM from the opener is
//!   delivered as a Cancel frame, from the callee as `Error(id, Unavailable)` (rule 4).
//!
//! Streams are reached through [`StreamIo`], so the router is tested without QUIC
//! ([`EndpointStreams`] is the implementation over [`crate::QuicEndpoint`]).

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;

use netron_codec::control::ControlEncoder;
use netron_codec::handshake::PREFACE;
use netron_codec::{
    BatchEncoder, DecodeError, Flags, FrameHeader, FrameKind, HEADER_LEN, Limits, StatusCode,
};

pub use crate::header_streams::HeaderStream;
use crate::header_streams::HeaderStreams;
use crate::{ConnId, QuicEndpoint, StreamId};

/// The application error code of a RESET_STREAM / STOP_SENDING that cancels an exchange
/// (status Cancelled).
pub const CANCELLED: u64 = StatusCode::Cancelled as u64;

/// The QUIC stream operations the router needs (one QUIC connection's streams).
pub trait StreamIo {
    /// A stream handle.
    type Stream: Copy + Eq + Hash + Debug;
    /// Opens a bidirectional stream; `None` when the peer's concurrent-stream limit is reached
    /// (call [`Router::on_streams_available`] when it rises).
    fn open_bi(&mut self) -> Option<Self::Stream>;
    /// Opens a unidirectional stream (a header stream, §27.4); `None` when the peer's limit is
    /// reached (call [`Router::on_streams_available`] when it rises).
    fn open_uni(&mut self) -> Option<Self::Stream>;
    /// Writes what flow control takes now: bytes taken (maybe 0), or `None` if the stream can
    /// no longer be written (the peer stopped it, or it is gone).
    fn write(&mut self, stream: Self::Stream, bytes: &[u8]) -> Option<usize>;
    /// Finishes the sending half (FIN).
    fn finish(&mut self, stream: Self::Stream);
    /// Asks the peer to stop sending (STOP_SENDING with `code`).
    fn stop(&mut self, stream: Self::Stream, code: u64);
    /// Abandons the sending half (RESET_STREAM with `code`).
    fn reset(&mut self, stream: Self::Stream, code: u64);
}

/// A connection error found by the router: close the connection with `Error(0, status)`
/// naming `counter` and `message` (docs/protocol.md §21's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// The error code and counter name: the §27.2 ones (`quic_unexpected_frame`,
    /// `quic_stream_id_mismatch`, `quic_truncated_frame`, `quic_no_stream`, status Internal),
    /// or, for a frame length outside 16..=`max_frame_size`, the byte-stream decoder's own
    /// (`length_too_short` Internal, `frame_too_large` ResourceExhausted: §27.2 rule 1 makes
    /// each QUIC stream a byte stream in the sense of §2.1, so the same frame gets the same
    /// error on every transport).
    pub counter: &'static str,
    /// The status of the `Error(0)` frame and of the QUIC CONNECTION_CLOSE (§27.1).
    pub status: StatusCode,
    /// What happened, for the Error frame's message.
    pub message: String,
}

impl From<DecodeError> for RouteError {
    fn from(e: DecodeError) -> Self {
        RouteError {
            counter: e.counter(),
            status: e.status(),
            message: e.to_string(),
        }
    }
}

impl RouteError {
    /// A §27.2 violation (status Internal, as docs/protocol.md §21 lists them).
    fn internal(counter: &'static str, message: String) -> Self {
        RouteError {
            counter,
            status: StatusCode::Internal,
            message,
        }
    }
}

/// What the router counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Streams opened by us for an exchange.
    pub opened: u64,
    /// Exchange streams opened by the peer.
    pub accepted: u64,
    /// Connection errors `quic_unexpected_frame`.
    pub unexpected_frame: u64,
    /// Connection errors `quic_stream_id_mismatch`.
    pub stream_id_mismatch: u64,
    /// Frames dropped because their stream was stopped by the peer or already ended.
    pub dropped: u64,
    /// Resets and STOP_SENDINGs turned into Cancel or Error frames.
    pub resets: u64,
}

#[derive(Debug, Default)]
struct Entry {
    /// The exchange id (0: the control stream, or a peer stream before its first frame).
    id: u32,
    control: bool,
    /// We opened it.
    ours: bool,
    /// Received bytes not yet a whole frame.
    buf: Vec<u8>,
    /// Bytes flow control has not taken yet.
    out: Vec<u8>,
    /// Our sending half has ended (FIN queued in `fin`, or stopped by the peer).
    send_done: bool,
    /// A FIN waits for `out` to drain.
    fin: bool,
    /// The peer's half has ended (FIN or reset).
    recv_done: bool,
    /// We asked the peer to stop (a Cancel after our half ended).
    stopped: bool,
    /// A frame ending the peer's half arrived (its final frame: no Cancel or Error is made up
    /// for a later reset).
    peer_ended: bool,
    /// A subscription (opened by Subscribe): it may wait for the peer indefinitely, so it
    /// does not count for [`Router::awaiting_peer`].
    subscription: bool,
    /// When the first byte of the partial frame in `buf` arrived (`None`: no partial frame,
    /// or no time was given).
    partial_since: Option<std::time::Instant>,
}

/// Routes one QUIC connection's frames (see the module documentation).
#[derive(Debug)]
pub struct Router<S> {
    client: bool,
    max_frame: usize,
    control: Option<S>,
    /// Preface bytes the client has still to route to the control stream.
    preface_out: usize,
    preface_in: bool,
    control_closed: bool,
    streams: HashMap<S, Entry>,
    ids: HashMap<u32, S>,
    /// Exchanges waiting for stream credit: id and their bytes so far, and whether the
    /// half already ended.
    waiting: VecDeque<(u32, Vec<u8>, bool)>,
    pending: usize,
    /// Capacity of the streams' reassembly buffers, bytes ([`Router::buffered_bytes`]).
    buffered: usize,
    /// Stream bytes received ([`Router::received_bytes`]).
    received: u64,
    /// Bytes QUIC took from the held-back ones so far ([`Router::released_bytes`]).
    released: u64,
    /// Frames made up for the connection while sending (see [`Router::take_made`]).
    made: Vec<u8>,
    /// STOP_SENDINGs that came for a stream the router did not know yet (the peer's new
    /// stream, whose opening frame QUIC delivers after: both may come in one packet, and
    /// quinn applies control frames first): the Cancel each stands for is delivered after
    /// that opening frame. At most [`EARLY_STOPS`]; the oldest are forgotten (one for a
    /// stream of ours already forgotten never matches).
    early_stops: VecDeque<S>,
    stats: RouterStats,
    /// The time of the bytes being fed ([`Router::set_now`]): when a partial frame began.
    now: Option<std::time::Instant>,
    /// A stream began a partial frame since [`Router::take_partial_started`].
    partial_started: bool,
    enc: ControlEncoder,
    batch: BatchEncoder,
    /// Both sides' header streams (§27.4).
    headers: HeaderStreams<S>,
    /// Exchanges whose incoming half we stopped reading (STOP_SENDING) since
    /// [`Router::take_abandoned`].
    abandoned: Vec<u32>,
    /// The stream the control stream will be (a server's: the client's first bidirectional
    /// stream, [`control_stream_id`]), once known: without it the first stream seen is
    /// taken ([`Router::expect_control`]).
    control_hint: Option<S>,
    /// The control stream delivered its first frame (the Hello to a server, the Welcome or
    /// Reject to a client). Until then exchange frames wait in `gated`: with QUIC 0-RTT a
    /// client's calls may arrive before its Hello, and their replies before the Welcome
    /// (each on its own stream, docs/protocol.md §27.3), but a connection acts on frames
    /// only after its handshake frame.
    handshake_seen: bool,
    /// Whole exchange frames held until the handshake frame ([`Router::handshake_seen`]),
    /// in arrival order; counted in [`Router::buffered_bytes`].
    gated: Vec<u8>,
}

/// Capacity of an empty reassembly buffer kept for its stream (bytes); a larger one, left by
/// a large frame, is freed once the frame is delivered.
const KEEP_BUFFER: usize = 64 << 10;

/// STOP_SENDINGs for unknown streams remembered at most ([`Router::on_stopped`]).
const EARLY_STOPS: usize = 1024;

/// Whether a frame belongs on the control stream. WindowUpdate travels there too while the
/// connection's own flow control runs on QUIC (docs/quic.md "In the engine").
fn connection_level(kind: FrameKind, id: u32) -> bool {
    id == 0
        || matches!(
            kind,
            FrameKind::Hello
                | FrameKind::Welcome
                | FrameKind::Reject
                | FrameKind::Ping
                | FrameKind::Pong
                | FrameKind::GoAway
                | FrameKind::WindowUpdate
        )
}

fn opening(kind: FrameKind) -> bool {
    matches!(
        kind,
        FrameKind::Request | FrameKind::StreamOpen | FrameKind::Subscribe
    )
}

/// Whether the frame ends its sender's half of the exchange (§27.2 rule 3).
fn ends_half(kind: FrameKind, flags: u8) -> bool {
    match kind {
        FrameKind::Request
        | FrameKind::Response
        | FrameKind::Error
        | FrameKind::StreamEnd
        | FrameKind::Cancel
        | FrameKind::Unsubscribe => true,
        FrameKind::StreamOpen | FrameKind::StreamData => flags & Flags::END_STREAM.bits() != 0,
        _ => false,
    }
}

impl<S: Copy + Eq + Hash + Debug> Router<S> {
    /// A router for the client (initiator: odd ids, opens the control stream) or the server
    /// side; `limits.max_frame_size` bounds each stream's reassembly buffer.
    pub fn new(client: bool, limits: &Limits) -> Self {
        Self {
            client,
            max_frame: limits.max_frame_size as usize,
            control: None,
            preface_out: if client { PREFACE.len() } else { 0 },
            preface_in: !client,
            control_closed: false,
            streams: HashMap::new(),
            ids: HashMap::new(),
            waiting: VecDeque::new(),
            pending: 0,
            buffered: 0,
            received: 0,
            released: 0,
            made: Vec::new(),
            early_stops: VecDeque::new(),
            stats: RouterStats::default(),
            now: None,
            partial_started: false,
            enc: ControlEncoder::new(),
            batch: BatchEncoder::new(*limits),
            headers: HeaderStreams::default(),
            abandoned: Vec::new(),
            handshake_seen: false,
            gated: Vec::new(),
            control_hint: None,
        }
    }

    /// On a server: `s` is the control stream (QUIC: the client's first bidirectional
    /// stream, [`control_stream_id`]), whichever stream's bytes come first. Without it the
    /// first stream seen is taken, which a client's call sent in 0-RTT may be (it can
    /// overtake the control stream's Hello, §27.3).
    pub fn expect_control(&mut self, s: S) {
        if self.control.is_none() {
            self.control_hint = Some(s);
        }
    }

    /// `frame` to `deliver`, or held while the handshake frame has not come (an exchange's
    /// frame: `control` false; [`Router::handshake_seen`]).
    fn pass(
        gate: bool,
        gated: &mut Vec<u8>,
        control: bool,
        frame: &[u8],
        deliver: &mut impl FnMut(&[u8]),
    ) {
        if gate && !control {
            gated.extend_from_slice(frame);
        } else {
            deliver(frame);
        }
    }

    /// After the handshake frame: the held exchange frames go to `deliver`, in order.
    fn open_gate(&mut self, gated: Vec<u8>, deliver: &mut impl FnMut(&[u8])) {
        self.handshake_seen = true;
        if !gated.is_empty() {
            deliver(&gated);
        }
        self.buffered -= gated.capacity();
    }

    /// Frames made up for an exchange (a Cancel or Error standing for a reset) to
    /// `deliver`, or held like the peer's own frames until the handshake frame, so they
    /// follow the frames they end.
    fn made_for_exchange(&mut self, made: &[u8], mut deliver: impl FnMut(&[u8])) {
        if made.is_empty() {
            return;
        }
        if self.handshake_seen {
            deliver(made);
        } else {
            let before = self.gated.capacity();
            self.gated.extend_from_slice(made);
            self.buffered = self.buffered - before + self.gated.capacity();
        }
    }

    /// The time of the bytes fed next ([`Router::on_bytes`]): partial frames are stamped with
    /// it, for [`Router::oldest_partial`] (no clock is read inside).
    pub fn set_now(&mut self, now: std::time::Instant) {
        self.now = Some(now);
    }

    /// Whether a stream began a partial frame since the last call (then cleared): the
    /// caller's cue to check [`Router::oldest_partial`] a stall timeout later.
    pub fn take_partial_started(&mut self) -> bool {
        std::mem::take(&mut self.partial_started)
    }

    /// The oldest partial frame waiting for its rest, over every stream (a walk over the
    /// streams: call it when a check is due, not per input): when its first byte arrived,
    /// and how many bytes it still misses (of its header, while that is incomplete, then of
    /// the frame). A peer that trickles a frame, or sends half of one and goes silent, is
    /// cut off by comparing this with `ProtocolConfig::stall_timeout` and with the bytes it
    /// sent meanwhile ([`Router::received_bytes`]).
    pub fn oldest_partial(&self) -> Option<(std::time::Instant, usize)> {
        self.streams
            .values()
            .filter_map(|e| e.partial_since.map(|t| (t, e)))
            .min_by_key(|(t, _)| *t)
            .map(|(t, e)| {
                let need = FrameHeader::parse(&e.buf).map_or(HEADER_LEN, |h| h.length() as usize);
                (t, need.saturating_sub(e.buf.len()))
            })
    }

    /// Frees every stream's partial frame ([`Router::buffered_bytes`] drops to 0): the
    /// connection is closing and will read no more.
    pub fn drop_partials(&mut self) {
        for e in self.streams.values_mut() {
            e.buf = Vec::new();
            e.partial_since = None;
        }
        self.buffered = 0;
    }

    /// Bytes received from the peer so far on exchange streams (cumulative; the control
    /// stream's are not counted: see [`Router::oldest_partial`]).
    pub fn received_bytes(&self) -> u64 {
        self.received
    }

    /// What was counted.
    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// Bytes written by the connection that QUIC flow control has not taken yet. The driver
    /// stops taking batches from the connection while this is above its bound.
    pub fn pending_bytes(&self) -> usize {
        self.pending + self.headers.pending_bytes()
    }

    /// Bytes the streams' reassembly buffers hold (their capacity): partial frames waiting for
    /// their rest, on every stream together. A peer can make this grow up to `max_frame_size`
    /// per stream it opens, so the engine charges it to its core's buffer budget
    /// (`ProtocolConfig::max_buffer_bytes`), as it charges a byte stream's partial frame.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Bytes QUIC took so far out of those it first held back (cumulative): a sender whose
    /// [`Router::pending_bytes`] stay above 0 while this does not move is blocked by the
    /// peer's flow-control windows (the engine closes it after its stall timeout).
    pub fn released_bytes(&self) -> u64 {
        self.released
    }

    /// Exchange streams open (ours and the peer's), the control stream excluded.
    pub fn open_streams(&self) -> usize {
        self.streams.len() - usize::from(self.control.is_some())
    }

    /// Whether a call or stream we opened still waits for the peer's half (a reply, a
    /// stream's messages); subscriptions, which may wait for events indefinitely, do not
    /// count. A walk over the open streams, for occasional checks.
    pub fn awaiting_peer(&self) -> bool {
        self.streams
            .values()
            .any(|e| e.ours && !e.control && !e.recv_done && !e.subscription)
    }

    /// Whether the peer finished the control stream (treat as the end of its input).
    pub fn control_closed(&self) -> bool {
        self.control_closed
    }

    /// The control stream, once opened (by the client) or accepted (by the server).
    pub fn control_stream(&self) -> Option<S> {
        self.control
    }

    /// Ends our half of the control stream (FIN after what waits to be written on it), when
    /// the connection closes: quinn-proto reports the stream `Finished` once the peer
    /// acknowledged all of it, so the closing side knows its last control frames (the
    /// `Error(0)` that says why, a GoAway) arrived before its CONNECTION_CLOSE, which would
    /// otherwise drop them (§27.1).
    ///
    /// Returns whether a FIN was queued: `false` when there is no control stream or our half
    /// already ended (the peer stopped it), so no `Finished` will come for it.
    pub fn end_control<I: StreamIo<Stream = S>>(&mut self, io: &mut I) -> bool {
        let Some(c) = self.control else {
            return false;
        };
        let Some(e) = self.streams.get_mut(&c) else {
            return false;
        };
        if e.send_done {
            return false;
        }
        e.send_done = true;
        e.fin = true;
        self.flush(io, c);
        true
    }

    /// Streams whose sending half (ours) has not ended, the control stream excepted: their
    /// data is not expected to be acknowledged before a close (see [`Router::end_control`]).
    /// Our header streams (§27.4), which never end, are among them.
    pub fn unended_sends(&self) -> usize {
        self.streams
            .values()
            .filter(|e| !e.control && !e.send_done)
            .count()
            + self.headers.opened()
    }

    /// Writes what the connection's header encoder (`encoder`) and decoder (`decoder`)
    /// produced to our header streams (§27.4), opening them on first use. Call before
    /// [`Router::send`] with the batch whose blocks needed those insertions, so they tend to
    /// arrive first (a block that overtakes them is held by the peer, not lost).
    pub fn send_header_streams<I: StreamIo<Stream = S>>(
        &mut self,
        io: &mut I,
        encoder: &[u8],
        decoder: &[u8],
    ) {
        self.headers.send(io, HeaderStream::Encoder, encoder);
        self.headers.send(io, HeaderStream::Decoder, decoder);
    }

    /// Bytes arrived on the peer's unidirectional stream `s` (`fin`: it ended): header-stream
    /// bytes go to `deliver`, their type byte taken off. Unidirectional streams carry no
    /// frames, so they are not counted as progress for a partial frame.
    ///
    /// # Errors
    /// `quic_critical_stream`: a second header stream of a type, or one that ends.
    pub fn on_uni_bytes(
        &mut self,
        s: S,
        bytes: &[u8],
        fin: bool,
        deliver: impl FnMut(HeaderStream, &[u8]),
    ) -> Result<(), RouteError> {
        self.headers.on_bytes(s, bytes, fin, deliver)
    }

    /// The peer reset its unidirectional stream `s`, or stopped one of ours.
    ///
    /// # Errors
    /// `quic_critical_stream` if it is a header stream.
    pub fn on_uni_closed(&mut self, s: S) -> Result<(), RouteError> {
        self.headers.on_closed(s)
    }

    fn our_parity(&self, id: u32) -> bool {
        (id % 2 == 1) == self.client
    }

    /// Routes a batch of whole frames from the connection (the client's first batch starts
    /// with the preface).
    ///
    /// # Errors
    /// `quic_no_stream` if the client cannot open its control stream, `quic_bad_batch` if
    /// the batch does not hold whole frames of known kinds (a bug of the connection).
    pub fn send<I: StreamIo<Stream = S>>(
        &mut self,
        io: &mut I,
        batch: &[u8],
    ) -> Result<(), RouteError> {
        let mut rest = batch;
        if self.preface_out > 0 {
            let control = self.open_control(io)?;
            let n = self.preface_out.min(rest.len());
            self.write(io, control, &rest[..n], false);
            rest = &rest[n..];
            self.preface_out -= n;
        }
        while !rest.is_empty() {
            let Some(h) = FrameHeader::parse(rest) else {
                return Err(bad_batch(rest.len()));
            };
            let len = h.length() as usize;
            if len < HEADER_LEN || len > rest.len() {
                return Err(bad_batch(rest.len()));
            }
            let (frame, tail) = rest.split_at(len);
            rest = tail;
            let (id, flags) = (h.id(), h.flags_byte());
            let Some(kind) = FrameKind::from_u8(h.kind_byte()) else {
                return Err(bad_batch(rest.len()));
            };
            if connection_level(kind, id) {
                let control = self.open_control(io)?;
                self.write(io, control, frame, false);
            } else {
                self.send_exchange(io, kind, id, ends_half(kind, flags), frame);
            }
        }
        Ok(())
    }

    fn open_control<I: StreamIo<Stream = S>>(&mut self, io: &mut I) -> Result<S, RouteError> {
        if let Some(c) = self.control {
            return Ok(c);
        }
        if !self.client {
            return Err(RouteError::internal(
                "quic_no_stream",
                "the server has a frame for the control stream before the client opened it".into(),
            ));
        }
        let Some(c) = io.open_bi() else {
            return Err(RouteError::internal(
                "quic_no_stream",
                "the server allows no bidirectional stream: cannot open the control stream".into(),
            ));
        };
        self.control = Some(c);
        self.streams.insert(
            c,
            Entry {
                control: true,
                ours: true,
                ..Entry::default()
            },
        );
        Ok(c)
    }

    fn send_exchange<I: StreamIo<Stream = S>>(
        &mut self,
        io: &mut I,
        kind: FrameKind,
        id: u32,
        ends: bool,
        frame: &[u8],
    ) {
        if let Some(w) = self.waiting.iter_mut().find(|w| w.0 == id) {
            w.1.extend_from_slice(frame);
            w.2 |= ends;
            self.pending += frame.len();
            return;
        }
        if opening(kind) && self.our_parity(id) {
            // A new exchange. An earlier one with this id may still wait for its last FIN:
            // it keeps its stream, the id now names the new one.
            self.ids.remove(&id);
            match io.open_bi() {
                Some(s) => self.start_exchange(io, s, id, frame, ends),
                None => {
                    self.pending += frame.len();
                    self.waiting.push_back((id, frame.to_vec(), ends));
                }
            }
            return;
        }
        let Some(&s) = self.ids.get(&id) else {
            // The exchange's stream is gone (both halves ended, or the peer reset it).
            self.stats.dropped += 1;
            return;
        };
        let Some(e) = self.streams.get_mut(&s) else {
            return;
        };
        if e.send_done {
            if kind == FrameKind::Cancel && e.ours && !e.recv_done && !e.stopped {
                // Our half (the Request) is finished: cancel by STOP_SENDING. The stream
                // then delivers nothing more, so the call's final frame is made up here.
                e.stopped = true;
                e.recv_done = true;
                self.buffered -= std::mem::take(&mut e.buf).capacity();
                io.stop(s, CANCELLED);
                // Whatever the callee sends on it now is discarded: its header blocks will
                // never be decoded (the connection's decoder cancels the exchange, §27.4).
                if !e.peer_ended {
                    self.abandoned.push(id);
                }
                if !e.peer_ended {
                    let mut made = std::mem::take(&mut self.made);
                    self.error_frame(id, StatusCode::Cancelled, CANCELLED, |f| {
                        made.extend_from_slice(f);
                    });
                    self.made = made;
                }
                self.reap(s);
            } else if kind != FrameKind::Cancel {
                self.stats.dropped += 1;
            }
            return;
        }
        self.write(io, s, frame, ends);
    }

    /// Writes to a stream whose half has not ended; `fin` ends it after these bytes.
    fn write<I: StreamIo<Stream = S>>(&mut self, io: &mut I, s: S, bytes: &[u8], fin: bool) {
        let Some(e) = self.streams.get_mut(&s) else {
            return;
        };
        let mut taken = 0;
        if e.out.is_empty() {
            match io.write(s, bytes) {
                Some(n) => taken = n,
                None => {
                    // Stopped by the peer: nothing more goes out on it.
                    e.send_done = true;
                    self.stats.dropped += 1;
                    self.reap(s);
                    return;
                }
            }
        }
        e.out.extend_from_slice(&bytes[taken..]);
        self.pending += bytes.len() - taken;
        if fin {
            e.send_done = true;
            e.fin = true;
        }
        self.flush(io, s);
    }

    /// Writes what waits for a stream; finishes it when it drained and its half ended.
    fn flush<I: StreamIo<Stream = S>>(&mut self, io: &mut I, s: S) {
        let Some(e) = self.streams.get_mut(&s) else {
            return;
        };
        // Until QUIC takes nothing more: a write it takes only part of does not register the
        // stream for a `Writable` event (quinn-proto registers a stream when a write finds no
        // credit at all), so a flush that stopped after a partial write waited for ever (a
        // graceful shutdown's last 512 KiB reply stayed held until the drain's bound).
        let mut taken = 0;
        while taken < e.out.len() {
            match io.write(s, &e.out[taken..]) {
                Some(0) => break,
                Some(n) => taken += n,
                None => {
                    self.pending -= e.out.len() - taken;
                    e.out = Vec::new();
                    e.send_done = true;
                    e.fin = false;
                    taken = 0;
                    break;
                }
            }
        }
        if taken > 0 {
            e.out.drain(..taken);
            self.pending -= taken;
            self.released += taken as u64;
        }
        if e.out.is_empty() && e.fin {
            e.fin = false;
            io.finish(s);
        }
        self.reap(s);
    }

    /// Hands the connection the frames made up while sending (an `Error(id, Cancelled)` for
    /// a call cancelled by STOP_SENDING): call after [`Router::send`].
    pub fn take_made(&mut self, mut deliver: impl FnMut(&[u8])) {
        if !self.made.is_empty() {
            deliver(&self.made);
            self.made.clear();
        }
    }

    /// Hands over the exchanges whose incoming half [`Router::send`] stopped reading (a
    /// Cancel turned into STOP_SENDING): header blocks the peer sent on them will not be
    /// decoded, so the connection's QPACK decoder cancels them (RFC 9204 §4.4.2), or the
    /// peer's encoder would keep them outstanding, pinning entries, for the connection's life.
    pub fn take_abandoned(&mut self, mut f: impl FnMut(u32)) {
        for id in self.abandoned.drain(..) {
            f(id);
        }
    }

    /// Whether frames made up while sending wait for [`Router::take_made`].
    pub fn has_made(&self) -> bool {
        !self.made.is_empty()
    }

    /// A stream can take bytes again.
    pub fn on_writable<I: StreamIo<Stream = S>>(&mut self, io: &mut I, s: S) {
        if !self.headers.on_writable(io, s) {
            self.flush(io, s);
        }
    }

    /// The peer raised its stream limit: opens the streams of waiting exchanges, oldest first.
    pub fn on_streams_available<I: StreamIo<Stream = S>>(&mut self, io: &mut I) {
        self.headers.on_streams_available(io);
        while !self.waiting.is_empty() {
            let Some(s) = io.open_bi() else {
                return;
            };
            let Some((id, bytes, ends)) = self.waiting.pop_front() else {
                return;
            };
            self.pending -= bytes.len();
            self.start_exchange(io, s, id, &bytes, ends);
        }
    }

    /// Binds our new exchange `id` to the stream `s` just opened and writes its first bytes.
    fn start_exchange<I: StreamIo<Stream = S>>(
        &mut self,
        io: &mut I,
        s: S,
        id: u32,
        bytes: &[u8],
        ends: bool,
    ) {
        self.stats.opened += 1;
        let subscription =
            FrameHeader::parse(bytes).is_some_and(|h| h.kind_byte() == FrameKind::Subscribe as u8);
        self.streams.insert(
            s,
            Entry {
                id,
                ours: true,
                subscription,
                ..Entry::default()
            },
        );
        self.ids.insert(id, s);
        self.write(io, s, bytes, ends);
    }

    /// Forgets a stream once both halves ended and nothing waits to be written.
    fn reap(&mut self, s: S) {
        let done = self.streams.get(&s).is_some_and(|e| {
            !e.control && e.send_done && e.recv_done && e.out.is_empty() && !e.fin
        });
        if done {
            let e = self.streams.remove(&s).expect("checked above");
            self.pending -= e.out.len();
            self.buffered -= e.buf.capacity();
            if self.ids.get(&e.id) == Some(&s) {
                self.ids.remove(&e.id);
            }
        }
    }

    fn entry(&mut self, s: S) -> &mut Entry {
        if !self.streams.contains_key(&s) {
            let control =
                !self.client && self.control.is_none() && self.control_hint.is_none_or(|c| c == s);
            if control {
                self.control = Some(s);
            } else {
                self.stats.accepted += 1;
            }
            self.streams.insert(
                s,
                Entry {
                    control,
                    ..Entry::default()
                },
            );
        }
        self.streams.get_mut(&s).expect("inserted above")
    }

    /// Bytes arrived on stream `s` (`fin`: the peer's half ended after them); whole frames
    /// (and, on the server, the preface) go to `deliver` in order. A stream the router does
    /// not know is one the peer opened (the server's first is the control stream).
    ///
    /// # Errors
    /// A connection error (§27.2 rule 2): `quic_unexpected_frame`, `quic_stream_id_mismatch`,
    /// `quic_truncated_frame` (FIN inside a frame), `quic_bad_frame_length` (a length below 16
    /// or above `max_frame_size`).
    pub fn on_bytes(
        &mut self,
        s: S,
        bytes: &[u8],
        fin: bool,
        mut deliver: impl FnMut(&[u8]),
    ) -> Result<(), RouteError> {
        let peer_odd = !self.client;
        let max = self.max_frame;
        let preface_in = self.preface_in;
        let now = self.now;
        if !self.entry(s).control {
            // Only exchange bytes show progress: control-stream frames (Pings) cost a peer
            // nothing, so counting them let it keep a partial frame alive for ever.
            self.received += bytes.len() as u64;
        }
        let gate = !self.handshake_seen;
        let mut gated = std::mem::take(&mut self.gated);
        let gated_before = gated.capacity();
        let mut handshake_frame = false;
        let e = self.entry(s);
        let first = e.id == 0;
        let was_empty = e.buf.is_empty();
        let held_before = e.buf.capacity();
        e.buf.extend_from_slice(bytes);
        let mut at = 0;
        let mut preface_done = false;
        let mut checked = Ok(());
        if e.control && preface_in {
            if e.buf.len() < PREFACE.len() {
                let r = if fin { Err(truncated(&e.buf)) } else { Ok(()) };
                let held = e.buf.capacity();
                self.buffered = self.buffered - held_before + held;
                self.gated = gated;
                return r;
            }
            deliver(&e.buf[..PREFACE.len()]);
            at = PREFACE.len();
            preface_done = true;
        }
        while let Some(h) = FrameHeader::parse(&e.buf[at..]) {
            let len = h.length() as usize;
            if !(HEADER_LEN..=max).contains(&len) {
                checked = Err(bad_length(h.length(), max));
                break;
            }
            if e.buf.len() - at < len {
                break;
            }
            let (id, kind, flags) = (h.id(), FrameKind::from_u8(h.kind_byte()), h.flags_byte());
            // An unknown kind goes to the connection, which names it.
            if let Some(kind) = kind {
                if let Err(err) = check(e, kind, id, peer_odd) {
                    checked = Err(err);
                    break;
                }
                e.peer_ended |= !e.control && ends_half(kind, flags);
            }
            Self::pass(
                gate,
                &mut gated,
                e.control,
                &e.buf[at..at + len],
                &mut deliver,
            );
            handshake_frame |= gate && e.control;
            at += len;
        }
        e.buf.drain(..at);
        if e.buf.is_empty() && (e.buf.capacity() > KEEP_BUFFER || e.peer_ended) {
            // No buffer is kept for a stream whose peer sends no more frames (a call after
            // its Request: hundreds of calls may wait for their replies), nor a large
            // frame's for a stream that waits for nothing.
            e.buf = Vec::new();
        }
        let held = e.buf.capacity();
        // A partial frame whose first byte came now (nothing was waiting, or whole frames
        // went before it) starts its stall clock; one still growing keeps its start.
        let mut started = false;
        if e.buf.is_empty() {
            e.partial_since = None;
        } else if was_empty || at > 0 || e.partial_since.is_none() {
            e.partial_since = now;
            started = now.is_some();
        }
        let id = e.id;
        if checked.is_ok() && fin {
            e.recv_done = true;
            if !e.buf.is_empty() {
                checked = Err(truncated(&e.buf));
            }
        }
        let control = e.control;
        self.buffered = self.buffered - held_before + held + gated.capacity() - gated_before;
        self.partial_started |= started;
        if handshake_frame {
            self.open_gate(gated, &mut deliver);
        } else {
            self.gated = gated;
        }
        if preface_done {
            self.preface_in = false;
        }
        if let Err(err) = checked {
            self.count(&err);
            return Err(err);
        }
        if first && id != 0 {
            self.ids.insert(id, s);
            if let Some(at) = self.early_stops.iter().position(|x| *x == s) {
                // Its opener stopped it before this opening frame was read: the Cancel that
                // STOP_SENDING stands for follows the frame, as on a known stream.
                self.early_stops.remove(at);
                if let Some(e) = self.streams.get_mut(&s) {
                    e.send_done = true;
                    e.fin = false;
                    self.pending -= e.out.len();
                    e.out = Vec::new();
                }
                self.stats.resets += 1;
                let mut made = Vec::new();
                cancel_frame(id, |f| made.extend_from_slice(f));
                self.made_for_exchange(&made, &mut deliver);
            }
        }
        if fin {
            if control {
                self.control_closed = true;
            }
            self.reap(s);
        }
        Ok(())
    }

    fn count(&mut self, err: &RouteError) {
        match err.counter {
            "quic_unexpected_frame" => self.stats.unexpected_frame += 1,
            "quic_stream_id_mismatch" => self.stats.stream_id_mismatch += 1,
            _ => {}
        }
    }

    /// The peer reset stream `s` (RESET_STREAM): the exchange's opener cancelled it (a Cancel
    /// frame goes to `deliver`) or its callee gave up (`Error(id, Unavailable)`) (§27.2 rule 4).
    ///
    /// Returns the exchange whose frames the reset may have cut off (a partial frame was
    /// lost, or the peer's half had not ended: frames it sent may never arrive): their header
    /// blocks will never be decoded, so the connection's header decoder cancels the exchange
    /// (§27.4). A reset before 16 bytes of a new stream's first frame names no exchange.
    pub fn on_reset(&mut self, s: S, code: u64, deliver: impl FnMut(&[u8])) -> Option<u32> {
        let e = self.streams.get_mut(&s)?;
        e.recv_done = true;
        let lost = std::mem::take(&mut e.buf);
        self.buffered -= lost.capacity();
        let cut = match (lost.is_empty(), e.id) {
            (_, id) if id != 0 && (!lost.is_empty() || !e.peer_ended) => Some(id),
            (false, 0) => FrameHeader::parse(&lost).map(|h| h.id()),
            _ => None,
        };
        let (id, ours, ended) = (e.id, e.ours, e.peer_ended);
        if e.control {
            self.control_closed = true;
            return None;
        }
        if id != 0 && !(ours && ended) {
            self.stats.resets += 1;
            self.made_up_end(id, ours, code, deliver);
        }
        self.reap(s);
        cut
    }

    /// The peer sent STOP_SENDING on stream `s`: it reads no more. From the opener this
    /// cancels the exchange (a Cancel frame goes to `deliver`); from the callee the exchange
    /// failed (`Error(id, Unavailable)`). Later frames of ours for it are dropped.
    pub fn on_stopped<I: StreamIo<Stream = S>>(
        &mut self,
        io: &mut I,
        s: S,
        code: u64,
        deliver: impl FnMut(&[u8]),
    ) {
        let Some(e) = self.streams.get_mut(&s) else {
            // A stream not known yet: the peer's new stream, its opening frame still to be
            // read (or one of ours already forgotten). Answer with RESET_STREAM and cancel the
            // exchange once its opening frame arrives (`on_bytes`).
            io.reset(s, code);
            if self.early_stops.len() >= EARLY_STOPS {
                self.early_stops.pop_front();
            }
            self.early_stops.push_back(s);
            return;
        };
        let was_done = e.send_done && !e.fin;
        if !was_done {
            // RFC 9000 §3.5: STOP_SENDING is answered with RESET_STREAM.
            io.reset(s, code);
        }
        self.pending -= e.out.len();
        e.out = Vec::new();
        e.send_done = true;
        e.fin = false;
        let (id, ours, control, ended) = (e.id, e.ours, e.control, e.peer_ended);
        if control {
            self.control_closed = true;
            return;
        }
        if id != 0 && !(ours && (ended || was_done)) {
            self.stats.resets += 1;
            self.made_up_end(id, ours, code, deliver);
        }
        self.reap(s);
    }

    /// The frame that ends exchange `id` after a reset or STOP_SENDING: `Error(id,
    /// Unavailable)` for one we opened, a Cancel for the peer's.
    fn made_up_end(&mut self, id: u32, ours: bool, code: u64, deliver: impl FnMut(&[u8])) {
        if self.handshake_seen {
            if ours {
                self.error_frame(id, StatusCode::Unavailable, code, deliver);
            } else {
                cancel_frame(id, deliver);
            }
            return;
        }
        let mut made = Vec::new();
        if ours {
            self.error_frame(id, StatusCode::Unavailable, code, |f| {
                made.extend_from_slice(f);
            });
        } else {
            cancel_frame(id, |f| made.extend_from_slice(f));
        }
        self.made_for_exchange(&made, deliver);
    }

    fn error_frame(
        &mut self,
        id: u32,
        status: StatusCode,
        code: u64,
        mut deliver: impl FnMut(&[u8]),
    ) {
        self.batch.clear();
        let message = if status == StatusCode::Cancelled {
            "cancelled: the QUIC stream was stopped".to_string()
        } else {
            format!("the peer abandoned the QUIC stream (code {code})")
        };
        if self
            .enc
            .error(&mut self.batch, id, status, &message, &[])
            .is_ok()
        {
            deliver(self.batch.as_slice());
        }
        self.batch.clear();
    }
}

/// The §27.2 rule 2 checks of one received frame on stream `e`.
fn check(e: &mut Entry, kind: FrameKind, id: u32, peer_odd: bool) -> Result<(), RouteError> {
    if e.control {
        if connection_level(kind, id) {
            return Ok(());
        }
        return Err(RouteError::internal(
            "quic_unexpected_frame",
            format!(
                "{kind:?} for id {id} on the control stream (exchange frames travel on their own stream)"
            ),
        ));
    }
    if connection_level(kind, id) {
        return Err(RouteError::internal(
            "quic_unexpected_frame",
            format!("connection-level {kind:?} (id {id}) on an exchange stream"),
        ));
    }
    if e.id == 0 {
        if !opening(kind) || (id % 2 == 1) != peer_odd {
            return Err(RouteError::internal(
                "quic_unexpected_frame",
                format!(
                    "a new stream must start with Request, StreamOpen or Subscribe with the peer's parity, got {kind:?} id {id}"
                ),
            ));
        }
        e.id = id;
        return Ok(());
    }
    if id != e.id {
        return Err(RouteError::internal(
            "quic_stream_id_mismatch",
            format!("{kind:?} for id {id} on the stream of id {}", e.id),
        ));
    }
    Ok(())
}

fn cancel_frame(id: u32, mut deliver: impl FnMut(&[u8])) {
    let h = FrameHeader::new(
        HEADER_LEN as u32,
        FrameKind::Cancel,
        Flags::empty(),
        0,
        id,
        0,
    );
    deliver(h.as_bytes());
}

/// A received frame length outside 16..=`max`: the error the byte-stream decoder gives the
/// same bytes (§27.2 rule 1), `length_too_short` or `frame_too_large`.
fn bad_length(len: u32, max: usize) -> RouteError {
    if (len as usize) < HEADER_LEN {
        DecodeError::LengthTooShort { length: len }.into()
    } else {
        DecodeError::FrameTooLarge {
            length: len,
            max: u32::try_from(max).unwrap_or(u32::MAX),
        }
        .into()
    }
}

/// The connection handed the router a batch that is not whole frames of known kinds: a bug
/// on this side, not the peer's fault.
fn bad_batch(left: usize) -> RouteError {
    RouteError::internal(
        "quic_bad_batch",
        format!(
            "the connection's batch does not hold whole frames of known kinds ({left} bytes \
             left at the fault)"
        ),
    )
}

fn truncated(buf: &[u8]) -> RouteError {
    RouteError::internal(
        "quic_truncated_frame",
        format!(
            "the stream ended inside a frame ({} bytes left over)",
            buf.len()
        ),
    )
}

/// Whether `s` is a unidirectional stream (a header stream or one of an unknown type, for
/// [`Router::on_uni_bytes`]); bidirectional ones carry frames ([`Router::on_bytes`]).
pub fn is_unidirectional(s: StreamId) -> bool {
    s.dir() == quinn_proto::Dir::Uni
}

/// The control stream's ID: the client's first bidirectional stream (§27.2).
pub fn control_stream_id() -> StreamId {
    StreamId::new(quinn_proto::Side::Client, quinn_proto::Dir::Bi, 0)
}

/// [`StreamIo`] over one connection of a [`QuicEndpoint`].
#[derive(Debug)]
pub struct EndpointStreams<'a> {
    /// The endpoint.
    pub endpoint: &'a mut QuicEndpoint,
    /// The connection.
    pub conn: ConnId,
}

impl StreamIo for EndpointStreams<'_> {
    type Stream = StreamId;
    fn open_bi(&mut self) -> Option<StreamId> {
        self.endpoint.open_bi(self.conn).ok().flatten()
    }
    fn open_uni(&mut self) -> Option<StreamId> {
        self.endpoint.open_uni(self.conn).ok().flatten()
    }
    fn write(&mut self, stream: StreamId, bytes: &[u8]) -> Option<usize> {
        self.endpoint.write(self.conn, stream, bytes).ok()
    }
    fn finish(&mut self, stream: StreamId) {
        let _ = self.endpoint.finish(self.conn, stream);
    }
    fn stop(&mut self, stream: StreamId, code: u64) {
        let _ = self.endpoint.stop(self.conn, stream, code);
    }
    fn reset(&mut self, stream: StreamId, code: u64) {
        let _ = self.endpoint.reset(self.conn, stream, code);
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
