//! The `quic://` transport of the suite: a test CA and the engines' TLS settings, and raw links
//! and raw listeners that speak QUIC (netron-quic's endpoint and frame router on a thread of
//! their own).
//!
//! **Sending.** A raw QUIC link carries the test's bytes as a TCP raw link carries them, as far
//! as QUIC lets a sender: each frame goes on the QUIC stream its header names
//! (docs/protocol.md §27.2: connection-level kinds on the control stream, an opening frame on a
//! new stream, later frames on the stream of their id; the router decides, so FINs, resets and
//! STOP_SENDING follow §27.2 rules 3 and 4 as the engine's own do), and its bytes go out as
//! they are sent, not once the frame is whole:
//!
//! - the client's preface goes on the control stream byte by byte as sent;
//! - a frame's bytes wait only until its 16-byte header is complete (the header names the
//!   stream: a QUIC sender cannot place a byte before); from then on every byte of the frame
//!   goes out on that stream as it is sent (a trickle reaches the engine byte by byte, a
//!   truncated frame stays truncated), and the FIN that ends its half follows its last byte;
//! - an opening frame with the peer's id parity (which the router does not open streams for)
//!   goes as it is on a new stream of its own;
//! - a header that names no stream (a length below 16 or above the default `max_frame_size`,
//!   an unknown kind) turns the link raw: that header and every later byte go as they are on
//!   the control stream, where the engine's decoder meets them as it would on TCP;
//! - an incomplete header when the test then waits for input (`recv`: half a frame, then
//!   silence) goes out as it is: on a new stream if its kind (5 bytes) opens an exchange,
//!   else on the control stream, turning the link raw.
//!
//! Sent bytes that QUIC flow control has not taken wait in the link; [`RawLink::try_send`]
//! refuses (`WouldBlock`) above [`SEND_BUFFER`] of them, as a full socket buffer does, so a
//! flood that the engine stops reading blocks.
//!
//! **Receiving.** What arrives on any stream is handed over whole frames at a time (the
//! router's reassembly; resets become Cancel / `Error(id, Unavailable)` frames). The link
//! reads its QUIC streams while fewer than [`RECV_BUFFER`] bytes (or what
//! [`RawLink::set_recv_buffer`] says) wait for the test, so a test that does not read holds
//! the engine back as a socket buffer would. A CONNECTION_CLOSE from the peer is the end
//! (`recv` returns 0 after what arrived).
//!
//! **Closing** ([`RawLink::close`], or the last handle dropped): what the test sent goes out
//! first, then CONNECTION_CLOSE with code 0 (a QUIC close drops stream data not yet sent).
//!
//! **Listening.** [`raw_listen`] binds a QUIC server (the test CA's certificate, ALPN
//! `netron/1`) on a thread of its own; each accepted connection is a raw link as above from
//! the server's side (the client's preface and frames arrive as on TCP).
//!
//! **Half-closing** ([`RawLink::shutdown_write`]): the control stream's FIN, which ends the
//! peer's input (§27.2: the engine answers what is in flight, then closes), sent once every
//! byte the test sent before is out and acknowledged by the peer's QUIC stack, so that it
//! cannot overtake a frame on another stream (a TCP FIN cannot overtake the bytes before it).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use netron_codec::handshake::PREFACE;
use netron_codec::{FrameHeader, FrameKind, HEADER_LEN};
use netron_engine::quic::router::{Router, StreamIo};
use netron_engine::quic::{
    CertificateDer, ClientConfig, CloseReason, ConnId, Identity, PrivateKeyDer, QuicEndpoint,
    QuicEvent, Read, ServerConfig, StreamId, Trust,
};
use netron_engine::{CoreConfig, EngineBuilder, ProtocolConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

use crate::transport::RawLink;

/// The suite's test CA and the configurations built from it (once per process).
struct Tls {
    server: ServerConfig,
    client: ClientConfig,
}

fn tls() -> &'static Tls {
    static TLS: OnceLock<Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        let ca_key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "netron-tests CA");
        let ca = params.self_signed(&ca_key).expect("CA");
        let key = KeyPair::generate().expect("key");
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &ca, &ca_key).expect("leaf");
        let identity = Identity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        };
        let ca_der: CertificateDer<'static> = ca.der().clone();
        Tls {
            server: ServerConfig::new(identity),
            client: ClientConfig::new(Trust::Ca(vec![ca_der])),
        }
    })
}

/// What every engine of the suite needs on `quic://`: the test CA's server certificate and
/// the client's trust in it.
pub fn configure(b: EngineBuilder) -> EngineBuilder {
    b.quic_server(tls().server.clone())
        .quic_client(tls().client.clone())
}

/// The same settings for a core built without an engine.
pub fn configure_core(c: CoreConfig) -> CoreConfig {
    let p: ProtocolConfig = c.protocol().clone();
    c.with_protocol(
        p.with_quic_server(tls().server.clone())
            .with_quic_client(tls().client.clone()),
    )
}

/// The raw link's QUIC receive window for the whole connection (and each stream): small, so
/// a raw peer that stops reading holds its sender back early (the engines' own are larger).
const RAW_WINDOW: u32 = 1 << 20;

