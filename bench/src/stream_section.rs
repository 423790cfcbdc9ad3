//! Stream throughput (issue 16): a server stream of 64-byte and 64 KiB chunks read by a
//! caller-driven client core ([`Core::recv_chunk`], chunks borrowed in place), against the raw
//! socket throughput floor of the same transport in the same run (one thread writing the same
//! chunk sizes, one reading), and 64-byte chunks against unary pipelined calls at 256 in
//! flight on the same transport.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use netron_engine::{
    Bytes, CallSlot, Core, CoreConfig, Endpoint, Engine, IdlePolicy, ProtocolConfig, RuntimeConfig,
    Service,
};

use crate::Options;
use crate::engine_section::{METHOD, SERVICE, noise, pipelined_calls, service, tcp_pair};
use crate::stats::{Samples, us};
use crate::table::Table;

/// A service with a server stream: the request is the chunk size (u32 LE) and the chunk count
/// (u32 LE); the handler sends that many shared chunks.
pub(crate) fn stream_service() -> Service {
    // `echo` is safe to run twice: served from QUIC 0-RTT (the quic section's connect table).
    let echo = std::str::from_utf8(crate::engine_section::METHOD).unwrap_or("echo");
    service()
        .idempotent(echo)
        .server_stream("flood", |_, req, mut tx| async move {
            let word = |i: usize| {
                req.get(i..i + 4)
                    .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
            };
            let (size, n) = (word(0) as usize, word(4));
            // Incompressible, so that negotiated compression (on by default above 1 KiB) does not
            // turn the row into a compression measurement against an uncompressed floor.
            let chunk = Bytes::from(noise(size));
            for _ in 0..n {
                tx.send(chunk.clone()).await?;
            }
            Ok(())
        })
}

/// Raw floor: one thread writes `total` bytes in `size` chunks, this one reads them.
/// Returns bytes per second.
fn raw_floor<S: Read + Write + Send + 'static>(
    mut w: S,
    mut r: S,
    size: usize,
    total: usize,
) -> f64 {
    let t = Instant::now();
    let writer = std::thread::spawn(move || {
        let chunk = vec![0x5au8; size];
        let mut left = total;
        while left > 0 {
            let n = size.min(left);
            w.write_all(&chunk[..n]).expect("write");
            left -= n;
        }
    });
    let mut buf = vec![0u8; size.max(64 << 10)];
    let mut got = 0;
    while got < total {
        let n = r.read(&mut buf).expect("read");
        assert!(n > 0, "the writer closed early");
        got += n;
    }
    writer.join().expect("writer");
    total as f64 / t.elapsed().as_secs_f64()
}

/// Netron: a server stream of `n` chunks of `size` bytes read on a caller-driven core.
/// Returns chunks per second.
fn netron_stream(endpoint: &str, size: usize, n: u32, window: Option<u32>) -> f64 {
    let mut protocol = ProtocolConfig::default();
    if let Some(w) = window {
        let mut server = protocol.server().clone();
        server.initial_stream_window = w;
        protocol = protocol.with_server(server);
    }
    let server = Engine::builder()
        .cores(1)
        .cpus(&[1])
        .config(CoreConfig::new(
            RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll),
            protocol,
        ))
        .service(stream_service())
        .listen(endpoint)
        .build()
        .expect("netron server");
    let ep: Endpoint = server.endpoints()[0].clone();
    let mut core =
        Core::new(RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll)).expect("client core");
    let conn = core.connect(&ep, Duration::from_secs(5)).expect("connect");
    let mut req = (size as u32).to_le_bytes().to_vec();
    req.extend_from_slice(&n.to_le_bytes());
    let t = Instant::now();
    let s = core
        .open_stream(conn, SERVICE, b"flood", Some(&req), true, None)
        .expect("open");
    let mut got = 0u32;
    while let Some(len) = core.recv_chunk(&s, |c| c.len()).expect("chunk") {
        debug_assert_eq!(len, size);
        got += 1;
    }
    let rate = got as f64 / t.elapsed().as_secs_f64();
    assert_eq!(got, n);
    core.close(conn);
    drop(core);
    server.shutdown(Duration::from_millis(200));
    rate
}

