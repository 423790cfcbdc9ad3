//! Shared helpers for Netron's integration tests: test services, endpoints and a raw-socket
//! peer that speaks (or deliberately mangles) the wire protocol.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use netron_codec::handshake::{ClientConfig, ClientHandshake, ClientProgress};
use netron_engine::{Service, Status};

/// `calc@1.2.0`: `add` (sum of bytes), `echo`, `fail` (InvalidArgument), `sleep` (blocks the
/// core for the number of milliseconds in the first payload byte).
pub fn calc() -> Service {
    Service::new("calc", "1.2.0")
        .expect("valid service")
        .unary("add", |req, reply| {
            reply.write(&[req.payload.iter().fold(0u8, |a, b| a.wrapping_add(*b))]);
            Ok(())
        })
        .unary("echo", |req, reply| {
            reply.write(req.payload);
            Ok(())
        })
        .unary("fail", |_, _| {
            Err(Status::invalid_argument("fail always fails"))
        })
        .unary("sleep", |req, reply| {
            std::thread::sleep(Duration::from_millis(
                req.payload.first().copied().unwrap_or(0) as u64,
            ));
            reply.write(b"slept");
            Ok(())
        })
}

/// A fresh Unix socket path for this test process.
pub fn unix_path(tag: &str) -> String {
    format!("/tmp/netron-test-{}-{tag}.sock", std::process::id())
}

/// The socket of a [`RawPeer`]: TCP or a Unix stream, with the calls tests make on it.
#[derive(Debug)]
pub enum RawStream {
    /// `tcp://`
    Tcp(TcpStream),
    /// `unix://`
    Unix(std::os::unix::net::UnixStream),
}

impl RawStream {
    /// Shuts down one or both directions.
    pub fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
        match self {
            RawStream::Tcp(s) => s.shutdown(how),
            RawStream::Unix(s) => s.shutdown(how),
        }
    }
    /// Sets the read timeout.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            RawStream::Tcp(s) => s.set_read_timeout(t),
            RawStream::Unix(s) => s.set_read_timeout(t),
        }
    }
    /// Sets non-blocking mode.
    pub fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        match self {
            RawStream::Tcp(s) => s.set_nonblocking(on),
            RawStream::Unix(s) => s.set_nonblocking(on),
        }
    }
    /// A second handle to the same socket.
    pub fn try_clone(&self) -> std::io::Result<RawStream> {
        Ok(match self {
            RawStream::Tcp(s) => RawStream::Tcp(s.try_clone()?),
            RawStream::Unix(s) => RawStream::Unix(s.try_clone()?),
        })
    }
}

impl std::os::fd::AsRawFd for RawStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            RawStream::Tcp(s) => s.as_raw_fd(),
            RawStream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for RawStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            RawStream::Tcp(s) => s.read(buf),
            RawStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for RawStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            RawStream::Tcp(s) => s.write(buf),
            RawStream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A global allocator that counts allocations (for the allocation-budget tests: each declares
/// `#[global_allocator] static GLOBAL: CountingAlloc = CountingAlloc;` and reads
/// [`allocations`]; one test per binary, so no other test's allocations are counted).
pub struct CountingAlloc;

static ALLOCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Allocations (and reallocations) counted by [`CountingAlloc`] so far in this process.
pub fn allocations() -> u64 {
    ALLOCS.load(std::sync::atomic::Ordering::SeqCst)
}

// SAFETY: delegates every call to `System` unchanged, only counting.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

/// A single-core engine serving [`calc`] on a free TCP port, with its endpoint string.
pub fn calc_server() -> (netron_engine::Engine, String) {
    let e = netron_engine::Engine::builder()
        .cores(1)
        .service(calc())
        .listen("tcp://127.0.0.1:0")
        .build()
        .expect("engine");
    let ep = e.endpoints()[0].to_string();
    (e, ep)
}

/// One single-core engine per transport (so counters are per transport) serving `services`
/// with `cfg`, with its bound endpoint string.
pub fn engines(
    cfg: netron_engine::CoreConfig,
    services: &[Service],
    tag: &str,
) -> Vec<(netron_engine::Engine, String)> {
    transports(tag)
        .into_iter()
        .map(|listen| {
            let mut b = netron_engine::Engine::builder()
                .cores(1)
                .config(cfg.clone())
                .listen(&listen);
            for s in services {
                b = b.service(s.clone());
            }
            let e = b.build().expect("engine");
            let addr = e.endpoints()[0].to_string();
            (e, addr)
        })
        .collect()
}

/// The listen endpoints every transport-agnostic test runs over: TCP on a free port and a
/// fresh Unix socket path (the record transports join this list as they arrive).
pub fn transports(tag: &str) -> Vec<String> {
    // Unique per call: tests of one binary run in parallel and may share a tag.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = unix_path(&format!("{tag}-{n}"));
    let _ = std::fs::remove_file(&path);
    vec!["tcp://127.0.0.1:0".to_owned(), format!("unix://{path}")]
}

/// A raw peer (TCP or Unix socket) that performs the client handshake by hand, then lets the
/// test write arbitrary bytes: an independent client written from docs/protocol.md.
pub struct RawPeer {
    /// The socket.
    pub stream: RawStream,
}

impl RawPeer {
    /// Connects without a handshake to `addr`: `host:port`, `tcp://host:port` or
    /// `unix:///path`.
    pub fn connect(addr: &str) -> RawPeer {
        let stream = if let Some(path) = addr.strip_prefix("unix://") {
            RawStream::Unix(std::os::unix::net::UnixStream::connect(path).expect("connect"))
        } else {
            let s = TcpStream::connect(addr.trim_start_matches("tcp://")).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            RawStream::Tcp(s)
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        RawPeer { stream }
    }

    /// Connects and completes the handshake.
    pub fn handshake(addr: &str) -> RawPeer {
        let mut p = RawPeer::connect(addr);
        let mut hs = ClientHandshake::new(ClientConfig::default());
        let mut out = Vec::new();
        hs.start(&mut out).expect("hello");
        p.stream.write_all(&out).expect("write hello");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = p.stream.read(&mut chunk).expect("read welcome");
            assert!(n > 0, "server closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
            match hs.handle(&buf).expect("welcome") {
                ClientProgress::NeedMore { .. } => continue,
                ClientProgress::Done { .. } => return p,
            }
        }
    }

    /// Reads until the server closes (returns what it sent), or fails after the read timeout.
    pub fn read_to_close(&mut self) -> std::io::Result<Vec<u8>> {
        let mut all = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(all),
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(all),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Runs a future to completion on the calling thread (a minimal executor for tests: the
/// waker unparks this thread).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}