/// Received bytes a raw QUIC link holds for the test before it stops reading its QUIC streams
/// (until [`RawLink::set_recv_buffer`] says otherwise): a socket receive buffer's part.
pub const RECV_BUFFER: usize = 2 << 20;

/// Sent bytes that QUIC flow control has not taken yet above which [`RawLink::try_send`]
/// refuses with `WouldBlock`: a socket send buffer's part.
pub const SEND_BUFFER: usize = 1 << 20;

/// How long the link's thread waits for a datagram before it looks at its commands and timers.
const TICK: Duration = Duration::from_millis(1);

/// Datagrams the link's thread takes in one turn at most before it looks at its commands.
const BURST: usize = 64;

#[derive(Default)]
struct Inbound {
    bytes: VecDeque<u8>,
    eof: bool,
    /// The test half-closed the link: no more sends.
    write_shut: bool,
    /// The application code of the peer's CONNECTION_CLOSE, once it closed.
    peer_close: Option<u64>,
    error: Option<String>,
}

struct Shared {
    inbound: Mutex<Inbound>,
    cv: Condvar,
    /// [`RawLink::set_recv_buffer`]: the link stops reading QUIC streams while this many
    /// bytes wait for the test, so QUIC flow control holds the peer back as a small socket
    /// buffer would (with the raw link's small windows, [`RAW_WINDOW`]).
    cap: AtomicUsize,
    /// Bytes sent by the test that the link's thread has not taken from its queue yet.
    in_flight: AtomicUsize,
    /// Bytes the link's thread holds that QUIC flow control has not taken.
    backlog: AtomicUsize,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            inbound: Mutex::new(Inbound::default()),
            cv: Condvar::new(),
            cap: AtomicUsize::new(RECV_BUFFER),
            in_flight: AtomicUsize::new(0),
            backlog: AtomicUsize::new(0),
        })
    }

    fn inbound(&self) -> std::sync::MutexGuard<'_, Inbound> {
        self.inbound.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the bytes waiting for the test reached [`Shared::cap`].
    fn full(&self) -> bool {
        self.inbound().bytes.len() >= self.cap.load(Relaxed)
    }

    /// Hands whole frames (or the preface) to the test.
    fn push(&self, frames: &[u8]) {
        let mut i = self.inbound();
        i.bytes.extend(frames);
        self.cv.notify_all();
    }

    /// The end of the link's input (after what arrived); `error` says why, for later sends.
    fn end(&self, error: Option<String>) {
        let mut i = self.inbound();
        i.eof = true;
        if i.error.is_none() {
            i.error = error;
        }
        self.cv.notify_all();
    }
}

enum Cmd {
    Send(Vec<u8>),
    /// The test waits for input: an incomplete frame header it sent goes out as it is.
    Flush,
    ShutdownWrite,
    Close,
}

/// A raw link over QUIC (see the module documentation).
pub struct QuicRawLink {
    tx: Mutex<Sender<Cmd>>,
    shared: Arc<Shared>,
}

/// The test's bytes not yet taken by QUIC, per stream.
#[derive(Default)]
struct StreamOut {
    /// Bytes flow control has not taken yet.
    queue: Vec<u8>,
    /// Bytes of a frame being sent in pieces that the test has not sent yet: they go on this
    /// stream when it does.
    owed: usize,
    /// The router finished the stream: FIN once `queue` is empty and nothing is owed.
    fin: bool,
}

/// One connection's sending side below the router: per-stream queues, and the frame being
/// sent in pieces.
#[derive(Default)]
struct Streams {
    /// The control stream (the client's first bidirectional stream).
    control: Option<StreamId>,
    out: HashMap<StreamId, StreamOut>,
    /// Streams we finished whose bytes the peer has not all acknowledged yet.
    unacked: HashSet<StreamId>,
}

impl Streams {
    fn backlog(&self) -> usize {
        self.out.values().map(|o| o.queue.len()).sum()
    }

    /// Appends the test's `bytes` to `s` (owed bytes of its frame when `owed`).
    fn append(&mut self, ep: &mut QuicEndpoint, conn: ConnId, s: StreamId, bytes: &[u8]) {
        let o = self.out.entry(s).or_default();
        o.queue.extend_from_slice(bytes);
        o.owed = o.owed.saturating_sub(bytes.len());
        self.flush(ep, conn, s);
    }

    /// Writes what waits for `s`; FIN when it is all out and the router finished `s`. False
    /// if the stream can no longer be written (stopped by the peer).
    fn flush(&mut self, ep: &mut QuicEndpoint, conn: ConnId, s: StreamId) -> bool {
        let Some(o) = self.out.get_mut(&s) else {
            return true;
        };
        while !o.queue.is_empty() {
            match ep.write(conn, s, &o.queue) {
                Ok(0) => break,
                Ok(n) => {
                    o.queue.drain(..n);
                }
                Err(_) => {
                    self.out.remove(&s);
                    return false;
                }
            }
        }
        if o.queue.is_empty() && o.owed == 0 {
            if o.fin && ep.finish(conn, s).is_ok() {
                self.unacked.insert(s);
            }
            if o.fin || Some(s) != self.control {
                self.out.remove(&s);
            }
        }
        true
    }
}

