//! Settings of events (docs/protocol.md §24, docs/configuration.md "Events").

/// What a publisher does with a new event for a subscription whose queue is full
/// (docs/protocol.md §24.4). Chosen by the subscriber when it subscribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowPolicy {
    /// The publisher's default ([`EventConfig::with_default_policy`]).
    #[default]
    PublisherDefault,
    /// Drop the oldest queued event to make room. Its sequence number is spent, so the
    /// subscriber learns in-band how many it lost ([`crate::Event::lost`]); the publisher
    /// counts `events_dropped`.
    DropOldest,
    /// End the subscription with `ResourceExhausted` ("subscriber too slow"); the
    /// connection and other subscriptions go on. The publisher counts `slow_subscriber`.
    Disconnect,
}

impl SlowPolicy {
    /// The `on_full` byte of a Subscribe body.
    pub(crate) fn wire(self) -> u8 {
        match self {
            SlowPolicy::PublisherDefault => 0,
            SlowPolicy::DropOldest => 1,
            SlowPolicy::Disconnect => 2,
        }
    }

    /// The policy a Subscribe's `on_full` byte asks for (unknown values: the default).
    pub(crate) fn from_wire(b: u8) -> SlowPolicy {
        match b {
            1 => SlowPolicy::DropOldest,
            2 => SlowPolicy::Disconnect,
            _ => SlowPolicy::PublisherDefault,
        }
    }

    /// This policy with the publisher's default filled in.
    pub(crate) fn or(self, default: SlowPolicy) -> SlowPolicy {
        match self {
            SlowPolicy::PublisherDefault => match default {
                SlowPolicy::PublisherDefault => SlowPolicy::DropOldest,
                d => d,
            },
            p => p,
        }
    }
}

/// Limits and defaults of events, part of [`crate::ProtocolConfig`]
/// ([`crate::ProtocolConfig::with_events`]). What a subscriber can make a publisher hold is
/// at most `max_subscriptions × max_queue_depth` queued events per connection (each a
/// reference to an event shared by all its subscribers on a core, see docs/architecture.md
/// "Events").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventConfig {
    pub(crate) max_subscriptions: usize,
    pub(crate) max_subject_len: usize,
    pub(crate) default_queue_depth: u32,
    pub(crate) max_queue_depth: u32,
    pub(crate) default_policy: SlowPolicy,
    pub(crate) max_queued_bytes: usize,
}

impl Default for EventConfig {
    fn default() -> Self {
        EventConfig {
            max_subscriptions: 1024,
            max_subject_len: netron_codec::subject::MAX_SUBJECT_LEN,
            default_queue_depth: 1024,
            max_queue_depth: 65_536,
            default_policy: SlowPolicy::DropOldest,
            max_queued_bytes: 16 << 20,
        }
    }
}

impl EventConfig {
    /// Subscriptions a peer may hold open on one connection (default 1024). One more is
    /// refused with `Error(id, ResourceExhausted)` naming this setting, counter
    /// `subscription_limit`. Cost: a subscription holds its pattern and up to its queue depth
    /// of queued events.
    pub fn with_max_subscriptions(mut self, n: usize) -> Self {
        self.max_subscriptions = n;
        self
    }

    /// Longest subject or pattern accepted, in bytes (default and upper bound 256, the
    /// protocol's; docs/protocol.md §24.2). A longer pattern is refused with
    /// `Error(id, InvalidArgument)`, a longer published topic dropped; counter
    /// `bad_subject`.
    pub fn with_max_subject_len(mut self, bytes: usize) -> Self {
        self.max_subject_len = bytes.clamp(1, netron_codec::subject::MAX_SUBJECT_LEN);
        self
    }

    /// Queue depth, in events, of a subscription that asks for none (default 1024) and the
    /// most one may ask for (default 65 536). Both at least 1.
    pub fn with_queue_depth(mut self, default: u32, max: u32) -> Self {
        self.max_queue_depth = max.max(1);
        self.default_queue_depth = default.clamp(1, self.max_queue_depth);
        self
    }

    /// What happens to a subscription whose queue is full when it did not choose
    /// (default [`SlowPolicy::DropOldest`]).
    pub fn with_default_policy(mut self, policy: SlowPolicy) -> Self {
        self.default_policy = policy.or(SlowPolicy::DropOldest);
        self
    }

    /// Bytes of events (topic + payload + a fixed overhead per queued entry, 96 bytes on 64-bit:
    /// its queue slot and the shared event's allocation) queued for one connection's
    /// subscriptions together
    /// before its slow-subscriber policies apply on bytes as they do on depth (default
    /// 16 MiB, at least 1): drop-oldest drops the subscription's oldest events (counted,
    /// the subscriber sees the gap) and disconnect ends it; a subscription with nothing queued
    /// still takes the event, so the bound is this plus one event per subscription.
    pub fn with_max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes.max(1);
        self
    }

    /// Bytes of events queued for one connection's subscriptions before the policies apply.
    pub fn max_queued_bytes(&self) -> usize {
        self.max_queued_bytes
    }

    /// Subscriptions a peer may hold on one connection.
    pub fn max_subscriptions(&self) -> usize {
        self.max_subscriptions
    }

    /// Longest subject or pattern accepted, in bytes.
    pub fn max_subject_len(&self) -> usize {
        self.max_subject_len
    }

    /// Queue depth (events) of a subscription that asks for none, and the most one may ask
    /// for.
    pub fn queue_depth(&self) -> (u32, u32) {
        (self.default_queue_depth, self.max_queue_depth)
    }

    /// The policy of a subscription that did not choose one.
    pub fn default_policy(&self) -> SlowPolicy {
        self.default_policy
    }

    /// The queue depth of a subscription that asked for `requested` (0: the default).
    pub(crate) fn depth(&self, requested: u32) -> usize {
        let d = if requested == 0 {
            self.default_queue_depth
        } else {
            requested.min(self.max_queue_depth)
        };
        d.max(1) as usize
    }
}
