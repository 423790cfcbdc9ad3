//! Callee role: a Request in, a Response (written in place by the handler) or an Error out.
//!
//! Every Request gets exactly one final frame (Response or Error), also after a Cancel, so the
//! caller knows when its id is free again (docs/protocol.md §14). The callee enforces the
//! deadline the Request carries, measured from when the frame was read: work whose deadline
//! has passed is not started, and a reply that would leave after it is replaced by
//! DeadlineExceeded.

use std::time::Instant;

use netron_codec::hpack::HeaderList;
use netron_codec::{Flags, Frame, StatusCode};
use rustc_hash::FxHashMap;

use super::{Caller, ConnError, Connection, Env, Spawn, truncate_message};
use crate::dispatch::{DeferredReply, Started};
use crate::service::{AsyncRequest, Handler, Reply, Request};

/// The dispatcher's per-connection state: buffers reused call after call, and what it keeps
/// about calls answered later.
#[derive(Debug, Default)]
pub(super) struct ServeState {
    /// Response metadata of the call being answered.
    response: HeaderList,
    /// A reply's payload, copied out of the batch when it gets a header block.
    copy: Vec<u8>,
    /// When intercepted async and deferred calls started, by id.
    started: FxHashMap<u32, Started>,
    /// The last deferred-call token handed out.
    token: u32,
}

const LATE: &str = "the deadline passed before the handler finished";
const EXPIRED_IN_QUEUE: &str = "the deadline passed before the handler started";

impl<C: Caller> Connection<C> {
    /// The dispatcher's state, made on this connection's first request (an idle connection
    /// holds a null pointer instead of its ~110 bytes).
    #[inline]
    fn serve(&mut self) -> &mut ServeState {
        self.serve.get_or_insert_with(Box::default)
    }