/// [`StreamIo`] for the router: writes are always taken whole (what QUIC does not take waits
/// in [`Streams`]), and the last `placeholder` bytes of the next write are not sent (the rest
/// of a frame the test has not sent yet).
struct RawIo<'a> {
    ep: &'a mut QuicEndpoint,
    conn: ConnId,
    streams: &'a mut Streams,
    placeholder: usize,
    /// The stream the last write went to.
    wrote: Option<StreamId>,
}

impl StreamIo for RawIo<'_> {
    type Stream = StreamId;
    fn open_bi(&mut self) -> Option<StreamId> {
        let s = self.ep.open_bi(self.conn).ok().flatten()?;
        self.streams.control.get_or_insert(s);
        Some(s)
    }
    fn open_uni(&mut self) -> Option<StreamId> {
        // The raw peer negotiates `header_table_size` 0 (docs/protocol.md §27.4 (a)): it
        // sends no header instructions.
        None
    }
    fn write(&mut self, s: StreamId, bytes: &[u8]) -> Option<usize> {
        let real = bytes.len() - self.placeholder.min(bytes.len());
        let o = self.streams.out.entry(s).or_default();
        o.queue.extend_from_slice(&bytes[..real]);
        o.owed += bytes.len() - real;
        self.placeholder = 0;
        self.wrote = Some(s);
        self.streams
            .flush(self.ep, self.conn, s)
            .then_some(bytes.len())
    }
    fn finish(&mut self, s: StreamId) {
        let o = self.streams.out.entry(s).or_default();
        o.fin = true;
        self.streams.flush(self.ep, self.conn, s);
    }
    fn stop(&mut self, s: StreamId, code: u64) {
        let _ = self.ep.stop(self.conn, s, code);
    }
    fn reset(&mut self, s: StreamId, code: u64) {
        self.streams.out.remove(&s);
        let _ = self.ep.reset(self.conn, s, code);
    }
}

fn raw_io<'a>(ep: &'a mut QuicEndpoint, conn: ConnId, streams: &'a mut Streams) -> RawIo<'a> {
    RawIo {
        ep,
        conn,
        streams,
        placeholder: 0,
        wrote: None,
    }
}

/// Where the bytes of the frame being sent in pieces go.
enum Piece {
    /// This stream (owed bytes of its frame).
    Stream(StreamId),
    /// Nowhere: the router dropped the frame (its exchange is gone).
    Dropped,
}

/// One QUIC connection of a raw link (client) or raw listener (server).
struct Conn {
    conn: ConnId,
    client: bool,
    router: Router<StreamId>,
    streams: Streams,
    /// The test's bytes not yet placed on a stream (an incomplete frame header).
    buf: Vec<u8>,
    /// The client's preface bytes not sent yet.
    preface_left: usize,
    /// The frame being sent in pieces and its bytes still to come.
    piece: Option<(Piece, usize)>,
    /// A header named no stream: every byte goes as it is on the control stream.
    raw: bool,
    /// The test half-closed: the control stream's FIN goes once all sent before is out.
    half_closed: bool,
    shared: Arc<Shared>,
    rx: Receiver<Cmd>,
    /// Readable streams left unread while the test's bytes are at the cap.
    unread: VecDeque<StreamId>,
    /// The link is handed to the test (client: at once; server: by `accept`).
    handed: bool,
    /// Closed (by either side): the driver forgets it.
    done: bool,
}

impl Conn {
    fn new(conn: ConnId, client: bool, shared: Arc<Shared>, rx: Receiver<Cmd>) -> Conn {
        Conn {
            conn,
            client,
            router: Router::new(client, &netron_codec::Limits::default()),
            streams: Streams::default(),
            buf: Vec::new(),
            preface_left: if client { PREFACE.len() } else { 0 },
            piece: None,
            raw: false,
            half_closed: false,
            shared,
            rx,
            unread: VecDeque::new(),
            handed: client,
            done: false,
        }
    }

