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

/// Per-connection configuration, fixed when the connection is created (from
/// [`crate::CoreConfig`]; see docs/architecture.md, "Timers and budgets").
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    pub server: ServerConfig,
    pub client: ClientConfig,
    /// Ping a connection silent this long (zero: never).
    pub keepalive: Duration,
    /// Close a connection whose ping got no answer for this long.
    pub dead_after: Duration,
    /// A handshake or a frame must complete within this long of its first byte; an output
    /// that makes no progress for this long closes the connection.
    pub stall_timeout: Duration,
    /// A closing connection is closed after this long whatever the peer does.
    pub close_linger: Duration,
    /// Unsent output above which a new outgoing message is refused (that message only).
    pub max_backlog_bytes: usize,
    /// Frames that do no work a peer may send: burst and refill per second.
    pub idle_frames: crate::config::FrameBudget,
    /// The core's budget for receive reassembly and decompression buffers.
    pub buffers: std::rc::Rc<BufferBudget>,
}

/// Bytes of receive-reassembly and decompression buffers that all connections of one core
/// hold, against `CoreConfig::max_buffer_bytes`. A connection asks before a buffer grows; a
/// peer whose frame would take the core past its budget gets a connection error
/// (ResourceExhausted, counter `buffer_budget`), so slow or malicious senders of large frames
/// cannot make a core hold more than the budget, whatever their number.
#[derive(Debug)]
pub(crate) struct BufferBudget {
    used: std::cell::Cell<usize>,
    limit: usize,
}

impl BufferBudget {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            used: std::cell::Cell::new(0),
            limit,
        }
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> usize {
        self.used.get()
    }
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
    /// Ids of the peer's calls this side serves asynchronously and has not answered yet.
    pub(crate) inflight: rustc_hash::FxHashSet<u32>,
    /// The last id the peer opened (GoAway's `last_id`).
    last_peer_id: u32,
    /// The peer closed its sending side (EOF): finish what is in flight, then close.
    pub(crate) peer_eof: bool,
    /// When the handshake began or the partial frame in `rx` got its first byte.
    rx_started: Instant,
    /// When output started waiting behind a send the peer does not take (set by the core).
    pub(crate) write_blocked_since: Option<Instant>,
    /// Since when the connection is closing (closed at the latest `close_linger` later).
    closing_since: Option<Instant>,
    /// Why the connection is closing, for calls that try to use it.
    pub(crate) close_reason: Option<String>,
    /// Budget of frames that do no work, in quarter tokens.
    budget: Budget,
    /// Bytes of `rx` and `scratch` capacity counted against the core's buffer budget.
    charged: usize,
    cfg: ConnConfig,
}

/// A token bucket for frames that do no work (ignored frames, pings, cancels of answered
/// calls): the defence against floods such as HTTP/2 rapid reset (CVE-2023-44487). Tokens are
/// counted in quarters: such a frame costs 4, every Request refunds 2 (so a caller may cancel
/// one call in two without ever running dry), and time refills `per_sec` frames a second, up
/// to `burst`.
#[derive(Debug, Clone, Copy)]
struct Budget {
    quarters: u64,
    cap: u64,
    per_sec: u64,
    last: Instant,
}

impl Budget {
    fn new(b: crate::config::FrameBudget, now: Instant) -> Self {
        let cap = u64::from(b.burst).saturating_mul(4);
        Self {
            quarters: cap,
            cap,
            per_sec: u64::from(b.per_sec).saturating_mul(4),
            last: now,
        }
    }

    /// Takes one frame's cost; `false` when the budget is spent.
    fn charge(&mut self, now: Instant) -> bool {
        if self.quarters < 4 {
            let elapsed = now.saturating_duration_since(self.last);
            let add = (elapsed.as_micros().min(u128::from(u64::MAX)) as u64)
                .saturating_mul(self.per_sec)
                / 1_000_000;
            if add > 0 {
                self.quarters = self.quarters.saturating_add(add).min(self.cap);
                self.last = now;
            }
        }
        if self.quarters < 4 {
            return false;
        }
        if self.quarters == self.cap {
            self.last = now;
        }
        self.quarters -= 4;
        true
    }

