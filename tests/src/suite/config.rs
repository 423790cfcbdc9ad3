//! Configuration and per-operation errors: invalid settings refused with the setting and the
//! rule named, the keepalive the Welcome advertises and what a client does with it, the
//! handshake timeout on both sides and the connect timeout, and `ConnectError`/`CallError`
//! variants that blame the right side (docs/configuration.md).

use std::time::{Duration, Instant};

use netron_codec::handshake::{ServerConfig, ServerHandshake, ServerProgress};
use netron_codec::{FrameIter, FrameKind, Limits, StatusCode};
use netron_engine::{
    CallError, ConnectError, Core, CoreConfig, FrameBudget, IdlePolicy, ProtocolConfig,
    RuntimeConfig, Status,
};

use super::util::wait_for;
use crate::{RawLink, RawPeer, Transport, calc};

const DL: Option<Duration> = Some(Duration::from_secs(5));

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Every rule of `CoreConfig::validate` refuses its setting by name, with the rule, from
/// `validate`, `Core::new` and `EngineBuilder::build` alike; the edges just inside are taken.
pub fn invalid_settings_are_refused_with_the_setting_and_the_rule(t: &Transport) {
    let rt = RuntimeConfig::default;
    let pr = ProtocolConfig::default;
    let small = Limits::default().with_max_frame_size(512);
    let mut small_server = ServerConfig::default();
    small_server.limits = small;
    let cases: Vec<(&str, &str, CoreConfig)> = vec![
        (
            "RuntimeConfig::ring_entries",
            "1 to 16384",
            rt().with_ring_entries(0).into(),
        ),
        (
            "RuntimeConfig::recv_buffers",
            "power of two",
            rt().with_recv_buffers(3, 4096).into(),
        ),
        (
            "RuntimeConfig::recv_buffers + RuntimeConfig::recv_buffer_size",
            "at most 1 GiB",
            rt().with_recv_buffers(32_768, 1 << 20).into(),
        ),
        (
            "RuntimeConfig::recv_buffer_size",
            "512 bytes",
            rt().with_recv_buffers(8, 100).into(),
        ),
        (
            "RuntimeConfig::max_connections",
            "at least 1",
            rt().with_max_connections(0).into(),
        ),
        (
            "RuntimeConfig::idle",
            "BusyPoll",
            rt().with_idle(IdlePolicy::Adaptive {
                spin: Duration::from_secs(7200),
            })
            .into(),
        ),
        (
            "ProtocolConfig::stall_timeout",
            "1 ms",
            pr().with_stall_timeout(Duration::ZERO).into(),
        ),
        (
            "ProtocolConfig::stream_window",
            "1 to 2^31 - 1 bytes",
            pr().with_stream_window(0).into(),
        ),
        (
            "ProtocolConfig::stream_window",
            "1 to 2^31 - 1 bytes",
            pr().with_stream_window(1 << 31).into(),
        ),
        (
            "ProtocolConfig::handshake_timeout",
            "1 ms",
            pr().with_handshake_timeout(Duration::ZERO).into(),
        ),
        (
            "ProtocolConfig::connect_timeout",
            "1 ms",
            pr().with_connect_timeout(Duration::from_micros(10)).into(),
        ),
        (
            "ProtocolConfig::close_linger",
            "1 ms",
            pr().with_close_linger(Duration::ZERO).into(),
        ),
        (
            "ProtocolConfig::dead_after",
            "keepalive is on",
            pr().with_keepalive(ms(100), Duration::ZERO).into(),
        ),
        (
            "ProtocolConfig::dead_after + ProtocolConfig::keepalive",
            "dead_after must be at most keepalive",
            pr().with_keepalive(ms(100), ms(101)).into(),
        ),
        (
            "ProtocolConfig::idle_frame_budget",
            "burst",
            pr().with_idle_frame_budget(FrameBudget::new(0, 10)).into(),
        ),
        (
            "ProtocolConfig::max_buffer_bytes",
            "one largest frame plus one batch",
            pr().with_max_buffer_bytes(1 << 20).into(),
        ),
        (
            "ProtocolConfig::max_backlog_bytes",
            "one largest frame plus one batch",
            pr().with_max_backlog_bytes(1 << 20).into(),
        ),
        (
            "ProtocolConfig::server",
            "max_frame_size must be at least 1024",
            pr().with_server(small_server).into(),
        ),
        (
            "ProtocolConfig::client",
            "max_frame_size must be at least 1024",
            pr().with_client(netron_codec::handshake::ClientConfig::default().with_limits(small))
                .into(),
        ),
    ];
    for (setting, rule, cfg) in cases {
        let e = cfg.validate().unwrap_err();
        assert_eq!(e.setting, setting, "{}: {e}", t.name);
        assert!(e.why.contains(rule), "{}: {setting}: {e}", t.name);
        let Err(core) = Core::new(cfg.clone()) else {
            panic!("{}: Core::new took an invalid {setting}", t.name)
        };
        assert!(core.to_string().contains(setting), "{core}");
        let b = crate::builder(t).cores(1).config(cfg).build().unwrap_err();
        assert!(b.to_string().contains(setting), "{b}");
    }
    // Just inside the rules: the smallest durations the timer wheel honours, dead_after equal
    // to keepalive, and keepalive off (dead_after then unused). The engine serves with the last.
    let tiny = pr()
        .with_keepalive(ms(1), ms(1))
        .with_handshake_timeout(ms(1))
        .with_connect_timeout(ms(1))
        .with_stall_timeout(ms(1))
        .with_close_linger(ms(1));
    CoreConfig::from(tiny).validate().unwrap();
    let edge = CoreConfig::new(
        rt(),
        pr().with_keepalive(Duration::ZERO, Duration::from_secs(3600)),
    );
    edge.validate().unwrap();
    let (e, ep) = crate::engine(t, edge, &[calc()], "cfg-edge");
    let ch = e.client().connect(&ep).unwrap();
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[1u8, 2][..], DL).unwrap(),
        [3]
    );
    e.shutdown(Duration::from_secs(1));
}

