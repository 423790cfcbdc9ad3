//! The engine section of `netron-bench`: a Netron server (one engine core pinned to cpu1) and
//! a client core driven by this thread (pinned to cpu0), against socket ping-pong floors
//! measured in the same run with the same message sizes and the same pinning.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use netron_engine::{
    CallSlot, ConnId, Core, CoreStats, DriverChoice, Endpoint, Engine, IdlePolicy, RuntimeConfig,
    Service,
};

use crate::Options;
use crate::pin::pin_to_cpu;
use crate::stats::{PairedRatio, Samples, ratio, us};
use crate::table::Table;

const SIZE: usize = 64;
/// Alternating floor / Netron runs per latency row.
const REPS: usize = 5;
pub(crate) const SERVICE: &[u8] = b"bench@1.0.0";
pub(crate) const METHOD: &[u8] = b"echo";

pub(crate) fn service() -> Service {
    Service::new("bench", "1.0.0")
        .expect("service")
        .unary("echo", |req, reply| {
            reply.write(req.payload());
            Ok(())
        })
}

/// `len` incompressible bytes (xorshift64, Marsaglia 2003), the same on every run: payloads
/// that negotiated compression leaves as they are.
pub(crate) fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Runs the engine measurements.
pub fn run(opts: &Options) -> Vec<Table> {
    pin_to_cpu(0);
    let n = if opts.quick { 5_000 } else { 50_000 };
    let mut tables = vec![latency(n)];
    tables.push(throughput(if opts.quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    }));
    tables.push(zero_copy(if opts.quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    }));
    tables.push(memory(if opts.quick { 2_000 } else { 10_000 }));
    tables
}

// ---- floors ------------------------------------------------------------------------------

pub(crate) trait Stream: Read + Write + Send + 'static {
    fn nonblocking(&self, on: bool);
}
impl Stream for TcpStream {
    fn nonblocking(&self, on: bool) {
        self.set_nonblocking(on).expect("nonblocking");
        self.set_nodelay(true).expect("nodelay");
    }
}
impl Stream for UnixStream {
    fn nonblocking(&self, on: bool) {
        self.set_nonblocking(on).expect("nonblocking");
    }
}

/// The in-process floor: one 64-byte record per message over a pair of netron-shm heap rings
/// with eventfd doorbells, which is what `inproc://` runs on. Non-blocking reads spin on the
/// ring; blocking reads announce sleep and wait on the doorbell (`Consumer::wait`).
pub(crate) struct RingStream {
    tx: netron_shm::Producer,
    rx: netron_shm::Consumer,
    nonblocking: std::cell::Cell<bool>,
    /// Empty non-blocking reads since the liveness socket was last looked at.
    idle_reads: std::cell::Cell<u32>,
}

/// A non-blocking [`RingStream`] looks at its liveness socket (one `poll`) once every this
/// many empty reads: a segment's peer can only be seen gone there (heap rings see it at
/// once), and once per read would add a system call to the floor's busy loop.
const LIVENESS_EVERY: u32 = 4096;

impl Stream for RingStream {
    fn nonblocking(&self, on: bool) {
        self.nonblocking.set(on);
    }
}

impl Write for RingStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.tx.send(buf) {
            Ok(()) => {}
            Err(netron_shm::Error::Full) => return Err(ErrorKind::WouldBlock.into()),
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
        self.tx
            .publish()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Read for RingStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let got = self
                .rx
                .read()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if let Some(r) = got {
                // The floor's messages are one record each, never larger than `buf`.
                let n = r.len().min(buf.len());
                buf[..n].copy_from_slice(&r[..n]);
                self.rx.release();
                return Ok(n);
            }
            if self.rx.peer_gone() {
                return Ok(0);
            }
            if self.nonblocking.get() {
                let idle = self.idle_reads.get() + 1;
                self.idle_reads.set(idle % LIVENESS_EVERY);
                if idle == LIVENESS_EVERY && self.rx.check_peer().is_err() {
                    return Ok(0);
                }
                return Err(ErrorKind::WouldBlock.into());
            }
            match self.rx.wait(None) {
                Ok(()) => {}
                Err(netron_shm::Error::PeerGone) => return Ok(0),
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
    }
}

