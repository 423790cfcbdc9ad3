//! Bad input against a live server from raw sockets: each misbehaving peer is cut off with a
//! counter incremented, and a well-behaved client on the same core is served throughout.
//!
//! The two main scenarios run twice: on an adaptive core (every byte arrives through the
//! io_uring receive) and on a busy-poll core, where a connection is hot after its first bytes
//! and the bad frames arrive through direct `recv` calls (`DirectRecv`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use netron_codec::{FrameIter, FrameKind, Limits};
use netron_engine::{CoreConfig, Engine, IdlePolicy, StatusCode};
use netron_tests::{RawPeer, calc, transports};

const DL: Option<Duration> = Some(Duration::from_secs(5));

/// The adaptive policy of these tests (short spin: the core parks often).
const ADAPTIVE: IdlePolicy = IdlePolicy::Adaptive {
    spin: Duration::from_micros(20),
};

/// One core, so every bad peer shares the core with the good client.
fn engine(idle: IdlePolicy, listen: &str) -> (Engine, String) {
    let cfg = CoreConfig::default()
        .with_idle(idle)
        .with_stall_timeout(Duration::from_millis(300))
        .with_keepalive(Duration::from_millis(200), Duration::from_millis(300));
    engine_with(cfg, listen)
}

/// A one-core engine serving `calc` on a fresh TCP port, and its `host:port`.
fn engine_with(cfg: CoreConfig, listen: &str) -> (Engine, String) {
    let e = Engine::builder()
        .cores(1)
        .config(cfg)
        .service(calc())
        .listen(listen)
        .build()
        .unwrap();
    let addr = e.endpoints()[0].to_string();
    (e, addr)
}

