//! What callers get when the machinery behind a call is gone or busy (issue 10, items 2 and
//! 3): a core whose ring fails at run time, an engine that was shut down, a handler that holds
//! the core past a caller's deadline. Every wait here is bounded by `within`, which fails the
//! test instead of hanging it.

use std::sync::mpsc;
use std::time::Duration;

use netron_engine::{Client, CoreConfig, Engine, IdlePolicy, StatusCode};
use netron_tests::{block_on, calc, calc_server};

/// Runs `f` on another thread and fails the test if it does not return within 20 s (a hang).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} did not return: it hangs"))
}

/// Item 3: a shut-down client engine answers calls, async calls and connects at once, with
/// Unavailable saying why, whatever deadline the caller gave.
#[test]
fn calls_on_a_stopped_engine_fail_at_once() {
    let (srv, ep) = calc_server();
    let client_engine = Engine::builder().cores(1).build().unwrap();
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
        assert_eq!(e.code, StatusCode::Unavailable, "{e:?}");
        assert!(e.message.contains("not running"), "{e:?}");
    }
    let m = ch.method("calc@1.2.0", "add");
    let e = within("an async call", move || {
        block_on(m.call_async(&[1u8][..], None))
    })
    .unwrap_err();
    assert_eq!(e.code, StatusCode::Unavailable, "{e:?}");
    let ep2 = ep.clone();
    let e = within("a connect", move || client.connect(&ep2).map(|_| ())).unwrap_err();
    assert_eq!(e.code, StatusCode::Unavailable, "{e:?}");
    srv.shutdown(Duration::from_secs(1));
}

/// Item 3: a handler that blocks the core (the one-engine pattern of the README) does not
/// keep a caller past its deadline, and the caller's thread is not poisoned for its next call.
#[test]
fn the_callers_deadline_holds_while_a_handler_blocks_the_core() {
    let e = Engine::builder()
        .cores(1)
        .config(CoreConfig::default().with_idle(IdlePolicy::BusyPoll))
        .service(calc())
        .listen("tcp://127.0.0.1:0")
        .build()
        .unwrap();
    let ch = e.client().connect(&e.endpoints()[0].to_string()).unwrap();
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
    assert_eq!(err.code, StatusCode::DeadlineExceeded, "{err:?}");
    assert_eq!(next.unwrap(), [4]);
    e.shutdown(Duration::from_secs(1));
}

/// Item 2: a core whose io_uring fails at run time (a seccomp filter installed after setup,
/// injected here) does not die silently: its calls fail with Unavailable naming the reason,
/// later calls fail at once, and `Engine::health` reports it.
#[test]
fn a_core_whose_ring_fails_reports_it_everywhere() {
    let (srv, ep) = calc_server();
    let mut cfg = CoreConfig::default();
    cfg.fail_enter_after_turns = Some(5_000);
    let client_engine = Engine::builder().cores(1).config(cfg).build().unwrap();
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
    assert_eq!(e.code, StatusCode::Unavailable, "{e:?}");
    let later = within("a later call", move || {
        ch.call(
            "calc@1.2.0",
            "add",
            &[1u8][..],
            Some(Duration::from_secs(60)),
        )
    })
    .unwrap_err();
    assert_eq!(later.code, StatusCode::Unavailable);
    assert!(later.message.contains("io_uring"), "{later:?}");
    let failures = client_engine.health().unwrap_err();
    assert_eq!(failures.len(), 1);
    assert!(failures[0].reason.contains("io_uring"), "{failures:?}");
    srv.shutdown(Duration::from_secs(1));
}

/// Item 17: builder and configuration values are validated into errors that name the setting.
#[test]
fn bad_settings_are_refused_by_name() {
    let cases: Vec<(&str, netron_engine::EngineBuilder)> = vec![
        ("EngineBuilder::cpus", Engine::builder().cpus(&[])),
        ("EngineBuilder::cpus", Engine::builder().cpus(&[1 << 20])),
        ("EngineBuilder::cores", Engine::builder().cores(0)),
        (
            "CoreConfig::recv_buffers",
            Engine::builder().config(CoreConfig::default().with_recv_buffers(3, 4096)),
        ),
        (
            "CoreConfig::stall_timeout",
            Engine::builder().config(CoreConfig::default().with_stall_timeout(Duration::ZERO)),
        ),
        (
            "CoreConfig::max_backlog_bytes",
            Engine::builder().config(CoreConfig::default().with_max_backlog_bytes(1 << 20)),
        ),
        (
            "CoreConfig::max_connections",
            Engine::builder().config(CoreConfig::default().with_max_connections(0)),
        ),
    ];
    for (setting, b) in cases {
        let e = b.build().unwrap_err();
        assert!(e.to_string().contains(setting), "{setting}: {e}");
    }
    // Durations at the far end are accepted and never panic a core.
    let e = Engine::builder()
        .cores(1)
        .config(
            CoreConfig::default()
                .with_keepalive(Duration::MAX, Duration::MAX)
                .with_stall_timeout(Duration::MAX)
                .with_close_linger(Duration::MAX),
        )
        .service(calc())
        .listen("tcp://127.0.0.1:0")
        .build()
        .unwrap();
    let ch = e.client().connect(&e.endpoints()[0].to_string()).unwrap();
    for d in [
        Some(Duration::MAX),
        Some(Duration::ZERO),
        Some(Duration::from_nanos(1)),
        None,
    ] {
        let r = ch.call("calc@1.2.0", "add", &[1u8, 2][..], d);
        assert!(
            matches!(&r, Ok(v) if v == &[3]) || r.is_err(),
            "{d:?}: {r:?}"
        );
    }
    assert_eq!(
        ch.call("calc@1.2.0", "add", &[1u8, 2][..], None).unwrap(),
        [3]
    );
    assert!(e.health().is_ok());
    e.shutdown(Duration::from_secs(1));
}
