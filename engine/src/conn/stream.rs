//! Streams on one connection, both roles (docs/protocol.md §22, §23; docs/architecture.md
//! "Streams"): the per-stream sequence and half-close state (`netron_codec::stream::Stream`),
//! the flow-control windows, and the frames StreamOpen, StreamData, StreamEnd, WindowUpdate,
//! and Cancel / Error when they name a stream.
//!
//! The application side of a stream is a [`StreamApp`] (implemented in `crate::streams` over
//! a cross-thread queue); the connection pulls what it sends from it and pushes what it
//! receives into it. Flow control is the protocol's:
//!
//! - **Sending.** The application may queue a message while its credit (the stream window
//!   minus what it already queued) is positive, so at most `window + one message` bytes wait
//!   per stream. The connection pulls queued messages only when the transport asks for a batch
//!   ([`Connection::poll_transmit`]) and the connection window is open, one message per
//!   stream per round (round-robin), until the batch is full: what is encoded and not yet
//!   written is at most one batch. Replies to unary calls are queued as they are made, so a
//!   Response has at most the batch being written of stream bytes ahead of it.
//! - **Receiving.** Credit is granted back as the application *consumes* messages: once half
//!   of a stream's window (or half of the connection window) has been consumed, one
//!   WindowUpdate returns all of it. A peer that sends beyond its credit is a connection error
//!   (`flow_control`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use netron_codec::stream::{Role as Side, Stream, StreamError, Window, consume_both};
use netron_codec::{Flags, Frame, FrameKind, StatusCode};
use rustc_hash::FxHashMap;

use super::{Caller, ConnError, Connection, Env, Spawn};
use crate::Status;
use crate::streams::SendBudget;

/// Streams remembered after their end, so that the peer's frames that crossed it are told
/// from frames for streams that never were (a quarter of the default `max_concurrent_calls`:
/// many uploads rejected at once must not turn their in-flight data into `unknown_stream`
/// charges).
pub(super) const RECENT: usize = 256;
/// Late frames a recently ended stream may receive free (a WindowUpdate or a StreamEnd that
/// crossed its end); later ones cost a frame of the idle-frame budget each.
pub(super) const LATE_FREE: u8 = 2;

/// What the application queued for the connection to send on a stream, in order.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A message (StreamData); `end`: the last one of this side (END_STREAM).
    Data { msg: Bytes, end: bool },
    /// Close this side's half: StreamEnd, empty (OK) or with an ErrorBody.
    End(Result<(), Status>),
    /// Stop the whole stream: Cancel from the opener, `Error(id)` from the callee.
    Abort(Status),
}

/// The application's side of one stream, as the connection sees it. Implementations buffer
/// and wake; they never call back into the connection.
pub(crate) trait StreamApp: std::fmt::Debug {
    /// The stream is open with id `id`: the application may queue messages while its
    /// `credit` (bytes; may be negative) is positive and `budget`, the connection's bound on
    /// what all its streams queue, has room; none may exceed `max_message` bytes. What the
    /// application queues it takes from `budget`, and gives back as `next_send` takes it.
    fn opened(&mut self, id: u32, credit: i64, max_message: usize, budget: &Arc<SendBudget>);
    /// A message arrived (copied by the application).
    fn deliver(&mut self, msg: &[u8]);
    /// The peer closed its half: OK, or with the failure it reported (or the stream ended).
    fn recv_closed(&mut self, end: Result<(), Status>);
    /// Nothing more can be sent on the stream (it ended): later sends fail with `why`.
    fn send_closed(&mut self, why: Status);
    /// The peer granted `n` more bytes of credit.
    fn grant(&mut self, n: u32);
    /// Bytes of delivered messages the application consumed since the last call.
    fn take_consumed(&mut self) -> u32;
    /// The next thing to send; a message only if `data_ok` (credit is open), otherwise only an
    /// end or abort at the head of the queue.
    fn next_send(&mut self, data_ok: bool) -> Option<Outgoing>;
}

