//! The state a subscription's application side shares with the core that feeds it: a bounded
//! queue of received events, how the subscription ended, the waker of an async reader, and
//! where to send the unsubscribe when the [`super::Subscription`] is dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Event, RecvError};
use crate::Status;
use crate::inbox::{Command, ConnRef, Inbox};

/// Where a dropped subscription's unsubscribe goes.
#[derive(Debug)]
pub(crate) enum Route {
    /// Not known yet (the subscribe command is on its way).
    None,
    /// Subscription `id` at the peer of `conn`, on the core of `inbox`.
    Remote {
        inbox: Arc<Inbox>,
        conn: ConnRef,
        id: u32,
    },
    /// An in-process subscription with index key `key` on the core of `inbox`.
    Local { inbox: Arc<Inbox>, key: u64 },
}

/// Bytes (topic + payload) one subscription's own queue holds before it drops its oldest
/// events as when it is full (at least one event is always kept).
pub(crate) const MAX_QUEUED_BYTES: usize = 16 << 20;

fn size(e: &Event) -> usize {
    e.topic.len() + e.payload.len()
}

#[derive(Debug)]
struct Inner {
    queue: VecDeque<Event>,
    /// Bytes of the events in `queue`.
    bytes: usize,
    depth: usize,
    /// Events this side's queue dropped (not read in time), reported with the next event.
    lost: u32,
    end: Option<Result<(), Status>>,
    /// The end was reported to the reader.
    end_taken: bool,
    waker: Option<Waker>,
    route: Route,
    /// The application dropped its `Subscription`.
    cancelled: bool,
    /// A remote subscription that chose [`crate::SlowPolicy::Disconnect`]: when this side's
    /// own queue is full (its application does not read), it ends and unsubscribes.
    disconnect: bool,
}

/// One subscription's shared state.
#[derive(Debug)]
pub(crate) struct SubShared {
    inner: Mutex<Inner>,
    ready: Condvar,
}