/// Two [`RingStream`]s over one real netron-shm segment (rendezvous in this process): the
/// raw ring floor of `shm://` (the same rings, doorbells and liveness socket, no Netron).
fn shm_ring_pair() -> (RingStream, RingStream) {
    let name = format!("netron-bench-floor-{}", std::process::id());
    let mut cfg = netron_shm::Config::default();
    cfg.spin(Duration::ZERO);
    let listener = netron_shm::ShmListener::bind_with(&name, cfg.clone()).expect("shm bind");
    let client = std::thread::spawn(move || {
        netron_shm::ShmConnection::connect_with(&name, &cfg).expect("shm connect")
    });
    let server = listener
        .accept_timeout(Some(Instant::now() + Duration::from_secs(5)))
        .expect("shm accept");
    let client = client.join().expect("shm connect thread");
    let side = |c: netron_shm::ShmConnection| {
        let (tx, rx) = c.split();
        RingStream {
            tx,
            rx,
            nonblocking: std::cell::Cell::new(false),
            idle_reads: std::cell::Cell::new(0),
        }
    };
    (side(client), side(server))
}

/// Two connected [`RingStream`]s.
fn ring_pair() -> (RingStream, RingStream) {
    let ring = || netron_shm::channel_with_doorbell(1 << 16, Duration::ZERO).expect("ring");
    let ((a_tx, b_rx), (b_tx, a_rx)) = (ring(), ring());
    let side = |tx, rx| RingStream {
        tx,
        rx,
        nonblocking: std::cell::Cell::new(false),
        idle_reads: std::cell::Cell::new(0),
    };
    (side(a_tx, a_rx), side(b_tx, b_rx))
}

fn write_all(s: &mut impl Stream, mut buf: &[u8]) {
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => panic!("floor write: {e}"),
        }
    }
}

fn read_exact(s: &mut impl Stream, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(_) => return false,
        }
    }
    true
}

/// Ping-pong of `SIZE`-byte messages: echo thread on cpu1, this thread on cpu0.
pub(crate) fn floor<S: Stream>(mut client: S, mut server: S, busy: bool, n: usize) -> Samples {
    client.nonblocking(busy);
    server.nonblocking(busy);
    let echo = std::thread::spawn(move || {
        pin_to_cpu(1);
        let mut buf = [0u8; SIZE];
        while read_exact(&mut server, &mut buf) {
            write_all(&mut server, &buf);
        }
    });
    let msg = [0x5au8; SIZE];
    let mut back = [0u8; SIZE];
    let mut s = Samples::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        write_all(&mut client, &msg);
        assert!(read_exact(&mut client, &mut back), "floor peer closed");
        if i >= n / 10 {
            s.push(t.elapsed().as_nanos() as u64);
        }
    }
    drop(client);
    let _ = echo.join();
    s
}

pub(crate) fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (s, _) = l.accept().expect("accept");
    (c, s)
}

fn unix_pair() -> (UnixStream, UnixStream) {
    UnixStream::pair().expect("socketpair")
}

// ---- netron --------------------------------------------------------------------------------

pub(crate) fn server(endpoint: &str, idle: IdlePolicy) -> Engine {
    server_with(endpoint, RuntimeConfig::default().with_idle(idle))
}

fn server_with(endpoint: &str, cfg: RuntimeConfig) -> Engine {
    Engine::builder()
        .cores(1)
        .cpus(&[1])
        .config(cfg)
        .service(service())
        .listen(endpoint)
        .build()
        .expect("netron server")
}

fn unix_endpoint(tag: &str) -> String {
    format!("unix:///tmp/netron-bench-{}-{tag}.sock", std::process::id())
}

fn netron_rtt(endpoint: &str, cfg: RuntimeConfig, n: usize) -> Samples {
    let engine = server_with(endpoint, cfg.clone());
    let ep: Endpoint = engine.endpoints()[0].clone();
    let mut core = Core::new(cfg).expect("client core");
    let conn = core.connect(&ep, Duration::from_secs(5)).expect("connect");
    let s = round_trips(&mut core, conn, n);
    core.close(conn);
    drop(core);
    engine.shutdown(Duration::from_millis(200));
    s
}

/// `n` unary calls of 64 bytes to the echo method on `conn`, after `n / 10` warm-up ones;
/// nanoseconds each.
pub(crate) fn round_trips(core: &mut Core, conn: ConnId, n: usize) -> Samples {
    let mut slot = CallSlot::new();
    let msg = [0x5au8; SIZE];
    let mut s = Samples::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        let r = core
            .call(conn, SERVICE, METHOD, &msg, None, &mut slot)
            .expect("call");
        debug_assert_eq!(r.len(), SIZE);
        if i >= n / 10 {
            s.push(t.elapsed().as_nanos() as u64);
        }
    }
    s
}

