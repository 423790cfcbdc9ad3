//! Streams on a caller-driven core: open, send without waiting (`WouldBlock` when out of
//! credit), and read each chunk borrowed in place from the stream's receive buffer. Nothing
//! is allocated per chunk in steady state: received chunks are appended to one reused buffer
//! per stream (each behind a 4-byte length), sized when the stream opens for what its receive
//! window lets the peer send ahead, and sent ones staged in one reused `BytesMut`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::conn::{Outgoing, StreamApp};
use crate::{CallError, TrySendError};

/// One stream's state on the caller's side (shared by the connection and the [`CoreStream`]).
#[derive(Debug, Default)]
struct Local {
    credit: i64,
    max_message: usize,
    /// Received chunks, oldest first, each as a 4-byte little-endian length and its bytes;
    /// the unread ones start at `head` (what is before it was read and is compacted away
    /// once it is more than half the buffer).
    buf: Vec<u8>,
    head: usize,
    consumed: u32,
    /// Consumed bytes after which the connection hears of them (credit may be due) even
    /// while chunks are still queued: a quarter of the stream window, at most 16 KiB.
    report_every: u32,
    recv_end: Option<Result<(), Status>>,
    recv_done: bool,
    out: VecDeque<Outgoing>,
    /// Bytes of messages in `out`, all taken from `budget`.
    queued: usize,
    /// The connection's bound on what its streams queue (set when the stream opens).
    budget: Option<Arc<crate::streams::SendBudget>>,
    staging: BytesMut,
    send_done: bool,
    send_err: Option<Status>,
}

/// The most a stream's receive buffer reserves when it opens (bytes): twice the window up to
/// this; a larger window's buffer grows as it fills.
const RECV_RESERVE_CAP: usize = 4 << 20;

#[derive(Debug)]
struct LocalApp(Rc<RefCell<Local>>);

impl StreamApp for LocalApp {
    fn opened(
        &mut self,
        _id: u32,
        credit: i64,
        max_message: usize,
        budget: &Arc<crate::streams::SendBudget>,
    ) {
        let mut l = self.0.borrow_mut();
        l.budget = Some(budget.clone());
        l.credit = credit;
        l.max_message = max_message;
        // Both directions start from the same negotiated window (protocol.md §23.2), so the
        // opening credit is also this side's receive window.
        l.report_every = u32::try_from(credit / 4).unwrap_or(0).clamp(1, 16 << 10);
        // The peer may send a window (plus one message) ahead of the reader, and the read
        // part is compacted away once it is half the buffer: room for twice the window is
        // what a reader that falls behind needs, so the buffer reaches it once, here, instead
        // of by doublings in the middle of a stream (capped, so a huge configured window
        // does not reserve its double per stream up front; pages are touched only when used).
        let room = usize::try_from(credit.max(0)).unwrap_or(usize::MAX);
        l.buf.reserve(room.saturating_mul(2).min(RECV_RESERVE_CAP));
    }
    fn deliver(&mut self, msg: &[u8]) {
        let mut l = self.0.borrow_mut();
        // A message is at most `max_frame_size` (< 4 GiB, protocol.md §3) bytes.
        let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
        l.buf.extend_from_slice(&len.to_le_bytes());
        l.buf.extend_from_slice(msg);
    }
    fn recv_closed(&mut self, end: Result<(), Status>) {
        let mut l = self.0.borrow_mut();
        if l.recv_end.is_none() && !l.recv_done {
            l.recv_end = Some(end);
        }
    }
    fn send_closed(&mut self, why: Status) {
        let mut l = self.0.borrow_mut();
        l.send_err.get_or_insert(why);
        l.out.clear();
        l.give_back();
    }
    fn grant(&mut self, n: u32) {
        self.0.borrow_mut().credit += n as i64;
    }
    fn take_consumed(&mut self) -> u32 {
        std::mem::take(&mut self.0.borrow_mut().consumed)
    }
    fn next_send(&mut self, data_ok: bool) -> Option<Outgoing> {
        let mut l = self.0.borrow_mut();
        if !data_ok && matches!(l.out.front(), Some(Outgoing::Data { .. })) {
            return None;
        }
        let item = l.out.pop_front()?;
        if let Outgoing::Data { msg, .. } = &item {
            let credit = netron_codec::stream::message_credit(msg.len()) as usize;
            l.queued -= credit;
            if let Some(b) = &l.budget {
                b.give(credit);
            }
        }
        Some(item)
    }
}

