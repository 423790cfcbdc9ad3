//! Independent review: attempts to break the documented guarantees, as an API user and as a
//! raw-socket peer written from docs/protocol.md. Tests whose comment starts with "Was a
//! fault" failed on the code they were written against and pass since the fix; the others
//! held from the start.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netron_codec::control::ControlEncoder;
use netron_codec::hpack::{Header, HeaderEncoder};
use netron_codec::{BatchEncoder, FrameIter, FrameKind, Limits, StatusCode};
use netron_engine::{CoreConfig, Engine, IdlePolicy, Service};
use netron_tests::{RawPeer, block_on, calc};

const DL: Option<Duration> = Some(Duration::from_secs(5));

fn engine_with(cfg: CoreConfig, svc: Service) -> (Engine, String) {
    let e = Engine::builder()
        .cores(1)
        .config(cfg)
        .service(svc)
        .listen("tcp://127.0.0.1:0")
        .build()
        .unwrap();
    let addr = e.endpoints()[0]
        .to_string()
        .trim_start_matches("tcp://")
        .to_owned();
    (e, addr)
}

fn engine() -> (Engine, String) {
    engine_with(
        CoreConfig::default()
            .with_idle(IdlePolicy::Adaptive {
                spin: Duration::from_micros(20),
            })
            .with_stall_timeout(Duration::from_millis(500)),
        calc(),
    )
}

fn wait_for(e: &Engine, label: &str) -> u64 {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let n = e.total_stats().errors_of(label);
        if n > 0 || Instant::now() > end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn request(b: &mut BatchEncoder, enc: &mut HeaderEncoder, id: u32, method: &[u8], payload: &[u8]) {
    b.request(id, DL)
        .unwrap()
        .headers(
            enc,
            &[Header::service(b"calc@1.2.0"), Header::method(method)],
        )
        .unwrap()
        .payload(payload)
        .finish()
        .unwrap();
}

/// Reads frames until `done` says so or the server closes; returns (kind, id, payload).
fn read_frames(
    p: &mut RawPeer,
    done: impl Fn(&[(FrameKind, u32, Vec<u8>)]) -> bool,
) -> (Vec<(FrameKind, u32, Vec<u8>)>, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut out = Vec::new();
    let mut closed = false;
    loop {
        out.clear();
        let mut it = FrameIter::new(&buf, &Limits::default());
        for f in it.by_ref() {
            match f {
                Ok(f) => out.push((f.kind(), f.id(), f.payload().to_vec())),
                Err(_) => break,
            }
        }
        if done(&out) || closed {
            return (out, closed);
        }
        match p.stream.read(&mut chunk) {
            Ok(0) => closed = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed = true,
            Err(e) => panic!(
                "read: {e} (got {:?})",
                out.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>()
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// API user
// ---------------------------------------------------------------------------------------

/// Was a fault (fixed): architecture.md says "`Duration::MAX` is accepted and means never" for deadlines,
/// but a blocking `Channel::call` with `Some(Duration::MAX)` fails with InvalidArgument
/// ("deadline ... is too far in the future", conn/client.rs `start_call` uses
/// `now.checked_add(d).ok_or_else(..)` instead of treating overflow as "no deadline").
#[test]
fn channel_call_with_duration_max_deadline() {
    let (e, addr) = engine();
    let ch = e.client().connect(&format!("tcp://{addr}")).unwrap();
    let r = ch.call("calc@1.2.0", "add", &[2u8, 3][..], Some(Duration::MAX));
    assert_eq!(r, Ok(vec![5]), "Duration::MAX deadline should mean never");
    e.shutdown(Duration::from_secs(1));
}

/// Same through call_async.
#[test]
fn call_async_with_duration_max_deadline() {
    let (e, addr) = engine();
    let ch = e.client().connect(&format!("tcp://{addr}")).unwrap();
    let m = ch.method("calc@1.2.0", "add");
    let r = block_on(m.call_async(&[2u8, 3][..], Some(Duration::MAX)));
    assert_eq!(r, Ok(vec![5]), "Duration::MAX deadline should mean never");
    e.shutdown(Duration::from_secs(1));
}

/// Was a fault (fixed): `Client::connect_timeout(tcp, Duration::MAX)` panics on the caller's thread
/// ("overflow when adding duration to instant") in driver/sock.rs `connect_any`
/// (`let deadline = start + timeout;`), although `connect_timeout` itself uses
/// `checked_add` and the docs say durations use checked arithmetic.
#[test]
fn connect_timeout_duration_max_does_not_panic() {
    let (e, addr) = engine();
    let client = e.client();
    let ep = format!("tcp://{addr}");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client.connect_timeout(&ep, Duration::MAX).map(|_| ())
    }));
    assert!(r.is_ok(), "connect_timeout(Duration::MAX) panicked");
    assert!(r.unwrap().is_ok());
    e.shutdown(Duration::from_secs(1));
}

/// connect_timeout(0) must return promptly with an error (not hang, not panic).
#[test]
fn connect_timeout_zero_is_prompt() {
    let (e, addr) = engine();
    let t = Instant::now();
    let r = e
        .client()
        .connect_timeout(&format!("tcp://{addr}"), Duration::ZERO);
    assert!(t.elapsed() < Duration::from_secs(1));
    if let Err(s) = &r {
        eprintln!("connect_timeout(0): {:?} {}", s.code, s.message);
    }
    e.shutdown(Duration::from_secs(1));
}

/// Unix endpoint with Duration::MAX: socket2 path.
#[test]
fn connect_timeout_duration_max_unix() {
    let path = netron_tests::unix_path("review-max");
    let e = Engine::builder()
        .cores(1)
        .service(calc())
        .listen(&format!("unix://{path}"))
        .build()
        .unwrap();
    let client = e.client();
    let ep = format!("unix://{path}");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client.connect_timeout(&ep, Duration::MAX).map(|_| ())
    }));
    assert!(r.is_ok(), "connect_timeout(unix, Duration::MAX) panicked");
    e.shutdown(Duration::from_secs(1));
}

