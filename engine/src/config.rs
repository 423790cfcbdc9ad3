//! Core configuration.

use std::time::Duration;

use crate::driver::DriverChoice;

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

/// How a busy-poll core reads its hot connections.
///
/// A connection that receives data becomes *hot*: its multishot receive is cancelled and the
/// core reads it with one non-blocking `recv(2)` per loop turn, as a busy-polling socket
/// program would. With no receive armed, the peer's send no longer has to queue io_uring task
/// work and the core no longer has to run it; on a Unix socket that path costs as much as the
/// rest of a round trip (docs/architecture.md, "Hot connections"). A hot connection that stays
/// silent for `idle` goes back to the ring receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectRecv {
    /// Hot connections per core at most: each costs one system call per loop turn.
    pub max_conns: usize,
    /// A hot connection silent this long goes back to the ring receive.
    pub idle: Duration,
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
pub struct FrameBudget {
    /// Frames that may arrive at once (default 1000).
    pub burst: u32,
    /// Frames a second refilled by time alone (default 1000).
    pub per_sec: u32,
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
    /// The setting, as `Type::field` (e.g. `CoreConfig::recv_buffers`).
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

/// Settings of one core. `Default` gives production defaults; each setter states its cost.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CoreConfig {
    /// Idle behaviour (default: adaptive, 50 µs spin).
    pub idle: IdlePolicy,
    /// Submission queue entries (default 1024, at most 16 384; the completion queue is 4x).
    pub ring_entries: u32,
    /// Receive buffers in the provided-buffer ring (default 256, a power of two). Memory:
    /// `recv_buffers * recv_buffer_size` per core, shared by all its connections.
    pub recv_buffers: u16,
    /// Size of each receive buffer (default 16 KiB).
    pub recv_buffer_size: usize,
    /// Connections a core keeps at most; more are closed on accept (default 65 536).
    pub max_connections: usize,
    /// Ping a connection silent for this long (default 15 s; zero disables keepalive).
    pub keepalive: Duration,
    /// Close a connection whose ping got no answer for this long (default 10 s).
    pub dead_after: Duration,
    /// A handshake, and every frame, must complete within this long of its first byte, and a
    /// peer must take some of the output waiting for it at least this often; otherwise the
    /// connection is closed (slowloris and slow-reader guard; default 10 s).
    pub stall_timeout: Duration,
    /// A connection that is closing (after an error, a GoAway drain, or the peer's EOF) is
    /// closed at the latest this long after it started closing, whatever the peer does
    /// (default 5 s).
    pub close_linger: Duration,
    /// Output waiting for the peer to read, in bytes, above which a new call or reply on the
    /// connection is refused with `ResourceExhausted` (that message only; the connection and
    /// its other calls go on). Must hold at least one largest frame plus one batch: at least
    /// `max_frame_size + max_batch_bytes` of both handshake offers (default 32 MiB).
    pub max_backlog_bytes: usize,
    /// Budget of frames that do no work, per connection (default 1000 at once, 1000 a second).
    pub idle_frame_budget: FrameBudget,
    /// Bytes that all connections of a core may hold in buffers for partial frames
    /// (reassembly) and decompressed payloads together (default 256 MiB: fifteen 16 MiB
    /// frames in flight at once beside every connection's small buffers). A peer whose frame would exceed it gets a connection error
    /// (ResourceExhausted). Must hold at least one largest frame plus one batch.
    pub max_buffer_bytes: usize,
    /// Batches of at least this many bytes are written with `SendZc` (zero-copy: the NIC reads
    /// the buffer in place; the buffer is held until the kernel's notification). `None` turns
    /// it off. Default `None`: on loopback the kernel copies anyway and the extra notification
    /// makes it slower (see docs/benchmarks.md); enable it for real NICs and large payloads.
    /// Applies to TCP connections only: Unix sockets cannot send zero-copy and record
    /// transports copy into their rings, so they ignore it.
    pub send_zc_threshold: Option<usize>,
    /// Hot connections on a busy-poll core are read with plain non-blocking `recv` calls
    /// instead of the io_uring multishot receive (default: on, 8 connections, 200 µs). Ignored
    /// by adaptive cores, which must be able to park in the ring. `None` turns it off.
    pub direct_recv: Option<DirectRecv>,
    /// The I/O backend (default [`DriverChoice::Auto`]: the `NETRON_DRIVER` environment
    /// variable if set, else io_uring with a fallback to epoll where io_uring is blocked;
    /// docs/architecture.md, "The epoll driver").
    pub driver: DriverChoice,
    /// Test-only fault injection: after this many loop turns, every `io_uring_enter` fails
    /// with `EPERM`, as under a seccomp filter installed after setup.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fail_enter_after_turns: Option<u64>,
    /// Handshake settings offered as a server.
    pub server: ServerConfig,
    /// Handshake settings offered as a client.
    pub client: ClientConfig,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            idle: IdlePolicy::default(),
            ring_entries: 1024,
            recv_buffers: 256,
            recv_buffer_size: 16 << 10,
            max_connections: 65_536,
            keepalive: Duration::from_secs(15),
            dead_after: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(10),
            close_linger: Duration::from_secs(5),
            max_backlog_bytes: 32 << 20,
            idle_frame_budget: FrameBudget::default(),
            max_buffer_bytes: 256 << 20,
            send_zc_threshold: None,
            direct_recv: Some(DirectRecv::default()),
            driver: DriverChoice::Auto,
            #[cfg(feature = "fault-injection")]
            fail_enter_after_turns: None,
            server: ServerConfig::default(),
            client: ClientConfig::default(),
        }
    }
}

