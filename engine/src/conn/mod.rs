//! The connection state machine, sans I/O, with a poll contract in the manner of quinn-proto:
//! bytes or records in, batches out, timers and events, no socket, clock or thread of its own.
//!
//! It owns the connection's codec state (handshake, header encoder/decoder, payload
//! (de)compression, the batch being filled and the full batches waiting for the transport),
//! the calls it opened and those it serves, and its policies: stall and write-stall timeouts,
//! keepalive, the linger bound, the budget of frames that do no work, the buffer budget, and
//! the output backlog. Everything here is tested with two `Connection`s exchanging buffers
//! on virtual time (`tests.rs`), no sockets involved.

mod budget;
mod client;
mod config;
mod event_datagrams;
pub(crate) mod events;
mod header_coding;
mod header_streams;
mod ids;
mod reassembly;
pub(crate) mod record;
mod server;
pub(crate) mod stream;
mod stream_end;
mod stream_held;
mod stream_send;
mod timers;

use budget::Budget;
pub(crate) use budget::BufferBudget;
pub(crate) use config::ConnConfig;
use config::effective_keepalive;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use netron_codec::compress::{Compressor, Decompressor};
use netron_codec::control::ControlEncoder;
use netron_codec::handshake::{
    ClientHandshake, ClientProgress, ServerHandshake, ServerProgress, Settings,
};
use netron_codec::hpack::{HeaderEncoder, HeaderList};

use header_coding::{Block, HeaderRecv, HeaderSend};
use netron_codec::{
    BatchEncoder, DecodeError, EncodeError, Frame, FrameIter, FrameKind, HandshakeError, Limits,
    StatusCode, TxBuf,
};

pub(crate) use client::{CallSpec, Caller, PendingCalls};
pub(crate) use events::{Change, Enqueued, EventApp, Published};
pub(crate) use stream::{Outgoing, StreamApp, StreamSpec, fail_app};

use crate::service::Registry;
use crate::stats::CoreStats;

/// An async handler's future to run on the core's executor, or a deferred call to track.
pub(crate) struct Spawn {
    pub id: u32,
    /// `None`: a deferred call (answered through the inbox with `token`).
    pub future: Option<crate::service::HandlerFuture>,
    pub token: u32,
    pub deadline: Option<Instant>,
}

/// Work a connection asks its core to do (see [`Connection::poll_event`]).
pub(crate) enum Event {
    /// Run this async handler's future on the core's executor.
    Spawn(Spawn),
    /// Drop the future of async call `id` (a Cancel arrived); then answer it with
    /// [`Connection::abandon_async`].
    Cancel(u32),
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
    /// The core's inbox and this connection, for deferred reply handles (`None` in tests
    /// that drive a connection without a core: deferred methods then answer `Internal`).
    pub origin: Option<crate::dispatch::Origin<'a>>,
}