    /// Places the test's bytes on their streams (see the module documentation).
    fn send(&mut self, ep: &mut QuicEndpoint, bytes: &[u8]) -> Result<(), String> {
        self.buf.extend_from_slice(bytes);
        let max = netron_codec::Limits::default().max_frame_size as usize;
        loop {
            if self.buf.is_empty() {
                return Ok(());
            }
            if self.preface_left > 0 {
                let n = self.preface_left.min(self.buf.len());
                let (mut io, router) = (raw_io(ep, self.conn, &mut self.streams), &mut self.router);
                let r = router.send(&mut io, &self.buf[..n]);
                r.map_err(|e| format!("{}: {}", e.counter, e.message))?;
                self.preface_left -= n;
                self.buf.drain(..n);
                continue;
            }
            if self.raw {
                let Some(c) = self.streams.control else {
                    return Err("no control stream for raw bytes".to_owned());
                };
                let bytes = std::mem::take(&mut self.buf);
                self.streams.append(ep, self.conn, c, &bytes);
                return Ok(());
            }
            if let Some((piece, left)) = &mut self.piece {
                let n = (*left).min(self.buf.len());
                if let Piece::Stream(s) = *piece {
                    let bytes: Vec<u8> = self.buf.drain(..n).collect();
                    self.streams.append(ep, self.conn, s, &bytes);
                } else {
                    self.buf.drain(..n);
                }
                *left -= n;
                if *left == 0 {
                    self.piece = None;
                }
                continue;
            }
            let Some(h) = FrameHeader::parse(&self.buf) else {
                return Ok(()); // the header names the stream: wait for all of it
            };
            let len = h.length() as usize;
            let routable = FrameKind::from_u8(h.kind_byte()).is_some()
                && (HEADER_LEN..=max).contains(&len)
                && (self.streams.control.is_some() || !self.client);
            if !routable {
                self.raw = true;
                if self.streams.control.is_none() {
                    let mut io = raw_io(ep, self.conn, &mut self.streams);
                    io.open_bi();
                }
                continue;
            }
            let have = self.buf.len().min(len);
            let owed = len - have;
            if self.opens_with_peer_parity(h) {
                // The header names a new stream, but the router opens streams for this side's
                // parity only: a new stream here, outside the router, the frame as it is (the
                // peer refuses it, §27.2 rule 2).
                let Some(s) = ep.open_bi(self.conn).ok().flatten() else {
                    return Err("no stream credit for an opening frame".to_owned());
                };
                let frame: Vec<u8> = self.buf.drain(..have).collect();
                self.streams.append(ep, self.conn, s, &frame);
                if owed > 0 {
                    self.piece = Some((Piece::Stream(s), owed));
                }
                continue;
            }
            let mut frame: Vec<u8> = self.buf.drain(..have).collect();
            frame.resize(len, 0);
            let held = self.router.pending_bytes();
            let (mut io, router) = (raw_io(ep, self.conn, &mut self.streams), &mut self.router);
            io.placeholder = owed;
            let r = router.send(&mut io, &frame);
            let wrote = io.wrote;
            r.map_err(|e| format!("{}: {}", e.counter, e.message))?;
            if owed > 0 && wrote.is_none() && self.router.pending_bytes() > held {
                // The router holds the frame, placeholder included, until the peer allows
                // another stream: its rest could not be filled in. Fail loudly.
                return Err(
                    "a raw QUIC link cannot send an opening frame in pieces while the peer's \
                     stream limit holds it back"
                        .to_owned(),
                );
            }
            let shared = self.shared.clone();
            self.router.take_made(|f| shared.push(f));
            if owed > 0 {
                let piece = match wrote {
                    Some(s) => Piece::Stream(s),
                    None => Piece::Dropped,
                };
                self.piece = Some((piece, owed));
            }
        }
    }

