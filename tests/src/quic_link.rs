//! The `quic://` transport of the suite: a test CA and the engines' TLS settings, and a raw
//! link that speaks QUIC (netron-quic's endpoint and frame router on a thread of its own).
//!
//! A raw QUIC link is a byte stream of frames like a TCP one: what is sent is cut at frame
//! boundaries and each frame goes to its QUIC stream (the router, docs/quic.md "In the
//! engine"); what arrives on any stream is handed over whole frames at a time. Bytes that are
//! not whole frames cannot be routed: a partial frame waits for its rest, and a frame whose
//! header is unroutable (a length below 16, an unknown kind) fails the send and closes the
//! link. So the suite's tests that send malformed bytes on purpose do not run over QUIC.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use netron_engine::quic::router::{EndpointStreams, Router};
use netron_engine::quic::{
    CertificateDer, ClientConfig, ConnId, Identity, PrivateKeyDer, QuicEndpoint, QuicEvent, Read,
    ServerConfig, StreamId, Trust,
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

#[derive(Default)]
struct Inbound {
    bytes: VecDeque<u8>,
    eof: bool,
    error: Option<String>,
}

struct Shared {
    inbound: Mutex<Inbound>,
    cv: Condvar,
    /// [`RawLink::set_recv_buffer`]: the link stops reading QUIC streams while this many
    /// bytes wait for the test, so QUIC flow control holds the peer back as a small socket
    /// buffer would (with the raw link's small windows, [`RAW_WINDOW`]).
    cap: std::sync::atomic::AtomicUsize,
}

/// The raw link's QUIC receive window for the whole connection (and each stream): small, so
/// a raw peer that stops reading holds its sender back early (the engines' own are larger).
const RAW_WINDOW: u32 = 1 << 20;

enum Cmd {
    Send(Vec<u8>),
    Close,
}

/// A raw link over QUIC (see the module documentation).
pub struct QuicRawLink {
    tx: Mutex<Sender<Cmd>>,
    shared: Arc<Shared>,
}

/// Connects a raw link to `endpoint` (`quic://ip:port`), the QUIC handshake included.
///
/// # Errors
/// The socket's error, or the QUIC close reason.
pub fn connect(endpoint: &str) -> io::Result<Box<dyn RawLink>> {
    let addr: SocketAddr = endpoint
        .trim_start_matches("quic://")
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{endpoint}: {e}")))?;
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(1)))?;
    let mut config = tls().client.clone();
    config.settings.receive_window = RAW_WINDOW;
    config.settings.stream_receive_window = RAW_WINDOW;
    let mut ep =
        QuicEndpoint::new(None, Some(&config)).map_err(|e| io::Error::other(e.to_string()))?;
    let conn = ep
        .connect(Instant::now(), addr, "127.0.0.1")
        .map_err(|e| io::Error::other(e.to_string()))?;
    let shared = Arc::new(Shared {
        inbound: Mutex::new(Inbound::default()),
        cv: Condvar::new(),
        cap: std::sync::atomic::AtomicUsize::new(usize::MAX),
    });
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let sh = shared.clone();
    std::thread::Builder::new()
        .name("quic-raw-link".to_owned())
        .spawn(move || {
            let mut d = Driver {
                socket,
                ep,
                conn,
                router: Router::new(true, &netron_codec::Limits::default()),
                out: Vec::new(),
                preface_left: netron_codec::handshake::PREFACE.len(),
                shared: sh,
                ready: Some(ready_tx),
                unread: VecDeque::new(),
            };
            d.run(&rx);
        })?;
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(Box::new(QuicRawLink {
            tx: Mutex::new(tx),
            shared,
        })),
        Ok(Err(why)) => Err(io::Error::new(io::ErrorKind::ConnectionRefused, why)),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no QUIC handshake in 10 s",
        )),
    }
}

