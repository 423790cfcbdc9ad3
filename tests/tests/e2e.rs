//! Unary RPC end to end over TCP and Unix sockets through the io_uring engine.

use std::time::Duration;

use netron_engine::{CallSlot, Core, CoreConfig, Endpoint, Engine, IdlePolicy, StatusCode};
use netron_tests::{calc, unix_path};

const DL: Option<Duration> = Some(Duration::from_secs(5));

fn engine(extra: &[&str]) -> Engine {
    let mut b = Engine::builder()
        .cores(2)
        .service(calc())
        .listen("tcp://127.0.0.1:0");
    for e in extra {
        b = b.listen(e);
    }
    b.build().expect("engine")
}

#[test]
fn unary_calls_over_tcp_and_unix() {
    let path = unix_path("unary");
    let e = engine(&[&format!("unix://{path}")]);
    let client = e.client();
    for ep in e.endpoints().iter().map(ToString::to_string) {
        let ch = client.connect(&ep).expect("connect");
        assert_eq!(
            ch.call("calc@1.2.0", "add", &[2u8, 3, 4][..], DL).unwrap(),
            [9]
        );
        let big = vec![7u8; 200_000];
        assert_eq!(
            ch.call("calc@1.2.0", "echo", big.clone(), DL).unwrap(),
            big,
            "{ep}: large payload"
        );
        assert_eq!(
            ch.call("calc@1.2.0", "fail", &b""[..], DL)
                .unwrap_err()
                .code,
            StatusCode::InvalidArgument
        );
        assert_eq!(
            ch.call("calc@9.0.0", "add", &b""[..], DL).unwrap_err().code,
            StatusCode::NotFound
        );
        assert_eq!(
            ch.call("calc@1.2.0", "nope", &b""[..], DL)
                .unwrap_err()
                .code,
            StatusCode::Unimplemented
        );
        // Still usable after errors.
        assert_eq!(ch.call("calc@1.2.0", "add", &[1u8][..], DL).unwrap(), [1]);
    }
    let t = e.total_stats();
    assert!(t.handshakes >= 4, "{t:?}");
    assert_eq!(t.errors_of("unknown_service"), 2);
    assert_eq!(t.errors_of("unknown_method"), 2);
    e.shutdown(Duration::from_secs(1));
}

