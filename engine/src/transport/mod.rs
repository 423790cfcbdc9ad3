//! Transports: one link kind per transport, between the driver and the connection.
//!
//! A link owns what a connection's bytes travel on (a socket today; an shm segment's two
//! record rings and doorbells, or one QUIC stream of a shared UDP socket, later), starts the
//! driver operations that move them, turns their completions into [`Input`] for the sans-IO
//! connection, and takes the connection's batches out. The core's connection entry holds a
//! link and a connection and routes each completion by its token; it never touches a socket.
//!
//! ```text
//!   core turn ──> Link::on_completion(event) ──> deliver(Input) ──> Connection::handle_input
//!             ──> Link::read_direct(...)     ──> deliver(Input)      (busy-poll, hot links)
//!             ──> Link::transmit(conn, ...)  ──> Connection::poll_transmit ──> send / record
//! ```
//!
//! Input is either **bytes of a stream** (cut anywhere; the connection reassembles frames) or
//! **one record of whole frames** (shm: one batch per record, protocol.md §26). Output is
//! pulled by the link from the connection ([`Link::transmit`]), so the link decides where a
//! batch goes: a byte-stream link takes the connection's batch buffer and hands it to a send
//! operation; a record link reserves ring space and has the connection fill it (the codec
//! refuses a frame that does not fit *before* encoding any header, because header
//! compression cannot roll back, so a full record never corrupts the encoder state).
//!
//! Kinds: [`stream::StreamLink`] (TCP and Unix sockets, including the direct reads and writes
//! of hot connections on busy-poll cores). A record link over `netron_shm::channel` is the
//! next variant of [`AnyLink`]; QUIC links share one UDP socket per endpoint and are fed by
//! the endpoint's datagram demultiplexer instead of a receive of their own.

/// How long a listener's accept thread (`quic://`, `shm://`) sums the errors it counts before
/// handing them to a core in one command: a flood costs the cores a few commands a second,
/// not one per datagram or connect.
pub(crate) const COUNT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

pub(crate) mod inproc;
pub(crate) mod quic;
pub(crate) mod quic_listen;
pub(crate) mod quic_path;
pub(crate) mod record;
pub(crate) mod shm;
pub(crate) mod sock;
pub(crate) mod stream;
pub(crate) mod udp;

use std::io;

use crate::conn::{Caller, Connection};
use crate::driver::{Driver, Event};

/// What a link hands the connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Input<'a> {
    /// Bytes of a byte stream, cut anywhere.
    Bytes(&'a [u8]),
    /// One record holding whole frames (a record transport's batch), or one fragment of a
    /// frame longer than `limit`, the largest record the peer sends (protocol.md §26.3).
    Record { bytes: &'a [u8], limit: usize },
    /// The link found the peer's input malformed before it reached the connection (a QUIC
    /// link's frame router, docs/protocol.md §27.2): the connection fails as it does for its
    /// own decode errors, counting `counter` and queueing `Error(0, status)` with `message`.
    Failed {
        counter: &'static str,
        status: netron_codec::StatusCode,
        message: &'a str,
    },
    /// Bytes of one of the peer's header streams (QUIC, docs/protocol.md §27.4), their type
    /// byte taken off.
    HeaderStream {
        stream: netron_codec::qpack::HeaderStream,
        bytes: &'a [u8],
    },
    /// The peer reset the QUIC stream of exchange `id` with part of a frame lost (§27.4: its
    /// header block will never be decoded).
    ExchangeReset { id: u32 },
    /// One QUIC datagram (Event frames, §27.6).
    Datagram(&'a [u8]),
    /// Server role, QUIC: the frames delivered from now on arrived in 0-RTT (`true`, the
    /// handshake is in progress: replayable) or after it (`false`), docs/protocol.md §27.3.
    EarlyData(bool),
    /// Client role, QUIC: the handshake of a connection that wrote in 0-RTT completed, and
    /// the server `accepted` that data or not (then the link wrote it again).
    ZeroRtt { accepted: bool },
}

impl<'a> Input<'a> {
    /// The bytes, whatever their framing.
    #[cfg(test)]
    pub(crate) fn bytes(self) -> &'a [u8] {
        match self {
            Input::Bytes(b) | Input::Record { bytes: b, .. } => b,
            Input::HeaderStream { bytes, .. } | Input::Datagram(bytes) => bytes,
            Input::Failed { .. }
            | Input::ExchangeReset { .. }
            | Input::EarlyData(_)
            | Input::ZeroRtt { .. } => &[],
        }
    }
}

/// Hands `input` to `conn` the way its framing says (see [`Input`]). Same contract as
/// `Connection::handle_input`: on `Err` the connection is closing.
pub(crate) fn feed<C: Caller>(
    conn: &mut Connection<C>,
    input: Input<'_>,
    env: &mut crate::conn::Env<'_>,
) -> Result<(), crate::conn::ConnError> {
    match input {
        Input::Bytes(b) => conn.handle_input(b, env),
        Input::Record { bytes, limit } => conn.handle_record(bytes, limit, env),
        Input::Failed {
            counter,
            status,
            message,
        } => {
            let e = crate::conn::ConnError {
                counter,
                status,
                message: message.to_owned(),
            };
            // Counted once: a connection already closing looks at no more input.
            if !conn.is_closing() {
                conn.fail(e.clone(), env);
            }
            Err(e)
        }
        Input::HeaderStream { stream, bytes } => conn.on_header_stream(stream, bytes, env),
        Input::ExchangeReset { id } => {
            conn.on_exchange_reset(id);
            Ok(())
        }
        Input::Datagram(bytes) => conn.on_datagram(bytes, env),
        Input::EarlyData(early) => {
            conn.early_data = early;
            Ok(())
        }
        Input::ZeroRtt { accepted } => {
            if accepted {
                env.stats.zero_rtt_accepted += 1;
            } else {
                env.stats.zero_rtt_rejected += 1;
            }
            Ok(())
        }
    }
}

/// The owner of a link's operations: its connection slot and the slot's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub key: usize,
    pub generation: u32,
}

