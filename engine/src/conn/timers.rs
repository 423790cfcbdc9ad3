//! Time-driven connection work: deadlines of calls in flight, stalls (handshake, frame,
//! blocked output), keepalive and dead peers, and the linger bound of a closing connection.

use super::*;

impl<C: Caller> Connection<C> {
    /// Time-driven work: expires calls past their deadline (sending Cancel), closes a
    /// connection whose handshake or frame stalled or whose output is blocked, pings an idle
    /// connection, and reports a dead peer. Returns `Err` when the connection must close now
    /// (the Error frame, if it can still be carried, was queued).
    pub(crate) fn handle_timeout(
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
                        "closing took longer than ProtocolConfig::close_linger ({:?})",
                        self.cfg.close_linger
                    ),
                });
            }
            if self.is_closing() {
                return Ok(());
            }
        }
        self.expire_streams(env);
        expired.clear();
        self.calls.expire(now, expired);
        for &id in expired.iter() {
            env.stats.deadline_exceeded += 1;
            let _ = self.queue(|_, b| b.empty_frame(FrameKind::Cancel, id, 0));
        }
        let stall = self.cfg.stall_timeout;
        if self.in_handshake() {
            let limit = self.cfg.handshake_timeout;
            if now.saturating_duration_since(self.opened_at) >= limit {
                let e = ConnError {
                    counter: "handshake_timeout",
                    status: StatusCode::DeadlineExceeded,
                    message: format!(
                        "the handshake was not completed within \
                         ProtocolConfig::handshake_timeout ({limit:?}) of the connection's start"
                    ),
                };
                self.handshake_failure = Some(
                    crate::Status::new(e.status, e.message.clone())
                        .with_origin(crate::status::Origin::HandshakeTimeout),
                );
                self.fail(e.clone(), env);
                return Err(e);
            }
        } else if self.awaiting_more() && now.saturating_duration_since(self.rx_started) >= stall {
            let e = ConnError {
                counter: "stalled",
                status: StatusCode::DeadlineExceeded,
                message: format!(
                    "a frame was not completed within ProtocolConfig::stall_timeout ({stall:?}) \
                     of its first byte"
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
                        "the peer took no bytes for ProtocolConfig::stall_timeout ({stall:?}) \
                         while output was waiting"
                    ),
                };
                env.stats.count_error(e.counter);
                self.close_with(e.clone());
                return Err(e);
            }
        }
        let keepalive = self.keepalive;
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
                        "no answer to a keepalive ping within ProtocolConfig::dead_after \
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

    /// Whether the handshake is under way (bounded by `handshake_timeout`, not by the stall
    /// timer).
    fn in_handshake(&self) -> bool {
        matches!(
            self.state,
            State::ServerHandshake(_) | State::ClientHandshake(_)
        )
    }

    /// When this connection next needs `on_timer`: the earliest of its calls' deadlines, the
    /// stall time of a partial frame or handshake or of blocked output, the keepalive or
    /// dead-peer time, and the linger bound of a closing connection.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.calls.next_deadline;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        consider(self.stream_deadline());
        // Durations come from validated configuration, but an `Instant` far in the future
        // must never panic: an unrepresentable time means "never".
        if let Some(since) = self.closing_since {
            consider(since.checked_add(self.cfg.close_linger));
        }
        if self.is_closing() {
            return next;
        }
        let stall = self.cfg.stall_timeout;
        if self.in_handshake() {
            consider(self.opened_at.checked_add(self.cfg.handshake_timeout));
        } else if self.awaiting_more() {
            consider(self.rx_started.checked_add(stall));
        }
        if let Some(since) = self.write_blocked_since {
            consider(since.checked_add(stall));
        }
        if self.is_open() && !self.keepalive.is_zero() {
            match self.ping_outstanding {
                Some(since) => consider(since.checked_add(self.cfg.dead_after)),
                None => consider(self.last_rx.checked_add(self.keepalive)),
            }
        }
        next
    }
}
