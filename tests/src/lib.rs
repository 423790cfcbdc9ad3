//! Netron's integration tests: the conformance suite ([`suite`], run over every transport by
//! [`conformance!`] in tests/tests/conformance.rs), the transports it runs over ([`transport`]),
//! test services, and a raw peer that speaks (or deliberately mangles) the wire protocol over
//! any transport's raw link.
//!
//! Transport-specific tests (TCP host names and ports, Unix socket files, listeners) are in
//! tests/tests/socket_listeners.rs and tests/tests/tcp_only.rs.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod quic_link;
pub mod relay;
pub mod services;
pub mod suite;
pub mod transport;

use std::time::Duration;

use netron_codec::handshake::{ClientConfig, ClientHandshake, ClientProgress, Settings};
use netron_engine::{Service, Status};

pub use transport::{INPROC, Kind, QUIC, RawLink, RawListener, SHM, SHM2P, TCP, Transport, UNIX};

/// A core (no engine) with `cfg` and what transport `t` needs (`quic://`: TLS settings).
///
/// # Errors
/// As `Core::new`.
pub fn new_core(
    t: &Transport,
    cfg: impl Into<netron_engine::CoreConfig>,
) -> Result<netron_engine::Core, netron_engine::CoreError> {
    netron_engine::Core::new((t.configure_core)(cfg.into()))
}

/// An engine builder with what transport `t` needs (`quic://`: TLS settings).
pub fn builder(t: &Transport) -> netron_engine::EngineBuilder {
    (t.configure)(netron_engine::Engine::builder())
}

/// `calc@1.2.0`: `add` (sum of bytes), `echo`, `fail` (InvalidArgument), `sleep` (blocks the
/// core for the number of milliseconds in the first payload byte).
pub fn calc() -> Service {
    Service::new("calc", "1.2.0")
        .expect("valid service")
        .unary("add", |req, reply| {
            reply.write(&[req.payload().iter().fold(0u8, |a, b| a.wrapping_add(*b))]);
            Ok(())
        })
        .unary("echo", |req, reply| {
            reply.write(req.payload());
            Ok(())
        })
        .unary("fail", |_, _| {
            Err(Status::invalid_argument("fail always fails"))
        })
        .unary("sleep", |req, reply| {
            std::thread::sleep(Duration::from_millis(
                req.payload().first().copied().unwrap_or(0) as u64,
            ));
            reply.write(b"slept");
            Ok(())
        })
}