/// Unary calls per second with 256 in flight (the 64-byte stream target's yardstick).
fn pipelined(endpoint: &str, dur: Duration) -> f64 {
    let server = Engine::builder()
        .cores(1)
        .cpus(&[1])
        .config(RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll))
        .service(service())
        .listen(endpoint)
        .build()
        .expect("netron server");
    let ep: Endpoint = server.endpoints()[0].clone();
    let mut core =
        Core::new(RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll)).expect("client core");
    let conn = core.connect(&ep, Duration::from_secs(5)).expect("connect");
    let mut slots: Vec<CallSlot> = (0..256).map(|_| CallSlot::new()).collect();
    let msg = [0x5au8; 64];
    let done = pipelined_calls(
        &mut core,
        conn,
        (SERVICE, METHOD, &msg, None),
        &mut slots,
        dur,
    );
    core.close(conn);
    drop(core);
    server.shutdown(Duration::from_millis(200));
    done as f64 / dur.as_secs_f64()
}

/// Mixed floor: a raw socket pair where the server side writes 64 KiB bulk frames
/// continuously and answers each 64-byte ping (length-prefixed frames on the same socket);
/// returns the ping round trips in ns.
fn mixed_floor(n: usize) -> Samples {
    let (mut c, s) = tcp_pair();
    let _ = c.set_nodelay(true);
    let _ = s.set_nodelay(true);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        let mut s = s;
        s.set_nonblocking(true).expect("nonblocking");
        let mut bulk = vec![0u8; 4 + (64 << 10)];
        bulk[..4].copy_from_slice(&((64u32 << 10).to_le_bytes()));
        let mut pong = [0u8; 4 + 64];
        pong[..4].copy_from_slice(&64u32.to_le_bytes());
        let mut inbuf = [0u8; 64];
        let mut have = 0;
        let write_all = |s: &mut std::net::TcpStream, mut b: &[u8]| {
            while !b.is_empty() {
                match s.write(b) {
                    Ok(n) => b = &b[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::yield_now()
                    }
                    Err(_) => return false,
                }
            }
            true
        };
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match s.read(&mut inbuf[have..]) {
                Ok(0) => return,
                Ok(k) => have += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
            if have == 64 {
                have = 0;
                if !write_all(&mut s, &pong) {
                    return;
                }
            }
            if !write_all(&mut s, &bulk) {
                return;
            }
        }
    });
    let mut samples = Samples::with_capacity(n);
    let ping = [0x5au8; 64];
    let mut buf = vec![0u8; 64 << 10];
    for i in 0..n + n / 10 {
        let t = Instant::now();
        c.write_all(&ping).expect("ping");
        // Read frames until the pong (64-byte frame), discarding bulk frames.
        loop {
            let mut len = [0u8; 4];
            c.read_exact(&mut len).expect("len");
            let len = u32::from_le_bytes(len) as usize;
            c.read_exact(&mut buf[..len]).expect("frame");
            if len == 64 {
                break;
            }
        }
        if i >= n / 10 {
            samples.push(t.elapsed().as_nanos() as u64);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(c);
    let _ = server.join();
    samples
}

/// Netron: unary round trips on a connection that also carries a server stream of 64 KiB
/// chunks (read between calls); returns the call round trips in ns.
fn netron_mixed(n: usize) -> Samples {
    let server = Engine::builder()
        .cores(1)
        .cpus(&[1])
        .config(RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll))
        .service(stream_service())
        .listen("tcp://127.0.0.1:0")
        .build()
        .expect("netron server");
    let ep: Endpoint = server.endpoints()[0].clone();
    let mut core =
        Core::new(RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll)).expect("client core");
    let conn = core.connect(&ep, Duration::from_secs(5)).expect("connect");
    let mut req = (64u32 << 10).to_le_bytes().to_vec();
    req.extend_from_slice(&u32::MAX.to_le_bytes());
    let stream = core
        .open_stream(conn, SERVICE, b"flood", Some(&req), true, None)
        .expect("open");
    let mut slot = CallSlot::new();
    let msg = [0x5au8; 64];
    let mut samples = Samples::with_capacity(n);
    for i in 0..n + n / 10 {
        // Keep the bulk stream flowing: take one chunk between calls.
        core.recv_chunk(&stream, |c| c.len()).expect("chunk");
        let t = Instant::now();
        core.call(conn, SERVICE, METHOD, &msg, None, &mut slot)
            .expect("call");
        if i >= n / 10 {
            samples.push(t.elapsed().as_nanos() as u64);
        }
    }
    core.stream_cancel(stream);
    core.close(conn);
    drop(core);
    server.shutdown(Duration::from_millis(200));
    samples
}

