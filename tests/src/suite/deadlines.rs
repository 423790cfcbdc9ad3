//! Deadlines: the caller's (while the server is slow or its core blocked), the server's own
//! (without help from the caller), `Duration::MAX` as "never", late replies that must not
//! poison the next call, and calls to a server that never answers.

use std::time::{Duration, Instant};

use netron_codec::hpack::HeaderEncoder;
use netron_codec::{BatchEncoder, FrameIter, FrameKind, Limits, control};
use netron_engine::{CoreConfig, IdlePolicy, RuntimeConfig, StatusCode};

use super::util::within;
use crate::{RawPeer, Transport, block_on, calc, services};

const DL: Option<Duration> = Some(Duration::from_secs(5));

/// The caller's deadline expires while the server is slow; the late reply is dropped and the
/// connection keeps working.
pub fn deadline_exceeded_and_the_caller_moves_on(t: &Transport) {
    // Server and client on different engines, so the slow handler blocks only the server core.
    let (server, ep) = crate::calc_server(t);
    let client_engine = crate::builder(t).cores(1).build().unwrap();
    let ch = client_engine.client().connect(&ep).unwrap();
    let err = ch
        .call(
            "calc@1.2.0",
            "sleep",
            &[200u8][..],
            Some(Duration::from_millis(20)),
        )
        .unwrap_err();
    assert_eq!(err.code(), StatusCode::DeadlineExceeded);
    // The late reply is dropped; the connection keeps working.
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[1u8, 1][..], DL).unwrap(),
        [2]
    );
    let cs = client_engine.total_stats();
    assert_eq!(cs.deadline_exceeded(), 1);
    server.shutdown(Duration::from_secs(1));
    client_engine.shutdown(Duration::from_secs(1));
}

/// A zero deadline has passed before the call starts: on every calling path (blocking,
/// async, the caller-driven core) the call fails DeadlineExceeded at once and nothing is sent
/// (fresh user R17: the server received it and counted it late), and the connection goes on.
pub fn a_zero_deadline_fails_at_once_and_sends_nothing(t: &Transport) {
    let (server, ep) = crate::calc_server(t);
    let client_engine = crate::builder(t).cores(1).build().unwrap();
    let ch = client_engine.client().connect(&ep).unwrap();
    let mut core = crate::new_core(t, RuntimeConfig::default()).unwrap();
    let conn = core
        .connect(&crate::dial_of(t, &server), Duration::from_secs(5))
        .unwrap();
    let zero = Some(Duration::ZERO);
    let before = server.total_stats().calls_in();
    let err = ch.call("calc@1.2.0", "echo", &b"x"[..], zero).unwrap_err();
    assert_eq!(err.code(), StatusCode::DeadlineExceeded, "{err}");
    let call = ch.method("calc@1.2.0", "echo").call_async(&b"x"[..], zero);
    let err = block_on(call).unwrap_err();
    assert_eq!(err.code(), StatusCode::DeadlineExceeded, "{err}");
    let mut slot = netron_engine::CallSlot::new();
    let err = core
        .call(conn, b"calc@1.2.0", b"echo", b"x", zero, &mut slot)
        .unwrap_err();
    assert_eq!(err.code(), StatusCode::DeadlineExceeded, "{err}");
    assert_eq!(ch.call("calc@1.2.0", "echo", &b"y"[..], DL).unwrap(), b"y");
    let r = core.call(conn, b"calc@1.2.0", b"echo", b"z", DL, &mut slot);
    assert_eq!(r.unwrap(), b"z");
    let st = server.total_stats();
    assert_eq!(
        st.calls_in(),
        before + 2,
        "only the two calls with time left arrived"
    );
    assert_eq!(st.deadline_exceeded(), 0, "{st:?}");
    drop(core);
    server.shutdown(Duration::from_secs(1));
    client_engine.shutdown(Duration::from_secs(1));
}