struct Driver {
    socket: UdpSocket,
    ep: QuicEndpoint,
    conn: ConnId,
    router: Router<StreamId>,
    /// Bytes sent by the test that are not a whole frame yet.
    out: Vec<u8>,
    preface_left: usize,
    shared: Arc<Shared>,
    ready: Option<Sender<Result<(), String>>>,
    /// Readable streams left unread while the test's bytes are at the cap.
    unread: VecDeque<StreamId>,
}

impl Driver {
    /// Whether the bytes waiting for the test reached [`Shared::cap`].
    fn full(&self) -> bool {
        let cap = self.shared.cap.load(std::sync::atomic::Ordering::Relaxed);
        self.shared
            .inbound
            .lock()
            .expect("not poisoned")
            .bytes
            .len()
            >= cap
    }

    /// Reads `stream` into the test's bytes (or leaves it for later while they are full);
    /// false once the link failed.
    fn read_stream(&mut self, stream: StreamId, scratch: &mut Vec<u8>) -> bool {
        if self.full() {
            if !self.unread.contains(&stream) {
                self.unread.push_back(stream);
            }
            return true;
        }
        let shared = self.shared.clone();
        loop {
            scratch.clear();
            match self.ep.read(self.conn, stream, scratch, 1 << 16) {
                Ok(Read::Bytes { fin, .. }) => {
                    let r = self
                        .router
                        .on_bytes(stream, scratch, fin, |f| push(&shared, f));
                    if let Err(e) = r {
                        self.fail(format!("{}: {}", e.counter, e.message));
                        return false;
                    }
                    if fin {
                        return true;
                    }
                }
                Ok(Read::Reset { code }) => {
                    self.router.on_reset(stream, code, |f| push(&shared, f));
                    return true;
                }
                Ok(Read::Blocked) | Err(_) => return true,
            }
        }
    }