/// call_async and call after shutdown resolve at once with Unavailable.
#[test]
fn calls_after_shutdown_fail_at_once() {
    let (e, addr) = engine();
    let ch = e.client().connect(&format!("tcp://{addr}")).unwrap();
    let m = ch.method("calc@1.2.0", "add");
    e.shutdown(Duration::from_secs(1));
    let t = Instant::now();
    let r = block_on(m.call_async(&[1u8][..], None));
    assert_eq!(r.unwrap_err().code, StatusCode::Unavailable);
    let r = m.call(&[1u8][..], None);
    assert_eq!(r.unwrap_err().code, StatusCode::Unavailable);
    assert!(t.elapsed() < Duration::from_millis(500));
    // Many threads on surviving clones.
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    assert_eq!(
                        m.call(&[1u8][..], None).unwrap_err().code,
                        StatusCode::Unavailable
                    );
                    drop(m.call_async(&[1u8][..], None));
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

/// Two threads racing blocking calls with tiny deadlines and dropped futures on one
/// connection; afterwards the thread's next call and the connection still work.
#[test]
fn racing_calls_and_cancels_on_one_connection() {
    let (e, addr) = engine();
    let ch = e.client().connect(&format!("tcp://{addr}")).unwrap();
    let hs: Vec<_> = (0..2)
        .map(|t| {
            let ch = ch.clone();
            std::thread::spawn(move || {
                let m = ch.method("calc@1.2.0", "add");
                for i in 0..2000u32 {
                    match i % 4 {
                        0 => {
                            let _ = m
                                .call(&[1u8][..], Some(Duration::from_micros(1 + (i % 50) as u64)));
                        }
                        1 => drop(m.call_async(&[1u8][..], None)),
                        2 => {
                            let mut f = Box::pin(m.call_async(&[1u8, 2][..], DL));
                            let w = std::task::Waker::noop();
                            let _ = f.as_mut().poll(&mut std::task::Context::from_waker(w));
                            drop(f);
                        }
                        _ => assert_eq!(m.call(vec![t as u8, 2], DL).unwrap(), [t as u8 + 2]),
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[20u8, 22][..], DL).unwrap(),
        [42]
    );
    assert_eq!(e.total_stats().errors_of("idle_frame_budget"), 0);
    e.shutdown(Duration::from_secs(1));
}

use std::future::Future;

/// An engine whose `calc@1.2.0/kill` handler drops the engine itself (from the core thread),
/// and a channel to it, with the engine's `host:port`.
fn engine_dropped_by_its_handler() -> (netron_engine::Channel, String) {
    let holder: Arc<Mutex<Option<Engine>>> = Arc::new(Mutex::new(None));
    let h2 = holder.clone();
    let svc = Service::new("calc", "1.2.0")
        .unwrap()
        .unary("kill", move |_, reply| {
            let e = h2.lock().unwrap().take();
            drop(e);
            reply.write(b"ok");
            Ok(())
        });
    let (e, addr) = engine_with(CoreConfig::default(), svc);
    let client = e.client();
    *holder.lock().unwrap() = Some(e);
    let ch = client.connect(&format!("tcp://{addr}")).unwrap();
    (ch, addr)
}

/// Dropping the Engine from inside a handler (the handler runs on the core thread the drop
/// joins). Must not hang; the call gets some answer; the process survives.
#[test]
fn engine_dropped_from_inside_a_handler() {
    let (ch, addr) = engine_dropped_by_its_handler();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = ch.call("calc@1.2.0", "kill", &b""[..], Some(Duration::from_secs(3)));
        let _ = tx.send(r);
    });
    let r = rx.recv_timeout(Duration::from_secs(6)).expect("call hung");
    eprintln!("engine dropped in handler: {r:?}");
    // After that, the port must be released at some point.
    let t = Instant::now();
    loop {
        if std::net::TcpStream::connect(&addr).is_err() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "port still accepting 5 s after the engine was dropped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// Raw peer
// ---------------------------------------------------------------------------------------

/// Response and Error(id) frames sent by a client to a server: ignored (unknown_id), the
/// connection goes on and a later Request is answered.
#[test]
fn replies_from_client_to_server_are_ignored() {
    let (e, addr) = engine();
    let mut p = RawPeer::handshake(&addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(4096);
    let mut ctl = ControlEncoder::new();
    b.response(1).unwrap().payload(b"x").finish().unwrap();
    ctl.error(&mut b, 3, StatusCode::Internal, "boo", &[])
        .unwrap();
    b.empty_frame(FrameKind::Cancel, 0, 0).unwrap();
    request(&mut b, &mut enc, 5, b"add", &[1, 2]);
    p.stream.write_all(b.as_slice()).unwrap();
    let (f, _) = read_frames(&mut p, |f| f.iter().any(|x| x.1 == 5));
    assert!(
        f.iter()
            .any(|x| x.0 == FrameKind::Response && x.1 == 5 && x.2 == [3]),
        "{f:?}"
    );
    assert!(wait_for(&e, "unknown_id") >= 2);
    e.shutdown(Duration::from_secs(1));
}

/// A Request followed by FIN is answered.
#[test]
fn request_then_fin_is_answered() {
    let (e, addr) = engine();
    let mut p = RawPeer::handshake(&addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(4096);
    let mut sleep = vec![];
    request(&mut b, &mut enc, 1, b"sleep", &[50]);
    request(&mut b, &mut enc, 3, b"add", &[1, 1]);
    p.stream.write_all(b.as_slice()).unwrap();
    p.stream.shutdown(Shutdown::Write).unwrap();
    let (f, closed) = read_frames(&mut p, |_| false);
    sleep.extend(f.iter().filter(|x| x.0 == FrameKind::Response).map(|x| x.1));
    assert!(closed);
    assert_eq!(sleep, vec![1, 3], "{f:?}");
    e.shutdown(Duration::from_secs(1));
}

/// GoAway from the client: answered by a GoAway, the call before it answered, the
/// connection drained and closed.
#[test]
fn go_away_from_client_is_answered_and_drained() {
    let (e, addr) = engine();
    let mut p = RawPeer::handshake(&addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(4096);
    let mut ctl = ControlEncoder::new();
    request(&mut b, &mut enc, 1, b"sleep", &[30]);
    ctl.go_away(&mut b, 7, StatusCode::Unavailable, "bye")
        .unwrap();
    p.stream.write_all(b.as_slice()).unwrap();
    let (f, closed) = read_frames(&mut p, |_| false);
    assert!(closed, "{f:?}");
    assert!(
        f.iter().any(|x| x.0 == FrameKind::Response && x.1 == 1),
        "{f:?}"
    );
    assert!(f.iter().any(|x| x.0 == FrameKind::GoAway), "{f:?}");
    e.shutdown(Duration::from_secs(1));
}

/// A Request after the client's own GoAway (a protocol violation by the client) and a
/// GoAway whose header id differs from last_id.
#[test]
fn go_away_odd_last_id_and_request_after_it() {
    let (e, addr) = engine();
    let mut p = RawPeer::handshake(&addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(4096);
    let mut ctl = ControlEncoder::new();
    ctl.go_away(&mut b, u32::MAX, StatusCode::Unavailable, "bye")
        .unwrap();
    request(&mut b, &mut enc, 1, b"add", &[1]);
    p.stream.write_all(b.as_slice()).unwrap();
    let (f, closed) = read_frames(&mut p, |_| false);
    assert!(closed);
    // the request is answered (Unavailable or Response), exactly once
    assert_eq!(
        f.iter()
            .filter(|x| x.1 == 1 && matches!(x.0, FrameKind::Response | FrameKind::Error))
            .count(),
        1,
        "{f:?}"
    );
    e.shutdown(Duration::from_secs(1));
}

/// Handshake trickled one byte at a time, each well within stall_timeout: closed within
/// stall_timeout of the first byte.
#[test]
fn handshake_trickle_is_bounded() {
    let (e, addr) = engine();
    let mut p = RawPeer::connect(&addr);
    let mut hs = netron_codec::handshake::ClientHandshake::new(Default::default());
    let mut out = Vec::new();
    hs.start(&mut out).unwrap();
    let t = Instant::now();
    let mut closed_at = None;
    for &byte in &out[..out.len() - 1] {
        if p.stream.write_all(&[byte]).is_err() {
            closed_at = Some(t.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(40));
        if t.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let _ = p.read_to_close();
    let el = closed_at.unwrap_or(t.elapsed());
    assert!(wait_for(&e, "stalled") >= 1);
    assert!(el < Duration::from_millis(1500), "closed after {el:?}");
    e.shutdown(Duration::from_secs(1));
}

/// A frame trickled one byte at a time after the handshake.
#[test]
fn frame_trickle_is_bounded() {
    let (e, addr) = engine();
    let mut p = RawPeer::handshake(&addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(4096);
    request(&mut b, &mut enc, 1, b"echo", &[7u8; 200]);
    let bytes = b.as_slice().to_vec();
    let t = Instant::now();
    for &byte in &bytes[..bytes.len() - 1] {
        if p.stream.write_all(&[byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        if t.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let _ = p.read_to_close();
    assert!(wait_for(&e, "stalled") >= 1);
    e.shutdown(Duration::from_secs(1));
}

/// Header table size 0 offered by the client: calls still work with a 0-size encoder.
#[test]
fn header_table_size_zero() {
    let (e, addr) = engine();
    let mut p = RawPeer::connect(&addr);
    let mut cfg = netron_codec::handshake::ClientConfig::default();
    cfg.header_table_size = 0;
    let mut hs = netron_codec::handshake::ClientHandshake::new(cfg);
    let mut out = Vec::new();
    hs.start(&mut out).unwrap();
    p.stream.write_all(&out).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let consumed;
    loop {
        let n = p.stream.read(&mut chunk).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        match hs.handle(&buf).unwrap() {
            netron_codec::handshake::ClientProgress::NeedMore { .. } => continue,
            netron_codec::handshake::ClientProgress::Done {
                settings,
                consumed: c,
            } => {
                assert_eq!(settings.header_table_size, 0);
                consumed = c;
                break;
            }
        }
    }
    assert_eq!(consumed, buf.len());
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(0);
    for id in [1u32, 3, 5] {
        request(&mut b, &mut enc, id, b"add", &[1, 2]);
    }
    p.stream.write_all(b.as_slice()).unwrap();
    let (f, _) = read_frames(&mut p, |f| {
        f.iter().filter(|x| x.0 == FrameKind::Response).count() == 3
    });
    assert_eq!(
        f.iter().filter(|x| x.0 == FrameKind::Response).count(),
        3,
        "{f:?}"
    );
    e.shutdown(Duration::from_secs(1));
}

/// A header list above max_header_list_size: connection error that does not echo it.
#[test]
fn huge_metadata_is_refused_without_echo() {
    let (e, addr) = engine();
    let mut p = RawPeer::handshake(&addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(4096);
    let big = vec![b'Q'; 60_000];
    b.request(1, DL)
        .unwrap()
        .headers(
            &mut enc,
            &[
                Header::service(b"calc@1.2.0"),
                Header::method(b"add"),
                Header::new(b"x-big", &big),
            ],
        )
        .unwrap()
        .finish()
        .unwrap();
    p.stream.write_all(b.as_slice()).unwrap();
    let got = p.read_to_close().unwrap();
    assert!(got.len() < 2048, "server sent {} bytes", got.len());
    assert!(!got.windows(64).any(|w| w.iter().all(|&c| c == b'Q')));
    assert!(wait_for(&e, "header_list_too_large") >= 1);
    e.shutdown(Duration::from_secs(1));
}

/// An unknown method name of ~60 KB is not echoed in the call error.
#[test]
fn unknown_method_name_not_echoed() {
    let (e, addr) = engine();
    let ch = e.client().connect(&format!("tcp://{addr}")).unwrap();
    let name = "m".repeat(12_000);
    let r = ch.call("calc@1.2.0", &name, &b""[..], DL).unwrap_err();
    assert!(
        r.message.len() <= 600,
        "message of {} bytes",
        r.message.len()
    );
    let svc = format!("{}@1.2.0", "s".repeat(12_000));
    let r = ch.call(&svc, "add", &b""[..], DL).unwrap_err();
    assert!(
        r.message.len() <= 600,
        "message of {} bytes",
        r.message.len()
    );
    e.shutdown(Duration::from_secs(1));
}

/// Pings just under the budget rate for 3 s keep the connection; a ping flood closes it
/// with ResourceExhausted. A client that pings and never reads Pongs is bounded too.
#[test]
fn ping_rate_just_below_budget_keeps_connection() {
    let cfg = CoreConfig::default()
        .with_idle(IdlePolicy::Adaptive {
            spin: Duration::from_micros(20),
        })
        .with_idle_frame_budget(netron_engine::FrameBudget {
            burst: 100,
            per_sec: 1000,
        });
    let (e, addr) = engine_with(cfg, calc());
    let mut p = RawPeer::handshake(&addr);
    // ~800/s in 8-frame batches every 10 ms
    let mut b = BatchEncoder::new(Limits::default());
    for _ in 0..8 {
        b.empty_frame(FrameKind::Ping, 0, 0).unwrap();
    }
    let reader = read_in_background(&p);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        p.stream.write_all(b.as_slice()).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(e.total_stats().errors_of("idle_frame_budget"), 0);
    let _ = p.stream.shutdown(Shutdown::Both);
    let _ = reader.join();
    e.shutdown(Duration::from_secs(1));
}

/// Client pipelines to max_concurrent_calls against a server that never answers: the
/// client's ids are reserved (by design); when the server closes, the calls fail and the
/// channel reports it.
#[test]
fn abandoned_calls_to_silent_server_fail_on_close() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (e, _) = engine();
    let srv = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        // Server handshake by hand.
        let mut hs = netron_codec::handshake::ServerHandshake::new(Default::default());
        let mut buf = Vec::new();
        let mut c = [0u8; 4096];
        let mut out = Vec::new();
        loop {
            let n = s.read(&mut c).unwrap();
            buf.extend_from_slice(&c[..n]);
            match hs.handle(&buf).unwrap() {
                netron_codec::handshake::ServerProgress::NeedMore { .. } => continue,
                netron_codec::handshake::ServerProgress::Offer { offer, .. } => {
                    hs.try_accept(&offer, &mut out).unwrap();
                    break;
                }
            }
        }
        s.write_all(&out).unwrap();
        // Read for 1.5 s, never answer, then close.
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut total = 0;
        while let Ok(n) = s.read(&mut c) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let ch = e.client().connect(&format!("tcp://{addr}")).unwrap();
    let m = ch.method("calc@1.2.0", "add");
    let mut futs = Vec::new();
    for _ in 0..50 {
        futs.push(m.call_async(&[1u8][..], Some(Duration::from_millis(100))));
    }
    for f in futs {
        assert_eq!(block_on(f).unwrap_err().code, StatusCode::DeadlineExceeded);
    }
    let total = srv.join().unwrap();
    assert!(total > 0);
    let t = Instant::now();
    let r = m.call(&[1u8][..], Some(Duration::from_secs(2)));
    assert_eq!(r.unwrap_err().code, StatusCode::Unavailable);
    assert!(t.elapsed() < Duration::from_millis(500));
    e.shutdown(Duration::from_secs(1));
}

/// Ping flood without reading Pongs: closed (budget) rather than growing output forever.
#[test]
fn ping_flood_without_reading_is_closed() {
    let (e, addr) = engine();
    let mut p = RawPeer::handshake(&addr);
    let mut b = BatchEncoder::new(Limits::default());
    for _ in 0..100 {
        b.empty_frame(FrameKind::Ping, 0, 7).unwrap();
    }
    let t = Instant::now();
    for _ in 0..50 {
        if p.stream.write_all(b.as_slice()).is_err() {
            break;
        }
    }
    assert!(wait_for(&e, "idle_frame_budget") >= 1);
    assert!(t.elapsed() < Duration::from_secs(3));
    e.shutdown(Duration::from_secs(1));
}

/// Reads and discards everything the server sends to `p` on another thread, until it closes.
fn read_in_background(p: &RawPeer) -> std::thread::JoinHandle<()> {
    let mut s = p.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut c = [0u8; 65536];
        while let Ok(n) = s.read(&mut c) {
            if n == 0 {
                break;
            }
        }
    })
}

/// Was a fault (fixed) (docs/protocol.md §17.1, architecture.md "Timers and budgets": "a client that
/// pipelines at full rate and cancels one call in two never runs it dry"). A client that
/// pipelines 3000 calls and then cancels half of them (hedged requests: cancel the losers
/// after the winners answered) is cut off with idle_frame_budget: the refunds of its
/// Requests were lost because the bucket was already full (conn/mod.rs `refund_half` caps at
/// `cap`), so only the 1000-frame burst covers the 1500 Cancels.
#[test]
fn pipelined_client_cancelling_half_its_calls_keeps_connection() {
    let (e, addr) = engine();
    let mut p = RawPeer::handshake(&addr);
    let reader = read_in_background(&p);
    let mut enc = HeaderEncoder::new(4096);
    let mut b = BatchEncoder::new(Limits::default());
    let n = 3000u32;
    for i in 0..n {
        if b.len() > 60_000 || b.frame_count() >= 120 {
            p.stream.write_all(b.as_slice()).unwrap();
            b.clear();
        }
        request(&mut b, &mut enc, 2 * i + 1, b"add", &[1]);
    }
    p.stream.write_all(b.as_slice()).unwrap();
    b.clear();
    std::thread::sleep(Duration::from_millis(200));
    for i in (0..n).step_by(2) {
        if b.len() > 60_000 || b.frame_count() >= 120 {
            p.stream.write_all(b.as_slice()).unwrap();
            b.clear();
        }
        b.empty_frame(FrameKind::Cancel, 2 * i + 1, 0).unwrap();
    }
    let _ = p.stream.write_all(b.as_slice());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        e.total_stats().errors_of("idle_frame_budget"),
        0,
        "a client that cancelled half of its calls was cut off"
    );
    let _ = p.stream.shutdown(Shutdown::Both);
    let _ = reader.join();
    e.shutdown(Duration::from_secs(1));
}

/// The interleaved pattern (R R C ...) keeps its connection.
#[test]
fn interleaved_cancel_half_keeps_connection() {
    let (e, addr) = engine();
    let mut p = RawPeer::handshake(&addr);
    let reader = read_in_background(&p);
    let mut enc = HeaderEncoder::new(4096);
    let mut b = BatchEncoder::new(Limits::default());
    for i in 0..6000u32 {
        if b.len() > 60_000 || b.frame_count() >= 120 {
            p.stream.write_all(b.as_slice()).unwrap();
            b.clear();
        }
        request(&mut b, &mut enc, 2 * i + 1, b"add", &[1]);
        if i % 2 == 1 {
            b.empty_frame(FrameKind::Cancel, 2 * i + 1, 0).unwrap();
        }
    }
    p.stream.write_all(b.as_slice()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(e.total_stats().errors_of("idle_frame_budget"), 0);
    let _ = p.stream.shutdown(Shutdown::Both);
    let _ = reader.join();
    e.shutdown(Duration::from_secs(1));
}

/// Was a fault (fixed): dropping (or shutting down) the Engine from inside a handler panics on the core
/// thread: engine.rs `stop_now`/`shutdown` join every core thread including the current
/// one (`pthread_join` -> EDEADLK -> std panics "failed to join thread"). The panic is caught
/// by the handler guard, but a handler behaviour makes the core thread panic (docs:
/// "No user input, argument or handler behaviour panics a core"), and the handler's reply is
/// lost. `Client::connect` refuses core threads for the same reason; drop/shutdown do not.
#[test]
fn engine_dropped_from_inside_a_handler_does_not_panic_its_core() {
    let panicked = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let panicked = panicked.clone();
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            if name.starts_with("netron-core") {
                panicked.lock().unwrap().push(format!("{name}: {info}"));
            }
            prev(info);
        }));
    }
    let (ch, _) = engine_dropped_by_its_handler();
    let r = ch.call("calc@1.2.0", "kill", &b""[..], Some(Duration::from_secs(3)));
    eprintln!("reply: {r:?}");
    let p = panicked.lock().unwrap().clone();
    assert!(p.is_empty(), "core thread panicked: {p:?}");
}

/// A call given up (deadline) never poisons the thread's next call: the late reply of the
/// first does not show up as the reply of the second.
#[test]
fn given_up_call_does_not_poison_next() {
    let (e, addr) = engine();
    let ch = e.client().connect(&format!("tcp://{addr}")).unwrap();
    let ch2 = e.client().connect(&format!("tcp://{addr}")).unwrap();
    for i in 0..20u8 {
        let r = ch.call(
            "calc@1.2.0",
            "sleep",
            vec![30],
            Some(Duration::from_millis(5)),
        );
        assert_eq!(r.unwrap_err().code, StatusCode::DeadlineExceeded);
        let r = ch2.call("calc@1.2.0", "add", vec![i, 1], DL).unwrap();
        assert_eq!(r, [i + 1]);
    }
    e.shutdown(Duration::from_secs(1));
}

/// The caller's deadline is honoured while the core is blocked in a handler.
#[test]
fn caller_deadline_while_core_blocked() {
    let (e, addr) = engine();
    let ch = e.client().connect(&format!("tcp://{addr}")).unwrap();
    let ch2 = ch.clone();
    let h = std::thread::spawn(move || ch2.call("calc@1.2.0", "sleep", vec![250], DL));
    std::thread::sleep(Duration::from_millis(30));
    let t = Instant::now();
    let r = ch.call(
        "calc@1.2.0",
        "add",
        vec![1],
        Some(Duration::from_millis(20)),
    );
    let el = t.elapsed();
    assert!(el < Duration::from_millis(120), "waited {el:?}");
    assert_eq!(r.unwrap_err().code, StatusCode::DeadlineExceeded);
    h.join().unwrap().unwrap();
    e.shutdown(Duration::from_secs(1));
}