    pub(super) fn on_request(
        &mut self,
        frame: Frame<'_>,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        let id = frame.id();
        self.check_peer_id(id)?;
        self.budget.refund_half();
        env.stats.calls_in += 1;
        if self.refuses_after_go_away(id) {
            return self.answer_error(
                id,
                StatusCode::Unavailable,
                "the connection is going away (GoAway); retry on another connection",
            );
        }
        let deadline = frame.deadline();
        // The deadline runs from when the frame was read (this turn's clock).
        let deadline_at = deadline.and_then(|d| env.now.checked_add(d));
        // Decompress into the connection's scratch buffer if needed (bounded by the limit).
        let mut scratch = std::mem::take(&mut self.scratch);
        let payload: &[u8] = if frame.flags().contains(Flags::COMPRESSED) {
            scratch.clear();
            if let Err(e) = self.check_decompress(frame.payload(), &scratch) {
                self.release_scratch(scratch);
                return Err(e);
            }
            if let Err(e) = self
                .decompressor
                .decompress_into(frame.payload(), &mut scratch)
            {
                self.release_scratch(scratch);
                return Err(netron_codec::DecodeError::from(e).into());
            }
            &scratch
        } else {
            frame.payload()
        };
        // The registry outlives this event (it is borrowed from the core, not from the
        // connection): handlers are used by reference, no reference count per call.
        let registry: &crate::service::Registry = env.registry;
        let (handler, own) = match registry.lookup(self.headers.service(), self.headers.method()) {
            Ok(h) => h,
            Err(status) => {
                self.release_scratch(scratch);
                env.stats.count_error(match status.code {
                    StatusCode::NotFound => "unknown_service",
                    StatusCode::Unimplemented => "unknown_method",
                    _ => "bad_request",
                });
                return self.answer_error(id, status.code, &status.message);
            }
        };
        if matches!(handler, Handler::Stream(..)) {
            self.release_scratch(scratch);
            env.stats.count_error("not_a_unary_method");
            return self.answer_error(
                id,
                StatusCode::Unimplemented,
                "the method is a stream: open it with a StreamOpen, not a Request",
            );
        }
        if self.early_data {
            // In QUIC 0-RTT (docs/protocol.md §27.3): replayable, so served only when both
            // the caller and the method say running it twice is harmless.
            let idempotent = frame.flags().contains(Flags::IDEMPOTENT)
                && registry.is_idempotent(self.headers.service(), self.headers.method());
            if !idempotent {
                self.release_scratch(scratch);
                env.stats.count_error("zero_rtt_refused");
                return self.answer_error(
                    id,
                    StatusCode::Unavailable,
                    "refused in QUIC 0-RTT (before the handshake completed): only calls \
                     marked idempotent by the caller (CallOptions::idempotent) to a method \
                     declared idempotent (Service::idempotent) are served early; not run, \
                     retry on this connection",
                );
            }
            env.stats.zero_rtt_calls_in += 1;
        }
        let later = !matches!(handler, Handler::Sync(_));
        if later {
            let max = self
                .settings
                .as_ref()
                .map_or(u32::MAX, |s| s.max_concurrent_calls);
            if self.inflight.len() >= max as usize {
                self.release_scratch(scratch);
                env.stats.count_error("too_many_calls");
                return self.answer_error(
                    id,
                    StatusCode::ResourceExhausted,
                    "too many calls in flight on this connection (max_concurrent_calls)",
                );
            }
        }
        if deadline_at.is_some_and(|at| Instant::now() >= at) {
            // Queued behind other work for longer than the caller allowed: not started.
            self.release_scratch(scratch);
            env.stats.deadline_exceeded += 1;
            return self.answer_error(id, StatusCode::DeadlineExceeded, EXPIRED_IN_QUEUE);
        }
        let interceptors = &registry.interceptors;
        let mut response = std::mem::take(&mut self.serve().response);
        response.clear();
        let started = if interceptors.is_empty() && own.is_empty() {
            None
        } else {
            let caller = crate::dispatch::Origin::caller(env.origin);
            match interceptors.before(own, id, caller, &mut self.headers, &mut response) {
                Ok(s) => Some(s),
                Err(status) => {
                    self.release_scratch(scratch);
                    self.serve().response = response;
                    env.stats.count_error("rejected_by_interceptor");
                    env.stats.calls_failed += 1;
                    return self.answer_error(id, status.code, &status.message);
                }
            }
        };
        let handler: &crate::service::SyncHandler = match handler {
            Handler::Sync(h) => &**h,
            Handler::Async(h) => {
                let peer = env.origin.map_or_else(crate::Peer::detached, |o| {
                    crate::Peer::new(o.inbox.clone(), o.conn)
                });
                let req = AsyncRequest::new(
                    id,
                    bytes::Bytes::copy_from_slice(payload),
                    self.headers.clone(),
                    deadline,
                    peer,
                )
                .with_caller(
                    env.origin.and_then(|o| o.cred),
                    env.origin.and_then(|o| o.certs.cloned()),
                );
                self.inflight.insert(id);
                if let Some(s) = started {
                    let s = s.with_names(&self.headers);
                    self.serve().started.insert(id, s);
                }
                self.spawns.push_back(Spawn {
                    id,
                    future: Some(h(req)),
                    token: 0,
                    deadline: deadline_at,
                });
                self.release_scratch(scratch);
                self.serve().response = response;
                return Ok(());
            }
            // Answered above.
            Handler::Stream(..) => {
                self.release_scratch(scratch);
                self.serve().response = response;
                return Ok(());
            }
            Handler::Deferred(h) => {
                self.serve().response = response;
                let Some(origin) = env.origin else {
                    self.release_scratch(scratch);
                    return self.answer_error(
                        id,
                        StatusCode::Internal,
                        "deferred replies need a core (this connection has none)",
                    );
                };
                let serve = self.serve();
                serve.token = serve.token.wrapping_add(1);
                let token = serve.token;
                self.inflight.insert(id);
                if let Some(s) = started {
                    let s = s.with_names(&self.headers);
                    self.serve().started.insert(id, s);
                }
                // Tracked (deadline, cancel, close) before the handler can answer.
                self.spawns.push_back(Spawn {
                    id,
                    future: None,
                    token,
                    deadline: deadline_at,
                });
                let headers = std::mem::take(&mut self.headers);
                let req = Request::new(id, payload, &headers, deadline, Some(origin));
                let reply = DeferredReply::new(Some(origin), id, token);
                // A panicking handler drops its reply handle, which answers Internal.
                let run = std::panic::AssertUnwindSafe(|| h(&req, reply));
                let _ = std::panic::catch_unwind(run);
                self.headers = headers;
                self.release_scratch(scratch);
                return Ok(());
            }
        };
        let headers = std::mem::take(&mut self.headers);
        let req = Request::new(id, payload, &headers, deadline, env.origin);
        let mut copy = std::mem::take(&mut self.serve().copy);
        let mut outcome = Ok(());
        let backlog = self.backlog_bytes();
        let max_backlog = self.cfg.max_backlog_bytes;
        // The reply is written straight into the batch. A full batch is detected when the frame
        // is started, before the handler runs; `queue` then retries once on a fresh batch.
        let r = self.queue(|_, tx| {
            let b = tx.response(id)?;
            let b = b.payload_with(|buf| {
                // A panicking handler fails its call, not the core and its other connections.
                let run = std::panic::AssertUnwindSafe(|| {
                    handler(&req, &mut Reply::new(buf, &mut response))
                });
                outcome = std::panic::catch_unwind(run)
                    .unwrap_or_else(|_| Err(crate::Status::internal("the handler panicked")));
                let len = buf.len_written();
                if outcome.is_ok() && deadline_at.is_some_and(|at| Instant::now() >= at) {
                    outcome = Err(crate::Status::deadline_exceeded(LATE));
                }
                if outcome.is_ok() && backlog > 0 && backlog + len > max_backlog {
                    outcome = Err(crate::Status::new(
                        StatusCode::ResourceExhausted,
                        format!(
                            "the {len}-byte reply would exceed ProtocolConfig::max_backlog_bytes \
                             ({max_backlog}) of output waiting for the caller to read"
                        ),
                    ));
                }
                if let Some(s) = &started {
                    interceptors.after(id, Some(&headers), &mut outcome, s, &mut response);
                }
                if outcome.is_ok() && !response.is_empty() {
                    // Headers go before the payload: the reply is re-encoded with them.
                    copy.clear();
                    copy.extend_from_slice(buf.written());
                }
            });
            if outcome.is_ok() && response.is_empty() {
                b.finish().map(|_| ())
            } else {
                // Dropping the builder removes the partial reply.
                drop(b);
                Ok(())
            }
        });
        self.headers = headers;
        self.release_scratch(scratch);
        let r = match (r, outcome) {
            (Ok(()), Ok(())) if !response.is_empty() => self.send_reply(id, &response, &copy, env),
            (Ok(()), Ok(())) => {
                env.stats.calls_ok += 1;
                Ok(())
            }
            (Ok(()), Err(status)) => {
                if status.code == StatusCode::DeadlineExceeded {
                    env.stats.deadline_exceeded += 1;
                }
                env.stats.calls_failed += 1;
                self.answer_error(id, status.code, &status.message)
            }
            (Err(e), _) => {
                env.stats.calls_failed += 1;
                env.stats.count_error("reply_too_large");
                self.answer_error(id, StatusCode::ResourceExhausted, &reply_too_large(&e))
            }
        };
        self.serve().response = response;
        self.serve().copy = copy;
        r
    }

