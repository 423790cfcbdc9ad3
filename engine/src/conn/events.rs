//! Events on one connection, both directions (docs/protocol.md §24; docs/architecture.md
//! "Events"): the subscriptions the peer holds here (this side publishes to them) and those
//! this side holds at the peer (it receives their events), and the frames Subscribe,
//! Unsubscribe, Event, and Error when it names a subscription.
//!
//! - **Served subscriptions** (the peer subscribed here). A valid Subscribe is recorded with
//!   its bounded queue and slow-subscriber policy and reported to the core
//!   ([`Change::Added`]), which keeps the subject index and fans events out: the core
//!   appends a reference to the event, shared by all the core's subscribers, to each
//!   matching subscription's queue ([`Connection::enqueue_event`]). Events are encoded only
//!   when the transport asks for a batch (as stream messages are), so a subscriber that
//!   does not read makes its queue fill and its policy apply; what is encoded and not yet
//!   written is at most one batch.
//! - **Own subscriptions** (this side subscribed at the peer). Each has its application side
//!   ([`EventApp`]); an Event's sequence number tells how many the publisher dropped.
//! - **Published events** (Event with id 0) are checked and handed to the core
//!   ([`Connection::take_published`]), which fans them out to every subscription of the
//!   engine.

use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;
use netron_codec::hpack::Header;
use netron_codec::subject::{Pattern, Subject};
use netron_codec::{Flags, Frame, FrameKind, StatusCode};
use rustc_hash::FxHashMap;

use super::{Caller, ConnError, Connection, Env};
use crate::Status;
use crate::events::{EventConfig, SlowPolicy};

/// One event published on a core: shared (not copied) by every subscription of that core it
/// is queued for.
#[derive(Debug)]
pub(crate) struct Published {
    pub topic: Bytes,
    pub payload: Bytes,
}

/// What one queued entry costs beyond its topic and payload, counted against
/// `EventConfig::max_queued_bytes`: its queue slot (sequence number and reference) and the
/// shared event's own allocation (reference counts and the two `Bytes` handles), counted for
/// every entry, shared or not. Without it an empty event counted 1 byte while its entry took
/// 16 or more: 16 Mi entries (266 MiB) fitted under the 16 MiB bound (fresh user R11's
/// finding 2).
pub(crate) const ENTRY_BYTES: usize = std::mem::size_of::<(u32, Rc<Published>)>()
    + std::mem::size_of::<Published>()
    + 2 * std::mem::size_of::<usize>();

impl Published {
    /// Bytes a queued reference to it is counted for: topic, payload and [`ENTRY_BYTES`].
    fn size(&self) -> usize {
        self.topic.len() + self.payload.len() + ENTRY_BYTES
    }
}

/// The application side of a subscription this side holds at the peer. Implementations
/// buffer and wake; they never call back into the connection.
pub(crate) trait EventApp: std::fmt::Debug {
    /// An event arrived; the publisher dropped `lost` events of this subscription before it.
    fn deliver(&mut self, lost: u32, topic: &[u8], payload: &[u8]);
    /// The subscription ended: OK (the publisher's Unsubscribe), or with a status (its
    /// Error, or the connection ended).
    fn ended(&mut self, end: Result<(), Status>);
}

/// A change of the served subscriptions, for the core's subject index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Added(u32),
    Removed(u32),
}

/// What became of an event offered to a served subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// Queued (possibly after dropping the oldest, counted).
    Queued,
    /// Not queued (too large for the peer), counted; the subscription goes on.
    Skipped,
    /// The subscription is gone (ended now by its policy, or earlier).
    Gone,
}

struct Served {
    pattern: Box<[u8]>,
    group: Option<Box<[u8]>>,
    depth: usize,
    policy: SlowPolicy,
    /// The next sequence number (assigned at match time, §24.3).
    seq: u32,
    queue: VecDeque<(u32, Rc<Published>)>,
    /// Whether its id is in `Events::ready` (at most once: it was pushed once per event
    /// queued into an emptied queue, so a depth-1 subscription nobody read grew the list by
    /// one entry per event, R11's finding 1, 2.5 GiB in 17 s).
    in_ready: bool,
    /// The subscriber accepts loss and DATAGRAM_EVENTS is in force: events go in QUIC
    /// datagrams where they fit (§27.6).
    datagrams: bool,
}

