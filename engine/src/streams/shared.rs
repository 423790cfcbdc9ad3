//! The state one stream's application side shares with its connection: the messages queued
//! to send (bounded by the stream's credit), the messages received and not yet read, and the
//! wakers of the sender and the receiver. The connection reaches it through
//! [`crate::conn::StreamApp`]; the application through `StreamSender` / `StreamReceiver`, on
//! any thread. A change the connection must act on (a message queued, credit to give back)
//! sends one `StreamWork` command to the core, and no more until the core took it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};

use super::SendBudget;
use crate::conn::{Outgoing, StreamApp};
use crate::inbox::{Command, ConnRef, Inbox};
use crate::{Status, StatusCode};

/// Where to send a stream's `StreamWork` commands (`None`: a connection driven without a
/// core, in tests).
pub(crate) type Notify = Option<(Arc<Inbox>, ConnRef)>;

/// Size of the buffers received messages are copied into.
const RBUF: usize = 64 << 10;

#[derive(Debug, Default)]
struct Inner {
    id: u32,
    opened: bool,
    /// Bytes this side may still queue: the stream window minus what it queued; a message may
    /// be queued while it is positive (docs/protocol.md §23.3).
    credit: i64,
    /// The stream's initial window (to report consumption in large enough steps).
    window: u32,
    max_message: usize,
    out: VecDeque<Outgoing>,
    /// Bytes of messages in `out`, all taken from `budget`.
    queued: usize,
    /// The connection's bound on what its streams queue (set when the stream opens).
    budget: Option<Arc<SendBudget>>,
    /// This side ended its half (or gave up): nothing more may be queued.
    send_done: bool,
    /// The application gave the stream up (an abort is queued).
    aborted: bool,
    /// A served stream (the handler's side): the end of its half is queued only when the
    /// handler's future completes (`finish_callee`), so the stream's id is never free while
    /// its task still runs.
    callee: bool,
    /// A served stream's end, asked for by the handler and queued at its completion.
    deferred_end: Option<Outgoing>,
    /// Why nothing more can be sent (the stream ended).
    send_err: Option<Status>,
    /// Received messages not read yet ([`RecvQueue`]).
    inq: RecvQueue,
    unread: usize,
    /// How the peer's half ended, once it did (taken by the receiver when it reports it).
    recv_end: Option<Result<(), Status>>,
    recv_done: bool,
    receiver_gone: bool,
    consumed: u32,
    notified: bool,
    rx_waker: Option<Waker>,
    tx_waker: Option<Waker>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Messages still queued when the stream's last handle goes leave the budget.
        if let Some(b) = &self.budget {
            b.give(self.queued);
        }
    }
}

/// One stream's shared state.
#[derive(Debug)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    notify: Notify,
}

/// Why a message could not be queued without waiting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// No credit left (the peer has not read enough yet), no room left in the connection's
    /// send budget, or the stream is not open yet: try again later, or use the awaiting
    /// `send`. The message is given back.
    #[error(
        "cannot queue now: the stream is not open yet, or the peer has not consumed enough of \
         what was sent (no stream credit, or the connection's streams queue a connection \
         window already)"
    )]
    WouldBlock(Bytes),
    /// The message is larger than a stream frame can carry.
    #[error(
        "message of {len} bytes exceeds the largest a stream frame carries ({max} bytes, the \
         negotiated max_frame_size)"
    )]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The largest allowed.
        max: usize,
    },
    /// The stream ended (cancelled, failed, deadline, connection closed) or this side already
    /// ended its half.
    #[error("the stream is closed for sending: {0}")]
    Closed(Status),
}

