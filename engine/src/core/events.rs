//! Events on a core (docs/architecture.md "Events"): the subject index kept from the
//! connections' subscription changes, fan-out of each published event to every matching
//! subscription of the core (one shared copy of the event per core), forwarding to the
//! engine's other cores (one command per core, not per subscriber), and the caller-driven
//! core's publish / subscribe.

use std::rc::Rc;

use bytes::Bytes;

use super::subjects::Target;
use super::*;
use crate::conn::{Change, Enqueued, Published};
use crate::events::shared::{RemoteApp, Route};
use crate::events::{SlowPolicy, SubShared, SubscribeOptions, Subscription};

/// A core's events state.
#[derive(Debug, Default)]
pub(super) struct CoreEvents {
    pub(super) index: subjects::SubjectIndex,
    /// The inboxes of the engine's other cores (published events are forwarded to them).
    pub(super) siblings: Vec<Arc<Inbox>>,
    changes: Vec<Change>,
    published: Vec<Published>,
    matched: Vec<usize>,
}

/// Keys of in-process subscriptions, unique in the process.
static LOCAL_KEYS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(crate) fn local_key() -> u64 {
    LOCAL_KEYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Core {
    /// A connection reported subscription changes or published events: update the index,
    /// fan the events out.
    pub(super) fn event_news(&mut self, key: usize) {
        let Some(en) = self.conns.get_mut(key) else {
            return;
        };
        let ev = &mut self.events;
        en.conn.take_event_changes(&mut ev.changes);
        en.conn.take_published(&mut ev.published);
        let mut changes = std::mem::take(&mut ev.changes);
        for ch in changes.drain(..) {
            match ch {
                Change::Added(id) => {
                    if let Some((p, g)) = en.conn.served_pattern(id) {
                        let t = Target::Conn {
                            key: key as u32,
                            id,
                        };
                        let _ = ev.index.insert(p, g, t);
                    }
                }
                Change::Removed(id) => ev.index.remove_conn_sub(key as u32, id),
            }
        }
        self.events.changes = changes;
        let mut published = std::mem::take(&mut self.events.published);
        for p in published.drain(..) {
            self.fan_out(&Rc::new(p), None, Vec::new());
        }
        self.events.published = published;
    }

    /// Delivers `ev` to every matching subscription of this core (skipping the queue groups
    /// in `served`, which an earlier core gave it to), then passes it on to the next core of
    /// the engine while `hops` (`None`: the event enters here, all other cores to go) is
    /// not zero: every core gets it once, and each queue group one member engine-wide.
    pub(super) fn fan_out(
        &mut self,
        ev: &Rc<Published>,
        hops: Option<u32>,
        mut served: Vec<Box<[u8]>>,
    ) {
        let mut matched = std::mem::take(&mut self.events.matched);
        self.events
            .index
            .matches(&ev.topic, &mut matched, &mut served);
        let hops = hops.unwrap_or(self.events.siblings.len() as u32);
        if hops > 0 {
            let size = ev.topic.len() + ev.payload.len();
            if let Some(next) = self.events.siblings.first() {
                if next.reserve_event(size) {
                    next.push(Command::Publish {
                        topic: ev.topic.clone(),
                        payload: ev.payload.clone(),
                        hops: hops - 1,
                        served,
                    });
                } else {
                    // The next core is that far behind (64 MiB of events queued for it): its
                    // subscribers, and those of the cores after it, miss this event.
                    self.stats.count_error("forward_dropped");
                }
            }
        }
        for &e in &matched {
            let Some(t) = self.events.index.target(e) else {
                continue;
            };
            match t.clone() {
                Target::Conn { key, id } => {
                    let r = match self.conns.get_mut(key as usize) {
                        Some(en) if !en.closing => en.conn.enqueue_event(id, ev, &mut self.stats),
                        _ => Enqueued::Gone,
                    };
                    match r {
                        Enqueued::Queued => self.stats.events_out += 1,
                        Enqueued::Skipped => {}
                        Enqueued::Gone => self.events.index.remove(e),
                    }
                    self.mark_dirty(key as usize);
                }
                Target::Local { sub, policy, .. } => {
                    if sub.is_cancelled() {
                        self.events.index.remove(e);
                    } else if policy == SlowPolicy::Disconnect && sub.is_full() {
                        self.stats.count_error("slow_subscriber");
                        sub.end(Err(Status::new(
                            StatusCode::ResourceExhausted,
                            "subscriber too slow: its queue (SubscribeOptions::queue_depth) was \
                             full",
                        )));
                        self.events.index.remove(e);
                    } else {
                        if !sub.push(0, ev.topic.clone(), ev.payload.clone()) {
                            self.stats.events_dropped += 1;
                        }
                        self.stats.events_out += 1;
                    }
                }
            }
        }
        self.events.matched = matched;
    }

    /// Subscribes in-process (no connection) at this core; `key` names it for the
    /// unsubscribe.
    pub(super) fn add_local_sub(
        &mut self,
        pattern: &[u8],
        opts: &SubscribeOptions,
        sub: Arc<SubShared>,
        key: u64,
    ) {
        let policy = opts.policy.or(self.cfg.protocol.events.default_policy);
        let t = Target::Local {
            key,
            sub: sub.clone(),
            policy,
        };
        match self
            .events
            .index
            .insert(pattern, opts.group.as_deref().map(str::as_bytes), t)
        {
            Ok(_) => sub.set_route(Route::Local {
                inbox: self.inbox.clone(),
                key,
            }),
            Err(e) => sub.end(Err(Status::new(
                StatusCode::InvalidArgument,
                format!("invalid subscription pattern: {e}"),
            ))),
        }
    }

    /// Subscribes at the peer of client connection `conn` (a command from a channel).
    pub(super) fn subscribe_for(
        &mut self,
        conn: ConnRef,
        pattern: &str,
        opts: &SubscribeOptions,
        sub: Arc<SubShared>,
    ) {
        let key = conn.key as usize;
        let Some(en) = self
            .conns
            .get_mut(key)
            .filter(|en| en.generation == conn.generation && !en.closing)
        else {
            sub.end(Err(Status::unavailable("the connection is closed")));
            return;
        };
        match en
            .conn
            .subscribe(pattern, opts, Box::new(RemoteApp(sub.clone())))
        {
            Ok(id) => {
                sub.set_route(Route::Remote {
                    inbox: self.inbox.clone(),
                    conn,
                    id,
                });
                self.mark_dirty(key);
            }
            Err(st) => sub.end(Err(st)),
        }
    }

    /// Publishes to the peer of connection `conn`.
    pub(super) fn publish_for(
        &mut self,
        conn: ConnRef,
        topic: &[u8],
        payload: &[u8],
    ) -> Result<(), Status> {
        let key = conn.key as usize;
        let Some(en) = self
            .conns
            .get_mut(key)
            .filter(|en| en.generation == conn.generation && !en.closing)
        else {
            return Err(Status::unavailable("the connection is closed"));
        };
        let r = en.conn.publish(topic, payload);
        self.mark_dirty(key);
        r
    }

    /// Ends subscription `id` this side holds at the peer of `conn`.
    pub(super) fn unsubscribe_for(&mut self, conn: ConnRef, id: u32) {
        let key = conn.key as usize;
        if let Some(en) = self
            .conns
            .get_mut(key)
            .filter(|en| en.generation == conn.generation && !en.closing)
        {
            en.conn.unsubscribe(id);
            self.mark_dirty(key);
        }
    }

    /// Subscriptions held at this core and the bytes queued for them (gauges).
    pub(super) fn event_gauges(&self) -> (u64, u64) {
        let (mut subs, mut bytes) = (self.events.index.local_count() as u64, 0u64);
        for (_, en) in &self.conns {
            let (s, b) = en.conn.event_gauges();
            subs += s as u64;
            bytes += b as u64;
        }
        (subs, bytes)
    }
}

/// Publish and subscribe on a caller-driven core (docs/guide.md "Events").
impl Core {
    /// Publishes an event to the peer of client connection `conn` (Event with id 0,
    /// docs/protocol.md §24.1): the peer delivers it to its matching subscriptions.
    /// Fire-and-forget: nothing says whether anyone received it (§24.5).
    ///
    /// # Errors
    /// `InvalidArgument` for an invalid topic, `Unimplemented` if the peer does not take
    /// events, `ResourceExhausted` above the peer's frame size or the output backlog,
    /// `Unavailable` for a closed connection. Nothing is sent then.
    pub fn publish(&mut self, conn: ConnId, topic: &str, payload: &[u8]) -> Result<(), Status> {
        self.publish_for(conn.0, topic.as_bytes(), payload)
    }

    /// Subscribes at the peer of client connection `conn` to the subjects matching
    /// `pattern` (`orders.*`, `orders.>`). Events arrive as this core runs.
    ///
    /// # Errors
    /// `InvalidArgument` for an invalid pattern, `Unimplemented` if the peer does not take
    /// subscriptions, `Unavailable` for a closed connection. A refusal by the peer (its
    /// subscription limit, say) ends the subscription with that status instead.
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        pattern: &str,
        opts: SubscribeOptions,
    ) -> Result<Subscription, Status> {
        let sub = SubShared::remote(&opts);
        self.subscribe_for(conn.0, pattern, &opts, sub.clone());
        if let Err(crate::events::RecvError::Ended(st)) = sub.try_recv() {
            return Err(st);
        }
        Ok(Subscription::new(sub))
    }

    /// Publishes an event on this core itself: its in-process subscriptions and the
    /// subscriptions its peers hold get it (and, on an engine, its other cores).
    ///
    /// # Errors
    /// `InvalidArgument` for an invalid topic; `ResourceExhausted` for an event no frame of
    /// this core's connections can carry (above its `max_frame_size`).
    pub fn publish_local(&mut self, topic: &str, payload: &[u8]) -> Result<(), Status> {
        check_topic(topic)?;
        self.inbox.check_event_size(topic, payload.len())?;
        let ev = Rc::new(Published {
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            payload: Bytes::copy_from_slice(payload),
        });
        self.fan_out(&ev, None, Vec::new());
        Ok(())
    }

    /// Subscribes in-process at this core to events published on it (by its peers, or with
    /// [`Core::publish_local`]).
    ///
    /// # Errors
    /// `InvalidArgument` for an invalid pattern.
    pub fn subscribe_local(
        &mut self,
        pattern: &str,
        opts: SubscribeOptions,
    ) -> Result<Subscription, Status> {
        check_pattern(pattern)?;
        let sub = SubShared::new(opts.queue_depth);
        let key = local_key();
        self.add_local_sub(pattern.as_bytes(), &opts, sub.clone(), key);
        Ok(Subscription::new(sub))
    }
}

/// `InvalidArgument` unless `topic` is a valid subject.
pub(crate) fn check_topic(topic: &str) -> Result<(), Status> {
    netron_codec::subject::Subject::parse(topic.as_bytes())
        .map(drop)
        .map_err(|e| {
            Status::new(
                StatusCode::InvalidArgument,
                format!("invalid event topic: {e}"),
            )
        })
}

/// `InvalidArgument` unless `pattern` is a valid pattern.
pub(crate) fn check_pattern(pattern: &str) -> Result<(), Status> {
    netron_codec::subject::Pattern::parse(pattern.as_bytes())
        .map(drop)
        .map_err(|e| {
            Status::new(
                StatusCode::InvalidArgument,
                format!("invalid subscription pattern: {e}"),
            )
        })
}