/// What one completion meant for the link's connection.
#[derive(Debug)]
pub(crate) enum Update {
    /// Input was delivered.
    Input,
    /// The peer ended its sending side (EOF).
    Eof,
    /// Nothing for the connection; `Some(counter)` if it is worth counting (a receive that
    /// found no buffer). Receiving may have stopped: see [`Link::receiving`].
    Quiet(Option<&'static str>),
    /// Receiving failed: close the connection.
    RecvFailed { counter: &'static str, why: String },
    /// The transport's connection ended without an error (a QUIC close by the peer with
    /// code 0, or our own): close the connection, counting nothing.
    Ended { why: String },
    /// The transport's TLS handshake failed (`why` says which side refused and why): close
    /// the connection, counting `quic_tls_failed`; a connect waiting for it fails with
    /// [`crate::ConnectError::Tls`].
    TlsFailed { why: String },
    /// A write progressed: `wrote` bytes (or failed), `blocked`: the peer took only part and
    /// the rest waits for it; `done`: the batch is out and its buffer back.
    Sent {
        wrote: Option<io::Result<usize>>,
        blocked: bool,
        done: Option<Vec<u8>>,
    },
}

/// How [`Link::transmit`] may write a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TxPolicy {
    /// Batches of at least this many bytes go out zero-copy.
    pub zero_copy_at: Option<usize>,
    /// Write directly (a non-blocking send) before involving the driver.
    pub direct: bool,
    /// The connection is hot on a busy-poll core: a record link whose ring is full retries
    /// soon and at a steady pace ([`record`]) instead of backing off to a millisecond.
    pub hot: bool,
}

/// What [`Link::transmit`] did.
#[derive(Debug)]
pub(crate) enum Tx {
    /// The connection had nothing to write.
    Nothing,
    /// A batch of `frames` frames went out (`direct` bytes of it without the driver, `Some`
    /// if a direct write was tried); `complete`: all of it, call [`Link::take_written`] after
    /// the flush; otherwise the rest is in the driver.
    Started {
        direct: Option<usize>,
        complete: bool,
    },
    /// A direct write failed at once (the batch buffer went back to the connection).
    Failed(io::Error),
}

pub(crate) use inproc::LEND_MIN;

/// How a written batch reached the transport (counted in [`crate::DriverStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// Copied: into the kernel (`send`, `write`) or into a ring's records.
    Copied,
    /// Sent with `SendZc`: the kernel took the pages, no copy.
    ZeroCopy,
    /// Encoded in place into ring space the link lent (`shm://`, `inproc://`): nothing to
    /// copy (docs/protocol.md §26.6).
    InPlace,
}

