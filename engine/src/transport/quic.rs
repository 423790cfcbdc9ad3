//! The QUIC link (`quic://`, docs/quic.md "In the engine"): one connected, non-blocking UDP
//! socket and one [`QuicEndpoint`] holding one QUIC connection, polled through the driver.
//!
//! Input: a readiness poll on the socket (both drivers); when it fires the link receives every
//! waiting datagram (non-blocking `recvmsg`, a GRO train cut into its datagrams:
//! [`super::udp`]), hands each to the endpoint, applies the
//! endpoint's events (stream bytes, resets, STOP_SENDING, credit) through the frame
//! [`Router`], which hands whole frames to the connection as [`Input::Bytes`]. Output: the
//! connection's batch goes through the router onto its QUIC streams, then the datagrams the
//! endpoint produced go out with one non-blocking `sendmsg` per run of up to 10 datagrams of
//! one size (UDP GSO where the kernel offers it, else one each). QUIC's timers: one driver
//! timeout at the endpoint's `poll_timeout` (precise to the microsecond, which the core's 1 ms
//! wheel is not; re-armed after every input).
//!
//! A datagram the socket cannot take now (`EAGAIN`) is dropped: QUIC's loss recovery sends it
//! again. Closing sends CONNECTION_CLOSE, then shuts the socket down so the poll completes,
//! and cancels the timer when the poll's completion arrives.

use std::io;
use std::net::UdpSocket;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netron_codec::StatusCode;
use netron_quic::router::{self, EndpointStreams, Router};
use netron_quic::{CloseReason, ConnId, QuicEndpoint, QuicEvent, Read, StreamId};

use super::{Direct, Input, Link, Owner, Tx, TxPolicy, Update};
use crate::conn::{Caller, Connection, TableMemo};
use crate::driver::token::{Op, Token};
use crate::driver::{Driver, Event, OpId};

/// Bytes the router may hold back for QUIC flow control before the link stops taking batches
/// from the connection (which then buffers as it does for a slow socket).
const MAX_PENDING: usize = 4 << 20;
/// Largest UDP datagram received.
pub(crate) const MAX_DATAGRAM: usize = super::udp::RX_BUFFER;
/// Bytes read from one stream per read call.
const READ_CHUNK: usize = 64 << 10;
/// ICMP port-unreachable errors (`ECONNREFUSED` on the connected socket) in a row, with no
/// datagram from the peer between them, after which the peer is taken for gone: its process
/// died (`kill -9`) or its socket closed, so nothing will answer. Three, not one, because
/// one can be a stray (an ICMP error for a datagram sent before a rebind); three take about
/// 100 ms on loopback (the first send and two of QUIC's retransmissions, RFC 9002 §6.2), where
/// QUIC alone waits for its idle timeout (30 s).
const REFUSALS: u8 = 3;
/// How long a link with exchanges waiting for the peer (calls in flight) stays without a
/// datagram before it sends a QUIC PING: a peer whose process died sends nothing, and our
/// requests were already acknowledged, so without a probe nothing would draw the ICMP errors
/// that tell it is gone ([`REFUSALS`]) before Netron's keepalive (15 s) or QUIC's idle
/// timeout (fresh user R9's finding 4). One small datagram a second, only while calls wait.
const PROBE: Duration = Duration::from_secs(1);

/// Tests: the next completion of a link whose socket's local port is this one panics inside
/// [`QuicLink::guarded`] (0: none), as a quinn-proto assertion would.
#[cfg(test)]
pub(crate) static PANIC_AT_PORT: std::sync::atomic::AtomicU16 =
    std::sync::atomic::AtomicU16::new(0);

/// Why a link whose QUIC state machine panicked ended ([`QuicLink::guarded`]).
const POISONED: &str = "the QUIC state machine (quinn-proto) panicked on this connection's \
    input; the connection is closed, the core and its other connections go on";

/// A QUIC connection made (client) or begun (server) on another thread, for a core to run.
#[derive(Debug)]
pub(crate) struct QuicPipe {
    /// The connection's socket, connected to the peer.
    pub socket: UdpSocket,
    pub endpoint: QuicEndpoint,
    /// The connection (a server's first datagram created it).
    pub conn: Option<ConnId>,
    /// Whether this side is the client (the Netron initiator).
    pub client: bool,
    /// A server's handshake in progress, counted in its listener's total until `Connected`.
    pub pending: Option<super::quic_listen::PendingHandshake>,
    /// A server connection's datagrams that reached the listener (its client's address
    /// changed: [`super::quic_path`]); the core that takes the connection sets its route.
    pub mail: Option<Arc<super::quic_path::PathMail>>,
    /// A client connection handed over before its handshake completed: it resumed a session
    /// with 0-RTT (`netron_quic::ClientConfig::zero_rtt`), so what it writes now goes in
    /// 0-RTT packets; what the last connections to that server taught of its header table
    /// (a [`TableMemo`] as kept in the client configuration).
    pub early: Option<u64>,
    /// A client's configuration and server name, to remember what the handshake teaches of
    /// the server's header table for the next 0-RTT connect ([`QuicLink::remember_table`]).
    pub memo: Option<(netron_quic::ClientConfig, String)>,
}

/// What a client link wrote in 0-RTT, kept until the server accepts it, to write again if it
/// rejects it (quinn-proto then forgets every stream opened before the handshake).
#[derive(Debug, Default)]
struct EarlyJournal {
    /// The batches routed and the header-stream bytes written, in order.
    writes: Vec<EarlyWrite>,
    bytes: usize,
    /// More than [`EARLY_JOURNAL_MAX`] was written: a rejection cannot be repaired.
    overflowed: bool,
}

#[derive(Debug)]
enum EarlyWrite {
    Batch(Vec<u8>),
    HeaderStreams(Vec<u8>, Vec<u8>),
}

/// Bytes of 0-RTT writes a client link keeps at most ([`EarlyJournal`]): the connection sends
/// at most 64 KiB of early calls (`conn::EARLY_BYTES`) besides its Hello, so this is only
/// reached by a connection that misbehaves; a rejection after it fails the connection.
const EARLY_JOURNAL_MAX: usize = 256 << 10;

impl EarlyJournal {
    fn record(&mut self, w: EarlyWrite) {
        let n = match &w {
            EarlyWrite::Batch(b) => b.len(),
            EarlyWrite::HeaderStreams(e, d) => e.len() + d.len(),
        };
        if self.overflowed || self.bytes + n > EARLY_JOURNAL_MAX {
            self.overflowed = true;
            self.writes = Vec::new();
            return;
        }
        self.bytes += n;
        self.writes.push(w);
    }
}