/// One open stream.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) state: Stream,
    /// This side's credit for sending (the peer's grants).
    pub(super) send: Window,
    /// The peer's credit as this side granted it.
    pub(super) recv: Window,
    /// Bytes consumed by the application and not yet granted back.
    pub(super) pending: u32,
    /// Bytes (as sent) delivered to the application and not yet consumed.
    pub(super) unread: u64,
    /// Bytes by which the delivered messages exceed their payloads as sent (they arrived
    /// compressed): the application's consumption counts them, flow control does not.
    pub(super) surplus: u64,
    pub(super) deadline: Option<Instant>,
    /// `None` once the application is done with the stream (the opener cancelled or its
    /// deadline passed): the id stays in use until the peer's final frame.
    pub(super) app: Option<Box<dyn StreamApp>>,
    /// A first message the StreamOpen could not carry (no connection credit), sent first.
    pub(super) first: Option<(Bytes, bool)>,
    /// Received messages held back from the application (`stream_held.rs`).
    pub(super) held: Option<Box<super::stream_held::Held>>,
    /// The interceptors' start of a stream this side serves.
    pub(super) started: Option<crate::dispatch::Started>,
    /// WindowUpdates received after this side's sending half closed (ignored; past
    /// [`LATE_FREE`] each costs a frame of the idle-frame budget).
    pub(super) ignored_updates: u8,
    /// In `Streams::ready` / `Streams::blocked` now (so queuing it again is O(1)).
    pub(super) in_ready: bool,
    pub(super) in_blocked: bool,
}

/// The streams of one connection and its two connection windows (made on first use).
#[derive(Debug)]
pub(crate) struct Streams {
    pub(super) map: FxHashMap<u32, Entry>,
    pub(super) conn_send: Window,
    pub(super) conn_recv: Window,
    /// Bytes consumed on any stream (or dropped) and not yet granted back to the connection.
    pub(super) conn_pending: u32,
    /// Initial (target) windows: stream and connection.
    pub(super) stream_window: u32,
    pub(super) conn_window: u32,
    /// Streams that may have something to send, in round-robin order.
    pub(super) ready: VecDeque<u32>,
    /// Streams that waited for connection credit.
    pub(super) blocked: Vec<u32>,
    /// Streams that ended lately, with the late frames each has had (see [`LATE_FREE`]).
    pub(super) recent: VecDeque<(u32, u8)>,
    pub(super) next_deadline: Option<Instant>,
    /// Interceptor `after` hooks due: streams this side served whose final frame went out.
    pub(super) hooks: Vec<(u32, crate::dispatch::Started, Result<(), Status>)>,
    /// What the writers of all this connection's streams may queue: one connection window.
    pub(super) budget: Arc<SendBudget>,
    /// Sum of the streams' `surplus`: decompressed bytes the applications hold beyond their
    /// wire size, bounded by one connection window (`stream_held.rs`).
    pub(super) surplus: u64,
    /// Streams holding messages back (`Entry::held`).
    pub(super) held: Vec<u32>,
}

impl Streams {
    /// For a frame of stream `id` that has no entry: `None` if `id` did not end lately;
    /// otherwise whether the late frame is free: data always (the connection window bounds
    /// it, and a stream ended early may receive a whole window: fresh user R12's finding 1),
    /// other frames for the first [`LATE_FREE`] of that stream.
    pub(super) fn late_frame(&mut self, id: u32, data: bool) -> Option<bool> {
        let (_, seen) = self.recent.iter_mut().find(|(r, _)| *r == id)?;
        if data {
            return Some(true);
        }
        *seen = seen.saturating_add(1);
        Some(*seen <= LATE_FREE)
    }

    fn new(stream_window: u32) -> Streams {
        let stream_window = stream_window.min(netron_codec::stream::MAX_WINDOW);
        let conn_window = netron_codec::stream::initial_connection_window(stream_window);
        Streams {
            map: FxHashMap::default(),
            conn_send: Window::new(conn_window),
            conn_recv: Window::new(conn_window),
            conn_pending: 0,
            stream_window,
            conn_window,
            ready: VecDeque::new(),
            blocked: Vec::new(),
            recent: VecDeque::new(),
            next_deadline: None,
            hooks: Vec::new(),
            budget: Arc::new(SendBudget::new(conn_window)),
            surplus: 0,
            held: Vec::new(),
        }
    }

