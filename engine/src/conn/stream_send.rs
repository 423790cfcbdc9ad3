//! Sending on streams: opening one, taking the application's queued messages into batches
//! (round-robin, within the stream and connection credit), and granting credit back as the
//! application consumes what arrived.

use std::time::Instant;

use bytes::Bytes;
use netron_codec::hpack::Header;
use netron_codec::stream::{Role as Side, Stream, Window, consume_both, message_credit};
use netron_codec::{Deadline, Flags, FrameKind, StatusCode};

use super::stream::{Entry, Outgoing, StreamApp, StreamSpec, fail_app};
use super::{Caller, ConnError, Connection};
use crate::Status;

impl<C: Caller> Connection<C> {
    /// Opens a stream for `spec`; its application side is `app`. On refusal nothing was
    /// encoded and `app` was told why (both halves closed).
    pub(crate) fn open_stream(
        &mut self,
        spec: &StreamSpec<'_>,
        mut app: Box<dyn StreamApp>,
        now: Instant,
    ) -> Option<u32> {
        match self.encode_open(spec, now) {
            Ok((id, credit, first)) => {
                let max_message = self.max_message();
                let s = self.streams_mut();
                app.opened(id, credit, max_message, &s.budget);
                let e = s.map.get_mut(&id)?;
                e.app = Some(app);
                e.first = first;
                s.mark_ready(id);
                Some(id)
            }
            Err(st) => {
                fail_app(&mut *app, &st);
                None
            }
        }
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn encode_open(
        &mut self,
        spec: &StreamSpec<'_>,
        now: Instant,
    ) -> Result<(u32, i64, Option<(Bytes, bool)>), Status> {
        if !self.is_open() {
            return Err(Status::unavailable(
                self.close_reason
                    .clone()
                    .unwrap_or_else(|| "connection is not open".to_owned()),
            ));
        }
        if self.peer_going_away || self.going_away {
            return Err(Status::unavailable(
                "the connection is going away (GoAway); open a new one",
            ));
        }
        if !self.streams_in_force() {
            return Err(Status::new(
                StatusCode::Unimplemented,
                "the peer does not serve streams (STREAMS is not in force on this connection)",
            ));
        }
        let max = self.settings.as_ref().map_or(0, |s| s.max_concurrent_calls) as usize;
        if self.calls.len() + self.stream_count() >= max {
            return Err(Status::new(
                StatusCode::ResourceExhausted,
                format!(
                    "too many calls and streams in flight on this connection ({max}, the \
                     peer's max_concurrent_calls)"
                ),
            ));
        }
        let first_len = spec.first.as_ref().map_or(0, |b| b.len());
        if first_len > self.max_message() {
            return Err(Status::new(
                StatusCode::ResourceExhausted,
                format!(
                    "message of {first_len} bytes exceeds the largest a stream frame carries \
                     ({} bytes, the negotiated max_frame_size)",
                    self.max_message()
                ),
            ));
        }
        let base = [Header::service(spec.service), Header::method(spec.method)];
        let meta = netron_codec::hpack::HeaderList::default();
        let metadata = spec.metadata.unwrap_or(&meta);
        let s = self.streams_mut();
        // The first message rides on the StreamOpen when the connection has credit for it.
        let inline = spec.first.is_some() && (first_len == 0 || s.conn_send.is_open());
        let (payload, open_end, later) = match &spec.first {
            Some(b) if inline => (b.clone(), spec.end, None),
            Some(b) => (Bytes::new(), false, Some((b.clone(), spec.end))),
            None => (Bytes::new(), spec.end, None),
        };
        let id = loop {
            let id = self.calls.allocate_id();
            if !self.has_stream(id) {
                break id;
            }
        };
        // The first message's bytes as sent (compressed or not): what flow control counts.
        let mut sent = payload.len();
        crate::dispatch::with_fields(&base, metadata, |headers| {
            self.check_outgoing(headers, &payload)?;
            let flags = if open_end {
                Flags::END_STREAM
            } else {
                Flags::empty()
            };
            let r = self.queue(|c, b| {
                let start = b.len();
                let len = b
                    .frame(FrameKind::StreamOpen, id)?
                    .arg(Deadline::encode(spec.deadline))
                    .flags(flags)
                    .headers(&mut c.enc, headers)?
                    .payload_compressed(&payload, &mut c.compressor)
                    .finish()?;
                sent = sent_payload(&b.as_slice()[start..], b.limits(), payload.len());
                Ok(len)
            });
            match r {
                Ok(_) => Ok(()),
                Err(e) if e.status == StatusCode::Internal => {
                    self.close_with(e.clone());
                    Err(Status::new(StatusCode::Internal, e.message))
                }
                Err(e) => Err(Status::new(e.status, e.message)),
            }
        })?;
        let deadline_at = spec.deadline.and_then(|d| now.checked_add(d));
        let s = self.streams_mut();
        let mut send = Window::new(s.stream_window);
        let _ = consume_both(&mut send, &mut s.conn_send, sent as u32);
        s.track_deadline(deadline_at);
        s.map.insert(
            id,
            Entry {
                state: Stream::new(Side::Opener, open_end),
                send,
                recv: Window::new(s.stream_window),
                pending: 0,
                unread: 0,
                surplus: 0,
                deadline: deadline_at,
                app: None,
                first: None,
                held: None,
                started: None,
                ignored_updates: 0,
                in_ready: false,
                in_blocked: false,
            },
        );
        Ok((id, send.credit(), later))
    }

    /// The application of stream `id` changed something (queued, consumed, gave up): grant
    /// consumed credit back and schedule the stream for sending.
    pub(crate) fn stream_work(&mut self, id: u32) {
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        let Some(e) = s.map.get_mut(&id) else {
            return;
        };
        let consumed = e.app.as_mut().map_or(0, |a| a.take_consumed());
        // The application counts messages as delivered (decompressed); flow control counts
        // them as sent (docs/protocol.md §23.1): their surplus is not granted back.
        let surplus = e.surplus.min(consumed as u64);
        e.surplus -= surplus;
        s.surplus -= surplus.min(s.surplus);
        let consumed = consumed - surplus as u32;
        if consumed > 0 {
            e.unread = e.unread.saturating_sub(consumed as u64);
            e.pending = e.pending.saturating_add(consumed);
            s.conn_pending = s.conn_pending.saturating_add(consumed);
            let due = e.state.can_receive() && e.pending >= s.stream_window / 2;
            if due && e.recv.grant(e.pending).is_ok() {
                let inc = std::mem::take(&mut e.pending);
                let _ = self.queue(|_, b| b.empty_frame(FrameKind::WindowUpdate, id, inc));
            }
            let _ = self.grant_connection();
        }
        if let Some(s) = self.streams.as_mut() {
            s.mark_ready(id);
            if (consumed > 0 || surplus > 0) && !s.held.is_empty() {
                self.deliver_held();
            }
        }
    }

    /// Fills the current batch with queued stream messages, one per stream per round, until
    /// the batch is full or nothing more may be sent (called when the transport asks for a
    /// batch, so stream bytes never queue up behind the socket).
    pub(super) fn pump_streams(&mut self) {
        if !self.is_open() || !self.streams_want_write() {
            return;
        }
        while !self.tx.is_full() {
            let Some(s) = self.streams.as_mut() else {
                return;
            };
            let Some(id) = s.pop_ready() else {
                break;
            };
            let conn_open = s.conn_send.is_open();
            let Some(e) = s.map.get_mut(&id) else {
                continue;
            };
            let data_ok = conn_open && e.send.is_open() && e.state.can_send();
            let item = match e.first.take() {
                Some((msg, end)) if data_ok => Some(Outgoing::Data { msg, end }),
                Some(f) => {
                    e.first = Some(f);
                    None
                }
                None => e.app.as_mut().and_then(|a| a.next_send(data_ok)),
            };
            let Some(item) = item else {
                if !conn_open {
                    s.mark_blocked(id);
                }
                continue;
            };
            if self.send_item(id, item).is_err() {
                return;
            }
            if let Some(s) = self.streams.as_mut() {
                s.mark_ready(id);
            }
        }
    }

    /// Encodes one queued item of stream `id`.
    pub(super) fn send_item(&mut self, id: u32, item: Outgoing) -> Result<(), ConnError> {
        let Some(s) = self.streams.as_mut() else {
            return Ok(());
        };
        let Some(e) = s.map.get_mut(&id) else {
            return Ok(());
        };
        // The interceptors' `after` of a stream this side serves runs once its final frame is
        // encoded (in `run_stream_hooks`, where the registry is at hand).
        let final_outcome = (e.state.role() == Side::Callee && e.started.is_some())
            .then(|| match &item {
                Outgoing::Data { end: true, .. } | Outgoing::End(Ok(())) => Some(Ok(())),
                Outgoing::End(Err(st)) | Outgoing::Abort(st) => Some(Err(st.clone())),
                Outgoing::Data { .. } => None,
            })
            .flatten();
        let r = match item {
            Outgoing::Data { msg, end } => {
                let Ok(seq) = e.state.send_data(end) else {
                    return Ok(());
                };
                let flags = if end {
                    Flags::END_STREAM
                } else {
                    Flags::empty()
                };
                // Compressed like a unary payload (docs/protocol.md §11.2).
                let r = self.queue(|c, b| {
                    b.frame(FrameKind::StreamData, id)?
                        .arg(seq)
                        .flags(flags)
                        .payload_compressed(&msg, &mut c.compressor)
                        .finish()
                });
                r.map(|len| self.charge_sent(id, msg.len(), len - netron_codec::HEADER_LEN))
            }
            Outgoing::End(Ok(())) => {
                if e.state.send_end(false).is_err() {
                    return Ok(());
                }
                self.queue(|_, b| b.empty_frame(FrameKind::StreamEnd, id, 0))
            }
            Outgoing::End(Err(st)) => {
                if e.state.send_end(true).is_err() {
                    return Ok(());
                }
                let msg = super::truncate_message(&st.message);
                self.queue(|c, b| c.control.stream_end_error(b, id, st.code, msg).map(|_| ()))
            }
            Outgoing::Abort(st) => match e.state.role() {
                Side::Opener => {
                    e.app = None;
                    if e.state.send_cancel().is_err() {
                        return Ok(());
                    }
                    self.queue(|_, b| b.empty_frame(FrameKind::Cancel, id, 0))
                }
                Side::Callee => {
                    if e.state.send_error().is_err() {
                        return Ok(());
                    }
                    let msg = super::truncate_message(&st.message).to_owned();
                    self.queue(|c, b| c.control.error(b, id, st.code, &msg, &[]).map(|_| ()))
                }
            },
        };
        if let (Some(outcome), Ok(())) = (final_outcome, &r) {
            if let Some(s) = self.streams.as_mut() {
                if let Some(started) = s.map.get_mut(&id).and_then(|e| e.started.take()) {
                    s.hooks.push((id, started, outcome));
                }
            }
        }
        if let Err(e) = &r {
            self.close_with(e.clone());
        }
        self.end_if_finished(id);
        r
    }

    /// Charges a message of `len` bytes, sent as `sent` payload bytes (fewer if compressed),
    /// to the stream and connection credit (flow control counts bytes as sent, §23.1). The
    /// application counted `len` against its credit when it queued the message: what
    /// compression saved is given back to it.
    fn charge_sent(&mut self, id: u32, len: usize, sent: usize) {
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        let Some(e) = s.map.get_mut(&id) else {
            return;
        };
        // Both as credit: an empty message costs 1 byte (§23.1).
        let (len, sent) = (message_credit(len), message_credit(sent));
        let _ = consume_both(&mut e.send, &mut s.conn_send, sent);
        if let (Some(app), Some(saved)) = (e.app.as_mut(), len.checked_sub(sent)) {
            if saved > 0 {
                app.grant(saved);
            }
        }
    }

    /// Runs the interceptors' `after` hooks of streams whose final frame was encoded since
    /// the last call (the core calls this after every event on the connection).
    pub(crate) fn run_stream_hooks(&mut self, registry: &crate::service::Registry) {
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        for (id, started, mut outcome) in s.hooks.drain(..) {
            let mut response = netron_codec::hpack::HeaderList::default();
            registry
                .interceptors
                .after(id, None, &mut outcome, &started, &mut response);
        }
    }
}

/// Payload bytes of the frame at the start of `frame` (the one just encoded; `raw` if it
/// cannot be read back, which does not happen).
fn sent_payload(frame: &[u8], limits: &netron_codec::Limits, raw: usize) -> usize {
    netron_codec::Frame::parse(frame, limits).map_or(raw, |f| f.payload().len())
}