/// One connection's state machine. `C` is where outcomes of calls it opened go ([`Caller`]).
///
/// Call order, for its driver (the core):
/// 1. `handle_input(bytes)` for every chunk of a byte stream, in order, or `handle_record`
///    for every record of a record transport (`conn/record.rs`, protocol.md §26), never
///    both on one connection; `handle_eof` when the peer closed its sending side;
///    `handle_closed` when the transport is gone;
/// 2. after each of those, and after `handle_timeout`, `complete_async` and
///    `abandon_async`: `poll_event` until `None` (async handlers to start, cancellations),
///    then `poll_timeout` to (re)arm its one timer;
/// 3. `handle_timeout(now)` when that time has come; an `Err` means close now;
/// 4. `poll_transmit` for the next batch to write while `wants_write`, and `recycle` the
///    buffer once written; while a write is blocked, set `write_blocked_since`;
/// 5. close the transport when `is_closing` (or `drained`) and nothing is left to write, or
///    at once when `handle_timeout` says so.
///
/// Outgoing calls: `start_call` (refused before anything is encoded if the peer's limits or
/// the backlog would refuse it), `cancel_call`.
pub(crate) struct Connection<C: Caller> {
    role: Role,
    state: State,
    /// Bytes of a partial frame (or of the handshake) carried over to the next receive.
    rx: Vec<u8>,
    /// Header coding (HPACK, or QPACK on `quic://`: conn/header_coding.rs).
    dec: HeaderRecv,
    enc: HeaderSend,
    tx: BatchEncoder,
    /// Full batches waiting for the socket, oldest first, with their frame counts.
    tx_full: VecDeque<(TxBuf, u32)>,
    /// Empty buffers to reuse for batches.
    spare: Vec<Vec<u8>>,
    control: ControlEncoder,
    compressor: Compressor,
    decompressor: Decompressor,
    scratch: Vec<u8>,
    headers: HeaderList,
    settings: Option<Settings>,
    pub(crate) calls: PendingCalls<C>,
    /// The peer sent GoAway: no new calls on this connection.
    pub(crate) peer_going_away: bool,
    /// We sent GoAway.
    pub(crate) going_away: bool,
    /// When bytes last arrived.
    pub(crate) last_rx: Instant,
    /// A Ping we sent is unanswered since this time.
    pub(crate) ping_outstanding: Option<Instant>,
    /// Async calls to start (polled by the core as events).
    spawns: VecDeque<Spawn>,
    /// Cancel frames received (server role), for the core to drop those calls' futures.
    cancels: VecDeque<u32>,
    /// Ids of the peer's calls this side serves asynchronously and has not answered yet.
    pub(crate) inflight: rustc_hash::FxHashSet<u32>,
    /// The dispatcher's per-connection state (conn/server.rs).
    serve: Option<Box<server::ServeState>>,
    /// Streams and their windows (conn/stream.rs), made on first use.
    streams: Option<Box<stream::Streams>>,
    /// Subscriptions both ways (conn/events.rs), made on first use.
    events: Option<Box<events::Events>>,
    /// The latest id (in serial order, §14.1) of the exchanges the peer opened that arrived:
    /// GoAway's `last_id`. The latest, not the last to arrive: over QUIC each exchange has
    /// its own stream and they arrive in any order (§27.2).
    last_peer_id: u32,
    /// The `last_id` our GoAway carried (meaningful once `going_away`): exchanges the peer
    /// opened up to it are served even when they arrive after the GoAway (QUIC), later ones
    /// are refused ([`Connection::refuses_after_go_away`]).
    go_away_last: u32,
    /// The peer closed its sending side (EOF): finish what is in flight, then close.
    pub(crate) peer_eof: bool,
    /// When the handshake began or the partial frame in `rx` got its first byte.
    rx_started: Instant,
    /// When the connection was created: the handshake must complete within
    /// `handshake_timeout` of it.
    opened_at: Instant,
    /// The keepalive in force: this side's, or the server's advertised interval when that is
    /// shorter and not zero (client role, once the Welcome arrived). Zero: never ping.
    pub(crate) keepalive: Duration,
    /// When output started waiting behind a send the peer does not take (set by the core).
    pub(crate) write_blocked_since: Option<Instant>,
    /// Since when the connection is closing (closed at the latest `close_linger` later).
    closing_since: Option<Instant>,
    /// Why the connection is closing, for calls that try to use it.
    pub(crate) close_reason: Option<String>,
    /// The status code of the connection error this side closes for (the Error(0) it
    /// queued; its text is `close_reason`), for transports that carry it in their own close
    /// (QUIC's CONNECTION_CLOSE, §27.1).
    pub(crate) close_code: Option<StatusCode>,
    /// Why the handshake failed, when it was the peer's refusal or the handshake timeout (for
    /// the connecting caller's [`crate::ConnectError`]).
    pub(crate) handshake_failure: Option<crate::Status>,
    /// Budget of frames that do no work, in quarter tokens.
    budget: Budget,
    /// Server role: the frames being handled arrived in QUIC 0-RTT (the link says so,
    /// `Input::EarlyData`): replayable, so only idempotent calls are served.
    pub(crate) early_data: bool,
    /// Client role: the connection resumed with QUIC 0-RTT and its handshake is not done;
    /// what is left of the early-call budget ([`Connection::early_call_fits`]).
    early: Option<Box<EarlyBudget>>,
    /// Client role: the handshake completed since [`Connection::take_opened`] last looked.
    opened: bool,
    /// Bytes of `rx` and `scratch` capacity counted against the core's buffer budget.
    charged: usize,
    cfg: std::rc::Rc<ConnConfig>,
}

impl<C: Caller> Drop for Connection<C> {
    fn drop(&mut self) {
        let b = &self.cfg.buffers;
        b.used.set(b.used.get().saturating_sub(self.charged));
    }
}