    /// Queues stream `id` for the send round-robin, unless it is queued already (the entry's
    /// flag, not a scan: many streams on one connection stay O(1) per message).
    pub(super) fn mark_ready(&mut self, id: u32) {
        if let Some(e) = self.map.get_mut(&id) {
            if !e.in_ready {
                e.in_ready = true;
                self.ready.push_back(id);
            }
        }
    }

    /// The next stream of the round-robin.
    pub(super) fn pop_ready(&mut self) -> Option<u32> {
        let id = self.ready.pop_front()?;
        if let Some(e) = self.map.get_mut(&id) {
            e.in_ready = false;
        }
        Some(id)
    }

    /// Parks stream `id` until the connection window opens, once.
    pub(super) fn mark_blocked(&mut self, id: u32) {
        if let Some(e) = self.map.get_mut(&id) {
            if !e.in_blocked {
                e.in_blocked = true;
                self.blocked.push(id);
            }
        }
    }

    /// The connection window opened: every parked stream goes back to the round-robin.
    pub(super) fn unblock_all(&mut self) {
        for id in std::mem::take(&mut self.blocked) {
            if let Some(e) = self.map.get_mut(&id) {
                e.in_blocked = false;
            }
            self.mark_ready(id);
        }
    }

    pub(super) fn track_deadline(&mut self, at: Option<Instant>) {
        if let Some(d) = at {
            self.next_deadline = Some(self.next_deadline.map_or(d, |n| n.min(d)));
        }
    }
}

/// What a stream opener sends with its StreamOpen.
#[derive(Debug)]
pub(crate) struct StreamSpec<'a> {
    pub service: &'a [u8],
    pub method: &'a [u8],
    pub deadline: Option<Duration>,
    pub metadata: Option<&'a netron_codec::hpack::HeaderList>,
    /// A first message (sent in the StreamOpen when the connection window allows).
    pub first: Option<Bytes>,
    /// The opener sends nothing more after `first` (END_STREAM).
    pub end: bool,
}

pub(super) fn stream_error(e: StreamError) -> ConnError {
    ConnError {
        counter: e.counter(),
        status: e.status(),
        message: e.to_string(),
    }
}

fn peer_status(frame: &Frame<'_>) -> Status {
    // The same `ErrorBody` ends an Error frame and, optionally, a StreamEnd (§22.4): each
    // kind has its reader (which checks the kind).
    let body = match frame.kind() {
        netron_codec::FrameKind::StreamEnd => netron_codec::control::read_stream_end(frame),
        _ => netron_codec::control::read_error(frame).map(Some),
    };
    match body {
        Ok(None) => Status::internal("a StreamEnd without an ErrorBody carries no status"),
        Ok(Some(b)) => Status::new(
            netron_codec::control::status(b.status()),
            super::truncate_message(b.message().unwrap_or("")).to_owned(),
        ),
        Err(e) => Status::internal(format!("malformed error body: {e}")),
    }
}

/// Ends both halves of the application's side with `st`. The sending half first: a reader
/// woken by the end of its half finds sending closed already.
pub(crate) fn fail_app(app: &mut dyn StreamApp, st: &Status) {
    app.send_closed(st.clone());
    app.recv_closed(Err(st.clone()));
}

impl Entry {
    /// Whether the application consumed everything delivered to it (its reader waits).
    pub(super) fn drained(&self) -> bool {
        self.unread == 0 && self.surplus == 0
    }
}

impl<C: Caller> Connection<C> {
    /// The connection's stream state, made on first use with the negotiated window.
    pub(super) fn streams_mut(&mut self) -> &mut Streams {
        let w = self
            .settings
            .as_ref()
            .map_or(256 << 10, |s| s.initial_stream_window);
        self.streams
            .get_or_insert_with(|| Box::new(Streams::new(w)))
    }