/// Was a fault (fixed): architecture.md says "`Duration::MAX` is accepted and means never" for
/// deadlines, but a blocking `Channel::call` with `Some(Duration::MAX)` failed with
/// InvalidArgument (conn/client.rs `start_call` used `checked_add(..).ok_or_else(..)`
/// instead of treating overflow as "no deadline").
pub fn duration_max_deadline_means_never(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let ch = e.client().connect(&addr).unwrap();
    let r = ch.call("calc@1.2.0", "add", &[2u8, 3][..], Some(Duration::MAX));
    assert_eq!(r, Ok(vec![5]), "Duration::MAX deadline should mean never");
    e.shutdown(Duration::from_secs(1));
}

/// Same through `call_async`.
pub fn duration_max_deadline_means_never_async(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let ch = e.client().connect(&addr).unwrap();
    let m = ch.method("calc@1.2.0", "add");
    let r = block_on(m.call_async(&[2u8, 3][..], Some(Duration::MAX)));
    assert_eq!(r, Ok(vec![5]), "Duration::MAX deadline should mean never");
    e.shutdown(Duration::from_secs(1));
}

/// Was a fault (fixed): `Client::connect_timeout(ep, Duration::MAX)` panicked on the caller's
/// thread ("overflow when adding duration to instant") in driver/sock.rs `connect_any`,
/// although the docs say durations use checked arithmetic.
pub fn connect_timeout_duration_max_does_not_panic(t: &Transport) {
    let (e, ep) = super::review_engine(t, super::review_cfg(), calc());
    let client = e.client();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client.connect_timeout(&ep, Duration::MAX).map(|_| ())
    }));
    assert!(r.is_ok(), "connect_timeout({ep}, Duration::MAX) panicked");
    assert!(r.unwrap().is_ok());
    e.shutdown(Duration::from_secs(1));
}

/// `connect_timeout(0)` returns promptly (an error or a connection), never hangs or panics.
pub fn connect_timeout_zero_is_prompt(t: &Transport) {
    let (e, ep) = super::review_engine(t, super::review_cfg(), calc());
    let start = Instant::now();
    let r = e.client().connect_timeout(&ep, Duration::ZERO);
    assert!(start.elapsed() < Duration::from_secs(1));
    if let Err(s) = &r {
        eprintln!("{}: connect_timeout(0): {s}", t.name);
    }
    e.shutdown(Duration::from_secs(1));
}

/// Issue 10 item 3: a handler that blocks the core (the one-engine pattern of the README)
/// does not keep a caller past its deadline, and the caller's thread is not poisoned for its
/// next call.
pub fn the_callers_deadline_holds_while_a_handler_blocks_the_core(t: &Transport) {
    let (e, ep) = crate::engine(
        t,
        RuntimeConfig::default().with_idle(IdlePolicy::BusyPoll),
        &[calc()],
        "blocked",
    );
    let ch = e.client().connect(&ep).unwrap();
    let ch2 = ch.clone();
    let (err, next) = within("a call past its deadline", move || {
        // `sleep` holds the core (server and client side share it) for 250 ms.
        let err = ch2
            .call(
                "calc@1.2.0",
                "sleep",
                &[250u8][..],
                Some(Duration::from_millis(20)),
            )
            .unwrap_err();
        // The same thread calls again at once: its slot may still be owned by the core.
        let next = ch2.call(
            "calc@1.2.0",
            "add",
            &[2u8, 2][..],
            Some(Duration::from_secs(5)),
        );
        (err, next)
    });
    assert_eq!(err.code(), StatusCode::DeadlineExceeded, "{err:?}");
    assert_eq!(next.unwrap(), [4]);
    e.shutdown(Duration::from_secs(1));
}

/// The caller's deadline is honoured while the core is blocked in a handler.
pub fn caller_deadline_while_core_blocked(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let ch = e.client().connect(&addr).unwrap();
    let ch2 = ch.clone();
    let h = std::thread::spawn(move || ch2.call("calc@1.2.0", "sleep", vec![250], DL));
    std::thread::sleep(Duration::from_millis(30));
    let start = Instant::now();
    let r = ch.call(
        "calc@1.2.0",
        "add",
        vec![1],
        Some(Duration::from_millis(20)),
    );
    let el = start.elapsed();
    assert!(el < Duration::from_millis(120), "waited {el:?}");
    assert_eq!(r.unwrap_err().code(), StatusCode::DeadlineExceeded);
    h.join().unwrap().unwrap();
    e.shutdown(Duration::from_secs(1));
}

