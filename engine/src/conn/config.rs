//! A connection's configuration, fixed when it is created from the core's
//! [`crate::ProtocolConfig`], and the keepalive rule of a client (docs/configuration.md,
//! "Keepalive").

use std::time::Duration;

use netron_codec::handshake::{ClientConfig, ServerConfig};

use super::BufferBudget;

/// Per-connection configuration, fixed when the connection is created (from
/// [`crate::ProtocolConfig`]; see docs/configuration.md).
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    /// The accepting side's offer; its `keepalive_interval_ms` is `keepalive` (advertised in
    /// the Welcome).
    pub server: ServerConfig,
    pub client: ClientConfig,
    /// Ping a connection silent this long (zero: never). A client pings at the server's
    /// advertised interval instead when that is shorter and not zero (`Connection::keepalive`).
    pub keepalive: Duration,
    /// A connection whose handshake has not completed this long after it was created is
    /// closed (both roles).
    pub handshake_timeout: Duration,
    /// Close a connection whose ping got no answer for this long.
    pub dead_after: Duration,
    /// A handshake or a frame must complete within this long of its first byte; an output
    /// that makes no progress for this long closes the connection.
    pub stall_timeout: Duration,
    /// A closing connection is closed after this long whatever the peer does.
    pub close_linger: Duration,
    /// Unsent output above which a new outgoing message is refused (that message only).
    pub max_backlog_bytes: usize,
    /// Frames that do no work a peer may send: burst and refill per second.
    pub idle_frames: crate::config::FrameBudget,
    /// The core's budget for receive reassembly and decompression buffers.
    pub buffers: std::rc::Rc<BufferBudget>,
    /// Limits and defaults of events.
    pub events: crate::events::EventConfig,
    /// A `quic://` connection: with a dynamic table, header blocks are QPACK (§27.4 (c)).
    pub quic: bool,
}

impl ConnConfig {
    /// The per-connection part of `p`, with a fresh buffer budget for one core.
    pub(crate) fn new(p: &crate::ProtocolConfig) -> Self {
        let mut server = p.server.clone();
        // What the Welcome advertises is this side's keepalive, whatever the offer held.
        server.keepalive_interval_ms = crate::config::millis_u32(p.keepalive);
        ConnConfig {
            server,
            client: p.client.clone(),
            keepalive: p.keepalive,
            handshake_timeout: p.handshake_timeout,
            dead_after: p.dead_after,
            stall_timeout: p.stall_timeout,
            close_linger: p.close_linger,
            max_backlog_bytes: p.max_backlog_bytes,
            idle_frames: p.idle_frame_budget,
            buffers: std::rc::Rc::new(BufferBudget::new(p.max_buffer_bytes)),
            events: p.events,
            quic: false,
        }
    }
}

impl ConnConfig {
    /// The configuration of a `quic://` connection: as `self`, with header blocks coded by
    /// QPACK (docs/protocol.md §27.4 (c): insertions travel on the encoder stream, blocks only
    /// reference entries, so a block never depends on another QUIC stream's order) when the
    /// negotiated `header_table_size` is not 0; with 0 (either side's offer), blocks use the
    /// static table and literals only (§27.4 (a)). The buffer budget is shared. With
    /// `datagram_events` (`QuicSettings::datagrams` on) both roles offer DATAGRAM_EVENTS
    /// (§27.6).
    pub(crate) fn for_quic(&self, datagram_events: bool) -> Self {
        let mut c = self.clone();
        c.quic = true;
        if datagram_events {
            c.server.features |= netron_codec::features::DATAGRAM_EVENTS;
            c.client.features |= netron_codec::features::DATAGRAM_EVENTS;
        }
        c
    }
}

/// The keepalive a client uses: its own `own` (zero: never ping, whatever the server
/// advertises), or the server's advertised `advertised_ms` when that is shorter and not zero.
pub(crate) fn effective_keepalive(own: Duration, advertised_ms: u32) -> Duration {
    let advertised = Duration::from_millis(u64::from(advertised_ms));
    if own.is_zero() || advertised.is_zero() {
        own
    } else {
        own.min(advertised)
    }
}