/// A QUIC connection's link.
#[derive(Debug)]
pub(crate) struct QuicLink {
    socket: UdpSocket,
    /// A duplicate of the socket for the driver's polls (it keeps the socket open until the
    /// poll's completion).
    poll_fd: Rc<OwnedFd>,
    endpoint: QuicEndpoint,
    conn: Option<ConnId>,
    router: Router<StreamId>,
    owner: Owner,
    poll: Option<OpId>,
    /// Hot on a busy-poll core (`stop_recv` until the next `start_recv`): the core reads the
    /// socket itself every turn ([`Link::read_direct`]), so no poll is armed.
    direct: bool,
    timer: Option<OpId>,
    /// When the armed timer fires.
    timer_at: Option<Instant>,
    /// Frames the router made up wait for the next completion (the timer fires at once).
    made_waiting: bool,
    /// The batch whose frames went to the router (handed back by `take_written`).
    written: Option<(Vec<u8>, u32)>,
    read_done: bool,
    closed: bool,
    /// ICMP port-unreachable errors since the last datagram from the peer ([`REFUSALS`]).
    refused: u8,
    /// QUIC's handshake completed (until then a new client's connection may replace ours).
    quic_connected: bool,
    /// Counted in the listener's handshakes in progress until `quic_connected` (or the end).
    pending: Option<super::quic_listen::PendingHandshake>,
    /// `ProtocolConfig::stall_timeout`: how long output may wait on QUIC flow control (the
    /// peer's windows) with no byte taken before the connection closes (`write_stalled`).
    stall: Duration,
    /// When the last datagram from the peer arrived, and when we last probed it ([`PROBE`]).
    last_rx: Instant,
    probed: Option<Instant>,
    /// Since when bytes have waited in the router with none taken, and the router's
    /// [`Router::released_bytes`] then.
    held_since: Option<(Instant, u64)>,
    /// When to look for a partial frame older than `stall` ([`QuicLink::check_partials`]).
    partial_check: Option<Instant>,
    /// Since when, and from which [`Router::received_bytes`], the peer's progress is
    /// measured for the partial-frame check ([`QuicLink::check_partials`]).
    partial_window: (Instant, u64),
    /// Why the QUIC connection closed, once it did.
    close_reason: Option<String>,
    /// The application error code and reason our CONNECTION_CLOSE carries (§27.1): the
    /// Netron status of the connection error, or 0 for a clean close.
    close_status: (u32, Vec<u8>),
    /// Closing, waiting until this instant at most for the peer to acknowledge our last
    /// frames before the CONNECTION_CLOSE ([`QuicLink::begin_close`]).
    linger_until: Option<Instant>,
    /// Our half of the control stream ended (FIN) while closing ([`Router::end_control`]).
    control_ended: bool,
    /// The peer acknowledged all of our control stream, FIN included (quinn-proto's
    /// `Finished`), after [`Router::end_control`].
    control_acked: bool,
    /// The core's buffer budget (`ProtocolConfig::max_buffer_bytes`), charged with the
    /// router's partial frames ([`Router::buffered_bytes`]) as a byte stream's partial frame
    /// is charged by its connection.
    buffers: Rc<crate::conn::BufferBudget>,
    /// What this link has charged to `buffers`, bytes.
    charged: usize,
    /// The peer's verified certificate chain, DER, leaf first.
    peer_identity: Option<crate::PeerCertificates>,
    /// The socket's `sendmsg`/`recvmsg` with GSO and GRO, and its receive buffer.
    udp: super::udp::UdpIo,
    /// A server connection's datagrams routed by its listener (migration), and whether some
    /// wait ([`QuicLink::mail_arrived`]).
    mail: Option<Arc<super::quic_path::PathMail>>,
    mail_waiting: bool,
    /// The address the socket is connected to: the peer's, until QUIC moves the connection
    /// to a new path ([`QuicLink::follow_path`]).
    peer: Option<std::net::SocketAddr>,
    /// The connection took datagrams from its mail: its path may move.
    may_move: bool,
    /// quinn-proto panicked inside a call of this link ([`QuicLink::guarded`]): the endpoint
    /// is never touched again.
    poisoned: bool,
    scratch: Vec<u8>,
    /// The connection's encoder- and decoder-stream bytes on their way to the router
    /// (buffers kept for reuse).
    header_out: (Vec<u8>, Vec<u8>),
    tx: Vec<u8>,
    /// A client in 0-RTT: what it wrote, until the handshake says whether the server took
    /// it ([`EarlyJournal`]).
    early: Option<Box<EarlyJournal>>,
    /// A server told its connection that the frames it delivers arrived in 0-RTT
    /// (`Input::EarlyData(true)`), and has still to say that the handshake completed.
    early_said: bool,
    /// The frame limits the router was made with (to make it again after a rejected 0-RTT).
    limits: netron_codec::Limits,
    /// In 0-RTT: what the last connections to the server taught of its header table.
    early_memo: TableMemo,
    /// Connected in 0-RTT: if the peer fails it before it opened, what it assumed of the
    /// server is forgotten ([`QuicLink::forget_early_memo`]).
    began_early: bool,
    /// A client's configuration and server name ([`QuicLink::remember_table`]).
    memo: Option<(netron_quic::ClientConfig, String)>,
}

impl QuicLink {
    /// A link over `pipe` (the socket becomes non-blocking).
    ///
    /// # Errors
    /// The OS error if the socket cannot be made non-blocking or duplicated (`EMFILE`).
    pub(crate) fn new(
        pipe: QuicPipe,
        limits: &netron_codec::Limits,
        stall: Duration,
        buffers: &Rc<crate::conn::BufferBudget>,
        udp: &Rc<super::udp::UdpCounters>,
    ) -> io::Result<QuicLink> {
        pipe.socket.set_nonblocking(true)?;
        let peer = pipe.socket.peer_addr().ok();
        let udp =
            super::udp::UdpIo::new(&pipe.socket, pipe.endpoint.gso(), pipe.endpoint.gro(), udp)?;
        let poll_fd = Rc::new(OwnedFd::from(pipe.socket.try_clone()?));
        let mut router = Router::new(pipe.client, limits);
        if !pipe.client {
            // A client's call sent in 0-RTT may overtake its Hello: the control stream is
            // the client's first bidirectional stream, whichever comes first.
            router.expect_control(netron_quic::router::control_stream_id());
        }
        let early = pipe.early.filter(|_| pipe.client).map(|_| Box::default());
        let early_memo = TableMemo::from_u64(pipe.early.unwrap_or(u64::MAX));
        // A server's connection is known from the first datagram the listener fed it (its
        // `Accepted` event confirms it): its identity too, for a resumed session (from the
        // ticket), before any 0-RTT request is served.
        let conn = pipe.conn.or_else(|| pipe.endpoint.only_connection());
        let mut link = QuicLink {
            socket: pipe.socket,
            poll_fd,
            endpoint: pipe.endpoint,
            conn,
            router,
            owner: Owner {
                key: 0,
                generation: 0,
            },
            poll: None,
            direct: false,
            timer: None,
            timer_at: None,
            made_waiting: false,
            written: None,
            read_done: false,
            closed: false,
            refused: 0,
            quic_connected: pipe.client && pipe.early.is_none(),
            pending: pipe.pending,
            stall,
            last_rx: Instant::now(),
            probed: None,
            held_since: None,
            partial_check: None,
            partial_window: (Instant::now(), 0),
            close_reason: None,
            close_status: (0, b"closed".to_vec()),
            linger_until: None,
            control_ended: false,
            control_acked: false,
            buffers: buffers.clone(),
            charged: 0,
            peer_identity: None,
            udp,
            mail: pipe.mail,
            mail_waiting: false,
            peer,
            may_move: false,
            poisoned: false,
            scratch: Vec::new(),
            header_out: (Vec::new(), Vec::new()),
            tx: Vec::new(),
            early,
            early_memo,
            began_early: pipe.early.is_some() && pipe.client,
            early_said: false,
            limits: *limits,
            memo: pipe.memo,
        };
        link.note_identity();
        Ok(link)
    }

    /// A client link in 0-RTT (its handshake not complete yet): the connection may send
    /// idempotent calls now (`Connection::enter_early`).
    pub(crate) fn is_early(&self) -> bool {
        self.early.is_some()
    }

