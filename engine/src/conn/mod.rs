//! The connection state machine, sans I/O: bytes in (`on_recv`), frames out (`tx`).
//!
//! It owns the connection's codec state: handshake, header encoder/decoder, payload
//! (de)compression, the batch being filled and the full batches waiting for the socket, and
//! (client role) the calls in flight. The driver only moves bytes and calls `on_recv`,
//! `take_batch` and `on_timer`; everything here can be tested with two `Connection`s
//! exchanging buffers, no sockets involved.

mod client;
mod server;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use netron_codec::compress::{Compressor, Decompressor};
use netron_codec::control::ControlEncoder;
use netron_codec::handshake::{
    ClientConfig, ClientHandshake, ClientProgress, ServerConfig, ServerHandshake, ServerProgress,
    Settings,
};
use netron_codec::hpack::{HeaderDecoder, HeaderEncoder, HeaderList};
use netron_codec::{
    BatchEncoder, DecodeError, EncodeError, Frame, FrameIter, FrameKind, HandshakeError, Limits,
    StatusCode,
};

pub(crate) use client::{CallSpec, PendingCalls};

use crate::service::Registry;
use crate::stats::CoreStats;

/// An async handler's future to run on the core's executor.
pub(crate) struct Spawn {
    pub id: u32,
    pub future: crate::service::HandlerFuture,
    pub deadline: Option<Instant>,
}

/// Which side of the handshake this connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Server,
    Client,
}

#[derive(Debug)]
enum State {
    ServerHandshake(Box<ServerHandshake>),
    ClientHandshake(Box<ClientHandshake>),
    Open,
    /// A fatal error was queued; flush and close.
    Closing,
}

/// A connection-fatal problem: what to count, what to tell the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnError {
    pub counter: &'static str,
    pub status: StatusCode,
    pub message: String,
}

impl From<DecodeError> for ConnError {
    fn from(e: DecodeError) -> Self {
        ConnError {
            counter: e.counter(),
            status: e.status(),
            message: e.to_string(),
        }
    }
}

impl From<HandshakeError> for ConnError {
    fn from(e: HandshakeError) -> Self {
        ConnError {
            counter: e.counter(),
            status: StatusCode::FailedPrecondition,
            message: e.to_string(),
        }
    }
}

/// What the core passes to a connection for one event.
pub(crate) struct Env<'a> {
    pub registry: &'a Registry,
    pub now: Instant,
    pub stats: &'a mut CoreStats,
}

/// Per-connection configuration.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    pub server: ServerConfig,
    pub client: ClientConfig,
}

