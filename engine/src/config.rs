//! Core configuration: what configures the runtime ([`RuntimeConfig`]: the ring, buffers,
//! idle policy, connection cap) and what configures the protocol ([`ProtocolConfig`]: handshake
//! offers, limits, budgets, timeouts, keepalive), held together by [`CoreConfig`].
//! docs/configuration.md lists every setting with its unit and default.

use std::time::Duration;

use netron_codec::Limits;

use crate::driver::DriverChoice;
use netron_codec::features;
use netron_codec::handshake::{ClientConfig, ServerConfig};

/// What a core does when it has nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdlePolicy {
    /// Never sleep: poll the ring and the inbox in a loop. Lowest latency; one CPU at 100%.
    BusyPoll,
    /// Poll for `spin`, then park in `io_uring_enter` until a completion, a doorbell or a
    /// timer. On this class of machine waking a parked core costs ~25–30 µs, so a `spin`
    /// longer than the expected gap between requests keeps the hot path awake.
    Adaptive {
        /// How long to keep polling after the last piece of work.
        spin: Duration,
    },
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy::Adaptive {
            spin: Duration::from_micros(50),
        }
    }
}

/// The default threshold of early writes on a core that parks at once, in bytes: about 30
/// requests or replies of 64 bytes (measured: 16 to 64 calls per write gave the same rate of
/// pipelined calls, 8 fewer; docs/architecture.md "Early writes").
pub const DEFAULT_EARLY_WRITE_BYTES: usize = 2 << 10;

/// When a connection's queued output is written before the end of the loop turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EarlyWrite {
    /// [`DEFAULT_EARLY_WRITE_BYTES`] if the idle policy parks at once, else off.
    ByIdlePolicy,
    /// Never: one write per connection per turn.
    Off,
    /// Once this many bytes are queued.
    At(usize),
}

/// How a busy-poll core reads its hot connections.
///
/// A connection that receives data becomes *hot*: its multishot receive is cancelled and the
/// core reads it with one non-blocking `recv(2)` per loop turn, as a busy-polling socket
/// program would. With no receive armed, the peer's send no longer has to queue io_uring task
/// work and the core no longer has to run it; on a Unix socket that path costs as much as the
/// rest of a round trip (docs/architecture.md, "Hot connections"). A hot connection that stays
/// silent for `idle` goes back to the ring receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirectRecv {
    /// Hot connections per core at most: each costs one system call per loop turn.
    pub max_conns: usize,
    /// A hot connection silent this long goes back to the ring receive.
    pub idle: Duration,
}

impl DirectRecv {
    /// At most `max_conns` hot connections per core; one silent for `idle` goes back to the
    /// ring receive.
    pub fn new(max_conns: usize, idle: Duration) -> Self {
        Self { max_conns, idle }
    }
}

impl Default for DirectRecv {
    fn default() -> Self {
        Self {
            max_conns: 8,
            idle: Duration::from_micros(200),
        }
    }
}

/// A token bucket for frames that do no work (cancels of calls already answered, pings,
/// unsolicited pongs, frames of kinds this engine ignores, replies to unknown ids): the
/// defence against floods such as HTTP/2's rapid reset (CVE-2023-44487; h2 and nginx answered
/// it with the same kind of budget). Every Request a peer sends earns it half a frame more
/// (kept without a cap), so a caller may cancel one call in two (hedged requests, short
/// deadlines) at any rate and in any order without running dry. A peer that spends the budget gets a connection error, `ResourceExhausted`
/// (docs/protocol.md §17), and is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameBudget {
    /// Frames that may arrive at once (default 1000).
    pub burst: u32,
    /// Frames a second refilled by time alone (default 1000).
    pub per_sec: u32,
}

impl FrameBudget {
    /// `burst` frames at once, refilled at `per_sec` frames a second.
    pub fn new(burst: u32, per_sec: u32) -> Self {
        Self { burst, per_sec }
    }
}

impl Default for FrameBudget {
    fn default() -> Self {
        Self {
            burst: 1000,
            per_sec: 1000,
        }
    }
}