    /// Whether `id` names a stream in use on this connection.
    #[inline]
    pub(crate) fn has_stream(&self, id: u32) -> bool {
        self.streams
            .as_ref()
            .is_some_and(|s| s.map.contains_key(&id))
    }

    /// Streams open on this connection (either role).
    pub(crate) fn stream_count(&self) -> usize {
        self.streams.as_ref().map_or(0, |s| s.map.len())
    }

    /// Whether a stream has something the transport should be asked to send.
    #[inline]
    pub(super) fn streams_want_write(&self) -> bool {
        self.streams.as_ref().is_some_and(|s| !s.ready.is_empty())
    }

    /// Whether STREAMS is in force on this connection (docs/protocol.md §21).
    pub(super) fn streams_in_force(&self) -> bool {
        self.settings
            .as_ref()
            .is_some_and(|s| s.features & netron_codec::features::STREAMS != 0)
    }

    /// StreamOpen, StreamData, StreamEnd or WindowUpdate from the peer.
    pub(super) fn on_stream_frame(
        &mut self,
        frame: Frame<'_>,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        match frame.kind() {
            FrameKind::StreamOpen => self.on_stream_open(frame, env),
            FrameKind::StreamData => self.on_stream_data(frame, env),
            FrameKind::StreamEnd => self.on_stream_end(frame, env),
            _ => self.on_window_update(frame, env),
        }
    }

    /// A stream's payload as delivered: decompressed into `scratch` when it was compressed.
    /// `wire` itself, or (if `compressed`) what it decompresses to, in `scratch`.
    pub(super) fn decompress_if<'f>(
        &mut self,
        wire: &'f [u8],
        compressed: bool,
        scratch: &'f mut Vec<u8>,
    ) -> Result<&'f [u8], ConnError> {
        if !compressed {
            return Ok(wire);
        }
        scratch.clear();
        self.check_decompress(wire, scratch)?;
        self.decompressor
            .decompress_into(wire, scratch)
            .map_err(|e| ConnError::from(netron_codec::DecodeError::from(e)))?;
        Ok(scratch)
    }

    /// Gives stream `id`'s application a message that took `n` bytes on the wire; what it
    /// decompressed to beyond that is the stream's (and the connection's) surplus.
    pub(super) fn deliver_payload(&mut self, id: u32, n: u32, payload: &[u8]) {
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        let Some(e) = s.map.get_mut(&id) else {
            return;
        };
        let Some(app) = e.app.as_mut() else {
            // Nobody reads any more: the bytes are consumed at once.
            s.conn_pending += n;
            return;
        };
        let extra = (payload.len() as u64).saturating_sub(n as u64);
        e.unread += n as u64;
        e.surplus += extra;
        s.surplus += extra;
        app.deliver(payload);
    }

    fn on_stream_open(&mut self, frame: Frame<'_>, env: &mut Env<'_>) -> Result<(), ConnError> {
        const ZERO_RTT_STREAM: &str = "streams are not opened in QUIC 0-RTT (before the \
            handshake completed): retry on this connection now that it is complete";
        let id = frame.id();
        self.check_peer_id(id)?;
        self.budget.refund_half();
        let n = frame.payload().len() as u32;
        let end = frame.flags().contains(Flags::END_STREAM);
        let s = self.streams_mut();
        let mut recv = Window::new(s.stream_window);
        let send = Window::new(s.stream_window);
        // The bytes count against the connection window whatever becomes of the stream.
        consume_both(&mut recv, &mut s.conn_recv, n).map_err(stream_error)?;
        env.stats.streams_in += 1;
        let refusal = if !self.streams_in_force() {
            env.stats.count_error("feature_not_negotiated");
            Some(Status::new(
                StatusCode::Unimplemented,
                "streams (STREAMS) are not in force on this connection",
            ))
        } else if self.refuses_after_go_away(id) {
            Some(Status::unavailable(
                "the connection is going away (GoAway); retry on another connection",
            ))
        } else if self.early_data {
            env.stats.count_error("zero_rtt_refused");
            Some(Status::unavailable(ZERO_RTT_STREAM))
        } else {
            None
        };
        if let Some(st) = refusal {
            return self.refuse_stream(id, n, &st);
        }
        let registry: &crate::service::Registry = env.registry;
        let (handler, own) = match registry.lookup(self.headers.service(), self.headers.method()) {
            Ok((crate::service::Handler::Stream(h, _), own)) => (h.clone(), own),
            Ok(_) => {
                env.stats.count_error("not_a_stream_method");
                let st = Status::new(
                    StatusCode::Unimplemented,
                    "the method is unary: call it with a Request, not a StreamOpen",
                );
                return self.refuse_stream(id, n, &st);
            }
            Err(st) => {
                env.stats.count_error(match st.code {
                    StatusCode::NotFound => "unknown_service",
                    StatusCode::Unimplemented => "unknown_method",
                    _ => "bad_request",
                });
                return self.refuse_stream(id, n, &st);
            }
        };
        let max = self
            .settings
            .as_ref()
            .map_or(u32::MAX, |s| s.max_concurrent_calls) as usize;
        if self.inflight.len() + self.stream_count() >= max {
            env.stats.count_error("too_many_calls");
            let st = Status::new(
                StatusCode::ResourceExhausted,
                "too many calls and streams in flight on this connection (max_concurrent_calls)",
            );
            return self.refuse_stream(id, n, &st);
        }
        let deadline = frame.deadline();
        let deadline_at = deadline.and_then(|d| env.now.checked_add(d));
        if deadline_at.is_some_and(|at| env.now >= at) {
            env.stats.deadline_exceeded += 1;
            let st = Status::deadline_exceeded("the stream's deadline passed before it started");
            return self.refuse_stream(id, n, &st);
        }
        let mut response = netron_codec::hpack::HeaderList::default();
        let started = if registry.interceptors.is_empty() && own.is_empty() {
            None
        } else {
            let caller = crate::dispatch::Origin::caller(env.origin);
            match registry
                .interceptors
                .before(own, id, caller, &mut self.headers, &mut response)
            {
                Ok(s) => Some(s),
                Err(st) => {
                    env.stats.count_error("rejected_by_interceptor");
                    return self.refuse_stream(id, n, &st);
                }
            }
        };
        // A compressed first message waits, as it came, while the surplus is used up.
        let compressed = frame.flags().contains(Flags::COMPRESSED);
        let hold_first = compressed && {
            let s = self.streams_mut();
            s.surplus >= s.conn_window as u64
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let payload =
            match self.decompress_if(frame.payload(), compressed && !hold_first, &mut scratch) {
                Ok(_) if hold_first => &[][..],
                Ok(p) => p,
                Err(e) => {
                    self.release_scratch(scratch);
                    return Err(e);
                }
            };
        let peer = env.origin.map_or_else(crate::Peer::detached, |o| {
            crate::Peer::new(o.inbox.clone(), o.conn)
        });
        let notify = env.origin.map(|o| (o.inbox.clone(), o.conn));
        let who = (
            env.origin.and_then(|o| o.cred),
            env.origin.and_then(|o| o.certs.cloned()),
        );
        let (mut app, future) = crate::streams::serve(
            &handler,
            id,
            self.headers.clone(),
            deadline,
            (peer, who),
            notify,
        );
        let max_message = self.max_message();
        let surplus = (payload.len() as u64).saturating_sub(n as u64);
        app.opened(id, send.credit(), max_message, &self.streams_mut().budget);
        if !payload.is_empty() {
            app.deliver(payload);
        }
        if end && !hold_first {
            app.recv_closed(Ok(()));
        }
        self.release_scratch(scratch);
        let s = self.streams_mut();
        s.surplus += surplus;
        s.track_deadline(deadline_at);
        s.map.insert(
            id,
            Entry {
                state: Stream::new(Side::Callee, end),
                send,
                recv,
                pending: 0,
                unread: if hold_first { 0 } else { n as u64 },
                surplus,
                deadline: deadline_at,
                app: Some(app),
                first: None,
                held: None,
                started,
                ignored_updates: 0,
                in_ready: false,
                in_blocked: false,
            },
        );
        if hold_first {
            env.stats.stream_messages_held += 1;
            self.hold(id, frame.payload(), true);
            if end {
                self.close_recv(id, Ok(()), false);
            }
        }
        self.spawns.push_back(Spawn {
            id,
            future: Some(future),
            token: 0,
            deadline: deadline_at,
        });
        Ok(())
    }

    /// Refuses a stream the peer opened with `Error(id)` (its final frame); its first
    /// message's bytes go back to the connection window at once.
    fn refuse_stream(&mut self, id: u32, n: u32, st: &Status) -> Result<(), ConnError> {
        self.streams_mut().conn_pending += n;
        self.grant_connection()?;
        self.answer_error(id, st.code, &st.message)
    }

    /// Largest message a stream may send (a StreamData frame of `max_frame_size`).
    pub(super) fn max_message(&self) -> usize {
        self.limits().max_frame_size as usize - netron_codec::HEADER_LEN
    }

    /// Handles a StreamData (`data`, `n` bytes of credit) or StreamEnd for a stream id not in
    /// use: ignored and counted; flow-controlled bytes still count against the connection
    /// window (and are given back at once).
    fn stream_frame_unknown(
        &mut self,
        id: u32,
        n: u32,
        data: bool,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        let s = self.streams_mut();
        s.conn_recv.consume(n).map_err(stream_error)?;
        s.conn_pending += n;
        let late = s.late_frame(id, data);
        self.grant_connection()?;
        self.charge_stray_frame(late, env)
    }

    /// Counts a frame for a stream with no entry (`late`: from [`Streams::late_frame`]) and
    /// charges the idle-frame budget unless it is a free late frame.
    fn charge_stray_frame(
        &mut self,
        late: Option<bool>,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        match late {
            // Crossed the stream's end: normal.
            Some(free) => {
                env.stats.count_error("late_stream_frame");
                if free {
                    return Ok(());
                }
            }
            None => env.stats.count_error("unknown_stream"),
        }
        self.charge_idle_frame(env)
    }

    fn on_stream_data(&mut self, frame: Frame<'_>, env: &mut Env<'_>) -> Result<(), ConnError> {
        let id = frame.id();
        // An empty message consumes one byte of credit (§23.1): a flood of them hits the
        // window like any other bytes.
        let n = netron_codec::stream::message_credit(frame.payload().len());
        if !self.has_stream(id) {
            return self.stream_frame_unknown(id, n, true, env);
        }
        let end = frame.flags().contains(Flags::END_STREAM);
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = self.stream_data(&frame, n, end, &mut scratch, env);
        self.release_scratch(scratch);
        r
    }

    fn stream_data(
        &mut self,
        frame: &Frame<'_>,
        n: u32,
        end: bool,
        scratch: &mut Vec<u8>,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        let id = frame.id();
        {
            let Some(s) = self.streams.as_mut() else {
                return Ok(());
            };
            let Some(e) = s.map.get_mut(&id) else {
                return Ok(());
            };
            e.state.recv_data(frame.arg(), end).map_err(stream_error)?;
            consume_both(&mut e.recv, &mut s.conn_recv, n).map_err(stream_error)?;
        }
        env.stats.stream_messages_in += 1;
        let compressed = frame.flags().contains(Flags::COMPRESSED);
        if self.must_hold(id, compressed) {
            env.stats.stream_messages_held += 1;
            self.hold(id, frame.payload(), compressed);
        } else {
            let payload = self.decompress_if(frame.payload(), compressed, scratch)?;
            self.deliver_payload(id, n, payload);
        }
        if end {
            self.close_recv(id, Ok(()), false);
        }
        self.end_if_finished(id);
        self.grant_connection()
    }

    fn on_stream_end(&mut self, frame: Frame<'_>, env: &mut Env<'_>) -> Result<(), ConnError> {
        let id = frame.id();
        if !self.has_stream(id) {
            return self.stream_frame_unknown(id, 0, false, env);
        }
        let error = !frame.payload().is_empty();
        let status = error.then(|| peer_status(&frame));
        let Some(s) = self.streams.as_mut() else {
            return Ok(());
        };
        let Some(e) = s.map.get_mut(&id) else {
            return Ok(());
        };
        e.state.recv_end(error).map_err(stream_error)?;
        let opener = e.state.role() == Side::Opener;
        match status {
            None => self.close_recv(id, Ok(()), false),
            Some(st) => self.close_recv(id, Err(st), opener),
        }
        self.end_if_finished(id);
        Ok(())
    }

    /// `Error(id)` for a stream: the callee's final frame (from the opener: a violation).
    pub(super) fn on_stream_error(
        &mut self,
        frame: Frame<'_>,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        let id = frame.id();
        let status = peer_status(&frame);
        let Some(s) = self.streams.as_mut() else {
            return Ok(());
        };
        let Some(e) = s.map.get_mut(&id) else {
            return Ok(());
        };
        e.state.recv_error().map_err(stream_error)?;
        env.stats.streams_failed += 1;
        // After the messages that came before it (held ones included).
        self.close_recv(id, Err(status), true);
        self.end_if_finished(id);
        Ok(())
    }

    /// `Cancel(id)` for a stream: the opener stops it (from the callee: a violation).
    pub(super) fn on_stream_cancel(
        &mut self,
        frame: Frame<'_>,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        let id = frame.id();
        env.stats.cancels_in += 1;
        // As a call's Cancel (conn/mod.rs): every Cancel costs budget, StreamOpen refunds
        // half, so StreamOpen+Cancel floods run dry (they were free: fresh user R11's
        // finding 4, 200,000 handlers started and stopped uncharged).
        self.charge_idle_frame(env)?;
        let Some(s) = self.streams.as_mut() else {
            return Ok(());
        };
        let Some(e) = s.map.get_mut(&id) else {
            return Ok(());
        };
        e.state.recv_cancel().map_err(stream_error)?;
        let answer = e.state.must_answer_cancel();
        if let Some(app) = e.app.as_mut() {
            fail_app(
                &mut **app,
                &Status::new(StatusCode::Cancelled, "cancelled by the caller"),
            );
        }
        if answer {
            let registry = env.registry;
            self.abort_served(
                id,
                StatusCode::Cancelled,
                "cancelled by the caller",
                registry,
            );
        } else {
            self.end_if_finished(id);
        }
        // The handler's task is dropped by the core.
        self.cancels.push_back(id);
        Ok(())
    }

    fn on_window_update(&mut self, frame: Frame<'_>, env: &mut Env<'_>) -> Result<(), ConnError> {
        let (id, inc) = (frame.id(), frame.arg());
        if inc == 0 {
            return Err(stream_error(StreamError::ZeroIncrement));
        }
        let s = self.streams_mut();
        // A grant that is applied is work, however small (a receiver may grant what it
        // consumed while its peer's credit is low); it cannot go on for ever: past 2^31 − 1
        // bytes of credit it is `window_overflow`. Grants that change nothing are budgeted.
        if id == 0 {
            s.conn_send.grant(inc).map_err(stream_error)?;
            // Streams wait here only while the window is shut: a grant that leaves it shut
            // wakes none (a flood of tiny updates walked every blocked stream per frame,
            // fresh user R12's finding 4).
            if s.conn_send.is_open() {
                s.unblock_all();
            }
            return Ok(());
        }
        let Some(e) = s.map.get_mut(&id) else {
            let late = s.late_frame(id, false);
            return self.charge_stray_frame(late, env);
        };
        if !e.state.can_send() {
            // For a half already closed: ignored (§23.4). The first few race the close and
            // are free; more cost a frame each (they could be sent forever: nothing grows).
            e.ignored_updates = e.ignored_updates.saturating_add(1);
            return if e.ignored_updates <= LATE_FREE {
                Ok(())
            } else {
                self.charge_idle_frame(env)
            };
        }
        e.send.grant(inc).map_err(stream_error)?;
        if let Some(app) = e.app.as_mut() {
            app.grant(inc);
        }
        s.mark_ready(id);
        Ok(())
    }
}