/// The Welcome advertises `ProtocolConfig::keepalive` (0 when it is off), whatever the server
/// offer's own field says.
pub fn the_welcome_advertises_the_configured_keepalive(t: &Transport) {
    for (every, want) in [(Duration::from_secs(7), 7_000), (Duration::ZERO, 0)] {
        let mut offer = ServerConfig::default();
        offer.keepalive_interval_ms = 123;
        let cfg = ProtocolConfig::default()
            .with_server(offer)
            .with_keepalive(every, every.min(Duration::from_secs(5)));
        let (e, addr) = crate::engine(t, cfg, &[calc()], "cfg-advertise");
        let (_p, settings, _) = RawPeer::handshake_with(t, &addr, Default::default());
        assert_eq!(settings.keepalive_interval_ms, want, "{}", t.name);
        // Every core serves `$sys`: the Welcome says so, even with a `ServerConfig` built
        // from its `Default` (no feature bits).
        assert!(
            settings.server_offers & netron_codec::features::OFFERS_SYS != 0,
            "{}: offers {:#x}",
            t.name,
            settings.server_offers
        );
        e.shutdown(Duration::from_secs(1));
    }
}

/// A fake server on `t`: accepts one connection, answers the handshake with `offer` (or
/// rejects it with `reject`), then hands the link to `then`.
fn fake_server<R: Send + 'static>(
    t: &Transport,
    tag: &str,
    offer: ServerConfig,
    reject: Option<(StatusCode, &'static str)>,
    then: impl FnOnce(Box<dyn RawLink>) -> R + Send + 'static,
) -> (String, std::thread::JoinHandle<R>) {
    let (addr, mut l) = (t.raw_listen)(tag).expect("raw listener");
    let h = std::thread::spawn(move || {
        let mut s = l.accept().expect("accept");
        let mut hs = ServerHandshake::new(offer);
        let mut buf = Vec::new();
        let mut c = [0u8; 4096];
        let mut out = Vec::new();
        loop {
            let n = s
                .recv(&mut c, Some(Duration::from_secs(10)))
                .expect("hello");
            assert!(n > 0, "the client closed during the handshake");
            buf.extend_from_slice(&c[..n]);
            match hs.handle(&buf).expect("a valid hello") {
                ServerProgress::NeedMore { .. } => continue,
                ServerProgress::Offer { offer, .. } => {
                    match reject {
                        Some((code, why)) => hs.reject(code, why, 0, &mut out),
                        None => {
                            hs.try_accept(&offer, &mut out).expect("acceptable offer");
                        }
                    }
                    break;
                }
            }
        }
        s.send(&out).expect("welcome");
        then(s)
    });
    (addr, h)
}

