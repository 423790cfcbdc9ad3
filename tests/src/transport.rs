//! The transports the conformance suite runs over, and the raw links its hostile peers use.
//!
//! A [`Transport`] says how to get a fresh endpoint to listen on, how to open a raw link to a
//! bound endpoint (a [`RawLink`], what [`crate::RawPeer`] speaks through), how to bind a raw
//! listener (a fake server, [`RawListener`]), and whether it carries a byte stream or records
//! ([`Kind`]). The suite (`crate::suite`) takes a `&Transport` and never names a transport.
//!
//! # Adding a transport
//!
//! 1. Define its `pub static` [`Transport`] below (next to [`TCP`] and [`UNIX`]) with a
//!    [`RawLink`] impl for its raw links (and a [`RawListener`] for its fake servers).
//! 2. Add one entry to the list in [`crate::conformance!`] (`inproc => INPROC`, `shm => SHM`).
//!
//! Every area of the suite then runs over it as `inproc::<area>::<test>`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

/// How a transport delivers bytes (docs/protocol.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A byte stream (TCP, Unix stream sockets): write boundaries mean nothing; a frame may be
    /// split over several writes and several frames may share one (§2.1).
    Stream,
    /// A record transport (shared-memory rings, datagrams): each write is one record that must
    /// hold whole frames; a record that ends inside a frame is `Incomplete` (§2.2, §10.2,
    /// §26.2). The preface and the Hello travel as two records (§26.1).
    Record,
}

/// One transport of the conformance suite.
#[derive(Debug)]
pub struct Transport {
    /// Short name, used in test names and failure messages (`tcp`, `unix`, ...).
    pub name: &'static str,
    /// Byte stream or records: the few tests whose expectation differs branch on it.
    pub kind: Kind,
    /// Whether the engine sends zero-copy (`SendZc`) on it when
    /// `RuntimeConfig::send_zc_threshold` says so: TCP only (Unix sockets refuse it, record
    /// transports copy into their rings).
    pub zero_copy: bool,
    /// Whether engines code header blocks with QPACK here (`quic://`, docs/protocol.md §27.4
    /// (c)): a [`crate::RawPeer`], which writes HPACK blocks, then offers `header_table_size`
    /// 0 (§27.4 (a): no dynamic table, no header streams).
    pub qpack: bool,
    /// A fresh endpoint to listen on, unique per call (`tag` names the test in paths).
    pub listen: fn(tag: &str) -> String,
    /// The endpoint a client dials to reach a server bound on `endpoint` (as the engine
    /// printed it): `endpoint` itself, except where a relay sits between them ([`SHM2P`]).
    /// The suite dials through [`crate::dial_of`] and [`crate::engine`], never
    /// `endpoints()[0]` directly.
    pub dial: fn(endpoint: &str) -> String,
    /// Whether connections cross a relay process ([`SHM2P`]): the server's peer is the
    /// relay, not the client (its pid, its half-closes and hang-ups come second-hand).
    pub relayed: bool,
    /// Opens a raw link (no handshake) to a bound endpoint, as the engine printed it.
    pub connect: fn(endpoint: &str) -> io::Result<Box<dyn RawLink>>,
    /// Binds a raw listener (a fake server) and returns it with the endpoint clients dial.
    pub raw_listen: fn(tag: &str) -> io::Result<BoundListener>,
    /// What every engine of the suite needs on this transport (`quic://`: TLS settings);
    /// [`crate::builder`] applies it.
    pub configure: fn(netron_engine::EngineBuilder) -> netron_engine::EngineBuilder,
    /// The same for a core made without an engine; [`crate::new_core`] applies it.
    pub configure_core: fn(netron_engine::CoreConfig) -> netron_engine::CoreConfig,
}

impl Transport {
    /// Whether each call, stream and subscription travels on a transport stream of its own
    /// (`quic://`, docs/protocol.md §27.2). There, a frame for an exchange that has no open
    /// stream (an id never opened, a half already ended by its FIN, §27.2 rule 3) has no
    /// stream to travel on: on the control stream or a new stream it would be a connection
    /// error `quic_unexpected_frame` (rule 2), so a raw link does not send it (its router
    /// drops it). The few tests that send such frames leave them out here.
    pub fn stream_per_exchange(&self) -> bool {
        self.name == "quic"
    }
}

/// A bound raw listener and the endpoint string clients dial to reach it.
pub type BoundListener = (String, Box<dyn RawListener>);

