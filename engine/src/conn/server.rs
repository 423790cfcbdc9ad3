//! Server role: a Request in, a Response (written in place by the handler) or an Error out.

use netron_codec::{Flags, Frame, FrameKind, StatusCode};

use super::{ConnError, Connection, Env};
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
            Ok(h) => h.clone(),
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
        let mut tx = std::mem::replace(
            &mut self.tx,
            netron_codec::BatchEncoder::new(netron_codec::Limits::default()),
        );
        let mut attempt =
            |tx: &mut netron_codec::BatchEncoder| -> Result<(), netron_codec::EncodeError> {
                let b = tx.response(id)?;
                let b = b.payload_with(|buf| outcome = handler(&req, &mut Reply::new(buf)));
                if outcome.is_ok() {
                    b.finish().map(|_| ())
                } else {
                    // Dropping the builder removes the partial reply.
                    drop(b);
                    Ok(())
                }
            };
        let mut r = attempt(&mut tx);
        if matches!(r, Err(netron_codec::EncodeError::BatchFull)) {
            self.rotate(&mut tx);
            r = attempt(&mut tx);
        }
        self.tx = tx;
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
                self.answer_error(id, StatusCode::ResourceExhausted, &e.to_string())
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

/// Kinds a server accepts from a client after the handshake.
#[allow(dead_code)]
pub(super) fn client_may_send(kind: FrameKind) -> bool {
    !matches!(
        kind,
        FrameKind::Hello | FrameKind::Welcome | FrameKind::Reject | FrameKind::Response
    )
}