fn latency(n: usize) -> Table {
    let mut t = Table::new(
        "engine: unary round trip, 64-byte request and reply (client cpu0, server cpu1)",
        &[
            "transport / mode",
            "p50",
            "p99",
            "p99.9",
            "floor p50",
            "p50 ratio",
            "p50 ratio range",
            "p99 ratio",
            "floor",
        ],
    );
    let spin = IdlePolicy::Adaptive {
        spin: Duration::from_micros(50),
    };
    let park = IdlePolicy::Adaptive {
        spin: Duration::ZERO,
    };
    // The host's speed drifts from one second to the next: each row alternates `REPS` floor
    // and Netron runs of n / REPS round trips; the percentiles pool each side's samples, the
    // p50 ratio pairs each Netron run with the floor run just before it.
    let per = (n / REPS).max(1);
    for transport in ["tcp", "unix", "inproc", "shm"] {
        let floor_of = |busy: bool| match transport {
            "tcp" => {
                let (c, s) = tcp_pair();
                floor(c, s, busy, per)
            }
            "unix" => {
                let (c, s) = unix_pair();
                floor(c, s, busy, per)
            }
            "shm" => {
                let (c, s) = shm_ring_pair();
                floor(c, s, busy, per)
            }
            _ => {
                let (c, s) = ring_pair();
                floor(c, s, busy, per)
            }
        };
        let ep = |tag: &str| match transport {
            "tcp" => "tcp://127.0.0.1:0".to_owned(),
            "unix" => unix_endpoint(tag),
            "shm" => format!("shm://netron-bench-{}-{tag}", std::process::id()),
            _ => format!("inproc://netron-bench-{}-{tag}", std::process::id()),
        };
        let (busy_floor, blocking_floor) = if matches!(transport, "inproc" | "shm") {
            ("busy-poll ring", "blocking ring")
        } else {
            ("busy-poll socket", "blocking socket")
        };
        let auto = DriverChoice::Auto;
        let mut rows = vec![
            ("busy-poll", IdlePolicy::BusyPoll, true, busy_floor, auto),
            ("adaptive (spin 50 µs)", spin, false, blocking_floor, auto),
            ("adaptive (spin 0: park)", park, false, blocking_floor, auto),
        ];
        if transport != "inproc" {
            // The epoll driver (for hosts that block io_uring) on the same floors.
            let epoll = DriverChoice::Epoll;
            rows.push((
                "busy-poll, epoll",
                IdlePolicy::BusyPoll,
                true,
                busy_floor,
                epoll,
            ));
            rows.push((
                "adaptive (spin 0: park), epoll",
                park,
                false,
                blocking_floor,
                epoll,
            ));
        }
        for (i, (mode, idle, busy_floor, fl_name, driver)) in rows.into_iter().enumerate() {
            let cfg = RuntimeConfig::default().with_idle(idle).with_driver(driver);
            let (mut fl, mut s) = (Samples::with_capacity(n), Samples::with_capacity(n));
            let mut rounds = Vec::with_capacity(REPS);
            for _ in 0..REPS {
                let mut f = floor_of(busy_floor);
                let mut m = netron_rtt(&ep(&format!("rtt{i}")), cfg.clone(), per);
                rounds.push((m.percentile(50.0), f.percentile(50.0)));
                fl.append(f);
                s.append(m);
            }
            let (f50, f99) = (fl.percentile(50.0), fl.percentile(99.0));
            let (p50, p99, p999) = (s.percentile(50.0), s.percentile(99.0), s.percentile(99.9));
            let (p50_ratio, range) = match PairedRatio::of(&rounds) {
                Some(r) => (
                    format!("{:.2}x", r.median),
                    format!("{:.2}-{:.2}x", r.min, r.max),
                ),
                None => ("-".to_owned(), "-".to_owned()),
            };
            t.row(&[
                format!("{transport} {mode}"),
                us(p50),
                us(p99),
                us(p999),
                us(f50),
                p50_ratio,
                range,
                ratio(p99 as f64, f99 as f64),
                fl_name.to_owned(),
            ]);
        }
    }
    t.note(format!("{n} round trips per row in {REPS} alternating floor / Netron runs of {per} (each after {} warm-up round trips); floors: std sockets ping-pong (tcp, unix) and netron-shm heap rings with eventfd doorbells, one record per message (inproc), the same over a netron-shm segment made in this process (shm: client and server are two engines of one process, the segment and rendezvous are real), same sizes and pinning", per / 10));
    t.note("percentiles pool the runs; the p50 ratio is the median of the per-round ratios (floor and Netron run back to back, so both saw the same host state), with their range");
    t.note(
        "targets: busy-poll p50 <= 1.2x the busy-poll floor (io_uring and epoll); adaptive <= 1.1x the blocking floor",
    );
    t.note(format!("rows without a driver run on {} (RuntimeConfig::driver auto; NETRON_DRIVER overrides); `, epoll` rows force the readiness driver", default_driver()));
    t
}