    /// Queues a Response to `id` with `metadata` as its header block, or an Error if it
    /// would not fit the peer's limits.
    fn send_reply(
        &mut self,
        id: u32,
        metadata: &HeaderList,
        payload: &[u8],
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        crate::dispatch::with_fields(&[], metadata, |fields| {
            match self.check_outgoing(fields, payload) {
                Ok(()) => {
                    env.stats.calls_ok += 1;
                    let r = self.queue(|c, b| {
                        b.response(id)?
                            .headers(&mut c.enc, fields)?
                            .payload(payload)
                            .finish()
                            .map(|_| ())
                    });
                    if let Err(e) = r {
                        env.stats.count_error("reply_too_large");
                        return self.answer_error(
                            id,
                            StatusCode::ResourceExhausted,
                            &reply_too_large(&e),
                        );
                    }
                    Ok(())
                }
                Err(status) => {
                    env.stats.calls_failed += 1;
                    env.stats.count_error("reply_too_large");
                    let why = format!("the handler's reply does not fit: {}", status.message);
                    self.answer_error(id, status.code, &why)
                }
            }
        })
    }

    /// Delivers the outcome of async or deferred call `id` (from the core's executor or
    /// inbox), after the interceptors' `after` hooks.
    pub(crate) fn complete_async(
        &mut self,
        id: u32,
        result: Result<bytes::Bytes, crate::Status>,
        metadata: Option<&HeaderList>,
        env: &mut Env<'_>,
    ) {
        if let Err(st) = &result {
            // A stream's handler task that failed before it ended the stream (its normal
            // end goes through the stream's queue).
            if self.abandon_stream(id, st.code, &st.message, env.registry) {
                return;
            }
        }
        let started = self.serve().started.remove(&id);
        if !self.inflight.remove(&id) || self.is_closing() {
            return;
        }
        let (mut outcome, payload) = match result {
            Ok(p) => (Ok(()), p),
            Err(s) => (Err(s), bytes::Bytes::new()),
        };
        let mut response = std::mem::take(&mut self.serve().response);
        response.clear();
        for (n, v) in metadata.iter().flat_map(|m| m.iter()) {
            response.push(n, v);
        }
        if let Some(s) = started {
            env.registry
                .interceptors
                .after(id, None, &mut outcome, &s, &mut response);
        }
        let r = match outcome {
            Ok(()) => self.send_reply(id, &response, &payload, env),
            Err(status) => {
                env.stats.calls_failed += 1;
                self.answer_error(id, status.code, &status.message)
            }
        };
        self.serve().response = response;
        if let Err(e) = r {
            env.stats.count_error("reply_too_large");
            let _ = self.answer_error(id, StatusCode::ResourceExhausted, &reply_too_large(&e));
        }
    }