/// A fake server that accepts and never answers the handshake, for `hold`.
fn silent_server(
    t: &Transport,
    tag: &str,
    hold: Duration,
) -> (String, std::thread::JoinHandle<()>) {
    let (addr, mut l) = (t.raw_listen)(tag).expect("raw listener");
    let h = std::thread::spawn(move || {
        let mut s = l.accept().expect("accept");
        let mut c = [0u8; 4096];
        let until = Instant::now() + hold;
        while Instant::now() < until {
            if let Ok(0) = s.recv(&mut c, Some(ms(50))) {
                break;
            }
        }
    });
    (addr, h)
}

/// A client whose own keepalive is 30 s pings at the 300 ms its server advertises; with its
/// keepalive off it never pings.
pub fn a_client_pings_at_the_servers_shorter_keepalive(t: &Transport) {
    let pings_within = |client_keepalive: Duration, tag: &str| {
        let mut offer = ServerConfig::default();
        offer.keepalive_interval_ms = 300;
        let (addr, srv) = fake_server(t, tag, offer, None, |mut s| {
            // Whatever the client sends in 3 s (it has no calls: only Pings can come).
            let mut got = Vec::new();
            let mut c = [0u8; 4096];
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                match s.recv(&mut c, Some(ms(100))) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&c[..n]),
                    Err(_) => {}
                }
            }
            FrameIter::new(&got, &Limits::default())
                .filter_map(Result::ok)
                .filter(|f| f.kind() == FrameKind::Ping)
                .count()
        });
        let client = crate::builder(t)
            .cores(1)
            .protocol(ProtocolConfig::default().with_keepalive(
                client_keepalive,
                Duration::from_secs(10).min(client_keepalive),
            ))
            .build()
            .unwrap();
        let ch = client.client().connect(&addr).unwrap();
        let pings = srv.join().unwrap();
        drop(ch);
        client.shutdown(Duration::from_secs(1));
        pings
    };
    // Unanswered, a Ping is not repeated until dead_after: at least one arrives.
    assert!(
        pings_within(Duration::from_secs(30), "cfg-ping") >= 1,
        "{}",
        t.name
    );
    assert_eq!(pings_within(Duration::ZERO, "cfg-noping"), 0, "{}", t.name);
}

/// The accepting side: a connection that sends nothing is closed at
/// `ProtocolConfig::handshake_timeout` (not at the 10 s stall timeout), counted as
/// `handshake_timeout`.
pub fn a_silent_client_is_closed_at_the_handshake_timeout(t: &Transport) {
    let cfg = ProtocolConfig::default().with_handshake_timeout(ms(300));
    let (e, addr) = crate::engine(t, cfg, &[calc()], "cfg-hs-server");
    let mut p = RawPeer::connect(t, &addr);
    // The raw peer's read waits 10 s: it ends because the server closed.
    let got = p
        .read_to_close()
        .expect("the server closes a silent connection");
    assert!(
        got.is_empty(),
        "nothing is sent before a handshake: {got:?}"
    );
    assert!(wait_for(&e, "handshake_timeout", Duration::from_secs(5)) >= 1);
    e.shutdown(Duration::from_secs(1));
}

/// The connecting side: a server that never answers the handshake fails the connect with a
/// `Timeout` naming whichever bound expired, the handshake timeout or the connect timeout.
pub fn a_silent_server_fails_connect_naming_the_timeout(t: &Transport) {
    for (hs, connect, setting) in [
        (
            ms(300),
            Duration::from_secs(20),
            "ProtocolConfig::handshake_timeout",
        ),
        (
            Duration::from_secs(20),
            ms(300),
            "ProtocolConfig::connect_timeout",
        ),
    ] {
        let (addr, srv) = silent_server(t, "cfg-hs-client", Duration::from_secs(5));
        let client = crate::builder(t)
            .cores(1)
            .protocol(
                ProtocolConfig::default()
                    .with_handshake_timeout(hs)
                    .with_connect_timeout(connect),
            )
            .build()
            .unwrap();
        let e = client.client().connect(&addr).unwrap_err();
        match &e {
            ConnectError::Timeout { setting: s, .. } => assert_eq!(*s, setting, "{e}"),
            other => panic!("{}: expected a timeout naming {setting}: {other:?}", t.name),
        }
        assert!(e.to_string().contains(setting), "{e}");
        client.shutdown(Duration::from_secs(1));
        srv.join().unwrap();
        // The caller-driven core: its handshake timeout too.
        if hs < connect {
            let (addr, srv) = silent_server(t, "cfg-hs-core", Duration::from_secs(5));
            let ep: netron_engine::Endpoint = addr.parse().unwrap();
            let mut core =
                crate::new_core(t, ProtocolConfig::default().with_handshake_timeout(hs)).unwrap();
            let e = core.connect(&ep, Duration::from_secs(20)).unwrap_err();
            assert!(
                matches!(e, ConnectError::Timeout { setting: s, .. } if s == setting),
                "{}: {e:?}",
                t.name
            );
            drop(core);
            srv.join().unwrap();
        }
    }
}

