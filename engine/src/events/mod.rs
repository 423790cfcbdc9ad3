//! Events: publish/subscribe with NATS-style subjects (docs/protocol.md §24, docs/guide.md
//! "Events", docs/architecture.md "Events").
//!
//! A [`Subscription`] is made by `subscribe(pattern, options)` on a [`crate::Channel`] (at the
//! peer), on the caller-driven [`crate::Core`], on a handler's [`crate::Peer`], or on the
//! [`crate::Engine`] itself (in-process: it sees every event published on the engine). It
//! yields [`Event`]s: `try_recv`, blocking `recv_timeout`, or as a `futures_core::Stream`.
//! Dropping it unsubscribes.

mod config;
pub(crate) mod shared;

pub use config::{EventConfig, SlowPolicy};
pub(crate) use shared::SubShared;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use crate::Status;

/// How a subscription is made (docs/protocol.md §24.4 and queue groups).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    pub(crate) queue_depth: u32,
    pub(crate) policy: SlowPolicy,
    pub(crate) group: Option<String>,
    pub(crate) datagrams: bool,
}

impl SubscribeOptions {
    /// Default options: the publisher's default queue depth and policy, no queue group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Events the publisher may hold for this subscription while it is not read (0: the
    /// publisher's default, 1024 on a Netron engine; capped by the publisher's maximum). The
    /// subscriber's own queue (events received and not yet taken) has the same depth.
    /// Cost: up to that many events held on each side.
    pub fn queue_depth(mut self, events: u32) -> Self {
        self.queue_depth = events;
        self
    }

    /// What happens when the queue is full (default: the publisher's default, drop-oldest
    /// on a Netron engine).
    pub fn on_full(mut self, policy: SlowPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Joins queue group `group`: of the group's subscriptions at the publisher, one gets
    /// each event, as with NATS queue groups. On a Netron engine: members on the core where
    /// the event enters first (round-robin among them), else those of the next core (see
    /// docs/architecture.md "Events").
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Accepts loss for lower latency (default `false`): on a `quic://` connection whose
    /// peers both enable `QuicSettings::datagrams`, the publisher sends this subscription's
    /// events in QUIC datagrams (RFC 9221, docs/protocol.md §27.6), which are never
    /// retransmitted or held behind a lost packet; an event lost on the way, or overtaken by
    /// a later one, shows as [`Event::lost`] on the next. Events larger than the path's
    /// datagram limit, and every event on other transports, go on the subscription's stream
    /// as without this option.
    pub fn datagrams(mut self, accept_loss: bool) -> Self {
        self.datagrams = accept_loss;
        self
    }
}

/// One event received on a [`Subscription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub(crate) topic: Bytes,
    pub(crate) payload: Bytes,
    pub(crate) lost: u32,
}

impl Event {
    /// The event's subject (e.g. `orders.eu.created`).
    pub fn topic(&self) -> &[u8] {
        &self.topic
    }

    /// The event's subject as text (subjects are printable ASCII).
    pub fn topic_str(&self) -> &str {
        std::str::from_utf8(&self.topic).unwrap_or("")
    }

    /// The event's bytes.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Events of this subscription lost just before this one: dropped by the publisher
    /// because the subscription's queue was full or the event did not fit the connection's
    /// negotiated frame size (the sequence gap, docs/protocol.md §24.3), or by this side's
    /// own queue when it was not read.
    pub fn lost(&self) -> u32 {
        self.lost
    }
}

/// Why [`Subscription::recv_timeout`] returned no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// No event arrived within the timeout; the subscription goes on.
    #[error("no event within the timeout")]
    Timeout,
    /// The subscription ended: `Ok` status when the publisher ended it without error,
    /// otherwise why (e.g. `ResourceExhausted` "subscriber too slow", `Unavailable` when the
    /// connection closed). Events received before the end were all returned first.
    #[error("the subscription ended: {0}")]
    Ended(Status),
}

/// A subscription: yields the [`Event`]s whose subject matches its pattern, in order.
/// `Send + Sync`; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    shared: Arc<SubShared>,
}

impl Subscription {
    pub(crate) fn new(shared: Arc<SubShared>) -> Subscription {
        Subscription { shared }
    }

    /// The next event if one is waiting. `Err` once the subscription ended and every event
    /// received before was taken.
    ///
    /// # Errors
    /// [`RecvError::Ended`] with why it ended.
    pub fn try_recv(&self) -> Result<Option<Event>, RecvError> {
        self.shared.try_recv()
    }

    /// The next event, waiting up to `timeout` for it.
    ///
    /// # Errors
    /// [`RecvError::Timeout`], or [`RecvError::Ended`] with why the subscription ended.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Event, RecvError> {
        self.shared.recv_timeout(timeout)
    }

    /// Events received and not yet taken.
    pub fn pending(&self) -> usize {
        self.shared.pending()
    }

    /// Unsubscribes now, as dropping it does, for a subscription shared between threads:
    /// events not yet taken are dropped, and a thread waiting in
    /// [`Subscription::recv_timeout`] returns [`RecvError::Ended`] with `Cancelled`.
    pub fn unsubscribe(&self) {
        self.shared.cancel();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.cancel();
    }
}

impl futures_core::Stream for Subscription {
    type Item = Result<Event, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.shared.poll_next(cx)
    }
}

/// Sends a publish of `topic` to the peer of `conn` through its core's `inbox` (what
/// [`crate::Channel::publish`] and [`crate::Peer::publish`] share).
pub(crate) fn publish_to(
    inbox: &std::sync::Arc<crate::inbox::Inbox>,
    conn: crate::inbox::ConnRef,
    topic: &str,
    payload: Bytes,
) -> Result<(), crate::Status> {
    crate::core::check_topic(topic)?;
    inbox.check_event_size(topic, payload.len())?;
    if !inbox.reserve_event(topic.len() + payload.len()) {
        return Err(crate::inbox::events_backlog());
    }
    inbox.send(crate::inbox::Command::PublishTo {
        conn,
        topic: Bytes::copy_from_slice(topic.as_bytes()),
        payload,
    });
    Ok(())
}

/// Subscribes at the peer of `conn` through its core's `inbox` (what
/// [`crate::Channel::subscribe`] and [`crate::Peer::subscribe`] share).
pub(crate) fn subscribe_at(
    inbox: &std::sync::Arc<crate::inbox::Inbox>,
    conn: crate::inbox::ConnRef,
    pattern: &str,
    opts: SubscribeOptions,
) -> Result<Subscription, crate::Status> {
    crate::core::check_pattern(pattern)?;
    let app = SubShared::remote(&opts);
    inbox.send(crate::inbox::Command::Subscribe {
        conn,
        pattern: pattern.into(),
        opts,
        app: app.clone(),
    });
    Ok(Subscription::new(app))
}