#[test]
fn many_threads_many_connections() {
    let e = engine(&[]);
    let ep = e.endpoints()[0].to_string();
    let client = e.client();
    let shared = client.connect(&ep).unwrap();
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let (client, ep, shared) = (client.clone(), ep.clone(), shared.clone());
            std::thread::spawn(move || {
                let own = client.connect(&ep).unwrap();
                let add = own.method("calc@1.2.0", "add");
                for i in 0..300u32 {
                    let x = (i % 200) as u8;
                    assert_eq!(add.call(vec![x, t], DL).unwrap(), [x.wrapping_add(t)]);
                    assert_eq!(
                        shared.call("calc@1.2.0", "echo", vec![t; 3], DL).unwrap(),
                        [t; 3]
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = e.stats();
    assert_eq!(stats.len(), 2);
    // Connections were spread over both cores (9 server connections + 9 client ones).
    assert!(
        stats.iter().all(|s| s.accepted + s.handshakes > 0),
        "{stats:?}"
    );
    let t = e.total_stats();
    assert_eq!(t.calls_in, 8 * 300 * 2);
    // Every call is one Request out (client side) and one Response out (server side).
    assert!(t.frames_out >= 2 * t.calls_in, "{t:?}");
    e.shutdown(Duration::from_secs(1));
}

/// Frames that arrive together are answered together: 10 requests in one write get their
/// 10 replies in fewer than 10 writes.
#[test]
fn requests_that_arrive_together_are_answered_in_one_batch() {
    use netron_codec::hpack::{Header, HeaderEncoder};
    use netron_codec::{BatchEncoder, FrameIter, FrameKind, Limits};
    use std::io::{Read, Write};
    const N: u32 = 10;
    let (e, ep) = netron_tests::calc_server();
    let mut p = netron_tests::RawPeer::handshake(&ep);
    // The handshake's own write is complete once the Welcome arrived; wait for its count.
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while e.total_stats().writes == 0 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = e.total_stats();
    let mut batch = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(4096);
    let mut wire = Vec::new();
    for i in 0..N {
        batch.clear();
        batch
            .request(2 * i + 1, DL)
            .unwrap()
            .headers(
                &mut enc,
                &[Header::service(b"calc@1.2.0"), Header::method(b"add")],
            )
            .unwrap()
            .payload(&[i as u8, 1])
            .finish()
            .unwrap();
        wire.extend_from_slice(batch.as_slice());
    }
    p.stream.write_all(&wire).unwrap();
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    while replies.len() < N as usize {
        let mut chunk = [0u8; 4096];
        let n = p
            .stream
            .read(&mut chunk)
            .expect("replies before the timeout");
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let limits = Limits::default();
        let mut it = FrameIter::new(&buf, &limits);
        for f in it.by_ref() {
            let f = f.unwrap();
            assert_eq!(f.kind(), FrameKind::Response);
            replies.push((f.id(), f.payload().to_vec()));
        }
        let used = it.consumed();
        buf.drain(..used);
    }
    replies.sort();
    let want: Vec<_> = (0..N).map(|i| (2 * i + 1, vec![i as u8 + 1])).collect();
    assert_eq!(replies, want);
    // Writes are counted when they complete: wait (bounded) for all 10 frames to be counted.
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let mut after = e.total_stats();
    while after.frames_out - before.frames_out < N as u64 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
        after = e.total_stats();
    }
    let (frames, writes) = (
        after.frames_out - before.frames_out,
        after.writes - before.writes,
    );
    assert_eq!(frames, N as u64, "{after:?}");
    assert!(
        writes < N as u64,
        "{frames} replies took {writes} writes: not batched"
    );
    e.shutdown(Duration::from_secs(1));
}

#[test]
fn deadline_exceeded_and_the_caller_moves_on() {
    // Server and client on different engines, so the slow handler blocks only the server core.
    let server = Engine::builder()
        .cores(1)
        .service(calc())
        .listen("tcp://127.0.0.1:0")
        .build()
        .unwrap();
    let client_engine = Engine::builder().cores(1).build().unwrap();
    let ch = client_engine
        .client()
        .connect(&server.endpoints()[0].to_string())
        .unwrap();
    let err = ch
        .call(
            "calc@1.2.0",
            "sleep",
            &[200u8][..],
            Some(Duration::from_millis(20)),
        )
        .unwrap_err();
    assert_eq!(err.code, StatusCode::DeadlineExceeded);
    // The late reply is dropped; the connection keeps working.
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[1u8, 1][..], DL).unwrap(),
        [2]
    );
    let cs = client_engine.total_stats();
    assert_eq!(cs.deadline_exceeded, 1);
    server.shutdown(Duration::from_secs(1));
    client_engine.shutdown(Duration::from_secs(1));
}

#[test]
fn a_caller_driven_core_makes_calls() {
    let path = unix_path("embedded");
    let e = engine(&[&format!("unix://{path}")]);
    for ep in e.endpoints() {
        let mut core =
            Core::new(CoreConfig::default().with_idle(IdlePolicy::BusyPoll)).expect("core");
        let conn = core.connect(ep, Duration::from_secs(5)).expect("connect");
        let mut slot = CallSlot::new();
        for i in 0..1000u32 {
            let p = i.to_le_bytes();
            assert_eq!(
                core.call(conn, b"calc@1.2.0", b"echo", &p, DL, &mut slot)
                    .unwrap(),
                &p
            );
        }
        assert!(core.stats().writes >= 1000);
    }
    e.shutdown(Duration::from_secs(1));
}

#[test]
fn bad_endpoints_and_services_fail_build() {
    assert!(Engine::builder().listen("udp://x").build().is_err());
    assert!(
        Engine::builder()
            .service(calc())
            .service(calc())
            .build()
            .is_err()
    );
    // Binding to port 0 works; binding a port held by a socket without SO_REUSEPORT fails.
    let _running = Engine::builder()
        .cores(1)
        .listen("tcp://127.0.0.1:0")
        .build()
        .unwrap();
    let _std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = _std.local_addr().unwrap();
    assert!(
        Engine::builder()
            .listen(&format!("tcp://{addr}"))
            .build()
            .is_err()
    );
    assert!(matches!(
        "tcp://127.0.0.1:1".parse::<Endpoint>(),
        Ok(Endpoint::Tcp(_))
    ));
}

#[test]
fn zero_copy_sends_deliver_large_replies_intact() {
    let cfg = CoreConfig::default().with_send_zc_threshold(Some(16 << 10));
    let e = Engine::builder()
        .cores(1)
        .config(cfg.clone())
        .service(calc())
        .listen("tcp://127.0.0.1:0")
        .build()
        .unwrap();
    let mut core = Core::new(cfg).expect("core");
    let conn = core
        .connect(&e.endpoints()[0], Duration::from_secs(5))
        .expect("connect");
    let mut slot = CallSlot::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..50u32 {
        // Incompressible, so the negotiated compression leaves it large.
        let big: Vec<u8> = (0..(256 << 10) + i)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(
            core.call(conn, b"calc@1.2.0", b"echo", &big, DL, &mut slot)
                .unwrap(),
            &big[..]
        );
        // Small calls still go through plain sends.
        assert_eq!(
            core.call(conn, b"calc@1.2.0", b"add", &[1, 2], DL, &mut slot)
                .unwrap(),
            &[3]
        );
    }
    let client = core.stats().clone();
    let server = e.total_stats();
    assert!(
        client.zero_copy_writes >= 50 && server.zero_copy_writes >= 50,
        "{client:?} {server:?}"
    );
    assert!(client.writes > client.zero_copy_writes);
    e.shutdown(Duration::from_secs(1));
}

#[test]
fn a_panicking_handler_fails_its_call_only() {
    let svc = netron_engine::Service::new("boom", "1.0.0")
        .unwrap()
        .unary("sync", |_, _| panic!("bad input made the handler panic"))
        .unary_async("async", |_| async { panic!("and this one too") });
    let e = Engine::builder()
        .cores(1)
        .service(svc)
        .service(calc())
        .listen("tcp://127.0.0.1:0")
        .build()
        .unwrap();
    let ch = e.client().connect(&e.endpoints()[0].to_string()).unwrap();
    for _ in 0..3 {
        assert_eq!(
            ch.call("boom@1.0.0", "sync", &b""[..], DL)
                .unwrap_err()
                .code,
            StatusCode::Internal
        );
        assert_eq!(
            ch.call("boom@1.0.0", "async", &b""[..], DL)
                .unwrap_err()
                .code,
            StatusCode::Internal
        );
        // The core and the connection survive.
        assert_eq!(
            ch.call("calc@1.2.0", "add", &[2u8, 2][..], DL).unwrap(),
            [4]
        );
    }
    e.shutdown(Duration::from_secs(1));
}
