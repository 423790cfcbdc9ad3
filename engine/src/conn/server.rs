//! Server role: a Request in, a Response (written in place by the handler) or an Error out.

use netron_codec::{Flags, Frame, StatusCode};

use super::{ConnError, Connection, Env, Spawn};
use crate::service::{Reply, Request};

impl Connection {
    pub(super) fn on_request(
        &mut self,
        frame: Frame<'_>,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        let id = frame.id();
        self.dec
            .decode_into(frame.header_block(), &mut self.headers)
            .map_err(netron_codec::DecodeError::from)?;
        env.stats.calls_in += 1;
        if self.going_away {
            return self.answer_error(
                id,
                StatusCode::Unavailable,
                "server is shutting down; retry elsewhere",
            );
        }
        let deadline = frame.deadline();
        // Decompress into the connection's scratch buffer if needed (bounded by the limit).
        let mut scratch = std::mem::take(&mut self.scratch);
        let payload: &[u8] = if frame.flags().contains(Flags::COMPRESSED) {
            scratch.clear();
            self.decompressor
                .decompress_into(frame.payload(), &mut scratch)
                .map_err(netron_codec::DecodeError::from)?;
            &scratch
        } else {
            frame.payload()
        };
        let handler = match env
            .registry
            .lookup(self.headers.service(), self.headers.method())
        {
            Ok(crate::service::Handler::Sync(h)) => h.clone(),
            Ok(crate::service::Handler::Async(h)) => {
                let h = h.clone();
                let max = self
                    .settings
                    .as_ref()
                    .map_or(u32::MAX, |s| s.max_concurrent_calls);
                if self.async_inflight >= max {
                    self.scratch = scratch;
                    env.stats.count_error("too_many_calls");
                    return self.answer_error(
                        id,
                        StatusCode::ResourceExhausted,
                        "too many calls in flight on this connection",
                    );
                }
                let req = crate::service::AsyncRequest {
                    id,
                    payload: bytes::Bytes::copy_from_slice(payload),
                    headers: self.headers.clone(),
                    deadline,
                };
                self.scratch = scratch;
                self.async_inflight += 1;
                self.spawns.push(Spawn {
                    id,
                    future: h(req),
                    deadline: deadline.map(|d| env.now + d),
                });
                return Ok(());
            }
            Err(status) => {
                self.scratch = scratch;
                env.stats.count_error(match status.code {
                    StatusCode::NotFound => "unknown_service",
                    StatusCode::Unimplemented => "unknown_method",
                    _ => "bad_request",
                });
                return self.answer_error(id, status.code, &status.message);
            }
        };
        let headers = std::mem::take(&mut self.headers);
        let req = Request {
            id,
            payload,
            headers: &headers,
            deadline,
        };
        let mut outcome = Ok(());
        // The reply is written straight into the batch. A full batch is detected when the frame
        // is started, before the handler runs; `queue` then retries once on a fresh batch.
        let r = self.queue(|_, tx| {
            let b = tx.response(id)?;
            let b = b.payload_with(|buf| {
                // A panicking handler fails its call, not the core and its other connections.
                let run = std::panic::AssertUnwindSafe(|| handler(&req, &mut Reply::new(buf)));
                outcome = std::panic::catch_unwind(run)
                    .unwrap_or_else(|_| Err(crate::Status::internal("the handler panicked")));
            });
            if outcome.is_ok() {
                b.finish().map(|_| ())
            } else {
                // Dropping the builder removes the partial reply.
                drop(b);
                Ok(())
            }
        });
        self.headers = headers;
        self.scratch = scratch;
        match (r, outcome) {
            (Ok(()), Ok(())) => {
                env.stats.calls_ok += 1;
                Ok(())
            }
            (Ok(()), Err(status)) => {
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
        self.async_inflight = self.async_inflight.saturating_sub(1);
        if self.is_closing() {
            return;
        }
        let r = match result {
            Ok(payload) => {
                env.stats.calls_ok += 1;
                self.queue(|_, b| b.response(id)?.payload(&payload).finish().map(|_| ()))
            }
            Err(status) => {
                env.stats.calls_failed += 1;
                self.answer_error(id, status.code, &status.message)
            }
        };
        if let Err(e) = r {
            // The reply does not fit in a frame: tell the caller instead.
            env.stats.count_error("reply_too_large");
            let _ = self.answer_error(id, StatusCode::ResourceExhausted, &e.message);
        }
    }

    /// An async call was dropped (deadline or cancel): forget it, and answer if asked to.
    pub(crate) fn abandon_async(&mut self, id: u32, answer: Option<(StatusCode, &str)>) {
        self.async_inflight = self.async_inflight.saturating_sub(1);
        if let Some((code, msg)) = answer {
            if !self.is_closing() {
                let _ = self.answer_error(id, code, msg);
            }
        }
    }

    pub(super) fn answer_error(
        &mut self,
        id: u32,
        code: StatusCode,
        message: &str,
    ) -> Result<(), ConnError> {
        self.queue(|c, b| c.control.error(b, id, code, message, &[]).map(|_| ()))
    }
}