fn wait_for(e: &Engine, label: &str) -> u64 {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let n = e.total_stats().errors_of(label);
        if n > 0 || Instant::now() > end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The frames the server sent before closing.
fn frames(bytes: &[u8]) -> Vec<(FrameKind, u32)> {
    FrameIter::new(bytes, &Limits::default())
        .filter_map(Result::ok)
        .map(|f| (f.kind(), f.id()))
        .collect()
}

#[test]
fn misbehaving_peers_are_cut_off_and_others_lose_nothing() {
    misbehaving_peers(ADAPTIVE);
}

#[test]
fn misbehaving_peers_on_hot_connections_are_cut_off() {
    misbehaving_peers(IdlePolicy::BusyPoll);
}

/// Runs over every transport.
fn misbehaving_peers(idle: IdlePolicy) {
    for listen in transports("bad") {
        misbehaving_peers_on(idle, &listen);
    }
}

fn misbehaving_peers_on(idle: IdlePolicy, listen: &str) {
    let (e, addr) = engine(idle, listen);
    let good = e.client().connect(&addr).unwrap();
    let check_good = || {
        assert_eq!(
            good.call("calc@1.2.0", "add", &[20u8, 22][..], DL).unwrap(),
            [42]
        )
    };
    check_good();

    // 1. Garbage instead of the preface: closed without a reply.
    let mut p = RawPeer::connect(&addr);
    p.stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(p.read_to_close().unwrap().is_empty());
    assert_eq!(wait_for(&e, "bad_preface"), 1);
    check_good();

    // 2. A frame header claiming 4 GiB after a good handshake: Error(0) then close.
    let mut p = RawPeer::handshake(&addr);
    let mut h = vec![0xff, 0xff, 0xff, 0xff, FrameKind::Request as u8, 0, 0, 0];
    h.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    p.stream.write_all(&h).unwrap();
    let got = p.read_to_close().unwrap();
    assert_eq!(frames(&got), vec![(FrameKind::Error, 0)]);
    assert_eq!(wait_for(&e, "frame_too_large"), 1);
    check_good();

    // 3. An unknown frame kind.
    let mut p = RawPeer::handshake(&addr);
    p.stream
        .write_all(&[16, 0, 0, 0, 0x42, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(
        frames(&p.read_to_close().unwrap()),
        vec![(FrameKind::Error, 0)]
    );
    assert_eq!(wait_for(&e, "unknown_kind"), 1);
    check_good();

    // 4. A truncated frame, then the peer closes: the server cleans up quietly.
    let mut p = RawPeer::handshake(&addr);
    p.stream
        .write_all(&[200, 0, 0, 0, FrameKind::Request as u8, 0, 0, 0, 1, 0, 0, 0])
        .unwrap();
    drop(p);
    check_good();

    // 5. Slowloris: half a frame, then silence. Closed by the stall timeout.
    let mut p = RawPeer::handshake(&addr);
    p.stream
        .write_all(&[100, 0, 0, 0, FrameKind::Request as u8])
        .unwrap();
    // The stall timeout is 300 ms and the peer's read timeout 10 s: the read ends because the
    // server closed (Ok), or fails with a timeout and the test fails. At most a keepalive Ping
    // (200 ms) went out before.
    let sent = p
        .read_to_close()
        .expect("the server closes a stalled connection");
    // Keepalive Pings, then the Error frame that says why the server closes.
    let kinds = frames(&sent);
    assert_eq!(kinds.last(), Some(&(FrameKind::Error, 0)), "{kinds:?}");
    assert!(
        kinds[..kinds.len() - 1]
            .iter()
            .all(|(k, _)| *k == FrameKind::Ping),
        "{kinds:?}"
    );
    assert!(wait_for(&e, "stalled") >= 1);
    check_good();

    // 6. A peer that completes the handshake and then never answers pings: dead-peer timeout.
    let mut p = RawPeer::handshake(&addr);
    let got = p.read_to_close().unwrap();
    assert!(
        frames(&got).iter().any(|(k, _)| *k == FrameKind::Ping),
        "server pinged the idle peer"
    );
    assert!(wait_for(&e, "dead_peer") >= 1);
    check_good();

    // 7. Bad flags on a Request: a protocol error.
    let mut p = RawPeer::handshake(&addr);
    p.stream
        .write_all(&[
            16,
            0,
            0,
            0,
            FrameKind::Request as u8,
            0x80,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ])
        .unwrap();
    assert_eq!(
        frames(&p.read_to_close().unwrap()),
        vec![(FrameKind::Error, 0)]
    );
    assert_eq!(wait_for(&e, "bad_flags"), 1);

    check_good();
    let t = e.total_stats();
    assert!(t.closed >= 7, "{t:?}");
    if idle == IdlePolicy::BusyPoll {
        // The bad frames came through direct reads (each peer got hot on its first bytes).
        assert!(t.hot_promotions >= 7 && t.direct_recvs > 0, "{t:?}");
    }
    e.shutdown(Duration::from_secs(1));
}

#[test]
fn a_flood_without_reading_is_cut_off() {
    flood_without_reading(IdlePolicy::default());
}

#[test]
fn a_flood_on_a_hot_connection_is_cut_off() {
    flood_without_reading(IdlePolicy::BusyPoll);
}

/// Runs over every transport.
fn flood_without_reading(idle: IdlePolicy) {
    for listen in transports("flood") {
        flood_without_reading_on(idle, &listen);
    }
}

fn flood_without_reading_on(idle: IdlePolicy, listen: &str) {
    // The peer sends requests and never reads the replies: the server's backlog is bounded.
    let mut cfg = CoreConfig::default()
        .with_idle(idle)
        .with_stall_timeout(Duration::from_millis(300))
        .with_max_backlog_bytes(256 << 10);
    // The backlog cap must hold one largest frame plus a batch (checked by build()).
    cfg.server.limits = Limits::default().with_max_frame_size(64 << 10);
    cfg.client.limits = cfg.server.limits;
    let cut = |e: &Engine| {
        let s = e.total_stats();
        s.errors_of("slow_consumer") + s.errors_of("write_stalled")
    };
    let (e, addr) = engine_with(cfg, listen);
    let good = e.client().connect(&addr).unwrap();
    let mut p = RawPeer::handshake(&addr);
    // Non-blocking writes, so the flood stops (instead of hanging) once the server stops reading.
    let _ = p.stream.set_nonblocking(true);
    let mut batch =
        netron_codec::BatchEncoder::new(Limits::default().with_max_batch_bytes(1 << 20));
    let mut enc = netron_codec::hpack::HeaderEncoder::new(4096);
    let payload = vec![0u8; 16 << 10];
    let mut sent = 0usize;
    let end = Instant::now() + Duration::from_secs(20);
    'flood: while Instant::now() < end && cut(&e) == 0 {
        batch.clear();
        for id in 0..8u32 {
            batch
                .request(2 * id + 1, None)
                .unwrap()
                .headers(
                    &mut enc,
                    &[
                        netron_codec::hpack::Header::service(b"calc@1.2.0"),
                        netron_codec::hpack::Header::method(b"echo"),
                    ],
                )
                .unwrap()
                .payload(&payload)
                .finish()
                .unwrap();
        }
        let mut buf = batch.as_slice();
        while !buf.is_empty() {
            match p.stream.write(buf) {
                Ok(n) => {
                    buf = &buf[n..];
                    sent += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(_) => break 'flood,
            }
        }
    }
    assert!(
        cut(&e) >= 1,
        "sent {sent} bytes without being cut off: {:?}",
        e.total_stats()
    );
    assert_eq!(
        good.call("calc@1.2.0", "add", &[1u8, 2][..], DL).unwrap(),
        [3]
    );
    e.shutdown(Duration::from_secs(1));
}

#[test]
fn a_server_that_vanishes_mid_call_fails_the_call() {
    // A fake server: completes the handshake, reads the request, then closes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut hs = netron_codec::handshake::ServerHandshake::new(Default::default());
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).unwrap();
            buf.extend_from_slice(&chunk[..n]);
            if let Ok(netron_codec::handshake::ServerProgress::Offer { offer, .. }) =
                hs.handle(&buf)
            {
                let mut out = Vec::new();
                hs.accept(&offer, &mut out);
                s.write_all(&out).unwrap();
                break;
            }
        }
        let _ = s.read(&mut chunk); // the request
        drop(s);
    });
    let client_engine = Engine::builder().cores(1).build().unwrap();
    let ch = client_engine
        .client()
        .connect(&format!("tcp://{addr}"))
        .unwrap();
    let err = ch.call("calc@1.2.0", "add", &[1u8][..], None).unwrap_err();
    assert_eq!(err.code, StatusCode::Unavailable, "{err}");
    fake.join().unwrap();
    // The connection is gone; further calls fail fast instead of hanging.
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[1u8][..], None)
            .unwrap_err()
            .code,
        StatusCode::Unavailable
    );
    client_engine.shutdown(Duration::from_secs(1));
}

#[test]
fn connection_limit_refuses_extra_connections() {
    let cfg = CoreConfig::default().with_max_connections(2);
    let (e, addr) = engine_with(cfg, "tcp://127.0.0.1:0");
    let _a = RawPeer::handshake(&addr);
    let _b = RawPeer::handshake(&addr);
    let mut c = TcpStream::connect(addr.trim_start_matches("tcp://")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        c.read(&mut buf).unwrap_or(0),
        0,
        "third connection closed at once"
    );
    assert_eq!(e.total_stats().refused, 1);
    e.shutdown(Duration::from_secs(1));
}