    /// An async or deferred call was dropped (deadline, cancel): answer it with `code` (its
    /// final frame), after the interceptors' `after` hooks (which see that status).
    pub(crate) fn abandon_async(
        &mut self,
        id: u32,
        code: StatusCode,
        message: &'static str,
        registry: &crate::service::Registry,
    ) {
        if self.abandon_stream(id, code, message, registry) {
            return;
        }
        let started = self.serve().started.remove(&id);
        if self.inflight.remove(&id) && !self.is_closing() {
            let mut outcome = Err(crate::Status::new(code, message));
            if let Some(s) = started {
                let mut response = std::mem::take(&mut self.serve().response);
                response.clear();
                registry
                    .interceptors
                    .after(id, None, &mut outcome, &s, &mut response);
                self.serve().response = response;
            }
            let status = outcome
                .err()
                .unwrap_or_else(|| crate::Status::new(code, message));
            let _ = self.answer_error(id, status.code, &status.message);
        }
    }

    /// Queues `Error(id)` with `code` and `message` (cut to a bounded length).
    pub(super) fn answer_error(
        &mut self,
        id: u32,
        code: StatusCode,
        message: &str,
    ) -> Result<(), ConnError> {
        let message = truncate_message(message);
        self.queue(|c, b| c.control.error(b, id, code, message, &[]).map(|_| ()))
    }
}

/// What the caller of a handler whose reply does not fit is told: that it is the reply, and
/// the limit (R17: the encoder's text alone named neither).
fn reply_too_large(e: &ConnError) -> String {
    format!(
        "the handler's reply does not fit: {} (max_frame_size, negotiated with the caller)",
        e.message
    )
}
