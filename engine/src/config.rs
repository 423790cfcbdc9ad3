//! Core configuration.

use std::time::Duration;

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

/// Settings of one core. `Default` gives production defaults; each setter states its cost.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CoreConfig {
    /// Idle behaviour (default: adaptive, 50 µs spin).
    pub idle: IdlePolicy,
    /// Submission queue entries (default 1024; the completion queue is 4x).
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
    /// Close a connection whose handshake or partial frame has not progressed for this long
    /// (slowloris guard; default 10 s).
    pub stall_timeout: Duration,
    /// Close a connection whose unsent output exceeds this many bytes because the peer does not
    /// read (default 8 MiB).
    pub max_backlog_bytes: usize,
    /// Batches of at least this many bytes are written with `SendZc` (zero-copy: the NIC reads
    /// the buffer in place; the buffer is held until the kernel's notification). `None` turns
    /// it off. Default `None`: on loopback the kernel copies anyway and the extra notification
    /// makes it slower (see docs/benchmarks.md); enable it for real NICs and large payloads.
    pub send_zc_threshold: Option<usize>,
    /// Hot connections on a busy-poll core are read with plain non-blocking `recv` calls
    /// instead of the io_uring multishot receive (default: on, 8 connections, 200 µs). Ignored
    /// by adaptive cores, which must be able to park in the ring. `None` turns it off.
    pub direct_recv: Option<DirectRecv>,
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
            max_backlog_bytes: 8 << 20,
            send_zc_threshold: None,
            direct_recv: Some(DirectRecv::default()),
            server: ServerConfig::default(),
            client: ClientConfig::default(),
        }
    }
}

impl CoreConfig {
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
    /// Sets the receive buffer ring (count must be a power of two).
    pub fn with_recv_buffers(mut self, count: u16, size: usize) -> Self {
        self.recv_buffers = count;
        self.recv_buffer_size = size;
        self
    }
}
