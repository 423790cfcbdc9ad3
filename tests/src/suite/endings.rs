//! How connections and engines end, with raw peers written from docs/protocol.md §14.4 (issue
//! 10 item 7, issue 11 item 12): a Request followed by the peer's half-close is still
//! answered, a client's GoAway is answered with the server's own and the connection drains, a
//! frame trickled byte by byte is cut off; graceful shutdown with calls in flight, calls on a
//! stopped engine, and an engine dropped by its own handler.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netron_codec::control::ControlEncoder;
use netron_codec::hpack::{Header, HeaderEncoder};
use netron_codec::{BatchEncoder, FrameKind, Limits, StatusCode};
use netron_engine::{Client, CoreConfig, Engine, ProtocolConfig, Service};

use super::util::{kinds, read_frames, request, within};
use crate::{Kind, RawPeer, Transport, block_on, calc, calc_server};

fn add(b: &mut BatchEncoder, enc: &mut HeaderEncoder, id: u32) {
    b.request(id, None)
        .unwrap()
        .headers(
            enc,
            &[Header::service(b"calc@1.2.0"), Header::method(b"add")],
        )
        .unwrap()
        .payload(&[20, 22])
        .finish()
        .unwrap();
}

/// Two Requests and the half-close arrive together: both are answered, then the server
/// closes.
pub fn a_request_then_fin_in_one_read_is_still_answered(t: &Transport) {
    let (e, addr) = crate::engine(t, CoreConfig::default(), &[calc()], "fin");
    for _ in 0..20 {
        let mut p = RawPeer::handshake(t, &addr);
        let mut b = BatchEncoder::new(Limits::default());
        let mut enc = p.header_encoder();
        add(&mut b, &mut enc, 1);
        add(&mut b, &mut enc, 3);
        p.send(b.as_slice()).unwrap();
        p.shutdown_write().unwrap();
        let got = kinds(&p.read_to_close().unwrap());
        assert_eq!(
            got,
            vec![
                (FrameKind::Response, 1, vec![42]),
                (FrameKind::Response, 3, vec![42])
            ]
        );
    }
    e.shutdown(Duration::from_secs(1));
}