    /// The test sent an incomplete frame header and now waits for input (half a frame, then
    /// silence: slowloris): the bytes go out as they are, since nothing more will come to
    /// name their stream. A header whose kind is known (5 bytes or more) and opens an
    /// exchange goes on a new stream of its own, outside the router, as a frame with the
    /// peer's parity does (the router never learns its id, so later frames of that exchange
    /// are dropped); anything else turns the link raw (the control stream, as the module
    /// documentation says of headers that name no stream).
    fn flush_partial(&mut self, ep: &mut QuicEndpoint) -> Result<(), String> {
        if self.buf.is_empty() || self.raw || self.piece.is_some() || self.preface_left > 0 {
            return Ok(());
        }
        let opening = self.buf.len() > 4
            && [
                FrameKind::Request,
                FrameKind::StreamOpen,
                FrameKind::Subscribe,
            ]
            .iter()
            .any(|k| *k as u8 == self.buf[4]);
        let len = self
            .buf
            .get(..4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let max = netron_codec::Limits::default().max_frame_size as usize;
        if opening && (HEADER_LEN..=max).contains(&len) {
            let Some(s) = ep.open_bi(self.conn).ok().flatten() else {
                return Err("no stream credit for an incomplete opening frame".to_owned());
            };
            let have = std::mem::take(&mut self.buf);
            self.streams.append(ep, self.conn, s, &have);
            self.piece = Some((Piece::Stream(s), len - have.len()));
            return Ok(());
        }
        self.raw = true;
        if self.streams.control.is_none() {
            let mut io = raw_io(ep, self.conn, &mut self.streams);
            io.open_bi();
        }
        self.send(ep, &[])
    }

    /// Whether `h` is an opening frame (Request, StreamOpen, Subscribe) with the peer's id
    /// parity, which this side may not open.
    fn opens_with_peer_parity(&self, h: &FrameHeader) -> bool {
        let opening = [
            FrameKind::Request,
            FrameKind::StreamOpen,
            FrameKind::Subscribe,
        ]
        .iter()
        .any(|k| *k as u8 == h.kind_byte());
        opening && h.id() != 0 && (h.id() % 2 == 1) != self.client
    }

    /// Reads `stream` into the test's bytes (or leaves it for later while they are full);
    /// false once the link failed.
    fn read_stream(&mut self, ep: &mut QuicEndpoint, stream: StreamId) -> bool {
        if self.shared.full() {
            if !self.unread.contains(&stream) {
                self.unread.push_back(stream);
            }
            return true;
        }
        let shared = self.shared.clone();
        let mut scratch = Vec::new();
        loop {
            scratch.clear();
            match ep.read(self.conn, stream, &mut scratch, 1 << 16) {
                Ok(Read::Bytes { fin, .. }) => {
                    let r = self
                        .router
                        .on_bytes(stream, &scratch, fin, |f| shared.push(f));
                    if let Err(e) = r {
                        self.fail(ep, format!("{}: {}", e.counter, e.message));
                        return false;
                    }
                    if fin {
                        return true;
                    }
                }
                Ok(Read::Reset { code }) => {
                    self.router.on_reset(stream, code, |f| shared.push(f));
                    return true;
                }
                Ok(Read::Blocked) | Err(_) => return true,
            }
        }
    }

    /// Applies one endpoint event for this connection.
    fn event(&mut self, ep: &mut QuicEndpoint, ev: QuicEvent) {
        let shared = self.shared.clone();
        match ev {
            QuicEvent::StreamOpened { stream, .. } | QuicEvent::Readable { stream, .. }
                if netron_engine::quic::router::is_unidirectional(stream) =>
            {
                // The engine's header streams (docs/protocol.md §27.4): a raw peer speaks no
                // QPACK (it negotiates header_table_size 0 where it can), so their bytes are
                // read and dropped.
                let mut scratch = Vec::new();
                while let Ok(Read::Bytes { fin: false, .. }) =
                    ep.read(self.conn, stream, &mut scratch, 1 << 16)
                {
                    scratch.clear();
                }
            }
            QuicEvent::StreamOpened { stream, .. } | QuicEvent::Readable { stream, .. } => {
                if !self.client {
                    self.streams.control.get_or_insert(stream);
                }
                if !self.read_stream(ep, stream) {
                    self.done = true;
                }
            }
            QuicEvent::Writable { stream, .. } => {
                self.streams.flush(ep, self.conn, stream);
                let (mut io, router) = (raw_io(ep, self.conn, &mut self.streams), &mut self.router);
                router.on_writable(&mut io, stream);
            }
            QuicEvent::Finished { stream, .. } => {
                self.streams.unacked.remove(&stream);
            }
            QuicEvent::Stopped { stream, code, .. } => {
                // Nothing queued for a stopped stream will go out: it no longer counts as
                // unsent (`try_send`'s backlog). The router resets only a stream whose half it
                // has not ended, and it ends a half as soon as [`RawIo`] queued its last
                // bytes, so bytes still queued here were left counted for ever: a flood whose
                // requests the server stopped saw `try_send` refuse for good (WouldBlock with
                // the server idle) and was never cut off (the flood tests over quic://, one
                // run in three).
                self.streams.out.remove(&stream);
                self.streams.unacked.remove(&stream);
                let (mut io, router) = (raw_io(ep, self.conn, &mut self.streams), &mut self.router);
                router.on_stopped(&mut io, stream, code, |f| shared.push(f));
            }
            QuicEvent::StreamsAvailable { .. } => {
                let (mut io, router) = (raw_io(ep, self.conn, &mut self.streams), &mut self.router);
                router.on_streams_available(&mut io);
            }
            QuicEvent::Closed { reason, .. } => {
                if let CloseReason::Application { code, .. } = &reason {
                    shared.inbound().peer_close = Some(*code);
                }
                shared.end(Some(format!("the QUIC connection closed: {reason}")));
                self.done = true;
            }
            _ => {}
        }
    }

    /// After the events of a turn: streams left unread while the test's bytes were full, the
    /// end of the peer's control stream, the backlog for `try_send`.
    fn after_events(&mut self, ep: &mut QuicEndpoint) {
        while !self.done && !self.unread.is_empty() && !self.shared.full() {
            let Some(s) = self.unread.pop_front() else {
                break;
            };
            if !self.read_stream(ep, s) {
                self.done = true;
            }
        }
        if self.router.control_closed() {
            self.shared.end(None);
        }
        self.half_close(ep);
        self.publish_backlog();
    }

    /// Tells `try_send` what is held here unsent: the streams' queues, an incomplete header,
    /// and the router's own held bytes (exchanges waiting for stream credit; the link's writes
    /// are always taken whole otherwise).
    fn publish_backlog(&self) {
        let held = self.streams.backlog() + self.buf.len() + self.router.pending_bytes();
        self.shared.backlog.store(held, Relaxed);
    }

    /// Takes the test's commands; false once it closed the link (or dropped every handle).
    fn commands(&mut self, ep: &mut QuicEndpoint) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(Cmd::Send(b)) => {
                    if let Err(why) = self.send(ep, &b) {
                        self.fail(ep, why);
                    }
                    self.publish_backlog();
                    self.shared.in_flight.fetch_sub(b.len(), Relaxed);
                }
                Ok(Cmd::Flush) => {
                    if let Err(why) = self.flush_partial(ep) {
                        self.fail(ep, why);
                    }
                }
                Ok(Cmd::ShutdownWrite) => {
                    self.half_closed = true;
                    self.half_close(ep);
                }
                Ok(Cmd::Close) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    /// The half-close: the control stream's FIN (the end of this side's input for the peer,
    /// §27.2), once everything the test sent before is out and acknowledged by the peer's
    /// QUIC stack, so that it cannot overtake a frame on another stream as a TCP FIN cannot.
    fn half_close(&mut self, ep: &mut QuicEndpoint) {
        let out = self.buf.is_empty()
            && self.piece.is_none()
            && self.streams.unacked.is_empty()
            && self
                .streams
                .out
                .values()
                .all(|o| o.queue.is_empty() && o.owed == 0);
        if !self.half_closed || !out {
            return;
        }
        self.half_closed = false;
        if let Some(c) = self.streams.control {
            let _ = ep.finish(self.conn, c);
        }
    }

    /// Closes the connection (code 0), as the test asked.
    fn close(&mut self, ep: &mut QuicEndpoint) {
        let _ = ep.close(Instant::now(), self.conn, 0, b"raw link closed");
        self.shared.end(None);
        self.done = true;
    }

    fn fail(&mut self, ep: &mut QuicEndpoint, why: String) {
        let _ = ep.close(Instant::now(), self.conn, 13, why.as_bytes());
        self.shared.end(Some(why));
        self.done = true;
    }
}

/// The thread of a raw link or raw listener: one UDP socket, one endpoint, its connections.
struct Driver {
    socket: UdpSocket,
    ep: QuicEndpoint,
    conns: HashMap<ConnId, Conn>,
    /// The client's handshake result, once.
    ready: Option<Sender<Result<(), String>>>,
    /// The server's accepted links, and whether the listener is still there.
    accepted: Option<(Sender<QuicRawLink>, Arc<AtomicBool>)>,
    /// Server: the links of connections whose handshake has not completed yet.
    pending_links: HashMap<ConnId, QuicRawLink>,
}

impl Driver {
    fn run(&mut self) {
        let mut buf = vec![0u8; 65_535];
        let mut tx = Vec::new();
        loop {
            let mut closing = Vec::new();
            for c in self.conns.values_mut() {
                if !c.done && !c.commands(&mut self.ep) {
                    closing.push(c.conn);
                }
            }
            // What the test wrote before it closed goes out before the CONNECTION_CLOSE (a
            // QUIC close drops stream data not sent yet).
            self.flush(&mut tx);
            if !closing.is_empty() {
                for id in closing {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.close(&mut self.ep);
                    }
                }
                self.flush(&mut tx);
            }
            self.receive(&mut buf);
            if self.ep.poll_timeout().is_some_and(|t| t <= Instant::now()) {
                self.ep.handle_timeout(Instant::now());
            }
            self.events();
            self.flush(&mut tx);
            self.conns.retain(|_, c| !c.done);
            let listening = self
                .accepted
                .as_ref()
                .is_some_and(|(_, gone)| !gone.load(Relaxed));
            if self.conns.is_empty() && !listening && self.ready.is_none() {
                return;
            }
            if !listening {
                // The listener is gone: connections not handed to a test close.
                for c in self.conns.values_mut().filter(|c| !c.handed) {
                    let _ = self.ep.close(Instant::now(), c.conn, 0, b"listener closed");
                    c.done = true;
                }
            }
        }
    }

