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
//! 2. Add one entry to the list in [`crate::conformance!`] (`inproc => INPROC`).
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
    /// A fresh endpoint to listen on, unique per call (`tag` names the test in paths).
    pub listen: fn(tag: &str) -> String,
    /// Opens a raw link (no handshake) to a bound endpoint, as the engine printed it.
    pub connect: fn(endpoint: &str) -> io::Result<Box<dyn RawLink>>,
    /// Binds a raw listener (a fake server) and returns it with the endpoint clients dial.
    pub raw_listen: fn(tag: &str) -> io::Result<BoundListener>,
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
    listen: |_| "tcp://127.0.0.1:0".to_owned(),
    connect: |ep| {
        let s = TcpStream::connect(ep.trim_start_matches("tcp://"))?;
        s.set_nodelay(true)?;
        Ok(Box::new(SocketLink::Tcp(s)))
    },
    raw_listen: |_| {
        let l = TcpListener::bind("127.0.0.1:0")?;
        Ok((format!("tcp://{}", l.local_addr()?), Box::new(l)))
    },
};

/// `unix:///tmp/netron-test-<pid>-<tag>-<n>.sock`.
pub static UNIX: Transport = Transport {
    name: "unix",
    kind: Kind::Stream,
    listen: |tag| format!("unix://{}", fresh_unix_path(tag)),
    connect: |ep| {
        let path = ep.strip_prefix("unix://").unwrap_or(ep);
        Ok(Box::new(SocketLink::Unix(UnixStream::connect(path)?)))
    },
    raw_listen: |tag| {
        let path = fresh_unix_path(&format!("{tag}-raw"));
        let l = UnixListener::bind(&path)?;
        Ok((format!("unix://{path}"), Box::new(l)))
    },
};

// The in-process record transport (`inproc://name`, over netron-shm's heap ring) joins here
// once netron-engine has it: a `pub static INPROC: Transport` with `kind: Kind::Record`, a
// `RawLink` impl that publishes one record per `send` (fragmenting frames larger than a record
// as docs/protocol.md §26.3 says), and the entry `inproc => INPROC` in `crate::conformance!`.

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