/// The driver a default core gets on this host.
fn default_driver() -> String {
    Core::new(RuntimeConfig::default()).map_or_else(
        |e| format!("(no core: {e})"),
        |c| c.driver().kind.to_string(),
    )
}

// ---- throughput ------------------------------------------------------------------------------

fn throughput(window: Duration) -> Table {
    let mut t = Table::new(
        "engine: pipelined unary calls on one connection, tcp (io_uring, epoll) and shm:// (64-byte payloads, busy-poll)",
        &[
            "in flight",
            "calls/s",
            "frames/write (client)",
            "frames/write (server)",
            "submits/call",
            "direct recv/call",
            "direct send/call",
            "target",
        ],
    );
    let mut uring_rate = [0.0f64; 3];
    let runs = [
        ("tcp", DriverChoice::Auto),
        ("tcp", DriverChoice::Epoll),
        ("shm", DriverChoice::Auto),
    ]
    .into_iter()
    .flat_map(|(transport, d)| {
        [1usize, 16, 256]
            .into_iter()
            .enumerate()
            .map(move |(k, n)| (transport, d, k, n))
    });
    for (transport, driver, k, depth) in runs {
        let cfg = RuntimeConfig::default()
            .with_idle(IdlePolicy::BusyPoll)
            .with_driver(driver);
        let listen = if transport == "shm" {
            format!(
                "shm://netron-bench-pipelined-{}-{depth}",
                std::process::id()
            )
        } else {
            "tcp://127.0.0.1:0".to_owned()
        };
        let engine = server_with(&listen, cfg.clone());
        let ep = engine.endpoints()[0].clone();
        let mut core = Core::new(cfg).expect("core");
        let conn = core.connect(&ep, Duration::from_secs(5)).expect("connect");
        let mut slots: Vec<CallSlot> = (0..depth).map(|_| CallSlot::new()).collect();
        let msg = [0x5au8; SIZE];
        let mut run = |core: &mut Core, dur: Duration| -> u64 {
            pipelined_calls(core, conn, (SERVICE, METHOD, &msg, None), &mut slots, dur)
        };
        run(&mut core, window / 4); // warm-up
        let before: CoreStats = core.stats().clone();
        let server_before = engine.total_stats();
        let t0 = Instant::now();
        let calls = run(&mut core, window);
        let secs = t0.elapsed().as_secs_f64();
        let after = core.stats().clone();
        let server_after = engine.total_stats();
        let fpw = |a: &CoreStats, b: &CoreStats| {
            let w = a.driver().writes - b.driver().writes;
            if w == 0 {
                0.0
            } else {
                (a.frames_out() - b.frames_out()) as f64 / w as f64
            }
        };
        let both = |f: fn(&CoreStats) -> u64| {
            (f(&after) - f(&before)) + (f(&server_after) - f(&server_before))
        };
        let per_call = |n: u64| format!("{:.2}", n as f64 / calls.max(1) as f64);
        let submits = both(|s| s.driver().submits);
        let rate = calls as f64 / secs;
        let epoll = driver == DriverChoice::Epoll;
        let shm = transport == "shm";
        let verdict = |met: bool| if met { "met" } else { "NOT met" };
        let target = match (shm, epoll, depth) {
            (true, _, 256) => format!(
                "{} tcp's (>= 2x: {})",
                ratio(rate, uring_rate[k]),
                verdict(rate >= 2.0 * uring_rate[k])
            ),
            (true, _, _) => format!("{} tcp's", ratio(rate, uring_rate[k])),
            (false, false, 256) => format!(">= 1,000,000 calls/s: {}", verdict(rate >= 1e6)),
            (false, false, _) => String::new(),
            (false, true, 256) => format!(
                "{} io_uring's (>= 0.7x: {})",
                ratio(rate, uring_rate[k]),
                verdict(rate >= 0.7 * uring_rate[k])
            ),
            (false, true, _) => format!("{} io_uring's", ratio(rate, uring_rate[k])),
        };
        if !epoll && !shm {
            uring_rate[k] = rate;
        }
        t.row(&[
            match (shm, epoll) {
                (true, _) => format!("{depth}, shm"),
                (false, true) => format!("{depth}, epoll"),
                (false, false) => depth.to_string(),
            },
            format!("{rate:.0}"),
            format!("{:.1}", fpw(&after, &before)),
            format!("{:.1}", fpw(&server_after, &server_before)),
            per_call(submits),
            per_call(both(|s| s.driver().direct_recvs)),
            per_call(both(|s| s.driver().direct_sends)),
            target,
        ]);
        core.close(conn);
        drop(core);
        engine.shutdown(Duration::from_millis(200));
    }
    t.note("client: a core driven by this thread; server: one engine core; both busy-poll; every count is client + server, per call");
    t.note("busy-poll cores read and write hot connections directly (RuntimeConfig::direct_recv): direct recv/call counts the non-blocking recv(2) of every loop turn, most of them empty polls, like the busy-poll socket floor's; submits/call counts io_uring_enter calls (epoll_wait calls on the epoll driver, where each send is a send(2) of its own)");
    t
}