/// A raw connection under a [`crate::RawPeer`] or a fake server: bytes in, bytes out, no
/// protocol. One `send` is one write on a byte stream and one record on a record transport.
pub trait RawLink: Send {
    /// Sends all of `bytes`. On a byte stream, with as many writes as it takes; on a record
    /// transport, as one record (the caller puts whole frames in it, or deliberately not).
    fn send(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Sends without waiting: the number of bytes taken (a byte stream may take part of
    /// them; a record transport takes all or none), or `WouldBlock` when there is no room.
    fn try_send(&mut self, bytes: &[u8]) -> io::Result<usize>;
    /// Receives what has arrived into `buf`, waiting at most `timeout` (`None`: no bound).
    /// `Ok(0)` means the peer closed; a timeout is `WouldBlock` or `TimedOut`. On a record
    /// transport one call returns (part of) one record; records concatenate into frames.
    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize>;
    /// Half-close: no more sends; the peer reads the end after what was sent (a FIN).
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// Closes both directions now (also ends a `recv` blocked on a clone of this link).
    fn close(&self) -> io::Result<()>;
    /// A second handle to the same link (for a reader on another thread).
    fn try_clone(&self) -> io::Result<Box<dyn RawLink>>;
    /// Asks for a receive buffer of about `bytes`, so a peer that stops reading holds back
    /// its sender early (`SO_RCVBUF` on sockets). A transport whose buffer is fixed at
    /// connect time may do nothing.
    fn set_recv_buffer(&self, bytes: usize) -> io::Result<()>;

    /// Receives until the peer closes (a reset counts as a close) and returns everything it
    /// sent; fails if nothing arrives for `timeout`.
    fn read_to_close(&mut self, timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        let mut chunk = vec![0u8; 65536];
        loop {
            match self.recv(&mut chunk, timeout) {
                Ok(0) => return Ok(all),
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(all),
                Err(e) => return Err(e),
            }
        }
    }
}

/// A raw listener for fake servers (a test playing the server side by hand).
pub trait RawListener: Send {
    /// Waits for the next connection.
    fn accept(&mut self) -> io::Result<Box<dyn RawLink>>;
}

/// `tcp://127.0.0.1:<free port>`.
pub static TCP: Transport = Transport {
    name: "tcp",
    kind: Kind::Stream,
    zero_copy: true,
    qpack: false,
    listen: |_| "tcp://127.0.0.1:0".to_owned(),
    dial: str::to_owned,
    relayed: false,
    connect: |ep| {
        let s = TcpStream::connect(ep.trim_start_matches("tcp://"))?;
        s.set_nodelay(true)?;
        Ok(Box::new(SocketLink::Tcp(s)))
    },
    raw_listen: |_| {
        let l = TcpListener::bind("127.0.0.1:0")?;
        Ok((format!("tcp://{}", l.local_addr()?), Box::new(l)))
    },
    configure: |b| b,
    configure_core: |c| c,
};

/// `unix:///tmp/netron-test-<pid>-<tag>-<n>.sock`.
pub static UNIX: Transport = Transport {
    name: "unix",
    kind: Kind::Stream,
    zero_copy: false,
    qpack: false,
    listen: |tag| format!("unix://{}", fresh_unix_path(tag)),
    dial: str::to_owned,
    relayed: false,
    connect: |ep| {
        let path = ep.strip_prefix("unix://").unwrap_or(ep);
        Ok(Box::new(SocketLink::Unix(UnixStream::connect(path)?)))
    },
    raw_listen: |tag| {
        let path = fresh_unix_path(&format!("{tag}-raw"));
        let l = UnixListener::bind(&path)?;
        Ok((format!("unix://{path}"), Box::new(l)))
    },
    configure: |b| b,
    configure_core: |c| c,
};

/// `inproc://netron-test-<pid>-<tag>-<n>`: the in-process record transport (two netron-shm
/// heap rings per connection, docs/protocol.md §26 framing).
pub static INPROC: Transport = Transport {
    name: "inproc",
    kind: Kind::Record,
    zero_copy: false,
    qpack: false,
    listen: |tag| format!("inproc://{}", fresh_inproc_name(tag)),
    dial: str::to_owned,
    relayed: false,
    connect: |ep| {
        let name = ep.strip_prefix("inproc://").unwrap_or(ep);
        let (tx, rx) = netron_engine::inproc::connect_raw(name)?;
        Ok(Box::new(InprocLink::new(tx, rx)))
    },
    raw_listen: |tag| {
        let name = fresh_inproc_name(&format!("{tag}-raw"));
        let l = netron_engine::inproc::listen_raw(&name)?;
        Ok((format!("inproc://{name}"), Box::new(l)))
    },
    configure: |b| b,
    configure_core: |c| c,
};

/// `shm://netron-test-<pid>-<tag>-<n>`: the shared-memory record transport (a netron-shm
/// segment per connection, an abstract rendezvous socket, docs/protocol.md §26 framing).
/// The raw links are the segment's rings, driven like [`INPROC`]'s.
pub static SHM: Transport = Transport {
    name: "shm",
    kind: Kind::Record,
    zero_copy: false,
    qpack: false,
    listen: |tag| format!("shm://{}", fresh_inproc_name(tag)),
    dial: str::to_owned,
    relayed: false,
    connect: shm_connect,
    raw_listen: |tag| {
        let name = fresh_inproc_name(&format!("{tag}-raw"));
        let l = netron_engine::shm::listen_raw(&name)?;
        Ok((format!("shm://{name}"), Box::new(l)))
    },
    configure: |b| b,
    configure_core: |c| c,
};

/// `quic://127.0.0.1:<free port>`: Netron over QUIC with TLS 1.3 (docs/quic.md), the suite's
/// test CA on both sides ([`crate::quic_link`]). Each QUIC stream is a byte stream of frames.
/// A raw link writes the test's bytes as sent, each frame on the QUIC stream its header names
/// (from its complete header on, byte by byte if sent so), and a header that names no stream
/// with everything after it as it is on the control stream; a raw listener is a QUIC server
/// (the test CA, ALPN `netron/1`) handing out the same raw links. A frame for an exchange
/// with no open stream cannot be sent ([`Transport::stream_per_exchange`]). A half-close is
/// the control stream's FIN, sent once all written before is acknowledged. The tests left
/// out, and why: docs/quic.md, "Conformance over quic://".
pub static QUIC: Transport = Transport {
    name: "quic",
    kind: Kind::Stream,
    zero_copy: false,
    qpack: true,
    listen: |_| "quic://127.0.0.1:0".to_owned(),
    dial: str::to_owned,
    relayed: false,
    connect: crate::quic_link::connect,
    raw_listen: crate::quic_link::raw_listen,
    configure: crate::quic_link::configure,
    configure_core: crate::quic_link::configure_core,
};

/// `shm://` between two real processes: the server listens on `shm://Y` in the test
/// process, and clients dial `shm://Y-relay`, where a relay process ([`crate::relay`], the
/// `shm_relay` binary of this package) forwards every record unchanged to a connection of
/// its own to `Y`, and propagates half-closes and hang-ups both ways. Every record crosses
/// two segments, each shared between two processes (docs/shm.md, "Two processes").
pub static SHM2P: Transport = Transport {
    name: "shm2p",
    kind: Kind::Record,
    zero_copy: false,
    qpack: false,
    listen: |tag| format!("shm://{}", fresh_inproc_name(tag)),
    dial: crate::relay::dial,
    relayed: true,
    connect: shm_connect,
    raw_listen: |tag| {
        let name = fresh_inproc_name(&format!("{tag}-raw"));
        let l = netron_engine::shm::listen_raw(&name)?;
        Ok((crate::relay::dial(&format!("shm://{name}")), Box::new(l)))
    },
    configure: |b| b,
    configure_core: |c| c,
};

fn shm_connect(ep: &str) -> io::Result<Box<dyn RawLink>> {
    let name = ep.strip_prefix("shm://").unwrap_or(ep);
    let (tx, rx) = netron_engine::shm::connect_raw(name)?;
    Ok(Box::new(InprocLink::new(tx, rx)))
}

impl RawListener for netron_engine::shm::RawListener {
    fn accept(&mut self) -> io::Result<Box<dyn RawLink>> {
        let (tx, rx) = netron_engine::shm::RawListener::accept(self, None)?;
        Ok(Box::new(InprocLink::new(tx, rx)))
    }
}

/// An `inproc://` name no other call of this process returns.
fn fresh_inproc_name(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("netron-test-{}-{tag}-{n}", std::process::id())
}

/// How long a blocked `recv` or `send` on an inproc link sleeps between looks at its
/// `closed` flag (a `close` from another handle must end it).
const INPROC_SLICE: Duration = Duration::from_millis(10);

/// The receiving side of an [`InprocLink`]: the consumer and what is left of the record a
/// short `recv` buffer did not take.
struct InprocRx {
    consumer: Option<netron_shm::Consumer>,
    rest: Vec<u8>,
}

struct InprocShared {
    tx: std::sync::Mutex<Option<netron_shm::Producer>>,
    rx: std::sync::Mutex<InprocRx>,
    closed: std::sync::atomic::AtomicBool,
    /// `shm://`: a duplicate of the connection's liveness socket, to half-close it
    /// (`shutdown_write`), shut it (`close`) and see the engine gone (`send`).
    live: Option<std::os::fd::OwnedFd>,
}

/// A raw in-process link: one `send` is one record (split into fragments only when it is
/// longer than a record, §26.3); `recv` returns the records' bytes in order.
#[derive(Clone)]
struct InprocLink(std::sync::Arc<InprocShared>);

impl InprocLink {
    fn new(tx: netron_shm::Producer, rx: netron_shm::Consumer) -> InprocLink {
        let live = tx.liveness_fd().and_then(|fd| fd.try_clone_to_owned().ok());
        InprocLink(std::sync::Arc::new(InprocShared {
            live,
            tx: std::sync::Mutex::new(Some(tx)),
            rx: std::sync::Mutex::new(InprocRx {
                consumer: Some(rx),
                rest: Vec::new(),
            }),
            closed: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn is_closed(&self) -> bool {
        self.0.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// `shm://`: whether the engine shut the connection (both directions of its socket).
    fn peer_shut(&self) -> bool {
        use rustix::event::{PollFd, PollFlags};
        let Some(fd) = &self.0.live else {
            return false;
        };
        let mut fds = [PollFd::new(fd, PollFlags::HUP | PollFlags::ERR)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        rustix::event::poll(&mut fds, Some(&zero)).is_ok() && !fds[0].revents().is_empty()
    }

    fn shut(&self, how: rustix::net::Shutdown) {
        if let Some(fd) = &self.0.live {
            let _ = rustix::net::shutdown(fd, how);
        }
    }
}

fn shm_err(e: netron_shm::Error) -> io::Error {
    match e {
        netron_shm::Error::PeerGone | netron_shm::Error::Closed => {
            io::Error::new(io::ErrorKind::BrokenPipe, e.to_string())
        }
        netron_shm::Error::Full => io::Error::new(io::ErrorKind::WouldBlock, e.to_string()),
        netron_shm::Error::Timeout => io::Error::new(io::ErrorKind::TimedOut, e.to_string()),
        other => io::Error::other(other.to_string()),
    }
}

impl RawLink for InprocLink {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut tx = self.0.tx.lock().unwrap_or_else(|e| e.into_inner());
        let p = tx
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "inproc link shut down"))?;
        if self.peer_shut() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the shm peer closed the connection",
            ));
        }
        let limit = p.max_record_len();
        // Longer than a record: fragments of at most `limit` bytes (§26.3).
        for piece in bytes
            .chunks(limit.max(1))
            .chain(bytes.is_empty().then_some(&[][..]))
        {
            loop {
                if self.is_closed() {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "inproc link closed",
                    ));
                }
                match p.reserve_wait(piece.len(), Some(std::time::Instant::now() + INPROC_SLICE)) {
                    Ok(mut r) => {
                        r.copy_from_slice(piece);
                        r.commit();
                        break;
                    }
                    Err(netron_shm::Error::Timeout) => {}
                    Err(e) => return Err(shm_err(e)),
                }
            }
            p.publish().map_err(shm_err)?;
        }
        Ok(())
    }

