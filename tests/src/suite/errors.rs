//! Calls that fail: panicking and hostile handlers fail their call only, unknown names are not
//! echoed back, a core whose ring fails says so everywhere, a server that vanishes mid-call
//! fails the call.

use std::time::Duration;

use netron_engine::{Bytes, CoreConfig, Service, StatusCode};

use super::util::within;
use crate::{Transport, calc, calc_server, services};

const DL: Option<Duration> = Some(Duration::from_secs(5));

/// Sync and async handlers that panic: Internal for that call, the core and the connection
/// survive.
pub fn a_panicking_handler_fails_its_call_only(t: &Transport) {
    let svc = Service::new("boom", "1.0.0")
        .unwrap()
        .unary("sync", |_, _| panic!("bad input made the handler panic"))
        .unary_async("async", |_| async { panic!("and this one too") });
    let (e, ep) = crate::engine(t, CoreConfig::default(), &[svc, calc()], "boom");
    let ch = e.client().connect(&ep).unwrap();
    for _ in 0..3 {
        assert_eq!(
            ch.call("boom@1.0.0", "sync", &b""[..], DL)
                .unwrap_err()
                .code(),
            StatusCode::Internal
        );
        assert_eq!(
            ch.call("boom@1.0.0", "async", &b""[..], DL)
                .unwrap_err()
                .code(),
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

/// No handler behaviour may panic a core (issue 10, item 2a): after each hostile handler the
/// core is healthy and serves the next call.
pub fn hostile_handlers_fail_their_call_only(t: &Transport) {
    const LIMIT: usize = 16 << 20;
    let dl = Some(Duration::from_secs(10));
    let (e, ep) = crate::engine(
        t,
        CoreConfig::default(),
        &[services::hostile(), calc()],
        "hostile",
    );
    let ch = e.client().connect(&ep).unwrap();
    let expect: &[(&str, Option<StatusCode>)] = &[
        ("panic", Some(StatusCode::Internal)),
        ("panic_any", Some(StatusCode::Internal)),
        ("overflow", Some(StatusCode::ResourceExhausted)),
        ("io_overflow", Some(StatusCode::ResourceExhausted)),
        ("write_with_huge", Some(StatusCode::ResourceExhausted)),
        ("exact_limit", None),
        ("huge_error", Some(StatusCode::Internal)),
        ("ok_as_error", None),
        ("async_panic", Some(StatusCode::Internal)),
        ("async_huge", Some(StatusCode::ResourceExhausted)),
    ];
    for &(method, want) in expect {
        let r = ch.call("hostile@1.0.0", method, Bytes::new(), dl);
        match (want, &r) {
            (Some(code), Err(s)) => {
                assert_eq!(s.code(), code, "{method}: {s:?}");
                assert!(
                    s.status().message.len() <= 512,
                    "{method}: message of {}",
                    s.status().message.len()
                );
                if code == StatusCode::ResourceExhausted {
                    // It names what did not fit and the limit.
                    let m = &s.status().message;
                    assert!(
                        m.contains("reply") && m.contains("max_frame_size"),
                        "{method}: {m}"
                    );
                }
            }
            (None, _) if method == "exact_limit" => {
                // The largest reply a frame can carry: 16 MiB minus the frame header.
                assert_eq!(r.as_ref().map(Vec::len).ok(), Some(LIMIT - 16), "{method}");
            }
            (None, _) => {} // any answer, as long as the core survives
            (Some(_), Ok(v)) => panic!("{method}: answered {} bytes", v.len()),
        }
        assert!(e.health().is_ok(), "{method}: {:?}", e.health());
        assert_eq!(
            ch.call("calc@1.2.0", "add", &[1u8, 2][..], dl).unwrap(),
            [3],
            "after {method}"
        );
    }
    e.shutdown(Duration::from_secs(1));
}

/// An unknown method or service name of ~12 KB is not echoed in the call's error.
pub fn unknown_names_are_not_echoed(t: &Transport) {
    let (e, addr) = super::review_engine(t, super::review_cfg(), calc());
    let ch = e.client().connect(&addr).unwrap();
    let name = "m".repeat(12_000);
    let r = ch.call("calc@1.2.0", &name, &b""[..], DL).unwrap_err();
    assert!(
        r.status().message.len() <= 600,
        "message of {} bytes",
        r.status().message.len()
    );
    let svc = format!("{}@1.2.0", "s".repeat(12_000));
    let r = ch.call(&svc, "add", &b""[..], DL).unwrap_err();
    assert!(
        r.status().message.len() <= 600,
        "message of {} bytes",
        r.status().message.len()
    );
    e.shutdown(Duration::from_secs(1));
}

/// Issue 10 item 2: a core whose io_uring fails at run time (a seccomp filter installed after
/// setup, injected here) does not die silently: its calls fail with Unavailable naming the
/// reason, later calls fail at once, and `Engine::health` reports it.
pub fn a_core_whose_ring_fails_reports_it_everywhere(t: &Transport) {
    let (srv, ep) = calc_server(t);
    let cfg = netron_engine::RuntimeConfig::default().with_fail_enter_after_turns(Some(5_000));
    let client_engine = crate::builder(t).cores(1).config(cfg).build().unwrap();
    assert!(client_engine.health().is_ok());
    let ch = client_engine.client().connect(&ep).unwrap();
    // Calls go through until the injected failure, then every call fails at once.
    let ch2 = ch.clone();
    let e = within("calls on a failing core", move || {
        loop {
            match ch2.call("calc@1.2.0", "add", &[1u8, 2][..], None) {
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    });
    assert_eq!(e.code(), StatusCode::Unavailable, "{e:?}");
    let later = within("a later call", move || {
        ch.call(
            "calc@1.2.0",
            "add",
            &[1u8][..],
            Some(Duration::from_secs(60)),
        )
    })
    .unwrap_err();
    assert_eq!(later.code(), StatusCode::Unavailable);
    assert!(later.status().message.contains("io_uring"), "{later:?}");
    let failures = client_engine.health().unwrap_err();
    assert_eq!(failures.len(), 1);
    assert!(failures[0].reason.contains("io_uring"), "{failures:?}");
    srv.shutdown(Duration::from_secs(1));
}

/// A fake server completes the handshake, reads the request, then closes: the call fails with
/// Unavailable, and further calls fail fast instead of hanging.
pub fn a_server_that_vanishes_mid_call_fails_the_call(t: &Transport) {
    let (addr, mut listener) = (t.raw_listen)("vanish").expect("raw listener");
    let fake = std::thread::spawn(move || {
        let mut s = listener.accept().unwrap();
        let mut hs = netron_codec::handshake::ServerHandshake::new(Default::default());
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.recv(&mut chunk, None).unwrap();
            buf.extend_from_slice(&chunk[..n]);
            if let Ok(netron_codec::handshake::ServerProgress::Offer { offer, .. }) =
                hs.handle(&buf)
            {
                let mut out = Vec::new();
                hs.accept(&offer, &mut out);
                s.send(&out).unwrap();
                break;
            }
        }
        let _ = s.recv(&mut chunk, None); // the request
        drop(s);
    });
    let client_engine = crate::builder(t).cores(1).build().unwrap();
    let ch = client_engine.client().connect(&addr).unwrap();
    let err = ch.call("calc@1.2.0", "add", &[1u8][..], None).unwrap_err();
    assert_eq!(err.code(), StatusCode::Unavailable, "{err}");
    fake.join().unwrap();
    // The connection is gone; further calls fail fast instead of hanging.
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[1u8][..], None)
            .unwrap_err()
            .code(),
        StatusCode::Unavailable
    );
    client_engine.shutdown(Duration::from_secs(1));
}