// ---- zero-copy sends -------------------------------------------------------------------------

/// Echo of large incompressible payloads with plain `Send` vs `SendZc` (both sides), to pick
/// the zero-copy threshold.
fn zero_copy(window: Duration) -> Table {
    let mut t = Table::new(
        "engine: large echo over TCP loopback, Send vs SendZc (busy-poll, 1 call in flight)",
        &["payload", "Send GB/s", "SendZc GB/s", "SendZc / Send"],
    );
    for size in [16usize << 10, 64 << 10, 256 << 10, 1 << 20] {
        let payload = noise(size);
        let mut rates = [0f64; 2];
        for (i, zc) in [None, Some(0)].into_iter().enumerate() {
            let cfg = RuntimeConfig::default()
                .with_idle(IdlePolicy::BusyPoll)
                .with_send_zc_threshold(zc);
            let engine = Engine::builder()
                .cores(1)
                .cpus(&[1])
                .config(cfg.clone())
                .service(service())
                .listen("tcp://127.0.0.1:0")
                .build()
                .expect("server");
            let mut core = Core::new(cfg).expect("core");
            let conn = core
                .connect(&engine.endpoints()[0], Duration::from_secs(5))
                .expect("connect");
            let mut slot = CallSlot::new();
            for _ in 0..10 {
                core.call(conn, SERVICE, METHOD, &payload, None, &mut slot)
                    .expect("warm-up");
            }
            let (t0, mut n) = (Instant::now(), 0u64);
            while t0.elapsed() < window {
                core.call(conn, SERVICE, METHOD, &payload, None, &mut slot)
                    .expect("call");
                n += 1;
            }
            // Both directions carry the payload.
            rates[i] = (2 * n * size as u64) as f64 / t0.elapsed().as_secs_f64() / 1e9;
            core.close(conn);
            drop(core);
            engine.shutdown(Duration::from_millis(200));
        }
        t.row(&[
            format!("{} KiB", size >> 10),
            format!("{:.2}", rates[0]),
            format!("{:.2}", rates[1]),
            ratio(rates[1], rates[0]),
        ]);
    }
    t.note("on loopback the kernel copies zero-copy sends anyway, so SendZc only adds its notification; the default threshold is therefore off (RuntimeConfig::send_zc_threshold), to be enabled for real NICs");
    t
}

// ---- memory ----------------------------------------------------------------------------------

/// Resident set size, read through an already open `/proc/self/statm` (with thousands of
/// sockets open, opening a file may fail for lack of descriptors).
fn rss_bytes(statm: &std::fs::File) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 128];
    let n = statm.read_at(&mut buf, 0).unwrap_or(0);
    let text = std::str::from_utf8(&buf[..n]).unwrap_or("");
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page
}