    fn try_send(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut tx = self.0.tx.lock().unwrap_or_else(|e| e.into_inner());
        let p = tx
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "inproc link shut down"))?;
        if self.peer_shut() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the shm peer closed the connection",
            ));
        }
        let mut r = p.reserve(bytes.len()).map_err(shm_err)?;
        r.copy_from_slice(bytes);
        r.commit();
        p.publish().map_err(shm_err)?;
        Ok(bytes.len())
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut rx = self.0.rx.lock().unwrap_or_else(|e| e.into_inner());
        let InprocRx { consumer, rest } = &mut *rx;
        if !rest.is_empty() {
            let n = buf.len().min(rest.len());
            buf[..n].copy_from_slice(&rest[..n]);
            rest.drain(..n);
            return Ok(n);
        }
        loop {
            if self.is_closed() {
                return Ok(0);
            }
            let Some(c) = consumer.as_mut() else {
                return Ok(0);
            };
            match c.read() {
                Ok(Some(r)) => {
                    let n = buf.len().min(r.len());
                    buf[..n].copy_from_slice(&r[..n]);
                    rest.extend_from_slice(&r[n..]);
                    c.release();
                    return Ok(n);
                }
                Ok(None) => {}
                Err(e) => return Err(shm_err(e)),
            }
            let now = std::time::Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "inproc recv timed out",
                ));
            }
            let slice = deadline.map_or(now + INPROC_SLICE, |d| d.min(now + INPROC_SLICE));
            match c.wait(Some(slice)) {
                Ok(()) | Err(netron_shm::Error::Timeout) => {}
                Err(netron_shm::Error::PeerGone) => {
                    if !c.ready().unwrap_or(false) {
                        return Ok(0);
                    }
                }
                Err(e) => return Err(shm_err(e)),
            }
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        // Dropping the producer publishes what it committed and tells an in-process engine
        // the end; over shm the end is the socket's writing side shut down (a half-close).
        self.0.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.shut(rustix::net::Shutdown::Write);
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        self.0
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.0.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.shut(rustix::net::Shutdown::Both);
        // A `recv` blocked on another handle holds the consumer; it sees `closed` within a
        // slice and returns; the consumer is dropped here or with the last handle.
        if let Ok(mut rx) = self.0.rx.try_lock() {
            rx.consumer.take();
        }
        Ok(())
    }

    fn try_clone(&self) -> io::Result<Box<dyn RawLink>> {
        Ok(Box::new(self.clone()))
    }

    fn set_recv_buffer(&self, _bytes: usize) -> io::Result<()> {
        // The ring's size is fixed when the connection is made.
        Ok(())
    }
}