/// Each way a connect fails has its own variant: a bad endpoint, nothing listening (the OS
/// error kept as the source), the peer's refusal (its status inside), the engine stopped.
pub fn connect_errors_name_their_cause(t: &Transport) {
    let client_engine = crate::builder(t).cores(1).build().unwrap();
    let client = client_engine.client();
    let e = client.connect("carrier-pigeon://x").unwrap_err();
    assert!(matches!(e, ConnectError::Endpoint(_)), "{e:?}");

    // Nothing listens there.
    let nobody = if t.name == "tcp" {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        format!("tcp://{a}")
    } else {
        (t.listen)("cfg-nobody")
    };
    let e = client.connect(&nobody).unwrap_err();
    match &e {
        ConnectError::Io { source, .. } => {
            assert!(std::error::Error::source(&e).is_some(), "{e}");
            assert!(!source.to_string().is_empty());
        }
        other => panic!("{}: connect to {nobody}: {other:?}", t.name),
    }
    assert!(e.to_string().contains("connect to"), "{e}");

    // The peer refuses the handshake: its code and reason, blamed on it.
    let (addr, srv) = fake_server(
        t,
        "cfg-refuse",
        ServerConfig::default(),
        Some((StatusCode::PermissionDenied, "no entry for test clients")),
        drop,
    );
    let e = client.connect(&addr).unwrap_err();
    match &e {
        ConnectError::Refused { status, .. } => {
            assert_eq!(status.code, StatusCode::PermissionDenied, "{e}");
            assert_eq!(status.message, "no entry for test clients");
        }
        other => panic!("{}: expected Refused: {other:?}", t.name),
    }
    assert!(e.to_string().contains("refused the handshake"), "{e}");
    srv.join().unwrap();

    // The engine is stopped.
    client_engine.shutdown(Duration::from_secs(1));
    let (srv_engine, ep) = crate::calc_server(t);
    let e = client.connect(&ep).unwrap_err();
    assert!(matches!(e, ConnectError::EngineStopped { .. }), "{e:?}");
    srv_engine.shutdown(Duration::from_secs(1));
}

/// Each way a call fails locally has its own variant, holding the status the call ended
/// with; the peer's failure stays a `Status`; `Status::from` keeps the code and message.
pub fn call_errors_name_their_cause(t: &Transport) {
    let (srv, ep) = crate::calc_server(t);
    let client_engine = crate::builder(t).cores(1).build().unwrap();
    let ch = client_engine.client().connect(&ep).unwrap();

    // The peer's answer: an unknown method.
    let e = ch.call("calc@1.2.0", "nope", &b""[..], DL).unwrap_err();
    assert!(matches!(e, CallError::Status(_)), "{e:?}");
    assert_eq!(e.code(), StatusCode::Unimplemented, "{e}");

    // Above the negotiated frame size: refused here, before sending, naming the limit.
    let big = vec![0u8; 17 << 20];
    let e = ch.call("calc@1.2.0", "add", big, DL).unwrap_err();
    assert!(matches!(e, CallError::Refused(_)), "{e:?}");
    assert_eq!(e.code(), StatusCode::ResourceExhausted);
    assert!(e.to_string().contains("max_frame_size"), "{e}");
    // The connection goes on.
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[2u8, 3][..], DL).unwrap(),
        [5]
    );

    // Converting keeps code and message (an async handler's `?`).
    let s = Status::from(e.clone());
    assert_eq!((s.code, &s.message), (e.code(), &e.status().message));

    // The server goes away: the connection is closed.
    srv.shutdown(Duration::from_secs(1));
    let closed = (0..100).find_map(|_| match ch.call("calc@1.2.0", "add", &[1u8, 1][..], DL) {
        Err(e @ CallError::Closed(_)) => Some(e),
        _ => {
            std::thread::sleep(ms(20));
            None
        }
    });
    let e = closed.expect("calls on a connection whose server left fail as Closed");
    assert_eq!(e.code(), StatusCode::Unavailable, "{e}");

    // This side's engine stopped.
    client_engine.shutdown(Duration::from_secs(1));
    let e = ch.call("calc@1.2.0", "add", &[1u8, 1][..], DL).unwrap_err();
    assert!(matches!(e, CallError::EngineStopped(_)), "{e:?}");
}