    /// Feeds the endpoint what arrived (at most [`BURST`] datagrams), waiting at most
    /// [`TICK`] (or until QUIC's timer) for the first.
    fn receive(&mut self, buf: &mut [u8]) {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        for got in 0..BURST {
            match self.socket.recv_from(buf) {
                Ok((n, from)) => {
                    self.ep
                        .handle_datagram(Instant::now(), from, None, buf[..n].into());
                }
                // Nothing more now (or an ICMP error): wait for the next one if none came.
                Err(_) if got == 0 => {
                    let wait = self
                        .ep
                        .poll_timeout()
                        .map_or(TICK, |t| t.saturating_duration_since(Instant::now()))
                        .min(TICK);
                    let ts = Timespec {
                        tv_sec: 0,
                        tv_nsec: i64::from(wait.subsec_nanos()),
                    };
                    let mut fds = [PollFd::new(&self.socket, PollFlags::IN)];
                    let _ = poll(&mut fds, Some(&ts));
                    if fds[0].revents().is_empty() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    fn flush(&mut self, tx: &mut Vec<u8>) {
        while let Some(t) = self.ep.poll_transmit(Instant::now(), tx) {
            let _ = self.socket.send_to(&tx[..t.len], t.destination);
        }
    }

    fn events(&mut self) {
        while let Some(ev) = self.ep.poll_event() {
            let id = ev.conn();
            match ev {
                QuicEvent::Accepted { conn } => {
                    let (tx, rx) = mpsc::channel();
                    let shared = Shared::new();
                    let link = QuicRawLink {
                        tx: Mutex::new(tx),
                        shared: shared.clone(),
                    };
                    let mut c = Conn::new(conn, false, shared, rx);
                    c.handed = false;
                    self.conns.insert(conn, c);
                    self.pending_links.insert(conn, link);
                }
                QuicEvent::Connected { conn } => {
                    if let Some(r) = self.ready.take() {
                        let _ = r.send(Ok(()));
                    }
                    if let (Some(link), Some((to, _))) =
                        (self.pending_links.remove(&conn), &self.accepted)
                    {
                        if to.send(link).is_ok() {
                            if let Some(c) = self.conns.get_mut(&conn) {
                                c.handed = true;
                            }
                        }
                    }
                }
                QuicEvent::Closed { ref reason, .. } => {
                    if let Some(r) = self.ready.take() {
                        // An application close during the handshake is the Netron server
                        // answering and closing at once (a refusal at its connection limit):
                        // as a TCP server that accepts and closes, the connect succeeds and
                        // the link's input ends (with the close code). Anything else (a TLS
                        // alert, a timeout) is a failed connect.
                        let answered = matches!(
                            reason,
                            CloseReason::Application { .. } | CloseReason::HandshakeRefused
                        );
                        let _ = r.send(if answered {
                            Ok(())
                        } else {
                            Err(reason.to_string())
                        });
                    }
                    self.pending_links.remove(&id);
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.event(&mut self.ep, ev);
                    }
                }
                ev => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        if !c.done {
                            c.event(&mut self.ep, ev);
                        }
                    }
                }
            }
        }
        for c in self.conns.values_mut() {
            if !c.done {
                c.after_events(&mut self.ep);
            }
        }
    }
}

/// Connects a raw link to `endpoint` (`quic://ip:port`), the QUIC handshake included.
///
/// # Errors
/// The socket's error, or the QUIC close reason.
pub fn connect(endpoint: &str) -> io::Result<Box<dyn RawLink>> {
    connect_link(endpoint).map(|l| Box::new(l) as Box<dyn RawLink>)
}

/// [`connect`], as the link itself (for [`QuicRawLink::peer_close_code`]).
///
/// # Errors
/// As [`connect`].
pub fn connect_link(endpoint: &str) -> io::Result<QuicRawLink> {
    let addr: SocketAddr = endpoint
        .trim_start_matches("quic://")
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{endpoint}: {e}")))?;
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_nonblocking(true)?;
    let mut config = tls().client.clone();
    config.settings.receive_window = RAW_WINDOW;
    config.settings.stream_receive_window = RAW_WINDOW;
    let mut ep =
        QuicEndpoint::new(None, Some(&config)).map_err(|e| io::Error::other(e.to_string()))?;
    let conn = ep
        .connect(Instant::now(), addr, "127.0.0.1")
        .map_err(|e| io::Error::other(e.to_string()))?;
    let shared = Shared::new();
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut conns = HashMap::new();
    conns.insert(conn, Conn::new(conn, true, shared.clone(), rx));
    let mut d = Driver {
        socket,
        ep,
        conns,
        ready: Some(ready_tx),
        accepted: None,
        pending_links: HashMap::new(),
    };
    std::thread::Builder::new()
        .name("quic-raw-link".to_owned())
        .spawn(move || d.run())?;
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(QuicRawLink {
            tx: Mutex::new(tx),
            shared,
        }),
        Ok(Err(why)) => Err(io::Error::new(io::ErrorKind::ConnectionRefused, why)),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no QUIC handshake in 10 s",
        )),
    }
}

