//! Per-core statistics, readable through the API.
//!
//! [`CoreStats`] holds what users watch (connections, calls, frames, bytes, errors by kind)
//! behind getters; the driver's own counters (`io_uring` submits, direct reads and sends, hot
//! promotions, loop turns, zero-copy writes) are diagnostics in [`DriverStats`], reached with
//! [`CoreStats::driver`]: they describe how this engine version drives the kernel, are not
//! part of the stable API, and may change with the driver.

use std::collections::BTreeMap;

/// Counters of one core. Each core owns its own, and publishes a copy on request (see
/// [`crate::Engine::stats`]). Read-only for users:
///
/// ```compile_fail
/// let mut s = netron_engine::CoreStats::default();
/// s.calls_in += 1;
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoreStats {
    /// Connections accepted.
    pub(crate) accepted: u64,
    /// Connections refused (limit reached).
    pub(crate) refused: u64,
    /// Accepts re-armed after a backoff (persistent accept errors such as running out of
    /// descriptors; the episode itself counts once as the error `accept_failed`).
    pub(crate) accept_retries: u64,
    /// Connections closed.
    pub(crate) closed: u64,
    /// Handshakes completed.
    pub(crate) handshakes: u64,
    /// Requests received (server role).
    pub(crate) calls_in: u64,
    /// Requests served that arrived in QUIC 0-RTT (server role).
    pub(crate) zero_rtt_calls_in: u64,
    /// `quic://` connections whose 0-RTT data the server accepted (client role).
    pub(crate) zero_rtt_accepted: u64,
    /// `quic://` connections whose 0-RTT data the server rejected, sent again after the
    /// handshake (client role).
    pub(crate) zero_rtt_rejected: u64,
    /// Calls that completed with a reply.
    pub(crate) calls_ok: u64,
    /// Calls that completed with an error status.
    pub(crate) calls_failed: u64,
    /// Client calls that hit their deadline.
    pub(crate) deadline_exceeded: u64,
    /// Cancel frames received.
    pub(crate) cancels_in: u64,
    /// Streams the peers opened (StreamOpen received).
    pub(crate) streams_in: u64,
    /// Stream messages received (StreamData).
    pub(crate) stream_messages_in: u64,
    /// Compressed stream messages held as they arrived (the readers had not consumed enough
    /// to decompress them; docs/architecture.md "Streams").
    pub(crate) stream_messages_held: u64,
    /// Streams that ended with an error (`Error(id)` sent or received).
    pub(crate) streams_failed: u64,
    /// Frames decoded.
    pub(crate) frames_in: u64,
    /// Frames written.
    pub(crate) frames_out: u64,
    /// Bytes received.
    pub(crate) bytes_in: u64,
    /// Bytes written.
    pub(crate) bytes_out: u64,
    /// Bytes held right now in partial-frame and decompression buffers by the core's
    /// connections (a gauge, against `ProtocolConfig::max_buffer_bytes`).
    pub(crate) buffer_bytes: u64,
    /// Subscribe frames received (subscriptions the peers asked for, refused ones included).
    pub(crate) subscriptions_in: u64,
    /// Events the peers published here (Event with id 0 received).
    pub(crate) events_published_in: u64,
    /// Events received on subscriptions this side holds at its peers.
    pub(crate) events_in: u64,
    /// Events delivered: Event frames queued for a subscriber connection, and events handed to in-process subscriptions.
    pub(crate) events_out: u64,
    /// Events dropped for slow subscribers (queue full, policy drop-oldest): each is a gap the subscriber sees.
    pub(crate) events_dropped: u64,
    /// Subscriptions held right now at this core: by peers' connections and in-process (a gauge).
    pub(crate) subscriptions: u64,
    /// Bytes of events queued right now for subscribers of this core (a gauge; an event queued for n subscriptions counts n times, though it is held once).
    pub(crate) event_queue_bytes: u64,
    /// The driver's counters (diagnostics).
    pub(crate) driver: DriverStats,
    /// Errors by kind (stable labels, e.g. `unknown_kind`, `frame_too_large`, `dead_peer`).
    pub(crate) errors: BTreeMap<&'static str, u64>,
}