/// A call given up (deadline) never poisons the thread's next call: the late reply of the
/// first does not show up as the reply of the second.
pub fn given_up_call_does_not_poison_next(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let ch = e.client().connect(&addr).unwrap();
    let ch2 = e.client().connect(&addr).unwrap();
    for i in 0..20u8 {
        let r = ch.call(
            "calc@1.2.0",
            "sleep",
            vec![30],
            Some(Duration::from_millis(5)),
        );
        assert_eq!(r.unwrap_err().code(), StatusCode::DeadlineExceeded);
        let r = ch2.call("calc@1.2.0", "add", vec![i, 1], DL).unwrap();
        assert_eq!(r, [i + 1]);
    }
    e.shutdown(Duration::from_secs(1));
}

/// Sends one Request (id `id`, relative `deadline`) from a raw peer, which never sends Cancel.
fn raw_request(
    p: &mut RawPeer,
    enc: &mut HeaderEncoder,
    id: u32,
    service: &[u8],
    method: &[u8],
    payload: &[u8],
    deadline: Option<Duration>,
) {
    use netron_codec::hpack::Header;
    let mut batch = BatchEncoder::new(Limits::default());
    batch
        .request(id, deadline)
        .unwrap()
        .headers(enc, &[Header::service(service), Header::method(method)])
        .unwrap()
        .payload(payload)
        .finish()
        .unwrap();
    p.send(batch.as_slice()).unwrap();
}

