//! Callee role: a Request in, a Response (written in place by the handler) or an Error out.
//!
//! Every Request gets exactly one final frame (Response or Error), also after a Cancel, so the
//! caller knows when its id is free again (docs/protocol.md §14). The callee enforces the
//! deadline the Request carries, measured from when the frame was read: work whose deadline
//! has passed is not started, and a reply that would leave after it is replaced by
//! DeadlineExceeded.

use std::time::Instant;

use netron_codec::{Flags, Frame, StatusCode};

use super::{Caller, ConnError, Connection, Env, Spawn, truncate_message};
use crate::service::{Reply, Request};

const LATE: &str = "the deadline passed before the handler finished";
const EXPIRED_IN_QUEUE: &str = "the deadline passed before the handler started";

impl<C: Caller> Connection<C> {
    pub(super) fn on_request(
        &mut self,
        frame: Frame<'_>,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        let id = frame.id();
        self.check_peer_id(id)?;
        self.budget.refund_half();
        env.stats.calls_in += 1;
        if self.going_away {
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
        let handler: &crate::service::SyncHandler =
            match registry.lookup(self.headers.service(), self.headers.method()) {
                Ok(crate::service::Handler::Sync(h)) => &**h,
                Ok(crate::service::Handler::Async(h)) => {
                    let max = self
                        .settings
                        .as_ref()
                        .map_or(u32::MAX, |s| s.max_concurrent_calls);
                    let r = if self.inflight.len() >= max as usize {
                        env.stats.count_error("too_many_calls");
                        self.answer_error(
                            id,
                            StatusCode::ResourceExhausted,
                            "too many calls in flight on this connection (max_concurrent_calls)",
                        )
                    } else if deadline_at.is_some_and(|at| Instant::now() >= at) {
                        env.stats.deadline_exceeded += 1;
                        self.answer_error(id, StatusCode::DeadlineExceeded, EXPIRED_IN_QUEUE)
                    } else {
                        let req = crate::service::AsyncRequest {
                            id,
                            payload: bytes::Bytes::copy_from_slice(payload),
                            headers: self.headers.clone(),
                            deadline,
                            peer: self.peer.clone().unwrap_or_else(crate::Peer::detached),
                        };
                        self.inflight.insert(id);
                        self.spawns.push_back(Spawn {
                            id,
                            future: h(req),
                            deadline: deadline_at,
                        });
                        Ok(())
                    };
                    self.release_scratch(scratch);
                    return r;
                }
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
        if deadline_at.is_some_and(|at| Instant::now() >= at) {
            // Queued behind other work for longer than the caller allowed: not started.
            self.release_scratch(scratch);
            env.stats.deadline_exceeded += 1;
            return self.answer_error(id, StatusCode::DeadlineExceeded, EXPIRED_IN_QUEUE);
        }
        let headers = std::mem::take(&mut self.headers);
        let peer = self.peer.take();
        let req = Request {
            id,
            payload,
            headers: &headers,
            deadline,
            peer: peer.as_ref(),
        };
        let mut outcome = Ok(());
        let backlog = self.backlog_bytes();
        let max_backlog = self.cfg.max_backlog_bytes;
        // The reply is written straight into the batch. A full batch is detected when the frame
        // is started, before the handler runs; `queue` then retries once on a fresh batch.
        let r = self.queue(|_, tx| {
            let b = tx.response(id)?;
            let mut len = 0;
            let b = b.payload_with(|buf| {
                // A panicking handler fails its call, not the core and its other connections.
                let run = std::panic::AssertUnwindSafe(|| handler(&req, &mut Reply::new(buf)));
                outcome = std::panic::catch_unwind(run)
                    .unwrap_or_else(|_| Err(crate::Status::internal("the handler panicked")));
                len = buf.len_written();
            });
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
            if outcome.is_ok() {
                b.finish().map(|_| ())
            } else {
                // Dropping the builder removes the partial reply.
                drop(b);
                Ok(())
            }
        });
        self.headers = headers;
        self.peer = peer;
        self.release_scratch(scratch);
        match (r, outcome) {
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
                self.answer_error(id, StatusCode::ResourceExhausted, &e.message)
            }
        }
    }

    /// Delivers the outcome of async call `id` (from the core's executor).
    pub(crate) fn complete_async(
        &mut self,
        id: u32,
        result: Result<bytes::Bytes, crate::Status>,
        env: &mut Env<'_>,
    ) {
        if !self.inflight.remove(&id) || self.is_closing() {
            return;
        }
        let r = match result {
            Ok(payload) => match self.check_outgoing(&[], &payload) {
                Ok(()) => {
                    env.stats.calls_ok += 1;
                    self.queue(|_, b| b.response(id)?.payload(&payload).finish().map(|_| ()))
                }
                Err(status) => {
                    env.stats.calls_failed += 1;
                    env.stats.count_error("reply_too_large");
                    self.answer_error(id, status.code, &status.message)
                }
            },
            Err(status) => {
                env.stats.calls_failed += 1;
                self.answer_error(id, status.code, &status.message)
            }
        };
        if let Err(e) = r {
            env.stats.count_error("reply_too_large");
            let _ = self.answer_error(id, StatusCode::ResourceExhausted, &e.message);
        }
    }

    /// An async call was dropped (deadline, cancel): answer it with `code` (its final frame).
    pub(crate) fn abandon_async(&mut self, id: u32, code: StatusCode, message: &str) {
        if self.inflight.remove(&id) && !self.is_closing() {
            let _ = self.answer_error(id, code, message);
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