impl Shared {
    pub(crate) fn new(notify: Notify) -> Arc<Shared> {
        Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            notify,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the core to look at this stream, unless it already was told and has not looked.
    fn wake_core(&self, mut g: MutexGuard<'_, Inner>) {
        if g.notified || !g.opened {
            return;
        }
        g.notified = true;
        let id = g.id;
        drop(g);
        if let Some((inbox, conn)) = &self.notify {
            inbox.send(Command::StreamWork { conn: *conn, id });
        }
    }

    /// The shared state of a stream this side serves (see `Inner::callee`).
    pub(crate) fn new_callee(notify: Notify) -> Arc<Shared> {
        let s = Shared::new(notify);
        s.lock().callee = true;
        s
    }

    /// A served stream's handler completed with `r`: queues the end of its half (what the
    /// handler asked for, or from `r`: an error ends the whole stream).
    pub(crate) fn finish_callee(&self, r: Result<(), Status>) {
        let mut g = self.lock();
        if g.send_err.is_some() || g.aborted {
            return;
        }
        let item = match r {
            Err(st) => Outgoing::Abort(st),
            Ok(()) => g.deferred_end.take().unwrap_or(Outgoing::End(Ok(()))),
        };
        g.send_done = true;
        g.aborted = true;
        g.out.push_back(item);
        self.wake_core(g);
    }

    /// Queues `item` (an end or abort, or a message already admitted).
    pub(crate) fn push(&self, item: Outgoing) {
        let mut g = self.lock();
        if g.callee {
            // A handler's end waits for its completion.
            if !g.send_done && g.send_err.is_none() {
                g.send_done = true;
                g.deferred_end = Some(item);
            }
            return;
        }
        // An abort may follow the end of this side's half (the stream is not over until the
        // peer's final frame); nothing else may.
        let abort = matches!(item, Outgoing::Abort(_));
        if g.send_err.is_some() || g.aborted || (g.send_done && !abort) {
            return;
        }
        g.aborted = abort;
        if let Outgoing::Abort(st) = &item {
            // Later sends say why the stream ended (not that this half was ended).
            g.send_err = Some(st.clone());
        }
        if abort {
            // A cancel or failure goes out at once: what was queued is dropped, not sent first
            // (it may wait for credit a peer never grants), and leaves the budget.
            g.out.clear();
            let queued = std::mem::take(&mut g.queued);
            if let Some(b) = &g.budget {
                b.give(queued);
            }
        }
        if !matches!(item, Outgoing::Data { end: false, .. }) {
            g.send_done = true;
        }
        if let Outgoing::Data { msg, .. } = &item {
            let credit = credit_of(msg);
            g.queued += credit;
            if let Some(b) = &g.budget {
                b.take(credit);
            }
        }
        g.out.push_back(item);
        self.wake_core(g);
    }

    /// Queues a message if credit and the connection's budget allow.
    pub(crate) fn try_send(&self, msg: Bytes, end: bool) -> Result<(), TrySendError> {
        self.queue(msg, end, false)
    }

    /// Queues a message after [`Shared::poll_send_ready`] said there was room: the
    /// connection's budget is charged even if another stream took the room in between (so a
    /// ready sender never fails for want of it; the overshoot is one message).
    pub(crate) fn send_ready(&self, msg: Bytes, end: bool) -> Result<(), TrySendError> {
        self.queue(msg, end, true)
    }

    fn queue(&self, msg: Bytes, end: bool, ready: bool) -> Result<(), TrySendError> {
        let mut g = self.lock();
        if let Some(st) = &g.send_err {
            return Err(TrySendError::Closed(st.clone()));
        }
        if g.send_done {
            return Err(TrySendError::Closed(Status::new(
                StatusCode::FailedPrecondition,
                "this side already ended its half of the stream",
            )));
        }
        // Before the stream is open the negotiated size is not known yet, but a message above
        // the largest the protocol allows can never go: say so now, not "would block".
        let max = if g.opened {
            g.max_message
        } else {
            netron_codec::Limits::MAX_FRAME_SIZE as usize - netron_codec::HEADER_LEN
        };
        if msg.len() > max {
            return Err(TrySendError::TooLarge {
                len: msg.len(),
                max,
            });
        }
        if !g.opened || g.credit <= 0 {
            return Err(TrySendError::WouldBlock(msg));
        }
        // What the message takes of the credit and the budget: its length, at least 1 (an
        // empty message is not free, §23.1).
        let credit = credit_of(&msg);
        if let Some(b) = &g.budget {
            if ready {
                b.take(credit);
            } else if !b.try_take(credit) {
                return Err(TrySendError::WouldBlock(msg));
            }
        }
        g.credit -= credit as i64;
        g.queued += credit;
        g.send_done = end;
        // A handler's last message is followed by the end of its half at its completion.
        let end = end && !g.callee;
        g.out.push_back(Outgoing::Data { msg, end });
        self.wake_core(g);
        Ok(())
    }

    /// Ready when a message may be queued (credit positive and room in the connection's
    /// budget), or with the reason it never can.
    pub(crate) fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        let mut g = self.lock();
        if let Some(st) = &g.send_err {
            return Poll::Ready(Err(st.clone()));
        }
        if g.send_done {
            return Poll::Ready(Err(Status::new(
                StatusCode::FailedPrecondition,
                "this side already ended its half of the stream",
            )));
        }
        if g.opened && g.credit > 0 {
            match &g.budget {
                None => return Poll::Ready(Ok(())),
                Some(b) if b.has_room() || b.wait(cx.waker()) => return Poll::Ready(Ok(())),
                // Woken by the budget when bytes come back (and by credit, below).
                Some(_) => {}
            }
        }
        if let Some(st) = self.would_deadlock() {
            return Poll::Ready(Err(st));
        }
        g.tx_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The error for a wait that could never end: this stream's connection lives on the
    /// calling thread's core, which is running a sync handler (polled outside the core's
    /// executor), so the core cannot read or send anything until the wait returns. As for a
    /// call's future (`CallError::WouldDeadlock`).
    fn would_deadlock(&self) -> Option<Status> {
        let (inbox, _) = self.notify.as_ref()?;
        (inbox.is_current() && !crate::executor::in_task()).then(|| {
            Status::new(
                StatusCode::FailedPrecondition,
                "a stream half polled by a sync handler on its connection's own core would \
                 deadlock (the core cannot move the stream while the handler waits); use it \
                 from an async handler or hand it to another thread",
            )
        })
    }

    /// The next received message, the end (`None`), or the failure (once, then `None`).
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
        let mut g = self.lock();
        if let Some(msg) = g.inq.pop() {
            let n = credit_of(&msg);
            g.unread -= n;
            g.consumed = g.consumed.saturating_add(n as u32);
            // Reported in steps (a quarter of the window, or when all is read), so that the
            // core is told at most a few times per window.
            if g.unread == 0 || g.consumed >= (g.window / 4).max(1) {
                self.wake_core(g);
            }
            return Poll::Ready(Some(Ok(msg)));
        }
        if g.recv_done {
            return Poll::Ready(None);
        }
        match g.recv_end.take() {
            Some(Ok(())) => {
                g.recv_done = true;
                Poll::Ready(None)
            }
            Some(Err(st)) => {
                g.recv_done = true;
                Poll::Ready(Some(Err(st)))
            }
            None => {
                if let Some(st) = self.would_deadlock() {
                    return Poll::Ready(Some(Err(st)));
                }
                g.rx_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Bytes queued to send and not yet taken by the connection.
    pub(crate) fn buffered(&self) -> usize {
        self.lock().queued
    }

    /// The credit left (bytes; negative after a message larger than what was left).
    pub(crate) fn credit(&self) -> i64 {
        self.lock().credit
    }

    /// The receiver is gone: what arrives is consumed at once.
    pub(crate) fn drop_receiver(&self) {
        let mut g = self.lock();
        g.receiver_gone = true;
        let unread = std::mem::take(&mut g.unread);
        g.inq.clear();
        g.consumed = g.consumed.saturating_add(unread as u32);
        if unread > 0 {
            self.wake_core(g);
        }
    }

    /// Whether the peer's half is over (the receiver has nothing more to wait for).
    pub(crate) fn recv_finished(&self) -> bool {
        let g = self.lock();
        g.recv_done || g.recv_end.is_some() || g.send_err.is_some()
    }
}

/// The connection's handle on a stream's shared state.
#[derive(Debug)]
pub(crate) struct AppHandle(pub(crate) Arc<Shared>);

impl StreamApp for AppHandle {
    fn opened(&mut self, id: u32, credit: i64, max_message: usize, budget: &Arc<SendBudget>) {
        let mut g = self.0.lock();
        g.budget = Some(budget.clone());
        g.id = id;
        g.opened = true;
        g.credit = credit;
        g.window = credit.clamp(1, u32::MAX as i64) as u32;
        g.max_message = max_message;
        if let Some(w) = g.tx_waker.take() {
            w.wake();
        }
    }

    fn deliver(&mut self, msg: &[u8]) {
        let mut g = self.0.lock();
        if g.receiver_gone {
            g.consumed = g
                .consumed
                .saturating_add(netron_codec::stream::message_credit(msg.len()));
            self.0.wake_core(g);
            return;
        }
        g.unread += credit_of(msg);
        g.inq.push(msg);
        if let Some(w) = g.rx_waker.take() {
            w.wake();
        }
    }

    fn recv_closed(&mut self, end: Result<(), Status>) {
        let mut g = self.0.lock();
        if g.recv_end.is_none() && !g.recv_done {
            g.recv_end = Some(end);
        }
        if let Some(w) = g.rx_waker.take() {
            w.wake();
        }
    }

    fn send_closed(&mut self, why: Status) {
        let mut g = self.0.lock();
        if g.send_err.is_none() {
            g.send_err = Some(why);
        }
        g.out.clear();
        let queued = std::mem::take(&mut g.queued);
        if let Some(b) = &g.budget {
            b.give(queued);
        }
        if let Some(w) = g.tx_waker.take() {
            w.wake();
        }
    }

    fn grant(&mut self, n: u32) {
        let mut g = self.0.lock();
        g.credit += n as i64;
        if g.credit > 0 {
            if let Some(w) = g.tx_waker.take() {
                w.wake();
            }
        }
    }

    fn take_consumed(&mut self) -> u32 {
        let mut g = self.0.lock();
        g.notified = false;
        std::mem::take(&mut g.consumed)
    }

    fn next_send(&mut self, data_ok: bool) -> Option<Outgoing> {
        let mut g = self.0.lock();
        if !data_ok && matches!(g.out.front(), Some(Outgoing::Data { .. })) {
            return None;
        }
        let item = g.out.pop_front()?;
        if let Outgoing::Data { msg, .. } = &item {
            let credit = credit_of(msg);
            g.queued -= credit;
            if let Some(b) = &g.budget {
                b.give(credit);
            }
        }
        Some(item)
    }
}

/// The credit (and connection budget) a message takes: its length, at least 1 byte
/// (`netron_codec::stream::message_credit`, protocol.md §23.1).
fn credit_of(msg: &[u8]) -> usize {
    netron_codec::stream::message_credit(msg.len()) as usize
}

/// Received messages not read yet, in order, each as a 4-byte little-endian length and its
/// bytes, in blocks of about [`RBUF`] bytes: the block being filled, and the full ones before
/// it (frozen). A message read is split off as a slice of its block, so a steady stream costs
/// an allocation per block, not per message, and nothing is copied again however far behind
/// the reader is or whatever messages it still holds. 4 bytes per queued message, where a
/// queue of `Bytes` took 32: with an empty message taking 1 byte of credit a window of them
/// cost 33 times the window (fresh user R11's finding 3). (One growing buffer instead copied
/// the whole backlog each time it grew while the reader held a message: R12's finding 3.)
#[derive(Debug, Default)]
struct RecvQueue {
    full: VecDeque<Bytes>,
    filling: BytesMut,
}

impl RecvQueue {
    fn push(&mut self, msg: &[u8]) {
        let need = 4 + msg.len();
        if self.filling.capacity() - self.filling.len() < need {
            if !self.filling.is_empty() {
                self.full.push_back(self.filling.split().freeze());
            }
            // Empty now: a new block (or this one's unused rest) with no copy.
            self.filling.reserve(need.max(RBUF));
        }
        // A message is at most `max_frame_size` (< 4 GiB, protocol.md §3) bytes.
        let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
        self.filling.extend_from_slice(&len.to_le_bytes());
        self.filling.extend_from_slice(msg);
    }

    fn pop(&mut self) -> Option<Bytes> {
        if self.full.is_empty() && !self.filling.is_empty() {
            // The reader caught up: what was filled is frozen where it is (the rest of the
            // block stays with `filling`), and read like any full block.
            self.full.push_back(self.filling.split().freeze());
        }
        let block = self.full.front_mut()?;
        let msg = take_message(block);
        if block.is_empty() {
            self.full.pop_front();
        }
        msg
    }

    fn clear(&mut self) {
        self.full.clear();
        self.filling.clear();
    }

    /// Bytes of the blocks held (tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.full.iter().map(Bytes::len).sum::<usize>() + self.filling.capacity()
    }
}

/// The first message of a block, split off as a slice of it.
fn take_message(block: &mut Bytes) -> Option<Bytes> {
    let prefix: [u8; 4] = block.get(..4)?.try_into().ok()?;
    let len = (u32::from_le_bytes(prefix) as usize).min(block.len() - 4);
    bytes::Buf::advance(block, 4);
    Some(block.split_to(len))
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// Received messages cost their bytes and 4 more each while queued: a window's worth of
    /// empty messages (1 byte of credit each) holds about 4 bytes apiece, where a queue of
    /// `Bytes` held 32 (fresh user R11's finding 3: 4 Mi empty messages, 132 MiB), and they
    /// come out intact and in order.
    #[test]
    fn queued_messages_cost_four_bytes_beyond_their_own() {
        let shared = Shared::new(None);
        let mut app = AppHandle(shared.clone());
        const N: usize = 100_000;
        for i in 0..N {
            let msg = if i % 10 == 0 { &b"ten"[..] } else { &b""[..] };
            app.deliver(msg);
        }
        // Their bytes and lengths, with the buffer's doubling slack.
        let content = N * 4 + (N / 10) * 3;
        let held = shared.lock().inq.held();
        assert!(
            held <= 2 * content + RBUF,
            "{held} bytes held for {N} queued messages ({content} bytes with their lengths)"
        );
        let mut cx = Context::from_waker(Waker::noop());
        for i in 0..N {
            let want: &[u8] = if i % 10 == 0 { b"ten" } else { b"" };
            match shared.poll_recv(&mut cx) {
                Poll::Ready(Some(Ok(m))) => assert_eq!(&m[..], want, "message {i}"),
                other => panic!("message {i}: {other:?}"),
            }
        }
        assert!(matches!(shared.poll_recv(&mut cx), Poll::Pending));
    }

    /// A reader that holds a message while its backlog grows costs no copies: full blocks
    /// are frozen where they are, so the queue holds the backlog and at most one block being
    /// filled, and every message comes out intact (one growing buffer copied the whole
    /// backlog each time it grew while a message was held: fresh user R12's finding 3).
    #[test]
    fn a_held_message_does_not_make_the_backlog_copy() {
        let mut q = RecvQueue::default();
        let msg = |i: u32| i.to_le_bytes().repeat(25); // 100 bytes
        q.push(&msg(0));
        let held = q.pop().unwrap();
        const N: u32 = 40_000; // about 4 MiB behind the held message
        for i in 1..=N {
            q.push(&msg(i));
        }
        let content = N as usize * 104;
        assert!(
            q.held() <= content + 2 * RBUF,
            "{} bytes held for {content} bytes of backlog",
            q.held()
        );
        assert_eq!(&held[..], &msg(0)[..]);
        for i in 1..=N {
            assert_eq!(&q.pop().unwrap()[..], &msg(i)[..], "message {i}");
        }
        assert!(q.pop().is_none());
    }
}