/// What a direct read returned.
#[derive(Debug)]
pub(crate) enum Direct {
    /// Input was delivered; `maybe_more`: the read filled the buffer.
    Got { maybe_more: bool },
    /// Nothing is waiting.
    Empty,
    /// The peer ended its sending side.
    Eof,
    /// The transport failed: close, counting `counter` (`recv_failed`, `shm_corrupt`).
    Failed(&'static str),
    /// The transport's connection ended with this update (`Eof`, `RecvFailed`, `Ended`,
    /// `TlsFailed`; a `quic://` link, whose ends carry QUIC's reasons): handled as the same
    /// update from a completion.
    Ended(Update),
}

/// One link kind per transport. Every method is cheap and allocation-free on the hot path.
///
/// Lifecycle: `start_recv` after creation (and after every `Update` that left it not
/// receiving, unless closing or `read_done`); completions tagged with the link's tokens go to
/// `on_completion`; `transmit` when the connection wants to write and the link is not
/// `writing`; `close` once; the entry may go when `quiescent` (no operation in the driver).
pub(crate) trait Link {
    /// Starts receiving (idempotent): a stream link arms a multishot receive, a record link
    /// its doorbell.
    fn start_recv(&mut self, io: &mut Driver, owner: Owner);
    /// Whether a receiving operation is in the driver.
    fn receiving(&self) -> bool;
    /// Stops receiving through the driver (to read directly); the final completion follows.
    fn stop_recv(&mut self, io: &mut Driver);
    /// Applies one of this link's completions; input goes to `deliver`.
    fn on_completion(
        &mut self,
        io: &mut Driver,
        event: Event,
        deliver: impl FnMut(Input<'_>),
    ) -> Update;
    /// Whether a busy-poll core may read this link directly ([`Link::read_direct`]); a QUIC
    /// link's datagrams must go through its endpoint, so it is never promoted.
    fn reads_directly(&self) -> bool {
        true
    }
    /// Reads what is waiting without the driver (busy-poll), into `scratch` if the link needs
    /// a buffer.
    fn read_direct(&mut self, scratch: &mut [u8], deliver: impl FnMut(Input<'_>)) -> Direct;
    /// Receives without the driver (busy-poll) straight onto the end of `buf`, a partial
    /// frame's reassembly buffer (`Connection::pending_frame`), at most its spare capacity:
    /// the number of bytes appended (0: the peer closed), or `None` when this link does not
    /// read byte streams (records are read in place anyway).
    fn recv_appending(&mut self, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
        let _ = buf;
        None
    }
    /// Nothing more is read: the peer ended (`shut == false`) or the connection is closing
    /// (`shut == true`: also tell the transport, so a pending receive ends).
    fn end_reading(&mut self, shut: bool);
    /// Whether nothing more is read.
    fn read_done(&self) -> bool;
    /// Whether a batch is being written.
    fn writing(&self) -> bool;
    /// Writes the connection's next batch, if it has one.
    fn transmit<C: Caller>(
        &mut self,
        io: &mut Driver,
        owner: Owner,
        conn: &mut Connection<C>,
        policy: TxPolicy,
    ) -> Tx;
    /// The batch a direct write took whole (its buffer, for [`Link::end_write`]).
    fn take_written(&mut self) -> Option<Vec<u8>>;
    /// Ends the current write after its buffer came back: its frame count and how the batch
    /// reached the transport.
    fn end_write(&mut self) -> Option<(u32, Written)>;
    /// Closing: make pending operations complete (a stream link shuts the socket down).
    fn close(&mut self);
    /// Whether no operation of the link is in the driver (its entry may go).
    fn quiescent(&self) -> bool {
        !self.receiving() && !self.writing()
    }
}

/// A connection made on a caller's thread, before a core takes it over.
#[derive(Debug)]
pub(crate) enum Connected {
    /// A connected TCP or Unix socket.
    Socket(std::os::fd::OwnedFd),
    /// An in-process connection's rings (boxed: several hundred bytes of ring handles).
    Record(Box<inproc::RecordPipe>),
    /// A QUIC connection's socket and endpoint (`quic://`).
    Quic(Box<quic::QuicPipe>),
}

impl Connected {
    /// The link a core runs this connection on; `limits` bound a QUIC link's reassembly
    /// (its `max_frame_size`), `stall` is `ProtocolConfig::stall_timeout` (a QUIC link
    /// applies it to output that QUIC flow control holds back and to partial frames), and
    /// `buffers` the core's buffer budget (a QUIC link charges its streams' partial frames),
    /// `udp` the core's UDP counters (a QUIC link's sends and receives).
    ///
    /// # Errors
    /// The OS error if the record link cannot duplicate its doorbell or the QUIC link its
    /// socket (`EMFILE`) or set its options.
    pub(crate) fn into_link(
        self,
        limits: &netron_codec::Limits,
        stall: std::time::Duration,
        buffers: &std::rc::Rc<crate::conn::BufferBudget>,
        udp: &std::rc::Rc<udp::UdpCounters>,
    ) -> io::Result<AnyLink> {
        Ok(match self {
            Connected::Socket(fd) => AnyLink::Stream(stream::StreamLink::new(fd)),
            Connected::Record(pipe) => AnyLink::Record(Box::new(record::RecordLink::new(*pipe)?)),
            Connected::Quic(pipe) => AnyLink::Quic(Box::new(quic::QuicLink::new(
                *pipe, limits, stall, buffers, udp,
            )?)),
        })
    }
}

/// Connects to `endpoint` on the calling thread (blocking for sockets and the QUIC
/// handshake; see [`sock::connect`], [`quic_listen::connect`]), within `timeout`; `quic` is
/// `ProtocolConfig::with_quic_client`'s setting.
///
/// # Errors
/// The socket's error, or `ConnectionRefused` if nothing listens on an `inproc://` or
/// `shm://` name; for `quic://`, `InvalidInput` naming the missing setting, or the TLS reason.
pub(crate) fn connect(
    endpoint: &crate::Endpoint,
    timeout: std::time::Duration,
    quic: Option<&netron_quic::ClientConfig>,
) -> io::Result<Connected> {
    match endpoint {
        crate::Endpoint::Quic { host, addrs } => {
            quic_listen::connect(addrs, host, quic, timeout).map(|p| Connected::Quic(Box::new(p)))
        }
        crate::Endpoint::Inproc(name) => {
            inproc::connect(name).map(|p| Connected::Record(Box::new(p)))
        }
        crate::Endpoint::Shm { name, options } => {
            if options.allow_uids.is_some() || options.mode.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "shm://{name}: allow_uid and mode apply to listening, not to connecting \
                         (a client sets trust_peer only)"
                    ),
                ));
            }
            shm::connect(name, options.trust_peer, timeout).map(|p| Connected::Record(Box::new(p)))
        }
        _ => sock::connect(endpoint, timeout).map(Connected::Socket),
    }
}