    #[inline]
    fn refund_half(&mut self) {
        if self.quarters < self.cap {
            self.quarters = (self.quarters + 2).min(self.cap);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let b = &self.cfg.buffers;
        b.used.set(b.used.get().saturating_sub(self.charged));
    }
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
            calls: PendingCalls::new(role == Role::Client),
            peer_going_away: false,
            going_away: false,
            last_rx: now,
            ping_outstanding: None,
            spawns: Vec::new(),
            cancels: Vec::new(),
            inflight: rustc_hash::FxHashSet::default(),
            last_peer_id: 0,
            peer_eof: false,
            rx_started: now,
            write_blocked_since: None,
            closing_since: None,
            close_reason: None,
            budget: Budget::new(config.idle_frames, now),
            charged: 0,
            cfg: config.clone(),
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
                    Err(e) => {
                        c.closing_since = Some(now);
                        c.close_reason = Some(format!("could not start the handshake: {e}"));
                        State::Closing
                    }
                }
            }
        };
        c
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
    /// queued for the peer, and in-flight calls were failed. Bytes that arrive once the
    /// connection is closing are not looked at.
    pub(crate) fn on_recv(&mut self, data: &[u8], env: &mut Env<'_>) -> Result<(), ConnError> {
        self.last_rx = env.now;
        self.ping_outstanding = None;
        env.stats.bytes_in += data.len() as u64;
        if self.is_closing() || self.peer_eof {
            return Ok(());
        }
        let result = if self.rx.is_empty() && self.is_open() {
            // Fast path: decode straight from the kernel's buffer; keep only a partial tail.
            match self.process(data, env) {
                Ok(consumed) => {
                    if consumed < data.len() && !self.is_closing() {
                        // A frame started in this read: its deadline runs from now.
                        self.rx_started = env.now;
                        let tail = &data[consumed..];
                        let mut rx = std::mem::take(&mut self.rx);
                        let r = self.reserve(&mut rx, tail);
                        if r.is_ok() {
                            rx.extend_from_slice(tail);
                        }
                        self.rx = rx;
                        r
                    } else {
                        Ok(())
                    }
                }
                Err(e) => Err(e),
            }
        } else {
            // A partial frame is pending: reassemble once into the connection's buffer.
            let mut rx = std::mem::take(&mut self.rx);
            if let Err(e) = self.reserve(&mut rx, data) {
                self.rx = rx;
                self.fail(e.clone(), env);
                self.recharge();
                return Err(e);
            }
            rx.extend_from_slice(data);
            let r = self.process(&rx, env).map(|consumed| {
                if consumed > 0 && self.is_open() {
                    // The partial frame completed; what is left started in this read.
                    self.rx_started = env.now;
                }
                rx.drain(..consumed);
            });
            if self.is_closing() {
                rx.clear();
            }
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
        self.recharge();
        result
    }

    /// Makes room in `rx` for `data`, growing it to the whole frame at once when its header
    /// says how long it is, within the core's buffer budget.
    fn reserve(&mut self, rx: &mut Vec<u8>, data: &[u8]) -> Result<(), ConnError> {
        let needed = rx.len() + data.len();
        if needed <= rx.capacity() {
            return Ok(());
        }
        // The frame's declared length (validated against max_frame_size when it is parsed);
        // reserving it at once avoids regrowing a large frame's buffer several times.
        let mut head = [0u8; 4];
        for (i, b) in rx.iter().chain(data).take(4).enumerate() {
            head[i] = *b;
        }
        let max = self
            .settings
            .as_ref()
            .map_or(netron_codec::handshake::HANDSHAKE_MAX_FRAME, |s| {
                s.limits.max_frame_size
            }) as usize;
        // Before the handshake completed the first bytes are the preface, not a length.
        let declared = if self.is_open() {
            (u32::from_le_bytes(head) as usize).min(max)
        } else {
            needed
        };
        let target = needed.max(declared.min(needed + max));
        let grow = target - rx.capacity();
        let b = &self.cfg.buffers;
        if b.used.get().saturating_add(grow) > b.limit {
            return Err(ConnError {
                counter: "buffer_budget",
                status: StatusCode::ResourceExhausted,
                message: format!(
                    "the core's buffers for partial and decompressed frames are full \
                     (CoreConfig::max_buffer_bytes = {} bytes); a {target}-byte frame buffer \
                     does not fit now",
                    b.limit
                ),
            });
        }
        rx.reserve_exact(target - rx.len());
        Ok(())
    }

    /// Re-counts this connection's buffer capacity against the core's budget.
    pub(crate) fn recharge(&mut self) {
        let now = self.rx.capacity() + self.scratch.capacity();
        let b = &self.cfg.buffers;
        b.used.set(
            b.used
                .get()
                .saturating_sub(self.charged)
                .saturating_add(now),
        );
        self.charged = now;
    }

    /// Checks that decompressing `payload` (its declared size) fits the core's buffer budget.
    pub(crate) fn check_decompress(
        &self,
        payload: &[u8],
        scratch: &Vec<u8>,
    ) -> Result<(), ConnError> {
        let declared = self
            .decompressor
            .declared_size(payload)
            .map_err(netron_codec::DecodeError::from)?;
        let grow = declared.saturating_sub(scratch.capacity());
        let b = &self.cfg.buffers;
        if grow > 0 && b.used.get().saturating_add(grow) > b.limit {
            return Err(ConnError {
                counter: "buffer_budget",
                status: StatusCode::ResourceExhausted,
                message: format!(
                    "the core's buffers for partial and decompressed frames are full \
                     (CoreConfig::max_buffer_bytes = {} bytes); a payload declaring {declared} \
                     decompressed bytes does not fit now",
                    b.limit
                ),
            });
        }
        Ok(())
    }

    /// Queues an Error frame (id 0) for `e`, fails in-flight calls with a status that says
    /// why, and marks the connection closing.
    pub(crate) fn fail(&mut self, e: ConnError, env: &mut Env<'_>) {
        env.stats.count_error(e.counter);
        // Before the handshake completed the peer may not speak Netron at all: the handshake
        // already queued a Reject where one is due, and nothing else is sent.
        if self.is_open() {
            let msg = truncate_message(&e.message);
            let _ = self.queue(|c, b| c.control.error(b, 0, e.status, msg, &[]).map(|_| ()));
        }
        self.close_with(e);
    }

    /// Marks the connection closing for `e` (no frame queued) and fails the calls in flight.
    pub(crate) fn close_with(&mut self, e: ConnError) {
        if self.closing_since.is_none() {
            self.closing_since = Some(self.last_rx.max(self.rx_started));
        }
        let reason = format!("connection closed: {}", e.message);
        self.calls
            .fail_all(&crate::Status::new(e.status, reason.clone()));
        self.close_reason.get_or_insert(reason);
        self.rx.clear();
        self.state = State::Closing;
    }

    /// Starts the closing timer at `now` (the core calls this when it sees the connection
    /// closing, so the linger bound runs from the core's clock).
    pub(crate) fn closing_at(&mut self, now: Instant) {
        if self.closing_since.is_none_or(|t| t > now) {
            self.closing_since = Some(now);
        }
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
        // Every header block is decoded, in order, whatever becomes of the frame it rides on
        // (refused, unknown id, late, cancelled): the peer's encoder already moved its table
        // (docs/protocol.md §9.1). A kind without headers has an empty block (checked by
        // the codec), which decodes to nothing.
        if frame.kind().may_have_headers() {
            self.dec
                .decode_into(frame.header_block(), &mut self.headers)
                .map_err(netron_codec::DecodeError::from)?;
        }
        // Every control body is verified the same way, before anything acts on the frame.
        netron_codec::control::verify_body(&frame)?;
        match frame.kind() {
            FrameKind::Request => self.on_request(frame, env),
            FrameKind::Error if frame.id() == 0 => {
                // The peer reports a connection error and closes.
                let body = netron_codec::control::read_error(&frame)?;
                env.stats.count_error("peer_error");
                let status = netron_codec::control::status(body.status());
                let message = format!(
                    "the peer closed the connection: {}",
                    truncate_message(body.message().unwrap_or(""))
                );
                self.calls
                    .fail_all(&crate::Status::new(status, message.clone()));
                self.close_reason.get_or_insert(message);
                self.state = State::Closing;
                Ok(())
            }
            FrameKind::Response | FrameKind::Error => self.on_reply(frame, env),
            FrameKind::Ping => {
                self.charge_idle_frame(env)?;
                self.queue(|_, b| b.empty_frame(FrameKind::Pong, frame.id(), frame.arg()))
            }
            FrameKind::Pong => {
                if self.ping_outstanding.is_none() {
                    env.stats.count_error("unsolicited_pong");
                    self.charge_idle_frame(env)?;
                }
                Ok(())
            }
            FrameKind::Cancel => {
                env.stats.cancels_in += 1;
                let id = frame.id();
                // Every Cancel costs budget: work started and thrown away is what a
                // rapid-reset flood is made of. Requests refund half, so a caller may still
                // cancel one call in two.
                self.charge_idle_frame(env)?;
                if self.inflight.contains(&id) {
                    // An async call still runs: the core drops its future and answers
                    // Error(Cancelled), the call's final frame. (Otherwise the call was
                    // already answered: the Cancel crossed the reply.)
                    self.cancels.push(id);
                }
                Ok(())
            }
            FrameKind::GoAway => {
                let g = netron_codec::control::read_go_away(&frame)?;
                self.on_go_away(g.last_id(), env);
                Ok(())
            }
            FrameKind::Hello | FrameKind::Welcome | FrameKind::Reject => Err(ConnError {
                counter: "unexpected_handshake_frame",
                status: StatusCode::Internal,
                message: format!("{} after the handshake", frame.kind().name()),
            }),
            // Streams and events are not served yet: refuse the exchange (its final frame),
            // keep the connection.
            FrameKind::StreamOpen | FrameKind::Subscribe => {
                let id = frame.id();
                self.check_peer_id(id)?;
                env.stats.count_error("unimplemented_kind");
                self.answer_error(
                    id,
                    StatusCode::Unimplemented,
                    "streams and events are not served by this engine yet",
                )
            }
            _ => {
                env.stats.count_error("ignored_frame");
                self.charge_idle_frame(env)
            }
        }
    }

    /// Charges one frame that does no work against the peer's budget; a peer that spent it
    /// gets a connection error (ResourceExhausted) and is closed (docs/protocol.md §17).
    pub(crate) fn charge_idle_frame(&mut self, env: &mut Env<'_>) -> Result<(), ConnError> {
        if self.budget.charge(env.now) {
            return Ok(());
        }
        Err(ConnError {
            counter: "idle_frame_budget",
            status: StatusCode::ResourceExhausted,
            message: format!(
                "too many frames that do no work (cancels of answered calls, pings, ignored \
                 frames): more than {} in a burst or {} a second \
                 (CoreConfig::idle_frame_budget)",
                self.cfg.idle_frames.burst, self.cfg.idle_frames.per_sec
            ),
        })
    }

    /// Checks the id of an exchange the peer opens (docs/protocol.md §14).
    pub(crate) fn check_peer_id(&mut self, id: u32) -> Result<(), ConnError> {
        let err = |counter, message: String| {
            Err(ConnError {
                counter,
                status: StatusCode::Internal,
                message,
            })
        };
        if id == 0 {
            return err("zero_id", "id 0 on a frame that opens an exchange".into());
        }
        // The initiator (the side that sent Hello: our peer if we are the server) uses odd ids.
        let peer_is_initiator = self.role == Role::Server;
        if (id % 2 == 1) != peer_is_initiator {
            return err(
                "wrong_id_parity",
                format!(
                    "id {id} has the parity of this side's own ids (the connection's initiator \
                     opens odd ids, the acceptor even ids)"
                ),
            );
        }
        if self.inflight.contains(&id) {
            return err(
                "duplicate_id",
                format!("id {id} is already in use by a call that has not been answered"),
            );
        }
        self.last_peer_id = id;
        Ok(())
    }

    /// A GoAway from the peer: no new calls on this connection; calls it did not process are
    /// failed (retryable); answer with our own GoAway and drain.
    fn on_go_away(&mut self, last_id: u32, env: &mut Env<'_>) {
        self.peer_going_away = true;
        env.stats.count_error("peer_go_away");
        self.calls.fail_after(
            last_id,
            &crate::Status::unavailable(
                "the peer is going away (GoAway) and did not process this call; retry it elsewhere",
            ),
        );
        self.go_away("the peer sent GoAway");
    }

    /// Releases a scratch buffer after use: kept for reuse only if it is small.
    pub(crate) fn release_scratch(&mut self, mut scratch: Vec<u8>) {
        if scratch.capacity() > KEEP_BUFFER {
            scratch = Vec::new();
        }
        self.scratch = scratch;
        if self.scratch.capacity() != 0 || self.charged != 0 {
            self.recharge();
        }
    }

    /// Refuses an outgoing message that the peer's negotiated limits (or this side's output
    /// backlog) would refuse, before anything of it is encoded: header compression cannot
    /// roll back, so a frame must never fail after its header block was written.
    pub(crate) fn check_outgoing(
        &self,
        headers: &[netron_codec::hpack::Header<'_>],
        payload: &[u8],
    ) -> Result<(), crate::Status> {
        let Some(s) = &self.settings else {
            return Err(crate::Status::unavailable("connection is not open yet"));
        };
        let block = netron_codec::hpack::HeaderEncoder::max_encoded_len(headers);
        if block > u16::MAX as usize {
            return Err(crate::Status::new(
                StatusCode::ResourceExhausted,
                format!(
                    "the header block may take up to {block} bytes, above the 65535 a frame \
                     can carry (shorten the service, method or metadata)"
                ),
            ));
        }
        // The payload is sent raw when compression does not shrink it: bound by the raw size.
        let frame = netron_codec::HEADER_LEN + block + payload.len();
        let max = s.limits.max_frame_size as usize;
        if frame > max {
            return Err(crate::Status::new(
                StatusCode::ResourceExhausted,
                format!(
                    "message of {} bytes exceeds the negotiated max_frame_size of {max} bytes \
                     (frame of up to {frame} bytes with its headers)",
                    payload.len()
                ),
            ));
        }
        let backlog = self.backlog_bytes();
        if backlog > 0 && backlog + frame > self.cfg.max_backlog_bytes {
            return Err(crate::Status::new(
                StatusCode::ResourceExhausted,
                format!(
                    "{backlog} bytes are already waiting for the peer to read; a {frame}-byte \
                     frame would exceed CoreConfig::max_backlog_bytes ({})",
                    self.cfg.max_backlog_bytes
                ),
            ));
        }
        Ok(())
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

    /// Whether the connection has nothing left to do and should close gracefully: the peer
    /// ended its side (EOF, or GoAway in both directions) and every call in either direction
    /// is answered. The core closes once the output is written too.
    pub(crate) fn drained(&self) -> bool {
        let ended = self.peer_eof || (self.going_away && self.peer_going_away);
        ended && self.inflight.is_empty() && self.calls.len() == 0 && self.spawns.is_empty()
    }

    /// The peer closed its sending side (EOF). Calls this side opened can get no answer any
    /// more and fail; calls it serves finish and are answered (half-close), then it closes.
    pub(crate) fn on_peer_eof(&mut self, now: Instant) {
        if self.peer_eof {
            return;
        }
        self.peer_eof = true;
        let reason = if self.rx.is_empty() || !self.is_open() {
            "the peer closed the connection"
        } else {
            "the peer closed the connection in the middle of a frame"
        };
        self.rx.clear();
        self.calls.fail_all(&crate::Status::unavailable(reason));
        self.close_reason.get_or_insert_with(|| reason.to_owned());
        if !self.is_open() {
            self.state = State::Closing;
        }
        self.closing_at(now);
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

    /// Time-driven work: expires calls past their deadline (sending Cancel), closes a
    /// connection whose handshake or frame stalled or whose output is blocked, pings an idle
    /// connection, and reports a dead peer. Returns `Err` when the connection must close now
    /// (the Error frame, if it can still be carried, was queued).
    pub(crate) fn on_timer(
        &mut self,
        env: &mut Env<'_>,
        expired: &mut Vec<u32>,
    ) -> Result<(), ConnError> {
        let now = env.now;
        if let Some(since) = self.closing_since {
            if now.saturating_duration_since(since) >= self.cfg.close_linger {
                return Err(ConnError {
                    counter: "close_linger",
                    status: StatusCode::Unavailable,
                    message: format!(
                        "closing took longer than CoreConfig::close_linger ({:?})",
                        self.cfg.close_linger
                    ),
                });
            }
            if self.is_closing() {
                return Ok(());
            }
        }
        expired.clear();
        self.calls.expire(now, expired);
        for &id in expired.iter() {
            env.stats.deadline_exceeded += 1;
            let _ = self.queue(|_, b| b.empty_frame(FrameKind::Cancel, id, 0));
        }
        let stall = self.cfg.stall_timeout;
        if self.awaiting_more() && now.saturating_duration_since(self.rx_started) >= stall {
            let what = if self.is_open() {
                "a frame was not completed"
            } else {
                "the handshake was not completed"
            };
            let e = ConnError {
                counter: "stalled",
                status: StatusCode::DeadlineExceeded,
                message: format!(
                    "{what} within CoreConfig::stall_timeout ({stall:?}) of its first byte"
                ),
            };
            self.fail(e.clone(), env);
            return Err(e);
        }
        if let Some(since) = self.write_blocked_since {
            if now.saturating_duration_since(since) >= stall {
                // The peer takes no bytes: an Error frame could not reach it either.
                let e = ConnError {
                    counter: "write_stalled",
                    status: StatusCode::Unavailable,
                    message: format!(
                        "the peer took no bytes for CoreConfig::stall_timeout ({stall:?}) \
                         while output was waiting"
                    ),
                };
                env.stats.count_error(e.counter);
                self.close_with(e.clone());
                return Err(e);
            }
        }
        let keepalive = self.cfg.keepalive;
        if !self.is_open() || keepalive.is_zero() {
            return Ok(());
        }
        if let Some(since) = self.ping_outstanding {
            let dead_after = self.cfg.dead_after;
            if now.saturating_duration_since(since) >= dead_after {
                let e = ConnError {
                    counter: "dead_peer",
                    status: StatusCode::Unavailable,
                    message: format!(
                        "no answer to a keepalive ping within CoreConfig::dead_after \
                         ({dead_after:?}); the peer is unreachable or frozen"
                    ),
                };
                self.fail(e.clone(), env);
                return Err(e);
            }
        } else if now.saturating_duration_since(self.last_rx) >= keepalive {
            self.ping_outstanding = Some(now);
            self.queue(|_, b| b.empty_frame(FrameKind::Ping, 0, 0))?;
        }
        Ok(())
    }

    /// When this connection next needs `on_timer`: the earliest of its calls' deadlines, the
    /// stall time of a partial frame or handshake or of blocked output, the keepalive or
    /// dead-peer time, and the linger bound of a closing connection.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        let mut next = self.calls.next_deadline;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        // Durations come from validated configuration, but an `Instant` far in the future
        // must never panic: an unrepresentable time means "never".
        if let Some(since) = self.closing_since {
            consider(since.checked_add(self.cfg.close_linger));
        }
        if self.is_closing() {
            return next;
        }
        let stall = self.cfg.stall_timeout;
        if self.awaiting_more() {
            consider(self.rx_started.checked_add(stall));
        }
        if let Some(since) = self.write_blocked_since {
            consider(since.checked_add(stall));
        }
        if self.is_open() && !self.cfg.keepalive.is_zero() {
            match self.ping_outstanding {
                Some(since) => consider(since.checked_add(self.cfg.dead_after)),
                None => consider(self.last_rx.checked_add(self.cfg.keepalive)),
            }
        }
        next
    }

    /// Starts a graceful shutdown: tells the peer no new calls will be accepted (GoAway with
    /// the last id the peer opened), lets what is in flight finish.
    pub(crate) fn go_away(&mut self, why: &str) {
        if self.going_away || !self.is_open() {
            return;
        }
        self.going_away = true;
        let last = self.last_peer_id;
        let _ = self.queue(|c, b| {
            c.control
                .go_away(b, last, StatusCode::Unavailable, why)
                .map(|_| ())
        });
    }

    /// The socket is gone (closed, failed, or the core stopped): fail what is in flight with
    /// `why`.
    pub(crate) fn on_closed(&mut self, why: &str) {
        let reason = self.close_reason.clone().unwrap_or_else(|| why.to_owned());
        self.calls.fail_all(&crate::Status::unavailable(reason));
        self.state = State::Closing;
    }
}

/// Longest message text this side puts in an Error frame or echoes from a peer: messages can
/// carry user input (names, metadata), which must not be echoed unbounded.
pub(crate) const MAX_MESSAGE: usize = 512;

/// `msg` cut to [`MAX_MESSAGE`] bytes at a character boundary.
pub(crate) fn truncate_message(msg: &str) -> &str {
    if msg.len() <= MAX_MESSAGE {
        return msg;
    }
    let mut end = MAX_MESSAGE;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    &msg[..end]
}

#[cfg(test)]
mod tests;