struct Mine {
    /// `None` once this side unsubscribed: the id stays in use until the final frame.
    app: Option<Box<dyn EventApp>>,
    /// The sequence number expected next.
    next: u32,
}

impl std::fmt::Debug for Mine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mine").field("next", &self.next).finish()
    }
}

/// The events state of one connection (made on first use).
#[derive(Default)]
pub(crate) struct Events {
    served: FxHashMap<u32, Served>,
    mine: FxHashMap<u32, Mine>,
    /// Served subscriptions with queued events, round-robin.
    ready: VecDeque<u32>,
    changes: Vec<Change>,
    published: Vec<Published>,
    /// Bytes of the events queued for served subscriptions (each reference counted whole).
    queued_bytes: usize,
    /// Events going out in QUIC datagrams (§27.6: conn/event_datagrams.rs).
    pub(super) datagrams: super::event_datagrams::Datagrams,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("served", &self.served.len())
            .field("mine", &self.mine.len())
            .field("queued_bytes", &self.queued_bytes)
            .finish_non_exhaustive()
    }
}

impl Events {
    fn remove_served(&mut self, id: u32) -> bool {
        match self.served.remove(&id) {
            Some(s) => {
                self.queued_bytes -= s.queue.iter().map(|(_, e)| e.size()).sum::<usize>();
                self.datagrams.served -= usize::from(s.datagrams);
                self.changes.push(Change::Removed(id));
                true
            }
            None => false,
        }
    }
}

impl<C: Caller> Connection<C> {
    fn events_mut(&mut self) -> &mut Events {
        self.events.get_or_insert_with(Box::default)
    }

    fn event_cfg(&self) -> &EventConfig {
        &self.cfg.events
    }

    /// Whether EVENTS is in force on this connection (docs/protocol.md §21).
    pub(super) fn events_in_force(&self) -> bool {
        self.settings
            .as_ref()
            .is_some_and(|s| s.features & netron_codec::features::EVENTS != 0)
    }

    /// Whether `id` names a subscription the peer holds here.
    pub(crate) fn has_served(&self, id: u32) -> bool {
        self.events
            .as_ref()
            .is_some_and(|e| e.served.contains_key(&id))
    }

    /// Whether `id` names a subscription this side holds at the peer.
    pub(crate) fn has_mine(&self, id: u32) -> bool {
        self.events
            .as_ref()
            .is_some_and(|e| e.mine.contains_key(&id))
    }

    /// Whether queued events wait for a batch.
    #[inline]
    pub(super) fn events_want_write(&self) -> bool {
        self.events.as_ref().is_some_and(|e| !e.ready.is_empty())
    }

    /// Whether the core has index changes or published events to take.
    #[inline]
    pub(crate) fn has_event_news(&self) -> bool {
        self.events
            .as_ref()
            .is_some_and(|e| !e.changes.is_empty() || !e.published.is_empty())
    }

    /// Takes the changes of the served subscriptions (for the core's subject index).
    pub(crate) fn take_event_changes(&mut self, into: &mut Vec<Change>) {
        if let Some(e) = self.events.as_mut() {
            into.append(&mut e.changes);
        }
    }

    /// Takes the events the peer published (for the core to fan out).
    pub(crate) fn take_published(&mut self, into: &mut Vec<Published>) {
        if let Some(e) = self.events.as_mut() {
            into.append(&mut e.published);
        }
    }

    /// The pattern and queue group of served subscription `id`.
    pub(crate) fn served_pattern(&self, id: u32) -> Option<(&[u8], Option<&[u8]>)> {
        let s = self.events.as_ref()?.served.get(&id)?;
        Some((&s.pattern, s.group.as_deref()))
    }

    /// Served subscriptions and the bytes of the events queued for them (gauges).
    pub(crate) fn event_gauges(&self) -> (usize, usize) {
        self.events
            .as_ref()
            .map_or((0, 0), |e| (e.served.len(), e.queued_bytes))
    }