/// Reads frames until the reply to `id` (a Response or an Error) arrives. Returns `Ok(payload)`
/// for a Response and `Err(status)` for an Error. Fails after the peer's read timeout.
fn raw_reply(p: &mut RawPeer, buf: &mut Vec<u8>, id: u32) -> Result<Vec<u8>, StatusCode> {
    loop {
        let limits = Limits::default();
        let mut it = FrameIter::new(buf, &limits);
        let mut found = None;
        for f in it.by_ref() {
            let f = f.expect("a valid frame from the server");
            if f.id() != id {
                continue;
            }
            found = Some(match f.kind() {
                FrameKind::Response => Ok(f.payload().to_vec()),
                FrameKind::Error => {
                    let body = control::read_error(&f).expect("a valid ErrorBody");
                    Err(control::status(body.status()))
                }
                k => panic!("unexpected {k:?} for call {id}"),
            });
            break;
        }
        let consumed = it.consumed();
        buf.drain(..consumed);
        if let Some(r) = found {
            return r;
        }
        let mut chunk = [0u8; 4096];
        let n = p.recv(&mut chunk).expect("a reply before the read timeout");
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The server enforces a Request's deadline on its own: a raw peer sends no Cancel, so only
/// the server's deadline can turn these calls into DeadlineExceeded.
pub fn the_server_enforces_deadlines_without_help_from_the_caller(t: &Transport) {
    let _serial = services::serial();
    let (server, addr) = crate::engine(
        t,
        CoreConfig::default(),
        &[services::async_service(), calc()],
        "server-deadline",
    );
    let mut p = RawPeer::handshake(t, &addr);
    let mut enc = p.header_encoder();
    let mut buf = Vec::new();
    let ms = Some(Duration::from_millis(1));

    // Control: without a deadline the async handler answers (after ~30 ms).
    raw_request(
        &mut p,
        &mut enc,
        1,
        b"async@1.0.0",
        b"reverse",
        &[30, 1],
        None,
    );
    assert_eq!(raw_reply(&mut p, &mut buf, 1), Ok(vec![1, 30]));

    // An async handler that takes ~30 ms against a 1 ms deadline: DeadlineExceeded, not the
    // reply it would have produced.
    raw_request(
        &mut p,
        &mut enc,
        3,
        b"async@1.0.0",
        b"reverse",
        &[30, 1],
        ms,
    );
    assert_eq!(
        raw_reply(&mut p, &mut buf, 3),
        Err(StatusCode::DeadlineExceeded)
    );

    // A handler that never finishes: only the server's deadline timer can answer it, and it
    // drops the future.
    let before = services::dropped();
    raw_request(&mut p, &mut enc, 5, b"async@1.0.0", b"never", &[], ms);
    assert_eq!(
        raw_reply(&mut p, &mut buf, 5),
        Err(StatusCode::DeadlineExceeded)
    );
    let end = Instant::now() + Duration::from_secs(5);
    while services::dropped() == before && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(services::dropped(), before + 1);

    // A sync handler (blocks 1 ms) against a 1 µs deadline: DeadlineExceeded, whether it
    // expired before the handler started or while it ran.
    raw_request(
        &mut p,
        &mut enc,
        7,
        b"calc@1.2.0",
        b"sleep",
        &[1],
        Some(Duration::from_micros(1)),
    );
    assert_eq!(
        raw_reply(&mut p, &mut buf, 7),
        Err(StatusCode::DeadlineExceeded)
    );
    // The same call with room to finish is answered.
    raw_request(
        &mut p,
        &mut enc,
        9,
        b"calc@1.2.0",
        b"sleep",
        &[1],
        Some(Duration::from_secs(5)),
    );
    assert_eq!(raw_reply(&mut p, &mut buf, 9), Ok(b"slept".to_vec()));

    let st = server.total_stats();
    assert!(st.deadline_exceeded() >= 3, "{st:?}");
    assert_eq!(st.cancels_in(), 0, "a raw peer sends no Cancel: {st:?}");
    server.shutdown(Duration::from_secs(1));
}

/// A client pipelines calls against a fake server that never answers: the client's ids are
/// reserved (by design) until the deadlines; when the server closes, calls fail at once and
/// the channel reports it.
pub fn abandoned_calls_to_a_silent_server_fail_on_close(t: &Transport) {
    let (addr, mut l) = (t.raw_listen)("silent").expect("raw listener");
    let (e, _) = super::review_engine(t, super::review_cfg(), calc());
    let srv = std::thread::spawn(move || {
        let mut s = l.accept().unwrap();
        // Server handshake by hand.
        let mut hs = netron_codec::handshake::ServerHandshake::new(Default::default());
        let mut buf = Vec::new();
        let mut c = [0u8; 4096];
        let mut out = Vec::new();
        loop {
            let n = s.recv(&mut c, None).unwrap();
            buf.extend_from_slice(&c[..n]);
            match hs.handle(&buf).unwrap() {
                netron_codec::handshake::ServerProgress::NeedMore { .. } => continue,
                netron_codec::handshake::ServerProgress::Offer { offer, .. } => {
                    hs.try_accept(&offer, &mut out).unwrap();
                    break;
                }
            }
        }
        s.send(&out).unwrap();
        // Read for 1.5 s, never answer, then close.
        let mut total = 0;
        while let Ok(n) = s.recv(&mut c, Some(Duration::from_millis(1500))) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let ch = e.client().connect(&addr).unwrap();
    let m = ch.method("calc@1.2.0", "add");
    let mut futs = Vec::new();
    for _ in 0..50 {
        futs.push(m.call_async(&[1u8][..], Some(Duration::from_millis(100))));
    }
    for f in futs {
        assert_eq!(
            block_on(f).unwrap_err().code(),
            StatusCode::DeadlineExceeded
        );
    }
    let total = srv.join().unwrap();
    assert!(total > 0);
    let start = Instant::now();
    let r = m.call(&[1u8][..], Some(Duration::from_secs(2)));
    assert_eq!(r.unwrap_err().code(), StatusCode::Unavailable);
    assert!(start.elapsed() < Duration::from_millis(500));
    e.shutdown(Duration::from_secs(1));
}