impl CoreConfig {
    /// Checks every setting and how they fit together.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first unusable setting, its value and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let pow2 = |n: u32| n.is_power_of_two();
        if !(1..=16_384).contains(&self.ring_entries) {
            return Err(ConfigError::new(
                "CoreConfig::ring_entries",
                self.ring_entries,
                "must be 1 to 16384 (the completion queue is 4x, and the kernel allows at most \
                 65536 completion entries)",
            ));
        }
        if !pow2(u32::from(self.recv_buffers)) || self.recv_buffers > 32_768 {
            return Err(ConfigError::new(
                "CoreConfig::recv_buffers",
                self.recv_buffers,
                "must be a power of two from 1 to 32768 (a provided-buffer ring)",
            ));
        }
        if !(512..=(1 << 30)).contains(&self.recv_buffer_size) {
            return Err(ConfigError::new(
                "CoreConfig::recv_buffer_size",
                self.recv_buffer_size,
                "must be 512 bytes to 1 GiB",
            ));
        }
        if u64::from(self.recv_buffers).saturating_mul(self.recv_buffer_size as u64) > 1 << 30 {
            return Err(ConfigError::new(
                "CoreConfig::recv_buffers",
                (self.recv_buffers, self.recv_buffer_size),
                "recv_buffers * recv_buffer_size must be at most 1 GiB per core",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                "CoreConfig::max_connections",
                self.max_connections,
                "must be at least 1",
            ));
        }
        // Timers run on a wheel with 1 ms ticks: shorter values cannot be honoured.
        let tick = Duration::from_millis(1);
        for (setting, d) in [
            ("CoreConfig::stall_timeout", self.stall_timeout),
            ("CoreConfig::close_linger", self.close_linger),
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
                ("CoreConfig::keepalive", self.keepalive),
                ("CoreConfig::dead_after", self.dead_after),
            ] {
                if d < tick {
                    return Err(ConfigError::new(
                        setting,
                        d,
                        "must be at least 1 ms when keepalive is on (the timer wheel's tick)",
                    ));
                }
            }
        }
        if let IdlePolicy::Adaptive { spin } = self.idle {
            if spin > Duration::from_secs(3600) {
                return Err(ConfigError::new(
                    "CoreConfig::idle",
                    self.idle,
                    "an adaptive spin above an hour is busy-polling: use IdlePolicy::BusyPoll",
                ));
            }
        }
        if self.idle_frame_budget.burst == 0 {
            return Err(ConfigError::new(
                "CoreConfig::idle_frame_budget",
                self.idle_frame_budget,
                "burst must be at least 1 (every peer pings now and then)",
            ));
        }
        for (side, l) in [
            ("server", &self.server.limits),
            ("client", &self.client.limits),
        ] {
            let need = l.max_frame_size as usize + l.max_batch_bytes as usize;
            if self.max_buffer_bytes < need {
                return Err(ConfigError::new(
                    "CoreConfig::max_buffer_bytes",
                    self.max_buffer_bytes,
                    format!(
                        "must hold one largest frame plus one batch: at least {need} bytes \
                         (the {side} limits' max_frame_size {} + max_batch_bytes {})",
                        l.max_frame_size, l.max_batch_bytes
                    ),
                ));
            }
            if self.max_backlog_bytes < need {
                return Err(ConfigError::new(
                    "CoreConfig::max_backlog_bytes",
                    self.max_backlog_bytes,
                    format!(
                        "must hold one largest frame plus one batch: at least {need} bytes \
                         (the {side} limits' max_frame_size {} + max_batch_bytes {})",
                        l.max_frame_size, l.max_batch_bytes
                    ),
                ));
            }
        }
        if let Some(d) = self.direct_recv {
            if d.idle > Duration::from_secs(3600) {
                return Err(ConfigError::new(
                    "CoreConfig::direct_recv",
                    d,
                    "idle must be at most an hour",
                ));
            }
        }
        Ok(())
    }

    /// Sets how long a closing connection may take before it is closed regardless.
    pub fn with_close_linger(mut self, t: Duration) -> Self {
        self.close_linger = t;
        self
    }
    /// Sets the core's budget for partial-frame and decompression buffers.
    pub fn with_max_buffer_bytes(mut self, n: usize) -> Self {
        self.max_buffer_bytes = n;
        self
    }
    /// Sets the budget of frames that do no work.
    pub fn with_idle_frame_budget(mut self, budget: FrameBudget) -> Self {
        self.idle_frame_budget = budget;
        self
    }
    /// Sets the idle policy.
    pub fn with_idle(mut self, idle: IdlePolicy) -> Self {
        self.idle = idle;
        self
    }
    /// Sets the keepalive interval and the dead-peer timeout.
    pub fn with_keepalive(mut self, every: Duration, dead_after: Duration) -> Self {
        self.keepalive = every;
        self.dead_after = dead_after;
        self
    }
    /// Sets the stall timeout (slowloris guard).
    pub fn with_stall_timeout(mut self, t: Duration) -> Self {
        self.stall_timeout = t;
        self
    }
    /// Sets the unsent-output cap per connection (slow-consumer guard).
    pub fn with_max_backlog_bytes(mut self, n: usize) -> Self {
        self.max_backlog_bytes = n;
        self
    }
    /// Sets the zero-copy send threshold (`None`: never).
    pub fn with_send_zc_threshold(mut self, bytes: Option<usize>) -> Self {
        self.send_zc_threshold = bytes;
        self
    }
    /// Sets the connection cap per core.
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }
    /// Sets the direct-receive policy of busy-poll cores (`None`: always receive through the
    /// ring).
    pub fn with_direct_recv(mut self, direct: Option<DirectRecv>) -> Self {
        self.direct_recv = direct;
        self
    }
    /// Sets the I/O backend.
    pub fn with_driver(mut self, driver: DriverChoice) -> Self {
        self.driver = driver;
        self
    }
    /// Sets the receive buffer ring (count must be a power of two).
    pub fn with_recv_buffers(mut self, count: u16, size: usize) -> Self {
        self.recv_buffers = count;
        self.recv_buffer_size = size;
        self
    }
}