/// A configuration value is unusable; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {setting} = {value}: {why}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The setting, as `Type::field` (e.g. `RuntimeConfig::recv_buffers`); two settings that do
    /// not fit together are named as `A + B`.
    pub setting: &'static str,
    /// The value given.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

impl ConfigError {
    pub(crate) fn new(
        setting: &'static str,
        value: impl std::fmt::Debug,
        why: impl Into<String>,
    ) -> Self {
        Self {
            setting,
            value: format!("{value:?}"),
            why: why.into(),
        }
    }
}

/// Settings of the runtime of one core: its `io_uring`, receive buffers, idle behaviour and
/// connection cap. None of them is visible to a peer. `Default` gives production defaults;
/// each setter states its unit and cost. Checked by [`CoreConfig::validate`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub(crate) idle: IdlePolicy,
    pub(crate) ring_entries: u32,
    pub(crate) recv_buffers: u16,
    pub(crate) recv_buffer_size: usize,
    pub(crate) max_connections: usize,
    pub(crate) send_zc_threshold: Option<usize>,
    pub(crate) direct_recv: Option<DirectRecv>,
    pub(crate) early_write: EarlyWrite,
    pub(crate) driver: DriverChoice,
    #[cfg(feature = "fault-injection")]
    pub(crate) fail_enter_after_turns: Option<u64>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            idle: IdlePolicy::default(),
            ring_entries: 1024,
            recv_buffers: 256,
            recv_buffer_size: 16 << 10,
            max_connections: 65_536,
            send_zc_threshold: None,
            direct_recv: Some(DirectRecv::default()),
            early_write: EarlyWrite::ByIdlePolicy,
            driver: DriverChoice::Auto,
            #[cfg(feature = "fault-injection")]
            fail_enter_after_turns: None,
        }
    }
}