/// Releases what a completion for a link that is gone still holds (a receive buffer).
pub(crate) fn discard(io: &mut Driver, event: Event) {
    if let Event::Received { buf: Some(b), .. } = event {
        io.recycle(b);
    }
}

/// The links of a core, one variant per transport.
#[derive(Debug)]
pub(crate) enum AnyLink {
    /// TCP or Unix socket.
    Stream(stream::StreamLink),
    /// Two record rings with doorbells (`inproc://`, `shm://`). Boxed, so the entries of
    /// stream connections stay small.
    Record(Box<record::RecordLink>),
    /// One QUIC connection on its UDP socket (`quic://`). Boxed likewise.
    Quic(Box<quic::QuicLink>),
}

impl AnyLink {
    /// The peer process's credentials: `shm://` links only (see [`crate::shm::PeerCred`]).
    pub(crate) fn peer_cred(&self) -> Option<crate::shm::PeerCred> {
        match self {
            AnyLink::Stream(_) | AnyLink::Quic(_) => None,
            AnyLink::Record(l) => l.peer_cred(),
        }
    }

    /// Closes the link ([`Link::close`]); `status`: the connection error this side closes
    /// for, which a QUIC link carries in its CONNECTION_CLOSE (application error code = the
    /// status code, docs/protocol.md §27.1; other links sent it as the Error(0) frame only).
    ///
    /// `linger` bounds how long a QUIC link may wait for the peer to acknowledge what was
    /// written before its CONNECTION_CLOSE goes out ([`quic::QuicLink::begin_close`]; zero:
    /// at once). Other links close now: the kernel delivers a socket's written bytes, a
    /// record ring keeps them for the peer.
    pub(crate) fn close_with(
        &mut self,
        io: &mut Driver,
        status: Option<(netron_codec::StatusCode, &str)>,
        linger: std::time::Duration,
    ) {
        match self {
            AnyLink::Quic(l) => {
                if let Some((code, why)) = status {
                    l.set_close_status(code, why);
                }
                l.begin_close(io, linger);
            }
            _ => self.close(),
        }
    }