impl<C: Caller> std::fmt::Debug for Connection<C> {
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

/// Calls a client sends in QUIC 0-RTT at most, and their request bytes (payload, names and
/// metadata) at most; later calls wait for the handshake (docs/quic.md "0-RTT"). The link
/// keeps a copy of the early data until the server accepts it, to send it again if it
/// rejects it: these bound that copy.
pub(crate) const EARLY_CALLS: u32 = 32;
pub(crate) const EARLY_BYTES: usize = 64 << 10;

/// What a client remembers of a server's header table between connections, for its next
/// 0-RTT connect (kept in `netron_quic::ClientConfig::remember`, shared by the configuration's
/// clones; docs/quic.md "0-RTT"). Negotiation keeps the smaller of the two offers (§13), so
/// only a connection whose own offer was not 0 learns whether the server keeps a table; the
/// early calls' format then follows from the next connection's own offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableMemo {
    /// The server negotiated a table with an offer of ours that was not 0: QPACK.
    Table,
    /// The server negotiated 0 against a non-zero offer of ours: it keeps no table.
    NoTable,
    /// Connected before, but with an offer of 0: nothing learned of the server's table.
    Unknown,
}

impl TableMemo {
    /// The value kept in the client configuration.
    pub(crate) fn to_u64(self) -> u64 {
        match self {
            TableMemo::NoTable => 0,
            TableMemo::Table => 1,
            TableMemo::Unknown => 2,
        }
    }

    /// A kept value (anything else is taken as nothing learned).
    pub(crate) fn from_u64(v: u64) -> TableMemo {
        match v {
            0 => TableMemo::NoTable,
            1 => TableMemo::Table,
            _ => TableMemo::Unknown,
        }
    }
}

/// Appended to the reason of a connection the server failed during its 0-RTT phase.
pub(crate) const EARLY_FAILED_HINT: &str = " (a 0-RTT connect: its early calls were coded for \
    the header table the last connection to this server negotiated; the next connect does a \
    full handshake and learns the server's current setting)";

/// Appended by a server to a header-block error found in a 0-RTT request.
pub(crate) const EARLY_HEADER_HINT: &str = " (in a 0-RTT request: the client coded it for the \
    header table its last connection negotiated, and this connection negotiated another \
    header_table_size; its next connect learns this one)";

/// What is left of a client's 0-RTT budget ([`EARLY_CALLS`], [`EARLY_BYTES`]).
#[derive(Debug, Clone, Copy)]
struct EarlyBudget {
    calls: u32,
    bytes: usize,
    /// The server refused the handshake after calls went in 0-RTT
    /// ([`Connection::take_early_failed`]).
    failed: bool,
}

/// The bytes a call takes from the 0-RTT budget: names, payload and metadata.
fn early_bytes(spec: &client::CallSpec<'_>) -> usize {
    spec.service.len()
        + spec.method.len()
        + spec.payload.len()
        + spec
            .metadata
            .map_or(0, |m| m.iter().map(|(n, v)| n.len() + v.len()).sum())
}

/// Limits in force before the handshake completes.
fn handshake_limits() -> Limits {
    Limits::default().with_max_frame_size(netron_codec::handshake::HANDSHAKE_MAX_FRAME)
}