impl RuntimeConfig {
    /// Sets the I/O backend (default [`DriverChoice::Auto`]: the `NETRON_DRIVER` environment
    /// variable if set, else io_uring, falling back to epoll where io_uring is blocked; the
    /// core reports which it runs and why, docs/architecture.md, "The epoll driver").
    /// [`DriverChoice::IoUring`] never falls back.
    pub fn with_driver(mut self, driver: DriverChoice) -> Self {
        self.driver = driver;
        self
    }
    /// Sets what the core does when it has nothing to do (default: adaptive, 50 µs spin).
    /// [`IdlePolicy::BusyPoll`] costs one CPU at 100% per core and buys the lowest latency.
    pub fn with_idle(mut self, idle: IdlePolicy) -> Self {
        self.idle = idle;
        self
    }
    /// Sets the submission queue entries (default 1024, 1 to 16 384; the completion queue is
    /// 4x). Memory: about 64 bytes per entry plus 64 per completion entry, per core.
    pub fn with_ring_entries(mut self, entries: u32) -> Self {
        self.ring_entries = entries;
        self
    }
    /// Sets the provided-buffer ring: `count` buffers (a power of two, default 256) of `size`
    /// bytes each (512 B to 1 GiB, default 16 KiB). Memory: `count * size` per core (at most
    /// 1 GiB), shared by all its connections; too few buffers for many busy connections makes
    /// receives wait for a free buffer.
    pub fn with_recv_buffers(mut self, count: u16, size: usize) -> Self {
        self.recv_buffers = count;
        self.recv_buffer_size = size;
        self
    }
    /// Sets the connections a core keeps at most; more are closed on accept (default 65 536,
    /// at least 1). Each open connection costs a few KiB of state plus its buffers.
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }
    /// Sets the batch size in bytes from which batches are written with `SendZc` (zero-copy:
    /// the NIC reads the buffer in place, held until the kernel's notification); `None` turns
    /// it off. Default `None`: on loopback the kernel copies anyway and the extra notification
    /// makes it slower (see docs/benchmarks.md); enable it for real NICs and large payloads.
    /// TCP only: Unix sockets cannot send zero-copy and record transports copy into their
    /// rings, so they ignore it.
    pub fn with_send_zc_threshold(mut self, bytes: Option<usize>) -> Self {
        self.send_zc_threshold = bytes;
        self
    }
    /// Sets how busy-poll cores read hot connections: with plain non-blocking `recv` calls
    /// instead of the io_uring multishot receive (default: on, 8 connections, 200 µs; each hot
    /// connection costs one system call per loop turn). Ignored by adaptive cores, which must
    /// be able to park in the ring. `None`: always receive through the ring.
    pub fn with_direct_recv(mut self, direct: Option<DirectRecv>) -> Self {
        self.direct_recv = direct;
        self
    }

    /// Sets early writes: a connection's queued output is written as soon as it holds
    /// `bytes` (at least 1), at the next point where the core can write (right after a call
    /// is started on it, or after a receive's or a direct read's input is handled), instead
    /// of at the end of the loop turn; only that connection is written then, directly
    /// (`send(2)`). `None` turns them off (as does a threshold no batch reaches, such as
    /// `usize::MAX`); `Some(0)` is refused by [`CoreConfig::validate`]. Default:
    /// [`DEFAULT_EARLY_WRITE_BYTES`] when the idle policy parks at once
    /// (`IdlePolicy::Adaptive { spin: Duration::ZERO }`), off otherwise; set explicitly, it
    /// holds whatever the idle policy.
    ///
    /// Why: when both sides park, a batch of many calls written at the end of the turn
    /// leaves the peer asleep while this core encodes all of them, then the peer pays its
    /// wake-up (tens of µs on a VM) before it starts on any; written in pieces, the peer's
    /// wake-up overlaps the rest of this core's work (pipelined calls/s of two parking cores
    /// 1.2x to 1.7x at 256 in flight, docs/architecture.md "Early writes"). Cost: one send
    /// per `bytes` of output instead of one per turn, which a core that spins does not need
    /// (its peer is awake).
    pub fn with_early_write(mut self, bytes: Option<usize>) -> Self {
        self.early_write = match bytes {
            Some(b) => EarlyWrite::At(b),
            None => EarlyWrite::Off,
        };
        self
    }
    /// Test-only fault injection: after this many loop turns, every `io_uring_enter` fails
    /// with `EPERM`, as under a seccomp filter installed after setup.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn with_fail_enter_after_turns(mut self, turns: Option<u64>) -> Self {
        self.fail_enter_after_turns = turns;
        self
    }

    /// The idle policy.
    pub fn idle(&self) -> IdlePolicy {
        self.idle
    }
    /// Submission queue entries.
    pub fn ring_entries(&self) -> u32 {
        self.ring_entries
    }
    /// Receive buffers in the provided-buffer ring.
    pub fn recv_buffers(&self) -> u16 {
        self.recv_buffers
    }
    /// Size of each receive buffer, in bytes.
    pub fn recv_buffer_size(&self) -> usize {
        self.recv_buffer_size
    }
    /// Connections a core keeps at most.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }
    /// Batch size in bytes from which writes are zero-copy, if on.
    pub fn send_zc_threshold(&self) -> Option<usize> {
        self.send_zc_threshold
    }
    /// The direct-receive policy of busy-poll cores, if on.
    pub fn direct_recv(&self) -> Option<DirectRecv> {
        self.direct_recv
    }
    /// The size in bytes at which a connection's queued output is written early, if early
    /// writes are on (see [`RuntimeConfig::with_early_write`]; the default follows the idle
    /// policy).
    pub fn early_write(&self) -> Option<usize> {
        match self.early_write {
            EarlyWrite::At(b) => Some(b),
            EarlyWrite::Off => None,
            EarlyWrite::ByIdlePolicy => match self.idle {
                IdlePolicy::Adaptive { spin } if spin.is_zero() => Some(DEFAULT_EARLY_WRITE_BYTES),
                _ => None,
            },
        }
    }
    /// The I/O backend choice.
    pub fn driver(&self) -> DriverChoice {
        self.driver
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.driver == DriverChoice::Auto {
            if let Ok(v) = std::env::var(crate::driver::DRIVER_ENV) {
                if DriverChoice::parse(&v).is_none() {
                    return Err(ConfigError::new(
                        crate::driver::DRIVER_ENV,
                        v,
                        "names no driver (use io_uring, epoll or auto)",
                    ));
                }
            }
        }
        if !(1..=16_384).contains(&self.ring_entries) {
            return Err(ConfigError::new(
                "RuntimeConfig::ring_entries",
                self.ring_entries,
                "must be 1 to 16384 (the completion queue is 4x, and the kernel allows at most \
                 65536 completion entries)",
            ));
        }
        if !u32::from(self.recv_buffers).is_power_of_two() || self.recv_buffers > 32_768 {
            return Err(ConfigError::new(
                "RuntimeConfig::recv_buffers",
                self.recv_buffers,
                "must be a power of two from 1 to 32768 (a provided-buffer ring)",
            ));
        }
        if !(512..=(1 << 30)).contains(&self.recv_buffer_size) {
            return Err(ConfigError::new(
                "RuntimeConfig::recv_buffer_size",
                self.recv_buffer_size,
                "must be 512 bytes to 1 GiB",
            ));
        }
        if u64::from(self.recv_buffers).saturating_mul(self.recv_buffer_size as u64) > 1 << 30 {
            return Err(ConfigError::new(
                "RuntimeConfig::recv_buffers + RuntimeConfig::recv_buffer_size",
                (self.recv_buffers, self.recv_buffer_size),
                "recv_buffers * recv_buffer_size must be at most 1 GiB per core",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                "RuntimeConfig::max_connections",
                self.max_connections,
                "must be at least 1",
            ));
        }
        if let IdlePolicy::Adaptive { spin } = self.idle {
            if spin > Duration::from_secs(3600) {
                return Err(ConfigError::new(
                    "RuntimeConfig::idle",
                    self.idle,
                    "an adaptive spin above an hour is busy-polling: use IdlePolicy::BusyPoll",
                ));
            }
        }
        if self.early_write == EarlyWrite::At(0) {
            return Err(ConfigError::new(
                "RuntimeConfig::early_write",
                0usize,
                "must be at least 1 byte (None turns early writes off)",
            ));
        }
        if let Some(d) = self.direct_recv {
            if d.idle > Duration::from_secs(3600) {
                return Err(ConfigError::new(
                    "RuntimeConfig::direct_recv",
                    d,
                    "idle must be at most an hour",
                ));
            }
        }
        Ok(())
    }
}