impl Local {
    /// Gives what is still queued back to the connection's budget.
    fn give_back(&mut self) {
        let queued = std::mem::take(&mut self.queued);
        if let Some(b) = &self.budget {
            b.give(queued);
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// A stream opened on a caller-driven [`Core`] with [`Core::open_stream`]; used through that
/// core's `stream_*` methods and [`Core::recv_chunk`]. Not `Send`: it belongs to the thread
/// that drives the core. Dropping it does not end the stream: call [`Core::stream_finish`]
/// or [`Core::stream_cancel`].
#[derive(Debug)]
pub struct CoreStream {
    conn: ConnRef,
    id: u32,
    local: Rc<RefCell<Local>>,
}

impl CoreStream {
    /// The stream's id on its connection.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The credit left for sending, in bytes (negative after a message larger than what was
    /// left).
    pub fn credit(&self) -> i64 {
        self.local.borrow().credit
    }
}

impl Core {
    /// Opens a stream to `service` / `method` on client connection `conn`: `first` goes with
    /// the StreamOpen, `end` closes this side's half at once (a server stream), `deadline`
    /// bounds the whole stream. [`Core::open_stream_with`] also sends request metadata.
    ///
    /// # Errors
    /// [`CallError::Closed`] for a closed connection, [`CallError::Refused`] above the peer's
    /// limits (`max_concurrent_calls`, frame size), [`CallError::Status`] (`Unimplemented`)
    /// if the peer does not serve streams.
    pub fn open_stream(
        &mut self,
        conn: ConnId,
        service: &[u8],
        method: &[u8],
        first: Option<&[u8]>,
        end: bool,
        deadline: Option<Duration>,
    ) -> Result<CoreStream, CallError> {
        let options = match deadline {
            Some(d) => crate::CallOptions::new().deadline(d),
            None => crate::CallOptions::new(),
        };
        self.open_stream_with(conn, (service, method), first, end, &options)
    }

    /// [`Core::open_stream`] with [`crate::CallOptions`]: the deadline and the request
    /// metadata the handler (and the server's interceptors) see.
    ///
    /// # Errors
    /// As [`Core::open_stream`], and [`CallError::Refused`] (`InvalidArgument`) for a
    /// metadata name starting with `:` (reserved for pseudo-headers), before anything is sent.
    pub fn open_stream_with(
        &mut self,
        conn: ConnId,
        (service, method): (&[u8], &[u8]),
        first: Option<&[u8]>,
        end: bool,
        options: &crate::CallOptions,
    ) -> Result<CoreStream, CallError> {
        options.check().map_err(CallError::Refused)?;
        let deadline = options.get_deadline();
        let metadata = options.get_metadata();
        let local = Rc::new(RefCell::new(Local::default()));
        let key = conn.0.key as usize;
        let Some(en) = self
            .conns
            .get_mut(key)
            .filter(|en| en.generation == conn.0.generation && !en.closing)
        else {
            return Err(CallError::Closed(crate::peer::closed()));
        };
        let spec = crate::conn::StreamSpec {
            service,
            method,
            deadline,
            metadata: (!metadata.is_empty()).then_some(metadata),
            first: first.map(Bytes::copy_from_slice),
            end,
        };
        let app = Box::new(LocalApp(local.clone()));
        let Some(id) = en.conn.open_stream(&spec, app, Instant::now()) else {
            let st = local
                .borrow_mut()
                .recv_end
                .take()
                .and_then(Result::err)
                .unwrap_or_else(crate::peer::closed);
            return Err(CallError::from_status(st));
        };
        self.after_event(key);
        self.flush();
        Ok(CoreStream {
            conn: conn.0,
            id,
            local,
        })
    }

    /// Queues `msg` (copied) on `stream` if it has credit, without waiting; it is sent on this
    /// core's next turn.
    ///
    /// # Errors
    /// [`TrySendError::WouldBlock`] with no credit left, or when the connection's streams
    /// together queue a connection window already (run the core, e.g. read with
    /// [`Core::recv_chunk`], until the peer grants more), [`TrySendError::TooLarge`] above
    /// the negotiated frame size, [`TrySendError::Closed`] once the stream ended.
    pub fn stream_try_send(&mut self, stream: &CoreStream, msg: &[u8]) -> Result<(), TrySendError> {
        {
            let mut l = stream.local.borrow_mut();
            if let Some(st) = &l.send_err {
                return Err(TrySendError::Closed(st.clone()));
            }
            if l.send_done {
                return Err(TrySendError::Closed(Status::new(
                    StatusCode::FailedPrecondition,
                    "this side already ended its half of the stream",
                )));
            }
            if l.credit <= 0 {
                return Err(TrySendError::WouldBlock(Bytes::new()));
            }
            if msg.len() > l.max_message {
                return Err(TrySendError::TooLarge {
                    len: msg.len(),
                    max: l.max_message,
                });
            }
            // An empty message takes 1 byte of credit and budget (§23.1).
            let credit = netron_codec::stream::message_credit(msg.len()) as usize;
            if l.budget.as_ref().is_some_and(|b| !b.try_take(credit)) {
                // The connection's streams together queue a connection window already.
                return Err(TrySendError::WouldBlock(Bytes::new()));
            }
            l.credit -= credit as i64;
            l.queued += credit;
            // One staging buffer, reclaimed once the connection dropped what it took.
            l.staging.reserve(msg.len().max(4096));
            l.staging.extend_from_slice(msg);
            let msg = l.staging.split().freeze();
            l.out.push_back(Outgoing::Data { msg, end: false });
        }
        self.stream_touched(stream);
        Ok(())
    }

    /// Ends this side's half of `stream` (OK).
    pub fn stream_finish(&mut self, stream: &CoreStream) {
        self.stream_push(stream, Outgoing::End(Ok(())));
    }

    /// Cancels `stream` (the peer's handler is stopped).
    pub fn stream_cancel(&mut self, stream: CoreStream) {
        let st = Status::new(StatusCode::Cancelled, "cancelled by the caller");
        self.stream_push(&stream, Outgoing::Abort(st));
    }

    fn stream_push(&mut self, stream: &CoreStream, item: Outgoing) {
        {
            let mut l = stream.local.borrow_mut();
            if l.send_err.is_some() || (l.send_done && !matches!(item, Outgoing::Abort(_))) {
                return;
            }
            l.send_done = true;
            if matches!(item, Outgoing::Abort(_)) {
                // A cancel goes out at once: what was queued is dropped, not sent first.
                l.out.clear();
                l.give_back();
            }
            l.out.push_back(item);
        }
        self.stream_touched(stream);
    }

    /// The stream's queue or consumption changed: let its connection act on it.
    fn stream_touched(&mut self, stream: &CoreStream) {
        let key = stream.conn.key as usize;
        if let Some(en) = self
            .conns
            .get_mut(key)
            .filter(|en| en.generation == stream.conn.generation)
        {
            en.conn.stream_work(stream.id);
            self.after_event(key);
        }
    }

    /// Runs this core until `stream` has a chunk, then calls `f` with it, borrowed in place
    /// from the stream's receive buffer; returns `Ok(None)` once the peer ended its half.
    /// The chunk's credit goes back to the peer as the window policy says. Allocates nothing
    /// in steady state. Waits as long as the stream's deadline allows (none: until the peer
    /// sends, ends or the connection closes).
    ///
    /// # Errors
    /// The status the stream ended with ([`CallError::Status`]: the peer's failure,
    /// `DeadlineExceeded`, `Cancelled`; [`CallError::Closed`] when the connection closed),
    /// once; [`CallError::EngineStopped`] if this core's ring failed.
    pub fn recv_chunk<R>(
        &mut self,
        stream: &CoreStream,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, CallError> {
        let mut f = Some(f);
        // The first turn follows the caller's own time: it reads the clock, and the adaptive
        // spin counts from now (the caller was away, the core was not idle).
        let mut looped = false;
        self.idle_since = None;
        loop {
            if let Poll::Ready(r) = self.take_chunk(stream, &mut f)? {
                return Ok(r);
            }
            let turned = self.turn(None, looped);
            looped = true;
            turned.map_err(|e| {
                CallError::EngineStopped(Status::unavailable(format!(
                    "the core's io_uring failed: {e}"
                )))
            })?;
        }
    }

    /// [`Core::recv_chunk`] without running the core: `Poll::Pending` when no chunk and no
    /// end has arrived yet (run the core, e.g. after a wait on [`Core::wait_fd`], and try
    /// again).
    ///
    /// # Errors
    /// As [`Core::recv_chunk`].
    pub fn try_recv_chunk<R>(
        &mut self,
        stream: &CoreStream,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Poll<Option<R>>, CallError> {
        self.take_chunk(stream, &mut Some(f))
    }

    /// The next chunk (given to `f`), the end, or `Pending`.
    fn take_chunk<R, F: FnOnce(&[u8]) -> R>(
        &mut self,
        stream: &CoreStream,
        f: &mut Option<F>,
    ) -> Result<Poll<Option<R>>, CallError> {
        let mut l = stream.local.borrow_mut();
        let at = l.head;
        if let Some(prefix) = l.buf.get(at..at + 4) {
            if let Some(f) = f.take() {
                let len = u32::from_le_bytes(prefix.try_into().unwrap_or([0; 4])) as usize;
                let start = at + 4;
                let r = f(&l.buf[start..start + len]);
                l.consumed = l
                    .consumed
                    .saturating_add(netron_codec::stream::message_credit(len));
                l.head = start + len;
                let drained = l.head == l.buf.len();
                if drained {
                    l.buf.clear();
                    l.head = 0;
                } else if l.head > l.buf.len() / 2 {
                    // Compact in place: what is left (less than half) moves to the front.
                    let cut = l.head;
                    l.buf.drain(..cut);
                    l.head = 0;
                }
                // Tell the connection (credit, WindowUpdate, a flush) once a quarter window
                // (at most 16 KiB) was consumed, or before this reader would wait: not per
                // chunk, which cost a connection pass and a timer check each.
                let report = drained || l.consumed >= l.report_every;
                drop(l);
                if report {
                    self.stream_touched(stream);
                }
                return Ok(Poll::Ready(Some(r)));
            }
        }
        if l.recv_done {
            return Ok(Poll::Ready(None));
        }
        match l.recv_end.take() {
            Some(Ok(())) => {
                l.recv_done = true;
                Ok(Poll::Ready(None))
            }
            Some(Err(st)) => {
                l.recv_done = true;
                Err(CallError::from_status(st))
            }
            None => Ok(Poll::Pending),
        }
    }
}