/// Unary p99 while a bulk stream saturates the same connection, against the mixed floor.
fn mixed(n: usize) -> Table {
    let mut t = Table::new(
        "streams: unary round trip under a bulk stream (tcp) vs raw mixed floor",
        &["what", "p50 us", "p99 us"],
    );
    let mut floor = mixed_floor(n);
    let mut net = netron_mixed(n);
    let (f50, f99) = (floor.percentile(50.0), floor.percentile(99.0));
    let (n50, n99) = (net.percentile(50.0), net.percentile(99.0));
    t.row(&[
        "raw ping-pong beside bulk writes".to_owned(),
        us(f50),
        us(f99),
    ]);
    t.row(&[
        "netron unary call beside a 64 KiB-chunk stream".to_owned(),
        us(n50),
        us(n99),
    ]);
    t.note(format!(
        "p99 ratio {:.2}x the floor (target <= 1.5x)",
        n99 as f64 / f99.max(1) as f64
    ));
    t.note(
        "floor: one socket; the server side writes 64 KiB frames continuously and answers each \
         64-byte ping between them; netron: the client reads one stream chunk between calls",
    );
    t
}

/// Runs the stream measurements.
pub fn run(opts: &Options) -> Vec<Table> {
    let mut t = Table::new(
        "streams: server stream read on a caller-driven core vs raw socket floor",
        &[
            "transport",
            "chunk",
            "floor MB/s",
            "netron chunks/s",
            "netron MB/s",
            "vs floor",
            "target",
        ],
    );
    let big_total: usize = if opts.quick { 256 << 20 } else { 1 << 30 };
    let small_n: u32 = if opts.quick { 500_000 } else { 4_000_000 };
    let dur = if opts.quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    };
    for transport in ["tcp", "unix"] {
        let endpoint = |tag: &str| match transport {
            "tcp" => "tcp://127.0.0.1:0".to_owned(),
            _ => format!("unix:///tmp/netron-bench-{}-{tag}.sock", std::process::id()),
        };
        for (size, label, window) in [
            (64usize, "64 B", None),
            (64 << 10, "64 KiB", None),
            (64 << 10, "64 KiB, 4 MiB window", Some(4u32 << 20)),
        ] {
            let n = if size == 64 {
                small_n
            } else {
                (big_total / size) as u32
            };
            let total = n as usize * size;
            let floor = match transport {
                "tcp" => {
                    let (a, b) = tcp_pair();
                    raw_floor(a, b, size, total)
                }
                _ => {
                    let (a, b) = UnixStream::pair().expect("socketpair");
                    raw_floor(a, b, size, total)
                }
            };
            let rate = netron_stream(&endpoint(&format!("stream-{size}")), size, n, window);
            let mbs = rate * size as f64 / 1e6;
            let ratio = mbs / (floor / 1e6);
            let target = if size == 64 {
                let calls = pipelined(&endpoint("pipelined"), dur);
                format!(
                    "{:.2}x unary pipelined ({:.0} calls/s; target >= 1.5x)",
                    rate / calls,
                    calls
                )
            } else {
                format!("{:.0}% of floor (target >= 70%)", ratio * 100.0)
            };
            t.row(&[
                transport.to_owned(),
                label.to_owned(),
                format!("{:.0}", floor / 1e6),
                format!("{rate:.0}"),
                format!("{mbs:.0}"),
                format!("{ratio:.2}x"),
                target,
            ]);
        }
    }
    t.note(
        "floor: one thread writes the same chunk sizes into a socket pair, one reads (same run)",
    );
    t.note(
        "netron: busy-poll server core (cpu 1) sending shared Bytes chunks; the client is a \
         caller-driven Core reading each chunk in place with Core::recv_chunk",
    );
    t.note(
        "the Channel (async halves) path copies each chunk into a reused buffer; not measured here",
    );
    vec![t, mixed(if opts.quick { 2_000 } else { 20_000 })]
}