impl RawListener for netron_engine::inproc::RawListener {
    fn accept(&mut self) -> io::Result<Box<dyn RawLink>> {
        let (tx, rx) = netron_engine::inproc::RawListener::accept(self, None)?;
        Ok(Box::new(InprocLink::new(tx, rx)))
    }
}

/// A Unix socket path no other call of this process returns (tests of one binary run in
/// parallel and may share a tag), with any stale file removed.
fn fresh_unix_path(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = crate::unix_path(&format!("{tag}-{n}"));
    let _ = std::fs::remove_file(&path);
    path
}

/// A socket link: TCP or a Unix stream.
#[derive(Debug)]
enum SocketLink {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl SocketLink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            SocketLink::Tcp(s) => s.write(bytes),
            SocketLink::Unix(s) => s.write(bytes),
        }
    }
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            SocketLink::Tcp(s) => s.write_all(bytes),
            SocketLink::Unix(s) => s.write_all(bytes),
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SocketLink::Tcp(s) => s.read(buf),
            SocketLink::Unix(s) => s.read(buf),
        }
    }
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            SocketLink::Tcp(s) => s.set_nonblocking(on),
            SocketLink::Unix(s) => s.set_nonblocking(on),
        }
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            SocketLink::Tcp(s) => s.set_read_timeout(t),
            SocketLink::Unix(s) => s.set_read_timeout(t),
        }
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            SocketLink::Tcp(s) => s.shutdown(how),
            SocketLink::Unix(s) => s.shutdown(how),
        }
    }
}