    /// Subscribe, Unsubscribe or Event from the peer.
    pub(super) fn on_event_frame(
        &mut self,
        frame: Frame<'_>,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        match frame.kind() {
            FrameKind::Subscribe => self.on_subscribe(frame, env),
            FrameKind::Unsubscribe => self.on_unsubscribe(frame, env),
            _ => self.on_event(frame, env),
        }
    }

    fn on_subscribe(&mut self, frame: Frame<'_>, env: &mut Env<'_>) -> Result<(), ConnError> {
        let id = frame.id();
        self.check_peer_id(id)?;
        env.stats.subscriptions_in += 1;
        // A Subscribe opens an exchange, as a Request does: it earns half a frame of the
        // budget its Unsubscribe spends (so subscribe/unsubscribe churn is paid for by
        // real subscriptions, and a pure churn flood runs dry: fresh user R11's finding 5).
        self.budget.refund_half();
        if !self.events_in_force() {
            env.stats.count_error("feature_not_negotiated");
            return self.answer_error(
                id,
                StatusCode::Unimplemented,
                "events (EVENTS) are not in force on this connection",
            );
        }
        if self.refuses_after_go_away(id) {
            return self.answer_error(
                id,
                StatusCode::Unavailable,
                "the connection is going away (GoAway); subscribe on another connection",
            );
        }
        if self.early_data {
            env.stats.count_error("zero_rtt_refused");
            return self.answer_error(
                id,
                StatusCode::Unavailable,
                "subscriptions are not taken in QUIC 0-RTT (before the handshake completed): \
                 subscribe again on this connection now that it is complete",
            );
        }
        let body = netron_codec::control::read_subscribe(&frame)?;
        let pattern = body.pattern().unwrap_or("").as_bytes();
        let cfg = *self.event_cfg();
        if pattern.len() > cfg.max_subject_len {
            env.stats.count_error("bad_subject");
            let msg = format!(
                "subscription pattern of {} bytes is longer than EventConfig::max_subject_len \
                 ({} bytes)",
                pattern.len(),
                cfg.max_subject_len
            );
            return self.answer_error(id, StatusCode::InvalidArgument, &msg);
        }
        if let Err(e) = Pattern::parse(pattern) {
            env.stats.count_error(e.counter());
            let msg = format!("invalid subscription pattern: {e}");
            return self.answer_error(id, e.status(), &msg);
        }
        let group = body.queue_group().filter(|g| !g.is_empty());
        if group.is_some_and(|g| g.len() > cfg.max_subject_len) {
            env.stats.count_error("bad_subject");
            let msg = format!(
                "queue group name longer than EventConfig::max_subject_len ({} bytes)",
                cfg.max_subject_len
            );
            return self.answer_error(id, StatusCode::InvalidArgument, &msg);
        }
        let held = self.events.as_ref().map_or(0, |e| e.served.len());
        if held >= cfg.max_subscriptions {
            env.stats.count_error("subscription_limit");
            let msg = format!(
                "too many subscriptions on this connection (EventConfig::max_subscriptions = \
                 {}); unsubscribe first",
                cfg.max_subscriptions
            );
            return self.answer_error(id, StatusCode::ResourceExhausted, &msg);
        }
        let served = Served {
            pattern: pattern.into(),
            group: group.map(|g| g.as_bytes().into()),
            depth: cfg.depth(body.queue_depth()),
            policy: SlowPolicy::from_wire(body.on_full()).or(cfg.default_policy),
            seq: 0,
            queue: VecDeque::new(),
            in_ready: false,
            datagrams: body.datagrams() && self.datagram_events_in_force(),
        };
        let ev = self.events_mut();
        ev.datagrams.served += usize::from(served.datagrams);
        ev.served.insert(id, served);
        ev.changes.push(Change::Added(id));
        Ok(())
    }

    fn on_unsubscribe(&mut self, frame: Frame<'_>, env: &mut Env<'_>) -> Result<(), ConnError> {
        let id = frame.id();
        if !self.events_in_force() {
            env.stats.count_error("feature_not_negotiated");
            return self.charge_idle_frame(env);
        }
        if self.events.as_mut().is_some_and(|e| e.remove_served(id)) {
            // The subscriber ended it: answer with the final frame. Work started and thrown
            // away, as a call's Cancel: it costs a frame of the budget.
            self.charge_idle_frame(env)?;
            return self.queue(|_, b| b.empty_frame(FrameKind::Unsubscribe, id, 0));
        }
        if let Some(m) = self.events.as_mut().and_then(|e| e.mine.remove(&id)) {
            // The publisher's final frame.
            if let Some(mut app) = m.app {
                app.ended(Ok(()));
            }
            return Ok(());
        }
        env.stats.count_error("unknown_subscription");
        self.charge_idle_frame(env)
    }

    /// An Event: delivered on one of this side's subscriptions, or published (id 0).
    fn on_event(&mut self, frame: Frame<'_>, env: &mut Env<'_>) -> Result<(), ConnError> {
        if !self.events_in_force() {
            env.stats.count_error("feature_not_negotiated");
            return self.charge_idle_frame(env);
        }
        let id = frame.id();
        if id != 0 && !self.has_mine(id) {
            // An Event for no subscription (never made, or ended): ignored, counted, budgeted.
            env.stats.count_error("unknown_subscription");
            return self.charge_idle_frame(env);
        }
        let max = self.event_cfg().max_subject_len;
        let topic_ok = match self.headers.topic() {
            Some(t) if t.len() > max => false,
            Some(t) => Subject::parse(t).is_ok(),
            None => false,
        };
        if !topic_ok {
            // §24.2: dropped and counted, not a connection error.
            env.stats.count_error("bad_subject");
            return self.charge_idle_frame(env);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = self.deliver_event(&frame, &mut scratch, env);
        self.release_scratch(scratch);
        r
    }

    fn deliver_event(
        &mut self,
        frame: &Frame<'_>,
        scratch: &mut Vec<u8>,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        let payload = if frame.flags().contains(Flags::COMPRESSED) {
            scratch.clear();
            self.check_decompress(frame.payload(), scratch)?;
            self.decompressor
                .decompress_into(frame.payload(), scratch)
                .map_err(|e| ConnError::from(netron_codec::DecodeError::from(e)))?;
            &scratch[..]
        } else {
            frame.payload()
        };
        let topic = self.headers.topic().unwrap_or_default();
        let id = frame.id();
        let ev = self.events.get_or_insert_with(Box::default);
        if id == 0 {
            env.stats.events_published_in += 1;
            ev.published.push(Published {
                topic: Bytes::copy_from_slice(topic),
                payload: Bytes::copy_from_slice(payload),
            });
            return Ok(());
        }
        let Some(m) = ev.mine.get_mut(&id) else {
            return Ok(());
        };
        let seq = frame.arg();
        if super::client::serial_after(m.next, seq) {
            // Not after the highest number seen: a QUIC datagram that was overtaken (§24.3,
            // §27.6); streams deliver in order, so never there. Dropped.
            return Ok(());
        }
        let lost = seq.wrapping_sub(m.next);
        m.next = seq.wrapping_add(1);
        env.stats.events_in += 1;
        if let Some(app) = m.app.as_mut() {
            app.deliver(lost, topic, payload);
        }
        Ok(())
    }

    /// `Error(id)` from the publisher: the subscription ended with a status.
    pub(super) fn on_subscription_error(
        &mut self,
        frame: Frame<'_>,
        env: &mut Env<'_>,
    ) -> Result<(), ConnError> {
        let body = netron_codec::control::read_error(&frame)?;
        let st = Status::new(
            netron_codec::control::status(body.status()),
            super::truncate_message(body.message().unwrap_or("")).to_owned(),
        );
        env.stats.count_error("subscription_failed");
        if let Some(m) = self
            .events
            .as_mut()
            .and_then(|e| e.mine.remove(&frame.id()))
        {
            if let Some(mut app) = m.app {
                app.ended(Err(st));
            }
        }
        Ok(())
    }

    /// `Unavailable` unless the connection is open and the peer is not going away (nor this
    /// side, when `leaving` says it is), `Unimplemented` unless EVENTS is in force.
    fn events_usable(&self, leaving: bool) -> Result<(), Status> {
        if !self.is_open() || self.peer_going_away || leaving {
            return Err(Status::unavailable(
                self.close_reason
                    .clone()
                    .unwrap_or_else(|| "the connection is not open (or going away)".to_owned()),
            ));
        }
        if !self.events_in_force() {
            return Err(Status::new(
                StatusCode::Unimplemented,
                "events (EVENTS) are not in force on this connection",
            ));
        }
        Ok(())
    }

    /// Subscribes at the peer to `pattern`; events go to `app`. Returns the subscription id.
    ///
    /// Errors (nothing sent): the connection is not open or the peer is going away
    /// (`Unavailable`), EVENTS is not in force (`Unimplemented`), the pattern or group is
    /// invalid (`InvalidArgument`).
    pub(crate) fn subscribe(
        &mut self,
        pattern: &str,
        opts: &crate::events::SubscribeOptions,
        app: Box<dyn EventApp>,
    ) -> Result<u32, Status> {
        self.events_usable(self.going_away)?;
        if let Err(e) = Pattern::parse(pattern.as_bytes()) {
            return Err(Status::new(
                StatusCode::InvalidArgument,
                format!("invalid subscription pattern: {e}"),
            ));
        }
        let group = opts.group.as_deref().unwrap_or("");
        if group.len() > netron_codec::subject::MAX_SUBJECT_LEN {
            return Err(Status::new(
                StatusCode::InvalidArgument,
                "queue group name longer than 256 bytes",
            ));
        }
        let id = loop {
            let id = self.calls.allocate_id();
            if !self.has_stream(id) && !self.has_mine(id) {
                break id;
            }
        };
        let fields = netron_codec::control::SubscribeFields {
            pattern,
            queue_depth: opts.queue_depth,
            datagrams: opts.datagrams && self.datagram_events_in_force(),
            on_full: opts.policy.wire(),
            queue_group: group,
        };
        self.queue(|c, b| c.control.subscribe_with(b, id, &fields).map(|_| ()))
            .map_err(|e| Status::new(e.status, e.message))?;
        self.events_mut().mine.insert(
            id,
            Mine {
                app: Some(app),
                next: 0,
            },
        );
        Ok(id)
    }

    /// Ends this side's subscription `id` (Unsubscribe); nothing more is delivered to its
    /// application, and the id is free once the publisher's final frame arrived.
    pub(crate) fn unsubscribe(&mut self, id: u32) {
        let Some(m) = self.events.as_mut().and_then(|e| e.mine.get_mut(&id)) else {
            return;
        };
        if m.app.take().is_some() && self.is_open() {
            let _ = self.queue(|_, b| b.empty_frame(FrameKind::Unsubscribe, id, 0));
        }
    }

    /// Publishes an event to the peer (Event with id 0 and `:topic`), which delivers it to
    /// its matching subscriptions.
    ///
    /// Errors (nothing sent): as [`Connection::subscribe`], an invalid topic
    /// (`InvalidArgument`), or an event above the peer's frame size or the backlog
    /// (`ResourceExhausted`).
    pub(crate) fn publish(&mut self, topic: &[u8], payload: &[u8]) -> Result<(), Status> {
        self.events_usable(false)?;
        if let Err(e) = Subject::parse(topic) {
            return Err(Status::new(
                StatusCode::InvalidArgument,
                format!("invalid event topic: {e}"),
            ));
        }
        self.check_event_size(topic, payload)?;
        if self.backlog_bytes() >= self.cfg.max_backlog_bytes {
            return Err(Status::new(
                StatusCode::ResourceExhausted,
                "the peer is not reading: output backlog above ProtocolConfig::max_backlog_bytes",
            ));
        }
        self.queue(|c, b| {
            b.frame(FrameKind::Event, 0)?
                .headers(&mut c.enc, &[Header::topic(topic)])?
                .payload(payload)
                .finish()
                .map(|_| ())
        })
        .map_err(|e| Status::new(e.status, e.message))
    }

    /// Refuses an event that could not fit in a frame the peer accepts (before anything is
    /// encoded: header compression cannot roll back).
    fn check_event_size(&self, topic: &[u8], payload: &[u8]) -> Result<(), Status> {
        let max = self.limits().max_frame_size as usize;
        let bound = 16 + 8 + topic.len() + payload.len();
        if bound > max {
            return Err(Status::new(
                StatusCode::ResourceExhausted,
                format!(
                    "an event of {bound} bytes is above the peer's max_frame_size ({max} bytes)"
                ),
            ));
        }
        Ok(())
    }

    /// Offers event `ev` to served subscription `id` (the core matched its pattern). The
    /// event gets the subscription's next sequence number; when the queue is full the
    /// subscription's policy applies (docs/protocol.md §24.4).
    pub(crate) fn enqueue_event(
        &mut self,
        id: u32,
        ev: &Rc<Published>,
        stats: &mut crate::stats::CoreStats,
    ) -> Enqueued {
        let too_large = self.check_event_size(&ev.topic, &ev.payload).is_err();
        let max_bytes = self.event_cfg().max_queued_bytes;
        let open = self.is_open();
        let Some(e) = self.events.as_mut() else {
            return Enqueued::Gone;
        };
        let Some(s) = e.served.get_mut(&id) else {
            return Enqueued::Gone;
        };
        if !open {
            return Enqueued::Gone;
        }
        let seq = s.seq;
        s.seq = s.seq.wrapping_add(1);
        if too_large {
            // Its number is spent: the subscriber sees the gap.
            stats.count_error("event_too_large");
            return Enqueued::Skipped;
        }
        // Full on depth, or on the connection's queued bytes (while this subscription has
        // something queued to drop: one event always fits, so the bound holds per connection
        // plus one event per subscription).
        let over =
            |len: usize, bytes: usize| len >= s.depth || (len > 0 && bytes + ev.size() > max_bytes);
        while over(s.queue.len(), e.queued_bytes) {
            match s.policy {
                SlowPolicy::Disconnect => {
                    let depth = s.depth;
                    e.remove_served(id);
                    stats.count_error("slow_subscriber");
                    let msg = format!(
                        "subscriber too slow: its queue of {depth} events (Subscribe \
                         queue_depth) or the connection's {max_bytes} bytes of queued events \
                         (EventConfig::max_queued_bytes) was full"
                    );
                    let _ = self.answer_error(id, StatusCode::ResourceExhausted, &msg);
                    return Enqueued::Gone;
                }
                _ => {
                    if let Some((_, old)) = s.queue.pop_front() {
                        e.queued_bytes -= old.size();
                    }
                    stats.events_dropped += 1;
                }
            }
        }
        if !s.in_ready {
            s.in_ready = true;
            e.ready.push_back(id);
        }
        s.queue.push_back((seq, Rc::clone(ev)));
        e.queued_bytes += ev.size();
        Enqueued::Queued
    }

    /// Entries in the round-robin list of subscriptions with queued events (tests).
    #[cfg(test)]
    pub(crate) fn ready_len(&self) -> usize {
        self.events.as_ref().map_or(0, |e| e.ready.len())
    }

    /// Encodes queued events into the current batch, one per subscription per round, while
    /// no full batch waits for the transport (called when the transport asks for a batch).
    pub(super) fn pump_events(&mut self) {
        if !self.is_open() {
            return;
        }
        while self.tx_full.is_empty() {
            let Some(e) = self.events.as_mut() else {
                return;
            };
            let Some(id) = e.ready.pop_front() else {
                return;
            };
            let Some(s) = e.served.get_mut(&id) else {
                continue;
            };
            s.in_ready = false;
            let Some((seq, ev)) = s.queue.pop_front() else {
                continue;
            };
            if !s.queue.is_empty() {
                s.in_ready = true;
                e.ready.push_back(id);
            }
            e.queued_bytes -= ev.size();
            if s.datagrams && self.encode_datagram_event(id, seq, &ev.topic, &ev.payload) {
                continue;
            }
            let r = self.queue(|c, b| {
                b.frame(FrameKind::Event, id)?
                    .arg(seq)
                    .headers(&mut c.enc, &[Header::topic(&ev.topic)])?
                    .payload(&ev.payload)
                    .finish()
                    .map(|_| ())
            });
            if let Err(e) = r {
                // Sizes were checked when it was queued: the header encoder may be ahead of
                // the peer's decoder now, so the connection cannot go on.
                self.close_with(e);
                return;
            }
        }
    }

    /// The connection ended: this side's subscriptions end with `status`, the served ones
    /// are forgotten (reported to the core) with their queues.
    pub(super) fn fail_events(&mut self, status: &Status) {
        let Some(e) = self.events.as_mut() else {
            return;
        };
        for (_, m) in e.mine.drain() {
            if let Some(mut app) = m.app {
                app.ended(Err(status.clone()));
            }
        }
        let ids: Vec<u32> = e.served.keys().copied().collect();
        for id in ids {
            e.remove_served(id);
        }
        e.ready.clear();
    }
}