impl SubShared {
    /// A subscription whose own queue holds at most `depth` events (0: 1024).
    pub(crate) fn new(depth: u32) -> Arc<SubShared> {
        let depth = if depth == 0 { 1024 } else { depth as usize };
        Arc::new(SubShared {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                bytes: 0,
                depth,
                lost: 0,
                end: None,
                end_taken: false,
                waker: None,
                route: Route::None,
                cancelled: false,
                disconnect: false,
            }),
            ready: Condvar::new(),
        })
    }

    /// A subscription this side holds at a peer with `opts`: its own queue follows the
    /// chosen policy too (a full queue ends a [`crate::SlowPolicy::Disconnect`] one here,
    /// since the peer's queue never fills while this side reads the socket).
    pub(crate) fn remote(opts: &crate::SubscribeOptions) -> Arc<SubShared> {
        let s = Self::new(opts.queue_depth);
        s.lock().disconnect = opts.policy == crate::SlowPolicy::Disconnect;
        s
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where to unsubscribe; if the application already dropped it, unsubscribes at once.
    pub(crate) fn set_route(&self, route: Route) {
        let mut g = self.lock();
        if g.cancelled {
            drop(g);
            send_unsubscribe(&route);
            return;
        }
        g.route = route;
    }

    /// Whether the application dropped its subscription.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Queues an event (the oldest is dropped and counted as lost when the queue is full).
    /// Returns `false` if the queue was full.
    pub(crate) fn push(&self, lost: u32, topic: Bytes, payload: Bytes) -> bool {
        let mut g = self.lock();
        if g.end.is_some() || g.cancelled {
            return true;
        }
        let mut room = true;
        let incoming = topic.len() + payload.len();
        let full = g.queue.len() >= g.depth
            || (!g.queue.is_empty() && g.bytes + incoming > MAX_QUEUED_BYTES);
        if full && g.disconnect {
            // The events queued stay readable; then the reader learns why it ended.
            let depth = g.depth;
            g.end = Some(Err(Status::new(
                crate::StatusCode::ResourceExhausted,
                format!(
                    "subscriber too slow: its own queue of {depth} events (or 16 MiB) was full \
                     (SlowPolicy::Disconnect)"
                ),
            )));
            let route = std::mem::replace(&mut g.route, Route::None);
            let w = g.waker.take();
            drop(g);
            send_unsubscribe(&route);
            self.ready.notify_all();
            if let Some(w) = w {
                w.wake();
            }
            return false;
        }
        while g.queue.len() >= g.depth
            || (!g.queue.is_empty() && g.bytes + incoming > MAX_QUEUED_BYTES)
        {
            room = false;
            if let Some(old) = g.queue.pop_front() {
                g.bytes -= size(&old);
                // Lost just before the event that is now first (or, with nothing left, before
                // the one being pushed).
                let carried = old.lost.saturating_add(1);
                match g.queue.front_mut() {
                    Some(head) => head.lost = head.lost.saturating_add(carried),
                    None => g.lost = g.lost.saturating_add(carried),
                }
            }
        }
        let lost = lost.saturating_add(std::mem::take(&mut g.lost));
        g.bytes += incoming;
        g.queue.push_back(Event {
            topic,
            payload,
            lost,
        });
        let w = g.waker.take();
        drop(g);
        self.ready.notify_one();
        if let Some(w) = w {
            w.wake();
        }
        room
    }

    /// Whether the queue is full.
    pub(crate) fn is_full(&self) -> bool {
        let g = self.lock();
        g.queue.len() >= g.depth
    }

    /// The subscription ended (first end wins).
    pub(crate) fn end(&self, end: Result<(), Status>) {
        let mut g = self.lock();
        if g.end.is_none() {
            g.end = Some(end);
        }
        g.route = Route::None;
        let w = g.waker.take();
        drop(g);
        self.ready.notify_all();
        if let Some(w) = w {
            w.wake();
        }
    }

    fn take(g: &mut Inner) -> Result<Option<Event>, RecvError> {
        if let Some(e) = g.queue.pop_front() {
            g.bytes -= size(&e);
            return Ok(Some(e));
        }
        match &g.end {
            Some(end) => {
                g.end_taken = true;
                Err(RecvError::Ended(match end {
                    Ok(()) => Status::new(crate::StatusCode::Ok, "the publisher ended it"),
                    Err(st) => st.clone(),
                }))
            }
            None => Ok(None),
        }
    }

    pub(crate) fn try_recv(&self) -> Result<Option<Event>, RecvError> {
        Self::take(&mut self.lock())
    }

    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Result<Event, RecvError> {
        let end = Instant::now().checked_add(timeout);
        let mut g = self.lock();
        loop {
            if let Some(e) = Self::take(&mut g)? {
                return Ok(e);
            }
            let left = match end {
                Some(end) => match end.checked_duration_since(Instant::now()) {
                    Some(d) if !d.is_zero() => d,
                    _ => return Err(RecvError::Timeout),
                },
                None => Duration::from_secs(3600),
            };
            g = self
                .ready
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.lock().queue.len()
    }

    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Event, Status>>> {
        let mut g = self.lock();
        if g.end_taken && g.queue.is_empty() {
            return Poll::Ready(None);
        }
        match Self::take(&mut g) {
            Ok(Some(e)) => Poll::Ready(Some(Ok(e))),
            Ok(None) => {
                g.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Err(RecvError::Ended(st)) if st.code == crate::StatusCode::Ok => Poll::Ready(None),
            Err(RecvError::Ended(st)) => Poll::Ready(Some(Err(st))),
            Err(RecvError::Timeout) => Poll::Pending,
        }
    }

    /// The application dropped its subscription or unsubscribed: unsubscribe (once), and end
    /// it for a thread still waiting on it (`Cancelled`).
    pub(crate) fn cancel(&self) {
        let mut g = self.lock();
        if g.cancelled {
            return;
        }
        g.cancelled = true;
        g.queue.clear();
        g.bytes = 0;
        if g.end.is_none() {
            g.end = Some(Err(Status::new(
                crate::StatusCode::Cancelled,
                "unsubscribed by the application",
            )));
        }
        let route = std::mem::replace(&mut g.route, Route::None);
        let w = g.waker.take();
        drop(g);
        self.ready.notify_all();
        if let Some(w) = w {
            w.wake();
        }
        send_unsubscribe(&route);
    }
}

fn send_unsubscribe(route: &Route) {
    match route {
        Route::None => {}
        Route::Remote { inbox, conn, id } => {
            inbox.send(Command::Unsubscribe {
                conn: *conn,
                id: *id,
            });
        }
        Route::Local { inbox, key } => inbox.send(Command::UnsubscribeLocal { key: *key }),
    }
}

/// The connection-side face of a subscription this side holds at a peer.
#[derive(Debug)]
pub(crate) struct RemoteApp(pub Arc<SubShared>);

impl crate::conn::EventApp for RemoteApp {
    fn deliver(&mut self, lost: u32, topic: &[u8], payload: &[u8]) {
        self.0.push(
            lost,
            Bytes::copy_from_slice(topic),
            Bytes::copy_from_slice(payload),
        );
    }
    fn ended(&mut self, end: Result<(), Status>) {
        self.0.end(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsubscribing_wakes_a_thread_waiting_on_the_subscription() {
        let sub = std::sync::Arc::new(crate::Subscription::new(SubShared::new(4)));
        let waiter = {
            let sub = sub.clone();
            std::thread::spawn(move || sub.recv_timeout(std::time::Duration::from_secs(30)))
        };
        // Whether the waiter is already waiting or not, it sees the end, not an event.
        sub.unsubscribe();
        match waiter.join().expect("waiter") {
            Err(RecvError::Ended(st)) => assert_eq!(st.code, crate::StatusCode::Cancelled),
            other => panic!("{other:?}"),
        }
        // Pushed after the unsubscribe: not delivered.
        sub.shared
            .push(0, Bytes::from_static(b"t"), Bytes::from_static(b"x"));
        assert!(matches!(sub.try_recv(), Err(RecvError::Ended(_))));
    }

    #[test]
    fn a_full_queue_reports_the_loss_before_the_first_event_kept() {
        let sub = SubShared::new(4);
        for i in 1..=10u8 {
            sub.push(0, Bytes::from_static(b"t"), Bytes::copy_from_slice(&[i]));
        }
        let mut got = Vec::new();
        while let Ok(Some(ev)) = sub.try_recv() {
            got.push((ev.payload()[0], ev.lost()));
        }
        // #1..#6 were dropped, all just before #7; nothing between the ones kept.
        assert_eq!(got, [(7, 6), (8, 0), (9, 0), (10, 0)]);
    }

    #[test]
    fn a_queue_of_large_events_is_bounded_in_bytes_too() {
        let sub = SubShared::new(1024);
        let mib = Bytes::from(vec![0u8; 1 << 20]);
        for _ in 0..40 {
            sub.push(0, Bytes::from_static(b"t"), mib.clone());
        }
        assert!(sub.lock().bytes <= MAX_QUEUED_BYTES, "{}", sub.lock().bytes);
        let mut got = Vec::new();
        while let Ok(Some(ev)) = sub.try_recv() {
            got.push(ev.lost());
        }
        assert_eq!(got.len(), MAX_QUEUED_BYTES / ((1 << 20) + 1), "{got:?}");
        assert_eq!(
            got[0] as usize + got.len(),
            40,
            "the rest counted as lost, before the first"
        );
        assert_eq!(sub.lock().bytes, 0);
    }
}

#[cfg(test)]
mod disconnect_tests {
    use super::*;

    #[test]
    fn a_remote_disconnect_subscription_ends_when_its_own_queue_is_full() {
        let opts = crate::SubscribeOptions::new()
            .queue_depth(4)
            .on_full(crate::SlowPolicy::Disconnect);
        let sub = SubShared::remote(&opts);
        for i in 1..=10u8 {
            sub.push(0, Bytes::from_static(b"t"), Bytes::copy_from_slice(&[i]));
        }
        let mut got = Vec::new();
        let end = loop {
            match sub.try_recv() {
                Ok(Some(ev)) => got.push((ev.payload()[0], ev.lost())),
                Ok(None) => panic!("neither ended nor an event"),
                Err(e) => break e,
            }
        };
        assert_eq!(
            got,
            [(1, 0), (2, 0), (3, 0), (4, 0)],
            "what was queued, then the end"
        );
        assert!(
            matches!(&end, RecvError::Ended(st) if st.code == crate::StatusCode::ResourceExhausted),
            "{end:?}"
        );
    }
}