/// Diagnostics: how a core drove the kernel (what the benchmarks report per call). These
/// counters follow the driver's implementation and may change between versions; watch
/// [`CoreStats`] for the engine's behaviour.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Write operations submitted (one per batch).
    pub writes: u64,
    /// Of those, writes sent with `SendZc` (zero-copy).
    pub zero_copy_writes: u64,
    /// Of those, batches of a record transport (`shm://`, `inproc://`) encoded in place, into
    /// ring space the link lent to the encoder: written once, nothing copied into the ring
    /// (docs/protocol.md §26.6). The other batches of such a link were copied in.
    pub in_place_writes: u64,
    /// `io_uring_enter` calls.
    pub submits: u64,
    /// Non-blocking `recv(2)` calls on hot connections (busy-poll cores; see
    /// [`crate::DirectRecv`]). On a record transport (`inproc://`): looks at a hot link's
    /// ring, with no system call.
    pub direct_recvs: u64,
    /// Batches written with a direct non-blocking `send(2)` on a hot connection (what the
    /// socket did not take went through the ring). On a record transport (`inproc://`) every
    /// batch counts, hot or not: it is copied straight into the peer's ring.
    pub direct_sends: u64,
    /// Times a connection became hot (its ring receive was cancelled for direct reads).
    pub hot_promotions: u64,
    /// Loop turns.
    pub turns: u64,
    /// Turns that parked in the kernel (an idle core under `IdlePolicy::Adaptive`, past its
    /// spin): never on [`crate::Core::poll_once`].
    pub parks: u64,
    /// Writes made before the end of their turn because their connection's queued output
    /// reached `RuntimeConfig::early_write` (a parking core's pipelined calls; 0 when that is
    /// off); each is one write of that one connection, also counted in `writes`.
    pub early_writes: u64,
    /// `sendmsg` calls on `quic://` sockets.
    pub udp_sends: u64,
    /// Datagrams those calls carried: more than `udp_sends` when UDP GSO sent several in one
    /// call (`QuicSettings::gso`); `udp_datagrams_sent / udp_sends` is the mean per call.
    pub udp_datagrams_sent: u64,
    /// `recvmsg` calls on `quic://` sockets that returned data.
    pub udp_receives: u64,
    /// Datagrams those calls returned: more than `udp_receives` when UDP GRO merged several
    /// (`QuicSettings::gro`).
    pub udp_datagrams_received: u64,
    /// Datagrams of `quic://` server connections that reached the listening socket instead
    /// of the connection's (its client's address changed: connection migration) and were
    /// routed to the connection by connection ID; once QUIC moved to the new path the
    /// connection's socket takes them directly.
    pub udp_datagrams_routed: u64,
}

impl DriverStats {
    fn merge(&mut self, o: &DriverStats) {
        self.writes += o.writes;
        self.zero_copy_writes += o.zero_copy_writes;
        self.in_place_writes += o.in_place_writes;
        self.submits += o.submits;
        self.direct_recvs += o.direct_recvs;
        self.direct_sends += o.direct_sends;
        self.hot_promotions += o.hot_promotions;
        self.turns += o.turns;
        self.parks += o.parks;
        self.early_writes += o.early_writes;
        self.udp_sends += o.udp_sends;
        self.udp_datagrams_sent += o.udp_datagrams_sent;
        self.udp_receives += o.udp_receives;
        self.udp_datagrams_received += o.udp_datagrams_received;
        self.udp_datagrams_routed += o.udp_datagrams_routed;
    }
}