    /// In 0-RTT: what the last connections to this server taught of its header table (the
    /// format of the early calls' header blocks follows from it and our own offer).
    pub(crate) fn early_memo(&self) -> TableMemo {
        self.early_memo
    }

    /// A client connection opened and learned `memo` of the server's header table: kept for
    /// the next 0-RTT connect to the same server name. Nothing learned (our offer was 0)
    /// does not replace what another connection of the configuration learned.
    pub(crate) fn remember_table(&mut self, memo: TableMemo) {
        if let Some((config, server)) = self.memo.take() {
            if memo != TableMemo::Unknown || config.recall(&server).is_none() {
                config.remember(&server, memo.to_u64());
            }
        }
    }

    /// The peer failed this connection during our 0-RTT phase (before it opened, so nothing
    /// was remembered of it): what this connect assumed of the server's header table may be
    /// what failed it (a server whose `header_table_size` changed since the last connection
    /// cannot decode the early calls), so it is forgotten and the next connect does a full
    /// handshake that learns it again. Returns whether it forgot.
    pub(crate) fn forget_early_memo(&mut self) -> bool {
        if !self.began_early {
            return false;
        }
        self.memo.take().is_some_and(|(config, server)| {
            config.forget(&server);
            true
        })
    }

    /// The peer's verified certificate chain, DER, leaf first (for
    /// [`crate::Request::peer_certificates`]).
    pub(crate) fn peer_identity(&self) -> Option<&crate::PeerCertificates> {
        self.peer_identity.as_ref()
    }

    /// The Netron status this side closes for: CONNECTION_CLOSE carries its code and reason
    /// (docs/protocol.md §27.1) instead of 0, so the peer learns it even if the Error(0)
    /// frame queued before was not yet delivered (a QUIC close drops unsent stream data).
    pub(crate) fn set_close_status(&mut self, code: netron_codec::StatusCode, why: &str) {
        self.close_status = (code as u32, why.as_bytes().to_vec());
    }

    /// Closes the connection once the peer has what we wrote, waiting `linger` at most
    /// (`ProtocolConfig::close_linger`; zero: at once). QUIC's CONNECTION_CLOSE ends every
    /// stream at once, dropping stream data not yet delivered (RFC 9000 §10.2), so the
    /// `Error(0)` that says why a connection closed, queued just before, was lost whenever it
    /// had not been sent and acknowledged yet (§27.1 orders Error(0), then the close).
    /// So: our half of the control stream ends (FIN), and the CONNECTION_CLOSE goes out when
    /// the peer acknowledged all of the control stream (quinn-proto's `Finished`) and, for a
    /// clean close (code 0: a drained connection's replies must arrive), every stream whose
    /// half we ended; or when the peer closed; or when bytes waiting on the peer's flow-control
    /// windows saw none taken for `stall_timeout` (a peer that does not read would only hold
    /// it to the bound); or at the linger bound. Meanwhile the link
    /// receives (acknowledgements, the peer's own close) and hands the connection nothing.
    pub(crate) fn begin_close(&mut self, io: &mut Driver, linger: Duration) {
        if self.closed || self.linger_until.is_some() {
            return;
        }
        self.read_done = true;
        self.pending = None;
        let until = Instant::now().checked_add(linger);
        let open = self.quic_connected
            && self
                .conn
                .is_some_and(|c| !self.endpoint.is_closed(c).unwrap_or(true));
        let (Some(_), Some(until), true, false) = (self.conn, until, open, linger.is_zero()) else {
            self.close();
            return;
        };
        // The peer's partial frames are of no use any more: freed, and the budget with them.
        self.router.drop_partials();
        let _ = self.charge_buffers();
        self.linger_until = Some(until);
        if self.delivered() || self.linger_stalled(Instant::now()) {
            self.close();
            return;
        }
        // A hot link had no poll armed: the linger needs the socket's completions.
        self.keep_polling(io);
    }

    /// Whether the peer acknowledged what must reach it before our CONNECTION_CLOSE (see
    /// [`QuicLink::begin_close`]); ends the control stream when its turn comes. The control
    /// stream's FIN is the end of this side's input for the peer (§27.2, as a TCP FIN), so
    /// on a clean close it goes only once every exchange stream's data is acknowledged: a
    /// FIN that overtook the last replies on their streams made the peer fail the calls
    /// still waiting for them (fresh user R14's finding 1: a graceful shutdown over quic://
    /// lost every reply above a few hundred bytes). On a connection error it goes at once,
    /// after the Error(0): the exchanges' data is of no use to the peer then.
    fn delivered(&mut self) -> bool {
        let Some(conn) = self.conn else {
            return true;
        };
        if !self.control_ended {
            if self.close_status.0 == 0 {
                let control = usize::from(self.router.control_stream().is_some());
                let exchanges_acked = self.router.pending_bytes() == 0
                    && self
                        .endpoint
                        .unacked_send_streams(conn)
                        .is_ok_and(|n| n <= self.router.unended_sends() + control);
                if !exchanges_acked {
                    return false;
                }
            }
            self.control_ended = true;
            let mut streams = EndpointStreams {
                endpoint: &mut self.endpoint,
                conn,
            };
            if !self.router.end_control(&mut streams) {
                // No control stream of ours to wait for (none, or the peer stopped it).
                self.control_acked = true;
            }
            self.send_out();
        }
        self.control_acked
    }

    /// Whether the linger is futile: bytes wait on the peer's flow-control windows and it
    /// took none of them for `ProtocolConfig::stall_timeout` (a peer that does not read, the
    /// flood tests' cut-off). The bytes QUIC accepted are sendable; these are not.
    fn linger_stalled(&mut self, now: Instant) -> bool {
        self.note_held(now);
        self.held_since
            .is_some_and(|(t, _)| now.saturating_duration_since(t) >= self.stall)
    }

    /// One completion of a link waiting to close ([`QuicLink::begin_close`]): datagrams and
    /// QUIC's timers processed (nothing goes to the connection), then the close once the
    /// peer has our data, closed itself, or the linger bound passed.
    fn linger_turn(&mut self, io: &mut Driver) -> Update {
        let now = Instant::now();
        let mut ended = self.receive().is_err();
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        ended |= self.apply(&mut |_| {}).is_err();
        self.send_out();
        if ended
            || self.delivered()
            || self.linger_stalled(now)
            || self.linger_until.is_some_and(|t| now >= t)
        {
            self.close();
            // The socket's shutdown completes the poll; the timer is cancelled here.
            if let Some(op) = self.timer {
                io.cancel(op);
            }
            return Update::Quiet(None);
        }
        self.arm_poll(io);
        self.arm_timer(io);
        Update::Quiet(None)
    }

    fn note_identity(&mut self) {
        if self.peer_identity.is_some() {
            return;
        }
        if let Some(conn) = self.conn {
            if let Ok(Some(chain)) = self.endpoint.peer_identity(conn) {
                self.peer_identity = crate::PeerCertificates::new(chain);
            }
        }
    }

    fn tag(&self) -> Token {
        Token::new(Op::Recv, self.owner.key, self.owner.generation)
    }