/// A raw QUIC listener (a fake server): the suite's test CA's certificate, ALPN `netron/1`;
/// each connection whose QUIC handshake completed is a [`QuicRawLink`] from the server's side.
pub struct QuicRawListener {
    links: Receiver<QuicRawLink>,
    /// Set when the listener is dropped: its thread closes connections not accepted, and ends
    /// with the last connection.
    gone: Arc<AtomicBool>,
}

/// Binds a raw QUIC listener on a free loopback port; returns the endpoint clients dial.
///
/// # Errors
/// The socket's error, or the TLS configuration's.
pub fn raw_listen(_tag: &str) -> io::Result<crate::transport::BoundListener> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_nonblocking(true)?;
    let addr = socket.local_addr()?;
    let mut config = tls().server.clone();
    config.settings.receive_window = RAW_WINDOW;
    config.settings.stream_receive_window = RAW_WINDOW;
    let ep = QuicEndpoint::new(Some(&config), None).map_err(|e| io::Error::other(e.to_string()))?;
    let (tx, links) = mpsc::channel();
    let gone = Arc::new(AtomicBool::new(false));
    let mut d = Driver {
        socket,
        ep,
        conns: HashMap::new(),
        ready: None,
        accepted: Some((tx, gone.clone())),
        pending_links: HashMap::new(),
    };
    std::thread::Builder::new()
        .name("quic-raw-listener".to_owned())
        .spawn(move || d.run())?;
    Ok((
        format!("quic://{addr}"),
        Box::new(QuicRawListener { links, gone }),
    ))
}