impl RawLink for SocketLink {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.set_nonblocking(false)?;
        self.write_all(bytes)
    }
    fn try_send(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.set_nonblocking(true)?;
        let r = self.write(bytes);
        self.set_nonblocking(false)?;
        r
    }
    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        // A zero timeout means "no timeout" to the socket API: ask for the shortest real one.
        let t = timeout.map(|t| t.max(Duration::from_micros(1)));
        self.set_read_timeout(t)?;
        self.read(buf)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn close(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Both)
    }
    fn try_clone(&self) -> io::Result<Box<dyn RawLink>> {
        Ok(Box::new(match self {
            SocketLink::Tcp(s) => SocketLink::Tcp(s.try_clone()?),
            SocketLink::Unix(s) => SocketLink::Unix(s.try_clone()?),
        }))
    }
    fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = match self {
            SocketLink::Tcp(s) => s.as_raw_fd(),
            SocketLink::Unix(s) => s.as_raw_fd(),
        };
        let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fd` is this link's open socket and `size` a c_int of the length passed,
        // alive for the whole call.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl RawListener for TcpListener {
    fn accept(&mut self) -> io::Result<Box<dyn RawLink>> {
        let (s, _) = TcpListener::accept(self)?;
        Ok(Box::new(SocketLink::Tcp(s)))
    }
}

impl RawListener for UnixListener {
    fn accept(&mut self) -> io::Result<Box<dyn RawLink>> {
        let (s, _) = UnixListener::accept(self)?;
        Ok(Box::new(SocketLink::Unix(s)))
    }
}