    fn run(&mut self, rx: &Receiver<Cmd>) {
        let mut buf = vec![0u8; 65_535];
        let mut tx = Vec::new();
        loop {
            loop {
                match rx.try_recv() {
                    Ok(Cmd::Send(b)) => {
                        if let Err(why) = self.route(&b) {
                            self.fail(why);
                        }
                    }
                    Ok(Cmd::Close) | Err(TryRecvError::Disconnected) => {
                        let _ = self
                            .ep
                            .close(Instant::now(), self.conn, 0, b"raw link closed");
                        self.flush(&mut tx);
                        self.end(None);
                        return;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            self.flush(&mut tx);
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let from = self.socket.peer_addr().expect("connected");
                    self.ep
                        .handle_datagram(Instant::now(), from, None, buf[..n].into());
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(_) => {}
            }
            if self.ep.poll_timeout().is_some_and(|t| t <= Instant::now()) {
                self.ep.handle_timeout(Instant::now());
            }
            if !self.events() {
                self.flush(&mut tx);
                return;
            }
        }
    }

    fn flush(&mut self, tx: &mut Vec<u8>) {
        while let Some(t) = self.ep.poll_transmit(Instant::now(), tx) {
            let _ = self.socket.send(&tx[..t.len]);
        }
    }

    /// Routes the whole frames of what was sent so far.
    fn route(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.out.extend_from_slice(bytes);
        let mut whole = self.preface_left.min(self.out.len());
        self.preface_left -= whole;
        if self.preface_left == 0 {
            while self.out.len() - whole >= 16 {
                let len = u32::from_le_bytes(self.out[whole..whole + 4].try_into().expect("4"));
                if (len as usize) < 16 {
                    return Err(format!("unroutable frame length {len} over QUIC"));
                }
                if self.out.len() - whole < len as usize {
                    break;
                }
                whole += len as usize;
            }
        }
        let mut io = EndpointStreams {
            endpoint: &mut self.ep,
            conn: self.conn,
        };
        let r = self.router.send(&mut io, &self.out[..whole]);
        self.out.drain(..whole);
        r.map_err(|e| format!("{}: {}", e.counter, e.message))?;
        let shared = self.shared.clone();
        self.router.take_made(|f| push(&shared, f));
        Ok(())
    }

    /// Applies the endpoint's events; false once the connection is gone.
    fn events(&mut self) -> bool {
        let mut scratch = Vec::new();
        while let Some(ev) = self.ep.poll_event() {
            let shared = self.shared.clone();
            let conn = self.conn;
            match ev {
                QuicEvent::Connected { .. } => {
                    if let Some(r) = self.ready.take() {
                        let _ = r.send(Ok(()));
                    }
                }
                QuicEvent::StreamOpened { stream, .. } | QuicEvent::Readable { stream, .. }
                    if !self.read_stream(stream, &mut scratch) =>
                {
                    return false;
                }
                QuicEvent::Writable { stream, .. } => {
                    let mut io = EndpointStreams {
                        endpoint: &mut self.ep,
                        conn,
                    };
                    self.router.on_writable(&mut io, stream);
                }
                QuicEvent::Stopped { stream, code, .. } => {
                    let mut io = EndpointStreams {
                        endpoint: &mut self.ep,
                        conn,
                    };
                    self.router
                        .on_stopped(&mut io, stream, code, |f| push(&shared, f));
                }
                QuicEvent::StreamsAvailable { .. } => {
                    let mut io = EndpointStreams {
                        endpoint: &mut self.ep,
                        conn,
                    };
                    self.router.on_streams_available(&mut io);
                }
                QuicEvent::Closed { reason, .. } => {
                    if let Some(r) = self.ready.take() {
                        let _ = r.send(Err(reason.to_string()));
                    }
                    self.end(None);
                    return false;
                }
                _ => {}
            }
        }
        // Streams left unread while the test's bytes were full, once it took some.
        while !self.unread.is_empty() && !self.full() {
            let s = self.unread.pop_front().expect("not empty");
            if !self.read_stream(s, &mut scratch) {
                return false;
            }
        }
        if self.router.control_closed() {
            self.end(None);
        }
        true
    }

    fn fail(&mut self, why: String) {
        let _ = self.ep.close(Instant::now(), self.conn, 13, why.as_bytes());
        self.end(Some(why));
    }

    fn end(&self, error: Option<String>) {
        let mut i = self.shared.inbound.lock().expect("not poisoned");
        i.eof = true;
        if i.error.is_none() {
            i.error = error;
        }
        self.shared.cv.notify_all();
    }
}

fn push(shared: &Shared, frame: &[u8]) {
    let mut i = shared.inbound.lock().expect("not poisoned");
    i.bytes.extend(frame);
    shared.cv.notify_all();
}

impl QuicRawLink {
    fn cmd(&self, c: Cmd) -> io::Result<()> {
        let closed = {
            let i = self.shared.inbound.lock().expect("not poisoned");
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
            .expect("not poisoned")
            .send(c)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the QUIC link is gone"))
    }
}

impl RawLink for QuicRawLink {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.cmd(Cmd::Send(bytes.to_vec()))
    }

    fn try_send(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.cmd(Cmd::Send(bytes.to_vec())).map(|()| bytes.len())
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        let until = timeout.map(|t| Instant::now() + t);
        let mut i = self.shared.inbound.lock().expect("not poisoned");
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
                .expect("not poisoned")
                .0;
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a raw QUIC link has no half-close (the control stream's FIN ends the connection)",
        ))
    }

    fn close(&self) -> io::Result<()> {
        let _ = self.tx.lock().expect("not poisoned").send(Cmd::Close);
        Ok(())
    }

    fn try_clone(&self) -> io::Result<Box<dyn RawLink>> {
        Ok(Box::new(QuicRawLink {
            tx: Mutex::new(self.tx.lock().expect("not poisoned").clone()),
            shared: self.shared.clone(),
        }))
    }

    fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        self.shared
            .cap
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}