impl crate::transport::RawListener for QuicRawListener {
    fn accept(&mut self) -> io::Result<Box<dyn RawLink>> {
        self.links
            .recv()
            .map(|l| Box::new(l) as Box<dyn RawLink>)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the listener's thread ended"))
    }
}

impl Drop for QuicRawListener {
    fn drop(&mut self) {
        self.gone.store(true, Relaxed);
    }
}

impl QuicRawLink {
    /// The application error code of the peer's CONNECTION_CLOSE (§27.1: a connection
    /// error's status, 0 for a clean close), once the peer closed with one.
    pub fn peer_close_code(&self) -> Option<u64> {
        self.shared.inbound().peer_close
    }

    fn cmd(&self, c: Cmd) -> io::Result<()> {
        let closed = {
            let i = self.shared.inbound();
            if i.write_shut && !matches!(c, Cmd::Close) {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the QUIC link was half-closed",
                ));
            }
            i.eof.then(|| i.error.clone())
        };
        if let Some(why) = closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                why.unwrap_or_else(|| "the QUIC connection is closed".to_owned()),
            ));
        }
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(c)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the QUIC link is gone"))
    }
}

impl RawLink for QuicRawLink {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.shared.in_flight.fetch_add(bytes.len(), Relaxed);
        let r = self.cmd(Cmd::Send(bytes.to_vec()));
        if r.is_err() {
            self.shared.in_flight.fetch_sub(bytes.len(), Relaxed);
        }
        r
    }

    fn try_send(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let held = self.shared.in_flight.load(Relaxed) + self.shared.backlog.load(Relaxed);
        if held >= SEND_BUFFER {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "QUIC flow control holds the link's send buffer",
            ));
        }
        self.send(bytes).map(|()| bytes.len())
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        // After the bytes sent before (one channel, in order): an incomplete header goes out.
        let _ = self.cmd(Cmd::Flush);
        let until = timeout.map(|t| Instant::now() + t);
        let mut i = self.shared.inbound();
        loop {
            if !i.bytes.is_empty() {
                let n = buf.len().min(i.bytes.len());
                for (dst, src) in buf.iter_mut().zip(i.bytes.drain(..n)) {
                    *dst = src;
                }
                return Ok(n);
            }
            if i.eof {
                return Ok(0);
            }
            let wait = match until {
                Some(u) => {
                    let left = u.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "nothing arrived"));
                    }
                    left
                }
                None => Duration::from_secs(3600),
            };
            i = self
                .shared
                .cv
                .wait_timeout(i, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.cmd(Cmd::ShutdownWrite)?;
        self.shared.inbound().write_shut = true;
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        let _ = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Cmd::Close);
        Ok(())
    }

    fn try_clone(&self) -> io::Result<Box<dyn RawLink>> {
        Ok(Box::new(QuicRawLink {
            tx: Mutex::new(self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone()),
            shared: self.shared.clone(),
        }))
    }

    fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        self.shared.cap.store(bytes, Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use netron_codec::control::ControlEncoder;
    use netron_codec::handshake::{ClientHandshake, ClientProgress};
    use netron_codec::{BatchEncoder, Limits, StatusCode};

    use crate::transport::{QUIC, RawLink};

    #[test]
    fn a_connection_drained_after_go_away_closes_with_code_0() {
        // docs/protocol.md §27.1: CONNECTION_CLOSE carries a status code for a connection
        // error. A connection that drained after GoAway both ways ends cleanly (on TCP no
        // Error(0) is sent), so its close carries 0; it carried Unavailable, which the peer
        // counts as `peer_error`.
        let (e, addr) = crate::engine(
            &QUIC,
            netron_engine::CoreConfig::default(),
            &[crate::calc()],
            "drain-code",
        );
        let mut link = super::connect_link(&addr).expect("connect");
        let mut hs = ClientHandshake::new(Default::default());
        let mut out = Vec::new();
        hs.start(&mut out).expect("hello");
        link.send(&out).expect("hello sent");
        let (mut got, mut chunk) = (Vec::new(), [0u8; 4096]);
        loop {
            let n = link
                .recv(&mut chunk, Some(Duration::from_secs(10)))
                .expect("welcome");
            assert!(n > 0, "closed during the handshake");
            got.extend_from_slice(&chunk[..n]);
            if let ClientProgress::Done { .. } = hs.handle(&got).expect("a welcome") {
                break;
            }
        }
        let mut b = BatchEncoder::new(Limits::default());
        ControlEncoder::new()
            .go_away(&mut b, 0, StatusCode::Unavailable, "leaving")
            .expect("go away");
        link.send(b.as_slice()).expect("go away sent");
        link.read_to_close(Some(Duration::from_secs(10)))
            .expect("the server closes once drained");
        // The control stream's FIN ends the input; the CONNECTION_CLOSE follows once this
        // side acknowledged it (the engine's close linger, docs/quic.md "In the engine").
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while link.peer_close_code().is_none() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(link.peer_close_code(), Some(0));
        e.shutdown(Duration::from_secs(1));
    }
}