impl CoreStats {
    /// Connections accepted.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }
    /// Connections refused (limit reached).
    pub fn refused(&self) -> u64 {
        self.refused
    }
    /// Accepts re-armed after a backoff (persistent accept errors such as running out of
    /// descriptors; the episode itself counts once as the error `accept_failed`).
    pub fn accept_retries(&self) -> u64 {
        self.accept_retries
    }
    /// Connections closed.
    pub fn closed(&self) -> u64 {
        self.closed
    }
    /// Handshakes completed.
    pub fn handshakes(&self) -> u64 {
        self.handshakes
    }
    /// Requests received (server role).
    pub fn calls_in(&self) -> u64 {
        self.calls_in
    }
    /// Requests that arrived in QUIC 0-RTT, before the handshake completed, and were served
    /// (idempotent on both sides; the others count as the error `zero_rtt_refused`). Server
    /// role; docs/quic.md "0-RTT".
    pub fn zero_rtt_calls_in(&self) -> u64 {
        self.zero_rtt_calls_in
    }
    /// `quic://` connections that resumed with 0-RTT and whose early data (the Hello and
    /// idempotent calls) the server accepted. Client role.
    pub fn zero_rtt_accepted(&self) -> u64 {
        self.zero_rtt_accepted
    }
    /// `quic://` connections that tried 0-RTT and whose early data the server rejected (it
    /// did not know the ticket, e.g. after a restart, or it refuses 0-RTT): the engine sent
    /// it again once the handshake completed. Client role.
    pub fn zero_rtt_rejected(&self) -> u64 {
        self.zero_rtt_rejected
    }
    /// Calls that completed with a reply.
    pub fn calls_ok(&self) -> u64 {
        self.calls_ok
    }
    /// Calls that completed with an error status.
    pub fn calls_failed(&self) -> u64 {
        self.calls_failed
    }
    /// Client calls that hit their deadline.
    pub fn deadline_exceeded(&self) -> u64 {
        self.deadline_exceeded
    }
    /// Cancel frames received.
    pub fn cancels_in(&self) -> u64 {
        self.cancels_in
    }
    /// Streams the peers opened (StreamOpen received).
    pub fn streams_in(&self) -> u64 {
        self.streams_in
    }
    /// Stream messages received (StreamData).
    pub fn stream_messages_in(&self) -> u64 {
        self.stream_messages_in
    }
    /// Received stream messages held compressed, as they arrived, because the connection's
    /// readers held a connection window of decompression surplus already (they are
    /// decompressed and delivered, in order, as the readers consume).
    pub fn stream_messages_held(&self) -> u64 {
        self.stream_messages_held
    }
    /// Streams that ended with an error (`Error(id)` sent or received: a deadline, a Cancel
    /// answered, a refused or failed stream).
    pub fn streams_failed(&self) -> u64 {
        self.streams_failed
    }
    /// Frames decoded.
    pub fn frames_in(&self) -> u64 {
        self.frames_in
    }
    /// Frames written.
    pub fn frames_out(&self) -> u64 {
        self.frames_out
    }
    /// Bytes of Netron frames received (on `quic://`: the frames of the exchange streams;
    /// QPACK encoder- and decoder-stream bytes and QUIC's own overhead are not counted).
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }
    /// Bytes of Netron frames written (as [`CoreStats::bytes_in`]).
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }
    /// Bytes held right now in partial-frame and decompression buffers by the core's
    /// connections (a gauge, against `ProtocolConfig::max_buffer_bytes`).
    pub fn buffer_bytes(&self) -> u64 {
        self.buffer_bytes
    }
    /// Subscribe frames received (subscriptions the peers asked for, refused ones included).
    pub fn subscriptions_in(&self) -> u64 {
        self.subscriptions_in
    }
    /// Events the peers published here (Event with id 0 received).
    pub fn events_published_in(&self) -> u64 {
        self.events_published_in
    }
    /// Events received on subscriptions this side holds at its peers.
    pub fn events_in(&self) -> u64 {
        self.events_in
    }
    /// Events delivered: Event frames queued for a subscriber connection, and events handed to in-process subscriptions.
    pub fn events_out(&self) -> u64 {
        self.events_out
    }
    /// Events dropped for slow subscribers (queue full, policy drop-oldest): each is a gap the subscriber sees.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }
    /// Subscriptions held right now at this core: by peers' connections and in-process (a gauge).
    pub fn subscriptions(&self) -> u64 {
        self.subscriptions
    }
    /// Bytes of events queued right now for subscribers of this core (a gauge; an event queued for n subscriptions counts n times, though it is held once).
    pub fn event_queue_bytes(&self) -> u64 {
        self.event_queue_bytes
    }
    /// The driver's counters: diagnostics, not a stable API (see [`DriverStats`]).
    pub fn driver(&self) -> &DriverStats {
        &self.driver
    }

    /// Errors by kind, with their counts (stable labels, e.g. `unknown_kind`, `dead_peer`).
    pub fn errors(&self) -> &BTreeMap<&'static str, u64> {
        &self.errors
    }

    /// Counts one error of kind `label`.
    pub(crate) fn count_error(&mut self, label: &'static str) {
        self.count_errors(label, 1);
    }

    /// Counts `n` errors of the kind `label`.
    pub(crate) fn count_errors(&mut self, label: &'static str, n: u64) {
        *self.errors.entry(label).or_insert(0) += n;
    }

    /// Frames per write so far.
    pub fn frames_per_write(&self) -> f64 {
        if self.driver.writes == 0 {
            0.0
        } else {
            self.frames_out as f64 / self.driver.writes as f64
        }
    }

    /// Adds `other` into `self` (for engine-wide totals).
    pub fn merge(&mut self, other: &CoreStats) {
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.accept_retries += other.accept_retries;
        self.closed += other.closed;
        self.handshakes += other.handshakes;
        self.calls_in += other.calls_in;
        self.zero_rtt_calls_in += other.zero_rtt_calls_in;
        self.zero_rtt_accepted += other.zero_rtt_accepted;
        self.zero_rtt_rejected += other.zero_rtt_rejected;
        self.calls_ok += other.calls_ok;
        self.calls_failed += other.calls_failed;
        self.deadline_exceeded += other.deadline_exceeded;
        self.cancels_in += other.cancels_in;
        self.streams_in += other.streams_in;
        self.stream_messages_in += other.stream_messages_in;
        self.stream_messages_held += other.stream_messages_held;
        self.streams_failed += other.streams_failed;
        self.frames_in += other.frames_in;
        self.frames_out += other.frames_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.buffer_bytes += other.buffer_bytes;
        self.subscriptions_in += other.subscriptions_in;
        self.events_published_in += other.events_published_in;
        self.events_in += other.events_in;
        self.events_out += other.events_out;
        self.events_dropped += other.events_dropped;
        self.subscriptions += other.subscriptions;
        self.event_queue_bytes += other.event_queue_bytes;
        self.driver.merge(&other.driver);
        for (k, v) in &other.errors {
            *self.errors.entry(k).or_insert(0) += v;
        }
    }

    /// Total errors of kind `label`.
    pub fn errors_of(&self, label: &str) -> u64 {
        self.errors.get(label).copied().unwrap_or(0)
    }
}
