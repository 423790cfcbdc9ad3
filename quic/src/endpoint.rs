//! [`QuicEndpoint`]: one UDP socket's worth of QUIC, sans-IO. Datagrams and time go in,
//! datagrams, timer deadlines and [`QuicEvent`]s come out; connections live in a slab.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
pub use quinn_proto::EcnCodepoint;
use quinn_proto::crypto::rustls::HandshakeData;
use quinn_proto::{
    Connection, ConnectionHandle, DatagramEvent, EndpointConfig, Event, Incoming, StreamEvent,
    VarInt,
};
use rustls::pki_types::CertificateDer;
use slab::Slab;

use crate::config::{ALPN, ClientConfig, RetryPolicy, ServerConfig};
use crate::error::{ConfigError, QuicError};
use crate::event::{CloseReason, QuicEvent};

/// A connection's handle on its endpoint. Stale handles (of drained connections) are refused
/// with [`QuicError::NoConnection`], even when the slot is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

/// Datagrams to send, written to the buffer given to [`QuicEndpoint::poll_transmit`] (one)
/// or [`QuicEndpoint::poll_transmit_batch`] (one or more of the same size, for UDP GSO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Its length in bytes (the buffer holds exactly these bytes).
    pub len: usize,
    /// The source address to send from, when the endpoint is bound to several.
    pub src_ip: Option<IpAddr>,
    /// The ECN codepoint to mark the datagrams with (RFC 9000 §13.4; `None`: not ECN-capable).
    pub ecn: Option<EcnCodepoint>,
    /// `Some(s)`: the buffer holds several datagrams of `s` bytes each (the last may be
    /// shorter), to send in one system call with UDP GSO (Linux `UDP_SEGMENT`); `None`: one
    /// datagram of `len` bytes.
    pub segment_size: Option<usize>,
}

impl Transmit {
    /// The number of datagrams the buffer holds (`len` split at `segment_size`).
    pub fn datagrams(&self) -> usize {
        match self.segment_size {
            Some(s) if s > 0 => self.len.div_ceil(s),
            _ => 1,
        }
    }
}

/// Counters of an endpoint's defences (docs/quic.md, "Hardening").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// New clients accepted (handshake started).
    pub accepted: u64,
    /// New clients answered with a Retry (address validation).
    pub retries: u64,
    /// New clients refused (CONNECTION_REFUSED): over `max_pending_handshakes`, or quinn-proto
    /// refused the Initial.
    pub refused: u64,
    /// Connections closed because the peer negotiated no `netron/1` ALPN.
    pub alpn_refused: u64,
    /// New clients from another address than this endpoint's connections, on an endpoint
    /// limited by [`QuicEndpoint::limit_connections`] (a connected socket's): dropped.
    pub strays: u64,
}

/// What a listener's gate decided about a datagram ([`QuicEndpoint::screen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The datagram opens a connection to start on an endpoint of its own; `validated`: the
    /// client proved its address (a Retry token), so its IP address can be counted.
    Admit {
        /// The client echoed a valid Retry token.
        validated: bool,
    },
    /// Answered by the gate (Retry, refusal, version negotiation, stateless reset) or dropped.
    Answered,
}

pub(crate) struct Slot {
    pub(crate) conn: Connection,
    proto: ConnectionHandle,
    generation: u32,
    dirty: bool,
    closed: bool,
    connected: bool,
    /// A server-side handshake counted in `QuicEndpoint::pending`.
    pending: bool,
}

/// Endpoint-level datagrams (Retry, refusals, stateless resets, version negotiation) queued at
/// most; more are dropped (the peer retransmits) so a driver that lags cannot be made to hold
/// unbounded memory by an Initial flood.
pub const MAX_QUEUED_RESPONSES: usize = 256;