    /// Sends every datagram the endpoint has: one `sendmsg` per run of datagrams of one size
    /// (up to 10 with UDP GSO while bulk data goes out, else one: [`super::udp`]).
    fn send_out(&mut self) {
        let now = Instant::now();
        let (max, mut full) = (self.udp.max_segments(), 0);
        while let Some(t) = self.endpoint.poll_transmit_batch(now, max, &mut self.tx) {
            full += super::udp::UdpIo::full_datagrams(&t);
            // EAGAIN and other errors drop the datagrams: QUIC retransmits. An ICMP error for
            // an earlier datagram is reported by whichever of send and receive comes first.
            match self.udp.send(&self.socket, &t, &self.tx) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => self.note_refused(),
                _ => {}
            }
        }
        self.udp.transmitted(full);
    }

    /// Follows the bytes QUIC flow control holds back: `Err` (`write_stalled`) once some have
    /// waited [`QuicLink::stall`] with none taken, as a socket write the peer takes nothing of
    /// (the peer's QUIC stack acknowledges but its application does not read, so its windows
    /// stay shut). Any byte taken restarts the wait.
    fn check_held(&mut self, now: Instant) -> Result<(), Update> {
        let held = self.note_held(now);
        match self.held_since {
            Some((since, _)) if now.saturating_duration_since(since) >= self.stall => {
                self.read_done = true;
                Err(Update::RecvFailed {
                    counter: "write_stalled",
                    why: format!(
                        "the peer took no bytes for ProtocolConfig::stall_timeout ({:?}) while \
                         {held} bytes of output waited on its QUIC flow-control windows",
                        self.stall
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// Slowloris on QUIC: a frame begun on a QUIC stream and not completed ends the
    /// connection (`stalled`) once `ProtocolConfig::stall_timeout` passed since its first
    /// byte, unless the peer sent, over the last stall timeout, at least the bytes that frame
    /// still misses. The router holds partial frames per stream, so the connection's own
    /// stall clock (for a byte stream) never sees them: a peer trickling a frame, or sending
    /// half of one and going silent, held its connection open for ever. The byte condition
    /// is what a byte stream gives for free: there every byte the peer sends goes to the
    /// frame in progress, while QUIC spreads a sender's bytes over its streams in an order of
    /// its own (flow control, the sender's scheduling), so a peer flooding hundreds of calls
    /// at once completes none of them for a while yet sends megabytes; the eleventh
    /// session's clock per frame alone, and a first twelfth-session rule (since the last
    /// whole frame), cut such peers off as `stalled`. A peer that could have completed the
    /// frame with what it sent is making progress; one that sends less is cut off, within
    /// two stall timeouts of the frame's first byte at most. What partial frames hold is
    /// charged to the core's buffer budget ([`QuicLink::charge_buffers`]). The streams are
    /// walked only when a check is due. `Err`: why, for the connection's `Error(0)` (status
    /// DeadlineExceeded, as on a byte stream).
    fn check_partials(&mut self, now: Instant) -> Result<(), String> {
        if self.router.take_partial_started() && self.partial_check.is_none() {
            self.partial_check = now.checked_add(self.stall);
            self.partial_window = (now, self.router.received_bytes());
        }
        let Some(at) = self.partial_check else {
            return Ok(());
        };
        if now < at {
            return Ok(());
        }
        let Some((since, missing)) = self.router.oldest_partial() else {
            self.partial_check = None;
            return Ok(());
        };
        if now.saturating_duration_since(since) < self.stall {
            self.partial_check = since.checked_add(self.stall);
            return Ok(());
        }
        let (start, base) = self.partial_window;
        let received = self.router.received_bytes();
        if now.saturating_duration_since(start) < self.stall {
            // The window is younger than a stall timeout: look again when it is not.
            self.partial_check = start.checked_add(self.stall);
            return Ok(());
        }
        if received.saturating_sub(base) >= missing as u64 {
            // Enough bytes came to have completed it: progress. Measure the next window.
            self.partial_window = (now, received);
            self.partial_check = now.checked_add(self.stall);
            return Ok(());
        }
        self.partial_check = None;
        Err(format!(
            "a frame was not completed within ProtocolConfig::stall_timeout ({:?}) of its \
             first byte, and the peer sent fewer bytes meanwhile than it misses ({missing})",
            self.stall
        ))
    }

    /// Nothing more goes to the connection, but QUIC must go on (acknowledgements, and the
    /// peer's flow-control credit for the output still to send): a hot link leaves the
    /// core's direct reads when its input ends, so its socket is polled again. A link left
    /// neither hot nor polled saw the peer's datagrams only at its next QUIC timer, which
    /// with nothing in flight is the idle timeout: the last replies of a drained connection
    /// waited for the drain's bound (fresh user R14: 10 MiB of replies, 5 s, one lost).
    pub(crate) fn keep_polling(&mut self, io: &mut Driver) {
        self.direct = false;
        self.arm_poll(io);
        self.arm_timer(io);
    }

    /// Waits for the peer until `until` at most if lingering (re-arms the timer for it).
    pub(crate) fn limit_linger(&mut self, io: &mut Driver, until: Instant) {
        if let Some(t) = self.linger_until {
            self.linger_until = Some(t.min(until));
            self.arm_timer(io);
        }
    }

    /// Closing at once, without waiting for the peer: a link lingering in
    /// [`QuicLink::begin_close`] sends its CONNECTION_CLOSE now (a core being dropped).
    pub(crate) fn abort_linger(&mut self) {
        if self.linger_until.is_some() {
            self.close();
        }
    }

    /// Charges the router's partial frames to the core's buffer budget. `Err` (why) when they
    /// grew and the core's buffers are over `ProtocolConfig::max_buffer_bytes`: the peer whose
    /// frames filled them loses its connection (`buffer_budget`, ResourceExhausted), as on
    /// a byte stream; the others keep theirs.
    fn charge_buffers(&mut self) -> Result<(), String> {
        let held = self.router.buffered_bytes();
        if held == self.charged {
            return Ok(());
        }
        self.buffers.recharge(self.charged, held);
        let grew = held > self.charged;
        self.charged = held;
        if grew && self.buffers.used() > self.buffers.limit() {
            return Err(format!(
                "the core's buffers for partial and decompressed frames are full \
                 (ProtocolConfig::max_buffer_bytes = {} bytes); this connection's QUIC streams \
                 hold {held} bytes of partial frames",
                self.buffers.limit()
            ));
        }
        Ok(())
    }

    /// When the next [`PROBE`] check is due: a probe period after the last datagram from
    /// the peer and after the last check.
    fn next_probe(&self) -> Instant {
        let since = self.probed.map_or(self.last_rx, |p| p.max(self.last_rx));
        since + PROBE
    }

    /// Once a [`PROBE`] period passed with nothing from the peer: sends a PING if an exchange
    /// of ours waits for it (a walk over the open streams, once a period at most).
    fn probe(&mut self, now: Instant) {
        if now < self.next_probe() {
            return;
        }
        self.probed = Some(now);
        if let (true, Some(conn)) = (self.router.awaiting_peer(), self.conn) {
            let _ = self.endpoint.ping(conn);
        }
    }

    /// Updates [`QuicLink::held_since`] with the bytes held back now; returns them.
    fn note_held(&mut self, now: Instant) -> usize {
        let (held, released) = (self.router.pending_bytes(), self.router.released_bytes());
        self.held_since = match self.held_since {
            _ if held == 0 => None,
            // Nothing taken since (more may have been added): the wait goes on.
            Some((since, r)) if r == released => Some((since, r)),
            // First bytes held, or QUIC took some: the wait starts now.
            _ => Some((now, released)),
        };
        held
    }

    /// Runs `f` (a call into quinn-proto through this link), turning a panic inside it into
    /// the end of this connection only. quinn-proto has debug assertions a peer can reach
    /// (0.11.19 `connection/mod.rs:1836`, after the peer moved the connection to a path that
    /// acknowledges nothing: fresh user R16's finding 1, which killed the core thread and
    /// every connection on it in builds with debug assertions); release builds compile them
    /// out, but any panic of the protocol library must not take a core down. After one the
    /// endpoint's state is not trusted: it is never called again (no CONNECTION_CLOSE: the
    /// peer learns at its idle timeout, or from its next datagram's ICMP error once the
    /// socket is closed), the socket is shut down, and the connection fails with
    /// `quic_internal_error`.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Result<T, Update> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
            Ok(t) => Ok(t),
            Err(_) => {
                self.poisoned = true;
                self.closed = true;
                self.read_done = true;
                self.pending = None;
                self.linger_until = None;
                let _ = rustix::net::shutdown(&*self.poll_fd, rustix::net::Shutdown::Both);
                Err(Update::RecvFailed {
                    counter: "quic_internal_error",
                    why: POISONED.to_owned(),
                })
            }
        }
    }

    /// The listener posted datagrams for this connection (its client's address changed:
    /// [`super::quic_path`]): they are taken at the timer's completion, armed at once, or
    /// by the next direct read of a hot link.
    pub(crate) fn mail_arrived(&mut self, io: &mut Driver) {
        self.mail_waiting = true;
        self.arm_timer(io);
    }

    /// Hands the datagrams the listener routed here to the endpoint, with the addresses they
    /// came from (quinn-proto then validates the new path and moves the connection to it).
    fn take_mail(&mut self, now: Instant) {
        if !std::mem::take(&mut self.mail_waiting) {
            return;
        }
        let Some(mail) = &self.mail else { return };
        let (endpoint, udp) = (&mut self.endpoint, &self.udp);
        let mut got = false;
        mail.take(|from, data| {
            got = true;
            udp.count_routed();
            endpoint.handle_datagram(now, from, None, data);
        });
        // Not proof the peer lives (`refused`, `last_rx`): anyone who saw a connection ID can
        // post datagrams through the listener, and quinn-proto drops forged ones unseen
        // (fresh user R16's finding 4: a forged flood kept a dead client's connection 30 s
        // instead of 5). The connection's own socket resets them once QUIC moved to the path.
        if got {
            self.may_move = true;
        }
    }

    /// Once QUIC moved the connection to another path (the peer's address changed, or a
    /// failed validation moved it back), connects the socket to the new address, so the
    /// peer's datagrams come to it directly instead of through the listener's mail.
    fn follow_path(&mut self) {
        if !self.may_move {
            return;
        }
        let Some(conn) = self.conn else { return };
        let Ok(remote) = self.endpoint.remote_address(conn) else {
            return;
        };
        if self.peer != Some(remote) && self.socket.connect(remote).is_ok() {
            self.peer = Some(remote);
        }
    }

    /// Counts one ICMP port-unreachable error ([`REFUSALS`]).
    fn note_refused(&mut self) {
        self.refused = self.refused.saturating_add(1);
    }

    /// `Err` once the peer refused [`REFUSALS`] datagrams in a row: it is gone.
    fn check_reachable(&mut self) -> Result<(), Update> {
        if self.refused < REFUSALS {
            return Ok(());
        }
        self.read_done = true;
        let peer = self
            .socket
            .peer_addr()
            .map_or_else(|_| "the peer".to_owned(), |a| a.to_string());
        Err(Update::RecvFailed {
            counter: "quic_peer_unreachable",
            why: format!(
                "QUIC peer unreachable: {peer} answered {REFUSALS} datagrams in a row with ICMP \
                 port unreachable and sent nothing between them (its process is gone or its \
                 socket closed)"
            ),
        })
    }

    /// Arms the timer at the endpoint's next timeout (or at once for frames the router made
    /// up), unless one is armed early enough; a later one is cancelled and re-armed on its
    /// completion.
    fn arm_timer(&mut self, io: &mut Driver) {
        if self.closed {
            return;
        }
        let now = Instant::now();
        let want = if self.made_waiting || self.mail_waiting {
            Some(now)
        } else {
            // QUIC's own timers, the end of the flow-control stall wait, and the next probe
            // while exchanges are open (the timer then checks whether one awaits the peer).
            let stall_at = self.held_since.and_then(|(t, _)| t.checked_add(self.stall));
            let probe_at = (self.router.open_streams() > 0).then(|| self.next_probe());
            [
                self.endpoint.poll_timeout(),
                stall_at,
                probe_at,
                self.partial_check,
                self.linger_until,
            ]
            .into_iter()
            .flatten()
            .min()
        };
        let Some(want) = want else { return };
        match (self.timer, self.timer_at) {
            (Some(_), Some(at)) if at <= want => {}
            (Some(op), _) => {
                io.cancel(op);
                self.timer_at = Some(now);
            }
            (None, _) => {
                let tag = self.tag();
                self.timer = Some(io.timeout(want.saturating_duration_since(now), tag));
                self.timer_at = Some(want);
            }
        }
    }

    fn arm_poll(&mut self, io: &mut Driver) {
        if self.poll.is_none() && !self.closed && !self.direct {
            let tag = self.tag();
            self.poll = Some(io.poll(&self.poll_fd, u32::from(libc::POLLIN.unsigned_abs()), tag));
        }
    }

    /// Receives every waiting datagram into the endpoint. `Err`: the link must close (the
    /// socket failed, or the peer is unreachable).
    fn receive(&mut self) -> Result<(), Update> {
        if self.mail_waiting {
            self.take_mail(Instant::now());
        }
        let mut datagrams = 0;
        loop {
            // The clock is read once per receive that returned data (a busy-poll turn's last
            // receive finds none: no clock read for it).
            let mut now = None;
            let endpoint = &mut self.endpoint;
            let got = self.udp.recv(&self.socket, |from, data| {
                let now = *now.get_or_insert_with(Instant::now);
                datagrams += 1;
                endpoint.handle_datagram(now, from, None, data);
            });
            match got {
                Ok(true) => {
                    self.refused = 0;
                    self.last_rx = now.unwrap_or_else(Instant::now);
                }
                Ok(false) => {
                    self.udp.drained(&self.socket, datagrams);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An ICMP error for an earlier datagram: the peer's port is closed. Gone
                // after REFUSALS of them in a row; keep reading until then.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    self.note_refused();
                    self.check_reachable()?;
                }
                Err(e) => {
                    return Err(Update::RecvFailed {
                        counter: "recv_failed",
                        why: format!("receiving QUIC datagrams failed: {e}"),
                    });
                }
            }
        }
    }

    /// Applies the endpoint's events; frames for the connection go to `deliver`. `Err`: the
    /// connection must close (a router error, or QUIC closed).
    fn apply(&mut self, deliver: &mut impl FnMut(Input<'_>)) -> Result<bool, Update> {
        let mut got = false;
        while let Some(ev) = self.endpoint.poll_event() {
            // A new connection replaced ours before its handshake completed (the endpoint
            // lets a real client's Initial replace one that may have been forged: see
            // `QuicEndpoint::limit_connections`): the link serves the new one.
            if let QuicEvent::Accepted { conn } = ev {
                if !self.quic_connected {
                    self.conn = Some(conn);
                }
            }
            // The link serves one QUIC connection: events of any other (refused or replaced
            // by the endpoint) are not this connection's.
            if self.conn.is_some_and(|c| c != ev.conn()) {
                continue;
            }
            match ev {
                QuicEvent::Accepted { conn } => {
                    self.conn.get_or_insert(conn);
                }
                QuicEvent::Connected { conn } => {
                    self.conn = Some(conn);
                    self.quic_connected = true;
                    self.pending = None;
                    self.note_identity();
                    if std::mem::take(&mut self.early_said) {
                        deliver(Input::EarlyData(false));
                    }
                    if let Some(journal) = self.early.take() {
                        let accepted = self.endpoint.accepted_0rtt(conn).unwrap_or(false);
                        deliver(Input::ZeroRtt { accepted });
                        if !accepted {
                            if journal.overflowed {
                                return Err(Update::RecvFailed {
                                    counter: "zero_rtt_rejected",
                                    why: "the server rejected the 0-RTT data and more of it \
                                          was written than is kept to send again"
                                        .to_owned(),
                                });
                            }
                            self.replay_early(conn, *journal);
                        }
                    }
                    let mut io = EndpointStreams {
                        endpoint: &mut self.endpoint,
                        conn,
                    };
                    self.router.on_streams_available(&mut io);
                }
                // Closing (the linger): the peer's stream data is of no use any more and is
                // left in QUIC's buffers, where its flow-control windows bound it.
                QuicEvent::StreamOpened { .. } | QuicEvent::Readable { .. }
                    if self.linger_until.is_some() => {}
                QuicEvent::StreamOpened { conn, stream } | QuicEvent::Readable { conn, stream }
                    if router::is_unidirectional(stream) =>
                {
                    got |= self.read_uni(conn, stream, deliver);
                }
                QuicEvent::StreamOpened { conn, stream } | QuicEvent::Readable { conn, stream } => {
                    if !self.quic_connected && !self.early_said && self.early.is_none() {
                        // A server reading before its handshake completed: 0-RTT data.
                        self.early_said = true;
                        self.note_identity();
                        deliver(Input::EarlyData(true));
                    }
                    got |= self.read_stream(conn, stream, deliver)?;
                }
                QuicEvent::Writable { conn, stream } => {
                    let mut io = EndpointStreams {
                        endpoint: &mut self.endpoint,
                        conn,
                    };
                    self.router.on_writable(&mut io, stream);
                }
                QuicEvent::Stopped { stream, .. } if router::is_unidirectional(stream) => {
                    // One of our header streams (§27.4): a critical stream may not be stopped.
                    if let Err(e) = self.router.on_uni_closed(stream) {
                        self.fail_input(&e, deliver);
                        return Ok(true);
                    }
                }
                QuicEvent::Stopped { conn, stream, code } => {
                    let mut io = EndpointStreams {
                        endpoint: &mut self.endpoint,
                        conn,
                    };
                    self.router.on_stopped(&mut io, stream, code, |f| {
                        got = true;
                        deliver(Input::Bytes(f));
                    });
                    if self.router.control_stream() == Some(stream) {
                        // The peer reads no more of the control stream: nothing of it will be
                        // acknowledged, so a close linger has nothing to wait for there.
                        self.control_acked = true;
                    }
                }
                QuicEvent::StreamsAvailable { conn } => {
                    let mut io = EndpointStreams {
                        endpoint: &mut self.endpoint,
                        conn,
                    };
                    self.router.on_streams_available(&mut io);
                }
                QuicEvent::Closed { reason, .. } => {
                    // Nothing more can be read or written: the connection closes now, naming
                    // QUIC's reason (a TLS alert such as a refused client certificate, the
                    // peer's close, the idle timeout).
                    let why = format!("QUIC connection closed: {reason}");
                    self.close_reason = Some(why.clone());
                    self.read_done = true;
                    self.pending = None;
                    // A clean close is no error (R8: 1,000 clean closes counted 1,000
                    // `quic_closed`); the others are counted by kind.
                    let counter = match reason {
                        CloseReason::Local | CloseReason::Application { code: 0, .. } => {
                            return Err(Update::Ended { why });
                        }
                        // The peer closed for a connection error: the code is its Netron
                        // status (§27.1), counted as an Error(0) frame would be.
                        CloseReason::Application { code, ref reason } => {
                            let status = u16::try_from(code)
                                .map_or(netron_codec::StatusCode::Unknown, |c| {
                                    netron_codec::StatusCode::from_u16(c)
                                });
                            let mut why = format!(
                                "the peer closed the connection: {status}: {}",
                                crate::conn::truncate_message(reason)
                            );
                            if self.forget_early_memo() {
                                why.push_str(crate::conn::EARLY_FAILED_HINT);
                            }
                            self.close_reason = Some(why.clone());
                            return Err(Update::RecvFailed {
                                counter: "peer_error",
                                why,
                            });
                        }
                        // The TLS text alone: `ConnectError::Tls` says "the TLS handshake
                        // failed" already (R17: the phrase came twice).
                        CloseReason::Tls(t) => {
                            return Err(Update::TlsFailed { why: t.clone() });
                        }
                        CloseReason::TimedOut => "quic_idle_timeout",
                        _ => "quic_closed",
                    };
                    return Err(Update::RecvFailed { counter, why });
                }
                QuicEvent::Finished { stream, .. } => {
                    if self.router.control_stream() == Some(stream) {
                        self.control_acked = true;
                    }
                }
                QuicEvent::Datagram { conn } => {
                    // Events in datagrams (§27.6): each is an input of its own.
                    while let Ok(Some(d)) = self.endpoint.recv_datagram(conn) {
                        deliver(Input::Datagram(&d));
                        got = true;
                    }
                }
                QuicEvent::Drained { .. } => {}
            }
        }
        if self.router.control_closed() && !self.read_done {
            self.read_done = true;
            return Err(Update::Eof);
        }
        Ok(got)
    }

    /// The server rejected our 0-RTT data: quinn-proto forgot every stream opened before the
    /// handshake (their IDs are issued again from the first) and nothing was received on
    /// them (the server processed none of it). A new router routes the same writes again,
    /// in order, so they take the same stream IDs; their header blocks reference no dynamic
    /// table (Required Insert Count 0), so they are as valid now as then.
    fn replay_early(&mut self, conn: ConnId, journal: EarlyJournal) {
        self.router = Router::new(true, &self.limits);
        let mut io = EndpointStreams {
            endpoint: &mut self.endpoint,
            conn,
        };
        for w in journal.writes {
            match w {
                EarlyWrite::HeaderStreams(enc, dec) => {
                    self.router.send_header_streams(&mut io, &enc, &dec);
                }
                // Routed once already: the same bytes route the same way.
                EarlyWrite::Batch(b) => {
                    let _ = self.router.send(&mut io, &b);
                }
            }
        }
    }

    fn read_stream(
        &mut self,
        conn: ConnId,
        stream: StreamId,
        deliver: &mut impl FnMut(Input<'_>),
    ) -> Result<bool, Update> {
        let mut got = false;
        loop {
            self.scratch.clear();
            match self
                .endpoint
                .read(conn, stream, &mut self.scratch, READ_CHUNK)
            {
                Ok(Read::Bytes { fin, .. }) => {
                    let r = self.router.on_bytes(stream, &self.scratch, fin, |f| {
                        got = true;
                        deliver(Input::Bytes(f));
                    });
                    if let Err(e) = r {
                        // The peer broke §27.2 (or sent a frame length its decoder refuses):
                        // the connection fails as for its own decode errors, counting it and
                        // sending Error(0) with the status, before the close.
                        self.fail_input(&e, deliver);
                        return Ok(true);
                    }
                    if fin {
                        return Ok(got);
                    }
                }
                Ok(Read::Reset { code }) => {
                    let cut = self.router.on_reset(stream, code, |f| {
                        got = true;
                        deliver(Input::Bytes(f));
                    });
                    if let Some(id) = cut {
                        deliver(Input::ExchangeReset { id });
                    }
                    return Ok(got);
                }
                Ok(Read::Blocked) | Err(_) => return Ok(got),
            }
        }
    }

    /// The peer broke §27.2 or §27.4 (found by the router): the connection fails as for its
    /// own decode errors, counting it and sending Error(0) with the status, before the close.
    fn fail_input(&mut self, e: &router::RouteError, deliver: &mut impl FnMut(Input<'_>)) {
        deliver(Input::Failed {
            counter: e.counter,
            status: e.status,
            message: &e.message,
        });
        self.read_done = true;
    }

    /// Reads the peer's unidirectional stream `stream`: header-stream bytes go to the
    /// connection (§27.4), other types are discarded; returns whether anything was delivered.
    fn read_uni(
        &mut self,
        conn: ConnId,
        stream: StreamId,
        deliver: &mut impl FnMut(Input<'_>),
    ) -> bool {
        let mut got = false;
        loop {
            self.scratch.clear();
            let r = match self
                .endpoint
                .read(conn, stream, &mut self.scratch, READ_CHUNK)
            {
                Ok(Read::Bytes { fin, .. }) => {
                    let r =
                        self.router
                            .on_uni_bytes(stream, &self.scratch, fin, |stream, bytes| {
                                got = true;
                                deliver(Input::HeaderStream { stream, bytes });
                            });
                    if r.is_ok() && !fin {
                        continue;
                    }
                    r
                }
                Ok(Read::Reset { .. }) => self.router.on_uni_closed(stream),
                Ok(Read::Blocked) | Err(_) => Ok(()),
            };
            if let Err(e) = r {
                self.fail_input(&e, deliver);
                return true;
            }
            return got;
        }
    }

    /// After an input: events applied, datagrams out, timer and poll re-armed.
    fn pump(&mut self, io: &mut Driver, deliver: impl FnMut(Input<'_>)) -> Update {
        let update = self.process(Instant::now(), deliver);
        let ended = matches!(
            update,
            Update::RecvFailed { .. } | Update::Ended { .. } | Update::TlsFailed { .. }
        );
        self.arm_timer(io);
        if !ended {
            self.arm_poll(io);
        }
        update
    }

    /// What an input leaves to do, with or without the driver: the endpoint's events
    /// applied (frames to `deliver`), made-up frames delivered, datagrams sent, and the
    /// peer's reachability and the flow-control stall checked.
    fn process(&mut self, now: Instant, mut deliver: impl FnMut(Input<'_>)) -> Update {
        let was_blocked = self.router.pending_bytes() > MAX_PENDING;
        self.router.set_now(now);
        let mut update = match self.apply(&mut deliver) {
            Ok(true) => Update::Input,
            Ok(false) => Update::Quiet(None),
            Err(u) => u,
        };
        if self.made_waiting {
            self.made_waiting = false;
            self.router.take_made(|f| deliver(Input::Bytes(f)));
            if matches!(update, Update::Quiet(_)) {
                update = Update::Input;
            }
        }
        if was_blocked
            && self.router.pending_bytes() <= MAX_PENDING
            && matches!(update, Update::Quiet(_))
        {
            // QUIC took the held-back bytes: the core looks at the connection again, so its
            // waiting output goes out now rather than at the next input.
            update = Update::Input;
        }
        self.send_out();
        self.follow_path();
        let ended = matches!(
            update,
            Update::RecvFailed { .. } | Update::Ended { .. } | Update::TlsFailed { .. }
        );
        if !ended {
            if let Err(gone) = self.check_reachable() {
                return gone;
            }
            if let Err(stalled) = self.check_held(now) {
                return stalled;
            }
            // The peer's partial frames past the core's buffer budget, or stalled: the
            // connection fails as for these on a byte stream (counted, Error(0), the close).
            let failed = match self.charge_buffers() {
                Err(why) => Some(("buffer_budget", StatusCode::ResourceExhausted, why)),
                Ok(()) => self
                    .check_partials(now)
                    .err()
                    .map(|why| ("stalled", StatusCode::DeadlineExceeded, why)),
            };
            if let Some((counter, status, why)) = failed {
                deliver(Input::Failed {
                    counter,
                    status,
                    message: &why,
                });
                self.read_done = true;
                return Update::Input;
            }
        }
        update
    }
}

impl QuicLink {
    fn start_recv_inner(&mut self, io: &mut Driver, owner: Owner) {
        self.owner = owner;
        self.direct = false;
        // A server link's first datagram is already in the endpoint: answer it now.
        self.send_out();
        self.arm_poll(io);
        self.arm_timer(io);
    }

    fn on_completion_inner(
        &mut self,
        io: &mut Driver,
        event: Event,
        deliver: impl FnMut(Input<'_>),
    ) -> Update {
        match event {
            Event::Polled { .. } => {
                self.poll = None;
                if self.closed {
                    if let Some(op) = self.timer {
                        io.cancel(op);
                    }
                    return Update::Quiet(None);
                }
                if self.linger_until.is_some() {
                    return self.linger_turn(io);
                }
                if let Err(failed) = self.receive() {
                    return failed;
                }
                self.pump(io, deliver)
            }
            Event::TimedOut { .. } => {
                self.timer = None;
                self.timer_at = None;
                if self.closed {
                    return Update::Quiet(None);
                }
                if self.linger_until.is_some() {
                    return self.linger_turn(io);
                }
                let now = Instant::now();
                self.take_mail(now);
                self.endpoint.handle_timeout(now);
                self.probe(now);
                self.pump(io, deliver)
            }
            _ => Update::Quiet(None),
        }
    }

    /// One busy-poll turn of a hot link, without the driver: the datagrams waiting (one
    /// non-blocking `recvfrom` each, and one that finds none), QUIC's timers that are due,
    /// the frames for the connection, and the datagrams to send (as after a poll's
    /// completion, [`QuicLink::pump`], less the re-arming: nothing is armed while hot).
    fn read_direct_inner(&mut self, _scratch: &mut [u8], deliver: impl FnMut(Input<'_>)) -> Direct {
        if self.closed || self.read_done {
            return Direct::Empty;
        }
        let before = self.last_rx;
        if let Err(end) = self.receive() {
            return Direct::Ended(end);
        }
        let now = Instant::now();
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        self.probe(now);
        match self.process(now, deliver) {
            Update::Input => Direct::Got { maybe_more: false },
            // Datagrams that delivered nothing (acknowledgements) still keep the link hot.
            Update::Quiet(_) if self.last_rx != before => Direct::Got { maybe_more: false },
            Update::Quiet(_) | Update::Sent { .. } => Direct::Empty,
            end => Direct::Ended(end),
        }
    }

    fn transmit_inner<C: Caller>(
        &mut self,
        io: &mut Driver,
        owner: Owner,
        conn: &mut Connection<C>,
        _policy: TxPolicy,
    ) -> Tx {
        self.owner = owner;
        let Some(quic) = self.conn else {
            return Tx::Nothing;
        };
        // Events may go in datagrams up to the path's limit now (§27.6); looked up only for a
        // connection that serves such subscriptions (a slab lookup per transmit otherwise).
        if conn.serves_datagrams() {
            conn.set_max_datagram(self.endpoint.max_datagram_size(quic).ok().flatten());
        }
        let batch = conn.poll_transmit();
        while let Some(d) = conn.take_datagram() {
            // A datagram QUIC refuses (too large after a path change, datagrams off) is an
            // event lost, as in the network: the subscriber sees the gap.
            let _ = self.endpoint.send_datagram(quic, d);
        }
        let mut streams = EndpointStreams {
            endpoint: &mut self.endpoint,
            conn: quic,
        };
        // The header instructions the batch's blocks need (encoding may happen in
        // `poll_transmit`), written before the batch so they tend to arrive first (§27.4).
        if conn.header_streams_want_write() {
            conn.take_header_streams(&mut self.header_out.0, &mut self.header_out.1);
            self.router
                .send_header_streams(&mut streams, &self.header_out.0, &self.header_out.1);
            if let Some(j) = &mut self.early {
                j.record(EarlyWrite::HeaderStreams(
                    self.header_out.0.clone(),
                    self.header_out.1.clone(),
                ));
            }
            self.header_out.0.clear();
            self.header_out.1.clear();
        }
        let Some((buf, frames)) = batch else {
            self.send_out();
            self.arm_timer(io);
            return Tx::Nothing;
        };
        let routed = self.router.send(&mut streams, &buf);
        if let Some(j) = &mut self.early {
            j.record(EarlyWrite::Batch(buf.clone()));
        }
        self.router.take_abandoned(|id| conn.on_exchange_reset(id));
        let n = buf.len();
        self.written = Some((buf, frames));
        if let Err(e) = routed {
            return Tx::Failed(io::Error::other(format!("{}: {}", e.counter, e.message)));
        }
        if self.router.has_made() {
            // Delivered from the timer's completion (a transmit has no way to the
            // connection's input): re-made there.
            self.made_waiting = true;
        }
        self.send_out();
        self.note_held(Instant::now());
        self.arm_timer(io);
        Tx::Started {
            direct: Some(n),
            complete: true,
        }
    }

    fn close_inner(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.read_done = true;
        self.pending = None;
        if let Some(conn) = self.conn {
            let (code, why) = &self.close_status;
            let _ = self.endpoint.close(Instant::now(), conn, *code, why);
            self.send_out();
        }
        // The poll completes (HUP), and its completion cancels the timer.
        let _ = rustix::net::shutdown(&*self.poll_fd, rustix::net::Shutdown::Both);
    }
}

impl Link for QuicLink {
    fn start_recv(&mut self, io: &mut Driver, owner: Owner) {
        let _ = self.guarded(|l| l.start_recv_inner(io, owner));
    }

    fn on_completion(
        &mut self,
        io: &mut Driver,
        event: Event,
        deliver: impl FnMut(Input<'_>),
    ) -> Update {
        if self.poisoned {
            // Only the operations in flight end (the socket was shut down: the poll
            // completes), so the link becomes quiescent and is freed.
            match event {
                Event::Polled { .. } => self.poll = None,
                Event::TimedOut { .. } => {
                    self.timer = None;
                    self.timer_at = None;
                }
                _ => {}
            }
            return Update::Quiet(None);
        }
        let r = self.guarded(|l| {
            #[cfg(test)]
            {
                use std::sync::atomic::Ordering::Relaxed;
                let port = l.socket.local_addr().map_or(0, |a| a.port());
                if port != 0
                    && PANIC_AT_PORT
                        .compare_exchange(port, 0, Relaxed, Relaxed)
                        .is_ok()
                {
                    panic!("injected: a panic inside quinn-proto");
                }
            }
            l.on_completion_inner(io, event, deliver)
        });
        if r.is_err()
            && let Some(op) = self.timer
        {
            io.cancel(op);
        }
        r.unwrap_or_else(|end| end)
    }

    fn read_direct(&mut self, scratch: &mut [u8], deliver: impl FnMut(Input<'_>)) -> Direct {
        if self.poisoned {
            return Direct::Empty;
        }
        self.guarded(|l| l.read_direct_inner(scratch, deliver))
            .unwrap_or_else(Direct::Ended)
    }

    fn transmit<C: Caller>(
        &mut self,
        io: &mut Driver,
        owner: Owner,
        conn: &mut Connection<C>,
        policy: TxPolicy,
    ) -> Tx {
        if self.poisoned {
            return Tx::Failed(io::Error::other(POISONED));
        }
        self.guarded(|l| l.transmit_inner(io, owner, conn, policy))
            .unwrap_or_else(|_| Tx::Failed(io::Error::other(POISONED)))
    }

    fn close(&mut self) {
        if self.poisoned {
            self.closed = true;
            let _ = rustix::net::shutdown(&*self.poll_fd, rustix::net::Shutdown::Both);
            return;
        }
        let _ = self.guarded(QuicLink::close_inner);
    }

    fn receiving(&self) -> bool {
        self.poll.is_some()
    }

    fn stop_recv(&mut self, io: &mut Driver) {
        // Hot: the core reads the socket itself from now on (`read_direct`); the cancelled
        // poll's completion re-arms nothing. QUIC's timer stays armed by the driver (a
        // transmit re-arms it), and `read_direct` also runs what is due on every turn.
        self.direct = true;
        if let Some(op) = self.poll {
            io.cancel(op);
        }
    }

    fn reads_directly(&self) -> bool {
        !self.closed
    }

    fn end_reading(&mut self, _shut: bool) {
        self.read_done = true;
    }

    fn read_done(&self) -> bool {
        self.read_done
    }

    fn writing(&self) -> bool {
        self.written.is_some() || self.router.pending_bytes() > MAX_PENDING
    }

    fn take_written(&mut self) -> Option<Vec<u8>> {
        self.written.as_mut().map(|(b, _)| std::mem::take(b))
    }

    fn end_write(&mut self) -> Option<(u32, super::Written)> {
        self.written
            .take()
            .map(|(_, frames)| (frames, super::Written::Copied))
    }

    fn quiescent(&self) -> bool {
        self.poll.is_none() && self.timer.is_none()
    }
}

impl Drop for QuicLink {
    /// Releases the link's charge on the core's buffer budget. A link dropped without
    /// `close` (a core at its connection limit refused it) tells the peer at once:
    /// CONNECTION_CLOSE with status ResourceExhausted, instead of letting it time out.
    fn drop(&mut self) {
        self.buffers.recharge(self.charged, 0);
        self.charged = 0;
        if self.closed {
            return;
        }
        while self.conn.is_none() {
            match self.endpoint.poll_event() {
                Some(QuicEvent::Accepted { conn } | QuicEvent::Connected { conn }) => {
                    self.conn = Some(conn);
                }
                Some(_) => {}
                None => break,
            }
        }
        if let Some(conn) = self.conn {
            let code = netron_codec::StatusCode::ResourceExhausted as u32;
            let why =
                b"refused: the core is at its connection limit (RuntimeConfig::max_connections)";
            let _ = self.endpoint.close(Instant::now(), conn, code, why);
            self.send_out();
        }
    }
}

/// How long a blocking QUIC handshake on a caller's thread waits for one datagram at most.
pub(crate) const HANDSHAKE_POLL: Duration = Duration::from_millis(20);