/// A Request (to a slow handler) and one after it, then the half-close: both answered, in
/// order, then the server closes.
pub fn request_then_fin_is_answered(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let mut p = RawPeer::handshake(t, &addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = p.header_encoder();
    let dl = Some(Duration::from_secs(5));
    let mut answered = vec![];
    request(&mut b, &mut enc, 1, dl, b"sleep", &[50]);
    request(&mut b, &mut enc, 3, dl, b"add", &[1, 1]);
    p.send(b.as_slice()).unwrap();
    p.shutdown_write().unwrap();
    let (f, closed) = read_frames(&mut p, |_| false);
    answered.extend(f.iter().filter(|x| x.0 == FrameKind::Response).map(|x| x.1));
    assert!(closed);
    assert_eq!(answered, vec![1, 3], "{f:?}");
    e.shutdown(Duration::from_secs(1));
}

/// The server answers the call, answers GoAway with its own (last_id = 1), and closes once
/// nothing is in flight: the read ends without the client's half-close.
pub fn a_clients_go_away_is_answered_and_the_connection_drains(t: &Transport) {
    let (e, addr) = crate::engine(t, CoreConfig::default(), &[calc()], "goaway");
    let mut p = RawPeer::handshake(t, &addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(4096);
    add(&mut b, &mut enc, 1);
    ControlEncoder::new()
        .go_away(&mut b, 0, StatusCode::Unavailable, "client leaving")
        .unwrap();
    p.send(b.as_slice()).unwrap();
    let got = kinds(&p.read_to_close().unwrap());
    assert_eq!(got[0], (FrameKind::Response, 1, vec![42]), "{got:?}");
    assert_eq!(got[1].0, FrameKind::GoAway, "{got:?}");
    assert_eq!(
        got[1].1, 1,
        "GoAway's last_id is the last id the client opened"
    );
    assert_eq!(got.len(), 2, "{got:?}");
    e.shutdown(Duration::from_secs(1));
}

/// GoAway from the client behind a slow call: answered by a GoAway, the call before it
/// answered, the connection drained and closed.
pub fn go_away_from_client_is_answered_and_drained(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let mut p = RawPeer::handshake(t, &addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(4096);
    let mut ctl = ControlEncoder::new();
    request(
        &mut b,
        &mut enc,
        1,
        Some(Duration::from_secs(5)),
        b"sleep",
        &[30],
    );
    ctl.go_away(&mut b, 7, StatusCode::Unavailable, "bye")
        .unwrap();
    p.send(b.as_slice()).unwrap();
    let (f, closed) = read_frames(&mut p, |_| false);
    assert!(closed, "{f:?}");
    assert!(
        f.iter().any(|x| x.0 == FrameKind::Response && x.1 == 1),
        "{f:?}"
    );
    assert!(f.iter().any(|x| x.0 == FrameKind::GoAway), "{f:?}");
    e.shutdown(Duration::from_secs(1));
}

/// A Request after the client's own GoAway (a protocol violation by the client) and a GoAway
/// whose header id differs from last_id: the Request is answered exactly once.
pub fn go_away_odd_last_id_and_request_after_it(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let mut p = RawPeer::handshake(t, &addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(4096);
    let mut ctl = ControlEncoder::new();
    ctl.go_away(&mut b, u32::MAX, StatusCode::Unavailable, "bye")
        .unwrap();
    request(
        &mut b,
        &mut enc,
        1,
        Some(Duration::from_secs(5)),
        b"add",
        &[1],
    );
    p.send(b.as_slice()).unwrap();
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

/// A frame trickled one byte per write, one every 50 ms (2 s for 40 bytes), against a 300 ms
/// stall timeout: on a stream it is cut off at the stall timeout of its first byte; on a
/// record transport its first 1-byte record is already `Incomplete`. Either way the server
/// says why with Error(0) before it closes.
pub fn a_trickled_frame_is_cut_off_at_the_stall_timeout_of_its_first_byte(t: &Transport) {
    let stall = Duration::from_millis(300);
    let (e, addr) = crate::engine(
        t,
        ProtocolConfig::default().with_stall_timeout(stall),
        &[calc()],
        "trickle",
    );
    let counter = match t.kind {
        Kind::Stream => "stalled",
        Kind::Record => "incomplete",
    };
    let mut p = RawPeer::handshake(t, &addr);
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = p.header_encoder();
    add(&mut b, &mut enc, 1);
    // 40 bytes at one byte every 50 ms would take 2 s; the frame has 300 ms.
    let frame = b.as_slice().to_vec();
    let mut cut = false;
    for byte in &frame[..frame.len() - 1] {
        if p.send(std::slice::from_ref(byte)).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        if e.total_stats().errors_of(counter) > 0 {
            cut = true;
            break;
        }
    }
    assert!(cut, "the server kept the trickled frame open");
    // The server sent an Error(0, DeadlineExceeded) before closing: read until the close, a
    // reset or 5 s of silence, keeping what arrived.
    let mut rest = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = p.link.recv(&mut chunk, Some(Duration::from_secs(5))) {
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    let got = kinds(&rest);
    assert_eq!(
        got.last().map(|k| (k.0, k.1)),
        Some((FrameKind::Error, 0)),
        "{got:?}"
    );
    e.shutdown(Duration::from_secs(1));
}

/// Graceful shutdown with calls in flight: every call ends (reply or Unavailable), nothing
/// hangs, and the engine's threads exit.
pub fn shutdown_drains_and_refuses_new_calls(t: &Transport) {
    let server = crate::builder(t)
        .cores(2)
        .service(calc())
        .listen(&(t.listen)("drain"))
        .build()
        .unwrap();
    let ep = crate::dial_of(t, &server).to_string();
    let client_engine = crate::builder(t).cores(1).build().unwrap();
    let client = client_engine.client();
    let ok = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(20);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (client, ep, ok, unavailable) =
                (client.clone(), ep.clone(), ok.clone(), unavailable.clone());
            std::thread::spawn(move || {
                let ch = client.connect(&ep).unwrap();
                while Instant::now() < stop_at {
                    // Some calls are slow, so shutdown finds them in flight.
                    match ch.call(
                        "calc@1.2.0",
                        "sleep",
                        &[2u8][..],
                        Some(Duration::from_secs(5)),
                    ) {
                        Ok(r) => {
                            assert_eq!(r, b"slept");
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(s) => {
                            assert_eq!(s.code(), netron_engine::StatusCode::Unavailable, "{s}");
                            unavailable.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
                panic!("calls kept succeeding after shutdown");
            })
        })
        .collect();
    while ok.load(Ordering::Relaxed) < 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let start = Instant::now();
    server.shutdown(Duration::from_secs(2));
    assert!(start.elapsed() < Duration::from_secs(10));
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(
        unavailable.load(Ordering::Relaxed),
        4,
        "every caller saw Unavailable once"
    );
    client_engine.shutdown(Duration::from_secs(1));
}

/// Issue 10 item 3: a shut-down client engine answers calls, async calls and connects at once,
/// with Unavailable saying why, whatever deadline the caller gave.
pub fn calls_on_a_stopped_engine_fail_at_once(t: &Transport) {
    use netron_engine::StatusCode;
    let (srv, ep) = calc_server(t);
    let client_engine = crate::builder(t).cores(1).build().unwrap();
    let client: Client = client_engine.client();
    let ch = client.connect(&ep).unwrap();
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[1u8, 2][..], None).unwrap(),
        [3]
    );
    client_engine.shutdown(Duration::from_millis(100));
    for deadline in [Some(Duration::from_millis(200)), None] {
        let ch2 = ch.clone();
        let e = within("a blocking call", move || {
            ch2.call("calc@1.2.0", "add", &[1u8, 2][..], deadline)
        })
        .unwrap_err();
        assert_eq!(e.code(), StatusCode::Unavailable, "{e:?}");
        assert!(e.status().message.contains("not running"), "{e:?}");
    }
    let m = ch.method("calc@1.2.0", "add");
    let e = within("an async call", move || {
        block_on(m.call_async(&[1u8][..], None))
    })
    .unwrap_err();
    assert_eq!(e.code(), StatusCode::Unavailable, "{e:?}");
    let ep2 = ep.clone();
    let e = within("a connect", move || client.connect(&ep2).map(|_| ())).unwrap_err();
    assert!(
        matches!(e, netron_engine::ConnectError::EngineStopped { .. }),
        "{e:?}"
    );
    srv.shutdown(Duration::from_secs(1));
}

/// `call_async` and `call` on a method of an engine that was shut down resolve at once with
/// Unavailable, also from many threads on surviving clones.
pub fn calls_after_shutdown_fail_at_once(t: &Transport) {
    use netron_engine::StatusCode;
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let ch = e.client().connect(&addr).unwrap();
    let m = ch.method("calc@1.2.0", "add");
    e.shutdown(Duration::from_secs(1));
    let start = Instant::now();
    let r = block_on(m.call_async(&[1u8][..], None));
    assert_eq!(r.unwrap_err().code(), StatusCode::Unavailable);
    let r = m.call(&[1u8][..], None);
    assert_eq!(r.unwrap_err().code(), StatusCode::Unavailable);
    assert!(start.elapsed() < Duration::from_millis(500));
    // Many threads on surviving clones.
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    assert_eq!(
                        m.call(&[1u8][..], None).unwrap_err().code(),
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

/// An engine whose `calc@1.2.0/kill` handler drops the engine itself (from the core thread),
/// and a channel to it, with the engine's endpoint.
fn engine_dropped_by_its_handler(t: &Transport) -> (netron_engine::Channel, String) {
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
    let (e, addr) = super::review_engine(t, CoreConfig::default(), svc);
    let client = e.client();
    *holder.lock().unwrap() = Some(e);
    let ch = client.connect(&addr).unwrap();
    (ch, addr)
}

/// Dropping the Engine from inside a handler (the handler runs on the core thread the drop
/// joins) does not hang; the call gets some answer; the endpoint stops accepting.
pub fn engine_dropped_from_inside_a_handler(t: &Transport) {
    let (ch, addr) = engine_dropped_by_its_handler(t);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = ch.call("calc@1.2.0", "kill", &b""[..], Some(Duration::from_secs(3)));
        let _ = tx.send(r);
    });
    let r = rx.recv_timeout(Duration::from_secs(6)).expect("call hung");
    eprintln!("{}: engine dropped in handler: {r:?}", t.name);
    // After that, the endpoint must be released at some point.
    let start = Instant::now();
    loop {
        if (t.connect)(&addr).is_err() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{addr} still accepting 5 s after the engine was dropped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Was a fault (fixed): dropping (or shutting down) the Engine from inside a handler panicked
/// on the core thread (engine.rs joined every core thread including the current one). A
/// handler behaviour must not make a core thread panic. Isolated: it installs a process-wide
/// panic hook, which other tests' deliberate handler panics would trip.
pub fn engine_dropped_from_inside_a_handler_does_not_panic_its_core(t: &Transport) {
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
    let (ch, _) = engine_dropped_by_its_handler(t);
    let r = ch.call("calc@1.2.0", "kill", &b""[..], Some(Duration::from_secs(3)));
    eprintln!("reply: {r:?}");
    let p = panicked.lock().unwrap().clone();
    assert!(p.is_empty(), "core thread panicked: {p:?}");
}