fn raise_fd_limit(want: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `r`, a valid rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    if r.rlim_cur < want {
        r.rlim_cur = want.min(r.rlim_max.max(want));
        r.rlim_max = r.rlim_max.max(want);
        // SAFETY: setrlimit reads a valid rlimit; failure leaves the old limit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    }
}

fn memory(conns: usize) -> Table {
    let mut t = Table::new(
        "engine: memory per idle connection (server side, after the handshake)",
        &["connections", "RSS delta", "per connection", "target"],
    );
    raise_fd_limit(4 * conns as u64 + 1024);
    let engine = server(
        "tcp://127.0.0.1:0",
        IdlePolicy::Adaptive {
            spin: Duration::from_micros(50),
        },
    );
    let addr = match &engine.endpoints()[0] {
        Endpoint::Tcp(a) => *a,
        _ => unreachable!("tcp endpoint"),
    };
    let mut hello = Vec::new();
    netron_codec::handshake::ClientHandshake::new(Default::default())
        .start(&mut hello)
        .expect("hello");
    // Give memory freed by earlier sections back to the OS, so the delta below counts new
    // pages rather than reused ones.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let statm = std::fs::File::open("/proc/self/statm").expect("statm");
    let before = rss_bytes(&statm);
    let mut socks = Vec::with_capacity(conns);
    let mut buf = [0u8; 512];
    for _ in 0..conns {
        let Ok(mut s) = TcpStream::connect(addr) else {
            break;
        };
        if s.write_all(&hello).is_err() || s.read(&mut buf).unwrap_or(0) == 0 {
            break;
        }
        socks.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_bytes(&statm);
    let opened = socks.len();
    let delta = after.saturating_sub(before);
    t.row(&[
        opened.to_string(),
        format!("{:.1} MiB", delta as f64 / (1 << 20) as f64),
        format!("{:.1} KiB", delta as f64 / opened.max(1) as f64 / 1024.0),
        "<= 16 KiB".into(),
    ]);
    t.note(format!(
        "RSS of this process before {:.1} MiB, after {:.1} MiB (server core + idle raw client sockets, which hold no user memory); receive buffers come from a shared ring, so an idle connection holds none",
        before as f64 / (1 << 20) as f64,
        after as f64 / (1 << 20) as f64
    ));
    drop(socks);
    engine.shutdown(Duration::from_millis(200));
    t
}

/// Keeps `slots.len()` calls of `call` (service, method, payload, deadline) in flight on
/// `conn` for `dur`, restarting each as it completes, then lets the last ones land (at most
/// 2 s). Returns the calls completed within `dur`. Shared by the pipelined rows here and by
/// the Netron rows of `compare`.
pub(crate) fn pipelined_calls(
    core: &mut Core,
    conn: ConnId,
    call: (&[u8], &[u8], &[u8], Option<Duration>),
    slots: &mut [CallSlot],
    dur: Duration,
) -> u64 {
    let (service, method, msg, deadline) = call;
    for s in slots.iter_mut() {
        core.start(conn, service, method, msg, deadline, s);
    }
    let mut done = 0u64;
    let end = Instant::now() + dur;
    // Slots are scanned only once the oldest call is done (a server answers the calls of
    // one connection in order here), and every 64th turn whatever happened: a scan of every
    // slot after every turn was a fifth of the client's samples at 256 in flight over shm
    // (perf, cpu-clock), the harness's cost, not the engine's.
    let mut oldest = 0usize;
    let mut turns = 0u32;
    while Instant::now() < end {
        core.run_once().expect("run");
        turns = turns.wrapping_add(1);
        if !slots[oldest].is_done() && turns % 64 != 0 {
            continue;
        }
        // Circularly from the oldest: the done calls are restarted in the order they were
        // started, and the first one still waiting is the oldest from now on.
        let n = slots.len();
        let mut waiting = None;
        for k in 0..n {
            let i = (oldest + k) % n;
            if slots[i].is_done() {
                done += 1;
                core.start(conn, service, method, msg, deadline, &mut slots[i]);
            } else if waiting.is_none() {
                waiting = Some(i);
            }
        }
        oldest = waiting.unwrap_or(oldest);
    }
    // Let the last calls land before the next phase.
    let _ = core.run_until(Duration::from_secs(2), |_| {
        slots.iter().all(|s| s.is_done())
    });
    done
}