pub(crate) struct Connection {
    role: Role,
    state: State,
    /// Bytes of a partial frame (or of the handshake) carried over to the next receive.
    rx: Vec<u8>,
    dec: HeaderDecoder,
    enc: HeaderEncoder,
    tx: BatchEncoder,
    /// Full batches waiting for the socket, oldest first, with their frame counts.
    tx_full: VecDeque<(Vec<u8>, u32)>,
    /// Empty buffers to reuse for batches.
    spare: Vec<Vec<u8>>,
    control: ControlEncoder,
    compressor: Compressor,
    decompressor: Decompressor,
    scratch: Vec<u8>,
    headers: HeaderList,
    settings: Option<Settings>,
    pub(crate) calls: PendingCalls,
    /// The peer sent GoAway: no new calls on this connection.
    pub(crate) peer_going_away: bool,
    /// We sent GoAway.
    pub(crate) going_away: bool,
    /// When bytes last arrived.
    pub(crate) last_rx: Instant,
    /// A Ping we sent is unanswered since this time.
    pub(crate) ping_outstanding: Option<Instant>,
    /// Async calls to start (drained by the core after each event).
    pub(crate) spawns: Vec<Spawn>,
    /// Cancel frames received (server role), for the core to drop those calls' futures.
    pub(crate) cancels: Vec<u32>,
    /// Async calls running for this connection.
    pub(crate) async_inflight: u32,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Largest buffer capacity a connection keeps once it is empty again (receive reassembly and
/// spare batch buffers): bigger ones are freed, so a connection that once carried a large
/// frame does not hold that memory while idle.
const KEEP_BUFFER: usize = 256 << 10;

/// Limits in force before the handshake completes.
fn handshake_limits() -> Limits {
    Limits::default().with_max_frame_size(netron_codec::handshake::HANDSHAKE_MAX_FRAME)
}

impl Connection {
    /// A new connection. A client queues its preface and Hello at once.
    pub(crate) fn new(role: Role, config: &ConnConfig, now: Instant) -> Connection {
        let mut c = Connection {
            role,
            state: State::Open,
            rx: Vec::new(),
            dec: HeaderDecoder::new(0, 0),
            enc: HeaderEncoder::new(0),
            tx: BatchEncoder::new(handshake_limits()),
            tx_full: VecDeque::new(),
            spare: Vec::new(),
            control: ControlEncoder::new(),
            compressor: Compressor::new(netron_codec::Compression::None, usize::MAX),
            decompressor: Decompressor::new(netron_codec::Compression::None, 0),
            scratch: Vec::new(),
            headers: HeaderList::default(),
            settings: None,
            calls: PendingCalls::default(),
            peer_going_away: false,
            going_away: false,
            last_rx: now,
            ping_outstanding: None,
            spawns: Vec::new(),
            cancels: Vec::new(),
            async_inflight: 0,
        };
        c.state = match role {
            Role::Server => {
                State::ServerHandshake(Box::new(ServerHandshake::new(config.server.clone())))
            }
            Role::Client => {
                let mut hs = ClientHandshake::new(config.client.clone());
                let mut out = Vec::new();
                match hs.start(&mut out) {
                    Ok(()) => {
                        c.tx.push_encoded(&out, 1);
                        State::ClientHandshake(Box::new(hs))
                    }
                    Err(_) => State::Closing,
                }
            }
        };
        c
    }

    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// Whether the handshake completed and the connection is usable.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// Whether a fatal error was queued; the driver closes after flushing.
    pub(crate) fn is_closing(&self) -> bool {
        matches!(self.state, State::Closing)
    }

    fn apply_settings(&mut self, s: Settings) {
        self.dec = HeaderDecoder::new(s.header_table_size, s.limits.max_header_list_size as usize);
        self.enc = HeaderEncoder::new(s.header_table_size);
        // Locally, batches on a stream socket are bounded by the negotiated limits too.
        self.tx.set_limits(s.limits);
        self.compressor = Compressor::new(s.compression, s.compression_threshold as usize);
        self.decompressor = Decompressor::new(s.compression, s.limits.max_decompressed_size);
        self.settings = Some(s);
        self.state = State::Open;
    }

    /// Feeds received bytes. On `Err` the connection is closing: an Error frame (id 0) was
    /// queued for the peer, and in-flight calls were failed.
    pub(crate) fn on_recv(&mut self, data: &[u8], env: &mut Env<'_>) -> Result<(), ConnError> {
        self.last_rx = env.now;
        self.ping_outstanding = None;
        env.stats.bytes_in += data.len() as u64;
        if self.is_closing() {
            return Ok(());
        }
        let result = if self.rx.is_empty() && self.is_open() {
            // Fast path: decode straight from the kernel's buffer; keep only a partial tail.
            match self.process(data, env) {
                Ok(consumed) => {
                    self.rx.extend_from_slice(&data[consumed..]);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else {
            // A partial frame is pending: reassemble once into the connection's buffer.
            let mut rx = std::mem::take(&mut self.rx);
            rx.extend_from_slice(data);
            let r = self.process(&rx, env).map(|consumed| {
                rx.drain(..consumed);
            });
            if rx.is_empty() && rx.capacity() > KEEP_BUFFER {
                // A large frame was reassembled here; an idle connection keeps no big buffer.
                rx = Vec::new();
            }
            self.rx = rx;
            r
        };
        if let Err(e) = &result {
            self.fail(e.clone(), env);
        }
        result
    }

    /// Queues an Error frame (id 0) for `e`, fails in-flight calls, and marks the connection
    /// closing.
    pub(crate) fn fail(&mut self, e: ConnError, env: &mut Env<'_>) {
        env.stats.count_error(e.counter);
        // Before the handshake completed the peer may not speak Netron at all: the handshake
        // already queued a Reject where one is due, and nothing else is sent.
        if self.is_open() {
            let _ = self.queue(|c, b| c.control.error(b, 0, e.status, &e.message, &[]).map(|_| ()));
        }
        self.calls.fail_all(crate::slot::conn_lost(
            "connection closed after a protocol error",
        ));
        self.state = State::Closing;
    }

    /// Decodes as many whole frames as `buf` holds; returns the bytes consumed.
    fn process(&mut self, buf: &[u8], env: &mut Env<'_>) -> Result<usize, ConnError> {
        let mut consumed = 0;
        match &mut self.state {
            State::ServerHandshake(hs) => {
                let mut out = Vec::new();
                match hs.handle_with_reply(buf, &mut out) {
                    Ok(ServerProgress::NeedMore { .. }) => return Ok(0),
                    Ok(ServerProgress::Offer { offer, consumed: n }) => {
                        let r = hs.try_accept(&offer, &mut out);
                        self.tx.push_encoded(&out, 1);
                        let settings = r?;
                        self.apply_settings(settings);
                        env.stats.handshakes += 1;
                        consumed = n;
                    }
                    Err(e) => {
                        if !out.is_empty() {
                            self.tx.push_encoded(&out, 1);
                        }
                        return Err(e.into());
                    }
                }
            }
            State::ClientHandshake(hs) => match hs.handle(buf)? {
                ClientProgress::NeedMore { .. } => return Ok(0),
                ClientProgress::Done {
                    settings,
                    consumed: n,
                } => {
                    self.apply_settings(settings);
                    env.stats.handshakes += 1;
                    consumed = n;
                }
            },
            State::Open => {}
            State::Closing => return Ok(buf.len()),
        }
        let limits = self
            .settings
            .as_ref()
            .map_or_else(handshake_limits, |s| s.limits);
        let mut it = FrameIter::new(&buf[consumed..], &limits);
        for frame in it.by_ref() {
            let frame = frame?;
            env.stats.frames_in += 1;
            self.dispatch(frame, env)?;
            if self.is_closing() {
                return Ok(buf.len());
            }
        }
        Ok(consumed + it.consumed())
    }

    fn dispatch(&mut self, frame: Frame<'_>, env: &mut Env<'_>) -> Result<(), ConnError> {
        match frame.kind() {
            FrameKind::Request => self.on_request(frame, env),
            FrameKind::Error if frame.id() == 0 => {
                // The peer reports a connection error and closes.
                let body = netron_codec::control::read_error(&frame)?;
                env.stats.count_error("peer_error");
                self.calls.fail_all(crate::Status::new(
                    netron_codec::control::status(body.status()),
                    format!(
                        "peer closed the connection: {}",
                        body.message().unwrap_or("")
                    ),
                ));
                self.state = State::Closing;
                Ok(())
            }
            FrameKind::Response | FrameKind::Error if self.role == Role::Client => {
                self.on_reply(frame, env)
            }
            FrameKind::Ping => {
                self.queue(|_, b| b.empty_frame(FrameKind::Pong, frame.id(), frame.arg()))
            }
            FrameKind::Pong => Ok(()),
            FrameKind::Cancel => {
                // Sync handlers finish within the loop turn that received their request; async
                // ones may still run: the core drops their futures.
                env.stats.cancels_in += 1;
                if self.role == Role::Server && self.async_inflight > 0 {
                    self.cancels.push(frame.id());
                }
                Ok(())
            }
            FrameKind::GoAway => {
                let g = netron_codec::control::read_go_away(&frame)?;
                self.peer_going_away = true;
                self.calls.fail_above(
                    g.last_id(),
                    crate::Status::unavailable("the server is going away; retry elsewhere"),
                );
                Ok(())
            }
            FrameKind::Hello | FrameKind::Welcome | FrameKind::Reject => Err(ConnError {
                counter: "unexpected_handshake_frame",
                status: StatusCode::Internal,
                message: format!("{} after the handshake", frame.kind().name()),
            }),
            // Streams and events are not served yet: refuse the call, keep the connection.
            FrameKind::StreamOpen | FrameKind::Subscribe => {
                let id = frame.id();
                env.stats.count_error("unimplemented_kind");
                self.queue(|c, b| {
                    c.control
                        .error(
                            b,
                            id,
                            StatusCode::Unimplemented,
                            "streams and events are not served by this engine yet",
                            &[],
                        )
                        .map(|_| ())
                })
            }
            _ => {
                env.stats.count_error("ignored_frame");
                Ok(())
            }
        }
    }

    /// Runs `f` to encode into the current batch; when the batch is full, moves it to the
    /// send queue and retries once on a fresh batch.
    pub(crate) fn queue<T>(
        &mut self,
        mut f: impl FnMut(&mut Self, &mut BatchEncoder) -> Result<T, EncodeError>,
    ) -> Result<T, ConnError> {
        let mut tx = std::mem::replace(&mut self.tx, BatchEncoder::new(Limits::default()));
        let mut r = f(self, &mut tx);
        if matches!(r, Err(EncodeError::BatchFull)) {
            self.rotate(&mut tx);
            r = f(self, &mut tx);
        }
        self.tx = tx;
        r.map_err(|e| ConnError {
            counter: "encode_error",
            status: if e.must_close() {
                StatusCode::Internal
            } else {
                StatusCode::ResourceExhausted
            },
            message: e.to_string(),
        })
    }

    fn rotate(&mut self, tx: &mut BatchEncoder) {
        let mut fresh = self.spare.pop().unwrap_or_default();
        let frames = tx.frame_count();
        tx.swap_buffer(&mut fresh);
        self.tx_full.push_back((fresh, frames));
    }

    /// Bytes queued for the socket and not yet handed to it.
    pub(crate) fn backlog_bytes(&self) -> usize {
        self.tx_full.iter().map(|(b, _)| b.len()).sum::<usize>() + self.tx.len()
    }

    /// Whether the connection waits for the rest of a frame or of the handshake.
    pub(crate) fn awaiting_more(&self) -> bool {
        !self.rx.is_empty()
            || matches!(
                self.state,
                State::ServerHandshake(_) | State::ClientHandshake(_)
            )
    }

    /// Whether bytes are waiting to be written.
    #[inline]
    pub(crate) fn wants_write(&self) -> bool {
        !self.tx_full.is_empty() || !self.tx.is_empty()
    }

    /// Takes the next batch to write (oldest full batch first), leaving an empty buffer in its
    /// place. Returns the buffer and how many frames it holds. Give the buffer back with
    /// [`Connection::recycle`] once written.
    pub(crate) fn take_batch(&mut self) -> Option<(Vec<u8>, u32)> {
        if let Some(full) = self.tx_full.pop_front() {
            return Some(full);
        }
        if self.tx.is_empty() {
            return None;
        }
        let n = self.tx.frame_count();
        let mut buf = self.spare.pop().unwrap_or_default();
        self.tx.swap_buffer(&mut buf);
        Some((buf, n))
    }

    /// Returns a written batch buffer for reuse.
    pub(crate) fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        // Keep small buffers for reuse (steady state allocates nothing); let large ones go.
        if self.spare.len() < 2 && buf.capacity() <= KEEP_BUFFER {
            self.spare.push(buf);
        }
    }

    /// Time-driven work: expires client calls past their deadline (sending Cancel), pings an
    /// idle connection, and reports a dead peer. Returns `Err` if the peer is considered dead.
    pub(crate) fn on_timer(
        &mut self,
        env: &mut Env<'_>,
        keepalive: Duration,
        dead_after: Duration,
    ) -> Result<(), ConnError> {
        let expired = self.calls.expire(env.now);
        for id in expired {
            env.stats.deadline_exceeded += 1;
            let _ = self.queue(|_, b| b.empty_frame(FrameKind::Cancel, id, 0));
        }
        if !self.is_open() || keepalive.is_zero() {
            return Ok(());
        }
        if let Some(since) = self.ping_outstanding {
            if env.now.duration_since(since) >= dead_after {
                let e = ConnError {
                    counter: "dead_peer",
                    status: StatusCode::Unavailable,
                    message: format!("no answer to a keepalive ping within {dead_after:?}"),
                };
                self.fail(e.clone(), env);
                return Err(e);
            }
        } else if env.now.duration_since(self.last_rx) >= keepalive {
            self.ping_outstanding = Some(env.now);
            self.queue(|_, b| b.empty_frame(FrameKind::Ping, 0, 0))?;
        }
        Ok(())
    }

    /// When this connection next needs `on_timer` (or the stall check): the earliest of its
    /// calls' deadlines, the keepalive or dead-peer time, and the stall time.
    pub(crate) fn next_timer(
        &self,
        keepalive: Duration,
        dead_after: Duration,
        stall: Duration,
    ) -> Option<Instant> {
        let mut next = self.calls.next_deadline;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if self.awaiting_more() {
            consider(self.last_rx + stall);
        }
        if self.is_open() && !keepalive.is_zero() {
            match self.ping_outstanding {
                Some(since) => consider(since + dead_after),
                None => consider(self.last_rx + keepalive),
            }
        }
        next
    }

    /// Starts a graceful shutdown: tells the peer no new calls will be accepted.
    pub(crate) fn go_away(&mut self, last_id: u32) {
        if self.going_away || !self.is_open() {
            return;
        }
        self.going_away = true;
        let _ = self.queue(|c, b| {
            c.control
                .go_away(b, last_id, StatusCode::Unavailable, "server shutting down")
                .map(|_| ())
        });
    }

    /// The peer closed or the socket failed: fail what is in flight.
    pub(crate) fn on_closed(&mut self) {
        self.calls
            .fail_all(crate::slot::conn_lost("connection closed by the peer"));
        self.state = State::Closing;
    }
}

#[cfg(test)]
mod tests;