/// A fresh Unix socket path for this test process.
pub fn unix_path(tag: &str) -> String {
    format!("/tmp/netron-test-{}-{tag}.sock", std::process::id())
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

/// A single-core engine serving [`calc`] on a fresh endpoint of `t`, with its bound endpoint.
pub fn calc_server(t: &Transport) -> (netron_engine::Engine, String) {
    engine(t, netron_engine::CoreConfig::default(), &[calc()], "calc")
}

/// A single-core engine (so its counters are this transport's) serving `services` with `cfg`
/// on a fresh endpoint of `t`, with its bound endpoint string.
pub fn engine(
    t: &Transport,
    cfg: impl Into<netron_engine::CoreConfig>,
    services: &[Service],
    tag: &str,
) -> (netron_engine::Engine, String) {
    let mut b = builder(t).cores(1).config(cfg).listen(&(t.listen)(tag));
    for s in services {
        b = b.service(s.clone());
    }
    let e = b
        .build()
        .unwrap_or_else(|e| panic!("{}: engine: {e}", t.name));
    let addr = dial_of(t, &e).to_string();
    (e, addr)
}

/// The endpoint a client of `t` dials to reach `e`'s first listener ([`Transport::dial`]
/// of what it printed).
///
/// # Panics
/// If `e` listens nowhere, or the dialled string is not an endpoint.
pub fn dial_of(t: &Transport, e: &netron_engine::Engine) -> netron_engine::Endpoint {
    (t.dial)(&e.endpoints()[0].to_string())
        .parse()
        .unwrap_or_else(|err| panic!("{}: dial endpoint: {err}", t.name))
}

/// How long a [`RawPeer`] waits for the server's bytes before a receive fails.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(10);

/// Cuts a run of whole frames into the records a conforming sender would use (docs/protocol.md
/// §10.2, §26.2): frames grouped while a record holds fewer than the default
/// `max_batch_frames` frames, no frame starts at or after the default `max_batch_bytes`, and
/// the record stays within that size; a larger frame goes alone (the raw link fragments it if
/// it exceeds the ring's record limit, §26.3).
pub fn records_of(frames: &[u8]) -> Vec<&[u8]> {
    let limits = netron_codec::Limits::default();
    let (max_frames, max_bytes) = (
        limits.max_batch_frames as usize,
        limits.max_batch_bytes as usize,
    );
    let len_at = |b: &[u8]| -> usize {
        b.get(..4)
            .map_or(b.len(), |h| {
                u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize
            })
            .clamp(1, b.len())
    };
    let mut out = Vec::new();
    let mut rest = frames;
    while !rest.is_empty() {
        let mut end = len_at(rest);
        let mut n = 1;
        while end < rest.len() && n < max_frames {
            let next = len_at(&rest[end..]);
            if end + next > max_bytes {
                break;
            }
            end += next;
            n += 1;
        }
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// A raw peer over any transport's [`RawLink`] that performs the client handshake by hand,
/// then lets the test send arbitrary bytes: an independent client written from
/// docs/protocol.md.
pub struct RawPeer {
    /// The link.
    pub link: Box<dyn RawLink>,
    /// The transport's kind (a record transport carries the handshake as two records).
    pub kind: Kind,
    /// How long a receive waits ([`RAW_TIMEOUT`] unless the test changes it).
    pub timeout: Option<Duration>,
    /// The negotiated HPACK dynamic-table size (4096 until a handshake says otherwise; 0 on
    /// `quic://`, where the raw peer offers 0, docs/protocol.md §27.4 (a)): what
    /// [`RawPeer::header_encoder`] uses.
    pub header_table_size: u32,
}

impl RawPeer {
    /// Connects to `addr` (a bound endpoint of `t`) without a handshake.
    pub fn connect(t: &Transport, addr: &str) -> RawPeer {
        let link = (t.connect)(addr).unwrap_or_else(|e| panic!("{}: connect {addr}: {e}", t.name));
        RawPeer {
            link,
            kind: t.kind,
            timeout: Some(RAW_TIMEOUT),
            header_table_size: 4096,
        }
    }

    /// A header encoder for this connection's negotiated dynamic-table size (a block encoded
    /// with a larger table than the server accepted is a protocol error).
    pub fn header_encoder(&self) -> netron_codec::hpack::HeaderEncoder {
        netron_codec::hpack::HeaderEncoder::new(self.header_table_size)
    }

    /// Connects and completes the handshake.
    pub fn handshake(t: &Transport, addr: &str) -> RawPeer {
        RawPeer::handshake_with(t, addr, ClientConfig::default()).0
    }

    /// Connects and completes the handshake offering `cfg`; returns the negotiated settings
    /// and how many bytes arrived after the Welcome in the same reads (they are dropped).
    pub fn handshake_with(
        t: &Transport,
        addr: &str,
        cfg: ClientConfig,
    ) -> (RawPeer, Settings, usize) {
        let mut p = RawPeer::connect(t, addr);
        let mut cfg = cfg;
        if t.qpack {
            // The raw peer writes HPACK blocks and opens no header streams (§27.4 (a)).
            cfg.header_table_size = 0;
        }
        let mut hs = ClientHandshake::new(cfg);
        let mut out = Vec::new();
        hs.start(&mut out).expect("hello");
        p.send_hello(&out).expect("send the preface and hello");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = p.recv(&mut chunk).expect("read welcome");
            assert!(n > 0, "{}: server closed during the handshake", t.name);
            buf.extend_from_slice(&chunk[..n]);
            match hs.handle(&buf).expect("welcome") {
                ClientProgress::NeedMore { .. } => continue,
                ClientProgress::Done { settings, consumed } => {
                    p.header_table_size = settings.header_table_size;
                    return (p, settings, buf.len() - consumed);
                }
            }
        }
    }

    /// Sends the preface and Hello that `ClientHandshake::start` wrote: one write on a byte
    /// stream, two records (the 8-byte preface, then the Hello) on a record transport (§26.1).
    pub fn send_hello(&mut self, preface_and_hello: &[u8]) -> std::io::Result<()> {
        match self.kind {
            Kind::Stream => self.link.send(preface_and_hello),
            Kind::Record => {
                let (preface, hello) = preface_and_hello.split_at(8);
                self.link.send(preface)?;
                self.link.send(hello)
            }
        }
    }

    /// Sends `bytes` (one write, or one record).
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.link.send(bytes)
    }

    /// Sends a run of whole frames the way a conforming sender does on this transport: one
    /// write on a byte stream; on a record transport, the records of [`records_of`].
    pub fn send_frames(&mut self, frames: &[u8]) -> std::io::Result<()> {
        match self.kind {
            Kind::Stream => self.link.send(frames),
            Kind::Record => records_of(frames)
                .into_iter()
                .try_for_each(|r| self.link.send(r)),
        }
    }

    /// Receives what has arrived, waiting at most [`RawPeer::timeout`].
    pub fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.link.recv(buf, self.timeout)
    }

    /// Half-closes: the server reads the end after what was sent.
    pub fn shutdown_write(&mut self) -> std::io::Result<()> {
        self.link.shutdown_write()
    }

    /// Reads until the server closes (returns what it sent), or fails after the timeout.
    pub fn read_to_close(&mut self) -> std::io::Result<Vec<u8>> {
        self.link.read_to_close(self.timeout)
    }

    /// Reads and discards everything the server sends on another thread, until the link
    /// closes (end it with `self.link.close()`).
    pub fn read_in_background(&self) -> std::thread::JoinHandle<()> {
        let mut link = self.link.try_clone().expect("clone the link");
        std::thread::spawn(move || {
            let mut c = vec![0u8; 65536];
            while let Ok(n) = link.recv(&mut c, None) {
                if n == 0 {
                    break;
                }
            }
        })
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