/// Settings of the protocol: the handshake offers (limits, compression), what this side
/// advertises (keepalive), budgets and timeouts. `Default` gives production defaults; each
/// setter states its unit and cost. Checked by [`CoreConfig::validate`].
///
/// Keepalive is symmetric: this side pings a connection silent for its keepalive, and a server
/// advertises that interval in its Welcome (`keepalive_interval_ms`). A client that gets a
/// shorter non-zero interval from the server pings at the server's interval instead (the peer
/// asked to hear from it that often, e.g. for a NAT); a side whose own keepalive is zero never
/// pings, whatever the peer advertises. docs/configuration.md, "Keepalive".
#[derive(Debug, Clone)]
pub struct ProtocolConfig {
    pub(crate) server: ServerConfig,
    pub(crate) client: ClientConfig,
    pub(crate) keepalive: Duration,
    pub(crate) dead_after: Duration,
    pub(crate) stall_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) close_linger: Duration,
    pub(crate) max_backlog_bytes: usize,
    pub(crate) idle_frame_budget: FrameBudget,
    pub(crate) max_buffer_bytes: usize,
    pub(crate) events: crate::events::EventConfig,
    pub(crate) quic_server: Option<netron_quic::ServerConfig>,
    pub(crate) quic_client: Option<netron_quic::ClientConfig>,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        let keepalive = Duration::from_secs(15);
        let mut server = ServerConfig::default();
        server.keepalive_interval_ms = millis_u32(keepalive);
        // Streams are served and opened (docs/protocol.md §21: STREAMS in force on both
        // sides), and every core serves `$sys` (offer bit OFFERS_SYS, announced both ways).
        // Events too (EVENTS, and the offers to accept subscriptions and published events),
        // and packed traceparent values (PACKED_TRACE, §9.8).
        let on = features::STREAMS
            | features::EVENTS
            | features::PACKED_TRACE
            | features::OFFERS_SYS
            | features::OFFERS_SUBSCRIPTIONS
            | features::OFFERS_PUBLISH;
        server.features |= on;
        let client = ClientConfig::default().with_features(on);
        Self {
            server,
            client,
            keepalive,
            dead_after: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            close_linger: Duration::from_secs(5),
            max_backlog_bytes: 32 << 20,
            idle_frame_budget: FrameBudget::default(),
            max_buffer_bytes: 256 << 20,
            events: crate::events::EventConfig::default(),
            quic_server: None,
            quic_client: None,
        }
    }
}

