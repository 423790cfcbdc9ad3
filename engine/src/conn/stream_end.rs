//! How streams end on one connection: removal once over, Error(id) from a callee, the
//! connection window given back, deadlines, connection death and GoAway.

use std::time::Instant;

use netron_codec::stream::Role as Side;
use netron_codec::{FrameKind, StatusCode};

use super::stream::{RECENT, fail_app};
use super::{Caller, ConnError, Connection, Env};
use crate::Status;

impl<C: Caller> Connection<C> {
    /// Removes stream `id` if it is over for this side; what its application had not read is
    /// given back to the connection window.
    pub(super) fn end_if_finished(&mut self, id: u32) {
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        if s.map
            .get(&id)
            .is_some_and(|e| e.state.is_finished() && e.held.is_none())
        {
            self.remove_stream(id);
        }
    }

    pub(super) fn remove_stream(&mut self, id: u32) {
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        let Some(e) = s.map.remove(&id) else {
            return;
        };
        // What the application had not read, and what was held back from it.
        let held = e.held.as_deref().map_or(0, Self::held_bytes);
        if e.held.is_some() {
            s.held.retain(|&h| h != id);
        }
        s.surplus -= e.surplus.min(s.surplus);
        s.conn_pending = s
            .conn_pending
            .saturating_add((e.unread + held).min(u32::MAX as u64) as u32);
        if s.recent.len() == RECENT {
            s.recent.pop_front();
        }
        s.recent.push_back((id, 0));
        let _ = self.grant_connection();
    }

    /// Sends a connection WindowUpdate once half of the connection window was consumed, or,
    /// while the peer has half the window or less left to send, for whatever was consumed:
    /// a reader that drains one stream while others sit unread (holding most of the window)
    /// must get connection credit back for what it reads, however little that is, or it
    /// would stall for good.
    pub(super) fn grant_connection(&mut self) -> Result<(), ConnError> {
        let s = self.streams_mut();
        let low = s.conn_recv.credit() <= i64::from(s.conn_window / 2);
        if s.conn_pending == 0 || (s.conn_pending < s.conn_window / 2 && !low) {
            return Ok(());
        }
        let inc = std::mem::take(&mut s.conn_pending);
        if s.conn_recv.grant(inc).is_err() {
            return Ok(());
        }
        self.queue(|_, b| b.empty_frame(FrameKind::WindowUpdate, 0, inc))
    }

    /// Ends stream `id` that this side serves with `Error(id, code)` (its final frame), if it
    /// has not sent one, and forgets it; the interceptors' `after` hooks see that status.
    /// Returns whether the Error was sent.
    pub(super) fn abort_served(
        &mut self,
        id: u32,
        code: StatusCode,
        message: &str,
        registry: &crate::service::Registry,
    ) -> bool {
        let Some(e) = self.streams.as_mut().and_then(|s| s.map.get_mut(&id)) else {
            return false;
        };
        let sent = e.state.send_error().is_ok();
        let started = e.started.take();
        if let Some(app) = e.app.as_mut() {
            fail_app(&mut **app, &Status::new(code, message.to_owned()));
        }
        self.remove_stream(id);
        if sent {
            let mut outcome = Err(Status::new(code, message.to_owned()));
            if let Some(s) = started {
                let mut response = netron_codec::hpack::HeaderList::default();
                registry
                    .interceptors
                    .after(id, None, &mut outcome, &s, &mut response);
            }
            let st = outcome
                .err()
                .unwrap_or_else(|| Status::new(code, message.to_owned()));
            let _ = self.answer_error(id, st.code, &st.message);
        }
        sent
    }

    /// The core dropped (or is about to drop) the task serving stream `id` (its deadline, or
    /// a Cancel): ends the stream with `code` unless it already sent its final frame. Returns
    /// whether `id` was a stream this side serves.
    pub(crate) fn abandon_stream(
        &mut self,
        id: u32,
        code: StatusCode,
        message: &str,
        registry: &crate::service::Registry,
    ) -> bool {
        let served = self
            .streams
            .as_ref()
            .and_then(|s| s.map.get(&id))
            .is_some_and(|e| e.state.role() == Side::Callee);
        if served {
            self.abort_served(id, code, message, registry);
        }
        served
    }

    /// Fails every stream (the connection ended) with `status`.
    pub(super) fn fail_streams(&mut self, status: &Status) {
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        for (_, mut e) in s.map.drain() {
            if let Some(app) = e.app.as_mut() {
                fail_app(&mut **app, status);
            }
        }
        s.ready.clear();
        s.blocked.clear();
        s.next_deadline = None;
    }

    /// Fails the streams this side opened after `last_id` (the peer's GoAway: it did not
    /// process them).
    pub(super) fn fail_streams_after(&mut self, last_id: u32, status: &Status) {
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        let gone: Vec<u32> = s
            .map
            .iter()
            .filter(|(id, e)| {
                e.state.role() == Side::Opener && super::client::serial_after(**id, last_id)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(mut e) = self.streams.as_mut().and_then(|s| s.map.remove(&id)) {
                if let Some(app) = e.app.as_mut() {
                    fail_app(&mut **app, status);
                }
            }
        }
    }

    /// Ends streams whose deadline passed: an opener fails its side with DeadlineExceeded and
    /// sends Cancel; a callee answers `Error(id, DeadlineExceeded)` and its task is dropped.
    pub(super) fn expire_streams(&mut self, env: &mut Env<'_>) {
        let now = env.now;
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        if s.next_deadline.is_none_or(|d| d > now) {
            return;
        }
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (&id, e) in &s.map {
            match e.deadline {
                Some(d) if d <= now => due.push((id, e.state.role())),
                Some(d) => next = Some(next.map_or(d, |n| n.min(d))),
                None => {}
            }
        }
        s.next_deadline = next;
        const LATE: &str = "the stream's deadline passed";
        for (id, role) in due {
            env.stats.deadline_exceeded += 1;
            match role {
                Side::Callee => {
                    let registry = env.registry;
                    if self.abort_served(id, StatusCode::DeadlineExceeded, LATE, registry) {
                        env.stats.streams_failed += 1;
                    }
                    self.cancels.push_back(id);
                }
                Side::Opener => {
                    let Some(e) = self.streams.as_mut().and_then(|s| s.map.get_mut(&id)) else {
                        continue;
                    };
                    e.deadline = None;
                    if let Some(mut app) = e.app.take() {
                        fail_app(&mut *app, &Status::deadline_exceeded(LATE));
                    }
                    if e.state.send_cancel().is_ok() {
                        let _ = self.queue(|_, b| b.empty_frame(FrameKind::Cancel, id, 0));
                    }
                    self.end_if_finished(id);
                }
            }
        }
    }

    /// The earliest stream deadline.
    pub(super) fn stream_deadline(&self) -> Option<Instant> {
        self.streams.as_ref().and_then(|s| s.next_deadline)
    }

    /// Ids of the streams open (tests).
    #[cfg(test)]
    pub(crate) fn stream_ids(&self) -> Vec<u32> {
        self.streams
            .as_ref()
            .map_or_else(Vec::new, |s| s.map.keys().copied().collect())
    }

    /// The connection's send credit (tests).
    #[cfg(test)]
    pub(crate) fn connection_credit(&self) -> i64 {
        self.streams.as_ref().map_or(0, |s| s.conn_send.credit())
    }
}