/// A QUIC endpoint without I/O: the driver feeds it received datagrams
/// ([`handle_datagram`](Self::handle_datagram)) and timer expiries
/// ([`handle_timeout`](Self::handle_timeout)), sends what [`poll_transmit`](Self::poll_transmit)
/// returns, sleeps until [`poll_timeout`](Self::poll_timeout), and acts on
/// [`poll_event`](Self::poll_event). No clock is read inside: `now` is always passed in.
pub struct QuicEndpoint {
    endpoint: quinn_proto::Endpoint,
    client: Option<quinn_proto::ClientConfig>,
    retry: RetryPolicy,
    max_pending: usize,
    /// `ServerConfig::max_pending_handshakes_per_ip` (for [`Self::screen`]).
    max_pending_per_ip: usize,
    /// Connections this endpoint accepts at most while they live ([`Self::limit_connections`]).
    max_conns: usize,
    pub(crate) conns: Slab<Slot>,
    by_proto: HashMap<ConnectionHandle, usize>,
    generation: u32,
    dirty: Vec<usize>,
    responses: VecDeque<(Transmit, Vec<u8>)>,
    events: VecDeque<QuicEvent>,
    scratch: Vec<u8>,
    tx_cursor: usize,
    stats: EndpointStats,
    /// Server-side handshakes in progress (accepted, neither connected nor closed).
    pending: usize,
    /// Scratch list of connections whose timer fired.
    due: Vec<usize>,
    /// The latest `now` passed in (inputs only: no clock is read here).
    now: Option<Instant>,
    /// `QuicSettings::gso` and `QuicSettings::gro` of the configuration (the server's if both
    /// are given), for the I/O driver ([`Self::gso`], [`Self::gro`]).
    offload: (bool, bool),
}

/// The application close code sent when the peer negotiated no ALPN: Netron's
/// `FailedPrecondition` (docs/protocol.md §15).
pub const ALPN_REFUSED: u32 = 9;