/// A duration in whole milliseconds for the wire, saturating at `u32::MAX` (49 days); a
/// non-zero duration below 1 ms rounds up to 1 so it never reads as "off".
pub(crate) fn millis_u32(d: Duration) -> u32 {
    if d.is_zero() {
        0
    } else {
        u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
    }
}

/// Feature bits a handshake offer set with `with_server` / `with_client` does not change
/// (streams, events and packed traceparents stay as configured).
const KEPT_FEATURES: u64 = features::STREAMS
    | features::EVENTS
    | features::PACKED_TRACE
    | features::OFFERS_SUBSCRIPTIONS
    | features::OFFERS_PUBLISH;

impl ProtocolConfig {
    /// Sets the handshake offer made when accepting (limits, compression, concurrency, the
    /// stream window). Its `keepalive_interval_ms` is ignored: the Welcome advertises
    /// [`ProtocolConfig::keepalive`]; its `STREAMS` feature bit too: streams stay as
    /// [`ProtocolConfig::with_streams`] set them (on by default), so a `ServerConfig` built
    /// from its `Default` (no feature bits) does not turn them off unnoticed; and the offer
    /// bit `OFFERS_SYS` is always set (every core serves `$sys`).
    pub fn with_server(mut self, server: ServerConfig) -> Self {
        let streams = self.server.features & KEPT_FEATURES;
        self.server = server;
        self.server.features =
            (self.server.features & !KEPT_FEATURES) | streams | features::OFFERS_SYS;
        self.server.keepalive_interval_ms = millis_u32(self.keepalive);
        self
    }
    /// Sets the handshake offer made when connecting (limits, compression, auth token). Its
    /// `STREAMS` feature bit is ignored, as for [`ProtocolConfig::with_server`].
    pub fn with_client(mut self, client: ClientConfig) -> Self {
        let streams = self.client.features & KEPT_FEATURES;
        self.client = client;
        self.client.features =
            (self.client.features & !KEPT_FEATURES) | streams | features::OFFERS_SYS;
        self
    }
    /// Sets the limits and defaults of events (subscriptions per connection, subject length,
    /// queue depths, slow-subscriber policy; see [`crate::EventConfig`]).
    pub fn with_events(mut self, events: crate::events::EventConfig) -> Self {
        self.events = events;
        self
    }
    /// Turns streams on or off on both sides (default on): off, this side neither serves
    /// nor opens streams, and a StreamOpen from the peer is refused (docs/protocol.md §21:
    /// `STREAMS` is in force only when both sides set it).
    pub fn with_streams(mut self, on: bool) -> Self {
        for f in [&mut self.server.features, &mut self.client.features] {
            if on {
                *f |= features::STREAMS;
            } else {
                *f &= !features::STREAMS;
            }
        }
        self
    }
    /// Sets the initial flow-control window of every stream, in bytes, that this side
    /// offers when it accepts (docs/protocol.md §23.2; default 256 KiB; 1 B to 2^31 − 1 B).
    /// The connection window is 16 times it (at most 2^31 − 1). It bounds the memory a slow
    /// reader can make a writer hold: about one window (plus one message) per stream. The
    /// side that accepted decides: a connecting side uses the window of the peer's Welcome.
    pub fn with_stream_window(mut self, bytes: u32) -> Self {
        self.server.initial_stream_window = bytes;
        self
    }
    /// Sets the keepalive: a connection silent for `every` gets a Ping (zero: never ping;
    /// default 15 s), and one whose Ping got no answer for `dead_after` is closed as dead
    /// (default 10 s; at most `every`). A server advertises `every` in its Welcome. Cost: one
    /// 9-byte frame each way per idle connection per interval.
    pub fn with_keepalive(mut self, every: Duration, dead_after: Duration) -> Self {
        self.keepalive = every;
        self.dead_after = dead_after;
        self.server.keepalive_interval_ms = millis_u32(every);
        self
    }
    /// Sets the stall timeout (slowloris and slow-reader guard, default 10 s, at least 1 ms):
    /// every frame must complete within this long of its first byte, and a peer must take
    /// some of the output waiting for it at least this often.
    pub fn with_stall_timeout(mut self, t: Duration) -> Self {
        self.stall_timeout = t;
        self
    }
    /// Sets the handshake timeout (default 10 s, at least 1 ms): on both sides, a connection
    /// whose handshake has not completed this long after it was opened or accepted is closed
    /// (an accepted connection that sends nothing at all included).
    pub fn with_handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }
    /// Sets how long [`crate::Client::connect`] waits for the socket connection and the
    /// handshake together (default 10 s, at least 1 ms).
    pub fn with_connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }
    /// Sets how long a closing connection (after an error, a GoAway drain, or the peer's EOF)
    /// may take before it is closed whatever the peer does (default 5 s, at least 1 ms). A
    /// `quic://` connection also waits up to this long after its last frames for the peer to
    /// acknowledge them before its CONNECTION_CLOSE, which would drop them (docs/quic.md,
    /// "Closing (the close linger)"); an engine shutdown's drain bounds that wait too.
    pub fn with_close_linger(mut self, t: Duration) -> Self {
        self.close_linger = t;
        self
    }
    /// Sets the output waiting for the peer to read, in bytes, above which a new call or reply
    /// on the connection is refused with `ResourceExhausted` (that message only; default
    /// 32 MiB). Must hold one largest frame plus one batch of both handshake offers. Memory:
    /// up to this much per slow connection.
    pub fn with_max_backlog_bytes(mut self, n: usize) -> Self {
        self.max_backlog_bytes = n;
        self
    }
    /// Sets the budget of frames that do no work, per connection (default 1000 at once, 1000
    /// a second; see [`FrameBudget`]).
    pub fn with_idle_frame_budget(mut self, budget: FrameBudget) -> Self {
        self.idle_frame_budget = budget;
        self
    }
    /// Sets the bytes that all connections of a core may hold in buffers for partial frames
    /// and decompressed payloads together (default 256 MiB). A peer whose frame would exceed
    /// it gets a connection error (ResourceExhausted). Must hold one largest frame plus one
    /// batch of both handshake offers.
    pub fn with_max_buffer_bytes(mut self, n: usize) -> Self {
        self.max_buffer_bytes = n;
        self
    }

    /// Sets the TLS and QUIC settings of `quic://` listeners (certificate chain and key,
    /// client authentication for mutual TLS, QUIC limits, Retry policy; docs/quic.md).
    /// Without it, listening on `quic://` fails naming this setting.
    pub fn with_quic_server(mut self, config: netron_quic::ServerConfig) -> Self {
        self.quic_server = Some(config);
        self
    }
    /// Sets the TLS and QUIC settings of `quic://` connects (trusted CAs, the client identity
    /// for mutual TLS, QUIC limits). Without it, connecting to `quic://` fails naming this
    /// setting.
    pub fn with_quic_client(mut self, config: netron_quic::ClientConfig) -> Self {
        self.quic_client = Some(config);
        self
    }
    /// The `quic://` listeners' settings, if set.
    pub fn quic_server(&self) -> Option<&netron_quic::ServerConfig> {
        self.quic_server.as_ref()
    }
    /// The `quic://` connects' settings, if set.
    pub fn quic_client(&self) -> Option<&netron_quic::ClientConfig> {
        self.quic_client.as_ref()
    }

    /// The bidirectional QUIC streams a peer may open, as the engine advertises them
    /// (docs/protocol.md §27.2 rule 6): this side's `max_concurrent_calls` (the value its
    /// Welcome carries) + 1 for the control stream, so QUIC itself enforces the limit instead
    /// of `QuicSettings::max_concurrent_bidi_streams` (which applies to netron-quic used
    /// alone).
    fn quic_bidi_streams(&self) -> u32 {
        self.server.max_concurrent_calls.saturating_add(1)
    }
    /// The `quic://` listeners' settings as the engine uses them ([`Self::quic_bidi_streams`]).
    pub(crate) fn quic_server_in_use(&self) -> Option<netron_quic::ServerConfig> {
        self.quic_server.clone().map(|mut c| {
            c.settings.max_concurrent_bidi_streams = self.quic_bidi_streams();
            c
        })
    }
    /// The `quic://` connects' settings as the engine uses them ([`Self::quic_bidi_streams`]:
    /// an initiator serves peer calls too).
    pub(crate) fn quic_client_in_use(&self) -> Option<netron_quic::ClientConfig> {
        self.quic_client.clone().map(|mut c| {
            c.settings.max_concurrent_bidi_streams = self.quic_bidi_streams();
            c
        })
    }

    /// The handshake offer made when accepting (its keepalive is [`ProtocolConfig::keepalive`]).
    pub fn server(&self) -> &ServerConfig {
        &self.server
    }
    /// The handshake offer made when connecting.
    pub fn client(&self) -> &ClientConfig {
        &self.client
    }
    /// The keepalive interval (zero: off).
    pub fn keepalive(&self) -> Duration {
        self.keepalive
    }
    /// How long a Ping may go unanswered before the connection is closed as dead.
    pub fn dead_after(&self) -> Duration {
        self.dead_after
    }
    /// The stall timeout.
    pub fn stall_timeout(&self) -> Duration {
        self.stall_timeout
    }
    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }
    /// The connect timeout of [`crate::Client::connect`].
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// The close linger bound.
    pub fn close_linger(&self) -> Duration {
        self.close_linger
    }
    /// The backlog cap per connection, in bytes.
    pub fn max_backlog_bytes(&self) -> usize {
        self.max_backlog_bytes
    }
    /// The budget of frames that do no work.
    pub fn idle_frame_budget(&self) -> FrameBudget {
        self.idle_frame_budget
    }
    /// The core's buffer budget, in bytes.
    pub fn max_buffer_bytes(&self) -> usize {
        self.max_buffer_bytes
    }
    /// The limits and defaults of events.
    pub fn events(&self) -> crate::events::EventConfig {
        self.events
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let window = self.server.initial_stream_window;
        if window == 0 || window > netron_codec::stream::MAX_WINDOW {
            return Err(ConfigError::new(
                "ProtocolConfig::stream_window",
                window,
                "must be 1 to 2^31 - 1 bytes (a zero window never lets a stream send; \
                 docs/protocol.md §23.2)",
            ));
        }
        // Timers run on a wheel with 1 ms ticks: shorter values cannot be honoured.
        let tick = Duration::from_millis(1);
        for (setting, d) in [
            ("ProtocolConfig::stall_timeout", self.stall_timeout),
            ("ProtocolConfig::handshake_timeout", self.handshake_timeout),
            ("ProtocolConfig::connect_timeout", self.connect_timeout),
            ("ProtocolConfig::close_linger", self.close_linger),
        ] {
            if d < tick {
                return Err(ConfigError::new(
                    setting,
                    d,
                    "must be at least 1 ms (the timer wheel's tick)",
                ));
            }
        }
        if !self.keepalive.is_zero() {
            for (setting, d) in [
                ("ProtocolConfig::keepalive", self.keepalive),
                ("ProtocolConfig::dead_after", self.dead_after),
            ] {
                if d < tick {
                    return Err(ConfigError::new(
                        setting,
                        d,
                        "must be at least 1 ms when keepalive is on (the timer wheel's tick)",
                    ));
                }
            }
            if self.dead_after > self.keepalive {
                return Err(ConfigError::new(
                    "ProtocolConfig::dead_after + ProtocolConfig::keepalive",
                    (self.dead_after, self.keepalive),
                    "dead_after must be at most keepalive (a peer silent for longer than one \
                     keepalive interval after a Ping is dead; set both with with_keepalive)",
                ));
            }
        }
        // The QUIC settings are checked now (a key that does not match its certificate, an
        // empty or unparsable CA list...), so a bad one fails the build naming the setting,
        // not every later connect (fresh user R9's finding 6: a bad client configuration only
        // failed at connect, as `ConnectError::Io`).
        if let Some(c) = &self.quic_client {
            netron_quic::QuicEndpoint::new(None, Some(c)).map_err(|e| {
                ConfigError::new(
                    "ProtocolConfig::with_quic_client",
                    "(the client's TLS and QUIC settings)",
                    e.to_string(),
                )
            })?;
        }
        if let Some(c) = &self.quic_server {
            netron_quic::QuicEndpoint::new(Some(c), None).map_err(|e| {
                ConfigError::new(
                    "ProtocolConfig::with_quic_server",
                    "(the server's TLS and QUIC settings)",
                    e.to_string(),
                )
            })?;
        }
        if self.idle_frame_budget.burst == 0 {
            return Err(ConfigError::new(
                "ProtocolConfig::idle_frame_budget",
                self.idle_frame_budget,
                "burst must be at least 1 (every peer pings now and then)",
            ));
        }
        for (setting, l) in [
            ("ProtocolConfig::server", &self.server.limits),
            ("ProtocolConfig::client", &self.client.limits),
        ] {
            // A peer refuses an offer below the protocol's minimums (docs/protocol.md §9).
            for (field, value, min) in [
                ("max_frame_size", l.max_frame_size, Limits::MIN_FRAME_SIZE),
                (
                    "max_batch_frames",
                    l.max_batch_frames,
                    Limits::MIN_BATCH_FRAMES,
                ),
                (
                    "max_batch_bytes",
                    l.max_batch_bytes,
                    Limits::MIN_BATCH_BYTES,
                ),
            ] {
                if value < min {
                    return Err(ConfigError::new(
                        setting,
                        value,
                        format!(
                            "limits.{field} must be at least {min} (the protocol's minimum; a \
                             peer refuses a smaller offer)"
                        ),
                    ));
                }
            }
        }
        for (side, l) in [
            ("server", &self.server.limits),
            ("client", &self.client.limits),
        ] {
            let need = l.max_frame_size as usize + l.max_batch_bytes as usize;
            for (setting, value) in [
                ("ProtocolConfig::max_buffer_bytes", self.max_buffer_bytes),
                ("ProtocolConfig::max_backlog_bytes", self.max_backlog_bytes),
            ] {
                if value < need {
                    return Err(ConfigError::new(
                        setting,
                        value,
                        format!(
                            "must hold one largest frame plus one batch: at least {need} bytes \
                             (the {side} limits' max_frame_size {} + max_batch_bytes {})",
                            l.max_frame_size, l.max_batch_bytes
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Settings of one core: a [`RuntimeConfig`] and a [`ProtocolConfig`]. `Default` gives
/// production defaults. Built from either part alone (`From`), or from both with
/// [`CoreConfig::new`]; [`crate::Core::new`] and [`crate::EngineBuilder::config`] take anything
/// that converts.
#[derive(Debug, Clone, Default)]
pub struct CoreConfig {
    pub(crate) runtime: RuntimeConfig,
    pub(crate) protocol: ProtocolConfig,
}

impl From<RuntimeConfig> for CoreConfig {
    fn from(runtime: RuntimeConfig) -> Self {
        Self {
            runtime,
            protocol: ProtocolConfig::default(),
        }
    }
}

impl From<ProtocolConfig> for CoreConfig {
    fn from(protocol: ProtocolConfig) -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            protocol,
        }
    }
}

impl CoreConfig {
    /// Both parts.
    pub fn new(runtime: RuntimeConfig, protocol: ProtocolConfig) -> Self {
        Self { runtime, protocol }
    }
    /// Replaces the runtime part.
    pub fn with_runtime(mut self, runtime: RuntimeConfig) -> Self {
        self.runtime = runtime;
        self
    }
    /// Replaces the protocol part.
    pub fn with_protocol(mut self, protocol: ProtocolConfig) -> Self {
        self.protocol = protocol;
        self
    }
    /// The runtime part.
    pub fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
    /// The protocol part.
    pub fn protocol(&self) -> &ProtocolConfig {
        &self.protocol
    }

    /// Checks every setting and how they fit together.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first unusable setting (as `RuntimeConfig::…` or
    /// `ProtocolConfig::…`, or both settings of a combination that does not fit), its value
    /// and the rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.runtime.validate()?;
        self.protocol.validate()
    }
}