impl<C: Caller> Connection<C> {
    /// A new connection. A client queues its preface and Hello at once.
    /// A connection in `role` under `config` (shared by the core's connections: one copy per
    /// core, not per connection).
    pub(crate) fn new(role: Role, config: &std::rc::Rc<ConnConfig>, now: Instant) -> Self {
        let mut c = Connection {
            role,
            state: State::Open,
            rx: Vec::new(),
            dec: HeaderRecv::Pending(Vec::new()),
            enc: HeaderSend::Hpack(HeaderEncoder::new(0)),
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
            spawns: VecDeque::new(),
            cancels: VecDeque::new(),
            inflight: rustc_hash::FxHashSet::default(),
            serve: None,
            streams: None,
            events: None,
            last_peer_id: 0,
            go_away_last: 0,
            peer_eof: false,
            rx_started: now,
            opened_at: now,
            keepalive: config.keepalive,
            write_blocked_since: None,
            closing_since: None,
            close_reason: None,
            close_code: None,
            handshake_failure: None,
            budget: Budget::new(config.idle_frames, now),
            early_data: false,
            early: None,
            opened: false,
            charged: 0,
            cfg: std::rc::Rc::clone(config),
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

    /// Client role: the link resumed a QUIC session with 0-RTT, so calls marked idempotent
    /// may go now, before the Welcome (docs/protocol.md §27.3): header blocks without dynamic
    /// table references (Required Insert Count 0) until the settings are known, frames within
    /// the handshake's limits, at most [`EARLY_CALLS`] calls and [`EARLY_BYTES`].
    /// `memo`: what this client remembered of the server's header table ([`TableMemo`]).
    /// The negotiated size is the smaller offer, so the format the server will decode (QPACK,
    /// or static-only HPACK for 0) follows from our own offer and whether the server keeps a
    /// table; when that is not known, no call goes early (they wait for the Welcome).
    pub(crate) fn enter_early(&mut self, memo: TableMemo) {
        let qpack = match (self.cfg.client.header_table_size, memo) {
            (0, _) => false,
            (_, TableMemo::Table) => true,
            (_, TableMemo::NoTable) => false,
            (_, TableMemo::Unknown) => return,
        };
        if self.role == Role::Client
            && self.cfg.quic
            && matches!(self.state, State::ClientHandshake(_))
        {
            self.enc = HeaderSend::early(qpack);
            self.early = Some(Box::new(EarlyBudget {
                calls: EARLY_CALLS,
                bytes: EARLY_BYTES,
                failed: false,
            }));
        }
    }

    /// Client role: in the 0-RTT phase (after [`Connection::enter_early`], until the Welcome).
    pub(crate) fn is_early(&self) -> bool {
        self.early.is_some() && matches!(self.state, State::ClientHandshake(_))
    }

    /// Whether `spec` may start now, in 0-RTT: marked idempotent and within what is left of
    /// the budget.
    pub(crate) fn early_call_fits(&self, spec: &client::CallSpec<'_>) -> bool {
        spec.idempotent
            && self.is_early()
            && self
                .early
                .as_ref()
                .is_some_and(|b| b.calls > 0 && early_bytes(spec) <= b.bytes)
    }

    /// Client role: once, after the handshake completed, what it taught of the server's
    /// header table (the core has a `quic://` link remember it for the next 0-RTT connect).
    pub(crate) fn take_opened(&mut self) -> Option<TableMemo> {
        if !std::mem::take(&mut self.opened) {
            return None;
        }
        let negotiated = self.settings.as_ref()?.header_table_size;
        Some(match (self.cfg.client.header_table_size, negotiated) {
            // The smaller offer won: ours was 0, so the server's is not known.
            (0, _) => TableMemo::Unknown,
            (_, 0) => TableMemo::NoTable,
            _ => TableMemo::Table,
        })
    }

    /// Client role: whether the server refused the handshake after calls went in 0-RTT
    /// (once). What this connect assumed of the server's header table ([`TableMemo`]) may be
    /// what failed: the core has the link forget it, so the next connect learns it again.
    pub(crate) fn take_early_failed(&mut self) -> bool {
        self.early
            .as_mut()
            .is_some_and(|b| std::mem::take(&mut b.failed))
    }

    /// Takes a call sent in 0-RTT from the budget.
    fn spend_early(&mut self, spec: &client::CallSpec<'_>) {
        let bytes = early_bytes(spec);
        if let Some(b) = &mut self.early {
            b.calls = b.calls.saturating_sub(1);
            b.bytes = b.bytes.saturating_sub(bytes);
        }
    }

    /// Whether the handshake completed and the connection is usable.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// Whether a fatal error was queued; the driver closes after flushing.
    pub(crate) fn is_closing(&self) -> bool {
        matches!(self.state, State::Closing)
    }

    /// The frame limits in force: the negotiated ones, or the handshake's until then.
    fn limits(&self) -> Limits {
        self.settings
            .as_ref()
            .map_or_else(handshake_limits, |s| s.limits)
    }

    fn apply_settings(&mut self, s: Settings) -> Result<(), ConnError> {
        let packed = s.features & netron_codec::features::PACKED_TRACE != 0;
        let quic = self.cfg.quic;
        self.enc = HeaderSend::new(quic, s.header_table_size, packed);
        let started = self.dec.start(
            quic,
            s.header_table_size,
            s.limits.max_header_list_size as usize,
            packed,
        );
        // Locally, batches on a stream socket are bounded by the negotiated limits too.
        self.tx.set_limits(s.limits);
        self.compressor = Compressor::new(s.compression, s.compression_threshold as usize);
        self.decompressor = Decompressor::new(s.compression, s.limits.max_decompressed_size);
        if self.role == Role::Client {
            self.keepalive = effective_keepalive(self.cfg.keepalive, s.keepalive_interval_ms);
        }
        self.opened = self.role == Role::Client;
        self.settings = Some(s);
        self.state = State::Open;
        self.early = None;
        // Encoder-stream bytes that came before the handshake completed were applied now.
        started.map_err(|e| netron_codec::DecodeError::from(e).into())
    }

    /// Feeds received bytes. On `Err` the connection is closing: an Error frame (id 0) was
    /// queued for the peer, and in-flight calls were failed. Bytes that arrive once the
    /// connection is closing are not looked at.
    pub(crate) fn handle_input(&mut self, data: &[u8], env: &mut Env<'_>) -> Result<(), ConnError> {
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
            self.process_reassembled(rx, env)
        };
        if let Err(e) = &result {
            self.fail(e.clone(), env);
        }
        self.recharge();
        result
    }

    /// Queues an Error frame (id 0) for `e`, fails in-flight calls with a status that says
    /// why, and marks the connection closing.
    pub(crate) fn fail(&mut self, mut e: ConnError, env: &mut Env<'_>) {
        env.stats.count_error(e.counter);
        if self.early_data && (e.counter.starts_with("header_") || e.counter.starts_with("qpack_"))
        {
            // A header block of a 0-RTT request: most likely coded for another header table
            // size than this connection negotiated (the server's changed since the client's
            // last connection), which the client learns on its next connect.
            e.message.push_str(EARLY_HEADER_HINT);
        }
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
        self.close_code.get_or_insert(e.status);
        let reason = format!("connection closed: {}", e.message);
        self.fail_all(
            &crate::Status::new(e.status, reason.clone())
                .with_origin(crate::status::Origin::Closed),
        );
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
    /// Processes the reassembly buffer `rx` (taken out of `self.rx`, bytes already appended),
    /// keeps what is left of it (a partial frame) and puts it back.
    fn process_reassembled(&mut self, mut rx: Vec<u8>, env: &mut Env<'_>) -> Result<(), ConnError> {
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
    }

    fn process(&mut self, buf: &[u8], env: &mut Env<'_>) -> Result<usize, ConnError> {
        self.process_frames(buf, false, env)
    }

    /// Runs the handshake on `buf`, then dispatches its frames. `batch`: `buf` is one record
    /// of a record transport, checked as a batch (docs/protocol.md §10.2: a frame running
    /// past its end is an error, not a wait for more bytes).
    fn process_frames(
        &mut self,
        buf: &[u8],
        batch: bool,
        env: &mut Env<'_>,
    ) -> Result<usize, ConnError> {
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
                        self.apply_settings(settings)?;
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
            State::ClientHandshake(hs) => match hs.handle(buf).inspect_err(|e| {
                if let HandshakeError::Rejected { status, reason, .. } = e {
                    let mut reason = reason.clone();
                    if let Some(b) = &mut self.early {
                        // The early calls' header format may be what failed: the core has
                        // the link forget it (`take_early_failed`).
                        b.failed = true;
                        reason.push_str(EARLY_FAILED_HINT);
                    }
                    self.handshake_failure = Some(
                        crate::Status::new(*status, reason)
                            .with_origin(crate::status::Origin::HandshakeRefused),
                    );
                }
            })? {
                ClientProgress::NeedMore { .. } => return Ok(0),
                ClientProgress::Done {
                    settings,
                    consumed: n,
                } => {
                    self.apply_settings(settings)?;
                    env.stats.handshakes += 1;
                    consumed = n;
                }
            },
            State::Open => {}
            State::Closing => return Ok(buf.len()),
        }
        let limits = self.limits();
        let mut it = if batch {
            netron_codec::decode_batch(&buf[consumed..], &limits)
        } else {
            FrameIter::new(&buf[consumed..], &limits)
        };
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
        //
        // On QUIC a block may arrive before the insertions it needs (§27.4): its frame, and
        // every later frame of its exchange, then waits until they arrive.
        if self.dec.holds(frame.id()) {
            return self.hold_blocked(frame);
        }
        if frame.kind().may_have_headers()
            && self
                .dec
                .decode(frame.id(), frame.header_block(), &mut self.headers)?
                == Block::Held
        {
            return self.hold_blocked(frame);
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
                self.fail_all(&crate::Status::new(status, message.clone()));
                self.close_reason.get_or_insert(message);
                self.state = State::Closing;
                Ok(())
            }
            FrameKind::Error if self.has_stream(frame.id()) => self.on_stream_error(frame, env),
            FrameKind::Error if self.has_mine(frame.id()) => self.on_subscription_error(frame, env),
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
            FrameKind::Cancel if self.has_stream(frame.id()) => self.on_stream_cancel(frame, env),
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
                    self.cancels.push_back(id);
                }
                Ok(())
            }
            FrameKind::GoAway => {
                let g = netron_codec::control::read_go_away(&frame)?;
                // The header id and the body's last_id must agree (§16); if they do not, the
                // earlier of the two is taken (§20 A2): retrying a call twice is safer than
                // losing one.
                let (body, head) = (g.last_id(), frame.id());
                let last = if client::serial_after(body, head) {
                    head
                } else {
                    body
                };
                self.on_go_away(last, env);
                Ok(())
            }
            FrameKind::Hello | FrameKind::Welcome | FrameKind::Reject => Err(ConnError {
                counter: "unexpected_handshake_frame",
                status: StatusCode::Internal,
                message: format!("{} after the handshake", frame.kind().name()),
            }),
            FrameKind::StreamOpen
            | FrameKind::StreamData
            | FrameKind::StreamEnd
            | FrameKind::WindowUpdate => self.on_stream_frame(frame, env),
            FrameKind::Subscribe | FrameKind::Unsubscribe | FrameKind::Event => {
                self.on_event_frame(frame, env)
            }
            _ => {
                env.stats.count_error("ignored_frame");
                self.charge_idle_frame(env)
            }
        }
    }

    /// A GoAway from the peer: no new calls on this connection; calls it did not process are
    /// failed (retryable); answer with our own GoAway and drain.
    fn on_go_away(&mut self, last_id: u32, env: &mut Env<'_>) {
        self.peer_going_away = true;
        env.stats.count_error("peer_go_away");
        let status = crate::Status::unavailable(
            "the peer is going away (GoAway) and did not process this call; retry it elsewhere",
        );
        self.calls.fail_after(last_id, &status);
        self.fail_streams_after(last_id, &status);
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
        let frames = tx.frame_count();
        // A batch in lent ring space is cut off there as one record, and encoding goes on in
        // the space after it (docs/protocol.md §26.6).
        if let Some(full) = tx.split_batch(crate::transport::LEND_MIN) {
            self.tx_full.push_back((full, frames));
            return;
        }
        let fresh = self.spare.pop().unwrap_or_default();
        let full = tx.replace_buffer(TxBuf::from(fresh));
        self.tx_full.push_back((full, frames));
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
        ended
            && self.inflight.is_empty()
            && self.calls.len() == 0
            && self.spawns.is_empty()
            && self.stream_count() == 0
    }

    /// The peer closed its sending side (EOF). Calls this side opened can get no answer any
    /// more and fail; calls it serves finish and are answered (half-close), then it closes.
    pub(crate) fn handle_eof(&mut self, now: Instant) {
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
        self.fail_all(&crate::Status::unavailable(reason));
        self.close_reason.get_or_insert_with(|| reason.to_owned());
        if !self.is_open() {
            self.state = State::Closing;
        }
        self.closing_at(now);
    }

    /// The next piece of work this connection asks of its core: async handlers to start
    /// (in arrival order), then cancellations. Call it until `None` after every
    /// `handle_input`, `handle_timeout` and `complete_async`.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        if let Some(sp) = self.spawns.pop_front() {
            return Some(Event::Spawn(sp));
        }
        self.cancels.pop_front().map(Event::Cancel)
    }

    /// Whether bytes are waiting to be written.
    #[inline]
    pub(crate) fn wants_write(&self) -> bool {
        !self.tx_full.is_empty()
            || !self.tx.is_empty()
            || self.streams_want_write()
            || self.events_want_write()
            || self.header_streams_want_write()
    }

    /// Takes the next batch to write (oldest full batch first), leaving an empty buffer in its
    /// place. Returns the buffer and how many frames it holds. Give the buffer back with
    /// [`Connection::recycle`] once written.
    pub(crate) fn poll_transmit(&mut self) -> Option<(Vec<u8>, u32)> {
        // A batch in lent memory is copied out here (a link that lends takes it with
        // `poll_transmit_buf` instead).
        self.poll_transmit_buf().map(|(b, n)| (b.into_vec(), n))
    }

    /// [`Connection::poll_transmit`] for a link that lends its own memory to the encoder
    /// ([`Connection::lend_tx`]): the batch comes as it was encoded, lent or on the heap.
    /// A heap batch goes back with [`Connection::recycle`] (`TxBuf::into_vec` moves it).
    pub(crate) fn poll_transmit_buf(&mut self) -> Option<(TxBuf, u32)> {
        if let Some(full) = self.tx_full.pop_front() {
            return Some(full);
        }
        // Stream messages are encoded only now, when the transport takes a batch.
        self.pump_streams();
        self.pump_events();
        if let Some(full) = self.tx_full.pop_front() {
            return Some(full);
        }
        if self.tx.is_empty() {
            return None;
        }
        let n = self.tx.frame_count();
        let fresh = self.spare.pop().unwrap_or_default();
        Some((self.tx.replace_buffer(TxBuf::from(fresh)), n))
    }

    /// Makes `buf` (memory the link lent: the free space of a shared-memory ring) the buffer
    /// the next frames are encoded into, if nothing is queued: they are then written once,
    /// in place (docs/protocol.md §26.6). Gives `buf` back if frames are queued or a lent
    /// buffer is already in use.
    pub(crate) fn lend_tx(&mut self, buf: TxBuf) -> Result<(), TxBuf> {
        if !self.can_lend() {
            return Err(buf);
        }
        let old = self.tx.replace_buffer(buf);
        self.recycle(old.into_vec());
        Ok(())
    }

    /// Whether [`Connection::lend_tx`] would take a lent buffer now (nothing queued).
    pub(crate) fn can_lend(&self) -> bool {
        self.tx.is_empty() && !self.tx.is_lent() && self.tx_full.is_empty()
    }

    /// Whether any queued or open batch is in lent memory (the lender must not take the
    /// space back then).
    pub(crate) fn holds_lent(&self) -> bool {
        self.tx.is_lent() || self.tx_full.iter().any(|(b, _)| b.is_lent())
    }

    /// Returns a written batch buffer for reuse.
    pub(crate) fn recycle(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 {
            // Nothing to keep (a batch written in place came back as an empty `Vec`).
            return;
        }
        buf.clear();
        // Keep small buffers for reuse (steady state allocates nothing); let large ones go.
        if self.spare.len() < 2 && buf.capacity() <= KEEP_BUFFER {
            self.spare.push(buf);
        }
    }

    /// Starts a graceful shutdown: tells the peer no new calls will be accepted (GoAway with
    /// the last id the peer opened), lets what is in flight finish.
    pub(crate) fn go_away(&mut self, why: &str) {
        if self.going_away || !self.is_open() {
            return;
        }
        self.going_away = true;
        let last = self.last_peer_id;
        self.go_away_last = last;
        let _ = self.queue(|c, b| {
            c.control
                .go_away(b, last, StatusCode::Unavailable, why)
                .map(|_| ())
        });
    }

    /// Whether an exchange the peer opens with `id` is refused because of our GoAway: it was
    /// opened after the GoAway's `last_id` (§14.4). One up to `last_id` that arrives after
    /// the GoAway (its QUIC stream was overtaken by later ones, §27.2) is served: the peer
    /// was told it may have been processed and keeps waiting for its answer.
    pub(crate) fn refuses_after_go_away(&self, id: u32) -> bool {
        self.going_away && client::serial_after(id, self.go_away_last)
    }

    /// The connection error this side closes for, if any: its status code and text.
    pub(crate) fn close_status(&self) -> Option<(StatusCode, &str)> {
        let why = self.close_reason.as_deref().unwrap_or("");
        self.close_code.map(|c| (c, truncate_message(why)))
    }

    /// The socket is gone (closed, failed, or the core stopped): fail what is in flight with
    /// `why`.
    pub(crate) fn handle_closed(&mut self, why: &str) {
        let reason = self.close_reason.clone().unwrap_or_else(|| why.to_owned());
        self.fail_all(&crate::Status::unavailable(reason));
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