    /// After [`Link::end_reading`]: a QUIC link must still run QUIC (acknowledgements and
    /// flow-control credit for the output it has left), so it polls its socket again if it
    /// was read directly (hot); nothing for other links.
    pub(crate) fn keep_transport_going(&mut self, io: &mut Driver) {
        if let AnyLink::Quic(l) = self {
            l.keep_polling(io);
        }
    }

    /// A QUIC link waiting for the peer before its close waits until `until` at most (an
    /// engine shutdown's drain bound); nothing for other links.
    pub(crate) fn limit_linger(&mut self, io: &mut Driver, until: std::time::Instant) {
        if let AnyLink::Quic(l) = self {
            l.limit_linger(io, until);
        }
    }

    /// A QUIC link waiting for the peer before its close closes now (a core being dropped);
    /// nothing for other links.
    pub(crate) fn abort_linger(&mut self) {
        if let AnyLink::Quic(l) = self {
            l.abort_linger();
        }
    }

    /// The peer's verified certificate chain: `quic://` links only (see
    /// [`crate::PeerCertificates`]). A clone (a reference-count increment) or `None`.
    pub(crate) fn peer_certificates(&self) -> Option<crate::PeerCertificates> {
        match self {
            AnyLink::Stream(_) | AnyLink::Record(_) => None,
            AnyLink::Quic(l) => l.peer_identity().cloned(),
        }
    }
}

macro_rules! each {
    ($self:ident, $l:ident => $e:expr) => {
        match $self {
            AnyLink::Stream($l) => $e,
            AnyLink::Record($l) => $e,
            AnyLink::Quic($l) => $e,
        }
    };
}

impl Link for AnyLink {
    fn start_recv(&mut self, io: &mut Driver, owner: Owner) {
        each!(self, l => l.start_recv(io, owner))
    }
    fn receiving(&self) -> bool {
        each!(self, l => l.receiving())
    }
    fn stop_recv(&mut self, io: &mut Driver) {
        each!(self, l => l.stop_recv(io))
    }
    fn on_completion(
        &mut self,
        io: &mut Driver,
        event: Event,
        deliver: impl FnMut(Input<'_>),
    ) -> Update {
        each!(self, l => l.on_completion(io, event, deliver))
    }
    fn reads_directly(&self) -> bool {
        each!(self, l => l.reads_directly())
    }
    fn read_direct(&mut self, scratch: &mut [u8], deliver: impl FnMut(Input<'_>)) -> Direct {
        each!(self, l => l.read_direct(scratch, deliver))
    }
    fn recv_appending(&mut self, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
        each!(self, l => l.recv_appending(buf))
    }
    fn end_reading(&mut self, shut: bool) {
        each!(self, l => l.end_reading(shut))
    }
    fn read_done(&self) -> bool {
        each!(self, l => l.read_done())
    }
    fn writing(&self) -> bool {
        each!(self, l => l.writing())
    }
    fn transmit<C: Caller>(
        &mut self,
        io: &mut Driver,
        owner: Owner,
        conn: &mut Connection<C>,
        policy: TxPolicy,
    ) -> Tx {
        each!(self, l => l.transmit(io, owner, conn, policy))
    }
    fn take_written(&mut self) -> Option<Vec<u8>> {
        each!(self, l => l.take_written())
    }
    fn end_write(&mut self) -> Option<(u32, Written)> {
        each!(self, l => l.end_write())
    }
    fn close(&mut self) {
        each!(self, l => l.close())
    }
    fn quiescent(&self) -> bool {
        each!(self, l => l.quiescent())
    }
}