impl std::fmt::Debug for QuicEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicEndpoint")
            .field("connections", &self.conns.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl QuicEndpoint {
    /// An endpoint that accepts connections if `server` is given and can connect if `client` is.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting that cannot be used.
    pub fn new(
        server: Option<&ServerConfig>,
        client: Option<&ClientConfig>,
    ) -> Result<Self, ConfigError> {
        Self::with_cid_hook(server, client, None)
    }

    /// [`new`](Self::new), telling `issued` of every connection ID this endpoint issues as a
    /// server (the engine routes a migrated client's datagrams by them).
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting that cannot be used.
    pub fn with_cid_hook(
        server: Option<&ServerConfig>,
        client: Option<&ClientConfig>,
        issued: Option<crate::config::CidHook>,
    ) -> Result<Self, ConfigError> {
        let server_cfg = server.map(ServerConfig::build).transpose()?;
        let client_cfg = client.map(ClientConfig::build).transpose()?;
        let retry = server.map_or(RetryPolicy::Never, |s| s.retry);
        let max_pending = server.map_or(0, |s| s.max_pending_handshakes);
        let max_pending_per_ip = server.map_or(0, |s| s.max_pending_handshakes_per_ip);
        // Every endpoint of a server (one per connection in the engine, and those of a
        // restarted process) issues the same reset tokens for the same connection ids.
        let config = server.map_or_else(EndpointConfig::default, |s| s.endpoint_config(issued));
        let mut ep = Self::with_config(config, server_cfg, client_cfg, retry, max_pending);
        ep.max_pending_per_ip = max_pending_per_ip;
        if let Some(q) = server.map(|s| &s.settings).or(client.map(|c| &c.settings)) {
            ep.offload = (q.gso, q.gro);
        }
        Ok(ep)
    }

    /// Whether the configuration asks for UDP GSO on sends (`QuicSettings::gso`; the
    /// driver still uses it only where the kernel offers it).
    pub fn gso(&self) -> bool {
        self.offload.0
    }

    /// Whether the configuration asks for UDP GRO on receives (`QuicSettings::gro`).
    pub fn gro(&self) -> bool {
        self.offload.1
    }

    /// An endpoint on raw quinn-proto configurations (tests that need a misbehaving peer, e.g.
    /// one without ALPN). Prefer [`new`](Self::new).
    #[doc(hidden)]
    pub fn from_quinn(
        server: Option<Arc<quinn_proto::ServerConfig>>,
        client: Option<quinn_proto::ClientConfig>,
        retry: RetryPolicy,
        max_pending: usize,
    ) -> Self {
        Self::with_config(
            EndpointConfig::default(),
            server,
            client,
            retry,
            max_pending,
        )
    }

    fn with_config(
        config: EndpointConfig,
        server: Option<Arc<quinn_proto::ServerConfig>>,
        client: Option<quinn_proto::ClientConfig>,
        retry: RetryPolicy,
        max_pending: usize,
    ) -> Self {
        let endpoint = quinn_proto::Endpoint::new(Arc::new(config), server, false, None);
        Self {
            endpoint,
            client,
            retry,
            max_pending,
            max_pending_per_ip: usize::MAX,
            max_conns: usize::MAX,
            conns: Slab::new(),
            by_proto: HashMap::new(),
            generation: 0,
            dirty: Vec::new(),
            responses: VecDeque::new(),
            events: VecDeque::new(),
            scratch: Vec::new(),
            tx_cursor: 0,
            stats: EndpointStats::default(),
            pending: 0,
            due: Vec::new(),
            now: None,
            offload: (true, true),
        }
    }

    /// The defence counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// Live connections (including closing ones not yet drained).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The endpoint's connection when it has exactly one (an endpoint of one connected
    /// socket, before its `Accepted` event was polled: the engine reads a resumed client's
    /// identity, known from its ClientHello, before the first 0-RTT request is served).
    pub fn only_connection(&self) -> Option<ConnId> {
        if self.conns.len() != 1 {
            return None;
        }
        self.conns.iter().next().map(|(index, s)| ConnId {
            index: index as u32,
            generation: s.generation,
        })
    }

    /// Sends a PING on `conn` with the next datagrams (ack-eliciting, so the peer answers, or
    /// its host answers ICMP port unreachable if nothing listens there any more).
    ///
    /// # Errors
    /// [`QuicError::NoConnection`] if `conn` is not live.
    pub fn ping(&mut self, conn: ConnId) -> Result<(), QuicError> {
        self.slot(conn)?.conn.ping();
        Ok(())
    }

    /// At the connection limit, a new client's Initial replaces a connection whose handshake
    /// never completed (closed here, its `Closed` event follows): its "client" may have been
    /// one forged Initial, which would otherwise lock the real client of that address out
    /// until the handshake times out. False if every connection is established.
    fn give_way(&mut self, now: Instant) -> bool {
        let stale = self
            .conns
            .iter()
            .find(|(_, s)| !s.connected && !s.closed && s.conn.side().is_server())
            .map(|(index, s)| ConnId {
                index: index as u32,
                generation: s.generation,
            });
        match stale {
            Some(id) => {
                let _ = self.close(now, id, 0, b"replaced by a new connection from its address");
                true
            }
            None => false,
        }
    }

    /// Accepts at most `n` connections at a time: a new client's Initial beyond them is
    /// refused (CONNECTION_REFUSED) instead of accepted, unless it can replace one whose
    /// handshake never completed. An endpoint that serves one connected socket (one client
    /// address and port) sets 1, so a second connection from that address (a restarted
    /// client on the same port, or a forged Initial) can never join or disturb an established
    /// first one, and a forged Initial cannot lock the real client out.
    pub fn limit_connections(&mut self, n: usize) {
        self.max_conns = n;
    }

    /// Starts a connection to `remote`, verifying the server's certificate for `server_name`.
    ///
    /// # Errors
    /// [`QuicError::NotAClient`] without a [`ClientConfig`]; [`QuicError::Connect`] for a bad
    /// address or server name.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<ConnId, QuicError> {
        let cfg = self.client.clone().ok_or(QuicError::NotAClient)?;
        let (ch, conn) = self
            .endpoint
            .connect(now, cfg, remote, server_name)
            .map_err(|e| QuicError::Connect(e.to_string()))?;
        Ok(self.insert(ch, conn))
    }

    fn insert(&mut self, proto: ConnectionHandle, conn: Connection) -> ConnId {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let pending = conn.side().is_server();
        self.pending += usize::from(pending);
        let index = self.conns.insert(Slot {
            pending,
            conn,
            proto,
            generation,
            dirty: false,
            closed: false,
            connected: false,
        });
        self.by_proto.insert(proto, index);
        self.mark(index);
        ConnId {
            index: index as u32,
            generation,
        }
    }

    fn mark(&mut self, index: usize) {
        if let Some(slot) = self.conns.get_mut(index) {
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(index);
            }
        }
    }

    /// The slot of `id` (marked for event processing, since the caller is about to act on it).
    pub(crate) fn slot(&mut self, id: ConnId) -> Result<&mut Slot, QuicError> {
        let index = id.index as usize;
        match self.conns.get(index) {
            Some(s) if s.generation == id.generation => {}
            _ => return Err(QuicError::NoConnection),
        }
        self.mark(index);
        Ok(&mut self.conns[index])
    }

    /// Feeds one received UDP datagram (`data`, from `remote`, received on `local_ip` if known).
    /// Owned because quinn-proto decrypts in place.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        data: BytesMut,
    ) {
        self.handle_datagram_ecn(now, remote, local_ip, None, data);
    }

    /// [`handle_datagram`](Self::handle_datagram) with the datagram's ECN marking, as the
    /// socket reported it (`IP_RECVTOS`; RFC 9000 §13.4: QUIC's congestion controller reacts
    /// to congestion-experienced marks).
    pub fn handle_datagram_ecn(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) {
        self.now = Some(now);
        self.scratch.clear();
        match self
            .endpoint
            .handle(now, remote, local_ip, ecn, data, &mut self.scratch)
        {
            None => {}
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(&index) = self.by_proto.get(&ch) {
                    self.conns[index].conn.handle_event(event);
                    self.mark(index);
                }
            }
            Some(DatagramEvent::Response(t)) => self.respond(t),
            Some(DatagramEvent::NewConnection(incoming)) => self.incoming(now, incoming),
        }
    }

    fn respond(&mut self, t: quinn_proto::Transmit) {
        if self.responses.len() >= MAX_QUEUED_RESPONSES {
            return;
        }
        let bytes = self.scratch[..t.size].to_vec();
        self.responses.push_back((
            Transmit {
                destination: t.destination,
                len: t.size,
                src_ip: t.src_ip,
                ecn: t.ecn,
                segment_size: t.segment_size,
            },
            bytes,
        ));
    }

    fn incoming(&mut self, now: Instant, incoming: Incoming) {
        self.scratch.clear();
        if self.conns.len() >= self.max_conns {
            let from_peer = self
                .conns
                .iter()
                .any(|(_, s)| s.conn.remote_address() == incoming.remote_address());
            if !from_peer {
                // An endpoint limited to its peer's connections (a connected socket's) got a
                // new client from another address: the kernel's socket lookup handed it a
                // datagram meant for the listening socket (seen on Linux 6.18 with a
                // SO_REUSEPORT group holding connected sockets, about once in 250 runs of nine
                // concurrent connects on a loaded host). Neither a reason to close the
                // connection whose handshake is in progress here (it was, `give_way`: its
                // client saw a refusal) nor one to answer through a socket connected to
                // someone else: dropped, as a lost datagram (the client sends its Initial
                // again), and counted.
                self.endpoint.ignore(incoming);
                self.stats.strays += 1;
                return;
            }
            if !self.give_way(now) {
                let t = self.endpoint.refuse(incoming, &mut self.scratch);
                self.stats.refused += 1;
                return self.respond(t);
            }
        }
        let Some(incoming) = self.admission(incoming, self.pending, 0) else {
            return;
        };
        match self.endpoint.accept(incoming, now, &mut self.scratch, None) {
            Ok((ch, conn)) => {
                self.stats.accepted += 1;
                let conn = self.insert(ch, conn);
                self.events.push_back(QuicEvent::Accepted { conn });
            }
            Err(e) => {
                self.stats.refused += 1;
                if let Some(t) = e.response {
                    self.respond(t);
                }
            }
        }
    }

    /// The Retry and pending-handshake policy for a new client while `pending` handshakes are
    /// in progress, `from_ip` of them by proven clients of its IP address: `None` if it was
    /// answered here (CONNECTION_REFUSED at `max_pending_handshakes`, or for a proven client
    /// at `max_pending_handshakes_per_ip`; or a Retry, RFC 9000 §8.1.2; counted in
    /// [`EndpointStats`]), else the client to accept.
    fn admission(
        &mut self,
        incoming: Incoming,
        pending: usize,
        from_ip: usize,
    ) -> Option<Incoming> {
        self.scratch.clear();
        if pending >= self.max_pending
            || (incoming.remote_address_validated() && from_ip >= self.max_pending_per_ip)
        {
            let t = self.endpoint.refuse(incoming, &mut self.scratch);
            self.stats.refused += 1;
            self.respond(t);
            return None;
        }
        let retry = match self.retry {
            RetryPolicy::Always => true,
            RetryPolicy::UnderLoad { pending: limit } => pending >= limit,
            RetryPolicy::Never => false,
        };
        if retry && !incoming.remote_address_validated() && incoming.may_retry() {
            match self.endpoint.retry(incoming, &mut self.scratch) {
                Ok(t) => {
                    self.stats.retries += 1;
                    self.respond(t);
                }
                Err(e) => self.endpoint.ignore(e.into_incoming()),
            }
            return None;
        }
        Some(incoming)
    }

    /// A listener's gate: decides what a datagram that reached the listening socket gets,
    /// while `pending` handshakes are in progress across every endpoint of the listener,
    /// `from_ip` of them by proven clients of the sender's IP address (the caller counts
    /// them; this endpoint keeps no connection). A new client is answered here with a Retry
    /// or a refusal as the server's [`RetryPolicy`], `max_pending_handshakes` and
    /// `max_pending_handshakes_per_ip` say (sent by [`poll_transmit`](Self::poll_transmit), counted
    /// in [`stats`](Self::stats)), or admitted: the caller then starts its connection on an
    /// endpoint of its own made with [`admit_all`](Self::admit_all) from the same
    /// [`ServerConfig`], fed the same datagram (the Retry token it may carry was made with the
    /// server's token key, which every endpoint of the server shares). Anything else (not
    /// QUIC, a packet of no connection) is answered as an endpoint would (a version
    /// negotiation, a stateless reset) or dropped.
    pub fn screen(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: BytesMut,
        (pending, from_ip): (usize, usize),
    ) -> Admission {
        self.now = Some(now);
        self.scratch.clear();
        match self
            .endpoint
            .handle(now, remote, None, None, data, &mut self.scratch)
        {
            Some(DatagramEvent::NewConnection(incoming)) => {
                match self.admission(incoming, pending, from_ip) {
                    Some(incoming) => {
                        let validated = incoming.remote_address_validated();
                        self.endpoint.ignore(incoming);
                        self.stats.accepted += 1;
                        Admission::Admit { validated }
                    }
                    None => Admission::Answered,
                }
            }
            Some(DatagramEvent::Response(t)) => {
                self.respond(t);
                Admission::Answered
            }
            Some(DatagramEvent::ConnectionEvent(..)) | None => Admission::Answered,
        }
    }

    /// Makes this endpoint accept every new client without a Retry or pending-handshake
    /// decision of its own: for an endpoint whose clients a gate ([`screen`](Self::screen))
    /// admitted, so the listener's policy is applied once, with its whole count.
    pub fn admit_all(&mut self) {
        self.retry = RetryPolicy::Never;
        self.max_pending = usize::MAX;
        self.max_pending_per_ip = usize::MAX;
    }

    /// The next event, after processing what the last inputs and operations caused. Call until
    /// `None` after every input.
    pub fn poll_event(&mut self) -> Option<QuicEvent> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            let index = self.dirty.pop()?;
            self.process(index);
        }
    }

    fn process(&mut self, index: usize) {
        let Some(slot) = self.conns.get_mut(index) else {
            return;
        };
        slot.dirty = false;
        let id = ConnId {
            index: index as u32,
            generation: slot.generation,
        };
        while let Some(ev) = slot.conn.poll() {
            match ev {
                Event::HandshakeDataReady | Event::DatagramsUnblocked => {}
                Event::Connected => {
                    let alpn = slot
                        .conn
                        .crypto_session()
                        .handshake_data()
                        .and_then(|d| d.downcast::<HandshakeData>().ok())
                        .and_then(|d| d.protocol);
                    if alpn.as_deref() == Some(ALPN) {
                        slot.connected = true;
                        self.events.push_back(QuicEvent::Connected { conn: id });
                    } else if !slot.closed {
                        // rustls (QUIC mode) already requires the agreed ALPN: a safety net.
                        slot.closed = true;
                        self.stats.alpn_refused += 1;
                        if let Some(now) = self.now {
                            slot.conn.close(
                                now,
                                VarInt::from_u32(ALPN_REFUSED),
                                Bytes::from_static(b"ALPN netron/1 required"),
                            );
                        }
                        self.events.push_back(QuicEvent::Closed {
                            conn: id,
                            reason: CloseReason::Tls(
                                "the peer negotiated no ALPN; netron/1 is required".into(),
                            ),
                        });
                    }
                }
                Event::ConnectionLost { reason } => {
                    if !slot.closed {
                        slot.closed = true;
                        self.events.push_back(QuicEvent::Closed {
                            conn: id,
                            reason: CloseReason::of(
                                &reason,
                                slot.conn.side() == quinn_proto::Side::Client,
                            ),
                        });
                    }
                }
                Event::Stream(StreamEvent::Opened { dir }) => {
                    while let Some(stream) = slot.conn.streams().accept(dir) {
                        self.events
                            .push_back(QuicEvent::StreamOpened { conn: id, stream });
                        self.events
                            .push_back(QuicEvent::Readable { conn: id, stream });
                    }
                }
                Event::Stream(StreamEvent::Readable { id: stream }) => {
                    self.events
                        .push_back(QuicEvent::Readable { conn: id, stream });
                }
                Event::Stream(StreamEvent::Writable { id: stream }) => {
                    self.events
                        .push_back(QuicEvent::Writable { conn: id, stream });
                }
                Event::Stream(StreamEvent::Finished { id: stream }) => {
                    self.events
                        .push_back(QuicEvent::Finished { conn: id, stream });
                }
                Event::Stream(StreamEvent::Stopped {
                    id: stream,
                    error_code,
                }) => {
                    self.events.push_back(QuicEvent::Stopped {
                        conn: id,
                        stream,
                        code: error_code.into_inner(),
                    });
                }
                // Bidirectional: waiting exchanges; unidirectional: a header stream (§27.4).
                Event::Stream(StreamEvent::Available { .. }) => {
                    self.events
                        .push_back(QuicEvent::StreamsAvailable { conn: id });
                }
                Event::DatagramReceived => self.events.push_back(QuicEvent::Datagram { conn: id }),
            }
        }
        let mut again = false;
        while let Some(ev) = slot.conn.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(slot.proto, ev) {
                slot.conn.handle_event(back);
                again = true;
            }
        }
        if slot.pending && (slot.connected || slot.closed) {
            slot.pending = false;
            self.pending -= 1;
        }
        if slot.conn.is_drained() {
            let proto = slot.proto;
            self.conns.remove(index);
            self.by_proto.remove(&proto);
            self.events.push_back(QuicEvent::Drained { conn: id });
        } else if again {
            // The endpoint's answer (new connection ids ...) may raise events: look again.
            self.mark(index);
        }
    }

    /// Writes the next datagram to send into `buf` (cleared first) and says where it goes.
    /// Call until `None` after every input and operation. One datagram per call (no GSO yet).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.poll_transmit_batch(now, 1, buf)
    }

    /// Like [`poll_transmit`](Self::poll_transmit), but one connection may write up to
    /// `max_datagrams` datagrams of one size to the same destination into `buf` at once
    /// ([`Transmit::segment_size`]), for a single `sendmsg` with UDP GSO. quinn-proto
    /// decides how many it has; `max_datagrams` of 0 is taken as 1.
    pub fn poll_transmit_batch(
        &mut self,
        now: Instant,
        max_datagrams: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        buf.clear();
        if let Some((t, bytes)) = self.responses.pop_front() {
            buf.extend_from_slice(&bytes);
            return Some(t);
        }
        let cap = self.conns.capacity();
        for k in 0..cap {
            let index = (self.tx_cursor + k) % cap;
            let Some(slot) = self.conns.get_mut(index) else {
                continue;
            };
            if let Some(t) = slot.conn.poll_transmit(now, max_datagrams.max(1), buf) {
                self.tx_cursor = index + 1;
                self.mark(index);
                return Some(Transmit {
                    destination: t.destination,
                    len: t.size,
                    src_ip: t.src_ip,
                    ecn: t.ecn,
                    segment_size: t.segment_size,
                });
            }
        }
        None
    }

    /// The earliest instant [`handle_timeout`](Self::handle_timeout) must be called at, if any.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.conns
            .iter_mut()
            .filter_map(|(_, s)| s.conn.poll_timeout())
            .min()
    }

    /// Runs the timers (loss detection, idle timeout, pacing ...) due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        let mut due = std::mem::take(&mut self.due);
        for (index, slot) in self.conns.iter_mut() {
            if slot.conn.poll_timeout().is_some_and(|t| t <= now) {
                slot.conn.handle_timeout(now);
                due.push(index);
            }
        }
        for &index in &due {
            self.mark(index);
        }
        due.clear();
        self.due = due;
    }

    /// Closes a connection with an application error code (a Netron status code, §27.1) and
    /// reason; a [`QuicEvent::Closed`] with [`CloseReason::Local`] follows, then `Drained`.
    ///
    /// # Errors
    /// [`QuicError::NoConnection`] for a stale handle.
    pub fn close(
        &mut self,
        now: Instant,
        conn: ConnId,
        code: u32,
        reason: &[u8],
    ) -> Result<(), QuicError> {
        let slot = self.slot(conn)?;
        if slot.closed {
            return Ok(());
        }
        slot.closed = true;
        slot.conn
            .close(now, VarInt::from_u32(code), Bytes::copy_from_slice(reason));
        self.events.push_back(QuicEvent::Closed {
            conn,
            reason: CloseReason::Local,
        });
        Ok(())
    }

    /// The peer's certificate chain (leaf first) if it presented one: on a server with mutual
    /// TLS, the client's verified identity, for interceptors and handlers.
    ///
    /// # Errors
    /// [`QuicError::NoConnection`] for a stale handle.
    pub fn peer_identity(
        &mut self,
        conn: ConnId,
    ) -> Result<Option<Vec<CertificateDer<'static>>>, QuicError> {
        let slot = self.slot(conn)?;
        Ok(slot
            .conn
            .crypto_session()
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
            .map(|chain| *chain))
    }

    /// Whether the connection's TLS handshake is still in progress (on a server: stream data
    /// read now came in 0-RTT packets, RFC 9001 §4.6, which an attacker may have replayed).
    ///
    /// # Errors
    /// [`QuicError::NoConnection`] for a stale handle.
    pub fn is_handshaking(&mut self, conn: ConnId) -> Result<bool, QuicError> {
        Ok(self.slot(conn)?.conn.is_handshaking())
    }

    /// On a client: whether the connection resumed a session that allows 0-RTT, so what is
    /// written before the handshake completes goes in 0-RTT packets.
    ///
    /// # Errors
    /// [`QuicError::NoConnection`] for a stale handle.
    pub fn has_0rtt(&mut self, conn: ConnId) -> Result<bool, QuicError> {
        Ok(self.slot(conn)?.conn.has_0rtt())
    }

    /// Once connected: whether the server accepted the 0-RTT data. When it did not,
    /// quinn-proto discarded every stream opened before the handshake completed (their IDs
    /// are issued again from the first), and their data must be sent again.
    ///
    /// # Errors
    /// [`QuicError::NoConnection`] for a stale handle.
    pub fn accepted_0rtt(&mut self, conn: ConnId) -> Result<bool, QuicError> {
        Ok(self.slot(conn)?.conn.accepted_0rtt())
    }

    /// The peer's address.
    ///
    /// # Errors
    /// [`QuicError::NoConnection`] for a stale handle.
    pub fn remote_address(&mut self, conn: ConnId) -> Result<SocketAddr, QuicError> {
        Ok(self.slot(conn)?.conn.remote_address())
    }

    /// Sending halves of the connection that may still have unacknowledged data (quinn-proto's
    /// `Streams::send_streams`): open halves, and finished or reset ones whose data or reset
    /// the peer has not acknowledged yet. With every half finished, 0 means the peer has all
    /// the stream data (quinn-proto's `Connection::close` documentation).
    ///
    /// # Errors
    /// [`QuicError::NoConnection`] for a stale handle.
    pub fn unacked_send_streams(&mut self, conn: ConnId) -> Result<usize, QuicError> {
        Ok(self.slot(conn)?.conn.streams().send_streams())
    }

    /// Whether the connection is closed (by either side, or timed out): nothing more can be
    /// sent on it.
    ///
    /// # Errors
    /// [`QuicError::NoConnection`] for a stale handle.
    pub fn is_closed(&mut self, conn: ConnId) -> Result<bool, QuicError> {
        let slot = self.slot(conn)?;
        Ok(slot.closed || slot.conn.is_closed())
    }

    /// quinn-proto's statistics of the connection (packets, bytes, losses, RTT).
    ///
    /// # Errors
    /// [`QuicError::NoConnection`] for a stale handle.
    pub fn connection_stats(
        &mut self,
        conn: ConnId,
    ) -> Result<quinn_proto::ConnectionStats, QuicError> {
        Ok(self.slot(conn)?.conn.stats())
    }
}
